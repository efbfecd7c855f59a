"""Reading TF 1.x checkpoints (``tf.compat.v1.train.Saver``) into a params tree, through TF's own reader.

TensorFlow is imported only when a TF checkpoint is actually read (extra ``scoped_params[tf]``).
"""

from __future__ import annotations

import glob
import math
import os
import re
import shutil
import stat
import tempfile
import warnings
import weakref
from typing import IO, Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

import numpy as np

from ._errors import (CheckpointCorruptError, CheckpointError, CheckpointMismatchError,
                      CheckpointNotFoundError, NameCollisionError, optional_import,
                      permission_error)
from ._tree import unflatten

_PART = re.compile(r"^(?P<base>.+)/part_(?P<index>\d+)$")
# The slot of a part, saved under the slot variable's name: 'train/net/w/part_0/Adam'.
_SLOT_PART = re.compile(r"^(?P<owner>.+)/part_(?P<index>\d+)/(?P<slot>[^/]+)$")
# Non-slot optimizer bookkeeping TF 1.x optimizers keep as ordinary variables.
_OPTIMIZER_NAMES = re.compile(r"(^|/)(global_step|beta1_power|beta2_power)(_\d+)?$")
# Entries that are not variables at all (TF 2 object-based checkpoints carry this one).
_NOT_VARIABLES = ("_CHECKPOINTABLE_OBJECT_GRAPH",)
# A Keras optimizer (OptimizerV2, tf.keras.optimizers.legacy) keeps its step count and its
# hyperparameters as scalar variables under its name: '<name>/iter' and '<name>/decay' in every one
# of them, '<name>/learning_rate', '<name>/beta_1', ... as it has them.
_KERAS_ITER, _KERAS_DECAY = "iter", "decay"
# What TF's reader says of an entry the checkpoint holds only some slices of.
_SOME_SLICES = "sufficient slices"


def _import_tf():
    return optional_import("tensorflow", "tensorflow", "tf", "Reading TF 1.x checkpoints")


def _strip_suffix(path: str) -> str:
    for pattern in (r"\.index$", r"\.meta$", r"\.data-\d+-of-\d+$"):
        stripped = re.sub(pattern, "", path)
        if stripped != path:
            return stripped
    return path


# TF's table files (a V2 checkpoint's .index, a V1 checkpoint's one file) end with
# kTableMagicNumber 0xdb4775248b80fb57, little-endian.
_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")
# A shard of a V1-format checkpoint saved by Saver(sharded=True, write_version=V1): '<base>-00000-
# of-00002'. TF names the whole by the pattern '<base>-?????-of-00002', which its V1 reader globs.
_V1_SHARD = re.compile(r"(?P<base>.+)-(?P<shard>\d{5,}|\?{5})-of-(?P<count>\d{5,})")
# What TF's file system reads as a glob pattern in a checkpoint's path (its kGlobbingChars): a
# directory 'exp[lr=0.1]' matches nothing. A backslash too, except where it separates the path.
_GLOB_CHARS = re.compile(r"[*?[]" if os.sep == "\\" else r"[*?[\\]")


def _is_v1_file(path: str) -> bool:
    """Whether ``path`` is a V1-format checkpoint (``Saver(write_version=SaverDef.V1)``, slim's
    released ``.ckpt`` files): one table file at the prefix itself, no ``.index``."""
    return os.path.isfile(path) and _strip_suffix(path) == path and is_table(path)


# Opening a FIFO for reading waits for a writer (forever, if none comes): every file this module
# reads is opened without waiting, and read only if it is a regular file.
_NO_WAIT = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


def open_regular(path: str) -> Optional[IO[bytes]]:
    """``path`` opened for reading if it is a regular file; None if it is something else (a
    pipe, socket, device or directory). Raises what the OS raises (missing, refused, ...)."""
    fd = os.open(path, _NO_WAIT)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _refused(*paths: str) -> Optional[PermissionError]:
    """The OS's refusal to open the first of ``paths`` it refuses (the file itself, or a
    directory on its way that cannot be searched), if any: a path that is not there is none."""
    for path in paths:
        try:
            os.close(os.open(path, _NO_WAIT))
        except PermissionError as e:
            return e
        except (OSError, ValueError):  # not there, a NUL in the name, ...
            pass
    return None


def is_table(path: str) -> bool:
    """Whether the file ``path`` ends as TF's table files do (a V2 ``.index``, a V1 checkpoint)."""
    try:
        f = open_regular(path)
        if f is None:
            return False
        with f:
            f.seek(0, os.SEEK_END)
            if f.tell() < 48:  # a table's footer alone is 48 bytes
                return False
            f.seek(-8, os.SEEK_END)
            return f.read(8) == _TABLE_MAGIC
    except (OSError, ValueError):
        return False


def _v1_shards(base: str) -> Dict[str, List[str]]:
    """``{pattern: its shard files}`` of the sharded V1-format checkpoints ``<base>-?????-of-<N>``
    next to ``base`` (one per shard count N)."""
    directory, name = os.path.split(base)
    try:
        names = sorted(os.listdir(directory or "."))
    except (OSError, ValueError):  # (ValueError: a NUL in the path, from a damaged state file)
        return {}
    shards: Dict[str, List[str]] = {}
    for n in names:
        m = _V1_SHARD.fullmatch(n)
        shard = os.path.join(directory, n)
        if m and m["base"] == name and m["shard"] != "?????" and is_table(shard):
            shards.setdefault(f"{base}-?????-of-{m['count']}", []).append(shard)
    return shards


def _v1_pattern(prefix: str) -> Optional[str]:
    """The pattern ``<base>-?????-of-<N>`` of the sharded V1-format checkpoint ``prefix`` names:
    the pattern itself, one of its shard files, or ``<base>`` (with shards of one count N); None if
    it names none."""
    m = _V1_SHARD.fullmatch(prefix)
    if m:
        if _lone_v1_file(prefix, m):
            return None
        pattern = f"{m['base']}-?????-of-{m['count']}"
        return pattern if pattern in _v1_shards(m["base"]) else None
    if os.path.exists(prefix):  # a file of its own (a V1 checkpoint), not a name for shards
        return None
    shards = _v1_shards(prefix)
    return next(iter(shards)) if len(shards) == 1 else None


def _lone_v1_file(path: str, m: Any) -> bool:
    """Whether ``path``, named like a shard (``<base>-00001-of-00002``, matched as ``m``), is read
    as a V1 checkpoint of its own: it is the only file of its pattern (Saver's prefix may have been
    that name; TF's reader reads such a file alone too). With other shards next to it, the pattern
    is read, and must be whole."""
    if m["shard"] == "?????" or not _is_v1_file(path):
        return False
    shards = _v1_shards(m["base"]).get(f"{m['base']}-?????-of-{m['count']}", [])
    return [os.path.basename(f) for f in shards] == [os.path.basename(path)]


def _meta_path(prefix: str) -> str:
    """The ``.meta`` file of ``prefix``: a sharded V1 checkpoint's is ``<base>.meta``."""
    m = _V1_SHARD.fullmatch(prefix)
    return (m["base"] if m and m["shard"] == "?????" else prefix) + ".meta"


def _v1_files(directory: str) -> List[str]:
    """The V1-format checkpoints in ``directory``: its table files, the shards of a sharded one as
    one pattern ``<base>-?????-of-<N>``."""
    try:
        names = os.listdir(directory)
    except (OSError, ValueError):  # (ValueError: a NUL in the path)
        return []
    found = set()
    for p in (os.path.join(directory, n) for n in names if n != "checkpoint"):
        if _is_v1_file(p):
            m = _V1_SHARD.fullmatch(p)
            found.add(f"{m['base']}-?????-of-{m['count']}" if m and not _lone_v1_file(p, m) else p)
    return sorted(found)


