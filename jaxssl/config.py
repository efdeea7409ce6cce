"""Config loading, defaults, validation and saving.

A config file `configs/NAME.py` defines `get_config(arg=None)` returning an
`ml_collections.ConfigDict` that sets only what differs from `base_config()`
(plus the chosen method's own section). `resolve` merges it onto the
defaults; any key the defaults do not know is an error naming the nearest
valid key, so a typo never silently runs the wrong experiment.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
import traceback
from typing import Any, Iterable, Mapping

import ml_collections

from jaxssl.data.augment import AugmentRecipe, default_recipe_config
from jaxssl.errors import CheckpointError, ConfigError
from jaxssl.models import build_backbone, default_model_config


def base_config() -> ml_collections.ConfigDict:
    """Every key a config may set, with its default."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.method = "simclr"
    c.total_steps = 1000
    c.grad_accum_steps = 1
    c.compute_dtype = "float32"  # activations; params, optimizer and loss stay float32
    # Random bits of training (dropout, masks, augmentations): threefry2x32 gives the
    # same bits whatever the mesh; rbg / unsafe_rbg use XLA's RngBitGenerator (no faster
    # beyond noise on the CPU, experiments/language/README.md; unmeasured on accelerators)
    # and their bits depend on the sharding. Initialisation always uses threefry2x32.
    c.prng_impl = "threefry2x32"
    # Stop with DivergedError (exit 3) at the first step whose loss, gradient norm or
    # parameter norm is not finite, before that state is checkpointed.
    c.stop_on_nonfinite = True
    # glibc malloc arenas of a CPU-only training run (jaxssl/host_memory.py): 'one' for a
    # step whose XLA scratch is above a thread arena's 64 MiB (no page faults at every
    # step), 'per_thread' below it (no contention for the one arena's lock). jaxssl.main
    # prints which one suits the compiled step when the config chose the other.
    c.malloc_arenas = "one"

    c.mesh = dict(data=-1, fsdp=1, tensor=1)
    # 'auto': initialise when JAX_COORDINATOR_ADDRESS / JAXSSL_DISTRIBUTED is set.
    c.distributed = dict(initialize="auto", coordinator_address="", num_processes=0, process_id=-1)

    c.data = dict(
        name="digits",        # digits | mnist | fashion_mnist | cifar10_jpeg | npz | tfds:NAME
        data_dir="",
        train_split="train",
        eval_split="test",
        batch_size=256,       # global batch, all processes together
        image_size=0,         # side of the training views; 0 = the data's own size
        eval_crop=1.0,        # centre fraction of each image's side in the unaugmented
                              # view (evaluation), before resizing: 0.875 = 224 of 256
        num_workers=0,        # grain worker processes per host
        read_threads=4,       # grain threads reading batches per process (0 = the main thread)
        prefetch_batches=8,   # batches grain reads ahead per process
    )
    c.augment = default_recipe_config()
    c.model = default_model_config()

    c.optim = dict(
        name="lars",          # adamw | sgd | lars
        base_lr=0.3,          # learning rate = base_lr * lr scaling(batch)
        lr_scaling="linear",  # linear: * batch/256 | sqrt: * sqrt(batch) | none
        schedule="cosine",    # cosine | constant
        warmup_steps=0,
        end_lr_ratio=0.0,     # final lr as a fraction of the peak
        weight_decay=1e-6,
        momentum=0.9,
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        lars_trust_coefficient=0.001,
        clip_grad_norm=0.0,   # 0 = off
        moments_dtype="float32",  # adamw's first moment, sgd's momentum: float32 | bfloat16
    )

    c.eval = dict(
        every_steps=0,         # 0 = only at the end
        batch_size=512,
        knn_k=20,
        knn_temperature=0.07,
        probe_epochs=100,
        probe_lr=3e-2,
        probe_weight_decay=1e-4,
        probe_batch_size=128,
        max_train_examples=0,  # 0 = the whole labelled train split
        max_test_examples=0,   # 0 = the whole eval split
        compare_random_init=False,  # also evaluate the encoder at step 0, print both
        num_pictures=8,        # images in the picture grid of methods that draw one (0: none)
    )
    c.checkpoint = dict(every_steps=0, keep=3, async_save=True)  # every_steps 0 = at the end only
    c.log = dict(every_steps=10, tensorboard=True, progress_bar=True, peak_flops_per_device=0.0)
    return c


def method_defaults(method: str) -> ml_collections.ConfigDict:
    """The chosen method's own config section (e.g. `config.simclr`)."""
    from jaxssl import methods
    return methods.get(method).default_config()


def _nearest(key: str, candidates: Iterable[str], prefix: str) -> str:
    match = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ""


