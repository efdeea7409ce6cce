"""Tests for jaxssl.models: shapes, logical axis names, numerics against NumPy, trainability.

Every model computation goes through `jax.jit` (op-by-op dispatch compiles
each primitive separately and is far slower on CPU), model randomness uses
'rbg' keys (threefry initialisers take ~30 s to compile for a ResNet-18 on
CPU; rbg ~5 s), and test data come from NumPy.
"""
import functools
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxssl.models import (
    BACKBONE_NAMES, LinearHead, MLPHead, ResNet, ViT, build_backbone, default_model_config,
    resnet, sincos_posemb_2d)
from jaxssl.flops import traced_flops
from jaxssl.models import xla_cpu
from jaxssl.models.layers import Attention, gelu
from jaxssl.models.xla_cpu import dense_dot_general, unfused_on_cpu
from jaxssl.models.resnet import BasicBlock
from jaxssl.models.vit import PatchEmbedding, drop_path

TINY_VIT = dict(patch=4, hidden=32, depth=2, heads=4, pool='cls')
IMAGES = np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(np.float32)
LABELS = np.arange(8) % 4


def _key(seed):
    return jax.random.key(seed, impl='rbg')


def _init(model, *args, **kwargs):
    """Boxed variables of `model` for `args`."""
    return jax.jit(lambda *a: model.init(_key(1), *a, **kwargs))(*args)


@functools.partial(jax.jit, static_argnames=('model', 'train'))
def _features(model, variables, images, train=False, rng=None):
    """Compiled backbone features [B, D]; `rng` feeds the 'dropout' stream."""
    rngs = {'dropout': rng} if rng is not None else {}
    return model.apply(variables, images, train=train, rngs=rngs)


@pytest.fixture(scope='module')
def resnet_variables():
    """Unboxed variables of the tiny CIFAR ResNet-18 used by several tests."""
    return nn.unbox(_init(resnet(18, num_filters=8, cifar_stem=True), IMAGES, train=False))


@pytest.fixture(scope='module')
def vit_variables():
    """Unboxed variables of the tiny class-token ViT used by several tests."""
    return nn.unbox(_init(ViT(**TINY_VIT), IMAGES, train=False))


