"""Language objectives and mixtures: float64 NumPy references and statistics over many draws."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.objectives import language, mixture

VOCAB = 300
SENTINEL_TOP = VOCAB - 1
REGULAR = (7, 200)  # ordinary ids; 0..6 special, 200..299 sentinels


def log_softmax64(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def random_logits(seed, shape):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(np.float32) * 3, rng


def test_causal_and_prefix_lm_losses_match_float64_reference():
    logits, rng = random_logits(0, (3, 7, 11))
    targets = rng.integers(0, 11, (3, 7))
    mask = rng.random((3, 7)) < 0.7
    in_prefix = rng.random((3, 7)) < 0.4
    nll = -np.take_along_axis(log_softmax64(logits), targets[..., None], -1)[..., 0]

    loss, count = language.causal_lm_loss(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
    np.testing.assert_allclose(float(loss), nll[mask].mean(), rtol=1e-6)
    assert float(count) == mask.sum()

    suffix = mask & ~in_prefix
    loss, count = language.prefix_lm_loss(jnp.asarray(logits), jnp.asarray(targets),
                                          jnp.asarray(mask), jnp.asarray(in_prefix))
    np.testing.assert_allclose(float(loss), nll[suffix].mean(), rtol=1e-6)
    assert float(count) == suffix.sum()


@pytest.mark.parametrize("chunk_length", [0, 1, 3, 4, 7, 20])
def test_chunked_token_nll_and_its_gradients_match_float64_reference(chunk_length):
    """nll of hidden @ kernel + bias, 7 positions in chunks (the last padded where 7 is
    not a multiple), and its gradients for hidden, kernel and bias in float64."""
    rng = np.random.default_rng(1)
    hidden, kernel = rng.normal(size=(3, 7, 5)), rng.normal(size=(5, 11))
    bias, targets = rng.normal(size=11), rng.integers(0, 11, (3, 7))
    weights = rng.random((3, 7))    # a weighted sum of the nll, to test every gradient

    logp = log_softmax64(hidden @ kernel + bias)
    picked = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    # d/dlogits of -sum(w * log p[target]) = w * (softmax - onehot)
    dlogits = weights[..., None] * (np.exp(logp) - np.eye(11)[targets])

    def weighted_nll(h, k, b):
        project = lambda x: x @ k + b
        nll = language.chunked_token_nll(project, h, jnp.asarray(targets), chunk_length)
        return jnp.sum(nll * weights), nll

    args = [jnp.asarray(a, jnp.float32) for a in (hidden, kernel, bias)]
    (_, nll), grads = jax.value_and_grad(weighted_nll, argnums=(0, 1, 2), has_aux=True)(*args)
    np.testing.assert_allclose(np.asarray(nll), -picked, rtol=1e-5, atol=1e-5)
    expected = (dlogits @ kernel.T, np.einsum("btd,btv->dv", hidden, dlogits),
                dlogits.sum((0, 1)))
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def test_chunked_token_nll_holds_one_chunk_of_logits():
    """The compiled gradient's temporaries grow with the chunk, not with the sequence."""
    hidden, kernel = jnp.ones((2, 512, 16)), jnp.ones((16, 4096)) / 16
    targets = jnp.zeros((2, 512), jnp.int32)

    def temporaries(chunk_length):
        loss = lambda h, k: jnp.sum(language.chunked_token_nll(lambda x: x @ k, h, targets,
                                                               chunk_length))
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(hidden, kernel).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    logits_bytes = 2 * 512 * 4096 * 4
    assert temporaries(0) >= logits_bytes
    assert temporaries(32) < 3 * logits_bytes * 32 / 512   # a chunk's logits and gradient


def test_next_token_targets_stay_within_segments():
    tokens = np.array([[5, 6, 7, 8, 9, 0]])
    segments = np.array([[1, 1, 2, 2, 2, 0]])
    targets, mask = language.next_token_targets(jnp.asarray(tokens), jnp.asarray(segments))
    np.testing.assert_array_equal(targets, [[6, 7, 8, 9, 0]])
    np.testing.assert_array_equal(mask, [[True, False, True, True, False]])


