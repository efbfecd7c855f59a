"""Damaged, crafted or unreadable checkpoint inputs: each gets a clear error naming the file, never a
crash of the process, a wait forever, or a silently wrong array (a fuzz hunt's findings)."""

import builtins
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib

import jax.numpy as jnp
import numpy as np
import pytest

from scoped_params import _tf1
from scoped_params import checkpoint as ckpt
from scoped_params.__main__ import main


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _save_tf(tf, prefix, build, var_list=None):
    """Build a TF 1.x graph with ``build()`` (returning the variables to save, or None for all),
    initialize it and save it with Saver at ``prefix``."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        variables = build()
        saver = v1.train.Saver(var_list=variables)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, prefix)


@pytest.fixture(scope="module")
def tiny(tf, tmp_path_factory):
    """A TF checkpoint holding one variable 'w' = arange(6).reshape(2, 3)."""
    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    prefix = str(tmp_path_factory.mktemp("tiny") / "model.ckpt")
    return _save_tf(tf, prefix, lambda: [tf.compat.v1.get_variable("w", initializer=value)]), value


def _copy_checkpoint(prefix, directory, name="model.ckpt"):
    os.makedirs(directory, exist_ok=True)
    for suffix in (".index", ".data-00000-of-00001", ".meta"):
        if os.path.exists(prefix + suffix):
            shutil.copy(prefix + suffix, os.path.join(directory, name + suffix))
    return os.path.join(directory, name)


def _refuse(monkeypatch, *paths):
    """Make the OS refuse to open ``paths`` (as for a file without read permission, which root
    could read anyway): os.open and open raise PermissionError for them."""
    refused = {os.fspath(p) for p in paths}
    os_open, py_open = os.open, builtins.open

    def check(path):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) in refused:
            raise PermissionError(13, "Permission denied", os.fspath(path))

    def fake_os_open(path, *args, **kwargs):
        check(path)
        return os_open(path, *args, **kwargs)

    def fake_open(path, *args, **kwargs):
        check(path)
        return py_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(builtins, "open", fake_open)


# -- 1. the .meta graph's slice info of a variable saved part by part ------------------------------

@pytest.fixture(scope="module")
def parts(tf, tmp_path_factory):
    """A checkpoint of 'emb' [10, 3] saved as its parts 'emb/part_0..2' (rows 4, 3, 3), and its
    value."""
    v1 = tf.compat.v1

    def build():
        emb = v1.get_variable("emb", [10, 3], partitioner=v1.fixed_size_partitioner(3),
                              initializer=v1.random_normal_initializer())
        return {v.op.name: v for v in emb}

    prefix = _save_tf(tf, str(tmp_path_factory.mktemp("parts") / "model.ckpt"), build)
    return prefix, ckpt.load_tf1(prefix)["emb"]


def _damaged_meta(parts, directory, part, edit):
    """A copy of the ``parts`` checkpoint whose .meta has the slice info of ``part`` (every part
    whose name starts so) edited."""
    from tensorflow.core.framework import variable_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    prefix = _copy_checkpoint(parts[0], directory)
    graph = meta_graph_pb2.MetaGraphDef()
    with open(prefix + ".meta", "rb") as f:
        graph.ParseFromString(f.read())
    for key in ("variables", "trainable_variables"):
        values = graph.collection_def[key].bytes_list.value
        for i, raw in enumerate(values):
            var = variable_pb2.VariableDef()
            var.ParseFromString(raw)
            if var.variable_name.startswith(part):
                edit(var.save_slice_info_def)
                values[i] = var.SerializeToString()
    with open(prefix + ".meta", "wb") as f:
        f.write(graph.SerializeToString())
    return prefix


def test_a_meta_whose_slice_info_overlaps_is_refused_not_joined_wrong(parts, tmp_path):
    def overlap(info):
        info.var_offset[0] = 0  # part_1 (rows 4-6) placed over part_0: rows 4-6 left zeros

    prefix = _damaged_meta(parts, tmp_path, "emb/part_1:", overlap)
    with pytest.raises(ckpt.CheckpointCorruptError,
                       match=r"(?s)'emb' .*slice info of the \.meta graph .*model\.ckpt\.meta.* "
                             r"overlaps.*fix: the \.meta file is damaged") as info:
        ckpt.load_tf1(prefix)
    assert info.value.filename == prefix + ".meta"
    with pytest.raises(ckpt.CheckpointCorruptError, match="overlaps"):
        ckpt.init_from_checkpoint(prefix, {"emb": np.zeros((10, 3), np.float32)}, {"emb": "emb"})
    os.unlink(prefix + ".meta")  # the fix it gives: without the .meta the parts join by shape
    np.testing.assert_array_equal(ckpt.load_tf1(prefix)["emb"], parts[1])


@pytest.mark.parametrize("part,edit,found", [
    ("emb/part_2:", lambda s: s.var_offset.__setitem__(0, 8), "outside full shape"),
    ("emb/part_", lambda s: s.full_shape.__setitem__(0, 10 ** 15), "cover 30 of the"),
    ("emb/part_", lambda s: s.full_shape.__setitem__(0, -10), "negative dimension"),
    ("emb/part_0", lambda s: s.full_shape.__setitem__(1, 4), "different full shapes"),
    ("emb/part_", lambda s: (s.ClearField("full_shape"), s.ClearField("var_offset")),
     r"has offset \(\) in full shape \(\)"),
])
def test_a_meta_with_slice_info_out_of_bounds_or_a_bad_full_shape_is_refused_before_allocating(
        parts, tmp_path, part, edit, found):
    # (once a raw ValueError, a MemoryError for 10**15 rows, an IndexError for no full shape)
    prefix = _damaged_meta(parts, tmp_path, part, edit)
    with pytest.raises(ckpt.CheckpointCorruptError, match=found) as info:
        ckpt.load_tf1(prefix)
    assert info.value.filename == prefix + ".meta"
    assert "fix: the .meta file is damaged" in str(info.value)


# -- 2. an .index whose entries TF's reader aborts on -----------------------------------------------

def _varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def _crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _block(entries):
    """A table block (no shared key prefixes, one restart point), its type byte (0: not
    compressed) and its masked CRC-32C, as TF writes them: TF's reader would take it."""
    data = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    data += struct.pack("<II", 0, 1) + b"\0"
    crc = _crc32c(data)
    return data + struct.pack("<I", ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8)
                              & 0xFFFFFFFF)


