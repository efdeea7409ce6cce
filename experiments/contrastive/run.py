"""Pretrains SimCLR and MoCo v3 (experiments/contrastive/config.py), one after the other.

  python -m experiments.contrastive.run [--runs /tmp/contrastive_runs] [--methods simclr moco]

Run from the repository root with JAXSSL_DATA_DIR set to the data root (the
config reads cifar10-jpeg under it). For each
method, WORKDIR = RUNS/METHOD is replaced; the encoder at initialisation is
evaluated first (the curve's step 0, written to WORKDIR/random_init.json),
then training logs kNN and linear-probe accuracy every eval.every_steps to
WORKDIR/metrics.jsonl. WORKDIR/run_info.json records wall-clock times, the
machine and the date. Summarise with experiments.contrastive.summarize. The runner is
`experiments.common.run`.
"""

from __future__ import annotations

import argparse
import json
import os

from experiments.common import add_set_argument, overrides_of, run

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/contrastive_runs")
    parser.add_argument("--methods", nargs="+", default=["simclr", "moco"])
    add_set_argument(parser)
    args = parser.parse_args()
    for method in args.methods:
        info = run(method, args.runs, f"{CONFIG}:{method}", overrides_of(args))
        print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
