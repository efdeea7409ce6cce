"""Fine-tune public MAE ViT-B/16 weights (Hugging Face facebook/vit-mae-base) on CIFAR-10
with LP-FT and WiSE-FT.

Command (ARG: the checkpoint, 'hf:DIR' by default; see README "Public checkpoints"):

  python -m jaxssl.main --config=configs/finetune_public_mae_vit_base.py:hf:/weights/vit-mae-base \\
      --workdir=/tmp/ft_runs/mae_vit_base_cifar10

The model keys are those of the checkpoint, which jaxssl.interop checks
before anything is written: ViT-B/16, class token, fixed sin-cos position
embedding (MAE), layer norm epsilon 1e-12 (Hugging Face). CIFAR-10 images
(cifar10_jpeg in $JAXSSL_DATA_DIR/cifar10-jpeg) are resized to 224 x 224.
The decoder is skipped; the pixel normalisation of preprocessor_config.json
is folded into the patch projection. LP-FT: 500 steps of linear probing
(encoder frozen), then full fine-tuning with layer-wise lr decay 0.65;
WiSE-FT mixes at a = 0.25, 0.5, 0.75 are evaluated at the end.
"""

import ml_collections

from jaxssl.methods.finetune import FINETUNE_AUGMENT


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.method = "finetune"
    c.seed = 0
    c.total_steps = 5000
    c.data = dict(name="cifar10_jpeg", data_dir="cifar10-jpeg", batch_size=256, image_size=224)
    c.model = dict(name="vit_base", patch=16, pool="cls", posemb="sincos2d",
                   layer_norm_epsilon=1e-12, drop_path=0.1)
    c.finetune = dict(num_classes=10, init_from=dict(checkpoint=arg or "hf:vit-mae-base"),
                      mode="lp_ft", lp_steps=500, layer_decay=0.65,
                      wise_alphas=(0.25, 0.5, 0.75))
    c.augment = FINETUNE_AUGMENT
    c.optim = dict(name="adamw", base_lr=5e-4, lr_scaling="linear", b1=0.9, b2=0.999,
                   weight_decay=0.05, warmup_steps=250)
    c.compute_dtype = "bfloat16"
    c.eval = dict(batch_size=500)
    c.checkpoint = dict(every_steps=1000)
    c.log = dict(every_steps=50, tensorboard=False, progress_bar=False)
    return c
