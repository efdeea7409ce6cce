"""The memory check a compiled step passes before it runs (jaxssl.device_memory): what it
adds up, against what, and the one-line error when it does not fit. From the command
line: test_bad_input.py."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import pytest

from jaxssl import device_memory, host_memory
from jaxssl.errors import DoesNotFitError

GIB = 2**30


def analysis_of(outputs: int, aliased: int, temps: int, code: int, arguments: int = 0):
    return SimpleNamespace(argument_size_in_bytes=arguments, output_size_in_bytes=outputs,
                           alias_size_in_bytes=aliased, temp_size_in_bytes=temps,
                           generated_code_size_in_bytes=code)


def compiled_needing(outputs: int, aliased: int, temps: int, code: int):
    analysis = analysis_of(outputs, aliased, temps, code)
    return SimpleNamespace(memory_analysis=lambda: analysis)


def device(platform: str, stats=None):
    return SimpleNamespace(platform=platform, memory_stats=lambda: stats)


def test_a_step_needs_its_new_outputs_temporaries_and_code():
    analysis = analysis_of(10 * GIB, 4 * GIB, GIB, 7, arguments=5 * GIB)
    assert device_memory.bytes_to_run(analysis) == 7 * GIB + 7
    assert device_memory.total_bytes(analysis) == 12 * GIB + 7


def test_a_real_cpu_step_counts_its_temporaries():
    """x [1024, 1024] float32 -> sum(sin(x @ x) @ x): sin(x @ x) (4 MiB) is a temporary,
    the output 4 bytes; the argument is not counted (it is already in memory)."""
    x = jnp.ones((1024, 1024), jnp.float32)
    compiled = jax.jit(lambda x: jnp.sum(jnp.sin(x @ x) @ x)).lower(x).compile()
    assert device_memory.bytes_to_run(compiled.memory_analysis()) == 4 * 2**20 + 4


def test_cpu_devices_share_the_host(monkeypatch):
    step = compiled_needing(0, 0, GIB, 0)
    cpus = [device("cpu")] * 3
    monkeypatch.setattr(device_memory, "host_available_bytes", lambda: 3 * GIB)
    device_memory.check_step_fits(step, cpus)
    monkeypatch.setattr(device_memory, "host_available_bytes", lambda: 3 * GIB - 1)
    with pytest.raises(DoesNotFitError, match=r"the train step needs 3\.00 GiB of host memory "
                                              r"to run \(1\.00 GiB on each of 3 CPU devices"):
        device_memory.check_step_fits(step, cpus)
    monkeypatch.setattr(device_memory, "host_available_bytes", lambda: None)
    device_memory.check_step_fits(step, cpus)  # free memory unknown: not refused
    monkeypatch.setattr(device_memory, "host_available_bytes", lambda: GIB // 2)
    with pytest.raises(DoesNotFitError, match=r"needs 1\.00 GiB of host memory to run \(on its "
                                              r"CPU device, beyond the state\), 0\.50 GiB"):
        device_memory.check_step_fits(step, cpus[:1])


def test_each_accelerator_is_checked_on_its_own():
    step = compiled_needing(0, 0, GIB, 0)
    roomy = device("gpu", {"bytes_limit": 80 * GIB, "bytes_in_use": 60 * GIB})
    full = device("gpu", {"bytes_limit": 80 * GIB, "bytes_in_use": 79.5 * GIB})
    device_memory.check_step_fits(step, [roomy, roomy, device("gpu", None)])
    with pytest.raises(DoesNotFitError, match=r"needs 1\.00 GiB .* 0\.50 GiB free"):
        device_memory.check_step_fits(step, [roomy, full])


def test_host_memory_is_meminfo_plus_the_free_heap(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:   100 kB\n"
                       "MemAvailable:   1000 kB\n")
    monkeypatch.setattr(device_memory, "MEMINFO", str(meminfo))
    monkeypatch.setattr(host_memory, "free_heap_bytes", lambda: 5)  # this process' own
    assert device_memory.host_available_bytes() == 1000 * 1024 + 5
    monkeypatch.setattr(device_memory, "MEMINFO", str(tmp_path / "missing"))
    assert device_memory.host_available_bytes() is None
