"""jaxssl models written out as Hugging Face directories (config.json + model.safetensors):
a ViT as `ViTModel` (`export_hf_vit`), a decoder-only LanguageModel as `GPT2LMHeadModel`
(`export_hf_gpt2`).

The ViT needs a class token (pool='cls'), as Hugging Face's ViT always has
one; its features are then the class token's output, as jaxssl's. The
position table is the learned one, or the fixed sin-cos table at
`image_size` (Hugging Face keeps it as a parameter), with a zero row for the
class token, whose own value already plays that part in jaxssl. The pooler
is not written (load with add_pooling_layer=False, or transformers
initialises it). Before anything is written, the state dict is imported back
through `jaxssl.interop.vit` and compared with the given arrays, so the
export and the importer cannot drift apart.

A LanguageModel exports as GPT-2 when it is one: learned positions, tied
embeddings, pre-norm blocks (jaxssl's defaults); its layer norm epsilon and
activation go into config.json (layer_norm_epsilon, activation_function; a
ViT's as layer_norm_eps and hidden_act), so transformers computes the same
function.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from jaxssl.errors import CheckpointError
from jaxssl.handoff import flatten_paths
from jaxssl.interop.common import exported_activation
from jaxssl.interop.gpt2 import gpt2_rules
from jaxssl.interop.mapping import Rule, apply_rules
from jaxssl.interop.vit import hf_encoder_rules


def assert_imports_back(state: Mapping[str, np.ndarray], rules: list[Rule], heads: int,
                        expected: Mapping[str, Any]) -> None:
    """The exporter's self-check: importing `state` back with `rules` gives `expected`
    ({jaxssl path: array}) exactly."""
    back = apply_rules(state, rules, {"heads": heads}, "export").arrays
    if set(back) != set(expected):
        raise AssertionError(f"export: paths differ on import: "
                             f"{sorted(set(back) ^ set(expected))[:4]}")
    for path, array in back.items():
        if not np.array_equal(array, np.asarray(expected[path], np.float32)):
            raise AssertionError(f"export: {path} does not import back unchanged")


def _write(directory: str, hf_config: dict, state: Mapping[str, np.ndarray]) -> str:
    import safetensors.numpy
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    safetensors.numpy.save_file(dict(state), os.path.join(directory, "model.safetensors"),
                                metadata={"format": "pt"})
    return directory


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
    if config.get("pool") != "cls":
        raise CheckpointError(f"export: a Hugging Face ViT has a class token; this ViT has "
                              f"pool={config.get('pool')!r} (export needs pool='cls')")
    if config.get("scan_blocks"):
        raise CheckpointError("export: scan_blocks ViTs keep their blocks stacked; export a "
                              "model config with scan_blocks=False")
    if config.get("pre_norm"):
        raise CheckpointError("export: a Hugging Face ViT has no norm before its blocks; this "
                              "ViT has pre_norm=True (CLIP's)")
    hidden_act = exported_activation(config.get("activation", "gelu"))
    state = hf_vit_state_dict(params, config, image_size)
    # The self-check: importing the state dict back gives the same arrays.
    tables = ("embeddings.cls_token", "embeddings.position_embeddings")
    flat = {p: a for p, a in flatten_paths(params).items()
            if p not in ("cls_token", "position_embedding/pos_embedding")}
    assert_imports_back({k: v for k, v in state.items() if k not in tables},
                        hf_encoder_rules("", ""), config["heads"], flat)
    hf_config = {
        "architectures": ["ViTModel"], "model_type": "vit",
        "hidden_size": config["hidden"], "num_hidden_layers": config["depth"],
        "num_attention_heads": config["heads"],
        "intermediate_size": int(round(config["hidden"] * config["mlp_ratio"])),
        "hidden_act": hidden_act, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02, "layer_norm_eps": float(config.get("layer_norm_epsilon", 1e-6)),
        "image_size": image_size, "patch_size": config["patch"],
        "num_channels": int(state["embeddings.patch_embeddings.projection.weight"].shape[1]),
        "qkv_bias": True, "encoder_stride": config["patch"],
    }
    return _write(directory, hf_config, state)


def export_hf_gpt2(params: Mapping[str, Any], config: Mapping[str, Any], directory: str) -> str:
    """Writes a decoder-only jaxssl LanguageModel as a GPT2LMHeadModel directory.

    params: the LanguageModel's 'params' tree; config: its fields (vocab_size,
    max_length, hidden, depth, num_heads, mlp_dim, and any non-default options).
    CheckpointError for a model GPT-2 cannot express. Returns `directory`.
    """
    unsupported = {"posemb": "learned", "tied_embeddings": True, "post_norm": False,
                   "type_vocab_size": 0, "embedding_norm": False, "logits_transform": False,
                   "tied_bias": False}
    for key, value in unsupported.items():
        if config.get(key, value) != value:
            raise CheckpointError(f"export: GPT-2 needs {key}={value!r}, this model has "
                                  f"{config[key]!r}")
    activation = exported_activation(config.get("activation", "gelu"))
    flat = {k: np.asarray(v, np.float32) for k, v in flatten_paths(params).items()}
    hidden = config["hidden"]
    state = {"transformer.wte.weight": flat["embedder/token_embedding"],
             "transformer.wpe.weight": flat["embedder/position_embedding"],
             "transformer.ln_f.weight": flat["stack/final_norm/scale"],
             "transformer.ln_f.bias": flat["stack/final_norm/bias"]}
    for i in range(config["depth"]):
        block, to = f"stack/block{i}/", f"transformer.h.{i}."
        for source, target in (("self_attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
            state[to + f"{target}.weight"] = flat[block + f"{source}/scale"]
            state[to + f"{target}.bias"] = flat[block + f"{source}/bias"]
        # Conv1D weights are [in, out]: jaxssl kernels flattened, not transposed.
        for source, target in (("self_attention/qkv", "attn.c_attn"),
                               ("self_attention/out", "attn.c_proj"),
                               ("mlp/fc1", "mlp.c_fc"), ("mlp/fc2", "mlp.c_proj")):
            kernel, bias = flat[block + source + "/kernel"], flat[block + source + "/bias"]
            rows = hidden if source != "mlp/fc2" else kernel.shape[0]
            state[to + f"{target}.weight"] = kernel.reshape(rows, -1)
            state[to + f"{target}.bias"] = bias.reshape(-1)
    state = {k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}
    assert_imports_back(state, gpt2_rules(), config["num_heads"],
                        {"params/" + p: a for p, a in flat.items()})
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config["vocab_size"], "n_positions": config["max_length"],
        "n_embd": hidden, "n_layer": config["depth"], "n_head": config["num_heads"],
        "n_inner": config["mlp_dim"], "activation_function": activation,
        "layer_norm_epsilon": float(config.get("layer_norm_epsilon", 1e-6)),
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "tie_word_embeddings": True,
    }
    return _write(directory, hf_config, state)


# ------------------------------------------------------------ command line
def export_checkpoint(checkpoint: str, out: str, image_size: int = 0,
                      subtree: str = "backbone") -> str:
    """The ViT under `subtree` of a jaxssl checkpoint (a workdir or step directory) as a
    Hugging Face ViTModel directory `out`; the image size defaults to the run's
    data.image_size. Reads only that subtree, through the fine-tuning hand-off."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from jaxssl import handoff
    from jaxssl.handoff import HandoffSpec, find_step_dir, read_saved_config, set_paths
    from jaxssl.interop.vit import expected_shapes
    from jaxssl.models import VIT_BACKBONE_NAMES, _vit_dims, build_backbone, default_model_config

    step_dir = find_step_dir(checkpoint)
    saved = read_saved_config(step_dir)
    if not saved:
        raise CheckpointError(f"{step_dir}: no config saved with the checkpoint")
    model = {**default_model_config().to_dict(), **saved["model"]}
    if model["name"] not in VIT_BACKBONE_NAMES:
        raise CheckpointError(f"{step_dir}: model.name={model['name']!r} is not a ViT")
    model.update(_vit_dims(model), name="vit")
    image_size = image_size or saved.get("data", {}).get("image_size", 0)
    if not image_size:
        raise CheckpointError(f"{step_dir}: the run has no data.image_size; pass --image_size")
    shapes = handoff.saved_shapes(step_dir)
    kernel = shapes.get(f"params/{subtree}/patch_embedding/kernel")
    if kernel is None:
        raise CheckpointError(f"{step_dir}: no ViT patch embedding under '{subtree}'")
    target = {f"{path.partition('/')[0]}/{handoff.DESTINATION_ENCODER}/"
              f"{path.partition('/')[2]}": shape
              for path, shape in expected_shapes(build_backbone(model), image_size,
                                                 kernel[2]).items()}
    spec = HandoffSpec(checkpoint=step_dir, subtree=subtree)
    plan = handoff.plan_handoff(spec, step_dir, shapes, target)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    abstract = {path: jax.ShapeDtypeStruct(target[path], np.float32,
                                           sharding=NamedSharding(mesh, PartitionSpec()))
                for path in plan.loads}
    arrays = handoff.restore_handoff(plan, abstract)
    params = set_paths({}, {path.split("/", 2)[2]: np.asarray(array)
                            for path, array in arrays.items() if path.startswith("params/")})
    return export_hf_vit(params, model, out, image_size)


def main(argv=None) -> int:
    """python -m jaxssl.interop.export --checkpoint=WORKDIR --out=DIR [--image_size=N]
    [--subtree=backbone]; bad input: one line on stderr, exit status 2."""
    import argparse

    from jaxssl.errors import InputError
    from jaxssl.main import report_input_error
    from jaxssl.output_paths import check_output_dir
    parser = argparse.ArgumentParser(prog="python -m jaxssl.interop.export",
                                     description=export_checkpoint.__doc__)
    parser.add_argument("--checkpoint", required=True, help="a jaxssl workdir or step directory")
    parser.add_argument("--out", required=True, help="the Hugging Face directory to write")
    parser.add_argument("--image_size", type=int, default=0)
    parser.add_argument("--subtree", default="backbone")
    args = parser.parse_args(argv)
    try:
        check_output_dir(args.out, "--out")
        directory = export_checkpoint(args.checkpoint, args.out, args.image_size, args.subtree)
    except InputError as error:
        return report_input_error(error)
    print(f"wrote {directory}/config.json and model.safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
