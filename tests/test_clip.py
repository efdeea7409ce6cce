"""CLIP / SigLIP: sharded losses == single-device losses (values and gradients), the
logit-memory claim, zero-shot and retrieval metrics against NumPy, captions (synthetic
and through the real tfds path), the method's shapes and overfitting, and bad configs."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxssl import config as config_lib, methods, optim, parallel
from jaxssl.data import captions, pipeline, tokenizers
from jaxssl.data.sources import get_source
from jaxssl.errors import ConfigError, DataError
from jaxssl.evaluate import zero_shot
from jaxssl.evaluate.representation import eval_batch_key
from jaxssl.objectives import contrastive
from jaxssl.train import Trainer
from tfds_testdata import CAPTION_IMAGES, CAPTION_TEXTS, CAPTION_TRAIN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_clip.py")

# name -> (plain loss, sharded loss, number of [N, D] embeddings, scalar arguments)
LOSSES = {
    "clip": (contrastive.clip_loss, contrastive.clip_loss_sharded, 2, (np.log(1 / 0.07),)),
    "siglip": (contrastive.siglip_loss, contrastive.siglip_loss_sharded, 2, (np.log(10.0), -3.0)),
    "nt_xent": (contrastive.nt_xent, contrastive.nt_xent_sharded, 2, (0.3,)),
    "moco_v3": (contrastive.moco_v3, contrastive.moco_v3_sharded, 4, (0.2,)),
}


def tiny_config(method="clip", **sections):
    """tests/configs/tiny_clip.py for `method`, with sections updated."""
    user = config_lib.load_config_file(TINY_CONFIG).to_dict()
    user["method"] = method
    user[method] = user.pop("clip")
    for key, value in sections.items():
        user[key] = {**user.get(key, {}), **value}
    return config_lib.resolve(user)


# ----------------------------------------------------------------------------
# Sharded losses
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("mesh_shape", [(8, 1), (2, 4)])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_sharded_loss_and_gradients_equal_single_device(name, mesh_shape):
    """8 devices ('data' x 'fsdp' = mesh_shape) vs 1 device on the same global batch of 16."""
    plain, sharded, count, scalars = LOSSES[name]
    mesh = parallel.make_mesh({"data": mesh_shape[0], "fsdp": mesh_shape[1], "tensor": 1})
    rng = np.random.default_rng(len(name))
    embeddings = [(rng.normal(size=(16, 8)) + 0.3).astype(np.float32) * rng.uniform(0.5, 2.0)
                  for _ in range(count)]
    scalars = tuple(np.float32(s) for s in scalars)
    argnums = tuple(range(count + len(scalars)))
    loss, grads = jax.jit(jax.value_and_grad(plain, argnums))(*embeddings, *scalars)

    sharded_fn = lambda *args: sharded(*args, mesh, parallel.BATCH_AXES)
    by_rows = NamedSharding(mesh, P(parallel.BATCH_AXES))
    placed = [jax.device_put(e, by_rows) for e in embeddings]
    sharded_loss, sharded_grads = jax.jit(jax.value_and_grad(sharded_fn, argnums))(
        *placed, *scalars)

    np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5)
    assert any(np.abs(g).max() > 0 for g in grads)
    for sharded_grad, grad in zip(sharded_grads, grads):
        np.testing.assert_allclose(sharded_grad, grad, rtol=1e-5, atol=1e-6)


def test_sharded_clip_step_holds_less_than_the_full_logit_matrix_per_device():
    """Temp memory of loss + gradients: one device needs the B x B logits, 8 devices
    with the shard_map loss need less than one B x B float32 matrix each."""
    batch, dim = 1024, 32
    mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})

    def temp_bytes(loss, sharding=None):
        args = [jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=sharding)] * 2
        fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes

    full_matrix = batch * batch * 4
    one_device = temp_bytes(lambda i, t: contrastive.clip_loss(i, t, 2.0))
    sharded = temp_bytes(
        lambda i, t: contrastive.clip_loss_sharded(i, t, 2.0, mesh, parallel.BATCH_AXES),
        NamedSharding(mesh, P(parallel.BATCH_AXES)))
    assert one_device >= full_matrix > sharded, (one_device, full_matrix, sharded)


# ----------------------------------------------------------------------------
# Zero-shot and retrieval against NumPy loops
# ----------------------------------------------------------------------------

def _cosine(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def test_zero_shot_accuracy_matches_reference():
    rng = np.random.default_rng(0)
    images, classes = rng.normal(size=(40, 6)), rng.normal(size=(5, 6))
    labels = rng.integers(0, 5, 40)
    expected = np.mean([np.argmax([_cosine(x, c) for c in classes]) == y
                        for x, y in zip(images, labels)])
    assert zero_shot.zero_shot_accuracy(images, labels, classes) == pytest.approx(expected)


def _recall_reference(queries, items, query_groups, item_groups, k):
    hits = 0
    for q, group in zip(queries, query_groups):
        scores = [_cosine(q, item) for item in items]
        top = sorted(range(len(items)), key=lambda j: -scores[j])[:k]
        hits += any(item_groups[j] == group for j in top)
    return hits / len(queries)


@pytest.mark.parametrize("grouped", [False, True])
def test_retrieval_recall_matches_reference(grouped):
    """60 random pairs (in 15 groups of equal captions when grouped): far more pairs, and
    distinct captions, than k = 5, so recall@k is not 1 by construction. R@1 and R@5 both ways
    equal a loop over the queries and lie strictly between 0 and 1."""
    rng = np.random.default_rng(1)
    n, num_groups, dim = 60, 15, 8
    if grouped:  # texts of a group are one caption: equal rows (as with synthetic captions)
        groups = rng.permutation(np.arange(n) % num_groups)
        captions = rng.normal(size=(num_groups, dim))
        texts, images = captions[groups], 0.6 * captions[groups] + rng.normal(size=(n, dim))
    else:
        groups = np.arange(n)
        images = rng.normal(size=(n, dim))
        texts = rng.normal(size=(n, dim)) + 0.6 * images
    results = zero_shot.retrieval_recall(images, texts, groups if grouped else None)
    _, first = np.unique(groups, return_index=True)
    assert len(first) == (num_groups if grouped else n) > 5
    expected = {}
    for k in (1, 5):
        expected[f"i2t_recall@{k}"] = _recall_reference(images, texts[first], groups,
                                                        groups[first], k)
        expected[f"t2i_recall@{k}"] = _recall_reference(texts[first], images, groups[first],
                                                        groups, k)
    assert results == pytest.approx(expected, abs=1e-12)
    for direction in ("i2t", "t2i"):
        assert 0 < results[f"{direction}_recall@1"] < results[f"{direction}_recall@5"] < 1, results


# ----------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------

def test_synthetic_caption_table_spells_each_class_then_eos_and_padding():
    tokenizer = tokenizers.ByteTokenizer(num_sentinels=0)
    table = captions.caption_table(tokenizer, "a photo of a {}.", captions.CIFAR10_NAMES, 32)
    assert table.shape == (10, 32) and table.dtype == np.int32
    for row, name in zip(table, captions.CIFAR10_NAMES):
        caption = f"a photo of a {name}."
        assert tokenizer.decode(row[:len(caption)]) == caption
        assert row[len(caption)] == tokenizers.EOS_ID and np.all(row[len(caption) + 1:] == tokenizers.PAD_ID)
    with pytest.raises(ConfigError, match="'a photo of a automobile.' needs 25 tokens"):
        captions.caption_table(tokenizer, "a photo of a {}.", captions.CIFAR10_NAMES, 20)
    cut = captions.tokenize_captions(tokenizer, ["abcdef"], length=4)
    np.testing.assert_array_equal(cut[0], list(tokenizer.encode("abc")) + [tokenizers.EOS_ID])


def test_tfds_caption_source_reads_image_and_first_caption(caption_dir):
    tokenizer = tokenizers.ByteTokenizer(num_sentinels=0)
    splits = {"train": range(CAPTION_TRAIN), "test": range(CAPTION_TRAIN, len(CAPTION_IMAGES))}
    for split, indices in splits.items():
        source = get_source("tfds_captions:tiny_captions?image_size=0&length=24", split,
                            caption_dir)
        assert len(source) == len(indices) and source.image_shape == (8, 8, 3)
        for j, i in enumerate(indices):
            record = source[j]
            np.testing.assert_array_equal(record["image"], CAPTION_IMAGES[i])
            first = CAPTION_TEXTS[i][0]
            assert record["tokens"].shape == (24,)
            assert tokenizer.decode(record["tokens"][:len(first)]) == first
            assert record["tokens"][len(first)] == tokenizers.EOS_ID
    resized = get_source("tfds_captions:tiny_captions?image_size=4", "train", caption_dir)
    assert resized[0]["image"].shape == (4, 4, 3) and resized.image_shape == (4, 4, 3)
    with pytest.raises(ConfigError, match="bad option 'size=4'"):
        get_source("tfds_captions:tiny_captions?size=4", "train", caption_dir)
    with pytest.raises(DataError, match="'coco_captions' is not prepared"):
        get_source("tfds_captions:coco_captions", "train", caption_dir)


@pytest.mark.slow
def test_clip_trains_and_evaluates_on_tfds_caption_pairs(caption_dir):
    config = tiny_config(data={"name": "tfds_captions:tiny_captions?image_size=8&length=24",
                               "data_dir": str(caption_dir)})
    method = methods.get("clip")(config)
    batch = pipeline.example_batch(get_source(config.data.name, "train", caption_dir), 4)
    variables = jax.jit(method.init)(jax.random.key(0), batch)
    loss, (metrics, _) = jax.jit(method.loss_fn)(variables["params"], {}, batch,
                                                 jax.random.key(1), 0)
    assert np.isfinite(loss) and set(metrics) == {"loss", "logit_scale", "i2t_top1"}
    mesh = parallel.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    results = method.evaluate(variables, None, get_source(config.data.name, "test", caption_dir),
                              mesh, config.eval)
    assert set(results) == {"i2t_recall@1", "i2t_recall@5", "t2i_recall@1", "t2i_recall@5"}
    assert results["i2t_recall@5"] == results["t2i_recall@5"] == 1.0  # 2 pairs, k = 5


# ----------------------------------------------------------------------------
# The method
# ----------------------------------------------------------------------------

OVERFIT_STEPS = 12


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """Per method: OVERFIT_STEPS steps on one fixed batch of 16, on one device:
    (trainer, final state, host batch, metrics of every step)."""
    runs = {}
    for method in ("clip", "siglip"):
        config = tiny_config(method, mesh={"data": 1, "fsdp": 1, "tensor": 1})
        trainer = Trainer(config, str(tmp_path_factory.mktemp(method)), devices=jax.devices()[:1])
        host_batch = next(iter(pipeline.train_loader(trainer.train_source, 16, 0, 0, 1)))
        batch = parallel.host_batch_to_global(host_batch, trainer.mesh)
        step_fn, state = trainer.compile_train_step(), trainer.initial_state()
        history = []
        for _ in range(OVERFIT_STEPS):
            state, metrics = step_fn(state, batch)
            history.append(jax.device_get(metrics))
        runs[method] = (trainer, state, host_batch, history)
    return runs


@pytest.mark.parametrize("method", ["clip", "siglip"])
def test_method_shapes_initial_scalars_and_overfits_one_batch(method, single):
    trainer, state, host_batch, history = single[method]
    params = jax.device_get(state.params)
    assert set(params) == {"backbone", "text_tower", "image_projection", "text_projection",
                           *dict(trainer.method.loss_scalars)}
    variables = {"params": state.params}
    rows = jax.eval_shape(trainer.method.eval_step, variables, host_batch, eval_batch_key(0))
    assert rows["image"].shape == (16, 16) and rows["text"].shape == (16, 16)
    features = jax.eval_shape(trainer.method.features, variables, host_batch["image"])
    assert features.shape == (16, 32) and features.dtype == jnp.float32
    first, last = history[0], history[-1]
    if method == "clip":
        assert first["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-6)
    else:
        assert first["temperature"] == pytest.approx(10.0, rel=1e-6)
        assert first["bias"] == pytest.approx(-10.0)
    assert last["loss"] < first["loss"] - 0.3, [float(h["loss"]) for h in history]
    assert 0.0 <= last["i2t_top1"] <= 1.0


@pytest.mark.parametrize("method, scalar", [("clip", "logit_scale"), ("siglip", "log_t")])
def test_a_clip_logit_scale_above_100_is_brought_to_100_by_the_next_step(method, scalar,
                                                                          single):
    """CLIP's cap is on the parameter after the step (an imported checkpoint may hold more):
    the step's loss still uses the scale as it is, and the step lands it on log(100)
    exactly. SigLIP's temperature has no cap."""
    trainer, state, host_batch, _ = single[method]
    state = jax.tree.map(jnp.copy, state)  # the step donates its state; the fixture's stays
    state = state.replace(params={**state.params, scalar: jnp.float32(5.0)})
    batch = parallel.host_batch_to_global(host_batch, trainer.mesh)
    state, metrics = trainer.compile_train_step()(state, batch)
    reported = "logit_scale" if method == "clip" else "temperature"
    assert metrics[reported] == pytest.approx(np.exp(5.0), rel=1e-6)
    after = float(state.params[scalar])
    if method == "clip":
        assert after == np.float32(np.log(100.0))
    else:
        assert after != 5.0 and abs(after - 5.0) < 0.1


