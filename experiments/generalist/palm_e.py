"""PaLM-E on MNIST digit scenes: pretrain a text LM and an image encoder, then train PaLM-E.

The PaLM-E runs (configs/palm_e_scenes.py): the LM frozen, fully fine-tuned, and fully
fine-tuned with the LM's own text mixed in (object-centric input), fully fine-tuned on the
whole canvas, and the text-only baseline.

  JAXSSL_DATA_DIR=/path/to/data python -m experiments.generalist.palm_e \\
      [--runs /tmp/palm_e_runs] [--stages lm encoder frozen full mixed canvas text] \\
      [--set KEY=VALUE ...] [--out DIR]

Run from the repository root. Each stage trains in RUNS/STAGE (replaced); the PaLM-E
stages hand over RUNS/encoder and RUNS/lm through the Orbax hand-off and are
evaluated before training too (RUNS/STAGE/initial.json: answer accuracy and the
LM's text loss as handed over) and after it. Then the logs (metrics, hand-off
reports, configs) are copied to OUT/logs/palm_e/, and palm_e_results.json,
palm_e_results.md and palm_e.png are written to OUT (default: next to this file), with
chance: each task's most frequent answer's accuracy on the evaluation scenes
(`--stages` with no stage only writes these again from the logs in OUT).
`--set` overrides go to every stage run (e.g. `--set seed=1 --out DIR` for a second seed).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import shutil
import time

import jax

from experiments.common import add_set_argument, overrides_of, plt, read_json
from experiments.machine import cpu_model, short_commit
from jaxssl import config as config_lib
from jaxssl.data import sources
from jaxssl.data.scenes import TASKS
from jaxssl.logging import read_metrics
from jaxssl.train import Trainer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CONFIG = os.path.join(REPO, "configs", "palm_e_scenes.py")
PRETRAIN, PALM_E = ("lm", "encoder"), ("frozen", "full", "mixed", "canvas", "text")
NAMES = {"frozen": "PaLM-E, objects, LM frozen", "full": "PaLM-E, objects, full fine-tuning",
         "mixed": "PaLM-E, objects, full fine-tuning, 10% text rows",
         "canvas": "PaLM-E, canvas, full fine-tuning", "text": "text-only LM, state as digits"}
LOG_FILES = ("config.json", "metrics.jsonl", "handoff.txt", "initial.json", "run_info.json")


def run_stage(stage: str, runs: str, overrides: dict[str, str], logs: str) -> dict:
    """Trains one stage in RUNS/STAGE, its logs copied to LOGS/STAGE; PaLM-E stages are also
    evaluated as handed over."""
    workdir = os.path.join(runs, stage)
    shutil.rmtree(workdir, ignore_errors=True)
    if stage in PALM_E:
        overrides = {"palm_e.lm_init_from.checkpoint": os.path.join(runs, "lm"), **overrides}
        if stage != "text":
            overrides["palm_e.init_from.checkpoint"] = os.path.join(runs, "encoder")
    config = config_lib.load(f"{CONFIG}:{stage}", overrides)
    info = {"stage": stage, "date": datetime.datetime.now().astimezone().isoformat(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "commit": short_commit(),
            "overrides": overrides, "load_average_start": os.getloadavg()}
    trainer = Trainer(config, workdir)
    start = time.perf_counter()
    if stage in PALM_E:
        initial = trainer.evaluate(trainer.initial_state())
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "initial.json"), "w") as f:
            json.dump(initial, f, indent=2)
    info["final"] = trainer.run()
    info["wall_s"] = time.perf_counter() - start
    info["load_average_end"] = os.getloadavg()
    with open(os.path.join(workdir, "run_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    os.makedirs(os.path.join(logs, stage), exist_ok=True)
    for name in LOG_FILES:
        if os.path.exists(os.path.join(workdir, name)):
            shutil.copy(os.path.join(workdir, name), os.path.join(logs, stage, name))
    print(json.dumps(info), flush=True)
    return info


def majority_answer_rates(config) -> dict[str, float]:
    """Per task and for 'all': the fraction of the evaluation questions (the first
    eval.max_test_examples scenes of the config's eval split) that each task's most
    frequent answer gets right, the accuracy of a model that reads nothing."""
    source = sources.get_source(config.data.name, config.data.eval_split, config.data.data_dir)
    count = min(len(source), config.eval.max_test_examples or len(source))
    answers = collections.defaultdict(collections.Counter)
    for index in range(count):
        _, task, _, answer = source.scene_and_task(index)
        answers[TASKS[task]][answer] += 1
    rates = {task: max(c.values()) / sum(c.values()) for task, c in answers.items()}
    return {**rates, "all": sum(max(c.values()) for c in answers.values()) / count}


def summarize(logs: str) -> dict:
    """{stage: {'initial': eval before training, 'final': after, 'wall_s', ...}} from the
    stages' logs in `logs`."""
    out = {}
    for stage in PRETRAIN + PALM_E:
        directory = os.path.join(logs, stage)
        if not os.path.exists(os.path.join(directory, "run_info.json")):
            continue
        info = read_json(os.path.join(directory, "run_info.json"))
        train = [r for r in read_metrics(directory) if "loss" in r]
        out[stage] = {"final": info["final"], "wall_s": info["wall_s"],
                      "load_average": [info["load_average_start"], info["load_average_end"]],
                      "date": info["date"], "commit": info["commit"],
                      "train_loss_first_last": [train[0]["loss"], train[-1]["loss"]]}
        if stage in PALM_E:
            out[stage]["initial"] = read_json(os.path.join(directory, "initial.json"))
    return out


def table(summary: dict) -> str:
    """Markdown: per-task exact-match accuracy and the LM's text loss of each PaLM-E stage."""
    columns = [f"acc/{t}" for t in TASKS] + ["acc/all"]
    header = (["run"] + [c.split("/")[1] for c in columns]
              + ["LM text loss before", "after", "answer loss"])
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for stage in PALM_E:
        if stage not in summary:
            continue
        s = summary[stage]
        cells = [NAMES[stage]] + [f"{100 * s['final'][c]:.1f}" for c in columns]
        cells += [f"{s['initial']['text/loss']:.4f}", f"{s['final']['text/loss']:.4f}",
                  f"{s['final']['answer_loss']:.4f}"]
        rows.append("| " + " | ".join(cells) + " |")
    if "chance" in summary:
        cells = ["chance: each task's most frequent answer"]
        cells += [f"{100 * summary['chance'][c.split('/')[1]]:.1f}" for c in columns]
        rows.append("| " + " | ".join(cells + ["", "", ""]) + " |")
    return "\n".join(rows)


def plot(summary: dict, path: str) -> None:
    """Left: accuracy per task of each PaLM-E stage (chance dashed); right: the LM's text
    loss before and after each stage."""
    stages = [s for s in PALM_E if s in summary]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    labels = list(TASKS) + ["all"]
    width = 0.8 / max(len(stages), 1)
    for i, stage in enumerate(stages):
        values = [100 * summary[stage]["final"][f"acc/{t}"] for t in labels]
        left.bar([x + i * width for x in range(len(labels))], values, width, label=NAMES[stage])
    if "chance" in summary:
        for x, task in enumerate(labels):
            left.hlines(100 * summary["chance"][task], x - width / 2, x + 0.8 - width / 2,
                        colors="black", linestyles="dashed", linewidth=1,
                        label="chance (most frequent answer)" if x == 0 else None)
    left.set_xticks([x + width * (len(stages) - 1) / 2 for x in range(len(labels))], labels)
    left.set_ylabel("exact-match accuracy (%)")
    left.set_title("MNIST scenes, 500 held-out questions")
    # Below the axes: inside, it would hide the tallest bars.
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    left.grid(axis="y", alpha=0.3)
    for i, stage in enumerate(stages):
        before, after = (summary[stage][k]["text/loss"] for k in ("initial", "final"))
        right.bar([i - 0.2, i + 0.2], [before, after], 0.4,
                  color=["tab:gray", f"C{i}"], label=None)
    right.set_xticks(range(len(stages)), stages, fontsize=8)
    right.set_ylabel("pydoc validation loss (nats/byte)")
    right.set_title("LM text loss: before (grey) / after")
    right.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/palm_e_runs")
    parser.add_argument("--stages", nargs="*", default=list(PRETRAIN + PALM_E),
                        help="none: only summarise the logs already in OUT")
    parser.add_argument("--out", default=HERE, help="where the logs, results and plot go")
    add_set_argument(parser)
    args = parser.parse_args()
    logs = os.path.join(args.out, "logs", "palm_e")
    for stage in args.stages:
        run_stage(stage, args.runs, overrides_of(args), logs)
    summary = summarize(logs)
    summary["chance"] = majority_answer_rates(
        config_lib.load(f"{CONFIG}:full", overrides_of(args)))
    with open(os.path.join(args.out, "palm_e_results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    markdown = table(summary)
    with open(os.path.join(args.out, "palm_e_results.md"), "w") as f:
        f.write(markdown + "\n")
    plot(summary, os.path.join(args.out, "palm_e.png"))
    print(markdown)


if __name__ == "__main__":
    main()
