"""Output paths named on the command line, checked before the work that fills them;
a workdir held by one run at a time; a full disk while a run fills it.

A compile or a training run can take minutes; a workdir under a file or a
report path in a read-only folder should cost seconds. Both checks raise
`ConfigError`, whose message names the path by the flag that gave it, as does
a workdir that another run is writing (`held_exclusively`). A disk that fills
up later is an `OutputError` (`disk_full_reported`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil

from jaxssl.errors import ConfigError, OutputError

FULL = (errno.ENOSPC, errno.EDQUOT)   # no space left, disk quota exceeded


def _check_creatable(directory: str, named: str) -> None:
    """ConfigError unless `directory` exists or can be made: its nearest existing
    ancestor must be a directory this process can write and enter."""
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{named}: {existing} is not a writable directory")


def check_output_dir(path: str, flag: str) -> None:
    """ConfigError unless directory `path` exists or can be made, and can be written."""
    if not path:
        raise ConfigError(f"{flag} is empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a file, not a directory")
    _check_creatable(path, f"{flag} {path}")


def check_output_file(path: str, flag: str) -> None:
    """ConfigError unless file `path` can be written (its folder made if missing)."""
    if not path:
        raise ConfigError(f"{flag} is empty")
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a directory, not a file")
    _check_creatable(os.path.dirname(os.path.abspath(path)), f"{flag} {path}")


def write_text(path: str, text: str) -> None:
    """Writes `text` to file `path`, making its folder first (see `check_output_file`);
    OutputError if the disk is full."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with disk_full_reported(folder, path), open(path, "w") as f:
        f.write(text)


@contextlib.contextmanager
def disk_full_reported(directory: str, file: str | None = None):
    """Turns an OSError of a full disk or quota inside into an OutputError naming the file
    (the error's, else `file`, else `directory`) and the MiB left in `directory`; other
    errors pass unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno not in FULL:
            raise
        raise OutputError(f"writing {error.filename or file or 'into ' + directory} failed "
                          f"({error.strerror}); {space_left(directory)}") from error


def space_left(directory: str) -> str:
    """'N.N MiB free there': what the file system of `directory` has left."""
    return f"{shutil.disk_usage(directory).free / 2**20:.1f} MiB free there"


@contextlib.contextmanager
def held_exclusively(workdir: str, lock: bool = True):
    """Holds an exclusive lock on directory `workdir` (made if missing) inside, so that two
    runs launched on one workdir cannot interleave their checkpoints and metrics: a
    ConfigError if another process holds it. `lock` False (the other processes of a
    multi-process run, whose process 0 locks) and a file system without locks do nothing.
    The kernel drops the lock when the process ends, however it ends."""
    if not lock:
        yield
        return
    os.makedirs(workdir, exist_ok=True)
    descriptor = os.open(workdir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"--workdir {workdir} is in use by another run (it holds the "
                              f"folder's lock): wait for it to end, or give another "
                              f"--workdir") from None
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise
        yield
    finally:
        os.close(descriptor)
