"""The fused TPU attention kernels (jaxssl.models.flash_attention), run here in Pallas's
interpreter, give jaxssl's XLA attention and its gradients for every mask the models build
(prefix-LM over packed segments, causal, bidirectional, cross-attention with fully masked
queries), with and without a logit bias (T5's relative positions), over several blocks; the
blocks they skip are wholly masked; the models give the same outputs with either attention,
and so does a train step on a data x fsdp x tensor mesh; and the kernels compile for a TPU
slice with libtpu."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import aot, config as config_lib, flops
from jaxssl.errors import ConfigError
from jaxssl.models import flash_attention as flash
from jaxssl.models.layers import Attention, dot_product_attention
from jaxssl.models.transformer import EncoderDecoder, LanguageModel, attention_mask
from jaxssl.models.vit import ViT

from test_scale_options import loss_and_grads
from test_tensor_parallel_steps import CONFIGS, MESH, ONE, step_on

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 16 and 8 tokens, so that a 32-token sequence spans several of them."""
    monkeypatch.setattr(flash, "BLOCK_SIZES", (16, 8))


def packed_rows(rng, batch: int, length: int):
    """Segment ids int32 [B, T] (runs of 1, 2, ... then padding 0) and random
    autoregressive flags [B, T] that are False on a prefix of each segment."""
    segments = np.zeros((batch, length), np.int32)
    flags = np.ones((batch, length), bool)
    for row in range(batch):
        cuts = np.sort(rng.choice(np.arange(1, length), size=3, replace=False))
        for segment, (start, stop) in enumerate(zip([0, *cuts[:-1]], cuts), start=1):
            segments[row, start:stop] = segment
            flags[row, start:start + rng.integers(0, stop - start + 1)] = False
    return segments, flags


def random_qkv(rng, batch, q_length, kv_length, heads=2, width=8):
    shape = lambda length: (batch, length, heads, width)
    return tuple(jnp.asarray(rng.normal(size=s), jnp.float32)
                 for s in (shape(q_length), shape(kv_length), shape(kv_length), shape(q_length)))


def check_against_xla(q, k, v, weights, q_segments, kv_segments, flags, bias=None):
    """Output and q/k/v (and bias) gradients of sum(attention * weights): kernels against
    XLA."""
    mask = attention_mask(q_segments, kv_segments, flags)
    xla = lambda q, k, v, bias: jnp.sum(
        dot_product_attention(q, k, v, mask, logit_bias=bias) * weights)
    fused = lambda q, k, v, bias: jnp.sum(
        flash.flash_attention(q, k, v, q_segments, kv_segments, flags, bias) * weights)
    np.testing.assert_allclose(
        flash.flash_attention(q, k, v, q_segments, kv_segments, flags, bias),
        dot_product_attention(q, k, v, mask, logit_bias=bias), rtol=1e-5, atol=1e-6)
    wrt = (0, 1, 2) if bias is None else (0, 1, 2, 3)
    for got, want in zip(jax.grad(fused, wrt)(q, k, v, bias), jax.grad(xla, wrt)(q, k, v, bias)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["prefix_lm", "causal", "bidirectional"])
def test_self_attention_and_gradients_match_xla(kind, small_blocks):
    rng = np.random.default_rng(0)
    segments, flags = packed_rows(rng, 2, 32)
    if kind != "prefix_lm":
        flags = np.full(flags.shape, kind == "causal")
    check_against_xla(*random_qkv(rng, 2, 32, 32), segments, segments, flags)


def test_cross_attention_with_fully_masked_queries_matches_xla(small_blocks):
    # Decoder padding (segment 0) meets an encoder without padding: those queries see no
    # key, and both attentions average every value with no gradient to the logits.
    rng = np.random.default_rng(1)
    q_segments = np.array([[1] * 12 + [2] * 15 + [0] * 5, [1] * 32], np.int32)
    kv_segments = np.array([[1] * 10 + [2] * 14, [1] * 24], np.int32)
    check_against_xla(*random_qkv(rng, 2, 32, 24), q_segments, kv_segments, None)


