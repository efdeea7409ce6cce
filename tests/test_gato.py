"""Gato: loss and attention masks of the mixture rows, packing of episodes, the rollout
evaluation against an independent environment loop, model shape and one-batch overfit.
The sharded step is checked in test_tensor_parallel_steps.py."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxssl import config as config_lib, methods
from jaxssl.data import gato_control, gato_mixture, pipeline
from jaxssl.data.multimodal import (KIND_IMAGE, KIND_TEXT, detokenize_continuous,
                                    tokenize_continuous)
from jaxssl.data.sources import element_spec, get_source
from jaxssl.evaluate.gato_rollout import rollout_returns

pytest.importorskip("gymnasium")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_method(**gato):
    user = config_lib.load_config_file(os.path.join(REPO, "tests", "configs",
                                                    "tiny_gato.py")).to_dict()
    user["gato"].update(gato)
    return methods.get("gato")(config_lib.resolve(user))


@pytest.fixture(scope="module")
def gato():
    method = make_method()
    return method, method.select_train_examples(get_source("digits", "train"))


def rows_of(source, task: str, count: int) -> dict:
    """`count` rows of `task` from the mixture, stacked."""
    index = gato_mixture.TASKS.index(task)
    found = [source[i] for i in range(len(source)) if source[i]["task"] == index][:count]
    assert len(found) == count, task
    return {k: np.stack([r[k] for r in found]) for k in found[0]}


def reference_loss(logits: np.ndarray, rows: dict, separator: int) -> float:
    """Mean next-token nll over the targets as the row's structure says: text tokens
    (after the first of each example) and action tokens (those right after a separator)."""
    tokens, segments, kinds = rows["tokens"], rows["segment_ids"], rows["kinds"]
    total, count = 0.0, 0
    for b in range(tokens.shape[0]):
        for t in range(1, tokens.shape[1]):
            if segments[b, t] == 0 or segments[b, t] != segments[b, t - 1]:
                continue
            is_text = kinds[b, t] == KIND_TEXT
            is_action = tokens[b, t - 1] == separator
            if is_text or is_action:
                z = logits[b, t - 1].astype(np.float64)
                total += np.log(np.exp(z - z.max()).sum()) + z.max() - z[tokens[b, t]]
                count += 1
    return total / count


def test_record_spec_matches_the_rows_of_every_task(gato):
    """What jaxssl.aot compiles for (no data read) is what the mixture yields."""
    method, source = gato
    spec = method.train_record_spec(element_spec("digits"))
    for task in gato_mixture.TASKS:
        row = {k: v[0] for k, v in rows_of(source, task, 1).items()}
        assert {k: (v.shape, v.dtype) for k, v in row.items()} == {
            k: (tuple(s.shape), np.dtype(s.dtype)) for k, s in spec.items()}, task


def test_loss_only_on_text_and_action_tokens(gato):
    """Loss mask: never an observation, separator, image or padding position; the loss is
    the reference mean nll over text and action targets of each packed example."""
    method, source = gato
    separator = method.vocab.separator
    batch = pipeline.example_batch(source, 16)
    for task in ("caption", "cartpole", "pendulum", "text"):
        rows = rows_of(source, task, 1)
        mask = rows["loss_mask"][0]
        assert mask.any(), task
        assert not mask[rows["kinds"][0] == KIND_IMAGE].any()
        assert not mask[rows["segment_ids"][0] == 0].any()
        assert not mask[rows["tokens"][0] == separator].any()
        if task in ("cartpole", "pendulum"):
            # targets are exactly the tokens right after a separator: the actions
            after_separator = np.zeros_like(mask)
            after_separator[1:] = rows["tokens"][0][:-1] == separator
            np.testing.assert_array_equal(mask, after_separator)
    variables = method.init(jax.random.key(0), batch)
    loss, (metrics, _) = jax.jit(method.loss_fn, static_argnums=4)(
        variables["params"], {}, batch, jax.random.key(1), 0)
    logits = np.asarray(method._apply(variables, batch, batch["images"]))
    np.testing.assert_allclose(float(loss), reference_loss(logits, batch, separator), rtol=1e-5)
    assert set(metrics) >= {"loss", "tokens", "text/loss", "cartpole/loss"}


def test_no_attention_to_later_positions_or_other_examples(gato):
    """Changing one token changes the logits only at it and after it within its example."""
    method, _ = gato
    source = make_method(control_steps=2, weights=(0, 0, 1, 0)).select_train_examples(
        get_source("digits", "train"))
    rows = pipeline.example_batch(source, 1)
    assert rows["segment_ids"].max() >= 2  # several episodes packed in the row
    variables = method.init(jax.random.key(0), rows)
    logits = lambda r: np.asarray(method._apply(variables, r, r["images"]))
    base = logits(rows)
    for j in (5, 17, 30):
        changed = {**rows, "tokens": rows["tokens"].copy()}
        changed["tokens"][0, j] = (changed["tokens"][0, j] + 7) % method.vocab.size
        moved = np.abs(logits(changed) - base)[0].max(axis=1) > 1e-6
        segment = rows["segment_ids"][0]
        expected = (np.arange(len(segment)) >= j) & (segment == segment[j])
        np.testing.assert_array_equal(moved, expected)


def test_packing_never_mixes_episodes():
    """Episodes with distinct observations: each packed example is the tail of one episode
    (the prompt) followed by consecutive timesteps of one other episode."""
    task = gato_control.control_task("cartpole")
    vocab = gato_control.Vocabulary(263)
    episodes = [gato_control.Episode(np.full((20, 4), 0.01 * (k + 1), np.float32),
                                     np.arange(20)[:, None] % 2, 0.0) for k in range(5)]
    steps = [gato_control.step_tokens(task, e, vocab) for e in episodes]
    owner = {int(s[0, 0]): k for k, s in enumerate(steps)}
    assert len(owner) == 5
    source = gato_mixture.GatoMixture(
        (0, 0, 1, 0), 64, None, get_source("digits", "train"), [(10, 2)], 4,
        {"cartpole": gato_mixture.ControlData(task, steps)}, prompt_steps=2, control_steps=3,
        num_rows=10, seed=0)
    for i in range(10):
        row = source[i]
        assert row["segment_ids"].max() == 64 // (5 * task.step_length)
        for k in range(1, row["segment_ids"].max() + 1):
            example = row["tokens"][row["segment_ids"] == k].reshape(-1, task.step_length)
            prompt_owner = {owner[int(t)] for t in example[:2, 0]}
            chunk_owner = {owner[int(t)] for t in example[2:, 0]}
            assert len(prompt_owner) == len(chunk_owner) == 1 and prompt_owner != chunk_owner
            np.testing.assert_array_equal(example[:2], steps[prompt_owner.pop()][-2:])
            chunk = steps[chunk_owner.pop()]
            starts = [s for s in range(len(chunk) - 2) if (chunk[s:s + 3] == example[2:]).all()]
            assert starts, "the example's timesteps are not consecutive in its episode"


@pytest.mark.parametrize("name", ["cartpole", "pendulum"])
def test_rollout_of_scripted_policy_reproduces_its_return(name):
    """A fake network that acts as the expert on the decoded observation tokens it reads:
    the rollout code's returns equal a plain environment loop of that same policy."""
    task = gato_control.control_task(name)
    vocab = gato_control.Vocabulary(263)

    def through_tokens(observation):  # the expert on binned observations, binned actions
        seen = detokenize_continuous(task.observation_tokens(observation, vocab), vocab.bins)
        return task.env_action(task.action_tokens(np.atleast_1d(task.expert(seen)), vocab), vocab)

    def next_logits(tokens, lengths):
        logits = np.zeros((len(tokens), vocab.size))
        for k, (row, length) in enumerate(zip(tokens, lengths)):
            assert row[length - 1] == vocab.separator
            seen = detokenize_continuous(row[length - 1 - task.observation_dim:length - 1],
                                         vocab.bins)
            logits[k, task.action_tokens(np.atleast_1d(task.expert(seen)), vocab)[0]] = 1.0
        return logits

    prompt = np.full((2, task.step_length), vocab.bins, np.int32)
    returns = rollout_returns(task, vocab, next_logits, prompt, 64, 3, seed=5)
    reference = [gato_control.collect_episode(task, through_tokens, 5 + k).episode_return
                 for k in range(3)]
    np.testing.assert_array_equal(returns, reference)
    assert np.mean(returns) > (475 if name == "cartpole" else -400)


