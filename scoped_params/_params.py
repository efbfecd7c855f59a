"""``get_param``, ``get_state`` and ``set_state``: create-or-fetch with TF 1.x ``get_variable`` rules.

A request resolves its defaults from the current scope, runs the scope's custom getters, and ends in
the frame's store: ``InitStore`` (during ``init``/``specs``) records a ``ParamSpec`` and returns an
abstract placeholder; ``ApplyStore`` (during ``apply``) returns the array from ``params``. Both apply
the same reuse rules (TF's ``_VariableStore._get_single_variable``), so a program that fails in one
fails in the other with the same words.
"""

from __future__ import annotations

import bisect
import cmath
import inspect
import itertools
import logging
import operator
import re
import sys
import types
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _frame, _scope
from ._errors import (DtypeMismatchError, InitializerError, InvalidNameError, NameCollisionError,
                      ParamExistsError, ParamNotFoundError, ParamsTypeError, ReuseArgumentError,
                      ShapeMismatchError, StateError,
                      _IS_USER_FILE, check_partitioner, format_site, name_scope_hint, nearest,
                      open_tf_variable_scope, tf_variable_scope_error, tf_variable_scope_hint,
                      user_code_site, user_site)
from . import initializers as _initializers
from ._regularizers import _is_floating, non_floating_error as _non_floating_error
from ._scope import (_TF_RUNTIME_SCOPE_ARGUMENTS, _TRACE, AUTO_REUSE, _describe_reuse, as_np_dtype,
                     call_getter, default_name_hint)
from ._spec import ParamSpec, new_spec
from ._tree import flatten, given_twice_error
from .initializers import _instantiate, default_initializer

PARAM = "param"
STATE = "state"

_getframe = sys._getframe
_current_frame = _frame._FRAME.get  # the trace frame, or None outside a transform
# jnp.float32 and its kind: comparing one to a NumPy dtype costs ~0.5 us, reading its .dtype ~25 ns.
# logging.getLogger("scoped_params").setLevel(logging.DEBUG) shows each parameter sp.AUTO_REUSE
# shares between two different lines of code during init: sharing that AUTO_REUSE everywhere makes
# silent (two layers both named "dense" become one).
_LOG = logging.getLogger("scoped_params")

_SCALAR_TYPE = type(jnp.float32)
# What comparing a shape holding a JAX integer with a stored shape raises inside a jit trace (JAX
# stages the ==): get_param then reads the integer with operator.index, as init does.
_ConcretizationError = jax.errors.ConcretizationTypeError
_FLOAT32 = np.dtype(np.float32)  # TF's default dtype of a variable (its true getter's)
_VALID_FULL_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_TF_ONLY_KWARGS = frozenset({"partition_info", "kind"})  # taken by the next getter, and dropped


# --- public entry points ------------------------------------------------------------------------


def get_param(name: str, shape: Optional[Sequence[int]] = None, init: Any = None, dtype: Any = None, *,
              trainable: bool = True, regularizer: Optional[Callable] = None,
              collections: Optional[Sequence[str]] = None, sharding: Any = None,
              constraint: Optional[Callable] = None, **tf_options: Any) -> jax.Array:
    """Create or fetch the parameter ``<current scope>/<name>`` (TF's ``tf.get_variable``).

    With the scope's ``reuse=False`` (the default) the name must be new in this call, with
    ``reuse=True`` it must exist, with ``sp.AUTO_REUSE`` either. ``init`` is called as
    ``init(key, shape, dtype)`` (any ``jax.nn.initializers`` object), or is a constant (array or
    number; it fixes the shape, so ``shape`` must then be omitted), or a no-argument callable
    returning the value. With no initializer here or on any enclosing scope, floats get TF's
    Glorot-uniform and integers/bools zeros. ``dtype=None`` means the scope's dtype (float32).
    ``constraint`` (else the scope's own, see ``sp.scope``) is a projection ``value -> value`` kept in
    the parameter's spec; ``sp.apply_constraints`` runs it after each optimizer step, where TF's
    optimizers did. Like the initializer, it counts only when the parameter is created.

    Of ``tf.get_variable``'s other arguments, ``partitioner=`` (this parameter's, instead of the
    scope's) and ``custom_getter=`` (replacing the scope's getters for this request, as in TF) are
    taken too; its runtime settings (``use_resource=``, ``validate_shape=``, ...) are errors that
    say to drop them.

    >>> def fn(x):
    ...     with sp.scope("dense"):
    ...         w = sp.get_param("w", (x.shape[-1], 3))
    ...         b = sp.get_param("b", (3,), init=jax.nn.initializers.zeros)
    ...     return x @ w + b
    >>> params = sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 5)))
    >>> params["dense"]["w"].shape
    (5, 3)
    """
    frame = _current_frame()
    if frame is None:
        raise _frame.not_in_transform("get_param")
    if tf_options:
        return _tf_request(frame, name, shape, init, dtype, trainable, regularizer, collections,
                           sharding, constraint, tf_options)
    if _TRACE.value is not frame.trace:  # inside a jax.lax.scan body, a vmap, a custom_vjp, ...
        what = f"sp.get_param({name!r}), parameter '{frame.scope.prefix}{name}',"
        if _frame.check_trace(frame, what):
            return _frame.usable_outside(_request(frame, name, shape, init, dtype, trainable, regularizer,
                                                  collections, sharding, PARAM, constraint), what)
    scope = frame.scope
    values = scope._values  # the params sub-dict at the scope's path, when the lookup below applies
    if values is not None:
        # apply's common requests, inline (they run once per parameter per trace): an ApplyStore, no
        # custom getter (Scope._values is None otherwise), an array in params, an initializer that
        # is not a constant, and either a new name where reuse is not True (ApplyStore.get's creating
        # path) or a name created earlier in this call where reuse is on (its reusing path). Any
        # other request goes through _request to ApplyStore.get, which raises what TF raises.
        if type(name) is str and shape is not None:
            value = values.get(name)
            full = scope.prefix + name
            created = frame.store.created
            resolved = scope.initializer if init is None else init
            aval = None
            if value is not None and (resolved is None or callable(resolved)):
                if full not in created:
                    if scope._reuse is not True:
                        passed = "params"  # the found value is the params' own (for errors below)
                        try:
                            aval = value.aval
                        except AttributeError:  # NumPy arrays; a sub-dict (not a parameter) goes on
                            if hasattr(value, "dtype"):
                                aval, value = value, _as_jax_leaf(value, full)
                        if aval is not None:
                            # The creation site, for "already exists" errors (see ApplyStore.get),
                            # recorded in `created` below once the request has passed its checks.
                            f = _getframe(1)
                            code = f.f_code
                            site = ((code, f.f_lasti) if _IS_USER_FILE.get(code.co_filename)
                                    else user_code_site(2))
                            if regularizer is None:
                                regularizer = scope.regularizer
                            if regularizer is not None and not callable(regularizer):
                                raise _regularizer_error(full, regularizer)  # init's error too
                elif scope._reuse is not False:  # reusing what this call created
                    passed = None
                    try:
                        aval = value.aval
                    except AttributeError:
                        if hasattr(value, "dtype"):
                            aval, value = value, _as_jax_leaf(value, full)
            if aval is not None:
                # A list equal to the shape matches as a tuple does: TF code writes [784, 10]. Any
                # other spelling (an int, a NumPy array, a partly known shape) or a mismatch is
                # converted as init converts it (a NumPy array would compare elementwise).
                try:
                    if type(shape) is not tuple or shape != aval.shape:
                        if type(shape) is not list or shape != [*aval.shape]:
                            # a partly known shape, or a mismatch (None: an unknown rank, reused)
                            shape = _as_shape(shape, full, passed is None)
                            if shape is not None and shape != aval.shape and not _compatible(
                                    shape, aval.shape):
                                raise _shape_error(full, shape, aval.shape,
                                                   site if passed else created[full], passed)
                except _ConcretizationError:  # a JAX integer in the shape, compared in a jit trace
                    shape = _as_shape(shape, full)  # its int, or the error for a traced one
                    if shape != aval.shape and not _compatible(shape, aval.shape):  # type: ignore[arg-type]
                        raise _shape_error(full, shape, aval.shape, site if passed else created[full],
                                           passed) from None
                found = aval.dtype
                if dtype is None:
                    dtype = scope.dtype
                if found is not dtype:  # another spelling (jnp.float32, "float32", ...), or a mismatch
                    if type(dtype) is _SCALAR_TYPE:
                        dtype = dtype.dtype
                    if (found is not dtype and found is not _DTYPES.get(dtype)
                            and not _same_dtype(found, dtype)):
                        converted = _canonical_numpy_leaf(aval, dtype)
                        if converted is None:
                            raise _dtype_error(full, dtype, found, site if passed else created[full],
                                               passed, init)
                        value = converted
                if passed is not None:  # created by this request
                    created[full] = site
                    if regularizer is not None:
                        frame.regularized.append((regularizer, value))
                return value
    elif scope.custom_getter is None and type(name) is str and (
            dtype is None or init is None or callable(init)):
        # _request without a custom getter, inline (init's requests).
        return frame.store.get(
            frame, scope.prefix + name, shape, scope.dtype if dtype is None else dtype,
            scope.initializer if init is None else init,
            scope.regularizer if regularizer is None else regularizer, scope._reuse,
            False if scope.trainable is False else trainable, collections, scope.partitioner,
            sharding, PARAM, scope.constraint if constraint is None else constraint)
    return _request(frame, name, shape, init, dtype, trainable, regularizer, collections, sharding,
                    PARAM, constraint)


def get_state(name: str, shape: Optional[Sequence[int]] = None, init: Any = None,
              dtype: Any = None) -> jax.Array:
    """Create or fetch the non-trainable state ``<current scope>/<name>`` (e.g. batch-norm statistics).

    Same naming and reuse rules as ``get_param`` (state and parameters share one namespace, as TF's
    ``moving_mean`` variables share it with weights). Returns the value ``set_state`` last wrote in
    this call, else the one passed to ``apply``. Only under ``transform_with_state``.
    """
    frame = _frame._FRAME.get()
    if frame is None:
        raise _frame.not_in_transform("get_state")
    outside = what = None
    if _TRACE.value is not frame.trace:
        what = f"sp.get_state({name!r}), state '{frame.scope.prefix}{name}',"
        outside = _frame.check_trace(frame, what)
    if not frame.with_state:
        raise _no_state("get_state", name)
    value = _request(frame, name, shape, init, dtype, False, None, None, None, STATE)
    return _frame.usable_outside(value, what) if outside else value  # type: ignore[arg-type]


