"""Sharding: TF 1.x partitioners and per-parameter shardings as ``jax.sharding`` shardings.

TF 1.x split a big variable into ``v/part_0``, ``v/part_1``, ... on parameter servers. In JAX the
array stays one logical array named ``v``; *where its pieces live* is a ``jax.sharding`` question.
So a partitioner here decides a ``PartitionSpec`` per parameter, and a mesh turns it into a
``NamedSharding``:

* ``sp.get_param(..., sharding=P(None, "model"))`` fixes one parameter's spec (wins over the scope);
* ``sp.scope(..., partitioner=...)`` sets a default for every parameter created inside, inherited by
  sub-scopes and overridden by an inner ``partitioner=`` exactly like TF's. A partitioner is

  - a callable ``(name, shape, dtype) -> PartitionSpec | None`` (``None``: replicated),
  - a ``Rules`` list (regular expression on the full name -> ``PartitionSpec``, first match wins),
    or a plain list of ``(pattern, spec)`` pairs,
  - a TF stock partitioner (``fixed_size_partitioner``, ``min_max_variable_partitioner``,
    ``variable_axis_size_partitioner``, or any TF-style ``fn(shape=, dtype=) -> [ints]`` through
    ``from_tf_partitioner``): the axis TF would split is sharded over a named mesh axis.

* ``shardings(model, mesh, *args)`` gives the ``NamedSharding`` tree from an abstract trace
  (``model.specs``), allocating nothing; ``init_sharded(model, mesh, key, *args)`` creates the
  parameters directly sharded (``jax.jit(model.init, out_shardings=...)``), so no parameter is ever
  whole on one device (but in XLA's temporaries of an initializer over the whole matrix: the
  orthogonal ones' QR).

>>> from jax.sharding import PartitionSpec as P
>>> rules = sp.sharding.Rules([(r"/kernel$", P(None, "model")), (r"/bias$", P("model"))])
>>> def fn(x):
...     with sp.scope("mlp", partitioner=rules), sp.scope("dense"):
...         w = sp.get_param("kernel", (x.shape[-1], 8))
...         b = sp.get_param("bias", (8,), init=jax.nn.initializers.zeros)
...     return x @ w + b
>>> model = sp.transform(fn)
>>> mesh = jax.make_mesh((2, 4), ("batch", "model"))
>>> params = sp.init_sharded(model, mesh, jax.random.key(0), jax.ShapeDtypeStruct((16, 4), "float32"))
>>> params["mlp"]["dense"]["kernel"].sharding.spec
P(None, 'model')
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import operator
import re
import sys
from typing import Any, Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from ._errors import (KeyArgumentError, ScopedParamsError, check_partitioner, format_site,
                      optional_import)
from ._materialize import initialize
from ._spec import ParamSpec
from ._transform import Transformed, as_key, in_given_order

try:  # a mesh of axis names and sizes only: plans shardings for devices this machine need not have
    from jax.sharding import AbstractMesh
except ImportError:  # pragma: no cover - older jax
    AbstractMesh = Mesh  # type: ignore[misc,assignment]
_MESHES = (Mesh, AbstractMesh)

__all__ = [
    "ShardingError", "PartitionerError", "Rules", "AxisPartitioner", "fixed_size_partitioner",
    "min_max_variable_partitioner", "variable_axis_size_partitioner", "from_tf_partitioner",
    "partition_spec", "partition_specs", "shardings", "init_sharded", "sharded_init_fn",
    "abstract_params",
]

PartitionLike = Union[PartitionSpec, Sharding, None]


class ShardingError(ScopedParamsError, ValueError):
    """A parameter's sharding does not fit its shape or the mesh (unknown axis, not divisible, ...)."""


class PartitionerError(ShardingError, TypeError):
    """A partitioner is not callable, returned something other than a ``PartitionSpec`` or ``None``,
    or cannot be called on a parameter (a TF partitioner on a dtype TF has no ``DType`` for). A
    ``ValueError`` as TF's ("Partitioner must be callable", "Partitioner must return a sequence"),
    and a ``TypeError`` as well, since it is the wrong kind of object."""


# --- partitioners ----------------------------------------------------------------------------------


