"""A cell called directly (``cell(inputs, state)``, TF's way inside a custom loop) with a state that
does not fit it: the error names the cell, the state it should get, the one it got and the fix, as
``dynamic_rnn`` does for its ``initial_state`` (not JAX's concatenate or dot_general error)."""

import jax
import jax.numpy as jnp
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
X = jnp.ones((2, 3))


class Plain(sp.rnn.RNNCell):
    """A user's cell with the default ``zero_state`` (``state_size`` ints)."""

    def __init__(self, n):
        super().__init__()
        self._num_units = n

    def call(self, inputs, state):
        kernel = sp.get_param("kernel", [inputs.shape[-1] + self._num_units, self._num_units])
        h = jnp.tanh(jnp.concatenate([inputs, state], axis=1) @ kernel)
        return h, h


def _init(f, x=X):
    return sp.transform(f).init(KEY, x)


@pytest.mark.parametrize("make_cell, state, message", [
    (lambda: sp.rnn.LSTMCell(8), jnp.zeros((2, 8)),
     r"sp\.rnn\.LSTMCell: the state given to LSTMCell 'lstm_cell' does not fit it: the state should "
     r"be LSTMStateTuple\(c=\(2, 8\), h=\(2, 8\)\), got one array of shape \(2, 8\)"),
    (lambda: sp.rnn.GRUCell(8), jnp.zeros((2, 6)),
     r"sp\.rnn\.GRUCell: the state given to GRUCell 'gru_cell' does not fit it: the state of shape "
     r"\(2, 6\) should be \(2, 8\)"),
    (lambda: sp.rnn.BasicRNNCell(8), jnp.zeros((3, 8)),
     r"BasicRNNCell 'basic_rnn_cell' .*the state of shape \(3, 8\) should be \(2, 8\)"),
    (lambda: sp.rnn.BasicRNNCell(8), jnp.zeros((2, 1, 8)),
     r"the state of shape \(2, 1, 8\) should be \(2, 8\)"),
    (lambda: sp.rnn.LSTMCell(4, num_proj=3), sp.rnn.LSTMStateTuple(jnp.zeros((2, 4)), jnp.zeros((2, 4))),
     r"LSTMCell 'lstm_cell' .*the state's \.h of shape \(2, 4\) should be \(2, 3\)"),
    (lambda: sp.rnn.LSTMCell(4, state_is_tuple=False), jnp.zeros((2, 6)),
     r"LSTMCell 'lstm_cell' .*the state of shape \(2, 6\) should be \(2, 8\)"),
    (lambda: sp.rnn.BasicLSTMCell(4, state_is_tuple=False), (jnp.zeros((2, 4)), jnp.zeros((2, 4))),
     r"BasicLSTMCell 'basic_lstm_cell' .*the state should be one array of shape \(2, 8\), got 2 "
     r"arrays \(\(2, 4\), \(2, 4\)\)"),
    (lambda: sp.rnn.MultiRNNCell([sp.rnn.GRUCell(4), sp.rnn.GRUCell(4)]), (jnp.zeros((2, 4)),),
     r"sp\.rnn\.MultiRNNCell: the state given to MultiRNNCell 'multi_rnn_cell' does not fit it: the "
     r"state should be \(\(2, 4\), \(2, 4\)\), got 1 array \(\(2, 4\)\)"),
    (lambda: sp.rnn.MultiRNNCell([sp.rnn.GRUCell(4), sp.rnn.GRUCell(5)]),
     (jnp.zeros((2, 4)), jnp.zeros((2, 4))),
     r"MultiRNNCell 'multi_rnn_cell' .*the state's \[1\] of shape \(2, 4\) should be \(2, 5\)"),
    (lambda: sp.rnn.MultiRNNCell([sp.rnn.GRUCell(4)] * 2, state_is_tuple=False), jnp.zeros((2, 4)),
     r"MultiRNNCell 'multi_rnn_cell' .*the state of shape \(2, 4\) should be \(2, 8\)"),
    (lambda: sp.rnn.DropoutWrapper(sp.rnn.GRUCell(8), output_keep_prob=1.0), jnp.zeros((2, 6)),
     r"GRUCell 'gru_cell' .*the state of shape \(2, 6\) should be \(2, 8\)"),
    (lambda: sp.rnn.ResidualWrapper(sp.rnn.BasicRNNCell(3)), jnp.zeros((2, 5)),
     r"BasicRNNCell 'basic_rnn_cell' .*the state of shape \(2, 5\) should be \(2, 3\)"),
    (lambda: Plain(4), jnp.zeros((2, 6)),
     r"^Plain: the state given to Plain 'plain' does not fit it: the "
     r"state of shape \(2, 6\) should be \(2, 4\)"),
])
def test_a_direct_call_with_a_state_that_does_not_fit_names_the_cell_and_the_fix(make_cell, state,
                                                                                 message):
    with pytest.raises(ValueError, match=message) as error:
        _init(lambda x: make_cell()(x, state))
    assert "fix: pass a state of the cell's structure and shapes for inputs of batch 2" in str(error.value)
    assert "zero_state(2, dtype)" in str(error.value)


