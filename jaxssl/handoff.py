"""Stage hand-off: pretrained arrays from a pretraining checkpoint into a fine-tuning state.

A fine-tuning config names `init_from`:

  checkpoint  a pretraining workdir (its newest step) or one step directory
              `workdir/checkpoints/<step>`; or a public checkpoint
              'timm:FILE', 'hf:DIR' or 'torchvision:FILE' (`jaxssl.interop`),
              whose encoder arrays appear under 'backbone' and whose
              architecture is checked against config.model first;
  subtree     the source module that becomes the fine-tuning encoder
              (default 'backbone', where every method keeps its encoder;
              '' = the whole model, e.g. an 'lm' run's language model);
  renames     [(regex, replacement)] applied in order with `re.sub` to each
              array's path relative to the subtree (e.g. ('encoderblock_(\\d+)',
              r'block\\1')) to adapt another naming;
  skip        regexes; a source array whose path matches one (`re.search`)
              is not read (projection heads, decoders, momentum encoders).

Paths. A *variable path* names an array as `<collection>/<module path>`:
'params/...' for the train state's parameters and e.g. 'batch_stats/...'
for its method-state collections. Source array '<c>/<subtree>/<rest>' goes
to destination '<c>/<destination>/<renamed rest>' for every collection c that the
fine-tuning model has; everything else in the checkpoint is skipped. The
destination module is 'backbone' (the encoder) unless the method names
another: a model built from several pretrained parts (PaLM-E: an image
encoder and a language model) has one `HandoffSpec` per part, each with its
own destination, and `load_handoffs` swaps all of them into the state.

`plan_handoff` checks the mapping against the fine-tuning model's shapes
without reading any array: every destination encoder array must come from
exactly one source array of the same shape, except learned position
embeddings [gh*gw, D], which are resized bilinearly on their 2-D grid when the
(square) grid differs. Anything else raises `HandoffError` naming the paths.
`restore_handoff` then reads only the planned arrays with Orbax, straight
into the fine-tuning mesh's shardings (the pretraining mesh may differ).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxssl import checkpoint
from jaxssl.checkpoint import (CONFIG_ITEM, STATE_ITEM, Checkpointer, describe_mismatch,
                               shapes_by_path)
from jaxssl.errors import CheckpointError

DESTINATION_ENCODER = "backbone"   # where the fine-tuning model keeps its encoder
POSITION_EMBEDDING = "pos_embedding"


class HandoffError(CheckpointError):
    """The pretraining checkpoint is missing or does not fit the fine-tuning model."""


@dataclasses.dataclass(frozen=True)
class HandoffSpec:
    """What to take from which checkpoint; see the module docstring."""
    checkpoint: str
    subtree: str = "backbone"
    renames: tuple[tuple[str, str], ...] = ()
    skip: tuple[str, ...] = ()
    destination: str = DESTINATION_ENCODER

    @classmethod
    def from_config(cls, init_from: Mapping[str, Any],
                    destination: str = DESTINATION_ENCODER) -> "HandoffSpec":
        """From a config's init_from section (e.g. config.finetune.init_from), into module
        `destination`; HandoffError for malformed renames or regexes."""
        renames = tuple(tuple(pair) for pair in init_from["renames"])
        if any(len(pair) != 2 for pair in renames):
            raise HandoffError(
                f"init_from.renames must be (regex, replacement) pairs, got {renames}")
        skip = tuple(init_from["skip"])
        for pattern in [pair[0] for pair in renames] + list(skip):
            try:
                re.compile(pattern)
            except re.error as error:
                raise HandoffError(f"init_from: bad regex {pattern!r}: {error}") from None
        return cls(checkpoint=init_from["checkpoint"], subtree=init_from["subtree"].strip("/"),
                   renames=renames, skip=skip, destination=destination)


# ------------------------------------------------------------------ reading
def find_step_dir(checkpoint: str) -> str:
    """The step directory of `checkpoint`: itself, or the newest step of a workdir."""
    path = os.path.abspath(checkpoint)
    if os.path.isdir(os.path.join(path, STATE_ITEM)):
        return path
    workdir = os.path.dirname(path) if os.path.basename(path) == "checkpoints" else path
    checkpointer = Checkpointer(workdir, every_steps=0, keep=1, async_save=False)
    steps = checkpointer.all_steps()
    checkpointer.close()
    step = steps[0] if steps else None
    if step is None:
        raise HandoffError(
            f"init_from.checkpoint={checkpoint}: no checkpoint there (give a pretraining "
            f"workdir holding checkpoints/<step>/, or one step directory)")
    return os.path.join(workdir, "checkpoints", str(step))


def flatten_paths(tree: Any) -> dict[str, Any]:
    """{'params/backbone/.../kernel': leaf}: each leaf by its '/'-joined path, as shapes_by_path."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
    return {"/".join(name(k) for k in path): leaf for path, leaf in leaves}


