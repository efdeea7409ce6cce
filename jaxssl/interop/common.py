"""What every importer returns, and helpers the vision families share."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.handoff import resize_position_embedding, set_paths


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
