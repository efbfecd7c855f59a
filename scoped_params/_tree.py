"""Nested params trees: flatten/unflatten by full name, splitting by prefix, flag or collection, and
what TF 1.x's training ran on variables after each step: the projection of constrained parameters
(`apply_constraints`) and moving averages (`exponential_moving_average`)."""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from ._errors import (TF_PACKAGES, InvalidNameError, NameCollisionError, ParamsTypeError,
                      ScopedParamsError, format_site, nearest)

Tree = Dict[str, Any]


def flatten(tree: Mapping[str, Any], sep: str = "/") -> Dict[str, Any]:
    """``{"a": {"b": x}} -> {"a/b": x}``: nested params to full names (leaves are anything not a dict)."""
    flat: Dict[str, Any] = {}
    try:
        try:
            _flatten_into(flat, "", tree, sep)
        except RecursionError:  # a name of more components than the recursion limit
            flat.clear()
            _flatten_deep(flat, tree, sep)
    except TypeError:  # `prefix + key` with a key that is not a str; found here, off the fast path
        found = _non_str_key(tree, sep, "")
        if found is None:
            raise
        path, key = found
        raise TypeError(f"'{path}': key {key!r} is {type(key).__name__}; params keys must be str "
                        f"(scope and parameter names).\n  fix: use the key {_as_name(key)}.") from None
    except AttributeError:  # `tree.items()` of a tuple, list, ...: found here, off the fast path
        if isinstance(tree, Mapping):
            raise
        raise _not_a_tree(tree, "expected a nested dict of params (scope and parameter names to "
                                "arrays)", "flatten params and state separately: `params, state = "
                                "model.init(key, ...)`, then sp.flatten(params) and "
                                "sp.flatten(state)") from None
    return flat


def _describe(x: Any) -> str:
    """A short account of a wrongly typed argument: ``int 3``, ``list of 2 items``, ``None``."""
    if x is None:
        return "None"
    if isinstance(x, (str, int, float)):
        text = repr(x)
        return f"{type(x).__name__} {text if len(text) <= 60 else text[:57] + '...'}"
    if isinstance(x, (tuple, list)):
        return f"{type(x).__name__} of {len(x)} item{'' if len(x) == 1 else 's'}"
    shape = getattr(x, "shape", None)
    return type(x).__name__ + ("" if shape is None else f" of shape {tuple(shape)}")


def _not_a_tree(tree: Any, asked: str, pair_fix: str,
                fix: str = "pass the nested dict of arrays model.init returned") -> ParamsTypeError:
    """``asked`` (e.g. "expected a nested dict of params") was given ``tree``, not a mapping; the
    ``(params, state)`` pair of ``transform_with_state`` is the common case, with ``pair_fix``."""
    if isinstance(tree, tuple) and len(tree) == 2 and all(isinstance(t, Mapping) for t in tree):
        found, fix = ("a tuple of 2 dicts, as transform_with_state's init returns "
                      "(params, state)"), pair_fix
    else:
        found = _describe(tree)
    return ParamsTypeError(f"{asked}, got {found}.\n  fix: {fix}.")


class SpecsMismatchError(ScopedParamsError, KeyError, ValueError):
    """A params entry has no spec in ``specs``: the specs are of another model or other arguments.
    A ``KeyError`` (a missing key, as before) and a ``ValueError`` (mismatched arguments)."""

    def __str__(self) -> str:  # the message, not KeyError's repr of it
        return str(self.args[0]) if self.args else super().__str__()


# What to do with transform_with_state's (params, state) pair given where one tree is expected.
_PAIR_FIXES = {
    "merge": "pass the trees as separate arguments: `params, state = model.init(key, ...)`, then "
             "sp.merge(params, state), or sp.merge(trainable, frozen) of the halves of params",
    "apply_constraints": "constrain the params alone: `params, state = model.init(key, ...)`, "
                         "then sp.apply_constraints(params, model.specs(*args)[0])",
    "exponential_moving_average": "average the params alone: `params, state = model.init(key, "
                                  "...)`, then sp.exponential_moving_average(averages, params, "
                                  "decay), with averages started as a copy of params",
    "partition_trainable": "split the params alone (state is never trainable): `params, state = "
                           "model.init(key, ...)`, then sp.partition_trainable(params, "
                           "model.specs(*args)[0])",
    "partition_by_collection": "split each with its own specs: `param_specs, state_specs = "
                               "model.specs(*args)`, then sp.partition_by_collection(params, "
                               "param_specs, collection) and sp.partition_by_collection(state, "
                               "state_specs, collection)",
    "partition": "split each: `params, state = model.init(key, ...)`, then "
                 "sp.partition(predicate, params) and sp.partition(predicate, state)",
    "filter_tree": "filter each: `params, state = model.init(key, ...)`, then "
                   "sp.filter_tree(predicate, params) and sp.filter_tree(predicate, state)",
}


