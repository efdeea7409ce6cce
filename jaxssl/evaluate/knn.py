"""Weighted k-nearest-neighbour classification of frozen features.

The SSL-literature protocol (InstDisc, DINO): features are L2-normalised,
each test point takes its k most cosine-similar training points, and each
neighbour votes for its own label with weight exp(similarity / temperature).
The prediction is the class with the largest summed vote.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _l2_normalize(x: jax.Array) -> jax.Array:
    """Rows of x [N, D] scaled to unit L2 norm (zero rows stay zero)."""
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.maximum(norm, 1e-12)


@functools.partial(jax.jit, static_argnames=("num_classes", "k"))
def _knn_predict_chunks(
    train_feats: jax.Array,
    train_labels: jax.Array,
    test_chunks: jax.Array,
    temperature: jax.Array,
    *,
    num_classes: int,
    k: int,
) -> jax.Array:
    """Predictions int32 [num_chunks, batch_size] for test_chunks [num_chunks, batch_size, D].

    One chunk at a time (lax.map), so only a [batch_size, N] block of
    similarities is live.
    """
    train_unit = _l2_normalize(train_feats.astype(jnp.float32))

    def predict_chunk(test_feats: jax.Array) -> jax.Array:
        test_unit = _l2_normalize(test_feats.astype(jnp.float32))
        similarity = jnp.dot(test_unit, train_unit.T, precision=jax.lax.Precision.HIGHEST)
        top_sim, top_index = jax.lax.top_k(similarity, k)  # [B, k], descending.
        # Subtracting each row's best similarity rescales all its votes by one
        # factor: the argmax is unchanged and exp cannot overflow.
        weights = jnp.exp((top_sim - top_sim[:, :1]) / temperature)
        one_hot = jax.nn.one_hot(train_labels[top_index], num_classes, dtype=weights.dtype)
        votes = jnp.einsum("bk,bkc->bc", weights, one_hot)
        return jnp.argmax(votes, axis=-1).astype(jnp.int32)

    return jax.lax.map(predict_chunk, test_chunks)


def knn_classify(
    train_feats: jax.Array | np.ndarray,
    train_labels: jax.Array | np.ndarray,
    test_feats: jax.Array | np.ndarray,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 256,
) -> np.ndarray:
    """Weighted kNN predictions of test points from labelled training points.

    Args:
      train_feats: float [N, D] features of the labelled points.
      train_labels: int [N] in [0, num_classes).
      test_feats: float [M, D] features to classify.
      num_classes: number of classes.
      k: neighbours per test point (capped at N).
      temperature: vote weight is exp(cosine similarity / temperature).
      batch_size: test points per similarity block; memory is O(batch_size * N).

    Returns:
      int32 [M] predicted class per test point.
    """
    train_feats = jnp.asarray(train_feats)
    test_feats = jnp.asarray(test_feats)
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"features must be [N, D] and [M, D], got {train_feats.shape} and {test_feats.shape}"
        )
    num_train, num_test = train_feats.shape[0], test_feats.shape[0]
    if num_train == 0:
        raise ValueError("knn_classify needs at least one training point")
    train_labels = np.asarray(train_labels)
    in_range = 0 <= train_labels.min() <= train_labels.max() < num_classes
    if train_labels.shape != (num_train,) or not in_range:
        raise ValueError(f"train_labels must be [{num_train}] ints in [0, {num_classes})")
    if num_test == 0:
        return np.zeros((0,), np.int32)
    batch_size = max(1, min(batch_size, num_test))
    num_chunks = -(-num_test // batch_size)
    padded = jnp.pad(test_feats, ((0, num_chunks * batch_size - num_test), (0, 0)))
    predictions = _knn_predict_chunks(
        train_feats,
        jnp.asarray(train_labels, jnp.int32),
        padded.reshape(num_chunks, batch_size, -1),
        jnp.float32(temperature),
        num_classes=num_classes,
        k=min(k, num_train),
    )
    return np.asarray(predictions).reshape(-1)[:num_test]


def knn_accuracy(
    train_feats: jax.Array | np.ndarray,
    train_labels: jax.Array | np.ndarray,
    test_feats: jax.Array | np.ndarray,
    test_labels: jax.Array | np.ndarray,
    num_classes: int,
    **knn_kwargs,
) -> float:
    """Fraction in [0, 1] of test points whose knn_classify prediction is their label.

    knn_kwargs: k, temperature, batch_size as in knn_classify.
    """
    predictions = knn_classify(train_feats, train_labels, test_feats, num_classes, **knn_kwargs)
    return float(np.mean(predictions == np.asarray(test_labels)))
