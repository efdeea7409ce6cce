"""Text data: tokenizers, corpora and splits, windows and packing, dataset names, the data
root, unreadable corpora, TFDS text."""

import re

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxssl.data import text, tokenizers
from jaxssl.data.sources import get_source
from jaxssl.errors import ConfigError, DataError


def test_byte_tokenizer_layout_round_trip_and_sentinels():
    tok = tokenizers.ByteTokenizer(num_sentinels=10)
    assert tok.vocab_size == 7 + 256 + 10 and tok.regular_ids == (7, 263)
    assert [tok.sentinel_id(k) for k in (0, 9)] == [272, 263]
    sample = "naïve — ok\n"
    ids = tok.encode(sample)
    assert ids.dtype == np.int32 and ids.min() >= 7
    np.testing.assert_array_equal(ids - 7, list(sample.encode("utf-8")))
    assert tok.decode(ids) == sample
    assert tok.decode([tokenizers.BOS_ID, *tok.encode("a"), tok.sentinel_id(1)]) == "[BOS]a<extra_id_1>"
    with pytest.raises(ValueError, match="sentinel"):
        tok.sentinel_id(10)


def test_char_tokenizer_vocabulary_json_and_unknown_characters():
    tok = tokenizers.CharTokenizer("hello" + "world!", num_sentinels=0)
    assert tok.chars == "!dehlorw" and tok.vocab_size == 7 + 8
    np.testing.assert_array_equal(tok.encode("hold!"), [7 + "!dehlorw".index(c) for c in "hold!"])
    again = tokenizers.CharTokenizer.from_json(tok.to_json())
    assert again.chars == tok.chars and again.decode(again.encode("world")) == "world"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("help")
    np.testing.assert_array_equal(tok.char_lengths(), [0] * 7 + [1] * 8)


def test_declared_char_vocabulary_is_sized_without_the_corpus_and_checked_against_it(tmp_path):
    corpus = tmp_path / "a.txt"
    declared = text.text_dataset_name("file", length=9, tokenizer="char", chars=26, sentinels=2)
    tok = text.tokenizer_for(declared, str(corpus))  # the file is not there yet
    assert tok.vocab_size == 7 + 26 + 2 and tok.regular_ids == (7, 33)
    assert tok.sentinel_id(0) == 34
    np.testing.assert_array_equal(tok.char_lengths(), [0] * 7 + [1] * 26 + [0] * 2)
    other = tmp_path / "b.txt"  # corpora are cached by path
    other.write_text("the quick brown fox jumps over a lazy dog" * 3)
    with pytest.raises(DataError, match="has 27 distinct characters, not the 26"):
        get_source(declared, "train", str(other))
    corpus.write_text("abcdefghijklmnopqrstuvwxyz" * 4)
    tok = text.tokenizer_for(declared, str(corpus))
    assert tok.chars == "abcdefghijklmnopqrstuvwxyz" and tok.decode(tok.encode("jax")) == "jax"
    assert get_source(declared, "train", str(corpus))[0]["tokens"][0] == 7
    for bad in ("text:file?chars=26", "text:file?chars=-1&tokenizer=char"):
        with pytest.raises(ConfigError, match="chars=N declares the size of a 'char' vocabulary"):
            text.parse_text_dataset(bad)


@pytest.mark.parametrize("tokenizer", [tokenizers.ByteTokenizer(0),
                                       tokenizers.make_tokenizer("char", lambda: "", 0)])
def test_a_split_without_documents_is_a_data_error(tokenizer):
    for rows in text.ROW_KINDS:
        with pytest.raises(DataError, match="the split has no documents"):
            text.text_rows([], tokenizer, length=8, rows=rows, training=True)


