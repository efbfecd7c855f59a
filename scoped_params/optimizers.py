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
import re
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import CheckpointError, CheckpointMismatchError, ScopedParamsError, optional_import
from ._tree import flatten

Schedule = Callable[[jax.Array], Any]


class MissingOptimizerStateError(CheckpointError, KeyError):
    """``adam_state_from_tf1``: the checkpoint lacks an Adam slot or beta power (a ``KeyError``)."""

    def __str__(self) -> str:  # the message as written, not KeyError's one-line repr of it
        return str(self.args[0]) if self.args else super().__str__()


class AmbiguousOptimizerStateError(CheckpointError, ValueError):
    """``adam_state_from_tf1``: the checkpoint holds the slots or beta powers of more than one Adam
    optimizer that could be the one asked for, and no argument (``scope=``, ``powers=``) says which."""


class OptimizerStateMismatchError(CheckpointMismatchError):
    """``adam_state_from_tf1``: a slot's shape is not its parameter's, or a beta power is not a
    scalar (TF's ``Saver.restore`` refuses both; the next update would broadcast them)."""


class GradientMismatchError(ScopedParamsError, ValueError):
    """``adam``'s update: the gradients are not a tree of the parameters' shapes and dtypes (TF 1.x
    refuses "var and grad do not have the same shape"; the update would broadcast the gradient)."""


class OptimizerStateTypeError(ScopedParamsError, TypeError):
    """``adam``'s update was given as its state something other than the ``AdamState`` its ``init``
    returns (typically ``update(state, grads)``: the arguments swapped)."""


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
        if not isinstance(state, AdamState):
            raise _state_type_error(grads, state)
        _check_grads(grads, state.m)
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


def _check_grads(grads: Any, slots: Any) -> None:
    """Raise unless ``grads`` has the tree of ``slots`` (``m``: the parameters' shapes and dtypes)
    and each gradient their shape and dtype, as TF 1.x's ``apply_gradients`` does. Shapes and dtypes
    only, known when the update is traced: nothing is computed per element."""
    tree: Any  # PyTreeDef, whose stubs lack its __eq__
    leaves, tree = jax.tree_util.tree_flatten(grads)
    slot_leaves, slot_tree = jax.tree_util.tree_flatten(slots)
    if tree != slot_tree:
        raise _tree_error(grads, slots)
    for grad, slot in zip(leaves, slot_leaves):
        if np.shape(grad) != slot.shape or getattr(grad, "dtype", slot.dtype) != slot.dtype:
            raise _leaf_error(grads, slots)


_FIX_GRADS = ("  fix: pass update(grads, state, params) the gradients of the params init was given, "
              "e.g. grads = jax.grad(loss)(params): one per parameter, of its shape and dtype.")


def _state_type_error(grads: Any, state: Any) -> OptimizerStateTypeError:
    swapped = isinstance(grads, AdamState)
    return OptimizerStateTypeError(
        f"sp.optimizers.adam: update's second argument, the state, is {_kind(state)}, not the "
        "AdamState that optimizer.init(params) returns"
        + (" (and the first one, the gradients, is an AdamState: the arguments are swapped)"
           if swapped else "") + ".\n"
        "  fix: call optimizer.update(grads, state, params), with state = optimizer.init(params) or "
        "the state the last update returned (or sp.optimizers.adam_state_from_tf1(...)).")


def _tree_error(grads: Any, slots: Any) -> GradientMismatchError:
    have, want = _leaf_names(grads), _leaf_names(slots)
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    found = []
    if missing:
        found.append("no gradient for " + _some(missing))
    if extra:
        found.append("gradients of no parameter: " + _some(extra))
    if not found:  # the same names, in other containers
        found.append(f"the gradients' tree {jax.tree_util.tree_structure(grads)}, the parameters' "
                     f"{jax.tree_util.tree_structure(slots)}")
    return GradientMismatchError(
        "sp.optimizers.adam: the gradients are not a tree of the parameters the state was made for: "
        + "; ".join(found) + ".\n" + _FIX_GRADS)


