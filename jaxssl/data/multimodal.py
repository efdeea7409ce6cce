"""Multimodal sequences: text, image, vector and action segments in one token stream.

Generalist models (PaLM-E, Gato, PaLI-X) read interleaved modalities as one
sequence. An example is an ordered list of `Segment`s:

  text     token ids from a text tokenizer;
  image    `length` placeholder positions, later filled by an image encoder's
           output tokens for that image (`fill_placeholders`);
  vector   `length` placeholder positions filled by a vector encoder's output
           (PaLM-E's state estimates);
  action   token ids of discrete or binned continuous actions (`tokenize_continuous`
           puts continuous values past the text vocabulary, as Gato does).

Each segment says whether its positions are targets (`loss_mask`): Gato and
PaLM-E train only on text and action tokens, never on observations.

`pack` lays examples into fixed-length rows without splitting one across rows,
so episodes never mix; every example in a row gets its own segment id (1, 2,
...; 0 = padding) and positions that restart at 0. With `attention_mask` of
`jaxssl.models.transformer` (tokens attend only within their segment id) the
same rows feed decoder-only and encoder-decoder models.

Row arrays (all [T]): 'tokens' int32 (0 at placeholders), 'kinds' int32
(KIND_* below), 'slots' int32 (index of the embedding filling a placeholder
within the row's image / vector table, -1 elsewhere), 'loss_mask' bool,
'segment_ids' int32, 'positions' int32.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.errors import DataError

KIND_PAD, KIND_TEXT, KIND_IMAGE, KIND_VECTOR, KIND_ACTION = 0, 1, 2, 3, 4
PLACEHOLDER_KINDS = {"image": KIND_IMAGE, "vector": KIND_VECTOR}
TOKEN_KINDS = {"text": KIND_TEXT, "action": KIND_ACTION}
# The arrays of a packed row, each [T] (`pack` returns them [R, T]).
ROW_KEYS = ("tokens", "kinds", "slots", "loss_mask", "segment_ids", "positions")

# Gato (Reed et al. 2022, section 2.1): mu-law with mu = 100, M = 256, then 1,024 bins.
MU, MU_LAW_M, NUM_BINS = 100.0, 256.0, 1024


@dataclasses.dataclass(frozen=True)
class Segment:
    """One run of positions of a single modality.

    kind: 'text' | 'action' (token ids in `tokens`) or 'image' | 'vector'
      (`length` placeholders; the n-th image / vector segment of an example
      takes the n-th embedding block of that modality).
    target: whether these positions are predicted (in the loss mask).
    """
    kind: str
    tokens: tuple[int, ...] = ()
    length: int = 0
    target: bool = False

    def __post_init__(self):
        if self.kind in TOKEN_KINDS:
            if self.length and self.length != len(self.tokens):
                raise DataError(f"{self.kind} segment: length {self.length} != "
                                f"{len(self.tokens)} tokens")
            object.__setattr__(self, "length", len(self.tokens))
        elif self.kind in PLACEHOLDER_KINDS:
            if self.tokens or self.length < 1:
                raise DataError(f"{self.kind} segment needs length >= 1 and no tokens")
        else:
            raise DataError(f"unknown segment kind {self.kind!r}; valid: "
                            f"{sorted({**TOKEN_KINDS, **PLACEHOLDER_KINDS})}")


def example_length(segments: Sequence[Segment]) -> int:
    return sum(s.length for s in segments)


def example_arrays(segments: Sequence[Segment]) -> dict[str, np.ndarray]:
    """One example's row arrays (see the module docstring) without padding, [L] each.

    'slots' count placeholders per modality from 0 within the example.
    """
    tokens, kinds, slots, targets = [], [], [], []
    next_slot = {kind: 0 for kind in PLACEHOLDER_KINDS}
    for segment in segments:
        if segment.kind in TOKEN_KINDS:
            tokens += segment.tokens
            slots += [-1] * segment.length
        else:
            tokens += [0] * segment.length
            start = next_slot[segment.kind]
            slots += range(start, start + segment.length)
            next_slot[segment.kind] += segment.length
        kinds += [{**TOKEN_KINDS, **PLACEHOLDER_KINDS}[segment.kind]] * segment.length
        targets += [segment.target] * segment.length
    length = len(tokens)
    return {"tokens": np.asarray(tokens, np.int32), "kinds": np.asarray(kinds, np.int32),
            "slots": np.asarray(slots, np.int32), "loss_mask": np.asarray(targets, bool),
            "segment_ids": np.ones(length, np.int32), "positions": np.arange(length,
                                                                             dtype=np.int32)}


def pack(examples: Sequence[Sequence[Segment]], row_length: int) -> dict[str, np.ndarray]:
    """Examples -> rows [R, row_length], first fit in order, never splitting an example.

    Within a row the k-th example has segment id k (from 1) and positions from 0;
    its placeholder slots are offset by the placeholders of the examples before
    it in the row, so they index the row's own image / vector tables in order.
    Also returns 'example_rows' and 'example_starts' int32 [N]: where each
    example landed. Raises DataError for an example longer than a row.
    """
    arrays = [example_arrays(e) for e in examples]
    rows: list[list[int]] = []  # example indices per row
    used: list[int] = []
    for index, example in enumerate(arrays):
        length = len(example["tokens"])
        if length > row_length:
            raise DataError(f"example {index} has {length} positions, more than a row "
                            f"of {row_length}")
        if not rows or used[-1] + length > row_length:
            rows.append([])
            used.append(0)
        rows[-1].append(index)
        used[-1] += length
    out = {"tokens": np.zeros((len(rows), row_length), np.int32),
           "kinds": np.full((len(rows), row_length), KIND_PAD, np.int32),
           "slots": np.full((len(rows), row_length), -1, np.int32),
           "loss_mask": np.zeros((len(rows), row_length), bool),
           "segment_ids": np.zeros((len(rows), row_length), np.int32),
           "positions": np.zeros((len(rows), row_length), np.int32)}
    example_rows = np.zeros(len(arrays), np.int32)
    example_starts = np.zeros(len(arrays), np.int32)
    for r, members in enumerate(rows):
        start, slot_offset = 0, {kind: 0 for kind in PLACEHOLDER_KINDS.values()}
        for k, index in enumerate(members, start=1):
            example = arrays[index]
            span = slice(start, start + len(example["tokens"]))
            slots = example["slots"].copy()
            for kind in slot_offset:
                here = example["kinds"] == kind
                slots[here] += slot_offset[kind]
                slot_offset[kind] += int(here.sum())
            out["tokens"][r, span] = example["tokens"]
            out["kinds"][r, span] = example["kinds"]
            out["slots"][r, span] = slots
            out["loss_mask"][r, span] = example["loss_mask"]
            out["segment_ids"][r, span] = k
            out["positions"][r, span] = example["positions"]
            example_rows[index], example_starts[index] = r, start
            start = span.stop
    return {**out, "example_rows": example_rows, "example_starts": example_starts}


def fill_placeholders(token_embeddings: jax.Array, kinds: jax.Array, slots: jax.Array,
                      tables: dict[int, jax.Array]) -> jax.Array:
    """Embeddings [B, T, D] with each placeholder replaced by its row of the tables.

    token_embeddings: [B, T, D], the token embedding of every position.
    kinds, slots: int32 [B, T] as packed.
    tables: {KIND_IMAGE: [B, Ni, D], KIND_VECTOR: [B, Nv, D]}, each row's
      encoder outputs in slot order (projected to the model width).
    """
    out = token_embeddings
    for kind, table in tables.items():
        index = jnp.clip(slots, 0, table.shape[1] - 1)
        gathered = jnp.take_along_axis(table, index[..., None], axis=1)
        out = jnp.where((kinds == kind)[..., None], gathered.astype(out.dtype), out)
    return out


# ---------------------------------------------------------- continuous values
def mu_law(x: np.ndarray | jax.Array, mu: float = MU, m: float = MU_LAW_M):
    """Gato's companding: sign(x) log(|x| mu + 1) / log(M mu + 1); [-M, M] -> [-1, 1]."""
    xp = jnp if isinstance(x, jax.Array) else np
    return xp.sign(x) * xp.log1p(xp.abs(x) * mu) / np.log1p(m * mu)