def _merge(defaults: ml_collections.ConfigDict, user: Mapping[str, Any], prefix: str) -> None:
    """Writes `user` onto `defaults` in place; unknown keys raise ConfigError."""
    for key, value in user.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            raise ConfigError(f"unknown config key '{path}'{_nearest(key, defaults.keys(), prefix)}")
        if isinstance(defaults[key], ml_collections.ConfigDict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{path}' is a section, got {value!r}")
            _merge(defaults[key], value, path + ".")
        else:
            defaults[key] = _coerce(value, defaults[key], path)


def _coerce(value: Any, default: Any, path: str) -> Any:
    """Checks `value` against the default's type (ints may stand for floats)."""
    if default is None or isinstance(value, type(default)) and not (
            isinstance(value, bool) and not isinstance(default, bool)):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (tuple, list)) and isinstance(value, (tuple, list)):
        return type(default)(value)
    raise ConfigError(f"config key '{path}' expects {type(default).__name__}, "
                      f"got {type(value).__name__} {value!r}")


def _to_dict(config: Any) -> Any:
    return config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)


def resolve(user_config: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Merges a user config onto the defaults of its method; validates values."""
    user = _to_dict(user_config)
    config = base_config()
    method = user.get("method", config.method)
    config[method] = method_defaults(method)
    from jaxssl import methods
    others = sorted(set(user) & set(methods.names()) - {method})
    if others:
        raise ConfigError(f"config section '{others[0]}' is for method '{others[0]}', not "
                          f"'{method}' (set method='{others[0]}', or remove the section)")
    method_class = methods.get(method)
    as_json = lambda section: json.dumps(section.to_dict(), sort_keys=True)
    shared_augment = as_json(config.augment)
    config.augment.update(method_class.AUGMENTATION or {})
    _merge(config, user, "")
    # A resolved config (a workdir's config.json) holds the default section: not refused.
    if method_class.AUGMENTATION is None and as_json(config.augment) != shared_augment:
        raise ConfigError(f"method '{method}' does not augment its images: the augment "
                          "section would be ignored (remove it)")
    _check_values(config)
    method_class.check_config(config)
    return config


def _check_values(config: ml_collections.ConfigDict) -> None:
    choices = {
        "compute_dtype": ("float32", "bfloat16", "float16"),
        "prng_impl": ("threefry2x32", "rbg", "unsafe_rbg"),
        "malloc_arenas": ("one", "per_thread"),
        "optim.name": ("adamw", "sgd", "lars"),
        "optim.schedule": ("cosine", "constant"),
        "optim.lr_scaling": ("linear", "sqrt", "none"),
        "optim.moments_dtype": ("float32", "bfloat16"),
        "distributed.initialize": ("auto", "yes", "no"),
    }
    for path, allowed in choices.items():
        value = config
        for part in path.split("."):
            value = value[part]
        if value not in allowed:
            raise ConfigError(f"config key '{path}' must be one of {allowed}, got {value!r}")
    minimums = {"seed": 0, "total_steps": 1, "grad_accum_steps": 1, "data.batch_size": 1,
                "eval.knn_k": 1, "eval.probe_epochs": 1, "eval.probe_batch_size": 1,
                "eval.max_train_examples": 0, "eval.max_test_examples": 0,
                "eval.num_pictures": 0,
                "log.every_steps": 1, "checkpoint.keep": 1, "eval.batch_size": 1,
                "eval.every_steps": 0, "checkpoint.every_steps": 0, "optim.warmup_steps": 0,
                "optim.base_lr": 0, "optim.weight_decay": 0, "optim.clip_grad_norm": 0,
                "data.image_size": 0, "data.num_workers": 0, "data.read_threads": 0,
                "data.prefetch_batches": 1}
    for path, minimum in minimums.items():
        section, _, key = path.rpartition(".")
        value = (config[section] if section else config)[key]
        if value < minimum:
            raise ConfigError(f"config key '{path}' must be >= {minimum}, got {value}")
    if not 0.0 < config.data.eval_crop <= 1.0:
        raise ConfigError(f"config key 'data.eval_crop' must be in (0, 1], got "
                          f"{config.data.eval_crop}")
    for path in ("eval.knn_temperature", "eval.probe_lr"):
        section, key = path.split(".")
        if not config[section][key] > 0:
            raise ConfigError(f"config key '{path}' must be > 0, got {config[section][key]}")
    for axis, size in config.mesh.items():
        if size != -1 and size < 1:
            raise ConfigError(f"config key 'mesh.{axis}' must be -1 (the remaining devices) or "
                              f">= 1, got {size}")
    try:
        AugmentRecipe.from_config(config.augment)
        build_backbone(config.model)
    except ValueError as error:  # the recipe's and the model registry's own range checks
        raise ConfigError(str(error)) from None
    if config.optim.name == "lars" and config.optim.moments_dtype != "float32":
        raise ConfigError("optim.moments_dtype applies to adamw and sgd; lars keeps float32")
    if config.data.batch_size % config.grad_accum_steps:
        raise ConfigError(f"data.batch_size={config.data.batch_size} is not divisible by "
                          f"grad_accum_steps={config.grad_accum_steps}")


def load_config_file(spec: str) -> Mapping[str, Any]:
    """Runs `get_config(arg)` of 'path/to/config.py[:arg]'.

    A config file that does not run (syntax error, exception in get_config)
    or returns anything but a ConfigDict or dict raises ConfigError naming
    the file and line.
    """
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    module_spec = importlib.util.spec_from_file_location("jaxssl_user_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise ConfigError(f"config file {path} defines no get_config(arg=None)")
        config = get_config(arg) if arg else get_config()
    except ConfigError:
        raise
    except Exception as error:  # the user's file: report where it failed, in one line
        raise ConfigError(f"config file {path} failed{_where(error, path)}: "
                          f"{type(error).__name__}: {error}") from None
    if not isinstance(config, (ml_collections.ConfigDict, Mapping)):
        raise ConfigError(f"get_config() of {path} returned {type(config).__name__}, "
                          f"not an ml_collections.ConfigDict")
    return config


def _where(error: Exception, path: str) -> str:
    """' at line N' of `path` where `error` was raised in it ('' if not known)."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f" at line {error.lineno}"
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if os.path.abspath(frame.filename) == os.path.abspath(path)]
    return f" at line {lines[-1]}" if lines else ""


