"""The 'lm' method: sharded == single device, every objective trains, whole-split
perplexity, and sampling from a checkpoint; the 'pali' method on synthetic and
tfds captions."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import config as config_lib, methods, parallel, sample
from jaxssl.data import pipeline, text, tokenizers
from jaxssl.data.sources import get_source
from jaxssl.evaluate.perplexity import perplexity_metrics
from jaxssl.evaluate.representation import eval_batch_key
from jaxssl.logging import read_metrics
from jaxssl.train import Trainer
from sharding_checks import assert_block_sharding
from tfds_testdata import CAPTION_TEXTS, CAPTION_TRAIN

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_lm.py")


def tiny_config(**sections):
    """tests/configs/tiny_lm.py with sections updated: tiny_config(lm={...})."""
    user = config_lib.load_config_file(TINY_CONFIG).to_dict()
    user.update({"checkpoint": {"async_save": False}})
    for key, value in sections.items():
        user[key] = {**user.get(key, {}), **value} if isinstance(value, dict) else value
    return config_lib.resolve(user)


ARCHITECTURES = {
    "decoder": {"architecture": "decoder", "objective": "causal", "depth": 1},
    "encoder_decoder": {"architecture": "encoder_decoder", "objective": "span", "depth": 1},
}
# The fast suite compares one mesh of each kind for the decoder; the rest is marked slow.
FAST_CASES = {("decoder", "data=2,fsdp=2,tensor=2")}
MESHES = {"data=8": {"data": 8, "fsdp": 1, "tensor": 1},
          "data=2,fsdp=4": {"data": 2, "fsdp": 4, "tensor": 1},
          "data=2,fsdp=2,tensor=2": {"data": 2, "fsdp": 2, "tensor": 2}}
# Plain SGD: Adam's first step divides by |gradient| and so magnifies rounding noise in
# gradients that are zero in exact arithmetic (e.g. attention key biases).
SGD = {"name": "sgd", "base_lr": 0.1, "momentum": 0.0, "lr_scaling": "none"}


def one_step(lm, mesh_config, devices, workdir, initial_params=None):
    """(params, metrics, state) after one step; starts from `initial_params` when given
    (placed on this mesh's shardings), which saves compiling the initialisation."""
    trainer = Trainer(tiny_config(lm=lm, mesh=mesh_config, optim=SGD), str(workdir),
                      devices=devices)
    if initial_params is None:
        state = trainer.initial_state()
    else:
        fresh = trainer.abstract_state
        state = jax.device_put(
            fresh.replace(step=np.int32(0), params=initial_params, rng=jax.random.key(0),
                          opt_state=trainer.tx.init(initial_params), method_state={}),
            trainer.state_shardings)
    loader = pipeline.train_loader(trainer.train_source, trainer.config.data.batch_size, 0, 0, 1)
    batch = parallel.host_batch_to_global(next(iter(loader)), trainer.mesh)
    initial = jax.device_get(state.params)
    state, metrics = trainer.compile_train_step()(state, batch)
    return jax.device_get(state.params), jax.device_get(metrics), state, initial


@pytest.fixture(scope="module")
def single_device_steps(tmp_path_factory):
    steps = {}

    def get(architecture):
        if architecture not in steps:
            steps[architecture] = one_step(ARCHITECTURES[architecture],
                                           {"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1],
                                           tmp_path_factory.mktemp(architecture))
        return steps[architecture]

    return get


@pytest.mark.parametrize("architecture, mesh_name", [
    pytest.param(a, m, marks=() if (a, m) in FAST_CASES else pytest.mark.slow)
    for a in ARCHITECTURES for m in MESHES])
def test_sharded_step_matches_single_device(architecture, mesh_name, single_device_steps,
                                            tmp_path):
    mesh = MESHES[mesh_name]
    params_1, metrics_1, _, initial = single_device_steps(architecture)
    params_n, metrics_n, state_n, _ = one_step(ARCHITECTURES[architecture], mesh, None, tmp_path,
                                               initial)
    assert set(metrics_n) == set(metrics_1)
    for key in metrics_1:
        np.testing.assert_allclose(metrics_n[key], metrics_1[key], rtol=2e-5, atol=1e-6, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 params_n, params_1)
    stack = state_n.params["stack" if architecture == "decoder" else "decoder"]
    assert_block_sharding(stack["block0"], mesh, "self_attention",
                          "cross_attention" if architecture == "encoder_decoder" else "")


def test_chunked_cross_entropy_on_a_mesh_matches_whole_logits_on_one_device(
        single_device_steps, tmp_path):
    """lm.cross_entropy_chunk=5 over 16 positions (4 chunks, the last padded), the
    vocabulary split over 'tensor': the same step as the whole logits on one device."""
    params_1, metrics_1, _, initial = single_device_steps("decoder")
    params_n, metrics_n, _, _ = one_step({**ARCHITECTURES["decoder"], "cross_entropy_chunk": 5},
                                         MESHES["data=2,fsdp=2,tensor=2"], None, tmp_path,
                                         initial)
    for key in metrics_1:
        np.testing.assert_allclose(metrics_n[key], metrics_1[key], rtol=2e-5, atol=1e-6, err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 params_n, params_1)


@pytest.mark.parametrize("lm", [
    {"architecture": "encoder", "objective": "mlm"},
    {"architecture": "decoder", "objective": "ul2"},
    pytest.param({"architecture": "decoder", "objective": "prefix"}, marks=pytest.mark.slow),
    pytest.param({"architecture": "encoder_decoder", "objective": "ul2"}, marks=pytest.mark.slow),
])
def test_other_objectives_give_finite_losses_and_gradients(lm, tmp_path):
    lm = {**lm, "depth": 1, "decoder_depth": 1}
    trainer = Trainer(tiny_config(lm=lm), str(tmp_path))
    method, batch = trainer.method, pipeline.example_batch(trainer.train_source, 16)

    @jax.jit
    def init_and_grad(batch):
        params = nn.meta.unbox(method.init(jax.random.key(1), batch)["params"])
        return jax.value_and_grad(method.loss_fn, has_aux=True)(
            params, {}, batch, jax.random.key(0), 0)

    (loss, (metrics, _)), grads = jax.device_get(init_and_grad(batch))
    assert 2.0 < float(loss) < 8.0 and metrics["tokens"] > 0  # about ln(vocab) at init
    assert float(jnp.abs(grads["embedder"]["token_embedding"]).sum()) > 0
    if lm["objective"] == "ul2":  # each denoiser's loss and tokens; together all of them
        names = ("R", "X", "S")
        assert {f"{n}/{k}" for n in names for k in ("loss", "tokens")} <= set(metrics)
        assert sum(metrics[f"{n}/tokens"] for n in names) == metrics["tokens"]
        np.testing.assert_allclose(
            sum(metrics[f"{n}/loss"] * metrics[f"{n}/tokens"] for n in names),
            float(loss) * metrics["tokens"], rtol=1e-5)


def test_unsupported_combinations_and_non_text_data_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="not supported"):
        Trainer(tiny_config(lm={"architecture": "encoder", "objective": "causal"}), str(tmp_path))
    with pytest.raises(ValueError, match="text dataset"):
        Trainer(tiny_config(data={"name": "digits"}), str(tmp_path))


def test_evaluate_covers_the_whole_split_and_matches_a_float64_reference(tmp_path):
    config = tiny_config(eval={"batch_size": 16, "max_test_examples": 37},
                         mesh={"data": 1, "fsdp": 1, "tensor": 1})
    trainer = Trainer(config, str(tmp_path), devices=jax.devices()[:1])
    state = trainer.initial_state()
    results = trainer.evaluate(state)

    rows = pipeline.example_batch(trainer.eval_source, 37)

    @jax.jit  # one program: op by op, every jnp operation would compile on its own
    def logits_targets_mask(params, rows):
        inputs, targets, mask, _ = trainer.method.model_batch(rows, jax.random.key(0))
        return trainer.method.model.apply({"params": params}, **inputs, train=False), targets, mask

    logits, targets, mask = jax.device_get(logits_targets_mask(state.params, rows))
    logits = np.asarray(logits, np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                                 keepdims=True)) \
        - logits.max(-1, keepdims=True)
    nll = -np.take_along_axis(log_probs, np.asarray(targets)[..., None], -1)[..., 0]
    mask = np.asarray(mask)
    assert results["tokens"] == mask.sum() == results["chars"]  # bytes: one character each
    np.testing.assert_allclose(results["loss"], nll[mask].mean(), rtol=1e-5)
    np.testing.assert_allclose(results["perplexity"], np.exp(nll[mask].mean()), rtol=1e-5)
    np.testing.assert_allclose(results["bits_per_char"], nll[mask].sum() / np.log(2) / mask.sum(),
                               rtol=1e-5)


