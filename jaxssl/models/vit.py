"""Vision Transformer with logically named parameters.

Shapes: images [B, H, W, C] (H, W divisible by the patch size), tokens
[B, L, D] with L = (H / patch) * (W / patch) in row-major patch order, and
pooled features [B, D] in float32. Parameters are float32; `dtype` is the
compute dtype.

The API is split for the masked-image-modelling methods:
`ViT.embed_patches` (patch projection + position embedding),
`ViT.encode_tokens` (class token, transformer blocks, final norm) and
`Encoder`, the block stack, which an MAE decoder instantiates at its own size.
"""
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxssl.errors import ConfigError
from jaxssl.models.layers import (LAYER_NORM_EPSILON, Attention, MlpBlock, layer_norm,
                                  xavier_uniform)

VIT_SIZES = {
    'tiny': dict(hidden=192, depth=12, heads=3, mlp_ratio=4.0),
    'small': dict(hidden=384, depth=12, heads=6, mlp_ratio=4.0),
    'base': dict(hidden=768, depth=12, heads=12, mlp_ratio=4.0),
    'large': dict(hidden=1024, depth=24, heads=16, mlp_ratio=4.0),
}
POSEMB_KINDS = ('sincos2d', 'learned')
POOL_KINDS = ('cls', 'gap', 'map')

_token_init = nn.initializers.normal(stddev=0.02)


def vit_config(name: str) -> dict:
    """Standard size `name` ('tiny'|'small'|'base'|'large') ->
    dict(hidden, depth, heads, mlp_ratio)."""
    if name not in VIT_SIZES:
        raise ConfigError(f'Unknown ViT size {name!r}; valid: {sorted(VIT_SIZES)}')
    return dict(VIT_SIZES[name])


