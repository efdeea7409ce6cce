"""Tiny MoCo v3 on digits for tests/test_moco.py: 1-block ViT with a frozen patch projection, SGD."""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({
        "method": "moco", "total_steps": 6,
        "data": {"name": "digits", "batch_size": 16},
        "model": {"name": "vit", "hidden": 32, "depth": 1, "heads": 4, "patch": 2, "pool": "cls",
                  "frozen_patch_embed": True},
        "moco": {"proj_hidden_dims": (64, 64), "proj_dim": 16, "pred_hidden_dims": (64,)},
        "augment": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1},
        "optim": {"name": "sgd", "base_lr": 0.1, "lr_scaling": "none"},
        "eval": {"max_train_examples": 64, "max_test_examples": 32, "probe_epochs": 2},
        "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
