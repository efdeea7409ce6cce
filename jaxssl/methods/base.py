"""What every method shares: the interface and image preprocessing.

A method wires a model and an objective. The train loop only calls:

  method.init(rng, batch) -> variables         # {'params': ..., other collections}
  method.loss_fn(params, state, batch, rng, step) -> (loss, (metrics, new_state))
  method.features(variables, images) -> [B, D] float32 encoder features (evaluation)

`state` holds the non-gradient collections (batch statistics, EMA encoders).
`batch` is a dict of global arrays: 'image' uint8 [B, H, W, C], 'label' int32 [B]
(or whatever the data source's records hold, e.g. tokens for text methods).

Optional hooks the train loop uses when a method defines them:

  method.evaluate(variables, train_source, eval_source, mesh, eval_config) -> {name: float}
      replaces the default kNN + linear-probe evaluation (e.g. perplexity);
  method.write_pictures(variables, images uint8 [n, H, W, C], path) -> None
      draws a PNG at each evaluation (e.g. MAE reconstructions);
  method.optimizer() -> (optax.GradientTransformation, learning-rate schedule)
      replaces jaxssl.optim's (e.g. frozen parameters, layer-wise lr decay);
  method.load_pretrained(state, shardings, workdir) -> state
      swaps pretrained weights into the fresh TrainState (fine-tuning), may
      write a report into workdir; not called when resuming from the
      workdir's own checkpoint;
  method.select_train_examples(train_source) -> source
      the part of the train split the run trains on (low-label fine-tuning);
  method.assets() -> {file name: text}
      files the run needs besides its checkpoints (e.g. a character
      vocabulary built from the corpus): written into the workdir when the
      run starts, and compared with the workdir's copies when it resumes, so
      a changed corpus cannot silently renumber the tokens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl import parallel

_DROPOUT_SALT = 0x5D0
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def view_size(config: ml_collections.ConfigDict, images: jax.Array) -> int:
    """Side of the model input: data.image_size, or the images' own height."""
    return config.data.image_size or images.shape[1]


def prepare_images(images: jax.Array, size: int) -> jax.Array:
    """uint8 [B, H, W, C] -> float32 [B, size, size, C] in [-1, 1], without augmentation."""
    x = images.astype(jnp.float32) / 255.0
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

