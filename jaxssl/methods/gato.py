"""Gato (Reed et al. 2022): one decoder-only Transformer, one set of weights, trained on
text, image captions and control episodes.

Data (`jaxssl.data.gato_mixture`): a weighted mixture, `gato.weights` over
('text', 'caption', 'cartpole', 'pendulum'), of packed rows:

  text      byte-level windows of `gato.text_corpus` (tiny Shakespeare by default, read
            from `gato.text_data_dir` under the data root);
  caption   images of the config's labelled dataset (data.name: digits, mnist or
            cifar10_jpeg) followed by their class word + EOS; each image enters the
            sequence as `patch` x `patch` patch embeddings (the ViT's PatchEmbedding,
            here a linear projection of each patch) filled into its placeholders;
  control   expert episodes of CartPole-v1 and Pendulum-v1 (`jaxssl.data.gato_control`:
            scripted experts, `gato.episodes` per task from reset seeds 0, 1, ..., made
            when the run starts), observations and actions as tokens past the text
            vocabulary, a separator between them, each example prompted with the end
            of another episode of the same task.

The loss is next-token cross-entropy, averaged over the target tokens of the batch:
text and action tokens only (never observations, separators, image positions or
padding), and never across the packed examples of a row (attention neither).
Metrics: 'loss', 'tokens', and per task 'text/loss', 'caption/loss', ...

The data.name dataset gives the caption images: its train split feeds the mixture
(`select_train_examples` builds the mixture rows around it), its eval split the
caption accuracy.

Evaluation, of each task with weight > 0:
  text/loss              nats per byte on the first `eval_text_rows` windows of
                         the corpus' validation split;
  caption/accuracy       greedy captions equal to the class word + EOS, on the first
                         `eval_images` images of the eval split;
  cartpole/return, ...   mean return of `eval_episodes` greedy rollouts in the real
                         environment (`jaxssl.evaluate.gato_rollout`), reset seeds from
                         `eval_seed`, prompted with the end of expert episode 0.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxssl.data import captions, gato_control, gato_mixture, pipeline, text, tokenizers
from jaxssl.data.multimodal import KIND_ACTION, KIND_IMAGE, KIND_TEXT, Segment, example_arrays
from jaxssl.errors import ConfigError
from jaxssl.evaluate.gato_rollout import rollout_returns
from jaxssl.methods import base
from jaxssl.models.transformer import LanguageModel
from jaxssl.models.vit import PatchEmbedding
from jaxssl.objectives import language, mixture

# The row arrays the model reads (besides the images); 'loss_mask' and 'task' are the loss's.
_ROW_INPUTS = ("tokens", "kinds", "slots", "segment_ids", "positions")


class GatoModel(nn.Module):
    """Patch embeddings of each row's images fill its image placeholders of a decoder.

    __call__(tokens, kinds, slots, segment_ids, positions int32 [B, T], images float
    [B, M, H, W, C] in [-1, 1], train) -> logits float32 [B, T, vocab], or with
    targets int32 [B, T] their nll float32 [B, T] (the decoder's); the image
    table of a row is its M images' patches in order, [B, M * (H/p) * (W/p), D].
    """
    patch: int
    decoder: LanguageModel

    @nn.compact
    def __call__(self, tokens, kinds, slots, segment_ids, positions, images, train: bool,
                 targets=None):
        b, m = images.shape[:2]
        patches = PatchEmbedding(self.patch, self.decoder.hidden, dtype=self.decoder.dtype,
                                 name="patch_embedding")(images.reshape(b * m, *images.shape[2:]))
        table = patches.reshape(b, -1, self.decoder.hidden)
        causal = jnp.ones(tokens.shape, bool)
        return self.decoder(tokens, segment_ids, positions, causal, train,
                            placeholders=(kinds, slots, {KIND_IMAGE: table}), targets=targets)


def next_token_targets(batch: dict) -> tuple[jax.Array, jax.Array]:
    """(targets int32 [B, T], weights float32 [B, T]): position t predicts token t+1
    when that is a target (loss_mask) of the same packed example; the last position
    predicts nothing (target 0, weight 0)."""
    targets, same = language.next_token_targets(batch["tokens"], batch["segment_ids"])
    weights = (batch["loss_mask"][:, 1:] & same).astype(jnp.float32)
    last_predicts_nothing = ((0, 0), (0, 1))
    return jnp.pad(targets, last_predicts_nothing), jnp.pad(weights, last_predicts_nothing)


class Gato(base.Method):
    """One decoder on the text / caption / control mixture (module docstring)."""

    @staticmethod
    def default_config() -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            weights=(0.4, 0.2, 0.2, 0.2),   # text, caption, cartpole, pendulum
            text_corpus="tiny_shakespeare",
            text_data_dir="",               # '' = the corpus' default under the data root
            row_length=128,
            cross_entropy_chunk=0,          # positions per chunk of the loss's logits (0: all)
            hidden=128,
            depth=4,
            heads=4,
            mlp_ratio=4.0,
            patch=4,                        # image patch side (pixels)
            episodes=50,                    # expert episodes per control task
            prompt_steps=4,                 # demonstration timesteps before each example
            control_steps=0,                # timesteps per control example; 0 = fill the row
            num_rows=1_000_000,             # the mixture's length (rows made on demand)
            eval_episodes=10,
            eval_seed=10_000,               # rollouts reset from seeds eval_seed, +1, ...
            eval_text_rows=256,
            eval_images=500,
        ))

    @staticmethod
    def check_config(config: ml_collections.ConfigDict) -> None:
        gato = config.gato
        weights = tuple(gato.weights)
        if len(weights) != len(gato_mixture.TASKS) or min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"gato.weights must be {len(gato_mixture.TASKS)} non-negative "
                              f"weights of {gato_mixture.TASKS} with a positive sum, got "
                              f"{weights}")
        if config.data.name not in captions.CLASS_NAMES:
            raise ConfigError(f"method 'gato' captions the images of data.name, one of "
                              f"{sorted(captions.CLASS_NAMES)}; got {config.data.name!r}")
        if config.data.image_size:
            raise ConfigError(f"method 'gato' reads the images at their own size (its rows "
                              f"hold their patches): data.image_size={config.data.image_size} "
                              f"would be ignored (set it to 0)")
        text.parse_text_dataset(_text_dataset(gato))
        base.check_chunk("gato.cross_entropy_chunk", gato.cross_entropy_chunk)
        for name in gato_mixture.TASKS[2:]:
            gato_mixture.example_steps(gato.row_length, gato_control.control_task(name)
                                       .step_length, gato.prompt_steps, gato.control_steps)
        for key in ("episodes", "eval_episodes", "eval_text_rows", "eval_images", "patch",
                    "num_rows"):
            if gato[key] < 1:
                raise ConfigError(f"gato.{key} must be >= 1, got {gato[key]}")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        gato = config.gato
        self.weights = dict(zip(gato_mixture.TASKS, gato.weights))
        self.tokenizer = tokenizers.ByteTokenizer(0)
        self.vocab = gato_control.Vocabulary(self.tokenizer.vocab_size)
        self.captions = [tuple(int(t) for t in self.tokenizer.encode(word))
                         + (tokenizers.EOS_ID,) for word in captions.CLASS_NAMES[config.data.name]]
        decoder = LanguageModel(
            vocab_size=self.vocab.size, max_length=gato.row_length, hidden=gato.hidden,
            depth=gato.depth, num_heads=gato.heads,
            mlp_dim=int(round(gato.hidden * gato.mlp_ratio)),
            dtype=base.DTYPES[config.compute_dtype], cross_entropy_chunk=gato.cross_entropy_chunk)
        self.model = GatoModel(gato.patch, decoder)
        self._logits = jax.jit(self.logits)

    # ------------------------------------------------------------ data
    @functools.cached_property
    def control_tasks(self) -> dict[str, gato_control.ControlTask]:
        """The control tasks with weight > 0."""
        return {name: gato_control.control_task(name) for name in gato_mixture.TASKS[2:]
                if self.weights[name] > 0}

    @functools.cached_property
    def episode_steps(self) -> dict[str, list[np.ndarray]]:
        """Step tokens of `gato.episodes` expert episodes per control task (seeds 0, 1, ...)."""
        return {name: [gato_control.step_tokens(task, e, self.vocab) for e in
                       gato_control.expert_episodes(task, self.config.gato.episodes, 0)]
                for name, task in self.control_tasks.items()}

    def select_train_examples(self, train_source):
        """The mixture rows, whose caption examples are drawn from `train_source`."""
        gato, config = self.config.gato, self.config
        text_rows = (text.get_text_source(_text_dataset(gato), "train", gato.text_data_dir or None)
                     if self.weights["text"] > 0 else None)
        control = {name: gato_mixture.ControlData(task, self.episode_steps[name])
                   for name, task in self.control_tasks.items()}
        return gato_mixture.GatoMixture(
            gato.weights, gato.row_length, text_rows, train_source, self.captions,
            self._patches(train_source[0]["image"].shape), control, gato.prompt_steps,
            gato.control_steps, gato.num_rows, config.seed)

    def train_record_spec(self, source_spec: dict) -> dict:
        """One mixture row's spec (`gato_mixture.record_spec`) for the split's images."""
        image_shape = tuple(source_spec["image"].shape)
        return gato_mixture.record_spec(self.config.gato.row_length, image_shape,
                                        self._patches(image_shape), self.captions)

    def _patches(self, image_shape) -> int:
        patch = self.config.gato.patch
        if image_shape[0] % patch or image_shape[1] % patch:
            raise ConfigError(f"gato.patch={patch} does not divide the images "
                              f"({image_shape[0]}x{image_shape[1]})")
        return (image_shape[0] // patch) * (image_shape[1] // patch)

    # ------------------------------------------------------------ model
    def _inputs(self, batch: dict) -> dict:
        images = batch["images"]
        flat = images.reshape(-1, *images.shape[2:])
        prepared = base.prepare_images(flat, flat.shape[1]).reshape(images.shape)
        return {**{k: batch[k] for k in _ROW_INPUTS}, "images": prepared}

    def init(self, rng: jax.Array, batch: dict) -> dict:
        return self.model.init(rng, **self._inputs(batch), train=False)

    def loss_fn(self, params, state, batch, rng, step):
        del rng, step  # no dropout, no noise
        targets, weights = next_token_targets(batch)
        nll = self.model.apply({"params": params}, **self._inputs(batch), train=True,
                               targets=targets) * weights
        loss, metrics = mixture.mixture_loss(gato_mixture.TASKS, batch["task"],
                                             jnp.sum(nll, axis=1), jnp.sum(weights, axis=1))
        return loss, (metrics, state)

    def _apply(self, variables, rows: dict, images: np.ndarray) -> jax.Array:
        """Logits [B, T, V] of row arrays (numpy) and uint8 images [B, M, H, W, C]."""
        batch = {k: jnp.asarray(rows[k]) for k in _ROW_INPUTS}
        return self._logits(variables, {**batch, "images": jnp.asarray(images)})

    # ------------------------------------------------------------ evaluation
    def logits(self, variables: dict, batch: dict) -> jax.Array:
        """Logits float32 [B, T, V] of mixture rows (the row arrays [B, T] and 'images'
        uint8 [B, M, H, W, C]), the model in evaluation mode: what the text loss, the
        caption accuracy and the rollouts of `evaluate` read."""
        return self.model.apply({"params": variables["params"]}, **self._inputs(batch),
                                train=False)

    def eval_step(self, variables: dict, batch: dict, rng: jax.Array) -> jax.Array:
        """`logits` of a batch of mixture rows (no noise: `rng` is not used)."""
        del rng
        return self.logits(variables, batch)

    def evaluate(self, variables, train_source, eval_source, mesh, eval_config) -> dict[str, float]:
        """text/loss, caption/accuracy and <task>/return of the tasks trained on."""
        del train_source, mesh, eval_config
        image_shape = eval_source[0]["image"].shape
        results = {}
        if self.weights["text"] > 0:
            results["text/loss"] = self.text_loss(variables, image_shape)
        if self.weights["caption"] > 0:
            results["caption/accuracy"] = self.caption_accuracy(variables, eval_source)
        for name in self.control_tasks:
            results[f"{name}/return"] = float(np.mean(self.control_returns(variables, name,
                                                                           image_shape)))
        return results

    def text_loss(self, variables, image_shape) -> float:
        """Nats per byte over the first `eval_text_rows` validation windows."""
        gato = self.config.gato
        rows = text.get_text_source(_text_dataset(gato), "validation", gato.text_data_dir or None)
        total, count = 0.0, 0.0
        for batch, valid in pipeline.eval_batches(rows, 64, 0, 1, gato.eval_text_rows):
            batch.update(kinds=np.full_like(batch["tokens"], KIND_TEXT),
                         slots=-np.ones_like(batch["tokens"]),
                         loss_mask=(batch["segment_ids"] > 0) & valid[:, None])
            logits = self._apply(variables, batch, self._blank_images(len(valid), image_shape))
            targets, weights = next_token_targets({k: jnp.asarray(v) for k, v in batch.items()})
            total += float(jnp.sum(language.token_nll(logits, targets) * weights))
            count += float(jnp.sum(weights))
        return total / max(count, 1.0)

    def caption_accuracy(self, variables, eval_source) -> float:
        """Fraction of the first `eval_images` images whose greedy caption (text ids and
        EOS only, as long as the longest caption) is exactly their class word + EOS."""
        count = min(self.config.gato.eval_images, len(eval_source))
        records = [eval_source[i] for i in range(count)]
        patches = self._patches(records[0]["image"].shape)
        width = max(len(c) for c in self.captions)
        prefix = example_arrays([Segment("image", length=patches)])
        rows = {k: np.zeros((count, patches + width), v.dtype) for k, v in prefix.items()}
        for k, v in prefix.items():
            rows[k][:, :patches] = v
        rows["slots"][:, patches:] = -1
        images = np.stack([r["image"] for r in records])[:, None]
        allowed = np.zeros(self.vocab.size, bool)
        allowed[self.tokenizer.regular_ids[0]:self.vocab.text_size] = True
        allowed[tokenizers.EOS_ID] = True
        for at in range(patches, patches + width):
            rows["segment_ids"][:, at], rows["positions"][:, at] = 1, at
            rows["kinds"][:, at] = KIND_TEXT
            logits = np.asarray(self._apply(variables, rows, images)[:, at - 1])
            rows["tokens"][:, at] = np.argmax(np.where(allowed, logits, -np.inf), axis=1)
        correct = [tuple(row[patches:patches + len(self.captions[r["label"]])])
                   == self.captions[r["label"]] for row, r in zip(rows["tokens"], records)]
        return float(np.mean(correct))

    def control_returns(self, variables, name: str, image_shape) -> np.ndarray:
        """Returns of `eval_episodes` greedy rollouts of control task `name`."""
        gato = self.config.gato
        task = self.control_tasks[name]
        prompt = gato_control.prompt_steps(self.episode_steps[name][0], gato.prompt_steps)
        images = self._blank_images(gato.eval_episodes, image_shape)

        def next_logits(tokens, lengths):
            ones = np.ones_like(tokens)
            steps = np.arange(tokens.shape[1])[None]
            valid = (steps < lengths[:, None]).astype(np.int32)
            rows = {"tokens": tokens, "kinds": ones * KIND_ACTION, "slots": -ones,
                    "segment_ids": valid,
                    "positions": np.broadcast_to(steps, tokens.shape).astype(np.int32)}
            logits = self._apply(variables, rows, images)
            return np.asarray(jnp.take_along_axis(logits, jnp.asarray(lengths - 1)[:, None, None],
                                                  axis=1)[:, 0])

        return rollout_returns(task, self.vocab, next_logits, prompt, gato.row_length,
                               gato.eval_episodes, gato.eval_seed)

    def _blank_images(self, count: int, image_shape) -> np.ndarray:
        """uint8 zeros [count, 1, p, p, C]: no image placeholder reads them."""
        patch = self.config.gato.patch
        return np.zeros((count, 1, patch, patch, image_shape[-1]), np.uint8)


def _text_dataset(gato: ml_collections.ConfigDict) -> str:
    """The byte-level text dataset of windows of one row."""
    return text.text_dataset_name(gato.text_corpus, tokenizer="byte", length=gato.row_length,
                                  sentinels=0)