def _table(entries):
    """TF's table file (a V2 .index) holding ``entries``: a data block, an empty metaindex block,
    an index block, the footer."""
    data, meta = _block(entries), _block([])
    index = _block([(entries[-1][0], _varint(0) + _varint(len(data) - 5))])
    footer = (_varint(len(data)) + _varint(len(meta) - 5) + _varint(len(data) + len(meta))
              + _varint(len(index) - 5))
    return data + meta + index + footer + b"\0" * (40 - len(footer)) + _tf1._TABLE_MAGIC


def _crafted_index(directory, damage):
    """A V2 checkpoint of one float entry 'w' of shape [1], its BundleEntryProto edited by
    ``damage`` (which may return raw bytes to store instead)."""
    from tensorflow.core.protobuf import tensor_bundle_pb2 as tb

    header = tb.BundleHeaderProto(num_shards=1)
    header.version.producer = 1
    entry = tb.BundleEntryProto(dtype=1, size=4)
    entry.shape.dim.add().size = 1
    raw = damage(entry)
    prefix = os.path.join(directory, "model.ckpt")
    with open(prefix + ".index", "wb") as f:
        f.write(_table([(b"", header.SerializeToString()),
                        (b"w", raw if raw is not None else entry.SerializeToString())]))
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(b"\0" * 4)
    return prefix


def _dims(*sizes):
    def damage(entry):
        del entry.shape.dim[:]
        for size in sizes:
            entry.shape.dim.add().size = size
    return damage


def _slices(*extents):
    def damage(entry):
        for start, length in extents:
            extent = entry.slices.add().extent.add()
            extent.start, extent.length = start, length
    return damage


# What made TF's CheckpointReader abort the process (a CHECK failure: SIGABRT, no exception).
ABORTS = {
    "a negative dimension": (_dims(-1), r"shape \[-1\], with a negative dimension"),
    "2**80 elements": (_dims(2 ** 40, 2 ** 40), "more elements than an int64 counts"),
    "300 dimensions": (_dims(*[1] * 300), "300 dimensions"),
    "no BundleEntryProto": (lambda entry: b"\xff\xff\xff", "is no BundleEntryProto"),
    "a reference dtype": (lambda entry: setattr(entry, "dtype", 101), "reference dtype 101"),
    "a slice twice": (_slices((0, 1), (0, 1)), r"slice \[\[0, 1\]\] twice"),
    "a negative slice": (_slices((-5, -7)), "out of its bounds"),
}


