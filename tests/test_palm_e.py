"""PaLM-E (jaxssl/methods/palm_e.py) and its digit scenes (jaxssl/data/scenes.py): scenes
that repeat from their seed and whose answers an independent reading of the record
confirms; loss only on answer tokens; image / state placeholders filled by exactly their
own encoder outputs; a frozen LM bitwise unchanged by training; the hand-off of a
pretrained LM and image encoder; shapes, overfitting one batch, greedy decoding; the LM's
own text mixed into training (text_mix) at its rate, through the LM alone, with its own
loss. (The sharded step is in test_tensor_parallel_steps.py.)"""

import dataclasses
import os
import re

import jax
import ml_collections
import numpy as np
import pytest

from jaxssl import config as config_lib, main as cli, parallel
from jaxssl.data import pipeline, scenes, scenes_with_text
from jaxssl.data.image_files import load_digits_split
from jaxssl.data.multimodal import KIND_IMAGE, KIND_TEXT, KIND_VECTOR
from jaxssl.data.sources import get_source
from jaxssl.data.tokenizers import EOS_ID, ByteTokenizer
from jaxssl.errors import ConfigError
from jaxssl.evaluate.representation import eval_batch_key
from jaxssl.train import Trainer

import test_tensor_parallel_steps as tensor_parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "tests", "configs", "tiny_palm_e.py")
TOKENIZER = ByteTokenizer(0)


def trainer(tmp_path, **overrides) -> Trainer:
    return Trainer(config_lib.load(TINY, {k: str(v) for k, v in overrides.items()}),
                   str(tmp_path))


def first_batch(t: Trainer) -> dict:
    loader = pipeline.train_loader(t.train_source, t.config.data.batch_size, 0, 0, 1)
    return parallel.host_batch_to_global(next(iter(loader)), t.mesh)


# ------------------------------------------------------------------ scenes
def read_scene(record: dict, spec: scenes.SceneSpec, digits) -> dict:
    """An independent reading of a record: {(column, row): label} of the objects, found by
    matching every non-empty cell of the canvas against the digit images."""
    found = {}
    c = spec.cell
    for row in range(spec.grid):
        for column in range(spec.grid):
            patch = record["image"][row * c:(row + 1) * c, column * c:(column + 1) * c]
            if patch.any():
                matches = np.flatnonzero((digits.images == patch).all(axis=(1, 2, 3)))
                assert len(matches), (row, column)
                found[(column, row)] = int(digits.labels[matches[0]])
    return found


def expected_answer(question: str, objects: dict, asked_place) -> str:
    """The answer to `question` about `objects` ({(column, row): label}), by hand."""
    by_column = [objects[p] for p in sorted(objects)]
    where = {label: p for p, label in objects.items()}
    if m := re.fullmatch(r"what is left of the (\d)\?", question):
        return str(by_column[by_column.index(int(m[1])) - 1])
    if question == "how many even digits?":
        return str(sum(label % 2 == 0 for label in by_column))
    if question == "list the digits.":
        return " ".join(map(str, by_column))
    if m := re.fullmatch(r"pick the (\d), then the (\d)\.", question):
        return " then ".join("%d,%d" % where[int(d)] for d in m.groups())
    assert question.startswith("what is at "), question
    return str(objects[asked_place])


