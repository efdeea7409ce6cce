"""jaxssl vs PyTorch eager on this machine, side by side in alternating rounds (a benchmark).

  python -m experiments.benchmarks.vs_pytorch --torch_python=/path/to/torch-venv/bin/python \\
      [--workloads=simclr,mae,baby_gpt] [--rounds=5] [--out=experiments/benchmarks/results] \\
      [--jax_variant=NAME=EXTRA_XLA_FLAGS ...] [--jax_env=NAME=VAR=VALUE ...] [--bfloat16]

For each workload it starts one persistent worker per side: jaxssl's compiled
train step (jax_steps.py, this interpreter) and the same model in PyTorch
eager (torch_steps.py, --torch_python; install requirements-bench.txt
there). Each worker builds, warms up and waits. Then, `--rounds` times, each
worker in turn runs the workload's steps-per-round while the others sit
blocked on their input (idle), the order rotating every round; so slow drifts
in the machine's load hit every side alike. `--jax_variant` adds jaxssl
workers whose XLA_FLAGS get extra flags, and `--jax_env` workers with an extra
environment variable (A/B of XLA:CPU options, e.g. JAXSSL_CPU_XLA_DEFAULTS=off
for XLA's own defaults). `--bfloat16` computes in bfloat16 on every side: jaxssl's
`compute_dtype=bfloat16` (parameters, optimizer and loss stay float32) against
PyTorch's CPU autocast to bfloat16 around the forward pass and loss.

Prints and writes (`--out`): per round and side, the median step time, its
spread (min-max) and the 1-minute load average after the round; then a table
per workload: the median over rounds of the round medians, their range,
steps per second relative to PyTorch, and the implied fraction of the
matmul peak (the step's matmul + convolution FLOPs counted by jaxssl.flops
on the jaxssl step, the same work on both sides, over the float32 matmul
peak measured by the jaxssl worker at start-up; float32 also with --bfloat16);
then each worker's own float32 and bfloat16 matmul rates.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

from experiments.machine import cpu_model, short_commit

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
STEPS_PER_ROUND = {"simclr": 3, "mae": 10, "baby_gpt": 50}
WARMUP = {"simclr": 2, "mae": 3, "baby_gpt": 10}


class Worker:
    """One benchmark worker process (jax_steps.py / torch_steps.py protocol)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.name = name
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            sys.exit(f"{name}: worker failed to start ({' '.join(command)})")
        self.info = json.loads(line[len("READY "):])

    def run(self, steps: int) -> list[float]:
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def parse_assignment(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name, value


def worker_env() -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH, for workers."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get(
        "PYTHONPATH")]))}


def start_workers(workload: str, args) -> list[Worker]:
    env = worker_env()
    common = [f"--workload={workload}", f"--warmup={WARMUP[workload]}",
              *(["--bfloat16"] if args.bfloat16 else [])]
    jax_command = [sys.executable, "-m", "experiments.benchmarks.jax_steps", *common]
    workers = [Worker("jaxssl", jax_command, env)]
    for name, flags in args.jax_variant:
        extra = {**env, "XLA_FLAGS": f"{env.get('XLA_FLAGS', '')} {flags}".strip()}
        workers.append(Worker(f"jaxssl {name}", jax_command, extra))
    for name, assignment in args.jax_env:
        variable, value = parse_assignment(assignment)
        workers.append(Worker(f"jaxssl {name}", jax_command, {**env, variable: value}))
    workers.append(Worker("pytorch", [args.torch_python, "-m", "experiments.benchmarks.torch_steps",
                                      *common], env))
    return workers