def test_the_state_error_of_a_direct_call_names_the_cells_captured_scope():
    def f(x):
        with sp.scope("decoder"):
            cell = sp.rnn.GRUCell(8)
            h = cell(x, cell.zero_state(2, jnp.float32))[1]
        return cell(x, h[:, :6])
    with pytest.raises(ValueError, match=r"GRUCell 'decoder/gru_cell' does not fit it"):
        _init(f)


def test_a_direct_call_with_a_fitting_state_runs_as_before_also_under_jit():
    def f(x):
        lstm = sp.rnn.LSTMCell(4)
        out, state = lstm(x, (jnp.zeros((2, 4)), jnp.zeros((2, 4))))  # a plain tuple fits
        stack = sp.rnn.MultiRNNCell([sp.rnn.GRUCell(3), sp.rnn.BasicRNNCell(2)])
        return stack(out, stack.zero_state(2, jnp.float32))[0], state
    params = _init(f)
    out, state = jax.jit(sp.transform(f).apply)(params, X)
    assert out.shape == (2, 2) and state.h.shape == (2, 4)


def test_a_direct_call_failing_for_another_reason_keeps_its_own_error():
    with pytest.raises(ValueError, match=r"inputs must be \[batch, depth\]"):
        _init(lambda x: sp.rnn.GRUCell(4)(x[:, :, None], jnp.zeros((2, 4))))


def test_dynamic_rnn_still_names_its_initial_state():
    cell = sp.rnn.GRUCell(8)
    with pytest.raises(ValueError, match=r"sp\.rnn\.dynamic_rnn: initial_state does not fit GRUCell "
                                         r"'rnn/gru_cell': the state of shape \(2, 6\) should be"):
        _init(lambda x: sp.rnn.dynamic_rnn(cell, x, initial_state=jnp.zeros((2, 6))),
              jnp.ones((2, 4, 3)))


class Widening(Plain):
    """A buggy cell: its new state is one unit wider than the state it is given."""

    def call(self, inputs, state):
        kernel = sp.get_param("kernel", [inputs.shape[-1] + self._num_units, self._num_units + 1])
        h = jnp.concatenate([inputs, state], axis=1) @ kernel
        return h, h


@pytest.mark.parametrize("run", [
    lambda x: sp.rnn.static_rnn(Widening(4), [x, x], dtype=jnp.float32),
    lambda x: sp.rnn.dynamic_rnn(Widening(4), jnp.stack([x, x], axis=1), dtype=jnp.float32),
])
def test_a_driver_names_a_cell_returning_another_state_not_the_state_it_gave(run):
    with pytest.raises(ValueError, match=r"the cell Widening 'rnn/widening' returned another state "
                                         r"than it was given: the state is float32\[2, 4\] going in "
                                         r"and float32\[2, 5\] coming out"):
        _init(run)


def test_a_users_cell_subclass_called_outside_a_transform_is_named_by_its_own_class():
    class MyCell(sp.rnn.BasicRNNCell):
        pass

    with pytest.raises(sp.NotInTransformError, match=r"^MyCell\(\) was called outside") as info:
        MyCell(3)(jnp.ones((1, 2)), jnp.zeros((1, 3)))
    assert "sp." not in str(info.value).splitlines()[0]
