"""The dataset registry: `get_source(name, split, data_dir)` picks a source by name.

Every image source implements ``__len__`` and ``__getitem__(i) -> {'image',
'label'}`` where ``image`` is uint8 ``[H, W, C]`` (C is 1 for grey images) and
``label`` is an int32 scalar, and exposes ``num_classes`` and ``image_shape``
(H, W, C). Names:

- ``'digits'``: scikit-learn's embedded 8x8 digits, split 80/20 here.
- ``'mnist'``, ``'fashion_mnist'``: the standard gzipped IDX files in data_dir.
- ``'cifar10_jpeg'``: ``{split}.npz`` of JPEG bytes + offsets + labels.
- ``'npz'``: ``{split}.npz`` holding arrays ``image`` and ``label``.
- ``'synthetic:HxWxC'``: random images, for benchmarks.
- ``'tfds:NAME'``: a TFDS dataset already prepared as array_record in data_dir;
  ``'tfds:NAME?image_size=S'`` resizes each image on the host to S x S
  (shorter side to S, centre crop; see `jaxssl.data.tfds_images.TfdsSource`)
  so that images of mixed sizes (ImageNet) batch.
- ``'text:CORPUS?...'``, ``'tfds_text:NAME?...'``: token rows, see ``jaxssl.data.text``.
- ``'tfds_captions:NAME?...'``: image + caption tokens, see ``jaxssl.data.captions``.
- ``'scenes:DIGITS?...'``: digit scenes with questions (PaLM-E), see ``jaxssl.data.scenes``.

`element_spec(name, data_dir)` gives the shape and dtype of one record of a
dataset from its name alone (no data read), for ahead-of-time compiles
(`jaxssl.aot`); `jaxssl.data.pipeline.spec_example` turns it into a batch
for model initialisation.

The file formats are read by `jaxssl.data.image_files`, TFDS datasets by
`jaxssl.data.tfds_images`. data_dir is resolved by the data-root rule of
`jaxssl.data.root` (absolute as is; relative against $JAXSSL_DATA_DIR, else
the current directory).
"""
from __future__ import annotations

import difflib
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from jaxssl.data import captions, image_files, scenes, text, tfds_images, tfds_io
from jaxssl.data.image_files import ArraySource
from jaxssl.data.root import resolve_optional_data_dir, unset_root_note
from jaxssl.errors import ConfigError, DataError


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
    "mnist": (image_files.mnist_paths, image_files.load_mnist_like),
    "fashion_mnist": (image_files.mnist_paths, image_files.load_mnist_like),
    "cifar10_jpeg": (_split_npz_path, _on_split_npz(image_files.load_cifar10_jpeg)),
    "npz": (_split_npz_path, _on_split_npz(image_files.load_npz)),
}
_TFDS_PREFIX = "tfds:"
_SYNTHETIC_PREFIX = "synthetic:"
VALID_NAMES: Sequence[str] = ("digits", *_FILE_DATASETS, _TFDS_PREFIX + "NAME",
                              _SYNTHETIC_PREFIX + "HxWxC", captions.TFDS_CAPTIONS_PREFIX + "NAME",
                              scenes.SCENES_PREFIX + "DIGITS")


def get_source(name: str, split: str, data_dir: str | os.PathLike | None = None):
    """The source for dataset `name` (see the module docstring) and `split`.

    Args:
      name: a dataset name, e.g. 'cifar10_jpeg' or 'tfds:mnist?image_size=32'.
      split: e.g. 'train' or 'test'.
      data_dir: as the config says it ('' or None: none); resolved here by
        `jaxssl.data.root.resolve_data_dir`.

    Raises:
      ConfigError: unknown name (with the nearest valid one), bad options, or
        no data_dir for a dataset that needs one.
      DataError: the dataset's files
        (or the prepared TFDS dataset) are not in data_dir, the message naming
        the dataset and the paths; a bad split; a corrupt file (named).
    """
    if text.is_text_dataset(name):
        return text.get_text_source(name, split, data_dir)  # resolves data_dir itself
    if scenes.is_scenes_dataset(name):
        return scenes.get_scene_source(name, split, data_dir)
    data_dir = resolve_optional_data_dir(data_dir)
    if captions.is_caption_dataset(name):
        return tfds_images.TfdsCaptionSource(captions.parse_caption_dataset(name), split, data_dir)
    if name.startswith(_TFDS_PREFIX):
        tfds_name, query = tfds_io.split_name(name, _TFDS_PREFIX)
        options = tfds_io.parse_options(name, query, {"image_size": int})
        return tfds_images.TfdsSource(tfds_name, split, data_dir, **options)
    if name.startswith(_SYNTHETIC_PREFIX):
        return image_files.synthetic_source(name[len(_SYNTHETIC_PREFIX):], split)
    if name == "digits":
        return image_files.load_digits_split(split)
    if name not in _FILE_DATASETS:
        nearest = difflib.get_close_matches(name, VALID_NAMES, n=1)
        hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(VALID_NAMES)}.{hint}")
    if data_dir is None:
        raise ConfigError(f"dataset {name!r} needs data_dir (the folder holding its files)")
    required_paths, load = _FILE_DATASETS[name]
    missing = [str(p) for p in required_paths(data_dir, split) if not p.is_file()]
    if missing:
        raise DataError(f"dataset {name!r} split {split!r}: missing {', '.join(missing)}"
                        f"{unset_root_note(missing[0])}")
    return load(data_dir, split)


