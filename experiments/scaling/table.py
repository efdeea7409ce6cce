"""The scale table (markdown) from experiments/scaling/results/*.json, the reports of
`python -m jaxssl.aot` that run.sh writes:

  python -m experiments.scaling.table
"""

import glob
import json
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
HEADER = ("| run | topology | chips | mesh | batch | GiB/chip (state / temps / total of HBM) "
          "| fits | state / ideal | replicated >= 1 MiB | TFLOP/chip/step (jaxssl / XLA) "
          "| FLOPs at peak, ms | cost model: ms, % of peak (scaled) | "
          "collectives (count: MiB/chip) | compile s | eval step: batch, GiB/chip, compile s |")


def row(name: str, r: dict) -> str:
    mem = r["memory_gib"]
    state = mem["parameters"] + mem["optimizer_state"] + mem["method_state"]
    total = r.get("total_gib")
    memory = (f"{state:.2f} / {mem.get('temporaries', float('nan')):.2f} / "
              f"{total:.2f} of {r['hbm_gib_per_device']:.0f}" if total is not None else "-")
    xla = r.get("flops_per_device_xla")
    flops = f"{r['flops_per_device_jaxpr'] / 1e12:.2f} / " + (f"{xla / 1e12:.2f}" if xla else "-")
    seconds, scaled = r.get("cost_model_seconds"), r.get("cost_model_seconds_scaled")
    cost = (f"{1e3 * seconds:.1f}, {100 * r['cost_model_fraction_of_peak']:.0f}%"
            if seconds else "-")
    if scaled and scaled > seconds:
        cost += f" ({1e3 * scaled:.1f}, {100 * r['cost_model_scaled_fraction_of_peak']:.0f}%)"
    peak = r.get("peak_flops_per_device")
    at_peak = r["flops_per_device_jaxpr"] / peak if peak else None
    ideal = f"{r['state_over_ideal']:.3f}"
    replicated = str(len(r["replicated_parameters_mib"]))
    collectives = ", ".join(f"{op} {c['count']}: {c['bytes'] / 2**20:.0f}"
                            for op, c in sorted(r.get("collectives", {}).items())) or "-"
    mesh = "x".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1) or "1"
    return (f"| {name} | {r['topology']} | {r['chips']} | {mesh} | {r['batch_size']} | {memory} "
            f"| {'yes' if r['fits'] else 'NO'} | {ideal} | {replicated} | {flops} "
            f"| {f'{1e3 * at_peak:.1f}' if at_peak else '-'} | {cost} | {collectives} "
            f"| {r['compile_s']:.0f} | {eval_cell(r['eval_step'])} |")


def eval_cell(e: dict) -> str:
    """The evaluation step's batch, memory per chip (NO when it does not fit) and compile s."""
    if "missing" in e:
        return "-"
    memory = f"{e['total_gib']:.2f}" if "total_gib" in e else "-"
    return (f"{e['batch_size']}, {memory}{'' if e['fits'] else ' NO'}, "
            f"{e['compile_s']:.0f}")


def main() -> None:
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
        with open(path) as f:
            print(row(os.path.basename(path)[:-5], json.load(f)))


if __name__ == "__main__":
    main()
