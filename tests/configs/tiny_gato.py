"""Tiny Gato on digits captions, pydoc text and short CartPole / Pendulum episodes (seconds)."""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({
        "method": "gato", "total_steps": 2, "data": {"name": "digits", "batch_size": 8},
        "gato": {"text_corpus": "pydoc", "row_length": 48, "hidden": 16, "depth": 1,
                 "heads": 2, "episodes": 2, "prompt_steps": 2, "num_rows": 64,
                 "eval_episodes": 2, "eval_text_rows": 8, "eval_images": 8},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none"},
        "eval": {"max_test_examples": 32}, "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False},
    })