def set_state(name: str, value: Any) -> None:
    """Write the state ``<current scope>/<name>``; ``apply`` returns it in ``new_state``.

    The state must have been declared by ``get_state`` earlier in the same call, and the value must
    keep its shape and dtype. During ``init`` the value is checked and dropped: initial state comes
    from the initializers only.
    """
    frame = _frame.current("set_state")
    if type(name) is not str:
        raise _name_type_error("set_state", name)
    if _TRACE.value is not frame.trace:
        what = f"sp.set_state({name!r}), state '{frame.scope.prefix}{name}',"
        _frame.check_trace(frame, what)  # raises in a function JAX caches (jax.lax.scan, ...)
        raise StateError(
            f"{what} was called inside a function that a JAX transformation (jax.vmap, jax.grad, "
            "a jax.custom_vjp, ...) runs within the model: the new value belongs to that trace and "
            "cannot leave it.\n"
            "  fix: return the new value from the function and call sp.set_state outside it.")
    if frame.loop is not None:
        raise StateError(
            f"sp.set_state({name!r}) was called inside the function of {frame.loop} (state "
            f"'{frame.scope.prefix}{name}'): a value made there cannot leave it except as its result.\n"
            f"  fix: return the new value from the function and call sp.set_state after {frame.loop}; "
            "for repeated layers with state (batch norm), use sp.layer_stack, which threads it.")
    if not frame.with_state:
        raise _no_state("set_state", name)
    full = frame.scope.prefix + name
    frame.store.set_state(frame, full, value)


# --- resolution shared by both stores ------------------------------------------------------------


# tf.get_variable's arguments that only steer TF's runtime: what to tell a user passing them (those
# variable_scope takes too are worded once, in _scope.py).
_TF_RUNTIME_ARGUMENTS = {
    "use_resource": _TF_RUNTIME_SCOPE_ARGUMENTS["use_resource"],
    "caching_device": _TF_RUNTIME_SCOPE_ARGUMENTS["caching_device"],
    "validate_shape": "TF's permission to leave a variable's shape unknown; every parameter here "
                      "has a full shape",
    "synchronization": "how TF's distribution strategies sync a variable across replicas; "
                       "jax.sharding decides that here",
    "aggregation": "how TF's distribution strategies combine a variable's replica updates; "
                   "jax.sharding decides that here",
}


def _tf_request(frame, name, shape, init, dtype, trainable, regularizer, collections, sharding,
                constraint, options: Dict[str, Any]):
    """``get_param`` called with more of ``tf.get_variable``'s keyword arguments."""
    if "initializer" in options:
        raise TypeError(
            f"get_param({name!r}) takes init=, not TF's initializer=.\n"
            "  fix: rename initializer= to init= (in every ported tf.get_variable call); the "
            "argument order is (name, shape, init, dtype).")
    runtime = sorted(k for k in options if k in _TF_RUNTIME_ARGUMENTS)
    unknown = sorted(k for k in options if k not in _TF_RUNTIME_ARGUMENTS
                     and k not in ("partitioner", "custom_getter"))
    if unknown:
        raise TypeError(f"get_param() got an unexpected keyword argument {unknown[0]!r}")
    if runtime:
        why = "; ".join(f"{k}= is {_TF_RUNTIME_ARGUMENTS[k]}" for k in runtime)
        raise TypeError(
            f"get_param({name!r}) does not take {', '.join(k + '=' for k in runtime)} of TF 1.x's "
            f"get_variable: {why}.\n  fix: drop {'it' if len(runtime) == 1 else 'them'}.")
    getter = options.get("custom_getter")
    if getter is not None and not callable(getter):
        raise ReuseArgumentError(f"Passed a custom_getter which is not callable: {getter!r}")
    partitioner = options.get("partitioner")
    if partitioner is not None and not (isinstance(shape, (list, tuple)) and not shape):  # TF: not
        # for a scalar, whose partitioner it ignores
        check_partitioner(partitioner, lambda: f"parameter '{frame.scope.prefix}{name}'")
    if _TRACE.value is not frame.trace:
        what = f"sp.get_param({name!r}), parameter '{frame.scope.prefix}{name}',"
        if _frame.check_trace(frame, what):
            return _frame.usable_outside(_request(
                frame, name, shape, init, dtype, trainable, regularizer, collections, sharding,
                PARAM, constraint, partitioner, getter), what)
    return _request(frame, name, shape, init, dtype, trainable, regularizer, collections, sharding,
                    PARAM, constraint, partitioner, getter)


_NEXT_GETTER_ARGUMENTS = ("name", "shape", "dtype", "initializer", "regularizer", "reuse", "trainable",
                         "collections", "caching_device", "partitioner", "validate_shape",
                         "use_resource", "constraint", "synchronization", "aggregation", "sharding")


def _getter_arguments_error(name: str, unknown: list) -> TypeError:
    """The error for keywords a custom getter passed its next getter that TF's true getter does not
    take (``init=``, get_param's spelling, where TF's getters say ``initializer=``)."""
    renames = {"init": "initializer", "default_initializer": "initializer"}
    said = [f"{k}= (TF's getters say {renames[k]}=)" for k in unknown if k in renames]
    return TypeError(
        f"custom getter passed unknown arguments {unknown} for '{name}' to its next getter.\n"
        f"  asked: next_getter(..., {', '.join(f'{k}=...' for k in unknown)})\n"
        f"  found: the next getter takes TF's get_variable arguments: "
        f"{', '.join(_NEXT_GETTER_ARGUMENTS)}\n"
        f"  fix: {'; '.join(said) + '; ' if said else ''}pass the keywords the getter received "
        "(kwargs) on, changed as needed, e.g. next_getter(name, *args, **kwargs).")


def _request(frame, name, shape, init, dtype, trainable, regularizer, collections, sharding, kind,
             constraint=None, partitioner=None, custom_getter=None):
    if type(name) is not str:
        raise _name_type_error("get_param" if kind is PARAM else "get_state", name)
    scope = frame.scope
    if getattr(dtype, "as_numpy_dtype", None) is not None:  # tf.float32: custom getters see np's
        dtype = _as_dtype(dtype, scope.prefix + name)
    if dtype is not None and init is not None and not callable(init):
        init_dtype = _constant_init_dtype(scope.prefix + name, init)
        if init_dtype != jax.dtypes.canonicalize_dtype(_as_dtype(dtype, scope.prefix + name)):
            raise InitializerError(
                f"Initializer type '{init_dtype}' and explicit dtype '{_as_dtype(dtype)}' don't "
                f"match for '{scope.prefix}{name}'.\n"
                "  fix: drop dtype= (a constant initializer fixes the dtype) or cast the constant."
            )
    if init is None:
        init = scope.initializer
    if dtype is None:
        dtype = scope.dtype
    if regularizer is None:
        regularizer = scope.regularizer
    if constraint is None:
        constraint = scope.constraint
    if partitioner is None:
        partitioner = scope.partitioner
    if scope.trainable is False:
        trainable = False
    full = scope.prefix + name
    # TF: a getter passed to get_variable replaces the scope's chain instead of joining it.
    getter = scope.custom_getter if custom_getter is None else custom_getter
    store = frame.store
    if getter is None:
        return store.get(frame, full, shape, dtype, init, regularizer, scope.reuse, trainable,
                         collections, partitioner, sharding, kind, constraint)

    # The next getter of the outermost custom getter: TF's _true_getter's arguments, in its order
    # (a getter may pass them by position), and sharding=. Its defaults are TF's, for a getter that
    # leaves arguments out (a shared helper: next_getter("scale", shape=[])): dtype float32, reuse
    # None (get-or-create, TF's AUTO_REUSE), trainable None (True), no initializer (Glorot /
    # zeros), no regularizer, ... -- not the request's nor the scope's, which reach the getter in
    # its kwargs. (dtype=None, which TF refuses, means the scope's dtype.) TF's runtime settings
    # (caching_device, validate_shape, use_resource, synchronization, aggregation) are taken and
    # have no counterpart here.
    def true_getter(name, shape=None, dtype=_FLOAT32, initializer=None, regularizer=None, reuse=None,
                    trainable=None, collections=None, caching_device=None, partitioner=None,
                    validate_shape=True, use_resource=None, constraint=None, synchronization=None,
                    aggregation=None, *, sharding=None, **tf_kwargs):
        unknown = set(tf_kwargs) - _TF_ONLY_KWARGS
        if unknown:
            raise _getter_arguments_error(name, sorted(unknown))
        if trainable is None and scope.trainable is False:  # TF's None: the default, here the scope's
            trainable = False
        return store.get(frame, name, shape, _as_dtype(dtype, name) if dtype is not None else scope.dtype,
                         initializer, regularizer, AUTO_REUSE if reuse is None else reuse,
                         trainable, collections, partitioner, sharding, kind, constraint)

    # As TF calls it (see call_getter): by keyword, constraint= and sharding= only if it takes them.
    kwargs = dict(name=full, shape=shape, dtype=dtype, initializer=init, regularizer=regularizer,
                  reuse=scope.reuse, trainable=trainable, collections=collections,
                  partitioner=partitioner, constraint=constraint, sharding=sharding)
    # At the root name scope, as TF runs the getters ("variable names only depend on
    # variable_scope"): what a getter records (a quantized copy) is named from the root.
    names = _scope._enter_name_scope(frame, None, "a custom getter")
    try:
        return call_getter(getter, true_getter, (), kwargs)
    finally:
        _scope._exit_name_scope(frame, names)


_index = operator.index


def _layer_axes(partitioner: Any) -> int:
    """The leading layer axes ``sp.layer_stack`` put before a parameter's own shape: one per
    ``_StackedPartitioner`` wrapped around the scope's partitioner (one per stacking level)."""
    from .sharding import _StackedPartitioner  # a creation path: sharding imports this module
    axes = 0
    while isinstance(partitioner, _StackedPartitioner):
        partitioner, axes = partitioner.per_layer, axes + 1
    return axes


def _as_shape(shape: Any, full: str = "", existing: bool = False) -> Optional[Tuple]:
    """``shape`` as a tuple of ints (``None`` for an unknown dimension), or the error for one that is
    no shape. ``existing``: the request reuses a parameter that exists, for which TF takes a shape of
    unknown rank (``tf.TensorShape(None)``) as the stored one: then ``None``."""
    if shape is None:
        return None
    if type(shape) is tuple or type(shape) is list:  # TF 1.x code writes lists: [784, 10]
        try:
            sizes = tuple(map(_index, shape))
        except TypeError:
            pass  # a None (unknown) or invalid dimension: below
        else:
            # operator.index reads True as 1; TF's Dimension refuses it, and a negative size.
            if not sizes or (min(sizes) >= 0 and bool not in map(type, shape)):
                return sizes
            raise _bad_shape_error(shape, full)
    elif isinstance(shape, (int, np.integer)) and type(shape) is not bool:
        if shape < 0:
            raise _bad_shape_error(shape, full)
        return (int(shape),)
    elif isinstance(shape, np.ndarray) and shape.ndim == 0:  # np.array(5): (5,), as TF's TensorShape
        return _as_shape(shape[()], full, existing)
    elif isinstance(shape, jax.Array) and not _is_tracer(shape):
        # A concrete JAX array (jnp.array([2, 3]) made outside the model): its values, read once
        # (iterating it inside init's trace would stage each element as an op), as NumPy's are.
        values = np.asarray(shape)
        return _as_shape(values.tolist() if values.ndim else values[()], full, existing)
    if getattr(shape, "rank", 0) is None:  # tf.TensorShape(None), which cannot even be iterated
        if existing:
            return None
        raise _init_error(
            full, f"The shape asked for '{full}' has an unknown rank ({shape!r}), but a parameter's "
            "shape must be fully defined", "pass the full shape=..., or shape=None to create it from a "
            "constant initializer or to take the shape of the existing parameter.")
    try:
        # operator.index, not int: a dimension of 2.5 or "2" is an error (TF's Dimension), not 2.
        dims = tuple(None if d is None else operator.index(d) for d in shape)
    except TypeError:
        raise _bad_shape_error(shape, full) from None
    if any(d is not None and d < 0 for d in dims) or bool in map(type, shape):
        raise _bad_shape_error(shape, full)
    return dims


