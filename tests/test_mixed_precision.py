"""sp.mixed_precision: float32 storage, bfloat16 compute, float32 gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoped_params as sp
from scoped_params import mixed_precision as mp


def mlp(x):
    with mp.scope("model", compute_dtype=jnp.bfloat16):
        h = x.astype(jnp.bfloat16)
        h = sp.layers.dense(h, 16, activation=jax.nn.relu)
        h = sp.layers.batch_normalization(h, training=False)
        scale = sp.get_param("scale", (), sp.initializers.ones)  # scope dtype: bfloat16 compute
        seen.append((h.dtype, scale.dtype))
        return (sp.layers.dense(h, 3) * scale).astype(jnp.float32)


seen = []
X = np.random.RandomState(0).randn(4, 5).astype(np.float32)


def test_params_are_stored_in_float32_and_the_model_computes_in_bfloat16():
    model = sp.transform(mlp)
    params = model.init(jax.random.key(0), X)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {np.dtype(np.float32)}
    assert set(sp.flatten(params)) == {
        "model/dense/kernel", "model/dense/bias", "model/dense_1/kernel", "model/dense_1/bias",
        "model/scale", "model/batch_normalization/gamma", "model/batch_normalization/beta",
        "model/batch_normalization/moving_mean", "model/batch_normalization/moving_variance"}
    seen.clear()
    out = jax.jit(model.apply)(params, X)
    assert seen == [(jnp.bfloat16, jnp.bfloat16)]
    assert out.dtype == jnp.float32
    # Same numbers as computing by hand in bfloat16 from the float32 weights.
    p = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), sp.flatten(params))
    h = jax.nn.relu(X.astype(jnp.bfloat16) @ p["model/dense/kernel"] + p["model/dense/bias"])
    bn = (h.astype(jnp.float32) / np.sqrt(1 + 1e-3)).astype(jnp.bfloat16)
    ref = ((bn @ p["model/dense_1/kernel"] + p["model/dense_1/bias"]) * p["model/scale"])
    np.testing.assert_allclose(out, ref.astype(jnp.float32), rtol=2e-2, atol=2e-2)


def test_gradients_reach_the_float32_master_weights():
    model = sp.transform(mlp)
    params = model.init(jax.random.key(0), X)
    opt = optax.sgd(0.1)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.mean(model.apply(p, X) ** 2))(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, grads

    new_params, _, grads = step(params, state)
    assert grads["model"]["dense"]["kernel"].dtype == jnp.float32
    assert new_params["model"]["dense"]["kernel"].dtype == jnp.float32
    assert np.abs(grads["model"]["dense"]["kernel"]).sum() > 0


def test_getter_passes_other_dtypes_through_and_nests_with_user_getters():
    names = []

    def spy(next_getter, name, *args, **kwargs):
        names.append((name, np.dtype(kwargs["dtype"]).name))
        return next_getter(name, *args, **kwargs)

    def fn(x):
        with mp.scope("m", compute_dtype=jnp.float16, custom_getter=spy):
            a = sp.get_param("a", (2,))
            b = sp.get_param("b", (2,), dtype=jnp.float32)
            c = sp.get_param("c", (2,), dtype=jnp.int32)
        return a, b, c

    params = sp.transform(fn).init(jax.random.key(0), X)
    assert [params["m"][k].dtype for k in "abc"] == [jnp.float32, jnp.float32, jnp.int32]
    a, b, c = sp.transform(fn).apply(params, X)
    assert (a.dtype, b.dtype, c.dtype) == (jnp.float16, jnp.float32, jnp.int32)
    assert names[:3] == [("m/a", "float16"), ("m/b", "float32"), ("m/c", "int32")]


def test_cast_floating_keeps_integer_leaves():
    tree = {"w": jnp.ones(2), "ids": jnp.arange(2)}
    cast = mp.cast_floating(tree, jnp.bfloat16)
    assert cast["w"].dtype == jnp.bfloat16 and cast["ids"].dtype == tree["ids"].dtype
    with pytest.raises(TypeError):
        mp.float32_storage_getter(jnp.int8)


def test_the_master_copy_is_float32_when_an_outer_getter_passes_dtype_by_position():
    # TF's getter order is getter(name, shape=None, dtype=None, initializer=None, ...); a getter that
    # forwards shape and dtype positionally is a valid TF 1.x getter. Before: the float16 request
    # reached the store unseen, and 'm/w' was silently stored in float16.
    def passthrough(getter, name, shape=None, dtype=None, *args, **kwargs):
        return getter(name, shape, dtype, *args, **kwargs)

    def fn(x):
        with mp.scope("m", compute_dtype=jnp.float16, custom_getter=passthrough):
            w = sp.get_param("w", (5, 2))
            b = sp.get_param("b", (2,), dtype=jnp.float32)
        return x.astype(w.dtype) @ w, b

    model = sp.transform(fn)
    params = model.init(jax.random.key(0), X)
    assert (params["m"]["w"].dtype, params["m"]["b"].dtype) == (jnp.float32, jnp.float32)
    y, b = model.apply(params, X)
    assert (y.dtype, b.dtype) == (jnp.float16, jnp.float32)


def test_cast_floating_casts_arrays_and_leaves_python_scalars_alone():
    # A Python float is no parameter: weakly typed, it already computes in the dtype of the arrays it
    # meets (as jmp's cast_to_compute leaves it). Before: AttributeError 'float' has no 'astype'.
    tree = {"lr": 1e-3, "w": jnp.ones(2), "m": np.ones(2, np.float32), "s": np.float32(2.0),
            "step": 3, "on": True}
    cast = mp.cast_floating(tree, jnp.bfloat16)
    assert cast["lr"] == 1e-3 and type(cast["lr"]) is float
    assert (cast["step"], cast["on"]) == (3, True)
    assert cast["w"].dtype == cast["m"].dtype == cast["s"].dtype == jnp.bfloat16
    jitted = jax.jit(lambda t: mp.cast_floating(t, jnp.float16))({"w": jnp.ones(2), "n": jnp.arange(2)})
    assert (jitted["w"].dtype, jitted["n"].dtype) == (jnp.float16, jnp.arange(2).dtype)


def test_mixed_precision_scope_refuses_dtype_and_points_to_compute_dtype():
    # Before: Python's own "got multiple values for keyword argument 'dtype'".
    def fn(x):
        with mp.scope("m", dtype=jnp.float16):
            return x

    with pytest.raises(TypeError, match=r"(?s)sp.mixed_precision.scope\('m', dtype=float16\): the "
                                        r"scope's dtype is compute_dtype=.*float32.*fix: "
                                        r"compute_dtype=jnp.float16"):
        sp.transform(fn).init(jax.random.key(0), 1.0)


def test_tf_dtypes_are_accepted_as_compute_dtype_and_by_cast_floating():
    # Before: np.dtype(tf.bfloat16) -> "Cannot interpret 'tf.bfloat16' as a data type".
    tf = pytest.importorskip("tensorflow")

    def fn(x):
        with mp.scope("m", compute_dtype=tf.bfloat16):
            w = sp.get_param("w", (2,))
            v = sp.get_param("v", (2,), dtype=tf.bfloat16)
            seen.append((w.dtype, v.dtype))
            return x

    seen.clear()
    params = sp.transform(fn).init(jax.random.key(0), 1.0)
    assert seen == [(jnp.bfloat16, jnp.bfloat16)]
    assert params["m"]["w"].dtype == params["m"]["v"].dtype == jnp.float32
    getter = mp.float32_storage_getter(tf.float16)
    with pytest.raises(TypeError, match=r"compute_dtype must be a float dtype, got int32"):
        mp.float32_storage_getter(tf.int32)
    assert callable(getter)
    assert mp.cast_floating({"w": jnp.ones(2)}, tf.bfloat16)["w"].dtype == jnp.bfloat16


def test_a_bad_dtype_inside_a_mixed_precision_scope_gets_get_params_own_message():
    # Before: numpy's bare "data type 'nodtype' not understood" from the getter.
    def fn(x):
        with mp.scope("m"):
            return sp.get_param("w", (2,), dtype="nodtype")

    with pytest.raises(TypeError, match=r"(?s)dtype='nodtype' of 'm/w'.*fix: "):
        sp.transform(fn).init(jax.random.key(0), 1.0)


def test_mixed_precision_scope_refusing_an_unknown_dtype_shows_it_as_written():
    # Before: "fix: compute_dtype=jnp.'nodtype'".
    def fn(x):
        with mp.scope("m", dtype="nodtype"):
            return x

    with pytest.raises(TypeError, match=r"(?s)sp.mixed_precision.scope\('m', dtype='nodtype'\).*"
                                        r"fix: compute_dtype= a float dtype such as jnp.bfloat16 "
                                        r"\('nodtype' is not a dtype JAX has\)") as info:
        sp.transform(fn).init(jax.random.key(0), 1.0)
    assert "jnp.'" not in str(info.value)
