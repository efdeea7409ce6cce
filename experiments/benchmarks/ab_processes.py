"""Train-step time of config variants, each in its own process, in alternating rounds
(a benchmark, not a test).

  python -m experiments.benchmarks.ab_processes --config=configs/X.py \\
      --variant NAME:KEY=VALUE[,KEY=VALUE...] --variant ... [--set KEY=VALUE ...] \\
      [--rounds=5] [--steps=20] [--warmup=5]

For settings that hold for a whole process, which ab_step.py cannot compare
in one: `malloc_arenas` (jaxssl/host_memory.py), e.g.
  --variant one:malloc_arenas=one --variant per_thread:malloc_arenas=per_thread
Each variant is a jax_steps.py worker for the config with `--set` and then its
own overrides: the Trainer's compiled step on one device, on one fixed batch
of the config's data, in a process prepared as jaxssl.main prepares one. The
workers build and warm up, then `--rounds` times each runs `--steps` steps
while the others wait idle, the order rotating every round, so drifting load
hits every variant alike. Prints each round's median step time and load, then
per variant the median of its round medians, their range, the time relative
to the first variant, the implied fraction of the measured matmul peak, and
the time to build and compile the step.
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys

from experiments.benchmarks.ab_step import variants_parser
from experiments.benchmarks.vs_pytorch import Worker, worker_env
from experiments.common import overrides_of
from experiments.machine import short_commit


def start_worker(name: str, config: str, overrides: dict[str, str], warmup: int) -> Worker:
    command = [sys.executable, "-m", "experiments.benchmarks.jax_steps", f"--config={config}",
               f"--warmup={warmup}", "--set", *(f"{k}={v}" for k, v in overrides.items())]
    return Worker(name, command, worker_env())


def main() -> None:
    parser = variants_parser(__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    shared = overrides_of(args)
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"commit {short_commit()}, "
          f"{os.cpu_count()} cores; {args.config} {' '.join(args.set)}; {args.rounds} rounds of "
          f"{args.steps} steps after {args.warmup} warm-up steps", flush=True)
    workers = [start_worker(name, args.config, {**shared, **own}, args.warmup)
               for name, own in args.variant]
    medians = {w.name: [] for w in workers}
    loads = []
    try:
        for r in range(args.rounds):
            for worker in workers[r % len(workers):] + workers[:r % len(workers)]:
                median = statistics.median(worker.run(args.steps))
                medians[worker.name].append(median)
                loads.append(os.getloadavg()[0])
                print(f"round {r} {worker.name:>14}: median {median:.4f} s, load "
                      f"{loads[-1]:.2f}", flush=True)
    finally:
        for worker in workers:
            worker.close()
    first = statistics.median(medians[workers[0].name])
    print(f"\n| variant | median s/step | range of round medians | speed vs {workers[0].name} | "
          f"fraction of matmul peak | build + compile s |\n|---|---|---|---|---|---|")
    for worker in workers:
        median, info = statistics.median(medians[worker.name]), worker.info
        print(f"| {worker.name} | {median:.4f} | {min(medians[worker.name]):.4f}-"
              f"{max(medians[worker.name]):.4f} | {first / median:.2f}x | "
              f"{100 * info['flops_per_step'] / median / info['peak_flops']:.0f}% | "
              f"{info['build_and_compile_s']} |")
    print(f"\nload average (1 min) over the rounds: {min(loads):.1f}-{max(loads):.1f}")


if __name__ == "__main__":
    main()
