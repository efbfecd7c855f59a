"""``python -m scoped_params inspect``: what a checkpoint holds, in the spirit of TF's inspect_checkpoint.

Reads scoped_params/safetensors weights files (every byte verified) and TF 1.x checkpoints (names,
shapes and dtypes from the index alone; values only when asked).
"""

from __future__ import annotations

import os
import sys
from typing import IO, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ._errors import ScopedParamsError, nearest


class Entry(NamedTuple):
    name: str
    shape: Tuple[int, ...]
    dtype: str
    size: int
    nbytes: Optional[int]  # None when the dtype has no fixed size (TF strings)
    note: str = ""


def human_bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    size: float = n
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        # the unit of the number shown: 1048575 B is 1023.999 KiB, shown "1.0 MiB", not "1024.0 KiB"
        shown = f"{n}" if unit == "B" else f"{size:.1f}"
        if float(shown) < 1024 or unit == "TiB":
            return f"{shown} {unit}"
        size /= 1024.0
    return str(n)


def format_table(headers: List[str], rows: List[List[str]], right: Tuple[int, ...] = ()) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


class _Source:
    """One checkpoint, either format: its entries, metadata, and values on demand."""

    def __init__(self, path: str):
        from . import _tf1, checkpoint

        self.path = path
        self.metadata: Dict[str, str] = {}
        if checkpoint.is_tf1_source(path):
            reader = _tf1._Reader(path)
            self.kind = f"TF checkpoint {reader.prefix}"
            names = set(reader.names())
            self.entries = []
            for name in sorted(names):
                dtype = reader.dtypes[name]
                shape = tuple(reader.shapes[name])
                size = int(np.prod(shape, dtype=np.int64))
                nbytes = size * dtype.size if reader.numeric(name) else None
                note = "*" if _tf1.is_optimizer_entry(name, names, reader.shapes) else ""
                self.entries.append(Entry(name, shape, dtype.name, size, nbytes, note))
            self.get = reader.get
        else:
            flat, self.metadata = checkpoint._read(path)
            self.kind = f"weights file {path}"
            self.entries = [Entry(n, a.shape, a.dtype.name, a.size, a.nbytes)
                            for n, a in sorted(flat.items())]
            self.get = flat.__getitem__  # type: ignore[assignment]
        # entry() by name, in constant time: `inspect --all` looks every entry up
        self.by_name: Dict[str, Entry] = {e.name: e for e in self.entries}


def table(source: _Source) -> str:
    rows = [[e.name + e.note, str(list(e.shape)), e.dtype, f"{e.size:,}", human_bytes(e.nbytes)]
            for e in source.entries]
    total_size = sum(e.size for e in source.entries)
    total_bytes = sum(e.nbytes or 0 for e in source.entries)
    out = [source.kind, "",
           format_table(["name", "shape", "dtype", "size", "bytes"], rows, right=(3, 4)), "",
           f"{len(source.entries)} tensors, {total_size:,} values, {human_bytes(total_bytes)}"
           + (f" ({total_bytes:,} bytes)" if total_bytes >= 1024 else "")]
    if any(e.note for e in source.entries):
        out.append("* optimizer state (slots, global_step): skipped by sp.checkpoint.load_tf1 "
                   "unless include_optimizer_state=True")
    if source.metadata:
        out.append("metadata:")
        out.extend(f"  {k}: {v}" for k, v in sorted(source.metadata.items()))
    return "\n".join(out)


def entry(source: _Source, name: str) -> Entry:
    """The entry ``name`` of ``source``; a ``KeyError`` naming the closest names if there is none."""
    found = source.by_name.get(name)
    if found is None:
        hint = nearest(name, [e.name for e in source.entries])
        raise KeyError(f"no tensor named {name!r} in {source.kind}"
                       + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else
                          "; list them with sp.checkpoint.list_variables or "
                          "python -m scoped_params inspect."))
    return found


def values(source: _Source, name: str) -> str:
    found = entry(source, name)
    value = np.asarray(source.get(name))
    # str(), not f"{value}": a 0-d array's __format__ goes through a Python float (float32 0.81 ->
    # 0.8100000023841858). A 0-d array prints as its scalar, as TF's inspect_checkpoint does.
    text = str(value[()] if value.ndim == 0 else value)
    return f"tensor_name: {name} {list(found.shape)} {found.dtype}\n{text}"


class OutputError(OSError):
    """Writing the output failed (a full disk, a closed terminal): no fault of the checkpoint."""


def _print(text: str, out: IO[str]) -> None:
    """Print and flush ``text``: a reader of the output (`| head`) has each part as it comes."""
    try:
        print(text, file=out, flush=True)
    except BrokenPipeError:  # the reader has what it wanted: not a failure
        raise
    except OSError as e:
        raise OutputError(*e.args) from None


def run(path: str, tensor: Optional[str] = None, all_values: bool = False,
        out: IO[str] = sys.stdout) -> List[ScopedParamsError]:
    """Print the table of ``path`` (or one tensor's values, or every tensor's values: with both,
    every tensor's, as TF's inspect_checkpoint does with --all_tensors and --tensor_name). Every
    tensor's values are printed as each is read, past those that cannot be read: their errors are
    returned. A failure to write is an ``OutputError``."""
    source = _Source(os.fspath(path))
    failed: List[ScopedParamsError] = []
    if all_values:
        gap = ""  # a blank line between tensors
        for e in source.entries:
            try:
                text = values(source, e.name)
            except ScopedParamsError as error:  # a damaged entry (TF reads values one by one)
                failed.append(error)
                continue
            _print(gap + text, out)
            gap = "\n"
    elif tensor is not None:
        _print(values(source, tensor), out)
    else:
        _print(table(source), out)
    return failed
