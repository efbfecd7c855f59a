"""Mixed precision with TF 1.x's recipe: parameters stored in float32, computed in a low-precision dtype.

The classic TF 1.x idiom is a custom getter on the model's variable scope: layers ask for float16
(or bfloat16) variables, the getter creates float32 ones and returns them cast down. Gradients flow
back through the cast into the float32 master weights, so the optimizer updates float32 values.

>>> def fn(x):
...     with sp.mixed_precision.scope("model", compute_dtype=jnp.bfloat16):
...         h = sp.layers.dense(x.astype(jnp.bfloat16), 64, activation=jax.nn.relu)
...         return sp.layers.dense(h, 10).astype(jnp.float32)
>>> params = sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 8)))
>>> params["model"]["dense"]["kernel"].dtype
dtype('float32')

float16 needs loss scaling too, as TF's ``LossScaleOptimizer`` did: small gradients of float16
activations flush to zero. Scale the loss up before ``jax.grad``, the gradients down after, adjust
the scale, and skip the update of a step whose gradients are not finite. The loss scale is a pytree
value (``DynamicLossScale`` or ``StaticLossScale``) carried through a jitted step with optax:

>>> import optax
>>> def loss_fn(x, y):
...     with sp.mixed_precision.scope("net", compute_dtype=jnp.float16):
...         pred = sp.layers.dense(x.astype(jnp.float16), 1)
...     return jnp.mean((pred.astype(jnp.float32) - y) ** 2)
>>> model, opt = sp.transform(loss_fn), optax.adam(1e-3)
>>> @jax.jit
... def train_step(params, opt_state, loss_scale, x, y):
...     grads = jax.grad(lambda p: loss_scale.scale(model.apply(p, x, y)))(params)
...     grads = loss_scale.unscale(grads)
...     finite = sp.mixed_precision.all_finite(grads)
...     loss_scale = loss_scale.adjust(finite)
...     updates, new_opt_state = opt.update(grads, opt_state, params)
...     new_params = optax.apply_updates(params, updates)
...     params, opt_state = sp.mixed_precision.select_tree(
...         finite, (new_params, new_opt_state), (params, opt_state))
...     return params, opt_state, loss_scale
>>> x, y = jnp.full((8, 4), 0.01), jnp.zeros((8, 1))
>>> params = model.init(jax.random.key(0), x, y)
>>> opt_state = opt.init(params)
>>> loss_scale = sp.mixed_precision.DynamicLossScale()  # TF's: 2**15, x2 after 2000 finite steps
>>> params, opt_state, loss_scale = train_step(params, opt_state, loss_scale, x, y)
>>> float(loss_scale.loss_scale), int(loss_scale.good_steps)
(32768.0, 1)

A scale too large for float16 overflows the gradients: the step is skipped and the scale halved.

>>> too_big = sp.mixed_precision.DynamicLossScale(2.0 ** 40)
>>> new_params, _, too_big = train_step(params, opt_state, too_big, x, y)
>>> float(too_big.loss_scale), jax.tree.all(jax.tree.map(jnp.array_equal, new_params, params))
(549755813888.0, True)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ContextManager, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ._scope import Scope, _check_getter, as_np_dtype, call_getter
from ._scope import scope as _scope

__all__ = ["DynamicLossScale", "StaticLossScale", "all_finite", "cast_floating",
           "float32_storage_getter", "scope", "select_tree"]

_LOW_PRECISION = (np.dtype(jnp.bfloat16), np.dtype(jnp.float16))
_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)  # jax.Array covers tracers too


def float32_storage_getter(compute_dtype: Any = jnp.bfloat16) -> Callable:
    """A custom getter that stores trainable ``compute_dtype`` requests as float32 and returns them
    cast (TF's ``float32_variable_storage_getter`` recipe).

    Requests for other dtypes (float32 parameters, integer tables, batch-norm statistics) pass
    through unchanged, and so do state and ``trainable=False`` parameters (kept in the dtype asked
    for, as in TF's recipe: what the model reads it can write back with ``set_state``); a constant
    initializer holding integers or bools keeps its dtype. Use it as ``sp.scope(..., custom_getter=float32_storage_getter())``; it nests
    with other getters like any TF custom getter.
    """
    try:
        compute = as_np_dtype(compute_dtype)  # TF's tf.bfloat16 too, as sp.scope(dtype=) takes
    except (TypeError, ValueError):
        raise TypeError(f"float32_storage_getter: compute_dtype={compute_dtype!r} is not a dtype "
                        "JAX has.\n  fix: a float dtype such as jnp.bfloat16 or jnp.float16 (TF's "
                        "tf.bfloat16 works too).") from None
    if not jnp.issubdtype(compute, jnp.floating):
        raise TypeError(f"mixed precision's compute_dtype must be a float dtype, got {compute}.\n"
                        "  fix: compute_dtype=jnp.bfloat16 or jnp.float16 (for integer parameters, "
                        "pass get_param(dtype=jnp.int32) inside the scope).")

    def getter(next_getter, name, *args, **kwargs):
        # TF's getter order is (name, shape=None, dtype=None, initializer=None, regularizer=None,
        # reuse=None, trainable=None, ...): an outer getter may forward them by position.
        positional = len(args) > 1
        dtype = args[1] if positional else kwargs.get("dtype")
        if dtype is None:
            return next_getter(name, *args, **kwargs)
        # TF's recipe (float32_variable_storage_getter) keeps only trainable variables in float32:
        # state and trainable=False parameters stay in the dtype asked for, so that what the model
        # reads it can write back (set_state) as it was
        trainable = args[5] if len(args) > 5 else kwargs.get("trainable")
        if trainable is not None and not trainable:  # TF's truthiness: 0 and np.False_ too
            return next_getter(name, *args, **kwargs)
        try:
            requested = as_np_dtype(dtype)
        except (TypeError, ValueError):  # not a dtype: get_param's own error names the parameter
            return next_getter(name, *args, **kwargs)
        if requested != compute:
            return next_getter(name, *args, **kwargs)
        if positional:
            value = next_getter(name, args[0], jnp.float32, *args[2:], **kwargs)
        else:
            value = next_getter(name, *args, **{**kwargs, "dtype": jnp.float32})
        # a constant initializer of its own dtype (an int table, a bool flag) made what it holds
        return value.astype(compute) if jnp.issubdtype(value.dtype, jnp.floating) else value

    return getter


def scope(name_or_scope: Any = None, *, compute_dtype: Any = jnp.bfloat16,
          custom_getter: Optional[Callable] = None, **scope_kwargs: Any) -> ContextManager[Scope]:
    """``sp.scope`` whose parameters default to ``compute_dtype`` but are stored in float32.

    Sets the scope's ``dtype`` to ``compute_dtype`` (so ``sp.get_param`` without ``dtype=`` computes
    in it) and installs ``float32_storage_getter(compute_dtype)``; an extra ``custom_getter`` runs
    outside it. Layers compute in their input's dtype, so cast the input to ``compute_dtype``.
    """
    if "dtype" in scope_kwargs:  # else Python's "got multiple values for keyword argument 'dtype'"
        dtype = scope_kwargs["dtype"]
        try:
            shown = as_np_dtype(dtype).name
        except (TypeError, ValueError):
            shown = None
        if shown is None:  # not a dtype at all: no jnp.<name> to suggest
            fix = (f"compute_dtype= a float dtype such as jnp.bfloat16 ({dtype!r} is not a dtype "
                   "JAX has).")
        else:
            fix = (f"compute_dtype=jnp.{shown} (for a scope whose parameters are stored in "
                   f"{shown}, use sp.scope({name_or_scope!r}, dtype=...) instead).")
        raise TypeError(
            f"sp.mixed_precision.scope({name_or_scope!r}, dtype={shown or repr(dtype)}): the "
            "scope's dtype is compute_dtype=, and parameters are always stored in float32 (the "
            "getter stores compute_dtype requests as float32 and returns them cast).\n"
            f"  fix: {fix}")
    getter = float32_storage_getter(compute_dtype)
    if custom_getter is not None:
        _check_getter(custom_getter)  # as sp.scope checks it, before it is wrapped in a function
        inner = getter

        def getter(next_getter, name, *args, **kwargs):  # noqa: F811 - the composed getter
            # called as TF calls a getter: name by keyword, constraint=/sharding= only if it takes them
            return call_getter(custom_getter, lambda *a, **k: inner(next_getter, *a, **k), args,
                               {"name": name, **kwargs})

    return _scope(name_or_scope, dtype=compute_dtype, custom_getter=getter, **scope_kwargs)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Cast every floating array leaf of ``tree`` to ``dtype``: JAX and NumPy arrays and NumPy
    scalars. Integer and bool leaves are kept, and so are Python scalars and other objects (a
    learning rate of ``1e-3`` in an optimizer-state-like tree is no parameter; weakly typed, it
    already computes in the dtype of the arrays it meets).

    >>> tree = sp.mixed_precision.cast_floating({"w": jnp.ones(2), "lr": 1e-3}, jnp.bfloat16)
    >>> tree["w"].dtype, tree["lr"]
    (dtype(bfloat16), 0.001)
    """
    dtype = as_np_dtype(dtype)  # TF's tf.bfloat16 too

    def cast(x):
        if isinstance(x, _ARRAY_TYPES) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree_util.tree_map(cast, tree)


# Loss scaling: TF's LossScaleOptimizer as values (DeepMind jmp's design). The state is a pytree
# whose leaves are the scale and its counters; the schedule's settings are static (in the treedef).

def _static(default: Any) -> Any:
    return dataclasses.field(default=default, metadata={"static": True})


def _pytree(cls: Any) -> Any:
    """Register the frozen dataclass ``cls`` as a pytree: its ``_static`` fields are metadata, the
    others leaves. Unflattening sets the fields without ``__init__``: ``jax.tree.map`` over a state
    rebuilds it from whatever the function returns (``jax.tree.map(lambda _: 0, s)`` for vmap's
    ``in_axes``, abstract values under ``jit``), which the constructor's checks and conversions are
    not for."""
    fields = [f.name for f in dataclasses.fields(cls)]
    meta = tuple(n for n in fields if dataclasses.fields(cls)[fields.index(n)].metadata.get("static"))
    data = tuple(n for n in fields if n not in meta)
    keys = tuple(jax.tree_util.GetAttrKey(n) for n in data)

    def flatten_with_keys(obj: Any) -> Any:
        return tuple(zip(keys, (getattr(obj, n) for n in data))), tuple(getattr(obj, n) for n in meta)

    def flatten(obj: Any) -> Any:
        return tuple(getattr(obj, n) for n in data), tuple(getattr(obj, n) for n in meta)

    def unflatten(aux: Any, children: Any) -> Any:
        obj = object.__new__(cls)
        for name, value in zip(meta + data, tuple(aux) + tuple(children)):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _leaf(value: Any, dtype: Any) -> Any:
    """A Python or NumPy number as a 0-d NumPy array of ``dtype``; anything else (an array, a tracer,
    a placeholder JAX puts in while rebuilding the tree) as it is."""
    return np.asarray(value, dtype) if _is_number(value) else value


_INT32_MAX = 2 ** 31 - 1  # the counters are int32 (JAX's default integers)


def _not_a_number(where: str, arg: str, value: Any, fix: str, setting: bool = False) -> TypeError:
    kind = ("bool" if _is_bool(value) else f"an array of {value.dtype}" if _is_array(value)
            else type(value).__name__)
    what = ("a Python or NumPy number (a setting, not part of the state: it is static in the "
            "pytree, so jax.jit needs it hashable)" if setting and _is_array(value) else "a number")
    return TypeError(f"sp.mixed_precision.{where}({arg}={value!r}): {arg} must be {what}, got "
                     f"{kind}.\n  fix: {fix}")


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) or (
        _is_array(value) and np.dtype(value.dtype) == np.bool_)


