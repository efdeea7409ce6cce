"""The train step and loop: sharded == single device, exact resume, preemption."""

import contextlib
import io
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import (config as config_lib, flops as flops_lib, host_memory, logging as log_lib,
                    parallel)
from jaxssl import main as cli
from jaxssl.main import format_results
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


# Logged values that timing decides; every other value of metrics.jsonl the computation decides.
TIMINGS = ("step_time_s", "examples_per_s", "mfu")


def computed_metrics(workdir) -> list[dict]:
    """metrics.jsonl's rows (train steps and evaluations) without the timings."""
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in read_metrics(str(workdir))]


def test_exact_resume(simclr_run, tmp_path):
    """A run stopped after step 3 and resumed logs the losses, ends with the parameters and
    evaluates exactly as the uninterrupted command-line run of conftest.py does."""
    config, workdir = simclr_run.config, str(tmp_path / "resumed")
    # Made before any checkpoint was written: it resumes from the one written since.
    resumed = Trainer(config, workdir)
    Trainer(config, workdir).run(stop_at=3)
    assert [r["step"] for r in read_metrics(workdir) if "loss" in r] == [1, 2, 3]
    # A process that died after logging steps it never saved, the last line cut short:
    # the resumed run logs those steps again, once.
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 4, "loss": 123.0}\n{"step": 5, "lo')
    # Another input pipeline (here the seed of the shuffle) cannot resume this checkpoint.
    with pytest.raises(CheckpointError, match="input-pipeline state of data_source"):
        Trainer(config_lib.resolve({**config.to_dict(), "seed": 1}), workdir)
    assert Trainer(config, workdir).resume_step == 3
    results = resumed.run()
    assert resumed.resume_step == 3
    assert computed_metrics(workdir) == computed_metrics(simclr_run.workdir)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.restore().params),
                 simclr_run.params)
    assert results == simclr_run.results
    # Started again, a finished run evaluates its final state (the process that evaluated it
    # may have died before saving the results), also when the loop's periodic evaluations
    # include the last step.
    periodic = config_lib.resolve({**config.to_dict(),
                                   "eval": {**config.eval.to_dict(), "every_steps": 3}})
    assert Trainer(periodic, workdir).run() == simclr_run.results


@pytest.mark.slow  # starts a grain worker process
def test_data_worker_processes_give_the_same_batches_and_stop_with_the_run(simclr_run,
                                                                            tmp_path):
    """The batches equal the main process's; when the run returns, the worker process has
    stopped (its shared memory: the next test)."""
    config = simclr_run.config
    with_workers = config_lib.resolve({**config.to_dict(),
                                       "data": {**config.data.to_dict(), "num_workers": 1}})
    Trainer(with_workers, str(tmp_path)).run(stop_at=2)
    assert computed_metrics(tmp_path) == computed_metrics(simclr_run.workdir)[:2]
    assert multiprocessing.active_children() == []


