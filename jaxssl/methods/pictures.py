"""PNG grids of masked-image-modelling reconstructions (host side: NumPy + PIL).

A grid has one row per kind of picture (original / masked / reconstruction)
and one column per image. Images come in the model's units, float in
[-1, 1], and are drawn as [0, 1] pixels; grey images stay grey.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from jaxssl.objectives import mim

NORM_PIX_EPS = 1e-6  # as in mim.mae_loss's normalised-pixel target
ROW_LABELS = ("original", "masked", "reconstruction")
HIDDEN_VALUE = 0.0   # hidden patches are drawn mid-grey ([-1, 1] units)
_MIN_TILE_SIDE = 64  # small images are enlarged (nearest neighbour) to at least this many pixels
_GAP = 2             # white pixels between tiles
_LABEL_CHAR_WIDTH = 7


def unnormalise_patches(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-patch normalised predictions -> pixel units, using the target patches' own statistics.

    pred, target: [n, L, P]. Returns pred * sqrt(var + 1e-6) + mean, with
    the mean and unbiased (ddof=1) variance of each target patch, float32.
    """
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True, ddof=1)
    return (pred * np.sqrt(var + NORM_PIX_EPS) + mean).astype(np.float32)


def reconstruction_rows(images: np.ndarray, pred: np.ndarray, mask: np.ndarray, patch: int,
                        pixels_normalised: bool) -> np.ndarray:
    """The three rows of a reconstruction grid, float32 [3, n, H, W, C] in [0, 1].

    Args:
      images: [n, H, W, C] float in [-1, 1], what the model saw.
      pred: [n, L, p*p*C] predicted patches (`mim.patchify` layout).
      mask: [n, L], 1 = hidden.
      patch: patch size p.
      pixels_normalised: pred is in per-patch normalised units (MAE norm_pix);
        it is mapped back with each original patch's mean and variance.

    Rows: the original; the original with hidden patches grey; the
    reconstruction, i.e. visible patches from the original and hidden ones
    from pred.
    """
    target = np.asarray(mim.patchify(images, patch), np.float32)
    if pixels_normalised:
        pred = unnormalise_patches(pred, target)
    hidden = np.asarray(mask)[..., None] > 0
    masked = np.where(hidden, HIDDEN_VALUE, target)
    pasted = np.where(hidden, pred, target)
    to_image = lambda patches: mim.unpatchify(patches, patch, images.shape[1:3])
    rows = np.stack([images, to_image(masked), to_image(pasted)])
    return np.clip((rows + 1.0) / 2.0, 0.0, 1.0).astype(np.float32)


def write_image_grid(path: str, rows: np.ndarray, row_labels: tuple[str, ...]) -> None:
    """Writes rows float [R, N, H, W, C] in [0, 1] (C = 1 or 3) as one labelled RGB PNG."""
    num_rows, num_cols, height, width, _ = rows.shape
    scale = -(-_MIN_TILE_SIDE // min(height, width))
    tiles = np.repeat(np.repeat(rows, scale, axis=2), scale, axis=3)
    tile_h, tile_w = height * scale, width * scale
    label_width = _LABEL_CHAR_WIDTH * max(len(label) for label in row_labels) + 2 * _GAP
    canvas = np.ones((num_rows * (tile_h + _GAP) + _GAP,
                      label_width + num_cols * (tile_w + _GAP), 3), np.float32)
    for r in range(num_rows):
        top = _GAP + r * (tile_h + _GAP)
        for c in range(num_cols):
            left = label_width + c * (tile_w + _GAP)
            canvas[top:top + tile_h, left:left + tile_w] = tiles[r, c]  # grey broadcasts to RGB
    picture = Image.fromarray(np.round(canvas * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for r, label in enumerate(row_labels):
        draw.text((_GAP, _GAP + r * (tile_h + _GAP) + tile_h // 2 - 5), label, fill=(0, 0, 0))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    picture.save(path, format="PNG")


def write_reconstruction_grid(path: str, images: np.ndarray, pred: np.ndarray, mask: np.ndarray,
                              patch: int, pixels_normalised: bool) -> None:
    """PNG at `path` with rows original / masked / reconstruction (see `reconstruction_rows`)."""
    write_image_grid(path, reconstruction_rows(images, pred, mask, patch, pixels_normalised),
                     ROW_LABELS)
