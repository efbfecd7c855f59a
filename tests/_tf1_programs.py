"""Random variable-scoping programs, and an interpreter running them under TF 1.x or scoped_params.

A program is plain data (the node types below). ``programs()`` generates them with hypothesis;
``run_tf`` executes one with ``tensorflow.compat.v1`` in a fresh graph, ``run_sp`` inside
``sp.transform(fn).init`` (or ``.apply``). Both return a ``Run``: the trace of observations (scope
name, reuse mode and name scope after every scope entry, exit and ``reuse_variables()``; the full
name every ``get`` resolved to; each error's category and step), the created names in order, and
the outcome (``"ok"`` or the category of the first error). ``render`` prints a program as the
scoped_params code it stands for; that is what a failing test shows.

Names are chosen so that every generated program means the same thing to both libraries: the
last component of a parameter name (``v``, ``w``; ``b/v`` has a "/" in it) is never a scope or
name-scope name, so no full name is both a parameter and a scope (a params tree cannot hold a leaf
and a sub-tree under one key) and no name scope collides with a variable's op name (TF's graph
would uniquify it); every name is a valid TF op name with non-empty components.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Tuple, Union

from hypothesis import strategies as st

# --- the program language ----------------------------------------------------------------------

AUTO = "AUTO"  # stands for tf.compat.v1.AUTO_REUSE / sp.AUTO_REUSE


@dataclasses.dataclass(frozen=True)
class Const:
    """A constant initializer value: ``np.full(shape, value, dtype)``, or the Python number
    ``value`` (dtype "int" or "float") when shape is None. It fixes shape and dtype of the param."""
    shape: Optional[Tuple[int, ...]]
    dtype: str
    value: int

    def make(self):
        import numpy as np

        if self.shape is None:
            return int(self.value) if self.dtype == "int" else float(self.value)
        return np.full(self.shape, self.value, np.dtype(self.dtype))

    def __str__(self) -> str:
        if self.shape is None:
            return repr(self.make())
        return f"np.full({self.shape!r}, {self.value}, np.{self.dtype})"


@dataclasses.dataclass(frozen=True)
class Get:
    """``get_param(name, shape, dtype=dtype, init=...)``: shape None is "no shape given"; init an
    int k is ``constant(k)`` (an initializer), a ``Const`` is the value itself; ``constraint``
    passes ``constraint=clip``; ``getter`` passes a recording custom getter, which replaces the
    scopes' getters for this request (TF rule 42)."""
    name: str
    shape: Optional[Tuple[int, ...]]
    dtype: Optional[str] = None
    init: Any = None
    constraint: bool = False
    getter: bool = False


@dataclasses.dataclass(frozen=True)
class ReuseVariables:
    """``get_scope().reuse_variables()``, or ``s<slot>.reuse_variables()`` on a captured scope
    (which then brings reuse=True to its later re-entries; nothing happens while the slot is
    empty)."""
    slot: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class SetDefaults:
    """``get_scope().set_initializer(constant(init))`` / ``.set_dtype(dtype)`` (on ``s<slot>`` when
    given: a captured scope's defaults travel with it)."""
    slot: Optional[int] = None
    init: Optional[int] = None
    dtype: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ByName:
    name: str  # scope("a") or scope("a/b")


@dataclasses.dataclass(frozen=True)
class ByDefault:
    default_name: str  # scope(None, default_name="d")


@dataclasses.dataclass(frozen=True)
class ByCaptured:
    """scope(s<slot>): re-enter a captured scope; slot -1 is the root scope, captured at the start.

    A slot that is still empty when reached (its capture comes later, or never ran) enters the
    string scope "c" instead.
    """
    slot: int


Target = Union[ByName, ByDefault, ByCaptured]


