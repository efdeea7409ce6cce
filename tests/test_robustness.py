"""Runs that go wrong: divergence stops before a non-finite state is saved, a damaged
newest checkpoint is passed over (and kept), and kill -9 at random moments during
asynchronous saves loses nothing: the resumed metrics equal an uninterrupted run's."""

import asyncio
import errno
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.path import async_path

from conftest import SIMCLR_RUN_OVERRIDES, TINY_SIMCLR, damage, snapshot
from jaxssl import abandoned_io, checkpoint, config as config_lib, logging as log_lib, main as cli
from jaxssl.errors import CheckpointError
from jaxssl.train import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = ("step_time_s", "examples_per_s", "mfu")


def read_metrics(workdir) -> list[dict]:
    """metrics.jsonl rows without the timing columns."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def argv_for(workdir, overrides: dict) -> list[str]:
    return [f"--config={TINY_SIMCLR}", f"--workdir={workdir}",
            *(f"--config.{k}={v}" for k, v in overrides.items())]


def load(overrides: dict):
    """tests/configs/tiny_simclr.py with `overrides` as the command line gives them."""
    return config_lib.load(TINY_SIMCLR, {k: str(v) for k, v in overrides.items()})


def all_finite(tree) -> bool:
    return all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree))


def test_a_diverging_run_stops_at_its_first_non_finite_step(tmp_path, capsys):
    """Learning rate 1e9: exit 3 naming the step and values; the newest checkpoint is the
    last finite state, not the diverged one."""
    overrides = {"total_steps": 10, "optim.base_lr": 1e9, "checkpoint.every_steps": 1,
                 "checkpoint.async_save": True}
    assert cli.main(argv_for(tmp_path, overrides)) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxssl: error: training diverged at step "), err
    named = int(err[0].split("at step ")[1].split(":")[0])
    rows = read_metrics(tmp_path)
    guarded = ("loss", "grad_norm", "param_norm")
    first_bad = next(r["step"] for r in rows if not all(math.isfinite(r[k]) for k in guarded))
    assert named == first_bad
    assert f"loss={rows[first_bad - 1]['loss']:.6g}" in err[0]
    trainer = Trainer(load(overrides), str(tmp_path))
    assert trainer.resume_step == first_bad - 1
    state = trainer.restore()
    assert int(state.step) == first_bad - 1 and all_finite(state.params)
    assert all_finite(state.opt_state)


def test_the_guard_can_be_switched_off(tmp_path):
    overrides = {"total_steps": 4, "optim.base_lr": 1e9, "stop_on_nonfinite": False}
    config = load(overrides)
    assert Trainer(config, str(tmp_path)).run(stop_at=3) == {}
    state = Trainer(config, str(tmp_path)).restore()
    assert int(state.step) == 3 and not all_finite(state.params)


def test_a_truncated_newest_checkpoint_resumes_from_the_step_before(simclr_run, tmp_path,
                                                                      capsys, monkeypatch):
    """The run of conftest.py again, saving every 2 steps, stopped at 4 with step 4's
    arrays truncated: resuming warns, restores step 2, moves step 4 aside intact (never
    deleted), and trains on to the uninterrupted run's exact metrics."""
    overrides = {**SIMCLR_RUN_OVERRIDES, "checkpoint.every_steps": 2}
    config = load(overrides)
    assert Trainer(config, str(tmp_path)).run(stop_at=4) == {}
    sizes = damage(tmp_path / "checkpoints" / "4")
    capsys.readouterr()
    results = Trainer(config, str(tmp_path)).run()
    err = capsys.readouterr().err
    assert "checkpoint step 4 is unreadable" in err
    assert f"moved unreadable checkpoint step 4 to {tmp_path}/corrupt_checkpoints/4" in err
    aside = tmp_path / "corrupt_checkpoints" / "4"
    assert {p: os.path.getsize(aside / p) for p in sizes} == sizes
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4", "6"]
    # The rows of steps 3 and 4, logged before the damage, are logged again, once.
    assert read_metrics(tmp_path) == read_metrics(simclr_run.workdir)
    assert results == simclr_run.results
    # asyncio's reports of Orbax's unawaited reads of step 4 are dropped, no others.
    unretrieved = lambda path: logging.LogRecord(
        "asyncio", logging.ERROR, __file__, 0, "Future exception was never retrieved\n"
        "future: <Future finished exception=ValueError('reading %s')>", (path,), None)
    asyncio_logger = logging.getLogger("asyncio")
    assert not asyncio_logger.filter(unretrieved(f"{tmp_path}/checkpoints/4/state/"))
    assert asyncio_logger.filter(unretrieved(f"{tmp_path}/checkpoints/2/state/"))
    # The unraisable-exception hook drops the abandoned reads of step 4 and, while a step
    # is watched, asyncio's refusals of callbacks into a closed loop (Orbax's, from
    # tensorstore threads), and only those.
    assert sys.unraisablehook == abandoned_io._WATCH.unraisable_hook
    closed_loop = asyncio.new_event_loop()
    closed_loop.close()
    refused = unraisable(lambda: closed_loop.call_soon_threadsafe(print))
    elsewhere = unraisable(lambda: exec("raise RuntimeError('Event loop is closed')"))
    read = lambda step: unraisable(
        lambda: exec(f"raise ValueError('reading {tmp_path}/checkpoints/{step}/state/')"))
    read_4, read_2, other = read(4), read(2), unraisable(lambda: 1 / 0)
    passed_on = []
    monkeypatch.setattr(abandoned_io._WATCH, "_replaced_hook", passed_on.append)
    for report in (refused, elsewhere, read_4, read_2, other):
        sys.unraisablehook(report)
    assert passed_on == [elsewhere, read_2, other]
    monkeypatch.setattr(abandoned_io._WATCH, "directories", set())
    sys.unraisablehook(refused)
    assert passed_on[-1] is refused