def _leaf_error(grads: Any, slots: Any) -> GradientMismatchError:
    wrong, dtypes, frozen = [], False, []
    for (path, grad), slot in zip(jax.tree_util.tree_flatten_with_path(grads)[0],
                                  jax.tree_util.tree_leaves(slots)):
        name = _path_name(path)
        if getattr(grad, "dtype", None) == jax.dtypes.float0:
            # jax.grad(..., allow_int=True) of an integer parameter: it has no gradient to step by
            frozen.append(name)
            wrong.append(f"the gradient of '{name}' is float0, JAX's gradient of an integer "
                         f"parameter ({np.dtype(slot.dtype).name}): it has no gradient to step by")
        elif np.shape(grad) != slot.shape:
            tf_shapes = " ".join("[" + ",".join(map(str, shape)) + "]"
                                 for shape in (slot.shape, np.shape(grad)))
            wrong.append(f"the gradient of '{name}' has shape {np.shape(grad)}, but the parameter "
                         f"has shape {slot.shape} (TF 1.x: 'var and grad do not have the same "
                         f"shape{tf_shapes}'; the update would broadcast it)")
        elif getattr(grad, "dtype", slot.dtype) != slot.dtype:
            dtypes = True
            wrong.append(f"the gradient of '{name}' is {np.dtype(grad.dtype).name}, but the "
                         f"parameter is {np.dtype(slot.dtype).name} (TF 1.x's kernels take a "
                         "gradient of the variable's dtype)")
    return GradientMismatchError(
        "sp.optimizers.adam: " + "; ".join(wrong[:5])
        + (f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else "") + ".\n" + _FIX_GRADS
        + (" Cast gradients of another dtype: grads = jax.tree_util.tree_map(lambda g, p: "
           "g.astype(p.dtype), grads, params)." if dtypes else "")
        + (f" Leave integer parameters ({_some(frozen)}) out of what the optimizer updates: "
           "trainable, frozen = sp.partition_trainable(params, model.specs(...)) (give them "
           "trainable=False), then differentiate and update `trainable` only; or wrap the "
           "optimizer in optax.multi_transform with optax.set_to_zero() for them." if frozen
           else ""))


