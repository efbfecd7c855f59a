"""The trace frame: everything one ``init``/``apply`` call knows, held in a ``ContextVar``.

Nothing here is global and mutable: each call of ``init``, ``apply`` or ``specs`` builds its own
``Frame`` and installs it for the duration of the call, so the same model can be traced in many
threads (or asyncio tasks) at once.
"""

from __future__ import annotations

import contextvars
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _regularizers
from ._errors import (MissingRngError, NestedTraceError, _called_layer, bad_key_error,
                      format_site, not_in_transform, user_site)

_FRAME: contextvars.ContextVar = contextvars.ContextVar("scoped_params_frame", default=None)

INIT = "init"
APPLY = "apply"


class Frame:
    """Per-call trace state. Created by the transforms, read by get_param/scope/name_scope."""

    __slots__ = (
        "mode",  # INIT or APPLY
        "store",  # _InitStore or _ApplyStore (see _params.py)
        "with_state",
        "scope",  # the current sp.Scope
        "node",  # the current scope's node in the default_name counter trie
        "root_node",  # the trie's root (captured-scope jumps walk from it)
        "entries",  # what each open sp.scope restores on exit, innermost last (see _scope.py)
        "undo",  # stack of undo logs of open captured-scope jumps (see _scope.py)
        "name_stack",  # current name scope, no trailing "/" ("" at the root)
        "jax_stack",  # the name scope the open jax.named_scopes spell (see _scope.py)
        "name_ops",  # open jax.named_scopes: True always, False never, None: ask JAX (_scope.py)
        "names_in_use",  # lower-cased name scope -> use count (TF's Graph._names_in_use)
        "trace",  # the JAX trace parameters may be read in (see check_trace)
        "loop",  # inside the function of an sp.scan, sp.cond, ...: its name (see _control_flow.py)
        "rng",
        "rng_count",
        "regularized",  # [(regularizer, value)] in creation order
        "records",  # dict or None when intermediates are not collected
        "record_names",
        "collected",  # slim's outputs_collections: name -> [(alias, value)]; unset until used
        "kept",  # what objects learn in this call (layers._keep_for_call); None until first used
    )
    node: list  # a counter-trie node: [entry count, children or None, hints or None] (_scope.py)
    root_node: list

    def __init__(self, mode: str, store: Any, with_state: bool, rng: Any = None,
                 records: Optional[Dict[str, Any]] = None):
        self.mode = mode
        self.store = store
        self.with_state = with_state
        # The root scope and counter-trie node (see _scope.py), inline: every init/apply makes them.
        self.scope = root = _scope._new_scope(_scope.Scope)
        root.prefix = root.original_name_scope = ""
        root._reuse = False
        root.reuse_origin = root.initializer = root.regularizer = root.custom_getter = None
        root.constraint = None
        root.partitioner = root.trainable = None
        root._values = store.tree if mode == APPLY else None
        root.dtype = _scope._FLOAT32
        self.node = self.root_node = [0, None, None]
        self.entries: List[tuple] = []
        self.undo: Optional[List[list]] = None  # a list once a captured scope is re-entered
        self.name_stack = ""
        self.jax_stack = ""
        # init's trace is thrown away, so its ops need no names; an apply that starts staged out
        # (under jit) stays so; an eager apply asks on each scope (a scan inside it is staged).
        # (_scope.staging(), inline.)
        self.trace = trace = _scope._TRACE.value
        self.loop = None
        self.name_ops = False if mode == INIT else (True if trace is not _scope._EAGER else None)
        self.names_in_use: Dict[str, int] = {}
        self.rng = rng
        self.rng_count = 0
        self.regularized: List[Tuple[Callable, Any]] = []
        self.records = records
        self.record_names: Optional[Dict[str, int]] = None if records is None else {}
        self.kept: Optional[Dict[Any, tuple]] = None


def current(api: str) -> Frame:
    frame = _FRAME.get()
    if frame is None:
        raise not_in_transform(api)
    return frame


def current_wrapper(api: str) -> Frame:
    """The call's frame for the wrapper ``sp.<api>`` (``sp.scan``, ``sp.layer_stack``, ...); raises if
    the wrapper itself sits in a function JAX caches (e.g. an ``sp.scan`` inside a ``jax.lax.scan``
    body), which would replay it."""
    frame = current(api)
    if _scope._TRACE.value is not frame.trace:
        check_trace(frame, f"sp.{api}")
    return frame