def _flatten_for(api: str, tree: Any) -> Dict[str, Any]:
    """``flatten(tree)`` for ``sp.<api>``: a tree that is not a mapping is reported as an argument
    of ``sp.<api>``, the (params, state) pair with the fix for that helper."""
    try:
        return flatten(tree)
    except ParamsTypeError:
        if isinstance(tree, Mapping):
            raise
        fix = _PAIR_FIXES.get(api) or (
            f"call sp.{api} on each: `params, state = model.init(key, ...)`, then "
            f"sp.{api}(params, ...) and sp.{api}(state, ...)")
        raise _not_a_tree(tree, f"sp.{api}: expected a nested dict of params (scope and "
                                "parameter names to arrays)", fix) from None


# type -> is it a Mapping. ``apply`` flattens params on every call, and an ABC isinstance check costs
# ~10x a dict lookup; leaf types (arrays, tracers) are few, so the answer is remembered per type.
_IS_MAPPING: Dict[type, bool] = {dict: True}


def _flatten_into(flat: Dict[str, Any], prefix: str, node: Mapping[str, Any], sep: str) -> None:
    for key, value in node.items():
        is_mapping = _IS_MAPPING.get(type(value))
        if is_mapping is None:
            is_mapping = _IS_MAPPING[type(value)] = isinstance(value, Mapping)
        if is_mapping:
            _flatten_into(flat, prefix + key + sep, value, sep)
        else:
            name = prefix + key
            if name in flat:  # {"a/b": x, "a": {"b": y}}: two spellings of one full name
                raise given_twice_error(name, sep)
            flat[name] = value


def _flatten_deep(flat: Dict[str, Any], node: Mapping[str, Any], sep: str) -> None:
    """``_flatten_into(flat, "", node, sep)`` as a loop over a stack of the open dicts, for a tree
    deeper than Python's recursion limit (a file may hold a name of that many components)."""
    stack: List[Tuple[str, Iterator]] = []
    prefix, items = "", iter(node.items())
    while True:
        for key, value in items:
            if isinstance(value, Mapping):  # into the sub-dict; this dict's items go on after it
                stack.append((prefix, items))
                prefix, items = prefix + key + sep, iter(value.items())
                break
            name = prefix + key
            if name in flat:
                raise given_twice_error(name, sep)
            flat[name] = value
        else:
            if not stack:
                return
            prefix, items = stack.pop()


def given_twice_error(name: str, sep: str = "/", where: str = "",
                      tree: str = "tree") -> NameCollisionError:
    """``flatten``'s error for the full name ``name`` spelled both as one key and by nested dicts
    (``where``: the tree's part in a call, e.g. "in the params passed to apply"; ``tree``: its name
    in the fix); it keeps ``name``."""
    error = NameCollisionError(
        f"'{name}' is given twice{' ' + where if where else ''}: by a key holding '{sep}' and by "
        "nested dicts.\n"
        "  fix: spell each full name once, either nested or as one key; to patch values in, "
        f"{tree} = sp.unflatten({{**sp.flatten({tree}), **sp.flatten(patch)}}).")
    error.name = name  # type: ignore[attr-defined]
    return error


def _non_str_key(node: Mapping[Any, Any], sep: str, prefix: str) -> Optional[Tuple[str, Any]]:
    """(full path, key) of the first key under ``node`` that is not a str, or None."""
    stack: List[Tuple[str, Iterator]] = []  # a loop, as _flatten_into's
    items = iter(node.items())
    while True:
        for key, value in items:
            if not isinstance(key, str):
                return f"{prefix}{key}", key
            if isinstance(value, Mapping):
                stack.append((prefix, items))
                prefix = prefix + key + sep
                items = iter(value.items())
                break
        else:
            if not stack:
                return None
            prefix, items = stack.pop()