def set_paths(tree: Mapping[str, Any], values: Mapping[str, Any]) -> dict:
    """A copy of the nested dict `tree` with the leaves at '/'-joined paths set (and parents)."""
    out = dict(tree)
    for path, value in values.items():
        node = out
        *parents, leaf = path.split("/")
        for part in parents:
            node[part] = dict(node.get(part, {}))
            node = node[part]
        node[leaf] = value
    return out


def _variable_path(disk_path: str) -> str | None:
    """'params/x' -> 'params/x', 'method_state/c/x' -> 'c/x', other state entries -> None."""
    head, _, rest = disk_path.partition("/")
    if head == "params":
        return disk_path
    return rest if head == "method_state" and rest else None


def _disk_path(variable_path: str) -> str:
    collection = variable_path.partition("/")[0]
    return variable_path if collection == "params" else "method_state/" + variable_path


@contextlib.contextmanager
def _reading(step_dir: str):
    """Orbax reads of the hand-off's checkpoint step: damaged files are a HandoffError
    naming the step. The step is not passed over for an older one, as a resumed run
    does: the fine-tuning would silently start from other weights."""
    try:
        with checkpoint.reading(step_dir):
            yield
    except Exception as error:
        parent, name = os.path.split(os.path.normpath(step_dir))
        others = sorted(int(n) for n in os.listdir(parent) if n.isdigit() and n != name)
        hint = f" (other steps saved there: {others})" if others else ""
        raise HandoffError(
            f"checkpoint {step_dir} is unreadable ({checkpoint.describe_error(error)}"
            f"); give an intact step directory{hint}") from error


def saved_shapes(step_dir: str) -> dict[str, tuple[int, ...]]:
    """{variable path: shape} of every array in the step's state (reads metadata only)."""
    with _reading(step_dir):
        metadata = ocp.PyTreeCheckpointHandler().metadata(epath.Path(step_dir) / STATE_ITEM)
    return {_variable_path(path): tuple(leaf.shape)
            for path, leaf in flatten_paths(metadata.tree).items()
            if _variable_path(path) is not None and hasattr(leaf, "shape")}


def read_saved_config(step_dir: str) -> dict:
    """The pretraining config stored with the checkpoint ({} if the item is absent)."""
    directory = epath.Path(step_dir) / CONFIG_ITEM
    if not directory.exists():
        return {}
    with _reading(step_dir):
        return checkpoint.saved_config(step_dir)


# ----------------------------------------------------------------- planning
@dataclasses.dataclass(frozen=True)
class HandoffPlan:
    """A validated mapping from checkpoint arrays to fine-tuning arrays.

    loads: {destination path: source path}; resizes: {destination path:
    (source shape, destination shape)} for resized position embeddings;
    skipped: source paths not read; fresh: destination paths keeping their
    initialisation (the new head). source_shapes: {source path: shape}.
    arrays: {source path: numpy array} when the source is a public checkpoint
    already read by `jaxssl.interop` (None: read from the Orbax step_dir).
    """
    step_dir: str
    loads: dict[str, str]
    resizes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    skipped: tuple[str, ...]
    fresh: tuple[str, ...]
    source_shapes: dict[str, tuple[int, ...]]
    pretraining: str = ""
    arrays: Mapping[str, np.ndarray] | None = dataclasses.field(default=None, repr=False)

    def report(self) -> str:
        """A few lines: what was loaded, resized, skipped and freshly initialised."""
        lines = [f"hand-off from {self.step_dir}{self.pretraining}",
                 f"  loaded {len(self.loads)} arrays: {_grouped(self.loads.values())}"]
        lines += [f"  resized {path} {old} -> {new}" for path, (old, new) in self.resizes.items()]
        lines.append(f"  skipped {len(self.skipped)} arrays: {_grouped(self.skipped) or '-'}")
        lines.append(f"  freshly initialised: {', '.join(self.fresh) or '-'}")
        return "\n".join(lines)