@pytest.mark.parametrize("observe", ["image", "objects", "text"])
def test_scenes_repeat_from_their_seed_and_answers_match_an_independent_reading(observe):
    spec_name = scenes.scenes_dataset_name(observe=observe, length=80, eval_size=60)
    source = scenes.get_scene_source(spec_name, "test")
    again = scenes.get_scene_source(spec_name, "test")
    digits, spec = load_digits_split("test"), source.spec
    tasks = set()
    for i in range(len(source)):
        record = source[i]
        for key, value in again[i].items():
            np.testing.assert_array_equal(record[key], value)
        objects = read_scene(record, spec, digits)
        assert spec.min_objects <= len(objects) <= spec.max_objects
        assert len({p[0] for p in objects}) == len(objects)   # one object per column
        n = len(objects)
        # The state lists every object's cell centre once (in some order).
        places = {tuple(np.round(s * spec.grid - 0.5).astype(int)) for s in record["state"][:n]}
        assert places == set(objects)
        text_at = record["kinds"] == KIND_TEXT
        prompt = TOKENIZER.decode(record["tokens"][text_at & ~record["loss_mask"]])
        answer = TOKENIZER.decode(record["tokens"][record["loss_mask"]])
        vectors = record["kinds"] == KIND_VECTOR
        if observe == "objects":
            # Object k: its own image (the digit in its cell), then its state, in state order.
            kinds = record["kinds"][:2 * n]
            np.testing.assert_array_equal(kinds, [KIND_IMAGE, KIND_VECTOR] * n)
            np.testing.assert_array_equal(record["slots"][:2 * n], np.repeat(np.arange(n), 2))
            assert np.sum(record["kinds"] == KIND_IMAGE) == n
            c = spec.cell
            for k in range(spec.max_objects):
                if k >= n:
                    assert not record["objects"][k].any()
                    continue
                column, row = np.round(record["state"][k] * spec.grid - 0.5).astype(int)
                np.testing.assert_array_equal(
                    record["objects"][k], record["image"][row * c:(row + 1) * c,
                                                          column * c:(column + 1) * c])
        if observe in ("image", "objects"):
            if observe == "image":
                assert np.sum(record["kinds"] == KIND_IMAGE) == spec.image_tokens
            question = prompt
            asked = tuple(np.round(record["state"][n] * spec.grid - 0.5).astype(int))
            assert vectors.sum() == n + question.startswith("what is at ")
        else:
            assert not vectors.any() and not (record["kinds"] == KIND_IMAGE).any()
            listed, question = re.fullmatch(r"objects at ([\d, ]+)\. (.*)", prompt).groups()
            assert {tuple(map(int, p.split(","))) for p in listed.split()} == set(objects)
            m = re.fullmatch(r"what is at (\d),(\d)\?", question)
            asked = (int(m[1]), int(m[2])) if m else None
            question = re.sub(r"what is at \d,\d\?", "what is at ?", question)
        assert answer == " " + expected_answer(question.replace("what is at ?", "what is at "),
                                               objects, asked) + "[EOS]"
        tasks.add(scenes.TASKS[record["task"]])
    assert tasks == set(scenes.TASKS)
    # Other seeds and splits give other scenes.
    other = scenes.get_scene_source(spec_name + "&seed=1", "test")
    assert not np.array_equal(other[0]["image"], source[0]["image"])


def test_chance_is_the_rate_of_each_tasks_most_frequent_answer():
    """experiments.generalist.palm_e's chance row, against the answers read from the
    evaluation records' target tokens."""
    from experiments.generalist.palm_e import majority_answer_rates
    name = scenes.scenes_dataset_name(length=80, eval_size=60)
    config = ml_collections.ConfigDict({"data": {"name": name, "eval_split": "test",
                                                 "data_dir": ""},
                                        "eval": {"max_test_examples": 50}})
    source, answers = scenes.get_scene_source(name, "test"), {}
    for i in range(50):
        record = source[i]
        answers.setdefault(scenes.TASKS[record["task"]], []).append(
            TOKENIZER.decode(record["tokens"][record["loss_mask"]]))
    most = {task: max(map(given.count, given)) for task, given in answers.items()}
    expected = {task: most[task] / len(given) for task, given in answers.items()}
    assert majority_answer_rates(config) == {**expected, "all": sum(most.values()) / 50}
    assert 0 < expected["count_even"] < 1


def test_scene_options_are_checked():
    with pytest.raises(ConfigError, match="max_objects"):
        scenes.parse_scenes_dataset("scenes:digits?max_objects=5")
    with pytest.raises(ConfigError, match="digit source"):
        scenes.parse_scenes_dataset("scenes:cifar")
    with pytest.raises(ConfigError, match="image_tokens"):
        config_lib.load(TINY, {"data.name": "'scenes:digits?length=64&image_tokens=9'"})
    with pytest.raises(ConfigError, match="context"):
        config_lib.load(TINY, {"data.name": "'scenes:digits?length=100&image_tokens=16'"})
    with pytest.raises(ConfigError, match="observe=text have no image: palm_e.init_from, "
                                          "freeze_lm and freeze_image_encoder do not apply"):
        config_lib.load(TINY, {"data.name": "'scenes:digits?length=64&observe=text'",
                               "palm_e.freeze_image_encoder": "True"})


