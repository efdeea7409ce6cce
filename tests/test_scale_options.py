"""Options that let large models fit, each checked on the 8 virtual CPU devices of a
data=2, fsdp=2, tensor=2 mesh against one device: the text Transformers' scan over
layers and remat policies (lm.scan_layers, lm.remat), and bfloat16 optimizer moments."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import config as config_lib, methods, parallel
from jaxssl.data import pipeline
from jaxssl.data.sources import get_source
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
    """Unscanned Transformer params ('block0'...) -> the scan_layers layout ('blocks')."""
    out = {}
    for name, sub in params.items():
        if isinstance(sub, dict) and "block0" in sub:
            blocks = [sub[f"block{i}"] for i in range(sum(k.startswith("block") for k in sub))]
            rest = {k: v for k, v in sub.items() if not k.startswith("block")}
            out[name] = {**rest, "blocks": jax.tree.map(lambda *xs: np.stack(xs), *blocks)}
        else:
            out[name] = sub
    return out


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
    dict(architecture="encoder_decoder", objective="span", scan_layers=True, remat="full"),
], ids=["scan+full", "scan+dots", "dots", "encdec-scan+full"])
def test_scanned_rematerialised_lm_matches_the_plain_one_on_one_device(lm):
    arch = {k: lm[k] for k in ("architecture", "objective") if k in lm}
    loss, grads, params = loss_and_grads(lm_config(ONE, **arch), jax.devices()[:1])
    scanned = lm_config(MESH, **lm)
    start = stack_blocks(params) if lm["scan_layers"] else params
    sharded_loss, sharded_grads, _ = loss_and_grads(scanned, jax.devices(), start)
    expected = stack_blocks(grads) if lm["scan_layers"] else grads
    assert sharded_loss == pytest.approx(loss, rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 sharded_grads, expected)


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