def test_mlm_mask_chooses_a_count_per_row_uniformly_over_many_draws():
    rng = np.random.default_rng(1)
    tokens = rng.integers(REGULAR[0], REGULAR[1], (400, 128))
    special = rng.random(tokens.shape) < 0.2
    special[:100] |= rng.random((100, 128)) < 0.6     # rows with fewer ordinary tokens
    special[0, :] = True                               # a row with none: nothing chosen
    special[1, 3:] = True                              # three: round(0.45) = 0, at least one
    tokens[special] = rng.choice([0, 1, 2, 250, 299], special.sum())
    inputs, chosen = jax.jit(lambda k, t: language.mlm_mask(k, t, REGULAR, mask_id=3))(
        jax.random.key(0), jnp.asarray(tokens, jnp.int32))
    inputs, chosen = np.asarray(inputs), np.asarray(chosen)
    assert not chosen[special].any()
    np.testing.assert_array_equal(inputs[~chosen], tokens[~chosen])
    ordinary = (~special).sum(1)
    expected = np.where(ordinary > 0, np.maximum(np.round(0.15 * ordinary), 1), 0)
    np.testing.assert_array_equal(chosen.sum(1), expected)
    assert expected[0] == 0 and expected[1] == 1
    # Uniform over a row's ordinary tokens: the chosen share of each position, over the
    # rows where it is ordinary, is the rows' mean rate (a binomial's 4.5 sigma at most).
    rate = expected / np.maximum(ordinary, 1)
    eligible_rows = ~special
    share = (chosen.sum(0) / eligible_rows.sum(0)
             - (eligible_rows * rate[:, None]).sum(0) / eligible_rows.sum(0))
    assert np.abs(share).max() < 4.5 * np.sqrt(0.15 * 0.85 / eligible_rows.sum(0).min())
    masked = inputs[chosen] == 3
    kept = inputs[chosen] == tokens[chosen]
    randomised = ~masked & ~kept
    # A random replacement equals the original with probability 1/193.
    for outcome, p in ((masked, 0.8), (kept, 0.1 + 0.1 / 193), (randomised, 0.1 * 192 / 193)):
        assert abs(outcome.mean() - p) < 4.5 * np.sqrt(p * (1 - p) / outcome.size)
    replaced = inputs[chosen][randomised]
    assert replaced.min() >= REGULAR[0] and replaced.max() < REGULAR[1]


