"""A decoder-only 8B prefix-LM on packed 2,048-token sequences (Llama-3-8B-sized: d_model
4096, 32 layers, 32 heads, 128,256-token vocabulary, untied embeddings; 2048 sequences =
4M tokens per batch), laid out for TPU slices: fsdp over every chip, 'tensor' for the
heads, MLP hidden and vocabulary (Megatron-style, `jaxssl.parallel.constrain`), scanned
and fully rematerialised blocks without biases (as Llama), bfloat16 activations and Adam
first moments, and the
batch in `grad_accum_steps` micro-batches so that the logits and attention scores of
one micro-batch fit.

Shape-equivalent, not Llama: jaxssl's MLP is ungated and its attention multi-head, so
d_ff is 18,432: a block's 4 x 4096^2 + 2 x 4096 x 18,432 = 218M parameters equal
Llama-3-8B's (grouped-query attention, gated 14,336 MLP), 8.0B in all; the vocabulary is the byte tokenizer's 263 ids
plus sentinel ids up to 128,256. For ahead-of-time compiles (`python -m jaxssl.aot`,
experiments/scaling/README.md); a real run needs a TFDS text dataset in data.data_dir and
a SentencePiece model (data tokenizer='spm:PATH').
"""

import ml_collections

from jaxssl.data.text import text_dataset_name
from jaxssl.data.tokenizers import ByteTokenizer

VOCAB = 128_256


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.method = "lm"
    c.total_steps = 500_000
    c.compute_dtype = "bfloat16"
    sentinels = VOCAB - ByteTokenizer(0).vocab_size
    c.data = dict(name=text_dataset_name("c4/en:3.1.0", from_tfds=True, length=2048,
                                         rows="packed", sentinels=sentinels),
                  train_split="train", eval_split="validation", batch_size=2048)
    c.grad_accum_steps = 4
    c.lm = dict(architecture="decoder", objective="prefix", hidden=4096, depth=32, heads=32,
                mlp_ratio=4.5, posemb="rotary", tied_embeddings=False,
                scan_layers=True, remat="full", use_bias=False)
    c.optim = dict(name="adamw", base_lr=3e-4, lr_scaling="none", b1=0.9, b2=0.95,
                   weight_decay=0.1, warmup_steps=2000, clip_grad_norm=1.0,
                   moments_dtype="bfloat16")
    c.checkpoint = dict(every_steps=2000)
    c.mesh = dict(data=1, fsdp=-1, tensor=4)
    return c
