"""Zero-shot / retrieval curves (PNG), a table (Markdown) and results.json from finished CLIP/SigLIP runs.

  PYTHONPATH=. python experiments/clip/summarize.py [--runs /tmp/clip_runs] [--out experiments/clip]

Reads RUNS/{clip,siglip}/ as experiments/clip/run.py wrote them, with the
helpers of experiments/contrastive/summarize.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "experiments", "contrastive"))
from summarize import plot, summarize, table  # noqa: E402  (experiments/contrastive)

METHODS = {"clip": "CLIP", "siglip": "SigLIP"}
EVAL_METRICS = {"zero_shot_top1": "zero-shot top-1", "i2t_recall@1": "image->text R@1",
                "i2t_recall@5": "image->text R@5", "t2i_recall@1": "text->image R@1",
                "t2i_recall@5": "text->image R@5"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/clip_runs")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    summaries = {m: summarize(os.path.join(args.runs, m), EVAL_METRICS) for m in METHODS
                 if os.path.exists(os.path.join(args.runs, m, "run_info.json"))}
    plot(summaries, os.path.join(args.out, "zero_shot_curves.png"), EVAL_METRICS, METHODS)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(summaries, f, indent=2)
    markdown = table(summaries, EVAL_METRICS, METHODS)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown + "\n")
    print(markdown)
    for method, s in summaries.items():
        print(f"{METHODS[method]}: {s['train_s_per_epoch']:.0f} s/epoch training "
              f"(median step {s['median_step_time_s']:.2f} s), {s['wall_clock_s']:.0f} s wall "
              f"with evaluations; loss {s['loss_first_last'][0]:.3f} -> "
              f"{s['loss_first_last'][1]:.3f}")


if __name__ == "__main__":
    main()
