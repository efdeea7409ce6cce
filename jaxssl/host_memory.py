"""Keeps XLA:CPU's per-step scratch memory in the process heap.

XLA's CPU runtime mallocs a train step's temporary buffers at the start of
each call and frees them at the end: 51.8 MiB for the nanoGPT baby GPT's
step, 760 MiB for the MAE ViT-Tiny/4 step of experiments/benchmarks and
about 1.9 GiB for the SimCLR ResNet-18 one. With glibc's defaults none of
them is reused: every step maps fresh pages, faults them in and zeroes
them again (MAE: 220,000 minor page faults and 0.41 s of kernel time per
0.9 s step on the 2-core CPU this project develops on). Three glibc rules
cause it:

- a block above the mmap threshold (at most 32 MiB) gets its own `mmap`,
  unmapped on free;
- free memory at the top of the heap is returned to the OS once it exceeds
  the trim threshold;
- a thread other than the main one allocates from its own arena, whose
  heaps hold at most 64 MiB: a larger block is mmapped whatever the mmap
  settings say. XLA allocates step buffers from its worker threads.

`keep_freed_memory()` turns off the first two (`M_MMAP_MAX = 0`: every
block comes from the heap; `M_TRIM_THRESHOLD = -1`: never trim, per
mallopt(3); the heap grows in 64 MiB steps, `M_TOP_PAD`). It costs nothing
else and is applied on import of jaxssl when JAX will run on the CPU only,
and by the Trainer on CPU meshes. That covers blocks up to 64 MiB.

`share_one_arena()` turns off the third (`M_ARENA_MAX = 1`: every thread
allocates from the main arena), which a step whose scratch is above a thread
arena's 64 MiB needs (MAE ViT-Tiny/4's, SimCLR's). It has a price: threads
contend for the one arena's lock, so a step whose scratch fits a thread's
arena runs 1.11-1.36x slower with it (the baby GPT, quickstart and PaLI
digits configs), and XLA's multi-threaded compiler allocates a lot, so
compiling a step takes 1.2-1.5x longer. So it is each training run's choice,
the config's `malloc_arenas`: 'one' (the default) applies it through
`platforms.prepare_cpu_training`, which `jaxssl.main` calls once the config
is loaded and before JAX's first computation; 'per_thread' keeps glibc's
arenas. It only affects threads that have not allocated yet, and XLA's
threads have allocated once a step is compiled, so it cannot follow the
compiled step's scratch; the Trainer prints a note (`arena_note`, on stdout)
when that scratch suits the setting the config did not choose.

Measured (experiments/benchmarks/README.md, experiments/language/README.md):
with both, the minor page faults of a step drop to about zero and the MAE
step runs about 1.26x faster (SimCLR 2.5%); the baby GPT's went from 98
to 63 ms when mmap was first turned off. Both are no-ops where the C
library is not glibc; JAXSSL_KEEP_FREED_MEMORY=off leaves glibc's defaults
(for A/B runs).

The cost of both: memory freed by the process is kept for reuse instead
of being returned to the OS, so the resident size stays at its peak; peak
memory itself is unchanged.
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
HEAP_SETTINGS = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, NEVER_TRIM), (_M_TOP_PAD, TOP_PAD_BYTES))
ARENA_SETTINGS = ((_M_ARENA_MAX, 1),)
# glibc's HEAP_MAX_SIZE on 64-bit machines: a thread arena mmaps any larger block, and
# unmaps it when it is freed.
THREAD_ARENA_HEAP_BYTES = 64 << 20


class _MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (malloc.h, glibc >= 2.33)."""
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc_function(name: str):
    """The C library's function `name`, or None where it has none (not glibc: musl, macOS;
    mallinfo2 before glibc 2.33)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        return getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None


def free_heap_bytes() -> int:
    """Bytes that malloc's main arena holds free for this process (glibc's mallinfo2
    `fordblks`): memory the process can reuse without asking the OS, which
    `keep_freed_memory` makes grow to a finished step's peak. 0 where unknown (another C
    library, glibc before 2.33)."""
    mallinfo2 = _libc_function("mallinfo2")
    if mallinfo2 is None:
        return 0
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)


def _apply(settings) -> bool:
    """mallopt(parameter, value) for each; True if glibc accepted all of them. Nothing is
    applied when the environment variable JAXSSL_KEEP_FREED_MEMORY is 'off'."""
    if os.environ.get("JAXSSL_KEEP_FREED_MEMORY", "on").lower() == "off":
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)


@functools.cache
def keep_freed_memory() -> bool:
    """Applies HEAP_SETTINGS (see the module docstring); True if glibc accepted them."""
    return _apply(HEAP_SETTINGS)


@functools.cache
def share_one_arena() -> bool:
    """Applies ARENA_SETTINGS (see the module docstring); True if glibc accepted them."""
    return _apply(ARENA_SETTINGS)


def arena_note(malloc_arenas: str, scratch_bytes: int) -> str | None:
    """For a CPU step that allocates `scratch_bytes` of temporaries at every call, run with
    the config's `malloc_arenas`: a one-line note naming the other setting when that one
    suits the step better ('one' above a thread arena's heap, 'per_thread' below), else
    None (also where the C library is not glibc)."""
    suited = "one" if scratch_bytes > THREAD_ARENA_HEAP_BYTES else "per_thread"
    if suited == malloc_arenas or _libc_function("mallopt") is None:
        return None
    side = "above" if suited == "one" else "under"
    return (f"jaxssl: note: the step's XLA scratch ({scratch_bytes / 2**20:.1f} MiB) is {side} "
            f"a thread malloc arena's {THREAD_ARENA_HEAP_BYTES >> 20} MiB, so "
            f"--config.malloc_arenas={suited} would make its steps faster (jaxssl/host_memory.py)")
