"""torchvision ResNet-18/34/50 state dicts onto `jaxssl.models.ResNet` (ImageNet stem).

conv weights [out, in, kh, kw] -> [kh, kw, in, out]; BatchNorm weight/bias
-> params scale/bias, running_mean/running_var -> batch_stats mean/var
(epsilon 1e-5 in both); `layer<s>.<b>` -> `stage<s-1>_block<b>`, the b-th
block's conv<i>/bn<i> -> conv<i-1>/bn<i-1>, downsample.0/1 -> proj_conv/proj_bn.
The classifier 'fc' is skipped. The base width is read from conv1, so
narrow ResNets import as well (model.width).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxssl.checkpoint import shapes_by_path
from jaxssl.errors import CheckpointError
from jaxssl.interop.common import Imported
from jaxssl.interop.mapping import (Rule, apply_rules, check_config, check_shapes, conv,
                                    count_prefix, read_state_dict, require)


def _bn_rules(source: str, destination) -> list[Rule]:
    """BatchNorm `source` (regex) -> `destination(match)` (a module path) in params and
    batch_stats."""
    at = lambda collection, leaf: (lambda m: f"{collection}/{destination(m)}/{leaf}")
    return [Rule(source + r"\.weight", at("params", "scale")),
            Rule(source + r"\.bias", at("params", "bias")),
            Rule(source + r"\.running_mean", at("batch_stats", "mean")),
            Rule(source + r"\.running_var", at("batch_stats", "var")),
            Rule(source + r"\.num_batches_tracked", None)]


def torchvision_rules() -> list[Rule]:
    block = r"layer(\d)\.(\d+)\."
    name = lambda m: f"stage{int(m.group(1)) - 1}_block{m.group(2)}"
    numbered = lambda kind: (lambda m: f"{name(m)}/{kind}{int(m.group(3)) - 1}")
    return [
        Rule(r"conv1\.weight", "params/stem_conv/kernel", conv),
        *_bn_rules(r"bn1", lambda m: "stem_bn"),
        Rule(block + r"conv(\d)\.weight", lambda m: f"params/{numbered('conv')(m)}/kernel", conv),
        *_bn_rules(block + r"bn(\d)", numbered("bn")),
        Rule(block + r"downsample\.0\.weight", lambda m: f"params/{name(m)}/proj_conv/kernel",
             conv),
        *_bn_rules(block + r"downsample\.1", lambda m: f"{name(m)}/proj_bn"),
        Rule(r"fc\.(?:weight|bias)", None),
    ]


def import_torchvision_resnet(path: str, given: Optional[Mapping[str, Any]] = None) -> Imported:
    """A torchvision ResNet state dict (.safetensors) -> Imported (family 'torchvision_resnet')."""
    from jaxssl.models import RESNET_DEPTHS, build_backbone
    from jaxssl.models.resnet import RESNET_SPECS, BottleneckBlock, BasicBlock
    source = f"torchvision:{path}"
    state = read_state_dict(path)
    stem = require(state, "conv1.weight", "torchvision ResNet", source)
    require(state, "layer1.0.conv1.weight", "torchvision ResNet", source)
    stages = tuple(count_prefix(state, rf"layer{s}\.(\d+)\.") for s in (1, 2, 3, 4))
    block = BottleneckBlock if "layer1.0.conv3.weight" in state else BasicBlock
    depth = next((d for d, spec in RESNET_SPECS.items() if spec == (stages, block)), None)
    names = {d: n for n, d in RESNET_DEPTHS.items()}
    if depth not in names:
        raise CheckpointError(f"{source}: a ResNet with {stages} {block.__name__}s, which is "
                              f"none of {', '.join(RESNET_DEPTHS)}")
    if stem.shape[2] != 7:
        raise CheckpointError(f"{source}: stem kernel {stem.shape[2]}x{stem.shape[3]}, not "
                              f"torchvision's 7x7")
    config = dict(name=names[depth], width=int(stem.shape[0]), cifar_stem=False)
    config = check_config(config, None if given is None else dict(given), source)
    mapped = apply_rules(state, torchvision_rules(), {}, source)
    build = lambda: build_backbone(config)
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: build().init(jax.random.PRNGKey(0), x, train=False),
                               images)
    check_shapes(shapes_by_path(nn.meta.unbox(variables)), mapped.arrays, source)
    return Imported("torchvision_resnet", source, config, mapped.arrays, mapped.arrays,
                    mapped.skipped, {}, build)