def _grouped(paths, depth: int = 3) -> str:
    """'params/backbone/encoder (24), params/backbone/stage*_block* (57)': counts per path
    prefix of `depth` parts, numbers (block indices) shown as '*'."""
    counts = collections.Counter(re.sub(r"\d+", "*", "/".join(p.split("/")[:depth]))
                                 for p in paths)
    return ", ".join(f"{prefix} ({n})" for prefix, n in sorted(counts.items()))


def square_grid(num_positions: int) -> int | None:
    """Side g of a g x g patch grid with `num_positions` cells, or None if not square."""
    side = math.isqrt(num_positions)
    return side if side * side == num_positions else None


def _resizable(path: str, source: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """A learned position embedding [g*g, D] whose square grid changes (same D)."""
    return (path.rsplit("/", 1)[-1] == POSITION_EMBEDDING and len(source) == len(target) == 2
            and source[1] == target[1] and square_grid(source[0]) is not None
            and square_grid(target[0]) is not None)


def plan_handoff(spec: HandoffSpec, step_dir: str, saved: Mapping[str, tuple[int, ...]],
                 target: Mapping[str, tuple[int, ...]], pretraining: str = "") -> HandoffPlan:
    """Maps and checks, from shapes alone; raises HandoffError naming every misfit.

    Args:
      spec: the config's init_from.
      step_dir: the checkpoint step (for messages).
      saved: {source variable path: shape} of the checkpoint.
      target: {destination variable path: shape} of the fine-tuning model
        (its encoder under '<collection>/<spec.destination>/', plus the new head).
      pretraining: a note on the pretraining run for the report.
    """
    collections_here = {p.partition("/")[0] for p in target}
    prefix = spec.subtree + "/" if spec.subtree else ""
    mapped: dict[str, str] = {}
    skipped, duplicates = [], []
    for source in sorted(saved):
        collection, _, rest = source.partition("/")
        if (any(re.search(pattern, source) for pattern in spec.skip)
                or collection not in collections_here or not rest.startswith(prefix)):
            skipped.append(source)
            continue
        relative = rest[len(prefix):]
        for pattern, replacement in spec.renames:
            relative = re.sub(pattern, replacement, relative)
        destination = f"{collection}/{spec.destination}/{relative}"
        if destination in mapped:
            duplicates.append(f"{mapped[destination]} and {source} both map to {destination}")
        mapped[destination] = source
    if not mapped:
        top = sorted({"/".join(p.split("/")[:2]) for p in saved})
        raise HandoffError(
            f"cannot fine-tune from {step_dir}: no arrays under init_from.subtree="
            f"'{spec.subtree}' (after init_from.skip); the checkpoint holds {', '.join(top)}")
    encoder = {p: s for p, s in target.items() if p.split("/")[1:2] == [spec.destination]}
    found = {d: saved[s] for d, s in mapped.items()}
    resizes = {d: (found[d], encoder[d]) for d in found
               if d in encoder and found[d] != encoder[d] and _resizable(d, found[d], encoder[d])}
    mismatch = describe_mismatch(encoder, {**found, **{d: encoder[d] for d in resizes}}, limit=6)
    if mismatch or duplicates:
        raise HandoffError(
            f"cannot fine-tune from {step_dir} (init_from.subtree='{spec.subtree}'): "
            f"{'; '.join(duplicates + ([mismatch] if mismatch else []))}. "
            f"'missing' = in the fine-tuning encoder, not in the checkpoint; 'unexpected' = the "
            f"reverse (add an init_from.skip regex or rename)")
    return HandoffPlan(step_dir=step_dir, loads=mapped, resizes=resizes, skipped=tuple(skipped),
                       fresh=tuple(sorted(set(target) - set(encoder))),
                       source_shapes=dict(saved), pretraining=pretraining)


# ---------------------------------------------------------------- restoring
def resize_position_embedding(posemb: jax.Array, new_side: int) -> jax.Array:
    """Learned position embedding [g*g, D] -> [new_side**2, D], bilinear on the 2-D grid.

    Row t = i * g + j is grid cell (i, j), as `PositionEmbedding` lays it
    out. Output cell (i', j') samples the input at the half-pixel-centred
    coordinates ((i' + 0.5) * g / new_side - 0.5, same for j'), clamped to
    the grid (align_corners=False, no antialiasing). The same grid returns
    `posemb` itself.
    """
    side = square_grid(posemb.shape[0])
    if side == new_side:
        return posemb
    grid = posemb.reshape(side, side, posemb.shape[1])
    resized = jax.image.resize(grid, (new_side, new_side, posemb.shape[1]), method="bilinear",
                               antialias=False)
    return resized.reshape(new_side * new_side, posemb.shape[1]).astype(posemb.dtype)


def restore_handoff(plan: HandoffPlan, abstract: Mapping[str, jax.ShapeDtypeStruct]
                    ) -> dict[str, jax.Array]:
    """Reads the planned arrays onto the fine-tuning mesh: {destination path: array}.

    `abstract`: {destination path: ShapeDtypeStruct with its NamedSharding}.
    Only the planned arrays are read; each arrives with the destination's
    sharding and dtype (resized ones are read replicated, then resized).
    """
    if plan.arrays is not None:
        restored = {_disk_path(source): jax.device_put(
            np.asarray(plan.arrays[source], abstract[destination].dtype),
            NamedSharding(abstract[destination].sharding.mesh, P())
            if destination in plan.resizes else abstract[destination].sharding)
            for destination, source in plan.loads.items()}
        return _resized(plan, abstract, restored)
    targets = {}
    for destination, source in plan.loads.items():
        want = abstract[destination]
        sharding = (NamedSharding(want.sharding.mesh, P()) if destination in plan.resizes
                    else want.sharding)
        targets[_disk_path(source)] = jax.ShapeDtypeStruct(
            plan.source_shapes[source], want.dtype, sharding=sharding)
    item = set_paths({}, targets)
    restore_args = ocp.checkpoint_utils.construct_restore_args(item)
    with _reading(plan.step_dir), ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            epath.Path(plan.step_dir) / STATE_ITEM,
            args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args,
                                        partial_restore=True))
    return _resized(plan, abstract, flatten_paths(restored))


