"""``sp.summary(model, *args)``: a per-scope table of parameter counts, bytes and shapes, from an
abstract trace (``model.specs``), so nothing is allocated and no arithmetic runs."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from ._inspect import format_table, human_bytes
from ._tree import flatten


def _scope_rows(specs: Mapping[str, Any], kind: str) -> Tuple[List[List[str]], int, int]:
    by_scope: Dict[str, list] = {}
    for name, spec in flatten(specs).items():
        scope, _, leaf = name.rpartition("/")
        by_scope.setdefault(scope, []).append((leaf, spec))
    rows, total_size, total_bytes = [], 0, 0
    for scope in by_scope:  # creation order
        entries = by_scope[scope]
        size = sum(s.size for _, s in entries)
        nbytes = sum(s.nbytes for _, s in entries)
        total_size += size
        total_bytes += nbytes
        shapes = ", ".join(
            f"{leaf} {'x'.join(map(str, s.shape)) or 'scalar'} {np.dtype(s.dtype).name}"
            + ("" if s.trainable or kind == "state" else " (frozen)")
            for leaf, s in entries)
        label = (scope or "(root)") + (" [state]" if kind == "state" else "")
        rows.append([label, f"{size:,}", human_bytes(nbytes), shapes])
    return rows, total_size, total_bytes


def summary(model: Any, /, *args: Any, **kwargs: Any) -> str:
    """Print and return a table of ``model``'s parameters per scope: count, bytes, shapes.

    Runs ``model.specs(*args, **kwargs)``: an abstract trace, so array arguments may be
    ``jax.ShapeDtypeStruct``s and nothing is allocated. State entries (``transform_with_state``)
    are listed after the parameters, marked ``[state]``; non-trainable parameters are ``(frozen)``.

    >>> def classifier(images):
    ...     with sp.scope("conv1"):
    ...         w = sp.get_param("weights", (5, 5, 1, 32))
    ...         b = sp.get_param("biases", (32,), init=sp.initializers.zeros)
    ...     y = jax.lax.conv_general_dilated(images, w, (2, 2), "SAME",
    ...                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ...     y = jax.nn.relu(y + b)
    ...     return sp.layers.dense(y.reshape(y.shape[0], -1), 10, name="logits")
    >>> table = sp.summary(sp.transform(classifier), jax.ShapeDtypeStruct((8, 28, 28, 1), jnp.float32))
    scope   parameters      bytes  shapes
    ------  ----------  ---------  -------------------------------------------
    conv1          832    3.2 KiB  weights 5x5x1x32 float32, biases 32 float32
    logits      62,730  245.0 KiB  kernel 6272x10 float32, bias 10 float32
    <BLANKLINE>
    total: 63,562 parameters in 4 arrays, 248.3 KiB
    """
    if not callable(getattr(model, "specs", None)):
        raise TypeError(f"sp.summary expects a transformed model, got {type(model).__name__}.\n"
                        "  fix: sp.summary(sp.transform(fn), *args).")
    specs = model.specs(*args, **kwargs)
    params_specs, state_specs = specs if isinstance(specs, tuple) else (specs, {})
    rows, size, nbytes = _scope_rows(params_specs, "param")
    state_rows, state_size, state_bytes = _scope_rows(state_specs, "state")
    count = len(flatten(params_specs))
    lines = [format_table(["scope", "parameters", "bytes", "shapes"], rows + state_rows,
                          right=(1, 2)), "",
             f"total: {size:,} parameters in {count} arrays, {human_bytes(nbytes)}"]
    if state_rows:
        lines.append(f"state: {state_size:,} values in {len(flatten(state_specs))} arrays, "
                     f"{human_bytes(state_bytes)}")
    text = "\n".join(lines)
    print(text)
    return text
