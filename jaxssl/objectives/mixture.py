"""Weighted mixtures of objectives, usable by any method.

A mixture is a list of objective names and sampling rates. `choose` draws
which objective each example (or the whole batch) gets from a seeded key;
a method computes every objective's per-example loss sums and counts (or
builds every objective's inputs and `select`s per example), and
`metrics_by_objective` reports each objective's own loss and token count.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_rates(rates: Sequence[float]) -> np.ndarray:
    """Rates as float64 [K], non-negative and summing to 1; ValueError otherwise."""
    array = np.asarray(rates, np.float64)
    if array.ndim != 1 or not len(array) or (array < 0).any() or not np.isclose(array.sum(), 1.0):
        raise ValueError(f"objective rates must be non-negative and sum to 1, got {list(rates)}")
    return array


def choose(rng: jax.Array, rates: Sequence[float], batch_size: int, per_example: bool
           ) -> jax.Array:
    """int32 [batch_size]: objective index of each example, drawn with probabilities
    `rates`, independently per example or once for the whole batch."""
    logits = jnp.log(jnp.asarray(check_rates(rates), jnp.float32))
    shape = (batch_size,) if per_example else ()
    choice = jax.random.categorical(rng, logits, shape=shape).astype(jnp.int32)
    return jnp.broadcast_to(choice, (batch_size,))


def select(choice: jax.Array, candidates: Sequence[Any]) -> Any:
    """Per example b, the leaves of candidates[choice[b]].

    candidates: K pytrees of one structure whose leaves share the leading
    batch axis [B, ...] and shapes; choice: int [B] in [0, K).
    """
    def pick(*leaves):
        stacked = jnp.stack(leaves)                                   # [K, B, ...]
        index = choice.reshape((1, -1) + (1,) * (stacked.ndim - 2))
        return jnp.take_along_axis(stacked, index, axis=0)[0]

    return jax.tree.map(pick, *candidates)


def metrics_by_objective(names: Sequence[str], choice: jax.Array, loss_sum: jax.Array,
                         count: jax.Array) -> dict[str, jax.Array]:
    """{'NAME/loss': mean loss over NAME's target tokens, 'NAME/tokens': their number}.

    names: the K objectives' names (objectives sharing a name are reported
    together); choice int [B]; loss_sum, count float [B]: each example's
    summed loss and number of target tokens. An objective absent from the
    batch reports loss 0 and tokens 0.
    """
    metrics = {}
    for name in dict.fromkeys(names):
        members = jnp.isin(choice, jnp.asarray([k for k, n in enumerate(names) if n == name]))
        tokens = jnp.sum(jnp.where(members, count, 0.0))
        total = jnp.sum(jnp.where(members, loss_sum, 0.0))
        metrics[f"{name}/loss"] = total / jnp.maximum(tokens, 1.0)
        metrics[f"{name}/tokens"] = tokens
    return metrics


def mixture_loss(names: Sequence[str], choice: jax.Array, loss_sum: jax.Array, count: jax.Array
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(mean loss over all target tokens of the batch, metrics).

    Metrics: 'loss', 'tokens' and, when there are several objectives,
    `metrics_by_objective`. Arguments as for `metrics_by_objective`.
    """
    tokens = jnp.sum(count)
    loss = jnp.sum(loss_sum) / jnp.maximum(tokens, 1.0)
    metrics = {"loss": loss, "tokens": tokens}
    if len(names) > 1:
        metrics.update(metrics_by_objective(names, choice, loss_sum, count))
    return loss, metrics
