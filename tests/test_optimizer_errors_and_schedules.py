"""What ``sp.optimizers.adam``'s update and ``sp.regularization_loss()`` refuse, and the porting
guide's learning-rate schedules and embedding-table caveat (docs/migrating_from_tf1.md) against
TF 1.x."""

import functools
import pathlib
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoped_params as sp

GUIDE = (pathlib.Path(__file__).parent.parent / "docs" / "migrating_from_tf1.md").read_text()
PARAMS = {"dense": {"w": jnp.ones((4, 3)), "b": jnp.zeros((3,))}}


# --- sp.optimizers.adam's update: gradients that do not fit the state, and swapped arguments ------


@pytest.mark.parametrize("jit", [False, True])
def test_adam_refuses_a_gradient_whose_shape_is_not_its_parameters_naming_it(jit):
    # TF 1.x: "var and grad do not have the same shape[4,3] [3]"; before: broadcast to (4, 3).
    optimizer = sp.optimizers.adam(1e-3)
    state = optimizer.init(PARAMS)
    grads = {"dense": {"w": jnp.ones((3,)), "b": jnp.ones((3,))}}
    with pytest.raises(ValueError) as info:
        (jax.jit(optimizer.update) if jit else optimizer.update)(grads, state)
    message = str(info.value)
    assert isinstance(info.value, sp.optimizers.GradientMismatchError)
    assert "'dense/w'" in message and "(3,)" in message and "(4, 3)" in message
    assert "fix:" in message


def test_adam_refuses_gradients_of_another_tree_listing_the_missing_and_extra_names():
    optimizer = sp.optimizers.adam(1e-3)
    state = optimizer.init(PARAMS)
    grads = {"dense": {"w": jnp.ones((4, 3)), "bias": jnp.ones((3,))}}
    with pytest.raises(sp.optimizers.GradientMismatchError) as info:
        optimizer.update(grads, state, PARAMS)
    message = str(info.value)
    assert "'dense/b'" in message and "'dense/bias'" in message and "fix:" in message


def test_adam_refuses_a_gradient_of_another_dtype_naming_it():
    # TF 1.x's ApplyAdam takes a gradient of its variable's dtype only.
    optimizer = sp.optimizers.adam(1e-3)
    state = optimizer.init(PARAMS)
    grads = {"dense": {"w": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.ones((3,))}}
    with pytest.raises(sp.optimizers.GradientMismatchError) as info:
        jax.jit(optimizer.update)(grads, state)
    message = str(info.value)
    assert "'dense/w'" in message and "bfloat16" in message and "float32" in message


def test_adam_update_with_the_state_and_grads_swapped_says_the_argument_order():
    # Before: AttributeError: 'dict' object has no attribute 'm', from inside optimizers.py.
    optimizer = sp.optimizers.adam(1e-3)
    state = optimizer.init(PARAMS)
    with pytest.raises(TypeError) as info:
        optimizer.update(state, PARAMS, PARAMS)
    message = str(info.value)
    assert "AdamState" in message and "swapped" in message
    assert "optimizer.update(grads, state, params)" in message


def test_adam_update_accepts_fitting_gradients_and_keeps_the_state_under_jit():
    optimizer = sp.optimizers.adam(0.1)
    state = optimizer.init(PARAMS)
    grads = jax.tree_util.tree_map(jnp.ones_like, PARAMS)
    updates, new = jax.jit(optimizer.update)(grads, state, PARAMS)
    chex.assert_trees_all_equal_shapes_and_dtypes(updates, PARAMS)
    chex.assert_trees_all_close(updates, jax.tree_util.tree_map(lambda p: -0.1 * jnp.ones_like(p),
                                                                PARAMS), rtol=1e-5)
    assert isinstance(new, sp.optimizers.AdamState)


# --- sp.regularization_loss(): what a regularizer returns, and how it is called -------------------


def _dense_loss(regularizer):
    def model():
        with sp.scope("dense"):
            sp.get_param("w", (4, 3), regularizer=regularizer)
        return sp.regularization_loss()
    return sp.transform(model)


@pytest.mark.parametrize("run", ["init", "apply", "jit_apply"])
def test_a_regularizer_given_without_its_scale_is_an_error_naming_the_parameter(run):
    # regularizer=sp.l2_regularizer (the scale forgotten): before, regularization_loss() returned
    # the function l2_regularizer(value) makes, which failed later as `ArrayImpl + function`.
    model = _dense_loss(sp.l2_regularizer)
    with pytest.raises(TypeError) as info:
        if run == "init":
            model.init(jax.random.key(0))
        elif run == "apply":
            model.apply({"dense": {"w": jnp.ones((4, 3))}})
        else:
            jax.jit(model.apply)({"dense": {"w": jnp.ones((4, 3))}})
    message = str(info.value)
    assert "'dense/w'" in message and "sp.l2_regularizer(scale)" in message
    assert "returned a function" in message


