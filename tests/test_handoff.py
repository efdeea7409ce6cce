"""Pretraining -> fine-tuning hand-off: exact round trips across meshes, resizing, bad input."""

import os
import shutil

import jax
import numpy as np
import pytest

from jaxssl import config as config_lib, handoff, main as cli
from jaxssl.train import Trainer

from conftest import snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINETUNE_CONFIG = os.path.join(REPO, "tests", "configs", "tiny_finetune.py")
ONE_DEVICE = {"mesh.data": "1", "mesh.fsdp": "1"}


@pytest.fixture
def pretrained(simclr_run):
    """The tiny SimCLR ViT (learned position embedding) that conftest.py trained on 8
    devices, fsdp=8: (workdir, host parameters of its final checkpoint, that step)."""
    return str(simclr_run.workdir), simclr_run.params, simclr_run.step


def finetune_trainer(checkpoint, workdir, devices=None, **overrides):
    config = config_lib.load(f"{FINETUNE_CONFIG}:{checkpoint}",
                             {"model.posemb": "learned", **overrides})
    return Trainer(config, str(workdir), devices=devices)


def assert_bitwise_equal(actual, expected):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("mesh, devices",
                         [(ONE_DEVICE, 1), ({"mesh.data": "2", "mesh.fsdp": "4"}, 8)])
def test_encoder_round_trip_is_bitwise_onto_another_mesh(mesh, devices, pretrained, tmp_path):
    pretrain_dir, saved, step = pretrained
    trainer = finetune_trainer(pretrain_dir, tmp_path, jax.devices()[:devices], **mesh)
    state = trainer.initial_state()
    assert set(state.params) == {"backbone", "head"} and state.method_state == {}
    jax.tree.map(assert_bitwise_equal, jax.device_get(state.params["backbone"]), saved["backbone"])
    for leaf in jax.tree.leaves(jax.device_get(state.params["head"])):
        assert not leaf.any()  # the new head keeps its zero initialisation
    restored_shardings = jax.tree.map(lambda x: x.sharding, state.params["backbone"])
    assert restored_shardings == trainer.state_shardings.params["backbone"]
    plan = trainer.method.pretrained.plans[0]
    assert plan.step_dir == os.path.join(pretrain_dir, "checkpoints", str(step))
    assert set(plan.loads) == {f"params/{p}" for p in _paths(saved["backbone"], "backbone")}
    assert {p.split("/")[1] for p in plan.skipped} == {"projector"}
    assert plan.fresh == ("params/head/dense/bias", "params/head/dense/kernel")


def test_a_resumed_fine_tuning_run_needs_no_pretraining_checkpoint(pretrained, tmp_path):
    # Its weights are in its own checkpoint: the run it started from may be gone.
    copy = tmp_path / "pretrain"
    shutil.copytree(pretrained[0], copy)
    workdir = tmp_path / "finetune"
    finetune_trainer(str(copy), workdir, total_steps="2").run(stop_at=1)
    shutil.rmtree(copy)
    resumed = finetune_trainer(str(copy), workdir, total_steps="2")
    assert resumed.resume_step == 1
    resumed.run()
    assert int(jax.device_get(resumed.restore().step)) == 2


def _paths(tree, prefix):
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {prefix + "/" + "/".join(k.key for k in path) for path, _ in leaves}


def bilinear_reference(grid, out_side):
    """float64 half-pixel bilinear resize of grid [g, g, D] to [out, out, D], edges clamped."""
    side = grid.shape[0]
    coordinate = np.clip((np.arange(out_side) + 0.5) * side / out_side - 0.5, 0, side - 1)
    low = np.floor(coordinate).astype(int)
    high = np.minimum(low + 1, side - 1)
    weight = coordinate - low
    rows = grid[low] * (1 - weight)[:, None, None] + grid[high] * weight[:, None, None]
    return rows[:, low] * (1 - weight)[None, :, None] + rows[:, high] * weight[None, :, None]


@pytest.mark.parametrize("side, new_side", [(4, 7), (6, 4), (3, 8)])
def test_position_embedding_resize_is_bilinear_on_the_grid(side, new_side):
    posemb = np.random.default_rng(side).normal(size=(side * side, 5))
    resized = handoff.resize_position_embedding(jax.numpy.asarray(posemb, np.float32), new_side)
    expected = bilinear_reference(posemb.reshape(side, side, 5), new_side).reshape(-1, 5)
    np.testing.assert_allclose(resized, expected, rtol=1e-5, atol=1e-6)


def test_position_embedding_resize_at_the_same_size_is_the_identity():
    posemb = jax.numpy.asarray(np.random.default_rng(0).normal(size=(9, 4)), np.float32)
    assert handoff.resize_position_embedding(posemb, 3) is posemb


