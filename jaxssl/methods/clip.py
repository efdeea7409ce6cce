"""CLIP (Radford et al. 2021) and SigLIP (Zhai et al. 2023): image-text contrastive pretraining.

Towers:
  image  the config's ViT (`model`, stored under 'backbone' like every
         method's encoder), pooled output [B, Dv] -> 'image_projection'
         (linear, no bias) -> [B, E];
  text   a Transformer encoder (`Embedder` + `TransformerStack` of
         `jaxssl.models.transformer`) over byte tokens [B, L]: bidirectional,
         or causal with `text_causal` (CLIP's choice); the output is the
         hidden state at the EOS token, i.e. the last non-padding token
         [B, Dt] -> 'text_projection' (linear, no bias) -> [B, E].
E = `embed_dim`. The losses normalise the embeddings themselves.

Learnable scalars: CLIP 'logit_scale' (init log(1/0.07), clamped at log 100
after each optimizer step, as OpenAI's code clamps it: `optim.cap_parameters`); SigLIP 'log_t' (init log 10) and 'bias' (init -10). They
are 0-d, so weight decay (kernels and embedding tables only) leaves them alone.

Data: a batch with 'tokens' int32 [B, L] (a caption dataset such as
'tfds_captions:coco_captions', see `jaxssl.data.captions`) uses those
captions; otherwise each image is captioned from its 'label' with
`caption_template` and `class_names` (default: the built-in names of
`data.name`). Those captions are SYNTHETIC pairs that only carry the label.

Sharding: when the step is traced with a mesh in context (set by the
Trainer) whose batch axes ('data', 'fsdp') split the batch, the loss is the
`*_sharded` variant (`base.batch_sharded_loss`): no device holds the full
B x B logits, only its [B/S, B] block.

Metrics: 'loss', 'logit_scale' (CLIP: exp of the scale) or
'temperature' and 'bias' (SigLIP: t = exp(log_t) and b), 'i2t_top1' (fraction
of images whose most similar caption in the batch is their own; an equal
caption counts). Evaluation (the `evaluate` hook): retrieval recall@1/@5 in
both directions over the eval split (`max_test_examples`) and, with class
names, zero-shot accuracy from the class prompts (see
`jaxssl.evaluate.zero_shot`).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxssl import optim
from jaxssl.data import captions, tokenizers
from jaxssl.evaluate import zero_shot
from jaxssl.evaluate.representation import gather_split
from jaxssl.errors import ConfigError, DataError
from jaxssl.methods import base
from jaxssl.models import build_backbone
from jaxssl.models.layers import LAYER_NORM_EPSILON, dense
from jaxssl.models.transformer import Embedder, TransformerStack, block_mask
from jaxssl.objectives import contrastive


TOKENIZER = tokenizers.ByteTokenizer(num_sentinels=0)


TEXT_POOLING = ("last", "argmax", "eos", "final")


class TextEncoder(nn.Module):
    """Byte tokens [B, L] (PAD = 0 after the EOS) -> float32 [B, hidden] at the last non-PAD token.

    Options for imported CLIP text towers (`jaxssl.interop.clip`): `pooling`
    'argmax' takes the position of the largest token id (OpenAI CLIP's EOT),
    'eos' the first `eos_id`, 'final' the last position whatever the token
    (SigLIP's, whose text is padded to full length); `mask_padding` False lets every token attend
    (within the causal mask) whatever its id; `layer_norm_epsilon`,
    `activation`, `scan_layers`, `remat` and `attention_impl` as in `TransformerStack`.
    """
    vocab_size: int
    max_length: int
    hidden: int
    depth: int
    num_heads: int
    mlp_dim: int
    causal: bool = False
    dtype: Any = jnp.float32
    pooling: str = "last"
    eos_id: int = 0
    mask_padding: bool = True
    layer_norm_epsilon: float = LAYER_NORM_EPSILON
    activation: str = "gelu"
    scan_layers: bool = False
    remat: str = "none"
    attention_impl: Optional[str] = None

    @nn.compact
    def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
        if self.pooling not in TEXT_POOLING:
            raise ValueError(f"unknown pooling {self.pooling!r}; valid: {TEXT_POOLING}")
        not_padding = (tokens != tokenizers.PAD_ID).astype(jnp.int32)
        segment_ids = not_padding if self.mask_padding else jnp.ones_like(not_padding)
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
        embedder = Embedder(self.vocab_size, self.hidden, self.max_length, dtype=self.dtype,
                            name="embedder")
        mask = block_mask(self.attention_impl, segment_ids, segment_ids,
                          jnp.full(tokens.shape, self.causal))
        x = TransformerStack(self.depth, self.num_heads, self.mlp_dim, dtype=self.dtype,
                             attention_impl=self.attention_impl,
                             layer_norm_epsilon=self.layer_norm_epsilon,
                             activation=self.activation, scan_layers=self.scan_layers,
                             remat=self.remat, name="stack")(embedder.embed(tokens, positions), mask, positions,
                                           not train)
        if self.pooling == "argmax":
            last = jnp.argmax(tokens, axis=1)
        elif self.pooling == "eos":
            last = jnp.argmax(tokens == self.eos_id, axis=1)
        elif self.pooling == "final":
            last = jnp.full(tokens.shape[:1], tokens.shape[1] - 1)
        else:
            last = jnp.maximum(jnp.sum(not_padding, axis=1) - 1, 0)
        return x[jnp.arange(tokens.shape[0]), last].astype(jnp.float32)


class TwoTower(nn.Module):
    """Images [B, H, W, C] and tokens [B, L] -> (image, text) embeddings, float32 [B, E] each.

    `scalars` names the learnable 0-d loss parameters and their initial values.
    `text_projection_bias` gives 'text_projection' a bias (SigLIP's text head).
    """
    backbone: nn.Module
    text_tower: TextEncoder
    embed_dim: int
    scalars: tuple[tuple[str, float], ...]
    dtype: Any = jnp.float32
    text_projection_bias: bool = False

    def setup(self):
        projection = lambda name, bias=False: dense(self.embed_dim, ("embed", "mlp"),
                                                    self.dtype, name, use_bias=bias)
        self.image_projection = projection("image_projection")
        self.text_projection = projection("text_projection", self.text_projection_bias)
        self.loss_scalars = {name: self.param(name, nn.initializers.constant(value), ())
                             for name, value in self.scalars}

    def embed_images(self, images: jax.Array, train: bool) -> jax.Array:
        return self.image_projection(self.backbone(images, train=train)).astype(jnp.float32)

    def embed_texts(self, tokens: jax.Array, train: bool) -> jax.Array:
        return self.text_projection(self.text_tower(tokens, train)).astype(jnp.float32)

    def __call__(self, images, tokens, train: bool):
        return self.embed_images(images, train), self.embed_texts(tokens, train), self.loss_scalars


class CLIP(base.Method):
    """CLIP: two towers and `contrastive.clip_loss` (config section `clip`)."""

    name = "clip"
    loss_scalars = (("logit_scale", math.log(1 / 0.07)),)
    scalar_caps = {"logit_scale": contrastive.MAX_CLIP_LOGIT_SCALE}

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            embed_dim=128,                        # shared image-text space E
            text_hidden=128,
            text_depth=2,
            text_heads=4,
            mlp_ratio=4.0,
            text_length=32,                       # tokens per caption incl. EOS
            text_causal=False,                    # True: causal text encoder (CLIP)
            scan_layers=False,    # the text tower's blocks as one nn.scan (see lm.scan_layers)
            remat="none",         # the text tower's: none | full | dots (see lm.remat)
            text_attention_impl="",  # the text tower's attention: see lm.attention_impl
            caption_template="a photo of a {}.",  # SYNTHETIC captions from labels
            class_names=(),                       # () = the built-in names of data.name
        ))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        base.check_vit_config(config)
        base.check_remat(f"{config.method}.remat", config[config.method].remat)
        if (_class_names(config) is None
                and not captions.is_caption_dataset(config.data.name)):
            raise ConfigError(
                f"method {config.method!r} on data.name={config.data.name!r} needs captions: "
                f"give {config.method}.class_names (one per label) or a 'tfds_captions:NAME' "
                f"dataset")
        try:
            _prompt_table(config)
        except ValueError as error:  # a class caption longer than text_length
            raise ConfigError(f"{config.method}: {error}") from None

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        section = config[self.name]
        self.tokenizer = TOKENIZER
        self.class_names = _class_names(config)
        table = _prompt_table(config)
        self.prompts = None if table is None else jnp.asarray(table)
        dtype = base.DTYPES[config.compute_dtype]
        text_tower = TextEncoder(
            vocab_size=self.tokenizer.vocab_size, max_length=section.text_length,
            hidden=section.text_hidden, depth=section.text_depth, num_heads=section.text_heads,
            mlp_dim=int(round(section.text_hidden * section.mlp_ratio)),
            causal=section.text_causal, dtype=dtype, scan_layers=section.scan_layers,
            remat=section.remat, attention_impl=section.text_attention_impl or None)
        self.model = TwoTower(build_backbone(config.model, dtype=dtype), text_tower,
                              section.embed_dim, self.loss_scalars, dtype)

    def _inputs(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        """(images float32 [B, S, S, C] in [-1, 1], caption tokens int32 [B, L])."""
        if "tokens" in batch:
            tokens = batch["tokens"]
            length = self.config[self.name].text_length
            if tokens.shape[1] > length:
                raise DataError(f"captions of {tokens.shape[1]} tokens are longer than "
                                 f"{self.name}.text_length={length}")
        else:
            tokens = self.prompts[batch["label"]]
        images = base.model_view(self.config, batch["image"])
        return images, tokens

    def init(self, rng: jax.Array, batch: dict) -> dict:
        """Variables for the example `batch` (numpy); DataError if a label has no class name."""
        if "tokens" not in batch and self.prompts is not None:
            top = int(np.max(batch["label"]))
            if top >= len(self.class_names):
                raise DataError(f"{self.name}.class_names has {len(self.class_names)} names, "
                                 f"the data has label {top}")
        return self.model.init(rng, *self._inputs(batch), train=False)

    def optimizer(self) -> tuple[optax.GradientTransformation, optax.Schedule]:
        """The base optimizer with `scalar_caps` applied after each step."""
        tx, schedule = super().optimizer()
        return optim.cap_parameters(tx, self.scalar_caps), schedule

    def loss(self, img, txt, scalars) -> jax.Array:
        """`clip_loss`, sharded over the batch axes of the mesh in context when they split it."""
        return base.batch_sharded_loss(contrastive.clip_loss, contrastive.clip_loss_sharded,
                                       (img, txt), scalars["logit_scale"])

    def scalar_metrics(self, scalars) -> dict:
        return {"logit_scale": jnp.exp(scalars["logit_scale"])}

    def loss_fn(self, params, state, batch, rng, step):
        del step
        images, tokens = self._inputs(batch)
        img, txt, scalars = self.model.apply({"params": params}, images, tokens, train=True,
                                             rngs={"dropout": rng})
        loss = self.loss(img, txt, scalars)
        metrics = {"loss": loss, **self.scalar_metrics(scalars),
                   "i2t_top1": _in_batch_top1(img, txt, tokens)}
        return loss, (metrics, state)

    def features(self, variables: dict, images: jax.Array) -> jax.Array:
        """The ViT's pooled features, float32 [B, Dv] (for kNN / linear probes)."""
        return self.model.backbone.apply({"params": variables["params"]["backbone"]},
                                         base.model_view(self.config, images), train=False)

    def eval_step(self, variables: dict, batch: dict, rng: jax.Array) -> dict:
        """{'image': [B, E], 'text': [B, E]} float32 embeddings, plus 'label' if the batch has one."""
        del rng
        images, tokens = self._inputs(batch)
        img, txt, _ = self.model.apply(variables, images, tokens, train=False)
        return {"image": img, "text": txt, **({"label": batch["label"]} if "label" in batch else {})}

    def evaluate(self, variables, train_source, eval_source, mesh, eval_config) -> dict[str, float]:
        """Retrieval recall@1/@5 both ways over the eval split; zero-shot accuracy with class names."""
        del train_source
        rows = gather_split(jax.jit(self.eval_step), variables, eval_source, mesh,
                            eval_config["batch_size"], eval_config["max_test_examples"])
        results = zero_shot.retrieval_recall(rows["image"], rows["text"], rows.get("label"))
        if "label" in rows and self.prompts is not None:
            prompts = jax.jit(lambda v: self.model.apply(v, self.prompts, False,
                                                         method=TwoTower.embed_texts))(variables)
            results["zero_shot_top1"] = zero_shot.zero_shot_accuracy(
                rows["image"], rows["label"], np.asarray(prompts))
        return results


class SigLIP(CLIP):
    """SigLIP: the same towers and `contrastive.siglip_loss` (config section `siglip`)."""

    name = "siglip"
    loss_scalars = (("log_t", math.log(10.0)), ("bias", -10.0))
    scalar_caps = {}  # SigLIP's temperature is not capped

    def loss(self, img, txt, scalars) -> jax.Array:
        """`siglip_loss`, sharded over the batch axes of the mesh in context when they split it."""
        return base.batch_sharded_loss(contrastive.siglip_loss, contrastive.siglip_loss_sharded,
                                       (img, txt), scalars["log_t"], scalars["bias"])

    def scalar_metrics(self, scalars) -> dict:
        return {"temperature": jnp.exp(scalars["log_t"]), "bias": scalars["bias"]}


def _class_names(config: ml_collections.ConfigDict) -> tuple[str, ...] | None:
    """The method's class names, or the built-in ones of data.name (None if neither)."""
    return tuple(config[config.method].class_names) or captions.CLASS_NAMES.get(config.data.name)


def _prompt_table(config: ml_collections.ConfigDict) -> np.ndarray | None:
    """int32 [num_classes, text_length] caption tokens of the class names (None without names);
    ValueError if one is longer than text_length."""
    names, section = _class_names(config), config[config.method]
    if names is None:
        return None
    return captions.caption_table(TOKENIZER, section.caption_template, names, section.text_length)


def _in_batch_top1(img: jax.Array, txt: jax.Array, tokens: jax.Array) -> jax.Array:
    """Fraction of images [B, E] whose most cosine-similar text [B, E] has their caption tokens."""
    img = img / jnp.linalg.norm(img, axis=-1, keepdims=True)
    txt = txt / jnp.linalg.norm(txt, axis=-1, keepdims=True)
    nearest = jnp.argmax(img @ txt.T, axis=-1)
    return jnp.mean(jnp.all(tokens[nearest] == tokens, axis=-1))
