"""sp.checkpoint.save/load (safetensors keyed by full names) and init_from_checkpoint."""

import json
import os
import struct
import zlib

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

import scoped_params as sp
from scoped_params import checkpoint as ckpt

# Every dtype JAX has (those it needs x64 for included, as numpy arrays).
ALL_DTYPES = [
    "bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16",
    "bfloat16", "float32", "float64", "complex64", "complex128", "float8_e5m2", "float8_e4m3fn",
    "float8_e5m2fnuz", "float8_e4m3fnuz", "float8_e4m3b11fnuz", "float8_e8m0fnu", "float8_e3m4",
    "float8_e4m3", "float4_e2m1fn", "int4", "uint4", "int2", "uint2",
]


def _dtype(name):
    return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)


def _random_bits(dtype, shape, seed=0):
    """Arbitrary bit patterns (NaN payloads, -0.0, subnormals): bit-exactness, not just equality."""
    dtype = _dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8)
    if dtype == np.bool_:
        raw &= 1
    return raw.view(dtype).reshape(shape)


def _bits(x):
    x = np.asarray(x)
    return x.dtype, x.shape, x.tobytes()


def _image_filter(images):
    def conv_relu(x, kernel_shape, bias_shape):
        w = sp.get_param("weights", kernel_shape, init=jax.nn.initializers.normal(0.05))
        b = sp.get_param("biases", bias_shape, init=jax.nn.initializers.constant(0.1))
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y + b)

    with sp.scope("image_filters"):
        with sp.scope("conv1"):
            x = conv_relu(images, [3, 3, 4, 8], [8])
        with sp.scope("conv2"):
            return conv_relu(x, [3, 3, 8, 8], [8])


@pytest.fixture
def filter_params(key):
    return sp.transform(_image_filter).init(key, jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32))


# -- round trip ----------------------------------------------------------------------------------

def test_every_dtype_round_trips_bit_exact(tmp_path):
    tree = {"numpy": {name: _random_bits(name, (3, 5), seed=i) for i, name in enumerate(ALL_DTYPES)},
            "scalar": np.float32(-0.0), "empty": np.zeros((0, 4), ml_dtypes.bfloat16)}
    path = tmp_path / "all.safetensors"
    ckpt.save(path, tree)
    back = ckpt.load(path)
    flat_in, flat_out = sp.flatten(tree), sp.flatten(back)
    assert sorted(flat_in) == sorted(flat_out)
    for name in flat_in:
        assert _bits(flat_out[name]) == _bits(flat_in[name]), name
        assert flat_out[name].flags.writeable


_names = st.lists(st.sampled_from(["a", "b", "conv1", "weights", "w_1", "dense/kernel"]),
                  min_size=1, max_size=3).map("/".join)
_leaves = st.tuples(st.sampled_from(ALL_DTYPES),
                    st.lists(st.integers(0, 3), max_size=3).map(tuple),
                    st.integers(0, 2**32 - 1))


def _valid_tree(flat):
    try:
        sp.unflatten(flat)
        return True
    except ValueError:
        return False


@settings(max_examples=40)
@given(st.dictionaries(_names, _leaves, max_size=6).map(
    lambda d: {name: _random_bits(dtype, shape, seed) for name, (dtype, shape, seed) in d.items()}
).filter(_valid_tree))
def test_any_tree_of_any_dtypes_and_shapes_round_trips(tmp_path_factory, flat):
    path = tmp_path_factory.mktemp("prop") / "p.safetensors"
    ckpt.save(path, sp.unflatten(flat))
    back = sp.flatten(ckpt.load(path))
    assert {n: _bits(v) for n, v in back.items()} == {n: _bits(v) for n, v in flat.items()}


def test_jax_arrays_round_trip_bf16_int_bool_exactly(tmp_path):
    k = jax.random.key(3)
    tree = {"layer": {"w": jax.random.normal(k, (4, 3), jnp.bfloat16),
                      "ids": jnp.arange(-5, 7, dtype=jnp.int32).reshape(3, 4),
                      "mask": jnp.array([True, False, True]),
                      "f8": jax.random.normal(k, (2, 2)).astype(jnp.float8_e4m3fn),
                      "i4": jnp.array([-8, 7, 0], jnp.int4)}}
    ckpt.save(tmp_path / "p.safetensors", tree)
    back = ckpt.load(tmp_path / "p.safetensors")
    jax.tree.map(lambda a, b: chex.assert_equal(_bits(a), _bits(b)), tree, back)