def test_larger_images_get_the_resized_position_embedding_and_a_report(pretrained, tmp_path):
    pretrain_dir, saved, _ = pretrained
    trainer = finetune_trainer(pretrain_dir, tmp_path, jax.devices()[:1], **ONE_DEVICE,
                               **{"data.image_size": "16"})  # 8x8 patch grid instead of 4x4
    state = trainer.initial_state()
    path = "params/backbone/position_embedding/pos_embedding"
    assert trainer.method.pretrained.plans[0].resizes == {path: ((16, 32), (64, 32))}
    source = saved["backbone"]["position_embedding"]["pos_embedding"].astype(np.float64)
    expected = bilinear_reference(source.reshape(4, 4, 32), 8).reshape(64, 32)
    np.testing.assert_allclose(state.params["backbone"]["position_embedding"]["pos_embedding"],
                               expected, rtol=1e-5, atol=1e-6)
    assert_bitwise_equal(state.params["backbone"]["encoder"]["block1"]["mlp"]["fc2"]["kernel"],
                         saved["backbone"]["encoder"]["block1"]["mlp"]["fc2"]["kernel"])
    trainer.method.load_pretrained(state, trainer.state_shardings, workdir=str(tmp_path))
    report = (tmp_path / "handoff.txt").read_text()
    assert report == trainer.method.pretrained.plans[0].report() + "\n"
    encoder = len(jax.tree.leaves(saved["backbone"]["encoder"]))
    for line in [f"loaded {encoder + 3} arrays: params/backbone/encoder ({encoder}), "
                 "params/backbone/patch_embedding (2), params/backbone/position_embedding (1)",
                 f"resized {path} (16, 32) -> (64, 32)",
                 "skipped 7 arrays: batch_stats/projector/bn* (2), params/projector/bn* (2), "
                 "params/projector/dense* (3)",
                 "freshly initialised: params/head/dense/bias, params/head/dense/kernel"]:
        assert line in report


@pytest.mark.parametrize("overrides, message", [
    (["--config.finetune.init_from.checkpoint={nowhere}"],
     "init_from.checkpoint={nowhere}: no checkpoint there"),
    (["--config.finetune.init_from.skip=('[',)"], "init_from: bad regex '['"),
    # A step directory names the checkpoint as well as the workdir does.
    (["--config.finetune.init_from.checkpoint={pretrain}/checkpoints/{step}",
      "--config.model.patch=4"],
     "cannot fine-tune from {pretrain}/checkpoints/{step} (init_from.subtree='backbone'): "
     "params/backbone/patch_embedding/kernel: checkpoint (2, 2, 1, 32) vs model (4, 4, 1, 32)"),
    (["--config.model.depth=3"], "missing params/backbone/encoder/block2/"),
    (["--config.model.posemb=sincos2d"],
     "unexpected params/backbone/position_embedding/pos_embedding"),
    (["--config.finetune.init_from.subtree=encoder_q"],
     "no arrays under init_from.subtree='encoder_q'"),
])
def test_bad_handoff_is_one_clear_line_and_writes_nothing(overrides, message, pretrained, tmp_path,
                                                          capsys):
    pretrain_dir, _, step = pretrained
    nowhere, workdir = tmp_path / "nowhere", tmp_path / "finetune"
    before = snapshot(pretrain_dir)
    argv = [f"--config={FINETUNE_CONFIG}:{pretrain_dir}", f"--workdir={workdir}",
            "--config.model.posemb=learned",
            *(o.format(nowhere=nowhere, pretrain=pretrain_dir, step=step) for o in overrides)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxssl: error: "), err
    assert message.format(nowhere=nowhere, pretrain=pretrain_dir, step=step) in err[0]
    assert not workdir.exists() and snapshot(pretrain_dir) == before


def test_plan_applies_skip_and_renames_and_rejects_collisions():
    saved = {"params/encoder_q/encoderblock_0/kernel": (4, 4),
             "params/encoder_q/embed/kernel": (2, 4), "params/encoder_q/head/kernel": (4, 3),
             "momentum/encoder_q/embed/kernel": (2, 4), "params/decoder/kernel": (4, 4)}
    target = {"params/backbone/block0/kernel": (4, 4), "params/backbone/embed/kernel": (2, 4),
              "params/head/dense/kernel": (4, 10)}
    spec = handoff.HandoffSpec(checkpoint="ckpt", subtree="encoder_q",
                               renames=((r"encoderblock_(\d+)", r"block\1"),), skip=("/head/",))
    plan = handoff.plan_handoff(spec, "ckpt/1", saved, target)
    assert plan.loads == {"params/backbone/block0/kernel": "params/encoder_q/encoderblock_0/kernel",
                          "params/backbone/embed/kernel": "params/encoder_q/embed/kernel"}
    assert plan.skipped == ("momentum/encoder_q/embed/kernel", "params/decoder/kernel",
                            "params/encoder_q/head/kernel")
    assert plan.fresh == ("params/head/dense/kernel",) and plan.resizes == {}
    assert ("loaded 2 arrays: params/encoder_q/embed (1), params/encoder_q/encoderblock_* (1)"
            in plan.report())
    colliding = handoff.HandoffSpec("ckpt", "encoder_q", renames=(("encoderblock_0", "embed"),),
                                    skip=("/head/",))
    with pytest.raises(handoff.HandoffError, match="both map to params/backbone/embed/kernel"):
        handoff.plan_handoff(colliding, "ckpt/1", saved, target)


@pytest.mark.parametrize("config, described", [
    ({"method": "simclr", "model": {"name": "vit"}}, "method 'simclr', model 'vit'"),
    # An LM run's `model` section is the unused image-backbone default.
    ({"method": "lm", "model": {"name": "resnet18"},
      "lm": {"architecture": "decoder", "depth": 2, "hidden": 128}},
     "method 'lm', model 'decoder LM, 2 blocks of 128'")])
def test_the_report_names_the_pretraining_run_by_the_model_it_trained(config, described):
    assert handoff.pretraining_description(config) == described
