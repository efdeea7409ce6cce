"""Contrastive losses vs float64 NumPy references written from the papers' formulas."""
import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxssl.objectives import contrastive


# ----------------------------------------------------------------------------
# float64 NumPy references
# ----------------------------------------------------------------------------

def _normalize_ref(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _log_sum_exp_ref(values):
    top = np.max(values)
    return top + np.log(np.sum(np.exp(values - top)))


def _log_sigmoid_ref(x):
    return -np.logaddexp(0.0, -x)


def _nt_xent_ref(z1, z2, temperature):
    z = _normalize_ref(np.concatenate([z1, z2]))
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        positive = (i + n2 // 2) % n2
        all_but_self = np.delete(z @ z[i], i) / temperature
        total += _log_sum_exp_ref(all_but_self) - z[i] @ z[positive] / temperature
    return total / n2


def _info_nce_ref(a, b, scale):
    """Mean over rows i of -log softmax_j(scale * <a_i, b_j>)[i]; a, b normalised."""
    total = 0.0
    for i in range(len(a)):
        logits = scale * (b @ a[i])
        total += _log_sum_exp_ref(logits) - logits[i]
    return total / len(a)


def _moco_v3_ref(q1, q2, k1, k2, temperature):
    q1, q2, k1, k2 = map(_normalize_ref, (q1, q2, k1, k2))
    ctr = lambda q, k: _info_nce_ref(q, k, 1.0 / temperature) * 2.0 * temperature
    return ctr(q1, k2) + ctr(q2, k1)


def _clip_ref(img, txt, logit_scale):
    scale = np.exp(logit_scale)
    img, txt = _normalize_ref(img), _normalize_ref(txt)
    return 0.5 * (_info_nce_ref(img, txt, scale) + _info_nce_ref(txt, img, scale))


def _siglip_ref(img, txt, log_t, bias):
    img, txt = _normalize_ref(img), _normalize_ref(txt)
    n = len(img)
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if i == j else -1.0
            total += _log_sigmoid_ref(label * (np.exp(log_t) * img[i] @ txt[j] + bias))
    return -total / n


def _finite_difference_grad(fn, args, argnum, indices, step=1e-6):
    """Central differences of the float64 function fn w.r.t. args[argnum] at `indices`."""
    args = [np.array(a, dtype=np.float64) for a in args]
    grad = []
    for index in indices:
        shifted = [[a.copy() for a in args] for _ in range(2)]
        shifted[0][argnum][index] += step
        shifted[1][argnum][index] -= step
        grad.append((fn(*shifted[0]) - fn(*shifted[1])) / (2 * step))
    return np.array(grad)


def _coordinates_to_check(shape, rng, max_count=24):
    """All indices of an array of this shape, or a random max_count of them if more."""
    indices = list(np.ndindex(shape))
    if len(indices) <= max_count:
        return indices
    return [indices[i] for i in rng.choice(len(indices), max_count, replace=False)]


# ----------------------------------------------------------------------------
# The losses under test, with how to build their arguments
# ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LossCase:
    loss: Callable
    reference: Callable
    num_embeddings: int
    scalars: Callable  # temperature -> tuple of the loss's scalar arguments
    grad_argnums: tuple  # arguments the loss is differentiable in


CASES = {
    "nt_xent": LossCase(contrastive.nt_xent, _nt_xent_ref, 2,
                        lambda tau: (tau,), (0, 1)),
    "moco_v3": LossCase(contrastive.moco_v3, _moco_v3_ref, 4,
                        lambda tau: (tau,), (0, 1)),
    "clip": LossCase(contrastive.clip_loss, _clip_ref, 2,
                     lambda tau: (np.log(1.0 / tau),), (0, 1, 2)),
    "siglip": LossCase(contrastive.siglip_loss, _siglip_ref, 2,
                       lambda tau: (np.log(1.0 / tau), -1.5), (0, 1, 2, 3)),
}


def _unnormalised_embeddings(seed, count, n, d):
    """count float32 [n, d] arrays: normal + 0.5 offset, each row scaled by U(0.3, 3)."""
    rng = np.random.default_rng(seed)
    return [
        ((rng.normal(size=(n, d)) + 0.5) * rng.uniform(0.3, 3.0, size=(n, 1))).astype(np.float32)
        for _ in range(count)
    ]


def _arguments(case, seed, n, d, temperature):
    """float32 arguments of case.loss: its embeddings [n, d], then its scalars."""
    embeddings = _unnormalised_embeddings(seed, case.num_embeddings, n, d)
    return embeddings + [np.float32(s) for s in case.scalars(temperature)]


def _as_float64(args):
    return [np.asarray(a, dtype=np.float64) for a in args]


# (batch N, embedding dim D, temperature); the last one has N divisible by 8 devices.
SHAPES_AND_TEMPERATURES = [(2, 3, 0.1), (5, 8, 0.5), (16, 7, 1.0)]

# One jitted (loss, grads) function per loss, shared by all tests so that equal
# shapes compile once.
VALUE_AND_GRAD = {
    name: jax.jit(jax.value_and_grad(case.loss, argnums=case.grad_argnums))
    for name, case in CASES.items()
}


# ----------------------------------------------------------------------------
# Values and gradients against the references
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("n,d,temperature", SHAPES_AND_TEMPERATURES)
def test_value_and_gradient_match_float64_reference(name, n, d, temperature):
    case = CASES[name]
    args = _arguments(case, seed=n * 100 + d, n=n, d=d, temperature=temperature)
    loss, grads = VALUE_AND_GRAD[name](*args)

    assert loss.dtype == jnp.float32 and loss.shape == ()
    np.testing.assert_allclose(loss, case.reference(*_as_float64(args)), rtol=1e-5)
    rng = np.random.default_rng(n)
    for argnum, grad in zip(case.grad_argnums, grads):
        assert grad.shape == np.shape(args[argnum])
        indices = _coordinates_to_check(grad.shape, rng)
        expected = _finite_difference_grad(case.reference, args, argnum, indices)
        np.testing.assert_allclose(
            [grad[i] for i in indices], expected,
            rtol=1e-3, atol=1e-4 * np.max(np.abs(grad)),
            err_msg=f"d {name} / d argument {argnum}")


# ----------------------------------------------------------------------------
# Defining properties
# ----------------------------------------------------------------------------

# Same shapes as SHAPES_AND_TEMPERATURES[1], so VALUE_AND_GRAD is already compiled.
N, D = 5, 8


def _nt_xent_value(z1, z2, temperature=np.float32(0.2)):
    return VALUE_AND_GRAD["nt_xent"](z1, z2, temperature)[0]


def test_nt_xent_is_symmetric_in_the_two_views():
    z1, z2 = _unnormalised_embeddings(0, 2, N, D)
    np.testing.assert_allclose(_nt_xent_value(z1, z2), _nt_xent_value(z2, z1), rtol=1e-6)


def test_nt_xent_is_invariant_to_positive_row_scaling():
    z1, z2 = _unnormalised_embeddings(1, 2, N, D)
    row_scales = np.random.default_rng(2).uniform(0.01, 100.0, size=(N, 1)).astype(np.float32)
    np.testing.assert_allclose(
        _nt_xent_value(z1 * row_scales, z2 * np.float32(7.0)), _nt_xent_value(z1, z2), rtol=1e-6)


def test_moco_v3_gradient_wrt_keys_is_zero():
    q1, q2, k1, k2 = _unnormalised_embeddings(3, 4, N, D)
    grads = jax.jit(jax.grad(contrastive.moco_v3, argnums=(0, 1, 2, 3)))(q1, q2, k1, k2, 0.2)
    assert np.all(np.abs(grads[0]) > 0) and np.all(np.abs(grads[1]) > 0)
    np.testing.assert_array_equal(grads[2], 0.0)
    np.testing.assert_array_equal(grads[3], 0.0)


def test_clip_loss_takes_a_logit_scale_above_100_as_it_is():
    """CLIP's cap at 100 is the optimizer's (tests/test_clip.py): the loss neither clamps
    the scale nor stops its gradient (d loss / d s against a float64 central difference)."""
    img, txt = _unnormalised_embeddings(4, 2, N, D)
    loss, (_, _, scale_grad) = VALUE_AND_GRAD["clip"](img, txt, np.float32(6.0))
    reference = lambda s: _clip_ref(*_as_float64([img, txt]), s)
    np.testing.assert_allclose(loss, reference(6.0), rtol=1e-5)
    np.testing.assert_allclose(scale_grad, (reference(6.0 + 1e-6) - reference(6.0 - 1e-6)) / 2e-6,
                               rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_embedding_gives_finite_loss_and_gradients(name):
    case = CASES[name]
    args = _arguments(case, seed=5, n=N, d=D, temperature=0.1)
    args[0][1] = 0.0
    loss, grads = VALUE_AND_GRAD[name](*args)
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_inputs_are_computed_in_float32(name):
    case = CASES[name]
    args = _arguments(case, seed=6, n=N, d=D, temperature=0.5)
    embeddings = [jnp.asarray(a, jnp.bfloat16) for a in args[:case.num_embeddings]]
    loss = jax.jit(case.loss)(*embeddings, *args[case.num_embeddings:])
    assert loss.dtype == jnp.float32
    rounded = [np.asarray(e, np.float64) for e in embeddings] + _as_float64(args[case.num_embeddings:])
    np.testing.assert_allclose(loss, case.reference(*rounded), rtol=1e-5)


# ----------------------------------------------------------------------------
# Sharded over the batch axis == unsharded
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_sharded_matches_unsharded(name):
    case = CASES[name]
    devices = np.array(jax.devices())
    assert devices.size == 8
    mesh = Mesh(devices.reshape(8), ("data",))
    n, d, temperature = SHAPES_AND_TEMPERATURES[-1]
    args = _arguments(case, seed=7, n=n, d=d, temperature=temperature)

    loss, grads = VALUE_AND_GRAD[name](*args)
    by_row = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded_args = [
        jax.device_put(a, by_row if i < case.num_embeddings else replicated)
        for i, a in enumerate(args)
    ]
    assert sharded_args[0].addressable_shards[0].data.shape == (n // 8, d)
    sharded_loss, sharded_grads = VALUE_AND_GRAD[name](*sharded_args)

    np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5)
    for sharded_grad, grad in zip(sharded_grads, grads):
        np.testing.assert_allclose(sharded_grad, grad, rtol=1e-5, atol=1e-7)
