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
import inspect
import re
import threading
import types
import weakref
from sys import _getframe
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import jax
import numpy as np

from . import _frame
from ._tree import _callable_name, refuses_call
from ._errors import (_IS_USER_FILE, InvalidNameError, ReuseArgumentError, ScopeNestingError,
                      not_in_transform, user_code_site, user_site)


class _ReuseMode(enum.Enum):
    AUTO_REUSE = 1

    def __repr__(self) -> str:
        return "sp.AUTO_REUSE"


AUTO_REUSE = _ReuseMode.AUTO_REUSE
"""Reuse mode: create the parameter if it is missing, else return the existing one."""

_FLOAT32 = np.dtype(np.float32)


def as_np_dtype(dtype: Any) -> np.dtype:
    """``np.dtype(dtype)``, also of TF's DTypes: TF code is ported with ``dtype=tf.float32``, which
    NumPy cannot read but whose ``as_numpy_dtype`` it can (read off the object: TF is not imported).
    A TypeError for TF's DTypes with no NumPy equivalent (``tf.resource``, ``tf.variant``), whose
    ``as_numpy_dtype`` raises KeyError, as NumPy's for any other object that is no dtype."""
    try:
        return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    except (KeyError, AttributeError):  # getattr's default catches only a missing attribute
        raise TypeError(f"{dtype!r} has no NumPy dtype") from None

# TF's op-name rules, which TF applies to scope names through name_scope.
_VALID_ROOT_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")
_VALID_NESTED_NAME = re.compile(r"^[A-Za-z0-9_.\\/>-]*$")


def _describe_reuse(reuse: Any) -> str:
    return "AUTO_REUSE" if reuse is AUTO_REUSE else repr(reuse)


def _describe_refused_reuse(reuse: Any) -> str:
    """A ``reuse=`` value ``reuse_argument_error`` refuses, as the user wrote it."""
    return "tf.compat.v1.AUTO_REUSE" if _is_tf_auto_reuse(reuse) else repr(reuse)


def _is_tf_auto_reuse(reuse: Any) -> bool:
    """Whether ``reuse`` is TF's ``tf.compat.v1.AUTO_REUSE`` (told by its type's name and module:
    TF is not imported)."""
    kind = type(reuse)
    return (kind.__name__ == "_ReuseMode" and kind.__module__.startswith("tensorflow")
            and getattr(reuse, "name", None) == "AUTO_REUSE")


def reuse_argument_error(reuse: Any, asked: str) -> ReuseArgumentError:
    """The error for a ``reuse=`` TF 1.x refuses (anything but True, False, None and its
    AUTO_REUSE), or for TF's own ``AUTO_REUSE`` constant, left over in ported code; ``asked``: the
    call, its reuse spelled by ``_describe_refused_reuse``."""
    found = _describe_refused_reuse(reuse)
    if _is_tf_auto_reuse(reuse):
        found += ", TensorFlow's constant"
        fix = "TF's tf.compat.v1.AUTO_REUSE is TensorFlow's own constant; pass sp.AUTO_REUSE."
    elif isinstance(reuse, str) and reuse.lower().rsplit(".", 1)[-1] in ("auto", "auto_reuse"):
        fix = "pass reuse=sp.AUTO_REUSE (the constant, not a string; TF refuses strings too)."
    else:
        fix = ("pass reuse=True, False or None (inherit), or sp.AUTO_REUSE (create what is "
               "missing, else share); TF checks `reuse is True`, so 1 or 'True' is refused.")
    return ReuseArgumentError(
        f"The reuse parameter must be True or False or None (or sp.AUTO_REUSE), got {found}.\n"
        f"  asked: {asked}\n"
        f"  fix: {fix}")


_new_scope = object.__new__
_current_frame = _frame._FRAME.get  # the trace frame, or None outside a transform


class Scope:
    """A variable scope: the name prefix and the defaults for parameters created inside it.

    What ``with sp.scope(...) as s`` gives (TF's ``VariableScope``). Capture it and enter it again
    with ``sp.scope(s)`` to jump back to its absolute path with its own defaults, wherever you are.
    """

    __slots__ = ("prefix", "_reuse", "initializer", "regularizer", "dtype", "custom_getter",
                 "partitioner", "trainable", "original_name_scope", "reuse_origin", "_values",
                 "constraint")

    def __init__(self, name: str, reuse: Any = False, *, initializer: Any = None,
                 regularizer: Optional[Callable] = None, dtype: Any = _FLOAT32,
                 custom_getter: Optional[Callable] = None, partitioner: Any = None,
                 trainable: Optional[bool] = None, original_name_scope: str = "",
                 reuse_origin: Optional[tuple] = None, constraint: Optional[Callable] = None):
        self.prefix = name + "/" if name else ""  # the name is the prefix without its "/"
        self._reuse = reuse
        self.initializer = initializer
        self.regularizer = regularizer
        self.dtype = dtype
        self.custom_getter = custom_getter
        self.partitioner = partitioner
        self.trainable = trainable
        # The constraint of parameters created directly in this scope. As in TF, it is the
        # argument given when the scope was opened and nothing else: sub-scopes and a captured
        # scope entered again do not inherit it (tf1_variable_scope.md rules 19 and 26).
        self.constraint = constraint
        self.original_name_scope = original_name_scope
        # (scope name, site) of the scope or reuse_variables() call that turned reuse on.
        self.reuse_origin = reuse_origin
        # In apply: the params sub-dict at this path, for get_param's direct lookup; None where that
        # lookup does not apply: init, layer_stack blocks, a custom getter, a captured-scope jump, a
        # path that is not a dict of the params given. get_param then takes the general path.
        self._values: Optional[dict] = None

    @property
    def name(self) -> str:
        """The scope's full path, e.g. ``"encoder/layer_1"`` (``""`` at the root)."""
        return self.prefix[:-1]

    @property
    def reuse(self) -> Any:
        """``False``, ``True`` or ``sp.AUTO_REUSE``."""
        return self._reuse

    def reuse_variables(self) -> None:
        """Reuse parameters in this scope (and sub-scopes opened later) until it exits. Cannot be undone."""
        self._reuse = True
        self.reuse_origin = (self.name, user_site(), "reuse_variables()")

    def set_initializer(self, initializer: Any) -> None:
        """The default initializer of parameters created in this scope from now on, and of
        sub-scopes opened later (TF's ``VariableScope.set_initializer``)."""
        self.initializer = initializer

    def set_regularizer(self, regularizer: Optional[Callable]) -> None:
        """The default regularizer of parameters created in this scope from now on, and of
        sub-scopes opened later (TF's ``VariableScope.set_regularizer``)."""
        self.regularizer = regularizer

    def set_dtype(self, dtype: Any) -> None:
        """The default dtype of parameters created in this scope from now on, and of sub-scopes
        opened later (TF's ``VariableScope.set_dtype``)."""
        try:
            self.dtype = as_np_dtype(dtype)
        except (TypeError, ValueError):
            raise _scope_dtype_error(dtype, self.name, f"set_dtype({dtype!r})") from None

    def set_custom_getter(self, custom_getter: Optional[Callable]) -> None:
        """Replace this scope's custom getter, ``getter(next_getter, name, *args, **kwargs)``, for
        requests from now on (TF's ``VariableScope.set_custom_getter``). Arguments a getter leaves
        out of its ``next_getter`` call take TF's true-getter defaults: see ``sp.scope``."""
        _check_getter(custom_getter)
        self.custom_getter = custom_getter
        if custom_getter is not None:
            self._values = None

    def set_partitioner(self, partitioner: Any) -> None:
        """The default partitioner of parameters created in this scope from now on, and of
        sub-scopes opened later (TF's ``VariableScope.set_partitioner``)."""
        self.partitioner = partitioner

    def set_trainable(self, trainable: Optional[bool]) -> None:
        """Whether parameters created in this scope from now on, and in sub-scopes opened
        later, are trainable (``None``: as each request says)."""
        self.trainable = trainable

    def __repr__(self) -> str:
        return f"Scope(name={self.name!r}, reuse={_describe_reuse(self._reuse)})"


def _scope_dtype_error(dtype: Any, where: str, asked: str) -> TypeError:
    """The error for a scope's dtype that NumPy cannot read (get_param's own for a parameter)."""
    return TypeError(
        f"dtype={dtype!r} of scope {where!r} is not a dtype JAX has.\n"
        f"  asked: {asked}\n"
        "  fix: pass a NumPy/JAX dtype in any spelling: jnp.float32, np.int32, 'bfloat16' (TF's "
        "tf.float32 works too).")


def _scope_call(name_or_scope: Any, default_name: Optional[str], argument: str) -> Tuple[str, str]:
    """For an error about one argument of ``sp.scope(...)``: (the scope's name, the call as asked)."""
    if isinstance(name_or_scope, str):
        return name_or_scope, f"sp.scope({name_or_scope!r}, {argument})"
    if name_or_scope is None:
        return str(default_name), f"sp.scope(None, default_name={default_name!r}, {argument})"
    return name_or_scope.name, f"sp.scope(<captured scope {name_or_scope.name!r}>, {argument})"


