"""The method contract (`Method`) and what every method shares (image preprocessing).

A method wires a model and an objective. Each recipe is one subclass of
`Method`, named after it (`SimCLR`, `MAE`, ...), registered in
`jaxssl.methods`. The Trainer calls every hook below unconditionally; a
hook a recipe does not override does the ordinary thing.

Required (abstract):

  default_config() -> ConfigDict          # the method's own config section
  init(rng, batch) -> variables           # {'params': ..., other collections}
  loss_fn(params, state, batch, rng, step) -> (loss, (metrics, new_state))

Encoder methods also define (the default `evaluate` uses it):

  features(variables, images) -> [B, D] float32 encoder features

A recipe that augments its images with `config.augment` sets the class attribute
`AUGMENTATION` to its paper's recipe: the values that replace the shared default
(SimCLR's, `data.augment.SIMCLR_RECIPE`) before the config's own section is merged.
For the others (None) `config.resolve` refuses a section that differs from the default.

Hooks with defaults:

  check_config(config) -> None
      raises ConfigError for a bad value in the resolved config; called by
      `config.resolve`, so bad values stop a run before anything is written.
      Default: nothing more to check.
  select_train_examples(train_source) -> source
      the part of the train split the run trains on, or records built from it
      (Gato's mixture rows). Default: all of it.
  train_record_spec(source_spec) -> {key: ShapeDtypeStruct}
      the shapes of one record of `select_train_examples`, from those of one
      record of the train split, without reading data: what `jaxssl.aot`
      compiles the train step for. Must match what `select_train_examples`
      yields. Default: the same as the split's.
  open_data() -> None
      opens what the method reads besides the config's train and eval splits,
      which must not be read when the method is built or initialised: the
      Trainer calls it once its state's shapes are known, so missing or
      misfitting data stops a run before anything is written, and `jaxssl.aot`
      never calls it, so it compiles without any data. Default: nothing;
      fine-tuning opens its forgetting reference set. (The hand-offs of
      `self.pretrained` are planned by the Trainer at the same point, reading
      the checkpoints they start from, unless the run resumes its own.)
  optimizer() -> (optax.GradientTransformation, learning-rate schedule)
      Default: `jaxssl.optim`'s, from `config.optim`, with weight decay on the
      parameters `decay_mask()` selects (kernels and embeddings, not a frozen
      patch projection) and the updates of the parameter subtrees named by the
      `frozen_parts` property (default none) zeroed exactly (`optim.freeze_parts`).
  assets() -> {file name: text}
      files the run needs besides its checkpoints (e.g. a character
      vocabulary), written into the workdir when the run starts and compared
      with the workdir's copies when it resumes. Default: none.
  load_pretrained(state, shardings, workdir) -> state
      swaps pretrained weights into the fresh TrainState (fine-tuning), not
      called when resuming from the workdir's own checkpoint. Default: the
      hand-offs of `self.pretrained` (a `handoff.PretrainedParts`, empty
      unless the method fills it and gives it the model's shapes in `init`),
      else `state`.
  evaluate(variables, train_source, eval_source, mesh, eval_config) -> {name: float}
      Default: kNN and linear-probe top-1 of `features` on the eval split.
  eval_step(variables, batch, rng) -> arrays [B, ...]
      the per-batch computation `evaluate` runs on the devices (a batch of the
      eval split in, per-example results out; `rng` is the batch's key for any
      masks or noise, `representation.eval_batch_key`: the same at every
      evaluation); called through `evaluate` and by `jaxssl.aot`, which
      compiles it for a slice, not by the Trainer itself.
      Default: `features` of batch['image'].
  write_pictures(variables, batch, path) -> None
      draws a PNG at each evaluation from `batch`, the first eval.num_pictures
      records of the eval split (e.g. MAE reconstructions of batch['image']
      uint8 [n, H, W, C]). Default: none.

`state` holds the non-gradient collections (batch statistics, EMA encoders).
`batch` is a dict of global arrays: 'image' uint8 [B, H, W, C], 'label' int32 [B]
(or whatever the data source's records hold, e.g. tokens for text methods).

A subclass that defines a name close to a hook's (`write_picture`,
`optimiser`) or overrides a hook with other parameters is refused when the
class is created: a misspelt hook must not silently leave the default in place.
"""

from __future__ import annotations

import abc
import difflib
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxssl import handoff, optim, parallel
from jaxssl.errors import ConfigError
from jaxssl.evaluate.representation import evaluate_encoder
from jaxssl.models import VIT_BACKBONE_NAMES

# fold_in(key, i) is the i-th key of split(key, n) (threefry), so the dropout key must be
# folded with a number beyond any split of the step's key: SimCLR splits it into a key per
# view (2 x batch), and a salt of 1488 would make the dropout key one view's key
# from a batch of 745 on; 2**32 - 1 would need a batch of 2**31 images.
_DROPOUT_SALT = 0xFFFF_FFFF
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def view_size(config: ml_collections.ConfigDict, images: jax.Array) -> int:
    """Side of the model input: data.image_size, or the images' own height."""
    return config.data.image_size or images.shape[1]


