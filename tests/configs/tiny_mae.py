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
        # SGD, not AdamW: Adam's first update is g / |g| per element, which turns the
        # rounding noise in the (exactly zero) gradient of attention key biases into
        # lr-sized differences between a sharded and a single-device step. A constant,
        # unscaled lr lets a few steps on one batch visibly lower the loss.
        "optim": {"name": "sgd", "base_lr": 0.03, "lr_scaling": "none", "schedule": "constant",
                  "momentum": 0.9, "weight_decay": 0.0},
        "eval": {"max_train_examples": 64, "max_test_examples": 32, "probe_epochs": 2,
                 "num_pictures": 4},
        "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
