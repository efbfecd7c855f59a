"""TF 1.x's recurrent cells and ``dynamic_rnn`` (``tf.nn.rnn_cell``, ``tf.nn.dynamic_rnn``): the same
arguments, math and variable names, so a TF 1.x sequence model ports line by line and its
checkpoint's names line up (``rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel``).

>>> def lm(tokens, training=False):
...     x = sp.layers.embedding(tokens, 10_000, 200)
...     cells = [sp.rnn.DropoutWrapper(sp.rnn.BasicLSTMCell(200),
...                                    output_keep_prob=0.5 if training else 1.0) for _ in range(2)]
...     outputs, state = sp.rnn.dynamic_rnn(sp.rnn.MultiRNNCell(cells), x, dtype=jnp.float32)
...     return sp.layers.dense(outputs, 10_000)

A cell is a TF layer object: its scope (``basic_lstm_cell``, ``basic_lstm_cell_1``, ... in the
enclosing scope) is fixed at its first call, and later calls share its weights. ``dynamic_rnn`` runs
the cell with ``sp.scan`` (one traced step, whatever the length), and with ``sequence_length``
zeroes the outputs past each sequence's end and carries its state through, as TF does.
Parameters take the inputs' dtype, as TF's cells do.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _frame
from . import sharding as _sharding
from ._control_flow import scan
from ._params import _as_dtype, get_param
from ._scope import _enter_name_scope, _exit_name_scope, begin_jump, end_jump
from ._scope import scope as variable_scope
from .initializers import constant, zeros
from .layers import (_add_bias, _building, _built_value, _check_add_weight_options, _deep_copy,
                     _drop, _enter_object_name_scope, _from_keras, _is_number, _keep_for_call,
                     _layer_scope, _mark_built, _NamedByClass, _object_scope, _param_dtype,
                     _require_base_init, _set_layer_attribute, _TensorShape, _this_call)

__all__ = [
    "BasicLSTMCell", "BasicRNNCell", "DeviceWrapper", "DropoutWrapper", "GRUCell", "LSTMCell",
    "LSTMStateTuple", "MultiRNNCell", "RNNCell", "ResidualWrapper", "bidirectional_dynamic_rnn", "dynamic_rnn",
    "static_bidirectional_rnn", "static_rnn",
]


class LSTMStateTuple(collections.namedtuple("LSTMStateTuple", ("c", "h"))):
    """An LSTM's state: the cell state ``c`` and the output ``h`` (TF's ``LSTMStateTuple``)."""

    __slots__ = ()

    @property
    def dtype(self):
        """The dtype of ``c`` and ``h`` (TF's ``LSTMStateTuple.dtype``: a TypeError if they differ)."""
        c, h = self
        if c.dtype != h.dtype:
            raise TypeError(f"Inconsistent dtypes for internal state: {jnp.dtype(c.dtype).name} vs "
                            f"{jnp.dtype(h.dtype).name}.\n  fix: give c and h one dtype, e.g. "
                            f"LSTMStateTuple(c, h.astype(c.dtype)).")
        return c.dtype


# The dtype add_variable gives a weight by default while a cell's build runs (its inputs'), per thread.
_BUILDING = threading.local()


class RNNCell(_NamedByClass):
    """TF 1.x's ``RNNCell``: ``cell(inputs, state) -> (output, new_state)``, ``state_size``,
    ``output_size`` and ``zero_state(batch_size, dtype)``. Subclasses define ``call``.

    A cell's variables go under a scope named after its class, as TF names a layer: a user's
    ``class AttentionCell(sp.rnn.RNNCell)`` makes ``attention_cell/...``, or ``name=`` when given.
    As in TF, that default name is not numbered for a plain ``RNNCell`` (a subclass of it, and
    ``MultiRNNCell``): TF's ``RNNCell.__call__`` runs the call inside a jump into the current scope,
    whose exit rolls back every count the call moved, so a second ``AttentionCell`` called in the
    same scope is ``attention_cell`` again (it shares the first's weights under ``sp.AUTO_REUSE``,
    and is TF's "already exists" error without reuse). TF's layer cells (``GRUCell``, ``LSTMCell``,
    ``BasicLSTMCell``, ``BasicRNNCell`` and subclasses of them) are numbered: ``gru_cell``,
    ``gru_cell_1``.

    ``state_size`` is an int or a structure of ints (``[batch, size]`` states); a cell whose state has
    more dimensions (TF's ``TensorShape`` state sizes, e.g. a convolutional cell's ``[h, w, c]``)
    defines ``zero_state`` itself.

    A cell may make its weights in ``call`` with ``sp.get_param``, or as TF's layer cells do: in
    ``build(inputs_shape)`` with ``self.add_variable`` (``add_weight``), read in ``call``. A pure
    function keeps nothing between calls, so ``build`` runs at every call of the cell, inside its
    scope: the first call in each ``init``/``apply`` creates the weights, later ones (the next
    steps) fetch them.
    """

    _base_name = "rnn_cell"
    _api = "sp.rnn.RNNCell"  # how errors name the class (__init_subclass__)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A user's subclass is not in sp.rnn: its own name, as sp.layers names a user's layer class.
        cls._api = f"sp.rnn.{cls.__name__}" if cls.__module__ == __name__ else cls.__name__

    def __init__(self, reuse: Any = None, name: Optional[str] = None, dtype: Any = None):
        self.name = name
        self._reuse = reuse
        self._dtype = None if dtype is None else _as_dtype(dtype)  # TF's tf.float32 too
        self._scopes: dict = {}  # this call's captured Scope (layers._object_scope)
        self._building: dict = {}  # whether this call's build is running (what it stores is kept
        # for the call: layers._set_layer_attribute)

    _num_units: int

    __setattr__ = _set_layer_attribute  # what build stores holding arrays is per call

    def __getattr__(self, attribute: str) -> Any:
        # Reached only for what the object does not have: a value build stored in this call, or a
        # property whose getter raised AttributeError: run it again, so its own error shows
        if attribute in self.__dict__.get("_built_value_names", ()):
            return _built_value(self, attribute)
        prop = getattr(type(self), attribute, None)
        if isinstance(prop, property) and prop.fget is not None:
            return prop.fget(self)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}",
                             name=attribute, obj=self)

    def __copy__(self) -> "RNNCell":
        """``copy.copy``: the same arguments and name, and the state of a fresh construction: the
        copy's first call opens its own scope and makes its own weights, as a copied TF cell does."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        # fresh tokens for what the copy's calls capture and draw (layers._this_call)
        for key in ("_scopes", "_noises", "_building", "_built_values"):
            if key in new.__dict__:
                new.__dict__[key] = {}
        new.__dict__.pop("_latest_prefix", None)  # the latest call's scope (layers._object_scope)
        return new

    def __deepcopy__(self, memo: dict) -> "RNNCell":
        """``copy.deepcopy``: as ``copy.copy``, with deep copies of the arguments and of the cells
        a wrapper or ``MultiRNNCell`` holds (which make their own weights too)."""
        return _deep_copy(self, self.__copy__(), memo)

    @property
    def state_size(self) -> Any:
        """The state's size (a tree of sizes for LSTMs and stacks); a vector of ``num_units`` here."""
        return self._num_units

    @property
    def output_size(self) -> int:
        """The depth of each step's output."""
        return self._num_units

    def call(self, inputs: jax.Array, state: Any) -> Tuple[jax.Array, Any]:
        """One step, ``(output, new_state)``, inside the cell's variable scope. Subclasses define
        it; run the cell by calling it (``cell(inputs, state)``), which opens that scope."""
        raise NotImplementedError

    def build(self, inputs_shape: Any) -> None:
        """TF's ``build``: make the weights with ``self.add_variable`` and keep them on ``self`` for
        ``call``. Runs at every call of the cell, before ``call``, inside its scope (the first call
        in each ``init``/``apply`` creates the weights, later ones fetch them); ``inputs_shape``
        answers TF 1.x's ``inputs_shape[-1].value`` too."""
        del inputs_shape

    def add_variable(self, name: str, shape: Optional[Sequence[int]], dtype: Any = None,
                     initializer: Any = None, regularizer: Optional[Callable] = None,
                     trainable: bool = True, constraint: Optional[Callable] = None,
                     partitioner: Any = None, **tf_options: Any) -> jax.Array:
        """TF's ``add_variable`` (``add_weight``): ``sp.get_param`` in the cell's scope, of the cell's
        ``dtype=`` (else the inputs'); call it in ``build``. TF's runtime settings
        (``use_resource``, ...) are ``get_param``'s errors, which say to drop them."""
        _check_add_weight_options(type(self).__name__, name, tf_options)
        if dtype is None:
            dtype = self._dtype if self._dtype is not None else getattr(_BUILDING, "dtype", None)
        options = dict(tf_options)
        if partitioner is not None:
            options["partitioner"] = partitioner
        return get_param(name, () if shape is None else shape,
                         _from_keras(self._api, None, "initializer", initializer), dtype,
                         trainable=trainable, regularizer=regularizer, constraint=constraint,
                         **options)

    add_weight = add_variable

    def _build(self, inputs: Any) -> None:
        """Run a subclass's ``build`` for this call's ``inputs`` (inside the cell's scope): what it
        stores on ``self`` holding arrays is this call's (``layers._set_layer_attribute``)."""
        if type(self).build is RNNCell.build:
            return
        frame = _frame.current(self._api)
        token = self.__dict__["_building"]
        outer = getattr(_BUILDING, "dtype", None)
        _BUILDING.dtype = self._param_dtype(jax.tree_util.tree_leaves(inputs)[0])
        _keep_for_call(token, frame, True)
        try:  # TF's build gets the inputs' (nested) TensorShape
            self.build(jax.tree_util.tree_map(
                lambda x: _TensorShape(int(d) for d in jnp.shape(x)), inputs))
        finally:
            _keep_for_call(token, frame, False)
            _BUILDING.dtype = outer

    def __call__(self, inputs: jax.Array, state: Any, scope: Any = None) -> Tuple[jax.Array, Any]:
        """One step. ``scope`` (TF 1.x's ``cell(inputs, state, scope="rnn")``) places the cell's
        variables right under that scope at its first call; later calls reuse them and ignore it."""
        _require_base_init(self, "_scopes")
        try:
            if scope is not None:  # TF: the call inside variable_scope(scope), no jump
                captured, reuse = _object_scope(self, self._api, scope)
                return self._call_in(captured, reuse, inputs, state)
            # TF: the call inside a jump into the current scope (variable_scope(get_variable_scope())),
            # whose exit restores every count (so the default name this call took is free again),
            # and whose entry opens a name scope of the scope's last name (none at the root)
            frame = _frame.current(self._api)
            begin_jump(frame)
            last = frame.scope.name.rpartition("/")[2]
            names = _enter_name_scope(frame, last, _JUMP_NAME_SCOPE) if last else None
            try:
                captured, reuse = _object_scope(self, self._api)
                return self._call_in(captured, reuse, inputs, state)
            finally:
                if names is not None:
                    _exit_name_scope(frame, names)
                end_jump(frame)
        except (TypeError, ValueError, IndexError):
            _raise_if_state_misfits(self, inputs, state)
            raise

    def _call_in(self, captured: Any, reuse: Any, inputs: Any, state: Any) -> Tuple[jax.Array, Any]:
        """Build and call the cell in ``captured`` (with ``reuse``) and in the name scope its first
        call opened, as TF's ``Layer.__call__`` runs a cell: what it records is named there."""
        frame, names = _enter_object_name_scope(captured)
        try:
            with _layer_scope(captured, self._base_name, reuse):
                self._build(inputs)
                if reuse is True:
                    return self.call(inputs, state)
                # TF's built, after build: the cell's later calls reuse its weights. The built-in
                # cells make theirs in call (TF's in build): built once they exist, even if the
                # call then raises (a state of the wrong shape, caught, and the cell called again).
                if not (isinstance(self, _LayerCell) and type(self).build is RNNCell.build):
                    _mark_built(self, frame)
                    return self.call(inputs, state)
                return _building(self, frame, self.call, inputs, state)
        finally:
            _exit_name_scope(frame, names)

    def zero_state(self, batch_size: int, dtype: Any) -> Any:
        """Zeros shaped like the state, for a batch of ``batch_size``."""
        dtype = dtype if dtype is None else _as_dtype(dtype)  # TF's tf.float32 too
        return jax.tree_util.tree_map(lambda n: jnp.zeros((batch_size, n), dtype), self.state_size)

    def get_initial_state(self, inputs: Any = None, batch_size: Optional[int] = None,
                          dtype: Any = None) -> Any:
        """TF's ``RNNCell.get_initial_state``: ``zero_state(batch_size, dtype)``, with the batch size
        and dtype of ``inputs`` ([batch, ...]) when given. The drivers (``dynamic_rnn``,
        ``static_rnn`` and their bidirectional forms) call it, as TF's do, when no ``initial_state``
        is passed: a subclass may return a learned state, whose ``sp.get_param`` is under the
        driver's scope (``rnn/h0``).

        >>> class LearnedStart(sp.rnn.GRUCell):
        ...     def get_initial_state(self, inputs=None, batch_size=None, dtype=None):
        ...         return jnp.tile(sp.get_param("h0", [1, self.state_size], dtype=dtype),
        ...                         (batch_size, 1))
        >>> model = sp.transform(lambda x: sp.rnn.dynamic_rnn(LearnedStart(4), x, dtype=jnp.float32))
        >>> sp.flatten(model.init(jax.random.key(0), jnp.ones((2, 5, 3))))["rnn/h0"].shape
        (1, 4)
        """
        if inputs is not None:
            shape, found = jnp.shape(inputs), jnp.result_type(inputs)
            if isinstance(batch_size, (int, np.integer)) and batch_size != shape[0]:
                raise ValueError(
                    f"batch size from input tensor is different from the input param. Input tensor "
                    f"batch: {shape[0]}, batch_size: {batch_size}\n  fix: omit batch_size= (the "
                    "inputs give it), or pass inputs of that batch.")
            if dtype is not None and jnp.dtype(dtype) != found:
                raise ValueError(
                    f"dtype from input tensor is different from the input param. Input tensor "
                    f"dtype: {found.name}, dtype: {jnp.dtype(dtype).name}\n  fix: omit dtype= (the "
                    "inputs give it), or cast the inputs.")
            batch_size, dtype = shape[0], found
        if batch_size is None or dtype is None:
            raise ValueError(
                f"batch_size and dtype cannot be None while constructing initial state: "
                f"batch_size={batch_size}, dtype={None if dtype is None else jnp.dtype(dtype).name}"
                "\n  fix: pass both, e.g. cell.get_initial_state(batch_size=32, dtype=jnp.float32), "
                "or inputs=.")
        return self.zero_state(batch_size, dtype)

    def _param_dtype(self, inputs: jax.Array) -> Any:
        return self._dtype if self._dtype is not None else _param_dtype(inputs)

    @staticmethod
    def _input_depth(inputs: jax.Array) -> int:
        if inputs.ndim != 2 or inputs.shape[-1] is None:
            raise ValueError(f"an RNN cell's inputs must be [batch, depth] with a known depth, got "
                             f"shape {inputs.shape}.")
        return int(inputs.shape[-1])


