"""Training-state checkpoints (params + optax state + step, any pytree) with orbax's CheckpointManager.

Orbax is what a JAX user expects for resumable training: it writes each step to a temporary
directory and renames it when complete, keeps the last N steps, and restores into the structure,
dtypes and shardings of a target tree. This is a thin, synchronous wrapper.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional

from ._errors import CheckpointNotFoundError, optional_import


def _orbax():
    return optional_import("orbax.checkpoint", "orbax-checkpoint", "checkpoint", "TrainingCheckpointer")


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


class TrainingCheckpointer:
    """Save and restore a whole training state, one checkpoint per step, keeping the last ``max_to_keep``.

    ``state`` is any pytree: typically ``{"params": params, "opt_state": opt_state, "step": step}``.
    Saves are synchronous (the step is on disk, complete, when ``save`` returns). Restore with a
    ``target`` (the state itself, or ``jax.eval_shape`` of how it is built) to get optax's named
    tuples and the target's dtypes and shardings back; without one, orbax returns plain
    dicts/lists.

    >>> import optax
    >>> params = {"dense": {"w": jnp.ones((3, 2))}}
    >>> optimizer = optax.adam(1e-3)
    >>> initial_state = {"params": params, "opt_state": optimizer.init(params), "step": 0}
    >>> ckpt = sp.checkpoint.TrainingCheckpointer("run1", max_to_keep=3)
    >>> ckpt.save(100, {**initial_state, "step": 100})
    >>> state = ckpt.restore(target=initial_state)   # the latest step, in the target's structure
    >>> state["step"], ckpt.all_steps()
    (100, [100])
    """

    def __init__(self, directory, max_to_keep: Optional[int] = 3):
        ocp = _orbax()
        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False))

    def __repr__(self) -> str:
        return f"TrainingCheckpointer({self.directory!r}, steps={self.all_steps()})"

    def save(self, step: int, state: Any) -> None:
        """Write ``state`` as step ``step`` (atomically), then drop steps beyond ``max_to_keep``."""
        self._manager.save(int(step), args=self._ocp.args.StandardSave(state))
        self._manager.wait_until_finished()

    def latest_step(self) -> Optional[int]:
        """The newest complete step on disk, or ``None``."""
        self._manager.reload()
        return self._manager.latest_step()

    def all_steps(self) -> List[int]:
        """The steps saved in the directory, oldest first (re-read from disk)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def restore(self, step: Optional[int] = None, target: Any = None) -> Any:
        """The state saved at ``step`` (default: the latest), shaped like ``target`` when given.

        ``target`` may hold concrete arrays or ``jax.ShapeDtypeStruct``s; only its structure,
        shapes, dtypes and shardings are used.
        """
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointNotFoundError(
                    f"no training checkpoint in {self.directory!r}.\n"
                    "  fix: check the directory, or start from a fresh state when latest_step() "
                    "is None.")
            step = steps[-1]
        elif int(step) not in steps:
            raise CheckpointNotFoundError(
                f"no training checkpoint for step {step} in {self.directory!r}; steps on disk: "
                f"{steps}.")
        if target is None:
            return self._manager.restore(int(step))
        import jax

        abstract = jax.tree.map(_abstract, target)
        try:
            return self._manager.restore(int(step), args=self._ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"restoring step {step} from {self.directory!r} into the given target failed: {e}\n"
                "  fix: build target the same way as the saved state (same keys, shapes, dtypes)."
            ) from e

    def close(self) -> None:
        """Release orbax's manager (also on leaving a ``with`` block)."""
        self._manager.close()

    def __enter__(self) -> "TrainingCheckpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
