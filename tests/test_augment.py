"""Tests for jaxssl.data.augment (and its ops in augment_colour, augment_geometry) against
float64 NumPy references and defining properties."""
import colorsys
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from jaxssl import config as config_lib
from jaxssl.data import augment, augment_colour, augment_geometry
from jaxssl.errors import ConfigError
from jaxssl.methods import base

LUMA = np.array([0.299, 0.587, 0.114])

# The functions under test run jitted, as in the train step: one compile per
# function is much cheaper than op-by-op dispatch, which keeps this file fast.
to_float = jax.jit(augment.to_float)
normalize = jax.jit(augment.normalize)
crop_and_resize = jax.jit(augment_geometry.crop_and_resize, static_argnames=('out_size', 'antialias'))
random_resized_crop = jax.jit(augment_geometry.random_resized_crop, static_argnames=('out_size', 'scale', 'ratio'))
sample_crop_box = jax.jit(augment_geometry.sample_crop_box, static_argnames=('height', 'width', 'scale', 'ratio'))
horizontal_flip = jax.jit(augment_geometry.horizontal_flip, static_argnames='prob')
random_grayscale = jax.jit(augment_colour.random_grayscale, static_argnames='prob')
solarize = jax.jit(augment_colour.solarize, static_argnames=('prob', 'threshold'))
adjust_brightness = jax.jit(augment_colour.adjust_brightness)
adjust_contrast = jax.jit(augment_colour.adjust_contrast)
adjust_saturation = jax.jit(augment_colour.adjust_saturation)
adjust_hue = jax.jit(augment_colour.adjust_hue)
rgb_to_hsv = jax.jit(augment_colour.rgb_to_hsv)
hsv_to_rgb = jax.jit(augment_colour.hsv_to_rgb)
apply_color_jitter = jax.jit(augment_colour.apply_color_jitter)
blur_with_sigma = jax.jit(augment_colour.blur_with_sigma, static_argnames='kernel_size')
gaussian_blur = jax.jit(augment_colour.gaussian_blur, static_argnames=('prob', 'sigma', 'kernel_size'))
augment_batch = jax.jit(augment.augment_batch, static_argnames=('recipe', 'out_size'))


JITTER_KEYS = 32  # one key count for every jitter test, so each image shape compiles once


@jax.jit
def forced_color_jitter_per_key(image, strengths):
    """color_jitter (prob 1) of one image under JITTER_KEYS keys: [JITTER_KEYS, H, W, C]; strengths = [b, c, s, h]."""
    return jax.vmap(lambda key: augment_colour.color_jitter(key, image, *strengths, prob=1.0))(keys(JITTER_KEYS))


def random_image(seed, height=6, width=7, channels=3):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (height, width, channels)).astype(np.float32)


def keys(n, seed=0):
    return jax.random.split(jax.random.key(seed), n)


# ---------------------------------------------------------------- float64 NumPy references


