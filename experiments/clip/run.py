"""Trains CLIP then SigLIP on captioned CIFAR-10 (configs/{clip,siglip}_cifar10.py), one after the other.

  python -m experiments.clip.run [--runs /tmp/clip_runs] [--methods clip siglip]

Run from the repository root with JAXSSL_DATA_DIR set to the data root (the
configs read cifar10-jpeg under it). For each
method, WORKDIR = RUNS/METHOD is replaced; zero-shot accuracy and retrieval
recall at initialisation go to WORKDIR/random_init.json, training logs them
every eval.every_steps to WORKDIR/metrics.jsonl, and WORKDIR/run_info.json
records wall-clock times, the machine and the date (`experiments.common.run`,
shared with experiments/contrastive). Summarise with experiments.clip.summarize.
"""

from __future__ import annotations

import argparse
import json
import os

from experiments.common import add_set_argument, overrides_of, run

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/clip_runs")
    parser.add_argument("--methods", nargs="+", default=["clip", "siglip"])
    add_set_argument(parser)
    args = parser.parse_args()
    for method in args.methods:
        config = os.path.join(REPO, "configs", f"{method}_cifar10.py")
        print(json.dumps(run(method, args.runs, config, overrides_of(args))), flush=True)


if __name__ == "__main__":
    main()
