"""Curves of one logged metric for several runs: a PNG and a Markdown table.

  python -m experiments.plot_curves --run SimCLR=/tmp/simclr --run MoCo=/tmp/moco \\
      --metric eval/knn_top1 --out experiments/contrastive/knn_curve

writes OUT.png and OUT.md (rows: steps; columns: runs). Metrics are read from
each workdir's metrics.jsonl, as jaxssl.main wrote it.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from jaxssl.logging import read_metrics  # noqa: E402


def metric_curve(workdir: str, metric: str) -> dict[int, float]:
    """{step: value} of `metric` in workdir/metrics.jsonl (the last value per step)."""
    return {row["step"]: row[metric] for row in read_metrics(workdir) if metric in row}


def markdown_table(curves: dict[str, dict[int, float]], metric: str, percent: bool) -> str:
    steps = sorted({s for curve in curves.values() for s in curve})
    fmt = (lambda v: f"{100 * v:.2f}") if percent else (lambda v: f"{v:.4g}")
    lines = ["| step | " + " | ".join(f"{name} {metric}" for name in curves) + " |",
             "|---:|" + "---:|" * len(curves)]
    for step in steps:
        cells = [fmt(curve[step]) if step in curve else "" for curve in curves.values()]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="LABEL=WORKDIR")
    parser.add_argument("--metric", default="eval/knn_top1")
    parser.add_argument("--percent", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", required=True, help="path without extension")
    args = parser.parse_args()
    curves = {}
    for run in args.run:
        label, _, workdir = run.partition("=")
        curves[label] = metric_curve(workdir, args.metric)
    scale = 100 if args.percent else 1
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        steps = sorted(curve)
        ax.plot(steps, [scale * curve[s] for s in steps], marker="o", label=label)
    ax.set(xlabel="step", ylabel=args.metric + (" (%)" if args.percent else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out + ".png", dpi=100)
    with open(args.out + ".md", "w") as f:
        f.write(markdown_table(curves, args.metric, args.percent))


if __name__ == "__main__":
    main()
