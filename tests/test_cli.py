"""The command line: bad input ends with one clear line on stderr, exit 2, workdir untouched."""

import hashlib
import os

import pytest

from jaxssl import main as cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_simclr.py")


def snapshot(directory) -> dict[str, str]:
    """{relative path: sha1} of every file under `directory` ({} if it does not exist)."""
    files = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, directory)] = hashlib.sha1(f.read()).hexdigest()
    return files


def run_cli(workdir, *overrides):
    return cli.main([f"--config={TINY_CONFIG}", f"--workdir={workdir}", *overrides])


@pytest.mark.parametrize("overrides, message", [
    (["--config.optim.base_lrr=0.1"],
     "unknown config key 'optim.base_lrr' (did you mean 'optim.base_lr'?)"),
    (["--config.method=simclrr"], "unknown method 'simclrr' (did you mean 'simclr'?)"),
    (["--config.data.name=cifar11"], "unknown dataset 'cifar11'"),
    (["--config.data.name=mnist", "--config.data.data_dir={empty}"], "missing {empty}"),
    (["--config.data.batch_size=12"], "data.batch_size=12 is not divisible by the 8 batch shards"),
    (["--config.mesh.data=3"], "needs 3 devices, 8 are available"),
    (["--config.model.width=8", "--config.model.name=resnet18"], "does not fit this model"),
])
def test_bad_input_is_one_clear_line(overrides, message, simclr_run, tmp_path, capsys):
    """Against the finished command-line run of conftest.py (its checkpoint does not fit a
    ResNet): the error, and not one file of that workdir changed."""
    trained_workdir = simclr_run.workdir
    empty = tmp_path / "empty"
    empty.mkdir()
    overrides = [o.format(empty=empty) for o in overrides]
    message = message.format(empty=empty)
    before = snapshot(trained_workdir)
    assert run_cli(trained_workdir, *overrides) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxssl: error: "), err
    assert message in err[0]
    assert snapshot(trained_workdir) == before


def test_bad_input_creates_no_workdir(tmp_path, capsys):
    workdir = tmp_path / "never"
    assert run_cli(workdir, "--config.totl_steps=3") == 2
    assert "did you mean 'total_steps'" in capsys.readouterr().err
    assert not workdir.exists()


def test_unrecognised_argument_is_rejected(tmp_path):
    with pytest.raises(SystemExit) as info:
        run_cli(tmp_path, "--learning_rate=3")
    assert info.value.code == 2
