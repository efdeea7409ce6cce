"""MAE ViT-H/14 on ImageNet at the published size (He et al. 2022: batch 4096, 224 px, 256
patches of 14 x 14 px), laid out for TPU slices as configs/scale/mae_vit_large.py: fsdp over
every chip, scanned and rematerialised encoder blocks, bfloat16 activations.

For ahead-of-time compiles (`python -m jaxssl.aot`, experiments/scaling/README.md); a real
run needs ImageNet prepared for TFDS in data.data_dir.
"""

import os

from jaxssl.config import load_config_file

LARGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mae_vit_large.py")


def get_config(arg=None):
    del arg
    c = load_config_file(LARGE)
    c.model.update(name="vit", hidden=1280, depth=32, heads=16, patch=14)
    return c
