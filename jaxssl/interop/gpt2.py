"""GPT-2 (`GPT2LMHeadModel` / `GPT2Model`) onto `jaxssl.models.transformer.LanguageModel`.

GPT-2's Conv1D weights are already [in, out], so kernels are not
transposed; the fused c_attn [D, 3D] becomes 'qkv' [D, 3, H, Dh] directly.
Pre-norm blocks, tanh GELU ('gelu_new'), layer norm epsilon 1e-5, learned
positions, the output projection tied to the token embedding.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from jaxssl.errors import CheckpointError
from jaxssl.interop.common import Imported, hf_activation
from jaxssl.interop.mapping import (Rule, apply_rules, dense_rules, fused_qkv, heads_in,
                                    identity, norm_rules, require)
from jaxssl.interop.text import language_model_import


def gpt2_rules() -> list[Rule]:
    block, to = r"(?:transformer\.)?h\.(\d+)\.", "params/stack/block\\1/"
    return [
        Rule(r"(?:transformer\.)?wte\.weight", "params/embedder/token_embedding"),
        Rule(r"(?:transformer\.)?wpe\.weight", "params/embedder/position_embedding"),
        *norm_rules(block + "ln_1", to + "self_attention_norm"),
        *dense_rules(block + r"attn\.c_attn", to + "self_attention/qkv", fused_qkv, fused_qkv),
        *dense_rules(block + r"attn\.c_proj", to + "self_attention/out", heads_in),
        *norm_rules(block + "ln_2", to + "mlp_norm"),
        *dense_rules(block + r"mlp\.c_fc", to + "mlp/fc1", identity),
        *dense_rules(block + r"mlp\.c_proj", to + "mlp/fc2", identity),
        *norm_rules(r"(?:transformer\.)?ln_f", "params/stack/final_norm"),
        Rule(block + r"attn\.(?:masked_)?bias", None),   # causal-mask buffers of old checkpoints
        Rule(r"lm_head\.weight", None),                  # tied to wte
    ]


def import_gpt2(directory: str, hf: Mapping[str, Any], state: Mapping,
                given: Optional[Mapping[str, Any]] = None) -> Imported:
    source = f"hf:{directory}"
    require(state, "transformer.wte.weight" if "transformer.wte.weight" in state else "wte.weight",
            "GPT-2", source)
    for key, plain in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                       ("reorder_and_upcast_attn", False), ("tie_word_embeddings", True)):
        if hf.get(key, plain) != plain:
            raise CheckpointError(f"{source}: {key}={hf[key]} is a GPT-2 variant jaxssl's "
                                  f"LanguageModel does not have")
    hidden = hf["n_embd"]
    config = dict(vocab_size=hf["vocab_size"], max_length=hf["n_positions"], hidden=hidden,
                  depth=hf["n_layer"], num_heads=hf["n_head"],
                  mlp_dim=hf.get("n_inner") or 4 * hidden, posemb="learned",
                  tied_embeddings=True,
                  layer_norm_epsilon=float(hf.get("layer_norm_epsilon", 1e-5)),
                  activation=hf_activation(hf.get("activation_function", "gelu_new"), source))
    mapped = apply_rules(state, gpt2_rules(), {"heads": hf["n_head"]}, source)
    return language_model_import("gpt2", source, config, given, mapped)
