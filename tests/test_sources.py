"""Image sources: file parsing, splits, name dispatch and its errors, the data root,
corrupt files (one DataError naming the file), TFDS round trip, host-side resizing of
TFDS images of mixed sizes."""
import glob
import gzip
import io
import os
import re
import struct

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from jaxssl import config as config_lib, methods
from jaxssl.data import image_files, pipeline, root
from jaxssl.data.sources import get_source
from jaxssl.errors import ConfigError, DataError


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
    read = image_files.read_idx_gz(tmp_path / "a.gz")
    assert read.dtype == np.dtype(dtype) and read.shape == shape
    np.testing.assert_array_equal(read, array)


def test_read_idx_gz_rejects_bad_magic_and_wrong_payload_size(tmp_path):
    with gzip.open(tmp_path / "bad_magic.gz", "wb") as f:
        f.write(bytes([1, 0, 0x08, 1, 0, 0, 0, 1, 7]))
    with pytest.raises(DataError, match="magic"):
        image_files.read_idx_gz(tmp_path / "bad_magic.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 7]))  # declares 3 bytes, holds 2
    with pytest.raises(DataError, match="payload"):
        image_files.read_idx_gz(tmp_path / "short.gz")


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


def write_cifar10_jpeg(path, images, labels):
    """Writes uint8 [N, H, W, 3] `images` as the cifar10_jpeg .npz (quality-95 JPEGs)."""
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        encoded.append(np.frombuffer(buffer.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])])
    np.savez(path, jpeg=np.concatenate(encoded), offsets=offsets, label=labels)
    return offsets


def test_cifar10_jpeg_source_decodes_to_the_encoded_pixels(tmp_path):
    rng = np.random.default_rng(3)
    # Smooth images (a colour plus a gentle ramp) survive JPEG almost exactly.
    ramp = np.linspace(0, 60, 32)[None, :, None, None] + np.linspace(0, 60, 32)[None, None, :, None]
    images = (rng.integers(0, 130, (5, 1, 1, 3)) + ramp).astype(np.uint8)
    labels = np.array([9, 0, 4, 4, 1], np.uint8)
    write_cifar10_jpeg(tmp_path / "train.npz", images, labels)

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
    with pytest.raises(ConfigError, match="'fashion_mnist'\\?") as error:
        get_source("fashion-mnist", "train", "/nowhere")
    for name in ("digits", "mnist", "cifar10_jpeg", "npz", "tfds:NAME"):
        assert name in str(error.value)


def test_missing_files_name_dataset_and_exact_paths(tmp_path):
    write_idx_gz(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((1, 2, 2), np.uint8), 0x08)
    with pytest.raises(DataError) as error:
        get_source("mnist", "train", tmp_path)
    message = str(error.value)
    assert "'mnist'" in message and str(tmp_path / "train-labels-idx1-ubyte.gz") in message
    assert str(tmp_path / "train-images-idx3-ubyte.gz") not in message
    with pytest.raises(ConfigError, match="'npz' needs data_dir"):
        get_source("npz", "train", "")
    missing_npz = re.escape(str(tmp_path / "test.npz"))
    with pytest.raises(DataError, match="'cifar10_jpeg'.*" + missing_npz):
        get_source("cifar10_jpeg", "test", tmp_path)


def test_relative_data_dir_resolves_against_jaxssl_data_dir_else_the_cwd(tmp_path, monkeypatch):
    root_dir, cwd = tmp_path / "root", tmp_path / "cwd"
    (root_dir / "fashion-mnist").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("JAXSSL_DATA_DIR", str(root_dir))
    assert root.resolve_data_dir("fashion-mnist") == str(root_dir / "fashion-mnist")
    assert root.resolve_data_dir("a/../b/input.txt") == str(root_dir / "b" / "input.txt")
    assert root.resolve_data_dir(str(tmp_path / "abs")) == str(tmp_path / "abs")
    monkeypatch.delenv("JAXSSL_DATA_DIR")
    assert root.resolve_data_dir("fashion-mnist") == str(cwd / "fashion-mnist")
    assert root.resolve_data_dir(str(tmp_path / "abs")) == str(tmp_path / "abs")
    with pytest.raises(ConfigError, match="empty"):
        root.resolve_data_dir("")


