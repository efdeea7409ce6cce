"""Test-wide setup: 8 virtual CPU devices, so sharded steps can be compared with one device;
the shared locally prepared TFDS caption dataset."""
import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def caption_dir(tmp_path_factory):
    """A TFDS data_dir holding `tfds_testdata.TinyCaptions` prepared as array_record."""
    import tfds_testdata

    data_dir = tmp_path_factory.mktemp("tfds_captions")
    tfds_testdata.prepare(tfds_testdata.TinyCaptions, data_dir)
    return data_dir
