"""Checkpoints: weights files keyed by full name, TF's ``init_from_checkpoint``, TF 1.x checkpoints,
and training-state checkpoints.

>>> conv1 = {"weights": jnp.ones((5, 5, 32, 32)), "biases": jnp.zeros(32)}
>>> params = {"image_filters": {"conv1": conv1}}
>>> sp.checkpoint.save("filter.safetensors", params, metadata={"step": "1000"})
>>> params = sp.checkpoint.load("filter.safetensors")     # the nested tree, bit-exact
>>> towers = sp.checkpoint.init_from_checkpoint("filter.safetensors", {"tower_0": params},
...                                             {"image_filters/": "tower_0/image_filters/"})
>>> params = sp.checkpoint.load_tf1("model.ckpt")  # a TF 1.x Saver checkpoint  # doctest: +SKIP
>>> sp.checkpoint.list_variables("filter.safetensors")   # TF's tf.train.list_variables
[('image_filters/conv1/biases', (32,)), ('image_filters/conv1/weights', (5, 5, 32, 32))]

Weights files are plain safetensors files: any
safetensors reader opens them, and ``load`` opens safetensors files written by other tools. What
``save`` adds, inside the header's ``__metadata__`` (so other readers ignore it):

* ``scoped_params.tensors``: every tensor's true dtype and shape. Dtypes safetensors has no code for
  (``complex128``, ``int4``, most ``float8`` variants, ...) are stored as raw little-endian bytes
  (``U8``), so every JAX dtype round-trips bit-exact;
* ``scoped_params.crc32``: a CRC-32 of the whole file (computed with this field zeroed), so a
  truncated or bit-flipped file raises ``CheckpointCorruptError`` instead of loading wrong numbers.

Writes are atomic: the bytes go to a temporary file in the same directory, which is flushed,
fsync'ed and renamed over ``path``, and then the directory is fsync'ed. A crash at any point leaves
either the previous file or the new one at ``path``, never a mix (a stray ``.<name>.*.tmp`` file,
a long name cut short, may remain after a crash; it is never read).

``load`` returns numpy arrays: host memory, and exact dtypes even for ``float64`` when
``jax_enable_x64`` is off (``jnp.asarray`` would silently make those ``float32``). Nothing is ever
unpickled.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import stat
import struct
import tempfile
import zlib
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import jax
import ml_dtypes
import numpy as np

from ._errors import (CheckpointCorruptError as CheckpointCorruptError,
                      CheckpointError as CheckpointError,
                      CheckpointMismatchError as CheckpointMismatchError,
                      CheckpointNotFoundError as CheckpointNotFoundError,
                      CheckpointPermissionError as CheckpointPermissionError,
                      MissingDependencyError as MissingDependencyError,
                      StepOrderError as StepOrderError,
                      InvalidNameError, nearest, optional_import, permission_error)
from ._tree import _not_a_tree, flatten, unflatten
from ._tf1 import TF1Entries as _TF1Entries, _is_v1_file, _strip_suffix, _v1_pattern
from ._tf1 import missing_index as _missing_index
from ._tf1 import is_table as _is_table
from ._tf1 import is_utf8 as _is_utf8
from ._tf1 import is_tf1_checkpoint as is_tf1_checkpoint
from ._tf1 import load_tf1 as load_tf1
from ._training import CheckpointNotADirectoryError as CheckpointNotADirectoryError
from ._training import TrainingCheckpointer as TrainingCheckpointer
from ._training import DELETED_FIX as _DELETED_FIX
from ._training import UnsavableLeafError as UnsavableLeafError
from ._training import held_whole as _held_whole
from ._training import is_deleted as _is_deleted
from ._training import _ABSTRACT_MESH_FIX, _placed, _unplaced

PathLike = Union[str, "os.PathLike[str]"]
Tree = Dict[str, Any]

FORMAT_VERSION = "1"
_PREFIX = "scoped_params."
_FORMAT_KEY = _PREFIX + "format"
_TENSORS_KEY = _PREFIX + "tensors"
_CRC_KEY = _PREFIX + "crc32"
_CRC_PLACEHOLDER = "00000000"
# Where the CRC sits in the raw header: the key, opening its string value. Any text of the header can
# contain these bytes (a metadata key 'note "scoped_params.crc32' does), but only inside a string,
# where the first quote is escaped: the real key is the one occurrence not preceded by a backslash.
_CRC_NEEDLE = b'"' + _CRC_KEY.encode() + b'":"'

# numpy dtype name -> safetensors dtype code, for dtypes safetensors stores natively.
_NATIVE = {
    "bool": "BOOL", "uint8": "U8", "int8": "I8", "uint16": "U16", "int16": "I16",
    "uint32": "U32", "int32": "I32", "uint64": "U64", "int64": "I64", "float16": "F16",
    "bfloat16": "BF16", "float32": "F32", "float64": "F64", "complex64": "C64",
    "float8_e5m2": "F8_E5M2", "float8_e4m3fn": "F8_E4M3", "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e8m0fnu": "F8_E8M0",
}
_FROM_CODE = {code: name for name, code in _NATIVE.items()}
_RAW = "U8"  # code for dtypes stored as raw bytes
_HEADER_METADATA = "__metadata__"  # safetensors' header key for metadata: not a tensor name


def _dtype(name: str) -> np.dtype:
    """A dtype from its name, including the ml_dtypes ones numpy cannot look up by name."""
    return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)


def _safetensors():
    return optional_import("safetensors", "safetensors", "checkpoint", "sp.checkpoint.save/load")


# -- save ----------------------------------------------------------------------------------------

def _host_array(name: str, leaf: Any) -> np.ndarray:
    if isinstance(leaf, (list, tuple)):  # np.asarray would stack the items into one array
        raise TypeError(
            f"sp.checkpoint.save: '{name}' is a {type(leaf).__name__}; a checkpoint holds one "
            "array per full name.\n  fix: key the items by name, e.g. "
            f"{{'{name}': {{'0': ..., '1': ...}}}} for '{name}/0', '{name}/1'.")
    if _is_deleted(leaf):
        raise UnsavableLeafError(
            f"sp.checkpoint.save: '{name}' is a deleted array ({leaf.dtype}{list(leaf.shape)}): its "
            f"buffer is gone.\n  fix: {_DELETED_FIX}.")
    if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer) \
            and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(leaf))
        raise TypeError(
            f"sp.checkpoint.save: '{name}' is a typed PRNG key ({leaf.dtype}{list(leaf.shape)}), "
            "which has no array dtype to store.\n  fix: save jax.random.key_data(key) (a uint32 "
            f"array) and rewrap it after loading with jax.random.wrap_key_data(data, impl={impl!r}); "
            "or save training state, keys included, with sp.checkpoint.TrainingCheckpointer.")
    value = leaf
    if isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
        # (one replicated over processes is saved from this process's copy)
        value = _held_whole(leaf)
        if value is None:
            raise TypeError(
                f"sp.checkpoint.save: '{name}' is sharded over several processes; this process "
                "holds only part of it.\n  fix: save multi-host state with "
                "sp.checkpoint.TrainingCheckpointer (orbax), or gather it first "
                "(jax.experimental.multihost_utils.process_allgather).")
    try:
        arr = np.asarray(value)
    except Exception as e:  # jax tracers raise TracerArrayConversionError here
        raise TypeError(
            f"sp.checkpoint.save: '{name}' is {type(leaf).__name__}, not a concrete array ({e}).\n"
            "  fix: save outside jax.jit / grad; pass concrete parameter values.") from None
    if arr.dtype.name not in _KNOWN_NAMES:
        raise TypeError(
            f"sp.checkpoint.save: '{name}' has dtype {arr.dtype} ({type(leaf).__name__}), which is not "
            "a JAX array dtype.\n  fix: store only numeric/bool arrays in params; put text in "
            "metadata=.")
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    # (not np.ascontiguousarray: it turns 0-d arrays into 1-d ones)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _known_dtype_names() -> set:
    names = set(_NATIVE)
    names.update({"complex128"})
    for n in ("int2", "uint2", "int4", "uint4", "float4_e2m1fn", "float8_e3m4", "float8_e4m3",
              "float8_e4m3b11fnuz", "float6_e2m3fn", "float6_e3m2fn"):
        if hasattr(ml_dtypes, n):
            names.add(n)
    return names


_KNOWN_NAMES = _known_dtype_names()


def _check_metadata(metadata: Optional[Mapping[str, str]]) -> Dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"sp.checkpoint.save: metadata must be a dict of str to str, got "
                        f"{type(metadata).__name__}.")
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                f"sp.checkpoint.save: metadata must map str to str; {k!r}: {v!r} is "
                f"{type(k).__name__}: {type(v).__name__}.\n  fix: metadata={{{str(k)!r}: "
                f"json.dumps(value)}}.")
        if k.startswith(_PREFIX):
            raise ValueError(f"sp.checkpoint.save: metadata key {k!r} is reserved (prefix "
                             f"{_PREFIX!r} belongs to scoped_params); pick another key.")
        for what, text in (("key", k), ("value", v)):
            if not _is_utf8(text):
                raise ValueError(
                    f"sp.checkpoint.save: the {what} of metadata entry {k!r} is not valid Unicode "
                    "(a lone surrogate, from a file name decoded with 'surrogateescape'?); the "
                    "header is UTF-8.\n  fix: decode it properly, or escape it "
                    "(text.encode('utf-8', 'surrogateescape').hex()).")
    return dict(metadata)


def _serialize(params: Mapping[str, Any], metadata: Optional[Mapping[str, str]]) -> bytearray:
    st = _safetensors()
    if not isinstance(params, Mapping):
        pair = (isinstance(params, tuple) and len(params) == 2
                and all(isinstance(t, Mapping) for t in params))
        raise TypeError(
            f"sp.checkpoint.save: params must be a (nested) dict of arrays, got "
            f"{type(params).__name__}"
            + (" of 2 dicts, as transform_with_state's init returns (params, state)" if pair else "")
            + ".\n  fix: " + ("save each in its own file, or both in one: sp.merge(params, state)"
                              if pair else "save the params dict; save training state (an optax "
                              "state, a step) with sp.checkpoint.TrainingCheckpointer") + ".")
    flat = flatten(params)
    unflatten(flat)  # a tree that cannot be rebuilt at load time is refused before writing
    arrays, specs, record = {}, {}, {}
    for name, leaf in flat.items():
        if not name or name.startswith("/") or name.endswith("/") or "//" in name:
            raise ValueError(f"sp.checkpoint.save: {name!r} is not a valid full name (empty "
                             "scope component).")
        if name == _HEADER_METADATA:
            raise InvalidNameError(
                f"sp.checkpoint.save: '{name}' cannot be a parameter name: safetensors reserves it "
                "for the header's metadata, so no reader could load the file.\n"
                "  fix: rename the parameter (e.g. 'metadata'), or put text in metadata=.")
        if not _is_utf8(name):
            raise InvalidNameError(
                f"sp.checkpoint.save: {name!r} is not valid Unicode (a lone surrogate, from a name "
                "decoded with 'surrogateescape'?); names are stored as UTF-8.\n"
                "  fix: rename the parameter with valid text.")
        arr = _host_array(name, leaf)
        dname = arr.dtype.name
        if dname in _NATIVE:
            stored, code_name = arr, dname
        else:  # bit-exact as raw bytes; the true dtype and shape live in the record
            stored, code_name = arr.reshape(-1).view(np.uint8), "uint8"
        arrays[name] = stored
        if hasattr(st, "TensorSpec"):  # safetensors >= 0.7: zero-copy, from the buffer
            specs[name] = st.TensorSpec(dtype=code_name, shape=list(stored.shape),
                                        data_ptr=stored.ctypes.data, data_len=stored.nbytes)
        else:  # older safetensors takes the bytes
            specs[name] = {"dtype": code_name, "shape": list(stored.shape),
                           "data": stored.tobytes()}
        record[name] = [dname, list(arr.shape)]
    meta = _check_metadata(metadata)
    meta[_FORMAT_KEY] = FORMAT_VERSION
    meta[_TENSORS_KEY] = json.dumps(record, separators=(",", ":"), sort_keys=True)
    meta[_CRC_KEY] = _CRC_PLACEHOLDER
    blob = bytearray(st.serialize(specs, metadata=meta))
    del arrays  # the serializer has copied the data out of these buffers
    n = _header_len(blob)
    at = _crc_offset(bytes(blob[:8 + n]))
    crc = "%08x" % zlib.crc32(blob)
    if at >= 0 and blob[at:at + 8] == _CRC_PLACEHOLDER.encode():
        blob[at:at + 8] = crc.encode()
    # Checked by parsing, before anything is written: a file load cannot verify is never saved.
    if at < 0 or json.loads(bytes(blob[8:8 + n]))[_HEADER_METADATA][_CRC_KEY] != crc:
        raise CheckpointError(
            f"sp.checkpoint.save: cannot place the {_CRC_KEY!r} field in the header safetensors "
            "wrote; nothing was written.\n  fix: report this as a bug of scoped_params, with the "
            "metadata keys given.")
    return blob


def _header_len(blob) -> int:
    return struct.unpack("<Q", bytes(blob[:8]))[0]


def _crc_offset(header_with_prefix: bytes) -> int:
    """Where the CRC's 8 hex digits start: after the one occurrence of the key that opens a string
    (not preceded by a backslash, see _CRC_NEEDLE); -1 if there is not exactly one."""
    found = []
    at = header_with_prefix.find(_CRC_NEEDLE)
    while at >= 0:
        if header_with_prefix[at - 1:at] != b"\\":
            found.append(at)
        at = header_with_prefix.find(_CRC_NEEDLE, at + 1)
    return found[0] + len(_CRC_NEEDLE) if len(found) == 1 else -1


def _atomic_write(path: str, data) -> None:
    if not path:
        raise CheckpointNotFoundError(
            "cannot save checkpoint '': the path is empty.\n"
            "  fix: name a file, e.g. 'params.safetensors'.")
    if os.path.isdir(path) or path.endswith((os.sep, os.altsep or os.sep)):
        raise IsADirectoryError(
            f"cannot save checkpoint {path!r}: it names a directory.\n"
            f"  fix: name a file, e.g. {os.path.join(path, 'params.safetensors')!r}.")
    # Write through a symlink (best.safetensors -> step_1000.safetensors), as open(path, "wb") and
    # TF's Saver do: the temporary file goes next to the target and replaces it, the link stays.
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        if os.path.exists(directory):
            raise CheckpointNotFoundError(
                f"cannot save checkpoint {path!r}: {directory!r} is a file, not a directory.\n"
                "  fix: check the path; save next to that file or into another directory.")
        raise CheckpointNotFoundError(
            f"cannot save checkpoint {path!r}: directory {directory!r} does not exist.\n"
            "  fix: create it first (os.makedirs(directory, exist_ok=True)).")
    try:
        mode, kept = os.stat(target).st_mode & 0o777, "the previous file is unchanged"
    except FileNotFoundError:
        # what open() would give; mkstemp's file is 0o600
        mode, kept = 0o666 & ~_umask(), "nothing was written"
    # The temporary file's name must fit the OS's limit (255 bytes) as the target's does: it keeps
    # only the start of a long name.
    stem = os.path.basename(target)
    while len(os.fsencode(stem)) > 64:
        stem = stem[:-1]
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + stem + ".", suffix=".tmp", dir=directory)
    except OSError as e:  # a read-only or full file system, no permission: nothing was written
        raise _write_error(
            path, e,
            f"cannot save checkpoint {path!r}: cannot create a file in directory {directory!r} "
            f"({e.strerror or e}, errno {e.errno}); nothing was written.\n"
            "  fix: save into a directory you can write to (check its permissions, free space "
            "and that the file system is not read-only).") from None
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # a full disk or quota, an I/O error: named as mkstemp's failure is
            raise _write_error(
                path, e,
                f"cannot save checkpoint {path!r}: writing it failed ({e.strerror or e}, errno "
                f"{e.errno}); {kept}.\n"
                f"  fix: make room on the file system of {directory!r} (free space, quota) or "
                "check it for errors, then save again; or save into another directory.") from None
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _umask() -> int:
    # The umask can only be read by setting it. Set the strictest one meanwhile: a file another
    # thread creates in that instant is then private, never world-writable as with umask(0).
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    flags = getattr(os, "O_DIRECTORY", None)
    if flags is None:
        return
    try:
        fd = os.open(directory, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path: PathLike, params: Mapping[str, Any],
         metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write ``params`` (nested dict or flat ``{full_name: array}``) to a safetensors file, atomically.

    Keys are full names (``image_filters/conv1/weights``); every JAX dtype round-trips bit-exact.
    An empty sub-dict holds no parameter and is not stored (``sp.flatten`` drops it too), so
    ``load`` returns the tree without it. ``metadata`` is an optional ``{str: str}`` dict, returned
    by ``read_metadata``. A symlink is written through (its target replaced, the link kept), as
    ``open(path, "wb")`` does.

    >>> params = {"dense": {"w": jnp.ones((3, 2))}}
    >>> sp.checkpoint.save("model.safetensors", params, metadata={"step": "100"})
    >>> sp.checkpoint.read_metadata("model.safetensors")
    {'step': '100'}
    """
    if not isinstance(path, (str, os.PathLike)):
        swapped = isinstance(path, Mapping) and isinstance(params, (str, os.PathLike))
        raise TypeError(
            "sp.checkpoint.save: "
            + (f"the arguments look swapped: path is a {type(path).__name__} and params is the "
               f"path {os.fspath(params)!r}." if swapped else
               f"path must be a file path (str or os.PathLike), got {type(path).__name__}.")
            + "\n  fix: sp.checkpoint.save(path, params): the file path first, then the params.")
    path = os.fspath(path)
    _atomic_write(path, _serialize(params, metadata))


