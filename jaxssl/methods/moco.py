"""MoCo v3 (Chen, Xie, He 2021): a query encoder with a predictor against a momentum key encoder.

Variables:
  'params'     backbone, projector, predictor: the query path, the only one trained.
  'batch_stats' running batch-norm statistics of the query path (used by `features`).
  'momentum'   {'backbone', 'projector'}: the key encoder, an exponential moving
               average of the query backbone and projector; never differentiated.

One training step, in the order of the reference code (moco-v3/moco/builder.py):
  m  = momentum_schedule(step, total_steps, m0)       # half-cycle cosine, m0 -> 1
  key encoder <- m * key encoder + (1 - m) * query    # updated before the keys
  q_i = predictor(projector(backbone(view_i)))        # i = 1, 2
  k_i = stop_gradient(key encoder(view_i))
  loss = contrastive.moco_v3(q1, q2, k1, k2, tau)     # symmetric, scaled by 2 tau

Negatives come from the whole global batch: the loss sees global arrays, or,
on a mesh that splits the batch, `contrastive.moco_v3_sharded` scores each
device's queries against all keys (see `jaxssl.objectives.contrastive`).
Under gradient accumulation they come from
each micro-batch instead, and the key encoder is updated once per micro-batch
with the same query weights, so the effective momentum per step is m^A.

Batch norm. Each view is its own forward pass, so every BN layer normalises
with the statistics of one view of the global batch, as the reference does
with SyncBN and one call per view. The query path updates its running
statistics once per view (view 1, then view 2). The key encoder also runs in
train mode, normalising with the current view's batch statistics exactly as
the reference's momentum encoder does; its running statistics are thrown
away: nothing ever evaluates the key encoder in inference mode, and keeping
them would mean either a second copy of every statistic or overwriting the
query encoder's, which `features` (kNN / linear-probe evaluation) relies on.

Views. Both views share crop, flip, colour jitter and grayscale from
`config.augment`; blur and solarize probabilities are per view
(`moco.view_blur_probs`, `moco.view_solarize_probs`, default BYOL's 1.0 / 0.1
and 0.0 / 0.2) and BYOL's colour jitter by default (`BYOL_COLOUR_JITTER`:
brightness, contrast, saturation, hue 0.4, 0.4, 0.2, 0.1): the asymmetric BYOL
recipe of MoCo v3. Empty tuples make both views use `augment.blur_prob` and
`augment.solarize_prob`.

With a ViT backbone, `model.frozen_patch_embed=True` gives the frozen random
patch projection of the paper (its gradient is zero; see `models.vit`), and
`Method.decay_mask` leaves it out of weight decay, as for every method, so it
keeps its random initial values exactly (the reference sets requires_grad=False).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.data import augment
from jaxssl.errors import ConfigError
from jaxssl.methods import base
from jaxssl.methods.simclr import _positive_top1
from jaxssl.models import build_backbone
from jaxssl.models.heads import MLPHead
from jaxssl.objectives import contrastive

MOMENTUM = "momentum"               # the method-state collection holding the key encoder
# BYOL's colour jitter (MoCo v3's augmentation); its other settings are SimCLR's, with the
# per-view blur and solarize of `moco.view_blur_probs` / `view_solarize_probs`.
BYOL_COLOUR_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)
KEY_ENCODER = ("backbone", "projector")


def momentum_schedule(step: jax.Array | int, total_steps: int, base_momentum: float) -> jax.Array:
    """EMA momentum at `step`: 1 - (1 - m0) * (cos(pi * step / total_steps) + 1) / 2.

    float32 scalar; m0 = `base_momentum` at step 0, rising to 1 at `total_steps`.
    `step` may be traced.
    """
    progress = jnp.asarray(step, jnp.float32) / total_steps
    return 1.0 - (1.0 - base_momentum) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def ema_update(ema: Any, online: Any, momentum: jax.Array | float) -> Any:
    """Leafwise momentum * ema + (1 - momentum) * online, for two trees of the same structure."""
    return jax.tree.map(lambda e, o: momentum * e + (1.0 - momentum) * o, ema, online)


def view_recipes(augment_config: Any, blur_probs: Sequence[float],
                 solarize_probs: Sequence[float]) -> tuple[augment.AugmentRecipe, ...]:
    """The two views' recipes: `augment_config` with per-view blur / solarize probabilities.

    Empty `blur_probs` / `solarize_probs` keep the augment config's value for both views.
    Raises ConfigError if one is neither empty nor of length 2.
    """
    recipe = augment.AugmentRecipe.from_config(augment_config)
    per_view = {"blur_prob": tuple(blur_probs), "solarize_prob": tuple(solarize_probs)}
    for field, probs in per_view.items():
        if len(probs) not in (0, 2):
            raise ConfigError(f"moco per-view {field} needs 0 or 2 values (view 1, view 2), "
                             f"got {probs}")
    return tuple(
        dataclasses.replace(recipe, **{field: probs[i] for field, probs in per_view.items() if probs})
        for i in range(2))


class MoCoV3Model(nn.Module):
    """Query path backbone -> projector -> predictor; the key path is backbone -> projector."""
    backbone: nn.Module
    projector: nn.Module
    predictor: nn.Module

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Images [B, H, W, C] -> queries [B, proj_dim] float32."""
        return self.predictor(self.keys(x, train), train=train)

    def keys(self, x: jax.Array, train: bool) -> jax.Array:
        """Images [B, H, W, C] -> projections [B, proj_dim] float32 (keys when run on the EMA weights)."""
        return self.projector(self.backbone(x, train=train), train=train)

    def features(self, x: jax.Array) -> jax.Array:
        """Images [B, H, W, C] -> backbone features [B, D] float32, inference mode."""
        return self.backbone(x, train=False)


