"""Tiny MAE (or SimMIM: ':simmim') on digits for the tests (seconds on a CPU).

8x8 grey digits cut into 2x2 patches: 16 patches, of which MAE keeps 4.
"""

import ml_collections

from jaxssl.methods.mae import LIGHT_AUGMENT


def get_config(arg="mae"):
    method_sections = {
        "mae": {"mask_ratio": 0.75, "norm_pix": True, "decoder_hidden": 16, "decoder_depth": 1,
                "decoder_heads": 2},
        "simmim": {"mask_ratio": 0.6},
    }
    return ml_collections.ConfigDict({
        "method": arg, "total_steps": 4,
        "data": {"name": "digits", "batch_size": 16},
        "model": {"name": "vit", "hidden": 32, "depth": 2, "heads": 4, "patch": 2},
        arg: method_sections[arg],
        "augment": LIGHT_AUGMENT,
        # A constant, unscaled lr, so that a few steps on one batch visibly lower the loss.
        "optim": {"name": "adamw", "base_lr": 3e-3, "lr_scaling": "none", "schedule": "constant",
                  "b2": 0.95, "weight_decay": 0.05},
        "eval": {"max_train_examples": 64, "max_test_examples": 32, "probe_epochs": 2,
                 "num_pictures": 4},
        "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
