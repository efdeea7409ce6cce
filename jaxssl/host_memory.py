"""Keeps XLA:CPU's per-step scratch memory in the process heap.

XLA's CPU runtime mallocs a train step's temporary buffers at the start of
each call and frees them at the end. The nanoGPT baby GPT's step needs one
51.8 MiB temporary buffer. glibc serves any request above its mmap threshold
(at most 32 MiB) with a fresh `mmap` and returns it with `munmap`, so every
step faulted in and zeroed all 51.8 MiB again: 13,300 minor page faults and
51 ms of kernel time per step on the 2-core CPU this project develops on.
Raising the mmap threshold cannot help a buffer that large; only turning
mmap off for malloc does.

`keep_freed_memory()` sets, once per process, the mallopt values that stop
this: malloc never uses mmap (every block comes from the heap), the heap is
never trimmed below 1 GiB of free memory, and it grows in 64 MiB steps.
Measured (experiments/language/README.md): baby-GPT step 98 -> 63 ms, page
faults 13,300 -> under 600 per step, kernel time 51 -> 3 ms per step. It is
a no-op where the C library is not glibc.

The cost: memory freed by the process is kept for reuse instead of being
returned to the OS, so the resident size stays at its peak. Peak memory
itself is unchanged. The Trainer applies it on CPU meshes only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt(3) parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
TRIM_THRESHOLD_BYTES = 1 << 30
TOP_PAD_BYTES = 64 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Applies the mallopt settings above; True if glibc accepted all three."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return False
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                (_M_TOP_PAD, TOP_PAD_BYTES))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