def _bad_shape_error(shape: Any, full: str) -> Exception:
    """The error for a shape with a dimension that is not a size (TF's ``Dimension`` refuses it)."""
    where = f" for '{full}'" if full else ""
    try:
        dims = list(shape)
    except TypeError:  # an int (or a bool) given as the shape
        dims = [shape]
    if any(map(_is_tracer, dims)):  # a size computed with jnp inside the model (init, jit)
        shown = "(" + ", ".join("<traced>" if _is_tracer(d) else repr(d) for d in dims) + ")"
        return TypeError(
            f"The shape {shown}{where} has a dimension that is a traced JAX value: a parameter's "
            "shape must be static, known while the model is traced (init, jax.jit), not computed "
            "from its inputs' values.\n"
            "  fix: compute the size from static values: x.shape[-1], Python or NumPy ints, or "
            "int(...) of a JAX integer computed outside the model.")
    for d in dims:
        if isinstance(d, (bool, np.bool_)):
            return TypeError(
                f"shape must be a sequence of ints, got {shape!r}{where}: {d!r} is a boolean, not a "
                "size (TF: Expected an int, got a boolean).\n"
                f"  fix: write the dimension as an int ({int(d)}).")
        if d is not None and isinstance(d, (int, np.integer)) and d < 0:
            return InitializerError(
                f"Dimension {int(d)} must be >= 0: shape {shape!r}{where} has a negative size (-1 "
                "means 'infer' to reshape, never in a parameter's shape).\n"
                "  fix: pass the actual size; None marks a dimension that a shared parameter fixes.")
    return TypeError(
        f"shape must be a sequence of ints, got {shape!r}{where}.\n"
        "  fix: pass a tuple of ints, e.g. (784, 10); None marks a dimension that a shared "
        "parameter fixes.")


def _compatible(asked: Tuple, found: Tuple) -> bool:
    return len(asked) == len(found) and all(a is None or a == f for a, f in zip(asked, found))


def _same_dtype(found: np.dtype, asked: Any) -> bool:
    """Whether a parameter of dtype ``found`` answers a request for ``asked``, in any spelling JAX
    takes (``np.float32``, ``jnp.float32``, ``"float32"``; ``float64`` is float32 without x64).

    A spelling that names ``found`` itself is remembered in ``_DTYPES``, which get_param's common
    path reads first: TF code spells ``dtype=tf.float32`` on every request.
    """
    if type(asked) is _SCALAR_TYPE:  # jnp.float32 (get_param's common path reads its .dtype itself)
        asked = asked.dtype
        if found is asked or found == asked:
            return True
    elif found == asked:  # tf.float32 too (its == reads NumPy's dtypes)
        if len(_DTYPES) < _DTYPES_MAX:
            _DTYPES[asked] = found
        return True
    try:
        return jax.dtypes.canonicalize_dtype(as_np_dtype(asked)) == found
    except TypeError:  # no dtype: the caller's _dtype_error says so
        return False


def _as_dtype(dtype: Any, full: str = "") -> np.dtype:
    """``dtype`` (any spelling JAX takes, or TF's ``tf.float32``) as a NumPy dtype, not canonicalized;
    a TypeError naming the parameter if it is no dtype JAX has."""
    try:
        np_dtype = as_np_dtype(dtype)
    except TypeError:
        pass
    else:  # object and str are NumPy's dtypes, not JAX's
        if np_dtype == np.bool_ or jnp.issubdtype(np_dtype, jnp.number):
            return np_dtype
    raise TypeError(
        f"dtype={dtype!r}{f' of {full!r}' if full else ''} is not a dtype JAX has.\n"
        f"  asked: {type(dtype).__name__} {dtype!r}\n"
        "  fix: pass a NumPy/JAX dtype in any spelling: jnp.float32, np.int32, 'bfloat16' (TF's "
        "tf.float32 works too).") from None


# A dtype's spelling (np.float32, "float32", ...; not jnp.float32, whose hash and == run Python) ->
# the np.dtype it names, for the spellings requests have used. Never a canonicalized dtype: float64
# stays float64 whatever x64 says.
_DTYPES: Dict[Any, np.dtype] = {}
_DTYPES_MAX = 256


def _shape_str(shape: Optional[Tuple]) -> str:
    if shape is None:
        return "<unknown>"
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _constant_dtype(value: Any) -> np.dtype:
    """The dtype of a constant: an array's own (canonicalized); for a Python number, or a (nested)
    list or tuple of them, TF's: float32, int32 (int64 past its range), bool, complex64. NumPy
    would say float64 and int64, which x64 keeps, and a ported ``init=1.5`` must stay float32."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        array = np.asarray(value)
        dtype = _PYTHON_DTYPES.get(array.dtype.kind, array.dtype)
        if dtype is _INT32 and array.size and not (
                _INT32_RANGE[0] <= array.min() and array.max() <= _INT32_RANGE[1]):
            dtype = array.dtype
    return jax.dtypes.canonicalize_dtype(dtype)


_INT32 = np.dtype(np.int32)
_INT32_RANGE = (np.iinfo(np.int32).min, np.iinfo(np.int32).max)
_PYTHON_DTYPES = {"f": np.dtype(np.float32), "i": _INT32, "b": np.dtype(np.bool_),
                  "c": np.dtype(np.complex64)}


def _constant_init_dtype(full: str, init: Any) -> np.dtype:
    """``_constant_dtype`` of the constant initializer of ``full``, or the error for one that is no
    number (``init="zeros"``, Keras's spelling) or only describes one (a ``jax.ShapeDtypeStruct``)."""
    if isinstance(init, jax.ShapeDtypeStruct):
        raise TypeError(
            f"The constant initializer of '{full}' is {init!r}, which has a shape and a dtype but no "
            "values.\n  fix: pass shape= and dtype= with an initializer, e.g. sp.get_param(name, "
            f"{tuple(init.shape)}, init=sp.initializers.zeros, dtype=jnp.{np.dtype(init.dtype).name}).")
    init = _tf_constant(full, init)
    dtype = getattr(init, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise InitializerError(
            f"The constant initializer of '{full}' is a typed PRNG key ({dtype}, from "
            "jax.random.key or sp.next_rng_key()); parameters and state hold arrays of numbers.\n"
            "  fix: store the key's data, init=jax.random.key_data(key) (uint32), and rebuild the "
            f"key where it is read: jax.random.wrap_key_data(sp.get_state({full.rsplit('/', 1)[-1]!r})"
            "); for a new key in each call, call sp.next_rng_key() in the model instead.")
    if not hasattr(init, "dtype") and np.asarray(init).dtype.kind not in "biufc":
        # A dtype in init's place, with an initializer after it as dtype: get_param(n, s, "float32", i)
        raise _dtype_as_init(full, init) or _not_a_number_error(full, init)
    dtype = _constant_dtype(init)
    if not isinstance(init, jax.Array):  # (JAX's own arrays are canonical already)
        _check_fits(full, init, dtype)
    return dtype


def _check_fits(full: str, init: Any, dtype: np.dtype) -> None:
    """Refuse an integer constant whose values change in ``dtype``, the one JAX gives it: with
    jax_enable_x64 off an int64 2**40 would become int32 0."""
    array = np.asarray(init)
    if array.dtype == dtype or array.dtype.kind not in "iu" or not array.size:
        return
    changed = _initializers._not_exactly_in(array, dtype)
    if changed is not None:
        raise TypeError(
            f"The constant initializer of '{full}' holds {changed!r}, which {np.dtype(dtype).name} "
            f"does not hold: JAX makes {array.dtype.name} values {np.dtype(dtype).name} with "
            "jax_enable_x64 off, and the value would change.\n  fix: turn 64-bit types on at "
            "startup (jax.config.update('jax_enable_x64', True)), or pass values that fit "
            f"{np.dtype(dtype).name}.")


def _tf_constant(full: str, init: Any) -> Any:
    """``init``, a constant initializer, as NumPy if it is a TF tensor or variable (ported code's
    ``initializer=tf.constant(3)``): its value, as TF reads it. Else ``init`` itself. Duck-typed (a
    ``dtype`` with ``as_numpy_dtype``, TF's ``DType``): TF is never imported. A symbolic (graph)
    tensor has no value to read: the error says to pass one."""
    if getattr(getattr(init, "dtype", None), "as_numpy_dtype", None) is None:
        return init
    try:
        return np.asarray(init.numpy())
    except Exception:  # noqa: BLE001 - no .numpy (a graph tensor), or TF refuses to read it
        pass
    raise TypeError(
        f"The constant initializer of '{full}' is a symbolic TF tensor {init!r:.100}, which has no "
        "value to read here (it belongs to a tf.Graph; only an eager tensor or variable has one).\n"
        "  fix: pass its value as a NumPy or JAX array (e.g. the array it was made from), or an "
        "initializer such as sp.initializers.constant(value).")


def _not_a_number_error(full: str, init: Any) -> TypeError:
    """The error for a constant initializer that is no number: ``init="zeros"``, Keras's spelling."""
    if isinstance(init, str) and callable(getattr(_initializers, init, None)):
        fix = f"pass the initializer itself: init=sp.initializers.{init}"
    else:
        fix = ("pass a number or an array of numbers, or an initializer from sp.initializers "
               "(e.g. init=sp.initializers.zeros)")
    return TypeError(
        f"The constant initializer of '{full}' is {type(init).__name__} {init!r}, not a number "
        "or an array of numbers (initializers are not named by strings here).\n"
        f"  fix: {fix}.")


def _constant_with_shape_error(full: str, init: Any) -> Exception:
    """The error for a constant initializer given with a shape: a dtype in init's place, or a string
    (which no shape= would fix: say what it is not), else TF's "do not specify shape"."""
    error = _dtype_as_init(full, init)
    if error is None and isinstance(init, str):
        error = _not_a_number_error(full, init)
    return error or _init_error(
        full, "If initializer is a constant, do not specify shape", _CONST_SHAPE_FIX)


def _as_jax_leaf(value: Any, full: str, kind: str = PARAM) -> Any:
    """``value``, the leaf ``full`` of apply's ``params`` or ``state`` with a dtype but no ``aval``
    (a NumPy array, as ``sp.checkpoint.load`` returns), as the ``jax.Array`` ``jax.jit`` would make
    of it: ``get_param`` returns a ``jax.Array``, and the model must never hold the caller's own
    array (``w *= 2.0`` would change the caller's params in place). A leaf JAX cannot hold
    (strings) stays as it is: the dtype check names it. A ``jax.ShapeDtypeStruct`` is an error."""
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError):
        if isinstance(value, jax.ShapeDtypeStruct):
            raise _abstract_leaf_error(full, value, kind) from None
        return value


def _abstract_leaf_error(full: str, value: Any, kind: str) -> ParamsTypeError:
    """The error for a ``jax.ShapeDtypeStruct`` in apply's ``params`` or ``state``: what
    ``jax.eval_shape(model.init, ...)`` or ``sp.sharding.abstract_params`` return (a checkpoint's
    restore target), which describe the arrays but hold no values."""
    what, tree = ("Parameter", "params") if kind is PARAM else ("State", "state")
    return ParamsTypeError(
        f"{what} '{full}' in {tree} is a jax.ShapeDtypeStruct (shape {_shape_str(tuple(value.shape))}"
        f", dtype {np.dtype(value.dtype).name}), which has no values.\n"
        f"  asked: an array for '{full}' in apply\n"
        "  found: an abstract value, as jax.eval_shape(model.init, ...) or "
        "sp.sharding.abstract_params return (a checkpoint's restore target)\n"
        f"  fix: pass the arrays init or checkpoint.load returned.")


def _canonical_numpy_leaf(value: Any, asked: Any) -> Any:
    """``value``, a parameter in ``params`` whose dtype is not ``asked``, if it is a NumPy array
    that JAX reads as ``asked`` (float64 without x64) as a JAX array, as ``jax.jit`` gives it: an
    eager apply must take what a jitted one takes. Else None: the caller raises the dtype error."""
    if isinstance(value, (np.ndarray, np.generic)):
        canonical = jax.dtypes.canonicalize_dtype(value.dtype)
        if canonical != value.dtype and _same_dtype(canonical, asked):
            return jnp.asarray(value)
    return None


def _leaf_type_error(full: str, value: Any, kind: str = PARAM) -> ParamsTypeError:
    what, tree = ("Parameter", "params") if kind is PARAM else ("State", "state")
    if value is None:  # a masked tree (jax.tree.map(lambda p, keep: p if keep else None, ...))
        return ParamsTypeError(
            f"{what} '{full}' in {tree} is None, not an array.\n"
            f"  asked: an array for '{full}' in apply\n"
            f"  found: the key '{full}' holding None, as in a tree masked with None\n"
            f"  fix: pass every entry the model asks for (the {tree} init returned); to keep some "
            "parameters fixed in training, split them off with sp.partition or "
            "sp.partition_trainable and differentiate only the other half.")
    return ParamsTypeError(
        f"{what} '{full}' in {tree} is {type(value).__name__} {value!r:.60}, not an array.\n"
        f"  asked: an array for '{full}' in apply\n"
        "  found: no shape and dtype (a Python number, list or string)\n"
        f"  fix: pass arrays, e.g. {tree} = jax.tree.map(jnp.asarray, {tree}), or the tree init "
        "returned.")


def _takes_no_args(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)


def _makes_initializers(fn: Callable) -> bool:
    """Whether ``fn`` looks like an initializer factory: it has parameters, all of them optional
    (``def make_init(scale=1.0)``); a no-argument callable rather returns a value."""
    try:
        return bool(inspect.signature(fn).parameters) and _takes_no_args(fn)
    except (TypeError, ValueError):
        return False


# id(signature) -> (signature, whether it takes three positional arguments): _callable_with_three_args
_SIGNATURE_THREE_ARGS: Dict[int, Tuple[inspect.Signature, bool]] = {}


def _callable_with_three_args(fn: Callable) -> bool:
    if type(fn) is types.FunctionType:
        # What inspect.signature would report, read off the function: init checks every
        # initializer, and signature() cost more than the rest of creating a parameter.
        own = fn.__dict__
        signature = own.get("__signature__")
        if signature is None:
            if "__wrapped__" not in own:  # from the code object
                code = fn.__code__
                return code.co_argcount >= 3 or bool(code.co_flags & inspect.CO_VARARGS)
        elif type(signature) is inspect.Signature:
            # signature() returns a function's own __signature__ as is, before any unwrapping
            # (sp.initializers.zeros and ones carry one): its answer, remembered per signature.
            seen = _SIGNATURE_THREE_ARGS.get(id(signature))
            if seen is not None and seen[0] is signature:
                return seen[1]
            params = signature.parameters.values()
            takes = (sum(p.kind is p.POSITIONAL_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
                         for p in params) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params))
            if len(_SIGNATURE_THREE_ARGS) >= 256:
                _SIGNATURE_THREE_ARGS.clear()
            _SIGNATURE_THREE_ARGS[id(signature)] = (signature, takes)  # keeps it alive: id stays its
            return takes
    if _initializers._is_tf_class(fn):  # tf.variance_scaling_initializer, uncalled: called with
        # (key, shape, dtype) it would make an initializer (of scale=key), not a value
        return False
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True  # cannot tell: let the call itself decide
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params)


