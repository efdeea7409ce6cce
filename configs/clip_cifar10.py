"""CLIP on CIFAR-10 with SYNTHETIC class-name captions ('a photo of a frog.'), CPU-sized.

Image tower: a 4-block ViT (width 96, 3 heads, patch 8 on 32x32 images: 16
tokens, mean-pooled); text tower: a 2-block bidirectional Transformer encoder
(width 64) over byte tokens, pooled at EOS; both projected to 64-d. Learnable
logit scale from log(1/0.07), clamped at log(100). AdamW 1e-3 (batch 256),
warm-up 10%, cosine to 0, weight decay 0.1 (not on the logit scale). The
captions only carry the label (see jaxssl/data/captions.py), so CLIP learns a
10-way classifier whose class embeddings come from the text tower; retrieval
counts a caption of the right class as correct (jaxssl/evaluate/zero_shot.py).

  python -m jaxssl.main --config=configs/clip_cifar10.py --workdir=/tmp/clip_cifar10

Measured (2-core AMD EPYC CPU, nothing else running, 2026-12-06, commit
470732c; experiments/clip/README.md, logs/clip/): zero-shot top-1 on the
first 2,000 test images 9.1% -> 48.15% after 3 epochs, image->text R@5
92.35%, text->image R@1 90%; 0.161 s/step, about 2 minutes for the whole run.
"""

import ml_collections

BATCH = 256
STEPS_PER_EPOCH = 50_000 // BATCH
EPOCHS = 3


def get_config(arg=None):
    del arg
    steps = EPOCHS * STEPS_PER_EPOCH
    return ml_collections.ConfigDict({
        "method": "clip",
        "total_steps": steps,
        "data": {"name": "cifar10_jpeg", "data_dir": "cifar10-jpeg",
                 "batch_size": BATCH},
        "model": {"name": "vit", "hidden": 96, "depth": 4, "heads": 3, "patch": 8, "pool": "gap"},
        "clip": {"embed_dim": 64, "text_hidden": 64, "text_depth": 2, "text_heads": 4,
                 "text_length": 32},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none",
                  "warmup_steps": steps // 10, "weight_decay": 0.1, "b2": 0.98,
                  "clip_grad_norm": 1.0},
        "eval": {"every_steps": STEPS_PER_EPOCH // 2, "batch_size": 500,
                 "max_test_examples": 2000, "compare_random_init": True},
        "checkpoint": {"every_steps": 0, "async_save": False},
        "log": {"every_steps": 13, "tensorboard": False, "progress_bar": False},
    })
