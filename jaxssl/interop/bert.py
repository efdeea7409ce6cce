"""BERT (`BertForMaskedLM` / `BertModel`) onto `jaxssl.models.transformer.LanguageModel`.

Post-norm blocks (`post_norm`, no final norm), a LayerNorm after the
word + position + token-type embeddings (every token of type 0), layer norm
epsilon 1e-12, and the MLM head: Dense -> GELU -> LayerNorm, then the tied
decoder plus its own bias (`logits_transform`, `tied_bias`). Run it with
`autoregressive` all False and padding as segment 0.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from jaxssl.errors import CheckpointError
from jaxssl.interop.common import Imported
from jaxssl.interop.mapping import (Rule, apply_rules, chain, dense_rules, heads_in, linear,
                                    norm_rules, require, separate_qkv_rules)
from jaxssl.interop.text import language_model_import

MLM_HEAD = "cls.predictions.transform.dense.weight"


def bert_rules() -> list[Rule]:
    block, to = r"(?:bert\.)?encoder\.layer\.(\d+)\.", "params/stack/block\\1/"
    embeddings, embedder = r"(?:bert\.)?embeddings\.", "params/embedder/"
    return [
        Rule(embeddings + r"word_embeddings\.weight", embedder + "token_embedding"),
        Rule(embeddings + r"position_embeddings\.weight", embedder + "position_embedding"),
        Rule(embeddings + r"token_type_embeddings\.weight", embedder + "type_embedding"),
        *norm_rules(embeddings + "LayerNorm", embedder + "embedding_norm"),
        Rule(embeddings + r"position_ids", None),
        *separate_qkv_rules(block + r"attention\.self\.{name}", to + "self_attention/qkv"),
        *dense_rules(block + r"attention\.output\.dense", to + "self_attention/out",
                     chain(linear, heads_in)),
        *norm_rules(block + r"attention\.output\.LayerNorm", to + "self_attention_norm"),
        *dense_rules(block + r"intermediate\.dense", to + "mlp/fc1"),
        *dense_rules(block + r"output\.dense", to + "mlp/fc2"),
        *norm_rules(block + r"output\.LayerNorm", to + "mlp_norm"),
        *dense_rules(r"cls\.predictions\.transform\.dense", embedder + "transform"),
        *norm_rules(r"cls\.predictions\.transform\.LayerNorm", embedder + "transform_norm"),
        Rule(r"cls\.predictions\.bias", embedder + "output_bias"),
        Rule(r"cls\.predictions\.decoder\.(?:weight|bias)", None),   # tied / the same bias
        Rule(r"(?:bert\.)?pooler\..*", None),
        Rule(r"cls\.seq_relationship\..*", None),
    ]


def import_bert(directory: str, hf: Mapping[str, Any], state: Mapping,
                given: Optional[Mapping[str, Any]] = None) -> Imported:
    source = f"hf:{directory}"
    word = ("bert." if "bert.embeddings.word_embeddings.weight" in state else "")
    require(state, word + "embeddings.word_embeddings.weight", "BERT", source)
    if hf.get("hidden_act", "gelu") != "gelu" or hf.get("position_embedding_type",
                                                         "absolute") != "absolute":
        raise CheckpointError(f"{source}: hidden_act={hf.get('hidden_act')!r}, "
                              f"position_embedding_type={hf.get('position_embedding_type')!r}: "
                              f"jaxssl's BERT has exact GELU and absolute positions")
    mlm = MLM_HEAD in state
    config = dict(vocab_size=hf["vocab_size"], max_length=hf["max_position_embeddings"],
                  hidden=hf["hidden_size"], depth=hf["num_hidden_layers"],
                  num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"],
                  posemb="learned", tied_embeddings=True,
                  layer_norm_epsilon=float(hf.get("layer_norm_eps", 1e-12)), post_norm=True,
                  type_vocab_size=hf.get("type_vocab_size", 2), embedding_norm=True,
                  logits_transform=mlm, tied_bias=mlm)
    mapped = apply_rules(state, bert_rules(), {"heads": hf["num_attention_heads"]}, source)
    return language_model_import("bert", source, config, given, mapped)
