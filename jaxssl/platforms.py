"""The one place where jaxssl picks JAX's platforms: no TPU probing on machines without TPUs.

With `libtpu` installed (requirements-tpu.txt, for ahead-of-time TPU compiles:
`jaxssl.aot`), JAX's default platform search also tries to start a TPU
runtime. On a machine without TPU chips that attempt fails and prints
several lines of libtpu warnings on stderr for every process. So, when
the user has not chosen platforms (JAX_PLATFORMS unset, `jax_platforms` not
configured), libtpu is installed and this machine has no TPU device files
(/dev/accel*, /dev/vfio/N), `default_platforms` sets `jax_platforms` to the
others: 'cuda,cpu' when a CUDA plugin is installed (JAX skips 'cuda' by
itself when no NVIDIA GPU is visible), else 'cpu'. Compile-only TPU devices
(`jax.experimental.topologies`) do not need the TPU platform and still work.

Called once, from `jaxssl/__init__.py`, before any JAX backend starts.
"""

from __future__ import annotations

import glob
import importlib.util
import os

CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin")


def has_tpu_device_files() -> bool:
    """Whether this machine exposes TPU chips (the device files libtpu opens)."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def default_platforms() -> str | None:
    """Sets and returns jax_platforms without 'tpu' when TPU probing can only fail; else None."""
    if os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_FORCE_TPU_INIT"):
        return None
    if not _installed("libtpu") or has_tpu_device_files():
        return None
    import jax
    if jax.config.jax_platforms:  # chosen in code before jaxssl was imported
        return None
    platforms = ("cuda,cpu" if any(_installed(m) for m in CUDA_PLUGINS) else "cpu")
    jax.config.update("jax_platforms", platforms)
    return platforms
