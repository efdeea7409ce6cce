"""Published recipes: each config equals, key by key, the values its docstring's source gives (CITED)."""

import importlib.util
import os

import pytest

from jaxssl import config as config_lib
from jaxssl.data.root import resolve_data_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = ["configs/simclr_cifar10_resnet18.py", "configs/moco_v3_vit_tiny_cifar10.py"]


def cited_values(path: str) -> dict:
    spec = importlib.util.spec_from_file_location("recipe_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CITED


def lookup(config, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


@pytest.mark.parametrize("recipe", RECIPES)
def test_config_matches_cited_source(recipe):
    path = os.path.join(REPO, recipe)
    config = config_lib.load(path)
    cited = cited_values(path)
    assert len(cited) >= 20, "a recipe cites its source for most of its keys"
    for key, (value, source) in cited.items():
        assert source, f"{key} has no source"
        actual = lookup(config, key)
        if isinstance(value, (tuple, list)):
            assert tuple(actual) == pytest.approx(tuple(value), rel=1e-12), (key, source)
        elif isinstance(value, float):
            assert actual == pytest.approx(value, rel=1e-12), (key, source)
        else:
            assert actual == value, (key, source)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_reads_cifar10_jpeg_under_the_data_root(recipe, tmp_path, monkeypatch):
    config = config_lib.load(os.path.join(REPO, recipe))
    assert config.data.name == "cifar10_jpeg" and config.data.data_dir == "cifar10-jpeg"
    monkeypatch.setenv("JAXSSL_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(config.data.data_dir) == str(tmp_path / "cifar10-jpeg")
