"""Ahead-of-time compiles for a TPU slice on this CPU machine (jaxssl.aot; needs libtpu from
requirements-tpu.txt): every method's tiny config compiles for v5e 2x2, memory per chip
follows the fsdp axis, tensor-annotated kernels and activations are split over 'tensor' in
the compiled program, a train or evaluation step too big for the slice exits 2 with one line,
and installing libtpu leaves plain CPU runs quiet."""

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxssl import aot, config as config_lib
from jaxssl.data import pipeline, sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPOLOGY = "v5e:2x2"  # the smallest v5e slice: 4 chips
# The suite's persistent compilation cache (conftest.py) stores the compile-only TPU
# executables too, but they cannot be read back; two methods whose evaluation steps are
# the same program (MAE and SimMIM: the ViT's features) then warn and compile again.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Error reading persistent compilation cache entry:UserWarning")


def tiny(name: str) -> str:
    return os.path.join(REPO, "tests", "configs", name)


# Every method's tiny config. The compiles run with an empty data root, so the LM's
# declared character vocabulary and the fine-tuning's checkpoint and forgetting set
# (opened by `open_data`, which aot never calls) must need no files.
EVERY_METHOD = {
    "tiny_simclr.py": {}, "tiny_moco.py": {}, "tiny_mae.py": {}, "tiny_mae.py:simmim": {},
    "tiny_clip.py": {}, "tiny_clip.py:siglip": {}, "tiny_pali.py": {}, "tiny_palm_e.py": {},
    "tiny_gato.py": {},
    "tiny_lm.py": {"data.name": "text:tiny_shakespeare?chars=65&length=17&tokenizer=char"},
    "tiny_finetune.py": {"finetune.forgetting.name": "mnist",
                         "finetune.init_from.checkpoint": "pretraining_run"},
}


