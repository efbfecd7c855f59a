"""Turn the specs an abstract trace collected into arrays: only the initializers run.

A parameter's value depends only on ``(key, full name, shape, dtype, initializer)``: its key is
``fold_in`` of the init key with a 64-bit hash of the full name, never a split that depends on
creation order. Parameters that share initializer, shape and dtype are initialized by one vmapped
call, so 4,000 same-shape parameters cost about one initializer call, not 4,000 dispatches.

An eager ``init`` runs each such group as one compiled call, cached by (initializer, shape, dtype,
count), when the initializer is one of ``jax.nn.initializers`` or ``sp.initializers`` with plain
captured values (numbers, strings, dtypes, other such initializers): those are pure functions of
their arguments, so a cached executable can stand for them. Op by op, an initializer such as Glorot's
is ten or so dispatches, and each new shape compiles each of its ops anew. Any other callable runs
eagerly, as written, on every ``init``: a compiled cache would freeze globals it reads or NumPy
randomness it draws.

Initializers that ignore the key and fill a constant (zeros, ones, a scalar ``constant`` of either
library) are filled on the host the first time a group is seen, with no compile: NumPy's ``full``
of the scalar JAX itself would broadcast, transferred in one batched ``device_put``. A group seen
again is drawn by its compiled call like any other (one dispatch beats a transfer per parameter), so
an init that runs once per process compiles none of them (~50 ms each on 2 CPU cores).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import itertools
import math
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

try:  # a jaxpr trace's tracers, their equations and constants: JAX-internal (lift_nested_constants)
    from jax._src import core as _jax_core
    from jax._src.interpreters.partial_eval import DynamicJaxprTracer as _JaxprTracer
    _jax_core.set_current_trace  # noqa: B018 - present in this JAX?
except (ImportError, AttributeError):  # pragma: no cover - another JAX: such constants are errors
    _JaxprTracer = None  # type: ignore[assignment,misc]

from . import _scope
from . import initializers as _initializers
from ._errors import TF_PACKAGES, InitializerError, format_site
from ._spec import ParamSpec
from .initializers import _FLAT_DRAWS, _flat_draws


def name_hash(name: str) -> np.ndarray:
    """Two uint32 words of a stable (unsalted) hash of a full name."""
    return np.frombuffer(_digest(name), dtype=np.uint32)


@functools.lru_cache(maxsize=1 << 16)
def _digest(name: str) -> bytes:
    return hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()


def _name_words(names: List[str]) -> np.ndarray:
    """``np.stack([name_hash(n) for n in names])``, from one buffer."""
    return np.frombuffer(b"".join(map(_digest, names)), dtype=np.uint32).reshape(len(names), 2)


def _fold_name(key: jax.Array, words: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(key, words[0]), words[1])


def param_key(key: jax.Array, name: str) -> jax.Array:
    """The key the initializer of parameter ``name`` receives."""
    return _fold_name(key, jnp.asarray(name_hash(name)))


def _init_identity(init: Any) -> Hashable:
    """Group key of an initializer: closures with equal code and captured values are one initializer.

    ``jax.nn.initializers.glorot_uniform()`` returns a new closure on every call, so identity alone
    would put each parameter in its own group.
    """
    code = getattr(init, "__code__", None)
    captured = None if code is None else _captured(init)
    if captured is None:
        return id(init)
    # With the captured values' types: 0.02 and np.float64(0.02) are equal, with one hash, but JAX
    # computes with a Python float weakly typed (in the parameter's dtype) and with a NumPy one not.
    cells, defaults = captured
    ident = (code, cells, tuple(map(type, cells)), defaults,
             None if defaults is None else tuple(map(type, defaults)))
    try:
        hash(ident)
    except TypeError:  # an unhashable captured value
        return id(init)
    return ident


def _captured(fn: Any) -> Optional[Tuple[tuple, Optional[tuple]]]:
    """(the values ``fn``'s closure captured, its defaults); None if a cell is still empty."""
    try:
        return tuple(c.cell_contents for c in fn.__closure__ or ()), fn.__defaults__
    except ValueError:
        return None


def resolve_traced_constants(closed_jaxpr, names: List[str],
                             param_names: Sequence[str] = ()) -> Dict[str, Any]:
    """Evaluate constant initializers that were built with jnp inside the traced function.

    Only the equations the constants depend on run (a backward dead-code pass over the jaxpr), so
    the model's arithmetic never does. A constant computed from the model's inputs is an error, and
    so is one computed from another parameter's value: ``param_names`` name the jaxpr's last inputs,
    the parameters' placeholders.
    """
    jaxpr = closed_jaxpr.jaxpr
    needed = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            kept.append(eqn)
            needed.update(v for v in eqn.invars if not isinstance(v, Literal))
    inputs = set(jaxpr.invars)
    params = dict(zip(jaxpr.invars[len(jaxpr.invars) - len(param_names):], param_names))
    for name, var in zip(names, jaxpr.outvars):
        source = None if isinstance(var, Literal) else _source_input(var, kept, inputs)
        if source in params:
            raise _from_parameter_error(name, params[source])
        if source is not None:
            raise InitializerError(
                f"The constant initializer of '{name}' depends on the model's inputs or on a "
                "random key (e.g. sp.next_rng_key()), so init cannot compute it without running "
                "the model.\n"
                "  fix: build the constant from Python/NumPy values, or pass a callable initializer "
                "init(key, shape, dtype), which receives a key derived from the init key and the "
                "name.")
    pruned = jaxpr.replace(invars=[], eqns=kept[::-1], outvars=list(jaxpr.outvars))
    values = jax.core.eval_jaxpr(pruned, closed_jaxpr.consts)
    return {n: jnp.asarray(v) for n, v in zip(names, values)}


def _from_parameter_error(name: str, param: str) -> InitializerError:
    return InitializerError(
        f"The constant initializer of '{name}' is computed from the value of parameter "
        f"'{param}', which init does not have while it traces the model (TF 1.x runs such an "
        "initializer only through initialized_value()).\n"
        "  fix: build the constant from Python/NumPy values, or give it a callable initializer "
        f"init(key, shape, dtype) that computes its value (from the same initializer as "
        f"'{param}', say); in apply, compute what you need from '{param}' itself.")


def lift_nested_constants(specs: Dict[str, ParamSpec], values: Dict[str, Any], new: int,
                          trace: Any) -> None:
    """In init, as the function of an ``sp.scan``, ``sp.cond``, ``sp.remat``, ... returns (still in
    ``trace``, the one JAX traces it in): rebuild the constant initializers among the ``new`` last
    ``specs`` that were built with jnp inside the function in the trace the wrapper was called in.

    Such a constant is a tracer of ``trace``, which ends with the function (returned by init, it
    would be a leaked tracer). Its ops are bound again, one level out, from the constants it was
    computed from, so that init evaluates it as one made there (``resolve_traced_constants``, with
    its errors: a constant computed from the model's inputs, or from another parameter's value). One
    computed from the function's own arguments (a step's input, the carry, an operand) has no value
    outside it: an ``InitializerError`` naming it. ``values`` (the store's placeholders) get the
    rebuilt constant too, for a later request that reuses the parameter outside the function.
    """
    if not new or _JaxprTracer is None:
        return
    placeholders: Optional[Dict[int, str]] = None
    for name in list(itertools.islice(reversed(specs), new)):
        spec = specs[name]
        if isinstance(spec.init, jax.core.Tracer) and spec.init._trace is trace:
            if placeholders is None:  # the other parameters' values, stand-ins made in this trace
                placeholders = {id(v): n for n, v in values.items() if isinstance(
                    v, jax.core.Tracer) and v._trace is trace and callable(specs[n].init)}
            lifted = _rebuild(spec, spec.init, trace, placeholders)
            specs[name] = dataclasses.replace(spec, init=lifted)
            if isinstance(values.get(name), jax.core.Tracer) and values[name]._trace is trace:
                values[name] = lifted


def _rebuild(spec: ParamSpec, tracer: Any, trace: Any, placeholders: Dict[int, str]) -> Any:
    """``tracer``, a value of the jaxpr trace ``trace``, computed again in ``trace.parent_trace``
    from the constants, literals and outer values it depends on; an error naming ``spec`` if it
    depends on the function's arguments or on ``placeholders`` (id -> name: the values init hands
    out for other parameters, stand-ins with no value yet)."""
    parent = getattr(trace, "parent_trace", None)
    frame = getattr(trace, "frame", None)
    if parent is None or frame is None:
        raise nested_constant_error(spec, tracer)
    consts = frame.constvar_to_val
    done: Dict[int, Any] = {}  # id(tracer of trace) -> its value in parent (the graph keeps them)
    outs: Dict[int, list] = {}  # id(equation) -> its outputs, bound again
    stack = [tracer]
    with _jax_core.set_current_trace(parent):
        while stack:
            t = stack[-1]
            if id(t) in done:
                stack.pop()
                continue
            if not isinstance(t, _JaxprTracer) or t._trace is not trace:
                done[id(t)] = t  # a value made outside the function
                stack.pop()
                continue
            if id(t) in placeholders:
                raise _from_parameter_error(spec.name, placeholders[id(t)])
            var = t.val
            if isinstance(var, Literal):
                done[id(t)] = var.val
                stack.pop()
                continue
            if var in consts:  # a constant of the trace: an array, or a value of an outer trace
                done[id(t)] = consts[var]
                stack.pop()
                continue
            eqn = t.parent
            if eqn is None:  # an argument of the function
                raise nested_constant_error(spec, tracer, trace)
            pending = [x for x in eqn.in_tracers if id(x) not in done]
            if pending:
                stack.extend(pending)
                continue
            results = outs.get(id(eqn))
            if results is None:
                params = eqn.primitive.get_bind_params(eqn.params)
                subfuns = ()
                if isinstance(params, tuple):  # older JAX: (subfuns, params), as its eval_jaxpr
                    subfuns, params = params
                results = eqn.primitive.bind(*subfuns, *(done[id(x)] for x in eqn.in_tracers),
                                             **params)
                results = outs[id(eqn)] = (results if eqn.primitive.multiple_results
                                           else [results])
            done[id(t)] = results[eqn.outvars.index(var)]
            stack.pop()
    return done[id(tracer)]


def nested_constant_error(spec: ParamSpec, tracer: Any, trace: Any = None) -> InitializerError:
    """The error for a constant initializer computed from values that exist only inside a function
    JAX traces within the model: the arguments of an ``sp.scan`` step, an ``sp.cond`` branch, an
    ``sp.remat``, ... (``trace``, JAX's trace of that function, when known), or the values of a
    ``jax.vmap`` or ``jax.grad`` inside the model (``tracer``, one of them)."""
    info = getattr(getattr(trace, "frame", None), "debug_info", None)
    traced_for = getattr(info, "traced_for", None)
    source = getattr(info, "func_src_info", None)
    if traced_for and source:
        where = (f"the arguments of {source}, a function JAX traces for {traced_for} inside the "
                 "model (a step's input, a loop's carry, a branch's operands, ...)")
    else:
        where = (f"values of a JAX transformation inside the model ({type(tracer).__name__}: a "
                 "jax.vmap's mapped input, jax.grad's argument, the arguments of an sp.scan step or "
                 "an sp.cond branch, ...)")
    return InitializerError(
        f"The constant initializer of '{spec.name}' is computed from {where}: they exist only "
        "while that function runs, so init cannot compute the constant without running the "
        "model (TF 1.x refuses a tensor initializer made inside a while_loop or cond: \"use a "
        "lambda as the initializer\").\n"
        f"  asked: a constant of shape {tuple(spec.shape)}, dtype {np.dtype(spec.dtype).name}, "
        f"created at {format_site(spec.site)}\n"
        "  fix: compute the constant outside that function (from Python/NumPy values, or jnp "
        "values that do not depend on the model's inputs) and close over it, or pass a callable "
        "initializer init=lambda key, shape, dtype: ..., which init calls with a key derived from "
        "the init key and the name.")


def _source_input(var, eqns, inputs):
    """An input of the jaxpr that ``var`` is computed from, else None."""
    frontier, seen = [var], set()
    producers = {o: e for e in eqns for o in e.outvars}
    while frontier:
        v = frontier.pop()
        if v in inputs:
            return v
        if v in seen or v not in producers:
            continue
        seen.add(v)
        frontier.extend(x for x in producers[v].invars if not isinstance(x, Literal))
    return None


def initialize(key: jax.Array, specs: Dict[str, ParamSpec],
               flat_draws: bool = True) -> Dict[str, jax.Array]:
    """Run the initializers of ``specs`` (flat, full name -> spec); returns flat name -> array.

    ``flat_draws``: let ``sp.initializers`` draw flat and reshape (same values, cheaper to compile;
    see there), which a caller sharding the outputs turns off.
    """
    with _flat_draws() if flat_draws else contextlib.nullcontext():
        return _initialize(key, specs)


def _initialize(key: jax.Array, specs: Dict[str, ParamSpec]) -> Dict[str, jax.Array]:
    groups: Dict[Tuple[Hashable, Tuple[int, ...], Any], List[str]] = {}
    values: Dict[str, jax.Array] = {}
    identities: Dict[int, Hashable] = {}  # id(initializer) -> its group key (the specs hold them)
    for name, spec in specs.items():
        init = spec.init
        if not callable(init):
            values[name] = jnp.asarray(init, spec.dtype)
            continue
        ident = identities.get(id(init))
        if ident is None:
            ident = identities[id(init)] = _init_identity(init)
        groups.setdefault((ident, spec.shape, spec.dtype), []).append(name)
    batch = _batching_is_exact(key)
    eager = not _staged_out()
    # How the group's draw is made: flat or not, and the PRNG implementation a raw key (uint32
    # words) is read with, set at run time, which a jitted draw of _DRAWS does not see (rbg and
    # unsafe_rbg keys have one shape: a draw traced under one would serve the other). A typed key
    # carries its implementation in its dtype.
    variant = (_FLAT_DRAWS.get(),
               _default_prng_impl() if isinstance(getattr(key, "dtype", None), np.dtype) else None)
    compiled: List[Tuple[Tuple, List[str], Optional[Callable]]] = []
    filled: List[str] = []
    host: List[np.ndarray] = []
    for (ident, shape, dtype), names in groups.items():
        group = (ident, shape, dtype, len(names), variant)
        if eager and group not in _DRAWS and group not in _FILLED:
            fill = _fill_value(specs[names[0]].init, dtype)
            if fill is not None:  # seen for the first time: filled on the host
                if len(_FILLED) >= _DRAWS_MAX:  # oldest out first, as _DRAWS: never this init's
                    try:
                        del _FILLED[next(iter(_FILLED))]
                    except (KeyError, StopIteration, RuntimeError):  # another thread got there first
                        pass
                _FILLED[group] = None
                filled.extend(names)
                host.extend(np.full(shape, fill, dtype) for _ in names)
                continue
        if eager and (len(names) == 1 or batch):
            draw = _DRAWS.get(group)
            if draw is not None or _compilable(specs[names[0]].init, ident):
                compiled.append((group, names, draw))
                continue
        elif eager:  # a key whose draws do not batch exactly (rbg): each name the draw a lone one
            single = (ident, shape, dtype, 1, variant)  # takes, so that its bits do not depend on
            draw = _DRAWS.get(single)                   # the model's other parameters
            if draw is not None or _compilable(specs[names[0]].init, ident):
                compiled.extend((single, [name], draw) for name in names)
                continue
        values.update(_draw_eagerly(key, specs, shape, dtype, names, batch))
    if filled:  # one batched transfer
        values.update(zip(filled, jax.device_put(host)))
    for group, names, draw in compiled:
        drawn = _compiled_draw(key, group, names, specs, draw or _DRAWS.get(group))
        if drawn is None:
            drawn = _draw_eagerly(key, specs, group[1], group[2], names, batch).values()
        values.update(zip(names, drawn))
    return {name: values[name] for name in specs}


# Initializers that ignore the key and fill one value: zeros and ones of both libraries, and the
# closures of their scalar ``constant``s, told apart by code object (their captured value varies).
_FILLS = {_initializers.zeros: 0, _initializers.ones: 1, jax.nn.initializers.zeros: 0,
          jax.nn.initializers.ones: 1}
_SP_CONSTANT = _initializers.constant(0.0).__code__
_JAX_CONSTANT = getattr(jax.nn.initializers.constant(0.0), "__code__", None)
# Floating types JAX takes from ml_dtypes (NumPy kind "V"), which NumPy fills exactly.
_HOST_FLOATS = frozenset(np.dtype(t) for t in (jnp.bfloat16, jnp.float8_e4m3fn, jnp.float8_e5m2))


# The groups (keyed as in _DRAWS) an eager init has filled on the host, bounded like _DRAWS. A group
# seen again is drawn by its compiled call, compiled then and cached: ~50 ms once, then one dispatch
# per init, where a host fill costs a transfer per parameter every time. An init that runs once per
# process (the common case) compiles none of them. A dict used as an ordered set: when full, the
# oldest group goes (clearing it all would make groups filled earlier in the same init be filled
# again, then compiled, one init later than they should).
_FILLED: Dict[Tuple, None] = {}


def _fill_value(init: Any, dtype: Any) -> Any:
    """The scalar ``init(key, shape, dtype)`` fills its whole value with, if it is one of the
    initializers above (else None), so that an eager init fills it with NumPy: a new shape costs
    no XLA compile (a compiled draw of zeros was ~50 ms per shape on 2 CPU cores, one per bias
    shape of a model). Zeros and ones are exact in every dtype; a constant's scalar is the one
    ``jnp.full`` broadcasts, converted by JAX (a scalar op, compiled once per dtype), so the
    filled arrays have the bits of the jitted draw."""
    dtype = np.dtype(dtype)
    if not (dtype.kind in "biuf" or dtype in _HOST_FLOATS):
        return None
    try:
        known = _FILLS.get(init)
    except TypeError:  # an unhashable callable
        return None
    if known is not None:
        return known
    code = getattr(init, "__code__", None)
    if code is None or (code is not _SP_CONSTANT and code is not _JAX_CONSTANT):
        return None
    cells = dict(zip(code.co_freevars, (c.cell_contents for c in init.__closure__)))
    value: Any = cells.get("array" if code is _SP_CONSTANT else "value")
    if cells.get("verify_shape") or np.ndim(value) != 0 or (
            code is _SP_CONSTANT and _initializers._not_exactly_in(value, dtype) is not None):
        return None  # checked or reshaped as written, with its errors (1.5 for int32: TF's)
    if dtype.kind in "iu" and np.issubdtype(np.asarray(value).dtype, np.inexact):
        limits = np.iinfo(dtype)
        if not (np.isfinite(value) and limits.min <= np.real(value) <= limits.max):
            return None  # eager and compiled conversions differ out of range: the compiled draw's
    try:
        if code is _SP_CONSTANT:  # rounded once on the host, as sp's constant itself does
            return np.asarray(value).astype(dtype)
        return np.asarray(jnp.full((), value, dtype))
    except Exception:  # noqa: BLE001 - a value JAX cannot convert: the initializer raises it, named
        return None


def _draw_eagerly(key, specs: Dict[str, ParamSpec], shape: tuple, dtype: Any, names: List[str],
                  batch: bool) -> Dict[str, jax.Array]:
    """The values of ``names`` (one group), the initializer run op by op (or staged, in a trace):
    one vmapped draw where batching is exact, else one draw per name."""
    if len(names) > 1 and batch:
        stacked = _draw_group(key, jnp.asarray(_name_words(names)), specs[names[0]], shape, dtype,
                              len(names))
        return dict(zip(names, _unstack(stacked)))
    return {name: _draw_group(key, _name_words([name]), specs[name], shape, dtype, 1)
            for name in names}


# Initializer modules whose functions are pure: their value depends only on their arguments and on
# what their closures captured. (jax.nn.initializers.zeros and friends say "jax.nn.initializers".)
_PURE_MODULES = frozenset({"jax._src.nn.initializers", "jax.nn.initializers",
                           "scoped_params.initializers"})
_PLAIN_TYPES = (bool, int, float, complex, str, bytes, type(None), np.dtype, np.generic, type)

# (initializer identity, shape, dtype, count, (flat draws, PRNG implementation of a raw key)) -> the
# jitted draw of such a group; bounded, oldest out first (an entry is one small executable).
_DRAWS: Dict[Tuple, Callable] = {}
_DRAWS_MAX = 512


def _compilable(init: Any, ident: Hashable) -> bool:
    """Whether ``init`` may be drawn by a cached compiled call (see the module's docstring)."""
    return type(ident) is tuple and _pure(init, 3)


def _pure(value: Any, depth: int) -> bool:
    if isinstance(value, _PLAIN_TYPES):
        return True
    if type(value) is tuple:
        return all(_pure(v, depth) for v in value)
    if depth == 0 or getattr(value, "__module__", None) not in _PURE_MODULES or not hasattr(
            value, "__code__"):
        return False
    captured = _captured(value)
    return captured is not None and _pure(captured, depth - 1)


def _compiled_draw(key: jax.Array, group: Tuple, names: List[str], specs: Dict[str, ParamSpec],
                   draw: Optional[Callable]):
    """The values of ``names`` (one group: same initializer, shape and dtype) from one jitted call
    taking the init key and the names' hash words: ``draw``, the cached one, or a new one, cached if
    it traces; None if it does not, for the eager path to run the initializer (and raise what it
    raises, naming the parameter)."""
    words = _name_words(names)
    if draw is not None:
        value = draw(key, words)
    else:
        _, shape, dtype, n, _ = group
        # The cached draw keeps the spec: without what it does not draw with (a regularizer or
        # constraint closing over pretrained weights, a sharding), which would outlive the model.
        spec = dataclasses.replace(specs[names[0]], regularizer=None, constraint=None,
                                   sharding=None, partitioner=None)
        draw = jax.jit(lambda key, words: _draw_group(key, words, spec, shape, dtype, n))
        try:
            value = draw(key, words)
        except InitializerError:
            raise
        except Exception:  # noqa: BLE001 - e.g. an initializer that needs concrete values
            return None
        if len(_DRAWS) >= _DRAWS_MAX:
            try:
                del _DRAWS[next(iter(_DRAWS))]
            except (KeyError, StopIteration, RuntimeError):  # another thread got there first
                pass
        _DRAWS[group] = draw
    return [value] if len(names) == 1 else _unstack(value)


def _draw_group(key, words, spec: ParamSpec, shape: tuple, dtype: Any, n: int) -> jax.Array:
    """One parameter's value (``n == 1``), else the stacked values of ``n`` (vmapped); ``words``:
    their names' hash words, one row each."""
    init = spec.init
    if n == 1:
        k = _fold_name(key, words[0])
        return _run(lambda: _host_value(spec, init(k, shape, dtype)), shape, dtype, spec, 1)
    keys = jax.vmap(_fold_name, in_axes=(None, 0))(key, words)
    return _run(lambda: jax.vmap(lambda k: _host_value(spec, init(k, shape, dtype)))(keys),
                (n,) + shape, dtype, spec, n)


def _host_value(spec: ParamSpec, value: Any) -> Any:
    """An initializer's value as JAX takes it: a NumPy copy of an array type JAX does not know (a TF
    eager tensor, from ``lambda key, shape, dtype: tf_init(shape, dtype)``), else ``value`` as it is
    (``_run`` checks it). A graph-mode TF tensor has no value yet: an error naming the parameter."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic)) or not (
            hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__array__")):
        return value
    try:
        return np.asarray(value)  # (copied into a jax.Array by _run, or by vmap)
    except Exception as error:  # noqa: BLE001 - reworded, naming the parameter
        raise _no_value_error(spec, value, error) from error


def _run(draw: Callable[[], Any], shape: tuple, dtype: Any, spec: ParamSpec, n: int) -> jax.Array:
    """``draw()``, the initializer's value for ``spec``, checked against ``shape`` and cast to ``dtype``
    (with ``n > 1``, the vmapped draw of ``spec`` and ``n - 1`` more of its group, ``shape`` their
    stacked shape). Whatever goes wrong names the parameter."""
    try:
        value = draw()
    except _NoValueError:
        raise
    except Exception as error:  # noqa: BLE001 - re-raised: reworded, or with a note naming the parameter
        if _tf1_convention(spec.init):
            raise _tf1_convention_error(spec, error) from error
        if hasattr(error, "add_note"):  # Python >= 3.11
            others = f" and {n - 1} more of that shape" if n > 1 else ""
            layers = getattr(spec.init, "stacked_layers", None)
            called = tuple(spec.shape)[1:] if layers else tuple(spec.shape)
            per_layer = f" for each of the {layers} layers of its sp.layer_stack" if layers else ""
            error.add_note(
                f"scoped_params: raised by the initializer of '{spec.name}'{others}, called as "
                f"init(key, {called}, {np.dtype(spec.dtype).name}){per_layer}; '{spec.name}' was "
                f"created at {format_site(spec.site)}.")
        raise
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise _not_an_array_error(spec, value)
    if value.dtype != dtype and _is_prng_key(value.dtype):  # before the shape: its data has another
        raise _prng_key_error(spec, value.dtype)
    if tuple(value.shape) != tuple(shape):
        extra = ("\n  note: it takes (shape, dtype, partition_info), TF 1.x's calling convention"
                 if _tf1_convention(spec.init) else "")
        got = tuple(value.shape)[1:] if n > 1 else tuple(value.shape)  # one parameter's shape
        expected = tuple(spec.shape)
        per_layer = ""
        layers = getattr(spec.init, "stacked_layers", None)
        if layers and got[:1] == (layers,):  # a layer_stack parameter: one layer's shapes
            got, expected = got[1:], expected[1:]
            per_layer = (f" for each of the {layers} layers of its sp.layer_stack (the parameter "
                         f"holds them stacked, shape {tuple(spec.shape)})")
        raise InitializerError(
            f"The initializer of '{spec.name}' returned shape {got}, expected "
            f"{expected}{per_layer}.{extra}\n"
            "  fix: initializers are called as init(key, shape, dtype) and must return that shape."
        )
    if value.dtype != dtype:
        if _kind(value.dtype) > _kind(dtype):
            raise _lossy_cast_error(spec, value.dtype)
        # A cast within a kind (float32 -> bfloat16, float64 -> float32) or up one (int -> float)
        # is kept: JAX users rely on it (an initializer that draws in float32 for a bfloat16
        # parameter, a NumPy float64 constant without x64).
        value = value.astype(dtype)
    elif isinstance(value, jax.Array) and jax.typeof(value).weak_type:
        # A weakly typed value (jnp.full(shape, 3.0)) is made strong, as TF's variables and
        # set_state's values are: a weak parameter would promote to its operands' dtype (bfloat16
        # under mixed precision) until the first optimizer step makes it strong, and jit(apply)
        # would compile twice.
        value = jax.lax.convert_element_type(value, dtype)
    # An initializer may compute with NumPy (np.ones(shape, dtype)): params hold jax.Arrays, copies
    # (an array the initializer keeps, e.g. a pretrained table, stays the caller's own).
    return value if isinstance(value, jax.Array) else jnp.array(value)


def _is_prng_key(dtype: Any) -> bool:
    try:
        return bool(jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key))
    except TypeError:  # not a dtype JAX reads: left to the cast to report
        return False


def _prng_key_error(spec: ParamSpec, found: Any) -> InitializerError:
    """The error for an initializer that returned typed PRNG keys of dtype ``found`` (as
    ``_constant_init_dtype`` words it for a key given as the constant initializer)."""
    layers = getattr(spec.init, "stacked_layers", None)
    called = tuple(spec.shape)[1:] if layers else tuple(spec.shape)  # what the model asked for
    try:
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(called, found))
        shape, kind = tuple(data.shape), np.dtype(data.dtype).name
        described = f"{kind}[{','.join(map(str, shape))}]"
    except Exception:  # noqa: BLE001 - an implementation this JAX cannot describe: said generically
        shape, kind, described = None, "uint32", "uint32"
    short = spec.name.rsplit("/", 1)[-1]
    getter = "get_state" if spec.kind == "state" else "get_param"
    create = f"shape {shape} and dtype=jnp.{kind}" if shape is not None else f"dtype=jnp.{kind}"
    return InitializerError(
        f"The initializer of '{spec.name}' ({_name_of(spec.init, 'a lambda')}) returned a typed "
        f"PRNG key ({found}); parameters and state hold arrays of numbers.\n"
        f"  asked: shape {called}, dtype {np.dtype(spec.dtype).name}, created at "
        f"{format_site(spec.site)}\n"
        f"  fix: create it with {create} and return the key's data, jax.random.key_data(key) "
        f"({described}; another dtype would change its bits), and rebuild the key where it is "
        f"read: jax.random.wrap_key_data(sp.{getter}({short!r}, ...)); for a new key in each "
        "call, call sp.next_rng_key() in the model instead.")


def _kind(dtype: Any) -> int:
    """bool < integers < floats < complex: a cast to a lower kind loses the value, not precision."""
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return 3
    if jnp.issubdtype(dtype, jnp.floating):
        return 2
    if jnp.issubdtype(dtype, jnp.integer):
        return 1
    return 0 if jnp.issubdtype(dtype, jnp.bool_) else -1  # -1: key arrays and the like, cast as asked


def _lossy_cast_error(spec: ParamSpec, found: Any) -> InitializerError:
    asked = np.dtype(spec.dtype).name
    return InitializerError(
        f"The initializer of '{spec.name}' ({_name_of(spec.init, 'a lambda')}) returned dtype "
        f"{np.dtype(found).name} for a parameter of dtype {asked}: casting would change its values "
        f"(truncate them), not only their precision (TF: Tensor conversion requested dtype {asked} "
        f"for Tensor with dtype {np.dtype(found).name}).\n"
        f"  asked: shape {tuple(spec.shape)}, dtype {asked}, created at {format_site(spec.site)}\n"
        f"  fix: return an array of the dtype the initializer is called with (init(key, shape, "
        f"dtype)), rounding explicitly if that is meant, or create the parameter with "
        f"dtype={np.dtype(found).name}.")


def _tf1_convention(init: Any) -> bool:
    """Whether ``init`` looks like a TF 1.x initializer, ``init(shape, dtype=None, partition_info=None)``
    (also Keras's ``__call__(shape, dtype=None, **kwargs)``): its first parameter is ``shape``."""
    try:
        names = list(inspect.signature(init).parameters)
    except (TypeError, ValueError):
        return False
    return (bool(names) and names[0] == "shape") or "partition_info" in names


def _name_of(init: Any, otherwise: str, code: bool = False) -> str:
    """``init``'s name if it is one a user could type (not ``<lambda>``), else ``otherwise``; an
    initializer object (TF's ``init_ops.Constant``, ...) is named by its class, unless the name
    goes into code (``code``), which needs the object's own name."""
    name = getattr(init, "__name__", None)
    if name is None and not code and not isinstance(init, functools.partial):
        name = type(init).__name__
    return name if name and name.isidentifier() else otherwise


def _tf_equivalent(init: Any) -> Optional[str]:
    """``sp.initializers.<Name>(...)`` for a TF/Keras initializer object ``init`` is, or that the
    function ``init`` uses (``lambda key, shape, dtype: tf_init(shape, dtype)``, ``tf_init`` a
    captured or a global name); else None."""
    candidates: Tuple[Any, ...] = (init,)
    code = getattr(init, "__code__", None)
    if code is not None:
        captured = _captured(init)
        names = getattr(init, "__globals__", {})
        candidates += (captured[0] if captured else ()) + tuple(
            names[n] for n in code.co_names if n in names)
    for candidate in candidates:
        if type(candidate).__module__.split(".", 1)[0] in TF_PACKAGES:
            found = _initializers._keras_equivalent(candidate)
            if found is not None:
                return found
    return None


def _first_line(error: Exception, limit: int = 160) -> str:
    text = str(error).strip().split("\n", 1)[0]
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _tf1_convention_error(spec: ParamSpec, error: Exception) -> InitializerError:
    ours = _tf_equivalent(spec.init)
    what = _name_of(spec.init, "a lambda")
    if ours is not None:  # TF's own initializers: ours works eagerly and in graph mode alike
        fix = (f"use {ours}, TF's {what} in this convention; sp.initializers has TF 1.x's "
               "initializers, with their names and defaults.")
    else:  # a wrapped TF tensor is taken only while TF runs eagerly: graph-mode ones have no value
        fix = ("a deterministic one can be wrapped, init=lambda key, shape, dtype: "
               f"{_name_of(spec.init, 'tf_init', code=True)}(shape, dtype) (returning a NumPy "
               "array, or a TF tensor while TF runs eagerly); a random one should draw from the key "
               "it is given (e.g. jax.random.normal(key, shape, dtype)); sp.initializers has TF "
               "1.x's initializers, with their names and defaults, in this convention.")
    return InitializerError(
        f"The initializer of '{spec.name}' ({what}) takes (shape, dtype, partition_info), TF 1.x's "
        "calling convention, but scoped_params calls initializers as init(key, shape, dtype).\n"
        f"  asked: shape {tuple(spec.shape)}, dtype {np.dtype(spec.dtype).name}, created at "
        f"{format_site(spec.site)}\n"
        f"  found: called as init(key, shape, dtype) it raised {type(error).__name__}: "
        f"{_first_line(error)}\n"
        f"  fix: {fix}"
    )


class _NoValueError(InitializerError):
    """An initializer's value that no array can be made of (raised inside its draw, so that the
    draw's handler lets it through as it is)."""


def _no_value_error(spec: ParamSpec, value: Any, error: Exception) -> InitializerError:
    found = type(value).__name__
    if "tensorflow" in type(value).__module__:
        found = f"a graph-mode TF tensor ({found}), which has no value until a session runs it"
    ours = _tf_equivalent(spec.init)
    return _NoValueError(
        f"The initializer of '{spec.name}' ({_name_of(spec.init, 'a lambda')}) returned {found}: "
        f"JAX cannot hold it ({type(error).__name__}: {_first_line(error)}).\n"
        f"  asked: shape {tuple(spec.shape)}, dtype {np.dtype(spec.dtype).name}, created at "
        f"{format_site(spec.site)}\n"
        "  fix: " + (f"use {ours}, the TF initializer in this convention, as init=." if ours else
                     "use sp.initializers' equivalent of the TF initializer (it has TF 1.x's, with "
                     "their names and defaults), or return a jax or NumPy array.")
    )


def _not_an_array_error(spec: ParamSpec, value: Any) -> InitializerError:
    what = _name_of(spec.init, "a lambda")
    if callable(value):
        return InitializerError(
            f"The initializer of '{spec.name}' ({what}) returned a function, not an array: it makes "
            "initializers rather than being one.\n"
            f"  asked: shape {tuple(spec.shape)}, dtype {np.dtype(spec.dtype).name}, created at "
            f"{format_site(spec.site)}\n"
            "  fix: call it to get the initializer, e.g. "
            f"init={_name_of(spec.init, 'make_init', code=True)}() "
            "(TF 1.x accepted an initializer class and instantiated it; pass the instance here)."
        )
    return InitializerError(
        f"The initializer of '{spec.name}' ({what}) returned {type(value).__name__}, not an array.\n"
        f"  asked: shape {tuple(spec.shape)}, dtype {np.dtype(spec.dtype).name}, created at "
        f"{format_site(spec.site)}\n"
        "  fix: initializers are called as init(key, shape, dtype) and must return an array of that "
        "shape (a jax or NumPy array)."
    )


def _default_prng_impl() -> str:
    """The PRNG implementation a raw key is read with now (``jax_default_prng_impl``)."""
    return jax.config.jax_default_prng_impl  # type: ignore[attr-defined]  # JAX sets flags at run time


def _batching_is_exact(key: jax.Array) -> bool:
    """Whether a vmapped draw gives each key what a draw with that key alone gives: true of
    threefry (JAX's default), not of the rbg generators, whose batched bits differ. Without it a
    value would depend on which other parameters share its initializer and shape."""
    try:
        return str(jax.random.key_impl(key)) == "threefry2x32"
    except (TypeError, ValueError):
        return False


def _staged_out() -> bool:
    """Whether ``init``'s draws are being staged out (``jax.jit(init)``, ``make_jaxpr``, ...): then
    they join that program. Else they run now, in compiled calls, also under ``jax.vmap`` (an
    ensemble's ``vmap(init)`` over keys): the compiled draw runs batched and gives each member the
    bits ``init`` (and ``jit(vmap(init))``) gives its key, where op-by-op batched draws could be an
    ULP off (normal draws' ``erf_inv``)."""
    if _scope._EAGER is None:  # pragma: no cover - jax versions where traces cannot be told apart
        return True
    trace = _scope._TRACE.value
    while trace is not None and trace is not _scope._EAGER:
        if "Jaxpr" in type(trace).__name__:
            return True
        trace = getattr(trace, "parent_trace", None)
    return False


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _unstack(stacked: jax.Array) -> List[jax.Array]:
    if _is_traced(stacked):
        return _unstack_staged(stacked)
    if not _on_cpu(stacked):
        return [stacked[i] for i in range(stacked.shape[0])]
    # On the CPU backend one host view and one batched device_put beat n slicing dispatches ~10x.
    host = np.asarray(stacked)
    # Committed only if the stack was (a committed key): a parameter committed to one device would
    # refuse to meet a sharded input in a jitted apply, where JAX's own initializers' outputs move
    return jax.device_put(list(host), list(stacked.devices())[0] if stacked.committed else None)


# XLA CPU never fuses a constant of more than 10,000 bytes into a kernel; this many int32 words is
# just over that.
_UNFUSED_INDEX_WORDS = 2504


def _unstack_staged(stacked: jax.Array) -> List[jax.Array]:
    """``[stacked[i] for i in range(n)]`` in a staged-out init (``jax.jit(model.init)``).

    A plain slice bakes its offset into its kernel, and XLA CPU compiles each kernel separately
    (5-10 ms each): for a 40-deep conv stack the 40 slices cost more compile time than the grouped
    draw itself. Here every output is the same dynamic-slice computation applied to different index
    operands, so XLA compiles one kernel and reuses it (jit(init) of that stack: 660 -> 350 ms).
    An index stays an operand only if XLA can neither fold it (the optimization barrier) nor fuse
    it (XLA CPU fuses constants up to 10,000 bytes), so each is the first word of its own 10 kB
    array; index ``j*c + k`` adds two of them, so ``2*sqrt(n)`` arrays serve ``n`` outputs.
    Values are exactly those of plain slices. Elsewhere than on CPU (other fusion rules) it is not
    used; should XLA's rules change, only the compile-time gain is lost.
    """
    n = stacked.shape[0]
    if n < 4 or jax.default_backend() != "cpu":
        return [stacked[i] for i in range(n)]
    cols = math.isqrt(n - 1) + 1
    rows = -(-n // cols)
    words = _UNFUSED_INDEX_WORDS
    row_base, col_base = jax.lax.optimization_barrier((
        tuple(np.arange(j * cols, j * cols + words, dtype=np.int32) for j in range(rows)),
        tuple(np.arange(k, k + words, dtype=np.int32) for k in range(cols))))
    return [jax.lax.dynamic_index_in_dim(stacked, row_base[i // cols][0] + col_base[i % cols][0],
                                         keepdims=False) for i in range(n)]


def _on_cpu(x: jax.Array) -> bool:
    try:
        return all(d.platform == "cpu" for d in x.devices())
    except Exception:  # noqa: BLE001 - exotic array types: take the generic path
        return False
