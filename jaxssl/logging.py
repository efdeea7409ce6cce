"""Metrics to JSON lines, TensorBoard and a progress bar; throughput and MFU.

MFU = (matmul and convolution FLOPs of one train step, counted on its jaxpr
by `jaxssl.flops`, the same on every backend) / (step time in seconds) /
(peak FLOP/s of one device x number of devices). The peak comes from
`log.peak_flops_per_device` when set, else from `PEAK_FLOPS` by device kind,
else (CPUs) from a measured float32 matmul shared among the CPU devices the
step runs on (virtual CPU devices split one machine), labelled as such.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import jax
import jax.numpy as jnp

# Dense peak FLOP/s per device for bfloat16 matmuls (vendor data sheets).
PEAK_FLOPS = {
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
    "NVIDIA L4": 121e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
}


def measured_matmul_flops(device: jax.Device, size: int = 1024, repeats: int = 10,
                          dtype=jnp.float32, result_dtype=jnp.float32) -> float:
    """Achieved matmul FLOP/s on `device` (float32: the ceiling used for CPUs): the fastest
    of `repeats` timed [size, size] products of `dtype` operands after two untimed ones.

    The products accumulate in and return `result_dtype`. float32 is how jaxssl
    computes a bfloat16 product on the CPU, where XLA:CPU multiplies bfloat16
    operands in its AMX / AVX512-BF16 kernels only for a float32 result
    (`models.xla_cpu.NARROW_FLOATS`); for a bfloat16 one it converts them to float32.
    The fastest, not the median: the first products after compiling, and any
    work still running from a step just dispatched, read as low as half the
    rate (on the 2-core CPU, 223-242 against 426-487 GFLOP/s,
    experiments/benchmarks/README.md).
    """
    a = jax.device_put(jnp.ones((size, size), dtype), device)
    matmul = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=result_dtype))
    for _ in range(2):
        matmul(a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / min(times)


def table_kind(device_kind: str) -> str | None:
    """The longest `PEAK_FLOPS` key that `device_kind` starts with ('TPU v5 lite', not
    'TPU v5', for a v5e chip), or None for a device the table lacks."""
    return next((kind for kind in sorted(PEAK_FLOPS, key=len, reverse=True)
                 if device_kind.startswith(kind)), None)


def device_peak_flops(device: jax.Device, override: float = 0.0,
                      cpu_devices_in_use: int = 1) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number comes from).

    Virtual CPU devices share one machine: the measured CPU peak is divided
    by `cpu_devices_in_use`, the number of this process's devices the step runs on.
    """
    if override > 0:
        return override, "config"
    kind = table_kind(device.device_kind)
    if kind is not None:
        return PEAK_FLOPS[kind], f"table ({kind})"
    return (measured_matmul_flops(device) / cpu_devices_in_use,
            f"measured float32 matmul / {cpu_devices_in_use} CPU devices in use")


class MetricsLogger:
    """Writes `metrics.jsonl` (one JSON object per logged step) and TensorBoard events.

    A run that starts at `start_step` (0, or the checkpoint it resumed) first drops the
    rows of later steps: a process that died after logging them but before saving them
    logged steps that the run trains again (and a line it was writing may be cut short).
    TensorBoard hides its events of those steps (`purge_step`).
    Only process 0 writes; every process may call it.
    """

    def __init__(self, workdir: str, tensorboard: bool, start_step: int = 0):
        self.active = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, "metrics.jsonl")
            _drop_rows_after(path, start_step)
            self._jsonl = open(path, "a")
            if tensorboard:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                                         purge_step=start_step + 1)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.active:
            return
        scalars = {k: float(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _drop_rows_after(path: str, step: int) -> None:
    """Rewrites the metrics file `path` (if any) without its rows of steps after `step`
    and without lines that do not parse (a write cut short)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["step"] <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:
        with open(path + ".tmp", "w") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)


def read_metrics(workdir: str) -> list[dict]:
    """All rows of `workdir/metrics.jsonl`, in order."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


class ProgressBar:
    """tqdm bar showing step, loss and examples/s (process 0 only)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self._bar = None
        if enabled and jax.process_index() == 0:
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, steps: int, loss: float, examples_per_s: float) -> None:
        if self._bar is not None:
            self._bar.update(steps)
            self._bar.set_postfix(loss=f"{loss:.4f}", ex_per_s=f"{examples_per_s:.0f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