# What an invalid name scope of a cell's jump would be refused as (never: a scope's own last name).
_JUMP_NAME_SCOPE = "an RNN cell's call (TF's variable_scope(get_variable_scope()))"


class _LayerCell(RNNCell):
    """TF's ``LayerRNNCell`` (``BasicRNNCell``, ``LSTMCell``, ``GRUCell``): called as a layer, with
    no jump around the call, so its default name stays taken (``gru_cell``, ``gru_cell_1``)."""

    def __call__(self, inputs: jax.Array, state: Any, scope: Any = None) -> Tuple[jax.Array, Any]:
        _require_base_init(self, "_scopes")
        if not hasattr(inputs, "shape"):
            raise _structured_inputs_error(self, inputs)
        try:
            captured, reuse = _object_scope(self, self._api, scope)
            return self._call_in(captured, reuse, inputs, state)
        except (TypeError, ValueError, IndexError):
            _raise_if_state_misfits(self, inputs, state)
            raise

    __call__.__doc__ = RNNCell.__call__.__doc__


def _structured_inputs_error(cell: RNNCell, inputs: Any) -> ValueError:
    """The error for a built-in cell given a structure of inputs (a dict, a tuple) where it takes one
    [batch, depth] array (TF: 'Layer "gru_cell" expects 1 input(s), but it received 2 input
    tensors')."""
    n = len(jax.tree_util.tree_leaves(inputs))
    return ValueError(
        f"{cell._api} expects one input array [batch, depth] at each step, got a "
        f"{type(inputs).__name__} of {n} array{'s' if n != 1 else ''}.\n"
        "  fix: concatenate them along the last axis (jnp.concatenate(..., axis=-1)) before the "
        "cell, or subclass sp.rnn.RNNCell with a call that takes the structure.")


def _raise_if_state_misfits(cell: RNNCell, inputs: Any, state: Any) -> None:
    """Once a direct call ``cell(inputs, state)`` has failed: the error naming the cell, if
    ``state`` does not fit it for the inputs' batch (``_fitted_state``), in place of lax's
    concatenate or dot_general error. Only on the error path, so a step costs nothing more and
    the drivers' checked states are not checked again."""
    leaves = jax.tree_util.tree_leaves(inputs)
    if not leaves or np.ndim(leaves[0]) < 2:  # no [batch, ...] input: its own error stands
        return
    try:
        _fitted_state(cell, np.shape(leaves[0])[0], state, cell._api, direct=True)
    except ValueError as misfit:
        raise misfit from None  # the misfit is the cause: lax's error would only mislead


