"""Language-modelling objectives: losses, masking and noising, as pure functions.

Token ids follow `jaxssl.data.text`: PAD = 0, other special tokens below
`regular_ids[0]`, ordinary tokens in [regular_ids[0], regular_ids[1]),
sentinels from `sentinel_top` (= vocab_size - 1) downward. Tokens are int32
[B, L]; losses are float32 scalars returned with the number of target tokens
they average over.

Denoising objectives (span corruption, UL2) produce sequence-to-sequence
examples of fixed shapes, so they jit: inputs [B, Li] with lengths [B] and
targets [B, Lt] with lengths [B], PAD beyond the lengths. `to_encoder_decoder`
and `to_decoder_only` turn them into model batches.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxssl.objectives import mixture

PAD_ID = 0


# ---------------------------------------------------------------------- losses
def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """float32 [B, T]: -log softmax(logits)[target], logits [B, T, V], targets int [B, T]."""
    logits = logits.astype(jnp.float32)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def chunked_token_nll(project, hidden: jax.Array, targets: jax.Array, chunk_length: int
                      ) -> jax.Array:
    """float32 [B, T]: `token_nll(project(hidden), targets)` without [B, T, V] logits.

    project maps hidden [B, c, D] to logits [B, c, V]; hidden [B, T, D] (any
    float), targets int [B, T]. The sequence is cut into chunks of `chunk_length`
    positions (the last padded): each chunk's logits are computed, reduced to
    its nll and dropped, and the backward pass recomputes them (`jax.checkpoint`),
    so neither pass holds more than one chunk's logits, [B, chunk_length, V].
    That is what bounds a large-vocabulary model's memory (experiments/scaling).
    chunk_length 0 (or >= T) computes the logits whole.
    """
    length = hidden.shape[1]
    if not 0 < chunk_length < length:
        return token_nll(project(hidden), targets)
    count = -(-length // chunk_length)
    padding = count * chunk_length - length
    chunked = lambda x: jnp.swapaxes(
        jnp.pad(x, [(0, 0), (0, padding)] + [(0, 0)] * (x.ndim - 2)).reshape(
            (x.shape[0], count, chunk_length) + x.shape[2:]), 0, 1)
    chunk_nll = jax.checkpoint(lambda h, t: token_nll(project(h), t))
    nll = jax.lax.map(lambda chunk: chunk_nll(*chunk), (chunked(hidden), chunked(targets)))
    return jnp.swapaxes(nll, 0, 1).reshape(hidden.shape[0], -1)[:, :length]


def weighted_mean(values: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum(values * weights) / max(sum(weights), 1), sum(weights)), both float32 scalars."""
    weights = weights.astype(jnp.float32)
    count = jnp.sum(weights)
    return jnp.sum(values * weights) / jnp.maximum(count, 1.0), count


def causal_lm_loss(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array
                   ) -> tuple[jax.Array, jax.Array]:
    """Mean next-token cross-entropy (nats) over target tokens where `loss_mask` is set.

    logits float [B, T, V] at inputs 0..T-1, targets int [B, T] (the next
    tokens), loss_mask bool [B, T]. Returns (loss, number of target tokens).
    """
    return weighted_mean(token_nll(logits, targets), loss_mask)


