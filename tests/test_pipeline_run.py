"""`python -m jaxssl.pipeline_run` (the README's second command), tiny: pretrain, fine-tune,
fine-tune from scratch and evaluate; the evaluation stage against a direct evaluation of
the restored checkpoints, and rerun alone."""

import json
import os

import jax
import numpy as np
import pytest

from jaxssl import config as config_lib, pipeline_run
from jaxssl.train import Trainer

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
TOTAL_STEPS = {"finetune": 3, "scratch": 3}


def command(workdir, stages=None) -> list[str]:
    """The pipeline's command line: tests/configs/tiny_simclr.py pretrained for 3 steps, then
    tests/configs/tiny_finetune.py (digits, 10% of the labels) for 3 steps from it and from
    initialisation."""
    return [f"--pretrain_config={CONFIGS}/tiny_simclr.py",
            f"--finetune_config={CONFIGS}/tiny_finetune.py", f"--workdir={workdir}",
            *([f"--stages={stages}"] if stages else []),
            "--pretrain.total_steps=3", "--pretrain.checkpoint.async_save=false",
            f"--finetune.total_steps={TOTAL_STEPS['finetune']}", "--finetune.finetune.label_fraction=0.1",
            "--scratch.optim.base_lr=0.003"]


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    assert pipeline_run.main(command(workdir)) == 0
    return workdir


def read(path) -> str:
    with open(path) as f:
        return f.read()


def direct_evaluation(run_dir):
    """The newest checkpoint of `run_dir` restored and evaluated here, without the pipeline:
    (step, the Trainer's evaluation, the eval logits and labels, labelled examples)."""
    config = config_lib.resolve(json.loads(read(run_dir / "config.json")))
    trainer = Trainer(config, str(run_dir))
    state = trainer.restore()
    variables = {"params": state.params, **state.method_state}
    logits, labels = trainer.method.eval_logits(variables, trainer.eval_source, trainer.mesh,
                                                config.eval)
    return (int(jax.device_get(state.step)), trainer.evaluate(state), np.asarray(logits),
            np.asarray(labels), len(trainer.train_source))


def table_row(table: str, run: str) -> dict[str, str]:
    """{column: cell} of `run`'s row in the first table of results.md."""
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("| run |"))
    row = next(line for line in lines if line.startswith(f"| {run} |"))
    split = lambda line: [cell.strip() for cell in line.strip("|").split("|")]
    return dict(zip(split(header), split(row)))


@pytest.mark.parametrize("run", ["finetune", "scratch"])
def test_evaluation_stage_reports_what_the_restored_checkpoint_gives(pipeline_dir, run):
    run_dir = pipeline_dir / run
    evaluation = json.loads(read(run_dir / "evaluation.json"))
    step, metrics, logits, labels, labelled = direct_evaluation(run_dir)
    assert step == evaluation["step"] == TOTAL_STEPS[run]
    assert evaluation["metrics"] == metrics
    # The evaluated checkpoint is the trained state: the training stage's final evaluation.
    assert json.loads(read(run_dir / "results.json"))["pretrained"] == metrics
    # Top-1, top-5 and per-class accuracy from the logits, in NumPy.
    ranked = np.argsort(-logits, axis=1)
    top1 = np.mean(ranked[:, 0] == labels)
    assert evaluation["metrics"]["top1"] == pytest.approx(top1, abs=1e-12)
    assert evaluation["metrics"]["top5"] == pytest.approx(
        np.mean([label in row[:5] for row, label in zip(ranked, labels)]), abs=1e-12)
    per_class = [np.mean(ranked[labels == c, 0] == c) for c in range(10)]
    np.testing.assert_allclose(evaluation["per_class"], per_class, rtol=0, atol=1e-12)
    assert evaluation["labelled_examples"] == labelled == 143  # 10% of the 1,437 digits
    init = str(pipeline_dir / "pretrain") if run == "finetune" else "initialisation"
    assert evaluation["init"] == init
    row = table_row(read(pipeline_dir / "results.md"), run)
    assert row == {"run": run, "initialised from": init, "labelled examples": "143",
                   "step": str(step), "top1": f"{100 * top1:.2f}%",
                   "top5": f"{100 * evaluation['metrics']['top5']:.2f}%"}
    pretrained = json.loads(read(pipeline_dir / "pretrain" / "results.json"))["pretrained"]
    assert "Pretrained encoder (frozen): " + ", ".join(
        f"{name} {100 * value:.2f}%" for name, value in pretrained.items()) in read(
        pipeline_dir / "results.md")


def test_rerunning_the_evaluate_stage_alone_reproduces_the_results(pipeline_dir, capsys):
    files = [pipeline_dir / "results.md", pipeline_dir / "finetune" / "evaluation.json",
             pipeline_dir / "scratch" / "evaluation.json"]
    before = [read(path) for path in files]
    metrics_before = read(pipeline_dir / "finetune" / "metrics.jsonl")
    capsys.readouterr()
    assert pipeline_run.main(command(pipeline_dir, "evaluate")) == 0
    assert [read(path) for path in files] == before
    assert capsys.readouterr().out == before[0] + "\n"  # the table, printed
    assert read(pipeline_dir / "finetune" / "metrics.jsonl") == metrics_before  # no training


def test_a_preempted_stage_starts_no_later_stage(tmp_path, monkeypatch, capsys):
    # SIGTERM saves and exits 0 without results.json (jaxssl.main); fine-tuning must not
    # start from the half-trained encoder, and the rerun must resume the pretraining.
    from jaxssl import main as cli
    started = []
    monkeypatch.setattr(cli, "main", lambda argv: started.append(argv) or 0)
    assert pipeline_run.main(command(tmp_path)) == 0
    assert [a for argv in started for a in argv if a.startswith("--workdir=")] == [
        f"--workdir={tmp_path / 'pretrain'}"]
    assert "stopped before its last step; later stages not started" in capsys.readouterr().out


def test_a_finished_stage_is_kept_only_for_the_settings_it_was_trained_with(pipeline_dir,
                                                                              capsys):
    metrics_before = read(pipeline_dir / "finetune" / "metrics.jsonl")
    # Settings a resume may change (logging) leave the finished stage as it is ...
    assert pipeline_run.main(command(pipeline_dir, "pretrain,finetune")
                             + ["--finetune.log.every_steps=2"]) == 0
    assert "finetune: finished earlier, not trained again" in capsys.readouterr().out
    # ... another learning rate would be another run: bad input, nothing trained.
    assert pipeline_run.main(command(pipeline_dir, "pretrain,finetune")
                             + ["--finetune.optim.base_lr=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finetune finished earlier with other settings than this " \
        "command's: optim.base_lr: 0.001 -> 0.5. Use a new --workdir" in err[0], err
    assert read(pipeline_dir / "finetune" / "metrics.jsonl") == metrics_before