# -- load ----------------------------------------------------------------------------------------

def _corrupt(path: str, what: str) -> CheckpointCorruptError:
    err = CheckpointCorruptError(
        f"checkpoint file {path!r} cannot be read: {what}.\n"
        "  fix: the file is damaged or is not a scoped_params/safetensors checkpoint; restore it "
        "from a backup or save it again.")
    err.filename = path
    return err


class CheckpointWriteError(CheckpointError, OSError):
    """``save`` could not write the file: no file can be made in its directory (permissions, a
    read-only file system), or writing it failed (a full disk or quota, an I/O error). The previous
    file, if any, is unchanged. An ``OSError``, as what the machine refused was one (its ``errno``
    is kept); ``filename`` is the checkpoint's path."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno None] None: <filename>"
        return str(self.args[0]) if self.args else super().__str__()

    def __reduce__(self) -> Any:  # errno and strerror survive pickling (multiprocessing)
        return _write_error, (self.filename, OSError(self.errno, self.strerror), str(self))


def _write_error(path: str, cause: OSError, message: str) -> CheckpointWriteError:
    err = CheckpointWriteError(message)
    err.errno, err.strerror, err.filename = cause.errno, cause.strerror, path
    return err


class CheckpointIsADirectoryError(CheckpointError, IsADirectoryError):
    """A weights file was asked for (``load``, ``read_metadata``) and the path is a directory: as
    ``save`` to a directory raises ``IsADirectoryError``. Not a ``CheckpointCorruptError``: nothing
    is damaged, the path names something else."""

    def __str__(self) -> str:  # the message, not OSError's "[Errno None] None: <filename>"
        return str(self.args[0]) if self.args else super().__str__()


def _read_bytes(path: str) -> bytes:
    if os.path.isdir(path):
        try:
            held = sorted(n for n in os.listdir(path) if n.endswith(".safetensors"))
        except OSError:
            held = []
        directory = CheckpointIsADirectoryError(
            f"checkpoint file {path!r} is a directory, not a weights file"
            + (f" (it holds {', '.join(map(repr, held[:3]))}{', ...' if len(held) > 3 else ''})"
               if held else "") + ".\n"
            "  fix: pass the weights file sp.checkpoint.save wrote (e.g. "
            f"{os.path.join(path, held[0] if held else 'params.safetensors')!r}); for a TF 1.x "
            "checkpoint directory use "
            "sp.checkpoint.load_tf1(directory); for a training run's directory use "
            "sp.checkpoint.TrainingCheckpointer(directory).restore(...).")
        directory.filename = path
        raise directory
    try:
        # (before open: opening a FIFO waits for a writer, and a device may never end)
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise _unreadable(path, "it is not a regular file (a pipe, socket or device), which "
                                    "has no fixed contents to verify",
                              "pass the weights file sp.checkpoint.save wrote")
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        err = CheckpointNotFoundError(
            f"checkpoint file {path!r} does not exist.\n  fix: check the path"
            + (" (a TF 1.x checkpoint? use sp.checkpoint.load_tf1)." if is_tf1_checkpoint(path)
               else "."))
        err.filename = path
        raise err from None
    except NotADirectoryError:
        raise _unreadable(path, "a component of its directory path is a file, not a directory",
                          "check the path") from None
    except PermissionError as e:
        raise permission_error(path, f"cannot read checkpoint file {path!r}", e) from None
    except OSError as e:  # permissions, I/O errors, symlink loops, ...
        raise _unreadable(path, f"{e.strerror or e} (errno {e.errno})",
                          "check the path and its permissions") from None


def _unreadable(path: str, why: str, fix: str) -> CheckpointError:
    err = CheckpointError(f"cannot read checkpoint file {path!r}: {why}.\n  fix: {fix}.")
    err.filename = path
    return err


def _parse_header(path: str, data: bytes) -> Tuple[dict, int]:
    if not data:
        raise _corrupt(path, "it is empty (0 bytes)")
    if len(data) < 8:
        raise _corrupt(path, f"it is {len(data)} bytes long, too short for a safetensors header")
    n = _header_len(data)
    if n > len(data) - 8:
        raise _corrupt(path, f"the header claims {n} bytes but the file has {len(data) - 8} after "
                             "the length prefix (truncated, or not a safetensors file)")
    raw = data[8:8 + n]
    if not raw.startswith(b"{"):
        raise _corrupt(path, "it does not start with a safetensors header (not a checkpoint file)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _corrupt(path, f"its header is not valid JSON ({e})") from None
    except RecursionError:  # nested deeper than json's recursion can follow: no header of ours
        raise _corrupt(path, "its header nests JSON arrays or objects thousands of levels deep "
                             "(not a safetensors header)") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object")
    return header, n


def _read(path: PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """(flat {full_name: array}, user metadata), every byte verified for files ``save`` wrote."""
    path = os.fspath(path)
    try:
        return _decode(path, _read_bytes(path))
    except (CheckpointCorruptError, CheckpointNotFoundError) as e:
        if isinstance(e, CheckpointCorruptError) and is_tf1_source(path):
            raise _tf1_given(path) from None  # not damaged: a TF checkpoint's file
        # a TF checkpoint's prefix or file with no '.index' next to it (or its state file): TF's
        # not-found error, not that of a missing or damaged weights file. A file that starts as
        # a weights file does (a header length, then '{') is a damaged one, whatever its name.
        tf_error = None if _starts_as_weights(path) else _missing_index(path)
        if tf_error is not None:
            raise tf_error from None
        raise


def _starts_as_weights(path: str) -> bool:
    """Whether the file ``path`` starts as a safetensors file: 8 bytes of header length, then a JSON
    object, '{"' (or '{}'); a TF data file's values may hold a '{' there, rarely both."""
    try:
        with open(path, "rb") as f:
            head = f.read(10)
    except OSError:  # none there (or unreadable): nothing says it is a weights file
        return False
    return head[8:10] in (b'{"', b"{}")


def _tf1_given(path: str) -> CheckpointCorruptError:
    prefix = _strip_suffix(path)
    pattern = _v1_pattern(path)
    if prefix != path:
        what = f"the {path[len(prefix):]!r} file of one"
    elif pattern is not None:
        what, prefix = "one shard of a V1-format checkpoint saved in shards", pattern
    elif _is_v1_file(path):
        what = "a V1-format checkpoint file"
    else:
        what = f"its prefix, next to {path + '.index'!r}"
    err = CheckpointCorruptError(
        f"checkpoint file {path!r} is a TF 1.x checkpoint ({what}), not a weights file.\n"
        f"  fix: read it with sp.checkpoint.load_tf1({prefix!r}).")
    err.filename = path
    return err


def _decode(path: str, data: bytes) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    header, n = _parse_header(path, data)
    meta = header.get(_HEADER_METADATA) or {}
    if not isinstance(meta, dict):
        raise _corrupt(path, "its __metadata__ is not a JSON object")
    ours = [k for k in (_FORMAT_KEY, _TENSORS_KEY, _CRC_KEY) if k in meta]
    record = None
    if ours:
        missing = sorted({_FORMAT_KEY, _TENSORS_KEY, _CRC_KEY} - set(ours))
        if missing:
            raise _corrupt(path, f"header entries {missing} are missing or damaged")
        newer = meta[_FORMAT_KEY] != FORMAT_VERSION
        upgrade = (f"format version {meta[_FORMAT_KEY]!r} is not one this version of scoped_params "
                   f"reads ({FORMAT_VERSION!r}); upgrade scoped_params") if newer else ""
        at = _crc_offset(data[:8 + n])
        stored = meta[_CRC_KEY]
        if at < 0 or data[at:at + 8].decode("latin-1") != stored:
            if newer:  # a newer format may keep its checksum otherwise
                raise _corrupt(path, upgrade)
            raise _corrupt(path, "its checksum field is damaged")
        actual = zlib.crc32(data[at + 8:], zlib.crc32(_CRC_PLACEHOLDER.encode(),
                                                      zlib.crc32(data[:at])))
        # The checksum covers the header, the version too: checked first, so a flipped bit in the
        # version is called damage, as anywhere else. A genuine newer file whose checksum matches
        # gets the upgrade message below; one whose newer writer computes its checksum otherwise
        # is said as the less likely reading of a mismatch.
        if "%08x" % actual != stored:
            raise _corrupt(path, f"checksum mismatch (stored crc32 {stored}, computed "
                                 f"{actual:08x}): the file was truncated or bits were flipped"
                           + (f" (its format version reads {meta[_FORMAT_KEY]!r}, not "
                              f"{FORMAT_VERSION!r}: damaged too, unless a newer scoped_params "
                              "that checks its files otherwise wrote it; then upgrade "
                              "scoped_params)" if newer else ""))
        if newer:
            raise _corrupt(path, upgrade)
        try:
            record = json.loads(meta[_TENSORS_KEY])
        except (TypeError, ValueError) as e:
            raise _corrupt(path, f"its tensor record is not valid JSON ({e})") from None
        if not isinstance(record, dict):
            raise _corrupt(path, "its tensor record is not a JSON object")
    st = _safetensors()
    try:
        views = st.deserialize(data)
    except Exception as e:  # SafetensorError: bad offsets, sizes, dtypes
        raise _corrupt(path, f"safetensors rejected it ({e})") from None
    flat: Dict[str, np.ndarray] = {}
    for name, view in views:
        flat[name] = _to_array(path, name, view, record)
    if record is not None and set(record) != set(flat):
        raise _corrupt(path, "its tensor record does not match its tensors")
    return flat, {k: v for k, v in meta.items() if not k.startswith(_PREFIX)}


def _to_array(path: str, name: str, view: dict, record: Optional[dict]) -> np.ndarray:
    code, shape = view["dtype"], tuple(view["shape"])
    if record is None:  # a safetensors file from another tool
        if code not in _FROM_CODE:  # a dtype safetensors knows (it parsed the file), this reader not
            raise _unsupported_dtype(path, name, code)
        return _bools_checked(path, name, np.frombuffer(view["data"], dtype=_dtype(
            _FROM_CODE[code])).reshape(shape).copy())
    if name not in record:
        raise _corrupt(path, f"tensor {name!r} is not in its tensor record")
    entry = record[name]  # [dtype name, shape], as _serialize writes it
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
            and isinstance(entry[1], list)
            and all(type(d) is int and d >= 0 for d in entry[1])):
        raise _corrupt(path, f"tensor {name!r} has the malformed record {entry!r} (expected "
                             "[dtype name, shape])")
    dname, rshape = entry[0], tuple(entry[1])
    if dname not in _KNOWN_NAMES:
        raise _corrupt(path, f"tensor {name!r} has dtype {dname!r}, unknown to this numpy/ml_dtypes "
                             "(if a newer ml_dtypes wrote it, upgrade ml_dtypes)")
    dtype = _dtype(dname)
    expected = _NATIVE.get(dname, _RAW)
    if code != expected or (expected != _RAW and shape != rshape):
        raise _corrupt(path, f"tensor {name!r} is stored as {code}{list(shape)} but recorded as "
                             f"{dname}{list(rshape)}")
    size = math.prod(rshape)  # Python ints: a huge recorded shape cannot wrap around to match
    if len(view["data"]) != size * dtype.itemsize:
        raise _corrupt(path, f"tensor {name!r} holds {len(view['data'])} bytes, but its recorded "
                             f"{dname}{list(rshape)} takes {size * dtype.itemsize}")
    return _bools_checked(path, name, np.frombuffer(view["data"], dtype=dtype).reshape(rshape).copy())


