"""Text Transformers: the attention-mask builder, rotary embedding, leakage, sharding names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.models import xla_cpu
from jaxssl.models.layers import apply_rotary, dot_product_attention
from jaxssl.models.transformer import EncoderDecoder, LanguageModel, attention_mask

VOCAB, LENGTH = 50, 12
SIZES = dict(vocab_size=VOCAB, max_length=LENGTH, hidden=16, depth=2, num_heads=2, mlp_dim=32)


def init(model, seed, *args, **kwargs):
    """model.init(key(seed), *args, **kwargs) as one compiled program (outside jit Flax
    initialises op by op, compiling every op on its own)."""
    return jax.jit(lambda: model.init(jax.random.key(seed), *args, **kwargs))()


def reference_mask(segments, autoregressive):
    """Loops over (i, j): same segment, and j <= i or neither i nor j autoregressive."""
    b, t = segments.shape
    out = np.zeros((b, 1, t, t), bool)
    for n in range(b):
        for i in range(t):
            for j in range(t):
                order = j <= i or not (autoregressive[n, i] or autoregressive[n, j])
                out[n, 0, i, j] = segments[n, i] == segments[n, j] and order
    return out


def test_attention_mask_matches_reference_for_causal_prefix_bidirectional_and_packed():
    rng = np.random.default_rng(0)
    segments = np.sort(rng.integers(0, 3, (4, 9)), axis=1)[:, ::-1].copy()  # padding (0) at the end
    flags = np.stack([np.ones(9, bool), np.zeros(9, bool), np.arange(9) >= 4, rng.random(9) < 0.5])
    got = attention_mask(jnp.asarray(segments), jnp.asarray(segments), jnp.asarray(flags))
    np.testing.assert_array_equal(got, reference_mask(segments, flags))
    cross = attention_mask(jnp.asarray(segments[:, :5]), jnp.asarray(segments))
    np.testing.assert_array_equal(cross[:, 0], segments[:, :5, None] == segments[:, None, :])


def attention_reference(q, k, v, mask, keep=None, rate=0.0):
    """float64 softmax(q k^T / sqrt(Dh), masked) v, one (example, head) at a time; with
    `keep` (bool [B, N, Tq, Tk]) the weights it drops are 0, the others / (1 - rate)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    out = np.zeros_like(q)
    for b in range(q.shape[0]):
        for n in range(q.shape[2]):
            logits = q[b, :, n] @ k[b, :, n].T / np.sqrt(q.shape[-1])
            logits = np.where(mask[b, 0], logits, -np.inf)
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            if keep is not None:
                weights = np.where(keep[b, n], weights / (1 - rate), 0.0)
            out[b, :, n] = weights @ v[b, :, n]
    return out


def test_dot_product_attention_matches_float64_reference_and_jax_nn():
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(3, 7, 2, 8)).astype(np.float32) for _ in range(3))
    mask = rng.random((3, 1, 7, 7)) < 0.6
    mask[..., 0] = True  # every query sees at least one key
    got = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask))
    np.testing.assert_allclose(got, attention_reference(q, k, v, mask), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, jax.nn.dot_product_attention(q, k, v, mask=mask),
                               rtol=1e-5, atol=1e-6)


def test_attention_dropout_matches_float64_reference_with_the_same_draws():
    rng = np.random.default_rng(4)
    q, k, v = (rng.normal(size=(2, 6, 3, 4)).astype(np.float32) for _ in range(3))
    mask = np.tril(np.ones((6, 6), bool))[None, None].repeat(2, axis=0)
    key, rate = jax.random.key(7), 0.3
    got = jax.jit(dot_product_attention, static_argnums=4)(q, k, v, mask, rate, key)
    keep = np.asarray(jax.random.bernoulli(key, 1 - rate, (2, 3, 6, 6)))
    assert 0.5 < keep.mean() < 0.9
    np.testing.assert_allclose(got, attention_reference(q, k, v, mask, keep, rate),
                               rtol=1e-5, atol=1e-6)