def is_tf1_checkpoint(path: PathLike) -> bool:
    """Whether ``path`` looks like a TF checkpoint: a prefix with a ``.index`` file, a V1-format
    checkpoint file (no ``.index``) or the shards of one, one of their files, or a directory
    holding a ``checkpoint`` state file, ``*.index`` files or V1 checkpoint files. Does not import
    TF."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return (os.path.isfile(os.path.join(path, "checkpoint"))
                or bool(glob.glob(os.path.join(glob.escape(path), "*.index")))
                or bool(_v1_files(path)))
    prefix = _strip_suffix(path)
    return (os.path.isfile(prefix + ".index") or _is_v1_file(prefix)
            or _v1_pattern(prefix) is not None)


def names_tf_files(path: str) -> bool:
    """Whether ``path`` (no weights file) is named as a TF checkpoint's file, has one's files next
    to it (``<path>.data-*-of-*``, ``<path>.meta``) or is a directory's ``checkpoint`` state file:
    a TF checkpoint whose ``.index`` is missing, say. Does not import TF."""
    prefix = _strip_suffix(path)
    return (prefix != path or os.path.basename(path) == "checkpoint"
            or os.path.isfile(prefix + ".meta")
            or bool(glob.glob(glob.escape(prefix) + ".data-*-of-*")))


def resolve_prefix(path: PathLike) -> str:
    """The checkpoint prefix (``.../model.ckpt-1000``) for a prefix, one of its files or a
    directory; a sharded V1-format checkpoint's is the pattern ``Saver.save`` returns
    (``.../model.ckpt-?????-of-00002``), as TF's reader takes it."""
    path = os.fspath(path)
    if "\0" in path:  # no file has one; os's calls would raise a bare ValueError
        raise _not_found(path, f"TF checkpoint {path!r} not found: the path has a NUL byte in it.\n"
                               "  fix: pass the prefix Saver.save returned, or its directory.")
    return _directory_prefix(path) if os.path.isdir(path) else _file_prefix(path)


def _names_checkpoint(prefix: str) -> bool:
    """Whether ``prefix`` has files, as TF's latest_checkpoint checks (without globbing it)."""
    return (os.path.isfile(prefix + ".index") or os.path.isfile(prefix)
            or _v1_pattern(prefix) is not None)


def _state_file(path: str, state: str) -> Tuple[Optional[str], Optional[str]]:
    """(the checkpoint the state file ``state`` of directory ``path`` names, None), or (None, what
    is wrong with the state file); (None, None) without one.

    TF's get_checkpoint_state, read here: TF waits forever on a FIFO, cannot take a path that is
    not UTF-8, and hands back a path with a NUL in it, on which os's calls raise."""
    # (TF's own modules, as TF's get_checkpoint_state uses them; TF ships no type stubs)
    from google.protobuf import text_format  # type: ignore[import-untyped]
    from tensorflow.python.training.checkpoint_state_pb2 import (  # type: ignore[import-untyped]
        CheckpointState)

    try:
        f = open_regular(state)
        if f is None:
            return None, "is not a regular file (a directory, pipe, socket or device)"
        with f:
            data = f.read()
    except FileNotFoundError:
        return None, None
    except PermissionError as e:
        raise permission_error(state, f"cannot read TF checkpoint directory {path!r}", e) from None
    except OSError as e:
        return None, f"cannot be read ({e.strerror or e}, errno {e.errno})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"cannot be parsed (it is not UTF-8 text: {e})"
    parsed = CheckpointState()
    try:
        text_format.Merge(text, parsed)
    except (text_format.ParseError, ValueError, RecursionError):
        return None, "cannot be parsed (it is not a CheckpointState text proto)"
    name = parsed.model_checkpoint_path
    if not name:
        return None, "names no checkpoint"
    if "\0" in name:
        return None, f"names {name!r}, a path with a NUL byte in it (the file is damaged)"
    return (name if os.path.isabs(name) else os.path.join(path, name)), None  # as TF's


def _directory_prefix(path: str) -> str:
    """The checkpoint of the directory ``path``: the one its state file names, else its only one."""
    _import_tf()
    refused = _refused(os.path.join(path, os.curdir))  # (read, and search: both are needed)
    if refused is not None:
        raise permission_error(path, f"cannot read TF checkpoint directory {path!r}", refused)
    state = os.path.join(path, "checkpoint")
    # TF's latest_checkpoint, but the checkpoint the state file names is looked for here: TF globs
    # its path (in a directory 'exp[lr=0.1]' it finds nothing). TF raises for a state file that
    # parses but names no checkpoint (an empty one), and only logs one it cannot parse; either
    # way, the one checkpoint in the directory is the answer.
    stale: Optional[str] = None  # the checkpoint a parsable state file names, which is gone
    named, problem = _state_file(path, state)  # problem: what is wrong with the state file
    if named is not None:
        if _names_checkpoint(named):
            return _file_prefix(named)
        stale = named
    prefixes = sorted([p[:-len(".index")] for p in glob.glob(os.path.join(glob.escape(path),
                                                                           "*.index"))]
                      + _v1_files(path))
    if len(prefixes) == 1:
        return _file_prefix(prefixes[0])
    choices = ("no checkpoint in it" if not prefixes else f"{len(prefixes)} checkpoints to "
               f"choose from: {[os.path.basename(p) for p in prefixes]}")
    if problem is not None:
        err = CheckpointCorruptError(
            f"TF checkpoint directory {path!r}: its state file {state!r} {problem}, and the "
            f"directory has {choices}"
            + ".\n  fix: pass the prefix of the one you want, e.g. '<dir>/model.ckpt-1000', or "
              "rewrite the state file (model_checkpoint_path: \"model.ckpt-1000\").")
        err.filename = state
        raise err
    if stale:
        raise _not_found(path,
            f"TF checkpoint directory {path!r}: its state file {state!r} names {stale!r}, "
            f"which does not exist, and the directory has {choices}"
            + ".\n  fix: pass the prefix of the one you want, e.g. '<dir>/model.ckpt-1000', or "
              "rewrite the state file (model_checkpoint_path: \"model.ckpt-1000\").")
    raise _not_found(path,
        f"TF checkpoint directory {path!r} has "
        + ("no checkpoint in it" if not prefixes else f"{len(prefixes)} checkpoints and no "
           f"'checkpoint' state file naming the latest: {[os.path.basename(p) for p in prefixes]}")
        + ".\n  fix: pass the prefix of the one you want, e.g. '<dir>/model.ckpt-1000'.")


def _file_prefix(path: str) -> str:
    """The checkpoint prefix ``path`` names (a prefix or one of its files), not a directory."""
    prefix = _strip_suffix(path)
    if os.path.isfile(prefix + ".index"):
        return prefix
    pattern = _v1_pattern(prefix)
    if pattern is not None:
        base, shards = _tf_files(pattern)
        count = pattern.rpartition("-of-")[2]
        missing = [f"{base}-{i:05d}-of-{count}" for i in range(int(count))
                   if f"{base}-{i:05d}-of-{count}" not in shards]
        if missing:  # TF's reader would read the shards it finds, silently
            raise _not_found(path,
                f"TF checkpoint {pattern!r} (V1 format, {int(count)} shards) is incomplete: there "
                f"is no {', '.join(map(repr, missing[:5]))}"
                + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "") + ".\n"
                "  fix: copy every shard file of the checkpoint next to the others.")
        return pattern
    if _is_v1_file(prefix):
        return prefix
    if prefix == path and _is_safetensors_file(path):
        raise _not_found(path,
            f"{path!r} is a weights file (safetensors), not a TF 1.x checkpoint (there is no "
            f"{prefix + '.index'!r}, and it is not a V1-format checkpoint file).\n"
            f"  fix: read it with sp.checkpoint.load({path!r}).")
    if os.path.basename(path) == "checkpoint" and os.path.isfile(path):
        directory = os.path.dirname(path)
        raise _not_found(path,
            f"{path!r} is the 'checkpoint' state file of TF checkpoint directory {directory!r} (it "
            f"names the latest checkpoint there), not a checkpoint: there is no "
            f"{prefix + '.index'!r}.\n"
            f"  fix: pass the directory: sp.checkpoint.load_tf1({directory!r}).")
    refused = _refused(prefix + ".index", prefix)
    if refused is not None:  # a file there (or a directory on the way) the OS would not open
        raise permission_error(refused.filename or prefix, f"cannot read TF checkpoint {path!r}",
                               refused)
    raise _not_found(path,
        f"TF checkpoint {path!r} not found: there is no {prefix + '.index'!r}"
        + (f" and {prefix!r} is not a V1-format checkpoint file" if os.path.isfile(prefix)
           else f" and {prefix!r} is not a file (a pipe, socket or device)"
           if os.path.exists(prefix) else "") + ".\n"
        "  fix: pass the prefix Saver.save returned (e.g. '/tmp/model.ckpt-1000', without "
        "'.index'/'.data-...'), or the directory holding it.")


def missing_index(path: str) -> Optional[CheckpointNotFoundError]:
    """The not-found error of ``path`` as a TF checkpoint, if it is named as one's file, has one's
    files next to it or is a 'checkpoint' state file (see ``names_tf_files``), but TF's reader
    would find no checkpoint (its '.index' is missing); else None. For a path that is no weights
    file. Does not import TF."""
    if os.path.isdir(path) or not names_tf_files(path):
        return None
    try:
        _file_prefix(path)
    except CheckpointNotFoundError as e:
        return e
    return None


