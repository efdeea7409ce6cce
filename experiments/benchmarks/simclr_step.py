"""Benchmark: SimCLR train-step time, examples/s and MFU, 1 device vs N, side by side.

  python -m experiments.benchmarks.simclr_step                  # this CPU, 1 vs 8 virtual devices
  python -m experiments.benchmarks.simclr_step --devices=1 --dtype=bfloat16 \\
      --model=resnet50 --image_size=224 --batch=256 --cifar_stem=false   # one GPU

Times the compiled train step (augmentations included, input already on
device): `--warmup` untimed steps, then the median of `--repeats` timed
steps. FLOPs are the step's matmul and convolution FLOPs, counted on its jaxpr (jaxssl.flops); the peak
from jaxssl.logging.device_peak_flops (vendor table for GPUs/TPUs, a
measured float32 matmul for CPUs). Data are synthetic uint8 images.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--width", type=int, default=64, help="ResNet base filters")
    p.add_argument("--cifar_stem", default="true")
    p.add_argument("--patch", type=int, default=16, help="ViT patch size")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--devices", default="1,8", help="comma-separated device counts")
    p.add_argument("--virtual_cpu_devices", type=int, default=8,
                   help="CPU only: virtual devices to create (XLA flag)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default="", help="also write the results here")
    return p.parse_args()


def bench(n_devices: int, args) -> dict:
    import jax
    import numpy as np

    from jaxssl import config as config_lib, flops as flops_lib, logging as log_lib, parallel
    from jaxssl.train import Trainer

    size = args.image_size
    config = config_lib.resolve({
        "method": "simclr", "compute_dtype": args.dtype, "total_steps": 1000,
        "mesh": {"data": n_devices, "fsdp": 1, "tensor": 1},
        "data": {"name": f"synthetic:{size}x{size}x3", "batch_size": args.batch},
        "model": {"name": args.model, "width": args.width,
                  "cifar_stem": args.cifar_stem.lower() == "true", "patch": args.patch},
    })
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir, devices=jax.devices()[:n_devices])
        state = trainer.initial_state()
        start = time.perf_counter()
        traced = trainer.trace_train_step()
        step = traced.lower().compile()
        compile_s = time.perf_counter() - start
        loader = trainer.loader
        batch = parallel.host_batch_to_global(next(iter(loader)), trainer.mesh)
        for _ in range(args.warmup):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    flops = flops_lib.traced_flops(traced) / n_devices  # one device's share
    peak, peak_source = log_lib.device_peak_flops(jax.devices()[0],
                                                  cpu_devices_in_use=n_devices)
    return {"devices": n_devices, "device_kind": jax.devices()[0].device_kind,
            "model": args.model, "image_size": size, "batch": args.batch, "dtype": args.dtype,
            "compile_s": round(compile_s, 1), "step_time_s": seconds,
            "step_time_iqr_s": float(np.percentile(times, 75) - np.percentile(times, 25)),
            "examples_per_s": args.batch / seconds,
            "tflops_per_step": flops * n_devices / 1e12,
            "mfu": flops / seconds / peak, "peak_source": peak_source}


def main() -> int:
    args = parse_args()
    from jaxssl import platforms
    if args.virtual_cpu_devices > 1:
        platforms.add_xla_flags(
            [f"--xla_force_host_platform_device_count={args.virtual_cpu_devices}"])
    # As jaxssl.main does with the default malloc_arenas: this process stands for a training run.
    platforms.prepare_cpu_training("one")
    results = [bench(int(n), args) for n in args.devices.split(",")]
    header = ["devices", "device_kind", "step_time_s", "examples_per_s", "tflops_per_step",
              "mfu", "compile_s"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print("| " + " | ".join(f"{r[h]:.4g}" if isinstance(r[h], float) else str(r[h])
                               for h in header) + " |")
    print(f"peak: {results[0]['peak_source']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
