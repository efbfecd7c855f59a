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
