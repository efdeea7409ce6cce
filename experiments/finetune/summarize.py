"""Tables and plots of the fine-tuning experiment (experiments/finetune/run.py).

  python -m experiments.finetune.summarize --root=/tmp/ft_runs --out=experiments/finetune
  python -m experiments.finetune.summarize --root=/tmp/ft_cifar10 --out=experiments/finetune/cifar10 \\
      --dataset=CIFAR-10

writes OUT/results.md (label efficiency; modes with in-distribution accuracy
and forgetting), OUT/results.json (every run's final evaluation and runtime),
OUT/label_efficiency.png and OUT/accuracy_vs_forgetting.png, from each run's
results.json (written by jaxssl.main) and ROOT/runtimes.tsv.
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from experiments.finetune.run import LABEL_FRACTIONS, MODES  # noqa: E402

INITS = {"simclr": "SimCLR", "mae": "MAE", "scratch": "scratch"}


def load_runs(root: str) -> dict[str, dict]:
    """{run name: final metrics} of every finished run, and 'runtime_s' from runtimes.tsv."""
    runs = {}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "results.json")
        if os.path.isfile(path):
            with open(path) as f:
                runs[name] = dict(json.load(f)["pretrained"])
    runtimes = os.path.join(root, "runtimes.tsv")
    if os.path.isfile(runtimes):
        with open(runtimes) as f:
            for line in f:
                name, status, seconds = line.split("\t")
                if name in runs and status == "0":
                    runs[name]["runtime_s"] = float(seconds)
    return runs


def percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def label_table(runs: dict[str, dict]) -> list[str]:
    lines = ["| initialisation | " + " | ".join(LABEL_FRACTIONS) + " labels |",
             "|---" * (1 + len(LABEL_FRACTIONS)) + "|"]
    for init, title in INITS.items():
        cells = [percent(runs.get(f"{init}_full_{labels}", {}).get("top1"))
                 for labels in LABEL_FRACTIONS]
        if any(c != "-" for c in cells):
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def mode_rows(runs: dict[str, dict]) -> list[tuple[str, float, float, float]]:
    """(mode, F-MNIST top-1, MNIST kNN before, MNIST kNN after) at 10% labels, SimCLR init."""
    rows = []
    full = runs.get("simclr_full_10pct")
    for mode in ("linear_probe", "full", *[m for m in MODES if m != "linear_probe"]):
        run = full if mode == "full" else runs.get(f"simclr_{mode}_10pct")
        if run:
            rows.append((mode, run["top1"], run.get("forgetting_knn_before"),
                         run.get("forgetting_knn_after")))
    if full:
        alphas = sorted(float(k[len("wise"):-len("_top1")]) for k in full
                        if k.startswith("wise") and k.endswith("_top1"))
        rows += [(f"WiSE-FT a={a:g} (of full)", full[f"wise{a:g}_top1"],
                  full.get("forgetting_knn_before"), full.get(f"forgetting_knn_wise{a:g}"))
                 for a in alphas]
    return rows


def pretraining_table(runs: dict[str, dict]) -> list[str]:
    """The pretrained encoders' own evaluation (frozen): kNN and linear-probe top-1."""
    lines = ["| pretraining | kNN top-1 | linear-probe top-1 | seconds |", "|---|---|---|---|"]
    for name in ("simclr_vit", "mae_vit"):
        if name in runs:
            run = runs[name]
            seconds = f"{run['runtime_s']:.0f}" if "runtime_s" in run else "-"
            lines.append(f"| {name} | {percent(run.get('knn_top1'))} | "
                         f"{percent(run.get('linear_probe_top1'))} | {seconds} |")
    return lines


def mode_table(runs: dict[str, dict], dataset: str) -> list[str]:
    lines = [f"| mode (SimCLR init, 10% labels) | {dataset} top-1 | MNIST kNN before | "
             "MNIST kNN after | forgetting (before - after) |", "|---|---|---|---|---|"]
    for mode, top1, before, after in mode_rows(runs):
        drop = None if before is None or after is None else before - after
        lines.append(f"| {mode} | {percent(top1)} | {percent(before)} | {percent(after)} | "
                     f"{percent(drop)} |")
    return lines


def plot_label_efficiency(runs: dict[str, dict], path: str, dataset: str) -> None:
    figure, axes = plt.subplots(figsize=(5, 3.5))
    for init, title in INITS.items():
        names = {fraction: f"{init}_full_{labels}" for labels, fraction in LABEL_FRACTIONS.items()}
        points = [(fraction, runs[name]["top1"]) for fraction, name in names.items()
                  if name in runs]
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, [100 * y for y in ys], marker="o", label=title)
    axes.set_xscale("log")
    axes.set_xlabel(f"fraction of {dataset} training labels")
    axes.set_ylabel("test top-1 (%)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_accuracy_vs_forgetting(runs: dict[str, dict], path: str) -> None:
    figure, axes = plt.subplots(figsize=(5.5, 4))
    for mode, top1, _, after in mode_rows(runs):
        if after is not None:
            axes.scatter(100 * after, 100 * top1, marker="s" if mode.startswith("WiSE") else "o")
            axes.annotate(mode, (100 * after, 100 * top1), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
    before = runs.get("simclr_full_10pct", {}).get("forgetting_knn_before")
    if before is not None:
        axes.axvline(100 * before, color="grey", linestyle="--", label="pretrained encoder")
        axes.legend(fontsize=8)
    axes.set_xlabel("MNIST kNN top-1 of the encoder (%)  [higher = less forgetting]")
    axes.set_ylabel("Fashion-MNIST test top-1 (%)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dataset", default="Fashion-MNIST", help="name in titles and axes")
    args = parser.parse_args()
    runs = load_runs(args.root)
    os.makedirs(args.out, exist_ok=True)
    lines = ["## Pretraining: the frozen encoders (%)", "", *pretraining_table(runs), "",
             f"## Label efficiency: full fine-tuning, {args.dataset} test top-1 (%)", "",
             *label_table(runs), ""]
    if mode_rows(runs)[1:]:
        lines += ["## Fine-tuning modes: accuracy and forgetting (%)", "",
                  *mode_table(runs, args.dataset), ""]
    lines += ["## Runtimes", "", "| run | seconds |", "|---|---|",
              *(f"| {name} | {run['runtime_s']:.0f} |" for name, run in runs.items()
                if "runtime_s" in run)]
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(runs, f, indent=2, sort_keys=True)
    plot_label_efficiency(runs, os.path.join(args.out, "label_efficiency.png"), args.dataset)
    if any(after is not None for *_, after in mode_rows(runs)):
        plot_accuracy_vs_forgetting(runs, os.path.join(args.out, "accuracy_vs_forgetting.png"))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
