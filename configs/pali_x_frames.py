"""PaLI-X frame questions on MNIST: three frames per example, "which frame shows seven?"
(chance 1/3) and "how many frames show seven?" (chance 1/4), trained on the PaLI mixture of
prefix completion, masked-token completion and question answering (the row split after
the question) of the question + answer rows, rates 0.25 / 0.25 / 0.5.

Each frame enters as one token (pali.pool_images: the ViT's pooled features) from a
ViT pretrained by the 'encoder' stage and kept frozen (pali.freeze_image_encoder, as
PaLI trains; fine-tuned from the start, its features collapsed). Without
--config.pali.init_from.checkpoint the frozen ViT is a random one: give it.

The argument picks the stage: 'encoder' pretrains the ViT with SimCLR on MNIST (handed
to the PaLI runs with --config.pali.init_from.checkpoint=ITS_WORKDIR), or
pali.architecture: 'encoder_decoder' (default; PaLI-X: a bidirectional
encoder reads the three images' ViT tokens and the question, a decoder writes) or
'decoder' (the images and the question are the fully visible prefix of one decoder).
Both have 4 text blocks in all (2 + 2, or 4) of width 64; the encoder-decoder's decoder
blocks also hold cross-attention, so it has more parameters (experiments/generalist/
README.md (PaLI-X section) gives the counts). Frames are drawn anew from every batch of
labelled images (`jaxssl.data.frame_questions`); evaluation draws them from the test
split with a fixed key and reports 'which/accuracy', 'count/accuracy' on
eval.max_test_examples examples each, next to their chance levels.

  JAXSSL_DATA_DIR=/path/to/data python -m jaxssl.main \\
      --config=configs/pali_x_frames.py:encoder --workdir=/tmp/pali_x/encoder
  JAXSSL_DATA_DIR=/path/to/data python -m jaxssl.main \\
      --config=configs/pali_x_frames.py:encoder_decoder --workdir=/tmp/pali_x/encoder_decoder \\
      --config.pali.init_from.checkpoint=/tmp/pali_x/encoder

(data.data_dir 'mnist' is read relative to $JAXSSL_DATA_DIR; the comparison of both
architectures is experiments/generalist/pali_x.py.)
"""

import ml_collections

ARCHITECTURES = ("encoder_decoder", "decoder")
STAGES = ("encoder",) + ARCHITECTURES
VIT = {"name": "vit", "hidden": 64, "depth": 2, "heads": 4, "patch": 7}
LOG = {"every_steps": 50, "tensorboard": False, "progress_bar": False}


def get_config(arg=None):
    stage = arg or "encoder_decoder"
    if stage not in STAGES:
        raise ValueError(f"argument must be one of {STAGES}, got {arg!r}")
    if stage == "encoder":
        return ml_collections.ConfigDict({
            "method": "simclr", "total_steps": 400,
            "data": {"name": "mnist", "data_dir": "mnist", "batch_size": 128},
            "model": VIT,
            "simclr": {"temperature": 0.2, "proj_hidden_dims": (128,), "proj_dim": 64},
            "augment": {"crop_scale": (0.5, 1.0), "flip_prob": 0.0, "jitter_prob": 0.0,
                        "grayscale_prob": 0.0, "blur_prob": 0.0, "solarize_prob": 0.0},
            "optim": {"name": "adamw", "base_lr": 2e-3, "lr_scaling": "none",
                      "warmup_steps": 40},
            "eval": {"max_train_examples": 5000, "max_test_examples": 1000},
            "log": LOG})
    architecture = stage
    depth = {"encoder_decoder": 2, "decoder": 4}[architecture]
    return ml_collections.ConfigDict({
        "method": "pali",
        "total_steps": 5000,
        "data": {"name": "mnist", "data_dir": "mnist", "batch_size": 64},
        "model": VIT,
        "pali": {"architecture": architecture, "text_hidden": 64, "text_depth": depth,
                 "decoder_depth": 2, "text_heads": 4, "num_images": 3,
                 "frame_tasks": ("which", "count"), "pool_images": True,
                 "freeze_image_encoder": True, "objective_rates": (0.25, 0.25, 0.5)},
        "optim": {"name": "adamw", "base_lr": 2e-3, "lr_scaling": "none", "warmup_steps": 100,
                  "end_lr_ratio": 0.1, "weight_decay": 0.05, "clip_grad_norm": 1.0},
        "eval": {"batch_size": 250, "max_test_examples": 1000, "every_steps": 1000},
        "log": LOG,
    })