@pytest.mark.slow  # starts a training process with two grain worker processes
def test_a_run_with_data_worker_processes_leaks_no_shared_memory(tmp_path):
    """The command line, trained with two data workers, exits without the resource tracker's
    warning about leaked shared memory (the workers' batches are freed by the run, not left
    to the interpreter's exit). Checked in its own process, as /dev/shm is shared with the
    other tests' workers."""
    done = subprocess.run(
        [sys.executable, "-m", "jaxssl.main", f"--config={TINY_CONFIG}", f"--workdir={tmp_path}",
         "--config.total_steps=2", "--config.data.num_workers=2"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "leaked shared_memory" not in done.stderr


# A configured peak, so that the logged MFU has a known denominator (not a CPU measurement).
PEAK_FLOPS = 2.5e9


@pytest.fixture(scope="module")
def async_resumed_run(simclr_run, tmp_path_factory):
    """simclr_run's config with the default asynchronous checkpoint saves, every 2 steps (the
    save of step 2 is written while step 3 runs), TensorBoard, the progress bar and
    log.peak_flops_per_device = PEAK_FLOPS: stopped at step 3, then resumed to the end.

    A namespace: workdir, trainers (the stopped and the resumed Trainer, after their runs),
    results (the resumed run's), stderr and stdout (what the two runs wrote there: the
    progress bar, notes).
    """
    user = simclr_run.config.to_dict()
    user["checkpoint"].update(async_save=True, every_steps=2)
    user["log"].update(tensorboard=True, progress_bar=True, peak_flops_per_device=PEAK_FLOPS)
    config, workdir = config_lib.resolve(user), str(tmp_path_factory.mktemp("async_resumed"))
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        stopped = Trainer(config, workdir)
        assert stopped.run(stop_at=3) == {}
        resumed = Trainer(config, workdir)
        assert resumed.resume_step == 3
        results = resumed.run()
    return types.SimpleNamespace(workdir=workdir, trainers=(stopped, resumed), results=results,
                                 stderr=stderr.getvalue(), stdout=stdout.getvalue())


def test_exact_resume_with_asynchronous_checkpoint_saves(async_resumed_run, simclr_run):
    """Every logged value of every step and the final evaluation, the parameters and the
    results equal the uninterrupted run's bit for bit."""
    run = async_resumed_run
    assert run.trainers[0].config.checkpoint.async_save
    rows = computed_metrics(run.workdir)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert rows == computed_metrics(simclr_run.workdir)
    jax.tree.map(np.testing.assert_array_equal,
                 jax.device_get(run.trainers[1].restore().params), simclr_run.params)
    assert run.results == simclr_run.results
    assert sorted(int(n) for n in os.listdir(os.path.join(run.workdir, "checkpoints"))) == [3, 4, 6]


def test_logged_mfu_is_flops_over_step_time_over_peak(async_resumed_run):
    """mfu = the step's FLOPs per device (jaxssl.flops on the traced step) / step_time_s /
    the configured peak, on every logged step of both runs."""
    rows = [r for r in read_metrics(async_resumed_run.workdir) if "loss" in r]
    for trainer, steps in zip(async_resumed_run.trainers, ([1, 2, 3], [4, 5, 6])):
        info = trainer.mfu_info
        assert info["peak_flops_per_device"] == PEAK_FLOPS and info["peak_source"] == "config"
        flops = flops_lib.traced_flops(trainer.trace_train_step()) / trainer.mesh.size
        assert info["flops_per_step_per_device"] == flops > 0
        logged = [r for r in rows if r["step"] in steps]
        assert [r["step"] for r in logged] == steps
        for row in logged:
            assert row["mfu"] == pytest.approx(flops / row["step_time_s"] / PEAK_FLOPS, rel=1e-12)
            assert row["examples_per_s"] == pytest.approx(
                trainer.config.data.batch_size / row["step_time_s"], rel=1e-12)


def test_tensorboard_events_hold_the_values_of_metrics_jsonl(async_resumed_run):
    """The events files of both runs, read back with TensorFlow, hold every value of every
    metrics.jsonl row (as the float32 that TensorBoard stores) at its step, and nothing else."""
    import tensorflow as tf

    directory = os.path.join(async_resumed_run.workdir, "tensorboard")
    logged = {}
    for name in sorted(os.listdir(directory)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                assert (event.step, value.tag) not in logged, (event.step, value.tag)
                logged[(event.step, value.tag)] = value.simple_value
    expected = {(row["step"], key): float(np.float32(value))
                for row in read_metrics(async_resumed_run.workdir)
                for key, value in row.items() if key != "step"}
    assert logged == expected


def test_progress_bar_shows_steps_loss_and_throughput(async_resumed_run):
    """Each run's bar shows its last step out of total_steps with that step's loss and
    examples/s as logged (the bar redraws itself after carriage returns)."""
    rows = {r["step"]: r for r in read_metrics(async_resumed_run.workdir) if "loss" in r}
    renders = re.split(r"[\r\n]", async_resumed_run.stderr)
    for step in (3, 6):
        shown = (f" {step}/6 ", f"loss={rows[step]['loss']:.4f}",
                 f"ex_per_s={rows[step]['examples_per_s']:.0f}")
        assert any(all(text in render for text in shown) for render in renders), (
            shown, async_resumed_run.stderr)


def test_a_run_notes_the_malloc_arenas_that_suit_its_step(async_resumed_run):
    """Its config keeps the default one arena, and the tiny step's XLA scratch is far under
    a thread arena's 64 MiB: each of the two runs says so once, on stdout."""
    if not host_memory.keep_freed_memory():
        pytest.skip("the C library is not glibc")
    notes = [line for line in async_resumed_run.stdout.splitlines() if "malloc_arenas" in line]
    assert len(notes) == 2, async_resumed_run.stdout
    assert "malloc_arenas" not in async_resumed_run.stderr
    assert all(note.startswith("jaxssl: note: the step's XLA scratch (") and note.endswith(
        "MiB) is under a thread malloc arena's 64 MiB, so --config.malloc_arenas=per_thread "
        "would make its steps faster (jaxssl/host_memory.py)") for note in notes), notes


def test_progress_bar_output_and_its_off_switch(capsys):
    bar = log_lib.ProgressBar(total=10, initial=2, enabled=True)
    bar.update(3, loss=1.234567, examples_per_s=987.6)
    bar.close()
    out = capsys.readouterr()
    assert out.out == ""
    assert "5/10" in out.err and "loss=1.2346" in out.err and "ex_per_s=988" in out.err, out.err
    bar = log_lib.ProgressBar(total=10, initial=2, enabled=False)
    bar.update(3, loss=1.0, examples_per_s=1.0)
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_results_table_keeps_long_metric_names_apart_and_shows_fractions_in_percent():
    table = format_results({
        "pretrained": {"forgetting_knn_before": 0.4025, "forgetting_knn_after": 0.3885,
                       "top1": 0.1094, "i2t_recall@5": 0.5, "loss": 4.64, "tokens": 3419.0},
        "random init": {"top1": 0.1, "loss": 5.25, "tokens": 3419.0}})
    assert table.splitlines() == [
        "encoder        forgetting_knn_after  forgetting_knn_before  i2t_recall@5    loss  tokens"
        "    top1",
        "pretrained                   38.85%                 40.25%        50.00%  4.6400    3419"
        "  10.94%",
        "random init                       -                      -             -  5.2500    3419"
        "  10.00%"]


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


def interrupt_at(monkeypatch, step: int, presses: int) -> None:
    """Ctrl-C (SIGINT to this process) `presses` times as the run logs `step`."""
    write = log_lib.MetricsLogger.write

    def pressing(logger, logged_step, metrics):
        for _ in range(presses if logged_step == step else 0):
            signal.raise_signal(signal.SIGINT)
        write(logger, logged_step, metrics)

    monkeypatch.setattr(log_lib.MetricsLogger, "write", pressing)


def test_ctrl_c_saves_a_checkpoint_and_stops_with_status_130(tmp_path, capsys, monkeypatch):
    handler = signal.getsignal(signal.SIGINT)
    interrupt_at(monkeypatch, step=2, presses=1)
    argv = [f"--config={TINY_CONFIG}", f"--workdir={tmp_path}", "--config.total_steps=6",
            "--config.checkpoint.every_steps=0"]
    assert cli.main(argv) == 130
    assert capsys.readouterr().err.splitlines() == [
        "jaxssl: interrupted: saving a checkpoint after this step (Ctrl-C again stops at once, "
        "without it)",
        "jaxssl: stopped by Ctrl-C at step 2; newest checkpoint: step 2; the same command "
        "resumes the run"]
    assert os.listdir(tmp_path / "checkpoints") == ["2"]
    assert signal.getsignal(signal.SIGINT) is handler


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path, monkeypatch):
    interrupt_at(monkeypatch, step=2, presses=2)
    argv = [f"--config={TINY_CONFIG}", f"--workdir={tmp_path}", "--config.total_steps=6",
            "--config.checkpoint.every_steps=0"]
    with pytest.raises(KeyboardInterrupt) as stop:
        cli.main(argv)
    assert type(stop.value) is KeyboardInterrupt
    assert not os.path.exists(tmp_path / "checkpoints")


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
    """compute_dtype='bfloat16' computes in bfloat16 (the step's program has bfloat16
    arrays; its loss differs from the float32 step's by bfloat16 rounding only) and keeps
    float32 parameters and loss."""
    def one_step(compute_dtype):
        config = tiny_config(compute_dtype=compute_dtype,
                             mesh={"data": 1, "fsdp": 1, "tensor": 1})
        trainer = Trainer(config, str(tmp_path / compute_dtype), devices=jax.devices()[:1])
        loader = pipeline.train_loader(trainer.train_source, config.data.batch_size, 0, 0, 1)
        batch = parallel.host_batch_to_global(next(iter(loader)), trainer.mesh)
        step = trainer.compile_train_step()
        state, metrics = step(trainer.initial_state(), batch)
        return state, metrics["loss"], step.as_text()

    state, loss, program = one_step("bfloat16")
    _, float32_loss, float32_program = one_step("float32")
    assert "bf16[" in program and "bf16[" not in float32_program
    assert loss.dtype == jnp.float32
    assert float(loss) != float(float32_loss)
    np.testing.assert_allclose(float(loss), float(float32_loss), rtol=1e-2)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
