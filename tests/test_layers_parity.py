"""sp.layers against tf.compat.v1.layers: same parameter names, same outputs from the same weights.

Each test builds the layer in a fresh TF graph, runs TF's initializers, copies the variables into
``params`` by name, and compares outputs (and updated batch-norm statistics) within 1e-5.
"""

import os
import re

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import chex  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import scoped_params as sp  # noqa: E402
from _tf_values import load_random_values  # noqa: E402

tf = pytest.importorskip("tensorflow.compat.v1")
tf.disable_eager_execution()

ATOL = 1e-5


def run_tf(build, *inputs):
    """Build ``build(*placeholders)`` in a fresh graph; return (outputs, {name: value}, update values)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(0)
        phs = [tf.placeholder(tf.as_dtype(x.dtype), x.shape) for x in inputs]
        out = build(*phs)
        updates = tf.get_collection(tf.GraphKeys.UPDATE_OPS)
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            variables = {v.name[:-2]: sess.run(v) for v in tf.global_variables()}
            result = sess.run(out, dict(zip(phs, inputs)))
            if updates:
                sess.run(updates, dict(zip(phs, inputs)))
            after = {v.name[:-2]: sess.run(v) for v in tf.global_variables()}
    return result, variables, after


def split_params(variables, state_names=("moving_mean", "moving_variance")):
    params = {k: v for k, v in variables.items() if k.rsplit("/", 1)[-1] not in state_names}
    state = {k: v for k, v in variables.items() if k.rsplit("/", 1)[-1] in state_names}
    return sp.unflatten(params), sp.unflatten(state)


def check_same(build_tf, build_sp, *inputs, stateful=False, **apply_kwargs):
    """Compare names (init vs TF) and outputs (apply with TF's weights vs TF)."""
    tf_out, tf_vars, tf_after = run_tf(build_tf, *inputs)
    model = (sp.transform_with_state if stateful else sp.transform)(build_sp)
    init = model.init(jax.random.key(0), *inputs)
    if stateful:
        ours = sorted(sp.flatten(init[0])) + sorted(sp.flatten(init[1]))
    else:
        ours = sorted(sp.flatten(init))
    assert sorted(ours) == sorted(tf_vars)
    for name, leaf in {**sp.flatten(init[0] if stateful else init),
                       **(sp.flatten(init[1]) if stateful else {})}.items():
        assert leaf.shape == tf_vars[name].shape, name
    params, state = split_params(tf_vars)
    if stateful:
        out, new_state = jax.jit(model.apply)(params, state, *inputs, **apply_kwargs)
        return tf_out, out, tf_after, sp.flatten(new_state)
    out = jax.jit(model.apply)(params, *inputs, **apply_kwargs)
    return tf_out, out, tf_after, {}


def images(shape=(2, 9, 9, 3), seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


@pytest.mark.parametrize("kwargs", [
    dict(filters=5, kernel_size=(3, 2), strides=2, padding="same", activation=jax.nn.relu),
    dict(filters=3, kernel_size=3, dilation_rate=2, padding="same", use_bias=False),
    dict(filters=4, kernel_size=2, strides=(2, 3), padding="valid"),
])
def test_conv2d_matches_tf(kwargs):
    x = images()
    tf_kwargs = {**kwargs, "activation": tf.nn.relu if "activation" in kwargs else None}
    tf_out, out, _, _ = check_same(lambda i: tf.layers.conv2d(i, **tf_kwargs),
                                   lambda i: sp.layers.conv2d(i, **kwargs), x)
    np.testing.assert_allclose(out, tf_out, atol=ATOL)


@pytest.mark.parametrize("kind, shape, kwargs", [
    ("conv1d", (2, 11, 3), dict(filters=4, kernel_size=3, strides=2, padding="same",
                                activation=jax.nn.relu)),
    ("conv1d", (2, 11, 3), dict(filters=2, kernel_size=2, dilation_rate=3, use_bias=False)),
    ("conv3d", (2, 5, 6, 7, 2), dict(filters=3, kernel_size=(2, 3, 2), strides=(1, 2, 2),
                                     padding="same")),
    ("conv3d", (2, 5, 6, 7, 2), dict(filters=2, kernel_size=2, dilation_rate=(1, 2, 1))),
    ("separable_conv2d", (2, 9, 9, 3), dict(filters=5, kernel_size=3, depth_multiplier=2,
                                            strides=2, padding="same", activation=jax.nn.relu)),
    ("separable_conv2d", (2, 9, 9, 3), dict(filters=4, kernel_size=(2, 3), dilation_rate=2,
                                            use_bias=False)),
    ("separable_conv1d", (2, 11, 3), dict(filters=4, kernel_size=3, depth_multiplier=2, strides=2,
                                          padding="same", activation=jax.nn.relu)),
    ("separable_conv1d", (2, 11, 3), dict(filters=2, kernel_size=2, dilation_rate=3,
                                          use_bias=False)),
    ("conv3d_transpose", (2, 4, 5, 3, 2), dict(filters=3, kernel_size=(3, 2, 3), strides=(2, 1, 3),
                                               padding="same")),
    ("conv3d_transpose", (2, 4, 5, 3, 2), dict(filters=2, kernel_size=2, strides=2,
                                               activation=jax.nn.relu)),
])
def test_conv1d_conv3d_separable_and_transposed_convolutions_match_tf(kind, shape, kwargs):
    x = images(shape)
    tf_kwargs = {**kwargs, "activation": tf.nn.relu if "activation" in kwargs else None}
    tf_out, out, _, _ = check_same(lambda i: getattr(tf.layers, kind)(i, **tf_kwargs),
                                   lambda i: getattr(sp.layers, kind)(i, **kwargs), x)
    assert out.shape == tf_out.shape
    np.testing.assert_allclose(out, tf_out, atol=ATOL)


def test_1d_and_3d_pooling_match_tf():
    x1, x3 = images((2, 9, 3)), images((2, 5, 6, 7, 2), seed=1)

    def build(layers):
        return lambda a, b: (layers.max_pooling1d(a, 2, 2), layers.max_pooling1d(a, 3, 2, "same"),
                             layers.average_pooling1d(a, 3, 2, padding="same"),
                             layers.max_pooling3d(b, 2, 2),
                             layers.average_pooling3d(b, (2, 3, 2), (1, 2, 2), padding="same"))

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x1, x3)
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)


def _tf_contrib_layer_norm(inputs, center=True, scale=True, activation_fn=None, begin_norm_axis=1,
                           begin_params_axis=-1, scope=None):
    """tf.contrib.layers.layer_norm, which TF 2 no longer ships, line for line in core TF ops."""
    with tf.variable_scope(scope, "LayerNorm", [inputs]):
        shape = inputs.shape[begin_params_axis:]
        beta = tf.get_variable("beta", shape, initializer=tf.zeros_initializer()) if center else None
        gamma = tf.get_variable("gamma", shape, initializer=tf.ones_initializer()) if scale else None
        rank = inputs.shape.ndims
        axes = list(range(begin_norm_axis % rank, rank))
        mean, variance = tf.nn.moments(inputs, axes, keep_dims=True)
        outputs = tf.nn.batch_normalization(inputs, mean, variance, offset=beta, scale=gamma,
                                            variance_epsilon=1e-12)
        return activation_fn(outputs) if activation_fn is not None else outputs


def test_layer_norm_matches_contribs_names_and_arithmetic():
    x, h = images((2, 4, 5, 3)), images((2, 7, 6), seed=1)

    def build(layer_norm, vs):
        def f(x, h):
            with vs("bert"):
                a = layer_norm(h, begin_norm_axis=-1, begin_params_axis=-1, scope="LayerNorm")
                b = layer_norm(x)  # LayerNorm_1: over all axes but the batch, params per channel
                c = layer_norm(x, center=False, begin_norm_axis=2, begin_params_axis=1)
            return a, b, c
        return f

    tf_out, out, tf_vars, _ = check_same(build(_tf_contrib_layer_norm, tf.variable_scope),
                                         build(sp.layers.layer_norm, sp.scope), x, h)
    assert sorted(tf_vars) == ["bert/LayerNorm/beta", "bert/LayerNorm/gamma",
                               "bert/LayerNorm_1/beta", "bert/LayerNorm_1/gamma",
                               "bert/LayerNorm_2/gamma"]
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)
    # beta and gamma at other values than their initial zeros and ones
    model = sp.transform(lambda h: sp.layers.layer_norm(h, begin_norm_axis=-1))
    beta, gamma = images((6,), seed=2), images((6,), seed=3)
    out = model.apply({"LayerNorm": {"beta": beta, "gamma": gamma}}, h)
    normed = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(out, normed * gamma + beta, atol=ATOL)
    with pytest.raises(ValueError, match=r"begin_params_axis \(3\) and begin_norm_axis \(1\) must "
                                         r"be < rank\(inputs\) \(3\)"):
        sp.transform(lambda h: sp.layers.layer_norm(h, begin_params_axis=3)).init(
            jax.random.key(0), h)


@pytest.mark.parametrize("kind, shape, kwargs", [
    ("conv2d", (2, 3, 8, 8), dict(filters=4, kernel_size=3, padding="same")),
    ("separable_conv1d", (2, 3, 11), dict(filters=4, kernel_size=3, depth_multiplier=2)),
    ("separable_conv2d", (2, 3, 8, 8), dict(filters=4, kernel_size=3, strides=2, padding="same")),
    ("conv2d_transpose", (2, 3, 4, 5), dict(filters=2, kernel_size=3, strides=2, padding="same")),
    ("conv3d_transpose", (2, 3, 2, 4, 5), dict(filters=3, kernel_size=3, strides=(1, 2, 2))),
])
def test_channels_first_matches_tf(kind, shape, kwargs):
    # TF's CPU kernels reject channels-first convolutions, so TF computes on transposed data; the
    # layer itself is the same (same kernel, same bias) in both layouts.
    x = images(shape)
    last = [0, *range(2, len(shape)), 1]
    first = [0, len(shape) - 1, *range(1, len(shape) - 1)]
    tf_out, tf_vars, _ = run_tf(lambda i: tf.transpose(
        getattr(tf.layers, kind)(tf.transpose(i, last), **kwargs), first), x)
    model = sp.transform(lambda i: getattr(sp.layers, kind)(i, **kwargs,
                                                            data_format="channels_first"))
    params, _ = split_params(tf_vars)
    assert sorted(sp.flatten(model.init(jax.random.key(0), x))) == sorted(tf_vars)
    out = model.apply(params, x)
    assert out.shape == tf_out.shape
    np.testing.assert_allclose(out, tf_out, atol=ATOL)


@pytest.mark.parametrize("kwargs", [
    dict(filters=4, kernel_size=3, strides=2),
    dict(filters=2, kernel_size=3, strides=2, padding="same"),
    dict(filters=3, kernel_size=2, strides=3, padding="valid"),
    dict(filters=3, kernel_size=4, strides=2, padding="same"),
    dict(filters=3, kernel_size=(1, 3), strides=(3, 1), padding="same", use_bias=False),
])
def test_conv2d_transpose_matches_tf(kwargs):
    x = images((2, 5, 6, 3))
    tf_out, out, _, _ = check_same(lambda i: tf.layers.conv2d_transpose(i, **kwargs),
                                   lambda i: sp.layers.conv2d_transpose(i, **kwargs), x)
    assert out.shape == tf_out.shape
    np.testing.assert_allclose(out, tf_out, atol=ATOL)


