"""Contrastive losses: SimCLR NT-Xent, MoCo v3, CLIP and SigLIP.

Every loss here is a pure function of arrays. Embeddings come in
unnormalised, shape [N, D], any float dtype; each loss casts them up to at
least float32 and L2-normalises them along D itself. Similarity matrices are
computed with `Precision.HIGHEST` so that bf16/TF32 matmul defaults on
accelerators do not leak into the loss.

Global-batch semantics: under `jax.jit` with the batch axis sharded over
devices (GSPMD), these functions see the *global* [N, D] arrays, so the
negatives of every anchor are drawn from the whole global batch and the
positive of row i is simply column i (or i +/- N for NT-Xent): labels are an
`arange` over the global batch, with no per-device offsets or explicit
all-gathers. XLA inserts the collectives needed for the N x N similarities.

Sharded variants (`*_sharded(..., mesh, axes)`): the same losses computed with
`jax.shard_map` over the batch axes `axes` of `mesh`, so that no device ever
holds the full N x N similarity matrix. Each of the S devices along `axes`
L2-normalises its own N/S rows, all-gathers the other side's embeddings
([N, D], cheap), computes only its [N/S, N] block of logits, and sums its
rows' losses; a `psum` over `axes` then gives the global sum. The positive of
local row i is global column `axis_index(axes) * N/S + i` (the "label offset").
The single-device losses are the S = 1 case of the same partial sums, so both
paths share every formula. Values and gradients equal the unsharded loss up to
float32 rounding (tests/test_clip.py).
"""
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

_NORMALIZE_EPS = 1e-6
# Logit of excluded pairs (NT-Xent self-similarity). Finite, so that
# exp() underflows to exactly 0 without any -inf * 0 = NaN in the backward.
_EXCLUDED_LOGIT = -1e9
# CLIP caps its learnable log logit scale, so that the logit scale stays <= 100; the cap is
# the optimizer's (jaxssl.methods.clip), the loss takes the scale as it is.
MAX_CLIP_LOGIT_SCALE = math.log(100.0)


def _l2_normalize(x):
    """Casts x [..., D] to at least float32 and scales rows to unit L2 norm.

    Rows with norm below `_NORMALIZE_EPS` are divided by the eps instead, so an
    all-zero row gives a zero vector with finite gradients (no 0/0).
    """
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    squared_norm = jnp.sum(x * x, axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared_norm, _NORMALIZE_EPS**2))


def _similarity(a, b):
    """Dot products of the rows of a [N, D] and b [M, D] -> [N, M], full precision."""
    return jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)


