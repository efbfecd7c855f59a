"""What a model that catches an error and goes on gets, and init under jax.checking_leaks: a
request apply refuses creates nothing (as in init), a layer object or cell whose first call failed
before it built builds at its next call (TF's ``built``), a name scope refused as improperly nested
stays open to be closed in order, and init keeps no tracer of its traces in what outlives them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
X = np.random.RandomState(0).randn(2, 3).astype(np.float32)


# --- init under jax.checking_leaks ----------------------------------------------------------------


def _dense_in_stack_remat(x):
    return sp.layer_stack(2)(sp.remat(lambda h: jnp.tanh(sp.layers.dense(h, 3))))(x)


def _reused_after_the_functions_that_made_it(x):
    y = sp.cond(True, lambda h: h @ sp.get_param("w", (3, 3)), lambda h: h, x)
    with sp.scope(sp.get_scope(), reuse=sp.AUTO_REUSE):
        y = sp.scan(lambda c, _: (c @ sp.get_param("w", (3, 3)), None), y, None, length=2)[0]
    with sp.scope(sp.get_scope(), reuse=True):
        return y @ sp.get_param("w", (3, 3))


def _scan_in_scan(x):
    def outer(c, _):
        c = sp.scan(lambda d, _: (jnp.tanh(d @ sp.get_param("v", (3, 3))), None), c, None, length=2)[0]
        return c @ sp.get_param("w", (3, 3)), None
    return sp.scan(outer, x, None, length=2)[0]


MODELS = {
    "plain": lambda x: x @ sp.get_param("w", (3, 2)),
    "jnp_constant": lambda x: x * sp.get_param("c", init=jnp.arange(3.0)),
    "layer_stack": lambda x: sp.layer_stack(3)(lambda h: jnp.tanh(h @ sp.get_param("w", (3, 3))))(x),
    "scan": lambda x: sp.scan(lambda c, _: (c @ sp.get_param("w", (3, 3)), None), x, None,
                              length=2)[0],
    "remat": lambda x: sp.remat(lambda h: h @ sp.get_param("w", (3, 3)))(x),
    "cond": lambda x: sp.cond(True, lambda h: h @ sp.get_param("w", (3, 3)), lambda h: h, x),
    "while_loop": lambda x: sp.while_loop(
        lambda c: c[1] < 3, lambda c: (c[0] @ sp.get_param("w", (3, 3)), c[1] + 1), (x, 0))[0],
    "dynamic_rnn": lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), x[:, None, :],
                                                dtype=jnp.float32)[0],
    "remat_in_a_stack": _dense_in_stack_remat,
    "reused_after": _reused_after_the_functions_that_made_it,
    "scan_in_scan": _scan_in_scan,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_init_and_specs_keep_no_tracer_of_their_traces_under_jax_checking_leaks(name):
    model = sp.transform(MODELS[name])
    expected = model.init(KEY, X)
    with jax.checking_leaks():  # raised "Leaked trace" for every init (the store kept placeholders)
        params = model.init(KEY, X)
        specs = model.specs(X)
    chex_equal = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, expected)
    assert all(jax.tree.leaves(chex_equal))
    assert jax.tree.map(lambda s: s.shape, specs) == jax.tree.map(jnp.shape, params)
    np.testing.assert_array_equal(model.apply(params, X), jax.jit(model.apply)(params, X))


_L2 = sp.l2_regularizer(0.1)


def _w():
    return sp.get_param("w", (3, 3), regularizer=_L2)


REGULARIZED = {
    "cond": lambda x: sp.cond(True, lambda h: h @ _w(), lambda h: h, x),
    "scan": lambda x: sp.scan(lambda c, _: (c @ _w(), None), x, None, length=2)[0],
    "remat": lambda x: sp.remat(lambda h: h @ _w())(x),
    "cond_in_a_stack": lambda x: sp.layer_stack(2)(
        lambda h: sp.cond(True, lambda g: g @ _w(), lambda g: g, h))(x),
    "remat_in_a_stack": lambda x: sp.layer_stack(2)(
        sp.remat(lambda h: sp.layers.dense(h, 3, kernel_regularizer=_L2)))(x),
}


@pytest.mark.parametrize("name", sorted(REGULARIZED))
def test_regularization_loss_after_weights_made_in_nested_functions_keeps_no_tracer_in_init(name):
    model = sp.transform(lambda x: (REGULARIZED[name](x), sp.regularization_loss()))
    with jax.checking_leaks():  # the terms held the functions' placeholders after they ended
        params = model.init(KEY, X)
    weights = [v for n, v in sp.flatten(params).items() if n.endswith(("w", "kernel"))]
    expected = sum(0.1 * jnp.sum(w ** 2) / 2 for w in weights)  # TF's l2_loss, each weight once
    np.testing.assert_allclose(model.apply(params, X)[1], expected, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(model.apply)(params, X)[1], expected, rtol=1e-5)


def test_a_nested_function_making_several_parameters_of_one_shape_leaves_no_pooled_placeholder():
    # init stages placeholders of one shape in a pool: those left over stayed after the function
    model = sp.transform(lambda x: sp.remat(
        lambda h: sp.layers.dense(sp.layers.dense(h, 3, name="a"), 3, name="b"))(x))
    with jax.checking_leaks():
        params = model.init(KEY, X)
    assert sorted(sp.flatten(params)) == ["a/bias", "a/kernel", "b/bias", "b/kernel"]


def test_a_layer_objects_weights_read_after_a_nested_function_built_it_are_there_in_init():
    def fn(x):
        dense = sp.layers.Dense(3)
        y = sp.remat(dense)(x)
        y = sp.cond(True, dense, lambda h: h, y)
        return y @ dense.kernel  # its placeholder of the remat's trace was dropped: made again

    model = sp.transform(fn)
    with jax.checking_leaks():
        params = model.init(KEY, X)
    np.testing.assert_allclose(jax.jit(model.apply)(params, X), model.apply(params, X), rtol=1e-6)


@pytest.mark.parametrize("stacked", [False, True], ids=["remat", "remat_in_a_stack"])
def test_state_set_in_a_remat_keeps_no_tracer_of_its_trace_in_init_and_apply(stacked):
    block = sp.remat(lambda h: sp.layers.batch_normalization(h, training=True))
    model = sp.transform_with_state(sp.layer_stack(2)(block) if stacked else block)
    params, state = model.init(KEY, X)
    expected = model.apply(params, state, X)
    with jax.checking_leaks():  # the store kept the values set in the checkpoint's trace
        model.init(KEY, X)
        out = model.apply(params, state, X)
        jitted = jax.jit(model.apply)(params, state, X)
    for got in (out, jitted):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_init_of_a_training_batch_norm_keeps_no_tracer_under_jax_checking_leaks():
    model = sp.transform_with_state(lambda x: sp.layers.batch_normalization(x, training=True))
    with jax.checking_leaks():
        params, state = model.init(KEY, X)
    assert sorted(sp.flatten(state)) == ["batch_normalization/moving_mean",
                                         "batch_normalization/moving_variance"]


# --- a request refused in apply creates nothing ----------------------------------------------------


def _retried(x):
    try:
        w = sp.get_param("w", (-1,))  # refused: a negative dimension
    except (TypeError, ValueError):
        w = sp.get_param("w", (3,))
    try:
        v = sp.get_param("v", (3,), regularizer="l2")  # refused: not a callable
    except (TypeError, ValueError):
        v = sp.get_param("v", (3,), regularizer=jnp.sum)
    return x * w * v, sp.regularization_loss()


def _retried_state(x):
    try:
        s = sp.get_state("s", (-1,), init=sp.initializers.zeros())
    except (TypeError, ValueError):
        s = sp.get_state("s", (3,), init=sp.initializers.zeros())
    return x + s


def test_a_request_refused_in_apply_creates_nothing_so_a_caught_retry_runs_as_in_init():
    model = sp.transform(_retried)
    params = model.init(KEY, X)
    assert sorted(sp.flatten(params)) == ["v", "w"]
    # apply said "Variable w already exists": the refused request had recorded w as created
    out, loss = model.apply(params, X)
    jit_out, jit_loss = jax.jit(model.apply)(params, X)
    np.testing.assert_allclose(out, X * params["w"] * params["v"], rtol=1e-6)
    np.testing.assert_allclose(loss, jnp.sum(params["v"]), rtol=1e-6)  # counted once
    np.testing.assert_allclose(jit_out, out, rtol=1e-6)
    np.testing.assert_allclose(jit_loss, loss, rtol=1e-6)

    stateful = sp.transform_with_state(_retried_state)
    params, state = stateful.init(KEY, X)
    out, _ = stateful.apply(params, state, X)
    np.testing.assert_array_equal(out, X)


def test_a_request_refused_by_its_shape_in_apply_is_refused_again_when_asked_again():
    def fn(x):
        for _ in range(2):  # asked twice with a shape the params do not have: the same error twice
            try:
                sp.get_param("w", (4,))
            except sp.ShapeMismatchError as error:
                assert "in the params passed to apply" in str(error)
        return x

    sp.transform(fn).apply({"w": jnp.zeros(3)}, X)


# --- a layer object or cell whose first call failed before it built --------------------------------


class MyLayer(sp.layers.Layer):
    def build(self, input_shape):
        if input_shape[-1] != 3:
            raise ValueError("expects 3 features")
        self.w = self.add_weight("w", [3, 2])
        super().build(input_shape)

    def call(self, x):
        return x @ self.w


def _objects_retried_after_a_failed_first_call():
    dense, conv, custom, cell = (sp.layers.Dense(4, name="fc"), sp.layers.Conv2D(2, 1), MyLayer(),
                                 sp.rnn.GRUCell(3))

    def fn(x):
        for call in (lambda: dense(jnp.float32(1.0)),  # rank 0: refused before it builds
                     lambda: conv(x),  # rank 2
                     lambda: custom(jnp.ones((2, 5))),  # its build raises
                     lambda: cell(jnp.float32(1.0), jnp.zeros((2, 3)))):
            with pytest.raises((ValueError, TypeError, IndexError)):
                call()
        h, _ = cell(x, jnp.zeros((2, 3)))
        h, _ = cell(x, h)
        return dense(x), conv(x[:, None, None, :]), custom(x), dense(x), h

    return fn


def test_a_layer_object_whose_first_call_failed_before_it_built_builds_at_its_next_call_as_tfs():
    model = sp.transform(_objects_retried_after_a_failed_first_call())
    params = model.init(KEY, X)  # was "Variable fc/kernel does not exist" (reuse on, nothing built)
    # TF 1.x (tf.layers objects, a Layer subclass, a GRUCell, the same calls): these names
    assert sorted(sp.flatten(params)) == [
        "conv2d/bias", "conv2d/kernel", "fc/bias", "fc/kernel", "gru_cell/candidate/bias",
        "gru_cell/candidate/kernel", "gru_cell/gates/bias", "gru_cell/gates/kernel", "my_layer/w"]
    model = sp.transform(_objects_retried_after_a_failed_first_call())
    out = model.apply(params, X)
    jit_out = jax.jit(sp.transform(_objects_retried_after_a_failed_first_call()).apply)(params, X)
    np.testing.assert_allclose(out[0], X @ params["fc"]["kernel"] + params["fc"]["bias"], rtol=1e-6)
    np.testing.assert_allclose(out[2], X @ params["my_layer"]["w"], rtol=1e-6)
    for a, b in zip(out, jit_out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["GRUCell", "BasicRNNCell", "LSTMCell", "BasicLSTMCell"])
def test_a_cell_whose_first_call_raised_after_making_its_weights_reuses_them_as_tfs(cell):
    # TF makes a cell's weights in build, before the call that then fails (a state of the wrong
    # size): built, its next call reuses them
    lstm = "LSTM" in cell

    def state(n):
        zeros = jnp.zeros((2, n))
        return sp.rnn.LSTMStateTuple(zeros, zeros) if lstm else zeros

    def fn(x):
        rnn_cell = getattr(sp.rnn, cell)(3)
        with pytest.raises((ValueError, TypeError)):
            rnn_cell(x, state(5))
        return rnn_cell(x, state(3))[0]

    model = sp.transform(fn)
    params = model.init(KEY, X)  # was "Variable ... already exists"
    assert len(sp.flatten(params)) == (4 if cell == "GRUCell" else 2)
    np.testing.assert_allclose(jax.jit(model.apply)(params, X), model.apply(params, X), rtol=1e-6)


def test_a_layer_object_whose_first_call_raised_after_making_its_weights_reuses_them_as_tfs():
    calls = []

    def activation(h):  # raises at the first call only, after the weights are made
        calls.append(None)
        if len(calls) == 1:
            raise ValueError("first call")
        return h

    def fn(x):
        calls.clear()
        dense = sp.layers.Dense(4, activation=activation)
        with pytest.raises(ValueError, match="first call"):
            dense(x)
        return dense(x)

    model = sp.transform(fn)
    params = model.init(KEY, X)  # was "Variable dense/kernel already exists"
    np.testing.assert_allclose(model.apply(params, X),
                               X @ params["dense"]["kernel"] + params["dense"]["bias"], rtol=1e-6)


def test_a_layer_objects_second_call_still_reuses_what_its_first_call_built():
    dense = sp.layers.Dense(4)

    def fn(x):
        return dense(x) + dense(x)

    params = sp.transform(fn).init(KEY, X)
    assert sorted(sp.flatten(params)) == ["dense/bias", "dense/kernel"]


# --- a name scope refused as improperly nested -----------------------------------------------------


def test_a_name_scope_refused_as_improperly_nested_stays_open_to_close_in_order():
    def fn(x):
        names, scope = sp.name_scope("n"), sp.scope("a")
        names.__enter__()
        scope.__enter__()
        with pytest.raises(sp.ScopeNestingError, match="closing 'n' while 'n/a' is open"):
            names.__exit__(None, None, None)
        scope.__exit__(None, None, None)
        names.__exit__(None, None, None)  # was "Closing sp.name_scope('n'), which is not open"
        with sp.name_scope("n") as again:
            assert again == "n_1/"  # TF's names_in_use: 'n' was taken
        return x

    sp.transform(fn).init(KEY, X)