@pytest.mark.parametrize("per_example_mixture", [True, False])
def test_each_evaluation_batch_draws_its_own_noise_the_same_at_every_evaluation(
        per_example_mixture, tmp_path):
    """UL2's denoisers and masks in evaluation: batch i drawn with eval_batch_key(i) (not
    one key for every batch), so that with one denoiser per batch the split is not
    scored by a single denoiser."""
    config = tiny_config(lm={"architecture": "decoder", "objective": "ul2", "depth": 1,
                             "per_example_mixture": per_example_mixture},
                         eval={"batch_size": 16, "max_test_examples": 48},
                         mesh={"data": 1, "fsdp": 1, "tensor": 1})
    trainer = Trainer(config, str(tmp_path), devices=jax.devices()[:1])
    state = trainer.initial_state()
    results = trainer.evaluate(state)
    assert trainer.evaluate(state) == results

    rows = pipeline.example_batch(trainer.eval_source, 48)
    sums = jax.jit(lambda params, batch, rng: trainer.method.loss_sums(params, batch, rng))
    nll, tokens, choices = 0.0, 0.0, []
    for i in range(3):
        batch = {k: v[16 * i:16 * (i + 1)] for k, v in rows.items()}
        batch_nll, batch_tokens, _, choice = jax.device_get(
            sums(state.params, batch, eval_batch_key(i)))
        nll += np.sum(batch_nll, dtype=np.float64)
        tokens += np.sum(batch_tokens, dtype=np.float64)
        choices.append(choice)
    assert results["tokens"] == tokens
    np.testing.assert_allclose(results["loss"], nll / tokens, rtol=1e-6)
    if not per_example_mixture:  # one denoiser per batch, not the same one for all three
        assert all(len(set(c)) == 1 for c in choices) and len({c[0] for c in choices}) > 1


