"""Scoping rules: ``scope`` (TF's ``variable_scope``), ``name_scope``, ``get_scope`` and ``AUTO_REUSE``.

The rules follow TF 1.x's ``variable_scope.py`` line by line (reuse inheritance, captured-scope
jumps, ``default_name`` numbering and its reset, name-scope uniquification), with one change in
mechanism: TF counts scope entries in a flat dict and, on every scope exit, scans all of it to reset
the sub-scope counters, which makes tracing quadratic in the number of scopes. Here the counters
live in a trie keyed by path component, so a reset drops one child table, and a captured-scope jump
keeps an undo log instead of copying the whole dict. Behaviour is identical; cost is linear.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Callable, Optional, Union

import jax
import numpy as np

from . import _frame
from ._errors import InvalidNameError, ReuseArgumentError, ScopeNestingError, user_site


class _ReuseMode(enum.Enum):
    AUTO_REUSE = 1

    def __repr__(self) -> str:
        return "sp.AUTO_REUSE"


AUTO_REUSE = _ReuseMode.AUTO_REUSE
"""Reuse mode: create the parameter if it is missing, else return the existing one."""

_FLOAT32 = np.dtype(np.float32)

# TF's op-name rules, which TF applies to scope names through name_scope.
_VALID_ROOT_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_VALID_NESTED_NAME = re.compile(r"^[A-Za-z0-9_.\\/>-]*$")


def _describe_reuse(reuse: Any) -> str:
    return "AUTO_REUSE" if reuse is AUTO_REUSE else repr(reuse)


class Scope:
    """A variable scope: the name prefix and the defaults for parameters created inside it.

    What ``with sp.scope(...) as s`` gives (TF's ``VariableScope``). Capture it and enter it again
    with ``sp.scope(s)`` to jump back to its absolute path with its own defaults, wherever you are.
    """

    __slots__ = ("name", "_reuse", "initializer", "regularizer", "dtype", "custom_getter",
                 "partitioner", "trainable", "original_name_scope", "prefix", "reuse_origin")

    def __init__(self, name: str, reuse: Any = False, *, initializer: Any = None,
                 regularizer: Optional[Callable] = None, dtype: Any = _FLOAT32,
                 custom_getter: Optional[Callable] = None, partitioner: Any = None,
                 trainable: Optional[bool] = None, original_name_scope: str = "",
                 reuse_origin: Optional[tuple] = None):
        self.name = name
        self._reuse = reuse
        self.initializer = initializer
        self.regularizer = regularizer
        self.dtype = dtype
        self.custom_getter = custom_getter
        self.partitioner = partitioner
        self.trainable = trainable
        self.original_name_scope = original_name_scope
        self.prefix = name + "/" if name else ""
        # (scope name, site) of the scope or reuse_variables() call that turned reuse on.
        self.reuse_origin = reuse_origin

    @property
    def reuse(self) -> Any:
        """``False``, ``True`` or ``sp.AUTO_REUSE``."""
        return self._reuse

    def reuse_variables(self) -> None:
        """Reuse parameters in this scope (and sub-scopes opened later) until it exits. Cannot be undone."""
        self._reuse = True
        self.reuse_origin = (self.name, user_site(), "reuse_variables()")

    def set_initializer(self, initializer: Any) -> None:
        self.initializer = initializer

    def set_regularizer(self, regularizer: Optional[Callable]) -> None:
        self.regularizer = regularizer

    def set_dtype(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)

    def set_custom_getter(self, custom_getter: Optional[Callable]) -> None:
        _check_getter(custom_getter)
        self.custom_getter = custom_getter

    def set_partitioner(self, partitioner: Any) -> None:
        self.partitioner = partitioner

    def set_trainable(self, trainable: Optional[bool]) -> None:
        self.trainable = trainable

    def __repr__(self) -> str:
        return f"Scope(name={self.name!r}, reuse={_describe_reuse(self._reuse)})"


def _check_getter(getter: Any) -> None:
    if getter is not None and not callable(getter):
        raise ReuseArgumentError(f"Passed a custom_getter which is not callable: {getter!r}")


def _wrap_custom_getter(new: Optional[Callable], old: Optional[Callable]) -> Optional[Callable]:
    """Nest getters innermost first: the new getter's ``next_getter`` is the old getter."""
    if old is None or new is None:
        return new if new is not None else old

    def wrapped(getter, *args, **kwargs):
        return new(lambda *a, **k: old(getter, *a, **k), *args, **kwargs)

    return wrapped


# --- default_name counters (TF's _VariableScopeStore.variable_scopes_count) -------------------------


class _Node:
    """Entry count of one scope path, and the counters of its sub-paths."""

    __slots__ = ("count", "children", "hints")

    def __init__(self):
        self.count = 0
        self.children: dict = {}
        self.hints: dict = {}  # default_name -> lowest suffix index that may still be free


def root_scope_and_node():
    return Scope(""), _Node()


def _child(node: _Node, name: str) -> _Node:
    for part in name.split("/") if "/" in name else (name,):
        nxt = node.children.get(part)
        if nxt is None:
            nxt = node.children[part] = _Node()
        node = nxt
    return node


def _peek_count(node: _Node, name: str) -> int:
    for part in name.split("/") if "/" in name else (name,):
        node = node.children.get(part)
        if node is None:
            return 0
    return node.count


def _open(frame, node: _Node) -> None:
    if frame.undo:
        frame.undo[-1].append((node, node.count, None, None))
    node.count += 1


def _close_subscopes(frame, node: _Node) -> None:
    if frame.undo:
        frame.undo[-1].append((node, node.count, node.children, node.hints))
    node.children = {}
    node.hints = {}


def _revert(log: list) -> None:
    for node, count, children, hints in reversed(log):
        node.count = count
        if children is not None:
            node.children = children
            node.hints = hints


def _unique_scope_name(frame, node: _Node, prefix: str) -> str:
    """TF's _get_unique_variable_scope: ``prefix``, else the first free ``prefix_N``."""
    if _peek_count(node, prefix) == 0:
        return prefix
    # Counts under one parent only grow until the parent's table is dropped (which drops the hints
    # with it), so every index below the hint stays taken and the scan can resume there. A jump's
    # exit rolls counts back, so a hint moved inside a jump is rolled back with them.
    idx = node.hints.get(prefix, 1)
    while _peek_count(node, f"{prefix}_{idx}") > 0:
        idx += 1
    if frame.undo:
        frame.undo[-1].append((node, node.count, node.children, dict(node.hints)))
    node.hints[prefix] = idx
    return f"{prefix}_{idx}"


# --- name scopes (TF's Graph.name_scope / unique_name) ---------------------------------------------


def _check_name(name: str, nested: bool, what: Union[str, Callable[[], str]]) -> None:
    """``what`` (the call to quote in the error) may be a function: it is only formatted on error."""
    if nested:
        ok = _VALID_NESTED_NAME.match(name) is not None
    else:
        ok = _VALID_ROOT_NAME.match(name) is not None
    if not ok:
        pattern = _VALID_NESTED_NAME.pattern if nested else _VALID_ROOT_NAME.pattern
        kind = "scope name" if nested else "root scope name"
        raise InvalidNameError(
            f"'{name}' is not a valid {kind}. A {kind} has to match the following pattern: {pattern}\n"
            f"  asked: {what() if callable(what) else what}\n"
            "  fix: use letters, digits and . _ - > / (no ':' or spaces; a root name cannot start with "
            "'_', '-' or '/')."
        )


def _unique_name(frame, name: str) -> str:
    """TF's Graph.unique_name(name, mark_as_used=True): case-insensitive _N suffixes."""
    stack = frame.name_stack
    full = f"{stack}/{name}" if stack else name
    key = full.lower()
    used = frame.names_in_use
    i = used.get(key, 0)
    used[key] = i + 1
    if i > 0:
        base = key
        while key in used:
            key = f"{base}_{i}"
            i += 1
        used[key] = 1
        full = f"{full}_{i - 1}"
    return full


class _NameScopeEntry:
    """Switches the frame's name stack and the matching ``jax.named_scope`` for XLA op metadata."""

    __slots__ = ("frame", "old_stack", "new_stack", "jax_scope")

    def __init__(self, frame, name: Optional[str], what: Union[str, Callable[[], str]]):
        self.frame = frame
        old = self.old_stack = frame.name_stack
        if name:
            _check_name(name, bool(old), what)
        if not name:
            new = ""
        elif name[-1] == "/":
            new = name[:-1]
        else:
            new = _unique_name(frame, name)
        self.new_stack = new
        frame.name_stack = new
        # jax.named_scope can only nest, so a relative extension maps exactly and an absolute
        # re-entry nests its full path (op metadata only; parameter names never depend on it).
        if new and new != old:
            label = new[len(old) + 1:] if old and new.startswith(old + "/") else new
            self.jax_scope = jax.named_scope(label)
            self.jax_scope.__enter__()
        else:
            self.jax_scope = None

    def returned(self) -> str:
        return self.new_stack + "/" if self.new_stack else ""

    def exit(self, exc_info=(None, None, None)) -> None:
        if self.jax_scope is not None:
            self.jax_scope.__exit__(*exc_info)
        self.frame.name_stack = self.old_stack


class name_scope:
    """Name intermediates, recorded values and XLA op metadata; never changes parameter names.

    TF 1.x's ``tf.name_scope``: repeated names get ``_1``, ``_2`` (case-insensitively), a trailing
    ``/`` re-enters an existing name scope exactly, and ``None`` or ``""`` returns to the root.
    ``with sp.name_scope("block") as ns`` gives the name-scope string, e.g. ``"block/"``.
    """

    __slots__ = ("_name", "_entry")

    def __init__(self, name: Optional[str]):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name_scope: name must be a string or None, got {type(name).__name__}")
        self._name = name
        self._entry = None

    def __enter__(self) -> str:
        frame = _frame.current("name_scope")
        self._entry = _NameScopeEntry(frame, self._name, f"sp.name_scope({self._name!r})")
        return self._entry.returned()

    def __exit__(self, *exc_info) -> None:
        entry, self._entry = self._entry, None
        if exc_info[0] is None and entry.frame.name_stack != entry.new_stack:
            raise ScopeNestingError(
                f"Improper nesting of name_scope: closing '{entry.new_stack}' while "
                f"'{entry.frame.name_stack}' is open.\n"
                "  fix: close scopes in the reverse order they were opened (use `with` blocks)."
            )
        entry.exit(exc_info)


def current_name_scope() -> str:
    """The current name scope with a trailing ``/`` (``""`` at the root), as TF's ``name_scope`` yields."""
    stack = _frame.current("current_name_scope").name_stack
    return stack + "/" if stack else ""


def get_scope() -> Scope:
    """The current ``sp.Scope`` (TF's ``tf.get_variable_scope()``)."""
    return _frame.current("get_scope").scope


# --- variable scopes -----------------------------------------------------------------------------


class scope:
    """Open a variable scope: prefix parameter names and set defaults for parameters inside.

    TF 1.x's ``tf.variable_scope`` with the same rules:

    * ``scope("foo")`` extends the current path (``foo/``) and opens a name scope ``foo`` (``foo_1``
      when re-entered); a captured ``Scope`` jumps to its absolute path with its own defaults;
      ``scope(None, default_name="d")`` picks ``d``, ``d_1``, ... per enclosing scope entry.
    * ``reuse`` is ``None``/``False`` (inherit), ``True`` or ``sp.AUTO_REUSE``; once on, it stays on in
      every sub-scope.
    * ``initializer``, ``dtype``, ``regularizer``, ``trainable``, ``custom_getter`` and ``partitioner``
      are inherited by sub-scopes and overridden by explicit arguments.

    >>> def fn(x):
    ...     with sp.scope("layer"):
    ...         w = sp.get_param("w", (x.shape[-1], 4))
    ...     return x @ w
    """

    __slots__ = ("_name_or_scope", "_default_name", "_reuse", "_initializer", "_regularizer",
                 "_dtype", "_trainable", "_custom_getter", "_partitioner", "_aux", "_entry")

    def __init__(self, name_or_scope: Any = None, *, default_name: Optional[str] = None,
                 reuse: Any = None, initializer: Any = None, dtype: Any = None,
                 regularizer: Optional[Callable] = None, trainable: Optional[bool] = None,
                 custom_getter: Optional[Callable] = None, partitioner: Any = None,
                 auxiliary_name_scope: bool = True):
        if name_or_scope is None and default_name is None:
            raise TypeError("If default_name is None then name_or_scope is required")
        if default_name is not None and not isinstance(default_name, str):
            raise TypeError(
                f"Scope: default_name must be a string, got {type(default_name).__name__} "
                f"({default_name!r}).")
        if name_or_scope is not None and not isinstance(name_or_scope, (str, Scope)):
            raise TypeError(
                "Scope: name_or_scope must be a string or Scope, got "
                f"{type(name_or_scope).__name__} ({name_or_scope!r})."
            )
        if reuse is False:
            reuse = None  # TF: False means "inherit", exactly like None.
        if not (reuse is None or reuse is True or reuse is AUTO_REUSE):
            raise ReuseArgumentError(
                f"The reuse parameter must be True or False or None (or sp.AUTO_REUSE), got {reuse!r}."
            )
        if not isinstance(auxiliary_name_scope, bool):
            raise TypeError(
                "The auxiliary_name_scope must be `True` or `False`, while get "
                f"{auxiliary_name_scope!r}"
            )
        if isinstance(name_or_scope, str):
            _check_components(name_or_scope, lambda: f"sp.scope({name_or_scope!r})")
        elif name_or_scope is None:
            _check_components(default_name, f"sp.scope(None, default_name={default_name!r})")
        _check_getter(custom_getter)
        self._name_or_scope = name_or_scope
        self._default_name = default_name
        self._reuse = reuse
        self._initializer = initializer
        self._regularizer = regularizer
        self._dtype = None if dtype is None else np.dtype(dtype)
        self._trainable = trainable
        self._custom_getter = custom_getter
        self._partitioner = partitioner
        self._aux = auxiliary_name_scope
        self._entry = None

    def __enter__(self) -> Scope:
        if self._entry is not None:
            raise ScopeNestingError(
                "This sp.scope(...) object is already entered; create a new one for each `with`."
            )
        frame = _frame.current("scope")
        old_scope, old_node = frame.scope, frame.node
        name_or_scope = self._name_or_scope
        what = lambda: f"sp.scope({name_or_scope!r})"  # noqa: E731 - formatted only on error

        # 1. The name scope (TF's variable_scope._enter_scope_uncached).
        if name_or_scope is None:
            if self._reuse:
                raise ReuseArgumentError(
                    "reuse=True cannot be used without a name_or_scope "
                    f"(asked: sp.scope(None, default_name={self._default_name!r}, "
                    f"reuse={_describe_reuse(self._reuse)})).\n"
                    "  fix: give the scope an explicit name to reuse, e.g. "
                    f"sp.scope({self._default_name!r}, reuse=True)."
                )
            ns_name = self._default_name
        elif isinstance(name_or_scope, str):
            ns_name = name_or_scope
        else:
            ns_name = name_or_scope.name.split("/")[-1]
        ns_entry = None
        if self._aux:
            if ns_name:
                ns_entry = _NameScopeEntry(frame, ns_name, what)
                ns_string = ns_entry.returned()
            else:
                ns_string = None  # re-entering the root scope opens no name scope
        else:
            ns_string = frame.name_stack + "/" if frame.name_stack else ""

        # 2. The variable scope (TF's _pure_variable_scope.__enter__).
        jump = isinstance(name_or_scope, Scope)
        if jump:
            captured = name_or_scope
            reuse = self._reuse if self._reuse else captured.reuse
            origin = (captured.name, user_site(), "reuse=True") if self._reuse else captured.reuse_origin
            new = Scope(
                captured.name, reuse, initializer=captured.initializer,
                regularizer=captured.regularizer, dtype=captured.dtype,
                custom_getter=captured.custom_getter, partitioner=captured.partitioner,
                trainable=captured.trainable, reuse_origin=origin,
                original_name_scope=captured.original_name_scope,
            )
            getter_base = captured.custom_getter
            node = _child(frame.root_node, captured.name) if captured.name else frame.root_node
            _open(frame, node)
            frame.undo.append([])
        else:
            local = name_or_scope if name_or_scope is not None else _unique_scope_name(
                frame, old_node, self._default_name)
            full = f"{old_scope.name}/{local}" if old_scope.name else local
            if self._reuse:
                reuse, origin = self._reuse, (full, user_site(), f"reuse={_describe_reuse(self._reuse)}")
            else:
                reuse, origin = old_scope.reuse, old_scope.reuse_origin
            new = Scope(
                full, reuse, initializer=old_scope.initializer, regularizer=old_scope.regularizer,
                dtype=old_scope.dtype, custom_getter=old_scope.custom_getter,
                partitioner=old_scope.partitioner, trainable=old_scope.trainable,
                reuse_origin=origin,
                original_name_scope=ns_string if ns_string is not None else local,
            )
            getter_base = old_scope.custom_getter
            node = _child(old_node, local)
            _open(frame, node)
        if self._initializer is not None:
            new.initializer = self._initializer
        if self._regularizer is not None:
            new.regularizer = self._regularizer
        if self._partitioner is not None:
            new.partitioner = self._partitioner
        if self._custom_getter is not None:
            new.custom_getter = _wrap_custom_getter(self._custom_getter, getter_base)
        if self._dtype is not None:
            new.dtype = self._dtype
        if self._trainable is not None:
            new.trainable = self._trainable

        frame.scope, frame.node = new, node
        self._entry = (frame, old_scope, old_node, new, node, ns_entry, jump)
        return new

    def __exit__(self, *exc_info) -> None:
        frame, old_scope, old_node, new, node, ns_entry, jump = self._entry
        self._entry = None
        if exc_info[0] is None and frame.scope is not new:
            raise ScopeNestingError(
                f"Improper nesting of scope: closing '{new.name}' while '{frame.scope.name}' is open.\n"
                "  fix: close scopes in the reverse order they were opened (use `with` blocks)."
            )
        if jump:
            _revert(frame.undo.pop())
        else:
            _close_subscopes(frame, node)
        frame.scope, frame.node = old_scope, old_node
        if ns_entry is not None:
            ns_entry.exit(exc_info)


def _check_components(name: str, what: Union[str, Callable[[], str]]) -> None:
    if not name or name.startswith("/") or name.endswith("/") or "//" in name:
        raise InvalidNameError(
            f"'{name}' is not a valid scope name: every '/'-separated component must be non-empty.\n"
            f"  asked: {what() if callable(what) else what}\n"
            "  fix: drop the leading, trailing or doubled '/'."
        )
