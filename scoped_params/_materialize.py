"""Turn the specs an abstract trace collected into arrays: only the initializers run.

A parameter's value depends only on ``(key, full name, shape, dtype, initializer)``: its key is
``fold_in`` of the init key with a 64-bit hash of the full name, never a split that depends on
creation order. Parameters that share initializer, shape and dtype are initialized by one vmapped
call, so 4,000 same-shape parameters cost about one initializer call, not 4,000 dispatches.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Any, Dict, Hashable, List

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

from ._errors import InitializerError
from ._spec import ParamSpec
from .initializers import _flat_draws


def name_hash(name: str) -> np.ndarray:
    """Two uint32 words of a stable (unsalted) hash of a full name."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return np.frombuffer(digest, dtype=np.uint32)


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
    if code is None:
        return id(init)
    cells = init.__closure__ or ()
    try:
        captured = tuple(c.cell_contents for c in cells)
        ident = (code, captured, init.__defaults__)
        hash(ident)
        return ident
    except (TypeError, ValueError):  # unhashable or empty cells
        return id(init)


def resolve_traced_constants(closed_jaxpr, names: List[str]) -> Dict[str, Any]:
    """Evaluate constant initializers that were built with jnp inside the traced function.

    Only the equations the constants depend on run (a backward dead-code pass over the jaxpr), so
    the model's arithmetic never does. A constant computed from the model's inputs is an error.
    """
    jaxpr = closed_jaxpr.jaxpr
    needed = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            kept.append(eqn)
            needed.update(v for v in eqn.invars if not isinstance(v, Literal))
    inputs = set(jaxpr.invars)
    bad = [n for n, v in zip(names, jaxpr.outvars) if not isinstance(v, Literal) and _depends_on(
        v, kept, inputs)]
    if bad:
        raise InitializerError(
            f"The constant initializer of {', '.join(repr(b) for b in bad)} depends on the model's "
            "inputs or on a random key (e.g. sp.next_rng_key()), so init cannot compute it without "
            "running the model.\n"
            "  fix: build the constant from Python/NumPy values, or pass a callable initializer "
            "init(key, shape, dtype), which receives a key derived from the init key and the name."
        )
    pruned = jaxpr.replace(invars=[], eqns=kept[::-1], outvars=list(jaxpr.outvars))
    values = jax.core.eval_jaxpr(pruned, closed_jaxpr.consts)
    return {n: jnp.asarray(v) for n, v in zip(names, values)}


def _depends_on(var, eqns, inputs) -> bool:
    if var in inputs:
        return True
    frontier, seen = {var}, set()
    producers = {o: e for e in eqns for o in e.outvars}
    while frontier:
        v = frontier.pop()
        if v in inputs:
            return True
        if v in seen or v not in producers:
            continue
        seen.add(v)
        frontier.update(x for x in producers[v].invars if not isinstance(x, Literal))
    return False


def initialize(key: jax.Array, specs: Dict[str, ParamSpec],
               flat_draws: bool = True) -> Dict[str, jax.Array]:
    """Run the initializers of ``specs`` (flat, full name -> spec); returns flat name -> array.

    ``flat_draws``: let ``sp.initializers`` draw flat and reshape (same values, cheaper to compile;
    see there), which a caller sharding the outputs turns off.
    """
    with _flat_draws() if flat_draws else contextlib.nullcontext():
        return _initialize(key, specs)


def _initialize(key: jax.Array, specs: Dict[str, ParamSpec]) -> Dict[str, jax.Array]:
    groups: Dict[Hashable, List[str]] = {}
    values: Dict[str, jax.Array] = {}
    for name, spec in specs.items():
        if not callable(spec.init):
            values[name] = jnp.asarray(spec.init, spec.dtype)
            continue
        groups.setdefault((_init_identity(spec.init), spec.shape, spec.dtype), []).append(name)
    batch = _batching_is_exact(key)
    for (_, shape, dtype), names in groups.items():
        init = specs[names[0]].init
        if len(names) == 1 or not batch:
            for name in names:
                values[name] = _checked(init(param_key(key, name), shape, dtype), name, shape,
                                        dtype)
            continue
        words = jnp.asarray(np.stack([name_hash(n) for n in names]))
        keys = jax.vmap(_fold_name, in_axes=(None, 0))(key, words)
        stacked = jax.vmap(lambda k: init(k, shape, dtype))(keys)
        stacked = _checked(stacked, names[0], (len(names),) + shape, dtype)
        values.update(zip(names, _unstack(stacked)))
    return {name: values[name] for name in specs}


def _batching_is_exact(key: jax.Array) -> bool:
    """Whether a vmapped draw gives each key what a draw with that key alone gives: true of
    threefry (JAX's default), not of the rbg generators, whose batched bits differ. Without it a
    value would depend on which other parameters share its initializer and shape."""
    try:
        return str(jax.random.key_impl(key)) == "threefry2x32"
    except (TypeError, ValueError):
        return False


def _checked(value, name, shape, dtype):
    if tuple(value.shape) != tuple(shape):
        raise InitializerError(
            f"The initializer of '{name}' returned shape {tuple(value.shape)}, expected {tuple(shape)}.\n"
            "  fix: initializers are called as init(key, shape, dtype) and must return that shape."
        )
    if value.dtype != dtype:
        value = value.astype(dtype)
    return value


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _unstack(stacked: jax.Array) -> List[jax.Array]:
    if _is_traced(stacked):
        return _unstack_staged(stacked)
    if not _on_cpu(stacked):
        return [stacked[i] for i in range(stacked.shape[0])]
    # On the CPU backend one host view and one batched device_put beat n slicing dispatches ~10x.
    host = np.asarray(stacked)
    return jax.device_put(list(host), list(stacked.devices())[0])


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