def _linear(inputs: jax.Array, h: jax.Array, kernel: jax.Array, bias: Optional[jax.Array]):
    y = jnp.concatenate([inputs, h], axis=1) @ kernel
    return y if bias is None else _add_bias(y, bias, 1)


_CELL_FIX = ("  fix: pass a cell object such as sp.rnn.GRUCell(num_units), or subclass sp.rnn.RNNCell "
             "(define state_size, output_size and call).")


def _check_cell(cell: Any, argument: str, api: str) -> None:
    """TF's ``assert_like_rnncell``: a TypeError unless ``cell`` has ``output_size``,
    ``state_size``, ``zero_state`` and can be called; once per run or construction."""
    if isinstance(cell, RNNCell):  # has them all (not read here: a property may need the base init)
        return
    if isinstance(cell, type):
        raise TypeError(f"{api}: the argument {argument!r} is the class {cell.__name__}, not an RNNCell "
                        "instance."
                        f"\n  fix: pass an instance, e.g. {cell.__name__}(num_units).")
    missing = [f"{name!r} property is missing" for name in ("output_size", "state_size")
               if not hasattr(cell, name)]
    if not (hasattr(cell, "zero_state") or hasattr(cell, "get_initial_state")):
        missing.append("either 'zero_state' or 'get_initial_state' method is required")
    if not callable(cell):
        missing.append("is not callable")
    if missing:
        raise TypeError(f"{api}: The argument {argument!r} ({cell!r}) is not an RNNCell: "
                        f"{', '.join(missing)}.\n{_CELL_FIX}")


def _checked_num_units(kind: str, num_units: Any) -> int:
    """``num_units``, refused here when no array could have it as a dimension (TF: at build)."""
    if isinstance(num_units, bool) or not isinstance(num_units, (int, np.integer)):
        raise TypeError(f"{kind}: num_units must be an int, got {num_units!r} (TF: Dimension value "
                        f"must be integer).\n  fix: pass the number of units, e.g. {kind}(128).")
    if num_units < 0:
        raise ValueError(f"{kind}: num_units must be >= 0, got {num_units} (TF: Dimension "
                         f"{num_units} must be >= 0).\n  fix: pass the number of units, e.g. "
                         f"{kind}(128).")
    return int(num_units)


