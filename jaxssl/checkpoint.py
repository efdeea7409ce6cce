"""Orbax checkpoints: save, automatic resume, and a fit check before resuming.

Each checkpoint `workdir/checkpoints/<step>/` holds three items:
  state   the TrainState (params, optimizer state, method state, step, rng),
          written sharded by every process and restored straight onto the mesh;
  data    the grain iterator state, one JSON file per process;
  config  the resolved config as JSON, so a checkpoint explains itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from typing import Any

import grain.python as grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from jaxssl import abandoned_io, config as config_lib, output_paths
from jaxssl.errors import CheckpointError


@contextlib.contextmanager
def reading(step_directory: str):
    """Wraps Orbax reads of one checkpoint step (the directory `<workdir>/checkpoints/<step>`):
    if a read fails, the reports of the reads Orbax abandons stay silent (`abandoned_io`)
    and the error goes on to the caller, who reports the step in one line."""
    abandoned_io.watch(step_directory)
    try:
        yield
    except BaseException:
        abandoned_io.read_failed()  # the step stays watched: the abandoned reads report later
        raise
    abandoned_io.unwatch(step_directory)


def _path_names(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def shapes_by_path(tree: Any) -> dict[str, tuple]:
    """{'params/backbone/conv/kernel': shape} for every array leaf of `tree`."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path_names(p): tuple(x.shape) for p, x in leaves if hasattr(x, "shape")}


STATE_ITEM, CONFIG_ITEM = "state", "config"  # two of a step's items (see the module doc)


def saved_config(step_directory: str) -> dict:
    """The resolved config saved with the checkpoint step `step_directory` (its config
    item), as JSON; Orbax's error if the step has none or it is damaged."""
    return ocp.JsonCheckpointHandler().restore(epath.Path(step_directory) / CONFIG_ITEM)


# The parts of the train state whose layout a checkpoint must share, and what decides it.
_STATE_SETTINGS = {
    "params": "the model",
    "opt_state": "the optimizer: optim.*, finetune.mode, the frozen parts",
    "method_state": "the method's own state",
}


def describe_mismatch(expected: dict[str, tuple], found: dict[str, tuple], limit: int = 5) -> str:
    """Human-readable list of missing, unexpected and reshaped paths ('' if they fit)."""
    problems = [f"missing {p}" for p in sorted(set(expected) - set(found))]
    problems += [f"unexpected {p}" for p in sorted(set(found) - set(expected))]
    problems += [f"{p}: checkpoint {found[p]} vs model {expected[p]}"
                 for p in sorted(set(expected) & set(found)) if expected[p] != found[p]]
    if not problems:
        return ""
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