# ------------------------------------------------------------------ method
@pytest.fixture(scope="module", params=["image", "objects"])
def tiny(request, tmp_path_factory):
    t = Trainer(config_lib.load(f"{TINY}:{request.param}"),
                str(tmp_path_factory.mktemp("palm_e")))
    return t, t.initial_state(), first_batch(t)


def test_loss_counts_answer_tokens_only(tiny):
    t, state, batch = tiny
    method = t.method
    loss, (metrics, _) = jax.jit(method.loss_fn)(state.params, state.method_state, batch,
                                                 jax.random.key(0), 0)
    logits = np.asarray(jax.jit(method.logits)(state.params, batch)[0], np.float64)
    host = jax.device_get(batch)
    logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                  keepdims=True)) - logits.max(-1, keepdims=True)
    total, count = 0.0, 0
    for b in range(len(host["tokens"])):
        tokens, kinds = host["tokens"][b], host["kinds"][b]
        # The answer, found from the text alone: after the question's final '?' or '.'
        # (answers have neither), up to EOS.
        eos = int(np.flatnonzero(tokens == EOS_ID)[-1])
        ends = np.isin(tokens[:eos], TOKENIZER.encode("?."))
        start = int(np.flatnonzero(ends & (kinds[:eos] == KIND_TEXT))[-1]) + 1
        assert np.all(kinds[start:eos + 1] == KIND_TEXT)
        np.testing.assert_array_equal(np.flatnonzero(host["loss_mask"][b]),
                                      np.arange(start, eos + 1))
        for t_ in range(start, eos + 1):
            total -= logp[b, t_ - 1, tokens[t_]]
            count += 1
    assert float(metrics["tokens"]) == count
    np.testing.assert_allclose(float(loss), total / count, rtol=1e-5)
    assert not np.any(host["loss_mask"] & (host["kinds"] != KIND_TEXT))


def test_placeholders_hold_exactly_their_own_images_and_states(tiny):
    t, state, batch = tiny
    inputs, _, _ = t.method._inputs(batch)
    _, captured = jax.jit(lambda params, inputs: t.method.model.apply(
        {"params": params}, **inputs, train=False,
        capture_intermediates=lambda module, name: name in ("embed", "__call__"),
        mutable=["intermediates"]))(state.params, inputs)
    found = captured["intermediates"]
    embedded = np.asarray(found["lm"]["embedder"]["embed"][0])     # rotary: no position term
    image = np.asarray(found["image_projection"]["__call__"][0])   # [B, N, D]
    if t.method.model.per_object:
        # One token per object: the ViT's pooled features of that object's own image.
        objects = np.asarray(inputs["images"])
        features = t.method.model.backbone.apply(
            {"params": state.params["backbone"]}, objects.reshape((-1,) + objects.shape[2:]),
            False)
        projection = state.params["image_projection"]
        np.testing.assert_allclose(
            image, np.asarray(features).reshape(objects.shape[:2] + (-1,))
            @ projection["kernel"] + projection["bias"], rtol=1e-5, atol=1e-5)
    state_vectors = np.asarray(found["state_encoder"]["__call__"][0])
    kinds, slots = np.asarray(inputs["kinds"]), np.asarray(inputs["slots"])
    for b in range(len(kinds)):
        at_image = kinds[b] == KIND_IMAGE
        np.testing.assert_array_equal(slots[b][at_image], np.arange(at_image.sum()))
        np.testing.assert_array_equal(embedded[b][at_image], image[b][:at_image.sum()])
        at_vector = kinds[b] == KIND_VECTOR
        np.testing.assert_array_equal(embedded[b][at_vector],
                                      state_vectors[b][slots[b][at_vector]])
    assert not np.allclose(image[0], image[1])   # each row its own canvas


