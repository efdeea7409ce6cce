"""Temp memory per device of each contrastive loss (value and gradients), naive vs sharded.

  python -m experiments.contrastive.logits_memory [--batches 256 1024] [--dim 64]

On 8 virtual CPU devices (set here, before JAX starts), with the batch
sharded over ('data', 'fsdp') of an 8 x 1 x 1 mesh, each loss of
`jaxssl.objectives.contrastive` and its gradients are compiled
(`jax.jit(...).lower(...).compile().memory_analysis()`) three ways:

  one device  the plain loss on one device: holds the whole B x B logits;
  naive       the plain loss on the 8-way sharded batch, partitioned by GSPMD;
  sharded     the `*_sharded` loss (shard_map): each device computes its
              [B/8, B] block of logits against all-gathered embeddings.

It prints temp bytes per device (XLA's temporary buffers, i.e. everything
but arguments and outputs) next to B * B * 4, the bytes of one float32
B x B matrix, and writes a Markdown table to --out (default
experiments/contrastive/logits_memory.md).
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402  (after setting XLA_FLAGS)
import datetime  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from jaxssl import parallel  # noqa: E402
from jaxssl.objectives import contrastive  # noqa: E402

# name -> (plain loss, sharded loss, number of [B, D] embeddings, scalar arguments)
LOSSES = {
    "clip": (contrastive.clip_loss, contrastive.clip_loss_sharded, 2, (2.66,)),
    "siglip": (contrastive.siglip_loss, contrastive.siglip_loss_sharded, 2, (2.3, -10.0)),
    "nt_xent": (contrastive.nt_xent, contrastive.nt_xent_sharded, 2, (0.5,)),
    "moco_v3": (contrastive.moco_v3, contrastive.moco_v3_sharded, 4, (0.2,)),
}


def temp_bytes(loss_fn, num_embeddings: int, scalars, batch: int, dim: int, sharding) -> int:
    """Temp bytes per device of jit(value_and_grad(loss_fn)) over [batch, dim] float32 embeddings."""
    grad_fn = jax.jit(jax.value_and_grad(
        lambda *e: loss_fn(*e, *scalars), argnums=tuple(range(num_embeddings))))
    args = [jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=sharding)
            for _ in range(num_embeddings)]
    return grad_fn.lower(*args).compile().memory_analysis().temp_size_in_bytes


def measure(batches, dim: int) -> list[dict]:
    """One row per (loss, batch): temp bytes per device of the three variants."""
    mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    one_device = NamedSharding(parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1},
                                                  jax.devices()[:1]), P())
    by_rows = NamedSharding(mesh, P(parallel.BATCH_AXES))
    rows = []
    for name, (plain, sharded, count, scalars) in LOSSES.items():
        shard_fn = lambda *a, fn=sharded: fn(*a, mesh, parallel.BATCH_AXES)
        for batch in batches:
            rows.append({
                "loss": name, "batch": batch, "full_matrix_bytes": batch * batch * 4,
                "one_device": temp_bytes(plain, count, scalars, batch, dim, one_device),
                "naive": temp_bytes(plain, count, scalars, batch, dim, by_rows),
                "sharded": temp_bytes(shard_fn, count, scalars, batch, dim, by_rows),
            })
    return rows


def table(rows: list[dict]) -> str:
    mib = lambda b: f"{b / 2**20:.2f}"
    lines = ["| loss | batch B | B x B x 4 (MiB) | one device (MiB) | naive, 8 devices (MiB/device) "
             "| sharded, 8 devices (MiB/device) |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['loss']} | {r['batch']} | {mib(r['full_matrix_bytes'])} | "
                     f"{mib(r['one_device'])} | {mib(r['naive'])} | {mib(r['sharded'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "logits_memory.md"))
    args = parser.parse_args()
    rows = measure(args.batches, args.dim)
    header = (f"Temp memory of loss + gradients, embedding dim {args.dim}, jax {jax.__version__}, "
              f"8 virtual CPU devices, {datetime.date.today().isoformat()} "
              f"(`python -m experiments.contrastive.logits_memory`)\n\n")
    print(header + table(rows))
    with open(args.out, "w") as f:
        f.write(header + table(rows))


if __name__ == "__main__":
    main()
