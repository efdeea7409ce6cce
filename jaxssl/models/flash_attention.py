"""Fused (flash) attention for TPU as Pallas kernels, with jaxssl's attention masks.

The [B, heads, Tq, Tk] scores never reach HBM: each kernel walks over blocks of
queries and keys in VMEM, with an online softmax (forward) or each query's
saved logit maximum and exponential sum (backward), so memory grows with T,
not T^2. The mask is not an array either: it is rebuilt per block from
per-token segment ids and autoregressive flags, with the meaning of
`transformer.attention_mask`: query i may attend to key j when both are in
the same segment and j <= i or neither is autoregressive. With flags (causal,
prefix-LM) the kernels skip the key blocks that lie wholly after every key a
query block may see. A logit bias (T5's relative positions) is an array
[B, N, Tq, Tk] read block by block; its gradient, the logits' own, is written
block by block by the query-gradient kernel, so the scores still never need a
[B, N, Tq, Tk] residual (the bias is an input, like q, k and v).

Mosaic compiles the kernels for a TPU, also ahead of time on a machine
without one (`jaxssl.aot`, libtpu). On other platforms they run in Pallas's
interpreter (`interpret=True`, plain JAX ops, so also under remat and scan):
slowly, and only to check them (tests/test_flash_attention.py compares them
with `layers.dot_product_attention`).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import PartitionSpec as P

from jaxssl.errors import ConfigError
from jaxssl.parallel import logical_spec_to_mesh

LANES = 128      # the TPU vector register's minor dimension
SUBLANES = 8     # and its second-minor one
BLOCK_SIZES = (512, 256, 128)   # tried in order; a sequence shorter than the first is one block
_MASKED = float(jnp.finfo(jnp.float32).min)   # as dot_product_attention: a fully masked row averages


def interpreter_note(config: dict, platform: str) -> Optional[str]:
    """A note for a run on `platform` ('cpu', 'gpu', 'tpu') whose config (nested dict)
    sets any `*attention_impl` key to 'flash' off a TPU, where the kernels are interpreted."""
    def flash_keys(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flash_keys(value, f"{prefix}{key}.")
            elif key.endswith("attention_impl") and value == "flash":
                yield prefix + key
    keys = list(flash_keys(config))
    if platform == "tpu" or not keys:
        return None
    return (f"note: {', '.join(keys)}='flash' runs the fused attention kernels in Pallas's "
            f"interpreter on {platform}, many times slower than the default XLA attention "
            f"(''): the kernels are compiled for TPUs only")


def padded_length(length: int) -> int:
    """`length` itself when it is at most the largest of BLOCK_SIZES (one block), else
    rounded up to a multiple of the smallest (e.g. a 2,047-token context to 2,048)."""
    if length <= BLOCK_SIZES[0]:
        return length
    return -(-length // BLOCK_SIZES[-1]) * BLOCK_SIZES[-1]


def block_size(length: int) -> int:
    """The largest of BLOCK_SIZES dividing a `padded_length`, or `length` itself when it
    is at most the largest."""
    if length <= BLOCK_SIZES[0]:
        return length
    return next(size for size in BLOCK_SIZES if length % size == 0)


def _token_codes(segment_ids: jax.Array, autoregressive: Optional[jax.Array] = None
                 ) -> jax.Array:
    """int32 [B, T]: segment id * 2 + 1 for an autoregressive token, + 0 otherwise."""
    flags = 0 if autoregressive is None else autoregressive.astype(jnp.int32)
    return segment_ids.astype(jnp.int32) * 2 + flags


# `flagged` below: the mask has autoregressive flags (self-attention); without them a query
# sees every key of its segment.


def _last_visible_key(q_codes: jax.Array, kv_codes: jax.Array, flagged: bool) -> jax.Array:
    """int32 [B, Tq]: an index no key a query may attend to lies after (Tk - 1 unless flagged).

    A flagged query i sees keys j <= i of its segment; a bidirectional one also every
    bidirectional key of its segment, the last of which bounds it."""
    batch, kv_length = kv_codes.shape
    if not flagged:
        return jnp.full(q_codes.shape, kv_length - 1, jnp.int32)
    positions = jnp.arange(kv_length, dtype=jnp.int32)
    bidirectional_key = jnp.where(kv_codes % 2 == 0, positions, -1)
    segments = kv_codes // 2
    last = jax.vmap(lambda v, s: jax.ops.segment_max(v, s, num_segments=kv_length + 1))(
        bidirectional_key, jnp.minimum(segments, kv_length))
    last_in_segment = jnp.take_along_axis(last, jnp.minimum(q_codes // 2, kv_length), axis=1)
    queries = jnp.arange(q_codes.shape[1], dtype=jnp.int32)
    reach = jnp.where(q_codes % 2 == 1, queries, jnp.maximum(queries, last_in_segment))
    return reach


def _allowed(q_codes, kv_codes, q_start, kv_start, flagged: bool):
    """bool [bq, bk] for a block: q_codes [bq, 1], kv_codes [1, bk] (see _token_codes).
    Shifts and bit masks, not // and %: the TPU's vector unit has no integer division."""
    allowed = jnp.right_shift(q_codes, 1) == jnp.right_shift(kv_codes, 1)
    if flagged:
        shape = (q_codes.shape[0], kv_codes.shape[1])
        rows = jax.lax.broadcasted_iota(jnp.int32, shape, 0) + q_start
        columns = jax.lax.broadcasted_iota(jnp.int32, shape, 1) + kv_start
        bidirectional = jnp.bitwise_or(q_codes, kv_codes) & 1 == 0
        allowed = allowed & ((columns <= rows) | bidirectional)
    return allowed


