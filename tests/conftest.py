"""Test-wide setup: 8 virtual CPU devices, so sharded steps can be compared with one device;
XLA settings that make the many small compilations cheap; the shared locally prepared
TFDS caption dataset; the shared tiny SimCLR run."""
import atexit
import hashlib
import json
import os
import shutil
import tempfile
import types

import pytest

# The tests' programs are tiny, so compiling them costs far more time than running them:
# backend optimisation level 0 (no LLVM optimisation of the generated code) and XLA:CPU's
# older loop emitters instead of its MLIR fusion emitters each about halve a compilation.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0 "
                                   "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402  (after the environment above)

# A compilation cache for this session only (a fresh, empty directory, removed at exit):
# tests that build the same program again (another Trainer of the same config, a resumed
# run) load it instead of compiling it twice. Subprocesses do not inherit it.
_CACHE_DIR = tempfile.mkdtemp(prefix="jaxssl-tests-xla-cache-")
atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


def pytest_addoption(parser):
    parser.addoption("--parity-log", default="",
                     help="write tests/test_interop.py's measured differences to this Markdown "
                          "file (the README's parity table; run that file alone with -n 0)")


def damage(step_dir) -> dict[str, int]:
    """Truncates to half every file of a checkpoint step under a folder whose name starts
    with 'd' (the arrays, state/d, and the input-pipeline state, data); {path: new size}."""
    sizes = {}
    for root, _, names in os.walk(step_dir):
        for name in names:
            path = os.path.join(root, name)
            if os.sep + "d" in root[len(str(step_dir)):]:
                os.truncate(path, os.path.getsize(path) // 2)
                sizes[os.path.relpath(path, step_dir)] = os.path.getsize(path)
    assert sizes
    return sizes


def snapshot(directory) -> dict[str, str]:
    """{relative path: sha1} of every file under `directory` ({} if it does not exist)."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = hashlib.sha1(f.read()).hexdigest()
    return files


@pytest.fixture(scope="session")
def caption_dir(tmp_path_factory):
    """A TFDS data_dir holding `tfds_testdata.TinyCaptions` prepared as array_record."""
    import tfds_testdata

    data_dir = tmp_path_factory.mktemp("tfds_captions")
    tfds_testdata.prepare(tfds_testdata.TinyCaptions, data_dir)
    return data_dir


TINY_SIMCLR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "tiny_simclr.py")
# Fully sharded (one data shard, fsdp=8) and a learned position embedding, for the hand-off.
SIMCLR_RUN_OVERRIDES = {
    "total_steps": "6", "augment.blur_prob": "0.0", "optim.warmup_steps": "2",
    "checkpoint.async_save": "false", "mesh.data": "1", "mesh.fsdp": "8",
    "model.posemb": "learned"}


@pytest.fixture(scope="session")
def simclr_run(tmp_path_factory):
    """tests/configs/tiny_simclr.py with SIMCLR_RUN_OVERRIDES, trained to the end by the
    command line (`jaxssl.main`, exit status 0), made once for the tests that need a
    finished run: test_bad_input (a workdir that bad input must leave alone), test_train (the
    uninterrupted run that an interrupted and resumed one must equal) and test_handoff
    (the pretrained encoder). Tests must not write into its workdir.

    A namespace: workdir, config (resolved), step (of the final checkpoint), params
    (host copies of the parameters restored from it) and results (the final evaluation,
    as the command line saved it in results.json).
    """
    from jaxssl import config as config_lib, main as cli
    from jaxssl.train import Trainer

    workdir = tmp_path_factory.mktemp("simclr_run")
    argv = [f"--config={TINY_SIMCLR}", f"--workdir={workdir}",
            *(f"--config.{key}={value}" for key, value in SIMCLR_RUN_OVERRIDES.items())]
    assert cli.main(argv) == 0
    config = config_lib.load(TINY_SIMCLR, SIMCLR_RUN_OVERRIDES)
    trainer = Trainer(config, str(workdir))  # constructing a Trainer writes nothing
    step = trainer.resume_step
    assert step == config.total_steps
    state = trainer.restore()
    with open(workdir / "results.json") as f:
        results = json.load(f)["pretrained"]
    return types.SimpleNamespace(workdir=workdir, config=config, step=step,
                                 params=jax.device_get(state.params), results=results)
