"""Projection / prediction MLP heads and the linear classifier head.

Inputs are features [B, D]; outputs are float32 [B, out_dim]. Consecutive
dense kernels alternate their logical axis names ('embed', 'mlp'),
('mlp', 'embed'), ('embed', 'mlp'), ... so that under tensor parallelism one
layer's sharded output feeds the next layer's sharded input.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxssl.models import layers

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def _batch_norm(train: bool, axis_name: str, affine: bool, dtype: Any, name: str) -> nn.BatchNorm:
    """BatchNorm over the batch axis; `affine=False` drops scale and bias."""
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
        use_scale=affine, use_bias=affine, dtype=dtype, param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis_name,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axis_name,)),
        name=name)


class MLPHead(nn.Module):
    """MLP head: [Dense -> (BN) -> ReLU] per hidden dim, then Dense(out_dim) -> (BN).

    SimCLR: `MLPHead((2048,), 128, use_bn=True)`. MoCo v3 projector:
    `MLPHead((4096, 4096), 256, use_bn=True, last_bn=True)`, where the last BN
    has no scale or bias. Dense layers followed by BN carry no bias.

    Attributes:
      hidden_dims: widths of the hidden layers (may be empty: one Dense).
      out_dim: output width.
      use_bn: BatchNorm after each hidden Dense.
      last_bn: non-affine BatchNorm after the output Dense.
      dtype: compute dtype; parameters stay float32.
    """
    hidden_dims: Sequence[int]
    out_dim: int
    use_bn: bool = True
    last_bn: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        """Features [B, D] -> [B, out_dim] float32."""
        x = x.astype(self.dtype)
        widths = list(self.hidden_dims) + [self.out_dim]
        in_axis = 'embed'
        for i, width in enumerate(widths):
            out_axis = 'mlp' if in_axis == 'embed' else 'embed'
            is_last = i == len(widths) - 1
            with_bn = self.last_bn if is_last else self.use_bn
            x = layers.dense(width, (in_axis, out_axis), self.dtype, f'dense{i}',
                             kernel_init=nn.initializers.lecun_normal(),
                             use_bias=not with_bn)(x)
            if with_bn:
                x = _batch_norm(train, out_axis, affine=not is_last, dtype=self.dtype,
                                name=f'bn{i}')(x)
            if not is_last:
                x = nn.relu(x)
            in_axis = out_axis
        return x.astype(jnp.float32)


class LinearHead(nn.Module):
    """Linear classifier: features [B, D] -> float32 logits [B, num_classes].

    The kernel is drawn from N(0, init_std^2); the default 0 gives the zero
    init usual for fine-tuning. The class axis is named 'classes' (left
    unsharded unless a rule names it).
    """
    num_classes: int
    init_std: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel_init = (nn.initializers.normal(self.init_std) if self.init_std > 0
                       else nn.initializers.zeros)
        logits = layers.dense(self.num_classes, ('embed', 'classes'), self.dtype, 'dense',
                              kernel_init=kernel_init)(x.astype(self.dtype))
        return logits.astype(jnp.float32)
