"""A jaxssl ViT written out as a Hugging Face `ViTModel` directory (config.json +
model.safetensors), loadable with `transformers.ViTModel.from_pretrained(DIR)`.

The ViT needs a class token (pool='cls'), as Hugging Face's ViT always has
one; its features are then the class token's output, as jaxssl's. The
position table is the learned one, or the fixed sin-cos table at
`image_size` (Hugging Face keeps it as a parameter), with a zero row for the
class token, whose own value already plays that part in jaxssl. The pooler
is not written (load with add_pooling_layer=False, or transformers
initialises it). Before anything is written, the state dict is imported back
through `jaxssl.interop.vit` and compared with the given arrays, so the
export and the importer cannot drift apart.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from jaxssl.errors import CheckpointError
from jaxssl.handoff import flatten_paths
from jaxssl.interop.mapping import apply_rules
from jaxssl.interop.vit import hf_encoder_rules


def hf_vit_state_dict(params: Mapping[str, Any], config: Mapping[str, Any],
                      image_size: int) -> dict[str, np.ndarray]:
    """{Hugging Face ViTModel name: float32 array} of a jaxssl ViT's params tree."""
    from jaxssl.models.vit import sincos_posemb_2d
    flat = {k: np.asarray(v, np.float32) for k, v in flatten_paths(params).items()}
    hidden = config["hidden"]
    grid = image_size // config["patch"]
    state = {}
    posemb = (flat["position_embedding/pos_embedding"] if config["posemb"] == "learned"
              else sincos_posemb_2d(grid, grid, hidden))
    if posemb.shape[0] != grid * grid:
        raise CheckpointError(f"export: the position embedding has {posemb.shape[0]} positions, "
                              f"not the {grid}x{grid} grid of image_size={image_size}")
    state["embeddings.cls_token"] = flat["cls_token"]
    state["embeddings.position_embeddings"] = np.concatenate(
        [np.zeros((1, hidden), np.float32), posemb])[None]
    state["embeddings.patch_embeddings.projection.weight"] = \
        flat["patch_embedding/kernel"].transpose(3, 2, 0, 1)
    state["embeddings.patch_embeddings.projection.bias"] = flat["patch_embedding/bias"]
    for i in range(config["depth"]):
        block, to = f"encoder/block{i}/", f"encoder.layer.{i}."
        qkv_kernel, qkv_bias = flat[block + "attention/qkv/kernel"], flat[block + "attention/qkv/bias"]
        for j, name in enumerate(("query", "key", "value")):
            state[to + f"attention.attention.{name}.weight"] = \
                qkv_kernel[:, j].reshape(hidden, hidden).T
            state[to + f"attention.attention.{name}.bias"] = qkv_bias[j].reshape(hidden)
        state[to + "attention.output.dense.weight"] = \
            flat[block + "attention/out/kernel"].reshape(hidden, hidden).T
        state[to + "attention.output.dense.bias"] = flat[block + "attention/out/bias"]
        for source, target in (("norm1", "layernorm_before"), ("norm2", "layernorm_after")):
            state[to + f"{target}.weight"] = flat[block + f"{source}/scale"]
            state[to + f"{target}.bias"] = flat[block + f"{source}/bias"]
        for source, target in (("fc1", "intermediate.dense"), ("fc2", "output.dense")):
            state[to + f"{target}.weight"] = flat[block + f"mlp/{source}/kernel"].T
            state[to + f"{target}.bias"] = flat[block + f"mlp/{source}/bias"]
    state["layernorm.weight"] = flat["encoder/encoder_norm/scale"]
    state["layernorm.bias"] = flat["encoder/encoder_norm/bias"]
    return {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}


def export_hf_vit(params: Mapping[str, Any], config: Mapping[str, Any], directory: str,
                  image_size: int) -> str:
    """Writes `directory`/config.json and model.safetensors for a jaxssl ViT.

    params: the ViT's 'params' tree (e.g. state.params['backbone']); config:
    its model config (the keys `jaxssl.models.build_backbone` reads, dimensions
    filled in); image_size: the input side the exported model is for.
    Returns `directory`. CheckpointError for a ViT Hugging Face cannot hold.
    """
    import safetensors.numpy
    if config.get("pool") != "cls":
        raise CheckpointError(f"export: a Hugging Face ViT has a class token; this ViT has "
                              f"pool={config.get('pool')!r} (export needs pool='cls')")
    if config.get("scan_blocks"):
        raise CheckpointError("export: scan_blocks ViTs keep their blocks stacked; export a "
                              "model config with scan_blocks=False")
    state = hf_vit_state_dict(params, config, image_size)
    # The self-check: importing the state dict back gives the same arrays.
    tables = ("embeddings.cls_token", "embeddings.position_embeddings")
    back = apply_rules({k: v for k, v in state.items() if k not in tables},
                       hf_encoder_rules("", ""), {"heads": config["heads"]}, "export")
    flat = flatten_paths(params)
    for path, array in back.arrays.items():
        if not np.array_equal(array, np.asarray(flat[path], np.float32)):
            raise AssertionError(f"export: {path} does not import back unchanged")
    hf_config = {
        "architectures": ["ViTModel"], "model_type": "vit",
        "hidden_size": config["hidden"], "num_hidden_layers": config["depth"],
        "num_attention_heads": config["heads"],
        "intermediate_size": int(round(config["hidden"] * config["mlp_ratio"])),
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02, "layer_norm_eps": float(config.get("layer_norm_epsilon", 1e-6)),
        "image_size": image_size, "patch_size": config["patch"],
        "num_channels": int(state["embeddings.patch_embeddings.projection.weight"].shape[1]),
        "qkv_bias": True, "encoder_stride": config["patch"],
    }
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    safetensors.numpy.save_file(state, os.path.join(directory, "model.safetensors"),
                                metadata={"format": "pt"})
    return directory
