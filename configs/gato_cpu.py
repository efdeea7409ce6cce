"""Gato on a CPU: one 2-layer decoder (width 128) on tiny Shakespeare, MNIST captions,
CartPole-v1 and Pendulum-v1 expert episodes (weights 0.5, 0.1, 0.35, 0.05), 900 steps.

Rows of 128 tokens, batch 32, AdamW (lr 1e-3, 100 warm-up steps, cosine to 1e-4).
MNIST images enter as 16 patch embeddings of 7 x 7 pixels; captions are the class
word + EOS. Control: 50 scripted expert episodes per task (made when the run starts),
each example prompted with the last 4 timesteps of another expert episode.
Data: $JAXSSL_DATA_DIR/mnist and $JAXSSL_DATA_DIR/tiny-shakespeare/input.txt.

  JAXSSL_DATA_DIR=... python -m jaxssl.main --config=configs/gato_cpu.py --workdir=/tmp/gato

The experiment with its single-task baselines, numbers and plot (and why these weights
and steps): experiments/generalist/README.md (python -m experiments.generalist.gato).
"""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({
        "method": "gato",
        "total_steps": 900,
        "data": {"name": "mnist", "data_dir": "mnist", "train_split": "train",
                 "eval_split": "test", "batch_size": 32, "read_threads": 0,
                 "prefetch_batches": 2},
        "gato": {"weights": (0.5, 0.1, 0.35, 0.05), "patch": 7, "row_length": 128,
                 "hidden": 128, "depth": 2, "heads": 4, "episodes": 50, "prompt_steps": 4,
                 "eval_episodes": 10, "eval_text_rows": 256, "eval_images": 500},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none", "schedule": "cosine",
                  "warmup_steps": 100, "end_lr_ratio": 0.1, "b1": 0.9, "b2": 0.99,
                  "weight_decay": 0.1, "clip_grad_norm": 1.0},
        "eval": {"every_steps": 0},
        "checkpoint": {"every_steps": 0},
        "log": {"every_steps": 50, "tensorboard": False, "progress_bar": False},
    })