def test_continuous_tokens_round_trip_through_the_action_decoder():
    task = gato_control.control_task("pendulum")
    vocab = gato_control.Vocabulary(263)
    torque = np.array([1.3], np.float32)
    tokens = task.action_tokens(torque, vocab)
    assert vocab.bins <= tokens[0] < vocab.separator
    np.testing.assert_array_equal(tokens, tokenize_continuous(torque, 263))
    np.testing.assert_allclose(task.env_action(tokens, vocab), torque, rtol=0.02)


def test_shape_and_one_batch_overfit(gato):
    method, source = gato
    batch = {k: jnp.asarray(v) for k, v in pipeline.example_batch(source, 8).items()}
    variables = method.init(jax.random.key(0), batch)
    logits = method.model.apply(variables, **method._inputs(batch), train=False)
    assert logits.shape == (8, 48, method.vocab.size) and logits.dtype == jnp.float32
    tx = optax.adam(1e-2)
    params = variables["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        (loss, _), grads = jax.value_and_grad(method.loss_fn, has_aux=True)(
            params, {}, batch, jax.random.key(0), 0)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    first = None
    for _ in range(100):
        params, opt_state, loss = step(params, opt_state)
        first = float(loss) if first is None else first
    assert float(loss) < 0.25 * first, (first, float(loss))


