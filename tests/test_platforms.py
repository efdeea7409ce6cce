"""jaxssl.platforms: XLA:CPU's default options are set once, never over a user's own."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxssl import platforms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
YNN = "--xla_cpu_experimental_ynn_fusion_type"


@pytest.fixture
def environment(monkeypatch):
    monkeypatch.delenv("JAXSSL_CPU_XLA_DEFAULTS", raising=False)
    return monkeypatch


def test_defaults_are_appended_after_the_users_flags(environment):
    environment.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert platforms.default_cpu_xla_flags() == list(platforms.CPU_XLA_FLAGS)
    assert os.environ["XLA_FLAGS"] == " ".join(
        ["--xla_force_host_platform_device_count=8", *platforms.CPU_XLA_FLAGS])
    assert platforms.default_cpu_xla_flags() == []  # idempotent


def test_a_flag_the_user_set_is_left_alone(environment):
    environment.setenv("XLA_FLAGS", f"{YNN}=")
    assert platforms.default_cpu_xla_flags() == list(platforms.CPU_XLA_FLAGS[1:])
    assert os.environ["XLA_FLAGS"] == " ".join([f"{YNN}=", *platforms.CPU_XLA_FLAGS[1:]])


def test_off_switch_leaves_xla_flags_untouched(environment):
    environment.delenv("XLA_FLAGS", raising=False)
    environment.setenv("JAXSSL_CPU_XLA_DEFAULTS", "off")
    assert platforms.default_cpu_xla_flags() == []
    assert "XLA_FLAGS" not in os.environ


def test_this_test_process_runs_with_the_defaults():
    """conftest sets the device count; importing jaxssl appended the defaults before JAX's
    CPU backend started."""
    for flag in platforms.CPU_XLA_FLAGS:
        assert flag in os.environ["XLA_FLAGS"].split()
    assert len(jax.devices()) == 8


CONV_STEP = """
import jax, jax.numpy as jnp, numpy as np
import jaxssl
x = jax.random.normal(jax.random.key(0), (4, 16, 16, 8))
w = jax.random.normal(jax.random.key(1), (3, 3, 8, 16))
def loss(x, w):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    mean, var = y.mean((0, 1, 2)), y.var((0, 1, 2))
    h = jax.nn.relu((y - mean) * jax.lax.rsqrt(var + 1e-5)) @ jnp.linspace(-1, 1, 64).reshape(16, 4)
    return jnp.sum(jax.nn.gelu(h, approximate=False) * jax.nn.softmax(h, axis=-1))
value, grads = jax.jit(jax.value_and_grad(loss, (0, 1)))(x, w)
np.save(__import__('sys').argv[1], np.concatenate([np.ravel(value), *(np.ravel(g) for g in grads)]))
"""


def test_defaults_change_no_result_beyond_float_tolerance(tmp_path):
    """A convolution + batch-norm + dot + GELU + softmax gradient under jaxssl's options and
    under XLA's own."""
    outputs = {}
    for name, switch in (("jaxssl", "on"), ("xla", "off")):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env.update(JAXSSL_CPU_XLA_DEFAULTS=switch, JAX_PLATFORMS="cpu")
        path = str(tmp_path / f"{name}.npy")
        subprocess.run([sys.executable, "-c", CONV_STEP, path], cwd=REPO, env=env, check=True,
                       timeout=120)
        outputs[name] = np.load(path)
    np.testing.assert_allclose(outputs["jaxssl"], outputs["xla"], rtol=2e-4, atol=2e-5)
    assert not np.array_equal(outputs["jaxssl"], np.zeros_like(outputs["xla"]))


@pytest.mark.parametrize("chosen, cpu_only", [("cpu", True), ("cuda,cpu", False), ("tpu", False)])
def test_cpu_only_follows_the_chosen_platforms(monkeypatch, chosen, cpu_only):
    monkeypatch.setenv("JAX_PLATFORMS", chosen)
    assert platforms.runs_on_cpu_only() is cpu_only


def test_cpu_only_without_a_choice_looks_for_accelerator_plugins(monkeypatch):
    monkeypatch.setattr(platforms, "chosen_platforms", lambda: "")
    monkeypatch.setattr(platforms, "has_tpu_device_files", lambda: False)
    monkeypatch.setattr(platforms, "_installed", lambda module: False)
    assert platforms.runs_on_cpu_only() is True
    monkeypatch.setattr(platforms, "_installed", lambda module: module == "jax_cuda12_plugin")
    assert platforms.runs_on_cpu_only() is False