def unflatten(flat: Mapping[str, Any], sep: str = "/") -> Tree:
    """``{"a/b": x} -> {"a": {"b": x}}``: full names to the nested params tree."""
    tree: Tree = {}
    # scope path -> the dict made here for it. Only these are filled: a value that is itself a dict
    # is a leaf (filling it would change the caller's dict), and so is None.
    scopes: Dict[str, Tree] = {}
    try:
        single = len(sep) == 1
        for name, value in flat.items():
            if single:
                parent, has_parent, leaf = name.rpartition(sep)
            else:  # split's components, as _make_scope's: ('a...b', '..') is 'a' then '.b'
                leaf = name.split(sep)[-1]
                has_parent = sep if len(leaf) < len(name) else ""
                parent = name[:len(name) - len(leaf) - len(sep)] if has_parent else ""
            node = tree if not has_parent else scopes.get(parent)
            if node is None:
                node = _make_scope(tree, scopes, parent, name, sep)
            if leaf in node or not leaf:
                if not leaf:
                    raise _empty_component_error(name, sep)
                raise NameCollisionError(
                    f"'{name}' cannot be placed: it is a scope holding other entries, or given twice.\n"
                    f"  fix: keep one of them: rename the leaf or the scope '{name}'.")
            node[leaf] = value
    except (AttributeError, TypeError):  # `flat.items()` of a non-mapping; a name not a str
        if not isinstance(flat, Mapping):
            raise _not_a_tree(flat, "unflatten expected a dict of full names to values (such as "
                                    "sp.flatten returns)", "unflatten each of them",
                              "pass a dict {'scope/name': value} (dict(pairs) for a list of "
                              "(name, value) pairs)") from None
        bad = next((n for n in flat if not isinstance(n, str)), _NOT_FOUND)
        if bad is _NOT_FOUND:
            raise
        raise TypeError(f"unflatten: full name {bad!r} is {type(bad).__name__}; full names must be "
                        f"str ('scope/name').\n  fix: use the name {_as_name(bad)}.") from None
    return tree


_NOT_FOUND = object()


def _as_name(key: Any) -> str:
    """A non-str key's str spelling, for a fix: bytes decoded (str(b'w') would be "b'w'")."""
    if isinstance(key, (bytes, bytearray)):
        try:
            return f"{key.decode()!r} (key.decode())"
        except UnicodeDecodeError:
            pass
    return repr(str(key))


def _make_scope(tree: Tree, scopes: Dict[str, Tree], path: str, name: str, sep: str) -> Tree:
    """The dict for scope ``path`` (made with those of its prefixes not in ``scopes`` yet), to put
    ``name`` in. Each scope is made after its parent, so the prefixes are looked up longest first,
    down to one made already: a new scope costs its own prefixes, not its depth."""
    node, start = tree, 0  # the longest prefix made, and where the next component starts
    ends = []  # where the prefixes not made yet end in path, longest first
    if len(sep) == 1:  # found from the right as split finds them from the left
        end = len(path)
        while end >= 0:
            found = scopes.get(path[:end])
            if found is not None:
                node, start = found, end + 1
                break
            ends.append(end)
            end = path.rfind(sep, 0, end)
    else:  # a longer separator may overlap itself ('::' in 'a:::b'): split's prefixes
        bounds = []
        end = -len(sep)
        for part in path.split(sep):
            end += len(sep) + len(part)
            bounds.append(end)
        while bounds:
            found = scopes.get(path[:bounds[-1]])
            if found is not None:
                node, start = found, bounds[-1] + len(sep)
                break
            ends.append(bounds.pop())
    for end in reversed(ends):
        part = path[start:end]
        if not part:
            raise _empty_component_error(name, sep)
        prefix = path[:end]
        if part in node:
            raise NameCollisionError(
                f"'{name}' cannot be placed: '{prefix}' is a leaf, not a scope.\n"
                f"  fix: keep one of them: rename the leaf '{prefix}' or the scope it would hold.")
        child = node[part] = scopes[prefix] = {}
        node, start = child, end + len(sep)
    return node


def _empty_component_error(name: str, sep: str) -> InvalidNameError:
    return InvalidNameError(
        f"'{name}' is not a valid full name: it has an empty component ('{sep}' at its start or "
        "end, or doubled, or no name at all), which the nested params tree, keyed by the "
        "components, has no place for (no model here makes such a name).\n"
        f"  fix: drop the extra '{sep}'. TF 1.x names such as 'a//w' (a variable_scope('a/'), or a "
        "variable_scope('') inside 'a') stay flat: keep the flat dict (sp.checkpoint.load_tf1(path, "
        "flat=True)) or rename them ('a//w' -> 'a/w').")


def _under(name: str, prefix: str) -> bool:
    """Literal scope-prefix match: "foo" covers "foo" and "foo/...", never "foo_1/..."."""
    prefix = prefix.rstrip("/")
    return not prefix or name == prefix or name.startswith(prefix + "/")


def partition(predicate: Callable[[str, Any], bool], tree: Mapping[str, Any]) -> Tuple[Tree, Tree]:
    """Split a nested tree by ``predicate(full_name, leaf)`` into (matching, rest), both nested."""
    return _partition(predicate, tree, "partition")


def _partition(predicate: Callable[[str, Any], bool], tree: Mapping[str, Any],
               api: str) -> Tuple[Tree, Tree]:
    yes: Dict[str, Any] = {}
    no: Dict[str, Any] = {}
    for name, leaf in _flatten_for(api, tree).items():
        try:
            keep = predicate(name, leaf)
        except TypeError as error:
            if not refuses_call(predicate, (name, leaf), {}):
                raise  # raised inside the predicate: the user's own error, as it is
            raise TypeError(
                f"sp.{api}: the predicate {_callable_name(predicate)} cannot be called as "
                f"predicate(full_name, leaf): {error}.\n"
                f"  asked: predicate({name!r}, <{_describe(leaf)}>) for each entry of the tree\n"
                "  fix: take the full name and the leaf, e.g. lambda name, leaf: "
                "name.endswith('/w') (lambda name, _: ... to ignore the leaf).") from None
        (yes if keep else no)[name] = leaf
    return unflatten(yes), unflatten(no)


