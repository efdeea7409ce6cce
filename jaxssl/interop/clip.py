"""Hugging Face CLIP (`CLIPModel`) and SigLIP (`SiglipModel`, see `import_siglip`) onto
jaxssl's two towers (`jaxssl.methods.clip.TwoTower`).

Image tower: the ViT with CLIP's options (`pre_norm`: the 'pre_layrnorm'
over the tokens before the first block; 'quick_gelu'; epsilon 1e-5); the
class embedding takes position 0 of the table (folded in, as for every ViT);
CLIP's patch projection has no bias, so jaxssl's is zero; 'post_layernorm' of
the pooled class token is the final norm (a per-token norm, so the pooled
output is the same). Text tower: causal `TextEncoder` pooled at the EOS
token ('argmax' of the ids for eos_token_id 2, as OpenAI's EOT has the top
id; else the first eos_token_id), no padding mask (CLIP's text model attends
to every earlier token). The projections have no bias, as jaxssl's;
'logit_scale' is the same log-scale parameter.

Given a fine-tuning image-model config, only the image tower is imported
and the text tower is listed as skipped.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxssl.checkpoint import shapes_by_path
from jaxssl.interop.common import Imported, hf_activation
from jaxssl.errors import CheckpointError
from jaxssl.interop.mapping import (Rule, apply_rules, chain, check_shapes, dense_rules,
                                    fused_qkv, heads_in, linear, norm_rules, require,
                                    separate_qkv_rules)
from jaxssl.interop.vit import _finish

LEGACY_EOS_ID = 2   # transformers pools at argmax(ids) when eos_token_id is 2


def clip_layer_rules(block: str, to: str, attention: str, norm1: str, norm2: str) -> list[Rule]:
    """One CLIPEncoderLayer (`block` a regex whose group 1 is the layer index)."""
    return [
        *separate_qkv_rules(block + r"self_attn\.{name}", to + attention + "/qkv",
                            ("q_proj", "k_proj", "v_proj")),
        *dense_rules(block + r"self_attn\.out_proj", to + attention + "/out",
                     chain(linear, heads_in)),
        *norm_rules(block + "layer_norm1", to + norm1),
        *norm_rules(block + "layer_norm2", to + norm2),
        *dense_rules(block + r"mlp\.fc1", to + "mlp/fc1"),
        *dense_rules(block + r"mlp\.fc2", to + "mlp/fc2"),
    ]


def vision_rules() -> list[Rule]:
    return [
        Rule(r"vision_model\.embeddings\.patch_embedding\.weight",
             "params/patch_embedding/kernel", lambda a, ctx: a.transpose(2, 3, 1, 0)),
        Rule(r"vision_model\.embeddings\.position_ids", None),
        *norm_rules(r"vision_model\.pre_layrnorm", "params/pre_norm"),
        *clip_layer_rules(r"vision_model\.encoder\.layers\.(\d+)\.", "params/encoder/block\\1/",
                          "attention", "norm1", "norm2"),
        *norm_rules(r"vision_model\.post_layernorm", "params/encoder/encoder_norm"),
    ]


def text_tower_rules() -> list[Rule]:
    """The text transformer CLIP and SigLIP share, onto TwoTower's 'text_tower'."""
    to = "params/text_tower/"
    return [
        Rule(r"text_model\.embeddings\.token_embedding\.weight", to + "embedder/token_embedding"),
        Rule(r"text_model\.embeddings\.position_embedding\.weight",
             to + "embedder/position_embedding"),
        Rule(r"text_model\.embeddings\.position_ids", None),
        *clip_layer_rules(r"text_model\.encoder\.layers\.(\d+)\.", to + "stack/block\\1/",
                          "self_attention", "self_attention_norm", "mlp_norm"),
        *norm_rules(r"text_model\.final_layer_norm", to + "stack/final_norm"),
    ]


def text_rules() -> list[Rule]:
    return [
        *text_tower_rules(),
        Rule(r"text_projection\.weight", "params/text_projection/kernel", linear),
        Rule(r"visual_projection\.weight", "params/image_projection/kernel", linear),
        Rule(r"logit_scale", "params/logit_scale", lambda a, ctx: a.reshape(())),
    ]


