"""kNN and linear-probe accuracy of a config's encoder at initialisation (step 0).

  python -m experiments.simclr.random_init_eval --config=configs/simclr_fashion_mnist.py \\
      [--set data.data_dir=$JAXSSL_DATA_DIR/fashion-mnist]

Prints one JSON line {"step": 0, "eval/knn_top1": ..., "eval/linear_probe_top1": ...},
the same evaluation (same subsets) that the run logs during pretraining.
"""

import argparse
import json
import tempfile

from experiments.common import add_set_argument, overrides_of
from jaxssl import config as config_lib
from jaxssl.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    add_set_argument(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        config = config_lib.load(args.config, overrides_of(args))
        results = Trainer(config, workdir).evaluate_random_init()
    print(json.dumps({"step": 0, **{f"eval/{k}": v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
