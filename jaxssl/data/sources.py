"""Random-access labelled image sources for grain.

Every source implements ``__len__`` and ``__getitem__(i) -> {'image', 'label'}``
where ``image`` is uint8 ``[H, W, C]`` (C is 1 for grey images) and ``label``
is an int32 scalar, and exposes ``num_classes`` and ``image_shape`` (H, W, C).

``get_source(name, split, data_dir)`` picks one by name:

- ``'digits'``: scikit-learn's embedded 8x8 digits, split 80/20 here.
- ``'mnist'``, ``'fashion_mnist'``: the standard gzipped IDX files in data_dir.
- ``'cifar10_jpeg'``: ``{split}.npz`` of JPEG bytes + offsets + labels.
- ``'npz'``: ``{split}.npz`` holding arrays ``image`` and ``label``.
- ``'tfds:NAME'``: a TFDS dataset already prepared as array_record in data_dir;
  ``'tfds:NAME?image_size=S'`` resizes each image on the host to S x S
  (shorter side to S, centre crop; see ``TfdsSource``) so that images of
  mixed sizes (ImageNet) batch.
- ``'text:CORPUS?...'``, ``'tfds_text:NAME?...'``: token rows, see ``jaxssl.data.text``.
- ``'tfds_captions:NAME?...'``: image + caption tokens, see ``jaxssl.data.captions``.
"""
from __future__ import annotations

import difflib
import gzip
import io
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from jaxssl.data import captions, text

# IDX type codes (third magic byte) -> element dtype; the data is big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_MNIST_FILE_PREFIX = {"train": "train", "test": "t10k"}
_MNIST_NUM_CLASSES = 10
_CIFAR10_NUM_CLASSES = 10
_DIGITS_NUM_CLASSES = 10
_DIGITS_MAX_VALUE = 16  # sklearn digits pixels are counts 0..16.
_JPEG_DECODE_CHUNK = 1000  # images per thread-pool task.


