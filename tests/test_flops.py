"""jaxssl.flops: matmul FLOPs counted on the jaxpr, against hand-counted formulas."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import pallas as pl
from jax.sharding import PartitionSpec as P

from jaxssl.flops import matmul_equations, traced_flops
from jaxssl.models.transformer import LanguageModel

f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)


def flops_of(fn, *args):
    return traced_flops(jax.jit(fn).trace(*args))


def test_batched_matmul_is_two_flops_per_multiply_add_and_matches_xla():
    fn = lambda a, b: jnp.einsum("bij,bjk->bik", a, b)
    args = f32(3, 5, 7), f32(3, 7, 11)
    assert flops_of(fn, *args) == 2 * 3 * 5 * 7 * 11
    xla = jax.jit(fn).lower(*args).compile().cost_analysis()
    xla = xla[0] if isinstance(xla, (list, tuple)) else xla
    assert flops_of(fn, *args) == xla["flops"]


def test_mlp_gradient_counts_forward_and_backward_products():
    batch, d_in, d_hidden, d_out = 4, 6, 10, 3

    def loss(w1, w2, x):
        return jnp.sum(jnp.tanh(x @ w1) @ w2)

    grads = jax.grad(loss, argnums=(0, 1))
    args = f32(d_in, d_hidden), f32(d_hidden, d_out), f32(batch, d_in)
    forward = 2 * batch * d_in * d_hidden + 2 * batch * d_hidden * d_out
    assert flops_of(loss, *args) == forward
    # Backward: dW2 and dh from the second product, dW1 from the first (x needs no gradient).
    backward = 2 * (2 * batch * d_hidden * d_out) + 2 * batch * d_in * d_hidden
    assert flops_of(grads, *args) == forward + backward


@pytest.mark.parametrize("groups, stride", [(1, 1), (2, 1), (1, 2)])
def test_convolution_and_its_two_gradients(groups, stride):
    n, h, w, c_in, c_out, k = 2, 8, 8, 4, 6, 3

    def conv(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=groups)

    args = f32(n, h, w, c_in), f32(k, k, c_in // groups, c_out)
    forward = 2 * n * (h // stride) * (w // stride) * c_out * k * k * (c_in // groups)
    assert flops_of(conv, *args) == forward
    # Each gradient multiplies as many real (not inserted-zero) pairs as the forward pass;
    # for stride 2 the input gradient is a convolution over a 2x2-dilated cotangent.
    both = jax.grad(lambda x, kernel: jnp.sum(conv(x, kernel)), argnums=(0, 1))
    assert flops_of(both, *args) == 3 * forward


def test_scan_counts_body_times_length_and_remat_counts_the_recomputation():
    def body(carry, _):
        return jnp.tanh(carry @ carry), None

    scanned = lambda x: jax.lax.scan(body, x, None, length=5)[0]
    assert flops_of(scanned, f32(8, 8)) == 5 * 2 * 8**3

    product = lambda w, x: jnp.sum(jnp.tanh(x @ w))
    plain = flops_of(jax.grad(product), f32(8, 8), f32(4, 8))
    rematted = flops_of(jax.grad(jax.checkpoint(product)), f32(8, 8), f32(4, 8))
    assert rematted == plain + 2 * 4 * 8 * 8  # the forward product runs again


def test_cond_counts_the_larger_branch_and_while_counts_its_body_once():
    cheap, dear = (lambda x: x @ x[:, :2] @ x[:2]), (lambda x: x @ x)
    branched = lambda p, x: jax.lax.cond(p, cheap, dear, x)
    assert flops_of(branched, jax.ShapeDtypeStruct((), bool), f32(8, 8)) == 2 * 8**3

    looped = lambda x: jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ c[0], c[1] + 1),
                                          (x, 0))[0]
    assert flops_of(looped, f32(8, 8)) == 2 * 8**3


def test_a_pallas_kernel_counts_its_block_product_times_its_grid():
    def block_product(x_ref, w_ref, out_ref):
        out_ref[...] = x_ref[...] @ w_ref[...]

    blocked = lambda x, w: pl.pallas_call(
        block_product, out_shape=jax.ShapeDtypeStruct((64, 16), jnp.float32), grid=(4,),
        in_specs=[pl.BlockSpec((16, 32), lambda i: (i, 0)), pl.BlockSpec((32, 16), lambda i: (0, 0))],
        out_specs=pl.BlockSpec((16, 16), lambda i: (i, 0)), interpret=True)(x, w)
    assert flops_of(blocked, f32(64, 32), f32(32, 16)) == 2 * 64 * 32 * 16


def test_shard_map_counts_its_per_device_body_on_every_device():
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
    split = jax.shard_map(lambda x, w: x @ w, mesh=mesh, in_specs=(P(("a", "b")), P()),
                          out_specs=P(("a", "b")))
    assert flops_of(split, f32(64, 32), f32(32, 16)) == 2 * 64 * 32 * 16


def test_decoder_train_gradient_is_three_forward_passes_of_hand_counted_products():
    batch, length, width, depth, heads, vocab = 2, 16, 32, 2, 4, 50
    model = LanguageModel(vocab_size=vocab, max_length=length, hidden=width, depth=depth,
                          num_heads=heads, mlp_dim=4 * width)
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    flags = jax.ShapeDtypeStruct((batch, length), bool)
    params = nn.meta.unbox(jax.eval_shape(
        functools.partial(model.init, train=False), jax.random.key(0), tokens, tokens, tokens,
        flags))

    def loss(params, tokens, segments, positions, flags):
        logits = model.apply(params, tokens, segments, positions, flags, train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens).mean()

    per_token_layer = (2 * width * 3 * width     # fused qkv
                       + 2 * 2 * length * width  # scores and weighted values
                       + 2 * width * width       # attention output
                       + 2 * 2 * width * 4 * width)  # MLP in and out
    forward = batch * length * (depth * per_token_layer + 2 * width * vocab)  # + tied head
    args = (params, tokens, tokens, tokens, flags)
    assert flops_of(loss, *args) == forward
    # Every product has two trainable inputs (token and position embeddings feed the first
    # layer), so the backward pass runs two products of the same size per forward one.
    assert flops_of(jax.grad(loss), *args) == 3 * forward


def test_matmul_equations_name_each_product_with_its_runs():
    """The walk under jaxpr_flops: a scanned product with the scan's length, and of a cond
    only the costlier branch's products."""
    def body(carry, _):
        return jnp.tanh(carry @ carry[:, :4] @ carry[:4]), None

    scanned = lambda x: jax.lax.scan(body, x, None, length=5)[0]
    found = [(eqn.invars[0].aval.shape, eqn.invars[1].aval.shape, runs)
             for eqn, runs in matmul_equations(jax.jit(scanned).trace(f32(8, 8)).jaxpr)]
    assert found == [((8, 8), (8, 4), 5), ((8, 4), (4, 8), 5)]

    cheap, dear = (lambda y: y[:, :2] @ y[:2]), (lambda y: y @ y)
    branched = lambda p, x: jax.lax.cond(p, cheap, dear, x)
    traced = jax.jit(branched).trace(jax.ShapeDtypeStruct((), bool), f32(8, 8))
    assert [(eqn.invars[0].aval.shape, runs)
            for eqn, runs in matmul_equations(traced.jaxpr)] == [((8, 8), 1)]
