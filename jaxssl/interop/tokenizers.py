"""The tokenizers that ship with imported text models, in pure Python, with the original ids.

Unlike `jaxssl.data.tokenizers` (one jaxssl id layout with its own special
tokens), these return exactly the ids the checkpoint's embedding rows were
trained on:

- `BytePairTokenizer`: GPT-2's byte-level BPE, from `tokenizer.json` or
  `vocab.json` + `merges.txt`. Added tokens ('<|endoftext|>') are matched
  first; the rest is split by GPT-2's pattern and merged by rank. No BOS/EOS
  is added (as GPT2TokenizerFast does by default). Python's `re` has no
  \\p{L}/\\p{N}: letters are [^\\W\\d_] and numbers \\d, which differs from the
  original pattern only for non-decimal numerals such as '²'.
- `WordPieceTokenizer`: BERT's, from `vocab.txt`: the basic tokenizer
  (control characters dropped, CJK characters split, lower case and accents
  stripped when uncased, punctuation split) then greedy longest-match-first
  word pieces ('##' continuations, [UNK] for a word that does not split);
  `encode` adds [CLS] ... [SEP] as BertTokenizer does.

- `SentencePieceTokenizer`: T5's spiece.model through `sentencepiece` itself
  (the original ids), EOS appended as T5Tokenizer does. transformers 5 runs a
  converted `tokenizers` copy, which differs on tabs (it splits on them; the
  model maps them to unk).

`load_tokenizer(DIR)` picks by the files there.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from typing import Optional

from jaxssl.errors import DataError

GPT2_PATTERN = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (space is 'Ġ')."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _split_on(text: str, specials: dict[str, int]) -> list[tuple[str, Optional[int]]]:
    """[(piece, None) for ordinary text, (token, id) for each special token found]."""
    if not specials:
        return [(text, None)]
    pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    return [(piece, specials.get(piece)) for piece in re.split(pattern, text) if piece]


class BytePairTokenizer:
    """GPT-2 byte-level BPE; see the module docstring."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]],
                 added: Optional[dict[str, int]] = None):
        self.vocab = vocab
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.added = dict(added or {})
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.inverse = {i: t for t, i in {**vocab, **self.added}.items()}
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_directory(cls, directory: str) -> "BytePairTokenizer":
        """From tokenizer.json, else vocab.json + merges.txt."""
        path = os.path.join(directory, "tokenizer.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                spec = json.load(f)
            model = spec["model"]
            if model.get("type") != "BPE":
                raise DataError(f"{path}: a {model.get('type')} tokenizer, not byte-level BPE")
            merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
                      for m in model["merges"]]
            added = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
            return cls(model["vocab"], merges, added)
        try:
            with open(os.path.join(directory, "vocab.json"), encoding="utf-8") as f:
                vocab = json.load(f)
            with open(os.path.join(directory, "merges.txt"), encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f]
        except FileNotFoundError as error:
            raise DataError(f"{directory}: no tokenizer.json or vocab.json + merges.txt "
                            f"({error.filename})") from None
        merges = [tuple(line.split(" ", 1)) for line in lines
                  if line and not line.startswith("#version")]
        return cls(vocab, merges, {t: i for t, i in vocab.items() if t == "<|endoftext|>"})

    def _bpe(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        symbols = list(word)
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self._cache[word] = symbols
        return symbols

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece, special in _split_on(text, self.added):
            if special is not None:
                ids.append(special)
                continue
            for word in GPT2_PATTERN.findall(piece):
                mapped = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
                ids += [self.vocab[symbol] for symbol in self._bpe(mapped)]
        return ids

    def decode(self, ids) -> str:
        text = "".join(self.inverse[int(i)] for i in ids)
        data = bytes(self.byte_decoder[c] for c in text if c in self.byte_decoder)
        return data.decode("utf-8", errors="replace")


def _is_punctuation(char: str) -> bool:
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(low <= cp <= high for low, high in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


class WordPieceTokenizer:
    """BERT's WordPiece; see the module docstring."""

    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, vocab: dict[str, int], lowercase: bool = True,
                 max_chars_per_word: int = 100):
        self.vocab = vocab
        self.inverse = {i: t for t, i in vocab.items()}
        self.lowercase = lowercase
        self.max_chars_per_word = max_chars_per_word
        self.specials = {t: vocab[t] for t in self.SPECIALS if t in vocab}

    @classmethod
    def from_directory(cls, directory: str, lowercase: Optional[bool] = None
                       ) -> "WordPieceTokenizer":
        """From vocab.txt (one token a line, id = line number); lowercase from
        tokenizer_config.json's do_lower_case when not given (default True)."""
        path = os.path.join(directory, "vocab.txt")
        if not os.path.isfile(path):
            raise DataError(f"{directory}: no vocab.txt")
        with open(path, encoding="utf-8") as f:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        if lowercase is None:
            settings = os.path.join(directory, "tokenizer_config.json")
            lowercase = True
            if os.path.isfile(settings):
                with open(settings) as f:
                    lowercase = json.load(f).get("do_lower_case", True)
        return cls(vocab, lowercase)

    def _basic(self, text: str) -> list[str]:
        cleaned = []
        for char in text:
            cp = ord(char)
            if cp == 0 or cp == 0xFFFD:
                continue
            category = unicodedata.category(char)
            if char in " \t\n\r" or category == "Zs":
                cleaned.append(" ")
            elif category.startswith("C"):
                continue
            elif _is_cjk(cp):
                cleaned.append(f" {char} ")
            else:
                cleaned.append(char)
        words = []
        for word in unicodedata.normalize("NFC", "".join(cleaned)).split():
            if self.lowercase:
                word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                               if unicodedata.category(c) != "Mn")
            current = ""
            for char in word:
                if _is_punctuation(char):
                    words += [current, char] if current else [char]
                    current = ""
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def _word_pieces(self, word: str) -> list[int]:
        unknown = [self.vocab["[UNK]"]]
        if len(word) > self.max_chars_per_word:
            return unknown
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    pieces.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return unknown
            start = end
        return pieces

    def encode(self, text: str, special_tokens: bool = True) -> list[int]:
        ids = []
        for piece, special in _split_on(text, self.specials):
            if special is not None:
                ids.append(special)
                continue
            for word in self._basic(piece):
                ids += self._word_pieces(word)
        if special_tokens:
            ids = [self.vocab["[CLS]"], *ids, self.vocab["[SEP]"]]
        return ids

    def decode(self, ids) -> str:
        text = " ".join(self.inverse[int(i)] for i in ids)
        return text.replace(" ##", "")


class SentencePieceTokenizer:
    """A SentencePiece model (T5's spiece.model) with its own ids; see the module docstring."""

    def __init__(self, model_path: str, add_eos: bool = True):
        import sentencepiece
        if not os.path.isfile(model_path):
            raise DataError(f"SentencePiece model file not found: {model_path}")
        self.processor = sentencepiece.SentencePieceProcessor(model_file=model_path)
        self.add_eos = add_eos

    def encode(self, text: str) -> list[int]:
        ids = list(self.processor.encode(text))
        return ids + [self.processor.eos_id()] if self.add_eos else ids

    def decode(self, ids) -> str:
        return self.processor.decode([int(i) for i in ids])


def load_tokenizer(directory: str):
    """The tokenizer shipped in a Hugging Face directory: SentencePiece for spiece.model,
    WordPiece for vocab.txt, byte-level BPE for tokenizer.json (BPE) or vocab.json +
    merges.txt."""
    if os.path.isfile(os.path.join(directory, "spiece.model")):
        return SentencePieceTokenizer(os.path.join(directory, "spiece.model"))
    if os.path.isfile(os.path.join(directory, "vocab.txt")):
        return WordPieceTokenizer.from_directory(directory)
    return BytePairTokenizer.from_directory(directory)