class ArraySource:
    """In-memory source over whole arrays.

    Args:
      images: uint8 [N, H, W, C].
      labels: integer [N], each in [0, num_classes); stored as int32.
      num_classes: number of classes.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must have shape [{images.shape[0]}], got {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got range "
                f"[{labels.min()}, {labels.max()}]"
            )
        self.images = images
        self.labels = labels.astype(np.int32)
        self.num_classes = int(num_classes)
        self.image_shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        # Grain checks a restored iterator against repr(source): keep it deterministic.
        return (f"ArraySource(n={len(self)}, image_shape={self.image_shape}, "
                f"num_classes={self.num_classes})")

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"image": self.images[index], "label": self.labels[index]}


def read_idx_gz(path: str | os.PathLike) -> np.ndarray:
    """Reads a gzipped IDX file (the MNIST format) into a native-endian array.

    The header is two zero bytes, a type code, the number of dimensions, then
    one big-endian uint32 per dimension; the big-endian payload follows.
    """
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02x}")
    dtype = _IDX_DTYPES[type_code]
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_size != expected:
        raise ValueError(
            f"{path}: IDX payload is {len(raw) - header_size} bytes, "
            f"shape {shape} of {dtype} needs {expected}"
        )
    data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _mnist_paths(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """[images path, labels path] of an MNIST-format split."""
    if split not in _MNIST_FILE_PREFIX:
        raise ValueError(
            f"MNIST-format split must be one of {sorted(_MNIST_FILE_PREFIX)}, got {split!r}"
        )
    prefix = _MNIST_FILE_PREFIX[split]
    return [
        Path(data_dir) / f"{prefix}-images-idx3-ubyte.gz",
        Path(data_dir) / f"{prefix}-labels-idx1-ubyte.gz",
    ]


def load_mnist_like(data_dir: str | os.PathLike, split: str) -> ArraySource:
    """MNIST or Fashion-MNIST split ('train' | 'test'): uint8 [N, 28, 28, 1]."""
    images_path, labels_path = _mnist_paths(data_dir, split)
    images = read_idx_gz(images_path)[..., None]
    return ArraySource(images, read_idx_gz(labels_path), _MNIST_NUM_CLASSES)


def load_npz(path: str | os.PathLike) -> ArraySource:
    """Arrays 'image' (uint8 [N, H, W] or [N, H, W, C]) and 'label' ([N]).

    num_classes comes from an optional scalar array 'num_classes' in the file
    (store it when a split may lack some classes), else max(label) + 1.
    """
    with np.load(path) as data:
        images, labels = data["image"], data["label"]
        num_classes = int(data["num_classes"]) if "num_classes" in data else None
    if images.ndim == 3:
        images = images[..., None]
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    return ArraySource(images, labels, num_classes)


def decode_jpegs(
    jpeg: np.ndarray, offsets: np.ndarray, num_threads: int | None = None
) -> np.ndarray:
    """Decodes concatenated JPEGs of one common size into uint8 [N, H, W, 3].

    Args:
      jpeg: uint8 [B], all images' JPEG bytes back to back.
      offsets: int [N + 1]; image i is jpeg[offsets[i]:offsets[i + 1]].
      num_threads: decoding threads (default: the CPU count, at most 8).
    """
    jpeg_bytes = memoryview(np.ascontiguousarray(jpeg, np.uint8))
    offsets = np.asarray(offsets, np.int64)
    num_images = len(offsets) - 1

    def open_jpeg(i: int) -> Image.Image:
        return Image.open(io.BytesIO(jpeg_bytes[offsets[i] : offsets[i + 1]]), formats=["JPEG"])

    if num_images <= 0:
        raise ValueError("no images to decode: offsets must hold N + 1 >= 2 entries")
    with open_jpeg(0) as first:
        width, height = first.size
    out = np.empty((num_images, height, width, 3), np.uint8)

    def decode_range(indices: range) -> None:
        for i in indices:
            with open_jpeg(i) as image:
                if image.size != (width, height):
                    raise ValueError(
                        f"image {i} is {image.size[0]}x{image.size[1]}, "
                        f"expected {width}x{height} like image 0"
                    )
                out[i] = image if image.mode == "RGB" else image.convert("RGB")

    chunks = [
        range(start, min(start + _JPEG_DECODE_CHUNK, num_images))
        for start in range(0, num_images, _JPEG_DECODE_CHUNK)
    ]
    num_threads = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(num_threads) as pool:
        list(pool.map(decode_range, chunks))  # list() re-raises worker errors.
    return out


def load_cifar10_jpeg(path: str | os.PathLike) -> ArraySource:
    """CIFAR-10 stored as JPEGs ('jpeg', 'offsets', 'label'): uint8 [N, 32, 32, 3]."""
    with np.load(path) as data:
        jpeg, offsets, labels = data["jpeg"], data["offsets"], data["label"]
    return ArraySource(decode_jpegs(jpeg, offsets), labels, _CIFAR10_NUM_CLASSES)


def load_digits_split(split: str, test_fraction: float = 0.2, seed: int = 0) -> ArraySource:
    """scikit-learn's 1,797 8x8 digits as uint8 [N, 8, 8, 1], values 0..255.

    The split is class-stratified and deterministic: within each class a
    fixed-seed permutation puts round(test_fraction * class size) examples in
    'test' and the rest in 'train'. Both splits keep the original order.
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
    digits = load_digits()
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(digits.target), bool)
    for label in range(_DIGITS_NUM_CLASSES):
        members = np.flatnonzero(digits.target == label)
        num_test = int(round(test_fraction * len(members)))
        is_test[rng.permutation(members)[:num_test]] = True
    keep = is_test if split == "test" else ~is_test
    scaled = np.round(digits.images[keep] * (255 / _DIGITS_MAX_VALUE))
    return ArraySource(scaled.astype(np.uint8)[..., None], digits.target[keep], _DIGITS_NUM_CLASSES)


def _feature(tree, path: str):
    """tree['a']['b'] for path 'a/b' (a TFDS record or FeaturesDict)."""
    for part in path.split("/"):
        tree = tree[part]
    return tree