class Rules:
    """An ordered list of ``(regular expression, PartitionSpec)``: the first pattern that matches
    (``re.search``) the parameter's full name gives its spec; no match means replicated.

    A partitioner like any other: pass it as ``sp.scope(..., partitioner=rules)`` and every parameter
    created in that scope and its sub-scopes is matched against it. Anchor patterns (``^``, ``$``)
    to avoid matching ``dense_1`` with ``dense``. A target of ``None`` means replicated.

    >>> from jax.sharding import PartitionSpec as P
    >>> rules = sp.sharding.Rules([(r"attention/(query|key|value)/kernel$", P(None, "model")),
    ...                            (r"attention/out/kernel$", P("model", None)),
    ...                            (r"embedding$", P("model", None))])
    >>> rules("layer_0/attention/query/kernel", (512, 512), np.float32)
    P(None, 'model')
    """

    __slots__ = ("rules",)

    def __init__(self, rules: Iterable[Tuple[Any, PartitionLike]]):
        compiled: list = []
        for i, item in enumerate(rules):
            try:
                pattern, target = item
            except (TypeError, ValueError):
                raise TypeError(
                    f"Rules: entry {i} is {item!r}; each rule is a (pattern, PartitionSpec) pair.\n"
                    "  fix: Rules([(r'dense/kernel$', P(None, 'model')), ...])") from None
            if not isinstance(target, (PartitionSpec, Sharding)) and target is not None:
                axes = tuple(target) if isinstance(target, (tuple, list)) else (target,)
                raise TypeError(
                    f"Rules: the target of pattern {pattern!r} is {target!r}, not a PartitionSpec.\n"
                    f"  fix: write P(...) (jax.sharding.PartitionSpec), e.g. ({pattern!r}, "
                    f"P({', '.join(map(repr, axes))}))")
            try:
                regex = re.compile(pattern) if isinstance(pattern, str) else pattern
                regex.search("")
            except (re.error, AttributeError, TypeError) as e:
                raise TypeError(f"Rules: pattern {pattern!r} is not a regular expression ({e}).") from None
            compiled.append((regex, target))
        self.rules: Tuple[Tuple[re.Pattern, PartitionLike], ...] = tuple(compiled)

    def match(self, name: str) -> Optional[Tuple[re.Pattern, PartitionLike]]:
        """The first ``(compiled pattern, target)`` whose pattern matches ``name``, else ``None``."""
        for regex, target in self.rules:
            if regex.search(name):
                return regex, target
        return None

    def __call__(self, name: str, shape: Tuple[int, ...], dtype: Any) -> PartitionLike:
        hit = self.match(name)
        return None if hit is None else hit[1]

    def __add__(self, other: "Rules") -> "Rules":
        """Concatenate: ``specific + general`` keeps ``specific``'s rules first."""
        other = other if isinstance(other, Rules) else Rules(other)
        return Rules(self.rules + other.rules)  # compiled patterns: their flags (re.I, ...) stay

    def __repr__(self) -> str:
        inner = ", ".join(f"({r.pattern!r}, {t!r})" for r, t in self.rules)
        return f"Rules([{inner}])"


class AxisPartitioner:
    """A TF 1.x partitioner mapped onto a mesh axis.

    ``partitions(shape, dtype)`` is TF's answer (one count per array axis, at most one above 1); as a
    partitioner it returns a ``PartitionSpec`` that shards that array axis over ``mesh_axis`` when
    TF would split it, and ``None`` (replicated) when TF would not. JAX cuts a sharded axis into as
    many pieces as ``mesh_axis`` has devices, so TF's count decides *whether* an axis is sharded, the
    mesh decides *into how many* pieces. ``axis`` is the array axis TF splits (negative counts from
    the end), or ``None`` for ``from_tf_partitioner``, whose function picks it.
    """

    __slots__ = ("_count", "axis", "mesh_axis", "_what")

    def __init__(self, count: Callable[[Tuple[int, ...], np.dtype], Sequence[int]],
                 axis: Optional[int], mesh_axis: Union[str, Tuple[str, ...]], what: str):
        self._count = count
        self.axis = axis
        self.mesh_axis = mesh_axis
        self._what = what

    def partitions(self, shape: Sequence[int], dtype: Any) -> list:
        """TF's partition list for ``shape``: ``[1, ..., n, ..., 1]``, checked as TF checks it
        (a sequence, one count per axis, each at least 1, at most one above 1)."""
        return self._partitions(tuple(shape), dtype, f"{self._what} for shape {tuple(shape)}")

    def _partitions(self, shape: Tuple[int, ...], dtype: Any, who: str) -> list:
        """``partitions``; ``who`` (the parameter, where it was created, and this partitioner) starts
        the errors, which carry TF's ``_call_partitioner`` words."""
        parts = self._count(shape, np.dtype(dtype))
        fix = ("  fix: return one count per array axis, e.g. [1, 4] to split axis 1 of a rank-2 "
               "parameter in 4, or give this parameter sharding=P(...) in get_param.")
        if not isinstance(parts, collections.abc.Sequence):  # TF's test: so not an array either
            raise PartitionerError(f"Partitioner must return a sequence, but saw: {parts!r} "
                                   f"({who}).\n{fix}")
        try:
            counts = [_as_count(n) for n in parts]
        except TypeError:
            raise PartitionerError(f"Partitioner must return a sequence of ints, but saw: "
                                   f"{parts!r} ({who}).\n{fix}") from None
        if len(counts) != len(shape):
            raise ShardingError(f"Partitioner returned a partition list that does not match the "
                                f"Variable's rank: {counts} vs. {shape} ({who}).\n{fix}")
        if any(n < 1 for n in counts):
            raise ShardingError(f"Partitioner returned zero partitions for some axes: {counts} "
                                f"({who}).\n  fix: return counts of at least 1 (1: that axis is "
                                "not split).")
        if sum(n > 1 for n in counts) > 1:
            raise ShardingError(f"Can only slice a variable along one dimension: shape: {shape}, "
                                f"partitioning: {counts} ({who}).\n"
                                "  fix: return counts above 1 for at most one axis, or return a "
                                "PartitionSpec naming a mesh axis per array axis.")
        return counts

    def __call__(self, name: str, shape: Tuple[int, ...], dtype: Any) -> PartitionLike:
        return self._spec(name, tuple(shape), dtype)

    def _spec(self, name: str, shape: Tuple[int, ...], dtype: Any, where: str = "") -> PartitionLike:
        """``__call__``; ``where`` (the parameter's creation site, known to ``sp.shardings``) goes
        into the errors, which name the parameter that ``partitions`` does not know."""
        axis, rank = self.axis, len(shape)
        if axis is not None and not -rank <= axis < rank:
            raise ShardingError(
                f"Parameter '{name}'{where}: its partitioner {self._what} splits axis {axis}, which "
                f"is out of range for its shape {shape} (rank {rank}).\n"
                "  fix: give this parameter sharding=P(...) in get_param (sharding=P() replicates "
                f"it), or use an axis it has (-{rank} <= axis < {rank}).")
        try:
            parts = self._partitions(shape, dtype, f"parameter '{name}'{where}, partitioner {self._what}")
        except _NoTFDtype as e:
            raise PartitionerError(
                f"Parameter '{name}'{where} has dtype {np.dtype(dtype).name}, which TensorFlow has no "
                f"DType for, so its TF partitioner {self._what} cannot be called on it ({e.__cause__}).\n"
                "  fix: use sp.sharding.fixed_size_partitioner, min_max_variable_partitioner or "
                "variable_axis_size_partitioner (TF's arithmetic without TensorFlow), or give this "
                "parameter sharding=P(...) in get_param.") from None
        split = [i for i, p in enumerate(parts) if p > 1]
        if not split:
            return None
        return PartitionSpec(*([None] * split[0] + [self.mesh_axis]))

    def __repr__(self) -> str:
        return f"{self._what} on mesh axis {self.mesh_axis!r}"