def prefix_lm_loss(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array,
                   target_in_prefix: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`causal_lm_loss` over suffix targets only: target_in_prefix bool [B, T] marks
    targets that belong to the (fully visible) prefix and carry no loss."""
    return causal_lm_loss(logits, targets, loss_mask & ~target_in_prefix)


def next_token_targets(tokens: jax.Array, segment_ids: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
    """Rows [B, L] -> (targets [B, L-1] = tokens[:, 1:], loss_mask bool [B, L-1]).

    Input position t (< L-1) predicts token t+1, counted only when both lie in
    the same (non-padding) segment.
    """
    same = (segment_ids[:, 1:] == segment_ids[:, :-1]) & (segment_ids[:, 1:] > 0)
    return tokens[:, 1:], same


# -------------------------------------------------------------------- masking
def mlm_mask(rng: jax.Array, tokens: jax.Array, regular_ids: tuple[int, int], mask_id: int,
             mask_rate: float = 0.15, replace_with_mask: float = 0.8,
             replace_with_random: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """BERT masking: (inputs int32 [B, L], chosen bool [B, L]).

    Each row chooses exactly round(`mask_rate` x n) of its n ordinary tokens
    (in [regular_ids[0], regular_ids[1]); never PAD, special or sentinel
    tokens), at least one when n > 0, a uniformly random subset: BERT's
    create_pretraining_data.py and fairseq's RoBERTa choose a count per
    sequence, where Hugging Face's collator draws each token independently
    (a count that varies from row to row). A chosen token becomes `mask_id`
    with probability `replace_with_mask`, a uniformly random ordinary token
    with probability `replace_with_random`, and stays itself otherwise. The
    loss is taken on the chosen positions, against the original tokens.
    """
    choose_key, action_key, random_key = jax.random.split(rng, 3)
    low, high = regular_ids
    eligible = (tokens >= low) & (tokens < high)
    num_eligible = eligible.sum(axis=-1, keepdims=True)
    count = jnp.where(num_eligible > 0,
                      jnp.maximum(jnp.round(mask_rate * num_eligible), 1), 0)
    # A random order of each row's ordinary tokens (the others last): the first `count`.
    scores = jnp.where(eligible, jax.random.uniform(choose_key, tokens.shape), 2.0)
    rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    chosen = rank < count
    action = jax.random.uniform(action_key, tokens.shape)
    random_tokens = jax.random.randint(random_key, tokens.shape, low, high, tokens.dtype)
    replaced = jnp.where(action < replace_with_mask, jnp.asarray(mask_id, tokens.dtype),
                         jnp.where(action < replace_with_mask + replace_with_random,
                                   random_tokens, tokens))
    return jnp.where(chosen, replaced, tokens), chosen


# ----------------------------------------------------------- span corruption
def span_counts(length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """T5's (number of noise tokens, number of noise spans) in a sequence of `length`."""
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    return num_noise, max(int(round(num_noise / mean_span)), 1)


def span_corruption_lengths(length: int, noise_density: float, mean_span: float
                            ) -> tuple[int, int]:
    """(inputs length, targets length) of `span_corruption` on rows of `length`."""
    num_noise, num_spans = span_counts(length, noise_density, mean_span)
    return length - num_noise + num_spans, num_noise + num_spans


def _random_segmentation(rng: jax.Array, num_items: int, num_segments: int) -> jax.Array:
    """int32 [num_segments]: lengths (each >= 1, summing to num_items) of a uniformly
    random split of num_items items into num_segments non-empty runs."""
    # A uniformly random (num_segments - 1)-subset of the num_items - 1 gaps between items.
    first_in_segment = jnp.argsort(jax.random.uniform(rng, (num_items - 1,))) < num_segments - 1
    segment_id = jnp.cumsum(jnp.concatenate([jnp.zeros(1, jnp.int32),
                                             first_in_segment.astype(jnp.int32)]))
    return jnp.zeros(num_segments, jnp.int32).at[segment_id].add(1)


def random_spans_noise_mask(rng: jax.Array, length: int, noise_density: float,
                            mean_span: float) -> jax.Array:
    """bool [length], T5's `random_spans_noise_mask`: exactly `span_counts` noise tokens
    in that many spans, alternating with as many non-noise spans (the first token
    is never noise); span lengths are random segmentations of the two counts."""
    num_noise, num_spans = span_counts(length, noise_density, mean_span)
    noise_key, keep_key = jax.random.split(rng)
    noise_lengths = _random_segmentation(noise_key, num_noise, num_spans)
    keep_lengths = _random_segmentation(keep_key, length - num_noise, num_spans)
    interleaved = jnp.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)
    span_starts = jnp.cumsum(interleaved)[:-1]
    span_number = jnp.cumsum(jnp.zeros(length, jnp.int32).at[span_starts].add(1))
    return span_number % 2 == 1


