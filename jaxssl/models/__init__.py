"""Backbone registry: build a ResNet or ViT from a model config.

`build_backbone(config, dtype)` reads the keys of `default_model_config()`.
Every backbone maps images [B, H, W, C] to float32 features [B, D] via
`module.apply(variables, images, train=...)`, with D = `module.features_dim`.
"""
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from jaxssl.errors import ConfigError
from jaxssl.models.heads import LinearHead, MLPHead
from jaxssl.models.resnet import ResNet, resnet
from jaxssl.models.vit import Encoder, ViT, sincos_posemb_2d, vit_config

RESNET_DEPTHS = {'resnet18': 18, 'resnet34': 34, 'resnet50': 50}
VIT_NAMES = {'vit_tiny': 'tiny', 'vit_small': 'small', 'vit_base': 'base', 'vit_large': 'large'}
VIT_DIM_KEYS = ('hidden', 'depth', 'heads')
VIT_BACKBONE_NAMES = (*VIT_NAMES, 'vit')
BACKBONE_NAMES = (*RESNET_DEPTHS, *VIT_BACKBONE_NAMES)


def default_model_config() -> ml_collections.ConfigDict:
    """Model config with every key `build_backbone` reads.

    `hidden`, `depth`, `heads` = 0 mean "the named size's default" (they are
    required for name='vit'). `width` is the ResNet base filter count; `patch`,
    `posemb`, `pool`, `drop_path`, `scan_blocks`, `remat`, `frozen_patch_embed`
    `attention_impl` ('' = jaxssl's XLA attention, 'xla' / 'cudnn' = jax.nn's, the
    latter a fused GPU kernel, 'flash' = jaxssl's fused TPU kernel), `layer_norm_epsilon` (1e-12 for weights imported
    from Hugging Face), `activation` and `pre_norm` (CLIP's: 'quick_gelu', True)
    apply to ViTs.
    """
    return ml_collections.ConfigDict(dict(
        name='resnet18', cifar_stem=True, width=64,
        patch=4, posemb='sincos2d', pool='gap', drop_path=0.0,
        scan_blocks=False, remat=False, frozen_patch_embed=False, attention_impl='',
        hidden=0, depth=0, heads=0, mlp_ratio=4.0, layer_norm_epsilon=1e-6,
        activation='gelu', pre_norm=False))


def _vit_dims(config: Mapping[str, Any]) -> dict:
    """hidden/depth/heads/mlp_ratio of a full ViT config: the named size's defaults,
    overridden by the config's non-zero keys."""
    name = config['name']
    dims = vit_config(VIT_NAMES[name]) if name in VIT_NAMES else {}
    dims.update({k: config[k] for k in VIT_DIM_KEYS if config[k]})
    missing = [k for k in VIT_DIM_KEYS if k not in dims]
    if missing:
        raise ConfigError(f"model name 'vit' needs non-zero {missing} in the model config")
    dims['mlp_ratio'] = config['mlp_ratio']
    return dims


def build_backbone(config: Mapping[str, Any], dtype: Any = jnp.float32) -> nn.Module:
    """Backbone module named by `config['name']`; missing keys take the defaults.

    Args:
      config: dict-like (dict or ConfigDict) with the keys of `default_model_config()`.
      dtype: compute dtype (e.g. jnp.bfloat16); parameters stay float32.
    Raises:
      ConfigError: unknown name (the message lists the valid ones) or a 'vit'
        without explicit dimensions.
    """
    config = {**default_model_config().to_dict(), **dict(config)}
    name = config['name']
    if name in RESNET_DEPTHS:
        return resnet(RESNET_DEPTHS[name], num_filters=config['width'],
                      cifar_stem=config['cifar_stem'], dtype=dtype)
    if name in VIT_BACKBONE_NAMES:
        return ViT(
            patch=config['patch'], posemb=config['posemb'], pool=config['pool'],
            drop_path=config['drop_path'], scan_blocks=config['scan_blocks'],
            remat=config['remat'], frozen_patch_embed=config['frozen_patch_embed'],
            attention_impl=config['attention_impl'] or None, dtype=dtype,
            layer_norm_epsilon=config['layer_norm_epsilon'], activation=config['activation'],
            pre_norm=config['pre_norm'], **_vit_dims(config))
    raise ConfigError(f'Unknown backbone name {name!r}; valid: {", ".join(BACKBONE_NAMES)}')


__all__ = [
    'BACKBONE_NAMES', 'VIT_BACKBONE_NAMES', 'Encoder', 'LinearHead', 'MLPHead', 'ResNet', 'ViT',
    'build_backbone', 'default_model_config', 'resnet', 'sincos_posemb_2d', 'vit_config',
]
