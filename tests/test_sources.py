"""Image sources: file parsing, splits, name dispatch and its errors, TFDS round trip,
host-side resizing of TFDS images of mixed sizes."""
import gzip
import io
import re
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from jaxssl.data import pipeline, sources
from jaxssl.data.sources import get_source


def write_idx_gz(path, array, type_code):
    """Writes `array` as a gzipped IDX file, header built field by field."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    with gzip.open(path, "wb") as f:
        f.write(header + big_endian.tobytes())


def write_mnist_split(data_dir, prefix, images, labels):
    write_idx_gz(data_dir / f"{prefix}-images-idx3-ubyte.gz", images, 0x08)
    write_idx_gz(data_dir / f"{prefix}-labels-idx1-ubyte.gz", labels, 0x08)


@pytest.mark.parametrize(
    "dtype, type_code, shape",
    [(np.uint8, 0x08, (3, 4, 5)), (np.int32, 0x0C, (7,)), (np.float32, 0x0D, (2, 3))],
)
def test_read_idx_gz_round_trips_dtype_and_shape(tmp_path, dtype, type_code, shape):
    rng = np.random.default_rng(0)
    array = (rng.normal(size=shape) * 100).astype(dtype)
    write_idx_gz(tmp_path / "a.gz", array, type_code)
    read = sources.read_idx_gz(tmp_path / "a.gz")
    assert read.dtype == np.dtype(dtype) and read.shape == shape
    np.testing.assert_array_equal(read, array)


def test_read_idx_gz_rejects_bad_magic_and_wrong_payload_size(tmp_path):
    with gzip.open(tmp_path / "bad_magic.gz", "wb") as f:
        f.write(bytes([1, 0, 0x08, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(ValueError, match="magic"):
        sources.read_idx_gz(tmp_path / "bad_magic.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 7]))  # declares 3 bytes, holds 2
    with pytest.raises(ValueError, match="payload"):
        sources.read_idx_gz(tmp_path / "short.gz")


def test_mnist_like_source_adds_channel_axis(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    labels = rng.integers(0, 10, 5).astype(np.uint8)
    write_mnist_split(tmp_path, "t10k", images, labels)
    source = get_source("fashion_mnist", "test", tmp_path)
    assert len(source) == 5 and source.num_classes == 10 and source.image_shape == (6, 7, 1)
    for i in range(5):
        example = source[i]
        np.testing.assert_array_equal(example["image"], images[i][..., None])
        assert example["label"].dtype == np.int32 and example["label"] == labels[i]


@pytest.mark.parametrize("image_shape", [(5, 5, 3), (4, 6)])
def test_npz_source(tmp_path, image_shape):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (6, *image_shape), dtype=np.uint8)
    labels = np.array([0, 3, 1, 3, 2, 0])
    np.savez(tmp_path / "val.npz", image=images, label=labels)
    source = get_source("npz", "val", tmp_path)
    assert source.num_classes == 4 and len(source) == 6
    expected = images if images.ndim == 4 else images[..., None]
    assert source.image_shape == expected.shape[1:]
    np.testing.assert_array_equal(np.stack([source[i]["image"] for i in range(6)]), expected)
    np.testing.assert_array_equal([source[i]["label"] for i in range(6)], labels)


def test_cifar10_jpeg_source_decodes_to_the_encoded_pixels(tmp_path):
    rng = np.random.default_rng(3)
    # Smooth images (a colour plus a gentle ramp) survive JPEG almost exactly.
    ramp = np.linspace(0, 60, 32)[None, :, None, None] + np.linspace(0, 60, 32)[None, None, :, None]
    images = (rng.integers(0, 130, (5, 1, 1, 3)) + ramp).astype(np.uint8)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        encoded.append(np.frombuffer(buffer.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])])
    labels = np.array([9, 0, 4, 4, 1], np.uint8)
    np.savez(tmp_path / "train.npz", jpeg=np.concatenate(encoded), offsets=offsets, label=labels)

    source = get_source("cifar10_jpeg", "train", tmp_path)
    assert len(source) == 5 and source.image_shape == (32, 32, 3) and source.num_classes == 10
    decoded = np.stack([source[i]["image"] for i in range(5)])
    assert decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - images).mean() < 2.0
    np.testing.assert_array_equal([source[i]["label"] for i in range(5)], labels)


def test_digits_split_is_deterministic_stratified_and_partitions_the_data():
    train, test = get_source("digits", "train"), get_source("digits", "test")
    assert train.image_shape == test.image_shape == (8, 8, 1)
    assert train.images.dtype == np.uint8 and train.num_classes == 10
    np.testing.assert_array_equal(get_source("digits", "test").images, test.images)

    digits = load_digits()
    expected_images = np.round(digits.images * 255.0 / 16.0).astype(np.uint8)

    def rows(images, labels):
        return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels))

    all_images = np.concatenate([train.images, test.images])[..., 0]
    all_labels = np.concatenate([train.labels, test.labels])
    assert rows(all_images, all_labels) == rows(expected_images, digits.target)
    class_sizes = np.bincount(digits.target)
    np.testing.assert_array_equal(np.bincount(test.labels), np.round(0.2 * class_sizes))


def test_unknown_name_lists_valid_names_and_suggests_nearest():
    with pytest.raises(ValueError, match="'fashion_mnist'\\?") as error:
        get_source("fashion-mnist", "train", "/nowhere")
    for name in ("digits", "mnist", "cifar10_jpeg", "npz", "tfds:NAME"):
        assert name in str(error.value)


def test_missing_files_name_dataset_and_exact_paths(tmp_path):
    write_idx_gz(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((1, 2, 2), np.uint8), 0x08)
    with pytest.raises(FileNotFoundError) as error:
        get_source("mnist", "train", tmp_path)
    message = str(error.value)
    assert "'mnist'" in message and str(tmp_path / "train-labels-idx1-ubyte.gz") in message
    assert str(tmp_path / "train-images-idx3-ubyte.gz") not in message
    with pytest.raises(ValueError, match="'npz' needs data_dir"):
        get_source("npz", "train", "")
    missing_npz = re.escape(str(tmp_path / "test.npz"))
    with pytest.raises(FileNotFoundError, match="'cifar10_jpeg'.*" + missing_npz):
        get_source("cifar10_jpeg", "test", tmp_path)


def test_tfds_dataset_not_prepared_raises_without_downloading(tmp_path):
    for name in ("mnist", "no_such_dataset"):
        with pytest.raises(FileNotFoundError, match=f"'{name}'.*{re.escape(str(tmp_path))}"):
            get_source(f"tfds:{name}", "train", tmp_path)
    assert not list(tmp_path.rglob("*array_record*"))


_TINY_IMAGES = np.random.default_rng(4).integers(0, 256, (20, 8, 8, 1), dtype=np.uint8)
_TINY_LABELS = np.arange(20) % 3
_TINY_TRAIN = 14


class TinyGreyImages(tfds.core.GeneratorBasedBuilder):
    """20 random 8x8x1 images: examples 0..13 are 'train', 14..19 'test'."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        # A Tensor feature, not tfds.features.Image: encoding PNGs would import
        # TensorFlow (about 20 s); reading back is the same array_record path.
        features = tfds.features.FeaturesDict(
            {
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=3),
            }
        )
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(range(_TINY_TRAIN)),
            "test": self._generate_examples(range(_TINY_TRAIN, 20)),
        }

    def _generate_examples(self, indices):
        for i in indices:
            yield i, {"image": _TINY_IMAGES[i], "label": _TINY_LABELS[i]}


