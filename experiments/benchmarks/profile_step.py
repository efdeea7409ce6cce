"""Per-op time of one of vs_pytorch.py's jaxssl steps, from a `jax.profiler` trace.

  python -m experiments.benchmarks.profile_step --workload=simclr|mae|baby_gpt \\
      [--bfloat16] [--warmup=6] [--steps=3] [--top=15]

Builds the step as the benchmark worker does (`jax_steps.build`, in a process
prepared for training), runs `--warmup` steps, times `--steps` untraced steps,
then traces `--steps` more with XLA:CPU's per-thunk trace events
(`--xla_cpu_enable_xprof_traceme=true`, added to XLA_FLAGS here). For the
traced step of median op time it prints the op time summed by kind (a
fusion's kind from the opcodes in its HLO body: convolution, dot, reduce,
transpose, ...), then the `--top` single ops.

Read it with two caveats. Convolutions run asynchronously on XLA:CPU's
intra-op threads and their trace events cover little of their run time, so
"untraced" (the untraced step's median minus the traced op time, when
positive) is mostly convolution time. Independent thunks can run at the same
time on the two cores, so op times may add up to more than the step.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import statistics
import tempfile

import jax

from experiments.benchmarks.ab_step import prepare_process
from experiments.benchmarks.jax_steps import WORKLOADS, build, run_steps, with_compute_dtype
from jaxssl import platforms

TRACEME_FLAG = "--xla_cpu_enable_xprof_traceme=true"
# Trace events of the runtime around the ops, not ops.
RUNTIME_EVENTS = ("ThunkExecutor", "$", "Slinky", "PjRt", "Thunk", "CommonPjRt", "PjitFunction",
                  "ParseArguments", "end: ", "Wait for", "Handle input", "ThreadpoolListener",
                  "PythonRefManager", "AllocateOutputBuffers")
# (an opcode in a fusion's body, the fusion's kind), first match wins
FUSION_KINDS = (("convolution", "convolution fusion"), ("dot", "dot fusion"),
                ("sort", "sort fusion"), ("reduce-window", "reduce-window fusion"),
                ("reduce", "reduce fusion"),
                ("transpose", "transpose fusion"))
SHOWN_KIND_S = 5e-4  # kinds under 0.5 ms per step are left out of the table


def fusion_kinds(hlo: str) -> dict[str, str]:
    """Fusion instruction name -> the kind of work its fused computation does."""
    bodies, current = {}, None
    for line in hlo.split("\n"):
        header = re.match(r"%?([\w.\-]+) .*\{\s*$", line)
        if header and not line.startswith(" "):
            current = header.group(1)
            bodies[current] = []
        elif current:
            # Without the metadata: a backward op's op_name reads "transpose(jvp(...))".
            bodies[current].append(line.split(", metadata=")[0])
    kinds = {}
    for line in hlo.split("\n"):
        call = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ fusion\(.*calls=%?([\w.\-]+)", line)
        if call:
            body = "\n".join(bodies.get(call.group(2), []))
            kinds[call.group(1)] = next(
                (kind for op, kind in FUSION_KINDS if f" {op}(" in body), "elementwise fusion")
    return kinds


STEP_EVENT = "ThunkExecutor::Execute (wait for completion)"  # one per executed program


def op_times_per_step(events: list, kinds: dict[str, str]) -> list[tuple]:
    """For each executed step in a trace (the outermost STEP_EVENT intervals): (its wall
    seconds, op seconds by kind, op seconds by op name, ops by kind)."""
    intervals = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                       if e.get("ph") == "X" and e["name"] == STEP_EVENT)
    outermost = [iv for iv in intervals
                 if not any(o[0] <= iv[0] and iv[1] <= o[1] and o != iv for o in intervals)]
    steps = [((end - begin) / 1e6, collections.Counter(), collections.Counter(),
              collections.Counter()) for begin, end in outermost]
    for event in events:
        if event.get("ph") != "X" or event["name"].startswith(RUNTIME_EVENTS):
            continue
        at = next((i for i, (begin, end) in enumerate(outermost) if begin <= event["ts"] <= end),
                  None)
        if at is None:
            continue
        name = event["name"]
        kind = kinds.get(name, re.sub(r"(\.\d+)*(\.clone)?$", "", name))
        _, by_kind, by_op, count = steps[at]
        by_kind[kind] += event["dur"] / 1e6
        by_op[name] += event["dur"] / 1e6
        count[kind] += 1
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True, choices=sorted(WORKLOADS))
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--bfloat16", action="store_true", help="compute_dtype=bfloat16")
    args = parser.parse_args()
    platforms.add_xla_flags([TRACEME_FLAG])
    config, overrides = WORKLOADS[args.workload]
    overrides = with_compute_dtype(overrides, args.bfloat16)
    prepare_process(config, overrides)
    step, state, batch, flops = build(config, overrides)
    state, _ = run_steps(step, state, batch, args.warmup)
    state, seconds = run_steps(step, state, batch, args.steps)
    trace_dir = tempfile.mkdtemp(prefix="profile_step_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        state, _ = run_steps(step, state, batch, args.steps)
    trace_file = glob.glob(f"{trace_dir}/**/*perfetto_trace.json.gz", recursive=True)[0]
    events = json.load(gzip.open(trace_file))
    events = events["traceEvents"] if isinstance(events, dict) else events
    kinds = fusion_kinds(step.as_text())
    # Now and then a traced step takes several times as long (the profiler's own work on
    # the two cores): the tables are those of the step whose op time is the median.
    traces = sorted(op_times_per_step(events, kinds), key=lambda t: sum(t[1].values()))
    _, by_kind, by_op, count = traces[len(traces) // 2]
    step_s = statistics.median(seconds)
    traced = sum(by_kind.values())
    print(f"{args.workload}: {flops / 1e9:.1f} GFLOP/step; untraced step median {step_s:.4f} s "
          f"({', '.join(f'{s:.4f}' for s in seconds)}); traced steps (wall s / op s: "
          f"{', '.join(f'{t[0]:.4f} / {sum(t[1].values()):.4f}' for t in traces)}); below, the "
          f"one of median op time, {traced:.4f} s; the untraced step's median less that: "
          f"{max(step_s - traced, 0):.4f} s")
    print(f"\nseconds/step  share  ops/step  kind (those over {SHOWN_KIND_S * 1e3:g} ms/step)")
    for kind, s in by_kind.most_common():
        if s < SHOWN_KIND_S:
            break
        print(f"{s:12.4f}  {s / traced:5.1%}  {count[kind]:8.0f}  {kind}")
    print(f"\nthe {args.top} longest ops (seconds/step, kind)")
    for name, s in by_op.most_common(args.top):
        print(f"{s:12.4f}  {name}  ({kinds.get(name, 'not a fusion')})")


if __name__ == "__main__":
    main()