def test_a_scopes_regularizer_without_its_scale_names_the_parameter_it_reached():
    def model():
        with sp.scope("block", regularizer=sp.l1_regularizer):
            sp.get_param("kernel", (2, 2))
        return sp.regularization_loss()
    with pytest.raises(TypeError, match=r"'block/kernel'.*\n.*sp\.l1_regularizer\(scale\)"):
        sp.transform(model).apply({"block": {"kernel": jnp.ones((2, 2))}})


def test_l1_l2_regularizer_without_its_scales_names_the_parameter():
    # l1_l2_regularizer(w) compares the array with 0.0: a ValueError from deep inside, before.
    with pytest.raises(TypeError, match=r"'dense/w'.*\n.*sp\.slim\.l1_l2_regularizer\(scale_l1, scale_l2\)"):
        _dense_loss(sp.slim.l1_l2_regularizer).apply({"dense": {"w": jnp.ones((4, 3))}})


def test_a_regularizer_returning_something_not_an_array_names_the_parameter():
    with pytest.raises(TypeError, match=r"'dense/w'.*returned list"):
        _dense_loss(lambda w: [jnp.sum(w)]).apply({"dense": {"w": jnp.ones((4, 3))}})


def test_a_regularizer_of_the_wrong_signature_is_an_error_naming_the_parameter():
    model = _dense_loss(lambda w, scale: scale * jnp.sum(w ** 2))
    with pytest.raises(TypeError) as info:
        model.apply({"dense": {"w": jnp.ones((4, 3))}})
    message = str(info.value)
    assert "'dense/w'" in message and "regularizer(value)" in message
    assert "missing 1 required positional argument: 'scale'" in message  # Python's own words
    assert "functools.partial" in message


def test_a_type_error_raised_inside_a_regularizer_passes_through_unchanged():
    def regularizer(w):
        raise TypeError("my own failure")
    with pytest.raises(TypeError, match="^my own failure$"):
        _dense_loss(regularizer).apply({"dense": {"w": jnp.ones((4, 3))}})


def test_an_activity_regularizer_without_its_scale_is_an_error_naming_the_layer_output():
    def model(x):
        return sp.layers.dense(x, 3, activity_regularizer=sp.l2_regularizer), sp.regularization_loss()
    model = sp.transform(model)
    x = jnp.ones((2, 4))
    with pytest.raises(TypeError, match=r"activity_regularizer.*\n.*sp\.l2_regularizer\(scale\)"):
        model.init(jax.random.key(0), x)


def test_regularizers_that_return_arrays_python_floats_or_none_still_sum():
    def model():
        with sp.scope("dense"):
            sp.get_param("w", init=jnp.ones(2), regularizer=sp.l2_regularizer(0.5))
            sp.get_param("u", init=jnp.ones(2), regularizer=lambda w: 0.25)
            sp.get_param("v", init=jnp.ones(2), regularizer=sp.no_regularizer)
        return sp.regularization_loss()
    model = sp.transform(model)
    params = model.init(jax.random.key(0))
    assert float(model.apply(params)) == pytest.approx(0.5 + 0.25)


# --- the guide's schedules against tf.compat.v1.train's decays, under jit -------------------------

def _tf():
    return pytest.importorskip("tensorflow")


def _recipe(pattern):
    """The guide's recipe for a schedule (a ``lambda count: ...`` in backquotes after ``pattern``)."""
    match = re.search(pattern + r"[^\n]*?`(lambda count: [^`]+)`", GUIDE)
    assert match, f"the guide has no `lambda count: ...` recipe after {pattern!r}"
    return match.group(1)


DECAY_STEPS = np.arange(1, 2001, dtype=np.int32)[:, None]  # one row per decay_steps 1..2000
OFFSETS = ["0", "1", "n // 2", "n - 1", "n", "n + 1", "2 * n - 1", "2 * n", "2 * n + 1", "3 * n",
           "10 * n"]
COUNTS = np.concatenate([np.broadcast_to(eval(o, {"n": DECAY_STEPS}), DECAY_STEPS.shape)
                         for o in OFFSETS], axis=1).astype(np.int32)


