"""Questions about several images at once (PaLI-X's video frames), drawn from labelled images.

An example is `num_frames` images (the "frames", in order) taken from a batch
of labelled images, a question about them and a one-token answer:

  'which'  "which frame shows seven?" -> the number (1..K) of the one frame of
           that class; the other K - 1 frames show other classes, and the
           frame is drawn uniformly, so chance is 1/K;
  'count'  "how many frames show seven?" -> how many of the K frames show that
           class, drawn uniformly from 0..K (chance 1/(K + 1)); the others
           show other classes.

The asked class is the label of a uniformly drawn image of the batch, and
every frame is drawn uniformly among the batch's images of the class it needs
(the asked one or any other), so the frames are real images, a new draw for
every key. Composition is pure jnp on device: a method draws examples from
each global batch with its step key, and evaluation from the held-out split
with a fixed key. The answers are recomputed from the drawn frames' labels
('which': the first frame showing the class), so they are right even for a
batch too uniform to follow the design (e.g. one class only).

Text rows: the question tokens, right-padded with spaces to the longest
question, then the answer's token (its digit): int32 [B, Q + 1], no PAD.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.data import tokenizers
from jaxssl.errors import ConfigError

QUESTIONS = {"which": "which frame shows {}?", "count": "how many frames show {}?"}
TASKS = tuple(QUESTIONS)
MAX_FRAMES = 9  # answers are one digit


@dataclasses.dataclass(frozen=True)
class FrameExamples:
    """One batch of drawn examples, each array [B] unless said otherwise."""
    indices: jax.Array   # int32 [B, K]: the batch images used as frames, in frame order
    task: jax.Array      # int32: index into the generator's `tasks`
    asked: jax.Array     # int32: the class asked about
    answer: jax.Array    # int32: 1..K ('which') or 0..K ('count')
    tokens: jax.Array    # int32 [B, Q + 1]: question, then the answer's token


jax.tree_util.register_dataclass(
    FrameExamples, data_fields=["indices", "task", "asked", "answer", "tokens"], meta_fields=[])


class FrameQuestions:
    """The question tables of `tasks` for classes `class_names` and `num_frames` frames.

    `draw(rng, labels, task=None, valid=None)` composes one example per image of a
    batch (labels int32 [B]); `task` int32 [B] (default: uniform over `tasks`)
    fixes each example's task; `valid` bool [B] (default: all) marks the rows that
    may be asked about or shown: an evaluation's last batch is padded with copies
    of its last record, which must not fill the frames of the real questions.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer, tasks: Sequence[str],
                 class_names: Sequence[str], num_frames: int):
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown or not tasks:
            raise ConfigError(f"frame tasks must be a non-empty subset of {TASKS}, got "
                              f"{tuple(tasks)}")
        if not 1 <= num_frames <= MAX_FRAMES:
            raise ConfigError(f"frame questions need 1 to {MAX_FRAMES} frames (one-digit "
                              f"answers), got {num_frames}")
        self.tasks, self.num_frames = tuple(tasks), num_frames
        texts = [[QUESTIONS[t].format(name) for name in class_names] for t in self.tasks]
        self.question_length = max(len(tokenizer.encode(q)) for row in texts for q in row)
        self.questions = jnp.asarray(np.stack([
            np.stack([tokenizer.encode(q.ljust(self.question_length)) for q in row])
            for row in texts]), jnp.int32)                                 # [T, C, Q]
        self.answer_ids = jnp.asarray([tokenizer.encode(str(a))[0]
                                       for a in range(num_frames + 1)], jnp.int32)

    @property
    def length(self) -> int:
        """Tokens of a text row: the question and the answer."""
        return self.question_length + 1

    def chance(self, task: str) -> float:
        """Accuracy of a uniform guess among the possible answers of `task`."""
        return 1.0 / (self.num_frames + (task == "count"))

    def draw(self, rng: jax.Array, labels: jax.Array, task: jax.Array | None = None,
             valid: jax.Array | None = None) -> FrameExamples:
        labels = jnp.asarray(labels)
        batch, frames = labels.shape[0], self.num_frames
        valid = jnp.ones(batch, bool) if valid is None else jnp.asarray(valid)
        task_key, asked_key, order_key, count_key, pick_key = jax.random.split(rng, 5)
        if task is None:
            task = jax.random.randint(task_key, (batch,), 0, len(self.tasks))
        valid_first = jnp.argsort(~valid, stable=True)
        asked = labels[valid_first[jax.random.randint(asked_key, (batch,), 0, valid.sum())]]
        is_count = jnp.asarray([t == "count" for t in self.tasks])[task]
        count = jnp.where(is_count, jax.random.randint(count_key, (batch,), 0, frames + 1), 1)
        # A uniformly random order of the frames: the first `count` show the asked class.
        rank = jnp.argsort(jnp.argsort(jax.random.uniform(order_key, (batch, frames)), axis=1),
                           axis=1)
        matches = labels[None, None, :] == asked[:, None, None]             # [B, 1, B]
        allowed = jnp.where((rank < count[:, None])[..., None], matches, ~matches)  # [B, K, B]
        allowed &= valid
        # A frame no image of the batch can fill is drawn from all its valid images.
        allowed |= ~allowed.any(axis=-1, keepdims=True) & valid
        indices = jax.random.categorical(pick_key, jnp.where(allowed, 0.0, -jnp.inf))
        hits = labels[indices] == asked[:, None]
        answer = jnp.where(is_count, jnp.sum(hits, axis=1), jnp.argmax(hits, axis=1) + 1)
        tokens = jnp.concatenate([self.questions[task, asked],
                                  self.answer_ids[answer][:, None]], axis=1)
        return FrameExamples(indices.astype(jnp.int32), task.astype(jnp.int32),
                             asked.astype(jnp.int32), answer.astype(jnp.int32), tokens)
