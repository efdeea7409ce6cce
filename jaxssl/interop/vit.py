"""ViT importers: timm `VisionTransformer` (supervised, DINO, MAE fine-tuned weights) and
Hugging Face `ViTModel` / `ViTForImageClassification` / `ViTMAEModel` /
`ViTMAEForPreTraining` (encoder and decoder), onto `jaxssl.models.ViT` (and
`jaxssl.methods.mae.MaskedAutoencoder`).

Layouts: the fused timm qkv [3D, D] and the separate Hugging Face q, k, v
[D, D] both become jaxssl's 'qkv' kernel [D, 3, heads, D/heads]; the patch
conv [D, C, p, p] becomes [p, p, C, D]; position 0 of the [1, 1 + g*g, D]
position table is folded into the class token (`common.split_position_embedding`);
the patch part is resized bilinearly when `image_size` asks for another grid.

Pixels: jaxssl feeds every backbone images in [-1, 1]; public ViTs expect
(pixels in [0, 1] - mean) / std per channel. The patch projection is linear
and unpadded, so that normalisation folds into its kernel and bias exactly
(`fold_pixel_normalization`): given `pixel_normalization=(mean, std)` (read
from a Hugging Face directory's preprocessor_config.json when there is one),
the imported model computes the original function of jaxssl's inputs.
timm checkpoints do not record the number of heads: it is `heads` (or the
given config's), else hidden / 64 as in every standard ViT.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.checkpoint import shapes_by_path
from jaxssl.errors import CheckpointError
from jaxssl.interop.common import (Imported, hf_activation, resize_grid,
                                   split_position_embedding)
from jaxssl.interop.mapping import (Rule, apply_rules, chain, check_config, check_shapes, conv,
                                    count_prefix, dense_rules, fused_qkv, heads_in, linear,
                                    norm_rules, read_hf_directory, read_state_dict, require,
                                    separate_qkv_rules)

HF_LAYER_NORM_EPSILON = 1e-12
STANDARD_HEAD_DIM = 64


def timm_rules() -> list[Rule]:
    block, to = r"blocks\.(\d+)\.", "params/encoder/block\\1/"
    return [
        Rule(r"patch_embed\.proj\.weight", "params/patch_embedding/kernel", conv),
        Rule(r"patch_embed\.proj\.bias", "params/patch_embedding/bias"),
        *norm_rules(block + "norm1", to + "norm1"),
        *dense_rules(block + r"attn\.qkv", to + "attention/qkv", chain(linear, fused_qkv),
                     fused_qkv),
        *dense_rules(block + r"attn\.proj", to + "attention/out", chain(linear, heads_in)),
        *norm_rules(block + "norm2", to + "norm2"),
        *dense_rules(block + r"mlp\.fc1", to + "mlp/fc1"),
        *dense_rules(block + r"mlp\.fc2", to + "mlp/fc2"),
        *norm_rules("norm", "params/encoder/encoder_norm"),
        Rule(r"head\..*", None),
    ]


def hf_layer_rules(block: str, to: str) -> list[Rule]:
    """One Hugging Face ViTLayer (`block` a regex whose group 1 is the layer index)."""
    return [
        *separate_qkv_rules(block + r"attention\.attention\.{name}", to + "attention/qkv"),
        *dense_rules(block + r"attention\.output\.dense", to + "attention/out",
                     chain(linear, heads_in)),
        *norm_rules(block + "layernorm_before", to + "norm1"),
        *norm_rules(block + "layernorm_after", to + "norm2"),
        *dense_rules(block + r"intermediate\.dense", to + "mlp/fc1"),
        *dense_rules(block + r"output\.dense", to + "mlp/fc2"),
    ]


def hf_encoder_rules(source: str, to: str) -> list[Rule]:
    """A Hugging Face ViT(MAE)Model under the name prefix `source` ('' or r'vit\\.')."""
    return [
        Rule(source + r"embeddings\.patch_embeddings\.projection\.weight",
             to + "patch_embedding/kernel", conv),
        Rule(source + r"embeddings\.patch_embeddings\.projection\.bias",
             to + "patch_embedding/bias"),
        *hf_layer_rules(source + r"encoder\.layer\.(\d+)\.", to + "encoder/block\\1/"),
        *norm_rules(source + "layernorm", to + "encoder/encoder_norm"),
        Rule(source + r"pooler\..*", None),
        Rule(r"classifier\..*", None),
    ]


def mae_decoder_rules() -> list[Rule]:
    return [
        *dense_rules(r"decoder\.decoder_embed", "params/decoder_embed"),
        Rule(r"decoder\.mask_token", "params/mask_token"),
        *hf_layer_rules(r"decoder\.(?:decoder_encoder\.layer|decoder_layers)\.(\d+)\.",
                        "params/decoder/block\\1/"),
        *norm_rules(r"decoder\.decoder_norm", "params/decoder/encoder_norm"),
        *dense_rules(r"decoder\.decoder_pred", "params/decoder_pred/linear"),
    ]


# ------------------------------------------------------------------- shared
def _grid_side(num_positions: int, where: str) -> int:
    side = math.isqrt(num_positions)
    if side * side != num_positions:
        raise CheckpointError(f"{where}: {num_positions} patch positions are not a square grid")
    return side


def _given_vit_config(given: Optional[Mapping[str, Any]]) -> Optional[dict]:
    """The keys the given model config sets, a named size ('vit_base') as its dimensions.

    Only these are checked against the checkpoint; 0 dimensions mean "unset".
    """
    if given is None:
        return None
    from jaxssl.models import VIT_DIM_KEYS, vit_config, VIT_NAMES
    given = {k: v for k, v in dict(given).items() if not (k in VIT_DIM_KEYS and not v)}
    name = given.pop("name", "vit")
    if name not in ("vit", *VIT_NAMES):
        raise CheckpointError(f"the checkpoint is a ViT but the config's model.name is {name!r}")
    if name in VIT_NAMES:
        given = {**vit_config(VIT_NAMES[name]), **given}
    return given


def expected_shapes(module, image_size: int, channels: int = 3) -> dict[str, tuple]:
    """{variable path: shape} of `module` initialised on [1, image_size, image_size, channels]."""
    images = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.PRNGKey(0), x, train=False),
                               images)
    from flax import linen as nn
    return shapes_by_path(nn.meta.unbox(variables))


def _position_arrays(posemb: np.ndarray, cls_token: Optional[np.ndarray], grid: int,
                     new_grid: int, sincos: bool, prefix: str) -> tuple[dict, dict]:
    """(arrays, resized) for the position table and class token of a ViT at `new_grid`."""
    patches, cls = split_position_embedding(posemb, cls_token)
    arrays, resized = {}, {}
    if cls is not None:
        arrays[prefix + "cls_token"] = cls
    if not sincos:
        path = prefix + "position_embedding/pos_embedding"
        if new_grid != grid:
            resized[path] = (patches.shape, (new_grid * new_grid, patches.shape[1]))
            patches = resize_grid(patches, new_grid)
        arrays[path] = patches
    return arrays, resized


def fold_pixel_normalization(kernel: np.ndarray, bias: np.ndarray, mean, std
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Patch projection (kernel [p, p, C, D], bias [D]) for inputs x in [-1, 1] that equals
    the given one on (x01 - mean) / std, x01 = (x + 1) / 2, per channel C."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    scaled = kernel.astype(np.float64) / (2 * std)[None, None, :, None]
    shift = np.einsum("pqcd,c->d", kernel.astype(np.float64), (0.5 - mean) / std)
    return scaled.astype(np.float32), (bias.astype(np.float64) + shift).astype(np.float32)


def hf_pixel_normalization(directory: str) -> Optional[tuple[list, list]]:
    """(image_mean, image_std) of a Hugging Face preprocessor_config.json, if it normalises."""
    import json
    import os
    path = os.path.join(directory, "preprocessor_config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        settings = json.load(f)
    if not settings.get("do_normalize", True) or "image_mean" not in settings:
        return None
    return settings["image_mean"], settings["image_std"]


def _finish(family: str, source: str, config: dict, given, mapped_arrays: dict,
            skipped: list, posemb: np.ndarray, cls_token, image_size: Optional[int],
            sincos: bool = False, pixel_normalization=None) -> Imported:
    """Checks and builds the Imported of a plain ViT encoder."""
    from jaxssl.models import build_backbone
    grid = _grid_side(posemb.reshape(-1, posemb.shape[-1]).shape[0] - (cls_token is not None),
                      source)
    image_size = image_size or grid * config["patch"]
    if image_size % config["patch"]:
        raise CheckpointError(f"{source}: image size {image_size} is not a multiple of the "
                              f"patch size {config['patch']}")
    config = check_config(config, _given_vit_config(given), source)
    config["name"] = "vit"
    arrays, resized = _position_arrays(posemb, cls_token, grid, image_size // config["patch"],
                                       sincos, "params/")
    arrays.update(mapped_arrays)
    if pixel_normalization is not None:
        mean, std = pixel_normalization
        if len(mean) != arrays["params/patch_embedding/kernel"].shape[2]:
            raise CheckpointError(f"{source}: pixel mean {list(mean)} does not have one value "
                                  f"per input channel")
        arrays["params/patch_embedding/kernel"], arrays["params/patch_embedding/bias"] = \
            fold_pixel_normalization(arrays["params/patch_embedding/kernel"],
                                     arrays["params/patch_embedding/bias"], mean, std)
    if config.get("scan_blocks"):
        arrays = stack_blocks(arrays, config["depth"])
    build = lambda: build_backbone(config)
    kernel = arrays.get("params/patch_embedding/kernel")
    channels = 3 if kernel is None else kernel.shape[2]
    check_shapes(expected_shapes(build(), image_size, channels), arrays, source)
    return Imported(family, source, config, arrays, arrays, skipped, resized, build,
                    extra={"image_size": image_size, "pixel_normalization": pixel_normalization})


def stack_blocks(arrays: Mapping[str, np.ndarray], depth: int,
                 prefix: str = "params/encoder/") -> dict[str, np.ndarray]:
    """'<prefix>block<i>/<rest>' arrays stacked into '<prefix>blocks/<rest>' [depth, ...], the
    layout of a `scan_blocks` Encoder (nn.scan over the blocks)."""
    pattern = re.compile(re.escape(prefix) + r"block(\d+)/(.*)")
    out, parts = {}, {}
    for path, array in arrays.items():
        match = pattern.fullmatch(path)
        if match:
            parts.setdefault(match.group(2), {})[int(match.group(1))] = array
        else:
            out[path] = array
    for rest, blocks in parts.items():
        out[f"{prefix}blocks/{rest}"] = np.stack([blocks[i] for i in range(depth)])
    return out


def _sincos_like(table: np.ndarray, grid: int, where: str) -> bool:
    """True when table[1:] (after the class position) is MAE's fixed 2-D sin-cos table."""
    from jaxssl.models.vit import sincos_posemb_2d
    table = table.reshape(-1, table.shape[-1])
    reference = sincos_posemb_2d(grid, grid, table.shape[1])
    return bool(np.allclose(table[-grid * grid:], reference, atol=1e-5))


