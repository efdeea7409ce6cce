"""PaLI-X-style image+text pretraining on scikit-learn's 8x8 digits with SYNTHETIC captions.

Each image is captioned from its label ('a picture of the digit seven'); a
small ViT's patch tokens are the fully visible prefix of a byte-level text
decoder trained on a 50/50 mixture of prefix completion and masked-token
completion (see jaxssl/methods/pali.py). The per-objective losses
('prefix/loss', 'masked/loss') fall only as far as the ViT learns to tell
the digits apart, since the class name is the only information in a caption.
For real captions, point data.name at a TFDS caption dataset prepared in
data.data_dir, e.g. --config.data.name='tfds_captions:coco_captions?image_size=64&length=64'
(each record's own caption replaces the class-name caption; see jaxssl/methods/pali.py).

  python -m jaxssl.main --config=configs/lm_pali_digits.py --workdir=/tmp/lm_runs/pali

Measured 2026-12-06 (commit a4546b8, 2-core CPU, nothing else running):
prefix/masked losses fall from 3.9/3.7 to 0.19/0.11; validation loss 0.165;
17 s wall (experiments/language/README.md, logs/pali/).
"""

import ml_collections


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({
        "method": "pali",
        "total_steps": 300,
        # The step's XLA scratch fits a thread's malloc arena (experiments/benchmarks/README.md).
        "malloc_arenas": "per_thread",
        "data": {"name": "digits", "batch_size": 32},
        "model": {"name": "vit", "hidden": 64, "depth": 2, "heads": 4, "patch": 2},
        "pali": {"text_hidden": 64, "text_depth": 2, "text_heads": 4},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none", "warmup_steps": 20,
                  "end_lr_ratio": 0.1, "weight_decay": 0.1, "clip_grad_norm": 1.0},
        "eval": {"batch_size": 256},
        "log": {"every_steps": 10, "tensorboard": False, "progress_bar": False},
    })
