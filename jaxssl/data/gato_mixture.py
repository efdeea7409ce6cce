"""Gato's training rows: a weighted mixture of text, image captions and control episodes.

Each record is one packed row (`jaxssl.data.multimodal.pack`) holding examples of
one task, drawn with the task's weight; which task and which examples depend only on
(seed, record index), so the source is random-access and a resumed run reads the
same rows.

  text      one window of the corpus (`jaxssl.data.text` windows), all positions targets;
  caption   as many (image, caption) examples as fit: an image segment of patch
            placeholders (no loss), then the class word + EOS (targets);
  control   as many episode examples as fit, each its own packed segment: a
            demonstration prompt (the last `prompt_steps` timesteps of another
            episode of the same task), then `control_steps` consecutive timesteps
            of one episode from a uniform start (`gato_control` token layout;
            loss on action tokens only). An example never holds two episodes
            besides its prompt, and packing never splits one.

Record: the multimodal row arrays of the row [T] ('tokens', 'kinds', 'slots',
'loss_mask', 'segment_ids', 'positions'), 'images' uint8 [max_images, H, W, C]
(the caption images in slot order, zeros after them) and 'task' int32 (index into
`TASKS`).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import jax
import numpy as np

from jaxssl.data import gato_control
from jaxssl.data.multimodal import ROW_KEYS, Segment, pack
from jaxssl.errors import ConfigError

TASKS = ("text", "caption", "cartpole", "pendulum")


def images_per_row(row_length: int, patches: int, captions: Sequence[Sequence[int]]) -> int:
    """How many (image, caption) examples a caption row holds at most (at least 1): the
    'images' slots of every record."""
    return max(1, row_length // (patches + max(len(c) for c in captions)))


def record_spec(row_length: int, image_shape: tuple[int, ...], patches: int,
                captions: Sequence[Sequence[int]]) -> dict[str, jax.ShapeDtypeStruct]:
    """{key: ShapeDtypeStruct} of one `GatoMixture` record (module docstring) for images
    of `image_shape` [H, W, C], without making one."""
    spec = {key: jax.ShapeDtypeStruct((row_length,), bool if key == "loss_mask" else np.int32)
            for key in ROW_KEYS}
    images = (images_per_row(row_length, patches, captions), *image_shape)
    return {**spec, "images": jax.ShapeDtypeStruct(images, np.uint8),
            "task": jax.ShapeDtypeStruct((), np.int32)}


@dataclasses.dataclass
class ControlData:
    """A task's episodes as step tokens (`gato_control.step_tokens`), [L_e, step_length] each."""
    task: gato_control.ControlTask
    steps: Sequence[np.ndarray]


def example_steps(row_length: int, step_length: int, prompt_steps: int, control_steps: int
                  ) -> int:
    """Timesteps of episode per control example: `control_steps`, or with 0 as many as
    fill a row after the prompt. ConfigError if that leaves none."""
    steps = control_steps or row_length // step_length - prompt_steps
    if steps < 1 or (prompt_steps + steps) * step_length > row_length:
        raise ConfigError(f"a control example of {prompt_steps} prompt + {steps} timesteps of "
                          f"{step_length} tokens does not fit a row of {row_length}")
    return steps


def control_example(data: ControlData, rng: np.random.Generator, prompt_steps: int,
                    steps: int) -> list[Segment]:
    """Prompt (the end of one episode) + `steps` timesteps of another from a uniform start."""
    episode = int(rng.integers(len(data.steps)))
    others = [k for k in range(len(data.steps)) if k != episode] or [episode]
    prompt = gato_control.prompt_steps(data.steps[others[rng.integers(len(others))]],
                                       prompt_steps)
    tokens = data.steps[episode]
    start = int(rng.integers(max(len(tokens) - steps, 0) + 1))
    return gato_control.timestep_segments(data.task, np.concatenate(
        [prompt, tokens[start:start + steps]]))


class GatoMixture:
    """Random-access source of mixture rows (module docstring).

    Args:
      weights: sampling weight of each of `TASKS` (non-negative, summing to > 0).
      row_length: T.
      text_rows: a text row source (`jaxssl.data.text`) of length-T windows.
      images: a labelled image source ({'image' uint8 [H, W, C], 'label'}).
      captions: int32 token lists, the caption (class word + EOS) of each label.
      patches: placeholders per image (patch tokens of the image encoder).
      control: {task name: ControlData} for the control tasks with weight > 0.
      num_rows: the source's length (rows are made on demand).
    """

    def __init__(self, weights: Sequence[float], row_length: int, text_rows, images,
                 captions: Sequence[Sequence[int]], patches: int,
                 control: dict[str, ControlData], prompt_steps: int, control_steps: int,
                 num_rows: int, seed: int):
        weights = np.asarray(weights, np.float64)
        self.probabilities = weights / weights.sum()
        self.row_length, self.text_rows, self.images = row_length, text_rows, images
        self.captions, self.patches, self.control = captions, patches, control
        self.prompt_steps, self.num_rows, self.seed = prompt_steps, num_rows, seed
        self.control_steps = {name: example_steps(row_length, data.task.step_length,
                                                  prompt_steps, control_steps)
                              for name, data in control.items()}
        self.max_images = images_per_row(row_length, patches, captions)
        self.image_shape = tuple(images[0]["image"].shape)

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        # Grain checks a restored iterator against repr(source): deterministic, content-based.
        captions = zlib.crc32(np.concatenate([np.asarray(c, np.int64) for c in self.captions]))
        control = {name: (data.task.name, len(data.steps),
                          zlib.crc32(np.concatenate([np.ravel(s) for s in data.steps])))
                   for name, data in sorted(self.control.items())}
        return (f"GatoMixture(probabilities={self.probabilities.round(6).tolist()}, "
                f"row_length={self.row_length}, text_rows={self.text_rows!r}, "
                f"images={self.images!r}, captions_crc32={captions}, patches={self.patches}, "
                f"control={control}, prompt_steps={self.prompt_steps}, "
                f"control_steps={self.control_steps}, num_rows={self.num_rows}, "
                f"seed={self.seed})")

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, int(index)))
        task = int(rng.choice(len(TASKS), p=self.probabilities))
        images = np.zeros((self.max_images, *self.image_shape), np.uint8)
        name = TASKS[task]
        if name == "text":
            row = self.text_rows[int(rng.integers(len(self.text_rows)))]
            examples = [[Segment("text", tuple(int(t) for t in row["tokens"][row["segment_ids"]
                                                                          > 0]), target=True)]]
        elif name == "caption":
            examples = []
            for k in range(self.max_images):
                record = self.images[int(rng.integers(len(self.images)))]
                images[k] = record["image"]
                examples.append([Segment("image", length=self.patches),
                                 Segment("text", tuple(self.captions[int(record["label"])]),
                                         target=True)])
        else:
            data = self.control[name]
            steps = self.control_steps[name]
            per_example = (self.prompt_steps + steps) * data.task.step_length
            examples = [control_example(data, rng, self.prompt_steps, steps)
                        for _ in range(self.row_length // per_example)]
        packed = pack(examples, self.row_length)
        if len(packed["tokens"]) != 1:
            raise AssertionError(f"{name} examples did not fit one row")  # sizes chosen above
        return {**{k: packed[k][0] for k in ROW_KEYS}, "images": images,
                "task": np.int32(task)}