def refuses_call(fn: Callable, args: tuple, kwargs: Dict[str, Any]) -> bool:
    """Whether ``fn(*args, **kwargs)`` fails binding its arguments: the ``TypeError`` a callback of
    the wrong signature raises before it runs, told apart from one raised inside a correct callback
    (which is the user's own, passed on as it is). For error paths: reads the signature."""
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        return True
    except ValueError:  # no signature to read (some builtins): cannot tell
        return False
    return False


def _callable_name(fn: Callable) -> str:
    """``fn`` as a message shows it: its qualified name (``fn.<locals>.<lambda>``), else its repr."""
    name = getattr(fn, "__qualname__", None)
    return name if isinstance(name, str) else repr(fn)[:80]


def filter_tree(predicate: Callable[[str, Any], bool], tree: Mapping[str, Any]) -> Tree:
    """The leaves of ``tree`` for which ``predicate(full_name, leaf)`` holds, nested."""
    return _partition(predicate, tree, "filter_tree")[0]


def select(tree: Mapping[str, Any], scope: str) -> Tree:
    """The entries under scope prefix ``scope`` (a literal path prefix: ``"foo"`` never matches ``"foo_1"``)."""
    if not isinstance(scope, str):
        raise _scope_type_error("select", tree, scope)
    return _partition(lambda name, _: _under(name, scope), tree, "select")[0]


def partition_by_scope(tree: Mapping[str, Any], scope: str) -> Tuple[Tree, Tree]:
    """(entries under ``scope``, the rest), with the literal prefix rule of ``select``."""
    if not isinstance(scope, str):
        raise _scope_type_error("partition_by_scope", tree, scope)
    return _partition(lambda name, _: _under(name, scope), tree, "partition_by_scope")


def _scope_type_error(api: str, tree: Any, scope: Any) -> TypeError:
    if isinstance(scope, Mapping) and isinstance(tree, str):
        return TypeError(f"sp.{api}: the arguments look swapped: the tree came second and the scope "
                         f"{tree!r} first.\n  fix: sp.{api}(params, {tree!r}).")
    return TypeError(f"sp.{api}: scope must be a str scope path such as 'encoder/dense', got "
                     f"{_describe(scope)}.\n  fix: pass one scope path as a str; for several, "
                     f"call sp.{api} once per scope or use sp.partition(lambda name, leaf: ..., "
                     "params).")


def _spec_lookup(api: str, params: Any, specs: Mapping[str, Any]):
    """``spec(name, attribute)``: that attribute of the spec of ``name`` (``model.specs(...)``)."""
    if not isinstance(specs, Mapping):
        pair = isinstance(specs, tuple) and len(specs) == 2 and all(
            isinstance(t, Mapping) for t in specs)
        raise TypeError(
            f"specs must be the nested dict of model.specs(...), got {type(specs).__name__}."
            + ("\n  fix: a transform_with_state model's specs(...) is (params_specs, state_specs): "
               "pass the first, e.g. model.specs(*args)[0]." if pair else
               "\n  fix: pass model.specs(*args), computed with the model's arguments."))
    flat = flatten(specs)

    def spec(name: str, attribute: str):
        try:
            return getattr(flat[name], attribute)
        except KeyError:
            hint = nearest(name, flat)
            raise SpecsMismatchError(
                f"sp.{api}: '{name}' is in params but not in specs, which hold {len(flat)} "
                f"entr{'y' if len(flat) == 1 else 'ies'}"
                + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint else "")
                + ": the specs came from another model or other arguments than params.\n"
                "  fix: compute specs with model.specs(*args) of the same model and arguments "
                "as params (model.init(key, *args)).") from None
        except AttributeError:
            raise _not_a_spec(api, params, name, flat[name]) from None

    return spec


def _not_a_spec(api: str, params: Any, name: str, found: Any) -> TypeError:
    """specs' entry ``name`` is ``found``, not a ParamSpec: swapped arguments, or not specs at all."""
    try:
        mine = flatten(params).get(name)
    except TypeError:
        mine = None
    if hasattr(mine, "trainable") and hasattr(mine, "collections"):
        return TypeError(
            f"sp.{api}: '{name}' is a ParamSpec in params but {_describe(found)} in specs: "
            f"the arguments look swapped.\n  fix: sp.{api}(params, specs"
            + (", collection)." if api == "partition_by_collection" else ")."))
    return TypeError(
        f"sp.{api}: specs holds {_describe(found)} at '{name}', not a ParamSpec.\n"
        "  fix: pass model.specs(*args) (computed with the model's arguments) as specs.")


