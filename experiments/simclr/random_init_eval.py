"""kNN and linear-probe accuracy of a config's encoder at initialisation (step 0).

  python -m experiments.simclr.random_init_eval --config=configs/simclr_fashion_mnist.py

Prints one JSON line {"step": 0, "eval/knn_top1": ..., "eval/linear_probe_top1": ...},
the same evaluation (same subsets) that the run logs during pretraining.
"""

import argparse
import json
import tempfile

from jaxssl import config as config_lib
from jaxssl.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        results = Trainer(config_lib.load(args.config), workdir).evaluate_random_init()
    print(json.dumps({"step": 0, **{f"eval/{k}": v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
