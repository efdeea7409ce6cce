"""Digit scenes with questions, captions and plans: PaLM-E's embodied tasks, generated.

A scene is a `grid` x `grid` canvas of `cell`-pixel cells holding 2-4 real digit
images (all different digits, each in its own column, at a random row), drawn
from a digit source's split ('digits': scikit-learn's embedded 8x8 digits;
'mnist': the IDX files under the data root, resized to `cell`). Its *state* is
each object's position, (column + 0.5) / grid and (row + 0.5) / grid in
[0, 1], listed in a random order; the state never says which digit is where,
the image does. Everything comes from a seed: record i of a split is the same
on every machine, and nothing is downloaded.

Tasks (TASKS, one per record, chosen uniformly), each a question and its answer:

  left_of     'what is left of the 3?'   -> '7'        (nearest object to its left)
  count_even  'how many even digits?'    -> '2'
  caption     'list the digits.'         -> '7 3 0'    (left to right)
  plan        'pick the 7, then the 0.'  -> '1,2 then 3,0' (column,row of each, by image)
  which_at    'what is at <state>?'      -> '3'        (an object named by its state)

Observation modes (`observe`):

  image  PaLM-E's multimodal sentence: the canvas as `image_tokens` image
         placeholders, then one vector placeholder per object (its state), then
         the question (which_at names its object by one more vector placeholder),
         then the answer + EOS;
  objects  PaLM-E's object-centric input: one image placeholder per object,
         filled from that object's own `cell` px image (the scene's ground-truth
         segmentation, record 'objects'), each followed by the object's state
         placeholder, in state order; then the question as in 'image';
  text   the text-only baseline: no image; the state written as digits,
         'objects at 1,2 3,0 0,1. ' before the question (which_at: 'what is at 1,2?').

Only the answer and its EOS are targets (loss_mask); image, state and question
positions never are.

**Dataset name**: 'scenes:DIGITS?key=value&...' (DIGITS: 'digits' | 'mnist'),
options `cell`, `grid`, `min_objects`, `max_objects`, `length` (row length T),
`image_tokens`, `observe`, `train_size`, `eval_size`, `seed`. Records:
'image' uint8 [grid*cell, grid*cell, 1], 'state' float32 [max_objects + 1, 2]
(the objects in order, then which_at's object; zeros beyond), 'task' int32 [],
with observe=objects also 'objects' uint8 [max_objects, cell, cell, 1] (each
object's image, in state order; zeros beyond),
and the row arrays of `jaxssl.data.multimodal` ('tokens', 'kinds', 'slots',
'loss_mask', 'segment_ids', 'positions', each [T]). Token ids are UTF-8 bytes
in the layout of `jaxssl.data.tokenizers.ByteTokenizer`, whatever its sentinels.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from jaxssl.data import multimodal, tfds_io
from jaxssl.data.multimodal import Segment
from jaxssl.data.tokenizers import EOS_ID, ByteTokenizer
from jaxssl.errors import ConfigError, DataError

SCENES_PREFIX = "scenes:"
DIGIT_SOURCES = ("digits", "mnist")
TASKS = ("left_of", "count_even", "caption", "plan", "which_at")
OBSERVE = ("image", "objects", "text")
STATE_DIM = 2
_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
_TOKENIZER = ByteTokenizer(0)  # byte ids do not depend on the sentinel count
_OPTION_TYPES = {"cell": int, "grid": int, "min_objects": int, "max_objects": int, "length": int,
                 "image_tokens": int, "observe": str, "train_size": int, "eval_size": int,
                 "seed": int}


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """A parsed scenes dataset name (see the module docstring)."""
    digits: str = "digits"
    cell: int = 8
    grid: int = 4
    min_objects: int = 2
    max_objects: int = 4
    length: int = 128
    image_tokens: int = 16
    observe: str = "image"
    train_size: int = 20000
    eval_size: int = 500
    seed: int = 0

    @property
    def canvas(self) -> int:
        return self.grid * self.cell


def is_scenes_dataset(name: str) -> bool:
    return name.startswith(SCENES_PREFIX)


def scenes_dataset_name(digits: str = "digits", **options) -> str:
    """E.g. 'scenes:digits?length=96&observe=text' (options validated by SceneSpec)."""
    SceneSpec(digits, **options)
    query = "&".join(f"{k}={v}" for k, v in sorted(options.items()))
    return SCENES_PREFIX + digits + (f"?{query}" if query else "")


def parse_scenes_dataset(name: str) -> SceneSpec:
    """'scenes:DIGITS?k=v&...' -> SceneSpec; ConfigError naming what is wrong."""
    digits, query = tfds_io.split_name(name, SCENES_PREFIX)
    spec = SceneSpec(digits, **tfds_io.parse_options(name, query, _OPTION_TYPES))
    if spec.digits not in DIGIT_SOURCES:
        raise ConfigError(f"dataset {name!r}: digit source must be one of {DIGIT_SOURCES}")
    if spec.observe not in OBSERVE:
        raise ConfigError(f"dataset {name!r}: observe must be one of {OBSERVE}")
    if not 2 <= spec.min_objects <= spec.max_objects <= min(spec.grid, 10):
        raise ConfigError(f"dataset {name!r}: need 2 <= min_objects <= max_objects <= "
                          f"min(grid, 10)")
    if min(spec.cell, spec.length, spec.image_tokens, spec.train_size, spec.eval_size) < 1:
        raise ConfigError(f"dataset {name!r}: cell, length, image_tokens and sizes must be >= 1")
    return spec


# ------------------------------------------------------------------ scenes
@dataclasses.dataclass(frozen=True)
class Scene:
    """labels, columns, rows: int [n], objects in state order; `images`: indices into the
    digit source."""
    labels: np.ndarray
    columns: np.ndarray
    rows: np.ndarray
    images: np.ndarray

    def state(self, grid: int) -> np.ndarray:
        """float32 [n, 2]: (x, y) = ((column + 0.5) / grid, (row + 0.5) / grid)."""
        return ((np.stack([self.columns, self.rows], 1) + 0.5) / grid).astype(np.float32)

    def left_to_right(self) -> np.ndarray:
        return np.argsort(self.columns)


def draw_scene(rng: np.random.Generator, spec: SceneSpec, by_label: list[np.ndarray]) -> Scene:
    """A random scene: n distinct digits in n distinct columns, random rows and images."""
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    labels = rng.choice(10, n, replace=False)
    images = np.asarray([rng.choice(by_label[label]) for label in labels])
    return Scene(labels=labels, columns=rng.choice(spec.grid, n, replace=False),
                 rows=rng.integers(0, spec.grid, n), images=images)


def render(scene: Scene, digits: np.ndarray, spec: SceneSpec) -> np.ndarray:
    """uint8 [canvas, canvas, 1]: each digit image (already `cell` px) in its cell."""
    canvas = np.zeros((spec.canvas, spec.canvas, 1), np.uint8)
    c = spec.cell
    for image, column, row in zip(scene.images, scene.columns, scene.rows):
        canvas[row * c:(row + 1) * c, column * c:(column + 1) * c] = digits[image]
    return canvas


def _place(scene: Scene, k: int) -> str:
    return f"{scene.columns[k]},{scene.rows[k]}"


def question_and_answer(task: str, scene: Scene, rng: np.random.Generator
                        ) -> tuple[list[str | int], str]:
    """(question pieces, answer): pieces are strings, or an int k for "object k's state"
    (which_at's reference by state)."""
    order = scene.left_to_right()
    labels = scene.labels
    if task == "left_of":
        k = int(rng.integers(1, len(order)))
        return [f"what is left of the {labels[order[k]]}?"], f"{labels[order[k - 1]]}"
    if task == "count_even":
        return ["how many even digits?"], f"{int(np.sum(labels % 2 == 0))}"
    if task == "caption":
        return ["list the digits."], " ".join(str(labels[k]) for k in order)
    if task == "plan":
        first, then = rng.choice(len(labels), 2, replace=False)
        return ([f"pick the {labels[first]}, then the {labels[then]}."],
                f"{_place(scene, first)} then {_place(scene, then)}")
    if task == "which_at":
        k = int(rng.integers(len(labels)))
        return ["what is at ", k, "?"], f"{labels[k]}"
    raise ValueError(f"unknown task {task!r}")


def segments(scene: Scene, pieces: list, answer: str, spec: SceneSpec) -> list[Segment]:
    """The example's multimodal sentence (see the module docstring, `observe`)."""
    text = lambda s, target=False: Segment("text", tuple(_TOKENIZER.encode(s).tolist()),
                                           target=target)
    out = []
    if spec.observe == "image":
        out.append(Segment("image", length=spec.image_tokens))
        out += [Segment("vector", length=1) for _ in scene.labels]
    elif spec.observe == "objects":
        for _ in scene.labels:
            out += [Segment("image", length=1), Segment("vector", length=1)]
    else:
        out.append(text("objects at " + " ".join(_place(scene, k)
                                                 for k in range(len(scene.labels))) + ". "))
    for piece in pieces:
        if isinstance(piece, str):
            out.append(text(piece))
        elif spec.observe != "text":
            out.append(Segment("vector", length=1))
        else:
            out.append(text(_place(scene, piece)))
    out.append(Segment("text", tuple(_TOKENIZER.encode(" " + answer).tolist()) + (EOS_ID,),
                       target=True))
    return out



def fit_digits(images: np.ndarray, cell: int) -> np.ndarray:
    """uint8 [N, s, s, 1] -> [N, cell, cell, 1]: block means (s = k cell) or repeats
    (cell = k s); DataError otherwise."""
    side = images.shape[1]
    if side % cell == 0:
        k = side // cell
        blocks = images.reshape(len(images), cell, k, cell, k, 1).astype(np.float32)
        return np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)
    if cell % side == 0:
        k = cell // side
        return np.repeat(np.repeat(images, k, axis=1), k, axis=2)
    raise DataError(f"scenes: digit images of {side} px do not fit cells of {cell} px "
                    f"(one must divide the other)")