def _cross_entropy_sum(logits, labels):
    """Sum over rows of softmax cross-entropy; logits [M, C], labels [M] int -> scalar."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def _nt_xent_sum(local, full, offset, temperature):
    """Summed NT-Xent of the local anchors.

    local: (z1, z2) unit rows [n, D] of this shard; full: (z1, z2) unit rows
    [N, D] of the global batch; offset: global index of local row 0.
    """
    n, total = local[0].shape[0], full[0].shape[0]
    anchors = jnp.concatenate(local, axis=0)                         # [2n, D]
    logits = _similarity(anchors, jnp.concatenate(full, axis=0)) / temperature  # [2n, 2N]
    rows = offset + jnp.arange(n)
    self_index = jnp.concatenate([rows, rows + total])
    positive_index = jnp.concatenate([rows + total, rows])
    is_self = jnp.arange(2 * total)[None, :] == self_index[:, None]
    logits = jnp.where(is_self, _EXCLUDED_LOGIT, logits)
    return _cross_entropy_sum(logits, positive_index)


def _moco_v3_sum(local, full, offset, temperature):
    """Summed ctr(q1, k2) + ctr(q2, k1) of the local queries, times 2 * tau.

    local: (q1, q2, k1, k2) unit rows [n, D]; full: the same [N, D]; keys are
    already stop-gradient.
    """
    q1, q2 = local[:2]
    k1, k2 = full[2:]
    labels = offset + jnp.arange(q1.shape[0])
    ctr = lambda q, k: _cross_entropy_sum(_similarity(q, k) / temperature, labels)
    return (ctr(q1, k2) + ctr(q2, k1)) * (2.0 * temperature)


def _clip_sum(local, full, offset, logit_scale):
    """Summed image->text plus text->image cross-entropies of the local pairs.

    local: (img, txt) unit rows [n, D]; full: the same [N, D]. Row i of the
    local image->text block [n, N] scores image i against every text, and of
    the text->image block text i against every image; the positive is column
    offset + i in both.
    """
    img, txt = local
    all_img, all_txt = full
    scale = jnp.exp(logit_scale)
    labels = offset + jnp.arange(img.shape[0])
    return (_cross_entropy_sum(scale * _similarity(img, all_txt), labels)
            + _cross_entropy_sum(scale * _similarity(txt, all_img), labels))


def _siglip_sum(local, full, offset, log_t, bias):
    """-sum of log_sigmoid(y_ij * logit_ij) over the local image rows i and all texts j."""
    img, _ = local
    _, all_txt = full
    logits = jnp.exp(log_t) * _similarity(img, all_txt) + bias       # [n, N]
    is_positive = jnp.arange(all_txt.shape[0])[None, :] == (offset + jnp.arange(img.shape[0]))[:, None]
    signs = jnp.where(is_positive, 1.0, -1.0).astype(logits.dtype)
    return -jnp.sum(jax.nn.log_sigmoid(signs * logits))


def nt_xent(z1, z2, temperature):
    """SimCLR NT-Xent loss (Chen et al. 2020).

    Args:
      z1, z2: [N, D] embeddings of two views of the same N examples, unnormalised.
      temperature: positive scalar tau dividing the cosine similarities.

    Returns:
      float32 scalar: cross-entropy averaged over the 2N anchors, where the
      anchor's positive is the other view of the same example and its
      negatives are the remaining 2N - 2 embeddings (self-similarity excluded).
      This is the paper's 1/(2N) sum. google-research/simclr's code sums the two
      views' mean losses, twice this; under LARS the scale matters for the
      parameters without trust ratio (biases, batch norm: half the step here)
      and for weight decay against the gradient.
    """
    return _unsharded(_nt_xent_sum, (z1, z2), (temperature,)) / (2 * z1.shape[0])


def moco_v3(q1, q2, k1, k2, temperature):
    """MoCo v3 symmetric loss (Chen, Xie, He 2021): ctr(q1, k2) + ctr(q2, k1).

    Args:
      q1, q2: [N, D] query (predictor) outputs for views 1 and 2, unnormalised.
      k1, k2: [N, D] momentum-encoder keys for views 1 and 2, unnormalised;
        gradients are stopped inside, so d loss / d k = 0.
      temperature: positive scalar tau.

    Returns:
      float32 scalar. Each ctr is the cross-entropy of q @ k.T / tau with
      labels arange(N), multiplied by 2 * tau as in the paper's reference code.
    """
    keys = jax.lax.stop_gradient((k1, k2))
    return _unsharded(_moco_v3_sum, (q1, q2, *keys), (temperature,)) / q1.shape[0]


def clip_loss(img, txt, logit_scale):
    """CLIP symmetric contrastive loss (Radford et al. 2021).

    Args:
      img, txt: [N, D] image and text embeddings of N matching pairs, unnormalised.
      logit_scale: scalar, log of the multiplicative logit scale (learnable,
        initialised to log(1 / 0.07)). Used as it is: CLIP's cap at log(100) is on the
        parameter after each optimizer step (`optim.cap_parameters`), as in OpenAI's
        code, not here, where it would stop the gradient above the cap.

    Returns:
      float32 scalar: mean of the image->text and text->image cross-entropies,
      each averaged over the N pairs.
    """
    return _unsharded(_clip_sum, (img, txt), (logit_scale,)) / (2 * img.shape[0])


def siglip_loss(img, txt, log_t, bias):
    """SigLIP pairwise sigmoid loss (Zhai et al. 2023).

    Args:
      img, txt: [N, D] image and text embeddings of N matching pairs, unnormalised.
      log_t: scalar, log of the learnable temperature t (paper init log 10).
      bias: scalar learnable logit bias (paper init -10).

    Returns:
      float32 scalar: -sum_ij log_sigmoid(y_ij * (t * <img_i, txt_j> + bias)) / N,
      with y_ij = +1 for i == j and -1 otherwise.
    """
    return _unsharded(_siglip_sum, (img, txt), (log_t, bias)) / img.shape[0]


# ----------------------------------------------------------------------------
# Sharded over the batch: each device computes its [N/S, N] block of logits
# ----------------------------------------------------------------------------

PartialSum = Callable[..., jax.Array]


def _unsharded(partial_sum: PartialSum, embeddings: Sequence[jax.Array], scalars: Sequence):
    """partial_sum over the whole batch on one device (offset 0, local = full)."""
    unit = tuple(_l2_normalize(e) for e in embeddings)
    return partial_sum(unit, unit, 0, *scalars)


def _sharded(partial_sum: PartialSum, embeddings: Sequence[jax.Array], scalars: Sequence,
             mesh, axes: Sequence[str]) -> jax.Array:
    """Global sum of partial_sum with the embeddings' rows split over mesh axes `axes`.

    Every embedding [N, D] must have N divisible by the product of the sizes
    of `axes`. Scalars are replicated. Returns the float32 sum, replicated.
    """
    axes = tuple(axes)

    def shard_sum(local, scalars):
        local = tuple(_l2_normalize(e) for e in local)
        full = tuple(jax.lax.all_gather(e, axes, axis=0, tiled=True) for e in local)
        offset = jax.lax.axis_index(axes) * local[0].shape[0]
        return jax.lax.psum(partial_sum(local, full, offset, *scalars), axes)

    scalars = tuple(jnp.asarray(s, jnp.float32) for s in scalars)
    # Enter replicated: every device gathers all rows inside anyway. Handing the shard_map
    # rows still split over other axes ('tensor' on a data x fsdp x tensor mesh) made XLA
    # partition the backward pass of the MoCo v3 step wrongly (right loss and embedding
    # cotangents, parameter gradients off by up to 8; tests/test_moco.py).
    replicated = jax.sharding.NamedSharding(mesh, P())
    embeddings = tuple(jax.lax.with_sharding_constraint(e, replicated) for e in embeddings)
    return jax.shard_map(shard_sum, mesh=mesh, in_specs=(P(axes), P()), out_specs=P())(
        tuple(embeddings), scalars)


def nt_xent_sharded(z1, z2, temperature, mesh, axes):
    """`nt_xent` with the batch split over `axes` of `mesh` (see the module docstring).

    z1, z2: [N, D] global arrays, N divisible by the number of shards.
    Each device holds a [2N/S, 2N] block of logits. float32 scalar.
    """
    return _sharded(_nt_xent_sum, (z1, z2), (temperature,), mesh, axes) / (2 * z1.shape[0])


def moco_v3_sharded(q1, q2, k1, k2, temperature, mesh, axes):
    """`moco_v3` with the batch split over `axes` of `mesh`; [N/S, N] logits per device."""
    keys = jax.lax.stop_gradient((k1, k2))
    return _sharded(_moco_v3_sum, (q1, q2, *keys), (temperature,), mesh, axes) / q1.shape[0]


def clip_loss_sharded(img, txt, logit_scale, mesh, axes):
    """`clip_loss` with the batch split over `axes` of `mesh`.

    img, txt: [N, D] global arrays, N divisible by the number of shards S.
    Each device holds two [N/S, N] blocks of logits (its images against all
    texts, its texts against all images). float32 scalar.
    """
    return _sharded(_clip_sum, (img, txt), (logit_scale,), mesh, axes) / (2 * img.shape[0])


def siglip_loss_sharded(img, txt, log_t, bias, mesh, axes):
    """`siglip_loss` with the batch split over `axes` of `mesh`; [N/S, N] logits per device."""
    return _sharded(_siglip_sum, (img, txt), (log_t, bias), mesh, axes) / img.shape[0]