def replace_spans(tokens: jax.Array, span_mask: jax.Array, sentinel_top: int,
                  out_length: int) -> jax.Array:
    """One row: every maximal run of True in `span_mask` becomes one sentinel
    (the k-th run -> sentinel_top - k), then the row is compacted to the left.

    tokens int [L], span_mask bool [L] -> int32 [out_length], PAD-filled past the end.
    """
    previous = jnp.concatenate([jnp.zeros(1, bool), span_mask[:-1]])
    run_start = span_mask & ~previous
    run_index = jnp.cumsum(run_start) - 1
    values = jnp.where(run_start, sentinel_top - run_index, tokens).astype(jnp.int32)
    kept = jnp.nonzero(~span_mask | run_start, size=out_length, fill_value=-1)[0]
    return jnp.where(kept >= 0, values[kept], PAD_ID)


def span_corruption(rng: jax.Array, tokens: jax.Array, sentinel_top: int,
                    noise_density: float = 0.15, mean_span: float = 3.0
                    ) -> tuple[jax.Array, jax.Array]:
    """T5 span corruption of full rows tokens [B, L] (no padding inside a row).

    Returns (inputs int32 [B, Li], targets int32 [B, Lt]) with the static
    lengths of `span_corruption_lengths`: inputs keep the non-noise tokens
    with each noise span replaced by its sentinel (sentinel_top, sentinel_top
    - 1, ... in order); targets are each sentinel followed by its span.
    No EOS is appended.
    """
    length = tokens.shape[1]
    in_length, target_length = span_corruption_lengths(length, noise_density, mean_span)

    def one_row(key, row):
        noise = random_spans_noise_mask(key, length, noise_density, mean_span)
        return (replace_spans(row, noise, sentinel_top, in_length),
                replace_spans(row, ~noise, sentinel_top, target_length))

    return jax.vmap(one_row)(jax.random.split(rng, tokens.shape[0]), tokens)


# ------------------------------------------------------ seq2seq examples, UL2
@dataclasses.dataclass(frozen=True)
class Seq2Seq:
    """Fixed-shape denoising examples: inputs [B, Li], targets [B, Lt], int32
    lengths [B]; PAD past each length."""
    inputs: jax.Array
    input_lengths: jax.Array
    targets: jax.Array
    target_lengths: jax.Array


jax.tree_util.register_dataclass(
    Seq2Seq, data_fields=["inputs", "input_lengths", "targets", "target_lengths"], meta_fields=[])


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """One denoising task. Span corruption when noise_density > 0, else prefix-LM
    (a uniformly random split point in [1, L-1], or at `split` tokens when it is
    set: e.g. after a question, so that only its answer is the target).
    `mode_id` (e.g. [NLU]) is prepended to the inputs unless it is None."""
    name: str
    noise_density: float = 0.0
    mean_span: float = 3.0
    mode_id: int | None = None
    split: int | None = None


def ul2_denoisers(nlu_id: int, nlg_id: int, s2s_id: int) -> tuple[Denoiser, ...]:
    """jaxssl's UL2 mixture: R (0.15, 3) with [NLU], X (0.5, 3) and (0.15, 32) with [NLG],
    S (prefix-LM) with [S2S]; the two X denoisers share the name 'X'. A reduced set:
    Tay et al.'s final mixture has seven (R at spans 3 and 8; X at (0.5, 3), (0.5, 8),
    (0.15, 64), (0.5, 64); S)."""
    return (Denoiser("R", 0.15, 3.0, nlu_id), Denoiser("X", 0.5, 3.0, nlg_id),
            Denoiser("X", 0.15, 32.0, nlg_id), Denoiser("S", 0.0, 0.0, s2s_id))


