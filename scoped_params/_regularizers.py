"""Regularizers with TF 1.x's names: ``regularizer(param) -> scalar or None``."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import jax.numpy as jnp


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


def l2_regularizer(scale: float) -> Callable[[Any], Any]:
    """TF's ``l2_regularizer``: ``scale * sum(w**2) / 2``. A scale of 0.0 gives ``no_regularizer``
    (no term, as TF's ``lambda _: None``); an integer or negative scale is an error, as in TF.

    >>> float(sp.l2_regularizer(0.5)(jnp.array([1.0, 2.0])))
    1.25
    """
    if _check_scale("l2_regularizer", "scale", scale):
        return no_regularizer

    def regularizer(w):
        return scale * 0.5 * jnp.sum(jnp.square(w))

    return regularizer


def l1_regularizer(scale: float) -> Callable[[Any], Any]:
    """TF's ``l1_regularizer``: ``scale * sum(|w|)``. A scale of 0.0 gives ``no_regularizer`` (no
    term, as TF's ``lambda _: None``); an integer or negative scale is an error, as in TF.

    >>> float(sp.l1_regularizer(0.5)(jnp.array([1.0, -2.0])))
    1.5
    """
    if _check_scale("l1_regularizer", "scale", scale):
        return no_regularizer

    def regularizer(w):
        return scale * jnp.sum(jnp.abs(w))

    return regularizer


def no_regularizer(_: Any) -> Optional[Any]:
    """TF's ``no_regularizer``: switches an inherited regularizer off (per parameter or per scope)."""
    return None


def sum_regularizer(regularizer_list: Any) -> Optional[Callable[[Any], Any]]:
    """TF's ``contrib.layers.sum_regularizer``: the sum of the terms of ``regularizer_list`` (``None``
    entries, and terms that are ``None``, are skipped); ``None`` for an empty list."""
    regularizers = [r for r in regularizer_list if r is not None]
    if not regularizers:
        return None

    def regularizer(w):
        terms = [term for term in (r(w) for r in regularizers) if term is not None]
        return sum(terms[1:], terms[0]) if terms else None

    return regularizer


def l1_l2_regularizer(scale_l1: float = 1.0, scale_l2: float = 1.0) -> Callable[[Any], Any]:
    """TF's ``contrib.layers.l1_l2_regularizer``: ``l1_regularizer(scale_l1)`` plus
    ``l2_regularizer(scale_l2)`` (just one of them when the other scale is 0, ``no_regularizer``
    when both are); an integer or negative scale is an error, as in TF."""
    for argument, scale in (("scale_l1", scale_l1), ("scale_l2", scale_l2)):
        _check_scale("l1_l2_regularizer", argument, scale)
    if scale_l1 == 0.0:
        return l2_regularizer(scale_l2)
    if scale_l2 == 0.0:
        return l1_regularizer(scale_l1)
    return sum_regularizer([l1_regularizer(scale_l1), l2_regularizer(scale_l2)])  # type: ignore[return-value]
