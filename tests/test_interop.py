"""Public checkpoints through jaxssl.interop: outputs match the PyTorch originals.

The fixtures under tests/fixtures/interop/ were written by
tests/fixtures/make_interop_fixtures.py with the real timm, transformers and
torchvision classes (tiny, seeded, every parameter perturbed); these tests
need no torch. Tolerance: 1e-4 max abs difference in float32.

With `--parity-log=PATH` the largest difference of every labelled comparison is
written to PATH (README.md's parity table):

    python -m pytest tests/test_interop.py -n 0 -p no:cacheprovider \
        --parity-log=experiments/interop/parity.md
"""

import datetime
import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.machine import cpu_model, short_commit
from jaxssl import interop
from jaxssl.errors import CheckpointError
from jaxssl.objectives.language import causal_lm_loss, next_token_targets, token_nll, weighted_mean

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "interop")
TOLERANCE = 1e-4


def fixture(name: str, *parts: str) -> str:
    return os.path.join(FIXTURES, name, *parts)


def reference(name: str):
    return np.load(fixture(name, "reference.npz"))


PARITY = []   # (model, what was compared, max abs difference) in the order measured


def max_difference(a, b, where=None, model=None, compared=None) -> float:
    """The largest |a - b| (over `where` if given), recorded for the parity log under
    `model` and `compared` when they are given."""
    difference = np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))
    largest = float((difference[where] if where is not None else difference).max())
    if model is not None:
        PARITY.append((model, compared, largest))
    return largest


@pytest.fixture(scope="module", autouse=True)
def parity_log(request):
    """After this file's tests: with --parity-log=PATH, PARITY as a Markdown table."""
    yield
    path = request.config.getoption("parity_log")
    if not path:
        return
    if hasattr(request.config, "workerinput"):
        pytest.fail("--parity-log needs the interop tests in one process (-n 0)")
    lines = [f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"commit {short_commit()}, {cpu_model()} ({os.cpu_count()} cores), jax on the "
             f"CPU with the test suite's XLA settings:",
             "`python -m pytest tests/test_interop.py -n 0 -p no:cacheprovider "
             "--parity-log=PATH`.", "",
             "| model (real class) | compared | max abs diff |", "|---|---|---|"]
    lines += [f"| {model} | {compared} | {largest:.1e} |" for model, compared, largest in PARITY]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


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
                                   layer_norm_epsilon=1e-6, activation="gelu", pre_norm=False)
    assert imported.skipped == ["head.bias", "head.weight"]
    assert max_difference(vit_tokens(imported, ref["images"]), ref["tokens"],
                          model="timm `VisionTransformer`",
                          compared="all tokens after the final norm") <= TOLERANCE
    features = imported.build().apply(imported.variables(), jnp.asarray(ref["images"]), False)
    assert max_difference(features, ref["tokens"][:, 0]) <= TOLERANCE


def test_timm_vit_into_a_scan_blocks_vit():
    imported = interop.load("timm:" + fixture("timm_vit", "model.safetensors"),
                            given={"heads": 4, "scan_blocks": True})
    assert imported.arrays["params/encoder/blocks/mlp/fc1/kernel"].shape == (2, 32, 64)
    ref = reference("timm_vit")
    assert max_difference(vit_tokens(imported, ref["images"]), ref["tokens"]) <= TOLERANCE


def test_timm_vit_position_embedding_interpolated_to_a_larger_image():
    imported = interop.load("timm:" + fixture("timm_vit", "model.safetensors"),
                            given={"heads": 4}, image_size=48)
    ref = reference("timm_vit")
    assert imported.resized == {"params/position_embedding/pos_embedding": ((16, 32), (36, 32))}
    assert max_difference(vit_tokens(imported, ref["images48"]), ref["tokens48"],
                          model="same, position embedding resized 4x4 -> 6x6 (48 px) vs timm's "
                                "bilinear resample", compared="all tokens") <= TOLERANCE