def _jitted(recipe, **constants):
    """The recipe's rate at COUNTS, under jit, with decay_steps a constant as in a user's step (the
    jitted step bakes it in: XLA divides by it as a multiplication by its reciprocal)."""
    schedule = eval(recipe, {"jnp": jnp, "decay_steps": DECAY_STEPS, **constants})
    return np.asarray(jax.jit(schedule)(jnp.asarray(COUNTS)))


def _tf_rates(decay, **kwargs):
    tf = _tf()
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        step = v1.placeholder(tf.int64, [None])
        steps = v1.placeholder(tf.float32, [None])
        rate = decay(v1.train)(global_step=step, decay_steps=steps, **kwargs)
        return session.run(rate, {step: COUNTS.ravel(), steps: np.broadcast_to(
            DECAY_STEPS, COUNTS.shape).ravel().astype(np.float32)}).reshape(COUNTS.shape)


@pytest.mark.parametrize("cycle", [False, True])
@pytest.mark.parametrize("power", [0.9, 1.0, 2.0])
def test_the_guides_polynomial_decay_is_tfs_for_decay_steps_1_to_2000_under_jit(power, cycle):
    recipe = _recipe(r"polynomial_decay\(lr, global_step, decay_steps, end_learning_rate, power, "
                     rf"cycle={cycle}\)`")
    got = _jitted(recipe, lr=0.1, end_learning_rate=0.01, power=power)
    expected = _tf_rates(lambda train: functools.partial(
        train.polynomial_decay, 0.1, end_learning_rate=0.01, power=power, cycle=cycle))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_optaxs_polynomial_schedule_arithmetic_turns_nan_under_jit_at_decay_steps():
    # Why the guide does not map polynomial_decay to optax.polynomial_schedule: optax's arithmetic
    # (1 - count / n) ** power is NaN at count == n under jit for a fractional power.
    naive = "lambda count: 0.09 * (1 - jnp.minimum(count, decay_steps) / decay_steps) ** 0.9 + 0.01"
    assert np.isnan(_jitted(naive)).any()


def test_the_guides_staircase_exponential_decay_is_tfs_for_decay_steps_1_to_2000_under_jit():
    recipe = _recipe(r"exponential_decay\(lr, global_step, decay_steps, decay_rate, staircase=True\)`")
    got = _jitted(recipe, lr=0.1, decay_rate=0.5)
    expected = _tf_rates(lambda train: functools.partial(
        train.exponential_decay, 0.1, decay_rate=0.5, staircase=True))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)


def test_optaxs_staircase_exponential_decay_switches_a_step_late_under_jit():
    # optax.exponential_decay(staircase=True) floors count / n, which under jit is just below k at
    # count == k * n for some n (41, 47, ...): the rate drops one step after TF's.
    schedule = jax.jit(optax.exponential_decay(1.0, transition_steps=41, decay_rate=0.5,
                                               staircase=True))
    assert float(schedule(jnp.int32(41))) == 1.0  # TF 1.x: 0.5


def test_the_guides_polynomial_decay_trains_as_tf_past_decay_steps():
    tf = _tf()
    v1 = tf.compat.v1
    rs = np.random.RandomState(0)
    x, y, w0 = (rs.randn(8, 3).astype(np.float32), rs.randn(8, 2).astype(np.float32),
                rs.randn(3, 2).astype(np.float32))
    steps = 8
    with tf.Graph().as_default(), v1.Session() as session:
        w = v1.get_variable("w", initializer=w0)
        step = v1.train.get_or_create_global_step()
        rate = v1.train.polynomial_decay(0.1, step, 5, end_learning_rate=0.01, power=0.9)
        train = v1.train.GradientDescentOptimizer(rate).minimize(
            tf.reduce_mean(tf.square(tf.matmul(x, w) - y)), global_step=step)
        session.run(v1.global_variables_initializer())
        for _ in range(steps):
            session.run(train)
        expected = session.run(w)

    recipe = _recipe(r"polynomial_decay\(lr, global_step, decay_steps, end_learning_rate, power, "
                     r"cycle=False\)`")
    schedule = eval(recipe, {"jnp": jnp, "lr": 0.1, "decay_steps": 5, "end_learning_rate": 0.01,
                             "power": 0.9})
    model = sp.transform(lambda x: x @ sp.get_param("w", init=w0))
    params = model.init(jax.random.key(0), x)
    optimizer = optax.sgd(schedule)
    state = optimizer.init(params)

    @jax.jit
    def train_step(params, state):
        grads = jax.grad(lambda p: jnp.mean(jnp.square(model.apply(p, x) - y)))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = train_step(params, state)
    np.testing.assert_allclose(params["w"], expected, rtol=1e-5, atol=1e-6)


