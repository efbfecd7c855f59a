"""TF's stock weight constraints (``tf.keras.constraints``, which the ``*_constraint=`` arguments of
``tf.layers`` take) as JAX functions, with Keras's arithmetic (its ``epsilon()`` of 1e-7 included).

A constraint is any callable ``value -> value``: give it to ``sp.get_param(..., constraint=...)``,
``sp.scope(..., constraint=...)`` or a layer's ``kernel_constraint=``, and project the params with
``sp.apply_constraints(params, specs)`` after each optimizer step, where TF's optimizers did.

>>> kernel = sp.layers.dense(x, 64, kernel_constraint=sp.constraints.max_norm(2.0))  # doctest: +SKIP

The layers also take Keras's identifiers, as TF's do: ``"max_norm"``, ``"non_neg"``, ``"unit_norm"``,
``"min_max_norm"``, ``"radial_constraint"`` (and the class names), or
``{"class_name": "MaxNorm", "config": {...}}``.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import TF_PACKAGES

Axis = Union[int, Sequence[int]]

_EPSILON = 1e-7  # Keras's backend.epsilon()


def _norms(w: jax.Array, axis: Axis) -> jax.Array:
    axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=axis, keepdims=True))


def _clip(x: jax.Array, min_value: Any, max_value: Any) -> jax.Array:
    """Keras's ``backend.clip``: with ``max_value < min_value`` the result is ``min_value`` (Keras
    raises max_value to min_value, and tf.clip_by_value takes the minimum first), where
    ``jnp.clip`` would give ``max_value``. ``None`` is no bound."""
    if max_value is not None:
        x = jnp.minimum(x, max_value)
    return x if min_value is None else jnp.maximum(x, min_value)


class Constraint:
    """Base of the stock constraints: a callable ``value -> value`` with Keras's ``get_config``."""

    def __call__(self, w: jax.Array) -> jax.Array:
        return w

    def get_config(self) -> dict:
        return dict(vars(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class MaxNorm(Constraint):
    """Scale each slice along ``axis`` (each unit's incoming weights, ``axis=0`` for a dense kernel,
    ``axis=[0, 1, 2]`` for an HWIO conv kernel) down to a norm of at most ``max_value`` (a negative
    ``max_value`` gives zeros, as in Keras, whose clip raises it to the minimum, 0)."""

    def __init__(self, max_value: float = 2, axis: Axis = 0):
        self.max_value = max_value
        self.axis = axis

    def __call__(self, w: jax.Array) -> jax.Array:
        norms = _norms(w, self.axis)
        desired = _clip(norms, 0, self.max_value)
        return w * (desired / (_EPSILON + norms))


class NonNeg(Constraint):
    """Zero the negative entries."""

    def __call__(self, w: jax.Array) -> jax.Array:
        return w * (w >= 0).astype(w.dtype)


class UnitNorm(Constraint):
    """Scale each slice along ``axis`` to norm 1."""

    def __init__(self, axis: Axis = 0):
        self.axis = axis

    def __call__(self, w: jax.Array) -> jax.Array:
        return w / (_EPSILON + _norms(w, self.axis))


class MinMaxNorm(Constraint):
    """Move each slice's norm along ``axis`` into ``[min_value, max_value]``: to
    ``rate * clip(norm) + (1 - rate) * norm`` (``rate=1`` enforces the bounds at once). With
    ``max_value < min_value`` the clip gives ``min_value``, as Keras's ``backend.clip`` does."""

    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0,
                 axis: Axis = 0):
        self.min_value = min_value
        self.max_value = max_value
        self.rate = rate
        self.axis = axis

    def __call__(self, w: jax.Array) -> jax.Array:
        norms = _norms(w, self.axis)
        desired = self.rate * _clip(norms, self.min_value, self.max_value) + (
            1 - self.rate) * norms
        return w * (desired / (_EPSILON + norms))


class RadialConstraint(Constraint):
    """Give each ring of a square conv kernel ``(k, k, in, out)`` one value, per input and output
    channel: Keras's ``RadialConstraint``, whose rings take the diagonal entries below.

    Ring 0 (the centre: 1x1 for odd ``k``, 2x2 for even ``k``) takes ``w[s-1, s-1]`` with
    ``s = k // 2``; ring ``j`` takes ``w[s+j, s+j]`` for even ``k`` and ``w[s+j-1, s+j-1]`` for odd
    ``k`` (Keras's arithmetic, which its docstring's 4x4 example does not show).
    """

    def __call__(self, w: jax.Array) -> jax.Array:
        if jnp.ndim(w) != 4:
            raise ValueError(f"The weight tensor must have rank 4. Received weight tensor with shape: "
                             f"{jnp.shape(w)}")
        k, width = jnp.shape(w)[:2]
        if k != width or k < 2:
            raise ValueError(f"RadialConstraint needs a square kernel of at least 2x2 (rows, cols, "
                             f"in, out), got shape {jnp.shape(w)}.")
        s, odd = k // 2, k % 2 == 1
        # Each entry's ring: its distance from the centre (one row wide for odd k, two for even).
        position = np.abs(np.arange(k) - (s if odd else s - 0.5)).astype(int)
        ring = np.maximum(position[:, None], position[None, :])
        # The diagonal entry each ring takes (see above).
        source = np.where(ring == 0, s - 1, ring + (s - 1 if odd else s))
        return w[source, source]


# Keras's function-style names.
max_norm = MaxNorm
non_neg = NonNeg
unit_norm = UnitNorm
min_max_norm = MinMaxNorm
radial_constraint = RadialConstraint

_BY_NAME = {"max_norm": MaxNorm, "MaxNorm": MaxNorm, "non_neg": NonNeg, "NonNeg": NonNeg,
            "unit_norm": UnitNorm, "UnitNorm": UnitNorm, "min_max_norm": MinMaxNorm,
            "MinMaxNorm": MinMaxNorm, "radial_constraint": RadialConstraint,
            "RadialConstraint": RadialConstraint}


def get(identifier: Any) -> Optional[Callable[[jax.Array], jax.Array]]:
    """A constraint from what Keras's layers accept: ``None``, a callable (returned as is), a name
    (``"max_norm"``, ``"MaxNorm"``, ...) or a config ``{"class_name": ..., "config": {...}}``."""
    if identifier is None or callable(identifier):
        return identifier
    if isinstance(identifier, dict) and isinstance(identifier.get("class_name"), str):
        cls, config = _BY_NAME.get(identifier["class_name"]), identifier.get("config") or {}
        name = identifier["class_name"]
    elif isinstance(identifier, str):
        cls, config, name = _BY_NAME.get(identifier), {}, identifier
    else:
        raise ValueError(
            f"Could not interpret constraint identifier: {identifier!r}.\n"
            "  fix: pass a function value -> value, an sp.constraints object, or one of the names "
            f"{sorted(_BY_NAME)}.")
    if cls is None:
        raise ValueError(
            f"Unknown constraint {name!r}.\n"
            f"  fix: use one of {sorted(_BY_NAME)}, or pass your own function value -> value.")
    return cls(**config)


# --- TensorFlow's constraints given where a JAX one is expected (errors only) ----------------------

_NAMES = {MaxNorm: "max_norm", NonNeg: "non_neg", UnitNorm: "unit_norm", MinMaxNorm: "min_max_norm",
          RadialConstraint: "radial_constraint"}


def _unwrapped(constraint: Any) -> Any:
    """The constraint the user gave, under the wrappers put around it on the way (``jax.vmap`` of
    ``sp.layer_stack``, ``functools.wraps``/``partial``)."""
    for _ in range(16):  # a bounded walk: a wrapper chain is short, a cycle is possible
        inner = getattr(constraint, "__wrapped__", None)
        if inner is None and isinstance(constraint, functools.partial):
            inner = constraint.func
        if inner is None or inner is constraint:
            return constraint
        constraint = inner
    return constraint


def _tensorflow_origin(constraint: Any) -> Optional[str]:
    """The TensorFlow package ``constraint`` (unwrapped) comes from, or None: a Keras 3 constraint
    runs on JAX arrays with Keras's JAX backend, and is not refused then."""
    module = getattr(constraint if inspect.isroutine(constraint) else type(constraint),
                     "__module__", None)
    package = module.split(".", 1)[0] if isinstance(module, str) else ""
    if package not in TF_PACKAGES:
        return None
    if package == "keras":
        try:
            if sys.modules["keras"].config.backend() == "jax":
                return None
        except Exception:  # noqa: BLE001 - an older or partial Keras: its backend is TensorFlow
            pass
    return package


def _equivalent(constraint: Any) -> Optional[str]:
    """``sp.constraints.<name>(<its config>)`` for a Keras constraint object of a stock class."""
    ours = next((cls for cls in _NAMES if cls.__name__ == type(constraint).__name__), None)
    if ours is None:
        return None
    try:
        config = dict(constraint.get_config())
    except Exception:  # noqa: BLE001 - only for the hint
        config = {}
    taken = inspect.signature(ours).parameters
    args = ", ".join(f"{k}={v!r}" for k, v in config.items() if k in taken)
    return f"sp.constraints.{_NAMES[ours]}({args})"


def _tensorflow_error(full: str, constraint: Any, where: str = "") -> Optional[TypeError]:
    """The error for a TensorFlow constraint (a ``tf.keras.constraints`` object, a TF function) as
    the constraint of the parameter ``full``: it computes on TF tensors, so ``sp.apply_constraints``
    would put TF tensors into the params, or fail under ``jit``. None if it is not one. ``where``
    prefixes the message (the API that found it)."""
    target = _unwrapped(constraint)
    package = _tensorflow_origin(target)
    if package is None:
        return None
    what = (getattr(target, "__qualname__", None) or repr(target) if inspect.isroutine(target)
            else f"a {type(target).__name__} object")
    equivalent = _equivalent(target)
    shown = repr(target)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    return TypeError(
        f"{where}The constraint of '{full}' is {what} from {package}, which computes on TensorFlow "
        "tensors, not on JAX arrays: sp.apply_constraints would put TensorFlow tensors into the "
        "params (under jit it cannot run at all).\n"
        f"  asked: constraint={shown} (get_param's constraint=, a layer's "
        "kernel_constraint=/bias_constraint=, or the scope's constraint=)\n"
        "  fix: use " + (f"{equivalent}, Keras's arithmetic in JAX; sp.constraints has "
                         if equivalent else "sp.constraints, Keras's constraints in JAX: ")
        + "max_norm, non_neg, unit_norm, min_max_norm and radial_constraint; or any function of "
        "the jax.Array, e.g. lambda w: jnp.clip(w, -1.0, 1.0).")
