"""Grain input pipelines over random-access sources.

Training: an infinite stream of global batches drawn from a seeded shuffle
that differs every epoch. Global batch `s` is the same whatever the number of
processes; each process reads only its own slice of it (rows
[p * b, (p + 1) * b) for process p of b examples each), so a run on 2 hosts
sees exactly the batches of a run on 1. The iterator is checkpointable
(`get_state` / `set_state`, saved by `jaxssl.checkpoint`). Evaluation: every record once, in a fixed order, padded
to whole batches with a validity mask.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from typing import Iterator, Sequence

import grain.python as grain
import numpy as np
from absl import flags

from jaxssl.errors import MeshError


class BatchSizeError(MeshError):
    """The global batch size does not divide over processes or devices."""


def per_process_batch_size(global_batch: int, num_shards: int, num_records: int,
                           process_count: int) -> int:
    """Checks divisibility and returns the number of examples each process loads.

    Args:
      global_batch: examples per step, all processes together.
      num_shards: ways the batch axis is split over devices ('data' x 'fsdp').
      num_records: size of the training split.
      process_count: number of hosts.
    """
    if global_batch % num_shards:
        raise BatchSizeError(
            f"data.batch_size={global_batch} is not divisible by the {num_shards} batch shards "
            f"of the mesh (data x fsdp)")
    if global_batch % process_count:
        raise BatchSizeError(
            f"data.batch_size={global_batch} is not divisible by the {process_count} processes")
    if num_records < global_batch:
        raise BatchSizeError(
            f"data.batch_size={global_batch} is larger than the training split "
            f"({num_records} examples)")
    return global_batch // process_count


@functools.lru_cache(maxsize=4)
def epoch_permutation(num_records: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the records in `epoch` (cached: grain reads from several threads)."""
    return np.random.default_rng((seed, epoch)).permutation(num_records)


class GlobalBatchSlices:
    """Random-access source whose record `s` is this process's slice of global batch `s`.

    Epoch e is the permutation of the records drawn with seed (seed, e); each
    epoch has len(source) // global_batch batches (the remainder is dropped).
    """

    # Streams are "infinite": this many epochs before the index space ends.
    MAX_EPOCHS = 10**6

    def __init__(self, source, local_batch_size: int, seed: int, process_index: int,
                 process_count: int):
        self.source, self.seed = source, seed
        self.local_batch_size = local_batch_size
        self.global_batch_size = local_batch_size * process_count
        self.offset = process_index * local_batch_size
        self.steps_per_epoch = len(source) // self.global_batch_size

    def __len__(self) -> int:
        return self.steps_per_epoch * self.MAX_EPOCHS

    def __repr__(self) -> str:
        return (f"GlobalBatchSlices({self.source!r}, global_batch={self.global_batch_size}, "
                f"offset={self.offset}, seed={self.seed})")

    def record_indices(self, step: int) -> np.ndarray:
        """Indices into `source` of this process's slice of global batch `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = position * self.global_batch_size + self.offset
        permutation = epoch_permutation(len(self.source), self.seed, epoch)
        return permutation[start:start + self.local_batch_size]

    def __getitem__(self, step: int) -> dict[str, np.ndarray]:
        return _stack([self.source[int(i)] for i in self.record_indices(step)])


def train_loader(source, local_batch_size: int, seed: int, process_index: int,
                 process_count: int, num_workers: int = 0, read_threads: int = 4,
                 prefetch_batches: int = 8) -> grain.DataLoader:
    """This process's slices of an infinite stream of shuffled global batches.

    Each element is a dict of numpy arrays with leading dimension
    `local_batch_size` (e.g. 'image' uint8 [b, H, W, C], 'label' int32 [b]);
    the global batch is `local_batch_size * process_count`. `read_threads`
    threads read up to `prefetch_batches` batches ahead (grain's defaults,
    16 threads and 500 elements, would hold 500 whole batches in memory here,
    and polling them cost the baby GPT's loop milliseconds per step).
    """
    if num_workers and not flags.FLAGS.is_parsed():
        # grain's worker processes read its absl flags, which a program that parses its
        # own arguments never parsed (UnparsedFlagAccessError, google/grain#1355): their
        # defaults then stand.
        flags.FLAGS.mark_as_parsed()
    batches = GlobalBatchSlices(source, local_batch_size, seed, process_index, process_count)
    sampler = grain.IndexSampler(num_records=len(batches), shuffle=False, num_epochs=1)
    return grain.DataLoader(
        data_source=batches, sampler=sampler, worker_count=num_workers,
        read_options=grain.ReadOptions(num_threads=read_threads,
                                       prefetch_buffer_size=prefetch_batches))


@contextlib.contextmanager
def iterating(loader: grain.DataLoader) -> Iterator[grain.DataLoaderIterator]:
    """A new iterator of `loader`, closed on exit: its reader threads and worker processes
    stop, and the shared memory of the batches the workers wrote is freed. grain's
    DataLoaderIterator has no close of its own, and its iterators and batches sit in
    reference cycles that may outlive the run to the interpreter's exit, where their
    finalisers fail and the workers' shared memory is reported as leaked: so with
    workers they are collected here, while the interpreter is whole (a collection
    takes about 0.3 s after a run, too long to pay when there is nothing to free)."""
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        iterator._iterator.close()  # pylint: disable=protected-access
        del iterator
        if loader.multiprocessing_options.num_workers:
            gc.collect()


def eval_batches(source, global_batch: int, process_index: int, process_count: int,
                 limit: int = 0) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Fixed-order batches over the first `limit` records (0 = all).

    Yields this process's slice of each global batch and its validity mask
    (bool [global_batch // process_count]); the last batch repeats the last record.
    """
    total = len(source) if limit <= 0 else min(limit, len(source))
    local = global_batch // process_count
    for start in range(0, total, global_batch):
        rows = np.arange(start + process_index * local, start + (process_index + 1) * local)
        valid = rows < total
        yield _stack([source[int(i)] for i in np.minimum(rows, total - 1)]), valid


def example_batch(source, batch_size: int) -> dict[str, np.ndarray]:
    """The first `batch_size` records stacked: shapes and dtypes for model init."""
    return _stack([source[i % len(source)] for i in range(batch_size)])


def spec_example(element_spec: dict, batch_size: int) -> dict[str, np.ndarray]:
    """Zeros shaped like `batch_size` records of `element_spec` ({key: ShapeDtypeStruct},
    `jaxssl.data.sources.element_spec`): an example batch for model init without data."""
    return {k: np.zeros((batch_size,) + tuple(v.shape), v.dtype) for k, v in element_spec.items()}


def _stack(records: Sequence[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}