def _check_getter(getter: Any) -> None:
    if getter is not None and not callable(getter):
        raise ReuseArgumentError(
            f"Passed a custom_getter which is not callable: {getter!r}.\n"
            "  fix: pass a function getter(next_getter, name, *args, **kwargs) that returns "
            "next_getter(name, *args, **kwargs) or a value made from it (or None for no getter).")


def _check_constraint(constraint: Any, where: Any) -> None:
    if constraint is not None and not callable(constraint):
        shown = where if isinstance(where, str) else getattr(where, "name", where)
        raise ValueError(
            f"The `constraint` argument must be a callable (scope {shown!r}), got {constraint!r}.\n"
            "  fix: pass a function from the parameter's value to its projected value, e.g. "
            "lambda w: jnp.clip(w, -1.0, 1.0).")


def _wrap_custom_getter(new: Optional[Callable], old: Optional[Callable]) -> Optional[Callable]:
    """Nest getters innermost first: the new getter's ``next_getter`` is the old getter."""
    if old is None or new is None:
        return new if new is not None else old

    def wrapped(getter, *args, **kwargs):
        def next_getter(*a, **k):
            return call_getter(old, getter, a, k)

        return call_getter(new, next_getter, args, kwargs)

    return wrapped


def call_getter(getter: Callable, next_getter: Callable, args: tuple, kwargs: Dict[str, Any]) -> Any:
    """``getter(next_getter, *args, **kwargs)`` as TF calls a custom getter: every argument by
    keyword, name too, and ``constraint=`` and ``sharding=`` only if it takes them (see
    ``getter_keywords``); the error for a getter that cannot be called so names the parameter."""
    takes = getter_keywords(getter)
    if len(takes) < 3:
        if not args and "name" not in takes and "name" in kwargs:  # getter(next_getter, n, ...)
            args = (kwargs["name"],)
        kwargs = {k: v for k, v in kwargs.items() if k in takes or k not in _GETTER_KEYWORDS}
    try:
        return getter(next_getter, *args, **kwargs)
    except TypeError as error:
        if not refuses_call(getter, (next_getter,) + args, kwargs):
            raise  # raised inside the getter (or told already by a nested one): as it is
        raise getter_signature_error(getter, args[0] if args else kwargs.get("name"),
                                     error) from None


# The keywords a custom getter is passed only if it can take them: constraint=, as TF, which added
# it after users had written getters without it, sharding=, which is ours, and name=, which TF
# passes by keyword, but a getter written as sp's getter(next_getter, name, ...) with its second
# parameter named otherwise (lambda g, n, *a, **k: ...) gets by position.
_GETTER_KEYWORDS = frozenset({"name", "constraint", "sharding"})


class SignatureFacts:
    """``read(fn)`` (something a callable's signature says), asked once per callable and kept
    without keeping the callable alive: a plain function's answer is kept under its code (what
    its parameters are depends on nothing else, and a function made per call, closing over that
    call's values, must not outlive it), another callable's (a partial, a callable object, a
    wrapper) under a weak reference to it, or read each time if it has none. Bounded."""

    __slots__ = ("read", "by_code", "by_object")

    def __init__(self, read: Callable[[Callable], Any]):
        self.read = read
        self.by_code: Dict[int, Tuple[Any, Any]] = {}  # id of the code -> (the code, the answer)
        self.by_object: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()

    def __call__(self, fn: Callable) -> Any:
        if type(fn) is types.FunctionType and "__wrapped__" not in fn.__dict__ and (
                "__signature__" not in fn.__dict__):
            code = fn.__code__
            entry = self.by_code.get(id(code))
            if entry is not None and entry[0] is code:
                return entry[1]
            answer = self.read(fn)
            if len(self.by_code) >= 4096:
                self.by_code.clear()
            self.by_code[id(code)] = (code, answer)  # the code lives as long as the def that made fn
            return answer
        try:
            return self.by_object[fn]
        except (KeyError, TypeError):  # not seen, or not hashable / no weak reference to it
            pass
        answer = self.read(fn)
        try:
            self.by_object[fn] = answer
        except TypeError:
            pass
        return answer


def _getter_keywords(getter: Callable) -> frozenset:
    try:
        params = list(inspect.signature(getter).parameters.values())
    except (TypeError, ValueError):  # no signature to read (some builtins): TF's has_kwargs is False
        return frozenset()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        named |= _GETTER_KEYWORDS
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) > 1 and (positional[1].name != "name"
                                or positional[1].kind is inspect.Parameter.POSITIONAL_ONLY):
        named.discard("name")
    return frozenset(named & _GETTER_KEYWORDS)


# Which of ``name=``, ``constraint=`` and ``sharding=`` the custom getter ``getter`` is passed by
# keyword: ``constraint`` and ``sharding`` if it names them as parameters or takes ``**kwargs``
# (TF's ``fn_args`` and ``has_kwargs``); ``name`` unless its second positional parameter has
# another name (then ``name`` goes by position). A getter made per call (TF's EMA getter over that
# call's values) is not kept alive.
getter_keywords = SignatureFacts(_getter_keywords)


def getter_signature_error(getter: Callable, full: Any, error: TypeError) -> TypeError:
    """The error for a custom getter that cannot be called as TF calls one (``error``: Python's),
    asked for parameter ``full``."""
    return TypeError(
        f"The custom getter {_callable_name(getter)} cannot be called as getter(next_getter, name, "
        f"*args, **kwargs), TF 1.x's convention, for parameter '{full}': {error}.\n"
        f"  asked: getter(next_getter, name='{full}', shape=..., dtype=..., initializer=..., "
        "regularizer=..., reuse=..., trainable=..., collections=..., partitioner=...; constraint= "
        "and sharding= only if it takes them)\n"
        "  fix: def getter(next_getter, name, *args, **kwargs): ... return next_getter(name, *args, "
        "**kwargs) (forwarding **kwargs keeps the request's shape, dtype and initializer).")


# --- default_name counters (TF's _VariableScopeStore.variable_scopes_count) -------------------------


# A counter node is a list ``[count, children, hints]``: the entry count of one scope path, its
# sub-paths' nodes by component (``None`` until one is entered) and, per default_name, the lowest
# suffix index that may be free (``None`` until needed). Every scope entry of every call makes one,
# and a list literal costs a third of an instance with three slots.
_COUNT, _CHILDREN, _HINTS = 0, 1, 2


def _child(node: list, name: str) -> list:
    for part in name.split("/") if "/" in name else (name,):
        children = node[_CHILDREN]
        if children is None:
            children = node[_CHILDREN] = {}
        nxt = children.get(part)
        if nxt is None:
            nxt = children[part] = [0, None, None]
        node = nxt
    return node


def _peek_count(node: list, name: str) -> int:
    for part in name.split("/") if "/" in name else (name,):
        children = node[_CHILDREN]
        if not children:
            return 0
        node = children.get(part)
        if node is None:
            return 0
    return node[_COUNT]


_COUNT_ONLY = object()  # an undo-log entry that restores a count and keeps the tables


def _open(frame, node: list) -> None:
    if frame.undo:
        frame.undo[-1].append((node, node[_COUNT], _COUNT_ONLY, None))
    node[_COUNT] += 1


def _close_subscopes(frame, node: list) -> None:
    if frame.undo:
        frame.undo[-1].append((node, node[_COUNT], node[_CHILDREN], node[_HINTS]))
    node[_CHILDREN] = node[_HINTS] = None


def _revert(log: list) -> None:
    for node, count, children, hints in reversed(log):
        node[_COUNT] = count
        if children is not _COUNT_ONLY:
            node[_CHILDREN] = children
            node[_HINTS] = hints


def begin_jump(frame) -> None:
    """Start the undo log of a jump (a captured scope re-entered, a cell's call): every count moved
    until ``end_jump`` is rolled back then, as TF restores its counters on leaving a jump.
    (``layers._Within`` does this inline, with the entry count of the node it jumps to.)"""
    undo = frame.undo
    if undo is None:
        undo = frame.undo = []
    undo.append([])


def end_jump(frame) -> None:
    _revert(frame.undo.pop())


# Set by ``layers`` once a template is made with create_scope_now_ outside any model: it counts the
# live ones' root names in a call's table, as TF's graph has counted them since they were made, before
# a default name is picked at the root (their own first call in the call counts them too).
count_root_templates: Optional[Callable[[Any], None]] = None


