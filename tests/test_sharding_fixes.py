"""Fixes in sp.sharding and sp.slim's variables: TF's checks of a TF-style partitioner's list, concrete
shardings on an AbstractMesh, init_sharded's key, and slim.variable's partitioner= and custom_getter=.
Runs on the 8 host CPU devices conftest.py asks XLA for."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import scoped_params as sp
from scoped_params.sharding import PartitionerError, ShardingError, from_tf_partitioner

X = jax.ShapeDtypeStruct((2, 8), jnp.float32)
AUTO2 = (AxisType.Auto,) * 2


@pytest.fixture(scope="module")
def mesh():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    return jax.make_mesh((2, 4), ("batch", "model"), axis_types=AUTO2)


def _under_tf_partitioner(part):
    def fn(x):
        with sp.scope("outer", partitioner=from_tf_partitioner(part)):
            return sp.get_param("w", (8, 16))
    return sp.transform(fn)


# --- from_tf_partitioner: TF's _call_partitioner checks --------------------------------------------


@pytest.mark.parametrize("parts", [[2], [1, 2, 1]])
def test_tf_partitioner_list_of_another_length_than_the_rank_is_tfs_error_naming_the_parameter(
        mesh, parts):
    model = _under_tf_partitioner(lambda shape, dtype: parts)
    with pytest.raises(ShardingError) as e:
        sp.shardings(model, mesh, X)
    msg = str(e.value)
    assert ("Partitioner returned a partition list that does not match the Variable's rank: "
            f"{parts} vs. (8, 16)") in msg
    assert "'outer/w' (created at " in msg and "test_sharding_fixes.py" in msg
    assert "\n  fix: " in msg
    with pytest.raises(ShardingError, match="does not match the Variable's rank"):
        from_tf_partitioner(lambda shape, dtype: parts).partitions((8, 16), np.float32)


def test_tf_partitioner_returning_a_non_sequence_is_tfs_error_naming_the_parameter(mesh):
    model = _under_tf_partitioner(lambda shape, dtype: 2)
    with pytest.raises(PartitionerError) as e:
        sp.shardings(model, mesh, X)
    msg = str(e.value)
    assert "Partitioner must return a sequence, but saw: 2" in msg
    assert "'outer/w' (created at " in msg and "\n  fix: " in msg
    assert isinstance(e.value, ValueError)  # TF's class


def test_tf_partitioner_returning_zero_partitions_says_the_fix(mesh):
    with pytest.raises(ShardingError) as e:
        sp.shardings(_under_tf_partitioner(lambda shape, dtype: [0, 1]), mesh, X)
    msg = str(e.value)
    assert "Partitioner returned zero partitions for some axes: [0, 1]" in msg
    assert "'outer/w'" in msg and "\n  fix: " in msg


def test_tf_partitioner_list_checks_use_tfs_words():
    tf = pytest.importorskip("tensorflow")
    for part, ours_cls in [(lambda shape, dtype: [2], ShardingError),
                           (lambda shape, dtype: 2, PartitionerError),
                           (lambda shape, dtype: [0, 1], ShardingError)]:
        with tf.Graph().as_default():
            with pytest.raises(ValueError) as tf_error:
                tf.compat.v1.get_variable("w", [8, 16], partitioner=part)
        with pytest.raises(ours_cls) as ours:
            sp.shardings(_under_tf_partitioner(part),
                         AbstractMesh((2, 4), ("batch", "model"), axis_types=AUTO2), X)
        assert str(tf_error.value).split(":")[0] in str(ours.value)


def test_tf_partitioner_of_the_right_length_still_shards_its_axis(mesh):
    sh = sp.shardings(_under_tf_partitioner(lambda shape, dtype: (1, 2)), mesh, X)
    assert sh["outer"]["w"].spec == P(None, "model")


# --- a concrete Sharding and an AbstractMesh ------------------------------------------------------


def _pinned(sharding):
    def fn(x):
        with sp.scope("mlp"):
            return x @ sp.get_param("kernel", (8, 16), sharding=sharding)
    return sp.transform(fn)


def test_named_sharding_on_an_abstract_mesh_like_the_mesh_is_placed_on_the_mesh(mesh):
    plan = AbstractMesh((2, 4), ("batch", "model"), axis_types=AUTO2)
    model = _pinned(NamedSharding(plan, P(None, "model")))
    sh = sp.shardings(model, mesh, X)["mlp"]["kernel"]
    assert sh == NamedSharding(mesh, P(None, "model"))
    params = sp.init_sharded(model, mesh, jax.random.key(0), X)
    assert params["mlp"]["kernel"].sharding == NamedSharding(mesh, P(None, "model"))
    np.testing.assert_array_equal(params["mlp"]["kernel"],
                                  model.init(jax.random.key(0), X)["mlp"]["kernel"])
    # planned against an equal AbstractMesh: the same spec
    assert sp.shardings(model, plan, X)["mlp"]["kernel"].spec == P(None, "model")


@pytest.mark.parametrize("shape, names", [((4, 2), ("batch", "model")), ((2, 4), ("data", "model"))])
def test_named_sharding_on_another_abstract_mesh_is_a_sharding_error(mesh, shape, names):
    model = _pinned(NamedSharding(AbstractMesh(shape, names, axis_types=AUTO2), P(None, "model")))
    for target in (mesh, AbstractMesh((2, 4), ("batch", "model"), axis_types=AUTO2)):
        with pytest.raises(ShardingError) as e:
            sp.shardings(model, target, X)
        msg = str(e.value)
        assert "'mlp/kernel' (created at " in msg and "AbstractMesh" in msg
        assert "fix: give a PartitionSpec (sharding=P(None, 'model'))" in msg
    with pytest.raises(ShardingError, match="mlp/kernel"):
        sp.init_sharded(model, mesh, jax.random.key(0), X)


def test_concrete_sharding_on_other_devices_than_an_abstract_meshs_count_is_a_sharding_error(mesh):
    real = jax.make_mesh((8,), ("x",))
    model = _pinned(NamedSharding(real, P(None, "x")))
    big = AbstractMesh((4, 16), ("batch", "model"), axis_types=AUTO2)
    with pytest.raises(ShardingError) as e:
        sp.shardings(model, big, X)
    msg = str(e.value)
    assert "'mlp/kernel' (created at " in msg and "8 devices" in msg and "64" in msg
    assert "\n  fix: " in msg
    with pytest.raises(ShardingError, match="mlp/kernel"):
        sp.sharding.sharded_init_fn(model, big, X)
    # the same number of devices: accepted, as before
    same = AbstractMesh((2, 4), ("batch", "model"), axis_types=AUTO2)
    assert sp.shardings(model, same, X)["mlp"]["kernel"] == NamedSharding(real, P(None, "x"))


# --- init_sharded's key --------------------------------------------------------------------------


def _dense():
    return sp.transform(lambda x: x @ sp.get_param("w", (8, 4)))


@pytest.mark.parametrize("call", ["forgotten", "array", "none", "string"])
def test_init_sharded_checks_its_key_as_init_does(mesh, call):
    model, x = _dense(), jnp.ones((2, 8))
    args = {"forgotten": (x,), "array": (x, x), "none": (None, x), "string": ("key", x)}[call]
    with pytest.raises(sp.KeyArgumentError) as e:
        sp.init_sharded(model, mesh, *args)
    msg = str(e.value)
    assert "init_sharded" in msg and "the key was left out" in msg
    assert "sp.init_sharded(model, mesh, jax.random.key(0), *args)" in msg


def test_init_sharded_still_takes_a_key_a_raw_key_and_a_seed(mesh):
    model, x = _dense(), jnp.ones((2, 8))
    want = model.init(jax.random.key(0), x)["w"]
    for key in (jax.random.key(0), jax.random.PRNGKey(0), 0, np.int32(0)):
        np.testing.assert_array_equal(sp.init_sharded(model, mesh, key, x)["w"], want)


def test_sharded_init_fn_checks_the_key_it_is_called_with(mesh):
    x = jnp.ones((2, 8))
    init = sp.sharding.sharded_init_fn(_dense(), mesh, x)
    with pytest.raises(sp.KeyArgumentError, match="sharded_init_fn"):
        init(x)
    assert init(jax.random.key(0))["w"].shape == (8, 4)


# --- slim.variable / model_variable: partitioner= and custom_getter= ------------------------------


def test_slim_model_variable_takes_a_partitioner(mesh):
    def fn(x):
        with sp.scope("net"):
            return sp.slim.model_variable("w", [8, 6],
                                          partitioner=sp.sharding.fixed_size_partitioner(2))
    model = sp.transform(fn)
    assert sp.shardings(model, mesh, X)["net"]["w"].spec == P("model")
    specs = sp.flatten(model.specs(X))
    assert list(specs) == ["net/w"] and specs["net/w"].shape == (8, 6)
    assert "model_variables" in specs["net/w"].collections
    assert sp.init_sharded(model, mesh, 0, X)["net"]["w"].sharding.spec == P("model")


_SLIM_GETTER_KWARGS = ["aggregation", "caching_device", "collections", "dtype", "initializer",
                       "partitioner", "regularizer", "reuse", "shape", "synchronization",
                       "trainable", "use_resource"]


def test_slim_variable_calls_its_custom_getter_in_place_of_get_variable_as_tf_slim_does():
    seen = []

    def getter(name, **kwargs):  # tf_slim's: the getter that replaces get_variable
        seen.append((name, sorted(kwargs), kwargs["reuse"], kwargs["partitioner"]))
        return sp.get_param(name, kwargs["shape"], kwargs["initializer"], kwargs["dtype"],
                            collections=kwargs["collections"]) * 2

    part = sp.sharding.fixed_size_partitioner(2)

    def fn(x):
        with sp.scope("net", reuse=sp.AUTO_REUSE):
            w = sp.slim.model_variable("w", [8, 6], initializer=jax.nn.initializers.ones,
                                       partitioner=part, custom_getter=getter)
        return w

    model = sp.transform(fn)
    params = model.init(0, X)
    assert seen == [("w", _SLIM_GETTER_KWARGS, sp.AUTO_REUSE, part)]
    np.testing.assert_array_equal(model.apply(params, X), 2 * np.ones((8, 6)))
    assert "model_variables" in sp.flatten(model.specs(X))["net/w"].collections
    with pytest.raises(TypeError, match="custom_getter"):
        model_bad = sp.transform(lambda x: sp.slim.variable("w", [2], custom_getter="getter"))
        model_bad.init(0, X)


def test_slim_variable_partitioner_and_custom_getter_match_tf_slim():
    from test_slim import _tf_slim

    tf_slim = _tf_slim()
    import tensorflow.compat.v1 as tf

    def run(slim, vs, partitioner):
        seen = []

        def getter(name, **kwargs):
            seen.append((name, sorted(kwargs)))
            kwargs.pop("reuse")
            if slim is sp.slim:
                kwargs = {"shape": kwargs["shape"], "init": kwargs["initializer"],
                          "collections": kwargs["collections"], "partitioner": kwargs["partitioner"]}
                return sp.get_param(name, **kwargs)
            return tf.get_variable(name, **kwargs)

        with vs("net"):
            slim.model_variable("w", [8, 6], partitioner=partitioner)
            slim.variable("v", [4], custom_getter=getter)
        return seen

    with tf.Graph().as_default() as g:
        tf_seen = run(tf_slim, tf.variable_scope, tf.fixed_size_partitioner(2))
        tf_vars = {v.op.name: v.shape.as_list() for v in g.get_collection("variables")}
    assert tf_vars == {"net/w/part_0": [4, 6], "net/w/part_1": [4, 6], "net/v": [4]}

    ours_seen = []

    def fn(x):
        ours_seen.extend(run(sp.slim, sp.scope, sp.sharding.fixed_size_partitioner(2)))
        return x

    tree = sp.transform(fn).specs(X)
    specs = sp.flatten(tree)
    # one logical array where TF has its part_k slices, split along the same axis
    assert {n: s.shape for n, s in specs.items()} == {"net/w": (8, 6), "net/v": (4,)}
    sh = sp.shardings(tree, AbstractMesh((2, 4), ("batch", "model"), axis_types=AUTO2))
    assert sh["net"]["w"].spec == P("model")
    assert ours_seen == tf_seen


# --- a non-default PRNG implementation (jax_default_prng_impl) ------------------------------------


@pytest.fixture(params=["rbg", "unsafe_rbg"])
def prng_impl(request):
    """The default PRNG implementation set to ``request.param`` for one test, then restored."""
    before = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", request.param)
    try:
        yield request.param
    finally:
        jax.config.update("jax_default_prng_impl", before)


def _sharded_dense():
    def fn(x):
        with sp.scope("mlp"):
            w = sp.get_param("kernel", (x.shape[-1], 8), sharding=P(None, "model"))
            b = sp.get_param("bias", (8,), init=jax.nn.initializers.zeros)
        return x @ w + b
    return sp.transform(fn)


def test_specs_and_the_sharding_helpers_follow_the_default_prng_impl(mesh, prng_impl):
    model, x = _sharded_dense(), jnp.ones((2, 8))
    specs = sp.flatten(model.specs(x))
    assert {n: s.shape for n, s in specs.items()} == {"mlp/kernel": (8, 8), "mlp/bias": (8,)}
    abstract = sp.sharding.abstract_params(model, mesh, x)
    assert abstract["mlp"]["kernel"].shape == (8, 8)
    assert abstract["mlp"]["kernel"].sharding == NamedSharding(mesh, P(None, "model"))
    assert sp.sharding.abstract_params(model, None, X)["mlp"]["bias"].shape == (8,)
    assert sp.shardings(model, mesh, X)["mlp"]["kernel"].spec == P(None, "model")
    assert "kernel 8x8 float32" in sp.summary(model, x)
    want = model.init(jax.random.key(0), x)["mlp"]["kernel"]
    for key in (jax.random.key(0), jax.random.PRNGKey(0), 0):  # typed, raw (4 words here), seed
        kernel = sp.init_sharded(model, mesh, key, x)["mlp"]["kernel"]
        np.testing.assert_array_equal(kernel, want)
        assert kernel.sharding.spec == P(None, "model")
    assert jax.random.key(0).dtype == jax.random.key(0, impl=prng_impl).dtype  # the config held


def test_a_key_of_another_impl_than_the_default_inits_sharded_as_model_init(mesh):
    model, x = _sharded_dense(), jnp.ones((2, 8))
    key = jax.random.key(0, impl="rbg")
    want = model.init(key, x)["mlp"]["kernel"]
    np.testing.assert_array_equal(sp.init_sharded(model, mesh, key, x)["mlp"]["kernel"], want)


def test_a_key_given_to_specs_by_inits_habit_is_named_under_any_prng_impl(prng_impl):
    model = sp.transform(lambda x: x @ sp.get_param("w", (x.shape[-1], 2)))
    x = jnp.ones((2, 3))
    for key in (jax.random.key(0), jax.random.PRNGKey(0), jax.random.key(0, impl="threefry2x32")):
        with pytest.raises(sp.KeyArgumentError, match=r"model\.specs got a random key") as e:
            model.specs(key, x)
        assert "\n  fix: drop the key: model.specs(*args)" in str(e.value)


# --- init_sharded's key on other devices ----------------------------------------------------------


@pytest.mark.parametrize("where", ["all 8 devices, explicit axes", "devices 4..7, explicit axes",
                                   "devices 4..7, auto axes", "device 6"])
def test_init_sharded_places_a_key_committed_elsewhere_on_the_mesh(where):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    devices = np.array(jax.devices())
    target = jax.make_mesh((1, 4), ("batch", "model"), devices=devices[:4], axis_types=AUTO2)
    explicit = (AxisType.Explicit,) * 2
    key = jax.random.key(0)
    elsewhere = {
        "all 8 devices, explicit axes": NamedSharding(
            jax.make_mesh((2, 4), ("batch", "model"), axis_types=explicit), P()),
        "devices 4..7, explicit axes": NamedSharding(
            jax.make_mesh((2, 2), ("batch", "model"), devices=devices[4:], axis_types=explicit), P()),
        "devices 4..7, auto axes": NamedSharding(
            jax.make_mesh((2, 2), ("x", "y"), devices=devices[4:], axis_types=AUTO2), P()),
        "device 6": devices[6],
    }[where]
    committed = jax.device_put(key, elsewhere)
    model, x = _sharded_dense(), jnp.ones((2, 8))
    params = sp.init_sharded(model, target, committed, x)
    kernel = params["mlp"]["kernel"]
    np.testing.assert_array_equal(kernel, model.init(key, x)["mlp"]["kernel"])
    assert kernel.sharding == NamedSharding(target, P(None, "model"))
    assert committed.sharding.device_set != kernel.sharding.device_set  # the key itself stays put


def test_init_sharded_under_jit_takes_the_traced_key(mesh):
    model, x = _sharded_dense(), jnp.ones((2, 8))
    kernel = jax.jit(lambda k: sp.init_sharded(model, mesh, k, x))(jax.random.key(0))["mlp"]["kernel"]
    np.testing.assert_array_equal(kernel, model.init(jax.random.key(0), x)["mlp"]["kernel"])
    assert kernel.sharding.spec == P(None, "model")


def test_init_sharded_inside_another_meshs_set_mesh_makes_the_parameters_on_its_own_mesh():
    # JAX types values made inside jax.set_mesh(other) with other's mesh, which clashed with the
    # target mesh's out_shardings (a raw "context mesh ... should match the aval mesh").
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    explicit = (AxisType.Explicit,) * 2
    target = jax.make_mesh((2, 2), ("batch", "model"), devices=jax.devices()[:4],
                           axis_types=explicit)
    other = jax.make_mesh((2, 4), ("batch", "model"), axis_types=explicit)
    model, x = _sharded_dense(), jnp.ones((2, 8))
    with jax.set_mesh(other):
        kernel = sp.init_sharded(model, target, 0, x)["mlp"]["kernel"]
    np.testing.assert_array_equal(kernel, model.init(0, x)["mlp"]["kernel"])
    assert kernel.sharding == NamedSharding(target, P(None, "model"))


def test_an_unconstrained_axis_in_a_parameters_spec_is_a_sharding_error_not_a_mesh_axis_name(mesh):
    model = sp.transform(
        lambda x: x @ sp.get_param("w", (8, 8), sharding=P(P.UNCONSTRAINED, "model")))
    with pytest.raises(ShardingError) as e:
        sp.shardings(model, mesh, jnp.ones((2, 8)))
    message = str(e.value)
    assert re.search(r"Parameter 'w' \(created at .*\): its PartitionSpec P\(UNCONSTRAINED, "
                     r"'model'\) \(from get_param\(sharding=\.\.\.\)\) leaves the layout of array "
                     r"axis 0 to XLA \(P\.UNCONSTRAINED\).*\n  fix: name a mesh axis", message), message
    assert "names mesh axis" not in message


# --- init's params are uncommitted; grad through a shard_map; concrete shardings checked ----------


def test_init_params_are_uncommitted_so_a_data_parallel_jitted_apply_takes_them(mesh):
    # parameters of one shape and initializer are drawn as a group and split: onto no device in
    # particular, as JAX's own initializers' outputs
    def fn(x):
        for i in range(2):
            with sp.scope(f"dense_{i}"):
                x = jnp.tanh(x @ sp.get_param("kernel", (8, 8)))
        return x + sp.get_param("b", (8,), init=jax.nn.initializers.zeros)

    model, x = sp.transform(fn), jnp.ones((4, 8))
    for seed in (0, 1):  # the first init draws op by op, the second with compiled draws
        params = model.init(seed, x)
        assert not any(leaf.committed for leaf in jax.tree_util.tree_leaves(params))
    xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
    np.testing.assert_allclose(jax.jit(model.apply)(params, xs), model.apply(params, x), rtol=1e-6)


def test_grad_of_an_apply_whose_shard_map_body_calls_get_param_is_plain_jaxs(mesh):
    def net(x):
        def body(xb):
            return jnp.tanh(xb @ sp.get_param("w", (8, 4)))
        return jax.shard_map(body, mesh=mesh, in_specs=P("batch"), out_specs=P("batch"))(x)

    model, x = sp.transform(net), jax.random.normal(jax.random.key(2), (4, 8))
    params = model.init(0, x)

    def plain(w):
        return jax.shard_map(lambda xb: jnp.tanh(xb @ w), mesh=mesh, in_specs=P("batch"),
                             out_specs=P("batch"))(x).sum()

    loss = lambda p: model.apply(p, x).sum()  # noqa: E731
    np.testing.assert_array_equal(jax.grad(loss)(params)["w"], jax.grad(plain)(params["w"]))
    np.testing.assert_array_equal(jax.jit(jax.grad(loss))(params)["w"],
                                  jax.jit(jax.grad(plain))(params["w"]))


def test_a_named_sharding_on_the_meshs_devices_in_another_order_is_named_with_the_fix(mesh):
    reversed_mesh = jax.sharding.Mesh(np.asarray(mesh.devices).reshape(-1)[::-1].reshape(2, 4),
                                      ("batch", "model"), axis_types=AUTO2)

    def fn(x):
        with sp.scope("dense"):
            return x @ sp.get_param("kernel", (8, 4),
                                    sharding=NamedSharding(reversed_mesh, P(None, "model")))

    with pytest.raises(ShardingError, match=r"'dense/kernel'(.|\n)*same devices in another order"
                                            r"(.|\n)*fix: give a PartitionSpec"):
        sp.init_sharded(sp.transform(fn), mesh, jax.random.key(0), jnp.ones((2, 8)))


@pytest.mark.parametrize("spec, message", [
    (P(None, None, "model"), r"has shape \(6, 8\) \(rank 2\)(.|\n)*fix: "),
    (P(P.UNCONSTRAINED), r"P\.UNCONSTRAINED(.|\n)*fix: "),
])
def test_a_named_sharding_gets_the_partition_spec_checks(mesh, spec, message):
    def fn():
        with sp.scope("net"):
            return sp.get_param("w", (6, 8), sharding=NamedSharding(mesh, spec))

    with pytest.raises(ShardingError, match=r"Parameter 'net/w'" + r"(.|\n)*" + message):
        sp.init_sharded(sp.transform(fn), mesh, jax.random.key(0))


def test_init_sharded_names_a_config_dicts_layers_in_the_callers_order(mesh):
    def fn(x, widths):
        for i, (name, width) in enumerate(widths.items()):
            x = x @ sp.get_param(f"p{i}_{name}", (x.shape[-1], width))
        return x

    model, x, widths = sp.transform(fn), jnp.ones((2, 8)), {"b": 4, "a": 8}
    params = sp.init_sharded(model, mesh, jax.random.key(0), x, widths)
    assert set(sp.flatten(params)) == {"p0_b", "p1_a"}
    assert model.apply(params, x, widths).shape == (2, 8)


def test_a_custom_jvp_around_a_shard_map_body_calling_get_param_is_named_under_grad(mesh):
    def net(x):
        @jax.custom_jvp
        def f(x):
            def body(xb):
                return jnp.tanh(xb @ sp.get_param("w", (8, 4)))
            return jax.shard_map(body, mesh=mesh, in_specs=P("batch"), out_specs=P("batch"))(x)
        f.defjvp(lambda primals, tangents: (f(*primals), tangents[0][:, :4]))
        return f(x)

    model, x = sp.transform(net), jnp.ones((4, 8))
    params = model.init(0, x)
    with pytest.raises(sp.NestedTraceError, match="custom_jvp"):
        jax.grad(lambda p: model.apply(p, x).sum())(params)
