"""Methods: one file per recipe (model + views + objective), chosen by name."""

from __future__ import annotations

import difflib
import importlib

# name -> 'module' defining `Method`, or 'module:Class' (a class with default_config, init,
# loss_fn, features).
_REGISTRY = {
    "simclr": "jaxssl.methods.simclr",
    "lm": "jaxssl.methods.lm",
    "pali": "jaxssl.methods.pali",
    "moco": "jaxssl.methods.moco",
    "mae": "jaxssl.methods.mae",
    "simmim": "jaxssl.methods.simmim",
    "finetune": "jaxssl.methods.finetune",
    "clip": "jaxssl.methods.clip",
    "siglip": "jaxssl.methods.clip:SigLIP",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str):
    """The Method class registered under `name`; KeyError naming the valid ones."""
    if name not in _REGISTRY:
        near = difflib.get_close_matches(name, names(), n=1, cutoff=0.0)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise KeyError(f"unknown method '{name}'{hint}; valid methods: {', '.join(names())}")
    module, _, class_name = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), class_name or "Method")