def _checked_count(kind: str, argument: str, value: Any, fix: str) -> Optional[int]:
    """An optional count (``num_proj``, the shard counts): None, or an int of at least 1, refused
    here where TF fails building the graph (a 0-wide projection's shape error, zero partitions)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{kind}: {argument} must be an int or None, got {value!r} (TF: Dimension "
                        f"value must be integer).\n  fix: {fix}")
    if value < 1:
        raise ValueError(f"{kind}: {argument} must be at least 1, got {value} (TF fails building "
                         f"the cell's weights).\n  fix: {fix}")
    return int(value)


class BasicRNNCell(_LayerCell):
    """``tf.nn.rnn_cell.BasicRNNCell``: ``h = activation([x, h] @ kernel + bias)``."""

    _base_name = "basic_rnn_cell"

    def __init__(self, num_units: int, activation: Optional[Callable] = None, reuse: Any = None,
                 name: Optional[str] = None, dtype: Any = None):
        super().__init__(reuse, name, dtype)
        self._num_units = _checked_num_units(type(self).__name__, num_units)
        self._activation = _from_keras(type(self).__name__, None, "activation", activation) or jnp.tanh

    def call(self, inputs, state):
        dtype, n = self._param_dtype(inputs), self._num_units
        kernel = get_param("kernel", [self._input_depth(inputs) + n, n], dtype=dtype)
        bias = get_param("bias", [n], init=zeros, dtype=dtype)
        output = self._activation(_linear(inputs, state, kernel, bias))
        return output, output


class LSTMCell(_LayerCell):
    """``tf.nn.rnn_cell.LSTMCell``: ``BasicLSTMCell`` plus optional peepholes (``w_f_diag``,
    ``w_i_diag``, ``w_o_diag``), ``cell_clip``, a projection of the output to ``num_proj``
    (``projection/kernel``) and ``proj_clip``. ``initializer`` is the kernels' and peepholes'.

    TF's deprecated ``num_unit_shards`` and ``num_proj_shards`` give ``kernel`` and
    ``projection/kernel`` TF's ``fixed_size_partitioner`` of that many parts: TF splits the variable
    (``kernel/part_0``, ...), here it is one array whose spec shards it (``sp.sharding``), and a TF
    checkpoint of it loads by name (``sp.checkpoint.load_tf1`` joins the parts)."""

    _base_name = "lstm_cell"

    def __init__(self, num_units: int, use_peepholes: bool = False, cell_clip: Optional[float] = None,
                 initializer: Any = None, num_proj: Optional[int] = None,
                 proj_clip: Optional[float] = None, num_unit_shards: Optional[int] = None,
                 num_proj_shards: Optional[int] = None, forget_bias: float = 1.0,
                 state_is_tuple: bool = True, activation: Optional[Callable] = None, reuse: Any = None,
                 name: Optional[str] = None, dtype: Any = None):
        super().__init__(reuse, name, dtype)
        kind = type(self).__name__
        self._num_units = _checked_num_units(kind, num_units)
        self._use_peepholes = use_peepholes
        self._cell_clip = cell_clip
        self._initializer = _from_keras(kind, None, "initializer", initializer)
        self._num_proj = _checked_count(kind, "num_proj", num_proj, "pass num_proj=None for no "
                                        "projection, or the projection's width, e.g. num_proj=64.")
        shards = [_checked_count(kind, argument, n, f"pass {argument}=None for one array, or the "
                                 f"number of parts, e.g. {argument}=2 (or give the scope a "
                                 "partitioner: sp.scope(..., partitioner=...)).")
                  for argument, n in (("num_unit_shards", num_unit_shards),
                                      ("num_proj_shards", num_proj_shards))]
        # TF's partitioners of the two kernels; None (the scope's) unless asked for
        self._unit_partitioner, self._proj_partitioner = (
            None if n is None else _sharding.fixed_size_partitioner(n) for n in shards)
        self._proj_clip = proj_clip
        self._forget_bias = forget_bias
        self._state_is_tuple = state_is_tuple
        self._activation = (_from_keras(type(self).__name__, None, "activation", activation)
                            or jnp.tanh)

    @property
    def state_size(self) -> Any:
        n, m = self._num_units, self._num_proj or self._num_units
        return LSTMStateTuple(n, m) if self._state_is_tuple else n + m

    @property
    def output_size(self) -> int:
        return self._num_proj or self._num_units

    def call(self, inputs, state):
        dtype, n = self._param_dtype(inputs), self._num_units
        m_depth = self._num_proj or n
        if self._state_is_tuple:
            c_prev, m_prev = state
        else:
            c_prev, m_prev = state[:, :n], state[:, n:]
        if self._unit_partitioner is None:
            kernel = get_param("kernel", [self._input_depth(inputs) + m_depth, 4 * n],
                               init=self._initializer, dtype=dtype)
        else:  # TF's num_unit_shards
            kernel = get_param("kernel", [self._input_depth(inputs) + m_depth, 4 * n],
                               init=self._initializer, dtype=dtype,
                               partitioner=self._unit_partitioner)
        bias = get_param("bias", [4 * n], init=zeros, dtype=dtype)
        i, j, f, o = jnp.split(_linear(inputs, m_prev, kernel, bias), 4, axis=1)
        sigmoid, act = jax.nn.sigmoid, self._activation
        if self._use_peepholes:
            w_f = get_param("w_f_diag", [n], init=self._initializer, dtype=dtype)
            w_i = get_param("w_i_diag", [n], init=self._initializer, dtype=dtype)
            w_o = get_param("w_o_diag", [n], init=self._initializer, dtype=dtype)
            # One row each, broadcast over the batch (for jax_numpy_rank_promotion="raise").
            w_f, w_i, w_o = w_f[None], w_i[None], w_o[None]
            c = (sigmoid(f + self._forget_bias + w_f * c_prev) * c_prev
                 + sigmoid(i + w_i * c_prev) * act(j))
        else:
            c = sigmoid(f + self._forget_bias) * c_prev + sigmoid(i) * act(j)
        if self._cell_clip is not None:
            c = jnp.clip(c, -self._cell_clip, self._cell_clip)
        m = sigmoid(o + w_o * c) * act(c) if self._use_peepholes else sigmoid(o) * act(c)
        if self._num_proj is not None:
            if self._proj_partitioner is None:
                projection = get_param("projection/kernel", [n, self._num_proj],
                                       init=self._initializer, dtype=dtype)
            else:  # TF's num_proj_shards
                projection = get_param("projection/kernel", [n, self._num_proj],
                                       init=self._initializer, dtype=dtype,
                                       partitioner=self._proj_partitioner)
            m = m @ projection
            if self._proj_clip is not None:
                m = jnp.clip(m, -self._proj_clip, self._proj_clip)
        if self._state_is_tuple:
            return m, LSTMStateTuple(c, m)
        return m, jnp.concatenate([c, m], axis=1)


class BasicLSTMCell(LSTMCell):
    """``tf.nn.rnn_cell.BasicLSTMCell``: one ``kernel`` for the gates i, j, f, o (in that order) and
    ``bias``; ``forget_bias`` is added to f. The state is ``LSTMStateTuple(c, h)`` (or ``[c, h]``
    concatenated with ``state_is_tuple=False``). ``LSTMCell`` without its options."""

    _base_name = "basic_lstm_cell"

    def __init__(self, num_units: int, forget_bias: float = 1.0, state_is_tuple: bool = True,
                 activation: Optional[Callable] = None, reuse: Any = None, name: Optional[str] = None,
                 dtype: Any = None):
        super().__init__(num_units, forget_bias=forget_bias, state_is_tuple=state_is_tuple,
                         activation=activation, reuse=reuse, name=name, dtype=dtype)


class GRUCell(_LayerCell):
    """``tf.nn.rnn_cell.GRUCell``: ``gates/kernel`` and ``gates/bias`` (initialized to 1.0 unless
    ``bias_initializer`` is given) for r and u, ``candidate/kernel`` and ``candidate/bias``;
    ``h = u * h + (1 - u) * activation([x, r * h] @ candidate/kernel + candidate/bias)``."""

    _base_name = "gru_cell"

    def __init__(self, num_units: int, activation: Optional[Callable] = None, reuse: Any = None,
                 kernel_initializer: Any = None, bias_initializer: Any = None,
                 name: Optional[str] = None, dtype: Any = None):
        super().__init__(reuse, name, dtype)
        self._num_units = _checked_num_units(type(self).__name__, num_units)
        # TF's cells resolve names with Keras's getters, as tf.layers do
        kind = type(self).__name__
        self._activation = _from_keras(kind, None, "activation", activation) or jnp.tanh
        self._kernel_initializer = _from_keras(kind, None, "kernel_initializer", kernel_initializer)
        self._bias_initializer = _from_keras(kind, None, "bias_initializer", bias_initializer)

    def call(self, inputs, state):
        dtype, n = self._param_dtype(inputs), self._num_units
        depth = self._input_depth(inputs) + n
        gate_kernel = get_param("gates/kernel", [depth, 2 * n], init=self._kernel_initializer,
                                dtype=dtype)
        gate_bias = get_param("gates/bias", [2 * n], dtype=dtype,
                              init=self._bias_initializer or constant(1.0))
        candidate_kernel = get_param("candidate/kernel", [depth, n], init=self._kernel_initializer,
                                     dtype=dtype)
        candidate_bias = get_param("candidate/bias", [n], init=self._bias_initializer or zeros,
                                   dtype=dtype)
        r, u = jnp.split(jax.nn.sigmoid(_linear(inputs, state, gate_kernel, gate_bias)), 2, axis=1)
        c = self._activation(_linear(inputs, r * state, candidate_kernel, candidate_bias))
        new_h = u * state + (1 - u) * c
        return new_h, new_h


class MultiRNNCell(RNNCell):
    """``tf.nn.rnn_cell.MultiRNNCell``: cells stacked, cell ``k`` under ``cell_<k>``; the state is a
    tuple of the cells' states, or, with TF's deprecated ``state_is_tuple=False``, their states
    concatenated along the last axis (each cell's state must then be one array)."""

    _base_name = "multi_rnn_cell"

    def __init__(self, cells: Sequence[RNNCell], state_is_tuple: bool = True):
        super().__init__()
        if not isinstance(cells, (list, tuple)):
            raise TypeError(f"cells must be a list or tuple, but received: {cells!r}.\n"
                            "  fix: pass the cells in a list, e.g. MultiRNNCell([cell]).")
        if not cells:
            raise ValueError("Must specify at least one cell for MultiRNNCell.")
        for k, cell in enumerate(cells):
            _check_cell(cell, f"cells[{k}]", "sp.rnn.MultiRNNCell")
        self._cells = list(cells)
        self._state_is_tuple = state_is_tuple
        if not state_is_tuple and not all(  # TF: any state size that is no structure (NumPy ints too)
                isinstance(c.state_size, (int, np.integer)) and not isinstance(c.state_size, bool)
                for c in self._cells):
            raise ValueError(
                "Some cells return tuples of states, but the flag state_is_tuple is not set. State "
                f"sizes are: {[c.state_size for c in self._cells]}\n"
                "  fix: keep the default state_is_tuple=True, or build the LSTM cells with "
                "state_is_tuple=False too.")

    @property
    def state_size(self) -> Any:
        if not self._state_is_tuple:
            return sum(cell.state_size for cell in self._cells)
        return tuple(cell.state_size for cell in self._cells)

    @property
    def output_size(self) -> int:
        return self._cells[-1].output_size

    def zero_state(self, batch_size: int, dtype: Any) -> Any:
        states = tuple(cell.zero_state(batch_size, dtype) for cell in self._cells)
        return states if self._state_is_tuple else jnp.concatenate(states, axis=-1)

    def _before_loop(self) -> None:
        for cell in self._cells:
            _before_loop(cell)

    def call(self, inputs, state):
        if not self._state_is_tuple:  # the cells' states side by side: slice them apart
            bounds = np.cumsum([0] + [cell.state_size for cell in self._cells])
            state = tuple(state[:, a:b] for a, b in zip(bounds[:-1], bounds[1:]))
        if len(state) != len(self._cells):
            raise ValueError(f"Expected state to be a tuple of length {len(self._cells)}, but "
                             f"received: {state!r}")
        new_states = []
        for k, (cell, cell_state) in enumerate(zip(self._cells, state)):
            with variable_scope(f"cell_{k}"):
                inputs, new_state = cell(inputs, cell_state)
            new_states.append(new_state)
        if not self._state_is_tuple:
            return inputs, jnp.concatenate(new_states, axis=-1)
        return inputs, tuple(new_states)


class _Wrapper(RNNCell):
    """A cell around ``self._cell``, with its state and output sizes; it opens no scope of its own,
    so the wrapped cell's variables keep their names (TF's ``RNNCell`` wrappers)."""

    _cell: RNNCell

    @property
    def cell(self) -> RNNCell:
        """The wrapped cell (TF's ``wrapper.cell``)."""
        return self._cell

    @property
    def state_size(self) -> Any:
        return self._cell.state_size

    @property
    def output_size(self) -> int:
        return self._cell.output_size

    def zero_state(self, batch_size: int, dtype: Any) -> Any:
        return self._cell.zero_state(batch_size, dtype)

    def _before_loop(self) -> None:
        _before_loop(self._cell)


class DropoutWrapper(_Wrapper):
    """``tf.nn.rnn_cell.DropoutWrapper``: dropout on the cell's inputs, outputs and new state, with
    keep probabilities; a new mask at every step for each array of a structure, drawn from
    ``sp.next_rng_key()`` (pass ``rng=`` to ``apply``). It adds no scope: the wrapped cell's
    variables keep their names. A keep probability of 1.0 does nothing.

    Which parts of the state are dropped is TF's ``dropout_state_filter_visitor``: a function
    called on the state and on each part of it in turn, returning a bool (``False``: leave this
    part alone, ``True``: look inside it) or one level of bools shaped like that part. The default
    drops everything but the memory ``c`` of every ``LSTMStateTuple``, however deeply nested (a
    ``MultiRNNCell`` of LSTMs keeps each ``c``):

    >>> def keep_c(substate):  # TF's default
    ...     if isinstance(substate, sp.rnn.LSTMStateTuple):
    ...         return sp.rnn.LSTMStateTuple(c=False, h=True)
    ...     return True
    >>> cell = sp.rnn.DropoutWrapper(sp.rnn.BasicLSTMCell(4), state_keep_prob=0.9,
    ...                              dropout_state_filter_visitor=keep_c)

    With ``variational_recurrent=True`` (Gal and Ghahramani's variational dropout) the masks are
    drawn once per ``init``/``apply`` call, before the time loop, and every step uses them; as in
    TF, one mask row is shared by the whole batch, ``dtype`` must be given, and so must
    ``input_size`` (the input depth, or a structure of depths) when ``input_keep_prob < 1``. Run
    such a cell with ``dynamic_rnn`` or ``static_rnn`` (or their bidirectional forms), which draw the
    masks before their loop.
    """

    def __init__(self, cell: RNNCell, input_keep_prob: Any = 1.0, output_keep_prob: Any = 1.0,
                 state_keep_prob: Any = 1.0, variational_recurrent: bool = False,
                 input_size: Any = None, dtype: Any = None, seed: Optional[int] = None,
                 dropout_state_filter_visitor: Optional[Callable[[Any], Any]] = None):
        super().__init__()
        _check_cell(cell, "cell", "sp.rnn.DropoutWrapper")
        if dropout_state_filter_visitor is not None and not callable(dropout_state_filter_visitor):
            raise TypeError(f"dropout_state_filter_visitor must be callable. Received: "
                            f"{dropout_state_filter_visitor!r}")
        keeps = []
        for what, p in (("input", input_keep_prob), ("output", output_keep_prob),
                        ("state", state_keep_prob)):
            if not _is_number(p):
                raise TypeError(f"DropoutWrapper's {what}_keep_prob must be a number in (0, 1] (or a "
                                f"scalar array), got {p!r} of type {type(p).__name__}.\n"
                                f"  fix: pass {what}_keep_prob=0.5, a float.")
            if np.ndim(p) == 0 and not isinstance(p, jax.core.Tracer):
                # A known value, as TF's constant_value reads it: checked, and 1.0 drops nothing.
                p = float(p)
                if not 0.0 < p <= 1.0:
                    raise ValueError(f"Parameter {what}_keep_prob must be between 0 and 1: {p}")
            keeps.append(p)
        input_keep_prob, output_keep_prob, state_keep_prob = keeps
        if variational_recurrent:
            if dtype is None:
                raise ValueError("When variational_recurrent=True, dtype must be provided.\n"
                                 "  fix: pass dtype=jnp.float32 (the dtype of the masks' noise).")
            if input_size is None and not _keeps_all(input_keep_prob):
                raise ValueError("When variational_recurrent=True and input_keep_prob < 1.0 or is "
                                 "unknown, input_size must be provided.\n"
                                 "  fix: pass input_size=<the depth of the cell's inputs>.")
        self._cell = cell
        self._keep = (input_keep_prob, output_keep_prob, state_keep_prob)
        self._seed = seed
        self._state_filter = dropout_state_filter_visitor or _default_state_filter
        self._variational = (input_size, dtype) if variational_recurrent else None
        self._noises: dict = {}  # this call's (input, output, state) noise (layers._this_call)

    @property
    def wrapped_cell(self) -> RNNCell:
        """The wrapped cell (TF's ``DropoutWrapper.wrapped_cell``, the same as ``cell``)."""
        return self._cell

    def _dropout(self, xs: Any, keep_prob: Any, noise: Any = None, which: Any = None) -> Any:
        """Dropout on each array of ``xs`` (each its own key, or its own variational ``noise``,
        a tree like ``xs``), only where ``which`` (a tree of bools like ``xs``) says so."""
        if _keeps_all(keep_prob):
            return xs
        if which is None:
            which = jax.tree_util.tree_map(lambda _: True, xs)

        def drop(x, dropped, n=None):
            if not dropped:
                return x
            if n is None:
                return _drop(x, keep_prob, self._seed, x.shape)
            return x / keep_prob * jnp.floor(keep_prob + n)  # TF's variational masks

        if noise is None:
            return jax.tree_util.tree_map(drop, xs, which)
        return jax.tree_util.tree_map(drop, xs, which, noise)

    def _before_loop(self) -> None:
        if self._variational is not None:
            self._noise(drawing=True)
        _before_loop(self._cell)

    def _noise(self, drawing: bool = False) -> tuple:
        """This call's (input, output, state) noise of a variational wrapper, uniform in [0, 1) of
        shape [1, size] per tensor (``None`` where nothing is dropped)."""
        frame = _frame.current("sp.rnn.DropoutWrapper")
        noise = _this_call(self._noises, frame)
        if noise is not None:
            return noise
        if frame.loop is not None and not drawing:
            raise ValueError(
                f"DropoutWrapper(variational_recurrent=True) was first called inside {frame.loop}, "
                "so its masks would be drawn anew at every step.\n"
                "  fix: run the cell with sp.rnn.dynamic_rnn or static_rnn, which draw the masks "
                "once before their loop.")
        assert self._variational is not None  # _noise runs only when it is set
        input_size, dtype = self._variational

        def draw(size):
            key = _frame.next_rng_key()
            if self._seed is not None:
                key = jax.random.fold_in(key, self._seed)
            return jax.random.uniform(key, (1, int(size)), dtype)

        noise = tuple(None if _keeps_all(keep) else jax.tree_util.tree_map(draw, sizes)
                      for keep, sizes in zip(self._keep, (input_size, self._cell.output_size,
                                                          self._cell.state_size)))
        _keep_for_call(self._noises, frame, noise)
        return noise

    def __call__(self, inputs, state, scope=None):
        input_keep, output_keep, state_keep = self._keep
        noise_in, noise_out, noise_state = self._noise() if self._variational is not None else (
            None, None, None)
        inputs = self._dropout(inputs, input_keep, noise_in)
        output, new_state = _call(self._cell, inputs, state, scope)
        if not _keeps_all(state_keep):
            new_state = self._dropout(new_state, state_keep, noise_state,
                                      _filtered(self._state_filter, new_state))
        return self._dropout(output, output_keep, noise_out), new_state


def _call(cell: Any, inputs: Any, state: Any, scope: Any) -> Tuple[Any, Any]:
    """``cell(inputs, state)``, passing ``scope`` only when given (a user's cell may not take it)."""
    return cell(inputs, state) if scope is None else cell(inputs, state, scope=scope)


def _before_loop(cell: Any) -> None:
    """What a cell does once per run, before the time loop: a variational ``DropoutWrapper`` (or
    one inside a wrapper or ``MultiRNNCell``) draws its masks. Cells of other kinds do nothing."""
    hook = getattr(cell, "_before_loop", None)
    if hook is not None:
        hook()


def _keeps_all(keep_prob: Any) -> bool:
    return isinstance(keep_prob, (int, float)) and keep_prob == 1.0


def _default_state_filter(substate: Any) -> Any:
    """TF's default ``dropout_state_filter_visitor``: never drop an LSTM's memory ``c``."""
    if isinstance(substate, LSTMStateTuple):
        return LSTMStateTuple(c=False, h=True)
    return True


def _filtered(visitor: Callable[[Any], Any], tree: Any) -> Any:
    """A bool per array of ``tree``: whether ``visitor`` lets dropout reach it. TF's
    ``nest.get_traverse_shallow_structure``: ``visitor`` sees ``tree`` and then, level by level,
    each part it did not rule out (``False``), and answers with a bool or one level of bools."""
    verdict = visitor(tree)
    children, level = _one_level(tree)
    if len(children) == 1 and children[0] is tree:  # an array
        if not isinstance(verdict, bool):
            raise TypeError(f"dropout_state_filter_visitor returned {verdict!r} for an array of "
                            f"shape {getattr(tree, 'shape', None)}; it must return a bool there.")
        return verdict
    if isinstance(verdict, bool):
        verdicts = [verdict] * len(children)
    else:
        verdicts, verdict_level = _one_level(verdict)
        if verdict_level != level or not all(isinstance(v, bool) for v in verdicts):
            raise TypeError(f"dropout_state_filter_visitor returned {verdict!r} for a state part "
                            f"of structure {level}; it must return a bool or one level of bools "
                            f"with that structure (e.g. LSTMStateTuple(c=False, h=True)).")
    return jax.tree_util.tree_unflatten(level, [
        _filtered(visitor, child) if v else jax.tree_util.tree_map(lambda _: False, child)
        for v, child in zip(verdicts, children)])


def _one_level(tree: Any) -> Tuple[list, Any]:
    """``tree``'s children (``[tree]`` for an array) and the one-level treedef holding them."""
    return jax.tree_util.tree_flatten(tree, is_leaf=lambda x: x is not tree)


class ResidualWrapper(_Wrapper):
    """``tf.nn.rnn_cell.ResidualWrapper``: the cell's output plus its input (or
    ``residual_fn(inputs, outputs)``). It adds no scope. As in TF, the default adds array by array
    and raises a ``ValueError`` unless the inputs and outputs have the same structure and shapes
    (no broadcasting: a [batch, 1] input does not spread over a [batch, 4] output)."""

    def __init__(self, cell: RNNCell, residual_fn: Optional[Callable] = None):
        super().__init__()
        _check_cell(cell, "cell", "sp.rnn.ResidualWrapper")
        self._cell = cell
        self._residual_fn = residual_fn or _add_residual

    def __call__(self, inputs, state, scope=None):
        output, new_state = _call(self._cell, inputs, state, scope)
        return self._residual_fn(inputs, output), new_state


def _add_residual(inputs: Any, outputs: Any) -> Any:
    """TF's default ``residual_fn``: the same structure and shapes, added array by array."""
    structures: Any = (jax.tree_util.tree_structure(inputs), jax.tree_util.tree_structure(outputs))
    if structures[0] != structures[1]:
        raise ValueError(
            f"ResidualWrapper adds the cell's inputs to its outputs, but they differ in structure: "
            f"inputs {structures[0]}, outputs {structures[1]}.\n"
            "  fix: make the cell's output match its input, or pass residual_fn=.")
    for a, b in zip(jax.tree_util.tree_leaves(inputs), jax.tree_util.tree_leaves(outputs)):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"Shapes {tuple(jnp.shape(a))} and {tuple(jnp.shape(b))} are incompatible: "
                f"ResidualWrapper adds the cell's inputs (shape {tuple(jnp.shape(a))}) to its "
                f"outputs (shape {tuple(jnp.shape(b))}).\n"
                "  fix: give the cell as many units as its input has features, or pass "
                "residual_fn=.")
    return jax.tree_util.tree_map(lambda i, o: i + o, inputs, outputs)