def benchmark(workload: str, args) -> dict:
    workers = start_workers(workload, args)
    rounds = {w.name: [] for w in workers}
    try:
        for r in range(args.rounds):
            order = workers[r % len(workers):] + workers[:r % len(workers)]
            for worker in order:
                times = worker.run(STEPS_PER_ROUND[workload])
                row = {"round": r, "median_s": statistics.median(times), "min_s": min(times),
                       "max_s": max(times), "load_1min": os.getloadavg()[0]}
                rounds[worker.name].append(row)
                print(f"{workload:9s} round {r} {worker.name:22s} median {row['median_s']:.4f} s "
                      f"(min {row['min_s']:.4f}, max {row['max_s']:.4f}), load "
                      f"{row['load_1min']:.2f}", flush=True)
    finally:
        for worker in workers:
            worker.close()
    jax_info = workers[0].info
    summary = {}
    torch_median = statistics.median(r["median_s"] for r in rounds["pytorch"])
    for worker in workers:
        medians = [r["median_s"] for r in rounds[worker.name]]
        median = statistics.median(medians)
        summary[worker.name] = {
            "median_s": median, "round_medians_min_s": min(medians),
            "round_medians_max_s": max(medians),
            "load_1min": [r["load_1min"] for r in rounds[worker.name]],
            "speed_vs_pytorch": torch_median / median,
            "fraction_of_matmul_peak": jax_info["flops_per_step"] / median / jax_info["peak_flops"],
            "info": worker.info}
    return {"workload": workload, "steps_per_round": STEPS_PER_ROUND[workload],
            "flops_per_step": jax_info["flops_per_step"], "peak_flops": jax_info["peak_flops"],
            "sides": summary, "rounds": rounds}


def markdown(results: list[dict], header: str) -> str:
    lines = [header, "", "| workload (GFLOP/step; matmul peak measured) | side | median s/step | "
             "range of round medians | speed vs PyTorch | fraction of matmul peak | load (1 min) |",
             "|---|---|---|---|---|---|---|"]
    for result in results:
        workload = (f"{result['workload']} ({result['flops_per_step'] / 1e9:.1f}; "
                    f"{result['peak_flops'] / 1e9:.0f} GFLOP/s)")
        for name, side in result["sides"].items():
            lines.append(
                f"| {workload} | {name} | {side['median_s']:.4f} | "
                f"{side['round_medians_min_s']:.4f}-{side['round_medians_max_s']:.4f} | "
                f"{side['speed_vs_pytorch']:.2f}x | {100 * side['fraction_of_matmul_peak']:.0f}% | "
                f"{min(side['load_1min']):.1f}-{max(side['load_1min']):.1f} |")
    rates = [(result["workload"], name, side["info"]["matmul_flops"])
             for result in results for name, side in result["sides"].items()
             if "matmul_flops" in side["info"]]
    if rates:
        lines += ["", "Matmul rates each worker measured after its warm-up ([1024, 1024] "
                  "products, the fastest of 10), GFLOP/s:", "",
                  "| workload | side | float32 | bfloat16 |", "|---|---|---|---|"]
        lines += [f"| {workload} | {name} | {rate['float32'] / 1e9:.0f} | "
                  f"{rate['bfloat16'] / 1e9:.0f} |" for workload, name, rate in rates]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON"),
                        help="a Python with torch and torchvision (or $TORCH_PYTHON)")
    parser.add_argument("--workloads", default="simclr,mae,baby_gpt")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jax_variant", action="append", default=[], type=parse_assignment,
                        metavar="NAME=EXTRA_XLA_FLAGS")
    parser.add_argument("--jax_env", action="append", default=[], type=parse_assignment,
                        metavar="NAME=VAR=VALUE")
    parser.add_argument("--bfloat16", action="store_true",
                        help="bfloat16 compute on every side (float32 parameters)")
    parser.add_argument("--out", default="", help="directory for table.md and results.json")
    parser.add_argument("--table_from", default="",
                        help="only rewrite table.md next to this results.json (no timing)")
    args = parser.parse_args()
    if args.table_from:
        with open(args.table_from) as f:
            saved = json.load(f)
        with open(os.path.join(os.path.dirname(args.table_from), "table.md"), "w") as f:
            f.write(markdown(saved["results"], saved["header"]))
        return
    if not args.torch_python:
        sys.exit("vs_pytorch: give --torch_python (a Python with torch and torchvision)")
    results = [benchmark(w, args) for w in args.workloads.split(",")]
    header = (f"{datetime.date.today()}, commit {short_commit()}, {cpu_model()} with "
              f"{os.cpu_count()} cores, {args.rounds} alternating rounds"
              f"{', bfloat16 compute' if args.bfloat16 else ''}; "
              f"{results[0]['sides']['pytorch']['info']['framework']} vs "
              f"{results[0]['sides']['jaxssl']['info']['framework']}")
    table = markdown(results, header)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "table.md"), "w") as f:
            f.write(table)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"header": header, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