@dataclasses.dataclass(frozen=True)
class Scope:
    """``with scope(target, reuse=, dtype=, initializer=constant(init), auxiliary_name_scope=aux)``.

    ``capture`` stores ``s`` in that slot for a later ``ByCaptured`` re-entry. ``getter`` adds a
    pass-through custom getter that records ``("getter", <step of this scope>, name)`` when called,
    which shows which getters run for each get, in which order (innermost first), with which name.
    ``constraint`` passes ``constraint=clip`` (TF gives it to parameters created directly inside).
    """
    target: Target
    body: Tuple[Any, ...]
    reuse: Any = None  # None, False, True or AUTO
    dtype: Optional[str] = None
    aux: bool = True
    capture: Optional[int] = None
    getter: bool = False
    init: Optional[int] = None
    constraint: bool = False


@dataclasses.dataclass(frozen=True)
class NameScope:
    """``with name_scope(name): body``; ``"@k"`` stands for ``s<k>.original_name_scope`` ("ns" while
    slot k is empty)."""
    name: Optional[str]
    body: Tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class Loop:
    """``for _ in range(times): body``: how models call a layer or a tower twice."""
    times: int
    body: Tuple[Any, ...]


Program = Tuple[Any, ...]

# Outcome categories (tf_category and sp_category map each library's errors onto them).
OK = "ok"
EXISTS = "already exists"
NOT_FOUND = "does not exist"
SHAPE = "shape mismatch"
DTYPE = "dtype mismatch"
UNDEFINED_SHAPE = "shape not fully defined"
REUSE_WITHOUT_NAME = "reuse without a name"
CONSTANT_WITH_SHAPE = "constant and shape"
CONSTANT_DTYPE = "constant's dtype is not dtype"
INVALID_NAME = "invalid name"
CATEGORIES = (OK, EXISTS, NOT_FOUND, SHAPE, DTYPE, UNDEFINED_SHAPE, REUSE_WITHOUT_NAME,
              CONSTANT_WITH_SHAPE, CONSTANT_DTYPE, INVALID_NAME)


def render(program: Program) -> str:
    """The program as scoped_params code (slot k is the Python variable ``s<k>``)."""
    lines: List[str] = ["root = sp.get_scope()"]

    def reuse_src(r):
        return "sp.AUTO_REUSE" if r == AUTO else repr(r)

    def emit(stmts, indent):
        pad = "    " * indent
        if not stmts:
            lines.append(pad + "pass")
        for s in stmts:
            if isinstance(s, Get):
                extra = f", dtype=jnp.{s.dtype}" if s.dtype else ""
                if isinstance(s.init, Const):
                    extra += f", init={s.init}"
                elif s.init is not None:
                    extra += f", init=sp.initializers.constant({s.init})"
                if s.constraint:
                    extra += ", constraint=clip"
                if s.getter:
                    extra += ", custom_getter=recording_getter"
                shape = "None" if s.shape is None else repr(list(s.shape))  # [None, 3]: partial
                lines.append(f"{pad}sp.get_param({s.name!r}, {shape}{extra})")
            elif isinstance(s, ReuseVariables):
                target = "sp.get_scope()" if s.slot is None else f"s{s.slot}"
                lines.append(f"{pad}{target}.reuse_variables()")
            elif isinstance(s, SetDefaults):
                target = "sp.get_scope()" if s.slot is None else f"s{s.slot}"
                if s.init is not None:
                    init = f"sp.initializers.constant({s.init})"
                    lines.append(f"{pad}{target}.set_initializer({init})")
                if s.dtype is not None:
                    lines.append(f"{pad}{target}.set_dtype(jnp.{s.dtype})")
            elif isinstance(s, Loop):
                lines.append(f"{pad}for _ in range({s.times}):")
                emit(s.body, indent + 1)
            elif isinstance(s, NameScope):
                name = repr(s.name)
                if s.name is not None and s.name.startswith("@"):
                    name = f"s{s.name[1:]}.original_name_scope"
                lines.append(f"{pad}with sp.name_scope({name}):")
                emit(s.body, indent + 1)
            else:
                t = s.target
                if isinstance(t, ByName):
                    args = [repr(t.name)]
                elif isinstance(t, ByDefault):
                    args = ["None", f"default_name={t.default_name!r}"]
                else:
                    args = ["root" if t.slot < 0 else f"s{t.slot}"]
                if s.reuse is not None:
                    args.append(f"reuse={reuse_src(s.reuse)}")
                if s.dtype:
                    args.append(f"dtype=jnp.{s.dtype}")
                if not s.aux:
                    args.append("auxiliary_name_scope=False")
                if s.getter:
                    args.append("custom_getter=recording_getter")
                if s.init is not None:
                    args.append(f"initializer=sp.initializers.constant({s.init})")
                if s.constraint:
                    args.append("constraint=clip")
                as_ = f" as s{s.capture}" if s.capture is not None else ""
                lines.append(f"{pad}with sp.scope({', '.join(args)}){as_}:")
                emit(s.body, indent + 1)

    emit(program, 0)
    return "\n".join(lines)