# --------------------------------------------------------------------- timm
def import_timm_vit(path: str, given: Optional[Mapping[str, Any]] = None,
                    image_size: Optional[int] = None, heads: Optional[int] = None,
                    pixel_normalization=None) -> Imported:
    """A timm VisionTransformer state dict (.safetensors) -> Imported (family 'timm_vit').

    The file does not say how pixels were normalised: give `pixel_normalization`
    (mean, std), e.g. timm's pretrained_cfg values, to fold it in."""
    source = f"timm:{path}"
    state = dict(read_state_dict(path))
    kernel = require(state, "patch_embed.proj.weight", "timm ViT", source)
    hidden, _, patch, _ = kernel.shape
    posemb = require(state, "pos_embed", "timm ViT", source)
    cls_token = state.pop("cls_token", None)
    state.pop("pos_embed")
    heads = heads or (given or {}).get("heads") or hidden // STANDARD_HEAD_DIM
    if not heads or hidden % heads:
        raise CheckpointError(f"{source}: cannot split hidden size {hidden} into {heads} heads "
                              f"(set model.heads)")
    config = dict(name="vit", hidden=hidden, depth=count_prefix(state, r"blocks\.(\d+)\."),
                  heads=heads, patch=patch,
                  mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
                  posemb="learned", pool="cls" if cls_token is not None else "gap",
                  layer_norm_epsilon=1e-6, activation="gelu", pre_norm=False)
    mapped = apply_rules(state, timm_rules(), {"heads": heads}, source)
    return _finish("timm_vit", source, config, given, mapped.arrays, mapped.skipped, posemb,
                   cls_token, image_size, pixel_normalization=pixel_normalization)