def test_sentencepiece_tokenizer_from_a_model_file(tmp_path):
    import sentencepiece

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(text._local_documents("pydoc", None)[:5]))
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "m"),
                                             vocab_size=120, model_type="bpe")
    tok = tokenizers.make_tokenizer(f"spm:{tmp_path / 'm.model'}", num_sentinels=4)
    sample = "The assert statement"
    ids = tok.encode(sample)
    assert tok.vocab_size == 7 + 120 + 4 and ids.min() >= 7 and ids.max() < 127
    assert tok.decode(ids) == sample
    lengths = tok.char_lengths()
    assert lengths[ids].sum() == len(sample) + 1  # SentencePiece adds a leading space
    with pytest.raises(DataError, match="missing.model"):
        tokenizers.make_tokenizer(f"spm:{tmp_path / 'missing.model'}")


def test_split_documents_cuts_at_ninety_percent_of_characters():
    docs = ["abcdefghij", "klmno", "pqrst"]  # 20 characters, cut at 18
    train, validation = (text.split_documents(docs, s) for s in ("train", "validation"))
    assert train == ["abcdefghij", "klmno", "pqr"] and validation == ["st"]
    with pytest.raises(DataError, match="split"):
        text.split_documents(docs, "dev")


def test_tiny_shakespeare_char_windows_match_nanogpt_data(tmp_path, monkeypatch):
    """nanoGPT's char-level data on a stand-in input.txt (40,000 characters of Python's
    documentation), found where the corpus lives by default: the data root's
    tiny-shakespeare/input.txt."""
    data = "".join(text._local_documents("pydoc", None))[:40000]
    (tmp_path / "tiny-shakespeare").mkdir()
    (tmp_path / "tiny-shakespeare" / "input.txt").write_text(data, encoding="utf-8")
    monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path))
    name = text.text_dataset_name("tiny_shakespeare", tokenizer="char", length=65, sentinels=0)
    chars = sorted(set(data))
    cut = int(0.9 * len(data))
    ids = lambda s: np.array([7 + chars.index(c) for c in s])
    train = get_source(name, "train")
    assert len(train) == cut - 65 + 1
    for i in (0, 12345, len(train) - 1):
        row = train[i]
        np.testing.assert_array_equal(row["tokens"], ids(data[i:i + 65]))
        np.testing.assert_array_equal(row["segment_ids"], 1)
        np.testing.assert_array_equal(row["positions"], np.arange(65))
    validation = get_source(name, "validation")
    rows = [validation[i] for i in range(len(validation))]
    # Next-token targets of the consecutive windows cover the last 10% exactly once.
    targets = np.concatenate([r["tokens"][1:][r["segment_ids"][1:] > 0] for r in rows])
    np.testing.assert_array_equal(targets, ids(data[cut + 1:]))
    np.testing.assert_array_equal(rows[0]["tokens"][:3], ids(data[cut:cut + 3]))


def test_packed_rows_restart_segments_and_positions_per_document():
    docs = [np.array([10, 11, 12, 2]), np.array([20, 2]), np.array([30, 31, 32, 33, 34, 2])]
    packed = text.PackedRows(docs, length=5)
    assert len(packed) == 3
    expected = [([10, 11, 12, 2, 20], [1, 1, 1, 1, 2], [0, 1, 2, 3, 0]),
                ([2, 30, 31, 32, 33], [1, 2, 2, 2, 2], [0, 0, 1, 2, 3]),  # doc 2 goes on, from 0
                ([34, 2, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 0, 0, 0])]
    for i, (tokens, segments, positions) in enumerate(expected):
        row = packed[i]
        np.testing.assert_array_equal(row["tokens"], tokens)
        np.testing.assert_array_equal(row["segment_ids"], segments)
        np.testing.assert_array_equal(row["positions"], positions)


def test_pydoc_packed_source_round_trips_the_embedded_corpus():
    name = text.text_dataset_name("pydoc", rows="packed", length=256)
    source = get_source(name, "validation")
    tok = text.tokenizer_for(name)
    stream = np.concatenate([source[i]["tokens"] for i in range(len(source))])
    expected = "".join(d + "[EOS]" for d in text.split_documents(
        text._local_documents("pydoc", None), "validation"))
    assert tok.decode(stream[stream > 0]) == expected
    assert "pydoc" in repr(text.parse_text_dataset(name)) and len(source) > 100