def _is_safetensors_file(path: str) -> bool:
    """Whether ``path`` starts as a safetensors file does: an 8-byte little-endian header length
    that fits the file, then the header's "{"."""
    try:
        f = open_regular(path)
        if f is None:
            return False
        with f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return False
    return (len(head) == 9 and head[8:9] == b"{"
            and int.from_bytes(head[:8], "little") <= size - 8)


def _not_found(path: str, message: str) -> CheckpointNotFoundError:
    err = CheckpointNotFoundError(message)
    err.filename = path
    return err


def _tf_files(prefix: str) -> Tuple[str, List[str]]:
    """(the start of ``prefix`` its files' names share, the files TF's reader opens): a V2
    checkpoint's '.index' and '.data-*', a sharded V1 one's shards, a V1 one's file."""
    m = _V1_SHARD.fullmatch(prefix)
    if m and m["shard"] == "?????":
        return m["base"], _v1_shards(m["base"]).get(prefix, [])
    if os.path.isfile(prefix + ".index"):
        return prefix, [prefix + ".index"] + sorted(glob.glob(glob.escape(prefix) + ".data-*"))
    return prefix, [prefix]


def _symlinked(prefix: str, start: str, files: List[str]) -> str:
    """``<a new temporary directory>/ckpt``, next to symlinks to ``files`` named as they are past
    ``start``: where TF's reader reads the checkpoint ``prefix``, which has glob characters."""
    directory = None
    try:
        directory = tempfile.mkdtemp(prefix="scoped_params-tf-")
        for f in files:
            os.symlink(os.path.abspath(f), os.path.join(directory, "ckpt" + f[len(start):]))
    except OSError as e:  # no symlinks on this file system, or no permission to make them
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        err = CheckpointError(
            f"cannot read TF checkpoint {prefix!r}: TF reads '[', ']', '*', '?' and '\\' in a "
            "checkpoint's path as a glob pattern, and the symlinks to read it through could not "
            f"be made ({e.strerror or e}, errno {e.errno}).\n"
            "  fix: rename the directory (or the files) without those characters, or copy the "
            "checkpoint's files into a directory whose path has none.")
        err.filename = prefix
        raise err from None
    return os.path.join(directory, "ckpt")


def _remove_in(pid: int, directory: str) -> None:
    """Remove ``directory`` if this is process ``pid``, the one that made it: a forked child
    dropping the reader it inherited leaves its parent's symlinks alone."""
    if os.getpid() == pid:
        shutil.rmtree(directory, ignore_errors=True)


class _Reader:
    """TF's checkpoint reader, with TF's errors turned into ours (each naming the checkpoint)."""

    def __init__(self, path):
        self.prefix = resolve_prefix(path)  # first: a file that is no TF checkpoint is named as such
        self.tf = _import_tf()               # without TF installed
        read_as, self._renamed = self.prefix, None
        start, files = _tf_files(self.prefix)
        for f in files:  # TF's reader would wait forever on a FIFO
            if os.path.exists(f) and not os.path.isfile(f):
                err = CheckpointError(
                    f"cannot read TF checkpoint {self.prefix!r}: its file {f!r} is not a regular "
                    "file (a pipe, socket or device), which has no fixed contents to read.\n"
                    "  fix: copy the checkpoint's files into a directory as regular files, and "
                    "read them there.")
                err.filename = f
                raise err
        if os.path.isfile(self.prefix + ".index"):
            check_index(self.prefix, self.prefix + ".index")
        # TF's reader globs the path, and takes only UTF-8 ones: read those through symlinks
        if _GLOB_CHARS.search(start) or not is_utf8(start):
            alias = _symlinked(self.prefix, start, files)
            # removed with this reader, not before: TF opens a V2 checkpoint's data files when
            # they are first read
            remove = weakref.finalize(self, _remove_in, os.getpid(), os.path.dirname(alias))
            read_as, self._renamed = alias + self.prefix[len(start):], (alias, start)
        try:
            self.reader = self.tf.train.load_checkpoint(read_as)
            self.shapes = self.reader.get_variable_to_shape_map()
            self.dtypes = self.reader.get_variable_to_dtype_map()
        except Exception as e:  # tf.errors.DataLossError, OpError, ...
            if self._renamed:
                remove()
            raise _corrupt(self.prefix, e, renamed=self._renamed) from None

    def names(self) -> List[str]:
        return sorted(n for n in self.shapes if n not in _NOT_VARIABLES)

    def numeric(self, name: str) -> bool:
        dtype = self.dtypes[name]
        return dtype.is_numpy_compatible and dtype != self.tf.string

    def get(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self.reader.get_tensor(name))
        except Exception as e:
            if name in self.shapes and _SOME_SLICES in str(e):  # intact, but not whole
                raise _some_slices(self.prefix, e, name, partitioned_slot_variable(
                    name, self.shapes, self.shapes)) from None
            raise _corrupt(self.prefix, e, name, self._renamed) from None


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: a lone surrogate does not (a file name that is not UTF-8
    comes as surrogates, by os's 'surrogateescape')."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# TensorShape's limits: TF's reader CHECK-fails (SIGABRT, the whole process) past them.
_MAX_RANK = 254
_MAX_ELEMENTS = 2 ** 63 - 1
# DataType values from here on are reference types (DT_FLOAT_REF = 101, ...): get_tensor aborts.
_FIRST_REF_DTYPE = 101


def check_index(prefix: str, index: str) -> None:
    """Raise ``CheckpointCorruptError`` for an entry of the V2 ``index`` file that TF's reader
    would abort the whole process on (a CHECK failure, not an error Python sees): a value that is
    no BundleEntryProto, a shape with a negative dimension, over 254 dimensions or more elements
    than an int64 counts, a reference dtype, a slice of negative extent or named twice.

    Linear in the index, which TF reads anyway. Block checksums are TF's to check (it reports a
    mismatch as an error); a table this parser cannot follow is left to TF as well. A file found
    sound is not parsed again while it is unchanged (``load_variable`` opens a reader per name)."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    try:
        f = open_regular(index)
        if f is None:
            return
        with f:
            st = os.fstat(f.fileno())
            seen = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            if seen in _SOUND_INDEXES:
                return
            data = f.read()
    except OSError:  # TF says what is wrong with it
        return
    for key, value in _table_entries(data):
        if key == b"":  # the header (BundleHeaderProto): TF parses it with an error of its own
            continue
        entry = tensor_bundle_pb2.BundleEntryProto()
        try:
            entry.ParseFromString(value)  # protobuf: data only, nothing executable
        except Exception as e:  # protobuf's DecodeError
            problem: Optional[str] = f"is no BundleEntryProto ({type(e).__name__}: {e})"
        else:
            problem = _entry_problem(entry)
        if problem is not None:
            name = key.decode("utf-8", "backslashreplace")
            err = CheckpointCorruptError(
                f"cannot read TF checkpoint {prefix!r}: its index {index!r} is damaged: entry "
                f"{name!r} {problem}, which TF's reader would abort the process on.\n"
                "  fix: restore the checkpoint's files from a backup, or save it again with TF.")
            err.filename = prefix
            raise err
    if len(_SOUND_INDEXES) >= 256:
        _SOUND_INDEXES.clear()
    _SOUND_INDEXES.add(seen)


# (device, inode, size, mtime) of the .index files check_index found sound: bounded.
_SOUND_INDEXES: set = set()


def _entry_problem(entry: Any) -> Optional[str]:
    """What in a BundleEntryProto would make TF's reader abort, or None."""
    dims = [d.size for d in entry.shape.dim]
    if entry.dtype >= _FIRST_REF_DTYPE:
        return f"has the reference dtype {entry.dtype} (no checkpoint stores one)"
    if len(dims) > _MAX_RANK:
        return f"has {len(dims)} dimensions (at most {_MAX_RANK})"
    if any(d < 0 for d in dims):
        return f"has shape {dims}, with a negative dimension"
    count = 1
    for d in dims:  # counted as TF counts them, dimension by dimension
        count *= d
        if count > _MAX_ELEMENTS:
            return f"has shape {dims}, of more elements than an int64 counts"
    seen = set()
    for s in entry.slices:
        extents = tuple((e.start, e.length if e.HasField("length") else -1)  # -1: all of it
                        for e in s.extent)
        if any(start < 0 or (length < 0 and length != -1) for start, length in extents) or any(
                length != -1 and start + length > d for (start, length), d in zip(extents, dims)):
            return f"of shape {dims} has the slice {[list(e) for e in extents]}, out of its bounds"
        if extents in seen:
            return f"lists the slice {[list(e) for e in extents]} twice"
        seen.add(extents)
    return None


def _varint(data: bytes, at: int) -> Tuple[int, int]:
    """(the varint at ``data[at:]``, where it ends); IndexError past the end."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _table_entries(data: bytes) -> Iterator[Tuple[bytes, bytes]]:
    """The (key, value) entries of TF's table file ``data`` (a LevelDB table: data blocks, an
    index block of their handles, a 48-byte footer). Yields nothing more where the table is not
    one this can follow: a compressed block, a handle or entry past the end."""
    if len(data) < 48 or data[-8:] != _TABLE_MAGIC:
        return
    try:
        _, at = _varint(data, len(data) - 48)  # the metaindex handle: offset, size
        _, at = _varint(data, at)
        offset, at = _varint(data, at)  # the index block's handle
        size, _ = _varint(data, at)
        handles = [value for _, value in _block_entries(data, offset, size)]
    except IndexError:
        return
    for handle in handles:
        try:
            offset, at = _varint(handle, 0)
            size, _ = _varint(handle, at)
            entries = list(_block_entries(data, offset, size))
        except IndexError:
            return
        yield from entries


def _block_entries(data: bytes, offset: int, size: int) -> Iterator[Tuple[bytes, bytes]]:
    """The entries of the block at ``data[offset:offset + size]`` (each key shares a prefix with
    the one before: shared length, own length, value length, own bytes, value); IndexError where
    the block is not one this can read (past the data, or compressed: its type byte not 0)."""
    end = offset + size
    if end + 5 > len(data) or data[end] != 0:  # 1 type byte and a CRC follow the block
        raise IndexError("not a block this reads")
    restarts = int.from_bytes(data[end - 4:end], "little")
    limit = end - 4 - 4 * restarts
    if not offset <= limit <= end:
        raise IndexError("not a block this reads")
    at, key = offset, b""
    while at < limit:
        shared, at = _varint(data, at)
        own, at = _varint(data, at)
        length, at = _varint(data, at)
        if shared > len(key) or at + own + length > limit:
            raise IndexError("not a block this reads")
        key = key[:shared] + data[at:at + own]
        at += own
        yield key, data[at:at + length]
        at += length


def _why(e: Exception, renamed: Optional[Tuple[str, str]] = None) -> str:
    """The first line of TF's error ``e``, naming the checkpoint's own path where TF was given
    ``renamed[0]`` for ``renamed[1]`` (symlinks)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text.replace(*renamed) if renamed else text}"


