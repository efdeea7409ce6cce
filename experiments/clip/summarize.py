"""Zero-shot / retrieval curves (PNG), a table (Markdown) and results.json from finished CLIP/SigLIP runs.

  python -m experiments.clip.summarize [--runs /tmp/clip_runs] [--out experiments/clip]

Reads RUNS/{clip,siglip}/ as experiments.clip.run wrote them, with the
helpers of experiments/common.py.
"""

from __future__ import annotations

import argparse
import os

from experiments.common import write_summaries

METHODS = {"clip": "CLIP", "siglip": "SigLIP"}
EVAL_METRICS = {"zero_shot_top1": "zero-shot top-1", "i2t_recall@1": "image->text R@1",
                "i2t_recall@5": "image->text R@5", "t2i_recall@1": "text->image R@1",
                "t2i_recall@5": "text->image R@5"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="/tmp/clip_runs")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()
    summaries = write_summaries(args.runs, args.out, "zero_shot_curves.png", EVAL_METRICS,
                                METHODS)
    for method, s in summaries.items():
        print(f"{METHODS[method]}: {s['train_s_per_epoch']:.0f} s/epoch training "
              f"(median step {s['median_step_time_s']:.2f} s), {s['wall_clock_s']:.0f} s wall "
              f"with evaluations; loss {s['loss_first_last'][0]:.3f} -> "
              f"{s['loss_first_last'][1]:.3f}")


if __name__ == "__main__":
    main()
