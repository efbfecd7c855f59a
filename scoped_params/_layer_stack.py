"""``layer_stack``: a block repeated ``num_layers`` times, stored with a leading layer axis, run by scan.

The rule is one line: every parameter (and state) whose full name lies under the stack's scope gets a
leading ``num_layers`` axis; inside the block each request sees one layer's slice. Parameters the
block reaches outside that scope (a captured scope, an outer scope with ``reuse=True``) are shared by
all layers, unstacked.

How it fits the trace frame: while the block runs, the frame's store is a ``_StackView`` over the real
store. The view lifts each request under the prefix to the stacked shape (and a stacked initializer)
and hands it to the real store, so reuse rules, shape/dtype checks and error texts are exactly the
ones outside a stack; it then returns the layer's slice instead of the whole array.

* ``init`` runs the block once, abstractly (like the rest of ``init``); the specs it leaves behind
  have shape ``(num_layers,) + shape`` and an initializer that draws each layer's slice from its own
  key (``split`` of the parameter's name-derived key), so slices differ and depend only on key+name.
* ``apply`` runs the block under ``jax.lax.scan`` over the stacked params and state, so the block is
  traced and compiled once whatever the depth.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from typing import Any, Callable, Dict, Iterable, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import _frame
from ._errors import NestedTraceError, ShapeMismatchError, StateError
from ._params import (STATE, ApplyStore, InitStore, _callable_with_three_args,
                      _check_state_value, _constant_init_dtype, _shape_str, _takes_no_args,
                      _tf_constant)
from ._scope import _TRACE, scope
from .initializers import _instantiate, default_initializer
from .sharding import _StackedPartitioner, _stacked_sharding


def _stacked_initializer(init: Callable, num_layers: int) -> Callable:
    """``init`` drawn ``num_layers`` times from split keys; groups with equal (init, n) in init."""

    @functools.wraps(init)  # errors and signature checks see the user's initializer
    def stacked_init(key, shape, dtype=jnp.float32):
        keys = jax.random.split(key, num_layers)
        return jax.vmap(lambda k: init(k, tuple(shape[1:]), dtype))(keys)

    if not hasattr(init, "__name__"):  # an initializer object: errors name its class, as outside
        # (a partial: no name a user could type, as outside)
        stacked_init.__name__ = "<partial>" if isinstance(init, functools.partial) \
            else type(init).__name__
    # Its errors speak of one layer's shape, as the user's initializer is called (_materialize._run).
    stacked_init.stacked_layers = num_layers  # type: ignore[attr-defined]
    return stacked_init


def _lift_init(full: str, init: Any, shape: Any, dtype: Any, num_layers: int) -> Any:
    """The initializer of the stacked parameter for a block's request of one layer's ``shape``:
    each layer's slice is what the unrolled layer's ``init`` makes. An initializer the store would
    refuse comes back as it is (``_StackView.get`` has the store raise its own error)."""
    init = _instantiate(init)
    if init is None:
        try:
            init = default_initializer(np.dtype(dtype))  # the fans must be those of one layer
        except TypeError:
            return None  # no dtype: the store says so
        return None if init is None else _stacked_initializer(init, num_layers)
    if not callable(init):
        return init if shape is not None else _lift_constant(full, init, num_layers)
    if shape is None:
        if not _takes_no_args(init):
            return init
        # TF's initializer without arguments, called once per unrolled layer: its value in each.
        # A function still, so that the store calls it only when it creates the parameter (and
        # apply only evaluates its shape).
        return lambda: _lift_constant(full, init(), num_layers)
    if not _callable_with_three_args(init):
        return init
    return _stacked_initializer(init, num_layers)


def _lift_constant(full: str, value: Any, num_layers: int) -> Any:
    """A constant initializer for every layer: broadcast along a new leading axis, in the dtype the
    store gives it (TF's float32 for a Python float). One the store refuses comes back as it is."""
    if isinstance(value, (jax.Array, jax.core.Tracer)):
        return jnp.broadcast_to(value, (num_layers,) + tuple(value.shape))
    try:
        value = _tf_constant(full, value)
        value = np.asarray(value, _constant_init_dtype(full, value))
    except (TypeError, ValueError):
        return value  # not a number (a string, a dict, a ShapeDtypeStruct): the store says so
    return np.broadcast_to(value, (num_layers,) + value.shape).copy()


def _raise_refused_init(frame, outer: Any, full: str, shape: Any, dtype: Any, init: Any,
                        reuse: Any, trainable: Any, collections: Any, kind: str) -> None:
    """Raise the store's error for creating ``full`` with ``init``, a callable it refuses for a
    shape (a Keras initializer, a no-argument function), for one layer's ``shape`` (with the
    stacked one the error would show ``(num_layers, ...)``). Only in init, and only if ``full`` is
    new (a request reusing it ignores its initializer)."""
    root = _root(outer)
    if isinstance(root, InitStore) and full not in root.specs and reuse is not True:
        InitStore().get(frame, full, shape, dtype, init, None, None, trainable, collections, None,
                        None, kind)  # a scratch store: raises before it creates anything


def _lift_regularizer(regularizer: Any) -> Any:
    """A layer's regularizer for the stacked parameter: the sum of its term for each layer, as the
    unrolled layers would add one term each (a regularizer of the whole stack would differ for any
    term that is not a sum, e.g. a mean). ``None`` terms (``sp.no_regularizer``) stay ``None``."""
    if regularizer is None or not callable(regularizer):
        return regularizer  # none, or not a function: the store says so

    @functools.wraps(regularizer)  # the user's, in sp.regularization_loss()'s errors
    def per_layer(stacked: Any) -> Any:
        try:
            terms = jax.vmap(regularizer)(stacked)
        except TypeError:
            # JAX's words for a term that is no array (sp.l2_regularizer without its scale
            # returns a function): one layer's term, for sp.regularization_loss() to name
            term = regularizer(stacked[0])
            if term is None or isinstance(term, (jax.Array, np.ndarray, np.generic, int, float)):
                raise
            return term
        if terms is None:
            return None
        if jax.typeof(terms).weak_type:  # a Python number per layer: the sum stays weakly typed,
            return jax.lax.reduce_sum(terms, (0,))  # as the unrolled model's sum of the numbers
        return jnp.sum(terms, axis=0)

    return per_layer


def _lift_constraint(constraint: Any) -> Any:
    """A layer's constraint applied to the stacked parameter: to each layer's slice (``jax.vmap``)."""
    if constraint is None or not callable(constraint):
        return constraint  # none, or not a function: the store says so
    return jax.vmap(constraint)


class _StackView:
    """The store seen by the block of a ``layer_stack``: stacked under ``prefix``, pass-through else."""

    def __init__(self, outer: Any, prefix: str, num_layers: int, slices: Dict[str, Any],
                 unstacked: Optional[Dict[str, Any]] = None):
        self.outer = outer
        self.prefix = prefix
        self.num_layers = num_layers
        self.slices = slices  # apply: name -> this layer's slice (params and state)
        self.written: Dict[str, None] = {}  # state names set in this layer, in order
        # apply: entries under the prefix without the leading num_layers axis, left out of the
        # scan; an error only if the block asks for one (extra params are ignored, as elsewhere)
        self.unstacked = unstacked
        # Regularizer terms (see _run_scan): the block's frame.regularized gets each stacked
        # parameter's (regularizer, this layer's slice), as an unrolled layer's; `after`, by name,
        # holds the entries the stack adds to the call's terms after it: (the per-layer sum, the
        # whole stacked value), and those of parameters outside the stack that the block registered.
        # (By name: a nested stack's scan may trace its block again, asking this view again.)
        self.after: Dict[str, tuple] = {}
        # On the trace that carries the running sum: `index == 0`, this layer is the first. A
        # parameter outside the stack counts once, in the layer that fetches it first (the
        # unrolled model's layer 0), so the block's entry for it is its term in layer 0 only.
        self.first_layer: Any = None

    def get(self, frame, full, shape, dtype, init, regularizer, reuse, trainable, collections,
            partitioner, sharding, kind, constraint=None):
        registered = len(frame.regularized)
        if not full.startswith(self.prefix):
            value = self.outer.get(frame, full, shape, dtype, init, regularizer, reuse, trainable,
                                   collections, partitioner, sharding, kind, constraint)
            if len(frame.regularized) > registered:  # a shared parameter's term: counted once
                entry = self.after[full] = frame.regularized[registered]
                if self.first_layer is not None:
                    frame.regularized[registered] = (
                        functools.partial(_in_first_layer, self.first_layer, entry[0]), entry[1])
            return value
        if self.unstacked and full in self.unstacked:
            raise _depth_error(self.prefix, full, self.unstacked[full], self.num_layers)
        if frame.mode == _frame.INIT:  # made before the stack without its axis: apply's error
            _check_depth(self, frame, full)
        lifted_shape = None if shape is None else (self.num_layers,) + tuple(shape)
        lifted = _lift_init(full, init, shape, dtype, self.num_layers)
        if lifted is init and shape is not None and callable(init):  # refused, unless reused
            _raise_refused_init(frame, self.outer, full, shape, dtype, init, reuse, trainable,
                                collections, kind)
        try:
            value = self.outer.get(frame, full, lifted_shape, dtype, lifted,
                                   _lift_regularizer(regularizer), reuse,
                                   trainable, collections,
                                   None if partitioner is None else _StackedPartitioner(partitioner),
                                   _stacked_sharding(sharding), kind, _lift_constraint(constraint))
        except ShapeMismatchError as error:
            if shape is not None:  # the store's words are of the stacked shapes
                error.add_note(
                    f"(inside sp.layer_stack '{self.prefix[:-1]}': '{full}' is stored stacked, one "
                    f"slice per layer, so both shapes above have the leading layer axis of "
                    f"{self.num_layers}; the block asked for one layer's shape "
                    f"{_shape_str(tuple(shape))})")
            raise
        # apply: this layer's slice; init: an abstract placeholder of one layer's shape.
        layer = self.slices[full] if full in self.slices else self.slices.setdefault(full, value[0])
        if len(frame.regularized) > registered:  # created here: its term is this layer's
            self.after[full] = frame.regularized[registered]
            frame.regularized[registered] = (regularizer, layer)
        return layer

    def set_state(self, frame, full, value):
        if not full.startswith(self.prefix):
            # Shared by every layer, as parameters outside the stack are: a layer's new value would
            # have to leave the scan's function, which only the stack's own (per-layer) state does.
            raise StateError(
                f"sp.set_state: state '{full}' lies outside the sp.layer_stack scope "
                f"'{self.prefix[:-1]}', so every layer shares it; a value one layer makes cannot "
                "leave the stack's loop.\n"
                "  fix: declare the state under the stack's scope (each layer then has its own "
                "slice), or return the value from the block and call sp.set_state after the stack.")
        if self.unstacked and full in self.unstacked:
            raise _depth_error(self.prefix, full, self.unstacked[full], self.num_layers)
        current = self.slices.get(full)
        if current is None and frame.mode == _frame.INIT:
            # Declared earlier in the call but not asked for in this layer: its slice (lookup).
            spec = getattr(self.root(), "specs", {}).get(full)
            if spec is not None and spec.kind == STATE:
                _check_depth(self, frame, full)
                current = self.slices[full] = self.lookup(frame, full)
        if current is None:
            # Not declared: let the real store raise its error.
            return self.outer.set_state(frame, full, value)
        self.slices[full] = _check_state_value(full, value, current.shape, current.dtype)
        self.written[full] = None

    def values_under(self, prefix: str) -> Dict[str, Any]:
        ours = {n: v for n, v in self.slices.items() if n.startswith(prefix)}
        theirs = {n: v for n, v in _values_under(self.outer, prefix).items()
                  if not n.startswith(self.prefix)}
        return {**theirs, **ours}

    def root(self) -> Any:
        return _root(self.outer)

    def lookup(self, frame: Any, full: str) -> Any:
        """The value the block sees for ``full`` (``None`` if none): this layer's slice under the
        stack's prefix, else what the store outside hands out (a layer object's ``kernel``,
        ``weights``, ... read in the block, see ``layers._stored``)."""
        if full.startswith(self.prefix):
            value = self.slices.get(full)
            if value is None and frame.mode == _frame.INIT:
                # Made earlier in the call, not asked for in this layer (apply's scan hands the
                # block every slice): this layer's slice of it (of a nested stack's too).
                stored = _lookup(self.outer, frame, full)
                if stored is not None and tuple(np.shape(stored))[:1] == (self.num_layers,):
                    value = stored[0]
            return value
        return _lookup(self.outer, frame, full)


def _check_depth(view: _StackView, frame: Any, full: str) -> None:
    """init: raise apply's error if ``full``, under the stack's prefix, was made earlier in the
    call without the stack's leading axis (apply keeps such entries out of its scan)."""
    stored = _lookup(view.outer, frame, full)
    if stored is not None and tuple(np.shape(stored))[:1] != (view.num_layers,):
        raise _depth_error(view.prefix, full, stored, view.num_layers)


def _root(store: Any) -> Any:
    return store.root() if isinstance(store, _StackView) else store


def _lookup(store: Any, frame: Any, full: str) -> Any:
    """The value ``get_param``/``get_state`` hands out for ``full`` from ``store`` in this
    ``init``/``apply`` call, without creating it (``None`` if there is none)."""
    if isinstance(store, _StackView):
        return store.lookup(frame, full)
    if frame.mode == _frame.INIT:
        return store.value(full)
    value = store.params.get(full)
    return store.state.get(full) if value is None else value


def _values_under(store: Any, prefix: str) -> Dict[str, Any]:
    """Current values of every param and state under ``prefix`` (apply only)."""
    if isinstance(store, _StackView):
        return store.values_under(prefix)
    if isinstance(store, ApplyStore):
        return store.values_under(prefix)
    return {}


@contextlib.contextmanager
def _frame_attrs(frame: _frame.Frame, **attrs: Any):
    """Temporarily replace attributes of the trace frame (store, rng, records) for the block."""
    old = {k: getattr(frame, k) for k in attrs}
    for k, v in attrs.items():
        setattr(frame, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(frame, k, v)


class _Keys:
    """What the functions of one wrapper call draw from the call's key stream (``sp.next_rng_key()``,
    ``fold_in(rng, count)``), and how far the stream moves on after the call.

    ``per_step=False`` (``cond``, ``switch``, ``remat``): a function continues the stream where the
    call found it, drawing the keys it would draw outside the wrapper; afterwards the stream has
    moved on by the most keys any of them drew (a branch not taken still counts: the count must
    not depend on a traced predicate). So ``remat`` changes no number, and a branch that draws
    nothing moves nothing.

    ``per_step=True`` (``scan``, ``while_loop``, ``fori_loop``, ``layer_stack``): the stream's next
    key is the base of the loop's keys, each step's ``fold_in(base, step)``; it is taken from the
    stream (later keys move on by one) only if the body draws a key, so a loop that draws none (an
    RNN without dropout) leaves every later key as it was. The base is made inside the traced
    body, where a body that draws nothing leaves it unused.

    The count is a Python int fixed by the trace, so each function starts from ``start`` on every
    trace: a retrace (``_control_flow._Traces``) draws the same keys.
    """

    __slots__ = ("rng", "start", "drawn", "per_step")

    def __init__(self, frame: _frame.Frame, per_step: bool):
        self.rng = frame.rng
        self.start = frame.rng_count
        self.drawn = 0  # the most keys one function drew (counted from 0 when per_step)
        self.per_step = per_step

    def enter(self, frame: _frame.Frame, step: Any, salt: Optional[int]) -> None:
        """Set ``frame.rng``/``rng_count`` for a function of the call (``frame`` is inside it)."""
        frame.rng, frame.rng_count = self.rng, self.start
        if self.per_step and self.rng is not None:
            base = _frame.next_rng_key()  # the key the stream gives next (an int seed converted)
            if salt is not None:
                base = jax.random.fold_in(base, salt)
            frame.rng = base if step is None else jax.random.fold_in(base, step)
            frame.rng_count = 0

    def exit(self, frame: _frame.Frame) -> None:
        """Note what the function that just ran drew (``frame`` is still inside it)."""
        self.drawn = max(self.drawn, frame.rng_count - (0 if self.per_step else self.start))

    def finish(self, frame: _frame.Frame) -> None:
        """Move the call's stream on past what its functions drew (after the ``jax.lax`` call)."""
        frame.rng_count = self.start + (min(self.drawn, 1) if self.per_step else self.drawn)


class _Snapshot:
    """Python-side trace state the block mutates; restored if ``lax.scan`` traces the block twice
    (it retraces when a carry's weak type changes), so the second trace sees what the first did.
    (Also ``sp.scan`` and the other wrappers of ``_control_flow.py``.) That includes what layer
    objects, templates and RNN cells learned in the call (``frame.kept``, see
    ``layers._this_call``): one first called in the rolled-back trace is called first again."""

    def __init__(self, frame: _frame.Frame):
        self.frame = frame
        root = _root(frame.store)
        self.created = dict(root.created) if isinstance(root, ApplyStore) else None
        # init: what the store has made so far (specs, placeholders, scope paths)
        self.made = (dict(root.specs), dict(root.values), set(root.prefixes)) \
            if isinstance(root, InitStore) else None
        # The scope counters below the current node, each node's own list restored in place (an
        # open captured-scope jump's undo log holds them): a child left at count 0 by a re-entered
        # scope's exit is counted again by the rolled-back trace (TF's multi-tower loop).
        self.nodes = _save_nodes(frame.node)
        self.names_in_use = dict(frame.names_in_use)
        self.record_names = None if frame.record_names is None else dict(frame.record_names)
        self.regularized = len(frame.regularized)
        self.kept = _copy_kept(frame.kept)

    def restore(self) -> None:
        frame = self.frame
        root = _root(frame.store)
        if self.created is not None:
            root.created.clear()
            root.created.update(self.created)
        if self.made is not None:
            for table, saved in zip((root.specs, root.values, root.prefixes), self.made):
                table.clear()
                table.update(saved)
        for node, count, children, hints in self.nodes:
            node[:] = (count, dict(children) if children is not None else None,
                       dict(hints) if hints is not None else None)
        frame.names_in_use.clear()
        frame.names_in_use.update(self.names_in_use)
        if self.record_names is not None and frame.record_names is not None:
            frame.record_names.clear()
            frame.record_names.update(self.record_names)
        frame.kept = _copy_kept(self.kept)
        del frame.regularized[self.regularized:]


def _save_nodes(top: list) -> List[tuple]:
    """(node, count, children, hints) of ``top`` and every node below it, the dicts copied. Sub-scope
    counters are reset when a scope exits, so below a node only its children (and the path of an
    open captured-scope jump) hold anything: as few as a copy of the node's own dicts."""
    saved = []
    pending = [top]
    while pending:
        node = pending.pop()
        count, children, hints = node  # [count, children or None, hints or None]
        saved.append((node, count, dict(children) if children is not None else None,
                      dict(hints) if hints is not None else None))
        if children:
            pending.extend(children.values())
    return saved


def _copy_kept(kept: Optional[dict]) -> Optional[dict]:
    """A copy of ``frame.kept`` (``token id -> (token, value)``), with its own copy of each list
    a value is (a custom layer's weights, appended to as its ``build`` makes them)."""
    if not kept:
        return None
    return {key: (token, list(value) if type(value) is list else value)
            for key, (token, value) in kept.items()}


def _as_tuple(out: Any, n: int) -> tuple:
    return out if n != 1 else (out,)


def _check_carry(args: tuple, out: tuple) -> None:
    def sig(tree):
        return jax.tree_util.tree_structure(tree), [
            (jnp.shape(x), jnp.result_type(x)) for x in jax.tree_util.tree_leaves(tree)]

    if sig(args) != sig(out):
        raise TypeError(
            "layer_stack: the block must return values with the same structure, shapes and dtypes "
            f"as its inputs (they feed the next layer).\n  asked (inputs): {_describe_carry(args)}\n"
            f"  found (outputs): {_describe_carry(out)}\n"
            "  fix: return the new carry from the block; use with_per_layer_inputs=True to also "
            "return per-layer outputs.")


def _describe_carry(carry: Any) -> str:
    """A carry as its leaves' dtype[shape], in its structure: ``(float32[2,4], {'n': int32[]})``."""
    def leaf(x: Any) -> str:
        return f"{jnp.result_type(x).name}[{','.join(map(str, jnp.shape(x)))}]"

    def show(tree: Any) -> str:
        if isinstance(tree, tuple) and not hasattr(tree, "_fields"):
            return "(" + ", ".join(map(show, tree)) + ("," if len(tree) == 1 else "") + ")"
        if isinstance(tree, list):
            return "[" + ", ".join(map(show, tree)) + "]"
        if isinstance(tree, dict):
            return "{" + ", ".join(f"{k!r}: {show(v)}" for k, v in tree.items()) + "}"
        if tree is None:
            return "None"
        leaves = jax.tree_util.tree_leaves(tree)
        if len(leaves) == 1 and leaves[0] is tree:
            return leaf(tree)
        return f"{type(tree).__name__}(" + ", ".join(map(leaf, leaves)) + ")"

    text = show(carry)
    return text if len(text) <= 500 else text[:500] + " ..."


def layer_stack(num_layers: int, *, with_per_layer_inputs: bool = False, unroll: int = 1,
                name: Optional[str] = None) -> Callable[[Callable], Callable]:
    """Repeat a block ``num_layers`` times with stacked parameters (Haiku's ``layer_stack``).

    The block runs in the scope ``name`` (default: ``layer_stack``, ``layer_stack_1``, ... as TF's
    ``default_name`` numbering); every parameter under that scope gets a leading ``num_layers`` axis,
    and ``apply`` runs the block with ``jax.lax.scan`` so compile time does not grow with depth.

    Without per-layer inputs the block maps its arguments to new values of the same structure
    (``f(*carry) -> carry``). With ``with_per_layer_inputs=True`` it is ``f(carry, *xs) -> (carry,
    ys)``: each ``x`` in ``xs`` has a leading ``num_layers`` axis (a ``ValueError`` otherwise) and the
    stacked ``ys`` come back (a ``TypeError`` naming the stack if the block returns no such pair).
    ``unroll`` is ``jax.lax.scan``'s: layers per step of the loop, a positive int, or ``True`` for
    none. Inside the block ``sp.next_rng_key()`` gives each layer different keys, from one key of
    the call's (taken only if the block draws, as in ``sp.scan``), and ``sp.regularization_loss()``
    is the unrolled model's running sum. Under an eager (un-jitted) ``apply`` the stack's loop is
    traced and compiled at each call: jit the apply (``jax.jit(model.apply)``).

    >>> def fn(x):
    ...     @sp.layer_stack(6, name="encoder")
    ...     def block(h):
    ...         return h + sp.layers.dense(h, h.shape[-1], activation=jax.nn.gelu)
    ...     return block(x)
    >>> params = sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 16)))
    >>> params["encoder"]["dense"]["kernel"].shape
    (6, 16, 16)
    """
    try:
        count = operator.index(num_layers)  # an int or numpy integer; as range(), not a float or str
    except TypeError:
        raise TypeError(f"layer_stack: num_layers must be a positive int, got {num_layers!r} of type "
                        f"{type(num_layers).__name__}.\n  fix: pass the depth as an int, e.g. "
                        "sp.layer_stack(6).") from None
    if count < 1:
        raise ValueError(f"layer_stack: num_layers must be a positive int, got {num_layers!r}.\n"
                         "  fix: a stack has at least one layer; call the block itself for one.")
    num_layers = count
    if not isinstance(unroll, bool):  # checked here: scan's own message names no stack
        error: type = ValueError
        try:
            steps = operator.index(unroll)
        except TypeError:
            steps, error = 0, TypeError
        if steps < 1:
            stack = "sp.layer_stack" + (f" {name!r}" if name is not None else "")
            raise error(
                f"{stack}: unroll must be a positive int or a bool, got {unroll!r}: the number of "
                "layers each step of its loop (jax.lax.scan) runs.\n"
                "  fix: unroll=1 (the default, one layer per step), unroll=k (k layers per step: "
                "less loop overhead, longer compile) or unroll=True (no loop).")
        unroll = steps

    def decorator(f: Callable) -> Callable:
        @functools.wraps(f)
        def stacked(*args: Any) -> Any:
            frame = _frame.current_wrapper("layer_stack")
            with scope(name, default_name="layer_stack") as s:
                s._values = None  # the block's parameters come through the stack's view, never directly
                if with_per_layer_inputs:
                    if not args:
                        raise TypeError("layer_stack(with_per_layer_inputs=True): call it as "
                                        "block(carry, *xs).")
                    carry, xs = args[0], args[1:]
                    _check_per_layer_inputs(s.prefix, num_layers, xs)
                else:
                    carry, xs = args, ()
                python = _python_leaves(s.prefix, carry, xs, with_per_layer_inputs)
                keys = _Keys(frame, per_step=True)
                try:
                    if frame.mode == _frame.INIT:
                        if python:  # traced, as apply's scan traces them
                            carry, xs = jax.tree_util.tree_map(jnp.asarray, (carry, xs))
                        out = _run_once(frame, f, s.prefix, num_layers, carry, xs, keys,
                                        with_per_layer_inputs)
                    else:
                        out = _run_scan(frame, f, s.prefix, num_layers, carry, xs, keys,
                                        with_per_layer_inputs, unroll)
                except (TypeError, jax.errors.TracerIntegerConversionError) as error:
                    # (ConcretizationTypeError is a TypeError, as is a traced size in a shape)
                    if python:
                        error.add_note(_traced_python_note(s.prefix, python))
                    raise
                keys.finish(frame)
                return out

        return stacked

    return decorator


def _python_leaves(prefix: str, carry: Any, xs: tuple, per_layer: bool) -> list:
    """(path, value) of the Python and NumPy values among a stack's arguments, which its scan
    traces (apply's layers see arrays, not them); raises for a value that is no array at all."""
    found = []
    tree = (carry, xs) if per_layer else carry
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, jax.Array):
            continue
        where = ("carry" if path[0].idx == 0 else "xs") + jax.tree_util.keystr(path[1:]) \
            if per_layer else f"argument {path[0].idx}" + jax.tree_util.keystr(path[1:])
        if not isinstance(leaf, (np.ndarray, np.generic, bool, int, float, complex)):
            raise TypeError(
                f"sp.layer_stack '{prefix[:-1]}': {where} is {type(leaf).__name__} "
                f"{leaf!r}"[:300] + ", not an array: a jax.lax.scan runs the layers, and passes "
                "the stack's arguments to each as arrays.\n"
                "  fix: pass a setting every layer shares (an activation, a flag, a name) in a "
                "closure or functools.partial(block, ...) instead of the stack's arguments.")
        found.append((where, leaf))
    return found


def _traced_python_note(prefix: str, python: list) -> str:
    shown = ", ".join(f"{where} ({type(leaf).__name__} {leaf!r})"[:120] for where, leaf in python[:3])
    return (f"sp.layer_stack '{prefix[:-1]}': a jax.lax.scan runs the layers, so the block gets its "
            f"arguments as traced arrays, the Python and NumPy values among them too: {shown}. If "
            "the error above comes from using one as a Python value (an if, int(), a shape), "
            "that is why.\n"
            "  fix: pass it in a closure or functools.partial(block, ...) instead of the stack's "
            "arguments.")


def _check_per_layer_inputs(prefix: str, num_layers: int, xs: tuple) -> None:
    """Every leaf of the per-layer inputs has a leading ``num_layers`` axis (in init too, which
    only slices layer 0; scan's own message would count the stack's arrays, not name it)."""
    for leaf in jax.tree_util.tree_leaves(xs):
        if jnp.shape(leaf)[:1] != (num_layers,):
            break
    else:
        return
    name, leaf = next((f"xs{jax.tree_util.keystr(path)}", leaf) for path, leaf in
                      jax.tree_util.tree_flatten_with_path(xs)[0]
                      if jnp.shape(leaf)[:1] != (num_layers,))
    shape = tuple(jnp.shape(leaf))
    raise ValueError(
        f"sp.layer_stack '{prefix[:-1]}' has num_layers={num_layers}: every per-layer input has a "
        f"leading axis of size {num_layers}, but {name} has shape {shape} (block(carry, *xs): "
        f"xs[0] is the first argument after the carry).\n"
        f"  asked: shape ({num_layers}, ...)\n  found: shape {shape}\n"
        f"  fix: pass one slice per layer, stacked along a new first axis (jnp.stack([x_0, ..., "
        f"x_{num_layers - 1}])); pass a value every layer shares in the carry or a closure.")


def _call_block(f, carry, xs, per_layer, prefix):
    if per_layer:
        out = f(carry, *xs)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise _pair_error(prefix, out)
        return out
    return _as_tuple(f(*carry), len(carry))


def _pair_error(prefix: str, out: Any) -> TypeError:
    """A block with per-layer inputs returned no (carry, ys) pair (only the new carry, say)."""
    found = _describe_carry(out)
    if isinstance(out, (tuple, list)):
        found = f"a {type(out).__name__} of {len(out)}: {found}"
    return TypeError(
        f"sp.layer_stack '{prefix[:-1]}' (with_per_layer_inputs=True): the block returns a pair "
        "(carry, ys), the new carry (the next layer's input) and this layer's outputs (stacked "
        "into the stack's ys).\n"
        f"  asked: (carry, ys)\n  found: {found}\n"
        "  fix: return (new_carry, ys) from the block, e.g. `return h, h` (ys may be None); a block "
        "without per-layer outputs takes no per-layer inputs: drop with_per_layer_inputs=True and "
        "pass them in a closure or the carry.")


def _run_once(frame, f, prefix, num_layers, carry, xs, keys, per_layer):
    """init: trace the block once, abstractly, as one layer; the view stacks what it creates."""
    view = _StackView(frame.store, prefix, num_layers, {})
    layer_xs = jax.tree_util.tree_map(lambda x: x[0], xs)
    terms = frame.regularized
    # As layer 0: the block's regularization_loss() has no earlier layers' terms to add.
    with _frame_attrs(frame, store=view, rng=None, rng_count=0, regularized=list(terms)):
        keys.enter(frame, 0, None)
        out = _call_block(f, carry, layer_xs, per_layer, prefix)
        keys.exit(frame)
    terms.extend(view.after.values())
    if per_layer:
        new_carry, ys = out
        _check_carry(carry, new_carry)
        ys = jax.tree_util.tree_map(
            lambda y: jnp.broadcast_to(y, (num_layers,) + jnp.shape(y)), ys)
        return new_carry, ys
    _check_carry(carry, out)
    return out if len(carry) != 1 else out[0]


class _RunningSumNeeded(Exception):
    """The block of the stack ``token`` called ``sp.regularization_loss()``: its scan is traced
    again, carrying the running sum of the earlier layers' terms in ``dtype`` (see ``_run_scan``)."""

    def __init__(self, token: object, dtype: Any):
        super().__init__("internal to sp.layer_stack")
        self.token, self.dtype = token, dtype


def _earlier_layers(token: object, running: Any, _: Any) -> Any:
    """A regularizer entry of the block's frame: the sum of the earlier layers' terms (``running``,
    the scan's carry), or, on the trace that carries none, a request to carry it."""
    if running is None:
        raise _RunningSumNeeded(token, None)
    return running


def _in_first_layer(first_layer: Any, regularizer: Callable, value: Any) -> Any:
    """The term of a parameter every layer shares, in the first layer; 0 in the others."""
    term = regularizer(value)
    return None if term is None else jnp.where(first_layer, term, 0)


def _add_layer(frame, token: object, running: Any, layer_terms: list) -> Any:
    """``running`` plus the terms this layer added (``layer_terms``: the entries the block put in
    ``frame.regularized``), summed as ``sp.regularization_loss()`` sums them."""
    with _frame_attrs(frame, regularized=layer_terms):
        total = _frame.regularization_loss()
    # A Python number (a user's regularizer may return one; 0.0 if no terms) or a weakly typed
    # array adds in the sum's dtype, as it does in the unrolled model's sum.
    if hasattr(total, "dtype") and not jax.typeof(total).weak_type and \
            jnp.result_type(total) != running.dtype:
        raise _RunningSumNeeded(token, jnp.result_type(total))  # carried in the terms' dtype
    return running + total


def _run_scan(frame, f, prefix, num_layers, carry, xs, keys, per_layer, unroll):
    """apply: scan the block over the stacked params and state under ``prefix``.

    ``sp.regularization_loss()`` in the block is what the unrolled model's would be: the terms
    before the stack, the earlier layers' and this layer's so far. Each layer's terms are those of
    its slices (``_StackView.get``) and, in layer 0 only, those of parameters outside the stack
    that the block fetches first (the unrolled model's later layers reuse them); the earlier
    layers' come from a running sum the scan carries
    only for a block that asks: its first trace raises ``_RunningSumNeeded`` when it does, and the
    scan is traced again with the sum (and once more if the terms' dtype is not float32)."""
    outer = frame.store
    stacked = _values_under(outer, prefix)
    # Once per call (scan's own error names no parameter): entries without the leading num_layers
    # axis stay out of the scan; the view raises _depth_error if the block asks for one, and an
    # unused one is ignored, as apply ignores extra params outside a stack.
    unstacked = {n: v for n, v in stacked.items()
                 if getattr(v, "shape", None) is None or tuple(v.shape[:1]) != (num_layers,)}
    if unstacked:
        stacked = {n: v for n, v in stacked.items() if n not in unstacked}
    # The stack called under a jax.vmap, jax.grad, ... inside the model: the block reads params
    # there (as get_param does), but what it records or sets would leave that trace (checked below).
    outside = _TRACE.value is not frame.trace
    snapshot = _Snapshot(frame)
    terms = frame.regularized
    token = object()
    sum_dtype = None  # the running sum's dtype, once the block asks for regularization_loss()
    after: list = []  # the view.after of the scan's latest trace of the block (see _StackView)

    def scan_layers():
        traces = []

        def body(c, layer):
            index, layer_values, layer_xs = layer
            if traces:
                snapshot.restore()
            traces.append(None)
            running = None
            if sum_dtype is not None:
                c, running = c
            view = _StackView(outer, prefix, num_layers, dict(layer_values), unstacked)
            if running is not None:
                view.first_layer = index == 0
            after[:] = [view.after]  # not the view: its slices are the trace's (leaked after it)
            records = None if frame.records is None else {}
            # The block may read params in scan's trace, and set state and record values
            # (threaded out through the scan), unless the stack itself runs in the function of an
            # sp.scan, sp.cond, ... (frame.loop, kept): then what the block made could not leave.
            with _frame_attrs(frame, store=view, rng=None, rng_count=0, records=records,
                              trace=_TRACE.value, regularized=terms + [
                                  (functools.partial(_earlier_layers, token, running), None)]):
                keys.enter(frame, index, None)
                out = _call_block(f, c, layer_xs, per_layer, prefix)
                keys.exit(frame)
                if running is not None:  # this layer's terms follow the earlier layers' entry
                    running = _add_layer(frame, token, running,
                                         frame.regularized[len(terms) + 1:])
            new_carry, ys = out if per_layer else (out, None)
            if running is not None:
                new_carry = (new_carry, running)
            new_state = {n: view.slices[n] for n in view.written}
            return new_carry, (ys, new_state, records)

        init = carry if per_layer else tuple(carry)
        if sum_dtype is not None:
            init = (init, jnp.zeros((), sum_dtype))
        index = jnp.arange(num_layers, dtype=jnp.uint32)
        return jax.lax.scan(body, init, (index, stacked, xs), length=num_layers, unroll=unroll)

    for attempt in range(3):  # no sum, then a float32 one, then one in the terms' dtype
        try:
            new_carry, (ys, new_state, records) = scan_layers()
            break
        except _RunningSumNeeded as e:
            if e.token is not token or attempt == 2:
                raise
            snapshot.restore()
            sum_dtype = jnp.float32 if e.dtype is None else e.dtype
    if sum_dtype is not None:
        new_carry = new_carry[0]
    terms.extend(after[0].values())
    if outside and (new_state or records):
        raise _outside_error(prefix, new_state, records)
    for n, value in new_state.items():
        outer.set_state(frame, n, value)
    if records:
        frame.records.update(records)
    if per_layer:
        return new_carry, ys
    return new_carry if len(carry) != 1 else new_carry[0]


def _outside_error(prefix: Optional[str], new_state: Dict[str, Any],
                   records: Dict[str, Any]) -> Exception:
    """The block set state or recorded, but the stack runs under a JAX transformation inside the
    model (jax.vmap, jax.grad, ...): the errors of sp.set_state / sp.record called there directly.
    (``prefix`` None: the function of an ``sp.remat`` did.)"""
    if prefix is None:
        where, function, caller = "the function of sp.remat", "the function", "sp.remat"
        outputs = function
    else:
        where, function, caller = f"the block of sp.layer_stack '{prefix[:-1]}'", "the block", \
            "the stack"
        outputs = "the block (with_per_layer_inputs=True gives per-layer outputs)"
    transformation = ("inside a function that a JAX transformation (jax.vmap, jax.grad, a "
                      "jax.custom_vjp, ...) runs within the model")
    if new_state:
        return StateError(
            f"sp.set_state, state '{next(iter(new_state))}', in {where} was called "
            f"{transformation}: the new value belongs to that trace and cannot leave it.\n"
            f"  fix: return the new value from {function} (or from the transformed function) and "
            f"call sp.set_state outside the transformation; or call {caller} outside it.")
    return NestedTraceError(
        f"sp.record, record '{next(iter(records))}', in {where} was called "
        f"{transformation}: the value belongs to that trace and cannot leave it.\n"
        f"  fix: return the value from {outputs} or from the transformed function and record it "
        f"outside the transformation; or call {caller} outside it.")


def _state_values(store: Any) -> Dict[str, Any]:
    """The current value of every state entry ``sp.set_state`` may write through ``store``, by name
    (``sp.remat`` finds what its function wrote by comparing them; in init, the values it was given,
    which init keeps only for this)."""
    if isinstance(store, _StackView):  # only the stack's own state: it refuses any other
        return {n: store.slices[n] for n in store.written}
    if isinstance(store, ApplyStore):
        return dict(store.state)
    return dict(store.written)


def _put_back_state(store: Any, names: Iterable[str], before: Dict[str, Any],
                    slices: Optional[Dict[str, Any]]) -> None:
    """Put the state entries ``names`` of ``store`` back to ``before`` (``_state_values`` taken
    earlier; for a stack block's view, ``slices``: its slices then), or drop them where they had
    none (``sp.remat`` sets them again, after its checkpoint, with its results)."""
    if isinstance(store, _StackView):
        assert slices is not None
        for name in names:
            if name in slices:
                store.slices[name] = slices[name]
            else:
                store.slices.pop(name, None)
            if name not in before:
                store.written.pop(name, None)
        return
    table = store.state if isinstance(store, ApplyStore) else store.written
    for name in names:
        if name in before:
            table[name] = before[name]
        else:
            table.pop(name, None)


def _depth_error(prefix: str, name: str, value: Any, num_layers: int) -> ShapeMismatchError:
    """Params (or state) under the stack's scope without the stack's leading ``num_layers`` axis."""
    shape = tuple(np.shape(value))
    if len(shape) >= 2 and shape[1] == num_layers and shape[0] != num_layers:
        why = "is the layer axis not first?"
    else:
        why = "params of a stack of another depth, or one layer's unstacked params?"
    return ShapeMismatchError(
        f"sp.layer_stack '{prefix[:-1]}' has num_layers={num_layers}: every parameter and state "
        f"under its scope has a leading axis of size {num_layers} (num_layers), but '{name}' has "
        f"shape {_shape_str(shape)}.\n"
        f"  asked: shape ({num_layers}, ...)\n  found: shape {_shape_str(shape)} ({why})\n"
        f"  fix: pass the params this model's init returns; to reuse one layer's params or an "
        f"unrolled model's, stack them along a new first axis, e.g. jnp.stack([layer_0, ..., "
        f"layer_{num_layers - 1}]); params of another depth need re-running init with that depth.")
