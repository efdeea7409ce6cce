"""Options that let large models fit, each checked on the 8 virtual CPU devices of a
data=2, fsdp=2, tensor=2 mesh against one device: the text Transformers' scan over
layers and remat policies (lm.scan_layers, lm.remat; pali's decoder and CLIP/SigLIP's text
tower too), and bfloat16 optimizer moments; activation constraints off a mesh, the fsdp
fallback of parameters the logical rules leave whole, and jaxssl.aot's checks of how the
state is split."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxssl import aot, config as config_lib, methods, optim, parallel
from jaxssl.data import pipeline
from jaxssl.data.sources import get_source
from jaxssl.data.text import text_dataset_name
from jaxssl.errors import ConfigError
from jaxssl.train import TrainStep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_LM = os.path.join(REPO, "tests", "configs", "tiny_lm.py")
MESH = {"data": 2, "fsdp": 2, "tensor": 2}
ONE = {"data": 1, "fsdp": 1, "tensor": 1}


def lm_config(mesh, **lm):
    user = config_lib.load_config_file(TINY_LM).to_dict()
    user["lm"].update(lm)
    user["mesh"] = mesh
    return config_lib.resolve(user)


def stack_blocks(params: dict) -> dict:
    """Unscanned text-Transformer params ('block0'...) -> the scan_layers layout ('blocks'),
    wherever they are in the tree but under 'backbone' (PaLI's ViT, not scanned)."""
    if not isinstance(params, dict):
        return params
    if "block0" in params:
        blocks = [params[f"block{i}"] for i in range(sum(k.startswith("block") for k in params))]
        rest = {k: v for k, v in params.items() if not k.startswith("block")}
        return {**rest, "blocks": jax.tree.map(lambda *xs: np.stack(xs), *blocks)}
    return {k: v if k == "backbone" else stack_blocks(v) for k, v in params.items()}


def loss_and_grads(config, devices, params=None):
    """(loss, grads, params) of the config's loss on a fixed batch of 16 rows, computed on
    `devices` with the TrainStep's shardings; starts from `params` when given."""
    method = methods.get(config.method)(config)
    source = get_source(config.data.name, config.data.train_split)
    batch = pipeline.example_batch(source, config.data.batch_size)
    step = TrainStep(config, parallel.make_mesh(config.mesh, devices), method, batch)
    shardings = step.state_shardings.params
    if params is None:
        params = jax.device_get(jax.jit(lambda: method.init(jax.random.key(0), batch))())
        params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x,
                              params["params"], is_leaf=lambda x: hasattr(x, "unbox"))
    loss_fn = lambda p, b: method.loss_fn(p, {}, b, jax.random.key(1), 0)[0]
    grad = jax.jit(jax.value_and_grad(loss_fn),
                   in_shardings=(shardings, parallel.batch_sharding(step.mesh)))
    with jax.sharding.use_abstract_mesh(step.mesh.abstract_mesh):
        loss, grads = grad(jax.device_put(params, shardings),
                           parallel.host_batch_to_global(batch, step.mesh))
    return float(loss), jax.device_get(grads), params


@pytest.mark.parametrize("lm", [
    dict(scan_layers=True, remat="full"),
    dict(scan_layers=True, remat="dots"),
    dict(scan_layers=False, remat="dots"),
    # T5-like: each scanned, rematerialised block computes the relative-position bias again
    dict(architecture="encoder_decoder", objective="span", posemb="relative", scan_layers=True,
         remat="full"),
], ids=["scan+full", "scan+dots", "dots", "encdec-relative-scan+full"])
def test_scanned_rematerialised_lm_matches_the_plain_one_on_one_device(lm):
    arch = {k: lm[k] for k in ("architecture", "objective", "posemb") if k in lm}
    loss, grads, params = loss_and_grads(lm_config(ONE, **arch), jax.devices()[:1])
    scanned = lm_config(MESH, **lm)
    start = stack_blocks(params) if lm["scan_layers"] else params
    sharded_loss, sharded_grads, _ = loss_and_grads(scanned, jax.devices(), start)
    expected = stack_blocks(grads) if lm["scan_layers"] else grads
    assert sharded_loss == pytest.approx(loss, rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 sharded_grads, expected)


