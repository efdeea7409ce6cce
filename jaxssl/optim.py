"""Optax optimizers and schedules from config.

The peak learning rate is `base_lr` scaled by the global batch size
(`linear`: batch/256 as in SimCLR/MoCo/MAE, `sqrt`: sqrt(batch)), reached
after a linear warm-up and followed by cosine decay (or held constant).
Weight decay, and LARS trust-ratio scaling, apply to kernels and embedding tables
only: not to biases (whatever their rank), normalisation scales, a ViT's learned tokens
or its position table (`decay_mask`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


def peak_learning_rate(optim_config: Mapping[str, Any], batch_size: int) -> float:
    """base_lr scaled for the global batch size."""
    scale = {"linear": batch_size / 256, "sqrt": math.sqrt(batch_size), "none": 1.0}
    return optim_config["base_lr"] * scale[optim_config["lr_scaling"]]


def learning_rate_schedule(optim_config: Mapping[str, Any], total_steps: int,
                           batch_size: int) -> optax.Schedule:
    """Linear warm-up from 0, then cosine decay to end_lr_ratio * peak (or constant)."""
    peak = peak_learning_rate(optim_config, batch_size)
    warmup = min(optim_config["warmup_steps"], total_steps)
    if optim_config["schedule"] == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=peak, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=peak * optim_config["end_lr_ratio"])
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, max(warmup, 1)), optax.constant_schedule(peak)],
        boundaries=[warmup])


# The module `nn.scan` makes of a scanned stack (models.vit.Encoder, models.transformer):
# its parameters carry a leading layer axis.
SCANNED_BLOCKS = "blocks"


def _dict_keys(path) -> list:
    """The dict keys of a tree path (None for other path entries)."""
    return [getattr(k, "key", None) for k in path]


# Parameters never decayed, by leaf name, whatever their rank: a ViT's class and mask
# tokens, its MAP head's probe, its learned position table and PaLI-X's per-frame
# embeddings (a position table over frames), as timm's
# `no_weight_decay()` and big_vision (which decays kernels only) leave them (MAE's
# pretraining code decays its [1, 1, D] tokens only because it judges by rank). A text
# Transformer's token and position tables stay decayed, as nanoGPT and GPT-2 decay them.
NOT_DECAYED = frozenset({"cls_token", "mask_token", "probe", "pos_embedding", "frame_embedding"})


def _decays(path, p) -> bool:
    """Whether the parameter at dict-key `path` gets weight decay: more than one dimension
    per layer (kernels and embeddings, not normalisation scales), no bias of any rank
    (a fused q/k/v bias is [3, heads, Dh]; T5's relative-position table is a bias too) and
    not in NOT_DECAYED."""
    keys = [k for k in _dict_keys(path) if k is not None]   # (a boxed leaf ends in .value)
    name = keys[-1] if keys else ""
    if name.endswith("bias") or name in NOT_DECAYED:
        return False
    return p.ndim - (SCANNED_BLOCKS in keys) > 1


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay (`_decays`): the same for a scanned stack
    as for its blocks unscanned."""
    return jax.tree_util.tree_map_with_path(_decays, params)


def decay_mask_without(module: str) -> Callable[[Any], Any]:
    """`decay_mask` with every parameter under a dict key `module` (at any depth) excluded.

    E.g. 'patch_embedding': a ViT's frozen patch projection (`model.frozen_patch_embed`),
    which gets zero gradients, so that decay alone would shrink it (MoCo v3's reference
    code does not decay it: requires_grad=False).
    """
    def mask(params: Any) -> Any:
        def leaf(path, p):
            return _decays(path, p) and module not in _dict_keys(path)
        return jax.tree_util.tree_map_with_path(leaf, params)

    return mask


def optimizer_with_schedule(optim_config: Mapping[str, Any], lr: optax.Schedule,
                            mask: Callable[[Any], Any] = decay_mask,
                            start_steps: "StartStepsFn | None" = None
                            ) -> optax.GradientTransformation:
    """The config's optimizer (name, weight decay, clipping) driven by the schedule `lr`.

    `optim_config['moments_dtype']` is the dtype of AdamW's first moment and
    SGD's momentum. `mask(params)` -> bool tree: the parameters that get weight decay (and
    LARS trust-ratio scaling). `start_steps`: for an optimizer the caller wraps in
    `train_from` with these start steps; AdamW then counts its bias correction from them.
    """
    name, wd = optim_config["name"], optim_config["weight_decay"]
    # bfloat16 halves the first moment (AdamW) or the momentum (SGD); AdamW's second
    # moment stays float32, as optax's mu_dtype and MaxText keep it.
    moments_dtype = ({"float32": None, "bfloat16": jnp.bfloat16}  # None: the params' dtype
                     [optim_config.get("moments_dtype", "float32")])
    if name == "adamw" and start_steps is not None:
        tx = optax.chain(
            scale_by_adam_from(start_steps, optim_config["b1"], optim_config["b2"],
                               optim_config["eps"], moments_dtype),
            optax.add_decayed_weights(wd, mask), optax.scale_by_learning_rate(lr))
    elif name == "adamw":
        tx = optax.adamw(lr, b1=optim_config["b1"], b2=optim_config["b2"], eps=optim_config["eps"],
                         weight_decay=wd, mask=mask, mu_dtype=moments_dtype)
    elif name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(wd, mask=mask),
                         optax.sgd(lr, momentum=optim_config["momentum"],
                                   accumulator_dtype=moments_dtype))
    elif name == "lars":
        tx = optax.lars(lr, weight_decay=wd, weight_decay_mask=mask,
                        trust_coefficient=optim_config["lars_trust_coefficient"],
                        eps=0.0, trust_ratio_mask=mask, momentum=optim_config["momentum"])
    else:
        raise ValueError(f"unknown optimizer '{name}' (adamw, sgd, lars)")
    if optim_config["clip_grad_norm"] > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim_config["clip_grad_norm"]), tx)
    return tx


