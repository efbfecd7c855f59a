"""sp.layers where a port from TF 1.x's tf.layers went wrong: training=None, a tensor dropout rate,
integer inputs, initializers and regularizers given as numbers or Keras configs, name="", dropout's
noise_shape, rank errors, and out-of-range embedding ids.

TF's answers are computed here when TensorFlow is installed (each in its own ``tf.Graph()``, so
nothing depends on the process's eager mode); the tests that need it skip without it."""

import os
import re

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import scoped_params as sp  # noqa: E402

KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow.compat.v1")


def tf_run(tf, build):
    """``build()`` in a fresh TF graph, its variables initialized; returns what it evaluates to."""
    with tf.Graph().as_default() as graph:
        out = build()
        with tf.Session(graph=graph) as session:
            session.run(tf.global_variables_initializer())
            return session.run(out)


def tf_error(tf, build):
    """The exception ``build()`` raises in a fresh TF graph (None if it builds)."""
    with tf.Graph().as_default():
        try:
            build()
        except Exception as error:  # noqa: BLE001 - TF's refusal, whatever its type
            return error
    return None


# --- 1. training=None: TF's default learning phase, inference -------------------------------------


def test_training_none_is_tfs_default_learning_phase_inference(tf):
    x = np.random.RandomState(0).randn(4, 5).astype(np.float32)
    for tf_layer, sp_layer in [
            (lambda v: tf.layers.dropout(v, 0.5, training=None),
             lambda v: sp.layers.dropout(v, 0.5, training=None)),
            (lambda v: tf.layers.batch_normalization(v, training=None),
             lambda v: sp.layers.batch_normalization(v, training=None))]:
        want = tf_run(tf, lambda: tf_layer(tf.constant(x)))
        model = sp.transform_with_state(sp_layer)
        params, state = model.init(KEY, x)
        got, new_state = model.apply(params, state, x, rng=jax.random.key(1))
        np.testing.assert_allclose(got, want, atol=1e-5)
        for name, value in sp.flatten(state).items():  # no moving-statistics update
            np.testing.assert_array_equal(sp.flatten(new_state)[name], value)


def test_training_none_works_without_state_and_without_rng():
    x = jnp.arange(6.0).reshape(2, 3)
    model = sp.transform(lambda v: sp.layers.batch_normalization(
        sp.layers.dropout(v, 0.5, training=None), training=None))
    params = model.init(KEY, x)
    np.testing.assert_allclose(model.apply(params, x), x / np.sqrt(1 + 1e-3), rtol=1e-6)
    drop = sp.layers.Dropout(0.5)  # an object's call passes training=None on too
    np.testing.assert_array_equal(sp.transform(lambda v: drop(v, training=None)).apply({}, x), x)


# --- 2. a JAX-array dropout rate, as TF takes a tensor rate ---------------------------------------


def test_dropout_takes_a_traced_or_concrete_jax_array_rate():
    x = jnp.ones((64, 64))
    by_float = sp.transform(lambda v: sp.layers.dropout(v, 0.25, training=True))
    want = by_float.apply({}, x, rng=jax.random.key(1))
    traced = sp.transform(lambda v, r: sp.layers.dropout(v, rate=r, training=True))
    got = jax.jit(traced.apply)({}, x, jnp.float32(0.25), rng=jax.random.key(1))
    np.testing.assert_array_equal(got, want)  # the same mask and scale as the Python rate
    assert 0.2 < float((got == 0).mean()) < 0.3
    inner = sp.transform(lambda v: sp.layers.dropout(v, rate=jnp.float32(0.25), training=True))
    np.testing.assert_array_equal(jax.jit(inner.apply)({}, x, rng=jax.random.key(1)), want)
    concrete = sp.transform(lambda v: sp.layers.dropout(v, rate=jnp.float32(0.25), training=True))
    np.testing.assert_array_equal(concrete.apply({}, x, rng=jax.random.key(1)), want)
    zero = sp.transform(lambda v: sp.layers.dropout(v, rate=jnp.float32(0.0), training=True))
    np.testing.assert_array_equal(zero.apply({}, x), x)  # no rng needed: nothing is dropped


def test_dropout_refuses_a_concrete_array_rate_out_of_range_or_not_scalar():
    x = jnp.ones((2, 3))
    rate = jnp.float32(1.5)  # concrete (made outside the traced model function)
    with pytest.raises(ValueError, match=r"Invalid value 1\.5 received for `rate`"):
        sp.transform(lambda v: sp.layers.dropout(v, rate)).init(KEY, x)
    with pytest.raises(ValueError) as info:
        sp.transform(lambda v: sp.layers.dropout(v, jnp.full((2,), 0.5), training=True)
                     ).apply({}, x, rng=KEY)
    assert "scalar" in str(info.value) and "fix:" in str(info.value)


# --- 3. integer inputs TF refuses -----------------------------------------------------------------


