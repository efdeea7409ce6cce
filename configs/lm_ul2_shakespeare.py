"""UL2 mixture of denoisers on character-level tiny Shakespeare, encoder-decoder.

Denoisers (Tay et al., 2022, as in issue 5): R = span corruption (rate 0.15,
mean span 3) with [NLU]; X = (0.5, 3) and (0.15, 32) with [NLG]; S = prefix-LM
with [S2S]; sampled per example with rates S 50%, R 25%, X 25%. Rows are
random 65-character windows of the first 90% of the text; evaluation is the
same mixture (fixed key) over the last 10%. Metrics log each denoiser's loss
('R/loss', 'X/loss', 'S/loss') and token count.

  python -m jaxssl.main --config=configs/lm_ul2_shakespeare.py --workdir=/tmp/lm_runs/ul2 \\
      --config.data.data_dir=$JAXSSL_DATA_DIR/tiny-shakespeare

Measured 2026-12-06 (commit 6fc5280, 2-core CPU, nothing else running):
per-denoiser losses fall from about 3.4-3.6 to R 2.40, X 2.60, S 2.47;
validation loss 2.52; 46 s wall (experiments/language/README.md, logs/ul2/).
"""

import ml_collections

from jaxssl.data.text import text_dataset_name


def get_config(arg=None):
    del arg
    return ml_collections.ConfigDict({
        "method": "lm",
        "total_steps": 600,
        "data": {"name": text_dataset_name("tiny_shakespeare", tokenizer="char", chars=65,
                                           length=65, sentinels=64),
                 "train_split": "train", "eval_split": "validation", "batch_size": 16},
        "lm": {"architecture": "encoder_decoder", "objective": "ul2", "hidden": 128,
               "depth": 2, "decoder_depth": 2, "heads": 4, "ul2_rates": (0.5, 0.25, 0.25),
               "per_example_mixture": True},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none", "warmup_steps": 50,
                  "end_lr_ratio": 0.1, "b2": 0.99, "weight_decay": 0.1, "clip_grad_norm": 1.0},
        "eval": {"batch_size": 512, "max_test_examples": 0},
        "log": {"every_steps": 10, "tensorboard": False, "progress_bar": False},
    })
