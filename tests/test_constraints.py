"""Constraints (reference rule 26): stored with the parameter, applied after the optimizer step.

TF 1.x keeps ``get_variable(constraint=)`` / ``variable_scope(constraint=)`` on the variable, and its
optimizers project the variable after each update. Here the constraint lands in the parameter's
``ParamSpec`` and ``sp.apply_constraints(params, specs)`` does the projection.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)


def clip01(w):
    return jnp.clip(w, 0.0, 1.0)


def halve(w):
    return w / 2


def constraints(fn, *args):
    """full name -> the constraint in the parameter's spec."""
    return {name: spec.constraint for name, spec in sp.flatten(sp.transform(fn).specs(*args)).items()}


def test_constraint_is_kept_in_the_spec_of_the_parameter_created_with_it():
    def fn():
        sp.get_param("a", [2], constraint=clip01)
        sp.get_param("b", [2])
        with sp.scope("s", constraint=clip01):
            sp.get_param("c", [2])
            sp.get_param("d", [2], constraint=halve)  # the explicit argument wins
            assert sp.get_scope().constraint is clip01

    assert constraints(fn) == {"a": clip01, "b": None, "s/c": clip01, "s/d": halve}


@pytest.mark.parametrize("form", ["plain", "default_name", "options", "reuse"])
def test_a_scope_constraint_is_not_inherited_by_sub_scopes(form):
    # TF's quirk (rule 26): every new VariableScope gets only the constraint passed to it.
    sub = {"plain": lambda: sp.scope("in"),
           "default_name": lambda: sp.scope(None, default_name="in"),
           "options": lambda: sp.scope("in", initializer=sp.initializers.zeros),
           "reuse": lambda: sp.scope("in", reuse=sp.AUTO_REUSE)}[form]

    def fn():
        with sp.scope("t", constraint=clip01):
            sp.get_param("v", [])
            with sub():
                assert sp.get_scope().constraint is None
                sp.get_param("w", [])

    assert constraints(fn) == {"t/v": clip01, "t/in/w": None}


def test_a_captured_scope_entered_again_brings_only_the_constraint_passed_now():
    # Rule 19's quirk: the captured scope's other defaults travel with it, its constraint does not.
    def fn():
        with sp.scope("t", constraint=clip01, initializer=sp.initializers.ones) as t:
            sp.get_param("v", [])
        with sp.scope(t):
            sp.get_param("u", [])
        with sp.scope(t, constraint=halve):
            sp.get_param("w", [])
        with sp.scope(t, reuse=sp.AUTO_REUSE):
            sp.get_param("x", [])

    specs = sp.flatten(sp.transform(fn).specs())
    assert {n: s.constraint for n, s in specs.items()} == {
        "t/v": clip01, "t/u": None, "t/w": halve, "t/x": None}
    params = sp.transform(fn).init(KEY)
    assert float(params["t"]["u"]) == 1.0  # the initializer did travel


def test_a_constraint_counts_only_at_creation_and_is_ignored_on_reuse():
    def fn():
        with sp.scope("s") as s:
            sp.get_param("v", [2])
        with sp.scope(s, reuse=True, constraint=clip01):
            sp.get_param("v", [2], constraint=halve)

    assert constraints(fn) == {"s/v": None}


def test_a_constraint_that_is_not_callable_is_a_value_error_naming_the_parameter():
    def fn():
        sp.get_param("w", [2], constraint="max_norm")

    with pytest.raises(ValueError, match=r"The `constraint` argument must be a callable \('w'\), "
                                         r"got 'max_norm'(?s:.*)fix: pass a function"):
        sp.transform(fn).init(KEY)
    with pytest.raises(ValueError, match=r"must be a callable \(scope 'enc'\), got 3"):
        sp.scope("enc", constraint=3)
    with pytest.raises(ValueError, match=r"must be a callable \(scope 'enc'\)"):
        sp.scope("enc", constraint=3, custom_getter=lambda getter, *a, **k: getter(*a, **k))


