"""Fine-tuning: which parameters each mode trains, layer-wise learning rates, WiSE-FT,
forgetting, L2-SP, low-label subsets and classification metrics."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from jaxssl import config as config_lib, methods, optim, parallel, pipeline_run
from jaxssl.data import pipeline, subsets
from jaxssl.data.image_files import ArraySource, load_digits_split
from jaxssl.data.sources import get_source
from jaxssl.evaluate import classification
from jaxssl.evaluate.wise_ft import interpolate_weights
from jaxssl.methods.layerwise import layer_ids
from jaxssl.train import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINETUNE_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_finetune.py")
ONE_DEVICE = {"mesh.data": "1", "mesh.fsdp": "1"}
DEPTH = 2  # blocks of the tiny ViT; layer ids: embeddings 0, block i -> i + 1, norm and head 3


def tiny_config(**overrides):
    """tests/configs/tiny_finetune.py from scratch on one device, with `a.b="value"` overrides."""
    return config_lib.load(FINETUNE_CONFIG, {**ONE_DEVICE, **overrides})


def one_device_trainer(config, workdir) -> Trainer:
    return Trainer(config, str(workdir), devices=jax.devices()[:1])


def expected_layer(path: str) -> int:
    """The layer id the module docstring promises for a tiny-ViT parameter path."""
    if path.startswith("head/") or "/encoder_norm/" in path:
        return DEPTH + 1
    for block in range(DEPTH):
        if f"/block{block}/" in path:
            return block + 1
    return 0


def flat(tree) -> dict:
    leaves, _ = jax.tree_util.tree_flatten_with_path(jax.device_get(tree))
    return {"/".join(k.key for k in path): np.asarray(leaf) for path, leaf in leaves}


def changed_paths(before: dict, after: dict) -> set:
    return {p for p in before if not np.array_equal(before[p], after[p])}


def train_steps(trainer, state, num_steps):
    """(final state, flat params before and after each step, each step's metrics)."""
    step = trainer.compile_train_step()
    batch_size = trainer.config.data.batch_size
    loader = iter(pipeline.train_loader(trainer.train_source, batch_size, 0, 0, 1))
    history, metrics = [flat(state.params)], []
    for _ in range(num_steps):
        state, step_metrics = step(state, parallel.host_batch_to_global(next(loader), trainer.mesh))
        history.append(flat(state.params))
        metrics.append(jax.device_get(step_metrics))
    return state, history, metrics


# ------------------------------------------------------------------ modes
def test_linear_probe_trains_the_head_only(tmp_path):
    config = tiny_config(**{"finetune.mode": "linear_probe", "model.depth": "1"})
    trainer = one_device_trainer(config, tmp_path)
    _, history, _ = train_steps(trainer, trainer.initial_state(), 2)
    head = {p for p in history[0] if p.startswith("head/")}
    for before, after in zip(history, history[1:]):
        assert changed_paths(before, after) == head


def test_lp_ft_then_gradual_unfreezing_opens_layers_top_down_on_schedule(tmp_path):
    lp_steps, every = 2, 1
    config = tiny_config(**{"total_steps": "6", "finetune.mode": "lp_ft",
                            "finetune.lp_steps": str(lp_steps),
                            "finetune.unfreeze_every": str(every)})
    trainer = one_device_trainer(config, tmp_path)
    _, history, _ = train_steps(trainer, trainer.initial_state(), 6)
    top = DEPTH + 1
    open_step = {p: 0 if p.startswith("head/") else lp_steps + (top - expected_layer(p)) * every
                 for p in history[0]}
    for step in range(1, 7):  # the step-th update has 0-based index step - 1
        expected = {p for p, s in open_step.items() if s <= step - 1}
        assert changed_paths(history[step - 1], history[step]) == expected, step


def test_layer_decay_scales_each_learning_rate_by_the_formula():
    decay, lr = 0.5, 0.1
    config = tiny_config(**{"finetune.layer_decay": str(decay), "optim.name": "sgd",
                            "optim.momentum": "0.0", "optim.weight_decay": "0.0",
                            "optim.base_lr": str(lr), "optim.schedule": "constant"})
    method = methods.get("finetune")(config)
    batch = pipeline.example_batch(load_digits_split("train"), 2)
    shapes = jax.eval_shape(method.init, jax.random.key(0), batch)["params"]
    rng = np.random.default_rng(0)
    params, grads = (jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32),
                                  nn.meta.unbox(shapes)) for _ in range(2))
    tx, _ = method.optimizer()
    updates, _ = tx.update(grads, tx.init(params), params)
    grads, updates = flat(grads), flat(updates)
    assert len(updates) > 10
    for path, update in updates.items():
        scale = decay ** (DEPTH + 1 - expected_layer(path))
        np.testing.assert_allclose(update, -lr * scale * grads[path].astype(np.float64),
                                   rtol=1e-6, err_msg=path)


