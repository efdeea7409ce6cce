"""What XLA's TPU cost model says the parts of a step can reach: the ceiling against which
the scale table's "cost model, % of peak" column reads.

For one chip of a slice (libtpu, no TPU), compiles (1) one bfloat16 matmul [M, K] @ [K, N]
for square references and the largest matmuls of the MAE ViT-L/16 and 8B recipes per chip
(see SHAPES), and (2) the forward and backward pass of one MAE ViT-L/16 encoder block and
one decoder block at the recipe's per-chip batch on v5p-128, whole and in parts (the MLP,
the attention with its projections, the attention core alone: scores, softmax, weighted
sum), and (3) the attention core at the 8B's size per chip (T 2,048) as XLA ops and as
the Pallas TPU flash-attention kernel. Prints the cost model's time (`optimal_seconds`)
and the fraction of the chip's bf16 peak it implies (the FLOPs, 2 M K N for a matmul,
jaxssl.flops of the XLA version otherwise, / peak / time):

  python -m experiments.scaling.calibrate [--topology=v5p:2x2x1] [--json=PATH]
"""

from __future__ import annotations

import argparse
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxssl import aot, flops, logging as log_lib
from jaxssl.models.layers import Attention, MlpBlock, dot_product_attention
from jaxssl.models.vit import EncoderBlock

# (name, M, K, N): M is the tokens one chip holds in the recipe's layout.
SHAPES = (
    ("square 8192", 8192, 8192, 8192),
    ("square 4096", 4096, 4096, 4096),
    # MAE ViT-L/16 on v5p-128: 4096 images / 64 chips x 50 visible tokens (49 + class)
    ("MAE-L encoder fc1", 3200, 1024, 4096),
    ("MAE-L encoder fc2", 3200, 4096, 1024),
    ("MAE-L encoder qkv", 3200, 1024, 3072),
    # its decoder: 64 images x 197 tokens, 512 wide
    ("MAE-L decoder fc1", 12608, 512, 2048),
    # 8B on v5p-128: 512 rows per micro-batch / 16 batch shards x 2048 tokens; the MLP
    # hidden 18,432 split over tensor = 4
    ("8B fc1 (tensor 4)", 65536, 4096, 4608),
    ("8B fc2 (tensor 4)", 65536, 4608, 4096),
)


def _whole(device) -> NamedSharding:
    return NamedSharding(Mesh(np.array([device]), ("x",)), P())


def matmul_fraction(device, m: int, k: int, n: int, peak: float) -> dict:
    """The cost model's time for [m, k] @ [k, n] in bf16 on `device` and its share of peak."""
    whole = _whole(device)
    compiled = jax.jit(jnp.matmul, in_shardings=(whole, whole), out_shardings=whole).lower(
        jax.ShapeDtypeStruct((m, k), jnp.bfloat16),
        jax.ShapeDtypeStruct((k, n), jnp.bfloat16)).compile()
    seconds = _cost_seconds(compiled)
    return {"m": m, "k": k, "n": n, "cost_model_seconds": seconds,
            "fraction_of_peak": 2 * m * k * n / peak / seconds if seconds > 0 else None}


# (name, tokens per image, width, heads, MLP width, part): MAE ViT-L/16's blocks for 64
# images (4096 / 64 chips); the encoder sees 50 tokens (49 visible + class), the decoder 197.
BLOCKS = tuple((f"MAE-L {stack} {part}", tokens, width, heads, mlp, part)
               for stack, tokens, width, heads, mlp in (("encoder", 50, 1024, 16, 4096),
                                                        ("decoder", 197, 512, 16, 2048))
               for part in ("block", "mlp", "attention", "attention core"))
IMAGES_PER_CHIP = 64


def _cost_seconds(compiled) -> float:
    return float(aot.cost_analysis(compiled).get("optimal_seconds", 0.0))


class BlockPart(nn.Module):
    """`part` of a bfloat16 ViT block: 'block' (all of it), 'mlp', 'attention' (with its
    projections) or 'attention core' (scores, softmax, weighted sum; q = k = v = x)."""
    heads: int
    mlp: int
    part: str

    @nn.compact
    def __call__(self, x):
        if self.part == "block":
            return EncoderBlock(self.heads, self.mlp, jnp.bfloat16)(x, 0.0, True)
        if self.part == "mlp":
            return MlpBlock(self.mlp, jnp.bfloat16)(x)
        if self.part == "attention":
            return Attention(self.heads, jnp.bfloat16)(x)
        split = x.reshape(x.shape[:2] + (self.heads, x.shape[-1] // self.heads))
        return dot_product_attention(split, split, split).reshape(x.shape)


def block_fraction(device, tokens: int, width: int, heads: int, mlp: int, part: str,
                   peak: float) -> dict:
    """Cost-model time of the forward + backward pass (gradients of the parameters and the
    input) of `part` of a bfloat16 Transformer block on [IMAGES_PER_CHIP, tokens, width]."""
    module = BlockPart(heads, mlp, part)
    shape = (IMAGES_PER_CHIP, tokens, width)
    params = nn.meta.unbox(jax.eval_shape(lambda: module.init(
        jax.random.key(0), jnp.zeros(shape, jnp.bfloat16))))
    whole = _whole(device)
    on_chip = lambda tree: jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=whole), tree)

    def gradients(p, x):
        loss = lambda p, x: jnp.sum(jnp.square(module.apply(p, x).astype(jnp.float32)))
        return jax.grad(loss, argnums=(0, 1))(p, x)

    traced = jax.jit(gradients).trace(on_chip(params),
                                      on_chip(jax.ShapeDtypeStruct(shape, jnp.bfloat16)))
    seconds = _cost_seconds(traced.lower().compile())
    count = flops.traced_flops(traced)
    return {"shape": list(shape), "flops": count, "cost_model_seconds": seconds,
            "fraction_of_peak": count / peak / seconds if seconds > 0 else None}


