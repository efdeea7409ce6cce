"""Geometric augmentations of one float32 image [H, W, C] in [0, 1]: torchvision's
RandomResizedCrop (as two interpolation matmuls, static shapes) and a random flip.

Per-image functions take a PRNG key and the image; see `jaxssl.data.augment`
for how they are batched and combined.
"""
import math

import jax
import jax.numpy as jnp
from jax import lax

from jaxssl.data.augment_draws import apply_with_prob, lerp


# ----------------------------------------------------------------------------
# Random resized crop
# ----------------------------------------------------------------------------


def _central_crop_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback crop: the whole image, clamped to the ratio range (width / height)."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def _random_offset(fraction: jax.Array, max_offset: jax.Array) -> jax.Array:
    """Maps a uniform draw in [0, 1) to an integer uniform in {0, ..., max_offset}."""
    return jnp.minimum(jnp.floor(fraction * (max_offset + 1)).astype(jnp.int32), max_offset)


def sample_crop_box(
    key: jax.Array,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    num_tries: int = 10,
) -> jax.Array:
    """Samples a torchvision RandomResizedCrop box for a height x width image.

    Each of `num_tries` vectorised tries draws an area fraction uniformly in
    `scale` and an aspect ratio (width / height) log-uniformly in `ratio`,
    rounded to whole pixels; the first try that fits in the image wins and is
    placed uniformly at random. If none fits, the central crop clamped to the
    ratio range is used.

    Returns int32 [4]: (top, left, crop_height, crop_width) in pixels.
    """
    draws = jax.random.uniform(key, (2 * num_tries + 2,))
    target_area = height * width * lerp(scale[0], scale[1], draws[:num_tries])
    aspect = jnp.exp(lerp(math.log(ratio[0]), math.log(ratio[1]), draws[num_tries:2 * num_tries]))
    try_w = jnp.round(jnp.sqrt(target_area * aspect)).astype(jnp.int32)
    try_h = jnp.round(jnp.sqrt(target_area / aspect)).astype(jnp.int32)
    fits = (try_w >= 1) & (try_w <= width) & (try_h >= 1) & (try_h <= height)
    first = jnp.argmax(fits)
    found = fits[first]
    fallback_h, fallback_w = _central_crop_size(height, width, ratio)
    crop_h = jnp.where(found, try_h[first], fallback_h)
    crop_w = jnp.where(found, try_w[first], fallback_w)
    top = jnp.where(found, _random_offset(draws[-2], height - crop_h), (height - crop_h) // 2)
    left = jnp.where(found, _random_offset(draws[-1], width - crop_w), (width - crop_w) // 2)
    return jnp.stack([top, left, crop_h, crop_w]).astype(jnp.int32)


def _interpolation_matrix(start: jax.Array, length: jax.Array, in_size: int, out_size: int,
                          antialias: bool) -> jax.Array:
    """Linear-interpolation weights [out_size, in_size] resampling one axis.

    Maps the pixel window [start, start + length) onto out_size pixels with the
    pixel-centre convention (align_corners=False): output pixel o samples the
    source coordinate start + (o + 0.5) * length / out_size - 0.5. Weights are
    a triangle filter, widened by the downscale factor when `antialias`, zero
    outside the window and normalised per row, which equals
    jax.image.resize(..., 'linear') of the cropped window.
    """
    start = start.astype(jnp.float32)
    step = length.astype(jnp.float32) / out_size
    centres = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * step - 0.5
    support = jnp.maximum(step, 1.0) if antialias else 1.0
    pixels = jnp.arange(in_size, dtype=jnp.float32)
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(pixels[None, :] - centres[:, None]) / support)
    in_window = (pixels >= start) & (pixels < start + length)
    weights = jnp.where(in_window[None, :], weights, 0.0)
    return weights / jnp.sum(weights, axis=1, keepdims=True)


def crop_and_resize(image: jax.Array, box: jax.Array, out_size: int, antialias: bool = True) -> jax.Array:
    """Bilinear resize of the crop `box` of `image` to out_size x out_size, in one sampling pass.

    image: float32 [H, W, C]; box: int [4] = (top, left, crop_height, crop_width).
    The crop is never materialised: two dense interpolation matrices
    [out, H] and [out, W] are applied as matmuls, so shapes stay static and
    there are no gathers. Returns float32 [out_size, out_size, C].
    """
    height, width, _ = image.shape
    top, left, crop_h, crop_w = box[0], box[1], box[2], box[3]
    rows = _interpolation_matrix(top, crop_h, height, out_size, antialias)
    cols = _interpolation_matrix(left, crop_w, width, out_size, antialias)
    return jnp.einsum('oh,hwc,pw->opc', rows, image, cols, precision=lax.Precision.HIGHEST)


def random_resized_crop(
    key: jax.Array,
    image: jax.Array,
    out_size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    antialias: bool = True,
) -> jax.Array:
    """torchvision/SimCLR RandomResizedCrop of one image [H, W, C] -> [out_size, out_size, C].

    scale: range of the crop's area as a fraction of the image; ratio: range of
    its aspect ratio (width / height). See `sample_crop_box`, `crop_and_resize`.
    """
    height, width, _ = image.shape
    box = sample_crop_box(key, height, width, scale, ratio)
    return crop_and_resize(image, box, out_size, antialias)


def horizontal_flip(key: jax.Array, image: jax.Array, prob: float = 0.5) -> jax.Array:
    """Mirrors image [H, W, C] left-right with probability prob."""
    return apply_with_prob(jax.random.uniform(key), prob, lambda x: x[:, ::-1], image)