def test_dropout_and_average_pooling_refuse_integer_inputs_as_tf_does(tf):
    x = np.full((1, 4, 4, 1), 3, np.int32)
    for tf_layer, sp_layer in [
            (lambda v: tf.layers.dropout(v, 0.3, training=True),
             lambda v: sp.layers.dropout(v, 0.3, training=True, name="drop")),
            (lambda v: tf.layers.dropout(v, 0.3, training=None),
             lambda v: sp.layers.dropout(v, 0.3, training=None, name="drop")),
            (lambda v: tf.layers.average_pooling2d(v, 2, 2),
             lambda v: sp.layers.average_pooling2d(v, 2, 2, name="drop"))]:
        assert tf_error(tf, lambda: tf_layer(tf.constant(x))) is not None
        with pytest.raises(TypeError) as info:
            sp.transform(sp_layer).apply({}, x, rng=KEY)
        msg = str(info.value)
        assert "'drop'" in msg and "int32" in msg and "fix: cast the input" in msg, msg
    for tf_layer, sp_layer in [  # what TF takes: not training, a zero rate, a max pool
            (lambda v: tf.layers.dropout(v, 0.3, training=False),
             lambda v: sp.layers.dropout(v, 0.3, training=False)),
            (lambda v: tf.layers.dropout(v, 0.0, training=True),
             lambda v: sp.layers.dropout(v, 0.0, training=True)),
            (lambda v: tf.layers.max_pooling2d(v, 2, 2),
             lambda v: sp.layers.max_pooling2d(v, 2, 2))]:
        want = tf_run(tf, lambda: tf_layer(tf.constant(x)))
        got = sp.transform(sp_layer).apply({}, x)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layer", [sp.layers.average_pooling1d, sp.layers.average_pooling3d])
def test_average_pooling_refuses_integer_inputs_in_every_rank(layer):
    rank = 1 if layer is sp.layers.average_pooling1d else 3
    x = np.ones((1,) + (4,) * rank + (1,), np.int32)
    with pytest.raises(TypeError, match=layer.__name__ + ".*int32"):
        sp.transform(lambda v: layer(v, 2, 2)).apply({}, x)


# --- 4. a number or an array as an initializer ----------------------------------------------------


@pytest.mark.parametrize("argument, value, call", [
    ("kernel_initializer", 5.0, lambda v, kw: sp.layers.dense(v, 2, **kw)),
    ("kernel_initializer", 5, lambda v, kw: sp.layers.dense(v, 2, **kw)),
    ("bias_initializer", np.ones(2, np.float32), lambda v, kw: sp.layers.dense(v, 2, **kw)),
    ("kernel_initializer", 0.5, lambda v, kw: sp.layers.conv1d(v[:, :, None], 2, 1, **kw)),
    ("depthwise_initializer", 0.5,
     lambda v, kw: sp.layers.separable_conv1d(v[:, :, None], 2, 1, **kw)),
    ("gamma_initializer", 5.0, lambda v, kw: sp.layers.batch_normalization(v, **kw)),
    ("moving_mean_initializer", 5.0, lambda v, kw: sp.layers.batch_normalization(v, **kw)),
    ("embeddings_initializer", 5.0,
     lambda v, kw: sp.layers.embedding(jnp.array([1]), 4, 2, **kw)),
])
def test_a_number_or_array_initializer_is_refused_naming_the_argument(argument, value, call):
    x = jnp.ones((2, 5))
    with pytest.raises(ValueError) as info:
        sp.transform(lambda v: call(v, {argument: value})).init(KEY, x)
    msg = str(info.value)
    assert f"{argument}=" in msg and "Could not interpret initializer identifier" in msg, msg
    assert "fix:" in msg and "sp.initializers.constant(" in msg, msg
    assert "drop shape=" not in msg and "don't match" not in msg, msg


def test_tf_refuses_a_number_initializer_too(tf):
    error = tf_error(tf, lambda: tf.layers.dense(tf.ones([2, 5]), 2, kernel_initializer=5.0))
    assert isinstance(error, ValueError) and "Could not interpret initializer" in str(error)


