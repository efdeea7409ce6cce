"""Masked image modelling: patch layout, random masking, MAE and SimMIM losses.

Patch layout (shared by every function here): an image [H, W, C] is cut
into a grid of (H/p) x (W/p)
patches ordered row-major over the grid, and each patch is flattened in
(row-in-patch, column-in-patch, channel) order into p*p*C values.

Mask convention (MAE): mask[b, l] = 1.0 where patch l of example b is
masked (removed from the encoder input, to be reconstructed) and 0.0 where
it is kept.
"""
import einops
import jax
import jax.numpy as jnp

_NORM_PIX_EPS = 1e-6


def patchify(images, patch):
    """Cuts images [B, H, W, C] into patches [B, (H/p)*(W/p), p*p*C], same dtype.

    H and W must be multiples of `patch` (p).
    """
    return einops.rearrange(images, "b (h p) (w q) c -> b (h w) (p q c)", p=patch, q=patch)


def unpatchify(patches, patch, hw):
    """Inverse of `patchify`: patches [B, L, p*p*C] -> images [B, H, W, C], hw = (H, W)."""
    height, width = hw
    return einops.rearrange(
        patches, "b (h w) (p q c) -> b (h p) (w q) c",
        h=height // patch, w=width // patch, p=patch, q=patch)


def random_masking(rng, n, num_patches, mask_ratio):
    """Per-example uniformly random patch masking, MAE style.

    Each example gets its own permutation ids_shuffle = argsort(uniform noise);
    the first len_keep = int(num_patches * (1 - mask_ratio)) shuffled patches
    are kept, the rest masked.

    Args:
      rng: PRNG key.
      n: batch size (static int).
      num_patches: patches per example L (static int).
      mask_ratio: fraction of patches to mask, static float in [0, 1).

    Returns:
      keep_idx: [n, len_keep] int32, indices of kept patches, in shuffled order
        (gather the encoder input with it).
      mask: [n, num_patches] float32, 1 = masked/removed, 0 = kept, in the
        original patch order.
      ids_restore: [n, num_patches] int32, argsort(ids_shuffle): gathering the
        sequence [kept tokens, mask tokens] with it restores original order.

    Raises:
      ValueError: if the ratio would keep no patch.
    """
    len_keep = int(num_patches * (1 - mask_ratio))
    if not 0 < len_keep <= num_patches:
        raise ValueError(
            f"mask_ratio={mask_ratio} with num_patches={num_patches} keeps {len_keep} "
            "patches; need at least 1 and at most all of them.")
    noise = jax.random.uniform(rng, (n, num_patches))
    ids_shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)
    ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
    keep_idx = ids_shuffle[:, :len_keep]
    # Patch l sits at position ids_restore[l] of the shuffle; kept iff that is < len_keep.
    mask = (ids_restore >= len_keep).astype(jnp.float32)
    return keep_idx, mask, ids_restore


def _masked_patch_mean(per_patch_loss, mask):
    """Mean of per_patch_loss [B, L] over masked patches (mask [B, L], 1 = masked).

    The mask must mark at least one patch, else the result is NaN (0/0).
    """
    return jnp.sum(per_patch_loss * mask) / jnp.sum(mask)


def _at_least_float32(x):
    """x cast to float32, or left as is if its dtype is already wider."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _float32_patches(pred, images, mask, patch):
    """Casts pred [B, L, P] and mask [B, L] up to float32 and patchifies images to [B, L, P]."""
    return (_at_least_float32(pred), patchify(_at_least_float32(images), patch),
            _at_least_float32(mask))


def mae_loss(pred, images, mask, patch, norm_pix=True):
    """MAE reconstruction loss (He et al. 2021), float32 scalar.

    Args:
      pred: [B, L, p*p*C] decoder predictions in `patchify` layout.
      images: [B, H, W, C] the images the encoder saw (float, same normalisation).
      mask: [B, L], 1 = masked; only masked patches count.
      patch: patch size p.
      norm_pix: if True, the target of each patch is its pixels standardised
        by the patch's own mean and unbiased (ddof=1) variance:
        (t - mean) / sqrt(var + 1e-6), as in the MAE reference code.

    Returns:
      Mean squared error over each patch's p*p*C values, averaged over masked
      patches: sum(mse * mask) / sum(mask).
    """
    pred, target, mask = _float32_patches(pred, images, mask, patch)
    if norm_pix:
        mean = jnp.mean(target, axis=-1, keepdims=True)
        var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
        target = (target - mean) / jnp.sqrt(var + _NORM_PIX_EPS)
    return _masked_patch_mean(jnp.mean(jnp.square(pred - target), axis=-1), mask)


def simmim_loss(pred, images, mask, patch):
    """SimMIM L1 reconstruction loss (Xie et al. 2021), float32 scalar.

    Args:
      pred: [B, L, p*p*C] predicted pixels in `patchify` layout.
      images: [B, H, W, C] target images (float, no per-patch normalisation).
      mask: [B, L], 1 = masked; only masked patches count.
      patch: patch size p.

    Returns:
      Mean absolute error over all masked pixel values:
      sum(|pred - target| * mask[..., None]) / (sum(mask) * p*p*C).
      This equals the reference code's (l1 * pixel_mask).sum() /
      pixel_mask.sum() / in_chans, without its +1e-5 in the denominator.
    """
    pred, target, mask = _float32_patches(pred, images, mask, patch)
    return _masked_patch_mean(jnp.mean(jnp.abs(pred - target), axis=-1), mask)
