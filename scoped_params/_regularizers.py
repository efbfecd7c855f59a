"""Regularizers with TF 1.x's names: ``regularizer(param) -> scalar or None``."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import jax.numpy as jnp
import numpy as np


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
    """TF's ``l1_regularizer``: ``scale * sum(|w|)``. A scale of 0.0 gives ``no_regularizer`` (no
    term, as TF's ``lambda _: None``); an integer or negative scale is an error, as in TF.

    >>> float(sp.l1_regularizer(0.5)(jnp.array([1.0, -2.0])))
    1.5
    """
    return _weight_sum("l1_regularizer", scale, lambda w: jnp.sum(jnp.abs(w)))


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
