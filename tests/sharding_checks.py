"""Where a transformer block's kernels live on the ('data', 'fsdp', 'tensor') mesh, for the
sharded-step tests of test_train.py and test_lm.py."""

from jax.sharding import PartitionSpec as P


def expected_block_specs(mesh_config: dict, attention: str, cross_attention: str = "") -> dict:
    """{(module, param): PartitionSpec} that jaxssl.parallel.LOGICAL_RULES give a block's
    kernels when every dimension divides: 'embed' -> fsdp; 'mlp' and 'heads' -> tensor;
    'kv' replicated. An axis of size 1 is not named."""
    f = "fsdp" if mesh_config["fsdp"] > 1 else None
    t = "tensor" if mesh_config["tensor"] > 1 else None
    specs = {("mlp", "fc1"): P(f, t),                      # ('embed', 'mlp')
             ("mlp", "fc2"): P(t, f),                      # ('mlp', 'embed')
             (attention, "qkv"): P(f, None, t, None),      # ('embed', None, 'heads', 'kv')
             (attention, "out"): P(t, None, f)}            # ('heads', 'kv', 'embed')
    if cross_attention:
        specs.update({(cross_attention, "query"): P(f, None, t, None),
                      (cross_attention, "key_value"): P(f, None, t, None),
                      (cross_attention, "out"): P(t, None, f)})
    return specs


def assert_block_sharding(block: dict, mesh_config: dict, attention: str,
                          cross_attention: str = "") -> None:
    """The kernels of `block` (params of one transformer block, as jax.Arrays) carry the
    expected PartitionSpec, and each device holds only its block of each kernel."""
    specs = expected_block_specs(mesh_config, attention, cross_attention)
    for (module, name), spec in specs.items():
        kernel = block[module][name]["kernel"]
        assert kernel.sharding.spec == spec, (module, name, kernel.sharding.spec, spec)
        local = tuple(dim // (mesh_config[axis] if axis else 1)
                      for dim, axis in zip(kernel.shape, spec))
        assert {s.data.shape for s in kernel.addressable_shards} == {local}, (module, name)