def test_custom_getters_receive_the_constraint_only_when_they_can_take_it():
    seen = []

    def with_kwargs(getter, name, *args, **kwargs):
        seen.append(kwargs.get("constraint"))
        return getter(name, *args, **kwargs)

    def without(getter, name, shape=None, dtype=None, initializer=None, regularizer=None,
                reuse=None, trainable=None, collections=None, partitioner=None, sharding=None):
        # TF does not pass it, and the parameter this getter makes has none.
        return getter(name, shape=shape, dtype=dtype, initializer=initializer, reuse=reuse)

    def fn():
        with sp.scope("a", custom_getter=with_kwargs, constraint=clip01):
            sp.get_param("v", [])
        with sp.scope("b", custom_getter=without, constraint=clip01):
            sp.get_param("v", [])

    assert constraints(fn) == {"a/v": clip01, "b/v": None}
    assert seen == [clip01]


def test_apply_constraints_projects_the_params_after_an_optimizer_step_under_jit():
    optax = pytest.importorskip("optax")

    def fn(x):
        with sp.scope("dense", constraint=clip01):
            w = sp.get_param("w", (3, 2), init=sp.initializers.constant(0.5))
        b = sp.get_param("b", (2,), init=sp.initializers.zeros)
        return x @ w + b

    model = sp.transform(fn)
    x = jnp.ones((4, 3))
    params, specs = model.init(KEY, x), model.specs(x)
    opt = optax.sgd(1.0)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: -model.apply(p, x).sum())(params)  # pushes every weight up
        updates, state = opt.update(grads, state, params)
        return sp.apply_constraints(optax.apply_updates(params, updates), specs), state

    params, state = step(params, state)
    np.testing.assert_array_equal(params["dense"]["w"], np.ones((3, 2)))  # 0.5 + 4, clipped
    np.testing.assert_array_equal(params["b"], np.full((2,), 4.0))  # no constraint: as updated


def test_apply_constraints_matches_a_tf1_optimizer_step():
    # TF 1.x's optimizers assign constraint(v) after the update; one SGD step agrees to the bit.
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1

    def max_norm_tf(w):
        return w * tf.minimum(1.0, 1.5 / tf.norm(w, axis=0))

    def max_norm(w):
        return w * jnp.minimum(1.0, 1.5 / jnp.linalg.norm(w, axis=0))

    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    w0 = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    with tf.Graph().as_default():
        with v1.variable_scope("dense", constraint=max_norm_tf):
            w = v1.get_variable("w", initializer=w0)
        loss = -tf.reduce_sum(tf.matmul(tf.constant(x), w))
        train = v1.train.GradientDescentOptimizer(0.5).minimize(loss)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            sess.run(train)
            expected = sess.run(w)

    def fn(x):
        with sp.scope("dense", constraint=max_norm):
            return -(x @ sp.get_param("w", init=w0)).sum()

    model = sp.transform(fn)
    params, specs = model.init(KEY, x), model.specs(x)
    grads = jax.grad(model.apply)(params, x)
    params = sp.apply_constraints(jax.tree.map(lambda p, g: p - 0.5 * g, params, grads), specs)
    np.testing.assert_allclose(params["dense"]["w"], expected, rtol=1e-6)
    assert not np.allclose(expected, w0 + 0.5 * x.sum(0)[:, None])  # the projection did something


def test_apply_constraints_takes_part_of_the_params_and_leaves_the_rest_alone():
    def fn():
        sp.get_param("w", [2], init=sp.initializers.constant(3.0), constraint=clip01)
        sp.get_param("frozen", [2], init=sp.initializers.constant(3.0), trainable=False,
                     constraint=halve)

    model = sp.transform(fn)
    params, specs = model.init(KEY), model.specs()
    trainable, frozen = sp.partition_trainable(params, specs)
    assert sp.apply_constraints(trainable, specs)["w"].tolist() == [1.0, 1.0]
    # frozen parameters are never projected: TF's optimizers project only what they update
    assert sp.apply_constraints(frozen, specs) is frozen


def test_apply_constraints_without_any_constraint_returns_the_params_themselves():
    model = sp.transform(lambda: sp.get_param("w", [2]))
    params = model.init(KEY)
    assert sp.apply_constraints(params, model.specs()) is params


