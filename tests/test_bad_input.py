"""Bad input, tried from the command lines as a new user would: each kind ends with one
line `<program>: error: ...` naming the problem on stderr, exit status 2, and the workdir
exactly as it was (every file's bytes). A genuine bug keeps its traceback."""

import io
import os
import shutil
import textwrap

import numpy as np
import pytest
from PIL import Image

from conftest import SIMCLR_RUN_OVERRIDES, damage, snapshot
from jaxssl import (config as config_lib, device_memory, main as cli, output_paths,
                    pipeline_run, sample)
from jaxssl.errors import CheckpointError
from jaxssl.train import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_simclr.py")
TINY_FINETUNE = os.path.join(REPO, "tests", "configs", "tiny_finetune.py")


def write_config(directory, body: str) -> str:
    """A config file holding `body` (dedented); returns its path."""
    path = os.path.join(directory, "user_config.py")
    with open(path, "w") as f:
        f.write(textwrap.dedent(body))
    return path


# Config files a user may get wrong: (file body, what the message must say).
BAD_CONFIG_FILES = {
    "syntax error": ("def get_config(:\n    pass\n", "failed at line 1: SyntaxError"),
    "not a ConfigDict": ("def get_config():\n    return 3\n",
                         "returned int, not an ml_collections.ConfigDict"),
    "no get_config": ("CONFIG = {}\n", "defines no get_config(arg=None)"),
    "exception in get_config": ("def get_config():\n    return {'method': undefined_name}\n",
                                "failed at line 2: NameError"),
}

# Command-line overrides of tests/configs/tiny_simclr.py that must be refused.
BAD_OVERRIDES = {
    "unknown key": (["--config.optim.base_lrr=0.1"],
                    "unknown config key 'optim.base_lrr' (did you mean 'optim.base_lr'?)"),
    "unknown method": (["--config.method=simclrr"], "unknown method 'simclrr'"),
    "unknown dataset": (["--config.data.name=cifar11"], "unknown dataset 'cifar11'"),
    "dataset files missing": (["--config.data.name=mnist", "--config.data.data_dir={empty}"],
                              "missing {empty}"),
    "TFDS dataset not prepared": (["--config.data.name=tfds:mnist",
                                   "--config.data.data_dir={empty}"],
                                  "tfds dataset 'mnist' is not prepared in data_dir={empty}"),
    "wrong type": (["--config.total_steps=many"], "config key 'total_steps' expects int"),
    "value for a section": (["--config.optim=3"], "config key 'optim' is a section"),
    "bad choice": (["--config.optim.name=adam"], "config key 'optim.name' must be one of"),
    "zero steps": (["--config.total_steps=0"], "config key 'total_steps' must be >= 1"),
    "negative learning rate": (["--config.optim.base_lr=-1.0"],
                               "config key 'optim.base_lr' must be >= 0"),
    "accumulation does not divide": (["--config.grad_accum_steps=3"],
                                     "data.batch_size=16 is not divisible by grad_accum_steps=3"),
    "batch does not divide over the mesh": (["--config.data.batch_size=12"],
                                            "is not divisible by the 8 batch shards"),
    "mesh larger than the devices": (["--config.mesh.data=3"], "needs 24 devices, 8 are available"),
    "mesh axis of size 0": (["--config.mesh.tensor=0"], "config key 'mesh.tensor' must be -1"),
    "augmentation out of range": (["--config.augment.flip_prob=2.0"],
                                  "augment flip_prob must be in [0, 1]"),
    "unknown model": (["--config.model.name=resnet19"], "Unknown backbone name 'resnet19'"),
    "patch that does not divide the image": (["--config.model.patch=3"],
                                             "image size 8x8 is not divisible by patch size 3"),
    "heads that do not divide the width": (["--config.model.heads=5"],
                                           "hidden size 32 not divisible by 5 heads"),
    "negative seed": (["--config.seed=-1"], "config key 'seed' must be >= 0"),
    "kNN with no neighbours": (["--config.eval.knn_k=0"], "config key 'eval.knn_k' must be >= 1"),
    "batch larger than the data": (["--config.data.batch_size=4096"],
                                   "data.batch_size=4096 is larger than the training split"),
    "split the data set does not have": (["--config.data.train_split=validation"],
                                         "digits split must be 'train' or 'test'"),
    "section of another method": (["--config.method=mae"],
                                  "config section 'simclr' is for method 'simclr', not 'mae'"),
    "checkpoint of another model": (["--config.model.name=resnet18", "--config.model.width=8"],
                                    "does not fit this run's params (the model)"),
    "checkpoint of another optimizer": (["--config.optim.name=sgd"],
                                        "does not fit this run's opt_state (the optimizer"),
    "checkpoint of another key kind": (["--config.prng_impl=rbg"],
                                       "random key of data shape (2,), this run's prng_impl "
                                       "makes (4,)"),
    "checkpoint of another input pipeline": (["--config.data.batch_size=32"],
                                             "holds the input-pipeline state"),
    "checkpoint of another number of data workers": (
        ["--config.data.num_workers=1"], "input-pipeline state of worker_count 0, this run "
                                         "reads 1"),
    "checkpoint of a shorter schedule": (
        ["--config.total_steps=8"], "was trained with other settings than this run's: "
                                    "total_steps: 6 -> 8. Resume with the config"),
    "checkpoint of other optimizer settings": (
        ["--config.optim.base_lr=0.5", "--config.optim.warmup_steps=3"],
        "other settings than this run's: optim.base_lr: 0.001 -> 0.5; optim.warmup_steps: 2 -> 3."),
}