# ----------------------------------------------------------------------------
# Fine-tuning: per-layer learning rates, freezing, L2-SP
# ----------------------------------------------------------------------------
# A "tree function" below maps a tree of updates (or parameters) to a tree of
# the same structure whose leaves are numbers or numpy arrays broadcastable to
# the leaf (e.g. [depth, 1, ...] for blocks stacked on a leading axis). It is
# called with the structure only, at trace time, so the result is static.

TreeFn = Callable[[Any], Any]


def layer_decay_scales(layer_ids: Any, decay: float, top_layer: int) -> Any:
    """Learning-rate scale decay ** (top_layer - layer id) per leaf (1 at the top layer).

    `layer_ids`: tree of int layer ids in [0, top_layer] (numbers or int arrays).
    Returns float32 numpy scales of the same structure.
    """
    return jax.tree.map(
        lambda ids: np.float32(decay) ** (top_layer - np.asarray(ids)).astype(np.float32),
        layer_ids)


def unfreeze_open_steps(layer_ids: Any, top_layer: int, every_steps: int, start: int = 0) -> Any:
    """Gradual unfreezing from the top: layer l opens at start + (top_layer - l) * every_steps."""
    return jax.tree.map(lambda ids: start + (top_layer - np.asarray(ids)) * every_steps, layer_ids)


def scale_updates_per_leaf(scales_fn: TreeFn) -> optax.GradientTransformation:
    """Multiplies every update leaf by its scale from `scales_fn(updates)`.

    Chained after an optimizer this scales each parameter's learning rate
    (and, for decoupled weight decay, its decay step with it): layer-wise
    learning-rate decay.
    """
    def update(updates, state, params=None):
        del params
        scaled = jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales_fn(updates))
        return scaled, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


# A "start-steps function" (count, updates) -> tree like the updates of int32 arrays
# broadcastable to the leaves: the step at which each element's optimizer state last
# started (`train_from`); called inside the update with the traced step count.
StartStepsFn = Callable[[jax.Array, Any], Any]


class StartState(NamedTuple):
    count: jax.Array  # int32 scalar: updates applied so far
    inner: Any        # the wrapped optimizer's state


def _is_like(tree: Any, treedef) -> bool:
    return not isinstance(tree, (jax.Array, np.ndarray)) and jax.tree.structure(tree) == treedef


def train_from(tx: optax.GradientTransformation,
               start_steps: StartStepsFn) -> optax.GradientTransformation:
    """`tx` as if each parameter element got a fresh optimizer at its start step.

    The update with 0-based index `count` treats an element whose start step s is
    > count as frozen: `tx` sees a zero gradient for it (so it adds nothing to
    momenta or to the global gradient norm) and its update is exactly zero (no weight
    decay either), so an element with start step s first changes at optimizer step
    s + 1. At count == s its slices of `tx`'s parameter-shaped state (Adam's moments,
    SGD's momentum) restart from zero. Adam also needs its bias correction counted
    from s: build it with `optimizer_with_schedule(..., start_steps=)`.
    """
    def init(params):
        return StartState(count=jnp.zeros((), jnp.int32), inner=tx.init(params))

    def update(updates, state, params=None):
        count = state.count
        starts = start_steps(count, updates)
        started = jax.tree.map(lambda s: count >= s, starts)
        only_started = lambda tree: jax.tree.map(
            lambda u, on: jnp.where(on, u, jnp.zeros_like(u)), tree, started)
        treedef = jax.tree.structure(updates)

        def restart(tree):
            if not _is_like(tree, treedef):
                return tree
            return jax.tree.map(lambda x, s: jnp.where(count == s, jnp.zeros_like(x), x),
                                tree, starts)

        inner = jax.tree.map(restart, state.inner, is_leaf=lambda t: _is_like(t, treedef))
        new, inner = tx.update(only_started(updates), inner, params)
        return only_started(new), StartState(count=count + 1, inner=inner)

    return optax.GradientTransformation(init, update)


