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
"""
import math

import jax
import jax.numpy as jnp

_NORMALIZE_EPS = 1e-6
# Logit of excluded pairs (NT-Xent self-similarity). Finite, so that
# exp() underflows to exactly 0 without any -inf * 0 = NaN in the backward.
_EXCLUDED_LOGIT = -1e9
# CLIP caps the learnable temperature so that the logit scale stays <= 100.
_MAX_CLIP_LOGIT_SCALE = math.log(100.0)


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


def _cross_entropy(logits, labels):
    """Mean over rows of softmax cross-entropy; logits [N, C], labels [N] int."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def nt_xent(z1, z2, temperature):
    """SimCLR NT-Xent loss (Chen et al. 2020).

    Args:
      z1, z2: [N, D] embeddings of two views of the same N examples, unnormalised.
      temperature: positive scalar tau dividing the cosine similarities.

    Returns:
      float32 scalar: cross-entropy averaged over the 2N anchors, where the
      anchor's positive is the other view of the same example and its
      negatives are the remaining 2N - 2 embeddings (self-similarity excluded).
    """
    n = z1.shape[0]
    z = _l2_normalize(jnp.concatenate([z1, z2], axis=0))  # [2N, D]
    logits = _similarity(z, z) / temperature
    logits = jnp.where(jnp.eye(2 * n, dtype=bool), _EXCLUDED_LOGIT, logits)
    positive_index = (jnp.arange(2 * n) + n) % (2 * n)
    return _cross_entropy(logits, positive_index)


def _moco_v3_ctr(q, k, temperature):
    """One direction of MoCo v3: InfoNCE of q [N, D] against keys k [N, D], times 2*tau."""
    logits = _similarity(_l2_normalize(q), _l2_normalize(jax.lax.stop_gradient(k)))
    labels = jnp.arange(q.shape[0])
    return _cross_entropy(logits / temperature, labels) * (2.0 * temperature)


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
    return _moco_v3_ctr(q1, k2, temperature) + _moco_v3_ctr(q2, k1, temperature)


def clip_loss(img, txt, logit_scale):
    """CLIP symmetric contrastive loss (Radford et al. 2021).

    Args:
      img, txt: [N, D] image and text embeddings of N matching pairs, unnormalised.
      logit_scale: scalar, log of the multiplicative logit scale (learnable,
        initialised to log(1 / 0.07)). It is clamped to log(100) before exp,
        so the gradient w.r.t. it is zero above the clamp.

    Returns:
      float32 scalar: mean of the image->text and text->image cross-entropies,
      each averaged over the N pairs.
    """
    scale = jnp.exp(jnp.minimum(logit_scale, _MAX_CLIP_LOGIT_SCALE))
    logits = scale * _similarity(_l2_normalize(img), _l2_normalize(txt))  # [N_img, N_txt]
    labels = jnp.arange(logits.shape[0])
    return 0.5 * (_cross_entropy(logits, labels) + _cross_entropy(logits.T, labels))


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
    logits = jnp.exp(log_t) * _similarity(_l2_normalize(img), _l2_normalize(txt)) + bias
    n = logits.shape[0]
    signs = 2.0 * jnp.eye(n, dtype=logits.dtype) - 1.0
    return -jnp.sum(jax.nn.log_sigmoid(signs * logits)) / n