def test_add_weight_refuses_a_number_initializer():
    class Scale(sp.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight("w", [2], initializer=5.0)

        def call(self, v):
            return v * self.w

    with pytest.raises(ValueError, match=r"initializer=5\.0.*\n.*sp\.initializers\.constant\(5\.0\)"):
        sp.transform(lambda v: Scale()(v)).init(KEY, jnp.ones(2))


# --- 5. name="": no name --------------------------------------------------------------------------


def empty_names(layers, v, auto_reuse):
    layers.dense(v, 3, name="")
    layers.conv1d(v[:, :, None], 2, 1, name="")
    layers.dense(v, 3)
    layers.dense(v, 3, name="", reuse=True)  # reuses dense/
    layers.dense(v, 3, name="", reuse=auto_reuse)


def test_empty_layer_name_is_no_name(tf):
    x = np.ones((2, 5), np.float32)

    def tf_names():
        empty_names(tf.layers, tf.constant(x), tf.AUTO_REUSE)
        return tf.constant([v.name[:-2] for v in tf.global_variables()])

    want = sorted(n.decode() for n in tf_run(tf, tf_names))
    assert want == ['conv1d/bias', 'conv1d/kernel', 'dense/bias', 'dense/kernel', 'dense_1/bias',
                    'dense_1/kernel']
    got = sorted(sp.flatten(sp.transform(lambda v: empty_names(sp.layers, v, sp.AUTO_REUSE)
                                          ).init(KEY, x)))
    assert got == want


def test_empty_layer_name_with_reuse_needs_the_default_named_scope():
    with pytest.raises(sp.ParamNotFoundError, match="dense/kernel"):  # TF: dense/kernel does not exist
        sp.transform(lambda v: sp.layers.dense(v, 3, name="", reuse=True)).init(KEY, jnp.ones((2, 5)))


def test_layer_object_named_empty_is_named_and_scoped_by_default(tf):
    def tf_object():
        layer = tf.layers.Dense(3, name="")
        layer(tf.ones([2, 5]))
        return tf.constant([layer.name, layer.scope_name])

    want = [n.decode() for n in tf_run(tf, tf_object)]
    seen = []

    def model(v):
        layer = sp.layers.Dense(3, name="")
        layer(v)
        seen.extend([layer.name, layer.scope_name])

    params = sp.transform(model).init(KEY, jnp.ones((2, 5)))
    assert seen == want == ["dense_1", "dense"]
    assert sorted(sp.flatten(params)) == ["dense/bias", "dense/kernel"]


# --- 6. Keras config dicts for initializers and regularizers --------------------------------------

KERAS_CONFIGS = [  # (kernel_initializer, kernel_regularizer), each a Keras config dict
    ({"class_name": "Constant", "config": {"value": 2.0}},
     {"class_name": "L2", "config": {"l2": 0.5}}),
    ({"class_name": "constant", "config": {"value": -1.0}},
     {"class_name": "l2", "config": {"l2": 0.5}}),
    ({"class_name": "Ones", "config": {}}, {"class_name": "L1", "config": {"l1": 0.5}}),
    ({"class_name": "Zeros", "config": {"dtype": "float32"}},
     {"class_name": "L1L2", "config": {"l1": 0.5, "l2": 0.25}}),
    ({"class_name": "Constant", "config": {"value": 0.5}},
     {"class_name": "L1L2", "config": {"l2": 0.25}}),
    ({"class_name": "Constant", "config": {"value": 1.0}},
     {"class_name": "l1_l2", "config": {"l1": 0.5}}),
    ({"class_name": "Constant", "config": {"value": 3.0}},
     {"class_name": "L2", "config": {"l": 0.5}}),
]


@pytest.mark.parametrize("kernel_initializer, kernel_regularizer", KERAS_CONFIGS)
def test_keras_config_dicts_for_initializers_and_regularizers_match_tf(
        tf, kernel_initializer, kernel_regularizer):
    x = np.arange(10, dtype=np.float32).reshape(2, 5) / 10
    kw = dict(kernel_initializer=kernel_initializer, kernel_regularizer=kernel_regularizer,
              kernel_constraint={"class_name": "MaxNorm", "config": {"max_value": 2}})

    def tf_model():
        y = tf.layers.dense(tf.constant(x), 2, **kw)
        return y, tf.losses.get_regularization_loss()

    want_y, want_reg = tf_run(tf, tf_model)
    model = sp.transform(lambda v: (sp.layers.dense(v, 2, **kw), sp.regularization_loss()))
    params = model.init(KEY, x)
    got_y, got_reg = model.apply(params, x)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-6)
    np.testing.assert_allclose(got_reg, want_reg, rtol=1e-6)


