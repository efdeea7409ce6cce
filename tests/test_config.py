"""Config resolution: defaults, overrides, and clear errors for bad keys and values."""

import glob
import importlib.util
import json
import os

import pytest

from jaxssl import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_resolve_fills_defaults_and_method_section():
    config = config_lib.resolve({"method": "simclr", "optim": {"base_lr": 2}})
    assert config.optim.base_lr == 2.0 and isinstance(config.optim.base_lr, float)
    assert config.optim.name == "lars"
    assert config.simclr.temperature == 0.5


@pytest.mark.parametrize("user, message", [
    ({"optim": {"base_lrr": 0.1}}, "unknown config key 'optim.base_lrr' (did you mean 'optim.base_lr'?)"),
    ({"totl_steps": 3}, "unknown config key 'totl_steps' (did you mean 'total_steps'?)"),
    ({"simclr": {"temprature": 0.1}}, "did you mean 'simclr.temperature'?"),
])
def test_unknown_key_names_the_nearest_valid_one(user, message):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.resolve(user)
    assert message in str(info.value)


@pytest.mark.parametrize("user, message", [
    ({"total_steps": "ten"}, "'total_steps' expects int"),
    ({"optim": {"name": "adam"}}, "'optim.name' must be one of"),
    ({"malloc_arenas": "two"}, "'malloc_arenas' must be one of"),
    ({"data": {"batch_size": 0}}, "'data.batch_size' must be >= 1"),
    ({"data": {"batch_size": 10}, "grad_accum_steps": 4}, "not divisible by grad_accum_steps"),
    ({"optim": 3}, "'optim' is a section"),
])
def test_bad_values_are_rejected(user, message):
    with pytest.raises(config_lib.ConfigError, match=message.replace("(", r"\(")):
        config_lib.resolve(user)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(config_lib.ConfigError, match="unknown method 'simclrr'.*simclr"):
        config_lib.resolve({"method": "simclrr"})


def test_overrides_parse_types_and_nest():
    tree = config_lib.overrides_to_tree(
        {"optim.base_lr": "0.5", "log.tensorboard": "false", "augment.crop_scale": "(0.2, 1.0)",
         "data.name": "mnist"})
    assert tree == {"optim": {"base_lr": 0.5}, "log": {"tensorboard": False},
                    "augment": {"crop_scale": (0.2, 1.0)}, "data": {"name": "mnist"}}


def test_load_file_with_arg_and_overrides(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(
        "import ml_collections\n"
        "def get_config(arg=None):\n"
        "    return ml_collections.ConfigDict({'total_steps': int(arg or 5)})\n")
    config = config_lib.load(f"{path}:7", {"data.batch_size": "64"})
    assert config.total_steps == 7 and config.data.batch_size == 64
    with pytest.raises(config_lib.ConfigError, match="unknown config key 'data.batchsize'"):
        config_lib.load(str(path), {"data.batchsize": "64"})
    with pytest.raises(config_lib.ConfigError, match="config file not found"):
        config_lib.load(str(tmp_path / "missing.py"))


def test_save_writes_resolved_json(tmp_path):
    config = config_lib.resolve({"total_steps": 3})
    path = config_lib.save(config, str(tmp_path))
    # every key of the resolved config, defaults included (tuples as JSON lists)
    assert json.loads(open(path).read()) == json.loads(json.dumps(config.to_dict()))


def recipe_specs():
    """Every config file of configs/ and configs/scale/, each of its STAGES where it names
    them (the argument after ':' picks one)."""
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True)):
        module_spec = importlib.util.spec_from_file_location("recipe", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        stages = getattr(module, "STAGES", (None,))
        yield from (path if stage is None else f"{path}:{stage}" for stage in stages)


def test_every_recipe_and_stage_resolves():
    # A check added to a method must not refuse a committed recipe (run_all.sh would stop
    # there, possibly hours into a run).
    specs = list(recipe_specs())
    assert len(specs) > 30
    for spec in specs:
        config_lib.load(spec)


def test_a_saved_config_of_a_method_that_does_not_augment_resolves_again(tmp_path):
    # A workdir's config.json holds every section, the default augment one included; it
    # is read back by resumes, hand-offs and sampling.
    config = config_lib.load(os.path.join(REPO, "tests", "configs", "tiny_lm.py"))
    path = config_lib.save(config, str(tmp_path))
    with open(path) as f:
        again = config_lib.resolve(json.load(f))
    assert config_lib.to_json(again) == config_lib.to_json(config)


def test_a_resume_may_change_layout_evaluation_and_paths_but_not_the_training():
    saved = json.loads(config_lib.to_json(config_lib.load(
        os.path.join(REPO, "tests", "configs", "tiny_lm.py"))))
    allowed = {"mesh.fsdp": "2", "distributed.initialize": "no", "eval.batch_size": "7",
               "checkpoint.keep": "9", "log.every_steps": "3", "malloc_arenas": "per_thread",
               "stop_on_nonfinite": "false", "data.data_dir": "/elsewhere",
               "data.num_workers": "2", "data.read_threads": "1", "data.prefetch_batches": "2",
               "lm.remat": "full", "lm.attention_impl": "xla", "lm.cross_entropy_chunk": "8"}
    resumed = config_lib.load(os.path.join(REPO, "tests", "configs", "tiny_lm.py"), allowed)
    assert config_lib.changed_on_resume(saved, resumed) == []
    refused = {"total_steps": "9", "seed": "1", "optim.base_lr": "0.5", "lm.objective": "ul2",
               "data.batch_size": "8", "grad_accum_steps": "2", "optim.moments_dtype": "bfloat16"}
    resumed = config_lib.load(os.path.join(REPO, "tests", "configs", "tiny_lm.py"),
                              {**allowed, **refused})
    assert config_lib.changed_on_resume(saved, resumed) == [
        "data.batch_size: 16 -> 8", "grad_accum_steps: 1 -> 2", "lm.objective: 'causal' -> 'ul2'",
        "optim.base_lr: 0.001 -> 0.5", "optim.moments_dtype: 'float32' -> 'bfloat16'",
        "seed: 0 -> 1", "total_steps: 4 -> 9"]
    # A key that one of them lacks (added or removed by another jaxssl version) is not compared.
    del saved["optim"]["moments_dtype"]
    saved["optim"]["retired_setting"] = 1
    assert "optim.moments_dtype: 'float32' -> 'bfloat16'" not in config_lib.changed_on_resume(
        saved, resumed)