class _TfdsRecords:
    """Random access to a TFDS dataset prepared as array_record in data_dir.

    This is ``tfds.data_source(name, split=split, data_dir=data_dir)`` without
    the download: a dataset missing from data_dir raises FileNotFoundError, a
    missing feature (path 'a/b' for nested ones) in `keys` a KeyError.
    Subclasses turn ``self._records[i]`` into records.
    """

    def __init__(self, name: str, split: str, data_dir, keys: Sequence[str]):
        import tensorflow_datasets as tfds

        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except tfds.core.DatasetNotFoundError:
            raise FileNotFoundError(
                f"tfds dataset {name!r} is neither a registered TFDS builder nor "
                f"prepared in data_dir={data_dir}"
            ) from None
        if not builder.is_prepared():
            raise FileNotFoundError(
                f"tfds dataset {name!r} is not prepared in data_dir={data_dir} "
                f"(looked in {builder.data_dir}); prepare it first, e.g. "
                f"`tfds build {name} --data_dir=... --file_format=array_record`"
            )
        self.features = builder.info.features
        for key in keys:
            try:
                _feature(self.features, key)
            except KeyError:
                raise KeyError(
                    f"tfds dataset {name!r} has no feature {key!r}; features: "
                    f"{sorted(self.features)}"
                ) from None
        self._records = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        self._description = (f"{type(self).__name__}({name!r}, split={split!r}, "
                             f"data_dir={data_dir!r})")

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return self._description


