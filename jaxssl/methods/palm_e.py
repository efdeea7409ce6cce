"""PaLM-E (Driess et al. 2023): a pretrained language model reads "multimodal sentences"
in which image and state placeholders are filled by encoder outputs, and writes text.

Parts (parameter subtrees):

  backbone          the image encoder, a ViT (`config.model`); its tokens [B, N, Dv]
  image_projection  Dense Dv -> D (the LM width): the image placeholders' vectors
  state_encoder     a small MLP, state [B, K, 2] -> [B, K, D]: the vector placeholders'
  lm                the decoder-only LanguageModel, built exactly as method 'lm' builds it
                    from `palm_e.lm` (the 'lm' section of the pretraining run) and the
                    LM's text dataset `palm_e.text_data` (its tokenizer must be 'byte')

Both pretrained parts come through the Orbax hand-off (`jaxssl.handoff`), one
spec each: `palm_e.init_from` (e.g. a SimCLR / MAE run's 'backbone' into
'backbone') and `palm_e.lm_init_from` (an 'lm' run, subtree '' = its whole
model, into 'lm'); the report goes to the console and workdir/handoff.txt.
Empty checkpoints leave a part at its initialisation (tests, ablations).

Data: `jaxssl.data.scenes` ('scenes:...' datasets). The model reads each row
causally (as the LM was trained): position t predicts token t + 1, and the
loss counts only answer tokens (the rows' loss_mask), never image, state or
question positions. With `observe=text` (the text-only baseline) there is no
image and no state placeholder and the model is the LM alone.

Modes: `freeze_lm` trains the encoders and projections only (PaLM-E's frozen-LLM
variant); otherwise the LM trains too (full fine-tuning). `freeze_image_encoder`
keeps the pretrained ViT as loaded (the projection still trains): fine-tuning it
from the first step with freshly initialised parts above it can collapse its
features (`experiments/generalist/README.md`). A frozen part gets no gradient
(stop_gradient: no weight-gradient matmuls) and its updates are zeroed exactly
(`optim.freeze_parts`), so its parameters stay bitwise as loaded. `text_mix` > 0
replaces that fraction of the training rows with rows of the LM's own text
(`palm_e.text_data`'s train split; `jaxssl.data.scenes_with_text`), PaLM-E's way of
keeping the LM's language ability through full fine-tuning; the loss is then the mean
over all target tokens, text and answers, and 'lm_text/loss' reports the text's.

Evaluation: per task, the exact-match accuracy of the greedy answer ('acc/TASK',
'acc/all'; fractions); the answer-token loss; and the LM's own text loss
('text/loss', nats per token, perplexity, bits per character) on the eval split
of `palm_e.text_data`, which shows how much language ability the multimodal
stage costs. A greedy answer is exactly right if and only if, fed the right
answer so far, the argmax at every answer position (EOS included) is the right
token; so the accuracy is computed in one teacher-forced pass (tested against a
decoding loop).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxssl import handoff, optim
from jaxssl.data import scenes, scenes_with_text, text
from jaxssl.data.multimodal import KIND_IMAGE, KIND_VECTOR
from jaxssl.data.sources import get_source
from jaxssl.errors import ConfigError
from jaxssl.evaluate.representation import gather_split
from jaxssl.methods import base
from jaxssl.methods.lm import LanguageModelling
from jaxssl.models import build_backbone
from jaxssl.models.layers import activation, dense
from jaxssl.models.transformer import LanguageModel
from jaxssl.objectives import language, mixture

LM = "lm"  # the language model's parameter subtree


class VectorEncoder(nn.Module):
    """State vectors [B, K, S] -> Dense(hidden) -> GELU -> Dense(width): [B, K, width]."""
    hidden: int
    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = activation(dense(self.hidden, (None, "mlp"), self.dtype, "fc1")(x.astype(self.dtype)),
                       "gelu")
        return dense(self.width, ("mlp", "embed"), self.dtype, "fc2")(y)


class PaLMEModel(nn.Module):
    """Multimodal rows -> logits float32 [B, T, V] of the LM (with targets int [B, T],
    their nll float32 [B, T]).

    __call__(images, state [B, K, 2] or None, tokens, kinds, slots, segment_ids,
             positions (int32 [B, T]), train, targets=None). images, in [-1, 1]: the canvas
    [B, S, S, C], whose ViT tokens fill the image placeholders; with `per_object`
    one image per object [B, K, s, s, C], each filling one placeholder with its
    ViT features (pooled); None for the text-only baseline, whose LM reads the
    tokens alone.
    """
    backbone: nn.Module
    lm: LanguageModel
    state_hidden: int
    per_object: bool = False

    @nn.compact
    def __call__(self, images, state, tokens, kinds, slots, segment_ids, positions, train: bool,
                 targets=None):
        placeholders = None
        if images is not None:
            if self.per_object:
                features = self.backbone(images.reshape((-1,) + images.shape[2:]), train)
                image_tokens = features.reshape(images.shape[:2] + features.shape[1:])
            else:
                image_tokens = self.backbone.encode_tokens(self.backbone.embed_patches(images),
                                                           train)
            tables = {
                KIND_IMAGE: dense(self.lm.hidden, ("embed", "embed"), self.lm.dtype,
                                  "image_projection")(image_tokens),
                KIND_VECTOR: VectorEncoder(self.state_hidden, self.lm.hidden, self.lm.dtype,
                                           name="state_encoder")(state)}
            placeholders = (kinds, slots, tables)
        causal = jnp.ones(tokens.shape, bool)
        return self.lm(tokens, segment_ids, positions, causal, train, placeholders=placeholders,
                       targets=targets)


def lm_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config of the pretraining 'lm' run that PaLM-E's language model comes from:
    its section `palm_e.lm` and text dataset `palm_e.text_data`."""
    lm = ml_collections.ConfigDict(config.to_dict())
    del lm["palm_e"]
    lm.method, lm.lm = "lm", config.palm_e.lm
    lm.data.name, lm.data.data_dir = config.palm_e.text_data, config.palm_e.text_data_dir
    lm.data.eval_split = config.palm_e.text_eval_split
    return lm


