"""Masked image modelling: patch layout, masking and losses vs float64 NumPy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.objectives import mim

PATCH = 4
BATCH, HEIGHT, WIDTH, CHANNELS = 3, 8, 12, 3  # a non-square 2 x 3 grid of patches
GRID_H, GRID_W = HEIGHT // PATCH, WIDTH // PATCH
NUM_PATCHES = GRID_H * GRID_W
PATCH_DIM = PATCH * PATCH * CHANNELS


def _random_images(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(1.0, 2.0, size=(BATCH, HEIGHT, WIDTH, CHANNELS)).astype(np.float32)


def _image_patch_ref(image, index):
    """float64 pixels of patch `index` (row-major over the grid) of image [H, W, C], flattened
    in (row, column, channel) order."""
    row, col = divmod(index, GRID_W)
    pixels = image[row * PATCH:(row + 1) * PATCH, col * PATCH:(col + 1) * PATCH, :]
    return np.asarray(pixels, np.float64).reshape(-1)


# ----------------------------------------------------------------------------
# patchify / unpatchify
# ----------------------------------------------------------------------------

def test_patchify_layout_matches_loop_reference():
    images = _random_images(0)
    expected = np.zeros((BATCH, NUM_PATCHES, PATCH_DIM), np.float32)
    for b in range(BATCH):
        for grid_row in range(GRID_H):
            for grid_col in range(GRID_W):
                for r in range(PATCH):
                    for c in range(PATCH):
                        for channel in range(CHANNELS):
                            expected[b, grid_row * GRID_W + grid_col,
                                     (r * PATCH + c) * CHANNELS + channel] = images[
                                         b, grid_row * PATCH + r, grid_col * PATCH + c, channel]
    np.testing.assert_array_equal(mim.patchify(images, PATCH), expected)


def test_unpatchify_inverts_patchify_both_ways():
    images = _random_images(1)
    patches = mim.patchify(images, PATCH)
    np.testing.assert_array_equal(mim.unpatchify(patches, PATCH, (HEIGHT, WIDTH)), images)
    other_patches = np.random.default_rng(2).normal(size=patches.shape).astype(np.float32)
    np.testing.assert_array_equal(
        mim.patchify(mim.unpatchify(other_patches, PATCH, (HEIGHT, WIDTH)), PATCH), other_patches)


# ----------------------------------------------------------------------------
# random_masking
# ----------------------------------------------------------------------------

MASK_N, MASK_PATCHES, MASK_RATIO = 6, 16, 0.75
LEN_KEEP = 4  # int(16 * (1 - 0.75))
# n, num_patches and mask_ratio fix the output shapes, so they are static under jit.
_random_masking = jax.jit(mim.random_masking, static_argnums=(1, 2, 3))


def _masking(seed):
    return _random_masking(jax.random.key(seed), MASK_N, MASK_PATCHES, MASK_RATIO)


def test_random_masking_shapes_dtypes_and_counts():
    keep_idx, mask, ids_restore = _masking(0)
    assert keep_idx.shape == (MASK_N, LEN_KEEP) and keep_idx.dtype == jnp.int32
    assert mask.shape == (MASK_N, MASK_PATCHES) and mask.dtype == jnp.float32
    assert ids_restore.shape == (MASK_N, MASK_PATCHES) and ids_restore.dtype == jnp.int32
    assert set(np.unique(mask)) == {0.0, 1.0}
    np.testing.assert_array_equal(mask.sum(axis=1), MASK_PATCHES - LEN_KEEP)


def test_random_masking_outputs_are_mutually_consistent():
    keep_idx, mask, ids_restore = map(np.asarray, _masking(1))
    for b in range(MASK_N):
        assert sorted(ids_restore[b]) == list(range(MASK_PATCHES))  # a permutation
        ids_shuffle = np.argsort(ids_restore[b])
        np.testing.assert_array_equal(keep_idx[b], ids_shuffle[:LEN_KEEP])
        kept = np.zeros(MASK_PATCHES)
        kept[keep_idx[b]] = 1.0
        np.testing.assert_array_equal(mask[b], 1.0 - kept)
        # MAE convention: [0] * len_keep + [1] * rest, unshuffled by ids_restore.
        shuffled_mask = np.array([0.0] * LEN_KEEP + [1.0] * (MASK_PATCHES - LEN_KEEP))
        np.testing.assert_array_equal(mask[b], shuffled_mask[ids_restore[b]])


def test_random_masking_depends_on_example_and_key_only():
    keep_idx, mask, _ = map(np.asarray, _masking(2))
    assert len({tuple(row) for row in mask}) == MASK_N
    np.testing.assert_array_equal(_masking(2)[0], keep_idx)
    assert not np.array_equal(_masking(3)[1], mask)


def test_random_masking_is_uniform_over_patches():
    _, mask, _ = _random_masking(jax.random.key(4), 4000, 8, 0.5)
    np.testing.assert_allclose(np.mean(mask, axis=0), 0.5, atol=0.03)


def test_random_masking_rejects_a_ratio_that_keeps_nothing():
    with pytest.raises(ValueError, match="keeps 0 patches"):
        mim.random_masking(jax.random.key(0), 2, 4, 0.8)


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------

def _mae_loss_ref(pred, images, mask, norm_pix):
    total, count = 0.0, 0.0
    for b in range(BATCH):
        for index in range(NUM_PATCHES):
            target = _image_patch_ref(images[b], index)
            if norm_pix:
                mean = target.sum() / target.size
                unbiased_var = ((target - mean) ** 2).sum() / (target.size - 1)
                target = (target - mean) / np.sqrt(unbiased_var + 1e-6)
            mse = np.mean((np.float64(pred[b, index]) - target) ** 2)
            total += mse * mask[b, index]
            count += mask[b, index]
    return total / count


def _simmim_loss_ref(pred, images, mask):
    """Mean absolute error over masked pixel values (SimMIM's pixel-mask formulation)."""
    total, masked_values = 0.0, 0
    for b in range(BATCH):
        for index in range(NUM_PATCHES):
            if mask[b, index]:
                target = _image_patch_ref(images[b], index)
                total += np.abs(np.float64(pred[b, index]) - target).sum()
                masked_values += target.size
    return total / masked_values


def _loss_inputs(seed):
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(BATCH, NUM_PATCHES, PATCH_DIM)).astype(np.float32)
    mask = (rng.uniform(size=(BATCH, NUM_PATCHES)) < 0.6).astype(np.float32)
    mask[:, 0] = 1.0  # at least one masked patch
    mask[:, 1] = 0.0  # at least one kept patch
    return pred, _random_images(seed), mask


