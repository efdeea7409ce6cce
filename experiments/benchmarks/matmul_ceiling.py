"""The matmul ceiling of a vs_pytorch.py step: its products and convolutions timed alone.

  python -m experiments.benchmarks.matmul_ceiling --workload=simclr|mae|baby_gpt \\
      [--repeats=200] [--steps=20]

Every matrix product and convolution of the workload's train step (the
equations that `jaxssl.flops` counts in its jaxpr, with scan lengths and the
costlier branch of a cond) is compiled and timed on its own, on random
inputs, once per distinct shape: a product as a plain batched
[B, M, K] x [B, K, N] matmul, the operand layout XLA:CPU runs fastest whatever
layout the step gives it, and a convolution exactly as the step has it.

Each time is the median of `--repeats` calls (fewer for those that take over 2 s
in all) less the median of a call of a
1 x 1 x 1 product (the dispatch overhead, which a step pays once, not per product).
The ceiling is their FLOPs over their summed times, as a fraction of
the float32 matmul peak measured in the same run: the fraction of the peak
that the step would reach if all its other work (element-wise fusions,
reductions, transposes, the optimizer) took no time and the products ran one
after another as they do alone. The step itself (`jax_steps.build`, in a
process prepared for training) is timed in the same run for comparison.
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments.benchmarks.ab_step import prepare_process, traced_step
from experiments.benchmarks.jax_steps import WORKLOADS, apply_undo_switches, run_steps
from jaxssl.flops import equation_flops, matmul_equations
from jaxssl.logging import device_peak_flops


def product_dims(eqn: Any) -> tuple[int, int, int, int]:
    """(B, M, K, N) of a dot_general equation: batch, lhs-free, contracted and rhs-free
    sizes, each the product of its dimensions."""
    (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    batch = math.prod(lhs[d] for d in lhs_batch)
    contracted = math.prod(lhs[d] for d in lhs_contract)
    return (batch, math.prod(lhs) // (batch * contracted), contracted,
            math.prod(rhs) // (batch * contracted))


def standalone(eqn: Any) -> tuple[str, Callable, list[tuple[tuple[int, ...], Any]]]:
    """(a description, the function, its argument shapes and dtypes) of the equation alone."""
    if eqn.primitive.name == "dot_general":
        b, m, k, n = product_dims(eqn)
        dtype = eqn.invars[0].aval.dtype
        return (f"product [{b}, {m}, {k}] x [{b}, {k}, {n}] {dtype}", jnp.matmul,
                [((b, m, k), dtype), ((b, k, n), dtype)])
    lhs, rhs = (v.aval for v in eqn.invars)
    return (f"convolution {lhs.shape} * {rhs.shape} -> {eqn.outvars[0].aval.shape} "
            f"{lhs.dtype}", lambda x, w: eqn.primitive.bind(x, w, **eqn.params),
            [(lhs.shape, lhs.dtype), (rhs.shape, rhs.dtype)])


def median_seconds(fn: Callable, args: list[jax.Array], repeats: int,
                   budget_s: float = 2.0) -> float:
    """Median wall seconds of up to `repeats` calls of the compiled `fn` (after 3 warm-up
    calls), stopping early, after at least 5, once the calls took `budget_s`."""
    for _ in range(3):
        jax.block_until_ready(fn(*args))
    seconds = []
    while len(seconds) < repeats and (len(seconds) < 5 or sum(seconds) < budget_s):
        begin = time.perf_counter()
        jax.block_until_ready(fn(*args))
        seconds.append(time.perf_counter() - begin)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=200,
                        help="timed calls per shape and round, fewer where they take over 2 s")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    args = parser.parse_args()
    prepare_process(*WORKLOADS[args.workload])
    apply_undo_switches()
    trainer, traced, batch = traced_step(*WORKLOADS[args.workload])

    # description -> [runs per step, FLOPs per run, compiled function, arguments]
    rng = np.random.default_rng(0)
    shapes: dict[str, list] = {}
    for eqn, runs in matmul_equations(traced.jaxpr):
        description, fn, specs = standalone(eqn)
        if description not in shapes:
            arrays = [jnp.asarray(rng.standard_normal(shape), dtype) for shape, dtype in specs]
            shapes[description] = [0, equation_flops(eqn), jax.jit(fn), arrays]
        shapes[description][0] += runs
    total_flops = sum(runs * flops for runs, flops, _, _ in shapes.values())

    step = traced.lower().compile()
    state, _ = run_steps(step, trainer.initial_state(), batch, 3)
    peak, _ = device_peak_flops(jax.devices()[0])
    overhead_s = median_seconds(jax.jit(jnp.matmul), [jnp.ones((1, 1, 1))] * 2, args.repeats)
    print(f"{args.workload}: {total_flops / 1e9:.2f} GFLOP/step; measured float32 matmul peak "
          f"{peak / 1e9:.0f} GFLOP/s; call overhead {overhead_s * 1e6:.0f} us, subtracted from "
          f"every product's time")
    print(f"{'round':>5} {'products ms':>12} {'ceiling':>8} {'step ms':>8} {'step':>6} "
          f"{'products / step':>16}")
    per_shape = collections.defaultdict(list)
    ratios = []
    for round_index in range(args.rounds):
        products_s = 0.0
        for description, (runs, _, fn, arrays) in shapes.items():
            seconds = median_seconds(fn, arrays, args.repeats) - overhead_s
            per_shape[description].append(seconds)
            products_s += runs * seconds
        state, step_seconds = run_steps(step, state, batch, args.steps)
        step_s = statistics.median(step_seconds)
        ratios.append(products_s / step_s)
        print(f"{round_index:5d} {products_s * 1e3:12.1f} {total_flops / products_s / peak:8.0%} "
              f"{step_s * 1e3:8.1f} {total_flops / step_s / peak:6.0%} {ratios[-1]:16.0%}")
    print(f"the products alone take {statistics.median(ratios):.0%} of the step's time "
          f"(median of {args.rounds} rounds)")
    print(f"\n{'runs':>5} {'GFLOP':>8} {'ms each':>9} {'GFLOP/s':>8} {'of peak':>8}  "
          f"shape (median of the rounds)")
    for description, (runs, flops, _, _) in sorted(shapes.items(),
                                                  key=lambda item: -item[1][0] * item[1][1]):
        seconds = statistics.median(per_shape[description])
        print(f"{runs:5d} {runs * flops / 1e9:8.3f} {seconds * 1e3:9.3f} "
              f"{flops / seconds / 1e9:8.0f} {flops / seconds / peak:8.0%}  {description}")


if __name__ == "__main__":
    main()
