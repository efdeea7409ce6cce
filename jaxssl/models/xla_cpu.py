"""Products, copies and sums in the forms XLA:CPU runs fast; other platforms get the plain ones.

XLA:CPU (jax 0.10) runs plain matrix products in YNNPACK and the rest on slower
paths of its own: a product that reads an operand transposed, a bfloat16 product
with a bfloat16 result, a sum of a bfloat16 array. It also fuses cheap producers
into transposing copies, which it then runs with strided reads. The functions here
keep jaxssl's layers on the fast paths on the CPU and, through
`jax.lax.platform_dependent`, compile the plain operation everywhere else, so TPU
and GPU programs do not change. Values and gradients are those of the plain
operations, except that a narrow (bfloat16, float16) product is rounded once from
float32 (NARROW_FLOATS). experiments/benchmarks/README.md measures each; the
UNDO_SWITCHES of experiments/benchmarks/ab_step.py replace them for A/B runs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

# XLA:CPU runs a product of bfloat16 operands in YNNPACK's AMX / AVX512-BF16 kernels when
# its result is float32; with a bfloat16 result it converts them to float32 and runs about
# 5x slower (experiments/benchmarks/README.md). So on the CPU such products are computed to
# float32 and rounded once, which is also how a bfloat16 product accumulates.
NARROW_FLOATS = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
_MATMUL = (((1,), (0,)), ((), ()))           # a [M, K] . b [K, N]


def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """y [..., *F] + bias [*F], in y's dtype (the bias rounded to it first).

    On the CPU, for a bfloat16 or float16 y, the bias's gradient (y's gradient
    summed over the leading axes) is summed in float32: XLA:CPU sums a narrow
    array through a windowed reduction many times slower than its float32 sum
    (0.27 s of the MAE ViT-Tiny bfloat16 step's 1.1 s, experiments/benchmarks/README.md).
    """
    if y.dtype not in NARROW_FLOATS:
        return _biased(y, bias)
    return jax.lax.platform_dependent(y, bias, cpu=_add_bias_summed_wide, default=_biased)


def _biased(y: jax.Array, bias: jax.Array) -> jax.Array:
    return y + bias.astype(y.dtype)


_add_bias_summed_wide = jax.custom_vjp(_biased)


def _add_bias_summed_wide_backward(bias, g):
    leading = tuple(range(g.ndim - bias.ndim))
    return g, jnp.sum(g.astype(jnp.float32), axis=leading).astype(bias.dtype)


_add_bias_summed_wide.defvjp(lambda y, bias: (_biased(y, bias), bias),
                             _add_bias_summed_wide_backward)


def dense_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                      preferred_element_type=None) -> jax.Array:
    """`lax.dot_general` for dense layers; on the CPU, one [M, K] x [K, N] matrix product.

    For lhs [..., K1, ..., Kn] contracted over its trailing axes with rhs [K1, ...,
    Kn, F1, ..., Fm] (no batch axes) -> [..., F1, ..., Fm]. On the CPU the leading
    axes of lhs are merged into M, the contracted ones into K and the features into
    N first. Unmerged, XLA:CPU computes the kernel's gradient (which contracts the
    leading axes of lhs with those of the output gradient) as a transposed copy of
    the output gradient and then a product with both operands transposed; merged,
    as one product with lhs transposed and no copy. That makes the MAE ViT-Tiny
    step and the baby GPT's 1.19x faster (experiments/benchmarks/README.md).
    A bfloat16 or float16 product and its gradients go through `_product_cpu`.
    Other platforms, whose compilers handle the unmerged product, and other
    dimension numbers get `lax.dot_general` unchanged.
    """
    (lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch) = dimension_numbers
    count = len(lhs_contracting)
    leading = lhs.ndim - count
    plain = lambda a, b: jax.lax.dot_general(a, b, dimension_numbers, precision=precision,
                                             preferred_element_type=preferred_element_type)
    if (lhs_batch or rhs_batch or tuple(lhs_contracting) != tuple(range(leading, lhs.ndim))
            or tuple(rhs_contracting) != tuple(range(count))):
        return plain(lhs, rhs)

    def merged(a, b):
        features = b.shape[count:]
        a, b = a.reshape(math.prod(a.shape[:leading]), -1), b.reshape(math.prod(b.shape[:count]), -1)
        if (precision is None and preferred_element_type is None
                and jnp.result_type(a, b) in NARROW_FLOATS):
            product = _product_cpu(a, b, False, None)
        else:
            product = jax.lax.dot_general(a, b, _MATMUL, precision=precision,
                                          preferred_element_type=preferred_element_type)
        return product.reshape(lhs.shape[:leading] + features)

    return jax.lax.platform_dependent(lhs, rhs, cpu=merged, default=plain)


def unfused_on_cpu(x: jax.Array) -> jax.Array:
    """x, unchanged; on the CPU, computed into its own buffer before its consumers.

    For activations that a convolution's weight gradient reads. That gradient
    needs the activation transposed to [C, H, W, B], and XLA:CPU fuses the
    activation's cheap producers (batch norm, ReLU, residual adds) into the
    transposing copy, which its loop emitter then runs with reads a whole image
    apart: 7x slower than the tiled copy it emits for an unfused transpose
    ([256, 32, 32, 64] float32: 131 vs 17 ms; without this the SimCLR ResNet-18
    step spends 1.9 of its 4.2 s there, experiments/benchmarks/README.md). XLA:CPU expands
    `optimization_barrier` before it fuses but does not fuse across a
    conditional, so on the CPU `x` passes through a `lax.cond` whose branches
    both return it: the predicate reads `x`, so that XLA cannot resolve it at
    compile time, and one branch copies, because JAX drops a conditional whose
    branches all forward their input. Other platforms (TPU, GPU, where fusing
    into a convolution's operands pays) compile the identity. Values and
    gradients are exactly those of the identity.
    """
    def through_conditional(x):
        first = x.reshape(-1)[0]
        return jax.lax.cond(jnp.isnan(first), jnp.copy, lambda a: a, x)

    return jax.lax.platform_dependent(x, cpu=through_conditional, default=lambda a: a)


def transposed_copy(x: jax.Array) -> jax.Array:
    """x [..., I, J] -> [..., J, I]; on the CPU, a transposed copy that XLA cannot fold away.

    For the attention products' gradients (`attention_scores`,
    `attention_weighted_sum`): XLA:CPU folds a plain transpose back into the
    consuming product, which it then runs as a batched product with a transposed
    operand in Eigen, not in YNNPACK (which takes plain products only). The
    copies make the MAE ViT-Tiny step 1.10x faster and the baby GPT's 1.07x
    (experiments/benchmarks/README.md). `unfused_on_cpu` stops the folding.
    """
    return unfused_on_cpu(jnp.swapaxes(x, -1, -2))


def _product(a: jax.Array, b: jax.Array, b_transposed: bool, dtype=None) -> jax.Array:
    """a [..., I, J] @ b [..., J, K], or @ b^T for b [..., K, J] -> [..., I, K] (the leading
    axes, if any, are batch axes), in `dtype` (None: the inputs' promoted dtype)."""
    return jnp.einsum("...ij,...kj->...ik" if b_transposed else "...ij,...jk->...ik", a, b,
                      preferred_element_type=dtype)


def _product_on_cpu(a: jax.Array, b: jax.Array, b_transposed: bool, dtype=None) -> jax.Array:
    """`_product`, a narrow (bfloat16, float16) result computed in float32 and rounded
    (see NARROW_FLOATS)."""
    result = jnp.result_type(a, b) if dtype is None else jnp.dtype(dtype)
    if result in NARROW_FLOATS:
        return _product(a, b, b_transposed, jnp.float32).astype(result)
    return _product(a, b, b_transposed, dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _product_cpu(a, b, b_transposed, dtype):
    """`_product_on_cpu` of a and b of one dtype, differentiated in plain products only:
    XLA:CPU runs a product that reads an operand transposed outside YNNPACK (in Eigen),
    and a narrow one in float32. b's gradient, a^T g (or g^T a), multiplies a
    `transposed_copy`; the gradients' narrow products, like the forward's, are computed
    in float32 and rounded. Only the gradients of the operands being differentiated are
    computed (and counted by `jaxssl.flops`)."""
    return _product_on_cpu(a, b, b_transposed, dtype)


def _product_cpu_forward(a, b, b_transposed, dtype):
    """With symbolic zeros: a and b are CustomVJPPrimals. The residuals keep b for a's
    gradient and a for b's, each only when that gradient is needed."""
    return (_product_on_cpu(a.value, b.value, b_transposed, dtype),
            (b.value if a.perturbed else None, a.value if b.perturbed else None))


def _product_cpu_backward(b_transposed, dtype, residuals, g):
    b, a = residuals
    if isinstance(g, jax.custom_derivatives.SymbolicZero):
        return None, None
    # The gradient's products multiply in the operands' dtype, as the fused kernel's do:
    # narrow operands' float32 logit gradients are rounded to theirs (see NARROW_FLOATS).
    g = g.astype((a if b is None else b).dtype)
    a_gradient = None if b is None else _product_on_cpu(g, b, not b_transposed)
    if a is None:
        return a_gradient, None
    rows, columns = (g, a) if b_transposed else (a, g)
    return a_gradient, _product_on_cpu(transposed_copy(rows), columns, False)


_product_cpu.defvjp(_product_cpu_forward, _product_cpu_backward, symbolic_zeros=True)


def attention_scores(q: jax.Array, k: jax.Array) -> jax.Array:
    """q [B, N, Tq, Dh] . k [B, N, Tk, Dh] -> float32 logits [B, N, Tq, Tk].

    Autodiff would compute k's gradient, g^T q, as a product with a transposed
    operand; on the CPU a custom gradient computes it from `transposed_copy(g)`.
    Other platforms get the plain product and its autodiff gradient.
    """
    return jax.lax.platform_dependent(
        q, k, cpu=lambda q, k: _product_cpu(q, k, True, jnp.float32),
        default=lambda q, k: _product(q, k, True, jnp.float32))


def attention_weighted_sum(p: jax.Array, v: jax.Array) -> jax.Array:
    """p [B, N, Tq, Tk] @ v [B, N, Tk, Dh] -> [B, N, Tq, Dh] in the inputs' dtype; v's
    gradient p^T g as in `attention_scores`."""
    return jax.lax.platform_dependent(
        p, v, cpu=lambda p, v: _product_cpu(p, v, False, None),
        default=lambda p, v: _product(p, v, False))


def swapped_heads(x: jax.Array) -> jax.Array:
    """x [B, T, N, Dh] -> [B, N, T, Dh] (and back: the same swap of axes 1 and 2).

    For a narrow x, on the CPU, a copy of its own (`_swapped_copy`): XLA:CPU would fold a
    plain swap into the attention products that read it, and it multiplies a narrow
    operand that it reads transposed in float32, slowly (see NARROW_FLOATS).
    """
    return _swapped_copy(x) if x.dtype in NARROW_FLOATS else jnp.swapaxes(x, 1, 2)


@jax.custom_vjp
def _swapped_copy(x: jax.Array) -> jax.Array:
    """x [B, I, J, ...] -> [B, J, I, ...]; on the CPU a copy (`unfused_on_cpu`) that XLA
    cannot fold into the products that read it, and so is the gradient's transpose."""
    return unfused_on_cpu(jnp.swapaxes(x, 1, 2))


_swapped_copy.defvjp(lambda x: (_swapped_copy(x), None), lambda _, g: (_swapped_copy(g),))