class DeviceWrapper(_Wrapper):
    """``tf.nn.rnn_cell.DeviceWrapper(cell, device)``: the cell itself, the device ignored. TF runs
    the cell's ops under ``tf.device(device)``; JAX places a computation by its arrays' shardings,
    not op by op, so place the model with ``sp.init_sharded`` / ``sp.shardings`` (or
    ``jax.device_put`` its inputs) instead. Like TF's, it adds no scope: the wrapped cell's
    variables keep their names, and ``state_size``, ``output_size`` and ``zero_state`` are the
    cell's."""

    def __init__(self, cell: RNNCell, device: Any):
        super().__init__()
        _check_cell(cell, "cell", "sp.rnn.DeviceWrapper")
        self._cell = cell
        self._device = device  # kept for reading back, as TF's get_config does; never used

    def __call__(self, inputs, state, scope=None):
        return _call(self._cell, inputs, state, scope)


def dynamic_rnn(cell: RNNCell, inputs: Any, sequence_length: Optional[Any] = None,
                initial_state: Any = None, dtype: Any = None, parallel_iterations: Any = None,
                swap_memory: bool = False, time_major: bool = False, scope: Any = None):
    """``tf.nn.dynamic_rnn``: run ``cell`` over the time axis of ``inputs`` ([batch, time, depth, ...],
    or [time, batch, ...] with ``time_major``; or a tuple/dict of such arrays, which each step gets
    sliced the same way) under ``scope`` (default ``"rnn"``); returns ``(outputs, final_state)``,
    ``outputs`` with the structure of the cell's output.

    With ``sequence_length`` (one length per batch entry), outputs past a sequence's end are zeros
    and its state stops changing there, so ``final_state`` is each sequence's state at its last
    step; a length past the time axis is the whole sequence, as in TF. ``parallel_iterations`` and
    ``swap_memory`` are TF runtime settings and are ignored. The loop is an ``sp.scan``: under an
    eager (un-jitted) ``apply`` it is traced and compiled at each call, so jit the apply.
    """
    del parallel_iterations, swap_memory
    _check_cell(cell, "cell", "sp.rnn.dynamic_rnn")
    with _rnn_scope(scope, "rnn"):
        return _run(cell, inputs, sequence_length, initial_state, dtype, time_major,
                    "sp.rnn.dynamic_rnn")