def test_a_capped_parameter_lands_on_its_cap_and_comes_back_down():
    """optim.cap_parameters over SGD (lr 1): an update past the cap lands on it exactly, one
    below it and every other parameter's are SGD's bitwise, and a parameter held at the cap
    moves down with its gradient (a clamp inside the loss would give it no gradient)."""
    tx = optim.cap_parameters(optax.sgd(1.0), {"scale": 4.0})
    params = {"scale": jnp.float32(3.5), "w": jnp.array([3.5, 9.0], jnp.float32)}
    state = tx.init(params)
    down = {"scale": jnp.float32(-2.0), "w": jnp.array([-2.0, 0.25], jnp.float32)}
    updates, state = tx.update(down, state, params)  # SGD steps against the gradient
    params = optax.apply_updates(params, updates)
    assert float(params["scale"]) == 4.0
    np.testing.assert_array_equal(params["w"], [5.5, 8.75])
    updates, state = tx.update({"scale": jnp.float32(0.75), "w": jnp.zeros(2)}, state, params)
    assert float(optax.apply_updates(params, updates)["scale"]) == 3.25
    updates, _ = tx.update({"scale": jnp.float32(-0.125), "w": jnp.zeros(2)}, state,
                           {**params, "scale": jnp.float32(3.5)})
    assert float(updates["scale"]) == 0.125