# Configs of other methods (written as config files) with one bad value each.
VIT = {"name": "vit", "hidden": 32, "depth": 1, "heads": 4, "patch": 2}
BAD_METHOD_CONFIGS = {
    "method needs a ViT": ({"method": "mae", "model": {"name": "resnet18"}},
                           "method 'mae' needs a ViT backbone"),
    "mask ratio that hides everything": ({"method": "mae", "model": VIT, "mae": {"mask_ratio": 1.0}},
                                         "mae.mask_ratio must be in [0, 1)"),
    "text method on images": ({"method": "lm"}, "method 'lm' needs a text dataset"),
    "fine-tuning without classes": ({"method": "finetune"}, "'finetune.num_classes' must be set"),
    "linear probe with layer decay": ({"method": "finetune", "finetune": {
        "num_classes": 10, "mode": "linear_probe", "layer_decay": 0.5}},
        "finetune.mode='linear_probe' freezes the encoder"),
    "contrastive temperature zero": ({"method": "simclr", "simclr": {"temperature": 0.0}},
                                     "simclr.temperature must be > 0"),
    "MoCo views of three": ({"method": "moco", "moco": {"view_blur_probs": (1.0, 0.1, 0.5)}},
                            "moco per-view blur_prob needs 0 or 2 values"),
    "forgetting set that is not there": ({"method": "finetune", "finetune": {
        "num_classes": 10, "forgetting": {"name": "mnist", "data_dir": "{empty}"}}},
        "dataset 'mnist' split 'train': missing"),
    "character vocabulary of another size": (
        {"method": "lm", "data": {"name": "text:pydoc?chars=3&tokenizer=char"}},
        "distinct characters, not the 3 its dataset name declares"),
    "negative cross-entropy chunk": ({"method": "lm", "data": {"name": "text:pydoc"},
                                      "lm": {"cross_entropy_chunk": -1}},
                                     "lm.cross_entropy_chunk must be an int >= 0"),
    "CLIP without captions": ({"method": "clip", "model": VIT, "data": {"name": "npz",
                                                                     "data_dir": "{empty}"}},
                              "method 'clip' on data.name='npz' needs captions"),
}


@pytest.fixture
def trained(simclr_run):
    """The finished tiny SimCLR workdir of conftest.py, which bad input must leave alone."""
    before = snapshot(simclr_run.workdir)
    yield simclr_run.workdir
    assert snapshot(simclr_run.workdir) == before


def one_error_line(capsys, program: str = "jaxssl") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{program}: error: "), err
    return err[0]