def attention_gradients_reference(q, k, v, mask, out_gradient, keep, rate):
    """float64 gradients (q, k, v) of sum(attention(q, k, v) * out_gradient), dropout as in
    `attention_reference`, from the softmax's Jacobian, one (example, head) at a time."""
    q, k, v, out_gradient = (np.asarray(a, np.float64) for a in (q, k, v, out_gradient))
    grads = [np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)]
    scale = 1 / np.sqrt(q.shape[-1])
    for b in range(q.shape[0]):
        for n in range(q.shape[2]):
            logits = np.where(mask[b, 0], q[b, :, n] @ k[b, :, n].T * scale, -np.inf)
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            dropped = np.where(keep[b, n], 1 / (1 - rate), 0.0)
            g = out_gradient[b, :, n]
            grads[2][b, :, n] = (weights * dropped).T @ g
            weights_gradient = (g @ v[b, :, n].T) * dropped
            logits_gradient = weights * (
                weights_gradient - np.sum(weights_gradient * weights, axis=1, keepdims=True))
            grads[0][b, :, n] = logits_gradient @ k[b, :, n] * scale
            grads[1][b, :, n] = logits_gradient.T @ q[b, :, n] * scale
    return grads


def _attention_gradients(q, k, v, mask, out_gradient, rate, key):
    loss = lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, mask, rate, key) * out_gradient)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def test_dot_product_attention_gradients_match_float64_reference():
    rng = np.random.default_rng(6)
    q, k, v, out_gradient = (rng.normal(size=(2, 7, 3, 8)).astype(np.float32) for _ in range(4))
    mask = np.tril(np.ones((7, 7), bool))[None, None].repeat(2, axis=0)
    for rate, key in ((0.0, None), (0.3, jax.random.key(8))):
        keep = (np.ones((2, 3, 7, 7), bool) if key is None
                else np.asarray(jax.random.bernoulli(key, 1 - rate, (2, 3, 7, 7))))
        got = _attention_gradients(q, k, v, mask, out_gradient, rate, key)(q, k, v)
        expected = attention_gradients_reference(q, k, v, mask, out_gradient, keep, rate)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # bfloat16 inputs keep their dtype in the gradients.
    low = [jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)]
    got = _attention_gradients(*low, mask, out_gradient, 0.0, None)(*low)
    assert [a.dtype for a in got] == [jnp.bfloat16] * 3
    expected = attention_gradients_reference(*low, mask, out_gradient, np.ones((2, 3, 7, 7)), 0.0)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=5e-2, atol=1e-1)


def _transposed_operand_products(compiled_text):
    """Batched products in compiled HLO whose lhs is contracted over its rows (axis 2)."""
    return [line for line in compiled_text.splitlines() if ' dot(' in line
            and 'lhs_batch_dims={0,1}' in line and 'lhs_contracting_dims={2}' in line]


def test_attention_gradients_need_no_transposed_operand_product_on_cpu(monkeypatch):
    q, k, v, out_gradient = (np.random.default_rng(9).normal(size=(4, 16, 2, 8)).astype(
        np.float32) for _ in range(4))
    compiled = lambda: _attention_gradients(q, k, v, None, out_gradient, 0.0, None).lower(
        q, k, v).compile().as_text()
    assert not _transposed_operand_products(compiled())
    # Without the unfoldable copy XLA:CPU folds the transpose back into k's and v's
    # gradient products.
    monkeypatch.setattr(xla_cpu, "transposed_copy", lambda x: jnp.swapaxes(x, -1, -2))
    assert len(_transposed_operand_products(compiled())) == 2
    monkeypatch.undo()
    # Other platforms get the products' own (autodiff) gradients.
    lowered = {platform: jax.jit(_attention_gradients(q, k, v, None, out_gradient, 0.0, None))
               .trace(q, k, v).lower(lowering_platforms=(platform,)).as_text()
               for platform in ('cpu', 'tpu', 'cuda')}
    assert ['contracting_dims = [2] x [2]' in text for text in lowered.values()] == [
        False, True, True]


def test_language_model_attention_dropout_only_in_training():
    model = LanguageModel(**SIZES, attention_dropout=0.5)
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, VOCAB, (2, LENGTH)), jnp.int32)
    args = (tokens, jnp.ones_like(tokens), jnp.broadcast_to(jnp.arange(LENGTH), tokens.shape),
            jnp.ones(tokens.shape, bool))
    params = init(model, 0, *args, train=False)
    plain = jax.jit(LanguageModel(**SIZES).apply, static_argnames="train")(params, *args,
                                                                          train=False)
    apply = jax.jit(model.apply, static_argnames="train")
    np.testing.assert_array_equal(apply(params, *args, train=False), plain)
    dropped = apply(params, *args, train=True, rngs={"dropout": jax.random.key(1)})
    assert np.all(np.isfinite(dropped)) and not np.allclose(dropped, plain, atol=1e-3)
    with pytest.raises(ValueError, match="attention dropout needs"):
        LanguageModel(**SIZES, attention_dropout=0.5, attention_impl="xla").apply(
            params, *args, train=True, rngs={"dropout": jax.random.key(1)})