@pytest.mark.slow
@pytest.mark.parametrize("method", ["clip", "siglip"])
def test_sharded_method_step_equals_single_device(method, single, tmp_path):
    """The 8-device steps (shard_map loss) give the 1-device losses and gradient norms."""
    _, _, host_batch, history = single[method]
    trainer = Trainer(tiny_config(method), str(tmp_path))
    assert parallel.batch_shards(trainer.mesh) == 8
    step_fn = trainer.compile_train_step()
    assert "all-gather" in step_fn.as_text()
    batch = parallel.host_batch_to_global(host_batch, trainer.mesh)
    state = trainer.initial_state()
    for expected in history[:2]:
        state, metrics = step_fn(state, batch)
        for key in ("loss", "grad_norm"):
            np.testing.assert_allclose(metrics[key], expected[key], rtol=2e-5)


def test_evaluate_reports_zero_shot_and_retrieval(single):
    trainer, state, _, _ = single["siglip"]
    results = trainer.evaluate(state)
    assert set(results) == {"zero_shot_top1", "i2t_recall@1", "i2t_recall@5",
                            "t2i_recall@1", "t2i_recall@5"}
    # The eval split's first max_test_examples pairs, embedded in one batch, through the loop
    # reference: 64 pairs of 10 distinct captions, more than k = 5 of each.
    count = trainer.config.eval.max_test_examples
    rows = jax.device_get(jax.jit(trainer.method.eval_step)(
        {"params": state.params}, pipeline.example_batch(trainer.eval_source, count),
        eval_batch_key(0)))
    groups = rows["label"]
    _, first = np.unique(groups, return_index=True)
    assert len(groups) == 64 and len(first) == 10
    for k in (1, 5):
        assert results[f"i2t_recall@{k}"] == pytest.approx(_recall_reference(
            rows["image"], rows["text"][first], groups, groups[first], k), abs=1e-12)
        assert results[f"t2i_recall@{k}"] == pytest.approx(_recall_reference(
            rows["text"][first], rows["image"], groups[first], groups, k), abs=1e-12)
    # Synthetic captions: image->text retrieval over the distinct captions is zero-shot.
    assert results["i2t_recall@1"] == results["zero_shot_top1"]


def test_bad_configs_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'clipp' \\(did you mean 'clip'\\?\\)"):
        methods.get("clipp")
    # Config values are checked when the config resolves, before any method is built.
    with pytest.raises(ConfigError, match="needs a ViT backbone"):
        tiny_config(model={"name": "resnet18"})
    with pytest.raises(ConfigError, match="needs captions: give clip.class_names"):
        tiny_config(data={"name": "npz"})
    with pytest.raises(ConfigError, match="needs 20 tokens with EOS, more than the text length 8"):
        tiny_config("siglip", siglip={"text_length": 8})
    with pytest.raises(DataError, match="class_names has 1 names, the data has label 1"):
        Trainer(tiny_config(clip={"class_names": ("zero",)}), str(tmp_path))
    assert not os.listdir(tmp_path)