def _unique_scope_name(frame, node: list, prefix: str) -> str:
    """TF's _get_unique_variable_scope: ``prefix``, else the first free ``prefix_N``."""
    if count_root_templates is not None and node is frame.root_node:
        count_root_templates(frame)
    if _peek_count(node, prefix) == 0:
        return prefix
    head = ""
    if "/" in prefix:  # 'a/b': the counts of b, b_1, ... are in a's table, and so is their hint
        head, _, prefix = prefix.rpartition("/")
        node = _child(node, head)  # there: 'a/b' was counted
        head += "/"
    # Counts under one parent only grow until the parent's table is dropped (which drops the hints
    # with it), so every index below the hint stays taken and the scan can resume there. A jump's
    # exit rolls counts back, so a hint moved inside a jump is rolled back with them.
    hints = node[_HINTS]
    idx = hints.get(prefix, 1) if hints else 1
    while _peek_count(node, f"{prefix}_{idx}") > 0:
        idx += 1
    if frame.undo:
        frame.undo[-1].append((node, node[_COUNT], node[_CHILDREN], dict(hints) if hints else None))
    if hints is None:
        hints = node[_HINTS] = {}
    hints[prefix] = idx
    return f"{head}{prefix}_{idx}"


# --- name scopes (TF's Graph.name_scope / unique_name) ---------------------------------------------

# name -> valid as a root name too, for names already known to be valid op names (TF's rule, a regex).
# The same scope names recur on every call and a dict lookup costs a fifth of the match. The table is
# bounded, so names that never come back cannot grow it; the bound is far above the number of scopes
# in one model (it is emptied when full: a model with more names than the bound would check every
# name again on every call).
_VALID_NAMES: dict = {}
_VALID_NAMES_MAX = 1 << 16


def _check_name(name: str, nested: bool, what: Union[str, Callable[[], str]]) -> None:
    """``what`` (the call to quote in the error) may be a function: it is only formatted on error."""
    root_ok = _VALID_NAMES.get(name)
    if root_ok is None:
        if _VALID_NESTED_NAME.match(name) is None:
            root_ok = ok = False
        else:
            ok, root_ok = True, _VALID_ROOT_NAME.match(name) is not None
            if len(_VALID_NAMES) >= _VALID_NAMES_MAX:
                _VALID_NAMES.clear()
            _VALID_NAMES[name] = root_ok
    else:
        ok = True
    if not (ok if nested else root_ok):
        pattern = _VALID_NESTED_NAME.pattern if nested else _VALID_ROOT_NAME.pattern
        kind = "scope name" if nested else "root scope name"
        raise InvalidNameError(
            f"'{name}' is not a valid {kind}. A {kind} has to match the following pattern: {pattern}\n"
            f"  asked: {what() if callable(what) else what}\n"
            "  fix: use letters, digits and . _ - > / (no ':' or spaces; a root name cannot start with "
            "'_', '-' or '/')."
        )


def _check_scope_name(name: str, what: Union[str, Callable[[], str]]) -> bool:
    """Raise unless ``name`` is a valid nested scope name; return whether it is valid at the root."""
    _check_components(name, what)
    _check_name(name, True, what)
    return _VALID_ROOT_NAME.match(name) is not None


def _unique_name(frame, name: str) -> str:
    """TF's Graph.unique_name(name, mark_as_used=True) for a name scope."""
    stack = frame.name_stack
    return unique_in(frame.names_in_use, f"{stack}/{name}" if stack else name)


def unique_in(used: Dict[str, int], full: str) -> str:
    """``full``, or ``full_N`` if taken, marked used in ``used`` (lower-cased name -> use count), as
    TF's ``Graph.unique_name``: case-insensitive, and a suffix already taken is skipped."""
    key = full.lower()
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


def _eager_trace(find_top_trace: Callable[[tuple], Any]) -> Any:
    """The trace of eager (top-level) execution, one object for every thread: read in a new thread,
    which starts outside any trace even if this module is first imported inside a jit."""
    seen: list = []
    thread = threading.Thread(target=lambda: seen.extend((find_top_trace(()), find_top_trace(()))))
    thread.start()
    thread.join()
    if seen[0] is not seen[1]:
        raise ImportError("find_top_trace(()) is not one object per trace in this jax")
    return seen[0]


try:  # jax >= 0.4.36: the current trace, an object that is the same for as long as it is current
    from jax.extend.core import find_top_trace as _find_top_trace
    _EAGER = _eager_trace(_find_top_trace)
except ImportError:  # pragma: no cover - other jax versions: the public opaque state, 4x slower
    try:
        from jax.extend.core import get_opaque_trace_state as _trace_state
    except ImportError:  # older jax: always name the ops
        _EAGER = None

        def _find_top_trace(_):
            return True
    else:
        _EAGER = object()
        _EAGER_STATE = _trace_state("flax")

        def _find_top_trace(_):
            return _EAGER if _trace_state("flax") == _EAGER_STATE else None


class _FoundTrace:
    """``.value`` is ``_find_top_trace(())``: the stand-in for ``_direct_trace_state()``."""

    __slots__ = ()

    @property
    def value(self) -> Any:
        return _find_top_trace(())


def _direct_trace_state() -> Any:
    """JAX's own current-trace state: its ``.value`` is what ``find_top_trace(())`` returns, without
    that function's three Python calls (60 ns a read instead of 350; get_param reads it on every
    call). Private to JAX, so it is used only if it agrees with find_top_trace outside and inside a
    trace (checked in a new thread); ``None`` otherwise, and ``_FoundTrace`` serves at the public
    cost."""
    try:
        from jax._src.core import trace_state_strong_ref as state
    except ImportError:  # pragma: no cover - other jax versions
        return None
    agree: list = []

    def probe(x):
        agree.append(state.value is _find_top_trace(()))
        return x

    def run():
        agree.append(state.value is _find_top_trace(()))
        jax.make_jaxpr(probe)(0)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return state if agree == [True, True] and _EAGER is not None else None


# The current trace: ``_TRACE.value`` (compared with ``is``; see ``staging``).
_TRACE = _direct_trace_state()
if _TRACE is None:  # pragma: no cover - other jax versions
    _TRACE = _FoundTrace()


# --- the jax.named_scope each staged scope opens ---------------------------------------------------
#
# ``_push_name(label)`` does what entering ``jax.named_scope(label)`` does and returns what
# ``_pop_name`` restores. JAX keeps the current name stack in a thread-local ``SourceInfo``; entering
# a named scope builds a new one from the current one and the label. The same scopes are entered on
# every trace of a model, so the ``SourceInfo`` of each (name stack, label) pair is built once and
# kept (both are immutable values of strings): a staged scope entry then costs a dictionary lookup
# instead of three object constructions (~1.5 us per scope of a 1,000-layer trace). Private to JAX,
# so it is used only if it behaves as ``jax.named_scope`` (checked at import); otherwise the public
# ``extend_name_stack`` serves.

_NAMED: dict = {}  # (name stack's entries, their types, label) -> the SourceInfo with the stack extended by label
_NAMED_MAX = 1 << 16


def _probe_source_info_context() -> Any:
    try:
        from jax._src import source_info_util as info
        context = info._source_info_context
        before = context.context
        if before.traceback is not None:
            return None
        extended = before.replace(name_stack=before.name_stack.extend("probe"))
        context.context = extended
        try:
            ok = str(info.current_name_stack()) == str(before.name_stack.extend("probe"))
        finally:
            context.context = before
        hash((before.name_stack.stack, tuple(map(type, before.name_stack.stack)), "probe"))
        return context if ok else None
    except Exception:  # noqa: BLE001 - pragma: no cover - another JAX
        return None


_SOURCE_INFO = _probe_source_info_context()


def _path_type() -> Any:
    """``_Path``, JAX's ``NameStack`` for the name stacks sp opens, which keeps its string and its
    last sum with an enclosing stack; ``None`` if this JAX's ``NameStack`` does not take it (checked
    here: sums, strings, equality and copies behave as the plain class's).

    Lowering turns each staged op's name stack into its location: it adds the enclosing function's
    stack (``jit(f)``) to the op's and spells the sum, which costs two Python calls and a new object
    per op, four for a dense layer. A sum in which the op's stack is a ``_Path`` is ``_Path.__radd__``
    (Python asks a subclass's reflected method first): the ops of one scope share one sum and its
    string."""
    try:
        import copy

        from jax._src.source_info_util import NameStack, Scope as JaxScope
        set_slot = object.__setattr__

        class _Path(NameStack):  # type: ignore[misc, valid-type]
            __slots__ = ("_text", "_sum")
            _text: Optional[str]
            _sum: Optional[tuple]

            def __init__(self, stack: tuple) -> None:
                set_slot(self, "stack", stack)
                set_slot(self, "_text", None)
                set_slot(self, "_sum", None)  # (the last enclosing stack added, the sum)

            def __radd__(self, other: Any) -> Any:
                last = self._sum
                if last is not None and last[0] is other:
                    return last[1]
                total = _Path(other.stack + self.stack)
                set_slot(self, "_sum", (other, total))  # one store: another thread sees both or none
                return total

            def __str__(self) -> str:
                text = self._text
                if text is None:
                    text = NameStack.__str__(self)
                    set_slot(self, "_text", text)
                return text

            def __eq__(self, other: Any) -> Any:
                if isinstance(other, NameStack):
                    return self.stack == other.stack
                return NotImplemented

            __hash__ = NameStack.__hash__

            def __reduce__(self) -> Any:  # pickled and copied as the plain class
                return NameStack, (self.stack,)

        outer = NameStack().extend("jit(f)").transform("jvp")
        path = _Path((JaxScope("a"), JaxScope("b")))
        total = outer + path
        plain = NameStack(outer.stack + path.stack)
        ok = (type(total) is _Path and total is outer + path and str(total) == str(plain)
              and str(total) == "jit(f)/jvp(a)/b" and total == plain and plain == total
              and hash(total) == hash(plain) and path + outer == NameStack(path.stack + outer.stack)
              and type(copy.copy(total)) is NameStack)
        return _Path if ok else None
    except Exception:  # noqa: BLE001 - pragma: no cover - another JAX
        return None


