"""``transform`` and ``transform_with_state``: a model function becomes pure ``init`` and ``apply``."""

from __future__ import annotations

import collections
import dataclasses
import functools
import gc
import inspect
import threading
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _frame, _scope
from ._errors import KeyArgumentError, NameCollisionError, ParamsTypeError, bad_key_error
from ._materialize import initialize, nested_constant_error, resolve_traced_constants
from ._params import STATE, ApplyStore, InitStore
from ._spec import ParamSpec
from ._tree import _not_a_tree, flatten, given_twice_error, refuses_call, unflatten

_current_frame = _frame._FRAME.get
_set_frame = _frame._FRAME.set
_EAGER = _scope._EAGER  # the trace of eager execution (frame.trace is it in an eager apply)

# The init key is folded with this before it feeds next_rng_key(), so parameter keys (folded with
# name hashes) and the model's own random keys never coincide.
_RNG_STREAM = 0x5C0FED


def _is_array_arg(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct, jax.core.Tracer))


def _is_traced_arg(x: Any) -> bool:
    """Whether ``init`` traces a leaf of the model's arguments abstractly: arrays (and their
    ``jax.ShapeDtypeStruct``s). A NumPy scalar (``np.bool_(True)``, ``np.int64(3)``) stays concrete
    as the Python number does, so that it can steer the model's Python control flow (an eager
    ``apply`` gets it concrete too; ``jax.jit`` would trace it, as it traces any NumPy value)."""
    return isinstance(x, (jax.Array, np.ndarray, jax.ShapeDtypeStruct, jax.core.Tracer))


class _Split:
    """Arguments split into array leaves (traced abstractly) and everything else (kept concrete).

    The model gets copies of the arguments' lists, tuples and dicts (what it appends or pops there
    in init's abstract run stays there), with the dicts' keys in the caller's order, as an eager
    ``apply`` passes them: JAX's flattening sorts them, and a model looping over a config dict would
    make its layers in another order in init than in apply.
    """

    def __init__(self, args: tuple, kwargs: dict):
        self.given = (args, kwargs)
        leaves, self.treedef = jax.tree_util.tree_flatten((args, kwargs))
        self.leaves = leaves
        self.dynamic_index = [i for i, x in enumerate(leaves) if _is_traced_arg(x)]

    def dynamic(self) -> list:
        return [self.leaves[i] for i in self.dynamic_index]

    def rebuild(self, dynamic: list) -> Tuple[tuple, dict]:
        leaves = list(self.leaves)
        for i, x in zip(self.dynamic_index, dynamic):
            leaves[i] = x
        return in_given_order(self.given, jax.tree_util.tree_unflatten(self.treedef, leaves))


def in_given_order(given: Any, rebuilt: Any) -> Any:
    """``rebuilt`` (``given``'s pytree, other leaves) with its dicts' keys in ``given``'s order, as far
    down as dicts, lists and tuples nest (other containers as JAX rebuilt them)."""
    try:
        return _in_given_order(given, rebuilt)
    except RecursionError:  # nested deeper than Python recurses: JAX's order
        return rebuilt


def _in_given_order(given: Any, rebuilt: Any) -> Any:
    kind = type(given)
    if kind is dict:
        return {k: _in_given_order(v, rebuilt[k]) for k, v in given.items()}
    if kind is list or kind is tuple:
        return kind(_in_given_order(a, b) for a, b in zip(given, rebuilt))
    if kind is collections.OrderedDict or kind is collections.defaultdict:
        items = [(k, _in_given_order(v, rebuilt[k])) for k, v in given.items()]
        return (collections.OrderedDict(items) if kind is collections.OrderedDict
                else collections.defaultdict(given.default_factory, items))
    if isinstance(given, tuple) and hasattr(kind, "_fields"):  # a namedtuple
        return kind(*(_in_given_order(a, b) for a, b in zip(given, rebuilt)))
    return rebuilt  # a leaf, None, another pytree