def test_gpt2_init_draws_kernels_at_nanogpts_scales():
    depth, width = 3, 64
    model = LanguageModel(**{**SIZES, "hidden": width, "depth": depth, "mlp_dim": 4 * width},
                          initialization="gpt2")
    tokens = jnp.zeros((1, LENGTH), jnp.int32)
    params = nn.unbox(init(model, 0, tokens, tokens, tokens, jnp.ones((1, LENGTH), bool),
                           train=False))["params"]
    blocks = [params["stack"][f"block{i}"] for i in range(depth)]
    std = lambda name, leaf: np.std(np.concatenate(
        [np.ravel(b[name][leaf]["kernel"]) for b in blocks]))
    residual = 0.02 / np.sqrt(2 * depth)
    for (name, leaf), expected in {("self_attention", "qkv"): 0.02, ("mlp", "fc1"): 0.02,
                                   ("self_attention", "out"): residual,
                                   ("mlp", "fc2"): residual}.items():
        assert std(name, leaf) == pytest.approx(expected, rel=0.05), (name, leaf)
    with pytest.raises(ValueError, match="unknown init 'gpt3'"):
        init(LanguageModel(**SIZES, initialization="gpt3"), 0, tokens, tokens, tokens,
             jnp.ones((1, LENGTH), bool), train=False)


def rotate_reference(x, positions):
    x = np.asarray(x, np.float64)
    half = x.shape[-1] // 2
    freq = 10000.0 ** (-np.arange(half) / half)
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            angle = positions[b, t] * freq
            x1, x2 = x[b, t, :, :half], x[b, t, :, half:]
            out[b, t, :, :half] = x1 * np.cos(angle) - x2 * np.sin(angle)
            out[b, t, :, half:] = x2 * np.cos(angle) + x1 * np.sin(angle)
    return out


def test_rotary_matches_reference_and_depends_on_relative_position_only():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
    positions = rng.integers(0, 40, (2, 5))
    np.testing.assert_allclose(apply_rotary(jnp.asarray(x), jnp.asarray(positions)),
                               rotate_reference(x, positions), rtol=1e-5, atol=1e-5)
    q, k = x[:1, :1], x[:1, 1:2]
    dot = lambda pq, pk: float(jnp.sum(apply_rotary(jnp.asarray(q), jnp.full((1, 1), pq))
                                       * apply_rotary(jnp.asarray(k), jnp.full((1, 1), pk))))
    np.testing.assert_allclose(dot(7, 3), dot(30, 26), rtol=1e-4)


def test_relative_positions_learn_a_bucket_table_and_see_only_distances():
    # posemb='relative' alone gives T5's 32 buckets: a [32, heads] table, and logits that
    # change when the tokens' distances change but not when every position shifts.
    model = LanguageModel(**SIZES, posemb="relative")
    rng = np.random.default_rng(3)
    tokens = jnp.asarray(rng.integers(1, VOCAB, (1, LENGTH)))
    segments, flags = jnp.ones_like(tokens), jnp.ones(tokens.shape, bool)
    positions = jnp.arange(LENGTH)[None]
    params = init(model, 0, tokens, segments, positions, flags, train=False)
    assert nn.unbox(params)["params"]["stack"]["relative_attention_bias"].shape == (32, 2)
    logits = lambda positions: model.apply(params, tokens, segments, positions, flags, False)
    np.testing.assert_allclose(logits(positions + 7), logits(positions), rtol=1e-5, atol=1e-6)
    assert np.abs(logits(positions * 3) - logits(positions)).max() > 1e-3


@pytest.fixture(scope="module")
def decoder():
    model = LanguageModel(**SIZES, posemb="rotary")
    tokens = jnp.ones((1, LENGTH), jnp.int32)
    params = init(model, 0, tokens, tokens, tokens, tokens > 0, train=False)

    @jax.jit
    def logits(tokens, segments, flags):
        positions = jnp.broadcast_to(jnp.arange(LENGTH), tokens.shape)
        return model.apply(params, tokens, segments, positions, flags, train=False)

    return params, logits


