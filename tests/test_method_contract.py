"""The method contract (jaxssl/methods/base.py): every recipe subclasses `Method`, hooks
have defaults that the Trainer calls unconditionally, misspelt hooks are refused, and
each method's `check_config` runs when a config resolves."""

import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import config as config_lib, methods, optim
from jaxssl.data import pipeline
from jaxssl.data.sources import get_source
from jaxssl.errors import ConfigError
from jaxssl.methods import base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_registered_method_subclasses_the_contract_and_is_named_after_its_recipe():
    classes = {name: methods.get(name) for name in methods.names()}
    assert {name: cls.__name__ for name, cls in classes.items()} == {
        "clip": "CLIP", "finetune": "FineTune", "gato": "Gato", "lm": "LanguageModelling",
        "mae": "MAE", "moco": "MocoV3", "pali": "PaLI", "palm_e": "PaLME", "siglip": "SigLIP",
        "simclr": "SimCLR", "simmim": "SimMIM"}
    for cls in classes.values():
        assert issubclass(cls, base.Method)
        assert not inspect.isabstract(cls), cls


@pytest.mark.parametrize("name", ["write_picture", "evalute", "optimiser", "load_pretrain",
                                  "_select_train_example", "asset"])
def test_a_misspelt_hook_is_refused_when_the_class_is_made(name):
    with pytest.raises(TypeError, match="looks like a misspelt method hook"):
        type("Recipe", (base.Method,), {name: lambda self, *args: None})


def test_a_hook_with_other_parameters_is_refused():
    with pytest.raises(TypeError, match=r"does not match the method hook evaluate"):
        class Recipe(base.Method):  # noqa: F841
            def evaluate(self, variables, eval_source, mesh):
                return {}


def test_a_method_missing_a_required_part_cannot_be_built(tiny_simclr_config):
    class NoLoss(base.Method):
        @staticmethod
        def default_config():
            return {}

        def init(self, rng, batch):
            return {}

    with pytest.raises(TypeError, match="abstract method.*loss_fn"):
        NoLoss(tiny_simclr_config)


def test_default_hooks_do_the_ordinary_thing(tiny_simclr_config):
    method = methods.get("simclr")(tiny_simclr_config)
    source = object()
    assert method.select_train_examples(source) is source
    spec = {"image": object()}
    assert method.train_record_spec(spec) is spec
    assert method.assets() == {}
    state = object()
    assert method.load_pretrained(state, None, "/nonexistent") is state
    assert method.write_pictures({}, {}, "/nonexistent/picture.png") is None
    tx, schedule = method.optimizer()
    peak = tiny_simclr_config.optim.base_lr * tiny_simclr_config.data.batch_size / 256
    total = tiny_simclr_config.total_steps
    assert float(schedule(tiny_simclr_config.optim.warmup_steps)) == pytest.approx(peak)
    assert float(schedule(total)) == pytest.approx(peak * tiny_simclr_config.optim.end_lr_ratio)
    assert hasattr(tx, "update")


@pytest.mark.parametrize("spec", ["tiny_simclr.py", "tiny_moco.py", "tiny_mae.py",
                                  "tiny_finetune.py"])
def test_a_frozen_patch_projection_gets_no_weight_decay_in_any_method(spec):
    """With zero gradients only weight decay moves parameters: every kernel but the frozen
    patch projection's (model.frozen_patch_embed; MoCo v3's reference: requires_grad=False,
    so AdamW skips it)."""
    config = config_lib.load(os.path.join(REPO, "tests", "configs", spec),
                             {"model.frozen_patch_embed": "True", "optim.weight_decay": "0.5"})
    method = methods.get(config.method)(config)
    batch = pipeline.example_batch(get_source(config.data.name, "train"), 4)
    params, _ = base.split_variables(jax.jit(method.init)(jax.random.key(0), batch))
    tx, _ = method.optimizer()
    updates, _ = jax.jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p))(
        params)
    frozen, decayed = [], []
    for (path, update), p in zip(jax.tree_util.tree_leaves_with_path(updates),
                                 jax.tree.leaves(params)):
        if "patch_embedding" in jax.tree_util.keystr(path):
            frozen.append(np.all(np.asarray(update) == 0))
        elif "['kernel']" in jax.tree_util.keystr(path) and np.any(np.asarray(p) != 0):
            decayed.append(np.any(np.asarray(update) != 0))
    assert len(frozen) >= 2 and all(frozen)   # the projection's kernel and bias
    assert decayed and all(decayed)


def test_weight_decay_reaches_kernels_and_embedding_tables_only():
    shape = lambda *dims: np.zeros(dims, np.float32)
    params = {
        "backbone": {"cls_token": shape(1, 1, 8), "position_embedding": {"pos_embedding": shape(16, 8)},
                     "encoder": {"block0": {"qkv": {"kernel": shape(8, 3, 2, 4),
                                                    "bias": shape(3, 2, 4)},
                                            "query": {"bias": shape(1, 2, 4)},
                                            "norm": {"scale": shape(8), "bias": shape(8)}}},
                     "map_head": {"probe": shape(1, 1, 8)}},
        "mask_token": shape(1, 1, 8), "frame_embedding": shape(3, 8),
        "stack": {"relative_attention_bias": shape(32, 2)},
        "embedder": {"token_embedding": shape(10, 8), "position_embedding": shape(16, 8)},
        "output_bias": shape(10)}
    decayed = {jax.tree_util.keystr(path) for path, leaf in
               jax.tree_util.tree_leaves_with_path(optim.decay_mask(params)) if leaf}
    assert decayed == {"['backbone']['encoder']['block0']['qkv']['kernel']",
                       "['embedder']['token_embedding']", "['embedder']['position_embedding']"}