@pytest.mark.parametrize("kind", sorted(ABORTS))
def test_an_index_entry_tfs_reader_would_abort_on_is_refused_before_tf_reads_it(
        tf, tmp_path, monkeypatch, kind):
    damage, found = ABORTS[kind]
    prefix = _crafted_index(str(tmp_path), damage)
    calls = []

    def reader(path):  # TF's reader would abort the test process: it must not be reached
        calls.append(path)
        raise AssertionError("TF's reader was called")

    monkeypatch.setattr(tf.train, "load_checkpoint", reader)
    for read in (ckpt.load_tf1, ckpt.list_variables, lambda p: ckpt.load_variable(p, "w")):
        with pytest.raises(ckpt.CheckpointCorruptError,
                           match=rf"(?s)its index '.*model\.ckpt\.index' is damaged: entry 'w' "
                                 rf".*{found}.*fix: restore") as info:
            read(prefix)
        assert info.value.filename == prefix
    assert calls == []


def test_inspect_of_an_index_tf_would_abort_on_exits_with_an_error_not_a_crash(tf, tmp_path):
    prefix = _crafted_index(str(tmp_path), _dims(-1))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "scoped_params", "inspect", prefix],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]  # (TF's SIGABRT: -6)
    assert "error: cannot read TF checkpoint" in result.stderr
    assert "negative dimension" in result.stderr


def test_the_index_check_reads_every_entry_of_a_real_index_of_many_blocks(tf, tmp_path):
    v1 = tf.compat.v1

    def build():
        for i in range(300):  # keys sharing long prefixes, over several 4 KiB blocks
            v1.get_variable(f"layer_{i:03d}/a/long/scope/kernel", [2])
        v1.get_variable("emb", [6, 2], partitioner=v1.fixed_size_partitioner(3))

    prefix = _save_tf(tf, str(tmp_path / "model.ckpt"), build)
    with open(prefix + ".index", "rb") as f:
        data = f.read()
    keys = {k.decode() for k, _ in _tf1._table_entries(data) if k and not k.startswith(b"\0")}
    assert len(data) > 3 * 4096
    assert keys == {name for name, _ in tf.train.list_variables(prefix)}
    _tf1.check_index(prefix, prefix + ".index")  # nothing refused in a real one


# -- 3. FIFOs are refused, not waited on --------------------------------------------------------------

