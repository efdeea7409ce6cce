"""kNN and linear-probe accuracy of a config's encoder at initialisation (step 0), or
with --pixels of the raw pixels (flattened, in [0, 1]): the baselines of a run's curves.

  python -m experiments.simclr.random_init_eval --config=configs/simclr_fashion_mnist.py \\
      [--set data.data_dir=$JAXSSL_DATA_DIR/fashion-mnist] [--pixels]

Prints one JSON line {"step": 0, "eval/knn_top1": ..., "eval/linear_probe_top1": ...}
({"features": "pixels", ...} with --pixels), the same evaluation (same subsets) that the
run logs during pretraining.
"""

import argparse
import json
import tempfile

import jax
import jax.numpy as jnp

from experiments.common import add_set_argument, overrides_of
from jaxssl import config as config_lib
from jaxssl.evaluate.representation import evaluate_encoder
from jaxssl.train import Trainer


@jax.jit
def pixels(variables, images):
    """uint8 images [B, H, W, C] -> float32 [B, H * W * C] in [0, 1]."""
    del variables
    return images.reshape(images.shape[0], -1).astype(jnp.float32) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    add_set_argument(parser)
    parser.add_argument("--pixels", action="store_true",
                        help="evaluate the raw pixels instead of the encoder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        config = config_lib.load(args.config, overrides_of(args))
        trainer = Trainer(config, workdir)
        if args.pixels:
            results = evaluate_encoder(pixels, {}, trainer.train_source, trainer.eval_source,
                                       trainer.mesh, config.eval,
                                       trainer.train_source.num_classes)
        else:
            results = trainer.evaluate_random_init()
    head = {"features": "pixels"} if args.pixels else {"step": 0}
    print(json.dumps({**head, **{f"eval/{k}": v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