def _assert_all_leaves_named(boxed_params):
    """Every parameter is a Partitioned box whose names match its rank."""
    leaves = jax.tree.leaves(boxed_params, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves
    for leaf in leaves:
        assert isinstance(leaf, nn.Partitioned), type(leaf)
        assert len(leaf.names) == leaf.value.ndim, (leaf.names, leaf.value.shape)
    specs = jax.tree.leaves(nn.get_partition_spec(boxed_params),
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert [len(s) for s in specs] == [leaf.value.ndim for leaf in leaves]


# ---------------------------------------------------------------- numerics vs NumPy


def test_sincos_posemb_2d_matches_mae_formula():
    grid_h, grid_w, dim = 3, 5, 16
    quarter = dim // 4
    ref = np.zeros((grid_h * grid_w, dim))
    for i in range(grid_h):
        for j in range(grid_w):
            for k in range(quarter):
                freq = 10000.0 ** (-k / quarter)
                t = i * grid_w + j
                ref[t, k], ref[t, quarter + k] = np.sin(j * freq), np.cos(j * freq)
                ref[t, 2 * quarter + k], ref[t, 3 * quarter + \
                    k] = np.sin(i * freq), np.cos(i * freq)
    got = sincos_posemb_2d(grid_h, grid_w, dim)
    assert got.dtype == np.float32 and got.shape == (15, 16)
    np.testing.assert_allclose(got, ref, atol=1e-6)


def _perturbed(params, scale=0.1):
    """float64 params + scale * N(0, 1), so that zero-initialised biases are exercised too."""
    rng = np.random.default_rng(7)
    return jax.tree.map(lambda p: np.asarray(p, np.float64) + \
                        scale * rng.normal(size=p.shape), params)


def test_patch_embedding_matches_numpy_conv():
    x = np.random.default_rng(2).normal(size=(2, 8, 12, 3))
    module = PatchEmbedding(patch=4, hidden=5)
    params = _perturbed(nn.unbox(_init(module, x.astype(np.float32))['params']))
    ref = np.zeros((2, 2, 3, 5))
    for i in range(2):
        for j in range(3):
            patch = x[:, 4 * i:4 * i + 4, 4 * j:4 * j + 4, :]
            ref[:, i, j] = np.tensordot(patch, params['kernel'], axes=3) + params['bias']
    got = jax.jit(module.apply)({'params': params}, x.astype(np.float32))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('impl', [None, 'xla'])
@pytest.mark.parametrize('biased', [False, True])
def test_self_attention_matches_numpy_reference(impl, biased):
    """The ViT's attention (no mask), through jaxssl's and jax.nn's XLA attention, with and
    without a logit bias [B, heads, T, T] (T5's relative positions)."""
    b, t, d, h = 2, 5, 12, 3
    x = np.random.default_rng(5).normal(size=(b, t, d))
    bias = np.random.default_rng(6).normal(size=(b, h, t, t)) if biased else np.zeros(1)
    module = Attention(num_heads=h, attention_impl=impl)
    p = _perturbed(nn.unbox(_init(module, x.astype(np.float32))['params']))
    assert p['qkv']['kernel'].shape == (d, 3, h, d // h)
    q, k, v = (np.einsum('btd,dhk->bthk', x, p['qkv']['kernel'][:, i]) + p['qkv']['bias'][i]
               for i in range(3))
    logits = np.einsum('bqhk,bshk->bhqs', q, k) / np.sqrt(d // h) + bias
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = np.einsum('bhqs,bshk->bqhk', weights, v)
    ref = np.einsum('bqhk,hkd->bqd', attended, p['out']['kernel']) + p['out']['bias']
    logit_bias = jnp.asarray(bias, jnp.float32) if biased else None
    got = jax.jit(lambda p, x: module.apply(p, x, logit_bias=logit_bias))(
        {'params': p}, x.astype(np.float32))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_mlp_head_train_mode_matches_numpy_reference():
    x = np.random.default_rng(8).normal(size=(6, 5))
    head = MLPHead(hidden_dims=(7,), out_dim=3, use_bn=True, last_bn=True)
    variables = _init(head, x.astype(np.float32), train=True)
    _assert_all_leaves_named(variables['params'])
    p = _perturbed(nn.unbox(variables['params']))
    assert set(p) == {'dense0', 'bn0', 'dense1'}  # the last BN has no affine params
    assert 'bias' not in p['dense0'] and 'bias' not in p['dense1']  # Dense before BN: no bias
    got, _ = jax.jit(functools.partial(head.apply, train=True, mutable=['batch_stats']))(
        {'params': p, 'batch_stats': variables['batch_stats']}, x.astype(np.float32))

    def batch_norm(y):
        return (y - y.mean(0)) / np.sqrt(y.var(0) + 1e-5)

    hidden = np.maximum(
    batch_norm(
        x @ p['dense0']['kernel']) *
        p['bn0']['scale'] +
        p['bn0']['bias'],
         0)
    ref = batch_norm(hidden @ p['dense1']['kernel'])
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_mlp_head_without_bn_alternates_axis_names():
    head = MLPHead(hidden_dims=(6, 7), out_dim=3, use_bn=False)
    variables = jax.eval_shape(lambda: head.init(jax.random.key(0), jnp.ones((2, 5)), train=True))
    assert 'batch_stats' not in variables
    specs = nn.get_partition_spec(variables)['params']
    assert [tuple(specs[f'dense{i}']['kernel']) for i in range(3)] == [
        ('embed', 'mlp'), ('mlp', 'embed'), ('embed', 'mlp')]
    assert [tuple(specs[f'dense{i}']['bias']) for i in range(3)] == [('mlp',), ('embed',), ('mlp',)]


def test_linear_head_matches_numpy_and_zero_init():
    x = np.random.default_rng(9).normal(size=(4, 6))
    zero_init = nn.unbox(_init(LinearHead(num_classes=3), x.astype(np.float32)))
    np.testing.assert_array_equal(zero_init['params']['dense']['kernel'], 0.0)
    head = LinearHead(num_classes=3, init_std=0.5)
    variables = _init(head, x.astype(np.float32))
    _assert_all_leaves_named(variables['params'])
    p = _perturbed(nn.unbox(variables['params']))
    got = jax.jit(head.apply)({'params': p}, x.astype(np.float32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(
    got,
    x @ p['dense']['kernel'] +
    p['dense']['bias'],
    rtol=1e-5,
     atol=1e-5)


def test_drop_path_properties():
    # Each sample is zeroed with probability 0.25 (1024 of 4096 expected, 28 rows one
    # standard deviation), the kept ones scaled by 1 / 0.75.
    x = np.random.default_rng(10).normal(size=(4096, 3, 2)).astype(np.float32) + 3.0
    np.testing.assert_array_equal(drop_path(_key(11), x, 0.0), x)
    dropped = np.asarray(drop_path(_key(11), x, 0.25))
    zeroed = np.all(dropped == 0, axis=(1, 2))
    np.testing.assert_allclose(dropped[~zeroed], x[~zeroed] / 0.75, rtol=1e-6)
    assert abs(zeroed.mean() - 0.25) < 0.03


# ---------------------------------------------------------------- shapes and names


@pytest.mark.parametrize('depth,cifar_stem,image_size,features_dim', [
    (18, True, 16, 64), (18, False, 32, 64), (50, False, 32, 256)])
def test_resnet_shapes_and_names(depth, cifar_stem, image_size, features_dim):
    model = resnet(depth, num_filters=8, cifar_stem=cifar_stem)
    images = jnp.ones((2, image_size, image_size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    _assert_all_leaves_named(variables['params'])
    stem_kernel = 3 if cifar_stem else 7
    assert variables['params']['stem_conv']['kernel'].value.shape == (
        stem_kernel, stem_kernel, 3, 8)
    assert model.features_dim == features_dim
    out = jax.eval_shape(lambda v: model.apply(v, images, train=True, mutable=['batch_stats']),
                         variables)[0]
    assert out.shape == (2, features_dim) and out.dtype == jnp.float32


def test_resnet_zero_init_residual_scales(resnet_variables):
    block = resnet_variables['params']['stage1_block0']
    np.testing.assert_array_equal(block['bn1']['scale'], 0.0)
    np.testing.assert_array_equal(block['bn0']['scale'], 1.0)
    np.testing.assert_array_equal(block['proj_bn']['scale'], 1.0)


@pytest.mark.parametrize('kw', [
    dict(pool='gap'), dict(posemb='learned'), dict(scan_blocks=True, remat=True)])
def test_vit_shapes_and_names(kw):
    model = ViT(**{**TINY_VIT, **kw})
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), IMAGES, train=False))
    _assert_all_leaves_named(variables['params'])
    params = variables['params']
    assert ('cls_token' in params) == (model.pool == 'cls')
    assert ('position_embedding' in params) == (model.posemb == 'learned')
    if model.scan_blocks:
        spec = nn.get_partition_spec(
            variables)['params']['encoder']['blocks']['mlp']['fc1']['kernel']
        assert tuple(spec) == ('layers', 'embed', 'mlp')
    features = jax.eval_shape(lambda v: model.apply(v, IMAGES, train=True), variables)
    assert features.shape == (8, 32) and features.dtype == jnp.float32
    patches = jax.eval_shape(lambda v: model.apply(v, IMAGES, method='embed_patches'), variables)
    assert patches.shape == (8, 16, 32)
    tokens = jax.ShapeDtypeStruct((8, 5, 32), jnp.float32)
    encoded = jax.eval_shape(lambda v, t: model.apply(v, t, train=False, method='encode_tokens'),
                             variables, tokens)
    assert encoded.shape == (8, 6 if model.pool == 'cls' else 5, 32)


def test_vit_sizes_by_name():
    for name, (hidden, depth, heads) in {'tiny': (192, 12, 3), 'small': (384, 12, 6),
                                         'base': (768, 12, 12), 'large': (1024, 24, 16)}.items():
        model = ViT.from_name(name, patch=14, pool='cls')
        assert (
    model.hidden,
    model.depth,
    model.heads,
    model.mlp_ratio) == (
        hidden,
        depth,
        heads,
         4.0)
        assert model.patch == 14 and model.pool == 'cls' and model.features_dim == hidden
    with pytest.raises(ValueError, match='tiny'):
        ViT.from_name('huge')


# ---------------------------------------------------------------- ViT variants agree


def _stack_blocks(params, depth):
    """Non-scanned ViT params -> the layout of scan_blocks=True."""
    encoder = dict(params['encoder'])
    blocks = [encoder.pop(f'block{i}') for i in range(depth)]
    encoder['blocks'] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return {**params, 'encoder': encoder}


def test_vit_scan_and_drop_path_variants_agree(vit_variables):
    params = vit_variables['params']
    stacked = {'params': _stack_blocks(params, TINY_VIT['depth'])}
    ref = _features(ViT(**TINY_VIT), vit_variables, IMAGES)
    # Scanned + rematerialised blocks compute the same function; drop path is
    # the identity when not training ...
    scanned = ViT(**TINY_VIT, scan_blocks=True, remat=True, drop_path=0.5)
    np.testing.assert_allclose(_features(scanned, stacked, IMAGES), ref, rtol=1e-5, atol=1e-5)
    # ... and active when training.
    trained = _features(scanned, stacked, IMAGES, train=True, rng=_key(12))
    assert np.all(np.isfinite(trained)) and not np.allclose(trained, ref, atol=1e-3)


def test_vit_remat_keeps_gradients_and_frozen_patch_embed_gets_none(vit_variables):
    # A fixed random readout rather than sum(features ** 2): the latter's gradients reach
    # the blocks ~1e6 times smaller than the final norm's, so float32 rounding of the two
    # op orders (remat or not) would differ by more than the blocks' gradients can resolve.
    readout = jax.random.normal(_key(13), (TINY_VIT['hidden'],))

    def grads(model):
        loss = lambda p: jnp.sum(model.apply({'params': p}, IMAGES, train=True) @ readout)
        return jax.jit(jax.grad(loss))(vit_variables['params'])

    plain = grads(ViT(**TINY_VIT))
    frozen = grads(ViT(**TINY_VIT, remat=True, frozen_patch_embed=True))
    assert np.all(plain['patch_embedding']['kernel'] != 0)
    for leaf in jax.tree.leaves(frozen.pop('patch_embedding')):
        np.testing.assert_array_equal(leaf, 0.0)
    plain.pop('patch_embedding')
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), plain, frozen)


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize('make_model,variables_fixture', [
    (lambda dtype: resnet(18, num_filters=8, cifar_stem=True, dtype=dtype), 'resnet_variables'),
    (lambda dtype: ViT(**TINY_VIT, dtype=dtype), 'vit_variables')], ids=['resnet18', 'vit'])
def test_bfloat16_compute_float32_params_and_features(make_model, variables_fixture, request):
    variables = request.getfixturevalue(variables_fixture)
    ref = _features(make_model(jnp.float32), variables, IMAGES)
    bf16_model = make_model(jnp.bfloat16)
    bf16_variables = jax.eval_shape(lambda: bf16_model.init(jax.random.key(0), IMAGES, train=False))
    assert {p.dtype for p in jax.tree.leaves(nn.unbox(bf16_variables))} == {jnp.dtype('float32')}
    out = _features(bf16_model, variables, IMAGES)
    assert out.dtype == jnp.float32
    assert not np.array_equal(out, ref)  # computed in bfloat16 ...
    np.testing.assert_allclose(out, ref, atol=0.05 * np.abs(ref).max())  # ... to bf16 accuracy


# ---------------------------------------------------------------- registry


def test_build_backbone_names_and_overrides():
    config = default_model_config()
    assert (config.name, config.cifar_stem, config.width, config.patch, config.posemb, config.pool,
            config.drop_path, config.hidden, config.mlp_ratio) == (
                'resnet18', True, 64, 4, 'sincos2d', 'gap', 0.0, 0, 4.0)
    for name in BACKBONE_NAMES:
        if name != 'vit':
            assert isinstance(build_backbone({'name': name}), ResNet if 'resnet' in name else ViT)
    r50 = build_backbone({'name': 'resnet50', 'width': 16, 'cifar_stem': False})
    assert (r50.num_filters, r50.cifar_stem, r50.features_dim) == (16, False, 512)
    config.update(name='vit_small', depth=4, patch=8, drop_path=0.1, scan_blocks=True)
    vit = build_backbone(config, dtype=jnp.bfloat16)
    assert (vit.hidden, vit.depth, vit.heads, vit.patch, vit.drop_path, vit.scan_blocks,
            vit.dtype) == (384, 4, 6, 8, 0.1, True, jnp.bfloat16)
    explicit = build_backbone(ml_collections.ConfigDict(dict(name='vit', hidden=64, depth=3,
                                                             heads=2, mlp_ratio=2.0)))
    assert (explicit.hidden, explicit.depth, explicit.heads, explicit.mlp_ratio) == (64, 3, 2, 2.0)
    with pytest.raises(ValueError, match='heads'):
        build_backbone({'name': 'vit', 'hidden': 64, 'depth': 3})
    with pytest.raises(ValueError, match='resnet18.*vit_large'):
        build_backbone({'name': 'alexnet'})


# ---------------------------------------------------------------- trainability


@pytest.mark.parametrize('config,variables_fixture', [
    (dict(name='resnet18', width=8, cifar_stem=True), 'resnet_variables'),
    (dict(name='vit', **TINY_VIT), 'vit_variables')], ids=['resnet18', 'vit'])
def test_one_batch_overfit(config, variables_fixture, request):
    """30 Adam steps on one tiny batch with a linear head cut the loss below 30%."""
    backbone, head = build_backbone(config), LinearHead(num_classes=4)
    variables = request.getfixturevalue(variables_fixture)
    head_params = _init(head, jnp.zeros((1, backbone.features_dim)))['params']
    _assert_all_leaves_named(head_params)
    params = {'backbone': variables['params'], 'head': nn.unbox(head_params)}
    stats = variables.get('batch_stats', {})
    optimizer = optax.adam(3e-3)

    def loss_fn(params, stats):
        features, new_state = backbone.apply({'params': params['backbone'], 'batch_stats': stats},
                                             IMAGES, train=True, mutable=['batch_stats'])
        logits = head.apply({'params': params['head']}, features)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, LABELS).mean()
        return loss, new_state.get('batch_stats', {})

    @jax.jit
    def step(params, stats, opt_state):
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), stats, opt_state, loss

    opt_state, losses = optimizer.init(params), []
    for _ in range(30):
        params, stats, opt_state, loss = step(params, stats, opt_state)
        losses.append(float(loss))
    np.testing.assert_allclose(losses[0], np.log(4), rtol=1e-5)  # zero-init head
    assert losses[-1] < 0.3 * losses[0], losses


def test_gelu_is_exact_gelu_against_float64_reference():
    x = np.random.default_rng(0).normal(scale=3.0, size=4096).astype(np.float32)
    phi = np.vectorize(lambda t: 0.5 * (1.0 + math.erf(t / math.sqrt(2.0))))(x.astype(np.float64))
    np.testing.assert_allclose(gelu(jnp.asarray(x)), x * phi, rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(gelu(jnp.asarray(x)), jax.nn.gelu(x, approximate=False), atol=2e-6)


def _conv_after_relu_grads(barrier):
    """Gradients (kernel, input) of sum(conv(barrier(relu(2 z + 1)), kernel)^2)."""
    def loss(kernel, z):
        x = barrier(jax.nn.relu(2.0 * z + 1.0))
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME',
                                         dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
        return jnp.sum(y * y)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _fusions_transposing_relu(compiled_text):
    """Fused computations that hold both a transpose and the ReLU's maximum."""
    bodies = compiled_text.split('\n\n')
    return [b for b in bodies if 'fused' in b.split('\n')[0]
            and ' transpose(' in b and ' maximum(' in b]


def test_unfused_on_cpu_keeps_gradients_and_unfuses_the_transposing_copy():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(16, 8, 8, 32)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 32, 32)).astype(np.float32) / 17
    fused, unfused = _conv_after_relu_grads(lambda x: x), _conv_after_relu_grads(unfused_on_cpu)
    for a, b in zip(fused(kernel, z), unfused(kernel, z)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # The point of it: XLA:CPU fuses the ReLU into the weight gradient's transposing copy
    # unless the activation goes through the conditional.
    assert _fusions_transposing_relu(fused.lower(kernel, z).compile().as_text())
    unfused_text = unfused.lower(kernel, z).compile().as_text()
    assert not _fusions_transposing_relu(unfused_text)
    assert ' conditional(' in unfused_text
    # Other platforms lower the identity: no isnan predicate, no conditional on the data.
    lowered = {platform: jax.jit(unfused_on_cpu).trace(z).lower(
        lowering_platforms=(platform,)).as_text() for platform in ('cpu', 'tpu', 'cuda')}
    assert ['stablehlo.compare' in text for text in lowered.values()] == [True, False, False]


def test_resnet_block_weight_gradients_read_unfused_activations():
    block = BasicBlock(filters=16)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 8, 8, 16)), jnp.float32)
    variables = block.init(_key(0), x, train=False)

    def loss(params):
        y, _ = block.apply({**variables, 'params': params}, x, train=True,
                           mutable=['batch_stats'])
        return jnp.sum(y * y)

    compiled = jax.jit(jax.grad(loss)).lower(variables['params']).compile().as_text()
    assert ' convolution(' in compiled and not _fusions_transposing_relu(compiled)


