"""Grain pipeline: per-process shards, per-epoch reshuffle, checkpointable iterator."""

import numpy as np
import pytest

from jaxssl.data import pipeline
from jaxssl.data.image_files import ArraySource


def _source(n=40):
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    return ArraySource(images, np.arange(n) % 10, num_classes=10)


def _ids(batch):
    return batch["image"].reshape(-1).tolist()


def test_processes_read_disjoint_slices_of_the_same_global_batches():
    source = _source()
    single = iter(pipeline.train_loader(source, 10, seed=1, process_index=0, process_count=1))
    pair = [iter(pipeline.train_loader(source, 5, seed=1, process_index=p, process_count=2))
            for p in range(2)]
    epoch = []
    for _ in range(4):
        slices = [_ids(next(it)) for it in pair]
        assert not set(slices[0]) & set(slices[1])
        assert slices[0] + slices[1] == _ids(next(single))
        epoch += slices[0] + slices[1]
    assert sorted(epoch) == list(range(40))


def test_every_epoch_is_a_different_permutation():
    it = iter(pipeline.train_loader(_source(), 10, seed=3, process_index=0, process_count=1))
    epochs = [[i for _ in range(4) for i in _ids(next(it))] for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(40))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]


def test_iterator_state_restores_the_continuation():
    loader = pipeline.train_loader(_source(), 8, seed=0, process_index=0, process_count=1)
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [_ids(next(it)) for _ in range(4)]
    resumed = iter(loader)
    resumed.set_state(state)
    assert [_ids(next(resumed)) for _ in range(4)] == expected


@pytest.mark.parametrize("read_threads, prefetch_batches", [(0, 2), (3, 5)])
def test_reader_threads_and_read_ahead_do_not_change_the_stream_or_its_state(
        read_threads, prefetch_batches):
    default = iter(pipeline.train_loader(_source(), 8, seed=2, process_index=0, process_count=1))
    loader = pipeline.train_loader(_source(), 8, seed=2, process_index=0, process_count=1,
                                   read_threads=read_threads, prefetch_batches=prefetch_batches)
    it = iter(loader)
    assert [_ids(next(it)) for _ in range(7)] == [_ids(next(default)) for _ in range(7)]
    assert it.get_state() == default.get_state()


def test_eval_batches_cover_each_record_once_in_order():
    # 23 records in global batches of 8 over 2 processes: each process takes its half of
    # every global batch; the last repeats the last record, marked invalid.
    source = _source(23)
    batches = [[(_ids(batch), mask.tolist()) for batch, mask in
                pipeline.eval_batches(source, 8, process, 2)] for process in range(2)]
    valid = [True] * 4
    assert batches[0] == [([0, 1, 2, 3], valid), ([8, 9, 10, 11], valid),
                          ([16, 17, 18, 19], valid)]
    assert batches[1] == [([4, 5, 6, 7], valid), ([12, 13, 14, 15], valid),
                          ([20, 21, 22, 22], [True, True, True, False])]


@pytest.mark.parametrize("batch, shards, processes, message", [
    (30, 8, 1, "not divisible by the 8 batch shards"),
    (32, 8, 3, "not divisible by the 3 processes"),
    (48, 8, 2, "larger than the training split"),
])
def test_batch_size_errors(batch, shards, processes, message):
    with pytest.raises(pipeline.BatchSizeError, match=message):
        pipeline.per_process_batch_size(batch, shards, 40, processes)