def _is_array(value: Any) -> bool:
    return isinstance(value, _ARRAY_TYPES) and not isinstance(value, np.generic)


def _check_positive(where: str, arg: str, value: Any, fix: str, setting: bool = False) -> None:
    """Refuse what is not a number (bool, str, None, ...) with a TypeError, and a Python or NumPy
    number (or NumPy array) that is not positive and finite with a ValueError. A JAX array (a state
    carried through a training loop, a tracer under jit) is the program's business; a ``setting``
    (a static field) must be a number."""
    if _is_bool(value) or not (_is_number(value) or _is_array(value)) or (
            setting and _is_array(value)):
        raise _not_a_number(where, arg, value, fix, setting)
    if _is_array(value) and not jnp.issubdtype(value.dtype, jnp.number):
        raise _not_a_number(where, arg, value, fix)
    if isinstance(value, jax.Array):
        return
    values = np.asarray(value)
    if not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise ValueError(f"sp.mixed_precision.{where}({arg}={value!r}): {arg} must be a positive "
                         f"finite number, got {value!r}.\n  fix: {fix}")


def _check_count(arg: str, value: Any, what: str, fix: str) -> int:
    """A count of steps: an integer (``2000.0`` too, as TF's ``int(increment_period)`` takes it)
    from 1 to 2**31 - 1, the largest the int32 counters reach."""
    message = (f"sp.mixed_precision.DynamicLossScale({arg}={value!r}): {arg} must be an "
               f"integer >= 1 ({what}), got {value!r}.\n  fix: {fix}")
    if not _is_number(value):
        raise TypeError(message)
    if not (value >= 1 and float(value).is_integer()):
        raise ValueError(message)
    if value > _INT32_MAX:
        raise ValueError(
            f"sp.mixed_precision.DynamicLossScale({arg}={value!r}): {arg} must be at most "
            f"2**31 - 1 ({_INT32_MAX}): the step counters are int32 (TF's were int64), and "
            f"{value!r} is more steps than they count to.\n  fix: {arg}={_INT32_MAX} (68 years "
            "at a step a second: a scale that never "
            + ("grows" if arg == "period" else "falls") + " in practice)"
            + ("; for a loss scale that never changes, sp.mixed_precision.StaticLossScale("
               "loss_scale)." if arg == "period" else "."))
    return int(value)