def _corrupt(prefix: str, e: Exception, name: Optional[str] = None,
             renamed: Optional[Tuple[str, str]] = None) -> CheckpointError:
    what = f"tensor {name!r} of " if name else ""
    why = _why(e, renamed)
    if type(e).__name__ == "PermissionDeniedError":  # the OS refused a file: nothing is damaged
        refused = _refused(*_tf_files(prefix)[1])
        return permission_error(refused.filename if refused is not None else prefix,
                                f"cannot read {what}TF checkpoint {prefix!r} ({why})", refused)
    if type(e).__name__ == "UnimplementedError" and (_is_v1_file(prefix)
                                                     or _v1_pattern(prefix) == prefix):
        # TF's own reader (tf.train.load_checkpoint) reads neither float16 nor sliced variables
        # from a V1 file; TF's restore op does, so TF itself can convert the checkpoint.
        err = CheckpointCorruptError(
            f"cannot read {what}TF checkpoint {prefix!r}: it is in the V1 format (one file, no "
            f"'.index'), and TF's checkpoint reader does not support this "
            f"{'variable' if name else 'checkpoint'} in that format ({why}).\n"
            "  fix: re-save it in the V2 format with TF: saver = tf.compat.v1.train."
            "import_meta_graph(prefix + '.meta') (or rebuild the graph), saver.restore(sess, "
            "prefix), then tf.compat.v1.train.Saver().save(sess, new_prefix) (V2 is the default).")
    else:
        err = CheckpointCorruptError(
            f"cannot read {what}TF checkpoint {prefix!r}: {why}\n"
            "  fix: check that all of its files ('.index', '.data-*') are present and complete.")
    err.filename = prefix
    return err


def _some_slices(prefix: str, e: Exception, name: str,
                 variable: Optional[str]) -> CheckpointMismatchError:
    """The error for an entry TF's reader cannot read whole because the checkpoint holds only some
    of its slices (``variable``: the partitioned variable whose mangled slot it is, if it is one)."""
    why = _why(e)
    how = ("as a Saver given only some parts of a partitioned variable saves it" if variable is None
           else f"as TF 1.x saves the slots of a partitioned variable ({variable!r}) when minimize() "
           "ran inside a variable scope (or ema.apply(), for its average): each part's slot under a "
           "name of its own, holding that part's slice alone")
    err = CheckpointMismatchError(
        f"cannot read tensor {name!r} of TF checkpoint {prefix!r}: it holds only some slices of it, "
        f"{how}. The file is not damaged; TF's own reader cannot read the entry whole either "
        f"({why}).\n"
        "  fix: leave it out (load_tf1 skips optimizer state unless include_optimizer_state=True; "
        "init_from_checkpoint reads only the entries its map names), or restore the checkpoint in "
        "TF and save each variable under its own name: tf.compat.v1.train.Saver({v.op.name: v for "
        "v in tf.compat.v1.global_variables()}).save(sess, new_prefix); there each part and each "
        "part's slot has an entry of its own, which load_tf1 joins into the variable and its slot "
        "(adam_state_from_tf1 resumes from them).")
    err.filename = prefix  # the checkpoint it is about, as CheckpointCorruptError's
    return err


def is_optimizer_entry(name: str, names, shapes=None) -> bool:
    """Optimizer state rather than a model variable (``shapes``: the checkpoint's; None skips the
    shape checks):

    * ``global_step``, Adam's ``beta1_power``/``beta2_power``;
    * slots ``<variable>/<Slot>`` (``w/Adam``, ``w/Adam_1``, ``w/Momentum``,
      ``w/ExponentialMovingAverage``): one name past a ``<variable>`` of the checkpoint, with its
      shape, as TF's slot_creator makes every slot of TF 1.x's optimizers and moving averages. An
      entry further down (``emb/proj/kernel``, a layer in ``variable_scope("emb")`` next to a
      variable ``emb``) or of another shape (``emb/scale``) is a model variable;
    * the slots TF names in the scope ``minimize()`` ran in (see ``scoped_slot_variable`` and
      ``partitioned_slot_variable``);
    * a Keras optimizer's step count and hyperparameters: the scalars ``<name>/<x>`` next to its
      ``<name>/iter`` and ``<name>/decay`` (``Adam/iter``, ``Adam/learning_rate``, ``Adam/beta_1``).
    """
    if _OPTIMIZER_NAMES.search(name):
        return True
    parent = name.rpartition("/")[0]
    if parent and (_is_slot_of(name, parent, names, shapes)
                   or _is_keras_optimizer_weight(name, parent, names, shapes)):
        return True
    return (scoped_slot_variable(name, names, shapes) is not None
            or partitioned_slot_variable(name, names, shapes) is not None)


def _is_slot_of(name: str, parent: str, names, shapes) -> bool:
    """Whether ``name``, ``<parent>/<Slot>``, is a slot of the variable ``parent``."""
    if parent in names:
        return shapes is None or tuple(shapes[parent]) == tuple(shapes[name])
    # The slot of one part, saved by its op name ('w/part_0/Adam', a var_list dict), next to the
    # whole variable 'w': of the part's shape, which has the variable's rank.
    base = _merged_base(parent)
    return base != parent and base in names and (shapes is None
                                                 or len(shapes[base]) == len(shapes[name]))


def _is_keras_optimizer_weight(name: str, parent: str, names, shapes) -> bool:
    """Whether ``name``, ``<parent>/<x>``, is a scalar of the Keras optimizer named ``parent``: it
    has ``<parent>/iter`` and ``<parent>/decay``, both scalars (a model's own scope holding scalars
    named like its hyperparameters lacks them)."""
    iters, decay = f"{parent}/{_KERAS_ITER}", f"{parent}/{_KERAS_DECAY}"
    if iters not in names or decay not in names:
        return False
    return shapes is None or all(tuple(shapes[n]) == () for n in (name, iters, decay))


