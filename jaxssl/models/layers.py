"""Building blocks shared by the ViT (vit.py), the text models (transformer.py) and the heads.

Activations are [B, T, D] in the compute `dtype`; parameters are float32 with
logical axis names ('embed', 'heads', 'kv', 'mlp') for fsdp/tensor sharding. On a
mesh, activations are constrained Megatron-style (`jaxssl.parallel.constrain`): the
batch over ('data', 'fsdp') everywhere, attention heads and the MLP hidden over
'tensor', the residual stream whole on each 'tensor' device.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxssl.errors import ConfigError
from jaxssl.models import flash_attention, xla_cpu
from jaxssl.parallel import constrain

# Attention.attention_impl: None (jaxssl's XLA attention), jax.nn's two, jaxssl's TPU kernel.
ATTENTION_IMPLS = (None, "xla", "cudnn", "flash")
LAYER_NORM_EPSILON = 1e-6
ROTARY_BASE = 10000.0

xavier_uniform = nn.initializers.xavier_uniform()
Initializer = Callable[..., jax.Array]


def layer_norm(dtype: Any, name: str, epsilon: float = LAYER_NORM_EPSILON,
               rms: bool = False) -> nn.Module:
    """LayerNorm (epsilon 1e-6 unless given) over the last axis, float32 scale and bias
    named 'embed'; with `rms`, T5's RMS norm x / sqrt(mean(x^2) + epsilon) * scale (no
    mean, no bias)."""
    if rms:
        return nn.RMSNorm(
            epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32,
            scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), name=name)
    return nn.LayerNorm(
        epsilon=epsilon, dtype=dtype, param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), name=name)


def dense(features, kernel_axes: tuple, dtype: Any, name: str, axis=-1,
          kernel_init: Initializer = xavier_uniform, use_bias: bool = True) -> "Dense":
    """A `Dense` layer whose kernel axes are named `kernel_axes` (Xavier-uniform kernel unless
    `kernel_init`, zero bias unless not `use_bias`).

    The bias is named after the output axes (the last len(features) names).
    For Xavier, a multi-axis output (e.g. (3, heads, head_dim)) counts as one
    fan-out of their product, as a fused PyTorch nn.Linear(D, 3 D) does.
    """
    return Dense(features, kernel_axes, dtype, axis, kernel_init, use_bias, name=name)


class Dense(nn.Module):
    """x [..., K1, ..., Kn] (the `axis` axes contracted) -> [..., *features] in `dtype`.

    nn.DenseGeneral's parameters ('kernel' [K1, ..., Kn, *features], 'bias' [*features],
    float32), initialisation and product (`xla_cpu.dense_dot_general`), with the bias added by
    `xla_cpu.add_bias`.
    """
    features: Any
    kernel_axes: tuple
    dtype: Any
    axis: Any = -1
    kernel_init: Initializer = xavier_uniform
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        linear = nn.DenseGeneral(
            self.features, axis=self.axis, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=nn.with_logical_partitioning(self.kernel_init, self.kernel_axes),
            use_bias=False, dot_general=xla_cpu.dense_dot_general)
        nn.share_scope(self, linear)   # its kernel is this module's 'kernel'
        y = linear(x)
        if not self.use_bias:
            return y
        features = self.features if isinstance(self.features, tuple) else (self.features,)
        bias = self.param("bias", nn.with_logical_partitioning(
            nn.initializers.zeros, self.kernel_axes[-len(features):]), features, jnp.float32)
        return xla_cpu.add_bias(y, bias)


def batch_sharded(x: jax.Array) -> jax.Array:
    """x [B, ...] constrained to the batch split over ('data', 'fsdp'), the rest whole."""
    return constrain(x, ("batch",) + (None,) * (x.ndim - 1))


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x * Phi(x) = x / 2 * (1 + erf(x / sqrt 2)), elementwise in x.dtype.

    The same function as `jax.nn.gelu(x, approximate=False)` (which uses
    erfc) to 1e-6 in float32, but XLA:CPU evaluates erf 2.4x faster than
    erfc: 0.42 vs 1.02 ms on [768, 512] float32 (experiments/language/README.md).
    """
    return 0.5 * x * (1 + jax.lax.erf(x * jnp.asarray(2 ** -0.5, x.dtype)))


ACTIVATIONS = ("gelu", "gelu_tanh", "quick_gelu", "relu")