def changed_positions(logits_fn, tokens, segments, flags, where):
    """Positions whose logits change when the token at `where` changes."""
    other = tokens.copy()
    other[:, where] = (other[:, where] + 1) % VOCAB
    a = logits_fn(jnp.asarray(tokens), jnp.asarray(segments), jnp.asarray(flags))
    b = logits_fn(jnp.asarray(other), jnp.asarray(segments), jnp.asarray(flags))
    return set(np.flatnonzero(np.abs(np.asarray(a - b)).max(axis=(0, 2)) > 1e-6).tolist())


def test_causal_mask_never_leaks_the_future(decoder):
    _, logits = decoder
    tokens = np.random.default_rng(2).integers(1, VOCAB, (1, LENGTH))
    ones, causal = np.ones((1, LENGTH), int), np.ones((1, LENGTH), bool)
    for where in (0, 5, LENGTH - 1):
        assert changed_positions(logits, tokens, ones, causal, where) == set(range(where, LENGTH))


def test_prefix_lm_sees_the_whole_prefix_and_never_a_later_suffix_token(decoder):
    _, logits = decoder
    tokens = np.random.default_rng(3).integers(1, VOCAB, (1, LENGTH))
    ones, prefix = np.ones((1, LENGTH), int), (np.arange(LENGTH) >= 5)[None]
    for where in range(5):  # a prefix token reaches every position, earlier prefix ones too
        assert changed_positions(logits, tokens, ones, prefix, where) == set(range(LENGTH))
    for where in (5, 8):    # a suffix token reaches only itself and later positions
        assert changed_positions(logits, tokens, ones, prefix, where) == set(range(where, LENGTH))


def test_packed_segments_never_see_each_other(decoder):
    _, logits = decoder
    tokens = np.random.default_rng(4).integers(1, VOCAB, (1, LENGTH))
    segments = np.array([[1] * 4 + [2] * 5 + [3] * 3])
    for causal in (True, False):   # token 5 of segment 2 (positions 4-8) reaches only it
        flags = np.full((1, LENGTH), causal)
        assert changed_positions(logits, tokens, segments, flags, 5) == set(
            range(5 if causal else 4, 9))
        assert changed_positions(logits, tokens, segments, flags, 0) == set(range(4))


def test_every_parameter_has_logical_axis_names():
    tokens = jnp.ones((2, LENGTH), jnp.int32)
    for model, args in (
            (LanguageModel(**SIZES, tied_embeddings=False), (tokens, tokens, tokens, tokens > 0)),
            (EncoderDecoder(**SIZES, decoder_depth=1), (tokens,) * 6)):
        boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, train=False))
        leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
        names = {n for x in leaves for n in x.names}
        assert {"vocab", "embed", "heads", "kv", "mlp"} <= names
    params = nn.meta.unbox(boxed)["params"]
    assert "cross_attention" in params["decoder"]["block0"]
    assert "cross_attention" not in params["encoder"]["block0"]


def test_encoder_decoder_decoder_is_causal_and_cross_attention_respects_segments():
    model = EncoderDecoder(**SIZES, decoder_depth=2)
    rng = np.random.default_rng(5)
    enc = rng.integers(1, VOCAB, (1, LENGTH))
    dec = rng.integers(1, VOCAB, (1, 8))
    enc_seg = np.array([[1] * 6 + [2] * 6])
    dec_seg = np.array([[1] * 4 + [2] * 4])
    positions = lambda x: np.broadcast_to(np.arange(x.shape[1]), x.shape)
    params = init(model, 1, enc, enc_seg, positions(enc), dec, dec_seg, positions(dec),
                  train=False)
    run = jax.jit(lambda e, d: model.apply(params, e, enc_seg, positions(enc), d, dec_seg,
                                           positions(dec), train=False))
    base = run(enc, dec)
    changed = lambda a, b: set(np.flatnonzero(np.abs(np.asarray(a - b)).max(axis=(0, 2)) > 1e-6))
    later = dec.copy()
    later[0, 6] = (later[0, 6] + 1) % VOCAB
    assert changed(base, run(enc, later)) == {6, 7}
    second_encoder_segment = enc.copy()
    second_encoder_segment[0, 9] = (second_encoder_segment[0, 9] + 1) % VOCAB
    assert changed(base, run(second_encoder_segment, dec)) == {4, 5, 6, 7}


