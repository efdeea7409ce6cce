"""host_memory.keep_freed_memory: a large freed block is reused, not faulted in again."""

import subprocess
import sys

import pytest

from jaxssl import host_memory

# Mallocs, fills and frees a 64 MiB block (more than glibc's largest mmap
# threshold, like the baby GPT's 51.8 MiB XLA scratch buffer) twice and prints
# the minor page faults of the second time.
_SECOND_TOUCH_FAULTS = """
import ctypes, resource, sys
from jaxssl import host_memory
if sys.argv[1] == "fixed":
    assert host_memory.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def touch():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_touch_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _SECOND_TOUCH_FAULTS, mode], check=True,
                          capture_output=True, text=True)
    return int(done.stdout.strip())


def test_large_freed_block_is_reused_without_page_faults():
    if not host_memory.keep_freed_memory():
        pytest.skip("the C library is not glibc")
    pages = (64 << 20) // 4096
    # glibc's defaults: the block is mmapped and unmapped each time, every page faults again
    # (unless the kernel backs it with huge pages).
    assert _second_touch_faults("default") > pages // 600
    assert _second_touch_faults("fixed") < pages // 30