_NN = (((1,), (0,)), ((), ()))   # a [m, d] . b [d, n] -> [m, n]
_NT = (((1,), (1,)), ((), ()))   # a [m, d] . b [n, d] -> [m, n]
_TN = (((0,), (0,)), ((), ()))   # a [d, m] . b [d, n] -> [m, n]


class _BlockMask(NamedTuple):
    """A kernel's refs that mask and bias a block's logits: the codes' blocks (see
    `_code_layout`) and the bias's [bq, bk] block or None, with `flagged` (static)."""
    q_codes: object
    kv_codes: object
    bias: object
    flagged: bool


def _with_block_mask(kernel, inputs: int, flagged: bool, biased: bool):
    """`kernel(reach_ref, *other input refs, mask: _BlockMask, *output and scratch refs)`
    as Pallas calls it, with every ref in order: `inputs` input refs, of which the last
    two are the codes' and, when `biased`, a third the bias's."""
    def kernel_of_refs(reach_ref, *refs):
        own = inputs - 2 - biased
        mask = _BlockMask(*refs[own:own + 2], refs[own + 2] if biased else None, flagged)
        return kernel(reach_ref, *refs[:own], mask, *refs[inputs:])
    return kernel_of_refs


def _scores(q_ref, k_ref, mask: _BlockMask, q_start, kv_start):
    """(float32 logits [bq, bk] of a block, with its bias, _MASKED where not allowed;
    the mask)."""
    logits = jax.lax.dot_general(q_ref[...], k_ref[...], _NT, preferred_element_type=jnp.float32)
    if mask.bias is not None:
        logits = logits + mask.bias[...].astype(jnp.float32)
    allowed = _allowed(mask.q_codes[:, :1], mask.kv_codes[:1, :], q_start, kv_start,
                       mask.flagged)
    return jnp.where(allowed, logits, _MASKED), allowed


def _blockwise(reach_ref, block_k: int, query_major: bool, start, accumulate, finish,
               skip=None):
    """A kernel's steps along the grid's last axis, over which its output block accumulates:
    start() at the first, accumulate(query block, key block) where a query of the block
    may see a key of it (`reach_ref`), else skip() if given, finish() at the last. Query
    blocks are the grid's axis 2 and key blocks axis 3 when `query_major`, the other way
    round otherwise."""
    b, inner = pl.program_id(0), pl.program_id(3)
    qi, ki = (pl.program_id(2), inner) if query_major else (inner, pl.program_id(2))
    visible = ki * block_k <= reach_ref[b, qi]
    pl.when(inner == 0)(start)
    pl.when(visible)(lambda: accumulate(qi, ki))
    if skip is not None:
        pl.when(jnp.logical_not(visible))(skip)
    pl.when(inner == pl.num_programs(3) - 1)(finish)


