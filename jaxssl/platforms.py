"""The one place where jaxssl sets JAX's platforms and XLA's default options.

Platforms: no TPU probing on machines without TPUs.

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

XLA:CPU options (`default_cpu_xla_flags`): XLA 0.10's CPU backend hands
convolutions, dots, reductions and elementwise fusions to YNNPACK by
default. On the convolutional steps YNNPACK's convolutions run at about
half the speed of XLA's own (Eigen) ones, and its weight-gradient
convolutions need transposed copies of every activation; its reductions
(layer- and batch-norm statistics, softmax) and dots are as fast or faster.
`CPU_XLA_FLAGS` keeps YNNPACK for reductions and dots only: the SimCLR
ResNet-18 step runs about 1.7x faster and the Transformer steps as fast as
before. It also lets XLA's own loops (elementwise and transposing fusions)
use 512-bit vectors where the CPU has them (AVX-512; LLVM's default
prefers 256 bits): on the 2-core AVX-512 CPU the baby GPT step runs 1.04x
faster, the MAE and SimCLR steps as fast (experiments/benchmarks/README.md
has the side-by-side numbers). On CPUs without AVX-512 it changes nothing;
XLA_FLAGS=--xla_cpu_prefer_vector_width=256 undoes it.
Each flag is appended to XLA_FLAGS unless XLA_FLAGS already names it, so
a user's own setting wins; JAXSSL_CPU_XLA_DEFAULTS=off leaves XLA_FLAGS
untouched (XLA's own defaults, for A/B runs). The options change which
library computes an op and how wide XLA's own loops vectorise, not the
math: results agree to float tolerance (tests/test_platforms.py).

Host memory: when `runs_on_cpu_only()` says JAX will start no backend
but the CPU's, `jaxssl/__init__.py` also applies `host_memory`'s heap
settings, and `prepare_cpu_training` (called by training entry points
before JAX's first computation) its one-arena setting when the config
asks for it (see that module).

Called once, from `jaxssl/__init__.py`, before any JAX backend starts.
"""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import Sequence

from jaxssl import host_memory

CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin")
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=reduce,individual_dot",
                 "--xla_cpu_prefer_vector_width=512")


def has_tpu_device_files() -> bool:
    """Whether this machine exposes TPU chips (the device files libtpu opens)."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def chosen_platforms() -> str:
    """JAX_PLATFORMS, else the jax_platforms setting; '' when neither is set."""
    import jax
    return os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""


def default_platforms() -> str | None:
    """Sets and returns jax_platforms without 'tpu' when TPU probing can only fail; else None."""
    if chosen_platforms() or os.environ.get("JAX_FORCE_TPU_INIT"):
        return None
    if not _installed("libtpu") or has_tpu_device_files():
        return None
    import jax
    platforms = ("cuda,cpu" if any(_installed(m) for m in CUDA_PLUGINS) else "cpu")
    jax.config.update("jax_platforms", platforms)
    return platforms


def runs_on_cpu_only() -> bool:
    """Whether JAX will start only its CPU backend, decided without starting any backend."""
    chosen = chosen_platforms()
    if chosen:
        return chosen == "cpu"
    accelerator_plugins = any(_installed(m) for m in (*CUDA_PLUGINS, "jax_plugins"))
    return not accelerator_plugins and not (_installed("libtpu") and has_tpu_device_files())


def prepare_cpu_training(malloc_arenas: str) -> None:
    """For a process that trains (jaxssl.main, the benchmark workers): on CPU-only runs,
    one malloc arena if the config's `malloc_arenas` is 'one' (see `host_memory`).

    Call it before JAX's first computation; the process's first training config decides.
    """
    if runs_on_cpu_only() and malloc_arenas == "one":
        host_memory.share_one_arena()


def add_xla_flags(flags: Sequence[str]) -> list[str]:
    """Appends to XLA_FLAGS each of `flags` ('--name=value') whose name it does not
    hold, so that a setting already there wins; returns those appended. XLA reads
    XLA_FLAGS when its first client starts, at JAX's first computation."""
    current = os.environ.get("XLA_FLAGS", "")
    added = [flag for flag in flags if flag.split("=", 1)[0] not in current]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def default_cpu_xla_flags() -> list[str]:
    """Appends each of CPU_XLA_FLAGS that XLA_FLAGS does not name; returns those appended."""
    if os.environ.get("JAXSSL_CPU_XLA_DEFAULTS", "on").lower() == "off":
        return []
    return add_xla_flags(CPU_XLA_FLAGS)
