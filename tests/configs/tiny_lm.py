"""Tiny decoder-only byte-level language model on Python's embedded pydoc text (seconds on a CPU)."""

import ml_collections

from jaxssl.data.text import text_dataset_name


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({
        "method": "lm", "total_steps": 4,
        "data": {"name": text_dataset_name("pydoc", length=17, sentinels=16),
                 "train_split": "train", "eval_split": "validation", "batch_size": 16},
        "lm": {"architecture": "decoder", "objective": "causal",
               "hidden": 32, "depth": 2, "heads": 4, "mlp_ratio": 2.0},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none"},
        "eval": {"batch_size": 64, "max_test_examples": 64},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
