"""Language-modelling tasks: what a Transformer reads and predicts, one object per objective.

A task turns text rows {'tokens', 'segment_ids', 'positions'} int32 [B, L]
and a key into one model batch (`model_batch`):

  (model inputs {name: [B, T] array}, targets int32 [B, T],
   loss_mask bool [B, T], choice int32 [B])

where `choice` is each example's index into the task's mixture (`names`,
0 without one). The inputs are the keyword arguments of the architecture's
model (`LanguageModel`, or `EncoderDecoder` for 'encoder_decoder').

`TASKS` maps (architecture, objective name) to the task's class; a method
builds its task with `build_task(architecture, objective, settings,
tokenizer)` from its config section (`config.lm`). The numerics live in
`jaxssl.objectives.language` (pure functions); these objects only choose
and wire them.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.data import tokenizers
from jaxssl.objectives import language, mixture

ModelBatch = tuple[dict, jax.Array, jax.Array, jax.Array]


class Task:
    """The interface of every task; see the module docstring."""

    # Objective names of the mixture, one per `choice` value, for per-objective metrics.
    names: tuple[str, ...] = ()

    @classmethod
    def check_settings(cls, settings: ml_collections.ConfigDict) -> None:
        """ValueError for a bad setting of this task in the method's config section."""
        del settings

    @classmethod
    def from_settings(cls, settings: ml_collections.ConfigDict, architecture: str,
                      tokenizer: tokenizers.Tokenizer) -> "Task":
        """The task of the method's config section, for `architecture` and `tokenizer`."""
        raise NotImplementedError

    def context_length(self, row_length: int) -> int:
        """The longest sequence the model sees for rows of `row_length` tokens."""
        return row_length

    def check_rows(self, row_length: int, tokenizer: tokenizers.Tokenizer) -> None:
        """ValueError if rows of `row_length` tokens need more of the tokenizer's ids than
        it has."""
        del row_length, tokenizer

    def model_batch(self, rows: dict, rng: jax.Array) -> ModelBatch:
        """Text rows + key -> (model inputs, targets [B, T], loss_mask [B, T], choice [B])."""
        raise NotImplementedError


def _no_choice(tokens: jax.Array) -> jax.Array:
    return jnp.zeros(tokens.shape[0], jnp.int32)


@dataclasses.dataclass(frozen=True)
class CausalLM(Task):
    """Decoder: next token on rows[:, :-1] -> rows[:, 1:] (context L - 1)."""

    @classmethod
    def from_settings(cls, settings, architecture, tokenizer):
        del settings, architecture, tokenizer
        return cls()

    def model_batch(self, rows, rng):
        targets, loss_mask = language.next_token_targets(rows["tokens"], rows["segment_ids"])
        return (self._inputs(rows, jnp.ones(targets.shape, bool)), targets, loss_mask,
                _no_choice(rows["tokens"]))

    @staticmethod
    def _inputs(rows: dict, autoregressive: jax.Array) -> dict:
        return dict(tokens=rows["tokens"][:, :-1], segment_ids=rows["segment_ids"][:, :-1],
                    positions=rows["positions"][:, :-1], autoregressive=autoregressive)


@dataclasses.dataclass(frozen=True)
class PrefixLM(CausalLM):
    """Decoder: `CausalLM` with a random prefix p ~ U[1, L-1] of each row fully
    visible and loss only on the targets after it."""
    names = ("prefix",)

    def model_batch(self, rows, rng):
        tokens = rows["tokens"]
        # The key split every task makes; the prefix draws from the noise half.
        _, noise_key = jax.random.split(rng)
        targets, loss_mask = language.next_token_targets(tokens, rows["segment_ids"])
        split = jax.random.randint(noise_key, (tokens.shape[0],), 1, tokens.shape[1])
        autoregressive = language.split_points_to_flags(split, targets.shape[1])
        loss_mask &= language.split_points_to_flags(split - 1, targets.shape[1])
        return self._inputs(rows, autoregressive), targets, loss_mask, _no_choice(tokens)


@dataclasses.dataclass(frozen=True)
class MaskedLM(Task):
    """Encoder: BERT masking (`mask_rate` of the ordinary tokens, 80/10/10), loss on the
    chosen tokens against the originals."""
    mask_rate: float
    regular_ids: tuple[int, int]
    mask_id: int = tokenizers.MASK_ID

    @classmethod
    def from_settings(cls, settings, architecture, tokenizer):
        del architecture
        return cls(settings.mask_rate, tokenizer.regular_ids)

    def model_batch(self, rows, rng):
        tokens = rows["tokens"]
        _, noise_key = jax.random.split(rng)
        masked, chosen = language.mlm_mask(noise_key, tokens, self.regular_ids, self.mask_id,
                                           self.mask_rate)
        inputs = dict(tokens=masked, segment_ids=rows["segment_ids"], positions=rows["positions"],
                      autoregressive=jnp.zeros(tokens.shape, bool))
        return inputs, tokens, chosen, _no_choice(tokens)


