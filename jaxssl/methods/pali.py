"""PaLI-X-style image+text pretraining: a ViT's image tokens as the fully visible
prefix of a byte-level text decoder, trained on a mixture of

  'prefix'  prefix completion: image + caption[:p] -> caption[p:], p ~ U[1, L-1];
  'masked'  masked-token completion: image + caption with noise spans replaced by
            sentinels -> the sentinels and their spans (T5 span corruption),

chosen per example (or per batch) with rates `pali.objective_rates`; the loss
and token count of each are logged as 'prefix/...' and 'masked/...'.

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

The ViT is the config's `model` (stored under 'backbone', like every
method's encoder); its tokens are projected to the text width.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxssl.data import captions, tokenizers
from jaxssl.errors import ConfigError
from jaxssl.evaluate.perplexity import NOISE_SEED
from jaxssl.methods import base
from jaxssl.methods.lm import TokenLossMethod
from jaxssl.models import build_backbone
from jaxssl.models.transformer import LanguageModel
from jaxssl.models.layers import dense
from jaxssl.objectives import language, lm_tasks, mixture

def caption_table(tokenizer: tokenizers.Tokenizer, template: str, class_names) -> np.ndarray:
    """int32 [num_classes, L]: each class's SYNTHETIC caption (`jaxssl.data.captions`),
    space-padded to the longest, without EOS (the decoder learns every token)."""
    texts = captions.class_captions(template, class_names)
    width = max(len(c) for c in texts)
    return captions.tokenize_captions(tokenizer, [c.ljust(width) for c in texts],
                                      append_eos=False)


class ImagePrefixLM(nn.Module):
    """ViT tokens [B, N, Dv] -> Dense -> prefix of a LanguageModel over caption tokens."""
    backbone: nn.Module
    decoder: LanguageModel

    @nn.compact
    def __call__(self, images, tokens, segment_ids, positions, autoregressive, train: bool):
        image_tokens = self.backbone.encode_tokens(self.backbone.embed_patches(images), train)
        prefix = dense(self.decoder.hidden, ("embed", "embed"), self.decoder.dtype,
                        "image_projection")(image_tokens)
        return self.decoder(tokens, segment_ids, positions, autoregressive, train, prefix=prefix)


class PaLI(TokenLossMethod):
    """PaLI-style prefix-completion + masked-token-completion mixture on captioned images.

    Evaluation: caption loss, perplexity and bits per byte over the eval split."""

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            caption_template="a picture of the digit {}",
            class_names=captions.DIGIT_NAMES,
            text_hidden=128,
            text_depth=2,
            text_heads=4,
            mlp_ratio=4.0,
            objective_rates=(0.5, 0.5),  # prefix completion, masked-token completion
            noise_density=0.15,
            mean_span=3.0,
            per_example_mixture=True,
            num_sentinels=16,
            scan_layers=False,        # the decoder's blocks as one nn.scan (see lm.scan_layers)
            remat="none",             # none | full | dots (see lm.remat)
        ))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        base.check_vit_config(config)
        base.check_remat("pali.remat", config.pali.remat)
        try:
            mixture.check_rates(config.pali.objective_rates)
        except ValueError as error:
            raise ConfigError(f"pali.objective_rates: {error}") from None

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        pali = config.pali
        self.tokenizer = tokenizers.ByteTokenizer(pali.num_sentinels)
        if captions.is_caption_dataset(config.data.name):
            self.captions = None  # each record brings its caption tokens
            caption_length = captions.parse_caption_dataset(config.data.name).length
        else:
            self.captions = jnp.asarray(caption_table(self.tokenizer, pali.caption_template,
                                                      pali.class_names))
            caption_length = self.captions.shape[1]
        self.task = lm_tasks.Denoising(
            denoisers=(language.Denoiser("prefix"),
                       language.Denoiser("masked", pali.noise_density, pali.mean_span)),
            rates=tuple(mixture.check_rates(pali.objective_rates)),
            sentinel_top=self.tokenizer.sentinel_id(0), architecture="decoder",
            per_example=pali.per_example_mixture, padded=True)
        dtype = base.DTYPES[config.compute_dtype]
        decoder = LanguageModel(
            vocab_size=self.tokenizer.vocab_size, max_length=2 * caption_length + 2,
            hidden=pali.text_hidden, depth=pali.text_depth, num_heads=pali.text_heads,
            mlp_dim=int(round(pali.text_hidden * pali.mlp_ratio)), dtype=dtype,
            scan_layers=pali.scan_layers, remat=pali.remat)
        self.model = ImagePrefixLM(build_backbone(config.model, dtype=dtype), decoder)
        self.char_lengths = jnp.asarray(self.tokenizer.char_lengths())

    def caption_tokens(self, batch: dict) -> jax.Array:
        """int32 [B, L]: the batch's own caption 'tokens' (a tfds caption dataset),
        else the SYNTHETIC captions of its labels."""
        return batch["tokens"] if self.captions is None else self.captions[batch["label"]]

    def _model_inputs(self, batch: dict, rng: jax.Array):
        """(images [B, S, S, C], the task's decoder-only text stream inputs, targets,
        loss_mask (no loss on PAD targets), choice int32 [B])."""
        inputs, targets, loss_mask, choice = self.task.model_batch(
            {"tokens": self.caption_tokens(batch)}, rng)
        images = base.prepare_images(batch["image"], base.view_size(self.config, batch["image"]))
        return images, inputs, targets, loss_mask, choice

    def init(self, rng: jax.Array, batch: dict) -> dict:
        images, inputs, _, _, _ = self._model_inputs(batch, jax.random.key(NOISE_SEED))
        return self.model.init(rng, images, **inputs, train=False)

    def loss_sums(self, params, batch: dict, rng: jax.Array, train: bool = False):
        """Per example: (nll sum, target tokens, target characters, choice), each [B]."""
        noise_key, dropout_key = jax.random.split(rng)
        images, inputs, targets, loss_mask, choice = self._model_inputs(batch, noise_key)
        logits = self.model.apply({"params": params}, images, **inputs, train=train,
                                  rngs={"dropout": dropout_key})
        return (*language.loss_sums(logits, targets, loss_mask, self.char_lengths), choice)

    def features(self, variables: dict, images: jax.Array) -> jax.Array:
        """The ViT's pooled features, float32 [B, D] (for kNN / linear probes)."""
        size = base.view_size(self.config, images)
        features = self.model.backbone.apply({"params": variables["params"]["backbone"]},
                                             base.prepare_images(images, size), train=False)
        return features.astype(jnp.float32)
