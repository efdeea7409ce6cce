"""MoCo v3: momentum schedule and EMA against their formulas, keys without gradient,
shapes, overfitting one batch, and the sharded step equal to the single-device step."""

import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import config as config_lib, methods, parallel
from jaxssl.data import pipeline
from jaxssl.data.sources import get_source
from jaxssl.methods import base, moco
from jaxssl.train import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_moco.py")
TOTAL_STEPS = 20
TRAIN_STEPS = 3
OVERFIT_STEPS = 10


def tiny_config(**sections):
    """tests/configs/tiny_moco.py with sections updated: tiny_config(mesh={...})."""
    user = config_lib.load_config_file(TINY_CONFIG).to_dict()
    user["total_steps"] = TOTAL_STEPS
    for key, value in sections.items():
        user[key] = {**user.get(key, {}), **value}
    return config_lib.resolve(user)


def reference_momentum(step, total_steps, base_momentum):
    return 1.0 - (1.0 - base_momentum) * (np.cos(np.pi * step / total_steps) + 1.0) / 2.0


def key_encoder_of(params):
    return {name: params[name] for name in moco.KEY_ENCODER}


def assert_trees_close(actual, expected, rtol, atol):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol),
                 actual, expected)


def assert_updates_close(after, expected_after, before, rtol=1e-3, atol=1e-6):
    """Per leaf, the step's update u = after - before matches the expected one in L2 norm:
    |u - u_expected| <= rtol * |u_expected| + atol. Float32 steps that sum in a different
    order differ by ~1e-4 of the update (SimCLR's step too); `atol` covers leaves whose
    gradient is zero up to rounding (attention key bias, LayerNorm bias before a BN)."""
    norms = []
    for a, e, b in zip(jax.tree.leaves(after), jax.tree.leaves(expected_after),
                       jax.tree.leaves(before)):
        update, expected = np.float64(a) - b, np.float64(e) - b
        norms.append(np.linalg.norm(expected))
        assert np.linalg.norm(update - expected) <= rtol * norms[-1] + atol, (a.shape, norms[-1])
    assert max(norms) > 1e-2, "the step must change the parameters"


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """TRAIN_STEPS steps of the compiled 1-device step on one fixed batch.

    `states` are host copies of every state without the rng (the step donates its
    input); `final_state` is the last state on the device.
    """
    trainer = Trainer(tiny_config(mesh={"data": 1, "fsdp": 1, "tensor": 1}),
                      str(tmp_path_factory.mktemp("single")), devices=jax.devices()[:1])
    host_batch = next(iter(pipeline.train_loader(trainer.train_source, 16, 0, 0, 1)))
    batch = parallel.host_batch_to_global(host_batch, trainer.mesh)
    train_step = trainer.compile_train_step()
    state = trainer.initial_state()
    states, losses = [jax.device_get(state.replace(rng=None))], []
    for _ in range(TRAIN_STEPS):
        state, metrics = train_step(state, batch)
        states.append(jax.device_get(state.replace(rng=None)))
        losses.append(float(metrics["loss"]))
    return types.SimpleNamespace(method=trainer.method, train_step=train_step, final_state=state,
                                 host_batch=host_batch, batch=batch, states=states, losses=losses)


def test_momentum_schedule_matches_formula():
    steps = np.array([0, 1, 17, 50, 83, 99, 100])
    actual = jax.jit(jax.vmap(lambda s: moco.momentum_schedule(s, 100, 0.99)))(steps)
    np.testing.assert_allclose(actual, reference_momentum(steps.astype(np.float64), 100, 0.99),
                               rtol=1e-7, atol=1e-7)
    assert float(actual[0]) == pytest.approx(0.99) and float(actual[-1]) == pytest.approx(1.0)


def test_ema_update_matches_formula():
    rng = np.random.default_rng(0)
    shapes = {"a": {"kernel": (3, 4), "bias": (4,)}, "b": (2, 5, 6)}
    draw = lambda: jax.tree.map(lambda s: rng.normal(size=s), shapes,
                                is_leaf=lambda x: isinstance(x, tuple))
    ema, online = draw(), draw()
    momentum = 0.9731
    actual = moco.ema_update(jax.tree.map(jnp.float32, ema), jax.tree.map(jnp.float32, online),
                             jnp.float32(momentum))
    expected = jax.tree.map(lambda e, o: momentum * e + (1 - momentum) * o, ema, online)
    assert_trees_close(actual, expected, rtol=1e-6, atol=1e-7)