def _bools_checked(path: str, name: str, array: np.ndarray) -> np.ndarray:
    """``array``, refused if it is bool with bytes other than 0 and 1: NumPy and JAX read such a
    byte differently (np.sum counts 2 as True, jnp's == True does not), so no answer is right."""
    if array.dtype == np.bool_ and array.size:
        raw = array.view(np.uint8)
        if raw.max() > 1:
            raise _corrupt(path, f"tensor {name!r} is bool, but holds the byte {int(raw.max())} "
                                 "(a bool is stored as 0 or 1)")
    return array


def _unsupported_dtype(path: str, name: str, code: str) -> CheckpointError:
    """The error for a tensor of a safetensors dtype this reader does not hold (F4, F6_E2M3,
    F6_E3M2: floats of under a byte, packed, whose bit order it does not take on trust): not a
    ``CheckpointCorruptError``, the file is valid."""
    err = CheckpointError(
        f"checkpoint file {path!r} cannot be read: tensor {name!r} has safetensors dtype {code}, "
        "which this reader does not support (the file is valid; this reader holds the dtypes of "
        f"whole bytes, {', '.join(sorted(_FROM_CODE))}).\n"
        "  fix: convert that tensor where the file was written (to BF16, F16 or F32, or its packed "
        "bytes to U8) and save the file again; or read it with the safetensors library itself.")
    err.filename = path
    return err