def _leaf_names(tree: Any) -> List[str]:
    return [_path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _path_name(path: Tuple) -> str:
    """A leaf's full name, ``dense/w``, as ``sp.flatten`` spells it."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts) or "<the params, one array>"


def _some(names: List[str]) -> str:
    return ", ".join(map(repr, names[:5])) + (f" (and {len(names) - 5} more)" if len(names) > 5 else "")


def _kind(x: Any) -> str:
    if isinstance(x, Mapping):
        return f"a {type(x).__name__} (keys {', '.join(map(repr, list(x)[:5]))})"
    return f"a {type(x).__name__}"


def _as(x: Any, like: jax.Array) -> jax.Array:
    """``x`` in the dtype of ``like``: TF casts each scalar of the kernel to the variable's dtype."""
    return jnp.asarray(x, jnp.result_type(like))


def adam_state_from_tf1(checkpoint: Union[str, os.PathLike, Mapping[str, Any]], params: Any, *,
                        slots: Tuple[str, str] = ("Adam", "Adam_1"),
                        powers: Optional[Tuple[str, str]] = None, scope: Optional[str] = None,
                        step: Optional[int] = None) -> AdamState:
    """The ``adam`` state a TF 1.x run saved: for each parameter of ``params`` (its names are the
    checkpoint's), the slots ``<name>/Adam`` and ``<name>/Adam_1``; TF's ``beta1_power`` and
    ``beta2_power``; and the number of steps taken, from ``global_step`` (or ``step=``, which wins).

    ``checkpoint`` is a ``Saver`` checkpoint (read with ``sp.checkpoint.load_tf1(...,
    include_optimizer_state=True, flat=True)``) or that flat mapping. TF 1.x names the slots in the
    variable scope ``minimize()`` ran in (``train/model/w/Adam`` under ``tf.variable_scope("train")``)
    and the beta powers in its name scope (``train/beta1_power``): ``scope=`` and ``powers=`` name
    them; by default they are found where the checkpoint has them, and more than one candidate (two
    optimizers) is an ``AmbiguousOptimizerStateError``. Of two Adam optimizers whose ``minimize()``
    ran in the same scope, the second to run has ``powers=("beta1_power_1", "beta2_power_1")``; its
    slots are ``slots=("Adam_2", "Adam_3")`` only for variables the first one trains too (a GAN's
    generator and discriminator both keep ``<variable>/Adam``). Each slot must have its
    parameter's shape (``OptimizerStateMismatchError`` otherwise) and is cast to its dtype. The
    slots ``m`` and ``v`` have the tree of ``params``, nested or flat (``{"dense/w": ...}``, as
    ``load_tf1(path, flat=True)`` returns), as ``adam(...).init(params)`` would make them.

    The step only feeds a learning-rate schedule given to ``adam``; its update's bias correction
    reads the beta powers restored here, as TF's kernel does, so the next update is TF's whatever
    the step. A checkpoint without ``global_step`` (and no ``step=``) starts the count at 0: TF
    1.x's decays read ``global_step``, so a run saved without one had no schedule driven by it.
    The count is not derived from the beta powers (``beta1_power`` is ``beta1 ** (step + 1)``):
    that needs the run's ``beta1``, and in float32 the power underflows (to 0 within a thousand
    steps of 0.9); pass ``step=`` for a run that counted its steps elsewhere.

    >>> state = sp.optimizers.adam_state_from_tf1("model.ckpt", params)  # doctest: +SKIP
    """
    where = "the given mapping"
    if isinstance(checkpoint, (str, os.PathLike)):
        from ._tf1 import load_tf1

        where = f"TF 1.x checkpoint {os.fspath(checkpoint)!r}"
        checkpoint = load_tf1(checkpoint, include_optimizer_state=True, flat=True)
    names = flatten(params)
    scopes = _slot_scopes(checkpoint, names, slots)
    if scope is None:
        complete = [s for s in scopes if all(f"{s}{n}/{x}" in checkpoint for n in names for x in slots)]
        if len(complete) > 1:
            raise AmbiguousOptimizerStateError(
                f"adam_state_from_tf1: {where} has the {slots[0]} slots of params under "
                f"{len(complete)} scopes: "
                + ", ".join(repr(s) + (" (the top)" if not s else "") for s in complete) + " ("
                + ", ".join(repr(f"{s}{next(iter(names))}/{slots[0]}") for s in complete) + ").\n"
                "  fix: say which optimizer's state to resume: "
                + " or ".join(f"scope={s.rstrip('/')!r}" for s in complete)
                + " (the variable scope its minimize() ran in).")
        scope = complete[0] if complete else ""
    else:
        scope = scope.strip("/") + "/" if scope.strip("/") else ""
        owned = [f"{scope}{n}" for n in names if scope and f"{scope}{n}" in checkpoint]
        if owned:
            raise MissingOptimizerStateError(
                f"adam_state_from_tf1: under scope={scope.rstrip('/')!r}, {where} holds the variable "
                f"{owned[0]!r} itself, so {owned[0] + '/' + slots[0]!r} is that variable's own slot, "
                f"not the slot of {owned[0][len(scope):]!r} (TF names a slot after its variable, in "
                "the variable scope minimize() ran in).\n  fix: pass the scope minimize() ran in "
                "for these params" + (f" (the checkpoint has their slots: scope="
                                      f"{scopes[0].rstrip('/')!r})" if scopes else "")
                + ", or the params of the variables under it.")
    missing = [f"{scope}{n}/{x}" for n in names for x in slots if f"{scope}{n}/{x}" not in checkpoint]
    pairs = _power_pairs(checkpoint)
    if powers is None and len(pairs) > 1 and not missing:
        raise AmbiguousOptimizerStateError(
            f"adam_state_from_tf1: {where} has the beta powers of {len(pairs)} Adam optimizers: "
            + ", ".join(map(repr, pairs)) + ".\n"
            "  fix: say which optimizer's to resume: " + " or ".join(f"powers={p!r}" for p in pairs)
            + " (TF names them in the name scope minimize() ran in; of two optimizers minimizing "
              "in the same one, the second to run has 'beta1_power_1', 'beta2_power_1').")
    guess_powers = powers is None and len(pairs) != 1
    if powers is None:
        powers = pairs[0] if pairs else ("beta1_power", "beta2_power")
    missing += [p for p in powers if p not in checkpoint]
    if missing:
        hints = []
        others = [s for s in scopes if s != scope]
        if others:
            hints.append("the checkpoint has these slots "
                         + " and ".join(f"under scope {s!r}" if s else "at the top" for s in others)
                         + ": pass " + " or ".join(f"scope={s.rstrip('/')!r}" for s in others))
        if pairs and (guess_powers or any(p not in checkpoint for p in powers)):
            hints.append("the checkpoint's beta powers: "
                         + " or ".join(f"powers={p!r}" for p in pairs))
        nested = any(isinstance(v, Mapping) for v in checkpoint.values())
        state_name = re.compile(r"(^|/)(beta[12]_power|" + "|".join(
            sorted({re.escape(re.sub(r"_\d+$", "", x)) for x in slots})) + r")(_\d+)?$")
        found = sorted(k for k in checkpoint if isinstance(k, str) and state_name.search(k))
        raise MissingOptimizerStateError(
            f"adam_state_from_tf1: {where} has no {', '.join(map(repr, missing[:5]))}"
            + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "") + ".\n"
            "  found: " + (", ".join(map(repr, found[:10])) or "no Adam entries")
            + (f" (and {len(found) - 10} more)" if len(found) > 10 else "")
            + (" (the checkpoint given is a nested params tree: are the arguments swapped? the "
               "signature is adam_state_from_tf1(checkpoint, params))" if nested else "") + "\n"
            "  fix: " + ("; ".join(hints) if hints else "save the TF run with its optimizer's "
                         "variables (Saver's default) and pass the params it trained") + ".\n"
            "  TF 1.x names Adam's state '<scope>/<variable>/Adam', '<scope>/<variable>/Adam_1' "
            "(<scope>: the variable scope minimize() ran in, none at the top; scope=) and "
            "'<name scope>/beta1_power', '<name scope>/beta2_power' (powers=). Of two Adam "
            "optimizers whose minimize() ran in the same scope, the second to run has "
            "'beta1_power_1', 'beta2_power_1' (powers=('beta1_power_1', 'beta2_power_1')), and its "
            "slots are 'Adam_2', 'Adam_3' (slots=('Adam_2', 'Adam_3')) only for variables the "
            "first one trains too.")

    wrong = [f"{scope}{n}/{x}': shape {np.shape(checkpoint[f'{scope}{n}/{x}'])}, but its parameter "
             f"'{n}' has shape {np.shape(v)}" for n, v in names.items() for x in slots
             if np.shape(checkpoint[f"{scope}{n}/{x}"]) != np.shape(v)]
    wrong += [f"{p}': shape {np.shape(checkpoint[p])}, but a beta power is a scalar, shape ()"
              for p in powers if np.shape(checkpoint[p]) != ()]
    if wrong:
        raise OptimizerStateMismatchError(
            f"adam_state_from_tf1: {len(wrong)} entr{'y' if len(wrong) == 1 else 'ies'} of {where} "
            f"do{'es' if len(wrong) == 1 else ''} not fit the params:\n  - '"
            + "\n  - '".join(wrong) + "\n"
            "  fix: pass the params the TF run trained, with the shapes they had in TF (a port that "
            "transposes or reshapes a variable needs its slots changed the same way first).")

    def slot(suffix):
        # The slots mirror params' own tree, nested or flat ({'dense/w': ...}, as load_tf1(...,
        # flat=True) gives), as adam's init would make them: update compares the trees.
        return jax.tree_util.tree_map_with_path(
            lambda path, v: jnp.asarray(checkpoint[f"{scope}{_path_name(path)}/{suffix}"],
                                        jnp.result_type(v)), params)

    if step is None:
        step = int(np.asarray(checkpoint.get("global_step", 0)))
    return AdamState(jnp.asarray(step, jnp.int32), jnp.asarray(checkpoint[powers[0]], jnp.float32),
                     jnp.asarray(checkpoint[powers[1]], jnp.float32), slot(slots[0]),
                     slot(slots[1]))


