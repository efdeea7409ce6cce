"""Grain input pipelines over random-access sources.

Training: an infinite, seeded shuffle that differs every epoch, the index
space sharded by process (each host reads only its own records), batched on
the host. The iterator is checkpointable (`get_state` / `set_state`, saved by
`jaxssl.checkpoint`). Evaluation: every record once, in a fixed order, padded
to whole batches with a validity mask.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import grain.python as grain
import numpy as np


class BatchSizeError(ValueError):
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
    local = global_batch // process_count
    if num_records // process_count < local:
        raise BatchSizeError(
            f"data.batch_size={global_batch} is larger than the training split "
            f"({num_records} examples over {process_count} processes)")
    return local


def train_loader(source, local_batch_size: int, seed: int, process_index: int,
                 process_count: int, num_workers: int = 0) -> grain.DataLoader:
    """Infinite shuffled batches of this process's shard of `source`.

    Each element is a dict of numpy arrays with leading dimension
    `local_batch_size` (e.g. 'image' uint8 [b, H, W, C], 'label' int32 [b]).
    """
    sampler = grain.IndexSampler(
        num_records=len(source),
        shard_options=grain.ShardOptions(process_index, process_count, drop_remainder=True),
        shuffle=True, num_epochs=None, seed=seed)
    return grain.DataLoader(
        data_source=source, sampler=sampler,
        operations=[grain.Batch(local_batch_size, drop_remainder=True)],
        worker_count=num_workers)


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


def _stack(records: Sequence[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}