def model_view(config: ml_collections.ConfigDict, images: jax.Array) -> jax.Array:
    """uint8 [B, H, W, C] -> float32 [B, S, S, C] in [-1, 1]: the unaugmented view of
    `config` (evaluation; CLIP, SigLIP, PaLI and PaLM-E also train on it): the centre
    `data.eval_crop` of each image, resized to `view_size`."""
    return prepare_images(images, view_size(config, images), config.data.eval_crop)


def prepare_images(images: jax.Array, size: int, crop: float = 1.0) -> jax.Array:
    """uint8 [B, H, W, C] -> float32 [B, size, size, C] in [-1, 1], without augmentation:
    the centre `crop` fraction of each side (Resize(256) + CenterCrop(224) of a 256-px
    image is crop 0.875 at size 224), resized to size x size."""
    x = images.astype(jnp.float32) / 255.0
    if crop < 1.0:
        height, width = x.shape[1:3]
        keep_h, keep_w = round(height * crop), round(width * crop)
        top, left = (height - keep_h) // 2, (width - keep_w) // 2
        x = x[:, top:top + keep_h, left:left + keep_w]
    if x.shape[1:3] != (size, size):
        x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), method="bilinear")
    return to_model_range(x)


def to_model_range(x: jax.Array) -> jax.Array:
    """[0, 1] pixels -> [-1, 1], the range every backbone sees."""
    return x * 2.0 - 1.0


def dropout_rngs(rng: jax.Array, stream: int = 0) -> dict:
    """{'dropout': key} for the model's dropout / drop-path, folded out of the step's
    key so that the augmentations drawn from `rng` itself stay as they were.
    Distinct `stream`s give independent masks (e.g. two views, two encoders)."""
    return {"dropout": jax.random.fold_in(jax.random.fold_in(rng, _DROPOUT_SALT), stream)}


def split_variables(variables) -> tuple[dict, dict]:
    """{'params': p, **rest} -> (p, rest)."""
    rest = {k: v for k, v in variables.items() if k != "params"}
    return variables["params"], rest


def batch_sharded_loss(plain, sharded, embeddings: tuple, *scalars) -> jax.Array:
    """plain(*embeddings, *scalars), or its shard_map twin sharded(..., mesh, BATCH_AXES).

    The sharded form (e.g. `contrastive.clip_loss_sharded`: no device holds the
    full B x B logits) is used when the train step is traced with a mesh whose
    batch axes split the embeddings' rows [B, D] (`parallel.context_batch_mesh`).
    """
    mesh = parallel.context_batch_mesh(embeddings[0].shape[0])
    if mesh is None:
        return plain(*embeddings, *scalars)
    return sharded(*embeddings, *scalars, mesh, parallel.BATCH_AXES)



def check_remat(key: str, value: str) -> None:
    """ConfigError unless `value` of config key `key` is a text-Transformer remat setting."""
    from jaxssl.models.transformer import REMAT_POLICIES
    if value not in ("none", *REMAT_POLICIES):
        raise ConfigError(f"{key} must be one of none, {', '.join(REMAT_POLICIES)}; got {value!r}")