def test_keras_config_dicts_work_in_every_layer_and_in_add_weight():
    const = {"class_name": "Constant", "config": {"value": 2.0}}
    l2 = {"class_name": "L2", "config": {"l2": 0.5}}

    class Scale(sp.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight("w", [3], initializer=const)

        def call(self, v):
            return v * self.w

    def model(v):
        sp.layers.conv1d(v[:, :, None], 2, 1, kernel_initializer=const, bias_regularizer=l2)
        sp.layers.separable_conv1d(v[:, :, None], 2, 1, pointwise_initializer=const)
        sp.layers.batch_normalization(v, gamma_initializer=const, beta_regularizer=l2)
        sp.layers.embedding(jnp.array([1]), 4, 2, embeddings_initializer=const)
        sp.layers.dense(v, 2, activity_regularizer=l2)
        return Scale()(v)

    params = sp.transform(model).init(KEY, jnp.ones((2, 3)))
    flat = sp.flatten(params)
    for name in ("conv1d/kernel", "separable_conv1d/pointwise_kernel", "batch_normalization/gamma",
                 "embedding/embeddings", "scale/w"):
        np.testing.assert_array_equal(flat[name], np.full(flat[name].shape, 2.0))


@pytest.mark.parametrize("argument, config, words", [
    ("kernel_initializer", {"class_name": "Foo", "config": {}}, "unknown initializer 'Foo'"),
    ("kernel_initializer", {"class_name": "Constant", "config": {"valu": 2.0}}, "'valu'"),
    ("kernel_initializer", {"config": {"value": 2.0}}, "class_name"),
    ("kernel_regularizer", {"class_name": "OrthogonalRegularizer", "config": {}},
     "unknown regularizer 'OrthogonalRegularizer'"),
    ("kernel_regularizer", {"class_name": "L2", "config": {"l1": 0.5}}, "'l1'"),
])
def test_keras_config_dicts_that_cannot_be_read_are_refused_for_the_layer(argument, config, words):
    with pytest.raises((ValueError, TypeError)) as info:
        sp.transform(lambda v: sp.layers.dense(v, 2, **{argument: config})).init(
            KEY, jnp.ones((2, 5)))
    msg = str(info.value)
    assert words in msg and f"{argument}=" in msg and "fix:" in msg, msg
    assert "not named by strings" not in msg and "l2_regularizer({" not in msg, msg


# --- 7. dropout's noise_shape ---------------------------------------------------------------------


@pytest.mark.parametrize("noise_shape", [(3, 5), (1, 1, 5), (4, 2)])
def test_dropout_noise_shape_that_does_not_broadcast_is_refused(tf, noise_shape):
    x = np.ones((4, 5), np.float32)
    assert tf_error(tf, lambda: tf.layers.dropout(tf.constant(x), 0.5, noise_shape=noise_shape,
                                                  training=True)) is not None
    with pytest.raises(ValueError) as info:
        sp.transform(lambda v: sp.layers.dropout(v, 0.5, noise_shape=noise_shape, training=True,
                                                 name="drop")).apply({}, x, rng=KEY)
    msg = str(info.value)
    assert "dropout 'drop'" in msg and f"noise_shape={noise_shape}" in msg, msg
    assert "(4, 5)" in msg and "fix:" in msg, msg


@pytest.mark.parametrize("noise_shape", [(5,), (1, 5), (None, 1), (4, 1)])
def test_dropout_noise_shape_that_broadcasts_is_taken(noise_shape):
    x = jnp.ones((4, 5))
    out = sp.transform(lambda v: sp.layers.dropout(v, 0.5, noise_shape=noise_shape,
                                                   training=True)).apply({}, x, rng=KEY)
    assert out.shape == (4, 5)
    shape = tuple(x.shape[i] if d is None else d for i, d in enumerate(noise_shape))
    kept = np.asarray(out != 0)  # the mask is constant along the axes where it has size 1
    for axis, size in enumerate((1,) * (2 - len(shape)) + shape):
        if size == 1:
            assert (kept == kept.take([0], axis)).all()


def test_dropout_noise_shape_is_not_checked_when_not_training():
    x = jnp.ones((4, 5))  # as TF, which builds no dropping branch then
    model = sp.transform(lambda v: sp.layers.dropout(v, 0.5, noise_shape=(3, 5), training=False))
    np.testing.assert_array_equal(model.apply({}, x), x)


# --- 8. rank errors name the layer and say how to fix the input -----------------------------------


@pytest.mark.parametrize("label, layer", [
    ("conv2d 'enc/c1'", lambda v: sp.layers.conv2d(v, 2, 2, name="enc/c1")),
    ("separable_conv2d 'enc/c1'", lambda v: sp.layers.separable_conv2d(v, 2, 2, name="enc/c1")),
    ("conv2d_transpose 'enc/c1'", lambda v: sp.layers.conv2d_transpose(v, 2, 2, name="enc/c1")),
    ("max_pooling2d 'pool1'", lambda v: sp.layers.max_pooling2d(v, 2, 2, name="pool1")),
    ("average_pooling2d", lambda v: sp.layers.average_pooling2d(v, 2, 2)),
])
def test_rank_errors_name_the_layer_and_suggest_the_batch_axis(label, layer):
    with pytest.raises(ValueError) as info:
        sp.transform(layer).init(KEY, np.ones((5, 5, 3), np.float32))
    msg = str(info.value)
    assert label in msg and "expected ndim=4, found ndim=3" in msg and "(5, 5, 3)" in msg, msg
    assert "fix:" in msg and "x[None]" in msg, msg


def test_rank_error_for_too_many_axes_gives_the_layout():
    with pytest.raises(ValueError) as info:
        sp.transform(lambda v: sp.layers.conv1d(v, 2, 2)).init(KEY, np.ones((2, 5, 5, 3)))
    msg = str(info.value)
    assert "conv1d" in msg and "expected ndim=3, found ndim=4" in msg, msg
    assert "fix:" in msg and "[batch, width, channels]" in msg, msg


# --- 9. out-of-range embedding ids ----------------------------------------------------------------


def test_embedding_refuses_out_of_range_concrete_ids_as_tf(tf):
    def tf_lookup():
        table = tf.get_variable("emb", [10, 4])
        return tf.nn.embedding_lookup(table, tf.constant([1, -1]))

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"indices\[1\] = -1 is not in \[0, 10\)"):
        tf_run(tf, tf_lookup)
    model = sp.transform(lambda ids: sp.layers.embedding(ids, 10, 4, name="words"))
    params = model.init(KEY, jnp.array([1, 2]))
    for ids, words in (([1, -1], "indices[1] = -1 is not in [0, 10)"),
                       ([1, 12], "indices[1] = 12 is not in [0, 10)"),
                       ([[1, 2], [12, 3]], "indices[1,0] = 12 is not in [0, 10)")):
        with pytest.raises(ValueError) as info:
            model.apply(params, jnp.array(ids))
        msg = str(info.value)
        assert words in msg and "'words/embeddings'" in msg and "fix:" in msg, msg
    constant = sp.transform(lambda: sp.layers.embedding(np.array([10]), 10, 4))
    with pytest.raises(ValueError, match=r"indices\[0\] = 10 is not in \[0, 10\)"):
        constant.init(KEY)  # ids that are a constant of the model are checked in init too


