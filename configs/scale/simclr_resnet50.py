"""SimCLR ResNet-50 on ImageNet at the published size (Chen et al. 2020: batch 4096, 224 px,
LARS), laid out for TPU slices: the parameters and the LARS momentum split over 64 chips
('fsdp': every kernel of 1 MiB or more has a dimension divisible by 64, whereas plain data
parallelism would leave all 25.6M parameters whole on every chip; over 256, most kernels
would not divide and stay whole), the batch over every chip ('data' takes the rest),
batch norm over the global batch, bfloat16 activations.

For ahead-of-time compiles (`python -m jaxssl.aot`, experiments/scaling/README.md); a real
run needs ImageNet prepared for TFDS in data.data_dir.
"""

import os

from jaxssl.config import load_config_file

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "simclr_cifar10_resnet18.py")
IMAGENET_TRAIN_IMAGES = 1_281_167
BATCH = 4096
EPOCHS = 100


def get_config(arg=None):
    del arg
    c = load_config_file(BASE)
    steps_per_epoch = IMAGENET_TRAIN_IMAGES // BATCH
    c.total_steps = EPOCHS * steps_per_epoch
    c.compute_dtype = "bfloat16"
    c.data = dict(name="tfds:imagenet2012?image_size=256", train_split="train",
                  eval_split="validation", batch_size=BATCH, image_size=224,
                  eval_crop=224 / 256)  # SimCLR's evaluation: the central 87.5% (CROP_PROPORTION)
    c.model = dict(name="resnet50", cifar_stem=False, width=64)
    c.simclr.temperature = 0.1
    c.simclr.proj_hidden_dims = (2048, 2048)
    # ImageNet's colour strength 1.0 (the CIFAR base has 0.5): jitter 0.8 s, hue 0.2 s
    c.augment.update(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_prob=0.5)
    c.optim.base_lr = 0.3
    c.optim.weight_decay = 1e-6
    c.optim.warmup_steps = 10 * steps_per_epoch
    c.checkpoint = dict(every_steps=5000)
    c.mesh = dict(data=-1, fsdp=64, tensor=1)
    return c