def test_dense_matches_tf_on_rank_2_and_rank_3_inputs():
    x2 = images((4, 7))
    x3 = images((2, 3, 7))

    def build(layers, act):
        return lambda a, b: (layers.dense(a, 5, activation=act),
                             layers.dense(b, 6, use_bias=False, name="proj"))

    tf_out, out, _, _ = check_same(build(tf.layers, tf.nn.tanh), build(sp.layers, jnp.tanh), x2, x3)
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)


@pytest.mark.parametrize("shape,axis,training", [
    ((4, 5, 5, 3), -1, True), ((4, 5, 5, 3), -1, False), ((6, 4), -1, True), ((4, 3, 5, 5), 1, True),
])
def test_batch_normalization_matches_tf_outputs_and_moving_statistics(shape, axis, training):
    x = images(shape) * 3 + 1

    def build(layers):
        return lambda i: layers.batch_normalization(i, axis=axis, training=training, momentum=0.9)

    tf_out, out, tf_after, new_state = check_same(build(tf.layers), build(sp.layers), x,
                                                  stateful=True)
    np.testing.assert_allclose(out, tf_out, atol=ATOL)
    for name in ("batch_normalization/moving_mean", "batch_normalization/moving_variance"):
        np.testing.assert_allclose(new_state[name], tf_after[name], atol=ATOL, err_msg=name)


def test_batch_normalization_default_momentum_epsilon_and_flags():
    x = images((8, 4, 4, 2))

    def build(layers):
        return lambda i: layers.batch_normalization(i, training=True, center=False)

    tf_out, out, tf_after, new_state = check_same(build(tf.layers), build(sp.layers), x,
                                                  stateful=True)
    np.testing.assert_allclose(out, tf_out, atol=ATOL)
    np.testing.assert_allclose(new_state["batch_normalization/moving_variance"],
                               tf_after["batch_normalization/moving_variance"], atol=ATOL)


def _check_batch_normalization(build, shape, names=("batch_normalization",)):
    x = images(shape) * 3 + 1
    tf_out, out, tf_after, new_state = check_same(build(tf.layers), build(sp.layers), x,
                                                  stateful=True)
    np.testing.assert_allclose(out, tf_out, atol=ATOL)
    assert sorted(new_state) == sorted(n + "/" + s for n in names
                                       for s in ("moving_mean", "moving_variance"))
    for name, value in new_state.items():
        np.testing.assert_allclose(value, tf_after[name], rtol=1e-5, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("shape,axis", [((6, 4), -1), ((4, 3, 5), -1), ((4, 3, 5, 2), 2),
                                        ((2, 3, 4, 2, 3), 2)])
def test_batch_normalization_fused_true_falls_back_where_tf_cannot_fuse(shape, axis):
    # TF v1 takes fused=True as "fuse if you can": elsewhere the update uses the plain batch
    # variance, not the fused kernel's Bessel-corrected one.
    def build(layers):
        return lambda i: (
            layers.batch_normalization(i, axis=axis, training=True, fused=True, momentum=0.5),
            layers.BatchNormalization(axis=axis, fused=True, momentum=0.0, name="obj")(
                i, training=True))

    _check_batch_normalization(build, shape, names=("batch_normalization", "obj"))


@pytest.mark.parametrize("axis", [[1, 3], [1, 2], (0, 3)])
def test_batch_normalization_over_several_axes_has_tfs_rank_n_parameters(axis):
    def build(layers):
        return lambda i: layers.batch_normalization(i, axis=axis, training=True, momentum=0.5)

    _check_batch_normalization(build, (4, 5, 2, 3))


@pytest.mark.parametrize("shape", [(6, 4), (4, 5, 5, 3)])
def test_non_trainable_batch_normalization_normalizes_with_the_batch_but_keeps_its_statistics(
        shape):
    # TF v1's Layer.updates leaves a non-trainable layer's update ops out of UPDATE_OPS.
    def build(layers):
        return lambda i: layers.batch_normalization(i, training=True, trainable=False,
                                                    momentum=0.5)

    _check_batch_normalization(build, shape)
    # a traced training flag too
    model = sp.transform_with_state(lambda i, training: sp.layers.batch_normalization(
        i, training=training, trainable=False, momentum=0.5))
    x = images(shape) * 3 + 1
    params, state = model.init(jax.random.key(0), x, True)
    out, new_state = jax.jit(model.apply)(params, state, x, jnp.asarray(True))
    # the batch's statistics normalize
    np.testing.assert_allclose(out.reshape(-1, shape[-1]).mean(0), 0.0, atol=1e-4)
    chex.assert_trees_all_equal(new_state, state)


def test_pooling_matches_tf():
    x = images((2, 7, 7, 3))

    def build(layers):
        return lambda i: (layers.max_pooling2d(i, 2, 2), layers.max_pooling2d(i, 3, 2, "same"),
                          layers.average_pooling2d(i, 2, 2),
                          layers.average_pooling2d(i, 3, 2, padding="same"),
                          layers.average_pooling2d(i, (2, 3), (1, 2), padding="same"))

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x)
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_flatten_matches_tf_in_both_data_formats():
    x = images((2, 3, 4, 5))

    def build(layers):
        return lambda i: (layers.flatten(i), layers.flatten(i, data_format="channels_first"))

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x)
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=0)


def test_dropout_is_identity_in_inference_and_scales_kept_units_in_training():
    x = images((4, 50)) + 5.0
    tf_out, out, _, _ = check_same(lambda i: tf.layers.dropout(i, 0.3),
                                   lambda i: sp.layers.dropout(i, 0.3), x)
    np.testing.assert_allclose(out, tf_out, atol=0)
    model = sp.transform(lambda i: sp.layers.dropout(i, 0.3, training=True))
    y = model.apply({}, x, rng=jax.random.key(1))
    kept = np.asarray(y) != 0
    np.testing.assert_allclose(np.asarray(y)[kept], x[kept] / 0.7, rtol=1e-6)
    assert 0.55 < kept.mean() < 0.85
    with pytest.raises(sp.MissingRngError):
        model.apply({}, x)


def test_embedding_lookup_matches_tf_including_mod_sharding_and_max_norm():
    table = images((10, 4))
    ids = np.array([[0, 3], [9, 4]], np.int32)

    def build(nn, shards):
        return lambda t, i: (nn.embedding_lookup(t, i), nn.embedding_lookup(shards(t), i),
                             nn.embedding_lookup(t, i, max_norm=1.0))

    tf_out, _, _ = run_tf(build(tf.nn, lambda t: [t[0::3], t[1::3], t[2::3]]), table, ids)
    out = build(sp.layers, lambda t: [t[0::3], t[1::3], t[2::3]])(table, ids)
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)


def _tf_style_model(layers, nn_relu):
    """A small TF-1.x-style model exercising default numbering, explicit names, scopes and reuse."""
    def build(x, y):
        h = layers.conv2d(x, 4, 3, activation=nn_relu)
        h = layers.conv2d(h, 4, 3, padding="same")
        h = layers.batch_normalization(h, training=False)
        h = layers.max_pooling2d(h, 2, 2)
        h = layers.flatten(h)
        vs = tf.variable_scope if layers is tf.layers else sp.scope
        with vs("tower"):
            a = layers.dense(h, 8, name="fc")
            a = layers.dense(a, 3)
            a = layers.dense(a, 3)
        with vs("tower", reuse=True):
            b = layers.dense(h, 8, name="fc")
            b = layers.dense(b, 3)
        c = layers.dense(y, 3)
        d = layers.dense(y, 3, name="dense", reuse=True)
        e = layers.conv2d(x, 4, 3, reuse=True)
        return a, b, c, d, e
    return build


def test_ported_model_has_tfs_parameter_names_and_outputs():
    x, y = images((2, 8, 8, 3)), images((2, 5))
    tf_out, out, _, _ = check_same(_tf_style_model(tf.layers, tf.nn.relu),
                                   _tf_style_model(sp.layers, jax.nn.relu), x, y, stateful=True)
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_explicit_name_given_twice_is_tfs_already_exists_error():
    x = images((1, 4, 4, 1))
    with pytest.raises(ValueError, match="c/kernel already exists, disallowed"):
        run_tf(lambda i: (tf.layers.conv2d(i, 2, 1, name="c"), tf.layers.conv2d(i, 2, 1, name="c")), x)
    model = sp.transform(lambda i: (sp.layers.conv2d(i, 2, 1, name="c"),
                                    sp.layers.conv2d(i, 2, 1, name="c")))
    with pytest.raises(sp.ParamExistsError, match="c/kernel already exists, disallowed"):
        model.init(jax.random.key(0), x)


def test_numbering_restarts_in_each_scope_entry_and_continues_after_explicit_names():
    def body(layers, vs):
        def build(x):
            layers.dense(x, 2, name="dense")
            layers.dense(x, 2)
            with vs("a"):
                layers.dense(x, 2)
            with vs("a", reuse=True):
                layers.dense(x, 2)
            with vs("b", reuse=sp.AUTO_REUSE if layers is sp.layers else tf.AUTO_REUSE):
                layers.dense(x, 2)
                layers.dense(x, 2)
            return layers.dense(x, 2, name="dense_1", reuse=True)
        return build

    x = images((1, 3))
    tf_out, out, _, _ = check_same(body(tf.layers, tf.variable_scope), body(sp.layers, sp.scope), x)
    np.testing.assert_allclose(out, tf_out, atol=ATOL)


def test_scope_initializer_feeds_kernel_initializer_none_but_not_bias():
    x = images((2, 3))

    def build(layers, vs, const):
        def fn(i):
            with vs("s", initializer=const(0.5)):
                return layers.dense(i, 2)
        return fn

    tf_out, tf_vars, _ = run_tf(build(tf.layers, tf.variable_scope, tf.constant_initializer), x)
    params = sp.transform(build(sp.layers, sp.scope, sp.initializers.constant)).init(
        jax.random.key(0), x)
    np.testing.assert_allclose(params["s"]["dense"]["kernel"], tf_vars["s/dense/kernel"])
    np.testing.assert_allclose(params["s"]["dense"]["bias"], tf_vars["s/dense/bias"])


def test_kernel_regularizer_enters_regularization_loss():
    def fn(x):
        sp.layers.dense(x, 3, kernel_regularizer=sp.l2_regularizer(0.1))
        return sp.regularization_loss()

    model = sp.transform(fn)
    x = jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x)
    expected = 0.1 * 0.5 * jnp.sum(params["dense"]["kernel"] ** 2)
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-5)