def _forward_kernel(reach_ref, q_ref, k_ref, v_ref, mask, out_ref, stats_ref, max_scratch,
                    sum_scratch, acc_scratch):
    def start():
        max_scratch[...] = jnp.full(max_scratch.shape, _MASKED, jnp.float32)
        sum_scratch[...] = jnp.zeros(sum_scratch.shape, jnp.float32)
        acc_scratch[...] = jnp.zeros(acc_scratch.shape, jnp.float32)

    def accumulate(qi, ki):
        logits, _ = _scores(q_ref, k_ref, mask, qi * q_ref.shape[0], ki * k_ref.shape[0])
        previous = max_scratch[:, :1]
        new_max = jnp.maximum(previous, jnp.max(logits, axis=1, keepdims=True))
        probs = jnp.exp(logits - new_max)
        rescale = jnp.exp(previous - new_max)
        total = rescale * sum_scratch[:, :1] + jnp.sum(probs, axis=1, keepdims=True)
        weighted = jax.lax.dot_general(probs.astype(v_ref.dtype), v_ref[...], _NN,
                                       preferred_element_type=jnp.float32)
        acc_scratch[...] = rescale * acc_scratch[...] + weighted
        max_scratch[...] = jnp.broadcast_to(new_max, max_scratch.shape)
        sum_scratch[...] = jnp.broadcast_to(total, sum_scratch.shape)

    def finish():
        total = sum_scratch[:, :1]
        out_ref[...] = (acc_scratch[...] / total).astype(out_ref.dtype)
        lane = jax.lax.broadcasted_iota(jnp.int32, stats_ref.shape, 1)
        stats_ref[...] = jnp.where(lane == 0, max_scratch[...], sum_scratch[...])

    _blockwise(reach_ref, k_ref.shape[0], True, start, accumulate, finish)


def _probs_and_logit_grads(q_ref, k_ref, v_ref, out_ref, out_grad_ref, stats_ref, mask,
                           q_start, kv_start):
    """(probs [bq, bk] float32, d loss / d logits [bq, bk] float32) of a block. A masked
    logit gets no gradient (it is a constant), even in a row with no allowed key."""
    logits, allowed = _scores(q_ref, k_ref, mask, q_start, kv_start)
    probs = jnp.exp(logits - stats_ref[:, :1]) * (1.0 / stats_ref[:, 1:2])
    prob_grads = jax.lax.dot_general(out_grad_ref[...], v_ref[...], _NT,
                                     preferred_element_type=jnp.float32)
    row_dot = jnp.sum(out_grad_ref[...].astype(jnp.float32) * out_ref[...].astype(jnp.float32),
                      axis=1, keepdims=True)
    return probs, jnp.where(allowed, probs * (prob_grads - row_dot), 0.0)


def _key_value_grad_kernel(reach_ref, q_ref, k_ref, v_ref, out_ref, out_grad_ref, stats_ref,
                           mask, k_grad_ref, v_grad_ref, k_scratch, v_scratch):
    def start():
        k_scratch[...] = jnp.zeros(k_scratch.shape, jnp.float32)
        v_scratch[...] = jnp.zeros(v_scratch.shape, jnp.float32)

    def accumulate(qi, ki):
        probs, logit_grads = _probs_and_logit_grads(
            q_ref, k_ref, v_ref, out_ref, out_grad_ref, stats_ref, mask,
            qi * q_ref.shape[0], ki * k_ref.shape[0])
        v_scratch[...] += jax.lax.dot_general(probs.astype(out_grad_ref.dtype), out_grad_ref[...],
                                              _TN, preferred_element_type=jnp.float32)
        k_scratch[...] += jax.lax.dot_general(logit_grads.astype(q_ref.dtype), q_ref[...], _TN,
                                              preferred_element_type=jnp.float32)

    def finish():
        k_grad_ref[...] = k_scratch[...].astype(k_grad_ref.dtype)
        v_grad_ref[...] = v_scratch[...].astype(v_grad_ref.dtype)

    _blockwise(reach_ref, k_ref.shape[0], False, start, accumulate, finish)


