"""nanoGPT's "baby GPT" on character-level tiny Shakespeare, the CPU setting of its README.

4 layers, 4 heads, width 128, context 64, batch 12, 2000 iterations, AdamW
(lr 1e-3, 100 warm-up steps, cosine decay to 1e-4, beta2 0.99, weight decay
0.1, gradient clipping 1.0, nanoGPT's defaults), no dropout, tied embeddings.
Data: $JAXSSL_DATA_DIR/tiny-shakespeare/input.txt, first 90% of the
characters for training (random windows of 65), last 10% for validation
(consecutive windows; the loss covers every character of the split once).
The vocabulary is the corpus' 65 characters (declared: chars=65, so ahead-of-time
compiles need no data) plus jaxssl's 7 special ids.

  python -m jaxssl.main --config=configs/nanogpt_baby_shakespeare.py --workdir=/tmp/lm_runs/baby \\
      --config.data.data_dir=$JAXSSL_DATA_DIR/tiny-shakespeare

Published (nanoGPT README, CPU): validation loss 1.88. Measured here
(2026-12-06, commit a4546b8, 2-core x86-64 CPU, nothing else running):
validation loss 1.849 over the whole last 10%, 46 s for the whole command
(experiments/language/README.md, logs/baby_gpt/).
"""

import ml_collections

from jaxssl.data.text import text_dataset_name


def nanogpt_config(layers: int, heads: int, width: int, context: int, batch: int, steps: int,
                   dropout: float, warmup: int = 100) -> ml_collections.ConfigDict:
    """The char-level nanoGPT recipe at the given size (shared with the 6-layer config)."""
    return ml_collections.ConfigDict({
        "method": "lm",
        "total_steps": steps,
        "data": {"name": text_dataset_name("tiny_shakespeare", tokenizer="char", chars=65,
                                           length=context + 1, sentinels=0),
                 "train_split": "train", "eval_split": "validation", "batch_size": batch,
                 # The windows are cut from an in-memory array: reading them in the main
                 # thread beats grain's reader threads (experiments/language/README.md).
                 "read_threads": 0, "prefetch_batches": 2},
        "lm": {"architecture": "decoder", "objective": "causal", "hidden": width,
               "depth": layers, "heads": heads, "mlp_ratio": 4.0, "dropout": dropout,
               "attention_dropout": dropout,
               "posemb": "learned", "tied_embeddings": True},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none", "schedule": "cosine",
                  "warmup_steps": warmup, "end_lr_ratio": 0.1, "b1": 0.9, "b2": 0.99,
                  "weight_decay": 0.1, "clip_grad_norm": 1.0},
        "eval": {"batch_size": 512, "max_test_examples": 0},
        "checkpoint": {"every_steps": 0},
        "log": {"every_steps": 100, "tensorboard": False, "progress_bar": False},
    })


def get_config(arg=None):
    del arg
    config = nanogpt_config(layers=4, heads=4, width=128, context=64, batch=12, steps=2000,
                            dropout=0.0)
    # The step's XLA scratch fits a thread's malloc arena (experiments/benchmarks/README.md).
    config.malloc_arenas = "per_thread"
    return config
