"""PaLI-X: the 'pali' method's encoder-decoder architecture and several images per example.

The frame-question generator against a plain-Python reading of the drawn labels; shapes
and a one-batch overfit; which position sees which (decoder causal, encoder all images
and the whole prefix); the frame embedding is what tells frames apart; evaluation's
answer accuracy; a sharded step equals one device."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import config as config_lib, methods, parallel
from jaxssl.data import pipeline, tokenizers
from jaxssl.data.frame_questions import QUESTIONS, FrameQuestions
from jaxssl.data.image_files import load_digits_split
from jaxssl.methods.pali import image_tokens
from jaxssl.errors import ConfigError
from jaxssl.objectives import language
from jaxssl.train import Trainer

import test_tensor_parallel_steps as tensor_parallel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "tests", "configs", "tiny_pali_x.py")
NAMES = tuple(f"c{k}" for k in range(10))
FRAMES = 3


def tiny_config(arch: str, **pali) -> dict:
    user = config_lib.load_config_file(f"{TINY}:{arch}").to_dict()
    user["pali"].update(pali)
    return user


def test_frame_questions_match_the_drawn_labels():
    tokenizer = tokenizers.ByteTokenizer(num_sentinels=2)
    questions = FrameQuestions(tokenizer, ("which", "count"), NAMES, FRAMES)
    labels = np.asarray(load_digits_split("train").labels[:400], np.int32)
    drawn = jax.device_get(jax.jit(questions.draw)(jax.random.key(0), jnp.asarray(labels)))
    answers = {"which": [], "count": []}
    for b in range(len(labels)):
        task = ("which", "count")[drawn.task[b]]
        frame_labels = labels[drawn.indices[b]]
        hits = [k for k in range(FRAMES) if frame_labels[k] == drawn.asked[b]]
        answer = hits[0] + 1 if task == "which" else len(hits)
        if task == "which":
            assert len(hits) == 1  # the other frames show other classes
        assert drawn.asked[b] in labels and drawn.answer[b] == answer
        text = QUESTIONS[task].format(NAMES[drawn.asked[b]])
        assert tokenizer.decode(drawn.tokens[b]) == text.ljust(questions.question_length) + str(
            answer)
        answers[task].append(answer)
    # Answers uniform over 1..K ('which') and 0..K ('count'): chance is 1/K, 1/(K+1).
    for task, low in (("which", 1), ("count", 0)):
        counts = np.bincount(answers[task], minlength=FRAMES + 1)[low:]
        expected = len(answers[task]) / len(counts)
        assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected)), (task, counts)
    assert questions.chance("which") == 1 / 3 and questions.chance("count") == 1 / 4


def test_frame_questions_of_a_one_class_batch_answer_from_the_frames():
    questions = FrameQuestions(tokenizers.ByteTokenizer(0), ("which", "count"), NAMES, FRAMES)
    drawn = questions.draw(jax.random.key(1), jnp.full((8,), 7, jnp.int32),
                           jnp.asarray([0, 1] * 4))
    # No other class to draw: every frame shows the asked one.
    np.testing.assert_array_equal(drawn.answer, [1, FRAMES] * 4)


def test_padding_rows_are_never_asked_about_nor_shown():
    questions = FrameQuestions(tokenizers.ByteTokenizer(0), ("which", "count"), NAMES, FRAMES)
    labels = np.asarray(load_digits_split("train").labels[:64], np.int32)
    valid = np.arange(64) < 40       # an evaluation's last batch: 24 copies of its last record
    padded = np.where(valid, labels, labels[39])
    keys = jax.random.split(jax.random.key(2), 20)
    draw = jax.jit(jax.vmap(questions.draw, in_axes=(0, None, None, None)))
    drawn = jax.device_get(draw(keys, jnp.asarray(padded), None, jnp.asarray(valid)))
    assert drawn.indices.max() < 40
    assert set(np.unique(drawn.asked)) <= set(labels[:40])
    # The class counts among the asked ones follow the valid rows' (the padding would
    # give the last record's class 25 of 64 rows instead of 1 of 40).
    asked_share = np.mean(drawn.asked == labels[39])
    expected = np.mean(labels[:40] == labels[39])
    assert abs(asked_share - expected) < 4 * np.sqrt(expected * (1 - expected) / drawn.asked.size)
    # Without `valid` the draw is the one training makes, every row usable.
    everything = jax.device_get(jax.jit(questions.draw)(keys[0], jnp.asarray(labels)))
    alike = jax.device_get(jax.jit(questions.draw)(keys[0], jnp.asarray(labels), None,
                                                    jnp.ones(64, bool)))
    np.testing.assert_array_equal(everything.indices, alike.indices)
    np.testing.assert_array_equal(everything.tokens, alike.tokens)


@pytest.mark.parametrize("pali, key", [
    ({"architecture": "encoder"}, "pali.architecture"),
    ({"num_images": 2, "frame_tasks": ()}, "pali.frame_tasks"),
    ({"frame_tasks": ("which", "colour")}, "frame tasks"),
    ({"num_images": 10}, "1 to 9 frames"),
    ({"objective_rates": (0.5, 0.25, 0.25), "frame_tasks": ()}, "a third \\(qa\\)"),
    ({"objective_rates": (0.5, 0.25, 0.125, 0.125)}, "three \\(prefix, masked, qa\\)")])
def test_bad_pali_x_settings_are_refused(pali, key):
    with pytest.raises(ConfigError, match=key):
        config_lib.resolve(tiny_config("decoder", **pali))


@pytest.fixture(scope="module", params=["decoder", "encoder_decoder"])
def tiny(request):
    """(method, digits batch of 16, variables, jitted logits(params, images, inputs))."""
    method = methods.get("pali")(config_lib.resolve(tiny_config(request.param)))
    batch = {k: jnp.asarray(v) for k, v in
             pipeline.example_batch(load_digits_split("train"), 16).items()}
    variables = nn.unbox(jax.jit(method.init)(jax.random.key(0), batch))
    logits = jax.jit(lambda p, images, inputs: method.model.apply(
        {"params": p}, images, **inputs, train=False))
    return method, batch, variables, logits


def split_after(method, batch, split: int):
    """(frames, model text inputs) of the batch's frame questions cut after `split` tokens,
    so that the targets (decoder positions) are several tokens."""
    images, tokens, _ = method._examples(batch, jax.random.key(3))
    size, length = tokens.shape
    example = language.Seq2Seq(tokens[:, :split], jnp.full(size, split),
                               tokens[:, split:], jnp.full(size, length - split))
    return images, method.task.example_batch(example)[0]


def changed(before, after) -> np.ndarray:
    """bool [T]: the positions of example 0 whose logits differ."""
    return np.any(np.asarray(before[0]) != np.asarray(after[0]), axis=-1)


def test_decoder_positions_never_see_later_ones_and_all_see_frames_and_prefix(tiny):
    method, batch, variables, logits = tiny
    params, split = variables["params"], 6
    images, inputs = split_after(method, batch, split)
    base = logits(params, images, inputs)
    decoder = "decoder_tokens" if "decoder_tokens" in inputs else "tokens"
    first = 1 if decoder == "decoder_tokens" else split + 1  # a target position's input
    length = inputs[decoder].shape[1]
    for j in range(first, length):
        edited = {**inputs, decoder: inputs[decoder].at[0, j].set(ord("#") + 16)}
        moved = changed(base, logits(params, images, edited))
        assert not moved[:j].any() and moved[j], (j, moved)
    # The first output position reads every frame and every prefix (encoder) token.
    prefix = "encoder_tokens" if decoder == "decoder_tokens" else "tokens"
    for k in range(FRAMES):
        other = images.at[0, k].set(-images[0, k])
        assert changed(base, logits(params, other, inputs))[0], k
    for i in range(split):
        edited = {**inputs, prefix: inputs[prefix].at[0, i].set(ord("#") + 16)}
        assert changed(base, logits(params, images, edited))[0], i


@pytest.mark.parametrize("tiny", ["encoder_decoder"], indirect=True)
def test_the_encoder_reads_frames_and_prefix_bidirectionally(tiny):
    """Only the encoder-decoder has an encoder (the decoder-only stream is checked above)."""
    method, batch, variables, _ = tiny
    images, inputs = split_after(method, batch, 6)

    def encoded(images, inputs):
        _, state = method.model.apply(
            variables, images, **inputs, train=False, mutable=["intermediates"],
            capture_intermediates=lambda module, name: module.name == "encoder")
        return np.asarray(state["intermediates"]["text"]["encoder"]["__call__"][0][0])

    base = encoded(images, inputs)
    image_positions = base.shape[0] - inputs["encoder_tokens"].shape[1]
    last_text = {**inputs, "encoder_tokens": inputs["encoder_tokens"].at[0, -1].set(40)}
    assert np.all(np.any(encoded(images, last_text) != base, axis=-1))  # every position
    last_frame = images.at[0, -1].set(-images[0, -1])
    moved = np.any(encoded(last_frame, inputs) != base, axis=-1)
    assert moved.all() and image_positions == FRAMES * 4


def test_frame_embedding_is_what_tells_frames_apart(tiny):
    method, batch, variables, logits = tiny
    params = variables["params"]
    images, inputs, _, loss_mask = method.question_batch(batch, jax.random.key(4), 0)
    answer = lambda p, frames: np.asarray(logits(p, frames, inputs))[np.asarray(loss_mask)]
    swapped = images[:, jnp.asarray([1, 0, 2])]
    assert np.abs(answer(params, swapped) - answer(params, images)).max() > 1e-4
    blind = {**params, "frame_embedding": jnp.zeros_like(params["frame_embedding"])}
    np.testing.assert_allclose(answer(blind, swapped), answer(blind, images), atol=2e-5)
    if method.config.pali.architecture == "encoder_decoder":
        # Identical frames: their encoder input tokens differ by the frame embeddings.
        same = jnp.broadcast_to(images[:, :1], images.shape)
        _, state = method.model.apply(
            variables, same, **inputs, train=False, mutable=["intermediates"],
            capture_intermediates=lambda module, name: name == "embed")
        tokens = np.asarray(state["intermediates"]["text"]["embedder"]["embed"][0])
        per_frame = tokens[:, :FRAMES * 4].reshape(tokens.shape[0], FRAMES, 4, -1)
        frame_embedding = np.asarray(params["frame_embedding"])
        np.testing.assert_allclose(per_frame[:, 1] - per_frame[:, 0],
                                   np.broadcast_to(frame_embedding[1] - frame_embedding[0],
                                                   per_frame[:, 0].shape), atol=1e-6)


def test_shapes_and_one_batch_overfit(tiny):
    method, batch, variables, logits = tiny
    params = variables["params"]
    assert params["frame_embedding"].shape == (FRAMES, 16)
    text = "text" if method.config.pali.architecture == "encoder_decoder" else "decoder"
    assert set(params) == {"backbone", "image_projection", "frame_embedding", text}
    images, inputs, targets, loss_mask = method.question_batch(batch, jax.random.key(5), 1)
    assert images.shape == (16, FRAMES, 8, 8, 1)
    out = logits(params, images, inputs)
    assert out.shape == targets.shape + (method.tokenizer.vocab_size,)
    assert np.all(np.asarray(loss_mask).sum(axis=1) == 1)  # the answer token alone
    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(params, opt_state):
        grads, (metrics, _) = jax.grad(method.loss_fn, has_aux=True)(
            params, {}, batch, jax.random.key(6), 0)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, metrics

    opt_state, losses = optimizer.init(params), []
    for _ in range(25):
        params, opt_state, metrics = step(params, opt_state)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 2.0, losses


@pytest.mark.slow
def test_evaluation_reports_each_tasks_answer_accuracy(tmp_path):
    user = tiny_config("encoder_decoder")
    user.update(mesh={"data": 1, "fsdp": 1, "tensor": 1})
    trainer = Trainer(config_lib.resolve(user), str(tmp_path), devices=jax.devices()[:1])
    state = trainer.initial_state()
    results = trainer.evaluate(state)
    method, params = trainer.method, jax.device_get(state.params)
    eval_batch = {k: jnp.asarray(v) for k, v in pipeline.example_batch(
        trainer.eval_source, 32).items()}
    for index, name in enumerate(("which", "count")):
        images, inputs, targets, loss_mask = method.question_batch(
            eval_batch, jax.random.key(0), index)
        out = method.model.apply({"params": params}, images, **inputs, train=False)
        at = np.asarray(loss_mask)
        expected = np.mean(np.argmax(np.asarray(out)[at], -1) == np.asarray(targets)[at])
        assert results[f"{name}/accuracy"] == pytest.approx(expected)
        assert results[f"{name}/examples"] == 32
        assert results[f"{name}/chance"] == pytest.approx(1 / (FRAMES + (name == "count")))
    assert results["loss"] > 0


@pytest.mark.parametrize("architecture", [
    "encoder_decoder", pytest.param("decoder", marks=pytest.mark.slow)])
def test_sharded_step_equals_one_device(architecture, tmp_path, monkeypatch):
    monkeypatch.setitem(tensor_parallel.CONFIGS, "pali_x", f"tiny_pali_x.py:{architecture}")
    tensor_parallel.test_step_on_data_fsdp_tensor_mesh_matches_one_device("pali_x", tmp_path)


def test_a_pretrained_vit_is_handed_over_from_init_from(simclr_run, tmp_path):
    # The SimCLR run's ViT (tests/configs/tiny_simclr.py, 8x8 digits) as PaLI-X's image
    # encoder: every backbone array as saved, the text model and frame embedding fresh.
    vit = simclr_run.config.model
    user = tiny_config("encoder_decoder", init_from={
        "checkpoint": str(simclr_run.workdir), "subtree": "backbone", "renames": (),
        "skip": ()})
    user["model"].update(hidden=vit.hidden, depth=vit.depth, heads=vit.heads, patch=vit.patch,
                         posemb=vit.posemb)
    trainer = Trainer(config_lib.resolve(user), str(tmp_path))
    params = jax.device_get(trainer.initial_state().params)
    jax.tree.map(np.testing.assert_array_equal, params["backbone"],
                 simclr_run.params["backbone"])
    with open(tmp_path / "handoff.txt") as f:
        fresh = f.read().splitlines()[-1]
    assert "params/frame_embedding" in fresh and "params/text" in fresh
    assert "params/backbone" not in fresh


@pytest.mark.parametrize("architecture", ["decoder", "encoder_decoder"])
def test_qa_objective_targets_the_answer_alone(architecture):
    method = methods.get("pali")(config_lib.resolve(tiny_config(
        architecture, objective_rates=(0.0, 0.0, 1.0))))
    batch = {k: jnp.asarray(v) for k, v in
             pipeline.example_batch(load_digits_split("train"), 16).items()}
    _, tokens, rng = method._examples(batch, jax.random.key(2))
    _, inputs, targets, loss_mask, choice = method._model_inputs(batch, jax.random.key(2))
    np.testing.assert_array_equal(choice, 2)
    mask = np.asarray(loss_mask)
    np.testing.assert_array_equal(mask.sum(axis=1), 1)
    np.testing.assert_array_equal(np.asarray(targets)[mask], np.asarray(tokens)[:, -1])
    question = method.questions.question_length
    visible = (inputs["encoder_tokens"] if architecture == "encoder_decoder"
               else inputs["tokens"])[:, :question]
    np.testing.assert_array_equal(visible, np.asarray(tokens)[:, :question])


class ImageTokens(nn.Module):
    """`image_tokens` alone, with the parameter names the PaLI models give it."""
    backbone: nn.Module
    num_images: int
    pooled: bool

    @nn.compact
    def __call__(self, images):
        return image_tokens(self, images, 16, jnp.float32, False)


def test_pooled_images_are_one_token_per_frame_and_a_frozen_vit_stays_bitwise(tmp_path):
    user = tiny_config("encoder_decoder", pool_images=True, freeze_image_encoder=True)
    user.update(mesh={"data": 1, "fsdp": 1, "tensor": 1})
    trainer = Trainer(config_lib.resolve(user), str(tmp_path), devices=jax.devices()[:1])
    state = trainer.initial_state()
    method, before = trainer.method, jax.device_get(state.params)
    batch = {k: jnp.asarray(v) for k, v in
             pipeline.example_batch(load_digits_split("train"), 16).items()}
    images = method._examples(batch, jax.random.key(0))[0]
    features = method.model.backbone.apply({"params": before["backbone"]},
                                           images.reshape((-1, 8, 8, 1)), False)
    parts = {k: before[k] for k in ("backbone", "image_projection", "frame_embedding")}
    tokens = ImageTokens(method.model.backbone, FRAMES, True).apply({"params": parts}, images)
    # One token per frame: its pooled features, projected, plus its frame embedding.
    projection = before["image_projection"]
    expected = (features.reshape(16, FRAMES, -1) @ projection["kernel"] + projection["bias"]
                + before["frame_embedding"][None])
    np.testing.assert_allclose(tokens, expected, rtol=1e-5, atol=1e-5)
    step = trainer.compile_train_step()
    for _ in range(2):
        state, _ = step(state, parallel.host_batch_to_global(
            {k: np.asarray(v) for k, v in batch.items()}, trainer.mesh))
    after = jax.device_get(state.params)
    jax.tree.map(np.testing.assert_array_equal, after["backbone"], before["backbone"])
    assert not np.array_equal(after["image_projection"]["kernel"],
                              before["image_projection"]["kernel"])