def parse_override(text: str) -> Any:
    """'0.1' -> 0.1, 'true' -> True, '(1, 2)' -> (1, 2); anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def overrides_to_tree(overrides: Mapping[str, str]) -> dict:
    """{'optim.base_lr': '0.1'} -> {'optim': {'base_lr': 0.1}}."""
    tree: dict = {}
    for dotted, text in overrides.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_override(text)
    return tree


def _deep_update(base: dict, update: Mapping[str, Any]) -> dict:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def load(spec: str, overrides: Mapping[str, str] | None = None) -> ml_collections.ConfigDict:
    """Config file + command-line overrides -> validated, complete config."""
    user = _to_dict(load_config_file(spec))
    return resolve(_deep_update(user, overrides_to_tree(overrides or {})))


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def read_saved(workdir: str) -> dict[str, Any]:
    """The run's config as `save` wrote it in `workdir` (its config.json), not resolved.

    Raises CheckpointError if the file is missing, cannot be read or is not JSON."""
    path = os.path.join(workdir, "config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: is {workdir} a jaxssl workdir?") from None
    except OSError as error:
        raise CheckpointError(f"{path} cannot be read ({error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error})") from None


def load_saved(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config of the run in `workdir` (its config.json).

    Raises CheckpointError as `read_saved`, ConfigError if it no longer resolves."""
    return resolve(read_saved(workdir))


# What a resumed run may set differently from the run its checkpoint comes from: where files
# are, how the work is laid out and computed (the same arithmetic: meshes, remat, attention
# kernels, loss chunks), and what is evaluated, logged and saved. Every other setting shapes
# the training itself (a schedule's length, a learning rate, the data, the objective, a
# seed): resuming with another value would go on as a run nobody configured.
_RESUMABLE_SECTIONS = ("mesh", "distributed", "eval", "checkpoint", "log", "finetune.forgetting")
_RESUMABLE_KEYS = ("malloc_arenas", "stop_on_nonfinite", "data.num_workers", "data.read_threads",
                   "data.prefetch_batches", "finetune.wise_alphas", "palm_e.text_eval_split")
_RESUMABLE_NAMES = ("data_dir", "text_data_dir", "remat", "attention_impl", "text_attention_impl",
                    "cross_entropy_chunk")


def _may_change_on_resume(key: str) -> bool:
    name = key.rpartition(".")[2]
    return (key in _RESUMABLE_KEYS or name in _RESUMABLE_NAMES or name.startswith("eval_")
            or any(key.startswith(section + ".") for section in _RESUMABLE_SECTIONS))


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_on_resume(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> list[str]:
    """'KEY: SAVED -> NOW' for each setting `config` gives another value than the resolved
    config `saved` with a checkpoint (as JSON), among those a resumed run must keep.
    Keys only one of them has (added or removed by a later jaxssl) are not compared."""
    saved, now = _flat(saved), _flat(json.loads(to_json(config)))
    return [f"{key}: {saved[key]!r} -> {now[key]!r}" for key in sorted(set(saved) & set(now))
            if saved[key] != now[key] and not _may_change_on_resume(key)]


def summarise_changes(changed: list[str], limit: int = 3) -> str:
    """The first `limit` of `changed_on_resume`'s lines, joined, and how many more."""
    more = f" (+{len(changed) - limit} more)" if len(changed) > limit else ""
    return "; ".join(changed[:limit]) + more


def save(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config as `workdir/config.json`; returns the path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    with open(path, "w") as f:
        f.write(to_json(config) + "\n")
    return path