def test_dataset_names_parse_and_reject_mistakes(tmp_path):
    name = text.text_dataset_name("file", length=9, tokenizer="char")
    assert name == "text:file?length=9&tokenizer=char"
    assert text.parse_text_dataset(name) == text.TextDataSpec("file", length=9, tokenizer="char")
    (tmp_path / "a.txt").write_text("abcdefghijklmnopqrstuvwxyz" * 4)
    assert get_source(name, "train", str(tmp_path / "a.txt"))[0]["tokens"].shape == (9,)
    for bad, message in (("text:nope", "unknown text corpus 'nope'"),
                         ("text:pydoc?lenght=4", "bad option 'lenght=4'"),
                         ("text:pydoc?length=four", "length='four' is not int"),
                         ("text:pydoc?rows=zigzag", "rows must be one of"),
                         ("text:file", "needs data_dir")):
        with pytest.raises(ConfigError, match=message):
            get_source(bad, "train")
    with pytest.raises(DataError, match="missing.txt"):
        get_source("text:file", "train", str(tmp_path / "missing.txt"))


def test_text_paths_resolve_against_the_data_root(tmp_path, monkeypatch):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("abcdefghijklmnopqrstuvwxyz" * 4)
    name = text.text_dataset_name("file", length=9, tokenizer="char")
    monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path))
    assert len(get_source(name, "train", "corpus/a.txt")) == 93 - 9 + 1
    assert text.tokenizer_for(name, "corpus/a.txt").chars == "abcdefghijklmnopqrstuvwxyz"
    monkeypatch.delenv("JAXSSL_DATA_DIR")
    monkeypatch.chdir(tmp_path / "corpus")
    assert len(get_source(name, "train", "a.txt")) == 93 - 9 + 1
    with pytest.raises(DataError, match="tiny_shakespeare.*" + re.escape(str(tmp_path / "corpus"))):
        get_source("text:tiny_shakespeare", "train")  # cwd/tiny-shakespeare/input.txt


@pytest.mark.parametrize("content, problem", [(b"\xff\xfe not UTF-8 \x80", "as UTF-8 text"),
                                              (b"ab", "too short")])
def test_an_unreadable_or_too_short_corpus_is_a_data_error_naming_the_file(tmp_path, content,
                                                                           problem):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + problem):
        get_source(text.text_dataset_name("file", length=9), "train", str(path))


_TINY_DOCS = ["first document.", "the second one, longer than the first.", "third",
              "fourth is for the test split"]


class TinyTextDocs(tfds.core.GeneratorBasedBuilder):
    """Four short documents: three 'train', one 'test'."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, disable_shuffling=True,
                                     features=tfds.features.FeaturesDict({"text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(3)), "test": self._generate_examples([3])}

    def _generate_examples(self, indices):
        for i in indices:
            yield i, {"text": _TINY_DOCS[i]}


def test_tfds_text_source_reads_a_locally_prepared_dataset(tmp_path):
    tfds.disable_progress_bar()
    TinyTextDocs(data_dir=tmp_path, file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    name = text.text_dataset_name("tiny_text_docs", from_tfds=True, rows="packed", length=16,
                                  tokenizer="char")
    tok = text.tokenizer_for(name, str(tmp_path))
    assert tok.chars == "".join(sorted(set("".join(_TINY_DOCS[:3]))))
    source = get_source(name, "train", str(tmp_path))
    stream = np.concatenate([source[i]["tokens"] for i in range(len(source))])
    assert tok.decode(stream[stream > 0]) == "".join(d + "[EOS]" for d in _TINY_DOCS[:3])
    with pytest.raises(DataError, match="not prepared"):
        get_source("tfds_text:mnist", "train", str(tmp_path))
    with pytest.raises(DataError, match="'tiny_text_docs' has no feature 'body'"):
        get_source(text.text_dataset_name("tiny_text_docs", from_tfds=True, text_key="body"),
                   "train", str(tmp_path))
