"""Methods: one file per recipe (model + views + objective), chosen by name.

Each registered class subclasses `jaxssl.methods.base.Method` (the contract
the Trainer calls) and is named after its recipe.
"""

from __future__ import annotations

import difflib
import importlib

from jaxssl.errors import ConfigError

# config.method -> 'module:Class'.
_REGISTRY = {
    "simclr": "jaxssl.methods.simclr:SimCLR",
    "moco": "jaxssl.methods.moco:MocoV3",
    "mae": "jaxssl.methods.mae:MAE",
    "simmim": "jaxssl.methods.simmim:SimMIM",
    "clip": "jaxssl.methods.clip:CLIP",
    "siglip": "jaxssl.methods.clip:SigLIP",
    "lm": "jaxssl.methods.lm:LanguageModelling",
    "pali": "jaxssl.methods.pali:PaLI",
    "palm_e": "jaxssl.methods.palm_e:PaLME",
    "gato": "jaxssl.methods.gato:Gato",
    "finetune": "jaxssl.methods.finetune:FineTune",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str):
    """The method class registered under `name`; ConfigError naming the valid ones."""
    if name not in _REGISTRY:
        near = difflib.get_close_matches(name, names(), n=1, cutoff=0.0)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"unknown method '{name}'{hint}; valid methods: {', '.join(names())}")
    module, _, class_name = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), class_name)