@pytest.mark.parametrize("kind", sorted(BAD_OVERRIDES))
def test_bad_override(kind, trained, tmp_path, capsys):
    """The trained run's own command line with one bad override."""
    overrides, message = BAD_OVERRIDES[kind]
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [f"--config.{k}={v}" for k, v in SIMCLR_RUN_OVERRIDES.items()]
    argv += [o.format(empty=empty) for o in overrides]
    assert cli.main([f"--config={TINY_CONFIG}", f"--workdir={trained}", *argv]) == 2
    assert message.format(empty=empty) in one_error_line(capsys)


def test_a_workdir_in_use_by_another_run(trained, capsys):
    """The finished run launched again while a run holds its workdir: stop, write nothing."""
    argv = [f"--config.{k}={v}" for k, v in SIMCLR_RUN_OVERRIDES.items()]
    with output_paths.held_exclusively(str(trained)):  # as another process would
        assert cli.main([f"--config={TINY_CONFIG}", f"--workdir={trained}", *argv]) == 2
    assert f"--workdir {trained} is in use by another run" in one_error_line(capsys)


@pytest.mark.parametrize("kind", sorted(BAD_METHOD_CONFIGS))
def test_bad_method_config(kind, trained, tmp_path, capsys):
    config, message = BAD_METHOD_CONFIGS[kind]
    empty = tmp_path / "empty"
    empty.mkdir()
    path = write_config(tmp_path, f"def get_config():\n    return {config!r}\n".replace(
        "{empty}", str(empty)))
    assert cli.main([f"--config={path}", f"--workdir={trained}"]) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("kind", sorted(BAD_CONFIG_FILES))
def test_bad_config_file(kind, trained, tmp_path, capsys):
    body, message = BAD_CONFIG_FILES[kind]
    path = write_config(tmp_path, body)
    assert cli.main([f"--config={path}", f"--workdir={trained}"]) == 2
    line = one_error_line(capsys)
    assert message in line and path in line


def write_corrupt_data(kind: str, directory) -> tuple[str, str]:
    """Writes a data set of `kind` whose files are damaged into `directory`.

    Returns (data.name, what the error line must name)."""
    split_file = os.path.join(directory, "{split}.npz")
    if kind == "npz":
        for split in ("train", "test"):
            with open(split_file.format(split=split), "wb") as f:
                f.write(b"PK\x03\x04 not a zip archive")
        return "npz", split_file.format(split="train")
    if kind == "mnist":
        for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                     "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            with open(os.path.join(directory, name), "wb") as f:
                f.write(b"\x1f\x8b\x08\x00 broken gzip stream")
        return "mnist", os.path.join(directory, "train-images-idx3-ubyte.gz")
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    records = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG")
        records.append(np.frombuffer(buffer.getvalue(), np.uint8))
    records[1] = np.zeros_like(records[1])  # record 1 no longer decodes
    offsets = np.cumsum([0] + [len(r) for r in records])
    for split in ("train", "test"):
        np.savez(split_file.format(split=split), jpeg=np.concatenate(records), offsets=offsets,
                 label=np.arange(3, dtype=np.uint8))
    return "cifar10_jpeg", split_file.format(split="train")


@pytest.mark.parametrize("kind", ["npz", "mnist", "cifar10_jpeg"])
def test_corrupt_data_files(kind, trained, tmp_path, capsys):
    name, path = write_corrupt_data(kind, tmp_path)
    assert cli.main([f"--config={TINY_CONFIG}", f"--workdir={trained}",
                     f"--config.data.name={name}", f"--config.data.data_dir={tmp_path}"]) == 2
    line = one_error_line(capsys)
    assert path in line
    if kind == "cifar10_jpeg":
        assert "JPEG record 1" in line


def test_missing_config_file(trained, tmp_path, capsys):
    assert cli.main([f"--config={tmp_path}/nope.py", f"--workdir={trained}"]) == 2
    assert f"config file not found: {tmp_path}/nope.py" in one_error_line(capsys)


def test_bad_input_creates_no_workdir(tmp_path, capsys):
    workdir = tmp_path / "never"
    assert cli.main([f"--config={TINY_CONFIG}", f"--workdir={workdir}",
                     "--config.totl_steps=3"]) == 2
    assert "did you mean 'total_steps'" in one_error_line(capsys)
    assert not workdir.exists()