_Path = _path_type() if _SOURCE_INFO is not None else None

if _SOURCE_INFO is not None:
    # the type of a jax.named_scope entry of JAX's name stack (a transform's entry is another type)
    _JaxScope = type(_SOURCE_INFO.context.name_stack.extend("probe").stack[-1])

    def _extended(name_stack: Any, label: str) -> Any:
        """``name_stack.extend(label)``, as a ``_Path`` where this JAX takes one."""
        if _Path is None:  # pragma: no cover - another JAX
            return name_stack.extend(label)
        return _Path((*name_stack.stack, _JaxScope(label)))

    def _push_name(label: str) -> Any:
        prev = _SOURCE_INFO.context
        if prev.traceback is None:
            stack = prev.name_stack.stack
            # The entries' types too: a jax.named_scope("jvp") entry equals jax.jvp's entry as a tuple.
            key = (stack, tuple(map(type, stack)), label)  # tuples of tuples: hashed and compared in C
            new = _NAMED.get(key)
            if new is None:
                if len(_NAMED) >= _NAMED_MAX:
                    _NAMED.clear()
                new = _NAMED[key] = prev.replace(name_stack=_extended(prev.name_stack, label))
        else:  # inside JAX's user_context (a traceback is set): not a reusable value
            new = prev.replace(name_stack=_extended(prev.name_stack, label))
        _SOURCE_INFO.context = new
        return prev

    def _pop_name(prev: Any) -> None:
        _SOURCE_INFO.context = prev

    def _push_rebased(path: str, jax_old: str) -> Any:
        """Make JAX's name stack spell ``path`` ('' for none) where it spells ``jax_old`` now: the
        labels sp opened for ``jax_old`` (the last entries) are replaced, what was open before the
        model's first one (a caller's own ``jax.named_scope``, say) is kept. If the last entries
        do not spell ``jax_old`` (a ``jax.named_scope`` or a transform such as ``jax.grad`` opened
        inside the model since), ``path`` extends the stack as it is."""
        prev = _SOURCE_INFO.context
        stack = prev.name_stack.stack
        i, spelled = len(stack), ""
        while i and len(spelled) < len(jax_old) and type(stack[i - 1]) is _JaxScope:
            i -= 1
            spelled = f"{stack[i].name}/{spelled}" if spelled else stack[i].name
        base = prev.name_stack[:i] if spelled == jax_old else prev.name_stack
        _SOURCE_INFO.context = prev.replace(name_stack=_extended(base, path) if path else base)
        return prev
else:  # pragma: no cover - another JAX
    _named_scope: Callable[[str], Any]
    try:  # what jax.named_scope returns, without its argument check (our names are checked strings)
        from jax.extend.source_info_util import extend_name_stack as _named_scope
    except ImportError:  # older jax
        _named_scope = jax.named_scope

    def _push_name(label: str) -> Any:
        prev = _named_scope(label)  # the context manager: what _pop_name closes
        prev.__enter__()
        return prev

    def _pop_name(prev: Any) -> None:
        prev.__exit__(None, None, None)

    def _push_rebased(path: str, jax_old: str) -> Any:  # public API only: extend what is open
        return _push_name(path or "_")


def names_now() -> Any:
    """JAX's name-stack context now, for ``restore_names`` (None where it is not reachable)."""
    return None if _SOURCE_INFO is None else _SOURCE_INFO.context


def restore_names(saved: Any) -> None:
    """Put back the name-stack context ``names_now`` returned: a traced ``apply`` that raised with
    scopes open (or left one open in a paused generator) must not leave its names on the caller's
    later ops."""
    if saved is not None and _SOURCE_INFO.context is not saved:
        _SOURCE_INFO.context = saved


def staging() -> bool:
    """Whether ops are being staged out (jit, scan, make_jaxpr, ...) rather than run eagerly.

    ``_PlainScope.__enter__``, ``_enter_name_scope`` and ``Frame`` repeat the test inline."""
    return _TRACE.value is not _EAGER


def _enter_name_scope(frame, name: Optional[str], what: Union[str, Callable[[], str]]) -> tuple:
    """Switch the frame's name stack; returns what ``_exit_name_scope`` restores.

    While ops are staged out (jit, scan, make_jaxpr, ...), a matching ``jax.named_scope`` puts the
    name into XLA op metadata. Eager ops carry no metadata, and a name stack only slows their
    dispatch, so eagerly none is opened; nor in init, whose trace is thrown away (``frame.name_ops``
    says which case a frame is in). ``frame.jax_stack`` is the name scope the open
    ``jax.named_scope``s spell: a label extends it, or, after an eager parent or for an absolute
    re-entry, spells the whole path (op metadata only; parameter names never depend on it).

    ``_PlainScope.__enter__`` repeats this inline for a plain ``sp.scope("name")``.
    """
    old = frame.name_stack
    if name:
        root_ok = _VALID_NAMES.get(name)
        if root_ok is None or (not root_ok and not old):
            _check_name(name, bool(old), what)
        if name[-1] == "/":
            new = name[:-1]
        else:
            new = f"{old}/{name}" if old else name
            used = frame.names_in_use
            key = new.lower()
            if key in used:
                new = _unique_name(frame, name)
            else:
                used[key] = 1
    else:
        new = ""
    frame.name_stack = new
    jax_old = frame.jax_stack
    name_ops = frame.name_ops
    if new != jax_old and (name_ops or name_ops is None and _TRACE.value is not _EAGER):
        if new:
            jax_scope = _push_path(new, jax_old)
        elif jax_old:  # name_scope('') under open names: the root, in op metadata too
            jax_scope = _push_rebased("", jax_old)
        else:
            return old, new, jax_old, None
        frame.jax_stack = new
        return old, new, jax_old, jax_scope
    return old, new, jax_old, None


def _push_path(new: str, jax_old: str) -> Any:
    """Open what turns JAX's name stack, which spells ``jax_old`` from the model's root, into
    ``new``: a label, when ``new`` is under ``jax_old``; else (an absolute re-entry, a scope opened
    under ``name_scope('')``) the whole path in place of ``jax_old``'s labels."""
    if not jax_old:
        return _push_name(new)
    if new.startswith(jax_old) and new[len(jax_old):len(jax_old) + 1] == "/":
        return _push_name(new[len(jax_old) + 1:])
    return _push_rebased(new, jax_old)


def _exit_name_scope(frame, entry: tuple) -> None:
    old, _, jax_old, jax_scope = entry
    if jax_scope is not None:
        _pop_name(jax_scope)
    frame.name_stack = old
    frame.jax_stack = jax_old


class name_scope:
    """Name intermediates, recorded values and XLA op metadata; never changes parameter names.

    TF 1.x's ``tf.name_scope``: repeated names get ``_1``, ``_2`` (case-insensitively), a trailing
    ``/`` re-enters an existing name scope exactly, and ``None`` or ``""`` returns to the root.
    ``with sp.name_scope("block") as ns`` gives the name-scope string, e.g. ``"block/"``.

    Closed by hand (``__exit__``) while a name scope or ``sp.scope`` opened inside it is still open,
    it raises ``sp.ScopeNestingError`` (TF does not check). Left open when an ``sp.scope`` around it
    closes, it is closed with that scope's name scope, and its own exit later restores the name
    scope it found, as TF 1.x's does. One object may be entered again, even while it is open (it
    then nests, as a new ``sp.name_scope`` would; TF 1.x's object loses the outer entry's name
    scope there) and by several calls at once: an exit closes its own call's latest entry.
    """

    __slots__ = ("_name", "_entries")

    def __init__(self, name: Optional[str]):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name_scope: name must be a string or None, got {type(name).__name__}")
        self._name = name
        # (frame, entry) of each open entry, innermost last: one object may be entered again while
        # open (nested, as TF allows) and by several calls at once (threads); an exit closes the
        # latest entry of its own call.
        self._entries: List[Tuple[_frame.Frame, tuple]] = []

    def __enter__(self) -> str:
        frame = _frame.current("name_scope")
        entry = _enter_name_scope(frame, self._name, f"sp.name_scope({self._name!r})")
        self._entries.append((frame, entry))
        new = entry[1]
        return new + "/" if new else ""

    def __exit__(self, *exc_info: Any) -> None:
        entries = self._entries
        frame = _current_frame()
        # On a copy, and removed by value: other threads' calls append and remove their own entries
        # meanwhile (an index found here could be stale by the time it is popped).
        for item in reversed(entries[:]):
            if item[0] is frame:
                entry = item[1]
                break
        else:
            raise ScopeNestingError(
                f"Closing sp.name_scope({self._name!r}), which is not open in this call.\n"
                "  fix: enter it first (use a `with` block), in the init/apply call that closes it.")
        if exc_info[0] is None and frame.name_stack != entry[1]:
            _exit_closed_name_scope(frame, entry)  # may raise: then it stays open, to close in order
        else:
            _exit_name_scope(frame, entry)
        entries.remove(item)