@pytest.mark.parametrize("spec", sorted(EVERY_METHOD))
def test_every_method_compiles_for_a_tpu_slice_without_data(spec, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path))
    report = aot.analyse(tiny(spec), {"mesh.fsdp": "2", **EVERY_METHOD[spec]}, TOPOLOGY)
    assert report["fits"] and report["devices"] == 4 and report["chip_kind"].startswith("TPU v5")
    assert report["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1}
    assert report["memory_gib"]["parameters"] > 0 and report["memory_gib"]["temporaries"] > 0
    assert report["flops_per_device_jaxpr"] > 0 and report["flops_per_device_xla"] > 0
    reductions = [report["collectives"].get(op, {"bytes": 0})["bytes"]
                  for op in ("all-reduce", "reduce-scatter")]
    assert max(reductions) > 0  # the gradients are summed over the batch shards
    evaluation = report["eval_step"]
    requested = config_lib.load(tiny(spec), {}).eval.batch_size
    assert evaluation["fits"] and evaluation["batch_size"] == -(-requested // 4) * 4, evaluation
    assert evaluation["flops_per_device_xla"] > 0 and evaluation["temporaries_gib"] >= 0


def test_collectives_are_counted_with_their_result_bytes():
    hlo = """
  %all-reduce.3 = f32[16,16]{1,0:T(8,128)} all-reduce(%fusion.63), channel_id=7, to_apply=%add
  %all-reduce.4 = (f32[4]{0}, bf16[8]{0}) all-reduce(%a, %b), channel_id=8
  %all-gather-start = (bf16[2,4]{1,0}, bf16[8,4]{1,0}) all-gather-start(%c), dimensions={0}
  %all-gather-done = bf16[8,4]{1,0} all-gather-done(%all-gather-start)
  %fusion.1 = f32[8]{0} fusion(%all-reduce.3), kind=kLoop
}

%all-reduce-scatter.4 (input_0: f32[256,64]) -> (f32[64,64]) {
  %input_0 = f32[256,64]{1,0} parameter(0)
  %all-reduce.9 = (f32[256,64]{1,0}) all-reduce(%input_0), channel_id=1, to_apply=%add
}"""
    assert aot.collectives(hlo) == {"all-reduce": {"count": 2, "bytes": 16 * 16 * 4 + 16 + 16},
                                    "all-gather": {"count": 1, "bytes": 8 * 4 * 2},
                                    "reduce-scatter": {"count": 1, "bytes": 64 * 64 * 4}}


def test_parameter_and_optimizer_memory_fall_as_one_over_fsdp():
    """A ViT whose kernels all divide by 4: per chip, params + AdamW moments shrink 4x."""
    state = {}
    for fsdp in (1, 4):
        config = config_lib.load(tiny("tiny_finetune.py"), {
            "mesh.fsdp": str(fsdp), "mesh.data": str(4 // fsdp), "model.hidden": "256"})
        step = aot.build_step(config, TOPOLOGY)
        state[fsdp] = sum(aot.shard_bytes(getattr(step.abstract_state, part),
                                          getattr(step.state_shardings, part))
                          for part in ("params", "opt_state"))
    assert state[4] == pytest.approx(state[1] / 4, rel=0.1)


def test_tensor_axis_splits_heads_and_mlp_kernels_in_the_compiled_step():
    config = config_lib.load(tiny("tiny_lm.py"), {"mesh.tensor": "2", "mesh.fsdp": "2",
                                                  "mesh.data": "1"})
    step = aot.build_step(config, TOPOLOGY)
    compiled = step.trace_train_step().lower().compile()
    block = compiled.input_shardings[0][0].params["stack"]["block0"]
    assert block["mlp"]["fc1"]["kernel"].spec == P("fsdp", "tensor")        # ('embed', 'mlp')
    assert block["mlp"]["fc2"]["kernel"].spec == P("tensor", "fsdp")        # ('mlp', 'embed')
    assert block["self_attention"]["qkv"]["kernel"].spec == P("fsdp", None, "tensor", None)
    assert block["self_attention"]["out"]["kernel"].spec == P("tensor", None, "fsdp")
    # Each chip's program takes its [32 / 2, 64 / 2] block of fc1's [32, 64] kernel.
    entry = compiled.as_text().split("ENTRY")[1].split("\n")[0]
    assert "f32[16,32]" in entry and "f32[32,64]" not in entry


def test_tensor_axis_splits_heads_and_mlp_activations_in_the_compiled_step():
    """Megatron-style activations (parallel.constrain): each chip computes its batch shard
    (8 / fsdp 2) of the heads (4 / tensor 2) and the MLP hidden (96 / tensor 2), and never
    the whole batch or hidden. Without the constraints XLA gathers the batch for both."""
    config = config_lib.load(tiny("tiny_lm.py"), {"mesh.tensor": "2", "mesh.fsdp": "2",
                                                  "mesh.data": "1", "lm.mlp_ratio": "3.0",
                                                  "data.batch_size": "8"})
    hlo = aot.build_step(config, TOPOLOGY).trace_train_step().lower().compile().as_text()
    # [batch, 16 tokens, mlp] and [batch, 16 tokens, heads, 8 per head]
    assert set(re.findall(r"\[(\d+),16,(48|96)\]", hlo)) == {("4", "48")}
    assert set(re.findall(r"\[(\d+),16,(\d+),8\]", hlo)) == {("4", "2")}


def test_a_step_too_big_for_the_slice_exits_2_with_one_line(tmp_path):
    out = tmp_path / "reports" / "report.json"  # the folder is made
    result = subprocess.run(
        [sys.executable, "-m", "jaxssl.aot", f"--config={tiny('tiny_finetune.py')}",
         f"--topology={TOPOLOGY}", f"--json={out}", "--config.model.hidden=8192",
         "--config.model.heads=64", "--config.model.depth=4"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxssl.aot: error: the train step needs")
    # 36 GiB of parameters and AdamW moments per chip of 16, on data = 4
    assert "GiB short" in lines[0] and lines[0].endswith(
        "the state alone is over the HBM: try more fsdp (--config.mesh.fsdp, taking devices "
        "from data)")
    assert json.loads(out.read_text())["fits"] is False


SHRINK = (", rematerialisation (model.remat / lm.remat), micro-batches "
          "(--config.grad_accum_steps) or a smaller batch (--config.data.batch_size)")


@pytest.mark.parametrize("data, state, advice", [
    (4, 1.0, "; try more fsdp (--config.mesh.fsdp, taking devices from data)" + SHRINK),
    (1, 1.0, "; try a larger slice (more chips to split the state over)" + SHRINK),
    (1, 20.0, "; the state alone is over the HBM: try a larger slice (more chips to split the "
              "state over)"),
])
def test_the_shortfall_advice_fits_the_mesh(data, state, advice):
    mesh = {"data": data, "fsdp": 16 // data, "tensor": 4}
    report = {"mesh": mesh, "total_gib": 40.0, "hbm_gib_per_device": 16.0,
              "topology": "v5e:8x8", "memory_gib": {
                  "parameters": state / 4, "optimizer_state": 3 * state / 4,
                  "method_state": 0.0, "temporaries": 40.0 - state}}
    assert aot.shortfall_message(report) == (
        f"the train step needs 40.00 GiB per device of v5e:8x8 (16.0 GiB HBM), 24.00 GiB short "
        f"(state {state:.2f} GiB, temporaries {40 - state:.2f} GiB, mesh {mesh})" + advice)


def test_an_evaluation_step_too_big_for_the_slice_exits_2_with_one_line():
    # 2**25 CIFAR-sized images: 24 GiB of batch per chip of 16
    result = subprocess.run(
        [sys.executable, "-m", "jaxssl.aot", f"--config={tiny('tiny_simclr.py')}",
         f"--topology={TOPOLOGY}", f"--config.eval.batch_size={2**25}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("jaxssl.aot: error: the evaluation step (batch 33554432) needs")
    assert "eval.batch_size" in lines[0]


def test_v4_and_v5p_compile_as_one_device_per_chip():
    for topology in ("v4:2x2x1", "v5p:2x2x1"):
        devices = aot.topology_devices(topology)
        assert len(devices) == 4 and {d.core_on_chip for d in devices} == {0}


@pytest.mark.parametrize("flags, message", [
    (["--topology=v9:2x2"], "--topology='v9:2x2': expected CHIP"),
    (["--topology=v5e:2x2", "--num_slices=0"], "--num_slices=0: must be 1 or more"),
    (["--topology=v5e:2x2", f"--json={REPO}/README.md/report.json"],
     f"--json {REPO}/README.md/report.json: {REPO}/README.md is not a writable directory"),
    (["--topology=v5e:2x2", f"--hlo={REPO}"], f"--hlo {REPO} is a directory, not a file"),
    (["--topology=v5e:2x2", "--config.data.name=text:pydoc?length=17&tokenizer=char"],
     "dataset 'text:pydoc?length=17&tokenizer=char': compiling without data needs the "
     "character vocabulary's size in the name (chars=N"),
])
def test_bad_argument_is_one_line_and_exit_2(flags, message):
    result = subprocess.run(
        [sys.executable, "-m", "jaxssl.aot", f"--config={tiny('tiny_simclr.py')}", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"jaxssl.aot: error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_element_spec_matches_the_records_read():
    for name in ("digits", "synthetic:12x10x3", "text:pydoc?length=17",
                 "scenes:digits?length=64&train_size=4"):
        spec = sources.element_spec(name)
        record = sources.get_source(name, "train")[0]
        assert {k: (v.shape, v.dtype) for k, v in spec.items()} == {
            k: (np.shape(v), np.asarray(v).dtype) for k, v in record.items()}
    assert pipeline.spec_example(sources.element_spec("digits"), 2)["image"].shape == (2, 8, 8, 1)


def test_multi_slice_mesh_puts_the_data_axis_over_slices():
    config = config_lib.load(tiny("tiny_simclr.py"), {"mesh.data": "2", "mesh.fsdp": "4"})
    step = aot.build_step(config, TOPOLOGY, num_slices=2)
    slices = np.vectorize(lambda d: d.slice_index)(step.mesh.devices)
    assert step.mesh.devices.shape == (2, 4, 1)
    assert (slices[0] == slices[0].flat[0]).all() and (slices[1] != slices[0].flat[0]).all()
    report = aot.analyse(tiny("tiny_simclr.py"), {"mesh.data": "2", "mesh.fsdp": "4"}, TOPOLOGY,
                         num_slices=2)
    assert report["chips"] == 8 and report["fits"]


def test_plain_cpu_start_up_prints_nothing_with_libtpu_installed():
    assert importlib.util.find_spec("libtpu"), "requirements-tpu.txt installs libtpu"
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
    result = subprocess.run(
        [sys.executable, "-c", "import jaxssl.train, jax; print(jax.devices()[0].platform)"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() in ("cpu", "gpu")
    assert result.stderr == ""
