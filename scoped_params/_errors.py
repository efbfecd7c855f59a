"""Exception classes and the wording of every error the library raises.

Each class subclasses the builtin TF 1.x raises for the same misuse (``ValueError`` for naming, reuse,
shape and dtype problems, ``TypeError`` for wrong argument types, ``RuntimeError`` for improper nesting
or use outside a transform), so ``except ValueError`` code ported from TF keeps working. Messages name
the full parameter path, say what was asked and what was found, and end with the fix.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import functools
import importlib
import importlib.util
import os
import sys
import types
from typing import Any, Callable, Iterable, Optional, Tuple, Union

Site = Optional[Tuple[str, int]]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _package_dir(name: str) -> Optional[str]:
    """The directory of the installed package ``name`` (with a trailing separator), if any."""
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec is not None else None
    return os.path.dirname(origin) + os.sep if origin else None


# Code that is never the user's: this package, and what calls back into a model between its line
# and a get_param: JAX's own files (the body of an sp.scan runs below jax.lax.scan's tracing, the
# model under jit below jax's dispatch) and the stdlib's functools and contextlib (partials,
# @contextmanager scopes). A creation site is the first frame outside all of them.
_NOT_USER_DIRS = tuple(d for d in (_PACKAGE_DIR, _package_dir("jax"), _package_dir("jaxlib")) if d)
# The packages of TensorFlow and its Keras and slim, whose objects ported code passes where JAX's go
# (an initializer, a regularizer, an activation): told apart by their module, TF is not imported.
TF_PACKAGES = ("tensorflow", "tf_keras", "keras", "tf_slim")
_NOT_USER_FILES = frozenset(os.path.abspath(m.__file__) for m in (contextlib, functools) if m.__file__)

# JAX keeps the Python stack of every op it stages: the source file and line in XLA op metadata (what
# profilers show), the MLIR locations, the "while tracing ... at" lines of its errors. Our frames are
# the library's, like JAX's own, so those point at the model's line: the `sp.layers.conv2d(...)` call
# rather than the convolution inside it. (Flax registers its modules the same way.)
try:
    from jax.extend.source_info_util import register_exclusion as _register_exclusion
except ImportError:  # pragma: no cover - older jax: our frames stay in the metadata
    pass
else:
    _register_exclusion(_PACKAGE_DIR)


# file name -> whether code in it is the user's (see _NOT_USER_DIRS): user_site runs on every
# parameter request, and a lookup is cheaper than the string tests. Keyed by name, not by code
# object: a code object's hash is recomputed on every lookup, over all its constants and names.
# Bounded (exec'd code can bring new names).
_IS_USER_FILE: dict = {}


def _is_user_file(filename: str) -> bool:
    """Whether code in ``filename`` is the user's: outside this package, JAX and jaxlib, and the
    stdlib's functools and contextlib; cached."""
    user = _IS_USER_FILE.get(filename)
    if user is None:
        if len(_IS_USER_FILE) >= 4096:
            _IS_USER_FILE.clear()
        user = _IS_USER_FILE[filename] = (not filename.startswith(_NOT_USER_DIRS)
                                          and filename not in _NOT_USER_FILES)
    return user


def _user_frame(depth: int) -> Optional[types.FrameType]:
    """The first frame of user code (see ``_is_user_file``), looking up from the one
    ``sys._getframe(depth)`` would give in this function's caller."""
    f: Optional[types.FrameType] = sys._getframe(depth + 1)
    while f is not None:
        filename = f.f_code.co_filename
        user = _IS_USER_FILE.get(filename)
        if user is None:
            user = _is_user_file(filename)
        if user:
            return f
        f = f.f_back
    return None


def user_site(depth: int = 1) -> Site:
    """(file, line) of the first caller frame of user code (see ``_is_user_file``)."""
    f = _user_frame(depth)
    return None if f is None else (f.f_code.co_filename, f.f_lineno)


def user_code_site(depth: int = 1) -> Optional[Tuple[types.CodeType, int]]:
    """``user_site`` as (code object, bytecode offset), for a site that is only shown if an error
    comes (``format_site`` finds the line then): a frame's ``f_lineno`` costs time in proportion to
    its function's length, ~2 us at the end of a 150-line model function."""
    f = _user_frame(depth)
    return None if f is None else (f.f_code, f.f_lasti)


