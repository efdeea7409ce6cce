"""Public checkpoints through jaxssl.interop: outputs match the PyTorch originals.

The fixtures under tests/fixtures/interop/ were written by
tests/fixtures/make_interop_fixtures.py with the real timm, transformers and
torchvision classes (tiny, seeded, every parameter perturbed); these tests
need no torch. Tolerance: 1e-4 max abs difference in float32.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import interop
from jaxssl.errors import CheckpointError
from jaxssl.objectives.language import causal_lm_loss, next_token_targets, token_nll, weighted_mean

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "interop")
TOLERANCE = 1e-4


def fixture(name: str, *parts: str) -> str:
    return os.path.join(FIXTURES, name, *parts)


def reference(name: str):
    return np.load(fixture(name, "reference.npz"))


def max_difference(a, b, where=None) -> float:
    difference = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))
    return float((difference[where] if where is not None else difference).max())


def vit_tokens(imported, images):
    """All output tokens [B, 1 + L, D] (class token first) of an imported ViT."""
    return imported.build().apply(
        imported.variables(), jnp.asarray(images), False,
        method=lambda vit, x, train: vit.encode_tokens(vit.embed_patches(x), train))


# ---------------------------------------------------------------------- ViT
def test_timm_vit_tokens_and_class_feature_match_timm():
    imported = interop.load("timm:" + fixture("timm_vit", "model.safetensors"),
                            given={"heads": 4})
    ref = reference("timm_vit")
    assert imported.config == dict(name="vit", hidden=32, depth=2, heads=4, patch=8,
                                   mlp_ratio=2.0, posemb="learned", pool="cls",
                                   layer_norm_epsilon=1e-6)
    assert imported.skipped == ["head.bias", "head.weight"]
    assert max_difference(vit_tokens(imported, ref["images"]), ref["tokens"]) <= TOLERANCE
    features = imported.build().apply(imported.variables(), jnp.asarray(ref["images"]), False)
    assert max_difference(features, ref["tokens"][:, 0]) <= TOLERANCE


def test_timm_vit_position_embedding_interpolated_to_a_larger_image():
    imported = interop.load("timm:" + fixture("timm_vit", "model.safetensors"),
                            given={"heads": 4}, image_size=48)
    ref = reference("timm_vit")
    assert imported.resized == {"params/position_embedding/pos_embedding": ((16, 32), (36, 32))}
    assert max_difference(vit_tokens(imported, ref["images48"]), ref["tokens48"]) <= TOLERANCE


def test_hf_vit_matches_transformers():
    imported = interop.load("hf:" + fixture("hf_vit"))
    ref = reference("hf_vit")
    assert imported.config["layer_norm_epsilon"] == 1e-12
    assert imported.skipped == ["pooler.dense.bias", "pooler.dense.weight"]
    assert max_difference(vit_tokens(imported, ref["images"]), ref["tokens"]) <= TOLERANCE


def test_hf_vit_mae_encoder_and_decoder_match_transformers():
    imported = interop.load("hf:" + fixture("hf_vit_mae"))
    ref = reference("hf_vit_mae")
    assert imported.family == "hf_vit_mae" and imported.config["posemb"] == "sincos2d"
    assert imported.extra["mae"]["decoder_hidden"] == 16
    model, variables = imported.build(), imported.variables()
    images = jnp.asarray(ref["images"])
    keep = int(16 * (1 - 0.75))
    keep_idx = jnp.asarray(np.argsort(ref["noise"], axis=1)[:, :keep])
    encoded = model.apply(variables, images, keep_idx, False, method=model.encode)
    assert max_difference(encoded, ref["encoded"]) <= TOLERANCE
    pixels = model.apply(variables, images, keep_idx, jnp.asarray(ref["ids_restore"]), False)
    assert max_difference(pixels, ref["pixels"]) <= TOLERANCE
    everything = jnp.broadcast_to(jnp.arange(16), (2, 16))
    tokens = model.apply(variables, images, everything, False, method=model.encode)
    assert max_difference(tokens, ref["tokens"]) <= TOLERANCE


def test_hf_vit_mae_as_a_fine_tuning_encoder_skips_the_decoder():
    imported = interop.load("hf:" + fixture("hf_vit_mae"), given={"name": "vit", "pool": "cls"})
    assert imported.family == "hf_vit_mae"
    assert "decoder.decoder_pred.weight" in imported.skipped
    assert all(not path.startswith("params/decoder") for path in imported.arrays)


# --------------------------------------------------------------------- text
def test_gpt2_logits_and_loss_match_transformers():
    imported = interop.load("hf:" + fixture("gpt2"))
    ref = reference("gpt2")
    assert imported.config["approximate_gelu"] and imported.config["layer_norm_epsilon"] == 1e-5
    tokens = jnp.asarray(ref["tokens"])
    batch, length = tokens.shape
    logits = imported.build().apply(
        imported.variables(), tokens, jnp.ones_like(tokens),
        jnp.broadcast_to(jnp.arange(length), (batch, length)), jnp.ones((batch, length), bool),
        train=False)
    assert max_difference(logits, ref["logits"]) <= TOLERANCE
    targets, mask = next_token_targets(tokens, jnp.ones_like(tokens))
    loss, _ = causal_lm_loss(logits[:, :-1], targets, mask)
    assert abs(float(loss) - float(ref["loss"])) <= TOLERANCE


def test_bert_masked_lm_logits_and_loss_match_transformers():
    imported = interop.load("hf:" + fixture("bert"))
    ref = reference("bert")
    assert imported.config["post_norm"] and imported.config["logits_transform"]
    tokens, padding = jnp.asarray(ref["tokens"]), ref["attention_mask"]
    batch, length = tokens.shape
    logits = imported.build().apply(
        imported.variables(), tokens, jnp.asarray(padding),
        jnp.broadcast_to(jnp.arange(length), (batch, length)), jnp.zeros((batch, length), bool),
        train=False)
    # Padding (segment 0) only sees padding in jaxssl; compare the real tokens.
    assert max_difference(logits, ref["logits"], padding.astype(bool)) <= TOLERANCE
    labels = ref["labels"]
    loss, _ = weighted_mean(token_nll(logits, jnp.asarray(np.maximum(labels, 0))),
                            jnp.asarray(labels >= 0))
    assert abs(float(loss) - float(ref["loss"])) <= TOLERANCE


# ------------------------------------------------------------------- ResNet
def test_torchvision_resnet50_features_match_torchvision():
    imported = interop.load("torchvision:" + fixture("torchvision_resnet50", "model.safetensors"))
    ref = reference("torchvision_resnet50")
    assert imported.config == dict(name="resnet50", width=4, cifar_stem=False)
    assert {path.split("/")[0] for path in imported.arrays} == {"params", "batch_stats"}
    features = imported.build().apply(imported.variables(), jnp.asarray(ref["images"]),
                                      train=False)
    assert max_difference(features, ref["features"]) <= TOLERANCE


# ------------------------------------------------------------ wrong inputs
@pytest.mark.parametrize("spec, given, words", [
    ("timm:torchvision_resnet50/model.safetensors", None,
     ["not a timm ViT checkpoint", "patch_embed.proj.weight"]),
    ("torchvision:timm_vit/model.safetensors", None, ["not a torchvision ResNet checkpoint"]),
    ("hf:hf_vit", {"name": "vit", "hidden": 64}, ["model.hidden=32", "config says 64"]),
    ("hf:hf_vit", {"name": "resnet50"}, ["model.name is 'resnet50'"]),
    ("timm:timm_vit/model.safetensors", {"heads": 4, "pool": "gap"}, ["model.pool='cls'"]),
    ("hf:gpt2", {"num_heads": 8}, ["model.num_heads=4", "config says 8"]),
    ("torchvision:torchvision_resnet50/model.safetensors", {"name": "resnet18"},
     ["model.name='resnet50'"]),
    ("timm:timm_vit/missing.safetensors", None, ["no such checkpoint file"]),
    ("hf:timm_vit", None, ["no config.json"]),
    ("keras:model.h5", None, ["expected one of timm:PATH, hf:PATH, torchvision:PATH"]),
])
def test_wrong_family_or_size_is_one_clear_line(spec, given, words):
    kind, _, path = spec.partition(":")
    with pytest.raises(CheckpointError) as error:
        interop.load(f"{kind}:{os.path.join(FIXTURES, path)}", given=given)
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


def test_a_corrupt_safetensors_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        interop.load(f"timm:{path}")
