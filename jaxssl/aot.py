"""Command line: compile a config's train and evaluation steps ahead of time for a TPU slice,
on any machine.

  python -m jaxssl.aot --config=configs/NAME.py[:ARG] --topology=v5e:2x2 [--num_slices=N]
      [--json=PATH] [--hlo=PATH] [--config.a.b=VALUE ...]

Needs libtpu (requirements-tpu.txt), not a TPU: the slice's devices come from
`jax.experimental.topologies.get_topology_desc` and the real TPU compiler
compiles the Trainer's own train step (`jaxssl.train.TrainStep`) for the
config's mesh over them. No data is read and no array is allocated: the
batch's shapes come from the data source's spec
(`jaxssl.data.sources.element_spec`), made the method's training records' by
its `train_record_spec` hook (Gato's mixture rows), and what a method reads besides its
splits (a forgetting set, by its `open_data` hook; the checkpoint it starts from, by
its hand-off plan) is opened only by the Trainer; a character vocabulary needs its size in the
dataset name (chars=N). v4 and v5p chips are compiled for as one device each
(megacore). Prints, per device (= per chip):

- devices, chips, mesh and chip kind;
- parameters, optimizer state, method state and batch (from the state's
  shardings), and the compiled program's temporaries, in GiB, against the
  HBM (v4 32 GiB per chip, v5e 16, v5p 95, v6e 32), and whether it fits;
- matmul FLOPs per device per step, counted by `jaxssl.flops` and by XLA's
  cost analysis;
- the FLOPs' time at the chip's bf16 peak, XLA's TPU cost-model time for the
  step and the fraction of the peak it implies: a cost-model upper bound, not
  a measured time. XLA costs a loop body once, so for a scanned model the time
  is also given scaled by jaxssl's / XLA's FLOPs (assuming the loops dominate);
- how the parameters and optimizer state are split: their bytes per device
  over their total / (fsdp x tensor), and every parameter of 1 MiB or more
  that is replicated on all devices;
- every collective of the compiled program: count and result bytes per
  device (an op inside a loop, e.g. a scan over layers, is counted once);
- the compile time;
- the evaluation step (the method's `eval_step` on a batch of eval.batch_size
  records): its memory per device, whether it fits, XLA's FLOPs and its compile
  time, or why there is none (a method without a per-batch evaluation step).

A step (train or evaluation) that does not fit the HBM exits with status 2 and
one line on stderr naming the shortfall and what would help. `--json` writes the same
fields to PATH (also when the step does not fit).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from typing import Any

from jaxssl import device_memory, output_paths
from jaxssl.errors import ConfigError, DoesNotFitError, InputError, MeshError

GIB, MIB = 2**30, 2**20
# Chip generation (the topology name's prefix) -> (HBM per chip in GiB, libtpu's
# TPU_ACCELERATOR_TYPE prefix).
CHIPS = {"v4": (32, "v4"), "v5e": (16, "v5litepod"), "v5p": (95, "v5p"), "v6e": (32, "v6e")}
# Chips with two TensorCores, compiled for as one device per chip ("megacore"), as they
# run; libtpu's default for them is a device per core.
MEGACORE = ("v4", "v5p")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
                "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1}


def parse_topology(name: str) -> tuple[str, int]:
    """'v5e:2x2' -> ('v5e', 4 chips); MeshError for an unknown chip or a bad shape."""
    chip, _, shape = name.partition(":")
    if chip not in CHIPS or not re.fullmatch(r"\d+(x\d+)*", shape):
        raise MeshError(f"--topology={name!r}: expected CHIP:AxB[xC] with CHIP one of "
                        f"{', '.join(CHIPS)}, e.g. v5e:2x2 or v5p:4x4x4")
    return chip, math.prod(int(d) for d in shape.split("x"))


def topology_devices(name: str, num_slices: int = 1) -> list:
    """The compile-only TPU devices of `num_slices` slices of topology `name`."""
    chip, chips = parse_topology(name)
    if num_slices < 1:
        raise MeshError(f"--num_slices={num_slices}: must be 1 or more")
    # libtpu would otherwise look for a TPU VM's metadata and print warnings about it.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{CHIPS[chip][1]}-{chips}")
    # Compile-only devices drive no chip: do not wait for the libtpu lockfile that any
    # other process with a TPU backend (even a CPU-only run that probed for one) holds.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    from jax.experimental import topologies
    kwargs = {"num_slices": num_slices} if num_slices > 1 else {}
    if chip in MEGACORE:
        kwargs["chip_config_name"] = "megacore"
    try:
        return list(topologies.get_topology_desc(topology_name=name, platform="tpu",
                                                 **kwargs).devices)
    except Exception as error:  # libtpu's own message says what is wrong with the name
        raise MeshError(f"--topology={name!r}: {' '.join(str(error).split())[:300]}") from None


def shard_bytes(tree: Any, shardings: Any) -> int:
    """Bytes one device holds of the abstract arrays `tree` laid out by `shardings`
    (the most any device holds, for shardings that split unevenly)."""
    import jax
    total = 0
    for leaf, sharding in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        shape = sharding.shard_shape(leaf.shape)
        total += math.prod(shape) * _itemsize(leaf.dtype)
    return total


def _itemsize(dtype) -> int:
    import jax
    import numpy as np
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return 8  # a threefry key: 2 x uint32
    return np.dtype(dtype).itemsize


def replicated_parameters(params: Any, shardings: Any, min_bytes: int = MIB) -> dict[str, float]:
    """{path: MiB} of the parameters of at least `min_bytes` that every device holds whole."""
    import jax
    found = {}
    for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                      jax.tree.leaves(shardings)):
        size = math.prod(leaf.shape) * _itemsize(leaf.dtype)
        if size >= min_bytes and tuple(sharding.shard_shape(leaf.shape)) == tuple(leaf.shape):
            found[jax.tree_util.keystr(path, simple=True, separator="/")] = size / MIB
    return found


def state_over_ideal(state: Any, shardings: Any, mesh) -> float:
    """Per-device bytes of the parameters and optimizer state over their ideal share, all
    their bytes / (fsdp x tensor): 1.0 when fully sharded over those two axes."""
    import jax
    parts = [(getattr(state, k), getattr(shardings, k)) for k in ("params", "opt_state")]
    whole = sum(math.prod(x.shape) * _itemsize(x.dtype)
                for tree, _ in parts for x in jax.tree.leaves(tree))
    per_device = sum(shard_bytes(tree, sharding) for tree, sharding in parts)
    return per_device / (whole / (mesh.shape["fsdp"] * mesh.shape["tensor"]))


def _shape_bytes(text: str) -> int:
    """Bytes of the HLO shapes in `text`, e.g. 'f32[128,64]{1,0}' or a tuple of them."""
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+\d*[a-z0-9]*)\[([\d,]*)\]", text):
        if dtype in _DTYPE_BYTES:
            total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """{op: {'count', 'bytes'}} of the collectives in compiled HLO text. An async pair
    (op-start / op-done) counts once. Bytes are the result's size on one device (the
    gathered array of an all-gather; of an async op's (operand, result, ...) tuple,
    the largest element). XLA:TPU writes a reduce-scatter as an all-reduce inside a
    fused computation named all-reduce-scatter*: it counts as a reduce-scatter with
    that computation's (scattered) result."""
    found: dict[str, dict[str, int]] = {}
    pattern = re.compile(r"=\s*(.*?)\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    header = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.-]+)\s+\(.*\)\s+->\s+(.*)\s+\{\s*$")
    computation, computation_result = "", ""
    for line in hlo_text.splitlines():
        top = header.match(line)
        if top:
            computation, computation_result = top.groups()
            continue
        match = pattern.search(line)
        if not match:
            continue
        result, op, start = match.groups()
        if op == "all-reduce" and computation.startswith("all-reduce-scatter"):
            op, result, start = "reduce-scatter", computation_result, None
        sizes = [_shape_bytes(m) for m in re.findall(r"[a-z]+\d*[a-z0-9]*\[[\d,]*\]", result)]
        entry = found.setdefault(op, {"count": 0, "bytes": 0})
        entry["count"] += 1
        entry["bytes"] += (max(sizes) if start else sum(sizes)) if sizes else 0
    return found