def _query_grad_kernel(reach_ref, q_ref, k_ref, v_ref, out_ref, out_grad_ref, stats_ref,
                       mask, q_grad_ref, *bias_grad_and_scratch):
    """Also writes the block's logit gradients, the bias's, when the logits have a bias:
    then `bias_grad_and_scratch` is (bias_grad_ref, q_scratch), else (q_scratch,)."""
    *bias_grad_ref, q_scratch = bias_grad_and_scratch

    def start():
        q_scratch[...] = jnp.zeros(q_scratch.shape, jnp.float32)

    def accumulate(qi, ki):
        _, logit_grads = _probs_and_logit_grads(
            q_ref, k_ref, v_ref, out_ref, out_grad_ref, stats_ref, mask,
            qi * q_ref.shape[0], ki * k_ref.shape[0])
        q_scratch[...] += jax.lax.dot_general(logit_grads.astype(k_ref.dtype), k_ref[...], _NN,
                                              preferred_element_type=jnp.float32)
        for ref in bias_grad_ref:
            ref[...] = logit_grads

    def skip():
        for ref in bias_grad_ref:
            ref[...] = jnp.zeros(ref.shape, ref.dtype)

    def finish():
        q_grad_ref[...] = q_scratch[...].astype(q_grad_ref.dtype)

    _blockwise(reach_ref, k_ref.shape[0], True, start, accumulate, finish,
               skip if bias_grad_ref else None)


def _specs(block_q: int, block_k: int, query_major: bool):
    """BlockSpec makers for the q-side [B, N, Tq, X] and k-side [B, N, Tk, X] arrays, and
    the specs of the codes (see `_code_layout`) and of a [B, N, Tq, Tk] bias, on the grid
    (B, N, query blocks, key blocks), or (B, N, key blocks, query blocks) when not
    `query_major`. Index maps get the scalar-prefetched reach table last."""
    def query_block(i, j):
        return i if query_major else j

    def key_block(i, j):
        return j if query_major else i

    q_block = lambda width: pl.BlockSpec(
        (None, None, block_q, width), lambda b, n, i, j, reach: (b, n, query_block(i, j), 0))
    k_block = lambda width: pl.BlockSpec(
        (None, None, block_k, width), lambda b, n, i, j, reach: (b, n, key_block(i, j), 0))
    codes = (pl.BlockSpec((None, block_q, LANES),
                          lambda b, n, i, j, reach: (b, query_block(i, j), 0)),
             pl.BlockSpec((None, SUBLANES, block_k),
                          lambda b, n, i, j, reach: (b, 0, key_block(i, j))))
    pairs = pl.BlockSpec((None, None, block_q, block_k),
                         lambda b, n, i, j, reach: (b, n, query_block(i, j), key_block(i, j)))
    return q_block, k_block, codes, pairs