def ul2_rates(s_rate: float, r_rate: float, x_rate: float) -> tuple[float, ...]:
    """Sampling rates of `ul2_denoisers`, X's share split evenly over its two variants."""
    return (r_rate, x_rate / 2, x_rate / 2, s_rate)


def _pad_columns(x: jax.Array, width: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=PAD_ID)


def _prepend_mode(inputs: jax.Array, lengths: jax.Array, mode_id: int | None
                  ) -> tuple[jax.Array, jax.Array]:
    if mode_id is None:
        return inputs, lengths
    mode = jnp.full((inputs.shape[0], 1), mode_id, inputs.dtype)
    return jnp.concatenate([mode, inputs], axis=1), lengths + 1


def prefix_split(rng: jax.Array, tokens: jax.Array, lengths: jax.Array | None = None,
                 at: int | None = None) -> Seq2Seq:
    """Prefix-LM examples from rows [B, L] whose first `lengths` (int [B], default L)
    tokens are real and the rest PAD: inputs = tokens[:p] ([B, L-1]), targets =
    tokens[p:lengths] ([B, L-1]), p uniform in [1, lengths-1] per row (p = 1 and
    no targets where lengths < 2), or p = min(`at`, lengths - 1) when `at` is given."""
    batch, length = tokens.shape
    ends = length if lengths is None else jnp.asarray(lengths, jnp.int32)
    if at is None:
        split = jax.random.randint(rng, (batch,), 1, jnp.maximum(ends, 2))
    else:
        split = jnp.broadcast_to(jnp.clip(ends - 1, 1, at), (batch,))
    steps = jnp.arange(length - 1)
    target_lengths = jnp.maximum(ends - split, 0)
    inputs = jnp.where(steps < split[:, None], tokens[:, :-1], PAD_ID)
    shifted = jnp.take_along_axis(tokens, jnp.minimum(steps + split[:, None], length - 1), axis=1)
    targets = jnp.where(steps < target_lengths[:, None], shifted, PAD_ID)
    return Seq2Seq(inputs.astype(jnp.int32), split.astype(jnp.int32), targets.astype(jnp.int32),
                   target_lengths.astype(jnp.int32))


def denoise(rng: jax.Array, tokens: jax.Array, denoiser: Denoiser, sentinel_top: int,
            lengths: jax.Array | None = None) -> Seq2Seq:
    """One denoiser applied to every row of tokens [B, L]. `lengths` (int [B], default
    L) counts each row's real tokens before its PAD: prefix-LM splits within them,
    span corruption noises the whole row (spans of PAD give PAD targets)."""
    if denoiser.noise_density <= 0:
        example = prefix_split(rng, tokens, lengths, denoiser.split)
    else:
        inputs, targets = span_corruption(rng, tokens, sentinel_top, denoiser.noise_density,
                                          denoiser.mean_span)
        batch = tokens.shape[0]
        example = Seq2Seq(inputs, jnp.full((batch,), inputs.shape[1], jnp.int32),
                          targets, jnp.full((batch,), targets.shape[1], jnp.int32))
    inputs, input_lengths = _prepend_mode(example.inputs, example.input_lengths, denoiser.mode_id)
    return Seq2Seq(inputs, input_lengths, example.targets, example.target_lengths)


def mixture_of_denoisers(rng: jax.Array, tokens: jax.Array, denoisers: Sequence[Denoiser],
                         choice: jax.Array, sentinel_top: int,
                         lengths: jax.Array | None = None) -> Seq2Seq:
    """Row b gets denoiser `choice[b]` (int [B]); all are padded to common shapes.
    `lengths`: real tokens per row, as in `denoise`."""
    keys = jax.random.split(rng, len(denoisers))
    examples = [denoise(k, tokens, d, sentinel_top, lengths) for k, d in zip(keys, denoisers)]
    input_width = max(e.inputs.shape[1] for e in examples)
    target_width = max(e.targets.shape[1] for e in examples)
    examples = [Seq2Seq(_pad_columns(e.inputs, input_width), e.input_lengths,
                        _pad_columns(e.targets, target_width), e.target_lengths)
                for e in examples]
    return mixture.select(choice, examples)


