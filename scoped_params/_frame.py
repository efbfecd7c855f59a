"""The trace frame: everything one ``init``/``apply`` call knows, held in a ``ContextVar``.

Nothing here is global and mutable: each call of ``init``, ``apply`` or ``specs`` builds its own
``Frame`` and installs it for the duration of the call, so the same model can be traced in many
threads (or asyncio tasks) at once.
"""

from __future__ import annotations

import contextvars
from typing import Any, Callable, Dict, List, Optional, Tuple

import jax

from ._errors import MissingRngError, not_in_transform

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
        "rng",
        "rng_count",
        "regularized",  # [(regularizer, value)] in creation order
        "records",  # dict or None when intermediates are not collected
        "record_names",
    )

    def __init__(self, mode: str, store: Any, with_state: bool, rng: Any = None,
                 records: Optional[Dict[str, Any]] = None):
        self.mode = mode
        self.store = store
        self.with_state = with_state
        self.scope, self.node = _scope.root_scope_and_node(store.tree if mode == APPLY else None)
        self.root_node = self.node
        self.entries: List[tuple] = []
        self.undo: List[list] = []
        self.name_stack = ""
        self.jax_stack = ""
        # init's trace is thrown away, so its ops need no names; an apply that starts staged out
        # (under jit) stays so; an eager apply asks on each scope (a scan inside it is staged).
        # (_scope.staging(), inline.)
        self.name_ops = False if mode == INIT else (
            True if _scope._find_top_trace(()) is not _scope._EAGER else None)
        self.names_in_use: Dict[str, int] = {}
        self.rng = rng
        self.rng_count = 0
        self.regularized: List[Tuple[Callable, Any]] = []
        self.records = records
        self.record_names: Dict[str, int] = {}


def current(api: str) -> Frame:
    frame = _FRAME.get()
    if frame is None:
        raise not_in_transform(api)
    return frame


def install(frame: Frame) -> Optional[Frame]:
    """Make ``frame`` current; returns the frame to pass to ``uninstall`` (the one it replaces)."""
    outer = _FRAME.get()
    _FRAME.set(frame)
    return outer


# set, not reset(token): resetting to "no value" deletes the variable from the context, which costs
# an eager apply more than all of its other context-variable work. (apply calls it directly.)
uninstall = _FRAME.set


def next_rng_key() -> jax.Array:
    """A fresh PRNG key for dropout and friends.

    Keys are ``fold_in(rng, i)`` for the i-th call in this ``apply`` call, so the sequence is
    deterministic given ``rng`` and independent of anything else. In ``init`` keys derive from the
    init key (they only feed the abstract trace).

    >>> def fn(x):
    ...     return x * jax.random.bernoulli(sp.next_rng_key(), 0.5, x.shape)
    >>> model = sp.transform(fn)
    >>> out = model.apply({}, jnp.ones(3), rng=jax.random.key(0))
    """
    frame = current("next_rng_key")
    if frame.rng is None:
        raise MissingRngError(
            "sp.next_rng_key() needs a random key, but apply was called without rng=.\n"
            "  fix: pass one, e.g. model.apply(params, x, rng=jax.random.key(step))."
        )
    key = jax.random.fold_in(frame.rng, frame.rng_count)
    frame.rng_count += 1
    return key


def regularization_loss() -> Any:
    """Sum of the regularizer terms of every parameter fetched so far in this call.

    Terms are computed from this call's parameter values (so they are differentiable in ``apply``);
    each parameter contributes once, when it is first fetched, whatever later reuses do. Returns
    ``0.0`` when no parameter has a regularizer.
    """
    frame = current("regularization_loss")
    total = 0.0
    for regularizer, value in frame.regularized:
        term = regularizer(value)
        if term is not None:
            total = total + term
    return total


def record(name: str, value: Any) -> None:
    """Keep ``value`` as ``<current name scope>/<name>``; returned by ``apply_with_intermediates``.

    Outside ``apply_with_intermediates`` this does nothing, so recording costs nothing in training.
    A name recorded twice under one name scope gets ``_1``, ``_2``, ... like TF op names.
    """
    frame = current("record")
    if frame.records is None:
        return
    full = f"{frame.name_stack}/{name}" if frame.name_stack else name
    count = frame.record_names.get(full, 0)
    frame.record_names[full] = count + 1
    if count:
        full = f"{full}_{count}"
    frame.records[full] = value


# Last, because _scope imports this module; a function-level import here cost ~2 us per apply call.
from . import _scope  # noqa: E402
