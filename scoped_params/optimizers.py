"""TF 1.x's Adam, as an optax transformation with TF's arithmetic, and its state from a TF checkpoint.

The porting guide maps ``tf.train``'s optimizers to optax settings that train step for step as TF's
do (``tests/test_optimizers_parity.py``). Adam is the one no setting reproduces: TF 1.x adds
``epsilon`` to ``sqrt(v)`` before the bias correction, which after it is ``epsilon / sqrt(1 -
beta2^t)``, where optax adds ``epsilon`` itself. The two agree as ``epsilon`` goes to 0 (TF's default
1e-8 gives the same weights to ~1e-6), and part from the first step for the larger values TF models
set for stability (1e-4 to 1.0). ``adam`` runs TF's kernel; ``adam_state_from_tf1`` picks up the
moments and step of a TF run from its ``Saver`` checkpoint, so a port resumes training where TF
stopped.

>>> optimizer = sp.optimizers.adam(1e-3, epsilon=1e-4)  # doctest: +SKIP
>>> state = optimizer.init(params)  # doctest: +SKIP
>>> updates, state = optimizer.update(grads, state)  # doctest: +SKIP
>>> params = optax.apply_updates(params, updates)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import CheckpointError, optional_import
from ._tree import flatten, unflatten

Schedule = Callable[[jax.Array], Any]


class MissingOptimizerStateError(CheckpointError, KeyError):
    """``adam_state_from_tf1``: the checkpoint lacks an Adam slot or beta power (a ``KeyError``)."""

    def __str__(self) -> str:  # the message as written, not KeyError's one-line repr of it
        return str(self.args[0]) if self.args else super().__str__()


class AdamState(NamedTuple):
    """TF 1.x's Adam state: the number of steps taken; TF's ``beta1_power``/``beta2_power`` (the betas
    raised to the number of the next step, kept by multiplication as TF keeps them); and, per
    parameter, the slots ``<name>/Adam`` (``m``) and ``<name>/Adam_1`` (``v``)."""
    step: jax.Array
    beta1_power: jax.Array
    beta2_power: jax.Array
    m: Any
    v: Any


def adam(learning_rate: Union[float, Schedule], beta1: float = 0.9, beta2: float = 0.999,
         epsilon: float = 1e-8):
    """``tf.compat.v1.train.AdamOptimizer(learning_rate, beta1, beta2, epsilon)`` as an
    ``optax.GradientTransformation``, with TF's kernel::

        alpha = lr * sqrt(1 - beta2_power) / (1 - beta1_power)
        m += (g - m) * (1 - beta1);  v += (g * g - v) * (1 - beta2)
        param -= m * alpha / (sqrt(v) + epsilon)

    computed in each parameter's dtype, then ``beta1_power *= beta1`` and ``beta2_power *= beta2``.
    ``learning_rate`` may be an optax schedule, called with the number of steps taken (0 at the first
    update, as TF's decays see the global step). The updates are to be added (``optax.apply_updates``).
    """
    optax = optional_import("optax", "optax", "examples", "sp.optimizers.adam")

    def init(params: Any) -> AdamState:
        zeros = lambda: jax.tree_util.tree_map(jnp.zeros_like, params)  # noqa: E731
        return AdamState(jnp.zeros([], jnp.int32), jnp.asarray(beta1, jnp.float32),
                         jnp.asarray(beta2, jnp.float32), zeros(), zeros())

    def update(grads: Any, state: AdamState, params: Any = None) -> Tuple[Any, AdamState]:
        del params
        lr = learning_rate(state.step) if callable(learning_rate) else learning_rate
        tree_map = jax.tree_util.tree_map

        def decay(beta: float, moment: jax.Array, target: jax.Array) -> jax.Array:
            return moment + (target - moment) * (_as(1, moment) - _as(beta, moment))

        def step(m: jax.Array, v: jax.Array) -> jax.Array:
            one = _as(1, m)
            alpha = _as(lr, m) * jnp.sqrt(one - _as(state.beta2_power, m)) / (
                one - _as(state.beta1_power, m))
            return -(m * alpha) / (jnp.sqrt(v) + _as(epsilon, m))

        m = tree_map(lambda g, m: decay(beta1, m, g), grads, state.m)
        v = tree_map(lambda g, v: decay(beta2, v, jnp.square(g)), grads, state.v)
        new = AdamState(state.step + 1, state.beta1_power * jnp.float32(beta1),
                        state.beta2_power * jnp.float32(beta2), m, v)
        return tree_map(step, m, v), new

    return optax.GradientTransformation(init, update)


def _as(x: Any, like: jax.Array) -> jax.Array:
    """``x`` in the dtype of ``like``: TF casts each scalar of the kernel to the variable's dtype."""
    return jnp.asarray(x, jnp.result_type(like))


def adam_state_from_tf1(checkpoint: Union[str, os.PathLike, Mapping[str, Any]], params: Any, *,
                        slots: Tuple[str, str] = ("Adam", "Adam_1"),
                        powers: Tuple[str, str] = ("beta1_power", "beta2_power"),
                        step: Optional[int] = None) -> AdamState:
    """The ``adam`` state a TF 1.x run saved: for each parameter of ``params`` (its names are the
    checkpoint's), the slots ``<name>/Adam`` and ``<name>/Adam_1``; TF's ``beta1_power`` and
    ``beta2_power``; and the number of steps taken, from ``global_step`` (or ``step=``, which wins).

    ``checkpoint`` is a ``Saver`` checkpoint (read with ``sp.checkpoint.load_tf1(...,
    include_optimizer_state=True, flat=True)``) or that flat mapping. A second Adam optimizer in the
    same graph names its entries ``Adam_2``/``Adam_3`` and ``beta1_power_1``/``beta2_power_1``: pass
    them as ``slots=`` and ``powers=``. Each array is cast to its parameter's dtype.
    """
    where = "the given mapping"
    if isinstance(checkpoint, (str, os.PathLike)):
        from ._tf1 import load_tf1

        where = f"TF 1.x checkpoint {os.fspath(checkpoint)!r}"
        checkpoint = load_tf1(checkpoint, include_optimizer_state=True, flat=True)
    names = flatten(params)
    wanted = [f"{n}/{s}" for n in names for s in slots] + list(powers)
    missing = [w for w in wanted if w not in checkpoint]
    if missing:
        nested = any(isinstance(v, Mapping) for v in checkpoint.values())
        raise MissingOptimizerStateError(
            f"adam_state_from_tf1: {where} has no {', '.join(map(repr, missing[:5]))}"
            + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "") + ".\n"
            "  found: " + (", ".join(repr(k) for k in sorted(checkpoint, key=str) if isinstance(k, str)
                                     and (k.endswith(slots) or k.startswith(powers)))[:300]
                           or "no Adam entries")
            + (" (the checkpoint given is a nested params tree: are the arguments swapped? the "
               "signature is adam_state_from_tf1(checkpoint, params))" if nested else "") + "\n"
            "  fix: save the TF run with its optimizer's variables (Saver's default), pass the params "
            "it trained, and, for a second optimizer, slots=('Adam_2', 'Adam_3') and "
            "powers=('beta1_power_1', 'beta2_power_1').")

    def slot(suffix):
        return unflatten({n: jnp.asarray(checkpoint[f"{n}/{suffix}"], jnp.result_type(v))
                          for n, v in names.items()})

    if step is None:
        step = int(np.asarray(checkpoint.get("global_step", 0)))
    return AdamState(jnp.asarray(step, jnp.int32), jnp.asarray(checkpoint[powers[0]], jnp.float32),
                     jnp.asarray(checkpoint[powers[1]], jnp.float32), slot(slots[0]),
                     slot(slots[1]))
