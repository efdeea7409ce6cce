"""Language modelling: decoder-only, encoder-only or encoder-decoder Transformers
trained with a next-token, prefix-LM, masked-token, span-corruption or UL2 objective.

The data are text rows {'tokens', 'segment_ids', 'positions'} int32 [B, L]
from a text dataset (`jaxssl.data.text`); its name fixes the tokenizer and
the row length L, e.g. data.name = 'text:tiny_shakespeare?length=65&tokenizer=char'.

Objectives per architecture (config `lm.architecture`, `lm.objective`; each
pair is an entry of the table `jaxssl.objectives.lm_tasks.TASKS`):

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

from jaxssl.data import text, tokenizers
from jaxssl.errors import ConfigError
from jaxssl.evaluate.perplexity import evaluate_perplexity
from jaxssl.evaluate.representation import NOISE_SEED
from jaxssl.methods import base
from jaxssl.models.transformer import EncoderDecoder, LanguageModel
from jaxssl.objectives import language, lm_tasks, mixture

TOKENIZER_FILE = "tokenizer.json"


class TokenLossMethod(base.Method):
    """The train loss and evaluation of methods that predict tokens ('lm', 'pali').

    Subclasses define `task` (a `jaxssl.objectives.lm_tasks.Task`; its `names`
    are the mixture's objectives, may be empty) and loss_sums(params, batch,
    rng, train=False) -> (nll sum, target tokens, target characters,
    objective choice), each [B] per example.
    """

    def loss_fn(self, params, state, batch, rng, step):
        del step
        nll_sum, count, _, choice = self.loss_sums(params, batch, rng, train=True)
        loss, metrics = mixture.mixture_loss(self.task.names, choice, nll_sum, count)
        return loss, (metrics, state)

    def assets(self) -> dict[str, str]:
        """A character vocabulary built from the corpus is saved as tokenizer.json."""
        if isinstance(self.tokenizer, tokenizers.CharTokenizer):
            return {TOKENIZER_FILE: self.tokenizer.to_json()}
        return {}

    def evaluate(self, variables, train_source, eval_source, mesh, eval_config) -> dict[str, float]:
        """Loss (nats/token), perplexity and bits per character over the whole eval split
        (eval.max_test_examples of it, unless 0)."""
        del train_source
        return evaluate_perplexity(jax.jit(self.eval_step), variables, eval_source, mesh,
                                   eval_config["batch_size"], eval_config["max_test_examples"])

    def eval_step(self, variables: dict, batch: dict, rng: jax.Array):
        """(nll sum, target tokens, target characters), each float32 [B], the objectives'
        masks and noise drawn with the batch's key `rng`."""
        return tuple(self.loss_sums(variables["params"], batch, rng)[:3])


class LanguageModelling(TokenLossMethod):
    """A Transformer language model and its objective, from `config.lm`."""

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            architecture="decoder",   # decoder | encoder | encoder_decoder
            objective="causal",       # see lm_tasks.TASKS
            hidden=128,
            depth=4,                  # blocks (the encoder's, for encoder_decoder)
            decoder_depth=0,          # encoder_decoder only; 0 = depth
            heads=4,
            mlp_ratio=4.0,
            dropout=0.0,              # embeddings and each block's branch outputs
            attention_dropout=0.0,    # attention weights (nanoGPT uses `dropout` for both)
            init="xavier",            # block kernels: xavier | gpt2 (nanoGPT's)
            posemb="learned",         # learned | rotary | relative (T5's bucketed logit bias:
                                      # 32 buckets, logarithmic up to 128 tokens)
            tied_embeddings=True,
            attention_impl="",        # '' = jaxssl's XLA attention; 'xla' / 'cudnn' = jax.nn's;
                                      # 'flash' = jaxssl's fused TPU kernel (models/flash_attention.py)
            scan_layers=False,        # blocks as one nn.scan (params stacked on a 'layers' axis)
            remat="none",             # none | full | dots: recompute block activations (backward)
            use_bias=True,            # False: no biases in the blocks (T5.1.1, PaLM, Llama)
            cross_entropy_chunk=0,    # positions per chunk of the loss's logits (0: all at
                                      # once); bounds a large vocabulary's memory
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
        base.check_remat("lm.remat", lm.remat)
        base.check_chunk("lm.cross_entropy_chunk", lm.cross_entropy_chunk)
        try:
            lm_tasks.task_class(lm.architecture, lm.objective).check_settings(lm)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"lm: {error}") from None

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        lm = config.lm
        self.spec = text.parse_text_dataset(config.data.name)
        self.tokenizer = text.tokenizer_for(config.data.name, config.data.data_dir or None)
        self.architecture = lm.architecture
        try:
            self.task = lm_tasks.build_task(lm.architecture, lm.objective, lm, self.tokenizer)
            self.task.check_rows(self.spec.length, self.tokenizer)
        except ValueError as error:
            raise ConfigError(f"lm.objective={lm.objective!r}: {error}") from None
        sizes = dict(
            vocab_size=self.tokenizer.vocab_size,
            max_length=self.task.context_length(self.spec.length),
            hidden=lm.hidden, depth=lm.depth, num_heads=lm.heads,
            mlp_dim=int(round(lm.hidden * lm.mlp_ratio)), dropout=lm.dropout,
            attention_dropout=lm.attention_dropout, initialization=lm.init,
            posemb=lm.posemb, tied_embeddings=lm.tied_embeddings,
            dtype=base.DTYPES[config.compute_dtype], attention_impl=lm.attention_impl or None,
            scan_layers=lm.scan_layers, remat=lm.remat, use_bias=lm.use_bias,
            cross_entropy_chunk=lm.cross_entropy_chunk)
        if self.architecture == "encoder_decoder":
            self.model = EncoderDecoder(**sizes, decoder_depth=lm.decoder_depth or lm.depth)
        else:
            self.model = LanguageModel(**sizes)
        self.char_lengths = jnp.asarray(self.tokenizer.char_lengths())

    # ------------------------------------------------------------ batches
    def model_batch(self, batch: dict, rng: jax.Array
                    ) -> tuple[dict, jax.Array, jax.Array, jax.Array]:
        """Text rows -> (model inputs, targets [B, T], loss_mask bool [B, T], choice int32 [B]).

        `choice` is each example's index into `self.task.names` (0 without a mixture).
        """
        return self.task.model_batch(batch, rng)

    def _apply(self, params, inputs: dict, train: bool, rng: jax.Array | None = None,
               targets: jax.Array | None = None):
        """The model's logits, or with targets their nll (see LanguageModel)."""
        dropping = self.config.lm.dropout > 0 or self.config.lm.attention_dropout > 0
        rngs = {"dropout": rng} if train and dropping else {}
        return self.model.apply({"params": params}, **inputs, train=train, rngs=rngs,
                                targets=targets)

    # ------------------------------------------------------------- method
    def init(self, rng: jax.Array, batch: dict) -> dict:
        inputs, _, _, _ = self.model_batch(batch, jax.random.key(NOISE_SEED))
        return self.model.init(rng, **inputs, train=False)

    def loss_sums(self, params, batch: dict, rng: jax.Array, train: bool = False):
        """Per example: (nll sum, target tokens, target characters, choice), each [B]."""
        noise_key, dropout_key = jax.random.split(rng)
        inputs, targets, loss_mask, choice = self.model_batch(batch, noise_key)
        nll = self._apply(params, inputs, train, dropout_key, targets)
        return (*language.loss_sums(nll, targets, loss_mask, self.char_lengths), choice)

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
        return jnp.take(self._apply(params, inputs, train=False), length - 1, axis=1)
