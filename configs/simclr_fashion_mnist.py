"""SimCLR on Fashion-MNIST from $JAXSSL_DATA_DIR/fashion-mnist, sized for a 2-core CPU.

Command (JAXSSL_DATA_DIR: the folder holding fashion-mnist/):

  python -m jaxssl.main --config=configs/simclr_fashion_mnist.py \\
      --workdir=/tmp/simclr_fmnist

ResNet-18 with the CIFAR stem and 16 base filters on 20x20 random crops,
batch 256, 400 steps (1.7 epochs), LARS. kNN (k=20, T=0.07) and linear probe on 10,000 training /
2,000 test images every 100 steps. Not rerun on the current code (about an hour of a 2-core CPU); see
experiments/simclr/README.md.
"""

import ml_collections


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.method = "simclr"
    c.total_steps = 400
    c.data = dict(name="fashion_mnist", data_dir="fashion-mnist", batch_size=256,
                  image_size=20)
    c.model = dict(name="resnet18", cifar_stem=True, width=16)
    c.simclr = dict(temperature=0.2, proj_hidden_dims=(512,), proj_dim=128)
    c.augment = dict(crop_scale=(0.2, 1.0), flip_prob=0.5, brightness=0.4, contrast=0.4,
                     saturation=0.0, hue=0.0, jitter_prob=0.8, grayscale_prob=0.0,
                     blur_prob=0.0, solarize_prob=0.0)
    c.optim = dict(name="lars", base_lr=1.0, warmup_steps=40, weight_decay=1e-6)
    c.eval = dict(every_steps=100, max_train_examples=10000, max_test_examples=2000,
                  compare_random_init=True)
    c.checkpoint = dict(every_steps=100)
    c.log = dict(every_steps=10, progress_bar=False)
    return c
