"""MAE ViT-L/16 on ImageNet at the published size (He et al. 2022: batch 4096, 224 px), laid
out for TPU slices: fully sharded (fsdp over every chip), blocks scanned (one compiled
block, parameters stacked on a 'layers' axis) and rematerialised, bfloat16 activations.

For ahead-of-time compiles (`python -m jaxssl.aot`, experiments/scaling/README.md); a real
run needs ImageNet prepared for TFDS in data.data_dir.
"""

import os

from jaxssl.config import load_config_file

BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "mae_vit_base_imagenet.py")


def get_config(arg=None):
    del arg
    c = load_config_file(BASE)
    c.model.name = "vit_large"
    c.model.scan_blocks = True
    c.model.remat = True
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    return c
