"""ResNet-18/34/50 (v1.5) feature extractors with logically named parameters.

Images come in as [B, H, W, C] floats; the network returns the globally
average-pooled features [B, D] in float32, where D = `ResNet.features_dim`.
Batch norm statistics are those of the whole (global) batch the module sees:
under `jax.jit` on globally sharded arrays XLA computes them across devices, so
no `axis_name` is used. On a mesh every convolution's output is constrained to
the batch split over ('data', 'fsdp') (`layers.batch_sharded`): with the kernels
split over 'fsdp' (fully sharded), XLA would otherwise pick layouts that gather
the batch (SimCLR ResNet-50, batch 4096 on 64 TPU chips: 236 GiB of temporaries
per chip instead of 4.3 GiB). A block's convolutions read their inputs through
`xla_cpu.unfused_on_cpu`, which keeps XLA:CPU from fusing batch norm and ReLU into
the transposed copies their weight gradients need (SimCLR ResNet-18 step 1.29x
faster on the CPU; the identity elsewhere).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.errors import ConfigError
from jaxssl.models import xla_cpu
from jaxssl.models.layers import batch_sharded

CONV_AXES = ('conv_h', 'conv_w', 'conv_in', 'conv_out')
CHANNEL_AXES = ('conv_out',)
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He-normal on the fan-out, as torchvision initialises ResNet convolutions.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
    """Bias-free `kernel`x`kernel` convolution with torchvision's symmetric padding."""
    pad = kernel // 2
    return nn.Conv(
        features, (kernel, kernel), strides=(stride, stride),
        padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.with_logical_partitioning(_conv_init, CONV_AXES), name=name)


def _batch_norm(train: bool, dtype: Any, name: str, zero_scale: bool = False) -> nn.BatchNorm:
    """BatchNorm over the batch and spatial axes (momentum 0.9, eps 1e-5)."""
    scale_init = nn.initializers.zeros if zero_scale else nn.initializers.ones
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
        dtype=dtype, param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(scale_init, CHANNEL_AXES),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, CHANNEL_AXES),
        name=name)


class _ResidualBlock(nn.Module):
    """Shared residual plumbing: out = relu(branch(x) + shortcut(x)).

    Subclasses define `expansion` and `branch_layers`: the list of
    (kernel, stride, features) for each conv of the residual branch.
    Input [B, H, W, C_in] -> output [B, H/stride, W/stride, filters * expansion],
    in `dtype`.
    """
    filters: int
    stride: int = 1
    zero_init_residual: bool = True
    dtype: Any = jnp.float32
    expansion = 1

    def branch_layers(self) -> Sequence[tuple[int, int, int]]:
        raise NotImplementedError

    @nn.compact
    def __call__(self, x, train: bool):
        layers = self.branch_layers()
        y = x
        for i, (kernel, stride, features) in enumerate(layers):
            is_last = i == len(layers) - 1
            conv = _conv(features, kernel, stride, self.dtype, f'conv{i}')
            y = batch_sharded(conv(xla_cpu.unfused_on_cpu(y)))
            y = _batch_norm(train, self.dtype, f'bn{i}',
                            zero_scale=is_last and self.zero_init_residual)(y)
            if not is_last:
                y = nn.relu(y)
        out_features = self.filters * self.expansion
        if self.stride != 1 or x.shape[-1] != out_features:
            proj_conv = _conv(out_features, 1, self.stride, self.dtype, 'proj_conv')
            x = batch_sharded(proj_conv(xla_cpu.unfused_on_cpu(x)))
            x = _batch_norm(train, self.dtype, 'proj_bn')(x)
        return nn.relu(x + y)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions (ResNet-18/34); stride on the first."""
    expansion = 1

    def branch_layers(self):
        return [(3, self.stride, self.filters), (3, 1, self.filters)]


class BottleneckBlock(_ResidualBlock):
    """1x1 -> 3x3 -> 1x1 (x4) convolutions, stride on the 3x3 (ResNet v1.5)."""
    expansion = 4

    def branch_layers(self):
        return [(1, 1, self.filters), (3, self.stride, self.filters),
                (1, 1, self.filters * self.expansion)]


class ResNet(nn.Module):
    """ResNet backbone: stem, four stages, global average pool.

    Attributes:
      stage_sizes: number of blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
      block_cls: `BasicBlock` or `BottleneckBlock`.
      num_filters: channels of the stem and first stage (64 in the paper); each
        later stage doubles them.
      cifar_stem: True -> 3x3 stride-1 conv and no max-pool (32x32 inputs);
        False -> 7x7 stride-2 conv and 3x3 stride-2 max-pool (ImageNet).
      zero_init_residual: start every block's last BN scale at zero, so each
        residual block begins as the identity.
      dtype: compute dtype; parameters stay float32.
    """
    stage_sizes: Sequence[int]
    block_cls: type[_ResidualBlock]
    num_filters: int = 64
    cifar_stem: bool = False
    zero_init_residual: bool = True
    dtype: Any = jnp.float32

    @property
    def features_dim(self) -> int:
        """D, the number of channels of the pooled features."""
        return self.num_filters * 2 ** (len(self.stage_sizes) - 1) * self.block_cls.expansion

    @nn.compact
    def __call__(self, x, train: bool):
        """[B, H, W, C] float images -> [B, features_dim] float32 pooled features."""
        x = x.astype(self.dtype)
        if self.cifar_stem:
            x = batch_sharded(_conv(self.num_filters, 3, 1, self.dtype, 'stem_conv')(x))
            x = nn.relu(_batch_norm(train, self.dtype, 'stem_bn')(x))
        else:
            x = batch_sharded(_conv(self.num_filters, 7, 2, self.dtype, 'stem_conv')(x))
            x = nn.relu(_batch_norm(train, self.dtype, 'stem_bn')(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = self.block_cls(
                    filters=self.num_filters * 2 ** stage, stride=stride,
                    zero_init_residual=self.zero_init_residual, dtype=self.dtype,
                    name=f'stage{stage}_block{block}')(x, train)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


RESNET_SPECS = {
    18: ((2, 2, 2, 2), BasicBlock),
    34: ((3, 4, 6, 3), BasicBlock),
    50: ((3, 4, 6, 3), BottleneckBlock),
    101: ((3, 4, 23, 3), BottleneckBlock),
    152: ((3, 8, 36, 3), BottleneckBlock),
}


def resnet(depth: int, **kwargs) -> ResNet:
    """ResNet of the given depth (18, 34, 50, 101, 152); kwargs go to `ResNet`."""
    if depth not in RESNET_SPECS:
        raise ConfigError(f'Unknown ResNet depth {depth}; valid: {sorted(RESNET_SPECS)}')
    stage_sizes, block_cls = RESNET_SPECS[depth]
    return ResNet(stage_sizes=stage_sizes, block_cls=block_cls, **kwargs)
