"""The train state, the train step, and the check that its numbers stay finite."""

from __future__ import annotations

import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from jaxssl.errors import DivergedError

# Metrics every step reports that must stay finite (see `check_finite`).
GUARDED_METRICS = ("loss", "grad_norm", "param_norm")


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    method_state: Any        # non-gradient collections (batch stats, EMA encoders)
    rng: jax.Array           # base key; step s uses fold_in(rng, s)


def _mean_over_microbatches(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), tree)


def make_train_step(method, tx: optax.GradientTransformation, grad_accum_steps: int,
                    schedule: optax.Schedule):
    """Returns train_step(state, batch) -> (state, metrics), not yet jitted.

    With `grad_accum_steps` = A > 1 the global batch of B is split into A
    micro-batches of B/A (example j goes to micro-batch j mod A, so every
    device holds an equal share of each), gradients and metrics are averaged
    and the method state is threaded through the micro-batches in order.
    Contrastive negatives then come from within each micro-batch.

    Besides the method's metrics: 'grad_norm' (global L2 norm of the
    gradients), 'param_norm' (of the updated parameters) and 'lr'.
    """
    grad_fn = jax.value_and_grad(method.loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        rng = jax.random.fold_in(state.rng, state.step)
        if grad_accum_steps == 1:
            (_, (metrics, method_state)), grads = grad_fn(
                state.params, state.method_state, batch, rng, state.step)
        else:
            micro = jax.tree.map(
                lambda x: jnp.swapaxes(
                    x.reshape((x.shape[0] // grad_accum_steps, grad_accum_steps) + x.shape[1:]),
                    0, 1), batch)

            def accumulate(method_state, inputs):
                index, micro_batch = inputs
                (_, (m, new_state)), g = grad_fn(state.params, method_state, micro_batch,
                                                 jax.random.fold_in(rng, index), state.step)
                return new_state, (g, m)

            method_state, (grads, metrics) = jax.lax.scan(
                accumulate, state.method_state, (jnp.arange(grad_accum_steps), micro))
            grads, metrics = _mean_over_microbatches(grads), _mean_over_microbatches(metrics)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  method_state=method_state)
        metrics = {**metrics, "grad_norm": optax.global_norm(grads),
                   "param_norm": optax.global_norm(params), "lr": schedule(state.step)}
        return new_state, metrics

    return train_step


def check_finite(step: int, metrics: dict) -> None:
    """DivergedError naming `step` and the values if a guarded metric is not finite.

    `metrics` are one step's metrics (device arrays are fetched here).
    """
    values = {name: float(jax.device_get(metrics[name])) for name in GUARDED_METRICS}
    if all(math.isfinite(value) for value in values.values()):
        return
    shown = ", ".join(f"{name}={value:.6g}" for name, value in values.items())
    raise DivergedError(f"training diverged at step {step}: {shown}; its state was not saved "
                        f"(lower optim.base_lr, or set stop_on_nonfinite=False to train on)")
