"""Test-wide setup: 8 virtual CPU devices, so sharded steps can be compared with one device;
XLA settings that make the many small compilations cheap; the shared locally prepared
TFDS caption dataset."""
import atexit
import os
import shutil
import tempfile

import pytest

# Backend optimisation level 0: the tests' programs are tiny, so LLVM's optimisation of
# the generated code costs far more time than it saves (about half of each compilation).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0")
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


@pytest.fixture(scope="session")
def caption_dir(tmp_path_factory):
    """A TFDS data_dir holding `tfds_testdata.TinyCaptions` prepared as array_record."""
    import tfds_testdata

    data_dir = tmp_path_factory.mktemp("tfds_captions")
    tfds_testdata.prepare(tfds_testdata.TinyCaptions, data_dir)
    return data_dir
