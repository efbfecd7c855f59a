"""Mixed precision with TF 1.x's recipe: parameters stored in float32, computed in a low-precision dtype.

The classic TF 1.x idiom is a custom getter on the model's variable scope: layers ask for float16
(or bfloat16) variables, the getter creates float32 ones and returns them cast down. Gradients flow
back through the cast into the float32 master weights, so the optimizer updates float32 values.

>>> def fn(x):
...     with sp.mixed_precision.scope("model", compute_dtype=jnp.bfloat16):
...         h = sp.layers.dense(x.astype(jnp.bfloat16), 64, activation=jax.nn.relu)
...         return sp.layers.dense(h, 10).astype(jnp.float32)
>>> params = sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 8)))
>>> params["model"]["dense"]["kernel"].dtype
dtype('float32')
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ._scope import Scope, as_np_dtype
from ._scope import scope as _scope

__all__ = ["cast_floating", "float32_storage_getter", "scope"]

_LOW_PRECISION = (np.dtype(jnp.bfloat16), np.dtype(jnp.float16))
_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)  # jax.Array covers tracers too


def float32_storage_getter(compute_dtype: Any = jnp.bfloat16) -> Callable:
    """A custom getter that stores ``compute_dtype`` requests as float32 and returns them cast.

    Requests for other dtypes (float32 parameters, integer tables, batch-norm statistics) pass
    through unchanged. Use it as ``sp.scope(..., custom_getter=float32_storage_getter())``; it nests
    with other getters like any TF custom getter.
    """
    try:
        compute = as_np_dtype(compute_dtype)  # TF's tf.bfloat16 too, as sp.scope(dtype=) takes
    except (TypeError, ValueError):
        raise TypeError(f"float32_storage_getter: compute_dtype={compute_dtype!r} is not a dtype "
                        "JAX has.\n  fix: a float dtype such as jnp.bfloat16 or jnp.float16 (TF's "
                        "tf.bfloat16 works too).") from None
    if not jnp.issubdtype(compute, jnp.floating):
        raise TypeError(f"float32_storage_getter: compute_dtype must be a float dtype, got {compute}.")

    def getter(next_getter, name, *args, **kwargs):
        # TF's getter order is (name, shape=None, dtype=None, initializer=None, ...): an outer getter
        # may forward dtype by position, as args[1].
        positional = len(args) > 1
        dtype = args[1] if positional else kwargs.get("dtype")
        if dtype is None:
            return next_getter(name, *args, **kwargs)
        try:
            requested = as_np_dtype(dtype)
        except (TypeError, ValueError):  # not a dtype: get_param's own error names the parameter
            return next_getter(name, *args, **kwargs)
        if requested != compute:
            return next_getter(name, *args, **kwargs)
        if positional:
            value = next_getter(name, args[0], jnp.float32, *args[2:], **kwargs)
        else:
            value = next_getter(name, *args, **{**kwargs, "dtype": jnp.float32})
        return value.astype(compute)

    return getter


def scope(name_or_scope: Any = None, *, compute_dtype: Any = jnp.bfloat16,
          custom_getter: Optional[Callable] = None, **scope_kwargs: Any) -> ContextManager[Scope]:
    """``sp.scope`` whose parameters default to ``compute_dtype`` but are stored in float32.

    Sets the scope's ``dtype`` to ``compute_dtype`` (so ``sp.get_param`` without ``dtype=`` computes
    in it) and installs ``float32_storage_getter(compute_dtype)``; an extra ``custom_getter`` runs
    outside it. Layers compute in their input's dtype, so cast the input to ``compute_dtype``.
    """
    if "dtype" in scope_kwargs:  # else Python's "got multiple values for keyword argument 'dtype'"
        dtype = scope_kwargs["dtype"]
        try:
            shown = as_np_dtype(dtype).name
        except (TypeError, ValueError):
            shown = None
        if shown is None:  # not a dtype at all: no jnp.<name> to suggest
            fix = (f"compute_dtype= a float dtype such as jnp.bfloat16 ({dtype!r} is not a dtype "
                   "JAX has).")
        else:
            fix = (f"compute_dtype=jnp.{shown} (for a scope whose parameters are stored in "
                   f"{shown}, use sp.scope({name_or_scope!r}, dtype=...) instead).")
        raise TypeError(
            f"sp.mixed_precision.scope({name_or_scope!r}, dtype={shown or repr(dtype)}): the "
            "scope's dtype is compute_dtype=, and parameters are always stored in float32 (the "
            "getter stores compute_dtype requests as float32 and returns them cast).\n"
            f"  fix: {fix}")
    getter = float32_storage_getter(compute_dtype)
    if custom_getter is not None:
        inner = getter

        def getter(next_getter, name, *args, **kwargs):  # noqa: F811 - the composed getter
            return custom_getter(lambda *a, **k: inner(next_getter, *a, **k), name, *args, **kwargs)

    return _scope(name_or_scope, dtype=compute_dtype, custom_getter=getter, **scope_kwargs)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Cast every floating array leaf of ``tree`` to ``dtype``: JAX and NumPy arrays and NumPy
    scalars. Integer and bool leaves are kept, and so are Python scalars and other objects (a
    learning rate of ``1e-3`` in an optimizer-state-like tree is no parameter; weakly typed, it
    already computes in the dtype of the arrays it meets).

    >>> tree = sp.mixed_precision.cast_floating({"w": jnp.ones(2), "lr": 1e-3}, jnp.bfloat16)
    >>> tree["w"].dtype, tree["lr"]
    (dtype(bfloat16), 0.001)
    """
    dtype = as_np_dtype(dtype)  # TF's tf.bfloat16 too

    def cast(x):
        if isinstance(x, _ARRAY_TYPES) and jnp.issubdtype(x.dtype, jnp.floating):
            return x.astype(dtype)
        return x

    return jax.tree_util.tree_map(cast, tree)
