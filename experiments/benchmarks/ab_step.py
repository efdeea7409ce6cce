"""Train-step time of config variants side by side in one process (a benchmark, not a test).

  python -m experiments.benchmarks.ab_step --config=configs/X.py \\
      --variant NAME:KEY=VALUE[,KEY=VALUE...] --variant ... [--set KEY=VALUE ...]

Each variant is the config with `--set` and then its own overrides, e.g.
  --variant 0.75:mae.mask_ratio=0.75 --variant 0.0:mae.mask_ratio=0.0
  --variant threefry:prng_impl=threefry2x32 --variant rbg:prng_impl=rbg
Every variant's full jitted train step (the Trainer's) runs on one device,
or, where the variant sets `mesh.*`, on the devices its mesh needs (on the
CPU, split it into virtual devices first:
XLA_FLAGS=--xla_force_host_platform_device_count=N), e.g.
  --variant one:mesh.data=1 --variant two:mesh.data=2
A variant's `undo=SWITCH[+SWITCH...]` builds its step without the CPU forms of
jaxssl.models.xla_cpu that those UNDO_SWITCHES name (below), e.g.
  --variant paths: --variant undone:undo=JAXSSL_BENCH_NARROW_PRODUCTS
It runs on one fixed batch of the config's data, in a process prepared for training
as jaxssl.main's is (`platforms.prepare_cpu_training`, with the config's
`malloc_arenas` after `--set`; a process-wide setting, so variants may not
change it: ab_processes.py compares it). After `--warmup` steps each, the
variants are timed in alternation, one step each in turn, so drifting load
on a shared machine hits all alike. Prints the median step time, the
throughput, the matmul FLOPs (jaxssl.flops), the MFU and each variant's
time relative to the first.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
import weakref
from typing import Any

import jax
import numpy as np

from experiments.common import overrides_of
from jaxssl import config as config_lib, parallel, platforms
from jaxssl.data import pipeline
from jaxssl.flops import traced_flops
from jaxssl.logging import device_peak_flops
from jaxssl.models import xla_cpu
from jaxssl.train import Trainer


# Switch -> (the name in jaxssl.models.xla_cpu, its replacement): each builds the model
# without one of xla_cpu's CPU forms (jax_steps.py's docstring says which and since when).
UNDO_SWITCHES = {
    "JAXSSL_BENCH_FUSED_TRANSPOSES": ("unfused_on_cpu", lambda x: x),
    "JAXSSL_BENCH_UNMERGED_DENSE": ("dense_dot_general", jax.lax.dot_general),
    "JAXSSL_BENCH_FOLDED_ATTENTION_TRANSPOSES": (
        "transposed_copy", lambda x: jax.numpy.swapaxes(x, -1, -2)),
    "JAXSSL_BENCH_NARROW_PRODUCTS": ("NARROW_FLOATS", ()),
}


def undo(switches: list[str]) -> dict[str, Any]:
    """Replaces the xla_cpu names of `switches` (UNDO_SWITCHES keys); returns what they held,
    for `redo`. Every caller reads them from the module when it traces, so a step traced
    after this is built with the replacements."""
    unknown = sorted(set(switches) - set(UNDO_SWITCHES))
    if unknown:
        raise SystemExit(f"unknown undo switch {unknown[0]}; known: {', '.join(UNDO_SWITCHES)}")
    replaced = {}
    for switch in switches:
        name, replacement = UNDO_SWITCHES[switch]
        replaced[name] = getattr(xla_cpu, name)
        setattr(xla_cpu, name, replacement)
    return replaced


def redo(replaced: dict[str, Any]) -> None:
    """Puts back what `undo` replaced."""
    for name, value in replaced.items():
        setattr(xla_cpu, name, value)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """'NAME:KEY=VALUE,KEY=VALUE' -> (NAME, {KEY: VALUE})."""
    name, _, assignments = text.partition(":")
    return name, dict(item.split("=", 1) for item in assignments.split(",") if item)


def prepare_process(config_path: str, overrides: dict[str, str]) -> None:
    """`platforms.prepare_cpu_training` with the config's malloc_arenas, as jaxssl.main
    does: this process stands for the config's training run. Before JAX's first computation."""
    platforms.prepare_cpu_training(config_lib.load(config_path, overrides).malloc_arenas)


def mesh_devices(mesh_config: Any) -> list[jax.Device]:
    """The first devices that a mesh config needs; all of them where an axis is -1 (fill)."""
    sizes = [int(mesh_config[axis]) for axis in parallel.MESH_AXES]
    return jax.devices() if -1 in sizes else jax.devices()[:math.prod(sizes)]


def traced_step(config_path: str, overrides: dict[str, str]) -> tuple[Trainer, Any, Any]:
    """(Trainer, its traced train step, a global batch of the config's data), on one device
    unless `overrides` set the mesh."""
    config = config_lib.load(config_path, {"mesh.data": "1", **overrides})
    workdir = tempfile.mkdtemp(prefix="ab_step_")
    trainer = Trainer(config, workdir, devices=mesh_devices(config.mesh))
    weakref.finalize(trainer, shutil.rmtree, workdir, ignore_errors=True)
    batch = parallel.host_batch_to_global(
        pipeline.example_batch(trainer.train_source, config.data.batch_size), trainer.mesh)
    return trainer, trainer.trace_train_step(), batch


def compiled_step(config_path: str, overrides: dict[str, str]) -> list:
    """[compiled train step, initial state, global batch, matmul FLOPs per step] (see
    `traced_step`)."""
    trainer, traced, batch = traced_step(config_path, overrides)
    return [traced.lower().compile(), trainer.initial_state(), batch, traced_flops(traced)]


def variants_parser(description: str) -> argparse.ArgumentParser:
    """--config, --variant and --set, as this script and ab_processes.py take them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True)
    parser.add_argument("--variant", action="append", required=True, type=parse_variant,
                        help="NAME:KEY=VALUE[,KEY=VALUE...]; give two or more")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides shared by every variant")
    return parser


def main() -> None:
    parser = variants_parser(__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    shared = overrides_of(args)
    if any("malloc_arenas" in own for _, own in args.variant):
        parser.error("malloc_arenas holds for the whole process: set it with --set, or compare "
                     "it with ab_processes.py")
    prepare_process(args.config, shared)

    runs = {}
    for name, own in args.variant:
        own = dict(own)
        replaced = undo([switch for switch in own.pop("undo", "").split("+") if switch])
        runs[name] = compiled_step(args.config, {**shared, **own})
        redo(replaced)
    times = {name: [] for name in runs}
    for i in range(args.warmup + args.steps):
        for name, run in runs.items():
            step, state, batch, _ = run
            start = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            run[1] = state
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)

    batch_size = len(jax.tree.leaves(next(iter(runs.values()))[2])[0])
    peak, peak_source = device_peak_flops(jax.devices()[0])
    print(f"config {args.config} {' '.join(args.set)}, batch {batch_size}, device "
          f"{jax.devices()[0].device_kind}, {args.steps} timed steps each after {args.warmup} "
          f"warm-up steps, in alternation")
    print(f"{'variant':>12} {'median step (s)':>16} {'examples/s':>11} {'GFLOP/step':>11} "
          f"{'MFU':>7} {'vs first':>9}   (peak: {peak_source})")
    first = float(np.median(next(iter(times.values()))))
    for name, run in runs.items():
        median = float(np.median(times[name]))
        print(f"{name:>12} {median:>16.4f} {batch_size / median:>11.1f} {run[3] / 1e9:>11.2f} "
              f"{run[3] / median / peak:>7.3f} {median / first:>9.3f}")


if __name__ == "__main__":
    main()
