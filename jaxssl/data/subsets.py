"""Deterministic class-balanced subsets of a labelled split (low-label regimes).

`class_balanced_indices` picks, from every class, either a fixed number of
examples (`labels_per_class`) or a fixed fraction of that class
(`label_fraction`, at least one example). Within class c the examples come
in the order of a permutation seeded by (seed, c) and the subset is its
prefix, so for one seed the subsets are nested: the 1% subset is part of the
10% subset, which is part of the whole split.
"""

from __future__ import annotations

import zlib

import numpy as np


def check_subset_settings(labels_per_class: int, label_fraction: float) -> None:
    """ValueError unless at most one is set, labels_per_class >= 0, label_fraction in [0, 1]."""
    if labels_per_class and label_fraction:
        raise ValueError("set labels_per_class or label_fraction, not both")
    if labels_per_class < 0 or not 0.0 <= label_fraction <= 1.0:
        raise ValueError(f"labels_per_class must be >= 0 and label_fraction in [0, 1], got "
                         f"{labels_per_class} and {label_fraction}")


def source_labels(source) -> np.ndarray:
    """int [N] labels of every record of `source` (its `labels` array if it has one)."""
    labels = getattr(source, "labels", None)
    if labels is None:
        labels = [source[i]["label"] for i in range(len(source))]
    return np.asarray(labels).reshape(-1)


def class_balanced_indices(labels: np.ndarray, num_classes: int, labels_per_class: int = 0,
                           label_fraction: float = 0.0, seed: int = 0) -> np.ndarray:
    """Sorted int64 indices into `labels` of the chosen subset.

    Args:
      labels: int [N] class of each example, in [0, num_classes).
      num_classes: number of classes C.
      labels_per_class: take min(this, class size) examples of every class.
      label_fraction: in (0, 1]; take max(1, round(fraction * class size))
        examples of every class.
      seed: chooses the examples; the same seed gives nested subsets.
    Exactly one of labels_per_class and label_fraction may be set; with
    neither, every index is returned.

    Raises:
      ValueError: both set, or a value out of range.
    """
    labels = np.asarray(labels).reshape(-1)
    check_subset_settings(labels_per_class, label_fraction)
    if not labels_per_class and not label_fraction:
        return np.arange(len(labels), dtype=np.int64)
    chosen = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        if labels_per_class:
            count = min(labels_per_class, len(members))
        else:
            count = min(len(members), max(1, int(round(label_fraction * len(members)))))
        order = np.random.default_rng([seed, label]).permutation(members)
        chosen.append(order[:count])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


class SubsetSource:
    """The records of `source` at `indices`, in that order; a grain random-access source."""

    def __init__(self, source, indices: np.ndarray):
        self.source = source
        self.indices = np.asarray(indices, np.int64)
        self.num_classes = source.num_classes
        self.image_shape = source.image_shape

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        # Grain checks a restored iterator against repr(source): deterministic, content-based.
        return (f"SubsetSource({self.source!r}, n={len(self)}, "
                f"indices_crc32={zlib.crc32(self.indices.tobytes())})")

    def __getitem__(self, index: int) -> dict:
        return self.source[int(self.indices[index])]


def labelled_subset(source, labels_per_class: int = 0, label_fraction: float = 0.0,
                    seed: int = 0):
    """`source` itself when neither limit is set, else a SubsetSource of the chosen examples."""
    if not labels_per_class and not label_fraction:
        return source
    indices = class_balanced_indices(source_labels(source), source.num_classes,
                                     labels_per_class, label_fraction, seed)
    return SubsetSource(source, indices)
