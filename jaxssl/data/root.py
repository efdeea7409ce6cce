"""The data root: how a data path in a config becomes a real path.

Every data source turns the paths a config names (`data.data_dir`,
`finetune.forgetting.data_dir`, a 'text:file' corpus, an 'spm:PATH'
tokenizer model, a TFDS data directory) into a real path with
`resolve_data_dir`, by one rule:

- an absolute path is used as it is;
- a relative path is joined to the environment variable ``JAXSSL_DATA_DIR``
  when that is set (and not empty), otherwise to the current directory.

So configs name data by a folder relative to the data root, e.g.
``data_dir='cifar10-jpeg'``, and a user points ``JAXSSL_DATA_DIR`` at the
folder that holds ``cifar10-jpeg/``, ``fashion-mnist/``, ``mnist/`` and
``tiny-shakespeare/``. The environment is read at every call (not at import)
so that a test or a launcher may set it late.
"""

from __future__ import annotations

import os

from jaxssl.errors import ConfigError

DATA_DIR_ENV = "JAXSSL_DATA_DIR"


def data_root() -> str:
    """The folder relative data paths are resolved against: $JAXSSL_DATA_DIR, else the cwd."""
    return os.environ.get(DATA_DIR_ENV) or os.getcwd()


def resolve_data_dir(data_dir: str | os.PathLike) -> str:
    """A config's data path -> a normalised real path (see the module docstring).

    `data_dir` must not be empty (ConfigError): an empty path means "no
    data_dir", which each caller handles (some datasets need none).
    """
    path = os.fspath(data_dir)
    if not path:
        raise ConfigError("a data path is empty; name a file or folder (see jaxssl.data.root)")
    return os.path.normpath(os.path.join(data_root(), path))


def unset_root_note(path: str | os.PathLike) -> str:
    """For a message saying `path` (a resolved data path) is missing: a note that relative
    data paths went to the current directory, when $JAXSSL_DATA_DIR is not set and `path`
    lies there (the usual cause: the variable was forgotten); '' otherwise."""
    cwd = os.getcwd()
    if os.environ.get(DATA_DIR_ENV) or os.path.commonpath([os.path.abspath(path), cwd]) != cwd:
        return ""
    return (f" ({DATA_DIR_ENV} is not set, so relative data paths are read from the current "
            f"directory)")


def resolve_optional_data_dir(data_dir: str | os.PathLike | None) -> str | None:
    """`resolve_data_dir`, or None when the config names no data_dir ('' or None)."""
    return resolve_data_dir(data_dir) if data_dir else None
