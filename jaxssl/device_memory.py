"""Whether a compiled step fits the memory its devices have left, checked before it runs.

A step that needs more than that fails on its first call: XLA:CPU stops with a
RESOURCE_EXHAUSTED traceback after the state was built (the MoCo v3 ViT-Tiny
recipe at batch 1024 asks for 32.9 GiB of temporaries on a 24 GiB host), or the
kernel kills the process. `check_step_fits` reads what XLA's buffer assignment
says the compiled step will allocate (exact on the CPU: the failed allocation
above was the 32.9 GiB of `memory_analysis().temp_size_in_bytes`) and raises
`DoesNotFitError` with the shortfall and what would help instead.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from jaxssl import host_memory
from jaxssl.errors import DoesNotFitError

GIB = 2**30
MEMINFO = "/proc/meminfo"
# What makes a step's activations smaller; jaxssl.aot adds ways to split the state.
FEWER_ACTIVATIONS = ("rematerialisation (model.remat / lm.remat), micro-batches "
                     "(--config.grad_accum_steps) or a smaller batch (--config.data.batch_size)")


def bytes_to_run(analysis) -> int:
    """Bytes one device allocates to run a compiled program whose arguments are already in
    memory, from its `memory_analysis()`: the outputs not aliased to donated arguments,
    the temporaries and the code."""
    return (analysis.output_size_in_bytes - analysis.alias_size_in_bytes
            + analysis.temp_size_in_bytes + analysis.generated_code_size_in_bytes)


def total_bytes(analysis) -> int:
    """Device memory of a compiled program, from its `memory_analysis()`: its arguments
    plus `bytes_to_run`."""
    return analysis.argument_size_in_bytes + bytes_to_run(analysis)


def host_available_bytes() -> Optional[int]:
    """What this process can still allocate on the host without swapping: the kernel's
    MemAvailable plus the free memory its own heap keeps (a process that ran an earlier
    step, e.g. a pipeline's previous stage, reuses that), or None where /proc/meminfo
    does not say."""
    try:
        with open(MEMINFO) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + host_memory.free_heap_bytes()
    except OSError:
        pass
    return None


def device_available_bytes(device) -> Optional[int]:
    """bytes_limit - bytes_in_use of an accelerator's allocator, or None if it reports none."""
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0)


def check_step_fits(compiled, devices: Sequence[Any]) -> None:
    """DoesNotFitError unless running the compiled train step `compiled` on this process'
    `devices` fits the memory they have left. CPU devices share the host's memory, so their
    needs add up; each accelerator is checked on its own. Unknown free memory passes."""
    need = bytes_to_run(compiled.memory_analysis())
    if devices[0].platform == "cpu":
        available = host_available_bytes()
        total = need * len(devices)
        if available is not None and total > available:
            per_device = (f"{need / GIB:.2f} GiB on each of {len(devices)} CPU devices"
                          if len(devices) > 1 else "on its CPU device")
            raise DoesNotFitError(
                f"the train step needs {total / GIB:.2f} GiB of host memory to run ({per_device}, "
                f"beyond the state), {available / GIB:.2f} GiB available; try {FEWER_ACTIVATIONS}")
        return
    for device in devices:
        available = device_available_bytes(device)
        if available is not None and need > available:
            raise DoesNotFitError(
                f"the train step needs {need / GIB:.2f} GiB on {device} beyond the state, "
                f"{available / GIB:.2f} GiB free of its memory; try {FEWER_ACTIVATIONS}")