def import_clip(directory: str, hf: Mapping[str, Any], state: Mapping,
                given: Optional[Mapping[str, Any]] = None,
                image_size: Optional[int] = None) -> Imported:
    """A Hugging Face CLIPModel directory -> Imported (family 'hf_clip'); `build()` is a
    TwoTower, or the image ViT alone when `given` (an image model config) is."""
    from jaxssl.methods.clip import TextEncoder, TwoTower
    source = f"hf:{directory}"
    state = dict(state)
    vision_hf, text_hf = hf["vision_config"], hf["text_config"]
    cls_token = require(state, "vision_model.embeddings.class_embedding", "CLIP", source)
    posemb = state.pop("vision_model.embeddings.position_embedding.weight")
    del state["vision_model.embeddings.class_embedding"]
    hidden = vision_hf["hidden_size"]
    config = dict(name="vit", hidden=hidden, depth=vision_hf["num_hidden_layers"],
                  heads=vision_hf["num_attention_heads"], patch=vision_hf["patch_size"],
                  mlp_ratio=vision_hf["intermediate_size"] / hidden, posemb="learned",
                  pool="cls", layer_norm_epsilon=float(vision_hf.get("layer_norm_eps", 1e-5)),
                  activation=hf_activation(vision_hf.get("hidden_act", "quick_gelu"), source),
                  pre_norm=True)
    vision = {k: v for k, v in state.items() if k.startswith("vision_model.")}
    rest = {k: v for k, v in state.items() if k not in vision}
    mapped = apply_rules(vision, vision_rules(), {"heads": config["heads"]}, source)
    mapped.arrays["params/patch_embedding/bias"] = np.zeros(hidden, np.float32)
    image = _finish("hf_clip", source, config, given, mapped.arrays, mapped.skipped, posemb,
                    cls_token, image_size)
    if given is not None:
        image.skipped += sorted(rest)
        return image
    eos_id = text_hf.get("eos_token_id", LEGACY_EOS_ID)
    text = dict(vocab_size=text_hf["vocab_size"], max_length=text_hf["max_position_embeddings"],
                hidden=text_hf["hidden_size"], depth=text_hf["num_hidden_layers"],
                num_heads=text_hf["num_attention_heads"], mlp_dim=text_hf["intermediate_size"],
                causal=True, pooling="argmax" if eos_id == LEGACY_EOS_ID else "eos",
                eos_id=eos_id, mask_padding=False,
                layer_norm_epsilon=float(text_hf.get("layer_norm_eps", 1e-5)),
                activation=hf_activation(text_hf.get("hidden_act", "quick_gelu"), source))
    text_mapped = apply_rules(rest, text_rules(), {"heads": text["num_heads"]}, source)
    arrays = {"params/backbone/" + p.partition("/")[2]: a for p, a in image.arrays.items()}
    arrays.update(text_mapped.arrays)
    build_image, embed_dim = image.build, hf["projection_dim"]
    build = lambda: TwoTower(backbone=build_image(), text_tower=TextEncoder(**text),
                             embed_dim=embed_dim, scalars=(("logit_scale", 0.0),))
    _check_two_tower(build, image.extra["image_size"], arrays, source)
    return Imported("hf_clip", source, image.config, arrays, image.encoder,
                    image.skipped + text_mapped.skipped, image.resized, build,
                    extra={**image.extra, "text": text, "embed_dim": embed_dim})


# ------------------------------------------------------------------- SigLIP
def siglip_vision_rules() -> list[Rule]:
    head, to = r"vision_model\.head\.", "params/map_head/"
    in_proj = lambda part: (lambda a, ctx: fused_qkv(a.T, ctx)[:, part])
    return [
        Rule(r"vision_model\.embeddings\.patch_embedding\.weight",
             "params/patch_embedding/kernel", lambda a, ctx: a.transpose(2, 3, 1, 0)),
        Rule(r"vision_model\.embeddings\.patch_embedding\.bias", "params/patch_embedding/bias"),
        Rule(r"vision_model\.embeddings\.position_ids", None),
        *clip_layer_rules(r"vision_model\.encoder\.layers\.(\d+)\.", "params/encoder/block\\1/",
                          "attention", "norm1", "norm2"),
        *norm_rules(r"vision_model\.post_layernorm", "params/encoder/encoder_norm"),
        Rule(head + "probe", to + "probe"),
        # in_proj_weight [3D, D] is split by `import_siglip` into query and key_value parts.
        Rule(head + r"attention\.query_weight", to + "attention/query/kernel", in_proj(slice(0, 1))),
        Rule(head + r"attention\.key_value_weight", to + "attention/key_value/kernel",
             in_proj(slice(1, 3))),
        Rule(head + r"attention\.query_bias", to + "attention/query/bias",
             lambda a, ctx: fused_qkv(a, ctx)[:1]),
        Rule(head + r"attention\.key_value_bias", to + "attention/key_value/bias",
             lambda a, ctx: fused_qkv(a, ctx)[1:]),
        *dense_rules(head + r"attention\.out_proj", to + "attention/out", chain(linear, heads_in)),
        *norm_rules(head + "layernorm", to + "norm"),
        *dense_rules(head + r"mlp\.fc1", to + "mlp/fc1"),
        *dense_rules(head + r"mlp\.fc2", to + "mlp/fc2"),
    ]


def siglip_text_rules() -> list[Rule]:
    scalar = lambda a, ctx: a.reshape(())
    return [
        *text_tower_rules(),
        *dense_rules(r"text_model\.head", "params/text_projection"),
        Rule(r"logit_scale", "params/log_t", scalar),
        Rule(r"logit_bias", "params/bias", scalar),
    ]


