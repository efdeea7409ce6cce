"""Multimodal sequences (jaxssl/data/multimodal.py): Gato's mu-law binning against a float64
reference and its round trip, loss masks, packing that never mixes examples, and image /
vector placeholders filled by exactly their encoder outputs."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.data import multimodal as mm
from jaxssl.errors import DataError
from jaxssl.models.transformer import attention_mask

TEXT_VOCAB = 32_000


def reference_mu_law(x: float) -> float:
    """Gato, section 2.1: F(x) = sgn(x) log(|x| mu + 1) / log(M mu + 1), mu = 100, M = 256."""
    return math.copysign(math.log(abs(x) * 100.0 + 1.0) / math.log(256.0 * 100.0 + 1.0), x)


def test_mu_law_matches_the_float64_formula_and_inverts():
    x = np.random.default_rng(0).standard_normal(1000) * np.logspace(-3, 2.4, 1000)
    expected = np.array([reference_mu_law(v) for v in x])
    np.testing.assert_allclose(mm.mu_law(x), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(mm.mu_law(jnp.asarray(x, jnp.float32))), expected,
                               rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(mm.inverse_mu_law(mm.mu_law(x)), x, rtol=1e-10, atol=1e-12)
    assert mm.mu_law(np.array([256.0, -256.0])).tolist() == pytest.approx([1.0, -1.0], abs=1e-12)


def test_binning_round_trips_within_one_bin():
    rng = np.random.default_rng(1)
    x = rng.choice([-1, 1], 5000) * np.exp(rng.uniform(np.log(1e-4), np.log(256.0), 5000))
    tokens = mm.tokenize_continuous(x, TEXT_VOCAB)
    assert tokens.dtype == np.int32
    assert tokens.min() >= TEXT_VOCAB and tokens.max() < TEXT_VOCAB + mm.NUM_BINS
    decoded = mm.detokenize_continuous(tokens, TEXT_VOCAB)
    bin_width = 2.0 / mm.NUM_BINS  # in companded units
    error = np.abs(mm.mu_law(decoded.astype(np.float64)) - mm.mu_law(x))
    assert np.max(error) <= bin_width / 2 + 1e-6
    # Each value's bin, counted by hand: floor((F(x) + 1) / 2 * 1024).
    by_hand = [TEXT_VOCAB + min(int((reference_mu_law(v) + 1) / 2 * 1024), 1023) for v in x[:200]]
    assert tokens[:200].tolist() == by_hand
    np.testing.assert_array_equal(np.asarray(mm.tokenize_continuous(jnp.asarray(x[:200],
                                                                               jnp.float32),
                                                                   TEXT_VOCAB)), tokens[:200])


def test_values_beyond_the_range_clip_to_the_end_bins():
    tokens = mm.tokenize_continuous(np.array([-1e6, -256.0, 0.0, 256.0, 1e6]), 10)
    assert tokens.tolist() == [10, 10, 10 + 512, 10 + 1023, 10 + 1023]


def episode(seed: int, steps: int) -> list[mm.Segment]:
    """A Gato-style episode: per step an image (4 patches), a state vector (2 slots), and
    a binned continuous action (target); a text instruction first (not a target)."""
    rng = np.random.default_rng(seed)
    segments = [mm.Segment("text", tuple(rng.integers(3, 100, 3).tolist()))]
    for _ in range(steps):
        segments += [mm.Segment("image", length=4), mm.Segment("vector", length=2),
                     mm.Segment("action", tuple(mm.tokenize_continuous(
                         rng.uniform(-2, 2, 2), TEXT_VOCAB).tolist()), target=True)]
    return segments


def test_loss_falls_only_on_targets_never_on_observations():
    rows = mm.pack([episode(0, 3) + [mm.Segment("text", (5, 6, 7), target=True)]], 64)
    kinds, loss = rows["kinds"][0], rows["loss_mask"][0]
    assert not loss[np.isin(kinds, [mm.KIND_IMAGE, mm.KIND_VECTOR, mm.KIND_PAD])].any()
    assert loss[kinds == mm.KIND_ACTION].all() and loss[kinds == mm.KIND_ACTION].sum() == 6
    assert loss.sum() == 6 + 3  # the actions and the final text, not the instruction
    assert loss[:3].tolist() == [False] * 3


def test_packing_never_mixes_examples():
    examples = [episode(seed, steps) for seed, steps in enumerate([1, 3, 2, 1, 4, 2])]
    rows = mm.pack(examples, 40)
    attention = np.asarray(attention_mask(jnp.asarray(rows["segment_ids"]),
                                          jnp.asarray(rows["segment_ids"]),
                                          jnp.ones(rows["segment_ids"].shape, bool)))[:, 0]
    for index, segments in enumerate(examples):
        alone = mm.example_arrays(segments)
        r, start = rows["example_rows"][index], rows["example_starts"][index]
        span = slice(start, start + len(alone["tokens"]))
        for key in ("tokens", "kinds", "loss_mask", "positions"):
            np.testing.assert_array_equal(rows[key][r, span], alone[key])
        ids = rows["segment_ids"][r, span]
        assert len(set(ids.tolist())) == 1 and ids[0] >= 1
        others = rows["segment_ids"][r] != ids[0]
        assert not attention[r, span][:, others].any()  # no position sees another example
    assert (rows["segment_ids"] == 0).sum() == (rows["kinds"] == mm.KIND_PAD).sum()


def test_an_example_longer_than_a_row_is_refused():
    with pytest.raises(DataError, match="example 1 has 35 positions, more than a row of 30"):
        mm.pack([episode(0, 1), episode(1, 4)], 30)
    with pytest.raises(DataError, match="unknown segment kind 'audio'"):
        mm.Segment("audio", length=3)


def test_each_placeholder_is_filled_by_exactly_its_own_embedding():
    examples = [episode(seed, steps) for seed, steps in enumerate([2, 1, 3])]
    rows = mm.pack(examples, 40)
    num_rows, width, dim = rows["tokens"].shape[0], 40, 8
    rng = np.random.default_rng(3)
    # Per example: its images' patch embeddings [steps * 4, D] and state embeddings.
    embeddings = lambda n: rng.standard_normal((n, dim)).astype(np.float32)
    images = [embeddings(4 * sum(s.kind == "image" for s in e)) for e in examples]
    vectors = [embeddings(2 * sum(s.kind == "vector" for s in e)) for e in examples]
    image_table = np.zeros((num_rows, 16, dim), np.float32)
    vector_table = np.zeros((num_rows, 8, dim), np.float32)
    filled_images = np.zeros(num_rows, int)
    filled_vectors = np.zeros(num_rows, int)
    for index in np.argsort(rows["example_starts"], kind="stable"):
        r = rows["example_rows"][index]
        n, m = len(images[index]), len(vectors[index])
        image_table[r, filled_images[r]:filled_images[r] + n] = images[index]
        vector_table[r, filled_vectors[r]:filled_vectors[r] + m] = vectors[index]
        filled_images[r] += n
        filled_vectors[r] += m
    tokens = rng.standard_normal((num_rows, width, dim)).astype(np.float32)
    out = np.asarray(mm.fill_placeholders(
        jnp.asarray(tokens), jnp.asarray(rows["kinds"]), jnp.asarray(rows["slots"]),
        {mm.KIND_IMAGE: jnp.asarray(image_table), mm.KIND_VECTOR: jnp.asarray(vector_table)}))
    for index in range(len(examples)):
        r, start = rows["example_rows"][index], rows["example_starts"][index]
        kinds = rows["kinds"][r, start:start + len(mm.example_arrays(examples[index])["tokens"])]
        positions = start + np.arange(len(kinds))
        np.testing.assert_array_equal(out[r, positions[kinds == mm.KIND_IMAGE]], images[index])
        np.testing.assert_array_equal(out[r, positions[kinds == mm.KIND_VECTOR]], vectors[index])
    tokens_kept = ~np.isin(rows["kinds"], [mm.KIND_IMAGE, mm.KIND_VECTOR])
    np.testing.assert_array_equal(out[tokens_kept], tokens[tokens_kept])