@pytest.mark.parametrize("model, expected", [
    # ResNet-18: stem 0, its 8 residual blocks 1..8 in order, head 9.
    ({"name": "resnet18", "width": 4},
     {"backbone/stem_conv/kernel": 0, "backbone/stage0_block0/conv0/kernel": 1,
      "backbone/stage1_block1/conv0/kernel": 4, "backbone/stage3_block1/bn1/scale": 8,
      "head/dense/kernel": 9}),
    ({"name": "vit", "hidden": 8, "depth": 3, "heads": 2, "patch": 4, "pool": "cls"},
     {"backbone/cls_token": 0, "backbone/patch_embedding/kernel": 0,
      "backbone/encoder/block2/mlp/fc1/kernel": 3, "backbone/encoder/encoder_norm/scale": 4,
      "head/dense/bias": 4}),
])
def test_layer_ids_of_resnet_and_vit(model, expected):
    config = tiny_config(**{f"model.{k}": str(v) for k, v in model.items()})
    method = methods.get("finetune")(config)
    shapes = jax.eval_shape(method.init, jax.random.key(0),
                            pipeline.example_batch(load_digits_split("train"), 2))["params"]
    ids, top = layer_ids(nn.meta.unbox(shapes))
    ids = flat(ids)
    assert top == max(expected.values())
    for path, layer in expected.items():
        assert ids[path] == layer, path


def test_scanned_blocks_get_one_layer_id_per_slice():
    params = {"backbone": {"encoder": {"blocks": {"mlp": {"kernel": np.zeros((3, 4, 5))}},
                                       "encoder_norm": {"scale": np.zeros(4)}},
                           "patch_embedding": {"kernel": np.zeros((2, 2, 1, 4))}},
              "head": {"dense": {"kernel": np.zeros((4, 10))}}}
    ids, top = layer_ids(params)
    assert top == 4
    np.testing.assert_array_equal(ids["backbone"]["encoder"]["blocks"]["mlp"]["kernel"],
                                  np.arange(1, 4).reshape(3, 1, 1))
    assert ids["backbone"]["patch_embedding"]["kernel"] == 0 and ids["head"]["dense"]["kernel"] == 4


def fresh_adamw_updates(grads, lr, wd, params, b1=0.9, b2=0.999, eps=1e-8):
    """float64 NumPy AdamW started on grads[0]: the updates (params held fixed)."""
    m = v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64)
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        adam = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        out.append(-lr * (adam + wd * np.asarray(params, np.float64)))
    return out