def load(path: PathLike, flat: bool = False) -> Tree:
    """Read a weights file into the nested params tree (numpy leaves, exact dtypes); with
    ``flat=True``, the flat ``{full name: array}`` dict (``sp.flatten`` of the tree).

    Raises ``CheckpointNotFoundError`` (a ``FileNotFoundError``), ``CheckpointIsADirectoryError``
    (an ``IsADirectoryError``), ``CheckpointPermissionError`` (a ``PermissionError``) or
    ``CheckpointCorruptError`` (a ``ValueError``), each naming the file; a ``CheckpointError`` for a valid file of another tool holding a dtype this reader does
    not (F4, F6_*: floats packed under a byte), or names that do not form a tree (``'a'`` and
    ``'a/b'``, which ``flat=True`` reads). ``jax.device_put(tree)`` moves the result to devices.

    >>> sp.checkpoint.save("model.safetensors", {"dense": {"w": jnp.ones((3, 2))}})
    >>> params = sp.checkpoint.load("model.safetensors")   # NumPy arrays; apply takes them as they are
    >>> params["dense"]["w"].shape
    (3, 2)
    """
    values, _ = _read(path)
    if flat:
        return values
    try:
        return unflatten(values)
    except ValueError as e:  # a file of another tool (ours are saved from trees)
        path = os.fspath(path)
        err = CheckpointError(
            f"checkpoint file {path!r} is valid, but its names do not form a nested tree: "
            f"{str(e).splitlines()[0]}\n"
            f"  fix: read it flat, as {{full name: array}}: sp.checkpoint.load({path!r}, flat=True).")
        err.filename = path
        raise err from None