def activation(x: jax.Array, kind: str) -> jax.Array:
    """The MLP nonlinearity `kind`: 'gelu' (exact, `gelu`), 'gelu_tanh' (the tanh
    approximation GPT-2 uses, Hugging Face 'gelu_new': x / 2 * (1 + tanh(sqrt(2 / pi)
    (x + 0.044715 x^3)))) or 'quick_gelu' (OpenAI CLIP's x * sigmoid(1.702 x))."""
    if kind == "gelu":
        return gelu(x)
    if kind == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    if kind == "quick_gelu":
        return x * jax.nn.sigmoid(jnp.asarray(1.702, x.dtype) * x)
    if kind == "relu":
        return jax.nn.relu(x)
    raise ConfigError(f"unknown activation {kind!r}; valid: {ACTIVATIONS}")


class MlpBlock(nn.Module):
    """Dense(mlp_dim) -> GELU -> Dense(D): [..., D] -> [..., D] in `dtype`.

    Kernels: 'fc1' from `kernel_init`, 'fc2' (the residual output) from `out_kernel_init`.
    The nonlinearity is `activation` (exact GELU by default). With `gated`
    (T5.1.1's gated GELU) a second projection 'gate' multiplies it:
    fc2(activation(fc1(x)) * gate(x)). Without `use_bias` the projections have no
    biases (T5.1.1, PaLM, Llama).
    """
    mlp_dim: int
    dtype: Any = jnp.float32
    kernel_init: Initializer = xavier_uniform
    out_kernel_init: Initializer = xavier_uniform
    activation: str = "gelu"
    gated: bool = False
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        # The hidden [..., mlp_dim] is split over 'tensor' (fc1 by columns, fc2 by rows).
        hidden = lambda y: constrain(y, ("batch",) + (None,) * (y.ndim - 2) + ("mlp",))
        x = batch_sharded(x)
        y = hidden(dense(self.mlp_dim, ("embed", "mlp"), self.dtype, "fc1",
                         kernel_init=self.kernel_init, use_bias=self.use_bias)(x))
        y = activation(y, self.activation)
        if self.gated:
            y = y * hidden(dense(self.mlp_dim, ("embed", "mlp"), self.dtype, "gate",
                                 kernel_init=self.kernel_init, use_bias=self.use_bias)(x))
        return batch_sharded(dense(x.shape[-1], ("mlp", "embed"), self.dtype, "fc2",
                                   kernel_init=self.out_kernel_init, use_bias=self.use_bias)(y))


def apply_rotary(x: jax.Array, positions: jax.Array) -> jax.Array:
    """Rotary position embedding (RoFormer, GPT-NeoX half-split layout).

    x [B, T, H, Dh] (Dh even), positions int [B, T] -> [B, T, H, Dh] in x.dtype:
    channel pairs (k, k + Dh/2) are rotated by positions * ROTARY_BASE^(-2k/Dh).
    """
    half = x.shape[-1] // 2
    frequencies = ROTARY_BASE ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions[:, :, None, None].astype(jnp.float32) * frequencies
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          mask: Optional[jax.Array] = None, dropout_rate: float = 0.0,
                          dropout_rng: Optional[jax.Array] = None,
                          logit_bias: Optional[jax.Array] = None) -> jax.Array:
    """softmax(q k^T / sqrt(Dh) where mask, else -inf) v, with the heads as a leading batch axis.

    q [B, Tq, N, Dh], k and v [B, Tk, N, Dh], mask bool [B, 1, Tq, Tk] or
    None (every query sees every key) -> [B, Tq, N, Dh] in v.dtype; logits
    and softmax in float32. The same function as
    `jax.nn.dot_product_attention`'s XLA path, but q, k and v are moved to
    [B, N, T, Dh] first, so both products are plain batched matrix products
    (faster on CPU: experiments/language/README.md), and their gradients too
    (`xla_cpu.attention_scores`, `xla_cpu.attention_weighted_sum`). With `dropout_rng`, each
    attention weight [B, N, Tq, Tk] is dropped with probability
    `dropout_rate` and the kept ones scaled by 1 / (1 - dropout_rate).
    """
    heads_major = xla_cpu.swapped_heads
    q = heads_major(q * jnp.asarray(q.shape[-1] ** -0.5, q.dtype))
    logits = xla_cpu.attention_scores(q, heads_major(k))
    if logit_bias is not None:   # float [B or 1, N, Tq, Tk], e.g. T5's relative position bias
        logits = logits + logit_bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout_rng is not None and dropout_rate > 0:
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - dropout_rate), 0.0)
    probs = probs.astype(v.dtype)
    return heads_major(xla_cpu.attention_weighted_sum(probs, heads_major(v)))


