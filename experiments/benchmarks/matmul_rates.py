"""Matmul rates of this process's first JAX device, float32 and bfloat16 (a benchmark).

  XLA_FLAGS=... python -m experiments.benchmarks.matmul_rates [--sizes=1024,2048]

Prints one line: XLA_FLAGS, then per operand -> result dtype and size the rate
in GFLOP/s (`jaxssl.logging.measured_matmul_flops`: the fastest of ten [size,
size] products after two untimed ones): float32, bfloat16 operands with a
float32 result (how jaxssl multiplies bfloat16 on the CPU) and with a bfloat16
result. For comparing XLA:CPU's dot options, one process per setting, since
XLA reads XLA_FLAGS once per process.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

from jaxssl.logging import measured_matmul_flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1024,2048")
    args = parser.parse_args()
    device = jax.devices()[0]
    kinds = ((jnp.float32, jnp.float32), (jnp.bfloat16, jnp.float32),
             (jnp.bfloat16, jnp.bfloat16))
    rates = [f"{jnp.dtype(dtype).name} -> {jnp.dtype(result).name} {size}: "
             f"{measured_matmul_flops(device, size, dtype=dtype, result_dtype=result) / 1e9:.0f}"
             for dtype, result in kinds for size in map(int, args.sizes.split(","))]
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} | " + ", ".join(rates) + " GFLOP/s",
          flush=True)


if __name__ == "__main__":
    main()
