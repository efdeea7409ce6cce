"""One command: pretrain, fine-tune, fine-tune from scratch, evaluate; a results table.

  python -m jaxssl.pipeline_run --pretrain_config=configs/quickstart.py \\
      --finetune_config=configs/quickstart_finetune.py --workdir=DIR \\
      [--stages=pretrain,finetune,scratch,evaluate] [--pretrain.a.b=V ...] [--finetune.a.b=V ...] \\
      [--scratch.a.b=V ...]

Stages, each an ordinary `jaxssl.main` workdir: a rerun resumes; a stage that
already wrote its results.json is not trained again (and is bad input if the
command gives it other settings than it was trained with, of those a resume may
not change); one stopped by SIGTERM before its last step ends the command, exit
status 0, starting no later stage:

  pretrain  the pretraining config           -> DIR/pretrain
  finetune  the fine-tuning config, init_from DIR/pretrain -> DIR/finetune
  scratch   the same fine-tuning config and labels, from initialisation -> DIR/scratch
  evaluate  restores the newest checkpoint of DIR/finetune and DIR/scratch
            without training, evaluates it (top-1/top-5, WiSE-FT, forgetting,
            per-class accuracy) and writes DIR/<run>/confusion.png,
            DIR/<run>/evaluation.json and the table DIR/results.md (also printed).

`--stages=evaluate` alone evaluates the checkpoints already in DIR.
`--init_from=timm:FILE` (or hf:DIR, torchvision:FILE, see `jaxssl.interop`)
fine-tunes from public weights instead of DIR/pretrain: run it with
`--stages=finetune,scratch,evaluate`.
`--pretrain.X=V` and `--finetune.X=V` are `--config.X=V` overrides of one
stage; the scratch stage takes the fine-tuning overrides and then its own
`--scratch.X=V` (e.g. the higher learning rate that training from
initialisation wants).
Bad input ends like `jaxssl.main`: one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxssl.errors import CheckpointError, InputError

STAGES = ("pretrain", "finetune", "scratch", "evaluate")
FINETUNED_RUNS = ("finetune", "scratch")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict[str, list[str]]]:
    """--pretrain_config/--finetune_config/--workdir/--stages and per-stage overrides."""
    parser = argparse.ArgumentParser(prog="python -m jaxssl.pipeline_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain_config", default="",
                        help="configs/NAME.py[:ARG] (needed by the pretrain stage)")
    parser.add_argument("--finetune_config", required=True, help="configs/NAME.py[:ARG]")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of "
                        + ", ".join(STAGES))
    parser.add_argument("--init_from", default="", help="the fine-tuning stage's checkpoint "
                        "(default DIR/pretrain); e.g. timm:FILE, hf:DIR, torchvision:FILE")
    args, rest = parser.parse_known_args(argv)
    overrides: dict[str, list[str]] = {"pretrain": [], "finetune": [], "scratch": []}
    for item in rest:
        stage, _, override = item.lstrip("-").partition(".")
        if stage not in overrides or "=" not in override:
            parser.error(f"unrecognised argument '{item}' (overrides look like "
                         f"--pretrain.a.b=VALUE, --finetune.a.b=VALUE or --scratch.a.b=VALUE)")
        overrides[stage].append(f"--config.{override}")
    args.stages = [s for s in args.stages.split(",") if s]
    if "pretrain" in args.stages and not args.pretrain_config:
        parser.error("the pretrain stage needs --pretrain_config (or leave it out of --stages "
                     "and give --init_from)")
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; valid: {', '.join(STAGES)}")
    return args, overrides


def stage_argv(args, overrides: dict[str, list[str]], stage: str) -> list[str]:
    """The `jaxssl.main` command line of a training stage."""
    workdir = os.path.join(args.workdir, stage)
    if stage == "pretrain":
        return [f"--config={args.pretrain_config}", f"--workdir={workdir}", *overrides["pretrain"]]
    pretrained = args.init_from or os.path.join(args.workdir, "pretrain")
    init = pretrained if stage == "finetune" else ""
    own = overrides["scratch"] if stage == "scratch" else []
    return [f"--config={args.finetune_config}", f"--workdir={workdir}", *overrides["finetune"],
            *own, f"--config.finetune.init_from.checkpoint={init}"]


def stage_results(argv: list[str]) -> str:
    """The results.json of a training stage's command line: written when it finishes."""
    workdir = next(a.partition("=")[2] for a in argv if a.startswith("--workdir="))
    return os.path.join(workdir, "results.json")