def _exit_closed_name_scope(frame, entry: tuple) -> None:
    """Exit the name scope ``entry`` (what ``_enter_name_scope`` returned) when the frame's name
    scope is no longer its own.

    Where a name scope, or an ``sp.scope``, opened inside it is still open, that is improper
    nesting. Otherwise an enclosing ``sp.scope`` was closed first and restored the name scope it
    found, as TF's ``variable_scope`` does; TF 1.x accepts the program, and this exit restores the
    name scope it found (the enclosing scope's, open again as in TF's graph). JAX's name stack is
    left as that scope's exit left it: its ``jax.named_scope`` and this one's are closed already.
    """
    old, new, jax_old, jax_scope = entry
    current = frame.name_stack
    if current.startswith(new + "/") if new else current:
        raise ScopeNestingError(
            f"Improper nesting of name_scope: closing '{new}' while '{current}' is open.\n"
            "  fix: close scopes in the reverse order they were opened (use `with` blocks).")
    if frame.jax_stack == new and jax_scope is not None:  # its jax.named_scope is still open
        _pop_name(jax_scope)
        frame.jax_stack = jax_old
    frame.name_stack = old


def current_name_scope() -> str:
    """The current name scope with a trailing ``/`` (``""`` at the root), as TF's ``name_scope`` yields."""
    stack = _frame.current("current_name_scope").name_stack
    return stack + "/" if stack else ""


def get_scope() -> Scope:
    """The current ``sp.Scope`` (TF's ``tf.get_variable_scope()``)."""
    return _frame.current("get_scope").scope


# --- variable scopes -----------------------------------------------------------------------------


def reentered(captured: Scope, reuse: Any) -> Scope:
    """What parameter requests see when TF re-enters ``captured``, a scope of the current call, with
    ``reuse`` and no name scope (``variable_scope(captured, reuse=reuse, auxiliary_name_scope=False)``)
    to run a block that only requests parameters: ``captured`` itself, or a copy with reuse on (or
    without ``captured``'s constraint, which TF's re-entry does not bring).

    Unlike ``sp.scope(captured)``'s jump, this moves no counters (a block that opens no scope cannot
    tell) and keeps ``captured``'s direct lookup in ``apply`` (its sub-dict of this call's params),
    unless the call's store is no longer apply's own (the block of an ``sp.layer_stack``, whose
    view must see every request).
    """
    values = captured._values
    if values is not None and type(_current_frame().store) is not _params.ApplyStore:
        values = None
    same_reuse = not reuse or reuse is captured._reuse
    if same_reuse and captured.constraint is None and values is captured._values:
        return captured
    name = captured.prefix[:-1]
    if same_reuse:
        reuse, origin = captured._reuse, captured.reuse_origin
    else:
        origin = (name, user_site(), f"reuse={_describe_reuse(reuse)}")
    s = _sub_scope(captured, name, reuse, origin, captured.original_name_scope)
    s.prefix = captured.prefix  # "" at the root, which _sub_scope's path would not give
    s._values = values  # its own sub-dict, not a child's
    return s


def _sub_values(values: dict, name: str) -> Optional[dict]:
    """The params sub-dict of the scope ``name`` under a scope whose sub-dict is ``values``, for
    ``get_param``'s direct lookup; ``None`` when there is none, or when a key of it spells a full
    name (``{"a": {"b/w": x}}``): the direct lookup would see one of two spellings of a name
    (``{"a": {"b/w": x, "b": {"w": y}}}``), so the scope's requests go through the store's flat
    view, which refuses a name spelled twice (as ``sp.flatten`` does) and finds one spelled once."""
    found = values.get(name)
    if type(found) is not dict:
        return None
    values = found
    checked = None
    if len(values) > 16:  # a wide scope, entered again and again: its keys are scanned once a call
        store = _current_frame().store
        checked = getattr(store, "scanned", None)
        if checked is None:  # the call's first wide scope (an ApplyStore makes no set up front)
            try:
                store.scanned = checked = set()
            except AttributeError:  # a store without the slot: scanned every time
                pass
        elif id(values) in checked:
            return values
    try:
        for key in values:  # a scope's sub-dict has a few keys: a loop beats one str.join
            if "/" in key:
                break
        else:
            if checked is not None:
                checked.add(id(values))  # (params are not changed during the call)
            return values
    except TypeError:  # a key that is not a str
        if not any(type(key) is str and "/" in key for key in values):
            return values
    _current_frame().store.flat_view()  # raises NameCollisionError for a name spelled twice
    return None


def _sub_scope(parent: Scope, name: str, reuse: Any, origin: Optional[tuple],
               original_name_scope: str) -> Scope:
    """A scope inheriting ``parent``'s defaults: ``Scope(...)`` without the keyword-call cost (every
    ``sp.scope`` entry makes one)."""
    s = _new_scope(Scope)
    s.prefix = name + "/"
    s._reuse = reuse
    s.reuse_origin = origin
    s.original_name_scope = original_name_scope
    s.initializer = parent.initializer
    s.regularizer = parent.regularizer
    s.dtype = parent.dtype
    s.custom_getter = parent.custom_getter
    s.partitioner = parent.partitioner
    s.trainable = parent.trainable
    s.constraint = None  # never inherited (see Scope)
    values = parent._values
    s._values = None if values is None else _sub_values(values, name[len(parent.prefix):])
    return s


class _Options:
    """The validated arguments of an ``sp.scope(...)`` beyond a plain name (rare: kept apart so the
    plain ``sp.scope("name")`` stores two fields)."""

    __slots__ = ("default_name", "reuse", "initializer", "regularizer", "dtype", "trainable",
                 "custom_getter", "partitioner", "aux", "constraint")

    def __init__(self, name_or_scope, default_name, reuse, initializer, dtype, regularizer,
                 trainable, custom_getter, partitioner, auxiliary_name_scope, constraint):
        if name_or_scope is None and default_name is None:
            raise TypeError("If default_name is None then name_or_scope is required.\n"
                            "  asked: sp.scope(None) with no default_name\n"
                            "  fix: pass a name, sp.scope('name'), or a default for the scope to "
                            "number, sp.scope(None, default_name='name').")
        if default_name is not None and not isinstance(default_name, str):
            raise TypeError(
                f"Scope: default_name must be a string, got {type(default_name).__name__} "
                f"({default_name!r}).\n  fix: pass the name as a str, e.g. "
                f"default_name={str(default_name)!r}.")
        if name_or_scope is not None and not isinstance(name_or_scope, (str, Scope)):
            tf_scope = type(name_or_scope).__name__ == "VariableScope" and hasattr(
                name_or_scope, "original_name_scope")
            raise TypeError(
                "Scope: name_or_scope must be a string or Scope, got "
                f"{type(name_or_scope).__name__} ({name_or_scope!r})"
                + (", TensorFlow's own scope, which sp does not see" if tf_scope else "") + ".\n"
                "  fix: " + (f"pass its name, sp.scope({name_or_scope.name!r}), or capture an "
                             "sp.Scope: with sp.scope('name') as s: ..., then sp.scope(s)."
                             if tf_scope else "pass a scope name (a str) or an sp.Scope captured "
                             "with `with sp.scope('name') as s`."))
        if reuse is False:
            reuse = None  # TF: False means "inherit", exactly like None.
        if not (reuse is None or reuse is True or reuse is AUTO_REUSE):
            raise reuse_argument_error(reuse, _scope_call(
                name_or_scope, default_name, f"reuse={_describe_refused_reuse(reuse)}")[1])
        if not isinstance(auxiliary_name_scope, bool):
            raise TypeError(
                "The auxiliary_name_scope must be `True` or `False`, while get "
                f"{auxiliary_name_scope!r}.\n  fix: pass a Python bool, auxiliary_name_scope=True "
                "(the default) or False (the scope opens no name scope of its own).")
        if isinstance(name_or_scope, str):
            if name_or_scope:  # "" re-enters the root scope: checked where it is entered
                _check_components(name_or_scope, lambda: f"sp.scope({name_or_scope!r})")
        elif name_or_scope is None:
            _check_components(default_name, f"sp.scope(None, default_name={default_name!r})")
        _check_getter(custom_getter)
        _check_constraint(constraint, name_or_scope if name_or_scope is not None else default_name)
        if dtype is not None:
            try:
                dtype = as_np_dtype(dtype)
            except (TypeError, ValueError):
                raise _scope_dtype_error(dtype, *_scope_call(
                    name_or_scope, default_name, f"dtype={dtype!r}")) from None
        self.default_name = default_name
        self.reuse = reuse
        self.initializer = initializer
        self.regularizer = regularizer
        self.dtype = dtype
        self.trainable = trainable
        self.custom_getter = custom_getter
        self.partitioner = partitioner
        self.aux = auxiliary_name_scope
        self.constraint = constraint