_ATTENTION_OUT = (((2, 3), (0, 1)), ((), ()))   # [B, T, N, Dh] x [N, Dh, D] -> [B, T, D]


def _dense_grads(dot_general, dimension_numbers):
    """Gradients (kernel, input) of sum(dot_general(x, kernel)^2)."""
    def loss(kernel, x):
        y = dot_general(x, kernel, dimension_numbers)
        return jnp.sum(y * y)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def test_dense_dot_general_matches_float64_reference_and_dot_general_gradients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6, 3, 8)).astype(np.float32)
    kernel = rng.normal(size=(3, 8, 5)).astype(np.float32)
    expected = np.einsum('btnd,nde->bte', x.astype(np.float64), kernel.astype(np.float64))
    y = dense_dot_general(jnp.asarray(x), jnp.asarray(kernel), _ATTENTION_OUT)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    merged = _dense_grads(dense_dot_general, _ATTENTION_OUT)(kernel, x)
    plain = _dense_grads(jax.lax.dot_general, _ATTENTION_OUT)(kernel, x)
    for a, b in zip(merged, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
    # Multi-axis features (the fused qkv kernel [D, 3, heads, Dh]) and bfloat16 inputs.
    qkv = rng.normal(size=(8, 3, 2, 4)).astype(np.float32)
    y = dense_dot_general(jnp.asarray(x[:, :, 0], jnp.bfloat16), jnp.asarray(qkv, jnp.bfloat16),
                          (((2,), (0,)), ((), ())), preferred_element_type=jnp.float32)
    assert y.shape == (4, 6, 3, 2, 4) and y.dtype == jnp.float32
    np.testing.assert_allclose(y, np.einsum('btd,dcnh->btcnh', x[:, :, 0], qkv),
                               rtol=2e-2, atol=5e-2)


def test_dense_dot_general_kernel_gradient_needs_no_transposed_copy_on_cpu():
    x = np.random.default_rng(0).normal(size=(8, 16, 24)).astype(np.float32)
    kernel = np.random.default_rng(1).normal(size=(24, 40)).astype(np.float32)
    numbers = (((2,), (0,)), ((), ()))
    compiled = {name: _dense_grads(f, numbers).lower(kernel, x).compile().as_text()
                for name, f in (('plain', jax.lax.dot_general), ('merged', dense_dot_general))}
    # Unmerged, XLA:CPU transposes the output gradient before the kernel's gradient product.
    assert ' transpose(' in compiled['plain']
    assert ' transpose(' not in compiled['merged']
    # Other platforms get the unmerged product: no reshape of the operands.
    lowered = {platform: jax.jit(lambda a, b: dense_dot_general(a, b, numbers)).trace(
        x, kernel).lower(lowering_platforms=(platform,)).as_text()
        for platform in ('cpu', 'tpu', 'cuda')}
    assert ['stablehlo.reshape' in text for text in lowered.values()] == [True, False, False]


def _dot_operand_types(compiled_text):
    """For each computation of a compiled program that holds a dot: the element types of
    its parameters (XLA:CPU wraps each product in a fusion of its own)."""
    types = []
    for computation in compiled_text.split('\n\n'):
        header = computation.strip().split('\n')[0]
        if ' dot(' in computation and not header.startswith('ENTRY'):
            types.append(set(re.findall(r'param_\d+[.\d]*: (\w+)\[', header)))
    return types


def _round_to_bfloat16(x):
    return np.asarray(jnp.asarray(x, jnp.bfloat16), np.float64)


def test_bfloat16_dense_products_are_float32_products_rounded_once():
    rng = np.random.default_rng(3)
    x = _round_to_bfloat16(rng.normal(size=(4, 6, 8)))
    kernel = _round_to_bfloat16(rng.normal(size=(8, 5)))
    cotangent = rng.normal(size=(4, 6, 5)).astype(np.float32)
    numbers = (((2,), (0,)), ((), ()))

    def loss(x, kernel):
        y = dense_dot_general(x, kernel, numbers)
        return jnp.sum(y.astype(jnp.float32) * cotangent), y

    grads, y = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(
        jnp.asarray(x, jnp.bfloat16), jnp.asarray(kernel, jnp.bfloat16))
    g = _round_to_bfloat16(cotangent)
    expected = (np.einsum('btd,de->bte', x, kernel), np.einsum('bte,de->btd', g, kernel),
                np.einsum('btd,bte->de', x, g))
    for got, want in zip((y, *grads), expected):
        assert got.dtype == jnp.bfloat16
        # One rounding of the exact product: within half a bfloat16 step (2^-8 relative).
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2 ** -8, atol=1e-30)
    # Only the differentiated operand's gradient is computed (and counted): the kernel's.
    kernel_gradient = jax.jit(jax.grad(lambda kernel: loss(jnp.asarray(x, jnp.bfloat16), kernel)[0]))
    product_flops = 2 * 4 * 6 * 8 * 5
    assert traced_flops(kernel_gradient.trace(jnp.asarray(kernel, jnp.bfloat16))) == 2 * product_flops