def _resized(plan: HandoffPlan, abstract: Mapping[str, jax.ShapeDtypeStruct],
             restored: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """{destination path: array} from {disk path: array}, position embeddings resized."""
    arrays = {}
    for destination, source in plan.loads.items():
        array = restored[_disk_path(source)]
        if destination in plan.resizes:
            new_side = square_grid(plan.resizes[destination][1][0])
            array = jax.jit(resize_position_embedding, static_argnums=1,
                            out_shardings=abstract[destination].sharding)(array, new_side)
        arrays[destination] = array
    return arrays


def prepare_handoff(spec: HandoffSpec, target: Mapping[str, tuple[int, ...]],
                    model_config: Mapping[str, Any] | None = None) -> HandoffPlan:
    """find_step_dir + saved_shapes + plan_handoff: the checked plan for `spec` and `target`.

    A public checkpoint ('timm:FILE', ...) is read whole by `jaxssl.interop`,
    after checking it against `model_config` (the fine-tuning config.model);
    the tensors the importer does not use are listed as skipped.
    """
    from jaxssl import interop
    if interop.parse_spec(spec.checkpoint):
        imported = interop.load(spec.checkpoint, given=model_config)
        source = {f"{path.partition('/')[0]}/{spec.subtree}/{path.partition('/')[2]}": array
                  for path, array in imported.encoder.items()}
        folded = imported.extra.get("pixel_normalization")
        note = (f" ({imported.family} weights" + (
            f"; pixel mean {list(folded[0])} and std {list(folded[1])} folded into the patch "
            f"projection" if folded else "") + ")")
        plan = plan_handoff(spec, spec.checkpoint, {p: a.shape for p, a in source.items()},
                            target, pretraining=note)
        return dataclasses.replace(plan, arrays=source,
                                   skipped=plan.skipped + tuple(imported.skipped))
    step_dir = find_step_dir(spec.checkpoint)
    config = read_saved_config(step_dir)
    note = f" (pretrained with {pretraining_description(config)})" if config else ""
    return plan_handoff(spec, step_dir, saved_shapes(step_dir), target, pretraining=note)


def pretraining_description(config: dict) -> str:
    """"method 'NAME', model 'MODEL'" of a saved run config; a language-model run names its
    LM (`config['lm']`), since its `model` section (the image backbone) is unused."""
    method = config.get("method")
    if method == "lm":
        lm = config.get("lm", {})
        model = f"{lm.get('architecture')} LM, {lm.get('depth')} blocks of {lm.get('hidden')}"
    else:
        model = config.get("model", {}).get("name")
    return f"method '{method}', model '{model}'"


# ------------------------------------------------------- into a train state
def handoff_report(plans) -> str:
    """The reports of `plans` (one per pretrained part) with one line of the arrays that
    none of them loads (freshly initialised)."""
    fresh = set.intersection(*(set(plan.fresh) for plan in plans))
    lines = [line for plan in plans for line in plan.report().splitlines()
             if not line.startswith("  freshly initialised:")]
    return "\n".join(lines + [f"  freshly initialised: {', '.join(sorted(fresh)) or '-'}"])


def load_handoffs(plans, state, shardings, workdir: str | None):
    """The variables {'params': ..., other collections} of TrainState `state` with every
    planned array of `plans` read in, onto the state's `shardings`.

    Prints `handoff_report(plans)` on process 0 and writes it to workdir/handoff.txt
    when `workdir` is given.
    """
    variables = {"params": state.params, **state.method_state}
    flat = flatten_paths(variables)
    flat_shardings = flatten_paths({"params": shardings.params, **shardings.method_state})
    for plan in plans:
        abstract = {path: jax.ShapeDtypeStruct(flat[path].shape, flat[path].dtype,
                                               sharding=flat_shardings[path])
                    for path in plan.loads}
        variables = set_paths(variables, restore_handoff(plan, abstract))
    report = handoff_report(plans)
    if jax.process_index() == 0:
        print(report, flush=True)
        if workdir is not None:
            os.makedirs(workdir, exist_ok=True)
            with open(os.path.join(workdir, "handoff.txt"), "w") as f:
                f.write(report + "\n")
    return variables


class PretrainedParts:
    """The pretrained parts a method swaps into its fresh state, one `HandoffSpec` each.

    `expect(variables)` records the model's shapes (from `Method.init`; reads
    nothing, so `jaxssl.aot` compiles without the checkpoints); `plan()` checks
    every spec against them once, reading the checkpoints' shapes (called by the
    Trainer before anything is written, so a checkpoint that does not fit stops the
    run there; not when the run resumes its own checkpoint); `load(state, shardings,
    workdir)` then reads the arrays (`load_handoffs`) and returns the variables,
    or None when there is nothing to load.
    """

    def __init__(self, specs, model_config: Mapping[str, Any] | None = None):
        self.specs = tuple(specs)
        self.model_config = model_config
        self.shapes: dict[str, tuple[int, ...]] | None = None
        self.plans: list[HandoffPlan] | None = None

    def expect(self, variables) -> None:
        if self.specs:
            self.shapes = shapes_by_path(nn.meta.unbox(variables))

    def plan(self) -> None:
        if self.specs and self.plans is None:
            if self.shapes is None:
                raise RuntimeError("PretrainedParts.plan before the model's shapes are known: "
                                   "call expect(variables) in Method.init")
            self.plans = [prepare_handoff(spec, self.shapes, model_config=self.model_config)
                          for spec in self.specs]

    def load(self, state, shardings, workdir: str | None) -> dict | None:
        if not self.specs:
            return None
        self.plan()
        return load_handoffs(self.plans, state, shardings, workdir)
