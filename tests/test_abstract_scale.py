"""A 10-billion-parameter model's specs and shardings come from an abstract trace that allocates nothing.

The time is reported by bench/abstract_10b.py (target: under 5 s), not asserted here.
"""


import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import scoped_params as sp
from _scripts import load_bench


def test_specs_and_shardings_of_a_10b_model_allocate_no_parameter():
    if jax.device_count() < 8:
        import pytest

        pytest.skip("needs 8 devices")
    bench = load_bench("abstract_10b")
    out = bench.measure()
    result, specs, shardings = out["result"], out["specs"], out["shardings"]
    leaves = jax.tree.leaves(specs)
    assert all(isinstance(s, sp.ParamSpec) for s in leaves)
    assert result["parameters"] == sum(s.size for s in leaves) > 10_000_000_000
    # 41 GB if allocated; the trace adds no live jax array and only a few MB of memory.
    assert result["jax_live_array_growth_bytes"] == 0
    assert not any(a.size >= 5120 * 5120 for a in jax.live_arrays())
    assert result["peak_rss_growth_mb"] < 500
    assert result["python_peak_mb"] < 200
    flat = sp.flatten(shardings)
    assert all(isinstance(s, NamedSharding) for s in flat.values())
    assert flat["transformer/block_31/mlp/up/kernel"].spec == P(None, "model")
    assert flat["transformer/block_0/attention/output/kernel"].spec == P("model", None)
    assert flat["transformer/block_0/mlp/down/bias"].spec == P()
    print(f"\n10B specs + shardings: {result['total_seconds']} s, peak RSS growth "
          f"{result['peak_rss_growth_mb']} MB")
