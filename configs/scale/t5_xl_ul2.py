"""A T5.1.1-XL-sized (3B) encoder-decoder trained with the UL2 mixture of denoisers (Tay et
al. 2022; T5.1.1-XL: d_model 2048, 24 + 24 layers, 32 heads, d_ff 5120 gated, 32,128-token
vocabulary, untied embeddings), 2048 rows of 512 tokens per batch, laid out for TPU
slices: fsdp over every chip, both stacks scanned and fully rematerialised, bfloat16
activations; no biases in the blocks, as T5.1.1.

Shape-equivalent, not T5 itself: jaxssl's MLP is ungated, so d_ff is 7680 (two
2048 x 7680 kernels hold the parameters and FLOPs of T5's three 2048 x 5120 ones); rotary
positions stand in for T5's relative-position bias (a few thousand parameters); the
vocabulary is the byte tokenizer's 263 ids plus sentinel ids up to T5's 32,128. About
2.9B parameters. For ahead-of-time compiles (`python -m jaxssl.aot`,
experiments/scaling/README.md); a real run needs C4 prepared for TFDS in data.data_dir
and a 32k SentencePiece model (data tokenizer='spm:PATH').
"""

import ml_collections

from jaxssl.data.text import text_dataset_name
from jaxssl.data.tokenizers import ByteTokenizer

T5_VOCAB = 32_128


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.method = "lm"
    c.total_steps = 1_000_000
    c.compute_dtype = "bfloat16"
    sentinels = T5_VOCAB - ByteTokenizer(0).vocab_size
    c.data = dict(name=text_dataset_name("c4/en:3.1.0", from_tfds=True, length=512,
                                         rows="packed", sentinels=sentinels),
                  train_split="train", eval_split="validation", batch_size=2048)
    c.lm = dict(architecture="encoder_decoder", objective="ul2", hidden=2048, depth=24,
                decoder_depth=24, heads=32, mlp_ratio=3.75, posemb="rotary",
                tied_embeddings=False, ul2_rates=(0.5, 0.25, 0.25), per_example_mixture=True,
                scan_layers=True, remat="full", use_bias=False)
    c.optim = dict(name="adamw", base_lr=1e-3, lr_scaling="none", b1=0.9, b2=0.99,
                   weight_decay=0.0, warmup_steps=10_000, clip_grad_norm=1.0)
    c.checkpoint = dict(every_steps=5000)
    c.mesh = dict(data=1, fsdp=-1, tensor=1)
    return c