def test_embedding_lookup_refuses_out_of_range_concrete_ids():
    table = jnp.arange(12.0).reshape(6, 2)
    with pytest.raises(ValueError, match=r"indices = 6 is not in \[0, 6\)"):
        sp.layers.embedding_lookup(table, 6)
    shards = [table[:3], table[3:]]
    with pytest.raises(ValueError, match=r"indices\[0\] = 7 is not in \[0, 6\)"):
        sp.layers.embedding_lookup(shards, [7], partition_strategy="div")
    np.testing.assert_array_equal(sp.layers.embedding_lookup(table, [5, 0]), table[np.array([5, 0])])


def test_embedding_traced_ids_are_not_checked_and_take_jnp_takes_answer():
    # Documented: JAX cannot raise inside jit, so traced ids behave as jnp.take's default.
    model = sp.transform(lambda ids: sp.layers.embedding(ids, 10, 4))
    params = model.init(KEY, jnp.array([1, 2]))
    out = jax.jit(model.apply)(params, jnp.array([1, -1, 12]))
    table = sp.flatten(params)["embedding/embeddings"]
    np.testing.assert_array_equal(out[1], table[-1])
    assert np.isnan(np.asarray(out[2])).all()


# --- 10. L1 regularizers: TF's gradient, sign(w), 0 at w == 0 -------------------------------------

L1_MIXED = np.array([0.0, -0.0, 1.5, -2.0, 0.0, 3e-8, -4.0], np.float32)


def _l1_regularizers():
    """Every L1 term the library computes, as (label, regularizer, factor of sum(|w|))."""
    return [("sp.l1_regularizer(0.5)", sp.l1_regularizer(0.5), 0.5),
            ("sp.slim.l1_regularizer(0.5)", sp.slim.l1_regularizer(0.5), 0.5),
            ("sp.slim.l1_l2_regularizer(0.5, 0.0)", sp.slim.l1_l2_regularizer(0.5, 0.0), 0.5),
            ("sp.slim.l1_l2_regularizer(0.5, 1e-3)", sp.slim.l1_l2_regularizer(0.5, 1e-3), 0.5),
            ("sp.slim.sum_regularizer([l1])", sp.slim.sum_regularizer([sp.l1_regularizer(0.5)]), 0.5)]


def _layer_l1_gradient(regularizer, argument="kernel_regularizer"):
    """d(regularization loss)/d(kernel) of a dense layer whose kernel is all zeros, taking
    ``regularizer`` as TF's layers do (a Keras name or config)."""
    model = sp.transform(lambda x: (sp.layers.dense(x, 2, **{argument: regularizer}),
                                    sp.regularization_loss())[1])
    params = {"dense": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}}
    return jax.grad(model.apply)(params, np.ones((2, 3), np.float32))


def test_l1_regularizers_gradient_at_zero_is_zero_as_tfs_sign():
    zeros = jnp.zeros(4)
    for label, regularizer, _ in _l1_regularizers():
        np.testing.assert_array_equal(jax.grad(regularizer)(zeros), np.zeros(4), err_msg=label)
    for regularizer in ("l1", "L1", "l1_l2", {"class_name": "L1", "config": {"l1": 0.5}},
                        {"class_name": "L1L2", "config": {"l1": 0.5, "l2": 0.0}}):
        grads = _layer_l1_gradient(regularizer)
        np.testing.assert_array_equal(grads["dense"]["kernel"], np.zeros((3, 2)),
                                      err_msg=repr(regularizer))


