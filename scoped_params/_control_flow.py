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
  (the step is folded into a key drawn once per call), as TF's random ops draw anew on every
  iteration of ``tf.while_loop``.

``sp.set_state`` inside them is an error: a loop body cannot hand a new state out except through its
carry (``sp.layer_stack`` threads the state of repeated layers).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, List, Optional, Sequence

import jax
import jax.numpy as jnp

from . import _frame
from ._layer_stack import _frame_attrs, _Snapshot
from ._scope import _TRACE


def _base_key(frame: _frame.Frame) -> Optional[jax.Array]:
    """One key per wrapper call, the root of the keys its function draws (None without ``rng=``)."""
    return _frame.next_rng_key() if frame.rng is not None else None


class _Traces:
    """The traces JAX makes of the functions of one wrapper call (a ``while_loop``'s cond and body,
    a ``cond``'s branches), in order, each with the state it started from.

    JAX traces them in turn (cond, body) and, when a carry's weak type changes, all again (cond,
    body). A function traced again starts from the state its previous trace started from, and
    what that and the later traces made is rolled back, so the retraced round makes the names,
    counters and specs of one trace: the body's retrace keeps what the cond's retrace made just
    before it (a snapshot for every function taken at the wrapper call would erase it).
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


def _inside(frame: _frame.Frame, api: str, f: Callable, base_rng: Optional[jax.Array],
            traces: Optional[_Traces] = None) -> Callable:
    """``f`` in a new closure whose traces may read ``frame``'s parameters. The closure's first
    argument is the step to fold into ``base_rng`` (ignored when there is no key). The functions of
    one call share ``traces``."""
    if traces is None:
        traces = _Traces(frame)

    def body(step, *args, **kwargs):
        traces.enter(body)
        rng = base_rng if base_rng is None or step is None else jax.random.fold_in(base_rng, step)
        with _frame_attrs(frame, trace=_TRACE.value, rng=rng, rng_count=0, loop=api):
            return f(*args, **kwargs)

    return body


def scan(f: Callable, init: Any, xs: Any = None, length: Optional[int] = None, reverse: bool = False,
         unroll: int | bool = 1, **kwargs: Any) -> Any:
    """``jax.lax.scan`` for a ``f(carry, x) -> (carry, y)`` that may call ``sp.get_param``.

    The body is traced anew on every call, so one function object can serve several scopes and
    calls; parameters it creates are shared by every step (an RNN cell's weights). With ``apply(...,
    rng=)``, ``sp.next_rng_key()`` inside gives each step its own keys.

    >>> def fn(xs):
    ...     def step(h, x):
    ...         with sp.scope("cell", reuse=sp.AUTO_REUSE):
    ...             h = jnp.tanh(sp.layers.dense(x, 8) + sp.layers.dense(h, 8, use_bias=False))
    ...         return h, h
    ...     return sp.scan(step, jnp.zeros((xs.shape[1], 8)), xs)[1]
    """
    frame = _frame.current_wrapper("scan")
    base = _base_key(frame)
    body = _inside(frame, "sp.scan", f, base)
    leaves = jax.tree_util.tree_leaves(xs)
    n = length if length is not None else jnp.shape(leaves[0])[0] if leaves else None
    if base is None or n is None:  # (no length at all: jax.lax.scan says so)
        return jax.lax.scan(lambda c, x: body(None, c, x), init, xs, length=length, reverse=reverse,
                            unroll=unroll, **kwargs)
    return jax.lax.scan(lambda c, ix: body(ix[0], c, ix[1]), init,
                        (jnp.arange(n, dtype=jnp.uint32), xs), length=length, reverse=reverse,
                        unroll=unroll, **kwargs)


def cond(pred: Any, true_fun: Callable, false_fun: Callable, *operands: Any, **kwargs: Any) -> Any:
    """``jax.lax.cond`` whose branches may call ``sp.get_param`` (both branches are traced, so both
    create their parameters in ``init``, as both branches of a TF 1.x ``tf.cond`` do)."""
    frame = _frame.current_wrapper("cond")
    base = _base_key(frame)
    traces = _Traces(frame)
    branches = [functools.partial(_inside(frame, "sp.cond", b, base, traces), None)
                for b in (true_fun, false_fun)]
    return jax.lax.cond(pred, *branches, *operands, **kwargs)


def switch(index: Any, branches: Sequence[Callable], *operands: Any, **kwargs: Any) -> Any:
    """``jax.lax.switch`` whose branches may call ``sp.get_param`` (every branch is traced)."""
    frame = _frame.current_wrapper("switch")
    base = _base_key(frame)
    traces = _Traces(frame)
    wrapped = [functools.partial(_inside(frame, "sp.switch", b, base, traces), None)
               for b in branches]
    return jax.lax.switch(index, wrapped, *operands, **kwargs)


def while_loop(cond_fun: Callable, body_fun: Callable, init_val: Any) -> Any:
    """``jax.lax.while_loop`` whose functions may call ``sp.get_param``; with ``rng=``, each iteration
    of ``body_fun`` gets its own keys."""
    frame = _frame.current_wrapper("while_loop")
    base = _base_key(frame)
    traces = _Traces(frame)  # JAX traces cond, body, and both again if the carry is promoted
    cond_body = _inside(frame, "sp.while_loop", cond_fun, None if base is None else
                        jax.random.fold_in(base, 0), traces)
    loop_body = _inside(frame, "sp.while_loop", body_fun, None if base is None else
                        jax.random.fold_in(base, 1), traces)
    if base is None:
        return jax.lax.while_loop(functools.partial(cond_body, None),
                                  functools.partial(loop_body, None), init_val)
    _, out = jax.lax.while_loop(lambda c: cond_body(c[0], c[1]),
                                lambda c: (c[0] + 1, loop_body(c[0], c[1])),
                                (jnp.zeros((), jnp.uint32), init_val))
    return out


def fori_loop(lower: Any, upper: Any, body_fun: Callable, init_val: Any, **kwargs: Any) -> Any:
    """``jax.lax.fori_loop`` whose ``body_fun(i, val)`` may call ``sp.get_param``; with ``rng=``,
    each ``i`` gets its own keys."""
    frame = _frame.current_wrapper("fori_loop")
    body = _inside(frame, "sp.fori_loop", body_fun, _base_key(frame))
    return jax.lax.fori_loop(lower, upper, lambda i, val: body(i, i, val), init_val, **kwargs)


def remat(f: Callable, **checkpoint_kwargs: Any) -> Callable:
    """``jax.checkpoint`` (rematerialisation) of a function that may call ``sp.get_param``.

    ``checkpoint_kwargs`` go to ``jax.checkpoint`` (``policy``, ``prevent_cse``, ``static_argnums``).
    """

    @functools.wraps(f)
    def rematerialised(*args: Any, **kwargs: Any) -> Any:
        frame = _frame.current_wrapper("remat")
        body = _inside(frame, "sp.remat", f, _base_key(frame))
        return jax.checkpoint(functools.partial(body, None), **checkpoint_kwargs)(*args, **kwargs)

    return rematerialised