def test_shapes_overfitting_one_batch_and_greedy_decoding(tmp_path):
    t = trainer(tmp_path, **{"optim.base_lr": 1e-2, "optim.warmup_steps": 0,
                             "optim.schedule": "constant"})
    batch = first_batch(t)
    state = t.initial_state()
    logits, targets, mask = t.method.logits(state.params, batch)
    assert logits.shape == (8, 63, 263) and targets.shape == mask.shape == (8, 63)
    step = t.compile_train_step()
    losses = []
    for _ in range(60):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.2 * losses[0], losses[::10]
    scores = jax.device_get(jax.jit(t.method.eval_step)({"params": state.params}, batch,
                                                              eval_batch_key(0)))
    logits_fn = jax.jit(t.method.logits)
    # Greedy decoding, one token at a time from the prompt, gives the same verdicts.
    host = jax.device_get(batch)
    for b in range(8):
        answer = np.flatnonzero(host["loss_mask"][b])
        row = {k: v[b:b + 1].copy() for k, v in host.items()}
        for t_ in answer:
            row["tokens"][0, t_:] = 0
            next_logits, _, _ = logits_fn(state.params, row)
            row["tokens"][0, t_] = int(np.argmax(next_logits[0, t_ - 1]))
        decoded = row["tokens"][0, answer]
        assert bool(scores["exact"][b]) == bool(np.array_equal(decoded, host["tokens"][b, answer]))
    assert scores["exact"].sum() >= 2


# --------------------------------------------------------- text mixing
def test_text_rows_are_mixed_in_at_their_rate_and_hold_the_lms_own_text(tmp_path):
    t = trainer(tmp_path, **{"palm_e.text_mix": 0.25})
    mixed, text_rows = t.train_source, get_source(t.method.lm_method.config.data.name, "train")
    assert trainer(tmp_path).train_source.__class__ is scenes.SceneSource  # text_mix 0: as is
    scene_rows = scenes.SceneSource(dataclasses.replace(mixed.scene_rows.spec, train_size=2000),
                                    "train")
    many = scenes_with_text.ScenesWithText(scene_rows, text_rows, 0.25, seed=0)
    kinds = np.array([int(many[i]["task"]) for i in range(2000)])
    # 500 text rows expected; 80 is over 4 standard deviations (19.4).
    assert abs(int(np.sum(kinds == scenes_with_text.TEXT_TASK)) - 500) < 80
    for i in range(2000):   # the other rows are the scene records themselves
        if kinds[i] != scenes_with_text.TEXT_TASK and i % 97 == 0:
            assert all(np.array_equal(many[i][k], scene_rows[i][k]) for k in scene_rows[i])
    length = mixed.scene_rows.spec.length
    all_text = np.stack([text_rows[j]["tokens"][:length] for j in range(len(text_rows))])
    all_ids = np.stack([text_rows[j]["segment_ids"][:length] for j in range(len(text_rows))])
    texts = [i for i in range(len(mixed)) if int(mixed[i]["task"]) == scenes_with_text.TEXT_TASK]
    assert texts and [int(mixed[i]["task"]) for i in range(len(mixed))] == [
        int(mixed[i]["task"]) for i in range(len(mixed))]     # the same rows when read again
    for i in texts:
        record = mixed[i]
        inside = record["segment_ids"] > 0
        # Its tokens are one text row's documents, in order, cut at the scene row length.
        source = [j for j in range(len(all_text)) if np.array_equal(
            record["tokens"][inside], all_text[j][all_ids[j] > 0])]
        assert source, i
        assert np.all(record["kinds"][inside] == KIND_TEXT)
        starts = inside & (np.r_[0, record["segment_ids"][:-1]] != record["segment_ids"])
        np.testing.assert_array_equal(record["loss_mask"], inside & ~starts)
        np.testing.assert_array_equal(record["positions"][starts], 0)
        assert not record["image"].any() and not record["state"].any()


