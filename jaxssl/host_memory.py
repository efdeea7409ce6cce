"""Keeps XLA:CPU's per-step scratch memory in the process heap.

XLA's CPU runtime mallocs a train step's temporary buffers at the start of
each call and frees them at the end: 51.8 MiB for the nanoGPT baby GPT's
step, 760 MiB for the MAE ViT-Tiny/4 step of experiments/benchmarks and
about 1.9 GiB for the SimCLR ResNet-18 one. With glibc's defaults none of
them is reused: every step maps fresh pages, faults them in and zeroes
them again (MAE: 220,000 minor page faults and 0.41 s of kernel time per
0.9 s step on the 2-core CPU this project develops on). Three glibc rules
cause it, and `keep_freed_memory()` turns each off, once per process:

- a block above the mmap threshold (at most 32 MiB) gets its own `mmap`,
  unmapped on free: `M_MMAP_MAX = 0`, every block comes from the heap;
- a thread other than the main one allocates from its own arena, whose
  heaps hold at most 64 MiB: a larger block is mmapped whatever
  `M_MMAP_MAX` says. XLA allocates from its worker threads, so
  `M_ARENA_MAX = 1`: every thread shares the main arena. This takes
  effect for threads that have not allocated yet, hence it is applied on
  import of jaxssl (`jaxssl/__init__.py`), before XLA starts its threads;
- free memory at the top of the heap is returned to the OS once it exceeds
  the trim threshold: `M_TRIM_THRESHOLD = -1` (never, per mallopt(3));
  the heap grows in 64 MiB steps (`M_TOP_PAD`).

Measured (experiments/benchmarks/README.md, experiments/language/README.md):
the minor page faults of a step drop to about zero, and the MAE step runs
about 1.2x faster; the baby GPT's went from 98 to 63 ms when mmap was
first turned off. It is a no-op where the C library is not glibc, and
JAXSSL_KEEP_FREED_MEMORY=off leaves glibc's defaults (for A/B runs).

The cost: memory freed by the process is kept for reuse instead of being
returned to the OS, so the resident size stays at its peak; peak memory
itself is unchanged. One arena means threads contend for its lock on
allocations too large for their per-thread caches; XLA:CPU allocates few
such blocks per op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

# mallopt(3) parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
NEVER_TRIM = -1
TOP_PAD_BYTES = 64 << 20
SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, NEVER_TRIM),
            (_M_TOP_PAD, TOP_PAD_BYTES))


@functools.cache
def keep_freed_memory() -> bool:
    """Applies SETTINGS; True if glibc accepted all of them."""
    if os.environ.get("JAXSSL_KEEP_FREED_MEMORY", "on").lower() == "off":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in SETTINGS)