# ------------------------------------------------------------- Hugging Face
def _hf_vit_config(hf: Mapping[str, Any], source: str) -> dict:
    if not hf.get("qkv_bias", True):
        raise CheckpointError(f"{source}: qkv_bias={hf.get('qkv_bias')}: jaxssl's ViT has "
                              f"q/k/v biases")
    return dict(name="vit", hidden=hf["hidden_size"], depth=hf["num_hidden_layers"],
                heads=hf["num_attention_heads"], patch=hf["patch_size"],
                mlp_ratio=hf["intermediate_size"] / hf["hidden_size"], posemb="learned",
                pool="cls", layer_norm_epsilon=float(hf.get("layer_norm_eps",
                                                            HF_LAYER_NORM_EPSILON)),
                activation=hf_activation(hf.get("hidden_act", "gelu"), source), pre_norm=False)


def import_hf_vit(directory: str, given: Optional[Mapping[str, Any]] = None,
                  image_size: Optional[int] = None, hf_config=None, state=None,
                  pixel_normalization=None) -> Imported:
    """A Hugging Face ViT directory (model_type 'vit' or 'vit_mae') -> Imported.

    ViTMAEForPreTraining checkpoints import with their decoder (family
    'hf_vit_mae', `build()` a MaskedAutoencoder) unless `given` is an image
    encoder config, as in fine-tuning, where the decoder is skipped.
    """
    source = f"hf:{directory}"
    if hf_config is None:
        hf_config, state = read_hf_directory(directory)
    state = dict(state)
    model_type = hf_config.get("model_type")
    if model_type not in ("vit", "vit_mae"):
        raise CheckpointError(f"{source}: model_type {model_type!r} is not a ViT")
    prefix = "vit." if "vit.embeddings.cls_token" in state else ""
    cls_token = require(state, prefix + "embeddings.cls_token", "Hugging Face ViT", source)
    posemb = require(state, prefix + "embeddings.position_embeddings", "Hugging Face ViT", source)
    del state[prefix + "embeddings.cls_token"], state[prefix + "embeddings.position_embeddings"]
    config = _hf_vit_config(hf_config, source)
    grid = hf_config["image_size"] // hf_config["patch_size"]
    sincos = model_type == "vit_mae" and _sincos_like(posemb, grid, source)
    if sincos:
        config["posemb"] = "sincos2d"
    decoder = {k: state.pop(k) for k in list(state) if k.startswith("decoder.")}
    mapped = apply_rules(state, hf_encoder_rules(prefix.replace(".", r"\."), "params/"),
                         {"heads": config["heads"]}, source)
    family = "hf_vit_mae" if model_type == "vit_mae" else "hf_vit"
    imported = _finish(family, source, config, given, mapped.arrays, mapped.skipped,
                       posemb, cls_token, image_size, sincos,
                       pixel_normalization or hf_pixel_normalization(directory))
    if decoder and given is None:
        return _with_mae_decoder(imported, hf_config, decoder, source)
    imported.skipped += sorted(decoder)
    return imported