def test_activity_regularizers_add_tfs_per_example_penalty_for_every_call():
    # TF adds regularizer(output) / batch size to the regularization losses at each call of a layer
    # (twice for an object called twice), beside the weights' terms.
    x = images((4, 6, 6, 3))

    def network(layers, np_, x):  # the same model in TF (tf.layers, tf.math) and here (sp.layers, jnp)
        h = layers.conv2d(x, 4, 3, activity_regularizer=lambda o: np_.reduce_sum(np_.abs(o)),
                          kernel_regularizer=lambda w: 0.5 * np_.reduce_sum(w * w))
        h = layers.separable_conv2d(h, 3, 2, activity_regularizer=lambda o: np_.reduce_sum(o * o))
        h = layers.conv2d_transpose(h, 2, 2, activity_regularizer=np_.reduce_mean)
        head = layers.Dense(3, activity_regularizer=lambda o: 2.0 * np_.reduce_sum(o), name="head")
        h = layers.flatten(h)
        return head(h) + head(2.0 * h)

    class jnp_:  # noqa: N801 - TF's spelling of the reductions
        abs, reduce_sum, reduce_mean = jnp.abs, jnp.sum, jnp.mean

    def tf_model(x):
        return network(tf.layers, tf.math, x)

    def sp_model(x):
        return network(sp.layers, jnp_, x), sp.regularization_loss()

    graph = tf.Graph()
    with graph.as_default():
        ph = tf.placeholder(tf.float32, x.shape)
        out = tf_model(ph)
        assert len(tf.get_collection(tf.GraphKeys.REGULARIZATION_LOSSES)) == 6
        total = tf.losses.get_regularization_loss()
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            variables = {v.name[:-2]: sess.run(v) for v in tf.global_variables()}
            tf_out, tf_total = sess.run((out, total), {ph: x})
    model = sp.transform(sp_model)
    assert sorted(sp.flatten(model.init(jax.random.key(0), x))) == sorted(variables)
    params = sp.unflatten(variables)
    for apply in (model.apply, jax.jit(model.apply)):
        out, total = apply(params, x)
        np.testing.assert_allclose(out, tf_out, rtol=1e-5, atol=ATOL)
        np.testing.assert_allclose(total, tf_total, rtol=1e-5)


def test_a_custom_layers_activity_regularizer_is_tfs_too():
    class Scale(tf.layers.Layer):
        def build(self, input_shape):
            self.gain = self.add_weight("gain", [int(input_shape[-1])],
                                        initializer=tf.constant_initializer(1.5))

        def call(self, x):
            return x * self.gain

    class SpScale(sp.layers.Layer):
        def build(self, input_shape):
            self.gain = self.add_weight("gain", [input_shape[-1].value],
                                        initializer=sp.initializers.constant(1.5))

        def call(self, x):
            return x * self.gain

    x = images((5, 3))
    graph = tf.Graph()
    with graph.as_default():
        Scale(activity_regularizer=lambda o: tf.reduce_sum(o * o), name="scale")(tf.constant(x))
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            expected = sess.run(tf.losses.get_regularization_loss())

    def fn(x):
        SpScale(activity_regularizer=lambda o: jnp.sum(o * o), name="scale")(x)
        return sp.regularization_loss()

    model = sp.transform(fn)
    np.testing.assert_allclose(model.apply(model.init(jax.random.key(0), x), x), expected, rtol=1e-5)


def test_an_activity_penalty_is_differentiable_and_refused_where_its_output_cannot_leave():
    def fn(x):
        y = sp.layers.dense(x, 2, activity_regularizer=lambda o: jnp.sum(o * o))
        return y, sp.regularization_loss()

    model = sp.transform(fn)
    x = jnp.arange(6.0).reshape(3, 2)
    params = model.init(jax.random.key(0), x)
    grads = jax.grad(lambda p: model.apply(p, x)[1])(params)
    kernel, bias = params["dense"]["kernel"], params["dense"]["bias"]
    np.testing.assert_allclose(grads["dense"]["kernel"], 2 * x.T @ (x @ kernel + bias) / 3, rtol=1e-5)

    def in_scan(x):
        return sp.scan(lambda c, row: (c, sp.layers.dense(row[None], 2, activity_regularizer=jnp.sum)),
                       0.0, x)

    def in_stack(x):
        return sp.layer_stack(2)(lambda h: sp.layers.dense(h, 2, activity_regularizer=jnp.sum))(x)

    def in_vmap(x):
        return jax.vmap(lambda row: sp.layers.dense(row[None], 2, activity_regularizer=jnp.sum))(x)

    for fn, where in ((in_scan, "sp.scan"), (in_stack, "sp.layer_stack block"),
                      (in_vmap, "JAX transformation")):
        with pytest.raises(NotImplementedError, match=rf"activity_regularizer inside .*{where}"
                                                      r"(?s:.*)add the penalty"):
            sp.transform(fn).init(jax.random.key(0), x)


def test_batch_normalization_under_plain_transform_is_inference_only():
    x = jnp.ones((2, 3))
    model = sp.transform(lambda i: sp.layers.batch_normalization(i))
    params = model.init(jax.random.key(0), x)
    assert set(sp.flatten(params)) == {"batch_normalization/gamma", "batch_normalization/beta",
                                       "batch_normalization/moving_mean",
                                       "batch_normalization/moving_variance"}
    with pytest.raises(sp.StateError, match="transform_with_state"):
        sp.transform(lambda i: sp.layers.batch_normalization(i, training=True)).init(
            jax.random.key(0), x)


def _object_model(layers, vs):
    def build(x, y):
        shared = layers.Dense(4, activation=None)
        conv = layers.Conv2D(3, 2)
        bn = layers.BatchNormalization()
        a = shared(y)
        with vs("inner"):
            b = shared(y)  # the captured scope jumps back: same weights, no new names
            c = layers.Dense(4)(y)  # numbered where first called: inner/dense
        h = layers.Flatten()(layers.MaxPooling2D(2, 2)(bn(conv(x), training=False)))
        d = layers.dense(y, 4)  # the functional layer continues the numbering: dense_1
        sep, c1 = layers.SeparableConv2D(2, 3, padding="same"), layers.Conv1D(2, 2)
        e = sep(x) + layers.AveragePooling2D(1, 1)(sep(2 * x))  # one set of weights
        f = layers.MaxPooling1D(2, 1)(c1(y[:, :, None]) + c1(2 * y[:, :, None]))
        sep1, up3 = layers.SeparableConv1D(2, 2, depth_multiplier=2), layers.Conv3DTranspose(2, 2, 2)
        g = sep1(y[:, :, None]) - sep1(3 * y[:, :, None])
        k = up3(x[:, None]) + up3(-x[:, None])
        return a, b, c, layers.dense(h, 2), conv(x), d, e, f, g, k
    return build


def test_layer_objects_share_weights_across_calls_like_tf():
    x, y = images((2, 6, 6, 3)), images((2, 5))
    tf_out, out, _, _ = check_same(_object_model(tf.layers, tf.variable_scope),
                                   _object_model(sp.layers, sp.scope), x, y, stateful=True)
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)


@pytest.mark.parametrize("kind, args, kwargs, fix", [
    ("Conv2DTranspose", (3, 3), dict(strides=2, output_padding=1), "pad the output"),
    ("Conv3DTranspose", (3, 3), dict(dilation_rate=2), "no dilation"),
    ("Conv2D", (4, 3), dict(groups=2), "one layer per group"),
    ("Dense", (4,), dict(dtype="float64"), "cast the input"),
])
def test_keras_arguments_tfs_layer_classes_take_are_refused_at_construction_naming_them(
        kind, args, kwargs, fix):
    with tf.Graph().as_default():
        getattr(tf.layers, kind)(*args, **kwargs)  # TF's class takes it (a Keras argument)
    (argument,) = [k for k in kwargs if k != "strides"]
    with pytest.raises(TypeError, match=rf"(?s)sp.layers.{kind} does not support {argument}= "
                                        rf"\(its arguments are .*\).*fix \({argument}=\): .*{fix}"):
        getattr(sp.layers, kind)(*args, **kwargs)


def _objects_called_with_training(layers):
    def build(x):
        h = layers.Conv2D(2, 3, padding="same")(x, training=True)
        h = layers.MaxPooling2D(2, 2)(h, training=True)
        h = layers.Flatten()(h, training=False)
        h = layers.Dropout(0.5)(h, training=False)  # takes it: kept
        return layers.Dense(3)(h, training=True)
    return build


def test_layer_objects_whose_call_takes_no_training_drop_it_like_tf():
    # TF 1.x's layer classes (Keras's) drop training= when call does not take it.
    x = images((2, 6, 6, 3))
    tf_out, out, _, _ = check_same(_objects_called_with_training(tf.layers),
                                   _objects_called_with_training(sp.layers), x)
    np.testing.assert_allclose(out, tf_out, atol=ATOL)


def _objects_given_the_same_name(layers, vs):
    auto = sp.AUTO_REUSE if layers is sp.layers else tf.AUTO_REUSE

    def build(y):
        out = [layers.Dense(2, name="fc")(y) for _ in range(2)]  # fc/, fc_1/
        out += [layers.BatchNormalization(name="bn0")(y, training=True) for _ in range(2)]
        out += [layers.Dense(2, name="shared", _reuse=auto)(y) for _ in range(2)]  # one set
        made_outside = layers.Dense(2, name="fc")
        with vs("a"):
            out.append(layers.Dense(2, name="fc")(y))  # a/fc/: numbered where first called
            with vs("b"):
                out.append(made_outside(y))  # a/b/fc/
            out.append(made_outside(2 * y))  # the same weights, wherever it is called again
        out += [layers.Dense(2, name="z/fc")(y) for _ in range(2)]  # z/fc/, z/fc_1/
        out.append(layers.Dense(2, name="fc")(y, scope="placed"))  # placed/: the scope wins
        out.append(layers.Dense(2, name="dense")(y))  # dense/, then the unnamed one: dense_1/
        out.append(layers.Dense(2)(y))
        return out
    return build


def test_layer_objects_given_the_same_name_are_numbered_unless_made_with_reuse_like_tf():
    y = images((4, 3))
    tf_out, out, tf_vars, new_state = check_same(_objects_given_the_same_name(tf.layers, tf.variable_scope),
                                                 _objects_given_the_same_name(sp.layers, sp.scope), y,
                                                 stateful=True)
    assert sorted({k.rsplit("/", 1)[0] for k in tf_vars}) == [
        "a/b/fc", "a/fc", "bn0", "bn0_1", "dense", "dense_1", "fc", "fc_1", "placed", "shared",
        "z/fc", "z/fc_1"]
    assert len(out) == len(tf_out) == 14
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)
    for name, value in new_state.items():
        np.testing.assert_allclose(value, tf_vars[name], atol=ATOL)


def test_a_layer_objects_name_with_a_slash_clashes_with_that_scopes_layer_like_tf():
    def build(layers, vs):
        def fn(y):
            with vs("a"):
                layers.Dense(2, name="fc")(y)
            return layers.Dense(2, name="a/fc")(y)  # the counts under a/ were reset when it closed
        return fn

    with pytest.raises(ValueError, match="a/fc/kernel already exists, disallowed"):
        run_tf(build(tf.layers, tf.variable_scope), images((2, 3)))
    with pytest.raises(sp.ParamExistsError, match="a/fc/kernel already exists, disallowed"):
        sp.transform(build(sp.layers, sp.scope)).init(jax.random.key(0), images((2, 3)))


def _objects_called_with_a_scope(layers, vs):
    def build(y):
        dense = layers.Dense(4)
        a = dense(y, scope="proj")  # proj/kernel: the scope replaces the layer's own name
        b = dense(2 * y, scope="ignored")  # the scope is set at the first call
        with vs("outer"):
            c = layers.Dense(3, name="named")(y, scope="s")  # outer/s/kernel
        return a, b, c
    return build


def test_layer_objects_called_with_a_scope_put_their_weights_under_it_like_tf():
    y = images((2, 5))
    tf_out, out, tf_vars, _ = check_same(_objects_called_with_a_scope(tf.layers, tf.variable_scope),
                                         _objects_called_with_a_scope(sp.layers, sp.scope), y)
    assert sorted(tf_vars) == ["outer/s/bias", "outer/s/kernel", "proj/bias", "proj/kernel"]
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)


