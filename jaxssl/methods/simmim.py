"""SimMIM (Xie et al., 2021): mask tokens in the encoder, linear pixel head, L1 loss.

Each step takes one lightly augmented view of every image (by default the paper's
random resized crop at scale 0.67-1 + flip), hides
`simmim.mask_ratio` of its patches (uniformly at random per example, from
`mim.random_masking`; the paper masks 32 x 32 pixel blocks, here the blocks
are single patches), replaces the hidden patches' embeddings by one
learnable mask token before the position embedding is added, and runs the
whole token sequence through the encoder. A linear head maps every output
patch token to that patch's pixels; the loss (`mim.simmim_loss`) is the
mean absolute error over the hidden patches' pixels, in the [-1, 1] units
the encoder sees.

The encoder is the config's ViT under 'backbone'; evaluation features are
its pooled output on the unmasked image.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.methods import base
from jaxssl.methods.mae import (LIGHT_AUGMENT, MaskedImageMethod, PixelHead, build_vit,
                                mask_token_param, num_prefix_tokens)
from jaxssl.models.vit import ViT
from jaxssl.objectives import mim


class MaskTokenViT(nn.Module):
    """ViT whose hidden patches are replaced by a learnable mask token, + linear pixel head.

    Attributes:
      backbone: the encoder ViT.
      dtype: compute dtype; parameters stay float32.
    """
    backbone: ViT
    dtype: Any = jnp.float32

    def setup(self):
        self.mask_token = mask_token_param(self, self.backbone.hidden)
        self.pixel_head = PixelHead(self.backbone.patch, self.dtype)

    def __call__(self, images: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
        """Images [B, H, W, C], mask [B, L] (1 = hidden) -> pixels float32 [B, L, p*p*C]."""
        grid = self.backbone.patch_embedding(images)
        hidden = mask.reshape(grid.shape[:3] + (1,)).astype(grid.dtype)
        grid = grid * (1 - hidden) + self.mask_token.astype(grid.dtype)[0] * hidden
        tokens = self.backbone.encode_tokens(self.backbone.position_embedding(grid), train)
        return self.pixel_head(tokens[:, num_prefix_tokens(self.backbone):], images.shape[-1])


class SimMIM(MaskedImageMethod):
    """SimMIM with the config's ViT as encoder."""

    # The paper's pre-training augmentation: RandomResizedCrop(scale=(0.67, 1)) + flip.
    AUGMENTATION = {**LIGHT_AUGMENT, "crop_scale": (0.67, 1.0)}

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(mask_ratio=0.6))  # the paper's best ratio

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        base.check_vit_config(config, config.simmim.mask_ratio, trains_pooled_features=False)

    def __init__(self, config: ml_collections.ConfigDict):
        model = MaskTokenViT(backbone=build_vit(config), dtype=base.DTYPES[config.compute_dtype])
        super().__init__(config, model, config.simmim.mask_ratio)

    def model_inputs(self, rng: jax.Array, images: jax.Array):
        _, mask, _ = self.masks(rng, images)
        return (mask,), mask

    def objective(self, pred, images, mask):
        return mim.simmim_loss(pred, images, mask, self.patch)