def bidirectional_dynamic_rnn(cell_fw: RNNCell, cell_bw: RNNCell, inputs: jax.Array,
                              sequence_length: Optional[Any] = None, initial_state_fw: Any = None,
                              initial_state_bw: Any = None, dtype: Any = None,
                              parallel_iterations: Any = None, swap_memory: bool = False,
                              time_major: bool = False, scope: Any = None):
    """``tf.nn.bidirectional_dynamic_rnn``: ``cell_fw`` over the inputs under
    ``<scope or "bidirectional_rnn">/fw``, ``cell_bw`` over each sequence reversed (within its
    ``sequence_length``) under ``.../bw``; returns ``((outputs_fw, outputs_bw), (state_fw,
    state_bw))``, ``outputs_bw`` reversed back into input order.

    A ``sequence_length`` longer than the time axis (or negative) is a ``ValueError`` when it is
    known at trace time, as TF's ``reverse_sequence`` refuses it; a traced one is clamped to
    ``[0, time]``. (``dynamic_rnn`` alone, like TF's, takes a too-long length as the full one.)"""
    del parallel_iterations, swap_memory
    _check_cell(cell_fw, "cell_fw", "sp.rnn.bidirectional_dynamic_rnn")
    _check_cell(cell_bw, "cell_bw", "sp.rnn.bidirectional_dynamic_rnn")
    time_axis = 0 if time_major else 1
    with _rnn_scope(scope, "bidirectional_rnn"):
        with _rnn_scope(None, "fw"):
            out_fw, state_fw = _run(cell_fw, inputs, sequence_length, initial_state_fw, dtype,
                                    time_major, "sp.rnn.bidirectional_dynamic_rnn")
        with _rnn_scope(None, "bw"):
            reversed_inputs = _reverse(inputs, sequence_length, time_axis)
            out_bw, state_bw = _run(cell_bw, reversed_inputs, sequence_length, initial_state_bw,
                                    dtype, time_major, "sp.rnn.bidirectional_dynamic_rnn")
    return (out_fw, _reverse(out_bw, sequence_length, time_axis)), (state_fw, state_bw)


def static_rnn(cell: RNNCell, inputs: Sequence[jax.Array], initial_state: Any = None,
               dtype: Any = None, sequence_length: Optional[Any] = None, scope: Any = None):
    """``tf.nn.static_rnn``: ``cell`` over a Python list of [batch, depth] inputs, unrolled, under
    ``scope`` (default ``"rnn"``, reused after the first step as TF does); returns ``(outputs,
    final_state)`` with ``outputs`` a list. ``sequence_length`` as in ``dynamic_rnn``."""
    if not isinstance(inputs, (list, tuple)):
        raise TypeError("static_rnn's inputs must be a non-empty list of [batch, depth] arrays, one "
                        "per step.\n  fix: pass list(x) for x of shape [time, batch, depth], or use "
                        "sp.rnn.dynamic_rnn.")
    if not inputs:
        raise ValueError("sp.rnn.static_rnn: Argument `inputs` must not be empty.\n  fix: pass one "
                         "[batch, depth] array per step, at least one.")
    _check_cell(cell, "cell", "sp.rnn.static_rnn")
    with _rnn_scope(scope, "rnn") as varscope:
        batch = jax.tree_util.tree_leaves(inputs[0])[0].shape[0]
        state, lengths = _start(cell, batch, initial_state, dtype, sequence_length,
                                "sp.rnn.static_rnn", inputs[0])
        outputs = []
        first = state
        for t, x in enumerate(inputs):
            if t > 0:
                varscope.reuse_variables()
            try:
                output, state = _step(cell, x, state, t, lengths, "sp.rnn.static_rnn")
            except (TypeError, ValueError):  # a later step: the state the cell returned may be why
                if t > 0:
                    _raise_if_another_state(cell, first, state, "sp.rnn.static_rnn")
                raise
            outputs.append(output)
    return outputs, state


def static_bidirectional_rnn(cell_fw: RNNCell, cell_bw: RNNCell, inputs: Sequence[jax.Array],
                             initial_state_fw: Any = None, initial_state_bw: Any = None,
                             dtype: Any = None, sequence_length: Optional[Any] = None,
                             scope: Any = None):
    """``tf.nn.static_bidirectional_rnn``: ``static_rnn`` of ``cell_fw`` under
    ``<scope or "bidirectional_rnn">/fw`` and of ``cell_bw`` over the reversed sequences under
    ``.../bw``; returns ``(outputs, state_fw, state_bw)`` with each step's outputs of the two
    directions concatenated, as TF does. ``sequence_length`` as in ``bidirectional_dynamic_rnn``:
    at most the number of steps (else a ``ValueError``; clamped when traced)."""
    if not isinstance(inputs, (list, tuple)):
        raise TypeError("static_bidirectional_rnn's inputs must be a non-empty list of [batch, depth] "
                        "arrays, one per step.\n  fix: pass list(x) for x of shape [time, batch, "
                        "depth], or use sp.rnn.bidirectional_dynamic_rnn.")
    if not inputs:
        raise ValueError("sp.rnn.static_bidirectional_rnn: Argument `inputs` must not be empty.\n"
                         "  fix: pass one [batch, depth] array per step, at least one.")
    _check_cell(cell_fw, "cell_fw", "sp.rnn.static_bidirectional_rnn")
    _check_cell(cell_bw, "cell_bw", "sp.rnn.static_bidirectional_rnn")
    with _rnn_scope(scope, "bidirectional_rnn"):
        with _rnn_scope(None, "fw") as fw_scope:
            out_fw, state_fw = static_rnn(cell_fw, inputs, initial_state_fw, dtype, sequence_length,
                                          scope=fw_scope)
        with _rnn_scope(None, "bw") as bw_scope:
            out_bw, state_bw = static_rnn(cell_bw, _reversed_steps(inputs, sequence_length),
                                          initial_state_bw, dtype, sequence_length, scope=bw_scope)
    out_bw = _reversed_steps(out_bw, sequence_length)
    outputs = [jax.tree_util.tree_map(lambda f, b: jnp.concatenate([f, b], axis=1), fw, bw)
               for fw, bw in zip(out_fw, out_bw)]
    return outputs, state_fw, state_bw


