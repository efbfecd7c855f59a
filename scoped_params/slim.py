"""TF-slim (``tf_slim``, once ``tf.contrib.slim``) on scoped_params: the layers, ``arg_scope`` and
end points that TF 1.x's model zoo (VGG, ResNet, Inception, MobileNet) is written in, with slim's
arguments, defaults and variable names, so a slim model ports line by line and its checkpoint loads
with ``sp.checkpoint.load_tf1``.

>>> slim = sp.slim
>>> def net(images, is_training=False):
...     with slim.arg_scope([slim.conv2d, slim.fully_connected],
...                         weights_regularizer=slim.l2_regularizer(5e-4)):
...         with sp.scope("vgg_a") as sc:
...             x = slim.repeat(images, 2, slim.conv2d, 64, [3, 3], scope="conv1")
...             x = slim.max_pool2d(x, [2, 2], scope="pool1")
...             x = slim.flatten(x)
...             return slim.fully_connected(x, 10, activation_fn=None, scope="fc8")

The parameters are ``vgg_a/conv1/conv1_1/weights``, ``vgg_a/conv1/conv1_1/biases``, ...,
``vgg_a/fc8/weights`` (slim's ``weights``/``biases``, not the core layers' ``kernel``/``bias``).

Slim's defaults hold: ``conv2d`` and ``fully_connected`` apply ``relu`` and Xavier (Glorot-uniform)
weights unless told otherwise, ``conv2d`` pads ``'SAME'``, the pools stride 2 with ``'VALID'``,
``batch_norm`` has no ``gamma`` (``scale=False``), decay 0.999, and ``batch_norm`` and ``dropout``
default to training (``is_training=True``: the moving statistics are state, so the model needs
``sp.transform_with_state``; dropout needs ``rng=``). Pass ``is_training=False`` for evaluation.

``arg_scope`` defaults are read when a layer is called, from a context variable: open them inside
the model function (or around ``init``/``apply``), and note that a ``jax.jit`` trace keeps the
defaults it was traced with. ``outputs_collections`` work per ``init``/``apply`` call:
``slim.utils.convert_collection_to_dict(name)`` returns this call's end points. An end point made
inside an ``sp.scan`` (``sp.cond``, ...), an ``sp.layer_stack`` block or a ``jax.vmap`` in the
model is a ``NestedTraceError``, as ``sp.record`` there is: a value made there cannot leave it.

A layer's ``weights_regularizer`` (``biases_regularizer``, ``param_regularizers``) adds its term
to the enclosing scope's ``regularizer=`` where tf_slim builds the layer from ``tf.layers``:
``fully_connected``, the convolutions, ``separable_conv2d`` with ``num_outputs``, and
``batch_norm`` with the default ``updates_collections`` (unless slim's fused kernel takes a 2-D
input). It replaces the scope's where slim makes the variable itself with ``model_variable``:
``bias_add``, the depthwise-only ``separable_conv2d`` and the other ``batch_norm`` paths, as in TF.
"""

from __future__ import annotations

import contextvars
import difflib
import functools
import inspect
import types
import weakref
from collections import OrderedDict
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from . import _frame, layers
from ._params import ApplyStore, InitStore, get_param
from ._errors import NestedTraceError, ReuseArgumentError, ScopeNestingError
from ._regularizers import l1_l2_regularizer, l1_regularizer, l2_regularizer, sum_regularizer
from ._scope import (_TRACE, Scope, _describe_reuse, default_name_scope, name_scope,
                     scope as _variable_scope)
from .initializers import (contrib_variance_scaling as variance_scaling_initializer,
                           ones, xavier_initializer, zeros)

__all__ = [
    "add_arg_scope", "apply_regularization", "arg_scope", "arg_scope_func_key",
    "arg_scoped_arguments", "avg_pool2d", "avg_pool3d", "batch_norm",
    "bias_add", "conv1d", "conv2d", "conv2d_transpose", "conv3d", "conv3d_transpose", "convolution",
    "convolution1d", "convolution2d", "convolution2d_transpose", "convolution3d",
    "convolution3d_transpose", "current_arg_scope", "dropout",
    "elu", "flatten", "fully_connected", "group_norm", "has_arg_scope", "instance_norm",
    "l1_l2_regularizer", "l1_regularizer", "l2_regularizer", "layer_norm",
    "linear", "max_pool2d", "max_pool3d", "maxout", "model_variable", "one_hot_encoding", "relu",
    "relu6", "repeat", "separable_conv2d", "separable_convolution2d", "softmax", "stack",
    "sum_regularizer", "unit_norm", "utils", "variable", "variance_scaling_initializer",
    "xavier_initializer", "xavier_initializer_conv2d",
]

IntOrPair = Union[int, Sequence[int]]

_XAVIER = xavier_initializer()
xavier_initializer_conv2d = xavier_initializer  # slim's alias
_MODEL_VARIABLES = "model_variables"  # tf.GraphKeys.MODEL_VARIABLES
# slim's model_variable puts a variable in GLOBAL_VARIABLES too (its variable's default, which an
# explicit collections= replaces): listed, so that partition_by_collection(..., "variables") finds it.
_MODEL = ("variables", _MODEL_VARIABLES)


# --- arg_scope ------------------------------------------------------------------------------------

# The innermost arg scope: {op key: {argument: default}}, never mutated once made.
_ARG_SCOPE: contextvars.ContextVar = contextvars.ContextVar("scoped_params_slim_arg_scope",
                                                           default={})
# op key (the decorated function) -> the keyword arguments arg_scope may set; weakly, so that a
# block decorated inside the model on each call (and what it closes over) dies with its wrapper.
_DECORATED: "weakref.WeakKeyDictionary[Any, Tuple[str, ...]]" = weakref.WeakKeyDictionary()
_DECORATED_STRONG: Dict[Any, Tuple[str, ...]] = {}  # those with no weak reference (a builtin)


def _decorated(op: Callable) -> Optional[Tuple[str, ...]]:
    """The arguments an arg_scope may set of ``op`` (decorated with add_arg_scope), else None."""
    key = _key(op)
    try:
        return _DECORATED.get(key)
    except TypeError:  # no weak reference to it
        return _DECORATED_STRONG.get(key)


def _key(op: Callable) -> Any:
    return getattr(op, "_key_op", op)


def current_arg_scope() -> Dict[Any, Dict[str, Any]]:
    """The innermost ``arg_scope``'s defaults, ``{op key: {argument: value}}``."""
    return _ARG_SCOPE.get()


def arg_scope_func_key(op: Callable) -> Any:
    """The key of ``op``'s defaults in an ``arg_scope`` dict (slim's, for the model zoo's
    ``sc[slim.arg_scope_func_key(slim.batch_norm)]``).

    >>> with sp.slim.arg_scope([sp.slim.batch_norm], decay=0.9) as sc:
    ...     pass
    >>> sc[sp.slim.arg_scope_func_key(sp.slim.batch_norm)]
    {'decay': 0.9}
    """
    return _key(op)


def has_arg_scope(op: Callable) -> bool:
    """Whether ``op`` was decorated with ``add_arg_scope``."""
    return _decorated(op) is not None


def arg_scoped_arguments(op: Callable) -> Tuple[str, ...]:
    """The arguments of ``op`` that an ``arg_scope`` may set (those with defaults)."""
    names = _decorated(op)
    if names is None:
        raise ValueError(f"{_op_name(op)} is not decorated with @slim.add_arg_scope.")
    return names


def _op_name(op: Callable) -> str:
    return getattr(op, "__qualname__", None) or repr(op)