def test_hf_vit_matches_transformers():
    imported = interop.load("hf:" + fixture("hf_vit"))
    ref = reference("hf_vit")
    assert imported.config["layer_norm_epsilon"] == 1e-12
    assert imported.skipped == ["pooler.dense.bias", "pooler.dense.weight"]
    assert max_difference(vit_tokens(imported, ref["images"]), ref["tokens"],
                          model="transformers `ViTModel` (eps 1e-12)",
                          compared="last hidden state") <= TOLERANCE


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
    assert max_difference(encoded, ref["encoded"], model="transformers `ViTMAEForPreTraining`",
                          compared="encoder on visible patches") <= TOLERANCE
    pixels = model.apply(variables, images, keep_idx, jnp.asarray(ref["ids_restore"]), False)
    assert max_difference(pixels, ref["pixels"], model="transformers `ViTMAEForPreTraining`",
                          compared="decoder pixels") <= TOLERANCE
    everything = jnp.broadcast_to(jnp.arange(16), (2, 16))
    tokens = model.apply(variables, images, everything, False, method=model.encode)
    assert max_difference(tokens, ref["tokens"], model="transformers `ViTMAEForPreTraining`",
                          compared="encoder on all patches") <= TOLERANCE


def test_hf_vit_mae_as_a_fine_tuning_encoder_skips_the_decoder():
    imported = interop.load("hf:" + fixture("hf_vit_mae"), given={"name": "vit", "pool": "cls"})
    assert imported.family == "hf_vit_mae"
    assert "decoder.decoder_pred.weight" in imported.skipped
    assert all(not path.startswith("params/decoder") for path in imported.arrays)


# --------------------------------------------------------------------- text
def test_gpt2_logits_and_loss_match_transformers():
    imported = interop.load("hf:" + fixture("gpt2"))
    ref = reference("gpt2")
    assert imported.config["activation"] == "gelu_tanh" and imported.config["layer_norm_epsilon"] == 1e-5
    tokens = jnp.asarray(ref["tokens"])
    batch, length = tokens.shape
    logits = imported.build().apply(
        imported.variables(), tokens, jnp.ones_like(tokens),
        jnp.broadcast_to(jnp.arange(length), (batch, length)), jnp.ones((batch, length), bool),
        train=False)
    gpt2 = "transformers `GPT2LMHeadModel`"
    assert max_difference(logits, ref["logits"], model=gpt2, compared="logits") <= TOLERANCE
    targets, mask = next_token_targets(tokens, jnp.ones_like(tokens))
    loss, _ = causal_lm_loss(logits[:, :-1], targets, mask)
    assert max_difference(loss, ref["loss"], model=gpt2, compared="LM loss") <= TOLERANCE


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
    bert = "transformers `BertForMaskedLM`"
    assert max_difference(logits, ref["logits"], padding.astype(bool), model=bert,
                          compared="logits (non-padding)") <= TOLERANCE
    labels = ref["labels"]
    loss, _ = weighted_mean(token_nll(logits, jnp.asarray(np.maximum(labels, 0))),
                            jnp.asarray(labels >= 0))
    assert max_difference(loss, ref["loss"], model=bert, compared="MLM loss") <= TOLERANCE


def t5_logits(imported, ref):
    tokens, decoder = jnp.asarray(ref["tokens"]), jnp.asarray(ref["decoder_tokens"])
    positions = lambda x: jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape)
    return imported.build().apply(
        imported.variables(), tokens, jnp.asarray(ref["attention_mask"]), positions(tokens),
        decoder, jnp.ones_like(decoder), positions(decoder), train=False)


@pytest.mark.parametrize("name, activation, gated", [("t5", "relu", False),
                                                     ("t5_v1_1", "gelu_tanh", True)])
def test_t5_logits_and_loss_match_transformers(name, activation, gated):
    imported = interop.load("hf:" + fixture(name))
    ref = reference(name)
    assert (imported.config["activation"], imported.config["gated_mlp"]) == (activation, gated)
    assert imported.config["posemb"] == "relative" and imported.config["rms_norm"]
    logits = t5_logits(imported, ref)
    t5 = ("transformers `T5ForConditionalGeneration` (T5 1.0: ReLU, tied, scaled)"
          if name == "t5" else "same, T5.1.1 (gated tanh GELU, untied)")
    assert max_difference(logits, ref["logits"], model=t5, compared="logits") <= TOLERANCE
    loss = jnp.mean(token_nll(logits, jnp.asarray(ref["labels"])))
    assert max_difference(loss, ref["loss"], model=t5, compared="loss") <= TOLERANCE