def test_tfds_source_reads_a_locally_prepared_array_record_dataset(tmp_path):
    tfds.disable_progress_bar()
    builder = TinyGreyImages(data_dir=tmp_path, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False)
    )
    for split, indices in (("train", range(_TINY_TRAIN)), ("test", range(_TINY_TRAIN, 20))):
        source = get_source("tfds:tiny_grey_images", split, data_dir=tmp_path)
        assert len(source) == len(indices)
        assert source.num_classes == 3 and source.image_shape == (8, 8, 1)
        images = np.stack([source[i]["image"] for i in range(len(source))])
        labels = np.array([source[i]["label"] for i in range(len(source))])
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        np.testing.assert_array_equal(images, _TINY_IMAGES[list(indices)])
        np.testing.assert_array_equal(labels, _TINY_LABELS[list(indices)])


# [H, W] of each image: portrait, landscape, square needing a resize, square at size.
_MIXED_SIDES = ((12, 6), (6, 10), (9, 9), (6, 6))
_MIXED_IMAGES = [np.random.default_rng(5 + i).integers(0, 256, (h, w, 3), dtype=np.uint8)
                 for i, (h, w) in enumerate(_MIXED_SIDES)]


class MixedSizeImages(tfds.core.GeneratorBasedBuilder):
    """4 random RGB images of different sizes (`_MIXED_SIDES`), all in 'train'."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="bytes"),
            "label": tfds.features.ClassLabel(num_classes=2),
        })
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i, image in enumerate(_MIXED_IMAGES):
            yield i, {"image": image, "label": i % 2}


def test_tfds_source_resizes_mixed_sizes_on_the_host_so_batches_stack(tmp_path):
    tfds.disable_progress_bar()
    MixedSizeImages(data_dir=tmp_path, file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    source = get_source("tfds:mixed_size_images?image_size=6", "train", data_dir=tmp_path)
    assert source.image_shape == (6, 6, 3)
    images = [source[i]["image"] for i in range(len(source))]
    assert all(im.shape == (6, 6, 3) and im.dtype == np.uint8 for im in images)
    # Shorter side already 6: no resampling, only the central crop.
    np.testing.assert_array_equal(images[0], _MIXED_IMAGES[0][3:9])
    np.testing.assert_array_equal(images[1], _MIXED_IMAGES[1][:, 2:8])
    np.testing.assert_array_equal(images[3], _MIXED_IMAGES[3])
    batch = pipeline.example_batch(source, 4)
    assert batch["image"].shape == (4, 6, 6, 3) and batch["image"].dtype == np.uint8
    for size in (0, -2):
        with pytest.raises(ValueError, match=f"image_size must be a positive .* got {size}"):
            get_source(f"tfds:mixed_size_images?image_size={size}", "train", data_dir=tmp_path)
    with pytest.raises(ValueError, match="bad option 'size=6'"):
        get_source("tfds:mixed_size_images?size=6", "train", data_dir=tmp_path)
