"""Trains CLIP then SigLIP on captioned CIFAR-10 (configs/{clip,siglip}_cifar10.py), one after the other.

  PYTHONPATH=. python experiments/clip/run.py [--runs /tmp/clip_runs] [--methods clip siglip] \
      [--set data.data_dir=$JAXSSL_DATA_DIR/cifar10-jpeg]

Run from the repository root (the configs read ../shared/data). For each
method, WORKDIR = RUNS/METHOD is replaced; zero-shot accuracy and retrieval
recall at initialisation go to WORKDIR/random_init.json, training logs them
every eval.every_steps to WORKDIR/metrics.jsonl, and WORKDIR/run_info.json
records wall-clock times, the machine and the date (the runner of
experiments/contrastive). Summarise with experiments/clip/summarize.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "experiments", "contrastive"))
from run import run  # noqa: E402  (experiments/contrastive/run.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/clip_runs")
    parser.add_argument("--methods", nargs="+", default=["clip", "siglip"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every method, e.g. "
                             "data.data_dir=$JAXSSL_DATA_DIR/cifar10-jpeg (repeatable)")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    for method in args.methods:
        config = os.path.join(REPO, "configs", f"{method}_cifar10.py")
        print(json.dumps(run(method, args.runs, config, overrides)), flush=True)


if __name__ == "__main__":
    main()