def install(frame: Frame) -> Optional[Frame]:
    """Make ``frame`` current; returns the frame to pass to ``uninstall`` (the one it replaces)."""
    outer = _FRAME.get()
    _FRAME.set(frame)
    return outer


# set, not reset(token): resetting to "no value" deletes the variable from the context, which costs
# an eager apply more than all of its other context-variable work. (apply calls it directly.)
uninstall = _FRAME.set


def check_trace(frame: Frame, what: str) -> bool:
    """Raise unless the current JAX trace may read ``frame``'s parameters and keys; return whether it
    lies outside ``frame.trace`` (then the caller checks what it hands out with ``usable_outside``).

    Called when the current trace is not ``frame.trace`` (the one the transform started in, or the
    body trace of an ``sp.scan``/``layer_stack``/... inside it). Traces that run the function anew
    each time (``vmap``, ``grad``, ``jvp``) are fine; a trace that stages the function out on its own
    (``jax.lax.scan``, ``cond``, ``while_loop``, ``jax.checkpoint``, a nested ``jax.jit``) is not:
    JAX caches it by the function object and shapes, so another call (other params, another scope,
    another init) would get the values this trace read, silently.

    The function of a ``jax.custom_jvp`` or ``jax.custom_vjp`` runs in a trace of its own that is not
    under ``frame.trace`` (a fresh one, not cached, under ``jit`` and ``vmap``; ``grad``'s parent
    trace under ``grad``).
    """
    trace = _scope._TRACE.value
    staged = None  # the innermost trace that stages out (DynamicJaxprTrace) between here and the frame's
    while trace is not None and trace is not frame.trace:
        if staged is None and "Jaxpr" in type(trace).__name__:
            staged = trace
        trace = getattr(trace, "parent_trace", None)
    if trace is None:
        # Not under the frame's trace: the function of a custom_jvp/custom_vjp or of a shard_map
        # (fine: traced anew), or one JAX traced on its own and caches, e.g. jax.pmap's.
        if staged is not None and not _custom_derivative_trace(staged):
            raise NestedTraceError(
                f"{what} was called inside a function that JAX traces and caches by itself, here "
                f"one traced for {_traced_for(staged)!r} (jax.pmap inside the model traces its "
                "function once per function object and replays it): another call (other params, "
                "another scope, the next init) would get the values this trace read, silently.\n"
                "  fix: use jax.shard_map inside the model (it traces its function on every call), "
                "or jax.pmap around model.apply; or fetch the parameters before and pass them in."
            )
        return True
    if staged is not None:
        raise NestedTraceError(
            f"{what} was called inside a function that JAX traces and caches by itself: the body of a "
            "jax.lax.scan, cond, switch, while_loop or fori_loop, a jax.checkpoint, a jax.pmap or a "
            "jax.jit inside the model. JAX would reuse this trace, with the values it read, on any later call with the "
            "same function and shapes (other params, another scope, the next init), without running it "
            "again.\n"
            "  fix: use sp.scan, sp.cond, sp.while_loop, sp.fori_loop or sp.remat (same arguments as "
            "jax.lax's; they trace the function anew on every call and give each step its own random "
            "keys), or sp.layer_stack for repeated layers; or fetch the parameters before the loop and "
            "pass them in. A jax.jit inside the model is not needed: jit the whole apply; for a "
            "jax.pmap, use jax.shard_map inside the model (it traces its function on every call) or "
            "pmap the whole apply."
        )
    return False


def _traced_for(trace: Any) -> Optional[str]:
    """What JAX says a staging trace traces (its debug info's ``traced_for``: ``'jit'``,
    ``'shard_map'``, ``'custom_vjp fun'``, ...), or None where this JAX does not say."""
    info = getattr(getattr(trace, "frame", None), "debug_info", None)
    return getattr(info, "traced_for", None)


def _custom_derivative_trace(trace: Any) -> bool:
    """Whether a staging trace below no trace of the call is one JAX makes anew on each call: the
    function of a custom_jvp or custom_vjp, or of a jax.shard_map (see check_trace), not jax.pmap's
    (a shard_map of JAX's own wrapper, cached per function). Where this JAX does not say what a
    trace is for, it is taken to be one, as before JAX said so."""
    traced_for = _traced_for(trace)
    if traced_for is None or traced_for.startswith(("custom_jvp", "custom_vjp")):
        return True
    if traced_for == "shard_map":  # the user's function, or pmap's wrapper in JAX's pmap.py
        source = getattr(trace.frame.debug_info, "func_src_info", None) or ""
        where = source.rpartition(" at ")[2].rpartition(":")[0]
        return not (where.startswith(_JAX_DIR) and os.path.basename(where) == "pmap.py")
    return False