# --- hypothesis strategies ---------------------------------------------------------------------

# "A" next to "a": name scopes are uniquified case-insensitively, parameter names are not.
# "a/b" is one scope entry for a two-component path; "b/v" a parameter name with a "/" in it.
# "_a" and "-b" are valid names below the root only (TF checks them through name_scope at entry,
# and a parameter's full name as an op name at creation); "_u" likewise as a parameter name.
SCOPE_NAMES = ("a", "a", "a", "b", "b", "b", "A", "a/b", "_a", "-b")
DEFAULT_NAMES = ("a", "d", "d")
# None and "" return to the root name scope; "ns/" re-enters "ns" exactly; "@k" is slot k's
# original_name_scope (TF's idiom for re-entering a scope's name scope without a "_1").
NAME_SCOPE_NAMES = ("a", "ns", "ns", "A", None, "", "ns/", "@0", "@1", "_a")
PARAM_NAMES = ("v", "v", "v", "v", "w", "w", "w", "b/v", "_u")
SHAPES = ((),) * 3 + ((1,),) * 3 + ((2,),) * 2 + ((2, 3),) * 3 + ((None, 3), None)
DTYPES = (None, None, None, "float32", "int32", "int32")
SCOPE_DTYPES = (None,) * 10 + ("int32", "int32", "float32")
REUSES = (None,) * 6 + (False, True, AUTO, AUTO)
# With default_name, reuse=True/AUTO_REUSE is an error in both libraries: keep it rarer.
DEFAULT_REUSES = (None,) * 10 + (False, True, AUTO)
# Constant initializers make the values comparable: they show which initializer each parameter
# got (its own, its scope's, inherited, or a captured scope's). None: inherit / TF's default.
GET_INITS = (None,) * 9 + (7,)
# Constant values fix shape and dtype themselves, so they mostly come without shape and dtype.
CONSTS = (Const((2,), "int32", 5), Const((2, 3), "float32", 6), Const((), "float32", 6),
          Const(None, "int", 8), Const(None, "float", 8))
CONST_SHAPES = (None, None, None, None, (2,))
CONST_DTYPES = (None, None, None, "float32", "int32")
SCOPE_INITS = (None,) * 5 + (1, 2, 3)
# constraint=clip on a get_param or a scope: which parameters end up with one is compared.
GET_CONSTRAINTS = (False,) * 7 + (True,)
# custom_getter= on a get_param: it replaces the scopes' getters for that request (TF rule 42).
GET_GETTERS = (False,) * 9 + (True,)
SCOPE_CONSTRAINTS = (False,) * 4 + (True,)
SLOTS = 2


def _get():
    names = st.sampled_from(PARAM_NAMES)
    plain = st.builds(Get, names, st.sampled_from(SHAPES), st.sampled_from(DTYPES),
                      st.sampled_from(GET_INITS), st.sampled_from(GET_CONSTRAINTS),
                      st.sampled_from(GET_GETTERS))
    const = st.builds(Get, names, st.sampled_from(CONST_SHAPES), st.sampled_from(CONST_DTYPES),
                      st.sampled_from(CONSTS))
    return st.one_of(*[plain] * 6, const)


