"""PaLM-E on MNIST digit scenes, and the runs it is built from, sized for a shared 2-core CPU.

Stages (the ARG): 'lm' pretrains the byte-level text LM on Python's pydoc text,
'encoder' pretrains the image encoder (a ViT whose one patch is one 14 px digit)
with SimCLR on MNIST, then PaLM-E reads scenes of 2-4 MNIST digits on a 4 x 4 grid
of 14 px cells ('scenes:mnist', jaxssl/data/scenes.py) and writes the answer.
Object-centric input (observe=objects, PaLM-E's object-centric variant): each
object is one image token (its 14 px digit through the frozen ViT, pooled,
projected) followed by its state vector's token, then the question:

  'frozen'  the LM frozen: the image projection and the state encoder train;
  'full'    the LM fine-tuned too;
  'mixed'   as 'full', with a tenth of the training rows the LM's own pydoc text
            (palm_e.text_mix=0.1: PaLM-E's mixture, to keep the LM's language);
  'canvas'  full fine-tuning reading the whole 56 px canvas as 16 ViT tokens (one
            per cell) and then the objects' state tokens, the ViT trained too;
  'text'    the text-only baseline: the same LM fine-tuned on the same scenes with
            the state written as digits in the prompt and no image.

PaLM-E's stages name the two pretrained workdirs (--config.palm_e.init_from.checkpoint
and --config.palm_e.lm_init_from.checkpoint); experiments/generalist/palm_e.py runs
all of them in order (JAXSSL_DATA_DIR: the folder holding mnist/):

  python -m experiments.generalist.palm_e --runs=/tmp/palm_e_runs

One stage by hand, e.g.:

  python -m jaxssl.main --config=configs/palm_e_scenes.py:frozen --workdir=/tmp/palm_e_frozen \\
      --config.palm_e.init_from.checkpoint=/tmp/palm_e_runs/encoder \\
      --config.palm_e.lm_init_from.checkpoint=/tmp/palm_e_runs/lm

Results: experiments/generalist/README.md.
"""

import ml_collections

from jaxssl.data.scenes import scenes_dataset_name
from jaxssl.data.text import text_dataset_name

STAGES = ("lm", "encoder", "frozen", "full", "mixed", "canvas", "text")
TEXT_DATA = text_dataset_name("pydoc", rows="packed", length=81, sentinels=0)
LM = {"architecture": "decoder", "objective": "causal", "hidden": 128, "depth": 2, "heads": 4,
      "posemb": "rotary"}
# One patch per 14 px cell (MNIST resized to 14 px): a digit is one token.
VIT = {"name": "vit", "hidden": 64, "depth": 2, "heads": 4, "patch": 14, "posemb": "sincos2d",
       "pool": "gap"}
LOG = {"every_steps": 25, "tensorboard": False, "progress_bar": False}


def get_config(arg=None):
    stage = arg or "frozen"
    if stage not in STAGES:
        raise ValueError(f"configs/palm_e_scenes.py:ARG must be one of {STAGES}, got {arg!r}")
    if stage == "lm":
        return ml_collections.ConfigDict({
            "method": "lm", "total_steps": 500,
            "data": {"name": TEXT_DATA, "train_split": "train", "eval_split": "validation",
                     "batch_size": 16},
            "lm": LM,
            "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none",
                      "warmup_steps": 50, "end_lr_ratio": 0.1, "b2": 0.99,
                      "weight_decay": 0.1, "clip_grad_norm": 1.0},
            "eval": {"batch_size": 128, "max_test_examples": 0},
            "log": LOG})
    if stage == "encoder":
        return ml_collections.ConfigDict({
            "method": "simclr", "total_steps": 300,
            "data": {"name": "mnist", "data_dir": "mnist", "batch_size": 128, "image_size": 14},
            "model": VIT,
            "simclr": {"temperature": 0.2, "proj_hidden_dims": (128,), "proj_dim": 64},
            "augment": {"crop_scale": (0.5, 1.0), "flip_prob": 0.0, "jitter_prob": 0.0,
                        "grayscale_prob": 0.0, "blur_prob": 0.0, "solarize_prob": 0.0},
            "optim": {"name": "adamw", "base_lr": 2e-3, "lr_scaling": "none",
                      "warmup_steps": 30},
            "eval": {"max_train_examples": 5000, "max_test_examples": 1000},
            "log": LOG})
    observe = {"text": "text", "canvas": "image"}.get(stage, "objects")
    return ml_collections.ConfigDict({
        "method": "palm_e", "total_steps": 6000,
        "data": {"name": scenes_dataset_name("mnist", cell=14, length=80, image_tokens=16,
                                             observe=observe, train_size=20000, eval_size=500),
                 "data_dir": "mnist", "batch_size": 32},
        "model": VIT,
        "palm_e": {"text_data": TEXT_DATA, "lm": LM, "state_hidden": 64,
                   "freeze_lm": stage == "frozen",
                   "freeze_image_encoder": stage not in ("canvas", "text"),
                   "text_mix": 0.1 if stage == "mixed" else 0.0},
        "optim": {"name": "adamw", "base_lr": 2e-3, "lr_scaling": "none", "warmup_steps": 100,
                  "end_lr_ratio": 0.1, "weight_decay": 0.01, "clip_grad_norm": 1.0},
        "eval": {"batch_size": 100, "max_test_examples": 500, "every_steps": 1000},
        "log": LOG})
