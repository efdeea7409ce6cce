"""Photometric augmentations of one float32 image [H, W, C] in [0, 1] (C = 1 or 3):
colour jitter, grayscale, solarize and Gaussian blur, with torchvision semantics.

Per-image functions take a PRNG key and the image and return a float32 image
in [0, 1]; the explicit-factor ops (`adjust_*`, `blur_with_sigma`) take no
key. On a 1-channel image the colour ops are well defined: saturation and
hue leave it unchanged and grayscale is the identity.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxssl.data.augment_draws import apply_with_prob, lerp

# ITU-R BT.601 luma weights for (R, G, B).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------
# Colour: per-op functions with explicit factors (torchvision semantics)
# ----------------------------------------------------------------------------


def rgb_to_grayscale(image: jax.Array) -> jax.Array:
    """Luma of image [..., C] -> [..., 1]; a 1-channel image is returned unchanged."""
    if image.shape[-1] == 1:
        return image
    return jnp.sum(image * jnp.asarray(LUMA_WEIGHTS, image.dtype), axis=-1, keepdims=True)


def _blend(image: jax.Array, other: jax.Array, factor: jax.Array) -> jax.Array:
    """factor * image + (1 - factor) * other, clipped to [0, 1]."""
    return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def adjust_brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
    """image * factor, clipped to [0, 1]. factor >= 0 (1 = identity)."""
    return jnp.clip(image * factor, 0.0, 1.0)


def adjust_contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Blend of image [H, W, C] with the mean of its grayscale (1 = identity), clipped."""
    return _blend(image, jnp.mean(rgb_to_grayscale(image)), factor)


