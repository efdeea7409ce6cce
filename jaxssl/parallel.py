"""Mesh, logical-axis rules, shardings and multi-host helpers.

One `jax.sharding.Mesh` with axes ('data', 'fsdp', 'tensor'). Models annotate
their parameters with logical axis names (`nn.with_logical_partitioning`);
`LOGICAL_RULES` maps those names to mesh axes. Parameters (and optimizer or
method state) without annotations, or whose annotations leave them whole on
every device, fall back to an FSDP rule: the largest
dimension divisible by the 'fsdp' axis size is sharded over it. A logical axis
is only mapped to a mesh axis when the dimension divides evenly, so any model
fits any mesh.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxssl.errors import MeshError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical parameter axis -> mesh axis (None = replicated).
LOGICAL_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("vocab", "tensor"),
    ("conv_in", "fsdp"),
    ("conv_out", "tensor"),
    ("conv_h", None),
    ("conv_w", None),
    ("patch_h", None),
    ("patch_w", None),
    ("layers", None),
    ("pos", None),
)

# Unannotated arrays smaller than this many elements stay replicated.
FSDP_MIN_SIZE = 1024


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """Resolves a {'data', 'fsdp', 'tensor'} config (-1 = fill) to concrete sizes."""
    sizes = [int(mesh_config[a]) for a in MESH_AXES]
    fills = [i for i, s in enumerate(sizes) if s == -1]
    if len(fills) > 1:
        raise MeshError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if fills:
        if num_devices % known:
            raise MeshError(f"mesh: {num_devices} devices are not divisible by {known}")
        sizes[fills[0]] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise MeshError(
            f"mesh: {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
            f"{num_devices} are available")
    return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None,
              num_slices: int = 1) -> Mesh:
    """Builds the ('data', 'fsdp', 'tensor') mesh over `devices` (default: all).

    All of this process's devices, or TPU devices (e.g. the compile-only ones of
    `jax.experimental.topologies`), are laid out along the chips' interconnect
    (`mesh_utils.create_device_mesh`). With `num_slices` > 1 the devices are that
    many TPU slices (each device has a `slice_index`) and the 'data' axis spans the
    slices over the data-centre network: a hybrid mesh of per-slice shape
    (data / num_slices, fsdp, tensor) (`mesh_utils.create_hybrid_device_mesh`).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    if num_slices > 1:
        if shape[0] % num_slices:
            raise MeshError(f"mesh: data={shape[0]} must be a multiple of the {num_slices} "
                            f"slices (the data axis spans the slices)")
        device_grid = mesh_utils.create_hybrid_device_mesh(
            (shape[0] // num_slices,) + shape[1:], (num_slices, 1, 1), devices,
            allow_split_physical_axes=True)
    elif len(devices) == len(jax.devices()) or devices[0].platform == "tpu":
        try:
            device_grid = mesh_utils.create_device_mesh(shape, devices)
        except (ValueError, NotImplementedError):  # a shape the torus does not map to as is
            device_grid = mesh_utils.create_device_mesh(shape, devices,
                                                        allow_split_physical_axes=True)
    else:
        device_grid = np.asarray(devices).reshape(shape)
    return Mesh(device_grid, MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ('data', 'fsdp'), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def replicated_key(key: jax.Array, mesh: Mesh) -> jax.Array:
    """`key`, made alike by every process, as one global key replicated over `mesh` (a
    process-local array cannot be put onto devices of other processes)."""
    data = jax.make_array_from_process_local_data(replicated(mesh),
                                                  np.asarray(jax.random.key_data(key)))
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(key))


def batch_shards(mesh: Mesh) -> int:
    """Number of ways the batch axis is split."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def context_batch_mesh(rows: int):
    """The abstract mesh in context if its batch axes split `rows` evenly over >1 shards, else None.

    The Trainer traces the train step under `jax.sharding.use_abstract_mesh`,
    so a method can compute `shard_map` losses over BATCH_AXES there
    (`jaxssl.methods.base.batch_sharded_loss`).
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
        return None
    shards = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
    return mesh if shards > 1 and rows % shards == 0 else None


def _axis_size(mesh: Mesh, axis) -> int:
    names = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([mesh.shape[n] for n in names]))