def _slope_activation(layers, seen=None):
    """A PReLU-like activation that creates its slope with get_variable where it runs (TF runs a
    layer's activation in Layer.call, inside the layer's scope), and notes its name scope in
    ``seen``."""
    def prelu(y):
        if layers is tf.layers:
            name_scope = tf.get_default_graph().get_name_scope() + "/"
            alpha = tf.get_variable("alpha", [], initializer=tf.constant_initializer(0.2))
        else:
            name_scope = sp.current_name_scope()
            alpha = sp.get_param("alpha", [], init=sp.initializers.constant(0.2))
        if seen is not None:
            seen.append(name_scope)
        return y * alpha
    return prelu


@pytest.mark.parametrize("kind, shape, args", [
    ("dense", (2, 5), (3,)),
    ("conv1d", (2, 7, 3), (2, 2)),
    ("conv2d", (2, 6, 6, 3), (2, 2)),
    ("conv3d", (2, 4, 4, 4, 2), (2, 2)),
    ("separable_conv1d", (2, 7, 3), (2, 2)),
    ("separable_conv2d", (2, 6, 6, 3), (2, 2)),
    ("conv2d_transpose", (2, 3, 3, 2), (2, 2)),
    ("conv3d_transpose", (2, 3, 3, 3, 2), (2, 2)),
])
def test_an_activation_that_creates_a_variable_creates_it_in_each_functional_layers_scope_like_tf(
        kind, shape, args):
    x = images(shape)
    seen = {tf.layers: [], sp.layers: []}

    def build(layers):
        def f(i):
            act = _slope_activation(layers, seen[layers])
            layer = getattr(layers, kind)
            a = layer(i, *args, activation=act)  # <kind>/alpha
            b = layer(2 * i, *args, activation=act)  # <kind>_1/alpha
            c = layer(i, *args, activation=act, name=kind, reuse=True)  # <kind>/alpha again
            return a, b, c
        return f

    tf_out, out, tf_vars, _ = check_same(build(tf.layers), build(sp.layers), x)
    assert sorted(n for n in tf_vars if n.endswith("alpha")) == [f"{kind}/alpha", f"{kind}_1/alpha"]
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)
    # the activation's ops are named under the layer too
    assert seen[sp.layers][:2] == seen[tf.layers][:2] == [f"{kind}/", f"{kind}_1/"]


def test_layer_norms_activation_fn_creates_its_variables_under_the_layer_norm_like_contrib():
    x = images((2, 5))

    def build(layer_norm, layers):
        def f(i):
            act = _slope_activation(layers)
            return layer_norm(i, activation_fn=act), layer_norm(2 * i, activation_fn=act)
        return f

    tf_out, out, tf_vars, _ = check_same(build(_tf_contrib_layer_norm, tf.layers),
                                         build(sp.layers.layer_norm, sp.layers), x)
    assert sorted(tf_vars) == ["LayerNorm/alpha", "LayerNorm/beta", "LayerNorm/gamma",
                               "LayerNorm_1/alpha", "LayerNorm_1/beta", "LayerNorm_1/gamma"]
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)


def _get_variable(layers):
    """TF's get_variable, or sp.get_param in its spelling (name, shape, initializer)."""
    if layers is tf.layers:
        return lambda name, shape, init: tf.get_variable(name, shape, initializer=init)
    return lambda name, shape, init: sp.get_param(name, shape, init)


def _objects_activation_opening_scopes(layers, vs, names):
    """A layer object whose activation opens a default-named scope, next to the caller's own."""
    get = _get_variable(layers)
    ones = tf.ones_initializer() if layers is tf.layers else sp.initializers.ones

    def act(y):
        with vs(None, default_name="act"):
            return y * get("alpha", [], ones)

    def build(y):
        layer = layers.Dense(4, activation=act)
        a = layer(y)  # dense/act/alpha: numbered under dense/, not where the layer is called
        with vs(None, default_name="act") as s:  # the root's first act
            get("v", [1], ones)
            names.append(s.name)
        b = layer(2 * y)  # the jump rolls its act counter back: dense/act/alpha again, reused
        with vs("outer"):
            with vs(None, default_name="act") as s:
                get("v", [1], ones)
                names.append(s.name)
            c = layers.Dense(3, activation=act)(y)  # outer/dense/act, not outer/dense/act_1
        return a, b, c
    return build


def test_a_layer_objects_activation_numbers_its_default_names_in_the_layers_scope_like_tf():
    y = images((2, 5))
    tf_names, sp_names = [], []
    tf_out, out, tf_vars, _ = check_same(
        _objects_activation_opening_scopes(tf.layers, tf.variable_scope, tf_names),
        _objects_activation_opening_scopes(sp.layers, sp.scope, sp_names), y)
    assert sorted(tf_vars) == ["act/v", "dense/act/alpha", "dense/bias", "dense/kernel",
                               "outer/act/v", "outer/dense/act/alpha", "outer/dense/bias",
                               "outer/dense/kernel"]
    assert sp_names[:2] == tf_names == ["act", "outer/act"]
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, atol=ATOL)


def _object_called_again_after_its_scope_closed(layers, vs, names):
    def build(y):
        layer = layers.Dense(4)
        with vs("a"):
            layer(y)  # a/dense
        with vs("a"):  # a's counters start over ...
            out = layer(2 * y)  # ... but jumping back into a/dense enters it again
            with vs(None, default_name="dense") as s:
                _get_variable(layers)("v", [1], None)  # so this is a/dense_1/v, not a/dense/v
                names.append(s.name)
        return out
    return build


def test_calling_a_layer_object_enters_its_scope_for_default_name_numbering_like_tf():
    y = images((2, 5))
    tf_names, sp_names = [], []
    tf_out, out, tf_vars, _ = check_same(
        _object_called_again_after_its_scope_closed(tf.layers, tf.variable_scope, tf_names),
        _object_called_again_after_its_scope_closed(sp.layers, sp.scope, sp_names), y)
    assert sorted(tf_vars) == ["a/dense/bias", "a/dense/kernel", "a/dense_1/v"]
    assert sp_names[0] == tf_names[0] == "a/dense_1"
    np.testing.assert_allclose(out, tf_out, atol=ATOL)


def _objects_noting_their_name_scopes(layers, vs, seen):
    """Custom layers (one with a sub-layer) and Dense objects that note the name scope their build,
    call and activation run in, called first and again, inside other scopes and with a scope."""
    if layers is tf.layers:
        ones, name_scope = tf.ones_initializer(), tf.name_scope
        current = lambda: tf.get_default_graph().get_name_scope() + "/"  # noqa: E731
    else:
        ones, name_scope, current = sp.initializers.ones, sp.name_scope, sp.current_name_scope

    class Inner(layers.Layer):
        def build(self, input_shape):
            seen.append(("inner.build", current()))
            self.g = self.add_weight("g", [int(input_shape[-1])], initializer=ones)

        def call(self, x):
            seen.append(("inner.call", current()))
            return x * self.g

    class Outer(layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = Inner()

        def build(self, input_shape):
            seen.append(("outer.build", current()))
            self.g = self.add_weight("g", [int(input_shape[-1])], initializer=ones)

        def call(self, x):
            seen.append(("outer.call", current()))
            return self.inner(x * self.g)

    def act(y):
        seen.append(("act", current()))
        return y

    def build(y):
        a = Outer()
        y = a(a(y))  # first call opens outer/, the second re-enters it
        with vs("s"):
            y = a(y)  # still outer/ (the captured original name scope)
            y = Outer()(y)  # first called here: s/outer/
        y = Outer()(y)  # outer_1/
        y = layers.dense(y, 3, activation=act)  # the functional layers: dense/, dense_1/
        y = layers.dense(y, 3, activation=act)
        d = layers.Dense(3, activation=act)
        y = d(y)  # dense_2/
        with vs("s"):
            y = d(y)  # dense_2/ again
            y = layers.Dense(3, activation=act)(y)  # s_1/dense/
        y = layers.Dense(3, activation=act)(y, scope="placed")  # placed/
        with name_scope("outer") as ns:  # outer and outer_1 are taken
            seen.append(("name_scope('outer')", ns))
        return y
    return build


def test_layer_objects_run_build_call_and_activation_in_their_name_scope_like_tf():
    y = images((2, 3))
    seen = {tf.layers: [], sp.layers: []}
    tf_out, out, _, _ = check_same(
        _objects_noting_their_name_scopes(tf.layers, tf.variable_scope, seen[tf.layers]),
        _objects_noting_their_name_scopes(sp.layers, sp.scope, seen[sp.layers]), y)
    np.testing.assert_allclose(out, tf_out, atol=ATOL)
    assert seen[sp.layers] == seen[tf.layers] * 2  # init's trace, then the jitted apply's
    assert seen[tf.layers] == [
        ("outer.build", "outer/"), ("outer.call", "outer/"),
        ("inner.build", "outer/inner/"), ("inner.call", "outer/inner/"),
        ("outer.call", "outer/"), ("inner.call", "outer/inner/"),
        ("outer.call", "outer/"), ("inner.call", "outer/inner/"),
        ("outer.build", "s/outer/"), ("outer.call", "s/outer/"),
        ("inner.build", "s/outer/inner/"), ("inner.call", "s/outer/inner/"),
        ("outer.build", "outer_1/"), ("outer.call", "outer_1/"),
        ("inner.build", "outer_1/inner/"), ("inner.call", "outer_1/inner/"),
        ("act", "dense/"), ("act", "dense_1/"), ("act", "dense_2/"), ("act", "dense_2/"),
        ("act", "s_1/dense/"), ("act", "placed/"), ("name_scope('outer')", "outer_2/")]


# --- arguments TF refuses at graph build ------------------------------------------------------------


def _refused_by_tf(build, shape):
    """The exception TF raises building ``build`` on a placeholder of ``shape`` (None if it builds)."""
    with tf.Graph().as_default():
        try:
            build(tf.placeholder(tf.float32, shape))
        except (ValueError, TypeError) as error:
            return error
    return None


def _refused_by_us(build, shape):
    with pytest.raises((ValueError, TypeError)) as error:
        sp.transform(build).init(jax.random.key(0), jnp.ones(shape))
    return error


_VALID_WINDOW_PAST_THE_INPUT = [  # (layer call on a 6-wide input, input shape, what ours names)
    (lambda L, x: L.max_pooling1d(x, 7, 1), (2, 6, 4), r"max_pooling1d .* pool_size of \(7,\)"),
    (lambda L, x: L.max_pooling2d(x, (7, 2), 1, name="p"), (2, 6, 6, 4),
     r"max_pooling2d 'p' .* pool_size of \(7, 2\)"),
    (lambda L, x: L.average_pooling1d(x, 7, 1), (2, 6, 4), "average_pooling1d"),
    (lambda L, x: L.average_pooling2d(x, 7, 2), (2, 6, 6, 4), "average_pooling2d"),
    (lambda L, x: L.average_pooling3d(x, (1, 7, 1), 1), (2, 6, 6, 6, 1), "average_pooling3d"),
    (lambda L, x: L.max_pooling3d(x, 7, 1, data_format="channels_first"), (2, 1, 6, 6, 6),
     r"max_pooling3d .* spatial size \(6, 6, 6\)"),
    (lambda L, x: L.conv1d(x, 2, 7), (2, 6, 4), r"conv1d 'conv1d' .* kernel of \(7,\)"),
    (lambda L, x: L.conv2d(x, 2, 7, name="c"), (2, 6, 6, 4), r"conv2d 'c' .*\(shape \(2, 6, 6, 4\)\)"),
    (lambda L, x: L.conv2d(x, 2, 3, dilation_rate=3), (2, 6, 6, 4),
     r"conv2d 'conv2d' .* kernel of \(3, 3\) at dilation \(3, 3\), spanning \(7, 7\)"),
    (lambda L, x: L.conv3d(x, 2, (1, 1, 7)), (2, 6, 6, 6, 1), "conv3d"),
    (lambda L, x: L.separable_conv1d(x, 2, 7), (2, 6, 4), "separable_conv1d 'separable_conv1d'"),
    (lambda L, x: L.separable_conv2d(x, 2, 7), (2, 6, 6, 4), "separable_conv2d"),
    (lambda L, x: L.Conv2D(2, 7)(x), (2, 6, 6, 4), "conv2d 'conv2d'"),
]


@pytest.mark.parametrize("build, shape, names", _VALID_WINDOW_PAST_THE_INPUT)
def test_a_valid_window_larger_than_the_input_is_refused_at_build_like_tf(build, shape, names):
    # lax would return a zero-size output (and init zero-size weights downstream): a silent mis-port
    assert isinstance(_refused_by_tf(lambda x: build(tf.layers, x), shape), ValueError)
    error = _refused_by_us(lambda x: build(sp.layers, x), shape)
    assert error.type is ValueError
    message = str(error.value)
    assert message.startswith("Negative dimension size caused by subtracting 7 from 6: ")
    assert re.search(names, message), message
    assert "\n  fix: padding='SAME', a smaller " in message


def test_a_window_the_input_just_fits_or_same_padding_or_a_transposed_conv_still_builds_like_tf():
    x = images((2, 6, 6, 4))

    def build(layers):
        return lambda i: (layers.conv2d(i, 2, 6), layers.conv2d(i, 2, 6, strides=4),
                          layers.max_pooling2d(i, 6, 1), layers.average_pooling2d(i, 9, 1, "same"),
                          layers.conv2d(i, 2, 9, padding="same"), layers.conv2d_transpose(i, 2, 9))

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x)
    for a, b in zip(out, tf_out):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=ATOL)


