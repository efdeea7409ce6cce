"""Frozen-encoder evaluation: features over a split, then kNN and linear probe."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxssl import parallel
from jaxssl.data import pipeline
from jaxssl.evaluate.knn import knn_accuracy
from jaxssl.evaluate.linear_probe import linear_probe_accuracy


NOISE_SEED = 0  # the evaluation keys' seed: every evaluation draws the same masks and noise


def eval_batch_key(number: int) -> jax.Array:
    """The key of the split's evaluation batch `number` (0, 1, ...): the same at every
    evaluation, so that evaluations compare across steps, and different between batches,
    so that a split's batches do not all repeat one batch's draws."""
    return jax.random.fold_in(jax.random.key(NOISE_SEED), number)


def eval_batch_size(requested: int, mesh: Mesh) -> int:
    """`requested` rounded up to a multiple of the batch shards and processes."""
    multiple = int(np.lcm(parallel.batch_shards(mesh), jax.process_count()))
    return -(-requested // multiple) * multiple


def gather_split(batch_fn: Callable[[Any, dict, jax.Array], dict], variables: Any, source,
                 mesh: Mesh, batch_size: int, limit: int = 0) -> dict[str, np.ndarray]:
    """`batch_fn` over the first `limit` records of `source` (0 = all), on every host.

    `batch_fn(variables, batch, rng) -> {name: [B, ...] array}` (jit it); `batch` is
    a global batch of the source's records plus 'valid' (bool [B], False on
    the padding of the last batch), `rng` that batch's `eval_batch_key`, replicated.
    Returns each name's rows of all valid records, in source order, concatenated:
    {name: [N, ...]}.
    """
    batch_size = eval_batch_size(batch_size, mesh)
    outputs = []
    for number, (local, valid) in enumerate(pipeline.eval_batches(
            source, batch_size, jax.process_index(), jax.process_count(), limit)):
        batch = parallel.host_batch_to_global({**local, "valid": valid}, mesh)
        rng = parallel.replicated_key(eval_batch_key(number), mesh)
        gathered = multihost_utils.process_allgather(
            {"outputs": batch_fn(variables, batch, rng), "valid": batch["valid"]}, tiled=True)
        keep = np.asarray(gathered["valid"])
        outputs.append({k: np.asarray(v)[keep] for k, v in gathered["outputs"].items()})
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def extract_features(features_fn: Callable[[Any, jax.Array], jax.Array], variables: Any,
                     source, mesh: Mesh, batch_size: int, limit: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Encoder features of the first `limit` records of `source` (0 = all), on every host.

    `features_fn(variables, images uint8 [B, H, W, C]) -> [B, D]` is jitted.
    Returns (features float32 [N, D], labels int [N]).
    """
    rows = gather_split(
        lambda v, batch, rng: {"features": features_fn(v, batch["image"]),
                                "label": batch["label"]},
        variables, source, mesh, batch_size, limit)
    return rows["features"], rows["label"]


def evaluate_encoder(features_fn, variables, train_source, test_source, mesh: Mesh,
                     eval_config: Mapping[str, Any], num_classes: int) -> dict[str, float]:
    """{'knn_top1': ..., 'linear_probe_top1': ...} on the test split, fractions in [0, 1]."""
    train_x, train_y = extract_features(features_fn, variables, train_source, mesh,
                                        eval_config["batch_size"],
                                        eval_config["max_train_examples"])
    test_x, test_y = extract_features(features_fn, variables, test_source, mesh,
                                      eval_config["batch_size"], eval_config["max_test_examples"])
    knn = knn_accuracy(train_x, train_y, test_x, test_y, num_classes,
                       k=eval_config["knn_k"], temperature=eval_config["knn_temperature"])
    probe = linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes,
                                  epochs=eval_config["probe_epochs"],
                                  batch_size=eval_config["probe_batch_size"],
                                  lr=eval_config["probe_lr"],
                                  weight_decay=eval_config["probe_weight_decay"], seed=0)
    return {"knn_top1": float(knn), "linear_probe_top1": float(probe)}