# --- the guide's caveat: an embedding table's sparse gradient in TF 1.x ---------------------------

TABLE = np.random.RandomState(0).randn(6, 3).astype(np.float32)
IDS = [np.array([0, 1]), np.array([2, 3]), np.array([4, 1]), np.array([5, 0]), np.array([2, 2])]
TARGET = np.random.RandomState(1).randn(2, 3).astype(np.float32)


def _tf_table(make_optimizer, tied=False):
    """The table after TF 1.x trains it through embedding_lookup (its gradient: IndexedSlices);
    ``tied``: the table is also used densely (a tied softmax), which makes its gradient dense."""
    tf = _tf()
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        table = v1.get_variable("emb", initializer=TABLE)
        ids = v1.placeholder(tf.int32, [2])
        out = tf.nn.embedding_lookup(table, ids)
        loss = tf.reduce_sum(tf.square(out - TARGET))
        if tied:
            loss += 0.1 * tf.reduce_sum(tf.square(tf.matmul(out, table, transpose_b=True)))
        train = make_optimizer(v1.train).minimize(loss)
        session.run(v1.global_variables_initializer())
        for i in IDS:
            session.run(train, {ids: i})
        return session.run(table)


def _sp_table(optimizer, tied=False, rows_only=False):
    """The table trained with ``optimizer``; ``rows_only``: with the guide's recipe, which keeps
    the rows not looked up and their slots as they were."""
    def fn(ids):
        table = sp.get_param("emb", init=TABLE)
        out = sp.layers.embedding_lookup(table, ids)
        return out, (0.1 * jnp.sum(jnp.square(out @ table.T)) if tied else 0.0)

    model = sp.transform(fn)
    params = model.init(jax.random.key(0), IDS[0])
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, ids):
        def loss(p):
            out, extra = model.apply(p, ids)
            return jnp.sum(jnp.square(out - TARGET)) + extra
        grads = jax.grad(loss)(params)
        updates, new_state = optimizer.update(grads, opt_state, params)
        if rows_only:  # the guide's recipe, as written there
            rows = {"emb": jnp.zeros((len(TABLE), 1), bool).at[ids].set(True)}
            updates = jax.tree.map(lambda u, r: jnp.where(r, u, 0), updates, rows)
            new_state = jax.tree.map(
                lambda new, old, r: jnp.where(r, new, old), new_state, opt_state,
                optax.tree_utils.tree_map_params(optimizer, lambda _, r: r, opt_state, rows,
                                                 transform_non_params=lambda _: True))
        return optax.apply_updates(params, updates), new_state

    for ids in IDS:
        params, opt_state = step(params, opt_state, jnp.asarray(ids))
    return np.asarray(params["emb"])


SPARSE_PAIRS = {  # the guide's rows whose TF sparse kernels move only the looked-up rows
    "momentum": (lambda t: t.MomentumOptimizer(0.1, 0.9), optax.sgd(0.1, momentum=0.9)),
    "nesterov": (lambda t: t.MomentumOptimizer(0.1, 0.9, use_nesterov=True),
                 optax.sgd(0.1, momentum=0.9, nesterov=True)),
    "rmsprop": (lambda t: t.RMSPropOptimizer(0.01, decay=0.9, momentum=0.5, epsilon=1e-10),
                optax.rmsprop(0.01, decay=0.9, eps=1e-10, initial_scale=1.0, momentum=0.5)),
}
DENSE_LIKE_PAIRS = {  # TF's sparse kernels of these move every row as the dense ones do
    "sgd": (lambda t: t.GradientDescentOptimizer(0.1), optax.sgd(0.1)),
    "adagrad": (lambda t: t.AdagradOptimizer(0.1, initial_accumulator_value=0.1),
                optax.adagrad(0.1, initial_accumulator_value=0.1, eps=0.0)),
    "adam": (lambda t: t.AdamOptimizer(0.01, epsilon=1e-3), sp.optimizers.adam(0.01, epsilon=1e-3)),
}


def test_the_guide_warns_of_embedding_tables_near_its_momentum_and_rmsprop_rows():
    rows = GUIDE[GUIDE.index("| `tf.train.GradientDescentOptimizer(lr)`"):
                 GUIDE.index("| `tf.train.AdagradOptimizer(lr")]
    caveat = GUIDE[GUIDE.index("| an embedding table"):]
    caveat = caveat[:caveat.index("\n")]
    assert "embedding table" in rows  # the Momentum and RMSProp rows point to the caveat
    for text in ("IndexedSlices", "MomentumOptimizer", "RMSPropOptimizer", "tree_map_params",
                 "jnp.zeros((vocab, 1), bool).at[ids].set(True)"):
        assert text in caveat, text