def _check_scalar_bool(where: str, arg: str, value: Any) -> jax.Array:
    value = jnp.asarray(value)
    if value.shape != () or value.dtype != jnp.bool_:
        raise ValueError(
            f"sp.mixed_precision.{where}: {arg} must be a scalar bool such as all_finite(grads), "
            f"got shape {value.shape} {value.dtype}.\n  fix: one bool for the whole tree, "
            "sp.mixed_precision.all_finite(grads) (TF's LossScaleOptimizer applies all the "
            "gradients or none).")
    return value


class _Scaling:
    loss_scale: Any

    def scale(self, tree: Any) -> Any:
        """``tree`` (the loss) times the loss scale cast to each leaf's dtype, as TF's
        ``get_scaled_loss``: a float16 loss scaled past 65504 is inf, a float32 one is not."""
        scale = jnp.asarray(self.loss_scale, jnp.float32)
        return jax.tree_util.tree_map(lambda x: _times(x, scale), tree)

    def unscale(self, tree: Any) -> Any:
        """``tree`` (the gradients) times ``1 / loss_scale``, as TF's ``get_unscaled_gradients``."""
        inverse = 1 / jnp.asarray(self.loss_scale, jnp.float32)
        return jax.tree_util.tree_map(lambda x: _times(x, inverse), tree)