@pytest.mark.parametrize("read", ["check_fits", "restore"])
def test_a_read_the_storage_refuses_stops_the_run_and_moves_nothing(tmp_path, capsys,
                                                                     monkeypatch, read):
    """Step 4's metadata (read while the run is set up) or arrays (read when it resumes)
    are refused by the storage: one line naming the step, exit 2, the workdir untouched
    (step 4 is not passed over for step 2 nor moved aside); readable again, it resumes."""
    overrides = {"total_steps": 6, "checkpoint.every_steps": 2, "checkpoint.async_save": False}
    assert Trainer(load(overrides), str(tmp_path)).run(stop_at=4) == {}
    before = snapshot(tmp_path)
    real_read = getattr(checkpoint.Checkpointer, read)

    def refused(checkpointer, step, *args):
        if step == 4:
            raise ValueError("UNAVAILABLE: Error reading local file: Connection timed out")
        return real_read(checkpointer, step, *args)

    monkeypatch.setattr(checkpoint.Checkpointer, read, refused)
    assert cli.main(argv_for(tmp_path, overrides)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"jaxssl: error: reading checkpoint step 4 failed because the storage "
                   f"refused it (ValueError: UNAVAILABLE: Error reading local file: Connection "
                   f"timed out); nothing was passed over or moved: run again once "
                   f"{tmp_path}/checkpoints/4 is readable"]
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    trainer = Trainer(load(overrides), str(tmp_path))
    assert trainer.resume_step == 4 and int(trainer.restore().step) == 4


def _raised_from(cause: Exception) -> Exception:
    try:
        raise RuntimeError("reading the checkpoint failed") from cause
    except RuntimeError as error:
        return error


@pytest.mark.parametrize("error, damaged", [
    (FileNotFoundError(errno.ENOENT, "No such file or directory"), True),
    (ValueError("DATA_LOSS: Error reading local file: checksum mismatch"), True),
    (ValueError("NOT_FOUND: Error reading local file"), True),
    (json.JSONDecodeError("Expecting value", "", 0), True),
    (_raised_from(FileNotFoundError(errno.ENOENT, "No such file or directory")), True),
    (PermissionError(errno.EACCES, "Permission denied"), False),
    (TimeoutError(errno.ETIMEDOUT, "Connection timed out"), False),
    (OSError(errno.EIO, "Input/output error"), False),
    (ValueError("PERMISSION_DENIED: Error reading local file"), False),
    (_raised_from(ValueError("DEADLINE_EXCEEDED: Error reading gs://bucket")), False),
])
def test_only_damaged_files_make_a_step_passed_over(error, damaged):
    """A read that fails on the files' contents (missing, unparsable, checksums) passes
    the step over; one the storage refuses (permissions, timeouts, I/O errors) raises."""
    if damaged:
        assert checkpoint.describe_damaged("/w/checkpoints/4", error).startswith(
            "step 4 is unreadable (")
    else:
        with pytest.raises(CheckpointError, match="^reading checkpoint step 4 failed because "
                                                  "the storage refused it"):
            checkpoint.describe_damaged("/w/checkpoints/4", error)