def test_a_scanned_stack_gets_the_weight_decay_of_its_blocks_unscanned():
    # Its biases and norm scales carry a layer axis, but are not decayed any more than
    # the unscanned blocks' (a scan changes memory and compile time, not the training).
    config = lambda scan: lm_config(ONE, scan_layers=scan)
    masks = {}
    for scan in (False, True):
        method = methods.get("lm")(config(scan))
        batch = pipeline.example_batch(get_source(config(scan).data.name, "train"), 2)
        params = jax.eval_shape(lambda: method.init(jax.random.key(0), batch))["params"]
        params = jax.tree.map(lambda x: np.zeros(x.shape, np.float32), nn.unbox(params))
        masks[scan] = optim.decay_mask(params)
    expected = stack_blocks(masks[False])
    assert jax.tree.structure(masks[True]) == jax.tree.structure(expected)
    stacked = [(k, v) for k, v in jax.tree_util.tree_leaves_with_path(masks[True])
               if "'blocks'" in jax.tree_util.keystr(k)]
    assert {bool(v) for _, v in stacked} == {True, False}
    jax.tree.map(lambda got, want: np.testing.assert_array_equal(got, np.all(want)),
                 masks[True], expected)


@pytest.mark.parametrize("spec, section, stacked", [
    ("tiny_pali.py", "pali", ("decoder", "stack")),
    ("tiny_clip.py:siglip", "siglip", ("text_tower", "stack")),
], ids=["pali-decoder", "siglip-text-tower"])
def test_text_stack_of_multimodal_methods_scanned_and_rematerialised_matches_the_plain_one(
        spec, section, stacked):
    user = config_lib.load_config_file(os.path.join(REPO, "tests", "configs", spec)).to_dict()
    user[section].update(text_depth=2)
    loss, grads, params = loss_and_grads(config_lib.resolve({**user, "mesh": ONE}),
                                         jax.devices()[:1])
    user[section].update(scan_layers=True, remat="dots")
    sharded_loss, sharded_grads, _ = loss_and_grads(config_lib.resolve({**user, "mesh": MESH}),
                                                    jax.devices(), stack_blocks(params))
    assert "blocks" in sharded_grads[stacked[0]][stacked[1]]
    assert sharded_loss == pytest.approx(loss, rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 sharded_grads, stack_blocks(grads))


def test_scanned_stack_is_one_rematerialised_scan_with_params_on_a_layers_axis():
    config = lm_config(MESH, scan_layers=True, remat="full")
    method = methods.get("lm")(config)
    batch = pipeline.example_batch(get_source(config.data.name, "train"), 2)
    step = TrainStep(config, parallel.make_mesh(config.mesh, jax.devices()), method, batch)
    kernel = step.abstract_state.params["stack"]["blocks"]["mlp"]["fc1"]["kernel"]
    assert kernel.shape == (2, 32, 64)
    spec = step.state_shardings.params["stack"]["blocks"]["mlp"]["fc1"]["kernel"].spec
    assert tuple(spec) == (None, "fsdp", "tensor")
    jaxpr = str(step.trace_train_step().jaxpr)
    assert "scan[" in jaxpr and "remat2[" in jaxpr  # jax.checkpoint's primitive


def test_unknown_remat_is_a_config_error():
    with pytest.raises(ConfigError, match="lm.remat"):
        lm_config(ONE, remat="sometimes")


# ------------------------------------------------------------ optimizer-state dtype

def train_steps(config, devices, params, steps=2):
    """Params after `steps` train steps on one fixed batch, from `params`, on `devices`."""
    method = methods.get(config.method)(config)
    source = get_source(config.data.name, config.data.train_split)
    batch = pipeline.example_batch(source, config.data.batch_size)
    step = TrainStep(config, parallel.make_mesh(config.mesh, devices), method, batch)
    state = jax.device_put(step.abstract_state.replace(
        step=np.int32(0), params=params, opt_state=step.tx.init(params), method_state={},
        rng=jax.random.key(0)), step.state_shardings)
    train_step = step.compile_train_step()
    global_batch = parallel.host_batch_to_global(batch, step.mesh)
    for _ in range(steps):
        state, _ = train_step(state, global_batch)
    return jax.device_get(state.params), state.opt_state


def test_bfloat16_moments_store_adams_first_moment_in_bfloat16():
    opt_bytes, dtypes = {}, {}
    for moments in ("float32", "bfloat16"):
        config = lm_config(MESH, hidden=64)
        config.optim.moments_dtype = moments
        method = methods.get("lm")(config)
        batch = pipeline.example_batch(get_source(config.data.name, "train"), 2)
        step = TrainStep(config, parallel.make_mesh(config.mesh, jax.devices()), method, batch)
        adam = step.abstract_state.opt_state[0]
        dtypes[moments] = ({x.dtype for x in jax.tree.leaves(adam.mu)},
                           {x.dtype for x in jax.tree.leaves(adam.nu)})
        opt_bytes[moments] = sum(np.prod(x.shape) * x.dtype.itemsize
                                 for x in jax.tree.leaves(step.abstract_state.opt_state))
    assert dtypes["bfloat16"] == ({jnp.dtype(jnp.bfloat16)}, {jnp.dtype(jnp.float32)})
    assert dtypes["float32"] == ({jnp.dtype(jnp.float32)}, {jnp.dtype(jnp.float32)})
    assert opt_bytes["bfloat16"] == pytest.approx(0.75 * opt_bytes["float32"], rel=0.01)


