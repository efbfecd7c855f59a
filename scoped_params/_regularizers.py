"""Regularizers with TF 1.x's names: ``regularizer(param) -> scalar or None``."""

from __future__ import annotations

import functools
import inspect
import numbers
import os
from typing import Any, Callable, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import TF_PACKAGES


def _check_scale(call: str, argument: str, scale: Any) -> bool:
    """TF's checks of a regularizer's scale, made when the regularizer is built: an integer
    (``numbers.Integral``: bool and NumPy integers too) or a negative number is an error. Returns
    whether the scale is 0, which TF reads as "no regularizer". Arrays pass unchecked, as tensors do
    in TF."""
    if isinstance(scale, numbers.Integral):
        raise ValueError(
            f"{argument} cannot be an integer: {scale} (as in TF): {call}({argument}={scale!r}).\n"
            f"  fix: pass a float, e.g. {argument}={float(scale)!r}.")
    if isinstance(scale, numbers.Real) and scale < 0.0:
        # A negative term would reward large weights.
        raise ValueError(
            f"Setting a scale less than 0 on a regularizer: {scale:g} (as in TF): "
            f"{call}({argument}={scale!r}).\n"
            f"  fix: pass a scale of 0.0 or more (0.0 adds no term), e.g. {argument}={-scale!r}.")
    return isinstance(scale, numbers.Real) and scale == 0.0


# dtype -> whether it is a floating dtype: the check runs on every term, and issubdtype is slow.
_FLOATING: dict = {}


def _is_floating(dtype: Any) -> bool:
    floating = _FLOATING.get(dtype)
    if floating is None:
        floating = _FLOATING[dtype] = bool(jnp.issubdtype(dtype, jnp.floating))
    return floating


def _dtype_of(w: Any) -> Any:
    try:
        return w.dtype
    except AttributeError:  # a Python scalar
        return jnp.result_type(w)


def l1_sum(w: Any) -> Any:
    """``sum(|w|)`` with TF's gradient, ``sign(w)``: 0 where ``w`` is 0. JAX's derivative of ``abs``
    at 0 is 1, which would move a zero weight (a zero-initialized bias with an L1 term) on the first
    step, where TF 1.x leaves it. For floating ``w`` the value is ``abs``'s exactly (``w * sign(w)``
    only clears the sign bit); complex and integer weights keep ``abs`` (JAX's complex ``abs`` has
    gradient 0 at 0 already, integers have none)."""
    if not _is_floating(_dtype_of(w)):
        return jnp.sum(jnp.abs(w))
    return jnp.sum(w * jax.lax.stop_gradient(jnp.sign(w)))


def _tf_quote(dtype: Any, scale: Any) -> str:
    """TF's message for the scale converted to non-floating weights' dtype."""
    return f"TF 1.x: Expected {np.dtype(dtype).name}, but got {scale!r} of type '{type(scale).__name__}'"


def non_floating_error(regularizer: Callable, dtype: Any, full: Optional[str] = None) -> TypeError:
    """The error for a stock regularizer (one with ``floating_only``) on a non-floating parameter
    (``full``, when known) or weights: TF converts the scale to the weights' dtype and fails."""
    call, scale = regularizer.floating_only  # type: ignore[attr-defined]
    dtype = np.dtype(dtype).name
    if full is None:
        return TypeError(
            f"{call} adds a term for floating-point weights only, got {dtype} weights "
            f"({_tf_quote(dtype, scale)}).\n"
            "  fix: regularize floating-point parameters only: pass regularizer=sp.no_regularizer to "
            "get_param for a non-floating one (it switches a scope's regularizer off).")
    return TypeError(
        f"The regularizer of '{full}', {call}, adds a term for floating-point parameters only, and "
        f"'{full}' is {dtype} ({_tf_quote(dtype, scale)}).\n"
        f"  fix: pass regularizer=sp.no_regularizer to get_param for '{full}' (it switches the "
        "scope's regularizer off), or create it with a floating-point dtype.")


def _scale_in(scale: Any) -> Callable[[Any], Any]:
    """``scale`` in the weights' dtype, as TF's ``convert_to_tensor(scale, dtype=weights.dtype)``: a
    Python float is weakly typed, so it is used as it is; a NumPy or JAX scale is converted."""
    if type(scale) is float:
        return lambda dtype: scale
    return lambda dtype: jnp.asarray(scale, dtype)


