"""Text datasets: names, corpora, and random-access sources of fixed-length token rows.

The tokenizers and the token id layout (PAD = 0, EOS, sentinels) are in
`jaxssl.data.tokenizers`; the names that `jaxssl.methods` (lm, clip, pali)
use as ``text.NAME`` are re-exported here.

**Dataset names** (`get_text_source(name, split, data_dir)`, reached through
`jaxssl.data.sources.get_source`): 'text:CORPUS' or 'tfds_text:NAME',
optionally followed by '?key=value&key=value' options; build them with
`text_dataset_name`. Corpora:

- 'text:tiny_shakespeare': data_dir/input.txt (default data_dir:
  'tiny-shakespeare', i.e. $JAXSSL_DATA_DIR/tiny-shakespeare/input.txt);
- 'text:pydoc': the documentation topics embedded in Python itself
  (`pydoc_data.topics`, 79 documents, about 465k characters; no download);
- 'text:file': data_dir is one UTF-8 text file;
- 'tfds_text:NAME': a TFDS dataset prepared as array_record in data_dir, read
  through `tfds.data_source`, one document per record (feature `text_key`).
  The whole split is read and tokenized into memory when the source is made.

Every data_dir (and an 'spm:PATH' model) is resolved by the data-root rule
of `jaxssl.data.root`: absolute as is, relative against $JAXSSL_DATA_DIR
(else the current directory).

Local corpora are split by characters: 'train' is the first 90% of the
corpus (documents in order), 'validation' and 'test' the last 10%. TFDS
datasets use their own splits.

Options: `tokenizer` ('byte' | 'char' | 'spm:PATH', default 'byte'),
`length` (tokens per row, default 128), `rows` ('windows' | 'packed'),
`sentinels` (number of sentinel ids, default 100), `text_key` (TFDS feature),
`chars` (with tokenizer=char: the corpus' number of distinct characters; it
fixes the vocabulary's size without reading the corpus, so `jaxssl.aot`
compiles without the data, and is checked when the corpus is read).

**Rows.** Every source returns `{'tokens', 'segment_ids', 'positions'}`, each
int32 [length]. Segment ids number the documents in a row from 1 (0 =
padding) and positions restart at 0 for every document piece in a row.

- rows='windows': documents are joined with EOS into one token stream. A
  'train*' split has one record per window start (record i = tokens
  [i, i + length)), so a shuffled sampler draws random windows as nanoGPT
  does; any other split is cut into consecutive windows overlapping by one
  token (stride length - 1), so next-token prediction over the records
  covers every token of the split exactly once; the last window is padded.
- rows='packed': every document is followed by EOS, the stream is cut into
  consecutive rows, and a document crossing a row boundary continues as a
  new segment (positions from 0) in the next row.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Sequence

import numpy as np

from jaxssl.data import tfds_io
from jaxssl.data.root import resolve_data_dir, resolve_optional_data_dir, unset_root_note
from jaxssl.data.tokenizers import DEFAULT_NUM_SENTINELS, EOS_ID, Tokenizer, make_tokenizer
from jaxssl.errors import ConfigError, DataError

TRAIN_FRACTION = 0.9
# tiny_shakespeare's data_dir when the config names none, under the data root.
DEFAULT_SHAKESPEARE_DIR = "tiny-shakespeare"


# -------------------------------------------------------------- dataset names
TEXT_PREFIX, TFDS_TEXT_PREFIX = "text:", "tfds_text:"
LOCAL_CORPORA = ("tiny_shakespeare", "pydoc", "file")
ROW_KINDS = ("windows", "packed")


@dataclasses.dataclass(frozen=True)
class TextDataSpec:
    """A parsed text dataset name (see the module docstring)."""
    corpus: str
    from_tfds: bool = False
    tokenizer: str = "byte"
    length: int = 128
    rows: str = "windows"
    sentinels: int = DEFAULT_NUM_SENTINELS
    text_key: str = "text"
    chars: int = 0


_OPTION_TYPES = {"tokenizer": str, "length": int, "rows": str, "sentinels": int, "text_key": str,
                 "chars": int}


def is_text_dataset(name: str) -> bool:
    return name.startswith((TEXT_PREFIX, TFDS_TEXT_PREFIX))


def text_dataset_name(corpus: str, from_tfds: bool = False, **options) -> str:
    """The dataset name of `corpus` with `options`, e.g. 'text:pydoc?length=65&tokenizer=char'."""
    spec = TextDataSpec(corpus, from_tfds, **options)  # validates the option names
    prefix = TFDS_TEXT_PREFIX if from_tfds else TEXT_PREFIX
    query = "&".join(f"{k}={getattr(spec, k)}" for k in sorted(options))
    return prefix + corpus + (f"?{query}" if query else "")


def parse_text_dataset(name: str) -> TextDataSpec:
    """'text:CORPUS?k=v&...' or 'tfds_text:NAME?...' -> TextDataSpec; ConfigError if malformed."""
    from_tfds = name.startswith(TFDS_TEXT_PREFIX)
    corpus, query = tfds_io.split_name(name, TFDS_TEXT_PREFIX if from_tfds else TEXT_PREFIX)
    spec = TextDataSpec(corpus, from_tfds, **tfds_io.parse_options(name, query, _OPTION_TYPES))
    if not from_tfds and corpus not in LOCAL_CORPORA:
        valid = [TEXT_PREFIX + c for c in LOCAL_CORPORA] + [TFDS_TEXT_PREFIX + "NAME"]
        raise ConfigError(f"unknown text corpus {corpus!r} in {name!r}; valid: {', '.join(valid)}")
    if spec.rows not in ROW_KINDS:
        raise ConfigError(f"text dataset {name!r}: rows must be one of {ROW_KINDS}")
    if spec.length < 2:
        raise ConfigError(f"text dataset {name!r}: length must be >= 2")
    if spec.chars < 0 or (spec.chars and spec.tokenizer != "char"):
        raise ConfigError(f"text dataset {name!r}: chars=N declares the size of a 'char' "
                          f"vocabulary (N >= 1 with tokenizer=char)")
    return spec


# -------------------------------------------------------------------- corpora
def _corpus_path(corpus: str, data_dir: str | os.PathLike | None) -> str | None:
    """The resolved file of a local corpus (None for 'pydoc', which has none)."""
    if corpus == "pydoc":
        return None
    if corpus == "tiny_shakespeare":
        return os.path.join(resolve_data_dir(data_dir or DEFAULT_SHAKESPEARE_DIR), "input.txt")
    if not data_dir:
        raise ConfigError("text corpus 'file' needs data_dir = the path of a UTF-8 text file")
    return resolve_data_dir(data_dir)


def _local_documents(corpus: str, data_dir: str | os.PathLike | None) -> tuple[str, ...]:
    """All documents of a local corpus, in order."""
    return _read_corpus(corpus, _corpus_path(corpus, data_dir))


@functools.lru_cache(maxsize=8)  # keyed by the resolved path, so $JAXSSL_DATA_DIR may change
def _read_corpus(corpus: str, path: str | None) -> tuple[str, ...]:
    if path is None:
        from pydoc_data import topics
        return tuple(topics.topics[k] for k in sorted(topics.topics))
    if not os.path.isfile(path):
        raise DataError(f"text corpus {corpus!r}: file not found: {path}{unset_root_note(path)}")
    try:
        with open(path, encoding="utf-8") as f:
            return (f.read(),)
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"text corpus {corpus!r}: cannot read {path} as UTF-8 text "
                        f"({type(error).__name__}: {error})") from None


def split_documents(documents: Sequence[str], split: str,
                    train_fraction: float = TRAIN_FRACTION) -> list[str]:
    """'train': the first `train_fraction` of the characters; 'validation'/'test': the rest.

    The cut is at int(train_fraction * total characters) of the documents
    joined in order; the document it falls in is split in two.
    """
    if split not in ("train", "validation", "test"):
        raise DataError(f"text split must be 'train', 'validation' or 'test', got {split!r}")
    starts = np.concatenate([[0], np.cumsum([len(d) for d in documents])])
    cut = int(train_fraction * starts[-1])
    pieces = []
    for doc, start, end in zip(documents, starts[:-1], starts[1:]):
        low, high = (start, min(end, cut)) if split == "train" else (max(start, cut), end)
        if high > low:
            pieces.append(doc[low - start:high - start])
    return pieces


def _tfds_documents(name: str, split: str, data_dir: str | None, text_key: str) -> list[str]:
    records = tfds_io.TfdsRecords(name, split, data_dir, (text_key,))
    texts = (records[i][text_key] for i in range(len(records)))
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]


def corpus_documents(spec: TextDataSpec, split: str,
                     data_dir: str | os.PathLike | None) -> list[str]:
    """The documents of one split of the corpus named by `spec` (data_dir: as in the config)."""
    if spec.from_tfds:
        return _tfds_documents(spec.corpus, split, resolve_optional_data_dir(data_dir), spec.text_key)
    return split_documents(_local_documents(spec.corpus, data_dir), split)


def vocabulary_needs_corpus(name: str) -> bool:
    """Whether the tokenizer of dataset `name` reads its corpus to learn its size: a
    'char' vocabulary whose size the name does not declare (chars=N)."""
    if not is_text_dataset(name):
        return False
    spec = parse_text_dataset(name)
    return spec.tokenizer == "char" and not spec.chars


def tokenizer_for(name: str, data_dir: str | None = None) -> Tokenizer:
    """The tokenizer of text dataset `name`; 'char' vocabularies come from the whole
    local corpus (both splits, as nanoGPT does) or a TFDS dataset's 'train' split,
    read when first needed if the name declares their size (chars=N), else now."""
    spec = parse_text_dataset(name)

    def corpus_characters() -> str:
        documents = (corpus_documents(spec, "train", data_dir) if spec.from_tfds
                     else _local_documents(spec.corpus, data_dir))
        return "".join(set().union(*map(set, documents)))

    return make_tokenizer(spec.tokenizer, corpus_characters, spec.sentinels, spec.chars or None)


# ----------------------------------------------------------------------- rows
def _row(tokens: np.ndarray, segment_ids: np.ndarray, positions: np.ndarray) -> dict:
    return {"tokens": tokens, "segment_ids": segment_ids, "positions": positions}


class TokenWindows:
    """Windows of `length` tokens over one token stream, starting every `stride` tokens.

    Record i covers stream[i * stride : i * stride + length], one segment
    (id 1, positions 0..), padded (PAD, segment 0, position 0) past the end.
    With `full_only`, only windows that fit entirely are records; otherwise
    windows are made until every token from index 1 on is covered once as a
    next-token target (stride must then be length - 1).
    """

    def __init__(self, stream: np.ndarray, length: int, stride: int, full_only: bool):
        self.stream = np.asarray(stream, np.int32)
        self.length, self.stride = int(length), int(stride)
        if full_only:
            self._count = max(0, (len(self.stream) - length) // stride + 1)
        else:
            self._count = max(0, -(-(len(self.stream) - 1) // stride))
        if self._count == 0:
            raise DataError(f"text of {len(self.stream)} tokens is too short for rows of {length}")

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return (f"TokenWindows(tokens={len(self.stream)}, length={self.length}, "
                f"stride={self.stride}, records={self._count})")

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start = int(index) * self.stride
        piece = self.stream[start:start + self.length]
        valid = len(piece)
        tokens = np.zeros(self.length, np.int32)
        tokens[:valid] = piece
        segments = (np.arange(self.length) < valid).astype(np.int32)
        positions = np.where(segments > 0, np.arange(self.length), 0).astype(np.int32)
        return _row(tokens, segments, positions)


class PackedRows:
    """Documents packed back to back into rows of `length` (see the module docstring).

    Args:
      documents: int token arrays, one per document (EOS already appended).
      length: tokens per row.
    """

    def __init__(self, documents: Sequence[np.ndarray], length: int):
        self.length = int(length)
        stream = np.concatenate(documents).astype(np.int32)
        doc_index = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
        num_rows = -(-len(stream) // length)
        size = num_rows * length
        index = np.arange(len(stream))
        row_start = index - index % length
        doc_start = np.concatenate([[0], np.cumsum([len(d) for d in documents])])[doc_index]
        piece_start = np.maximum(doc_start, row_start)
        first_doc_of_row = doc_index[row_start]
        self.tokens = np.zeros(size, np.int32)
        self.segment_ids = np.zeros(size, np.int32)
        self.positions = np.zeros(size, np.int32)
        self.tokens[:len(stream)] = stream
        self.segment_ids[:len(stream)] = doc_index - first_doc_of_row + 1
        self.positions[:len(stream)] = index - piece_start
        self.tokens, self.segment_ids, self.positions = (
            a.reshape(num_rows, length) for a in (self.tokens, self.segment_ids, self.positions))

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"PackedRows(rows={len(self)}, length={self.length})"

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return _row(self.tokens[index], self.segment_ids[index], self.positions[index])


def text_rows(documents: Sequence[str], tokenizer: Tokenizer, length: int, rows: str,
              training: bool) -> TokenWindows | PackedRows:
    """Documents -> a row source; `training` picks random windows vs. consecutive ones."""
    if not documents:
        raise DataError("the split has no documents")
    encoded = [np.append(tokenizer.encode(d), EOS_ID).astype(np.int32) for d in documents]
    if rows == "packed":
        return PackedRows(encoded, length)
    stream = np.concatenate(encoded)[:-1]  # EOS separates documents; none after the last
    if training:
        return TokenWindows(stream, length, stride=1, full_only=True)
    return TokenWindows(stream, length, stride=length - 1, full_only=False)


def get_text_source(name: str, split: str, data_dir: str | None = None):
    """Row source for split `split` of text dataset `name` (see the module docstring)."""
    spec = parse_text_dataset(name)
    documents = corpus_documents(spec, split, data_dir)
    try:
        return text_rows(documents, tokenizer_for(name, data_dir), spec.length, spec.rows,
                         training=split.startswith("train"))
    except DataError as error:  # the rows cannot say which corpus they were cut from
        where = (resolve_optional_data_dir(data_dir) if spec.from_tfds
                 else _corpus_path(spec.corpus, data_dir))
        raise DataError(f"text dataset {name!r} split {split!r} ({where}): {error}") from None
