"""Silence for the reports of the transfers Orbax abandons when one of them fails.

`checkpoint.reading` and `checkpoint.Checkpointer`'s saves watch the directories
they read and write; jaxssl reports a failure there in one line of its own
(a damaged step, a full disk), and what Python would print about the abandoned
rest is dropped. Everything else is reported as before.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings


class _AbandonedIO(logging.Filter):
    """Silences the reports of the reads and writes Orbax abandons when one of them fails.

    When one array of a damaged step fails to read (or, saving, to write: a full disk),
    Orbax raises and closes its event loop while its transfers of the step's other arrays
    are still in flight. Python then reports each of those, with its traceback (thousands
    of lines for a tiny model): asyncio logs "exception was never retrieved" for one that
    failed, one whose coroutine fails as it is closed is an "Exception ignored in", and
    one that completes calls back into the closed loop from a tensorstore thread
    ("RuntimeError: Event loop is closed"); a failed save also logs Orbax's own errors.
    jaxssl's own line already names the step and the first error. So, as a logging
    filter, it drops those records that name a watched directory (a step being read or
    reported unreadable, checkpoints being written), and once a watched read or write
    has failed, Orbax's error records with a traceback; as `sys.unraisablehook` (from the
    first watch on, as the reports can come before the failure's exception reaches
    jaxssl), it drops those that name one, and while there is one, those that refuse a
    callback into a closed loop, and hands every other one to the hook it replaced.
    """

    def __init__(self):
        super().__init__()
        self.directories: set[str] = set()   # each ends with a separator
        self.failed = False                  # a watched read or write has failed
        self._replaced_hook = None

    def _names_a_watched_directory(self, message: str) -> bool:
        return any(directory in message for directory in self.directories)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        if record.name == "asyncio":
            return not ("never retrieved" in text and self._names_a_watched_directory(text))
        # Orbax logs the exceptions of its threads, which it also raises to jaxssl; its
        # other errors (none has failed yet) are reported.
        return not (record.levelno >= logging.ERROR and _is_orbax(record.pathname)
                    and self.directories
                    and (self.failed and record.exc_info
                         or self._names_a_watched_directory(text)))

    def watch(self, directory: str) -> None:
        self.directories.add(directory)
        if self._replaced_hook is None:
            self._replaced_hook, sys.unraisablehook = sys.unraisablehook, self.unraisable_hook

    def unraisable_hook(self, unraisable) -> None:
        if not (self._names_a_watched_directory(str(unraisable.exc_value))
                or self.directories and _is_callback_into_closed_loop(unraisable)):
            self._replaced_hook(unraisable)


def _is_orbax(path: str) -> bool:
    return f"{os.sep}orbax{os.sep}checkpoint{os.sep}" in path


def _is_callback_into_closed_loop(unraisable) -> bool:
    """Whether an unraisable exception is asyncio refusing a callback because its loop is closed."""
    if unraisable.exc_type is not RuntimeError or str(unraisable.exc_value) != "Event loop is closed":
        return False
    frames = traceback.extract_tb(unraisable.exc_traceback)
    return any(frame.name == "call_soon_threadsafe"
               and frame.filename.endswith(os.path.join("asyncio", "base_events.py"))
               for frame in frames)


_WATCH = _AbandonedIO()
for _logger in ("asyncio", "absl"):   # absl: Orbax's own error records of a failed save
    logging.getLogger(_logger).addFilter(_WATCH)


def _as_prefix(directory: str) -> str:
    """The absolute path with a trailing separator: 'checkpoints/4/' names no step 40."""
    return os.path.join(os.path.abspath(directory), "")


def watch(directory: str) -> None:
    """Silences the reports that name `directory`, from now on."""
    _WATCH.watch(_as_prefix(directory))


def unwatch(directory: str) -> None:
    _WATCH.directories.discard(_as_prefix(directory))


def read_failed() -> None:
    """After a failed read of a watched step: Orbax's error records of its abandoned
    reads are dropped from now on."""
    _WATCH.failed = True


def write_failed() -> None:
    """After a failed save: Orbax's error records of the abandoned writes are dropped,
    and their coroutines, collected at exit, give no "coroutine ... was never awaited"
    warnings."""
    _WATCH.failed = True
    warnings.filterwarnings("ignore", "coroutine '.*' was never awaited", RuntimeWarning)
