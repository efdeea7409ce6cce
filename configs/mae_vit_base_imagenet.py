"""MAE ViT-Base/16 pre-training on ImageNet-1k: the paper's recipe.

He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners"
(arXiv:2111.06377), Appendix A.1 "ImageNet Experiments", Table 8
(pre-training setting): AdamW with betas (0.9, 0.95), base learning rate
1.5e-4 scaled as lr = base_lr x batch / 256, weight decay 0.05, batch 4096,
cosine decay after 40 warm-up epochs, RandomResizedCrop (scale 0.2-1 in the
reference code) + horizontal flip. Table 1 defaults: mask ratio 75%,
normalised-pixel targets, decoder of 8 blocks of width 512 (16 heads in the
reference code), 800 pre-training epochs (the final models use 1600). The
encoder has a class token and fixed 2-D sin-cos position embeddings.

Config values, one per line (tests/test_mae.py checks each against the config):

  model.name = 'vit_base'
  model.patch = 16
  model.pool = 'cls'
  model.posemb = 'sincos2d'
  data.name = 'tfds:imagenet2012?image_size=256'
  data.image_size = 224
  data.batch_size = 4096
  optim.name = 'adamw'
  optim.base_lr = 1.5e-4
  optim.lr_scaling = 'linear'
  optim.weight_decay = 0.05
  optim.b1 = 0.9
  optim.b2 = 0.95
  optim.schedule = 'cosine'
  optim.warmup_steps = 12480
  total_steps = 249600
  mae.mask_ratio = 0.75
  mae.norm_pix = True
  mae.decoder_hidden = 512
  mae.decoder_depth = 8
  mae.decoder_heads = 16
  augment.crop_scale = (0.2, 1.0)
  augment.flip_prob = 0.5

Images: ImageNet's images differ in size, so the source resizes each on the
host to 256 x 256 (shorter side to 256, bilinear, then the central crop; the
'?image_size=256' of data.name, see jaxssl.data.tfds_images.TfdsSource), and the
device-side RandomResizedCrop then takes its 224 x 224 crops from those (bilinear;
the reference resamples bicubically). Evaluation views are the central 224 x 224 of
those 256 x 256 images (data.eval_crop = 224 / 256), as the reference's Resize(256) +
CenterCrop(224).

Steps: ImageNet-1k has 1,281,167 training images; at batch 4096 an epoch is
floor(1,281,167 / 4096) = 312 steps (the reference drops the last partial
batch), so 40 warm-up epochs = 12,480 steps and 800 epochs = 249,600 steps.
Peak learning rate 1.5e-4 x 4096 / 256 = 2.4e-3.

Command (ImageNet prepared by TFDS as array_record in DIR):

  python -m jaxssl.main --config=configs/mae_vit_base_imagenet.py \\
      --workdir=WORKDIR --config.data.data_dir=DIR

Expected result: not measured with this code (it needs a large accelerator
pod for days). The paper reports 83.6% top-1 for ViT-B after fine-tuning
(1600-epoch pre-training, Table 3).
"""

import ml_collections

from jaxssl.methods.mae import LIGHT_AUGMENT

IMAGENET_TRAIN_IMAGES = 1_281_167
BATCH_SIZE = 4096
WARMUP_EPOCHS = 40
EPOCHS = 800


def get_config(arg=None):
    del arg
    steps_per_epoch = IMAGENET_TRAIN_IMAGES // BATCH_SIZE
    c = ml_collections.ConfigDict()
    c.method = "mae"
    c.total_steps = EPOCHS * steps_per_epoch
    c.compute_dtype = "bfloat16"  # activations; parameters and optimizer state stay float32
    c.data = dict(name="tfds:imagenet2012?image_size=256", train_split="train",
                  eval_split="validation", batch_size=BATCH_SIZE, image_size=224,
                  eval_crop=224 / 256)   # main_linprobe/main_finetune: Resize 256, CenterCrop 224
    c.model = dict(name="vit_base", patch=16, pool="cls", posemb="sincos2d")
    c.mae = dict(mask_ratio=0.75, norm_pix=True, decoder_hidden=512, decoder_depth=8,
                 decoder_heads=16)
    c.augment = LIGHT_AUGMENT
    c.optim = dict(name="adamw", base_lr=1.5e-4, lr_scaling="linear", b1=0.9, b2=0.95,
                   weight_decay=0.05, schedule="cosine",
                   warmup_steps=WARMUP_EPOCHS * steps_per_epoch)
    # A cheap end-of-run sanity check, not the paper's linear-probing protocol.
    c.eval = dict(max_train_examples=50_000, max_test_examples=10_000)
    c.checkpoint = dict(every_steps=5000)
    c.log = dict(every_steps=100)
    return c
