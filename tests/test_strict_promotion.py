"""The library under JAX's strict modes: ``jax_numpy_dtype_promotion="strict"`` (no implicit dtype
promotion) and ``jax_numpy_rank_promotion="raise"`` (no implicit rank broadcasting), which users
turn on to catch their own slips (Equinox's test suite does). Nothing the library computes on its
own may rely on either promotion: each model here gives, under both modes, what it gives by default.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp
from scoped_params import initializers as inits

KEY = jax.random.key(0)
slim = sp.slim


def _images(shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(1), shape).astype(dtype)


def _layers(x):
    y = sp.layers.conv2d(x, 4, 3, padding="same", activation=jax.nn.relu)
    y = sp.layers.conv2d(y, 4, 3, data_format="channels_first")
    y = sp.layers.separable_conv2d(y, 4, 3, padding="same")
    y = sp.layers.conv2d_transpose(y, 3, 2, strides=2)
    y = sp.layers.max_pooling2d(y, 2, 2) + sp.layers.average_pooling2d(y, 2, 2)
    y = sp.layers.average_pooling2d(y, 3, 1, padding="same")
    y = sp.layers.flatten(y)
    y = sp.layers.dense(y, 5, activation=jnp.tanh)
    y = sp.layers.dropout(sp.layers.layer_norm(y), 0.5, training=True)
    z = sp.layers.conv1d(x[:, 0], 2, 3), sp.layers.conv1d(x[:, 0], 2, 3, data_format="channels_first")
    e = sp.layers.embedding(jnp.array([[0, 2], [1, 1]]), 3, 4)
    return y, z, e, sp.layers.layer_norm(x, begin_norm_axis=-1, begin_params_axis=-1)


def _batch_norm(x):
    a = sp.layers.batch_normalization(x, training=True)
    b = sp.layers.batch_normalization(x, axis=1, training=False)
    return a, b, slim.batch_norm(x, scale=True)


def _slim(x):
    with slim.arg_scope([slim.conv2d, slim.fully_connected],
                        weights_regularizer=slim.l2_regularizer(1e-4)):
        y = slim.conv2d(x, 4, [3, 3], scope="conv")
        y = slim.bias_add(y, data_format="NHWC")
        y = slim.layer_norm(slim.flatten(y))
        y = slim.fully_connected(y, 3, scope="fc")
    y = slim.softmax(slim.dropout(y, 0.5))
    n = slim.group_norm(slim.instance_norm(x), groups=3), slim.instance_norm(x, data_format="NCHW")
    t = slim.conv2d_transpose(slim.separable_conv2d(x, 2, [3, 3], 1), 2, [2, 2], stride=2)
    return y, t, n, slim.one_hot_encoding(jnp.array([0, 2]), 3), sp.regularization_loss()


def _rnn(x):
    seq = x.reshape(x.shape[0], x.shape[1], -1)
    cells = [sp.rnn.LSTMCell(3, use_peepholes=True, num_proj=2, cell_clip=1.0),
             sp.rnn.GRUCell(3), sp.rnn.BasicRNNCell(3), sp.rnn.BasicLSTMCell(3)]
    outs = []
    for i, cell in enumerate(cells):
        out, _ = sp.rnn.dynamic_rnn(cell, seq, dtype=jnp.float32, scope=f"rnn_{i}")
        outs.append(out)
    return outs


def _initializers(x):
    shape = (4, 6)
    out = [sp.get_param(f"p{i}", shape, init=init, dtype=dtype) for i, (init, dtype) in enumerate([
        (inits.orthogonal_initializer(), jnp.float32), (inits.orthogonal_initializer(), jnp.bfloat16),
        (inits.identity(), jnp.bfloat16), (inits.glorot_uniform(), jnp.bfloat16),
        (inits.truncated_normal_initializer(stddev=0.1), jnp.float16),
        (inits.variance_scaling_initializer(), jnp.bfloat16), (inits.he_normal(), jnp.float32),
        (inits.contrib.variance_scaling_initializer(), jnp.float32), (None, jnp.int32),
        (None, jnp.bool_), (inits.random_uniform_initializer(0, 5), jnp.int32),
        (inits.constant_initializer(2), jnp.int32)])]
    return out, x.sum()


def _layer_stack(x):
    def block(h):
        return jnp.tanh(sp.layers.dense(h, h.shape[-1], kernel_regularizer=sp.l2_regularizer(0.1)))
    y = sp.layer_stack(3, name="stack")(block)(sp.flatten({"x": x})["x"].reshape(x.shape[0], -1))
    return y, sp.regularization_loss()


def _mixed_precision(x):
    with sp.mixed_precision.scope("mp", compute_dtype=jnp.bfloat16):
        y = sp.layers.dense(x.reshape(x.shape[0], -1).astype(jnp.bfloat16), 4)
    return y.astype(jnp.float32)


def _control_flow(x):
    h = x.reshape(x.shape[0], -1)[:, :4]

    def step(carry, _):
        with sp.scope("cell", reuse=sp.AUTO_REUSE):
            carry = jnp.tanh(sp.layers.dense(carry, 4))
        return sp.layers.dropout(carry, 0.5, training=True), carry

    h, ys = sp.scan(step, h, None, length=3)
    h = sp.cond(h.sum() > 0, lambda v: sp.layers.dense(v, 4, name="yes"),
                lambda v: sp.layers.dense(v, 4, name="no"), h)
    h = sp.switch(1, [lambda v: v * sp.get_param("s0", []), lambda v: v * sp.get_param("s1", [])], h)
    h = sp.fori_loop(0, 2, lambda i, v: v + sp.get_param("f", [1, 4]) * jax.random.uniform(
        sp.next_rng_key(), ()), h)
    # (a while_loop is not reverse-differentiable: _run takes the gradient of every model)
    h = h * jax.lax.stop_gradient(sp.while_loop(
        lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] * sp.get_param("w", [])), (0, 1.0))[1])
    h = sp.remat(lambda v: sp.layers.dense(v, 4, name="remat"))(h)
    sp.record("h", h)
    return h, ys


MODELS = {"control_flow": _control_flow, "layers": _layers, "batch_norm": _batch_norm, "slim": _slim, "rnn": _rnn,
          "initializers": _initializers, "layer_stack": _layer_stack,
          "mixed_precision": _mixed_precision}


def _run(fn, x):
    model = sp.transform_with_state(fn)
    params, state = model.init(KEY, x)
    out, new_state = model.apply(params, state, x, rng=KEY)
    jitted, _ = jax.jit(model.apply)(params, state, x, rng=KEY)

    def loss(p):
        out, _ = model.apply(p, state, x, rng=KEY)
        return sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in jax.tree.leaves(out)
                   if jnp.issubdtype(leaf.dtype, jnp.floating))

    trainable = {k: v for k, v in sp.flatten(params).items() if jnp.issubdtype(v.dtype, jnp.floating)}
    grads = jax.grad(lambda t: loss(sp.unflatten({**sp.flatten(params), **t})))(trainable)
    return params, state, out, new_state, jitted, grads


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_give_the_same_values_under_strict_dtype_and_rank_promotion(name):
    x = _images((2, 6, 6, 3))
    expected = _run(MODELS[name], x)
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        got = _run(MODELS[name], x)
    chex_equal = jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32)),
        expected, got)
    assert jax.tree.structure(chex_equal) is not None


def test_constraints_and_regularizers_run_under_strict_dtype_and_rank_promotion():
    def fn(x):
        w = sp.get_param("w", (3, 4), constraint=sp.constraints.max_norm(0.5, axis=0),
                         regularizer=sp.l2_regularizer(0.1))
        v = sp.get_param("v", (4,), dtype=jnp.bfloat16, constraint=sp.constraints.non_neg(),
                         regularizer=sp.l1_regularizer(0.1))
        u = sp.get_param("u", (2, 4), constraint=sp.constraints.min_max_norm(0.1, 0.2, axis=1))
        return x @ w, v, u, sp.regularization_loss()

    model = sp.transform(fn)
    x = jnp.ones((2, 3))
    params = model.init(KEY, x)
    specs = model.specs(x)
    expected = (sp.apply_constraints(params, specs), model.apply(params, x))
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        got = (sp.apply_constraints(params, specs), model.apply(params, x))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a, np.float32),
                                                            np.asarray(b, np.float32)), expected, got)


def test_regularization_terms_of_different_dtypes_are_summed_in_their_common_dtype():
    # bfloat16 and float32 parameters' terms: all summed in float32, in any order of creation
    # (a running sum starting from the bfloat16 terms would round them to bfloat16 first).
    def fn(order):
        names = ["a", "b", "c"] if order else ["c", "b", "a"]
        dtypes = {"a": jnp.bfloat16, "b": jnp.float32, "c": jnp.bfloat16}
        for name in names:
            sp.get_param(name, (5,), dtype=dtypes[name], init=inits.constant(1.37),
                         regularizer=sp.l2_regularizer(0.3))
        return sp.regularization_loss()

    model = sp.transform(fn)
    for order in (True, False):
        params = model.init(KEY, order)
        terms = [sp.l2_regularizer(0.3)(params[name]) for name in "abc"]
        assert {t.dtype for t in terms} == {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)}
        with jax.numpy_dtype_promotion("strict"):
            loss = model.apply(params, order)
        assert loss.dtype == jnp.float32
        np.testing.assert_allclose(loss, sum(t.astype(jnp.float32) for t in terms), rtol=1e-6)
