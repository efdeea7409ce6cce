"""Tiny SimCLR on digits for the command-line tests (seconds on a CPU)."""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({
        "method": "simclr", "total_steps": 4,
        "data": {"name": "digits", "batch_size": 16},
        "model": {"name": "vit", "hidden": 32, "depth": 2, "heads": 4, "patch": 2},
        "simclr": {"proj_hidden_dims": (64,), "proj_dim": 16},
        "optim": {"name": "adamw", "base_lr": 1e-3},
        "eval": {"max_train_examples": 64, "max_test_examples": 32, "probe_epochs": 2},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