class _CollectorPaused:
    """Cyclic garbage collection off while an ``init``/``specs`` call, or an ``apply`` that JAX traces
    (under ``jit``, ``grad``, ``vmap``, ...), runs; then as it was.

    Tracing a model builds its whole jaxpr: tens of objects per op, alive until the trace ends. With
    the collector on, they fill the young generations and each collection scans them again; with
    thousands of ops full collections of the process's heap follow: a fifth of a 4,000-parameter
    init, a quarter of the ``jit(...).lower`` of 4,000 tiny layers (three full collections, in any
    framework). Nearly all of them are freed by reference counting when the call returns, so pausing
    the collector skips that work rather than deferring it. An eager ``apply`` (ops run one by one,
    nothing kept) is not paused. Calls may overlap (threads, an ``init`` inside a model): the
    collector comes back on when the last one ends, and only if it was on when the first began.
    """

    _lock = threading.Lock()
    _depth = 0
    _was_enabled = False

    @staticmethod
    def pause() -> bool:
        cls = _CollectorPaused
        with cls._lock:
            if cls._depth == 0:
                cls._was_enabled = gc.isenabled()
                gc.disable()
            cls._depth += 1
        return True

    @staticmethod
    def resume() -> None:
        cls = _CollectorPaused
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0 and cls._was_enabled:
                gc.enable()

    def __enter__(self) -> None:
        _CollectorPaused.pause()

    def __exit__(self, *exc_info) -> None:
        _CollectorPaused.resume()


def as_key(key: Any) -> Any:
    """``key``, or a seed (a Python, NumPy or 0-d JAX integer) made a key, as a convenience (apply's
    ``rng=`` takes a seed too: ``_frame.next_rng_key``, with the same ``_frame.seed_key``)."""
    made = _frame.seed_key(key)
    return key if made is None else made


def _as_key_struct(key: Any) -> Any:
    return key if _is_array_arg(key) else np.asarray(key)


def _trace_specs(fn: Callable, key: Any, args: tuple, kwargs: dict, with_state: bool):
    """Run ``fn`` abstractly; return (InitStore with every spec, flat map of traced-constant values)."""
    split = _Split(args, kwargs)
    stores = []

    def traced(traced_key, dynamic):
        store = InitStore()
        store.begin()
        try:
            rng = jax.random.fold_in(traced_key, _RNG_STREAM)
        except (TypeError, ValueError) as e:  # JAX's "invalid PRNG key data", which names no argument
            raise bad_key_error(key, e, apply=False) from None
        frame = _frame.Frame(_frame.INIT, store, with_state, rng=rng)
        outer = _frame.install(frame)
        try:
            a, k = split.rebuild(dynamic)
            fn(*a, **k)
        finally:
            _frame.uninstall(outer)
        # Constants built with jnp inside fn are tracers here; return them to evaluate afterwards.
        # (Those built inside an sp.scan, sp.cond, ... were rebuilt here as its function returned;
        # one still of another trace comes from a jax.vmap, jax.grad, ... inside the model.)
        here = _scope._TRACE.value
        specs = store.specs
        names = [n for n, s in specs.items() if isinstance(s.init, jax.core.Tracer)]
        for name in names:
            if specs[name].init._trace is not here:
                raise nested_constant_error(specs[name], specs[name].init)
        outputs = [specs[name].init for name in names]
        # The store outlives the trace: it keeps none of its tracers (jax.checking_leaks would find
        # them), only the specs, each traced constant's init filled in from the outputs afterwards.
        for name in names:
            specs[name] = dataclasses.replace(specs[name], init=None)
        store.values.clear()
        store.pools.clear()
        store.written.clear()
        store.root = None
        stores.append((store, names))
        return outputs

    closed = jax.make_jaxpr(traced)(_as_key_struct(key), split.dynamic())
    store, traced_names = stores[-1]
    constants = resolve_traced_constants(closed, traced_names, store.arg_names) if traced_names else {}
    return store, constants


def _finalize_specs(store: InitStore, constants: Dict[str, Any]) -> Dict[str, ParamSpec]:
    specs = dict(store.specs)
    for name, value in constants.items():
        specs[name] = dataclasses.replace(specs[name], init=value)
    return specs


def _split_kinds(flat: Dict[str, Any], specs: Dict[str, ParamSpec]):
    params = {n: v for n, v in flat.items() if specs[n].kind != STATE}
    state = {n: v for n, v in flat.items() if specs[n].kind == STATE}
    return params, state


def _input_tree(tree: Any, what: str, with_state: bool = False) -> Dict[str, Any]:
    """The nested dict ``apply`` was given (``None`` for none; a mapping becomes a dict)."""
    if not isinstance(tree, dict):
        if tree is None:
            return {}
        # Not a dict: an error path, but for other mappings. The (params, state) pair init returns
        # is told first: dict() would read two dicts of two keys each as two key-value pairs.
        asked = f"apply expected {what} as a nested dict of arrays (what init returned)"
        fix = f"pass the {what} init returned (or sp.unflatten(flat))"
        if isinstance(tree, tuple) and len(tree) == 2 and all(isinstance(t, Mapping) for t in tree):
            raise _not_a_tree(tree, asked, _PAIR_FIX if with_state else _PAIR_FIX_STATELESS) from None
        if what == "state" and hasattr(tree, "shape") and hasattr(tree, "dtype"):
            raise ParamsTypeError(
                f"{asked}, got an array of shape {tuple(tree.shape)}: transform_with_state's apply is "
                "apply(params, state, *args), so this is probably the model's first input, and the "
                "state was left out.\n  fix: out, new_state = model.apply(params, state, x, ...), "
                "with the state init returned (params, state = model.init(key, x, ...)).")
        try:
            tree = dict(tree)
        except (TypeError, ValueError):
            raise _not_a_tree(tree, asked, fix, fix) from None
    return tree