def format_site(site: Site) -> str:
    """``site`` is (file, line), or (code object, bytecode offset) as ``apply`` records it: a frame's
    ``f_lineno`` costs time in proportion to its function's length, so the line is found only here."""
    if not site:
        return "<unknown location>"
    where, line = site
    if type(where) is types.CodeType:
        where, line = where.co_filename, line_at(where, line)
    return f"{where}:{line}"


def line_at(code: types.CodeType, offset: int) -> Optional[int]:
    """The source line of the instruction at bytecode ``offset`` (a frame's ``f_lasti``): what the
    frame's ``f_lineno`` was at that instruction."""
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line
    return None


class ScopedParamsError(Exception):
    """Base class of every error raised by scoped_params (mixed into a builtin exception type)."""


class ParamExistsError(ScopedParamsError, ValueError):
    """A parameter was requested with ``reuse=False`` but it was already created in this call."""


class ParamNotFoundError(ScopedParamsError, ValueError):
    """A parameter was requested with ``reuse=True`` (or in ``apply``) but it does not exist."""


class ShapeMismatchError(ScopedParamsError, ValueError):
    """A shared parameter was requested with a shape different from the stored one."""


class DtypeMismatchError(ScopedParamsError, ValueError):
    """A shared parameter was requested with a dtype different from the stored one."""


class NameCollisionError(ScopedParamsError, ValueError):
    """A full name would be both a parameter (leaf) and a scope (inner node) of the params tree."""


class InvalidNameError(ScopedParamsError, ValueError):
    """A scope or parameter name is not a valid path component."""


class InitializerError(ScopedParamsError, ValueError):
    """The initializer, shape and dtype given for a new parameter do not fit together."""


class ReuseArgumentError(ScopedParamsError, ValueError):
    """A ``reuse=`` argument TF 1.x would reject."""


class ScopeNestingError(ScopedParamsError, RuntimeError):
    """Scopes or name scopes were closed in a different order than they were opened, or a parameter
    was created inside a TF 1.x ``tf.variable_scope`` (left in a port), which scoped_params does not
    see."""


class NotInTransformError(ScopedParamsError, RuntimeError):
    """A model-side call (``get_param``, ``scope``, ...) ran outside ``init``/``apply`` of a transform."""


class NestedTraceError(ScopedParamsError, RuntimeError):
    """A parameter or random key was asked for inside a function JAX traces and caches on its own
    (``jax.lax.scan``, ``cond``, ``while_loop``, ``jax.checkpoint``, a nested ``jax.jit``), or inside
    a ``jax.custom_jvp``/``custom_vjp`` function that ``jax.grad`` differentiates with respect to it."""


class MissingRngError(ScopedParamsError, RuntimeError):
    """``next_rng_key`` was called but ``apply`` was not given ``rng=``."""


class StateError(ScopedParamsError, RuntimeError):
    """State was used outside ``transform_with_state`` or set before it was declared."""


class ParamsTypeError(ScopedParamsError, TypeError):
    """``apply`` was given params (or state) that are not a nested mapping of arrays."""


class KeyArgumentError(ScopedParamsError, TypeError):
    """``init``'s key or ``apply``'s ``rng=`` is not a JAX random key (typically: the key forgotten,
    so that ``model.init(x)`` took the model's input for it)."""


def check_partitioner(partitioner: Any, where: Union[str, Callable[[], str]]) -> None:
    """Raise TF's "Partitioner must be callable" unless ``partitioner`` is None, a callable or a list
    of rules (``sp.sharding.Rules``'s); ``where`` names the scope or parameter (or makes the name).

    Checked where the partitioner is given (TF checks it at ``get_variable``), with the class
    ``sp.shardings`` raises for it, ``sp.sharding.PartitionerError`` (a ``ValueError`` as TF's, and a
    ``TypeError``)."""
    if partitioner is None or callable(partitioner) or isinstance(partitioner, (list, tuple)):
        return
    # Imported here: sharding imports the modules that import this one.
    from .sharding import PartitionerError, _StackedPartitioner
    if isinstance(partitioner, _StackedPartitioner):  # sp.layer_stack's wrapper of the scope's
        return check_partitioner(partitioner.per_layer, where)
    raise PartitionerError(
        f"Partitioner must be callable, but received: {partitioner!r} "
        f"({where() if callable(where) else where}).\n"
        "  fix: pass a callable (name, shape, dtype) -> PartitionSpec | None, sp.sharding.Rules([...]) "
        "(or its list of (regex, PartitionSpec) rules) or sp.sharding.fixed_size_partitioner(n).")


