"""The experiment scripts import as the modules run_all.sh runs them as, and the
harness runs what it is asked to (ab_step's meshes, run_all.sh's interpreter and names).

They are not otherwise run by the suite (each is minutes to hours of CPU), so a
broken import would first show as a dead run_all.sh line hours into a run.
"""

import gc
import importlib
import pathlib
import re
import subprocess

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# PyTorch's side of vs_pytorch.py runs in its own environment: never imported here.
NEEDS_TORCH = {"experiments.benchmarks.torch_steps"}
MODULES = sorted(".".join(path.relative_to(REPO).with_suffix("").parts)
                 for path in (REPO / "experiments").rglob("*.py"))


def test_every_experiment_script_is_listed():
    assert "experiments.finetune.summarize" in MODULES and len(MODULES) > 30


@pytest.mark.parametrize("module", [m for m in MODULES if m not in NEEDS_TORCH])
def test_experiment_module_imports(module):
    importlib.import_module(module)


@pytest.mark.parametrize("overrides, devices", [({}, 1), ({"mesh.data": "2"}, 2),
                                                ({"mesh.data": "2", "mesh.fsdp": "2"}, 4)])
def test_ab_step_runs_a_variant_on_the_devices_its_mesh_needs(overrides, devices):
    # A variant's mesh was once replaced by one device, so "one vs two devices" timed
    # the same step twice.
    from experiments.benchmarks.ab_step import traced_step
    trainer, _, batch = traced_step(str(REPO / "tests" / "configs" / "tiny_simclr.py"), overrides)
    assert trainer.mesh.devices.size == devices
    assert len(jax.tree.leaves(batch)[0].sharding.device_set) == devices
    workdir = pathlib.Path(trainer.workdir)
    assert workdir.is_dir()
    del trainer
    gc.collect()
    assert not workdir.exists()   # the temporary workdir goes with its Trainer


def test_undo_switches_build_a_step_without_the_cpu_form_and_redo_restores_it():
    # An A/B of a CPU form compares two programs only if the step is traced after the swap.
    import jax.numpy as jnp
    from experiments.benchmarks.ab_step import redo, undo
    from jaxssl.models import xla_cpu

    def cpu_product_dtypes():
        x = jnp.ones((4, 8), jnp.bfloat16)
        text = jax.jit(lambda a, b: xla_cpu.dense_dot_general(a, b, (((1,), (0,)), ((), ())))
                       ).lower(x, x.T).as_text()
        return set(re.findall(r"dot_general.*-> tensor<4x4x(\w+)>", text))

    before = xla_cpu.NARROW_FLOATS
    assert cpu_product_dtypes() == {"f32"}          # bfloat16 operands, float32 result
    replaced = undo(["JAXSSL_BENCH_NARROW_PRODUCTS"])
    try:
        assert xla_cpu.NARROW_FLOATS == () and cpu_product_dtypes() == {"bf16"}
    finally:
        redo(replaced)
    assert xla_cpu.NARROW_FLOATS is before and cpu_product_dtypes() == {"f32"}
    with pytest.raises(SystemExit, match="unknown undo switch JAXSSL_BENCH_NOPE"):
        undo(["JAXSSL_BENCH_NOPE"])


def test_run_all_lists_exactly_the_experiments_it_can_run():
    listed = subprocess.run(["bash", "experiments/run_all.sh", "--list"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    script = (REPO / "experiments" / "run_all.sh").read_text()
    cases = [name for labels in re.findall(r"^    ([a-z0-9_|]+)\)$", script, flags=re.MULTILINE)
             for name in labels.split("|")]
    assert sorted(line.split()[0] for line in listed if line) == sorted(cases)
    assert {"language_seed1", "mim_seed1", "simclr_fmnist_seed1"} <= set(cases)


def test_run_all_refuses_an_interpreter_without_jaxssl(tmp_path):
    # Before this check, the first experiment's `tee` had already emptied its committed log.
    result = subprocess.run(["bash", "experiments/run_all.sh", "quickstart"], cwd=REPO,
                            env={"PATH": "/usr/bin:/bin", "PYTHON": "false",
                                 "RUNS": str(tmp_path / "runs")},
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == ("run_all.sh: PYTHON=false cannot import jax and jaxssl; set PYTHON "
                             "to the environment's python\n")
    assert not (tmp_path / "runs").exists()
