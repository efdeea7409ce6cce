"""What several experiments share: train-and-record runs on CIFAR-10 and their summaries.

`run` evaluates a config's model at initialisation, then trains it, and
records wall-clock times, the machine and the date
(experiments/contrastive, experiments/clip); `summarize`, `plot` and
`table` turn such a run directory into curves (PNG) and a Markdown table.
Scripts that use these run from the repository root as modules, e.g.
`python -m experiments.clip.run`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import time

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from experiments.machine import cpu_model, short_commit  # noqa: E402
from jaxssl import config as config_lib  # noqa: E402
from jaxssl.logging import read_metrics  # noqa: E402
from jaxssl.train import Trainer  # noqa: E402

TRAIN_EXAMPLES = 50_000  # CIFAR-10's train split: epochs = steps * batch / TRAIN_EXAMPLES


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """--set KEY=VALUE (repeatable): `--config.KEY=VALUE` overrides of jaxssl.main."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a --config.KEY=VALUE override of every run, e.g. total_steps=100 "
                             "(repeatable)")


def overrides_of(args: argparse.Namespace) -> dict[str, str]:
    """{KEY: VALUE} of the --set arguments."""
    return dict(item.split("=", 1) for item in args.set)


def run(method: str, runs_dir: str, config_spec: str,
        overrides: dict[str, str] | None = None) -> dict:
    """Evaluates the config's model at initialisation, then trains it, in RUNS/METHOD.

    config_spec: a config file, optionally with ':ARG' (`jaxssl.config.load`);
    overrides: {"a.b": "VALUE"} as `--config.a.b=VALUE` of jaxssl.main.
    Returns the run_info.json record.
    """
    workdir = os.path.join(runs_dir, method)
    shutil.rmtree(workdir, ignore_errors=True)
    config = config_lib.load(config_spec, overrides)
    info = {"method": method, "date": datetime.datetime.now().astimezone().isoformat(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "commit": short_commit(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "load_average_start": os.getloadavg()}
    trainer = Trainer(config, workdir)
    start = time.perf_counter()
    random_init = trainer.evaluate_random_init()
    info["random_init_eval_s"] = time.perf_counter() - start
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "random_init.json"), "w") as f:
        json.dump(random_init, f)
    start = time.perf_counter()
    info["final"] = trainer.run()
    info["train_and_eval_s"] = time.perf_counter() - start
    info["load_average_end"] = os.getloadavg()
    with open(os.path.join(workdir, "run_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    return info


def read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def summarize(workdir: str, eval_metrics: dict[str, str]) -> dict:
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


def plot(summaries: dict[str, dict], path: str, eval_metrics: dict[str, str],
         names: dict[str, str]) -> None:
    """Each of `eval_metrics` ({metric: label}) against epochs, all methods on each panel;
    `names`: {method: label}."""
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


def table(summaries: dict[str, dict], eval_metrics: dict[str, str],
          names: dict[str, str]) -> str:
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


def write_summaries(runs_dir: str, out_dir: str, png_name: str, eval_metrics: dict[str, str],
                    names: dict[str, str]) -> dict[str, dict]:
    """`summarize` each finished run RUNS/METHOD of `names`, then write OUT/png_name
    (`plot`), OUT/results.json and OUT/results.md (`table`, also printed).
    Returns {method: summary}."""
    summaries = {m: summarize(os.path.join(runs_dir, m), eval_metrics) for m in names
                 if os.path.exists(os.path.join(runs_dir, m, "run_info.json"))}
    plot(summaries, os.path.join(out_dir, png_name), eval_metrics, names)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(summaries, f, indent=2)
    markdown = table(summaries, eval_metrics, names)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown + "\n")
    print(markdown)
    return summaries