# What to do with the (params, state) pair of a transform_with_state model's init passed as params.
_PAIR_FIX = ("unpack it: `params, state = model.init(key, ...)`, then call "
             "model.apply(params, state, *args) (it returns (out, new_state))")
_PAIR_FIX_STATELESS = ("pass the params alone: `params, state = ...init(key, ...)`, then "
                       "model.apply(params, *args); a model with state is built with "
                       "sp.transform_with_state and applied as model.apply(params, state, *args)")


class Transformed:
    """A model function turned into pure functions: ``init``, ``apply``, ``specs``.

    Unpacks as ``init, apply = sp.transform(fn)``.
    """

    def __init__(self, fn: Callable, with_state: bool):
        kind = ("an async function" if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
                else "a generator function" if inspect.isgeneratorfunction(fn) else None)
        if kind is not None:
            api = "transform_with_state" if with_state else "transform"
            raise TypeError(
                f"sp.{api}: {getattr(fn, '__qualname__', fn)!r} is {kind}: calling it only makes "
                f"{'a coroutine' if 'async' in kind else 'a generator'}, which runs the model later, "
                "outside init/apply (init would find no parameters).\n"
                "  fix: transform a plain function that runs the model and returns its output; "
                "await or iterate outside the model.")
        self._fn = fn
        self._with_state = with_state
        functools.update_wrapper(self, fn, updated=())  # type: ignore[arg-type]
        # Bound once: JAX caches a jitted function's traces by the function object, and a method
        # bound anew at each access (`jax.jit(model.apply)(...)` written in a loop) is a new one.
        # Bound to a twin holding only fn: bound to self, they would make the model a reference
        # cycle, freed (with whatever fn captured) only by the next garbage collection.
        # (A subclass's overrides are its own: bound to self, as methods.)
        twin = object.__new__(Transformed) if type(self) is Transformed else self
        if twin is not self:
            twin._fn, twin._with_state = fn, with_state
            functools.update_wrapper(twin, fn, updated=())  # type: ignore[arg-type]
        self.init = twin.init  # type: ignore[method-assign]
        self.apply = twin.apply  # type: ignore[method-assign]
        self.apply_with_intermediates = twin.apply_with_intermediates  # type: ignore[method-assign]

    def __iter__(self) -> Iterator[Callable]:
        yield self.init
        yield self.apply

    def __repr__(self) -> str:
        kind = "transform_with_state" if self._with_state else "transform"
        return f"<sp.{kind}({getattr(self._fn, '__qualname__', self._fn)!r})>"

    # -- init / specs ----------------------------------------------------------------------------

    def init(self, key: jax.Array, /, *args: Any, **kwargs: Any):
        """Trace ``fn`` abstractly, then run only the initializers.

        Array arguments may be arrays or ``jax.ShapeDtypeStruct``s; other arguments (bools, numbers,
        NumPy scalars, strings, configs) stay concrete. ``key`` is positional-only: a model keyword
        argument named ``key`` reaches the model. ``rng=`` is refused: it is apply's own keyword,
        which never reaches the model. Returns ``params`` (``transform``) or ``(params, state)``
        (``transform_with_state``), each a nested dict keyed by scope components. The cyclic garbage
        collector is paused for the call (the trace's objects are freed by reference counting).

        The model runs on copies of the arguments' lists, tuples and dicts, the dicts' keys in the
        caller's order (as an eager ``apply`` passes them). ``jax.jit`` and ``jax.vmap`` of ``init``
        or ``apply`` sort a dict argument's keys, as JAX does for any function: pass a config whose
        order makes layers as an ``OrderedDict`` (kept in order), or close over it.
        """
        if "rng" in kwargs:
            raise _rng_given_error("init")
        key = as_key(key)
        if not _is_array_arg(key):  # e.g. a string: JAX would not even trace it (arrays: _trace_specs)
            raise bad_key_error(key, None, apply=False)
        with _CollectorPaused():
            store, constants = _trace_specs(self._fn, key, args, kwargs, self._with_state)
            specs = _finalize_specs(store, constants)
            values = initialize(key, specs)
        params, state = _split_kinds(values, specs)
        if self._with_state:
            return unflatten(params), unflatten(state)
        return unflatten(params)

    def specs(self, *args: Any, **kwargs: Any):
        """Every parameter's ``ParamSpec`` (name, shape, dtype, initializer, trainable, collections,
        regularizer, sharding) from an abstract trace, allocating nothing.

        Returns a nested dict shaped like ``params`` (``(params_specs, state_specs)`` for
        ``transform_with_state``).
        """
        if "rng" in kwargs:
            raise _rng_given_error("specs")
        key = _abstract_key(_default_prng_impl())
        with _CollectorPaused():
            try:
                store, constants = _trace_specs(self._fn, key, args, kwargs, self._with_state)
            except Exception as error:
                refused = _key_given_to_specs(self._fn, args, kwargs)
                if refused:
                    raise KeyArgumentError(
                        "model.specs got a random key (or seed) first, by init's habit, and the "
                        f"model cannot take it: {error}.\n"
                        "  asked: model.specs(key, *args)\n"
                        "  fix: drop the key: model.specs(*args), with the model's arguments only "
                        "(specs draws no random numbers: there is no key to pass).") from error
                if refused is False:  # the model took it and failed: its error, with a hint
                    error.add_note(
                        "  note: model.specs got a random key first; if it was passed by init's "
                        "habit, drop it: model.specs(*args) (specs draws no random numbers).")
                raise
            specs = _finalize_specs(store, constants)
        params, state = _split_kinds(specs, specs)
        if self._with_state:
            return unflatten(params), unflatten(state)
        return unflatten(params)

    # -- apply -----------------------------------------------------------------------------------

    def _run(self, params, state, args, kwargs, rng, records):
        tree = _input_tree(params, "params", self._with_state)  # checked first: init's pair
        try:
            flat_state = flatten(_input_tree(state, "state")) if self._with_state else {}
        except NameCollisionError as error:  # a name spelled twice: named as the state's
            raise _state_given_twice(error) from None
        store = ApplyStore(tree, flat_state)
        frame = _frame.Frame(_frame.APPLY, store, self._with_state, rng=rng, records=records)
        outer = _frame.install(frame)
        paused = frame.trace is not _EAGER and _CollectorPaused.pause()
        names = _scope.names_now() if paused else None
        try:
            out = self._fn(*args, **kwargs)
        finally:
            _frame.uninstall(outer)
            if paused:
                _scope.restore_names(names)
                _CollectorPaused.resume()
        if self._with_state:
            return out, unflatten(store.state)
        return out

    def apply(self, params, /, *args: Any, rng: Optional[jax.Array] = None, **kwargs: Any):
        """Run ``fn`` with ``params``: pure, never creates a parameter; jit/grad/vmap it freely.

        ``transform``: ``apply(params, *args, rng=None, **kwargs) -> out``.
        ``transform_with_state``: ``apply(params, state, *args, rng=None, **kwargs) -> (out, new_state)``.
        ``rng`` (for ``sp.next_rng_key``) is a key or, as ``init``'s key, an int seed. It is apply's
        own keyword and never reaches the model: a model keyword argument named ``rng`` cannot be
        passed through apply (rename it); ``params`` is positional-only, so a model keyword named
        ``params`` (TF's Estimator ``model_fn``'s) does reach the model.
        ``params`` may also spell a full name as one key holding ``/``, at any level (``{"net/enc/w":
        w}``, ``{"net": {"enc/w": w}}``); a name spelled both that way and by nested dicts is a
        ``NameCollisionError``, as in ``sp.flatten``.
        While JAX traces it (``jit``, ``grad``, ``vmap``, ...) the cyclic garbage collector is paused
        for the call, as in ``init``; an eager call leaves it alone.
        """
        if self._with_state:
            if not args:
                raise TypeError("apply of a transform_with_state model takes (params, state, *args).")
            return self._run(params, args[0], args[1:], kwargs, rng, None)
        # The common call, inline: the model runs one Python frame shallower, and JAX records the
        # Python stack of every op it stages (_run and _frame.install, inline).
        store = ApplyStore(params if type(params) is dict else _input_tree(params, "params"), {})
        frame = _frame.Frame(_frame.APPLY, store, False, rng)
        outer = _current_frame()
        _set_frame(frame)
        # Traced (jit, grad, ...): the collector pauses, as for init, and JAX's name stack is put
        # back at the end whatever the model left open; eager: one comparison.
        paused = frame.trace is not _EAGER and _CollectorPaused.pause()
        names = _scope.names_now() if paused else None
        try:
            return self._fn(*args, **kwargs) if kwargs else self._fn(*args)
        finally:
            _set_frame(outer)
            if paused:
                _scope.restore_names(names)
                _CollectorPaused.resume()

    def apply_with_intermediates(self, params, /, *args: Any, rng: Optional[jax.Array] = None,
                                 **kwargs: Any):
        """Like ``apply``, also returning a flat dict of every ``sp.record``ed value:
        ``(apply's result, {"<name scope>/<name>": value})``."""
        records: Dict[str, Any] = {}
        if self._with_state:
            if not args:
                raise TypeError("apply of a transform_with_state model takes (params, state, *args).")
            out = self._run(params, args[0], args[1:], kwargs, rng, records)
        else:
            out = self._run(params, None, args, kwargs, rng, records)
        return out, records


