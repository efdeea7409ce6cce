"""Labelled image data sets held in memory: the file formats and their loaders.

Every loader returns an `ArraySource`: ``__len__``, ``__getitem__(i) ->
{'image': uint8 [H, W, C], 'label': int32 scalar}``, ``num_classes`` and
``image_shape`` (H, W, C). Files are read and decoded whole when the source
is made, so a corrupt file fails there (before a run writes anything), as a
`DataError` naming the file (and, for a JPEG, the record index).

- MNIST-format gzipped IDX files (`read_idx_gz`, `load_mnist_like`);
- ``.npz`` files of arrays 'image' and 'label' (`load_npz`);
- CIFAR-10 as concatenated JPEGs in a ``.npz`` (`load_cifar10_jpeg`);
- scikit-learn's embedded 8x8 digits (`load_digits_split`);
- random images for benchmarks (`synthetic_source`).

Paths given here are used as they are; `jaxssl.data.sources.get_source`
resolves a config's data_dir first (`jaxssl.data.root`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxssl.errors import ConfigError, DataError

# IDX type codes (third magic byte) -> element dtype; the data is big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILE_PREFIX = {"train": "train", "test": "t10k"}
_MNIST_NUM_CLASSES = 10
_CIFAR10_NUM_CLASSES = 10
_DIGITS_NUM_CLASSES = 10
_DIGITS_MAX_VALUE = 16  # sklearn digits pixels are counts 0..16.
_JPEG_DECODE_CHUNK = 1000  # images per thread-pool task.
# What reading a damaged file raises: gzip.BadGzipFile and PIL's errors are
# OSErrors, a truncated stream an EOFError, a bad deflate block zlib.error, a
# truncated or random .npz BadZipFile or ValueError (np.load's "pickled data").
_CORRUPT_FILE_ERRORS = (OSError, EOFError, ValueError, zlib.error, zipfile.BadZipFile)


@contextlib.contextmanager
def _reading(path: str | os.PathLike) -> Iterator[None]:
    """Turns any error of reading or checking `path` into one DataError naming the file."""
    try:
        yield
    except DataError as error:
        if str(path) in str(error):
            raise
        raise DataError(f"{path}: {error}") from error
    except _CORRUPT_FILE_ERRORS as error:
        raise DataError(f"{path}: corrupt or unreadable ({type(error).__name__}: {error})") from error


class ArraySource:
    """In-memory source over whole arrays.

    Args:
      images: uint8 [N, H, W, C].
      labels: integer [N], each in [0, num_classes); stored as int32.
      num_classes: number of classes.

    Raises:
      DataError: wrong dtype or rank, labels of the wrong length or out of range.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(
                f"images must be uint8 [N, H, W, C], got {images.dtype} {images.shape}")
        if labels.shape != images.shape[:1]:
            raise DataError(f"labels must have shape [{images.shape[0]}], got {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"labels must lie in [0, {num_classes}), got range "
                            f"[{labels.min()}, {labels.max()}]")
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

    Raises:
      DataError: a bad gzip stream, a truncated file, a bad header or a
        payload of the wrong size; the message names the file.
    """
    with _reading(path):
        with gzip.open(path, "rb") as f:
            raw = f.read()
        if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
            raise DataError(f"{path}: not an IDX file (bad magic number)")
        type_code, ndim = raw[2], raw[3]
        if type_code not in _IDX_DTYPES:
            raise DataError(f"{path}: unknown IDX type code 0x{type_code:02x}")
        dtype = _IDX_DTYPES[type_code]
        header_size = 4 + 4 * ndim
        if len(raw) < header_size:
            raise DataError(f"{path}: truncated IDX header")
        shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
        expected = int(np.prod(shape)) * dtype.itemsize
        if len(raw) - header_size != expected:
            raise DataError(f"{path}: IDX payload is {len(raw) - header_size} bytes, "
                            f"shape {shape} of {dtype} needs {expected}")
        data = np.frombuffer(raw, dtype, offset=header_size).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def mnist_paths(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """[images path, labels path] of an MNIST-format split; DataError for another split."""
    if split not in MNIST_FILE_PREFIX:
        raise DataError(f"MNIST-format split must be one of {sorted(MNIST_FILE_PREFIX)}, "
                        f"got {split!r}")
    prefix = MNIST_FILE_PREFIX[split]
    return [Path(data_dir) / f"{prefix}-images-idx3-ubyte.gz",
            Path(data_dir) / f"{prefix}-labels-idx1-ubyte.gz"]


def load_mnist_like(data_dir: str | os.PathLike, split: str) -> ArraySource:
    """MNIST or Fashion-MNIST split ('train' | 'test'): uint8 [N, 28, 28, 1]."""
    images_path, labels_path = mnist_paths(data_dir, split)
    images = read_idx_gz(images_path)[..., None]
    labels = read_idx_gz(labels_path)
    with _reading(f"{images_path} + {labels_path}"):  # a mismatch is the pair's fault
        return ArraySource(images, labels, _MNIST_NUM_CLASSES)


def _read_npz(path: str | os.PathLike, keys: tuple[str, ...],
              optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """{key: array} of `keys` (all required) and of those `optional` keys the file holds."""
    with _reading(path):
        if not zipfile.is_zipfile(path):  # else np.load takes it for a pickle, and says so
            raise DataError(f"{path}: corrupt or not an .npz file (no zip archive)")
    with _reading(path), np.load(path) as data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise DataError(f"{path}: no array {', '.join(missing)} (holds "
                            f"{', '.join(data.files) or 'nothing'})")
        return {k: np.asarray(data[k]) for k in (*keys, *optional) if k in data.files}


def load_npz(path: str | os.PathLike) -> ArraySource:
    """Arrays 'image' (uint8 [N, H, W] or [N, H, W, C]) and 'label' ([N]).

    num_classes comes from an optional scalar array 'num_classes' in the file
    (store it when a split may lack some classes), else max(label) + 1.
    """
    arrays = _read_npz(path, ("image", "label"), optional=("num_classes",))
    images, labels = arrays["image"], arrays["label"]
    with _reading(path):  # e.g. labels of another length than the images
        if images.ndim == 3:
            images = images[..., None]
        if "num_classes" in arrays:
            if arrays["num_classes"].shape != ():
                raise DataError(f"num_classes must be a scalar, got shape "
                                f"{arrays['num_classes'].shape}")
            num_classes = int(arrays["num_classes"])
        else:
            num_classes = int(labels.max()) + 1 if labels.size else 0
        return ArraySource(images, labels, num_classes)


def decode_jpegs(jpeg: np.ndarray, offsets: np.ndarray,
                 num_threads: int | None = None) -> np.ndarray:
    """Decodes concatenated JPEGs of one common size into uint8 [N, H, W, 3].

    Args:
      jpeg: uint8 [B], all images' JPEG bytes back to back.
      offsets: int [N + 1], non-decreasing, within [0, B]; image i is
        jpeg[offsets[i]:offsets[i + 1]].
      num_threads: decoding threads (default: the CPU count, at most 8).

    Raises:
      DataError: bad offsets, or a record that does not decode or differs in
        size from record 0; the message names the record index.
    """
    jpeg_bytes = memoryview(np.ascontiguousarray(jpeg, np.uint8))
    offsets = np.asarray(offsets, np.int64)
    num_images = len(offsets) - 1
    if num_images <= 0:
        raise DataError("no images to decode: offsets must hold N + 1 >= 2 entries")
    if offsets[0] < 0 or offsets[-1] > len(jpeg_bytes) or np.any(np.diff(offsets) < 0):
        raise DataError(f"JPEG offsets must rise from >= 0 to <= {len(jpeg_bytes)} bytes, got "
                        f"{offsets[0]}..{offsets[-1]}")

    def decode(i: int, out: np.ndarray | None = None) -> tuple[int, int]:
        """Decodes record i into out[i] (if given); returns its (width, height)."""
        where = f"JPEG record {i} (bytes {offsets[i]}..{offsets[i + 1]})"
        try:
            with Image.open(io.BytesIO(jpeg_bytes[offsets[i]:offsets[i + 1]]),
                            formats=["JPEG"]) as image:
                if out is not None:
                    if image.size != out.shape[2:0:-1]:
                        raise DataError(f"{where} is {image.size[0]}x{image.size[1]}, expected "
                                        f"{out.shape[2]}x{out.shape[1]} like record 0")
                    # Straight into `out`: no intermediate array per image.
                    out[i] = image if image.mode == "RGB" else image.convert("RGB")
                return image.size
        except DataError:
            raise
        except UnidentifiedImageError:  # its message names only an anonymous BytesIO
            raise DataError(f"{where} is not a JPEG image") from None
        except (OSError, SyntaxError, ValueError) as error:  # PIL's other decode errors
            raise DataError(f"{where} does not decode ({type(error).__name__}: {error})") from None

    width, height = decode(0)
    out = np.empty((num_images, height, width, 3), np.uint8)

    def decode_range(indices: range) -> None:
        for i in indices:
            decode(i, out)

    chunks = [range(start, min(start + _JPEG_DECODE_CHUNK, num_images))
              for start in range(0, num_images, _JPEG_DECODE_CHUNK)]
    num_threads = num_threads or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(num_threads) as pool:
        list(pool.map(decode_range, chunks))  # list() re-raises worker errors.
    return out


def load_cifar10_jpeg(path: str | os.PathLike) -> ArraySource:
    """CIFAR-10 stored as JPEGs ('jpeg', 'offsets', 'label'): uint8 [N, 32, 32, 3].

    Every record is decoded here, so a bad one fails now: DataError naming
    the file and the record index.
    """
    arrays = _read_npz(path, ("jpeg", "offsets", "label"))
    with _reading(path):
        images = decode_jpegs(arrays["jpeg"], arrays["offsets"])
        return ArraySource(images, arrays["label"], _CIFAR10_NUM_CLASSES)


def load_digits_split(split: str, test_fraction: float = 0.2, seed: int = 0) -> ArraySource:
    """scikit-learn's 1,797 8x8 digits as uint8 [N, 8, 8, 1], values 0..255.

    The split is class-stratified and deterministic: within each class a
    fixed-seed permutation puts round(test_fraction * class size) examples in
    'test' and the rest in 'train'. Both splits keep the original order.
    """
    from sklearn.datasets import load_digits

    if split not in ("train", "test"):
        raise DataError(f"digits split must be 'train' or 'test', got {split!r}")
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


def synthetic_source(shape: str, split: str, num_records: int = 2048,
                     num_classes: int = 10) -> ArraySource:
    """Uniform random uint8 images of shape 'HxWxC' and random labels, for benchmarks.

    Deterministic per split; carries no signal, so only speed means anything.
    """
    try:
        height, width, channels = (int(d) for d in shape.split("x"))
    except ValueError:
        raise ConfigError(f"synthetic dataset shape must look like 32x32x3, got {shape!r}") from None
    rng = np.random.default_rng(zlib.crc32(split.encode()))
    images = rng.integers(0, 256, (num_records, height, width, channels), dtype=np.uint8)
    return ArraySource(images, rng.integers(0, num_classes, num_records), num_classes)
