"""sp.rnn: TF 1.x's recurrent cells, dynamic_rnn and bidirectional_dynamic_rnn, checked against TF's
own (names, shapes, outputs and final states given the same weights)."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

# TF's cells warn that they are deprecated (TF's own cells need TF_USE_LEGACY_KERAS, see conftest.py).
pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated:UserWarning")

KEY = jax.random.key(0)
B, T, D = 3, 6, 5
XS = np.random.RandomState(0).randn(B, T, D).astype(np.float32)
LENGTHS = [6, 2, 4]


# Each program is written twice, against TF 1.x's API (``api`` is ``tf.compat.v1.nn`` and ``f32``
# its float32) and against sp.rnn (``sp.rnn`` and ``jnp.float32``), with the same arguments.
def stacked_with_lengths(api, rnn, f32, x):
    cell = rnn.MultiRNNCell([rnn.BasicLSTMCell(4), rnn.GRUCell(3),
                             rnn.LSTMCell(4, use_peepholes=True, num_proj=3, cell_clip=0.5,
                                          proj_clip=0.8)])
    return api.dynamic_rnn(cell, x, sequence_length=LENGTHS, dtype=f32)


def bidirectional_with_lengths(api, rnn, f32, x):
    return api.bidirectional_dynamic_rnn(rnn.BasicRNNCell(4), rnn.BasicLSTMCell(2, forget_bias=0.5),
                                         x, sequence_length=LENGTHS, dtype=f32)


def time_major_concatenated_state_and_initial_state(api, rnn, f32, x):
    cell = rnn.BasicLSTMCell(3, state_is_tuple=False)
    x = api_transpose(api, x)
    outputs, state = api.dynamic_rnn(cell, x, initial_state=0.1 * api_ones(api, (B, 6)),
                                     time_major=True, scope="encoder")
    more, _ = api.dynamic_rnn(rnn.LSTMCell(2, state_is_tuple=False), outputs, dtype=f32,
                              time_major=True)
    flat = rnn.MultiRNNCell([rnn.GRUCell(2), rnn.BasicLSTMCell(3, state_is_tuple=False)],
                            state_is_tuple=False)  # TF's deprecated concatenated state: 2 + 6
    stacked, flat_state = api.dynamic_rnn(flat, outputs, sequence_length=LENGTHS, dtype=f32,
                                          time_major=True, scope="flat")
    return outputs, state, more, stacked, flat_state


def a_cell_shared_by_two_dynamic_rnns(api, rnn, f32, x):
    shared = rnn.GRUCell(3)
    first, _ = api.dynamic_rnn(shared, x, dtype=f32, scope="a")
    second, _ = api.dynamic_rnn(shared, x[:, ::-1], dtype=f32, scope="a")  # the same weights
    third, _ = api.dynamic_rnn(rnn.GRUCell(3), x, dtype=f32, scope="b")
    return first, second, third


def static_stack_with_a_residual_and_static_bidirectional(api, rnn, f32, x):
    steps = api_unstack(api, x)
    cell = rnn.MultiRNNCell([rnn.GRUCell(5), rnn.ResidualWrapper(rnn.BasicLSTMCell(5))])
    outputs, state = api.static_rnn(cell, steps, sequence_length=LENGTHS, dtype=f32)
    both, state_fw, state_bw = api.static_bidirectional_rnn(
        rnn.BasicRNNCell(2), rnn.GRUCell(3), steps, sequence_length=LENGTHS, dtype=f32)
    return outputs, state, both, state_fw, state_bw


def cells_called_with_a_scope(api, rnn, f32, x):
    steps = api_unstack(api, x)
    cell = rnn.BasicLSTMCell(4)
    state = cell.zero_state(B, f32)
    first, state = cell(steps[0], state, scope="rnn")  # rnn/kernel, right under the scope
    second, state = cell(steps[1], state, scope="rnn")  # reused
    gru = rnn.GRUCell(3)
    with api_scope(api, "outer"):
        in_outer, _ = gru(steps[0], gru.zero_state(B, f32), scope="g")
    other = rnn.DropoutWrapper(rnn.GRUCell(3))
    with api_scope(api, "enc"):
        unscoped, h = other(steps[0], other.zero_state(B, f32))  # enc/gru_cell/...
    ignored, _ = other(steps[1], h, scope="elsewhere")  # its scope is set: the same weights
    return first, second, state, in_outer, unscoped, ignored


def users_cells_nested_inputs_and_5d_inputs(api, rnn, f32, x):
    """A user's cells, named after their classes as TF names layers: one takes a pair of inputs and
    returns a pair of outputs (in a bidirectional run, with the single input TF takes there), one
    convolves [height, width, channels] steps (5-D inputs, 4-D state); all with lengths."""
    tf = getattr(api, "tf", None)
    get = sp.get_param if tf is None else tf.compat.v1.get_variable
    matmul = jnp.matmul if tf is None else tf.matmul
    concat = jnp.concatenate if tf is None else tf.concat

    class PairInputCell(rnn.RNNCell):
        def __init__(self, inner):
            super().__init__()
            self._inner = inner

        @property
        def state_size(self):
            return self._inner.state_size

        @property
        def output_size(self):
            return (self._inner.output_size, self._inner.output_size)

        def call(self, inputs, state):
            a, b = inputs if isinstance(inputs, tuple) else (inputs, inputs[:, :2])
            out, new = self._inner(a + matmul(b, get("mix", [b.shape[-1], a.shape[-1]])), state)
            return (out, -out), new

    class ConvCell(rnn.RNNCell):
        @property
        def state_size(self):
            return (4, 4, 3) if tf is None else tf.TensorShape([4, 4, 3])

        @property
        def output_size(self):
            return self.state_size

        if tf is None:  # a [4, 4, 3] state: TF reads a TensorShape, here the cell says it
            def zero_state(self, batch_size, dtype):
                return jnp.zeros((batch_size, 4, 4, 3), dtype)

        def call(self, inputs, h):
            k = get("kernel", [3, 3, 5, 3])
            both = concat([inputs, h], -1)
            if tf is None:
                y = jax.lax.conv_general_dilated(both, k, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
            else:
                y = tf.nn.conv2d(both, k, 1, "SAME")
            y = jnp.tanh(y) if tf is None else tf.tanh(y)
            return y, y

    pair = (x, x[:, :, :2] * 2.0)
    (a, b), state = api.dynamic_rnn(PairInputCell(rnn.GRUCell(4)), pair, sequence_length=LENGTHS,
                                    dtype=f32)
    (fw, bw), _ = api.bidirectional_dynamic_rnn(PairInputCell(rnn.BasicRNNCell(5)),
                                                rnn.GRUCell(2), x, sequence_length=LENGTHS,
                                                dtype=f32)  # nested outputs forwards
    images = x[:, :, :, None, None] * x[:, :, None, :4, None]  # [batch, time, 5, 4, 1]
    images = concat([images[:, :, :4]] * 2, -1)  # [batch, time, 4, 4, 2]
    frames, last = api.dynamic_rnn(ConvCell(), images, sequence_length=LENGTHS, dtype=f32,
                                   scope="conv")
    return a, b, state, fw, bw, frames, last


def api_scope(api, name):
    return sp.scope(name) if api is sp.rnn else api.tf.compat.v1.variable_scope(name)


def api_unstack(api, x):
    return list(jnp.unstack(x, axis=1)) if api is sp.rnn else api.tf.unstack(x, axis=1)


def api_transpose(api, x):
    return jnp.swapaxes(x, 0, 1) if api is sp.rnn else api.tf.transpose(x, [1, 0, 2])


def api_ones(api, shape):
    return jnp.ones(shape) if api is sp.rnn else api.tf.ones(shape)


PROGRAMS = [stacked_with_lengths, bidirectional_with_lengths,
            time_major_concatenated_state_and_initial_state,
            a_cell_shared_by_two_dynamic_rnns, static_stack_with_a_residual_and_static_bidirectional,
            cells_called_with_a_scope, users_cells_nested_inputs_and_5d_inputs]


def _tf_run(program, save_to=None):
    """TF's variables (name -> value, biases and peepholes made non-zero) and outputs; with
    ``save_to``, also a TF 1.x checkpoint of them (``tf.train.Saver``) at that prefix."""
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1

    class Api:  # tf.compat.v1.nn with tf itself at hand for the two helpers above
        dynamic_rnn = staticmethod(tf1.nn.dynamic_rnn)
        bidirectional_dynamic_rnn = staticmethod(tf1.nn.bidirectional_dynamic_rnn)
        static_rnn = staticmethod(tf1.nn.static_rnn)
        static_bidirectional_rnn = staticmethod(tf1.nn.static_bidirectional_rnn)

    Api.tf = tf
    with tf.Graph().as_default(), tf1.Session() as session:
        x = tf1.placeholder(tf.float32, XS.shape)
        outputs = program(Api, tf1.nn.rnn_cell, tf.float32, x)
        session.run(tf1.global_variables_initializer())
        variables = {v.name[:-2]: v for v in tf1.global_variables()}
        values = {}
        for i, (name, v) in enumerate(sorted(variables.items())):
            value = session.run(v)
            if "bias" in name or "diag" in name:  # TF initializes them to constants: make them count
                value = np.random.RandomState(i).randn(*value.shape).astype(np.float32) * 0.3
                v.load(value, session)
            values[name] = value
        if save_to is not None:
            tf1.train.Saver().save(session, str(save_to))
        return values, session.run(outputs, {x: XS})


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.__name__)
def test_rnn_programs_match_tf1_names_shapes_outputs_and_final_states(program):
    _assert_matches_tf(program)


def _assert_matches_tf(program):
    """``program`` under sp.rnn, given TF's weights, gives TF's names, shapes and outputs."""
    values, theirs = _tf_run(program)
    model = sp.transform(lambda x: program(sp.rnn, sp.rnn, jnp.float32, x))
    params = model.init(KEY, XS)
    assert {k: v.shape for k, v in sp.flatten(params).items()} == {
        k: v.shape for k, v in values.items()}
    tf_params = sp.unflatten({k: jnp.asarray(v) for k, v in values.items()})
    for ours in (model.apply(tf_params, XS), jax.jit(model.apply)(tf_params, XS)):
        ours_leaves, theirs_leaves = jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)
        assert len(ours_leaves) == len(theirs_leaves)
        for a, b in zip(ours_leaves, theirs_leaves):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def cells_given_the_same_name(api, rnn, f32, x):
    steps = api_unstack(api, x)
    outs = [rnn.LSTMCell(3, name="cell")(steps[0], rnn.LSTMCell(3).zero_state(B, f32))[0]
            for _ in range(2)]  # cell/, then cell_1/
    with api_scope(api, "enc"):
        outs += [rnn.GRUCell(2, name="g")(steps[k], rnn.GRUCell(2).zero_state(B, f32))[0]
                 for k in range(2)]  # enc/g/, enc/g_1/
    auto = api.tf.compat.v1.AUTO_REUSE if api is not sp.rnn else sp.AUTO_REUSE
    outs += [rnn.BasicRNNCell(2, reuse=auto, name="shared")(steps[k], api_ones(api, (B, 2)))[0]
             for k in range(2)]  # one set: shared/
    return outs


def test_cells_given_the_same_name_are_numbered_unless_made_with_auto_reuse_like_tf():
    values, _ = _tf_run(cells_given_the_same_name)
    assert sorted({k.rsplit("/", 1)[0] for k in values}) == [
        "cell", "cell_1", "enc/g/candidate", "enc/g/gates", "enc/g_1/candidate", "enc/g_1/gates",
        "shared"]
    _assert_matches_tf(cells_given_the_same_name)


def test_a_tf1_checkpoint_of_a_stacked_lstm_gru_loads_by_name_and_gives_tfs_outputs(tmp_path):
    _, theirs = _tf_run(stacked_with_lengths, save_to=tmp_path / "model.ckpt")
    params = sp.checkpoint.load_tf1(tmp_path / "model.ckpt")
    model = sp.transform(lambda x: stacked_with_lengths(sp.rnn, sp.rnn, jnp.float32, x))
    assert sorted(sp.flatten(params)) == sorted(sp.flatten(model.init(KEY, XS)))
    for a, b in zip(jax.tree_util.tree_leaves(jax.jit(model.apply)(params, XS)),
                    jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_lstm_state_is_an_lstm_state_tuple_and_final_state_stops_at_each_length():
    def fn(x):
        return sp.rnn.dynamic_rnn(sp.rnn.BasicLSTMCell(4), x, sequence_length=LENGTHS,
                                  dtype=jnp.float32)

    model = sp.transform(fn)
    params = model.init(KEY, XS)
    outputs, state = model.apply(params, XS)
    assert isinstance(state, sp.rnn.LSTMStateTuple) and state.h.shape == (B, 4)
    for b, n in enumerate(LENGTHS):
        np.testing.assert_array_equal(outputs[b, n:], 0.0)  # zeros past the end
        np.testing.assert_array_equal(state.h[b], outputs[b, n - 1])  # the last live step's output
    full, _ = model.apply(params, XS[:, :2])  # a sequence's outputs never depend on later steps
    np.testing.assert_allclose(outputs[:, :2], full, rtol=1e-6)


def test_cells_get_tf_layer_names_and_a_cell_called_again_shares_its_weights():
    def fn(x):
        with sp.scope("enc"):
            cell, other = sp.rnn.BasicLSTMCell(4), sp.rnn.BasicLSTMCell(4)
            state = cell.zero_state(B, jnp.float32)
            h1, state = cell(x[:, 0], state)
            h2, state = cell(x[:, 1], state)  # the same weights
            h3, _ = other(x[:, 0], other.zero_state(B, jnp.float32))
            named, _ = sp.rnn.GRUCell(2, name="my_gru")(x[:, 0], jnp.zeros((B, 2)))
        return h1, h2, h3, named

    params = sp.flatten(sp.transform(fn).init(KEY, XS))
    assert sorted(params) == [
        "enc/basic_lstm_cell/bias", "enc/basic_lstm_cell/kernel", "enc/basic_lstm_cell_1/bias",
        "enc/basic_lstm_cell_1/kernel", "enc/my_gru/candidate/bias", "enc/my_gru/candidate/kernel",
        "enc/my_gru/gates/bias", "enc/my_gru/gates/kernel"]
    np.testing.assert_array_equal(params["enc/my_gru/gates/bias"], 1.0)  # GRU's gates start open


def test_a_cell_built_outside_the_model_is_named_afresh_in_every_init_and_apply():
    cell = sp.rnn.GRUCell(3)  # module level, as TF code often keeps it
    model = sp.transform(lambda x: sp.rnn.dynamic_rnn(cell, x, dtype=jnp.float32)[0])
    params = model.init(KEY, XS)
    assert sorted(sp.flatten(params)) == ["rnn/gru_cell/candidate/bias", "rnn/gru_cell/candidate/kernel",
                                          "rnn/gru_cell/gates/bias", "rnn/gru_cell/gates/kernel"]
    chex.assert_trees_all_equal(model.init(KEY, XS), params)
    chex.assert_trees_all_close(model.apply(params, XS), jax.jit(model.apply)(params, XS), rtol=1e-5)


def test_parameters_take_the_inputs_dtype_as_tf_cells_do():
    x = XS.astype(jnp.bfloat16)
    params = sp.transform(lambda x: sp.rnn.dynamic_rnn(sp.rnn.LSTMCell(4, num_proj=2), x,
                                                       dtype=jnp.bfloat16)).init(KEY, x)
    assert {v.dtype for v in sp.flatten(params).values()} == {jnp.dtype(jnp.bfloat16)}


def test_dropout_wrapper_draws_a_new_mask_every_step_and_keeps_the_cells_names():
    def fn(x, keep):
        cell = sp.rnn.DropoutWrapper(sp.rnn.BasicRNNCell(8), input_keep_prob=keep,
                                     output_keep_prob=keep)
        return sp.rnn.dynamic_rnn(cell, x, dtype=jnp.float32)[0]

    model = sp.transform(fn)
    x = jnp.ones((B, T, D))
    params = model.init(KEY, x, 0.5)
    assert sorted(sp.flatten(params)) == ["rnn/basic_rnn_cell/bias", "rnn/basic_rnn_cell/kernel"]
    plain = sp.transform(lambda x: sp.rnn.dynamic_rnn(sp.rnn.BasicRNNCell(8), x, dtype=jnp.float32)[0])
    np.testing.assert_array_equal(model.apply(params, x, 1.0), plain.apply(params, x))
    rng = jax.random.key(3)
    out = model.apply(params, x, 0.5, rng=rng)
    np.testing.assert_array_equal(out, model.apply(params, x, 0.5, rng=rng))  # reproducible
    dropped = np.asarray(out) == 0.0
    assert 0.3 < dropped.mean() < 0.7
    assert not (dropped[:, 0] == dropped[:, 1]).all()  # a new mask at the next step
    with pytest.raises(sp.MissingRngError):
        model.apply(params, x, 0.5)
    with pytest.raises(ValueError, match="output_keep_prob must be between 0 and 1: 0.0"):
        sp.rnn.DropoutWrapper(sp.rnn.GRUCell(2), output_keep_prob=0.0)


def test_gradients_flow_through_dynamic_rnn_to_every_weight():
    def loss(x):
        outputs, _ = sp.rnn.dynamic_rnn(sp.rnn.LSTMCell(4, use_peepholes=True), x,
                                        sequence_length=LENGTHS, dtype=jnp.float32)
        return jnp.sum(outputs ** 2)

    model = sp.transform(loss)
    params = model.init(KEY, XS)
    grads = sp.flatten(jax.jit(jax.grad(model.apply))(params, XS))
    assert set(grads) == set(sp.flatten(params))
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in grads.values())


def test_dynamic_rnn_errors_say_what_to_pass():
    def no_dtype(x):
        return sp.rnn.dynamic_rnn(sp.rnn.GRUCell(2), x)

    with pytest.raises(ValueError, match=r"If there is no initial_state, you must give a dtype"):
        sp.transform(no_dtype).init(KEY, XS)
    with pytest.raises(ValueError, match=r"sequence_length must have shape \[batch_size\] = \(3,\)"):
        sp.transform(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(2), x, sequence_length=[1, 2],
                                                  dtype=jnp.float32)).init(KEY, XS)
    with pytest.raises(ValueError, match=r"inputs must be \[batch, time, depth, ...\] arrays"):
        sp.transform(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(2), x[0], dtype=jnp.float32)
                     ).init(KEY, XS)
    with pytest.raises(ValueError, match="Must specify at least one cell for MultiRNNCell"):
        sp.rnn.MultiRNNCell([])
    with pytest.raises(ValueError, match=r"Some cells return tuples of states, but the flag "
                                         r"state_is_tuple is not set(.|\n)*fix: keep the default"):
        sp.rnn.MultiRNNCell([sp.rnn.GRUCell(2), sp.rnn.BasicLSTMCell(3)], state_is_tuple=False)
    with pytest.raises(TypeError, match=r"static_rnn's inputs must be a non-empty list"):
        sp.transform(lambda x: sp.rnn.static_rnn(sp.rnn.GRUCell(2), x, dtype=jnp.float32)
                     ).init(KEY, XS)


def test_a_second_unnamed_cell_in_a_reentered_scope_is_tfs_already_exists_error():
    # In TF 1.x too: default names restart in each entry of "a", so the new cell is a/gru_cell again.
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1

    def program(api, rnn, f32, x):
        api.dynamic_rnn(rnn.GRUCell(3), x, dtype=f32, scope="a")
        api.dynamic_rnn(rnn.GRUCell(3), x, dtype=f32, scope="a")

    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="Variable a/gru_cell/gates/kernel already exists") as theirs:
            program(tf1.nn, tf1.nn.rnn_cell, tf.float32, tf1.placeholder(tf.float32, XS.shape))
    with pytest.raises(sp.ParamExistsError) as ours:
        sp.transform(lambda x: program(sp.rnn, sp.rnn, jnp.float32, x)).init(KEY, XS)
    assert str(ours.value).split(" Did you mean")[0] == str(theirs.value).split(" Did you mean")[0]
    assert "note: name_scope" not in str(ours.value)  # the scope's own name scope, a_1, is no hint


def test_variational_dropout_draws_one_mask_per_call_shared_by_every_step_and_batch_entry():
    def fn(x, variational=True, **keep):
        cell = sp.rnn.DropoutWrapper(sp.rnn.BasicLSTMCell(8), variational_recurrent=variational,
                                     input_size=D, dtype=jnp.float32, **keep)
        return sp.rnn.dynamic_rnn(cell, x, dtype=jnp.float32)[0]

    model = sp.transform(fn)
    params = model.init(KEY, XS)
    assert sorted(sp.flatten(params)) == ["rnn/basic_lstm_cell/bias", "rnn/basic_lstm_cell/kernel"]
    plain = sp.transform(lambda x: sp.rnn.dynamic_rnn(sp.rnn.BasicLSTMCell(8), x,
                                                      dtype=jnp.float32)[0]).apply(params, XS)
    rng = jax.random.key(5)
    # Output dropout only: the plain outputs, scaled, with one [1, 8] mask for every step and row.
    out = model.apply(params, XS, output_keep_prob=0.5, rng=rng)
    kept = np.asarray(out != 0)
    assert kept.all(axis=(0, 1)).sum() == kept.any(axis=(0, 1)).sum() > 0  # a column: all or none
    assert 0 < kept[0, 0].sum() < 8
    np.testing.assert_allclose(out, np.where(kept, plain / 0.5, 0.0), rtol=1e-6)
    # Inputs, state and outputs: still one output mask; reproducible, another key another mask.
    keep = dict(input_keep_prob=0.6, output_keep_prob=0.5, state_keep_prob=0.7)
    out = model.apply(params, XS, rng=rng, **keep)
    kept = np.asarray(out != 0)
    np.testing.assert_array_equal(kept, np.broadcast_to(kept[:1, :1], kept.shape))
    np.testing.assert_array_equal(out, model.apply(params, XS, rng=rng, **keep))
    chex.assert_trees_all_close(out, jax.jit(lambda p, x, r: model.apply(p, x, rng=r, **keep))(
        params, XS, rng), rtol=1e-5)
    assert not np.array_equal(out, model.apply(params, XS, rng=jax.random.key(6), **keep))
    per_step = model.apply(params, XS, False, rng=rng, **keep)  # the default: a mask per step
    assert not (np.asarray(per_step != 0) == np.asarray(per_step != 0)[:1, :1]).all()


def test_variational_dropout_needs_tfs_arguments_and_masks_drawn_before_the_loop():
    cell = sp.rnn.BasicRNNCell(4)
    with pytest.raises(ValueError, match="dtype must be provided"):
        sp.rnn.DropoutWrapper(cell, output_keep_prob=0.5, variational_recurrent=True)
    with pytest.raises(ValueError, match="input_size must be provided"):
        sp.rnn.DropoutWrapper(cell, input_keep_prob=0.5, variational_recurrent=True,
                              dtype=jnp.float32)

    def own_loop(x):
        wrapped = sp.rnn.DropoutWrapper(sp.rnn.BasicRNNCell(4), output_keep_prob=0.5,
                                        variational_recurrent=True, dtype=jnp.float32)
        return sp.scan(lambda h, x: wrapped(x, h), jnp.zeros((B, 4)), jnp.swapaxes(x, 0, 1))[1]

    with pytest.raises(ValueError, match=r"(?s)first called inside sp.scan.*fix: run the cell with "
                                         r"sp.rnn.dynamic_rnn"):
        sp.transform(own_loop).init(KEY, XS)


def test_state_dropout_of_a_gru_masks_every_state_entry_per_step_or_once_per_call():
    def fn(x, variational):
        cell = sp.rnn.DropoutWrapper(sp.rnn.GRUCell(6), state_keep_prob=0.5,
                                     variational_recurrent=variational, dtype=jnp.float32)
        return sp.rnn.dynamic_rnn(cell, x, dtype=jnp.float32)

    model = sp.transform(fn)
    params = model.init(KEY, XS, False)
    rng = jax.random.key(2)
    for variational in (False, True):
        outputs, state = model.apply(params, XS, variational, rng=rng)
        dropped = np.asarray(state) == 0  # the last step's new state, masked
        assert dropped.any() and not dropped.all()
        if variational:  # the same [1, 6] row for every batch entry
            np.testing.assert_array_equal(dropped, np.broadcast_to(dropped[:1], dropped.shape))


def test_a_cell_subclass_that_skips_the_base_init_gets_an_error_that_says_call_it():
    class MyCell(sp.rnn.RNNCell):
        def __init__(self, num_units):
            self._num_units = num_units

        def call(self, inputs, state):
            return inputs, state

    with pytest.raises(TypeError, match=r"MyCell.__init__ did not call the base class's"):
        sp.transform(lambda x: MyCell(3)(x, x)).init(jax.random.key(0), jnp.ones((2, 3)))


def _stack_of_lstms_with_state_dropout(api, rnn, f32, x, variational, visitor):
    """The final states of a MultiRNNCell of two LSTMs run with and without state dropout (the
    same weights), one step so that a memory ``c`` changes only if it is dropped itself."""
    inner = rnn.MultiRNNCell([rnn.BasicLSTMCell(4), rnn.BasicLSTMCell(4)])
    filtering = {} if visitor is None else {"dropout_state_filter_visitor": visitor(rnn)}
    cell = rnn.DropoutWrapper(inner, state_keep_prob=0.5, variational_recurrent=variational,
                              dtype=f32, **filtering)
    _, dropped = api.dynamic_rnn(cell, x, dtype=f32, scope="a")
    _, plain = api.dynamic_rnn(inner, x, dtype=f32, scope="a")
    return dropped, plain


def _every_part(rnn):
    return lambda substate: True


def _first_layer_h_only(rnn):
    def visit(substate):
        if isinstance(substate, rnn.LSTMStateTuple):
            return rnn.LSTMStateTuple(c=False, h=True)
        if isinstance(substate, tuple):  # the stack's (layer 0, layer 1)
            return (True, False)
        return True
    return visit


@pytest.mark.parametrize("variational", [False, True], ids=["per_step", "variational"])
def test_state_dropout_around_a_stack_of_lstms_follows_tfs_state_filter_at_every_level(variational):
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    x = XS[:, :1]

    def changed(dropped, plain):  # [[c changed, h changed] per layer]
        return [[not np.allclose(d.c, p.c), not np.allclose(d.h, p.h)] for d, p in zip(dropped, plain)]

    expected = {None: [[False, True], [False, True]],  # TF's default: every c kept, however deep
                _every_part: [[True, True], [True, True]],
                _first_layer_h_only: [[False, True], [False, False]]}
    for visitor, want in expected.items():
        with tf.Graph().as_default(), tf1.Session() as session:
            tf1.set_random_seed(0)
            states = _stack_of_lstms_with_state_dropout(tf1.nn, tf1.nn.rnn_cell, tf.float32,
                                                        tf.constant(x), variational, visitor)
            session.run(tf1.global_variables_initializer())
            assert changed(*session.run(states)) == want
        model = sp.transform(lambda x: _stack_of_lstms_with_state_dropout(
            sp.rnn, sp.rnn, jnp.float32, x, variational, visitor))
        params = model.init(KEY, x)
        assert changed(*model.apply(params, x, rng=jax.random.key(1))) == want
        assert changed(*jax.jit(model.apply)(params, x, rng=jax.random.key(1))) == want
    with pytest.raises(TypeError, match="dropout_state_filter_visitor must be callable"):
        sp.rnn.DropoutWrapper(sp.rnn.GRUCell(2), dropout_state_filter_visitor=True)


def residual_over_a_pair_of_inputs_and_outputs(api, rnn, f32, x):
    class Twice(rnn.RNNCell):
        def __init__(self, inner):
            super().__init__()
            self._inner = inner

        @property
        def state_size(self):
            return self._inner.state_size

        @property
        def output_size(self):
            return (4, 4)

        def call(self, inputs, state):
            a, b = inputs if isinstance(inputs, tuple) else (inputs, inputs)
            out, new = self._inner(a + b, state)
            return (out, -out), new

    if isinstance(x, tuple):  # the structure mismatch below: one input, two outputs
        return api.dynamic_rnn(rnn.ResidualWrapper(Twice(rnn.GRUCell(4))), x[0], dtype=f32)
    return api.dynamic_rnn(rnn.ResidualWrapper(Twice(rnn.GRUCell(4))),
                           (x[:, :, :4], x[:, :, 1:]), dtype=f32)


def test_residual_wrapper_adds_array_by_array_and_refuses_other_shapes_or_structures_as_tf_does():
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    _assert_matches_tf(residual_over_a_pair_of_inputs_and_outputs)  # (a + out, b - out)

    def narrow(api, rnn, f32, x):  # a [batch, 1] input onto a [batch, 4] output: no broadcasting
        return api.dynamic_rnn(rnn.ResidualWrapper(rnn.BasicRNNCell(4)), x[:, :, :1], dtype=f32)

    with tf.Graph().as_default():
        with pytest.raises(ValueError) as theirs:
            narrow(tf1.nn, tf1.nn.rnn_cell, tf.float32, tf1.placeholder(tf.float32, XS.shape))
    assert str(theirs.value) == "Shapes (3, 1) and (3, 4) are incompatible"
    with pytest.raises(ValueError, match=r"(?s)adds the cell's inputs \(shape \(3, 1\)\) to its "
                                         r"outputs \(shape \(3, 4\)\).*fix:") as ours:
        sp.transform(lambda x: narrow(sp.rnn, sp.rnn, jnp.float32, x)).init(KEY, XS)
    assert str(ours.value).startswith(str(theirs.value))

    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="don't have the same nested structure"):
            residual_over_a_pair_of_inputs_and_outputs(
                tf1.nn, tf1.nn.rnn_cell, tf.float32, (tf1.placeholder(tf.float32, (B, T, 4)),))
    with pytest.raises(ValueError, match="ResidualWrapper adds the cell's inputs to its outputs, "
                                         "but they differ in structure"):
        sp.transform(lambda x: residual_over_a_pair_of_inputs_and_outputs(
            sp.rnn, sp.rnn, jnp.float32, (x,))).init(KEY, XS[:, :, :4])


def a_length_past_the_time_axis_in_dynamic_rnn(api, rnn, f32, x):
    cell = rnn.GRUCell(2)
    past = api.dynamic_rnn(cell, x, sequence_length=[T + 2, 2, 4], dtype=f32, scope="a")
    whole = api.dynamic_rnn(cell, x, sequence_length=[T, 2, 4], dtype=f32, scope="a")
    return past, whole


def test_a_length_past_the_time_axis_is_tfs_error_in_bidirectional_rnns_and_whole_in_dynamic_rnn():
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    too_long = [T + 2, 2, 4]

    def bidirectional(api, rnn, f32, x, unstack):
        return api.bidirectional_dynamic_rnn(rnn.GRUCell(2), rnn.GRUCell(2), x,
                                             sequence_length=too_long, dtype=f32)

    def static_bidirectional(api, rnn, f32, x, unstack):
        return api.static_bidirectional_rnn(rnn.GRUCell(2), rnn.GRUCell(2), unstack(x, axis=1),
                                            sequence_length=too_long, dtype=f32)

    for program, tf_says in ((bidirectional, "seq_lens(0) > input.dims(1)"),
                             (static_bidirectional, "seq_lens(0) > input.dims(0)")):
        with tf.Graph().as_default(), tf1.Session() as session:
            outputs = program(tf1.nn, tf1.nn.rnn_cell, tf.float32, tf.constant(XS), tf.unstack)
            session.run(tf1.global_variables_initializer())
            with pytest.raises(tf.errors.InvalidArgumentError) as theirs:
                session.run(outputs)
        assert tf_says in theirs.value.message
        with pytest.raises(ValueError, match=r"(?s)sequence_length \[8, 2, 4\] has a length "
                                             r"outside \[0, 6\].*fix:") as ours:
            sp.transform(lambda x: program(sp.rnn, sp.rnn, jnp.float32, x, jnp.unstack)
                         ).init(KEY, XS)
        assert tf_says in str(ours.value)

    # Traced lengths cannot be checked: they are clamped to the time axis, never NaN.
    model = sp.transform(lambda x, lengths: sp.rnn.bidirectional_dynamic_rnn(
        sp.rnn.GRUCell(2), sp.rnn.GRUCell(2), x, sequence_length=lengths, dtype=jnp.float32))
    params = model.init(KEY, XS, np.array(LENGTHS))
    traced = jax.jit(model.apply)(params, XS, np.array(too_long))
    chex.assert_tree_all_finite(traced)
    chex.assert_trees_all_close(traced, model.apply(params, XS, np.array([T, 2, 4])), rtol=1e-5)

    # dynamic_rnn alone, as TF's, runs a too-long sequence whole.
    _assert_matches_tf(a_length_past_the_time_axis_in_dynamic_rnn)
    model = sp.transform(lambda x: a_length_past_the_time_axis_in_dynamic_rnn(
        sp.rnn, sp.rnn, jnp.float32, x))
    past, whole = model.apply(model.init(KEY, XS), XS)
    chex.assert_trees_all_equal(past, whole)


def pass_through_pairs_with_dropout(api, rnn, f32, x):
    class PassPair(rnn.RNNCell):  # its output is its (dropped) pair of inputs
        @property
        def state_size(self):
            return 1

        @property
        def output_size(self):
            return (D, D)

        def call(self, inputs, state):
            return inputs, state

    dropped_in, _ = api.dynamic_rnn(rnn.DropoutWrapper(PassPair(), input_keep_prob=0.5), (x, x),
                                    dtype=f32, scope="inputs")
    dropped_out, _ = api.dynamic_rnn(rnn.DropoutWrapper(PassPair(), output_keep_prob=0.5),
                                     (x, x), dtype=f32, scope="outputs")
    return dropped_in, dropped_out


def test_dropout_wrapper_drops_each_array_of_structured_inputs_and_outputs_with_its_own_mask():
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1

    def check(pairs):  # each array: kept entries scaled by 1 / 0.5, about half dropped, own mask
        for first, second in pairs:
            for a in (first, second):
                kept = np.asarray(a) != 0
                assert 0.3 < kept.mean() < 0.7
                np.testing.assert_allclose(np.asarray(a)[kept], (XS / 0.5)[kept], rtol=1e-6)
            assert (np.asarray(first) != 0).tolist() != (np.asarray(second) != 0).tolist()

    with tf.Graph().as_default(), tf1.Session() as session:
        tf1.set_random_seed(0)
        check(session.run(pass_through_pairs_with_dropout(tf1.nn, tf1.nn.rnn_cell, tf.float32,
                                                          tf.constant(XS))))
    model = sp.transform(lambda x: pass_through_pairs_with_dropout(sp.rnn, sp.rnn, jnp.float32, x))
    params = model.init(KEY, XS)
    check(model.apply(params, XS, rng=jax.random.key(4)))
    check(jax.jit(model.apply)(params, XS, rng=jax.random.key(4)))


# --- initial states checked against the cell, Keras names --------------------------------------------


def _tf_error(program):
    """The exception TF raises building ``program(api, rnn_cell, tf.float32, x)``."""
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        try:
            program(tf1.nn, tf1.nn.rnn_cell, tf.float32, tf1.placeholder(tf.float32, XS.shape),
                    lambda shape: tf1.zeros(shape))
        except (ValueError, TypeError) as error:
            return error
    return None


@pytest.mark.parametrize("program, message", [
    (lambda api, rnn, f32, x, zeros: api.dynamic_rnn(rnn.GRUCell(4), x, initial_state=zeros((B, 3))),
     r"sp\.rnn\.dynamic_rnn: initial_state does not fit GRUCell 'rnn/gru_cell': the state of "
     r"shape \(3, 3\) should be \(3, 4\) \(\[batch_size, state_size\]\)"),
    (lambda api, rnn, f32, x, zeros: api.dynamic_rnn(rnn.GRUCell(4), x, initial_state=zeros((2, 4))),
     r"the state of shape \(2, 4\) should be \(3, 4\)"),
    (lambda api, rnn, f32, x, zeros: api.dynamic_rnn(
        rnn.LSTMCell(4), x, initial_state=rnn.LSTMStateTuple(zeros((B, 5)), zeros((B, 4)))),
     r"LSTMCell 'rnn/lstm_cell': the state's \.c of shape \(3, 5\) should be \(3, 4\)"),
    (lambda api, rnn, f32, x, zeros: api.dynamic_rnn(
        rnn.MultiRNNCell([rnn.GRUCell(4), rnn.GRUCell(5)]), x,
        initial_state=(zeros((B, 4)), zeros((B, 4)))),
     r"MultiRNNCell 'rnn/multi_rnn_cell': the state's \[1\] of shape \(3, 4\) should be \(3, 5\)"),
    (lambda api, rnn, f32, x, zeros: api.dynamic_rnn(rnn.GRUCell(4), x,
                                                     initial_state=(zeros((B, 4)), zeros((B, 4)))),
     r"GRUCell 'rnn/gru_cell': the state should be one array of shape \(3, 4\), got 2 arrays "
     r"\(\(3, 4\), \(3, 4\)\)"),
    (lambda api, rnn, f32, x, zeros: api.static_rnn(rnn.GRUCell(4), [x[:, 0]] * 2,
                                                    initial_state=zeros((B, 3))),
     r"sp\.rnn\.static_rnn: initial_state does not fit GRUCell 'rnn/gru_cell'"),
])
def test_an_initial_state_that_does_not_fit_the_cell_is_a_value_error_naming_the_shapes(program,
                                                                                      message):
    # it was a raw dot_general or concatenate TypeError from inside the first step
    assert isinstance(_tf_error(program), ValueError)
    with pytest.raises(ValueError, match=rf"(?s){message}.*\n  fix: .*zero_state"):
        sp.transform(lambda x: program(sp.rnn, sp.rnn, jnp.float32, x, jnp.zeros)).init(KEY, XS)


def an_lstm_given_a_plain_tuple_state(api, rnn, f32, x):
    # TF's LSTMCell unpacks (c, h) from any pair; the final state has the cell's structure
    half = 0.5 * api_ones(api, (B, 4))
    return api.dynamic_rnn(rnn.LSTMCell(4), x, initial_state=(half, -half))


def test_an_lstm_takes_its_initial_state_as_a_plain_tuple_like_tf():
    _assert_matches_tf(an_lstm_given_a_plain_tuple_state)


def cells_with_keras_names(api, rnn, f32, x):
    # TF's cells resolve activation= and their initializers' names with Keras's getters
    outputs, _ = api.dynamic_rnn(rnn.GRUCell(4, activation="relu", bias_initializer="ones"), x,
                                 dtype=f32, scope="g")
    more, _ = api.dynamic_rnn(rnn.LSTMCell(3, activation="sigmoid"), outputs, dtype=f32,
                              scope="l")
    last, _ = api.dynamic_rnn(rnn.BasicRNNCell(2, activation="softsign"), more, dtype=f32,
                              scope="b")
    return outputs, more, last


def test_cells_take_keras_names_for_activations_and_initializers_like_tf():
    _assert_matches_tf(cells_with_keras_names)
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.nn.dynamic_rnn(tf.compat.v1.nn.rnn_cell.GRUCell(4, kernel_initializer="ones"),
                                    tf.constant(XS), dtype=tf.float32)
        session.run(tf.compat.v1.global_variables_initializer())
        theirs = {v.name[:-2]: session.run(v) for v in tf.compat.v1.global_variables()}
    ours = sp.flatten(sp.transform(lambda x: sp.rnn.dynamic_rnn(
        sp.rnn.GRUCell(4, kernel_initializer="ones"), x, dtype=jnp.float32)).init(KEY, XS))
    assert sorted(ours) == sorted(theirs)
    for name, value in ours.items():
        np.testing.assert_array_equal(value, theirs[name], err_msg=name)
    with pytest.raises(ValueError, match=r"(?s)GRUCell: unknown activation 'rleu'.*\n  fix: "):
        sp.rnn.GRUCell(4, activation="rleu")


# --- dtypes, things that are not cells, bad arguments ------------------------------------------------


def _init_error(fn, kind=Exception):
    with pytest.raises(kind) as caught:
        sp.transform(fn).init(KEY, XS)
    return str(caught.value)


@pytest.mark.parametrize("kwargs, found", [
    ({"initial_state": np.zeros((B, 4), np.int32)}, "int32"),
    ({"dtype": jnp.int32}, "int32"),
])
def test_a_non_floating_state_is_tfs_floating_point_value_error_with_the_cell_path(kwargs, found):
    # it was JAX's raw "scan body function carry input and carry output must have equal types"
    message = _init_error(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), x, **kwargs), ValueError)
    assert f"RNN cell only supports floating point inputs, but received dtype: {found}" in message
    assert "GRUCell 'rnn/gru_cell'" in message and "\n  fix: " in message


def test_integer_inputs_to_tfs_cells_are_tfs_floating_point_value_error():
    message = _init_error(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), x.astype(jnp.int32),
                                                       dtype=jnp.float32), ValueError)
    assert "RNN cell only supports floating point inputs, but received dtype: int32" in message
    assert "the inputs" in message and "\n  fix: " in message


def test_a_state_of_a_narrower_float_than_the_cell_computes_in_names_both_dtypes():
    message = _init_error(lambda x: sp.rnn.dynamic_rnn(
        sp.rnn.GRUCell(4), x, initial_state=jnp.zeros((B, 4), jnp.bfloat16)), ValueError)
    assert "GRUCell 'rnn/gru_cell'" in message and "bfloat16" in message and "float32" in message
    assert "\n  fix: " in message
    message = _init_error(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), x, dtype=jnp.bfloat16),
                          ValueError)
    assert "dtype=float32" in message
    # a wider state than the cell's parameters keeps its dtype through the loop: accepted, where
    # TF's concat of the inputs and the state refuses the two dtypes (a departure, in the README)
    for narrow in (jnp.bfloat16, jnp.float16):
        model = sp.transform(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), x.astype(narrow),
                                                          dtype=jnp.float32))
        params = model.init(KEY, XS)
        assert {p.dtype for p in jax.tree_util.tree_leaves(params)} == {jnp.dtype(narrow)}
        assert model.apply(params, XS)[1].dtype == jnp.float32
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default():
        with pytest.raises(TypeError, match="ConcatV2"):
            tf.compat.v1.nn.dynamic_rnn(tf.compat.v1.nn.rnn_cell.GRUCell(4),
                                        tf.compat.v1.placeholder(tf.bfloat16, XS.shape),
                                        dtype=tf.float32)


@pytest.mark.parametrize("run", [
    lambda cell, x: sp.rnn.dynamic_rnn(cell, x, dtype=jnp.float32),
    lambda cell, x: sp.rnn.dynamic_rnn(cell, x, initial_state=jnp.zeros((B, D))),
    lambda cell, x: sp.rnn.static_rnn(cell, list(jnp.unstack(x, axis=1)), dtype=jnp.float32),
], ids=["dynamic_rnn", "dynamic_rnn_with_initial_state", "static_rnn"])
def test_a_function_given_as_a_cell_is_tfs_not_an_rnncell_type_error(run):
    message = _init_error(lambda x: run(lambda a, s: (a, s), x), TypeError)
    assert ("The argument 'cell' (<function" in message and "is not an RNNCell: 'output_size' "
            "property is missing, 'state_size' property is missing, either 'zero_state' or "
            "'get_initial_state' method is required" in message)
    assert "\n  fix: " in message


def test_bidirectional_rnns_and_wrappers_refuse_what_is_not_a_cell_by_argument_name():
    message = _init_error(lambda x: sp.rnn.bidirectional_dynamic_rnn(
        sp.rnn.GRUCell(2), 3, x, dtype=jnp.float32), TypeError)
    assert "The argument 'cell_bw' (3) is not an RNNCell" in message and "is not callable" in message
    message = _init_error(lambda x: sp.rnn.static_bidirectional_rnn(
        3, sp.rnn.GRUCell(2), list(jnp.unstack(x, axis=1)), dtype=jnp.float32), TypeError)
    assert "The argument 'cell_fw' (3) is not an RNNCell" in message
    for wrapper in (sp.rnn.DropoutWrapper, sp.rnn.ResidualWrapper):
        with pytest.raises(TypeError, match=r"(?s)The argument 'cell' \(3\) is not an RNNCell.*fix: "):
            wrapper(3)
    with pytest.raises(TypeError, match=r"(?s)the class GRUCell, not an RNNCell instance.*fix: .*GRUCell\("):
        sp.transform(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell, x, dtype=jnp.float32)).init(KEY, XS)


def test_multi_rnn_cell_needs_a_list_of_cells_as_tf_does():
    with pytest.raises(TypeError, match=r"(?s)cells must be a list or tuple, but received: "
                                        r"<.*GRUCell.*fix: .*MultiRNNCell\(\[cell\]\)"):
        sp.rnn.MultiRNNCell(sp.rnn.GRUCell(4))
    with pytest.raises(TypeError, match=r"The argument 'cells\[1\]' \(3\) is not an RNNCell"):
        sp.rnn.MultiRNNCell([sp.rnn.GRUCell(4), 3])


def test_bad_num_units_keep_probs_and_lengths_are_errors_naming_the_argument():
    for cell in (sp.rnn.GRUCell, sp.rnn.LSTMCell, sp.rnn.BasicRNNCell, sp.rnn.BasicLSTMCell):
        with pytest.raises(ValueError, match=r"(?s)num_units must be >= 0, got -1.*Dimension -1 "
                                             r"must be >= 0.*fix: "):
            cell(-1)
        with pytest.raises(TypeError, match=r"(?s)num_units must be an int, got 2.5.*fix: "):
            cell(2.5)
    with pytest.raises(TypeError, match=r"(?s)input_keep_prob must be a number .* got '0.5'.*fix: "):
        sp.rnn.DropoutWrapper(sp.rnn.GRUCell(4), input_keep_prob="0.5")
    message = _init_error(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), x, sequence_length="ab",
                                                       dtype=jnp.float32), TypeError)
    assert "sequence_length must be integer lengths, one per batch entry, got 'ab'" in message
    assert "\n  fix: " in message
    message = _init_error(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(2), x, sequence_length=[1, 2],
                                                       dtype=jnp.float32), ValueError)
    assert "\n  fix: " in message


def test_input_errors_name_the_api_called_and_say_the_fix():
    message = _init_error(lambda x: sp.rnn.bidirectional_dynamic_rnn(
        sp.rnn.GRUCell(2), sp.rnn.GRUCell(2), x[0], dtype=jnp.float32), ValueError)
    assert "sp.rnn.bidirectional_dynamic_rnn's inputs must be [batch, time, depth" in message
    assert "dynamic_rnn's inputs" not in message.replace("bidirectional_dynamic_rnn's", "")
    assert "\n  fix: " in message
    message = _init_error(lambda x: sp.rnn.static_bidirectional_rnn(
        sp.rnn.GRUCell(2), sp.rnn.GRUCell(2), x, dtype=jnp.float32), TypeError)
    assert "static_bidirectional_rnn's inputs must be a non-empty list" in message
    assert "\n  fix: " in message


# --- TF's plain RNNCells forget their default name; initial states; TF's other arguments ------------


def plain_cells_called_directly(api, rnn, f32, x):
    """TF's plain RNNCells (MultiRNNCell, a user's RNNCell subclass) enter the current scope by
    object at their first call, and that jump's exit forgets the default name the call took: a
    second one called in the same scope gets the same scope (shared under AUTO_REUSE). TF's layer
    cells (GRUCell, LSTMCell, ...) are numbered."""
    tf = getattr(api, "tf", None)
    tf1 = None if tf is None else tf.compat.v1
    get = sp.get_param if tf is None else tf1.get_variable
    matmul = jnp.matmul if tf is None else tf.matmul

    def scope(name, **kwargs):
        return sp.scope(name, **kwargs) if tf is None else tf1.variable_scope(name, **kwargs)

    auto = sp.AUTO_REUSE if tf is None else tf1.AUTO_REUSE

    class Projected(rnn.RNNCell):
        def __init__(self, n):
            super().__init__()
            self._n = n

        @property
        def state_size(self):
            return self._n

        @property
        def output_size(self):
            return self._n

        def call(self, inputs, state):
            h = matmul(inputs, get(f"w{self._n}", [D, self._n])) + state
            return h, h

    steps = api_unstack(api, x)
    outs = []
    lstm_stack, gru_stack = rnn.MultiRNNCell([rnn.BasicLSTMCell(2)]), rnn.MultiRNNCell([rnn.GRUCell(3)])
    for cell in (lstm_stack, gru_stack):  # multi_rnn_cell/cell_0/basic_lstm_cell, .../gru_cell
        outs.append(cell(steps[0], cell.zero_state(B, f32))[0])
    with scope("o"):  # a later call elsewhere: the same weights
        outs.append(gru_stack(steps[1], gru_stack.zero_state(B, f32))[0])
    for n in (2, 4):  # projected/w2, projected/w4
        outs.append(Projected(n)(steps[0], api_ones(api, (B, n)))[0])
    outs.append(Projected(3)(steps[0], api_ones(api, (B, 3)), scope="p")[0])  # p/w3
    outs.append(Projected(5)(steps[0], api_ones(api, (B, 5)))[0])  # projected/w5
    with scope("s", reuse=auto):  # both s/multi_rnn_cell: one set of weights
        for _ in range(2):
            cell = rnn.MultiRNNCell([rnn.GRUCell(3)])
            outs.append(cell(steps[2], cell.zero_state(B, f32))[0])
    with scope("g"):  # layer cells: g/gru_cell, g/gru_cell_1
        for _ in range(2):
            outs.append(rnn.GRUCell(2)(steps[0], api_ones(api, (B, 2)))[0])
    with scope("d"):  # the default name stays free: d/projected/v beside d/projected/w2
        outs.append(Projected(2)(steps[0], api_ones(api, (B, 2)))[0])
        with scope(None, default_name="projected"):
            outs.append(get("v", [B, 2]))
    return outs


def test_plain_cells_called_directly_forget_their_default_name_as_tfs_rnncell_does():
    values, _ = _tf_run(plain_cells_called_directly)
    assert sorted({k.rsplit("/", 1)[0] for k in values}) == [
        "d/projected", "g/gru_cell/candidate", "g/gru_cell/gates", "g/gru_cell_1/candidate",
        "g/gru_cell_1/gates", "multi_rnn_cell/cell_0/basic_lstm_cell",
        "multi_rnn_cell/cell_0/gru_cell/candidate", "multi_rnn_cell/cell_0/gru_cell/gates", "p",
        "projected", "s/multi_rnn_cell/cell_0/gru_cell/candidate",
        "s/multi_rnn_cell/cell_0/gru_cell/gates"]
    _assert_matches_tf(plain_cells_called_directly)


def test_two_alike_stacks_called_directly_in_one_scope_are_tfs_already_exists_error():
    # TF names both multi_rnn_cell/...: without reuse, the second one's weights already exist
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1

    def program(rnn, f32, x):
        for _ in range(2):
            cell = rnn.MultiRNNCell([rnn.GRUCell(3)])
            cell(x[:, 0], cell.zero_state(B, f32))

    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="Variable multi_rnn_cell/cell_0/gru_cell/gates/kernel "
                                             "already exists") as theirs:
            program(tf1.nn.rnn_cell, tf.float32, tf1.placeholder(tf.float32, XS.shape))
    with pytest.raises(sp.ParamExistsError) as ours:
        sp.transform(lambda x: program(sp.rnn, jnp.float32, x)).init(KEY, XS)
    assert str(ours.value).split(" Did you mean")[0] == str(theirs.value).split(" Did you mean")[0]


def learned_initial_states(api, rnn, f32, x):
    """A cell whose get_initial_state makes a learned state (TF's drivers call it, under their
    scope: rnn/h0), and a duck-typed cell with get_initial_state and no zero_state."""
    tf = getattr(api, "tf", None)
    get = sp.get_param if tf is None else tf.compat.v1.get_variable
    tile = jnp.tile if tf is None else tf.tile
    matmul = jnp.matmul if tf is None else tf.matmul
    tanh = jnp.tanh if tf is None else tf.tanh

    class LearnedStart(rnn.RNNCell):
        def __init__(self, n):
            super().__init__()
            self._gru = rnn.GRUCell(n)

        @property
        def state_size(self):
            return self._gru.state_size

        @property
        def output_size(self):
            return self._gru.output_size

        def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
            return tile(get("h0", [1, self.state_size], dtype=dtype), [batch_size, 1])

        def call(self, inputs, state):
            return self._gru(inputs, state)

    class Duck:
        state_size = output_size = 2

        def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
            return tile(get("h0", [1, 2], dtype=dtype), [batch_size, 1])

        def __call__(self, inputs, state, scope=None):
            h = tanh(matmul(inputs, get("w", [D, 2])) + state)
            return h, h

    outs = [api.dynamic_rnn(LearnedStart(3), x, dtype=f32),  # rnn/h0, rnn/learned_start/gru_cell
            api.dynamic_rnn(Duck(), x, dtype=f32, scope="duck")]
    outs.append(api.static_rnn(LearnedStart(2), api_unstack(api, x), dtype=f32, scope="static"))
    outs.append(api.bidirectional_dynamic_rnn(LearnedStart(2), Duck(), x, dtype=f32,
                                              sequence_length=LENGTHS))
    return outs


def test_drivers_take_the_initial_state_from_the_cells_get_initial_state_as_tf_does():
    values, _ = _tf_run(learned_initial_states)
    assert {"rnn/h0", "duck/h0", "static/h0", "bidirectional_rnn/fw/h0",
            "bidirectional_rnn/bw/h0"} <= set(values)
    _assert_matches_tf(learned_initial_states)


def test_rnncell_get_initial_state_hands_over_to_zero_state_and_checks_its_arguments_like_tf():
    cell = sp.rnn.LSTMCell(3)
    state = cell.get_initial_state(batch_size=2, dtype=jnp.float16)
    assert isinstance(state, sp.rnn.LSTMStateTuple) and state.c.shape == (2, 3)
    assert state.h.dtype == jnp.float16 and not np.asarray(state.h).any()
    state = cell.get_initial_state(inputs=jnp.ones((4, 5), jnp.bfloat16))  # the inputs' batch and dtype
    assert state.c.shape == (4, 3) and state.c.dtype == jnp.bfloat16
    wrapped = sp.rnn.DropoutWrapper(sp.rnn.GRUCell(2))  # TF's wrappers: their own zero_state
    assert wrapped.get_initial_state(batch_size=1, dtype=jnp.float32).shape == (1, 2)
    with pytest.raises(ValueError, match=r"(?s)batch size from input tensor is different from the "
                                         r"input param. Input tensor batch: 4, batch_size: 3.*fix: "):
        cell.get_initial_state(inputs=jnp.ones((4, 5)), batch_size=3)
    with pytest.raises(ValueError, match=r"(?s)dtype from input tensor is different from the input "
                                         r"param. Input tensor dtype: float32, dtype: float16.*fix: "):
        cell.get_initial_state(inputs=jnp.ones((4, 5)), dtype=jnp.float16)
    with pytest.raises(ValueError, match=r"(?s)batch_size and dtype cannot be None while "
                                         r"constructing initial state: batch_size=None, "
                                         r"dtype=float32.*fix: "):
        cell.get_initial_state(dtype=jnp.float32)


def lstm_with_tfs_arguments_by_position(api, rnn, f32, x):
    # TF's order: num_units, use_peepholes, cell_clip, initializer, num_proj, proj_clip,
    # num_unit_shards, num_proj_shards, forget_bias, state_is_tuple
    return api.dynamic_rnn(rnn.LSTMCell(4, True, 0.5, None, 2, 0.3, None, None, 0.7, False), x,
                           dtype=f32)


def sharded_lstm(api, rnn, f32, x):
    return api.dynamic_rnn(rnn.LSTMCell(4, num_proj=2, num_unit_shards=2, num_proj_shards=3), x,
                           dtype=f32)


@pytest.mark.filterwarnings("ignore:The initializer GlorotUniform is unseeded:UserWarning")  # TF's parts
def test_lstm_cell_takes_tfs_shard_arguments_in_tfs_positions_as_partitioners(tmp_path):
    _assert_matches_tf(lstm_with_tfs_arguments_by_position)
    # TF splits the kernels in parts (kernel/part_0, ...), saved under the whole name; here each is
    # one array with TF's fixed_size_partitioner, and a TF checkpoint of it loads by name
    values, theirs = _tf_run(sharded_lstm, save_to=tmp_path / "model.ckpt")
    assert "rnn/lstm_cell/kernel/part_1" in values and "rnn/lstm_cell/projection/kernel/part_2" in values
    params = sp.checkpoint.load_tf1(tmp_path / "model.ckpt")
    model = sp.transform(lambda x: sharded_lstm(sp.rnn, sp.rnn, jnp.float32, x))
    assert sorted(sp.flatten(params)) == sorted(sp.flatten(model.init(KEY, XS))) == [
        "rnn/lstm_cell/bias", "rnn/lstm_cell/kernel", "rnn/lstm_cell/projection/kernel"]
    for a, b in zip(jax.tree_util.tree_leaves(model.apply(params, XS)),
                    jax.tree_util.tree_leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    specs = sp.flatten(model.specs(XS))
    assert specs["rnn/lstm_cell/kernel"].partitioner.partitions((7, 16), np.float32) == [2, 1]
    assert specs["rnn/lstm_cell/projection/kernel"].partitioner.partitions((4, 2), np.float32) == [3, 1]
    assert specs["rnn/lstm_cell/bias"].partitioner is None


@pytest.mark.parametrize("kwargs, kind, message", [
    ({"num_proj": 0}, ValueError, r"LSTMCell: num_proj must be at least 1, got 0"),
    ({"num_proj": -1}, ValueError, r"LSTMCell: num_proj must be at least 1, got -1"),
    ({"num_proj": 2.5}, TypeError, r"LSTMCell: num_proj must be an int or None, got 2.5"),
    ({"num_unit_shards": 0}, ValueError, r"LSTMCell: num_unit_shards must be at least 1, got 0"),
    ({"num_proj_shards": 2.0}, TypeError, r"LSTMCell: num_proj_shards must be an int or None"),
])
def test_lstm_cell_refuses_a_projection_or_shards_of_no_units_as_tf_does(kwargs, kind, message):
    # num_proj=0 was a kernel of another depth than TF's and then JAX's raw scan carry error
    with pytest.raises(kind, match=rf"(?s){message}.*\n  fix: "):
        sp.rnn.LSTMCell(3, **kwargs)
    assert sp.rnn.LSTMCell(3, num_proj=np.int64(2)).output_size == 2  # TF takes NumPy ints


def test_an_empty_list_of_steps_is_tfs_must_not_be_empty_value_error():
    for run in (lambda: sp.rnn.static_rnn(sp.rnn.GRUCell(2), [], dtype=jnp.float32),
                lambda: sp.rnn.static_bidirectional_rnn(sp.rnn.GRUCell(2), sp.rnn.GRUCell(2), [],
                                                        dtype=jnp.float32)):
        message = _init_error(lambda x: run(), ValueError)
        assert "Argument `inputs` must not be empty." in message and "\n  fix: " in message


def test_an_lstm_state_tuple_of_two_dtypes_has_no_dtype_as_in_tf():
    state = sp.rnn.LSTMStateTuple(jnp.zeros((2, 2), jnp.float32), jnp.zeros((2, 2), jnp.float16))
    with pytest.raises(TypeError, match=r"(?s)Inconsistent dtypes for internal state: float32 vs "
                                        r"float16.*\n  fix: "):
        state.dtype
    assert sp.rnn.LSTMStateTuple(jnp.zeros(2), jnp.ones(2)).dtype == jnp.float32


def test_a_concatenated_stack_takes_cells_with_numpy_integer_state_sizes():
    class NumpySized(sp.rnn.RNNCell):
        state_size = property(lambda self: np.int64(2))
        output_size = property(lambda self: np.int64(2))

        def call(self, inputs, state):
            h = inputs @ sp.get_param("w", [inputs.shape[-1], 2]) + state
            return h, h

    stack = sp.rnn.MultiRNNCell([NumpySized(), sp.rnn.GRUCell(3)], state_is_tuple=False)
    model = sp.transform(lambda x: sp.rnn.dynamic_rnn(stack, x, dtype=jnp.float32))
    _, state = model.apply(model.init(KEY, XS), XS)
    assert state.shape == (B, 5)


def device_wrapped_cells(api, rnn, f32, x):
    stack = rnn.MultiRNNCell([rnn.DeviceWrapper(rnn.GRUCell(3), "/cpu:0"),
                              rnn.DeviceWrapper(rnn.BasicLSTMCell(2), "/device:CPU:0")])
    return api.dynamic_rnn(stack, x, sequence_length=LENGTHS, dtype=f32)


def test_device_wrapper_passes_through_to_its_cell_and_ignores_the_device():
    _assert_matches_tf(device_wrapped_cells)
    wrapped = sp.rnn.DeviceWrapper(sp.rnn.BasicLSTMCell(2), "/gpu:0")
    assert wrapped.state_size == (2, 2) and wrapped.output_size == 2
    assert wrapped.zero_state(3, jnp.float32).h.shape == (3, 2)
    with pytest.raises(TypeError, match=r"(?s)The argument 'cell' \(3\) is not an RNNCell.*fix: "):
        sp.rnn.DeviceWrapper(3, "/cpu:0")


def test_a_users_cell_called_outside_a_transform_is_named_by_its_own_class():
    class Custom(sp.rnn.RNNCell):
        state_size = output_size = property(lambda self: 2)

        def call(self, inputs, state):
            return state, state

    with pytest.raises(sp.NotInTransformError) as caught:
        Custom()(jnp.ones((1, 2)), jnp.ones((1, 2)))
    assert str(caught.value).startswith("Custom() was called outside")
    assert "sp.rnn.Custom" not in str(caught.value)
    with pytest.raises(sp.NotInTransformError, match=r"sp\.rnn\.GRUCell\(\) was called outside"):
        sp.rnn.GRUCell(2)(jnp.ones((1, 2)), jnp.ones((1, 2)))


class _OtherDtype:
    state_size = output_size = 2

    def zero_state(self, batch_size, dtype):
        return jnp.zeros((batch_size, 2), dtype)

    def __call__(self, inputs, state, scope=None):
        h = jnp.tanh(inputs @ sp.get_param("w", [D, 2]) + state).astype(jnp.float16)
        return h, h


class _OtherStructure(_OtherDtype):
    def __call__(self, inputs, state, scope=None):
        h = jnp.tanh(inputs @ sp.get_param("w", [D, 2]) + state)
        return h, (h, h)


class _OtherShape(_OtherDtype):
    def __call__(self, inputs, state, scope=None):
        h = jnp.tanh(inputs @ sp.get_param("w", [D, 3]))
        return h, h


@pytest.mark.parametrize("cell, lengths, kind, found", [
    (_OtherDtype, None, TypeError, r"the state is float32\[3, 2\] going in and float16\[3, 2\] "
                                   r"coming out"),
    (_OtherStructure, None, ValueError, r"the state is float32\[3, 2\] going in and "
                                        r"\(float32\[3, 2\], float32\[3, 2\]\) coming out"),
    (_OtherStructure, LENGTHS, ValueError, r"\(float32\[3, 2\], float32\[3, 2\]\) coming out"),
    (_OtherShape, None, ValueError, r"float32\[3, 2\] going in and float32\[3, 3\] coming out"),
    (_OtherShape, LENGTHS, ValueError, r"float32\[3, 2\] going in and float32\[3, 3\] coming out"),
])
def test_a_cell_returning_another_state_than_it_got_names_the_cell_and_both_states(cell, lengths,
                                                                                 kind, found):
    # it was JAX's raw "scan body function carry input and carry output must have equal types"
    # (TF: "Loop var ... enters the loop with type float32 but has type float16", a TypeError, or
    # its ValueError on the structure or shape)
    message = _init_error(lambda x: sp.rnn.dynamic_rnn(cell(), x, sequence_length=lengths,
                                                       dtype=jnp.float32), kind)
    assert f"sp.rnn.dynamic_rnn: the cell {cell.__qualname__} returned another state than it " \
           "was given" in message
    assert re.search(found, message), message
    assert "\n  fix: return the new state with the structure, shapes and dtypes" in message


@pytest.mark.parametrize("keep", [np.float32(1.0), np.float64(1.0), np.asarray(1.0), jnp.asarray(1.0)])
def test_dropout_wrapper_reads_a_known_keep_probability_of_any_scalar_type_as_a_number(keep):
    # TF reads the keep probability's constant value: 1.0 of a NumPy or JAX scalar drops nothing (no
    # key needed) and a value outside [0, 1] is refused when the wrapper is made.
    def fn(x, wrapped):
        cell = sp.rnn.GRUCell(4)
        if wrapped:
            cell = sp.rnn.DropoutWrapper(cell, input_keep_prob=keep, output_keep_prob=keep,
                                         state_keep_prob=keep)
        return sp.rnn.dynamic_rnn(cell, x, dtype=jnp.float32)

    model = sp.transform(fn)
    params = model.init(KEY, XS, True)
    chex.assert_trees_all_equal(model.apply(params, XS, True), model.apply(params, XS, False))
    for bad in (np.float32(1.5), np.asarray(-0.5), jnp.asarray(1.5)):
        with pytest.raises(ValueError, match="Parameter output_keep_prob must be between 0 and 1"):
            sp.rnn.DropoutWrapper(sp.rnn.GRUCell(4), output_keep_prob=bad)


def test_dropout_wrapper_with_a_traced_keep_probability_drops_with_it():
    def fn(x, keep):
        cell = sp.rnn.DropoutWrapper(sp.rnn.GRUCell(4), output_keep_prob=keep)
        return sp.rnn.dynamic_rnn(cell, x, dtype=jnp.float32)[0]

    model = sp.transform(fn)
    params = model.init(KEY, XS, 0.5)
    run = jax.jit(lambda p, x, keep: model.apply(p, x, keep, rng=jax.random.key(1)))
    plain = sp.transform(lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), x, dtype=jnp.float32)[0])
    ratio = np.asarray(run(params, XS, 0.5)) / np.asarray(plain.apply(params, XS))
    assert set(np.round(ratio.ravel(), 4)) <= {0.0, 2.0} and 0.0 in ratio and 2.0 in np.round(ratio, 4)


def test_wrappers_expose_the_wrapped_cell_as_tfs_do():
    gru = sp.rnn.GRUCell(3)
    dropout = sp.rnn.DropoutWrapper(gru)
    assert dropout.cell is gru and dropout.wrapped_cell is gru
    assert sp.rnn.ResidualWrapper(gru).cell is gru
    assert sp.rnn.DeviceWrapper(gru, "/cpu:0").cell is gru


def test_a_cell_called_on_one_example_without_its_batch_axis_is_told_about_its_inputs_not_its_state():
    def fn(x):
        cell = sp.rnn.GRUCell(3)
        return cell(x, cell.zero_state(1, jnp.float32))

    with pytest.raises(ValueError, match=re.escape(
            "an RNN cell's inputs must be [batch, depth] with a known depth, got shape (4,)")):
        sp.transform(fn).init(KEY, jnp.ones((4,)))


@pytest.mark.parametrize("inputs", [{"a": XS, "b": XS[..., :2]}, (XS, XS[..., :2])],
                         ids=["dict", "tuple"])
def test_a_built_in_cell_given_a_structure_of_inputs_says_it_takes_one_array(inputs):
    for run in (lambda: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(3), inputs, dtype=jnp.float32),
                lambda: sp.rnn.bidirectional_dynamic_rnn(sp.rnn.GRUCell(3), sp.rnn.GRUCell(3), inputs,
                                                         dtype=jnp.float32)):
        with pytest.raises(ValueError) as info:
            sp.transform(run).init(KEY)
        assert str(info.value).startswith(
            f"sp.rnn.GRUCell expects one input array [batch, depth] at each step, got a "
            f"{type(inputs).__name__} of 2 arrays.\n  fix: concatenate them along the last axis"), info.value


def test_a_custom_cell_making_its_weights_in_build_with_add_variable_gets_tfs_names():
    # TF 1.x: dynamic_rnn(TFMinimalCell(), ...) makes rnn/tf_minimal_cell/kernel [8, 3] and
    # rnn/tf_minimal_cell/bias [3], build(inputs_shape) adding them, call() reading them
    class MinimalCell(sp.rnn.RNNCell):
        @property
        def state_size(self):
            return 3

        @property
        def output_size(self):
            return 3

        def build(self, inputs_shape):
            self.kernel = self.add_variable("kernel", [inputs_shape[-1].value + 3, 3])
            self.bias = self.add_weight("bias", [3], initializer="zeros")
            self.built = True

        def call(self, inputs, state):
            h = jnp.tanh(jnp.concatenate([inputs, state], 1) @ self.kernel + self.bias)
            return h, h

    model = sp.transform(lambda x: sp.rnn.dynamic_rnn(MinimalCell(), x, dtype=x.dtype)[0])
    x = jnp.ones((2, 4, 5))
    params = model.init(jax.random.key(0), x)
    assert {k: v.shape for k, v in sp.flatten(params).items()} == {
        "rnn/minimal_cell/kernel": (8, 3), "rnn/minimal_cell/bias": (3,)}
    kernel, bias = params["rnn"]["minimal_cell"]["kernel"], params["rnn"]["minimal_cell"]["bias"]
    h, outs = jnp.zeros((2, 3)), []
    for t in range(4):
        h = jnp.tanh(jnp.concatenate([x[:, t], h], 1) @ kernel + bias)
        outs.append(h)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), jnp.stack(outs, 1), rtol=1e-6)
    # the weights take the inputs' dtype, as a TF layer's
    half = model.init(jax.random.key(0), x.astype(jnp.float16))
    assert half["rnn"]["minimal_cell"]["kernel"].dtype == jnp.float16


def test_what_a_cells_build_stores_is_each_calls_own_in_threads_and_not_left_on_the_cell():
    import threading

    class Cell(sp.rnn.RNNCell):
        state_size = output_size = 4

        def build(self, inputs_shape):
            self.kernel = self.add_variable("kernel", [inputs_shape[-1].value + 4, 4])

        def call(self, inputs, state):
            import time
            time.sleep(0.02)  # the threads' traces overlap
            h = jnp.tanh(jnp.concatenate([inputs, state], -1) @ self.kernel)
            return h, h

    cell, x, h0 = Cell(), jnp.ones((2, 3)), jnp.zeros((2, 4))
    model = sp.transform(lambda x: cell(x, h0)[0])
    params = model.init(jax.random.key(0), x)
    want = np.asarray(model.apply(params, x))
    results, errors = [], []

    def work(i):
        try:
            results.append(np.asarray(jax.jit(lambda p, x: model.apply(p, x) * (i + 1))(params, x))
                           / (i + 1))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in results:
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(sp.NotInTransformError, match="read outside init/apply"):
        cell.kernel
    # inputs may be a tuple: build gets their shapes

    class TupleCell(Cell):
        def build(self, inputs_shape):
            self.kernel = self.add_variable("kernel", [inputs_shape[0][-1].value + 4, 4])

        def call(self, inputs, state):
            return super().call(inputs[0] + inputs[1], state)

    tuple_model = sp.transform(lambda x: TupleCell()((x, x), h0)[0])
    assert sp.flatten(tuple_model.init(jax.random.key(0), x))["tuple_cell/kernel"].shape == (7, 4)


def test_a_cell_property_failing_inside_names_what_it_missed():
    class PropCell(sp.rnn.RNNCell):
        @property
        def state_size(self):
            return self._n  # never set

    with pytest.raises(AttributeError, match="no attribute '_n'"):
        PropCell().state_size


def test_records_in_a_cells_call_are_named_in_the_cells_name_scope_as_tfs_op_names():
    # TF 1.x runs a cell's call in the name scope its first call opened (a plain cell's call also
    # re-enters the current variable scope, one name scope more): tf.identity(..., name=...) in
    # this program is named as below. Our cells opened no name scope ('act', 'act_1', 'cell_0/act',
    # 'dec/alignments', ...).
    tf_op_names = ["dec/dec/attn_cell/alignments", "gru_cell/act", "gru_cell/act_1",
                   "multi_rnn_cell/cell_0/basic_rnn_cell/act",
                   "multi_rnn_cell/cell_1/basic_rnn_cell/act", "rnn/basic_rnn_cell/act",
                   "rnn/basic_rnn_cell/act_1"]

    class AttnCell(sp.rnn.RNNCell):  # a user's plain cell, a decoder step
        state_size = output_size = 3

        def call(self, x, h):
            w = sp.get_param("w", [x.shape[-1] + 3, 3])
            y = jnp.tanh(jnp.concatenate([x, h], -1) @ w)
            sp.record("alignments", y)
            return y, y

    def act(v):
        sp.record("act", v)
        return v

    def program(x):
        xs, z = [x[:, i] for i in range(x.shape[1])], jnp.zeros([2, 3])
        gru = sp.rnn.GRUCell(3, activation=act)
        gru(xs[0], z)
        gru(xs[1], z)
        sp.rnn.MultiRNNCell([sp.rnn.BasicRNNCell(3, activation=act),
                             sp.rnn.BasicRNNCell(3, activation=act)])(xs[0], (z, z))
        sp.rnn.static_rnn(sp.rnn.BasicRNNCell(3, activation=act), xs[:2], dtype=jnp.float32)
        with sp.scope("dec"):
            AttnCell()(xs[0], z)

    model, x = sp.transform(program), jnp.ones((2, 3, 4))
    _, records = model.apply_with_intermediates(model.init(jax.random.key(0), x), x)
    assert sorted(records) == tf_op_names