@pytest.mark.parametrize("build, shape, message", [
    (lambda L, x: L.conv1d(x, 0, 3), (2, 6, 4),
     r"conv1d: invalid value for argument `filters`.*Received filters=0\.\n  fix: pass filters >= 1"),
    (lambda L, x: L.conv2d(x, -1, 3, name="c"), (2, 6, 6, 4), r"conv2d 'c': .*filters=-1"),
    (lambda L, x: L.conv2d_transpose(x, 0, 3), (2, 6, 6, 4), "conv2d_transpose: .*filters=0"),
    (lambda L, x: L.separable_conv2d(x, 0, 3), (2, 6, 6, 4), "separable_conv2d: .*filters=0"),
    (lambda L, x: L.separable_conv2d(x, 2, 3, depth_multiplier=0), (2, 6, 6, 4),
     r"separable_conv2d: .*depth_multiplier=0\.\n  fix: pass depth_multiplier >= 1"),
])
def test_convolutions_refuse_fewer_than_one_filter_like_tf(build, shape, message):
    # lax would return a zero-channel output
    assert isinstance(_refused_by_tf(lambda x: build(tf.layers, x), shape), ValueError)
    error = _refused_by_us(lambda x: build(sp.layers, x), shape)
    assert error.type is ValueError and re.search(message, str(error.value)), str(error.value)


@pytest.mark.parametrize("build, shape, message", [
    (lambda L, x: L.conv2d(x, 2, 3, strides=0), (2, 6, 6, 4),
     r"conv2d: the `strides` argument must be integers of at least 1\. Received: strides=0\n"
     r"  fix: strides=1 \(slim: stride=1\)"),
    (lambda L, x: L.conv2d(x, 2, 3, strides=(1, -1), name="c"), (2, 6, 6, 4),
     r"conv2d 'c': the `strides` .*strides=\(1, -1\)"),
    (lambda L, x: L.conv2d(x, 2, 0), (2, 6, 6, 4), "conv2d: the `kernel_size` .*kernel_size=0"),
    (lambda L, x: L.conv1d(x, 2, 3, dilation_rate=0), (2, 6, 4),
     r"conv1d: the `dilation_rate` .*\n  fix: dilation_rate=1 \(slim: rate=1\)"),
    (lambda L, x: L.separable_conv1d(x, 2, 3, strides=0), (2, 6, 4), "separable_conv1d: .*strides"),
    (lambda L, x: L.conv2d_transpose(x, 2, 3, strides=0), (2, 6, 6, 4), "conv2d_transpose: .*strides"),
    (lambda L, x: L.max_pooling2d(x, 0, 1), (2, 6, 6, 4), "max_pooling2d: the `pool_size` "),
    (lambda L, x: L.average_pooling1d(x, 2, 0, name="p"), (2, 6, 4),
     "average_pooling1d 'p': the `strides` "),
    (lambda L, x: L.max_pooling3d(x, 2, (1, 0, 1)), (2, 6, 6, 6, 1), "max_pooling3d: the `strides`"),
])
def test_sizes_strides_and_rates_below_one_are_refused_naming_the_argument_and_layer_like_tf(
        build, shape, message):
    # lax failed in lowering (an MLIR verifier error) or computed garbage
    assert isinstance(_refused_by_tf(lambda x: build(tf.layers, x), shape), ValueError)
    error = _refused_by_us(lambda x: build(sp.layers, x), shape)
    assert error.type is ValueError and re.search(message, str(error.value)), str(error.value)


def test_dropout_checks_a_python_rate_even_when_not_training_like_tf():
    x = images((2, 5))
    for rate in (1.5, -0.1):
        tf_error = _refused_by_tf(lambda i: tf.layers.dropout(i, rate), x.shape)
        assert f"Invalid value {rate} received for `rate`" in str(tf_error)
        for training in (False, True):
            with pytest.raises(ValueError, match=rf"(?s)Invalid value {rate} received for `rate`, "
                                                 r"expected a value between 0 and 1\..*fix: "):
                sp.transform(lambda i: sp.layers.dropout(i, rate, training=training)).init(
                    jax.random.key(0), x)
    # rate=1 is allowed out of training, as in TF, and a traced rate is not checked
    tf_out, out, _, _ = check_same(lambda i: tf.layers.dropout(i, 1.0),
                                   lambda i: sp.layers.dropout(i, 1.0), x)
    np.testing.assert_allclose(out, tf_out, atol=0)
    traced = jax.jit(lambda i, rate: sp.transform(lambda: sp.layers.dropout(i, rate)).apply({}))
    np.testing.assert_allclose(traced(x, 1.5), x, atol=0)


def test_flatten_makes_a_vector_n_by_1_and_refuses_a_scalar_like_tf():
    tf_out, out, _, _ = check_same(lambda i: tf.layers.flatten(i), lambda i: sp.layers.flatten(i),
                                   images((4,)))
    assert out.shape == tf_out.shape == (4, 1)
    assert isinstance(_refused_by_tf(lambda i: tf.layers.flatten(i), ()), ValueError)
    error = _refused_by_us(lambda i: sp.layers.flatten(i), ())
    assert error.type is ValueError
    assert "expects min_ndim=1" in str(error.value) and "\n  fix: " in str(error.value)


# --- batch normalization's axis, dense's rank -------------------------------------------------------


@pytest.mark.parametrize("axis, shown", [(5, "5"), (2, "2"), (-3, "-3"), ((0, 5), r"\(0, 5\)")])
def test_batch_normalization_refuses_an_axis_outside_the_inputs_rank_like_tf(axis, shown):
    # it wrapped the axis modulo the rank: axis=5 (or 2) of a rank-2 input normalized axis 1 (or 0)
    tf_error = _refused_by_tf(lambda i: tf.layers.batch_normalization(i, axis=axis), (2, 4))
    assert "Expected 0 <= axis < inputs.rank (with inputs.rank=2)" in str(tf_error)
    for build in (lambda i: sp.layers.batch_normalization(i, axis=axis, training=True),
                  lambda i: sp.layers.BatchNormalization(axis=axis, name="bn")(i, training=True)):
        with pytest.raises(ValueError) as error:
            sp.transform_with_state(build).init(jax.random.key(0), jnp.ones((2, 4)))
        message = str(error.value)
        assert re.search(rf"^batch_normalization '(batch_normalization|bn)': invalid value for "
                         rf"`axis` argument\. Expected -2 <= axis < 2 \(inputs\.rank=2, input shape "
                         rf"\(2, 4\)\)\. Received: axis={shown}\n  fix: ", message), message


def test_batch_normalization_takes_in_range_negative_axes_and_refuses_duplicates_like_tf():
    def build(layers):
        return lambda i: (layers.batch_normalization(i, axis=-2, training=True),
                          layers.batch_normalization(i, axis=(0, -1), training=True))

    _check_batch_normalization(build, (6, 4), names=("batch_normalization",
                                                     "batch_normalization_1"))
    assert "Duplicate axis" in str(_refused_by_tf(
        lambda i: tf.layers.batch_normalization(i, axis=(1, -1)), (2, 4)))
    with pytest.raises(ValueError, match=r"Duplicate axis: \(1, -1\) of a rank-2 input"):
        sp.transform_with_state(lambda i: sp.layers.batch_normalization(i, axis=(1, -1))).init(
            jax.random.key(0), jnp.ones((2, 4)))
    assert "undefined rank" in str(_refused_by_tf(tf.layers.batch_normalization, ()))
    with pytest.raises(ValueError, match=r"(?s)a scalar input has no axis to normalize.*fix: "):
        sp.transform_with_state(lambda i: sp.layers.batch_normalization(i)).init(
            jax.random.key(0), jnp.ones(()))


@pytest.mark.parametrize("shape", [()])
def test_dense_refuses_a_scalar_input_naming_the_layer_like_tf(shape):
    # a scalar raised a bare IndexError
    tf_error = _refused_by_tf(lambda i: tf.layers.dense(i, 3), shape)
    assert f"expected min_ndim=2, found ndim={len(shape)}" in str(tf_error)
    for build, label in ((lambda i: sp.layers.dense(i, 3), "dense 'dense'"),
                         (lambda i: sp.layers.Dense(3, name="fc")(i), "dense 'fc'")):
        error = _refused_by_us(build, shape)
        assert error.type is ValueError
        message = str(error.value)
        assert message.startswith(f"Input 0 of layer {label} is incompatible with the layer: "
                                  f"expected min_ndim=2, found ndim={len(shape)}. Full shape "
                                  f"received: {shape}\n  fix: "), message