def train_stage(argv: list[str]) -> int:
    """Runs `jaxssl.main` unless the stage's workdir already holds its results.json, from a
    run with the settings of `argv` (bad input, exit status 2, if it trained with others)."""
    from jaxssl import config as config_lib, main as cli

    results = stage_results(argv)
    if not os.path.isfile(results):
        return cli.main(argv)
    workdir = os.path.dirname(results)
    try:
        args, overrides = cli.parse_args(argv)
        changed = config_lib.changed_on_resume(config_lib.read_saved(workdir),
                                               config_lib.load(args.config, overrides))
        if changed:
            raise CheckpointError(
                f"{workdir} finished earlier with other settings than this command's: "
                f"{config_lib.summarise_changes(changed)}. Use a new --workdir, or the "
                f"settings it was trained with.")
    except InputError as error:
        return cli.report_input_error(error)
    print(f"{workdir}: finished earlier, not trained again")
    return 0


def evaluate_run(workdir: str) -> dict:
    """Evaluates the newest checkpoint of a fine-tuning workdir; writes its report files.

    Returns {'metrics': {name: fraction}, 'per_class': [C], 'step': int,
    'labelled_examples': int, 'init': str}; writes workdir/confusion.png and
    workdir/evaluation.json.
    """
    import jax

    from jaxssl import config as config_lib, train
    from jaxssl.evaluate.classification import classification_report, save_confusion_png

    config = config_lib.load_saved(workdir)
    trainer = train.Trainer(config, workdir)
    state = trainer.restore()
    metrics = trainer.evaluate(state)
    variables = {"params": state.params, **state.method_state}
    logits, labels = trainer.method.eval_logits(variables, trainer.eval_source, trainer.mesh,
                                                config.eval)
    report = classification_report(logits, labels, config.finetune.num_classes)
    step = int(jax.device_get(state.step))
    evaluation = {"metrics": metrics, "per_class": report["per_class"].tolist(), "step": step,
                  "labelled_examples": len(trainer.train_source),
                  "init": config.finetune.init_from.checkpoint or "initialisation"}
    if jax.process_index() == 0:
        save_confusion_png(report["confusion"], os.path.join(workdir, "confusion.png"),
                           title=f"{os.path.basename(workdir)}: top-1 {100 * metrics['top1']:.2f}%")
        with open(os.path.join(workdir, "evaluation.json"), "w") as f:
            json.dump(evaluation, f, indent=2)
    return evaluation


def results_markdown(pretraining: dict[str, float], runs: dict[str, dict]) -> str:
    """The results table: one row per fine-tuned run, then per-class accuracy."""
    names = list(runs)
    metrics = list(dict.fromkeys(m for run in runs.values() for m in run["metrics"]))
    lines = ["# Pipeline results", ""]
    if pretraining:
        lines += ["Pretrained encoder (frozen): " + ", ".join(
            f"{name} {100 * value:.2f}%" for name, value in pretraining.items()), ""]
    lines += ["| run | initialised from | labelled examples | step | "
              + " | ".join(metrics) + " |", "|---" * (4 + len(metrics)) + "|"]
    for name in names:
        run = runs[name]
        cells = [f"{100 * run['metrics'][m]:.2f}%" if m in run["metrics"] else "-" for m in metrics]
        lines.append(f"| {name} | {run['init']} | {run['labelled_examples']} | {run['step']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Per-class top-1 accuracy:", "", "| class | " + " | ".join(names) + " |",
              "|---" * (1 + len(names)) + "|"]
    for label in range(len(runs[names[0]]["per_class"])):
        lines.append(f"| {label} | " + " | ".join(
            f"{100 * runs[n]['per_class'][label]:.1f}%" for n in names) + " |")
    return "\n".join(lines) + "\n"


def evaluate_stage(workdir: str) -> str:
    """Evaluates every fine-tuned run in `workdir`, writes and returns results.md."""
    import jax

    runs = {name: evaluate_run(os.path.join(workdir, name)) for name in FINETUNED_RUNS
            if os.path.isdir(os.path.join(workdir, name, "checkpoints"))}
    if not runs:
        raise CheckpointError(f"no fine-tuned run (checkpoints) in {workdir}/finetune or "
                                f"{workdir}/scratch to evaluate")
    pretrain_results = os.path.join(workdir, "pretrain", "results.json")
    pretraining = {}
    if os.path.isfile(pretrain_results):
        with open(pretrain_results) as f:
            pretraining = json.load(f).get("pretrained", {})
    table = results_markdown(pretraining, runs)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "results.md"), "w") as f:
            f.write(table)
    return table


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    from jaxssl.main import report_input_error

    for stage in args.stages:
        if stage == "evaluate":
            try:
                print(evaluate_stage(args.workdir))
            except InputError as error:
                return report_input_error(error)
        else:
            argv = stage_argv(args, overrides, stage)
            status = train_stage(argv)
            if status:
                return status
            results = stage_results(argv)
            if not os.path.isfile(results):
                # Preempted (SIGTERM: saved, exit status 0, as jaxssl.main): the next stage
                # must not start from a half-trained encoder.
                print(f"{os.path.dirname(results)}: stopped before its last step; later "
                      f"stages not started (the same command resumes it)")
                return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