def test_keys_are_full_names_and_any_safetensors_reader_opens_the_file(tmp_path, filter_params):
    path = tmp_path / "filter.safetensors"
    ckpt.save(path, filter_params)
    plain = safetensors.numpy.load_file(str(path))
    assert sorted(plain) == ["image_filters/conv1/biases", "image_filters/conv1/weights",
                             "image_filters/conv2/biases", "image_filters/conv2/weights"]
    np.testing.assert_array_equal(plain["image_filters/conv1/weights"],
                                  filter_params["image_filters"]["conv1"]["weights"])


def test_load_returns_the_nested_tree_the_model_applies_with(tmp_path, filter_params):
    ckpt.save(tmp_path / "f.safetensors", filter_params)
    loaded = ckpt.load(tmp_path / "f.safetensors")
    chex.assert_trees_all_equal(loaded, jax.tree.map(np.asarray, filter_params))
    x = jax.random.normal(jax.random.key(1), (1, 8, 8, 4))
    model = sp.transform(_image_filter)
    np.testing.assert_array_equal(model.apply(loaded, x), model.apply(filter_params, x))


def test_a_flat_dict_of_full_names_is_saved_like_the_nested_tree(tmp_path, filter_params):
    ckpt.save(tmp_path / "flat.safetensors", sp.flatten(filter_params))
    chex.assert_trees_all_equal(ckpt.load(tmp_path / "flat.safetensors"),
                                jax.tree.map(np.asarray, filter_params))


def test_safetensors_files_from_other_writers_load(tmp_path):
    safetensors.numpy.save_file({"enc/w": np.ones((2, 2), np.float32), "b": np.arange(3)},
                                str(tmp_path / "hf.safetensors"))
    tree = ckpt.load(tmp_path / "hf.safetensors")
    np.testing.assert_array_equal(tree["enc"]["w"], np.ones((2, 2), np.float32))
    np.testing.assert_array_equal(tree["b"], np.arange(3))


def test_metadata_round_trips_without_the_library_keys(tmp_path):
    meta = {"step": "1000", "config": json.dumps({"lr": 0.1})}
    ckpt.save(tmp_path / "m.safetensors", {"w": np.ones(2)}, metadata=meta)
    assert ckpt.read_metadata(tmp_path / "m.safetensors") == meta


def test_metadata_must_map_str_to_str_and_library_keys_are_reserved(tmp_path):
    with pytest.raises(TypeError, match=r"(?s)metadata must map str to str.*json.dumps"):
        ckpt.save(tmp_path / "m.safetensors", {"w": np.ones(2)}, metadata={"step": 3})
    with pytest.raises(ValueError, match="reserved"):
        ckpt.save(tmp_path / "m.safetensors", {"w": np.ones(2)},
                  metadata={"scoped_params.crc32": "0"})
    assert not os.listdir(tmp_path)


def test_non_array_leaves_and_tracers_are_refused_with_the_entry_name(tmp_path):
    with pytest.raises(TypeError, match=r"(?s)'a/name'.*not a JAX array dtype"):
        ckpt.save(tmp_path / "x.safetensors", {"a": {"name": "text"}})

    @jax.jit
    def inside(w):
        ckpt.save(tmp_path / "x.safetensors", {"w": w})
        return w

    with pytest.raises(TypeError, match=r"(?s)'w'.*outside jax.jit"):
        inside(jnp.ones(2))
    assert not os.listdir(tmp_path)


def test_list_and_tuple_leaves_are_refused_with_the_entry_name(tmp_path):
    for leaf in ([np.ones(2), np.zeros(2)], (np.ones(2), np.zeros(3))):
        with pytest.raises(TypeError, match=r"(?s)'net/layers' is a (list|tuple).*fix: key the "
                                            r"items by name.*'net/layers/0'"):
            ckpt.save(tmp_path / "x.safetensors", {"net": {"layers": leaf}})
    assert not os.listdir(tmp_path)


def test_the_safetensors_metadata_key_is_refused_as_a_parameter_name(tmp_path):
    path = tmp_path / "p.safetensors"
    ckpt.save(path, {"w": np.ones(2)})
    with pytest.raises(sp.InvalidNameError, match=r"(?s)'__metadata__'.*reserves it.*fix: rename"):
        ckpt.save(path, {"__metadata__": np.ones(2)})
    np.testing.assert_array_equal(ckpt.load(path)["w"], np.ones(2))  # the good file is untouched
    ckpt.save(path, {"a": {"__metadata__": np.ones(2)}})  # only the top-level name is reserved
    assert ckpt.list_variables(path) == [("a/__metadata__", (2,))]