def test_dense_takes_one_example_as_a_vector_so_per_example_code_runs_under_vmap():
    # TF's input spec refuses a vector (min_ndim=2); under jax.vmap every example is one (README,
    # "where we depart"): a vector is a batch of one without its batch axis
    batch = images((5, 4))

    def per_example(x):
        return (sp.layers.dense(x, 3, activation=jnp.tanh),
                sp.slim.fully_connected(x, 2, scope="fc"), sp.layers.Dense(2, name="obj")(x))

    model = sp.transform(per_example)
    params = model.init(jax.random.key(0), batch[0])
    assert {n: p.shape for n, p in sp.flatten(params).items()} == {
        "dense/kernel": (4, 3), "dense/bias": (3,), "fc/weights": (4, 2), "fc/biases": (2,),
        "obj/kernel": (4, 2), "obj/bias": (2,)}
    batched = sp.transform(lambda x: per_example(x)).apply(params, batch)
    mapped = jax.vmap(lambda x: model.apply(params, x))(batch)
    one = model.apply(params, batch[0])
    for b, m, o in zip(batched, mapped, one):
        assert o.shape == b.shape[1:]
        np.testing.assert_allclose(m, b, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(o, b[0], rtol=1e-6, atol=1e-6)


def test_dense_without_a_name_and_reuse_true_shares_the_first_dense_like_tf():
    # tf.layers takes scope "dense" with reuse (slim refuses reuse without scope=, see test_slim)
    x = images((2, 4))

    def build(layers):
        return lambda i: (layers.dense(i, 3), layers.dense(i, 3, reuse=True))

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x)
    np.testing.assert_allclose(out[1], out[0], atol=0)
    np.testing.assert_allclose(out[1], tf_out[1], atol=ATOL)


# --- Keras identifiers: TF's tf.layers (Keras layers underneath) take names -------------------------


_KERAS_ACTIVATIONS = ["relu", "relu6", "elu", "selu", "sigmoid", "hard_sigmoid", "tanh", "softplus",
                      "softsign", "swish", "silu", "gelu", "exponential", "linear", "mish",
                      "softmax", "log_softmax", "leaky_relu"]


@pytest.mark.parametrize("activation", _KERAS_ACTIVATIONS)
def test_activations_given_by_name_are_kerass_as_in_tf_layers(activation):
    # TF's layers resolve the name with keras.activations.get; here it was "'str' is not callable"
    x = images((4, 5)) * 2

    def build(layers):
        return lambda i: (layers.dense(i, 3, activation=activation),
                          layers.Dense(3, activation=activation)(i),
                          layers.conv1d(i[:, :, None], 2, 2, activation=activation))

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x)
    for a, b in zip(out, tf_out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=ATOL)


def test_units_and_filters_are_cast_with_int_as_tf_layers_do():
    x, image = images((2, 4)), images((2, 5, 5, 3))

    def build(layers):
        return lambda i, j: (layers.dense(i, 3.0), layers.dense(i, "3"), layers.dense(i, np.int64(3)),
                             layers.Dense(3.0)(i), layers.conv2d(j, 2.0, 3),
                             layers.conv2d_transpose(j, 2.0, 3), layers.separable_conv2d(j, 2.0, 3))

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x, image)
    for a, b in zip(out, tf_out):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=ATOL)
    for units, error, message in [
            (-1, ValueError, r"dense 'dense': invalid value for `units`, expected a positive integer"
                             r"\. Received: units=-1\n  fix: "),
            ("a", ValueError, r"dense 'dense': invalid value for `units`: 'a' is no integer \(TF: "
                              r"invalid literal for int\(\) with base 10: 'a'\)\.\n  fix: "),
            (True, TypeError, r"dense 'dense': units=True is a bool.*\n  fix: ")]:
        assert isinstance(_refused_by_tf(lambda i: tf.layers.dense(i, units), (2, 4)), error)
        with pytest.raises(error, match=message):
            sp.transform(lambda i: sp.layers.dense(i, units)).init(jax.random.key(0), x)
    assert isinstance(_refused_by_tf(lambda i: tf.layers.conv2d(i, "2", 3), image.shape), TypeError)
    with pytest.raises(TypeError, match=r"conv2d: filters='2' is no integer.*\n  fix: "):
        sp.transform(lambda j: sp.layers.conv2d(j, "2", 3)).init(jax.random.key(0), image)


def _initialized(layers):
    """Layers whose initializers and constraints are given by Keras names (deterministic ones)."""
    return lambda i, j: (
        layers.dense(i, 3, kernel_initializer="zeros", bias_initializer="ones"),
        layers.Dense(3, kernel_initializer="Ones", bias_initializer="zero",
                     kernel_constraint="non_neg")(i),
        layers.conv2d(j, 2, 3, kernel_initializer="ones", bias_initializer="Zeros",
                      bias_constraint="max_norm"),
        layers.conv2d_transpose(j, 2, 3, kernel_initializer="one", bias_initializer="ones"),
        layers.separable_conv2d(j, 2, 3, depthwise_initializer="ones", pointwise_initializer="ones",
                                bias_initializer="constant"),
        layers.dense(i, 4, kernel_initializer="identity", use_bias=False),
        layers.batch_normalization(i, beta_initializer="ones", gamma_initializer="zeros",
                                   moving_mean_initializer="ones", training=False))


def test_initializers_and_constraints_given_by_name_are_kerass_as_in_tf_layers():
    x, image = images((2, 4)), images((2, 5, 5, 3))
    _, tf_vars, _ = run_tf(_initialized(tf.layers), x, image)
    params, state = sp.transform_with_state(_initialized(sp.layers)).init(jax.random.key(0), x,
                                                                          image)
    ours = {**sp.flatten(params), **sp.flatten(state)}
    assert sorted(ours) == sorted(tf_vars)
    for name, value in ours.items():
        np.testing.assert_array_equal(value, tf_vars[name], err_msg=name)
    specs = sp.transform(_initialized(sp.layers)).specs(x, image)
    assert type(specs["dense_1"]["kernel"].constraint).__name__ == "NonNeg"
    assert type(specs["conv2d"]["bias"].constraint).__name__ == "MaxNorm"


def test_random_initializers_given_by_name_have_kerass_defaults_not_tf1s():
    # "random_normal" is Keras's RandomNormal (stddev 0.05), not tf.random_normal_initializer (1.0)
    def build(layers):
        return lambda i: (layers.dense(i, 400, kernel_initializer="random_normal", use_bias=False),
                          layers.dense(i, 400, kernel_initializer="uniform", use_bias=False),
                          layers.dense(i, 400, kernel_initializer="he_normal", use_bias=False))

    x = images((2, 300))
    _, tf_vars, _ = run_tf(build(tf.layers), x)
    ours = sp.flatten(sp.transform(build(sp.layers)).init(jax.random.key(0), x))
    for name, value in ours.items():
        theirs = tf_vars[name]
        np.testing.assert_allclose(value.std(), theirs.std(), rtol=0.03, err_msg=name)
        if name != "dense/kernel":  # bounded draws (uniform, truncated normal): their largest values
            # sit at the bound; an untruncated normal's largest of 120,000 moves by ~10% between draws
            np.testing.assert_allclose(np.abs(value).max(), np.abs(theirs).max(), rtol=0.05,
                                       err_msg=name)


def test_regularizers_given_by_name_are_kerass_as_in_tf_layers():
    x, image = images((2, 4)), images((2, 5, 5, 3))

    def build(layers):
        return lambda i, j: (
            layers.dense(i, 3, kernel_initializer="ones", kernel_regularizer="l2",
                         bias_initializer="ones", bias_regularizer="l1"),
            layers.dense(i, 3, kernel_initializer="ones", kernel_regularizer="l1_l2"),
            layers.conv2d(j, 2, 3, kernel_initializer="ones", kernel_regularizer="L2"),
            layers.batch_normalization(i, gamma_regularizer="l1", beta_initializer="ones",
                                       beta_regularizer="L1L2"))

    graph = tf.Graph()
    with graph.as_default():
        phs = [tf.placeholder(tf.float32, v.shape) for v in (x, image)]
        build(tf.layers)(*phs)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            expected = session.run(tf.losses.get_regularization_loss(), dict(zip(phs, (x, image))))

    def fn(i, j):
        build(sp.layers)(i, j)
        return sp.regularization_loss()

    model = sp.transform(fn)
    np.testing.assert_allclose(model.apply(model.init(jax.random.key(0), x, image), x, image),
                               expected, rtol=1e-5)


@pytest.mark.parametrize("build, error, message", [
    (lambda i: sp.layers.dense(i, 3, activation="rleu"), ValueError,
     r"dense 'dense': unknown activation 'rleu' \(TF: Unknown activation function 'rleu'\)\.\n"
     r"  fix: one of the Keras names .*'relu'.*, or pass a function, e.g\. activation=jax\.nn\.relu"),
    (lambda i: sp.layers.dense(i, 3, kernel_initializer="glorot"), ValueError,
     r"dense 'dense': unknown initializer 'glorot' for kernel_initializer=.*\n  fix: one of the "
     r"Keras names .*'glorot_uniform'.*, or an initializer from sp.initializers"),
    (lambda i: sp.layers.conv1d(i[:, :, None], 2, 2, kernel_regularizer="l3"), ValueError,
     r"conv1d 'conv1d': unknown regularizer 'l3' for kernel_regularizer=.*\n  fix: one of 'L1', "),
    (lambda i: sp.layers.dense(i, 3, activity_regularizer="l3"), ValueError,
     r"sp.layers.dense: unknown regularizer 'l3' for activity_regularizer=.*\n  fix: one of 'L1', "),
    (lambda i: sp.layers.dense(i, 3, activation="ReLU"), ValueError,
     r"dense 'dense': activation='ReLU' names a Keras layer class, which TF's layers take but "
     r"sp.layers does not.*\n  fix: .*activation='relu'"),
])
def test_unknown_or_unsupported_names_are_refused_naming_the_layer_argument_and_choices(
        build, error, message):
    with pytest.raises(error, match=message):
        sp.transform(build).init(jax.random.key(0), jnp.ones((2, 4)))


def test_a_custom_layers_add_weight_takes_initializer_and_constraint_names_as_tfs_does():
    class Scale(sp.layers.Layer):
        def build(self, input_shape):
            self.gain = self.add_weight("gain", [input_shape[-1].value], initializer="ones",
                                        constraint="non_neg")

        def call(self, x):
            return x * self.gain

    class Penalized(Scale):
        def build(self, input_shape):
            self.gain = self.add_weight("gain", [3], regularizer="l2")

    model = sp.transform(lambda x: Scale()(x))
    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(model.init(jax.random.key(0), x)["scale"]["gain"], np.ones(3))
    assert type(model.specs(x)["scale"]["gain"].constraint).__name__ == "NonNeg"
    # TF's tf.layers.Layer.add_weight does not resolve a regularizer's name: "'str' object is not
    # callable" there; a TypeError that says so here
    with pytest.raises(TypeError, match=r"(?s)Penalized.add_weight\('gain'\): regularizer='l2' is a "
                                        r"name.*fix: .*regularizer=sp.l2_regularizer"):
        sp.transform(lambda x: Penalized()(x)).init(jax.random.key(0), x)


def _tf_regularization_loss(build, *inputs):
    """TF's ``get_regularization_loss()`` of ``build(*placeholders)``, with every variable set to
    random values (so bias and moving-statistics terms count too); returns it and the values."""
    graph = tf.Graph()
    with graph.as_default():
        build(*[tf.placeholder(tf.as_dtype(x.dtype), x.shape) for x in inputs])
        total = tf.losses.get_regularization_loss()
        with tf.Session(graph=graph) as sess:
            sess.run(tf.global_variables_initializer())
            values = load_random_values(sess, tf.global_variables())
            return sess.run(total), values


