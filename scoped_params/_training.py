"""Training-state checkpoints (params + optax state + step, any pytree) with orbax's CheckpointManager.

Orbax is what a JAX user expects for resumable training: it writes each step to a temporary
directory and renames it when complete, keeps the last N steps, and restores into the structure,
dtypes and shardings of a target tree. This is a thin, synchronous wrapper.
"""

from __future__ import annotations

import operator
import os
from typing import Any, List, Optional, Tuple

from ._errors import (CheckpointError, CheckpointMismatchError, CheckpointNotFoundError,
                      StepOrderError, optional_import)

# Orbax (0.12) writes both into a step's temporary directory before renaming it to its final name
# (and, on GCS, writes commit_success.txt last): a step directory holding neither was not
# written to completion by orbax (a stray or half-copied directory), so it is not a step.
_COMPLETE_MARKERS = ("commit_success.txt", "_CHECKPOINT_METADATA")


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


class CheckpointNotADirectoryError(CheckpointError, NotADirectoryError):
    """A TrainingCheckpointer's directory (or a directory above it) is an existing file."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno None] None: <filename>"
        return str(self.args[0]) if self.args else super().__str__()


def _path_str(path: Tuple[Any, ...]) -> str:
    """A pytree key path as 'params/dense/w' (dict keys, sequence indices, attribute names)."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _leaves(tree: Any) -> List[Tuple[str, Any]]:
    import jax

    return [(_path_str(p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


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

    return f"{np.dtype(dtype).name}[{','.join(map(str, shape))}]"


def _listing(leaves: List[Tuple[str, Any]], limit: int = 8) -> str:
    text = ", ".join(f"{path} {_describe_leaf(leaf)}" for path, leaf in leaves[:limit])
    return text + (f", ... ({len(leaves) - limit} more)" if len(leaves) > limit else "")


class TrainingCheckpointer:
    """Save and restore a whole training state, one checkpoint per step, keeping the last ``max_to_keep``.

    ``state`` is any pytree: typically ``{"params": params, "opt_state": opt_state, "step": step}``.
    Saves are synchronous: when ``save`` returns, the step is on disk, complete; otherwise it
    raised. Restore with a ``target`` (the state itself, or ``jax.eval_shape`` of how it is built)
    to get optax's named tuples and the target's dtypes and shardings back; without one, orbax
    returns plain dicts/lists.

    Steps only move forward. ``save(step)`` requires ``step`` to be after every step on disk, and
    raises ``StepOrderError`` otherwise, never overwriting or skipping: a step below the newest
    would leave the newer steps of an abandoned run as ``latest_step()`` (what a resume restores)
    and would be the first one ``max_to_keep`` prunes. To train again from an earlier step (say,
    after a loss spike), discard the steps after it first: ``ckpt.delete_steps_after(10)``.

    Every call re-reads the directory, so several checkpointers used one after another on one
    directory see each other's steps, refuse each other's step numbers, and together keep at most
    ``max_to_keep`` steps. Processes *concurrently* saving into one directory are not supported (two
    may pass the step check at once); give each run its own directory.

    Only complete steps count: a directory named like a step but without orbax's markers
    (``_CHECKPOINT_METADATA``, ``commit_success.txt``) is not listed, restored or pruned.

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
            done = any(os.path.exists(os.path.join(path, m)) for m in _COMPLETE_MARKERS)
            (complete if done else incomplete).append(step)
        return complete, incomplete

    def _incomplete_error(self, step: int, api: str) -> str:
        return (f"TrainingCheckpointer.{api}: the directory of step {step}, "
                f"{self._step_path(step)!r}, is incomplete (no {' or '.join(_COMPLETE_MARKERS)}): "
                "an interrupted copy, or a directory orbax did not write.\n"
                "  fix: if no other process is writing it, delete it: "
                f"shutil.rmtree({self._step_path(step)!r})")

    def save(self, step: int, state: Any) -> None:
        """Write ``state`` as step ``step`` (atomically), then delete the oldest steps beyond
        ``max_to_keep``. ``step`` must be after every step on disk (``StepOrderError`` otherwise:
        see the class docstring and ``delete_steps_after``)."""
        step = _step_index(step, "save")
        complete, incomplete = self._steps_on_disk()
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
        for path, leaf in _leaves(state):
            found = _unsavable(leaf)
            if found is not None:
                raise TypeError(
                    f"TrainingCheckpointer.save: the state's leaf '{path}' is {found}; orbax saves "
                    "arrays of numbers or bools and Python int, float and bool, so nothing was "
                    f"written for step {step}.\n  fix: keep it out of the saved state (e.g. save "
                    "configuration next to the checkpoints), or store it as a number or array.")
        saved = self._manager.save(step, args=self._ocp.args.StandardSave(state), force=True)
        self._manager.wait_until_finished()
        complete, _ = self._steps_on_disk()
        if not saved or step not in complete:
            raise CheckpointError(
                f"TrainingCheckpointer.save: orbax did not write step {step} to "
                f"{self.directory!r} (save returned {saved!r}; complete steps on disk: {complete}).\n"
                "  fix: check that the directory is writable and not read-only for orbax.")
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
        newer = [s for s in self._steps_on_disk()[0] if s > step]
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
        shapes, dtypes and shardings are used. An incomplete step directory is never restored.
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
        if target is None:
            return self._manager.restore(step)
        import jax

        abstract = jax.tree.map(_abstract, target)
        try:
            return self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as e:
            raise self._mismatch(step, target, e) from None

    def _mismatch(self, step: int, target: Any, error: Exception) -> CheckpointMismatchError:
        """Why ``target`` does not fit step ``step``: the entries and shapes that differ, from the
        step's metadata (orbax's own diff names bare keys and advises an option restore() lacks)."""
        asked = _leaves(target)
        try:
            found = _leaves(self._manager.item_metadata(step).tree)
        except Exception:  # unreadable metadata: fall back to orbax's text, without its options
            found = None
        lines = [f"TrainingCheckpointer.restore: step {step} in {self.directory!r} does not fit "
                 "the given target; nothing was restored."]
        if found is not None:
            found_shapes = dict(found)
            asked_names = {p for p, _ in asked}
            missing = [p for p, _ in found if p not in asked_names]
            extra = [p for p, _ in asked if p not in found_shapes]
            shapes = [f"{p}: target {tuple(leaf.shape)}, checkpoint {tuple(found_shapes[p].shape)}"
                      for p, leaf in asked
                      if p in found_shapes and hasattr(leaf, "shape")
                      and getattr(found_shapes[p], "shape", None) is not None
                      and tuple(leaf.shape) != tuple(found_shapes[p].shape)]
            if missing:
                lines.append(f"  in the checkpoint, not in target: {missing[:10]}")
            if extra:
                lines.append(f"  in target, not in the checkpoint: {extra[:10]}")
            if shapes:
                lines.append(f"  shapes differ: {'; '.join(shapes[:10])}")
            lines.append(f"  asked (target): {_listing(asked)}")
            lines.append(f"  found (step {step}): {_listing(found)}")
        if found is None or len(lines) == 3:  # no difference seen here: orbax's reason
            reason = "\n".join(line for line in str(error).splitlines()
                               if "partial_restore" not in line and "strict=False" not in line)
            lines.append(f"  orbax: {reason}")
        top = sorted({p.split('/')[0] for p, _ in (found or [])})
        pick = f"ckpt.restore({step})[{top[0]!r}]" if top else f"ckpt.restore({step})"
        lines.append("  fix: pass a target built the same way as the saved state (same entries and "
                     f"shapes); or restore without a target and pick what you need, e.g. {pick} "
                     "(plain dicts and lists: optax states come back as lists).")
        return CheckpointMismatchError("\n".join(lines))

    def close(self) -> None:
        """Release orbax's manager (also on leaving a ``with`` block)."""
        self._manager.close()

    def __enter__(self) -> "TrainingCheckpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
