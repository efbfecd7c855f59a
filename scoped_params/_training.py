"""Training-state checkpoints (params + optax state + step, any pytree) with orbax's CheckpointManager.

Orbax is what a JAX user expects for resumable training: it writes each step to a temporary
directory and renames it when complete, keeps the last N steps, and restores into the structure,
dtypes and shardings of a target tree. This is a thin, synchronous wrapper.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import operator
import os
import re
import sys
import threading
import time
import warnings
import zlib
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from ._errors import (CheckpointCorruptError, CheckpointError, CheckpointMismatchError,
                      CheckpointNotFoundError, CheckpointPermissionError, StepOrderError,
                      optional_import, permission_error)
from ._tf1 import open_regular

# Orbax (0.12) writes both into a step's temporary directory before renaming it to its final name
# (and, on GCS, writes commit_success.txt last): a step directory holding neither was not
# written to completion by orbax (a stray or half-copied directory), so it is not a step.
_COMPLETE_MARKERS = ("commit_success.txt", "_CHECKPOINT_METADATA")
# The state is orbax's single item, in this subdirectory of a step (orbax writes it before the
# markers; a step directory with the markers but without it is a half-copied step).
_ITEM = "default"
# Orbax keeps no checksum of array data: a flipped bit in a chunk that is stored uncompressed
# restores silently. Each step gets this file beside orbax's (written after orbax commits the step):
# every host-readable leaf's dtype, shape and CRC-32, checked on restore. Beside them, "key_impls"
# (the implementation of every typed PRNG key leaf: orbax's metadata lists a key as its uint32 key
# data) and "python_numbers" (the leaves saved as Python numbers), so that restore compares a
# target's dtypes without reading orbax's metadata (a tensorstore open per leaf). Steps written
# before those two were recorded lack them, and are compared against orbax's metadata.
_CHECKSUMS = "scoped_params_checksums.json"
_CHECKSUMS_FORMAT = 1


def _orbax():
    return optional_import("orbax.checkpoint", "orbax-checkpoint", "checkpoint", "TrainingCheckpointer")


def _step_index(step: Any, api: str) -> int:
    """``step`` as a non-negative int; bools, floats and negatives are refused, never truncated."""
    if isinstance(step, bool) or (hasattr(step, "dtype") and getattr(step.dtype, "kind", "") == "b"):
        raise TypeError(f"TrainingCheckpointer.{api}: step is {step!r}, a bool, not a step number.\n"
                        "  fix: pass the integer step count, e.g. int(state['step']).")
    try:
        index = operator.index(step)
    except TypeError:
        raise TypeError(
            f"TrainingCheckpointer.{api}: step is {step!r} ({type(step).__name__}), not an integer; "
            "steps are never rounded.\n  fix: pass the integer step count, e.g. "
            "int(state['step']) for a step held in an integer array.") from None
    if index < 0:
        raise ValueError(f"TrainingCheckpointer.{api}: step is {index}; steps are non-negative.\n"
                         "  fix: count steps from 0.")
    return index


def _abstract(leaf: Any) -> Any:
    """Shape/dtype (and sharding) of an array leaf; other leaves (Python numbers, None) as they are."""
    import jax
    import numpy as np

    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    if isinstance(leaf, (np.ndarray, np.generic)):
        return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype)
    return leaf


def _weak_types_of(target: Any, restored: Any) -> Any:
    """``restored`` with the weak types of ``target``'s leaves: JAX's type of a value computed from
    a Python number (a learning rate after a jitted step). orbax gives every array a strong type,
    which would recompile the step on resume and promote bfloat16 params that use it to float32."""
    import jax

    try:  # JAX-internal: the one way to make an array weakly typed; without it, left as restored
        from jax._src.lax.lax import _convert_element_type as convert
    except ImportError:  # pragma: no cover - another jax
        return restored

    def leaf(want: Any, got: Any) -> Any:
        if getattr(want, "weak_type", False) and isinstance(got, jax.Array) and not got.weak_type:
            return convert(got, got.dtype, weak_type=True)
        return got

    try:
        return jax.tree_util.tree_map(leaf, target, restored)
    except (ValueError, TypeError):  # another structure than the target's: as restored
        return restored


def _mesh_set() -> Any:
    """The mesh set with ``jax.set_mesh``, or None (none set, or inside a trace)."""
    import jax

    try:
        mesh = jax.sharding.get_mesh()
    except ValueError:  # inside jax.jit: no devices to place on there
        return None
    return None if mesh.empty else mesh


def _on_abstract_mesh(sharding: Any) -> bool:
    """Whether ``sharding`` is a NamedSharding on an AbstractMesh (axis names and sizes, no
    devices): what jax.eval_shape gives under ``jax.set_mesh`` of a mesh with Explicit axes, and
    ``sp.sharding.abstract_params`` with an AbstractMesh."""
    from jax.sharding import AbstractMesh, NamedSharding

    return isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, AbstractMesh)


def _placed(sharding: Any) -> Any:
    """``sharding`` on devices: one on an AbstractMesh moved onto the mesh set with
    ``jax.set_mesh`` when that has its axis names and sizes (as ``sp.shardings`` moves a planned
    AbstractMesh onto a mesh), else None; any other sharding (or None) as it is."""
    if not _on_abstract_mesh(sharding):
        return sharding
    from jax.sharding import NamedSharding

    mesh = _mesh_set()
    if mesh is None or mesh.shape_tuple != sharding.mesh.shape_tuple:
        return None
    return NamedSharding(mesh, sharding.spec, memory_kind=sharding.memory_kind)


def _unplaced(sharding: Any) -> str:
    """Why ``sharding`` (on an AbstractMesh) has no devices to place a leaf on, after 'sharded'."""
    why = (f"on an AbstractMesh {dict(sharding.mesh.shape)} (axis names and sizes, no devices), "
           "and ")
    mesh = _mesh_set()
    if mesh is None:
        return why + "no mesh is set with jax.set_mesh to place it on"
    return why + f"the mesh set with jax.set_mesh has other axes, {dict(mesh.shape)}"


# How a target's or params' leaves sharded on an AbstractMesh get devices.
_ABSTRACT_MESH_FIX = (
    "{call} under the mesh {built} built for, `with jax.set_mesh(mesh): {code}` (a mesh of the "
    "same axis names and sizes: the leaves are placed on it), or build {whose} shardings on a "
    "concrete mesh: jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec)).")


def _abstract_target(target: Any, step: int, directory: str) -> Any:
    """``target``'s leaves as ShapeDtypeStructs (see ``_abstract``) whose shardings have devices:
    those on an AbstractMesh placed on the mesh set with ``jax.set_mesh`` (orbax cannot restore
    onto an AbstractMesh); CheckpointMismatchError naming the leaves where none fits."""
    import jax

    def one(leaf: Any) -> Any:
        leaf = _abstract(leaf)
        if isinstance(leaf, jax.ShapeDtypeStruct) and _on_abstract_mesh(leaf.sharding):
            sharding = _placed(leaf.sharding)
            if sharding is not None:
                return leaf.update(sharding=sharding)
        return leaf

    abstract = jax.tree.map(one, target)
    unplaced = [(p, leaf) for p, leaf in _leaves(abstract)
                if isinstance(leaf, jax.ShapeDtypeStruct) and _on_abstract_mesh(leaf.sharding)]
    if not unplaced:
        return abstract
    path, leaf = unplaced[0]
    others = "" if len(unplaced) == 1 else (
        f"; so {'is' if len(unplaced) == 2 else 'are'} "
        f"{', '.join(repr(p) for p, _ in unplaced[1:9])}"
        + (f" and {len(unplaced) - 9} more" if len(unplaced) > 9 else ""))
    fix = _ABSTRACT_MESH_FIX.format(call="restore", built="the target was", whose="the target's",
                                    code=f"ckpt.restore({step}, target=target)")
    raise CheckpointMismatchError(
        f"TrainingCheckpointer.restore: the target's leaf '{path}' ({_describe_leaf(leaf)}) is "
        f"sharded {_unplaced(leaf.sharding)}{others}; nothing was restored from step {step} in "
        f"{directory!r}.\n  fix: {fix}")


def _fallback_sharding(abstract: Any) -> Any:
    """Where orbax places a leaf the target gives no sharding (``jax.eval_shape`` gives an
    optimizer's step count none) when the step's own sharding names devices this machine lacks
    (saved on another topology; else the saved sharding is used): replicated on the mesh of the
    target's first leaf on one, or on this process's first device, where JAX puts a new array.
    Without it, orbax refuses the whole restore ('Topology mismatch detected'), naming no leaf."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

    for leaf in jax.tree.leaves(abstract):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and not _on_abstract_mesh(sharding):
            return NamedSharding(sharding.mesh, PartitionSpec(), memory_kind=sharding.memory_kind)
    return SingleDeviceSharding(jax.local_devices()[0])


class CheckpointNotADirectoryError(CheckpointError, NotADirectoryError):
    """A TrainingCheckpointer's directory (or a directory above it) is an existing file."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno None] None: <filename>"
        return str(self.args[0]) if self.args else super().__str__()


class UnsavableLeafError(CheckpointError, TypeError, ValueError):
    """``TrainingCheckpointer.save`` of a state with a leaf orbax cannot save (a string, an object,
    a zero-size array, a deleted array) or two leaves it would store under one name (it joins keys
    with '.'), refused before anything is written; ``sp.checkpoint.save`` raises it for a deleted
    array. A ``TypeError`` and a ``ValueError``: the leaf's type, or
    its value, is what orbax refuses."""


def _path_parts(path: Tuple[Any, ...]) -> List[str]:
    """A pytree key path's keys as strings (dict keys, sequence indices, attribute names): as orbax
    names them (``tree_utils.get_key_name``)."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return parts


def _path_str(path: Tuple[Any, ...]) -> str:
    """A pytree key path as 'params/dense/w' (dict keys, sequence indices, attribute names)."""
    return "/".join(_path_parts(path))


def _orbax_name_collision(state: Any) -> Optional[Tuple[str, str, str]]:
    """Two leaves of ``state`` orbax would store under one name, as ``(path, other path, name)``, or
    None. Orbax names a leaf by joining its keys with '.', so 'block.1/w' and 'block/1/w' (dots are
    valid in scope names) are both 'block.1.w': one would overwrite the other's array."""
    import jax

    seen: Dict[str, str] = {}
    for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]:
        parts = _path_parts(path)
        name, slashed = ".".join(parts), "/".join(parts)
        if name in seen:
            first, second = sorted((seen[name], slashed))
            return first, second, name
        seen[name] = slashed
    return None