class _SpMath:  # noqa: N801 - TF's spelling of the reductions, for programs written once for both
    reduce_sum = staticmethod(jnp.sum)


def _regularized_network(layers, vs, math, layer_base, constant, x, *, own=True):
    """One program for TF (tf.layers, tf.variable_scope, tf.math) and sp: every kind of tf.layers
    weight in a scope with regularizer=, with the layers' own regularizers too when ``own``."""

    def l2(scale):
        return (lambda w: scale * math.reduce_sum(w * w)) if own else None

    class Scale(layer_base):
        def build(self, input_shape):
            self.gain = self.add_weight("gain", [int(input_shape[-1])], initializer=constant(1.5),
                                        regularizer=l2(0.3))

        def call(self, h):
            return h * self.gain

    with vs("net", regularizer=lambda w: 0.05 * math.reduce_sum(w * w)):
        h = layers.conv2d(x, 4, 3, kernel_regularizer=l2(0.1), bias_regularizer=l2(0.2))
        h = layers.separable_conv2d(h, 3, 2, depthwise_regularizer=l2(0.1),
                                    pointwise_regularizer=l2(0.2))
        h = layers.conv2d_transpose(h, 2, 2, kernel_regularizer=l2(0.1))
        h = layers.batch_normalization(h, gamma_regularizer=l2(0.1), beta_regularizer=l2(0.2))
        h = layers.flatten(h)
        head = layers.Dense(3, kernel_regularizer=l2(0.1), bias_regularizer=l2(0.2), name="head")
        y = head(h) + head(2.0 * h)  # an object's second call adds no term
        y = y + layers.dense(h, 3, kernel_regularizer=l2(0.1), name="d")
        y = y + layers.dense(h, 3, kernel_regularizer=l2(0.1), name="d", reuse=True)  # nor a reuse
        if own:  # a layer regularizer with no term leaves the scope's
            y = y + layers.dense(h, 3, kernel_regularizer=lambda w: None, use_bias=False)
        return Scale(name="scale")(y)


@pytest.mark.parametrize("own", [True, False], ids=["scope_and_layer", "scope_only"])
def test_a_layers_own_regularizer_adds_to_its_scopes_as_in_tf(own):
    # TF's tf.layers Layer.add_weight creates the weight with get_variable *without* its
    # regularizer, so the scope's applies, then adds the layer's own term: both count, once, when
    # the weight is created. (slim.variable and get_param(regularizer=) replace the scope's.)
    x = images((2, 6, 6, 3))
    expected, values = _tf_regularization_loss(
        lambda x: _regularized_network(tf.layers, tf.variable_scope, tf.math, tf.layers.Layer,
                                       tf.constant_initializer, x, own=own), x)

    def fn(x):
        _regularized_network(sp.layers, sp.scope, _SpMath, sp.layers.Layer,
                             sp.initializers.constant_initializer, x, own=own)
        return sp.regularization_loss()

    model = sp.transform(fn)
    assert sorted(sp.flatten(model.init(jax.random.key(0), x))) == sorted(values)
    params = sp.unflatten({k: jnp.asarray(v) for k, v in values.items()})
    for apply in (model.apply, jax.jit(model.apply)):
        np.testing.assert_allclose(apply(params, x), expected, rtol=1e-5)


def test_a_layers_stock_regularizer_under_a_scope_regularizer_refuses_an_integer_weight_at_creation():
    # the layer's and the scope's terms, combined, keep the mark get_param checks (TF: a TypeError)
    class Counter(sp.layers.Layer):
        def build(self, input_shape):
            self.n = self.add_weight("n", [], dtype=jnp.int32, initializer=sp.initializers.zeros,
                                     regularizer=sp.l2_regularizer(0.1))

        def call(self, x):
            return x

    def fn(x):
        with sp.scope("s", regularizer=sp.l2_regularizer(0.1)):
            return Counter(name="counter")(x)

    with pytest.raises(TypeError, match=r"The regularizer of 's/counter/n'"):
        sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 3)))


@pytest.mark.parametrize("units", [None, [3]])
def test_dense_units_that_int_refuses_by_type_is_a_type_error_like_tf(units):
    with pytest.raises(TypeError, match=r"dense 'dense': invalid value for `units`"):
        sp.transform(lambda x: sp.layers.dense(x, units)).init(jax.random.key(0), jnp.ones((2, 3)))


@pytest.mark.parametrize("build, error, message", [
    (lambda L, x: L.conv2d(x, 2, 3.0), ValueError,
     r"conv2d: the `kernel_size` argument must be a tuple of 2 integers\. Received: 3\.0"
     r"\n  fix: "),
    (lambda L, x: L.conv2d(x, 2, np.float32(3)), ValueError, r"`kernel_size` argument must be a "
                                                            r"tuple of 2 integers\. Received: "),
    (lambda L, x: L.conv2d(x, 2, 3, strides=2.0), ValueError,
     r"conv2d: the `strides` argument must be a tuple of 2 integers\. Received: 2\.0"),
    (lambda L, x: L.conv2d(x, 2, None), ValueError,
     r"the `kernel_size` argument must be a tuple of 2 integers\. Received: None\n  fix: "),
    (lambda L, x: L.conv2d(x, 2, (3, None)), ValueError,
     r"`kernel_size` argument must be a tuple of 2 integers\. Received: \(3, None\)"),
    (lambda L, x: L.separable_conv2d(x, 2, 3, dilation_rate=2.0), ValueError,
     r"separable_conv2d: the `dilation_rate` argument must be a tuple of 2 "),
    (lambda L, x: L.conv2d_transpose(x, 2, 3.0), ValueError,
     r"conv2d_transpose: the `kernel_size` argument must be a tuple of 2 "),
    (lambda L, x: L.max_pooling2d(x, 2.0, 2), ValueError,
     r"max_pooling2d: the `pool_size` argument must be a tuple of 2 integers\. Received: 2\.0"),
    (lambda L, x: L.conv2d(x, 2, (3, 2.5)), TypeError,
     r"conv2d: the `kernel_size` argument has an entry that is no integer: \(3, 2\.5\) "
     r"\(TF: Dimension value must be integer\)\.\n  fix: "),
    (lambda L, x: L.conv2d(x, 2, (3, 2.0)), TypeError, r"`kernel_size` argument has an entry "),
    (lambda L, x: L.conv2d(x, 2, 3, strides=(1, 2.0)), TypeError, r"`strides` argument has an "),
    (lambda L, x: L.separable_conv2d(x, 2, (3, 2.5)), TypeError, r"`kernel_size` argument has an"),
    (lambda L, x: L.batch_normalization(x, axis=1.0), TypeError,
     r"batch_normalization 'batch_normalization': expected an int or a list/tuple of ints for the "
     r"argument 'axis', but received: 1\.0.*\n  fix: "),
    (lambda L, x: L.batch_normalization(x, axis=None), TypeError,
     r"expected an int or a list/tuple of ints for the argument 'axis', but received: None"),
])
def test_a_float_or_none_size_or_axis_is_refused_with_tfs_error_class_and_message(
        build, error, message):
    # Before: "TypeError: 'float' object is not iterable", and (3, 2.5) silently became (3, 2)
    assert isinstance(_refused_by_tf(lambda x: build(tf.layers, x), (2, 7, 6, 3)), error)
    with pytest.raises(error, match=message) as info:
        sp.transform(lambda x: build(sp.layers, x)).init(jax.random.key(0), jnp.ones((2, 7, 6, 3)))
    assert "not iterable" not in str(info.value)


def test_a_pool_size_tuple_with_float_entries_is_truncated_as_tfs_pooling_does():
    # TF's pooling ops take the sizes as int attributes: (2, 2.5) pools as (2, 2)
    x = images((2, 7, 6, 3))

    def build(layers):
        return lambda i: (layers.max_pooling2d(i, (2, 2.5), 1),
                          layers.average_pooling2d(i, 2, (1, 2.0)))

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x)
    for a, b in zip(out, tf_out):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=ATOL)


def test_data_format_in_any_letter_case_is_accepted_as_tfs_layers_lower_case_it():
    x = images((2, 7, 6, 3))

    def build(layers):
        return lambda i: (layers.conv2d(i, 2, 3, data_format="CHANNELS_LAST"),
                          layers.max_pooling2d(i, 2, 2, data_format="Channels_Last"),
                          layers.Conv2D(2, 3, data_format="Channels_Last")(i),
                          layers.flatten(i, data_format="Channels_First"))

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x)
    for a, b in zip(out, tf_out):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=ATOL)
    with pytest.raises(ValueError, match=r"The `data_format` argument must be one of "
                                         r"'channels_first', 'channels_last'\. Received: 'nhwc'"):
        sp.transform(lambda i: sp.layers.conv2d(i, 2, 3, data_format="nhwc")).init(
            jax.random.key(0), x)


@pytest.mark.parametrize("build, kind, shape", [
    (lambda L, x: L.conv2d(x, 2, 3), "conv2d 'conv2d'", (1, 4, 4, 0)),
    (lambda L, x: L.conv2d(x, 2, 3, data_format="channels_first", name="c"), "conv2d 'c'",
     (1, 0, 4, 4)),
    (lambda L, x: L.separable_conv2d(x, 2, 3), "separable_conv2d 'separable_conv2d'",
     (1, 4, 4, 0)),
    (lambda L, x: L.conv1d(x[:, 0], 2, 3), "conv1d 'conv1d'", (1, 4, 4, 0)),
])
def test_a_convolution_over_zero_input_channels_is_refused_as_tf_refuses_a_depth_0_filter(
        build, kind, shape):
    # Before: init made a zero-size kernel, e.g. (3, 3, 0, 2)
    theirs = _refused_by_tf(lambda x: build(tf.layers, x), shape)
    assert isinstance(theirs, ValueError) and "must not be 0" in str(theirs)
    with pytest.raises(ValueError, match=rf"(?s){kind}: Depth of filter must not be 0: the input, "
                                         r"shape \(.*\), has 0 channels.*\n  fix: "):
        sp.transform(lambda x: build(sp.layers, x)).init(jax.random.key(0), jnp.ones(shape))


def test_a_transposed_convolution_over_zero_input_channels_gives_the_bias_as_tfs_does():
    # TF builds and runs conv2d_transpose over 0 channels (unlike conv2d): the output is the bias
    x = images((1, 4, 4, 0))

    def build(layers):
        return lambda i: layers.conv2d_transpose(i, 2, 3, bias_initializer=tf.ones_initializer()
                                                 if layers is tf.layers else sp.initializers.ones)

    tf_out, out, _, _ = check_same(build(tf.layers), build(sp.layers), x)
    assert out.shape == tf_out.shape == (1, 6, 6, 2)
    np.testing.assert_allclose(out, tf_out, atol=ATOL)