_SCOPE_KEYWORDS = frozenset({"default_name", "reuse", "initializer", "dtype", "regularizer",
                             "trainable", "custom_getter", "partitioner", "auxiliary_name_scope",
                             "constraint"})

# name -> its plain sp.scope(name). They hold no state (each entry's is on the frame), so one per name
# serves every call in every thread; bounded like _VALID_NAMES.
_PLAIN_SCOPES: dict = {}
# default_name -> its sp.scope(None, default_name=...), (name, reuse) -> its sp.scope(name, reuse=...):
# likewise.
_NAMING_SCOPES: dict = {}
_NAMING_KEYWORDS = frozenset({"default_name", "reuse"})


def _plain_scope(name: str) -> "_ScopeContext":
    """The shared ``sp.scope(name)``: a ``_PlainScope``, but for ``""``, TF's ``variable_scope("")``,
    which re-enters the root scope: the general path's (see ``_ScopeWithOptions.__enter__``)."""
    return _PlainScope(name) if name else _ScopeWithOptions("")


def _reusing_scope(name: str, reuse: Any) -> "_ScopeContext":
    """The shared ``sp.scope(name, reuse=...)``, as ``_plain_scope``."""
    return _ReusingScope(name, reuse) if name else _ScopeWithOptions("", reuse=reuse)


def _shared(table: dict, key: Any, make: Callable[..., Any], *args: Any) -> Any:
    """``table[key]``, made as ``make(*args)`` on first use (the tables are bounded like
    ``_VALID_NAMES``)."""
    cm = table.get(key)
    if cm is None:
        if len(table) >= _VALID_NAMES_MAX:
            table.clear()
        cm = table[key] = make(*args)
    return cm


def default_name_scope(default_name: str) -> "_PlainScope":
    """``sp.scope(None, default_name=default_name)``, without the keyword call (layers open one on
    every call)."""
    cm = _NAMING_SCOPES.get(default_name)
    return cm if cm is not None else _shared(_NAMING_SCOPES, default_name, _DefaultNameScope,
                                             default_name)


def _naming_scope(name_or_scope: Any, default_name: Any, reuse: Any) -> Optional["_PlainScope"]:
    """The shared scope object of ``sp.scope(name, reuse=...)`` or ``sp.scope(None,
    default_name=...)``; ``None`` for any other arguments (the general path validates them)."""
    if default_name is not None and type(default_name) is not str:
        return None
    if reuse is False:
        reuse = None  # TF: False means "inherit", exactly like None
    if type(name_or_scope) is str:
        if reuse is None:  # the default name only names a scope opened without a name
            return _shared(_PLAIN_SCOPES, name_or_scope, _plain_scope, name_or_scope)
        if reuse is not True and reuse is not AUTO_REUSE:
            return None
        return _shared(_NAMING_SCOPES, (name_or_scope, reuse), _reusing_scope, name_or_scope, reuse)
    if name_or_scope is None and default_name is not None and reuse is None:
        return default_name_scope(default_name)
    return None


# What sp.scope("name", ...) sets on the scope it opens, entered through the plain scope's path.
_DEFAULTS_KEYWORDS = frozenset({"reuse", "initializer", "dtype", "regularizer", "trainable",
                                "partitioner", "constraint"})


def _defaults_scope(name: str, reuse: Any = None, initializer: Any = None, dtype: Any = None,
                    regularizer: Any = None, trainable: Any = None, partitioner: Any = None,
                    constraint: Any = None) -> Optional["_PlainScope"]:
    """``sp.scope(name, reuse=..., initializer=..., ...)`` (TF code's common ``variable_scope``): a
    ``_PlainScope`` that also sets the scope's defaults; ``None`` for arguments the general path
    rejects (it says why). Made per call: the defaults are often made per call too."""
    if reuse is False:
        reuse = None  # TF: False means "inherit", exactly like None
    if not (reuse is None or reuse is True or reuse is AUTO_REUSE) or (
            constraint is not None and not callable(constraint)):
        return None
    if initializer is None and dtype is None and regularizer is None and trainable is None and (
            partitioner is None and constraint is None):
        return _naming_scope(name, None, reuse)
    if dtype is not None:
        try:
            dtype = as_np_dtype(dtype)
        except (TypeError, ValueError):
            raise _scope_dtype_error(dtype, name, f"sp.scope({name!r}, dtype={dtype!r})") from None
    if not name:  # sp.scope("", ...): the root scope re-entered, by the general path
        return None
    cm = _PlainScope(name, reusing=reuse, defaults=(
        initializer, regularizer, dtype, trainable, partitioner, constraint))
    shared = _PLAIN_SCOPES.get(name)
    if shared is not None:
        cm._root_ok = shared._root_ok  # the name's check, done once
    return cm


def scope(name_or_scope: Union[str, Scope, None] = None, *tf_positional: Any,
          **options: Any) -> _ScopeContext:
    """Open a variable scope: prefix parameter names and set defaults for parameters inside.

    TF 1.x's ``tf.variable_scope`` with the same rules:

    * ``scope("foo")`` extends the current path (``foo/``) and opens a name scope ``foo`` (``foo_1``
      when re-entered); a captured ``Scope`` jumps to its absolute path with its own defaults;
      ``scope(None, default_name="d")`` picks ``d``, ``d_1``, ... per enclosing scope entry.
    * ``reuse`` is ``None``/``False`` (inherit), ``True`` or ``sp.AUTO_REUSE``; once on, it stays on in
      every sub-scope.
    * ``initializer``, ``dtype``, ``regularizer``, ``trainable``, ``custom_getter`` and ``partitioner``
      are inherited by sub-scopes and overridden by explicit arguments, except ``trainable=False``
      (ours: TF's scope has no such flag), which freezes every parameter created inside, whatever its
      ``get_param(trainable=...)``; a sub-scope's ``trainable=True`` lifts it.
    * ``constraint`` (a projection ``value -> value`` for ``sp.apply_constraints`` to run after each
      optimizer step) applies to parameters created directly in this scope: as in TF, neither
      sub-scopes nor a later entry of the captured scope inherit it.
    * ``custom_getter`` is called as ``getter(next_getter, name, *args, **kwargs)`` (run on creation
      and on reuse, in ``init`` and ``apply``; nested getters run innermost first). ``kwargs`` hold
      the request resolved against the scope (``shape``, ``dtype``, ``initializer``,
      ``regularizer``, ``reuse``, ``trainable``, ...). An argument left out of a ``next_getter``
      call takes TF's true-getter default, not the request's: ``dtype`` float32, ``reuse`` None
      (fetch the name if it exists, else create it, as ``sp.AUTO_REUSE``), ``trainable`` True (False
      under a scope's ``trainable=False``), no initializer (Glorot for floats, zeros otherwise), no
      regularizer, collections, partitioner or constraint. So ``next_getter("scale", shape=[])``
      makes one float32 parameter shared by every request; forward ``**kwargs`` to keep the
      request's settings.

    Returns a context manager; ``with sp.scope(...) as s`` gives the new ``sp.Scope``. Each ``with``
    enters it anew, so one object may be entered again, even while it is open (it then nests), and
    an exit closes its latest entry. ``sp.scope("a")`` is one shared object per name: an outer
    ``sp.scope("a")`` closed by hand (``__exit__``) while an inner ``sp.scope("a")`` is open closes
    the inner one, where TF raises "Improper nesting" (``with`` blocks never close out of order).

    >>> def fn(x):
    ...     with sp.scope("layer"):
    ...         w = sp.get_param("w", (x.shape[-1], 4))
    ...     return x @ w
    """
    # The keyword arguments arrive as a dict: nine keyword-only parameters with defaults cost a
    # quarter of a plain scope's whole entry, as CPython looks each default up by name on every call.
    # The signature reported (inspect, help) is the documented one: _ScopeWithOptions.__init__'s.
    if not options and type(name_or_scope) is str and not tf_positional:
        cm = _PLAIN_SCOPES.get(name_or_scope)  # inline: it runs on every scope entry
        if cm is None:
            cm = _shared(_PLAIN_SCOPES, name_or_scope, _plain_scope, name_or_scope)
        return cm
    if not tf_positional and options.keys() <= _NAMING_KEYWORDS:  # what layers open
        cm = _naming_scope(name_or_scope, options.get("default_name"), options.get("reuse"))
        if cm is not None:
            return cm
    if type(name_or_scope) is str and not tf_positional and options.keys() <= _DEFAULTS_KEYWORDS:
        cm = _defaults_scope(name_or_scope, **options)
        if cm is not None:
            return cm
    unknown = options.keys() - _SCOPE_KEYWORDS
    if unknown or tf_positional:
        raise _tf_arguments_error(name_or_scope, tf_positional, options, unknown)
    return _ScopeWithOptions(name_or_scope, **options)