def test_unrecognised_argument_is_rejected(tmp_path):
    with pytest.raises(SystemExit) as info:
        cli.main([f"--config={TINY_CONFIG}", f"--workdir={tmp_path}", "--learning_rate=3"])
    assert info.value.code == 2
    assert os.listdir(tmp_path) == []


def test_empty_workdir(capsys):
    assert cli.main([f"--config={TINY_CONFIG}", "--workdir="]) == 2
    assert "--workdir is empty" in one_error_line(capsys)


def test_workdir_under_a_file(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main([f"--config={TINY_CONFIG}", f"--workdir={tmp_path}/notes.txt/run"]) == 2
    assert f"{tmp_path}/notes.txt is not a writable directory" in one_error_line(capsys)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_restoring_a_step_that_was_not_saved(simclr_run):
    """What `jaxssl.sample --step=999` meets: a message listing the saved steps."""
    trainer = Trainer(simclr_run.config, str(simclr_run.workdir))
    with pytest.raises(CheckpointError,
                       match=r"no checkpoint step 999 in .* \(it holds steps \[6\]\)"):
        trainer.restore(999)


def test_export_under_a_file(tmp_path, capsys):
    """The Hugging Face export's --out is checked like a workdir, before anything is read."""
    from jaxssl.interop import export

    (tmp_path / "notes.txt").write_text("mine")
    assert export.main([f"--checkpoint={tmp_path}", f"--out={tmp_path}/notes.txt/hf"]) == 2
    assert f"--out {tmp_path}/notes.txt/hf: {tmp_path}/notes.txt is not a writable directory" in (
        one_error_line(capsys))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_workdir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    assert cli.main([f"--config={TINY_CONFIG}", f"--workdir={path}"]) == 2
    assert f"--workdir {path} is a file, not a directory" in one_error_line(capsys)
    assert path.read_text() == "mine"


def damaged_copy(run, workdir, steps) -> None:
    """Copies the checkpoints and config of `run` into `workdir`, checkpoint `steps`
    damaged (conftest.damage)."""
    os.makedirs(workdir)
    os.system(f"cp -r {run.workdir}/checkpoints {run.workdir}/config.json {workdir}/")
    for step in steps:
        damage(workdir / "checkpoints" / str(step))


def test_workdir_without_an_intact_checkpoint(simclr_run, tmp_path, capsys):
    """Every step's arrays damaged: stop naming them, move nothing."""
    workdir = tmp_path / "run"
    damaged_copy(simclr_run, workdir, os.listdir(simclr_run.workdir / "checkpoints"))
    before = snapshot(workdir)
    overrides = [f"--config.{k}={v}" for k, v in (
        ("total_steps", 6), ("augment.blur_prob", 0.0), ("optim.warmup_steps", 2),
        ("mesh.data", 1), ("mesh.fsdp", 8), ("model.posemb", "learned"))]
    assert cli.main([f"--config={TINY_CONFIG}", f"--workdir={workdir}", *overrides]) == 2
    line = one_error_line(capsys)
    assert "no intact checkpoint" in line and "step 6 is unreadable" in line
    assert snapshot(workdir) == before


def test_fine_tuning_from_a_damaged_checkpoint(simclr_run, tmp_path, capsys):
    """The pretraining run's newest step damaged: stop naming it (not start from an older
    step's weights), write nothing."""
    pretraining, finetuning = tmp_path / "pretraining", tmp_path / "finetuning"
    damaged_copy(simclr_run, pretraining, [simclr_run.step])
    shutil.copytree(simclr_run.workdir / "checkpoints" / str(simclr_run.step),
                    pretraining / "checkpoints" / "1")  # an older step, intact
    before = snapshot(pretraining)
    assert cli.main([f"--config={TINY_FINETUNE}:{pretraining}", f"--workdir={finetuning}"]) == 2
    line = one_error_line(capsys)
    assert (f"error: checkpoint {pretraining}/checkpoints/{simclr_run.step} is unreadable "
            f"(ValueError: ") in line, line
    assert line.endswith("; give an intact step directory (other steps saved there: [1])")
    assert snapshot(pretraining) == before and snapshot(finetuning) == {}


def test_sample_from_a_workdir_of_another_method(trained, capsys):
    assert sample.main([f"--workdir={trained}"]) == 2
    assert "sampling needs a run of method 'lm'" in one_error_line(capsys, "jaxssl.sample")


def test_sample_from_an_encoder_decoder_run(tmp_path, capsys):
    config = config_lib.load(os.path.join(REPO, "tests", "configs", "tiny_lm.py"),
                             {"lm.architecture": "encoder_decoder", "lm.objective": "span"})
    config_lib.save(config, str(tmp_path))
    before = snapshot(tmp_path)
    assert sample.main([f"--workdir={tmp_path}"]) == 2
    assert "sampling needs lm.architecture='decoder', " in one_error_line(capsys, "jaxssl.sample")
    assert snapshot(tmp_path) == before


def test_sample_from_a_corrupt_config_json(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{ not json")
    before = snapshot(tmp_path)
    assert sample.main([f"--workdir={tmp_path}"]) == 2
    assert "config.json is not valid JSON" in one_error_line(capsys, "jaxssl.sample")
    assert snapshot(tmp_path) == before


def test_sample_from_an_empty_directory(tmp_path, capsys):
    assert sample.main([f"--workdir={tmp_path}"]) == 2
    assert "config.json not found" in one_error_line(capsys, "jaxssl.sample")
    assert os.listdir(tmp_path) == []


def test_pipeline_evaluation_without_runs(tmp_path, capsys):
    assert pipeline_run.main([f"--pretrain_config={TINY_CONFIG}",
                              f"--finetune_config={TINY_FINETUNE}", f"--workdir={tmp_path}",
                              "--stages=evaluate"]) == 2
    assert "no fine-tuned run (checkpoints)" in one_error_line(capsys)
    assert os.listdir(tmp_path) == []


def test_pipeline_stage_with_a_bad_override(tmp_path, capsys):
    assert pipeline_run.main([f"--pretrain_config={TINY_CONFIG}",
                              f"--finetune_config={TINY_FINETUNE}", f"--workdir={tmp_path}",
                              "--pretrain.optim.name=adam"]) == 2
    assert "config key 'optim.name' must be one of" in one_error_line(capsys)
    assert os.listdir(tmp_path) == []


def test_step_too_big_for_the_host(tmp_path, capsys, monkeypatch):
    """A train step needing more memory than the host has left (made 1 MiB here) stops
    after compiling, before anything is written."""
    monkeypatch.setattr(device_memory, "host_available_bytes", lambda: 2**20)
    workdir = tmp_path / "run"
    assert cli.main([f"--config={TINY_CONFIG}", f"--workdir={workdir}"]) == 2
    line = one_error_line(capsys)
    assert "the train step needs" in line and line.endswith(
        "0.00 GiB available; try rematerialisation (model.remat / lm.remat), micro-batches "
        "(--config.grad_accum_steps) or a smaller batch (--config.data.batch_size)")
    assert snapshot(workdir) == {}


def test_a_genuine_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """A KeyError inside model code is not bad input: it propagates, it is not one line."""
    from jaxssl.methods import simclr

    def broken_init(self, rng, batch):
        return {}["backbone"]

    monkeypatch.setattr(simclr.SimCLR, "init", broken_init)
    with pytest.raises(KeyError, match="backbone"):
        cli.main([f"--config={TINY_CONFIG}", f"--workdir={tmp_path / 'run'}"])


def test_at_least_25_kinds_of_bad_input_are_covered():
    others = [name for name in globals() if name.startswith("test_") and name not in (
        "test_bad_override", "test_bad_method_config", "test_bad_config_file",
        "test_unrecognised_argument_is_rejected", "test_a_genuine_bug_keeps_its_traceback",
        "test_at_least_25_kinds_of_bad_input_are_covered")]
    kinds = len(BAD_OVERRIDES) + len(BAD_METHOD_CONFIGS) + len(BAD_CONFIG_FILES) + len(others)
    assert kinds >= 25