def adjust_saturation(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Blend of image [H, W, C] with its grayscale (1 = identity, 0 = gray), clipped; no-op for C = 1."""
    if image.shape[-1] == 1:
        return image
    return _blend(image, rgb_to_grayscale(image), factor)


def rgb_to_hsv(image: jax.Array) -> jax.Array:
    """RGB [..., 3] in [0, 1] -> HSV [..., 3]; hue in [0, 1) turns, 0 where the pixel is gray."""
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    max_c = jnp.max(image, axis=-1)
    chroma = max_c - jnp.min(image, axis=-1)
    saturation = jnp.where(max_c > 0, chroma / jnp.where(max_c > 0, max_c, 1.0), 0.0)
    safe_chroma = jnp.where(chroma > 0, chroma, 1.0)
    sector = jnp.where(max_c == red, (green - blue) / safe_chroma,
                       jnp.where(max_c == green, 2.0 + (blue - red) / safe_chroma,
                                 4.0 + (red - green) / safe_chroma))
    hue = jnp.where(chroma > 0, jnp.mod(sector / 6.0, 1.0), 0.0)
    return jnp.stack([hue, saturation, max_c], axis=-1)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    """HSV [..., 3] (hue in turns, any real value) -> RGB [..., 3] in [0, 1]."""
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]

    def channel(offset):
        k = jnp.mod(offset + 6.0 * hue, 6.0)
        return value - value * saturation * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)

    return jnp.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def adjust_hue(image: jax.Array, delta: jax.Array) -> jax.Array:
    """Rotates the hue of image [H, W, 3] by delta turns (in [-0.5, 0.5]); no-op for C = 1."""
    if image.shape[-1] == 1:
        return image
    hsv = rgb_to_hsv(image)
    return hsv_to_rgb(hsv.at[..., 0].set(jnp.mod(hsv[..., 0] + delta, 1.0)))


def apply_color_jitter(image: jax.Array, brightness_factor: jax.Array, contrast_factor: jax.Array,
                       saturation_factor: jax.Array, hue_delta: jax.Array, order: jax.Array) -> jax.Array:
    """Applies the four colour ops to image [H, W, C] in the given order.

    order: int [4], a permutation of (0 brightness, 1 contrast, 2 saturation, 3 hue);
    it may be traced (each step is a lax.switch).
    """
    ops = (
        functools.partial(adjust_brightness, factor=brightness_factor),
        functools.partial(adjust_contrast, factor=contrast_factor),
        functools.partial(adjust_saturation, factor=saturation_factor),
        functools.partial(adjust_hue, delta=hue_delta),
    )
    for position in range(len(ops)):
        image = lax.switch(order[position], ops, image)
    return image


def _jitter_factor(fraction: jax.Array, strength: float | jax.Array) -> jax.Array:
    """Maps a uniform draw to a factor in [max(0, 1 - strength), 1 + strength] (torchvision ColorJitter)."""
    return lerp(jnp.maximum(0.0, 1.0 - strength), 1.0 + strength, fraction)


def color_jitter(key: jax.Array, image: jax.Array, brightness: float, contrast: float,
                 saturation: float, hue: float, prob: float = 0.8) -> jax.Array:
    """torchvision ColorJitter on image [H, W, C], applied with probability prob.

    brightness, contrast, saturation: strengths s >= 0, factors uniform in
    [max(0, 1 - s), 1 + s]; hue: strength in [0, 0.5], shift uniform in
    [-hue, hue] turns. The four ops run in a random order per call. Strengths
    and prob may be traced scalars (e.g. a strength schedule).
    """
    draws = jax.random.uniform(key, (9,))

    def jitter(x):
        return apply_color_jitter(
            x,
            brightness_factor=_jitter_factor(draws[1], brightness),
            contrast_factor=_jitter_factor(draws[2], contrast),
            saturation_factor=_jitter_factor(draws[3], saturation),
            hue_delta=lerp(-hue, hue, draws[4]),
            order=jnp.argsort(draws[5:]),  # a uniformly random permutation of the 4 ops
        )

    return apply_with_prob(draws[0], prob, jitter, image)


def random_grayscale(key: jax.Array, image: jax.Array, prob: float = 0.2) -> jax.Array:
    """Replaces image [H, W, C] by its luma replicated to C channels with probability prob."""
    to_gray = lambda x: jnp.broadcast_to(rgb_to_grayscale(x), x.shape)
    return apply_with_prob(jax.random.uniform(key), prob, to_gray, image)


def solarize(key: jax.Array, image: jax.Array, prob: float = 0.0, threshold: float = 0.5) -> jax.Array:
    """With probability prob, pixels >= threshold become 1 - pixel."""
    return apply_with_prob(jax.random.uniform(key), prob, lambda x: jnp.where(x >= threshold, 1.0 - x, x), image)


# ----------------------------------------------------------------------------
# Gaussian blur
# ----------------------------------------------------------------------------


def default_blur_kernel_size(height: int, width: int) -> int:
    """SimCLR's kernel size: 10% of the shorter side made odd (23 for 224, 3 for 32, 1 below 20)."""
    return 2 * (min(height, width) // 20) + 1


def gaussian_kernel_1d(sigma: jax.Array, kernel_size: int) -> jax.Array:
    """Normalised Gaussian taps [kernel_size] float32 at offsets -r..r (r = kernel_size // 2), sigma in pixels."""
    radius = kernel_size // 2
    offsets = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    taps = jnp.exp(-0.5 * jnp.square(offsets / sigma))
    return taps / jnp.sum(taps)


def _convolve_reflect(image: jax.Array, taps: jax.Array, axis: int) -> jax.Array:
    """1-D convolution of image along `axis` with symmetric taps [K], 'reflect' padding, same size."""
    radius = taps.shape[0] // 2
    size = image.shape[axis]
    padding = [(0, 0)] * image.ndim
    padding[axis] = (radius, radius)
    padded = jnp.pad(image, padding, mode='reflect')
    return sum(taps[k] * lax.slice_in_dim(padded, k, k + size, axis=axis) for k in range(taps.shape[0]))


def blur_with_sigma(image: jax.Array, sigma: jax.Array, kernel_size: int) -> jax.Array:
    """Separable Gaussian blur of image [H, W, C] (sigma in pixels, odd kernel_size), reflect padding."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'blur kernel_size must be a positive odd integer, got {kernel_size}')
    taps = gaussian_kernel_1d(sigma, kernel_size)
    return _convolve_reflect(_convolve_reflect(image, taps, axis=0), taps, axis=1)


def gaussian_blur(key: jax.Array, image: jax.Array, prob: float = 0.5, sigma: tuple[float, float] = (0.1, 2.0),
                  kernel_size: int | None = None) -> jax.Array:
    """With probability prob, Gaussian blur of image [H, W, C] with sigma uniform in `sigma` (pixels).

    kernel_size defaults to `default_blur_kernel_size` of the image.
    """
    if kernel_size is None:
        kernel_size = default_blur_kernel_size(image.shape[0], image.shape[1])
    coin, sigma_fraction = jax.random.uniform(key, (2,))
    sampled_sigma = lerp(sigma[0], sigma[1], sigma_fraction)
    return apply_with_prob(coin, prob, lambda x: blur_with_sigma(x, sampled_sigma, kernel_size), image)
