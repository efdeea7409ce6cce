"""One results JSON from finished MIM workdirs: final evaluation, loss and step time.

  python -m experiments.mim.summarize WORKDIR [WORKDIR ...] --out experiments/mim/results.json

For each workdir: the method and batch size (config.json), the steps, final
loss and median logged step time (metrics.jsonl), and the final evaluation
of the pretrained and the randomly initialised encoder (results.json, as
`jaxssl.main` wrote it).
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from jaxssl.logging import read_metrics


def _json(workdir: str, name: str) -> dict:
    with open(os.path.join(workdir, name)) as f:
        return json.load(f)


def summarize(workdir: str) -> dict:
    train = [r for r in read_metrics(workdir) if "loss" in r]
    config = _json(workdir, "config.json")
    return {
        "method": config["method"],
        "steps": train[-1]["step"],
        "batch_size": config["data"]["batch_size"],
        "final_loss": train[-1]["loss"],
        "median_step_time_s": float(np.median([r["step_time_s"] for r in train[1:]])),
        "evaluation": _json(workdir, "results.json"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--out", required=True, help="path of the JSON to write")
    args = parser.parse_args()
    summaries = [summarize(w) for w in args.workdirs]
    with open(args.out, "w") as f:
        json.dump(summaries, f, indent=2)
    print(json.dumps(summaries, indent=2))


if __name__ == "__main__":
    main()