def partition_trainable(params: Mapping[str, Any], specs: Mapping[str, Any]) -> Tuple[Tree, Tree]:
    """(trainable, frozen) by each parameter's ``trainable`` flag in ``specs`` (``model.specs(...)``):
    TF 1.x's ``tf.trainable_variables()``, which also lists a parameter created with
    ``trainable=False`` and ``collections=[..., "trainable_variables"]``."""
    spec = _spec_lookup("partition_trainable", params, specs)
    return _partition(lambda name, _: spec(name, "trainable")
                      or _TRAINABLE_VARIABLES in spec(name, "collections"),
                      params, "partition_trainable")


def partition_by_collection(params: Mapping[str, Any], specs: Mapping[str, Any],
                            collection: str) -> Tuple[Tree, Tree]:
    """(in ``collection``, the rest): TF 1.x's ``tf.get_collection(collection)`` of the variables.

    Each parameter (or state entry, with the state's specs) is in the ``collections=`` it was created
    with, and in TF's implicit collections: ``"variables"`` (``tf.GraphKeys.GLOBAL_VARIABLES``) when
    it was created without ``collections=`` (an explicit list replaces it, as in TF; slim's model
    variables list ``"variables"`` and ``"model_variables"``, as slim does); ``"trainable_variables"``
    (``TRAINABLE_VARIABLES``) whenever it is trainable. State entries are non-trainable, in
    ``"variables"``, as TF's ``moving_mean``. A collection no parameter was created in selects
    nothing, as TF's ``get_collection`` returns ``[]`` for a name nothing was added to; one that is
    close to a collection that selects something (a typo: ``"trainable"``) also warns, naming it. Not
    distinguished: TF's ``collections=[]`` (in no collection) is taken as no ``collections=``."""
    if not isinstance(collection, str):
        raise TypeError(
            f"sp.partition_by_collection: collection must be one collection name (a str), got "
            f"{type(collection).__name__} {collection!r}"[:300] + ".\n"
            "  fix: call it once per collection, or for several: sp.partition(lambda name, _: "
            "bool(set(names) & set(sp.flatten(specs)[name].collections)), params).")
    spec = _spec_lookup("partition_by_collection", params, specs)

    def member(name: str, _: Any) -> bool:
        collections = spec(name, "collections")
        if collection in collections:
            return True
        if collection == _GLOBAL_VARIABLES:  # TF: collections=None means [GLOBAL_VARIABLES]
            return not collections  # (slim's model variables list "variables" themselves)
        return collection == _TRAINABLE_VARIABLES and bool(spec(name, "trainable"))
    selected, rest = _partition(member, params, "partition_by_collection")
    if not selected and rest and collection not in _VARIABLE_COLLECTIONS:
        _warn_if_misspelt(collection, specs)
    return selected, rest


# tf.GraphKeys' names of TF's implicit collections.
_GLOBAL_VARIABLES, _TRAINABLE_VARIABLES = "variables", "trainable_variables"
# tf.GraphKeys' names of collections TF and slim fill: spelt right, whatever they select.
_VARIABLE_COLLECTIONS = (_GLOBAL_VARIABLES, _TRAINABLE_VARIABLES, "model_variables",
                         "local_variables", "moving_average_variables", "metric_variables",
                         "trainable_resource_variables", "weights", "biases", "activations",
                         "update_ops", "regularization_losses", "losses", "summaries")


def _warn_if_misspelt(collection: str, specs: Mapping[str, Any]) -> None:
    """Warn where a collection that selects nothing is close to one that selects something: TF's
    ``get_collection`` returns ``[]`` for any name, so a typo ("trainable") trains nothing, silently."""
    filled = {_GLOBAL_VARIABLES, _TRAINABLE_VARIABLES}  # either holds some parameter of most models
    for leaf in flatten(specs).values():
        filled.update(c for c in getattr(leaf, "collections", None) or () if isinstance(c, str))
    if collection in filled:  # spelt right: the params given are a part without its members
        return
    names = sorted(filled)
    lowered = collection.lower()
    close = ([c for c in names if c.lower() == lowered]
             or sorted((c for c in names if lowered and lowered in c.lower()), key=len)[:1]
             or nearest(collection, names, n=1))
    if close:
        warnings.warn(
            f"sp.partition_by_collection: no parameter is in collection {collection!r}, so it "
            f"selects nothing (as TF's get_collection returns []); did you mean {close[0]!r}?\n"
            f"  fix: sp.partition_by_collection(params, specs, {close[0]!r}).", stacklevel=3)