def _as_count(n: Any) -> int:
    """A partition count as an int: an integer, or a float of integral value (``np.ceil``'s)."""
    if isinstance(n, (float, np.floating)) and float(n).is_integer():
        return int(n)
    return operator.index(n)


def _check_axis(shape, axis, what) -> int:
    """``axis`` as a non-negative index into ``shape``; an error when ``shape`` has no such axis."""
    if not -len(shape) <= axis < len(shape):
        raise ShardingError(f"{what}: axis {axis} is out of range for shape {tuple(shape)}.\n"
                            f"  fix: use an axis the shape has (-{len(shape)} <= axis < {len(shape)}).")
    return axis % len(shape)


def _bytes_per_element(dtype, bytes_per_string_element):
    return bytes_per_string_element if dtype.kind in "SUO" else dtype.itemsize


def fixed_size_partitioner(num_shards: int, axis: int = 0, *,
                           mesh_axis: Union[str, Tuple[str, ...]] = "model") -> AxisPartitioner:
    """TF's ``fixed_size_partitioner``: split ``axis`` in ``min(num_shards, shape[axis])`` parts;
    here, shard ``axis`` over ``mesh_axis`` when that count is above 1.

    >>> sp.sharding.fixed_size_partitioner(4).partitions((10, 10), np.float32)
    [4, 1]
    >>> sp.sharding.fixed_size_partitioner(4)("w", (10, 10), np.float32)
    P('model',)
    """
    what = f"fixed_size_partitioner({num_shards}, axis={axis})"

    def count(shape, dtype):
        ax = _check_axis(shape, axis, what)
        parts = [1] * len(shape)
        parts[ax] = min(num_shards, shape[ax])
        return parts

    return AxisPartitioner(count, axis, mesh_axis, what)


def min_max_variable_partitioner(max_partitions: int = 1, axis: int = 0,
                                 min_slice_size: int = 256 << 10,
                                 bytes_per_string_element: int = 16, *,
                                 mesh_axis: Union[str, Tuple[str, ...]] = "model") -> AxisPartitioner:
    """TF's ``min_max_variable_partitioner``: as many parts as keep each at least ``min_slice_size``
    bytes, at most ``max_partitions``; here, shard ``axis`` over ``mesh_axis`` when that is above 1,
    so small parameters stay replicated and big ones are sharded."""
    what = f"min_max_variable_partitioner({max_partitions}, axis={axis}, min_slice_size={min_slice_size})"

    def count(shape, dtype):
        ax = _check_axis(shape, axis, what)
        total = int(np.prod(shape, dtype=np.int64)) * _bytes_per_element(dtype, bytes_per_string_element)
        parts = [1] * len(shape)
        parts[ax] = max(1, min(shape[ax], max_partitions, int(math.ceil(total / min_slice_size))))
        return parts

    return AxisPartitioner(count, axis, mesh_axis, what)