_JAX_DIR = os.path.dirname(os.path.abspath(jax.__file__)) + os.sep


def usable_outside(value: Any, what: str) -> Any:
    """``value`` (a parameter, state or key of the call), read where ``check_trace`` found the current
    trace outside the call's; a ``NestedTraceError`` if JAX would reject it there.

    That is the function of a ``jax.custom_jvp``/``custom_vjp`` under ``grad`` (``jvp``,
    ``linearize``) of the value: JAX runs the function below the differentiating trace, so a value
    that trace carries (a tracer of it, or one it wraps) has escaped. Values of ``jit`` and
    ``vmap`` traces are fine there (JAX lifts them into the function's own trace), also when such a
    trace lies under a ``grad`` of something else: ``grad(vmap(apply))`` of the input batches the
    params in a trace whose parent is grad's, yet nothing differentiates them.
    """
    if not isinstance(value, jax.core.Tracer):
        return value
    # The body of a jax.shard_map that grad differentiates (a JVP or linearize trace runs it, below
    # the shard_map's own trace) lifts the value in, as it lifts any closure.
    trace, differentiated = _scope._TRACE.value, False
    while trace is not None:
        kind = type(trace).__name__
        if "JVP" in kind or "Linearize" in kind:
            differentiated = True
        elif kind == "ShardMapTrace" or "Jaxpr" in kind:  # the innermost staging (or shard_map) one
            if differentiated and (kind == "ShardMapTrace" or (
                    _traced_for(trace) == "shard_map" and _custom_derivative_trace(trace))):
                return value
            break
        trace = getattr(trace, "parent_trace", None)
    here = set()
    trace = _scope._TRACE.value
    while trace is not None:
        here.add(id(trace))
        trace = getattr(trace, "parent_trace", None)
    if _differentiated_outside(value, here):
        raise NestedTraceError(
            f"{what} was called inside the function of a jax.custom_jvp or jax.custom_vjp that "
            "jax.grad (jvp, linearize) differentiates with respect to this value. JAX runs that "
            "function outside the differentiation, so the value cannot be used there (JAX reports "
            "it as a leaked tracer).\n"
            "  fix: read it before calling the function and pass it in as an argument: custom_jvp "
            "then differentiates with respect to it, and a custom_vjp's bwd returns its cotangent."
        )
    return value


def _differentiated_outside(tracer: Any, here: set) -> bool:
    """Whether ``tracer``, or a tracer it wraps (a ``vmap`` tracer's value, a ``jvp`` tracer's primal
    and tangent), belongs to a ``jvp``/``linearize`` trace outside the traces ``here`` (their ids).
    A tracer of a trace in ``here`` wraps only values of traces below it, all in ``here`` too."""
    trace = getattr(tracer, "_trace", None)
    if trace is None or id(trace) in here:
        return False
    kind = type(trace).__name__
    if "JVP" in kind or "Linearize" in kind:
        return True
    return any(isinstance(inner, jax.core.Tracer) and _differentiated_outside(inner, here)
               for inner in (getattr(tracer, attr, None) for attr in ("val", "primal", "tangent")))


def next_rng_key() -> jax.Array:
    """A fresh PRNG key for dropout and friends.

    Keys are ``fold_in(rng, i)`` for the i-th call in this ``apply`` call (inside ``sp.scan``,
    ``sp.while_loop``, ``sp.fori_loop`` and ``sp.layer_stack``, the i-th call of step ``t`` draws
    ``fold_in(fold_in(base, t), i)``, ``base`` one key of the call: see ``sp.scan``), so the
    sequence is deterministic given ``rng`` and independent of anything else. In ``init`` keys derive from the
    init key (they only feed the abstract trace).

    >>> def fn(x):
    ...     return x * jax.random.bernoulli(sp.next_rng_key(), 0.5, x.shape)
    >>> model = sp.transform(fn)
    >>> out = model.apply({}, jnp.ones(3), rng=jax.random.key(0))
    """
    frame = current("next_rng_key")
    if _scope._TRACE.value is not frame.trace and check_trace(frame, "sp.next_rng_key()"):
        usable_outside(frame.rng, "sp.next_rng_key()")
    if frame.rng is None:
        raise _missing_rng_error(frame)
    try:
        key = jax.random.fold_in(frame.rng, frame.rng_count)
    except (TypeError, ValueError) as e:  # apply's rng= is no key (init's own always is)
        # An int seed, as init takes one (Haiku's apply too): the key init would make of it. Here,
        # not in apply, so that a key costs apply nothing.
        rng = seed_key(frame.rng)
        if rng is None:
            raise bad_key_error(frame.rng, e, apply=True) from None
        if _scope._TRACE.value is frame.trace:  # the rest of the call uses it (a key made in a
            frame.rng = rng                     # nested trace cannot leave it: made anew there)
        key = jax.random.fold_in(rng, frame.rng_count)
    frame.rng_count += 1
    return key