def merge(*trees: Mapping[str, Any]) -> Tree:
    """Recombine disjoint trees (e.g. the halves of a partition); a name in two trees is an error."""
    flat: Dict[str, Any] = {}
    for tree in trees:
        for name, leaf in _flatten_for("merge", tree).items():
            if name in flat:
                raise NameCollisionError(
                    f"merge: '{name}' is in more than one tree.\n"
                    "  fix: merge disjoint trees, e.g. the halves of one sp.partition* call.")
            flat[name] = leaf
    try:
        return unflatten(flat)
    except NameCollisionError as error:  # a leaf of one tree is a scope of another
        raise NameCollisionError(f"merge: {error}") from None


def apply_constraints(params: Mapping[str, Any], specs: Mapping[str, Any]) -> Tree:
    """``params`` with each parameter's constraint applied: TF 1.x's optimizers project a variable
    created with ``constraint=`` after each update, so call this on the new params after the
    optimizer step (inside the jitted step).

    ``specs`` is ``model.specs(...)``; ``params`` may be any part of the model's params (e.g. the
    trainable half of ``partition_trainable``). As TF's optimizers project only the variables they
    update (``minimize``'s ``var_list``: the trainable ones), frozen parameters
    (``trainable=False``) are left as they are, constraint or not, and so are parameters without a
    constraint; with nothing to project, ``params`` itself is returned (a tree of full names as keys,
    ``{"d/w": x}``, comes back nested, as whenever something is projected). A parameter that a TF
    partitioner (``sp.sharding.fixed_size_partitioner`` and the like) splits is projected part by
    part, TF's parts (``v/part_0``, ...) each on its own, as TF projects each part's variable.

    >>> params = sp.apply_constraints(optax.apply_updates(params, updates), specs)  # doctest: +SKIP
    """
    spec = _spec_lookup("apply_constraints", params, specs)
    flat = _flatten_for("apply_constraints", params)
    # Full names as top-level keys ({"d/w": x}): the result is nested whatever is projected.
    changed = any(type(key) is str and "/" in key for key in params)
    for name, value in flat.items():
        constraint = spec(name, "constraint")
        if constraint is None or not spec(name, "trainable"):
            continue
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            raise ParamsTypeError(
                f"sp.apply_constraints: parameter '{name}' is {type(value).__name__} "
                f"{value!r:.60}, not an array, and its constraint projects an array.\n"
                f"  asked: the constraint of '{name}' applied to its value\n"
                "  fix: pass the params as arrays (what init returns and optax updates), e.g. "
                "jax.tree_util.tree_map(jnp.asarray, params).")
        if _stacked_across(value, tuple(spec(name, "shape")), constraint):
            raise _stacked_error(name, value, tuple(spec(name, "shape")))
        try:
            projected = _project(constraint, value, spec(name, "partitioner"))
        except ScopedParamsError:
            raise
        except (TypeError, ValueError) as error:
            raise _failed_error(name, constraint, value, spec(name, "site"), error) from error
        except Exception as error:  # noqa: BLE001 - its own type kept, a note naming the parameter
            error.add_note(f"scoped_params: raised by the constraint of '{name}' in "
                           f"sp.apply_constraints ({_of(value)}), created at "
                           f"{format_site(spec(name, 'site'))}.")
            raise
        if (not isinstance(projected, _array_types()) or projected.shape != value.shape
                or projected.dtype != value.dtype):
            raise _returned_error(name, constraint, value, spec(name, "site"), projected)
        flat[name] = projected
        changed = True
    return unflatten(flat) if changed else params  # type: ignore[return-value]


def _stacked_across(value: Any, shape: tuple, constraint: Callable) -> bool:
    """Whether ``value`` is params of ``shape`` stacked on a new leading axis (an ensemble's) and
    ``constraint`` reduces along axes it counts from the parameter's own (``max_norm(axis=0)``):
    it would then mix the members. An elementwise constraint (``non_neg``, a clip) is fine, and so
    is any other shape (a shard_map's block of the parameter)."""
    from .constraints import _unwrapped

    found = tuple(value.shape)
    return (len(found) == len(shape) + 1 and found[1:] == shape
            and getattr(_unwrapped(constraint), "axis", None) is not None)


def _stacked_error(name: str, value: Any, shape: tuple) -> "ConstraintError":
    found = tuple(value.shape)
    return ConstraintError(
        f"sp.apply_constraints: parameter '{name}' has shape {found}, but the specs say {shape}: "
        "its constraint projects along axes of the parameter's own, so on the leading axis of "
        "stacked params (an ensemble's, jax.tree.map(jnp.stack, ...)) it would mix the members.\n"
        f"  asked: the constraint of '{name}' applied to a value of shape {shape}\n"
        f"  found: shape {found}\n"
        "  fix: project each member: jax.vmap(lambda p: sp.apply_constraints(p, specs))(params).")