def test_perplexity_metrics_formulas():
    got = perplexity_metrics(nll_sum=345.6, num_tokens=100, num_chars=400)
    np.testing.assert_allclose([got["loss"], got["perplexity"], got["bits_per_char"]],
                               [3.456, np.exp(3.456), 345.6 / np.log(2) / 400])


def test_choose_token_greedy_and_top_k():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(1, 20)), jnp.float32)
    top3 = set(np.argsort(-np.asarray(logits[0]))[:3].tolist())
    assert int(sample.choose_token(jax.random.key(0), logits, 0.0, 0)[0]) == int(jnp.argmax(logits))
    draws = {int(sample.choose_token(jax.random.key(s), logits, 2.0, 3)[0]) for s in range(200)}
    assert draws == top3


def test_generate_slides_a_window_of_the_last_context_tokens():
    seen = []

    def next_is_last_plus_one(window, length):  # logits favouring (last token + 1) mod 10
        seen.append(np.asarray(window[0, :int(length)]).tolist())
        return jax.nn.one_hot(window[:, int(length) - 1:int(length)][:, 0] % 10 + 1, 11)

    out = sample.generate(next_is_last_plus_one, np.array([3]), 6, context=4,
                          temperature=0.0, top_k=0, rng=jax.random.key(0))
    np.testing.assert_array_equal(out, [3, 4, 5, 6, 7, 8, 9])
    assert seen[-1] == [5, 6, 7, 8]