def _slot_scopes(checkpoint: Mapping[str, Any], names: Mapping[str, Any],
                 slots: Tuple[str, ...]) -> List[str]:
    """The scopes (``""`` for the top, ``"train/"``) under which ``checkpoint`` has some slot
    ``<scope><parameter>/<slot>`` of a parameter in ``names``: TF 1.x's slot_creator names a slot in
    the variable scope ``minimize()`` ran in."""
    found: Dict[str, None] = {}
    for key in checkpoint:
        if not isinstance(key, str):
            continue
        for slot in slots:
            if key.endswith("/" + slot):
                variable = key[:-len(slot) - 1]
                parts = variable.split("/")
                for i in range(len(parts)):
                    # (under a scope only if no variable has the slot's path: 'gen/dense/kernel/Adam'
                    # is the variable gen/dense/kernel's own slot, not dense/kernel's under 'gen/')
                    if "/".join(parts[i:]) in names and (not i or variable not in checkpoint):
                        found["/".join(parts[:i]) + "/" if i else ""] = None
    return sorted(found)


_BETA1_POWER = re.compile(r"(^|/)beta1_power(_\d+)?$")


def _power_pairs(checkpoint: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """Every ``(<name scope>/beta1_power[_N], <name scope>/beta2_power[_N])`` pair of the checkpoint:
    one per Adam optimizer of the TF run."""
    pairs = []
    for key in checkpoint:
        m = _BETA1_POWER.search(key) if isinstance(key, str) else None
        if m:
            other = key[:m.start()] + m.group(1) + "beta2_power" + (m.group(2) or "")
            if other in checkpoint:
                pairs.append((key, other))
    return sorted(pairs)