def read_metadata(path: PathLike) -> Dict[str, str]:
    """The ``metadata`` dict given to ``save`` (the whole file is read and verified)."""
    return _read(path)[1]


def list_variables(path: PathLike) -> List[Tuple[str, Tuple[int, ...]]]:
    """TF's ``tf.train.list_variables``: ``(full name, shape)`` of every entry of a checkpoint, a
    weights file of ours or a TF 1.x checkpoint (its prefix, one of its files or its directory),
    sorted by name. A TF checkpoint's entries are listed as saved: optimizer slots and
    ``global_step`` too, and a partitioned variable saved part by part as its ``part_N`` entries.
    A TF checkpoint is read from its index; a weights file is read and verified whole."""
    from ._inspect import _Source

    return [(e.name, tuple(int(d) for d in e.shape)) for e in _Source(os.fspath(path)).entries]


def load_variable(path: PathLike, name: str) -> np.ndarray:
    """TF's ``tf.train.load_variable``: the value of the entry ``name`` of a checkpoint (either
    kind, as ``list_variables``); a ``KeyError`` naming the closest names if it has none. As in TF,
    a tensor name (``var.name``, ``'dense/kernel:0'``) reads its variable's entry."""
    from ._inspect import _Source, entry

    source = _Source(os.fspath(path))
    if isinstance(name, str) and name.endswith(":0") and name not in source.by_name:
        name = name[:-2]
    return np.asarray(source.get(entry(source, name).name))


