"""Text: tokenizers, corpora, and random-access sources of fixed-length token rows.

**Token ids.** Every tokenizer uses one layout of the vocabulary:

  [0, NUM_SPECIAL)                      special tokens, ids below (PAD = 0)
  [NUM_SPECIAL, NUM_SPECIAL + base)     the tokenizer's own tokens (bytes, characters
                                        or SentencePiece pieces)
  [vocab_size - num_sentinels, vocab)   sentinels; sentinel k is vocab_size - 1 - k
                                        (T5's <extra_id_k>, taken from the top down)

**Tokenizers** (`make_tokenizer(spec, documents)`): 'byte' (UTF-8 bytes, no
download), 'char' (the sorted set of characters of a corpus; its JSON is
`CharTokenizer.to_json()`), 'spm:PATH' (a SentencePiece model file).

**Dataset names** (`get_text_source(name, split, data_dir)`, reached through
`jaxssl.data.sources.get_source`): 'text:CORPUS' or 'tfds_text:NAME',
optionally followed by '?key=value&key=value' options; build them with
`text_dataset_name`. Corpora:

- 'text:tiny_shakespeare': data_dir/input.txt (default: the repository's
  ../shared/data/tiny-shakespeare/input.txt);
- 'text:pydoc': the documentation topics embedded in Python itself
  (`pydoc_data.topics`, 79 documents, about 465k characters; no download);
- 'text:file': data_dir is one UTF-8 text file;
- 'tfds_text:NAME': a TFDS dataset prepared as array_record in data_dir, read
  through `tfds.data_source`, one document per record (feature `text_key`).
  The whole split is read and tokenized into memory when the source is made.

Local corpora are split by characters: 'train' is the first 90% of the
corpus (documents in order), 'validation' and 'test' the last 10%. TFDS
datasets use their own splits.

Options: `tokenizer` ('byte' | 'char' | 'spm:PATH', default 'byte'),
`length` (tokens per row, default 128), `rows` ('windows' | 'packed'),
`sentinels` (number of sentinel ids, default 100), `text_key` (TFDS feature).

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
import json
import os
from typing import Sequence

import numpy as np

PAD_ID, BOS_ID, EOS_ID, MASK_ID, NLU_ID, NLG_ID, S2S_ID = range(7)
SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[NLU]", "[NLG]", "[S2S]")
NUM_SPECIAL = len(SPECIAL_TOKENS)
DEFAULT_NUM_SENTINELS = 100
TRAIN_FRACTION = 0.9

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_SHAKESPEARE_DIR = os.path.join(os.path.dirname(_REPO), "shared", "data", "tiny-shakespeare")


# ------------------------------------------------------------------ tokenizers
class Tokenizer:
    """Vocabulary layout shared by all tokenizers (see the module docstring).

    Subclasses define `base_size`, `_encode_base(text) -> int array of base
    ids in [0, base_size)`, `_decode_base(base_ids) -> str` and
    `_base_char_lengths() -> int [base_size]`.
    """

    base_size: int

    def __init__(self, num_sentinels: int):
        self.num_sentinels = int(num_sentinels)

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + self.base_size + self.num_sentinels

    @property
    def regular_ids(self) -> tuple[int, int]:
        """[low, high): ids of ordinary tokens (neither special nor sentinel)."""
        return NUM_SPECIAL, NUM_SPECIAL + self.base_size

    def sentinel_id(self, k: int) -> int:
        """Id of sentinel k (k = 0 is the top id)."""
        if not 0 <= k < self.num_sentinels:
            raise ValueError(f"sentinel {k} out of range: this vocabulary has {self.num_sentinels}")
        return self.vocab_size - 1 - k

    def encode(self, text: str) -> np.ndarray:
        """str -> int32 [n] token ids (no BOS/EOS added)."""
        return (self._encode_base(text) + NUM_SPECIAL).astype(np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> str; special tokens and sentinels are written as their names."""
        pieces, run = [], []
        low, high = self.regular_ids
        for i in np.asarray(ids, np.int64).ravel():
            if low <= i < high:
                run.append(i - NUM_SPECIAL)
                continue
            if run:
                pieces.append(self._decode_base(np.asarray(run)))
                run = []
            pieces.append(SPECIAL_TOKENS[i] if i < NUM_SPECIAL
                          else f"<extra_id_{self.vocab_size - 1 - i}>")
        if run:
            pieces.append(self._decode_base(np.asarray(run)))
        return "".join(pieces)

    def char_lengths(self) -> np.ndarray:
        """int32 [vocab_size]: characters (bytes for 'byte') each id stands for; 0 for specials."""
        lengths = np.zeros(self.vocab_size, np.int32)
        lengths[NUM_SPECIAL:NUM_SPECIAL + self.base_size] = self._base_char_lengths()
        return lengths


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes: 256 base tokens; bits per character are bits per byte."""

    base_size = 256

    def __repr__(self) -> str:
        return f"ByteTokenizer(sentinels={self.num_sentinels})"

    def _encode_base(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def _decode_base(self, base_ids: np.ndarray) -> str:
        return bytes(base_ids.astype(np.uint8).tolist()).decode("utf-8", errors="replace")

    def _base_char_lengths(self) -> np.ndarray:
        return np.ones(self.base_size, np.int32)


def _codepoints(text: str) -> np.ndarray:
    """str -> uint32 [len(text)] Unicode code points."""
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


class CharTokenizer(Tokenizer):
    """One token per distinct character of a corpus, in code-point order (nanoGPT's vocabulary)."""

    def __init__(self, chars: str, num_sentinels: int):
        super().__init__(num_sentinels)
        self.chars = "".join(sorted(set(chars)))
        self._sorted_codepoints = _codepoints(self.chars)
        self.base_size = len(self.chars)

    @classmethod
    def from_documents(cls, documents: Sequence[str], num_sentinels: int) -> "CharTokenizer":
        return cls("".join(sorted(set().union(*map(set, documents)))), num_sentinels)

    def __repr__(self) -> str:
        return f"CharTokenizer(chars={len(self.chars)}, sentinels={self.num_sentinels})"

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars, "num_sentinels": self.num_sentinels})

    @classmethod
    def from_json(cls, text: str) -> "CharTokenizer":
        data = json.loads(text)
        return cls(data["chars"], data["num_sentinels"])

    def _encode_base(self, text: str) -> np.ndarray:
        points = _codepoints(text)
        index = np.searchsorted(self._sorted_codepoints, points)
        index = np.minimum(index, self.base_size - 1)
        unknown = self._sorted_codepoints[index] != points
        if unknown.any():
            missing = sorted({chr(p) for p in points[unknown]})
            raise ValueError(
                f"characters not in the vocabulary of {self.base_size}: {missing[:10]}")
        return index.astype(np.int32)

    def _decode_base(self, base_ids: np.ndarray) -> str:
        return "".join(self.chars[i] for i in base_ids)

    def _base_char_lengths(self) -> np.ndarray:
        return np.ones(self.base_size, np.int32)


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model file; its ids are shifted up by NUM_SPECIAL."""

    def __init__(self, model_path: str, num_sentinels: int):
        import sentencepiece

        super().__init__(num_sentinels)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"SentencePiece model file not found: {model_path}")
        self.model_path = model_path
        self._processor = sentencepiece.SentencePieceProcessor(model_file=model_path)
        self.base_size = int(self._processor.get_piece_size())

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.model_path!r}, sentinels={self.num_sentinels})"

    def _encode_base(self, text: str) -> np.ndarray:
        return np.asarray(self._processor.encode(text), np.int32)

    def _decode_base(self, base_ids: np.ndarray) -> str:
        return self._processor.decode(base_ids.tolist())

    def _base_char_lengths(self) -> np.ndarray:
        pieces = (self._processor.id_to_piece(i) for i in range(self.base_size))
        return np.array([len(p.replace("\u2581", " ")) for p in pieces], np.int32)


def make_tokenizer(spec: str, documents: Sequence[str] = (),
                   num_sentinels: int = DEFAULT_NUM_SENTINELS) -> Tokenizer:
    """'byte' | 'char' (vocabulary from `documents`) | 'spm:PATH' -> Tokenizer."""
    if spec == "byte":
        return ByteTokenizer(num_sentinels)
    if spec == "char":
        if not documents:
            raise ValueError("tokenizer 'char' needs a corpus to build its vocabulary from")
        return CharTokenizer.from_documents(documents, num_sentinels)
    if spec.startswith("spm:"):
        return SentencePieceTokenizer(spec[len("spm:"):], num_sentinels)
    raise ValueError(f"unknown tokenizer {spec!r}; valid: 'byte', 'char', 'spm:PATH'")


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


_OPTION_TYPES = {"tokenizer": str, "length": int, "rows": str, "sentinels": int, "text_key": str}


def is_text_dataset(name: str) -> bool:
    return name.startswith((TEXT_PREFIX, TFDS_TEXT_PREFIX))


def text_dataset_name(corpus: str, from_tfds: bool = False, **options) -> str:
    """The dataset name of `corpus` with `options`, e.g. 'text:pydoc?length=65&tokenizer=char'."""
    spec = TextDataSpec(corpus, from_tfds, **options)  # validates the option names
    prefix = TFDS_TEXT_PREFIX if from_tfds else TEXT_PREFIX
    query = "&".join(f"{k}={getattr(spec, k)}" for k in sorted(options))
    return prefix + corpus + (f"?{query}" if query else "")


def parse_options(name: str, query: str, option_types: dict) -> dict:
    """'k=v&k2=v2' -> {k: option_types[k](v)}; ValueError naming dataset `name` and a bad option."""
    options = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or key not in option_types:
            raise ValueError(f"dataset {name!r}: bad option {item!r}; "
                             f"options are {', '.join(option_types)} as key=value")
        options[key] = option_types[key](value)
    return options


def parse_text_dataset(name: str) -> TextDataSpec:
    """'text:CORPUS?k=v&...' or 'tfds_text:NAME?...' -> TextDataSpec; ValueError if malformed."""
    from_tfds = name.startswith(TFDS_TEXT_PREFIX)
    body = name[len(TFDS_TEXT_PREFIX if from_tfds else TEXT_PREFIX):]
    corpus, _, query = body.partition("?")
    spec = TextDataSpec(corpus, from_tfds, **parse_options(name, query, _OPTION_TYPES))
    if not from_tfds and corpus not in LOCAL_CORPORA:
        valid = [TEXT_PREFIX + c for c in LOCAL_CORPORA] + [TFDS_TEXT_PREFIX + "NAME"]
        raise ValueError(f"unknown text corpus {corpus!r} in {name!r}; valid: {', '.join(valid)}")
    if spec.rows not in ROW_KINDS:
        raise ValueError(f"text dataset {name!r}: rows must be one of {ROW_KINDS}")
    if spec.length < 2:
        raise ValueError(f"text dataset {name!r}: length must be >= 2")
    return spec


# -------------------------------------------------------------------- corpora
@functools.lru_cache(maxsize=8)
def _local_documents(corpus: str, data_dir: str | None) -> tuple[str, ...]:
    """All documents of a local corpus, in order."""
    if corpus == "pydoc":
        from pydoc_data import topics
        return tuple(topics.topics[k] for k in sorted(topics.topics))
    if corpus == "tiny_shakespeare":
        path = os.path.join(data_dir or DEFAULT_SHAKESPEARE_DIR, "input.txt")
    elif data_dir:
        path = data_dir
    else:
        raise ValueError("text corpus 'file' needs data_dir = the path of a UTF-8 text file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"text corpus {corpus!r}: file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return (f.read(),)


def split_documents(documents: Sequence[str], split: str,
                    train_fraction: float = TRAIN_FRACTION) -> list[str]:
    """'train': the first `train_fraction` of the characters; 'validation'/'test': the rest.

    The cut is at int(train_fraction * total characters) of the documents
    joined in order; the document it falls in is split in two.
    """
    if split not in ("train", "validation", "test"):
        raise ValueError(f"text split must be 'train', 'validation' or 'test', got {split!r}")
    starts = np.concatenate([[0], np.cumsum([len(d) for d in documents])])
    cut = int(train_fraction * starts[-1])
    pieces = []
    for doc, start, end in zip(documents, starts[:-1], starts[1:]):
        low, high = (start, min(end, cut)) if split == "train" else (max(start, cut), end)
        if high > low:
            pieces.append(doc[low - start:high - start])
    return pieces


def _tfds_documents(name: str, split: str, data_dir: str | None, text_key: str) -> list[str]:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise FileNotFoundError(f"tfds text dataset {name!r} is neither registered nor "
                                f"prepared in data_dir={data_dir}") from None
    if not builder.is_prepared():
        raise FileNotFoundError(f"tfds text dataset {name!r} is not prepared in data_dir="
                                f"{data_dir}; prepare it first with --file_format=array_record")
    if text_key not in builder.info.features:
        raise KeyError(f"tfds dataset {name!r} has no feature {text_key!r}; "
                       f"features: {sorted(builder.info.features)}")
    records = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    texts = (records[i][text_key] for i in range(len(records)))
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]


def corpus_documents(spec: TextDataSpec, split: str, data_dir: str | None) -> list[str]:
    """The documents of one split of the corpus named by `spec`."""
    if spec.from_tfds:
        return _tfds_documents(spec.corpus, split, data_dir, spec.text_key)
    return split_documents(_local_documents(spec.corpus, data_dir), split)


def tokenizer_for(name: str, data_dir: str | None = None) -> Tokenizer:
    """The tokenizer of text dataset `name`; 'char' vocabularies come from the whole
    local corpus (both splits, as nanoGPT does) or a TFDS dataset's 'train' split."""
    spec = parse_text_dataset(name)
    documents: Sequence[str] = ()
    if spec.tokenizer == "char":
        documents = (corpus_documents(spec, "train", data_dir) if spec.from_tfds
                     else _local_documents(spec.corpus, data_dir))
    return make_tokenizer(spec.tokenizer, documents, spec.sentinels)


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
            raise ValueError(f"text of {len(self.stream)} tokens is too short for rows of {length}")

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
    data_dir = os.fspath(data_dir) if data_dir else None
    documents = corpus_documents(spec, split, data_dir)
    return text_rows(documents, tokenizer_for(name, data_dir), spec.length, spec.rows,
                     training=split.startswith("train"))