class ConstraintError(ScopedParamsError, ValueError, TypeError):
    """``sp.apply_constraints``: a parameter's constraint failed on its value, or returned no array
    of its shape and dtype. A ``ValueError`` and a ``TypeError``, as what the constraint raised was
    one of them (the original is its ``__cause__``)."""


def _array_types() -> tuple:
    """What a constraint may return: a JAX array (a tracer, inside jit) or a NumPy one."""
    import jax
    import numpy as np

    return (jax.Array, np.ndarray, np.generic)


def _of(value: Any) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    return f"its value of shape {tuple(shape) if shape is not None else '?'} and dtype {dtype}"


def _tensorflow_package(x: Any) -> Optional[str]:
    module = getattr(type(x), "__module__", None) or ""
    package = module.split(".", 1)[0]
    return package if package in TF_PACKAGES else None


def _failed_error(name: str, constraint: Callable, value: Any, site: Any,
                  error: Exception) -> ConstraintError:
    """The error for ``constraint(value)`` raising ``error``: it names the parameter."""
    from .constraints import _tensorflow_error  # constraints imports jax: only on this error path

    tensorflow = _tensorflow_error(name, constraint, "sp.apply_constraints: ")
    if tensorflow is not None:
        return ConstraintError(str(tensorflow))
    text = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {text[0] if text else ''}"[:300]
    converted = type(error).__name__ in ("TracerArrayConversionError", "ConcretizationTypeError",
                                         "TracerBoolConversionError",
                                         "TracerIntegerConversionError")
    fix = ("a constraint runs on the parameter's jax.Array, a tracer inside jit: compute with "
           "jax.numpy (not NumPy, TensorFlow or Python control flow on its values), e.g. lambda w: "
           "jnp.clip(w, -1.0, 1.0); sp.constraints has TF's stock ones (max_norm, non_neg, "
           "unit_norm, min_max_norm, radial_constraint)" if converted else
           "the error is the constraint's own (its __cause__, shown above): fix the constraint, or "
           f"give '{name}' one that takes its shape and dtype, or none")
    shown = repr(constraint)
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    return ConstraintError(
        f"sp.apply_constraints: the constraint of '{name}' failed on {_of(value)}: {reason}\n"
        f"  constraint: {shown}\n"
        f"  '{name}' was created at {format_site(site)}\n"
        f"  fix: {fix}.")


def _returned_error(name: str, constraint: Callable, value: Any, site: Any,
                    projected: Any) -> ConstraintError:
    """The error for a constraint returning ``projected``, not an array of its parameter's shape
    and dtype."""
    shape, dtype = getattr(projected, "shape", None), getattr(projected, "dtype", None)
    kind = type(projected)
    package = _tensorflow_package(projected)
    if isinstance(projected, _array_types()):
        found = f"shape {tuple(projected.shape)} and dtype {dtype}"
    elif shape is not None:
        found = (f"a {kind.__module__}.{kind.__name__} of shape {tuple(shape)}, not a jax.Array or "
                 "np.ndarray")
    else:
        found = repr(kind)
    if package is not None:
        fix = (f"it computes with {package}: compute with jax.numpy instead (sp.constraints has "
               "TF's stock constraints: max_norm, non_neg, unit_norm, min_max_norm, "
               "radial_constraint), e.g. lambda w: jnp.clip(w, -1.0, 1.0)")
    else:
        fix = ("a constraint projects the value: return an array of the parameter's shape and "
               "dtype (cast with .astype(w.dtype) if it computes in another one)")
    return ConstraintError(
        f"The constraint of '{name}' returned {found} for a parameter of shape {value.shape} "
        f"and dtype {value.dtype}.\n  constraint: {constraint!r}\n"
        f"  '{name}' was created at {format_site(site)}\n"
        f"  fix: {fix}.")


def _project(constraint: Callable, value: Any, partitioner: Any) -> Any:
    """``constraint(value)``, or, when ``partitioner`` is a TF one that splits ``value``, the
    constraint of each of TF's parts, concatenated: TF's ``_iter_slices`` gives the first
    ``size % n`` parts one more row than the others."""
    if partitioner is None:
        return constraint(value)
    import jax.numpy as jnp

    from .sharding import AxisPartitioner, _StackedPartitioner  # sharding imports this module
    stacked = 0  # sp.layer_stack's leading layer axes (its lifted constraint maps each layer)
    while isinstance(partitioner, _StackedPartitioner):
        partitioner, stacked = partitioner.per_layer, stacked + 1
    shape = tuple(value.shape)[stacked:]
    if not isinstance(partitioner, AxisPartitioner) or not shape:  # TF ignores a scalar's
        return constraint(value)
    counts = partitioner.partitions(shape, value.dtype)
    split = [axis for axis, n in enumerate(counts) if n > 1]
    if not split:
        return constraint(value)
    axis, n = split[0], counts[split[0]]
    size, extra = divmod(shape[axis], n)
    ends = [i * size + min(i, extra) for i in range(1, n)]  # where parts 1, ..., n - 1 start
    parts = jnp.split(value, ends, axis=stacked + axis)
    return jnp.concatenate([constraint(part) for part in parts], axis=stacked + axis)


