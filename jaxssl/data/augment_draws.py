"""Turning uniform draws into augmentation decisions and values, shared by the
geometric (`augment_geometry`) and photometric (`augment_colour`) augmentations."""
from typing import Callable

import jax
import jax.numpy as jnp


def apply_with_prob(coin: jax.Array, prob: float, transform: Callable, image: jax.Array) -> jax.Array:
    """`transform(image)` when the uniform draw `coin` (in [0, 1)) is below prob, otherwise `image`.

    When prob is the Python number 0 the transform is not traced at all, so a
    disabled stage costs nothing in the compiled step.
    """
    if isinstance(prob, (int, float)) and prob == 0:
        return image
    return jnp.where(coin < prob, transform(image), image)


def lerp(low: float, high: float, fraction: jax.Array) -> jax.Array:
    """Maps uniform draws in [0, 1) to [low, high)."""
    return low + (high - low) * fraction