def is_tf1_source(path: PathLike) -> bool:
    """Whether ``path`` names a TF checkpoint (prefix, directory or one of its files) rather than a
    safetensors weights file. Reads a few bytes of a file; does not import TensorFlow."""
    path = os.fspath(path)
    if not is_tf1_checkpoint(path):
        return False
    # A directory, a prefix, or a file named as TF names its files: a data file's bytes are the
    # stored values, which may look like a safetensors header. Unless the prefix's '.index' is no
    # TF table: then a weights file was saved under such a name ('encoder.index').
    if not os.path.isfile(path):
        return True
    prefix = _strip_suffix(path)
    if prefix != path and _is_table(prefix + ".index"):
        return True
    # a file without a TF suffix next to '<path>.index' (weights saved under a TF prefix's name?),
    # or ending with TF's table magic: a V1 checkpoint, or weights whose last bytes are the magic?
    with open(path, "rb") as f:
        head = f.read(9)
        size = os.fstat(f.fileno()).st_size
    if not (len(head) == 9 and head[8:9] == b"{"):  # a safetensors header starts with "{"
        return True
    # A V1 file starts with varints and tags, 00 00 <len> 0a <len> 0a ..., whose byte 8 may be "{"
    # too; read as a safetensors header length, its first 8 bytes (a 0x0a in bytes 3-5) exceed it.
    return _is_v1_file(path) and struct.unpack("<Q", head[:8])[0] > size - 8


# -- init_from_checkpoint ------------------------------------------------------------------------

def _source(path_or_tree: Union[PathLike, Mapping[str, Any]]) -> Tuple[Mapping[str, Any], str]:
    """({full_name: array}, description) from a weights file, a TF 1.x checkpoint or a tree."""
    if isinstance(path_or_tree, Mapping):
        return flatten(path_or_tree), "the given tree"
    if not isinstance(path_or_tree, (str, bytes, os.PathLike)):
        raise _not_a_tree(path_or_tree, "init_from_checkpoint: the source must be a checkpoint's "
                          "path (a weights file or a TF 1.x checkpoint) or a tree of arrays",
                          "pass the params alone (the first of the pair), or the checkpoint's path",
                          "pass the checkpoint's path, or a nested dict of arrays")
    path = os.fspath(path_or_tree)
    if is_tf1_source(path):
        # Every entry, flat, as TF's init_from_checkpoint sees them: global_step and optimizer
        # slots ('w/Adam') too, and 'a/b' next to a variable 'a' (no nested tree holds both). Read
        # lazily, as TF does: only the entries the map names, so one that cannot be read whole
        # (a partitioned variable's mangled slot) fails only the map that asks for it.
        return _TF1Entries(path), f"TF 1.x checkpoint {path!r}"
    return _read(path)[0], f"checkpoint {path!r}"


def _narrowed_by_jax(value_dtype: Any, param_dtype: Any) -> bool:
    """Whether a checkpoint value's dtype is the 64-bit one JAX made ``param_dtype`` of, with
    jax_enable_x64 off (float64 -> float32, int64 -> int32, complex128 -> complex64; with it on,
    JAX keeps every dtype)."""
    try:
        if np.dtype(value_dtype) == np.dtype(param_dtype):
            return False
        return np.dtype(jax.dtypes.canonicalize_dtype(value_dtype)) == np.dtype(param_dtype)
    except TypeError:  # not a JAX dtype (strings, objects): nothing JAX narrowed
        return False


def _cast_source(path_or_tree: Union[PathLike, Mapping[str, Any]]) -> str:
    """The code of the source tree, for a fix that casts it."""
    if isinstance(path_or_tree, Mapping):
        return "source"
    path = os.fspath(path_or_tree)
    if is_tf1_source(path):
        return f"sp.checkpoint.load_tf1({path!r}, flat=True)"
    return f"sp.checkpoint.load({path!r})"


def _same_dtype(a, b) -> bool:
    if a == b:
        return True
    try:
        return np.dtype(a) == np.dtype(b)
    except TypeError:  # a JAX extended dtype (a typed PRNG key's): equal only to itself
        return False