def test_view_recipes_are_asymmetric_byol_and_validated():
    augment_config = tiny_config().augment
    view1, view2 = moco.view_recipes(augment_config, (1.0, 0.1), (0.0, 0.2))
    assert (view1.blur_prob, view1.solarize_prob, view2.blur_prob, view2.solarize_prob) == (
        1.0, 0.0, 0.1, 0.2)
    assert view1.brightness == view2.brightness == 0.4
    same1, same2 = moco.view_recipes(augment_config, (), ())
    assert same1 == same2 and same1.blur_prob == augment_config.blur_prob
    with pytest.raises(ValueError, match="0 or 2 values"):
        moco.view_recipes(augment_config, (0.5,), ())


def test_train_step_applies_ema_with_scheduled_momentum(single):
    """Key encoder after step t = m(t) * before + (1 - m(t)) * query weights before step t."""
    assert_trees_close(single.states[0].method_state[moco.MOMENTUM],
                       key_encoder_of(single.states[0].params), rtol=0, atol=0)
    for t in range(1, TRAIN_STEPS):
        before, after = single.states[t], single.states[t + 1]
        m = reference_momentum(t, TOTAL_STEPS, 0.99)
        expected = jax.tree.map(lambda e, o: m * np.float64(e) + (1 - m) * np.float64(o),
                                before.method_state[moco.MOMENTUM], key_encoder_of(before.params))
        assert_trees_close(after.method_state[moco.MOMENTUM], expected, rtol=1e-6, atol=1e-7)


def test_keys_carry_no_gradient(single):
    method, state = single.method, single.states[2]
    stats = {k: v for k, v in state.method_state.items() if k != moco.MOMENTUM}
    view = base.prepare_images(single.host_batch["image"], 8)
    weights = jax.random.normal(jax.random.key(0), (16, 16))

    def weighted_keys(params, method_state):
        key_encoder, _ = method.update_key_encoder(params, method_state, jnp.int32(3))
        return jnp.sum(weights * method.keys(key_encoder, stats, view))

    value, grads = jax.jit(jax.value_and_grad(weighted_keys, argnums=(0, 1)))(
        state.params, state.method_state)
    assert abs(float(value)) > 1e-3
    for grad in jax.tree.leaves(grads):
        np.testing.assert_array_equal(grad, 0.0)


def test_shapes_and_state_structure(single):
    method, state, batch = single.method, single.states[0], single.batch
    rng, step = jax.random.key(0), jnp.int32(0)
    views = jax.eval_shape(method.views, rng, batch["image"])
    assert [v.shape for v in views] == [(16, 8, 8, 1)] * 2
    stats = {k: v for k, v in state.method_state.items() if k != moco.MOMENTUM}
    queries, new_stats = jax.eval_shape(method.queries, state.params, stats, views[0])
    keys = jax.eval_shape(method.keys, state.method_state[moco.MOMENTUM], stats, views[0])
    assert queries.shape == keys.shape == (16, 16) and keys.dtype == jnp.float32
    assert jax.tree.structure(new_stats) == jax.tree.structure(stats)
    features = jax.eval_shape(method.features, {"params": state.params, **state.method_state},
                              batch["image"])
    assert features.shape == (16, 32) and features.dtype == jnp.float32
    loss, (metrics, new_state) = jax.eval_shape(method.loss_fn, state.params, state.method_state,
                                                batch, rng, step)
    assert loss.shape == () and set(metrics) == {"loss", "momentum", "positive_top1"}
    assert (jax.tree.map(lambda x: (x.shape, x.dtype), new_state)
            == jax.tree.map(lambda x: (x.shape, x.dtype), state.method_state))
    assert set(state.params) == {"backbone", "projector", "predictor"}