def cost_analysis(compiled) -> dict[str, float]:
    """XLA's cost analysis of a compiled program as one dict ('flops', 'optimal_seconds',
    ...; empty if XLA gives none)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return dict(cost or {})


def _compile(traced) -> tuple[Any, str | None, float]:
    """(compiled or None, XLA's out-of-memory message or None, seconds) for `traced`."""
    start = time.perf_counter()
    lowered = traced.lower()
    try:
        compiled, error = lowered.compile(), None
    except Exception as exc:  # XLA:TPU refuses a program over the HBM it has
        error = " ".join(str(exc).split())
        if "RESOURCE_EXHAUSTED" not in error:
            raise
        compiled = None
    return compiled, error, time.perf_counter() - start


def _temporaries_in_error(message: str) -> int | None:
    """Bytes of temporaries XLA:TPU's out-of-memory message names, if it names them."""
    temps = re.search(r"temporaries \(([\d.]+)([GMK])\)", message)
    if not temps:
        return None
    return int(float(temps.group(1)) * {"G": 1, "M": 2**-10, "K": 2**-20}[temps.group(2)] * GIB)


def analyse_eval_step(step, hbm: float) -> dict[str, Any]:
    """The report's 'eval_step' fields: the method's `eval_step` compiled for the step's
    mesh, or {'missing': why} for a method without one."""
    from jaxssl.evaluate.representation import eval_batch_size
    try:
        traced = step.trace_eval_step()
    except NotImplementedError as error:
        return {"missing": str(error)}
    compiled, error, seconds = _compile(traced)
    batch = eval_batch_size(step.config.eval.batch_size, step.mesh)
    if compiled is None:
        temps = _temporaries_in_error(error)
        return {"batch_size": batch, "fits": False, "compile_error": error[:2000],
                "temporaries_gib": temps / GIB if temps is not None else None,
                "compile_s": round(seconds, 2)}
    analysis = compiled.memory_analysis()
    total = device_memory.total_bytes(analysis)
    return {"batch_size": batch, "temporaries_gib": analysis.temp_size_in_bytes / GIB,
            "total_gib": total / GIB, "fits": bool(total <= hbm),
            "flops_per_device_xla": float(cost_analysis(compiled).get("flops", 0.0)),
            "compile_s": round(seconds, 2)}


def build_step(config, topology: str, num_slices: int = 1):
    """The `jaxssl.train.TrainStep` of resolved `config` on the config's mesh over the
    compile-only devices of `num_slices` slices of `topology`, from the data source's
    spec (no data read, no array allocated)."""
    from jaxssl import parallel
    from jaxssl.data import pipeline
    from jaxssl.train import TrainStep

    mesh = parallel.make_mesh(config.mesh, topology_devices(topology, num_slices), num_slices)
    batch = config.data.batch_size
    pipeline.per_process_batch_size(batch, parallel.batch_shards(mesh), batch, 1)
    return TrainStep.from_spec(config, mesh)


def analyse(config_spec: str, overrides: dict[str, str], topology: str,
            num_slices: int = 1, hlo_path: str = "") -> dict[str, Any]:
    """Compiles the config's train step for the slice(s); returns the report's fields.
    With `hlo_path`, the compiled program's HLO text is written there."""
    import jax

    from jaxssl import config as config_lib, flops as flops_lib, logging as log_lib, parallel
    from jaxssl.data import text

    config = config_lib.load(config_spec, overrides)
    if text.vocabulary_needs_corpus(config.data.name):
        raise ConfigError(f"dataset {config.data.name!r}: compiling without data needs the "
                          "character vocabulary's size in the name (chars=N, the corpus' "
                          "distinct characters)")
    chip, chips = parse_topology(topology)
    step = build_step(config, topology, num_slices)
    mesh, example, batch = step.mesh, step._example, config.data.batch_size
    devices = list(mesh.devices.flat)
    per_chip = len(devices) // (chips * num_slices)

    state, shardings = step.abstract_state, step.state_shardings
    traced = step.trace_train_step()
    hbm = CHIPS[chip][0] * GIB / per_chip
    compiled, compile_error, compile_s = _compile(traced)

    batch_spec = {k: jax.ShapeDtypeStruct((batch,) + v.shape[1:], v.dtype)
                  for k, v in example.items()}
    batch_shardings = {k: parallel.batch_sharding(mesh) for k in batch_spec}
    memory = {
        "parameters": shard_bytes(state.params, shardings.params),
        "optimizer_state": shard_bytes(state.opt_state, shardings.opt_state),
        "method_state": shard_bytes(state.method_state, shardings.method_state),
        "batch": shard_bytes(batch_spec, batch_shardings),
    }
    flops_jaxpr = flops_lib.traced_flops(traced) / mesh.size
    kind = log_lib.table_kind(devices[0].device_kind)
    peak = (log_lib.PEAK_FLOPS[kind] if kind else 0.0) / per_chip
    report: dict[str, Any] = {
        "config": config_spec, "overrides": overrides, "topology": topology,
        "num_slices": num_slices, "devices": len(devices), "chips": chips * num_slices,
        "devices_per_chip": per_chip, "chip_kind": devices[0].device_kind,
        "mesh": dict(zip(mesh.axis_names, (int(s) for s in mesh.devices.shape))),
        "batch_size": batch, "hbm_gib_per_device": hbm / GIB,
        "compile_s": round(compile_s, 2),
        "flops_per_device_jaxpr": flops_jaxpr, "peak_flops_per_device": peak,
        "flops_over_peak_seconds": flops_jaxpr / peak if peak else None,
        "state_over_ideal": state_over_ideal(state, shardings, mesh),
        "replicated_parameters_mib": replicated_parameters(state.params, shardings.params),
    }
    if compiled is None:
        temps = _temporaries_in_error(compile_error)
        if temps is not None:
            memory["temporaries"] = temps
        report.update(fits=False, compile_error=compile_error[:2000],
                      eval_step={"missing": "not compiled: the train step does not fit"},
                      memory_gib={k: v / GIB for k, v in memory.items()},
                      total_gib=sum(memory.values()) / GIB if temps is not None else None)
        return report

    analysis = compiled.memory_analysis()
    memory["temporaries"] = int(analysis.temp_size_in_bytes)
    memory["generated_code"] = int(analysis.generated_code_size_in_bytes)
    total = device_memory.total_bytes(analysis)
    hlo_text = compiled.as_text()
    if hlo_path:
        output_paths.write_text(hlo_path, hlo_text)
    cost = cost_analysis(compiled)
    seconds = cost.get("optimal_seconds")
    if seconds is not None and seconds <= 0:  # seen for large programs: not a time
        seconds = None
    xla_flops = float(cost.get("flops", 0.0))
    # XLA costs a while loop's body once: a scan over layers (or micro-batches) reads
    # low. Scaling the time by the FLOPs it missed assumes the loop bodies dominate.
    undercount = flops_jaxpr / xla_flops if xla_flops else None
    scaled = seconds * max(undercount, 1.0) if seconds and undercount else None
    report.update(
        memory_gib={k: v / GIB for k, v in memory.items()},
        arguments_gib=analysis.argument_size_in_bytes / GIB,
        total_gib=total / GIB, fits=bool(total <= hbm),
        flops_per_device_xla=xla_flops,
        bytes_accessed_per_device_xla=float(cost.get("bytes accessed", 0.0)),
        cost_model_seconds=float(seconds) if seconds is not None else None,
        xla_cost_analysis={k: float(v) for k, v in cost.items()
                           if k in ("flops", "bytes accessed", "transcendentals",
                                    "optimal_seconds")},
        cost_model_fraction_of_peak=(flops_jaxpr / float(seconds) / peak
                                     if seconds and peak else None),
        cost_model_seconds_scaled=scaled,
        cost_model_scaled_fraction_of_peak=(flops_jaxpr / scaled / peak
                                            if scaled and peak else None),
        collectives=collectives(hlo_text),
        eval_step=analyse_eval_step(step, hbm),
    )
    return report


def format_report(r: dict[str, Any]) -> str:
    """The report as aligned text."""
    lines = [f"topology     {r['topology']} x {r['num_slices']} slice(s): {r['chips']} chips "
             f"({r['chip_kind']}), {r['devices']} devices ({r['devices_per_chip']} per chip)",
             f"mesh         {r['mesh']}   batch {r['batch_size']}",
             f"memory per device (GiB, HBM {r['hbm_gib_per_device']:.1f}):"]
    for name, gib in r["memory_gib"].items():
        lines.append(f"  {name:<18}{gib:10.4g}")
    if r.get("total_gib") is not None:
        lines.append(f"  {'total':<18}{r['total_gib']:10.4g}   "
                     f"{'fits' if r['fits'] else 'DOES NOT FIT'}")
    if "compile_error" in r:
        lines.append(f"  XLA: {r['compile_error'][:400]}")
    lines.append(f"FLOPs per device per step: {r['flops_per_device_jaxpr']:.4g} (jaxssl.flops)"
                 + (f", {r['flops_per_device_xla']:.4g} (XLA cost analysis)"
                    if "flops_per_device_xla" in r else ""))
    if r.get("flops_over_peak_seconds"):
        lines.append(f"FLOPs / bf16 peak: {1e3 * r['flops_over_peak_seconds']:.3f} ms per step")
    if r.get("cost_model_seconds"):
        fraction = r["cost_model_fraction_of_peak"]
        lines.append(f"XLA cost-model step time {1e3 * r['cost_model_seconds']:.3f} ms: "
                     f"{100 * fraction:.1f}% of the bf16 peak (a cost-model upper bound, "
                     f"not a measured time)")
        if r.get("cost_model_seconds_scaled", r["cost_model_seconds"]) > r["cost_model_seconds"]:
            lines.append(f"  x {r['flops_per_device_jaxpr'] / r['flops_per_device_xla']:.2f} "
                         f"for the FLOPs XLA counts once in loops: "
                         f"{1e3 * r['cost_model_seconds_scaled']:.3f} ms, "
                         f"{100 * r['cost_model_scaled_fraction_of_peak']:.1f}% of the peak")
    elif "flops_per_device_xla" in r:
        raw = r["xla_cost_analysis"].get("optimal_seconds")
        lines.append(f"XLA cost model: no usable optimal_seconds (got {raw})")
    lines.append(f"params + optimizer state per device: {r['state_over_ideal']:.3f} x "
                 f"their total / (fsdp x tensor)")
    big = r["replicated_parameters_mib"]
    lines.append(f"parameters >= 1 MiB replicated on every device: {len(big)}"
                 + "".join(f"\n  {path:<50}{mib:10.2f} MiB" for path, mib in big.items()))
    if "collectives" in r:
        lines.append("collectives (count, result MiB per device; loop bodies once):")
        for op, c in sorted(r["collectives"].items()):
            lines.append(f"  {op:<20}{c['count']:6d}{c['bytes'] / 2**20:12.3f}")
        if not r["collectives"]:
            lines.append("  none")
    lines.append(f"compile time {r['compile_s']:.1f} s")
    lines.append(format_eval_step(r["eval_step"]))
    return "\n".join(lines)


def format_eval_step(e: dict[str, Any]) -> str:
    """The evaluation step's line of the report."""
    if "missing" in e:
        return f"evaluation step: none ({e['missing']})"
    if "compile_error" in e:
        return (f"evaluation step (batch {e['batch_size']}): DOES NOT FIT: "
                f"{e['compile_error'][:300]}")
    return (f"evaluation step (batch {e['batch_size']}): {e['total_gib']:.4g} GiB per device "
            f"({e['temporaries_gib']:.4g} temporaries), {'fits' if e['fits'] else 'DOES NOT FIT'}; "
            f"{e['flops_per_device_xla']:.4g} FLOPs per device (XLA); "
            f"compiled in {e['compile_s']:.1f} s")


def shortfall_message(r: dict[str, Any]) -> str:
    """One line: how much is missing and what would help."""
    mesh, total = r["mesh"], r.get("total_gib")
    need = f"needs {total:.2f} GiB" if total is not None else "does not fit"
    short = (f", {total - r['hbm_gib_per_device']:.2f} GiB short" if total is not None else "")
    state = sum(r["memory_gib"][k] for k in ("parameters", "optimizer_state", "method_state"))
    temps = r["memory_gib"].get("temporaries")
    temp_text = f", temporaries {temps:.2f} GiB" if temps is not None else ""
    return (f"the train step {need} per device of {r['topology']} "
            f"({r['hbm_gib_per_device']:.1f} GiB HBM){short} (state {state:.2f} GiB"
            f"{temp_text}, mesh {mesh}); {_advice(mesh, state, r['hbm_gib_per_device'])}")


def _advice(mesh: dict[str, int], state_gib: float, hbm_gib: float) -> str:
    """What would help a train step fit: splitting the state over more devices (from the
    data axis if it has any, else from a larger slice), and, unless the state alone is too
    big, fewer activations per device."""
    split = ("more fsdp (--config.mesh.fsdp, taking devices from data)" if mesh["data"] > 1
             else "a larger slice (more chips to split the state over)")
    if state_gib > hbm_gib:
        return f"the state alone is over the HBM: try {split}"
    return f"try {split}, {device_memory.FEWER_ACTIVATIONS}"


def eval_shortfall_message(r: dict[str, Any]) -> str:
    """One line: the evaluation step does not fit, and what would help."""
    e = r["eval_step"]
    if "total_gib" in e:
        need = f"needs {e['total_gib']:.2f} GiB"
    elif e.get("temporaries_gib") is not None:
        need = f"needs {e['temporaries_gib']:.2f} GiB of temporaries"
    else:
        need = "does not fit"
    return (f"the evaluation step (batch {e['batch_size']}) {need} per device of "
            f"{r['topology']} ({r['hbm_gib_per_device']:.1f} GiB HBM, mesh {r['mesh']}); try a "
            f"smaller --config.eval.batch_size or more fsdp (--config.mesh.fsdp)")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    from jaxssl.main import parse_with_overrides
    parser = argparse.ArgumentParser(prog="python -m jaxssl.aot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
    parser.add_argument("--topology", required=True, help="e.g. v5e:2x2, v5p:4x4x4, v4:4x4x4")
    parser.add_argument("--num_slices", type=int, default=1, help="slices joined over DCN")
    parser.add_argument("--json", default="", help="write the report's fields to this file")
    parser.add_argument("--hlo", default="", help="write the compiled program's HLO text here")
    return parse_with_overrides(parser, argv)


def main(argv: list[str] | None = None) -> int:
    from jaxssl.main import report_input_error
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        for flag, path in (("--json", args.json), ("--hlo", args.hlo)):
            if path:
                output_paths.check_output_file(path, flag)
        report = analyse(args.config, overrides, args.topology, args.num_slices, args.hlo)
        print(format_report(report), flush=True)
        if args.json:
            output_paths.write_text(args.json, json.dumps(report, indent=2))
        if not report["fits"]:
            raise DoesNotFitError(shortfall_message(report))
        if not report["eval_step"].get("fits", True):
            raise DoesNotFitError(eval_shortfall_message(report))
    except InputError as error:
        return report_input_error(error, "jaxssl.aot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