class PaLME(base.Method):
    """PaLM-E on digit scenes; see the module docstring."""

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        lm = LanguageModelling.default_config()
        lm.posemb = "rotary"
        return ml_collections.ConfigDict(dict(
            text_data="text:pydoc?length=129&rows=packed&sentinels=0",  # the LM's data
            text_data_dir="",
            text_eval_split="validation",
            lm=lm,                    # the LM's 'lm' section (sizes must match its checkpoint)
            state_hidden=64,          # the state encoder's hidden width
            freeze_lm=False,          # True: train the encoders and projections only
            freeze_image_encoder=False,  # True: the ViT stays as loaded
            text_mix=0.0,             # fraction of training rows that are the LM's own text
            init_from=dict(checkpoint="", subtree="backbone", renames=(), skip=()),
            lm_init_from=dict(checkpoint="", subtree="", renames=(), skip=()),
        ))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        settings = config.palm_e
        if not scenes.is_scenes_dataset(config.data.name):
            raise ConfigError(f"method 'palm_e' needs a scenes dataset (scenes:...), got "
                              f"data.name={config.data.name!r}")
        spec = scenes.parse_scenes_dataset(config.data.name)
        derived = lm_config(config)
        LanguageModelling.check_config(derived)
        text_spec = text.parse_text_dataset(settings.text_data)
        if (settings.lm.architecture, settings.lm.objective) != ("decoder", "causal"):
            raise ConfigError("palm_e.lm must be a decoder-only causal LM "
                              "(architecture='decoder', objective='causal')")
        if text_spec.tokenizer != "byte":
            raise ConfigError(f"palm_e.text_data must use the byte tokenizer (scenes are written "
                              f"in bytes), got tokenizer={text_spec.tokenizer!r}")
        if not 0.0 <= settings.text_mix < 1.0:
            raise ConfigError(f"palm_e.text_mix must be in [0, 1), got {settings.text_mix}")
        if spec.length > text_spec.length - 1:
            raise ConfigError(f"scene rows of {spec.length} tokens exceed the LM's context of "
                              f"{text_spec.length - 1} (palm_e.text_data length - 1)")
        if spec.observe == "text":
            if (settings.init_from.checkpoint or settings.freeze_lm
                    or settings.freeze_image_encoder):
                raise ConfigError("scenes with observe=text have no image: palm_e.init_from, "
                                  "freeze_lm and freeze_image_encoder do not apply (the "
                                  "baseline fine-tunes the LM)")
            return
        base.check_vit_config(config)
        if spec.observe == "objects":
            return  # each object's image is read whole at its cell size, pooled to one token
        size = config.data.image_size or spec.canvas
        tokens = (size // config.model.patch) ** 2 + (config.model.pool == "cls")
        if spec.image_tokens != tokens:
            raise ConfigError(f"the scenes' image_tokens={spec.image_tokens} must equal the ViT's "
                              f"{tokens} tokens ({size} px / patch {config.model.patch})")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        settings = self.settings = config.palm_e
        self.spec = scenes.parse_scenes_dataset(config.data.name)
        self.lm_method = LanguageModelling(lm_config(config))
        self.model = PaLMEModel(build_backbone(config.model, dtype=base.DTYPES[
            config.compute_dtype]), self.lm_method.model, settings.state_hidden,
            per_object=self.spec.observe == "objects")
        self.observes_image = self.spec.observe != "text"
        specs = []
        if settings.init_from.checkpoint:
            specs.append(handoff.HandoffSpec.from_config(settings.init_from))
        if settings.lm_init_from.checkpoint:
            specs.append(handoff.HandoffSpec.from_config(settings.lm_init_from, destination=LM))
        self.pretrained = handoff.PretrainedParts(specs, model_config=config.model)

    # ------------------------------------------------------------ batches
    def _inputs(self, batch: dict) -> tuple[dict, jax.Array, jax.Array]:
        """(model inputs, targets int32 [B, T-1], loss_mask bool [B, T-1]): position t
        predicts token t + 1, counted where token t + 1 is an answer token."""
        observed = {"images": None, "state": None}
        if self.model.per_object:
            objects = batch["objects"]
            flat = objects.reshape((-1,) + objects.shape[2:])
            images = base.prepare_images(flat, flat.shape[1]).reshape(objects.shape)
            observed = {"images": images, "state": batch["state"]}
        elif self.observes_image:
            observed = {"images": base.model_view(self.config, batch["image"]),
                        "state": batch["state"]}
        cut = {k: batch[k][:, :-1] for k in ("tokens", "kinds", "slots", "segment_ids",
                                             "positions")}
        return {**observed, **cut}, batch["tokens"][:, 1:], batch["loss_mask"][:, 1:]

    def logits(self, params, batch: dict, train: bool = False, rng: jax.Array | None = None,
               nll: bool = False):
        """float32 [B, T-1, V] (with `nll`, the targets' nll float32 [B, T-1], computed
        palm_e.lm.cross_entropy_chunk positions at a time), with targets and loss mask
        (see `_inputs`)."""
        inputs, targets, loss_mask = self._inputs(batch)
        rngs = base.dropout_rngs(rng) if train else {}
        outputs = self.model.apply({"params": params}, **inputs, train=train, rngs=rngs,
                                   targets=targets if nll else None)
        return outputs, targets, loss_mask

    # ------------------------------------------------------------- method
    def init(self, rng: jax.Array, batch: dict) -> dict:
        """Variables; their shapes are recorded for the hand-offs, which the Trainer
        checks against the checkpoints."""
        inputs, _, _ = self._inputs(batch)
        variables = self.model.init(rng, **inputs, train=False)
        self.pretrained.expect(variables)
        return variables

    def select_train_examples(self, train_source):
        """The scenes, with the LM's text training rows mixed in at `palm_e.text_mix`
        (`jaxssl.data.scenes_with_text`)."""
        if not self.settings.text_mix:
            return train_source
        lm = self.lm_method.config.data
        return scenes_with_text.ScenesWithText(
            train_source, get_source(lm.name, lm.train_split, lm.data_dir),
            self.settings.text_mix, self.config.seed)

    @property
    def frozen_parts(self) -> tuple[str, ...]:
        """The parameter subtrees that do not train."""
        return ((LM,) * self.settings.freeze_lm
                + ("backbone",) * (self.settings.freeze_image_encoder and self.observes_image))

    def loss_fn(self, params, state, batch, rng, step):
        del step
        params = optim.stop_gradient_parts(params, self.frozen_parts)
        token_nll, targets, loss_mask = self.logits(params, batch, train=True, rng=rng, nll=True)
        nll, count, _ = language.loss_sums(token_nll, targets, loss_mask,
                                           self.lm_method.char_lengths)
        tasks = scenes_with_text.TASK_NAMES if self.settings.text_mix else scenes.TASKS
        loss, metrics = mixture.mixture_loss(tasks, batch["task"], nll, count)
        return loss, (metrics, state)

    # ---------------------------------------------------------- evaluation
    def eval_step(self, variables: dict, batch: dict, rng: jax.Array) -> dict[str, jax.Array]:
        """Per example: 'exact' bool [B] (the greedy answer is exactly right), answer-token
        'nll' and 'tokens' float32 [B], 'task' int32 [B]."""
        del rng
        logits, targets, loss_mask = self.logits(variables["params"], batch)
        right = (jnp.argmax(logits, -1) == targets) | ~loss_mask
        nll, count, _ = language.loss_sums(language.token_nll(logits, targets), targets,
                                           loss_mask, self.lm_method.char_lengths)
        return {"exact": jnp.all(right, axis=1), "nll": nll, "tokens": count,
                "task": batch["task"]}

    def evaluate(self, variables, train_source, eval_source, mesh, eval_config) -> dict[str, float]:
        """'acc/TASK' and 'acc/all' (fractions), 'answer_loss' (nats per answer token) on the
        first eval.max_test_examples scenes; 'text/...' the LM's loss on its own text."""
        del train_source
        rows = gather_split(self.jitted("eval_step", mesh), variables, eval_source, mesh,
                            eval_config["batch_size"], eval_config["max_test_examples"])
        results = {f"acc/{name}": float(np.mean(rows["exact"][rows["task"] == t]))
                   for t, name in enumerate(scenes.TASKS) if np.any(rows["task"] == t)}
        results["acc/all"] = float(np.mean(rows["exact"]))
        results["answer_loss"] = float(np.sum(rows["nll"]) / max(np.sum(rows["tokens"]), 1.0))
        text_results = self.text_evaluation(variables, mesh, eval_config)
        return {**results, **{f"text/{k}": v for k, v in text_results.items()}}

    def text_evaluation(self, variables, mesh, eval_config) -> dict[str, float]:
        """The LM's own evaluation (method 'lm') on the eval split of palm_e.text_data."""
        lm = self.lm_method.config
        source = get_source(lm.data.name, lm.data.eval_split, lm.data.data_dir)
        return self.lm_method.evaluate({"params": variables["params"][LM]}, None, source, mesh,
                                       eval_config)
