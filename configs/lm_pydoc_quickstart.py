"""Text quickstart without any download: a small byte-level GPT on Python's own docs.

The corpus is `pydoc_data.topics` (79 documents, about 465k characters, shipped
with Python), packed into rows of 129 bytes with segment ids so attention never
crosses documents; first 90% train, last 10% validation.

  python -m jaxssl.main --config=configs/lm_pydoc_quickstart.py --workdir=/tmp/lm_runs/pydoc
  python -m jaxssl.sample --workdir=/tmp/lm_runs/pydoc --prompt="The " --temperature=0.8

Measured 2026-12-06 (commit 6fc5280, 2-core CPU, nothing else running):
validation loss 1.434 nats/byte (2.07 bits per character), 38 s wall
(experiments/language/README.md, logs/pydoc/).
"""

import ml_collections

from jaxssl.data.text import text_dataset_name


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({
        "method": "lm",
        "total_steps": 500,
        "data": {"name": text_dataset_name("pydoc", rows="packed", length=129, sentinels=0),
                 "train_split": "train", "eval_split": "validation", "batch_size": 16},
        "lm": {"architecture": "decoder", "objective": "causal", "hidden": 128, "depth": 4,
               "heads": 4, "posemb": "rotary"},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none", "warmup_steps": 50,
                  "end_lr_ratio": 0.1, "b2": 0.99, "weight_decay": 0.1, "clip_grad_norm": 1.0},
        "eval": {"batch_size": 256, "max_test_examples": 0},
        "log": {"every_steps": 50, "tensorboard": False, "progress_bar": False},
    })