@pytest.mark.parametrize("name", sorted(SPARSE_PAIRS))
def test_momentum_and_rmsprop_move_rows_not_looked_up_where_tf1_does_not(name):
    make_tf, optimizer = SPARSE_PAIRS[name]
    expected = _tf_table(make_tf)
    assert not np.allclose(_sp_table(optimizer), expected, rtol=1e-5, atol=1e-6)  # the caveat
    np.testing.assert_allclose(_sp_table(optimizer, rows_only=True), expected, rtol=1e-5,
                               atol=1e-6)  # the guide's recipe
    # A table also used densely gets a dense gradient in TF: the rows agree as they are.
    np.testing.assert_allclose(_sp_table(optimizer, tied=True), _tf_table(make_tf, tied=True),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(DENSE_LIKE_PAIRS))
def test_sgd_adagrad_and_adam_train_an_embedding_table_as_tf1_does(name):
    make_tf, optimizer = DENSE_LIKE_PAIRS[name]
    np.testing.assert_allclose(_sp_table(optimizer), _tf_table(make_tf), rtol=1e-5, atol=1e-6)


def _tf_regularizers():
    pytest.importorskip("tensorflow")
    tf_slim = pytest.importorskip("tf_slim")
    import tensorflow as tf

    return {"keras_l2": (tf.keras.regularizers.l2(0.1), r"a L2 object from (tf_keras|keras)",
                         r" \(here: sp.l2_regularizer\(0.2\)\)"),
            "slim_l2": (tf_slim.l2_regularizer(0.1), r"l2_regularizer.<locals>.l2 from tf_slim", "")}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("kind", ["keras_l2", "slim_l2"])
def test_a_tensorflow_regularizer_is_an_error_naming_the_parameter_and_the_jax_equivalent(kind, jit):
    regularizer, what, hint = _tf_regularizers()[kind]

    def model(x):
        with sp.scope("layer1"):
            w = sp.get_param("weights", (3, 2), regularizer=regularizer)
        return x @ w, sp.regularization_loss()

    m = sp.transform(model)
    x = jnp.ones((1, 3))
    params = {"layer1": {"weights": jnp.ones((3, 2))}}
    with pytest.raises(TypeError) as e:
        if jit:
            jax.jit(m.apply)(params, x)
        else:
            m.init(jax.random.key(0), x)
    message = str(e.value)
    assert re.search(r"the regularizer of 'layer1/weights' is " + what + r", which computes on "
                     r"TensorFlow tensors, not on JAX arrays", message), message
    assert re.search(r"fix: use sp.l2_regularizer\(scale\).*Keras's l2\(x\) is x \* sum\(w\*\*2\), "
                     r"i.e. sp.l2_regularizer\(2 \* x\)\)" + hint, message), message


# --- TensorFlow constraints, and what sp.apply_constraints refuses --------------------------------

def _tf_constraints():
    pytest.importorskip("tensorflow")
    import tensorflow as tf

    keras = tf.keras.constraints
    return {"MaxNorm": (keras.MaxNorm(0.5), "a MaxNorm object",
                        "sp.constraints.max_norm(max_value=0.5, axis=0)"),
            "max_norm": (keras.max_norm(2.0, axis=[0, 1]), "a MaxNorm object",
                         "sp.constraints.max_norm(max_value=2.0, axis=[0, 1])"),
            "NonNeg": (keras.NonNeg(), "a NonNeg object", "sp.constraints.non_neg()"),
            "MinMaxNorm": (keras.MinMaxNorm(0.5, 2.0, rate=0.5), "a MinMaxNorm object",
                           "sp.constraints.min_max_norm(min_value=0.5, max_value=2.0, rate=0.5, "
                           "axis=0)"),
            "clip_by_norm": (tf.clip_by_norm, "clip_by_norm", None)}


def _with_constraint(where, constraint):
    """A model whose parameter 'enc/kernel' gets ``constraint`` by way of ``where``."""
    def model(x):
        if where == "get_param":
            with sp.scope("enc"):
                return x @ sp.get_param("kernel", (3, 2), constraint=constraint)
        if where == "scope":
            with sp.scope("enc", constraint=constraint):
                return x @ sp.get_param("kernel", (3, 2))
        if where == "layer":
            return sp.layers.dense(x, 2, kernel_constraint=constraint, name="enc")
        return sp.layer_stack(2)(  # layer_stack: the constraint is lifted (vmapped) per layer
            lambda x: sp.layers.dense(x, 3, kernel_constraint=constraint, name="enc"))(x)
    return sp.transform(model)


