"""SimCLR and MoCo v3 side by side on CIFAR-10 within a small CPU budget.

  python -m jaxssl.main --config=experiments/contrastive/config.py:simclr --workdir=DIR
  python -m jaxssl.main --config=experiments/contrastive/config.py:moco --workdir=DIR

Both methods pretrain the same backbone (ResNet-18 with the CIFAR stem at
width 8 on views downsampled to 16x16 pixels, 1/16 of the FLOPs of width 16
at 32x32, to fit the CPU budget: see README.md) on the same data, batch, step count
and evaluation schedule; each keeps its own published head, loss, temperature
and augmentation, scaled down where the published value assumes a full-size
network or a long schedule:
  - SimCLR: configs/simclr_cifar10_resnet18.py (SimCLR authors' CIFAR-10 recipe:
    colour strength 0.5, no blur, temperature 0.5, LARS 1.0 x batch / 256,
    projector as wide as the features: 64);
  - MoCo v3: solo-learn's CIFAR MoCo v3 recipe (scripts/pretrain/cifar/mocov3.yaml
    with augmentations/asymmetric.yaml: BYOL colours, no blur, solarize 0 / 0.2,
    temperature 0.2, m0 0.99), with ResNet heads (2-layer projector, predictor
    without last BN) 512 wide instead of 4096, LARS 0.3 x batch / 256.
Warm-up is 10% of the steps. kNN (k=20, temperature 0.07) and a 10-epoch
linear probe run every `EVAL_EVERY` steps on the first 10,000 training /
2,000 test images (at 16x16, like the views).
"""

import ml_collections

BATCH = 256
IMAGE_SIZE = 16
STEPS = 195            # 1 epoch
EVAL_EVERY = 39        # 5 points per run, a fifth of an epoch apart

METHOD_SECTIONS = {
    "simclr": dict(
        simclr=dict(temperature=0.5, proj_hidden_dims=(64, 64), proj_dim=128),
        augment=dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, blur_prob=0.0),
        optim=dict(base_lr=1.0, weight_decay=1e-4),
    ),
    "moco": dict(
        moco=dict(temperature=0.2, momentum=0.99, proj_hidden_dims=(512,), proj_dim=256,
                  pred_hidden_dims=(512,), pred_last_bn=False, view_blur_probs=(0.0, 0.0),
                  view_solarize_probs=(0.0, 0.2)),
        augment=dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1),
        optim=dict(base_lr=0.3, weight_decay=1e-6),
    ),
}


def get_config(arg="simclr"):
    if arg not in METHOD_SECTIONS:
        raise ValueError(f"experiments/contrastive/config.py: unknown method {arg!r}; "
                         f"valid: {sorted(METHOD_SECTIONS)}")
    c = ml_collections.ConfigDict()
    c.method = arg
    c.seed = 0
    c.total_steps = STEPS
    c.data = dict(name="cifar10_jpeg", data_dir="cifar10-jpeg", batch_size=BATCH,
                  image_size=IMAGE_SIZE)
    c.model = dict(name="resnet18", cifar_stem=True, width=8)
    sections = METHOD_SECTIONS[arg]
    c[arg] = sections[arg]
    c.augment = sections["augment"]
    c.optim = dict(name="lars", lr_scaling="linear", warmup_steps=STEPS // 10, momentum=0.9,
                   **sections["optim"])
    c.eval = dict(every_steps=EVAL_EVERY, max_train_examples=10_000, max_test_examples=2_000,
                  probe_epochs=10, knn_k=20)
    c.checkpoint = dict(every_steps=STEPS)
    c.log = dict(every_steps=13, tensorboard=False, progress_bar=False)
    return c