# [batch, heads, tokens, head width] of the 8B's attention per chip: 256 rows / 16 batch
# shards, 32 heads / tensor 4, 2,048 tokens, 128 wide.
ATTENTION_8B = (16, 8, 2048, 128)


def _attention_gradients(kernel: str, width: int):
    """(q, k, v) [B, N, T, Dh] -> their gradients of sum(attention(q, k, v)^2), the
    attention as XLA ops ('xla': jaxssl's dot_product_attention) or as the Pallas TPU
    flash-attention kernel ('pallas')."""
    from jax.experimental.pallas.ops.tpu.flash_attention import flash_attention

    def attend(q, k, v):
        if kernel == "pallas":
            return flash_attention(q, k, v, sm_scale=width ** -0.5)
        heads_minor = lambda x: jnp.swapaxes(x, 1, 2)
        return heads_minor(dot_product_attention(heads_minor(q), heads_minor(k),
                                                 heads_minor(v)))

    loss = lambda q, k, v: jnp.sum(jnp.square(attend(q, k, v).astype(jnp.float32)))
    return jax.grad(loss, argnums=(0, 1, 2))


def attention_fraction(device, kernel: str, peak: float) -> dict:
    """Cost-model time of the forward + backward pass of the 8B's attention core per chip
    (ATTENTION_8B, bfloat16, no mask) as `kernel` ('xla' or 'pallas'). The FLOPs are the
    XLA version's (jaxssl.flops cannot see inside a Pallas call)."""
    spec = jax.ShapeDtypeStruct(ATTENTION_8B, jnp.bfloat16, sharding=_whole(device))
    trace = lambda name: jax.jit(_attention_gradients(name, ATTENTION_8B[-1])).trace(
        spec, spec, spec)
    seconds = _cost_seconds(trace(kernel).lower().compile())
    count = flops.traced_flops(trace("xla"))
    return {"shape": list(ATTENTION_8B), "flops": count, "cost_model_seconds": seconds,
            "fraction_of_peak": count / peak / seconds if seconds > 0 else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topology", default="v5p:2x2x1")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    device = aot.topology_devices(args.topology)[0]
    peak = log_lib.PEAK_FLOPS[log_lib.table_kind(device.device_kind)]
    rows = {name: matmul_fraction(device, m, k, n, peak) for name, m, k, n in SHAPES}
    blocks = {name: block_fraction(device, *sizes, peak) for name, *sizes in BLOCKS}
    attention = {kernel: attention_fraction(device, kernel, peak) for kernel in ("xla", "pallas")}
    print(f"{args.topology} ({device.device_kind}), bf16 peak {peak / 1e12:.0f} TFLOP/s")
    print("matmuls [M, K] @ [K, N]:")
    for name, r in rows.items():
        print(f"  {name:<28} [{r['m']}, {r['k']}] @ [{r['k']}, {r['n']}]: "
              f"{1e6 * r['cost_model_seconds']:9.1f} us, {_percent(r)}")
    print(f"blocks, forward + backward on [{IMAGES_PER_CHIP}, tokens, width]:")
    for name, r in blocks.items():
        print(f"  {name:<28} {r['shape']}: {r['flops'] / 1e9:7.1f} GFLOP, "
              f"{1e6 * r['cost_model_seconds']:9.1f} us, {_percent(r)}")
    print(f"8B attention core, forward + backward on {list(ATTENTION_8B)} "
          f"({attention['xla']['flops'] / 1e9:.1f} GFLOP):")
    for kernel, r in attention.items():
        print(f"  {kernel:<28} {1e6 * r['cost_model_seconds']:9.1f} us, {_percent(r)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"topology": args.topology, "chip_kind": device.device_kind,
                       "peak_flops": peak, "matmuls": rows, "blocks": blocks,
                       "attention_8b": attention}, f, indent=2)
    return 0


def _percent(r: dict) -> str:
    fraction = r["fraction_of_peak"]
    return f"{100 * fraction:.0f}% of peak" if fraction else "no usable time"


if __name__ == "__main__":
    sys.exit(main())
