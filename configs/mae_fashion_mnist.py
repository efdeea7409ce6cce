"""MAE on Fashion-MNIST with a small ViT (patch 4), sized for a 2-core CPU.

Command (JAXSSL_DATA_DIR: the folder holding fashion-mnist/):

  python -m jaxssl.main --config=configs/mae_fashion_mnist.py \\
      --workdir=/tmp/mim_runs/mae_fashion_mnist

28x28 grey images -> 7x7 = 49 patches of 4x4; the encoder (4 blocks of
width 64) sees the 12 visible ones, a 2-block decoder of width 32
reconstructs all 49 (normalised pixels). Prints kNN and linear-probe top-1
of the frozen encoder on 2,000 test images (features of 10,000 train
images), next to the same encoder at initialisation. Measured 2026-12-06
at commit 6fc5280 on the 2-core CPU, nothing else running
(experiments/mim/README.md, logs in experiments/mim/logs/mae/): kNN
72.55%, linear probe 76.90% (random init 63.75% / 76.45%), 72 s including
both evaluations.
"""

import ml_collections

from jaxssl.methods.mae import LIGHT_AUGMENT


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.method = "mae"
    c.seed = 0
    c.total_steps = 1000
    c.data = dict(name="fashion_mnist", data_dir="fashion-mnist", batch_size=128)
    c.model = dict(name="vit", hidden=64, depth=4, heads=4, patch=4, pool="gap")
    c.mae = dict(mask_ratio=0.75, norm_pix=True, decoder_hidden=32, decoder_depth=2,
                 decoder_heads=2)
    c.augment = LIGHT_AUGMENT
    # MAE's AdamW recipe with a larger base lr for a short run (peak 1e-3 at batch 128).
    c.optim = dict(name="adamw", base_lr=2e-3, lr_scaling="linear", b1=0.9, b2=0.95,
                   weight_decay=0.05, warmup_steps=100)
    c.eval = dict(max_train_examples=10000, max_test_examples=2000, compare_random_init=True)
    c.log = dict(every_steps=25, tensorboard=False)
    return c