def scoped_slot_variable(name: str, names, shapes=None) -> Optional[str]:
    """The ``<variable>`` of ``name`` when it is a slot ``<scope>/<variable>/<Slot>``, else None.

    TF 1.x's slot_creator names a slot in the variable scope its optimizer's ``minimize()`` (or
    ``ExponentialMovingAverage.apply()``) ran in: ``<scope>/<variable op name>/<slot name>``,
    ``train/model/w/Adam`` under ``tf.variable_scope("train")``. So ``name`` is read as one when
    ``<Slot>`` is one name, ``<variable>`` (the longest such) is a variable of the checkpoint
    (``names``), and, given the checkpoint's ``shapes``, ``name`` has its shape, as a slot does: a
    model variable ``decoder/embedding/Adam`` next to a variable ``embedding`` of another shape stays a
    model variable."""
    parts = name.split("/")
    for i in range(1, len(parts) - 1):
        variable = "/".join(parts[i:-1])
        if variable in names and (shapes is None
                                  or tuple(shapes[variable]) == tuple(shapes[name])):
            return variable
    return None


def partitioned_slot_variable(name: str, names, shapes=None) -> Optional[str]:
    """The partitioned ``<variable>`` of ``name`` when it is the slot of one of its parts that TF
    1.x saved under a mangled name, else None.

    slot_creator names the save slice of a part's slot ``<variable>/`` + the slot variable's name
    with ``len("<variable>/part_<N>/")`` characters cut from its front. Without a scope that leaves
    ``<Slot>``; with ``minimize()`` inside ``variable_scope("train")`` (slot variable
    ``train/<variable>/part_0/Adam``) it leaves ``art_0/Adam``: the entry
    ``<variable>/art_0/Adam``, holding part 0's slice alone. So ``name`` is read as one when it is
    ``<variable>/<rest>/<Slot>``, ``<variable>`` is in ``names`` (with ``name``'s shape, given
    ``shapes``), and ``<rest>`` is what the cut leaves of ``<scope>/<variable>/part_<N>``: its end,
    or more than all of it."""
    parts = name.split("/")
    for i in range(1, len(parts) - 1):
        variable = "/".join(parts[:i])
        if variable not in names or (shapes is not None
                                     and tuple(shapes[variable]) != tuple(shapes[name])):
            continue
        rest = "/".join(parts[i:-1])
        index = re.search(r"\d+$", rest)
        if index is None:
            continue
        part = f"/{variable}/part_{index.group()}"
        if part.endswith(rest) or rest.endswith(part):
            return variable
    return None


def _merged_base(name: str) -> str:
    m = _PART.match(name)
    return m.group("base") if m else name


SliceInfo = Dict[str, Optional[Tuple[str, tuple, tuple]]]


def _slice_info(prefix: str) -> Optional[SliceInfo]:
    """``{variable name: (full name, full shape, offset)}`` for each part of a partitioned variable
    in the ``.meta`` graph, ``{variable name: None}`` for each variable that is no part; None
    without a ``.meta`` file (or one that cannot be parsed)."""
    meta = _meta_path(prefix)
    if not os.path.isfile(meta):
        return None
    from tensorflow.core.framework import variable_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    graph = meta_graph_pb2.MetaGraphDef()
    try:
        with open(meta, "rb") as f:
            graph.ParseFromString(f.read())  # protobuf: data only, nothing executable
    except Exception:
        return None
    info: SliceInfo = {}
    for key in ("variables", "trainable_variables"):
        if key not in graph.collection_def:
            continue
        for raw in graph.collection_def[key].bytes_list.value:
            var = variable_pb2.VariableDef()
            try:
                var.ParseFromString(raw)
            except Exception:
                continue
            s = var.save_slice_info_def
            name = var.variable_name.split(":")[0]
            info[name] = (s.full_name, tuple(s.full_shape), tuple(s.var_offset)) if s.full_name \
                else None
    return info


class _Layout(NamedTuple):
    """How a checkpoint's entries come back (see ``_layout``)."""
    whole: List[str]  # read as they are
    partitioned: Dict[str, List[Tuple[int, str]]]  # {base: [(index, part entry), ...]}
    info: Optional[SliceInfo]  # the .meta slice info (None without parts, or without a .meta)
    slots: Dict[str, str]  # {joined slot '<scope><variable>/<Slot>': its partitioned variable}


def _layout(names: List[str], name_set, shapes, prefix: str) -> _Layout:
    """How the entries ``names`` come back: the ones read as they are, and ``{base: [(index, part
    entry), ...]}`` for the partitioned variables saved part by part, and for their slots saved
    part by part (see ``_join_slot_parts``); and the ``.meta`` slice info.

    An entry ``<base>/part_<N>`` (without a ``<base>`` entry) is a part when the ``.meta`` graph's
    slice info says so, and not when the graph lists it as a variable that is no part: two ordinary
    variables ``encoder/part_0`` and ``encoder/part_1`` stay two. Entries the graph does not know
    (renamed by a ``Saver``'s ``var_list`` dict), and every one without a ``.meta``, are told by
    name: parts, if their shapes can be pieces of one array (see ``_join_axis``)."""
    candidates = {}
    for name in names:
        m = _PART.match(name)
        if m and m.group("base") not in name_set:
            candidates[name] = m
    info = _slice_info(prefix) if candidates else None
    whole: List[str] = []
    partitioned: Dict[str, List[Tuple[int, str]]] = {}
    for name in names:
        m = candidates.get(name)
        if m is None or (info is not None and name in info and info[name] is None):
            whole.append(name)
        else:
            partitioned.setdefault(m.group("base"), []).append((int(m.group("index")), name))
    for base, parts in list(partitioned.items()):
        if _slices_of(base, [n for _, n in parts], info) is None \
                and _join_axis([tuple(shapes[n]) for _, n in sorted(parts)]) is None:
            whole.extend(n for _, n in parts)  # by name only, and no pieces of one array
            del partitioned[base]
    whole.sort()
    slots = _join_slot_parts(whole, partitioned, name_set, shapes, info) if partitioned else {}
    return _Layout(whole, partitioned, info, slots)


def _join_slot_parts(whole: List[str], partitioned: Dict[str, List[Tuple[int, str]]], name_set,
                     shapes, info: Optional[SliceInfo]) -> Dict[str, str]:
    """Move the slots of a partitioned variable's parts from ``whole`` into ``partitioned``, joined
    as ``<scope><variable>/<Slot>``; ``{joined slot: variable}``.

    A ``Saver`` given ``{v.op.name: v}`` saves each part's slot under the slot variable's own name,
    ``<scope><variable>/part_<N>/<Slot>`` (``train/net/w/part_0/Adam``, ``<scope>``: the variable
    scope ``minimize()`` or ``ema.apply()`` ran in). TF's slot_creator partitions a slot exactly as
    its variable, so the slots are joined with the variable parts' offsets (the ``.meta`` gives the
    slot those offsets too, but under a full name TF mangles inside a scope) or, without slice info,
    as the variable's parts are. Only a slot with an entry of each part's shape for every part of
    its variable is joined; the others stay as they are, and so does an entry the ``.meta`` lists
    as a variable without slice info (a variable of the user's, ``x/part_0/foo``: a part's slot
    has its part's slice info)."""
    part_of = {n: base for base, parts in partitioned.items() for _, n in parts}
    groups: Dict[Tuple[str, str], List[Tuple[int, str]]] = {}
    for name in whole:
        m = _SLOT_PART.match(name) if "/part_" in name else None
        if m is None or (info is not None and name in info and info[name] is None):
            continue  # (the .meta lists it as a variable of its own, not a part's slot)
        owner = m["owner"].split("/")
        for i in range(len(owner)):  # the longest variable: a scope is read only when needed
            part = "/".join(owner[i:]) + f"/part_{m['index']}"
            if part in part_of and tuple(shapes[part]) == tuple(shapes[name]):
                groups.setdefault((f"{m['owner']}/{m['slot']}", part_of[part]), []).append(
                    (int(m["index"]), name))
                break
    slots: Dict[str, str] = {}
    for (slot, variable), parts in groups.items():
        own = sorted(partitioned[variable])
        if slot in name_set or slot in partitioned or [i for i, _ in own] != sorted(
                i for i, _ in parts):
            continue
        partitioned[slot], slots[slot] = parts, variable
        if info is not None:
            offsets = _slices_of(variable, [n for _, n in own], info)
            by_index = dict(parts)
            for k, (index, _) in enumerate(own):
                # the variable part's full shape and offset, under the slot's name; None: joined
                # by the parts' names and shapes, as the variable's are
                info[by_index[index]] = (slot,) + offsets[k][1:] if offsets is not None else None
    if slots:
        joined = {n for slot in slots for _, n in partitioned[slot]}
        whole[:] = [n for n in whole if n not in joined]
    return slots


