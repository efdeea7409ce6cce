"""The table of language-modelling tasks (`jaxssl.objectives.lm_tasks`)."""

import jax
import ml_collections
import numpy as np
import pytest

from jaxssl.data import tokenizers
from jaxssl.methods.lm import LanguageModelling
from jaxssl.objectives import language, lm_tasks

LENGTH = 17


def rows(batch=4, length=LENGTH, pad_from=None):
    tokens = np.random.RandomState(0).randint(4, 200, (batch, length)).astype(np.int32)
    if pad_from is not None:
        tokens[:, pad_from:] = tokenizers.PAD_ID
    return {"tokens": tokens, "segment_ids": np.ones((batch, length), np.int32),
            "positions": np.tile(np.arange(length), (batch, 1)).astype(np.int32)}


@pytest.mark.parametrize("architecture, objective", sorted(lm_tasks.TASKS))
def test_every_entry_builds_batches_that_fit_its_context(architecture, objective):
    settings = LanguageModelling.default_config()
    task = lm_tasks.build_task(architecture, objective, settings, tokenizers.ByteTokenizer(16))
    inputs, targets, loss_mask, choice = task.model_batch(rows(), jax.random.key(0))
    assert targets.shape == loss_mask.shape and loss_mask.dtype == bool
    assert choice.shape == (4,) and int(choice.max()) < max(len(task.names), 1)
    assert all(v.shape[1] <= task.context_length(LENGTH) for v in inputs.values())


def test_masked_lm_reads_masked_tokens_bidirectionally_and_targets_the_chosen_originals():
    settings = LanguageModelling.default_config()
    task = lm_tasks.build_task("encoder", "mlm", settings, tokenizers.ByteTokenizer(16))
    tokens = rows(batch=64, length=64)["tokens"]   # all ordinary ids: each may be chosen
    inputs, targets, loss_mask, _ = task.model_batch(rows(64, 64), jax.random.key(3))
    inputs, loss_mask = jax.tree.map(np.asarray, (inputs, loss_mask))
    np.testing.assert_array_equal(targets, tokens)
    assert not inputs["autoregressive"].any()
    # 15% of 4,096 tokens chosen (614 expected, 23 one standard deviation); only those
    # change, 80% of them to [MASK].
    assert abs(loss_mask.mean() - settings.mask_rate) < 0.03
    np.testing.assert_array_equal(inputs["tokens"][~loss_mask], tokens[~loss_mask])
    masked = np.mean(inputs["tokens"][loss_mask] == tokenizers.MASK_ID)
    assert abs(masked - 0.8) < 0.07


def test_unknown_pairs_and_bad_rates_are_refused_by_the_table():
    with pytest.raises(ValueError, match="not supported; valid"):
        lm_tasks.task_class("encoder", "causal")
    settings = ml_collections.ConfigDict({"ul2_rates": (0.5, 0.5, 0.5)})
    with pytest.raises(ValueError, match="ul2_rates"):
        lm_tasks.task_class("decoder", "ul2").check_settings(settings)
    span = LanguageModelling.default_config()
    with pytest.raises(ValueError, match="sentinel"):
        lm_tasks.build_task("decoder", "span", span, tokenizers.ByteTokenizer(0))


def test_rows_needing_more_sentinels_than_the_tokenizer_has_are_refused():
    # UL2's X denoiser (density 0.5, mean span 3): 16 spans in 96 tokens, 17 in 100.
    tokenizer = tokenizers.ByteTokenizer(16)
    task = lm_tasks.build_task("encoder_decoder", "ul2", LanguageModelling.default_config(),
                               tokenizer)
    task.check_rows(96, tokenizer)
    with pytest.raises(ValueError, match=r"denoiser X \(noise density 0.5, mean span 3.0\) "
                                         r"makes 17 noise spans in rows of 100 tokens, but the "
                                         r"tokenizer has 16 sentinel ids"):
        task.check_rows(100, tokenizer)


def test_padded_rows_put_no_loss_on_pad_targets():
    tokenizer = tokenizers.ByteTokenizer(16)
    task = lm_tasks.Denoising((language.Denoiser("prefix"), language.Denoiser("masked", 0.15, 3.0)),
                              (0.5, 0.5), tokenizer.sentinel_id(0), padded=True)
    _, targets, loss_mask, _ = task.model_batch(rows(pad_from=9), jax.random.key(1))
    assert not np.any(np.asarray(loss_mask) & (np.asarray(targets) == tokenizers.PAD_ID))
    assert np.asarray(loss_mask).any()
