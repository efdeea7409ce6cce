"""Tiny CLIP (or SigLIP: ':siglip') on digits with SYNTHETIC class-name captions, for
tests/test_clip.py and tests/test_aot.py."""

import ml_collections


def get_config(arg="clip"):
    return ml_collections.ConfigDict({
        "method": arg, "total_steps": 20,
        "data": {"name": "digits", "batch_size": 16},
        "model": {"name": "vit", "hidden": 32, "depth": 1, "heads": 4, "patch": 4},
        arg: {"embed_dim": 16, "text_hidden": 32, "text_depth": 1, "text_heads": 4,
              "text_length": 32},
        "optim": {"name": "adamw", "base_lr": 3e-4, "lr_scaling": "none", "weight_decay": 0.0},
        "eval": {"max_test_examples": 64, "batch_size": 32},
        "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