def _dtype_name(dtype: Any) -> str:
    """``float32``, ``key<fry>``: a dtype's name, NumPy's or a JAX extended dtype's."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(getattr(dtype, "name", dtype))


# init_from_checkpoint's error stays short and cheap on a large model: a "did you mean" (a search over
# every name) for the first few problems only, and the first few problems listed, the others counted.
_HINTED = 5
_LISTED = 10


def _listing(items: List[str], shown: int = 5) -> str:
    """``'a', 'b', 'c'``, or the first ``shown`` and ``and N more``."""
    text = ", ".join(map(repr, items[:shown]))
    return text + (f" and {len(items) - shown:,} more" if len(items) > shown else "")


def _unfound_scope(ckpt_name: str, cur_name: str, names: List[str], targets: Mapping[str, str],
                   source: Mapping[str, Any], where: str) -> str:
    """The one line for a scope map ``{ckpt_name: cur_name}`` of which ``source`` holds none of the
    parameters ``names`` (sorted, two or more): what the scope holds in the checkpoint, the
    checkpoint's top-level scopes, and the scope that holds these parameters, if one does."""
    cur_scope = "" if cur_name == "/" else cur_name
    ckpt_scope = "" if ckpt_name == "/" else ckpt_name
    m = len(names)
    text = (f"{ckpt_name!r}: {cur_name!r}: none of the {m:,} parameters under {cur_name!r} is in "
            f"{where} under {ckpt_name!r} (e.g. '{names[0]}' from '{targets[names[0]]}')")
    if ckpt_scope:
        held = sum(1 for n in source if n.startswith(ckpt_scope))
        text += (f"; it has {held:,} other name{'' if held == 1 else 's'} under {ckpt_name!r}"
                 if held else f"; it has no name under {ckpt_name!r}")
    tops = sorted({n.split("/", 1)[0] + ("/" if "/" in n else "") for n in source})
    text += f"; its names start with {_listing(tops)}" if tops else "; it is empty"
    # Where the checkpoint keeps these names: the prefixes of its names ending as one of them does.
    for name in names[:3]:
        relative = name[len(cur_scope):]
        prefixes = sorted({n[:len(n) - len(relative)] for n in source
                           if n.endswith("/" + relative) or n == relative})
        if prefixes:
            counts = [(sum(p + n[len(cur_scope):] in source for n in names), p)
                      for p in prefixes[:5]]
            covered, prefix = max(counts, key=lambda c: c[0])  # the first that covers the most
            shown = prefix or "/"
            amount = f"all {m:,} are" if covered == m else \
                f"{covered:,} of the {m:,} {'is' if covered == 1 else 'are'}"
            return (text + f"; {amount} under {shown!r} in it: did you mean "
                    f"{{{shown!r}: {cur_name!r}}}?")
    return text