def _name_type_error(api: str, name: Any) -> TypeError:
    return TypeError(
        f"sp.{api}: name must be a string, got {type(name).__name__} ({name!r}).\n"
        f"  fix: pass the name as a string, e.g. sp.{api}({_example_name(name)!r}, ...).")


def _example_name(name: Any) -> str:
    """The name a fix suggests for a name that is no string: a number's digits, else 'weights'."""
    return str(name) if isinstance(name, (int, float)) and not isinstance(name, bool) else "weights"


def _no_state(api: str, name: str) -> StateError:
    return StateError(
        f"sp.{api}({name!r}) needs a stateful transform, but the model was built with sp.transform.\n"
        "  fix: build it with sp.transform_with_state(fn); then init returns (params, state) and "
        "apply(params, state, ...) returns (out, new_state)."
    )


# --- error texts (one wording for init and apply) -------------------------------------------------


def _exists_error(frame, full: str, site, shape, dtype) -> ParamExistsError:
    scope = frame.scope
    # Who asked: a layer of this package (sp.layers, sp.slim, sp.rnn), which opens the scope itself,
    # so re-entering that scope with reuse=True would nest it again ('fc/fc/kernel'), or the user.
    caller = _asking_layer()
    by_layer = caller is not None
    if by_layer and caller is not None and caller.f_code.co_name == "add_weight":  # a custom Layer's build, asking twice
        fix = ("  fix: give each weight of the layer its own name in build (add_weight(name, ...)); "
               "to share weights between layer objects, build them with _reuse=sp.AUTO_REUSE, or "
               "call one object.")
    elif by_layer:
        fix = ("  fix: to share it, pass reuse=True to the layer's second call (to an RNN's cell), "
               "or call sp.get_scope().reuse_variables() before the second request (in the scope "
               "around it), or use reuse=sp.AUTO_REUSE there; not sp.scope("
               f"{scope.name!r}, reuse=True) around the layer: the layer opens its scope again "
               f"inside it ('{scope.name}/{scope.name}/...'). To make a separate parameter, give the "
               "layer another name (or none: it is numbered).")
    elif scope.name:
        fix = (f"  fix: to share it, enter the scope with reuse=True (sp.scope({scope.name!r}, "
               "reuse=True)), call sp.get_scope().reuse_variables() before the second request (in the "
               "scope around it), or use reuse=sp.AUTO_REUSE; to make a separate parameter, give it "
               "another name or scope (e.g. sp.scope(None, default_name=...)).")
    else:  # the root has no name to re-enter
        fix = ("  fix: to share it, call sp.get_scope().reuse_variables() before asking again, or ask "
               "in a scope entered with reuse=True or reuse=sp.AUTO_REUSE; to make a separate "
               "parameter, give it another name or scope (e.g. sp.scope(None, default_name=...)).")
    return ParamExistsError(
        f"Variable {full} already exists, disallowed. Did you mean to set reuse=True or "
        f"reuse=AUTO_REUSE in VarScope? Originally defined at:\n\n  {format_site(site)}\n\n"
        f"  asked: a new '{full}' (reuse=False in scope '{scope.name}') at {format_site(user_site())}\n"
        f"  found: '{full}' already created in this call with shape {_shape_str(shape)}, dtype "
        f"{np.dtype(dtype).name}\n"
        + fix
        + name_scope_hint(frame.name_stack, scope.name) + default_name_hint(frame, full)
    )


def _not_found_error(frame, full: str, existing, in_apply: bool,
                     kind: str = PARAM) -> ParamNotFoundError:
    scope = frame.scope
    argument = _ARGUMENT[kind]
    # TF's words; its question only where AUTO_REUSE can help: apply never creates.
    lines = [f"Variable {full} does not exist, or was not created with get_{kind}()."
             + ("" if in_apply else " Did you mean to set reuse=AUTO_REUSE in VarScope?")]
    if in_apply:
        lines.append(f"  asked: '{full}' in apply, but {argument} has no such entry. Was it created during "
                     "init? Did the code path change (different Python flags or shapes than init)?")
    else:
        lines.append(f"  asked: '{full}' with reuse={_describe_reuse(scope.reuse)} in scope "
                     f"'{scope.name}', before anything created it in this call")
    if in_apply and not existing:  # apply(None, x), apply({}, x): no params at all
        lines.append(f"  found: {argument} holds no arrays (apply was given None, {{}} or empty "
                     f"dicts), and the model asks for '{full}'")
    else:
        close = nearest(full, existing)
        lines.append("  found: " + (", ".join(f"'{c}'" for c in close) if close else "no similar names")
                     + " among the existing names")
    origin = scope.reuse_origin
    if not in_apply and scope.reuse is True and origin is not None:
        origin_name, origin_site, how = origin
        lines.append(f"  reuse is on because scope '{origin_name}' set {how} at {format_site(origin_site)}; "
                     "it is inherited by every sub-scope and cannot be turned back off inside it")
    if in_apply:  # apply never creates: reuse= cannot help, the params (or the name) can
        lines.append(f"  fix: pass the {argument} this model's init returned (re-run init after changing "
                     "the model), or check the name.")
    else:
        lines.append("  fix: create it first (reuse=False), use reuse=sp.AUTO_REUSE to create it when "
                     "missing, or check the name.")
    return ParamNotFoundError("\n".join(lines) + name_scope_hint(frame.name_stack, scope.name)
                              + tf_variable_scope_hint())


def _swapped_error(full: str, kind: str) -> ParamNotFoundError:
    """apply found ``full``, requested as ``kind``, only in the other tree: most likely
    ``apply(state, params, ...)``."""
    other = STATE if kind is PARAM else PARAM
    asked, found_in = _ARGUMENT[kind], _ARGUMENT[other]
    what = "a parameter (sp.get_param)" if kind is PARAM else "state (sp.get_state)"
    return ParamNotFoundError(
        f"'{full}' was requested as {what}, but apply found it in the {found_in} argument, not in "
        f"{asked}: apply's params and state arguments look swapped.\n"
        f"  asked: '{full}' in the {asked} argument of apply(params, state, *args)\n"
        f"  found: '{full}' in the {found_in} argument\n"
        "  fix: call model.apply(params, state, *args) in that order, with the (params, state) init "
        f"returned; if '{full}' is {'state' if kind is PARAM else 'a parameter'}, ask for it with "
        f"sp.get_{other}('{full.rsplit('/', 1)[-1]}').")


# The argument of apply holding a parameter or state, by kind.
_ARGUMENT = {PARAM: "params", STATE: "state"}