def logical_spec_to_mesh(names: Sequence[str | None], shape: Sequence[int], mesh) -> P:
    """Maps logical axis names to a PartitionSpec, dropping axes that do not divide
    (`mesh`: a Mesh or an AbstractMesh)."""
    rules = dict(LOGICAL_RULES)
    used: set[str] = set()
    spec = []
    for name, dim in zip(names, shape):
        axis = rules.get(name) if name is not None else None
        axis_names = () if axis is None else (axis if isinstance(axis, tuple) else (axis,))
        if (axis is None or used & set(axis_names) or _axis_size(mesh, axis) == 1
                or dim % _axis_size(mesh, axis)):
            spec.append(None)
        else:
            spec.append(axis)
            used |= set(axis_names)
    return P(*spec)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """`x` with its sharding constrained to the logical axis `names` (one per dimension,
    e.g. ('batch', None, 'heads', None)) on the mesh the train step is traced under.

    Megatron-style activation sharding: without it XLA picks the layout of a
    block's activations from the kernels and may gather the `tensor`-split
    heads / MLP hidden, or the batch. A name maps as in `logical_spec_to_mesh`
    (left unsharded where it does not divide). Outside a mesh, on a one-device
    mesh and inside `shard_map` (manual axes) `x` is returned as it is.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or mesh.manual_axes:
        return x
    return jax.lax.with_sharding_constraint(x, logical_spec_to_mesh(names, x.shape, mesh))


def fsdp_fallback_spec(shape: Sequence[int], mesh: Mesh) -> P:
    """Shards the largest dimension divisible by the 'fsdp' size; small arrays replicate."""
    fsdp = mesh.shape["fsdp"]
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            return P(*[("fsdp" if d == dim else None) for d in range(len(shape))])
    return P()


def _is_box(x) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def tree_shardings(boxed_abstract_tree: Any, mesh: Mesh) -> Any:
    """Shardings for a tree of (possibly logically boxed) abstract arrays.

    Boxed leaves (`nn.LogicallyPartitioned`) follow `LOGICAL_RULES`; plain
    leaves, and boxed ones that the rules leave whole on every device (e.g. a
    scanned stack's [layers, mlp] biases with tensor = 1), use
    `fsdp_fallback_spec`. The result has the structure of the *unboxed* tree.
    """
    def leaf_sharding(x):
        if isinstance(x, nn.LogicallyPartitioned):
            value = x.unbox()
            spec = logical_spec_to_mesh(x.names, value.shape, mesh)
            if all(axis is None for axis in spec):
                fallback = fsdp_fallback_spec(value.shape, mesh)
                spec = fallback if any(fallback) else spec  # keep the rules' spec if both replicate
            return NamedSharding(mesh, spec)
        if _is_box(x):
            x = x.unbox()
        return NamedSharding(mesh, fsdp_fallback_spec(getattr(x, "shape", ()), mesh))

    return jax.tree.map(leaf_sharding, boxed_abstract_tree, is_leaf=_is_box)


def unboxed_abstract(boxed_abstract_tree: Any) -> Any:
    """The abstract tree with logical boxes removed (what the jitted init returns)."""
    return nn.meta.unbox(boxed_abstract_tree)


def abstract_with_shardings(abstract_tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs carrying shardings, as Orbax wants for a sharded restore."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings)


def host_batch_to_global(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Builds global arrays from this process's slice of the batch."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}


def maybe_initialize_distributed(dist_config: Mapping[str, Any]) -> None:
    """Calls `jax.distributed.initialize` when the config or environment asks.

    `initialize`: 'auto' (only when JAX_COORDINATOR_ADDRESS is set, or on a
    cluster that JAX detects by itself such as SLURM/TPU pods with
    JAXSSL_DISTRIBUTED=1), 'yes' or 'no'.
    """
    mode = dist_config["initialize"]
    if mode == "no" or (mode == "auto" and not (
            os.environ.get("JAX_COORDINATOR_ADDRESS") or os.environ.get("JAXSSL_DISTRIBUTED"))):
        return
    # Cross-process collectives on CPU devices (no effect on GPU/TPU backends).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if dist_config["coordinator_address"]:
        kwargs["coordinator_address"] = dist_config["coordinator_address"]
    if dist_config["num_processes"] > 0:
        kwargs["num_processes"] = dist_config["num_processes"]
    if dist_config["process_id"] >= 0:
        kwargs["process_id"] = dist_config["process_id"]
    jax.distributed.initialize(**kwargs)