def import_siglip(directory: str, hf: Mapping[str, Any], state: Mapping,
                  given: Optional[Mapping[str, Any]] = None,
                  image_size: Optional[int] = None) -> Imported:
    """A Hugging Face SiglipModel directory -> Imported (family 'hf_siglip').

    Image tower: ViT with pool='map' (the MAP head), no class token, learned
    positions; SigLIP has no image projection, so TwoTower's is the identity
    (exact). Text tower: bidirectional, no padding mask, pooled at the final
    position, 'text_projection' with a bias (SigLIP's head). 'logit_scale' and
    'logit_bias' are jaxssl SigLIP's 'log_t' and 'bias'.
    """
    from jaxssl.methods.clip import TextEncoder, TwoTower
    source = f"hf:{directory}"
    state = dict(state)
    vision_hf, text_hf = hf["vision_config"], hf["text_config"]
    posemb = require(state, "vision_model.embeddings.position_embedding.weight", "SigLIP", source)
    del state["vision_model.embeddings.position_embedding.weight"]
    if not vision_hf.get("vision_use_head", True):
        raise CheckpointError(f"{source}: vision_use_head=False (no MAP head) is not supported")
    for kind in ("weight", "bias"):   # one fused in-projection -> query and key_value parts
        fused = state.pop(f"vision_model.head.attention.in_proj_{kind}", None)
        if fused is not None:
            state[f"vision_model.head.attention.query_{kind}"] = fused
            state[f"vision_model.head.attention.key_value_{kind}"] = fused
    hidden = vision_hf["hidden_size"]
    config = dict(name="vit", hidden=hidden, depth=vision_hf["num_hidden_layers"],
                  heads=vision_hf["num_attention_heads"], patch=vision_hf["patch_size"],
                  mlp_ratio=vision_hf["intermediate_size"] / hidden, posemb="learned",
                  pool="map", layer_norm_epsilon=float(vision_hf.get("layer_norm_eps", 1e-6)),
                  activation=hf_activation(vision_hf.get("hidden_act", "gelu_pytorch_tanh"),
                                           source),
                  pre_norm=False)
    vision = {k: v for k, v in state.items() if k.startswith("vision_model.")}
    rest = {k: v for k, v in state.items() if k not in vision}
    mapped = apply_rules(vision, siglip_vision_rules(), {"heads": config["heads"]}, source)
    image = _finish("hf_siglip", source, config, given, mapped.arrays, mapped.skipped, posemb,
                    None, image_size)
    if given is not None:
        image.skipped += sorted(rest)
        return image
    text = dict(vocab_size=text_hf["vocab_size"], max_length=text_hf["max_position_embeddings"],
                hidden=text_hf["hidden_size"], depth=text_hf["num_hidden_layers"],
                num_heads=text_hf["num_attention_heads"], mlp_dim=text_hf["intermediate_size"],
                causal=False, pooling="final", mask_padding=False,
                layer_norm_epsilon=float(text_hf.get("layer_norm_eps", 1e-6)),
                activation=hf_activation(text_hf.get("hidden_act", "gelu_pytorch_tanh"),
                                         source))
    text_mapped = apply_rules(rest, siglip_text_rules(), {"heads": text["num_heads"]}, source)
    embed_dim = text_hf.get("projection_size") or text_hf["hidden_size"]
    if embed_dim != hidden:
        raise CheckpointError(f"{source}: text projection size {embed_dim} differs from the "
                              f"image width {hidden}")
    arrays = {"params/backbone/" + p.partition("/")[2]: a for p, a in image.arrays.items()}
    arrays.update(text_mapped.arrays)
    arrays["params/image_projection/kernel"] = np.eye(hidden, dtype=np.float32)
    build_image = image.build
    build = lambda: TwoTower(backbone=build_image(), text_tower=TextEncoder(**text),
                             embed_dim=embed_dim, scalars=(("log_t", 0.0), ("bias", 0.0)),
                             text_projection_bias=True)
    _check_two_tower(build, image.extra["image_size"], arrays, source)
    return Imported("hf_siglip", source, image.config, arrays, image.encoder,
                    image.skipped + text_mapped.skipped, image.resized, build,
                    extra={**image.extra, "text": text, "embed_dim": embed_dim})


def _check_two_tower(build, size: int, arrays: Mapping, source: str) -> None:
    """check_shapes of `arrays` against the TwoTower `build()` makes."""
    variables = jax.eval_shape(
        lambda x, t: build().init(jax.random.PRNGKey(0), x, t, train=False),
        jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
        jax.ShapeDtypeStruct((1, 4), jnp.int32))
    check_shapes(shapes_by_path(nn.meta.unbox(variables)), arrays, source)