def _shape_error(full, asked, found, site, passed: Optional[str] = None) -> ShapeMismatchError:
    """``passed``: the argument of apply (``"params"``, ``"state"``) the found value came from, when
    this request is the first of the call (so nothing in the call made it); else it was created at
    ``site``. A request of a layer of this package (whose shapes come from its input and arguments:
    it has no ``shape=`` to pass) is told in the layer's terms."""
    head = (f"Trying to share variable {full}, but specified shape {_shape_str(asked)} and found shape "
            f"{_shape_str(found)}.\n")
    layer = _layer_request(full) if passed != "state" else None
    if layer is not None:
        return ShapeMismatchError(head + _layer_shape_lines(full, asked, found, site, passed, layer))
    if passed is not None:
        return ShapeMismatchError(
            head + f"  asked: shape {_shape_str(asked)} at {format_site(site)}\n"
            f"  found: shape {_shape_str(found)} in the {passed} passed to apply\n" + _stale_fix(passed))
    if (asked is not None and found is not None and len(found) == len(asked) + 1
            and tuple(found[1:]) == tuple(asked)):
        # One more leading axis than asked: made inside an sp.layer_stack block (stacked per
        # layer), asked for again outside it (a template or a captured scope called after the stack)
        return ShapeMismatchError(
            head + f"  asked: shape {_shape_str(asked)} at {format_site(user_site())}\n"
            f"  found: shape {_shape_str(found)}, created at {format_site(site)}: one leading axis "
            f"more, as a parameter made inside an sp.layer_stack block has ({found[0]} layers, "
            "one slice each)\n"
            "  fix: to share one parameter between the stack's layers and the code after it, "
            "make it before the stack (call the template, or enter the scope and ask for it, once "
            "before sp.layer_stack); else use it only inside the stack, or give the later use its "
            "own name.")
    return ShapeMismatchError(
        head + f"  asked: shape {_shape_str(asked)} at {format_site(user_site())}\n"
        f"  found: created at {format_site(site)}\n"
        "  fix: pass the stored shape, or shape=None to accept the stored one; if the model changed, "
        "re-run init."
    )


def _dtype_name(dtype: Any) -> str:
    """A dtype's name for an error: NumPy's, or JAX's for an extended dtype (``key<fry>``)."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def _dtype_error(full, asked, found, site, passed: Optional[str] = None,
                 init: Any = None) -> DtypeMismatchError:
    try:
        asked = _as_dtype(asked, full)  # raises for no dtype: init's error for it
    except TypeError:
        slip = _dtype_as_init(full, init)  # get_param(name, shape, np.float32, initializer)
        if slip is not None:
            raise slip from None
        raise
    head = (f"Trying to share variable {full}, but specified dtype {np.dtype(asked).name} and found "
            f"dtype {_dtype_name(found)}.\n")
    if jax.dtypes.issubdtype(found, jax.dtypes.extended):  # a PRNG key array where numbers belong
        where = (f"in the {passed} passed to apply" if passed is not None
                 else f"created at {format_site(site)}")
        return DtypeMismatchError(
            head + f"  asked: dtype {np.dtype(asked).name} for '{full}' at {format_site(user_site())}\n"
            f"  found: a PRNG key array ({found}) {where}\n"
            "  fix: keep keys out of the params and state: store jax.random.key_data(key) (declared "
            "with its shape and uint32 dtype) and rebuild the key with jax.random.wrap_key_data(data) "
            "where it is read.")
    layer = _layer_request(full) if passed != "state" else None
    if layer is not None:
        return DtypeMismatchError(head + _layer_dtype_lines(full, asked, found, site, passed, layer))
    note = "  note: dtype=None means the scope's dtype (float32 unless set), as in TF 1.x\n"
    if passed is not None:
        return DtypeMismatchError(
            head + f"  asked: dtype {np.dtype(asked).name} at {format_site(site)}\n"
            f"  found: dtype {np.dtype(found).name} in the {passed} passed to apply\n"
            + note + _stale_fix(passed))
    return DtypeMismatchError(
        head + f"  asked: dtype {np.dtype(asked).name} at {format_site(user_site())}\n"
        f"  found: created at {format_site(site)}\n" + note
        + f"  fix: pass dtype={np.dtype(found).name} when sharing it."
    )


_PACKAGE = __name__.rsplit(".", 1)[0]
# The package's modules a request passes through between a caller and the error (a layer_stack's
# view of the store included), and those of its layers (sp.layers, sp.slim, sp.rnn).
_REQUEST_MODULES = frozenset({__name__, _PACKAGE + "._scope", _PACKAGE + "._layer_stack"})
_LAYER_MODULES = frozenset({_PACKAGE + ".layers", _PACKAGE + ".slim", _PACKAGE + ".rnn"})
# Functions of those modules that pass their caller's own shape and dtype on to get_param: their
# errors keep get_param's words (a custom Layer's add_weight, slim.variable, slim.model_variable).
_GET_PARAM_LIKE = frozenset({"add_weight", "variable", "model_variable"})
# A layer's arguments that set a dimension of its parameters, beside its input's width.
_SIZE_ARGUMENTS = ("units", "filters", "num_outputs", "num_units", "output_dim", "input_dim",
                   "depth_multiplier")
_FIX_SEPARATE = ("to make a separate layer, call it under another name, without reuse=True (or call "
                 "another layer object)")


def _asking_layer() -> Optional[types.FrameType]:
    """The frame of the layer of this package (sp.layers, sp.slim, sp.rnn) making the request being
    answered, or None when the user's code made it (directly, or through the user's custom getter).
    It walks the stack: for error texts only."""
    caller: Optional[types.FrameType] = sys._getframe(1)
    while caller is not None and caller.f_globals.get("__name__") in _REQUEST_MODULES:
        caller = caller.f_back
    if caller is not None and caller.f_globals.get("__name__") in _LAYER_MODULES:
        return caller
    return None


class _LayerRequest(NamedTuple):
    """A layer's request, for an error's text: the layer's scope, the user's line calling it, its
    input's shape and dtype (None if not found), and the values of its size arguments."""
    name: str
    site: str
    shape: Optional[Tuple]
    dtype: Optional[np.dtype]
    sizes: frozenset


def _layer_request(full: str) -> Optional[_LayerRequest]:
    """What a layer of this package asking for ``full`` was called with, or None if no layer asked
    (get_param's own words apply then)."""
    layer = _asking_layer()
    if layer is None or layer.f_code.co_name in _GET_PARAM_LIKE:
        return None
    shape = dtype = None
    sizes: set = set()
    f: Optional[types.FrameType] = layer
    while f is not None and f.f_globals.get("__name__") in _LAYER_MODULES | _REQUEST_MODULES:
        local = f.f_locals
        if shape is None:
            inputs = local.get("inputs")
            try:
                shape, dtype = tuple(inputs.shape), np.dtype(inputs.dtype)  # type: ignore[union-attr]
            except (AttributeError, TypeError):
                pass
        sizes.update(v for v in map(local.get, _SIZE_ARGUMENTS) if type(v) is int)
        f = f.f_back
    return _LayerRequest(full.rpartition("/")[0], format_site(user_site()), shape, dtype,
                         frozenset(sizes))


def _width_change(asked: Tuple, found: Tuple, layer: _LayerRequest) -> Optional[Tuple[int, int]]:
    """(this input's last dimension, the one ``found`` was made for) when that is the one difference
    between the shapes; None when the layer's arguments may account for it, or cannot be told."""
    if layer.shape is None or not layer.shape or len(asked) != len(found):
        return None
    differing = [i for i, (a, b) in enumerate(zip(asked, found)) if a != b]
    if len(differing) != 1:
        return None
    width, made_for = asked[differing[0]], found[differing[0]]
    if width != layer.shape[-1] or width in layer.sizes:
        return None
    return width, made_for


def _layer_asked(what: str, layer: _LayerRequest) -> str:
    called = ""
    if layer.shape is not None:
        called = (f", called on an input of shape {_shape_str(layer.shape)}" if what.startswith("shape")
                  else f", called on an input of dtype {np.dtype(layer.dtype).name}")
    return f"  asked: {what} by layer '{layer.name}' at {layer.site}{called}\n"


def _layer_shape_lines(full, asked, found, site, passed, layer: _LayerRequest) -> str:
    lines = _layer_asked(f"shape {_shape_str(asked)}", layer)
    change = _width_change(asked, found, layer)
    if passed is not None:  # apply's first request: the params' own value
        lines += f"  found: shape {_shape_str(found)} in the {passed} passed to apply\n"
        if change is None:
            return lines + _stale_fix(passed)
        return lines + (
            f"  note: this input's last dimension is {change[0]}, but the {passed} were made for an "
            f"input with last dimension {change[1]} (a layer's parameter shapes follow its input)\n"
            f"  fix: call apply with inputs shaped as init's (last dimension {change[1]}), or re-run "
            "init with inputs of this shape for params that fit them.")
    lines += f"  found: created at {format_site(site)}\n"
    if change is None:
        return lines + (
            "  note: a layer makes its parameters' shapes from its input and its arguments (units, "
            f"filters, kernel size, ...): this call's give '{full}' another shape than the call that "
            "made it\n"
            f"  fix: to share '{full}', call the layer with the arguments and on inputs shaped as the "
            f"call that made it; {_FIX_SEPARATE}.")
    return lines + (
        f"  note: a layer makes its parameters' shapes from its input: this call's input has last "
        f"dimension {change[0]}, but '{full}' was made for an input with last dimension {change[1]}\n"
        f"  fix: to share '{full}', give this call inputs of last dimension {change[1]} (project or "
        f"reshape the input first); {_FIX_SEPARATE}.")


def _layer_dtype_lines(full, asked, found, site, passed, layer: _LayerRequest) -> str:
    asked_name, found_name = np.dtype(asked).name, np.dtype(found).name
    lines = _layer_asked(f"dtype {asked_name}", layer)
    from_input = layer.dtype is not None and layer.dtype == np.dtype(asked)
    cast = f"cast the input to {found_name} (x.astype(jnp.{found_name}))"
    if passed is not None:
        lines += f"  found: dtype {found_name} in the {passed} passed to apply\n"
        if not from_input:
            return lines + _stale_fix(passed)
        return lines + (
            f"  note: a layer makes its parameters in its input's dtype: the {passed} were made for "
            f"{found_name} inputs\n"
            f"  fix: {cast} as init's, or cast the {passed} to {asked_name} to run in {asked_name} "
            f"(jax.tree.map(lambda p: p.astype(jnp.{asked_name}), {passed})).")
    lines += f"  found: created at {format_site(site)}\n"
    if not from_input:
        return lines + (
            f"  fix: to share '{full}', call the layer as the call that made it (on inputs of its "
            f"dtype); {_FIX_SEPARATE}.")
    return lines + (
        f"  note: a layer makes its parameters in its input's dtype: '{full}' was made for a "
        f"{found_name} input\n"
        f"  fix: to share '{full}', {cast}; {_FIX_SEPARATE}.")


def _stale_fix(passed: str) -> str:
    """The fix for a value in apply's ``passed`` argument that the model's request does not fit: a
    change to the request (shape=None, dtype=) would pass apply and fail that program's init."""
    do = "do" if passed == "params" else "does"
    return (f"  fix: the {passed} {do} not match the model: pass the {passed} this model's init "
            "returned (re-run init after changing the model), or convert the stored value.")