def test_get_source_reads_a_relative_data_dir_under_the_data_root(tmp_path, monkeypatch):
    images = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    (tmp_path / "fashion-mnist").mkdir()
    write_mnist_split(tmp_path / "fashion-mnist", "t10k", images, np.array([1, 2], np.uint8))
    monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path))
    monkeypatch.chdir("/")  # not the cwd: the data root
    source = get_source("fashion_mnist", "test", "fashion-mnist")
    np.testing.assert_array_equal(source.images[..., 0], images)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "mnist" / "t10k-images"))):
        get_source("mnist", "test", "mnist")


def test_missing_data_says_when_jaxssl_data_dir_was_not_set(tmp_path, monkeypatch):
    """A relative data path missing from the cwd because $JAXSSL_DATA_DIR was forgotten: the
    error says so; with the variable set, or for an absolute path elsewhere, it does not."""
    note = "(JAXSSL_DATA_DIR is not set, so relative data paths are read from the current directory)"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JAXSSL_DATA_DIR", raising=False)
    with pytest.raises(DataError) as error:
        get_source("mnist", "test", "mnist")
    assert str(error.value).endswith(f"t10k-labels-idx1-ubyte.gz {note}")
    with pytest.raises(DataError) as error:
        get_source("text:tiny_shakespeare?tokenizer=byte", "train", None)
    assert str(error.value).endswith(f"{tmp_path}/tiny-shakespeare/input.txt {note}")
    with pytest.raises(DataError) as error:
        get_source("mnist", "test", "/no/such/folder")
    assert "JAXSSL_DATA_DIR" not in str(error.value)
    monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path / "root"))
    with pytest.raises(DataError) as error:
        get_source("mnist", "test", "mnist")
    assert "JAXSSL_DATA_DIR" not in str(error.value)


@pytest.mark.parametrize("damage", ["random bytes", "truncated", "damaged middle"])
def test_corrupt_npz_is_one_data_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "train.npz"
    image = np.random.default_rng(6).integers(1, 256, (50, 8, 8), dtype=np.uint8)
    np.savez(path, image=image, label=np.zeros(50, np.int64))
    data = bytearray(path.read_bytes())
    if damage == "random bytes":
        data = np.random.default_rng(6).bytes(len(data))
    elif damage == "truncated":
        data = data[:len(data) // 2]
    else:  # the zip directory survives; the stored image array does not (CRC mismatch)
        data[200:1200] = bytes(1000)
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=re.escape(str(path))):
        get_source("npz", "train", tmp_path)


def test_npz_without_its_arrays_or_with_bad_ones_names_the_file(tmp_path):
    path, image = tmp_path / "train.npz", np.zeros((2, 4, 4), np.uint8)
    for arrays, problem in (({"image": image}, "no array label"),
                            ({"image": image, "label": [0, 1, 1]}, "labels must have shape"),
                            ({"image": image, "label": [0, 1], "num_classes": [2, 2]},
                             "num_classes must be a scalar")):
        np.savez(path, **arrays)
        with pytest.raises(DataError, match=re.escape(str(path)) + ": " + problem):
            get_source("npz", "train", tmp_path)


