"""What XLA's TPU cost model says a single matmul can reach: the ceiling against which
the scale table's "cost model, % of peak" column reads.

Compiles one bfloat16 matmul [M, K] @ [K, N] for one chip of a slice (libtpu, no TPU)
and prints the cost model's time (`optimal_seconds`) as a fraction of the chip's bf16
peak, 2 M K N / peak / time. The shapes are square references and the largest matmuls of
the MAE ViT-L/16 and 8B recipes per chip (see SHAPES):

  python -m experiments.scaling.calibrate [--topology=v5p:2x2x1] [--json=PATH]
"""

from __future__ import annotations

import argparse
import json
import sys

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


def matmul_fraction(device, m: int, k: int, n: int, peak: float) -> dict:
    """The cost model's time for [m, k] @ [k, n] in bf16 on `device` and its share of peak."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    whole = NamedSharding(Mesh(np.array([device]), ("x",)), P())
    compiled = jax.jit(jnp.matmul, in_shardings=(whole, whole), out_shardings=whole).lower(
        jax.ShapeDtypeStruct((m, k), jnp.bfloat16),
        jax.ShapeDtypeStruct((k, n), jnp.bfloat16)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    seconds = float(cost.get("optimal_seconds", 0.0))
    return {"m": m, "k": k, "n": n, "cost_model_seconds": seconds,
            "fraction_of_peak": 2 * m * k * n / peak / seconds if seconds > 0 else None}


def main(argv: list[str] | None = None) -> int:
    from jaxssl import aot, logging as log_lib
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topology", default="v5p:2x2x1")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    device = aot.topology_devices(args.topology)[0]
    peak = next(f for kind, f in sorted(log_lib.PEAK_FLOPS.items(), key=lambda kv: -len(kv[0]))
                if device.device_kind.startswith(kind))
    rows = {name: matmul_fraction(device, m, k, n, peak) for name, m, k, n in SHAPES}
    print(f"{args.topology} ({device.device_kind}), bf16 peak {peak / 1e12:.0f} TFLOP/s")
    for name, r in rows.items():
        fraction = r["fraction_of_peak"]
        print(f"  {name:<20} [{r['m']}, {r['k']}] @ [{r['k']}, {r['n']}]: "
              f"{1e6 * r['cost_model_seconds']:9.1f} us, "
              + (f"{100 * fraction:.0f}% of peak" if fraction else "no usable time"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"topology": args.topology, "chip_kind": device.device_kind,
                       "peak_flops": peak, "matmuls": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
