"""TF 1.x ``tf.compat.v1.layers`` on ``jax.lax``: same argument names, defaults and variable names.

A TF 1.x model ported line by line gets the same parameter names, because each layer opens its scope
exactly as TF's legacy ``Layer._set_scope`` does: ``scope(name, default_name=<layer kind>)``, or
``scope(name or <layer kind>, reuse=reuse)`` when ``reuse`` is set. So two unnamed ``conv2d`` calls
create ``conv2d/kernel`` and ``conv2d_1/kernel``, the counters restart in every newly entered scope,
``name="c"`` twice without reuse is TF's "already exists" error, and ``reuse=True`` (or a reusing
enclosing scope) shares the weights.

>>> def net(x, training=False):
...     x = sp.layers.conv2d(x, 16, 3, padding="same", activation=jax.nn.relu)
...     x = sp.layers.batch_normalization(x, training=training)
...     x = sp.layers.max_pooling2d(x, 2, 2)
...     return sp.layers.dense(sp.layers.flatten(x), 10)
>>> model = sp.transform_with_state(net)
>>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
>>> sorted(sp.flatten(params))[:2]
['batch_normalization/beta', 'batch_normalization/gamma']

Layer objects (``sp.layers.Dense(units)``, ``Conv2D``, ``BatchNormalization``, ...) follow TF's
object rules: the scope is fixed at the first call, later calls share the weights. ``Layer`` is
TF's base class for custom layers, and ``make_template`` (``sp.make_template``) TF's template,
built on the same captured scopes.

Parameters take the input's floating dtype, as TF layers do, and a layer refuses an input of another
dtype where TF 1.x does (a ``TypeError``): all do but ``conv1d``, ``conv2d`` and
``conv2d_transpose``, whose TF op takes int32 (int32 parameters, zeros by default, as in TF). Batch
normalization keeps its parameters and statistics in float32 for float16/bfloat16 inputs.

A layer's own regularizer (``kernel_regularizer=``, ``add_weight(regularizer=)``, ...) adds its
term to that of the enclosing scope's ``regularizer=``, as TF's layers do (each once, when the
weight is created), where ``sp.get_param(regularizer=)`` replaces the scope's, as
``tf.get_variable``'s does.

TF's ``tf.layers`` are Keras layers, so they take Keras's names: ``activation="relu"``,
``kernel_initializer="zeros"`` (Keras's initializers and defaults: ``"random_normal"`` has
stddev 0.05), ``kernel_regularizer="l2"`` (Keras's ``0.01 * sum(w**2)``) and
``kernel_constraint="max_norm"`` are taken here too, and ``units`` (``filters``) is cast with
``int()``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers
import re
import sys
import threading
import weakref
from typing import Any, Callable, ContextManager, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import _frame, _scope
from . import constraints as _constraints
from . import initializers as _initializers
from ._errors import (TF_PACKAGES, InvalidNameError, NestedTraceError, NotInTransformError,
                      ParamNotFoundError, ReuseArgumentError, StateError)
from ._layer_stack import _lookup as _stored_in
from ._layer_stack import _root as _root_store
from ._params import ApplyStore, InitStore, _as_dtype, get_param, get_state, set_state
from ._regularizers import _tensorflow_origin, l1_sum, ran_tensorflow
from ._scope import (_COUNT, _COUNT_ONLY, _TRACE, AUTO_REUSE, Scope, _check_components,
                     _check_name, _child, _describe_refused_reuse, _enter_name_scope,
                     _exit_name_scope, _revert, SignatureFacts, default_name_scope, reentered,
                     reuse_argument_error, scope)
from .initializers import ones, zeros

__all__ = [
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "BatchNormalization", "Conv1D",
    "Conv2D", "Conv2DTranspose", "Conv3D", "Conv3DTranspose", "Dense", "Dropout", "Flatten", "Layer",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "SeparableConv1D", "SeparableConv2D",
    "average_pooling1d", "average_pooling2d", "average_pooling3d", "batch_normalization", "conv1d",
    "conv2d", "conv2d_transpose", "conv3d", "conv3d_transpose", "dense", "dropout", "embedding",
    "embedding_lookup", "flatten", "layer_norm", "max_pooling1d", "max_pooling2d", "max_pooling3d",
    "separable_conv1d", "separable_conv2d",
]

IntOrPair = Union[int, Sequence[int]]


# --- shared helpers -------------------------------------------------------------------------------


class _Current:
    """Re-entering the current scope with the reuse it has and no name scope (what slim's layers do
    inside their own ``variable_scope``, and a layer object's body inside ``_Within``): the block's
    parameter requests and default names see what TF's captured-scope jump there would show them,
    and the counters it moves are reset when that enclosing scope closes, so the jump is skipped and
    ``apply`` fetches the parameters directly."""

    __slots__ = ("scope",)

    def __init__(self, current: Scope):
        self.scope = current

    def __enter__(self) -> Scope:
        return self.scope

    def __exit__(self, *exc_info: Any) -> None:
        return None


class _Within:
    """TF's jump into a layer object's captured scope for its body (``variable_scope(captured,
    reuse=reuse, auxiliary_name_scope=False)``), with ``scope = reentered(captured, reuse)`` as the
    scope the body sees: it keeps ``captured``'s direct lookup in ``apply``.

    The body runs user code (the activation), which may open scopes, so the default-name counters
    jump too, as in ``sp.scope(captured)``: the captured path's entry count goes up and stays up (a
    later ``default_name`` scope of that name is numbered past it), the body's scopes are numbered
    under the captured path, and every other count the body moves is rolled back on exit."""

    __slots__ = ("scope", "_outer", "_outer_node")

    def __init__(self, scope: Scope):
        self.scope = scope

    def __enter__(self) -> Scope:
        frame = _frame.current("sp.layers")
        self._outer, self._outer_node = frame.scope, frame.node
        name = self.scope.prefix[:-1]
        node = _child(frame.root_node, name) if name else frame.root_node
        undo = frame.undo
        if undo:  # _open, inline: an enclosing jump rolls this entry back
            undo[-1].append((node, node[_COUNT], _COUNT_ONLY, None))
        elif undo is None:
            undo = frame.undo = []
        node[_COUNT] += 1
        undo.append([])
        frame.scope, frame.node = self.scope, node
        return self.scope

    def __exit__(self, *exc_info: Any) -> None:
        frame = _frame._FRAME.get()
        log = frame.undo.pop()
        if log:
            _revert(log)
        frame.scope, frame.node = self._outer, self._outer_node


def _layer_scope(name: Any, base_name: str, reuse: Any, *,
                 fetches_only: bool = False) -> ContextManager[Scope]:
    """TF's legacy ``Layer._set_scope`` followed by re-entering the captured scope with ``reuse``.

    ``fetches_only``: the block is a layer's body (its parameter requests, arithmetic and
    activation), run right inside the scope ``name`` (slim's, or a layer object's ``_Within``) when
    ``name`` is current, so re-entering it may be skipped (``_Current``)."""
    if isinstance(name, Scope):  # a layer object's scope, captured at its first call, or slim's
        if fetches_only:
            frame = _frame._FRAME.get()
            if frame is not None and frame.scope is name and (not reuse or reuse is name._reuse):
                return _Current(name)
        return scope(name, reuse=reuse if reuse else None, auxiliary_name_scope=False)
    # An empty name is none, as TF's layers take it (Layer._init_set_name: `if not name`).
    if reuse is True or reuse is AUTO_REUSE:
        return scope(name or base_name, reuse=reuse)
    if reuse not in (None, False):
        raise _reuse_error(_label(base_name, name), reuse)
    return scope(name) if name else default_name_scope(base_name)


def _reuse_error(label: str, reuse: Any) -> ReuseArgumentError:
    """The refusal of a layer's ``reuse`` that is none of None, False, True and ``sp.AUTO_REUSE``,
    in ``sp.scope``'s words (naming TF's own ``AUTO_REUSE`` left over in ported code)."""
    return reuse_argument_error(reuse, f"{label} with reuse={_describe_refused_reuse(reuse)}")


def _label(kind: str, name: Any) -> str:
    """How an error names a layer: its kind, and its scope path or name if it has one."""
    if isinstance(name, Scope):
        name = name.name
    elif isinstance(name, str):
        name = name.rstrip("/")  # a slim pool's name scope
    else:
        name = None
    return f"{kind} {name!r}" if name else kind


# What to pass instead of a size, stride or rate below 1 (TF refuses those at graph build).
_AT_LEAST_1 = {
    "kernel_size": "a kernel of at least 1 along every axis.",
    "pool_size": "a pool_size (slim: kernel_size) of at least 1 along every axis.",
    "strides": "strides=1 (slim: stride=1) for no striding.",
    "dilation_rate": "dilation_rate=1 (slim: rate=1) for an undilated kernel.",
}


def _tuple(value: IntOrPair, n: int, what: str, kind: str, name: Any = None,
           truncate: bool = False) -> Tuple[int, ...]:
    """``value`` (an int, or ``n`` ints) as ``n`` ints, each at least 1; ``kind`` and ``name``
    name the layer in the errors. A float entry is refused (TF's convolutions refuse it), or with
    ``truncate`` cut to an int (TF's pooling ops take their sizes as int attributes)."""
    if isinstance(value, (int, np.integer)):
        sizes = (int(value),) * n
    else:
        try:  # Keras's normalize_tuple: n entries, each int()-able
            entries = None if isinstance(value, str) else tuple(value)
            if entries is not None:
                sizes = tuple(int(v) for v in entries)
        except (TypeError, ValueError, OverflowError):
            entries = None
        if entries is None or len(entries) != n:
            if isinstance(value, jax.core.Tracer) or (isinstance(value, (list, tuple)) and any(
                    isinstance(v, jax.core.Tracer) for v in value)):  # (int() raised JAX's error)
                raise _traced_size_error(_label(kind, name), what, value)
            integral = isinstance(value, (float, np.floating)) and float(value).is_integer()
            one = int(value) if integral else 3  # type: ignore[call-overload]
            raise ValueError(f"{_label(kind, name)}: the `{what}` argument must be a tuple of {n} "
                             f"integers. Received: {value!r}\n  fix: pass an int for every axis, "
                             f"e.g. {what}={one}, or a tuple of {n} ints.")
        if not truncate and not all(isinstance(v, (int, np.integer)) for v in entries):
            raise TypeError(f"{_label(kind, name)}: the `{what}` argument has an entry that is no "
                            f"integer: {value!r} (TF: Dimension value must be integer).\n  fix: "
                            f"pass ints, e.g. {what}={sizes}.")
    if min(sizes) < 1:  # lax would fail deep in lowering (0) or compute garbage (negative)
        raise ValueError(f"{_label(kind, name)}: the `{what}` argument must be integers of at least "
                         f"1. Received: {what}={value!r}\n  fix: {_AT_LEAST_1[what]}")
    return sizes


def _pair(value: IntOrPair, what: str, kind: str, name: Any = None) -> Tuple[int, int]:
    return _tuple(value, 2, what, kind, name)  # type: ignore[return-value]


def _traced_size_error(label: str, what: str, value: Any) -> TypeError:
    """The refusal of a layer size (``units``, ``filters``, ...) that is a JAX tracer: the model
    was traced with it as an argument (``jax.jit(model.apply)(params, x, num_classes)``), so the
    parameters' shapes would depend on a traced value. The fix names the call being traced
    (``init`` under ``jax.jit(model.init)``) and where the model's arguments start in it."""
    frame = _frame._FRAME.get()
    if frame is not None and frame.mode == _frame.INIT:
        call, first = "model.init", "the key is position 0: the model's arguments start at 1"
    elif frame is not None and frame.with_state:
        call, first = ("model.apply", "params is position 0 and state 1: the model's arguments "
                                      "start at 2")
    else:
        call, first = "model.apply", "params is position 0: the model's arguments start at 1"
    return TypeError(
        f"{label}: {what}={value!r} is a traced value, not an integer: a parameter's shape needs a "
        "Python int when the model is traced (jax.jit traces every argument it is not told is "
        "static; TF refuses a tensor here too).\n"
        f"  fix: pass {what} as a Python int: mark the argument static, e.g. jax.jit({call}, "
        f"static_argnums=<its position>) ({first}; or static_argnames=), or bind it into the "
        "model function (functools.partial) before sp.transform.")


def _check_positive(value: Any, what: str, kind: str, name: Any) -> Any:
    """``value``, a channel count (``filters``, ``depth_multiplier``), refused below 1 (lax would
    return a zero-channel output, which ``init`` turns into zero-size weights downstream). A float
    ``filters`` is cast with ``int()``, as Keras's ``Conv`` (under TF's layers) does."""
    if what == "filters" and isinstance(value, float):
        value = int(value)
    if value is not None and not isinstance(value, (int, np.integer)):
        if isinstance(value, jax.core.Tracer):
            raise _traced_size_error(_label(kind, name), what, value)
        raise TypeError(f"{_label(kind, name)}: {what}={value!r} is no integer (TF refuses it "
                        f"too).\n  fix: pass an int, e.g. {what}=2.")
    if value is not None and value < 1:
        slim_name = {"filters": " (slim: `num_outputs`)"}.get(what, "")
        raise ValueError(f"{_label(kind, name)}: invalid value for argument `{what}`{slim_name}. "
                         f"Expected a strictly positive value. Received {what}={value!r}.\n"
                         f"  fix: pass {what} >= 1.")
    return value


def _check_valid_window(kind: str, name: Any, shape: Tuple[int, ...], sizes: Tuple[int, ...],
                        window: Tuple[int, ...], dilation: Optional[Tuple[int, ...]],
                        what: str) -> None:
    """TF's graph-build refusal of a ``'VALID'`` window (``window`` dilated by ``dilation``) wider
    than the input's spatial ``sizes`` along some axis. lax returns a zero-size output instead,
    which ``init`` turns into zero-size weights downstream: a silent mis-port."""
    for i, size in enumerate(sizes):
        span = window[i] if dilation is None else (window[i] - 1) * dilation[i] + 1
        if isinstance(size, int) and span > size:  # (a symbolic size is not checked)
            dilated = ""
            if dilation is not None and max(dilation) > 1:
                spans = tuple((k - 1) * d + 1 for k, d in zip(window, dilation))
                dilated = f" at dilation {dilation}, spanning {spans},"
            raise ValueError(
                f"Negative dimension size caused by subtracting {span} from {size}: "
                f"{_label(kind, name)} with padding='VALID' slides a {what} of {window}{dilated} "
                f"over an input of spatial size {tuple(sizes)} (shape {tuple(shape)}), which "
                "leaves no output.\n  fix: padding='SAME', a smaller "
                f"{what}{' or dilation' if dilated else ''}, or a larger input.")


# Spatial rank -> (channels-last layout, channels-first layout, kernel layout) for lax's convolutions.
_LAYOUTS = {1: ("NWC", "NCW", "WIO"), 2: ("NHWC", "NCHW", "HWIO"), 3: ("NDHWC", "NCDHW", "DHWIO")}


def _padding(padding: str, kind: str = "", name: Any = None, causal: bool = False) -> str:
    """``padding`` upper-cased: ``'VALID'``, ``'SAME'``, or with ``causal`` (a 1-d convolution,
    TF's ``Conv1D``/``SeparableConv1D``) ``'CAUSAL'``; ``kind`` and ``name`` name the layer that
    refuses a ``'causal'`` it cannot take."""
    upper = str(padding).upper()
    if upper not in ("VALID", "SAME"):
        if upper == "CAUSAL":
            if causal:
                return upper
            raise ValueError(
                f"{_label(kind, name)}: Causal padding is only supported for `Conv1D` and "
                f"`SeparableConv1D` (conv1d, separable_conv1d). Received: padding={padding!r}\n"
                "  fix: padding='same' or 'valid'; for a causal convolution along one axis, "
                "left-pad that axis by dilation * (kernel - 1) (jnp.pad) and pass padding='valid'.")
        choices = "'valid', 'same' or 'causal'" if causal else "'valid' or 'same'"
        raise ValueError(f"The `padding` argument must be {choices}. Received: {padding!r}")
    return upper


def _channels_last(data_format: Optional[str]) -> bool:
    if data_format == "channels_last" or data_format is None:  # None: Keras's default image format
        return True
    if data_format == "channels_first":
        return False
    # Keras's normalize_data_format lower-cases it: TF's layers take "Channels_Last" too
    lower = data_format.lower() if isinstance(data_format, str) else data_format
    if lower not in ("channels_last", "channels_first"):
        raise ValueError("The `data_format` argument must be one of 'channels_first', "
                         f"'channels_last'. Received: {data_format!r}")
    return lower == "channels_last"


def _check_in_channels(in_channels: int, shape: Tuple[int, ...], kind: str, name: Any) -> None:
    """TF's graph-build refusal of a convolution over zero input channels (lax would make a
    zero-size kernel, and ``init`` zero-size weights)."""
    if in_channels == 0:
        raise ValueError(f"{_label(kind, name)}: Depth of filter must not be 0: the input, shape "
                         f"{tuple(shape)}, has 0 channels (TF refuses it too).\n  fix: give the "
                         "input at least one channel, e.g. check the layer before it does not "
                         "output 0 units or filters, and that data_format names its channels "
                         "axis.")


_SPATIAL_AXES = {1: "width", 2: "height, width", 3: "depth, height, width"}


def _rank_error(kind: str, name: Any, rank: int, shape: Tuple[int, ...]) -> ValueError:
    """TF's refusal of a convolution's or pooling's input that is not a batch of ``rank``-d
    examples (its input spec's ``ndim``, in TF's words)."""
    ndim, axes = rank + 2, _SPATIAL_AXES[rank]
    if len(shape) == ndim - 1:
        fix = f"give the input its batch axis, e.g. x[None] for one example of shape {tuple(shape)}"
    else:
        fix = (f"pass a batch of rank {ndim}: [batch, {axes}, channels] (with "
               f"data_format='channels_first', [batch, channels, {axes}])")
    return ValueError(f"Input 0 of layer {_label(kind, name)} is incompatible with the layer: "
                      f"expected ndim={ndim}, found ndim={len(shape)}. Full shape received: "
                      f"{tuple(shape)}\n  fix: {fix}.")


_FLOAT32 = np.dtype(np.float32)
_FLOATING: dict = {}  # dtype -> whether it is a floating dtype (jnp.issubdtype costs ~2 us a call)


def _param_dtype(inputs: jax.Array, kind: Optional[str] = None, name: Any = None,
                 int32_ok: bool = False, tf_refusal: Optional[str] = None) -> np.dtype:
    """The parameters' dtype for ``inputs``: theirs if floating. TF 1.x's layers refuse any other
    input (a ``TypeError`` here, naming the layer ``kind`` and ``name``), but for int32 where
    ``int32_ok`` (``tf.layers.conv1d``/``conv2d``/``conv2d_transpose``, whose op takes int32: int32
    parameters, as TF makes them). Without ``kind`` (the RNN cells, which refuse such an input
    themselves) float32 (a custom ``Layer`` takes its input's dtype: ``_input_dtype``).
    ``tf_refusal``: how TF refuses the input, if not with its usual ``TypeError``."""
    if isinstance(inputs, jax.Array):  # its dtype is canonical already: no promotion to work out
        dtype = inputs.dtype
    else:
        dtype = jnp.result_type(inputs)
    floating = _FLOATING.get(dtype)
    if floating is None:
        floating = _FLOATING[dtype] = bool(jnp.issubdtype(dtype, jnp.floating))
    if floating:
        return dtype
    if kind is None:
        return _FLOAT32
    if int32_ok and dtype == np.int32:
        return dtype
    raise _input_dtype_error(kind, name, dtype, "a floating-point", tf_refusal)


_TYPE_ERROR_REFUSAL = "a TypeError: its variables or ops take no such dtype"


def _input_dtype_error(kind: str, name: Any, dtype: Any, takes: str,
                       tf_refusal: Optional[str] = None) -> TypeError:
    """A layer's refusal of an input of ``dtype`` (it ``takes`` another kind), as TF 1.x's
    (``tf_refusal``: TF's way of refusing it, if not its usual ``TypeError``)."""
    return TypeError(f"{_label(kind, name)}: the input has dtype {np.dtype(dtype).name}, but this "
                     f"layer only takes {takes} input (TF 1.x refuses it too, with "
                     f"{tf_refusal or _TYPE_ERROR_REFUSAL}).\n"
                     "  fix: cast the input first, e.g. x.astype(jnp.float32).")


def _cast(x: Any, dtype: np.dtype) -> Any:
    """``x.astype(dtype)``, skipped when ``x`` has that dtype (the common case; each ``astype``
    runs JAX's dispatch even when it changes nothing)."""
    return x if x.dtype == dtype else x.astype(dtype)


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a number (not a bool) or an array, which may hold one: what a layer's
    rate, momentum or keep probability can be (a traced one too)."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number, np.ndarray,
                                                              jax.Array))


def _static_flag(flag: Any, argument: str = "training") -> Any:
    """Python and NumPy booleans (and concrete 0-d arrays) become a Python bool; tracers stay;
    a string or other object is refused, naming ``argument``."""
    if isinstance(flag, (bool, np.bool_, int, np.integer)):
        return bool(flag)
    if isinstance(flag, (np.ndarray, jax.Array)) and not isinstance(flag, jax.core.Tracer):
        return bool(flag)
    if flag is not None and not isinstance(flag, (float, np.floating, jax.core.Tracer)):
        raise TypeError(f"{argument} must be a bool (or a boolean scalar, traced too), got {flag!r} "
                        f"of type {type(flag).__name__}.\n  fix: pass {argument}=True or False, or a "
                        "JAX bool to switch it inside jit.")
    return flag


def _activity_loss(regularizer: Callable, outputs: Any, api: str) -> None:
    """TF's layers add ``regularizer(output) / batch size`` to the regularization losses for each
    output of each call (the penalty of the mean example): ``sp.regularization_loss()`` of this call
    sums it with the weights' terms."""
    if isinstance(regularizer, (str, dict)):  # TF's layers take Keras's names ("l2" is 0.01 *
        # sum(x**2)) and configs
        regularizer = _from_keras(api, None, "activity_regularizer", regularizer)
    if not callable(regularizer):
        raise TypeError(f"{api}: activity_regularizer must be a function of the layer's output, got "
                        f"{regularizer!r}.\n  fix: pass a function, e.g. sp.l2_regularizer(1e-4), or "
                        "a Keras name, e.g. 'l2'.")
    frame = _frame.current(api)
    if frame.loop is not None or _TRACE.value is not frame.trace or (
            type(frame.store) is not ApplyStore and type(frame.store) is not InitStore):
        where = frame.loop or "a JAX transformation (vmap, a lax loop, ...) or an sp.layer_stack block"
        raise NotImplementedError(
            f"{api}: activity_regularizer inside {where}: an output made there cannot leave it to be "
            "summed by sp.regularization_loss().\n  fix: return the output from the function (a scan "
            "output) and add the penalty, regularizer(output) / batch size, to the loss outside it.")
    for output in jax.tree_util.tree_leaves(outputs):
        frame.regularized.append((functools.partial(_per_example_loss, regularizer), output))


def _activated(y: jax.Array, activation: Optional[Callable], activity_regularizer: Optional[Callable],
               kind: str) -> jax.Array:
    """A layer's output: ``activation(y)``, whose activity penalty (if any) joins the losses."""
    if activation is not None:
        try:
            y = activation(y)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as error:
            raise _tf_activation_error(kind, activation, error) from error
    if activity_regularizer is not None:
        _activity_loss(activity_regularizer, y, f"sp.layers.{kind}")
    return y


def _tf_activation_error(kind: str, activation: Callable,
                         error: BaseException) -> BaseException:
    """The error of an activation that calls TensorFlow ops on the layer's JAX array
    (``lambda v: tf.nn.leaky_relu(v, alpha=0.2)``); ``error`` itself for any other failure."""
    if not ran_tensorflow(error):
        return error
    return TypeError(
        f"sp.layers.{kind}: its activation {getattr(activation, '__qualname__', activation)!r} "
        "calls TensorFlow ops on the layer's JAX array (TensorFlow reads it as a NumPy array, which "
        f"a traced one cannot be: {type(error).__name__}).\n"
        "  fix: write it with jax.numpy or jax.nn, e.g. lambda v: jax.nn.leaky_relu(v, 0.2).")


def _per_example_loss(regularizer: Callable, output: jax.Array) -> Any:
    loss = regularizer(output)
    if loss is None:  # sp.no_regularizer
        return None
    loss = jnp.asarray(loss)
    return loss / jnp.asarray(jnp.shape(output)[0], loss.dtype)  # TF casts the batch size