@pytest.mark.parametrize("where", ["get_param", "scope", "layer", "layer_stack"])
@pytest.mark.parametrize("kind", ["MaxNorm", "max_norm", "NonNeg", "MinMaxNorm", "clip_by_norm"])
def test_a_tensorflow_constraint_is_refused_at_init_naming_the_parameter_and_the_jax_equivalent(
        kind, where):
    # Before: accepted; sp.apply_constraints then put a TF EagerTensor into the params, or failed
    # under jit with JAX's TracerArrayConversionError naming no parameter.
    constraint, what, equivalent = _tf_constraints()[kind]
    model = _with_constraint(where, constraint)
    with pytest.raises(TypeError) as info:
        model.init(jax.random.key(0), jnp.ones((1, 3)))
    message = str(info.value)
    assert re.search(r"The constraint of '[^']*enc/kernel' is " + re.escape(what)
                     + r" from (tensorflow|tf_keras|keras), which computes on TensorFlow tensors",
                     message), message
    assert "fix: use " + (equivalent or "sp.constraints") in message, message
    assert "lambda w: jnp.clip(w, -1.0, 1.0)" in message


def test_a_keras_constraint_runs_where_keras_computes_with_jax(monkeypatch):
    # Keras 3's constraints compute with its backend's ops: with the JAX backend they run on
    # jax.Arrays (inside jit too), so they are accepted.
    keras = pytest.importorskip("keras")
    if not hasattr(keras, "config") or not hasattr(keras.config, "backend"):
        pytest.skip("Keras 2 has no JAX backend")
    constraint = keras.constraints.MaxNorm(0.5)
    model = _with_constraint("get_param", constraint)
    if keras.config.backend() != "jax":
        with pytest.raises(TypeError, match=r"is a MaxNorm object from keras"):
            model.init(jax.random.key(0), jnp.ones((1, 3)))
        monkeypatch.setattr(keras.config, "backend", lambda: "jax")
    specs = model.specs(jnp.ones((1, 3)))
    assert specs["enc"]["kernel"].constraint is constraint


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_apply_constraints_refuses_a_tensorflow_result_naming_the_parameter(jit):
    # A user's own function computing with TF cannot be told apart at init: apply_constraints checks
    # what it returns (eager: a TF EagerTensor, before put into the params) or names the parameter
    # in JAX's error (jit), keeping it as the cause.
    tf = pytest.importorskip("tensorflow")
    model = _with_constraint("get_param", lambda w: tf.clip_by_value(w, -0.1, 0.1))
    params, specs = model.init(jax.random.key(0), jnp.ones((1, 3))), model.specs(jnp.ones((1, 3)))
    with pytest.raises(TypeError) as info:
        (jax.jit(lambda p: sp.apply_constraints(p, specs)) if jit
         else lambda p: sp.apply_constraints(p, specs))(params)
    message = str(info.value)
    assert isinstance(info.value, sp._tree.ConstraintError)
    assert "'enc/kernel'" in message and "fix:" in message, message
    if jit:
        assert "TracerArrayConversionError" in message and "jax.numpy" in message, message
        assert type(info.value.__cause__).__name__ == "TracerArrayConversionError"
    else:
        assert re.search(r"returned a tensorflow\S*Tensor of shape \(3, 2\), not a jax.Array",
                         message), message
        assert "it computes with tensorflow: compute with jax.numpy" in message, message


def test_a_constraint_failing_on_its_value_is_reraised_naming_the_parameter_with_the_cause():
    def model():
        with sp.scope("enc"):
            sp.get_param("w", (3, 3), constraint=sp.constraints.radial_constraint())  # needs rank 4

    model = sp.transform(model)
    params, specs = model.init(jax.random.key(0)), model.specs()
    with pytest.raises(ValueError) as info:
        sp.apply_constraints(params, specs)
    message = str(info.value)
    assert message.startswith("sp.apply_constraints: the constraint of 'enc/w' failed on its value "
                              "of shape (3, 3) and dtype float32: ValueError: The weight tensor "
                              "must have rank 4"), message
    assert "created at " + __file__ in message
    assert "fix: the error is the constraint's own" in message
    assert isinstance(info.value, sp.ScopedParamsError)
    assert isinstance(info.value.__cause__, ValueError)
    assert "must have rank 4" in str(info.value.__cause__)