@pytest.mark.parametrize("async_save", [True, False])
def test_a_full_disk_stops_the_run_in_one_line_and_the_run_resumes(simclr_run, tmp_path, capsys,
                                                                   monkeypatch, async_save):
    """Every write into step 4's folder fails with ENOSPC: the run stops with one line
    naming the directory, its free space and the newest complete step (2, intact), and
    the same run, given room, resumes from it to the uninterrupted run's results."""
    overrides = {**SIMCLR_RUN_OVERRIDES, "checkpoint.every_steps": 2,
                 "checkpoint.async_save": async_save}
    write_text = async_path.write_text

    async def full_disk(path, text):
        if f"{os.sep}4.orbax-checkpoint-tmp{os.sep}" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return await write_text(path, text)

    monkeypatch.setattr(async_path, "write_text", full_disk)
    assert cli.main(argv_for(tmp_path, overrides)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"jaxssl: error: writing a checkpoint to {tmp_path}/checkpoints "
                             f"failed (OSError: [Errno 28] No space left on device: "), err[0]
    assert re.search(r"\); [0-9.]+ MiB free there; newest complete checkpoint: step 2$", err[0])
    monkeypatch.undo()
    assert Trainer(load(overrides), str(tmp_path)).run() == simclr_run.results


@pytest.mark.parametrize("error, reported", [
    (ValueError("RESOURCE_EXHAUSTED: Error writing local file"), CheckpointError),
    (PermissionError(errno.EACCES, "Permission denied"), CheckpointError),
    (TypeError("a bug in a save"), TypeError),
])
def test_only_a_save_the_storage_refuses_is_a_checkpoint_error(tmp_path, monkeypatch, error,
                                                                reported):
    def failing_save(*args, **kwargs):
        raise error

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    checkpointer = checkpoint.Checkpointer(str(tmp_path), every_steps=1, keep=1, async_save=False)
    with pytest.raises(reported) as raised:
        checkpointer.save(1, {"w": np.zeros(2)}, None, ml_collections.ConfigDict())
    assert (raised.value is error) == (reported is not CheckpointError)


