"""Keeps XLA:CPU's per-step scratch memory in the process heap.

XLA's CPU runtime mallocs a train step's temporary buffers at the start of
each call and frees them at the end. glibc serves every request above its
mmap threshold (128 KiB, growing up to 32 MiB) with a fresh `mmap` and
returns it with `munmap`, and trims the heap top back to the OS once 128 KiB
of it is free, so each step faults in and zeroes the same pages again. On the
2-core CPU this project develops on, the gradient of the nanoGPT baby GPT
took 97 ms with glibc's defaults and 66-70 ms with these settings
(experiments/language/README.md).

`keep_freed_memory()` sets, once per process, the fixed mallopt values that
stop this: the largest mmap threshold glibc accepts (32 MiB), no trimming
below 1 GiB of free heap, and heap growth in 64 MiB steps. It is a no-op
where the C library is not glibc. Peak memory is unchanged; freed memory is
reused by the next step instead of being given back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt(3) parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_BYTES = 32 << 20   # glibc's maximum on 64-bit systems
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
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                (_M_TOP_PAD, TOP_PAD_BYTES))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