def _asked_init(shape: Optional[Tuple], dtype: Any, full: str) -> str:
    """A new parameter's request, for an initializer's error: its shape, dtype and line."""
    try:
        shown = np.dtype(jax.dtypes.canonicalize_dtype(_as_dtype(dtype, full))).name
    except TypeError:
        shown = repr(dtype)
    return f"shape {_shape_str(shape)}, dtype {shown}, at {format_site(user_site())}"


def _init_error(full, message, fix) -> InitializerError:
    return InitializerError(f"{message} (parameter '{full}').\n  fix: {fix}")


_CONST_SHAPE_FIX = "drop shape= (the constant's shape is used), or pass a callable initializer."


def _shapeless_init_error(full: str) -> InitializerError:
    return _init_error(
        full, "The initializer passed is not valid. It should be a callable with no "
        "arguments and the shape should not be provided or an initializer called as "
        "init(key, shape, dtype) and `shape` should be fully defined",
        "pass shape=..., or a constant / no-argument initializer that fixes it.")


def _undefined_shape_error(full: str, shape: Optional[Tuple]) -> InitializerError:
    return _init_error(
        full, f"Shape of a new variable ({full}) must be fully defined, but instead was "
        f"{_shape_str(shape)}", "pass a complete shape=..., or a constant initializer.")


def _default_initializer(full: str, dtype: np.dtype) -> Callable:
    """The initializer of a new parameter of ``dtype`` given none (Glorot for floats, zeros for
    integers and bools), or the error for a dtype that has none."""
    init = default_initializer(dtype)
    if init is None:
        raise _init_error(full, f"An initializer for variable {full} of {dtype} is required",
                          "pass init=... (e.g. sp.initializers.zeros).")
    return init


def _regularizer_error(full: str, regularizer: Any) -> TypeError:
    return TypeError(
        f"The regularizer of '{full}' must be a callable, got {type(regularizer).__name__} "
        f"{regularizer!r} (sp.regularization_loss() would call it on the parameter).\n"
        "  fix: pass a function of the parameter's value, e.g. "
        f"regularizer=sp.l2_regularizer({regularizer!r}) if {regularizer!r} is its scale, or "
        "lambda w: 0.01 * jnp.sum(w ** 2).")


def _created_without_shape(full: str, init: Any, dtype: Any) -> Tuple[Tuple, np.dtype]:
    """What init creates for a request with neither a shape nor a constant: (shape, dtype) of the
    value of ``init``, a no-argument initializer (from ``jax.eval_shape``: not computed), or
    init's error. ``apply`` checks the parameter it finds against them."""
    init = _instantiate(init)
    if init is None:
        _default_initializer(full, jax.dtypes.canonicalize_dtype(_as_dtype(dtype, full)))
        raise _undefined_shape_error(full, None)
    if not _takes_no_args(init):
        raise _shapeless_init_error(full)
    found = []

    def value_of_init():
        value = _tf_constant(full, init())
        found.append((tuple(np.shape(value)), _constant_init_dtype(full, value)))

    jax.eval_shape(value_of_init)
    return found[0]


def _dtype_as_init(full: str, init: Any) -> Optional[TypeError]:
    """The error for a dtype given where ``init`` goes, as TF's ``get_variable(name, shape, dtype)``
    order puts it (None when ``init`` is no dtype)."""
    if isinstance(init, str):
        try:
            np.dtype(init)
        except TypeError:
            return None
    elif not (isinstance(init, (np.dtype, _SCALAR_TYPE)) or (
            isinstance(init, type) and issubclass(init, np.generic))
            or getattr(init, "as_numpy_dtype", None) is not None):  # TF's tf.float32
        return None
    if isinstance(init, str):
        shown = repr(init)
    elif getattr(init, "as_numpy_dtype", None) is not None:
        shown = f"tf.{as_np_dtype(init).name}"
    elif isinstance(init, np.dtype):
        shown = f"np.{init.name}"
    else:  # a scalar type: jnp.float32's kind, or NumPy's
        shown = f"{'jnp' if isinstance(init, _SCALAR_TYPE) else 'np'}.{init.__name__}"
    return TypeError(
        f"get_param's third argument is init, and '{full}' got the dtype {shown} there: TF's "
        "get_variable(name, shape, dtype) order.\n"
        f"  fix: pass it by keyword, dtype={shown}; the order here is (name, shape, init, dtype).")


# --- the two stores -------------------------------------------------------------------------------


class InitStore:
    """During ``init``/``specs``: record each new name's spec and hand out abstract placeholders."""

    __slots__ = ("specs", "values", "prefixes", "pools", "root", "arg_names", "written", "nested")

    def __init__(self):
        self.specs: Dict[str, ParamSpec] = {}
        self.values: Dict[str, Any] = {}
        # state name -> the value sp.set_state gave last: init keeps none, but sp.remat finds what
        # its function set by it, to refuse in init what apply refuses (_layer_stack._state_values)
        self.written: Dict[str, Any] = {}
        self.prefixes: set = set()
        self.pools: Dict[Tuple, list] = {}  # (shape, dtype) -> [trace state, placeholders, size]
        # The trace of init's own jaxpr (see _placeholder), and the names of the parameters whose
        # placeholders are its extra inputs, in order.
        self.root: Any = None
        self.arg_names: List[str] = []
        # The names whose placeholders were made in a nested trace (the function of an sp.scan,
        # sp.cond, ...), in order: dropped from ``values`` as that function returns
        # (``drop_nested``), so that no tracer of a finished trace stays in the store (JAX's
        # checking_leaks would find it); a later request outside gets a placeholder of its own.
        self.nested: List[str] = []

    def begin(self) -> None:
        """Called as init's trace starts: placeholders made at its top level become its inputs."""
        self.root = root_trace()

    def get(self, frame, full, shape, dtype, init, regularizer, reuse, trainable, collections,
            partitioner, sharding, kind, constraint=None):
        spec = self.specs.get(full)
        shape = _as_shape(shape, full, spec is not None)
        constant = init is not None and not callable(init)
        if constant and shape is not None:
            raise _constant_with_shape_error(full, init)
        if spec is not None:
            if reuse is False:
                raise _exists_error(frame, full, spec.site, spec.shape, spec.dtype)
            if shape is not None and not _compatible(shape, spec.shape):
                raise _shape_error(full, shape, spec.shape, spec.site)
            if spec.dtype is not dtype and not _same_dtype(spec.dtype, dtype):
                raise _dtype_error(full, dtype, spec.dtype, spec.site, None, init)
            if spec.kind != kind:
                raise _kind_error(full, spec.kind, kind)
            if reuse is AUTO_REUSE and _LOG.isEnabledFor(logging.DEBUG):
                here = user_site()
                if here != spec.site:
                    _LOG.debug("sp.AUTO_REUSE shares '%s', created at %s, with the request at %s",
                               full, format_site(spec.site), format_site(here))
            return self.value(full)
        if reuse is True:
            raise _not_found_error(frame, full, self.specs, in_apply=False)
        return self._create(frame, full, shape, dtype, init, regularizer, trainable, collections,
                            partitioner, sharding, kind, constant, constraint)

    def _create(self, frame, full, shape, dtype, init, regularizer, trainable, collections,
                partitioner, sharding, kind, constant, constraint):
        tf_scope = open_tf_variable_scope()  # a port's leftover tf.variable_scope (free without TF)
        if tf_scope is not None:
            raise tf_variable_scope_error(full, tf_scope)
        init = _instantiate(init)  # sp.initializers.zeros_initializer, uncalled, as TF allows
        if init is not None and not constant and shape is None:
            if _initializers._is_tf_class(init):  # tf.zeros_initializer, uncalled (TF's convention)
                raise _initializers._tf_class_error(full, _asked_init(shape, dtype, full), init, True)
            if not _takes_no_args(init):
                raise _shapeless_init_error(full)
            init, constant = init(), True
        elif init is not None and not constant and not _callable_with_three_args(init):
            if _initializers._is_tf_class(init):  # tf.zeros_initializer, uncalled (TF's convention)
                raise _initializers._tf_class_error(full, _asked_init(shape, dtype, full), init)
            dtype_error = _dtype_as_init(full, init)
            if dtype_error is not None:
                raise dtype_error
            from ._materialize import _tf1_convention  # an error path: imported when needed
            if _tf1_convention(init):  # Keras's __call__(shape, dtype=None, **kwargs), my_init(shape)
                raise _initializers._keras_convention_error(full, _shape_str(shape), init)
            # TF raises TypeError here too, but from deep inside the initializer call, nameless.
            fix = ("drop shape= if it is a no-argument initializer returning the value, or pass an "
                   "initializer taking (key, shape, dtype), e.g. jax.nn.initializers.normal().")
            if _makes_initializers(init):  # a factory passed uncalled (ours are called above)
                fix = (f"if it makes initializers, call it: init={getattr(init, '__name__', 'make_init')}"
                       "() (TF 1.x accepted an initializer class and instantiated it); else " + fix)
            raise TypeError(
                f"The initializer of '{full}' cannot be called as init(key, shape, dtype).\n"
                f"  asked: shape={_shape_str(shape)} with initializer {init!r}\n"
                f"  fix: {fix}")
        if constant:
            init = _tf_constant(full, init)
            dtype = _constant_init_dtype(full, init)
            value = init if isinstance(init, jax.Array) or _is_tracer(init) else np.asarray(init)
            shape = tuple(value.shape)
            if isinstance(value, np.ndarray):
                init = value = value.astype(dtype)
            else:
                init = value
            placeholder = jnp.asarray(value)
        else:
            dtype = jax.dtypes.canonicalize_dtype(_as_dtype(dtype, full))
            if init is None:
                init = _default_initializer(full, dtype)
            if shape is None or any(d is None for d in shape):
                raise _undefined_shape_error(full, shape)
            placeholder = self._placeholder(full, shape, dtype)
        if constraint is not None:
            if not callable(constraint):
                raise ValueError(
                    f"The `constraint` argument must be a callable ('{full}'), got {constraint!r}.\n"
                    "  fix: pass a function from the parameter's value to its projected value, e.g. "
                    "lambda w: jnp.clip(w, -1.0, 1.0).")
            # tf.keras.constraints.MaxNorm(...): refused here, where get_param's, the scope's and
            # the layers' constraints all arrive, not when sp.apply_constraints runs it on a tracer.
            from .constraints import _tensorflow_error as _tf_constraint_error
            tf_error = _tf_constraint_error(full, constraint)
            if tf_error is not None:
                raise tf_error
        if regularizer is not None:
            if not callable(regularizer):
                raise _regularizer_error(full, regularizer)
            # A stock regularizer (marked: a user's is never run here) of a non-floating parameter:
            # TF's get_variable raises TypeError converting the scale to the parameter's dtype.
            if getattr(regularizer, "floating_only", None) is not None and not _is_floating(dtype):
                raise _non_floating_error(regularizer, dtype, full)
        if collections is not None and not isinstance(collections, (list, tuple, set, frozenset)):
            # TF's Variable constructor raises too: a string would be read as its characters.
            raise ValueError(
                f"collections for '{full}' must be a list, tuple or set of collection names, got "
                f"{collections!r} of type {type(collections).__name__}.\n"
                f"  fix: collections=[{collections!r}].")
        if partitioner is not None and len(shape) > _layer_axes(partitioner):
            # As TF's true getter: a scalar's partitioner is never called (nor, in sp.layer_stack,
            # that of a parameter that is a scalar per layer).
            check_partitioner(partitioner, lambda: f"parameter '{full}'")
        if isinstance(sharding, str):  # sp.shardings would refuse it (a TypeError) only later
            raise TypeError(
                f"The sharding of '{full}' is str {sharding!r}, not a PartitionSpec or a "
                "jax.sharding.Sharding: a mesh axis name is one entry of a PartitionSpec.\n"
                f"  fix: sharding=jax.sharding.PartitionSpec({sharding!r}) shards dimension 0 over mesh "
                f"axis {sharding!r} (one entry per dimension: PartitionSpec(None, {sharding!r}) shards "
                "dimension 1).")
        # Last, as in TF, which validates the name as an op name only when it creates the variable.
        self._check_name(full)
        site = user_site()
        self.specs[full] = new_spec(
            name=full, shape=shape, dtype=np.dtype(dtype), init=init,
            # TF: trainable=None is the default, True (a scope's trainable=False was applied before).
            trainable=(trainable is None or bool(trainable)) and kind == PARAM,
            collections=tuple(collections) if collections else (), regularizer=regularizer,
            sharding=sharding, partitioner=partitioner, kind=kind, site=site, constraint=constraint)
        self.values[full] = placeholder
        if regularizer is not None:
            frame.regularized.append((regularizer, placeholder))
        return placeholder

    def _placeholder(self, full: str, shape: Tuple, dtype: np.dtype) -> jax.Array:
        """A fresh abstract value of ``shape``/``dtype`` for the new parameter ``full``.

        At the top level of init's trace it is a new input of the traced jaxpr, which stages no op
        (a staged zeros was ~50 us of tracing; a 20-layer MLP whose parameters all have different
        shapes traced in ~18 ms with them, ~15 ms without), and which an initializer computed from
        it is seen to depend on (see ``resolve_traced_constants``). Inside a nested trace (a
        ``lax.cond`` branch, a ``scan`` body) it is a staged zeros of that trace. Those are pooled:
        one ``lax.split`` stages up to 256 distinct placeholders of one shape at once, ~2 us each.
        A pool is only used in the trace it was made in.
        """
        root = self.root
        if root is not None and _jax_core.trace_ctx.trace is root:
            try:
                placeholder = root.new_arg(_aval(shape, dtype), _NO_SOURCE)
            except Exception:  # noqa: BLE001 - JAX's internals moved: staged zeros from now on
                self.root = None
            else:
                self.arg_names.append(full)
                return placeholder
        self.nested.append(full)
        if not shape or not shape[0] or _split is None:
            return _zeros(shape, dtype)
        trace = _trace_state()
        pool = self.pools.get((shape, dtype))
        if pool is None or pool[0] != trace or not pool[1]:
            # grow as the shape recurs in one trace; a new trace (each sp.remat, sp.cond, scan or
            # stack body) starts small again, or every body would stage a 256-way split for one
            size = 1 if pool is None or pool[0] != trace else min(2 * pool[2], 256)
            stacked = _zeros((size * shape[0],) + shape[1:], dtype)
            parts = list(_split(stacked, [shape[0]] * size)) if size > 1 else [stacked]
            pool = self.pools[(shape, dtype)] = [trace, parts[::-1], size]
        return pool[1].pop()

    def value(self, full: str) -> Any:
        """The placeholder handed out for ``full`` (``None`` if it was never made). One made in a
        nested trace that has ended (``drop_nested``) is made again, in the trace now running."""
        value = self.values.get(full)
        if value is None:
            spec = self.specs.get(full)
            if spec is not None:
                value = self.values[full] = self._placeholder(full, spec.shape, spec.dtype)
        return value

    def drop_nested(self, mark: int, trace: Any) -> set:
        """As the function of an sp.scan, sp.cond, ... returns, still in ``trace`` (JAX's trace of
        it): drop the placeholders made in it since ``len(self.nested)`` was ``mark``; returns
        their ids."""
        nested, values = self.nested, self.values
        dropped = set()
        for full in nested[mark:]:
            value = values.get(full)
            if isinstance(value, jax.core.Tracer) and value._trace is trace:
                dropped.add(id(values.pop(full)))
        del nested[mark:]
        # and the pools made in it: the placeholders staged but not handed out
        for pool_key in [k for k, (_, parts, _) in self.pools.items()
                         if parts and getattr(parts[0], "_trace", None) is trace]:
            del self.pools[pool_key]
        return dropped

    def _check_name(self, full: str) -> None:
        if _VALID_FULL_NAME.match(full) is None or "//" in full or full.endswith("/"):
            tensor = re.search(r":\d+$", full)  # TF's tensor name of the variable ('w:0')
            raise InvalidNameError(
                f"'{full}' is not a valid parameter name"
                + (f" ('{tensor.group()}' ends TF's name of a variable's tensor, not its own)"
                   if tensor else "") + ".\n"
                "  fix: " + (f"drop '{tensor.group()}' and ask for '{full[:tensor.start()]}'."
                             if tensor else
                             "use letters, digits and . _ - > with '/' only between non-empty "
                             "components (a name at the root cannot start with '_' or '-').")
            )
        if full in self.prefixes:
            inner = next(n for n in self.specs if n.startswith(full + "/"))
            raise NameCollisionError(
                f"'{full}' cannot be a parameter: it is already a scope holding '{inner}', and the params "
                "tree cannot hold a leaf and a sub-tree under one key.\n"
                "  fix: rename the parameter or the scope."
            )
        # Its scope prefixes, longest first, down to one known already: that one's were checked and
        # added when it was (each prefix is added with all of its own), so a name costs its new
        # prefixes only, not its depth.
        prefixes, specs = self.prefixes, self.specs
        new = []
        end = full.rfind("/")
        while end > 0:
            prefix = full[:end]
            if prefix in prefixes:
                break
            if prefix in specs:  # (at most one prefix is: a parameter's name is no other's prefix)
                raise NameCollisionError(
                    f"'{full}' cannot be created: '{prefix}' is already a parameter, so it cannot also be "
                    "a scope, and the params tree cannot hold a leaf and a sub-tree under one key.\n"
                    "  fix: rename the parameter or the scope."
                )
            new.append(prefix)
            end = full.rfind("/", 0, end)
        prefixes.update(new)

    def set_state(self, frame, full, value):
        spec = self.specs.get(full)
        if spec is None or spec.kind != STATE:
            raise _undeclared_state(full) if spec is None else _parameter_not_state(full)
        self.written[full] = _check_state_value(full, value, spec.shape, spec.dtype)