def _target_and_reuse():
    named = st.tuples(st.builds(ByName, st.sampled_from(SCOPE_NAMES)), st.sampled_from(REUSES))
    default = st.tuples(st.builds(ByDefault, st.sampled_from(DEFAULT_NAMES)),
                        st.sampled_from(DEFAULT_REUSES))
    captured = st.tuples(st.builds(ByCaptured, st.integers(-1, SLOTS - 1)), st.sampled_from(REUSES))
    return st.one_of(named, named, default, default, captured, captured)


def _stmts(depth: int):
    get = _get()
    slot = st.sampled_from((None, None) + tuple(range(SLOTS)))
    defaults = st.builds(SetDefaults, slot, st.sampled_from((None, 4, 5)),
                         st.sampled_from((None, None, "int32", "float32")))
    reuse_variables = st.builds(ReuseVariables, slot)
    if depth == 0:
        return st.one_of(*[get] * 9, reuse_variables, defaults)
    inner = st.lists(_stmts(depth - 1), max_size=4).map(tuple)
    scope = st.builds(
        lambda tr, body, dtype, aux, capture, getter, init, constraint: Scope(
            tr[0], body, tr[1], dtype, aux, capture, getter, init, constraint),
        _target_and_reuse(), inner, st.sampled_from(SCOPE_DTYPES),
        st.sampled_from((True,) * 7 + (False,)),
        st.sampled_from((None, None) + tuple(range(SLOTS))),
        st.sampled_from((False,) * 7 + (True,)),
        st.sampled_from(SCOPE_INITS), st.sampled_from(SCOPE_CONSTRAINTS))
    name_scope = st.builds(NameScope, st.sampled_from(NAME_SCOPE_NAMES), inner)
    loop = st.builds(Loop, st.sampled_from((2, 3)), inner)
    return st.one_of(*[get] * 5, *[scope] * 5, name_scope, loop, reuse_variables, defaults)


def _one_reuse_variables(program: Program) -> Program:
    """Keep only the first ``get_scope().reuse_variables()``: hypothesis copies short nodes around
    freely, and with several of them nearly every program would stop at its first creation."""
    seen = [False]

    def keep(stmts):
        out = []
        for s in stmts:
            if isinstance(s, ReuseVariables) and s.slot is None:
                if seen[0]:
                    continue
                seen[0] = True
            elif isinstance(s, (Scope, NameScope, Loop)):
                s = dataclasses.replace(s, body=keep(s.body))
            out.append(s)
        return tuple(out)

    return keep(program)


def programs(depth: int = 3):
    """Random scoping programs: up to 7 top-level statements, scopes nested up to ``depth``."""
    # deferred: keeps the strategy's repr short (the nested one spells out every level).
    return st.deferred(lambda: st.lists(_stmts(depth), min_size=1, max_size=7)
                       .map(tuple).map(_one_reuse_variables))


# --- the interpreter ---------------------------------------------------------------------------


def clip(value):
    """The constraint the programs pass (never run: only which parameters carry it is compared)."""
    return value


@dataclasses.dataclass
class Run:
    """What one execution of a program showed."""
    trace: List[tuple]  # observations, in order; ("error", category, step) for a failed statement
    created: List[str]  # full names in creation order
    outcome: str  # OK, or the category of the first error
    fail_step: Optional[int] = None  # step of the first error
    fail_kind: str = ""  # what failed first: "get", "scope" or "name_scope"
    message: str = ""  # text of the first error
    problems: List[str] = dataclasses.field(default_factory=list)  # self-check failures
    values: dict = dataclasses.field(default_factory=dict)  # full name -> value_label(...)

    def until_first_error(self) -> List[tuple]:
        """The trace up to and including the first error: what a run that stops there records."""
        for i, event in enumerate(self.trace):
            if event[0] == "error":
                return self.trace[:i + 1]
        return self.trace


