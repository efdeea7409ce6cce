"""Tiny PaLI-X on digits: three frames per example, 'which' and 'count' frame questions;
the argument picks pali.architecture ('encoder_decoder', the default, or 'decoder')."""

import ml_collections


def get_config(arg=None):
    return ml_collections.ConfigDict({
        "method": "pali", "total_steps": 2, "data": {"name": "digits", "batch_size": 16},
        "model": {"name": "vit", "hidden": 16, "depth": 1, "heads": 2, "patch": 4},
        "pali": {"architecture": arg or "encoder_decoder", "text_hidden": 16, "text_depth": 1,
                 "text_heads": 2, "num_images": 3, "frame_tasks": ("which", "count")},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none"},
        "eval": {"max_test_examples": 32}, "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
