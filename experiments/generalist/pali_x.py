"""PaLI-X encoder-decoder vs the decoder-only PaLI on the same multi-image questions.

Pretrains the ViT with SimCLR on MNIST (configs/pali_x_frames.py:encoder), then trains
configs/pali_x_frames.py once per architecture from it (same pretrained ViT, text
width, total text blocks, steps, batches and seed), then writes the answer accuracy of each
frame task on the held-out frames with its 95% Wilson interval next to chance
(results.json, results.md, pali_x_accuracy.png) and copies each run's logs to
OUT/logs/pali_x/ARCH/ (OUT: --out, default experiments/generalist).

  JAXSSL_DATA_DIR=/path/to/data python -m experiments.generalist.pali_x \\
      --runs=/tmp/pali_x [--set total_steps=300] [--summarize-only] [--out DIR]

`--set` overrides go to every run, the ViT's pretraining included (e.g.
`--set seed=1 --out DIR` for a second seed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil

import jax
import numpy as np

from experiments import common
from jaxssl import config as config_lib, methods
from jaxssl.data import pipeline, sources
from jaxssl.logging import read_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = "configs/pali_x_frames.py"
ARCHITECTURES = {"encoder_decoder": "encoder-decoder (PaLI-X)", "decoder": "decoder-only (PaLI)"}
TASKS = {"which": "which frame shows X?", "count": "how many frames show X?"}
LOG_FILES = ("config.json", "metrics.jsonl", "run_info.json", "random_init.json", "handoff.txt")
Z95 = 1.959963984540054


def wilson(correct: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion correct / n."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def parameter_count(config: dict) -> int:
    """Parameters of the config's model, from shapes alone."""
    method = methods.get(config["method"])(config_lib.resolve(config))
    spec = sources.element_spec(config["data"]["name"], config["data"]["data_dir"])
    batch = pipeline.spec_example(spec, 2)
    shapes = jax.eval_shape(method.init, jax.random.key(0), batch)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(shapes)))


def evaluations(workdir: str) -> list[dict]:
    """[{step, TASK: {accuracy, examples, correct, low, high, chance}}], step 0 = init."""
    init = common.read_json(os.path.join(workdir, "random_init.json"))
    rows = [(0, init)] + [(r["step"], {k[len("eval/"):]: v for k, v in r.items()
                                       if k.startswith("eval/")})
                          for r in read_metrics(workdir) if "eval/loss" in r]
    out = []
    for step, result in rows:
        point = {"step": step, "loss": result["loss"]}
        for task in TASKS:
            n = result[f"{task}/examples"]
            correct = round(result[f"{task}/accuracy"] * n)
            low, high = wilson(correct, n)
            point[task] = {"accuracy": result[f"{task}/accuracy"], "examples": n,
                           "correct": correct, "low": low, "high": high,
                           "chance": result[f"{task}/chance"]}
        out.append(point)
    return out


def summarize(runs_dir: str, logs: str) -> dict:
    """{architecture: its summary} of the runs in `runs_dir`, whose logs are copied to
    LOGS/ARCH."""
    summaries = {}
    for arch in ARCHITECTURES:
        workdir = os.path.join(runs_dir, arch)
        if not os.path.exists(os.path.join(workdir, "run_info.json")):
            continue
        config = common.read_json(os.path.join(workdir, "config.json"))
        info = common.read_json(os.path.join(workdir, "run_info.json"))
        train = [r for r in read_metrics(workdir) if "loss" in r and "eval/loss" not in r]
        summaries[arch] = {
            "parameters": parameter_count(config), "steps": config["total_steps"],
            "batch_size": config["data"]["batch_size"], "curve": evaluations(workdir),
            "train_loss_first_last": [train[0]["loss"], train[-1]["loss"]],
            "median_step_time_s": float(np.median([r["step_time_s"] for r in train])),
            "wall_clock_s": info["random_init_eval_s"] + info["train_and_eval_s"],
            "run_info": info}
        os.makedirs(os.path.join(logs, arch), exist_ok=True)
        for name in LOG_FILES:
            shutil.copy(os.path.join(workdir, name), os.path.join(logs, arch, name))
    return summaries