def test_l1_regularizer_on_a_zero_initialized_bias_leaves_it_at_zero():
    # The repro: a zero-initialized bias with an L1 term has no gradient from the term at init.
    def f(x):
        sp.layers.dense(x, 2, kernel_initializer=sp.initializers.ones(),
                        bias_regularizer=sp.l1_regularizer(0.5))
        return sp.regularization_loss()

    model = sp.transform(f)
    x = np.ones((2, 3), np.float32)
    params = model.init(KEY, x)
    np.testing.assert_array_equal(jax.grad(model.apply)(params, x)["dense"]["bias"], [0.0, 0.0])


def test_l1_regularizers_value_is_sum_of_abs_exactly_under_jit_and_vmap():
    w = jnp.asarray(L1_MIXED)
    for label, regularizer, factor in _l1_regularizers():
        if "1e-3" in label:
            continue
        want = factor * jnp.sum(jnp.abs(w))
        assert float(regularizer(w)) == float(want), label
        assert float(jax.jit(regularizer)(w)) == float(want), label
        rows = jnp.stack([w, -w, jnp.zeros_like(w)])
        np.testing.assert_array_equal(jax.vmap(regularizer)(rows),
                                      factor * jnp.sum(jnp.abs(rows), 1), err_msg=label)
        np.testing.assert_array_equal(jax.jit(jax.grad(regularizer))(w),
                                      factor * np.sign(L1_MIXED), err_msg=label)
    for dtype in (jnp.bfloat16, jnp.float16):
        low = w.astype(dtype)
        assert sp.l1_regularizer(0.5)(low).dtype == dtype
        assert float(sp.l1_regularizer(0.5)(low)) == float(0.5 * jnp.sum(jnp.abs(low)))


def test_l1_regularizers_gradient_matches_tf_on_a_mixed_vector(tf):
    def tf_grads():
        w = tf.constant(L1_MIXED)
        keras = tf.keras.regularizers.l1(0.5)(w)
        return tf.gradients(keras, w)[0], tf.gradients(0.5 * tf.reduce_sum(tf.abs(w)), w)[0]

    keras_grad, contrib_grad = tf_run(tf, tf_grads)
    w = jnp.asarray(L1_MIXED)
    for label, regularizer, _ in _l1_regularizers():
        if "1e-3" in label:
            continue
        np.testing.assert_array_equal(jax.grad(regularizer)(w), contrib_grad, err_msg=label)
    keras = sp.layers._from_keras("dense", None, "kernel_regularizer",
                                  {"class_name": "L1", "config": {"l1": 0.5}})
    np.testing.assert_array_equal(jax.grad(keras)(w), keras_grad)


# --- 11. embedding_lookup(max_norm=): TF's clip_by_norm ---------------------------------------------

CLIP_TABLE = np.array([[0.0, 0.0], [3.0, 4.0], [0.3, 0.4]], np.float32)  # row 0: padding, zeros


def test_embedding_lookup_max_norm_gradient_of_a_zero_row_is_finite():
    ids = np.array([[0, 1, 2]], np.int32)

    def loss(table):
        return jnp.sum(sp.layers.embedding_lookup(table, ids, max_norm=1.0) * jnp.array([1.0, 2.0]))

    for grad in (jax.grad(loss), jax.jit(jax.grad(loss))):
        g = np.asarray(grad(jnp.asarray(CLIP_TABLE)))
        assert np.isfinite(g).all(), g
        np.testing.assert_array_equal(g[0], [1.0, 2.0])  # the zero row is not clipped: passed as is
        np.testing.assert_array_equal(g[2], [1.0, 2.0])


def test_embedding_lookup_max_norm_matches_tf_value_and_gradient(tf):
    ids = np.array([[0, 1, 2], [2, 2, 0]], np.int32)
    weights = np.array([1.0, 2.0], np.float32)

    def tf_build():
        table = tf.Variable(CLIP_TABLE)
        out = tf.nn.embedding_lookup(table, ids, max_norm=1.0)
        grad = tf.gradients(tf.reduce_sum(out * weights), table)[0]
        return out, tf.convert_to_tensor(grad)

    want_out, want_grad = tf_run(tf, tf_build)

    def loss(table):
        out = sp.layers.embedding_lookup(table, ids, max_norm=1.0)
        return jnp.sum(out * weights), out

    (_, out), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(CLIP_TABLE))
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)


def test_embedding_lookup_max_norm_clips_each_whole_embedding():
    # A table with two embedding axes: the norm of each [2, 2] embedding is clipped, not each row.
    table = jnp.array([[[3.0, 4.0], [0.3, 0.4]], [[0.0, 1.0], [1.0, 0.0]]])
    for ids in (jnp.array([0, 1]), jnp.array([[0], [1]]), jnp.array(0)):
        out = np.asarray(sp.layers.embedding_lookup(table, ids, max_norm=1.0))
        axes = tuple(range(ids.ndim, out.ndim))
        norms = np.sqrt((out.astype(np.float64) ** 2).sum(axes))
        np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
        # clipping scales the embedding as a whole: its shape is kept
        flat = np.asarray(table)[np.asarray(ids)].reshape(-1, 4)
        np.testing.assert_allclose(out.reshape(-1, 4) * np.linalg.norm(flat, axis=1, keepdims=True),
                                   flat, rtol=1e-6)
    shards = [table[:1], table[1:]]
    np.testing.assert_array_equal(
        sp.layers.embedding_lookup(shards, jnp.array([0, 1]), "div", max_norm=1.0),
        sp.layers.embedding_lookup(table, jnp.array([0, 1]), max_norm=1.0))