def variable_axis_size_partitioner(max_shard_bytes: int, axis: int = 0,
                                   bytes_per_string_element: int = 16,
                                   max_shards: Optional[int] = None, *,
                                   mesh_axis: Union[str, Tuple[str, ...]] = "model") -> AxisPartitioner:
    """TF's ``variable_axis_size_partitioner``: enough parts along ``axis`` that each holds at most
    ``max_shard_bytes``; here, shard ``axis`` over ``mesh_axis`` when that is above 1."""
    if max_shard_bytes < 1 or bytes_per_string_element < 1:  # TF's checks and words
        raise ValueError(
            "Both max_shard_bytes and bytes_per_string_element must be positive. Currently, "
            f"max_shard_bytes is {max_shard_bytes} and bytes_per_string_element is "
            f"{bytes_per_string_element}.")
    if max_shards and max_shards < 1:  # TF reads 0 as "no limit", as it does None
        raise ValueError(f"max_shards must be positive. Currently, max_shards is {max_shards}.")
    what = f"variable_axis_size_partitioner({max_shard_bytes}, axis={axis})"

    def count(shape, dtype):
        ax = _check_axis(shape, axis, what)
        slice_size = int(np.prod(shape[:ax] + shape[ax + 1:], dtype=np.int64))
        per = max(1, max_shard_bytes // (_bytes_per_element(dtype, bytes_per_string_element) * slice_size))
        n = int(math.ceil(shape[ax] / per))
        parts = [1] * len(shape)
        parts[ax] = min(max_shards, n) if max_shards else n
        return parts

    return AxisPartitioner(count, axis, mesh_axis, what)


def _is_tf_function(fn: Any) -> bool:
    """A function defined in TensorFlow itself (e.g. ``tf.compat.v1.fixed_size_partitioner(4)``)."""
    module = getattr(fn, "__module__", None) or ""
    return module == "tensorflow" or module.startswith("tensorflow.")


class _NoTFDtype(TypeError):
    """A dtype TensorFlow cannot represent, met by a partitioner that calls TF."""


def _tf_shape_and_dtype(shape: Tuple[int, ...], dtype: np.dtype) -> Tuple[Any, Any]:
    """``shape``/``dtype`` as the ``tf.TensorShape``/``tf.DType`` TF's partitioners read. TF is an
    optional dependency: imported here, only for a partitioner that needs it."""
    tf = optional_import("tensorflow", "tensorflow", "tf", "A TensorFlow partitioner")
    try:
        tf_dtype = tf.as_dtype(dtype)
    except TypeError as e:  # e.g. float8_e8m0fnu: AxisPartitioner names the parameter
        raise _NoTFDtype(f"TensorFlow has no DType for {np.dtype(dtype).name}") from e
    return tf.TensorShape(shape), tf_dtype


def from_tf_partitioner(fn: Callable[..., Sequence[int]], *,
                        mesh_axis: Union[str, Tuple[str, ...]] = "model") -> AxisPartitioner:
    """Adapt any TF-style partitioner ``fn(shape=..., dtype=...) -> [ints]`` (the split axis is the
    one whose count is above 1) to shard that axis over ``mesh_axis``.

    TF's own partitioners (``tf.compat.v1.fixed_size_partitioner(4)``, ...) are called with a
    ``tf.TensorShape`` and a ``tf.DType``, as TF calls them; a plain Python function gets a tuple of
    ints and a ``numpy.dtype`` (and, if it fails on those while TF is loaded, the TF types).

    >>> tf_style = sp.sharding.from_tf_partitioner(lambda shape, dtype: [1, 2])
    >>> tf_style("w", (4, 4), np.float32)
    P(None, 'model')
    """
    if not callable(fn):
        raise PartitionerError(f"Partitioner must be callable, but received: {fn!r}\n"
                               "  fix: from_tf_partitioner(tf.compat.v1.fixed_size_partitioner(4)) "
                               "or any fn(shape=, dtype=) -> [ints].")
    tf_types = _is_tf_function(fn)

    def count(shape, dtype):
        if tf_types:
            tf_shape, tf_dtype = _tf_shape_and_dtype(shape, dtype)
            return fn(shape=tf_shape, dtype=tf_dtype)
        try:
            return fn(shape=shape, dtype=dtype)
        except (AttributeError, ValueError, TypeError):
            # A user's function written for TF's types (shape.dims, shape.num_elements(),
            # dtype.size, ...): TF is already loaded, since that function uses it.
            if "tensorflow" not in sys.modules:
                raise
            tf_shape, tf_dtype = _tf_shape_and_dtype(shape, dtype)
            return fn(shape=tf_shape, dtype=tf_dtype)

    return AxisPartitioner(count, None, mesh_axis, f"from_tf_partitioner({getattr(fn, '__name__', fn)!r})")


# --- resolving one parameter's spec -----------------------------------------------------------------


def _where(spec: ParamSpec) -> str:
    return f" (created at {format_site(spec.site)})" if spec.site else ""


class _StackedPartitioner:
    """The partitioner of a parameter of an ``sp.layer_stack`` block: the block's own partitioner
    decides one layer's spec, and the leading layer axis is not sharded (``None``), as Flax's
    ``nn.scan`` does by default. ``layer_stack`` wraps the scope's partitioner in it."""

    __slots__ = ("per_layer",)

    def __init__(self, per_layer: Any):
        self.per_layer = per_layer

    def __repr__(self) -> str:
        return f"{self.per_layer!r}, per layer of an sp.layer_stack"


def _stacked_sharding(sharding: Any) -> Any:
    """``get_param(sharding=...)`` of one layer, for the parameter stacked by ``sp.layer_stack``: the
    leading layer axis is not sharded. A sharding without named axes applies as it is."""
    if isinstance(sharding, PartitionSpec):
        return PartitionSpec(None, *sharding)
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(None, *sharding.spec),
                             memory_kind=sharding.memory_kind)
    return sharding


def _run_partitioner(spec: ParamSpec, partitioner: Any = None,
                     shape: Optional[Tuple[int, ...]] = None) -> PartitionLike:
    partitioner = spec.partitioner if partitioner is None else partitioner
    shape = tuple(spec.shape) if shape is None else shape
    if isinstance(partitioner, _StackedPartitioner):
        if len(shape) <= 1:  # one layer's value is a scalar: TF ignores partitioners for those
            return None
        return _stacked_sharding(_run_partitioner(spec, partitioner.per_layer, shape[1:]))
    if isinstance(partitioner, AxisPartitioner):  # its errors name the parameter and where
        return partitioner._spec(spec.name, shape, spec.dtype, _where(spec))
    if isinstance(partitioner, (list, tuple)):
        partitioner = Rules(partitioner)
    if not callable(partitioner):  # TF raises ValueError with these words
        check_partitioner(partitioner, f"scope of parameter '{spec.name}'{_where(spec)}")
    try:
        inspect.signature(partitioner).bind(spec.name, shape, spec.dtype)
    except TypeError:
        raise TypeError(
            f"The partitioner {partitioner!r} of parameter '{spec.name}'{_where(spec)} cannot be called "
            "as partitioner(name, shape, dtype).\n  fix: a TF-style partitioner(shape=, dtype=) -> "
            "[ints] goes through sp.sharding.from_tf_partitioner(fn, mesh_axis=...).") from None
    except ValueError:  # no signature (some builtins): just call it
        pass
    out = partitioner(spec.name, shape, spec.dtype)
    if out is None or isinstance(out, (PartitionSpec, Sharding)):
        return out
    hint = ("; it looks like TF's partition counts: wrap a TF-style partitioner in "
            "sp.sharding.from_tf_partitioner(fn, mesh_axis=...)"
            if isinstance(out, (list, tuple)) and all(isinstance(n, (int, np.integer)) for n in out)
            else "")
    raise PartitionerError(f"The partitioner of parameter '{spec.name}'{_where(spec)} returned "
                           f"{out!r}, expected a jax.sharding.PartitionSpec or None{hint}.")