@pytest.mark.parametrize("bias_rows", [2, 1])
def test_a_logit_bias_and_its_gradient_match_xla(bias_rows, small_blocks):
    # Prefix-LM over packed segments (skipped blocks, whose bias gradient is zero), and
    # cross-attention padded from 30 x 24 to whole blocks; a bias per example, or one
    # for the batch (its gradient the sum over the batch).
    rng = np.random.default_rng(9)
    bias = lambda q_length, kv_length: jnp.asarray(
        rng.normal(size=(bias_rows, 2, q_length, kv_length)), jnp.float32)
    segments, flags = packed_rows(rng, 2, 32)
    check_against_xla(*random_qkv(rng, 2, 32, 32), segments, segments, flags, bias(32, 32))
    q_segments = np.array([[1] * 12 + [2] * 13 + [0] * 5, [1] * 30], np.int32)
    kv_segments = np.array([[1] * 10 + [2] * 14, [1] * 24], np.int32)
    check_against_xla(*random_qkv(rng, 2, 30, 24), q_segments, kv_segments, None, bias(30, 24))


def test_bfloat16_inputs_stay_within_bfloat16_rounding_of_float32(small_blocks):
    # float32 logits, softmax and accumulators inside; the inputs, the probabilities (for
    # the product with v, as the XLA attention rounds them) and the output round.
    rng = np.random.default_rng(8)
    segments, flags = packed_rows(rng, 2, 32)
    q, k, v, _ = random_qkv(rng, 2, 32, 32, width=16)
    exact = dot_product_attention(q, k, v, attention_mask(segments, segments, flags))
    half = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    fused = flash.flash_attention(*half, segments, segments, flags)
    assert fused.dtype == jnp.bfloat16
    np.testing.assert_allclose(fused.astype(jnp.float32), exact, atol=2e-2)


def test_last_visible_key_is_each_query_s_last_allowed_key():
    # So a key block after every query's last allowed key is wholly masked, and skipping it
    # changes nothing.
    rng = np.random.default_rng(2)
    segments, flags = packed_rows(rng, 4, 48)
    mask = np.asarray(attention_mask(segments, segments, flags))[:, 0]
    last_allowed = np.array([[np.flatnonzero(row).max() for row in rows] for rows in mask])
    codes = flash._token_codes(jnp.asarray(segments), jnp.asarray(flags))
    np.testing.assert_array_equal(flash._last_visible_key(codes, codes, True), last_allowed)


@pytest.mark.parametrize("length, padded, block", [
    (50, 50, 50), (512, 512, 512), (2048, 2048, 512), (2047, 2048, 512), (768, 768, 256),
    (640, 640, 128), (1000, 1024, 512)])
def test_sequences_are_padded_to_whole_blocks(length, padded, block):
    assert flash.padded_length(length) == padded
    assert flash.block_size(padded) == block


def test_a_padded_sequence_matches_xla(small_blocks):
    # 30 tokens: two blocks of 16 once padded with tokens no real query may see.
    rng = np.random.default_rng(5)
    segments, flags = packed_rows(rng, 2, 30)
    check_against_xla(*random_qkv(rng, 2, 30, 30), segments, segments, flags)


def test_flops_count_every_product_of_every_kernel_block(small_blocks):
    # [B, N, Tq, Tk, Dh] products: 2 forward; backward 4 in the key / value kernel (the
    # scores again, the probabilities' gradient, v's and k's) and 3 in the query kernel.
    rng = np.random.default_rng(7)
    q, k, v, _ = random_qkv(rng, 2, 32, 32)
    segments = np.ones((2, 32), np.int32)
    attend = lambda q, k, v: jnp.sum(flash.flash_attention(q, k, v, segments, segments))
    product = 2 * 2 * 2 * 32 * 32 * 8
    assert flops.traced_flops(jax.jit(attend).trace(q, k, v)) == 2 * product
    assert flops.traced_flops(jax.jit(jax.grad(attend)).trace(q, k, v)) == (2 + 4 + 3) * product