def bad_key_error(key: Any, jax_error: Optional[BaseException], apply: bool) -> KeyArgumentError:
    """The error for ``init``'s key (``apply=False``) or ``apply``'s ``rng=`` that JAX refused as a
    random key (``jax_error``: what JAX said, if it said anything)."""
    if hasattr(key, "shape") and hasattr(key, "dtype"):
        shown = f"an array of shape {tuple(key.shape)} and dtype {key.dtype}"
    else:
        shown = f"{type(key).__name__} {key!r:.60}"
    said = str(jax_error).split(" for impl=", 1)[0].split("\n", 1)[0] if jax_error else ""
    said = f" (JAX: {said})" if said else ""
    if apply:
        return KeyArgumentError(
            f"apply's rng= must be a JAX random key, got {shown}{said}.\n"
            "  fix: pass a key, e.g. model.apply(params, x, rng=jax.random.key(step)), or an int "
            "seed (rng=step); for a new key each step, rng=jax.random.fold_in(key, step).")
    return KeyArgumentError(
        f"model.init's first argument is the random key, but it got {shown}, which is not one{said}.\n"
        "  asked: model.init(key, *args)\n"
        "  fix: pass the key first: model.init(jax.random.key(0), *args) (an int seed works too: "
        "model.init(0, *args)); if that argument was the model's input, the key was left out.")


# The modules of public layer functions, as a user calls them (not_in_transform names the one called).
_LAYER_MODULES = {f"{__package__}.layers": "sp.layers", f"{__package__}.slim": "sp.slim",
                  f"{__package__}.rnn": "sp.rnn"}


def _called_layer() -> Optional[str]:
    """``sp.layers.dense`` when the user's call into this package was that public layer function
    (found on the stack: an error path only), else None."""
    f: Optional[types.FrameType] = sys._getframe(2)
    called = None
    while f is not None and not _is_user_file(f.f_code.co_filename):
        module, code = f.f_globals.get("__name__"), f.f_code
        if module in _LAYER_MODULES and not code.co_name.startswith("_"):
            fn = f.f_globals.get(code.co_name)
            while fn is not None and getattr(fn, "__code__", None) is not code:
                fn = getattr(fn, "__wrapped__", None)  # a decorated function (slim's arg scopes)
            if fn is not None:  # not a method (a layer object's call names itself) nor a wrapper
                called = f"{_LAYER_MODULES[module]}.{code.co_name}"  # the outermost one wins
        f = f.f_back
    return called


def _in_custom_vjp_bwd() -> bool:
    """Whether JAX is running a ``jax.custom_vjp``'s bwd on this stack (an error path only)."""
    f: Optional[types.FrameType] = sys._getframe(2)
    while f is not None:
        code = f.f_code
        if code.co_name == "_flatten_bwd" and code.co_filename.endswith("custom_derivatives.py"):
            return True
        f = f.f_back
    return False


def not_in_transform(api: str) -> NotInTransformError:
    """``api``: a name in ``sp`` (``"get_param"``, shown as ``sp.get_param()``), or a full name,
    one starting with ``sp.`` or with a user's class name (``"MyLayer"``), shown as given with
    ``()``, unless it has parentheses already (``"MyLayer(...).weights"``, shown as it is). A
    public layer function (``sp.layers.dense``) that reached ``api`` is named instead."""
    if not (api.startswith("sp.") or api.lstrip("_")[:1].isupper()):
        api = f"sp.{api}"
    api = _called_layer() or api
    call = api if "(" in api else f"{api}()"
    if _in_custom_vjp_bwd():
        return NotInTransformError(
            f"{call} was called in the bwd function of a jax.custom_vjp. JAX runs bwd in the "
            "backward pass, after the model's init/apply call has returned, so no model call is "
            "running there to read from.\n"
            f"  asked: {call} in a custom_vjp's bwd (TF's @tf.custom_gradient grad_fn)\n"
            "  fix: read the parameter (or key) in the model, or in fwd, and pass it to bwd through "
            "fwd's residuals: fwd returns (out, (x, w)) and bwd(res, g) unpacks (x, w) = res.")
    return NotInTransformError(
        f"{call} was called outside a transformed function.\n"
        f"  asked: {call} with no sp.transform init/apply running in this thread or context\n"
        "  fix: put the model code in a function `fn`, build `model = sp.transform(fn)` and call it through "
        "`model.init(key, *args)` and `model.apply(params, *args)`."
    )