def _with_scope_terms(*regularizers: Any) -> tuple:
    """Each of a layer's weight regularizers as ``get_param(regularizer=)`` should take it, in the
    layer's scope (call it there, when one is not None).

    TF's ``tf.layers`` ``Layer.add_weight`` creates the weight with ``get_variable`` without the
    layer's regularizer, so the enclosing scope's ``regularizer=`` applies, and then adds the
    layer's own term: both count, the scope's first. ``get_param`` takes one regularizer, whose
    term it adds when the weight is created (never on reuse), as TF adds both; so a layer's own
    regularizer, under a scope with one, becomes the two in turn. None (the scope's alone applies)
    and what is not a function (``get_param`` says so, naming the weight) pass as they are."""
    scope_regularizer = _frame._FRAME.get().scope.regularizer
    if scope_regularizer is None:
        return regularizers
    return tuple(regularizer if regularizer is None or not callable(regularizer) else
                 _both_terms(scope_regularizer, regularizer) for regularizer in regularizers)


def _both_terms(scope_regularizer: Callable, regularizer: Callable) -> Callable:
    both = functools.partial(_scope_then_layer_term, scope_regularizer, regularizer)
    # A stock regularizer's mark (see _regularizers._stock): get_param refuses it on a non-floating
    # weight at creation, naming it, as TF does.
    mark = (getattr(regularizer, "floating_only", None)
            or getattr(scope_regularizer, "floating_only", None))
    if mark is not None:
        both.floating_only = mark  # type: ignore[attr-defined]
    return both


def _scope_then_layer_term(scope_regularizer: Callable, regularizer: Callable, value: Any) -> Any:
    """The scope's term of ``value`` plus the layer's (either may be None: no term)."""
    first, second = scope_regularizer(value), regularizer(value)
    if first is None or second is None:
        return second if first is None else first
    if getattr(first, "dtype", None) != getattr(second, "dtype", None):
        # summed as sp.regularization_loss() sums terms: JAX's standard promotion, written out
        with jax.numpy_dtype_promotion("standard"):
            dtype = jnp.result_type(first, second)
        first, second = jnp.asarray(first, dtype), jnp.asarray(second, dtype)
    return first + second


def _constraint(identifier: Any) -> Any:
    """A layer's ``*_constraint=`` argument: None, a callable, or one of Keras's identifiers (TF's
    layers take ``"max_norm"`` and friends)."""
    return identifier if identifier is None or callable(identifier) else _constraints.get(identifier)


# --- Keras identifiers: TF's tf.layers are Keras layers, which take names -------------------------
#
# tf.compat.v1.layers (and TF's RNN cells) resolve a string activation, initializer, regularizer or
# constraint with keras's activations.get, initializers.get (its TF 1.x table), regularizers.get and
# constraints.get. The layers here do the same, on the rare path a string takes: a layer's call
# tests its arguments for strings once and resolves them here.


def _hard_sigmoid(x: jax.Array) -> jax.Array:
    """Keras's ``hard_sigmoid``: ``clip(0.2 x + 0.5, 0, 1)``."""
    return jnp.clip(x * 0.2 + 0.5, 0.0, 1.0)


def _keras_linear(x: jax.Array) -> jax.Array:
    """Keras's ``linear``: the identity."""
    return x


# Keras's activations by name, with Keras's defaults (gelu exact, leaky_relu tf.nn's slope 0.2).
_KERAS_ACTIVATIONS: Dict[str, Callable] = {
    "relu": jax.nn.relu, "relu6": jax.nn.relu6, "elu": jax.nn.elu, "selu": jax.nn.selu,
    "sigmoid": jax.nn.sigmoid, "hard_sigmoid": _hard_sigmoid, "tanh": jnp.tanh,
    "softplus": jax.nn.softplus, "softsign": jax.nn.soft_sign, "swish": jax.nn.silu,
    "silu": jax.nn.silu, "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "exponential": jnp.exp, "linear": _keras_linear, "mish": jax.nn.mish,
    "softmax": functools.partial(jax.nn.softmax, axis=-1),
    "log_softmax": functools.partial(jax.nn.log_softmax, axis=-1),
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=0.2),
}
# Keras's advanced-activation layer classes, which keras.activations.get also takes by name (not
# here), and what to pass instead.
_KERAS_ACTIVATION_LAYERS = {
    "ReLU": "'relu'", "ELU": "'elu'", "Softmax": "'softmax'",
    "LeakyReLU": "functools.partial(jax.nn.leaky_relu, negative_slope=0.3) (the class's slope)",
    "ThresholdedReLU": "lambda x: jnp.where(x > 1.0, x, 0.0) (the class's theta=1)",
    "PReLU": "a function of a slope made with sp.get_param (PReLU learns it)"}

# Keras's initializer classes (sp.initializers has each, with Keras's defaults), by their names and
# snake_case names, and Keras's four short aliases.
_KERAS_INITIALIZER_CLASSES = (
    "Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "Identity", "LecunNormal",
    "LecunUniform", "Ones", "Orthogonal", "RandomNormal", "RandomUniform", "TruncatedNormal",
    "VarianceScaling", "Zeros")
_KERAS_INITIALIZERS: Dict[str, str] = {
    **{name: name for name in _KERAS_INITIALIZER_CLASSES},
    **{re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(): name for name in _KERAS_INITIALIZER_CLASSES},
    "normal": "RandomNormal", "uniform": "RandomUniform", "one": "Ones", "zero": "Zeros",
}

# Keras's regularizers by name, as (l1, l2) factors of l1 * sum(|w|) + l2 * sum(w**2): "l1_l2" has
# 0.01 for both, but the class L1L2's defaults are 0 (a zero term).
_KERAS_REGULARIZERS: Dict[str, Tuple[float, float]] = {
    "L1": (0.01, 0.0), "l1": (0.01, 0.0), "L2": (0.0, 0.01), "l2": (0.0, 0.01),
    "l1_l2": (0.01, 0.01), "L1L2": (0.0, 0.0)}


def _keras_regularizer(l1: float, l2: float) -> Callable[[jax.Array], jax.Array]:
    """Keras's ``L1L2(l1, l2)``: ``l1 * sum(|w|) + l2 * sum(w**2)`` (not TF 1.x's
    ``l2_regularizer``, which halves the sum), each term only if its factor is not 0."""

    def regularizer(w: jax.Array) -> jax.Array:
        penalty = jnp.zeros((), w.dtype)
        if l1:
            penalty = penalty + l1 * l1_sum(w)  # (TF's gradient: 0 at w == 0)
        if l2:
            penalty = penalty + l2 * jnp.sum(jnp.square(w))
        return penalty

    regularizer.__name__ = regularizer.__qualname__ = f"keras_l1_l2_{l1:g}_{l2:g}"
    return regularizer


def _from_keras(kind: str, name: Any, argument: str, identifier: Any) -> Any:
    """``identifier`` as TF's layers take it for ``argument`` (``activation``, ``*_initializer``,
    ``*_regularizer``, ``*_constraint``): a name is Keras's, and so is a config dict
    (``{"class_name": "Constant", "config": {"value": 2.0}}``) for an initializer or regularizer;
    a number or an array is no initializer (TF refuses it too); anything else is returned as is."""
    if argument.endswith("constraint"):
        return _constraint(identifier)  # Keras's names and configs: sp.constraints.get
    if not isinstance(identifier, str):
        if identifier is None or callable(identifier):
            if identifier is not None and argument.endswith("activation") and _is_tensorflow(
                    identifier):
                raise _tensorflow_activation_error(_label(kind, name), argument, identifier)
            return identifier
        if argument.endswith("activation"):  # a Keras config dict, a number, ...: TF fails too
            raise TypeError(
                f"{_label(kind, name)}: {argument}={identifier!r} is neither a function nor the name of a Keras "
                f"activation.\n  fix: pass a function, e.g. {argument}=jax.nn.relu, or one of "
                f"the Keras names {sorted(_KERAS_ACTIVATIONS)}.")
        if isinstance(identifier, dict) and argument.endswith(("initializer", "regularizer")):
            return _from_keras_config(_label(kind, name), argument, identifier)
        if argument.endswith("initializer"):
            raise _not_an_initializer(_label(kind, name), argument, identifier)
        return identifier
    label = _label(kind, name)
    if argument.endswith("activation"):
        found = _KERAS_ACTIVATIONS.get(identifier)
        if found is not None:
            return found
        if identifier in _KERAS_ACTIVATION_LAYERS:
            raise ValueError(
                f"{label}: {argument}={identifier!r} names a Keras layer class, which TF's layers "
                "take but sp.layers does not (only Keras's activation functions by name).\n"
                f"  fix: pass {argument}={_KERAS_ACTIVATION_LAYERS[identifier]}.")
        raise ValueError(
            f"{label}: unknown activation {identifier!r} (TF: Unknown activation function "
            f"{identifier!r}).\n  fix: one of the Keras names {sorted(_KERAS_ACTIVATIONS)}, or "
            f"pass a function, e.g. {argument}=jax.nn.relu.")
    if argument.endswith("initializer"):
        class_name = _KERAS_INITIALIZERS.get(identifier)
        if class_name is None:
            raise ValueError(
                f"{label}: unknown initializer {identifier!r} for {argument}= (TF: Unknown "
                f"initializer: {identifier!r}).\n  fix: one of the Keras names "
                f"{sorted(n for n in _KERAS_INITIALIZERS if n.islower())}, or an initializer from "
                "sp.initializers, e.g. sp.initializers.zeros.")
        return getattr(_initializers, class_name)()
    if argument.endswith("regularizer"):
        factors = _KERAS_REGULARIZERS.get(identifier)
        if factors is None:
            raise ValueError(
                f"{label}: unknown regularizer {identifier!r} for {argument}=.\n  fix: one of "
                f"{', '.join(repr(n) for n in _KERAS_REGULARIZERS)} (Keras's, with factor 0.01), "
                "or a function of the weight, e.g. sp.l2_regularizer(1e-4).")
        return _keras_regularizer(*factors)
    raise AssertionError(f"no Keras identifiers for {argument}=")


# --- a TensorFlow function as an activation ---------------------------------------------------------
#
# Ported code passes activation=tf.nn.relu (slim: activation_fn=tf.nn.relu): TF's function computes
# on TF tensors, so traced it fails deep in JAX (a tracer cannot become a NumPy array) and eagerly
# it returns a TF tensor. The layers test for it once per call, with the arguments they resolve.

# TF's activation functions (by __name__, TF 2's "_v2" suffix dropped) and what computes the same
# on JAX arrays, with TF's defaults; the Keras name sp.layers' activation= takes is the same name
# (_KERAS_ACTIVATIONS), "exponential" for exp.
_TF_ACTIVATIONS: Dict[str, str] = {
    "relu": "jax.nn.relu", "relu6": "jax.nn.relu6", "elu": "jax.nn.elu", "selu": "jax.nn.selu",
    "sigmoid": "jax.nn.sigmoid", "tanh": "jnp.tanh", "softplus": "jax.nn.softplus",
    "softsign": "jax.nn.soft_sign", "swish": "jax.nn.silu", "silu": "jax.nn.silu",
    "gelu": "functools.partial(jax.nn.gelu, approximate=False)", "mish": "jax.nn.mish",
    "exp": "jnp.exp", "exponential": "jnp.exp", "softmax": "jax.nn.softmax",
    "log_softmax": "jax.nn.log_softmax",
    "leaky_relu": "functools.partial(jax.nn.leaky_relu, negative_slope=0.2)",
    "hard_sigmoid": "lambda x: jnp.clip(0.2 * x + 0.5, 0.0, 1.0)",
    "identity": "None", "linear": "None",
}
_KERAS_NAME_OF_TF = {"exp": "exponential"}


def _is_tensorflow(fn: Any) -> bool:
    """Whether the callable ``fn`` is TensorFlow's (``tf.nn.relu``, ``tf.keras.activations.tanh``,
    a Keras layer object). A JAX function costs one ``getattr`` and a string test."""
    module = getattr(fn, "__module__", None)  # a callable object's: its class's
    return type(module) is str and module.startswith(TF_PACKAGES) and _tf_package(fn) is not None


def _tf_package(fn: Any) -> Optional[str]:
    """The TensorFlow package ``fn`` comes from, or None (also for Keras 3 on its JAX backend,
    whose functions compute on JAX arrays)."""
    package = _tensorflow_origin(fn)
    if package == "keras":
        config = getattr(sys.modules.get("keras"), "config", None)
        backend = getattr(config, "backend", None)
        if callable(backend) and backend() == "jax":
            return None
    return package


def _tensorflow_activation_error(label: str, argument: str, fn: Any,
                                 names: bool = True) -> TypeError:
    """The refusal of TensorFlow's ``fn`` as the activation ``argument`` of the layer ``label``,
    with the JAX function to pass instead, and (``names``: the argument takes Keras's names, as
    tf.layers' ``activation=`` does and slim's ``activation_fn=`` does not) its name."""
    origin = "a Keras" if _tf_package(fn) == "keras" else "a TensorFlow"  # (Keras 3 on TF's backend)
    if inspect.isroutine(fn):
        name = getattr(fn, "__name__", "")
        given = f"{fn.__module__}.{name} is {origin} function"
        name = name[:-3] if name.endswith("_v2") else name
    else:
        name = type(fn).__name__
        given = f"<{name} object from {type(fn).__module__}> is {origin} layer"
        layer_fix = _KERAS_ACTIVATION_LAYERS.get(name, "")
        name = layer_fix.strip("'") if layer_fix.startswith("'") else ""
    equivalent = _TF_ACTIVATIONS.get(name)
    keras_name = _KERAS_NAME_OF_TF.get(name, name)
    if equivalent is None:
        fix = (f"pass a JAX function, e.g. {argument}=jax.nn.relu"
               + (", or one of Keras's names, e.g. 'relu'" if names else ""))
    elif equivalent == "None":
        fix = f"{argument}=None (no activation)"
    else:
        fix = f"{argument}={equivalent}" + (
            f" (or the name {keras_name!r})" if names and keras_name in _KERAS_ACTIVATIONS else "")
    return TypeError(
        f"{label}: {argument}={given}: it computes on TensorFlow tensors, not on JAX arrays, so "
        "traced (init, jax.jit) it fails on the traced array and eagerly it returns a TensorFlow "
        f"tensor.\n  fix: {fix}.")


# The arguments of Keras's regularizer classes (and their lower-case aliases), as indices into
# (l1, l2); L1 and L2 also take `l`.
_KERAS_REGULARIZER_ARGUMENTS: Dict[str, Dict[str, int]] = {
    "L1": {"l1": 0, "l": 0}, "l1": {"l1": 0, "l": 0}, "L2": {"l2": 1, "l": 1},
    "l2": {"l2": 1, "l": 1}, "L1L2": {"l1": 0, "l2": 1}, "l1_l2": {"l1": 0, "l2": 1}}


def _from_keras_config(label: str, argument: str, config: dict) -> Callable:
    """Keras's ``deserialize`` of an initializer's or regularizer's config dict, ``{"class_name":
    <a class name or alias the string form takes>, "config": {<its arguments>}}``."""
    class_name, options = config.get("class_name"), config.get("config") or {}
    what = "initializer" if argument.endswith("initializer") else "regularizer"
    example = ("{'class_name': 'Constant', 'config': {'value': 0.5}}" if what == "initializer" else
               "{'class_name': 'L2', 'config': {'l2': 1e-4}}")
    if not isinstance(class_name, str) or not isinstance(options, dict):
        raise ValueError(
            f"{label}: {argument}={config!r} is no Keras config (TF: Improper config format: "
            "expecting a dict with `class_name` and `config` as keys).\n"
            f"  fix: e.g. {argument}={example}.")
    if what == "initializer":
        found = _KERAS_INITIALIZERS.get(class_name)
        if found is None:
            raise ValueError(
                f"{label}: unknown initializer {class_name!r} in {argument}={config!r} (TF: "
                f"Unknown initializer: {class_name!r}).\n  fix: one of Keras's classes "
                f"{list(_KERAS_INITIALIZER_CLASSES)}, or an initializer from sp.initializers.")
        factory = getattr(_initializers, found)
        try:
            return factory(**options)
        except TypeError as error:
            raise TypeError(
                f"{label}: {argument}={config!r}: {str(error).splitlines()[0]} (TF refuses it "
                "too).\n  fix: give "
                f"{class_name} only its arguments, {list(inspect.signature(factory).parameters)}."
            ) from None
    arguments = _KERAS_REGULARIZER_ARGUMENTS.get(class_name)
    if arguments is None:
        raise ValueError(
            f"{label}: unknown regularizer {class_name!r} in {argument}={config!r}.\n  fix: one "
            f"of Keras's {list(_KERAS_REGULARIZER_ARGUMENTS)}, or a function of the weight, e.g. "
            "sp.l2_regularizer(1e-4).")
    factors = list(_KERAS_REGULARIZERS[class_name])
    unknown = {k: v for k, v in options.items() if k not in arguments}
    if unknown:
        raise TypeError(
            f"{label}: {argument}={config!r}: Argument(s) not recognized: {unknown} (TF's "
            f"words).\n  fix: give {class_name} only its arguments, {list(arguments)}.")
    for key, value in options.items():
        if value is not None:  # Keras's: None is the default factor
            factors[arguments[key]] = float(value)
    return _keras_regularizer(*factors)


def _not_an_initializer(label: str, argument: str, identifier: Any) -> ValueError:
    """TF's refusal of a number or an array given as an initializer (a layer passes the shape, so
    ``get_param``'s constant initializer does not apply)."""
    shown = repr(identifier)
    shown = shown if len(shown) <= 60 else f"<the {type(identifier).__name__}>"
    return ValueError(
        f"{label}: {argument}={shown} is a value, not an initializer (TF: Could not interpret "
        f"initializer identifier: {str(identifier)[:60]}).\n  fix: make the constant an "
        f"initializer, {argument}=sp.initializers.constant({shown}), which fills the layer's "
        "shape with it.")


def _resolved(kind: str, name: Any, **arguments: Any) -> tuple:
    """The values of ``arguments``, in order, each resolved by ``_from_keras``."""
    return tuple(_from_keras(kind, name, argument, value) for argument, value in arguments.items())


def _kernel_and_bias_options(kind: str, sc: Any, activation: Any, kernel_initializer: Any,
                             bias_initializer: Any, kernel_regularizer: Any, bias_regularizer: Any,
                             kernel_constraint: Any, bias_constraint: Any) -> tuple:
    """A kernel-and-bias layer's arguments (``dense``, the convolutions), in its scope ``sc``, as
    ``get_param`` takes them: Keras names and configs resolved, a value given as an initializer
    refused and constraints read, as TF's layers do (one test for the common call, whose
    initializers and regularizers are None or functions), and a regularizer of the layer's own
    joined by the scope's (``_with_scope_terms``)."""
    if (type(activation) is str
            or not (kernel_initializer is None or callable(kernel_initializer))
            or not (bias_initializer is None or callable(bias_initializer))
            or not (kernel_regularizer is None or callable(kernel_regularizer))
            or not (bias_regularizer is None or callable(bias_regularizer))
            or kernel_constraint is not None or bias_constraint is not None
            or (activation is not None and (not callable(activation)
                                            or _is_tensorflow(activation)))):
        (activation, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
         kernel_constraint, bias_constraint) = _resolved(
            kind, sc, activation=activation, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint)
    if kernel_regularizer is not None or bias_regularizer is not None:  # TF's: and the scope's
        kernel_regularizer, bias_regularizer = _with_scope_terms(kernel_regularizer, bias_regularizer)
    return (activation, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            kernel_constraint, bias_constraint)


def _units(units: Any, kind: str, name: Any) -> int:
    """Dense's ``units`` as Keras's ``Dense`` takes it: ``int(units)`` (3.0 and "3" are 3), and
    at least 0."""
    if isinstance(units, (bool, np.bool_)):  # TF's TensorShape refuses a bool dimension
        raise TypeError(f"{_label(kind, name)}: units={units!r} is a bool, not a number of "
                        "units.\n  fix: pass an int, e.g. units=10.")
    if not isinstance(units, (int, np.integer)):
        if isinstance(units, jax.core.Tracer):  # (int() raises JAX's error, not TF's)
            raise _traced_size_error(_label(kind, name), "units", units)
        try:
            units = int(units)
        except (TypeError, ValueError) as error:
            # TF's int(units): a TypeError for None or a list, else ValueError (the builtin classes:
            # a subclass's constructor may take other arguments)
            raise (TypeError if isinstance(error, TypeError) else ValueError)(
                f"{_label(kind, name)}: invalid value for `units`: {units!r} is no integer (TF: "
                f"{error}).\n  fix: pass an int, e.g. units=10.") from None
    if units < 0:
        raise ValueError(f"{_label(kind, name)}: invalid value for `units`, expected a positive "
                         f"integer. Received: units={units}\n  fix: pass units >= 1.")
    return int(units)


def _min_ndim_error(kind: str, name: Any, shape: Tuple[int, ...]) -> ValueError:
    """TF's refusal of a dense layer's scalar input (its input spec's ``min_ndim=2``, in TF's words)."""
    fix = "x.reshape(1) for one example of one feature, or x.reshape(1, 1) for a batch of one"
    return ValueError(
        f"Input 0 of layer {_label(kind, name)} is incompatible with the layer: expected "
        f"min_ndim=2, found ndim={len(shape)}. Full shape received: {tuple(shape)}\n"
        f"  fix: the layer maps the last axis of a batch of examples: give the input a batch axis "
        f"and a feature axis, e.g. {fix}.")


@functools.partial(jax.jit, static_argnums=2, inline=True)
def _add_bias(y: jax.Array, bias: jax.Array, axis: int) -> jax.Array:
    """``y`` plus ``bias`` along ``y``'s axis ``axis`` (TF's ``bias_add``), broadcast explicitly, so
    that models run under ``jax_numpy_rank_promotion="raise"``. Jitted and inlined: traced, it stages
    the ``broadcast_in_dim`` and ``add`` that ``y + bias`` stages; eagerly it is one dispatch, without
    the Python of ``jnp.add``."""
    return y + jax.lax.broadcast_in_dim(bias, y.shape, (axis,))


@functools.partial(jax.jit, inline=True)
def _affine(x: jax.Array, kernel: jax.Array, bias: Optional[jax.Array]) -> jax.Array:
    """Dense's arithmetic, ``x @ kernel + bias``: traced, the ops ``jnp.matmul`` and ``_add_bias``
    stage; eagerly one dispatch instead of two."""
    y = jnp.matmul(x, kernel)
    return y if bias is None else _add_bias(y, bias, y.ndim - 1)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7), inline=True)
def _conv_and_bias(x: jax.Array, kernel: jax.Array, bias: Optional[jax.Array], strides: tuple,
                   padding: str, dilation: tuple, dimension_numbers: tuple, axis: int) -> jax.Array:
    """A convolution's arithmetic, ``conv_general_dilated`` plus ``bias`` on the channel axis
    ``axis``: traced, the ops the two stage one after the other; eagerly one dispatch."""
    y = jax.lax.conv_general_dilated(x, kernel, window_strides=strides, padding=padding,
                                     rhs_dilation=dilation, dimension_numbers=dimension_numbers)
    return y if bias is None else _add_bias(y, bias, axis)


def _bias_and_activation(y, bias, channels_last, activation, activity_regularizer=None, kind=""):
    if bias is not None:
        y = _add_bias(y, bias, y.ndim - 1 if channels_last else 1)
    return _activated(y, activation, activity_regularizer, kind)


# --- convolutions and dense -----------------------------------------------------------------------


