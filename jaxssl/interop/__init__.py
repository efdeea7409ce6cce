"""Public checkpoints in and out: timm, Hugging Face and torchvision weights on jaxssl models.

`load(spec)` reads a checkpoint named as

  timm:FILE          a timm VisionTransformer state dict (.safetensors)
  hf:DIR             a Hugging Face model directory (config.json + model.safetensors):
                     ViT, ViT-MAE, CLIP, SigLIP, GPT-2, BERT, T5
  torchvision:FILE   a torchvision ResNet state dict (.safetensors)

and returns an `Imported`: the jaxssl config the checkpoint implies (or the
given config, checked against it), the mapped arrays, and what was skipped
or resized. Every family maps names with the one mechanism in
`jaxssl.interop.mapping`. Anything that does not fit raises a
`CheckpointError` whose one-line message names the first mismatch.
`export_hf_vit` writes a jaxssl ViT back out as a Hugging Face directory.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from jaxssl.errors import CheckpointError
from jaxssl.interop.common import Imported

PREFIXES = ("timm", "hf", "torchvision")


def parse_spec(spec: str) -> Optional[tuple[str, str]]:
    """'timm:FILE' -> ('timm', 'FILE'); None for anything else (a jaxssl checkpoint)."""
    kind, sep, path = spec.partition(":")
    return (kind, path) if sep and kind in PREFIXES else None


def load(spec: str, given: Optional[Mapping[str, Any]] = None,
         image_size: Optional[int] = None, pixel_normalization=None) -> Imported:
    """The checkpoint `spec` ('timm:FILE', 'hf:DIR', 'torchvision:FILE') as an Imported.

    given: a jaxssl model config to check the checkpoint against (and to
      take what the checkpoint does not record, such as a timm ViT's heads);
      None builds the config from the checkpoint.
    image_size: for ViTs, the input size; the position embedding is resized
      to its grid.
    pixel_normalization: for ViTs, the (mean, std) per channel the checkpoint
      was trained with, folded into the patch projection so that the model
      takes jaxssl's [-1, 1] pixels; Hugging Face directories default to their
      preprocessor_config.json.
    """
    parsed = parse_spec(spec)
    if parsed is None:
        raise CheckpointError(f"checkpoint {spec!r}: expected one of "
                              f"{', '.join(p + ':PATH' for p in PREFIXES)}")
    kind, path = parsed
    if kind == "timm":
        from jaxssl.interop.vit import import_timm_vit
        return import_timm_vit(path, given, image_size, pixel_normalization=pixel_normalization)
    if kind == "torchvision":
        from jaxssl.interop.resnet import import_torchvision_resnet
        return import_torchvision_resnet(path, given)
    from jaxssl.interop.mapping import read_hf_directory
    hf_config, state = read_hf_directory(path)
    model_type = hf_config.get("model_type")
    if model_type in ("vit", "vit_mae"):
        from jaxssl.interop.vit import import_hf_vit
        return import_hf_vit(path, given, image_size, hf_config, state, pixel_normalization)
    if model_type == "clip":
        from jaxssl.interop.clip import import_clip
        return import_clip(path, hf_config, state, given, image_size)
    if model_type == "siglip":
        from jaxssl.interop.clip import import_siglip
        return import_siglip(path, hf_config, state, given, image_size)
    if model_type in ("gpt2", "bert", "t5") and given is not None and "name" in given:
        raise CheckpointError(f"hf:{path}: a {model_type} text model, not an image encoder "
                              f"for model.name={given['name']!r}")
    if model_type == "gpt2":
        from jaxssl.interop.gpt2 import import_gpt2
        return import_gpt2(path, hf_config, state, given)
    if model_type == "t5":
        from jaxssl.interop.t5 import import_t5
        return import_t5(path, hf_config, state, given)
    if model_type == "bert":
        from jaxssl.interop.bert import import_bert
        return import_bert(path, hf_config, state, given)
    raise CheckpointError(f"hf:{path}: model_type {model_type!r} has no importer "
                          f"(supported: vit, vit_mae, clip, siglip, gpt2, bert, t5)")


__all__ = ["Imported", "PREFIXES", "load", "parse_spec"]
