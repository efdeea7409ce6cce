"""kNN / linear-probe curves (PNG), a table (Markdown) and results.json from finished runs.

  python experiments/contrastive/summarize.py [--runs /tmp/contrastive_runs] [--out experiments/contrastive]

Reads RUNS/{simclr,moco}/: random_init.json (step 0), metrics.jsonl
(eval/* rows, training loss and step times), config.json and run_info.json,
all written by experiments/contrastive/run.py.
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from jaxssl.logging import read_metrics  # noqa: E402

TRAIN_EXAMPLES = 50_000
METHODS = {"simclr": "SimCLR", "moco": "MoCo v3"}
EVAL_METRICS = {"knn_top1": "kNN top-1", "linear_probe_top1": "linear-probe top-1"}


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def summarize(workdir: str, eval_metrics: dict[str, str] = EVAL_METRICS) -> dict:
    """One run: curves of `eval_metrics` (step 0 = random init), losses and timings."""
    config = read_json(os.path.join(workdir, "config.json"))
    info = read_json(os.path.join(workdir, "run_info.json"))
    records = read_metrics(workdir)
    train = [r for r in records if "loss" in r]
    evals = [(0, read_json(os.path.join(workdir, "random_init.json")))] + [
        (r["step"], {m: r[f"eval/{m}"] for m in eval_metrics}) for r in records
        if f"eval/{next(iter(eval_metrics))}" in r]
    batch = config["data"]["batch_size"]
    step_time = float(np.median([r["step_time_s"] for r in train]))
    return {
        "method": config["method"],
        "batch_size": batch,
        "steps": config["total_steps"],
        "epochs": config["total_steps"] * batch / TRAIN_EXAMPLES,
        "curve": [{"step": step, "epoch": step * batch / TRAIN_EXAMPLES, **result}
                  for step, result in evals],
        "loss_first_last": [train[0]["loss"], train[-1]["loss"]],
        "median_step_time_s": step_time,
        "train_s_per_epoch": step_time * (TRAIN_EXAMPLES // batch),
        "wall_clock_s": info["random_init_eval_s"] + info["train_and_eval_s"],
        "run_info": info,
    }


def plot(summaries: dict[str, dict], path: str, eval_metrics: dict[str, str] = EVAL_METRICS,
         names: dict[str, str] = METHODS) -> None:
    """Each eval metric (default kNN and linear probe) against epochs, all methods on each panel."""
    fig, axes = plt.subplots(1, len(eval_metrics), figsize=(5 * len(eval_metrics), 3.8))
    for ax, (metric, label) in zip(axes, eval_metrics.items()):
        for method, summary in summaries.items():
            curve = summary["curve"]
            ax.plot([p["epoch"] for p in curve], [100 * p[metric] for p in curve], marker="o",
                    label=names[method])
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{label} (%)")
        ax.set_title(f"CIFAR-10 (JPEG q75), {label}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(summaries: dict[str, dict], eval_metrics: dict[str, str] = EVAL_METRICS,
          names: dict[str, str] = METHODS) -> str:
    """Markdown: one row per evaluation step, each eval metric of each method, in percent."""
    methods = list(summaries)
    header = ["step", "epoch"] + [f"{names[m]} {eval_metrics[k]}" for m in methods
                                  for k in eval_metrics]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    curves = [summaries[m]["curve"] for m in methods]
    for points in zip(*curves):
        cells = [str(points[0]["step"]), f"{points[0]['epoch']:.2f}"]
        cells += [f"{100 * p[k]:.2f}" for p in points for k in eval_metrics]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/contrastive_runs")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    summaries = {m: summarize(os.path.join(args.runs, m)) for m in METHODS
                 if os.path.exists(os.path.join(args.runs, m, "run_info.json"))}
    plot(summaries, os.path.join(args.out, "knn_curves.png"))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summaries, f, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table(summaries) + "\n")
    print(table(summaries))
    for method, s in summaries.items():
        print(f"{METHODS[method]}: {s['train_s_per_epoch']:.0f} s/epoch training "
              f"(median step {s['median_step_time_s']:.2f} s), {s['wall_clock_s']:.0f} s wall "
              f"with evaluations")


if __name__ == "__main__":
    main()
