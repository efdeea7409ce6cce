"""Forgetting: how much of what an encoder knew about a reference data set it keeps.

The measure is the kNN top-1 (`jaxssl.evaluate.knn`, fractions in [0, 1]) of
the encoder's frozen features on a reference data set (train split as the
neighbours, test split as the queries), before and after training; the
forgetting is before - after (positive = knowledge lost). Any run with an
image encoder can call it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import ml_collections
from jax.sharding import Mesh

from jaxssl.data.sources import get_source
from jaxssl.evaluate.knn import knn_accuracy
from jaxssl.evaluate.representation import extract_features

FeaturesFn = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class ReferenceSet:
    """A labelled data set's two splits and how many records of each to use (0 = all)."""
    train: Any
    test: Any
    max_train_examples: int = 0
    max_test_examples: int = 0

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "ReferenceSet":
        """From {name, data_dir, train_split, eval_split, max_train_examples,
        max_test_examples} (e.g. `config.finetune.forgetting`)."""
        return cls(get_source(config.name, config.train_split, config.data_dir),
                   get_source(config.name, config.eval_split, config.data_dir),
                   config.max_train_examples, config.max_test_examples)


def knn_top1(features_fn: FeaturesFn, variables: Any, reference: ReferenceSet, mesh: Mesh,
             eval_config: Mapping[str, Any]) -> float:
    """kNN top-1 in [0, 1] of `features_fn(variables, images uint8 [B, H, W, C]) -> [B, D]`
    (jitted) on `reference`, with eval_config's batch_size, knn_k and knn_temperature."""
    def features(source, limit):
        return extract_features(features_fn, variables, source, mesh,
                                eval_config["batch_size"], limit)

    train_x, train_y = features(reference.train, reference.max_train_examples)
    test_x, test_y = features(reference.test, reference.max_test_examples)
    return float(knn_accuracy(train_x, train_y, test_x, test_y, reference.train.num_classes,
                              k=eval_config["knn_k"], temperature=eval_config["knn_temperature"]))


def forgetting(features_fn: FeaturesFn, before: Any, after: Any, reference: ReferenceSet,
               mesh: Mesh, eval_config: Mapping[str, Any]) -> dict[str, float]:
    """{'knn_before', 'knn_after': `knn_top1` of the variables `before` and `after`,
    'forgetting': knn_before - knn_after}, fractions."""
    knn_before = knn_top1(features_fn, before, reference, mesh, eval_config)
    knn_after = knn_top1(features_fn, after, reference, mesh, eval_config)
    return {"knn_before": knn_before, "knn_after": knn_after,
            "forgetting": knn_before - knn_after}