def _reversed_steps(steps: Sequence[Any], sequence_length: Optional[Any]) -> list:
    """A list of per-step structures with each sequence's first ``length`` steps reversed."""
    stacked = _reverse(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *steps), sequence_length, 0)
    return [jax.tree_util.tree_map(lambda x: x[t], stacked) for t in range(len(steps))]


def _rnn_scope(name_or_scope: Any, default: str):
    return variable_scope(name_or_scope if name_or_scope is not None else default)


def _reverse(xs: Any, sequence_length: Optional[Any], time_axis: int) -> Any:
    """TF's ``reverse_sequence`` on each array of ``xs``: each sequence's first ``length`` steps
    reversed, the rest kept.

    A length outside ``[0, time]`` is TF's ``InvalidArgumentError``; here a ``ValueError`` when the
    lengths are known at trace time, and clamped to ``[0, time]`` when traced (so a bad length can
    never read past the time axis and give NaNs)."""
    if sequence_length is not None:
        steps = jax.tree_util.tree_leaves(xs)[0].shape[time_axis]
        if not any(isinstance(n, jax.core.Tracer)
                   for n in jax.tree_util.tree_leaves(sequence_length)):
            known = np.asarray(sequence_length).reshape(-1)
            bad = np.flatnonzero((known > steps) | (known < 0))
            if bad.size:
                i = int(bad[0])
                tf_says = (f"seq_lens({i}) > input.dims({time_axis})" if known[i] > steps
                           else f"seq_lens({i}) < 0")
                raise ValueError(
                    f"sequence_length {known.tolist()} has a length outside [0, {steps}], "
                    f"{steps} being the inputs' number of time steps: {tf_says}, TF's "
                    f"reverse_sequence says (an InvalidArgumentError).\n"
                    f"  fix: pass lengths of at most {steps} (or pad the inputs' time axis).")
        sequence_length = jnp.clip(jnp.asarray(sequence_length, jnp.int32), 0, steps)

    def reverse(x):
        if sequence_length is None:
            return jnp.flip(x, axis=time_axis)
        t = jnp.arange(x.shape[time_axis])
        lengths = sequence_length[:, None]  # [batch, 1]
        source = jnp.where(t[None, :] < lengths, lengths - 1 - t[None, :], t[None, :])  # [batch, time]
        index = source.T if time_axis == 0 else source
        return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=time_axis)
    return jax.tree_util.tree_map(reverse, xs)


def _batch_major(xs: Any, time_major: bool) -> Any:
    """``xs`` with the batch and time axes of each array swapped, unless ``time_major``."""
    return xs if time_major else jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), xs)


def _masked(live: jax.Array, new: Any, old: Any) -> Any:
    """Each array of ``new`` where its batch entry is ``live``, else ``old``'s (an array or 0)."""
    def pick(n, o):
        mask = live.reshape(live.shape + (1,) * (n.ndim - 1))
        return jnp.where(mask, n, jnp.zeros((), n.dtype) if o is None else o)
    if old is None:
        return jax.tree_util.tree_map(lambda n: pick(n, None), new)
    return jax.tree_util.tree_map(pick, new, old)


def _start(cell: RNNCell, batch: int, initial_state, dtype, sequence_length, api: str, x: Any):
    """The first state (``initial_state``, checked against the cell's state, else the cell's
    ``get_initial_state``, or ``zero_state`` when it has none, in ``dtype``: TF's drivers) and the
    lengths; once per run, before the time loop (``x``: the first step)."""
    _before_loop(cell)
    if dtype is not None:
        dtype = _as_dtype(dtype)  # TF's dtype=tf.float32 too
    if initial_state is None:
        if dtype is None:
            raise ValueError("If there is no initial_state, you must give a dtype.\n"
                             "  fix: pass dtype=jnp.float32, or initial_state=.")
        get_initial_state = getattr(cell, "get_initial_state", None)
        if get_initial_state is not None:
            initial_state = get_initial_state(inputs=None, batch_size=batch, dtype=dtype)
        else:
            initial_state = cell.zero_state(batch, dtype)
        _check_dtypes(cell, x, initial_state, "dtype=", api)
    else:
        initial_state = _fitted_state(cell, batch, initial_state, api)
        _check_dtypes(cell, x, initial_state, "initial_state", api)
    lengths = None
    if sequence_length is not None:
        try:
            lengths = jnp.asarray(sequence_length, jnp.int32)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{api}: sequence_length must be integer lengths, one per batch entry, "
                            f"got {sequence_length!r} ({error}).\n  fix: pass a list or [batch] "
                            "int array of each sequence's length, e.g. [5, 3].") from None
        if lengths.shape != (batch,):
            raise ValueError(f"sequence_length must have shape [batch_size] = ({batch},), got "
                             f"{lengths.shape}.\n  fix: pass one length per batch entry, "
                             f"{batch} in all (a list or a [batch] int array).")
    return initial_state, lengths


def _tf_cells(cell: Any) -> Optional[list]:
    """The cells inside ``cell`` (through wrappers and stacks) when all are TF's own cells, whose
    dtypes follow TF's rules; None when a user's cell is among them (its dtypes are its own)."""
    kind = type(cell)
    if kind.__call__ in (DropoutWrapper.__call__, ResidualWrapper.__call__, DeviceWrapper.__call__):
        return _tf_cells(cell._cell)
    call = getattr(kind, "call", None)
    if call is MultiRNNCell.call:
        parts = [_tf_cells(c) for c in cell._cells]
        return None if any(p is None for p in parts) else [c for p in parts for c in p or ()]
    if call in (BasicRNNCell.call, LSTMCell.call, GRUCell.call):
        return [cell]
    return None


def _check_dtypes(cell: Any, x: Any, state: Any, source: str, api: str) -> None:
    """TF's cells take floating inputs and states only (TF's ValueError); and a state of a
    narrower float than the cell's parameters would widen at the first step, which the time loop
    cannot carry (JAX's raw scan error; TF's concat error). Once per run."""
    cells = _tf_cells(cell)
    if cells is None:
        return
    for what, leaves in (("the inputs", jax.tree_util.tree_leaves(x)),
                         (source, jax.tree_util.tree_leaves(state))):
        for leaf in leaves:
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                fix = ("cast them, x.astype(jnp.float32), or look integer ids up first "
                       "(sp.layers.embedding)" if what == "the inputs" else
                       "pass dtype=jnp.float32" if what == "dtype=" else
                       "cast it, jax.tree_util.tree_map(lambda s: s.astype(jnp.float32), "
                       "initial_state), or omit it and pass dtype=")
                raise ValueError(
                    f"{api}: {type(cell).__name__} {_cell_path(cell, api)!r}: RNN cell only "
                    f"supports floating point inputs, but received dtype: "
                    f"{jnp.result_type(leaf).name} ({what}).\n  fix: {fix}.")
    if len({c._dtype for c in cells}) != 1:
        return
    computes = jnp.dtype(cells[0]._param_dtype(jax.tree_util.tree_leaves(x)[0]))
    for leaf in jax.tree_util.tree_leaves(state):
        have = jnp.result_type(leaf)
        if jnp.promote_types(have, computes) != have:
            why = ("its inputs' dtype" if cells[0]._dtype is None else
                   f"its own dtype={jnp.dtype(cells[0]._dtype).name}")
            raise ValueError(
                f"{api}: the state of {type(cell).__name__} {_cell_path(cell, api)!r} is "
                f"{have.name} ({source}), but the cell computes in {computes.name} ({why}), "
                f"so its state would become {computes.name} "
                f"at the first step.\n  fix: pass dtype={computes.name} (or cast initial_state "
                f"to {computes.name}); or cast the inputs to {have.name}.")