def table(summaries: dict) -> str:
    """Markdown: the final evaluation of each architecture, accuracy with its interval."""
    rows = ["| architecture | parameters | steps | " + " | ".join(
        f"{t}: accuracy [95% CI] (chance)" for t in TASKS) + " | eval loss | wall (s) |",
        "|---|---:|---:|" + "---|" * len(TASKS) + "---:|---:|"]
    for arch, s in summaries.items():
        last = s["curve"][-1]
        cells = [f"{100 * last[t]['accuracy']:.1f}% [{100 * last[t]['low']:.1f}, "
                 f"{100 * last[t]['high']:.1f}] ({100 * last[t]['chance']:.1f}%), "
                 f"n={last[t]['examples']:.0f}" for t in TASKS]
        rows.append(f"| {ARCHITECTURES[arch]} | {s['parameters']:,} | {s['steps']} | "
                    + " | ".join(cells) + f" | {last['loss']:.3f} | {s['wall_clock_s']:.0f} |")
    return "\n".join(rows)


def plot(summaries: dict, path: str) -> None:
    fig, axes = common.plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.8))
    for ax, (task, question) in zip(axes, TASKS.items()):
        for offset, (arch, s) in zip((-8, 8), summaries.items()):
            steps = np.asarray([p["step"] for p in s["curve"]]) + offset
            acc = np.asarray([100 * p[task]["accuracy"] for p in s["curve"]])
            low = acc - np.asarray([100 * p[task]["low"] for p in s["curve"]])
            high = np.asarray([100 * p[task]["high"] for p in s["curve"]]) - acc
            ax.errorbar(steps, acc, yerr=np.maximum([low, high], 0.0), marker="o", capsize=3,
                        label=ARCHITECTURES[arch])
        chance = 100 * next(iter(summaries.values()))["curve"][0][task]["chance"]
        ax.axhline(chance, color="grey", linestyle="--", label="chance")
        ax.set_xlabel("step")
        ax.set_ylabel("answer accuracy (%), 95% Wilson CI")
        ax.set_title(f'MNIST, 3 frames: "{question}"')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/pali_x", help="directory of the runs")
    parser.add_argument("--summarize-only", action="store_true")
    parser.add_argument("--out", default=HERE, help="where the logs, results and plot go")
    common.add_set_argument(parser)
    args = parser.parse_args()
    logs = os.path.join(args.out, "logs", "pali_x")
    if not args.summarize_only:
        encoder = common.run("encoder", args.runs, f"{CONFIG}:encoder", common.overrides_of(args))
        print("encoder", json.dumps(encoder["final"]), flush=True)
        overrides = {"pali.init_from.checkpoint": os.path.join(args.runs, "encoder"),
                     **common.overrides_of(args)}
        for arch in ARCHITECTURES:
            info = common.run(arch, args.runs, f"{CONFIG}:{arch}", overrides)
            print(arch, json.dumps(info["final"]), flush=True)
    summaries = summarize(args.runs, logs)
    os.makedirs(os.path.join(logs, "encoder"), exist_ok=True)
    for name in LOG_FILES[:3]:  # the pretrained ViT's run
        shutil.copy(os.path.join(args.runs, "encoder", name), os.path.join(logs, "encoder", name))
    with open(os.path.join(logs, "results.json"), "w") as f:
        json.dump(summaries, f, indent=2)
    markdown = table(summaries)
    with open(os.path.join(logs, "results.md"), "w") as f:
        f.write(markdown + "\n")
    plot(summaries, os.path.join(args.out, "pali_x_accuracy.png"))
    print(markdown)


if __name__ == "__main__":
    main()
