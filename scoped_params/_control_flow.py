"""JAX control flow inside a model: ``sp.scan``, ``sp.cond``, ``sp.switch``, ``sp.while_loop``,
``sp.fori_loop`` and ``sp.remat``.

``jax.lax.scan`` and its kin trace their function once and cache the trace by the function object
and the argument shapes. A model function reads its parameters from the transform's call, not from
its arguments, so a cached trace would hand one call's parameters (one init's placeholders, one
scope's names) to every later call that passes the same function, without running it. So
``get_param`` refuses to run inside such a trace (``NestedTraceError``, see ``_frame.check_trace``),
and these are the way in. Each takes and returns what its ``jax.lax`` namesake does; on every call it
wraps the function in a new closure (a new cache key: traced anew) inside which parameters may be
read, and

* rolls back what a trace changed in the call's Python-side state (names created, ``default_name``
  counters, name scopes) if JAX traces the function a second time, as ``scan`` and ``while_loop``
  do when a carry's weak type changes (back to where that function's previous trace began, so a
  ``while_loop`` body traced again keeps what the cond's new trace just made);
* gives ``sp.next_rng_key()`` new keys at every step of ``scan``, ``while_loop`` and ``fori_loop``
  (the step is folded into one key of the call's stream, taken only if the body draws any), as TF's
  random ops draw anew on every iteration of ``tf.while_loop``; ``cond``, ``switch`` and ``remat``
  are transparent to the stream (see ``_Keys``).

Cost: under an eager (un-jitted) ``apply`` each call traces and compiles the loop or branches
again (on the order of 0.1 s for a small model, where an eager ``jax.lax.scan`` of a module-level
function reuses its compiled loop), and the process's memory grows with the calls (about 2 MB a
call for a small scan, as plain JAX's does given a new function each call): jit the apply
(``jax.jit(model.apply)``), which traces them once.
Reusing a compiled loop across eager calls is not safe here: its trace reads the call's parameters
as constants and advances the call's names and counters, which a cache hit would skip.

``sp.set_state`` inside them is an error: a loop body cannot hand a new state out except through its
carry (``sp.layer_stack`` threads the state of repeated layers). ``sp.remat`` alone threads it (and
``sp.record``'s values) out, as extra results of its function.

JAX's own errors (branches whose outputs differ, a carry that changes type, a traced value used as a
shape) name the function JAX traced and its parameters: each closure handed to JAX carries the
user's function as ``__wrapped__``, so they name the user's function, file, line and carry, not this
file's closure (see ``_as``).
"""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import _frame
from ._layer_stack import (_frame_attrs, _Keys, _outside_error, _put_back_state, _root, _Snapshot,
                           _StackView, _state_values)
from ._materialize import lift_nested_constants
from ._params import InitStore
from ._scope import _TRACE


class _Traces:
    """The traces JAX makes of the functions of one wrapper call (a ``while_loop``'s cond and body,
    a ``cond``'s branches), in order, each with the state it started from.

    JAX traces them in turn (cond, body) and, when a carry's weak type changes, all again (cond,
    body). A function traced again starts from the state its previous trace started from, and
    what that and the later traces made is rolled back, so the retraced round makes the names,
    counters and specs of one trace, and a layer object, template or RNN cell first called in the
    rolled-back trace is called first again (``_Snapshot``): the body's retrace keeps what the
    cond's retrace made just before it (a snapshot for every function taken at the wrapper call
    would erase it).
    """

    __slots__ = ("frame", "log")

    def __init__(self, frame: _frame.Frame):
        self.frame = frame
        self.log: List[Any] = []  # [(function, _Snapshot as its latest trace began)], in order

    def enter(self, f: Callable) -> None:
        log = self.log
        for i, (g, snapshot) in enumerate(log):
            if g is f:  # traced again: roll back its previous trace and the ones after it
                snapshot.restore()
                del log[i + 1:]
                return
        log.append((f, _Snapshot(self.frame)))