class ApplyStore:
    """During ``apply``: look names up in ``params``/``state`` and replay init's reuse rules."""

    __slots__ = ("tree", "_flat", "state", "created", "scanned", "_names")
    # Set when first needed, not by every apply: the ids of the wide sub-dicts of tree found to
    # spell no full name (_scope._sub_values), and the sorted names (values_under).
    scanned: set
    _names: List[str]

    def __init__(self, tree: Dict[str, Any], state: Dict[str, Any]):
        # The nested params as given. Scopes hold the sub-dict at their path (``Scope._values``), so
        # a common request is two small lookups; the flat view is built only for the others.
        self.tree = tree
        self._flat: Optional[Dict[str, Any]] = None
        try:  # a full name as one top-level key ({**params, **sp.flatten(loaded)}): see flat_view
            for key in tree:
                if "/" in key:
                    self.flat_view()
                    break
        except TypeError:  # a key that is not a str (refused by the flat view, if it is built)
            if any(isinstance(key, str) and "/" in key for key in tree):
                self.flat_view()
        self.state = state
        # full name -> site of its first (creating) request, (file, line) or (code, offset): format_site
        self.created: Dict[str, Any] = {}

    def values_under(self, prefix: str) -> Dict[str, Any]:
        """The current value of every parameter and state entry under ``prefix`` (state's where a
        name is in both), by a bisection of the names sorted once per call: an ``sp.layer_stack``
        asks once per stack, and a scan of every name each time made many stacks quadratic."""
        try:
            names = self._names
        except AttributeError:  # the first stack of the call (state's names never change in one)
            names = self._names = sorted(self.params.keys() | self.state.keys())
        params, state, found = self.params, self.state, {}
        for name in itertools.islice(names, bisect.bisect_left(names, prefix), None):
            if not name.startswith(prefix):
                break
            found[name] = state[name] if name in state else params[name]
        return found

    def flat_view(self) -> None:
        """The flat view, built when a top-level key holds a full name ({**params,
        **sp.flatten(loaded)}): the nested lookup would neither see it nor see that nested dicts
        spell it too, which the flat view refuses as sp.flatten does (each apply call loops over
        the top-level keys; a scope entered looks at the keys of its own sub-dict, see
        ``_scope._sub_values``)."""
        if self._flat is not None:
            return
        try:
            self._flat = flatten(self.tree)
        except NameCollisionError as error:
            name = getattr(error, "name", None)
            if name is None:
                raise
            raise given_twice_error(name, "/", "in the params passed to apply", "params") from None

    @property
    def params(self) -> Dict[str, Any]:
        """Full name -> array: the flat view of ``tree``, built on first use."""
        flat = self._flat
        if flat is None:
            flat = self._flat = flatten(self.tree)
        return flat

    def get(self, frame, full, shape, dtype, init, regularizer, reuse, trainable, collections,
            partitioner, sharding, kind, constraint=None):
        constant = init is not None and not callable(init)
        if constant and shape is not None:
            raise _constant_with_shape_error(full, init)
        table = self.params if kind is PARAM else self.state
        value = table.get(full)
        if value is None:
            in_apply = reuse is not True or full in self.created
            if in_apply and full in table:  # the key is there, holding None
                raise _leaf_type_error(full, None, kind)
            if full in (self.state if kind is PARAM else self.params):
                raise _swapped_error(full, kind)
            raise _not_found_error(frame, full, table, in_apply=in_apply, kind=kind)
        try:
            aval = value.aval  # jax arrays and tracers: shape and dtype without two property calls
        except AttributeError:  # not a jax array or tracer
            if not (hasattr(value, "shape") and hasattr(value, "dtype")):
                raise _leaf_type_error(full, value, kind) from None  # eagerly: jit would make it an array
            # NumPy: checked as found (aval), handed out as the jax.Array jit would make of it.
            aval, value = value, _as_jax_leaf(value, full, kind)
        created = self.created
        if reuse is True or (reuse is AUTO_REUSE and full in created):
            if full not in created:
                raise _not_found_error(frame, full, created, in_apply=False, kind=kind)
            passed = None  # the value was handed out to an earlier request of this call
            site = created[full]
        else:
            passed = kind  # the value is the params' (or state's) own: nothing in this call made it
            if full in created:
                raise _exists_error(frame, full, created[full], aval.shape, aval.dtype)
            # The creation site, for "already exists" errors: user_site, with its common case (the
            # caller of get_param is user code) inline and recorded as (code, bytecode offset),
            # which format_site turns into a line only when an error shows it. Depth 2 skips this
            # frame and get_param (or a store or _request: ours either way). Recorded in `created`
            # only once every check below has passed: a refused request creates nothing, as in
            # init (a model that catches the error and asks again creates it then).
            f = _getframe(2)
            code = f.f_code
            site = (code, f.f_lasti) if _IS_USER_FILE.get(code.co_filename) else user_code_site(3)
            if regularizer is not None and not callable(regularizer):
                raise _regularizer_error(full, regularizer)
            # A creating request is checked against what init would have created.
            if constant:
                init = _tf_constant(full, init)
                shape, dtype = np.shape(init), _constant_init_dtype(full, init)
            elif shape is None:  # a no-argument initializer fixes shape and dtype in init
                shape, dtype = _created_without_shape(full, init, dtype)
        if shape is not None:
            try:
                if type(shape) is not tuple or shape != aval.shape:  # (-1, 3) is an error, not a mismatch
                    shape = _as_shape(shape, full, passed is None)
            except _ConcretizationError:  # a JAX integer in the shape, compared in a jit trace
                shape = _as_shape(shape, full)
            if shape is not None and shape != aval.shape and not _compatible(shape, aval.shape):
                raise _shape_error(full, shape, aval.shape, site, _ARGUMENT.get(passed))
        if aval.dtype is not dtype and not _same_dtype(aval.dtype, dtype):
            converted = _canonical_numpy_leaf(aval, dtype)
            if converted is None:
                raise _dtype_error(full, dtype, aval.dtype, site, _ARGUMENT.get(passed), init)
            value = converted
        if passed is not None:  # created by this request
            created[full] = site
            if regularizer is not None:
                frame.regularized.append((regularizer, value))
        return value

    def set_state(self, frame, full, value):
        old = self.state.get(full)
        if old is None or full not in self.created:
            raise _parameter_not_state(full) if full in self.params else _undeclared_state(full)
        self.state[full] = _check_state_value(full, value, old.shape, old.dtype)


