"""Command line: train any config.

  python -m jaxssl.main --config=configs/NAME.py[:ARG] --workdir=DIR [--config.a.b=VALUE ...]

Prints the resolved config, saves it as DIR/config.json, resumes from the
newest checkpoint in DIR if there is one, trains, and prints the final
evaluation (also saved as DIR/results.json). Bad input (config, data, batch size, mesh, a checkpoint that
does not fit) ends with one line on stderr and exit status 2, before
anything in DIR is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxssl.errors import InputError, StoppedByUser


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """Splits argv into --config/--workdir and the --config.a.b=VALUE overrides."""
    parser = argparse.ArgumentParser(prog="python -m jaxssl.main", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="configs/NAME.py[:ARG]")
    parser.add_argument("--workdir", required=True, help="checkpoints, logs and config.json")
    return parse_with_overrides(parser, argv)


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str]
                         ) -> tuple[argparse.Namespace, dict[str, str]]:
    """`parser`'s arguments, and the --config.a.b=VALUE overrides among `argv`."""
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    for item in rest:
        key, eq, value = item.partition("=")
        if not (key.startswith("--config.") and eq):
            parser.error(f"unrecognised argument '{item}' (overrides look like --config.a.b=VALUE)")
        overrides[key[len("--config."):]] = value
    return args, overrides


def report_input_error(error: InputError, program: str = "jaxssl") -> int:
    """Prints `error` as one line on stderr; returns its exit status."""
    print(f"{program}: error: {' '.join(str(error).split())}", file=sys.stderr)
    return error.exit_status


ACCURACY_MARKERS = ("top", "acc", "knn", "recall", "chance")  # metrics that are fractions


def _format_value(metric: str, value: float) -> str:
    """Accuracies and recalls (names with ACCURACY_MARKERS) in percent, whole numbers (counts
    such as an evaluation's tokens) as integers, anything else to 4 decimals."""
    if any(m in metric for m in ACCURACY_MARKERS):
        return f"{100 * value:.2f}%"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.4f}"


def format_results(results: dict[str, dict[str, float]]) -> str:
    """{'pretrained': {'knn_top1': .9}, ...} -> aligned text table, one row per encoder,
    each column two spaces wider than its longest entry."""
    metrics = sorted({m for row in results.values() for m in row})
    cells = {name: [_format_value(m, row[m]) if m in row else "-" for m in metrics]
             for name, row in results.items()}
    widths = [2 + max([len(m)] + [len(row[i]) for row in cells.values()])
              for i, m in enumerate(metrics)]
    first = max(len(name) for name in ["encoder", *results]) + 2
    lines = ["encoder".ljust(first) + "".join(m.rjust(w) for m, w in zip(metrics, widths))]
    for name, row in cells.items():
        lines.append(name.ljust(first) + "".join(v.rjust(w) for v, w in zip(row, widths)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return train_and_report(args, overrides)
    except InputError as error:
        return report_input_error(error)
    except StoppedByUser as stop:
        print(f"jaxssl: {stop}", file=sys.stderr)
        return stop.exit_status


def train_and_report(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    """Validates everything, trains, prints and saves the final results."""
    import jax  # after argument errors

    from jaxssl import config as config_lib, output_paths, parallel, platforms, train
    config = config_lib.load(args.config, overrides)
    platforms.prepare_cpu_training(config.malloc_arenas)
    parallel.maybe_initialize_distributed(config.distributed)
    trainer = train.Trainer(config, args.workdir)
    print(config_lib.to_json(config))
    results = {"pretrained": trainer.run()}
    if results["pretrained"]:  # empty when preempted before the end
        if config.eval.compare_random_init:
            results["random init"] = trainer.evaluate_random_init()
        print(format_results(results))
        if jax.process_index() == 0:
            path = os.path.join(args.workdir, "results.json")
            with output_paths.disk_full_reported(args.workdir, path), open(path, "w") as f:
                json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
