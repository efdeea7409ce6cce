"""host_memory.keep_freed_memory: a large freed block is reused, not faulted in again, and
free_heap_bytes counts it."""

import os
import subprocess
import sys

import pytest

from jaxssl import host_memory

# Mallocs, fills and frees a block twice, in the main thread or in a new
# thread each time (as XLA:CPU's workers do), and prints the minor page faults
# of the second time. Importing jaxssl applies keep_freed_memory on a CPU-only
# machine, prepare_cpu_training (as jaxssl.main calls it with the config's
# malloc_arenas) share_one_arena if that is 'one'; JAXSSL_KEEP_FREED_MEMORY=off keeps
# glibc's defaults.
_SECOND_TOUCH_FAULTS = """
import ctypes, resource, sys, threading
from jaxssl import platforms
if sys.argv[3] == "training":
    platforms.prepare_cpu_training(sys.argv[4])
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size, where = int(sys.argv[1]), sys.argv[2]
def touch():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
def run():
    if where == "main":
        touch()
    else:
        worker = threading.Thread(target=touch)
        worker.start()
        worker.join()
run()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
run()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _second_touch_faults(size: int, where: str, process: str, keep: str = "on",
                         malloc_arenas: str = "one") -> int:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAXSSL_KEEP_FREED_MEMORY=keep)
    done = subprocess.run(
        [sys.executable, "-c", _SECOND_TOUCH_FAULTS, str(size), where, process, malloc_arenas],
        check=True, capture_output=True, text=True, env=env)
    return int(done.stdout.strip())


# 64 MiB: above glibc's largest mmap threshold (like the baby GPT's 51.8 MiB
# XLA scratch buffer). 96 MiB: above a thread arena's 64 MiB heaps too, so
# only a training process with one arena reuses it.
@pytest.mark.parametrize("size, where, process", [(64 << 20, "main", "library"),
                                                  (96 << 20, "thread", "training")])
def test_large_freed_block_is_reused_without_page_faults(size, where, process):
    if not host_memory.keep_freed_memory():
        pytest.skip("the C library is not glibc")
    pages = size // 4096
    # glibc's defaults: the block is mmapped and unmapped each time, every page faults again
    # (unless the kernel backs it with huge pages).
    assert _second_touch_faults(size, where, process, keep="off") > pages // 600
    assert _second_touch_faults(size, where, process) < pages // 30


@pytest.mark.parametrize("process, malloc_arenas", [("library", "one"),
                                                    ("training", "per_thread")])
def test_a_thread_needs_the_one_arena_for_a_block_above_64_mib(process, malloc_arenas):
    """A library process has no one arena, nor a training one whose config asks for
    per-thread arenas."""
    if not host_memory.keep_freed_memory():
        pytest.skip("the C library is not glibc")
    assert _second_touch_faults(96 << 20, "thread", process,
                                malloc_arenas=malloc_arenas) > (96 << 20) // 4096 // 600


@pytest.mark.parametrize("malloc_arenas, scratch_mib, suited", [
    ("one", 62.5, "per_thread"), ("one", 64, "per_thread"), ("one", 65, None),
    ("per_thread", 65, "one"), ("per_thread", 44.6, None)])
def test_a_note_names_the_arenas_that_suit_the_step(malloc_arenas, scratch_mib, suited):
    if not host_memory.keep_freed_memory():
        pytest.skip("the C library is not glibc")
    note = host_memory.arena_note(malloc_arenas, int(scratch_mib * 2**20))
    if suited is None:
        assert note is None
    else:
        side = "under" if suited == "per_thread" else "above"
        assert note == (f"jaxssl: note: the step's XLA scratch ({scratch_mib:.1f} MiB) is {side} a "
                        f"thread malloc arena's 64 MiB, so --config.malloc_arenas={suited} would "
                        f"make its steps faster (jaxssl/host_memory.py)")


def test_a_freed_block_is_counted_as_free_heap():
    """In a subprocess (its heap is its own): malloc, free 64 MiB in the main thread."""
    if not host_memory.keep_freed_memory():
        pytest.skip("the C library is not glibc")
    script = """
import ctypes
from jaxssl import host_memory
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = host_memory.free_heap_bytes()
block = libc.malloc(64 << 20)
ctypes.memset(block, 1, 64 << 20)
during = host_memory.free_heap_bytes()
libc.free(block)
print(before, during, host_memory.free_heap_bytes())
"""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                          text=True, env=env)
    before, during, after = map(int, done.stdout.split())
    # the block comes back whole, less a few malloc headers
    assert (64 << 20) - 4096 < after - during <= (64 << 20) + 4096 and before < 64 << 20


def test_off_switch_applies_nothing(monkeypatch):
    host_memory.keep_freed_memory.cache_clear()
    monkeypatch.setenv("JAXSSL_KEEP_FREED_MEMORY", "off")
    try:
        assert host_memory.keep_freed_memory() is False
    finally:
        host_memory.keep_freed_memory.cache_clear()
        monkeypatch.delenv("JAXSSL_KEEP_FREED_MEMORY")
        host_memory.keep_freed_memory()
