"""SimCLR (Chen et al., 2020): two augmented views, MLP projection, NT-Xent.

Both views of the global batch go through the encoder together, so batch
norm statistics cover all 2B views of the global batch, and NT-Xent takes
its negatives from the whole global batch (on a mesh that splits the batch,
`contrastive.nt_xent_sharded`: each device scores its rows against all).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.data import augment
from jaxssl.errors import ConfigError
from jaxssl.methods import base
from jaxssl.models import build_backbone
from jaxssl.models.heads import MLPHead
from jaxssl.objectives import contrastive


class EncoderWithProjection(nn.Module):
    """Backbone features [B, D] and their projections [B, proj_dim]."""
    backbone: nn.Module
    projector: nn.Module

    def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        features = self.backbone(x, train=train)
        return features, self.projector(features, train=train)


class SimCLR(base.Method):
    """SimCLR on any backbone from `config.model`."""

    AUGMENTATION = {}   # SimCLR's recipe is the shared default

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            temperature=0.5,           # the paper's CIFAR-10 value (ImageNet: 0.1)
            proj_hidden_dims=(2048,),  # SimCLR v1: one hidden layer; v2 uses two
            proj_dim=128,
        ))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        simclr = config.simclr
        if simclr.temperature <= 0 or simclr.proj_dim < 1:
            raise ConfigError(f"simclr.temperature must be > 0 and simclr.proj_dim >= 1, got "
                              f"{simclr.temperature} and {simclr.proj_dim}")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.recipe = augment.AugmentRecipe.from_config(config.augment)
        dtype = base.DTYPES[config.compute_dtype]
        self.model = EncoderWithProjection(
            backbone=build_backbone(config.model, dtype=dtype),
            projector=MLPHead(hidden_dims=tuple(config.simclr.proj_hidden_dims),
                              out_dim=config.simclr.proj_dim, use_bn=True, last_bn=False,
                              dtype=dtype))

    def init(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, base.model_view(self.config, batch["image"]), train=False)

    def _two_views(self, rng: jax.Array, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> [2B, S, S, C] in [-1, 1]: view 1 of every example, then view 2."""
        size = base.view_size(self.config, images)
        x = augment.to_float(images)
        views = augment.augment_batch(rng, jnp.concatenate([x, x]), self.recipe, size)
        return base.to_model_range(views)

    def loss_fn(self, params, state, batch, rng, step):
        del step
        views = self._two_views(rng, batch["image"])
        (_, z), new_state = self.model.apply(
            {"params": params, **state}, views, train=True, mutable=list(state),
            rngs=base.dropout_rngs(rng))
        z1, z2 = jnp.split(z.astype(jnp.float32), 2)
        loss = base.batch_sharded_loss(contrastive.nt_xent, contrastive.nt_xent_sharded, (z1, z2),
                                       self.config.simclr.temperature)
        metrics = {"loss": loss, "positive_top1": _positive_top1(z1, z2)}
        return loss, (metrics, new_state)

    def features(self, variables: dict, images: jax.Array) -> jax.Array:
        features, _ = self.model.apply(variables, base.model_view(self.config, images),
                                       train=False)
        return features.astype(jnp.float32)


def _positive_top1(z1: jax.Array, z2: jax.Array) -> jax.Array:
    """Fraction of view-1 anchors whose nearest view-2 embedding is their own pair."""
    z1 = z1 / jnp.linalg.norm(z1, axis=-1, keepdims=True)
    z2 = z2 / jnp.linalg.norm(z2, axis=-1, keepdims=True)
    nearest = jnp.argmax(z1 @ z2.T, axis=-1)
    return jnp.mean(nearest == jnp.arange(z1.shape[0]))