def _uint8_image(image: np.ndarray, index: int) -> np.ndarray:
    """A TFDS image [H, W] or [H, W, C] of integers in 0..255 -> uint8 [H, W, C]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.integer) or image.min() < 0 or image.max() > 255:
            raise ValueError(
                f"tfds image {index} is {image.dtype} outside 0..255; cannot make it uint8"
            )
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


class TfdsSource(_TfdsRecords):
    """A labelled TFDS image dataset prepared as array_record in data_dir, read at random.

    Args:
      name: TFDS name, e.g. 'mnist' or 'cifar10:3.0.2'.
      split: TFDS split, e.g. 'train' or 'test[:10%]'.
      data_dir: the TFDS data directory (default: TFDS's own default).
      image_key, label_key: feature names of the image and the class label.
      image_size: None keeps the stored images (they must share one size to be
        batched); S > 0 resizes each on the host to uint8 [S, S, C] with
        `resize_and_centre_crop` (shorter side to S, central S x S crop), for
        datasets of mixed sizes such as ImageNet. Device-side augmentation
        (e.g. a random resized crop to data.image_size) then starts from S x S.

    Raises:
      ValueError: image_size <= 0, or the label feature is not a ClassLabel.
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
            raise ValueError(f"tfds dataset {name!r}: image_size must be a positive number of "
                             f"pixels, got {image_size}")
        super().__init__(name, split, data_dir, (image_key, label_key))
        if not hasattr(self.features[label_key], "num_classes"):
            raise ValueError(f"tfds dataset {name!r}: feature {label_key!r} is not a ClassLabel")
        self._image_key, self._label_key = image_key, label_key
        self._image_size = image_size
        self.num_classes = int(self.features[label_key].num_classes)
        self.image_shape = _image_shape(tuple(self.features[image_key].shape), image_size)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        record = self._records[index]
        image = _uint8_image(record[self._image_key], index)
        if self._image_size:
            image = resize_and_centre_crop(image, self._image_size)
        return {"image": image, "label": np.int32(record[self._label_key])}


class TfdsCaptionSource(_TfdsRecords):
    """Image + first caption of a TFDS caption dataset (see `jaxssl.data.captions`).

    Records: {'image': uint8 [S, S, C], 'tokens': int32 [length]} (byte
    tokens, EOS, PAD). No labels. `spec` is a parsed 'tfds_captions:...' name.
    """

    def __init__(self, spec: captions.CaptionDataSpec, split: str,
                 data_dir: str | os.PathLike | None = None):
        super().__init__(spec.name, split, data_dir, (spec.image_key, spec.caption_key))
        self.spec = spec
        self.tokenizer = text.ByteTokenizer(num_sentinels=0)
        self.image_shape = _image_shape(tuple(_feature(self.features, spec.image_key).shape),
                                        spec.image_size)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        record = self._records[index]
        image = _uint8_image(_feature(record, self.spec.image_key), index)
        if self.spec.image_size:
            image = resize_and_centre_crop(image, self.spec.image_size)
        caption = captions.first_caption(_feature(record, self.spec.caption_key))
        tokens = captions.tokenize_captions(self.tokenizer, [caption], self.spec.length)[0]
        return {"image": image, "tokens": tokens}


def _split_npz_path(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """[data_dir/{split}.npz], the one file of a split."""
    return [Path(data_dir) / f"{split}.npz"]


def _on_split_npz(load_file: Callable[[Path], ArraySource]) -> Callable[[Any, str], ArraySource]:
    """Turns a loader of one file into a loader of (data_dir, split)."""
    return lambda data_dir, split: load_file(_split_npz_path(data_dir, split)[0])


_PathsFn = Callable[[Any, str], list[Path]]
_LoadFn = Callable[[Any, str], ArraySource]
# name -> (files that must exist for (data_dir, split), loader of (data_dir, split)).
_FILE_DATASETS: dict[str, tuple[_PathsFn, _LoadFn]] = {
    "mnist": (_mnist_paths, load_mnist_like),
    "fashion_mnist": (_mnist_paths, load_mnist_like),
    "cifar10_jpeg": (_split_npz_path, _on_split_npz(load_cifar10_jpeg)),
    "npz": (_split_npz_path, _on_split_npz(load_npz)),
}
_TFDS_PREFIX = "tfds:"
_SYNTHETIC_PREFIX = "synthetic:"
VALID_NAMES: Sequence[str] = ("digits", *_FILE_DATASETS, _TFDS_PREFIX + "NAME",
                              _SYNTHETIC_PREFIX + "HxWxC", captions.TFDS_CAPTIONS_PREFIX + "NAME")


def synthetic_source(shape: str, split: str, num_records: int = 2048,
                     num_classes: int = 10) -> ArraySource:
    """Uniform random uint8 images of shape 'HxWxC' and random labels, for benchmarks.

    Deterministic per split; carries no signal, so only speed means anything.
    """
    try:
        height, width, channels = (int(d) for d in shape.split("x"))
    except ValueError:
        raise ValueError(f"synthetic dataset shape must look like 32x32x3, got {shape!r}") from None
    rng = np.random.default_rng(zlib.crc32(split.encode()))
    images = rng.integers(0, 256, (num_records, height, width, channels), dtype=np.uint8)
    return ArraySource(images, rng.integers(0, num_classes, num_records), num_classes)


def get_source(name: str, split: str, data_dir: str | os.PathLike | None = None):
    """The source for dataset `name` (see the module docstring) and `split`.

    Raises:
      ValueError: unknown name (with the nearest valid one), or bad split.
      FileNotFoundError: the dataset's files (or the prepared TFDS dataset)
        are not in data_dir; the message names the dataset and the paths.
    """
    data_dir = data_dir or None  # configs spell "no data_dir" as "".
    if text.is_text_dataset(name):
        return text.get_text_source(name, split, data_dir)
    if captions.is_caption_dataset(name):
        return TfdsCaptionSource(captions.parse_caption_dataset(name), split, data_dir)
    if name.startswith(_TFDS_PREFIX):
        tfds_name, _, query = name[len(_TFDS_PREFIX):].partition("?")
        options = text.parse_options(name, query, {"image_size": int})
        return TfdsSource(tfds_name, split, data_dir, **options)
    if name.startswith(_SYNTHETIC_PREFIX):
        return synthetic_source(name[len(_SYNTHETIC_PREFIX):], split)
    if name == "digits":
        return load_digits_split(split)
    if name not in _FILE_DATASETS:
        nearest = difflib.get_close_matches(name, VALID_NAMES, n=1)
        hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(VALID_NAMES)}.{hint}")
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs data_dir (the folder holding its files)")
    required_paths, load = _FILE_DATASETS[name]
    missing = [str(p) for p in required_paths(data_dir, split) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"dataset {name!r} split {split!r}: missing {', '.join(missing)}")
    return load(data_dir, split)
