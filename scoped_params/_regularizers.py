"""Regularizers with TF 1.x's names: ``regularizer(param) -> scalar or None``."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax.numpy as jnp


def l2_regularizer(scale: float) -> Callable[[Any], Any]:
    """TF's ``l2_regularizer``: ``scale * sum(w**2) / 2``."""

    def regularizer(w):
        return scale * 0.5 * jnp.sum(jnp.square(w))

    return regularizer


def l1_regularizer(scale: float) -> Callable[[Any], Any]:
    """TF's ``l1_regularizer``: ``scale * sum(|w|)``."""

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
    ``l2_regularizer(scale_l2)`` (just one of them when the other scale is 0)."""
    for what, scale in (("scale_l1", scale_l1), ("scale_l2", scale_l2)):
        if isinstance(scale, int) and not isinstance(scale, bool):
            raise ValueError(f"{what} cannot be an integer: {scale} (as in TF).\n"
                             f"  fix: pass a float, e.g. {float(scale)}.")
    if scale_l1 == 0.0:
        return l2_regularizer(scale_l2)
    if scale_l2 == 0.0:
        return l1_regularizer(scale_l1)
    return sum_regularizer([l1_regularizer(scale_l1), l2_regularizer(scale_l2)])  # type: ignore[return-value]