def partition_spec(spec: ParamSpec) -> Union[PartitionSpec, Sharding]:
    """The ``PartitionSpec`` (or concrete ``Sharding``) of one parameter.

    ``get_param(sharding=...)`` wins; else the scope's partitioner decides (TF ignores partitioners
    for scalars, and so do we); else the parameter is replicated, ``P()``.
    """
    explicit = spec.sharding
    if explicit is not None:
        if not isinstance(explicit, (PartitionSpec, Sharding)):
            raise TypeError(
                f"get_param('{spec.name}', sharding={explicit!r}){_where(spec)}: sharding must be a "
                "jax.sharding.PartitionSpec or Sharding.\n"
                f"  fix: sharding=P(...), e.g. sharding=jax.sharding.PartitionSpec(None, 'model').")
        return explicit
    if spec.partitioner is None or len(spec.shape) == 0:
        return PartitionSpec()
    out = _run_partitioner(spec)
    return PartitionSpec() if out is None else out


def _mesh_axes(entry) -> Tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _device_ids(devices: Iterable[Any], ordered: bool = False) -> str:
    ids = [d.id for d in devices] if ordered else sorted(d.id for d in devices)
    if len(ids) <= 16:
        return f"device ids {ids}"
    return f"{len(ids)} devices (ids {ids[0]}, {ids[1]}, ..., {ids[-1]})" if ordered else (
        f"{len(ids)} devices (ids {ids[0]}..{ids[-1]})")


def _source(spec: ParamSpec) -> str:
    return ("get_param(sharding=...)" if spec.sharding is not None
            else f"partitioner {spec.partitioner!r}")


def _sharding_error(spec: ParamSpec, sharding: Sharding, found: str, target: str) -> ShardingError:
    """A concrete ``sharding`` that cannot be placed on the mesh: ``found`` says where it is,
    ``target`` where the parameters go."""
    given = spec.sharding if spec.sharding is not None else sharding
    example = f"sharding={given.spec!r}" if isinstance(given, NamedSharding) else "sharding=P(...)"
    return ShardingError(
        f"Parameter '{spec.name}'{_where(spec)}: its sharding {sharding} (from {_source(spec)}) is "
        f"{found}, but the parameters {target}.\n"
        f"  fix: give a PartitionSpec ({example}), which the mesh turns into a NamedSharding on its "
        "devices, or build the sharding on the mesh passed to sp.shardings / init_sharded.")


