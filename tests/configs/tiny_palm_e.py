"""Tiny PaLM-E (ViT + byte-level decoder) on digit scenes (seconds on a CPU); the argument
'objects' reads them object by object (observe=objects), else the whole canvas."""

import ml_collections


def get_config(arg=None):
    observe = "objects" if arg == "objects" else "image"
    return ml_collections.ConfigDict({
        "method": "palm_e", "total_steps": 2,
        "data": {"name": f"scenes:digits?length=64&image_tokens=16&observe={observe}"
                         "&train_size=64&eval_size=32",
                 "batch_size": 8},
        "model": {"name": "vit", "hidden": 16, "depth": 1, "heads": 2, "patch": 8},
        "palm_e": {"text_data": "text:pydoc?length=65&rows=packed&sentinels=0",
                   "lm": {"hidden": 16, "depth": 1, "heads": 2}, "state_hidden": 8},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none"},
        "eval": {"batch_size": 16, "max_test_examples": 32},
        "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