def test_lone_surrogates_in_names_or_metadata_are_refused_naming_them(tmp_path):
    path = tmp_path / "p.safetensors"
    with pytest.raises(sp.InvalidNameError, match=r"(?s)'a\\udc80/w' is not valid Unicode.*fix:"):
        ckpt.save(path, {"a\udc80": {"w": np.ones(2)}})
    with pytest.raises(ValueError, match=r"(?s)the value of metadata entry 'k' is not valid.*fix:"):
        ckpt.save(path, {"w": np.ones(2)}, metadata={"k": "\udc80"})
    with pytest.raises(ValueError, match=r"(?s)the key of metadata entry '\\udc80k'.*fix:"):
        ckpt.save(path, {"w": np.ones(2)}, metadata={"\udc80k": "v"})
    assert not os.listdir(tmp_path)


# -- atomicity -----------------------------------------------------------------------------------

def test_save_leaves_only_the_file_and_overwrites_it_whole(tmp_path):
    path = tmp_path / "p.safetensors"
    ckpt.save(path, {"w": np.zeros((100, 100), np.float32)})
    ckpt.save(path, {"v": np.ones(3, np.int8)})
    assert os.listdir(tmp_path) == ["p.safetensors"]
    chex.assert_trees_all_equal(ckpt.load(path), {"v": np.ones(3, np.int8)})


def test_a_failing_save_keeps_the_previous_file_and_removes_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "p.safetensors"
    ckpt.save(path, {"w": np.arange(4.0)})

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        ckpt.save(path, {"w": np.zeros(4)})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["p.safetensors"]
    np.testing.assert_array_equal(ckpt.load(path)["w"], np.arange(4.0))


def test_the_temporary_file_is_fsynced_then_renamed_then_the_directory_fsynced(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src, dst):
        assert os.path.dirname(os.path.abspath(src)) == os.path.dirname(os.path.abspath(dst))
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ckpt.save(tmp_path / "p.safetensors", {"w": np.ones(2)})
    if os.path.isdir("/proc/self/fd"):
        assert events == ["fsync-file", "rename", "fsync-dir"]
    else:
        assert events[:2] == ["fsync-file", "rename"]


def test_save_through_a_symlink_writes_its_target_and_keeps_the_link(tmp_path):
    # as open(path, "wb"), np.save and TF's Saver do: best -> step_1000 stays a link to new weights
    real, link = tmp_path / "step_1000.safetensors", tmp_path / "best.safetensors"
    ckpt.save(real, {"w": np.zeros(2)})
    os.symlink("step_1000.safetensors", link)
    ckpt.save(link, {"w": np.ones(2)})
    assert os.path.islink(link) and os.readlink(link) == "step_1000.safetensors"
    np.testing.assert_array_equal(ckpt.load(real)["w"], [1.0, 1.0])
    assert sorted(os.listdir(tmp_path)) == ["best.safetensors", "step_1000.safetensors"]
    # a link into another directory: the temporary file sits (and is renamed) next to the target
    (tmp_path / "other").mkdir()
    os.symlink(tmp_path / "other" / "far.safetensors", tmp_path / "far")  # dangling: created
    ckpt.save(tmp_path / "far", {"w": np.full(2, 3.0)})
    assert os.path.islink(tmp_path / "far") and os.listdir(tmp_path / "other") == ["far.safetensors"]
    np.testing.assert_array_equal(ckpt.load(tmp_path / "other" / "far.safetensors")["w"], [3.0, 3.0])


def test_save_into_a_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.save(tmp_path / "nope" / "p.safetensors", {"w": np.ones(2)})


def test_saving_to_a_directory_path_is_refused_before_writing(tmp_path):
    (tmp_path / "existing").mkdir()
    for path in (tmp_path / "existing", str(tmp_path / "newdir") + "/"):
        with pytest.raises(IsADirectoryError, match=r"(?s)it names a directory.*fix: name a file"):
            ckpt.save(path, {"w": np.ones(2)})
    assert os.listdir(tmp_path) == ["existing"] and not os.listdir(tmp_path / "existing")


def test_a_new_file_gets_the_umask_mode_and_an_existing_file_keeps_its_mode(tmp_path):
    path = tmp_path / "p.safetensors"
    old = os.umask(0o027)
    try:
        ckpt.save(path, {"w": np.ones(2)})
        assert os.umask(0o027) == 0o027  # restored after reading it
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640
    os.chmod(path, 0o604)
    ckpt.save(path, {"w": np.zeros(2)})
    assert os.stat(path).st_mode & 0o777 == 0o604