# tf.variable_scope's arguments that only steer TF's graph and runtime: what to tell a user passing them.
_TF_RUNTIME_SCOPE_ARGUMENTS = {
    "values": "the tensors passed to pick the graph the scope opens in; there is no graph here",
    "caching_device": "a TF runtime placement setting; placement is jax.sharding's job here "
                      "(partitioner=, get_param(sharding=))",
    "use_resource": "a choice between TF's two variable kinds; parameters here are plain arrays",
}


def _tf_arguments_error(name_or_scope: Any, positional: tuple, options: dict, unknown) -> TypeError:
    """The error for ``tf.variable_scope``'s arguments that ``sp.scope`` does not take: its positional
    form ``(name_or_scope, default_name, values)``, ``values=`` and TF's runtime settings."""
    if positional:
        default_name = positional[0]
        shown = repr(name_or_scope) if name_or_scope is None or isinstance(name_or_scope, str) else "scope"
        drop = " and drop values" if len(positional) > 1 or "values" in options else ""
        return TypeError(
            f"sp.scope takes one positional argument (name_or_scope), got {1 + len(positional)}: "
            "TF 1.x's variable_scope(name_or_scope, default_name, values) order.\n"
            f"  fix: sp.scope({shown}, default_name={default_name!r}){drop}: the other "
            "options are keyword-only, and values only picked TF's graph.")
    known = sorted(k for k in unknown if k in _TF_RUNTIME_SCOPE_ARGUMENTS)
    others = sorted(k for k in unknown if k not in _TF_RUNTIME_SCOPE_ARGUMENTS)
    if not known:
        return TypeError(f"scope() got an unexpected keyword argument {others[0]!r}")
    why = "; ".join(f"{k}= is {_TF_RUNTIME_SCOPE_ARGUMENTS[k]}" for k in known)
    also = f" (and unknown: {', '.join(k + '=' for k in others)})" if others else ""
    return TypeError(f"sp.scope does not take {', '.join(k + '=' for k in known)} of TF 1.x's "
                     f"variable_scope{also}: {why}.\n  fix: drop {'it' if len(known) == 1 else 'them'}.")


def _pop_entry(cm: _ScopeContext) -> tuple:
    """The entry ``cm`` pushed on the frame when it was entered; raise if another scope is on top."""
    frame = _current_frame()
    entries = frame.entries if frame is not None else []
    if entries and entries[-1][0] is cm:
        return entries.pop()
    closing = next((e[3] for e in reversed(entries) if e[0] is cm), None)  # its Scope, if open
    if closing is None:
        raise ScopeNestingError(
            f"Closing {cm._asked()}, which is not open.\n"
            "  fix: use the scope in a `with` block, which enters and exits it in order."
        )
    raise _nesting_error(closing, frame)


class _ScopeContext:
    """What ``sp.scope(...)`` returns: entering it opens the scope (``__enter__`` gives the ``Scope``)."""

    __slots__ = ("_name_or_scope",)
    _name_or_scope: Union[str, Scope, None]

    def __enter__(self) -> Scope:  # the subclasses' entries
        raise NotImplementedError

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        raise NotImplementedError

    def _asked(self) -> str:
        return f"sp.scope({self._name_or_scope!r})"

    def __repr__(self) -> str:
        return f"<{self._asked()}>"


class _PlainScope(_ScopeContext):
    """``sp.scope("name")``: extend the path and inherit everything. The general path
    (``_ScopeWithOptions`` and ``_enter_name_scope``) specialised and inline, as it runs on every scope
    entry of every trace. Two variants share it (layers open them on every call):
    ``_DefaultNameScope`` and ``_ReusingScope``."""

    # Slots, not class attributes, for the variants' flags: CPython 3.11 reads a slot fast and a
    # class attribute through an instance slowly, and this runs on every scope entry.
    __slots__ = ("_root_ok", "_default", "_reusing", "_defaults")
    _name_or_scope: str

    def __init__(self, name: str, default: bool = False, reusing: Any = None,
                 defaults: Optional[tuple] = None):
        self._name_or_scope = name
        self._root_ok: Optional[bool] = None  # whether the name is valid at the root; None until checked
        self._default = default  # the name is a default_name: the variable scope takes name, name_1, ...
        self._reusing = reusing  # None, or the reuse this scope turns on (True or AUTO_REUSE)
        # None, or what it sets: (initializer, regularizer, dtype, trainable, partitioner, constraint),
        # None = inherit (the constraint: none)
        self._defaults = defaults

    def __enter__(self) -> Scope:
        frame = _current_frame()
        if frame is None:
            raise not_in_transform("scope")
        name = self._name_or_scope
        # 1. The name scope.
        old_ns = frame.name_stack
        root_ok = self._root_ok
        if root_ok is None:
            root_ok = self._root_ok = _check_scope_name(name, self._asked)
        if not root_ok and not old_ns:
            _check_name(name, False, self._asked)
        new_ns = f"{old_ns}/{name}" if old_ns else name
        used = frame.names_in_use
        key = new_ns.lower()
        if key in used:
            new_ns = _unique_name(frame, name)
        else:
            used[key] = 1
        frame.name_stack = new_ns
        jax_old = frame.jax_stack
        name_ops = frame.name_ops
        if new_ns != jax_old and (name_ops or name_ops is None and _TRACE.value is not _EAGER):
            jax_scope = _push_path(new_ns, jax_old) if jax_old else _push_name(new_ns)
            frame.jax_stack = new_ns
        else:
            jax_scope = None
        # 2. The variable scope: a child of the current one (_sub_scope, inline).
        old_scope = frame.scope
        old_node = frame.node
        if self._default:
            name = _unique_scope_name(frame, old_node, name)
        new = _new_scope(Scope)
        new.prefix = f"{old_scope.prefix}{name}/"
        reusing = self._reusing
        if reusing is None:
            new._reuse = old_scope._reuse
            new.reuse_origin = old_scope.reuse_origin
        elif reusing is True:
            # Where reuse was turned on, for "does not exist" errors: the user's line, as
            # (code, bytecode offset) while it is not shown (see format_site).
            f = _getframe(1)
            code = f.f_code
            new._reuse = True
            new.reuse_origin = (new.prefix[:-1], (code, f.f_lasti) if _IS_USER_FILE.get(
                code.co_filename) else user_code_site(2), "reuse=True")
        else:  # AUTO_REUSE creates what is missing: no "does not exist" error names its origin
            new._reuse = reusing
            new.reuse_origin = None
        new.original_name_scope = new_ns + "/"
        new.initializer = old_scope.initializer
        new.regularizer = old_scope.regularizer
        new.dtype = old_scope.dtype
        new.custom_getter = old_scope.custom_getter
        new.partitioner = old_scope.partitioner
        new.trainable = old_scope.trainable
        new.constraint = None  # never inherited (see Scope)
        if self._defaults is not None:
            _set_defaults(new, self._defaults)
        values = old_scope._values
        new._values = None if values is None else _sub_values(values, name)
        # 3. Its entry count.
        children = old_node[_CHILDREN]
        if children is None:
            children = old_node[_CHILDREN] = {}
        node = children.get(name)
        if node is None:
            if "/" in name:  # a path: one node per component
                node = _child(old_node, name)
            else:
                node = children[name] = [0, None, None]
        if frame.undo:
            frame.undo[-1].append((node, node[_COUNT], _COUNT_ONLY, None))
        node[_COUNT] += 1
        frame.scope = new
        frame.node = node
        frame.entries.append((self, old_scope, old_node, new, node, old_ns, jax_old, jax_scope))
        return new

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        frame = _current_frame()
        try:
            entries = frame.entries
            top = entries[-1][0]
        except (AttributeError, IndexError):  # no frame, or nothing open
            top = None
        if top is not self:  # raised outside the except: the user sees no internal error chained
            _pop_entry(self)  # raises, saying which
        _, old_scope, old_node, new, node, old_ns, jax_old, jax_scope = entries.pop()
        if exc_type is None and frame.scope is not new:
            raise _nesting_error(new, frame)
        if frame.undo:
            _close_subscopes(frame, node)
        elif node[_CHILDREN] is not None:  # TF resets the sub-scope counters on exit
            node[_CHILDREN] = node[_HINTS] = None
        frame.scope = old_scope
        frame.node = old_node
        if jax_scope is not None:
            _pop_name(jax_scope)
        frame.name_stack = old_ns
        frame.jax_stack = jax_old


class _DefaultNameScope(_PlainScope):
    """``sp.scope(None, default_name="name")``: the name scope ``name`` (uniquified like any), the
    variable scope ``name``, ``name_1``, ... by entries under the current scope."""

    __slots__ = ()

    def __init__(self, default_name: str):
        super().__init__(default_name, default=True)

    def _asked(self) -> str:
        return f"sp.scope(None, default_name={self._name_or_scope!r})"