def _slices_of(base: str, names: List[str], info: Optional[SliceInfo]) -> Optional[list]:
    """The ``.meta`` slice info of each of ``names``, if it has it for all of them as parts of
    ``base``; else None."""
    if info is None:
        return None
    found = [info.get(n) for n in names]
    slices = [s for s in found if s is not None and s[0] == base]
    return slices if len(slices) == len(names) else None


def _slices_damage(shape: tuple, shapes: List[tuple],
                   boxes: List[Tuple[tuple, tuple]]) -> Optional[str]:
    """What makes the parts ``boxes`` ((offset, part shape), from the ``.meta`` slice info and the
    checkpoint) no pieces of one array of ``shape`` (``shapes``: the full shape each part's slice
    info gives), or None: ranks or full shapes that differ, a part out of bounds, or parts that
    overlap. Parts that leave values uncovered are missing parts, not damage.

    TF's partitioners split one axis: along it, sorted, each part must start where the one before
    ended, or after it (a gap). Parts split along several axes are checked against a mask."""
    if any(s != shape for s in shapes):
        return f"its parts name different full shapes, {sorted(set(shapes))}"
    if any(d < 0 for d in shape):
        return f"its full shape {shape} has a negative dimension"
    for offset, part in boxes:
        if not len(offset) == len(part) == len(shape):
            return f"a part of shape {part} has offset {offset} in full shape {shape}"
        if any(o < 0 or o + p > d for o, p, d in zip(offset, part, shape)):
            return f"a part of shape {part} at offset {offset} lies outside full shape {shape}"
    split = {ax for offset, part in boxes for ax, (o, p, d) in enumerate(zip(offset, part, shape))
             if (o, p) != (0, d)}
    if len(split) <= 1:
        ax = split.pop() if split else 0
        end = 0
        for offset, part in sorted(boxes, key=lambda b: b[0][ax:ax + 1]):
            start = offset[ax] if offset else 0  # (a scalar's one "part" takes the one value)
            if start < end:
                return f"the part at offset {offset} overlaps the one before it along axis {ax}"
            end = start + (part[ax] if part else 1)
        return None
    covered = np.zeros(shape, bool)
    for offset, part in boxes:
        region = tuple(slice(o, o + p) for o, p in zip(offset, part))
        if covered[region].any():
            return f"the part at offset {offset} overlaps another"
        covered[region] = True
    return None


def _join_axis(shapes: List[tuple]) -> Optional[int]:
    """The axis along which parts of these shapes join into one array, told by shapes alone: the
    one axis where they differ, else axis 0 (the default axis of every TF partitioner); None when
    they cannot be pieces of one array (ranks that differ, scalars, or more than one axis that
    differs)."""
    ndim = {len(s) for s in shapes}
    if len(ndim) != 1 or 0 in ndim:
        return None
    differing = [ax for ax in range(len(shapes[0])) if len({s[ax] for s in shapes}) > 1]
    if len(differing) > 1:
        return None
    return differing[0] if differing else 0


def _merge_parts(base: str, parts: List[Tuple[int, str, np.ndarray]], info: Optional[SliceInfo],
                 prefix: str) -> np.ndarray:
    """One array from ``base/part_0, base/part_1, ...``: placed by the graph's slice info when the
    ``.meta`` file has it, else concatenated along the one axis where the parts' shapes differ, else
    along axis 0 (the default axis of every TF partitioner)."""
    parts = sorted(parts)
    names = [n for _, n, _ in parts]
    arrays = [a for _, _, a in parts]
    slices = _slices_of(base, names, info)
    if slices is not None:
        shape = slices[0][1]
        boxes = [(offset, a.shape) for (_, _, offset), a in zip(slices, arrays)]
        damage = _slices_damage(shape, [s[1] for s in slices], boxes)
        # (Python ints: a damaged full shape of 10**15 rows is counted, never allocated)
        covered, size = sum(math.prod(part) for _, part in boxes), math.prod(shape)
        if damage is None and covered != size and not _unheld_parts(base, names, info):
            damage = (f"its parts cover {covered} of the {size} values of its full shape "
                      f"{shape}, and it lists no other parts")
        if damage is not None:
            err = CheckpointCorruptError(
                f"cannot read {base!r} of TF checkpoint {prefix!r}: it is saved part by part, and "
                f"the slice info of the .meta graph {_meta_path(prefix)!r} does not fit the parts "
                f"the checkpoint holds: {damage}.\n"
                "  fix: the .meta file is damaged: restore it from a backup; or move it away, "
                "and the parts are joined by their names and shapes (along axis 0 unless their "
                "shapes differ along another).")
            err.filename = _meta_path(prefix)
            raise err
        if covered != size:  # in bounds, not overlapping: parts are missing
            raise _missing_parts(prefix, base, names, shape, covered, info)
        out = np.zeros(shape, arrays[0].dtype)
        for (offset, part_shape), a in zip(boxes, arrays):
            out[tuple(slice(o, o + s) for o, s in zip(offset, part_shape))] = a
        return out
    indices = [i for i, _, _ in parts]
    if indices != list(range(len(parts))):  # without slice info a gap would close up unseen
        raise _parts_gap(prefix, base, names, indices)
    shapes = [a.shape for a in arrays]
    axis = _join_axis(shapes)
    if axis is None:  # _layout keeps such entries apart: their shapes come from the same index
        raise _corrupt(prefix, ValueError(f"partitions of {base!r} have shapes {shapes}"))
    if len({s[axis] for s in shapes}) == 1 and len(shapes[0]) > 1:
        why = (f"{prefix!r} has no .meta graph with their slice info"
               if not os.path.isfile(_meta_path(prefix)) else
               f"the .meta graph of {prefix!r} has no slice info for them (they were saved under "
               "names other than the graph's variables', e.g. by a Saver var_list dict that renames "
               "them, or the .meta cannot be parsed)")
        warnings.warn(
            f"load_tf1: {base!r} is saved as {len(parts)} partitions of shape {shapes[0]} and "
            f"{why}; concatenating along axis 0 (the default axis of TF's partitioners).",
            UserWarning, stacklevel=4)
    return np.concatenate(arrays, axis=axis)


def _parts_gap(prefix: str, base: str, names: List[str], indices: List[int]) -> CheckpointMismatchError:
    """The error for a variable saved part by part whose part numbers in the checkpoint have gaps,
    with no slice info to place the parts by: joined, they would be a smaller, wrong array."""
    absent = sorted(set(range(max(indices) + 1)) - set(indices))
    err = CheckpointMismatchError(
        f"cannot read {base!r} of TF checkpoint {prefix!r}: it is saved part by part, and the "
        f"checkpoint holds {', '.join(map(repr, names))} but not "
        f"{', '.join(f'{base}/part_{i}' for i in absent)!r}; with no .meta graph slice info to place "
        "the parts by, joining those it holds would give a smaller array with rows out of place "
        "(a Saver var_list that left parts out?).\n"
        "  fix: save every part of the variable (a var_list naming all of them, or the variable "
        "itself), or read the parts it holds one by one with sp.checkpoint.load_variable(path, "
        "name).")
    err.filename = prefix
    return err


def _unheld_parts(base: str, names: List[str], info: Optional[SliceInfo]) -> List[str]:
    """The parts of ``base`` the ``.meta`` slice info lists that are not among ``names``."""
    return sorted(n for n, s in (info or {}).items()
                  if s is not None and s[0] == base and n not in names)


def _missing_parts(prefix: str, base: str, names: List[str], shape: tuple, covered: int,
                   info: Optional[SliceInfo]) -> CheckpointMismatchError:
    """The error for a variable saved part by part whose parts in the checkpoint do not cover it."""
    missing = _unheld_parts(base, names, info)
    err = CheckpointMismatchError(
        f"cannot read {base!r} of TF checkpoint {prefix!r}: it is saved part by part, and the parts "
        f"it holds ({', '.join(map(repr, names))}) cover {covered} of the {math.prod(shape)} "
        f"values of its full shape {tuple(shape)}"
        + (f"; the .meta graph's slice info names {', '.join(map(repr, missing))} too, which it "
           "does not hold" if missing else "")
        + " (a Saver var_list that left parts out?).\n"
        "  fix: save every part of the variable (a var_list naming all of them, or the variable "
        "itself), or read the parts it holds one by one with sp.checkpoint.load_variable(path, "
        "name).")
    err.filename = prefix  # the checkpoint it is about, as CheckpointCorruptError's
    return err


_EMA_NAME = "ExponentialMovingAverage"  # TF's default ExponentialMovingAverage(name=)
# Slots of TF 1.x's optimizers: never what an ExponentialMovingAverage(name=) is suggested to be.
_OPTIMIZER_SLOTS = re.compile(r"^(Adam|Momentum|RMSProp|Adagrad|AdagradDA|Adadelta|Ftrl|"
                              r"ProximalAdagrad|LazyAdam|Nadam|AdaMax)(_\d+)?$")