def inverse_mu_law(y: np.ndarray | jax.Array, mu: float = MU, m: float = MU_LAW_M):
    """The inverse of `mu_law` on [-1, 1]."""
    xp = jnp if isinstance(y, jax.Array) else np
    return xp.sign(y) * xp.expm1(xp.abs(y) * np.log1p(m * mu)) / mu


def tokenize_continuous(x: np.ndarray | jax.Array, vocab_offset: int,
                        num_bins: int = NUM_BINS):
    """Continuous values -> int32 tokens in [vocab_offset, vocab_offset + num_bins).

    mu-law companded, clipped to [-1, 1], then cut into `num_bins` equal bins
    (Gato puts them past its 32,000-token text vocabulary: vocab_offset).
    """
    xp = jnp if isinstance(x, jax.Array) else np
    y = xp.clip(mu_law(x), -1.0, 1.0)
    bins = xp.clip(xp.floor((y + 1.0) / 2.0 * num_bins), 0, num_bins - 1)
    return (bins + vocab_offset).astype(xp.int32)


def detokenize_continuous(tokens: np.ndarray | jax.Array, vocab_offset: int,
                          num_bins: int = NUM_BINS):
    """Tokens of `tokenize_continuous` -> the value at the centre of each bin (in mu-law
    space), float32."""
    xp = jnp if isinstance(tokens, jax.Array) else np
    centres = ((tokens - vocab_offset).astype(xp.float32) + 0.5) / num_bins * 2.0 - 1.0
    return inverse_mu_law(centres).astype(xp.float32)