def _stock(regularizer: Callable, call: str, scale: Any) -> Callable:
    # The mark get_param checks when it creates a parameter, without running the regularizer:
    # a stock regularizer on a non-floating parameter is refused there, naming it.
    regularizer.floating_only = (call, scale)  # type: ignore[attr-defined]
    return regularizer


def _weight_sum(call: str, scale: Any, term: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The stock regularizer ``call(scale)``: ``scale * term(w)`` for floating-point weights, with TF's
    checks of the scale (``no_regularizer`` for 0.0) and of the weights' dtype."""
    if _check_scale(call, "scale", scale):
        return no_regularizer
    scale_in = _scale_in(scale)

    def regularizer(w):
        dtype = _dtype_of(w)
        if not _is_floating(dtype):
            raise non_floating_error(regularizer, dtype)
        return scale_in(dtype) * term(w)

    return _stock(regularizer, f"{call}({scale!r})", scale)


def l2_regularizer(scale: float, scope: Optional[str] = None) -> Callable[[Any], Any]:
    """TF's ``l2_regularizer``: ``scale * sum(w**2) / 2``. A scale of 0.0 gives ``no_regularizer``
    (no term, as TF's ``lambda _: None``); an integer or negative scale is an error, as in TF. The
    term has the weights' dtype (the scale is converted to it, as in TF), and non-floating weights
    are an error (TF's TypeError). ``scope``, which named the term's ops in TF, is accepted and
    unused (the term is recomputed in each call, see ``sp.regularization_loss``).

    >>> float(sp.l2_regularizer(0.5)(jnp.array([1.0, 2.0])))
    1.25
    """
    return _weight_sum("l2_regularizer", scale, lambda w: 0.5 * jnp.sum(jnp.square(w)))


def l1_regularizer(scale: float, scope: Optional[str] = None) -> Callable[[Any], Any]:
    """TF's ``l1_regularizer``: ``scale * sum(|w|)``, with TF's gradient ``scale * sign(w)`` (0 at
    w == 0, where JAX's ``abs`` has 1). A scale of 0.0 gives ``no_regularizer`` (no term, as TF's
    ``lambda _: None``); an integer or negative scale is an error, as in TF.

    >>> float(sp.l1_regularizer(0.5)(jnp.array([1.0, -2.0])))
    1.5
    """
    return _weight_sum("l1_regularizer", scale, l1_sum)


def no_regularizer(_: Any) -> Optional[Any]:
    """TF's ``no_regularizer``: switches an inherited regularizer off (per parameter or per scope)."""
    return None


def sum_regularizer(regularizer_list: Any, scope: Optional[str] = None) -> Optional[Callable[[Any], Any]]:
    """TF's ``contrib.layers.sum_regularizer``: the sum of the terms of ``regularizer_list`` (``None``
    entries, and terms that are ``None``, are skipped); ``None`` for an empty list."""
    regularizers = [r for r in regularizer_list if r is not None]
    if not regularizers:
        return None

    def regularizer(w):
        terms = [term for term in (r(w) for r in regularizers) if term is not None]
        return sum(terms[1:], terms[0]) if terms else None

    marks = [getattr(r, "floating_only", None) for r in regularizers]
    stock = [m for m in marks if m is not None]
    if len(stock) == len(marks):  # only stock terms: a non-floating parameter is refused at creation too
        return _stock(regularizer, f"sum_regularizer([{', '.join(m[0] for m in stock)}])", stock[0][1])
    return regularizer


def l1_l2_regularizer(scale_l1: float = 1.0, scale_l2: float = 1.0,
                      scope: Optional[str] = None) -> Callable[[Any], Any]:
    """TF's ``contrib.layers.l1_l2_regularizer``: ``l1_regularizer(scale_l1)`` plus
    ``l2_regularizer(scale_l2)`` (just one of them when the other scale is 0, ``no_regularizer``
    when both are); an integer or negative scale is an error, as in TF."""
    for argument, scale in (("scale_l1", scale_l1), ("scale_l2", scale_l2)):
        _check_scale("l1_l2_regularizer", argument, scale)
    if scale_l1 == 0.0:
        return l2_regularizer(scale_l2)
    if scale_l2 == 0.0:
        return l1_regularizer(scale_l1)
    both = sum_regularizer([l1_regularizer(scale_l1), l2_regularizer(scale_l2)])
    return _stock(both, f"l1_l2_regularizer({scale_l1!r}, {scale_l2!r})", scale_l1)  # type: ignore[arg-type]


# --- sp.regularization_loss()'s errors (made only when a term fails) ------------------------------

def _factories() -> dict:
    """The functions that make a regularizer of a scale, and how to call them: passed themselves as
    the regularizer (a classic TF 1.x slip, the scale forgotten), they take the value for the scale."""
    return {l2_regularizer: ("sp.l2_regularizer(scale)", "sp.l2_regularizer(1e-4)"),
            l1_regularizer: ("sp.l1_regularizer(scale)", "sp.l1_regularizer(1e-4)"),
            l1_l2_regularizer: ("sp.slim.l1_l2_regularizer(scale_l1, scale_l2)",
                                "sp.slim.l1_l2_regularizer(1e-5, 1e-4)"),
            sum_regularizer: ("sp.slim.sum_regularizer(regularizer_list)",
                              "sp.slim.sum_regularizer([sp.l2_regularizer(1e-4)])")}


def _unwrapped(regularizer: Callable) -> Tuple[Callable, bool]:
    """(the user's regularizer, whether it is a layer's activity_regularizer=): a layer's activity
    penalty is registered as ``functools.partial(_per_example_loss, regularizer)`` (layers.py)."""
    if (isinstance(regularizer, functools.partial) and regularizer.args
            and callable(regularizer.args[0])):
        return regularizer.args[0], True
    return regularizer, False


def _where(store: Any, value: Any, activity: bool) -> str:
    """What the failing term belongs to: the full name of the parameter whose value is ``value``
    (found by identity in the call's store), or the layer output an activity penalty is of."""
    if activity:
        return f"the activity_regularizer= of a layer (its output of shape {np.shape(value)})"
    for attr in ("values", "params"):  # init's {name: placeholder}; apply's flat params
        named = getattr(store, attr, None)
        if isinstance(named, Mapping):
            for full, found in named.items():
                if found is value:
                    return f"the regularizer of '{full}'"
    return f"the regularizer of a parameter of shape {np.shape(value)}"


def _describe(regularizer: Callable) -> str:
    return getattr(regularizer, "__qualname__", None) or repr(regularizer)


def _forgotten_scale(where: str, factory: Tuple[str, str], returned: bool) -> TypeError:
    call, example = factory
    name = call.split("(")[0]
    return TypeError(
        f"sp.regularization_loss(): {where} is {name} itself, which makes a regularizer of a "
        "scale: called with the value (as its scale), it "
        + ("returned a function, not a term" if returned else "failed") + ".\n"
        f"  fix: pass {call}, e.g. {example}.")


def term_error(store: Any, regularizer: Callable, value: Any, term: Any) -> TypeError:
    """The error for a term that is no number or array (a function: the scale forgotten; a
    TensorFlow tensor: a TensorFlow regularizer)."""
    tensorflow = tensorflow_error(store, regularizer, value)
    if tensorflow is not None:
        return tensorflow
    target, activity = _unwrapped(regularizer)
    where = _where(store, value, activity)
    call = _factories().get(target)
    if call is not None:
        return _forgotten_scale(where, call, returned=True)
    found = "a function" if callable(term) else f"{type(term).__name__} {term!r}"[:200]
    return TypeError(
        f"sp.regularization_loss(): {where}, {_describe(target)}, returned {found}, not a term (a "
        "scalar array, a number or None).\n"
        "  fix: return the term, e.g. lambda w: 0.01 * jnp.sum(w ** 2)"
        + (", or pass the regularizer this function makes (e.g. sp.l2_regularizer(scale), not "
           "sp.l2_regularizer)" if callable(term) else "") + ".")


def _tensorflow_origin(regularizer: Callable) -> Optional[str]:
    """The TensorFlow package ``regularizer`` comes from (a ``tf.keras.regularizers.l2(...)`` object,
    a ``tf_slim``/``tf.contrib`` regularizer function), or None."""
    module = getattr(regularizer if inspect.isroutine(regularizer) else type(regularizer),
                     "__module__", None) or ""
    package = module.split(".", 1)[0]
    return package if package in TF_PACKAGES else None


def tensorflow_error(store: Any, regularizer: Callable, value: Any) -> Optional[TypeError]:
    """The error for a TensorFlow regularizer (it computes on TF tensors, not on JAX arrays), or
    None if ``regularizer`` is not one."""
    target, activity = _unwrapped(regularizer)
    package = _tensorflow_origin(target)
    if package is None:
        return None
    config = getattr(target, "get_config", None)
    keras = ""
    if callable(config):
        try:
            settings = config()
        except Exception:  # noqa: BLE001 - only for the hint
            settings = {}
        l1, l2 = settings.get("l1"), settings.get("l2")
        hints = []
        if l2:
            hints.append(f"sp.l2_regularizer({2 * float(l2):.6g})")  # Keras: l2 * sum(w**2)
        if l1:
            hints.append(f"sp.l1_regularizer({float(l1):.6g})")
        if len(hints) == 2:
            keras = f" (here: sp.slim.l1_l2_regularizer({float(l1):.6g}, {2 * float(l2):.6g}))"
        elif hints:
            keras = f" (here: {hints[0]})"
    what = (_describe(target) if inspect.isroutine(target)
            else f"a {type(target).__name__} object")
    return TypeError(
        f"sp.regularization_loss(): {_where(store, value, activity)} is {what} from "
        f"{package}, which computes on TensorFlow tensors, not on JAX arrays (under jit it cannot "
        "run at all).\n"
        "  fix: use sp.l2_regularizer(scale) / sp.l1_regularizer(scale) / "
        "sp.slim.l1_l2_regularizer(...), TF 1.x's contrib/slim regularizers (scale * sum(w**2) / 2 "
        "for l2; Keras's l2(x) is x * sum(w**2), i.e. sp.l2_regularizer(2 * x))" + keras
        + ", or any function of the jax.Array, e.g. lambda w: 0.01 * jnp.sum(w ** 2).")


def ran_tensorflow(error: BaseException) -> bool:
    """Whether ``error`` is JAX's refusal to make a NumPy array of a traced one, raised inside
    TensorFlow (a TF op given a JAX array: ``tf.nn.l2_loss(w)``, ``tf.nn.leaky_relu(x)``)."""
    if not isinstance(error, (jax.errors.TracerArrayConversionError,
                              jax.errors.ConcretizationTypeError)):
        return False
    tb = error.__traceback__
    while tb is not None:
        if f"{os.sep}tensorflow{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def call_error(store: Any, regularizer: Callable, value: Any, error: Exception) -> Optional[TypeError]:
    """The error for ``regularizer(value)`` raising ``error`` when its cause is how the regularizer
    was given: a TensorFlow regularizer, a factory passed without its scale, a function that
    cannot be called with the value alone, an activity regularizer returning no term. None
    otherwise (the regularizer's own error, raised as it is)."""
    tensorflow = tensorflow_error(store, regularizer, value)
    if tensorflow is None and ran_tensorflow(error):
        target, activity = _unwrapped(regularizer)
        return TypeError(
            f"sp.regularization_loss(): {_where(store, value, activity)}, {_describe(target)}, "
            "calls TensorFlow ops on the JAX array (TensorFlow reads it as a NumPy array, which a "
            f"traced one cannot be: {type(error).__name__}).\n"
            "  fix: write it with jax.numpy: wd * tf.nn.l2_loss(w) is sp.l2_regularizer(wd), or "
            "lambda w: wd * 0.5 * jnp.sum(w ** 2).")
    if tensorflow is not None or not isinstance(error, (TypeError, ValueError)):
        return tensorflow
    target, activity = _unwrapped(regularizer)
    call = _factories().get(target)
    if call is not None:
        return _forgotten_scale(_where(store, value, activity), call, returned=False)
    try:
        inspect.signature(target).bind(value)
    except TypeError as bind_error:
        return TypeError(
            f"sp.regularization_loss(): {_where(store, value, activity)}, {_describe(target)}, "
            f"cannot be called with the value alone ({bind_error}; the error was: {error}). A "
            "regularizer is called as regularizer(value) and returns the term.\n"
            "  fix: bind its other arguments first, e.g. functools.partial(f, scale=0.01) or "
            "lambda w: f(w, 0.01).")
    except ValueError:  # no signature to check (a builtin)
        return None
    if activity:  # the layer's penalty failed on the term: check what the regularizer returned
        try:
            term = target(value)
        except Exception:  # noqa: BLE001 - its own failure, raised as it was
            return None
        if term is not None and not hasattr(term, "dtype") and not isinstance(term, (int, float)):
            return term_error(store, regularizer, value, term)
    return None
