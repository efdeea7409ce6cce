"""Two processes x 4 virtual CPU devices (jax.distributed on localhost, gloo collectives)
against one process with 8: same losses; a checkpoint written by the pair restores."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_simclr.py")
COMMON = ["--config.total_steps=6", "--config.checkpoint.every_steps=3",
          "--config.checkpoint.async_save=false", "--config.mesh.data=4", "--config.mesh.fsdp=2"]

pytestmark = pytest.mark.slow


def _env(devices: int) -> dict:
    """This process's environment with `devices` virtual CPU devices; the other XLA flags
    (conftest.py's faster compilation) stay."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=" ".join([f"--xla_force_host_platform_device_count={devices}", *flags]))
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _main(workdir, extra=()):
    return [sys.executable, "-m", "jaxssl.main", f"--config={TINY_CONFIG}",
            f"--workdir={workdir}", *COMMON, *extra]


def run_pair(workdir):
    port = _free_port()
    procs = [subprocess.Popen(
        _main(workdir, ["--config.distributed.initialize=yes",
                        f"--config.distributed.coordinator_address=localhost:{port}",
                        "--config.distributed.num_processes=2",
                        f"--config.distributed.process_id={i}"]),
        cwd=REPO, env=_env(4), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-3000:]


def losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_two_processes_match_one_and_resume(tmp_path):
    single = tmp_path / "single"
    subprocess.run(_main(single), cwd=REPO, env=_env(8), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pair = tmp_path / "pair"
    run_pair(pair)
    expected = losses(single)
    assert sorted(expected) == list(range(1, 7))
    for step, loss in losses(pair).items():
        assert loss == pytest.approx(expected[step], rel=1e-5), step
    data_states = [f for f in os.listdir(pair / "checkpoints" / "3" / "data") if f.endswith(".json")]
    assert sorted(data_states) == ["process_0-of-2.json", "process_1-of-2.json"]

    # Lose the last checkpoint and the log after step 3; the pair resumes from step 3.
    shutil.rmtree(pair / "checkpoints" / "6")
    (pair / "metrics.jsonl").write_text("")
    run_pair(pair)
    resumed = losses(pair)
    assert sorted(resumed) == [4, 5, 6]
    for step, loss in resumed.items():
        assert loss == pytest.approx(expected[step], rel=1e-5), step