def test_embedding_lookup_max_norm_matches_tf_for_tables_of_any_rank(tf):
    rng = np.random.RandomState(0)
    for table_shape, ids in (((4,), np.array([0, 3, 1])),
                             ((4, 3), np.array([[0, 3], [1, 1]])),
                             ((4, 2, 3), np.array([0, 3, 1])),
                             ((4, 2, 3), np.array([[0, 3], [2, 1]])),
                             ((4, 2, 2, 2), np.array(2))):
        table = (rng.randn(*table_shape) * 2).astype(np.float32)
        want = tf_run(tf, lambda: tf.nn.embedding_lookup(tf.constant(table), ids, max_norm=1.5))
        got = sp.layers.embedding_lookup(jnp.asarray(table), ids, max_norm=1.5)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=str(table_shape))


def test_embedding_lookup_negative_max_norm_is_zero_as_tf(tf):
    want = tf_run(tf, lambda: tf.nn.embedding_lookup(tf.constant(CLIP_TABLE), [1, 2], max_norm=-1.0))
    got = sp.layers.embedding_lookup(jnp.asarray(CLIP_TABLE), jnp.array([1, 2]), max_norm=-1.0)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, np.zeros((2, 2)))


# --- batch normalization under a partitioned scope --------------------------------------------------


def test_batch_norm_moving_statistics_are_never_partitioned_as_in_tf(tf):
    # TF's layer (and slim's batch_norm) set the scope's partitioner aside while making the moving
    # statistics: gamma and beta come in parts, moving_mean and moving_variance whole.
    def tf_shapes():
        x = tf.placeholder(tf.float32, [4, 8])
        with tf.variable_scope("net", partitioner=tf.fixed_size_partitioner(2)):
            tf.layers.batch_normalization(x, training=True)
        return {v.op.name: v.shape.as_list() for v in tf.global_variables()}

    with tf.Graph().as_default():
        assert tf_shapes() == {
            "net/batch_normalization/gamma/part_0": [4], "net/batch_normalization/gamma/part_1": [4],
            "net/batch_normalization/beta/part_0": [4], "net/batch_normalization/beta/part_1": [4],
            "net/batch_normalization/moving_mean": [8],
            "net/batch_normalization/moving_variance": [8]}

    seen = {}

    def getter(next_getter, name, *args, **kwargs):
        seen[name] = kwargs["partitioner"]
        return next_getter(name, *args, **kwargs)

    def fn(x, layer):
        with sp.scope("net", partitioner=sp.sharding.fixed_size_partitioner(2),
                      custom_getter=getter) as net:
            y = layer(x)
            assert net.partitioner is not None  # set aside only while the statistics are made
        return y

    x = jnp.ones((4, 8))
    for layer, bn in ((lambda x: sp.layers.batch_normalization(x, training=True),
                       "batch_normalization"),
                      (lambda x: sp.slim.batch_norm(x, scale=True), "BatchNorm")):
        seen.clear()
        params, state = sp.sharding.partition_specs(
            sp.transform_with_state(lambda x: fn(x, layer)), x)
        assert params["net"][bn] == {"beta": P("model"),
                                     "gamma": P("model")}
        assert state["net"][bn] == {"moving_mean": P(),
                                    "moving_variance": P()}
        assert seen[f"net/{bn}/moving_mean"] is None and seen[f"net/{bn}/gamma"] is not None
    specs = sp.sharding.partition_specs(
        sp.transform(lambda x: fn(x, lambda x: sp.layers.batch_normalization(x))), x)
    assert specs["net"]["batch_normalization"]["moving_mean"] == P()


# -- data_format=None, variable-free objects' names, refusals that named nothing ---------------------


_DATA_FORMAT_NONE = {
    "conv2d": lambda L, x: L.conv2d(x, 2, 3, data_format=None),
    "separable_conv2d": lambda L, x: L.separable_conv2d(x, 2, 3, data_format=None),
    "conv2d_transpose": lambda L, x: L.conv2d_transpose(x, 2, 3, data_format=None),
    "max_pooling2d": lambda L, x: L.max_pooling2d(x, 2, 2, data_format=None),
    "flatten": lambda L, x: L.flatten(x, data_format=None),
    "Conv2D object": lambda L, x: L.Conv2D(2, 3, data_format=None)(x),
}