def _without_waiting(fifos, call):
    """``call()``; the test fails if it waits on one of the FIFOs ``fifos`` (each is then opened
    for writing and closed, which lets the waiting reader go on with nothing to read)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as e:  # handed to the test's thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    waited = thread.is_alive()
    for _ in range(60):
        if not thread.is_alive():
            break
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader on it (yet)
                pass
        thread.join(0.5)
    assert not waited, f"waited on a FIFO ({fifos})"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_fifo_named_as_a_tf_checkpoint_or_its_shard_is_refused_not_waited_on(tmp_path):
    fifo = str(tmp_path / "model.ckpt")
    os.mkfifo(fifo)
    with pytest.raises(ckpt.CheckpointNotFoundError, match=r"is not a file \(a pipe"):
        _without_waiting([fifo], lambda: ckpt.load_tf1(fifo))
    shard = str(tmp_path / "other.ckpt-00000-of-00001")  # a V1 shard's name: its tail is read
    os.mkfifo(shard)
    with pytest.raises(ckpt.CheckpointNotFoundError):
        _without_waiting([shard], lambda: ckpt.load_tf1(str(tmp_path / "other.ckpt")))


def test_a_fifo_state_file_or_data_file_of_a_tf_checkpoint_is_refused_not_waited_on(tiny, tmp_path):
    for step in (1, 2):
        _copy_checkpoint(tiny[0], tmp_path, f"model.ckpt-{step}")
    state = str(tmp_path / "checkpoint")
    os.mkfifo(state)
    for read in (ckpt.load_tf1, ckpt.list_variables):
        with pytest.raises(ckpt.CheckpointCorruptError,
                           match=r"(?s)state file '.*checkpoint' is not a regular file.*2 checkpoints"):
            _without_waiting([state], lambda: read(str(tmp_path)))
    data = str(tmp_path / "model.ckpt-2.data-00000-of-00001")
    os.unlink(data)
    os.mkfifo(data)
    with pytest.raises(ckpt.CheckpointError, match=r"(?s)its file '.*data-00000-of-00001' is not a "
                                                   r"regular file.*fix: copy") as info:
        _without_waiting([data], lambda: ckpt.load_tf1(str(tmp_path / "model.ckpt-2")))
    assert info.value.filename == data


# -- 4. TrainingCheckpointer: the OS refusing a step's files, a damaged checksums file ---------------

@pytest.fixture
def run_dir(tmp_path):
    directory = str(tmp_path / "run")
    with ckpt.TrainingCheckpointer(directory) as manager:
        for step in (1, 2):
            manager.save(step, {"w": jnp.arange(3.0) * step})
    return directory


def test_a_step_the_os_refuses_to_read_is_a_permission_error_not_called_damaged(run_dir,
                                                                                 monkeypatch):
    manifest = os.path.join(run_dir, "2", "default", "manifest.ocdbt")

    def refused(*args, **kwargs):  # what tensorstore raises for a file without read permission
        raise ValueError(f'PERMISSION_DENIED: Error opening "zarr" driver: Error reading local '
                         f'file "{manifest}": Failed to open: "{manifest}": Permission denied')

    with ckpt.TrainingCheckpointer(run_dir) as manager:
        monkeypatch.setattr(manager._manager, "restore", refused)
        with pytest.raises(PermissionError, match=r"(?s)step 2 .*the OS refused to read "
                                                  r"'.*manifest\.ocdbt'.*fix: check the "
                                                  r"permissions") as info:
            manager.restore(2)
    assert isinstance(info.value, ckpt.CheckpointPermissionError)
    assert info.value.filename == manifest
    assert "damaged" not in str(info.value).replace("not known to be damaged", "")
    assert "delete_steps_after" not in str(info.value)


def test_an_unreadable_checksums_file_is_a_permission_error(run_dir, monkeypatch):
    _refuse(monkeypatch, os.path.join(run_dir, "2", "scoped_params_checksums.json"))
    with ckpt.TrainingCheckpointer(run_dir) as manager:
        with pytest.raises(PermissionError, match=r"(?s)scoped_params_checksums\.json.*fix: check "
                                                  r"the permissions") as info:
            manager.restore(2)
    assert type(info.value).__name__ == "CheckpointPermissionError"


@pytest.mark.parametrize("damage,found", [
    (lambda path: (os.unlink(path), os.mkdir(path)), "is not a regular file"),
    (lambda path: open(path, "w").write("[" * 100000 + "]" * 100000), "RecursionError"),
])
def test_a_checksums_file_that_is_a_directory_or_nested_too_deep_is_called_damaged(run_dir, damage,
                                                                                   found):
    damage(os.path.join(run_dir, "2", "scoped_params_checksums.json"))
    with ckpt.TrainingCheckpointer(run_dir) as manager:
        with pytest.raises(ckpt.CheckpointCorruptError,
                           match=rf"(?s)step 2 .* is damaged .*checksums file.*{found}"):
            manager.restore(2, target={"w": jnp.zeros(3)})
        np.testing.assert_array_equal(manager.restore(1)["w"], np.arange(3.0))


# -- 5. a NUL byte in the state file -------------------------------------------------------------------

def test_a_state_file_naming_a_path_with_a_nul_byte_is_called_damaged(tiny, tmp_path, capsys):
    state = tmp_path / "checkpoint"
    state.write_bytes(b'model_checkpoint_path: "/tmp/x\\000y/model.ckpt"\n')
    with pytest.raises(ckpt.CheckpointCorruptError,
                       match=r"(?s)state file '.*checkpoint' names '/tmp/x\\x00y/model.ckpt', a path "
                             r"with a NUL byte.*no checkpoint in it") as info:
        ckpt.load_tf1(tmp_path)
    assert info.value.filename == str(state)
    assert main(["inspect", str(tmp_path)]) == 1
    assert "error: TF checkpoint directory" in capsys.readouterr().err
    _copy_checkpoint(tiny[0], tmp_path)  # with one checkpoint there, it is the answer
    np.testing.assert_array_equal(ckpt.load_tf1(tmp_path)["w"], tiny[1])


# -- 6. a foreign bool tensor ---------------------------------------------------------------------------

def test_a_foreign_bool_tensor_with_bytes_other_than_0_or_1_is_refused(tmp_path):
    header = json.dumps({"a": {"dtype": "BOOL", "shape": [4], "data_offsets": [0, 4]}}).encode()
    header += b" " * (-len(header) % 8)
    path = tmp_path / "foreign.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes([0, 1, 2, 255]))
    # (NumPy would read [F, T, T, T], and jnp.asarray(a) == True [F, T, F, F])
    with pytest.raises(ckpt.CheckpointCorruptError,
                       match=r"tensor 'a' is bool, but holds the byte 255 \(a bool is stored as 0 "
                             r"or 1\)"):
        ckpt.load(path)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes([0, 1, 1, 0]))
    assert ckpt.load(path)["a"].tolist() == [False, True, True, False]


# -- 7. the OS refusing a TF checkpoint's files, a path that is not UTF-8 --------------------------------

def test_tfs_permission_denied_is_a_permission_error_not_damage(tf, tiny, tmp_path, monkeypatch):
    prefix = _copy_checkpoint(tiny[0], tmp_path)
    data = prefix + ".data-00000-of-00001"

    def reader(path):
        raise tf.errors.PermissionDeniedError(None, None, f"{data}; Permission denied")

    monkeypatch.setattr(tf.train, "load_checkpoint", reader)
    _refuse(monkeypatch, data)
    with pytest.raises(PermissionError, match=r"(?s)cannot read TF checkpoint .*the OS refused to "
                                              r"read '.*data-00000-of-00001'.*fix: check the "
                                              r"permissions") as info:
        ckpt.load_tf1(prefix)
    assert type(info.value).__name__ == "CheckpointPermissionError" and info.value.filename == data
    assert "present and complete" not in str(info.value)


def test_an_unreadable_tf_file_or_directory_is_a_permission_error_not_not_found(tmp_path,
                                                                                monkeypatch):
    prefix = str(tmp_path / "model.ckpt")  # a V1-format checkpoint's one file, say
    with open(prefix, "wb") as f:
        f.write(b"\0" * 40 + _tf1._TABLE_MAGIC)
    _refuse(monkeypatch, prefix)
    with pytest.raises(PermissionError,
                       match=r"(?s)the OS refused to read '.*model\.ckpt'.*fix: check") as info:
        ckpt.load_tf1(prefix)
    assert "not found" not in str(info.value) and not isinstance(info.value, FileNotFoundError)
    weights = tmp_path / "w.safetensors"
    ckpt.save(weights, {"w": jnp.ones(2)})
    _refuse(monkeypatch, weights)
    with pytest.raises(PermissionError, match="fix: check the permissions") as info:
        ckpt.load(weights)
    assert isinstance(info.value, ckpt.CheckpointError)


def test_a_tf_checkpoint_directory_the_os_refuses_is_a_permission_error(tf, tiny, tmp_path,
                                                                        monkeypatch):
    _copy_checkpoint(tiny[0], tmp_path)
    _refuse(monkeypatch, os.path.join(str(tmp_path), os.curdir))  # (no read or search permission)
    with pytest.raises(PermissionError, match=r"cannot read TF checkpoint directory .*the OS "
                                              r"refused"):
        ckpt.load_tf1(tmp_path)


def test_a_tf_checkpoint_under_a_directory_name_that_is_not_utf8_is_read(tiny, tmp_path):
    directory = os.path.join(str(tmp_path), os.fsdecode(b"caf\xe9"))
    try:
        prefix = _copy_checkpoint(tiny[0], directory)
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take a name that is not UTF-8")
    np.testing.assert_array_equal(ckpt.load_tf1(prefix)["w"], tiny[1])
    (tmp_path / os.fsdecode(b"caf\xe9") / "checkpoint").write_text(
        'model_checkpoint_path: "model.ckpt"\n')
    np.testing.assert_array_equal(ckpt.load_tf1(directory)["w"], tiny[1])
    assert ckpt.list_variables(directory) == [("w", (2, 3))]


# -- 8. the format version of a weights file ---------------------------------------------------------

def _with_version(data, version):
    return data.replace(b'"scoped_params.format":"1"', b'"scoped_params.format":"%s"' % version)


def test_a_flipped_bit_in_the_format_version_is_called_damage_but_a_newer_file_says_upgrade(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save(path, {"w": jnp.ones(2)})
    data = path.read_bytes()
    assert _with_version(data, b"3") != data
    path.write_bytes(_with_version(data, b"3"))  # '1' (0x31) -> '3' (0x33): one bit
    with pytest.raises(ckpt.CheckpointCorruptError,
                       match=r"checksum mismatch .*bits were flipped \(its format version reads "
                             r"'3', not '1'"):
        ckpt.load(path)
    # A newer writer's file, its checksum computed as this version does: the upgrade message.
    newer = bytearray(_with_version(data, b"2"))
    at = ckpt._crc_offset(bytes(newer[:8 + ckpt._header_len(newer)]))
    newer[at:at + 8] = b"00000000"
    newer[at:at + 8] = b"%08x" % zlib.crc32(newer)
    path.write_bytes(bytes(newer))
    with pytest.raises(ckpt.CheckpointCorruptError,
                       match=r"format version '2' is not one this version of scoped_params reads "
                             r"\('1'\); upgrade scoped_params") as info:
        ckpt.load(path)
    assert "checksum" not in str(info.value)