class Checkpointer:
    """Saves every `every_steps` steps (and when forced), keeps the last `keep`."""

    def __init__(self, workdir: str, every_steps: int, keep: int, async_save: bool):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.every_steps = every_steps
        self._options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=False)
        self._manager: ocp.CheckpointManager | None = None
        self._write_failed = False

    @property
    def manager(self) -> ocp.CheckpointManager:
        if self._manager is None:
            os.makedirs(self.directory, exist_ok=True)
            self._manager = ocp.CheckpointManager(
                self.directory, options=self._options,
                item_handlers={"state": ocp.StandardCheckpointHandler(),
                               "data": grain.PyGrainCheckpointHandler(),
                               "config": ocp.JsonCheckpointHandler()})
        return self._manager

    def all_steps(self) -> list[int]:
        """Finished checkpoint steps, newest first, without creating anything in the workdir.

        A save interrupted before Orbax committed it (kill -9) is not listed:
        Orbax writes each step into a temporary folder and renames it when done.
        """
        if not os.path.isdir(self.directory):
            return []
        return sorted(self.manager.all_steps(), reverse=True)

    def step_directory(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def set_aside(self, steps: list[int]) -> None:
        """Moves unreadable checkpoint steps to `workdir/corrupt_checkpoints/<step>`, kept
        for inspection (never deleted) and out of the way of the steps the run saves next."""
        if not steps:
            return
        self.close()  # the next use rescans the remaining steps
        aside = os.path.join(os.path.dirname(self.directory), "corrupt_checkpoints")
        os.makedirs(aside, exist_ok=True)
        for step in steps:
            target = os.path.join(aside, str(step))
            suffix = 1
            while os.path.exists(target):
                target, suffix = os.path.join(aside, f"{step}.{suffix}"), suffix + 1
            os.rename(self.step_directory(step), target)
            print(f"jaxssl: warning: moved unreadable checkpoint step {step} to {target}",
                  file=sys.stderr, flush=True)

    def check_fits(self, step: int, abstract_state: Any) -> None:
        """Raises CheckpointError naming the paths whose shapes differ between checkpoint
        `step` and this run's state, and the settings that decide them: a state of another
        shape would only fail inside Orbax's restore, which reads as a damaged checkpoint."""
        with reading(self.step_directory(step)):
            saved = self.manager.item_metadata(step)["state"]
        saved_tree = lambda name: saved.get(name, {}) if hasattr(saved, "get") else {}
        expected_rng = jax.eval_shape(jax.random.key_data, abstract_state.rng).shape
        found_rng = shapes_by_path(saved_tree("rng")).get("", ())
        if found_rng != expected_rng:
            raise CheckpointError(
                f"the checkpoint at {self.directory}/{step} holds a random key of data shape "
                f"{found_rng}, this run's prng_impl makes {expected_rng}. Use a new --workdir, "
                f"or the config it was made with.")
        for name, decided_by in _STATE_SETTINGS.items():
            mismatch = describe_mismatch(shapes_by_path(getattr(abstract_state, name)),
                                         shapes_by_path(saved_tree(name)))
            if mismatch:
                raise CheckpointError(
                    f"the checkpoint at {self.directory}/{step} does not fit this run's "
                    f"{name} ({decided_by}): {mismatch}. Use a new --workdir, or the config it "
                    f"was made with.")

    def check_settings_fit(self, step: int, config: ml_collections.ConfigDict) -> None:
        """Raises CheckpointError naming the settings a resumed run must keep that `config`
        changes from the config saved with checkpoint `step` (`config.changed_on_resume`):
        e.g. another total_steps would re-shape the learning-rate schedule mid-run."""
        with reading(self.step_directory(step)):
            saved = saved_config(self.step_directory(step))
        changed = config_lib.changed_on_resume(saved, config)
        if changed:
            raise CheckpointError(
                f"the checkpoint at {self.step_directory(step)} was trained with other "
                f"settings than this run's: {config_lib.summarise_changes(changed)}. Resume "
                f"with the config it was made with, or use a new --workdir.")

    def check_data_fits(self, step: int, iterator_state: bytes, process_index: int,
                        process_count: int) -> None:
        """Raises CheckpointError if checkpoint `step` holds the state of another
        input pipeline (other data, batch size, seed or process count) than the grain
        iterator whose `get_state()` is `iterator_state`."""
        data = os.path.join(self.step_directory(step), "data")
        written = [re.fullmatch(r"process_\d+-of-(\d+)\.json", name)
                   for name in (os.listdir(data) if os.path.isdir(data) else [])]
        counts = sorted({int(match[1]) for match in written if match})
        if counts and process_count not in counts:
            raise CheckpointError(
                f"the checkpoint at {self.step_directory(step)} was written by {counts[0]} "
                f"processes, this run has {process_count}")
        # A step without this process's file is damaged: FileNotFoundError, passed over.
        with open(os.path.join(data, f"process_{process_index}-of-{process_count}.json")) as f:
            saved = json.load(f)
        expected = json.loads(iterator_state)
        # grain restores only onto the same source, sampler and number of worker processes
        for key in ("data_source", "sampler", "worker_count"):
            if saved.get(key) != expected[key]:
                raise CheckpointError(
                    f"the checkpoint at {self.step_directory(step)} holds the input-pipeline "
                    f"state of {key} {saved.get(key)!r}, this run reads {expected[key]!r}. Use "
                    f"a new --workdir, or the config it was made with.")

    def should_save(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def save(self, step: int, state: Any, data_iterator: Any,
             config: ml_collections.ConfigDict) -> None:
        """Starts writing checkpoint `step` (asynchronously when configured), after the
        previous save has finished. CheckpointError if that one or this one fails."""
        with self._writing():
            self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.PyGrainCheckpointSave(data_iterator),
                config=ocp.args.JsonSave(config.to_dict())), force=True)

    @contextlib.contextmanager
    def _writing(self):
        """Wraps Orbax's saves: a write the storage refuses (a full disk, a lost mount) is a
        CheckpointError naming the directory, its free space and the newest complete step
        (those are intact: Orbax renames a step's folder into place only once it is
        written). The directory is watched (`abandoned_io`) from the first save on, until
        `close` finds every save done, or for good after a failed one. Other errors, bugs,
        keep their tracebacks."""
        abandoned_io.watch(self.directory)
        try:
            yield
        except Exception as error:
            if not _is_storage_failure(error):
                raise  # a bug, with its traceback
            self._write_failed = True
            abandoned_io.write_failed()
            saved = self.all_steps()
            newest = f"step {saved[0]}" if saved else "none"
            raise CheckpointError(
                f"writing a checkpoint to {self.directory} failed ({describe_error(error)}); "
                f"{output_paths.space_left(self.directory)}; newest complete checkpoint: "
                f"{newest}") from error

    def restore(self, step: int, abstract_state: Any, data_iterator: Any = None) -> Any:
        """Restores `state` onto the shardings in `abstract_state`, and the grain
        `data_iterator` in place when one is given. Use `restore_intact`, which
        also passes over damaged steps."""
        items = dict(state=ocp.args.StandardRestore(abstract_state))
        if data_iterator is not None:
            items["data"] = grain.PyGrainCheckpointRestore(data_iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def restore_intact(self, abstract_state: Any, step: int | None = None,
                       data_iterator: Any = None) -> tuple[Any, list[int]]:
        """(the state of checkpoint `step`, the steps passed over): the one place that
        restores a checkpoint (`Trainer.restore`, `jaxssl.sample`). See `restore` for the
        arguments.

        With `step` None: the newest intact step. A newer step that cannot be read
        (truncated, half-written) is passed over with a warning naming it, and returned
        in the list; it is never deleted. CheckpointError when no step (or the given one)
        can be read, or when the storage refuses a read (`describe_damaged`).
        """
        saved = self.all_steps()
        if not saved:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        if step is not None and step not in saved:
            raise CheckpointError(f"no checkpoint step {step} in {self.directory} "
                                  f"(it holds steps {sorted(saved)})")
        unreadable, failures = [], []
        for candidate in (saved if step is None else [step]):
            try:
                with reading(self.step_directory(candidate)):
                    return self.restore(candidate, abstract_state, data_iterator), unreadable
            except Exception as error:  # the files of this step are damaged
                failures.append(describe_damaged(self.step_directory(candidate), error))
                unreadable.append(candidate)
                print(f"jaxssl: warning: checkpoint {failures[-1]}; trying an older one",
                      file=sys.stderr, flush=True)
        raise CheckpointError(f"no intact checkpoint in {self.directory}: " + "; ".join(failures))

    def wait(self) -> None:
        """Waits for the save in flight; CheckpointError if it failed."""
        if self._manager is not None:
            with self._writing():
                self._manager.wait_until_finished()

    def close(self) -> None:
        """Closes the Orbax manager, after the save in flight; the next use opens a new one."""
        if self._manager is not None:
            with self._writing():
                self._manager.close()
            self._manager = None
            if not self._write_failed:
                abandoned_io.unwatch(self.directory)


# Tensorstore's status codes (its errors are ValueErrors) for a storage that refuses a
# transfer: full, read-only, unreachable or too slow. A failed write also counts DATA_LOSS
# (a read that hits it has found damage); a failed read also counts a refusal for
# credentials and an aborted or cancelled transfer.
_REFUSED_STATUSES = ("RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "UNAVAILABLE",
                     "DEADLINE_EXCEEDED")
_STORAGE_STATUSES = _REFUSED_STATUSES + ("DATA_LOSS",)
_REFUSED_READ_STATUSES = _REFUSED_STATUSES + ("UNAUTHENTICATED", "ABORTED", "CANCELLED")


def _is_storage_failure(error: Exception) -> bool:
    """Whether a save failed because the storage refused it (full, read-only, gone)."""
    return isinstance(error, OSError) or str(error).startswith(_STORAGE_STATUSES)


def _is_refused_read(error: BaseException) -> bool:
    """Whether a read failed because the storage refused it (permissions, an unreachable or
    overloaded file system), anywhere in the error's chain: a missing file (a half-written
    step) or unparsable bytes are damage instead."""
    while error is not None:
        if isinstance(error, OSError) and not isinstance(
                error, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
            return True
        if str(error).startswith(_REFUSED_READ_STATUSES):
            return True
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return False


def describe_damaged(step_directory: str, error: Exception) -> str:
    """'step N is unreadable (ErrorType: first line of the message)' for a checkpoint step
    whose read failed with `error`, to be passed over. CheckpointError when the storage
    refused the read instead: the step may be intact, so a run must not fall back to an
    older one (and move this one aside) until the storage reads again."""
    step = os.path.basename(step_directory)
    if _is_refused_read(error):
        raise CheckpointError(
            f"reading checkpoint step {step} failed because the storage refused it "
            f"({describe_error(error)}); nothing was passed over or moved: run again once "
            f"{step_directory} is readable") from error
    return f"step {step} is unreadable ({describe_error(error)})"


def describe_error(error: Exception) -> str:
    """'ErrorType: the first line of its message' (200 characters at most)."""
    message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}"