# difflib costs ~50 us a name (more for long, similar names): over this many names it is run on a
# short list only, the names cheap tests find closest (see _shortlist).
_NEAREST_ALL = 128
_NEAREST_EACH = 16  # the names each of _shortlist's tests keeps


def nearest(name: str, candidates: Iterable[str], n: int = 3) -> list:
    """Existing names a typo'd ``name`` most likely meant: edit-distance matches, then suffix matches.

    Bounded work on an error path of a large model: difflib compares ``name`` with every candidate
    only if there are at most ``_NEAREST_ALL``, else with a short list of them (see _shortlist)."""
    candidates = list(candidates)
    pool = candidates if len(candidates) <= _NEAREST_ALL else _shortlist(name, candidates)
    close = difflib.get_close_matches(name, pool, n=n, cutoff=0.6)
    leaf = name.rsplit("/", 1)[-1]
    for c in candidates:
        if len(close) >= n:
            break
        if c not in close and c.rsplit("/", 1)[-1] == leaf:
            close.append(c)
    return close


def _shortlist(name: str, candidates: list) -> list:
    """At most ~5 * ``_NEAREST_EACH`` of ``candidates``, those cheap tests find closest to ``name``:
    of the names difflib could match at all (a length within its 0.6 cutoff), the ones sharing the
    longest start with it (neighbours in sorted order: a typo late in the name), the longest end
    (neighbours in the order of the reversed names: a typo early in the path), and its siblings (same
    parent scope: a typo'd leaf), those of the closest length first. Linear in the names (and a sort),
    with no difflib."""
    import bisect

    k = _NEAREST_EACH
    # difflib's ratio is at most 2 * min(len) / (sum of lens); with the 0.6 cutoff a name is out of
    # reach under 3/7 or over 7/3 of name's length (a character of slack on both sides).
    size = len(name)
    viable = [c for c in candidates if 3 * size - 7 <= 7 * len(c) and 3 * len(c) <= 7 * size + 3]
    if len(viable) <= _NEAREST_ALL:
        return viable
    picked: dict = {}
    for order in (lambda c: c, lambda c: c[::-1]):
        ranked = sorted(viable, key=order)
        at = bisect.bisect_left([order(c) for c in ranked], order(name))
        picked.update(dict.fromkeys(ranked[max(0, at - k):at + k]))
    parent = name.rpartition("/")[0]
    siblings = [c for c in viable if c.rpartition("/")[0] == parent]
    siblings.sort(key=lambda c: abs(len(c) - size))
    picked.update(dict.fromkeys(siblings[:k]))
    return [c for c in viable if c in picked]


def open_tf_variable_scope() -> Optional[str]:
    """The name of a TF 1.x ``tf.variable_scope`` open in TensorFlow's default graph (a leftover of a
    port around a parameter request, or around ``init``), else None. scoped_params does not see
    TF's scopes, so a parameter made inside one would miss its prefix. Looked at only when TensorFlow
    is imported already (it is never imported for this), and only where a parameter is created in
    ``init`` or an error is being written."""
    module = sys.modules.get("tensorflow.python.ops.variable_scope")
    if module is None:
        return None
    try:
        return module.get_variable_scope_store().current_scope.name or None
    except Exception:  # noqa: BLE001 - another TensorFlow: no check
        return None


def tf_variable_scope_error(full: str, tf_scope: str) -> ScopeNestingError:
    """A parameter ``full`` created while TF's variable scope ``tf_scope`` is open."""
    return ScopeNestingError(
        f"'{full}' is created inside TensorFlow's tf.variable_scope('{tf_scope}'), which scoped_params "
        f"does not see: the parameter is named '{full}', without the '{tf_scope}/' TF would put in its "
        "name.\n"
        f"  asked: '{full}' with TF's variable scope '{tf_scope}' open around the request\n"
        "  fix: replace tf.variable_scope(...) (tf.compat.v1.variable_scope) with sp.scope(...), "
        "same arguments; call model.init/apply outside any tf.variable_scope.")