def _conv(rank: int, inputs: jax.Array, filters: int, kernel_size: IntOrPair, strides: IntOrPair,
          padding: str, data_format: str, dilation_rate: IntOrPair, activation: Optional[Callable],
          use_bias: bool, kernel_initializer: Any, bias_initializer: Any,
          kernel_regularizer: Optional[Callable], bias_regularizer: Optional[Callable],
          trainable: bool, name: Optional[str], reuse: Any,
          names: Tuple[str, str] = ("kernel", "bias"), *, kernel_constraint: Any = None,
          bias_constraint: Any = None, activity_regularizer: Optional[Callable] = None,
          int32_ok: bool = True) -> jax.Array:
    """TF's ``_Conv`` layer for 1, 2 or 3 spatial dimensions: ``<name>/kernel`` (spatial dims, in,
    filters) and ``<name>/bias`` (``names``: slim calls them ``weights`` and ``biases``).
    ``int32_ok``: an int32 input of rank 1 or 2 makes int32 parameters (TF's layers; slim's, with
    their float initializers, refuse it)."""
    kind = f"conv{rank}d"
    kernel_shape = _tuple(kernel_size, rank, "kernel_size", kind, name)
    strides = _tuple(strides, rank, "strides", kind, name)
    dilation = _tuple(dilation_rate, rank, "dilation_rate", kind, name)
    if max(strides) > 1 and max(dilation) > 1:
        raise ValueError("`strides > 1` not supported in conjunction with `dilation_rate > 1`. "
                         f"Received: strides={strides} and dilation_rate={dilation}")
    filters = _check_positive(filters, "filters", kind, name)
    last = _channels_last(data_format)
    pad: Any = _padding(padding, kind, name, rank == 1)
    if pad == "CAUSAL":  # TF's Conv1D: time left-padded by the dilated kernel's reach, then VALID
        pad = ((dilation[0] * (kernel_shape[0] - 1), 0),)
    if inputs.ndim != rank + 2:
        raise _rank_error(kind, name, rank, inputs.shape)
    in_channels = inputs.shape[-1 if last else 1]
    with _layer_scope(name, kind, reuse, fetches_only=True) as sc:
        dtype = _param_dtype(inputs, kind, sc, int32_ok and rank < 3)
        (activation, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
         kernel_constraint, bias_constraint) = _kernel_and_bias_options(
            kind, sc, activation, kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint)
        _check_in_channels(in_channels, inputs.shape, kind, sc)
        if pad == "VALID":  # (a causal pad always leaves an output)
            _check_valid_window(kind, sc, inputs.shape, inputs.shape[1:-1] if last else
                                inputs.shape[2:], kernel_shape, dilation, "kernel")
        kernel = get_param(names[0], kernel_shape + (in_channels, filters), kernel_initializer,
                           dtype, trainable=trainable, regularizer=kernel_regularizer,
                           constraint=kernel_constraint)
        bias = get_param(names[1], (filters,), bias_initializer, dtype, trainable=trainable,
                         regularizer=bias_regularizer,
                         constraint=bias_constraint) if use_bias else None
        channels_last, channels_first, kernel_layout = _LAYOUTS[rank]
        layout = channels_last if last else channels_first
        y = _conv_and_bias(_cast(inputs, dtype), kernel, bias, strides, pad, dilation,
                           (layout, kernel_layout, layout), rank + 1 if last else 1)
        # In the layer's scope, as TF's Layer.call: an activation's variables go under the layer.
        return _activated(y, activation, activity_regularizer, kind)


def conv1d(inputs: jax.Array, filters: int, kernel_size: IntOrPair, strides: IntOrPair = 1,
           padding: str = "valid", data_format: str = "channels_last", dilation_rate: IntOrPair = 1,
           activation: Optional[Callable] = None, use_bias: bool = True,
           kernel_initializer: Any = None, bias_initializer: Any = zeros,
           kernel_regularizer: Optional[Callable] = None, bias_regularizer: Optional[Callable] = None,
           activity_regularizer: Optional[Callable] = None, kernel_constraint: Any = None,
           bias_constraint: Any = None, trainable: bool = True, name: Optional[str] = None,
           reuse: Any = None) -> jax.Array:
    """``tf.compat.v1.layers.conv1d`` on [batch, width, channels]: ``<name>/kernel`` of shape
    ``(width, in, filters)`` and ``<name>/bias``."""
    return _conv(1, inputs, filters, kernel_size, strides, padding, data_format, dilation_rate,
                 activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                 bias_regularizer, trainable, name, reuse, kernel_constraint=kernel_constraint,
                 bias_constraint=bias_constraint, activity_regularizer=activity_regularizer)


def conv2d(inputs: jax.Array, filters: int, kernel_size: IntOrPair, strides: IntOrPair = (1, 1),
           padding: str = "valid", data_format: str = "channels_last",
           dilation_rate: IntOrPair = (1, 1), activation: Optional[Callable] = None,
           use_bias: bool = True, kernel_initializer: Any = None, bias_initializer: Any = zeros,
           kernel_regularizer: Optional[Callable] = None, bias_regularizer: Optional[Callable] = None,
           activity_regularizer: Optional[Callable] = None, kernel_constraint: Any = None,
           bias_constraint: Any = None, trainable: bool = True, name: Optional[str] = None,
           reuse: Any = None) -> jax.Array:
    """``tf.compat.v1.layers.conv2d``: parameters ``<name>/kernel`` (HWIO) and ``<name>/bias``.

    ``kernel_initializer=None`` means the enclosing scope's initializer, else Glorot-uniform.

    >>> def net(x):
    ...     return sp.layers.conv2d(x, 32, 3, strides=2, padding="same", activation=jax.nn.relu)
    >>> params = sp.transform(net).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    >>> jax.tree.map(jnp.shape, params)
    {'conv2d': {'bias': (32,), 'kernel': (3, 3, 3, 32)}}
    """
    return _conv(2, inputs, filters, kernel_size, strides, padding, data_format, dilation_rate,
                 activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                 bias_regularizer, trainable, name, reuse, kernel_constraint=kernel_constraint,
                 bias_constraint=bias_constraint, activity_regularizer=activity_regularizer)


def conv3d(inputs: jax.Array, filters: int, kernel_size: IntOrPair,
           strides: IntOrPair = (1, 1, 1), padding: str = "valid",
           data_format: str = "channels_last", dilation_rate: IntOrPair = (1, 1, 1),
           activation: Optional[Callable] = None, use_bias: bool = True,
           kernel_initializer: Any = None, bias_initializer: Any = zeros,
           kernel_regularizer: Optional[Callable] = None, bias_regularizer: Optional[Callable] = None,
           activity_regularizer: Optional[Callable] = None, kernel_constraint: Any = None,
           bias_constraint: Any = None, trainable: bool = True, name: Optional[str] = None,
           reuse: Any = None) -> jax.Array:
    """``tf.compat.v1.layers.conv3d`` on [batch, depth, height, width, channels]: ``<name>/kernel``
    of shape ``(d, h, w, in, filters)`` and ``<name>/bias``."""
    return _conv(3, inputs, filters, kernel_size, strides, padding, data_format, dilation_rate,
                 activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                 bias_regularizer, trainable, name, reuse, kernel_constraint=kernel_constraint,
                 bias_constraint=bias_constraint, activity_regularizer=activity_regularizer)


def _separable_layer(fn_name: str, rank: int, doc: str) -> Callable[..., jax.Array]:
    """``tf.compat.v1.layers``' separable convolution ``fn_name``, with TF's explicit signature."""
    one: IntOrPair = 1 if rank == 1 else (1,) * rank

    def fn(inputs: jax.Array, filters: int, kernel_size: IntOrPair, strides: IntOrPair = one,
           padding: str = "valid", data_format: str = "channels_last", dilation_rate: IntOrPair = one,
           depth_multiplier: int = 1, activation: Optional[Callable] = None, use_bias: bool = True,
           depthwise_initializer: Any = None, pointwise_initializer: Any = None,
           bias_initializer: Any = zeros, depthwise_regularizer: Optional[Callable] = None,
           pointwise_regularizer: Optional[Callable] = None,
           bias_regularizer: Optional[Callable] = None,
           activity_regularizer: Optional[Callable] = None, depthwise_constraint: Any = None,
           pointwise_constraint: Any = None, bias_constraint: Any = None, trainable: bool = True,
           name: Optional[str] = None, reuse: Any = None) -> jax.Array:
        return _separable_conv(rank, inputs, filters, kernel_size, strides, padding, data_format,
                               dilation_rate, depth_multiplier, activation, use_bias,
                               depthwise_initializer, pointwise_initializer, bias_initializer,
                               depthwise_regularizer, pointwise_regularizer, bias_regularizer,
                               trainable, name, reuse, depthwise_constraint=depthwise_constraint,
                               pointwise_constraint=pointwise_constraint,
                               bias_constraint=bias_constraint,
                               activity_regularizer=activity_regularizer)

    fn.__name__ = fn.__qualname__ = fn_name
    fn.__doc__ = f"``tf.compat.v1.layers.{fn_name}``{doc}"
    return fn


separable_conv1d = _separable_layer(
    "separable_conv1d", 1,
    " on [batch, width, channels]: a depthwise convolution (``<name>/depthwise_kernel``, ``(k, in, "
    "depth_multiplier)``), then a width-1 one (``<name>/pointwise_kernel``, ``(1, in * "
    "depth_multiplier, filters)``), then ``<name>/bias``.")
separable_conv2d = _separable_layer(
    "separable_conv2d", 2,
    ": a depthwise convolution (``<name>/depthwise_kernel``, ``(kh, kw, in, depth_multiplier)``), "
    "then a 1x1 one (``<name>/pointwise_kernel``, ``(1, 1, in * depth_multiplier, filters)``), then "
    "``<name>/bias``.")


def _separable_conv(rank: int, inputs: jax.Array, filters: Optional[int], kernel_size: IntOrPair,
                    strides: IntOrPair, padding: str, data_format: str, dilation_rate: IntOrPair,
                    depth_multiplier: int, activation: Optional[Callable], use_bias: bool,
                    depthwise_initializer: Any, pointwise_initializer: Any, bias_initializer: Any,
                    depthwise_regularizer: Optional[Callable],
                    pointwise_regularizer: Optional[Callable],
                    bias_regularizer: Optional[Callable], trainable: bool, name: Any, reuse: Any,
                    names: Tuple[str, str, str] = ("depthwise_kernel", "pointwise_kernel", "bias"),
                    base_name: Optional[str] = None, *, depthwise_constraint: Any = None,
                    pointwise_constraint: Any = None, bias_constraint: Any = None,
                    activity_regularizer: Optional[Callable] = None,
                    strided_atrous: bool = False) -> jax.Array:
    """TF's ``SeparableConv1D``/``SeparableConv2D`` layer (``names``: its three parameters').
    ``filters=None`` (slim's ``num_outputs=None``) stops after the depthwise convolution: no
    pointwise kernel, and the bias has ``in * depth_multiplier`` entries. ``strided_atrous``
    (slim's, whose ``tf.nn`` ops take it) computes strides > 1 with rates > 1 as TF does
    (``_strided_atrous_conv``), where TF's layers refuse them."""
    base_name = base_name or f"separable_conv{rank}d"
    kernel_shape = _tuple(kernel_size, rank, "kernel_size", base_name, name)
    strides = _tuple(strides, rank, "strides", base_name, name)
    dilation = _tuple(dilation_rate, rank, "dilation_rate", base_name, name)
    atrous_steps = max(strides) > 1 and max(dilation) > 1
    if atrous_steps and not strided_atrous:
        raise ValueError("`strides > 1` not supported in conjunction with `dilation_rate > 1`. "
                         f"Received: strides={strides} and dilation_rate={dilation}")
    filters = _check_positive(filters, "filters", base_name, name)  # None: slim's depthwise-only
    depth_multiplier = _check_positive(depth_multiplier, "depth_multiplier", base_name, name)
    last = _channels_last(data_format)
    pad: Any = _padding(padding, base_name, name, rank == 1)
    if pad == "CAUSAL":  # TF's SeparableConv1D: as conv1d's
        pad = ((dilation[0] * (kernel_shape[0] - 1), 0),)
    if inputs.ndim != rank + 2:
        raise _rank_error(base_name, name, rank, inputs.shape)
    in_channels = inputs.shape[-1 if last else 1]
    out_channels = in_channels * depth_multiplier if filters is None else filters
    with _layer_scope(name, base_name, reuse, fetches_only=True) as sc:
        dtype = _param_dtype(inputs, base_name, sc)
        if (type(activation) is str
                or not (depthwise_initializer is None or callable(depthwise_initializer))
                or not (pointwise_initializer is None or callable(pointwise_initializer))
                or not (bias_initializer is None or callable(bias_initializer))
                or not (depthwise_regularizer is None or callable(depthwise_regularizer))
                or not (pointwise_regularizer is None or callable(pointwise_regularizer))
                or not (bias_regularizer is None or callable(bias_regularizer))
                or depthwise_constraint is not None or pointwise_constraint is not None
                or bias_constraint is not None
                or (activation is not None and (not callable(activation)
                                            or _is_tensorflow(activation)))):  # as in _dense
            (activation, depthwise_initializer, pointwise_initializer, bias_initializer,
             depthwise_regularizer, pointwise_regularizer, bias_regularizer, depthwise_constraint,
             pointwise_constraint, bias_constraint) = _resolved(
                base_name, sc, activation=activation, depthwise_initializer=depthwise_initializer,
                pointwise_initializer=pointwise_initializer, bias_initializer=bias_initializer,
                depthwise_regularizer=depthwise_regularizer,
                pointwise_regularizer=pointwise_regularizer, bias_regularizer=bias_regularizer,
                depthwise_constraint=depthwise_constraint,
                pointwise_constraint=pointwise_constraint, bias_constraint=bias_constraint)
        _check_in_channels(in_channels, inputs.shape, base_name, sc)
        if pad == "VALID":
            _check_valid_window(base_name, sc, inputs.shape, inputs.shape[1:-1] if last else
                                inputs.shape[2:], kernel_shape, dilation, "kernel")
        if filters is not None and (depthwise_regularizer is not None
                                    or pointwise_regularizer is not None
                                    or bias_regularizer is not None):  # TF's: and the scope's
            # (slim's depthwise-only form, num_outputs=None, makes its variables with
            # model_variable(regularizer=), which replaces the scope's instead)
            depthwise_regularizer, pointwise_regularizer, bias_regularizer = _with_scope_terms(
                depthwise_regularizer, pointwise_regularizer, bias_regularizer)
        depthwise = get_param(names[0], kernel_shape + (in_channels, depth_multiplier),
                              depthwise_initializer, dtype, trainable=trainable,
                              regularizer=depthwise_regularizer, constraint=depthwise_constraint)
        pointwise = None if filters is None else get_param(
            names[1], (1,) * rank + (in_channels * depth_multiplier, filters), pointwise_initializer,
            dtype, trainable=trainable, regularizer=pointwise_regularizer,
            constraint=pointwise_constraint)
        bias = get_param(names[2], (out_channels,), bias_initializer, dtype, trainable=trainable,
                         regularizer=bias_regularizer,
                         constraint=bias_constraint) if use_bias else None
        channels_last, channels_first, kernel_layout = _LAYOUTS[rank]
        layout = channels_last if last else channels_first
        dims = (layout, kernel_layout, layout)
        # Channel i * depth_multiplier + m of the depthwise output is input channel i through
        # depthwise[..., i, m], as in TF: one group per input channel.
        grouped = depthwise.reshape(kernel_shape + (1, in_channels * depth_multiplier))
        if atrous_steps:
            y = _strided_atrous_conv(_cast(inputs, dtype), grouped, strides, pad, dilation, dims,
                                     in_channels, 1 if last else 2)
        else:
            y = jax.lax.conv_general_dilated(
                _cast(inputs, dtype), grouped, window_strides=strides, padding=pad,
                rhs_dilation=dilation, dimension_numbers=dims, feature_group_count=in_channels)
        if pointwise is not None:
            y = jax.lax.conv_general_dilated(y, pointwise, (1,) * rank, "VALID",
                                             dimension_numbers=dims)
        return _bias_and_activation(y, bias, last, activation, activity_regularizer, base_name)


