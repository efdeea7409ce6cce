"""The train step and loop: sharded == single device, exact resume, preemption."""

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import config as config_lib, parallel
from jaxssl.errors import CheckpointError
from jaxssl.data import pipeline
from jaxssl.logging import read_metrics
from jaxssl.train import Trainer, TrainState, make_train_step
from sharding_checks import assert_block_sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


TINY_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_simclr.py")


def tiny_config(**sections):
    """tests/configs/tiny_simclr.py with sections updated: tiny_config(mesh={...})."""
    user = config_lib.load_config_file(TINY_CONFIG).to_dict()
    user.update({"total_steps": 6, "augment": {"blur_prob": 0.0},
                 "optim": {"name": "adamw", "base_lr": 1e-3, "warmup_steps": 2},
                 "checkpoint": {"async_save": False}})
    for key, value in sections.items():
        user[key] = {**user.get(key, {}), **value} if isinstance(value, dict) else value
    return config_lib.resolve(user)


def one_step(mesh_config, devices, workdir):
    # SGD at a constant, non-zero learning rate: the step really moves every parameter
    # (Adam's first step would turn rounding noise in exactly-zero gradients into lr-sized moves).
    config = tiny_config(mesh=mesh_config, optim={"name": "sgd", "base_lr": 0.5,
                                                  "schedule": "constant", "warmup_steps": 0})
    trainer = Trainer(config, str(workdir), devices=devices)
    state = trainer.initial_state()
    initial_params = jax.device_get(state.params)
    loader = pipeline.train_loader(trainer.train_source, config.data.batch_size, 0, 0, 1)
    batch = parallel.host_batch_to_global(next(iter(loader)), trainer.mesh)
    new_state, metrics = trainer.compile_train_step()(state, batch)
    params = jax.device_get(new_state.params)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params, initial_params)
    assert max(jax.tree.leaves(moved)) > 1e-3  # the compared step really updates parameters
    return params, float(metrics["loss"]), new_state


@pytest.fixture(scope="module")
def single_device_step(tmp_path_factory):
    return one_step({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1],
                    tmp_path_factory.mktemp("single"))


@pytest.mark.parametrize("mesh", [
    # CI's slow run; the fast run's mesh shards the batch, the parameters (fsdp) and the
    # model (tensor) at once.
    pytest.param({"data": 8, "fsdp": 1, "tensor": 1}, marks=pytest.mark.slow),
    pytest.param({"data": 2, "fsdp": 4, "tensor": 1}, marks=pytest.mark.slow),
    {"data": 2, "fsdp": 2, "tensor": 2},
])
def test_sharded_step_matches_single_device(mesh, single_device_step, tmp_path):
    params_1, loss_1, _ = single_device_step
    params_n, loss_n, state_n = one_step(mesh, None, tmp_path)
    np.testing.assert_allclose(loss_n, loss_1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 params_n, params_1)
    # The MLP and attention kernels are split over fsdp ('embed') and tensor ('mlp', 'heads').
    assert_block_sharding(state_n.params["backbone"]["encoder"]["block0"], mesh, "attention")


def test_exact_resume(simclr_run, tmp_path):
    """A run stopped after step 3 and resumed logs the losses, ends with the parameters and
    evaluates exactly as the uninterrupted command-line run of conftest.py does."""
    config, workdir = simclr_run.config, str(tmp_path / "resumed")
    Trainer(config, workdir).run(stop_at=3)
    assert [r["step"] for r in read_metrics(workdir) if "loss" in r] == [1, 2, 3]
    # Another input pipeline (here the seed of the shuffle) cannot resume this checkpoint.
    with pytest.raises(CheckpointError, match="input-pipeline state of data_source"):
        Trainer(config_lib.resolve({**config.to_dict(), "seed": 1}), workdir)
    resumed = Trainer(config, workdir)
    assert resumed.resume_step == 3
    results = resumed.run()
    losses = lambda d: [r["loss"] for r in read_metrics(str(d)) if "loss" in r]
    assert losses(workdir) == losses(simclr_run.workdir)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.final_state.params),
                 simclr_run.params)
    assert results == simclr_run.results


def test_logged_mfu_comes_from_the_steps_matmul_flops(simclr_run):
    """Every logged step of the command-line run has an MFU above 0: the FLOPs are counted
    on the traced step (jaxssl.flops), which works on every backend."""
    rows = [r for r in read_metrics(str(simclr_run.workdir)) if "loss" in r]
    assert rows and all(r["mfu"] > 0 for r in rows), [r["mfu"] for r in rows]


@pytest.mark.slow  # a subprocess that starts JAX and compiles: CI's slow run
def test_sigterm_saves_and_exits_zero(tmp_path):
    workdir = tmp_path / "job"
    cmd = [sys.executable, "-m", "jaxssl.main", f"--config={TINY_CONFIG}",
           f"--workdir={workdir}", "--config.total_steps=100000"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = workdir / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    steps = [int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit()]
    assert steps and max(steps) >= 2


class MeanSquaredError:
    """A stand-in method whose loss is a mean over examples, so micro-batches add up exactly."""

    def loss_fn(self, params, state, batch, rng, step):
        del rng, step
        error = batch["x"] @ params["w"] - batch["y"]
        loss = jnp.mean(error**2)
        return loss, ({"loss": loss}, {"count": state["count"] + 1})


def test_gradient_accumulation_equals_the_full_batch():
    rng = np.random.default_rng(0)
    batch = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
             "y": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}
    tx = optax.sgd(0.1)
    params = {"w": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       method_state={"count": jnp.zeros((), jnp.int32)}, rng=jax.random.key(0))
    results = {}
    for accum in (1, 2, 4):
        step = jax.jit(make_train_step(MeanSquaredError(), tx, accum, optax.constant_schedule(0.1)))
        new_state, metrics = step(state, batch)
        results[accum] = (new_state.params["w"], metrics["loss"], new_state.method_state["count"])
    for accum in (2, 4):
        np.testing.assert_allclose(results[accum][0], results[1][0], rtol=1e-6)
        np.testing.assert_allclose(results[accum][1], results[1][1], rtol=1e-6)
        assert int(results[accum][2]) == accum  # state threaded through every micro-batch


def test_bfloat16_compute_keeps_float32_params_and_loss(tmp_path):
    config = tiny_config(compute_dtype="bfloat16", mesh={"data": 1, "fsdp": 1, "tensor": 1})
    trainer = Trainer(config, str(tmp_path), devices=jax.devices()[:1])
    state = trainer.initial_state()
    loader = pipeline.train_loader(trainer.train_source, config.data.batch_size, 0, 0, 1)
    batch = parallel.host_batch_to_global(next(iter(loader)), trainer.mesh)
    state, metrics = trainer.compile_train_step()(state, batch)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
