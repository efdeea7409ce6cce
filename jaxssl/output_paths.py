"""Output paths named on the command line, checked before the work that fills them.

A compile or a training run can take minutes; a workdir under a file or a
report path in a read-only folder should cost seconds. Both checks raise
`ConfigError`, whose message names the path by the flag that gave it.
"""

from __future__ import annotations

import os

from jaxssl.errors import ConfigError


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
    """Writes `text` to file `path`, making its folder first (see `check_output_file`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