def test_bfloat16_momentum_steps_on_the_mesh_match_one_device():
    sgd = {"name": "sgd", "base_lr": 0.1, "momentum": 0.9, "lr_scaling": "none",
           "moments_dtype": "bfloat16"}
    one, mesh = (config_lib.resolve({**config_lib.load_config_file(TINY_LM).to_dict(),
                                     "mesh": m, "optim": sgd}) for m in (ONE, MESH))
    _, _, params = loss_and_grads(one, jax.devices()[:1])
    single, _ = train_steps(one, jax.devices()[:1], params)
    sharded, opt_state = train_steps(mesh, jax.devices(), params)
    assert {x.dtype for x in jax.tree.leaves(opt_state) if x.ndim} == {jnp.dtype(jnp.bfloat16)}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-5),
                 sharded, single)
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), single, params)
    assert max(jax.tree.leaves(moved)) > 1e-3  # the steps did change the params


# ------------------------------------------------------- sharding checks and fallbacks

def test_constrain_leaves_arrays_alone_off_a_mesh_and_on_one_device():
    x = jnp.ones((4, 6))
    assert parallel.constrain(x, ("batch", "mlp")) is x
    one = parallel.make_mesh(ONE, jax.devices()[:1])
    with jax.sharding.use_abstract_mesh(one.abstract_mesh):
        assert parallel.constrain(x, ("batch", "mlp")) is x


def test_annotated_parameter_that_the_rules_leave_whole_falls_back_to_fsdp():
    """A scanned stack's [layers, mlp] bias with tensor = 1: no rule splits it, so it is
    split over fsdp like an unannotated array; a small one stays whole."""
    mesh = parallel.make_mesh({"data": 1, "fsdp": 8, "tensor": 1}, jax.devices())
    boxed = {"bias": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((36, 10240), jnp.float32),
                                             ("layers", "mlp")),
             "small": nn.LogicallyPartitioned(jax.ShapeDtypeStruct((36, 16), jnp.float32),
                                              ("layers", "mlp"))}
    shardings = parallel.tree_shardings(boxed, mesh)
    assert shardings["bias"].spec == P(None, "fsdp")
    assert shardings["small"].is_fully_replicated
    abstract = parallel.unboxed_abstract(boxed)
    assert aot.replicated_parameters(abstract, shardings) == {}
    whole = {k: parallel.replicated(mesh) for k in abstract}
    assert aot.replicated_parameters(abstract, whole) == {"bias": 36 * 10240 * 4 / 2**20}


def test_state_over_ideal_is_one_when_params_and_moments_are_split_over_fsdp_and_tensor():
    user = config_lib.load_config_file(TINY_LM).to_dict()
    # 17 sentinels: a vocabulary of 280 ids, which the tensor axis splits (279 it would not).
    user.update(mesh=MESH, data={**user["data"], "name": text_dataset_name(
        "pydoc", length=17, sentinels=17)})
    config = config_lib.resolve(user)
    method = methods.get("lm")(config)
    batch = pipeline.example_batch(get_source(config.data.name, "train"), 2)
    step = TrainStep(config, parallel.make_mesh(config.mesh, jax.devices()), method, batch)
    ratio = aot.state_over_ideal(step.abstract_state, step.state_shardings, step.mesh)
    assert 1.0 <= ratio < 1.05  # norm scales and biases of width 64 are split over fsdp only
    whole = jax.tree.map(lambda _: parallel.replicated(step.mesh), step.state_shardings)
    assert aot.state_over_ideal(step.abstract_state, whole, step.mesh) == pytest.approx(4.0)


@pytest.mark.parametrize("recipe", sorted(
    name for name in os.listdir(os.path.join(REPO, "configs", "scale")) if name.endswith(".py")))
def test_scale_recipe_resolves_and_its_method_builds(recipe):
    """The published-size recipes of experiments/scaling (compiled there, not here)."""
    config = config_lib.load(os.path.join(REPO, "configs", "scale", recipe))
    methods.get(config.method)(config)
