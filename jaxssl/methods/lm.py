"""Language modelling: decoder-only, encoder-only or encoder-decoder Transformers
trained with a next-token, prefix-LM, masked-token, span-corruption or UL2 objective.

The data are text rows {'tokens', 'segment_ids', 'positions'} int32 [B, L]
from a text dataset (`jaxssl.data.text`); its name fixes the tokenizer and
the row length L, e.g. data.name = 'text:tiny_shakespeare?length=65&tokenizer=char'.

Objectives per architecture (config `lm.architecture`, `lm.objective`):

  decoder          causal  next token on rows[:, :-1] -> rows[:, 1:] (context L - 1)
                   prefix  the same with a random prefix p ~ U[1, L-1] fully visible
                           and loss only on the suffix
                   span    T5 span corruption as a prefix-LM stream (inputs, then targets)
                   ul2     UL2 mixture of denoisers, same stream layout
  encoder          mlm     BERT masking (15%, 80/10/10), loss on the chosen tokens
  encoder_decoder  span    T5: corrupted inputs -> sentinels and their spans
                   prefix  inputs = tokens[:p], targets = tokens[p:]
                   ul2     UL2: R, X, S denoisers with mode tokens, rates lm.ul2_rates

Span-based objectives treat each row as one sequence: use rows='windows'.
Metrics: 'loss' (mean over all target tokens of the batch), 'tokens', and
for UL2 each denoiser's 'NAME/loss' and 'NAME/tokens'. Evaluation (the
`evaluate` hook): the objective's loss, perplexity and bits per character
over the whole eval split, with a fixed noise key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.data import text
from jaxssl.errors import ConfigError
from jaxssl.evaluate.perplexity import NOISE_SEED, evaluate_with_fixed_noise
from jaxssl.methods import base
from jaxssl.models.transformer import EncoderDecoder, LanguageModel
from jaxssl.objectives import language, mixture

TOKENIZER_FILE = "tokenizer.json"
OBJECTIVES = {
    "decoder": ("causal", "prefix", "span", "ul2"),
    "encoder": ("mlm",),
    "encoder_decoder": ("span", "prefix", "ul2"),
}


class TokenLossMethod(base.Method):
    """The train loss and evaluation of methods that predict tokens ('lm', 'pali').

    Subclasses define `denoisers` (the mixture's objectives, may be empty) and
    loss_sums(params, batch, rng, train=False) -> (nll sum, target tokens,
    target characters, objective choice), each [B] per example.
    """

    def loss_fn(self, params, state, batch, rng, step):
        del step
        nll_sum, count, _, choice = self.loss_sums(params, batch, rng, train=True)
        loss, metrics = mixture.mixture_loss([d.name for d in self.denoisers], choice, nll_sum,
                                             count)
        return loss, (metrics, state)

    def assets(self) -> dict[str, str]:
        """A character vocabulary built from the corpus is saved as tokenizer.json."""
        if isinstance(self.tokenizer, text.CharTokenizer):
            return {TOKENIZER_FILE: self.tokenizer.to_json()}
        return {}

    def evaluate(self, variables, train_source, eval_source, mesh, eval_config) -> dict[str, float]:
        """Loss (nats/token), perplexity and bits per character over the whole eval split."""
        del train_source
        return evaluate_with_fixed_noise(self.loss_sums, variables, eval_source, mesh,
                                         eval_config)


class LanguageModelling(TokenLossMethod):
    """A Transformer language model and its objective, from `config.lm`."""

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            architecture="decoder",   # decoder | encoder | encoder_decoder
            objective="causal",       # see OBJECTIVES
            hidden=128,
            depth=4,                  # blocks (the encoder's, for encoder_decoder)
            decoder_depth=0,          # encoder_decoder only; 0 = depth
            heads=4,
            mlp_ratio=4.0,
            dropout=0.0,              # embeddings and each block's branch outputs
            attention_dropout=0.0,    # attention weights (nanoGPT uses `dropout` for both)
            init="xavier",            # block kernels: xavier | gpt2 (nanoGPT's)
            posemb="learned",         # learned | rotary
            tied_embeddings=True,
            attention_impl="",        # '' = jaxssl's XLA attention; 'xla' / 'cudnn' = jax.nn's
            mask_rate=0.15,           # mlm
            noise_density=0.15,       # span
            mean_span=3.0,            # span
            ul2_rates=(0.5, 0.25, 0.25),  # ul2 sampling rates of S, R, X
            per_example_mixture=True,     # ul2: a denoiser per example, else per batch
        ))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        lm = config.lm
        if not text.is_text_dataset(config.data.name):
            raise ConfigError(f"method 'lm' needs a text dataset (text:... or tfds_text:...), "
                              f"got data.name={config.data.name!r}")
        if lm.objective not in OBJECTIVES.get(lm.architecture, ()):
            raise ConfigError(f"lm.architecture={lm.architecture!r} with lm.objective="
                              f"{lm.objective!r} is not supported; valid: {OBJECTIVES}")
        if lm.objective == "ul2":
            try:
                mixture.check_rates(language.ul2_rates(*lm.ul2_rates))
            except (TypeError, ValueError) as error:
                raise ConfigError(f"lm.ul2_rates: {error}") from None

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        lm = config.lm
        self.spec = text.parse_text_dataset(config.data.name)
        self.tokenizer = text.tokenizer_for(config.data.name, config.data.data_dir or None)
        self.architecture, self.objective = lm.architecture, lm.objective
        # Sequence-to-sequence objectives: the denoisers and their sampling rates.
        self.denoisers, self.rates = (), ()
        if self.objective == "ul2":
            self.denoisers = language.ul2_denoisers(text.NLU_ID, text.NLG_ID, text.S2S_ID)
            self.rates = tuple(mixture.check_rates(language.ul2_rates(*lm.ul2_rates)))
        elif self.objective == "span":
            span = language.Denoiser("span", lm.noise_density, lm.mean_span)
            self.denoisers, self.rates = (span,), (1.0,)
        elif self.objective == "prefix":
            self.denoisers, self.rates = (language.Denoiser("prefix"),), (1.0,)
        if self.objective in ("span", "ul2") and self.tokenizer.num_sentinels == 0:
            raise ConfigError(f"lm.objective={self.objective!r} needs sentinel ids: the text "
                             f"dataset sets sentinels=0")
        length = self.spec.length
        sizes = dict(
            vocab_size=self.tokenizer.vocab_size,
            # A decoder sees L - 1 inputs; denoising streams hold inputs and targets.
            max_length=2 * length + 2 if self.objective in ("span", "ul2") else length,
            hidden=lm.hidden, depth=lm.depth, num_heads=lm.heads,
            mlp_dim=int(round(lm.hidden * lm.mlp_ratio)), dropout=lm.dropout,
            attention_dropout=lm.attention_dropout, initialization=lm.init,
            posemb=lm.posemb, tied_embeddings=lm.tied_embeddings,
            dtype=base.DTYPES[config.compute_dtype], attention_impl=lm.attention_impl or None)
        if self.architecture == "encoder_decoder":
            self.model = EncoderDecoder(**sizes, decoder_depth=lm.decoder_depth or lm.depth)
        else:
            self.model = LanguageModel(**sizes)
        self.char_lengths = jnp.asarray(self.tokenizer.char_lengths())

    # ------------------------------------------------------------ batches
    def model_batch(self, batch: dict, rng: jax.Array
                    ) -> tuple[dict, jax.Array, jax.Array, jax.Array]:
        """Text rows -> (model inputs, targets [B, T], loss_mask bool [B, T], choice int32 [B]).

        `choice` is each example's index into `self.denoisers` (0 without a mixture).
        """
        tokens, segment_ids = batch["tokens"], batch["segment_ids"]
        choice_key, noise_key = jax.random.split(rng)
        choice = jnp.zeros(tokens.shape[0], jnp.int32)
        if self.objective in ("causal", "prefix") and self.architecture == "decoder":
            targets, loss_mask = language.next_token_targets(tokens, segment_ids)
            autoregressive = jnp.ones(targets.shape, bool)
            if self.objective == "prefix":
                split = jax.random.randint(noise_key, (tokens.shape[0],), 1, tokens.shape[1])
                autoregressive = language.split_points_to_flags(split, targets.shape[1])
                loss_mask &= language.split_points_to_flags(split - 1, targets.shape[1])
            inputs = dict(tokens=tokens[:, :-1], segment_ids=segment_ids[:, :-1],
                          positions=batch["positions"][:, :-1], autoregressive=autoregressive)
            return inputs, targets, loss_mask, choice
        if self.objective == "mlm":
            masked, chosen = language.mlm_mask(noise_key, tokens, self.tokenizer.regular_ids,
                                               text.MASK_ID, self.config.lm.mask_rate)
            inputs = dict(tokens=masked, segment_ids=segment_ids, positions=batch["positions"],
                          autoregressive=jnp.zeros(tokens.shape, bool))
            return inputs, tokens, chosen, choice
        if len(self.denoisers) > 1:
            choice = mixture.choose(choice_key, self.rates, tokens.shape[0],
                                    self.config.lm.per_example_mixture)
        example = language.mixture_of_denoisers(noise_key, tokens, self.denoisers, choice,
                                                self.tokenizer.sentinel_id(0))
        if self.architecture == "encoder_decoder":
            arrays = language.to_encoder_decoder(example, text.BOS_ID)
        else:
            arrays = language.to_decoder_only(example)
        targets, loss_mask = arrays.pop("targets"), arrays.pop("loss_mask")
        return arrays, targets, loss_mask, choice

    def _logits(self, params, inputs: dict, train: bool, rng: jax.Array | None = None):
        dropping = self.config.lm.dropout > 0 or self.config.lm.attention_dropout > 0
        rngs = {"dropout": rng} if train and dropping else {}
        return self.model.apply({"params": params}, **inputs, train=train, rngs=rngs)

    # ------------------------------------------------------------- method
    def init(self, rng: jax.Array, batch: dict) -> dict:
        inputs, _, _, _ = self.model_batch(batch, jax.random.key(NOISE_SEED))
        return self.model.init(rng, **inputs, train=False)

    def loss_sums(self, params, batch: dict, rng: jax.Array, train: bool = False):
        """Per example: (nll sum, target tokens, target characters, choice), each [B]."""
        noise_key, dropout_key = jax.random.split(rng)
        inputs, targets, loss_mask, choice = self.model_batch(batch, noise_key)
        logits = self._logits(params, inputs, train, dropout_key)
        return (*language.loss_sums(logits, targets, loss_mask, self.char_lengths), choice)

    def next_token_logits(self, params, tokens: jax.Array, length: jax.Array) -> jax.Array:
        """Decoder-only: logits float32 [B, V] for the token after tokens[:, :length]
        (tokens int32 [B, T] left-aligned, T <= the model's context)."""
        if self.architecture != "decoder":
            raise ValueError("sampling needs lm.architecture='decoder'")
        steps = jnp.arange(tokens.shape[1])[None, :]
        valid = jnp.broadcast_to(steps < length, tokens.shape)
        inputs = dict(tokens=tokens, segment_ids=valid.astype(jnp.int32),
                      positions=jnp.where(valid, steps, 0).astype(jnp.int32),
                      autoregressive=jnp.ones(tokens.shape, bool))
        return jnp.take(self._logits(params, inputs, train=False), length - 1, axis=1)
