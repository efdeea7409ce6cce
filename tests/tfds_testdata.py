"""Tiny TFDS datasets prepared locally as array_record (no download), shared by tests.

`TinyCaptions` ('tiny_captions'): 6 random 8x8x3 images (`CAPTION_IMAGES`) with two
captions each (`CAPTION_TEXTS`), coco_captions' feature layout; 'train' holds
examples 0..3, 'test' 4..5. The `caption_dir` fixture of conftest.py prepares it.
"""

import numpy as np
import tensorflow_datasets as tfds

CAPTION_IMAGES = np.random.default_rng(3).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
CAPTION_TEXTS = [[f"picture number {i}", f"second caption {i}"] for i in range(6)]
CAPTION_TRAIN = 4


class TinyCaptions(tfds.core.GeneratorBasedBuilder):
    """6 random 8x8x3 images with two captions each, coco_captions' feature layout."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        # Tensor features (no PNG encoding, which would import TensorFlow).
        features = tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(8, 8, 3), dtype=np.uint8),
            "captions": tfds.features.Sequence(
                {"text": tfds.features.Tensor(shape=(), dtype=np.str_)}),
        })
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(CAPTION_TRAIN)),
                "test": self._generate_examples(range(CAPTION_TRAIN, len(CAPTION_IMAGES)))}

    def _generate_examples(self, indices):
        for i in indices:
            yield i, {"image": CAPTION_IMAGES[i], "captions": {"text": CAPTION_TEXTS[i]}}


def prepare(builder_class, data_dir) -> None:
    """Builds `builder_class` as array_record in data_dir, offline."""
    tfds.disable_progress_bar()
    builder_class(data_dir=data_dir, file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
