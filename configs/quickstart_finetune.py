"""Quickstart, part 2: fine-tune the quickstart's SimCLR encoder with 10% of the digit labels.

Command (pretrains with configs/quickstart.py, fine-tunes, trains the same
network from scratch on the same labels, evaluates both):

  python -m jaxssl.pipeline_run --pretrain_config=configs/quickstart.py \\
      --finetune_config=configs/quickstart_finetune.py --workdir=/tmp/jaxssl_quickstart_ft \\
      --scratch.optim.base_lr=0.1

The ResNet-18 (CIFAR stem, 16 base filters) of configs/quickstart.py gets a
linear head and is fine-tuned end to end on a class-balanced 10% of the
1,438 training digits (143 labelled images), with random crops, SGD at
learning rate 0.01 for 150 steps of 48; the same network from
initialisation gets learning rate 0.1 (the best of 0.01 / 0.05 / 0.1 for it;
0.01 is the best of 0.01 / 0.05 for fine-tuning; both re-checked on
2026-12-06 with commit a4546b8). The test split (359 digits) gives
top-1 / top-5, the WiSE-FT blend at a = 0.5 and per-class accuracy;
DIR/results.md puts the two runs side by side. Measured 2026-12-06:
fine-tuned 94.71% vs scratch 90.81% top-1; runtime, hardware and logs:
experiments/finetune/README.md.

Alone (from any pretraining workdir, or from scratch without the argument):

  python -m jaxssl.main --config=configs/quickstart_finetune.py:/tmp/jaxssl_quickstart \\
      --workdir=/tmp/jaxssl_quickstart_finetune
"""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.method = "finetune"
    c.seed = 0
    c.total_steps = 150
    # The step's XLA scratch fits a thread's malloc arena (experiments/benchmarks/README.md).
    c.malloc_arenas = "per_thread"
    c.data = dict(name="digits", batch_size=48)
    c.model = dict(name="resnet18", cifar_stem=True, width=16)
    c.finetune = dict(num_classes=10, init_from=dict(checkpoint=arg or ""), label_fraction=0.1,
                      wise_alphas=(0.5,))
    # Digits have no left-right symmetry: crops only.
    c.augment = dict(crop_scale=(0.5, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0,
                     blur_prob=0.0, solarize_prob=0.0)
    c.optim = dict(name="sgd", base_lr=0.01, lr_scaling="none", momentum=0.9, warmup_steps=10,
                   weight_decay=5e-4)
    c.checkpoint = dict(every_steps=0)
    c.log = dict(every_steps=25)
    return c
