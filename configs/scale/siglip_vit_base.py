"""SigLIP ViT-B/16 with a 12-layer text tower at the published batch (Zhai et al. 2023:
batch 32,768, 224 px, 64 text tokens, sigmoid loss), laid out for TPU slices: fsdp over
every chip, both towers scanned and rematerialised, bfloat16 activations, the sigmoid loss
sharded over the batch (each chip scores its rows against all 32,768 texts).

The text tower reads jaxssl's byte tokens (263 ids) where SigLIP has a 32k SentencePiece
vocabulary: 25M fewer embedding parameters, no change to the Transformer. For ahead-of-time
compiles (`python -m jaxssl.aot`, experiments/scaling/README.md); a real run needs a TFDS
caption dataset (e.g. WebLI's stand-in) prepared in data.data_dir.
"""

import ml_collections

BATCH = 32_768


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.method = "siglip"
    c.total_steps = 100_000
    c.compute_dtype = "bfloat16"
    c.data = dict(name="tfds_captions:coco_captions?image_size=224&length=64",
                  train_split="train", eval_split="val", batch_size=BATCH, image_size=224)
    c.model = dict(name="vit_base", patch=16, pool="map", posemb="learned",
                   scan_blocks=True, remat=True)
    c.siglip = dict(embed_dim=768, text_hidden=768, text_depth=12, text_heads=12,
                    text_length=64, scan_layers=True, remat="full")
    c.optim = dict(name="adamw", base_lr=1e-3, lr_scaling="none", b1=0.9, b2=0.95,
                   weight_decay=1e-4, warmup_steps=5000)
    c.checkpoint = dict(every_steps=5000)
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    return c
