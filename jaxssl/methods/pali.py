"""PaLI-X-style image+text pretraining: a ViT's image tokens as the fully visible
prefix of a byte-level text decoder, trained on a mixture of

  'prefix'  prefix completion: image + caption[:p] -> caption[p:], p ~ U[1, L-1];
  'masked'  masked-token completion: image + caption with noise spans replaced by
            sentinels -> the sentinels and their spans (T5 span corruption),

and, for frame questions only, a third:

  'qa'      question answering: images + question -> answer (the prefix split
            after the question, as PaLI-X's VQA tasks are trained),

chosen per example (or per batch) with rates `pali.objective_rates` (two, or
three with 'qa'); the loss and token count of each are logged as 'prefix/...',
'masked/...' and 'qa/...'.

Captions, two kinds (`jaxssl.data.captions`, shared with CLIP/SigLIP):

  real       data.name = 'tfds_captions:NAME?length=L&...' (e.g. coco_captions,
             read through the real tfds path): each record's own caption
             'tokens' int32 [L], its first caption + EOS + PAD. Prefix splits
             fall inside caption + EOS; spans of PAD in masked-token examples
             and PAD targets carry no loss. `pali.class_names` is not used.
  synthetic  any other (labelled) dataset: each image is captioned from its
             class name, `pali.caption_template.format(class name)` (e.g. 'a
             picture of the digit seven'), right-padded with spaces to a
             common length, no EOS. These SYNTHETIC captions, for tests and
             small experiments, only carry the label, and `pali.class_names`
             must name every label of the data.

Frame questions (PaLI-X's several images per example): with `pali.frame_tasks`
(e.g. ('which', 'count')) each example is `pali.num_images` frames drawn from
the batch's labelled images with a question about them and a one-digit answer
("which frame shows seven?", "how many frames show seven?";
`jaxssl.data.frame_questions`), drawn anew from every step's key. The
question + answer row is the text of the same prefix / masked mixture.
Evaluation adds each task's answer accuracy ('NAME/accuracy', greedy = the
argmax of the answer token after the whole question, over 'NAME/examples'
held-out examples) next to its chance level ('NAME/chance').

The ViT is the config's `model` (stored under 'backbone', like every
method's encoder; `pali.init_from` loads a pretrained one through the Orbax
hand-off, e.g. a SimCLR run's); its patch tokens (or, with `pali.pool_images`,
one token per image: its pooled features) are projected to the text width, and with
several images each image's tokens (which keep the ViT's patch positions)
get a learned frame embedding. Two architectures (`pali.architecture`):

  decoder          the image tokens are the fully visible prefix of one text
                   decoder (the denoising inputs fully visible after them,
                   then the targets, causal);
  encoder_decoder  PaLI-X: a bidirectional encoder reads the image tokens and
                   the denoising inputs; a causal decoder with cross-attention
                   writes the targets (`text_depth` encoder blocks,
                   `decoder_depth` decoder blocks).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxssl import handoff, optim
from jaxssl.data import captions, frame_questions, multimodal, tokenizers
from jaxssl.errors import ConfigError
from jaxssl.evaluate.perplexity import split_sums
from jaxssl.evaluate.representation import NOISE_SEED
from jaxssl.methods import base
from jaxssl.methods.lm import TokenLossMethod
from jaxssl.models import build_backbone
from jaxssl.models.transformer import EncoderDecoder, LanguageModel
from jaxssl.models.layers import dense
from jaxssl.objectives import language, lm_tasks, mixture

def caption_table(tokenizer: tokenizers.Tokenizer, template: str, class_names) -> np.ndarray:
    """int32 [num_classes, L]: each class's SYNTHETIC caption (`jaxssl.data.captions`),
    space-padded to the longest, without EOS (the decoder learns every token)."""
    texts = captions.class_captions(template, class_names)
    width = max(len(c) for c in texts)
    return captions.tokenize_captions(tokenizer, [c.ljust(width) for c in texts],
                                      append_eos=False)


def image_tokens(module: nn.Module, images, width: int, dtype, train: bool) -> jax.Array:
    """`module.backbone`'s tokens of each image, projected to `width` ('image_projection'):
    images [B, S, S, C] -> [B, N, width], or several, [B, K, S, S, C] -> [B, K*N, width]
    with `module.num_images` = K learned frame embeddings ('frame_embedding' [K, width])
    added, frame k's to all its N tokens. N: the ViT's patch tokens, or 1 with
    `module.pooled` (the ViT's pooled features, its `pool`)."""
    frames = images.shape[1] if images.ndim == 5 else 1
    if frames != module.num_images:
        raise ValueError(f"{frames} images per example, the model has {module.num_images}")
    flat = images.reshape((-1,) + images.shape[-3:])
    if module.pooled:
        tokens = module.backbone(flat, train)[:, None].astype(dtype)
    else:
        tokens = module.backbone.encode_tokens(module.backbone.embed_patches(flat), train)
    tokens = dense(width, ("embed", "embed"), dtype, "image_projection")(tokens)
    if frames == 1:
        return tokens
    # Unit scale, like the projected ViT features it is added to (at 0.02 it is a 2%
    # perturbation of them, which the text layers must first learn to amplify).
    frame_embedding = module.param(
        "frame_embedding", nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                        (None, "embed")),
        (frames, width), jnp.float32)
    tokens = tokens.reshape((-1, frames) + tokens.shape[1:])
    tokens = tokens + frame_embedding[None, :, None].astype(tokens.dtype)
    return tokens.reshape((tokens.shape[0], -1, width))


