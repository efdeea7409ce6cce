"""jaxssl's train steps for vs_pytorch.py: the Trainer's own compiled step, one device.

  python -m experiments.benchmarks.jax_steps --workload=simclr|mae|baby_gpt [--bfloat16]
  python -m experiments.benchmarks.jax_steps --config=configs/X.py [--set KEY=VALUE ...]

A worker with torch_steps.py's protocol (for vs_pytorch.py and
ab_processes.py): it builds the workload (or any config's step, at its own
batch, on a batch of its data, with `--set` overrides), runs
`--warmup` steps, prints `READY {json}` and then, for each line N read from
stdin, runs N steps on one fixed batch and prints a JSON list of their wall
seconds (each blocked until its metrics are ready). An empty line or EOF
ends it. `--bfloat16` sets `compute_dtype=bfloat16`. The workloads (the same
shapes and work as torch_steps.py's):

  simclr    configs/simclr_cifar10_resnet18.py at batch 128 on random uint8
            32x32 images; the SimCLR augmentations run inside the step.
  mae       configs/mae_cifar10.py with a ViT-Tiny/4 encoder (192 wide, 12
            blocks, 3 heads), a 2-block 128-wide decoder, batch 128, random
            images; crop + flip and a new mask inside each step.
  baby_gpt  configs/nanogpt_baby_shakespeare.py (batch 12 x 64 characters); the
            batch is the first of tiny Shakespeare, so it needs JAXSSL_DATA_DIR.

Also reports the step's matmul and convolution FLOPs (jaxssl.flops), the
CPU's measured float32 matmul peak (jaxssl.logging.device_peak_flops) and its
bfloat16 matmul rate measured the same way (bfloat16 operands, float32 results: how
jaxssl multiplies bfloat16 on the CPU).

For A/B runs of the CPU-only model changes, switches build the model
without one of them: JAXSSL_BENCH_FUSED_TRANSPOSES=on replaces the ResNet's
fusion barrier `xla_cpu.unfused_on_cpu` with the identity (as before commit
f168312; in a Transformer this also removes the attention's copies, which it
makes), JAXSSL_BENCH_UNMERGED_DENSE=on replaces `xla_cpu.dense_dot_general`
with `lax.dot_general` (dense layers on [B, T, D] unmerged, as before it),
JAXSSL_BENCH_FOLDED_ATTENTION_TRANSPOSES=on replaces `xla_cpu.transposed_copy` with a
plain transpose, which XLA folds into the attention gradients' products (as before
it), JAXSSL_BENCH_NARROW_PRODUCTS=on empties `xla_cpu.NARROW_FLOATS`, which undoes the
CPU's bfloat16 paths (as before them: bfloat16 products with bfloat16 results, which
XLA:CPU multiplies in float32; attention operands it reads transposed; bias gradients
summed in bfloat16), e.g.
`vs_pytorch.py --jax_env="unmerged dense=JAXSSL_BENCH_UNMERGED_DENSE=on"` or
`JAXSSL_BENCH_FUSED_TRANSPOSES=on python -m experiments.benchmarks.profile_step
--workload=simclr`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax

from experiments.benchmarks.ab_step import UNDO_SWITCHES, compiled_step, prepare_process, undo
from experiments.common import overrides_of
from jaxssl.logging import device_peak_flops, measured_matmul_flops

WORKLOADS = {
    "simclr": ("configs/simclr_cifar10_resnet18.py", {
        "data.name": "synthetic:32x32x3", "data.batch_size": "128"}),
    "mae": ("configs/mae_cifar10.py", {
        "data.name": "synthetic:32x32x3", "data.batch_size": "128", "model.hidden": "192",
        "model.depth": "12", "model.heads": "3", "mae.decoder_hidden": "128",
        "mae.decoder_depth": "2", "mae.decoder_heads": "4"}),
    "baby_gpt": ("configs/nanogpt_baby_shakespeare.py", {}),
}


def apply_undo_switches() -> None:
    """Turns on, for this process, the UNDO_SWITCHES (ab_step.py) set to 'on' in the
    environment."""
    undo([switch for switch in UNDO_SWITCHES if os.environ.get(switch) == "on"])


def with_compute_dtype(overrides: dict[str, str], bfloat16: bool) -> dict[str, str]:
    """`overrides`, with compute_dtype=bfloat16 when `bfloat16` (a worker's --bfloat16)."""
    return {**overrides, "compute_dtype": "bfloat16"} if bfloat16 else overrides


def build(config_path: str, overrides: dict[str, str]):
    """(compiled step, initial state, global batch, FLOPs per step) on one device."""
    apply_undo_switches()
    return compiled_step(config_path, overrides)


def run_steps(step, state, batch, count: int):
    """Runs `count` steps on one batch: (the new state, each step's wall seconds).

    Each step is timed until its metrics are ready.
    """
    seconds = []
    for _ in range(count):
        begin = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        seconds.append(time.perf_counter() - begin)
    return state, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--workload", choices=sorted(WORKLOADS))
    which.add_argument("--config")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides (with --config)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--bfloat16", action="store_true", help="compute_dtype=bfloat16")
    args = parser.parse_args()
    if args.set and args.workload:
        parser.error("--set goes with --config")
    config_path, overrides = (WORKLOADS[args.workload] if args.workload
                              else (args.config, overrides_of(args)))
    overrides = with_compute_dtype(overrides, args.bfloat16)
    prepare_process(config_path, overrides)
    start = time.perf_counter()
    step, state, batch, flops = build(config_path, overrides)
    compile_s = time.perf_counter() - start
    state, _ = run_steps(step, state, batch, args.warmup)
    jax.block_until_ready(state)  # no step work left running while the peak is measured
    peak, _ = device_peak_flops(jax.devices()[0])
    bfloat16_rate = measured_matmul_flops(jax.devices()[0], dtype=jax.numpy.bfloat16)
    print("READY " + json.dumps({"framework": f"jax {jax.__version__}",
                                 "xla_flags": os.environ.get("XLA_FLAGS", ""),
                                 "build_and_compile_s": round(compile_s, 1),
                                 "flops_per_step": flops, "peak_flops": peak,
                                 "matmul_flops": {"float32": peak, "bfloat16": bfloat16_rate}}),
          flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        state, seconds = run_steps(step, state, batch, int(line))
        print(json.dumps(seconds), flush=True)


if __name__ == "__main__":
    main()