def test_apply_constraints_names_the_parameter_whose_constraint_changes_its_shape_or_dtype():
    def fn():
        with sp.scope("enc"):
            sp.get_param("w", [2, 3], constraint=lambda w: w.sum(0))
            sp.get_param("b", [3], constraint=lambda b: b.astype(jnp.int32))

    model = sp.transform(fn)
    params, specs = model.init(KEY), model.specs()
    with pytest.raises(ValueError, match=r"The constraint of 'enc/w' returned shape \(3,\) and dtype "
                                         r"float32 for a parameter of shape \(2, 3\)(?s:.*)fix:"):
        sp.apply_constraints(params, specs)
    with pytest.raises(ValueError, match=r"The constraint of 'enc/b' returned shape \(3,\) and dtype "
                                         r"int32 for a parameter of shape \(3,\) and dtype float32"):
        sp.apply_constraints({"enc": {"b": params["enc"]["b"]}}, specs)
    with pytest.raises(KeyError, match=r"'other' is in params but not in specs"):
        sp.apply_constraints({"other": jnp.zeros(2)}, specs)


def test_layer_stack_applies_a_layers_constraint_to_each_layer():
    def unit_norm(w):
        return w / jnp.linalg.norm(w)

    def fn(x):
        def block(x):
            return x + sp.get_param("w", [2], init=sp.initializers.ones, constraint=unit_norm)
        return sp.layer_stack(3)(block)(x)

    model = sp.transform(fn)
    x = jnp.zeros(2)
    params, specs = model.init(KEY, x), model.specs(x)
    stacked = params["layer_stack"]["w"] * jnp.array([[1.0], [2.0], [3.0]])
    projected = sp.apply_constraints({"layer_stack": {"w": stacked}}, specs)["layer_stack"]["w"]
    np.testing.assert_allclose(projected, np.full((3, 2), 2 ** -0.5), rtol=1e-6)


def test_apply_ignores_constraints_and_returns_the_params_given():
    def fn():
        with sp.scope("s", constraint=clip01):
            return sp.get_param("w", [2], constraint=halve)

    model = sp.transform(fn)
    params = {"s": {"w": jnp.array([5.0, -5.0])}}
    assert model.apply(params) is params["s"]["w"]


def test_layers_take_tf_layers_constraint_arguments():
    x, img = jnp.ones((2, 4)), jnp.ones((1, 6, 6, 3))

    def fn():
        sp.layers.dense(x, 3, kernel_constraint=clip01, bias_constraint=halve)
        sp.layers.conv2d(img, 2, 3, kernel_constraint=clip01)
        sp.layers.separable_conv2d(img, 2, 3, depthwise_constraint=clip01,
                                   pointwise_constraint=halve, bias_constraint=clip01)
        sp.layers.conv2d_transpose(img, 2, 3, bias_constraint=halve)
        sp.layers.batch_normalization(img, beta_constraint=clip01, gamma_constraint=halve)
        sp.layers.embedding(jnp.zeros((2,), jnp.int32), 5, 3, embeddings_constraint=clip01)
        sp.layers.Dense(2, kernel_constraint=halve)(x)

    got = {name: c for name, c in constraints(fn).items() if c is not None}
    assert got == {
        "dense/kernel": clip01, "dense/bias": halve, "conv2d/kernel": clip01,
        "separable_conv2d/depthwise_kernel": clip01, "separable_conv2d/pointwise_kernel": halve,
        "separable_conv2d/bias": clip01, "conv2d_transpose/bias": halve,
        "batch_normalization/beta": clip01, "batch_normalization/gamma": halve,
        "embedding/embeddings": clip01, "dense_1/kernel": halve}


def test_tf_layers_constraints_land_on_the_same_variables():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    x = np.ones((2, 4), np.float32)
    with tf.Graph().as_default():
        v1.layers.dense(tf.constant(x), 3, kernel_constraint=halve, name="fc")
        tf_names = {v.op.name for v in v1.global_variables() if v.constraint is halve}
    ours = {n for n, c in constraints(lambda: sp.layers.dense(x, 3, kernel_constraint=halve,
                                                              name="fc")).items() if c is halve}
    assert ours == tf_names == {"fc/kernel"}


def test_an_activity_regularizer_that_is_no_function_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"sp.layers.dense: activity_regularizer must be a function "
                                        r"(?s:.*)fix: pass a function"):
        sp.transform(lambda x: sp.layers.dense(x, 2, activity_regularizer=0.5)).init(
            KEY, jnp.ones((1, 2)))
    with pytest.raises(ValueError, match=r"unknown regularizer 'l3' for activity_regularizer="):
        sp.transform(lambda x: sp.layers.dense(x, 2, activity_regularizer="l3")).init(
            KEY, jnp.ones((1, 2)))


