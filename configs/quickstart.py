"""Quickstart: SimCLR on the embedded scikit-learn digits, then kNN and linear probe.

Command (the README's main job):

  python -m jaxssl.main --config=configs/quickstart.py --workdir=/tmp/jaxssl_quickstart

Pretrains a small ResNet-18 (CIFAR stem, 16 base filters) with SimCLR on the
1,438 training digits (8x8 grey, no labels used), then reports test-split
(359 digits) kNN and linear-probe top-1 of the pretrained encoder next to
the same encoder at initialisation. Expected result (measured 2026-12-06,
commit a4546b8, on the 2-core development CPU with nothing else running:
47 s wall-clock; log in experiments/quickstart/):

  encoder        knn_top1   linear_probe_top1
  pretrained       94.43%              96.94%
  random init      15.88%              18.94%
"""

import ml_collections


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.method = "simclr"
    c.seed = 0
    c.total_steps = 300
    # The step's XLA scratch fits a thread's malloc arena (experiments/benchmarks/README.md).
    c.malloc_arenas = "per_thread"
    c.data = dict(name="digits", batch_size=256)
    c.model = dict(name="resnet18", cifar_stem=True, width=16)
    c.simclr = dict(temperature=0.2, proj_hidden_dims=(256,), proj_dim=64)
    # Digits are tiny and have no colour and no left-right symmetry.
    c.augment = dict(crop_scale=(0.4, 1.0), flip_prob=0.0, brightness=0.4, contrast=0.4,
                     saturation=0.0, hue=0.0, jitter_prob=0.8, grayscale_prob=0.0,
                     blur_prob=0.0, solarize_prob=0.0)
    c.optim = dict(name="lars", base_lr=1.0, warmup_steps=40, weight_decay=1e-6)
    c.eval = dict(knn_k=20, knn_temperature=0.07, compare_random_init=True)
    c.checkpoint = dict(every_steps=100)
    c.log = dict(every_steps=20)
    return c