def test_bad_weights_are_refused():
    from jaxssl.errors import ConfigError
    with pytest.raises(ConfigError, match="gato.weights"):
        make_method(weights=(1.0, 0.0))
    with pytest.raises(ConfigError, match="gato.cross_entropy_chunk must be an int >= 0"):
        make_method(cross_entropy_chunk=-1)


def test_chunked_cross_entropy_gives_the_same_loss_and_gradients(gato):
    """gato.cross_entropy_chunk=20 over 48 positions (3 chunks, the last padded): the
    loss and gradients of the whole logits."""
    method, source = gato
    batch = {k: jnp.asarray(v) for k, v in pipeline.example_batch(source, 8).items()}
    params = method.init(jax.random.key(0), batch)["params"]

    def loss_and_grads(m):
        (loss, _), grads = jax.jit(jax.value_and_grad(m.loss_fn, has_aux=True),
                                   static_argnums=4)(params, {}, batch, jax.random.key(1), 0)
        return loss, grads

    whole_loss, whole_grads = loss_and_grads(method)
    chunked_loss, chunked_grads = loss_and_grads(make_method(cross_entropy_chunk=20))
    np.testing.assert_allclose(float(chunked_loss), float(whole_loss), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 chunked_grads, whole_grads)


@pytest.mark.slow  # rolls out 2 x 2 episodes
def test_evaluation_reports_every_trained_task(gato):
    """At initialisation: text loss near ln(vocabulary), captions wrong, returns in range."""
    method, source = gato
    variables = method.init(jax.random.key(0), pipeline.example_batch(source, 2))
    results = method.evaluate(variables, source, get_source("digits", "test"), None, None)
    assert set(results) == {"text/loss", "caption/accuracy", "cartpole/return",
                            "pendulum/return"}
    assert abs(results["text/loss"] - np.log(method.vocab.size)) < 0.5
    assert 0 <= results["caption/accuracy"] <= 0.2
    assert 8 <= results["cartpole/return"] <= 500 and -2000 < results["pendulum/return"] <= 0
