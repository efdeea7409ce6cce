"""MAE (He et al., 2021): masked autoencoder on a ViT.

Each step takes one lightly augmented view of every image (random resized
crop + flip: `LIGHT_AUGMENT`, the method's default `config.augment`), hides
`mae.mask_ratio` of its patches at random, and runs the encoder on the
visible patches only, so the encoder costs about (1 - mask_ratio) of a full
forward pass. A lighter decoder (its own width, depth and heads) receives
the encoded tokens plus one shared learnable mask token per hidden patch,
un-shuffled to the original patch order, with its own fixed 2-D sin-cos
position embedding, and predicts every patch's pixels. The loss
(`mim.mae_loss`) counts the hidden patches only, against per-patch
normalised pixels when `mae.norm_pix`.

The encoder is the config's ViT (`config.model`), stored under 'backbone'
like every method's encoder; evaluation features are its pooled output on
all patches, unmasked.

`MaskedImageMethod` is what MAE and SimMIM share: the training view, the
train step, evaluation features and the reconstruction pictures.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.data import augment
from jaxssl.methods import base, pictures
from jaxssl.models import build_backbone
from jaxssl.models.layers import dense
from jaxssl.models.vit import Encoder, ViT, sincos_posemb_2d
from jaxssl.objectives import mim

# MAE's pre-training augmentation: RandomResizedCrop(scale=(0.2, 1)) + flip, no colour.
LIGHT_AUGMENT = dict(crop_scale=(0.2, 1.0), flip_prob=0.5, jitter_prob=0.0, grayscale_prob=0.0,
                     blur_prob=0.0, solarize_prob=0.0)
PICTURE_MASK_SEED = 0  # the same masks at every evaluation, so pictures compare across steps

_token_init = nn.initializers.normal(stddev=0.02)


class PixelHead(nn.Module):
    """Linear map from tokens [B, L, D] to patch pixels float32 [B, L, patch * patch * C].

    The channel count C is taken from the call, so the head fits any data.
    """
    patch: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array, channels: int) -> jax.Array:
        return dense(self.patch ** 2 * channels, ("embed", None), self.dtype, "linear")(
            tokens).astype(jnp.float32)


def mask_token_param(module: nn.Module, width: int) -> jax.Array:
    """A learnable token float32 [1, 1, width] named 'mask_token' of `module`."""
    return module.param("mask_token",
                        nn.with_logical_partitioning(_token_init, (None, None, "embed")),
                        (1, 1, width), jnp.float32)


def num_prefix_tokens(backbone: ViT) -> int:
    """Tokens the ViT puts before the patch tokens: 1 (class token) with pool='cls', else 0."""
    return 1 if backbone.pool == "cls" else 0


class MaskedAutoencoder(nn.Module):
    """ViT encoder on the visible patches + light transformer decoder to every patch's pixels.

    Attributes:
      backbone: the encoder ViT.
      decoder_hidden, decoder_depth, decoder_heads, decoder_mlp_ratio: decoder size
        (decoder_hidden divisible by 4, for its sin-cos position embedding).
      dtype: compute dtype; parameters stay float32.
    """
    backbone: ViT
    decoder_hidden: int
    decoder_depth: int
    decoder_heads: int
    decoder_mlp_ratio: float
    dtype: Any = jnp.float32

    def setup(self):
        self.decoder_embed = dense(self.decoder_hidden, ("embed", "mlp"), self.dtype,
                                   "decoder_embed")
        self.mask_token = mask_token_param(self, self.decoder_hidden)
        self.decoder = Encoder(
            depth=self.decoder_depth, num_heads=self.decoder_heads,
            mlp_dim=int(round(self.decoder_hidden * self.decoder_mlp_ratio)), dtype=self.dtype,
            attention_impl=self.backbone.attention_impl,
            layer_norm_epsilon=self.backbone.layer_norm_epsilon)
        self.decoder_pred = PixelHead(self.backbone.patch, self.dtype)

    def encode(self, images: jax.Array, keep_idx: jax.Array, train: bool) -> jax.Array:
        """Images [B, H, W, C] -> encoded visible tokens [B, prefix + K, D].

        keep_idx int [B, K] lists the visible patches (row-major indices).
        Only those K tokens, plus a class token if the ViT has one, enter the
        transformer blocks.
        """
        tokens = self.backbone.embed_patches(images)
        visible = jnp.take_along_axis(tokens, keep_idx[:, :, None], axis=1)
        return self.backbone.encode_tokens(visible, train)

    def decode(self, encoded: jax.Array, ids_restore: jax.Array, grid: tuple[int, int],
               channels: int, train: bool) -> jax.Array:
        """Encoded tokens [B, prefix + K, D] -> predicted pixels float32 [B, L, p*p*channels].

        The K visible tokens are followed by L - K mask tokens and gathered
        into the original patch order with ids_restore int [B, L] (from
        `mim.random_masking`). A class token passes through the decoder
        without position embedding and is dropped from the output.
        grid = (H / p, W / p), whose product is L.
        """
        prefix = num_prefix_tokens(self.backbone)
        x = self.decoder_embed(encoded)
        batch, num_patches = ids_restore.shape
        hidden = jnp.broadcast_to(self.mask_token.astype(x.dtype),
                                  (batch, num_patches - (x.shape[1] - prefix), self.decoder_hidden))
        patches = jnp.concatenate([x[:, prefix:], hidden], axis=1)
        patches = jnp.take_along_axis(patches, ids_restore[:, :, None], axis=1)
        patches = patches + jnp.asarray(sincos_posemb_2d(*grid, self.decoder_hidden), x.dtype)
        x = self.decoder(jnp.concatenate([x[:, :prefix], patches], axis=1), train)
        return self.decoder_pred(x[:, prefix:], channels)

    def __call__(self, images, keep_idx, ids_restore, train: bool) -> jax.Array:
        """Images [B, H, W, C] + `mim.random_masking` outputs -> pixels float32 [B, L, p*p*C]."""
        grid = (images.shape[1] // self.backbone.patch, images.shape[2] // self.backbone.patch)
        return self.decode(self.encode(images, keep_idx, train), ids_restore, grid,
                           images.shape[-1], train)


def build_vit(config: ml_collections.ConfigDict) -> ViT:
    """The config's ViT in the config's compute dtype (`check_vit_config` has passed)."""
    return build_backbone(config.model, dtype=base.DTYPES[config.compute_dtype])



def backbone_features(model: nn.Module, images: jax.Array) -> jax.Array:
    """Pooled features float32 [B, D] of `model.backbone` on images [B, H, W, C], nothing masked."""
    return model.backbone(images, train=False)


class MaskedImageMethod(base.Method):
    """A masked-image-modelling recipe: view -> mask -> model -> pixel loss.

    Subclasses pass `model` (a module whose encoder ViT is `model.backbone`)
    and define
      model_inputs(rng, images) -> (args of self.model after images..., mask [B, L])
      objective(pred [B, L, p*p*C], images [B, H, W, C], mask [B, L]) -> scalar loss
    and `pixels_normalised`: whether pred is in per-patch normalised units.
    Images reaching the model are float32 in [-1, 1].
    """

    AUGMENTATION = LIGHT_AUGMENT
    pixels_normalised = False

    def __init__(self, config: ml_collections.ConfigDict, model: nn.Module, mask_ratio: float):
        super().__init__(config)
        self.model, self.mask_ratio = model, mask_ratio
        self.patch = config.model.patch
        self.recipe = augment.AugmentRecipe.from_config(config.augment)
        self.reconstruct = jax.jit(self._reconstruct)

    def masks(self, rng: jax.Array, images: jax.Array):
        """`mim.random_masking` for images [B, H, W, C]: (keep_idx, mask, ids_restore)."""
        num_patches = (images.shape[1] // self.patch) * (images.shape[2] // self.patch)
        return mim.random_masking(rng, images.shape[0], num_patches, self.mask_ratio)

    def training_view(self, rng: jax.Array, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> one augmented view float32 [B, S, S, C] in [-1, 1]."""
        size = base.view_size(self.config, images)
        views = augment.augment_batch(rng, augment.to_float(images), self.recipe, size)
        return base.to_model_range(views)

    def model_input(self, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> unaugmented float32 [B, S, S, C] in [-1, 1]."""
        return base.model_view(self.config, images)

    def predict(self, variables: dict, images: jax.Array, mask_rng: jax.Array, train: bool,
                dropout_rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Images [B, H, W, C] -> (pred float32 [B, L, p*p*C], mask float32 [B, L], 1 = hidden)."""
        args, mask = self.model_inputs(mask_rng, images)
        rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
        return self.model.apply(variables, images, *args, train=train, rngs=rngs), mask

    def init(self, rng: jax.Array, batch: dict) -> dict:
        images = self.model_input(batch["image"])
        args, _ = self.model_inputs(rng, images)  # init masks only fix shapes
        return self.model.init(rng, images, *args, train=False)

    def loss_fn(self, params, state, batch, rng, step):
        del step
        view_rng, mask_rng, dropout_rng = jax.random.split(rng, 3)
        images = self.training_view(view_rng, batch["image"])
        pred, mask = self.predict({"params": params, **state}, images, mask_rng, True, dropout_rng)
        loss = self.objective(pred, images, mask)
        return loss, ({"loss": loss}, state)

    def features(self, variables: dict, images: jax.Array) -> jax.Array:
        return self.model.apply(variables, self.model_input(images),
                                method=backbone_features).astype(jnp.float32)

    def _reconstruct(self, variables: dict, images: jax.Array):
        """uint8 [n, H, W, C] -> (model input [n, S, S, C], pred [n, L, p*p*C], mask [n, L]).

        The masks come from the fixed key PICTURE_MASK_SEED. Jitted as
        `self.reconstruct`.
        """
        model_images = self.model_input(images)
        pred, mask = self.predict(variables, model_images, jax.random.key(PICTURE_MASK_SEED),
                                  train=False)
        return model_images, pred, mask

    def write_pictures(self, variables: dict, batch: dict, path: str) -> None:
        """PNG at `path`: rows original / masked / reconstruction of batch['image'] uint8
        [n, H, W, C]."""
        host_variables = jax.device_get(variables)  # drawn on process 0 alone, from a host copy
        model_images, pred, mask = jax.device_get(self.reconstruct(host_variables,
                                                                   batch["image"]))
        pictures.write_reconstruction_grid(path, model_images, pred, mask, self.patch,
                                           self.pixels_normalised)


class MAE(MaskedImageMethod):
    """MAE with the config's ViT as encoder."""

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        # He et al. 2021: 75% masking, normalised-pixel targets, decoder 8 blocks x 512, 16 heads.
        return ml_collections.ConfigDict(dict(
            mask_ratio=0.75, norm_pix=True,
            decoder_hidden=512, decoder_depth=8, decoder_heads=16, decoder_mlp_ratio=4.0))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        base.check_vit_config(config, config.mae.mask_ratio, trains_pooled_features=False)

    def __init__(self, config: ml_collections.ConfigDict):
        mae = config.mae
        model = MaskedAutoencoder(
            backbone=build_vit(config), decoder_hidden=mae.decoder_hidden,
            decoder_depth=mae.decoder_depth, decoder_heads=mae.decoder_heads,
            decoder_mlp_ratio=mae.decoder_mlp_ratio, dtype=base.DTYPES[config.compute_dtype])
        super().__init__(config, model, mae.mask_ratio)
        self.pixels_normalised = mae.norm_pix

    def model_inputs(self, rng: jax.Array, images: jax.Array):
        keep_idx, mask, ids_restore = self.masks(rng, images)
        return (keep_idx, ids_restore), mask

    def objective(self, pred, images, mask):
        return mim.mae_loss(pred, images, mask, self.patch, self.config.mae.norm_pix)
