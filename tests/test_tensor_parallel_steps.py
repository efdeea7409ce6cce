"""Every method's train step on a data=2, fsdp=2, tensor=2 mesh of the 8 virtual CPU devices
equals its step on one device (loss, updated parameters, method state), and the mesh's
'tensor' axis really splits the model. SimCLR, MoCo v3 and the decoder-only LM are checked
the same way in test_train.py, test_moco.py and test_lm.py; this covers the other methods."""

import os

import jax
import numpy as np
import pytest

from jaxssl import config as config_lib, parallel
from jaxssl.data import pipeline
from jaxssl.train import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MESH = {"data": 2, "fsdp": 2, "tensor": 2}
ONE = {"data": 1, "fsdp": 1, "tensor": 1}
# SGD at a constant, non-zero learning rate: the step moves every parameter, and rounding
# noise in exactly-zero gradients stays noise (Adam's first step would blow it up to lr).
SGD = {"name": "sgd", "base_lr": 0.1, "schedule": "constant", "warmup_steps": 0,
       "momentum": 0.9, "weight_decay": 0.0, "lr_scaling": "none"}
CONFIGS = {"mae": "tiny_mae.py", "simmim": "tiny_mae.py:simmim",
           "clip": "tiny_clip.py", "siglip": "tiny_clip.py:siglip", "pali": "tiny_pali.py",
           "finetune": "tiny_finetune.py", "palm_e": "tiny_palm_e.py", "gato": "tiny_gato.py"}


def step_on(method: str, mesh: dict, devices, workdir, overrides: dict | None = None):
    """(loss, params after one step, method state after it, params' shardings); `overrides`:
    {'section.key': value}."""
    user = config_lib.load_config_file(
        os.path.join(REPO, "tests", "configs", CONFIGS[method])).to_dict()
    user.update(mesh=mesh, optim=SGD, checkpoint={"async_save": False})
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        user.setdefault(section, {})[key] = value
    trainer = Trainer(config_lib.resolve(user), str(workdir), devices=devices)
    loader = pipeline.train_loader(trainer.train_source, trainer.config.data.batch_size, 0, 0, 1)
    batch = parallel.host_batch_to_global(next(iter(loader)), trainer.mesh)
    state, metrics = trainer.compile_train_step()(trainer.initial_state(), batch)
    specs = jax.tree.map(lambda x: x.sharding.spec, state.params)
    return (float(metrics["loss"]), jax.device_get(state.params),
            jax.device_get(state.method_state), specs)


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_step_on_data_fsdp_tensor_mesh_matches_one_device(method, tmp_path):
    loss_1, params_1, state_1, _ = step_on(method, ONE, jax.devices()[:1], tmp_path / "one")
    loss_n, params_n, state_n, specs = step_on(method, MESH, jax.devices(), tmp_path / "mesh")
    np.testing.assert_allclose(loss_n, loss_1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 params_n, params_1)
    # Batch-norm running statistics and EMA encoders: sums that cancel, ~1e-6 noise.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 state_n, state_1)
    split = {axis for spec in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, tuple))
             for entry in spec for axis in (entry if isinstance(entry, tuple) else (entry,))}
    assert {"fsdp", "tensor"} <= split