def _strided_atrous_conv(x: jax.Array, kernel: jax.Array, strides: Tuple[int, ...], padding: str,
                         dilation: Tuple[int, ...], dims: tuple, groups: int,
                         first_spatial_axis: int) -> jax.Array:
    """``tf.nn.depthwise_conv2d``'s (and ``separable_conv2d``'s) strides > 1 with rates > 1, which
    slim's separable_conv2d passes on: TF runs the strided convolution inside
    ``space_to_batch(block=rate)`` (``nn_ops.with_space_to_batch``), so along an axis with stride s
    and rate r output n reads the padded input at ``(n // r) * s * r + n % r + t * r``, not
    ``n * s + t * r``. Computed as the stride-1 dilated convolution, with TF's padding and
    space_to_batch's (to a multiple of r), sampled at those positions (batch_to_space's crop
    included)."""
    pads, picks = [], []
    spatial = x.shape[first_spatial_axis:first_spatial_axis + len(strides)]
    for size, k, s, r in zip(spatial, kernel.shape[:len(strides)], strides, dilation):
        before = (k - 1) * r // 2 if padding == "SAME" else 0
        after = (k - 1) * r - before if padding == "SAME" else 0
        extra = -(size + before + after) % r
        blocks = (size + before + after + extra) // r  # each of the r interleaved sub-grids
        count = ((blocks - k) // s + 1) * r - extra
        pads.append((before, after + extra))
        picks.append(np.array([n // r * s * r + n % r for n in range(count)]))
    y = jax.lax.conv_general_dilated(x, kernel, (1,) * len(strides), pads, rhs_dilation=dilation,
                                     dimension_numbers=dims, feature_group_count=groups)
    for axis, pick in enumerate(picks, first_spatial_axis):
        y = jnp.take(y, pick, axis=axis, mode="clip")  # (each pick is in range: no fill mask)
    return y


def _transpose_layer(fn_name: str, rank: int, doc: str) -> Callable[..., jax.Array]:
    """``tf.compat.v1.layers``' transposed convolution ``fn_name``, with TF's explicit signature."""

    def fn(inputs: jax.Array, filters: int, kernel_size: IntOrPair,
           strides: IntOrPair = (1,) * rank, padding: str = "valid",
           data_format: str = "channels_last", activation: Optional[Callable] = None,
           use_bias: bool = True, kernel_initializer: Any = None, bias_initializer: Any = zeros,
           kernel_regularizer: Optional[Callable] = None,
           bias_regularizer: Optional[Callable] = None,
           activity_regularizer: Optional[Callable] = None, kernel_constraint: Any = None,
           bias_constraint: Any = None, trainable: bool = True, name: Optional[str] = None,
           reuse: Any = None) -> jax.Array:
        return _conv_transpose(rank, inputs, filters, kernel_size, strides, padding, data_format,
                               activation, use_bias, kernel_initializer, bias_initializer,
                               kernel_regularizer, bias_regularizer, trainable, name, reuse,
                               kernel_constraint=kernel_constraint, bias_constraint=bias_constraint,
                               activity_regularizer=activity_regularizer)

    fn.__name__ = fn.__qualname__ = fn_name
    fn.__doc__ = (f"``tf.compat.v1.layers.{fn_name}``{doc} The output is TF's: spatial size "
                  "``in * stride`` for ``'same'`` and ``in * stride + max(kernel - stride, 0)`` for "
                  "``'valid'``.")
    return fn


conv2d_transpose = _transpose_layer(
    "conv2d_transpose", 2, ": ``<name>/kernel`` of shape ``(kh, kw, filters, in)``.")
conv3d_transpose = _transpose_layer(
    "conv3d_transpose", 3, " on [batch, depth, height, width, channels]: ``<name>/kernel`` of shape "
    "``(kd, kh, kw, filters, in)``.")


def _conv_transpose(rank: int, inputs: jax.Array, filters: int, kernel_size: IntOrPair,
                    strides: IntOrPair, padding: str, data_format: str,
                    activation: Optional[Callable], use_bias: bool, kernel_initializer: Any,
                    bias_initializer: Any, kernel_regularizer: Optional[Callable],
                    bias_regularizer: Optional[Callable], trainable: bool, name: Any, reuse: Any,
                    names: Tuple[str, str] = ("kernel", "bias"), *, kernel_constraint: Any = None,
                    bias_constraint: Any = None, activity_regularizer: Optional[Callable] = None,
                    int32_ok: bool = True) -> jax.Array:
    """TF's ``Conv2DTranspose``/``Conv3DTranspose`` layer (``names``: its kernel's and bias's);
    ``int32_ok`` as in ``_conv`` (TF's op takes int32 in 2-D only)."""
    kind = f"conv{rank}d_transpose"
    kernel_shape = _tuple(kernel_size, rank, "kernel_size", kind, name)
    strides = _tuple(strides, rank, "strides", kind, name)
    filters = _check_positive(filters, "filters", kind, name)
    last = _channels_last(data_format)
    pad = _padding(padding, kind, name)
    if inputs.ndim != rank + 2:
        raise _rank_error(kind, name, rank, inputs.shape)
    in_channels = inputs.shape[-1 if last else 1]
    with _layer_scope(name, kind, reuse, fetches_only=True) as sc:
        dtype = _param_dtype(inputs, kind, sc, int32_ok and rank == 2)
        (activation, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
         kernel_constraint, bias_constraint) = _kernel_and_bias_options(
            kind, sc, activation, kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint)
        kernel = get_param(names[0], kernel_shape + (filters, in_channels), kernel_initializer, dtype,
                           trainable=trainable, regularizer=kernel_regularizer,
                           constraint=kernel_constraint)
        bias = get_param(names[1], (filters,), bias_initializer, dtype, trainable=trainable,
                         regularizer=bias_regularizer,
                         constraint=bias_constraint) if use_bias else None
        # The transpose of a strided conv is a conv over the input dilated by the stride, with the
        # kernel flipped and its in/out axes swapped; the padding reproduces TF's output size.
        pads = [_transpose_pad(k, s, pad) for k, s in zip(kernel_shape, strides)]
        channels_last, channels_first, kernel_layout = _LAYOUTS[rank]
        layout = channels_last if last else channels_first
        flipped = jnp.flip(kernel, tuple(range(rank)))
        y = jax.lax.conv_general_dilated(
            _cast(inputs, dtype), flipped, window_strides=(1,) * rank, padding=pads,
            lhs_dilation=strides, dimension_numbers=(layout, kernel_layout[:-2] + "OI", layout))
        return _bias_and_activation(y, bias, last, activation, activity_regularizer, kind)


def _transpose_pad(k: int, s: int, padding: str) -> Tuple[int, int]:
    """Padding of the stride-dilated input so that the output has TF's transposed-conv size."""
    if padding == "VALID":  # out = in * s + max(k - s, 0)
        return k - 1, s - 1 + max(k - s, 0)
    before = max(k - s, 0) // 2  # the forward SAME conv's leading pad; out = in * s
    return k - 1 - before, s - 1 + before


def dense(inputs: jax.Array, units: int, activation: Optional[Callable] = None,
          use_bias: bool = True, kernel_initializer: Any = None, bias_initializer: Any = zeros,
          kernel_regularizer: Optional[Callable] = None, bias_regularizer: Optional[Callable] = None,
          activity_regularizer: Optional[Callable] = None, kernel_constraint: Any = None,
          bias_constraint: Any = None, trainable: bool = True, name: Optional[str] = None,
          reuse: Any = None) -> jax.Array:
    """``tf.compat.v1.layers.dense``: ``<name>/kernel`` ``(in, units)`` and ``<name>/bias``.

    Inputs of rank > 2 are contracted over their last axis, as in TF.

    >>> def head(h):
    ...     return sp.layers.dense(h, 10, name="logits")
    >>> params = sp.transform(head).init(jax.random.key(0), jnp.zeros((4, 64)))
    >>> {name: leaf.shape for name, leaf in sp.flatten(params).items()}
    {'logits/kernel': (64, 10), 'logits/bias': (10,)}
    """
    return _dense(inputs, units, activation, use_bias, kernel_initializer, bias_initializer,
                  kernel_regularizer, bias_regularizer, trainable, name, reuse,
                  kernel_constraint=kernel_constraint, bias_constraint=bias_constraint,
                  activity_regularizer=activity_regularizer)


def _dense(inputs: jax.Array, units: int, activation: Optional[Callable], use_bias: bool,
           kernel_initializer: Any, bias_initializer: Any, kernel_regularizer: Optional[Callable],
           bias_regularizer: Optional[Callable], trainable: bool, name: Any, reuse: Any,
           names: Tuple[str, str] = ("kernel", "bias"), *, kernel_constraint: Any = None,
           bias_constraint: Any = None, activity_regularizer: Optional[Callable] = None,
           kind: str = "dense") -> jax.Array:
    """TF's ``Dense`` layer: ``<name>/kernel`` ``(in, units)`` and ``<name>/bias`` (``names``);
    ``kind`` (slim's ``fully_connected``) names it in errors."""
    with _layer_scope(name, "dense", reuse, fetches_only=True) as sc:
        dtype = _param_dtype(inputs, kind, sc)
        # One test for what the common call never has: units not an int, and arguments given by
        # Keras names or configs, or as constraints (resolved here rather than at every get_param
        # below).
        if type(units) is not int or units < 0:
            units = _units(units, kind, sc)
        (activation, kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
         kernel_constraint, bias_constraint) = _kernel_and_bias_options(
            kind, sc, activation, kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, kernel_constraint, bias_constraint)
        shape = inputs.shape
        if not shape:  # a scalar has no feature axis (it failed with an IndexError). TF's input spec
            # also refuses a vector (min_ndim=2); we take one as one example, the input of
            # per-example code under jax.vmap (README, "where we depart").
            raise _min_ndim_error(kind, sc, shape)
        kernel = get_param(names[0], (shape[-1], units), kernel_initializer, dtype,
                           trainable=trainable, regularizer=kernel_regularizer,
                           constraint=kernel_constraint)
        bias = get_param(names[1], (units,), bias_initializer, dtype, trainable=trainable,
                         regularizer=bias_regularizer,
                         constraint=bias_constraint) if use_bias else None
        y = _affine(_cast(inputs, dtype), kernel, bias)
        # In the layer's scope, as TF's Layer.call: an activation's variables go under the layer.
        if activity_regularizer is not None:
            return _activated(y, activation, activity_regularizer, "dense")
        if activation is None:  # _activated inline: the hot path
            return y
        try:
            return activation(y)
        except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as error:
            raise _tf_activation_error("dense", activation, error) from error


# --- normalization and dropout --------------------------------------------------------------------


def _stateless_training_error(api: Tuple[str, str], sc: Scope,
                              static_training: Optional[bool]) -> StateError:
    """The refusal of batch normalization in training mode (``static_training`` True, or None for
    a traced flag) under ``sp.transform``, named as the caller wrote it: ``api`` is its name and
    its training argument (slim's ``is_training``)."""
    kind, flag = api
    given = "True" if static_training else "<a traced flag>"
    via = (" (as a normalizer_fn: normalizer_params={'is_training': False})"
           if flag == "is_training" else "")
    return StateError(
        f"{_label(kind, sc)} with {flag}={given} updates the moving statistics (state), which needs "
        "a stateful transform, but the model was built with sp.transform.\n"
        f"  fix: build it with sp.transform_with_state(fn) (apply then returns the new state), or "
        f"pass {flag}=False{via} to normalize with the moving statistics.")


def batch_normalization(inputs: jax.Array, axis: Union[int, Sequence[int]] = -1,
                        momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                        scale: bool = True, beta_initializer: Any = zeros,
                        gamma_initializer: Any = ones, moving_mean_initializer: Any = zeros,
                        moving_variance_initializer: Any = ones,
                        beta_regularizer: Optional[Callable] = None,
                        gamma_regularizer: Optional[Callable] = None, beta_constraint: Any = None,
                        gamma_constraint: Any = None,
                        training: Union[bool, None, jax.Array] = False,
                        trainable: bool = True, name: Optional[str] = None, reuse: Any = None,
                        renorm: bool = False, renorm_clipping: Any = None,
                        renorm_momentum: float = 0.99, fused: Optional[bool] = None,
                        virtual_batch_size: Optional[int] = None,
                        adjustment: Any = None, *, _fused_kernel: Optional[bool] = None,
                        _update: Optional[bool] = None, _nn_moments: bool = False,
                        _api: Tuple[str, str] = ("sp.layers.batch_normalization", "training")
                        ) -> jax.Array:
    """``tf.compat.v1.layers.batch_normalization`` with the moving statistics as ``sp`` state.

    Parameters ``<name>/gamma``, ``<name>/beta``; state ``<name>/moving_mean``,
    ``<name>/moving_variance``, each of shape ``(channels,)``, or of the input's rank (1 off the
    axes) when ``axis`` lists several axes, as in TF. With ``training=True`` the batch statistics
    normalize and the moving statistics are updated in the returned state (``moving = momentum *
    moving + (1 - momentum) * batch``). The batch variance used for the update is Bessel-corrected
    where TF runs its fused kernel (a 4-D input with axis 1 or 3, a 5-D one with axis 1 or 4, not
    float64) and not otherwise; ``fused=True`` on any other input falls back as TF v1's layer does,
    and ``fused=False`` never fuses. ``training`` may also be a traced boolean, or ``None``: TF's
    default learning phase, inference (the moving statistics normalize and stay as they are).

    With ``trainable=False`` the moving statistics are not updated (``training=True`` still
    normalizes with the batch statistics): TF v1 leaves a non-trainable layer's update ops out of
    ``UPDATE_OPS``, so its training loop never runs them.

    Under ``sp.transform`` (no state) the statistics are frozen non-trainable parameters and only
    ``training=False`` is allowed.

    >>> bn = sp.transform_with_state(lambda x: sp.layers.batch_normalization(x, training=True))
    >>> params, state = bn.init(jax.random.key(0), jnp.ones((4, 3)))
    >>> y, state = bn.apply(params, state, jnp.ones((4, 3)))
    """
    # _fused_kernel and _update are slim.batch_norm's: its own fused kernel (2-D inputs too) and its
    # updates_collections paths decide them; None is tf.layers' rule. _nn_moments: slim's legacy
    # nn.moments path, whose variables take the input's dtype (float16 too) and whose statistics are
    # TF's nn.moments'. _api: the caller's name and its training argument, for errors.
    if renorm or virtual_batch_size is not None or adjustment is not None:
        given = [f"{k}=" for k, v in (("renorm", renorm), ("virtual_batch_size", virtual_batch_size),
                                      ("adjustment", adjustment)) if v not in (None, False)]
        raise NotImplementedError(
            f"{_api[0]} does not implement renorm, virtual_batch_size or adjustment (given: "
            f"{', '.join(given)}).\n  fix: leave them out; batch renormalization and ghost batch "
            "normalization are not provided.")
    del renorm_clipping, renorm_momentum
    frame = _frame.current("sp.layers.batch_normalization")
    for argument, value in (("momentum", momentum), ("epsilon", epsilon)):
        if not _is_number(value):
            raise TypeError(f"{_label('batch_normalization', name)}: {argument} must be a number, "
                            f"got {value!r}.\n  fix: e.g. {argument}="
                            f"{0.99 if argument == 'momentum' else 1e-3} (TF's default).")
    training = _static_flag(training)
    if training is None:  # TF's default learning phase, in graph mode a placeholder set to False
        training = False
    static_training = training if isinstance(training, bool) else None
    with _layer_scope(name, "batch_normalization", reuse, fetches_only=True) as sc:
        ndim = inputs.ndim
        axes = _normalized_axes(axis, inputs.shape, sc)
        if (not (beta_initializer is None or callable(beta_initializer))
                or not (gamma_initializer is None or callable(gamma_initializer))
                or not (moving_mean_initializer is None or callable(moving_mean_initializer))
                or not (moving_variance_initializer is None
                        or callable(moving_variance_initializer))
                or not (beta_regularizer is None or callable(beta_regularizer))
                or not (gamma_regularizer is None or callable(gamma_regularizer))
                or beta_constraint is not None or gamma_constraint is not None):  # as in _dense
            (beta_initializer, gamma_initializer, moving_mean_initializer,
             moving_variance_initializer, beta_regularizer, gamma_regularizer, beta_constraint,
             gamma_constraint) = _resolved(
                "batch_normalization", sc, beta_initializer=beta_initializer,
                gamma_initializer=gamma_initializer,
                moving_mean_initializer=moving_mean_initializer,
                moving_variance_initializer=moving_variance_initializer,
                beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
                beta_constraint=beta_constraint, gamma_constraint=gamma_constraint)
        if _fused_kernel is None and (gamma_regularizer is not None
                                      or beta_regularizer is not None):  # TF's: and the scope's
            # (slim.batch_norm's fused and nn.moments paths make their variables with
            # model_variable(regularizer=), which replaces the scope's instead)
            gamma_regularizer, beta_regularizer = _with_scope_terms(gamma_regularizer,
                                                                    beta_regularizer)
        reduce_axes = tuple(i for i in range(ndim) if i not in axes)
        broadcast = tuple(inputs.shape[i] if i in axes else 1 for i in range(ndim))
        param_shape = broadcast if len(axes) > 1 else (inputs.shape[axes[0]],)  # Keras' build
        in_dtype = _param_dtype(inputs, "batch_normalization", sc)  # a float (TF refuses others)
        low_precision = in_dtype in (jnp.float16, jnp.bfloat16)
        dtype = _FLOAT32 if low_precision and not _nn_moments else in_dtype
        if _fused_kernel is None:  # TF v1: fused=None or True both mean "if _fused_can_be_used()"
            _fused_kernel = (fused is not False and ndim in (4, 5) and len(axes) == 1
                             and axes[0] in (1, ndim - 1) and dtype != np.float64)
        update = trainable if _update is None else _update
        gamma = get_param("gamma", param_shape, gamma_initializer, dtype, trainable=trainable,
                          regularizer=gamma_regularizer,
                          constraint=gamma_constraint) if scale else None
        beta = get_param("beta", param_shape, beta_initializer, dtype, trainable=trainable,
                         regularizer=beta_regularizer,
                         constraint=beta_constraint) if center else None
        if not frame.with_state and static_training is not False:
            raise _stateless_training_error(_api, sc, static_training)
        # As TF's layer and slim's batch_norm: the moving statistics are never partitioned (the
        # scope's partitioner is set aside while they are made; a custom getter sees None).
        here = frame.scope
        partitioner = here.partitioner
        if partitioner is not None:
            here.partitioner = None
        try:
            if frame.with_state:
                moving_mean = get_state("moving_mean", param_shape, moving_mean_initializer, dtype)
                moving_var = get_state("moving_variance", param_shape,
                                       moving_variance_initializer, dtype)
            else:
                moving_mean = get_param("moving_mean", param_shape, moving_mean_initializer, dtype,
                                        trainable=False)
                moving_var = get_param("moving_variance", param_shape,
                                       moving_variance_initializer, dtype, trainable=False)
        finally:
            if partitioner is not None:
                here.partitioner = partitioner
        x = inputs.astype(dtype)

        def normalize(mean, var):
            inv = jax.lax.rsqrt(var + epsilon)
            if gamma is not None:
                inv = inv * gamma
            shift = -mean * inv
            if beta is not None:
                shift = shift + beta
            return x * inv.reshape(broadcast) + shift.reshape(broadcast)

        if static_training is False:
            return normalize(moving_mean, moving_var).astype(in_dtype)
        if _nn_moments:  # TF's: float16 computed in float32, then cast back
            mean, var = (m.reshape(param_shape) for m in _moments(x, reduce_axes))
        else:
            mean = jnp.mean(x, reduce_axes).reshape(param_shape)
            var = jnp.mean(jnp.square(x - mean.reshape(broadcast)), reduce_axes).reshape(param_shape)
        if update:
            update_var = var
            if _fused_kernel:  # Bessel's correction, over the n values each statistic reduces
                n = math.prod(inputs.shape[i] for i in reduce_axes)
                if isinstance(n, int):
                    update_var = var * (n / max(n - 1, 1))
                else:  # a symbolic batch size (jax.export): the factor is computed in the graph
                    n = jnp.asarray(n, var.dtype)
                    update_var = var * (n / jnp.maximum(n - 1, 1))
            new_mean = moving_mean * momentum + mean * (1.0 - momentum)
            new_var = moving_var * momentum + update_var * (1.0 - momentum)
            if static_training is None:  # a traced flag: select, as TF's smart_cond would
                new_mean = jnp.where(training, new_mean, moving_mean)
                new_var = jnp.where(training, new_var, moving_var)
            set_state("moving_mean", new_mean.astype(dtype))
            set_state("moving_variance", new_var.astype(dtype))
        if static_training is None:
            mean, var = (jnp.where(training, a, b)
                         for a, b in ((mean, moving_mean), (var, moving_var)))
        return normalize(mean, var).astype(in_dtype)


def _normalized_axes(axis: Any, shape: Tuple[int, ...], name: Any) -> list:
    """Batch normalization's ``axis`` (an int or ints, each in ``[-rank, rank)``) as sorted
    non-negative axes: Keras's ``validate_axis``, which refuses what a modulo would silently
    wrap."""
    ndim, label = len(shape), _label("batch_normalization", name)
    if ndim == 0:
        raise ValueError(f"{label}: a scalar input has no axis to normalize (TF: Input has "
                         "undefined rank. Received: input_shape=()).\n  fix: give the input a "
                         "batch axis and a feature axis, e.g. x.reshape(1, 1).")
    try:  # (a float or None is no list: refused below, as TF does, not by list()'s TypeError)
        listed = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    except TypeError:
        listed = [axis]
    if not all(isinstance(a, (int, np.integer)) for a in listed):
        raise TypeError(f"{label}: expected an int or a list/tuple of ints for the argument "
                        f"'axis', but received: {axis!r} (as TF).\n  fix: pass ints, e.g. axis=-1.")
    if not listed:
        raise ValueError(f"{label}: axis={axis!r} names no axis to normalize.\n  fix: name the "
                         "features' axis, e.g. axis=-1 for the last.")
    if not all(-ndim <= a < ndim for a in listed):
        raise ValueError(
            f"{label}: invalid value for `axis` argument. Expected {-ndim} <= axis < {ndim} "
            f"(inputs.rank={ndim}, input shape {tuple(shape)}). Received: axis={axis!r}\n"
            f"  fix: name the features' axis within the rank, e.g. axis=-1 for the last "
            f"(axis={ndim - 1}); TF refuses the axis too (Expected 0 <= axis < inputs.rank).")
    axes = sorted(int(a) % ndim for a in listed)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{label}: Duplicate axis: {axis!r} of a rank-{ndim} input names axis "
                         f"{max(axes, key=axes.count)} twice (as TF refuses it).\n"
                         "  fix: list each axis once.")
    return axes


def _moments(x: jax.Array, axes: Tuple[int, ...]) -> Tuple[jax.Array, jax.Array]:
    """TF's ``nn.moments(x, axes, keep_dims=True)``: the mean, and the mean squared distance from it
    (not differentiated through the mean), computed in float32 for float16 inputs (not bfloat16
    ones, as TF) and returned in ``x``'s dtype."""
    stats = x.astype(jnp.float32) if x.dtype == jnp.float16 else x
    mean = jnp.mean(stats, axes, keepdims=True)
    variance = jnp.mean(jnp.square(stats - jax.lax.stop_gradient(mean)), axes, keepdims=True)
    return mean.astype(x.dtype), variance.astype(x.dtype)


def _normalize(x: jax.Array, mean: jax.Array, variance: jax.Array, offset: Optional[jax.Array],
               scale: Optional[jax.Array], epsilon: Any) -> jax.Array:
    """TF's ``nn.batch_normalization``: ``x * inv + (offset - mean * inv)`` with ``inv =
    rsqrt(variance + epsilon) * scale``; ``offset`` and ``scale`` (either may be None) already
    broadcast against ``x``."""
    inv = jax.lax.rsqrt(variance + epsilon)
    if scale is not None:
        inv = inv * scale
    return x * inv + (offset - mean * inv if offset is not None else -mean * inv)


def layer_norm(inputs: jax.Array, center: bool = True, scale: bool = True,
               activation_fn: Optional[Callable] = None, reuse: Any = None,
               variables_collections: Any = None, outputs_collections: Any = None,
               trainable: bool = True, begin_norm_axis: int = 1, begin_params_axis: int = -1,
               scope: Optional[str] = None) -> jax.Array:
    """``tf.contrib.layers.layer_norm`` (BERT's ``LayerNorm``): normalize over the axes from
    ``begin_norm_axis`` on (contrib's default 1: all but the batch), with ``<scope>/beta`` and
    ``<scope>/gamma`` of shape ``inputs.shape[begin_params_axis:]``; the scope defaults to
    ``LayerNorm`` (``LayerNorm_1``, ...). TF's arithmetic: ``nn.moments`` and
    ``nn.batch_normalization`` with variance epsilon 1e-12 (1e-3 for float16, where 1e-12 would
    round to 0). ``variables_collections`` (a list of
    collection names) is each variable's ``collections``; ``outputs_collections`` has no
    counterpart (use ``sp.record``)."""
    del outputs_collections
    rank = inputs.ndim
    for argument, value in (("begin_norm_axis", begin_norm_axis),
                            ("begin_params_axis", begin_params_axis)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"layer_norm: {argument} must be an int (an axis of the input), got "
                            f"{value!r}.\n  fix: e.g. {argument}=-1 for the last axis.")
    norm_axis = begin_norm_axis + rank if begin_norm_axis < 0 else begin_norm_axis
    if begin_params_axis >= rank or norm_axis >= rank:
        raise ValueError(f"layer_norm: begin_params_axis ({begin_params_axis}) and begin_norm_axis "
                         f"({begin_norm_axis}) must be < rank(inputs) ({rank}), input shape "
                         f"{tuple(inputs.shape)} (as TF).\n  fix: give the input a batch axis "
                         "(x[None]), or axes below its rank (begin_norm_axis=-1 normalizes over the "
                         "last axis).")
    if norm_axis < 0:  # TF's wraps it once and fails when run (duplicate or invalid axes)
        raise ValueError(
            f"begin_params_axis ({begin_params_axis}) and begin_norm_axis ({begin_norm_axis}) must "
            f"be < rank(inputs) ({rank}) and begin_norm_axis >= -rank(inputs) ({-rank})\n"
            f"  fix: an axis of the rank-{rank} input, e.g. begin_norm_axis=-1 to normalize over "
            "the last axis only, or 1 for all but the batch.")
    params_shape = tuple(inputs.shape[begin_params_axis:])  # (below -rank: all, as TF's slice)
    collections = list(variables_collections) if variables_collections else None
    # contrib's variable_scope(scope, "LayerNorm") enters scope='' as a scope of that name (where
    # tf.layers take name='' as none, _layer_scope)
    opened = (_layer_scope(scope, "LayerNorm", reuse, fetches_only=True) if scope != "" else
              _empty_named_scope(reuse))
    with opened as sc:
        dtype = _param_dtype(inputs, "layer_norm", sc)
        beta = get_param("beta", params_shape, zeros, dtype, trainable=trainable,
                         collections=collections) if center else None
        gamma = get_param("gamma", params_shape, ones, dtype, trainable=trainable,
                          collections=collections) if scale else None
        x = _cast(inputs, dtype)
        mean, variance = _moments(x, tuple(range(norm_axis, rank)))
        full = (1,) * (rank - len(params_shape)) + params_shape

        def at_rank(p):  # over the leading axes, explicitly (jax_numpy_rank_promotion="raise")
            return p if p is None or p.ndim == rank else p.reshape(full)

        epsilon = 1e-3 if dtype == np.float16 else 1e-12  # contrib's: 1e-12 is 0 in float16
        y = _normalize(x, mean, variance, at_rank(beta), at_rank(gamma),
                       jnp.asarray(epsilon, dtype))
        # In the scope, as contrib's layer_norm: an activation's variables go under LayerNorm.
        if activation_fn is None:
            return y
        if _is_tensorflow(activation_fn):
            raise _tensorflow_activation_error(_label("layer_norm", sc), "activation_fn",
                                               activation_fn, names=False)
        return activation_fn(y)


def _empty_named_scope(reuse: Any) -> ContextManager[Scope]:
    """``sp.scope('', reuse=reuse)``: TF's ``variable_scope('')``."""
    return scope("", reuse=reuse if reuse else None)


def _drop(inputs: jax.Array, keep_prob: Any, seed: Optional[int], shape: Sequence[int]) -> jax.Array:
    """Keep each entry with probability ``keep_prob`` (a mask of ``shape``, broadcast), scaled by
    ``1 / keep_prob``; the key is ``sp.next_rng_key()``, with ``seed`` folded in if given."""
    key = _frame.next_rng_key()
    if seed is not None:
        key = jax.random.fold_in(key, seed)
    keep = jax.random.bernoulli(key, keep_prob, shape)
    return jnp.where(keep, inputs / keep_prob, jnp.zeros((), inputs.dtype)).astype(inputs.dtype)


def dropout(inputs: jax.Array, rate: Union[float, jax.Array] = 0.5,
            noise_shape: Optional[Sequence[int]] = None, seed: Optional[int] = None,
            training: Union[bool, None, jax.Array] = False, name: Optional[str] = None) -> jax.Array:
    """``tf.compat.v1.layers.dropout``: with ``training=True`` zero a ``rate`` fraction and scale by
    ``1 / (1 - rate)``. The key comes from ``sp.next_rng_key()`` (pass ``rng=`` to ``apply``);
    ``seed``, if given, is folded into it. ``training`` may be a traced boolean, or ``None``: TF's
    default learning phase, inference (the input, unchanged), whose dropping branch TF still builds
    and checks. ``rate`` may be a scalar JAX array (TF's tensor rate), traced too. ``noise_shape``
    is the mask's shape, broadcast against the input's last axes (``None`` entries: the input's
    size at that index), as in TF.
    """
    # TF's Dropout layer checks a Python rate when it is made, before knowing `training`; an array
    # rate (TF's tensor) is checked when concrete, and a traced one not at all
    if not _is_number(rate):
        raise TypeError(f"{_label('dropout', name)}: rate must be a number in [0, 1) (the fraction "
                        f"dropped) or a scalar array, got {rate!r} of type {type(rate).__name__}.\n"
                        "  fix: pass e.g. rate=0.5.")
    static_rate = (rate if isinstance(rate, (int, float, np.integer, np.floating))
                   else _array_rate(rate, name))
    if static_rate is not None and not 0 <= static_rate <= 1:
        raise ValueError(f"Invalid value {static_rate} received for `rate`, expected a value between "
                         "0 and 1.\n  fix: rate is the fraction dropped (0.1 drops 10%); for a "
                         "fraction kept, pass 1 - keep_prob.")
    training = _static_flag(training)
    if training is False or static_rate == 0:
        return inputs
    # TF builds the dropping branch from here on (training True, traced, or None: its learning
    # phase, a placeholder defaulting to False), and refuses what that branch cannot take
    dtype = _param_dtype(inputs, "dropout", name, tf_refusal=_DROPOUT_REFUSAL)
    if static_rate is not None and not static_rate < 1:
        raise ValueError(f"Invalid value received for `rate`, expected a value between 0 and 1, "
                         f"got: {static_rate}\n  fix: in training the rate must be below 1 (rate=1 "
                         "would drop every unit), as in TF's nn.dropout.")
    shape = inputs.shape if noise_shape is None else _noise_shape(noise_shape, inputs.shape, name)
    if training is None:
        return inputs
    keep_prob = 1.0 - (static_rate if static_rate is not None else jnp.asarray(rate, dtype))
    dropped = _drop(inputs, keep_prob, seed, shape)
    if training is True:
        return dropped
    return jnp.where(training, dropped, inputs)


# TF's nn.dropout refuses an integer input with a ValueError (its layers' ops, with a TypeError).
_DROPOUT_REFUSAL = ("a ValueError: \"`x.dtype` must be a floating point tensor as `x` will be "
                    "scaled\"")


def _array_rate(rate: Any, name: Any) -> Optional[float]:
    """A dropout ``rate`` given as an array (TF's tensor rate): its value if concrete, else None.
    TF's is a scalar too."""
    if np.ndim(rate) != 0:
        raise ValueError(f"{_label('dropout', name)}: rate must be a scalar (TF: \"Shape must be rank "
                         f"0\"), got an array of shape {np.shape(rate)}.\n  fix: pass one rate, "
                         "e.g. rate=0.5; to drop some entries more, scale a mask of your own.")
    if isinstance(rate, jax.core.Tracer):
        return None
    return float(rate)


def _noise_shape(noise_shape: Sequence[Any], shape: Tuple[int, ...], name: Any) -> Tuple[int, ...]:
    """Dropout's mask shape: ``noise_shape`` with a ``None`` entry taking the input's size at that
    index (Keras's ``_get_noise_shape``), which must broadcast against the input's ``shape``
    without changing it: at most its rank, each size (aligned with its last axes) 1 or the input's
    (TF refuses others at graph build: "Dimensions must be equal")."""
    try:
        asked = tuple(noise_shape)
    except TypeError:  # an int: TF's noise_shape is a shape, a list of sizes
        raise TypeError(f"{_label('dropout', name)}: noise_shape must be a list of sizes (None: the "
                        f"input's), got {noise_shape!r}.\n  fix: e.g. noise_shape=[{shape[0] if shape else 1}"
                        f"{', 1' * (len(shape) - 1)}] to drop whole examples.") from None
    if len(asked) <= len(shape):
        mask = tuple(shape[i] if d is None else d for i, d in enumerate(asked))
        if all(d == 1 or d == s for d, s in zip(reversed(mask), reversed(shape))):
            return mask
    example = (shape[0],) + (1,) * (len(shape) - 1) if shape else ()
    raise ValueError(
        f"{_label('dropout', name)}: noise_shape={asked} does not broadcast against the input, "
        f"shape {tuple(shape)} (TF refuses it too): the mask has at most the input's rank, and "
        "each of its sizes, aligned with the input's last axes, is 1 (shared along that axis) or "
        f"the input's size (None: the input's).\n  fix: e.g. noise_shape={example} to drop whole "
        "examples, or noise_shape=None for an independent mask entry per input entry.")


# --- pooling and reshaping ------------------------------------------------------------------------


def _pool(rank, inputs, pool_size, strides, padding, data_format, init, op, kind, name):
    """``reduce_window`` of ``op`` over ``pool_size`` windows; ``kind`` and ``name`` (slim's name
    scope) name the layer in the errors."""
    if inputs.ndim != rank + 2:
        raise _rank_error(kind, name, rank, inputs.shape)
    window = _tuple(pool_size, rank, "pool_size", kind, name, truncate=True)
    stride = _tuple(strides, rank, "strides", kind, name, truncate=True)
    pad = _padding(padding, kind, name)
    if _channels_last(data_format):
        dims, steps = (1,) + window + (1,), (1,) + stride + (1,)
        spatial = inputs.shape[1:-1]
    else:
        dims, steps = (1, 1) + window, (1, 1) + stride
        spatial = inputs.shape[2:]
    if pad == "VALID":
        _check_valid_window(kind, name, inputs.shape, spatial, window, None, "pool_size")
    return jax.lax.reduce_window(inputs, init, op, dims, steps, pad), dims, steps


def _max_pool(rank, inputs, pool_size, strides, padding, data_format, kind, name=None):
    if inputs.dtype == np.bool_:  # (iinfo has no bool) TF's MaxPool takes numbers only
        raise TypeError(f"{_label(kind, name)}: the input has dtype bool, which TF's MaxPool refuses "
                        "(Value passed to parameter 'input' has DataType bool not in list of "
                        "allowed values).\n  fix: cast it to a number first, e.g. "
                        "x.astype(jnp.float32).")
    init = -np.inf if jnp.issubdtype(inputs.dtype, jnp.floating) else jnp.iinfo(inputs.dtype).min
    # A NumPy (not traced) init value lets lax recognise the max monoid, which is differentiable.
    out, _, _ = _pool(rank, inputs, pool_size, strides, padding, data_format,
                      np.array(init, inputs.dtype), jax.lax.max, kind, name)
    return out


def _average_pool(rank, inputs, pool_size, strides, padding, data_format, kind, name=None):
    # TF's AvgPool takes floats only (lax would return an integer input's mean as a float)
    zero = np.array(0, _param_dtype(inputs, kind, name))
    total, dims, steps = _pool(rank, inputs, pool_size, strides, padding, data_format, zero,
                               jax.lax.add, kind, name)
    if _padding(padding) == "VALID":
        return total / int(np.prod(dims))  # a Python int: weakly typed, the inputs' dtype stays
    ones_shape = tuple(1 if d == 1 else s for d, s in zip(dims, inputs.shape))
    counts = jax.lax.reduce_window(jnp.ones(ones_shape, inputs.dtype), zero, jax.lax.add, dims,
                                   steps, "SAME")
    return total / counts


def _pooling(name: str, rank: int, pool: Callable, doc: str) -> Callable:
    """``tf.compat.v1.layers``' pooling function ``name``: ``strides`` is required, as in TF."""

    kind = name

    def fn(inputs: jax.Array, pool_size: IntOrPair, strides: IntOrPair, padding: str = "valid",
           data_format: str = "channels_last", name: Optional[str] = None) -> jax.Array:
        # pooling has no variables, hence no scope: the name only names the layer in errors
        return pool(rank, inputs, pool_size, strides, padding, data_format, kind, name)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"``tf.compat.v1.layers.{name}``{doc}"
    return fn


_SAME_COUNTS = "; with ``'same'`` padding the padded cells are not counted, as in TF."
max_pooling1d = _pooling("max_pooling1d", 1, _max_pool, " on [batch, width, channels].")
max_pooling2d = _pooling("max_pooling2d", 2, _max_pool, ".")
max_pooling3d = _pooling("max_pooling3d", 3, _max_pool,
                         " on [batch, depth, height, width, channels].")
average_pooling1d = _pooling("average_pooling1d", 1, _average_pool, _SAME_COUNTS)
average_pooling2d = _pooling("average_pooling2d", 2, _average_pool, _SAME_COUNTS)
average_pooling3d = _pooling("average_pooling3d", 3, _average_pool, _SAME_COUNTS)


def flatten(inputs: jax.Array, name: Optional[str] = None,
            data_format: str = "channels_last") -> jax.Array:
    """``tf.compat.v1.layers.flatten``: keep the batch axis; ``channels_first`` inputs are moved to
    channels-last order first, as TF does, so a following dense layer sees the same features. A
    rank-1 input ``(N,)`` becomes ``(N, 1)``, as in TF."""
    if inputs.ndim == 0:
        raise ValueError(f"{_label('flatten', name)}: the input is a scalar, but flatten expects "
                         "min_ndim=1 (a batch axis), as TF's layer does. Full shape received: ()\n"
                         "  fix: give the input a batch axis, e.g. x[None].")
    if not _channels_last(data_format) and inputs.ndim > 2:
        inputs = jnp.moveaxis(inputs, 1, -1)
    return inputs.reshape(inputs.shape[0], -1) if inputs.ndim > 1 else inputs.reshape(-1, 1)


# --- embeddings -----------------------------------------------------------------------------------


def embedding_lookup(params: Union[jax.Array, Sequence[jax.Array]], ids: jax.Array,
                     partition_strategy: str = "mod", name: Optional[str] = None,
                     validate_indices: bool = True, max_norm: Optional[float] = None) -> jax.Array:
    """``tf.compat.v1.nn.embedding_lookup``: rows of ``params`` (one array, or a list of shards
    split by ``partition_strategy`` ``'mod'`` or ``'div'``), each clipped to an L2 norm of
    ``max_norm`` if given, as TF's ``clip_by_norm``: the norm of the whole embedding (all its
    axes, for a table of rank 3 or more), and an all-zero embedding passes with finite gradients.

    An id outside ``[0, rows)`` is refused with TF 1.x's error (``indices[1] = -1 is not in [0,
    10)``, a ``ValueError`` here) when the ids are concrete: a NumPy array or list, or a JAX array
    outside ``jit`` (an eager ``apply``). Traced ids (under ``jit``, in ``init``, in ``vmap``) are
    not checked, as JAX cannot raise inside a compiled function: they get ``jnp.take``'s answer,
    a row from the end for an id in ``[-rows, 0)`` (NumPy's indexing) and a row of NaNs for any
    other (TF 1.x raises on CPU and returns zeros on GPU). Clip or map ids that may be out of
    range, e.g. ``jnp.where(ids < rows, ids, unknown_id)``.

    >>> sp.layers.embedding_lookup(jnp.arange(6.0).reshape(3, 2), jnp.array([2, 0]))
    Array([[4., 5.],
           [0., 1.]], dtype=float32)
    """
    del validate_indices  # (TF's is deprecated and unused too)
    return _lookup(params, ids, partition_strategy, max_norm,
                   lambda: _label("sp.layers.embedding_lookup", name))


def _lookup(params: Union[jax.Array, Sequence[jax.Array]], ids: Any, partition_strategy: str,
            max_norm: Optional[float], where: Callable[[], str]) -> jax.Array:
    """``embedding_lookup``'s work; ``where()`` names the lookup in the error for an id out of
    range."""
    shards = params if isinstance(params, (list, tuple)) else (params,)
    kind = getattr(ids, "dtype", None)
    if kind is not None and not jnp.issubdtype(kind, jnp.integer):
        raise TypeError(
            f"{where()}: the ids have dtype {np.dtype(kind).name}; ids index the table's rows and "
            "must be integers (TF: indices must be int32 or int64).\n"
            "  fix: cast them, ids.astype(jnp.int32) (ids read from data often arrive as floats).")
    if not isinstance(ids, jax.core.Tracer):  # (a traced id cannot be checked: no cost there)
        _check_ids(ids, sum(p.shape[0] for p in shards), where)
    ids = jnp.asarray(ids)
    if isinstance(params, (list, tuple)):
        if len(params) == 1:
            table = params[0]
        elif partition_strategy == "mod":
            # Row i lives in shard i % n at position i // n: interleave the shards back.
            n = len(params)
            rows = sum(p.shape[0] for p in params)
            order = np.concatenate([np.arange(s, rows, n) for s in range(n)])
            table = jnp.concatenate(params, 0)[np.argsort(order)]
        elif partition_strategy == "div":
            table = jnp.concatenate(params, 0)
        else:
            raise ValueError(f"Unrecognized partition strategy: {partition_strategy!r}")
    else:
        table = params
    out = jnp.take(table, ids, axis=0)
    if max_norm is not None:
        # TF clips each whole embedding: all the axes after the ids' axes, not just the last.
        out = _clip_by_norm(out, max_norm, tuple(range(ids.ndim, out.ndim)))
    return out


def _clip_by_norm(values: jax.Array, clip_norm: Any, axes: Tuple[int, ...]) -> jax.Array:
    """TF's ``clip_by_norm``: ``values * clip_norm / max(norm, clip_norm)``, the L2 norm over
    ``axes``, a negative ``clip_norm`` read as 0. As in TF, the square root is taken only where the
    sum of squares is > 0 (sqrt's derivative at 0 is infinite: an all-zero embedding, e.g. a
    padding row, would get NaN gradients), so a zero embedding's gradient is the incoming one."""
    if isinstance(clip_norm, numbers.Real):  # a number (TF: np.isscalar); else an array
        if clip_norm <= 0:  # TF's answer, 0, but not its 0 / 0 (NaN) for a zero embedding
            return jnp.zeros_like(values)
    else:
        clip_norm = jnp.maximum(clip_norm, 0).astype(values.dtype)
    l2sum = jnp.sum(values * values, axes, keepdims=True)
    positive = l2sum > 0
    l2norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, l2sum, 1)), l2sum)
    return values * clip_norm / jnp.maximum(l2norm, clip_norm)


