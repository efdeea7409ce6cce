"""Matmul rates of this process's first JAX device, float32 and bfloat16 (a benchmark).

  XLA_FLAGS=... python -m experiments.benchmarks.matmul_rates [--sizes=1024,2048]

Prints one line: XLA_FLAGS, then per operand -> result dtype and size the rate
in GFLOP/s (`jaxssl.logging.measured_matmul_flops`: the fastest of ten [size,
size] products after two untimed ones) and, in brackets, the library that
XLA:CPU handed the product to in the compiled program (`product_library`):
float32, bfloat16 operands with a float32 result (how jaxssl multiplies
bfloat16 on the CPU) and with a bfloat16 result. For comparing XLA:CPU's dot
options, one process per setting, since XLA reads XLA_FLAGS once per process.
The library is printed because the options overlap: a dot that one library's
fusion type claims (YNNPACK's by default) is not offered to the next.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

from jaxssl.logging import measured_matmul_flops

# XLA:CPU's custom fusion kinds for the libraries it can hand a dot to; a product in none
# of them is XLA's own (an Eigen call, or a loop).
LIBRARY_FUSION_KINDS = {"__ynn_fusion": "YNNPACK", "__xnn_fusion": "XNNPACK",
                        "__onednn_fusion": "oneDNN"}


def product_library(device: jax.Device, size: int, dtype, result_dtype) -> str:
    """Which library computes a [size, size] product on `device` under this process's
    XLA_FLAGS: 'YNNPACK', 'XNNPACK', 'oneDNN', or 'XLA' for its own."""
    operand = jax.ShapeDtypeStruct((size, size), dtype,
                                   sharding=jax.sharding.SingleDeviceSharding(device))
    program = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=result_dtype)).lower(
        operand).compile().as_text()
    found = [name for kind, name in LIBRARY_FUSION_KINDS.items() if f'"{kind}"' in program]
    return "+".join(found) or "XLA"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048")
    args = parser.parse_args()
    device = jax.devices()[0]
    kinds = ((jnp.float32, jnp.float32), (jnp.bfloat16, jnp.float32),
             (jnp.bfloat16, jnp.bfloat16))
    rates = [f"{jnp.dtype(dtype).name} -> {jnp.dtype(result).name} {size}: "
             f"{measured_matmul_flops(device, size, dtype=dtype, result_dtype=result) / 1e9:.0f}"
             f" [{product_library(device, size, dtype, result)}]"
             for dtype, result in kinds for size in map(int, args.sizes.split(","))]
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} | " + ", ".join(rates) + " GFLOP/s",
          flush=True)


if __name__ == "__main__":
    main()