def test_key_passes_leave_query_running_stats_alone(single):
    """The new batch_stats are exactly those of the two query passes, view 1 then view 2."""
    method, state, batch = single.method, single.states[1], single.batch
    rng, step = jax.random.key(3), jnp.int32(1)

    def both(params, method_state):
        _, (_, new_state) = method.loss_fn(params, method_state, batch, rng, step)
        stats = {k: v for k, v in method_state.items() if k != moco.MOMENTUM}
        for view in method.views(rng, batch["image"]):
            _, stats = method.queries(params, stats, view)
        return new_state["batch_stats"], stats["batch_stats"]

    from_loss, from_queries = jax.jit(both)(state.params, state.method_state)
    assert_trees_close(from_loss, from_queries, rtol=0, atol=0)
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), from_loss,
                                           state.method_state["batch_stats"]))
    assert any(changed)


def test_training_on_one_batch_lowers_its_loss(single):
    """Steps that all see step 0's views of one batch (constant lr, no warm-up) lower its loss."""
    state, losses = single.final_state, []
    for _ in range(OVERFIT_STEPS):
        state, metrics = single.train_step(state.replace(step=jnp.zeros_like(state.step)),
                                           single.batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.3, losses


@pytest.mark.parametrize("mesh", [
    pytest.param({"data": 8, "fsdp": 1, "tensor": 1}, marks=pytest.mark.slow),  # CI's slow run
    {"data": 2, "fsdp": 4, "tensor": 1},
    # Here the sharded loss once made XLA partition the backward pass wrongly (updates off
    # by up to 0.6; jaxssl.objectives.contrastive._sharded now enters it replicated).
    {"data": 2, "fsdp": 2, "tensor": 2},
])
def test_sharded_step_matches_single_device(mesh, single, tmp_path):
    trainer = Trainer(tiny_config(mesh=mesh), str(tmp_path))
    batch = parallel.host_batch_to_global(single.host_batch, trainer.mesh)
    state, metrics = trainer.compile_train_step()(trainer.initial_state(), batch)
    np.testing.assert_allclose(float(metrics["loss"]), single.losses[0], rtol=1e-5)
    before, expected = single.states[0], single.states[1]
    assert_updates_close(jax.device_get(state.params), expected.params, before.params)
    # Running batch-norm means (values ~0.1) are sums that cancel: ~1e-6 absolute noise.
    assert_trees_close(jax.device_get(state.method_state), expected.method_state,
                       rtol=1e-4, atol=1e-5)
    if mesh["fsdp"] > 1:
        kernel = state.params["backbone"]["encoder"]["block0"]["mlp"]["fc1"]["kernel"]
        assert kernel.addressable_shards[0].data.size < kernel.size, kernel.sharding



@pytest.mark.parametrize("config_file", [
    pytest.param("tiny_moco.py", marks=pytest.mark.slow),  # ~15 s of compiling; CI's slow run
    "tiny_simclr.py"])
def test_vit_drop_path_gets_its_own_key(config_file):
    """SimCLR and MoCo v3 give the ViT its dropout key: with drop-path on, the loss runs,
    and differs from the drop-path-free loss of the same parameters, views and key."""
    def method_with(drop_path):
        user = config_lib.load_config_file(os.path.join(REPO, "tests", "configs", config_file))
        user = user.to_dict()
        # depth 2: drop-path rates rise linearly from 0, so one block alone never drops.
        user["model"].update(name="vit", depth=2, drop_path=drop_path)
        config = config_lib.resolve(user)
        return methods.get(config.method)(config), config

    dropping, config = method_with(0.5)
    keeping, _ = method_with(0.0)
    batch = pipeline.example_batch(get_source(config.data.name, "train"), 4)

    @jax.jit  # one program: initialising outside jit would compile op by op
    def losses(batch):
        params, state = base.split_variables(dropping.init(jax.random.key(1), batch))
        return [m.loss_fn(params, state, batch, jax.random.key(2), 0)[0]
                for m in (dropping, keeping)]

    with_drop_path, without = (float(loss) for loss in losses(batch))
    assert np.isfinite(with_drop_path) and with_drop_path != without
