"""The one name-mapping mechanism every importer (and the ViT exporter) uses.

A family is a list of `Rule`s. Each rule matches a PyTorch state-dict name
with a regular expression (`re.fullmatch`) and names the jaxssl variable
path it becomes ('params/backbone/encoder/block\\1/attention/qkv/kernel',
with the match's groups substituted) and the layout change on the way:

  linear      torch Linear weight [out, in] -> kernel [in, out]
  conv        torch Conv2d weight [out, in, kh, kw] -> kernel [kh, kw, in, out]
  heads_out   an output projection [D, H*Dh] -> kernel [H, Dh, D] (after `linear`)
  ...         any function of (array, context) -> array

A rule with `part=(index, count, axis)` supplies one of `count` parts that
are stacked on `axis` into one jaxssl array (separate q, k, v projections
into jaxssl's fused 'qkv'); a rule with destination None drops the tensor on
purpose (it is listed as skipped). A tensor no rule matches is an error,
as is a jaxssl array the checkpoint does not provide: both are reported
in one line by `check_shapes`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from jaxssl.errors import CheckpointError

Transform = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]


# ----------------------------------------------------------------- reading
def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """{torch name: float32 array} from a .safetensors file (or, when torch is installed,
    a torch.save'd state dict). CheckpointError when missing or unreadable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.endswith(".safetensors"):
        import safetensors.numpy
        try:
            state = safetensors.numpy.load_file(path)
        except TypeError:   # numpy has no bfloat16: read the file format directly
            state = read_safetensors_with_ml_dtypes(path)
        except Exception as error:  # the library raises several types for a corrupt file
            raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    else:
        try:
            import torch
        except ImportError:
            raise CheckpointError(f"{path}: not a .safetensors file, and reading PyTorch "
                                  f"pickles needs torch (convert it to safetensors)") from None
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
        state = {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
    is_float = lambda a: a.dtype.kind == "f" or a.dtype.name == "bfloat16"
    return {name: np.asarray(a, np.float32) if is_float(a) else np.asarray(a)
            for name, a in state.items()}


SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                      "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
                      "U8": "uint8", "BOOL": "bool"}


def read_safetensors_with_ml_dtypes(path: str) -> dict[str, np.ndarray]:
    """A .safetensors file read by hand (8-byte header length, JSON header, raw little-endian
    data), with bfloat16 from ml_dtypes, which `safetensors.numpy` cannot return."""
    import ml_dtypes
    with open(path, "rb") as f:
        data = f.read()
    try:
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + length])
        state = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            kind = SAFETENSORS_DTYPES[entry["dtype"]]
            dtype = ml_dtypes.bfloat16 if kind == "bfloat16" else np.dtype(kind)
            start, end = entry["data_offsets"]
            state[name] = np.frombuffer(data[8 + length + start:8 + length + end],
                                        dtype).reshape(entry["shape"])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error})") from None
    return state