def scale_by_adam_from(start_steps: StartStepsFn, b1: float, b2: float, eps: float,
                       mu_dtype=None) -> optax.GradientTransformation:
    """optax.scale_by_adam with each element's bias correction counted from its start
    step s: 1 - b ** (count - s + 1), as a fresh Adam would count. Its moments must
    restart at s too: chain it inside `train_from` with the same `start_steps`. The state
    is optax's ScaleByAdamState; with every start step 0 the updates are optax's."""
    def init(params):
        return optax.ScaleByAdamState(
            count=jnp.zeros((), jnp.int32),
            mu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype=mu_dtype or p.dtype), params),
            nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda g, m: b1 * m + (1 - b1) * g, updates, state.mu)
        nu = jax.tree.map(lambda g, v: b2 * v + (1 - b2) * jnp.square(g), updates, state.nu)

        def corrected(m, v, s):
            steps = jnp.maximum(state.count + 1 - s, 1).astype(jnp.float32)
            return (m / (1 - b1 ** steps)) / (jnp.sqrt(v / (1 - b2 ** steps)) + eps)

        new = jax.tree.map(corrected, mu, nu, start_steps(state.count, updates))
        mu = jax.tree.map(lambda m, p: m.astype(mu_dtype or p.dtype), mu, state.mu)
        return new, optax.ScaleByAdamState(count=state.count + 1, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


NEVER = np.iinfo(np.int32).max  # the start step of a parameter that never trains


def freeze_parts(tx: optax.GradientTransformation, parts) -> optax.GradientTransformation:
    """`tx` with the top-level parameter subtrees named in `parts` frozen (`train_from`
    with start step NEVER), so those parameters stay bitwise as they started; `tx` itself
    when `parts` is empty."""
    parts = frozenset(parts)
    if not parts:
        return tx
    starts = lambda count, params: {
        part: jax.tree.map(lambda _: NEVER if part in parts else 0, tree)
        for part, tree in params.items()}
    return train_from(tx, starts)


def cap_parameters(tx: optax.GradientTransformation,
                   caps: Mapping[str, float]) -> optax.GradientTransformation:
    """`tx` with the top-level parameters named in `caps` held at or below their cap, as a
    clamp of the parameter after each step would hold them: where p + u would pass the
    cap, the update becomes cap - p (exact for p within a factor 2 of the cap, so the
    parameter lands on the cap; one above it, e.g. imported, comes down to it). A parameter
    held at its cap still gets its gradient, so it can come back down. Every other update is
    `tx`'s, bitwise; `tx` itself when `caps` is empty."""
    if not caps:
        return tx

    def update(updates, state, params=None):
        updates, state = tx.update(updates, state, params)
        capped = {name: jnp.where(params[name] + updates[name] > cap, cap - params[name],
                                  updates[name])
                  for name, cap in caps.items()}
        return {**updates, **capped}, state

    return optax.GradientTransformation(tx.init, update)


def stop_gradient_parts(params: Mapping[str, Any], parts) -> dict:
    """`params` with stop_gradient on the top-level subtrees named in `parts`: a frozen
    part then costs no weight-gradient computation."""
    return {part: jax.lax.stop_gradient(tree) if part in parts else tree
            for part, tree in params.items()}


def l2sp_penalty(params: Any, anchor: Any, weight: float) -> jax.Array:
    """L2-SP (Li et al. 2018): weight / 2 * sum of squared distances to `anchor` (float32 scalar).

    `params` and `anchor` are trees of the same structure (e.g. the encoder
    and its pretrained weights).
    """
    squares = jax.tree.map(lambda p, a: jnp.sum(jnp.square(p.astype(jnp.float32) - a)),
                           params, anchor)
    return 0.5 * weight * sum(jax.tree.leaves(squares), jnp.zeros((), jnp.float32))