def test_text_rows_go_through_the_lm_alone_and_report_their_own_loss(tmp_path):
    t = trainer(tmp_path, **{"palm_e.text_mix": 0.5})
    state, batch = t.initial_state(), first_batch(t)
    host = jax.device_get(batch)
    text = host["task"] == scenes_with_text.TEXT_TASK
    assert 0 < text.sum() < len(text)
    _, (metrics, _) = jax.jit(t.method.loss_fn)(state.params, state.method_state, batch,
                                                jax.random.key(0), 0)
    # The same rows through the LM alone, without PaLM-E's model, in float64.
    lm = t.method.lm_method.model
    logits = np.asarray(lm.apply({"params": state.params["lm"]}, host["tokens"][text, :-1],
                                 host["segment_ids"][text, :-1], host["positions"][text, :-1],
                                 np.ones((int(text.sum()), host["tokens"].shape[1] - 1), bool),
                                 False), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    targets, mask = host["tokens"][text, 1:], host["loss_mask"][text, 1:]
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(metrics["lm_text/loss"]), nll[mask].mean(), rtol=1e-5)
    assert float(metrics["lm_text/tokens"]) == mask.sum()
    answers = host["loss_mask"][~text, 1:].sum()
    assert float(metrics["tokens"]) == mask.sum() + answers


def test_text_mix_must_be_a_fraction(tmp_path):
    with pytest.raises(ConfigError, match=r"palm_e.text_mix must be in \[0, 1\), got 1.0"):
        trainer(tmp_path, **{"palm_e.text_mix": 1.0})


@pytest.mark.parametrize("freeze, frozen", [
    ("freeze_lm", ("lm",)), ("freeze_image_encoder", ("backbone",)),
    pytest.param("", (), marks=pytest.mark.slow)])
def test_frozen_parts_stay_bitwise_unchanged(freeze, frozen, tmp_path):
    t = trainer(tmp_path, **({f"palm_e.{freeze}": True} if freeze else {}))
    state = t.initial_state()
    before = jax.device_get(state.params)
    step = t.compile_train_step()
    batch = first_batch(t)
    for _ in range(2):
        state, _ = step(state, batch)
    after = jax.device_get(state.params)
    same = lambda part: all(np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(before[part]), jax.tree.leaves(after[part])))
    for part in ("lm", "backbone", "image_projection", "state_encoder"):
        assert same(part) == (part in frozen), part


@pytest.mark.slow
def test_handoff_of_a_pretrained_lm_and_image_encoder(simclr_run, tmp_path):
    lm_dir = tmp_path / "lm"
    lm_overrides = {"data.name": "'text:pydoc?length=65&rows=packed&sentinels=0'",
                    "lm.hidden": "16", "lm.depth": "1", "lm.heads": "2", "lm.mlp_ratio": "4.0",
                    "lm.posemb": "rotary",
                    "total_steps": "2", "checkpoint.async_save": "false"}
    assert cli.main([f"--config={REPO}/tests/configs/tiny_lm.py", f"--workdir={lm_dir}",
                     *(f"--config.{k}={v}" for k, v in lm_overrides.items())]) == 0
    lm_trainer = Trainer(config_lib.load(f"{REPO}/tests/configs/tiny_lm.py", lm_overrides),
                         str(lm_dir))
    lm_params = jax.device_get(lm_trainer.restore().params)
    # The SimCLR ViT (hidden 32, depth 2, patch 2 on 8x8 digits) reads the canvas at 8 px.
    vit = simclr_run.config.model
    t = trainer(tmp_path / "palm_e", **{
        "palm_e.lm_init_from.checkpoint": f"'{lm_dir}'",
        "palm_e.init_from.checkpoint": f"'{simclr_run.workdir}'", "data.image_size": 8,
        "model.hidden": vit.hidden, "model.depth": vit.depth, "model.heads": vit.heads,
        "model.patch": vit.patch, "model.posemb": "'learned'"})
    params = jax.device_get(t.initial_state().params)
    equal = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)
    equal(params["lm"], lm_params)
    equal(params["backbone"], simclr_run.params["backbone"])
    with open(tmp_path / "palm_e" / "handoff.txt") as f:
        report = f.read()
    assert f"hand-off from {lm_dir}" in report and f"hand-off from {simclr_run.workdir}" in report
    assert "params/image_projection" in report.splitlines()[-1]
    assert "params/lm" not in report.splitlines()[-1]


@pytest.mark.slow
def test_sharded_object_centric_step_equals_one_device(tmp_path, monkeypatch):
    monkeypatch.setitem(tensor_parallel.CONFIGS, "palm_e", "tiny_palm_e.py:objects")
    tensor_parallel.test_step_on_data_fsdp_tensor_mesh_matches_one_device("palm_e", tmp_path)