@pytest.mark.slow
def test_sample_command_restores_the_checkpoint_and_prints_text_without_the_data(tmp_path,
                                                                                 capsys):
    """A character-level run sampled after its corpus is gone: the vocabulary comes from
    the workdir's tokenizer.json, the model's shapes from the dataset name."""
    corpus, workdir = tmp_path / "corpus.txt", str(tmp_path / "run")
    letters = np.random.default_rng(0).choice(list("abcdefgh \n"), 4000)
    corpus.write_text("".join(letters))
    name = text.text_dataset_name("file", tokenizer="char", chars=10, length=17, sentinels=0)
    config = tiny_config(total_steps=1, lm={"depth": 1}, eval={"max_test_examples": 16},
                         data={"name": name, "data_dir": str(corpus)})
    trainer = Trainer(config, workdir)
    trainer.run()
    # Greedy: the command prints what the trained parameters (kept in memory) continue with.
    method, params = trainer.method, jax.device_get(trainer.restore().params)
    greedy = sample.generate(jax.jit(lambda w, n: method.next_token_logits(params, w, n)),
                             method.tokenizer.encode("bad "), 5, method.spec.length - 1,
                             temperature=0.0, top_k=0, rng=jax.random.key(0))
    expected = method.tokenizer.decode(greedy)
    assert len(greedy) == len("bad ") + 5 and expected.startswith("bad ")
    corpus.unlink()
    capsys.readouterr()
    assert sample.main([f"--workdir={workdir}", "--prompt=bad ", "--max_new_tokens=5",
                        "--temperature=0"]) == 0
    assert capsys.readouterr().out == expected + "\n"
    assert sample.main([f"--workdir={tmp_path / 'none'}"]) == 2


def test_char_vocabulary_is_saved_with_the_run_and_checked_on_resume(tmp_path):
    from jaxssl.train import save_assets

    config = tiny_config(data={"name": text.text_dataset_name("pydoc", tokenizer="char",
                                                              length=17, sentinels=0)})
    trainer = Trainer(config, str(tmp_path))
    saved = tokenizers.CharTokenizer.from_json(trainer.assets["tokenizer.json"])
    assert saved.chars == trainer.method.tokenizer.chars and len(saved.chars) > 50
    save_assets(trainer.assets, str(tmp_path))
    Trainer(config, str(tmp_path))  # the same vocabulary resumes
    changed = tokenizers.CharTokenizer(saved.chars[1:], num_sentinels=0).to_json()
    (tmp_path / "tokenizer.json").write_text(changed)
    with pytest.raises(ValueError, match="tokenizer.json differs"):
        Trainer(config, str(tmp_path))


# The default key kind's checkpointed key is also resumed by test_train's test_exact_resume.
@pytest.mark.parametrize("prng_impl", [pytest.param("threefry2x32", marks=pytest.mark.slow),
                                       "rbg"])
def test_dropout_run_resumes_exactly_with_either_key_kind(prng_impl, tmp_path):
    """With dropout on, a run stopped after step 2 and resumed logs the same losses as an
    uninterrupted one; the train key (and so the dropout masks) survives the checkpoint."""
    config = tiny_config(lm={"dropout": 0.2, "attention_dropout": 0.2}, prng_impl=prng_impl)
    losses = lambda d: [r["loss"] for r in read_metrics(str(d)) if "loss" in r]
    straight = Trainer(config, str(tmp_path / "straight"))
    straight.run()
    assert str(jax.random.key_impl(straight.restore().rng)) == prng_impl
    Trainer(config, str(tmp_path / "resumed")).run(stop_at=2)
    Trainer(config, str(tmp_path / "resumed")).run()
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    assert len(set(losses(tmp_path / "straight"))) == config.total_steps