def test_an_activity_regularizer_given_by_keras_name_is_kerass_as_in_tf_layers():
    # TF's layers resolve it with keras.regularizers.get: "l2" is 0.01 * sum(output**2), per example
    x = jnp.arange(6.0).reshape(2, 3) / 10

    def fn(x):
        y = sp.layers.dense(x, 2, kernel_initializer=sp.initializers.ones, activity_regularizer="l2",
                            use_bias=False)
        return y, sp.regularization_loss()

    model = sp.transform(fn)
    y, loss = model.apply(model.init(KEY, x), x)
    np.testing.assert_allclose(loss, 0.01 * jnp.sum(jnp.square(y)) / 2, rtol=1e-6)
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        out = v1.layers.dense(tf.constant(np.asarray(x)), 2, kernel_initializer=v1.ones_initializer(),
                              activity_regularizer="l2", use_bias=False)
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            theirs = sess.run(v1.losses.get_regularization_loss())
    np.testing.assert_allclose(loss, theirs, rtol=1e-5)


def test_layers_inside_or_entering_a_constrained_scope_do_not_take_its_constraint_as_in_tf():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    x = np.ones((2, 4), np.float32)

    def program(scope, dense, dense_fn, inputs):
        with scope("s", constraint=halve) as s:
            pass
        layer = dense(2)
        layer(inputs, scope=s)  # the object's first call re-enters the captured scope
        layer(inputs)
        with scope("t", constraint=halve):
            dense(2)(inputs)
            dense_fn(inputs, 2, bias_constraint=clip01)

    with tf.Graph().as_default():
        program(v1.variable_scope, v1.layers.Dense, v1.layers.dense, tf.constant(x))
        expected = {v.op.name: v.constraint for v in v1.global_variables()}
    ours = constraints(lambda: program(sp.scope, sp.layers.Dense, sp.layers.dense, x))
    assert ours == expected
    assert expected == {"s/kernel": None, "s/bias": None, "t/dense/kernel": None,
                        "t/dense/bias": None, "t/dense_1/kernel": None, "t/dense_1/bias": clip01}


# --- sp.constraints: TF's stock constraints (tf.keras.constraints) -------------------------------


@pytest.mark.parametrize("make", [
    lambda c: c.max_norm(),
    lambda c: c.MaxNorm(max_value=0.7, axis=[0, 1, 2]),
    lambda c: c.non_neg(),
    lambda c: c.unit_norm(axis=1),
    lambda c: c.min_max_norm(0.5, 1.5, rate=0.3),
    lambda c: c.MinMaxNorm(min_value=2.0, max_value=3.0, axis=-1),
], ids=["max_norm", "max_norm_conv", "non_neg", "unit_norm", "min_max_norm_rate", "min_max_norm_axis"])
def test_stock_constraints_compute_what_keras_computes(make):
    tf = pytest.importorskip("tensorflow")
    import tf_keras

    w = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32) * 2
    with tf.Graph().as_default():  # other tests turn TF's eager mode off; a graph runs in both
        projected = make(tf_keras.constraints)(tf.constant(w))
        with tf.compat.v1.Session() as sess:
            expected = sess.run(projected)
    got = jax.jit(make(sp.constraints))(jnp.asarray(w))
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-7)
    assert got.dtype == jnp.float32


@pytest.mark.parametrize("make, w, keras", [
    (lambda c: c.MaxNorm(-1.0), [[3.0], [4.0]], [[0.0], [0.0]]),  # jnp.clip flipped the sign
    (lambda c: c.MinMaxNorm(3.0, 1.0), [[3.0], [4.0]], [[1.8], [2.4]]),  # not [0.6, 0.8]
    (lambda c: c.MinMaxNorm(3.0, 1.0, rate=0.5), [[0.3], [0.4]], None),
    (lambda c: c.min_max_norm(2.0, 0.5, axis=1), np.arange(12.0).reshape(3, 4) - 5, None),
], ids=["max_norm_negative", "min_max_norm_inverted", "min_max_norm_inverted_rate",
        "min_max_norm_inverted_axis"])