class MocoV3(base.Method):
    """MoCo v3 on any backbone from `config.model` (ResNet or ViT)."""

    AUGMENTATION = BYOL_COLOUR_JITTER

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            temperature=0.2,
            momentum=0.99,                    # m0 of the cosine schedule to 1
            proj_hidden_dims=(4096, 4096),    # ViT: 3-layer projector (ResNet: one hidden layer)
            proj_dim=256,
            pred_hidden_dims=(4096,),
            pred_last_bn=True,                # ViT: True, ResNet: False (reference code)
            view_blur_probs=(1.0, 0.1),       # BYOL; () = augment.blur_prob for both views
            view_solarize_probs=(0.0, 0.2),   # BYOL; () = augment.solarize_prob for both views
        ))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        moco = config.moco
        view_recipes(config.augment, moco.view_blur_probs, moco.view_solarize_probs)
        if moco.temperature <= 0 or not 0 <= moco.momentum <= 1:
            raise ConfigError(f"moco.temperature must be > 0 and moco.momentum in [0, 1], got "
                              f"{moco.temperature} and {moco.momentum}")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        moco = config.moco
        self.view_recipes = view_recipes(config.augment, moco.view_blur_probs,
                                         moco.view_solarize_probs)
        dtype = base.DTYPES[config.compute_dtype]
        self.model = MoCoV3Model(
            backbone=build_backbone(config.model, dtype=dtype),
            projector=MLPHead(hidden_dims=tuple(moco.proj_hidden_dims), out_dim=moco.proj_dim,
                              use_bn=True, last_bn=True, dtype=dtype),
            predictor=MLPHead(hidden_dims=tuple(moco.pred_hidden_dims), out_dim=moco.proj_dim,
                              use_bn=True, last_bn=moco.pred_last_bn, dtype=dtype))

    def init(self, rng: jax.Array, batch: dict) -> dict:
        """Query variables plus the key encoder, a copy of the query backbone and projector."""
        variables = self.model.init(rng, base.model_view(self.config, batch["image"]),
                                    train=False)
        return {**variables, MOMENTUM: {name: variables["params"][name] for name in KEY_ENCODER}}

    def views(self, rng: jax.Array, images: jax.Array) -> list[jax.Array]:
        """uint8 [B, H, W, C] -> [view 1, view 2], each float32 [B, S, S, C] in [-1, 1]."""
        size = base.view_size(self.config, images)
        x = augment.to_float(images)
        return [base.to_model_range(augment.augment_batch(key, x, recipe, size))
                for key, recipe in zip(jax.random.split(rng, 2), self.view_recipes)]

    def update_key_encoder(self, params: dict, state: dict, step: jax.Array) -> tuple[dict, jax.Array]:
        """(EMA of the key encoder towards the query weights at this step, the momentum used)."""
        momentum = momentum_schedule(step, self.config.total_steps, self.config.moco.momentum)
        online = {name: params[name] for name in KEY_ENCODER}
        return ema_update(state[MOMENTUM], online, momentum), momentum

    def keys(self, key_encoder: dict, stats: dict, view: jax.Array,
             rngs: dict | None = None) -> jax.Array:
        """Keys [B, proj_dim] float32 of one view, train-mode BN, stop-gradient.

        `stats` are the query path's non-parameter collections; BN in train
        mode does not read them, and the running statistics it computes are
        discarded (see the module docstring).
        """
        k, _ = self.model.apply({"params": key_encoder, **stats}, view, train=True,
                                mutable=list(stats), method=MoCoV3Model.keys, rngs=rngs)
        return jax.lax.stop_gradient(k.astype(jnp.float32))

    def queries(self, params: dict, stats: dict, view: jax.Array, rngs: dict | None = None
                ) -> tuple[jax.Array, dict]:
        """(Queries [B, proj_dim] float32 of one view, `stats` with updated running statistics)."""
        q, updated = self.model.apply({"params": params, **stats}, view, train=True,
                                      mutable=list(stats), rngs=rngs)
        return q.astype(jnp.float32), {**stats, **updated}

    def loss_fn(self, params, state, batch, rng, step):
        view1, view2 = self.views(rng, batch["image"])
        stats = {name: value for name, value in state.items() if name != MOMENTUM}
        key_encoder, momentum = self.update_key_encoder(params, state, step)
        # Drop-path (ViT) masks: one stream per (encoder, view), like separate forward passes.
        k1, k2 = (self.keys(key_encoder, stats, view, base.dropout_rngs(rng, stream))
                  for stream, view in enumerate((view1, view2)))
        q1, stats = self.queries(params, stats, view1, base.dropout_rngs(rng, 2))
        q2, stats = self.queries(params, stats, view2, base.dropout_rngs(rng, 3))
        loss = base.batch_sharded_loss(contrastive.moco_v3, contrastive.moco_v3_sharded,
                                       (q1, q2, k1, k2), self.config.moco.temperature)
        metrics = {"loss": loss, "momentum": momentum, "positive_top1": _positive_top1(q1, k2)}
        return loss, (metrics, {**stats, MOMENTUM: key_encoder})

    def features(self, variables: dict, images: jax.Array) -> jax.Array:
        """uint8 images [B, H, W, C] -> query-backbone features [B, D] float32."""
        return self.model.apply(variables, base.model_view(self.config, images),
                                method=MoCoV3Model.features).astype(jnp.float32)
