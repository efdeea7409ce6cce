"""Median train-step time of the nanoGPT baby-GPT setting in jaxssl (a benchmark, not a test).

  python -m experiments.language.bench_baby_gpt [--steps=200] [--warmup=20]
      [--config=configs/nanogpt_shakespeare_6l.py]

Builds the Trainer of configs/nanogpt_baby_shakespeare.py (or --config), compiles its
train step, and times `steps` steps after `warmup` ones, two ways:
'step' = the median of the compiled step alone on a batch already on the
device, blocking on the result each step (what experiments/benchmarks/torch_steps.py
times for PyTorch); 'loop' = wall time per step of `steps` steps that each
load their batch from the grain pipeline, as `Trainer.run` does (loading
the next batch overlaps the running step; at most one step in flight). Prints
one JSON line (milliseconds).
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import jax

from experiments.common import overrides_of
from jaxssl import config as config_lib, flops as flops_lib, parallel
from jaxssl.train import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "nanogpt_baby_shakespeare.py")


def timed_steps(step_fn, state, batch, steps: int) -> tuple[list[float], object]:
    """Wall milliseconds of each of `steps` calls on `batch` (blocked until the result is ready)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
        times.append(1e3 * (time.perf_counter() - start))
    return times, state


def loop_ms_per_step(step_fn, state, next_batch, steps: int) -> float:
    """Wall milliseconds per step of a Trainer-style loop: load, dispatch, then wait for the
    previous step (one step in flight)."""
    start = time.perf_counter()
    in_flight = None
    for _ in range(steps):
        state, metrics = step_fn(state, next_batch())
        jax.block_until_ready(in_flight)
        in_flight = metrics
    jax.block_until_ready((state, metrics))
    return 1e3 * (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--config", default=CONFIG, help="another char-level nanoGPT config")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. data.data_dir=/elsewhere/tiny-shakespeare")
    args = parser.parse_args()
    config = config_lib.load(args.config, overrides_of(args))
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir)
        state = trainer.initial_state()
        start = time.perf_counter()
        traced = trainer.trace_train_step()
        step_fn = traced.lower().compile()
        compile_s = time.perf_counter() - start
        loader = iter(trainer.loader)
        load = lambda: parallel.host_batch_to_global(next(loader), trainer.mesh)
        _, state = timed_steps(step_fn, state, load(), args.warmup)
        step_ms, state = timed_steps(step_fn, state, load(), args.steps)
        loop_ms = loop_ms_per_step(step_fn, state, load, args.steps)
    print(json.dumps({
        "device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0], "compile_s": round(compile_s, 2),
        "steps": args.steps, "step_ms_median": round(statistics.median(step_ms), 2),
        "loop_ms_per_step": round(loop_ms, 2),
        "matmul_gflop_per_step": round(flops_lib.traced_flops(traced) / 1e9, 3),
        "loop_s_for_all_steps": round(config.total_steps * loop_ms / 1e3, 1),
        "config": os.path.relpath(args.config, REPO)}))


if __name__ == "__main__":
    main()
