"""Supervised fine-tuning of a (pretrained) encoder: backbone + linear head, cross-entropy.

The encoder is `config.model`, stored under 'backbone' like every method's
encoder, so a pretraining checkpoint hands it over by path
(`config.finetune.init_from`, see `jaxssl.handoff`); the linear head
('head') starts fresh. Each step trains on one augmented view per labelled
image (`config.augment`; by default crop + flip, `FINETUNE_AUGMENT`).

Modes (`finetune.mode`):
  linear_probe  the encoder is frozen (evaluation mode, no gradient, its
                updates zeroed); only the head trains;
  full          everything trains;
  lp_ft         linear probing for `lp_steps` steps (constant learning rate
                from `lp_base_lr`), then full fine-tuning from the probed head
                with the config's schedule over the remaining steps.
With `full` and `lp_ft`:
  layer_decay     layer-wise learning-rate decay: a parameter of layer l gets
                  the learning rate times layer_decay ** (top - l) (see
                  `layerwise.layer_ids`: embeddings 0, block i -> i + 1, final norm and
                  head top = depth + 1), so block i gets decay ** (depth - i);
  unfreeze_every  gradual unfreezing from the top: layer l is frozen until
                  step start + (top - l) * unfreeze_every (start = lp_steps
                  under lp_ft, else 0); the head is never frozen;
  l2sp            L2-SP: adds l2sp / 2 * ||encoder - pretrained encoder||^2,
                  which replaces weight decay on the encoder (the head keeps
                  `optim.weight_decay`), as in Li et al. 2018;
A frozen parameter's gradient never reaches the optimizer, and its optimizer
state (momenta, Adam's bias-correction count) starts when it starts training
(`optim.train_from`), as a fresh optimizer would; under lp_ft the fine-tuning
stage starts a fresh state for the probed head too.
Evaluation: top-1 / top-5 on the eval split; for each a in `wise_alphas`,
WiSE-FT: the encoder (1 - a) * pretrained + a * fine-tuned (parameters and
batch statistics) with the fine-tuned head, or under lp_ft with the head mixed
the same way from the probed one (kept in the method state at `lp_steps`: the
paper mixes from the zero-shot head); and with `forgetting.name` set,
kNN top-1 of the pretrained and of the current encoder on that data set.

Low-label regimes: `labels_per_class` or `label_fraction` train on a
deterministic class-balanced subset of the train split
(`jaxssl.data.subsets`, seeded by `subset_seed`), which the trainer takes
from `select_train_examples`.

The pretrained encoder is kept in the method state ('pretrained') when L2-SP,
WiSE-FT or the forgetting measure need it. Without `init_from` (training from
scratch) "pretrained" means the encoder at initialisation. The hand-off is
planned and checked from shapes while the trainer validates its input, so a
checkpoint that does not fit stops the run (one clear `HandoffError`) before
anything is written; a run that resumes its own checkpoint does not read it.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxssl import handoff, optim
from jaxssl.errors import ConfigError
from jaxssl.data import augment, subsets
from jaxssl.evaluate import forgetting, wise_ft
from jaxssl.evaluate.classification import top_k_accuracy
from jaxssl.evaluate.representation import extract_features
from jaxssl.methods import base, layerwise
from jaxssl.methods.layerwise import ENCODER
from jaxssl.models import LinearHead, build_backbone

MODES = ("linear_probe", "full", "lp_ft")
PRETRAINED = "pretrained"               # method-state collection: the starting encoder
PROBED_HEAD = "probed_head"             # lp_ft with WiSE-FT: the head as probing left it
METHOD_STATE = (PRETRAINED, PROBED_HEAD)
# Fine-tuning augmentation: random resized crop + flip, no colour changes.
FINETUNE_AUGMENT = dict(crop_scale=(0.35, 1.0), flip_prob=0.5, jitter_prob=0.0,
                        grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)

class Classifier(nn.Module):
    """Encoder features [B, D] -> linear head -> float32 logits [B, num_classes]."""
    backbone: nn.Module
    head: nn.Module

    def encode(self, x: jax.Array, train: bool) -> jax.Array:
        return self.backbone(x, train=train)

    def classify(self, features: jax.Array) -> jax.Array:
        return self.head(features)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.classify(self.encode(x, train))


# ------------------------------------------------------------------ method
class FineTune(base.Method):
    """Fine-tuning on labelled images; see the module docstring."""

    AUGMENTATION = FINETUNE_AUGMENT

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            num_classes=0,          # classes of data.name (required)
            init_from=dict(checkpoint="", subtree="backbone", renames=(), skip=()),
            mode="full",            # linear_probe | full | lp_ft
            lp_steps=0,             # lp_ft: steps of linear probing first
            lp_base_lr=0.0,         # lp_ft: base lr of the probing phase; 0 = optim.base_lr
            layer_decay=1.0,        # layer-wise lr decay; 1 = off
            unfreeze_every=0,       # gradual unfreezing: one more layer every N steps; 0 = off
            l2sp=0.0,               # L2-SP weight; 0 = off
            wise_alphas=(),         # WiSE-FT mixing weights evaluated at each evaluation
            head_init_std=0.0,      # 0 = zero-initialised head
            labels_per_class=0,     # low-label regimes: class-balanced subset of the train split,
            label_fraction=0.0,     # by count per class or by fraction (0 = all labels)
            subset_seed=0,
            forgetting=dict(name="", data_dir="", train_split="train", eval_split="test",
                            max_train_examples=0, max_test_examples=0),
        ))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        _check_settings(config.finetune, config.total_steps)

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.settings = settings = config.finetune
        self.recipe = augment.AugmentRecipe.from_config(config.augment)
        dtype = base.DTYPES[config.compute_dtype]
        self.model = Classifier(
            backbone=build_backbone(config.model, dtype=dtype),
            head=LinearHead(settings.num_classes, init_std=settings.head_init_std, dtype=dtype))
        self.pretrained = handoff.PretrainedParts(
            [handoff.HandoffSpec.from_config(settings.init_from)]
            if settings.init_from.checkpoint else [], model_config=config.model)
        self.keeps_pretrained = bool(settings.l2sp or settings.wise_alphas
                                     or settings.forgetting.name)
        self.keeps_probed_head = settings.mode == "lp_ft" and bool(settings.wise_alphas)

    @functools.cached_property
    def reference(self) -> forgetting.ReferenceSet | None:
        """The forgetting measure's labelled data set, opened when first needed (None
        without `finetune.forgetting.name`)."""
        settings = self.settings.forgetting
        return forgetting.ReferenceSet.from_config(settings) if settings.name else None

    def open_data(self) -> None:
        """Opens the forgetting reference set now, so that missing data stops the run
        before training rather than at its first evaluation."""
        _ = self.reference

    # -------------------------------------------------------------- state
    def init(self, rng: jax.Array, batch: dict) -> dict:
        """Model variables, plus 'pretrained' (a copy of the encoder) when needed.

        With `init_from`, the model's shapes are recorded for the hand-off, which
        the Trainer checks against the checkpoint.
        """
        variables = dict(self.model.init(rng, base.model_view(self.config, batch["image"]),
                                         train=False))
        self.pretrained.expect(variables)
        if self.keeps_pretrained:
            variables[PRETRAINED] = wise_ft.encoder_variables(variables)
        if self.keeps_probed_head:
            variables[PROBED_HEAD] = variables["params"]["head"]
        return variables

    def select_train_examples(self, train_source):
        """The labelled subset of the train split that fine-tuning uses (all by default)."""
        return subsets.labelled_subset(train_source, self.settings.labels_per_class,
                                       self.settings.label_fraction, self.settings.subset_seed)

    def load_pretrained(self, state, shardings, workdir):
        """Swaps the planned pretrained arrays into a fresh state, on its shardings.

        Prints the hand-off report (and writes it to workdir/handoff.txt when
        `workdir` is given). The 'pretrained' copy becomes the loaded encoder.
        """
        variables = self.pretrained.load(state, shardings, workdir)
        if variables is None:
            return state
        if self.keeps_pretrained:
            variables[PRETRAINED] = jax.tree.map(lambda x: x.copy(),
                                                 wise_ft.encoder_variables(variables))
        params, method_state = base.split_variables(variables)
        return state.replace(params=params, method_state=method_state)

    # -------------------------------------------------------------- optimizer
    def learning_rate_schedule(self) -> optax.Schedule:
        """The config's schedule; under lp_ft a constant probing lr first, then the schedule."""
        config, settings = self.config, self.settings
        batch = config.data.batch_size
        if settings.mode != "lp_ft":
            return optim.learning_rate_schedule(config.optim, config.total_steps, batch)
        probe = optim.peak_learning_rate(
            {**config.optim.to_dict(), "base_lr": settings.lp_base_lr or config.optim.base_lr},
            batch)
        full = optim.learning_rate_schedule(config.optim, config.total_steps - settings.lp_steps,
                                            batch)
        return optax.join_schedules([optax.constant_schedule(probe), full], [settings.lp_steps])

    def optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
        settings = self.settings
        schedule = self.learning_rate_schedule()
        staged = settings.mode != "full" or settings.unfreeze_every
        start_steps = self.start_steps if staged else None
        tx = optim.optimizer_with_schedule(self.config.optim, schedule, self.decay_mask(),
                                           start_steps)
        if settings.layer_decay != 1.0:
            tx = optax.chain(tx, optim.scale_updates_per_leaf(self.layer_scales))
        if staged:
            tx = optim.train_from(tx, start_steps)
        return tx, schedule

    def decay_mask(self):
        """The method's weight-decay mask; under L2-SP nothing in the encoder (the penalty
        pulls it towards the pretrained weights, not towards zero; a frozen patch
        projection is inside it)."""
        if self.settings.l2sp:
            return optim.decay_mask_without(ENCODER)
        return super().decay_mask()

    def layer_scales(self, params: Mapping[str, Any]) -> dict:
        """Learning-rate scale of every parameter: layer_decay ** (top - layer id)."""
        return layerwise.layer_decay_scales(params, self.settings.layer_decay)

    def open_steps(self, params: Mapping[str, Any]) -> dict:
        """First step at which each parameter may change (head 0; see the module docstring)."""
        settings = self.settings
        start = {"linear_probe": optim.NEVER, "lp_ft": settings.lp_steps, "full": 0}[settings.mode]
        return layerwise.open_steps(params, start, settings.unfreeze_every)

    def start_steps(self, count: jax.Array, params: Mapping[str, Any]) -> Any:
        """The step at which each parameter's optimizer state last started (`optim.train_from`):
        its open step; under lp_ft, from lp_steps on, at least lp_steps, so fine-tuning
        starts a fresh optimizer for the probed head too, as LP-FT's second stage does."""
        restart = self.settings.lp_steps if self.settings.mode == "lp_ft" else 0
        return jax.tree.map(
            lambda s: jnp.where(count >= restart, jnp.maximum(s, restart), s).astype(jnp.int32),
            self.open_steps(params))

    # -------------------------------------------------------------- training
    def _views(self, rng: jax.Array, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> one augmented view per image [B, S, S, C] in [-1, 1]."""
        size = base.view_size(self.config, images)
        return base.to_model_range(augment.augment_batch(rng, augment.to_float(images),
                                                         self.recipe, size))

    def _train_logits(self, params, state, views, rng, step):
        """(logits [B, C], new state): frozen encoder while probing, else trained."""
        stats = {c: v for c, v in state.items() if c not in METHOD_STATE}

        def probe(_):
            features = self.model.apply({"params": params, **stats}, views, train=False,
                                        method=Classifier.encode)
            logits = self.model.apply({"params": params}, jax.lax.stop_gradient(features),
                                      method=Classifier.classify)
            return logits, stats

        def full(_):
            return self.model.apply({"params": params, **stats}, views, train=True,
                                    mutable=list(stats), rngs={"dropout": rng})

        mode = self.settings.mode
        if mode == "linear_probe":
            logits, new_stats = probe(None)
        elif mode == "full":
            logits, new_stats = full(None)
        else:
            logits, new_stats = jax.lax.cond(step < self.settings.lp_steps, probe, full, None)
        return logits, {**state, **new_stats}

    def loss_fn(self, params, state, batch, rng, step):
        view_rng, dropout_rng = jax.random.split(rng)
        views = self._views(view_rng, batch["image"])
        logits, new_state = self._train_logits(params, state, views, dropout_rng, step)
        labels = batch["label"]
        cross_entropy = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        metrics = {"cross_entropy": cross_entropy,
                   "train_top1": jnp.mean(jnp.argmax(logits, -1) == labels)}
        loss = cross_entropy
        if self.settings.l2sp:
            penalty = optim.l2sp_penalty(params[ENCODER], state[PRETRAINED]["params"],
                                         self.settings.l2sp)
            metrics["l2sp_penalty"] = penalty
            loss = loss + penalty
        if self.keeps_probed_head:   # at step lp_steps the head has had every probing update
            new_state[PROBED_HEAD] = jax.tree.map(
                lambda head, kept: jnp.where(step <= self.settings.lp_steps, head, kept),
                params["head"], state[PROBED_HEAD])
        return loss, ({**metrics, "loss": loss}, new_state)

    # ------------------------------------------------------------ evaluation
    def features(self, variables: dict, images: jax.Array) -> jax.Array:
        """Encoder features float32 [B, D] of uint8 images [B, H, W, C], evaluation mode."""
        x = base.model_view(self.config, images)
        return self.model.apply(_model_variables(variables), x, train=False,
                                method=Classifier.encode).astype(jnp.float32)

    def logits(self, variables: dict, images: jax.Array) -> jax.Array:
        """Class logits float32 [B, num_classes] of uint8 images [B, H, W, C], evaluation mode."""
        x = base.model_view(self.config, images)
        return self.model.apply(_model_variables(variables), x, train=False)

    def eval_step(self, variables: dict, batch: dict, rng: jax.Array) -> jax.Array:
        """`logits` of batch['image']: float32 [B, classes]."""
        del rng
        return self.logits(variables, batch["image"])

    def eval_logits(self, variables, source, mesh, eval_config) -> tuple[np.ndarray, np.ndarray]:
        """(logits float32 [N, C], labels [N]) over the first eval.max_test_examples of `source`."""
        return extract_features(self.jitted("logits", mesh), variables, source, mesh,
                                eval_config["batch_size"], eval_config["max_test_examples"])

    def evaluate(self, variables, train_source, eval_source, mesh, eval_config) -> dict[str, float]:
        """Fractions in [0, 1]: 'top1', 'top5' on the eval split; per WiSE-FT alpha a,
        'wise<a>_top1'; with a forgetting data set, its kNN top-1 'forgetting_knn_before'
        (the pretrained encoder), 'forgetting_knn_after' and 'forgetting_knn_wise<a>'."""
        del train_source
        features = self.jitted("features", mesh)
        results = self._accuracy(variables, eval_source, mesh, eval_config)
        pretrained = variables.get(PRETRAINED)
        if self.reference is not None:
            measure = forgetting.forgetting(features, wise_ft.with_encoder(variables, pretrained),
                                            variables, self.reference, mesh, eval_config)
            results["forgetting_knn_before"] = measure["knn_before"]
            results["forgetting_knn_after"] = measure["knn_after"]

        def wise_scores(mixed):
            scores = {"top1": self._accuracy(mixed, eval_source, mesh, eval_config)["top1"]}
            if self.reference is not None:
                scores["knn"] = forgetting.knn_top1(features, mixed, self.reference, mesh,
                                                    eval_config)
            return scores

        probed = {"head": variables[PROBED_HEAD]} if PROBED_HEAD in variables else None
        wise = wise_ft.evaluate_wise_ft(wise_scores, variables, pretrained,
                                        self.settings.wise_alphas, start_params=probed)
        for alpha, scores in wise.items():
            results[f"wise{alpha:g}_top1"] = scores["top1"]
            if "knn" in scores:
                results[f"forgetting_knn_wise{alpha:g}"] = scores["knn"]
        return results

    def _accuracy(self, variables, source, mesh, eval_config) -> dict[str, float]:
        """top1 and top5 in [0, 1] on the first eval.max_test_examples of `source`."""
        logits, labels = self.eval_logits(variables, source, mesh, eval_config)
        return {f"top{k}": top_k_accuracy(logits, labels, k) for k in (1, 5)}


def _model_variables(variables: Mapping[str, Any]) -> dict:
    """The collections the model itself reads (without the 'pretrained' copy)."""
    return {c: v for c, v in variables.items() if c not in METHOD_STATE}


def _check_settings(settings: ml_collections.ConfigDict, total_steps: int) -> None:
    """ConfigError for fine-tuning settings that cannot work together."""
    if settings.num_classes < 1:
        raise ConfigError("config key 'finetune.num_classes' must be set to the number of classes")
    if settings.mode not in MODES:
        raise ConfigError(
            f"config key 'finetune.mode' must be one of {MODES}, got {settings.mode!r}")
    if settings.mode == "lp_ft" and not 0 < settings.lp_steps < total_steps:
        raise ConfigError(f"finetune.mode='lp_ft' needs 0 < finetune.lp_steps < total_steps="
                          f"{total_steps}, got {settings.lp_steps}")
    if settings.mode == "linear_probe" and (settings.layer_decay != 1.0 or settings.unfreeze_every
                                            or settings.l2sp or settings.wise_alphas):
        raise ConfigError("finetune.mode='linear_probe' freezes the encoder: layer_decay, "
                          "unfreeze_every, l2sp and wise_alphas do not apply")
    if not 0.0 < settings.layer_decay <= 1.0 or settings.unfreeze_every < 0 or settings.l2sp < 0:
        raise ConfigError("finetune.layer_decay must be in (0, 1], unfreeze_every and l2sp >= 0")
    try:
        subsets.check_subset_settings(settings.labels_per_class, settings.label_fraction)
    except ValueError as error:
        raise ConfigError(f"finetune: {error}") from None