@pytest.mark.parametrize("build, shape", [
    (lambda L, i: L.conv1d(i, 4, 3, padding="causal", dilation_rate=2), (2, 11, 3)),
    (lambda L, i: L.conv1d(i, 4, 3, strides=2, padding="Causal"), (2, 11, 3)),
    (lambda L, i: L.conv1d(i, 2, 3, padding="causal", data_format="channels_first"), (2, 3, 7)),
    (lambda L, i: L.conv1d(i, 2, 3, padding="causal", dilation_rate=4), (2, 1, 3)),  # 1 step long
    (lambda L, i: L.separable_conv1d(i, 4, 3, padding="causal", dilation_rate=2,
                                     depth_multiplier=2), (2, 11, 3)),
    (lambda L, i: L.separable_conv1d(i, 4, 2, strides=3, padding="causal"), (2, 11, 3)),
    (lambda L, i: L.Conv1D(4, 3, padding="causal")(i), (2, 11, 3)),
    (lambda L, i: L.SeparableConv1D(4, 3, padding="causal", dilation_rate=3)(i), (2, 11, 3)),
])
def test_causal_padding_of_1d_convolutions_left_pads_time_like_tf(build, shape):
    # Before: "The `padding` argument must be 'valid' or 'same'. Received: 'causal'"
    x = images(shape)
    tf_out, out, _, _ = check_same(lambda i: build(tf.layers, i), lambda i: build(sp.layers, i), x)
    assert out.shape == tf_out.shape
    np.testing.assert_allclose(out, tf_out, atol=ATOL)


def test_a_causal_convolutions_output_does_not_depend_on_later_steps():
    model = sp.transform(lambda x: sp.layers.conv1d(x, 2, 3, padding="causal", dilation_rate=2))
    x = jnp.asarray(images((1, 9, 3)))
    params = model.init(jax.random.key(0), x)
    later_changed = x.at[:, 5:].set(7.0)
    np.testing.assert_array_equal(model.apply(params, x)[:, :5],
                                  model.apply(params, later_changed)[:, :5])


@pytest.mark.parametrize("build, shape, kind", [
    (lambda L, x: L.conv2d(x, 2, 3, padding="causal"), (2, 6, 6, 4), "conv2d"),
    (lambda L, x: L.separable_conv2d(x, 2, 3, padding="causal", name="s"), (2, 6, 6, 4),
     "separable_conv2d 's'"),
    (lambda L, x: L.conv3d(x, 2, 3, padding="causal"), (2, 6, 6, 6, 1), "conv3d"),
    (lambda L, x: L.conv2d_transpose(x, 2, 3, padding="causal"), (2, 6, 6, 4), "conv2d_transpose"),
    (lambda L, x: L.Conv2D(2, 3, padding="causal")(x), (2, 6, 6, 4), "conv2d 'conv2d'"),
])
def test_causal_padding_beyond_1d_convolutions_is_refused_like_tf(build, shape, kind):
    theirs = _refused_by_tf(lambda x: build(tf.layers, x), shape)
    assert isinstance(theirs, ValueError) and "Causal padding is only supported for" in str(theirs)
    error = _refused_by_us(lambda x: build(sp.layers, x), shape)
    assert error.type is ValueError
    assert re.search(rf"^{kind}: Causal padding is only supported for `Conv1D` and "
                     r"`SeparableConv1D` \(conv1d, separable_conv1d\)\. Received: "
                     r"padding='causal'.*\n  fix: padding='same' or 'valid'", str(error.value)), \
        str(error.value)


def test_an_unknown_padding_of_a_1d_convolution_names_causal_among_the_choices():
    with pytest.raises(ValueError, match=r"^The `padding` argument must be 'valid', 'same' or "
                                         r"'causal'\. Received: 'full'"):
        sp.transform(lambda x: sp.layers.conv1d(x, 2, 3, padding="full")).init(
            jax.random.key(0), jnp.ones((2, 6, 3)))


_LAYER_CLASSES = [("Dense", (4,)), ("Conv1D", (4, 3)), ("Conv2D", (4, 3)),
                  ("SeparableConv2D", (4, 3)), ("Conv2DTranspose", (4, 3)),
                  ("BatchNormalization", ()), ("Dropout", ()), ("Flatten", ()),
                  ("MaxPooling2D", (2, 2)), ("AveragePooling1D", (2, 2)), ("Layer", ())]


@pytest.mark.parametrize("kind, args", _LAYER_CLASSES)
@pytest.mark.parametrize("name", [3, b"fc"])
def test_a_layer_objects_name_that_is_no_string_is_a_type_error_at_construction(kind, args, name):
    # TF's takes it and fails at the first call ("expected string or bytes-like object, got
    # 'int'"); ours failed there with "'int' object has no attribute 'startswith'", or ran.
    with tf.Graph().as_default():
        layer = getattr(tf.layers, kind)(*args, name=name)
        with pytest.raises(TypeError):
            layer(tf.ones((2, 4, 4, 3)))
    with pytest.raises(TypeError, match=rf"^sp.layers.{kind}\(name={re.escape(repr(name))}\): a "
                                        rf"layer's name must be a string, got "
                                        rf"{type(name).__name__}.*\n  fix: name='(3|fc)', or "
                                        "leave name=None"):
        getattr(sp.layers, kind)(*args, name=name)


@pytest.mark.parametrize("kind, args", _LAYER_CLASSES)
def test_a_layer_objects_dtype_that_is_no_dtype_is_a_type_error_at_construction_like_tf(kind,
                                                                                       args):
    # Before: "data type 'nodtype' not understood" (Layer), or "does not support dtype=", not
    # saying what was given; Flatten: "__init__() got an unexpected keyword argument 'dtype'".
    with tf.Graph().as_default(), pytest.raises(TypeError, match="to a TensorFlow DType"):
        getattr(tf.layers, kind)(*args, dtype="nodtype")
    fix = ("pass a NumPy/JAX dtype, e.g. dtype=jnp.float32, or leave dtype=None" if kind == "Layer"
           else r"drop it: parameters take the input's floating dtype here")
    with pytest.raises(TypeError, match=rf"^sp.layers.{kind}\(dtype='nodtype'\): 'nodtype' is not "
                                        rf"a dtype JAX has \(TF refuses it too.*\n  fix: {fix}"):
        getattr(sp.layers, kind)(*args, dtype="nodtype")


def test_a_custom_layers_valid_dtype_in_any_spelling_sets_its_weights_dtype():
    class Scale(sp.layers.Layer):
        def build(self, input_shape):
            self.gain = self.add_weight("gain", [input_shape[-1].value])

        def call(self, x):
            return x * self.gain

    for dtype in ("bfloat16", jnp.bfloat16, np.dtype("float16"), tf.float16):
        params = sp.transform(lambda x: Scale(dtype=dtype)(x)).init(jax.random.key(0),
                                                                    jnp.ones((2, 3)))
        assert params["scale"]["gain"].dtype == jnp.dtype(dtype if dtype is not tf.float16
                                                          else "float16")


# --- integer inputs ---------------------------------------------------------------------------------


def _tf_error_on(build, x):
    """The TypeError TF 1.x raises building or running ``build`` on ``x`` (None if it runs)."""
    with tf.Graph().as_default(), tf.Session() as session:
        try:
            placeholder = tf.placeholder(tf.as_dtype(x.dtype), x.shape)
            out = build(tf.layers, placeholder)
            session.run(tf.global_variables_initializer())
            session.run(out, {placeholder: x})
        except TypeError as error:
            return error
    return None


_INTEGER_INPUTS_TF_REFUSES = [  # (layer call, input dtype, how ours names the layer)
    (lambda L, x: L.dense(x[:, 0, 0], 3), np.int32, "dense 'dense'"),
    (lambda L, x: L.Dense(3, name="fc")(x[:, 0, 0]), np.int32, "dense 'fc'"),
    (lambda L, x: L.conv3d(x[..., None], 2, 2), np.int32, "conv3d 'conv3d'"),
    (lambda L, x: L.conv3d_transpose(x[..., None], 2, 2), np.int32,
     "conv3d_transpose 'conv3d_transpose'"),
    (lambda L, x: L.separable_conv1d(x[:, 0], 2, 2), np.int32,
     "separable_conv1d 'separable_conv1d'"),
    (lambda L, x: L.separable_conv2d(x, 2, 2, name="sep"), np.int32, "separable_conv2d 'sep'"),
    (lambda L, x: L.batch_normalization(x, training=False), np.int32,
     "batch_normalization 'batch_normalization'"),
    (lambda L, x: L.batch_normalization(x[:, 0], training=True), np.int32,
     "batch_normalization 'batch_normalization'"),
    (lambda L, x: L.conv2d(x, 2, 2), np.uint8, "conv2d 'conv2d'"),  # TF's Conv2D: int32 only
    (lambda L, x: L.conv1d(x[:, 0], 2, 2), np.int16, "conv1d 'conv1d'"),
    (lambda L, x: L.conv2d_transpose(x, 2, 2), np.int8, "conv2d_transpose 'conv2d_transpose'"),
    (lambda L, x: L.dense(x[:, 0, 0], 3), np.bool_, "dense 'dense'"),
]


@pytest.mark.parametrize("build, dtype, label", _INTEGER_INPUTS_TF_REFUSES)
def test_layers_refuse_a_non_floating_input_tf_refuses_naming_the_layer_and_dtype(build, dtype,
                                                                                 label):
    # Before: cast to float32 (batch_normalization(training=False) returned the input's int32, its
    # normalized values truncated).
    x = (images((2, 6, 6, 3)) * 4).astype(dtype)
    assert isinstance(_tf_error_on(build, x), TypeError)
    with pytest.raises(TypeError) as error:
        model = sp.transform_with_state(lambda i: build(sp.layers, i))
        model.apply(*model.init(jax.random.key(0), x), x)
    message = str(error.value)
    found = jnp.dtype(dtype).name
    assert message.startswith(f"{label}: the input has dtype {found}, but this layer only takes a "
                              "floating-point input"), message
    assert message.endswith("\n  fix: cast the input first, e.g. x.astype(jnp.float32).")


def test_layer_norm_refuses_an_integer_input_naming_the_layer():
    # contrib's layer_norm (slim's, see test_slim) raises a TypeError on it
    with pytest.raises(TypeError, match=r"^layer_norm 'LayerNorm': the input has dtype int32, but "
                                        r"this layer only takes a floating-point input"):
        sp.transform(lambda x: sp.layers.layer_norm(x)).init(jax.random.key(0),
                                                              jnp.ones((2, 3), jnp.int32))


@pytest.mark.parametrize("kind, shape", [("conv1d", (2, 6, 3)), ("conv2d", (2, 6, 6, 3)),
                                         ("conv2d_transpose", (2, 6, 6, 3))])
def test_int32_convolutions_tf_takes_make_int32_parameters_like_tf(kind, shape):
    # TF's Conv2D op takes int32, so tf.layers.conv1d/conv2d/conv2d_transpose build int32 kernels
    # and biases (zeros by default, an initializer's values otherwise). Before: float32 ones.
    x = (images(shape) * 4).astype(np.int32)
    for tf_init, sp_init in ((None, None), (tf.ones_initializer(), sp.initializers.ones)):
        tf_out, out, tf_vars, _ = check_same(
            lambda i: getattr(tf.layers, kind)(i, 2, 2, kernel_initializer=tf_init),
            lambda i: getattr(sp.layers, kind)(i, 2, 2, kernel_initializer=sp_init), x)
        params = sp.transform(lambda i: getattr(sp.layers, kind)(
            i, 2, 2, kernel_initializer=sp_init)).init(jax.random.key(0), x)
        assert {n: str(p.dtype) for n, p in sp.flatten(params).items()} == {
            n: str(v.dtype) for n, v in tf_vars.items()} == {f"{kind}/kernel": "int32",
                                                              f"{kind}/bias": "int32"}
        assert out.dtype == tf_out.dtype == np.int32
        np.testing.assert_array_equal(out, tf_out)
