"""Output paths: checked before the work that fills them, named by their flag."""

import errno
import os
import re

import pytest

from jaxssl.errors import ConfigError, OutputError
from jaxssl.output_paths import (check_output_dir, check_output_file, disk_full_reported,
                                 held_exclusively, write_text)


def test_a_new_nested_path_under_a_writable_folder_passes(tmp_path):
    check_output_dir(str(tmp_path / "a" / "b"), "--workdir")
    check_output_file(str(tmp_path / "a" / "report.json"), "--json")
    assert os.listdir(tmp_path) == []  # checking makes nothing


@pytest.mark.parametrize("check, name, message", [
    (check_output_dir, "notes.txt", "--flag {p}/notes.txt is a file, not a directory"),
    (check_output_dir, "notes.txt/run", "--flag {p}/notes.txt/run: {p}/notes.txt is not a "
                                        "writable directory"),
    (check_output_file, "folder", "--flag {p}/folder is a directory, not a file"),
    (check_output_file, "notes.txt/r.json", "--flag {p}/notes.txt/r.json: {p}/notes.txt is "
                                            "not a writable directory"),
    (check_output_file, "", "--flag is empty"),
    (check_output_dir, "", "--flag is empty"),
])
def test_unwritable_paths_are_named_by_their_flag(tmp_path, check, name, message):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError) as error:
        check(str(tmp_path / name) if name else "", "--flag")
    assert str(error.value) == message.format(p=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_folder_this_process_cannot_write_is_refused(tmp_path, monkeypatch):
    """os.access stands in for a read-only folder: root, as CI runs, may write anywhere."""
    monkeypatch.setattr(os, "access", lambda path, mode: path != str(tmp_path))
    with pytest.raises(ConfigError) as error:
        check_output_file(str(tmp_path / "new" / "r.json"), "--json")
    assert str(error.value) == (f"--json {tmp_path}/new/r.json: {tmp_path} is not a writable "
                                "directory")
    check_output_dir(str(tmp_path.parent / "elsewhere"), "--workdir")  # only tmp_path refused


def test_write_text_makes_the_folder(tmp_path):
    path = tmp_path / "a" / "b" / "r.txt"
    write_text(str(path), "hello")
    assert path.read_text() == "hello"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_an_output_error_naming_the_file_and_the_space_left(tmp_path, code):
    with pytest.raises(OutputError) as error, disk_full_reported(str(tmp_path)):
        raise OSError(code, os.strerror(code), str(tmp_path / "metrics.jsonl"))
    assert re.fullmatch(rf"writing {tmp_path}/metrics.jsonl failed \({os.strerror(code)}\); "
                        r"[0-9]+\.[0-9] MiB free there", str(error.value)), str(error.value)
    with pytest.raises(OutputError, match=f"^writing into {tmp_path} failed"), \
            disk_full_reported(str(tmp_path)):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a flush names no file


def test_other_os_errors_pass_unchanged(tmp_path):
    with pytest.raises(PermissionError), disk_full_reported(str(tmp_path)):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))


def test_a_workdir_is_held_by_one_run_at_a_time(tmp_path):
    workdir = str(tmp_path / "run")
    with held_exclusively(workdir):
        with pytest.raises(ConfigError, match=f"^--workdir {workdir} is in use by another run"):
            with held_exclusively(workdir):
                pass
        with held_exclusively(workdir, lock=False):  # another process of the same run
            pass
    with held_exclusively(workdir):  # released
        pass
    assert os.listdir(workdir) == []  # the folder's own lock: no file in it


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_writing_a_report_to_a_full_disk_is_an_output_error():
    with pytest.raises(OutputError, match=r"^writing /dev/full failed \(No space left on device\)"):
        write_text("/dev/full", "x" * 10)