def _state_shapes(cell: Any, batch: int) -> Any:
    """What ``cell.zero_state(batch, dtype)`` returns, as ``jax.ShapeDtypeStruct`` leaves (their
    dtype is not checked), worked out from ``state_size`` without calling it; None for a cell that
    makes its own ``zero_state`` (a state of more dimensions) or is no ``RNNCell``."""
    zero_state = getattr(type(cell), "zero_state", None)
    if zero_state is MultiRNNCell.zero_state:
        parts = [_state_shapes(c, batch) for c in cell._cells]
        if any(part is None for part in parts):
            return None
        if cell._state_is_tuple:
            return tuple(parts)
        return jax.ShapeDtypeStruct((batch, cell.state_size), jnp.float32)
    if zero_state is _Wrapper.zero_state:
        return _state_shapes(cell._cell, batch)
    if zero_state is not RNNCell.zero_state:
        return None
    sizes, treedef = jax.tree_util.tree_flatten(cell.state_size)
    if not all(isinstance(n, (int, np.integer)) for n in sizes):
        return None
    return jax.tree_util.tree_unflatten(
        treedef, [jax.ShapeDtypeStruct((batch, int(n)), jnp.float32) for n in sizes])


def _plain(tree: Any) -> Any:
    """``tree``'s nesting with every tuple, named tuple and list a tuple and every leaf None: TF's
    cells read a state by position, so ``(c, h)`` is as good as ``LSTMStateTuple(c, h)``."""
    if isinstance(tree, (tuple, list)):
        return tuple(_plain(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    return None


class _Shown(str):
    """A string that is its own repr: a leaf shown as its shape in a structure's repr."""

    def __repr__(self) -> str:
        return str(self)


def _fitted_state(cell: Any, batch: int, state: Any, api: str, direct: bool = False) -> Any:
    """``state``, an ``initial_state`` (or, ``direct``, the state of a call ``cell(inputs,
    state)``), checked against the state ``cell`` makes (its structure, up to the kind of tuple,
    and each array's shape) and given the cell's own structure (scan carries it); a ValueError
    naming what differs, where the first step would fail inside lax."""
    expected = _state_shapes(cell, batch)
    if expected is None:
        return state
    wanted, treedef = jax.tree_util.tree_flatten_with_path(expected)
    given = jax.tree_util.tree_leaves(state)
    shapes = [tuple(np.shape(leaf)) for leaf in given]

    def refuse(what: str) -> ValueError:
        label = f"{type(cell).__name__} {_cell_path(cell, api)!r}"
        if direct:
            return ValueError(
                f"{api}: the state given to {label} does not fit it: {what}.\n  fix: pass a state "
                f"of the cell's structure and shapes for inputs of batch {batch}: "
                f"cell.zero_state({batch}, dtype) at the first step, then the state each call "
                "returns.")
        return ValueError(
            f"{api}: initial_state does not fit {label}: "
            f"{what}.\n  fix: pass the cell's zero_state(batch_size, dtype), or arrays of its "
            "structure and shapes, or omit initial_state and pass dtype=.")

    if _plain(state) != _plain(expected) or len(given) != len(wanted):
        shown = jax.tree_util.tree_unflatten(treedef, [_Shown(str(w.shape)) for _, w in wanted])
        found = ("None" if state is None else
                 f"one array of shape {shapes[0]}" if len(given) == 1 and given[0] is state else
                 f"{len(given)} array{'s' if len(given) != 1 else ''} "
                 f"({', '.join(str(shape) for shape in shapes)})")
        raise refuse(f"the state should be {'one array of shape ' if len(wanted) == 1 else ''}"
                     f"{shown!r}, got {found}")
    for (path, want), shape in zip(wanted, shapes):
        if shape != want.shape:
            where = f"'s {jax.tree_util.keystr(path)}" if path else ""
            raise refuse(f"the state{where} of shape {shape} should be {want.shape} ([batch_size, "
                         "state_size])")
    if jax.tree_util.tree_structure(state) != treedef:  # type: ignore[operator]  # (c, h): LSTMStateTuple
        return jax.tree_util.tree_unflatten(treedef, given)
    return state


def _cell_path(cell: Any, api: str) -> str:
    """The scope of ``cell``'s variables: its captured one, or the one its first call will open
    here (wrappers open none: their cell's)."""
    while isinstance(cell, _Wrapper):
        cell = cell._cell
    frame = _frame.current(api)
    captured = _this_call(getattr(cell, "_scopes", {}), frame)
    if captured is not None:
        return captured.name
    return frame.scope.prefix + str(getattr(cell, "name", None) or
                                    getattr(cell, "_base_name", type(cell).__name__))


def _step(cell: RNNCell, x: jax.Array, state: Any, t: Any, lengths: Optional[jax.Array], api: str):
    """One step; past a sequence's length (``t >= length``) its output is zeros and its state is
    carried through unchanged (TF's ``_rnn_step``)."""
    output, new_state = cell(x, state)
    if lengths is not None:
        live = t < lengths
        try:
            output, new_state = _masked(live, output, None), _masked(live, new_state, state)
        except (TypeError, ValueError):
            _raise_if_another_state(cell, state, new_state, api)
            raise
    return output, new_state


def _types_of(state: Any) -> Any:
    """``state``'s structure, shapes and dtypes, without its values: kept past the loop's trace,
    tracers would be leaked (``jax.checking_leaks`` says so)."""
    try:
        return jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), state)
    except TypeError:  # a leaf that is no array: the error below shows it as it is
        return state


def _raise_if_another_state(cell: Any, given: Any, returned: Any, api: str) -> None:
    """Once a step has failed: the error naming the cell, if it returned a state of another
    structure, shape or dtype than it was given, which no loop can carry (JAX's raw scan error;
    TF's while_loop: a TypeError for the dtype, a ValueError for the rest)."""
    def shown(tree):
        return jax.tree_util.tree_map(
            lambda a: _Shown(f"{jnp.result_type(a).name}{list(np.shape(a))}"), tree)

    wanted, treedef = jax.tree_util.tree_flatten_with_path(given)
    got = jax.tree_util.tree_leaves(returned)
    kind: type = ValueError
    if jax.tree_util.tree_structure(returned) != treedef:  # type: ignore[operator]
        where, going_in, coming_out = "", shown(given), shown(returned)
    else:
        for (path, a), b in zip(wanted, got):
            if np.shape(a) != np.shape(b) or jnp.result_type(a) != jnp.result_type(b):
                if np.shape(a) == np.shape(b):
                    kind = TypeError
                where = f"'s {jax.tree_util.keystr(path)}" if path else ""
                going_in, coming_out = shown(a), shown(b)
                break
        else:
            return
    label = (f"{type(cell).__name__} {_cell_path(cell, api)!r}" if isinstance(cell, RNNCell) else
             type(cell).__qualname__)
    fix = ("; cast it (new_state.astype(state.dtype)), or pass dtype= (or an initial_state) of "
           "the dtype the cell returns" if kind is TypeError else "")
    raise kind(f"{api}: the cell {label} returned another state than it was given: the state"
               f"{where} is {going_in!r} going in and {coming_out!r} coming out, and a time loop "
               f"carries one state of fixed structure, shapes and dtypes.\n  fix: return the new "
               f"state with the structure, shapes and dtypes of the state the cell is given{fix}.")


def _run(cell: RNNCell, inputs: Any, sequence_length, initial_state, dtype, time_major, api):
    inputs = jax.tree_util.tree_map(jnp.asarray, inputs)
    shapes = [x.shape for x in jax.tree_util.tree_leaves(inputs)]
    if not shapes or min(len(shape) for shape in shapes) < 3 or len({shape[:2] for shape in shapes}) > 1:
        raise ValueError(
            f"{api}'s inputs must be [batch, time, depth, ...] arrays (or [time, batch, "
            f"depth, ...] with time_major=True), a structure of them with the same batch and time, "
            f"got shapes {shapes}.\n  fix: add the time axis (x[:, None] for one step), or use "
            "sp.rnn.static_rnn for a list of [batch, depth] steps.")
    xs = _batch_major(inputs, time_major)  # [time, batch, ...] each
    state, lengths = _start(cell, shapes[0][1 if time_major else 0], initial_state, dtype,
                            sequence_length, api, xs)

    returned: list = []  # the traced step's new state's types, for the error below

    def body(carry, x):
        state, t = carry
        output, state = _step(cell, x, state, t, lengths, api)
        returned.append(_types_of(state))
        return (state, t + 1), output

    try:
        (final_state, _), outputs = scan(body, (state, jnp.zeros((), jnp.int32)), xs)
    except (TypeError, ValueError):
        if returned:
            _raise_if_another_state(cell, state, returned[-1], api)
        raise
    return _batch_major(outputs, time_major), final_state
