"""Layer ids of an encoder + head, and the per-layer fine-tuning settings built on them:
layer-wise learning-rate decay scales and gradual-unfreezing open steps.

Parameters are {'backbone': encoder, 'head': ...}. Blocks (ViT 'block<i>',
ResNet 'stage<s>_block<b>' in order, or the stacked 'blocks' of a scanned
ViT) get layer ids 1..depth; the final 'encoder_norm' (and a 'map_head') and the head get
top = depth + 1; everything else (patch / position embeddings, class token,
ResNet stem) gets 0.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import numpy as np

from jaxssl import handoff, optim

ENCODER = handoff.DESTINATION_ENCODER   # 'backbone'
HEAD = "head"

_BLOCK = re.compile(r"(?:^|/)(?:block(\d+)|stage(\d+)_block(\d+))(?:/|$)")
_SCANNED_BLOCKS = re.compile(rf"(?:^|/){optim.SCANNED_BLOCKS}(?:/|$)")
_TOP_MODULES = re.compile(r"(?:^|/)(?:encoder_norm|map_head)(?:/|$)")


def layer_ids(params: Mapping[str, Any]) -> tuple[dict, int]:
    """Layer id of every parameter of {'backbone': ..., 'head': ...}, and the top id.

    Ids as in the module docstring. Leaves are ints, or int arrays
    [depth, 1, ...] for stacked blocks.
    """
    leaves = handoff.flatten_paths(params)
    blocks = sorted({_block_key(path) for path in leaves} - {None})
    stacked = [leaf.shape[0] for path, leaf in leaves.items() if _SCANNED_BLOCKS.search(path)]
    depth = len(blocks) or (stacked[0] if stacked else 0)
    top = depth + 1
    index = {block: i + 1 for i, block in enumerate(blocks)}

    def leaf_id(path: str, leaf) -> Any:
        if path.split("/")[0] == HEAD or _TOP_MODULES.search(path):
            return top
        if _SCANNED_BLOCKS.search(path):
            return np.arange(1, depth + 1).reshape((depth,) + (1,) * (leaf.ndim - 1))
        return index.get(_block_key(path), 0)

    ids = [leaf_id(path, leaf) for path, leaf in leaves.items()]
    return jax.tree_util.tree_unflatten(jax.tree.structure(params), ids), top


def _block_key(path: str) -> tuple[int, ...] | None:
    """(i,) for a ViT 'block<i>', (s, b) for a ResNet 'stage<s>_block<b>', else None."""
    match = _BLOCK.search(path)
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def layer_decay_scales(params: Mapping[str, Any], decay: float) -> dict:
    """Learning-rate scale of every parameter: decay ** (top - layer id), float32."""
    ids, top = layer_ids(params)
    return optim.layer_decay_scales(ids, decay, top)


def open_steps(params: Mapping[str, Any], start: int, unfreeze_every: int) -> dict:
    """First optimizer step at which each parameter may change: the encoder's layer l at
    start + (top - l) * unfreeze_every (gradual unfreezing from the top), everything
    else (the head) at 0."""
    ids, top = layer_ids(params)
    return {k: (jax.tree.map(lambda _: 0, v) if k != ENCODER else
                optim.unfreeze_open_steps(v, top, unfreeze_every, start))
            for k, v in ids.items()}