def _sincos_1d(positions: np.ndarray, dim: int) -> np.ndarray:
    """[N] positions -> [N, dim] embedding: sin of dim/2 frequencies, then cos (MAE)."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(positions, omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_posemb_2d(grid_h: int, grid_w: int, dim: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding of MAE, float32 [grid_h * grid_w, dim].

    Row t = i * grid_w + j is patch (row i, column j). Its first dim/2 entries
    embed the column j and the last dim/2 the row i, each as
    [sin(p * w_k), cos(p * w_k)] with w_k = 10000^(-k / (dim/4)), k < dim/4.
    `dim` must be divisible by 4.
    """
    if dim % 4:
        raise ConfigError(f'sincos_posemb_2d needs dim divisible by 4, got {dim}')
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing='ij')
    emb = np.concatenate([_sincos_1d(cols.ravel(), dim // 2),
                          _sincos_1d(rows.ravel(), dim // 2)], axis=1)
    return emb.astype(np.float32)


def drop_path(rng: jax.Array, x: jax.Array, rate) -> jax.Array:
    """Stochastic depth: zero each sample of x [B, ...] with probability `rate`.

    Kept samples are scaled by 1 / (1 - rate), so the expectation is x. `rate`
    may be a traced scalar; rate = 0 returns x exactly.
    """
    keep_prob = 1.0 - rate
    keep = jax.random.bernoulli(rng, keep_prob, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / keep_prob, 0).astype(x.dtype)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + DropPath(MHSA(LN(x))), then the same with the MLP.

    `drop_rate` is this block's stochastic-depth rate (a float, or a traced
    scalar under `nn.scan`); `deterministic=True` disables it.
    [B, T, D] -> [B, T, D] in `dtype`. `layer_norm_epsilon`: of both norms
    (1e-6; Hugging Face ViTs use 1e-12); `activation`: the MLP's (`layers.activation`).
    """
    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    attention_impl: Optional[str] = None
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: str = 'gelu'

    @nn.compact
    def __call__(self, x, drop_rate, deterministic: bool):
        def residual(y):
            if deterministic:
                return x + y
            return x + drop_path(self.make_rng('dropout'), y, drop_rate)

        y = layer_norm(self.dtype, 'norm1', self.layer_norm_epsilon)(x)
        x = residual(Attention(self.num_heads, self.dtype, attention_impl=self.attention_impl,
                                name='attention')(y))
        y = layer_norm(self.dtype, 'norm2', self.layer_norm_epsilon)(x)
        return residual(MlpBlock(self.mlp_dim, self.dtype, activation=self.activation,
                                 name='mlp')(y))


class _ScannedEncoderBlock(EncoderBlock):
    """EncoderBlock with the (carry, output) signature `nn.scan` expects."""

    def __call__(self, x, drop_rate, deterministic: bool):
        return super().__call__(x, drop_rate, deterministic), None


class Encoder(nn.Module):
    """Stack of `depth` EncoderBlocks followed by a final LayerNorm.

    Width D is taken from the input tokens [B, T, D]; output [B, T, D] in
    `dtype`. Stochastic depth rises linearly from 0 (first block) to
    `drop_path` (last block) and is active only when `train`; it draws from the
    'dropout' rng stream.

    With `scan_blocks` the blocks are one `nn.scan`ned module 'blocks' whose
    parameters are stacked on a leading axis named 'layers'; otherwise they are
    'block0' ... 'block{depth-1}'. `remat` recomputes each block's activations in
    the backward pass. `layer_norm_epsilon`, `activation`: see EncoderBlock.
    """
    depth: int
    num_heads: int
    mlp_dim: int
    drop_path: float = 0.0
    scan_blocks: bool = False
    remat: bool = False
    dtype: Any = jnp.float32
    attention_impl: Optional[str] = None
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: str = 'gelu'

    @nn.compact
    def __call__(self, x, train: bool):
        deterministic = not train or self.drop_path == 0.0
        rates = np.linspace(0.0, self.drop_path, self.depth)
        block_cls = _ScannedEncoderBlock if self.scan_blocks else EncoderBlock
        if self.remat:
            # static_argnums counts `self` as 0: `deterministic` is argument 3.
            block_cls = nn.remat(block_cls, prevent_cse=not self.scan_blocks, static_argnums=(3,))
        block_kwargs = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                            dtype=self.dtype, attention_impl=self.attention_impl,
                            layer_norm_epsilon=self.layer_norm_epsilon,
                            activation=self.activation)
        if self.scan_blocks:
            stack = nn.scan(
                block_cls, variable_axes={'params': 0},
                split_rngs={'params': True, 'dropout': True},
                in_axes=(0, nn.broadcast), length=self.depth,
                metadata_params={nn.PARTITION_NAME: 'layers'})
            x, _ = stack(**block_kwargs, name='blocks')(
                x, jnp.asarray(rates, jnp.float32), deterministic)
        else:
            for i, rate in enumerate(rates):
                x = block_cls(**block_kwargs, name=f'block{i}')(x, float(rate), deterministic)
        return layer_norm(self.dtype, 'encoder_norm', self.layer_norm_epsilon)(x)


class MAPHead(nn.Module):
    """Multi-head attention pooling (SigLIP's 'MAP' head): tokens [B, L, D] -> [B, D].

    A learned query 'probe' [1, 1, D] attends over the tokens ('attention',
    cross-attention kernels 'query' and 'key_value', `attention_impl` as in
    `layers.Attention`), then a pre-norm MLP residual ('norm', 'mlp'); the result
    is the probe's output, in `dtype`.
    """
    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: str = 'gelu'
    attention_impl: Optional[str] = None

    @nn.compact
    def __call__(self, tokens):
        hidden = tokens.shape[-1]
        probe = self.param('probe', nn.with_logical_partitioning(_token_init, (None, None, 'embed')),
                           (1, 1, hidden), jnp.float32)
        query = jnp.broadcast_to(probe.astype(tokens.dtype), (tokens.shape[0], 1, hidden))
        y = Attention(self.num_heads, self.dtype, attention_impl=self.attention_impl,
                      name='attention')(query, tokens)
        normed = layer_norm(self.dtype, 'norm', self.layer_norm_epsilon)(y)
        y = y + MlpBlock(self.mlp_dim, self.dtype, activation=self.activation, name='mlp')(normed)
        return y[:, 0]


class PatchEmbedding(nn.Module):
    """Non-overlapping patch projection (a conv with kernel = stride = patch).

    [B, H, W, C] -> [B, H/patch, W/patch, hidden] in `dtype`. With `frozen` the
    kernel and bias are used through `stop_gradient` (MoCo v3), so their
    gradients are zero; exclude them from weight decay in the optimizer.
    """
    patch: int
    hidden: int
    frozen: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        p = self.patch
        if h % p or w % p:
            raise ConfigError(f'image size {h}x{w} is not divisible by patch size {p}')
        kernel = self.param(
            'kernel', nn.with_logical_partitioning(
    xavier_uniform, ('patch_h', 'patch_w', 'conv_in', 'embed')),
            (p, p, c, self.hidden), jnp.float32)
        bias = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('embed',)),
                          (self.hidden,), jnp.float32)
        if self.frozen:
            kernel, bias = jax.lax.stop_gradient((kernel, bias))
        patches = x.astype(self.dtype).reshape(b, h // p, p, w // p, p, c)
        y = jnp.einsum('bipjqc,pqcd->bijd', patches, kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)


class PositionEmbedding(nn.Module):
    """Adds a position embedding to a patch grid and flattens it.

    [B, gh, gw, D] -> [B, gh*gw, D]. kind 'sincos2d' adds the fixed
    `sincos_posemb_2d` table (any grid size); 'learned' adds a parameter
    'pos_embedding' [gh*gw, D] whose size is fixed at init.
    """
    kind: str = 'sincos2d'

    @nn.compact
    def __call__(self, grid):
        b, gh, gw, d = grid.shape
        if self.kind == 'sincos2d':
            posemb = jnp.asarray(sincos_posemb_2d(gh, gw, d))
        elif self.kind == 'learned':
            posemb = self.param(
                'pos_embedding', nn.with_logical_partitioning(_token_init, ('pos', 'embed')),
                (gh * gw, d), jnp.float32)
        else:
            raise ConfigError(f'Unknown posemb {self.kind!r}; valid: {POSEMB_KINDS}')
        return grid.reshape(b, gh * gw, d) + posemb.astype(grid.dtype)


class ViT(nn.Module):
    """Vision Transformer feature extractor.

    Attributes:
      patch: patch size in pixels.
      hidden, depth, heads, mlp_ratio: width D, number of blocks, attention
        heads, MLP width / D.
      posemb: 'sincos2d' (fixed, MAE) or 'learned'.
      pool: 'cls' (prepend a class token, features = its output), 'gap'
        (no class token, features = mean over tokens) or 'map' (no class token,
        features = a `MAPHead` 'map_head' over the tokens, SigLIP's).
      drop_path: stochastic-depth rate of the last block.
      scan_blocks, remat: see `Encoder`.
      frozen_patch_embed: no gradient into the patch projection (MoCo v3).
      dtype: compute dtype; parameters stay float32.
      attention_impl: see `layers.Attention`.
      layer_norm_epsilon: of every layer norm (1e-6; 1e-12 for Hugging Face ViTs).
      activation: of the MLPs ('gelu'; CLIP's 'quick_gelu', see `layers.activation`).
      pre_norm: a LayerNorm 'pre_norm' over the tokens (class token included) before
        the first block, as CLIP's vision tower has.
    """
    patch: int = 16
    hidden: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    posemb: str = 'sincos2d'
    pool: str = 'gap'
    drop_path: float = 0.0
    scan_blocks: bool = False
    remat: bool = False
    frozen_patch_embed: bool = False
    dtype: Any = jnp.float32
    attention_impl: Optional[str] = None
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: str = 'gelu'
    pre_norm: bool = False

    @classmethod
    def from_name(cls, name: str, patch: int = 16, **overrides) -> 'ViT':
        """ViT of standard size `name` ('tiny'|'small'|'base'|'large'); overrides win."""
        return cls(**{**vit_config(name), 'patch': patch, **overrides})

    @property
    def features_dim(self) -> int:
        return self.hidden

    def setup(self):
        if self.pool not in POOL_KINDS:
            raise ConfigError(f'Unknown pool {self.pool!r}; valid: {POOL_KINDS}')
        self.patch_embedding = PatchEmbedding(
            self.patch, self.hidden, frozen=self.frozen_patch_embed, dtype=self.dtype)
        self.position_embedding = PositionEmbedding(self.posemb)
        if self.pool == 'cls':
            self.cls_token = self.param(
                'cls_token', nn.with_logical_partitioning(_token_init, (None, None, 'embed')),
                (1, 1, self.hidden), jnp.float32)
        self.encoder = Encoder(
            depth=self.depth, num_heads=self.heads, mlp_dim=int(
                round(self.hidden * self.mlp_ratio)),
            drop_path=self.drop_path, scan_blocks=self.scan_blocks, remat=self.remat,
            dtype=self.dtype, attention_impl=self.attention_impl,
            layer_norm_epsilon=self.layer_norm_epsilon, activation=self.activation)
        if self.pre_norm:
            self.pre_norm_layer = layer_norm(self.dtype, 'pre_norm', self.layer_norm_epsilon)
        if self.pool == 'map':
            self.map_head = MAPHead(self.heads, int(round(self.hidden * self.mlp_ratio)),
                                    self.dtype, self.layer_norm_epsilon, self.activation,
                                    self.attention_impl)

    def embed_patches(self, x):
        """Images [B, H, W, C] -> patch tokens [B, L, D] with position embedding, in `dtype`."""
        return self.position_embedding(self.patch_embedding(x))

    def encode_tokens(self, tokens, train: bool):
        """Tokens [B, L, D] -> [B, L', D] (L' = L + 1 with a class token first), in `dtype`."""
        if self.pool == 'cls':
            cls = jnp.broadcast_to(self.cls_token.astype(tokens.dtype),
                                   (tokens.shape[0], 1, self.hidden))
            tokens = jnp.concatenate([cls, tokens], axis=1)
        if self.pre_norm:
            tokens = self.pre_norm_layer(tokens)
        return self.encoder(tokens, train)

    def __call__(self, x, train: bool):
        """Images [B, H, W, C] -> features [B, D] float32."""
        if self.pool == 'map':
            return self.map_head(self.encode_tokens(self.embed_patches(x), train)).astype(
                jnp.float32)
        tokens = self.encode_tokens(self.embed_patches(x), train).astype(jnp.float32)
        return tokens[:, 0] if self.pool == 'cls' else jnp.mean(tokens, axis=1)
