"""Random variable-scoping programs, and one interpreter that runs them under TF 1.x or scoped_params.

A program is plain data (the node types below). ``strategies.programs()`` generates them with
hypothesis; ``run_tf`` executes one with ``tensorflow.compat.v1`` in a fresh graph, ``run_sp`` with
``sp.transform(fn).init`` (or ``apply``). Both return a ``Run``: the trace of observations (scope
names, reuse modes, name scopes, the full name every ``get`` resolved to), the ordered list of
created names, and the outcome (``"ok"`` or the error category). ``render`` prints a program as the
scoped_params code it stands for, which is what a failing test shows.

Name sets are chosen so that every generated program is one both libraries must accept as
written: parameter names (``v``, ``w``) never double as scope names (a params tree cannot hold a
leaf and a sub-tree under one key, and TF's graph would uniquify an op that took a variable's name),
and every name is a valid TF op name with non-empty components.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Tuple, Union

from hypothesis import strategies as st

# --- the program language ----------------------------------------------------------------------

AUTO = "AUTO"  # stands for tf.compat.v1.AUTO_REUSE / sp.AUTO_REUSE


@dataclasses.dataclass(frozen=True)
class Get:
    """``get_param(name, shape, dtype=dtype)``; shape None means "no shape given"."""
    name: str
    shape: Optional[Tuple[int, ...]]
    dtype: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ReuseVariables:
    """``get_scope().reuse_variables()`` on the current scope."""


@dataclasses.dataclass(frozen=True)
class ByName:
    name: str  # scope("a") or scope("a/b")


@dataclasses.dataclass(frozen=True)
class ByDefault:
    default_name: str  # scope(None, default_name="d")


@dataclasses.dataclass(frozen=True)
class ByCaptured:
    slot: int  # scope(slots[slot]); slot -1 is the root scope captured at program start


Target = Union[ByName, ByDefault, ByCaptured]


@dataclasses.dataclass(frozen=True)
class Scope:
    """``with scope(target, reuse=reuse, dtype=dtype, auxiliary_name_scope=aux) as s: body``.

    ``capture`` stores ``s`` in that slot for a later ``ByCaptured`` re-entry.
    """
    target: Target
    body: Tuple[Any, ...]
    reuse: Any = None  # None, False, True or AUTO
    dtype: Optional[str] = None
    aux: bool = True
    capture: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class NameScope:
    name: str
    body: Tuple[Any, ...]


Program = Tuple[Any, ...]

# Outcome categories, and the phrase of TF's message that identifies each.
OK = "ok"
EXISTS = "already exists"
NOT_FOUND = "does not exist"
SHAPE = "shape mismatch"
DTYPE = "dtype mismatch"
UNDEFINED_SHAPE = "shape not fully defined"
REUSE_WITHOUT_NAME = "reuse without a name"
CATEGORIES = (OK, EXISTS, NOT_FOUND, SHAPE, DTYPE, UNDEFINED_SHAPE, REUSE_WITHOUT_NAME)


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
                shape = "None" if s.shape is None else repr(list(s.shape))  # [None, 3]: partly known
                lines.append(f"{pad}sp.get_param({s.name!r}, {shape}{extra})")
            elif isinstance(s, ReuseVariables):
                lines.append(f"{pad}sp.get_scope().reuse_variables()")
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
                as_ = f" as s{s.capture}" if s.capture is not None else ""
                lines.append(f"{pad}with sp.scope({', '.join(args)}){as_}:")
                emit(s.body, indent + 1)

    emit(program, 0)
    return "\n".join(lines)


# --- hypothesis strategies ---------------------------------------------------------------------

# "A" next to "a": name scopes are uniquified case-insensitively, parameter names are not.
# "a/b" is one scope entry for a two-component path; "b/v" a parameter name with a "/" in it.
SCOPE_NAMES = ("a", "a", "b", "b", "A", "a/b")
DEFAULT_NAMES = ("a", "d", "d")
# None and "" return to the root name scope; "ns/" re-enters "ns" exactly; "@k" is slot k's
# original_name_scope (TF's idiom for re-entering a scope's name scope without a "_1").
NAME_SCOPE_NAMES = ("a", "ns", "ns", "A", None, "", "ns/", "@0", "@1")
PARAM_NAMES = ("v", "v", "v", "w", "w", "b/v")
SHAPES = ((),) * 3 + ((1,),) * 3 + ((2,),) * 2 + ((2, 3),) * 3 + ((None, 3), None)
DTYPES = (None, None, None, "float32", "int32", "int32")
SCOPE_DTYPES = (None,) * 10 + ("int32", "int32", "float32")
REUSES = (None,) * 6 + (False, True, AUTO, AUTO)
# With default_name, reuse=True/AUTO_REUSE is an error in both libraries: keep it rarer.
DEFAULT_REUSES = (None,) * 10 + (False, True, AUTO)
SLOTS = 2


def _get():
    return st.builds(Get, st.sampled_from(PARAM_NAMES), st.sampled_from(SHAPES),
                     st.sampled_from(DTYPES))


def _target_and_reuse():
    named = st.tuples(st.builds(ByName, st.sampled_from(SCOPE_NAMES)), st.sampled_from(REUSES))
    default = st.tuples(st.builds(ByDefault, st.sampled_from(DEFAULT_NAMES)),
                        st.sampled_from(DEFAULT_REUSES))
    captured = st.tuples(st.builds(ByCaptured, st.integers(-1, SLOTS - 1)), st.sampled_from(REUSES))
    return st.one_of(named, named, default, default, captured, captured)


def _stmts(depth: int):
    get = _get()
    if depth == 0:
        return st.one_of(*[get] * 9, st.just(ReuseVariables()))
    inner = st.lists(_stmts(depth - 1), max_size=4).map(tuple)
    scope = st.builds(
        lambda tr, body, dtype, aux, capture: Scope(tr[0], body, tr[1], dtype, aux, capture),
        _target_and_reuse(), inner, st.sampled_from(SCOPE_DTYPES),
        st.sampled_from((True,) * 7 + (False,)),
        st.sampled_from((None, None) + tuple(range(SLOTS))))
    name_scope = st.builds(NameScope, st.sampled_from(NAME_SCOPE_NAMES), inner)
    return st.one_of(*[get] * 5, *[scope] * 5, name_scope, st.just(ReuseVariables()))


def _one_reuse_variables(program: Program) -> Program:
    """Keep only the first ``reuse_variables()``: hypothesis copies short nodes around freely, and
    with several of them nearly every program would stop at its first creation."""
    seen = [False]

    def keep(stmts):
        out = []
        for s in stmts:
            if isinstance(s, ReuseVariables):
                if seen[0]:
                    continue
                seen[0] = True
            elif isinstance(s, (Scope, NameScope)):
                s = dataclasses.replace(s, body=keep(s.body))
            out.append(s)
        return tuple(out)

    return keep(program)


def programs(depth: int = 3):
    """Random scoping programs: up to 7 top-level statements, scopes nested up to ``depth``."""
    return st.lists(_stmts(depth), min_size=1, max_size=7).map(tuple).map(_one_reuse_variables)


# --- the interpreter ---------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """What one execution of a program showed."""
    trace: List[tuple]  # observations, in order; ("error", category, step) for a failed statement
    created: List[str]  # full names in creation order
    outcome: str  # OK, or the category of the first error
    fail_step: Optional[int] = None  # step of the first error
    message: str = ""  # text of the first error
    problems: List[str] = dataclasses.field(default_factory=list)  # self-check failures

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

    def _failed(self, step: int, exc: ValueError, full: Optional[str]) -> None:
        category = self.b.category(exc, full)
        self.trace.append(("error", category, step))
        if self.first_error is None:
            self.first_error = (step, exc, category)
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
                    self.b.get(full, s.name, s.shape, s.dtype)
                except ValueError as e:
                    self._failed(step, e, full)
                    continue
                self.trace.append(("get", full, self.b.current_name_scope()))
            elif isinstance(s, ReuseVariables):
                self.b.current_scope().reuse_variables()
                self._observe_scope("reuse_variables")
            elif isinstance(s, NameScope):
                name = s.name
                if name is not None and name.startswith("@"):
                    slot = self.slots.get(int(name[1:]))
                    name = "ns" if slot is None else slot.original_name_scope
                with self.b.name_scope(name) as ns:
                    self.trace.append(("name_scope", ns, self.b.current_name_scope()))
                    self._block(s.body)
            else:
                self._scope(step, s)

    def _scope(self, step: int, s: Scope) -> None:
        t = s.target
        if isinstance(t, ByName):
            name_or_scope, default = t.name, None
        elif isinstance(t, ByDefault):
            name_or_scope, default = None, t.default_name
        else:
            # A slot not filled yet (its capture comes later or never ran): enter the name "c".
            name_or_scope, default = self.slots.get(t.slot, "c"), None
        manager = self.b.scope(name_or_scope, default, s.reuse, s.dtype, s.aux)
        try:
            vs = manager.__enter__()
        except ValueError as e:
            self._failed(step, e, None)
            return
        try:
            if s.capture is not None:
                self.slots[s.capture] = vs
            self.trace.append(("enter", vs.name, vs.original_name_scope))
            self._observe_scope("in")
            self._block(s.body)
        except BaseException as e:
            if not manager.__exit__(type(e), e, e.__traceback__):
                raise
        else:
            manager.__exit__(None, None, None)
        self._observe_scope("exit")


def _result(interp: _Interpreter, created: List[str], problems=()) -> Run:
    run = Run(interp.trace, created, OK, problems=list(problems))
    if interp.first_error is not None:
        run.fail_step, exc, run.outcome = interp.first_error
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

    def get(self, full, name, shape, dtype) -> None:
        var = self.v1.get_variable(name, shape=None if shape is None else list(shape),
                                   dtype=self._dtype(dtype))
        assert self.store._vars[full] is var, (full, var)

    def scope(self, name_or_scope, default, reuse, dtype, aux):
        reuse = self.v1.AUTO_REUSE if reuse == AUTO else reuse
        return self.v1.variable_scope(name_or_scope, default_name=default, reuse=reuse,
                                      dtype=self._dtype(dtype), auxiliary_name_scope=aux)

    def name_scope(self, name):
        return self.v1.name_scope(name)

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
    raise AssertionError(f"unclassified TF error {type(exc).__name__}: {msg}") from exc


def run_tf(program: Program) -> Run:
    """Run with ``tensorflow.compat.v1`` in graph mode, in a fresh graph, past every error."""
    with _tf().Graph().as_default() as graph:
        backend = _TFBackend(graph)
        interp = _Interpreter(backend, keep_going=True)
        interp.run(program)
        return _result(interp, backend.created())


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

    def get(self, full, name, shape, dtype) -> None:
        import numpy as np

        value = self.sp.get_param(name, shape, dtype=None if dtype is None else np.dtype(dtype))
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

    def scope(self, name_or_scope, default, reuse, dtype, aux):
        reuse = self.sp.AUTO_REUSE if reuse == AUTO else reuse
        return self.sp.scope(name_or_scope, default_name=default, reuse=reuse, dtype=dtype,
                             auxiliary_name_scope=aux)

    def name_scope(self, name):
        return self.sp.name_scope(name)

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
        (sp.InitializerError, UNDEFINED_SHAPE, ["must be fully defined", f"'{full}'"]),
        (sp.ReuseArgumentError, REUSE_WITHOUT_NAME,
         ["reuse=True cannot be used without a name_or_scope"]),
    ]
    for cls, category, phrases in checks:
        if isinstance(exc, cls):
            missing = [p for p in phrases if p not in msg]
            return category if not missing else f"{category}, but the message lacks {missing!r}"
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
    try:
        if params is None:
            result = model.init(key)
        else:
            model.apply(params)
    except ValueError as e:
        raised = e
    backend, interp = state["backend"], state["interp"]
    run = _result(interp, list(backend.order), backend.problems)
    first = interp.first_error[1] if interp.first_error and not keep_going else None
    if raised is not first:
        what = "apply" if params is not None else "init"
        run.problems.append(f"{what} raised {raised!r}, but the model code saw {first!r}")
    return run, result