def tf_variable_scope_hint() -> str:
    """For a "does not exist" error: a TF variable scope open around the request, if one is."""
    tf_scope = open_tf_variable_scope()
    if tf_scope is None:
        return ""
    return (f"\n  note: TensorFlow's tf.variable_scope('{tf_scope}') is open around this request; "
            "scoped_params does not see it (its names miss that prefix): replace it with "
            "sp.scope(...), same arguments.")


def name_scope_hint(name_stack: str, scope_name: str) -> str:
    """The "name_scope does not name parameters" hint, when a plain name scope is active."""
    if not name_stack:
        return ""
    last = name_stack.rsplit("/", 1)[-1]
    # Inside `scope("x")` the name stack ends with x (or x_N); only plain name scopes deserve the hint.
    # A layer object or RNN cell re-enters its captured scope without a name scope of its own, so the
    # name stack may end with any component of the variable scope's path (`a_1` in `a/gru_cell`).
    components = scope_name.split("/") if scope_name else ()
    base = last.rsplit("_", 1)[0] if last.rsplit("_", 1)[-1].isdigit() else last
    if last in components or base in components:
        return ""
    return (
        f"\n  note: name_scope('{last}') is active but does not affect parameter names; "
        f"use sp.scope('{last}') to namespace parameters."
    )


class CheckpointError(ScopedParamsError):
    """Base class of checkpoint errors; every message names the file it is about."""

    filename: Optional[str] = None  # the file or checkpoint the error is about, where one is


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file (or TF 1.x checkpoint prefix/directory, or training step) does not exist."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno None] None: <filename>"
        return str(self.args[0]) if self.args else super().__str__()


class CheckpointPermissionError(CheckpointError, PermissionError):
    """The OS refused to read a checkpoint's file or directory (its permissions): nothing says the
    checkpoint is damaged or missing. A ``PermissionError`` (``errno`` kept where the OS gave one);
    ``filename`` is the path refused."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno 13] ...: <filename>"
        return str(self.args[0]) if self.args else super().__str__()


def permission_error(path: str, what: str, cause: Optional[BaseException] = None
                     ) -> CheckpointPermissionError:
    """The error for ``what`` (``"cannot read TF checkpoint 'x'"``) failing because the OS refused
    to read ``path``; ``cause``: the refusal, if Python saw one (its errno is kept)."""
    why = getattr(cause, "strerror", None) or "Permission denied"
    err = CheckpointPermissionError(
        f"{what}: the OS refused to read {path!r} ({why}); the checkpoint itself is not known to be "
        "damaged.\n"
        "  fix: check the permissions of that file and of the directories above it (the user "
        "running this needs read permission on the files and search (x) permission on the "
        "directories), or run as a user who can read them.")
    err.errno = getattr(cause, "errno", None) or errno.EACCES
    err.strerror, err.filename = why, path
    return err


class CheckpointCorruptError(CheckpointError, ValueError):
    """The file is empty, truncated, bit-flipped or not a checkpoint at all.

    ``sp.checkpoint.load`` never returns a partial or silently wrong tree: a file written by
    ``sp.checkpoint.save`` carries a CRC-32 of all its bytes, checked on every load.
    """

    filename: Optional[str] = None  # the file that could not be read


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint that is not damaged does not hold what was asked of it, or not in that form:

    * ``init_from_checkpoint`` could not fill some parameters (missing, wrong shape or dtype, bad
      map);
    * ``TrainingCheckpointer.restore``: the target's entries, shapes or dtypes differ from the
      step's (or a value would not fit the target's dtype), or its leaves cannot be placed;
    * ``load_tf1``: a variable saved part by part with parts missing, moving averages saved under a
      scope (``use_moving_averages=True``), or an entry that holds only some slices of a variable;
    * ``adam_state_from_tf1`` (``OptimizerStateMismatchError``): a slot or beta power of another
      shape.
    """

    filename: Optional[str] = None  # the checkpoint, where the error is about one


class StepOrderError(CheckpointError, ValueError):
    """``TrainingCheckpointer.save`` of a step that is not after every step on disk (steps only move
    forward; ``delete_steps_after`` rolls a run back)."""


class MissingDependencyError(ScopedParamsError, ImportError):
    """An optional dependency (``safetensors``, ``orbax-checkpoint``, ``tensorflow``) is not installed."""


def optional_import(module: str, package: str, extra: str, what: str):
    """Import an optional dependency, or raise an error naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{what} needs the '{package}' package, which is not installed.\n"
            f"  fix: pip install 'scoped_params[{extra}]'  (or: pip install {package})") from None