def _check(spec: ParamSpec, pspec: Union[PartitionSpec, Sharding], mesh: Any) -> Any:
    """Clear errors, naming the parameter, for specs that do not fit the shape or the mesh; returns
    the sharding to place the parameter with: ``pspec``, or a ``NamedSharding`` on an
    ``AbstractMesh`` of the mesh's axes (a plan) moved onto ``mesh``."""
    name, shape = spec.name, tuple(spec.shape)
    if isinstance(pspec, NamedSharding) and not isinstance(pspec.mesh, Mesh):  # on an AbstractMesh
        planned = pspec.mesh
        if list(planned.shape.items()) != list(mesh.shape.items()):
            raise _sharding_error(spec, pspec, f"on an AbstractMesh {dict(planned.shape)}",
                                  f"are placed on the mesh {dict(mesh.shape)}")
        _check(spec, pspec.spec, mesh)
        return NamedSharding(mesh, pspec.spec, memory_kind=pspec.memory_kind)
    if isinstance(pspec, Sharding):
        if isinstance(mesh, Mesh) and pspec.device_set != set(mesh.devices.flat):
            raise _sharding_error(spec, pspec, f"on {_device_ids(pspec.device_set)}",
                                  f"are created on the mesh {dict(mesh.shape)}, on "
                                  f"{_device_ids(mesh.devices.flat)}")
        if isinstance(pspec, NamedSharding):
            _check(spec, pspec.spec, pspec.mesh)  # the PartitionSpec's own checks, on its mesh
            if isinstance(mesh, Mesh) and list(pspec.mesh.devices.flat) != list(mesh.devices.flat):
                # one jitted computation takes one device order (JAX: "incompatible devices")
                raise _sharding_error(
                    spec, pspec, f"on a mesh of the same devices in another order, "
                    f"{_device_ids(pspec.mesh.devices.flat, ordered=True)}",
                    f"are created on the mesh {dict(mesh.shape)}, whose order is "
                    f"{_device_ids(mesh.devices.flat, ordered=True)}")
        if not isinstance(mesh, Mesh) and pspec.num_devices != mesh.size:
            raise _sharding_error(spec, pspec, f"on {pspec.num_devices} devices",
                                  f"are planned for the AbstractMesh {dict(mesh.shape)} of "
                                  f"{mesh.size} devices")
        try:
            pspec.shard_shape(shape)
        except Exception as e:  # noqa: BLE001 - jax raises several kinds; we re-raise one
            raise ShardingError(f"The sharding of parameter '{name}'{_where(spec)} does not fit its "
                                f"shape {shape}: {e}\n  fix: give a sharding whose shards tile "
                                "the shape, e.g. a PartitionSpec (sharding=P(...)) with at most one "
                                "entry per axis, each axis a multiple of its mesh axes' size.") from None
        return pspec
    src = _source(spec)
    if len(pspec) > len(shape):
        raise ShardingError(
            f"Parameter '{name}'{_where(spec)} has shape {shape} (rank {len(shape)}) but its "
            f"PartitionSpec {pspec} (from {src}) has {len(pspec)} entries.\n"
            "  fix: give at most one entry per array axis (missing trailing entries mean replicated).")
    sizes = dict(mesh.shape)  # axis name -> size, for a Mesh and an AbstractMesh alike
    seen: Dict[str, int] = {}
    for dim, entry in enumerate(pspec):
        if entry is PartitionSpec.UNCONSTRAINED:
            raise ShardingError(
                f"Parameter '{name}'{_where(spec)}: its PartitionSpec {pspec} (from {src}) leaves "
                f"the layout of array axis {dim} to XLA (P.UNCONSTRAINED), but a parameter is "
                "created with a layout of its own (jit's out_shardings refuse unconstrained "
                "axes).\n"
                "  fix: name a mesh axis for that array axis, or None (replicated); keep "
                "P.UNCONSTRAINED for jax.lax.with_sharding_constraint on activations.")
        axes = _mesh_axes(entry)
        for ax in axes:
            if ax not in sizes:
                raise ShardingError(
                    f"Parameter '{name}'{_where(spec)}: its PartitionSpec {pspec} (from {src}) names "
                    f"mesh axis {ax!r}, but the mesh has axes {tuple(mesh.axis_names)}.\n"
                    "  fix: use one of the mesh's axis names, or build the mesh with that axis "
                    "(jax.make_mesh(shape, names)).")
            if ax in seen:
                raise ShardingError(
                    f"Parameter '{name}'{_where(spec)}: its PartitionSpec {pspec} (from {src}) uses "
                    f"mesh axis {ax!r} for array axes {seen[ax]} and {dim}.\n"
                    "  fix: shard each array axis over different mesh axes.")
            seen[ax] = dim
        n = int(np.prod([sizes[a] for a in axes], dtype=np.int64)) if axes else 1
        if shape[dim] % n:
            raise ShardingError(
                f"Parameter '{name}'{_where(spec)}: dimension {dim} of shape {shape} has size "
                f"{shape[dim]}, not divisible by {n}, the number of devices on mesh axes {axes} of its "
                f"PartitionSpec {pspec} (from {src}).\n"
                f"  fix: make that dimension a multiple of {n}, shard another dimension, or leave it "
                "replicated (None).")
    return pspec


# --- trees -----------------------------------------------------------------------------------------


def _specs_of(model_or_specs: Any, args: tuple, kwargs: dict) -> Any:
    if isinstance(model_or_specs, Transformed):
        return model_or_specs.specs(*args, **kwargs)
    if args or kwargs:
        raise TypeError("Model arguments were given, but the first argument is a specs tree, not a "
                        "transformed model.\n  fix: pass the model (sp.transform(fn)) with its "
                        "arguments, or the specs tree alone.")
    leaves = jax.tree_util.tree_leaves(model_or_specs)
    if not all(isinstance(x, ParamSpec) for x in leaves):
        raise TypeError(f"Expected a transformed model or a tree of ParamSpec (model.specs(...)), got "
                        f"{type(model_or_specs).__name__}.")
    return model_or_specs


def _is_spec(x: Any) -> bool:
    return isinstance(x, ParamSpec)


def partition_specs(model_or_specs: Any, /, *args: Any, **kwargs: Any) -> Any:
    """The ``PartitionSpec`` of every parameter (and state entry), shaped like ``params``
    (``(params, state)`` for ``transform_with_state``). No mesh needed; nothing is allocated."""
    specs = _specs_of(model_or_specs, args, kwargs)
    return jax.tree_util.tree_map(partition_spec, specs, is_leaf=_is_spec)


def _check_mesh(api: str, mesh: Any) -> None:
    if not isinstance(mesh, _MESHES):
        raise TypeError(
            f"{api}: mesh must be a jax.sharding.Mesh or AbstractMesh, got {type(mesh).__name__}.\n"
            "  fix: mesh = jax.make_mesh((2, 4), ('batch', 'model')), or, to plan for devices this "
            "machine does not have, jax.sharding.AbstractMesh((2, 4), ('batch', 'model')).")


