"""Custom getters: reference section G (rules 39-43)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)


def paths(tree):
    return set(sp.flatten(tree))


def suffix(tag):
    def getter(next_getter, name, *args, **kwargs):
        return next_getter(name + tag, *args, **kwargs)
    return getter


def test_custom_getter_gets_full_name_and_runs_on_creation_and_reuse_in_init_and_apply():
    calls = []

    def getter(next_getter, name, *args, **kwargs):
        calls.append((name, kwargs["reuse"]))
        return next_getter(name, *args, **kwargs)

    def fn():
        with sp.scope("s", custom_getter=getter) as s:
            a = sp.get_param("v", [1])
        with sp.scope(s, reuse=True):
            b = sp.get_param("v", [1])
        return a, b

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"s/v"}
    assert calls == [("s/v", False), ("s/v", True)]
    a, b = model.apply(params)
    assert calls == [("s/v", False), ("s/v", True)] * 2
    assert a is b is params["s"]["v"]


def test_custom_getter_receives_tf_keyword_arguments():
    seen = {}

    def getter(next_getter, name, *args, **kwargs):
        seen.update(kwargs)
        return next_getter(name, *args, **kwargs)

    init_fn = sp.initializers.constant(0.5)
    reg = sp.l2_regularizer(1.0)

    def fn():
        with sp.scope("s", custom_getter=getter, dtype=jnp.float16):
            sp.get_param("v", [2, 3], init=init_fn, regularizer=reg, trainable=False,
                         collections=["c"])

    sp.transform(fn).init(KEY)
    assert tuple(seen["shape"]) == (2, 3)
    assert np.dtype(seen["dtype"]) == np.float16
    assert seen["initializer"] is init_fn
    assert seen["regularizer"] is reg
    assert seen["trainable"] is False
    assert list(seen["collections"]) == ["c"]
    assert seen["reuse"] is False
    assert {"partitioner", "sharding"} <= set(seen)


def test_custom_getter_sees_auto_reuse():
    seen = []

    def getter(next_getter, name, *args, **kwargs):
        seen.append(kwargs["reuse"])
        return next_getter(name, *args, **kwargs)

    def fn():
        with sp.scope("s", custom_getter=getter, reuse=sp.AUTO_REUSE):
            sp.get_param("v", [])

    sp.transform(fn).init(KEY)
    assert seen == [sp.AUTO_REUSE]


def test_non_callable_custom_getter_is_an_error():
    with pytest.raises(ValueError, match="Passed a custom_getter which is not callable: 3"):
        sp.scope("s", custom_getter=3)


def test_custom_getter_may_create_several_params_and_return_any_value():
    def getter(next_getter, name, *args, **kwargs):
        return next_getter(name + "/0", *args, **kwargs) + next_getter(name + "/1", *args, **kwargs)

    def fn():
        with sp.scope("scope", custom_getter=getter):
            return sp.get_param("v", [1, 2, 3])

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"scope/v/0", "scope/v/1"}
    out = model.apply(params)
    np.testing.assert_allclose(out, params["scope"]["v"]["0"] + params["scope"]["v"]["1"])


def test_nested_custom_getters_compose_innermost_first():
    def fn():
        with sp.scope("o", custom_getter=suffix("_o")):
            with sp.scope("i", custom_getter=suffix("_i")):
                sp.get_param("v", [])

    assert paths(sp.transform(fn).init(KEY)) == {"o/i/v_i_o"}


def test_nested_getters_sums_of_sums_of_products_like_tf():
    def sum_getter(getter, name, *args, **kwargs):
        return getter(f"{name}/sum_0", *args, **kwargs) + getter(f"{name}/sum_1", *args, **kwargs)

    def prod_getter(getter, name, *args, **kwargs):
        return getter(f"{name}/prod_0", *args, **kwargs) * getter(f"{name}/prod_1", *args, **kwargs)

    def fn():
        with sp.scope("prod_scope", custom_getter=prod_getter):
            with sp.scope("sum_scope", custom_getter=sum_getter):
                with sp.scope("inner_sum_scope", custom_getter=sum_getter):
                    return sp.get_param("v", [1, 2, 3])

    model = sp.transform(fn)
    params = model.init(KEY)
    flat = sp.flatten(params)
    base = "prod_scope/sum_scope/inner_sum_scope/v"
    expected_names = {f"{base}/sum_{i}/sum_{j}/prod_{k}" for i in (0, 1) for j in (0, 1)
                      for k in (0, 1)}
    assert set(flat) == expected_names
    expected = sum(flat[f"{base}/sum_{i}/sum_{j}/prod_0"] * flat[f"{base}/sum_{i}/sum_{j}/prod_1"]
                   for i in (0, 1) for j in (0, 1))
    np.testing.assert_allclose(model.apply(params), expected, rtol=1e-6)


def test_custom_getter_is_inherited_by_subscopes():
    def fn():
        with sp.scope("o", custom_getter=suffix("_x")):
            with sp.scope("a"):
                sp.get_param("v", [])
            sp.get_param("w", [])

    assert paths(sp.transform(fn).init(KEY)) == {"o/a/v_x", "o/w_x"}


def test_set_custom_getter_applies_to_later_params():
    def fn():
        with sp.scope("s") as s:
            sp.get_param("a", [])
            s.set_custom_getter(suffix("_g"))
            sp.get_param("b", [])

    assert paths(sp.transform(fn).init(KEY)) == {"s/a", "s/b_g"}


def test_custom_getter_can_cast_for_mixed_precision_in_apply():
    def cast_getter(next_getter, name, *args, **kwargs):
        return next_getter(name, *args, **kwargs).astype(jnp.bfloat16)

    def fn(x):
        with sp.scope("dense", custom_getter=cast_getter):
            w = sp.get_param("w", [3, 2])
        return x.astype(jnp.bfloat16) @ w

    model = sp.transform(fn)
    x = jnp.arange(6.0).reshape(2, 3)
    params = model.init(KEY, x)
    assert params["dense"]["w"].dtype == jnp.float32  # stored in float32
    out = model.apply(params, x)
    assert out.dtype == jnp.bfloat16
    expected = x.astype(jnp.bfloat16) @ params["dense"]["w"].astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(expected, np.float32))


def test_custom_getter_can_rewrite_kwargs_for_outer_getters():
    seen = []

    def outer(next_getter, name, *args, **kwargs):
        seen.append(kwargs["initializer"])
        return next_getter(name, *args, **kwargs)

    ones = sp.initializers.ones

    def inner(next_getter, name, *args, **kwargs):
        kwargs["initializer"] = ones
        return next_getter(name, *args, **kwargs)

    def fn():
        with sp.scope("o", custom_getter=outer):
            with sp.scope("i", custom_getter=inner):
                return sp.get_param("v", [2])

    params = sp.transform(fn).init(KEY)
    assert seen == [ones]
    np.testing.assert_array_equal(params["o"]["i"]["v"], np.ones(2))


def test_custom_getter_renaming_must_agree_between_init_and_apply():
    def fn(tag):
        with sp.scope("s", custom_getter=suffix(tag)):
            return sp.get_param("v", [])

    model = sp.transform(fn)
    params = model.init(KEY, "_a")
    assert paths(params) == {"s/v_a"}
    with pytest.raises(ValueError, match="Variable s/v_b does not exist") as e:
        model.apply(params, "_b")
    assert "'s/v_a'" in str(e.value)


# A getter may call next_getter with only some of the arguments: the rest take the defaults of TF's
# true getter (_VariableStore.get_variable's _true_getter), not the request's or the scope's. The
# expected names, dtypes and trainable flags below are what TF 1.x (tf.compat.v1, graph mode) gives.


def test_next_getter_without_reuse_gets_or_creates_a_shared_helper_like_tf():
    def shared_scale(next_getter, name, *args, **kwargs):
        scale = next_getter("global_scale", shape=[], initializer=sp.initializers.ones)
        return next_getter(name, *args, **kwargs) * scale

    def fn():
        with sp.scope("s", custom_getter=shared_scale):
            return sp.get_param("a", [2]), sp.get_param("b", [3])

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"global_scale", "s/a", "s/b"}  # TF: the same three variables
    a, b = model.apply(params)  # apply shares the helper too
    np.testing.assert_allclose(a, params["s"]["a"] * params["global_scale"])
    np.testing.assert_allclose(b, params["s"]["b"] * params["global_scale"])


def test_next_getter_without_reuse_creates_a_missing_name_under_reuse_true_like_tf():
    def weight_norm_gain(next_getter, name, *args, **kwargs):
        return next_getter(name, *args, **kwargs) * next_getter(
            name + "_g", shape=[], initializer=sp.initializers.ones)

    def fn():
        with sp.scope("t"):
            sp.get_param("w", [2])
        with sp.scope("t", reuse=True, custom_getter=weight_norm_gain):
            return sp.get_param("w", [2])

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"t/w", "t/w_g"}  # TF: ['t/w', 't/w_g']
    np.testing.assert_allclose(model.apply(params), params["t"]["w"])


def test_next_getter_without_dtype_creates_float32_like_tf():
    def gain(next_getter, name, *args, **kwargs):
        return (next_getter(name, *args, **kwargs),
                next_getter(name + "_g", shape=[2], initializer=sp.initializers.ones))

    def renamed(next_getter, name, *args, **kwargs):
        return next_getter(name + "_x", shape=kwargs["shape"])

    def fn():
        with sp.scope("h", dtype=jnp.float16, custom_getter=gain):
            sp.get_param("w", [2])
        with sp.scope("i", custom_getter=renamed):
            sp.get_param("v", [2], dtype=jnp.int32)

    model = sp.transform(fn)
    params = model.init(KEY)
    dtypes = {k: np.dtype(v.dtype).name for k, v in sp.flatten(params).items()}
    # TF: {'h/w': 'float16', 'h/w_g': 'float32', 'i/v_x': 'float32'}
    assert dtypes == {"h/w": "float16", "h/w_g": "float32", "i/v_x": "float32"}
    model.apply(params)


def test_next_getter_without_trainable_creates_a_trainable_param_like_tf():
    def drops_trainable(next_getter, name, *args, **kwargs):
        return next_getter(name, shape=kwargs["shape"], dtype=kwargs["dtype"],
                           initializer=kwargs["initializer"])

    def fn():
        with sp.scope("s", custom_getter=drops_trainable):
            sp.get_param("v", [2], trainable=False)

    assert sp.flatten(sp.transform(fn).specs())["s/v"].trainable is True  # TF: trainable


def test_next_getter_without_initializer_or_regularizer_ignores_the_scopes_like_tf():
    # TF puts the scope's initializer and regularizer in the getter's kwargs; the true getter's own
    # defaults are none (Glorot for floats) and no regularizer.
    def shape_only(next_getter, name, *args, **kwargs):
        return next_getter(name, shape=kwargs["shape"])

    def fn():
        with sp.scope("s", custom_getter=shape_only, initializer=sp.initializers.constant(7.0),
                      regularizer=lambda w: jnp.sum(w)):
            sp.get_param("v", [2, 2])
        return sp.regularization_loss()

    model = sp.transform(fn)
    params = model.init(KEY)
    assert not np.any(params["s"]["v"] == 7.0)
    assert float(model.apply(params)) == 0.0


def test_a_custom_getter_runs_at_the_root_name_scope_as_tfs_so_its_records_are_named_from_it():
    # TF 1.x calls the getter chain under name_scope(None) (tf.identity(q, name="quantized") in a
    # getter under name_scope("tower_0") is op 'quantized', then 'quantized_1'); ours ran it in the
    # caller's, naming the records 'tower_0/net/dense/quantized'.
    seen = []

    def getter(next_getter, name, *args, **kwargs):
        value = next_getter(name, *args, **kwargs)
        seen.append(sp.current_name_scope())
        sp.record("quantized", value * 1.0)
        return value

    def fn(x):
        with sp.name_scope("tower_0"):
            with sp.scope("net", custom_getter=getter):
                y = sp.layers.dense(x, 3)
            sp.record("after", y)  # the caller's name scope is back after the getter
        return y

    model, x = sp.transform(fn), jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x)
    _, records = model.apply_with_intermediates(params, x)
    assert sorted(records) == ["quantized", "quantized_1", "tower_0/after"]
    assert set(seen) == {""}