def _code_layout(q_codes: jax.Array, kv_codes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The codes as the kernels read them: [B, Tq, LANES] (each query's code across a
    row, so that a block is a column) and [B, SUBLANES, Tk] (a row)."""
    batch, q_length = q_codes.shape
    kv_length = kv_codes.shape[1]
    return (jnp.broadcast_to(q_codes[:, :, None], (batch, q_length, LANES)),
            jnp.broadcast_to(kv_codes[:, None, :], (batch, SUBLANES, kv_length)))


class _Plan(NamedTuple):
    """What every kernel of one attention call shares."""
    block_q: int
    block_k: int
    reach: jax.Array    # int32 [B, Tq / block_q]: the last key any query of a block may see
    mask_arrays: tuple  # _code_layout's two arrays, then the bias [B, N, Tq, Tk] if any
    flagged: bool       # the codes carry autoregressive flags

    @property
    def biased(self) -> bool:
        return len(self.mask_arrays) == 3


def _plan(q_codes: jax.Array, kv_codes: jax.Array, bias: Optional[jax.Array],
          flagged: bool) -> _Plan:
    block_q, block_k = block_size(q_codes.shape[1]), block_size(kv_codes.shape[1])
    reach = _last_visible_key(q_codes, kv_codes, flagged)
    return _Plan(block_q, block_k, reach.reshape(reach.shape[0], -1, block_q).max(axis=-1),
                 (*_code_layout(q_codes, kv_codes), *(() if bias is None else (bias,))),
                 flagged)


def _call(kernel, query_major: bool, q_shape, k_shape, in_specs, out_specs, out_shape, scratch,
          products: int, interpret: bool, plan: _Plan, *arrays):
    """pallas_call of `kernel` over the grid (B, N, blocks, blocks), the last axis the one
    each output block accumulates over, with `arrays` (`in_specs`) and then the plan's
    mask arrays as inputs (see `_with_block_mask`). `products`: the [Tq, Tk, Dh] matrix
    products the kernel does, for XLA's cost estimate (every block counted, the skipped
    ones too). `interpret`: run it in Pallas's interpreter instead of compiling it with
    Mosaic."""
    batch, heads, q_length, width = q_shape
    q_blocks, k_blocks = q_length // plan.block_q, k_shape[2] // plan.block_k
    grid = (batch, heads, *((q_blocks, k_blocks) if query_major else (k_blocks, q_blocks)))
    _, _, codes, pairs = _specs(plan.block_q, plan.block_k, query_major)
    in_specs = [*in_specs, *codes, *((pairs,) if plan.biased else ())]
    arrays = (*arrays, *plan.mask_arrays)
    pair_count = batch * heads * q_length * k_shape[2]
    in_bytes = sum(a.size * a.dtype.itemsize for a in arrays)
    out_bytes = sum(math.prod(o.shape) * o.dtype.itemsize for o in jax.tree.leaves(out_shape))
    return pl.pallas_call(
        _with_block_mask(kernel, len(in_specs), plan.flagged, plan.biased),
        out_shape=out_shape, interpret=interpret,
        grid_spec=pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=1, grid=grid,
                                               in_specs=in_specs, out_specs=out_specs,
                                               scratch_shapes=scratch),
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        cost_estimate=pl.CostEstimate(flops=2 * products * pair_count * width,
                                      transcendentals=pair_count,
                                      bytes_accessed=in_bytes + out_bytes),
    )(plan.reach, *arrays)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _flash(q, k, v, q_codes, kv_codes, bias, flagged, interpret):
    return _forward(q, k, v, q_codes, kv_codes, bias, flagged, interpret)[0]


def _forward(q, k, v, q_codes, kv_codes, bias, flagged, interpret):
    """Output [B, N, Tq, Dh] and residuals; `stats` [B, N, Tq, LANES] float32 holds each
    query's logit maximum in lane 0 and its sum of exp(logit - maximum) in lane 1."""
    plan = _plan(q_codes, kv_codes, bias, flagged)
    width = q.shape[-1]
    q_block, k_block, _, _ = _specs(plan.block_q, plan.block_k, query_major=True)
    out, stats = _call(
        _forward_kernel, True, q.shape, k.shape,
        [q_block(width), k_block(width), k_block(width)],
        [q_block(width), q_block(LANES)],
        [jax.ShapeDtypeStruct(q.shape, v.dtype),
         jax.ShapeDtypeStruct((*q.shape[:3], LANES), jnp.float32)],
        [pltpu.VMEM((plan.block_q, LANES), jnp.float32),
         pltpu.VMEM((plan.block_q, LANES), jnp.float32),
         pltpu.VMEM((plan.block_q, width), jnp.float32)],
        2, interpret, plan, q, k, v)
    return out, (q, k, v, q_codes, kv_codes, bias, out, stats)


