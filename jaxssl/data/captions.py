"""Image-text pairs: SYNTHETIC captions from class names, and TFDS caption datasets.

**Synthetic pairs.** Any labelled image source becomes an image-text dataset
by captioning each image from its class name,
`template.format(class name)`, e.g. 'a photo of a frog.'. `caption_table`
tokenizes one caption per class; a method looks a batch's captions up by
label on device (`table[batch['label']]`). These captions carry nothing but
the label: they are for tests, demos and small experiments, not a substitute
for real captions. `CLASS_NAMES` holds the names of the built-in labelled
datasets.

**TFDS caption datasets.** `jaxssl.data.tfds_images.TfdsCaptionSource` (dataset name
'tfds_captions:NAME?option=value&...', reached through
`jaxssl.data.sources.get_source`) reads a TFDS dataset prepared as
array_record in data_dir through `tfds.data_source` (no download), e.g.
'coco_captions'. Each record becomes {'image': uint8 [S, S, C], 'tokens':
int32 [length]}: the image resized to `image_size` x `image_size` on the host
(shorter side to image_size, bilinear, then the central square crop:
`jaxssl.data.tfds_images.resize_and_centre_crop`; 0 = keep the stored size, which
must then be fixed) and the FIRST caption of the record
(feature path `caption_key`, '/'-separated; a sequence of captions gives its
first element), byte-tokenized with EOS and PAD-padded. Options:
`image_size` (default 64), `length` (tokens per caption incl. EOS, default
64), `caption_key` (default 'captions/text', coco_captions' layout),
`image_key` (default 'image').

Token layout (both kinds): caption tokens, then EOS, then PAD (id 0) up to
`length`; captions longer than length - 1 tokens are cut, EOS is kept.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxssl.data import tfds_io, tokenizers
from jaxssl.errors import ConfigError

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")
# data.name of a built-in labelled dataset -> its class names, in label order.
CLASS_NAMES = {"digits": DIGIT_NAMES, "mnist": DIGIT_NAMES, "cifar10_jpeg": CIFAR10_NAMES}
TFDS_CAPTIONS_PREFIX = "tfds_captions:"


def class_captions(template: str, class_names: Sequence[str]) -> list[str]:
    """One caption per class: `template.format(name)`, in label order."""
    return [template.format(name) for name in class_names]


def tokenize_captions(tokenizer: tokenizers.Tokenizer, captions: Sequence[str], length: int = 0,
                      append_eos: bool = True) -> np.ndarray:
    """int32 [len(captions), L]: tokens (+ EOS), PAD-padded to L = `length` (0 = the longest).

    With `length` > 0, longer captions are cut to length - 1 tokens before
    the EOS (to `length` tokens without EOS).
    """
    rows = [tokenizer.encode(c) for c in captions]
    width = length or max(len(r) for r in rows) + int(append_eos)
    table = np.full((len(rows), width), tokenizers.PAD_ID, np.int32)
    for i, row in enumerate(rows):
        row = row[:width - int(append_eos)]
        table[i, :len(row)] = row
        if append_eos:
            table[i, len(row)] = tokenizers.EOS_ID
    return table


def caption_table(tokenizer: tokenizers.Tokenizer, template: str, class_names: Sequence[str],
                  length: int) -> np.ndarray:
    """int32 [num_classes, length]: each class's SYNTHETIC caption, tokens + EOS + PAD.

    Raises ConfigError if a caption needs more than `length` tokens with its EOS.
    """
    captions = class_captions(template, class_names)
    table = tokenize_captions(tokenizer, captions, append_eos=True)
    if table.shape[1] > length:
        longest = captions[int(np.argmax([len(tokenizer.encode(c)) for c in captions]))]
        raise ConfigError(f"caption {longest!r} needs {table.shape[1]} tokens with EOS, more "
                         f"than the text length {length}")
    return np.pad(table, ((0, 0), (0, length - table.shape[1])), constant_values=tokenizers.PAD_ID)


@dataclasses.dataclass(frozen=True)
class CaptionDataSpec:
    """A parsed 'tfds_captions:NAME?...' dataset name."""
    name: str
    image_size: int = 64
    length: int = 64
    caption_key: str = "captions/text"
    image_key: str = "image"


_OPTION_TYPES = {"image_size": int, "length": int, "caption_key": str, "image_key": str}


def is_caption_dataset(name: str) -> bool:
    return name.startswith(TFDS_CAPTIONS_PREFIX)


def parse_caption_dataset(name: str) -> CaptionDataSpec:
    """'tfds_captions:NAME?k=v&...' -> CaptionDataSpec; ConfigError naming a bad option."""
    body, query = tfds_io.split_name(name, TFDS_CAPTIONS_PREFIX)
    spec = CaptionDataSpec(body, **tfds_io.parse_options(name, query, _OPTION_TYPES))
    if not spec.name or spec.length < 2 or spec.image_size < 0:
        raise ConfigError(f"caption dataset {name!r}: needs a TFDS name, length >= 2 and "
                         f"image_size >= 0")
    return spec


def first_caption(value) -> str:
    """A caption feature's value (bytes, str, or a sequence of them) -> its first caption."""
    if not isinstance(value, (bytes, str)):
        value = np.asarray(value).reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