def shardings(model_or_specs: Any, mesh: Mesh, /, *args: Any, **kwargs: Any) -> Any:
    """The ``NamedSharding`` of every parameter on ``mesh``, shaped like ``params``.

    ``model_or_specs`` is a transformed model (called with ``*args, **kwargs`` as for ``init``;
    arrays may be ``jax.ShapeDtypeStruct``s) or the tree ``model.specs(...)`` returned. Every spec is
    checked against its parameter's shape and the mesh (axis names, divisibility); errors name the
    parameter. For ``transform_with_state`` it returns ``(params_shardings, state_shardings)``.
    ``mesh`` may be a ``jax.sharding.AbstractMesh`` (axis names and sizes, no devices): the same
    checks and specs, for a topology this machine does not have.

    >>> from jax.sharding import PartitionSpec as P
    >>> def fn(x):
    ...     with sp.scope("mlp"), sp.scope("dense"):
    ...         return x @ sp.get_param("kernel", (x.shape[-1], 8), sharding=P(None, "model"))
    >>> model = sp.transform(fn)
    >>> mesh = jax.sharding.AbstractMesh((2, 4), ("batch", "model"))  # no devices needed
    >>> sh = sp.shardings(model, mesh, jax.ShapeDtypeStruct((16, 4), "float32"))
    >>> sh["mlp"]["dense"]["kernel"]
    NamedSharding(mesh=..., spec=P(None, 'model')...)
    """
    _check_mesh("shardings", mesh)
    specs = _specs_of(model_or_specs, args, kwargs)

    def one(spec: ParamSpec) -> Sharding:
        pspec = _check(spec, partition_spec(spec), mesh)
        return pspec if isinstance(pspec, Sharding) else NamedSharding(mesh, pspec)

    return jax.tree_util.tree_map(one, specs, is_leaf=_is_spec)


def abstract_params(model_or_specs: Any, /, mesh: Optional[Mesh] = None, *args: Any,
                    **kwargs: Any) -> Any:
    """``jax.ShapeDtypeStruct``s (with their shardings when ``mesh`` is given) shaped like ``params``:
    the restore target of a sharded checkpoint (``orbax``), allocating nothing. With a
    ``jax.sharding.AbstractMesh``, the input of an ahead-of-time ``jit(...).trace(...)`` for that
    topology.

    ``mesh`` comes second, before the model's arguments: ``abstract_params(model, None, x)``
    without shardings."""
    if mesh is not None and not isinstance(mesh, _MESHES):
        raise TypeError(
            f"abstract_params: the second argument is the mesh, got {type(mesh).__name__} "
            f"{_short(mesh)}; the model's arguments come after it.\n"
            "  fix: abstract_params(model, mesh, *args), or abstract_params(model, None, *args) "
            "(mesh=None) for ShapeDtypeStructs without shardings.")
    specs = _specs_of(model_or_specs, args, kwargs)
    sh = shardings(specs, mesh) if mesh is not None else jax.tree_util.tree_map(
        lambda s: None, specs, is_leaf=_is_spec)
    return jax.tree_util.tree_map(
        lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h), specs, sh, is_leaf=_is_spec)


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 80 else text[:77] + "..."


def _abstract_arg(x: Any) -> Any:
    # As init's: arrays are looked at for their shapes; NumPy scalars stay concrete, as numbers do.
    if isinstance(x, (jax.Array, np.ndarray)):
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype)
    return x


def _check_key(key: Any, api: str, asked: str, fix: str) -> None:
    """Raise ``KeyArgumentError`` (as ``model.init`` does) unless JAX takes ``key`` as a random key;
    ``api`` is the function the key was given to, ``asked`` its call, ``fix`` the call with a key."""
    try:  # abstract, as init's own check (_transform._trace_specs): allocates nothing
        jax.eval_shape(lambda k: jax.random.fold_in(k, 0), key)
        return
    except (TypeError, ValueError) as e:
        error = e
    if hasattr(key, "shape") and hasattr(key, "dtype"):
        shown = f"an array of shape {tuple(key.shape)} and dtype {key.dtype}"
    else:
        shown = f"{type(key).__name__} {key!r:.60}"
    said = str(error).split(" for impl=", 1)[0].split("\n", 1)[0]
    said = f" (JAX: {said})" if said and not said.startswith("Error interpreting") else ""
    raise KeyArgumentError(
        f"{api} is the random key, but it got {shown}, which is not one{said}.\n"
        f"  asked: {asked}\n"
        f"  fix: {fix}; if that argument was the model's input, the key was left out.")


def _one_key_in_every_process(key: jax.Array) -> jax.Array:
    """``init_sharded``'s key on a mesh over several processes: the same in every one, checked (a
    collective: every process calls ``init_sharded``), as a fresh uncommitted key of its data.

    JAX takes a process's key as the one replicated value every process passes: keys that differ
    would make each process draw its own shards (a parameter sharded over processes a patchwork of
    several keys', a replicated one different in each process), silently. A key committed to this
    process's devices could not be copied onto devices of other processes either."""
    if not key.is_fully_addressable:  # a global array already: JAX's own rules hold
        return key
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    data = np.asarray(jax.random.key_data(key) if typed else key)
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(data))  # [process, *data.shape]
    differ = [i for i in range(every.shape[0]) if not np.array_equal(every[i], every[0])]
    if differ:
        this = jax.process_index()
        raise KeyArgumentError(
            f"sp.init_sharded: the processes passed different keys (process"
            f"{'es' if len(differ) > 1 else ''} {', '.join(map(str, differ))} passed another than "
            f"process 0; this is process {this}): each would draw its own shards of the "
            "parameters, and a replicated parameter would differ between processes.\n"
            "  fix: pass the same key (or int seed) in every process, e.g. "
            "sp.init_sharded(model, mesh, jax.random.key(0), *args); derive per-process randomness "
            "(data order, dropout) from jax.process_index() elsewhere.")
    if typed:
        return jax.random.wrap_key_data(jax.numpy.asarray(data), impl=jax.random.key_impl(key))
    return jax.numpy.asarray(data)