def _with_mae_decoder(encoder: Imported, hf: Mapping[str, Any], state: dict,
                      source: str) -> Imported:
    """The encoder import plus the ViTMAE decoder: `build()` is a MaskedAutoencoder."""
    from jaxssl.methods.mae import MaskedAutoencoder
    hidden = hf["decoder_hidden_size"]
    table = state.pop("decoder.decoder_pos_embed")
    grid = encoder.extra["image_size"] // encoder.config["patch"]
    if not (_sincos_like(table, grid, source) and np.allclose(table[0, 0], 0, atol=1e-6)):
        raise CheckpointError(f"{source}: the decoder position embedding is not MAE's fixed "
                              f"sin-cos table, which jaxssl's MAE decoder computes itself")
    mapped = apply_rules(state, mae_decoder_rules(),
                         {"heads": hf["decoder_num_attention_heads"]}, source)
    mae = dict(decoder_hidden=hidden, decoder_depth=hf["decoder_num_hidden_layers"],
               decoder_heads=hf["decoder_num_attention_heads"],
               decoder_mlp_ratio=hf["decoder_intermediate_size"] / hidden,
               mask_ratio=hf.get("mask_ratio", 0.75), norm_pix=hf.get("norm_pix_loss", False))
    arrays = {"params/backbone/" + p.partition("/")[2]: a for p, a in encoder.arrays.items()}
    arrays.update(mapped.arrays)
    build_encoder = encoder.build
    build = lambda: MaskedAutoencoder(
        backbone=build_encoder(), decoder_hidden=hidden, decoder_depth=mae["decoder_depth"],
        decoder_heads=mae["decoder_heads"], decoder_mlp_ratio=mae["decoder_mlp_ratio"])
    size = encoder.extra["image_size"]
    num_patches = grid * grid
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    ids = jax.ShapeDtypeStruct((1, num_patches), jnp.int32)
    variables = jax.eval_shape(
        lambda x, k, r: build().init(jax.random.PRNGKey(0), x, k, r, train=False),
        images, ids, ids)
    from flax import linen as nn
    check_shapes(shapes_by_path(nn.meta.unbox(variables)), arrays, source)
    return Imported("hf_vit_mae", source, encoder.config, arrays, encoder.encoder,
                    encoder.skipped + mapped.skipped, encoder.resized, build,
                    extra={**encoder.extra, "mae": mae})