def add_arg_scope(func: Callable) -> Callable:
    """Let ``arg_scope([func], name=value)`` set ``func``'s keyword defaults (slim's decorator).

    An argument given in the call wins over the arg scope's. An arg scope setting an argument
    ``func`` does not take, or one the call also passes positionally, is a ``TypeError`` at the
    call, naming both (TF fails there too, with Python's bare message).
    """
    parameters = inspect.signature(func).parameters
    positional = [n for n, p in parameters.items()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    accepted = frozenset(n for n, p in parameters.items()
                         if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    key = func

    @functools.wraps(func)
    def func_with_args(*args, **kwargs):
        defaults = _ARG_SCOPE.get().get(key)
        if defaults:
            _check_defaults(func, defaults, args, kwargs, positional, accepted, takes_any)
            kwargs = {**defaults, **kwargs}
        return func(*args, **kwargs)

    names = tuple(n for n, p in parameters.items() if p.default is not p.empty)
    try:
        _DECORATED[key] = names
    except TypeError:  # no weak reference to it
        _DECORATED_STRONG[key] = names
    func_with_args._key_op = key  # type: ignore[attr-defined]
    return func_with_args


def _check_defaults(func, defaults, args, kwargs, positional, accepted, takes_any) -> None:
    unknown = [] if takes_any else sorted(set(defaults) - accepted)
    if unknown:
        raise _unknown_defaults_error(func, unknown, accepted)
    twice = [n for n in positional[:len(args)] if n in defaults and n not in kwargs]
    if twice:
        raise TypeError(
            f"{func.__name__} got {', '.join(twice)} positionally and from an enclosing "
            "slim.arg_scope.\n  fix: pass it by keyword: a keyword argument overrides the arg_scope. "
            f"If another op called {func.__name__} (slim.conv2d calls slim.convolution), list that "
            "op in the arg_scope instead.")


def _unknown_defaults_error(func: Callable, unknown: Sequence[str],
                            accepted: frozenset) -> TypeError:
    """The refusal of arg_scope defaults ``unknown`` that ``func`` does not take: a misspelled
    argument gets its close match, another the advice to list ``func`` apart."""
    name = func.__name__
    aliases = [n for n, v in globals().items()
               if not n.startswith("_") and getattr(v, "_key_op", None) is func]
    short = min(aliases, key=len) if aliases else name
    shown = name if short == name else f"{name} (slim.{short})"  # slim.conv2d is convolution2d
    close = {k: difflib.get_close_matches(k, sorted(accepted), n=1) for k in unknown}
    fixes = [f"{match[0]}=" + (f" for {k}=" if len(unknown) > 1 else "")
             for k, match in close.items() if match]
    others = [k for k, match in close.items() if not match]
    fix = f"did you mean {', '.join(fixes)}? Correct the spelling in the arg_scope" if fixes else ""
    if others:
        without = (", ".join(k + "=" for k in others) if fixes else
                   "that argument" if len(others) == 1 else "those arguments")
        fix += ("; " if fix else "") + f"list {name} in a separate arg_scope without {without}"
    return TypeError(
        f"slim.arg_scope sets {', '.join(k + '=' for k in unknown)} for {shown}, which does not "
        f"take {'it' if len(unknown) == 1 else 'them'}.\n  fix: {fix}.")


class arg_scope:  # noqa: N801 - slim's name
    """``with slim.arg_scope([slim.conv2d, ...], padding="VALID", ...) as sc``: defaults for the
    keyword arguments of the listed ops (each decorated with ``add_arg_scope``), merged with the
    enclosing arg scope's. ``sc`` is the new defaults dict; ``slim.arg_scope(sc)`` enters it again
    (slim's ``def vgg_arg_scope(): with slim.arg_scope(...) as sc: return sc`` idiom)."""

    __slots__ = ("_scope", "_open")

    def __init__(self, list_ops_or_scope: Union[Sequence[Callable], Dict[Any, Dict[str, Any]]],
                 **kwargs: Any):
        if isinstance(list_ops_or_scope, dict):
            if kwargs:
                raise ValueError("slim.arg_scope(sc) re-enters a saved arg scope, so it takes no "
                                 f"other arguments (got {', '.join(k + '=' for k in kwargs)}).\n"
                                 "  fix: open a nested arg_scope for the extra defaults.")
            self._scope: Union[Dict[Any, Dict[str, Any]], Tuple[tuple, Dict[str, Any]]] = \
                dict(list_ops_or_scope)
        elif isinstance(list_ops_or_scope, (list, tuple)):
            for op in list_ops_or_scope:
                if not has_arg_scope(op):
                    raise ValueError(
                        f"slim.arg_scope: {_op_name(op)} is not decorated with "
                        "@slim.add_arg_scope, so it cannot take defaults from an arg_scope.\n"
                        "  fix: decorate it (@sp.slim.add_arg_scope) or pass its arguments directly.")
            self._scope = (tuple(list_ops_or_scope), kwargs)  # merged with the enclosing on entry
        else:
            raise TypeError("slim.arg_scope takes a list or tuple of ops, or a saved arg scope "
                            f"(dict), got {type(list_ops_or_scope).__name__}.")
        # (token, defaults set) per open entry, innermost last: one object may be entered again
        # inside itself (`with sc: with sc:`), and nests like two
        self._open: list = []

    def __enter__(self) -> Dict[Any, Dict[str, Any]]:
        if isinstance(self._scope, dict):
            new = dict(self._scope)
        else:
            ops, kwargs = self._scope
            new = dict(_ARG_SCOPE.get())
            for op in ops:
                key = _key(op)
                new[key] = {**new.get(key, {}), **kwargs}
        self._open.append((_ARG_SCOPE.set(new), new))
        return new

    def __exit__(self, *exc_info) -> None:
        if not self._open:
            raise ScopeNestingError("slim.arg_scope: __exit__ without __enter__.\n"
                                    "  fix: use the arg_scope in a `with` block.")
        token, entered = self._open[-1]
        # Another arg_scope entered after this one is still open (when an exception is already on
        # its way out, close anyway rather than hide it).
        if exc_info[0] is None and _ARG_SCOPE.get() is not entered:
            raise ScopeNestingError(
                "Improper nesting of slim.arg_scope: closing an arg_scope while an inner one is open "
                f"(closing the defaults {_describe_arg_scope(entered)}; the innermost open ones are "
                f"{_describe_arg_scope(_ARG_SCOPE.get())}).\n"
                "  fix: close arg scopes in the reverse order they were opened (use `with` blocks).")
        self._open.pop()
        _ARG_SCOPE.reset(token)


def _describe_arg_scope(defaults: Dict[Any, Dict[str, Any]]) -> str:
    """``{op: {argument: value}}`` with ops by name, for error messages."""
    return "{" + ", ".join(f"{_op_name(op)}: {args!r}" for op, args in defaults.items()) + "}"


# --- end points (outputs_collections) -------------------------------------------------------------


def collect_named_outputs(collections: Optional[Union[str, Sequence[str]]], alias: str,
                          outputs: Any) -> Any:
    """Add ``outputs`` under ``alias`` (a trailing ``/`` dropped) to each named collection of this
    ``init``/``apply`` call; returns ``outputs``."""
    if collections:
        frame = _frame.current("slim.utils.collect_named_outputs")
        alias = alias[:-1] if alias.endswith("/") else alias
        if frame.loop is not None or _TRACE.value is not frame.trace or (
                type(frame.store) is not ApplyStore and type(frame.store) is not InitStore):
            raise _end_point_in_loop(frame, collections, alias)
        store = getattr(frame, "collected", None)
        if store is None:
            store = frame.collected = {}  # type: ignore[attr-defined]
        for name in [collections] if isinstance(collections, str) else collections:
            store.setdefault(name, []).append((alias, outputs))
    return outputs


def _end_point_in_loop(frame: Any, collections: Any, alias: str) -> NestedTraceError:
    """An end point made where its value cannot leave (as ``sp.record``'s checks): in the function
    of an ``sp.scan``, ``sp.cond``, ... (``frame.loop``), in an ``sp.layer_stack`` block (its own
    store), or in a function a JAX transformation traces within the model."""
    names = [collections] if isinstance(collections, str) else list(collections)
    if frame.loop is not None:
        where = f"the function of {frame.loop}"
        steps = " (an output of every step)" if frame.loop == "sp.scan" else ""
        keep = f"return it from the function{steps} and collect it after {frame.loop}"
    elif type(frame.store) is not ApplyStore and type(frame.store) is not InitStore:
        where = "an sp.layer_stack block"
        keep = ("return it from the block as a per-layer output (sp.layer_stack(..., "
                "with_per_layer_inputs=True)) and collect it after the stack")
    else:
        where = ("a function that a JAX transformation (jax.vmap, jax.grad, jax.lax.scan, "
                 "jax.checkpoint, a jax.jit, ...) traces within the model")
        keep = "return it from the function and collect it outside it"
    return NestedTraceError(
        f"slim outputs_collections={names!r}: the end point {alias!r} was made inside {where}: a "
        "value made there cannot leave it except as its result (nor can TF fetch a tensor made in "
        "a loop's body).\n"
        f"  fix: drop outputs_collections= from the layers in there; to keep the output, {keep} "
        f"with slim.utils.collect_named_outputs({names[0]!r}, {alias!r}, output).")


def convert_collection_to_dict(collection: str, clear_collection: bool = False
                               ) -> "OrderedDict[str, Any]":
    """The end points this call added to ``collection``, ``{alias: output}`` in order."""
    frame = _frame.current("slim.utils.convert_collection_to_dict")
    store = getattr(frame, "collected", None) or {}
    out = OrderedDict(store.get(collection, ()))
    if clear_collection:
        store.pop(collection, None)
    return out


def _collections(variables_collections: Any, key: str) -> Optional[Sequence[str]]:
    """slim's ``get_variable_collections``: a dict maps a variable kind to its collections."""
    if isinstance(variables_collections, dict):
        return variables_collections.get(key)
    return variables_collections


_COLLECTION_KEYS = {"depthwise_weights": "weights", "pointwise_weights": "weights"}


def _model_variable_getter(variables_collections: Any) -> Callable:
    """A custom getter making each variable a model variable, in ``model_variables`` and in the
    collections ``variables_collections`` names for its kind, as slim's layers do (its
    ``_model_variable_getter`` and ``_add_variable_to_collections``)."""

    def getter(next_getter, name, *args, **kwargs):
        short = name.rsplit("/", 1)[-1]
        extra = _collections(variables_collections, _COLLECTION_KEYS.get(short, short)) or ()
        extra = [extra] if isinstance(extra, str) else list(extra)
        collections = [*_MODEL] + list(kwargs.get("collections") or ()) + extra
        kwargs["collections"] = list(dict.fromkeys(collections))
        return next_getter(name, *args, **kwargs)
    return getter


def last_dimension(shape: Sequence[Optional[int]], min_rank: int = 1) -> int:
    """``slim.utils.last_dimension(shape, min_rank=1)``: ``shape``'s last entry, checking the rank
    is at least ``min_rank`` and the entry is known, as tf_slim's (pass ``x.shape``; resnet's
    ``last_dimension(inputs.get_shape(), min_rank=4)`` is ``last_dimension(inputs.shape, 4)``)."""
    if hasattr(shape, "shape") and hasattr(shape, "dtype"):
        raise TypeError(f"slim.utils.last_dimension: expected a shape, got an array of shape "
                        f"{tuple(shape.shape)} (TF's takes a TensorShape, inputs.get_shape()).\n"
                        "  fix: pass x.shape.")
    dims = tuple(shape)
    if len(dims) < min_rank:
        raise ValueError(f"slim.utils.last_dimension: rank of shape must be at least {min_rank} "
                         f"not: {len(dims)} (shape {dims}).\n  fix: pass the shape of a rank-"
                         f"{min_rank} (or higher) input, or a lower min_rank.")
    if dims[-1] is None:
        raise ValueError(f"slim.utils.last_dimension: dimension -1 of shape must be known but is "
                         f"None: {dims}.\n  fix: pass the input's shape, x.shape, whose entries "
                         "JAX always knows.")
    return int(dims[-1])


utils = types.SimpleNamespace(
    collect_named_outputs=collect_named_outputs,
    convert_collection_to_dict=convert_collection_to_dict,
    get_variable_collections=_collections,
    last_dimension=last_dimension,
)


# --- variables ------------------------------------------------------------------------------------


@add_arg_scope
def variable(name: str, shape: Optional[Sequence[int]] = None, dtype: Any = None,
             initializer: Any = None, regularizer: Optional[Callable] = None,
             trainable: bool = True, collections: Optional[Sequence[str]] = None,
             caching_device: Any = None, device: Any = None, partitioner: Any = None,
             custom_getter: Optional[Callable] = None, use_resource: Any = None,
             synchronization: Any = None, aggregation: Any = None) -> jax.Array:
    """``slim.variable``: ``sp.get_param`` with slim's argument names. ``partitioner`` is this
    parameter's own, instead of the scope's (``get_param(partitioner=...)``): see ``sp.sharding``.
    As in slim, ``custom_getter`` replaces ``get_param`` for this request: it is called as
    ``custom_getter(name, shape=, dtype=, initializer=, regularizer=, trainable=, collections=,
    caching_device=, partitioner=, use_resource=, synchronization=, aggregation=, reuse=)``
    (``reuse``: the current scope's) and its result is returned; the ``next_getter`` a scope's
    custom getter receives takes these arguments. The device and runtime arguments have no
    counterpart and are otherwise ignored.

    >>> def fn():
    ...     with sp.scope("net"):
    ...         return sp.slim.variable("w", [8, 6], partitioner=sp.sharding.fixed_size_partitioner(2))
    >>> sp.sharding.partition_specs(sp.transform(fn))["net"]["w"]
    P('model',)
    """
    collections = list(collections) if collections else None
    if custom_getter is not None:
        if not callable(custom_getter):  # slim: functools.partial's "the first argument must be callable"
            raise TypeError(f"slim.variable('{name}'): custom_getter={custom_getter!r} is not "
                            "callable.\n  fix: pass a function getter(name, shape=, dtype=, "
                            "initializer=, ..., reuse=) returning the variable, or leave it out.")
        reuse = _frame.current("slim.variable").scope.reuse
        return custom_getter(name, shape=shape, dtype=dtype, initializer=initializer,
                             regularizer=regularizer, trainable=trainable, collections=collections,
                             caching_device=caching_device, partitioner=partitioner,
                             use_resource=use_resource, synchronization=synchronization,
                             aggregation=aggregation, reuse=reuse)
    del caching_device, device, use_resource, synchronization, aggregation
    options = {} if partitioner is None else {"partitioner": partitioner}
    return get_param(name, shape, initializer, dtype, trainable=trainable, regularizer=regularizer,
                     collections=collections, **options)


@add_arg_scope
def model_variable(name: str, shape: Optional[Sequence[int]] = None, dtype: Any = np.float32,
                   initializer: Any = None, regularizer: Optional[Callable] = None,
                   trainable: bool = True, collections: Optional[Sequence[str]] = None,
                   caching_device: Any = None, device: Any = None, partitioner: Any = None,
                   custom_getter: Optional[Callable] = None, use_resource: Any = None,
                   synchronization: Any = None, aggregation: Any = None) -> jax.Array:
    """``slim.model_variable``: ``slim.variable`` that also lists the parameter in the
    ``model_variables`` collection, as slim does; its ``dtype`` is float32 by default, not the
    scope's (slim's default, where ``slim.variable``'s is the scope's)."""
    return variable(name, shape=shape, dtype=dtype, initializer=initializer,
                    regularizer=regularizer, trainable=trainable,
                    collections=list(collections or ()) + [*_MODEL],
                    caching_device=caching_device, device=device, partitioner=partitioner,
                    custom_getter=custom_getter, use_resource=use_resource,
                    synchronization=synchronization, aggregation=aggregation)


# --- layers ---------------------------------------------------------------------------------------


def _layer(scope: Any, default_name: str, reuse: Any, variables_collections: Any = None,
           op: str = "slim"):
    """slim's ``variable_scope(scope, default_name, [inputs], reuse=reuse)``, whose variables are
    model variables. Collections are metadata of ``init``'s (and ``specs``') trace, so ``apply``
    opens the scope without the getter that records them, and fetches at full speed, unless a
    custom getter of the user's is in effect (it sees the collections, as in init and TF). ``op``
    (``slim.conv2d``) names the layer in errors."""
    frame = _frame._FRAME.get()
    if frame is None or frame.mode != _frame.INIT and frame.scope.custom_getter is None:
        if scope is None and (reuse is None or reuse is False):
            return default_name_scope(default_name)
        if scope is None:
            raise _reuse_without_scope(op, default_name, reuse)
        return _variable_scope(scope, default_name=default_name, reuse=reuse)
    if scope is None and reuse is not None and reuse is not False:
        raise _reuse_without_scope(op, default_name, reuse)
    return _variable_scope(scope, default_name=default_name, reuse=reuse,
                           custom_getter=_model_variable_getter(variables_collections))


def _reuse_without_scope(op: str, default_name: str, reuse: Any) -> ReuseArgumentError:
    """TF's refusal of a slim layer's ``reuse`` without ``scope=``, with the fix for the layer (the
    generic one, ``sp.scope(default_name, reuse=True)`` around the call, would look for
    ``fully_connected/fully_connected/weights``)."""
    return ReuseArgumentError(
        f"{op}(reuse={_describe_reuse(reuse)}) without scope=: reuse=True cannot be used without a "
        f"name_or_scope, as TF slim says too: the layer opens variable_scope(scope, "
        f"default_name={default_name!r}), and a default name always makes a new scope, never one "
        "to reuse.\n"
        f"  fix: pass the scope to share: scope={default_name!r} shares the first unnamed {op} "
        f"made in the current scope ({default_name + '_1'!r} the second, ...), e.g. "
        f"{op}(..., scope={default_name!r}, reuse=True); clearer, give both calls the same scope=.")


def _channels(data_format: Optional[str], allowed: Tuple[str, ...]) -> str:
    if data_format not in allowed:
        raise ValueError(f"data_format has to be one of {', '.join(a for a in allowed if a)}, got "
                         f"{data_format!r}.")
    return "channels_first" if data_format and data_format.startswith("NC") else "channels_last"


def _finish(outputs, normalizer_fn, normalizer_params, activation_fn, outputs_collections, alias,
            op):
    if normalizer_fn is not None:
        outputs = normalizer_fn(outputs, **(normalizer_params or {}))
    if activation_fn is not None:
        outputs = _activated(activation_fn, outputs, op, alias)
    return collect_named_outputs(outputs_collections, alias, outputs)


def _activated(activation_fn: Callable, outputs: Any, op: str, scope_name: str) -> Any:
    """``activation_fn(outputs)`` for the layer ``op`` in the scope ``scope_name``, refusing a
    TensorFlow function (it computes on TF tensors; slim's default, relu, is not tested) and a
    name (the test is on the error path: a name is not callable)."""
    if activation_fn is not jax.nn.relu and layers._is_tensorflow(activation_fn):
        raise layers._tensorflow_activation_error(layers._label(op, scope_name), "activation_fn",
                                                  activation_fn, names=False)
    try:
        return activation_fn(outputs)
    except TypeError:
        _refuse_a_named_activation_fn(activation_fn, op)
        raise


def _refuse_a_named_activation_fn(activation_fn: Any, op: str) -> None:
    """Raise TF slim's refusal of an ``activation_fn`` given by name (slim calls it, and resolves
    no names; tf.layers' ``activation=`` does), with the fix; return for any other value."""
    if not isinstance(activation_fn, str):
        if not callable(activation_fn):  # a number, a Keras config dict, ...: no function
            raise TypeError(
                f"{op}: activation_fn={activation_fn!r} is not a function (slim calls "
                "activation_fn(outputs); TF slim fails on it too).\n"
                "  fix: pass a function, e.g. activation_fn=jax.nn.relu, or None for a linear "
                "layer.") from None
        return
    fix = (f"activation_fn=jax.nn.{activation_fn}" if callable(getattr(jax.nn, activation_fn, None))
           else "activation_fn=<a function>, e.g. jax.nn.relu")
    raise TypeError(
        f"{op}: activation_fn={activation_fn!r} is a name, but slim's layers call "
        f"activation_fn(outputs), so TF slim refuses it too (\"'str' object is not callable\"); "
        "tf.layers' activation= is the one that takes Keras's names.\n"
        f"  fix: pass the function, {fix}.") from None


@add_arg_scope
def convolution(inputs: jax.Array, num_outputs: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
                padding: str = "SAME", data_format: Optional[str] = None, rate: IntOrPair = 1,
                activation_fn: Optional[Callable] = jax.nn.relu,
                normalizer_fn: Optional[Callable] = None, normalizer_params: Optional[dict] = None,
                weights_initializer: Any = _XAVIER, weights_regularizer: Optional[Callable] = None,
                biases_initializer: Any = zeros, biases_regularizer: Optional[Callable] = None,
                reuse: Any = None, variables_collections: Any = None, outputs_collections: Any = None,
                trainable: bool = True, scope: Any = None, conv_dims: Optional[int] = None
                ) -> jax.Array:
    """``slim.convolution``: an N-d convolution (N from the input's rank) in the variable scope
    ``scope`` (default ``Conv``, ``Conv_1``, ...) with ``weights`` (spatial dims, in, out) and
    ``biases``; no biases when ``normalizer_fn`` is given or ``biases_initializer`` is None; then
    ``normalizer_fn(**normalizer_params)`` and ``activation_fn`` (default ``relu``)."""
    if data_format not in (None, "NWC", "NCW", "NHWC", "NCHW", "NDHWC", "NCDHW"):
        raise ValueError(f"Invalid data_format: {data_format!r}")
    rank = inputs.ndim - 2
    if conv_dims is not None and conv_dims != rank:
        where = f" in scope {scope!r}" if isinstance(scope, str) else ""
        raise ValueError(
            f"slim.conv{conv_dims}d{where}: Convolution expects input with rank {conv_dims + 2}, got "
            f"{inputs.ndim} (full shape received: {tuple(inputs.shape)}; as TF).\n  fix: "
            + ("give the input its batch axis, e.g. x[None]" if inputs.ndim == conv_dims + 1 else
               "add its batch and channel axes, e.g. x[None, ..., None]" if inputs.ndim == conv_dims
               else f"pass [batch, {', '.join(['spatial'] * conv_dims)}, channels] inputs") + ".")
    if rank not in (1, 2, 3):
        raise ValueError(f"Convolution not supported for input with rank {inputs.ndim}")
    df = "channels_first" if data_format and data_format.startswith("NC") else "channels_last"
    op = f"slim.conv{rank}d" if conv_dims is not None else "slim.convolution"
    with _layer(scope, "Conv", reuse, variables_collections, op) as sc:
        outputs = layers._conv(
            rank, inputs, num_outputs, kernel_size, stride, padding, df, rate, None,
            normalizer_fn is None and biases_initializer is not None, weights_initializer,
            biases_initializer, weights_regularizer, biases_regularizer, trainable, sc, reuse,
            names=("weights", "biases"), int32_ok=False)  # slim's xavier refuses int32 weights
        return _finish(outputs, normalizer_fn, normalizer_params, activation_fn,
                       outputs_collections, sc.name, op)


def _convolution_nd(name: str, conv_dims: int, formats: str) -> Callable:
    """slim's ``convolution1d``/``2d``/``3d``: ``convolution``'s signature (without ``conv_dims``),
    passed on positionally as tf_slim does, so an ``arg_scope([slim.convolution], ...)`` setting
    one of them is a ``TypeError`` here as in TF, and ``arg_scope([slim.conv2d], ...)`` is the way."""

    def op(inputs: jax.Array, num_outputs: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
           padding: str = "SAME", data_format: Optional[str] = None, rate: IntOrPair = 1,
           activation_fn: Optional[Callable] = jax.nn.relu,
           normalizer_fn: Optional[Callable] = None, normalizer_params: Optional[dict] = None,
           weights_initializer: Any = _XAVIER, weights_regularizer: Optional[Callable] = None,
           biases_initializer: Any = zeros, biases_regularizer: Optional[Callable] = None,
           reuse: Any = None, variables_collections: Any = None, outputs_collections: Any = None,
           trainable: bool = True, scope: Any = None) -> jax.Array:
        return convolution(inputs, num_outputs, kernel_size, stride, padding, data_format, rate,
                           activation_fn, normalizer_fn, normalizer_params, weights_initializer,
                           weights_regularizer, biases_initializer, biases_regularizer, reuse,
                           variables_collections, outputs_collections, trainable, scope,
                           conv_dims=conv_dims)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (f"``slim.conv{conv_dims}d``: ``slim.convolution`` on a rank-{conv_dims + 2} "
                  f"input ({formats}).")
    return add_arg_scope(op)


convolution1d = _convolution_nd("convolution1d", 1, "``NWC``, or ``NCW``")
convolution2d = _convolution_nd("convolution2d", 2, "``NHWC``, or ``NCHW``")
convolution3d = _convolution_nd("convolution3d", 3, "``NDHWC``, or ``NCDHW``")


def _transpose_op(name: str, rank: int, kind: str, formats: Tuple[str, str]) -> Callable:
    """slim's ``convolution2d_transpose`` and ``convolution3d_transpose``: scope ``kind``, ``weights``
    (spatial dims, out, in) and ``biases``; TF's output size (``in * stride`` for ``'SAME'``)."""

    def op(inputs: jax.Array, num_outputs: int, kernel_size: IntOrPair, stride: IntOrPair = 1,
           padding: str = "SAME", data_format: str = formats[0],
           activation_fn: Optional[Callable] = jax.nn.relu, normalizer_fn: Optional[Callable] = None,
           normalizer_params: Optional[dict] = None, weights_initializer: Any = _XAVIER,
           weights_regularizer: Optional[Callable] = None, biases_initializer: Any = zeros,
           biases_regularizer: Optional[Callable] = None, reuse: Any = None,
           variables_collections: Any = None, outputs_collections: Any = None,
           trainable: bool = True, scope: Any = None) -> jax.Array:
        df = _channels(data_format, formats)
        with _layer(scope, kind, reuse, variables_collections, f"slim.conv{rank}d_transpose") as sc:
            outputs = layers._conv_transpose(
                rank, inputs, num_outputs, kernel_size, stride, padding, df, None,
                normalizer_fn is None and biases_initializer is not None, weights_initializer,
                biases_initializer, weights_regularizer, biases_regularizer, trainable, sc, reuse,
                names=("weights", "biases"), int32_ok=False)
            return _finish(outputs, normalizer_fn, normalizer_params, activation_fn,
                           outputs_collections, sc.name, f"slim.conv{rank}d_transpose")

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (f"``slim.{name}``: scope ``{kind}``, ``weights`` (spatial dims, out, in) and "
                  f"``biases``; TF's output size (``in * stride`` for ``'SAME'``); ``data_format`` "
                  f"{formats[0]} or {formats[1]}.")
    return add_arg_scope(op)


convolution2d_transpose = _transpose_op("convolution2d_transpose", 2, "Conv2d_transpose",
                                        ("NHWC", "NCHW"))
convolution3d_transpose = _transpose_op("convolution3d_transpose", 3, "Conv3d_transpose",
                                        ("NDHWC", "NCDHW"))


def _refuse_depthwise_padding(padding: Any, sc: Any) -> None:
    """tf_slim's ``num_outputs=None`` path calls ``tf.nn.depthwise_conv2d``, whose op takes only
    upper case (its ``num_outputs`` path, the Keras layer, takes either case)."""
    fix = f"padding={padding.upper()!r}" if isinstance(padding, str) and padding.upper() in (
        "SAME", "VALID") else "padding='SAME' or padding='VALID'"
    raise ValueError(f"{layers._label('slim.separable_conv2d', sc)} with num_outputs=None: Attr "
                     f"'padding' of 'DepthwiseConv2dNative' Op passed string {padding!r} not in: "
                     '"SAME", "VALID" (as in tf_slim, whose depthwise-only path takes upper case '
                     f"only).\n  fix: {fix}.")


@add_arg_scope
def separable_convolution2d(inputs: jax.Array, num_outputs: Optional[int], kernel_size: IntOrPair,
                            depth_multiplier: int = 1, stride: IntOrPair = 1,
                            padding: str = "SAME", data_format: str = "NHWC", rate: IntOrPair = 1,
                            activation_fn: Optional[Callable] = jax.nn.relu,
                            normalizer_fn: Optional[Callable] = None,
                            normalizer_params: Optional[dict] = None,
                            weights_initializer: Any = _XAVIER, pointwise_initializer: Any = None,
                            weights_regularizer: Optional[Callable] = None,
                            biases_initializer: Any = zeros,
                            biases_regularizer: Optional[Callable] = None, reuse: Any = None,
                            variables_collections: Any = None, outputs_collections: Any = None,
                            trainable: bool = True, scope: Any = None) -> jax.Array:
    """``slim.separable_conv2d``: scope ``SeparableConv2d``, ``depthwise_weights`` (kh, kw, in,
    depth_multiplier), ``pointwise_weights`` (1, 1, in * depth_multiplier, out) and ``biases``.
    With ``num_outputs=None`` (MobileNet's form) only the depthwise convolution runs, and biases
    (unless a normalizer is given) have ``in * depth_multiplier`` entries."""
    df = _channels(data_format, ("NHWC", "NCHW"))
    pointwise_initializer = weights_initializer if pointwise_initializer is None else \
        pointwise_initializer
    with _layer(scope, "SeparableConv2d", reuse, variables_collections,
                "slim.separable_conv2d") as sc:
        if num_outputs is None and padding not in ("SAME", "VALID"):
            _refuse_depthwise_padding(padding, sc)
        outputs = layers._separable_conv(
            2, inputs, num_outputs, kernel_size, stride, padding, df, rate, depth_multiplier, None,
            normalizer_fn is None and biases_initializer is not None, weights_initializer,
            pointwise_initializer, biases_initializer, weights_regularizer, weights_regularizer,
            biases_regularizer, trainable, sc, reuse,
            names=("depthwise_weights", "pointwise_weights", "biases"), base_name="SeparableConv2d",
            strided_atrous=True)  # tf_slim's tf.nn ops take stride > 1 with rate > 1
        return _finish(outputs, normalizer_fn, normalizer_params, activation_fn,
                       outputs_collections, sc.name, "slim.separable_conv2d")


@add_arg_scope
def fully_connected(inputs: jax.Array, num_outputs: int,
                    activation_fn: Optional[Callable] = jax.nn.relu,
                    normalizer_fn: Optional[Callable] = None,
                    normalizer_params: Optional[dict] = None, weights_initializer: Any = _XAVIER,
                    weights_regularizer: Optional[Callable] = None, biases_initializer: Any = zeros,
                    biases_regularizer: Optional[Callable] = None, reuse: Any = None,
                    variables_collections: Any = None, outputs_collections: Any = None,
                    trainable: bool = True, scope: Any = None) -> jax.Array:
    """``slim.fully_connected``: scope ``fully_connected``, ``weights`` (in, out) and ``biases``,
    over the last axis of inputs of any rank; then the normalizer and ``activation_fn`` (default
    ``relu``)."""
    if not isinstance(num_outputs, (int, np.integer)) or isinstance(num_outputs, bool):
        if isinstance(num_outputs, jax.core.Tracer):
            raise layers._traced_size_error("slim.fully_connected", "num_outputs", num_outputs)
        raise ValueError(f"num_outputs type should be an integer, got {type(num_outputs).__name__}.")
    with _layer(scope, "fully_connected", reuse, variables_collections,
                "slim.fully_connected") as sc:
        outputs = layers._dense(
            inputs, int(num_outputs), None, normalizer_fn is None and biases_initializer is not None,
            weights_initializer, biases_initializer, weights_regularizer, biases_regularizer,
            trainable, sc, reuse, names=("weights", "biases"), kind="fully_connected")
        return _finish(outputs, normalizer_fn, normalizer_params, activation_fn,
                       outputs_collections, sc.name, "slim.fully_connected")


@add_arg_scope
def bias_add(inputs: jax.Array, activation_fn: Optional[Callable] = None, initializer: Any = zeros,
             regularizer: Optional[Callable] = None, reuse: Any = None,
             variables_collections: Any = None, outputs_collections: Any = None,
             trainable: bool = True, data_format: str = "NHWC", scope: Any = None) -> jax.Array:
    """``slim.bias_add``: scope ``BiasAdd`` with ``biases`` over the channel axis, in the input's
    dtype (integers too, as TF's ``BiasAdd``; not bool)."""
    last = _channels(data_format, ("NHWC", "NCHW")) == "channels_last"
    if not last and inputs.ndim != 4:
        raise ValueError("Data format NCHW only supports 4D Tensor")
    if inputs.ndim < 2:
        raise ValueError(
            f"slim.bias_add: Shape must be at least rank 2 but is rank {inputs.ndim}: the input of "
            f"shape {tuple(inputs.shape)} has no batch axis and channel axis (as TF's BiasAdd "
            "refuses it).\n  fix: give the input a batch axis, e.g. x.reshape(1, -1) for one "
            "example.")
    with _layer(scope, "BiasAdd", reuse, variables_collections, "slim.bias_add") as sc:
        dtype = jnp.result_type(inputs)
        if dtype == np.bool_:
            raise layers._input_dtype_error("bias_add", sc, dtype, "a numeric")
        biases = get_param("biases", (inputs.shape[-1 if last else 1],), initializer, dtype,
                           trainable=trainable, regularizer=regularizer)
        outputs = layers._bias_and_activation(inputs, biases, last, None)
        if activation_fn is not None:
            outputs = _activated(activation_fn, outputs, "slim.bias_add", sc.name)
        return collect_named_outputs(outputs_collections, sc.name, outputs)


@add_arg_scope
def batch_norm(inputs: jax.Array, decay: float = 0.999, center: bool = True, scale: bool = False,
               epsilon: float = 0.001, activation_fn: Optional[Callable] = None,
               param_initializers: Optional[dict] = None,
               param_regularizers: Optional[dict] = None, updates_collections: Any = "update_ops",
               is_training: Union[bool, jax.Array] = True, reuse: Any = None,
               variables_collections: Any = None, outputs_collections: Any = None,
               trainable: bool = True, batch_weights: Any = None, fused: Optional[bool] = None,
               data_format: str = "NHWC", zero_debias_moving_mean: bool = False, scope: Any = None,
               renorm: bool = False, renorm_clipping: Any = None, renorm_decay: float = 0.99,
               adjustment: Any = None) -> jax.Array:
    """``slim.batch_norm``: scope ``BatchNorm`` with ``beta`` (``center``), ``gamma`` (``scale``,
    off by default) and the state ``moving_mean``/``moving_variance``.

    ``is_training=True`` (slim's default) normalizes with the batch statistics and writes the
    updated moving statistics to the returned state (``moving = decay * moving + (1 - decay) *
    batch``), as slim's update ops or ``updates_collections=None`` would: either way, here the update
    is in ``apply``'s new state. ``updates_collections`` picks slim's implementation, as in TF:

    - slim's fused kernel (``fused`` not False, and a 2-D input or a 4-D one with non-default
      ``updates_collections``): Bessel-corrected variance, updated even if ``trainable=False``;
    - the default ``updates_collections``: ``sp.layers.batch_normalization``'s rules
      (Bessel-corrected where TF fuses; with ``trainable=False`` no update, since TF leaves a
      non-trainable layer's update ops out of ``UPDATE_OPS``);
    - otherwise ``nn.moments``: the plain batch variance, updated even if ``trainable=False``,
      and the variables in the input's dtype (float16 too, where the other two keep float32).

    ``is_training`` may be a traced boolean.
    """
    if batch_weights is not None or zero_debias_moving_mean:
        raise NotImplementedError("slim.batch_norm: batch_weights and zero_debias_moving_mean are "
                                  "not implemented here.")
    df = _channels(data_format, ("NHWC", "NCHW"))
    param_initializers = param_initializers or {}
    param_regularizers = param_regularizers or {}
    rank = inputs.ndim
    default_updates = updates_collections == "update_ops"  # tf.GraphKeys.UPDATE_OPS
    fused_kernel: Optional[bool]
    update: Optional[bool]
    if fused is not False and (rank == 2 or (rank == 4 and not default_updates)):
        fused_kernel, update = True, True  # _fused_batch_norm adds its update ops itself
    elif default_updates:
        fused_kernel, update = None, None  # the core layer
    else:  # nn.moments, its update ops added (or run) by slim, its variables in the input's dtype
        fused_kernel, update = False, True
    with _layer(scope, "BatchNorm", reuse, variables_collections, "slim.batch_norm") as sc:
        outputs = layers.batch_normalization(
            inputs, axis=1 if df == "channels_first" else -1, momentum=decay, epsilon=epsilon,
            center=center, scale=scale,
            beta_initializer=param_initializers.get("beta", zeros),
            gamma_initializer=param_initializers.get("gamma", ones),
            moving_mean_initializer=param_initializers.get("moving_mean", zeros),
            moving_variance_initializer=param_initializers.get("moving_variance", ones),
            beta_regularizer=param_regularizers.get("beta"),
            gamma_regularizer=param_regularizers.get("gamma"),
            training=layers._static_flag(is_training, "is_training"),
            trainable=trainable, name=sc, reuse=reuse, renorm=renorm,
            renorm_clipping=renorm_clipping, renorm_momentum=renorm_decay, fused=fused,
            adjustment=adjustment, _fused_kernel=fused_kernel, _update=update,
            _nn_moments=fused_kernel is False, _api=("sp.slim.batch_norm", "is_training"))
        if activation_fn is not None:
            outputs = _activated(activation_fn, outputs, "slim.batch_norm", sc.name)
        return collect_named_outputs(outputs_collections, sc.name, outputs)


@add_arg_scope
def layer_norm(inputs: jax.Array, center: bool = True, scale: bool = True,
               activation_fn: Optional[Callable] = None, reuse: Any = None,
               variables_collections: Any = None, outputs_collections: Any = None,
               trainable: bool = True, begin_norm_axis: int = 1, begin_params_axis: int = -1,
               scope: Any = None) -> jax.Array:
    """``slim.layer_norm``: ``sp.layers.layer_norm`` (scope ``LayerNorm``), arg-scoped, with end
    points."""
    with _layer(scope, "LayerNorm", reuse, variables_collections, "slim.layer_norm") as sc:
        outputs = layers.layer_norm(inputs, center, scale, activation_fn, reuse, None, None,
                                    trainable, begin_norm_axis, begin_params_axis, sc)
        return collect_named_outputs(outputs_collections, sc.name, outputs)


def _norm_params(center: bool, scale: bool, shape: Tuple[int, ...], dtype: Any,
                 param_initializers: Optional[dict], trainable: bool) -> Tuple[Any, Any]:
    """``beta`` (``center``) and ``gamma`` (``scale``) of slim's instance and group norms."""
    param_initializers = param_initializers or {}
    beta = get_param("beta", shape, param_initializers.get("beta", zeros), dtype,
                     trainable=trainable) if center else None
    gamma = get_param("gamma", shape, param_initializers.get("gamma", ones), dtype,
                      trainable=trainable) if scale else None
    return beta, gamma


@add_arg_scope
def instance_norm(inputs: jax.Array, center: bool = True, scale: bool = True, epsilon: float = 1e-6,
                  activation_fn: Optional[Callable] = None, param_initializers: Optional[dict] = None,
                  reuse: Any = None, variables_collections: Any = None,
                  outputs_collections: Any = None, trainable: bool = True,
                  data_format: str = "NHWC", scope: Any = None) -> jax.Array:
    """``slim.instance_norm`` (``tf.contrib.layers.instance_norm``): scope ``InstanceNorm`` with
    ``beta`` and ``gamma`` of the channel count; each example's channels are normalized over the
    example's other axes, with TF's ``nn.moments`` and ``nn.batch_normalization``."""
    if data_format not in ("NHWC", "NCHW"):
        raise ValueError(f"slim.instance_norm: data_format has to be either NCHW or NHWC, got "
                         f"{data_format!r}.")
    rank = inputs.ndim
    axis = 1 if data_format == "NCHW" else rank - 1
    with _layer(scope, "InstanceNorm", reuse, variables_collections, "slim.instance_norm") as sc:
        dtype = layers._param_dtype(inputs, "slim.instance_norm", sc)
        beta, gamma = _norm_params(center, scale, (inputs.shape[axis],), dtype, param_initializers,
                                   trainable)
        x = layers._cast(inputs, dtype)
        mean, variance = layers._moments(x, tuple(a for a in range(1, rank) if a != axis))
        broadcast = tuple(inputs.shape[a] if a == axis else 1 for a in range(rank))
        outputs = layers._normalize(x, mean, variance,
                                    None if beta is None else beta.reshape(broadcast),
                                    None if gamma is None else gamma.reshape(broadcast), epsilon)
        if activation_fn is not None:
            outputs = _activated(activation_fn, outputs, "slim.instance_norm", sc.name)
        return collect_named_outputs(outputs_collections, sc.name, outputs)


@add_arg_scope
def group_norm(inputs: jax.Array, groups: int = 32, channels_axis: int = -1,
               reduction_axes: Sequence[int] = (-3, -2), center: bool = True, scale: bool = True,
               epsilon: float = 1e-6, activation_fn: Optional[Callable] = None,
               param_initializers: Optional[dict] = None, reuse: Any = None,
               variables_collections: Any = None, outputs_collections: Any = None,
               trainable: bool = True, scope: Any = None,
               mean_close_to_zero: bool = False) -> jax.Array:
    """``slim.group_norm`` (``tf.contrib.layers.group_norm``): scope ``GroupNorm`` with ``beta`` and
    ``gamma`` of the channel count; the channels axis is split into ``groups`` groups, each
    normalized over its channels and ``reduction_axes``. ``mean_close_to_zero`` computes the
    variance as E[x^2] - E[x]^2 (TF's ``nn.sufficient_statistics``), as slim does."""
    rank = inputs.ndim
    asked = (f"slim.group_norm(groups={groups}, channels_axis={channels_axis}, "
             f"reduction_axes={tuple(reduction_axes)}) of inputs of shape {tuple(inputs.shape)}")
    if not -rank <= channels_axis < rank:
        raise ValueError(f"Axis is out of bounds: {asked}.")
    channels_axis = channels_axis + rank if channels_axis < 0 else channels_axis
    channels = inputs.shape[channels_axis]
    reduction_axes = [a + rank if a < 0 else a for a in reduction_axes]
    for a in reduction_axes:
        if not 0 <= a < rank:
            raise ValueError(f"Axis is out of bounds: {asked}.")
        if a == channels_axis:
            raise ValueError(f"reduction_axis must be mutually exclusive with channels_axis: {asked}.")
    if groups > channels or channels % groups != 0:
        raise ValueError(f"Invalid groups {groups} for {channels} channels: {asked}.\n"
                         "  fix: a number of groups that divides the channel count.")
    before, after = inputs.shape[:channels_axis], inputs.shape[channels_axis + 1:]
    grouped = before + (groups, channels // groups) + after
    broadcast = (1,) * len(before) + (groups, channels // groups) + (1,) * len(after)
    axes = tuple([channels_axis + 1] + [a + 1 if a > channels_axis else a for a in reduction_axes])
    with _layer(scope, "GroupNorm", reuse, variables_collections, "slim.group_norm") as sc:
        dtype = layers._param_dtype(inputs, "slim.group_norm", sc)
        x = layers._cast(inputs, dtype).reshape(grouped)
        beta, gamma = _norm_params(center, scale, (channels,), dtype, param_initializers, trainable)
        if mean_close_to_zero:  # nn.sufficient_statistics and nn.normalize_moments without a shift
            divisor = 1.0 / float(np.prod([grouped[a] for a in axes]))
            mean = jnp.sum(x, axes, keepdims=True) * divisor
            variance = jnp.sum(jnp.square(x), axes, keepdims=True) * divisor - jnp.square(mean)
        else:
            mean, variance = layers._moments(x, axes)
        gain = jax.lax.rsqrt(variance + epsilon)
        offset = -mean * gain
        if gamma is not None:
            gamma = gamma.reshape(broadcast)
            gain, offset = gain * gamma, offset * gamma
        if beta is not None:
            offset = offset + beta.reshape(broadcast)
        outputs = (x * gain + offset).reshape(inputs.shape)
        if activation_fn is not None:
            outputs = _activated(activation_fn, outputs, "slim.group_norm", sc.name)
        return collect_named_outputs(outputs_collections, sc.name, outputs)


def _pool_op(name: str, kind: str, rank: int, pool: Callable, formats: Tuple[str, str]) -> Callable:
    """slim's ``max_pool2d`` and kin: stride 2 and ``'VALID'`` by default, in a name scope ``kind``."""

    def op(inputs: jax.Array, kernel_size: IntOrPair, stride: IntOrPair = 2,
           padding: str = "VALID", data_format: str = formats[0], outputs_collections: Any = None,
           scope: Optional[str] = None) -> jax.Array:
        df = _channels(data_format, formats)
        with name_scope(scope or kind) as sc:
            outputs = pool(rank, inputs, kernel_size, stride, padding, df, name, sc)
            return collect_named_outputs(outputs_collections, sc, outputs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (f"``slim.{name}``: stride 2 and ``'VALID'`` by default; a name scope ``{kind}``; "
                  f"``data_format`` {formats[0]} or {formats[1]}.")
    return add_arg_scope(op)


max_pool2d = _pool_op("max_pool2d", "MaxPool2D", 2, layers._max_pool, ("NHWC", "NCHW"))
avg_pool2d = _pool_op("avg_pool2d", "AvgPool2D", 2, layers._average_pool, ("NHWC", "NCHW"))
max_pool3d = _pool_op("max_pool3d", "MaxPool3D", 3, layers._max_pool, ("NDHWC", "NCDHW"))
avg_pool3d = _pool_op("avg_pool3d", "AvgPool3D", 3, layers._average_pool, ("NDHWC", "NCDHW"))


@add_arg_scope
def dropout(inputs: jax.Array, keep_prob: float = 0.5, noise_shape: Optional[Sequence[int]] = None,
            is_training: Union[bool, jax.Array] = True, outputs_collections: Any = None,
            scope: Any = None, seed: Optional[int] = None) -> jax.Array:
    """``slim.dropout``: keeps ``keep_prob`` and scales by ``1 / keep_prob`` while ``is_training``
    (the default, so ``apply`` needs ``rng=``); opens the variable scope ``Dropout`` as slim does."""
    # TF's Dropout layer checks rate = 1 - keep_prob even when not training; a traced one is not
    if isinstance(keep_prob, (int, float, np.integer, np.floating)) and not 0 <= keep_prob <= 1:
        raise ValueError(f"slim.dropout: invalid value {keep_prob} received for `keep_prob` (TF: "
                         f"\"Invalid value {1.0 - keep_prob} received for `rate`\"), expected a "
                         "value between 0 and 1.\n  fix: keep_prob is the fraction kept (0.8 keeps "
                         "80%).")
    if (isinstance(keep_prob, (int, float, np.integer, np.floating)) and keep_prob == 0
            and (training := layers._static_flag(is_training, "is_training")) is not False):
        # else the core layer's "Invalid value received for `rate` ... got: 1.0"
        shown = training if training is True else "<traced>"
        raise ValueError(f"slim.dropout: keep_prob={keep_prob!r} with is_training={shown} "
                         "would drop every unit (TF: \"Invalid value received for `rate`\", rate = "
                         "1 - keep_prob = 1.0).\n  fix: keep_prob must be above 0 in training "
                         "(keep_prob is the fraction kept: 0.8 keeps 80%).")
    with _layer(scope, "Dropout", None) as sc:
        outputs = layers.dropout(inputs, 1.0 - keep_prob, noise_shape, seed,
                                 layers._static_flag(is_training, "is_training"))
        return collect_named_outputs(outputs_collections, sc.name, outputs)


@add_arg_scope
def flatten(inputs: jax.Array, outputs_collections: Any = None, scope: Optional[str] = None
            ) -> jax.Array:
    """``slim.flatten``: ``[batch, -1]`` (``[N, 1]`` for a rank-1 input), in a name scope
    ``Flatten``: the core ``flatten``, as slim's."""
    with name_scope(scope or "Flatten") as sc:
        return collect_named_outputs(outputs_collections, sc, layers.flatten(inputs, sc))


def _tf_value_dtype(value: Any) -> np.dtype:
    """The dtype TF gives ``value`` converted to a tensor: bool, int32 and float32 for Python's bool,
    int and float; its own for arrays and NumPy scalars (64-bit ones as JAX keeps them)."""
    if isinstance(value, bool):
        return np.dtype(np.bool_)
    if isinstance(value, int):
        return np.dtype(np.int32)
    if isinstance(value, float):
        return np.dtype(np.float32)
    return np.dtype(jax.dtypes.canonicalize_dtype(np.result_type(value)))


@add_arg_scope
def one_hot_encoding(labels: jax.Array, num_classes: int, on_value: Any = 1.0,
                     off_value: Any = 0.0, outputs_collections: Any = None,
                     scope: Optional[str] = None) -> jax.Array:
    """``slim.one_hot_encoding``: ``tf.one_hot`` rows of ``on_value``/``off_value`` for integer
    ``labels`` (out-of-range labels give rows of ``off_value``), in a name scope ``OneHotEncoding``.
    As in TF, the dtype is ``on_value``'s, which must be ``off_value``'s: float32 for the default
    1.0/0.0, int32 for ``on_value=1, off_value=0``.

    >>> one_hot = sp.transform(lambda labels: sp.slim.one_hot_encoding(labels, 3, on_value=1,
    ...                                                                off_value=0))
    >>> one_hot.apply({}, jnp.array([0, 2])).dtype
    dtype('int32')
    """
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"slim.one_hot_encoding: labels of dtype {labels.dtype}, but tf.one_hot's "
                        "indices must be integers (uint8, int8, int32, int64).\n"
                        "  fix: pass class ids as integers, e.g. labels.astype(jnp.int32).")
    dtype = _tf_value_dtype(on_value)
    if _tf_value_dtype(off_value) != dtype:
        raise TypeError(f"slim.one_hot_encoding: dtype {dtype} of on_value={on_value!r} does not "
                        f"match dtype {_tf_value_dtype(off_value)} of off_value={off_value!r} (TF "
                        "refuses it too).\n  fix: give both the same type, e.g. on_value=1.0, "
                        "off_value=0.0 for float32 or on_value=1, off_value=0 for int32.")
    with name_scope(scope or "OneHotEncoding") as sc:
        hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
        outputs = jnp.where(hot, jnp.asarray(on_value, dtype), jnp.asarray(off_value, dtype))
        return collect_named_outputs(outputs_collections, sc, outputs)


@add_arg_scope
def softmax(logits: jax.Array, scope: Any = None) -> jax.Array:
    """``slim.softmax``: softmax over the last axis, in the variable scope ``softmax``."""
    if logits.ndim < 2:
        raise ValueError(f"slim.softmax needs logits of rank 2 or more, got shape {logits.shape}.")
    with _variable_scope(scope, default_name="softmax"):
        return jax.nn.softmax(logits, axis=-1)


@add_arg_scope
def unit_norm(inputs: jax.Array, dim: int, epsilon: float = 1e-7, scope: Any = None) -> jax.Array:
    """``slim.unit_norm``: ``inputs`` divided by their L2 norm along ``dim``
    (``sqrt(epsilon + sum(x^2))``), in the variable scope ``UnitNorm``."""
    with _variable_scope(scope, default_name="UnitNorm"):
        if not 0 <= dim < inputs.ndim:
            raise ValueError(f"slim.unit_norm: dim must be positive but smaller than the input rank, "
                             f"got dim={dim} for inputs of shape {tuple(inputs.shape)}.")
        return inputs / jnp.sqrt(epsilon + jnp.sum(jnp.square(inputs), dim, keepdims=True))


@add_arg_scope
def maxout(inputs: jax.Array, num_units: int, axis: int = -1, scope: Any = None) -> jax.Array:
    """``slim.maxout``: the maximum over groups of ``axis``' features, in the variable scope
    ``MaxOut``. As in slim, ``inputs`` is reshaped to its shape with ``axis`` set to ``num_units``
    and the group size appended, and reduced over that last axis."""
    with _variable_scope(scope, default_name="MaxOut"):
        shape = list(inputs.shape)
        channels = shape[axis]
        if channels % num_units:
            raise ValueError(f"number of features({channels}) is not a multiple of "
                             f"num_units({num_units})")
        shape[axis] = num_units
        return jnp.max(inputs.reshape(shape + [channels // num_units]), axis=-1)


def apply_regularization(regularizer: Callable, weights_list: Optional[Sequence[Any]] = None) -> Any:
    """``slim.apply_regularization``: the sum of ``regularizer`` over ``weights_list`` (a term of
    ``None`` counts 0). There is no ``GraphKeys.WEIGHTS`` collection to default to: pass the weights,
    e.g. the values of ``sp.partition_by_collection(params, specs, "model_variables")[0]``. The sum is
    not added to ``sp.regularization_loss()``; add it to your loss."""
    if not weights_list:
        raise ValueError("slim.apply_regularization: no weights to regularize. There is no "
                         "GraphKeys.WEIGHTS collection here.\n"
                         "  fix: pass the weights, apply_regularization(regularizer, [w1, w2]).")
    penalties = []
    for w in weights_list:
        penalty = regularizer(w)
        penalty = jnp.zeros((), getattr(w, "dtype", jnp.float32)) if penalty is None else penalty
        if jnp.ndim(penalty) != 0:
            raise ValueError("regularizer must return a scalar Tensor instead of a Tensor with rank "
                             f"{jnp.ndim(penalty)}.")
        penalties.append(penalty)
    return sum(penalties[1:], penalties[0])


# slim's fully connected shorthands (functools.partial, as in slim: arg scopes of fully_connected
# reach them)
relu = functools.partial(fully_connected, activation_fn=jax.nn.relu)
relu6 = functools.partial(fully_connected, activation_fn=jax.nn.relu6)
elu = functools.partial(fully_connected, activation_fn=jax.nn.elu)
linear = functools.partial(fully_connected, activation_fn=None)


def _layer_name(layer: Callable, fallback: str) -> str:
    if hasattr(layer, "__name__"):
        return layer.__name__
    func = getattr(layer, "func", None)  # a functools.partial
    return getattr(func, "__name__", fallback)


def _check_repeated_scope(op: str, scope: Any) -> None:
    """tf_slim names the i-th layer ``scope + '_' + str(i + 1)``: a scope object is a TypeError."""
    if scope is not None and not isinstance(scope, str):
        name = scope.name if isinstance(scope, Scope) else None
        fix = (f"pass its name, scope=sc.name (here {name!r}), or a string" if name is not None
               else "pass a string")
        given = f"<Scope {name!r}>" if name is not None else repr(scope)
        raise TypeError(
            f"slim.{op}(scope={given}): scope must be a string (the repeated layers' scopes are "
            f"scope + '_1', '_2', ...), got {type(scope).__name__} (TF: unsupported operand "
            f"type(s) for +: '{type(scope).__name__}' and 'str').\n  fix: {fix}.")


def repeat(inputs: jax.Array, repetitions: int, layer: Callable, *args: Any, **kwargs: Any
           ) -> jax.Array:
    """``slim.repeat(x, 3, slim.conv2d, 64, [3, 3], scope="conv3")``: the layer applied
    ``repetitions`` times in the scope ``conv3`` (default ``Repeat``), the i-th with
    ``scope="conv3_<i>"`` (``conv3/conv3_1/weights``, ...)."""
    scope = kwargs.pop("scope", None)
    _check_repeated_scope("repeat", scope)
    with _variable_scope(scope, default_name="Repeat"):
        name = scope if scope is not None else _layer_name(layer, "repeat")
        outputs = inputs
        for i in range(repetitions):
            outputs = layer(outputs, *args, **kwargs, scope=f"{name}_{i + 1}")
        return outputs


def stack(inputs: jax.Array, layer: Callable, stack_args: Sequence[Any], **kwargs: Any
          ) -> jax.Array:
    """``slim.stack(x, slim.fully_connected, [32, 64, 128], scope="fc")``: one layer call per entry
    of ``stack_args`` (its arguments, a tuple or a single value), the i-th with
    ``scope="fc_<i>"`` inside the scope ``fc`` (default ``Stack``)."""
    scope = kwargs.pop("scope", None)
    _check_repeated_scope("stack", scope)
    if not isinstance(stack_args, (list, tuple)):
        raise ValueError("stack_args need to be a list or tuple")
    with _variable_scope(scope, default_name="Stack"):
        name = scope if scope is not None else _layer_name(layer, "stack")
        outputs = inputs
        for i, layer_args in enumerate(stack_args):
            if not isinstance(layer_args, (list, tuple)):
                layer_args = [layer_args]
            outputs = layer(outputs, *layer_args, **kwargs, scope=f"{name}_{i + 1}")
        return outputs


conv1d = convolution1d
conv2d = convolution2d
conv3d = convolution3d
conv2d_transpose = convolution2d_transpose
conv3d_transpose = convolution3d_transpose
separable_conv2d = separable_convolution2d
