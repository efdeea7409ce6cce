"""Matmul FLOPs of a traced JAX program, counted on its jaxpr (any backend).

MFU counts the FLOPs of matrix multiplications and convolutions only, one
multiply-add being 2 FLOPs, as PaLM's MFU and MaxText do: they are what a
GPU's or TPU's matrix units run and what their peak FLOP/s refer to.
Element-wise work (softmax, normalisation, the optimizer update) is left out.

Counting the jaxpr rather than XLA's cost analysis makes the number the same
on every backend: after optimisation for GPUs, matmuls become cuBLAS/cuDNN
custom calls that the cost analysis does not count (measured on an H100:
0.12 instead of about 3 TFLOP for a ResNet-50 SimCLR step).

Sub-programs are walked: `jit`, `remat`, custom derivatives, `cond` (the
most expensive branch), `scan` (body x length), `while` (body once: its
trip count is not known before running), `shard_map` (its per-device body
x the devices it runs on) and Pallas kernels (`pallas_call`: the kernel x
its grid, so every block counts, also one a kernel skips at run time).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import jax
import jax.extend  # noqa: F401  (makes jax.extend.core importable as an attribute)

_core = jax.extend.core


def dot_general_flops(lhs_shape: tuple[int, ...], out_shape: tuple[int, ...],
                      dimension_numbers: Any) -> int:
    """2 x (output elements) x (length of the contracted dimensions)."""
    (lhs_contract, _), _ = dimension_numbers
    return 2 * math.prod(out_shape) * math.prod(lhs_shape[d] for d in lhs_contract)


def conv_flops(rhs_shape: tuple[int, ...], out_shape: tuple[int, ...], dimension_numbers: Any,
               lhs_dilation: tuple[int, ...]) -> int:
    """2 x (output elements) x (kernel elements per output feature) / prod(lhs_dilation).

    The kernel's input-feature dimension already holds C_in / feature_group_count,
    so grouped and depthwise convolutions (and their weight gradients, which use
    batch_group_count) are counted by the same formula. An input dilated by d
    (the input gradient of a stride-d convolution) is mostly inserted zeros:
    only one kernel tap in prod(d) meets a real input, which is what the
    hardware computes, so the input gradient counts as much as the forward pass.
    """
    out_feature_dim = dimension_numbers.rhs_spec[0]
    per_output = math.prod(rhs_shape) // rhs_shape[out_feature_dim]
    return 2 * math.prod(out_shape) * per_output // math.prod(lhs_dilation)


def _sub_jaxprs(params: dict) -> Iterator[Any]:
    """Every (closed) jaxpr held in an equation's parameters."""
    for value in params.values():
        for item in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(item, (_core.Jaxpr, _core.ClosedJaxpr)):
                yield item


def equation_flops(eqn: Any) -> int:
    """FLOPs of one dot_general or conv_general_dilated equation."""
    if eqn.primitive.name == "dot_general":
        return dot_general_flops(eqn.invars[0].aval.shape, eqn.outvars[0].aval.shape,
                                 eqn.params["dimension_numbers"])
    return conv_flops(eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape,
                      eqn.params["dimension_numbers"], eqn.params["lhs_dilation"])


def matmul_equations(jaxpr: Any, times: int = 1) -> Iterator[tuple[Any, int]]:
    """(equation, runs) for every dot_general and conv_general_dilated of one run of
    `jaxpr` (a Jaxpr or ClosedJaxpr): runs is how often a scan, a kernel's grid or a
    shard_map's devices repeat it; of a cond, the branch with the most FLOPs."""
    if isinstance(jaxpr, _core.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("dot_general", "conv_general_dilated"):
            yield eqn, times
        elif name == "cond":
            yield from matmul_equations(max(eqn.params["branches"], key=jaxpr_flops), times)
        elif name == "scan":
            yield from matmul_equations(eqn.params["jaxpr"], times * eqn.params["length"])
        elif name == "pallas_call":
            yield from matmul_equations(eqn.params["jaxpr"],
                                        times * math.prod(eqn.params["grid_mapping"].grid))
        elif name == "shard_map":
            devices = math.prod(eqn.params["mesh"].shape[axis]
                                for axis in eqn.params["newly_manual_axes"])
            yield from matmul_equations(eqn.params["jaxpr"], times * devices)
        else:
            for sub in _sub_jaxprs(eqn.params):
                yield from matmul_equations(sub, times)


def jaxpr_flops(jaxpr: Any) -> int:
    """Matmul and convolution FLOPs of one run of `jaxpr` (a Jaxpr or ClosedJaxpr)."""
    return sum(equation_flops(eqn) * runs for eqn, runs in matmul_equations(jaxpr))


def traced_flops(traced: jax.stages.Traced) -> int:
    """Matmul FLOPs of one call of `jax.jit(f).trace(*args)`, all devices together."""
    return jaxpr_flops(traced.jaxpr)
