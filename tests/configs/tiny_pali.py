"""Tiny PaLI (ViT prefix + byte-level text decoder) on digits with SYNTHETIC captions (seconds)."""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({
        "method": "pali", "total_steps": 2, "data": {"name": "digits", "batch_size": 16},
        "model": {"name": "vit", "hidden": 16, "depth": 1, "heads": 2, "patch": 4},
        "pali": {"text_hidden": 16, "text_depth": 1, "text_heads": 2},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none"},
        "eval": {"max_test_examples": 32}, "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