def read_tf1_flat(path: PathLike, include_optimizer_state: bool = False,
                  use_moving_averages: bool = False,
                  moving_average_name: str = _EMA_NAME) -> Dict[str, np.ndarray]:
    """``{full name: array}`` from a TF 1.x checkpoint, partitions merged (see ``load_tf1``)."""
    if not isinstance(moving_average_name, str) or not moving_average_name:
        raise ValueError(f"load_tf1: moving_average_name is {moving_average_name!r}.\n  fix: pass "
                         "the name= given to tf.train.ExponentialMovingAverage (default "
                         f"{_EMA_NAME!r}).")
    if moving_average_name != _EMA_NAME and not use_moving_averages:
        raise ValueError(
            f"load_tf1: moving_average_name={moving_average_name!r} has no effect without "
            "use_moving_averages=True: the variables themselves would be loaded, not their "
            f"averages.\n  fix: load_tf1(path, use_moving_averages=True, "
            f"moving_average_name={moving_average_name!r}).")
    suffix = "/" + moving_average_name
    r = _Reader(path)
    names = r.names()
    name_set = set(names)
    if use_moving_averages and not any(n.endswith(suffix) for n in names):
        raise ValueError(_no_averages(r.prefix, suffix, names, name_set, r.shapes))
    kept, state, skipped = [], set(), []
    for name in names:
        optimizer = not include_optimizer_state and is_optimizer_entry(name, name_set, r.shapes)
        # A part's slot left out is laid out all the same for use_moving_averages, which reads
        # the average of a variable saved part by part joined as its parts are.
        if optimizer and not (use_moving_averages and "/part_" in name):
            continue
        if not r.numeric(name):
            if not optimizer:
                skipped.append(f"{name} ({r.dtypes[name].name})")
            continue
        kept.append(name)
        if optimizer:
            state.add(name)
    layout = _layout(kept, name_set, r.shapes, r.prefix)
    if use_moving_averages:
        _check_averages_are_where_tf_looks(r.prefix, names, name_set, r.shapes, suffix, layout)
    flat: Dict[str, np.ndarray] = {}
    for name in layout.whole:
        if name not in state:
            # TF's ExponentialMovingAverage.variables_to_restore(): the average where there is one
            flat[name] = r.get(name + suffix if use_moving_averages and name + suffix in name_set
                               else name)
    for base, parts in layout.partitioned.items():
        if not include_optimizer_state and (base in layout.slots
                                            or any(n in state for _, n in parts)):
            continue
        source, average = base, base + suffix
        if use_moving_averages and average in name_set:  # the average saved whole
            flat[base] = r.get(average)
            continue
        if use_moving_averages and layout.slots.get(average) == base:
            source, parts = average, layout.partitioned[average]  # its parts' averages, joined
        elif use_moving_averages:
            _check_parts_have_no_averages(r.prefix, base, parts, name_set, suffix)
        flat[base] = _merge_parts(source, [(i, n, r.get(n)) for i, n in parts], layout.info,
                                  r.prefix)
    if skipped:
        warnings.warn(f"load_tf1: skipped non-numeric entries of {r.prefix!r}: {skipped}",
                      UserWarning, stacklevel=3)
    return flat


def _check_parts_have_no_averages(prefix: str, base: str, parts: List[Tuple[int, str]], name_set,
                                  suffix: str) -> None:
    """Raise when some parts of the partitioned variable ``base`` have an average
    ``<part><suffix>`` but the averages do not join into one for the whole variable (parts without
    one, or of other shapes): neither the raw variable nor its average can be given."""
    averaged = [n + suffix for _, n in parts if n + suffix in name_set]
    if averaged:
        raise CheckpointMismatchError(
            f"load_tf1(use_moving_averages=True): {base!r} of {prefix!r} is saved part by part, "
            f"and the averages of its parts ({', '.join(map(repr, averaged))}) do not join into "
            f"one for all of its {len(parts)} parts ({', '.join(repr(n) for _, n in parts)}): "
            "some part has none, or one of another shape.\n"
            "  fix: save every part's average (ema.apply() on all parts of the variable, a Saver "
            "var_list naming all of them), or load without use_moving_averages and read the "
            "averages it holds with sp.checkpoint.load_variable(path, name).")


class TF1Entries(Mapping[str, np.ndarray]):
    """A TF 1.x checkpoint's entries as TF's ``init_from_checkpoint`` sees them, ``{full name:
    array}``: every numeric entry (``global_step`` and optimizer slots too), a partitioned variable
    saved part by part as one array (as ``read_tf1_flat``). Names come from the checkpoint's index;
    a value is read when it is asked for, so an entry nobody asks for is never read (one TF's reader
    cannot read whole, say)."""

    def __init__(self, path: PathLike):
        self._reader = _Reader(path)
        self.prefix = self._reader.prefix
        names = self._reader.names()
        layout = _layout([n for n in names if self._reader.numeric(n)], set(names),
                         self._reader.shapes, self.prefix)
        self._parts, self._info = layout.partitioned, layout.info
        # A part's slot is there joined ('train/w/Adam') and under its own name, as TF's
        # init_from_checkpoint sees it ('train/w/part_0/Adam')
        self._whole = set(layout.whole).union(*(
            (n for _, n in layout.partitioned[slot]) for slot in layout.slots))
        self._keys = sorted(self._whole | set(self._parts))

    def __contains__(self, key: object) -> bool:  # from the index: Mapping's would read the value
        return key in self._whole or key in self._parts

    def __getitem__(self, key: str) -> np.ndarray:
        if key in self._whole:
            return self._reader.get(key)
        if key in self._parts:
            return _merge_parts(key, [(i, n, self._reader.get(n)) for i, n in self._parts[key]],
                                self._info, self.prefix)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _no_averages(prefix: str, suffix: str, names: List[str], name_set, shapes) -> str:
    """The error for a checkpoint without '<variable><suffix>' entries: the slot-like entries
    '<variable>/<x>' it has instead (averages saved under another ExponentialMovingAverage name?)."""
    slots: Dict[str, List[str]] = {}
    for name in names:
        variable, _, slot = name.rpartition("/")
        if variable in name_set and tuple(shapes[variable]) == tuple(shapes[name]):
            slots.setdefault(slot, []).append(name)
    found = "; ".join(f"{slot!r} ({', '.join(map(repr, entries[:2]))}"
                      + (f" and {len(entries) - 2} more" if len(entries) > 2 else "") + ")"
                      for slot, entries in sorted(slots.items()))
    averages = [slot for slot in sorted(slots) if not _OPTIMIZER_SLOTS.match(slot)]
    message = (f"load_tf1(use_moving_averages=True): {prefix!r} has no '<variable>{suffix}' "
               "entries: it holds no averages of a tf.train.ExponentialMovingAverage named "
               f"{suffix[1:]!r}.")
    if not slots:
        return message + "\n  fix: load it without use_moving_averages."
    message += f" Its entries '<variable>/<slot>' of their variable's shape: {found}."
    if averages:
        return (message + f"\n  fix: if {averages[0]!r} is the name= given to "
                f"tf.train.ExponentialMovingAverage, pass moving_average_name={averages[0]!r}; "
                "else load it without use_moving_averages.")
    return (message + "\n  fix: load it without use_moving_averages (these are optimizer slots); "
            "averages saved under another name load with moving_average_name=<that name>.")


