"""kNN / linear-probe curves (PNG), a table (Markdown) and results.json from finished runs.

  python -m experiments.contrastive.summarize [--runs /tmp/contrastive_runs] [--out experiments/contrastive]

Reads RUNS/{simclr,moco}/: random_init.json (step 0), metrics.jsonl
(eval/* rows, training loss and step times), config.json and run_info.json,
all written by experiments.contrastive.run.
"""

from __future__ import annotations

import argparse
import os

from experiments.common import write_summaries

METHODS = {"simclr": "SimCLR", "moco": "MoCo v3"}
EVAL_METRICS = {"knn_top1": "kNN top-1", "linear_probe_top1": "linear-probe top-1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/contrastive_runs")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    summaries = write_summaries(args.runs, args.out, "knn_curves.png", EVAL_METRICS, METHODS)
    for method, s in summaries.items():
        print(f"{METHODS[method]}: {s['train_s_per_epoch']:.0f} s/epoch training "
              f"(median step {s['median_step_time_s']:.2f} s), {s['wall_clock_s']:.0f} s wall "
              f"with evaluations")


if __name__ == "__main__":
    main()
