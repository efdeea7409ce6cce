"""Fine-tune a small ViT encoder on labelled Fashion-MNIST ($JAXSSL_DATA_DIR/fashion-mnist).

Command (ARG: a pretraining workdir or checkpoint step; none = from scratch):

  python -m jaxssl.main --config=configs/finetune_fashion_mnist.py:/tmp/ft_runs/simclr_vit \\
      --workdir=/tmp/ft_runs/full_10pct [--config.finetune.label_fraction=0.01] \\
      [--config.finetune.mode=lp_ft --config.finetune.lp_steps=100] \\
      [--config.finetune.layer_decay=0.65] [--config.finetune.l2sp=0.01]

The encoder is the ViT of experiments/finetune/simclr_vit_fmnist.py and of
configs/mae_fashion_mnist.py (width 64, 4 blocks, 4 heads, 4x4 patches on
28x28 images: 49 tokens, mean-pooled), so either pretraining hands over.
300 steps of batch 128 with AdamW and crop + flip augmentation on 10% of the
labels (class-balanced); reports top-1 / top-5 on the 10,000 test images,
WiSE-FT at a = 0.25, 0.5, 0.75 and the forgetting measure (kNN top-1 on
MNIST digits, 10,000 train / 2,000 test, before and after fine-tuning).
Expected results, runtimes and hardware: experiments/finetune/README.md.
"""

import ml_collections

from jaxssl.methods.finetune import FINETUNE_AUGMENT


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.method = "finetune"
    c.seed = 0
    c.total_steps = 300
    c.data = dict(name="fashion_mnist", data_dir="fashion-mnist", batch_size=128)
    c.model = dict(name="vit", hidden=64, depth=4, heads=4, patch=4, pool="gap")
    c.finetune = dict(
        num_classes=10, init_from=dict(checkpoint=arg or ""), label_fraction=0.1,
        wise_alphas=(0.25, 0.5, 0.75),
        forgetting=dict(name="mnist", data_dir="mnist", max_train_examples=10000,
                        max_test_examples=2000))
    c.augment = FINETUNE_AUGMENT
    c.optim = dict(name="adamw", base_lr=2e-3, lr_scaling="linear", b1=0.9, b2=0.999,
                   weight_decay=0.05, warmup_steps=30)
    c.eval = dict(batch_size=1000)
    c.checkpoint = dict(every_steps=0)
    c.log = dict(every_steps=25, tensorboard=False, progress_bar=False)
    return c