def init_from_checkpoint(path_or_tree: Union[PathLike, Mapping[str, Any]],
                         params: Mapping[str, Any],
                         assignment_map: Mapping[str, str]) -> Tree:
    """A new params tree with the entries ``assignment_map`` names taken from a checkpoint.

    TF 1.x ``tf.train.init_from_checkpoint`` semantics; keys are names in the checkpoint, values are
    names in ``params``:

    * ``{"old_scope/": "new_scope/"}``: every parameter under ``new_scope/`` is loaded from the same
      relative name under ``old_scope/`` in the checkpoint;
    * ``{"/": "new_scope/"}``: every parameter under ``new_scope/`` from the checkpoint's root;
      ``{"old_scope/": "/"}`` every parameter of ``params`` from under ``old_scope/``;
    * ``{"old_scope/w": "new_scope/w"}``: one parameter.

    ``path_or_tree`` is a ``save``d file, a TF 1.x checkpoint (prefix or directory) or a tree. As in
    TF, every entry of a TF checkpoint can be named, ``global_step`` and optimizer slots
    (``{"w/Adam": "m"}``) too; a scope map fills the parameters ``params`` has under the scope. Of
    a TF checkpoint only the entries the map names are read, as TF does: one nobody asks for cannot
    make it fail.
    Parameters the map does not cover keep their values; loaded values keep the original leaf's
    placement (``jax.Array`` leaves, and ``jax.ShapeDtypeStruct`` leaves with a sharding, are
    ``device_put`` with their sharding; one on an ``AbstractMesh`` on the mesh set with
    ``jax.set_mesh`` of its axis names and sizes). Every parameter the map
    asks for that cannot be filled (absent from the checkpoint, different shape or dtype) is counted
    in one ``CheckpointMismatchError``, which lists the first ten (a scope map of which the checkpoint
    holds no parameter in one line, with the scopes it does hold); ``params`` is never modified.

    >>> sp.checkpoint.save("pretrained.safetensors", {"encoder": {"w": jnp.full((2, 2), 3.0)}})
    >>> params = {"student": {"encoder": {"w": jnp.zeros((2, 2))}, "head": {"w": jnp.zeros(2)}}}
    >>> params = sp.checkpoint.init_from_checkpoint("pretrained.safetensors", params,
    ...                                              {"encoder/": "student/encoder/"})
    >>> params["student"]["encoder"]["w"].tolist(), params["student"]["head"]["w"].tolist()
    ([[3.0, 3.0], [3.0, 3.0]], [0.0, 0.0])
    """
    if not isinstance(assignment_map, Mapping):
        raise TypeError("init_from_checkpoint: assignment_map must be a dict {checkpoint name or "
                        f"scope: params name or scope}}, got {type(assignment_map).__name__}.")
    if not isinstance(params, Mapping):
        raise _not_a_tree(params, "init_from_checkpoint: params must be a nested dict of arrays "
                                  "(the params to fill)",
                          "pass the params alone, `params, state = model.init(key, ...)`, then "
                          "init_from_checkpoint(path, params, assignment_map); state is not "
                          "filled from checkpoints this way (load it with sp.checkpoint.load)")
    source, where = _source(path_or_tree)
    current = flatten(params)
    targets: Dict[str, str] = {}  # params name -> checkpoint name
    mapped_by: Dict[str, Tuple[str, str]] = {}  # params name -> the scope map entry that maps it
    problems: List[Tuple[str, int]] = []  # (what went wrong, how many entries it stands for)
    hints = _HINTED  # the "did you mean"s left to look for

    def hint(name: str, names: Any) -> list:
        nonlocal hints
        if hints <= 0:
            return []
        hints -= 1
        return nearest(name, names)

    names_in_order: Optional[List[str]] = None
    for ckpt_name, cur_name in sorted(assignment_map.items()):
        if not isinstance(ckpt_name, str) or not isinstance(cur_name, str):
            raise TypeError(f"init_from_checkpoint: assignment_map entries must be str: str, got "
                            f"{ckpt_name!r}: {cur_name!r}.")
        if cur_name in current:  # one parameter
            if ckpt_name.endswith("/"):
                problems.append((f"'{cur_name}': mapped from scope {ckpt_name!r}; map a parameter "
                                 "to a parameter, or 'scope/' to 'scope/'", 1))
            else:
                targets[cur_name] = ckpt_name
                mapped_by.pop(cur_name, None)
            continue
        if not cur_name.endswith("/") or not ckpt_name.endswith("/"):
            close = hint(cur_name, current)
            problems.append((
                f"{ckpt_name!r}: {cur_name!r}: {cur_name!r} is not a parameter of params"
                + (f" (did you mean {close}?)" if close else "")
                + "; scope maps are written with trailing slashes on both sides, "
                  "{'old_scope/': 'new_scope/'}", 1))
            continue
        cur_scope = "" if cur_name == "/" else cur_name
        ckpt_scope = "" if ckpt_name == "/" else ckpt_name
        if names_in_order is None:  # sorted once: each scope entry takes its range (bisect)
            names_in_order = sorted(current)
        start = bisect.bisect_left(names_in_order, cur_scope)
        matched = list(itertools.takewhile(lambda n: n.startswith(cur_scope),
                                           itertools.islice(names_in_order, start, None)))
        if not matched:
            problems.append((f"{ckpt_name!r}: {cur_name!r}: params has no parameter under "
                             f"{cur_name!r}", 1))
        for name in matched:
            targets[name] = ckpt_scope + name[len(cur_scope):]
            mapped_by[name] = (ckpt_name, cur_name)

    # A scope map of which the checkpoint holds none of the parameters (a wrong or misspelt scope) is
    # one problem, said once, not one per parameter.
    by_entry: Dict[Tuple[str, str], List[str]] = {}
    for name, entry in mapped_by.items():
        by_entry.setdefault(entry, []).append(name)
    unfound = set()
    for (ckpt_name, cur_name), names in sorted(by_entry.items()):
        if len(names) > 1 and not any(targets[n] in source for n in names):
            problems.append((_unfound_scope(ckpt_name, cur_name, sorted(names), targets, source,
                                            where), len(names)))
            unfound.update(names)

    out = dict(current)
    narrowed = 0  # dtype problems that are JAX's 64-bit -> 32-bit, with jax_enable_x64 off
    unplaced = 0  # parameters sharded on an AbstractMesh, with no mesh of its axes set
    for name, ckpt_name in sorted(targets.items()):
        if name in unfound:
            continue
        if ckpt_name not in source:
            close = hint(ckpt_name, source)
            renamed = next((f"{ckpt_name}_{i}" for i in range(1, 4) if f"{ckpt_name}_{i}" in source),
                           None)
            problems.append((f"'{name}': '{ckpt_name}' is not in {where}"
                             + (f" (nearest: {close})" if close else "")
                             + (f"; TF's Saver names a variable '{renamed}' when its name is, "
                                "ignoring case, that of an earlier op or name scope ('Dense' then "
                                f"'dense'): map it, {{{renamed!r}: {name!r}}}" if renamed else ""),
                             1))
            continue
        value, old = source[ckpt_name], current[name]
        if tuple(np.shape(value)) != tuple(np.shape(old)):
            problems.append((f"'{name}': shape {tuple(np.shape(old))} in params, but '{ckpt_name}' "
                             f"has shape {tuple(np.shape(value))} in {where}", 1))
            continue
        if not _same_dtype(_leaf_dtype(value), _leaf_dtype(old)):
            why = ""
            if _narrowed_by_jax(_leaf_dtype(value), _leaf_dtype(old)):
                narrowed += 1
                why = " (jax_enable_x64 is off: JAX makes 64-bit values 32-bit)"
            problems.append((f"'{name}': dtype {_dtype_name(_leaf_dtype(old))} in params, but "
                             f"'{ckpt_name}' has dtype {_dtype_name(_leaf_dtype(value))} in "
                             f"{where}" + why, 1))
            continue
        if isinstance(old, jax.ShapeDtypeStruct) and _placed(old.sharding) is None:
            unplaced += 1
            problems.append((f"'{name}': sharded {_unplaced(old.sharding)}", 1))
            continue
        out[name] = _place_like(value, old)

    if problems:
        unfilled = sum(count for _, count in problems)
        listed = [text for text, _ in problems[:_LISTED]]
        rest = unfilled - sum(count for _, count in problems[:_LISTED])
        if rest:
            listed.append(f"... and {rest:,} more")
        fix = ("correct assignment_map (keys: checkpoint names, values: params names), or "
               "cast/reshape the source tree first")
        if narrowed:
            fix = ("cast the checkpoint's 64-bit values first: source = jax.tree.map(lambda a: "
                   "np.asarray(a, jax.dtypes.canonicalize_dtype(a.dtype)), "
                   f"{_cast_source(path_or_tree)}), then init_from_checkpoint(source, params, "
                   "assignment_map); or turn on jax_enable_x64 (jax.config.update("
                   "'jax_enable_x64', True), before params are made) to keep them 64-bit"
                   + (f"; for the other entries, {fix}" if narrowed < unfilled - unplaced
                      else ""))
        if unplaced:
            mesh_fix = _ABSTRACT_MESH_FIX.format(
                call="call init_from_checkpoint", built="params were", whose="params'",
                code="init_from_checkpoint(path, params, assignment_map)").rstrip(".")
            fix = mesh_fix + (f"; for the other entries, {fix}" if unplaced < unfilled else "")
        raise CheckpointMismatchError(
            f"init_from_checkpoint could not fill {unfilled:,} entr"
            f"{'y' if unfilled == 1 else 'ies'} from {where}:\n  - "
            + "\n  - ".join(listed)
            + f"\n  fix: {fix}; params was not changed.")
    return unflatten(out)


def _leaf_dtype(x) -> np.dtype:
    return x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype


def _place_like(value: Any, old: Any) -> Any:
    if isinstance(old, jax.Array) and not isinstance(old, jax.core.Tracer):
        return jax.device_put(value, old.sharding)
    if isinstance(old, jax.ShapeDtypeStruct) and old.sharding is not None:
        # (a sharding on an AbstractMesh: moved onto the mesh set, checked by the caller)
        return jax.device_put(value, _placed(old.sharding))
    if isinstance(old, np.ndarray):
        return np.array(value, dtype=old.dtype)
    return value