def _times(x: Any, factor: jax.Array) -> Any:
    """``x * factor`` in ``x``'s dtype; a float0 leaf (the gradient of an integer parameter, under
    ``jax.grad(allow_int=True)``) as it is, as TF passes a None gradient through."""
    if getattr(x, "dtype", None) == jax.dtypes.float0:
        return x
    return x * factor.astype(jnp.result_type(x))


@_pytree
@dataclasses.dataclass(frozen=True)
class StaticLossScale(_Scaling):
    """A loss scale that never changes: TF's ``FixedLossScale(loss_scale_value)`` and contrib's
    ``FixedLossScaleManager(loss_scale)``.

    >>> s = sp.mixed_precision.StaticLossScale(128.0)
    >>> float(s.scale(jnp.float32(0.5))), s.adjust(False) is s
    (64.0, True)

    contrib's ``LossScaleOptimizer`` skipped a non-finite step with it, and the recipe's
    ``select_tree`` does; TF 1.14+'s ``FixedLossScale`` applied it (drop ``select_tree`` for that).
    """

    loss_scale: Any

    def __post_init__(self) -> None:
        _check_positive("StaticLossScale", "loss_scale", self.loss_scale,
                        "StaticLossScale(2.0 ** 15), or another power of two the model's gradients "
                        "stay finite with (TF's FixedLossScale takes one >= 1).")
        object.__setattr__(self, "loss_scale", _leaf(self.loss_scale, np.float32))

    def adjust(self, grads_finite: Any) -> "StaticLossScale":
        """The same loss scale, whatever ``grads_finite`` is."""
        del grads_finite
        return self