def test_inverted_bounds_clip_to_the_minimum_as_kerass_clip_does(make, w, keras):
    # Keras's backend.clip raises max_value to min_value; jnp.clip would return max_value.
    tf = pytest.importorskip("tensorflow")
    import tf_keras

    w = np.asarray(w, np.float32)
    with tf.Graph().as_default():
        projected = make(tf_keras.constraints)(tf.constant(w))
        with tf.compat.v1.Session() as sess:
            expected = sess.run(projected)
    if keras is not None:
        np.testing.assert_allclose(expected, keras, rtol=1e-6)
    got = jax.jit(make(sp.constraints))(jnp.asarray(w))
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_radial_constraint_gives_each_ring_kerass_value(k):
    tf = pytest.importorskip("tensorflow")
    import tf_keras

    w = np.random.default_rng(k).normal(size=(k, k, 3, 2)).astype(np.float32)
    with tf.Graph().as_default():
        projected = tf_keras.constraints.radial_constraint()(tf.constant(w))
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())  # Keras's zeros((2, 2)) is one
            expected = sess.run(projected)
    got = jax.jit(sp.constraints.radial_constraint())(jnp.asarray(w))
    np.testing.assert_array_equal(got, expected)


def test_radial_constraint_needs_a_square_rank_4_kernel():
    with pytest.raises(ValueError, match=r"must have rank 4. Received weight tensor with shape: \(3, 3\)"):
        sp.constraints.RadialConstraint()(jnp.ones((3, 3)))
    for shape in ((3, 2, 1, 1), (1, 1, 4, 4)):
        with pytest.raises(ValueError, match=r"square kernel of at least 2x2"):
            sp.constraints.RadialConstraint()(jnp.ones(shape))


def test_stock_constraints_keep_the_dtype_and_say_what_they_are():
    w = jnp.ones((4, 2), jnp.bfloat16)
    for c in (sp.constraints.max_norm(1.0), sp.constraints.non_neg(), sp.constraints.unit_norm(),
              sp.constraints.min_max_norm()):
        assert c(w).dtype == jnp.bfloat16
    assert sp.constraints.radial_constraint()(jnp.ones((2, 2, 1, 1), jnp.bfloat16)).dtype == jnp.bfloat16
    assert repr(sp.constraints.max_norm(3, axis=[0, 1])) == "MaxNorm(max_value=3, axis=[0, 1])"
    assert sp.constraints.MinMaxNorm().get_config() == {
        "min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0}


def test_layers_take_kerass_constraint_identifiers_as_tf_layers_do():
    x = jnp.ones((2, 4))

    def fn():
        sp.layers.dense(x, 3, kernel_constraint="max_norm", bias_constraint="NonNeg", name="a")
        sp.layers.dense(x, 3, kernel_constraint={"class_name": "MaxNorm",
                                                 "config": {"max_value": 3.0}}, name="b")

    got = constraints(fn)
    assert repr(got["a/kernel"]) == "MaxNorm(max_value=2, axis=0)"
    assert isinstance(got["a/bias"], sp.constraints.NonNeg)
    assert got["b/kernel"].max_value == 3.0
    def conv():
        sp.layers.conv2d(jnp.ones((1, 5, 5, 2)), 3, 3, kernel_constraint="radial_constraint")

    assert isinstance(constraints(conv)["conv2d/kernel"], sp.constraints.RadialConstraint)
    with pytest.raises(ValueError, match=r"Unknown constraint 'radial'(?s:.*)fix: use one of"):
        sp.transform(lambda: sp.layers.dense(x, 3, kernel_constraint="radial")).init(KEY)
    with pytest.raises(ValueError, match=r"Could not interpret constraint identifier: 3"):
        sp.transform(lambda: sp.layers.dense(x, 3, kernel_constraint=3)).init(KEY)
    # get_param, like tf.get_variable, takes a callable only.
    with pytest.raises(ValueError, match=r"must be a callable \('w'\), got 'max_norm'"):
        sp.transform(lambda: sp.get_param("w", [2], constraint="max_norm")).init(KEY)


def test_specs_of_a_stateful_model_passed_whole_get_an_error_that_says_take_the_first():
    def fn():
        sp.get_param("w", [2], constraint=clip01)
        sp.get_state("s", [2], init=sp.initializers.zeros)

    model = sp.transform_with_state(fn)
    params, _ = model.init(KEY)
    for helper in (sp.apply_constraints, sp.partition_trainable):
        with pytest.raises(TypeError, match=r"is \(params_specs, state_specs\): pass the first, "
                                            r"e\.g\. model\.specs\(\*args\)\[0\]"):
            helper(params, model.specs())
    assert sp.apply_constraints(params, model.specs()[0])["w"].shape == (2,)

