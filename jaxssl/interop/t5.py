"""T5 and T5.1.1 (`T5ForConditionalGeneration`) onto `jaxssl.models.transformer.EncoderDecoder`.

T5 has RMS norms (`rms_norm`), no biases (jaxssl's are zero), relative
position buckets in each stack (`posemb='relative'`: the table of block 0,
shared by the stack's blocks; bidirectional in the encoder, looking back in
the decoder), unscaled attention logits (the query kernels are multiplied by
sqrt(d_kv), undoing jaxssl's 1/sqrt(d_kv)), a ReLU MLP (1.0) or a gated
tanh-GELU MLP (1.1: wi_0 -> fc1, wi_1 -> gate). The output layer is the
shared embedding, or lm_head when the checkpoint has its own; when the
config scales decoder outputs by d_model^-0.5 (T5 1.0) that factor is
folded into the decoder's final norm scale.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxssl.checkpoint import shapes_by_path
from jaxssl.errors import CheckpointError
from jaxssl.interop.common import Imported, hf_activation
from jaxssl.interop.mapping import (Rule, apply_rules, chain, check_config, check_shapes,
                                    heads_in, linear, require, separate_qkv_rules, split_heads)


def _mlp_rules(layer: str, to: str) -> list[Rule]:
    return [Rule(layer + r"DenseReluDense\.(?:wi|wi_0)\.weight", to + "mlp/fc1/kernel", linear),
            Rule(layer + r"DenseReluDense\.wi_1\.weight", to + "mlp/gate/kernel", linear),
            Rule(layer + r"DenseReluDense\.wo\.weight", to + "mlp/fc2/kernel", linear),
            Rule(layer + r"layer_norm\.weight", to + "mlp_norm/scale")]


def t5_rules() -> list[Rule]:
    rules = [Rule(r"shared\.weight", "params/embedder/token_embedding"),
             Rule(r"(?:encoder|decoder)\.embed_tokens\.weight", None),   # tied copies
             Rule(r"lm_head\.weight", "params/embedder/output_kernel", linear)]
    for stack in ("encoder", "decoder"):
        block, to = rf"{stack}\.block\.(\d+)\.layer\.", f"params/{stack}/block\\1/"
        rules += [
            *separate_qkv_rules(block + r"0\.SelfAttention\.{name}", to + "self_attention/qkv",
                                ("q", "k", "v")),
            Rule(block + r"0\.SelfAttention\.o\.weight", to + "self_attention/out/kernel",
                 chain(linear, heads_in)),
            Rule(rf"{stack}\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
                 f"params/{stack}/relative_attention_bias"),
            Rule(block + r"0\.layer_norm\.weight", to + "self_attention_norm/scale"),
            Rule(rf"{stack}\.final_layer_norm\.weight", f"params/{stack}/final_norm/scale"),
        ]
    block, to = r"decoder\.block\.(\d+)\.layer\.", "params/decoder/block\\1/"
    rules += [
        Rule(block + r"1\.EncDecAttention\.q\.weight", to + "cross_attention/query/kernel",
             chain(linear, split_heads, lambda a, ctx: a[:, None])),
        Rule(block + r"1\.EncDecAttention\.k\.weight", to + "cross_attention/key_value/kernel",
             chain(linear, split_heads), (0, 2, 1)),
        Rule(block + r"1\.EncDecAttention\.v\.weight", to + "cross_attention/key_value/kernel",
             chain(linear, split_heads), (1, 2, 1)),
        Rule(block + r"1\.EncDecAttention\.o\.weight", to + "cross_attention/out/kernel",
             chain(linear, heads_in)),
        Rule(block + r"1\.layer_norm\.weight", to + "cross_attention_norm/scale"),
        *_mlp_rules(block + r"2\.", to),
        *_mlp_rules(r"encoder\.block\.(\d+)\.layer\.1\.", "params/encoder/block\\1/"),
    ]
    return rules


def import_t5(directory: str, hf: Mapping[str, Any], state: Mapping,
              given: Optional[Mapping[str, Any]] = None) -> Imported:
    from jaxssl.models.transformer import EncoderDecoder
    source = f"hf:{directory}"
    state = dict(state)
    shared = require(state, "shared.weight", "T5", source)
    if "lm_head.weight" in state and np.array_equal(state["lm_head.weight"], shared):
        del state["lm_head.weight"]   # tied, saved twice
    heads, head_dim, hidden = hf["num_heads"], hf["d_kv"], hf["d_model"]
    if heads * head_dim != hidden:
        raise CheckpointError(f"{source}: num_heads * d_kv = {heads * head_dim} differs from "
                              f"d_model {hidden}; jaxssl's attention has heads of D / heads")
    config = dict(vocab_size=hf["vocab_size"], max_length=hf.get("n_positions", 512),
                  hidden=hidden, depth=hf["num_layers"],
                  decoder_depth=hf.get("num_decoder_layers") or hf["num_layers"],
                  num_heads=heads, mlp_dim=hf["d_ff"], posemb="relative",
                  tied_embeddings="lm_head.weight" not in state,
                  layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-6)),
                  activation=hf_activation(hf.get("dense_act_fn", "relu"), source),
                  gated_mlp=bool(hf.get("is_gated_act", False)), rms_norm=True,
                  relative_buckets=hf["relative_attention_num_buckets"],
                  relative_max_distance=hf.get("relative_attention_max_distance", 128))
    config = check_config(config, given, source)
    mapped = apply_rules(state, t5_rules(), {"heads": heads}, source)
    arrays = dict(mapped.arrays)
    root = math.sqrt(head_dim)
    for path in list(arrays):
        if path.endswith("self_attention/qkv/kernel"):
            arrays[path] = arrays[path] * np.array([root, 1, 1], np.float32)[:, None, None]
        elif path.endswith("cross_attention/query/kernel"):
            arrays[path] = arrays[path] * np.float32(root)
    if hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True)):
        arrays["params/decoder/final_norm/scale"] = (
            arrays["params/decoder/final_norm/scale"] * np.float32(hidden ** -0.5))
    build = lambda: EncoderDecoder(**config)
    tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    variables = jax.eval_shape(
        lambda t: build().init(jax.random.PRNGKey(0), t, jnp.ones_like(t), jnp.zeros_like(t),
                               t, jnp.ones_like(t), jnp.zeros_like(t), train=False), tokens)
    expected = shapes_by_path(nn.meta.unbox(variables))
    for path, shape in expected.items():   # T5 has no biases: jaxssl's are zero
        if path.endswith("bias") and path not in arrays and "relative" not in path:
            arrays[path] = np.zeros(shape, np.float32)
    check_shapes(expected, arrays, source)
    return Imported("t5", source, config, arrays, {}, mapped.skipped, {}, build)
