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