def sharded_init_fn(model: Transformed, mesh: Mesh, /, *args: Any, **kwargs: Any) -> Callable:
    """A jitted ``key -> params`` (``(params, state)`` with state) creating every parameter directly
    sharded on ``mesh``; ``init_sharded`` calls it once. Reuse it for several keys, or ``.lower(key)``
    it to inspect the compiled memory use. With a ``jax.sharding.AbstractMesh`` it lowers, without
    running, for a topology this machine does not have, given an abstract key:
    ``sharded_init_fn(model, mesh, x).trace(jax.eval_shape(jax.random.key, 0))``
    ``.lower(lowering_platforms=("tpu",))``."""
    if not isinstance(model, Transformed):
        raise TypeError(f"init_sharded: expected a transformed model (sp.transform(fn)), got "
                        f"{type(model).__name__}.")
    _check_mesh("sharded_init_fn", mesh)
    a, kw = in_given_order((args, kwargs), jax.tree_util.tree_map(_abstract_arg, (args, kwargs)))
    specs = model.specs(*a, **kw)
    out = shardings(specs, mesh)

    def init(key):
        _check_key(key, "The argument of sp.sharding.sharded_init_fn's function",
                   "init = sp.sharding.sharded_init_fn(model, mesh, *args); params = init(key)",
                   "call it with a key: init(jax.random.key(0))")
        # One initializer call per parameter rather than model.init's vmapped groups: XLA shards a
        # lone initializer along its output's sharding, but a stacked group is an intermediate that
        # holds several whole parameters on every device. Draws keep their shape for the same
        # reason (a flat draw's sharding cannot follow the parameter's dimensions).
        def one(spec):
            return initialize(key, {spec.name: spec}, flat_draws=False)[spec.name]

        return jax.tree_util.tree_map(one, specs, is_leaf=_is_spec)

    return jax.jit(init, in_shardings=NamedSharding(mesh, PartitionSpec()), out_shardings=out)


def init_sharded(model: Transformed, mesh: Mesh, key: jax.Array, /, *args: Any,
                 **kwargs: Any) -> Any:
    """``model.init(key, *args, **kwargs)``, with every parameter created directly sharded on ``mesh``.

    The initializers run under ``jax.jit`` with ``out_shardings=sp.shardings(...)``, so each device
    computes only its own shards and no parameter is ever whole on one device (an initializer
    computed over the whole matrix, the orthogonal ones' QR, still needs it whole in XLA's
    temporaries). Array arguments are
    only looked at for their shapes (``jax.ShapeDtypeStruct`` works). The values equal
    ``model.init``'s: a parameter's value depends only on (key, full name, shape, dtype, initializer).
    A key placed elsewhere (other devices, another mesh) is copied onto ``mesh``, replicated, first.
    On a mesh over several processes every process passes the same key (checked: a
    ``KeyArgumentError`` names the processes whose key differs).

    >>> from jax.sharding import PartitionSpec as P
    >>> rules = sp.sharding.Rules([(r"kernel$", P(None, "model"))])
    >>> def fn(x):
    ...     with sp.scope("mlp", partitioner=rules), sp.scope("dense"):
    ...         return x @ sp.get_param("kernel", (x.shape[-1], 8))
    >>> model = sp.transform(fn)
    >>> mesh = jax.make_mesh((1, len(jax.devices())), ("batch", "model"))
    >>> params = sp.init_sharded(model, mesh, jax.random.key(0), jnp.ones((16, 4)))
    >>> params["mlp"]["dense"]["kernel"].sharding.spec
    P(None, 'model')
    """
    if not isinstance(mesh, Mesh):
        _check_mesh("init_sharded", mesh)
        raise TypeError(
            f"init_sharded: {mesh} has no devices to create the parameters on.\n"
            "  fix: pass a jax.sharding.Mesh of this machine's devices; with an AbstractMesh, lower "
            "without running: sp.sharding.sharded_init_fn(model, mesh, *args)"
            ".trace(jax.eval_shape(jax.random.key, 0)).lower(lowering_platforms=('tpu',)).")
    key = as_key(key)
    _check_key(key, "sp.init_sharded's third argument", "sp.init_sharded(model, mesh, key, *args)",
               "pass the key after the mesh: sp.init_sharded(model, mesh, jax.random.key(0), *args) "
               "(an int seed works too: sp.init_sharded(model, mesh, 0, *args))")
    if mesh.is_multi_process and isinstance(key, jax.Array) and not isinstance(
            key, jax.core.Tracer):
        key = _one_key_in_every_process(key)
    # A key the user placed (a fresh one is not committed) may be on other devices, or on a mesh
    # with explicit axes of other sizes (which its type carries into every draw): JAX refuses it
    # next to the mesh's out_shardings, so it is copied onto the mesh first.
    if isinstance(key, jax.Array) and not isinstance(key, jax.core.Tracer) and key.committed:
        replicated = NamedSharding(mesh, PartitionSpec())
        if key.sharding != replicated:
            key = jax.device_put(key, replicated)
    # Inside jax.set_mesh(other) JAX types every value with the context's mesh, which then clashes
    # with the out_shardings on ``mesh``: the parameters are made under ``mesh`` itself.
    context = jax.sharding.get_abstract_mesh()
    if not context.empty and context != mesh.abstract_mesh:
        with jax.set_mesh(mesh):
            return sharded_init_fn(model, mesh, *args, **kwargs)(key)
    return sharded_init_fn(model, mesh, *args, **kwargs)(key)