class _Stop(Exception):
    """Raised before step ``stop_at`` to run only the prefix of a program."""


class _Interpreter:
    """Walks a program and calls a backend; records what it observes.

    Every executed statement is one step. With ``keep_going`` a statement that raises
    ``ValueError`` is recorded as an ``("error", category, step)`` event and skipped (a failed
    scope entry skips its body), and the program goes on: both libraries fail before changing any
    state, so the rest of the program still has to agree. Otherwise the first error ends the run.
    """

    def __init__(self, backend, *, stop_at: Optional[int] = None, keep_going: bool = False,
                 propagate: bool = False):
        self.b = backend
        self.stop_at = stop_at
        self.keep_going = keep_going
        self.propagate = propagate  # let the first error leave run() (and init/apply) as is
        self.step = 0
        self.trace: List[tuple] = []
        self.slots: dict = {}
        self.first_error: Optional[Tuple[int, BaseException, str]] = None

    def _tick(self) -> int:
        if self.step == self.stop_at:
            raise _Stop
        self.step += 1
        return self.step - 1

    def _observe_scope(self, tag: str) -> None:
        s = self.b.current_scope()
        self.trace.append((tag, s.name, self.b.reuse_str(s.reuse), self.b.current_name_scope()))

    def _failed(self, step: int, exc: ValueError, full: Optional[str], kind: str) -> None:
        category = self.b.category(exc, full)
        self.trace.append(("error", category, step))
        if self.first_error is None:
            self.first_error = (step, exc, category, kind)
        if not self.keep_going:
            if self.propagate:
                raise exc
            raise _Stop

    def run(self, program: Program) -> None:
        self.slots = {-1: self.b.current_scope()}
        try:
            self._block(program)
        except _Stop:
            pass

    def _block(self, stmts) -> None:
        for s in stmts:
            step = self._tick()
            if isinstance(s, Get):
                scope_name = self.b.current_scope().name
                full = f"{scope_name}/{s.name}" if scope_name else s.name
                try:
                    self.b.get(full, s.name, s.shape, s.dtype, s.init, s.constraint,
                               self._recording_getter(step) if s.getter else None)
                except ValueError as e:
                    self._failed(step, e, full, "get")
                    continue
                self.trace.append(("get", full, self.b.current_name_scope()))
            elif isinstance(s, ReuseVariables):
                target = self.b.current_scope() if s.slot is None else self.slots.get(s.slot)
                if target is not None:
                    target.reuse_variables()
                    self._observe_scope("reuse_variables")
            elif isinstance(s, SetDefaults):
                target = self.b.current_scope() if s.slot is None else self.slots.get(s.slot)
                if target is not None:
                    self.b.set_defaults(target, s.init, s.dtype)
            elif isinstance(s, Loop):
                for _ in range(s.times):
                    self._block(s.body)
            elif isinstance(s, NameScope):
                name = s.name
                if name is not None and name.startswith("@"):
                    slot = self.slots.get(int(name[1:]))
                    name = "ns" if slot is None else slot.original_name_scope
                self._enter(step, "name_scope", self.b.name_scope(name), self._in_name_scope,
                            s)
            else:
                self._scope(step, s)

    def _recording_getter(self, step: int):
        def getter(getter, name, *args, **kwargs):  # TF passes everything by keyword
            self.trace.append(("getter", step, name))
            return getter(name, *args, **kwargs)

        return getter

    def _scope(self, step: int, s: Scope) -> None:
        t = s.target
        if isinstance(t, ByName):
            name_or_scope, default = t.name, None
        elif isinstance(t, ByDefault):
            name_or_scope, default = None, t.default_name
        else:
            # A slot not filled yet (its capture comes later or never ran): enter the name "c".
            name_or_scope, default = self.slots.get(t.slot, "c"), None
        getter = self._recording_getter(step) if s.getter else None
        manager = self.b.scope(name_or_scope, default, s.reuse, s.dtype, s.aux, getter, s.init,
                               s.constraint)
        if self._enter(step, "scope", manager, self._in_scope, s):
            self._observe_scope("exit")

    def _in_scope(self, vs, s: Scope) -> None:
        if s.capture is not None:
            self.slots[s.capture] = vs
        self.trace.append(("enter", vs.name, vs.original_name_scope))
        self._observe_scope("in")
        self._block(s.body)

    def _in_name_scope(self, ns: str, s: NameScope) -> None:
        self.trace.append(("name_scope", ns, self.b.current_name_scope()))
        self._block(s.body)

    def _enter(self, step: int, kind: str, manager, inside, s) -> bool:
        """``with manager as x: inside(x, s)``, where a failing entry is a failed step."""
        try:
            entered = manager.__enter__()
        except ValueError as e:
            self._failed(step, e, None, kind)
            return False
        try:
            inside(entered, s)
        except BaseException as e:
            if not manager.__exit__(type(e), e, e.__traceback__):
                raise
        else:
            manager.__exit__(None, None, None)
        return True


