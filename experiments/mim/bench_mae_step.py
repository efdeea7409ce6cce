"""MAE train-step time at mask ratio 0.75 vs 0.0, side by side in one process.

  python experiments/mim/bench_mae_step.py [--config configs/mae_fashion_mnist.py] [--steps 20]

Both steps are the full jitted train step of `jaxssl.train` (augmentation,
masking, encoder, decoder, loss, gradients, AdamW) on one device and one
fixed batch of the config's data. After `--warmup` steps each, the two are
timed in alternation, so drifting load on a shared machine hits both alike.
Prints the median step time, the throughput, the matmul FLOPs of each
(jaxssl.flops) and the model FLOP utilisation.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import numpy as np

from jaxssl import config as config_lib, parallel
from jaxssl.data import pipeline
from jaxssl.flops import traced_flops
from jaxssl.logging import device_peak_flops
from jaxssl.train import Trainer


def compiled_step(config_path: str, mask_ratio: float, overrides: dict[str, str]):
    """(compiled train step, initial state, global batch, FLOPs per step) at `mask_ratio`,
    on one device."""
    config = config_lib.load(config_path, {**overrides, "mae.mask_ratio": str(mask_ratio),
                                           "mesh.data": "1"})
    trainer = Trainer(config, tempfile.mkdtemp(prefix="bench_mae_"), devices=jax.devices()[:1])
    batch = parallel.host_batch_to_global(
        pipeline.example_batch(trainer.train_source, config.data.batch_size), trainer.mesh)
    traced = trainer.trace_train_step()
    return traced.lower().compile(), trainer.initial_state(), batch, traced_flops(traced)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/mae_fashion_mnist.py")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.0])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. data.name=synthetic:224x224x3 model.size=B/16")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)

    runs = {ratio: list(compiled_step(args.config, ratio, overrides)) for ratio in args.ratios}
    times = {ratio: [] for ratio in args.ratios}
    for i in range(args.warmup + args.steps):
        for ratio, run in runs.items():
            step, state, batch, _ = run
            start = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            run[1] = state
            if i >= args.warmup:
                times[ratio].append(time.perf_counter() - start)

    batch_size = next(iter(runs.values()))[2]["image"].shape[0]
    print(f"config {args.config}, batch {batch_size}, device {jax.devices()[0].device_kind}, "
          f"{args.steps} timed steps each after {args.warmup} warm-up steps")
    peak, peak_source = device_peak_flops(jax.devices()[0])
    print(f"{'mask ratio':>10} {'median step (s)':>16} {'examples/s':>11} {'GFLOP/step':>11} "
          f"{'MFU':>7}   (peak: {peak_source})")
    for ratio, run in runs.items():
        median = float(np.median(times[ratio]))
        print(f"{ratio:>10.2f} {median:>16.4f} {batch_size / median:>11.1f} "
              f"{run[3] / 1e9:>11.2f} {run[3] / median / peak:>7.3f}")
    if len(args.ratios) == 2:
        slow, fast = (float(np.median(times[r])) for r in (args.ratios[1], args.ratios[0]))
        print(f"step time ratio {args.ratios[0]:.2f} / {args.ratios[1]:.2f}: {fast / slow:.3f} "
              f"(speed-up {slow / fast:.2f}x)")


if __name__ == "__main__":
    main()