def read_hf_directory(directory: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as a dict, state dict) of a Hugging Face model directory
    (model.safetensors, a sharded model.safetensors.index.json, or pytorch_model.bin)."""
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise CheckpointError(f"{directory}: not a Hugging Face model directory (no config.json)")
    with open(config_path) as f:
        config = json.load(f)
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(read_state_dict(os.path.join(directory, shard)))
        return config, state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if os.path.isfile(os.path.join(directory, name)):
            return config, read_state_dict(os.path.join(directory, name))
    raise CheckpointError(f"{directory}: no model.safetensors (or pytorch_model.bin) there")


# --------------------------------------------------------------- transforms
def identity(a, ctx):
    return a


def linear(a, ctx):
    """Linear weight [out, in] -> kernel [in, out]."""
    return a.T


def conv(a, ctx):
    """Conv2d weight [out, in, kh, kw] -> kernel [kh, kw, in, out]."""
    return a.transpose(2, 3, 1, 0)


def split_heads(a, ctx):
    """[..., H*Dh] -> [..., H, Dh] (the last axis split into ctx['heads'] heads)."""
    return a.reshape(*a.shape[:-1], ctx["heads"], a.shape[-1] // ctx["heads"])


def fused_qkv(a, ctx):
    """[..., 3*D] (q, k, v side by side) -> [..., 3, H, Dh]."""
    heads = ctx["heads"]
    return a.reshape(*a.shape[:-1], 3, heads, a.shape[-1] // (3 * heads))


def heads_in(a, ctx):
    """kernel [H*Dh, D] -> [H, Dh, D] (an attention output projection)."""
    return a.reshape(ctx["heads"], a.shape[0] // ctx["heads"], a.shape[1])


def chain(*transforms: Transform) -> Transform:
    def apply(a, ctx):
        for transform in transforms:
            a = transform(a, ctx)
        return a
    return apply


@dataclasses.dataclass(frozen=True)
class Rule:
    """torch name regex -> jaxssl path template (None: skip; or a function of the match, for
    paths that renumber: torchvision's layer1 is jaxssl's stage0), layout transform,
    fused part."""
    pattern: str
    destination: Optional[str | Callable[[re.Match], str]]
    transform: Transform = identity
    part: Optional[tuple[int, int, int]] = None   # (index, count, stack axis)


def norm_rules(source: str, destination: str) -> list[Rule]:
    """A LayerNorm: weight -> scale, bias -> bias."""
    return [Rule(source + r"\.weight", destination + "/scale"),
            Rule(source + r"\.bias", destination + "/bias")]


def dense_rules(source: str, destination: str, kernel: Transform = linear,
                bias: Transform = identity) -> list[Rule]:
    """A Linear: weight -> kernel (transposed unless `kernel` says otherwise), bias -> bias."""
    return [Rule(source + r"\.weight", destination + "/kernel", kernel),
            Rule(source + r"\.bias", destination + "/bias", bias)]


def separate_qkv_rules(template: str, destination: str,
                       names: tuple[str, str, str] = ("query", "key", "value")) -> list[Rule]:
    """Three Linears `template`.format(name=names[i]) (weights [D, D]) stacked into one
    fused jaxssl projection: kernel [D, 3, H, Dh], bias [3, H, Dh]."""
    rules = []
    for index, name in enumerate(names):
        rules += [Rule(template.format(name=name) + r"\.weight", destination + "/kernel",
                       chain(linear, split_heads), (index, 3, 1)),
                  Rule(template.format(name=name) + r"\.bias", destination + "/bias",
                       split_heads, (index, 3, 0))]
    return rules


@dataclasses.dataclass
class Mapped:
    """The outcome of `apply_rules`: arrays by jaxssl variable path, and what was skipped."""
    arrays: dict[str, np.ndarray]
    skipped: list[str]
    sources: dict[str, list[str]]   # jaxssl path -> the torch names it came from


def apply_rules(state: Mapping[str, np.ndarray], rules: Sequence[Rule], context: Mapping,
                where: str) -> Mapped:
    """Maps every tensor of `state` by the first rule whose pattern matches it.

    CheckpointError (one line, naming `where`) for a tensor no rule matches or a
    fused array with missing parts.
    """
    compiled = [(re.compile(rule.pattern), rule) for rule in rules]
    arrays, parts, skipped, sources = {}, {}, [], {}
    for name in sorted(state):
        for regex, rule in compiled:
            match = regex.fullmatch(name)
            if match:
                break
        else:
            raise CheckpointError(f"{where}: tensor '{name}' {tuple(state[name].shape)} has no "
                                  f"place in the model (wrong family or variant?)")
        if rule.destination is None:
            skipped.append(name)
            continue
        path = (rule.destination(match) if callable(rule.destination)
                else match.expand(rule.destination))
        value = rule.transform(state[name], context)
        sources.setdefault(path, []).append(name)
        if rule.part is None:
            arrays[path] = value
        else:
            parts.setdefault(path, {})[rule.part[0]] = (value, rule.part)
    for path, pieces in parts.items():
        _, count, axis = next(iter(pieces.values()))[1]
        if sorted(pieces) != list(range(count)):
            raise CheckpointError(f"{where}: {path} needs {count} parts, found "
                                  f"{', '.join(sources[path])}")
        arrays[path] = np.stack([pieces[i][0] for i in range(count)], axis=axis)
    return Mapped(arrays, skipped, sources)


def check_shapes(expected: Mapping[str, tuple], arrays: Mapping[str, np.ndarray],
                 where: str) -> None:
    """CheckpointError naming the first array that is missing, unexpected or misshapen."""
    for path in sorted(set(expected) | set(arrays)):
        if path not in arrays:
            raise CheckpointError(f"{where}: the checkpoint has nothing for {path} "
                                  f"{tuple(expected[path])}")
        if path not in expected:
            raise CheckpointError(f"{where}: checkpoint array for {path} "
                                  f"{tuple(arrays[path].shape)} has no place in the model")
        if tuple(arrays[path].shape) != tuple(expected[path]):
            raise CheckpointError(f"{where}: {path} is {tuple(arrays[path].shape)} in the "
                                  f"checkpoint but {tuple(expected[path])} in the model")


def check_config(found: Mapping[str, Any], given: Optional[Mapping[str, Any]], where: str) -> dict:
    """`found` (the config the checkpoint implies) where `given` is None; else `found`
    updated with `given`, after checking that every key both have has the same value
    (CheckpointError naming the first that differs)."""
    if given is None:
        return dict(found)
    for key, value in found.items():
        if key not in given:
            continue
        have = given[key]
        same = (np.isclose(have, value, rtol=1e-6, atol=0) if isinstance(value, float)
                and isinstance(have, (int, float)) else have == value)
        if not same:
            raise CheckpointError(f"{where}: the checkpoint has model.{key}={value!r} but the "
                                  f"config says {have!r}")
    return {**dict(given), **dict(found)}


def require(state: Mapping[str, np.ndarray], name: str, family: str, where: str) -> np.ndarray:
    """state[name], or a CheckpointError saying this is not a `family` checkpoint."""
    if name not in state:
        example = ", ".join(sorted(state)[:3])
        raise CheckpointError(f"{where}: not a {family} checkpoint (no tensor '{name}'; it "
                              f"holds {len(state)} tensors such as {example})")
    return state[name]


def count_prefix(state: Mapping[str, Any], regex: str) -> int:
    """How many distinct values the first group of `regex` takes over the state's names
    (e.g. the number of blocks from r'blocks\\.(\\d+)\\.')."""
    pattern = re.compile(regex)
    return len({m.group(1) for name in state for m in [pattern.match(name)] if m})
