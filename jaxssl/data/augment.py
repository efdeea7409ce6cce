"""On-device image augmentations for self-supervised views, in pure jax.numpy.

Every per-image function takes a PRNG key and one float32 image [H, W, C]
with values in [0, 1] (C = 1 or 3) and returns a float32 image in [0, 1].
Shapes are static and nothing branches in Python on traced values, so the
functions vmap over per-example keys (`map_per_example`) and run inside a
jitted train step. On a 1-channel image the colour ops are well defined:
saturation and hue leave it unchanged and grayscale is the identity.

The ops live in `augment_geometry` (crop, flip) and `augment_colour`
(colour jitter, grayscale, blur, solarize); this module holds the recipe
and the pipeline. `augment_batch` applies the SimCLR pipeline
crop -> flip -> colour jitter -> grayscale -> blur -> solarize
to a batch, one key per example, driven by an `AugmentRecipe`.
"""
import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.data.augment_colour import color_jitter, gaussian_blur, random_grayscale, solarize
from jaxssl.data.augment_geometry import horizontal_flip, random_resized_crop

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