def test_bfloat16_products_multiply_bfloat16_operands_on_cpu(monkeypatch):
    # XLA:CPU multiplies bfloat16 operands (in its AMX / AVX512-BF16 kernels) only when the
    # product's result is float32 (xla_cpu.NARROW_FLOATS).
    attention = Attention(num_heads=2, dtype=jnp.bfloat16)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 8, 16)), jnp.float32)
    params = attention.init(_key(0), x)
    loss = lambda params, x: jnp.sum(attention.apply(params, x).astype(jnp.float32) ** 2)
    gradients = lambda: jax.jit(jax.grad(loss, argnums=(0, 1)))
    # The forward and backward products: qkv, scores, weighted sum, out, and their gradients.
    operand_types = _dot_operand_types(gradients().lower(params, x).compile().as_text())
    assert len(operand_types) >= 12 and all(types == {'bf16'} for types in operand_types)
    got = gradients()(params, x)
    # With bfloat16 results XLA:CPU converts the operands and multiplies in float32.
    monkeypatch.setattr(xla_cpu, 'NARROW_FLOATS', ())
    operand_types = _dot_operand_types(gradients().lower(params, x).compile().as_text())
    assert {'f32'} in operand_types and {'bf16'} not in operand_types
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(gradients()(params, x))):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   rtol=2e-2, atol=2e-2)
    # Other platforms keep the products' own result types.
    monkeypatch.undo()
    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).trace(params, x).lower(
        lowering_platforms=('tpu',)).as_text()
    assert re.search(r'dot_general.*-> tensor<[\dx]*bf16>', lowered)


def test_bfloat16_bias_gradient_is_summed_in_float32_on_cpu(monkeypatch):
    rng = np.random.default_rng(5)
    y = jnp.asarray(rng.normal(size=(64, 32, 48)), jnp.bfloat16)
    bias = jnp.asarray(rng.normal(size=(48,)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(64, 32, 48)), jnp.bfloat16)
    gradient = lambda: jax.jit(jax.grad(
        lambda bias, y, c: jnp.sum((xla_cpu.add_bias(y, bias) * c).astype(jnp.float32))))
    expected = np.asarray(cotangent, np.float64).sum(axis=(0, 1))
    np.testing.assert_allclose(gradient()(bias, y, cotangent), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(xla_cpu.add_bias(y, bias), y + bias.astype(jnp.bfloat16))
    compiled = lambda: gradient().lower(bias, y, cotangent).compile().as_text()
    assert 'reduce-window' not in compiled()
    # Summed in bfloat16: XLA:CPU's windowed reduction (slow).
    monkeypatch.setattr(xla_cpu, 'NARROW_FLOATS', ())
    assert 'reduce-window' in compiled()