# Record shapes of the built-in image datasets, (H, W, C).
_IMAGE_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1),
                 "cifar10_jpeg": (32, 32, 3)}
# TFDS image datasets with grey images (every other one is taken to be RGB).
_GREY_TFDS = ("mnist", "fashion_mnist", "emnist", "kmnist", "binarized_mnist")


def _image_record(shape: Sequence[int]) -> dict[str, jax.ShapeDtypeStruct]:
    return {"image": jax.ShapeDtypeStruct(tuple(shape), np.uint8),
            "label": jax.ShapeDtypeStruct((), np.int32)}


def _npz_image_shape(path: Path, name: str) -> tuple[int, ...]:
    """(H, W, C) of the 'image' array of an .npz, from its header alone."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("image.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, _, _ = read_header(f)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(f"dataset {name!r}: cannot read the image shape of {path}: {error}")
    return tuple(shape[1:]) + ((1,) if len(shape) == 3 else ())


def element_spec(name: str, data_dir: str | os.PathLike | None = None
                 ) -> dict[str, jax.ShapeDtypeStruct]:
    """{key: ShapeDtypeStruct} of one record of dataset `name`, without reading its data.

    Image datasets: 'image' uint8 [H, W, C] and 'label' int32 []; text
    datasets: 'tokens', 'segment_ids', 'positions' int32 [length]; caption
    datasets: 'image' uint8 [S, S, 3] and 'tokens' int32 [length]; scenes:
    `jaxssl.data.scenes.element_spec`. Only 'npz' reads anything (the header of data_dir/train.npz). A 'tfds:' dataset needs
    ?image_size=S (its stored images may differ in size); it is taken to be RGB
    unless it is one of the MNIST family.

    Raises:
      ConfigError: unknown name, bad options, or a shape the name does not fix.
    """
    if text.is_text_dataset(name):
        length = text.parse_text_dataset(name).length
        return {k: jax.ShapeDtypeStruct((length,), np.int32)
                for k in ("tokens", "segment_ids", "positions")}
    if scenes.is_scenes_dataset(name):
        return scenes.element_spec(name)
    if captions.is_caption_dataset(name):
        spec = captions.parse_caption_dataset(name)
        if not spec.image_size:
            raise ConfigError(f"dataset {name!r}: ahead-of-time compiles need image_size=S")
        return {"image": jax.ShapeDtypeStruct((spec.image_size, spec.image_size, 3), np.uint8),
                "tokens": jax.ShapeDtypeStruct((spec.length,), np.int32)}
    if name.startswith(_TFDS_PREFIX):
        tfds_name, query = tfds_io.split_name(name, _TFDS_PREFIX)
        size = tfds_io.parse_options(name, query, {"image_size": int}).get("image_size")
        if not size:
            raise ConfigError(f"dataset {name!r}: ahead-of-time compiles need ?image_size=S")
        grey = tfds_name.split(":")[0].split("/")[0] in _GREY_TFDS
        return _image_record((size, size, 1 if grey else 3))
    if name.startswith(_SYNTHETIC_PREFIX):
        try:
            return _image_record(tuple(int(d) for d in name[len(_SYNTHETIC_PREFIX):].split("x")))
        except ValueError:
            raise ConfigError(f"synthetic dataset shape must look like 32x32x3, got {name!r}")
    if name in _IMAGE_SHAPES:
        return _image_record(_IMAGE_SHAPES[name])
    if name == "npz":
        resolved = resolve_optional_data_dir(data_dir)
        if resolved is None:
            raise ConfigError(f"dataset {name!r} needs data_dir (the folder holding its files)")
        return _image_record(_npz_image_shape(_split_npz_path(resolved, "train")[0], name))
    nearest = difflib.get_close_matches(name, VALID_NAMES, n=1)
    hint = f" Did you mean {nearest[0]!r}?" if nearest else ""
    raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(VALID_NAMES)}.{hint}")