@_pytree
@dataclasses.dataclass(frozen=True)
class DynamicLossScale(_Scaling):
    """TF's dynamic loss scale: grows after ``period`` finite steps in a row, falls on overflow.

    ``adjust(finite)`` returns the next state. A finite step counts toward ``period``; the
    ``period``-th multiplies the scale by ``factor`` (kept if that is inf in float32). A non-finite
    step resets that count and counts toward ``decrease_period``; the ``decrease_period``-th since
    the last change lowers the scale (divided by ``factor``, or times ``decrease_factor`` if given),
    to no less than ``min_loss_scale``. Any change resets both counts (``good_steps``, ``bad_steps``:
    int32, so a period is at most 2**31 - 1 steps). The settings are Python or NumPy numbers (a
    bool or a string is a ``TypeError``); the scale is a number or an array.
    The defaults are TF's, and each TF configuration is one setting:

    - TF 1.14+'s ``enable_mixed_precision_graph_rewrite(opt)``, ``tf.compat.v1.mixed_precision.
      DynamicLossScale(initial_loss_scale=2**15, increment_period=2000, multiplier=2.)``:
      ``DynamicLossScale(initial_loss_scale, increment_period, multiplier)`` (divides by the
      multiplier on every non-finite step, floor 1).
    - ``tf.keras.mixed_precision.LossScaleOptimizer(opt, initial_scale=2**15,
      dynamic_growth_steps=2000)``: ``DynamicLossScale(initial_scale, dynamic_growth_steps)``.
    - contrib's ``ExponentialUpdateLossScaleManager(init_loss_scale, incr_every_n_steps,
      decr_every_n_nan_or_inf=2, incr_ratio=2, decr_ratio=0.8)``:
      ``DynamicLossScale(init_loss_scale, incr_every_n_steps, incr_ratio,
      decrease_period=decr_every_n_nan_or_inf, decrease_factor=decr_ratio)`` (times 0.8 after every second non-finite step since the last
      change, in a row or not).

    >>> s = sp.mixed_precision.DynamicLossScale(2.0 ** 15, period=2)
    >>> for finite in [True, True, False]:
    ...     s = s.adjust(finite)
    ...     print(float(s.loss_scale), int(s.good_steps))
    32768.0 1
    65536.0 0
    32768.0 0
    """

    loss_scale: Any = 2.0 ** 15
    period: int = _static(2000)
    factor: float = _static(2.0)
    _: dataclasses.KW_ONLY
    decrease_period: int = _static(1)
    decrease_factor: Optional[float] = _static(None)
    min_loss_scale: float = _static(1.0)
    good_steps: Any = 0
    bad_steps: Any = 0

    def __post_init__(self) -> None:
        # Runs when a user builds one (never when JAX rebuilds the tree: _pytree).
        _check_positive("DynamicLossScale", "loss_scale", self.loss_scale,
                        "loss_scale=2.0 ** 15 (TF's initial_loss_scale; a scale too large comes "
                        "down by itself in a few steps, one too small grows only every period).")
        period = _check_count("period", self.period, "finite steps before the scale grows: TF's "
                              "increment_period, contrib's incr_every_n_steps",
                              "period=2000 (TF's default).")
        if not (_is_number(self.factor) and math.isfinite(self.factor) and self.factor > 1):
            raise (ValueError if _is_number(self.factor) else TypeError)(
                f"sp.mixed_precision.DynamicLossScale(factor={self.factor!r}): factor must be > 1 "
                f"(the multiplier of an increase: TF's multiplier, contrib's incr_ratio), got "
                f"{self.factor!r}.\n  fix: factor=2.0 (TF's default); for a loss scale that never "
                "changes, sp.mixed_precision.StaticLossScale(loss_scale).")
        decrease_period = _check_count(
            "decrease_period", self.decrease_period, "non-finite steps since the last change "
            "before the scale falls: contrib's decr_every_n_nan_or_inf",
            "decrease_period=1 (TF 1.14+), or 2 (contrib's default).")
        dec = self.decrease_factor
        if dec is not None and not (_is_number(dec) and 0 < dec < 1):
            raise (ValueError if _is_number(dec) else TypeError)(
                f"sp.mixed_precision.DynamicLossScale(decrease_factor={dec!r}): decrease_factor "
                f"must be in (0, 1) (the multiplier of a decrease: contrib's decr_ratio), got "
                f"{dec!r}.\n  fix: decrease_factor=0.8 (contrib's default), or None to divide by "
                "factor as TF 1.14+ does.")
        _check_positive("DynamicLossScale", "min_loss_scale", self.min_loss_scale,
                        "min_loss_scale=1.0 (TF's floor).", setting=True)
        set_field = object.__setattr__
        # The settings as Python numbers: static in the pytree, compared and hashed by value.
        set_field(self, "period", period)
        set_field(self, "factor", float(self.factor))
        set_field(self, "decrease_period", decrease_period)
        if dec is not None:
            set_field(self, "decrease_factor", float(dec))
        set_field(self, "min_loss_scale", float(self.min_loss_scale))
        set_field(self, "loss_scale", _leaf(self.loss_scale, np.float32))
        set_field(self, "good_steps", _leaf(self.good_steps, np.int32))
        set_field(self, "bad_steps", _leaf(self.bad_steps, np.int32))

    def adjust(self, grads_finite: Any) -> "DynamicLossScale":
        """The state after a step whose gradients were all finite (``grads_finite``) or not."""
        finite = _check_scalar_bool("DynamicLossScale.adjust(grads_finite)", "grads_finite",
                                    grads_finite)
        scale = jnp.asarray(self.loss_scale, jnp.float32)
        good = jnp.asarray(self.good_steps, jnp.int32)
        bad = jnp.asarray(self.bad_steps, jnp.int32)
        grow = good + 1 >= self.period
        shrink = bad + 1 >= self.decrease_period
        grown = scale * self.factor
        grown = jnp.where(jnp.isfinite(grown), grown, scale)
        # TF 1.14+ divides (exact for any multiplier); contrib multiplies by its decr_ratio. The
        # barrier keeps XLA from rewriting the division by a constant into a multiplication by its
        # rounded inverse under jit (5 / 1.5 would be 3.3333335, TF's is 3.3333333).
        if self.decrease_factor is None:
            lowered = scale / jax.lax.optimization_barrier(jnp.float32(self.factor))
        else:
            lowered = scale * self.decrease_factor
        lowered = jnp.maximum(lowered, self.min_loss_scale)
        return dataclasses.replace(
            self,
            loss_scale=jnp.where(finite, jnp.where(grow, grown, scale),
                                 jnp.where(shrink, lowered, scale)),
            good_steps=jnp.where(finite & ~grow, good + 1, 0),
            bad_steps=jnp.where(finite, jnp.where(grow, 0, bad), jnp.where(shrink, 0, bad + 1)))