def np_bilinear_resize(image, out_size):
    """align_corners=False bilinear resize of image [H, W, C] to out_size^2, edge-clamped, no antialiasing."""
    def axis_weights(in_size):
        coords = np.clip((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0, in_size - 1)
        low = np.floor(coords).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        frac = coords - low
        weights = np.zeros((out_size, in_size))
        np.add.at(weights, (np.arange(out_size), low), 1 - frac)
        np.add.at(weights, (np.arange(out_size), high), frac)
        return weights
    image = image.astype(np.float64)
    return np.einsum('oh,hwc,pw->opc', axis_weights(image.shape[0]), image, axis_weights(image.shape[1]))


def np_gray(image):
    return image.astype(np.float64) @ LUMA


def np_brightness(image, factor):
    return np.clip(image.astype(np.float64) * factor, 0, 1)


def np_contrast(image, factor):
    image = image.astype(np.float64)
    return np.clip(factor * image + (1 - factor) * np_gray(image).mean(), 0, 1)


def np_saturation(image, factor):
    image = image.astype(np.float64)
    return np.clip(factor * image + (1 - factor) * np_gray(image)[..., None], 0, 1)


def np_hue(image, delta):
    out = np.empty(image.shape)
    for index in np.ndindex(image.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*image[index].astype(np.float64))
        out[index] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
    return out


def np_gaussian_blur(image, sigma, kernel_size):
    offsets = np.arange(kernel_size) - kernel_size // 2
    taps = np.exp(-0.5 * (offsets / sigma) ** 2)
    taps /= taps.sum()
    out = scipy.ndimage.convolve1d(image.astype(np.float64), taps, axis=0, mode='mirror')
    return scipy.ndimage.convolve1d(out, taps, axis=1, mode='mirror')


# ---------------------------------------------------------------- conversion


def test_to_float_and_normalize():
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    floats = to_float(images)
    assert floats.dtype == jnp.float32
    np.testing.assert_allclose(floats, images / 255.0, rtol=1e-6)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    np.testing.assert_allclose(normalize(floats, mean, std),
                               (images / 255.0 - np.array(mean)) / np.array(std), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- crop


# A crop 3 rows x 12 columns resized to 7 x 7 upsamples rows and downsamples columns at once.
CROP_BOX = (2, 1, 3, 12)  # top, left, height, width in a 9 x 14 image


def test_crop_and_resize_matches_numpy_bilinear_of_crop():
    image = random_image(2, 9, 14)
    top, left, crop_h, crop_w = CROP_BOX
    out = crop_and_resize(image, jnp.array(CROP_BOX), 7, antialias=False)
    expected = np_bilinear_resize(image[top:top + crop_h, left:left + crop_w], 7)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_antialiased_crop_matches_jax_image_resize_of_crop():
    image = random_image(3, 9, 14)
    top, left, crop_h, crop_w = CROP_BOX
    out = crop_and_resize(image, jnp.array(CROP_BOX), 7, antialias=True)
    expected = jax.image.resize(image[top:top + crop_h, left:left + crop_w], (7, 7, 3), 'linear', antialias=True)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_full_image_resized_crop_matches_jax_image_resize():
    image = random_image(4, 8, 8)
    out = random_resized_crop(jax.random.key(0), image, 5, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    np.testing.assert_allclose(out, jax.image.resize(image, (5, 5, 3), 'linear', antialias=True), atol=1e-5)


def test_crop_boxes_follow_scale_and_ratio():
    size, scale, ratio = 64, (0.3, 0.5), (3 / 4, 4 / 3)
    sample = jax.jit(jax.vmap(lambda k: augment_geometry.sample_crop_box(k, size, size, scale, ratio)))
    boxes = np.asarray(sample(keys(2000)))
    top, left, crop_h, crop_w = boxes.T
    assert np.all((top >= 0) & (left >= 0) & (top + crop_h <= size) & (left + crop_w <= size))
    # Every try fits for these ranges, so the area fraction is uniform in `scale` up to pixel rounding.
    area = crop_h * crop_w / size**2
    rounding = 2 * (np.sqrt(scale[1] * ratio[1]) * size + 0.5) * 0.5 / size**2
    assert np.all((area >= scale[0] - rounding) & (area <= scale[1] + rounding))
    assert abs(area.mean() - 0.4) < 0.01
    assert abs(np.median(area) - 0.4) < 0.015
    aspect = crop_w / crop_h
    assert np.all((aspect >= ratio[0] * 0.95) & (aspect <= ratio[1] * 1.05))
    assert abs(np.log(aspect).mean()) < 0.02  # log-uniform on a symmetric range
    # Positions are uniform: crops start anywhere that leaves room.
    assert top.min() == 0 and (top + crop_h).max() == size


def test_crop_box_falls_back_to_central_crop():
    box = sample_crop_box(jax.random.key(0), 10, 10, scale=(1.0, 1.0), ratio=(2.0, 2.0))
    np.testing.assert_array_equal(box, [2, 0, 5, 10])  # full width, height = width / 2, centred


# ---------------------------------------------------------------- flip, grayscale, solarize


@pytest.mark.parametrize('channels', [1, 3])
def test_forced_flip_and_grayscale(channels):
    image = random_image(5, channels=channels)
    key = jax.random.key(0)
    np.testing.assert_array_equal(horizontal_flip(key, image, prob=1.0), image[:, ::-1])
    np.testing.assert_array_equal(horizontal_flip(key, image, prob=0.0), image)
    expected_gray = np.repeat(np_gray(image)[..., None], 3, -1) if channels == 3 else image
    np.testing.assert_allclose(random_grayscale(key, image, prob=1.0), expected_gray, atol=1e-6)
    np.testing.assert_array_equal(random_grayscale(key, image, prob=0.0), image)


def test_solarize():
    image = random_image(6)
    key = jax.random.key(0)
    np.testing.assert_allclose(solarize(key, image, prob=1.0, threshold=0.4),
                               np.where(image >= 0.4, 1.0 - image, image), atol=1e-7)
    np.testing.assert_array_equal(solarize(key, image, prob=0.0), image)


def test_flip_probability_is_respected():
    image = random_image(7)
    flipped = jax.jit(jax.vmap(lambda k: augment_geometry.horizontal_flip(k, image, prob=0.3)))(keys(1000))
    fraction = np.mean(np.all(np.asarray(flipped) == image[:, ::-1], axis=(1, 2, 3)))
    assert abs(fraction - 0.3) < 0.05


# ---------------------------------------------------------------- colour ops with explicit factors


@pytest.mark.parametrize('factor', [0.3, 1.7])
def test_brightness_contrast_saturation_match_torchvision_formulas(factor):
    image = random_image(8)
    np.testing.assert_allclose(adjust_brightness(image, factor), np_brightness(image, factor), atol=1e-6)
    np.testing.assert_allclose(adjust_contrast(image, factor), np_contrast(image, factor), atol=1e-6)
    np.testing.assert_allclose(adjust_saturation(image, factor), np_saturation(image, factor), atol=1e-6)


def test_colour_ops_on_one_channel_image():
    image = random_image(9, channels=1)
    np.testing.assert_array_equal(adjust_saturation(image, 0.2), image)
    np.testing.assert_array_equal(adjust_hue(image, 0.3), image)
    contrast = np.clip(0.4 * image + 0.6 * image.astype(np.float64).mean(), 0, 1)
    np.testing.assert_allclose(adjust_contrast(image, 0.4), contrast, atol=1e-6)
    # Full jitter: only brightness (x1.5) then contrast act on a gray image.
    jittered = apply_color_jitter(image, 1.5, 0.4, 0.2, 0.3, order=jnp.array([3, 0, 2, 1]))
    brightened = np.clip(1.5 * image.astype(np.float64), 0, 1)
    np.testing.assert_allclose(jittered, np.clip(0.4 * brightened + 0.6 * brightened.mean(), 0, 1), atol=1e-6)


def test_hsv_matches_colorsys_and_round_trips():
    image = random_image(10)
    image[0, 0] = 0.5  # gray pixel: hue and saturation 0
    image[0, 1] = 0.0  # black pixel
    hsv = np.asarray(rgb_to_hsv(image))
    expected = np.array([colorsys.rgb_to_hsv(*pixel) for pixel in image.reshape(-1, 3).astype(np.float64)])
    np.testing.assert_allclose(hsv.reshape(-1, 3), expected, atol=1e-6)
    np.testing.assert_allclose(hsv_to_rgb(hsv), image, atol=1e-6)


@pytest.mark.parametrize('delta', [-0.45, 0.1, 0.3])
def test_adjust_hue_matches_colorsys(delta):
    image = random_image(11)
    np.testing.assert_allclose(adjust_hue(image, delta), np_hue(image, delta), atol=1e-5)


def test_color_jitter_applies_ops_in_given_order():
    image = random_image(12)
    factors = dict(brightness_factor=1.4, contrast_factor=0.6, saturation_factor=1.5, hue_delta=0.2)
    references = (lambda x: np_brightness(x, 1.4), lambda x: np_contrast(x, 0.6),
                  lambda x: np_saturation(x, 1.5), lambda x: np_hue(x, 0.2))
    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]):
        expected = image.astype(np.float64)
        for op in order:
            expected = references[op](expected)
        out = apply_color_jitter(image, order=jnp.array(order), **factors)
        np.testing.assert_allclose(out, expected, atol=1e-5)


# ---------------------------------------------------------------- random colour jitter


def test_color_jitter_with_zero_strength_is_identity():
    image = random_image(13)
    np.testing.assert_allclose(forced_color_jitter_per_key(image, jnp.zeros(4)),
                               np.broadcast_to(image, (JITTER_KEYS,) + image.shape), atol=1e-6)


def test_brightness_only_jitter_scales_by_a_factor_in_range():
    image = 0.6 * random_image(14)  # no clipping for factors up to 1.5
    jittered = np.asarray(forced_color_jitter_per_key(image, jnp.array([0.5, 0.0, 0.0, 0.0])))
    factors = jittered / image
    np.testing.assert_allclose(factors, factors[:, :1, :1, :1] * np.ones_like(factors), rtol=1e-5)
    assert np.all((factors >= 0.5 - 1e-6) & (factors <= 1.5 + 1e-6))
    assert factors[:, 0, 0, 0].std() > 0.2  # roughly uniform on [0.5, 1.5]: std 0.29


def test_color_jitter_range_determinism_and_variation():
    image = random_image(15)
    first = np.asarray(forced_color_jitter_per_key(image, jnp.array([0.8, 0.8, 0.8, 0.2])))
    again = forced_color_jitter_per_key(image, jnp.array([0.8, 0.8, 0.8, 0.2]))
    np.testing.assert_array_equal(first, again)
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert all(np.abs(first[i] - first[j]).max() > 1e-3 for i in range(4) for j in range(i))


# ---------------------------------------------------------------- blur


@pytest.mark.parametrize('sigma, kernel_size', [(0.7, 3), (1.6, 5)])
def test_blur_matches_scipy_reflect_convolution(sigma, kernel_size):
    image = random_image(16, 9, 8)
    np.testing.assert_allclose(blur_with_sigma(image, sigma, kernel_size),
                               np_gaussian_blur(image, sigma, kernel_size), atol=1e-6)


def test_random_blur_forced_and_disabled():
    image = random_image(17, 9, 8)
    forced = gaussian_blur(jax.random.key(0), image, prob=1.0, sigma=(1.3, 1.3), kernel_size=5)
    np.testing.assert_allclose(forced, np_gaussian_blur(image, 1.3, 5), atol=1e-6)
    np.testing.assert_array_equal(gaussian_blur(jax.random.key(0), image, prob=0.0), image)
    assert augment_colour.default_blur_kernel_size(224, 224) == 23
    assert augment_colour.default_blur_kernel_size(32, 40) == 3
    with pytest.raises(ValueError, match='odd'):
        blur_with_sigma(image, 1.0, 4)


# ---------------------------------------------------------------- recipe and pipeline


def test_recipe_from_config():
    config = augment.default_recipe_config()
    assert augment.AugmentRecipe.from_config(config) == augment.SIMCLR_RECIPE
    assert augment.SIMCLR_RECIPE.brightness == 0.8 and augment.SIMCLR_RECIPE.hue == 0.2
    partial = augment.AugmentRecipe.from_config({'crop_scale': [0.2, 1.0], 'solarize_prob': 0.1})
    assert partial == dataclasses.replace(augment.SIMCLR_RECIPE, crop_scale=(0.2, 1.0), solarize_prob=0.1)
    config.blurr_prob = 0.3
    with pytest.raises(ValueError, match='blurr_prob'):
        augment.AugmentRecipe.from_config(config)
    with pytest.raises(ValueError, match='flip_prob'):
        augment.AugmentRecipe(flip_prob=1.5)


def test_identity_recipe_returns_images():
    # Zero-strength colour jitter is tested above; here every random stage is off.
    identity = augment.AugmentRecipe(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
                                     grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
    images = np.stack([random_image(seed, 8, 8) for seed in range(2)])
    out = augment_batch(jax.random.key(0), images, identity, 8)
    np.testing.assert_allclose(out, images, atol=1e-6)


def test_augment_batch_under_jit():
    images = to_float(np.random.default_rng(0).integers(0, 256, (4, 24, 20, 3), dtype=np.uint8))
    recipe = dataclasses.replace(augment.SIMCLR_RECIPE, solarize_prob=0.2)
    out = np.asarray(augment_batch(jax.random.key(1), images, recipe, 16))
    assert out.shape == (4, 16, 16, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, augment_batch(jax.random.key(1), images, recipe, 16))
    assert all(np.abs(out[i] - out[j]).max() > 1e-2 for i in range(4) for j in range(i))
    assert np.abs(out - np.asarray(augment_batch(jax.random.key(2), images, recipe, 16))).max() > 1e-2


def test_the_unaugmented_view_centre_crops_then_resizes():
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    config = config_lib.resolve({"data": {"image_size": 14, "eval_crop": 14 / 16}})
    view = np.asarray(base.model_view(config, jnp.asarray(images)))
    np.testing.assert_allclose(view, images[:, 1:15, 1:15] / 255.0 * 2 - 1, atol=1e-6)
    whole = config_lib.resolve({"data": {"image_size": 8}})
    expected = jax.image.resize(jnp.asarray(images, jnp.float32) / 255.0, (2, 8, 8, 3),
                                "bilinear") * 2 - 1
    np.testing.assert_allclose(base.model_view(whole, jnp.asarray(images)), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="data.eval_crop"):
        config_lib.resolve({"data": {"eval_crop": 0.0}})
