"""PaLI-style pretraining at scale: a ViT-L/14 image encoder (224 px: 256 image tokens) as the
prefix of a 3B decoder-only text model (d_model 2560, 36 layers, 32 heads: about 2.9B
parameters with its 32k embedding), batch 4096 captions of 64 tokens, trained on the
prefix-completion + masked-token-completion mixture (jaxssl/methods/pali.py). Laid out for
TPU slices: fsdp over every chip, the ViT's blocks and the decoder's scanned and
rematerialised, bfloat16 activations. The decoder's blocks have no biases, as in the
T5.1.1 / UL2 models PaLI's language side comes from; with biases, the stacked qkv bias
[36, 3, 32, 80] (1 MiB) would stay whole on every chip, since none of its dimensions
divides an fsdp of 64 or 256.

The vocabulary is the byte tokenizer's 263 ids plus sentinel ids up to 32,128 (T5's; PaLI
itself uses mT5's 250k). For ahead-of-time compiles (`python -m jaxssl.aot`,
experiments/scaling/README.md); a real run needs a TFDS caption dataset in data.data_dir.
"""

import ml_collections

from jaxssl.data.tokenizers import ByteTokenizer

VOCAB = 32_128


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.method = "pali"
    c.total_steps = 200_000
    c.compute_dtype = "bfloat16"
    c.data = dict(name="tfds_captions:coco_captions?image_size=224&length=64",
                  train_split="train", eval_split="val", batch_size=4096, image_size=224)
    c.model = dict(name="vit_large", patch=14, pool="map", posemb="learned",
                   scan_blocks=True, remat=True)
    c.pali = dict(text_hidden=2560, text_depth=36, text_heads=32,
                  num_sentinels=VOCAB - ByteTokenizer(0).vocab_size,
                  scan_layers=True, remat="full", text_use_bias=False)
    c.optim = dict(name="adamw", base_lr=1e-4, lr_scaling="none", b1=0.9, b2=0.999,
                   weight_decay=1e-4, warmup_steps=10_000, clip_grad_norm=1.0)
    c.checkpoint = dict(every_steps=5000)
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    return c