def test_train_from_gives_each_row_of_a_stacked_leaf_a_fresh_adamw_at_its_start_step():
    # Rows of a [3, 2] leaf start at steps 0, 2 and 4 (a scanned stack's layers), scaled by
    # 0.25, 0.5 and 1 (layer decay). Before its start a row's update is exactly zero; from
    # it on, its updates are those of an AdamW that first saw the row's gradient then.
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
    starts = np.array([[0], [2], [4]])
    scales = {"w": np.array([[0.25], [0.5], [1.0]], np.float32)}
    start_steps = lambda count, tree: {"w": starts}
    lr, wd = 0.1, 0.05
    config = {"name": "adamw", "weight_decay": wd, "b1": 0.9, "b2": 0.999, "eps": 1e-8,
              "clip_grad_norm": 0.0}
    tx = optim.train_from(
        optax.chain(optim.optimizer_with_schedule(config, optax.constant_schedule(lr),
                                                  lambda p: {"w": True}, start_steps),
                    optim.scale_updates_per_leaf(lambda u: scales)),
        start_steps)
    grads = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(7)]
    state, got = tx.init(params), []
    for g in grads:
        update, state = jax.jit(tx.update)({"w": jnp.asarray(g)}, state, params)
        got.append(np.asarray(update["w"]))
    for row, start in enumerate(starts[:, 0]):
        for step in range(start):
            np.testing.assert_array_equal(got[step][row], 0.0)
        expected = fresh_adamw_updates([g[row] for g in grads[start:]], lr, wd, params["w"][row])
        np.testing.assert_allclose(np.stack([u[row] for u in got[start:]]),
                                   scales["w"][row] * np.stack(expected), rtol=1e-5, atol=1e-7)


def test_train_from_restarts_sgd_momentum_and_hides_frozen_gradients_from_clipping():
    rng = np.random.default_rng(2)
    params = {"frozen": jnp.zeros(2), "open": jnp.zeros(2)}
    # 'open' restarts at step 2 (LP-FT's head); 'frozen' starts at 3
    start_steps = lambda count, tree: {"frozen": 3, "open": jnp.where(count >= 2, 2, 0)}
    config = {"name": "sgd", "weight_decay": 0.0, "momentum": 0.9, "clip_grad_norm": 1.0}
    tx = optim.train_from(optim.optimizer_with_schedule(config, optax.constant_schedule(1.0)),
                          start_steps)
    state = tx.init(params)
    grads = [{"frozen": jnp.asarray([100.0, 0.0]), "open": jnp.asarray(rng.normal(size=2) * 0.1,
                                                                         jnp.float32)}
             for _ in range(3)]
    updates = []
    for g in grads:
        u, state = tx.update(g, state, params)
        updates.append(u)
    for u in updates:
        np.testing.assert_array_equal(u["frozen"], 0.0)
    # the frozen leaf's huge gradient was hidden, so nothing was clipped
    np.testing.assert_allclose(updates[0]["open"], -grads[0]["open"], rtol=1e-6)
    np.testing.assert_allclose(updates[1]["open"], -(grads[1]["open"] + 0.9 * grads[0]["open"]),
                               rtol=1e-6)
    np.testing.assert_allclose(updates[2]["open"], -grads[2]["open"], rtol=1e-6)  # restarted


def test_lp_ft_fine_tunes_head_and_encoder_with_a_fresh_adamw():
    lp_steps = 3
    config = tiny_config(**{"total_steps": "6", "model.depth": "1", "finetune.mode": "lp_ft",
                            "finetune.lp_steps": str(lp_steps), "optim.warmup_steps": "0",
                            "optim.schedule": "constant"})
    method = methods.get("finetune")(config)
    batch = pipeline.example_batch(get_source(config.data.name, "train"), 2)
    params = nn.unbox(jax.jit(method.init)(jax.random.key(0), batch)["params"])
    tx, schedule = method.optimizer()
    rng = np.random.default_rng(3)
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(lp_steps + 2)]
    state, updates = tx.init(params), []
    for g in grads:
        u, state = jax.jit(tx.update)(g, state, params)
        updates.append(flat(u))
    grads, lr = [flat(g) for g in grads], float(schedule(lp_steps))
    mask = flat(method.decay_mask()(params))
    for path, p in flat(params).items():
        wd = config.optim.weight_decay if mask[path] else 0.0
        expected = fresh_adamw_updates([g[path] for g in grads[lp_steps:]], lr, wd, p)
        np.testing.assert_allclose(np.stack([u[path] for u in updates[lp_steps:]]),
                                   np.stack(expected), rtol=2e-5, atol=1e-8, err_msg=path)
    head = [p for p in updates[0] if p.startswith("head/")]
    assert head and all(np.any(updates[0][p] != 0) for p in head)   # the probe trained