def _check_averages_are_where_tf_looks(prefix: str, names: List[str], name_set, shapes,
                                       suffix: str, layout: _Layout) -> None:
    """Raise for variables whose moving average the checkpoint holds only under another name,
    ``ema/net/w/ExponentialMovingAverage`` (``ema.apply()`` ran inside ``variable_scope("ema")``;
    for a variable saved part by part, joined from ``ema/net/w/part_<N>/ExponentialMovingAverage``),
    or, for a partitioned variable saved whole, in slices under names TF mangled
    (``net/w/t_0/ExponentialMovingAverage``, see ``partitioned_slot_variable``): TF's
    ``Saver(ema.variables_to_restore())`` looks for ``net/w/ExponentialMovingAverage`` and fails,
    where loading ``net/w`` itself would silently give the raw weights."""
    def has_average(variable: str) -> bool:
        return variable + suffix in name_set or layout.slots.get(variable + suffix) == variable

    misplaced = [(variable, slot) for slot, variable in layout.slots.items()  # (variable, entry)
                 if slot.endswith(suffix) and not has_average(variable)]
    sliced: Dict[str, List[str]] = {}  # {partitioned variable: the entries of its average's slices}
    joined = {n for slot in layout.slots for _, n in layout.partitioned[slot]}
    for name in names:
        if not name.endswith(suffix) or name in joined or name[:-len(suffix)] in name_set \
                or name[:-len(suffix)] in layout.partitioned:
            continue
        variable = scoped_slot_variable(name, name_set, shapes)
        if variable is not None:
            if not has_average(variable):
                misplaced.append((variable, name))
            continue
        variable = partitioned_slot_variable(name, name_set, shapes)
        if variable is not None and not has_average(variable):
            sliced.setdefault(variable, []).append(name)
    if not misplaced and not sliced:
        return
    found = sorted([(v, repr(e)) for v, e in misplaced] + [
        (v, ", ".join(map(repr, es)) + ": slices, one per part") for v, es in sliced.items()])
    variables = sorted({v for v, _ in found})
    shown = ", ".join(f"{v!r} ({e})" for v, e in found[:5])
    scoped = dict(misplaced)
    scoped.update(_sliced_averages_names(prefix, sliced, suffix))
    entries = sorted((e, v) for v, e in scoped.items())
    mapping = "{" + ", ".join(f"{e!r}: {v!r}" for e, v in entries[:3]) + (
        ", ...} (one entry per averaged variable)" if len(entries) > 3 else "}")
    message = (
        f"load_tf1(use_moving_averages=True): {prefix!r} has no '<variable>{suffix}' for "
        f"{len(variables)} variable{'s' if len(variables) > 1 else ''} whose average"
        f"{'s' if len(variables) > 1 else ''} it holds "
        f"under another name, as ema.apply() saves them when it runs inside a variable scope: "
        f"{shown}" + (f" (and {len(found) - 5} more)" if len(found) > 5 else "")
        + "; TF's Saver(ema.variables_to_restore()) fails on it as well (NotFoundError).\n")
    if not sliced:
        raise CheckpointMismatchError(
            message + "  fix: map the averages by name: params = sp.checkpoint.load_tf1(path); "
            f"params = sp.checkpoint.init_from_checkpoint(path, params, {mapping}).")
    partitioned = sorted(sliced)
    raise CheckpointMismatchError(
        message + f"  found: the average of the partitioned variable"
        f"{'s' if len(partitioned) > 1 else ''} {', '.join(map(repr, partitioned[:5]))}"
        + (f" (and {len(partitioned) - 5} more)" if len(partitioned) > 5 else "")
        + " is saved in slices, one per part, each under a name of its own that TF mangled from "
        "the part's average; neither TF's reader nor this one reads such an entry whole.\n"
        "  fix: restore the checkpoint in TF and save each variable under its own name, "
        "tf.compat.v1.train.Saver({v.op.name: v for v in tf.compat.v1.global_variables()})"
        ".save(sess, new_prefix) (load_tf1 joins each part's average there as it joins the "
        "parts); then map the averages by name: params = sp.checkpoint.load_tf1(new_prefix); "
        f"params = sp.checkpoint.init_from_checkpoint(new_prefix, params, {mapping}).")


def _sliced_averages_names(prefix: str, sliced: Dict[str, List[str]], suffix: str
                           ) -> Dict[str, str]:
    """``{partitioned variable: the name its joined average has in a re-save by op name}``:
    ``<scope><variable><suffix>``, the scope found through the ``.meta`` graph, whose slot
    variables (``ema/net/w/part_0/ExponentialMovingAverage``) name their mangled entries; else
    ``<scope>/<variable><suffix>`` spelled out."""
    real: Dict[str, str] = {}  # {mangled entry: its slot variable}
    for name, s in (_slice_info(prefix) or {}).items():
        if s is not None:
            real[s[0]] = name
    names = {}
    for variable, entries in sliced.items():
        slot = next((real[e] for e in entries if e in real), None)
        m = _SLOT_PART.match(slot) if slot is not None else None
        names[variable] = (f"{m['owner']}/{m['slot']}" if m is not None
                           else f"<scope>/{variable}{suffix}")
    return names


def load_tf1(path: PathLike, *, include_optimizer_state: bool = False, flat: bool = False,
             use_moving_averages: bool = False,
             moving_average_name: str = _EMA_NAME) -> Dict[str, Any]:
    """Read a TF 1.x checkpoint (a ``Saver`` prefix, one of its files, or its directory) into the
    nested params tree, keyed by variable name (``image_filters/conv1/weights``).

    Uses TensorFlow's own checkpoint reader (``pip install 'scoped_params[tf]'``). Partitioned
    variables come back as one array: ``Saver`` already stores them whole, and variables saved part
    by part (``v/part_0``, ``v/part_1``, ...) are reassembled from the ``.meta`` graph's slice info
    (or, for parts the ``.meta`` does not list, and without a ``.meta``, concatenated along the axis
    where the parts differ, else axis 0). Variables the ``.meta`` lists as no parts of a
    partitioned variable stay as they are, whatever their names. Their slots saved part by part
    (``train/v/part_0/Adam``, from a ``Saver({v.op.name: v})``) are joined as the variable's parts
    are, into ``train/v/Adam``.

    Optimizer state is skipped unless ``include_optimizer_state=True``: ``global_step``, Adam's
    ``beta1_power``/``beta2_power``; slot entries ``<variable>/<Slot>`` (``w/Adam``, ``w/Adam_1``,
    ``w/Momentum``, ``w/ExponentialMovingAverage``, ...) one name past a ``<variable>`` of the
    checkpoint, with its shape (``emb/proj/kernel``, from a layer in ``variable_scope("emb")`` next
    to a variable ``emb``, is a model variable); the slots TF names in the variable scope
    ``minimize()`` ran in, ``<scope>/<variable>/<Slot>`` (``train/model/w/Adam``) with
    ``<variable>``'s shape, and, for a partitioned ``<variable>``, ``<variable>/art_0/Adam``; and a
    Keras optimizer's scalars (``Adam/iter``, ``Adam/learning_rate``, ... next to its ``Adam/iter``
    and ``Adam/decay``). Slots cannot sit in a nested tree next to their variable, so with
    ``include_optimizer_state=True`` pass ``flat=True`` to get ``{full name: array}``.

    ``use_moving_averages=True`` loads each variable's ``tf.train.ExponentialMovingAverage`` (its
    ``<variable>/ExponentialMovingAverage`` entry) wherever the checkpoint has one, and the variable
    itself elsewhere: slim's evaluation recipe, ``ema.variables_to_restore(
    slim.get_model_variables())``. TF's default ``ema.variables_to_restore()`` takes the averages of
    trainable variables only, and a checkpoint does not say which variables were trainable: if
    ``ema.apply`` averaged non-trainable ones too (batch-norm statistics) and the raw values are
    wanted for them, take those from ``load_tf1(path)``: ``sp.merge(sp.partition_trainable(
    averaged, specs)[0], sp.partition_trainable(raw, specs)[1])``. ``moving_average_name`` is the ``name=`` given to ``tf.train.ExponentialMovingAverage``
    (TF's ``ema.name``): ``ExponentialMovingAverage(0.999, name="ema")`` saves ``<variable>/ema``,
    loaded with ``use_moving_averages=True, moving_average_name="ema"``. A checkpoint without such
    entries is a ``ValueError`` listing the ``<variable>/<slot>`` entries it has. A variable saved
    part by part takes its parts' averages (``v/part_0/ExponentialMovingAverage``, ...), joined.
    Averages saved in another scope (``ema/net/w/ExponentialMovingAverage``, from ``ema.apply()``
    inside ``tf.variable_scope("ema")``), which TF's recipe cannot restore either, are a
    ``CheckpointMismatchError`` naming them and the ``init_from_checkpoint`` map that loads them;
    for a partitioned variable saved whole, TF keeps such an average in slices under mangled names
    (``net/w/t_0/ExponentialMovingAverage``), and the error gives the re-save by op name that
    ``init_from_checkpoint`` then reads with that map.

    >>> params = sp.checkpoint.load_tf1("model.ckpt")  # doctest: +SKIP
    >>> out = model.apply(params, images)  # doctest: +SKIP
    """
    values = read_tf1_flat(path, include_optimizer_state, use_moving_averages,
                           moving_average_name)
    if flat:
        return values
    try:
        return unflatten(values)
    except NameCollisionError as e:
        raise NameCollisionError(
            f"load_tf1: the entries of {os.fspath(path)!r} do not form a params tree ({e}).\n"
            "  fix: pass flat=True to get {full name: array}.") from None