class SceneSource:
    """Random-access scenes of one split (see the module docstring for the records)."""

    def __init__(self, spec: SceneSpec, split: str, data_dir=None):
        if split not in _SPLIT_CODES:
            raise DataError(f"scenes split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
        from jaxssl.data.sources import get_source  # (sources imports this module)
        source = get_source(spec.digits, "train" if split == "train" else "test", data_dir)
        self.spec, self.split = spec, split
        self._description = f"SceneSource({spec!r}, split={split!r}, digits={source!r})"
        self.digits = fit_digits(source.images, spec.cell)
        self.by_label = [np.flatnonzero(source.labels == label) for label in range(10)]
        self.size = spec.train_size if split == "train" else spec.eval_size
        self.image_shape = (spec.canvas, spec.canvas, 1)
        self[0]  # an example too long for a row fails here, not in the first batch

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        # Grain checks a restored iterator against repr(source): deterministic, content-based.
        return self._description

    def scene_and_task(self, index: int) -> tuple[Scene, int, list, str]:
        """(scene, task index, question pieces, answer) of record `index`."""
        rng = np.random.default_rng((self.spec.seed, _SPLIT_CODES[self.split], index))
        scene = draw_scene(rng, self.spec, self.by_label)
        task = int(rng.integers(len(TASKS)))
        pieces, answer = question_and_answer(TASKS[task], scene, rng)
        return scene, task, pieces, answer

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        scene, task, pieces, answer = self.scene_and_task(index)
        row = multimodal.pack([segments(scene, pieces, answer, self.spec)], self.spec.length)
        state = np.zeros((self.spec.max_objects + 1, STATE_DIM), np.float32)
        positions = scene.state(self.spec.grid)
        state[:len(positions)] = positions
        referred = [p for p in pieces if not isinstance(p, str)]
        if referred:
            state[len(positions)] = positions[referred[0]]
        record = {k: row[k][0] for k in multimodal.ROW_KEYS}
        if self.spec.observe == "objects":
            record["objects"] = np.zeros((self.spec.max_objects,) + self.digits.shape[1:],
                                         np.uint8)
            record["objects"][:len(scene.images)] = self.digits[scene.images]
        return {**record, "image": render(scene, self.digits, self.spec), "state": state,
                "task": np.int32(task)}


def element_spec(name: str) -> dict[str, jax.ShapeDtypeStruct]:
    """{key: ShapeDtypeStruct} of one record of scenes dataset `name`, without drawing any."""
    spec = parse_scenes_dataset(name)
    row = {k: jax.ShapeDtypeStruct((spec.length,), np.int32)
           for k in ("tokens", "kinds", "slots", "segment_ids", "positions")}
    if spec.observe == "objects":
        row["objects"] = jax.ShapeDtypeStruct((spec.max_objects, spec.cell, spec.cell, 1),
                                              np.uint8)
    return {**row, "loss_mask": jax.ShapeDtypeStruct((spec.length,), np.bool_),
            "image": jax.ShapeDtypeStruct((spec.canvas, spec.canvas, 1), np.uint8),
            "state": jax.ShapeDtypeStruct((spec.max_objects + 1, STATE_DIM), np.float32),
            "task": jax.ShapeDtypeStruct((), np.int32)}


def get_scene_source(name: str, split: str, data_dir=None) -> SceneSource:
    return SceneSource(parse_scenes_dataset(name), split, data_dir)