@pytest.mark.parametrize("method, expected", [
    ("simclr", {"crop_scale": (0.08, 1.0), "brightness": 0.8, "jitter_prob": 0.8,
                "blur_prob": 0.5}),
    ("moco", {"crop_scale": (0.08, 1.0), "brightness": 0.4, "contrast": 0.4,
              "saturation": 0.2, "hue": 0.1}),
    ("mae", {"crop_scale": (0.2, 1.0), "flip_prob": 0.5, "jitter_prob": 0.0,
             "grayscale_prob": 0.0, "blur_prob": 0.0}),
    ("simmim", {"crop_scale": (0.67, 1.0), "jitter_prob": 0.0, "blur_prob": 0.0}),
    ("finetune", {"crop_scale": (0.35, 1.0), "jitter_prob": 0.0, "blur_prob": 0.0}),
])
def test_each_method_defaults_to_its_paper_s_augmentation_and_the_config_wins(method, expected):
    model = {"model": {"name": "vit_tiny"}} if method in ("mae", "simmim") else {}
    section = {"finetune": {"num_classes": 10}} if method == "finetune" else {}
    config = config_lib.resolve({"method": method, **model, **section})
    assert {key: config.augment[key] for key in expected} == expected
    overridden = config_lib.resolve({"method": method, **model, **section,
                                     "augment": {"crop_scale": (0.5, 1.0)}})
    assert overridden.augment.crop_scale == (0.5, 1.0)


def test_the_trainer_probes_no_hook():
    with open(os.path.join(REPO, "jaxssl", "train.py")) as f:
        assert "hasattr" not in f.read()


@pytest.mark.parametrize("method, overrides, message", [
    ("simclr", {"simclr": {"temperature": 0.0}}, "simclr.temperature must be > 0"),
    ("moco", {"moco": {"view_blur_probs": (1.0,)}}, "moco per-view blur_prob needs 0 or 2"),
    ("mae", {"model": {"name": "resnet18"}}, "method 'mae' needs a ViT backbone"),
    ("mae", {"model": {"name": "vit_tiny"}, "mae": {"mask_ratio": 1.0}},
     "mae.mask_ratio must be in [0, 1)"),
    ("simmim", {"model": {"name": "vit_tiny"}, "simmim": {"mask_ratio": -0.1}},
     "simmim.mask_ratio must be in [0, 1)"),
    ("simmim", {"model": {"name": "vit_tiny", "pool": "map"}},
     "method 'simmim' trains the ViT's tokens, not its pooled features: model.pool='map'"),
    ("mae", {"model": {"name": "vit_tiny", "pool": "map"}},
     "method 'mae' trains the ViT's tokens, not its pooled features: model.pool='map'"),
    ("finetune", {}, "'finetune.num_classes' must be set"),
    ("finetune", {"finetune": {"num_classes": 10, "labels_per_class": 5, "label_fraction": 0.5}},
     "set labels_per_class or label_fraction, not both"),
    ("lm", {}, "method 'lm' needs a text dataset"),
    ("lm", {"augment": {"flip_prob": 0.0}},
     "method 'lm' does not augment its images: the augment section would be ignored"),
    ("clip", {"augment": {"crop_scale": (0.5, 1.0)}}, "method 'clip' does not augment"),
    ("gato", {"data": {"name": "digits", "image_size": 16}},
     "method 'gato' reads the images at their own size"),
    ("pali", {"model": {"name": "vit_tiny"}, "pali": {"objective_rates": (0.7, 0.7)}},
     "pali.objective_rates"),
    ("clip", {"model": {"name": "vit_tiny"}, "data": {"name": "npz"}},
     "method 'clip' on data.name='npz' needs captions"),
])
def test_each_method_checks_its_own_section_when_the_config_resolves(method, overrides, message):
    with pytest.raises(ConfigError) as info:
        config_lib.resolve({"method": method, **overrides})
    assert message in str(info.value)


@pytest.fixture
def tiny_simclr_config():
    return config_lib.load(os.path.join(REPO, "tests", "configs", "tiny_simclr.py"))


def test_the_dropout_key_is_no_key_that_the_step_key_splits_into():
    # fold_in(key, i) is split(key, n)[i]: SimCLR's 2 x batch view keys (and each view's
    # six augmentation keys) must not include the dropout key, at any batch size here.
    rng = jax.random.key(7)
    dropout = jax.random.key_data(base.dropout_rngs(rng)["dropout"])
    views = jax.random.split(rng, 4096)
    draws = jax.vmap(lambda key: jax.random.split(key, 6))(views)
    for keys in (views, draws.reshape(-1), jax.random.split(rng, 3)):
        assert not np.any(np.all(jax.random.key_data(keys) == dropout, axis=-1))