def all_finite(tree: Any) -> jax.Array:
    """A scalar bool: whether every element of every leaf of ``tree`` is finite (TF's check before
    ``LossScaleOptimizer`` applies the gradients).

    >>> sp.mixed_precision.all_finite({"w": jnp.ones(2), "b": jnp.array([0.0, jnp.inf])})
    Array(False, dtype=bool)
    """
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def select_tree(pred: Any, a: Any, b: Any) -> Any:
    """``a`` where the scalar bool ``pred`` is true, else ``b``, leaf by leaf (trees of one
    structure): ``select_tree(finite, (new_params, new_opt_state), (params, opt_state))`` skips a non-finite
    step, as TF's ``LossScaleOptimizer`` does, under ``jit`` without a ``lax.cond``.

    >>> sp.mixed_precision.select_tree(jnp.array(False), {"w": jnp.ones(2)}, {"w": jnp.zeros(2)})
    {'w': Array([0., 0.], dtype=float32)}
    """
    pred = _check_scalar_bool("select_tree(pred, a, b)", "pred", pred)
    try:
        return jax.tree_util.tree_map(lambda x, y: jax.lax.select(pred, x, y), a, b)
    except TypeError as error:  # lax.select's own, naming no leaf: find the leaf
        mismatch = _first_mismatch(a, b)
        if mismatch is None:
            raise
        raise TypeError(
            f"select_tree(pred, a, b): leaf '{mismatch[0]}' differs between the two trees.\n"
            f"  asked: a's {mismatch[1]}\n  found: b's {mismatch[2]}\n"
            "  fix: give the new tree the old one's shapes and dtypes (optax.apply_updates keeps "
            "each parameter's dtype; a hand-written p - lr * g promotes bfloat16 to float32: cast "
            "it back with .astype(p.dtype)).") from error


def _first_mismatch(a: Any, b: Any) -> Optional[tuple]:
    """(path, a's leaf described, b's leaf described) of the first leaf pair of ``a`` and ``b`` that
    differ in shape or dtype, or None."""
    from .optimizers import _path_name  # an error path: no import cycle to mind

    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_leaves(b)):
        x_shape, y_shape = np.shape(x), np.shape(y)
        x_dtype, y_dtype = jnp.result_type(x), jnp.result_type(y)
        if x_shape != y_shape or x_dtype != y_dtype:
            return (_path_name(path), f"shape {x_shape} dtype {x_dtype}",
                    f"shape {y_shape} dtype {y_dtype}")
    return None