class SegmentMask(NamedTuple):
    """An attention mask by its factors, for the fused kernel, which builds it per block.

    The same mask as `transformer.attention_mask(q_segment_ids, kv_segment_ids,
    autoregressive)`: int [B, Tq] and [B, Tk] segment ids, bool [B, T] flags
    (self-attention) or None.
    """
    q_segment_ids: jax.Array
    kv_segment_ids: jax.Array
    autoregressive: Optional[jax.Array] = None


class Attention(nn.Module):
    """Multi-head attention of queries from x [B, Tq, D] over context [B, Tk, D] -> [B, Tq, D].

    Self-attention (context None) projects x to queries, keys and values
    with one fused kernel 'qkv' [D, 3, heads, D/heads]; cross-attention has
    'query' [D, 1, heads, D/heads] and a fused 'key_value' [D, 2, heads,
    D/heads]. One wide matrix product instead of three narrow ones is what
    keeps small models fast on CPU. mask: bool [B, 1, Tq, Tk] (e.g. from
    `transformer.attention_mask`), a `SegmentMask` with 'flash', or None for
    full attention. With `rotary`, queries and keys are rotated by q_positions
    / kv_positions (int [B, T]). `attention_impl` None uses
    `dot_product_attention`; 'xla' or 'cudnn' (a fused GPU kernel, bf16/fp16
    only) go to `jax.nn.dot_product_attention`; 'flash' to jaxssl's fused TPU
    kernel (`flash_attention`; interpreted, slowly, elsewhere). The last three have
    no attention dropout. `dropout_rate` drops attention weights
    (rng stream 'dropout') unless `deterministic`. Kernels: the q/k/v
    projections from `kernel_init`, 'out' (the residual output) from
    `out_kernel_init`. Without `use_bias` the projections have no biases.
    `logit_bias` float [B or 1, heads, Tq, Tk] (T5's relative positions) is
    added to the logits by every implementation.
    """
    num_heads: int
    dtype: Any = jnp.float32
    rotary: bool = False
    attention_impl: Optional[str] = None
    dropout_rate: float = 0.0
    kernel_init: Initializer = xavier_uniform
    out_kernel_init: Initializer = xavier_uniform
    use_bias: bool = True

    @nn.compact
    def __call__(self, x, context=None, mask=None, q_positions=None, kv_positions=None,
                 deterministic: bool = True, logit_bias=None):
        hidden = x.shape[-1]
        if hidden % self.num_heads:
            raise ConfigError(f"hidden size {hidden} not divisible by {self.num_heads} heads")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ConfigError(f"unknown attention_impl {self.attention_impl!r}; valid: '' "
                              f"(jaxssl's XLA attention), {', '.join(ATTENTION_IMPLS[1:])}")
        if self.dropout_rate > 0 and self.attention_impl is not None:
            raise ConfigError(f"attention dropout needs jaxssl's attention (attention_impl ''), "
                             f"not {self.attention_impl!r}")

        split_heads = lambda y: constrain(y, ("batch", None, "heads", None))

        def project(name, count, y):
            """y [B, T, D] -> `count` arrays [B, T, heads, D/heads], heads over 'tensor'."""
            features = (count, self.num_heads, hidden // self.num_heads)
            stacked = dense(features, ("embed", None, "heads", "kv"), self.dtype, name,
                            kernel_init=self.kernel_init, use_bias=self.use_bias)(batch_sharded(y))
            return [split_heads(stacked[:, :, i]) for i in range(count)]

        if context is None:
            q, k, v = project("qkv", 3, x)
            kv_positions = q_positions
        else:
            (q,), (k, v) = project("query", 1, x), project("key_value", 2, context)
        if self.rotary:
            q, k = apply_rotary(q, q_positions), apply_rotary(k, kv_positions)
        if self.attention_impl is None:
            dropping = self.dropout_rate > 0 and not deterministic
            y = dot_product_attention(q, k, v, mask, self.dropout_rate,
                                      self.make_rng("dropout") if dropping else None, logit_bias)
        elif self.attention_impl == "flash":
            if mask is None:
                whole = lambda y: jnp.ones(y.shape[:2], jnp.int32)
                mask = SegmentMask(whole(q), whole(k))
            y = flash_attention.flash_attention(q, k, v, *mask, logit_bias=logit_bias)
        else:
            y = jax.nn.dot_product_attention(q, k, v, bias=logit_bias, mask=mask,
                                             implementation=self.attention_impl)
        return batch_sharded(dense(hidden, ("heads", "kv", "embed"), self.dtype, "out",
                                   axis=(-2, -1), kernel_init=self.out_kernel_init,
                                   use_bias=self.use_bias)(split_heads(y)))