def _inside(frame: _frame.Frame, api: str, f: Callable, keys: _Keys,
            traces: Optional[_Traces] = None, salt: Optional[int] = None) -> Callable:
    """``f`` in a new closure whose traces may read ``frame``'s parameters. The closure's first
    argument is the step to fold into the loop's base key (``None``: none; see ``_Keys``), after
    ``salt`` when given (a ``while_loop``'s cond and body draw apart). The functions of one call
    share ``keys`` and ``traces``."""
    if traces is None:
        traces = _Traces(frame)

    def body(step, *args, **kwargs):
        traces.enter(body)
        with _frame_attrs(frame, trace=_TRACE.value, rng=None, rng_count=0, loop=api):
            keys.enter(frame, step, salt)
            made = _specs_made(frame)
            out = f(*args, **kwargs)
            keys.exit(frame)
            if made is not None:
                _lift_constants(made)
                _drop_placeholders(made)
        return out

    return body


class _Made(NamedTuple):
    """What init had made as a wrapper's function started (``_specs_made``)."""
    store: InitStore  # the call's store
    specs: int  # how many parameters it had made
    nested: int  # how many placeholders of nested traces it held (InitStore.nested)
    view: Any  # the store the function sees (an sp.layer_stack block's view, or the store)
    frame: _frame.Frame
    regularized: int  # how many regularizer terms the call had


def _specs_made(frame: _frame.Frame) -> Optional[_Made]:
    """In init: what the store has made as a wrapper's function starts; else None (apply makes
    none)."""
    if frame.mode != _frame.INIT:
        return None
    root = _root(frame.store)
    if not isinstance(root, InitStore):
        return None
    return _Made(root, len(root.specs), len(root.nested), frame.store, frame,
                 len(frame.regularized))


def _lift_constants(made: _Made) -> None:
    """As a wrapper's function returns in init (still in JAX's trace of it): the constant
    initializers built with jnp in it are rebuilt outside that trace, or named in an error if they
    depend on its arguments (see ``_materialize.lift_nested_constants``)."""
    store = made.store
    lift_nested_constants(store.specs, store.values, len(store.specs) - made.specs, _TRACE.value)


def _drop_placeholders(made: _Made) -> None:
    """Last as a wrapper's function returns in init (still in JAX's trace of it): the placeholders
    made in it are dropped from the store (``InitStore.drop_nested``) and from the slices of the
    ``sp.layer_stack`` blocks it runs in (but for state set in it, which ``sp.remat`` sets again
    with its results), so that no tracer of the ended trace stays (JAX's checking_leaks would find
    it); a later request outside gets one of its own. A regularizer term made in it of one (a
    weight's) keeps its shape and dtype only, for ``sp.regularization_loss`` (init's is abstract)."""
    store, _, mark, view, frame, added = made
    trace = _TRACE.value
    dropped = store.drop_nested(mark, trace)
    views = []
    while isinstance(view, _StackView):
        slices, written = view.slices, view.written
        for name in [n for n, v in slices.items() if n not in written
                     and isinstance(v, jax.core.Tracer) and v._trace is trace]:
            dropped.add(id(slices.pop(name)))
        views.append(view)
        view = view.outer
    if not dropped:
        return
    regularized = frame.regularized
    for i in range(added, len(regularized)):
        regularizer, value = regularized[i]
        if id(value) in dropped:
            regularized[i] = (regularizer, _shape_only(value))
    for view in views:  # the terms a stack adds after it: a weight's stacked value
        for name, (regularizer, value) in list(view.after.items()):
            if id(value) in dropped:
                view.after[name] = (regularizer, _shape_only(value))