class ImagePrefixLM(nn.Module):
    """Image tokens (`image_tokens`) as the prefix of a LanguageModel over text tokens:
    its logits, or with targets their nll (see LanguageModel)."""
    backbone: nn.Module
    decoder: LanguageModel
    num_images: int = 1
    pooled: bool = False

    @nn.compact
    def __call__(self, images, tokens, segment_ids, positions, autoregressive, train: bool,
                 targets=None):
        prefix = image_tokens(self, images, self.decoder.hidden, self.decoder.dtype, train)
        return self.decoder(tokens, segment_ids, positions, autoregressive, train, prefix=prefix,
                            targets=targets)


class ImageEncoderDecoder(nn.Module):
    """PaLI-X: the image tokens (`image_tokens`) then the text inputs, read by the encoder of
    an EncoderDecoder as one bidirectional segment; its decoder writes the targets.

    The image tokens fill image placeholders put before the text. They carry their own
    positions (the ViT's patch positions, frame embeddings), and all take position 0,
    so every one gets the same learned text position embedding added (one offset for
    the image part); the text keeps its positions 0.. as in the decoder-only model.
    Returns decoder logits float32 [B, T_dec, vocab_size], or with targets int [B, T_dec]
    their nll float32 [B, T_dec] (see EncoderDecoder).
    """
    backbone: nn.Module
    text: EncoderDecoder
    num_images: int = 1
    pooled: bool = False

    @nn.compact
    def __call__(self, images, encoder_tokens, encoder_segment_ids, encoder_positions,
                 decoder_tokens, decoder_segment_ids, decoder_positions, train: bool,
                 targets=None):
        table = image_tokens(self, images, self.text.hidden, self.text.dtype, train)
        batch, length = table.shape[:2]
        steps = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        text = jnp.full(encoder_tokens.shape, multimodal.KIND_TEXT, jnp.int32)
        kinds = jnp.concatenate([jnp.full_like(steps, multimodal.KIND_IMAGE), text], axis=1)
        slots = jnp.concatenate([steps, -jnp.ones_like(text)], axis=1)
        return self.text(
            jnp.concatenate([jnp.zeros_like(steps), encoder_tokens], axis=1),
            jnp.concatenate([jnp.ones_like(steps), encoder_segment_ids], axis=1),
            jnp.concatenate([jnp.zeros_like(steps), encoder_positions], axis=1),
            decoder_tokens, decoder_segment_ids, decoder_positions, train,
            encoder_placeholders=(kinds, slots, {multimodal.KIND_IMAGE: table}), targets=targets)