@dataclasses.dataclass(frozen=True)
class Denoising(Task):
    """A mixture of sequence-to-sequence denoisers (`language.Denoiser`: span corruption
    or prefix split), drawn per example or per batch with `rates`.

    architecture 'encoder_decoder': corrupted inputs to the encoder, targets to
    the decoder (teacher forcing from BOS); 'decoder': one prefix-LM stream,
    inputs fully visible, then the targets. With `padded`, rows end in PAD
    (e.g. captions): prefix splits fall within the real tokens and PAD
    targets carry no loss; otherwise every token of a row is real. `sentinel_top`
    is the first sentinel id (None without span corruption).
    """
    denoisers: tuple[language.Denoiser, ...]
    rates: tuple[float, ...]
    sentinel_top: int | None
    architecture: str = "decoder"
    per_example: bool = True
    padded: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.denoisers)

    @classmethod
    def mixture(cls, settings: ml_collections.ConfigDict) -> tuple[Sequence, Sequence[float]]:
        """(denoisers, sampling rates) of this objective from the config section."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings, architecture, tokenizer):
        denoisers, rates = cls.mixture(settings)
        noising = any(d.noise_density > 0 for d in denoisers)
        if noising and tokenizer.num_sentinels == 0:
            raise ValueError("span corruption needs sentinel ids: the text dataset sets "
                             "sentinels=0")
        return cls(tuple(denoisers), tuple(rates), tokenizer.sentinel_id(0) if noising else None,
                   architecture, settings.per_example_mixture)

    def context_length(self, row_length):
        # Span corruption streams hold the inputs (sentinels, mode token) and the targets.
        if any(d.noise_density > 0 for d in self.denoisers):
            return 2 * row_length + 2
        return row_length

    def check_rows(self, row_length, tokenizer):
        # Each noise span of a row takes its own sentinel id; past the last one, the ids
        # would be ordinary tokens the model could not tell from text.
        for denoiser in self.denoisers:
            if denoiser.noise_density > 0:
                _, spans = language.span_counts(row_length, denoiser.noise_density,
                                                denoiser.mean_span)
                if spans > tokenizer.num_sentinels:
                    raise ValueError(
                        f"denoiser {denoiser.name} (noise density {denoiser.noise_density}, "
                        f"mean span {denoiser.mean_span}) makes {spans} noise spans in rows "
                        f"of {row_length} tokens, but the tokenizer has "
                        f"{tokenizer.num_sentinels} sentinel ids: give it at least {spans}, "
                        f"or shorter rows")

    def model_batch(self, rows, rng):
        tokens = rows["tokens"]
        choice_key, noise_key = jax.random.split(rng)
        choice = _no_choice(tokens)
        if len(self.denoisers) > 1:
            choice = mixture.choose(choice_key, self.rates, tokens.shape[0], self.per_example)
        lengths = (jnp.sum(tokens != tokenizers.PAD_ID, axis=1, dtype=jnp.int32) if self.padded
                   else None)
        example = language.mixture_of_denoisers(noise_key, tokens, self.denoisers, choice,
                                                self.sentinel_top, lengths)
        return (*self.example_batch(example), choice)

    def example_batch(self, example: language.Seq2Seq
                      ) -> tuple[dict, jax.Array, jax.Array]:
        """Denoising examples -> (model inputs, targets, loss_mask) of the architecture."""
        if self.architecture == "encoder_decoder":
            arrays = language.to_encoder_decoder(example, tokenizers.BOS_ID)
        else:
            arrays = language.to_decoder_only(example)
        targets, loss_mask = arrays.pop("targets"), arrays.pop("loss_mask")
        if self.padded:
            loss_mask &= targets != tokenizers.PAD_ID
        return arrays, targets, loss_mask


class SpanCorruption(Denoising):
    """T5 span corruption (settings noise_density, mean_span) as the only denoiser."""

    @classmethod
    def mixture(cls, settings):
        return (language.Denoiser("span", settings.noise_density, settings.mean_span),), (1.0,)


class PrefixSplit(Denoising):
    """Encoder-decoder prefix LM: inputs = tokens[:p], targets = tokens[p:], p ~ U[1, L-1]."""

    @classmethod
    def mixture(cls, settings):
        return (language.Denoiser("prefix"),), (1.0,)


class UL2(Denoising):
    """UL2: the R, X and S denoisers with mode tokens, sampled with settings.ul2_rates
    (S, R, X)."""

    @classmethod
    def check_settings(cls, settings):
        try:
            mixture.check_rates(language.ul2_rates(*settings.ul2_rates))
        except (TypeError, ValueError) as error:
            raise ValueError(f"ul2_rates: {error}") from None

    @classmethod
    def mixture(cls, settings):
        rates = mixture.check_rates(language.ul2_rates(*settings.ul2_rates))
        return language.ul2_denoisers(tokenizers.NLU_ID, tokenizers.NLG_ID, tokenizers.S2S_ID), tuple(rates)


TASKS: dict[tuple[str, str], type[Task]] = {
    ("decoder", "causal"): CausalLM,
    ("decoder", "prefix"): PrefixLM,
    ("decoder", "span"): SpanCorruption,
    ("decoder", "ul2"): UL2,
    ("encoder", "mlm"): MaskedLM,
    ("encoder_decoder", "span"): SpanCorruption,
    ("encoder_decoder", "prefix"): PrefixSplit,
    ("encoder_decoder", "ul2"): UL2,
}


def task_class(architecture: str, objective: str) -> type[Task]:
    """The entry of `TASKS`; ValueError naming the valid pairs for one that is not there."""
    if (architecture, objective) not in TASKS:
        valid = {}
        for arch, name in TASKS:
            valid.setdefault(arch, []).append(name)
        raise ValueError(f"architecture={architecture!r} with objective={objective!r} is not "
                         f"supported; valid: {valid}")
    return TASKS[architecture, objective]


def build_task(architecture: str, objective: str, settings: ml_collections.ConfigDict,
               tokenizer: tokenizers.Tokenizer) -> Task:
    """The task `TASKS[architecture, objective]` of the config section `settings`."""
    return task_class(architecture, objective).from_settings(settings, architecture, tokenizer)