def _shape_only(value: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(value.shape, value.dtype)


# What sp.remat passes through jax.checkpoint; other arguments reach the function as they are.
_ARRAY_TYPES = (jax.Array, np.ndarray, jax.core.Tracer)


def _as(f: Callable, g: Callable) -> Callable:
    """``g``, a closure handed to JAX that calls ``f``, named as ``f`` in JAX's messages: JAX reads a
    function's name, file and line through ``inspect.unwrap`` and its parameter names (``input carry
    h``) through ``inspect.signature``, and both follow ``__wrapped__``. Without it they would name
    ``body`` in this file for every branch of a ``cond``, and the closure's own parameters. (One
    attribute store per wrapper call: ``functools.wraps`` would copy five more.)"""
    g.__wrapped__ = f  # type: ignore[attr-defined]
    return g


def _stepless(body: Callable, f: Callable) -> Callable:
    """``body`` (of ``_inside``) with no step, named as ``f`` (``_as``). A closure, not a
    ``functools.partial``: JAX names a partial by the function inside it."""
    return _as(f, lambda *args, **kwargs: body(None, *args, **kwargs))


def scan(f: Callable, init: Any, xs: Any = None, length: Optional[int] = None, reverse: bool = False,
         unroll: int | bool = 1, **kwargs: Any) -> Any:
    """``jax.lax.scan`` for a ``f(carry, x) -> (carry, y)`` that may call ``sp.get_param``.

    The body is traced anew on every call, so one function object can serve several scopes and
    calls; parameters it creates are shared by every step (an RNN cell's weights). With ``apply(...,
    rng=)``, ``sp.next_rng_key()`` inside gives each step its own keys: step ``i`` draws from
    ``fold_in(base, i)``, ``base`` the call's next key, which the scan takes from the stream only if
    the body draws (a scan that draws nothing leaves every later key unchanged). Under an eager
    ``apply`` the loop is traced and compiled at each call: jit the apply.

    >>> def fn(xs):
    ...     def step(h, x):
    ...         with sp.scope("cell", reuse=sp.AUTO_REUSE):
    ...             h = jnp.tanh(sp.layers.dense(x, 8) + sp.layers.dense(h, 8, use_bias=False))
    ...         return h, h
    ...     return sp.scan(step, jnp.zeros((xs.shape[1], 8)), xs)[1]
    """
    frame = _frame.current_wrapper("scan")
    keys = _Keys(frame, per_step=True)
    body = _inside(frame, "sp.scan", f, keys)
    n = _scan_length(xs, length)
    if keys.rng is None or n is None:  # (no length at all: jax.lax.scan says so)
        out = jax.lax.scan(_as(f, lambda c, x: body(None, c, x)), init, xs, length=length,
                           reverse=reverse, unroll=unroll, **kwargs)
    else:
        out = jax.lax.scan(_as(f, lambda c, ix: body(ix[0], c, ix[1])), init,
                           (jnp.arange(n, dtype=jnp.uint32), xs), length=length, reverse=reverse,
                           unroll=unroll, **kwargs)
    keys.finish(frame)
    return out


def _scan_length(xs: Any, length: Optional[int]) -> Optional[int]:
    """The number of steps of ``sp.scan(f, init, xs, length)`` (None if neither gives one), checked
    here: with keys the scan also runs over its own step counter, which JAX's messages about
    disagreeing lengths would count among the user's arrays."""
    sizes = [jnp.shape(leaf)[:1] for leaf in jax.tree_util.tree_leaves(xs)]
    if all(size == sizes[0] for size in sizes) and (not sizes or (
            sizes[0] and (length is None or sizes[0][0] == length))):
        return length if length is not None else sizes[0][0] if sizes else None
    # An error (only now are the leaves' paths worth finding).
    leaves = [(f"xs{jax.tree_util.keystr(path)}", leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(xs)[0]]
    for name, leaf in leaves:
        if not jnp.shape(leaf):
            raise ValueError(
                f"sp.scan: {name} has no leading axis to scan over: it is "
                f"{jnp.result_type(leaf).name}[] (shape ()), and every leaf of xs gives one slice "
                "along its first axis to each step (jax.lax.scan: scan got value with no leading "
                "axis to scan over).\n"
                "  fix: give every leaf of xs the steps as its first axis, e.g. jnp.asarray([1.0, "
                "2.0]) rather than the list [1.0, 2.0], whose items are leaves of their own; pass a "
                "value every step shares through the carry or a closure.")
    name, leaf = leaves[0]
    steps = jnp.shape(leaf)[0]
    if length is not None and steps != length:
        raise ValueError(
            f"sp.scan: length={length}, but {name} has {steps} steps (shape {jnp.shape(leaf)}): the "
            "leading axis of every leaf of xs is the number of steps.\n"
            f"  fix: drop length= (the scan runs {steps} steps) or slice xs to {length} steps.")
    other, odd = next((n, x) for n, x in leaves if jnp.shape(x)[0] != steps)
    raise ValueError(
        f"sp.scan: every leaf of xs has the steps as its first axis, but {name} has {steps} (shape "
        f"{jnp.shape(leaf)}) and {other} has {jnp.shape(odd)[0]} (shape {jnp.shape(odd)}).\n"
        "  fix: slice them to one number of steps; pass a value every step shares through the "
        "carry or a closure.")


def cond(pred: Any, true_fun: Callable, false_fun: Callable, *operands: Any, **kwargs: Any) -> Any:
    """``jax.lax.cond`` whose branches may call ``sp.get_param`` (both branches are traced, so both
    create their parameters in ``init``, as both branches of a TF 1.x ``tf.cond`` do).

    ``sp.next_rng_key()`` in a branch gives the keys it would give outside the cond; after the cond
    the call's keys have moved on by the most keys either branch draws (none if neither draws).
    Under an eager ``apply`` the branches are traced and compiled at each call: jit the apply."""
    frame = _frame.current_wrapper("cond")
    keys = _Keys(frame, per_step=False)
    traces = _Traces(frame)
    branches = [_stepless(_inside(frame, "sp.cond", b, keys, traces), b) for b in (true_fun, false_fun)]
    out = jax.lax.cond(pred, *branches, *operands, **kwargs)
    keys.finish(frame)
    return out


def switch(index: Any, branches: Sequence[Callable], *operands: Any, **kwargs: Any) -> Any:
    """``jax.lax.switch`` whose branches may call ``sp.get_param`` (every branch is traced).

    Keys as in ``sp.cond``: a branch draws what it would draw outside; afterwards the call's keys
    have moved on by the most keys any branch draws."""
    frame = _frame.current_wrapper("switch")
    keys = _Keys(frame, per_step=False)
    traces = _Traces(frame)
    wrapped = [_stepless(_inside(frame, "sp.switch", b, keys, traces), b) for b in branches]
    out = jax.lax.switch(index, wrapped, *operands, **kwargs)
    keys.finish(frame)
    return out


def while_loop(cond_fun: Callable, body_fun: Callable, init_val: Any) -> Any:
    """``jax.lax.while_loop`` whose functions may call ``sp.get_param``; with ``rng=``, each iteration
    of ``body_fun`` gets its own keys (from one key of the call's, taken only if they draw, as in
    ``sp.scan``)."""
    frame = _frame.current_wrapper("while_loop")
    keys = _Keys(frame, per_step=True)
    traces = _Traces(frame)  # JAX traces cond, body, and both again if the carry is promoted
    cond_body = _inside(frame, "sp.while_loop", cond_fun, keys, traces, 0)
    loop_body = _inside(frame, "sp.while_loop", body_fun, keys, traces, 1)
    if keys.rng is None:
        out = jax.lax.while_loop(_stepless(cond_body, cond_fun), _stepless(loop_body, body_fun),
                                 init_val)
    else:
        counted = _as(body_fun, lambda c: (c[0] + 1, loop_body(c[0], c[1])))
        try:
            _, out = jax.lax.while_loop(_as(cond_fun, lambda c: cond_body(c[0], c[1])), counted,
                                        (jnp.zeros((), jnp.uint32), init_val))
        except TypeError as error:
            _drop_step_from_carry_paths(error, counted)
            raise
    keys.finish(frame)
    return out


def _drop_step_from_carry_paths(error: TypeError, body: Callable) -> None:
    """Reword JAX's carry-mismatch ``error`` about ``body``, a ``while_loop`` body run on ``(step,
    carry)``, in the user's terms: its paths ``carry[1]...`` (the step counter is ``carry[0]``, never
    the culprit) are the user's ``carry...``. Any other error is left as it is."""
    if len(error.args) != 1 or not isinstance(error.args[0], str) or "carry" not in error.args[0]:
        return
    try:  # the carry's name, as JAX finds it (the user's, through __wrapped__)
        name: Optional[str] = next(iter(inspect.signature(body).parameters))
    except (StopIteration, TypeError, ValueError):
        name = None
    # JAX: "the input carry component {name}{path}", or "the input carry {name}" for the whole carry
    # (without a name: "the input carry at path {path}", "the input carry").
    component, whole = ((f"component {name}", f" {name}") if name else ("at path ", ""))
    error.args = (re.sub(re.escape(f"carry {component}[1]") + r"(\[?)",
                         lambda m: f"carry {component}[" if m.group(1) else f"carry{whole}",
                         error.args[0]),)


def fori_loop(lower: Any, upper: Any, body_fun: Callable, init_val: Any, **kwargs: Any) -> Any:
    """``jax.lax.fori_loop`` whose ``body_fun(i, val)`` may call ``sp.get_param``; with ``rng=``,
    each ``i`` gets its own keys (from one key of the call's, taken only if it draws, as in
    ``sp.scan``)."""
    frame = _frame.current_wrapper("fori_loop")
    keys = _Keys(frame, per_step=True)
    body = _inside(frame, "sp.fori_loop", body_fun, keys)
    out = jax.lax.fori_loop(lower, upper, lambda i, val: body(i, i, val), init_val, **kwargs)
    keys.finish(frame)
    return out


def remat(f: Callable, **checkpoint_kwargs: Any) -> Callable:
    """``jax.checkpoint`` (rematerialisation) of a function that may call ``sp.get_param``.

    ``checkpoint_kwargs`` go to ``jax.checkpoint`` (``policy``, ``prevent_cse``, ``static_argnums``).
    Transparent, as ``hk.remat``: the function gets the parameters and ``sp.next_rng_key()`` keys it
    would get called directly, and so does everything after it (same dropout masks, same output).
    State it sets (a training batch norm's moving statistics) and values it records leave it as
    extra results of the checkpointed function, so they are those of the function called directly
    (inside ``sp.layer_stack`` too: rematerialise each layer), and so do the regularizer terms it
    adds (a layer's ``activity_regularizer``). Only array arguments pass through
    ``jax.checkpoint``: a Python value (``training=False``, a size) reaches the function as it is,
    as called directly (unless ``static_argnums`` is given: then ``jax.checkpoint``'s rules hold),
    and what it returns that is no JAX array (a Python number, a NumPy array, a string) comes back
    as it is, as called directly, not as an array of ``jax.checkpoint``'s.
    Inside the function of an ``sp.scan``, ``sp.cond``, ... that wrapper's rule holds: neither
    state nor records can leave it.

    >>> def fn(x):
    ...     block = sp.remat(lambda h: sp.layers.batch_normalization(sp.layers.dense(h, 4),
    ...                                                              training=True))
    ...     return block(x)
    >>> model = sp.transform_with_state(fn)
    >>> params, state = model.init(jax.random.key(0), jnp.ones((2, 3)))
    >>> out, new_state = model.apply(params, state, jnp.ones((2, 3)))
    """

    @functools.wraps(f)
    def rematerialised(*args: Any, **kwargs: Any) -> Any:
        frame = _frame.current_wrapper("remat")
        keys = _Keys(frame, per_step=False)
        traces = _Traces(frame)
        store = frame.store
        # Under a jax.vmap, jax.grad, ... inside the model: what the function sets or records could
        # not leave that trace (checked below, as sp.layer_stack checks it).
        outside = _TRACE.value is not frame.trace

        inner: List[int] = []  # where the terms of values of the function's trace are (its latest)
        # The function's output: its structure and its leaves that are not JAX arrays (a Python
        # number, a string), which come back as they are, as called directly (jax.checkpoint
        # would make a number an array of its outer trace and refuse a string); the latest trace's.
        static: list = []

        def body(*args: Any, **kwargs: Any) -> Any:
            traces.enter(body)
            before = _state_values(store) if frame.with_state else None
            slices = dict(store.slices) if before is not None and isinstance(store, _StackView) \
                else None  # a stack block's state slices, put back below
            records: Optional[dict] = None if frame.records is None else {}
            added = len(frame.regularized)
            # frame.loop is kept: inside an sp.scan's function, state and records cannot leave it.
            with _frame_attrs(frame, trace=_TRACE.value, rng=None, rng_count=0, records=records):
                keys.enter(frame, None, None)
                made = _specs_made(frame)
                out = f(*args, **kwargs)
                keys.exit(frame)
                if made is not None:
                    _lift_constants(made)
            # The values the function set, still in the store: put back as they were and set
            # again after the checkpoint, with its results (the store must not keep values of the
            # checkpoint's trace, which ends first: jax.checking_leaks would find them). So are the
            # regularizer terms it added of its own values (a layer's activity penalty).
            new_state = {} if before is None else {
                n: v for n, v in _state_values(store).items() if v is not before.get(n)}
            if new_state and before is not None:
                _put_back_state(store, new_state, before, slices)
            here = _TRACE.value
            # (In init, a weight's own term holds the placeholder the store made in this trace: not
            # an output of the function, and as the store's values, read as it is after it.)
            made_here = () if made is None else {
                id(made.store.values.get(n)) for n in list(made.store.specs)[made.specs:]}
            inner[:] = [added + i for i, (_, value) in enumerate(frame.regularized[added:])
                        if getattr(value, "_trace", None) is here and id(value) not in made_here]
            if made is not None:
                _drop_placeholders(made)
            leaves, structure = jax.tree_util.tree_flatten(out)
            arrays = [leaf for leaf in leaves if isinstance(leaf, jax.Array)]
            static[:] = [structure, [None if isinstance(leaf, jax.Array) else leaf
                                     for leaf in leaves]]
            return arrays, new_state, records, [frame.regularized[i][1] for i in inner]

        if "static_argnums" in checkpoint_kwargs:  # the caller says which arguments are static
            out, new_state, records, values = jax.checkpoint(_as(f, body), **checkpoint_kwargs)(
                *args, **kwargs)
        else:
            # As called directly, the function gets Python values (a `training=False` flag, a
            # size) as they are: only arrays pass through jax.checkpoint, which would trace them all.
            leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
            arrays = [i for i, leaf in enumerate(leaves) if isinstance(leaf, _ARRAY_TYPES)]

            def checkpointed(*dynamic: Any) -> Any:
                given = list(leaves)
                for i, leaf in zip(arrays, dynamic):
                    given[i] = leaf
                call_args, call_kwargs = jax.tree_util.tree_unflatten(tree, given)
                return body(*call_args, **call_kwargs)

            out, new_state, records, values = jax.checkpoint(
                _as(f, checkpointed), **checkpoint_kwargs)(*[leaves[i] for i in arrays])
        keys.finish(frame)
        structure, leaves = static
        arrays = iter(out)
        out = jax.tree_util.tree_unflatten(
            structure, [next(arrays) if leaf is None else leaf for leaf in leaves])
        if outside and (new_state or records):
            raise _outside_error(None, new_state, records)
        if inner and outside:
            raise NotImplementedError(
                "sp.remat: an activity regularizer inside a function rematerialised under a JAX "
                "transformation inside the model (vmap, grad, ...): its output cannot leave it to be "
                "summed by sp.regularization_loss().\n  fix: return the output and add the penalty, "
                "regularizer(output) / batch size, to the loss outside the transformation.")
        for i, value in zip(inner, values):  # in place: the terms keep the order of a direct call
            frame.regularized[i] = (frame.regularized[i][0], value)
        for name, value in new_state.items():
            store.set_state(frame, name, value)
        if records and frame.records is not None:  # (records come back only where they are kept)
            frame.records.update(records)
        return out

    return rematerialised
