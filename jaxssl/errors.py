"""The one error type for bad input, and its kinds.

Anything a user can get wrong (a config, a data set on disk, the mesh, a
checkpoint, a stage hand-off, a full disk, a run that diverged) raises an
`InputError`. The command lines (`jaxssl.main`, `jaxssl.sample`,
`jaxssl.pipeline_run`) catch this type and print its message as one line,
exiting with its `exit_status`; so does `jaxssl.main` for `StoppedByUser`, a
run that Ctrl-C stopped. Every other exception is a bug and keeps its traceback.

`InputError` derives from `ValueError` so that library callers that already
handle ValueError keep working; the command lines never catch plain
ValueError.
"""

from __future__ import annotations


class InputError(ValueError):
    """The input is wrong; the message says what and where, in one line."""
    exit_status = 2


class ConfigError(InputError):
    """The config is not valid: unknown key, wrong type, bad value, bad config file."""


class DataError(InputError):
    """A data set is missing, malformed or corrupt (the message names the file)."""


class MeshError(InputError):
    """The mesh does not fit the devices, or the batch does not divide over it."""


class CheckpointError(InputError):
    """A checkpoint is missing, corrupt, cannot be written, or does not fit the model being built."""


class DoesNotFitError(InputError):
    """A compiled step needs more memory than its devices have (or a slice's chips, for
    ahead-of-time compiles)."""


class OutputError(InputError):
    """An output cannot be written: the disk or the quota of its folder is full."""


class DivergedError(InputError):
    """Training produced a non-finite loss, gradient norm or parameter norm."""
    exit_status = 3


class StoppedByUser(KeyboardInterrupt):
    """Ctrl-C stopped a run after it saved a checkpoint: not bad input, and still a
    KeyboardInterrupt for library callers. The command lines print its message as one
    line and exit with status 130 (128 + SIGINT), as an interrupted program does."""
    exit_status = 130