class _ReusingScope(_PlainScope):
    """``sp.scope("name", reuse=True)`` (or ``sp.AUTO_REUSE``)."""

    __slots__ = ()

    def __init__(self, name: str, reuse: Any):
        super().__init__(name, reusing=reuse)

    def _asked(self) -> str:
        return f"sp.scope({self._name_or_scope!r}, reuse={_describe_reuse(self._reusing)})"


def _set_defaults(new: Scope, defaults: tuple) -> None:
    """Set what ``sp.scope(name, initializer=..., ...)`` sets on the scope it opens."""
    initializer, regularizer, dtype, trainable, partitioner, constraint = defaults
    new.constraint = constraint
    if initializer is not None:
        new.initializer = initializer
    if regularizer is not None:
        new.regularizer = regularizer
    if dtype is not None:
        new.dtype = dtype
    if trainable is not None:
        new.trainable = trainable
    if partitioner is not None:
        new.partitioner = partitioner


class _ScopeWithOptions(_ScopeContext):
    """``sp.scope(...)`` with a captured ``Scope``, a ``default_name`` or any option: validated when
    made, entered through the general path."""

    __slots__ = ("_opts",)

    def __init__(self, name_or_scope: Union[str, Scope, None] = None, *, default_name: Optional[str] = None,
                 reuse: Any = None, initializer: Any = None, dtype: Any = None,
                 regularizer: Optional[Callable] = None, trainable: Optional[bool] = None,
                 custom_getter: Optional[Callable] = None, partitioner: Any = None,
                 auxiliary_name_scope: bool = True, constraint: Optional[Callable] = None):
        self._name_or_scope = name_or_scope
        self._opts = _Options(name_or_scope, default_name, reuse, initializer, dtype, regularizer,
                              trainable, custom_getter, partitioner, auxiliary_name_scope,
                              constraint)

    def __enter__(self) -> Scope:
        frame = _current_frame()
        if frame is None:
            raise not_in_transform("scope")
        opts = self._opts
        old_scope, old_node = frame.scope, frame.node
        name_or_scope = self._name_or_scope
        if name_or_scope == "" and old_scope.prefix:
            raise _empty_scope_error(old_scope.name)

        # 1. The name scope (TF's variable_scope._enter_scope_uncached).
        if name_or_scope is None:
            if opts.reuse:
                raise ReuseArgumentError(
                    "reuse=True cannot be used without a name_or_scope "
                    f"(asked: sp.scope(None, default_name={opts.default_name!r}, "
                    f"reuse={_describe_reuse(opts.reuse)})).\n"
                    "  fix: give the scope an explicit name to reuse, e.g. "
                    f"sp.scope({opts.default_name!r}, reuse=True)."
                )
            ns_name = opts.default_name
        elif isinstance(name_or_scope, str):
            ns_name = name_or_scope
        else:
            ns_name = name_or_scope.name.split("/")[-1]
        ns = None
        if opts.aux:
            if ns_name:
                ns = _enter_name_scope(frame, ns_name, self._asked)
                ns_string = ns[1] + "/" if ns[1] else ""
            else:
                ns_string = None  # re-entering the root scope opens no name scope
        else:
            ns_string = frame.name_stack + "/" if frame.name_stack else ""

        # 2. The variable scope (TF's _pure_variable_scope.__enter__).
        jump = isinstance(name_or_scope, Scope)
        if isinstance(name_or_scope, Scope):
            captured = name_or_scope
            reuse = opts.reuse if opts.reuse else captured.reuse
            origin = (captured.name, user_site(), "reuse=True") if opts.reuse else captured.reuse_origin
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
            begin_jump(frame)
        else:
            local = name_or_scope if name_or_scope is not None else _unique_scope_name(
                frame, old_node, opts.default_name)
            full = old_scope.prefix + local
            if opts.reuse:
                reuse, origin = opts.reuse, (full, user_site(), f"reuse={_describe_reuse(opts.reuse)}")
            else:
                reuse, origin = old_scope.reuse, old_scope.reuse_origin
            new = _sub_scope(old_scope, full, reuse, origin,
                             ns_string if ns_string is not None else local)
            getter_base = old_scope.custom_getter
            if local:
                node = _child(old_node, local)
                _open(frame, node)
            else:  # sp.scope("") at the root: the root scope again, as TF's variable_scope("")
                new.prefix = ""
                new._values = old_scope._values
                # Default names inside continue the root's numbering, and leaving it closes
                # nothing (TF's close_variable_subscopes("") matches no name): no node of its own.
                node = None
        if opts.initializer is not None:
            new.initializer = opts.initializer
        if opts.regularizer is not None:
            new.regularizer = opts.regularizer
        if opts.partitioner is not None:
            new.partitioner = opts.partitioner
        if opts.custom_getter is not None:
            new.custom_getter = _wrap_custom_getter(opts.custom_getter, getter_base)
        if opts.dtype is not None:
            new.dtype = opts.dtype
        if opts.trainable is not None:
            new.trainable = opts.trainable
        new.constraint = opts.constraint  # this argument only: TF's quirk (see Scope)
        if new.custom_getter is not None:
            new._values = None  # get_param's direct lookup does not apply (see Scope)

        frame.scope, frame.node = new, old_node if node is None else node
        frame.entries.append((self, old_scope, old_node, new, node, ns, jump))
        return new

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        _, old_scope, old_node, new, node, ns, jump = _pop_entry(self)
        frame = _current_frame()
        if exc_type is None and frame.scope is not new:
            raise _nesting_error(new, frame)
        if jump:
            end_jump(frame)
        elif node is None:  # the root scope re-entered (sp.scope("")): nothing of its own to close
            pass
        elif frame.undo:
            _close_subscopes(frame, node)
        else:  # TF resets the sub-scope counters on exit
            node[_CHILDREN] = node[_HINTS] = None
        frame.scope, frame.node = old_scope, old_node
        if ns is not None:
            _exit_name_scope(frame, ns)


def default_name_hint(frame, full: str) -> str:
    """For an "already exists" error on ``full``: a note when an open scope on its path was named by
    ``default_name`` (``sp.scope(None, default_name=...)``, the layers' ``dense``, ``conv2d``, ...).
    Such names are numbered per entry of the enclosing scope, so entering that scope again starts
    over and names a second scope like the first (TF's rule), which surprises."""
    for entry in reversed(frame.entries):
        cm, new = entry[0], entry[3]
        if isinstance(cm, _DefaultNameScope):
            default = cm._name_or_scope
        elif isinstance(cm, _ScopeWithOptions) and cm._name_or_scope is None:
            default = cm._opts.default_name
        else:
            continue
        if not full.startswith(new.prefix):
            continue
        path = new.prefix[:-1]
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if not parent:  # at the root, numbering runs for the whole call: a re-entry cannot reset it
            return ""
        return (f"\n  note: '{path}' was named by default_name={default!r}, and default names are "
                f"numbered per entry of '{parent}': if the first '{full}' was made in an earlier "
                f"entry of '{parent}', this entry numbered its '{default}' afresh and got the same name "
                f"(TF's rule). Give it an explicit name, or create both under one entry of '{parent}'.")
    return ""


def _documented_signature() -> inspect.Signature:
    sig = inspect.signature(_ScopeWithOptions.__init__)
    return sig.replace(parameters=list(sig.parameters.values())[1:],
                       return_annotation=scope.__annotations__["return"])


scope.__signature__ = _documented_signature()  # type: ignore[attr-defined]


def _nesting_error(closing: Scope, frame) -> ScopeNestingError:
    return ScopeNestingError(
        f"Improper nesting of scope: closing '{closing.name}' while '{frame.scope.name}' is open.\n"
        "  fix: close scopes in the reverse order they were opened (use `with` blocks)."
    )


def _empty_scope_error(parent: str) -> InvalidNameError:
    return InvalidNameError(
        f"sp.scope('') inside scope '{parent}' would name its parameters '{parent}//<name>', as TF "
        "1.x's variable_scope('') does there: a name with an empty component, which the params "
        "tree (its components are the keys) does not hold.\n"
        f"  asked: sp.scope('') in scope '{parent}'\n"
        f"  fix: drop the sp.scope('') (its parameters are then '{parent}/<name>'; give its options "
        "to the enclosing sp.scope or to get_param), or give it a name. At the root, sp.scope('') "
        "is TF's: the root scope again.")


def _check_components(name: str, what: Union[str, Callable[[], str]]) -> None:
    if not name:
        raise InvalidNameError(
            "'' is not a valid scope name here: an empty name names no scope.\n"
            f"  asked: {what() if callable(what) else what}\n"
            "  fix: give it a name (sp.scope('') alone, at the root, re-enters the root scope as "
            "TF's variable_scope('') does).")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise InvalidNameError(
            f"'{name}' is not a valid scope name: every '/'-separated component must be non-empty.\n"
            f"  asked: {what() if callable(what) else what}\n"
            "  fix: drop the leading, trailing or doubled '/'."
        )


# Last, because _params imports this module (reentered reads its ApplyStore).
from . import _params  # noqa: E402
