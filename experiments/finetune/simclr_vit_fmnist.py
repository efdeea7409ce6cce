"""SimCLR pretraining of the fine-tuning experiment's ViT on Fashion-MNIST ($JAXSSL_DATA_DIR/fashion-mnist).

  python -m jaxssl.main --config=experiments/finetune/simclr_vit_fmnist.py \\
      --workdir=/tmp/ft_runs/simclr_vit

The encoder of configs/finetune_fashion_mnist.py (ViT: width 64, 4 blocks,
4 heads, 4x4 patches on 28x28 images) with a 256-wide projection MLP; batch
128, 600 steps, AdamW. Result and runtime: experiments/finetune/README.md.
"""

import ml_collections


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.method = "simclr"
    c.seed = 0
    c.total_steps = 600
    c.data = dict(name="fashion_mnist", data_dir="fashion-mnist", batch_size=128)
    c.model = dict(name="vit", hidden=64, depth=4, heads=4, patch=4, pool="gap")
    c.simclr = dict(temperature=0.2, proj_hidden_dims=(256,), proj_dim=64)
    c.augment = dict(crop_scale=(0.2, 1.0), flip_prob=0.5, brightness=0.4, contrast=0.4,
                     saturation=0.0, hue=0.0, jitter_prob=0.8, grayscale_prob=0.0,
                     blur_prob=0.0, solarize_prob=0.0)
    c.optim = dict(name="adamw", base_lr=2e-3, lr_scaling="linear", weight_decay=0.05,
                   warmup_steps=60)
    c.eval = dict(max_train_examples=10000, max_test_examples=2000)
    c.checkpoint = dict(every_steps=200)
    c.log = dict(every_steps=25, tensorboard=False, progress_bar=False)
    return c
