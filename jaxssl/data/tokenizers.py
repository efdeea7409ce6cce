"""Tokenizers: text <-> int32 token ids, all in one vocabulary layout.

**Token ids.** Every tokenizer uses one layout of the vocabulary:

  [0, NUM_SPECIAL)                      special tokens, ids below (PAD = 0)
  [NUM_SPECIAL, NUM_SPECIAL + base)     the tokenizer's own tokens (bytes, characters
                                        or SentencePiece pieces)
  [vocab_size - num_sentinels, vocab)   sentinels; sentinel k is vocab_size - 1 - k
                                        (T5's <extra_id_k>, taken from the top down)

**Tokenizers** (`make_tokenizer(spec, corpus_characters)`): 'byte' (UTF-8 bytes, no
download), 'char' (the sorted set of characters of a corpus; its JSON is
`CharTokenizer.to_json()`), 'spm:PATH' (a SentencePiece model file; a
relative PATH is resolved against the data root, `jaxssl.data.root`).
Text datasets (`jaxssl.data.text`) pick one by name.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Callable, Sequence

import numpy as np

from jaxssl.data.root import resolve_data_dir, unset_root_note
from jaxssl.errors import ConfigError, DataError

PAD_ID, BOS_ID, EOS_ID, MASK_ID, NLU_ID, NLG_ID, S2S_ID = range(7)
SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[NLU]", "[NLG]", "[S2S]")
NUM_SPECIAL = len(SPECIAL_TOKENS)
DEFAULT_NUM_SENTINELS = 100


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
    """One token per distinct character of a corpus, in code-point order (nanoGPT's vocabulary).

    `chars` holds the corpus' characters (in any order, repeats allowed), or is
    a function that reads them. With a function, `size` may declare how many
    distinct characters it gives: the vocabulary's size and id layout are then
    known without reading the corpus (what `jaxssl.aot` compiles from), and the
    corpus is read when a text is first encoded or decoded. A corpus with
    another number of distinct characters raises DataError then.
    """

    def __init__(self, chars: str | Callable[[], str], num_sentinels: int,
                 size: int | None = None):
        super().__init__(num_sentinels)
        self._read_chars = chars if callable(chars) else functools.partial(str, chars)
        self._declared_size = size

    @functools.cached_property
    def chars(self) -> str:
        """The vocabulary's characters in code-point order (reads the corpus once)."""
        chars = "".join(sorted(set(self._read_chars())))
        if self._declared_size is not None and len(chars) != self._declared_size:
            raise DataError(f"the corpus has {len(chars)} distinct characters, not the "
                            f"{self._declared_size} its dataset name declares (chars=)")
        return chars

    @property
    def base_size(self) -> int:
        return len(self.chars) if self._declared_size is None else self._declared_size

    @functools.cached_property
    def _sorted_codepoints(self) -> np.ndarray:
        return _codepoints(self.chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(chars={self.base_size}, sentinels={self.num_sentinels})"

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
            raise DataError(
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
            raise DataError(f"SentencePiece model file not found: {model_path}"
                            f"{unset_root_note(model_path)}")
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


def make_tokenizer(spec: str, corpus_characters: Callable[[], str] | None = None,
                   num_sentinels: int = DEFAULT_NUM_SENTINELS,
                   char_count: int | None = None) -> Tokenizer:
    """'byte' | 'char' | 'spm:PATH' -> Tokenizer.

    'char' takes the distinct characters of `corpus_characters()`, read when
    first needed if `char_count` declares their number (see `CharTokenizer`).

    Raises:
      ConfigError: an unknown spec.
      DataError: 'char' without a corpus, or no SentencePiece model at PATH
        (resolved against the data root).
    """
    if spec == "byte":
        return ByteTokenizer(num_sentinels)
    if spec == "char":
        if corpus_characters is None:
            raise DataError("tokenizer 'char' needs a corpus to build its vocabulary from")
        return CharTokenizer(corpus_characters, num_sentinels, size=char_count)
    if spec.startswith("spm:"):
        return SentencePieceTokenizer(resolve_data_dir(spec[len("spm:"):]), num_sentinels)
    raise ConfigError(f"unknown tokenizer {spec!r}; valid: 'byte', 'char', 'spm:PATH'")