ARCHITECTURES = ("decoder", "encoder_decoder")


class PaLI(TokenLossMethod):
    """PaLI-style prefix-completion + masked-token-completion mixture on captioned images,
    or on frame questions; decoder-only or encoder-decoder.

    Evaluation: caption loss, perplexity and bits per byte over the eval split;
    with frame tasks also each task's answer accuracy and chance level."""

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            caption_template="a picture of the digit {}",
            class_names=captions.DIGIT_NAMES,
            architecture="decoder",   # decoder | encoder_decoder (see the module docstring)
            text_hidden=128,
            text_depth=2,             # blocks (the encoder's, for encoder_decoder)
            decoder_depth=0,          # encoder_decoder only; 0 = text_depth
            text_heads=4,
            mlp_ratio=4.0,
            objective_rates=(0.5, 0.5),  # prefix completion, masked-token completion[, qa]
            noise_density=0.15,
            mean_span=3.0,
            per_example_mixture=True,
            num_sentinels=16,
            num_images=1,             # frames per example (> 1 needs frame_tasks)
            pool_images=False,        # each image as one token (the ViT's pooled features)
            frame_tasks=(),           # () = captions; else of frame_questions.TASKS
            scan_layers=False,        # the decoder's blocks as one nn.scan (see lm.scan_layers)
            remat="none",             # none | full | dots (see lm.remat)
            text_use_bias=True,       # False: no biases in the text blocks (UL2's decoder)
            text_attention_impl="",   # the text blocks' attention: see lm.attention_impl
            cross_entropy_chunk=0,    # see lm.cross_entropy_chunk
            # a pretrained image encoder (e.g. a SimCLR run's 'backbone') through the
            # Orbax hand-off (`jaxssl.handoff`); '' = the ViT starts from scratch
            init_from=dict(checkpoint="", subtree="backbone", renames=(), skip=()),
            # the ViT stays as loaded (PaLI trains with its image encoder frozen); fine-tuning
            # it from the first step under fresh text layers can collapse its features
            freeze_image_encoder=False,
        ))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        pali = config.pali
        base.check_vit_config(config)
        base.check_remat("pali.remat", pali.remat)
        base.check_chunk("pali.cross_entropy_chunk", pali.cross_entropy_chunk)
        try:
            mixture.check_rates(pali.objective_rates)
        except ValueError as error:
            raise ConfigError(f"pali.objective_rates: {error}") from None
        if pali.architecture not in ARCHITECTURES:
            raise ConfigError(f"pali.architecture must be one of {ARCHITECTURES}, got "
                              f"{pali.architecture!r}")
        if len(pali.objective_rates) not in (2, 2 + bool(pali.frame_tasks)):
            raise ConfigError("pali.objective_rates: two rates (prefix, masked)"
                              + (", or three (prefix, masked, qa)" if pali.frame_tasks else
                                 "; a third (qa) needs pali.frame_tasks")
                              + f", got {tuple(pali.objective_rates)}")
        if pali.frame_tasks:
            if captions.is_caption_dataset(config.data.name):
                raise ConfigError("pali.frame_tasks need a labelled image dataset, not "
                                  f"captions ({config.data.name!r})")
            frame_questions.FrameQuestions(tokenizers.ByteTokenizer(0), pali.frame_tasks,
                                           pali.class_names, pali.num_images)
        elif pali.num_images != 1:
            raise ConfigError(f"pali.num_images={pali.num_images} needs pali.frame_tasks "
                              f"(captions describe one image)")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        pali = config.pali
        self.tokenizer = tokenizers.ByteTokenizer(pali.num_sentinels)
        self.captions = self.questions = None
        if pali.frame_tasks:
            self.questions = frame_questions.FrameQuestions(
                self.tokenizer, pali.frame_tasks, pali.class_names, pali.num_images)
            text_length = self.questions.length
        elif captions.is_caption_dataset(config.data.name):
            # each record brings its caption tokens
            text_length = captions.parse_caption_dataset(config.data.name).length
        else:
            self.captions = jnp.asarray(caption_table(self.tokenizer, pali.caption_template,
                                                      pali.class_names))
            text_length = self.captions.shape[1]
        denoisers = (language.Denoiser("prefix"),
                     language.Denoiser("masked", pali.noise_density, pali.mean_span))
        if len(pali.objective_rates) == 3:
            denoisers += (language.Denoiser("qa", split=self.questions.question_length),)
        self.task = lm_tasks.Denoising(
            denoisers=denoisers,
            rates=tuple(mixture.check_rates(pali.objective_rates)),
            sentinel_top=self.tokenizer.sentinel_id(0), architecture=pali.architecture,
            per_example=pali.per_example_mixture, padded=True)
        try:
            self.task.check_rows(text_length, self.tokenizer)
        except ValueError as error:
            raise ConfigError(f"pali: {error} (pali.num_sentinels)") from None
        dtype = base.DTYPES[config.compute_dtype]
        backbone = build_backbone(config.model, dtype=dtype)
        sizes = dict(
            vocab_size=self.tokenizer.vocab_size, max_length=2 * text_length + 2,
            hidden=pali.text_hidden, depth=pali.text_depth, num_heads=pali.text_heads,
            mlp_dim=int(round(pali.text_hidden * pali.mlp_ratio)), dtype=dtype,
            scan_layers=pali.scan_layers, remat=pali.remat, use_bias=pali.text_use_bias,
            attention_impl=pali.text_attention_impl or None,
            cross_entropy_chunk=pali.cross_entropy_chunk)
        if pali.architecture == "encoder_decoder":
            self.model = ImageEncoderDecoder(
                backbone, EncoderDecoder(**sizes,
                                         decoder_depth=pali.decoder_depth or pali.text_depth),
                pali.num_images, pali.pool_images)
        else:
            self.model = ImagePrefixLM(backbone, LanguageModel(**sizes), pali.num_images,
                                       pali.pool_images)
        self.char_lengths = jnp.asarray(self.tokenizer.char_lengths())
        self.pretrained = handoff.PretrainedParts(
            [handoff.HandoffSpec.from_config(pali.init_from)] if pali.init_from.checkpoint
            else [], model_config=config.model)

    def caption_tokens(self, batch: dict) -> jax.Array:
        """int32 [B, L]: the batch's own caption 'tokens' (a tfds caption dataset),
        else the SYNTHETIC captions of its labels."""
        return batch["tokens"] if self.captions is None else self.captions[batch["label"]]

    def _examples(self, batch: dict, rng: jax.Array, task: jax.Array | None = None):
        """(images [B, S, S, C], or [B, K, S, S, C] for frame questions; text rows [B, L];
        the key left for the denoising task). `task` fixes each frame question's task."""
        images = base.model_view(self.config, batch["image"])
        if self.questions is None:
            return images, self.caption_tokens(batch), rng
        frame_key, rng = jax.random.split(rng)
        drawn = self.questions.draw(frame_key, batch["label"], task, batch.get("valid"))
        several = self.questions.num_frames > 1
        frames = jnp.asarray(images)[drawn.indices if several else drawn.indices[:, 0]]
        return frames, drawn.tokens, rng

    def _model_inputs(self, batch: dict, rng: jax.Array):
        """(images, the task's text inputs for the architecture, targets, loss_mask (no
        loss on PAD targets), choice int32 [B])."""
        images, tokens, rng = self._examples(batch, rng)
        inputs, targets, loss_mask, choice = self.task.model_batch({"tokens": tokens}, rng)
        return images, inputs, targets, loss_mask, choice

    def init(self, rng: jax.Array, batch: dict) -> dict:
        images, inputs, _, _, _ = self._model_inputs(batch, jax.random.key(NOISE_SEED))
        variables = self.model.init(rng, images, **inputs, train=False)
        self.pretrained.expect(variables)
        return variables

    @property
    def frozen_parts(self) -> tuple[str, ...]:
        """The parameter subtrees that do not train."""
        return ("backbone",) if self.config.pali.freeze_image_encoder else ()

    def loss_sums(self, params, batch: dict, rng: jax.Array, train: bool = False):
        """Per example: (nll sum, target tokens, target characters, choice), each [B]."""
        params = optim.stop_gradient_parts(params, self.frozen_parts)
        noise_key, dropout_key = jax.random.split(rng)
        images, inputs, targets, loss_mask, choice = self._model_inputs(batch, noise_key)
        nll = self.model.apply({"params": params}, images, **inputs, train=train,
                               rngs={"dropout": dropout_key}, targets=targets)
        return (*language.loss_sums(nll, targets, loss_mask, self.char_lengths), choice)

    def question_batch(self, batch: dict, rng: jax.Array, task: int):
        """Frame question `task` (index into pali.frame_tasks) drawn from the batch with
        `rng`, split after the question: (images [B, K, S, S, C] or [B, S, S, C], model
        text inputs, targets, loss_mask), the loss mask on the answer token alone."""
        tasks = jnp.full(batch["label"].shape, task, jnp.int32)
        images, tokens, _ = self._examples(batch, rng, tasks)
        batch_size, question = tokens.shape[0], self.questions.question_length
        example = language.Seq2Seq(tokens[:, :question], jnp.full(batch_size, question),
                                   tokens[:, question:], jnp.ones(batch_size, jnp.int32))
        return (images, *self.task.example_batch(example))

    def answer_correct(self, params, batch: dict, rng: jax.Array, task: int) -> jax.Array:
        """bool [B]: `question_batch`'s answers right by the argmax after the whole question
        (greedy decoding of the one answer token)."""
        images, inputs, targets, loss_mask = self.question_batch(batch, rng, task)
        logits = self.model.apply({"params": params}, images, **inputs, train=False)
        right = (jnp.argmax(logits, axis=-1) == targets) | ~loss_mask
        return jnp.all(right, axis=1)

    def evaluate(self, variables, train_source, eval_source, mesh, eval_config) -> dict[str, float]:
        """The token-loss metrics; with frame tasks, each task's answer accuracy over the
        eval split (frames drawn with each batch's evaluation key), its examples and chance."""
        metrics = super().evaluate(variables, train_source, eval_source, mesh, eval_config)
        if self.questions is None:
            return metrics
        for index, name in enumerate(self.questions.tasks):
            def sums(v, batch, rng, index=index):
                correct = self.answer_correct(v["params"], batch, rng, index)
                return correct.astype(jnp.float32), jnp.ones(correct.shape, jnp.float32)
            correct, examples = split_sums(jax.jit(sums), variables, eval_source, mesh,
                                           eval_config["batch_size"],
                                           eval_config["max_test_examples"])
            metrics.update({f"{name}/accuracy": correct / max(examples, 1.0),
                            f"{name}/examples": examples,
                            f"{name}/chance": self.questions.chance(name)})
        return metrics

    def features(self, variables: dict, images: jax.Array) -> jax.Array:
        """The ViT's pooled features, float32 [B, D] (for kNN / linear probes)."""
        features = self.model.backbone.apply({"params": variables["params"]["backbone"]},
                                             base.model_view(self.config, images), train=False)
        return features.astype(jnp.float32)
