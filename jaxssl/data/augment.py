"""On-device image augmentations for self-supervised views, in pure jax.numpy.

Every per-image function takes a PRNG key and one float32 image [H, W, C]
with values in [0, 1] (C = 1 or 3) and returns a float32 image in [0, 1].
Shapes are static and nothing branches in Python on traced values, so the
functions vmap over per-example keys (`map_per_example`) and run inside a
jitted train step. On a 1-channel image the colour ops are well defined:
saturation and hue leave it unchanged and grayscale is the identity.

`augment_batch` applies the SimCLR pipeline
crop -> flip -> colour jitter -> grayscale -> blur -> solarize
to a batch, one key per example, driven by an `AugmentRecipe`.
"""
import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

# ITU-R BT.601 luma weights for (R, G, B).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

PerImageFn = Callable[[jax.Array, jax.Array], jax.Array]


# ----------------------------------------------------------------------------
# Conversion and batching helpers
# ----------------------------------------------------------------------------


def to_float(images: jax.Array) -> jax.Array:
    """uint8 images [..., H, W, C] in [0, 255] -> float32 in [0, 1]."""
    return jnp.asarray(images, jnp.float32) / 255.0


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """Per-channel standardisation (images - mean) / std.

    images: float [..., C]; mean, std: C values (or scalars) in the images' units.
    Returns float32 of the same shape.
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (jnp.asarray(images, jnp.float32) - mean) / std


def map_per_example(fn: PerImageFn, key: jax.Array, images: jax.Array) -> jax.Array:
    """Batch version of a per-image augmentation: `fn(key_i, images[i])` for every i.

    fn: (key, image [H, W, C]) -> image; bind other arguments with functools.partial.
    images: [B, H, W, C]. The key is split into B independent per-example keys.
    """
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(fn)(keys, images)


def _apply_with_prob(coin: jax.Array, prob: float, transform: Callable, image: jax.Array) -> jax.Array:
    """`transform(image)` when the uniform draw `coin` (in [0, 1)) is below prob, otherwise `image`.

    When prob is the Python number 0 the transform is not traced at all, so a
    disabled stage costs nothing in the compiled step.
    """
    if isinstance(prob, (int, float)) and prob == 0:
        return image
    return jnp.where(coin < prob, transform(image), image)


def _lerp(low: float, high: float, fraction: jax.Array) -> jax.Array:
    """Maps uniform draws in [0, 1) to [low, high)."""
    return low + (high - low) * fraction


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
    target_area = height * width * _lerp(scale[0], scale[1], draws[:num_tries])
    aspect = jnp.exp(_lerp(math.log(ratio[0]), math.log(ratio[1]), draws[num_tries:2 * num_tries]))
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
    return _apply_with_prob(jax.random.uniform(key), prob, lambda x: x[:, ::-1], image)


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
    return _lerp(jnp.maximum(0.0, 1.0 - strength), 1.0 + strength, fraction)


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
            hue_delta=_lerp(-hue, hue, draws[4]),
            order=jnp.argsort(draws[5:]),  # a uniformly random permutation of the 4 ops
        )

    return _apply_with_prob(draws[0], prob, jitter, image)


def random_grayscale(key: jax.Array, image: jax.Array, prob: float = 0.2) -> jax.Array:
    """Replaces image [H, W, C] by its luma replicated to C channels with probability prob."""
    to_gray = lambda x: jnp.broadcast_to(rgb_to_grayscale(x), x.shape)
    return _apply_with_prob(jax.random.uniform(key), prob, to_gray, image)


def solarize(key: jax.Array, image: jax.Array, prob: float = 0.0, threshold: float = 0.5) -> jax.Array:
    """With probability prob, pixels >= threshold become 1 - pixel."""
    return _apply_with_prob(jax.random.uniform(key), prob, lambda x: jnp.where(x >= threshold, 1.0 - x, x), image)


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
    sampled_sigma = _lerp(sigma[0], sigma[1], sigma_fraction)
    return _apply_with_prob(coin, prob, lambda x: blur_with_sigma(x, sampled_sigma, kernel_size), image)


# ----------------------------------------------------------------------------
# Recipe and pipeline
# ----------------------------------------------------------------------------

_RANGE_FIELDS = ('crop_scale', 'crop_ratio', 'blur_sigma')
_PROB_FIELDS = ('flip_prob', 'jitter_prob', 'grayscale_prob', 'blur_prob', 'solarize_prob')


@dataclasses.dataclass(frozen=True)
class AugmentRecipe:
    """Parameters of the crop -> flip -> jitter -> grayscale -> blur -> solarize pipeline.

    Defaults are SimCLR's (colour jitter strength 1). Ranges are (low, high)
    tuples: crop_scale is a fraction of the image area, crop_ratio a width /
    height aspect ratio, blur_sigma in pixels. brightness, contrast,
    saturation and hue are ColorJitter strengths (hue in turns).
    """
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0

    def __post_init__(self):
        for name in _RANGE_FIELDS:
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f'augment {name} must satisfy 0 < low <= high, got {(low, high)}')
        for name in _PROB_FIELDS:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f'augment {name} must be in [0, 1], got {getattr(self, name)}')
        for name in ('brightness', 'contrast', 'saturation'):
            if getattr(self, name) < 0:
                raise ValueError(f'augment {name} must be >= 0, got {getattr(self, name)}')
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f'augment hue must be in [0, 0.5], got {self.hue}')

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | ml_collections.ConfigDict) -> 'AugmentRecipe':
        """Builds a recipe from a ConfigDict or mapping; missing keys keep the SimCLR defaults.

        Raises ValueError naming any key that is not a recipe field.
        """
        values = dict(config.items())
        field_names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - field_names)
        if unknown:
            raise ValueError(f'unknown augment config key(s) {unknown}; valid keys are {sorted(field_names)}')
        return cls(**{name: tuple(float(v) for v in value) if name in _RANGE_FIELDS else float(value)
                      for name, value in values.items()})


SIMCLR_RECIPE = AugmentRecipe()


def default_recipe_config() -> ml_collections.ConfigDict:
    """ConfigDict holding the SIMCLR_RECIPE values, one key per AugmentRecipe field."""
    return ml_collections.ConfigDict(dataclasses.asdict(SIMCLR_RECIPE))


def augment_image(key: jax.Array, image: jax.Array, recipe: AugmentRecipe, out_size: int) -> jax.Array:
    """The recipe's pipeline on one float32 image [H, W, C] in [0, 1] -> [out_size, out_size, C]."""
    crop_key, flip_key, jitter_key, gray_key, blur_key, solarize_key = jax.random.split(key, 6)
    image = random_resized_crop(crop_key, image, out_size, recipe.crop_scale, recipe.crop_ratio)
    image = horizontal_flip(flip_key, image, recipe.flip_prob)
    image = color_jitter(jitter_key, image, recipe.brightness, recipe.contrast, recipe.saturation,
                         recipe.hue, recipe.jitter_prob)
    image = random_grayscale(gray_key, image, recipe.grayscale_prob)
    image = gaussian_blur(blur_key, image, recipe.blur_prob, recipe.blur_sigma)
    return solarize(solarize_key, image, recipe.solarize_prob)


def augment_batch(key: jax.Array, images: jax.Array, recipe: AugmentRecipe, out_size: int) -> jax.Array:
    """One augmented view of every image: float32 [B, H, W, C] in [0, 1] -> [B, out_size, out_size, C].

    Each example gets its own key split from `key`. recipe and out_size are
    static (close over them or mark them static under jit).
    """
    return map_per_example(functools.partial(augment_image, recipe=recipe, out_size=out_size), key, images)