def test_unknown_attention_impl_is_a_config_error():
    x = jnp.zeros((1, 4, 8))
    with pytest.raises(ConfigError, match="unknown attention_impl 'fast'"):
        Attention(2, attention_impl="fast").init(jax.random.key(0), x)


def outputs_with_both(module_of, inputs, train=False):
    """(XLA attention's output, the kernels' output) of `module_of(attention_impl)` with the
    same parameters."""
    xla = module_of(None)
    params = xla.init(jax.random.key(0), *inputs, train)
    return (xla.apply(params, *inputs, train),
            module_of("flash").apply(params, *inputs, train))


def test_a_prefix_lm_gives_the_same_logits(small_blocks):
    rng = np.random.default_rng(3)
    segments, flags = packed_rows(rng, 2, 32)
    tokens = jnp.asarray(rng.integers(1, 50, segments.shape))
    positions = jnp.broadcast_to(jnp.arange(32), segments.shape)
    xla, fused = outputs_with_both(
        lambda impl: LanguageModel(50, 32, hidden=16, depth=2, num_heads=2, mlp_dim=32,
                                   attention_impl=impl),
        (tokens, segments, positions, flags))
    np.testing.assert_allclose(fused, xla, rtol=1e-5, atol=1e-5)


def test_an_encoder_decoder_with_t5_relative_positions_gives_the_same_loss_and_gradients(
        small_blocks):
    # Each stack's bias table is learned through the kernels' logit gradients; the
    # cross-attention has no bias.
    rng = np.random.default_rng(10)
    segments, _ = packed_rows(rng, 2, 32)
    tokens = jnp.asarray(rng.integers(1, 50, segments.shape))
    positions = jnp.broadcast_to(jnp.arange(32), segments.shape)
    inputs = (tokens, segments, positions, tokens[:, :24], segments[:, :24], positions[:, :24])
    model = lambda impl: EncoderDecoder(50, 32, hidden=16, depth=2, decoder_depth=1,
                                        num_heads=2, mlp_dim=32, posemb="relative",
                                        relative_max_distance=16, attention_impl=impl)
    params = model(None).init(jax.random.key(0), *inputs, False)
    loss = lambda impl: lambda p: jnp.sum(model(impl).apply(p, *inputs, False) ** 2)
    (xla_loss, xla_grads), (fused_loss, fused_grads) = (
        jax.jit(jax.value_and_grad(loss(impl)))(params) for impl in (None, "flash"))
    assert fused_loss == pytest.approx(float(xla_loss), rel=1e-5)
    tables = [g for path, g in jax.tree_util.tree_leaves_with_path(fused_grads)
              if "relative_attention_bias" in jax.tree_util.keystr(path)]
    assert len(tables) == 2 and all(np.abs(t).max() > 0 for t in tables)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 fused_grads, xla_grads)


def test_a_scanned_rematerialised_stack_gives_the_same_gradients(small_blocks):
    rng = np.random.default_rng(6)
    segments, flags = packed_rows(rng, 2, 32)
    tokens = jnp.asarray(rng.integers(1, 50, segments.shape))
    positions = jnp.broadcast_to(jnp.arange(32), segments.shape)
    model = lambda impl: LanguageModel(50, 32, hidden=16, depth=2, num_heads=2, mlp_dim=32,
                                       scan_layers=True, remat="full", attention_impl=impl)
    params = model(None).init(jax.random.key(0), tokens, segments, positions, flags, False)
    grads = {impl: jax.grad(lambda p: jnp.sum(model(impl).apply(
        p, tokens, segments, positions, flags, True) ** 2))(params) for impl in (None, "flash")}
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 grads["flash"], grads[None])