def test_t5_with_its_own_lm_head_imports_untied(tmp_path):
    """T5.1.1 hub checkpoints carry lm_head.weight apart from the shared embedding."""
    import shutil
    import safetensors.numpy
    directory = tmp_path / "t5"
    shutil.copytree(fixture("t5_v1_1"), directory)
    state = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    rng = np.random.default_rng(0)
    state["lm_head.weight"] = state["shared.weight"] + rng.normal(0, 0.01, (64, 32)).astype(
        np.float32)
    safetensors.numpy.save_file(state, str(directory / "model.safetensors"))
    untied = interop.load(f"hf:{directory}")
    assert not untied.config["tied_embeddings"]
    np.testing.assert_array_equal(untied.arrays["params/embedder/output_kernel"],
                                  state["lm_head.weight"].T)
    state["lm_head.weight"] = state["shared.weight"]   # the tied layout, saved twice
    safetensors.numpy.save_file(state, str(directory / "model.safetensors"))
    tied = interop.load(f"hf:{directory}")
    ref = reference("t5_v1_1")
    assert tied.config["tied_embeddings"]
    assert max_difference(t5_logits(tied, ref), ref["logits"]) <= TOLERANCE


# --------------------------------------------------------------------- CLIP
@pytest.mark.parametrize("name, config, logits_of", [
    ("hf_clip", {"activation": "quick_gelu", "pre_norm": True, "pool": "cls"},
     lambda cosine, scalars: jnp.exp(scalars["logit_scale"]) * cosine),
    ("hf_siglip", {"activation": "gelu_tanh", "pre_norm": False, "pool": "map"},
     lambda cosine, scalars: jnp.exp(scalars["log_t"]) * cosine + scalars["bias"]),
])
def test_two_towers_and_logits_match_transformers(name, config, logits_of):
    imported = interop.load("hf:" + fixture(name))
    ref = reference(name)
    assert {key: imported.config[key] for key in config} == config
    model, variables = imported.build(), imported.variables()
    image, text, scalars = model.apply(variables, jnp.asarray(ref["images"]),
                                       jnp.asarray(ref["tokens"]), train=False)
    towers = {"hf_clip": "transformers `CLIPModel` (quick GELU, pre-LN, EOS pooling)",
              "hf_siglip": "transformers `SiglipModel` (MAP head, tanh GELU, logit bias)"}[name]
    assert max_difference(image, ref["image_features"], model=towers,
                          compared="image embeddings") <= TOLERANCE
    assert max_difference(text, ref["text_features"], model=towers,
                          compared="text embeddings") <= TOLERANCE
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    logits = logits_of(unit(image) @ unit(text).T, scalars)
    assert max_difference(logits, ref["logits_per_image"], model=towers,
                          compared="logits") <= TOLERANCE


def test_clip_as_a_fine_tuning_encoder_skips_the_text_tower():
    imported = interop.load("hf:" + fixture("hf_clip"), given={"name": "vit", "pre_norm": True})
    assert imported.extra["image_size"] == 32
    assert "text_projection.weight" in imported.skipped and "logit_scale" in imported.skipped
    features = imported.build().apply(imported.variables(),
                                      jnp.asarray(reference("hf_clip")["images"]), False)
    assert max_difference(features, reference("hf_clip")["image_pooled"]) <= TOLERANCE


def test_siglip_image_tower_alone_has_the_map_head():
    imported = interop.load("hf:" + fixture("hf_siglip"), given={"name": "vit", "pool": "map"})
    assert any(path.startswith("params/map_head/") for path in imported.arrays)
    assert "text_model.head.weight" in imported.skipped
    features = imported.build().apply(imported.variables(),
                                      jnp.asarray(reference("hf_siglip")["images"]), False)
    assert max_difference(features, reference("hf_siglip")["image_features"]) <= TOLERANCE