def test_names_that_cannot_form_a_tree_are_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="cannot be placed"):
        ckpt.save(tmp_path / "p.safetensors", {"a": np.ones(1), "a/b": np.ones(1)})
    assert not os.listdir(tmp_path)


# -- corrupt inputs ------------------------------------------------------------------------------

@pytest.fixture
def good_file(tmp_path, filter_params):
    path = tmp_path / "good.safetensors"
    ckpt.save(path, filter_params, metadata={"note": "hello"})
    return path


def _write(path, data):
    path.write_bytes(bytes(data))
    return path


def _header_len(data):
    return struct.unpack("<Q", data[:8])[0]


@pytest.mark.parametrize("case", [
    "empty", "seven_bytes", "truncated_header", "truncated_data", "one_byte_short",
    "flip_in_data", "flip_in_header", "flip_in_metadata", "flip_in_length", "appended_garbage",
    "text_file", "pickle_bytes", "random_bytes", "json_file", "tf_index_file",
])
def test_corrupt_or_foreign_files_raise_an_error_naming_the_file(tmp_path, good_file, case):
    data = bytearray(good_file.read_bytes())
    n = _header_len(data)
    bad = tmp_path / f"{case}.safetensors"
    if case == "empty":
        _write(bad, b"")
    elif case == "seven_bytes":
        _write(bad, data[:7])
    elif case == "truncated_header":
        _write(bad, data[:8 + n // 2])
    elif case == "truncated_data":
        _write(bad, data[:8 + n + (len(data) - 8 - n) // 2])
    elif case == "one_byte_short":
        _write(bad, data[:-1])
    elif case == "flip_in_data":
        data[-100] ^= 0x04
        _write(bad, data)
    elif case == "flip_in_header":
        data[8 + data[8:].index(b"weights") + 2] ^= 0x01
        _write(bad, data)
    elif case == "flip_in_metadata":
        data[8 + data[8:].index(b"hello")] ^= 0x20
        _write(bad, data)
    elif case == "flip_in_length":
        data[0] ^= 0x08
        _write(bad, data)
    elif case == "appended_garbage":
        _write(bad, data + b"\0" * 16)
    elif case == "text_file":
        _write(bad, b"this is a README, not weights\n" * 4)
    elif case == "pickle_bytes":  # a protocol-4 pickle of {"w": 1}: must never be unpickled
        _write(bad, b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01w\x94K\x01s.")
    elif case == "random_bytes":
        _write(bad, np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif case == "json_file":
        _write(bad, json.dumps({"w": [1, 2, 3]}).encode())
    elif case == "tf_index_file":
        _write(bad, b"\x00\x00\x00\x00\x01\x00\x00\x00" + b"\x57\xfb\x80\x8b\x24\x75\x47\xdb" * 8)
    with pytest.raises(ckpt.CheckpointCorruptError) as info:
        ckpt.load(bad)
    message = str(info.value)
    assert str(bad) in message and "fix:" in message
    assert isinstance(info.value, ValueError) and info.value.filename == str(bad)


def _with_record(path, record, code, shape):
    """A file with a valid checksum whose tensor record for 'w' is ``record`` (8 data bytes)."""
    meta = {"scoped_params.format": "1", "scoped_params.tensors": json.dumps({"w": record}),
            "scoped_params.crc32": "00000000"}
    header = json.dumps({"__metadata__": meta,
                         "w": {"dtype": code, "shape": shape, "data_offsets": [0, 8]}},
                        separators=(",", ":")).encode()
    data = bytearray(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    at = ckpt._crc_offset(bytes(data[:8 + len(header)]))
    data[at:at + 8] = b"%08x" % zlib.crc32(data)
    return _write(path, data)


@pytest.mark.parametrize("record, code, shape", [
    (["float32"], "F32", [2]), (["float32", 2], "F32", [2]), (None, "F32", [2]),
    ("float32", "F32", [2]), (["float32", [2.0]], "F32", [2]), (["float32", [-2]], "F32", [2]),
    (["object", [1]], "U8", [8]), (["<U2", [1]], "U8", [8]), (["complex128", [1]], "U8", [8]),
    (["int4", [2 ** 64 + 8]], "U8", [8]),
])
def test_a_malformed_tensor_record_raises_an_error_naming_the_tensor(tmp_path, record, code, shape):
    bad = _with_record(tmp_path / "bad.safetensors", record, code, shape)
    for read in (ckpt.load, ckpt.list_variables):
        with pytest.raises(ckpt.CheckpointCorruptError, match=r"(?s)bad.safetensors.*tensor 'w'"):
            read(bad)
    np.testing.assert_array_equal(  # the same file with a well-formed record loads
        ckpt.load(_with_record(tmp_path / "ok.safetensors", ["float32", [2]], "F32", [2]))["w"],
        np.zeros(2, np.float32))


def test_every_single_bit_flip_anywhere_in_the_file_is_detected(tmp_path):
    path = tmp_path / "small.safetensors"
    ckpt.save(path, {"a": {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "i": np.int8(3)}},
              metadata={"k": "v"})
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 1 << (i % 8)
        bad.write_bytes(flipped)
        with pytest.raises(ckpt.CheckpointCorruptError, match="bad.safetensors"):
            ckpt.load(bad)


def test_every_truncation_is_detected(tmp_path, good_file):
    data = good_file.read_bytes()
    bad = tmp_path / "short.safetensors"
    for n in sorted({0, 1, 7, 8, 9, *range(0, len(data), max(1, len(data) // 200)), len(data) - 1}):
        bad.write_bytes(data[:n])
        with pytest.raises(ckpt.CheckpointCorruptError, match="short.safetensors"):
            ckpt.load(bad)


def test_a_missing_file_raises_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(FileNotFoundError, match="missing.safetensors.*does not exist"):
        ckpt.load(missing)
    with pytest.raises(ckpt.CheckpointNotFoundError):
        ckpt.read_metadata(missing)


def test_a_directory_is_not_a_weights_file_and_not_a_corrupt_one(tmp_path):
    for read in (ckpt.load, ckpt.read_metadata):
        with pytest.raises(IsADirectoryError, match=r"(?s)checkpoint file .* is a directory, not a "
                                                    r"weights file.*fix: pass the weights file"
                           ) as e:
            read(tmp_path)
        message = str(e.value)
        assert str(tmp_path) in message and "load_tf1" in message
        assert "TrainingCheckpointer" in message and "damaged" not in message
        assert isinstance(e.value, ckpt.CheckpointError)
        assert not isinstance(e.value, ckpt.CheckpointCorruptError)
        assert e.value.filename == str(tmp_path)


def test_init_from_checkpoint_of_the_params_and_state_pair_says_to_pass_params(tmp_path):
    params, state = {"dense": {"w": jnp.zeros((2, 2))}}, {"bn": {"mean": jnp.zeros(2)}}
    with pytest.raises(TypeError, match=r"(?s)init_from_checkpoint: params must be a nested dict.*"
                                        r"got a tuple of 2 dicts.*\(params, state\).*"
                                        r"fix: pass the params alone"):
        ckpt.init_from_checkpoint(params, (params, state), {"/": "/"})
    with pytest.raises(TypeError, match=r"init_from_checkpoint: params must be .*got list"):
        ckpt.init_from_checkpoint(params, [params], {"/": "/"})


def test_nothing_in_the_library_unpickles():
    import scoped_params
    root = os.path.dirname(scoped_params.__file__)
    for name in os.listdir(root):
        if name.endswith(".py"):
            source = open(os.path.join(root, name), encoding="utf-8").read()
            for banned in ("import pickle", "pickle.load", "allow_pickle=True", "import dill",
                           "import cloudpickle", "marshal.load"):
                assert banned not in source, f"{name} uses {banned}"


# -- init_from_checkpoint ------------------------------------------------------------------------

def _tree(prefix, value):
    return sp.unflatten({f"{prefix}/conv1/weights": np.full((2, 2), value, np.float32),
                         f"{prefix}/conv1/biases": np.full((2,), value, np.float32)})


def test_scope_to_scope_map_loads_every_parameter_under_the_new_scope(tmp_path):
    ckpt.save(tmp_path / "old.safetensors", _tree("old_scope", 1.0))
    params = sp.merge(_tree("new_scope", 0.0), {"head": {"w": jnp.zeros(3)}})
    out = ckpt.init_from_checkpoint(tmp_path / "old.safetensors", params,
                                    {"old_scope/": "new_scope/"})
    chex.assert_trees_all_equal(out["new_scope"], jax.tree.map(jnp.asarray, _tree("x", 1.0)["x"]))
    np.testing.assert_array_equal(out["head"]["w"], jnp.zeros(3))  # not in the map: kept
    chex.assert_trees_all_equal(params["new_scope"], _tree("x", 0.0)["x"])  # input not mutated


def test_root_to_scope_and_scope_to_root_maps():
    source = {"conv1": _tree("s", 5.0)["s"]["conv1"]}
    params = _tree("tower", 0.0)
    out = ckpt.init_from_checkpoint(source, params, {"/": "tower/"})
    np.testing.assert_array_equal(out["tower"]["conv1"]["weights"], np.full((2, 2), 5.0))
    out = ckpt.init_from_checkpoint(_tree("pre", 7.0), {"conv1": params["tower"]["conv1"]},
                                    {"pre/": "/"})
    np.testing.assert_array_equal(out["conv1"]["biases"], np.full((2,), 7.0))


def test_single_name_map_loads_one_parameter_only():
    out = ckpt.init_from_checkpoint(_tree("old", 3.0), _tree("new", 0.0),
                                    {"old/conv1/weights": "new/conv1/weights"})
    np.testing.assert_array_equal(out["new"]["conv1"]["weights"], np.full((2, 2), 3.0))
    np.testing.assert_array_equal(out["new"]["conv1"]["biases"], np.zeros(2))


def test_scope_maps_are_literal_prefixes():
    params = sp.merge(_tree("foo", 0.0), _tree("foo_1", 0.0))
    out = ckpt.init_from_checkpoint(_tree("foo", 9.0), params, {"foo/": "foo/"})
    np.testing.assert_array_equal(out["foo"]["conv1"]["weights"], np.full((2, 2), 9.0))
    np.testing.assert_array_equal(out["foo_1"]["conv1"]["weights"], np.zeros((2, 2)))


def test_every_parameter_that_cannot_be_filled_is_named_in_one_error():
    source = sp.unflatten({"old/a": np.ones((2, 2), np.float32), "old/b": np.ones(3, np.float32),
                           "old/c": np.ones(2, np.int32)})
    params = sp.unflatten({"new/a": jnp.zeros((2, 2)), "new/b": jnp.zeros(4),
                           "new/c": jnp.zeros(2), "new/d": jnp.zeros(1)})
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(source, params, {"old/": "new/"})
    message = str(info.value)
    assert "could not fill 3 entries" in message
    assert "'new/b': shape (4,) in params, but 'old/b' has shape (3,)" in message
    assert "'new/c': dtype float32 in params, but 'old/c' has dtype int32" in message
    assert "'new/d': 'old/d' is not in the given tree" in message
    assert "fix:" in message and isinstance(info.value, ValueError)


def test_bad_assignment_maps_are_explained():
    params, source = _tree("new", 0.0), _tree("old", 1.0)
    with pytest.raises(ckpt.CheckpointMismatchError, match="trailing slashes on both sides"):
        ckpt.init_from_checkpoint(source, params, {"old": "new"})
    with pytest.raises(ckpt.CheckpointMismatchError, match="no parameter under 'nothere/'"):
        ckpt.init_from_checkpoint(source, params, {"old/": "nothere/"})
    with pytest.raises(ckpt.CheckpointMismatchError, match="did you mean"):
        ckpt.init_from_checkpoint(source, params, {"old/conv1/weights": "new/conv1/weight"})


def test_loaded_values_keep_the_original_leaf_placement():
    params = {"w": jax.device_put(jnp.zeros((2, 2)), jax.devices()[-1])}
    out = ckpt.init_from_checkpoint({"w": np.ones((2, 2), np.float32)}, params, {"w": "w"})
    assert isinstance(out["w"], jax.Array) and out["w"].devices() == {jax.devices()[-1]}
    np.testing.assert_array_equal(out["w"], np.ones((2, 2)))


def test_list_variables_and_load_variable_read_a_weights_file(tmp_path):
    params = {"b": {"w": jnp.ones((2, 3), jnp.bfloat16)}, "a": jnp.arange(4)}
    path = tmp_path / "w.safetensors"
    sp.checkpoint.save(path, params)
    assert sp.checkpoint.list_variables(path) == [("a", (4,)), ("b/w", (2, 3))]
    value = sp.checkpoint.load_variable(path, "b/w")
    assert value.dtype == ml_dtypes.bfloat16 and value.shape == (2, 3)
    with pytest.raises(KeyError, match=r"no tensor named 'b/v' .* did you mean 'b/w'"):
        sp.checkpoint.load_variable(path, "b/v")