@pytest.mark.parametrize("layer", sorted(_DATA_FORMAT_NONE))
def test_data_format_none_is_channels_last_as_in_tf(tf, layer):
    build = _DATA_FORMAT_NONE[layer]
    x = np.random.RandomState(0).randn(2, 6, 6, 3).astype(np.float32)
    model = sp.transform(lambda x, data_format_none: build(sp.layers, x) if data_format_none else
                         build(_ChannelsLast(sp.layers), x))
    params = model.init(KEY, x, True)
    np.testing.assert_array_equal(model.apply(params, x, True), model.apply(params, x, False))
    assert model.apply(params, x, True).shape == tf_run(tf, lambda: build(tf.layers, tf.constant(x))).shape


class _ChannelsLast:
    """``sp.layers`` with ``data_format=None`` spelled ``'channels_last'``."""

    def __init__(self, layers):
        self._layers = layers

    def __getattr__(self, attribute):
        fn = getattr(self._layers, attribute)

        def called(*args, **kwargs):
            if kwargs.get("data_format", "") is None:
                kwargs["data_format"] = "channels_last"
            return fn(*args, **kwargs)
        return called


def test_variable_free_layer_objects_have_tfs_names(tf):
    def names(layers):
        return [layers.MaxPooling2D(2, 2, name="pool").name, layers.Dropout(0.5, name="drop").name,
                layers.Flatten(name="flat").name, layers.AveragePooling1D(2, 1).name,
                layers.AveragePooling1D(2, 1).name, layers.MaxPooling3D(2, 2).name]

    with tf.Graph().as_default():
        expected = names(tf.layers)
    seen = []
    sp.transform(lambda: seen.append(names(sp.layers))).init(KEY)
    assert seen == [expected] == [["pool", "drop", "flat", "average_pooling1d_1",
                                   "average_pooling1d_2", "max_pooling3d_1"]]


@pytest.mark.parametrize("axis", [[], ()])
def test_batch_normalization_over_no_axis_is_refused_naming_axis(axis):
    model = sp.transform_with_state(lambda x: sp.layers.batch_normalization(x, axis=axis, training=True))
    with pytest.raises(ValueError, match=re.escape(
            f"batch_normalization 'batch_normalization': axis={axis!r} names no axis to normalize.")):
        model.init(KEY, jnp.ones((4, 3)))


def test_max_pooling_a_bool_input_is_refused_as_tf_refuses_it(tf):
    x = np.ones((2, 4, 4, 3), bool)
    assert isinstance(tf_error(tf, lambda: tf.layers.max_pooling2d(tf.constant(x), 2, 2)), TypeError)
    with pytest.raises(TypeError, match=re.escape(
            "max_pooling2d: the input has dtype bool, which TF's MaxPool refuses")):
        sp.transform(lambda x: sp.layers.max_pooling2d(x, 2, 2)).init(KEY, x)


@pytest.mark.parametrize("dims", [(0, 3), (5, 0), (-1, 3)])
def test_an_embedding_of_no_ids_or_no_width_is_refused_as_keras_refuses_it(dims):
    input_dim, output_dim = dims
    with pytest.raises(ValueError, match=re.escape(
            f"sp.layers.embedding: {'input_dim' if input_dim <= 0 else 'output_dim'} must be "
            "positive")):
        sp.transform(lambda ids: sp.layers.embedding(ids, input_dim, output_dim)).init(
            KEY, jnp.zeros(2, jnp.int32))


@pytest.mark.parametrize("call, message", [
    (lambda x: sp.layers.dropout(x, rate=None, training=True),
     "dropout: rate must be a number in [0, 1) (the fraction dropped) or a scalar array, got None"),
    (lambda x: sp.layers.dropout(x, noise_shape=5, training=True),
     "dropout: noise_shape must be a list of sizes (None: the input's), got 5."),
    (lambda x: sp.layers.dropout(x, training="yes"),
     "training must be a bool (or a boolean scalar, traced too), got 'yes' of type str."),
    (lambda x: sp.layers.batch_normalization(x, training="yes"),
     "training must be a bool (or a boolean scalar, traced too), got 'yes' of type str."),
    (lambda x: sp.slim.batch_norm(x, is_training="yes"),
     "is_training must be a bool (or a boolean scalar, traced too), got 'yes' of type str."),
    (lambda x: sp.slim.dropout(x, is_training="yes"),
     "is_training must be a bool (or a boolean scalar, traced too), got 'yes' of type str."),
    (lambda x: sp.layers.batch_normalization(x, momentum=None, training=True),
     "batch_normalization: momentum must be a number, got None."),
    (lambda x: sp.layers.layer_norm(x, begin_params_axis=1.5),
     "layer_norm: begin_params_axis must be an int (an axis of the input), got 1.5."),
], ids=["dropout rate", "noise_shape", "dropout training", "bn training", "slim is_training",
        "slim dropout is_training", "momentum", "begin_params_axis"])
def test_layer_arguments_of_the_wrong_type_are_refused_naming_them(call, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        sp.transform_with_state(call).init(KEY, jnp.ones((4, 3, 5)))
