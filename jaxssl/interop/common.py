"""What every importer returns, the activation names of Hugging Face configs (importers
and exporters), and helpers the vision families share."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.errors import CheckpointError
from jaxssl.handoff import resize_position_embedding, set_paths

# Hugging Face's activation names (transformers' ACT2FN) -> jaxssl's (`layers.activation`).
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                  "quick_gelu": "quick_gelu", "relu": "relu"}
# jaxssl's -> the name an exported config.json gives it.
EXPORTED_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "quick_gelu": "quick_gelu",
                        "relu": "relu"}


def hf_activation(name: str, where: str) -> str:
    """Hugging Face activation name -> jaxssl's; CheckpointError if jaxssl has no such
    activation."""
    if name not in HF_ACTIVATIONS:
        raise CheckpointError(f"{where}: activation {name!r} is not one jaxssl has "
                              f"({', '.join(HF_ACTIVATIONS)})")
    return HF_ACTIVATIONS[name]


def exported_activation(name: str) -> str:
    """jaxssl's activation name -> Hugging Face's; CheckpointError for one it lacks."""
    if name not in EXPORTED_ACTIVATIONS:
        raise CheckpointError(f"export: Hugging Face has no activation for jaxssl's {name!r}")
    return EXPORTED_ACTIVATIONS[name]


@dataclasses.dataclass
class Imported:
    """A public checkpoint mapped onto a jaxssl model.

    family: e.g. 'timm_vit', 'hf_vit', 'hf_vit_mae', 'gpt2', 'bert', 'torchvision_resnet'.
    source: the spelling it was loaded from ('timm:FILE', 'hf:DIR', ...).
    config: the jaxssl model config the checkpoint implies (the keys of
      `jaxssl.models.default_model_config()` for image encoders, the
      `LanguageModel` fields for text models).
    arrays: {variable path: float32 array} of the whole model `build()` makes
      ('params/...', 'batch_stats/...').
    encoder: the arrays of the image encoder alone (what a fine-tuning hand-off
      loads), relative to the encoder module; the same as `arrays` unless the
      model has more than an encoder (MAE's decoder).
    skipped: checkpoint tensors not used (classifier heads, poolers, buffers).
    resized: {path: (checkpoint shape, new shape)} of interpolated position embeddings.
    build: () -> the flax module whose variables are `arrays`.
    """
    family: str
    source: str
    config: dict
    arrays: dict[str, np.ndarray]
    encoder: dict[str, np.ndarray]
    skipped: list[str]
    resized: dict[str, tuple]
    build: Callable[[], Any]
    extra: dict = dataclasses.field(default_factory=dict)

    def variables(self) -> dict:
        """The nested variables {'params': ..., ...} as jax arrays."""
        return jax.tree.map(jnp.asarray, set_paths({}, self.arrays))


def resize_grid(posemb: np.ndarray, new_side: int) -> np.ndarray:
    """Position embedding [g*g, D] -> [new_side**2, D], bilinear, as the hand-off resizes."""
    return np.asarray(resize_position_embedding(jnp.asarray(posemb), new_side))


def split_position_embedding(posemb: np.ndarray, cls_token: Optional[np.ndarray]
                             ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(patch position embedding [g*g, D], class token [1, 1, D] with its position folded in).

    timm and Hugging Face add position 0 of their [1, 1 + g*g, D] table to
    the class token; jaxssl gives the class token no position embedding, so
    that entry is added to the token itself (the same sum, computed once).
    """
    posemb = posemb.reshape(-1, posemb.shape[-1])
    if cls_token is None:
        return posemb, None
    return posemb[1:], (cls_token.reshape(1, 1, -1) + posemb[:1][None]).astype(np.float32)
