"""Optax optimizers and schedules from config.

The peak learning rate is `base_lr` scaled by the global batch size
(`linear`: batch/256 as in SimCLR/MoCo/MAE, `sqrt`: sqrt(batch)), reached
after a linear warm-up and followed by cosine decay (or held constant).
Weight decay, and LARS trust-ratio scaling, skip 1-D parameters (biases and
normalisation scales).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax
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


def decay_mask(params: Any) -> Any:
    """True for parameters that get weight decay: kernels and embeddings, not 1-D."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def build_optimizer(optim_config: Mapping[str, Any], total_steps: int,
                    batch_size: int) -> optax.GradientTransformation:
    """The optax transformation the config describes (with clipping if asked)."""
    lr = learning_rate_schedule(optim_config, total_steps, batch_size)
    name, wd = optim_config["name"], optim_config["weight_decay"]
    if name == "adamw":
        tx = optax.adamw(lr, b1=optim_config["b1"], b2=optim_config["b2"], eps=optim_config["eps"],
                         weight_decay=wd, mask=decay_mask)
    elif name == "sgd":
        tx = optax.chain(optax.add_decayed_weights(wd, mask=decay_mask),
                         optax.sgd(lr, momentum=optim_config["momentum"]))
    elif name == "lars":
        tx = optax.lars(lr, weight_decay=wd, weight_decay_mask=decay_mask,
                        trust_coefficient=optim_config["lars_trust_coefficient"],
                        eps=0.0, trust_ratio_mask=decay_mask, momentum=optim_config["momentum"])
    else:
        raise ValueError(f"unknown optimizer '{name}' (adamw, sgd, lars)")
    if optim_config["clip_grad_norm"] > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim_config["clip_grad_norm"]), tx)
    return tx
