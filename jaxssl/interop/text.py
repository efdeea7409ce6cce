"""What the text importers (GPT-2, BERT) share: building the jaxssl LanguageModel from the
config a checkpoint implies, and checking the mapped arrays against it."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxssl.checkpoint import shapes_by_path
from jaxssl.interop.common import Imported
from jaxssl.interop.mapping import Mapped, check_config, check_shapes


def language_model_import(family: str, source: str, config: dict,
                          given: Optional[Mapping[str, Any]], mapped: Mapped) -> Imported:
    """Checks `mapped` against the LanguageModel of `config` (after `given`) -> Imported."""
    from jaxssl.models.transformer import LanguageModel
    config = check_config(config, given, source)
    build = lambda: LanguageModel(**config)
    tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    variables = jax.eval_shape(
        lambda t: build().init(jax.random.PRNGKey(0), t, jnp.ones_like(t),
                               jnp.zeros_like(t), jnp.zeros(t.shape, bool), train=False), tokens)
    check_shapes(shapes_by_path(nn.meta.unbox(variables)), mapped.arrays, source)
    return Imported(family, source, config, mapped.arrays, {}, mapped.skipped, {}, build)