# ------------------------------------------------------- model batches
def _lengths_to_segments(width: int, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(segment ids int32 [B, width]: 1 before `lengths`, else 0; positions 0.. or 0)."""
    steps = jnp.arange(width)[None, :]
    valid = steps < lengths[:, None]
    return valid.astype(jnp.int32), jnp.where(valid, steps, 0).astype(jnp.int32)


def to_encoder_decoder(example: Seq2Seq, bos_id: int) -> dict[str, jax.Array]:
    """Seq2Seq -> encoder/decoder arrays [B, Li] / [B, Lt], teacher forcing:
    decoder inputs are BOS then the targets shifted right; loss_mask marks real targets."""
    encoder_segment_ids, encoder_positions = _lengths_to_segments(
        example.inputs.shape[1], example.input_lengths)
    decoder_segment_ids, decoder_positions = _lengths_to_segments(
        example.targets.shape[1], example.target_lengths)
    bos = jnp.full((example.targets.shape[0], 1), bos_id, example.targets.dtype)
    decoder_tokens = jnp.concatenate([bos, example.targets[:, :-1]], axis=1)
    return dict(encoder_tokens=example.inputs, encoder_segment_ids=encoder_segment_ids,
                encoder_positions=encoder_positions,
                decoder_tokens=decoder_tokens * decoder_segment_ids,
                decoder_segment_ids=decoder_segment_ids, decoder_positions=decoder_positions,
                targets=example.targets, loss_mask=decoder_segment_ids > 0)


def to_decoder_only(example: Seq2Seq) -> dict[str, jax.Array]:
    """Seq2Seq -> one prefix-LM stream per row: the inputs (fully visible), then the
    targets (causal), packed together, PAD after them.

    Returns tokens, segment_ids, positions, autoregressive of the model inputs
    and targets, loss_mask (the next tokens, loss on the target part only),
    each [B, Li + Lt - 1].
    """
    width = example.inputs.shape[1] + example.targets.shape[1]
    steps = jnp.arange(width)[None, :]
    input_lengths = example.input_lengths[:, None]
    target_index = steps - input_lengths
    in_input = steps < input_lengths
    in_target = (target_index >= 0) & (target_index < example.target_lengths[:, None])
    from_inputs = jnp.take_along_axis(example.inputs,
                                      jnp.minimum(steps, example.inputs.shape[1] - 1), axis=1)
    from_targets = jnp.take_along_axis(
        example.targets, jnp.clip(target_index, 0, example.targets.shape[1] - 1), axis=1)
    stream = jnp.where(in_input, from_inputs, jnp.where(in_target, from_targets, PAD_ID))
    valid = in_input | in_target
    return dict(tokens=stream[:, :-1], segment_ids=valid[:, :-1].astype(jnp.int32),
                positions=jnp.where(valid, steps, 0)[:, :-1].astype(jnp.int32),
                autoregressive=~in_input[:, :-1], targets=stream[:, 1:],
                loss_mask=in_target[:, 1:])


def split_points_to_flags(split: jax.Array, length: int) -> jax.Array:
    """bool [B, length]: True from position split[b] on (the autoregressive part)."""
    return jnp.arange(length)[None, :] >= split[:, None]


def loss_sums(nll: jax.Array, targets: jax.Array, loss_mask: jax.Array,
              char_lengths: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per row: (summed nll of the targets under loss_mask, their number, the characters
    they spell), each float32 [B], from nll float32 [B, T] (`token_nll`) of targets
    int [B, T]; char_lengths int [V] gives each id's characters."""
    weights = loss_mask.astype(jnp.float32)
    return (jnp.sum(nll * weights, axis=1), jnp.sum(weights, axis=1),
            jnp.sum(char_lengths[targets] * weights, axis=1))