def spans_of(mask_row):
    """Lengths of the maximal runs of True."""
    edges = np.diff(np.concatenate([[0], mask_row.astype(int), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


@pytest.mark.parametrize("length, density, mean_span", [(64, 0.15, 3.0), (100, 0.5, 3.0),
                                                        (128, 0.15, 32.0)])
def test_noise_mask_matches_t5_counts(length, density, mean_span):
    num_noise = min(max(round(length * density), 1), length - 1)
    num_spans = max(round(num_noise / mean_span), 1)
    keys = jax.random.split(jax.random.key(2), 500)
    masks = np.asarray(jax.jit(jax.vmap(lambda k: language.random_spans_noise_mask(
        k, length, density, mean_span)))(keys))
    assert (masks.sum(1) == num_noise).all()
    assert not masks[:, 0].any() and masks[:, -1].all()  # T5 starts with kept, ends with noise
    spans = [spans_of(m) for m in masks]
    assert all(len(s) == num_spans for s in spans)
    all_spans = np.concatenate(spans)
    np.testing.assert_allclose(all_spans.mean(), num_noise / num_spans)
    if num_spans > 1:  # a random segmentation: every span length occurs, not one fixed size
        assert all_spans.min() == 1 and all_spans.max() > 2 * num_noise / num_spans


def decode_span_corruption(inputs, targets):
    """Rebuilds the original row from T5 inputs and targets (independent of the code)."""
    pieces, k = {}, None
    for t in targets:
        if t > REGULAR[1] - 1:
            k = t
            pieces[k] = []
        elif t != 0:
            pieces[k].append(t)
    out = []
    for t in inputs:
        out.extend(pieces[t] if t > REGULAR[1] - 1 else [t])
    return out


def test_span_corruption_round_trips_with_sentinels_in_order():
    rng = np.random.default_rng(3)
    tokens = rng.integers(REGULAR[0], REGULAR[1], (100, 50)).astype(np.int32)
    inputs, targets = jax.device_get(jax.jit(
        lambda k, t: language.span_corruption(k, t, SENTINEL_TOP))(jax.random.key(4), tokens))
    in_len, target_len = language.span_corruption_lengths(50, 0.15, 3.0)
    assert inputs.shape == (100, in_len) and targets.shape == (100, target_len)
    num_spans = language.span_counts(50, 0.15, 3.0)[1]
    sentinels = SENTINEL_TOP - np.arange(num_spans)
    for row, x, y in zip(tokens, inputs, targets):
        assert decode_span_corruption(x, y) == row.tolist()
        np.testing.assert_array_equal(x[x >= REGULAR[1]], sentinels)
        np.testing.assert_array_equal(y[y >= REGULAR[1]], sentinels)
        assert y[0] == SENTINEL_TOP


def test_prefix_split_and_model_layouts_rebuild_the_row():
    rng = np.random.default_rng(5)
    tokens = rng.integers(REGULAR[0], REGULAR[1], (16, 10)).astype(np.int32)

    @jax.jit
    def make(key, tokens):
        example = language.prefix_split(key, tokens)
        return example, language.to_decoder_only(example), language.to_encoder_decoder(example, 1)

    example, stream, encdec = jax.device_get(make(jax.random.key(6), tokens))
    splits = example.input_lengths
    assert splits.min() >= 1 and splits.max() <= 9
    np.testing.assert_array_equal(splits + example.target_lengths, 10)
    for b, p in enumerate(splits):
        row = tokens[b]
        np.testing.assert_array_equal(example.inputs[b, :p], row[:p])
        np.testing.assert_array_equal(example.targets[b, :10 - p], row[p:])
        # Decoder-only: the stream is the row, prefix not autoregressive, loss on row[p:].
        np.testing.assert_array_equal(stream["tokens"][b, :9], row[:9])
        np.testing.assert_array_equal(stream["autoregressive"][b, :9], np.arange(9) >= p)
        np.testing.assert_array_equal(stream["targets"][b][stream["loss_mask"][b]], row[p:])
        np.testing.assert_array_equal(stream["positions"][b, :9], np.arange(9))
        # Encoder-decoder: BOS then the targets shifted right; loss on every real target.
        np.testing.assert_array_equal(encdec["decoder_tokens"][b, :10 - p], [1, *row[p:-1]])
        assert int(encdec["loss_mask"][b].sum()) == 10 - p
        np.testing.assert_array_equal(encdec["encoder_segment_ids"][b], np.arange(9) < p)


def test_prefix_split_within_lengths_never_targets_padding():
    rng = np.random.default_rng(7)
    lengths = np.array([10, 6, 2, 1, 4] * 4, np.int32)
    tokens = rng.integers(REGULAR[0], REGULAR[1], (20, 10)).astype(np.int32)
    tokens[np.arange(10)[None, :] >= lengths[:, None]] = language.PAD_ID
    example = jax.device_get(jax.jit(language.prefix_split)(jax.random.key(8), tokens, lengths))
    splits, target_lengths = example.input_lengths, example.target_lengths
    np.testing.assert_array_equal(target_lengths, np.maximum(lengths - splits, 0))
    assert np.all((splits >= 1) & ((splits <= lengths - 1) | (lengths < 2)))
    for b, p in enumerate(splits):
        np.testing.assert_array_equal(example.inputs[b, :p], tokens[b, :p])
        np.testing.assert_array_equal(example.targets[b, :target_lengths[b]],
                                      tokens[b, p:lengths[b]])
        assert np.all(example.targets[b, target_lengths[b]:] == language.PAD_ID)


def test_prefix_split_at_a_fixed_point_targets_the_rest_of_each_row():
    rng = np.random.default_rng(9)
    lengths = np.array([10, 6, 4, 2] * 2, np.int32)
    tokens = rng.integers(REGULAR[0], REGULAR[1], (8, 10)).astype(np.int32)
    tokens[np.arange(10)[None, :] >= lengths[:, None]] = language.PAD_ID
    qa = language.Denoiser("qa", split=5)
    example = jax.device_get(language.denoise(jax.random.key(0), tokens, qa, None, lengths))
    # The split is 5, or the last real token of a shorter row.
    np.testing.assert_array_equal(example.input_lengths, [5, 5, 3, 1] * 2)
    for b, p in enumerate(example.input_lengths):
        np.testing.assert_array_equal(example.inputs[b, :p], tokens[b, :p])
        np.testing.assert_array_equal(example.targets[b, :lengths[b] - p], tokens[b, p:lengths[b]])
    np.testing.assert_array_equal(example.target_lengths, [5, 1, 1, 1] * 2)


def test_ul2_mixture_gives_each_row_its_denoiser_and_mode_token():
    denoisers = language.ul2_denoisers(4, 5, 6)
    rates = language.ul2_rates(0.5, 0.25, 0.25)
    np.testing.assert_allclose(rates, [0.25, 0.125, 0.125, 0.5])
    tokens = np.random.default_rng(7).integers(7, 200, (32, 64)).astype(np.int32)

    @jax.jit
    def make(key, tokens):
        choice = mixture.choose(key, rates, tokens.shape[0], per_example=True)
        return choice, language.mixture_of_denoisers(jax.random.fold_in(key, 1), tokens,
                                                     denoisers, choice, SENTINEL_TOP)

    choice, example = jax.device_get(make(jax.random.key(8), tokens))
    assert set(choice) == {0, 1, 2, 3}
    np.testing.assert_array_equal(example.inputs[:, 0], np.array([4, 5, 5, 6])[choice])
    for b, k in enumerate(choice):
        d = denoisers[k]
        if d.noise_density > 0:
            in_len, target_len = language.span_corruption_lengths(64, d.noise_density, d.mean_span)
            assert example.input_lengths[b] == in_len + 1 and example.target_lengths[b] == target_len
            x, y = example.inputs[b, 1:in_len + 1], example.targets[b, :target_len]
            assert decode_span_corruption(x, y) == tokens[b].tolist()
        else:
            assert example.input_lengths[b] + example.target_lengths[b] == 65


def test_choose_follows_rates_per_example_and_per_batch():
    rates = (0.5, 0.25, 0.25)
    choice = np.asarray(mixture.choose(jax.random.key(10), rates, 20000, per_example=True))
    np.testing.assert_allclose(np.bincount(choice, minlength=3) / 20000, rates, atol=0.015)
    per_batch = [np.asarray(mixture.choose(jax.random.key(s), rates, 8, per_example=False))
                 for s in range(300)]
    assert all((c == c[0]).all() for c in per_batch)
    np.testing.assert_allclose(np.bincount([c[0] for c in per_batch], minlength=3) / 300, rates,
                               atol=0.08)
    with pytest.raises(ValueError, match="sum to 1"):
        mixture.check_rates((0.5, 0.2))


def test_select_and_metrics_by_objective_match_reference():
    rng = np.random.default_rng(11)
    choice = rng.integers(0, 3, 12)
    candidates = [{"x": rng.normal(size=(12, 4)).astype(np.float32)} for _ in range(3)]
    picked = mixture.select(jnp.asarray(choice), candidates)
    np.testing.assert_array_equal(picked["x"], np.stack([candidates[c]["x"][b] for b, c in enumerate(choice)]))
    loss_sum, count = rng.random(12) * 10, rng.integers(1, 9, 12).astype(np.float64)
    names = ["R", "X", "X"]
    metrics = mixture.metrics_by_objective(names, jnp.asarray(choice), jnp.asarray(loss_sum),
                                           jnp.asarray(count))
    for name, members in (("R", choice == 0), ("X", choice >= 1)):
        np.testing.assert_allclose(float(metrics[f"{name}/loss"]),
                                   loss_sum[members].sum() / count[members].sum(), rtol=1e-6)
        assert float(metrics[f"{name}/tokens"]) == count[members].sum()