def test_prefix_embeddings_are_visible_to_every_token_and_only_tokens_get_logits():
    model = LanguageModel(**SIZES)
    rng = np.random.default_rng(6)
    tokens = jnp.asarray(rng.integers(1, VOCAB, (1, 6)), jnp.int32)
    ones, positions = jnp.ones((1, 6), jnp.int32), jnp.arange(6)[None]
    causal = jnp.ones((1, 6), bool)
    prefix = jnp.asarray(rng.normal(size=(1, 3, 16)), jnp.float32)
    params = init(model, 2, tokens, ones, positions, causal, False, prefix=prefix)
    run = jax.jit(lambda p: model.apply(params, tokens, ones, positions, causal, False, prefix=p))
    base = run(prefix)
    assert base.shape == (1, 6, VOCAB)
    moved = run(prefix.at[0, 2].add(jnp.asarray(rng.normal(size=16), jnp.float32)))
    assert (np.abs(np.asarray(moved - base)).max(axis=2) > 1e-6).all()


@pytest.mark.parametrize("posemb", ["learned", "rotary"])
def test_placeholders_take_their_table_rows_and_then_the_position_embedding(posemb):
    """A placeholder's input is its table row plus the position's embedding (learned) or
    rotary position; the logits equal a model fed those inputs through an embedding
    table whose rows are the filled vectors."""
    from jaxssl.data.multimodal import KIND_IMAGE, KIND_TEXT, KIND_VECTOR
    model = LanguageModel(**{**SIZES, "posemb": posemb})
    rng = np.random.default_rng(7)
    tokens = jnp.asarray(rng.integers(1, VOCAB, (2, 8)), jnp.int32)
    kinds = np.full((2, 8), KIND_TEXT, np.int32)
    slots = np.full((2, 8), -1, np.int32)
    kinds[:, 2:5], slots[:, 2:5] = KIND_IMAGE, [0, 1, 2]
    kinds[1, 6], slots[1, 6] = KIND_VECTOR, 0
    tables = {KIND_IMAGE: jnp.asarray(rng.normal(size=(2, 3, 16)), jnp.float32),
              KIND_VECTOR: jnp.asarray(rng.normal(size=(2, 1, 16)), jnp.float32)}
    ones, positions = jnp.ones((2, 8), jnp.int32), jnp.tile(jnp.arange(8), (2, 1))
    causal = jnp.ones((2, 8), bool)
    placeholders = (jnp.asarray(kinds), jnp.asarray(slots), tables)
    params = nn.unbox(init(model, 3, tokens, ones, positions, causal, False,
                           placeholders=placeholders))
    filled = model.apply(params, tokens, ones, positions, causal, False,
                         placeholders=placeholders)

    # Reference: one fresh vocabulary id per placeholder, its embedding row = the table row.
    table = params["params"]["embedder"]["token_embedding"]
    extra = [np.asarray(tables[KIND_IMAGE][b, s] if k == KIND_IMAGE else tables[KIND_VECTOR][b, s])
             for b in range(2) for k, s in zip(kinds[b], slots[b]) if k != KIND_TEXT]
    ids = np.asarray(tokens).copy()
    ids[kinds != KIND_TEXT] = VOCAB + np.arange(len(extra))
    wide = LanguageModel(**{**SIZES, "posemb": posemb, "vocab_size": VOCAB + len(extra)})
    wide_params = jax.tree.map(lambda x: x, params)
    wide_params["params"]["embedder"]["token_embedding"] = jnp.concatenate(
        [table, jnp.asarray(np.stack(extra))])
    reference = wide.apply(wide_params, jnp.asarray(ids), ones, positions, causal, False)
    np.testing.assert_allclose(filled, reference[..., :VOCAB], rtol=1e-5, atol=1e-5)
    text_only = model.apply(params, tokens, ones, positions, causal, False)
    assert np.abs(np.asarray(filled - text_only))[:, :2].max() < 1e-6   # causal: before any image
    assert np.abs(np.asarray(filled - text_only))[:, 2:].min() > 0


