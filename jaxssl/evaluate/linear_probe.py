"""Linear probe: a softmax classifier trained on frozen, precomputed features.

Features are standardised with the training set's per-dimension mean and
standard deviation, a linear layer (zero-initialised) is trained with softmax
cross-entropy by AdamW or SGD+momentum under a cosine learning-rate decay,
and the standardisation is then folded into the returned weights so that
``logits = feats @ kernel + bias`` on raw features. The whole run is one
jitted program (lax.scan over epochs and steps) and depends only on `seed`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

Params = dict[str, jax.Array]  # {'kernel': float32 [D, C], 'bias': float32 [C]}

_OPTIMIZERS = ("adamw", "sgd")
_SGD_MOMENTUM = 0.9
_CONSTANT_FEATURE_RTOL = 1e-6  # std <= this * |mean|: the feature is constant.


def _exact_product(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b in full float32 on every platform: with the standardisation folded into the
    weights, x @ kernel and the bias nearly cancel for a feature whose |mean| is many
    standard deviations, and a bfloat16 (TPU) or TF32 (GPU) pass would round that away."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def linear_logits(params: Params, feats: jax.Array) -> jax.Array:
    """Logits float32 [N, C] of features [N, D]."""
    return _exact_product(feats, params["kernel"]) + params["bias"]


def linear_probe_loss(params: Params, feats: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy (nats) of int labels [N] under linear_logits."""
    logits = linear_logits(params, feats)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _feature_stats(feats: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-dimension mean [D] and std [D]; constant dimensions get std 1."""
    mean = feats.mean(axis=0)
    std = feats.std(axis=0)
    return mean, jnp.where(std <= _CONSTANT_FEATURE_RTOL * jnp.abs(mean), 1.0, std)


def _make_optimizer(
    optimizer: str, lr: jax.Array, weight_decay: jax.Array, total_steps: int
) -> optax.GradientTransformation:
    """AdamW or SGD+momentum, cosine decay from lr to 0, weight decay on the kernel only."""
    schedule = optax.cosine_decay_schedule(lr, max(total_steps, 1))
    decay_mask = {"kernel": True, "bias": False}
    if optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask)
    if optimizer == "sgd":
        return optax.chain(
            optax.add_decayed_weights(weight_decay, mask=decay_mask),
            optax.sgd(schedule, momentum=_SGD_MOMENTUM),
        )
    raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")


@functools.partial(
    jax.jit,
    static_argnames=("num_classes", "epochs", "batch_size", "optimizer"),
)
def _train_standardized(
    feats: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    lr: jax.Array,
    weight_decay: jax.Array,
    *,
    num_classes: int,
    epochs: int,
    batch_size: int,
    optimizer: str,
) -> Params:
    """Trains on standardised feats [N, D], batch_size <= N.

    Each epoch is a fresh permutation cut into ceil(N / batch_size) batches;
    the last batch is filled up from the permutation's start, so every
    example is seen at least once per epoch.
    """
    num_examples, dim = feats.shape
    steps_per_epoch = -(-num_examples // batch_size)
    tx = _make_optimizer(optimizer, lr, weight_decay, epochs * steps_per_epoch)
    params = {
        "kernel": jnp.zeros((dim, num_classes), jnp.float32),
        "bias": jnp.zeros((num_classes,), jnp.float32),
    }

    def train_step(carry, batch_indices):
        params, opt_state = carry
        grads = jax.grad(linear_probe_loss)(params, feats[batch_indices], labels[batch_indices])
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def train_epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, num_examples)
        wrapped = jnp.concatenate([order, order])[: steps_per_epoch * batch_size]
        batches = wrapped.reshape(steps_per_epoch, batch_size)
        return jax.lax.scan(train_step, carry, batches)[0], None

    epoch_keys = jax.random.split(key, epochs)
    (params, _), _ = jax.lax.scan(train_epoch, (params, tx.init(params)), epoch_keys)
    return params


def train_linear_probe(
    train_feats: jax.Array | np.ndarray,
    train_labels: jax.Array | np.ndarray,
    num_classes: int,
    *,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 3e-2,
    weight_decay: float = 1e-4,
    optimizer: str = "adamw",
    seed: int = 0,
) -> Params:
    """Trains a linear classifier on frozen features; same seed, same params.

    Args:
      train_feats: float [N, D] features.
      train_labels: int [N] in [0, num_classes).
      num_classes: number of classes C.
      epochs: passes over the data.
      batch_size: examples per step (capped at N).
      lr: peak learning rate, decayed to 0 by a cosine over all steps.
      weight_decay: decoupled weight decay on the kernel (not the bias).
      optimizer: 'adamw' or 'sgd' (momentum 0.9).
      seed: seeds the per-epoch shuffles (the weights start at zero).

    Returns:
      {'kernel': float32 [D, C], 'bias': float32 [C]} acting on raw
      (unstandardised) features: logits = feats @ kernel + bias.
    """
    feats = jnp.asarray(train_feats, jnp.float32)
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"train_feats must be a non-empty [N, D] array, got {feats.shape}")
    labels = np.asarray(train_labels)
    if labels.shape != feats.shape[:1] or not 0 <= labels.min() <= labels.max() < num_classes:
        raise ValueError(f"train_labels must be [{feats.shape[0]}] ints in [0, {num_classes})")
    mean, std = _feature_stats(feats)
    params = _train_standardized(
        (feats - mean) / std,
        jnp.asarray(labels, jnp.int32),
        jax.random.key(seed),
        jnp.float32(lr),
        jnp.float32(weight_decay),
        num_classes=num_classes,
        epochs=epochs,
        batch_size=min(batch_size, feats.shape[0]),
        optimizer=optimizer,
    )
    kernel = params["kernel"] / std[:, None]
    return {"kernel": kernel, "bias": params["bias"] - _exact_product(mean, kernel)}


def linear_probe_accuracy(
    train_feats: jax.Array | np.ndarray,
    train_labels: jax.Array | np.ndarray,
    test_feats: jax.Array | np.ndarray,
    test_labels: jax.Array | np.ndarray,
    num_classes: int,
    **hparams,
) -> float:
    """Test accuracy in [0, 1] of a probe trained by train_linear_probe(**hparams)."""
    params = train_linear_probe(train_feats, train_labels, num_classes, **hparams)
    logits = linear_logits(params, jnp.asarray(test_feats, jnp.float32))
    return float(np.mean(np.asarray(jnp.argmax(logits, axis=-1)) == np.asarray(test_labels)))
