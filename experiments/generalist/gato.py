"""Gato on a CPU: one network on text, captions and control, next to single-task models.

Trains configs/gato_cpu.py (the mixture, weights text 0.5, caption 0.1, CartPole 0.35,
Pendulum 0.05) for --steps steps, then the same model trained on one task alone:
text and captions each for its task's share of those steps (the same number of
rows of its task's data as the mixture model saw, at the same batch size), and
text for all the steps (the same compute and optimizer steps). Reports the
mixture model's CartPole-v1 and Pendulum-v1 mean returns over the config's
evaluation episodes (greedy rollouts in gymnasium, demonstration prompt), next to
the scripted expert and a uniformly random policy on the same reset seeds, and its
text loss and caption accuracy next to the single-task models'.

  JAXSSL_DATA_DIR=... python -m experiments.generalist.gato --runs_dir=/tmp/gato_runs \\
      2>&1 | tee experiments/generalist/logs/gato/run.log

Writes RUNS/{gato,text_only,text_only_same_steps,caption_only}/ (workdirs), and into
experiments/generalist/: logs/gato/*.jsonl (each run's metrics), gato_results.json
and gato_curves.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import time

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from experiments.common import add_set_argument, overrides_of  # noqa: E402
from experiments.machine import cpu_model, short_commit  # noqa: E402
from jaxssl import config as config_lib  # noqa: E402
from jaxssl.data import gato_control, gato_mixture  # noqa: E402
from jaxssl.logging import read_metrics  # noqa: E402
from jaxssl.train import Trainer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(os.path.dirname(os.path.dirname(HERE)), "configs", "gato_cpu.py")
# run -> (the task it trains on alone, None: the mixture; True: for the task's share of
# the mixture's steps, False: for all of them)
RUNS = {"gato": (None, False), "text_only": ("text", True),
        "text_only_same_steps": ("text", False), "caption_only": ("caption", True)}


def train(name: str, runs_dir: str, steps: int, overrides: dict[str, str]) -> dict:
    """Trains run `name` (RUNS) from scratch; its final evaluation and timings."""
    config = config_lib.load(CONFIG, overrides)
    task, same_rows = RUNS[name]
    weights = tuple(config.gato.weights)
    if task is not None:
        if same_rows:
            steps = round(steps * weights[gato_mixture.TASKS.index(task)] / sum(weights))
        config.gato.weights = tuple(float(t == task) for t in gato_mixture.TASKS)
    config.total_steps = steps
    workdir = os.path.join(runs_dir, name)
    shutil.rmtree(workdir, ignore_errors=True)
    load_start = os.getloadavg()
    start = time.perf_counter()
    results = Trainer(config, workdir).run()
    seconds = time.perf_counter() - start
    print(f"{name}: {steps} steps, {seconds:.0f} s, {json.dumps(results)}", flush=True)
    return {"steps": steps, "weights": list(config.gato.weights), "results": results,
            "wall_s": seconds, "load_average_start": load_start,
            "load_average_end": os.getloadavg(), "workdir": workdir}


def reference_returns(episodes: int, seed: int) -> dict[str, dict[str, float]]:
    """Mean returns of the scripted expert and of uniformly random actions on the
    evaluation's reset seeds, per control task."""
    out = {}
    for name in gato_mixture.TASKS[2:]:
        task = gato_control.control_task(name)
        env = task.make_env()
        env.action_space.seed(seed)
        random_policy = lambda observation: env.action_space.sample()
        out[name] = {
            "expert": float(np.mean([gato_control.collect_episode(task, task.expert, seed + k, env)
                                     .episode_return for k in range(episodes)])),
            "random": float(np.mean([gato_control.collect_episode(task, random_policy, seed + k,
                                                                  env).episode_return
                                     for k in range(episodes)]))}
    return out


def curve(workdir: str, metric: str, rows_per_step: float) -> tuple[list, list]:
    """(rows of the task's data seen, the train metric) at each logged step."""
    records = [r for r in read_metrics(workdir) if metric in r]
    return [r["step"] * rows_per_step for r in records], [r[metric] for r in records]


def plot(summary: dict, path: str) -> None:
    runs, batch = summary["runs"], summary["batch_size"]
    weights = np.asarray(runs["gato"]["weights"]) / sum(runs["gato"]["weights"])
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    panels = ((axes[0], "text", ("text_only", "text_only_same_steps")),
              (axes[1], "caption", ("caption_only",)))
    for ax, task, alone in panels:
        share = weights[gato_mixture.TASKS.index(task)]
        ax.plot(*curve(runs["gato"]["workdir"], f"{task}/loss", batch * share),
                label="Gato (mixture)")
        for name in alone:
            ax.plot(*curve(runs[name]["workdir"], "loss", batch),
                    label=f"{task} only, {runs[name]['steps']} steps")
        ax.set_xlabel(f"{task} rows seen (expected)")
        ax.set_ylabel("train loss (nats/token, one batch)")
        ax.set_yscale("log")
        ax.set_title(f"{task}: train loss")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax, task in zip(axes[2:], gato_mixture.TASKS[2:]):
        reference = summary["reference_returns"][task]
        values = [reference["random"], runs["gato"]["results"][f"{task}/return"],
                  reference["expert"]]
        ax.bar(["random", "Gato", "expert"], values, color=["grey", "C0", "C2"])
        for x, v in enumerate(values):
            ax.text(x, v, f"{v:.0f}", ha="center", va="bottom" if v >= 0 else "top")
        ax.set_title(f"{task}: mean return, {summary['eval_episodes']} episodes")
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs_dir", default="/tmp/gato_runs")
    parser.add_argument("--steps", type=int, default=0, help="mixture steps (0: the config's)")
    parser.add_argument("--out", default=HERE, help="where results, logs and the plot go")
    add_set_argument(parser)
    args = parser.parse_args()
    overrides = overrides_of(args)
    config = config_lib.load(CONFIG, overrides)
    steps = args.steps or config.total_steps
    summary = {"date": datetime.datetime.now().astimezone().isoformat(), "commit": short_commit(),
               "cpu": cpu_model(), "cpu_count": os.cpu_count(), "mixture_steps": steps,
               "batch_size": config.data.batch_size, "overrides": overrides,
               "eval_episodes": config.gato.eval_episodes,
               "reference_returns": reference_returns(config.gato.eval_episodes,
                                                      config.gato.eval_seed),
               "runs": {name: train(name, args.runs_dir, steps, overrides) for name in RUNS}}
    logs = os.path.join(args.out, "logs", "gato")
    os.makedirs(logs, exist_ok=True)
    for name, run in summary["runs"].items():
        shutil.copy(os.path.join(run["workdir"], "metrics.jsonl"),
                    os.path.join(logs, f"{name}.jsonl"))
    with open(os.path.join(args.out, "gato_results.json"), "w") as f:
        json.dump(summary, f, indent=2)
    plot(summary, os.path.join(args.out, "gato_curves.png"))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