def value_label(value, dtype: str) -> tuple:
    """``(dtype, c)`` for a value filled with the integer c (what the constant initializers and the
    integer default make), else ``(dtype, "random")`` (TF's value is not static then)."""
    import numpy as np

    if value is not None:
        array = np.asarray(value)
        first = array.flat[0] if array.size else None
        if first is not None and np.all(array == first) and float(first).is_integer():
            return dtype, int(first)
    return dtype, "random"


def _result(interp: _Interpreter, created: List[str], problems=()) -> Run:
    run = Run(interp.trace, created, OK, problems=list(problems))
    if interp.first_error is not None:
        run.fail_step, exc, run.outcome, run.fail_kind = interp.first_error
        run.message = str(exc)
    return run


# --- TensorFlow 1.x ----------------------------------------------------------------------------


def _tf():
    import tensorflow as tf  # imported lazily: collecting tests must not pay for TF

    return tf


class _TFBackend:
    def __init__(self, graph):
        tf = _tf()
        from tensorflow.python.ops import variable_scope as tf_vs

        self.tf, self.v1, self.graph = tf, tf.compat.v1, graph
        self.store = tf_vs._get_default_variable_store()

    def current_scope(self):
        return self.v1.get_variable_scope()

    def current_name_scope(self) -> str:
        ns = self.graph.get_name_scope()
        return ns + "/" if ns else ""

    def reuse_str(self, reuse) -> str:
        return AUTO if reuse is self.v1.AUTO_REUSE else str(bool(reuse))

    def _dtype(self, name):
        return None if name is None else getattr(self.tf, name)

    def _init(self, value):
        if isinstance(value, Const):
            return value.make()
        return None if value is None else self.v1.constant_initializer(value)

    def get(self, full, name, shape, dtype, init, constraint, getter) -> None:
        var = self.v1.get_variable(name, shape=None if shape is None else list(shape),
                                   dtype=self._dtype(dtype), initializer=self._init(init),
                                   constraint=clip if constraint else None, custom_getter=getter)
        assert self.store._vars[full] is var, (full, var)

    def scope(self, name_or_scope, default, reuse, dtype, aux, getter, init, constraint):
        reuse = self.v1.AUTO_REUSE if reuse == AUTO else reuse
        return self.v1.variable_scope(name_or_scope, default_name=default, reuse=reuse,
                                      dtype=self._dtype(dtype), auxiliary_name_scope=aux,
                                      custom_getter=getter, initializer=self._init(init),
                                      constraint=clip if constraint else None)

    def name_scope(self, name):
        return self.v1.name_scope(name)

    def set_defaults(self, scope, init, dtype) -> None:
        if init is not None:
            scope.set_initializer(self._init(init))
        if dtype is not None:
            scope.set_dtype(self._dtype(dtype))

    def category(self, exc, full) -> str:
        return tf_category(exc)

    def created(self) -> List[str]:
        # Store keys (TF's op names may differ: "A/v" can be op "A/v_1" after "a/v"), in the
        # order of global_variables(), which is creation order.
        key_of = {id(v): k for k, v in self.store._vars.items()}
        return [key_of[id(v)] for v in self.v1.global_variables()]