def test_a_run_stopped_after_a_periodic_evaluation_returns_no_final_result(tmp_path):
    trainer = Trainer(tiny_config(eval={"every_steps": 2}), str(tmp_path))
    assert trainer.run(stop_at=2) == {}
    assert [r["step"] for r in read_metrics(str(tmp_path)) if "eval/loss" in r] == [2]
    results = Trainer(tiny_config(eval={"every_steps": 2}), str(tmp_path)).run()
    # Resumed to the end: the result is the evaluation of the last step, as logged there.
    evaluations = [r for r in read_metrics(str(tmp_path)) if "eval/loss" in r]
    assert [r["step"] for r in evaluations] == [2, 4]
    assert {f"eval/{k}": v for k, v in results.items()} == {
        k: v for k, v in evaluations[-1].items() if k != "step"}
    assert results["loss"] != evaluations[0]["eval/loss"]


def test_pali_captions_are_space_padded_class_names():
    from jaxssl.methods.pali import caption_table

    tokenizer = tokenizers.ByteTokenizer(num_sentinels=4)
    table = caption_table(tokenizer, "digit {}", ("one", "seven"))
    assert [tokenizer.decode(row) for row in table] == ["digit one  ", "digit seven"]


@pytest.mark.slow
def test_pali_trains_on_both_objectives_and_evaluates(tmp_path):
    config = config_lib.resolve({
        "method": "pali", "total_steps": 2, "data": {"name": "digits", "batch_size": 16},
        "model": {"name": "vit", "hidden": 16, "depth": 1, "heads": 2, "patch": 4},
        "pali": {"text_hidden": 16, "text_depth": 1, "text_heads": 2},
        "optim": {"name": "adamw", "base_lr": 1e-3, "lr_scaling": "none"},
        "eval": {"max_test_examples": 32}, "checkpoint": {"async_save": False},
        "log": {"every_steps": 1, "tensorboard": False, "progress_bar": False}})
    trainer = Trainer(config, str(tmp_path))
    results = trainer.run()
    assert 0 < results["loss"] < 8 and results["chars"] < results["tokens"]  # sentinels: no chars
    rows = [r for r in read_metrics(str(tmp_path)) if "loss" in r and "step" in r]
    assert all({"prefix/loss", "masked/loss", "prefix/tokens", "masked/tokens"} <= set(r)
               for r in rows)


def test_pali_trains_on_tfds_caption_pairs(caption_dir):
    """The real tfds caption path: the batch's captions are the records' own (first
    caption + EOS, not class names), prefix targets stay inside them, a few SGD steps
    give finite per-objective losses."""
    config = config_lib.resolve({
        "method": "pali",
        "data": {"name": "tfds_captions:tiny_captions?image_size=8&length=24",
                 "data_dir": str(caption_dir), "batch_size": CAPTION_TRAIN},
        "model": {"name": "vit", "hidden": 16, "depth": 1, "heads": 2, "patch": 4},
        "pali": {"text_hidden": 16, "text_depth": 1, "text_heads": 2}})
    method = methods.get("pali")(config)
    batch = pipeline.example_batch(get_source(config.data.name, "train", caption_dir),
                                   CAPTION_TRAIN)
    tokenizer = tokenizers.ByteTokenizer(num_sentinels=0)
    tokens = np.asarray(method.caption_tokens(batch))
    assert [tokenizer.decode(row[row != tokenizers.PAD_ID]) for row in tokens] == [
        texts[0] + "[EOS]" for texts in CAPTION_TEXTS[:CAPTION_TRAIN]]
    variables = jax.jit(method.init)(jax.random.key(0), batch)

    @jax.jit
    def sgd_step(params, rng):
        grads, (metrics, _) = jax.grad(method.loss_fn, has_aux=True)(params, {}, batch, rng, 0)
        _, count, _, choice = method.loss_sums(params, batch, rng)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), metrics, count, choice

    params, lengths = variables["params"], np.sum(tokens != tokenizers.PAD_ID, axis=1)
    seen = set()
    for step in range(3):
        params, metrics, count, choice = jax.device_get(sgd_step(params, jax.random.key(step)))
        assert all(np.isfinite(metrics[k]) for k in ("loss", "prefix/loss", "masked/loss"))
        prefix = choice == 0
        assert np.all((count[prefix] >= 1) & (count[prefix] <= lengths[prefix] - 1))
        seen |= {name for name in ("prefix", "masked") if metrics[f"{name}/tokens"] > 0}
    assert seen == {"prefix", "masked"}
