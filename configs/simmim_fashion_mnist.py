"""SimMIM on Fashion-MNIST: configs/mae_fashion_mnist.py with the method swapped.

Command (JAXSSL_DATA_DIR: the folder holding fashion-mnist/):

  python -m jaxssl.main --config=configs/simmim_fashion_mnist.py \\
      --workdir=/tmp/mim_runs/simmim_fashion_mnist

Same ViT (patch 4, 4 blocks of width 64), data, augmentation and optimizer
as the MAE config; 60% of the 49 patches become mask tokens, every token
goes through the encoder and a linear head predicts the hidden patches'
pixels (L1). The encoder then sees 4x as many tokens per step as MAE's, so
at a similar CPU budget it takes fewer steps (`total_steps`). Measured
2026-12-06 at commit 6fc5280 on the 2-core CPU, nothing else running
(experiments/mim/README.md, logs in experiments/mim/logs/simmim/): kNN
65.20%, linear probe 74.40% (random init 63.75% / 76.45%), 52 s including
both evaluations.
"""

import os

from jaxssl.config import load_config_file


def get_config(arg=None):
    del arg
    c = load_config_file(os.path.join(os.path.dirname(__file__), "mae_fashion_mnist.py"))
    del c.mae
    c.method = "simmim"
    c.simmim = dict(mask_ratio=0.6)
    c.total_steps = 400
    return c