def tf_category(exc: BaseException) -> str:
    """TF's error -> category, by the phrases of its messages."""
    msg = str(exc)
    if "already exists" in msg:
        return EXISTS
    if "does not exist" in msg:
        return NOT_FOUND
    if "Trying to share variable" in msg and "but specified shape" in msg:
        return SHAPE
    if "Trying to share variable" in msg and "but specified dtype" in msg:
        return DTYPE
    if any(p in msg for p in ("must be fully defined", "should be fully defined",
                              "its `shape` argument must be specified")):
        return UNDEFINED_SHAPE  # TF 1.15's wording, then TF 2.x's for a partial / missing shape
    if "cannot be used without a name_or_scope" in msg:
        return REUSE_WITHOUT_NAME
    if "If initializer is a constant, do not specify shape" in msg:
        return CONSTANT_WITH_SHAPE
    if "Initializer type" in msg and "don't match" in msg:
        return CONSTANT_DTYPE
    if "is not a valid" in msg:
        return INVALID_NAME
    raise AssertionError(f"unclassified TF error {type(exc).__name__}: {msg}") from exc


def run_tf(program: Program) -> Run:
    """Run with ``tensorflow.compat.v1`` in graph mode, in a fresh graph, past every error."""
    with _tf().Graph().as_default() as graph:
        backend = _TFBackend(graph)
        interp = _Interpreter(backend, keep_going=True)
        interp.run(program)
        run = _result(interp, backend.created())
        tf = _tf()
        run.values = {k: value_label(tf.get_static_value(v.initial_value), v.dtype.base_dtype.name)
                      + (v.constraint is clip,) for k, v in backend.store._vars.items()}
        return run


# --- scoped_params -----------------------------------------------------------------------------


class _SPBackend:
    def __init__(self, flat_params=None):
        import scoped_params as sp

        self.sp = sp
        self.flat_params = flat_params  # apply: get must return exactly these leaves
        self.order: List[str] = []  # first successful return of each name = its creation
        self.objects: dict = {}  # init: full name -> the object get_param returned
        self.problems: List[str] = []

    def current_scope(self):
        return self.sp.get_scope()

    def current_name_scope(self) -> str:
        return self.sp.current_name_scope()

    def reuse_str(self, reuse) -> str:
        return AUTO if reuse is self.sp.AUTO_REUSE else str(bool(reuse))

    def _init(self, value):
        if isinstance(value, Const):
            return value.make()
        return None if value is None else self.sp.initializers.constant(value)

    def get(self, full, name, shape, dtype, init, constraint, getter) -> None:
        import numpy as np

        options = {} if getter is None else {"custom_getter": getter}
        value = self.sp.get_param(name, shape, dtype=None if dtype is None else np.dtype(dtype),
                                  init=self._init(init), constraint=clip if constraint else None,
                                  **options)
        if self.flat_params is not None:
            if value is not self.flat_params.get(full):
                self.problems.append(f"apply: get_param({name!r}) did not return params[{full!r}]")
        else:
            # Reuse hands back the very object made at creation; different names, different objects.
            first = self.objects.get(full)
            if first is None:
                if any(o is value for o in self.objects.values()):
                    self.problems.append(f"init: {full!r} shares its object with another name")
                self.objects[full] = value
            elif first is not value:
                self.problems.append(f"init: reusing {full!r} returned a different object")
        if full not in self.order:
            self.order.append(full)

    def scope(self, name_or_scope, default, reuse, dtype, aux, getter, init, constraint):
        # Only the arguments the program gives, as users write them: sp.scope("a") and the other
        # common forms take their own fast paths, which must agree with TF too.
        options = dict(default_name=default, reuse=self.sp.AUTO_REUSE if reuse == AUTO else reuse,
                       dtype=dtype, custom_getter=getter, initializer=self._init(init),
                       constraint=clip if constraint else None)
        options = {k: v for k, v in options.items() if v is not None}
        if not aux:
            options["auxiliary_name_scope"] = False
        return self.sp.scope(name_or_scope, **options)

    def name_scope(self, name):
        return self.sp.name_scope(name)

    def set_defaults(self, scope, init, dtype) -> None:
        import numpy as np

        if init is not None:
            scope.set_initializer(self._init(init))
        if dtype is not None:
            scope.set_dtype(np.dtype(dtype))

    def category(self, exc, full) -> str:
        return sp_category(exc, full)


