"""Loss curves (PNG) and a results JSON from finished MIM workdirs.

  python experiments/mim/summarize.py WORKDIR [WORKDIR ...] --out experiments/mim

For each workdir: the training loss from metrics.jsonl, the median logged
step time, and the final evaluation of the pretrained and the randomly
initialised encoder, read from the table `jaxssl.main` printed into the log
next to the workdir (WORKDIR.log).
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


def printed_results(log_path: str) -> dict[str, dict[str, float]]:
    """The 'encoder  metric ...' table ending a jaxssl.main log -> {encoder: {metric: fraction}}."""
    with open(log_path) as f:
        lines = f.read().splitlines()
    header = max(i for i, line in enumerate(lines) if line.startswith("encoder"))
    metrics = lines[header].split()[1:]
    table = {}
    for line in lines[header + 1:]:
        if not line.endswith("%"):
            break
        name, *values = line.rsplit(None, len(metrics))
        table[name.strip()] = {m: round(float(v.rstrip("%")) / 100, 6)
                               for m, v in zip(metrics, values)}
    return table


def summarize(workdir: str) -> dict:
    records = read_metrics(workdir)
    train = [r for r in records if "loss" in r]
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    return {
        "method": config["method"],
        "steps": train[-1]["step"],
        "batch_size": config["data"]["batch_size"],
        "final_loss": train[-1]["loss"],
        "median_step_time_s": float(np.median([r["step_time_s"] for r in train[1:]])),
        "loss_curve": [(r["step"], r["loss"]) for r in train],
        "evaluation": printed_results(workdir.rstrip("/") + ".log"),
    }


def plot_losses(summaries: list[dict], path: str) -> None:
    """One panel per run: the two losses are in different units (normalised MSE vs L1)."""
    fig, axes = plt.subplots(1, len(summaries), figsize=(5 * len(summaries), 3.5), squeeze=False)
    for ax, summary in zip(axes[0], summaries):
        steps, losses = zip(*summary["loss_curve"])
        ax.plot(steps, losses)
        ax.set(title=f"{summary['method']} training loss", xlabel="step", ylabel="loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--out", required=True, help="folder for loss_curves.png, results.json")
    args = parser.parse_args()
    summaries = [summarize(w) for w in args.workdirs]
    plot_losses(summaries, os.path.join(args.out, "loss_curves.png"))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump([{k: v for k, v in s.items() if k != "loss_curve"} for s in summaries], f,
                  indent=2)
    for s in summaries:
        print(s["method"], {k: v for k, v in s.items() if k not in ("loss_curve", "method")})


if __name__ == "__main__":
    main()