@pytest.mark.parametrize("damage", ["bad gzip stream", "truncated", "not gzip"])
def test_corrupt_gzipped_idx_is_one_data_error_naming_the_file(tmp_path, damage):
    images = np.random.default_rng(7).integers(0, 256, (20, 28, 28), dtype=np.uint8)
    write_mnist_split(tmp_path, "train", images, np.zeros(20, np.uint8))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    if damage == "bad gzip stream":
        data[len(data) // 2:len(data) // 2 + 64] = bytes(64)  # breaks the deflate stream/CRC
    elif damage == "truncated":
        data = data[:len(data) // 2]
    else:
        data = bytearray(b"plain bytes, no gzip header")
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=re.escape(str(path))):
        get_source("mnist", "train", tmp_path)


@pytest.mark.parametrize("damage", ["zeroed", "truncated", "16x16"])
def test_a_jpeg_record_that_does_not_decode_names_the_file_and_the_index(tmp_path, damage):
    images = np.random.default_rng(8).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "train.npz"
    if damage == "16x16":  # decodes, but not to the size of the others
        other = tmp_path / "other.npz"
        offsets = write_cifar10_jpeg(other, images[:, :16, :16], np.arange(4))
        with np.load(other) as small:
            record_2 = small["jpeg"][offsets[2]:offsets[3]]
    offsets = write_cifar10_jpeg(path, images, np.arange(4))
    with np.load(path) as data:
        jpeg = data["jpeg"].copy()
    if damage == "16x16":
        jpeg = np.concatenate([jpeg[:offsets[2]], record_2, jpeg[offsets[3]:]])
        offsets = np.concatenate([offsets[:3], offsets[3:] - (offsets[3] - offsets[2])
                                  + len(record_2)])
    elif damage == "zeroed":
        jpeg[offsets[2]:offsets[3]] = 0  # record 2's bytes, header included, become zeros
    else:  # record 2 keeps its header and loses the second half of its data
        cut = (offsets[2] + offsets[3]) // 2
        jpeg = np.concatenate([jpeg[:cut], jpeg[offsets[3]:]])
        offsets = np.concatenate([offsets[:3], offsets[3:] - (offsets[3] - cut)])
    np.savez(path, jpeg=jpeg, offsets=offsets, label=np.arange(4))
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*record 2\\b"):
        get_source("cifar10_jpeg", "train", tmp_path)


def test_jpeg_offsets_out_of_range_name_the_file(tmp_path):
    path = tmp_path / "train.npz"
    np.savez(path, jpeg=np.zeros(10, np.uint8), offsets=np.array([0, 5, 20]), label=[0, 1])
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*offsets"):
        get_source("cifar10_jpeg", "train", tmp_path)


def test_tfds_dataset_not_prepared_raises_without_downloading(tmp_path):
    for name in ("mnist", "no_such_dataset"):
        with pytest.raises(DataError, match=f"'{name}'.*{re.escape(str(tmp_path))}"):
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
    with pytest.raises(DataError, match="'tiny_grey_images'.*split 'validation'.*'test', 'train'"):
        get_source("tfds:tiny_grey_images", "validation", data_dir=tmp_path)


class _UnreadableRecord:
    """Stands in for a TFDS data source whose record 3 does not decode."""

    def __init__(self, records):
        self.records = records

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        if index == 3:
            raise OSError("broken data stream when reading image file")
        return self.records[index]


def test_a_tfds_record_that_does_not_decode_is_a_data_error_through_grain(tmp_path):
    """TFDS records are read lazily, in grain's reader threads: the error must still
    reach the training loop as one DataError naming the dataset, split and record."""
    tfds.disable_progress_bar()
    TinyGreyImages(data_dir=tmp_path, file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    source = get_source("tfds:tiny_grey_images", "train", data_dir=tmp_path)
    source._records = _UnreadableRecord(source._records)
    expected = "'tiny_grey_images', split='train'.*record 3 does not read or decode.*broken"
    with pytest.raises(DataError, match=expected):
        source[3]
    loader = pipeline.train_loader(source, local_batch_size=14, seed=0, process_index=0,
                                   process_count=1, read_threads=2)
    with pytest.raises(DataError, match=expected):
        next(iter(loader))


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
        with pytest.raises(ConfigError, match=f"image_size must be a positive .* got {size}"):
            get_source(f"tfds:mixed_size_images?image_size={size}", "train", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="bad option 'size=6'"):
        get_source("tfds:mixed_size_images?size=6", "train", data_dir=tmp_path)


TINY_CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "configs", "tiny_*.py")))
TRAINING_SOURCES = [(path, {}) for path in TINY_CONFIGS] + [
    (os.path.join(os.path.dirname(__file__), "configs", "tiny_palm_e.py"),
     {"palm_e.text_mix": "0.25"})]   # scenes with the LM's text rows mixed in


@pytest.mark.parametrize("path, overrides", TRAINING_SOURCES,
                         ids=lambda v: os.path.basename(v) if isinstance(v, str) else str(v))
def test_every_training_source_describes_itself_without_object_addresses(path, overrides):
    # A checkpoint keeps repr(train source) in its input-pipeline state and a resumed run
    # must give the same string: an object address would differ in every process.
    config = config_lib.load(path, overrides)
    data = config.data

    def train_source():
        source = get_source(data.name, data.train_split, data.data_dir)
        return methods.get(config.method)(config).select_train_examples(source)

    first, second = train_source(), train_source()   # both alive: different addresses
    assert " at 0x" not in repr(first)
    assert repr(second) == repr(first)