def test_a_full_disk_while_logging_stops_the_run_in_one_line(tmp_path, capsys, monkeypatch):
    """The metrics file cannot grow past step 2: one line naming the workdir and the space
    left, exit status 2; the checkpoints saved before stay."""
    overrides = {"total_steps": 4, "checkpoint.every_steps": 1, "checkpoint.async_save": False}
    write = log_lib.MetricsLogger.write

    def full_disk(logger, step, metrics):
        if step > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(logger, step, metrics)

    monkeypatch.setattr(log_lib.MetricsLogger, "write", full_disk)
    assert cli.main(argv_for(tmp_path, overrides)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.fullmatch(rf"jaxssl: error: writing into {tmp_path} failed \(No space left on "
                        r"device\); [0-9]+\.[0-9] MiB free there", err[0]), err[0]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_a_step_missing_its_data_state_is_damaged_not_of_another_process_count(tmp_path):
    """A step without this process's input-pipeline file is damaged (FileNotFoundError,
    which resuming passes over); one written by another number of processes does not fit."""
    checkpointer = checkpoint.Checkpointer(str(tmp_path), every_steps=1, keep=1, async_save=False)
    data = tmp_path / "checkpoints" / "4" / "data"
    data.mkdir(parents=True)
    state = json.dumps({"data_source": "digits", "sampler": "index", "worker_count": 0})
    with pytest.raises(FileNotFoundError):
        checkpointer.check_data_fits(4, state, process_index=0, process_count=1)
    for index in range(2):
        (data / f"process_{index}-of-2.json").write_text(state)
    with pytest.raises(CheckpointError, match="written by 2 processes, this run has 1$"):
        checkpointer.check_data_fits(4, state, process_index=0, process_count=1)
    checkpointer.check_data_fits(4, state, process_index=1, process_count=2)


def test_orbax_error_records_are_dropped_only_after_a_watched_transfer_failed(tmp_path,
                                                                              monkeypatch):
    """While checkpoints are written (their directory watched), Orbax's error records are
    reported unless they name a watched directory; once a watched read or write has
    failed, its records with a traceback (the abandoned transfers') are dropped too."""
    monkeypatch.setattr(abandoned_io._WATCH, "directories", {f"{tmp_path}/checkpoints/"})
    monkeypatch.setattr(abandoned_io._WATCH, "failed", False)
    in_orbax = os.path.join(os.path.dirname(ocp.__file__), "checkpoint_manager.py")

    def passes(message: str, error: Exception | None = None) -> bool:
        exc_info = (type(error), error, None) if error else None
        record = logging.LogRecord("absl", logging.ERROR, in_orbax, 0, message, (), exc_info)
        return bool(logging.getLogger("absl").filter(record))

    unrelated = ("Failed to remove an old checkpoint step", OSError(errno.EBUSY, "busy"))
    assert passes(*unrelated)
    assert not passes(f"Error writing {tmp_path}/checkpoints/4/state")
    abandoned_io.read_failed()
    assert not passes(*unrelated)
    assert passes("Failed to remove an old checkpoint step")  # no traceback: not a transfer's


def unraisable(call) -> types.SimpleNamespace:
    """What Python hands `sys.unraisablehook` for the exception `call()` raises."""
    try:
        call()
    except Exception as error:
        return types.SimpleNamespace(exc_type=type(error), exc_value=error,
                                     exc_traceback=error.__traceback__, err_msg=None, object=None)
    raise AssertionError("call() raised nothing")


@pytest.mark.slow
def test_a_run_resumed_past_a_truncated_checkpoint_prints_only_its_warnings(tmp_path):
    """jaxssl.main in its own process, since asyncio reports Orbax's abandoned reads of the
    damaged step when they are collected (at exit) or complete (from tensorstore threads):
    the resumed run warns about step 4 in two lines and prints nothing else, no
    "exception was never retrieved" or "Event loop is closed" tracebacks."""
    overrides = {"total_steps": 4, "checkpoint.every_steps": 2, "augment.blur_prob": 0.0,
                 "eval.probe_epochs": 1}
    env = {**os.environ, "PYTHONPATH": REPO}
    command = [sys.executable, "-m", "jaxssl.main", *argv_for(tmp_path, overrides)]
    subprocess.run(command, check=True, env=env, capture_output=True)
    damage(tmp_path / "checkpoints" / "4")
    resumed = subprocess.run(command, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    lines = resumed.stderr.splitlines()
    assert len(lines) == 2, resumed.stderr[-2000:]
    assert lines[0].startswith("jaxssl: warning: checkpoint step 4 is unreadable")
    assert lines[1].startswith("jaxssl: warning: moved unreadable checkpoint step 4")


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Each attempt is killed (SIGKILL) at a random moment once it has logged a random
    number of steps, saving asynchronously every step; then one attempt runs to the end.
    metrics.jsonl then holds the uninterrupted run's rows: a resumed attempt drops the rows
    its predecessors logged beyond their last checkpoint, and logs those steps again."""
    overrides = {"total_steps": 24, "checkpoint.every_steps": 1, "checkpoint.async_save": True,
                 "checkpoint.keep": 2, "augment.blur_prob": 0.0, "eval.probe_epochs": 1}
    env = {**os.environ, "PYTHONPATH": REPO}
    command = [sys.executable, "-m", "jaxssl.main"]
    reference = tmp_path / "reference"
    subprocess.run(command + argv_for(reference, overrides), check=True, env=env,
                   capture_output=True)
    expected = read_metrics(reference)
    workdir, chooser, kills = tmp_path / "killed", random.Random(1234), 0
    while kills < 4:
        process = subprocess.Popen(command + argv_for(workdir, overrides), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = chooser.randint(1, 5)
        start = len(read_metrics(workdir)) if (workdir / "metrics.jsonl").exists() else 0
        while process.poll() is None:
            logged = (len(read_metrics(workdir)) - start
                      if (workdir / "metrics.jsonl").exists() else 0)
            if logged >= target:
                time.sleep(chooser.uniform(0.0, 0.3))
                break
            time.sleep(0.02)
        if process.poll() is not None:  # finished before its kill: nothing left to test
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    assert kills >= 2
    subprocess.run(command + argv_for(workdir, overrides), check=True, env=env,
                   capture_output=True)
    assert read_metrics(workdir) == expected   # each step logged once, as uninterrupted
    with open(workdir / "results.json") as f, open(reference / "results.json") as g:
        assert json.load(f) == json.load(g)
    shutil.rmtree(tmp_path)


def test_a_failing_last_save_still_removes_the_runs_signal_handlers(tmp_path, monkeypatch):
    def failing_wait(checkpointer):
        raise CheckpointError("the save in flight failed")

    monkeypatch.setattr(checkpoint.Checkpointer, "wait", failing_wait)
    handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    with pytest.raises(CheckpointError, match="the save in flight failed"):
        Trainer(load({"total_steps": 1}), str(tmp_path)).run()
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == handlers
