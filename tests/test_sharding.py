"""Partition rules become NamedShardings; parameters are created directly sharded; sharded training
matches one device. Runs on the 8 host CPU devices conftest.py asks XLA for."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import scoped_params as sp
from scoped_params.sharding import (Rules, ShardingError, fixed_size_partitioner, from_tf_partitioner,
                                    min_max_variable_partitioner, variable_axis_size_partitioner)
from _scripts import load_example

X = jax.ShapeDtypeStruct((8, 16), jnp.float32)


@pytest.fixture(scope="module")
def mesh():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    return jax.make_mesh((2, 4), ("batch", "model"), axis_types=(AxisType.Auto, AxisType.Auto))


def _specs_by_name(model, *args):
    return {n: s.spec for n, s in sp.flatten(sp.shardings(model, jax.make_mesh(
        (2, 4), ("batch", "model"), axis_types=(AxisType.Auto,) * 2), *args)).items()}


def _net(x):
    rules = Rules([(r"dense_\d+/kernel$", P(None, "model")), (r"dense_\d+/bias$", P("model")),
                   (r"/table$", P("model", "batch"))])
    with sp.scope("net", partitioner=rules):
        for i in range(2):
            with sp.scope(f"dense_{i}"):
                x = x @ sp.get_param("kernel", (x.shape[-1], 16)) + sp.get_param(
                    "bias", (16,), init=jax.nn.initializers.zeros)
        with sp.scope("embed"):
            table = sp.get_param("table", (32, 16))
        with sp.scope("head", partitioner=fixed_size_partitioner(4, axis=1)):
            w = sp.get_param("w", (16, 8))
            scale = sp.get_param("scale", init=1.0)  # a scalar: partitioners ignore it
        with sp.scope("pinned"):
            pinned = sp.get_param("kernel", (16, 16), sharding=P("batch", None))
    return (x @ pinned + table[:8]) @ w * scale


EXPECTED = {
    "net/dense_0/kernel": P(None, "model"), "net/dense_0/bias": P("model"),
    "net/dense_1/kernel": P(None, "model"), "net/dense_1/bias": P("model"),
    "net/embed/table": P("model", "batch"),
    "net/head/w": P(None, "model"), "net/head/scale": P(),
    "net/pinned/kernel": P("batch", None),
}


def test_every_parameter_is_created_with_the_requested_sharding(mesh):
    model = sp.transform(_net)
    params = sp.init_sharded(model, mesh, jax.random.key(0), X)
    flat = sp.flatten(params)
    assert set(flat) == set(EXPECTED)
    for name, value in flat.items():
        assert isinstance(value.sharding, NamedSharding), name
        assert value.sharding.mesh == mesh, name
        assert value.sharding.is_equivalent_to(NamedSharding(mesh, EXPECTED[name]), value.ndim), name
    # Sharding changes where values live, never what they are.
    reference = sp.flatten(model.init(jax.random.key(0), X))
    for name, value in flat.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(reference[name]), err_msg=name)


def test_shardings_tree_matches_params_and_comes_from_an_abstract_trace(mesh):
    model = sp.transform(_net)
    before = {id(a) for a in jax.live_arrays()}
    shardings = sp.shardings(model, mesh, X)
    assert not [a for a in jax.live_arrays() if id(a) not in before and a.size >= 16 * 16]
    assert {n: s.spec for n, s in sp.flatten(shardings).items()} == EXPECTED
    # The same answer from a specs tree, and PartitionSpecs without a mesh.
    specs = model.specs(X)
    assert sp.flatten(sp.shardings(specs, mesh)) == sp.flatten(shardings)
    assert sp.flatten(sp.sharding.partition_specs(model, X)) == EXPECTED


def test_rule_lists_match_the_full_name_and_the_first_match_wins():
    rules = Rules([(r"^enc/.*/kernel$", P(None, "model")), (r"kernel$", P("model", None)),
                   (r"bias$", None)])
    assert rules("enc/layer/kernel", (4, 4), np.float32) == P(None, "model")
    assert rules("dec/layer/kernel", (4, 4), np.float32) == P("model", None)
    assert rules("dec/layer/bias", (4,), np.float32) is None
    assert rules("dec/layer/gamma", (4,), np.float32) is None  # no match: replicated
    combined = Rules([(r"dec/", P(None, None))]) + rules
    assert combined("dec/layer/kernel", (4, 4), np.float32) == P(None, None)


def test_partitioner_is_inherited_by_sub_scopes_overridden_inside_and_kept_by_captured_scopes():
    outer = Rules([(r"w$", P("model"))])
    inner = Rules([(r"w$", P(None, "model"))])

    def fn():
        with sp.scope("a", partitioner=outer) as a:
            with sp.scope("b"):
                sp.get_param("w", (8, 8))  # inherited
            with sp.scope("c", partitioner=inner):
                sp.get_param("w", (8, 8))  # overridden
                with sp.scope("d"):
                    sp.get_param("w", (8, 8))  # the override is inherited too
        with sp.scope(a):  # TF's testPropagatePartitionerOnReopening
            with sp.scope("e"):
                sp.get_param("w", (8, 8))
        with sp.scope("plain"):
            sp.get_param("w", (8, 8))  # no partitioner: replicated

    assert _specs_by_name(sp.transform(fn)) == {
        "a/b/w": P("model"), "a/c/w": P(None, "model"), "a/c/d/w": P(None, "model"),
        "a/e/w": P("model"), "plain/w": P()}


def test_explicit_sharding_overrides_the_scope_partitioner_and_reuse_keeps_the_creators():
    def fn():
        with sp.scope("s", partitioner=Rules([(r".", P("model"))])):
            sp.get_param("auto", (8, 8))
            sp.get_param("pinned", (8, 8), sharding=P(None, "batch"))
            sp.get_param("replicated", (8, 8), sharding=P())
        with sp.scope("s", reuse=True, partitioner=Rules([(r".", P(None, "model"))])):
            sp.get_param("auto", (8, 8), sharding=P("batch"))  # reuse: the creator decided

    assert _specs_by_name(sp.transform(fn)) == {
        "s/auto": P("model"), "s/pinned": P(None, "batch"), "s/replicated": P()}



def test_adding_rules_keeps_the_flags_of_compiled_patterns():
    import re
    ignore_case = Rules([(re.compile(r"DENSE/KERNEL$", re.IGNORECASE), P(None, "model"))])
    assert ignore_case("net/dense/kernel", (8, 8), np.float32) == P(None, "model")
    for combined in (ignore_case + Rules([]), Rules([]) + ignore_case, ignore_case + []):
        assert combined("net/dense/kernel", (8, 8), np.float32) == P(None, "model")

def test_a_plain_callable_or_pair_list_is_a_partitioner_and_none_means_replicated():
    def by_size(name, shape, dtype):
        return P("model") if np.prod(shape) >= 64 else None

    def fn():
        with sp.scope("big_or_small", partitioner=by_size):
            sp.get_param("big", (8, 8))
            sp.get_param("small", (4,))
        with sp.scope("pairs", partitioner=[(r"w$", P(None, "model"))]):
            sp.get_param("w", (4, 8))

    assert _specs_by_name(sp.transform(fn)) == {
        "big_or_small/big": P("model"), "big_or_small/small": P(), "pairs/w": P(None, "model")}


def test_a_custom_getter_sees_and_may_change_the_sharding():
    def shard_everything(getter, name, *args, **kwargs):
        kwargs["sharding"] = P("batch")
        return getter(name, *args, **kwargs)

    def fn():
        with sp.scope("g", custom_getter=shard_everything):
            sp.get_param("w", (8, 8))

    assert _specs_by_name(sp.transform(fn)) == {"g/w": P("batch")}


def test_tf_stock_partitioners_give_tf_counts_and_shard_the_split_axis():
    # Counts from TF's partitioned_variables_test (reference section F, rule 38).
    assert fixed_size_partitioner(5).partitions((10, 10), np.float32) == [5, 1]
    assert fixed_size_partitioner(20, axis=1).partitions((10, 10), np.float32) == [1, 10]
    assert min_max_variable_partitioner(100, min_slice_size=2 << 10).partitions(
        (2048,), np.float32) == [4]
    assert min_max_variable_partitioner(100).partitions((2048, 1024), np.float32) == [32, 1]
    assert min_max_variable_partitioner(16).partitions((2048, 1024), np.float32) == [16, 1]
    assert min_max_variable_partitioner(1).partitions((2048, 1024), np.float32) == [1, 1]
    assert min_max_variable_partitioner(100).partitions((16, 128, 1024), np.float32) == [16, 1, 1]
    assert variable_axis_size_partitioner(4 * 1024).partitions((1024, 4), np.float32) == [4, 1]
    # TF's count decides whether an axis is sharded; the mesh axis decides into how many pieces.
    assert fixed_size_partitioner(4, axis=1)("w", (8, 8), np.float32) == P(None, "model")
    assert fixed_size_partitioner(4, mesh_axis="batch")("w", (8, 8), np.float32) == P("batch")
    assert fixed_size_partitioner(4)("w", (1, 8), np.float32) is None  # one row: not split
    assert min_max_variable_partitioner(4)("w", (8, 8), np.float32) is None  # small: replicated
    tf_style = from_tf_partitioner(lambda shape, dtype: [1, 2], mesh_axis="model")
    assert tf_style("w", (4, 4), np.float32) == P(None, "model")


@pytest.mark.parametrize("shape, dtype", [((16, 8), np.float32), ((16, 8), jnp.bfloat16),
                                          ((2, 3), np.float32), ((64, 4, 2), np.int8)])
def test_tfs_own_partitioners_through_from_tf_partitioner_match_the_stock_ones(shape, dtype):
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    pairs = [(tf1.fixed_size_partitioner(4), fixed_size_partitioner(4)),
             (tf1.fixed_size_partitioner(4, axis=1), fixed_size_partitioner(4, axis=1)),
             (tf1.min_max_variable_partitioner(4, min_slice_size=64),
              min_max_variable_partitioner(4, min_slice_size=64)),
             (tf1.variable_axis_size_partitioner(64), variable_axis_size_partitioner(64))]
    for tf_fn, stock in pairs:
        adapted = from_tf_partitioner(tf_fn)
        tf_counts = tf_fn(shape=tf.TensorShape(shape), dtype=tf.as_dtype(np.dtype(dtype)))
        assert adapted.partitions(shape, dtype) == tf_counts == stock.partitions(shape, dtype)
        assert adapted("w", shape, dtype) == stock("w", shape, dtype)


def test_tfs_own_partitioners_in_a_scope_shard_like_the_stock_ones(mesh):
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1

    def model(partitioner):
        def fn():
            with sp.scope("s", partitioner=partitioner):
                sp.get_param("w", (16, 8))
                sp.get_param("small", (4, 2))
        return sp.transform(fn)

    for tf_fn in (tf1.fixed_size_partitioner(4),
                  tf1.min_max_variable_partitioner(4, min_slice_size=64),
                  tf1.variable_axis_size_partitioner(64)):
        specs = {n: s.spec for n, s in sp.flatten(
            sp.shardings(model(from_tf_partitioner(tf_fn)), mesh)).items()}
        assert specs["s/w"] == P("model")
    stock = {n: s.spec for n, s in sp.flatten(
        sp.shardings(model(min_max_variable_partitioner(4, min_slice_size=64)), mesh)).items()}
    tf_min_max = {n: s.spec for n, s in sp.flatten(sp.shardings(model(from_tf_partitioner(
        tf1.min_max_variable_partitioner(4, min_slice_size=64))), mesh)).items()}
    assert tf_min_max == stock == {"s/w": P("model"), "s/small": P()}



def test_stock_partitioners_give_tfs_counts_for_every_axis_including_negative_ones():
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    shapes = [(1000, 3), (2048, 1024), (16, 8), (3,), (64, 4, 2), (7, 5, 3)]
    dtypes = [np.float32, jnp.bfloat16, np.int8, np.float64]
    for shape in shapes:
        for axis in range(-len(shape), len(shape)):
            pairs = [(tf1.variable_axis_size_partitioner(1 << 20, axis=axis),
                      variable_axis_size_partitioner(1 << 20, axis=axis)),
                     (tf1.variable_axis_size_partitioner(64, axis=axis, max_shards=3),
                      variable_axis_size_partitioner(64, axis=axis, max_shards=3)),
                     (tf1.variable_axis_size_partitioner(100, axis=axis),
                      variable_axis_size_partitioner(100, axis=axis)),
                     (tf1.fixed_size_partitioner(4, axis=axis), fixed_size_partitioner(4, axis=axis)),
                     (tf1.min_max_variable_partitioner(4, axis=axis, min_slice_size=64),
                      min_max_variable_partitioner(4, axis=axis, min_slice_size=64))]
            for dtype in dtypes:
                for tf_fn, ours in pairs:
                    expected = tf_fn(shape=tf.TensorShape(shape), dtype=tf.as_dtype(np.dtype(dtype)))
                    assert ours.partitions(shape, dtype) == expected, (ours, shape, dtype)
    # The reviewer's cases: TF leaves (1000, 3) whole and splits (2048, 1024) in 8 along axis -1.
    assert variable_axis_size_partitioner(1 << 20, axis=-1).partitions((1000, 3), np.float32) == [1, 1]
    assert variable_axis_size_partitioner(1 << 20, axis=-1).partitions(
        (2048, 1024), np.float32) == [1, 8]
    assert variable_axis_size_partitioner(1 << 20, axis=-1)("w", (1000, 3), np.float32) is None


def test_variable_axis_size_partitioner_rejects_non_positive_sizes_like_tf():
    with pytest.raises(ValueError, match="max_shards must be positive"):
        variable_axis_size_partitioner(64, max_shards=-1)
    with pytest.raises(ValueError, match=r"Both max_shard_bytes and bytes_per_string_element must be "
                                         r"positive.*bytes_per_string_element is 0"):
        variable_axis_size_partitioner(64, bytes_per_string_element=0)
    with pytest.raises(ValueError, match=r"Both max_shard_bytes .* positive.*max_shard_bytes is 0"):
        variable_axis_size_partitioner(0)
    # TF reads max_shards=0 as "no limit", as it does None.
    assert variable_axis_size_partitioner(16, max_shards=0).partitions((16, 8), np.float32) == [16, 1]
    assert variable_axis_size_partitioner(16, max_shards=2).partitions((16, 8), np.float32) == [2, 1]


def test_from_tf_partitioner_on_a_dtype_tf_lacks_names_the_parameter_and_the_fix(mesh):
    tf = pytest.importorskip("tensorflow")
    ml_dtypes = pytest.importorskip("ml_dtypes")
    adapted = from_tf_partitioner(tf.compat.v1.fixed_size_partitioner(4))

    def fn():
        with sp.scope("net", partitioner=adapted):
            sp.get_param("w", (16, 8), dtype=ml_dtypes.float8_e8m0fnu,
                         init=jax.nn.initializers.ones)

    with pytest.raises(ShardingError) as e:
        _fails(fn, mesh)
    msg = str(e.value)
    assert "'net/w'" in msg and "float8_e8m0fnu" in msg and "test_sharding.py" in msg
    assert "fix:" in msg and "sp.sharding.fixed_size_partitioner" in msg

def test_a_user_partitioner_written_for_tf_types_gets_them():
    tf = pytest.importorskip("tensorflow")

    def split_rows_if_big(shape, dtype):  # reads TF's TensorShape / DType API
        big = shape.num_elements() * dtype.size > 64
        return [2 if big else 1] + [1] * (shape.ndims - 1)

    adapted = from_tf_partitioner(split_rows_if_big)
    assert adapted("w", (16, 8), np.float32) == P("model")
    assert adapted("w", (2, 2), np.float32) is None
    assert adapted.partitions((16, 8), np.float32) == split_rows_if_big(
        shape=tf.TensorShape((16, 8)), dtype=tf.float32)


def test_scalars_ignore_the_partitioner_like_tf():
    def fn():
        with sp.scope("s", partitioner=fixed_size_partitioner(2)):
            sp.get_param("scalar", (), init=jax.nn.initializers.zeros)

    assert _specs_by_name(sp.transform(fn)) == {"s/scalar": P()}


def test_transform_with_state_gives_shardings_for_params_and_state(mesh):
    def fn(x):
        with sp.scope("bn", partitioner=Rules([(r".", P("model"))])):
            mean = sp.get_state("moving_mean", (16,), init=jax.nn.initializers.zeros)
            gamma = sp.get_param("gamma", (16,), init=jax.nn.initializers.ones)
            sp.set_state("moving_mean", 0.9 * mean + 0.1 * x.mean(0))
        return x * gamma

    model = sp.transform_with_state(fn)
    params_sh, state_sh = sp.shardings(model, mesh, X)
    assert params_sh["bn"]["gamma"].spec == P("model")
    assert state_sh["bn"]["moving_mean"].spec == P("model")
    params, state = sp.init_sharded(model, mesh, jax.random.key(0), X)
    assert params["bn"]["gamma"].sharding.spec == P("model")
    assert state["bn"]["moving_mean"].sharding.spec == P("model")


def test_init_sharded_takes_a_seed_as_model_init_does(mesh):
    model = sp.transform(lambda x: sp.layers.dense(x, 8))
    x = jnp.ones((4, 8))
    chex.assert_trees_all_equal(sp.init_sharded(model, mesh, 0, x), model.init(0, x))


def test_shardings_and_init_sharded_pass_model_keywords_named_like_their_own_arguments(mesh):
    # Their own leading arguments are positional-only (as model.init's key): before, a model keyword
    # named key (or mesh, ...) collided with them ("got multiple values for argument 'key'").
    import inspect

    for fn, own in ((sp.shardings, ["model_or_specs", "mesh"]),
                    (sp.init_sharded, ["model", "mesh", "key"])):
        params = list(inspect.signature(fn).parameters.values())
        assert [p.name for p in params[:len(own)]] == own
        assert all(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params[:len(own)])
        assert [p.kind for p in params[len(own):]] == [inspect.Parameter.VAR_POSITIONAL,
                                                       inspect.Parameter.VAR_KEYWORD]

    def fn(x, key, mesh="m", model_or_specs="net"):
        assert (key, mesh, model_or_specs) == ("k", "m", "net")
        return x @ sp.get_param("w", (x.shape[-1], 8), sharding=P(None, "model"))

    model = sp.transform(fn)
    kwargs = dict(key="k", mesh="m", model_or_specs="net")
    assert sp.shardings(model, mesh, X, **kwargs)["w"].spec == P(None, "model")
    params = sp.init_sharded(model, mesh, 0, X, key="k")
    assert params["w"].sharding.spec == P(None, "model")
    np.testing.assert_array_equal(params["w"], model.init(0, X, **kwargs)["w"])



def test_sharding_helpers_take_model_keywords_and_keep_numpy_scalars_concrete_as_init_does(mesh):
    # A model keyword named like a helper's own first argument reaches the model, and a NumPy scalar
    # argument steers the model's Python control flow, as in model.init.
    def fn(x, wide, model=None, model_or_specs=None):
        assert model == "m" and model_or_specs == "s"
        width = 8 if wide else 4  # a traced np.bool_ would raise here
        return x @ sp.get_param("w", (x.shape[-1], width), sharding=P(None, "model"))

    model = sp.transform(fn)
    kw = dict(model="m", model_or_specs="s")
    wide = np.bool_(True)
    assert sp.sharding.partition_specs(model, X, wide, **kw)["w"] == P(None, "model")
    assert sp.sharding.abstract_params(model, mesh, X, wide, **kw)["w"].shape == (X.shape[-1], 8)
    assert sp.shardings(model, mesh, X, wide, **kw)["w"].spec == P(None, "model")
    params = sp.init_sharded(model, mesh, 0, X, wide, **kw)
    assert params["w"].shape == (X.shape[-1], 8)
    np.testing.assert_array_equal(params["w"], model.init(0, X, wide, **kw)["w"])
    np.testing.assert_array_equal(sp.sharding.sharded_init_fn(model, mesh, X, wide, **kw)(
        jax.random.key(0))["w"], params["w"])

def test_init_sharded_never_holds_a_whole_parameter_on_one_device(mesh):
    def fn():
        with sp.scope("big"):
            for i in range(3):  # same shape and initializer: model.init would stack them
                sp.get_param(f"w{i}", (1024, 1024), sharding=P("batch", "model"))

    model = sp.transform(fn)
    whole = 1024 * 1024 * 4
    compiled = sp.sharding.sharded_init_fn(model, mesh).lower(jax.random.key(0)).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        pytest.skip("this backend reports no memory analysis")
    # Each device holds 1/8 of each (plus a few bytes of output tuple).
    assert 3 * whole // 8 <= stats.output_size_in_bytes < 3 * whole // 8 + 1024
    assert stats.temp_size_in_bytes < whole  # not even one whole parameter as scratch


# --- errors name the parameter, what was asked, what was found, and the fix -----------------------


def test_an_abstract_mesh_plans_shardings_for_more_devices_than_the_machine_has():
    # 32 devices of axis sizes 4 x 8: no devices needed, the same specs and checks as a Mesh.
    big = AbstractMesh((4, 8), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
    assert big.size > jax.device_count()
    model = sp.transform(_net)
    flat = sp.flatten(sp.shardings(model, big, X))
    assert {n: s.spec for n, s in flat.items()} == EXPECTED
    assert all(s.mesh == big for s in flat.values())
    abstract = sp.flatten(sp.sharding.abstract_params(model, big, X))
    assert {n: (a.shape, a.sharding) for n, a in abstract.items()} == {
        n: (s.shape, flat[n]) for n, s in sp.flatten(model.specs(X)).items()}

    wide = AbstractMesh((2, 3), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
    with pytest.raises(ShardingError, match=r"'net/dense_0/bias'.*size 16, not divisible by 3"):
        sp.shardings(model, wide, X)


def test_sharded_init_fn_lowers_for_an_abstract_mesh_and_init_sharded_says_it_needs_devices():
    big = AbstractMesh((4, 8), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
    model = sp.transform(_net)
    key = jax.eval_shape(jax.random.key, 0)
    lowered = sp.sharding.sharded_init_fn(model, big, X).trace(key).lower(lowering_platforms=("tpu",))
    out = sp.flatten(lowered.out_info)
    assert {n: o.sharding for n, o in out.items()} == sp.flatten(sp.shardings(model, big, X))
    assert 'mesh = <["batch"=4, "model"=8]>' in lowered.as_text()
    with pytest.raises(TypeError, match=r"(?s)no devices to create the parameters on.*fix:.*"
                                        r"sharded_init_fn.*lowering_platforms"):
        sp.init_sharded(model, big, jax.random.key(0), X)


def _fails(fn, mesh, *args):
    return sp.shardings(sp.transform(fn), mesh, *args)


def test_unknown_mesh_axis_is_an_error_naming_the_parameter_and_the_mesh_axes(mesh):
    def fn():
        with sp.scope("layer"):
            sp.get_param("w", (8, 8), sharding=P("modle"))

    with pytest.raises(ShardingError, match=r"'layer/w'.*mesh axis 'modle'.*\('batch', 'model'\)"):
        _fails(fn, mesh)
    assert issubclass(ShardingError, ValueError)


def test_indivisible_dimension_is_an_error_with_sizes_and_a_fix(mesh):
    def fn():
        with sp.scope("layer", partitioner=Rules([(r"w$", P(None, "model"))])):
            sp.get_param("w", (8, 10))

    with pytest.raises(ShardingError) as e:
        _fails(fn, mesh)
    msg = str(e.value)
    assert "'layer/w'" in msg and "size 10" in msg and "not divisible by 4" in msg
    assert "Rules" in msg and "fix:" in msg and "test_sharding.py" in msg  # created-at site


def test_spec_longer_than_rank_and_axis_used_twice_are_errors(mesh):
    rank = r"'b'.* has shape \(8,\) \(rank 1\).*P\(None, 'model'\).* 2 entries"
    with pytest.raises(ShardingError, match=rank):
        _fails(lambda: sp.get_param("b", (8,), sharding=P(None, "model")), mesh)
    with pytest.raises(ShardingError, match=r"'w'.*uses mesh axis 'model' for array axes 0 and 1"):
        _fails(lambda: sp.get_param("w", (8, 8), sharding=P("model", "model")), mesh)


def test_wrong_partitioner_results_and_sharding_types_are_type_errors(mesh):
    # A partitioner's wrong result is also a ValueError, as TF's "Partitioner must return a
    # sequence" is; the not-callable case is test_a_non_callable_partitioner_is_a_value_error_like_tf.
    def tf_counts(name, shape, dtype):
        return [2, 1]

    def counts():
        with sp.scope("s", partitioner=tf_counts):
            sp.get_param("w", (8, 8))

    with pytest.raises(TypeError, match=r"partitioner of parameter 's/w'.*from_tf_partitioner") as e:
        _fails(counts, mesh)
    assert isinstance(e.value, ShardingError)

    def tf_signature():
        with sp.scope("s", partitioner=lambda shape, dtype: [2, 1]):
            sp.get_param("w", (8, 8))

    with pytest.raises(TypeError, match=r"(?s)'s/w'.*cannot be called.*from_tf_partitioner"):
        _fails(tf_signature, mesh)

    with pytest.raises(TypeError, match=r"get_param\('w', sharding=\('model',\)\).*PartitionSpec"):
        _fails(lambda: sp.get_param("w", (8, 8), sharding=("model",)), mesh)
    with pytest.raises(TypeError, match=r"(?s)not a PartitionSpec.*fix: write P.*P\('model', None\)"):
        Rules([(r"w$", ("model", None))])
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        sp.shardings(sp.transform(lambda: sp.get_param("w", (8,))), "mesh")



def test_a_non_callable_partitioner_is_a_value_error_like_tf(mesh):
    # TF: get_variable under variable_scope(partitioner=42) raises
    # ValueError("Partitioner must be callable, but received: 42").
    def not_callable():
        with sp.scope("s", partitioner=3):
            sp.get_param("w", (8, 8))

    with pytest.raises(ValueError, match=r"Partitioner must be callable, but received: 3"):
        _fails(not_callable, mesh)
    # The sharding side names the parameter, whichever way a spec got its partitioner.
    spec = sp.ParamSpec("s/w", (8, 8), np.dtype(np.float32), jax.nn.initializers.zeros, partitioner=3)
    with pytest.raises(ShardingError, match=r"(?s)Partitioner must be callable, but received: 3.*"
                                            r"'s/w'.*fix: pass a callable"):
        sp.sharding.partition_spec(spec)
    with pytest.raises(ValueError, match=r"Partitioner must be callable, but received: 42"):
        from_tf_partitioner(42)


def test_a_partitioner_axis_out_of_range_names_the_parameter_and_the_fix(mesh):
    for part, axis in ((fixed_size_partitioner(4, axis=1), 1), (fixed_size_partitioner(4, axis=-2), -2),
                       (min_max_variable_partitioner(4, axis=1, min_slice_size=4), 1),
                       (variable_axis_size_partitioner(16, axis=-2), -2)):
        def fn():
            with sp.scope("net", partitioner=part), sp.scope("dense"):
                sp.get_param("w", (16, 8))
                sp.get_param("bias", (16,))  # rank 1: no axis 1 or -2

        with pytest.raises(ShardingError) as e:
            _fails(fn, mesh)
        msg = str(e.value)
        assert "'net/dense/bias'" in msg and "(16,)" in msg and f"axis {axis}" in msg, msg
        assert "test_sharding.py" in msg, msg  # where it was created
        assert "fix: give this parameter sharding=" in msg and "or use an axis it has" in msg, msg
        with pytest.raises(ShardingError, match=r"'b'.*axis.*out of range for its shape \(16,\)"):
            part("b", (16,), np.float32)


def test_a_concrete_sharding_on_other_devices_than_the_mesh_names_the_parameter(mesh):
    sub = jax.make_mesh((4,), ("model",), devices=jax.devices()[:4])

    def fn(x):
        with sp.scope("net"):
            return x @ sp.get_param("w", (16, 8), sharding=NamedSharding(sub, P(None, "model")))

    model = sp.transform(fn)
    for call in (lambda: sp.shardings(model, mesh, X), lambda: sp.init_sharded(model, mesh, 0, X)):
        with pytest.raises(ShardingError) as e:
            call()
        msg = str(e.value)
        assert "'net/w'" in msg and "test_sharding.py" in msg and "devices" in msg, msg
        assert "fix:" in msg and "sharding=P(None, 'model')" in msg, msg
    # The same devices as the mesh are fine, whatever the sharding's own mesh.
    same = NamedSharding(jax.make_mesh((8,), ("model",)), P(None, "model"))
    ok = sp.shardings(sp.transform(lambda: sp.get_param("w", (16, 8), sharding=same)), mesh)
    assert ok["w"] is same


def test_abstract_params_with_the_mesh_forgotten_says_the_mesh_comes_second():
    model = sp.transform(lambda x: sp.layers.dense(x, 8))
    with pytest.raises(TypeError, match=r"(?s)abstract_params: the second argument is the mesh.*"
                                        r"ShapeDtypeStruct.*fix: abstract_params\(model, mesh, \*args\)"
                                        r".*mesh=None"):
        sp.sharding.abstract_params(model, X)
    flat = sp.flatten(sp.sharding.abstract_params(model, None, X))
    assert {n: a.shape for n, a in flat.items()} == {"dense/kernel": (16, 8), "dense/bias": (8,)}

# --- training ---------------------------------------------------------------------------------------


def test_sharded_training_step_matches_one_device_for_three_steps(mesh):
    example = load_example("sharded_training")
    example_x = jax.ShapeDtypeStruct((128, 64), jnp.float32)
    sharded_params, sharded = example.train(example.make_mesh(), steps=3)
    single_params, single = example.train(None, steps=3)
    np.testing.assert_allclose(sharded, single, rtol=0, atol=1e-5)
    # The shardings survive three optax updates, and so do the values.
    wanted = sp.flatten(sp.shardings(example.model, example.make_mesh(), example_x))
    for name, value in sp.flatten(sharded_params).items():
        assert value.sharding.is_equivalent_to(wanted[name], value.ndim), name
    chex.assert_trees_all_close(sharded_params, single_params, atol=1e-5)


def test_a_layer_stack_parameter_is_sharded_per_layer_never_along_the_layer_axis(mesh):
    # A block's sharding= and its scope's partitioner speak of one layer's parameter; the stacked one
    # gets None for its leading layer axis (as Flax's nn.scan), so "shard axis 1" stays axis 1 of
    # each layer and a stacked scalar stays replicated, as TF leaves scalars unpartitioned.
    def fn(x):
        def block(x):
            w = sp.get_param("w", [16, 16], sharding=P(None, "model"))
            n = sp.get_param("n", [16, 16], sharding=NamedSharding(mesh, P("model")))
            with sp.scope("blk", partitioner=fixed_size_partitioner(4, axis=1)):
                v = sp.get_param("v", [16, 32])
                s = sp.get_param("s", [], init=sp.initializers.ones)
            return x @ w + x @ n + (x @ v)[:, :16] * s
        return sp.layer_stack(3)(block)(x)

    model = sp.transform(fn)
    specs = {name: s.spec for name, s in sp.flatten(sp.shardings(model, mesh, X)).items()}
    assert specs == {"layer_stack/w": P(None, None, "model"), "layer_stack/n": P(None, "model"),
                     "layer_stack/blk/v": P(None, None, "model"), "layer_stack/blk/s": P()}
    params = sp.init_sharded(model, mesh, jax.random.key(0), X)
    assert params["layer_stack"]["blk"]["v"].sharding.spec == P(None, None, "model")
    assert params["layer_stack"]["blk"]["v"].addressable_shards[0].data.shape == (3, 16, 8)
    x = jnp.ones((8, 16))
    chex.assert_trees_all_close(jax.jit(model.apply)(params, x),
                                model.apply(jax.device_get(params), x), rtol=1e-5)
    assert "per layer of an sp.layer_stack" in repr(
        sp.flatten(model.specs(X))["layer_stack/blk/v"].partitioner)