def _backward(flagged, interpret, residuals, out_grad):
    """Gradients of q, k, v (and of the bias: the logits'): one kernel accumulates k's and
    v's over query blocks, another q's over key blocks and writes the logits'; each
    recomputes the block's probabilities from `stats`."""
    q, k, v, q_codes, kv_codes, bias, out, stats = residuals
    plan = _plan(q_codes, kv_codes, bias, flagged)
    width = q.shape[-1]
    arrays = (q, k, v, out, out_grad, stats)

    def specs(query_major: bool):
        q_block, k_block, _, pairs = _specs(plan.block_q, plan.block_k, query_major)
        inputs = [q_block(width), k_block(width), k_block(width), q_block(width),
                  q_block(width), q_block(LANES)]
        return q_block, k_block, pairs, inputs

    q_block, k_block, _, inputs = specs(query_major=False)
    k_grad, v_grad = _call(
        _key_value_grad_kernel, False, q.shape, k.shape,
        inputs, [k_block(width), k_block(width)],
        [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        [pltpu.VMEM((plan.block_k, width), jnp.float32),
         pltpu.VMEM((plan.block_k, width), jnp.float32)],
        4, interpret, plan, *arrays)

    q_block, _, pairs, inputs = specs(query_major=True)
    biased = bias is not None
    outputs = _call(
        _query_grad_kernel, True, q.shape, k.shape,
        inputs, [q_block(width), *((pairs,) if biased else ())],
        [jax.ShapeDtypeStruct(q.shape, q.dtype),
         *((jax.ShapeDtypeStruct(bias.shape, jnp.float32),) if biased else ())],
        [pltpu.VMEM((plan.block_q, width), jnp.float32)],
        3, interpret, plan, *arrays)
    bias_grad = outputs[1].astype(bias.dtype) if biased else None
    return outputs[0], k_grad, v_grad, None, None, bias_grad


_flash.defvjp(_forward, _backward)


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, q_segment_ids: jax.Array,
                    kv_segment_ids: jax.Array, autoregressive: Optional[jax.Array] = None,
                    logit_bias: Optional[jax.Array] = None) -> jax.Array:
    """softmax(q k^T / sqrt(Dh) + logit_bias, masked) v as Pallas TPU kernels.

    q [B, Tq, N, Dh], k and v [B, Tk, N, Dh] -> [B, Tq, N, Dh] in v.dtype, with
    the mask `transformer.attention_mask(q_segment_ids, kv_segment_ids,
    autoregressive)` (segment ids int [B, Tq] / [B, Tk]; autoregressive bool
    [B, T], self-attention only, or None) and an optional float bias [B or 1,
    N, Tq, Tk] added to the logits (T5's relative positions). Logits and
    softmax in float32, as `layers.dot_product_attention` (a query that may see
    no key averages every value there; here every value and the padding's zeros
    when Tk is padded, see `padded_length`). Compiled with Mosaic for a TPU (the
    mesh's devices, else the default backend), run in Pallas's interpreter
    elsewhere (slow: for checking the kernels). On a mesh, each device runs the
    kernels on its own rows and heads (`shard_map`): the batch over ('data',
    'fsdp'), the heads over 'tensor', as `parallel.constrain` lays out the
    activations.
    """
    if autoregressive is not None and q.shape[1] != k.shape[1]:
        raise ConfigError("autoregressive flags need self-attention (Tq = Tk), got "
                          f"Tq {q.shape[1]} and Tk {k.shape[1]}")
    flagged = autoregressive is not None
    optional = {}   # the optional inputs that are given, by name
    if flagged:
        optional["autoregressive"] = autoregressive
    if logit_bias is not None:
        # One bias row per example, so that each device reads its own rows' blocks.
        optional["logit_bias"] = jnp.broadcast_to(
            logit_bias, (q.shape[0], q.shape[2], q.shape[1], k.shape[1]))
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else mesh.abstract_device
    platform = jax.default_backend() if device is None else device.platform

    def local(q, k, v, q_segment_ids, kv_segment_ids, optional):
        q_length, kv_length = q.shape[1], k.shape[1]

        def pad(x, lengths, value=0, axis=1):
            """x [..., T, ...] (T at `axis`, then the other `lengths` axes) -> padded to
            padded_length(T) along each, the new entries `value`."""
            widths = [(0, 0)] * x.ndim
            for offset, length in enumerate(lengths):
                widths[axis + offset] = (0, padded_length(length) - length)
            return jnp.pad(x, widths, constant_values=value)

        # Padding tokens get segment -1, which no real token has: no real query sees them.
        heads_major = lambda x, length: jnp.swapaxes(pad(x, [length]), 1, 2)
        flags = pad(optional["autoregressive"], [q_length], True) if flagged else None
        codes = lambda segment_ids, length: _token_codes(pad(segment_ids, [length], -1), flags)
        bias = optional.get("logit_bias")
        q = q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
        out = _flash(heads_major(q, q_length), heads_major(k, kv_length),
                     heads_major(v, kv_length), codes(q_segment_ids, q_length),
                     codes(kv_segment_ids, kv_length),
                     None if bias is None else pad(bias, [q_length, kv_length], axis=2),
                     flagged, platform != "tpu")
        return jnp.swapaxes(out, 1, 2)[:, :q_length]

    if mesh.empty or mesh.size == 1 or mesh.manual_axes:
        return local(q, k, v, q_segment_ids, kv_segment_ids, optional)
    heads = logical_spec_to_mesh(("batch", None, "heads", None), q.shape, mesh)
    rows = P(heads[0], None)
    optional_specs = {name: P(heads[0], heads[2], None, None) if name == "logit_bias" else rows
                      for name in optional}
    # check_vma off: a pallas_call's outputs carry no record of the axes they vary over.
    return jax.shard_map(local, mesh=mesh, out_specs=heads, check_vma=False,
                         in_specs=(heads, heads, heads, rows, rows, optional_specs))(
        q, k, v, q_segment_ids, kv_segment_ids, optional)
