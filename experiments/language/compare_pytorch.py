"""jaxssl vs PyTorch eager on the baby-GPT step, side by side in one run.

  python -m experiments.language.compare_pytorch \
      --torch_python=/path/to/venv-with-torch/bin/python [--rounds=3] [--steps=50]

Alternates the two benchmarks (bench_baby_gpt.py in this interpreter,
bench_pytorch_baby_gpt.py in --torch_python), `rounds` times each, each a
fresh process, so both see the same machine load. Prints each run's JSON
line, then a table over rounds: jaxssl's compiled step on a ready batch and
PyTorch's step (the same measurement: median ms per blocking step), and
jaxssl's Trainer-style loop with its input pipeline (ms per step).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def run_json(command: list[str]) -> dict:
    """Runs a benchmark script and returns the JSON object on its last output line."""
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [REPO, os.environ.get("PYTHONPATH")]))})
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_python", required=True, help="a Python that has torch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for the jaxssl run (bench_baby_gpt.py --set)")
    args = parser.parse_args()
    steps = [f"--steps={args.steps}", f"--warmup={args.warmup}"]
    # benchmark command -> {table row: the JSON field it reports}
    commands = {
        (sys.executable, os.path.join(HERE, "bench_baby_gpt.py"), *steps,
         *(["--set", *args.set] if args.set else [])): {
            "jaxssl, compiled step (median)": "step_ms_median",
            "jaxssl, loop with grain input pipeline (mean)": "loop_ms_per_step"},
        (args.torch_python, os.path.join(HERE, "bench_pytorch_baby_gpt.py"), *steps): {
            "PyTorch eager, step (median)": "step_ms_median"},
    }
    medians = {name: [] for rows in commands.values() for name in rows}
    for _ in range(args.rounds):
        for command, rows in commands.items():
            result = run_json(list(command))
            print(json.dumps(result), flush=True)
            for name, field in rows.items():
                medians[name].append(result[field])
    print("\n| implementation | ms per step, each round | median over rounds |")
    print("| --- | --- | --- |")
    for name, values in medians.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {rounds} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