def check_chunk(key: str, value: int) -> None:
    """ConfigError unless `value` of config key `key` is a chunk length: an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key} must be an int >= 0 (0: no chunks), got {value!r}")


def check_vit_config(config: ml_collections.ConfigDict, mask_ratio: float | None = None,
                     trains_pooled_features: bool = True) -> None:
    """ConfigError unless `config.model` is a ViT (and 0 <= mask_ratio < 1 when given).

    A method that trains the ViT's tokens and never its pooled features
    (`trains_pooled_features` False: MAE, SimMIM) cannot train a MAP head, so
    model.pool='map' is refused: the head would stay untrained, and uncreated, so that
    evaluating the features would fail after the whole run.
    """
    if config.model.name not in VIT_BACKBONE_NAMES:
        raise ConfigError(f"method '{config.method}' needs a ViT backbone (model.name one of "
                          f"{VIT_BACKBONE_NAMES}), got model.name='{config.model.name}'")
    if not trains_pooled_features and config.model.pool == "map":
        raise ConfigError(f"method '{config.method}' trains the ViT's tokens, not its pooled "
                          "features: model.pool='map' would leave the MAP head untrained; "
                          "use 'gap' or 'cls'")
    if mask_ratio is not None and not 0 <= mask_ratio < 1:
        raise ConfigError(f"{config.method}.mask_ratio must be in [0, 1), got {mask_ratio}")


class Method(abc.ABC):
    """Base class of every recipe; see the module docstring for the contract."""

    # The recipe's default `config.augment` values over SimCLR's, or None when it does
    # not augment its images (see the module docstring).
    AUGMENTATION = None

    # Hooks the Trainer calls, each with a default below.
    HOOKS = ("check_config", "select_train_examples", "train_record_spec", "open_data",
             "optimizer", "assets", "load_pretrained", "evaluate", "eval_step", "write_pictures")
    REQUIRED = ("default_config", "init", "loss_fn")
    # Called by the default `evaluate` and by fine-tuning; text-only methods have none.
    ENCODER = ("features",)
    # Names this similar to a hook's (difflib ratio) are taken for misspellings.
    _MISSPELLING_RATIO = 0.85

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        contract = cls.HOOKS + cls.REQUIRED + cls.ENCODER
        for name, value in vars(cls).items():
            if name.startswith("__"):
                continue
            if name in contract:
                _check_signature(cls, name, value)
                continue
            near = difflib.get_close_matches(name.lstrip("_"), contract, n=1,
                                             cutoff=cls._MISSPELLING_RATIO)
            if near:
                raise TypeError(f"{cls.__name__}.{name} looks like a misspelt method hook "
                                f"'{near[0]}'; rename it (see jaxssl/methods/base.py)")

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self._jitted: dict = {}
        self.pretrained = handoff.PretrainedParts(())

    # ------------------------------------------------------------ required
    @staticmethod
    @abc.abstractmethod
    def default_config() -> ml_collections.ConfigDict:
        """The method's own config section, e.g. `config.simclr`."""

    @abc.abstractmethod
    def init(self, rng: jax.Array, batch: dict) -> dict:
        """Variables {'params': ..., other collections} for the example `batch`."""

    @abc.abstractmethod
    def loss_fn(self, params, state, batch, rng, step):
        """(loss scalar, (metrics {name: scalar}, new state)); see the module docstring."""

    def features(self, variables: dict, images: jax.Array) -> jax.Array:
        """uint8 images [B, H, W, C] -> encoder features float32 [B, D], evaluation mode."""
        raise NotImplementedError(f"{type(self).__name__} has no image encoder features; it "
                                  f"must override `evaluate`")

    # ------------------------------------------------------------- hooks
    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        """Raises ConfigError for a bad value of this method in the resolved `config`."""
        del config

    def select_train_examples(self, train_source):
        """The records of the train split that training reads: all of them."""
        return train_source

    def train_record_spec(self, source_spec: dict) -> dict:
        """{key: ShapeDtypeStruct} of one record of `select_train_examples`, given
        `source_spec`, that of one record of the train split: the same."""
        return source_spec

    def open_data(self) -> None:
        """Opens the data read besides the train and eval splits: none."""

    @property
    def frozen_parts(self) -> tuple[str, ...]:
        """The top-level parameter subtrees that do not train: none."""
        return ()

    def decay_mask(self):
        """params -> bool tree of the parameters that get weight decay: `optim.decay_mask`,
        less a frozen patch projection (`model.frozen_patch_embed`)."""
        if self.config.model.frozen_patch_embed:
            return optim.decay_mask_without("patch_embedding")
        return optim.decay_mask

    def optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
        """(The optimizer of `config.optim` with `decay_mask`, its learning-rate schedule);
        the updates of `frozen_parts` are zeroed exactly."""
        config = self.config
        schedule = optim.learning_rate_schedule(config.optim, config.total_steps,
                                                config.data.batch_size)
        tx = optim.optimizer_with_schedule(config.optim, schedule, self.decay_mask())
        return optim.freeze_parts(tx, self.frozen_parts), schedule

    def assets(self) -> dict[str, str]:
        """Files the run writes into its workdir: none."""
        return {}

    def load_pretrained(self, state, shardings, workdir):
        """The fresh state with the arrays of `self.pretrained` swapped in, on its shardings
        (the hand-off report printed and written to workdir/handoff.txt)."""
        variables = self.pretrained.load(state, shardings, workdir)
        if variables is None:
            return state
        params, method_state = split_variables(variables)
        return state.replace(params=params, method_state=method_state)

    def evaluate(self, variables, train_source, eval_source, mesh, eval_config) -> dict[str, float]:
        """kNN and linear-probe top-1 (fractions) of `features` on the eval split."""
        return evaluate_encoder(self.jitted("features", mesh), variables, train_source,
                                eval_source, mesh, eval_config, train_source.num_classes)

    def eval_step(self, variables: dict, batch: dict, rng: jax.Array):
        """`features` of batch['image'] uint8 [B, H, W, C]: float32 [B, D]."""
        del rng
        return self.features(variables, batch["image"])

    def write_pictures(self, variables, batch: dict, path: str) -> None:
        """Draws nothing."""
        del variables, batch, path

    # ------------------------------------------------------------ helpers
    def jitted(self, name: str, mesh):
        """`jax.jit` of method `name` (variables, images or batch) -> [B, ...] with outputs split
        over the batch axes of `mesh`; compiled once per (name, mesh)."""
        key = (name, mesh)
        if key not in self._jitted:
            self._jitted[key] = jax.jit(getattr(self, name),
                                        out_shardings=parallel.batch_sharding(mesh))
        return self._jitted[key]


def _check_signature(cls: type, name: str, value: Any) -> None:
    """TypeError if `cls` overrides hook `name` with other parameter names than the base."""
    function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
    expected = inspect.signature(getattr(Method, name)).parameters
    found = inspect.signature(function).parameters
    if list(expected) != list(found):
        raise TypeError(f"{cls.__name__}.{name}{inspect.signature(function)} does not match the "
                        f"method hook {name}{inspect.signature(getattr(Method, name))}")
