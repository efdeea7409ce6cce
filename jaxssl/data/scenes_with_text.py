"""Scene rows with the LM's own text mixed in: PaLM-E's remedy for forgetting language.

Fully fine-tuned on scene answers alone, PaLM-E's language model loses its
language ability (PaLM-E reports it for its smaller LMs; experiments/generalist
reproduces it). PaLM-E trains on a mixture that keeps language data in it.
`ScenesWithText` wraps a scenes train source (`jaxssl.data.scenes`): record i is,
with probability `rate`, a row of the LM's text training data written in the
scene record layout; otherwise scene record i. Which one, and which text row,
depend only on (seed, i), so the source stays random-access and a resumed run
reads the same rows.

A text record holds the text row's documents (its segments, in order, cut where
the scene row ends) packed into one row (`multimodal.pack`): every token of a
document is a target except its first, which nothing before it in the document
predicts. It has no image and no state (zeros in 'image', 'state' and
'objects'), and task `TEXT_TASK` (the index after `scenes.TASKS`), so the loss
reports it apart ('lm_text/loss').
"""

from __future__ import annotations

import numpy as np

from jaxssl.data import multimodal, scenes
from jaxssl.data.multimodal import Segment

TEXT_TASK = len(scenes.TASKS)
TASK_NAMES = scenes.TASKS + ("lm_text",)  # `TEXT_TASK` indexes the last


def document_segments(tokens: np.ndarray, segment_ids: np.ndarray, length: int
                      ) -> list[list[Segment]]:
    """The documents of a packed text row within its first `length` positions, each an
    example of two text segments: its first token (no target), then the rest (targets).
    tokens, segment_ids int [T]; padding has segment id 0."""
    tokens, segment_ids = tokens[:length], segment_ids[:length]
    examples = []
    for document in dict.fromkeys(int(s) for s in segment_ids if s > 0):
        ids = tuple(int(t) for t in tokens[segment_ids == document])
        examples.append([Segment("text", ids[:1])]
                        + ([Segment("text", ids[1:], target=True)] if len(ids) > 1 else []))
    return examples


class ScenesWithText:
    """Random-access scene records with text records mixed in (module docstring).

    Args:
      scene_rows: a scenes train source (`scenes.SceneSource`).
      text_rows: the LM's text rows (a `jaxssl.data.text` source: 'tokens' and
        'segment_ids' int [T'] with T' >= the scene row length).
      rate: the probability in [0, 1) that a record is text.
      seed: with the record index, decides which records are text and which rows.
    """

    def __init__(self, scene_rows, text_rows, rate: float, seed: int):
        self.scene_rows, self.text_rows, self.rate, self.seed = scene_rows, text_rows, rate, seed
        self.length = scene_rows.spec.length
        first = scene_rows[0]
        self.blank = {key: np.zeros_like(first[key]) for key in ("image", "state", "objects")
                      if key in first}

    def __len__(self) -> int:
        return len(self.scene_rows)

    def __repr__(self) -> str:
        # Grain checks a restored iterator against repr(source): deterministic, content-based.
        return (f"ScenesWithText({self.scene_rows!r}, {self.text_rows!r}, rate={self.rate}, "
                f"seed={self.seed})")

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, int(index)))
        if rng.random() >= self.rate:
            return self.scene_rows[index]
        row = self.text_rows[int(rng.integers(len(self.text_rows)))]
        packed = multimodal.pack(document_segments(row["tokens"], row["segment_ids"],
                                                   self.length), self.length)
        return {**{key: packed[key][0] for key in multimodal.ROW_KEYS}, **self.blank,
                "task": np.int32(TEXT_TASK)}
