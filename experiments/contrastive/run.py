"""Pretrains SimCLR and MoCo v3 (experiments/contrastive/config.py), one after the other.

  python experiments/contrastive/run.py [--runs /tmp/contrastive_runs] [--methods simclr moco] \
      [--set data.data_dir=$JAXSSL_DATA_DIR/cifar10-jpeg]

Run from the repository root (the config reads ../shared/data). For each
method, WORKDIR = RUNS/METHOD is replaced; the encoder at initialisation is
evaluated first (the curve's step 0, written to WORKDIR/random_init.json),
then training logs kNN and linear-probe accuracy every eval.every_steps to
WORKDIR/metrics.jsonl. WORKDIR/run_info.json records wall-clock times, the
machine and the date. Summarise with experiments/contrastive/summarize.py.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import time

import jax

from jaxssl import config as config_lib
from jaxssl.train import Trainer

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.processor()


def run(method: str, runs_dir: str, config_spec: str | None = None,
        overrides: dict[str, str] | None = None) -> dict:
    """Evaluates at initialisation, then trains; config_spec defaults to CONFIG:method.

    overrides: {"a.b": "VALUE"}, as `--config.a.b=VALUE` of jaxssl.main."""
    workdir = os.path.join(runs_dir, method)
    shutil.rmtree(workdir, ignore_errors=True)
    config = config_lib.load(config_spec or f"{CONFIG}:{method}", overrides)
    info = {"method": method, "date": datetime.datetime.now().astimezone().isoformat(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()], "load_average_start": os.getloadavg()}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/contrastive_runs")
    parser.add_argument("--methods", nargs="+", default=["simclr", "moco"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every method, e.g. "
                             "data.data_dir=$JAXSSL_DATA_DIR/cifar10-jpeg (repeatable)")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    for method in args.methods:
        info = run(method, args.runs, overrides=overrides)
        print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