def sp_category(exc: BaseException, full: Optional[str]) -> str:
    """Our error class -> category; the message must keep TF's key phrase and the full name."""
    import scoped_params as sp

    msg = str(exc)
    checks = [
        (sp.ParamExistsError, EXISTS, [f"Variable {full} already exists, disallowed"]),
        (sp.ParamNotFoundError, NOT_FOUND, [f"Variable {full} does not exist"]),
        (sp.ShapeMismatchError, SHAPE, [f"Trying to share variable {full}, but specified shape"]),
        (sp.DtypeMismatchError, DTYPE, [f"Trying to share variable {full}, but specified dtype"]),
        (sp.InitializerError, CONSTANT_WITH_SHAPE,
         ["If initializer is a constant, do not specify shape", f"'{full}'"]),
        (sp.InitializerError, CONSTANT_DTYPE, ["Initializer type", "don't match", f"'{full}'"]),
        (sp.InitializerError, UNDEFINED_SHAPE, ["be fully defined", f"'{full}'"]),
        (sp.ReuseArgumentError, REUSE_WITHOUT_NAME,
         ["reuse=True cannot be used without a name_or_scope"]),
        (sp.InvalidNameError, INVALID_NAME, ["is not a valid"]),
    ]
    for cls, category, phrases in checks:
        if isinstance(exc, cls) and all(p in msg for p in phrases):
            return category
    for cls, category, phrases in checks:
        if isinstance(exc, cls):
            return f"{category}?, but the message lacks {[p for p in phrases if p not in msg]!r}"
    return f"unexpected {type(exc).__name__}: {msg}"


def run_sp(program: Program, key, *, params=None, keep_going=False, stop_at=None):
    """Run under ``sp.transform(fn).init(key)``, or ``.apply(params)`` when params are given.

    With ``keep_going`` errors are recorded and skipped; otherwise the first error propagates out
    of init/apply, and must arrive there as the very exception get_param/scope raised. Returns
    ``(Run, init's params or None)``.
    """
    import scoped_params as sp

    state = {}

    def fn():
        flat = None if params is None else sp.flatten(params)
        backend = _SPBackend(flat)
        interp = _Interpreter(backend, stop_at=stop_at, keep_going=keep_going,
                              propagate=not keep_going)
        state["backend"], state["interp"] = backend, interp
        interp.run(program)

    model = sp.transform(fn)
    result, raised = None, None
    constrained = {}
    try:
        if params is None:
            if keep_going:  # which parameters got a constraint: from specs, an abstract trace
                constrained = {k: s.constraint is clip for k, s in sp.flatten(model.specs()).items()}
            result = model.init(key)
        else:
            model.apply(params)
    except ValueError as e:
        raised = e
    backend, interp = state["backend"], state["interp"]
    run = _result(interp, list(backend.order), backend.problems)
    if result is not None:
        run.values = {k: value_label(v, v.dtype.name) + (constrained.get(k, False),)
                      for k, v in sp.flatten(result).items()}
    first = interp.first_error[1] if interp.first_error and not keep_going else None
    if raised is not first:
        what = "apply" if params is not None else "init"
        run.problems.append(f"{what} raised {raised!r}, but the model code saw {first!r}")
    return run, result
