"""Validation loss, perplexity and bits per character over a whole split."""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from jaxssl import parallel
from jaxssl.data import pipeline
from jaxssl.evaluate.representation import eval_batch_size

LossSumsFn = Callable[[Any, dict], tuple[jax.Array, jax.Array, jax.Array]]
NOISE_SEED = 0  # masks and noise of every evaluation, so evaluations compare across steps


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

    loss_sums_fn(variables, batch) -> (nll_sum, num_tokens, num_chars), each
    float32 [B] per example; it is called on global batches (jit it). Sums
    are accumulated in float64 on the host; padding records do not count.
    """
    return perplexity_metrics(*split_sums(loss_sums_fn, 3, variables, source, mesh,
                                          batch_size, limit))


def split_sums(sums_fn: Callable, num_sums: int, variables: Any, source, mesh: Mesh,
               batch_size: int, limit: int = 0) -> np.ndarray:
    """float64 [num_sums]: the totals over the first `limit` records of `source` (0 = all
    of them) of the per-example values sums_fn(variables, batch) -> `num_sums` arrays
    float32 [B], called on global batches (jit it); padding records do not count."""
    batch_size = eval_batch_size(batch_size, mesh)
    totals = np.zeros(num_sums, np.float64)
    for local, valid in pipeline.eval_batches(source, batch_size, jax.process_index(),
                                              jax.process_count(), limit):
        batch = parallel.host_batch_to_global({**local, "valid": valid}, mesh)
        sums = sums_fn(variables, batch)
        gathered = multihost_utils.process_allgather(
            {"sums": sums, "valid": batch["valid"]}, tiled=True)
        keep = np.asarray(gathered["valid"], np.float64)
        totals += [np.sum(np.asarray(s, np.float64) * keep) for s in gathered["sums"]]
    return totals
