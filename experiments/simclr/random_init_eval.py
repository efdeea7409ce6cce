"""kNN and linear-probe accuracy of a config's encoder at initialisation (step 0).

  python experiments/simclr/random_init_eval.py --config=configs/simclr_fashion_mnist.py \
      [--set data.data_dir=$JAXSSL_DATA_DIR/fashion-mnist]

Prints one JSON line {"step": 0, "eval/knn_top1": ..., "eval/linear_probe_top1": ...},
the same evaluation (same subsets) that the run logs during pretraining.
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from jaxssl import config as config_lib  # noqa: E402
from jaxssl.train import Trainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as --config.KEY=VALUE of jaxssl.main (repeatable)")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory() as workdir:
        results = Trainer(config_lib.load(args.config, overrides), workdir).evaluate_random_init()
    print(json.dumps({"step": 0, **{f"eval/{k}": v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
