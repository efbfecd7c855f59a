"""ParamSpec: everything known about one parameter or state entry without allocating it."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Tuple

import numpy as np

from ._errors import Site


@dataclasses.dataclass(frozen=True, eq=False)
class ParamSpec:
    """What an abstract trace learns about one parameter (a leaf of ``model.specs(...)``).

    Not registered as a pytree node, so ``jax.tree_util`` treats a spec as one leaf and a tree of
    specs has the same structure as the params it describes.
    """

    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    init: Any  # initializer callable, or the constant array (after tracing)
    trainable: bool = True
    collections: Tuple[str, ...] = ()
    regularizer: Optional[Callable] = None
    sharding: Any = None  # jax.sharding.PartitionSpec or Sharding, as given to get_param
    partitioner: Any = None  # the scope's partitioner, resolved by sp.sharding
    kind: str = "param"  # "param" or "state"
    site: Site = None  # (file, line) where it was created
    # A projection value -> value that sp.apply_constraints runs after each optimizer step (TF's
    # get_variable(constraint=)); for a layer_stack parameter, it maps each layer's slice.
    constraint: Optional[Callable] = None

    @property
    def size(self) -> int:
        """The number of values (the product of the shape), exact however large: a Python int, where
        NumPy's int64 product would wrap past 2**63 (an abstract what-if model can be that big)."""
        return math.prod(map(int, self.shape))

    @property
    def nbytes(self) -> int:
        """The bytes the parameter takes: ``size`` times the dtype's item size."""
        return self.size * np.dtype(self.dtype).itemsize

    def __repr__(self) -> str:
        return f"ParamSpec({self.name!r}, shape={self.shape}, dtype={np.dtype(self.dtype).name})"


def new_spec(name: str, shape: Tuple[int, ...], dtype: np.dtype, init: Any, trainable: bool,
             collections: Tuple[str, ...], regularizer: Optional[Callable], sharding: Any,
             partitioner: Any, kind: str, site: Site, constraint: Optional[Callable]) -> ParamSpec:
    """``ParamSpec(...)`` with every field given, made without the frozen dataclass's
    ``object.__setattr__`` per field (~1.4 us; init makes one per parameter): the same object."""
    spec = object.__new__(ParamSpec)
    spec.__dict__.update(name=name, shape=shape, dtype=dtype, init=init, trainable=trainable,
                         collections=collections, regularizer=regularizer, sharding=sharding,
                         partitioner=partitioner, kind=kind, site=site, constraint=constraint)
    return spec
