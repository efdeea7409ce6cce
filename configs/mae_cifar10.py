"""MAE on CIFAR-10 with a small ViT (patch 4), sized for a 2-core CPU.

Command (JAXSSL_DATA_DIR: the folder holding cifar10-jpeg/):

  python -m jaxssl.main --config=configs/mae_cifar10.py --workdir=/tmp/mim_runs/mae_cifar10

32x32 RGB images -> 8x8 = 64 patches of 4x4; the encoder (6 blocks of width
128) sees the 16 visible ones, a 2-block decoder of width 64 reconstructs
all 64 (normalised pixels). Prints kNN and linear-probe top-1 of the frozen
encoder on 2,000 test images (features of 10,000 train images) next to the
same encoder at initialisation. Not measured yet: the experiments in
experiments/mim/ use Fashion-MNIST, which fits this CPU's budget.
Note: the shared CIFAR-10 copy is stored as quality-75 JPEGs.
"""

import ml_collections

from jaxssl.methods.mae import LIGHT_AUGMENT


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.method = "mae"
    c.seed = 0
    c.total_steps = 5000
    c.data = dict(name="cifar10_jpeg", data_dir="cifar10-jpeg", batch_size=256)
    c.model = dict(name="vit", hidden=128, depth=6, heads=4, patch=4, pool="gap")
    c.mae = dict(mask_ratio=0.75, norm_pix=True, decoder_hidden=64, decoder_depth=2,
                 decoder_heads=4)
    c.augment = LIGHT_AUGMENT
    c.optim = dict(name="adamw", base_lr=1e-3, lr_scaling="linear", b1=0.9, b2=0.95,
                   weight_decay=0.05, warmup_steps=250)
    c.eval = dict(max_train_examples=10000, max_test_examples=2000, compare_random_init=True)
    c.log = dict(every_steps=50, tensorboard=False)
    return c
