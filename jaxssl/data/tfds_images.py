"""Image sources over TFDS datasets prepared as array_record, read at random.

`TfdsSource` ('tfds:NAME?image_size=S'): {'image': uint8 [H, W, C], 'label':
int32 scalar}. `TfdsCaptionSource` ('tfds_captions:NAME?...', see
`jaxssl.data.captions`): {'image': uint8 [S, S, C], 'tokens': int32 [length]}.
Both read one record per ``__getitem__`` (lazily, unlike the in-memory
sources of `jaxssl.data.image_files`); the checks that the dataset is
prepared and has the features happen when the source is made, and a record
that does not read or decode later is a DataError naming the dataset, split
and index (`jaxssl.data.tfds_io.TfdsRecords`).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image

from jaxssl.data import captions, tfds_io, tokenizers
from jaxssl.errors import ConfigError, DataError


def _uint8_image(image: np.ndarray, index: int) -> np.ndarray:
    """A TFDS image [H, W] or [H, W, C] of integers in 0..255 -> uint8 [H, W, C]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.integer) or image.min() < 0 or image.max() > 255:
            raise DataError(
                f"tfds image {index} is {image.dtype} outside 0..255; cannot make it uint8")
        image = image.astype(np.uint8)
    return image


def resize_and_centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [size, size, C]: the shorter side resized to `size`
    (PIL bilinear, aspect ratio kept, the longer side rounded), then the central
    size x size crop. An image already size x size is returned as is."""
    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image
    scale = size / min(height, width)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    resized = pil.resize((new_width, new_height), Image.BILINEAR)
    cropped = resized.crop((left, top, left + size, top + size))
    return np.asarray(cropped).reshape(size, size, image.shape[-1])


def _image_shape(stored: Sequence, image_size: int | None) -> tuple:
    """(H, W, C) of records: the stored feature shape ([H, W] or [H, W, C], sides may be
    None) with the sides replaced by image_size when that is set."""
    channels = stored[2] if len(stored) == 3 else 1
    side = (image_size,) * 2 if image_size else tuple(stored[:2])
    return side + (channels,)


class TfdsSource(tfds_io.TfdsRecords):
    """A labelled TFDS image dataset prepared as array_record in data_dir, read at random.

    Args:
      name: TFDS name, e.g. 'mnist' or 'cifar10:3.0.2'.
      split: TFDS split, e.g. 'train' or 'test[:10%]'.
      data_dir: the TFDS data directory, resolved (default: TFDS's own default).
      image_key, label_key: feature names of the image and the class label.
      image_size: None keeps the stored images (they must share one size to be
        batched); S > 0 resizes each on the host to uint8 [S, S, C] with
        `resize_and_centre_crop` (shorter side to S, central S x S crop), for
        datasets of mixed sizes such as ImageNet. Device-side augmentation
        (e.g. a random resized crop to data.image_size) then starts from S x S.

    Raises:
      ConfigError: image_size <= 0.
      DataError: the dataset is not prepared in data_dir, lacks a feature, or
        its label feature is not a ClassLabel.
    """

    def __init__(
        self,
        name: str,
        split: str,
        data_dir: str | os.PathLike | None = None,
        image_key: str = "image",
        label_key: str = "label",
        image_size: int | None = None,
    ):
        if image_size is not None and image_size <= 0:
            raise ConfigError(f"tfds dataset {name!r}: image_size must be a positive number of "
                              f"pixels, got {image_size}")
        super().__init__(name, split, data_dir, (image_key, label_key))
        if not hasattr(self.features[label_key], "num_classes"):
            raise DataError(f"tfds dataset {name!r}: feature {label_key!r} is not a ClassLabel")
        self._image_key, self._label_key = image_key, label_key
        self._image_size = image_size
        self.num_classes = int(self.features[label_key].num_classes)
        self.image_shape = _image_shape(tuple(self.features[image_key].shape), image_size)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        record = super().__getitem__(index)
        image = _uint8_image(record[self._image_key], index)
        if self._image_size:
            image = resize_and_centre_crop(image, self._image_size)
        return {"image": image, "label": np.int32(record[self._label_key])}


class TfdsCaptionSource(tfds_io.TfdsRecords):
    """Image + first caption of a TFDS caption dataset (see `jaxssl.data.captions`).

    Records: {'image': uint8 [S, S, C], 'tokens': int32 [length]} (byte
    tokens, EOS, PAD). No labels. `spec` is a parsed 'tfds_captions:...' name.
    """

    def __init__(self, spec: captions.CaptionDataSpec, split: str,
                 data_dir: str | os.PathLike | None = None):
        super().__init__(spec.name, split, data_dir, (spec.image_key, spec.caption_key))
        self.spec = spec
        self.tokenizer = tokenizers.ByteTokenizer(num_sentinels=0)
        self.image_shape = _image_shape(
            tuple(tfds_io.feature(self.features, spec.image_key).shape), spec.image_size)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        record = super().__getitem__(index)
        image = _uint8_image(tfds_io.feature(record, self.spec.image_key), index)
        if self.spec.image_size:
            image = resize_and_centre_crop(image, self.spec.image_size)
        caption = captions.first_caption(tfds_io.feature(record, self.spec.caption_key))
        tokens = captions.tokenize_captions(self.tokenizer, [caption], self.spec.length)[0]
        return {"image": image, "tokens": tokens}
