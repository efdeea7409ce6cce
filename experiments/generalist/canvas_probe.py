"""Can the digits be read off PaLM-E's canvas tokens? A ridge linear probe per grid cell.

Loads the ViT ('backbone') of a run of configs/palm_e_scenes.py (the 'encoder' stage, or
a PaLM-E stage) and fits an 11-way ridge classifier (digit 0-9 or empty) on its tokens
of every cell of 2,000 training scenes, read the way the 'canvas' stage reads them
(the whole 56 px canvas, one token per 14 px cell), then on each cell encoded alone
(as the ViT was pretrained). Prints the accuracy on the cells of 500 held-out scenes,
all cells and occupied ones.

  JAXSSL_DATA_DIR=/path/to/data python -m experiments.generalist.canvas_probe \\
      --checkpoint /tmp/palm_e_runs/canvas
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxssl import config as config_lib, handoff
from jaxssl.checkpoint import shapes_by_path
from jaxssl.data import scenes
from jaxssl.methods import base
from jaxssl.models import build_backbone

CONFIG = "configs/palm_e_scenes.py:canvas"


def scene_cells(source: scenes.SceneSource, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(canvases uint8 [count, S, S, 1], cell labels int [count, grid * grid], 10 = empty)."""
    spec, images, labels = source.spec, [], []
    for index in range(count):
        scene = source.scene_and_task(index)[0]
        images.append(scenes.render(scene, source.digits, spec))
        cell = np.full(spec.grid * spec.grid, 10)
        cell[scene.rows * spec.grid + scene.columns] = scene.labels
        labels.append(cell)
    return np.stack(images), np.stack(labels)


def ridge_accuracy(train_x, train_y, test_x, test_y, penalty: float = 1.0):
    """(accuracy on all test cells, on occupied ones) of a one-vs-all ridge classifier."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    design = lambda x: np.c_[(x - mean) / std, np.ones(len(x))]
    a = design(train_x)
    weights = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ np.eye(11)[train_y])
    predicted = (design(test_x) @ weights).argmax(1)
    occupied = test_y < 10
    return float(np.mean(predicted == test_y)), float(np.mean(predicted[occupied] ==
                                                             test_y[occupied]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a run's workdir (its ViT is read)")
    args = parser.parse_args()
    config = config_lib.load(CONFIG)
    spec = scenes.parse_scenes_dataset(config.data.name)
    vit = build_backbone(config.model)
    variables = {"params": {"backbone": nn.meta.unbox(vit.init(
        jax.random.key(0), jnp.zeros((1, spec.canvas, spec.canvas, 1)), train=False)["params"])}}
    plan = handoff.prepare_handoff(handoff.HandoffSpec(args.checkpoint),
                                   shapes_by_path(variables))
    replicated = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("d",)), P())
    flat = handoff.flatten_paths(variables)
    abstract = {path: jax.ShapeDtypeStruct(flat[path].shape, flat[path].dtype,
                                           sharding=replicated) for path in plan.loads}
    params = handoff.set_paths(variables, handoff.restore_handoff(plan, abstract))
    params = params["params"]["backbone"]
    side, cell = spec.canvas, spec.cell

    def canvas_tokens(images):
        x = base.prepare_images(jnp.asarray(images), side)
        return vit.apply({"params": params}, x, False,
                         method=lambda m, x, train: m.encode_tokens(m.embed_patches(x), train))

    def cells_alone(images):
        x = base.prepare_images(jnp.asarray(images), side)
        grid = spec.grid
        x = x.reshape(-1, grid, cell, grid, cell, 1).transpose(0, 1, 3, 2, 4, 5)
        return vit.apply({"params": params}, x.reshape(-1, cell, cell, 1), False)

    train = scene_cells(scenes.SceneSource(spec, "train", config.data.data_dir), 2000)
    test = scene_cells(scenes.SceneSource(spec, "validation", config.data.data_dir), 500)
    for name, encode in (("canvas tokens", canvas_tokens), ("each cell alone", cells_alone)):
        features = [np.asarray(jax.jit(encode)(x), np.float64).reshape(-1, vit.hidden)
                    for x in (train[0], test[0])]
        every, occupied = ridge_accuracy(features[0], train[1].reshape(-1), features[1],
                                         test[1].reshape(-1))
        print(f"{name}: {100 * every:.1f}% of all cells, {100 * occupied:.1f}% of occupied cells")


if __name__ == "__main__":
    main()
