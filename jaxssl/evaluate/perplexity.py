"""Validation loss, perplexity and bits per character over a whole split."""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from jaxssl.evaluate.representation import gather_split

LossSumsFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


def perplexity_metrics(nll_sum: float, num_tokens: float, num_chars: float) -> dict[str, float]:
    """From summed negative log-likelihood (nats) over `num_tokens` target tokens
    spelling `num_chars` characters: mean loss (nats/token), perplexity
    exp(loss), bits per character nll_sum / (ln 2 * num_chars), and the counts."""
    loss = nll_sum / max(num_tokens, 1.0)
    return {"loss": loss, "perplexity": math.exp(loss),
            "bits_per_char": nll_sum / (math.log(2.0) * max(num_chars, 1.0)),
            "tokens": float(num_tokens), "chars": float(num_chars)}


def evaluate_perplexity(loss_sums_fn: LossSumsFn, variables: Any, source, mesh: Mesh,
                        batch_size: int, limit: int = 0) -> dict[str, float]:
    """`perplexity_metrics` over the first `limit` records of `source` (0 = all of them).

    loss_sums_fn(variables, batch, rng) -> (nll_sum, num_tokens, num_chars), each
    float32 [B] per example; it is called on global batches with each batch's key for
    masks and noise (`gather_split`; jit it). Sums are accumulated in float64 on the
    host; padding records do not count.
    """
    return perplexity_metrics(*split_sums(loss_sums_fn, variables, source, mesh, batch_size,
                                          limit))


def split_sums(sums_fn: Callable, variables: Any, source, mesh: Mesh, batch_size: int,
               limit: int = 0) -> np.ndarray:
    """float64 [K]: the totals over the first `limit` records of `source` (0 = all of
    them) of the K per-example values sums_fn(variables, batch, rng) -> K arrays float32
    [B], called as `gather_split`'s batch_fn (jit it); padding records do not count."""
    rows = gather_split(lambda v, batch, rng: dict(enumerate(sums_fn(v, batch, rng))),
                        variables, source, mesh, batch_size, limit)
    return np.array([np.sum(rows[k], dtype=np.float64) for k in sorted(rows)])