def _check_ids(ids: Any, rows: int, where: Callable[[], str]) -> None:
    """TF's refusal of concrete ``ids`` outside ``[0, rows)``, in its words."""
    values = np.asarray(ids)
    if not values.size or not np.issubdtype(values.dtype, np.integer):
        return  # (a float id is refused by jnp.take, naming it)
    outside = (values < 0) | (values >= rows)
    if not outside.any():
        return
    at = tuple(int(i) for i in np.argwhere(outside)[0])
    bad = int(values[at])
    indices = f"indices[{','.join(map(str, at))}]" if at else "indices"
    raise ValueError(
        f"{where()}: {indices} = {bad} is not in [0, {rows}) (TF's error): the table has {rows} "
        f"rows, and {int(outside.sum())} of the ids are outside them.\n"
        f"  fix: ids must be in [0, {rows}): check that the table covers the vocabulary (input_dim), "
        "and map ids it does not cover to a row of their own (e.g. jnp.where(ids < rows, ids, "
        "unknown_id)); a negative id does not count from the end, as in TF.")


def _uniform_005(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def embedding(ids: jax.Array, input_dim: int, output_dim: int,
              embeddings_initializer: Any = _uniform_005, trainable: bool = True,
              name: Optional[str] = None, reuse: Any = None, dtype: Any = jnp.float32,
              embeddings_constraint: Optional[Callable] = None) -> jax.Array:
    """An embedding table ``<name>/embeddings`` of shape ``(input_dim, output_dim)`` (Keras's name
    and its uniform(-0.05, 0.05) default), looked up with ``embedding_lookup``. As Keras's
    ``Embedding``, it takes an initializer's or constraint's Keras name (``"ones"``) or config.
    An id out of range is refused when the ids are concrete and not checked when they are traced
    (under ``jit``), as ``embedding_lookup`` says."""
    if not (embeddings_initializer is None or callable(embeddings_initializer)):
        embeddings_initializer = _from_keras("embedding", name, "embeddings_initializer",
                                             embeddings_initializer)
    for argument, size in (("input_dim", input_dim), ("output_dim", output_dim)):
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size <= 0:
            raise ValueError(
                f"{_label('sp.layers.embedding', name)}: {argument} must be positive, got {size} "
                "(as Keras's Embedding: Both `input_dim` and `output_dim` should be positive).\n"
                "  fix: input_dim is the number of ids (the vocabulary size), output_dim the "
                "embedding's width.")
    with _layer_scope(name, "embedding", reuse, fetches_only=True) as sc:
        table = get_param("embeddings", (input_dim, output_dim), embeddings_initializer, dtype,
                          trainable=trainable,
                          constraint=_constraint(embeddings_constraint))
    return _lookup(table, ids, "mod", None, lambda: (
        f"{_label('sp.layers.embedding', sc)} (table '{sc.prefix}embeddings', shape "
        f"{tuple(table.shape)})"))


# --- layer objects (tf.compat.v1.layers.Dense, ...): one object, one set of weights ---------------


class _KerasMethods:
    """TF's (Keras's) methods of a layer object that reach its weights: ``count_params`` counts
    this ``init``/``apply`` call's; the others, which read or write variables kept between calls,
    are refused with what to use instead (a pure function keeps no weights)."""

    def apply(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """TF's ``layer.apply(inputs, ...)``: the layer's call, ``layer(inputs, ...)``."""
        return self(inputs, *args, **kwargs)  # type: ignore[operator]

    @property
    def updates(self) -> list:
        """TF's update ops: none (``[]``), except a batch norm's, whose moving statistics are state
        here (``sp.transform_with_state``): an error saying so."""
        if isinstance(self, BatchNormalization):
            raise _updates_error(type(self).__name__)
        return []

    def count_params(self) -> int:
        """TF's ``count_params``: the number of scalars in this ``init``/``apply`` call's
        ``weights`` (in an ``sp.layer_stack`` block, one layer's)."""
        kind = type(self).__name__
        frame = _frame.current(f"{kind}(...).count_params")
        if _this_call(self._scopes, frame) is None:  # type: ignore[attr-defined]
            raise ValueError(
                f"You tried to call `count_params` on layer {self.name!r}, but the layer isn't "  # type: ignore[attr-defined]
                f"built (TF's words): its weights are made at its first call in each init/apply, "
                "and it has not run yet in this one.\n  fix: call the layer first, y = layer(x), "
                "then layer.count_params() in the same model function.")
        weights: list = self.weights  # type: ignore[attr-defined]
        return sum(int(np.prod(np.shape(w))) for w in weights)

    def get_weights(self) -> list:
        """Not provided: the weights are the params tree's values, not kept by the layer."""
        raise _keras_method_error(
            type(self).__name__, "get_weights", "TF's reads the variables a layer keeps between "
            "calls, and a layer here keeps no weights between init/apply calls",
            "read layer.weights inside the model, or the params tree from init (sp.flatten(params)"
            "['<scope>/kernel'])")

    def set_weights(self, weights: Any) -> None:
        """Not provided: write the values into the params tree instead."""
        raise _keras_method_error(
            type(self).__name__, "set_weights", "TF's assigns the variables a layer keeps between "
            "calls, and a layer here keeps no weights between init/apply calls",
            "write the values into the params tree passed to apply (sp.flatten/sp.unflatten: "
            "flat = sp.flatten(params); flat['<scope>/kernel'] = value; "
            "params = sp.unflatten(flat))")

    def get_config(self) -> dict:
        """Not provided: the constructor's arguments are the layer's attributes."""
        raise _keras_method_error(
            type(self).__name__, "get_config", "TF's returns the constructor's arguments for Keras "
            "serialization, which sp does not have", "keep the constructor's arguments yourself, or read them as attributes "
            "(layer.units, layer.activation, ...)")


def _keras_method_error(kind: str, method: str, why: str, fix: str) -> NotImplementedError:
    return NotImplementedError(f"{kind}.{method}() is not provided: {why}.\n  fix: {fix}.")


class _LayerObject(_KerasMethods):
    """A TF 1.x layer object: its scope is fixed at its first call, later calls share its weights.

    As in TF, the first call opens ``scope(None, default_name=<name or kind>)`` (so numbering is
    decided there, not at construction: two objects named ``fc`` get ``fc`` and ``fc_1``), and every
    later call re-enters that captured scope with reuse.
    Every call runs in the name scope the first one opened (``dense_2/``, wherever it is called), so
    the activation's ops and records are named there. Objects may be built outside the transform;
    what a call knows is kept per trace (``init`` and each ``apply`` start afresh).

    After a call, TF's attributes read this ``init``/``apply`` call's values: the weights
    (``kernel``, ``bias``, ``weights``, ``trainable_weights``, ...; looked up when read, not kept
    by the call) and the constructor's arguments (``units``, ``filters``, ``kernel_size``, ...).

    A subclass (``class ScaledDense(sp.layers.Dense)``) is named after itself, as in TF
    (``scaled_dense/kernel``); one that defines ``call`` or ``build`` runs as TF's
    ``Layer.__call__`` runs it (``_call_methods``): ``build(input_shape)`` at its first call in each
    ``init``/``apply``, then ``call(inputs)``, where ``super().build`` makes the built-in weights
    and ``super().call(inputs)`` computes the built-in layer on them.
    """

    _fn: Callable[..., jax.Array]
    _base_name: str = ""
    # The weights the layer function makes, in TF's order, and those TF's layer makes
    # non-trainable; a convolution's or pooling's spatial rank (its sizes read as tuples).
    _weight_names: Tuple[str, ...] = ("kernel", "bias")
    _non_trainable_names: Tuple[str, ...] = ()
    _rank = 0
    _call_has_scope = False  # TF's: whether call takes `scope` (a subclass's, see __init_subclass__)

    def __init__(self, *args: Any, name: Optional[str] = None, _reuse: Any = None,
                 _scope: Any = None, **kwargs: Any):
        kind = (f"sp.layers.{type(self).__name__}" if type(self).__module__ == __name__
                else type(self).__name__)  # a user's subclass is not in sp.layers
        _check_name_and_dtype(kind, name, kwargs.get("dtype"))
        _check_layer_arguments(type(self), kwargs, call_only=("inputs", "name", "reuse"))
        self._given_name = name  # what names the scope (_object_scope)
        # TF's name: the one given, else (also for '') the class's numbered per graph (dense_1, ...)
        self.name = name if isinstance(name, str) and name else _unique_object_name(
            type(self)._base_name)
        self._reuse = _reuse
        self._args, self._kwargs = args, kwargs
        self._scopes: dict = {}  # this call's captured Scope (_object_scope)
        if _scope:
            self._made_in = _construction_scope(_scope, kind)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:
            return  # sp.layers' own classes
        if "_base_name" not in vars(cls):  # TF names a subclass after itself
            cls._base_name = _snake_case(cls.__name__)
        if "__call__" not in vars(cls) and (cls.call is not _LayerObject.call
                                            or cls.build is not _LayerObject.build):
            cls.__call__ = _LayerObject._call_methods  # type: ignore[method-assign]
            if cls.__setattr__ is object.__setattr__:  # not the user's own (it may call super's)
                cls.__setattr__ = _set_layer_attribute  # type: ignore[method-assign, assignment]
        cls._call_has_scope = "scope" in _parameter_names(cls.call)

    def _call_methods(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """A subclass's ``__call__`` when it defines ``call`` or ``build``: TF's
        ``Layer.__call__`` (``_call_layer``), which runs ``build`` at the first call and then
        ``call``; the activity regularizer is applied here, to what ``call`` returns."""
        if "_weights" not in self.__dict__:  # what the plain objects never need, made once
            self._weights: dict = {}  # token: this call's [(full name, trainable)] made by add_weight
            self._building: dict = {}  # whether this call's build is running
            self._fn_made: dict = {}  # whether this call made the built-in weights
            self._dtype: Optional[np.dtype] = None
            self._input_dtypes: dict = {}  # this call's first input's dtype (_layer_dtype)
            self._prebuilt: Optional[bool] = None
        return _call_layer(self, type(self).__name__, inputs, args, kwargs,
                           self._kwargs.get("activity_regularizer"))

    def build(self, input_shape: Any) -> None:
        """TF's ``build``: make the built-in weights (``kernel``, ``bias``, ...) for inputs of
        ``input_shape`` in the layer's scope. A subclass's ``build`` calls
        ``super().build(input_shape)`` (after its own ``add_weight`` calls, as TF requires); the
        layer's first call in each ``init``/``apply`` runs it.

        The weights are those the layer function makes: it runs once here on zeros of
        ``input_shape``, its output unused (dead code that ``jax.jit`` drops)."""
        frame, captured = self._own_scope("build")
        zeros = jnp.zeros(tuple(int(d) for d in input_shape), _layer_dtype(self, frame))
        type(self)._fn(zeros, *self._args, **{**self._kwargs, **_overrides(type(self), True)},
                       name=captured, reuse=self._reuse)
        _keep_for_call(self._fn_made, frame, True)
        self.built = True

    def call(self, inputs: Any, **kwargs: Any) -> Any:
        """TF's ``call``: the built-in layer on its weights (``super().call(inputs)`` in a
        subclass's ``call``), without the activity regularizer, which the layer's call applies to
        what ``call`` returns. Makes the weights if ``build`` did not."""
        frame, captured = self._own_scope("call")
        made = _this_call(self._fn_made, frame)
        if kwargs and "training" in kwargs and not _takes_training(type(self)._fn):
            del kwargs["training"]
        y = type(self)._fn(inputs, *self._args,
                           **{**self._kwargs, **kwargs, **_overrides(type(self), False)},
                           name=captured, reuse=True if made else self._reuse)
        if not made:
            _keep_for_call(self._fn_made, frame, True)
        return y

    def _own_scope(self, method: str) -> Tuple[Any, Scope]:
        """(frame, this call's captured scope) for ``build``/``call``, which run in the layer's
        own call only."""
        kind = type(self).__name__
        frame = _frame.current(f"{kind}.{method}")
        captured = _this_call(self._scopes, frame)
        if captured is None or "_fn_made" not in self.__dict__:
            raise RuntimeError(
                f"{kind}.{method} was called outside the layer's call: it needs the scope and "
                f"dtype the layer's first call in this init/apply decides.\n  fix: call the layer, "
                f"layer(inputs), which runs build and then call (super().{method}(...) inside "
                f"{kind}'s own {method})).")
        return frame, captured

    def add_weight(self, name: str, shape: Optional[Sequence[int]], *args: Any,
                   **kwargs: Any) -> jax.Array:
        """TF's ``add_weight`` for a subclass's ``build``: as ``sp.layers.Layer.add_weight``, in the
        layer's scope, trainable unless the layer or ``trainable=False`` says otherwise."""
        if "_weights" not in self.__dict__:
            raise RuntimeError(
                f"{type(self).__name__}.add_weight({name!r}): only a subclass that defines build "
                "or call makes weights of its own.\n  fix: subclass the layer, define "
                "build(input_shape) and call add_weight there, then super().build(input_shape).")
        return Layer.add_weight(self, name, shape, *args, **kwargs)  # type: ignore[arg-type]

    add_variable = add_weight

    def __copy__(self) -> "_LayerObject":
        """``copy.copy``: the same arguments and name, and the state of a fresh construction: the
        copy's first call opens its own scope (``dense_1``) and makes its own weights."""
        return _fresh_copy(self, ("_weights", "_building", "_fn_made", "_dtype", "_prebuilt"))

    def __deepcopy__(self, memo: dict) -> "_LayerObject":
        """``copy.deepcopy``: as ``copy.copy``, with deep copies of the arguments."""
        return _deep_copy(self, self.__copy__(), memo)

    def __getattr__(self, attribute: str) -> Any:
        # Reached only for what the object does not have: TF's attributes of the layer, or a
        # property whose getter raised AttributeError (shown as such, not as a missing attribute).
        cls = type(self)
        if attribute in self.__dict__.get("_built_value_names", ()):  # a subclass's build stored it
            return _built_value(self, attribute)
        _reraise_property_error(self, attribute)
        if attribute in cls._weight_names:
            return _builtin_weight(self, attribute)
        if not attribute.startswith("_") and attribute in _config_names(cls):
            return _config_value(self, attribute)
        raise AttributeError(f"{cls.__name__!r} object has no attribute {attribute!r}")

    @property
    def built(self) -> bool:
        """TF's ``built``: whether the layer was called (set to ``True`` in ``__init__``, its
        ``build`` never runs, as in TF)."""
        flag = self.__dict__.get("_built")
        return "_latest_prefix" in self.__dict__ if flag is None else flag

    @built.setter
    def built(self, value: bool) -> None:
        self.__dict__["_built"] = value

    @property
    def weights(self) -> list:
        """This ``init``/``apply`` call's values of the layer's weights, the trainable ones first
        (TF's order: ``kernel``, ``bias``, then e.g. batch normalization's ``moving_mean``); empty
        before the layer's first call in it."""
        trainable, others = _builtin_weights(self)
        return trainable + others

    variables = weights

    @property
    def trainable_weights(self) -> list:
        """The trainable ones among ``weights``."""
        return _builtin_weights(self)[0]

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self) -> list:
        """The others."""
        return _builtin_weights(self)[1]

    non_trainable_variables = non_trainable_weights

    @property
    def dtype(self) -> Optional[np.dtype]:
        """TF's ``dtype``: the weights' dtype, the inputs' floating one at the layer's first call
        in this ``init``/``apply`` (``None`` before it, or outside one)."""
        decided = self.__dict__.get("_dtype")  # a subclass's, from its inputs (_call_layer)
        if decided is not None:
            return decided
        if _frame._FRAME.get() is None:
            return None
        weights = self.weights
        return np.dtype(weights[0].dtype) if weights else None

    @property
    def scope_name(self) -> str:
        """TF's ``scope_name``: the path of the scope the layer's first call captured."""
        return _captured_scope_name(self)

    @property
    def losses(self) -> list:
        """Not provided: ``sp.regularization_loss()`` sums the regularizers' terms."""
        raise _losses_error(type(self).__name__)

    def __call__(self, inputs: jax.Array, *args: Any, scope: Any = None,
                 **call_kwargs: Any) -> jax.Array:
        if args:  # TF's: call's arguments (training=), never the scope, which is keyword-only
            _positional_call_args(type(self), args, call_kwargs)
        if call_kwargs and "training" in call_kwargs and not _takes_training(type(self)._fn):
            del call_kwargs["training"]  # TF's (Keras's) layers drop it when call does not take it
        captured, reuse = _object_scope(self, f"sp.layers.{type(self).__name__}", scope)
        frame, ns = _enter_object_name_scope(captured)
        # A first call (reuse not on) makes the weights: _building runs it
        run = type(self)._fn if reuse is True else functools.partial(_building, self, frame,
                                                                      type(self)._fn)
        try:
            if captured.custom_getter is None:
                # The body runs in the captured scope (TF's jump, _Within: its default names are
                # numbered there), whose re-entry by the layer function then changes nothing
                # (_Current).
                within = _Within(reentered(captured, reuse))
                with within:
                    return run(inputs, *self._args, **self._kwargs, **call_kwargs,
                               name=within.scope, reuse=reuse)
            return run(inputs, *self._args, **self._kwargs, **call_kwargs, name=captured,
                       reuse=reuse)
        finally:
            _exit_name_scope(frame, ns)


def _fresh_copy(layer: Any, made_at_call: Tuple[str, ...]) -> Any:
    """A shallow copy of a layer object without what its calls learned: no captured scopes, the
    per-call dicts (``_this_call``'s tokens) fresh (or, for those in ``made_at_call``, absent, as
    before the first call), and ``built`` as it was when it was made (``_prebuilt``, kept by the
    first call)."""
    new = object.__new__(type(layer))
    attributes = dict(layer.__dict__)
    prebuilt = attributes.get("_prebuilt")
    for key in made_at_call + ("_latest_prefix",):
        attributes.pop(key, None)
    for key in ("_scopes", "_weights", "_building", "_fn_made", "_built_values"):
        if key in attributes:
            attributes[key] = {}
    if "_prebuilt" in attributes:
        attributes["_prebuilt"] = None
    if prebuilt is not None:  # called: built is what the constructor left
        if "_built" in attributes:  # a built-in object's (unset: whether it was called)
            attributes["_built"] = True if prebuilt else None
        else:
            attributes["built"] = prebuilt
    new.__dict__.update(attributes)
    return new


def _deep_copy(layer: Any, new: Any, memo: dict) -> Any:
    """``copy.deepcopy`` of a layer object or RNN cell: ``new``, its ``copy.copy`` (a fresh object:
    its calls capture their own scopes and make their own weights), with deep copies of its
    attributes. Scopes are shared, as ``copy.copy`` shares them: a scope names where the weights
    go, and one captured in a call holds that call's params. So is a traced value ``build`` stored
    under a name the class defines (``_set_layer_attribute`` keeps the others per call): the copy's
    own ``build`` replaces it."""
    memo[id(layer)] = new
    attributes = new.__dict__
    for key, value in list(attributes.items()):
        if not isinstance(value, (Scope, jax.core.Tracer)):
            attributes[key] = copy.deepcopy(value, memo)
    return new


def _positional_call_args(cls: Any, args: tuple, call_kwargs: dict) -> None:
    """A built-in layer object's call arguments after ``inputs``, given by position, moved into
    ``call_kwargs``: TF's ``Layer.__call__(inputs, *args, **kwargs)`` passes them to ``call``, whose
    only one is ``training`` (batch normalization's, dropout's); ``scope`` is keyword-only."""
    names = ("training",) if _takes_training(cls._fn) else ()
    kind = f"sp.layers.{cls.__name__}" if cls.__module__ == __name__ else cls.__name__
    if len(args) > len(names):
        takes = "inputs, training" if names else "inputs"
        scope_fix = (f" To place the weights under a scope, pass it by keyword: "
                     f"layer(x, scope={args[len(names)]!r}).")
        raise TypeError(
            f"{kind}: call() takes {len(names) + 1} positional arguments ({takes}) but "
            f"{len(args) + 1} were given (TF's layer passes the arguments after inputs to call; "
            f"scope is keyword-only).\n  asked: {kind}(...)(inputs, "
            f"{', '.join(repr(a) for a in args)})\n  fix: pass only call's arguments by position "
            f"({takes}).{scope_fix if isinstance(args[len(names)], (str, Scope)) else ''}")
    for name, value in zip(names, args):
        if name in call_kwargs:
            raise TypeError(f"{kind}: call() got multiple values for argument {name!r} (by "
                            f"position and by keyword).\n  fix: pass {name} once, e.g. "
                            f"layer(x, {name}=...).")
        call_kwargs[name] = value


def _reraise_property_error(layer: Any, attribute: str) -> None:
    """In ``__getattr__``: if ``attribute`` is a property (``weights``, ``scope_name``, ...), Python
    came here because its getter raised AttributeError; run it again and show that error as a
    RuntimeError, which ``__getattr__`` cannot turn into "object has no attribute 'weights'"."""
    prop = getattr(type(layer), attribute, None)
    if not isinstance(prop, property) or prop.fget is None:
        return
    try:
        prop.fget(layer)
    except AttributeError as e:
        raise RuntimeError(
            f"{type(layer).__name__}.{attribute} failed inside the library: {e}\n  fix: this is a "
            "bug in scoped_params; please report it with this traceback.") from e


def _object_scope(layer: Any, api: str, scope: Any = None) -> Tuple[Scope, Any]:
    """(scope, reuse) for this call of a layer object (``sp.layers.Dense``, an ``sp.rnn`` cell), which
    has ``name``, ``_base_name``, ``_reuse`` and a ``_scopes`` dict (the token ``_this_call`` keeps its
    captured scope under).

    The first call in a trace opens ``scope(None, default_name=<name, else kind>)`` (TF's
    ``_set_scope``, whose base name is the ``name=`` given: two objects named ``fc`` get ``fc`` and
    ``fc_1``), or ``scope(<name, else kind>)`` when the object was made with ``_reuse`` (so they
    share), or the ``scope`` the call passes (TF's ``layer(x, scope=...)``: the variables go right
    under it), and keeps the captured scope for that trace; later calls in the same trace get it
    back with reuse on, whatever scope they pass, as in TF. An object made with ``_scope`` (TF's
    ``Layer(_scope=...)``, kept as ``_made_in`` by ``_construction_scope``) re-enters that scope
    instead, whatever its name or the call's ``scope``.
    """
    frame = _frame.current(api)
    captured = _this_call(layer._scopes, frame)
    if captured is not None:  # TF's reuse=self.built (a first call that raised before it built)
        return captured, True if _built_in_call(layer, frame) else layer._reuse
    attributes = layer.__dict__  # (an RNN cell's name is the name given; a layer's is its default)
    base_name = (attributes["_given_name"] if "_given_name" in attributes else layer.name
                 ) or layer._base_name
    if isinstance(base_name, Scope):  # TF's _init_set_name: a scope given as name names by its path
        base_name = base_name.name
    made_in = attributes.get("_made_in")
    if made_in is not None:  # TF's Layer(_scope=...): its scope is set, the call's is not used
        scope = made_in
    with _layer_scope(scope, base_name, layer._reuse) as captured:
        pass  # TF's _set_scope: the numbering is decided by this first entry
    _keep_for_call(layer._scopes, frame, captured)
    # For what reads the latest call's scope outside a call (scope_name, built): its path only, as
    # the Scope holds this call's params (get_param's direct lookup).
    layer._latest_prefix = captured.prefix
    return captured, layer._reuse


def _enter_object_name_scope(captured: Scope) -> Tuple[Any, tuple]:
    """Enter the name scope a layer object's call runs in; ``_exit_name_scope(*result)`` leaves it.

    TF's ``Layer.__call__`` runs ``build``, ``call`` and the activation in
    ``name_scope(captured.original_name_scope)``: the absolute name scope its first call opened
    (``scale/``, numbered by ``_object_scope``'s entry), re-entered wherever it is called, so its
    ops, records and sub-layers are named there. Entered directly, not by an ``sp.name_scope``
    object: it runs on every call of every object."""
    frame = _frame._FRAME.get()
    return frame, _enter_name_scope(frame, captured.original_name_scope, _OBJECT_NAME_SCOPE)


_OBJECT_NAME_SCOPE = "a layer object's call (TF's name_scope(scope.original_name_scope))"


def _this_call(cache: dict, frame: Any) -> Any:
    """What an object kept under ``cache`` for this ``init``/``apply`` call (``frame``), or ``None``.

    Layer objects, templates and RNN cells may outlive a call (built at module level, used in many
    calls, nested or in threads at once), so what they learn in a call (the scope their first call
    captured, whether it built, ...) is kept on that call's frame, not on the object: any number of
    calls may overlap, and nothing of a finished call stays alive with the object. ``cache`` is one
    of the object's dicts, used only as a token for what it keeps (``frame.kept``, ``id(cache) ->
    (cache, value)``: the frame holds ``cache``, so no other dict has its id while the call runs).
    ``_layer_stack._Snapshot`` rolls ``frame.kept`` back with the rest of a retraced function's
    state."""
    kept = frame.kept
    if kept is None:
        return None
    entry = kept.get(id(cache))
    return None if entry is None else entry[1]


def _keep_for_call(cache: dict, frame: Any, value: Any) -> None:
    """Keep ``value`` under ``cache`` for this call (``_this_call``)."""
    kept = frame.kept
    if kept is None:
        kept = frame.kept = {}
    kept[id(cache)] = (cache, value)


def _forget_for_call(cache: dict, frame: Any) -> None:
    """Drop what this call kept under ``cache`` (``_this_call`` gives ``None`` again)."""
    if frame.kept:
        frame.kept.pop(id(cache), None)


def _built_in_call(layer: Any, frame: Any) -> bool:
    """Whether a layer object or RNN cell has built in this call (``_mark_built``): TF's ``built``,
    by which its later calls reuse the weights. A first call that raised before it built (a
    caught error: an input of the wrong rank) leaves it unbuilt; the scope it captured stays, as
    TF's ``_scope`` does, so the next call builds there."""
    kept = frame.kept
    return kept is not None and ("built", id(layer._scopes)) in kept


def _mark_built(layer: Any, frame: Any) -> None:
    """Note that ``layer`` built in this call (``_built_in_call``); rolled back with ``frame.kept``."""
    frame.kept[("built", id(layer._scopes))] = (layer._scopes, True)  # kept: _object_scope made it


def _building(layer: Any, frame: Any, call: Callable, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``, the first call in this init/apply of a built-in layer object or
    cell, which makes its weights inside it: built once it returns, or, if it raised, once it
    had made them (TF's ``build`` precedes the ``call`` that failed; see ``_created_count``)."""
    made = _created_count(frame)
    try:
        out = call(*args, **kwargs)
    except BaseException:
        if _created_count(frame) > made:  # raised after its weights
            _mark_built(layer, frame)
        raise
    _mark_built(layer, frame)
    return out


def _created_count(frame: Any) -> int:
    """How many parameters and state entries this call has created so far (init's specs, apply's
    created names): a built-in layer object or cell makes its weights inside its function, so one
    whose first call raised after making them has built (TF's weights are made in ``build``,
    before the ``call`` that raised). One that raised between its weights (a kernel made, the
    bias refused) counts as built too: its next call fails either way, here on the bias, in TF on
    the kernel made again."""
    root = _root_store(frame.store)
    return len(root.specs) if isinstance(root, InitStore) else len(root.created)


def _holds_array(value: Any) -> bool:
    """Whether ``value`` is a JAX array (a traced one too) or a list, tuple or dict holding one."""
    if isinstance(value, jax.Array):
        return True
    return isinstance(value, (list, tuple, dict)) and any(
        isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(value))


def _set_layer_attribute(layer: Any, name: str, value: Any) -> None:
    """``__setattr__`` of a custom layer (a subclass of ``sp.layers.Layer``, or of a built-in layer
    object with its own ``build`` or ``call``): what ``build`` stores on ``self`` that holds arrays
    (``self.kernel = self.add_weight(...)``) is kept for this ``init``/``apply`` call on its frame,
    as the layer's other per-call state (``_this_call``), and ``__getattr__`` reads it back there
    (``_built_value``). On the object it would outlive the call: a traced value leaked out of
    ``jit`` (JAX's error at the next read), a call in another thread reading this one's weights.
    A name the class itself has (a default ``kernel = None``, a property) is set as usual."""
    attributes = layer.__dict__
    token = attributes.get("_building")
    if token is not None:
        frame = _frame._FRAME.get()
        if (frame is not None and _this_call(token, frame) and _holds_array(value)
                and getattr(type(layer), name, _NOT_SET) is _NOT_SET):
            values = attributes.setdefault("_built_values", {})  # the token (_this_call)
            _keep_for_call(values, frame, {**(_this_call(values, frame) or {}), name: value})
            attributes.pop(name, None)
            names = attributes.get("_built_value_names", frozenset())
            if name not in names:
                attributes["_built_value_names"] = names | {name}
            return
    object.__setattr__(layer, name, value)


def _built_value(layer: Any, attribute: str) -> Any:
    """What the layer's ``build`` stored as ``attribute`` in this ``init``/``apply`` call
    (``_set_layer_attribute``)."""
    kind = type(layer).__name__
    frame = _frame._FRAME.get()
    if frame is None:
        raise NotInTransformError(
            f"{kind}(...).{attribute} was read outside init/apply: it is what {kind}.build stored "
            "in a call, and a pure function keeps no weights between calls (each init and apply "
            "runs build again at the layer's first call in it).\n"
            f"  asked: {kind}(...).{attribute} with no sp.transform init/apply running in this "
            "thread or context\n"
            f"  fix: read layer.{attribute} inside the model function, after the layer's call; "
            "outside, read the params tree (sp.flatten(params) lists the full names).")
    token = layer.__dict__.get("_built_values")
    values = None if token is None else _this_call(token, frame)
    if values is None or attribute not in values:
        raise AttributeError(
            f"{kind!r} object has no attribute {attribute!r} in this init/apply call yet: its "
            "build sets it, and build runs at the layer's first call in each init/apply (what it "
            "stores is that call's), which has not come yet in this one.\n  fix: call the layer "
            f"first, y = layer(x), and read layer.{attribute} after it in the same model "
            "function (or in call()).", name=attribute, obj=layer)
    value = values[attribute]
    # Read at the top of apply (not inside an sp.scan, a vmap, ...), every traced value belongs to
    # the call's own trace or one it runs in (a jit or vmap around apply); one of another was made
    # inside a nested trace that has ended since. (init's values are placeholders, never computed:
    # one made inside an sp.scan's step stands for the parameter after it too.)
    if frame.mode is _frame.APPLY and _TRACE.value is frame.trace and any(
            isinstance(leaf, jax.core.Tracer) and not _runs_in(frame.trace, leaf)
            for leaf in jax.tree_util.tree_leaves(value)):
        raise NestedTraceError(
            f"{kind}(...).{attribute} was made by {kind}.build at the layer's first call, which ran "
            "inside a JAX trace that has ended since (the function of an sp.scan, sp.cond, "
            "sp.remat, ...): the value belongs to that trace and cannot be used after it, as TF 1.x "
            "refuses a tensor made inside a tf.while_loop or tf.cond outside it.\n"
            f"  fix: call the layer once before the sp.scan/sp.cond/sp.remat, so that its build runs "
            f"outside it, or compute {attribute} in call() from its weights.")
    return value


def _runs_in(trace: Any, tracer: Any) -> bool:
    """Whether ``tracer`` belongs to ``trace`` or to a trace ``trace`` runs inside (its parents);
    True where this JAX does not say."""
    owner = getattr(tracer, "_trace", None)
    if owner is None:
        return True
    while trace is not None:
        if trace is owner:
            return True
        trace = getattr(trace, "parent_trace", None)
    return False


_NOT_SET = object()  # getattr's default: the class has no such attribute

_NAME_COUNTS: Dict[str, int] = {}  # outside any init/apply: TF's default graph's counts


def _unique_object_name(base_name: str) -> str:
    """TF's ``unique_object_name(base_name, zero_based=False)``: an unnamed layer object's
    ``name`` when it is made: ``dense_1``, ``dense_2``, ... counted per graph, here per
    ``init``/``apply`` call (in its name table, under keys no name scope has) or, for objects made
    outside one, per process. Only layer objects count (TF's functional layers make one each)."""
    frame = _frame._FRAME.get()
    counts: Any = _NAME_COUNTS if frame is None else frame.names_in_use
    key = base_name if frame is None else (_unique_object_name, base_name)
    number = counts[key] = counts.get(key, 0) + 1
    return f"{base_name}_{number}"


def _construction_scope(value: Any, kind: str) -> Scope:
    """TF's ``Layer(_scope=value)``: ``variable_scope(value)`` entered when the layer is made,
    inside the scope open then (at the root outside a transform), and kept as the layer's scope:
    its calls run there wherever they are, whatever its name or their ``scope=`` say (TF's own
    functional layers pass ``_scope=name``)."""
    if not isinstance(value, (str, Scope)):
        raise TypeError(
            f"{kind}(_scope={value!r}): _scope must be a scope name or an sp.Scope, got "
            f"{type(value).__name__} (TF: \"VariableScope: name_or_scope must be a string or "
            "VariableScope.\").\n  fix: pass the scope's name, e.g. _scope='block', or name= to "
            "name the layer's default scope.")
    if _frame._FRAME.get() is None:
        return value if isinstance(value, Scope) else Scope(value, original_name_scope=value + "/")
    with scope(value) as entered:
        pass
    return entered


_BUILD_OVERRIDES = {"activation": None, "activity_regularizer": None, "training": False}
_CALL_OVERRIDES = {"activity_regularizer": None}


def _overrides(cls: Any, building: bool) -> Dict[str, Any]:
    """The layer function's arguments a subclass's ``build`` (``building``) or ``call`` overrides:
    ``build`` makes the weights only (no activation, no regularized output, no moving-statistics
    update), ``call`` leaves the activity regularizer to the layer's call (``_call_layer``)."""
    taken = _parameter_names(cls._fn)
    wanted = _BUILD_OVERRIDES if building else _CALL_OVERRIDES
    return {k: v for k, v in wanted.items() if k in taken}


# A weight the layer function makes only when an argument says so, and that argument.
_OPTIONAL_WEIGHTS = {"bias": "use_bias", "beta": "center", "gamma": "scale"}


def _stored(frame: Any, full: str) -> Any:
    """The value ``get_param`` (or ``get_state``) hands out for ``full`` in this ``init``/``apply``
    call (``None`` if there is none): a layer object's weights are read here, when asked for, so
    that its call keeps nothing. Inside an ``sp.layer_stack`` block, the value is this layer's
    slice (the block's store is a view, ``_layer_stack._StackView.lookup``)."""
    value = _stored_in(frame.store, frame, full)
    return jnp.asarray(value) if isinstance(value, np.ndarray) else value


def _builtin_weight(layer: Any, attribute: str) -> Any:
    """A built-in layer object's ``kernel``, ``bias``, ... in this ``init``/``apply`` call."""
    kind = type(layer).__name__
    frame = _frame.current(f"sp.layers.{kind}(...).{attribute}")
    captured = _this_call(layer._scopes, frame)
    value = None if captured is None else _stored(frame, captured.prefix + attribute)
    if value is None:
        flag = _OPTIONAL_WEIGHTS.get(attribute)
        if captured is not None and flag is not None and not _config_value(layer, flag):
            return None  # TF's too: Dense(use_bias=False).bias is None
        raise AttributeError(
            f"{kind!r} object has no attribute {attribute!r} yet: the layer makes its weights at "
            "its first call in each init/apply (in a subclass, super().build(input_shape) makes "
            "them), and this one has not run yet in this call.\n  fix: call the layer first, "
            f"y = layer(x), and then read layer.{attribute} in the same model function (TF's has "
            "no kernel before its first call either).")
    return value


def _builtin_weights(layer: Any) -> Tuple[list, list]:
    """(trainable, non-trainable) values of a layer object's weights in this call, TF's order."""
    cls = type(layer)
    frame = _frame.current(f"sp.layers.{cls.__name__}(...).weights")
    captured = _this_call(layer._scopes, frame)
    if captured is None:
        return [], []
    trainable_layer = _config_value(layer, "trainable")
    trainable, others = [], []
    for name in cls._weight_names:
        value = _stored(frame, captured.prefix + name)
        if value is not None:
            if trainable_layer and name not in cls._non_trainable_names:
                trainable.append(value)
            else:
                others.append(value)
    made = _this_call(layer.__dict__.get("_weights", {}), frame) or ()  # a subclass's add_weight
    builtin = {captured.prefix + name for name in cls._weight_names}
    for full, weight_trainable in made:
        if full not in builtin:
            (trainable if weight_trainable else others).append(_stored(frame, full))
    return trainable, others


def _config_names(cls: Any) -> Dict[str, None]:
    """The constructor arguments a layer object answers as attributes (TF's ``units``, ...)."""
    return {k: None for k in _parameter_names(cls._fn)
            if k not in ("inputs", "name", "reuse") and not k.startswith("_")}


# Bounded: the functions of Layer subclasses made per model (a notebook cell, a factory) are keys,
# and with them what their closures hold. The layers' own functions stay among the recent ones.
@functools.lru_cache(maxsize=512)
def _signature(fn: Callable) -> inspect.Signature:
    return inspect.signature(fn)


def _config_value(layer: Any, attribute: str) -> Any:
    """A layer object's constructor argument ``attribute`` (its default if not given), as TF's
    layer keeps it: ``units``/``filters`` as ints, sizes as tuples, ``padding`` in lower case,
    Keras names resolved."""
    cls = type(layer)
    if attribute in layer._kwargs:
        value = layer._kwargs[attribute]
    else:
        bound = _signature(cls._fn).bind_partial(None, *layer._args)
        bound.apply_defaults()
        value = bound.arguments[attribute]
    kind = cls._base_name or _snake_case(cls.__name__)
    if value is None:
        return None
    if attribute in ("units", "filters"):
        return int(value)
    if attribute in ("kernel_size", "strides", "dilation_rate", "pool_size") and cls._rank:
        return _tuple(value, cls._rank, attribute, kind, truncate=attribute == "pool_size")
    if attribute == "padding" and isinstance(value, str):
        return value.lower()
    if attribute.endswith(("activation", "initializer", "regularizer", "constraint")):
        return _from_keras(kind, None, attribute, value)
    return value


def _captured_scope_name(layer: Any) -> str:
    """TF's ``scope_name``: the path of the scope the layer's first call in this ``init``/``apply``
    captured (outside one, the latest call's), or the one ``_scope=`` set."""
    frame = _frame._FRAME.get()
    prefix = None
    if frame is not None:
        captured = _this_call(layer._scopes, frame)
        if captured is not None:
            prefix = captured.prefix
    else:
        prefix = layer.__dict__.get("_latest_prefix")
    if prefix is None:
        made_in = layer.__dict__.get("_made_in")
        if made_in is not None:
            prefix = made_in.prefix
    if prefix is None:
        where = "in this init/apply" if frame is not None else "yet"
        raise ValueError(
            f"No name available for layer scope because the layer {layer.name!r} has not been used "
            f"yet. The scope name is determined the first time the layer instance is called "
            f"(TF's words; not called {where}).\n  fix: call the layer, y = layer(x), before "
            "reading scope_name.")
    return prefix[:-1]


def _updates_error(kind: str) -> NotImplementedError:
    return NotImplementedError(
        f"{kind}.updates: there are no update ops here; a batch norm's moving statistics are "
        "state.\n  fix: build the model with sp.transform_with_state: apply(params, state, ...) "
        "returns the new state (the updated moving_mean and moving_variance) to pass to the next "
        "call.")


def _losses_error(kind: str) -> NotImplementedError:
    return NotImplementedError(
        f"{kind}.losses: there is no losses collection here; a pure function returns what it "
        "computes.\n  fix: sp.regularization_loss(), called in the model function, sums the terms "
        "TF's layer.losses holds (add_weight(regularizer=), kernel_regularizer=, "
        "activity_regularizer=) for every layer called in this init/apply: add it to the loss.")


def _layer_dtype(layer: Any, frame: Any) -> Optional[np.dtype]:
    """A custom layer's weights' default dtype: its ``dtype=``, else its first input's in this call
    (kept per call, as what ``build`` makes: one call's inputs never fix another's weights)."""
    return layer._dtype if layer._dtype is not None else _this_call(layer._input_dtypes, frame)


def _input_dtype(inputs: Any) -> np.dtype:
    """TF's default dtype of a custom layer: its first input's, whatever it is (int32 inputs make
    int32 weights, zeros by default)."""
    leaf = jax.tree_util.tree_leaves(inputs)[0]
    return np.dtype(leaf.dtype if isinstance(leaf, jax.Array) else jnp.result_type(leaf))


def _call_layer(layer: Any, api: str, inputs: Any, args: tuple, kwargs: dict,
                activity_regularizer: Any) -> Any:
    """TF's ``Layer.__call__`` for ``sp.layers.Layer`` and for a subclass of a built-in layer
    object that defines ``build`` or ``call``: the scope (``_object_scope``), ``build`` at the
    first call in each ``init``/``apply`` unless ``built`` was set before the first call,
    ``call`` in the captured scope and its name scope (with ``scope=`` that scope if ``call``
    takes one), then the activity regularizer on the output."""
    frame = _frame.current(api)
    if layer._prebuilt is None:  # TF builds while built is False: not at all if set in __init__
        layer._prebuilt = bool(layer.built)
    captured, reuse = _object_scope(layer, api, kwargs.pop("scope", None))
    if kwargs and "training" in kwargs and not _takes_training(type(layer).call):
        del kwargs["training"]  # TF's (Keras's) layers drop it when call does not take it
    if layer._dtype is None and _this_call(layer._input_dtypes, frame) is None:
        _keep_for_call(layer._input_dtypes, frame, _input_dtype(inputs))
    _, ns = _enter_object_name_scope(captured)
    try:
        with _layer_scope(captured, layer._base_name, reuse) as current:
            if _this_call(layer._weights, frame) is None:
                _keep_for_call(layer._weights, frame, [])
                if not layer._prebuilt:
                    _keep_for_call(layer._building, frame, True)
                    try:
                        layer.build(jax.tree_util.tree_map(lambda x: _TensorShape(np.shape(x)),
                                                           inputs))
                    except BaseException:  # not built (TF's built stays False): the next call builds
                        _forget_for_call(layer._weights, frame)
                        raise
                    finally:
                        _keep_for_call(layer._building, frame, False)
                layer.built = True
                _mark_built(layer, frame)
            if layer._call_has_scope:  # TF's: call(..., scope=<the layer's variable scope>)
                kwargs["scope"] = current
            outputs = layer.call(inputs, *args, **kwargs)
    finally:
        _exit_name_scope(frame, ns)
    if activity_regularizer is not None:
        _activity_loss(activity_regularizer, outputs, f"sp.layers.{type(layer).__name__}")
    return outputs


_UNSUPPORTED_FIX = {  # Keras arguments TF's v1 layer classes pass on, and what to do here instead
    "dtype": "parameters take the input's floating dtype here: cast the input instead.",
    "output_padding": "pad the output (jnp.pad), or pick strides/padding that give the size.",
    "dilation_rate": "a transposed convolution here has no dilation: drop the argument.",
    "groups": "split the channels, apply one layer per group and concatenate the outputs.",
    "reuse": "an object's later calls share its weights; to reuse existing ones, call it first "
             "inside sp.scope(..., reuse=True).",
}


def _read_takes_training(fn: Callable) -> bool:
    """Whether ``fn`` (a layer's function, a Layer subclass's ``call``) takes ``training=``, as
    Keras's ``_expects_training_arg``: by name or by ``**kwargs``. A layer object drops the
    argument otherwise, as TF's do."""
    parameters = inspect.signature(fn).parameters
    return "training" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


# Asked once per function (``inspect.signature`` costs ~90 us: objects are built in loops and in
# every trace), without keeping a Layer subclass made per model alive with what its call captured.
_takes_training = SignatureFacts(_read_takes_training)
# ``fn``'s parameter names, in order.
_parameter_names = SignatureFacts(lambda fn: dict.fromkeys(inspect.signature(fn).parameters))


def _check_layer_arguments(cls: Any, kwargs: dict, call_only: Tuple[str, ...]) -> None:
    """Refuse at construction a keyword the layer's function does not take (TF's class would
    accept many of them, as Keras arguments), rather than at the first call, with Python's
    bare message."""
    taken = _parameter_names(cls._fn)
    unknown = [k for k in kwargs if k not in taken or k in call_only]
    if unknown:
        api = f"sp.layers.{cls.__name__}"
        fixes = "".join(f"\n  fix ({k}=): {_UNSUPPORTED_FIX.get(k, 'drop it.')}" for k in unknown)
        public = (p for p in taken if p not in call_only and not p.startswith("_"))
        raise TypeError(
            f"{api} does not support {', '.join(k + '=' for k in unknown)} (its arguments are "
            f"{cls._fn.__name__}'s: {', '.join(public)}).{fixes}")


def _check_name_and_dtype(api: str, name: Any, dtype: Any, takes_dtype: bool = False
                          ) -> Optional[np.dtype]:
    """Every layer object's ``name=`` and ``dtype=``, checked at construction; returns ``dtype`` as
    a NumPy dtype (``None`` if not given). TF's classes take any name and fail at the first call
    (``expected string or bytes-like object``), and refuse a dtype that is none with TF's words
    only; ``takes_dtype``: the class uses its dtype (``Layer``) rather than refusing one."""
    if name is not None and not isinstance(name, (str, Scope)):
        shown = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        raise TypeError(
            f"{api}(name={name!r}): a layer's name must be a string, got {type(name).__name__} "
            "(TF's layer fails at its first call: \"expected string or bytes-like object, got "
            f"'{type(name).__name__}'\").\n  fix: name={shown!r}, or leave name=None for the "
            "default, numbered name.")
    if dtype is None:
        return None
    try:
        return _as_dtype(dtype)
    except TypeError:
        fix = ("pass a NumPy/JAX dtype, e.g. dtype=jnp.float32, or leave dtype=None for the "
               "inputs' floating dtype" if takes_dtype else
               f"drop it: parameters take the input's floating dtype here ({api} takes no dtype=; "
               "cast the input instead)")
        raise TypeError(f"{api}(dtype={dtype!r}): {dtype!r} is not a dtype JAX has (TF refuses it "
                        f"too: \"Cannot convert ... to a TensorFlow DType\").\n  fix: {fix}."
                        ) from None


class Dense(_LayerObject):
    """``tf.compat.v1.layers.Dense(units, ...)``; arguments as in ``dense``."""
    _fn, _base_name = staticmethod(dense), "dense"


class Conv2D(_LayerObject):
    """``tf.compat.v1.layers.Conv2D(filters, kernel_size, ...)``; arguments as in ``conv2d``."""
    _fn, _base_name, _rank = staticmethod(conv2d), "conv2d", 2


class Conv1D(_LayerObject):
    """``tf.compat.v1.layers.Conv1D(filters, kernel_size, ...)``; arguments as in ``conv1d``."""
    _fn, _base_name, _rank = staticmethod(conv1d), "conv1d", 1


class Conv3D(_LayerObject):
    """``tf.compat.v1.layers.Conv3D(filters, kernel_size, ...)``; arguments as in ``conv3d``."""
    _fn, _base_name, _rank = staticmethod(conv3d), "conv3d", 3


class SeparableConv1D(_LayerObject):
    """``tf.compat.v1.layers.SeparableConv1D(filters, kernel_size, ...)``."""
    _fn, _base_name, _rank = staticmethod(separable_conv1d), "separable_conv1d", 1
    _weight_names = ("depthwise_kernel", "pointwise_kernel", "bias")


class SeparableConv2D(_LayerObject):
    """``tf.compat.v1.layers.SeparableConv2D(filters, kernel_size, ...)``."""
    _fn, _base_name, _rank = staticmethod(separable_conv2d), "separable_conv2d", 2
    _weight_names = ("depthwise_kernel", "pointwise_kernel", "bias")


class Conv2DTranspose(_LayerObject):
    """``tf.compat.v1.layers.Conv2DTranspose(filters, kernel_size, ...)``."""
    _fn, _base_name, _rank = staticmethod(conv2d_transpose), "conv2d_transpose", 2


class Conv3DTranspose(_LayerObject):
    """``tf.compat.v1.layers.Conv3DTranspose(filters, kernel_size, ...)``."""
    _fn, _base_name, _rank = staticmethod(conv3d_transpose), "conv3d_transpose", 3


class BatchNormalization(_LayerObject):
    """``tf.compat.v1.layers.BatchNormalization(...)``; call it as ``bn(x, training=...)``."""
    _fn = staticmethod(functools.partial(  # its errors name the class
        batch_normalization, _api=("sp.layers.BatchNormalization", "training")))
    _base_name = "batch_normalization"
    _weight_names = ("gamma", "beta", "moving_mean", "moving_variance")
    _non_trainable_names = ("moving_mean", "moving_variance")


class _Stateless:
    """A layer object without variables: a function with its arguments bound. Its constructor's
    arguments are TF's attributes (``pool.pool_size``, ``dropout.rate``); its weights are none, as
    TF's (``weights == []``, ``count_params() == 0``)."""

    weights = trainable_weights = non_trainable_weights = variables = property(lambda self: [])
    updates = property(lambda self: [])  # no statistics to update, as TF's

    def apply(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """TF's ``layer.apply(inputs, ...)``: the layer's call, ``layer(inputs, ...)``."""
        return self(inputs, *args, **kwargs)  # type: ignore[operator]
    get_weights = _KerasMethods.get_weights
    set_weights = _KerasMethods.set_weights
    get_config = _KerasMethods.get_config

    def count_params(self) -> int:
        """TF's ``count_params``: a layer without weights has none."""
        return 0

    @property
    def dtype(self) -> Any:
        """The ``dtype=`` it was made with (TF's legacy layers: None until told)."""
        return self._kwargs.get("dtype")

    _fn: Callable[..., jax.Array]
    _base_name = ""
    _rank = 0  # a pooling's spatial rank: its pool_size and strides read as tuples

    def __init__(self, *args: Any, **kwargs: Any):
        _check_name_and_dtype(f"sp.layers.{type(self).__name__}", kwargs.get("name"),
                              kwargs.get("dtype"))
        _check_layer_arguments(type(self), kwargs, call_only=("inputs",))
        self._args, self._kwargs = args, kwargs
        # TF's name: the one given, else the class's numbered (max_pooling2d_1, ...), as layers with
        # variables number theirs
        name = kwargs.get("name")
        self.name = name if isinstance(name, str) and name else _unique_object_name(
            _snake_case(type(self).__name__))

    def __call__(self, inputs: jax.Array, *args: Any, **call_kwargs: Any) -> jax.Array:
        if args:  # TF's: call's arguments (training=)
            _positional_call_args(type(self), args, call_kwargs)
        if call_kwargs and "training" in call_kwargs and not _takes_training(type(self)._fn):
            del call_kwargs["training"]  # TF's (Keras's) layers drop it when call does not take it
        return type(self)._fn(inputs, *self._args, **{**self._kwargs, **call_kwargs})

    def __getattr__(self, attribute: str) -> Any:
        # Reached only for what the object does not have: its arguments, as TF's attributes.
        if not attribute.startswith("_") and attribute in _config_names(type(self)):
            return _config_value(self, attribute)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}")


class Dropout(_Stateless):
    """``tf.compat.v1.layers.Dropout(rate=0.5, ...)``; call it as ``drop(x, training=...)``."""
    _fn = staticmethod(dropout)


class MaxPooling2D(_Stateless):
    """``tf.compat.v1.layers.MaxPooling2D(pool_size, strides, ...)``."""
    _fn, _rank = staticmethod(max_pooling2d), 2


class AveragePooling2D(_Stateless):
    """``tf.compat.v1.layers.AveragePooling2D(pool_size, strides, ...)``."""
    _fn, _rank = staticmethod(average_pooling2d), 2


class MaxPooling1D(_Stateless):
    """``tf.compat.v1.layers.MaxPooling1D(pool_size, strides, ...)``."""
    _fn, _rank = staticmethod(max_pooling1d), 1


class MaxPooling3D(_Stateless):
    """``tf.compat.v1.layers.MaxPooling3D(pool_size, strides, ...)``."""
    _fn, _rank = staticmethod(max_pooling3d), 3


class AveragePooling1D(_Stateless):
    """``tf.compat.v1.layers.AveragePooling1D(pool_size, strides, ...)``."""
    _fn, _rank = staticmethod(average_pooling1d), 1


class AveragePooling3D(_Stateless):
    """``tf.compat.v1.layers.AveragePooling3D(pool_size, strides, ...)``."""
    _fn, _rank = staticmethod(average_pooling3d), 3


class Flatten(_Stateless):
    """``tf.compat.v1.layers.Flatten(data_format='channels_last')``."""

    def __init__(self, data_format: str = "channels_last", name: Optional[str] = None,
                 **kwargs: Any):
        super().__init__(data_format=data_format, name=name, **kwargs)  # kwargs: refused there

    _fn = staticmethod(flatten)


# --- custom layers: tf.compat.v1.layers.Layer ------------------------------------------------------


def _snake_case(name: str) -> str:
    """TF's ``to_snake_case``: a layer class's default scope name (``GRUCell`` -> ``gru_cell``)."""
    intermediate = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    insecure = re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()
    return insecure if insecure[0] != "_" else "private" + insecure


class _Dimension(int):
    """An ``int`` that also answers TF 1.x's ``Dimension.value``."""

    @property
    def value(self) -> int:
        """The size, as TF 1.x's ``input_shape[-1].value``."""
        return int(self)


class _TensorShape(tuple):
    """``build``'s ``input_shape``: a tuple of ints that also answers TF 1.x's ``TensorShape`` API
    (``input_shape[-1].value``, ``as_list()``, ``ndims``)."""

    def __getitem__(self, index: Any) -> Any:  # type: ignore[override]
        item = tuple.__getitem__(self, index)
        return _TensorShape(item) if isinstance(index, slice) else _Dimension(item)

    def __iter__(self) -> Any:
        return (_Dimension(d) for d in tuple.__iter__(self))

    def as_list(self) -> list:
        """The sizes as a list of ints."""
        return [int(d) for d in tuple.__iter__(self)]

    @property
    def ndims(self) -> int:
        """The rank."""
        return len(self)


def _require_base_init(layer: Any, attribute: str) -> None:
    """Raise unless ``layer``'s ``__init__`` ran its base class's (which sets ``attribute``): a
    subclass of ``Layer`` or ``RNNCell`` that forgot ``super().__init__()``."""
    if attribute not in vars(layer):
        raise TypeError(f"{type(layer).__name__}.__init__ did not call the base class's: the layer "
                        "has no name, scope or weights yet.\n"
                        "  fix: call super().__init__(**kwargs) first in __init__, as TF requires.")


# TF's add_weight arguments that go on to get_param, which says what each is and to drop it.
_ADD_WEIGHT_PASSED_ON = frozenset({"use_resource", "synchronization", "aggregation"})


def _check_add_weight_options(kind: str, name: str, tf_options: dict) -> None:
    """TF's refusal of an ``add_weight`` keyword it does not take (``getter=``, ...), with the fix;
    its runtime settings pass on to ``get_param``, which says to drop them."""
    unknown = [k for k in tf_options if k not in _ADD_WEIGHT_PASSED_ON]
    if unknown:
        raise TypeError(_add_weight_refusal(kind, name, unknown[0]))

_ADD_WEIGHT_FIX = {  # keyword arguments tf.compat.v1.layers.Layer.add_weight refuses too
    "getter": "drop it: add_weight already creates the weight with sp.get_param in the layer's "
              "scope (TF 1.x's tf.layers.Layer refuses getter= too). To share weights across "
              "objects, build them with _reuse=sp.AUTO_REUSE, or call one object.",
    "custom_getter": "set it on the scope the layer is first called in: sp.scope(name, "
                     "custom_getter=...).",
}


def _add_weight_refusal(kind: str, name: Any, argument: str) -> str:
    fix = _ADD_WEIGHT_FIX.get(argument, "drop it (add_weight takes name, shape, dtype, "
                                        "initializer, regularizer, trainable, constraint, "
                                        "partitioner).")
    return (f"{kind}.add_weight({name!r}) got an unexpected keyword argument {argument}=.\n"
            f"  fix: {fix}")


class _NamedByClass:
    """A TF layer class whose default scope name is its class name in snake case (``class MyDense``
    -> ``my_dense``), unless the class sets ``_base_name``: custom layers and RNN cells."""

    _base_name = "layer"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_base_name" not in vars(cls):
            cls._base_name = _snake_case(cls.__name__)


class Layer(_NamedByClass, _KerasMethods):
    """``tf.compat.v1.layers.Layer``, for TF 1.x's custom layers: subclass it, create the weights in
    ``build(input_shape)`` with ``self.add_weight`` (or ``add_variable``), compute in
    ``call(inputs, ...)``.

    As in TF, the variables go under a scope named after the class (``class MyDense`` ->
    ``my_dense/kernel``, then ``my_dense_1`` for a second object), or ``name=``, decided at the first
    call; every later call of the object shares them, and ``layer(x, scope=...)`` places them right
    under that scope at the first call. ``build`` and ``call`` run in the name scope the first call
    opened (``my_dense/``, re-entered by every call: ``sp.record`` names and sub-layers' scopes go
    under it). ``input_shape`` is a tuple of ints that also answers TF
    1.x's ``input_shape[-1].value`` and ``as_list()``.

    Also as in TF: ``_scope=`` is a scope entered when the object is made (inside the scope open
    then), where its calls run; a ``call(self, x, scope=None)`` is given the layer's scope;
    ``self.built = True`` in ``__init__`` means ``build`` never runs; without ``dtype=`` the weights
    take the first input's dtype; ``name`` is the one given or the class's numbered one
    (``my_dense_1``), ``scope_name`` the captured scope's path; ``weights`` lists the trainable ones
    first.

    In a pure function there are no variables to keep between calls: each ``init`` and ``apply``
    runs ``build`` at the object's first call in it, and what ``build`` stores on ``self`` holding
    arrays (``self.kernel = self.add_weight(...)``, a list of weights) is that call's, kept with the
    call rather than on the object: ``call`` and the model function read this call's values (calls
    in several threads each their own), nothing of a jitted trace stays on the object, and a read
    outside ``init``/``apply`` is an error that says so. (A name the class itself defines, such as a
    default ``kernel = None``, is set on the object as usual.)

    >>> class Scale(sp.layers.Layer):
    ...     def build(self, input_shape):
    ...         self.gain = self.add_weight("gain", [input_shape[-1].value],
    ...                                     initializer=sp.initializers.ones)
    ...     def call(self, x):
    ...         return x * self.gain
    >>> params = sp.transform(lambda x: Scale()(x)).init(jax.random.key(0), jnp.ones((2, 3)))
    >>> sp.flatten(params)["scale/gain"].shape
    (3,)
    """

    def __init__(self, trainable: bool = True, name: Optional[str] = None, dtype: Any = None,
                 activity_regularizer: Optional[Callable] = None, _reuse: Any = None,
                 **kwargs: Any):
        if activity_regularizer is not None and not callable(activity_regularizer):
            raise TypeError(f"{type(self).__name__}: activity_regularizer must be a function of the "
                            f"layer's output, got {activity_regularizer!r}.\n  fix: pass a function, "
                            "e.g. sp.l2_regularizer(1e-4).")
        unknown = set(kwargs) - {"_scope", "input_shape", "batch_input_shape", "batch_size"}
        if unknown:
            raise TypeError(f"Keyword argument not understood: {sorted(unknown)[0]!r} "
                            f"({type(self).__name__}).")
        kind = (f"sp.layers.{type(self).__name__}" if type(self).__module__ == __name__
                else type(self).__name__)  # a user's subclass is not in sp.layers
        self._dtype = _check_name_and_dtype(kind, name, dtype, takes_dtype=True)
        self._input_dtypes: dict = {}  # this call's first input's dtype (_layer_dtype)
        self._given_name = name  # what names the scope (_object_scope)
        # TF's name: the one given, else (also for '') the class's numbered per graph (my_layer_1)
        self.name = name if isinstance(name, str) and name else _unique_object_name(self._base_name)
        self.trainable = trainable
        self._reuse = _reuse
        # TF's: regularizer(output) / batch size joins sp.regularization_loss() at every call
        self.activity_regularizer = activity_regularizer
        self.built = False
        self._prebuilt: Optional[bool] = None  # built before the first call: build never runs
        self._scopes: dict = {}  # this call's captured Scope (_object_scope)
        self._weights: dict = {}  # token: this call's [(full name, trainable)], as add_weight made them
        self._building: dict = {}  # whether this call's build is running (add_weight's reuse)
        if kwargs.get("_scope"):
            self._made_in = _construction_scope(kwargs["_scope"], kind)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._call_has_scope = "scope" in _parameter_names(cls.call)  # read once per class

    _call_has_scope = False  # TF's: call takes `scope`, and is given the layer's variable scope

    @property
    def dtype(self) -> Optional[np.dtype]:
        """The weights' default dtype: ``dtype=``, else the first input's at the first call in this
        ``init``/``apply``, as in TF (int32 inputs make int32 weights, zeros by default); None
        outside a call, without ``dtype=``."""
        frame = _frame._FRAME.get()
        return self._dtype if self._dtype is not None or frame is None else _layer_dtype(self, frame)

    def build(self, input_shape: Any) -> None:
        """Create the weights (``self.add_weight``); runs at the object's first call in each
        ``init``/``apply``, inside its scope."""
        del input_shape
        self.built = True

    def call(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """The layer's computation (the identity here); subclasses define it."""
        del args, kwargs
        return inputs

    def add_weight(self, name: str, shape: Optional[Sequence[int]], dtype: Any = None,
                   initializer: Any = None, regularizer: Optional[Callable] = None,
                   trainable: Optional[bool] = None, constraint: Optional[Callable] = None,
                   partitioner: Any = None, **tf_options: Any) -> jax.Array:
        """``sp.get_param`` in the layer's scope, with TF's ``add_weight`` arguments: the layer's
        ``dtype`` by default, non-trainable if the layer or ``trainable=False`` says so. Call it in
        ``build``.

        As TF's, it re-enters the scope the layer's first call captured, with reuse on once
        ``build`` is done (else the layer's ``_reuse``): a scope ``build`` opens around it, and that
        scope's reuse, initializer and custom getter, do not reach the weight (``build`` opening
        ``sp.scope("atomic")`` still makes ``my_layer/kernel``), while the captured scope's do.
        ``shape`` is required, and ``None`` is a scalar's, as in TF."""
        if shape is None:  # TF's add_weight: shape or ()
            shape = ()
        _check_add_weight_options(type(self).__name__, name, tf_options)
        if isinstance(regularizer, str):  # TF: "'str' object is not callable" when it is applied
            raise TypeError(
                f"{type(self).__name__}.add_weight({name!r}): regularizer={regularizer!r} is a name, "
                "which TF's tf.layers.Layer.add_weight does not resolve either (unlike its "
                "initializer= and constraint=).\n  fix: pass a function of the weight, e.g. "
                "regularizer=sp.l2_regularizer(1e-4).")
        initializer = _from_keras(type(self).__name__, None, "initializer", initializer)
        frame = _frame.current(f"{type(self).__name__}.add_weight")
        made = _this_call(self._weights, frame)
        if made is None:
            raise RuntimeError(
                f"{type(self).__name__}.add_weight({name!r}) was called outside the layer's call in "
                "this init/apply: the weight would land in whatever scope is open.\n"
                "  fix: create weights in build(input_shape), which the layer's first call in each "
                "init/apply runs inside its scope.")
        trainable = self.trainable and (True if trainable is None else trainable)
        options = dict(tf_options)
        if partitioner is not None:
            options["partitioner"] = partitioner
        # TF's variable_scope(self._scope, reuse=self.built or self._reuse,
        # auxiliary_name_scope=False) in name_scope(original_name_scope); `built` is per call here.
        building = _this_call(self._building, frame)
        reuse = self._reuse if building else True
        captured = _this_call(self._scopes, frame)
        _, ns = _enter_object_name_scope(captured)
        try:
            with _layer_scope(captured, self._base_name, reuse) as scope:
                if regularizer is not None:  # TF's: and the scope's
                    regularizer = _with_scope_terms(regularizer)[0]
                value = get_param(name, shape, initializer,
                                  _layer_dtype(self, frame) if dtype is None else dtype,
                                  trainable=trainable, regularizer=regularizer,
                                  constraint=_constraint(constraint), **options)
        except ParamNotFoundError:
            if building:
                raise
            # TF 1.x fails here too (reuse is on once built), naming a reuse the user never set.
            kind = type(self).__name__
            attribute = name if str(name).isidentifier() else "w"
            raise ParamNotFoundError(
                f"Variable {captured.prefix}{name} does not exist: {kind}.add_weight({name!r}) was "
                f"called after layer {captured.name!r} was built (in call(), or later), when "
                "add_weight only fetches the weights build made (TF 1.x refuses it too).\n"
                f"  asked: a new '{captured.prefix}{name}' outside {kind}.build in this "
                "init/apply\n"
                f"  fix: create the weight in build(input_shape): self.{attribute} = "
                f"self.add_weight({name!r}, ...) there, and use self.{attribute} in call().") from None
        finally:
            _exit_name_scope(frame, ns)
        # The name, not the value: `weights` reads the value when asked for (_stored), so that
        # inside an sp.layer_stack block it is this layer's slice and after it the stacked value.
        made.append((scope.prefix + name, trainable))
        return value

    add_variable = add_weight

    def add_loss(self, losses: Any, inputs: Any = None) -> None:
        """Not provided: a pure function returns its losses instead of collecting them."""
        raise NotImplementedError(
            f"{type(self).__name__}.add_loss: there is no losses collection here; a pure function "
            "returns what it computes.\n  fix: return the loss term from call (or the model) and add "
            "it to the loss yourself; weight penalties go in add_weight(regularizer=...), which "
            "sp.regularization_loss() sums.")

    def add_update(self, updates: Any, inputs: Any = None) -> None:
        """Not provided: state updates are ``sp.set_state`` under ``sp.transform_with_state``."""
        raise NotImplementedError(
            f"{type(self).__name__}.add_update: there are no update ops here.\n  fix: keep the value "
            "as state, sp.get_state(name, shape, init) and sp.set_state(name, new_value), under "
            "sp.transform_with_state; apply returns the new state.")

    def _made(self) -> list:
        """[(value, trainable)] of the weights ``build`` made in this call, read now (_stored)."""
        frame = _frame.current(f"{type(self).__name__}(...).weights")
        return [(_stored(frame, full), trainable) for full, trainable in
                _this_call(self._weights, frame) or ()]

    @property
    def weights(self) -> list:
        """This ``init``/``apply`` call's values of the weights ``build`` made, the trainable ones
        first, each kind in the order made (TF's ``trainable_weights + non_trainable_weights``).
        Inside an ``sp.layer_stack`` block they are this layer's slice, after it the stacked
        values (what ``build`` stored on ``self`` is the value it got: a slice, in a block)."""
        made = self._made()
        return ([value for value, trainable in made if trainable]
                + [value for value, trainable in made if not trainable])

    variables = weights

    @property
    def trainable_weights(self) -> list:
        """The trainable ones among ``weights``."""
        return [value for value, trainable in self._made() if trainable]

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self) -> list:
        """The others."""
        return [value for value, trainable in self._made() if not trainable]

    non_trainable_variables = non_trainable_weights

    @property
    def scope_name(self) -> str:
        """TF's ``scope_name``: the path of the scope the layer's first call captured
        (``my_layer``, ``outer/my_layer_1``, ...), in this ``init``/``apply`` call (outside one,
        the latest call's)."""
        _require_base_init(self, "_scopes")
        return _captured_scope_name(self)

    @property
    def losses(self) -> list:
        """Not provided: ``sp.regularization_loss()`` sums the regularizers' terms."""
        raise _losses_error(type(self).__name__)

    __setattr__ = _set_layer_attribute  # what build stores holding arrays is per call

    def __getattr__(self, attribute: str) -> Any:
        # Reached only for what the object does not have: a value build stored in this call, or a
        # property whose getter raised AttributeError (shown as such, not as a missing attribute).
        if attribute in self.__dict__.get("_built_value_names", ()):
            return _built_value(self, attribute)
        _reraise_property_error(self, attribute)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attribute!r}",
                             name=attribute, obj=self)

    def __copy__(self) -> "Layer":
        """``copy.copy``: the same arguments and name, and the state of a fresh construction: the
        copy's first call opens its own scope (``my_layer_1``) and runs its own ``build``."""
        return _fresh_copy(self, ())

    def __deepcopy__(self, memo: dict) -> "Layer":
        """``copy.deepcopy``: as ``copy.copy``, with deep copies of the attributes (arguments,
        sub-layers: a sub-layer's copy makes its own weights too)."""
        return _deep_copy(self, self.__copy__(), memo)

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        _require_base_init(self, "_weights")
        api = (f"sp.layers.{type(self).__name__}" if type(self).__module__ == __name__
               else type(self).__name__)  # a user's subclass is not in sp.layers
        return _call_layer(self, api, inputs, args, kwargs, self.activity_regularizer)


# --- templates: tf.make_template -------------------------------------------------------------------

# Templates made with create_scope_now_ outside any init/apply, while they live. TF's default graph
# counts their scopes from construction, so a later one of the same name takes name_1, and so does
# a template or default_name scope of that name in a model (an init/apply counts these names there:
# _count_root_templates). Weak: a template no longer referenced frees its name.
# Kept as each is made and freed (a weakref finalizer), so that neither making one nor counting them
# into a call walks all of them: their root scope names, each with how many live ones hold it.
_ROOT_NAMES: Dict[str, int] = {}
# name -> an index below which every name_N is taken: the next name_N is searched from there. Names
# are only added until one is freed, which clears the hints.
_ROOT_HINTS: Dict[str, int] = {}
# Moves as each is made: a call counts them again once one was made since it last did (_COUNTED).
_ROOT_VERSION = 0
# The token (frame.kept) under which a call keeps when it last counted them (_count_root_templates).
_COUNTED: dict = {}
# Held while a root template picks its name and registers it (threads making templates at once
# would pick the same name_N) and while a freed one unregisters. Reentrant: a finalizer may run in
# the holding thread, during a collection inside the locked code.
_ROOT_LOCK = threading.RLock()

# TF's collection names (tf.GraphKeys) a template's variable lists read.
_GLOBAL_VARIABLES, _LOCAL_VARIABLES = "variables", "local_variables"
_TRAINABLE_VARIABLES = "trainable_variables"


def _add_root_template(template: "Template", name: str) -> None:
    global _ROOT_VERSION
    _ROOT_NAMES[name] = _ROOT_NAMES.get(name, 0) + 1
    _ROOT_VERSION += 1
    weakref.finalize(template, _free_root_name, name).atexit = False


def _free_root_name(name: str) -> None:
    with _ROOT_LOCK:
        left = _ROOT_NAMES.get(name, 0) - 1
        if left > 0:
            _ROOT_NAMES[name] = left
        else:
            _ROOT_NAMES.pop(name, None)
        _ROOT_HINTS.clear()  # name_N may be free below a hint now


def _count_root_templates(frame: Any) -> None:
    """Count the live root templates' scopes in this init/apply call's default-name table, as TF's
    graph has counted them since their construction. Not in an open jump's undo log: the counts
    predate the call.

    Once per call, and again only if what it wrote may be gone: a template was made since (in
    another thread), or a jump open then has been left (its rollback may restore a count it logged
    before), or a retraced block rolled the call back to before it (``frame.kept`` with it)."""
    if not _ROOT_NAMES:  # none lives: nothing to count
        return
    done = _this_call(_COUNTED, frame)
    undo = frame.undo
    if done is not None and done[0] == _ROOT_VERSION:
        logs = done[1]
        if not logs or (undo is not None and len(undo) >= len(logs)
                        and all(now is then for now, then in zip(undo, logs))):
            return
    version = _ROOT_VERSION
    root = frame.root_node
    for name in list(_ROOT_NAMES):
        node = _child(root, name)
        if node[_COUNT] == 0:
            node[_COUNT] = 1
    _keep_for_call(_COUNTED, frame, (version, tuple(undo) if undo else ()))


def _unique_root_name(name: str) -> str:
    """TF's ``_get_unique_variable_scope(name)`` at the root, among the live root templates."""
    taken = _ROOT_NAMES
    if name not in taken:
        return name
    if not name:
        raise _second_empty_name_error()
    index = _ROOT_HINTS.get(name, 1)
    while f"{name}_{index}" in taken:
        index += 1
    _ROOT_HINTS[name] = index
    return f"{name}_{index}"


def _second_empty_name_error() -> InvalidNameError:
    return InvalidNameError(
        "sp.make_template('', ...): a second template named '' at the root (in this init/apply, or "
        "made with create_scope_now_ outside the model): TF numbers its scope '_1', which is not a "
        "valid root scope name (TF's error).\n"
        "  fix: give the templates names, sp.make_template('net', fn).")


def _check_template_names(name: Any, unique_name: Any) -> None:
    """make_template's name checks, where the template is made (in or outside a model): what TF's
    scopes would refuse or turn into a parameter name with an empty component (``x//w``)."""
    if name is None:
        raise ValueError("name cannot be None.\n  fix: give the template a name, "
                         "sp.make_template('net', fn): its parameters go under net/ "
                         "(net_1/ for the second template of that name).")
    call = (f"sp.make_template({name!r}, ...)" if unique_name is None
            else f"sp.make_template({name!r}, ..., unique_name_={unique_name!r})")
    for argument, value in (("name_", name), ("unique_name_", unique_name)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{call}: {argument} must be a str, got {type(value).__name__}.\n"
                            f"  fix: {argument}='net' (the scope's name).")
    if unique_name == "":
        raise InvalidNameError(
            f"{call}: unique_name_ must not be empty: TF names the root with it where the template "
            "is first called, and ignores it with create_scope_now_.\n"
            "  fix: unique_name_=None to number name_ (net, net_1, ...), or the scope's name.")
    for value in (name, unique_name):
        if value:  # '' is the root: _root_scope
            _check_components(value, call)
            _check_name(value, True, call)


class Template:
    """What ``sp.make_template`` returns: TF 1.x's ``Template``, a function whose parameters are
    made at its first call, in a uniquely named scope, and reused by every later call.

    As a layer object's scope, the template's is captured per ``init``/``apply`` call (at its
    first call in it, or when made with ``create_scope_now_``), so a template made outside the
    model works in every trace. ``variable_scope`` (TF's deprecated ``var_scope`` too) and
    ``variable_scope_name`` are this call's (outside a call, the latest call's; ``None`` before the
    first call, as in TF).

    TF's variable lists read this ``init``/``apply`` call's values of the parameters (and state)
    under ``variable_scope_name``, in creation order, as TF's collections hold them: ``[]`` before
    the template's first call in it. ``variables`` (``weights``) works in ``init`` and ``apply``;
    ``trainable_variables`` (``trainable_weights``), ``non_trainable_variables``
    (``non_trainable_weights``), ``global_variables`` and ``local_variables`` need each parameter's
    ``trainable`` flag and ``collections=``, which ``init`` records in the specs and ``apply`` is not
    given: they work in ``init`` and raise in ``apply``, where
    ``sp.partition_trainable(sp.partition_by_scope(params, t.variable_scope_name)[0], specs)``
    outside the model gives them. Outside a call they raise with that fix too: a pure function's
    template keeps no variables.

    >>> gen = sp.make_template("gen", lambda x: sp.layers.batch_normalization(
    ...     sp.layers.dense(x, 2)))
    >>> def model(x):
    ...     y = gen(x)
    ...     print(len(gen.trainable_variables), len(gen.non_trainable_variables))
    ...     return y
    >>> params = sp.transform(model).init(jax.random.key(0), jnp.ones((1, 3)))
    4 2
    """

    def __init__(self, name: str, func: Callable[..., Any], create_scope_now: bool = False,
                 unique_name: Optional[str] = None, custom_getter: Optional[Callable] = None):
        _check_template_names(name, unique_name)
        self._name = name
        self._func = func
        self._unique_name = unique_name
        self._custom_getter = custom_getter
        self._scopes: dict = {}  # this call's captured Scope (per frame, as a layer object's)
        # True in a call whose first call of the template raised: as TF's `_variables_created`,
        # its next call is a first call again, creating in the scope the failed one captured
        self._unfinished: dict = {}
        self._latest: Optional[Scope] = None  # the latest call's, for variable_scope outside one
        self._made_in: Optional[Scope] = None
        if create_scope_now:  # TF's _pure_variable_scope: a unique variable scope, no name scope
            frame = _frame._FRAME.get()
            if frame is None:  # outside a model: at the root, numbered among the root templates
                with _ROOT_LOCK:  # the name picked is registered before another thread picks
                    root = unique_name or _unique_root_name(name)
                    if root:
                        _check_name(root, False, f"sp.make_template({name!r}, ...)")
                    # TF's _pure_variable_scope: the name scope is the unique name itself,
                    # relative (no '/'), so each call opens it where the template is called,
                    # uniquified.
                    self._made_in = Scope(root, custom_getter=custom_getter,
                                          original_name_scope=root)
                    _add_root_template(self, root)
                _scope.count_root_templates = _count_root_templates
            elif not name and unique_name is None:
                self._made_in = self._root_scope(frame)
            else:
                outer = frame.scope.name
                with scope(unique_name, default_name=None if unique_name else name,
                           custom_getter=custom_getter, auxiliary_name_scope=False) as made_in:
                    self._made_in = made_in
                made_in.original_name_scope = made_in.name[len(outer) + 1:] if outer else made_in.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        frame = _frame.current(f"Template({self._name!r})(...)")
        captured = _this_call(self._scopes, frame)
        if captured is None:  # the first call in this init/apply: it makes the parameters
            if _ROOT_NAMES:
                _count_root_templates(frame)
            if self._made_in is not None:
                first = scope(self._made_in)
            elif not self._name and self._unique_name is None:
                first = scope(self._root_scope(frame))
            else:
                if not frame.scope.prefix:  # the name checks sp.scope makes, naming the template
                    _check_name(self._unique_name or self._name, False,
                                lambda: f"sp.make_template({self._name!r}, ...)")
                first = scope(self._unique_name, default_name=self._name,
                              custom_getter=self._custom_getter)
            with first as captured:
                _keep_for_call(self._scopes, frame, captured)
                return self._first_call(frame, captured, args, kwargs)
        unfinished = _this_call(self._unfinished, frame)
        if unfinished is _RUNNING:  # called inside its own first call: TF's "in parallel" call,
            with scope(captured, reuse=True):  # reusing, with no check of what it makes
                return self._func(*args, **kwargs)
        if unfinished:  # its first call raised: this one is a first call
            with scope(captured):
                return self._first_call(frame, captured, args, kwargs)
        with scope(captured, reuse=True):  # later calls: TF's reuse=True, wherever they are
            # init's specs (apply's params are all made); in an sp.layer_stack block, the call's
            specs = getattr(_root_store(frame.store), "specs", None)
            if specs is None:
                return self._func(*args, **kwargs)
            before = len(specs)
            result = self._func(*args, **kwargs)
            if len(specs) != before:  # made under an sp.AUTO_REUSE scope inside the function
                self._check_no_trainable_made(list(specs.values())[before:], captured)
            return result

    def _first_call(self, frame: Any, captured: Scope, args: tuple, kwargs: dict) -> Any:
        """The call that makes the template's parameters, in ``captured``; if it raises, the
        template's next call in this init/apply is a first call again (TF sets
        ``_variables_created`` only once its function has returned)."""
        _keep_for_call(self._unfinished, frame, _RUNNING)
        try:
            result = self._func(*args, **kwargs)
        except BaseException:
            _keep_for_call(self._unfinished, frame, True)
            raise
        finally:
            self._latest = _detached(captured)
        _keep_for_call(self._unfinished, frame, False)
        return result

    def _root_scope(self, frame: Any) -> Scope:
        """TF's scope for a template named ``''``: the root, where TF opens it at the root (its
        first call there, or ``create_scope_now_`` there). Anywhere else TF's parameter names have
        an empty component (``outer//w``), which no name here has."""
        if frame.scope.prefix:
            inside = frame.scope.name
            raise InvalidNameError(
                f"sp.make_template('', ...) in scope '{inside}': TF opens a scope with an empty "
                f"name there, and its parameters are named '{inside}//w': an empty '/'-separated "
                "component, which no parameter name has here.\n"
                "  fix: give the template a name, sp.make_template('net', fn), or call it at the "
                "model's root (TF puts the parameters of a template named '' at the root).")
        node = _child(frame.root_node, "")
        if node[_COUNT]:
            raise _second_empty_name_error()
        if frame.undo:  # an enclosing jump rolls this count back, as TF's restores its counts
            frame.undo[-1].append((node, node[_COUNT], _COUNT_ONLY, None))
        node[_COUNT] += 1
        return Scope("", custom_getter=self._custom_getter)

    def _check_no_trainable_made(self, made: list, captured: Scope) -> None:
        """TF's check of a later call: a new trainable parameter is an error, others are kept."""
        trainable = [spec.name for spec in made if spec.trainable]
        if trainable:
            raise ValueError(
                "Trainable variable created when calling a template after the first time: "
                f"{trainable} (TF's words).\n"
                f"  asked: template {self._name!r} (scope '{captured.name}') made "
                f"'{trainable[0]}' in a later call of this init, under an sp.AUTO_REUSE scope; "
                "a template makes its trainable parameters in its first call only\n"
                f"  fix: make '{trainable[0]}' in the first call too (every call takes the same "
                "path through the function), or pass trainable=False if it is a statistic.")

    @property
    def name(self) -> str:
        """The name given to the template."""
        return self._name

    @property
    def func(self) -> Callable[..., Any]:
        """The function the template calls (its keyword arguments bound)."""
        return self._func

    @property
    def variable_scope(self) -> Optional[Scope]:
        """The scope the template's parameters are in: the one its first call in this
        ``init``/``apply`` captured (outside one, the latest call's), or ``None`` before it."""
        frame = _frame._FRAME.get()
        captured = _this_call(self._scopes, frame) if frame is not None else self._latest
        return captured if captured is not None else self._made_in

    var_scope = variable_scope  # TF's deprecated name

    @property
    def variable_scope_name(self) -> Optional[str]:
        """``variable_scope``'s path with a trailing ``/`` (``"net/"``), as TF gives it to match
        parameter names by prefix (``sp.partition_by_scope``); ``None`` before the first call."""
        captured = self.variable_scope
        if captured is None:
            return None
        return captured.prefix

    @property
    def variables(self) -> list:
        """TF's ``global_variables + local_variables``: this call's values of the parameters and
        state under ``variable_scope_name``, in creation order (in ``apply``, every one there)."""
        return self._in_scope("variables", None)

    weights = variables

    @property
    def global_variables(self) -> list:
        """Those made without ``collections=`` or with ``"variables"`` in it (TF's
        ``GLOBAL_VARIABLES``; state entries too); in ``init`` only."""
        return self._in_scope("global_variables", _GLOBAL_VARIABLES)

    @property
    def local_variables(self) -> list:
        """Those made with ``"local_variables"`` in ``collections=``; in ``init`` only."""
        return self._in_scope("local_variables", _LOCAL_VARIABLES)

    @property
    def trainable_variables(self) -> list:
        """The trainable ones (TF's ``TRAINABLE_VARIABLES``); in ``init`` only."""
        return self._in_scope("trainable_variables", _TRAINABLE_VARIABLES)

    trainable_weights = trainable_variables

    @property
    def non_trainable_variables(self) -> list:
        """``global_variables`` that are not trainable (TF's definition); in ``init`` only."""
        return self._in_scope("non_trainable_variables", "non_trainable")

    non_trainable_weights = non_trainable_variables

    def _in_scope(self, attribute: str, collection: Optional[str]) -> list:
        """This call's values under the template's scope, in creation order: all of them, or
        those TF's ``get_collection(collection, variable_scope_name)`` gives."""
        frame = _frame._FRAME.get()
        if frame is None:
            raise self._variables_error(attribute, None)
        captured = _this_call(self._scopes, frame)
        if captured is None:
            return []  # TF's: no variables before the first call
        prefix = captured.prefix
        store = _root_store(frame.store)  # the call's, in an sp.layer_stack block too
        specs = getattr(store, "specs", None)
        if specs is None:  # apply: the names made so far in this call, and their values
            if collection is not None:
                raise self._variables_error(attribute, captured)
            return [_stored(frame, name) for name in getattr(store, "created", ())
                    if name.startswith(prefix)]
        made = [spec for name, spec in specs.items() if name.startswith(prefix)]

        def member(spec: Any, key: str) -> bool:
            if key in spec.collections:
                return True
            if key == _GLOBAL_VARIABLES:
                return not spec.collections
            return key == _TRAINABLE_VARIABLES and spec.trainable

        if collection is None:
            chosen = ([s for s in made if member(s, _GLOBAL_VARIABLES)]
                      + [s for s in made if member(s, _LOCAL_VARIABLES)])
        elif collection == "non_trainable":
            chosen = [s for s in made if member(s, _GLOBAL_VARIABLES)
                      and not member(s, _TRAINABLE_VARIABLES)]
        else:
            chosen = [s for s in made if member(s, collection)]
        return [_stored(frame, spec.name) for spec in chosen]  # in a block: this layer's slice

    def _variables_error(self, attribute: str, captured: Optional[Scope]) -> Exception:
        known = captured or self.variable_scope
        scope_name = repr(known.prefix) if known is not None else "template.variable_scope_name"
        split = (f"sp.partition_by_scope(params, {scope_name})[0] holds the template's "
                 "parameters; sp.partition_trainable(them, model.specs(*args)) splits them by "
                 "trainable (sp.partition_by_collection by collections=)")
        if captured is None:
            return NotInTransformError(
                f"Template {self._name!r}.{attribute} was read outside init/apply: a template in a "
                "pure function keeps no variables between calls.\n"
                f"  fix: outside the model, {split}; inside it, template.{attribute} after the "
                "template's first call.")
        return RuntimeError(
            f"Template {self._name!r}.{attribute} in apply: which parameters are trainable (or in "
            "which collections) is recorded in init's specs, and apply is given only their "
            f"values.\n  fix: read template.{attribute} in init (the same model function), or "
            f"outside the model, {split}; template.variables (every parameter under "
            f"{scope_name}) works in apply too.")


def _detached(captured: Scope) -> Scope:
    """A copy of a scope a call captured, to keep after the call: without the call's params (what
    get_param's direct lookup reads in apply), which it would keep alive (tracers under jit)."""
    kept = copy.copy(captured)
    kept._values = None
    return kept


# A template's first call in this init/apply is running (``Template._unfinished``): a call of the
# template inside it (its function calls it again) is TF's call "in parallel".
_RUNNING = "running"


def make_template(name_: str, func_: Callable[..., Any], create_scope_now_: bool = False,
                  unique_name_: Optional[str] = None, custom_getter_: Optional[Callable] = None,
                  **kwargs: Any) -> Template:
    """``tf.compat.v1.make_template``: ``func_`` made into a template that creates its parameters
    at its first call and reuses them at every later call.

    The first call opens ``sp.scope(unique_name_, default_name=name_,
    custom_getter=custom_getter_)`` where it is called (two templates named ``net`` get ``net/``
    and ``net_1/``), runs ``func_`` there and captures the scope; later calls re-enter that scope
    with ``reuse=True`` wherever they are. With ``create_scope_now_`` the scope is made here; made
    so outside a model, it is at the root and numbered as TF's graph numbers it (``net``, then
    ``net_1`` for the next such template, while the first lives), and a template or
    ``default_name`` scope of that name in any model is numbered past it while it lives, whether
    or not that model calls it (TF's default graph holds the name). A template no longer
    referenced frees its name; one in a reference cycle (a template of a bound method stored on
    the object it belongs to, ``self.enc = make_template("enc", self._enc, True)``) is freed only
    when Python's cyclic garbage collector runs, so the next object's template is ``enc`` or
    ``enc_1`` by that timing: give such templates ``unique_name_`` (or make them inside the
    model, or once) for names that do not depend on it. A template named ``''`` puts its
    parameters at the root, as TF's does where its scope is opened at the root (elsewhere TF names
    them ``outer//w``: refused).
    ``kwargs`` are bound to ``func_``. As in TF, a later call that asks for a parameter the first
    did not make fails ("does not exist"), and one that makes a new trainable parameter (under an
    ``sp.AUTO_REUSE`` scope) is an error.

    The whole model is ``sp.transform(fn)`` (``init`` is the first call, ``apply`` the later
    ones); a template is for sharing weights inside it, e.g. a tower applied to two inputs:

    >>> tower = sp.make_template("tower", lambda x: sp.layers.dense(x, 4))
    >>> model = sp.transform(lambda a, b: tower(a) - tower(b))
    >>> sorted(sp.flatten(model.init(jax.random.key(0), jnp.ones((1, 3)), jnp.ones((1, 3)))))
    ['tower/dense/bias', 'tower/dense/kernel']
    """
    if kwargs:
        func_ = functools.partial(func_, **kwargs)
    return Template(name_, func_, create_scope_now=create_scope_now_, unique_name=unique_name_,
                    custom_getter=custom_getter_)
