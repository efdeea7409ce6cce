"""Fine-tuning ViT-H/14 at 448 px on ImageNet (MAE's recipe, He et al. 2022: batch 1024, AdamW,
layer-wise lr decay 0.75, drop path 0.3, 50 epochs; ViT-H at 448 px is their 87.8% top-1),
laid out for TPU slices: fsdp over every chip, 32 scanned and rematerialised blocks over
1024 patch tokens, bfloat16 activations.

For ahead-of-time compiles (`python -m jaxssl.aot`, experiments/scaling/README.md); a real
run needs ImageNet prepared for TFDS in data.data_dir and a pretrained encoder in
finetune.init_from (e.g. configs/scale/mae_vit_huge.py's checkpoint).
"""

import ml_collections

from jaxssl.methods.finetune import FINETUNE_AUGMENT

IMAGENET_TRAIN_IMAGES = 1_281_167
BATCH = 1024
EPOCHS = 50
WARMUP_EPOCHS = 5


def get_config(arg=None):
    del arg
    steps_per_epoch = IMAGENET_TRAIN_IMAGES // BATCH
    c = ml_collections.ConfigDict()
    c.method = "finetune"
    c.total_steps = EPOCHS * steps_per_epoch
    c.compute_dtype = "bfloat16"
    c.data = dict(name="tfds:imagenet2012?image_size=512", train_split="train",
                  eval_split="validation", batch_size=BATCH, image_size=448)
    # data.eval_crop stays 1.0: above 224 px MAE's evaluation takes no margin (crop_pct 1:
    # Resize(448) + CenterCrop(448), the whole 512 square of the source resized to 448)
    c.model = dict(name="vit", hidden=1280, depth=32, heads=16, patch=14, pool="gap",
                   posemb="sincos2d", drop_path=0.3, scan_blocks=True, remat=True)
    c.finetune = dict(num_classes=1000, mode="full", layer_decay=0.75)
    c.augment = FINETUNE_AUGMENT
    c.optim = dict(name="adamw", base_lr=1e-3, lr_scaling="linear", b1=0.9, b2=0.999,
                   weight_decay=0.05, warmup_steps=WARMUP_EPOCHS * steps_per_epoch)
    c.checkpoint = dict(every_steps=5000)
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    return c
