"""Tiny fine-tuning on digits for the tests (seconds on a CPU): the encoder of tiny_simclr.py.

`tests/configs/tiny_finetune.py:DIR` fine-tunes from the pretraining workdir
(or checkpoint step) DIR; without the argument it trains from scratch.
"""

import ml_collections


def get_config(arg=None):
    return ml_collections.ConfigDict({
        "method": "finetune", "total_steps": 4,
        "data": {"name": "digits", "batch_size": 16},
        "model": {"name": "vit", "hidden": 32, "depth": 2, "heads": 4, "patch": 2},
        "finetune": {"num_classes": 10, "init_from": {"checkpoint": arg or ""}},
        "augment": {"crop_scale": (0.5, 1.0), "flip_prob": 0.0, "jitter_prob": 0.0,
                    "grayscale_prob": 0.0, "blur_prob": 0.0, "solarize_prob": 0.0},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none", "weight_decay": 0.05},
        "eval": {"batch_size": 64, "max_test_examples": 64},
        "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