def test_l2sp_replaces_weight_decay_on_the_encoder_only():
    masks = {}
    for l2sp in ("0.0", "0.5"):
        method = methods.get("finetune")(tiny_config(**{"finetune.l2sp": l2sp}))
        batch = pipeline.example_batch(get_source(method.config.data.name, "train"), 2)
        params = nn.unbox(jax.eval_shape(method.init, jax.random.key(0), batch)["params"])
        masks[l2sp] = flat(method.decay_mask()(params))
    assert masks["0.0"]["backbone/encoder/block0/mlp/fc1/kernel"]
    assert masks["0.5"] == {path: decays and path.startswith("head/")
                            for path, decays in masks["0.0"].items()}
    assert any(decays for path, decays in masks["0.5"].items() if path.startswith("head/"))


# ------------------------------------------------------ WiSE-FT, forgetting, L2-SP
def test_lp_ft_wise_ft_mixes_the_head_from_the_probed_one(tmp_path):
    lp_steps = 2
    config = tiny_config(**{"model.depth": "1", "finetune.mode": "lp_ft",
                            "finetune.lp_steps": str(lp_steps), "finetune.wise_alphas": "(0.0, 1.0)"})
    trainer = one_device_trainer(config, tmp_path)
    start = trainer.initial_state()
    final, history, _ = train_steps(trainer, start, 4)
    probed = flat(final.method_state["probed_head"])
    for path, value in probed.items():
        np.testing.assert_array_equal(value, history[lp_steps][f"head/{path}"])
    assert any(not np.array_equal(value, history[-1][f"head/{path}"])
               for path, value in probed.items())
    results = trainer.evaluate(final)
    assert results["wise1_top1"] == results["top1"]
    start_model = final.replace(params={**final.params, "backbone": start.params["backbone"],
                                        "head": final.method_state["probed_head"]})
    assert results["wise0_top1"] == trainer.evaluate(start_model)["top1"]


def test_wise_ft_endpoints_forgetting_and_l2sp(tmp_path):
    config = tiny_config(**{"model.depth": "1", "finetune.wise_alphas": "(0.0, 1.0)",
                            "finetune.l2sp": "0.5",
                            "finetune.forgetting.name": "digits",
                            "finetune.forgetting.max_train_examples": "128",
                            "finetune.forgetting.max_test_examples": "64"})
    trainer = one_device_trainer(config, tmp_path)
    start = trainer.initial_state()
    at_start = trainer.evaluate(start)
    start_encoder = flat(start.params["backbone"])
    final, history, metrics = train_steps(trainer, start, 3)
    results = trainer.evaluate(final)
    # a = 1 is the fine-tuned model itself; a = 0 puts back the starting encoder exactly.
    assert results["wise1_top1"] == results["top1"]
    assert results["forgetting_knn_wise1"] == results["forgetting_knn_after"]
    mixed = flat(interpolate_weights(final.method_state["pretrained"]["params"],
                                     final.params["backbone"], 0.0))
    for path, value in start_encoder.items():
        np.testing.assert_array_equal(mixed[path], value)
        np.testing.assert_array_equal(flat(final.method_state["pretrained"]["params"])[path], value)
    assert changed_paths(start_encoder, flat(final.params["backbone"]))
    # Forgetting: kNN of the starting encoder, before and after; equal at the start.
    assert at_start["forgetting_knn_before"] == at_start["forgetting_knn_after"]
    assert results["forgetting_knn_before"] == at_start["forgetting_knn_before"]
    assert results["forgetting_knn_wise0"] == results["forgetting_knn_before"]
    assert 0.0 < results["forgetting_knn_after"] <= 1.0
    # L2-SP: l2sp / 2 * ||encoder - starting encoder||^2 of the parameters each step starts
    # from (in float64): 0 at the first two steps (the zero-initialised head sends the
    # encoder no gradient at the first, and L2-SP replaces weight decay on the encoder),
    # then positive as the encoder moves.
    expected = [0.5 / 2 * sum(np.sum((params[f"backbone/{p}"].astype(np.float64) - v) ** 2)
                              for p, v in start_encoder.items()) for params in history[:-1]]
    assert expected[:2] == [0.0, 0.0] and all(e > 0 for e in expected[2:])
    np.testing.assert_allclose([float(m["l2sp_penalty"]) for m in metrics], expected, rtol=1e-4)