def test_a_constraint_raising_another_kind_of_error_keeps_it_with_a_note_naming_the_parameter():
    def fail(w):
        raise ZeroDivisionError("boom")

    model = sp.transform(lambda: sp.get_param("w", (2,), constraint=fail))
    params, specs = model.init(jax.random.key(0)), model.specs()
    with pytest.raises(ZeroDivisionError, match="boom") as info:
        sp.apply_constraints(params, specs)
    assert any("raised by the constraint of 'w' in sp.apply_constraints" in note
               for note in getattr(info.value, "__notes__", [])), info.value


def test_apply_constraints_takes_numpy_results_and_projects_under_jit():
    model = _with_constraint("get_param", lambda w: np.clip(np.asarray(w), -0.5, 0.5))
    params, specs = model.init(jax.random.key(0), jnp.ones((1, 3))), model.specs(jnp.ones((1, 3)))
    assert float(np.abs(params["enc"]["kernel"]).max()) > 0.5
    out = sp.apply_constraints(params, specs)
    assert isinstance(out["enc"]["kernel"], np.ndarray)
    assert float(np.abs(out["enc"]["kernel"]).max()) <= 0.5
    jax_model = _with_constraint("layer_stack", sp.constraints.max_norm(0.5))
    params = jax_model.init(jax.random.key(0), jnp.ones((1, 3)))
    out = jax.jit(lambda p: sp.apply_constraints(p, jax_model.specs(jnp.ones((1, 3)))))(params)
    chex.assert_trees_all_equal_shapes_and_dtypes(out, params)


# --- adam_state_from_tf1: the slots mirror the params' tree; the step without global_step ---------

def _adam_checkpoint():
    w, b = np.ones((3, 2), np.float32), np.zeros(2, np.float32)
    return {"dense/w": w, "dense/b": b, "dense/w/Adam": w * 0.1, "dense/w/Adam_1": w * 0.01,
            "dense/b/Adam": b + 0.2, "dense/b/Adam_1": b + 0.04, "beta1_power": np.float32(0.81),
            "beta2_power": np.float32(0.998), "global_step": np.int64(1)}


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_adam_state_from_tf1_slots_have_the_tree_of_the_params_flat_or_nested(layout):
    # load_tf1(path, flat=True) gives {'dense/w': ...}; before, the slots were nested whatever the
    # params, and the next update refused the gradients of those very params.
    checkpoint = _adam_checkpoint()
    flat = {name: jnp.asarray(checkpoint[name]) for name in ("dense/w", "dense/b")}
    params = flat if layout == "flat" else sp.unflatten(flat)
    state = sp.optimizers.adam_state_from_tf1(checkpoint, params)
    for slot in (state.m, state.v):
        assert jax.tree_util.tree_structure(slot) == jax.tree_util.tree_structure(params)
    np.testing.assert_array_equal(sp.flatten(state.m)["dense/w"], checkpoint["dense/w/Adam"])
    np.testing.assert_array_equal(sp.flatten(state.v)["dense/b"], checkpoint["dense/b/Adam_1"])
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, state = jax.jit(sp.optimizers.adam(1e-3).update)(grads, state, params)
    nested_state = sp.optimizers.adam_state_from_tf1(checkpoint, sp.unflatten(flat))
    expected, _ = sp.optimizers.adam(1e-3).update(sp.unflatten(jax.tree_util.tree_map(
        jnp.ones_like, flat)), nested_state)
    chex.assert_trees_all_close(sp.flatten(sp.unflatten(dict(sp.flatten(updates)))),
                                sp.flatten(expected), rtol=1e-6)
    assert int(state.step) == 2