def exponential_moving_average(averages: Mapping[str, Any], params: Mapping[str, Any], decay: Any,
                               num_updates: Any = None) -> Tree:
    """One update of TF 1.x's ``tf.train.ExponentialMovingAverage(decay, num_updates).apply(vars)``:
    each average moves towards its parameter, ``average - (average - param) * (1 - decay)``.

    With ``num_updates`` (TF's argument, usually the global step), the decay is
    ``min(decay, (1 + num_updates) / (10 + num_updates))``, so the averages follow the parameters
    closely in the first steps. TF's usual program runs ``ema.apply`` after the train op
    (``tf.control_dependencies([train_op])``), so its ``num_updates=global_step`` reads the step
    the optimizer has just counted: pass the number of updates including this one (``step + 1``
    where ``step`` counts the steps taken before it). Start from the parameters themselves (TF starts
    each average at its variable's initial value; ``jax.tree.map(jnp.copy, params)`` where the step
    donates both, as one buffer cannot be donated twice), update inside the jitted step, evaluate with
    ``model.apply(averages, ...)``. ``averages`` and ``params`` have the same names (any part of the
    model's params, e.g. the trainable half of ``partition_trainable``); each average keeps its
    dtype. TF 1.x checkpoints' own averages load with ``sp.checkpoint.load_tf1(path,
    use_moving_averages=True)``. Eagerly the values are TF's bit for bit; under ``jit`` XLA on CPU
    may fuse the multiply and subtract into one rounding (within an ulp of TF's).

    >>> ema = sp.exponential_moving_average(ema, params, 0.999, num_updates=step + 1)  # doctest: +SKIP
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    flat_averages = _flatten_for("exponential_moving_average", averages)
    flat_params = _flatten_for("exponential_moving_average", params)
    if flat_averages.keys() != flat_params.keys():
        missing = sorted(flat_averages.keys() - flat_params.keys())
        extra = sorted(flat_params.keys() - flat_averages.keys())
        raise ValueError(
            "exponential_moving_average: averages and params name different parameters "
            f"(only in averages: {missing[:5]}, only in params: {extra[:5]}).\n"
            "  fix: pass the same part of the params to both; start the averages as a copy of it.")
    try:
        decay = jnp.asarray(decay, jnp.float32)
    except (TypeError, ValueError):
        raise TypeError(f"exponential_moving_average: decay is {decay!r}"[:200] + ", not a number.\n"
                        "  fix: pass the decay as a float, e.g. 0.999 (TF's "
                        "ExponentialMovingAverage(decay)).") from None
    if num_updates is not None:
        try:  # TF casts the step to float32: a Python or NumPy int straight, not through int32
            if isinstance(num_updates, (str, bytes, bytearray)):
                raise TypeError
            n = (num_updates.astype(jnp.float32) if isinstance(num_updates, jax.Array)
                 else jnp.asarray(np.asarray(num_updates).astype(np.float32)))
        except (TypeError, ValueError, OverflowError):
            raise TypeError(f"exponential_moving_average: num_updates is {num_updates!r}"[:200]
                            + ", not a number.\n  fix: pass the step count (e.g. the integer "
                            "step), or None for a constant decay.") from None
        decay = jnp.minimum(decay, (1.0 + n) / (10.0 + n))
    rate = 1.0 - decay  # TF: in float32, then cast to each variable's dtype
    out = {}
    for name, average in flat_averages.items():
        average, value = jnp.asarray(average), jnp.asarray(flat_params[name])  # Python scalars too
        for tree, x in (("averages", average), ("params", value)):
            if not jnp.issubdtype(x.dtype, jnp.floating):
                raise TypeError(  # TF: "The variables must be half, float, or double"
                    f"exponential_moving_average: '{name}' has dtype {x.dtype} in {tree}; moving "
                    "averages are kept of floating-point parameters only.\n"
                    "  fix: average only the floating-point parameters, e.g. sp.filter_tree("
                    "lambda name, x: jnp.issubdtype(x.dtype, jnp.floating), params).")
        if value.shape != average.shape:
            raise ValueError(
                f"exponential_moving_average: '{name}' has shape {average.shape} in averages and "
                f"{value.shape} in params.\n"
                "  fix: start the averages as a copy of the params they follow.")
        out[name] = average - (average - value.astype(average.dtype)) * rate.astype(average.dtype)
    return unflatten(out)