# ------------------------------------------------------------------- ResNet
def test_torchvision_resnet50_features_match_torchvision():
    imported = interop.load("torchvision:" + fixture("torchvision_resnet50", "model.safetensors"))
    ref = reference("torchvision_resnet50")
    assert imported.config == dict(name="resnet50", width=4, cifar_stem=False)
    assert {path.split("/")[0] for path in imported.arrays} == {"params", "batch_stats"}
    features = imported.build().apply(imported.variables(), jnp.asarray(ref["images"]),
                                      train=False)
    assert max_difference(features, ref["features"],
                          model="torchvision ResNet-50 layout (width 4)",
                          compared="pooled features (eval BN)") <= TOLERANCE


# ------------------------------------------------------------ wrong inputs
@pytest.mark.parametrize("spec, given, words", [
    ("timm:torchvision_resnet50/model.safetensors", None,
     ["not a timm ViT checkpoint", "patch_embed.proj.weight"]),
    ("torchvision:timm_vit/model.safetensors", None, ["not a torchvision ResNet checkpoint"]),
    ("hf:hf_vit", {"name": "vit", "hidden": 64}, ["model.hidden=32", "config says 64"]),
    ("hf:hf_vit", {"name": "resnet50"}, ["model.name is 'resnet50'"]),
    ("timm:timm_vit/model.safetensors", {"heads": 4, "pool": "gap"}, ["model.pool='cls'"]),
    ("hf:gpt2", {"num_heads": 8}, ["model.num_heads=4", "config says 8"]),
    ("hf:t5", {"decoder_depth": 6}, ["model.decoder_depth=2", "config says 6"]),
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


# ------------------------------------------------------- fine-tuning hand-off
FINETUNE_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "tiny_finetune.py")
TIMM_VIT_MODEL = {"model.name": "vit", "model.hidden": "32", "model.depth": "2",
                  "model.heads": "4", "model.patch": "8", "model.mlp_ratio": "2.0",
                  "model.posemb": "learned", "model.pool": "cls"}
RESNET_MODEL = {"model.name": "resnet50", "model.width": "4", "model.cifar_stem": "False"}
CLIP_MODEL = {**TIMM_VIT_MODEL, "model.hidden": "48", "model.heads": "3",
              "model.layer_norm_epsilon": "1e-5", "model.activation": "quick_gelu",
              "model.pre_norm": "True"}


def colour_images(directory, size: int) -> None:
    """train.npz and test.npz of 16 random colour images [size, size, 3] and 10 labels."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        np.savez(directory / f"{split}.npz",
                 image=rng.integers(0, 256, (16, size, size, 3), dtype=np.uint8),
                 label=np.arange(16) % 10)


@pytest.mark.parametrize("spec, model, size, reference_key, skipped", [
    ("timm:timm_vit/model.safetensors", TIMM_VIT_MODEL, 48, ("timm_vit", "images48", "tokens48"),
     "skipped 2 arrays: head.bias (1), head.weight (1)"),
    ("hf:hf_clip", CLIP_MODEL, 32, ("hf_clip", "images", "image_pooled"),
     "text_model.embeddings.token_embedding.weight (1)"),
    # slow: a ResNet-50 compile; test_torchvision_resnet50_features_match_torchvision keeps
    # the importer's features in the fast suite
    pytest.param("torchvision:torchvision_resnet50/model.safetensors", RESNET_MODEL, 64,
                 ("torchvision_resnet50", "images", "features"),
                 "skipped 55 arrays: bn*.num_batches_tracked (1), fc.bias (1), fc.weight (1)",
                 marks=pytest.mark.slow),
])
def test_fine_tuning_starts_from_a_public_checkpoint(spec, model, size, reference_key, skipped,
                                                     tmp_path):
    import jax
    from jaxssl import config as config_lib
    from jaxssl.methods.finetune import Classifier
    from jaxssl.train import Trainer

    kind, _, path = spec.partition(":")
    colour_images(tmp_path, size)
    config = config_lib.load(FINETUNE_CONFIG, {
        "mesh.data": "1", "mesh.fsdp": "1", "data.name": "npz", "data.data_dir": str(tmp_path),
        "data.batch_size": "8", "finetune.init_from.checkpoint": f"{kind}:{fixture(path)}",
        **model})
    trainer = Trainer(config, str(tmp_path / "run"), devices=jax.devices()[:1])
    state = trainer.method.load_pretrained(trainer.initial_state(), trainer.state_shardings,
                                           workdir=str(tmp_path / "run"))
    report = (tmp_path / "run" / "handoff.txt").read_text()
    assert report.startswith(f"hand-off from {kind}:{fixture(path)}") and skipped in report
    if kind == "timm":
        assert "resized params/backbone/position_embedding/pos_embedding (16, 32) -> (36, 32)" \
            in report
    name, images, expected = reference_key
    ref = reference(name)
    features = trainer.method.model.apply({"params": state.params, **state.method_state},
                                          jnp.asarray(ref[images]), False,
                                          method=Classifier.encode)
    want = ref[expected][:, 0] if kind == "timm" else ref[expected]
    assert max_difference(features, want) <= TOLERANCE


@pytest.mark.parametrize("checkpoint, message", [
    ("timm:timm_vit/model.safetensors", "the checkpoint has model.patch=8 but the config says 2"),
    ("torchvision:timm_vit/model.safetensors", "not a torchvision ResNet checkpoint"),
    ("hf:gpt2", "a gpt2 text model, not an image encoder for model.name='vit'"),
])
def test_a_public_checkpoint_that_does_not_fit_the_config_stops_the_command(
        checkpoint, message, tmp_path, capsys):
    from jaxssl import main as cli
    kind, _, path = checkpoint.partition(":")
    workdir = tmp_path / "finetune"
    argv = [f"--config={FINETUNE_CONFIG}", f"--workdir={workdir}",
            f"--config.finetune.init_from.checkpoint={kind}:{fixture(path)}",
            "--config.model.heads=4"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not workdir.exists()


def test_pipeline_fine_tunes_from_public_weights_without_a_pretrain_stage(tmp_path):
    from jaxssl import pipeline_run
    args, overrides = pipeline_run.parse_args([
        "--finetune_config=f.py", f"--workdir={tmp_path}", "--stages=finetune,scratch,evaluate",
        "--init_from=hf:/weights/vit-mae-base"])
    assert pipeline_run.stage_argv(args, overrides, "finetune")[-1] == \
        "--config.finetune.init_from.checkpoint=hf:/weights/vit-mae-base"
    assert pipeline_run.stage_argv(args, overrides, "scratch")[-1] == \
        "--config.finetune.init_from.checkpoint="
    with pytest.raises(SystemExit):
        pipeline_run.parse_args(["--finetune_config=f.py", f"--workdir={tmp_path}"])


# ------------------------------------------------------------------- export
@pytest.mark.parametrize("posemb, activation", [("learned", "gelu"), ("sincos2d", "quick_gelu"),
                                                ("learned", "gelu_tanh"), ("learned", "relu")])
def test_exported_vit_imports_back_with_the_same_features(posemb, activation, tmp_path):
    import jax
    from jaxssl.interop.export import export_hf_vit
    from jaxssl.models import build_backbone

    config = dict(name="vit", hidden=32, depth=2, heads=4, patch=8, mlp_ratio=2.0,
                  posemb=posemb, pool="cls", layer_norm_epsilon=1e-6, activation=activation)
    model = build_backbone(config)
    images = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(2), x.shape),
                          model.init(jax.random.PRNGKey(0), images, train=False)["params"])
    params = jax.tree.map(np.asarray, nn_unbox(params))
    directory = export_hf_vit(params, config, str(tmp_path / "exported"), image_size=32)
    assert sorted(os.listdir(directory)) == ["config.json", "model.safetensors"]
    imported = interop.load(f"hf:{directory}")
    assert imported.family == "hf_vit" and imported.config["hidden"] == 32
    assert imported.config["activation"] == activation
    want = model.apply({"params": params}, images, train=False)
    got = imported.build().apply(imported.variables(), images, train=False)
    assert max_difference(got, want) <= 1e-5


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_exported_language_model_imports_back_as_gpt2(activation, tmp_path):
    import jax
    from jaxssl.interop.export import export_hf_gpt2
    from jaxssl.models.transformer import LanguageModel

    config = dict(vocab_size=50, max_length=16, hidden=32, depth=2, num_heads=4, mlp_dim=48,
                  activation=activation)
    model = LanguageModel(**config)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 0, 50)
    inputs = (tokens, jnp.ones_like(tokens), jnp.broadcast_to(jnp.arange(16), (2, 16)),
              jnp.ones((2, 16), bool))
    params = jax.tree.map(np.asarray, nn_unbox(
        model.init(jax.random.PRNGKey(0), *inputs, train=False)["params"]))
    directory = export_hf_gpt2(params, config, str(tmp_path / "gpt2"))
    imported = interop.load(f"hf:{directory}")
    assert imported.family == "gpt2" and imported.config["activation"] == activation
    assert imported.config["layer_norm_epsilon"] == 1e-6
    want = model.apply({"params": params}, *inputs, train=False)
    got = imported.build().apply(imported.variables(), *inputs, train=False)
    assert max_difference(got, want) <= 1e-5


def test_export_refuses_a_language_model_gpt2_cannot_express(tmp_path):
    from jaxssl.interop.export import export_hf_gpt2
    with pytest.raises(CheckpointError, match="GPT-2 needs posemb='learned'"):
        export_hf_gpt2({}, dict(posemb="rotary"), str(tmp_path))


def test_export_refuses_a_vit_hugging_face_cannot_express(tmp_path):
    from jaxssl.interop.export import export_hf_vit
    with pytest.raises(CheckpointError, match="this ViT has pre_norm=True"):
        export_hf_vit({}, dict(pool="cls", pre_norm=True), str(tmp_path), image_size=32)


def nn_unbox(tree):
    from flax import linen as nn
    return nn.meta.unbox(tree)


def test_export_needs_a_class_token(tmp_path):
    from jaxssl.interop.export import export_hf_vit
    with pytest.raises(CheckpointError, match="pool='gap'"):
        export_hf_vit({}, dict(pool="gap"), str(tmp_path), image_size=32)


# --------------------------------------------------------------- tokenizers
@pytest.mark.parametrize("name, kind", [("gpt2", "BytePairTokenizer"),
                                        ("bert", "WordPieceTokenizer"),
                                        ("t5", "SentencePieceTokenizer")])
def test_shipped_tokenizer_gives_the_reference_ids(name, kind):
    """transformers' T5Tokenizer (a converted copy) splits on tabs where SentencePiece maps
    them to unk: strings with a tab are compared for the other tokenizers only."""
    import json
    from jaxssl.interop.tokenizers import load_tokenizer
    tokenizer = load_tokenizer(fixture(name))
    assert type(tokenizer).__name__ == kind
    ref = reference(name)
    for text, ids in zip(ref["strings"], json.loads(str(ref["token_ids"]))):
        if name != "t5" or "\t" not in str(text):
            assert tokenizer.encode(str(text)) == ids, text


def test_gpt2_tokenizer_from_vocab_and_merges_round_trips_text(tmp_path):
    import shutil
    from jaxssl.interop.tokenizers import BytePairTokenizer
    for file in ("vocab.json", "merges.txt"):
        shutil.copy(fixture("gpt2", file), tmp_path)
    from_json = BytePairTokenizer.from_directory(fixture("gpt2"))
    from_files = BytePairTokenizer.from_directory(str(tmp_path))
    text = "Zebra quokka!? ünïcödé 中文 tabs\tand  double  spaces<|endoftext|>"
    assert from_files.encode(text) == from_json.encode(text)
    assert from_files.decode(from_files.encode(text)) == text


# ---------------------------------------------------- pixel normalisation
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def test_pixel_normalization_folds_into_the_patch_projection(tmp_path):
    """The model takes jaxssl's [-1, 1] pixels and computes what transformers computes on
    (pixels - mean) / std, from preprocessor_config.json or given explicitly."""
    import json
    import shutil
    directory = tmp_path / "hf_vit"
    shutil.copytree(fixture("hf_vit"), directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(
        {"do_normalize": True, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}))
    ref = reference("hf_vit")
    pixels01 = ref["images"] * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    jaxssl_range = (2 * pixels01 - 1).astype(np.float32)
    for imported in (interop.load(f"hf:{directory}"),
                     interop.load("hf:" + fixture("hf_vit"),
                                  pixel_normalization=(IMAGENET_MEAN, IMAGENET_STD))):
        assert imported.extra["pixel_normalization"] == (IMAGENET_MEAN, IMAGENET_STD)
        assert max_difference(vit_tokens(imported, jaxssl_range), ref["tokens"]) <= TOLERANCE


def test_the_public_mae_config_matches_vit_mae_base():
    """configs/finetune_public_mae_vit_base.py (the README command) passes the importer's
    check against facebook/vit-mae-base's config.json."""
    from jaxssl import config as config_lib
    from jaxssl.interop.mapping import check_config
    from jaxssl.interop.vit import _given_vit_config, _hf_vit_config
    mae_base = {"model_type": "vit_mae", "hidden_size": 768, "num_hidden_layers": 12,
                "num_attention_heads": 12, "intermediate_size": 3072, "patch_size": 16,
                "image_size": 224, "hidden_act": "gelu", "qkv_bias": True,
                "layer_norm_eps": 1e-12}
    found = {**_hf_vit_config(mae_base, "hf:vit-mae-base"), "posemb": "sincos2d"}
    config = config_lib.load(os.path.join(os.path.dirname(__file__), "..", "configs",
                                          "finetune_public_mae_vit_base.py"))
    check_config(found, _given_vit_config(config.model), "hf:vit-mae-base")
    assert config.data.image_size // config.model.patch == 224 // 16


def test_bfloat16_and_float16_safetensors_read_as_float32(tmp_path):
    """Hub checkpoints are often bf16, which safetensors.numpy cannot return."""
    import json
    import ml_dtypes
    from jaxssl.interop.mapping import read_state_dict
    values = {"a": np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4),
              "b": np.array([0.1, 7.5], np.float32)}
    stored = {"a": values["a"].astype(ml_dtypes.bfloat16), "b": values["b"].astype(np.float16)}
    header, data = {}, b""
    for name, kind in (("a", "BF16"), ("b", "F16")):
        raw = stored[name].tobytes()
        header[name] = {"dtype": kind, "shape": list(stored[name].shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    encoded = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    state = read_state_dict(str(path))
    for name in values:
        assert state[name].dtype == np.float32
        np.testing.assert_array_equal(state[name], stored[name].astype(np.float32))


def test_a_pretrained_jaxssl_checkpoint_exports_and_fine_tunes_from_either(tmp_path, capsys):
    """Pretrain 1 step (class token, learned positions), export its encoder from the command
    line, then fine-tune from the Orbax checkpoint and from the export: the same arrays."""
    import jax
    from jaxssl import config as config_lib, main as cli
    from jaxssl.interop import export
    from jaxssl.train import Trainer

    simclr = os.path.join(os.path.dirname(__file__), "configs", "tiny_simclr.py")
    model = {"model.pool": "cls", "model.posemb": "learned"}
    pretrain = tmp_path / "pretrain"
    assert cli.main([f"--config={simclr}", f"--workdir={pretrain}", "--config.total_steps=1",
                     "--config.mesh.data=8", "--config.mesh.fsdp=1",
                     "--config.checkpoint.async_save=false",
                     *(f"--config.{k}={v}" for k, v in model.items())]) == 0
    out = tmp_path / "exported"
    assert export.main([f"--checkpoint={pretrain}", f"--out={out}"]) == 2   # no image size
    assert "pass --image_size" in capsys.readouterr().err
    assert export.main([f"--checkpoint={pretrain}", f"--out={out}", "--image_size=8"]) == 0
    loaded = {}
    for name, checkpoint in (("orbax", str(pretrain)), ("hf", f"hf:{out}")):
        config = config_lib.load(FINETUNE_CONFIG, {
            "mesh.data": "1", "mesh.fsdp": "1", "finetune.init_from.checkpoint": checkpoint,
            **model})
        trainer = Trainer(config, str(tmp_path / name), devices=jax.devices()[:1])
        state = trainer.method.load_pretrained(trainer.initial_state(), trainer.state_shardings,
                                               workdir=None)
        loaded[name] = jax.device_get(state.params["backbone"])
    jax.tree.map(np.testing.assert_array_equal, loaded["hf"], loaded["orbax"])