def test_l2sp_penalty_matches_float64():
    rng = np.random.default_rng(2)
    params = {"a": rng.normal(size=(3, 4)), "b": {"c": rng.normal(size=5)}}
    anchor = jax.tree.map(lambda x: x + rng.normal(size=x.shape), params)
    expected = 0.5 * 0.3 * sum(np.sum((p - a) ** 2) for p, a in
                               zip(jax.tree.leaves(params), jax.tree.leaves(anchor)))
    as32 = lambda t: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), t)
    np.testing.assert_allclose(optim.l2sp_penalty(as32(params), as32(anchor), 0.3), expected,
                               rtol=1e-5)


def test_interpolate_weights_matches_float64():
    rng = np.random.default_rng(3)
    pre, fine = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    mixed = interpolate_weights({"w": jnp.asarray(pre, jnp.float32)},
                                {"w": jnp.asarray(fine, jnp.float32)}, 0.3)
    np.testing.assert_allclose(mixed["w"], 0.7 * pre + 0.3 * fine, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("overrides, message", [
    ({"finetune.num_classes": "0"}, "finetune.num_classes"),
    ({"finetune.mode": "lp_ft"}, "needs 0 < finetune.lp_steps < total_steps"),
    ({"finetune.mode": "linear_probe", "finetune.layer_decay": "0.7"}, "freezes the encoder"),
    ({"finetune.mode": "linear_probe", "finetune.wise_alphas": "(0.5,)"},
     "unfreeze_every, l2sp and wise_alphas do not apply"),
    ({"finetune.mode": "probe"}, "must be one of"),
])
def test_inconsistent_settings_are_config_errors(overrides, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        methods.get("finetune")(tiny_config(**overrides))


# ------------------------------------------------------------ low-label subsets
def test_class_balanced_subsets_are_deterministic_nested_and_balanced():
    labels = np.random.default_rng(4).integers(0, 5, 400)
    counts = np.bincount(labels, minlength=5)
    tenth = subsets.class_balanced_indices(labels, 5, label_fraction=0.1, seed=7)
    half = subsets.class_balanced_indices(labels, 5, label_fraction=0.5, seed=7)
    np.testing.assert_array_equal(np.bincount(labels[tenth], minlength=5),
                                  np.maximum(1, np.round(0.1 * counts)))
    assert set(tenth) <= set(half) and np.all(np.diff(half) > 0)
    tenth_again = subsets.class_balanced_indices(labels, 5, label_fraction=0.1, seed=7)
    other_seed = subsets.class_balanced_indices(labels, 5, label_fraction=0.1, seed=8)
    np.testing.assert_array_equal(tenth, tenth_again)
    assert not np.array_equal(tenth, other_seed)
    three = subsets.class_balanced_indices(labels, 5, labels_per_class=3, seed=7)
    np.testing.assert_array_equal(np.bincount(labels[three], minlength=5), [3] * 5)
    with pytest.raises(ValueError, match="not both"):
        subsets.class_balanced_indices(labels, 5, labels_per_class=3, label_fraction=0.1)


def test_method_trains_on_the_labelled_subset():
    method = methods.get("finetune")(tiny_config(**{"finetune.labels_per_class": "4"}))
    source = ArraySource(np.arange(60, dtype=np.uint8).reshape(60, 1, 1, 1), np.arange(60) % 3, 3)
    subset = method.select_train_examples(source)
    labels = [int(subset[i]["label"]) for i in range(len(subset))]
    assert len(subset) == 12 and sorted(np.bincount(labels)) == [4, 4, 4]
    assert all(int(subset[i]["image"][0, 0, 0]) % 3 == labels[i] for i in range(12))
    assert repr(subset) == repr(method.select_train_examples(source))


def test_trainer_trains_on_the_labelled_subset(tmp_path):
    trainer = one_device_trainer(tiny_config(**{"finetune.labels_per_class": "2"}), tmp_path)
    labels = [int(trainer.train_source[i]["label"]) for i in range(len(trainer.train_source))]
    assert sorted(np.bincount(labels)) == [2] * 10


# --------------------------------------------------------- classification metrics
def test_top_k_accuracy_and_confusion_match_loops():
    rng = np.random.default_rng(5)
    logits, labels = rng.normal(size=(50, 7)), rng.integers(0, 7, 50)
    for k in (1, 3, 5):
        expected = np.mean([labels[i] in np.argsort(-logits[i])[:k] for i in range(50)])
        assert classification.top_k_accuracy(logits, labels, k) == pytest.approx(expected, abs=0)
    report = classification.classification_report(logits, labels, 7)
    matrix = np.zeros((7, 7), int)
    for true, pred in zip(labels, logits.argmax(1)):
        matrix[true, pred] += 1
    np.testing.assert_array_equal(report["confusion"], matrix)
    np.testing.assert_allclose(report["per_class"],
                               [matrix[c, c] / matrix[c].sum() for c in range(7)])
    assert report["top1"] == pytest.approx(np.trace(matrix) / 50, abs=0)


def test_confusion_png_is_written(tmp_path):
    path = str(tmp_path / "confusion.png")
    classification.save_confusion_png(np.array([[5, 1], [0, 3]]), path, ["cat", "dog"], "test")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 50


# ------------------------------------------------------------------ pipeline
def test_pipeline_stage_command_lines(tmp_path):
    args, overrides = pipeline_run.parse_args([
        "--pretrain_config=p.py", "--finetune_config=f.py:x", f"--workdir={tmp_path}",
        "--stages=pretrain,finetune,scratch", "--pretrain.total_steps=5", "--finetune.seed=3",
        "--scratch.optim.base_lr=0.1"])
    assert args.stages == ["pretrain", "finetune", "scratch"]
    assert pipeline_run.stage_argv(args, overrides, "pretrain") == [
        "--config=p.py", f"--workdir={tmp_path}/pretrain", "--config.total_steps=5"]
    assert pipeline_run.stage_argv(args, overrides, "finetune") == [
        "--config=f.py:x", f"--workdir={tmp_path}/finetune", "--config.seed=3",
        f"--config.finetune.init_from.checkpoint={tmp_path}/pretrain"]
    assert pipeline_run.stage_argv(args, overrides, "scratch")[2:] == [
        "--config.seed=3", "--config.optim.base_lr=0.1", "--config.finetune.init_from.checkpoint="]
    with pytest.raises(SystemExit):
        pipeline_run.parse_args(["--pretrain_config=p", "--finetune_config=f", "--workdir=w",
                                 "--stages=pretrain,tune"])


def test_pipeline_results_table():
    run = lambda top1, init: {"metrics": {"top1": top1, "top5": 1.0}, "per_class": [top1, 0.5],
                              "step": 10, "labelled_examples": 20, "init": init}
    table = pipeline_run.results_markdown({"knn_top1": 0.75},
                                          {"finetune": run(0.875, "/p"), "scratch": run(0.5, "x")})
    assert "Pretrained encoder (frozen): knn_top1 75.00%" in table
    assert "| finetune | /p | 20 | 10 | 87.50% | 100.00% |" in table
    assert "| scratch | x | 20 | 10 | 50.00% | 100.00% |" in table
    assert "| 0 | 87.5% | 50.0% |" in table and "| 1 | 50.0% | 50.0% |" in table