def _is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


try:  # lax.split and the opaque trace state arrived in jax 0.4.36; without them: no pooling.
    from jax.extend.core import get_opaque_trace_state as _get_trace_state
    _split = jax.lax.split

    def _trace_state():
        return _get_trace_state(convention="flax")
except (ImportError, AttributeError):  # pragma: no cover - older jax
    _split = None  # type: ignore[assignment]


try:  # a new input of the jaxpr being traced: JAX-internal, used where present (see _placeholder)
    from jax._src import config as _jax_config
    from jax._src import core as _jax_core
    from jax._src import source_info_util as _source_info_util
    from jax._src.interpreters.partial_eval import DynamicJaxprTrace as _DynamicJaxprTrace
    from jax._src.mesh import get_abstract_mesh as _abstract_mesh
    _NO_SOURCE = _source_info_util.new_source_info()
    _jax_core.trace_ctx.trace  # noqa: B018 - present in this JAX?
    _CHECKS = _jax_config.enable_checks
except (ImportError, AttributeError):  # pragma: no cover - another JAX
    _DynamicJaxprTrace = None  # type: ignore[assignment,misc]


# (shape, dtype, the abstract mesh in context) -> JAX's ShapedArray of that shape and dtype, which
# JAX interns: building one costs ~2 us (shape canonicalized, a sharding made, the interning), a
# lookup ~0.15 us, and init makes one per parameter. The mesh is in the key in case a JAX derives
# the aval's sharding from it. Bounded.
_AVALS: Dict[tuple, Any] = {}
_AVALS_MAX = 4096


def _aval(shape: Tuple[int, ...], dtype: np.dtype) -> Any:
    key = (shape, dtype, _abstract_mesh())
    aval = _AVALS.get(key)
    if aval is None:
        if len(_AVALS) >= _AVALS_MAX:
            _AVALS.clear()
        aval = _AVALS[key] = _jax_core.ShapedArray(shape, dtype)
    return aval


def root_trace() -> Any:
    """The trace now running if a placeholder can be a new input of its jaxpr, else None.

    Not with ``jax_enable_checks``, which checks a jaxpr's inputs against its arguments' names."""
    if _DynamicJaxprTrace is None or _CHECKS.value:
        return None
    trace = _jax_core.trace_ctx.trace
    return trace if type(trace) is _DynamicJaxprTrace else None


def _zeros(shape: Tuple, dtype: Any) -> jax.Array:
    """The abstract placeholder init hands out: the op ``jnp.zeros`` stages, for a third of its Python
    cost (an init with thousands of parameters spent a third of its trace here)."""
    if isinstance(dtype, np.dtype):
        return jax.lax.broadcast_in_dim(np.zeros((), dtype), shape, ())
    return jnp.zeros(shape, dtype)


def _kind_error(full, found, asked) -> ValueError:
    return ParamExistsError(
        f"'{full}' is a {found} but was requested as a {asked}.\n"
        f"  fix: use sp.get_{found}('{full.rsplit('/', 1)[-1]}') for it, or give the {asked} another name."
    )


def _undeclared_state(full: str) -> StateError:
    return StateError(
        f"sp.set_state: state '{full}' was not declared in this call.\n"
        f"  fix: call sp.get_state('{full.rsplit('/', 1)[-1]}', shape, init) in the same scope first; "
        "it fixes the state's shape, dtype and initial value."
    )


def _parameter_not_state(full: str) -> StateError:
    scope, _, name = full.rpartition("/")
    return StateError(
        f"sp.set_state: '{full}' is a parameter (made by sp.get_param), not state: a model never "
        "writes its parameters; they change only through the params passed to apply (an "
        "optimizer's update).\n"
        f"  asked: sp.set_state('{name}', value) "
        + (f"in scope '{scope}'" if scope else "in the root scope") + "\n"
        "  fix: keep a value the model updates from call to call (a running statistic) as state "
        "under a name of its own (state and parameters share one namespace): sp.get_state(name, "
        "shape, init), then sp.set_state(name, value); if the parameter should be updated, return "
        "the new value and update params outside apply."
    )


def _check_state_value(full: str, value: Any, shape, dtype) -> Any:
    """The new ``value`` of the state ``full`` as it is stored, or the error for a value that does
    not keep the state's ``shape`` and ``dtype``. A Python number or NumPy scalar is converted to a
    (strongly typed) array of ``dtype`` as TF's ``tf.assign`` converts it, if that loses nothing;
    a weakly typed JAX array becomes strongly typed: either would change the dtype the next call
    computes in."""
    if isinstance(value, _NUMBERS):
        return _state_number(full, value, shape, dtype)
    try:
        vshape, vdtype = tuple(np.shape(value)), _constant_dtype(value)
    except ValueError:  # JAX's for an extended dtype: a PRNG key array
        if not jax.dtypes.issubdtype(getattr(value, "dtype", None), jax.dtypes.extended):
            raise
        raise DtypeMismatchError(
            f"sp.set_state: the new value of state '{full}' is a PRNG key array ({value.dtype}); state "
            f"'{full}' holds shape {_shape_str(tuple(shape))} dtype {_dtype_name(dtype)}.\n"
            f"  fix: store its key data, sp.set_state('{full}', jax.random.key_data(key)) (declare the "
            "state with that shape and uint32 dtype), and rebuild the key with "
            "jax.random.wrap_key_data where it is read.") from None
    if vshape != tuple(shape) or vdtype != dtype:
        # A NumPy state leaf in apply (float64, say) holds what jax.jit reads of it (float32).
        dtype = jax.dtypes.canonicalize_dtype(dtype)
        if vshape == tuple(shape) and vdtype == dtype:
            return value
        if np.dtype(vdtype).kind in "OSU":  # a string, None, a dict: no array at all
            raise TypeError(
                f"sp.set_state: the new value of state '{full}' is {type(value).__name__} "
                f"{value!r:.60}, not an array.\n"
                f"  asked: a value of shape {_shape_str(tuple(shape))} dtype {np.dtype(dtype).name} "
                f"for '{full}'\n"
                f"  fix: pass an array (or number) of that shape and dtype, e.g. jnp.asarray(value, "
                f"jnp.{np.dtype(dtype).name}).")
        raise (ShapeMismatchError if vshape != tuple(shape) else DtypeMismatchError)(
            f"sp.set_state: state '{full}' holds shape {_shape_str(tuple(shape))} dtype "
            f"{np.dtype(dtype).name}, but the new value has shape {_shape_str(vshape)} dtype "
            f"{np.dtype(vdtype).name}.\n  fix: cast/reshape the value to the declared shape and dtype."
        )
    if getattr(getattr(value, "aval", None), "weak_type", False):
        return jax.lax.convert_element_type(value, dtype)
    return value


# A number set_state converts to the state's dtype (np.generic: NumPy scalars, strings included),
# and the kind (see _number_kind) of a Python number.
_NUMBERS = (bool, int, float, complex, np.generic)
_PYTHON_KINDS = {bool: 0, int: 1, float: 2, complex: 3}


def _number_kind(dtype: Any) -> int:
    """0 bool, 1 integer, 2 floating, 3 complex (the order TF converts a Python number along);
    4 for any other dtype."""
    for kind, family in enumerate((np.bool_, jnp.integer, jnp.floating, jnp.complexfloating)):
        if jnp.issubdtype(dtype, family):
            return kind
    return 4


def _state_number(full: str, value: Any, shape, dtype) -> jax.Array:
    """``set_state(full, value)`` with a Python number or NumPy scalar: an array of the state's
    dtype, as TF's ``tf.assign(v, 3)`` gives ``3.0`` for a float32 ``v``, or the error for a number
    of a kind the dtype does not hold (2.5 for an integer state), or out of its range."""
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    kind = _number_kind(value.dtype) if isinstance(value, np.generic) else _PYTHON_KINDS[type(value)]
    if kind == 4:  # a NumPy string or the like: no number
        return _check_state_value(full, np.asarray(value), shape, dtype)
    name = np.dtype(dtype).name
    if tuple(shape) != ():
        raise ShapeMismatchError(
            f"sp.set_state: state '{full}' holds shape {_shape_str(tuple(shape))} dtype {name}, but "
            f"the new value is {type(value).__name__} {value!r}, a scalar.\n"
            f"  fix: pass an array of that shape, e.g. jnp.full({tuple(shape)}, value, jnp.{name}).")
    head = (f"sp.set_state: state '{full}' holds dtype {name}, but the new value is "
            f"{type(value).__name__} {value!r}")
    if kind > _number_kind(dtype):
        raise DtypeMismatchError(
            f"{head}, which {name} cannot hold without losing part of it (TF refuses it too).\n"
            f"  fix: convert it as you mean it, e.g. jnp.asarray(round(value), jnp.{name}).")
    if kind == 1 and jnp.issubdtype(dtype, jnp.integer):
        info = np.iinfo(dtype)
        lost = not info.min <= value <= info.max  # TF wraps it around
    else:
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                converted = np.asarray(value).astype(dtype)
            lost = not np.isfinite(converted) and cmath.isfinite(value)
        except OverflowError:  # a Python int past any float's range
            lost = True
    if lost:
        raise DtypeMismatchError(
            f"{head}, out of the range of {name}.\n"
            "  fix: pass a value the dtype holds, or declare the state with a wider dtype.")
    return jnp.asarray(value, dtype)