def _leaves(tree: Any) -> List[Tuple[str, Any]]:
    import jax

    return [(_path_str(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


# What to do with an array whose buffer is gone (both savers say it): donate_argnums deletes the
# buffers of the state passed to a jitted step; .delete() deletes one.
DELETED_FIX = ("save the state the step returned (a jitted step with donate_argnums deletes the "
               "buffers of the state passed in), or drop donate_argnums; a deleted array cannot be "
               "read back")


def is_deleted(leaf: Any) -> bool:
    """Whether ``leaf`` is a concrete ``jax.Array`` whose buffer was deleted (donated)."""
    import jax

    return (isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
            and leaf.is_deleted())


def _unsavable(leaf: Any) -> Optional[str]:
    """What ``leaf`` is, if orbax cannot save it (it saves arrays of numbers and bools, and Python
    int, float, bool); else None."""
    import jax

    dtype = getattr(leaf, "dtype", None)
    if isinstance(leaf, jax.Array) or (dtype is not None and hasattr(leaf, "shape")
                                       and not isinstance(leaf, jax.ShapeDtypeStruct)):
        kind = getattr(dtype, "kind", "")
        return (f"{type(leaf).__name__} of dtype {getattr(dtype, 'str', dtype)}"
                if kind in ("O", "S", "U") else None)
    if isinstance(leaf, (bool, int, float)):
        return None
    text = repr(leaf)
    return f"{type(leaf).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _describe_leaf(leaf: Any) -> str:
    """'float32[2,2]' for an array (or its metadata), 'int' for a Python number."""
    shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
    if shape is None or dtype is None:
        return type(leaf).__name__
    import numpy as np

    try:
        name = np.dtype(dtype).name
    except TypeError:  # a dtype NumPy does not know: a PRNG key's, key<fry>
        name = str(dtype)
    return f"{name}[{','.join(map(str, shape))}]"


def _listing(leaves: List[Tuple[str, Any]], limit: int = 8) -> str:
    text = ", ".join(f"{path} {_describe_leaf(leaf)}" for path, leaf in leaves[:limit])
    return text + (f", ... ({len(leaves) - limit} more)" if len(leaves) > limit else "")


def _short_repr(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def held_whole(leaf: Any) -> Any:
    """A ``jax.Array``'s value as a NumPy array where this process holds all of it, else None.

    ``np.asarray`` refuses any array with shards on other processes' devices, though a process
    holds the whole of one replicated over the processes (data parallelism's params) or sharded
    only over its own devices in each replica (a 'model' axis within a host): read from its own
    shards, which then cover every index of the array."""
    import numpy as np

    if leaf.is_fully_addressable:
        return np.asarray(leaf)
    if leaf.is_fully_replicated:
        return np.asarray(leaf.addressable_shards[0].data)

    def key(index: Tuple[slice, ...]) -> Tuple[Any, ...]:  # (slices are unhashable before 3.12)
        return tuple((s.start, s.stop, s.step) for s in index)

    shards = {key(s.index): s for s in leaf.addressable_shards}
    if set(shards) != {key(i) for i in leaf.sharding.devices_indices_map(leaf.shape).values()}:
        return None  # parts of it are only on other processes' devices
    whole = np.empty(leaf.shape, leaf.dtype)
    for shard in shards.values():
        whole[shard.index] = np.asarray(shard.data)
    return whole


def _host_bytes(leaf: Any) -> Any:
    """``leaf`` as a C-ordered NumPy array (a PRNG key: its key data), or None where this process
    cannot read all of it (see ``held_whole``) or it is not an array or number."""
    import jax
    import numpy as np

    if isinstance(leaf, jax.Array):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
    elif not isinstance(leaf, (np.ndarray, np.generic, bool, int, float)):
        return None
    try:
        array = held_whole(leaf) if isinstance(leaf, jax.Array) else leaf
        return None if array is None else np.asarray(array, order="C")
    except (TypeError, ValueError):  # a dtype NumPy cannot hold: not checked
        return None


def _crc32(array: Any) -> int:
    return zlib.crc32(array.reshape(-1).view("uint8").data)  # C-ordered: a view, no copy


def _checksums(leaves: List[Tuple[str, Any]]) -> Dict[str, list]:
    """``{path: [dtype, shape, crc32]}`` of every leaf this process can read whole."""
    out = {}
    for path, leaf in leaves:
        array = _host_bytes(leaf)
        if array is not None:
            out[path] = [array.dtype.name, list(array.shape), _crc32(array)]
    return out


def _key_impls(leaves: List[Tuple[str, Any]]) -> Dict[str, str]:
    """``{path: implementation name}`` of every typed PRNG key leaf ('threefry2x32', 'rbg')."""
    import jax

    return {path: str(jax.random.key_impl(leaf)) for path, leaf in leaves
            if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)}


def _python_numbers(leaves: List[Tuple[str, Any]]) -> List[str]:
    """The paths of the leaves that are Python numbers (orbax saves those as scalars; a NumPy
    scalar, though a subclass of float for float64, as an array)."""
    import numpy as np

    return [path for path, leaf in leaves
            if isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic)]


class _Saved(NamedTuple):
    """What a step holds at a path: dtype and shape (a typed key's key data's), whether a Python
    number, and a typed key's implementation ("" for none, None where not recorded)."""
    dtype: Any
    shape: Tuple[int, ...]
    python: bool
    key_impl: Optional[str]


def _key_data(leaf: Any) -> Any:
    """The shape and dtype (a ShapeDtypeStruct) of a typed PRNG key leaf's key data, as orbax saves
    it (a threefry key of shape () is uint32[2]); None for any other leaf."""
    import jax

    dtype = getattr(leaf, "dtype", None)
    if dtype is None or not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return None
    return jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(tuple(leaf.shape), dtype))


def _kind(dtype: Any) -> Optional[int]:
    """0 bool, 1 integer, 2 floating, 3 complex: a cast to a lower kind loses values; None for
    other dtypes."""
    import jax.numpy as jnp

    for rank, kind in enumerate((jnp.bool_, jnp.integer, jnp.floating, jnp.complexfloating)):
        if jnp.issubdtype(dtype, kind):
            return rank
    return None


_KIND_LOSS = {0: "a bool keeps only zero or non-zero", 1: "a float cast to an integer loses its "
              "fraction", 2: "a complex number cast to a real one loses its imaginary part"}


def _cast_loss(saved: Any, target: Any, weak: bool) -> Optional[str]:
    """How casting values of dtype ``saved`` to ``target`` can change them (out of range, or of a
    lower kind), or None where it can at most round them (float32 into bfloat16: the precision a
    target asks for) or leaves them as they are. ``weak``: one side is a Python number (or weakly
    typed, as jax.eval_shape makes them), which has a kind but no width: only kinds are compared, as
    JAX does when a Python number meets an array."""
    import jax.numpy as jnp
    import numpy as np

    saved, target = np.dtype(saved), np.dtype(target)
    if saved == target:
        return None
    have, want = _kind(saved), _kind(target)
    if have is None or want is None:  # not a number dtype: left to orbax
        return None
    if have > want:
        return _KIND_LOSS[want]
    if weak or have == 0:
        return None
    if have == 1 and want == 1:
        s, t = jnp.iinfo(saved), jnp.iinfo(target)
        if s.min < t.min or s.max > t.max:
            return f"{saved.name} values outside {target.name}'s range [{t.min}, {t.max}] wrap around"
        return None
    t_info = jnp.finfo(target)
    # An integer overflows past the target's largest value; a float past its exponent range (by
    # the maximum exponent: bfloat16's largest value is a little below float32's, and a float32
    # value rounds to it, not to inf)
    if (float(jnp.iinfo(saved).max) > float(t_info.max) if have == 1
            else jnp.finfo(saved).maxexp > t_info.maxexp):
        return f"{saved.name} values beyond {target.name}'s ±{float(t_info.max):g} become inf"
    return None


def _key_abstract(impl: str, data_shape: Tuple[int, ...]) -> Any:
    """The ShapeDtypeStruct of the typed PRNG keys of implementation ``impl`` whose key data has
    shape ``data_shape``; None for an implementation unknown to this process."""
    import jax

    try:
        one = jax.eval_shape(lambda: jax.random.key(0, impl=impl))
    except (ValueError, TypeError, KeyError):
        return None
    rank = len(_key_data(one).shape)
    return jax.ShapeDtypeStruct(data_shape[:len(data_shape) - rank], one.dtype)


_PYTHON_KIND = ("bool", "int", "float", "complex")


def _dtype_differences(asked: List[Tuple[str, Any]], saved: Dict[str, _Saved]) -> Dict[str, str]:
    """``{path: 'checkpoint float32[3], target int32[3] (why)'}`` for each leaf of the target whose
    dtype would change the saved values (see ``_cast_loss``); and for each typed PRNG key where the
    step records another implementation, or raw key data, or the other way round (orbax restores a
    key as it was saved, whatever the target asks)."""
    out = {}
    for path, leaf in asked:
        was = saved.get(path)
        if was is None or leaf is None:
            continue
        key = _key_data(leaf)
        have = None  # the saved leaf as the message names it, where not by its dtype and shape
        if was.key_impl:
            saved_key = _key_abstract(was.key_impl, was.shape)
            if saved_key is None:  # an implementation unknown to this process
                continue
            have = _describe_leaf(saved_key)
            why = ("a typed key, not raw key data" if key is None else
                   "another PRNG implementation" if saved_key.dtype != leaf.dtype else None)
        elif key is not None:
            why = ("raw key data, not a typed key" if was.key_impl == "" else
                   f"its key data is {_describe_leaf(key)}" if key.dtype != was.dtype else None)
        elif isinstance(leaf, (bool, int, float)):  # weakly typed: a kind, no width
            why = _cast_loss(was.dtype, type(leaf), weak=True)
        elif hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            why = _cast_loss(was.dtype, leaf.dtype,
                             weak=was.python or bool(getattr(leaf, "weak_type", False)))
        else:
            continue
        if why is None:
            continue
        if have is None:
            kind = _kind(was.dtype)
            have = (f"Python {_PYTHON_KIND[kind]}" if was.python and kind is not None
                    else _describe_leaf(was))
        wanted = (f"Python {type(leaf).__name__}" if isinstance(leaf, (bool, int, float))
                  else _describe_leaf(leaf))
        out[path] = f"checkpoint {have}, target {wanted} ({why})"
    return out


def _chain(error: BaseException) -> List[BaseException]:
    """``error`` and the exceptions it was raised from, outermost first."""
    chain: List[BaseException] = []
    link: Optional[BaseException] = error
    while link is not None and all(link is not seen for seen in chain):
        chain.append(link)
        link = link.__cause__ if link.__cause__ is not None else (
            None if link.__suppress_context__ else link.__context__)
    return chain


def _mentions(error: BaseException, path: str) -> bool:
    paths = {path, os.path.realpath(path)}
    return any(p in str(e) for e in _chain(error) for p in paths)


def _is_refusal(error: BaseException) -> bool:
    """Whether orbax refused the restore (a ValueError: a target leaf it cannot restore into, saved
    shardings on devices this machine lacks), rather than failed on what a step's file holds: its
    readers meet damaged bytes with anything from JSONDecodeError to KeyError, AttributeError or
    NotImplementedError."""
    chain = _chain(error)
    return isinstance(chain[-1], ValueError) and not any(
        isinstance(e, (json.JSONDecodeError, UnicodeDecodeError)) for e in chain)


def _of_the_machine(error: BaseException) -> bool:
    """An error of the machine rather than of the step or the target, passed through restore as
    raised: the OS refusing (a permission, a full disk; not a missing file of the step), or the
    devices out of memory."""
    import jax

    return (isinstance(error, (OSError, MemoryError)) and not isinstance(error, FileNotFoundError)
            or isinstance(error, jax.errors.JaxRuntimeError))


# How tensorstore (orbax's reader) says the OS refused a file: a ValueError, not a PermissionError.
_TENSORSTORE_DENIED = "PERMISSION_DENIED:"
_DENIED_FILE = re.compile(r'"([^"]+)": Permission denied')


def _refusal(error: BaseException) -> Optional[Tuple[Optional[str], Optional[BaseException]]]:
    """(the file, the OS's error) where ``error`` is the OS refusing to read a file (a permission:
    the step is not damaged), else None; either may be None where the error does not say."""
    for e in _chain(error):
        if isinstance(e, PermissionError):
            return e.filename, e
        if isinstance(e, ValueError) and str(e).startswith(_TENSORSTORE_DENIED):
            m = _DENIED_FILE.search(str(e))
            return (m.group(1) if m else None), None
    return None


def _reason(error: BaseException, about: Optional[str] = None) -> str:
    """The innermost exception's type and first line (the one about ``about``, if given), without
    tensorstore's spec (kilobytes of JSON)."""
    chain = _chain(error)
    if about is not None:
        chain = [e for e in chain if _mentions(e, about)] or chain
    inner = chain[-1]
    text = next((line.strip() for line in str(inner).splitlines() if line.strip()), "")
    return f"{type(inner).__name__}: {text.split(' [tensorstore_spec')[0]}"


# warnings.catch_warnings swaps the process's warning filters and puts them back on exit: two
# threads inside it at once could leave the inner one's "always" installed. Held around it.
_WARNINGS_LOCK = threading.Lock()


@contextlib.contextmanager
def _orbax_coroutines_dropped():
    """Around code freeing the coroutines orbax created and abandoned when a read failed: their
    'coroutine ... was never awaited' warnings are dropped; any other warning is issued as usual."""
    orbax_dir = os.path.dirname(os.path.dirname(_orbax().__file__)) + os.sep
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        code = getattr(w.source, "cr_code", None)
        if code is None or not code.co_filename.startswith(orbax_dir):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _collect_orbax_garbage() -> None:
    """``gc.collect()``, without the warnings of orbax's abandoned coroutines."""
    with _orbax_coroutines_dropped():
        gc.collect()


class _StrayReports(logging.Filter):
    """Drops the reports orbax's failed reads of a step leave behind, while that step is restored.

    Orbax reads a step's files on an event loop of its own and closes it as soon as one read fails:
    the reads still in flight then report to the closed loop (tensorstore prints each 'RuntimeError:
    Event loop is closed' as an unraisable exception), reads closed mid-way raise unraisable
    exceptions about the step's files, and asyncio logs the failed tasks ('Task exception was never
    retrieved') when they are freed, during the restore or later. restore() raises an error saying
    what failed; these reports repeat it as tracebacks of orbax's internals. While a restore is in
    ``quiet``, exactly those are dropped (all but 'Event loop is closed' only if about the step's
    files); anything else passes through. One instance: its hook is installed while any restore is.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.RLock()  # re-entered if a collection during quiet() logs
        self._active: List[List[Any]] = []  # [item directory, time of its last dropped report]
        self._previous: Any = None
        self._hook = self.hook

    def _drop(self, error: Optional[BaseException]) -> bool:
        """Note a report about a restore in progress (any, if ``error`` is None)."""
        with self._lock:
            hits = [a for a in self._active if error is None or _mentions(error, a[0])]
            for a in hits:
                a[1] = time.monotonic()
            return bool(hits)

    def filter(self, record: logging.LogRecord) -> bool:  # on the "asyncio" logger
        error = record.exc_info[1] if record.exc_info else None
        return not ("exception was never retrieved" in record.getMessage()
                    and error is not None and self._drop(error))

    def hook(self, unraisable: Any) -> None:  # sys.unraisablehook
        error, tb = unraisable.exc_value, unraisable.exc_traceback
        late_read = (unraisable.object is None and isinstance(error, RuntimeError)
                     and str(error) == "Event loop is closed" and tb is not None
                     and tb.tb_frame.f_code.co_name == "call_soon_threadsafe")  # called from C
        if (late_read and self._drop(None)) or (error is not None and self._drop(error)):
            return
        (self._previous or sys.__unraisablehook__)(unraisable)

    @contextlib.contextmanager
    def quiet(self, item_dir: str):
        """Around orbax's restore of the step in ``item_dir``; yields ``settle``, to call when it
        failed: it collects the failed tasks and waits until the late reads stop reporting (at
        most a second)."""
        entry: List[Any] = [item_dir, time.monotonic()]
        with self._lock:
            if not self._active:
                logging.getLogger("asyncio").addFilter(self)
                self._previous, sys.unraisablehook = sys.unraisablehook, self._hook
            self._active.append(entry)

        def settle() -> None:
            start = time.monotonic()
            _collect_orbax_garbage()
            while time.monotonic() - entry[1] < 0.05 and time.monotonic() - start < 1.0:
                time.sleep(0.01)
            _collect_orbax_garbage()  # the tasks the late reads held

        try:
            yield settle
        finally:
            with self._lock:
                self._active = [a for a in self._active if a is not entry]
                if not self._active:
                    logging.getLogger("asyncio").removeFilter(self)
                    if sys.unraisablehook == self._hook:
                        sys.unraisablehook = self._previous
                    self._previous = None


_STRAY_REPORTS = _StrayReports()


def _as_process_0_has_it(value: Any) -> Any:
    """``value`` (JSON-able) as process 0 has it, in every process; in one process, ``value``.

    Each process lists the shared directory on its own, at its own time: one lagging behind
    another that already deleted a step sees another list. Orbax's delete ends in a barrier of
    all processes, so every decision about which steps to delete (and whether a save may go ahead)
    is process 0's, taken once: every process then makes the same orbax calls. A collective: every
    process calls it at the same point, after listing (so no process deletes before all listed).
    """
    import jax

    if jax.process_count() == 1:
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    data = json.dumps(value).encode()
    # The broadcast's shape must be the same in every process: process 0's size first, rounded
    # up to a power of two so that few shapes are compiled; JSON holds no NUL to pad with
    size = int(multihost_utils.broadcast_one_to_all(np.int32(1 << len(data).bit_length())))
    padded = np.zeros(size, np.uint8)
    padded[:min(size, len(data))] = np.frombuffer(data[:size], np.uint8)
    got = multihost_utils.broadcast_one_to_all(padded)
    return json.loads(np.asarray(got).tobytes().rstrip(b"\0"))


class TrainingCheckpointer:
    """Save and restore a whole training state, one checkpoint per step, keeping the last ``max_to_keep``.

    ``state`` is any pytree: typically ``{"params": params, "opt_state": opt_state, "step": step}``.
    Saves are synchronous: when ``save`` returns, the step is on disk, complete; otherwise it
    raised. Restore with a ``target`` (the state itself, or ``jax.eval_shape`` of how it is built)
    to get optax's named tuples and the target's dtypes and shardings back; without one, orbax
    returns plain dicts/lists. A target dtype may widen a saved leaf or round it (float32 into
    bfloat16), never change its values otherwise: a float into an integer, float32 into float16
    (overflow to inf), int32 into uint8 (wrap-around) raise ``CheckpointMismatchError``. A Python
    number (saved, or in the target) has a kind but no width, so only its kind is compared: a saved
    ``0.5`` restores into ``0.1`` or a float32 array, not into ``0``.

    Steps only move forward. ``save(step)`` requires ``step`` to be after every step on disk, and
    raises ``StepOrderError`` otherwise, never overwriting or skipping: a step below the newest
    would leave the newer steps of an abandoned run as ``latest_step()`` (what a resume restores)
    and would be the first one ``max_to_keep`` prunes. To train again from an earlier step (say,
    after a loss spike), discard the steps after it first: ``ckpt.delete_steps_after(10)``.

    Every call re-reads the directory, so several checkpointers used one after another on one
    directory see each other's steps, refuse each other's step numbers, and together keep at most
    ``max_to_keep`` steps. Processes *concurrently* saving into one directory are not supported (two
    may pass the step check at once); give each run its own directory.

    The processes of one multi-process JAX run (``jax.distributed``) share a checkpointer's
    directory: each calls ``save`` and ``delete_steps_after`` at the same point of the run, as
    orbax requires. Which steps are on disk is then process 0's listing, in every process (one
    lagging behind would find a step already deleted); the host values of the state (NumPy arrays,
    Python numbers) are process 0's, as orbax stores them, and so are the checksums.

    Only complete steps count: a directory named like a step but without orbax's markers
    (``_CHECKPOINT_METADATA``, ``commit_success.txt``) or without the state's item directory
    (``default/``: a half-copied step) is not listed, restored or pruned. Each step also records
    the dtype, shape and CRC-32 of every leaf (``scoped_params_checksums.json``; orbax keeps no
    checksum of array data, and a flipped bit would restore silently); ``restore`` checks the
    leaves it returns in their saved dtype and shape. Restoring a step whose files are damaged
    raises ``CheckpointCorruptError`` naming an earlier step to restore instead. Leaves sharded
    across processes (not readable whole by one process) are not checksummed.

    >>> import optax
    >>> params = {"dense": {"w": jnp.ones((3, 2))}}
    >>> optimizer = optax.adam(1e-3)
    >>> initial_state = {"params": params, "opt_state": optimizer.init(params), "step": 0}
    >>> ckpt = sp.checkpoint.TrainingCheckpointer("run1", max_to_keep=3)
    >>> ckpt.save(100, {**initial_state, "step": 100})
    >>> state = ckpt.restore(target=initial_state)   # the latest step, in the target's structure
    >>> state["step"], ckpt.all_steps()
    (100, [100])
    >>> ckpt.save(200, {**initial_state, "step": 200})
    >>> ckpt.delete_steps_after(100)                # roll back to step 100 and train again
    [200]
    """

    def __init__(self, directory, max_to_keep: Optional[int] = 3):
        if max_to_keep is not None:
            if isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1:
                raise ValueError(
                    f"TrainingCheckpointer: max_to_keep is {max_to_keep!r}.\n"
                    "  fix: pass a positive int, or None to keep every step.")
        ocp = _orbax()
        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        existing = self.directory
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if os.path.exists(existing) and not os.path.isdir(existing):
            under = "" if existing == self.directory else f" (given {self.directory!r}, under it)"
            raise CheckpointNotADirectoryError(
                f"TrainingCheckpointer: {existing!r} is a file, not a directory{under}; a "
                "TrainingCheckpointer keeps each step in a subdirectory of its directory.\n"
                "  fix: pass the path of a directory (new or existing), not of a file; a weights "
                "file is read with sp.checkpoint.load(path).")
        self.max_to_keep = max_to_keep
        # Pruning is done here, from the steps on disk: orbax's own pruning counts only the steps
        # this manager knows (and would count incomplete directories).
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=None, create=True,
                                                 enable_async_checkpointing=False))

    def __repr__(self) -> str:
        return f"TrainingCheckpointer({self.directory!r}, steps={self.all_steps()})"

    def _step_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _steps_on_disk(self) -> Tuple[List[int], List[int]]:
        """(complete steps, incomplete step directories), oldest first, re-read from disk."""
        self._manager.reload()
        complete: List[int] = []
        incomplete: List[int] = []
        for step in sorted(self._manager.all_steps()):
            path = self._step_path(step)
            done = (any(os.path.exists(os.path.join(path, m)) for m in _COMPLETE_MARKERS)
                    and os.path.isdir(os.path.join(path, _ITEM)))
            (complete if done else incomplete).append(step)
        return complete, incomplete

    def _steps_agreed(self) -> Tuple[List[int], List[int]]:
        """``_steps_on_disk``, as process 0 lists it, in every process (see
        ``_as_process_0_has_it``); every process's manager has re-read the directory."""
        complete, incomplete = _as_process_0_has_it(self._steps_on_disk())
        return complete, incomplete

    def _incomplete_error(self, step: int, api: str) -> str:
        path = self._step_path(step)
        if any(os.path.exists(os.path.join(path, m)) for m in _COMPLETE_MARKERS):
            missing = f"no {_ITEM!r} item directory"
        else:
            missing = f"no {' or '.join(_COMPLETE_MARKERS)}"
        return (f"TrainingCheckpointer.{api}: the directory of step {step}, "
                f"{path!r}, is incomplete ({missing}): "
                "an interrupted copy, or a directory orbax did not write.\n"
                "  fix: if no other process is writing it, delete it: "
                f"shutil.rmtree({self._step_path(step)!r})")

    def save(self, step: int, state: Any) -> None:
        """Write ``state`` as step ``step`` (atomically), then delete the oldest steps beyond
        ``max_to_keep``. ``step`` must be after every step on disk (``StepOrderError`` otherwise:
        see the class docstring and ``delete_steps_after``). A leaf orbax cannot save (a string, an
        object, a zero-size array), or two leaves orbax would store under one name ('block.1/w'
        and 'block/1/w' are both its 'block.1.w'), raises ``UnsavableLeafError`` naming them;
        nothing is written."""
        step = _step_index(step, "save")
        complete, incomplete = self._steps_agreed()
        if step in incomplete:
            raise StepOrderError(self._incomplete_error(step, "save"))
        if complete and step <= complete[-1]:
            kept = [s for s in complete if s < step]
            if kept:
                rollback = (f"ckpt.delete_steps_after({kept[-1]}) keeps {kept} and deletes "
                            f"{[s for s in complete if s > kept[-1]]}")
            elif step > 0:
                rollback = f"ckpt.delete_steps_after({step - 1}) deletes every step, {complete}"
            else:
                rollback = ""
            fix = (f"to train again from an earlier step, delete the steps after it first: "
                   f"{rollback}; or save the new run in another directory." if rollback else
                   "save the new run in another directory.")
            raise StepOrderError(
                f"TrainingCheckpointer.save: step {step} is not after the newest step on disk, "
                f"{complete[-1]} (steps in {self.directory!r}: {complete}); nothing was written. "
                "Saving it would overwrite a step, or leave the newer steps as the latest.\n"
                f"  fix: {fix}")
        leaves = _leaves(state)
        if not leaves:
            raise ValueError(
                f"TrainingCheckpointer.save: the state for step {step} has no leaves "
                f"({type(state).__name__} {_short_repr(state)}): there is nothing to save, and "
                "orbax refuses an empty item; nothing was written.\n"
                "  fix: save the training state itself, e.g. {'params': params, 'opt_state': "
                "opt_state, 'step': step}.")
        for path, leaf in leaves:
            if is_deleted(leaf):
                raise UnsavableLeafError(
                    f"TrainingCheckpointer.save: the state's leaf '{path}' is a deleted array "
                    f"({_describe_leaf(leaf)}): its buffer is gone, so nothing was written for step "
                    f"{step} in {self.directory!r}.\n  fix: {DELETED_FIX}.")
            found = _unsavable(leaf)
            if found is not None:
                raise UnsavableLeafError(
                    f"TrainingCheckpointer.save: the state's leaf '{path}' is {found}; orbax saves "
                    "arrays of numbers or bools and Python int, float and bool, so nothing was "
                    f"written for step {step} in {self.directory!r}.\n  fix: keep it out of the "
                    "saved state (e.g. save configuration next to the checkpoints), or store it as "
                    "a number or array.")
            if getattr(leaf, "size", None) == 0 and hasattr(leaf, "shape"):
                rebuild = f"jnp.zeros({tuple(leaf.shape)}, {_describe_leaf(leaf).split('[')[0]!r})"
                raise UnsavableLeafError(
                    f"TrainingCheckpointer.save: the state's leaf '{path}' is a zero-size array "
                    f"({_describe_leaf(leaf)}); orbax cannot save zero-size arrays, so nothing was "
                    f"written for step {step} in {self.directory!r}.\n  fix: keep it out of the "
                    f"saved state and rebuild it after restoring ({rebuild}), or save it in a "
                    "weights file with sp.checkpoint.save, which holds zero-size arrays.")
        collision = _orbax_name_collision(state)
        if collision is not None:
            first, second, name = collision
            raise UnsavableLeafError(
                f"TrainingCheckpointer.save: the state's leaves '{first}' and '{second}' would both "
                f"be stored as '{name}' (orbax names each leaf by joining its keys with '.'), and one "
                f"would overwrite the other; nothing was written for step {step} in "
                f"{self.directory!r}.\n  fix: rename one so that the names differ by more than '.' "
                "and '/' (e.g. sp.scope('block_1') for sp.scope('block.1')), or save the params "
                "in a weights file with sp.checkpoint.save, which keys them by their '/' names.")
        import jax

        # Orbax stores host values (NumPy arrays, Python numbers) from process 0 alone, and every
        # process's arrays are the same: process 0's checksums describe what is stored
        checksums = None if jax.process_index() else {
            "format": _CHECKSUMS_FORMAT, "leaves": _checksums(leaves),
            "key_impls": _key_impls(leaves), "python_numbers": _python_numbers(leaves)}
        saved = self._manager.save(step, args=self._ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()
        listed = self._steps_on_disk()[0]
        failed: Optional[BaseException] = None
        if checksums is not None and saved and step in listed:
            from .checkpoint import _atomic_write

            try:
                _atomic_write(os.path.join(self._step_path(step), _CHECKSUMS),
                              json.dumps(checksums, sort_keys=True).encode())
            except Exception as e:  # raised below, once every process knows
                failed = e
        # Process 0's outcome, taken once every process has listed the steps (none prunes before
        # all did) and process 0 has written the checksums (none restores the step before)
        saved, complete, why = _as_process_0_has_it(
            [bool(saved), listed, None if failed is None else f"{type(failed).__name__}: {failed}"])
        if not saved or step not in complete:
            raise CheckpointError(
                f"TrainingCheckpointer.save: orbax did not write step {step} to "
                f"{self.directory!r} (save returned {saved!r}; complete steps on disk: {complete}).\n"
                "  fix: check that the directory is writable and not read-only for orbax.")
        if failed is not None:
            raise failed
        if why is not None:
            raise CheckpointError(
                f"TrainingCheckpointer.save: process 0 could not write the checksums file "
                f"{_CHECKSUMS!r} of step {step} in {self.directory!r} ({why}); the step itself is "
                "complete, and restores unchecked.\n"
                "  fix: see process 0's error (its disk, its permissions).")
        if self.max_to_keep is not None:
            for old in complete[:-self.max_to_keep]:
                self._manager.delete(old)

    def delete_steps_after(self, step: int) -> List[int]:
        """Delete every step newer than ``step`` (newest first) and return them, oldest first: how
        to train again from an earlier step without the abandoned run's steps shadowing the new
        ones. ``step`` itself need not exist.

        >>> ckpt = sp.checkpoint.TrainingCheckpointer("rollback", max_to_keep=None)
        >>> for s in (10, 20, 30):
        ...     ckpt.save(s, {"w": jnp.full(2, float(s))})
        >>> ckpt.delete_steps_after(10)
        [20, 30]
        >>> ckpt.save(20, {"w": jnp.zeros(2)}); ckpt.all_steps()
        [10, 20]
        """
        step = _step_index(step, "delete_steps_after")
        newer = [s for s in self._steps_agreed()[0] if s > step]
        for s in reversed(newer):  # newest first: an interruption leaves a shorter, valid history
            self._manager.delete(s)
        return newer

    def latest_step(self) -> Optional[int]:
        """The newest complete step on disk, or ``None``."""
        complete, _ = self._steps_on_disk()
        return complete[-1] if complete else None

    def all_steps(self) -> List[int]:
        """The complete steps saved in the directory, oldest first (re-read from disk)."""
        return self._steps_on_disk()[0]

    def restore(self, step: Optional[int] = None, target: Any = None) -> Any:
        """The state saved at ``step`` (default: the latest), shaped like ``target`` when given.

        ``target`` may hold concrete arrays or ``jax.ShapeDtypeStruct``s; only its structure,
        shapes, dtypes and shardings are used. A leaf sharded on an ``AbstractMesh`` (what
        ``jax.eval_shape`` gives under ``jax.set_mesh`` of a mesh with Explicit axes) is placed on
        the mesh set with ``jax.set_mesh`` (of the same axis names and sizes); without one,
        ``CheckpointMismatchError`` names the leaf. A leaf without a sharding (``jax.eval_shape``
        gives an optimizer's step count none) is placed as it was saved, or, if saved on devices
        this machine lacks, replicated on the mesh of the target's other leaves (without one, on
        the first device). An incomplete step directory is never restored; a step whose files
        cannot be read raises ``CheckpointCorruptError`` (naming an earlier step), one whose files
        the OS refuses to read ``CheckpointPermissionError`` (a ``PermissionError``: the step is
        not damaged), one that does not fit ``target``
        ``CheckpointMismatchError`` (naming what differs: entries, shapes, or a dtype the saved values would not survive, e.g. float32 into
        int32 or float16; restore into the saved dtypes and cast afterwards to accept that loss). A
        typed PRNG key fits a step holding a key of its implementation.
        """
        steps, incomplete = self._steps_on_disk()
        if step is None:
            if not steps:
                also = (f" (incomplete step directories, not restorable: {incomplete})"
                        if incomplete else "")
                raise CheckpointNotFoundError(
                    f"no training checkpoint in {self.directory!r}{also}.\n"
                    "  fix: check the directory, or start from a fresh state when latest_step() "
                    "is None.")
            step = steps[-1]
        else:
            step = _step_index(step, "restore")
            if step in incomplete:
                raise CheckpointNotFoundError(self._incomplete_error(step, "restore"))
            if step not in steps:
                raise CheckpointNotFoundError(
                    f"no training checkpoint for step {step} in {self.directory!r}; steps on disk: "
                    f"{steps}.\n  fix: restore one of those steps, or restore() for the latest.")
        args = None
        if target is not None:
            abstract = _abstract_target(target, step, self.directory)
            args = self._ocp.args.StandardRestore(
                abstract, fallback_sharding=_fallback_sharding(abstract))
        failure: Optional[Exception] = None
        with _STRAY_REPORTS.quiet(os.path.join(self._step_path(step), _ITEM)) as settle:
            unreadable = None
            if target is not None:
                # Orbax casts every leaf to the target's dtype, whatever that does to the values
                # (1e5 into float16 is inf, 300 into uint8 is 44): compared first, from what the
                # step records, else from its metadata. Metadata that cannot be read is left to
                # orbax's restore to report.
                asked = _leaves(target)
                saved = self._recorded(step)
                found = None
                if saved is None or any(p not in saved for p, _ in asked):
                    found, unreadable = self._saved_leaves(step)
                    saved = None if found is None else self._as_saved(step, found)
                if saved is not None and _dtype_differences(asked, saved):
                    if found is None:
                        found, _ = self._saved_leaves(step)
                    lossy = self._mismatch(step, target, None, found)
                    assert lossy is not None  # (a dtype differs)
                    raise lossy
            try:
                if args is None:
                    restored = self._manager.restore(step)
                else:
                    restored = self._manager.restore(step, args=args)
            except Exception as e:
                # A target that does not fit, or damaged files, whatever orbax's readers raise for
                # them (KeyboardInterrupt and the like are not caught)
                refusal = _refusal(e)
                if refusal is not None:
                    raise self._refused(step, *refusal) from None
                if _of_the_machine(e):
                    raise
                failure = e
            if failure is not None:
                # Explained outside the except block, so that once `failure` is dropped nothing
                # keeps orbax's failed tasks alive: settle() collects them.
                error = self._failed_restore(step, steps, target, failure)
                with _orbax_coroutines_dropped():  # those freed with it
                    del failure
                settle()
                raise error
            if unreadable is not None:  # the failed metadata read's reports
                settle()
        damage = self._check_data(step, restored)
        if damage is not None:
            raise self._corrupt(step, steps, target, damage)
        return restored if target is None else _weak_types_of(target, restored)

    def _check_data(self, step: int, restored: Any) -> Optional[str]:
        """What is wrong with ``restored``'s data against the checksums saved with step ``step``, or
        None. A step without the file (saved by orbax alone, or interrupted between orbax's commit
        and the file) is not checked; a leaf restored in another dtype or shape than saved (a
        target's) or that this process cannot read whole is not checked."""
        record, problem = self._read_checksums(step)
        if problem is not None or record is None:
            return problem
        try:
            if record.get("format") != _CHECKSUMS_FORMAT:
                return (f"its checksums file {_CHECKSUMS!r} has format {record.get('format')!r}, "
                        f"not {_CHECKSUMS_FORMAT}")
            saved = {p: (dtype, tuple(shape), int(crc)) for p, (dtype, shape, crc)
                     in record["leaves"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return f"its checksums file {_CHECKSUMS!r} cannot be read ({type(e).__name__}: {e})"
        for leaf_path, leaf in _leaves(restored):
            expected = saved.get(leaf_path)
            if expected is None:
                continue
            array = _host_bytes(leaf)
            if array is None or (array.dtype.name, array.shape) != expected[:2]:
                continue
            crc = _crc32(array)
            if crc != expected[2]:
                return (f"the data of '{leaf_path}' ({_describe_leaf(array)}) does not match the "
                        f"checksum saved with it (CRC-32 {crc:#010x}, saved {expected[2]:#010x}): "
                        "its array files changed after they were written")
        return None

    def _saved_leaves(self, step: int) -> Tuple[Optional[List[Tuple[str, Any]]], Optional[str]]:
        """(the leaves of step ``step``'s metadata, None), or (None, why it cannot be read). Read
        with a handler of its own: the manager's item_metadata is None in a fresh process."""
        from etils import epath  # orbax's path type

        handler = self._ocp.StandardCheckpointHandler()
        with _orbax_coroutines_dropped():  # a failed read's, freed with its exception
            try:
                return _leaves(handler.metadata(epath.Path(self._step_path(step)) / _ITEM).tree), None
            except Exception as e:
                return None, _reason(e)
            finally:
                handler.close()

    def _read_checksums(self, step: int) -> Tuple[Any, Optional[str]]:
        """(step ``step``'s checksums file, parsed, None); (None, None) without one; (None, what
        is wrong with it), if it is damaged. The OS refusing to read it is no damage: raised."""
        path = os.path.join(self._step_path(step), _CHECKSUMS)
        try:
            f = open_regular(path)  # (a FIFO would wait for a writer)
            if f is None:
                return None, f"its checksums file {_CHECKSUMS!r} is not a regular file"
            with f:
                text = f.read()
        except FileNotFoundError:
            return None, None
        except PermissionError as e:
            raise self._refused(step, path, e) from None
        try:
            return json.loads(text), None
        except (ValueError, RecursionError) as e:  # (nested deeper than json's recursion goes)
            return None, (f"its checksums file {_CHECKSUMS!r} cannot be read ({type(e).__name__}: "
                          f"{str(e)[:200]})")

    def _refused(self, step: int, path: Optional[str],
                 cause: Optional[BaseException]) -> CheckpointPermissionError:
        """The error for restoring step ``step`` when the OS refused to read ``path`` (None: a
        file of the step, unnamed)."""
        return permission_error(path or self._step_path(step),
                                f"TrainingCheckpointer.restore: step {step} in {self.directory!r} "
                                "cannot be read, and nothing was restored", cause)

    def _record(self, step: int) -> Dict[str, Any]:
        """Step ``step``'s checksums file, read; ``{}`` where it is absent or damaged (the data
        check reports that)."""
        record, _ = self._read_checksums(step)
        return record if isinstance(record, dict) and record.get("format") == _CHECKSUMS_FORMAT else {}

    def _recorded(self, step: int) -> Optional[Dict[str, _Saved]]:
        """The leaves step ``step``'s checksums file records, or None where it does not record
        Python numbers and key implementations (a step saved before they were)."""
        import ml_dtypes  # the dtypes NumPy cannot look up by name (bfloat16, float8_*)
        import numpy as np

        def dtype(name: str) -> Any:
            return np.dtype(getattr(ml_dtypes, name) if hasattr(ml_dtypes, name) else name)

        record = self._record(step)
        impls, python = record.get("key_impls"), record.get("python_numbers")
        if not isinstance(impls, dict) or not isinstance(python, list):
            return None
        try:
            return {p: _Saved(dtype(name), tuple(shape), p in python, impls.get(p, ""))
                    for p, (name, shape, _) in record["leaves"].items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def _as_saved(self, step: int, found: List[Tuple[str, Any]]) -> Dict[str, _Saved]:
        """Orbax's metadata of step ``step``, with the key implementations its checksums file
        records, if any."""
        impls = self._record(step).get("key_impls")
        scalar = self._ocp.metadata.ScalarMetadata  # a Python number, saved
        return {p: _Saved(meta.dtype, tuple(meta.shape), isinstance(meta, scalar),
                          impls.get(p, "") if isinstance(impls, dict) else None)
                for p, meta in found if getattr(meta, "dtype", None) is not None
                and getattr(meta, "shape", None) is not None}

    def _failed_restore(self, step: int, steps: List[int], target: Any,
                        error: Exception) -> CheckpointError:
        """What orbax's ``error`` restoring step ``step`` means: damaged files (the metadata
        cannot be read, reading the step's files failed, or orbax failed on what they hold), or a
        target (or, without one, devices) that does not fit."""
        found, unreadable = self._saved_leaves(step)
        if unreadable is not None:
            return self._corrupt(step, steps, target, f"its metadata cannot be read: {unreadable}")
        if target is not None:
            mismatch = self._mismatch(step, target, error, found)
            if mismatch is not None:  # entries or shapes differ: the target's structure is wrong
                return mismatch
        item = os.path.join(self._step_path(step), _ITEM)
        if _mentions(error, item):  # tensorstore failed reading the files of a step that fits
            return self._corrupt(step, steps, target,
                                 f"its array data cannot be read: {_reason(error, item)}")
        if not _is_refusal(error):  # the step fits, and orbax's readers choked on its files
            return self._corrupt(step, steps, target,
                                 f"orbax cannot make sense of its files: {_reason(error)}")
        if target is not None:
            explained = self._mismatch(step, target, error, found, orbax_reason=True)
            assert explained is not None  # (orbax_reason: always an error)
            return explained
        return CheckpointMismatchError(
            f"TrainingCheckpointer.restore: orbax cannot restore step {step} in "
            f"{self.directory!r} without a target; nothing was restored.\n"
            f"  orbax: {_reason(error)}\n"
            "  fix: pass a target built the same way as the saved state (the state itself, or "
            f"jax.eval_shape of how it is built): ckpt.restore({step}, target=target).")

    def _corrupt(self, step: int, steps: List[int], target: Any,
                 found: str) -> CheckpointCorruptError:
        path = self._step_path(step)
        earlier = [s for s in steps if s < step]
        others = [s for s in steps if s != step]
        with_target = ", target=target" if target is not None else ""
        if earlier:
            fix = (f"restore an earlier step, e.g. ckpt.restore({earlier[-1]}{with_target}) "
                   f"(steps on disk: {steps}); to train on from it, first delete the damaged step "
                   f"and those after it: ckpt.delete_steps_after({earlier[-1]}) (deletes "
                   f"{[s for s in steps if s > earlier[-1]]}).")
        elif others:
            fix = (f"no earlier step is on disk: restore a later one, e.g. ckpt.restore("
                   f"{others[0]}{with_target}) (steps on disk: {steps}), or restore {path!r} "
                   "from a backup.")
        else:
            delete = (f"ckpt.delete_steps_after({step - 1})" if step > 0
                      else f"shutil.rmtree({path!r})")
            fix = (f"no other step is on disk: restore {path!r} from a backup, or delete it and "
                   f"start from a fresh state: {delete}.")
        err = CheckpointCorruptError(
            f"TrainingCheckpointer.restore: step {step} in {self.directory!r} is damaged (in "
            f"{os.path.join(path, _ITEM)!r}): {found}; nothing was restored.\n  fix: {fix}")
        err.filename = path
        return err

    def _mismatch(self, step: int, target: Any, error: Optional[Exception],
                  found: Optional[List[Tuple[str, Any]]],
                  orbax_reason: bool = False) -> Optional[CheckpointMismatchError]:
        """Why ``target`` does not fit step ``step``: the entries, shapes and dtypes that differ,
        from the step's metadata ``found`` (orbax's own diff names bare keys and advises an option
        restore() lacks). None if none differ, unless ``orbax_reason``: then orbax's reason is
        given."""
        asked = _leaves(target)
        lines = [f"TrainingCheckpointer.restore: step {step} in {self.directory!r} does not fit "
                 "the given target; nothing was restored."]
        dtypes: Dict[str, str] = {}
        if found is not None:
            found_shapes = dict(found)
            asked_names = {p for p, _ in asked}
            missing = [p for p, _ in found if p not in asked_names]
            extra = [p for p, _ in asked if p not in found_shapes]
            dtypes = _dtype_differences(asked, self._as_saved(step, found))
            shapes = []
            for p, leaf in asked:
                saved = getattr(found_shapes.get(p), "shape", None)
                if saved is None or not hasattr(leaf, "shape"):
                    continue
                key = _key_data(leaf)  # orbax's metadata gives a typed key's key data
                if key is not None and p in dtypes:  # another implementation: named there
                    continue
                if tuple((key if key is not None else leaf).shape) != tuple(saved):
                    of = "" if key is None else f" (key data {tuple(key.shape)})"
                    shapes.append(f"{p}: target {tuple(leaf.shape)}{of}, checkpoint {tuple(saved)}")
            if missing:
                lines.append(f"  in the checkpoint, not in target: {missing[:10]}")
            if extra:
                lines.append(f"  in target, not in the checkpoint: {extra[:10]}")
            if shapes:
                lines.append(f"  shapes differ: {'; '.join(shapes[:10])}")
            if dtypes:
                listed = [f"{p}: {text}" for p, text in sorted(dtypes.items())]
                more = f"; ... ({len(listed) - 10} more)" if len(listed) > 10 else ""
                lines.append("  dtypes differ (restoring could change the saved values): "
                             f"{'; '.join(listed[:10])}{more}")
            lines.append(f"  asked (target): {_listing(asked)}")
            lines.append(f"  found (step {step}): {_listing(found)}")
        # The target's entries, shapes and dtypes are the step's: what orbax refused is elsewhere
        # (a leaf's sharding), and listing the two would show no difference
        agree = (found is not None and len(lines) == 3 and {p: _describe_leaf(x) for p, x in asked}
                 == {p: _describe_leaf(x) for p, x in found})
        if found is None or len(lines) == 3:  # no difference seen here: orbax's reason
            if not orbax_reason:
                return None
            if agree:
                lines = [f"TrainingCheckpointer.restore: orbax cannot restore step {step} in "
                         f"{self.directory!r} into the given target, though its entries, shapes "
                         f"and dtypes are the step's ({_listing(asked)}); nothing was restored."]
            reason = "\n".join(line for line in str(error).splitlines()
                               if "partial_restore" not in line and "strict=False" not in line)
            lines.append(f"  orbax: {reason}")
        if dtypes:  # the first leaf named, as saved
            top = [min(dtypes).split('/')[0]]
        else:
            top = sorted({p.split('/')[0] for p, _ in (found or [])})
        pick = f"ckpt.restore({step})[{top[0]!r}]" if top else f"ckpt.restore({step})"
        if agree:
            lines.append("  fix: check the target's shardings, with which orbax places the "
                         "restored leaves: each must be on this machine's devices (a "
                         "NamedSharding on a jax.sharding.Mesh; one on an AbstractMesh only under "
                         "jax.set_mesh of a mesh of its axes) and divide its leaf's shape; or "
                         f"restore without a target and pick what you need, e.g. {pick} (plain "
                         "dicts and lists: optax states come back as lists).")
        elif dtypes:
            lines.append("  fix: pass a target with the checkpoint's dtypes (built the same way as "
                         "the saved state), and cast after restoring where you want another dtype, "
                         "accepting what it changes (x.astype(dtype)); or restore without a target "
                         f"and pick what you need, e.g. {pick} (plain dicts and lists: optax states "
                         "come back as lists).")
        else:
            lines.append("  fix: pass a target built the same way as the saved state (same entries "
                         "and shapes); or restore without a target and pick what you need, e.g. "
                         f"{pick} (plain dicts and lists: optax states come back as lists).")
        return CheckpointMismatchError("\n".join(lines))

    def close(self) -> None:
        """Release orbax's manager (also on leaving a ``with`` block)."""
        self._manager.close()

    def __enter__(self) -> "TrainingCheckpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