LOSSES = {
    "mae_norm_pix": (lambda p, i, m: mim.mae_loss(p, i, m, PATCH, norm_pix=True),
                     lambda p, i, m: _mae_loss_ref(p, i, m, norm_pix=True)),
    "mae_raw_pix": (lambda p, i, m: mim.mae_loss(p, i, m, PATCH, norm_pix=False),
                    lambda p, i, m: _mae_loss_ref(p, i, m, norm_pix=False)),
    "simmim": (lambda p, i, m: mim.simmim_loss(p, i, m, PATCH), _simmim_loss_ref),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_matches_float64_reference(name, seed):
    loss_fn, reference = LOSSES[name]
    pred, images, mask = _loss_inputs(seed)
    loss = jax.jit(loss_fn)(pred, images, mask)
    assert loss.dtype == jnp.float32 and loss.shape == ()
    np.testing.assert_allclose(loss, reference(pred, images, mask), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_ignores_predictions_of_kept_patches(name):
    loss_fn, _ = LOSSES[name]
    pred, images, mask = _loss_inputs(3)
    grad = jax.jit(jax.grad(loss_fn))(pred, images, mask)
    kept = mask == 0.0
    np.testing.assert_array_equal(grad[kept], 0.0)
    assert np.all(np.any(grad[~kept] != 0.0, axis=-1))


def test_mae_loss_computes_bfloat16_inputs_in_float32():
    pred, images, mask = _loss_inputs(4)
    pred_bf16 = jnp.asarray(pred, jnp.bfloat16)
    loss = jax.jit(LOSSES["mae_norm_pix"][0])(pred_bf16, images, mask)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(
        loss, _mae_loss_ref(np.asarray(pred_bf16, np.float64), images, mask, norm_pix=True),
        rtol=1e-5)