@pytest.mark.parametrize("pool", ["gap", "map"])
def test_vit_gives_the_same_features(pool):
    # Every attention of the ViT takes the kernels: each block's and the MAP head's.
    images = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 8, 3)), jnp.float32)
    vit = lambda impl: ViT(patch=2, hidden=16, depth=1, heads=2, pool=pool, attention_impl=impl)
    xla, fused = outputs_with_both(vit, (images,))
    np.testing.assert_allclose(fused, xla, rtol=1e-5, atol=1e-5)
    params = vit(None).init(jax.random.key(0), images, False)
    program = jax.make_jaxpr(lambda p: vit("flash").apply(p, images, False))(params)
    assert str(program).count("pallas_call") == 1 + (pool == "map")


@pytest.mark.parametrize("spec, section", [("tiny_pali.py", "pali"), ("tiny_clip.py", "clip")])
def test_text_blocks_of_pali_and_clip_take_the_kernels(spec, section, small_blocks):
    """{section}.text_attention_impl='flash': the same loss and gradients as the XLA
    attention (PaLI's prefix-LM decoder over image tokens; CLIP's text tower over
    padded captions), on a data x fsdp x tensor mesh against one device."""
    user = config_lib.load_config_file(os.path.join(REPO, "tests", "configs", spec)).to_dict()
    loss, grads, params = loss_and_grads(config_lib.resolve({**user, "mesh": ONE}),
                                         jax.devices()[:1])
    user[section]["text_attention_impl"] = "flash"
    fused_loss, fused_grads, _ = loss_and_grads(config_lib.resolve({**user, "mesh": MESH}),
                                                jax.devices(), params)
    assert fused_loss == pytest.approx(loss, rel=1e-5)
    # CLIP's logit scale (1 / 0.07) magnifies float32 rounding in the embeddings' grads.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 fused_grads, grads)


def test_lm_step_on_a_data_fsdp_tensor_mesh_matches_xla_on_one_device(tmp_path, monkeypatch):
    # Each device runs the kernels on its own rows and heads (shard_map over the mesh),
    # and reads its own rows and heads of the relative-position bias.
    monkeypatch.setitem(CONFIGS, "lm_prefix", "tiny_lm.py")
    prefix_lm = {"lm.objective": "prefix", "lm.posemb": "relative"}
    loss_1, params_1, _, _ = step_on("lm_prefix", ONE, jax.devices()[:1], tmp_path / "one",
                                     prefix_lm)
    loss_n, params_n, _, _ = step_on("lm_prefix", MESH, jax.devices(), tmp_path / "mesh",
                                     {**prefix_lm, "lm.attention_impl": "flash"})
    np.testing.assert_allclose(loss_n, loss_1, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 params_n, params_1)


def test_a_prefix_lm_with_the_kernels_compiles_for_a_tpu_slice(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path))
    hlo = tmp_path / "step.hlo"
    report = aot.analyse(os.path.join(REPO, "tests", "configs", "tiny_lm.py"),
                         {"lm.objective": "prefix", "lm.attention_impl": "flash",
                          "lm.posemb": "relative", "mesh.fsdp": "2", "mesh.tensor": "2",
                          "data.name": "text:tiny_shakespeare?chars=65&length=17&tokenizer=char"},
                         "v5e:2x2", hlo_path=str(hlo))
    assert report["fits"]
    # Mosaic kernels with the relative-position bias, one forward and two backward per
    # layer (two layers)
    assert hlo.read_text().count('custom_call_target="tpu_custom_call"') == 3 * 2


def test_a_run_off_tpu_is_told_the_kernels_are_interpreted():
    config = {"lm": {"attention_impl": "flash"}, "model": {"attention_impl": ""}}
    note = flash.interpreter_note(config, "cpu")
    assert note.startswith("note: lm.attention_impl='flash' runs the fused attention kernels "
                           "in Pallas's interpreter on cpu")
    assert flash.interpreter_note(config, "tpu") is None
    assert flash.interpreter_note({"lm": {"attention_impl": ""}}, "cpu") is None
    both = {"pali": {"text_attention_impl": "flash"}, "model": {"attention_impl": "flash"}}
    assert "pali.text_attention_impl, model.attention_impl='flash'" in flash.interpreter_note(
        both, "gpu")