def test_adam_state_from_tf1_without_global_step_counts_from_0_and_resumes_as_tf_does():
    # A TF run without a global step (minimize() without global_step=): its next Adam step comes
    # from the beta powers, restored; the count, which only a schedule reads, starts at 0.
    tf = _tf()
    v1 = tf.compat.v1
    rs = np.random.RandomState(0)
    x, y, w0 = (rs.randn(8, 3).astype(np.float32), rs.randn(8, 2).astype(np.float32),
                rs.randn(3, 2).astype(np.float32))
    with tf.Graph().as_default(), v1.Session() as session:
        w = v1.get_variable("w", initializer=w0)
        train = v1.train.AdamOptimizer(0.01, epsilon=1e-3).minimize(
            tf.reduce_mean(tf.square(tf.matmul(x, w) - y)))
        session.run(v1.global_variables_initializer())
        for _ in range(3):
            session.run(train)
        variables = v1.global_variables()
        checkpoint = dict(zip([v.op.name for v in variables], session.run(variables)))
        session.run(train)
        expected = session.run(w)
    assert "global_step" not in checkpoint and "w/Adam" in checkpoint
    params = {"w": jnp.asarray(checkpoint["w"])}
    state = sp.optimizers.adam_state_from_tf1(checkpoint, params)
    assert int(state.step) == 0
    grads = jax.grad(lambda p: jnp.mean(jnp.square(jnp.asarray(x) @ p["w"] - y)))(params)
    updates, _ = sp.optimizers.adam(0.01, epsilon=1e-3).update(grads, state)
    np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], expected, rtol=1e-6,
                               atol=1e-7)
    assert int(sp.optimizers.adam_state_from_tf1(checkpoint, params, step=3).step) == 3


# --- the guide's tf.clip_by_global_norm row, when the global norm is not finite -------------------

def _clip_row():
    row = GUIDE[GUIDE.index("| `grads, _ = tf.clip_by_global_norm(grads, clip_norm)`"):]
    return row[:row.index("\n")]


CLIP_CASES = {"finite": ([1.0, 2.0], [3.0, 4.0]), "below clip_norm": ([0.1, 0.2], [0.0, -0.3]),
              "an inf gradient": ([1.0, np.inf], [3.0, 4.0]),
              "squares overflowing": ([1e20, 1.0], [3.0, 4.0]),
              "a nan gradient": ([np.nan, 1.0], [3.0, 4.0])}


@pytest.mark.parametrize("case", sorted(CLIP_CASES))
def test_the_guides_clip_by_global_norm_keeps_tfs_nans_when_the_norm_is_not_finite(case):
    tf = _tf()
    v1 = tf.compat.v1
    grads = [np.array(g, np.float32) for g in CLIP_CASES[case]]
    with tf.Graph().as_default(), v1.Session() as session:
        expected = session.run(tf.clip_by_global_norm([tf.constant(g) for g in grads], 1.0)[0])
    row = _clip_row()
    assert "TF makes every gradient NaN" in row and "silently does nothing" in row
    recipe = re.search(r"To keep TF's NaNs, put `(optax\.stateless\([^`]+\))` before the clip", row)
    assert recipe, row
    keep_nans = eval(recipe.group(1), {"optax": optax, "jax": jax, "jnp": jnp})
    clip = optax.chain(keep_nans, optax.clip_by_global_norm(1.0))
    given = {"a": jnp.asarray(grads[0]), "b": jnp.asarray(grads[1])}
    got, _ = jax.jit(clip.update)(given, clip.init(given))
    for want, have in zip(expected, (got["a"], got["b"])):
        np.testing.assert_allclose(np.asarray(have), want, rtol=1e-6, atol=0, equal_nan=True)
    # What the row warns of: optax's clip alone gives zeros (and NaN for an inf) instead.
    plain, _ = optax.clip_by_global_norm(1.0).update(given, optax.EmptyState())
    plain = np.concatenate([np.asarray(plain["a"]), np.asarray(plain["b"])])
    if case == "squares overflowing":
        assert (plain == 0).all()
    elif case == "an inf gradient":
        assert np.isnan(plain).sum() == 1 and (plain[~np.isnan(plain)] == 0).all()


def test_adam_given_an_integer_parameters_float0_gradient_says_so_and_how_to_leave_it_out():
    # Before: "the gradient of 'n' is void" (NumPy's name of float0) and "cast the gradient".
    def fn(x):
        n = sp.get_param("n", init=jnp.int32(3), trainable=False)
        return jnp.sum(x * sp.get_param("w", [3])) * n

    model, x = sp.transform(fn), jnp.ones(3)
    params = model.init(jax.random.key(0), x)
    grads = jax.grad(model.apply, allow_int=True)(params, x)
    optimizer = sp.optimizers.adam(0.1)
    with pytest.raises(sp.optimizers.GradientMismatchError) as e:
        optimizer.update(grads, optimizer.init(params), params)
    message = str(e.value)
    assert "the gradient of 'n' is float0" in message and "integer parameter (int32)" in message
    assert "void" not in message and "sp.partition_trainable" in message
    trainable, _ = sp.partition_trainable(params, model.specs(x))  # the fix works
    grads = jax.grad(lambda t: model.apply({**params, **t}, x))(trainable)
    optimizer.update(grads, optimizer.init(trainable), trainable)