def _state_given_twice(error: NameCollisionError) -> NameCollisionError:
    """``flatten``'s error for a name the state passed to ``apply`` spells twice, as the state's."""
    name = getattr(error, "name", None)
    if name is None:
        return error
    return given_twice_error(name, "/", "in the state passed to apply", "state")


def _default_prng_impl() -> str:
    """The name of the PRNG implementation ``jax.random.key(seed)`` uses now."""
    return jax.config.jax_default_prng_impl  # type: ignore[attr-defined]  # JAX sets flags at run time


@functools.lru_cache(maxsize=None)
def _abstract_key(impl: str) -> jax.ShapeDtypeStruct:
    """The key ``specs`` traces with: a raw key (uint32 key data, as ``jax.random.PRNGKey`` makes)
    of PRNG implementation ``impl``, the current ``jax_default_prng_impl`` (which may change at run
    time): ``(2,)`` words for threefry, ``(4,)`` for rbg. Cached: ``specs`` asks on every call."""
    shape = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape
    return jax.ShapeDtypeStruct(shape, np.uint32)  # no sharding of a context mesh: cached


def _key_given_to_specs(fn: Callable, args: tuple, kwargs: dict) -> Optional[bool]:
    """Whether ``model.specs(*args)`` failed because ``args[0]`` is a key passed by init's habit:
    ``args[0]`` looks like a key (typed, of any impl, or raw, of the default impl) or a seed, and
    the model takes the arguments without it. Then True if the model refuses it as an argument, and
    False if it takes it (``fn(x, training=False)`` takes the key as ``x``) and failed inside, which
    counts for a key array only (an int first is as likely a config); else None."""
    if not args or isinstance(args[0], bool):
        return None
    first = args[0]
    dtype = getattr(first, "dtype", None)
    if dtype is not None:
        if not (jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) or (
                np.dtype(dtype) == np.uint32 and
                tuple(first.shape) == _abstract_key(_default_prng_impl()).shape)):
            return None
    elif not isinstance(first, int):
        return None
    if refuses_call(fn, args[1:], kwargs):
        return None
    refused = refuses_call(fn, args, kwargs)
    return True if refused else (False if dtype is not None else None)