def test_bias_free_blocks_have_no_projection_biases_and_equal_zero_biases():
    """use_bias=False drops every attention / MLP bias (T5.1.1, PaLM, Llama) and
    computes what the biased model computes with those biases at zero."""
    rng = np.random.default_rng(11)
    tokens = jnp.asarray(rng.integers(0, VOCAB, (2, LENGTH)), jnp.int32)
    args = (tokens, jnp.ones_like(tokens), jnp.broadcast_to(jnp.arange(LENGTH), tokens.shape),
            jnp.ones(tokens.shape, bool))
    free = LanguageModel(**SIZES, use_bias=False)
    params = nn.meta.unbox(init(free, 0, *args, train=False))
    paths = ["/".join(str(k.key) for k in path)
             for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    block_paths = [p for p in paths if "/block" in p]
    assert block_paths and not any(
        p.endswith("bias") and ("attention/" in p or "mlp/" in p) for p in block_paths)
    biased = LanguageModel(**SIZES)
    with_bias = nn.meta.unbox(init(biased, 1, *args, train=False))
    # the bias-free kernels with random (nonzero) biases; the same biases at zero
    randomised = jax.tree_util.tree_map_with_path(
        lambda path, x: (jnp.asarray(rng.normal(size=x.shape), x.dtype)
                         if str(path[-1].key) == "bias" else x), with_bias)
    def merged(zero_biases):
        def pick(path, x):
            keys = [str(k.key) for k in path]
            if keys[-1] == "bias" and ("self_attention" in keys or "mlp" in keys):
                return jnp.zeros_like(x) if zero_biases else x
            node = params
            for k in keys:
                node = node[k]
            return node
        return jax.tree_util.tree_map_with_path(pick, randomised)
    out_free = free.apply(params, *args, train=False)
    np.testing.assert_allclose(biased.apply(merged(True), *args, train=False), out_free,
                               rtol=1e-6, atol=1e-6)
    assert not np.allclose(biased.apply(merged(False), *args, train=False), out_free, atol=1e-3)


@pytest.mark.parametrize("architecture, options", [
    ("decoder", {"tied_embeddings": False}),
    ("encoder_decoder", {"logits_transform": True, "tied_bias": True})])
def test_chunked_cross_entropy_equals_the_nll_of_whole_logits(architecture, options):
    """With targets the models return the targets' nll; computed 5 positions at a time
    (the last chunk padded), its value and every parameter's gradient are those of
    `token_nll` over the whole logits."""
    from jaxssl.objectives.language import token_nll
    rng = np.random.default_rng(8)
    tokens = jnp.asarray(rng.integers(1, VOCAB, (2, LENGTH)), jnp.int32)
    targets = jnp.asarray(rng.integers(1, VOCAB, (2, LENGTH)), jnp.int32)
    segments, positions = jnp.ones((2, LENGTH), jnp.int32), jnp.arange(LENGTH)[None]
    sizes = {**SIZES, "depth": 1, **options}
    if architecture == "decoder":
        build = lambda chunk: LanguageModel(**sizes, cross_entropy_chunk=chunk)
        inputs = (tokens, segments, positions, jnp.ones((2, LENGTH), bool), False)
    else:
        build = lambda chunk: EncoderDecoder(**sizes, decoder_depth=1, cross_entropy_chunk=chunk)
        inputs = (tokens[:, ::-1], segments, positions, tokens, segments, positions, False)
    params = init(build(0), 3, *inputs)

    def loss(params, chunk):
        nll = build(chunk).apply(params, *inputs, targets=targets)
        return jnp.sum(nll * jnp.arange(LENGTH)), nll   # every position weighs differently

    reference_nll = token_nll(build(0).apply(params, *inputs), targets)
    (_, nll), grads = jax.jit(jax.value_and_grad(lambda p: loss(p, 5), has_aux=True))(params)
    (_, whole_nll), whole_grads = jax.jit(jax.value_and_grad(lambda p: loss(p, 0),
                                                             has_aux=True))(params)
    assert nll.shape == (2, LENGTH)
    np.testing.assert_allclose(np.asarray(whole_nll), np.asarray(reference_nll), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(nll), np.asarray(reference_nll), rtol=1e-5, atol=1e-6)
    # Gradients of order 1, summed over chunks instead of at once: float32 rounding.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 grads, whole_grads)