def _missing_rng_error(frame: Frame) -> MissingRngError:
    """The error for a key asked for in an ``apply`` given no ``rng=``: where it was asked for (the
    scope, the public layer function that asked, the model's line) and the call to make instead."""
    layer = _called_layer()
    where = f"scope '{frame.scope.name}'" if frame.scope.prefix else "the root scope"
    name_scope = frame.name_stack
    if name_scope and name_scope != frame.scope.name:
        where += f" (name scope '{name_scope}')"
    call = "model.apply_with_intermediates" if frame.records is not None else "model.apply"
    args = "params, state, x" if frame.with_state else "params, x"
    return MissingRngError(
        "sp.next_rng_key() needs a random key, but apply was called without rng=.\n"
        f"  asked: a random key{f' for {layer}' if layer else ''} in {where} at "
        f"{format_site(user_site())}\n"
        f"  fix: pass one, e.g. {call}({args}, rng=jax.random.key(step)).")


def seed_key(seed: Any) -> Optional[jax.Array]:
    """``jax.random.key(seed)`` for a seed (a Python, NumPy or 0-d JAX integer, traced too), else
    None. ``init``'s key and ``apply``'s ``rng=`` both take one (``_transform.as_key``)."""
    if isinstance(seed, (int, np.integer)) or (
            getattr(seed, "shape", None) == () and jnp.issubdtype(seed.dtype, jnp.integer)):
        return jax.random.key(seed)
    return None


def regularization_loss() -> Any:
    """Sum of the regularizer terms of every parameter fetched so far in this call, and of the
    activity penalties of the ``sp.layers`` called so far with ``activity_regularizer=``.

    Terms are computed from this call's parameter values (so they are differentiable in ``apply``);
    each parameter contributes once, when it is first fetched, whatever later reuses do. A layer's
    activity penalty is TF's, ``regularizer(output) / batch size``, once per call of the layer. Terms of
    different dtypes (bfloat16 and float32 parameters) are summed in their common dtype (JAX's
    standard promotion, also under ``jax_numpy_dtype_promotion="strict"``). Returns ``0.0`` when no
    parameter has a regularizer. A regularizer that is not a function of the value to a term
    (``sp.l2_regularizer`` without its scale, a function of more arguments) is a ``TypeError``
    naming the parameter.
    """
    frame = current("regularization_loss")
    terms: List[Any] = []
    for regularizer, value in frame.regularized:
        if type(value) is jax.ShapeDtypeStruct:  # init: a weight made in an sp.cond, sp.scan, ...
            value = jnp.zeros(value.shape, value.dtype)  # function, whose placeholder ended with it
        try:
            term = regularizer(value)
        except Exception as e:  # noqa: BLE001 - explained if it is how the regularizer was given
            error = _regularizers.call_error(frame.store, regularizer, value, e)
            if error is None:
                raise
            raise error from e
        if term is not None:
            # A function here is a regularizer factory given without its scale
            # (regularizer=sp.l2_regularizer): it would fail later, far away, as `Array + function`.
            # A TensorFlow tensor: a TensorFlow regularizer run eagerly.
            if not isinstance(term, (jax.Array, np.ndarray, np.generic, int, float)):
                raise _regularizers.term_error(frame.store, regularizer, value, term)
            terms.append(term)
    if not terms:
        return 0.0
    if len({getattr(term, "dtype", None) for term in terms}) > 1:
        # e.g. bfloat16 and float32 parameters' terms: the sum takes their standard promotion,
        # written out, so that it holds under jax_numpy_dtype_promotion="strict" too
        with jax.numpy_dtype_promotion("standard"):
            dtype = jnp.result_type(*terms)
        terms = [jnp.asarray(term, dtype) for term in terms]
    return sum(terms[1:], terms[0])