def _rng_given_error(api: str) -> KeyArgumentError:
    how = ("init draws the model's keys from its key, its first argument: model.init(key, *args)"
           if api == "init" else "specs draws no random numbers")
    return KeyArgumentError(
        f"model.{api} got rng=, but rng= is apply's own keyword (the key sp.next_rng_key() draws "
        "from), which apply never passes to the model; so a model keyword argument named rng could "
        f"reach the model in {api} but never in apply.\n"
        f"  asked: model.{api}(..., rng=...)\n"
        f"  fix: drop rng= ({how}); if the model takes a keyword argument named rng, rename it.")


def transform(fn: Callable) -> Transformed:
    """Turn a model function using ``sp.get_param``/``sp.scope`` into pure ``init`` and ``apply``.

    >>> def fn(x):
    ...     with sp.scope("linear"):
    ...         w = sp.get_param("w", (x.shape[-1], 2))
    ...     return x @ w
    >>> model = sp.transform(fn)
    >>> params = model.init(jax.random.key(0), jnp.ones((1, 3)))
    >>> out = jax.jit(model.apply)(params, jnp.ones((1, 3)))
    """
    return Transformed(fn, with_state=False)


def transform_with_state(fn: Callable) -> Transformed:
    """Like ``transform``, for models with ``sp.get_state``/``sp.set_state`` (e.g. batch norm).

    ``init(key, *args) -> (params, state)``; ``apply(params, state, *args) -> (out, new_state)``.
    """
    return Transformed(fn, with_state=True)