def record(name: str, value: Any) -> None:
    """Keep ``value`` as ``<current name scope>/<name>``; returned by ``apply_with_intermediates``.

    Outside ``apply_with_intermediates`` this does nothing, so recording costs nothing in training
    (and the name is checked only there, but for its type: a name that is not a string is a
    ``TypeError`` in ``init`` and ``apply`` too). Named as TF names ``tf.identity(value, name=name)``: a
    name recorded twice under one name scope gets ``_1``, ``_2``, ..., and so does one a name scope
    (or a layer's, e.g. ``dense``) already has: after ``sp.name_scope("attn")``, ``"attn"`` is
    ``"attn_1"``; ``None`` (or ``""``) is ``"Identity"``; a name ending in ``/`` is absolute
    (``"s/"`` records ``"s"`` whatever the name scope, counted against no other name; one recorded
    exactly again, which TF refuses as a duplicate node name, gets a suffix); a name ``sp.name_scope`` refuses (``"bad
    name"``) is an ``InvalidNameError``. Unlike TF, a name scope opened after a record of its name
    keeps the name (TF's would be ``attn_1``): name scopes never depend on whether intermediates are
    collected, so there the record ``attn`` and ``attn/scores`` both exist and ``sp.unflatten`` of
    the records refuses them; record under another name.
    """
    frame = current("record")
    if frame.records is None:
        if type(name) is not str and name is not None:  # as apply_with_intermediates would
            raise _record_name_error(name)
        return
    if frame.loop is not None:
        raise NestedTraceError(
            f"sp.record({name!r}) was called inside the function of {frame.loop}: a value made there "
            "cannot leave it except as its result.\n"
            f"  fix: return the value from the function (as a scan output, for every step) and record "
            f"it after {frame.loop}.")
    if _scope._TRACE.value is not frame.trace:
        raise NestedTraceError(
            f"sp.record({name!r}) was called inside a function that a JAX transformation (jax.vmap, "
            "jax.grad, jax.lax.scan, jax.checkpoint, a jax.jit, ...) traces within the model: the value "
            "belongs to that trace and cannot leave it.\n"
            "  fix: return the value from the function and record it outside; or use sp.scan, "
            "sp.cond, ... or sp.layer_stack, whose results leave them.")
    names = frame.record_names  # a dict whenever records are
    assert names is not None
    # Named as TF names tf.identity(value, name=name): None or "" is "Identity", the name is
    # checked as sp.name_scope checks it (TF's op-name rules), and one ending in "/" is absolute.
    if type(name) is not str:
        if name is not None:
            raise _record_name_error(name)
        name = "Identity"
    elif not name:
        name = "Identity"
    stack = frame.name_stack
    root_ok = _scope._VALID_NAMES.get(name)
    if root_ok is None or (not root_ok and not stack):
        _scope._check_name(name, bool(stack), lambda: f"sp.record({name!r}, value)")
    records = frame.records
    if name[-1] == "/":
        # Absolute: the name as given, as TF's create_op takes it (not uniquified, and not entered
        # in the table of names in use: a later "R" after "r/" is "R").
        full = name[:-1]
    else:
        full = f"{stack}/{name}" if stack else name
        # TF's unique_name in the graph's one table of op and name-scope names: a record after a
        # name scope of its name ("attn" after name_scope("attn")) gets a suffix, and a suffix
        # already taken (a record or name scope "a_1", then "a" twice) is skipped, never
        # overwritten. Records keep their own table and only read the name scopes': a name scope
        # must not depend on whether intermediates are collected.
        scopes = frame.names_in_use
        key = full.lower()
        count = names.get(key, 0)
        names[key] = count + 1
        count += scopes.get(key, 0)
        if count:
            while f"{key}_{count}" in names or f"{key}_{count}" in scopes:
                count += 1
            names[f"{key}_{count}"] = 1
            full = f"{full}_{count}"
    if full in records:  # exactly a name recorded before (absolute): TF refuses the program
        # ("Duplicate node name"); here it gets the first free suffix, overwriting nothing
        count = 1
        while f"{full}_{count}" in records:
            count += 1
        full = f"{full}_{count}"
    records[full] = value


def _record_name_error(name: Any) -> TypeError:
    return TypeError(
        "sp.record: the name must be a string (or None for TF's default name 'Identity'), got "
        f"{type(name).__name__} {name!r}.\n"
        f"  fix: pass a string, e.g. sp.record({str(name)!r}, value).")


# Last, because _scope imports this module; a function-level import here cost ~2 us per apply call.
from . import _scope  # noqa: E402
