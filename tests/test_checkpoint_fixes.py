"""Checkpoint fixes: files save() writes always load, long names, swapped arguments, TF files given to
the weights-file API (and back), custom EMA names, and training steps damaged in orbax's metadata."""

import json
import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import scoped_params as sp
from scoped_params import checkpoint as ckpt

# -- weights files -------------------------------------------------------------------------------

_NEEDLE = '"scoped_params.crc32'


def test_a_metadata_key_quoting_the_checksum_key_saves_a_file_that_loads(tmp_path):
    path = tmp_path / "m.safetensors"
    ckpt.save(path, {"w": np.ones(3, np.float32)})
    metadata = {f'note {_NEEDLE}': "x", "v": f'{_NEEDLE}":"', f'{_NEEDLE}":"': _NEEDLE}
    ckpt.save(path, {"w": np.full(3, 2.0, np.float32)}, metadata=metadata)
    assert ckpt.load(path)["w"].tolist() == [2.0, 2.0, 2.0]
    assert ckpt.read_metadata(path) == metadata
    data = bytearray(path.read_bytes())  # and the checksum still guards every byte
    data[-1] ^= 1
    (tmp_path / "bad.safetensors").write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointCorruptError, match="checksum mismatch"):
        ckpt.load(tmp_path / "bad.safetensors")


_TEXT = st.lists(st.sampled_from(list('"\\:,{}s') + [_NEEDLE, _NEEDLE + '":"', "\\" + _NEEDLE]),
                max_size=6).map("".join)


@settings(max_examples=60, deadline=None)
@given(metadata=st.dictionaries(_TEXT.filter(lambda k: not k.startswith("scoped_params.")), _TEXT,
                                max_size=4))
def test_any_metadata_round_trips_whatever_it_quotes(tmp_path_factory, metadata):
    path = tmp_path_factory.mktemp("meta") / "m.safetensors"
    ckpt.save(path, {"w": np.arange(3, dtype=np.int32)}, metadata=metadata)
    assert ckpt.read_metadata(path) == metadata
    assert ckpt.load(path)["w"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("name", ["x" * 240 + ".safetensors", "é" * 120 + ".st"],
                         ids=["ascii", "two-byte characters"])
def test_a_file_name_as_long_as_the_os_allows_saves_and_loads(tmp_path, name):
    path = tmp_path / name
    assert len(os.fsencode(name)) > 240
    with open(path, "wb"):  # the OS takes the name
        pass
    path.unlink()
    ckpt.save(path, {"w": np.ones(2, np.float32)})
    assert ckpt.load(path)["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_save_with_the_arguments_swapped_says_so_and_writes_nothing(tmp_path):
    params = {"dense": {"w": jnp.ones((3, 2))}}
    path = str(tmp_path / "model.safetensors")
    with pytest.raises(TypeError, match=r"(?s)^sp.checkpoint.save: the arguments look swapped: "
                                        r"path is a dict and params is the path '.*model.safetensors'"
                                        r".*fix: sp.checkpoint.save\(path, params\)"):
        ckpt.save(params, path)
    with pytest.raises(TypeError, match=r"(?s)sp.checkpoint.save: path must be a file path \(str "
                                        r"or os.PathLike\), got int.*fix: "):
        ckpt.save(3, params)
    assert list(tmp_path.iterdir()) == []


# -- TF checkpoints given to the weights-file API, and weights files given to load_tf1 ----------------

def _tf_checkpoint(tmp_path, version_name, name):
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.get_variable("w", [2, 2])
        with v1.Session() as s:
            s.run(v1.global_variables_initializer())
            return v1.train.Saver(write_version=getattr(v1.train.SaverDef, version_name)).save(
                s, str(tmp_path / name), write_meta_graph=False)


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_load_of_a_tf_checkpoint_file_says_to_use_load_tf1(tmp_path, version):
    prefix = _tf_checkpoint(tmp_path, version, "resnet_v1_50.ckpt")
    path = prefix if version == "V1" else prefix + ".index"
    for read in (ckpt.load, ckpt.read_metadata):
        with pytest.raises(ckpt.CheckpointCorruptError) as info:
            read(path)
        message = str(info.value)
        assert message.startswith(f"checkpoint file {path!r} is a TF 1.x checkpoint"), message
        assert f"fix: read it with sp.checkpoint.load_tf1({prefix!r})" in message, message
        assert "backup" not in message and info.value.filename == path
    assert ckpt.load_tf1(path)["w"].shape == (2, 2)  # the fix works


def test_load_tf1_of_a_weights_file_says_to_use_load(tmp_path):
    path = str(tmp_path / "params.safetensors")
    ckpt.save(path, {"w": np.zeros(2, np.float32)})
    with pytest.raises(ckpt.CheckpointNotFoundError) as info:
        ckpt.load_tf1(path)
    message = str(info.value)
    assert message.startswith(f"{path!r} is a weights file (safetensors), not a TF 1.x "
                              "checkpoint"), message
    assert f"fix: read it with sp.checkpoint.load({path!r})" in message, message
    assert info.value.filename == path


# -- moving averages under a custom name --------------------------------------------------------------

def _ema_checkpoint(tmp_path, ema_name, with_adam=False):
    """A checkpoint of net/w (raw [3, 3, 3], average [2, 2, 2]) under ExponentialMovingAverage(name=)."""
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("net"):
            w = v1.get_variable("w", [3], initializer=v1.constant_initializer(1.0))
        if with_adam:
            v1.train.AdamOptimizer(0.1).minimize(tf.reduce_sum(w))
        ema = v1.train.ExponentialMovingAverage(0.5, name=ema_name)
        update = ema.apply([w])
        with v1.Session() as s:
            s.run(v1.global_variables_initializer())
            s.run(v1.assign(w, [3.0, 3.0, 3.0]))
            s.run(update)
            return v1.train.Saver().save(s, str(tmp_path / "model.ckpt"), write_meta_graph=False)


def test_moving_averages_saved_under_a_custom_name_load_with_moving_average_name(tmp_path):
    prefix = _ema_checkpoint(tmp_path, "ema")
    averaged = ckpt.load_tf1(prefix, use_moving_averages=True, moving_average_name="ema")
    np.testing.assert_array_equal(averaged["net"]["w"], [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(ckpt.load_tf1(prefix)["net"]["w"], [3.0, 3.0, 3.0])


def test_without_the_custom_name_the_error_lists_the_slots_and_names_the_argument(tmp_path):
    prefix = _ema_checkpoint(tmp_path, "ema", with_adam=True)
    with pytest.raises(ValueError) as info:
        ckpt.load_tf1(prefix, use_moving_averages=True)
    message = str(info.value)
    assert message.startswith(f"load_tf1(use_moving_averages=True): {prefix!r} has no "
                              "'<variable>/ExponentialMovingAverage' entries"), message
    assert "'net/w/ema'" in message and "'net/w/Adam'" in message, message
    assert "fix: if 'ema' is the name= given to tf.train.ExponentialMovingAverage, pass " \
           "moving_average_name='ema'" in message, message
    assert "moving_average_name='Adam'" not in message, message


def test_moving_average_name_without_use_moving_averages_is_refused(tmp_path):
    prefix = _ema_checkpoint(tmp_path, "ema")
    with pytest.raises(ValueError, match=r"(?s)moving_average_name='ema' has no effect without "
                                         r"use_moving_averages=True.*fix: "):
        ckpt.load_tf1(prefix, moving_average_name="ema")


# -- training checkpoints --------------------------------------------------------------------------

_STATE = {"params": {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3)}, "step": 5}


def _two_steps(tmp_path, damage=None):
    pytest.importorskip("orbax.checkpoint")
    checkpointer = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    checkpointer.save(1, _STATE)
    checkpointer.save(2, _STATE)
    if damage is not None:
        rel, change = damage
        f = tmp_path / "run" / "2" / rel
        f.write_bytes(change(f.read_bytes()))
    return sp.checkpoint.TrainingCheckpointer(tmp_path / "run")  # a fresh process resuming


def _replace(old, new):
    def change(data):
        assert old in data
        return data.replace(old, new, 1)
    return change


_ORBAX_DAMAGE = {
    "emptied array metadata": ("default/array_metadatas/process_0", lambda b: b""),
    "array metadata key flipped": ("default/array_metadatas/process_0",
                                   _replace(b'"array_metadata": {', b'"`rray_metadata": {')),
    "array metadata field flipped": ("default/array_metadatas/process_0",
                                     _replace(b"write_shape", b"writx_shape")),
    "sharding type flipped": ("default/_sharding",
                              _replace(b"SingleDeviceSharding", b"RingleDeviceSharding")),
}


@pytest.mark.parametrize("with_target", [True, False], ids=["target", "no_target"])
@pytest.mark.parametrize("damage", list(_ORBAX_DAMAGE))
def test_a_step_damaged_in_orbax_metadata_is_corrupt_naming_an_earlier_step(tmp_path, damage,
                                                                            with_target):
    checkpointer = _two_steps(tmp_path, _ORBAX_DAMAGE[damage])
    target = _STATE if with_target else None
    if damage == "sharding type flipped" and with_target:  # the target's shardings are used
        chex.assert_trees_all_equal(checkpointer.restore(2, target=target), _STATE)
        return
    with pytest.raises(sp.checkpoint.CheckpointCorruptError) as info:
        checkpointer.restore(2, target=target)
    message = str(info.value)
    assert re.match(r"TrainingCheckpointer.restore: step 2 in '.*/run' is damaged", message), message
    again = "ckpt.restore(1, target=target)" if with_target else "ckpt.restore(1)"
    assert f"fix: restore an earlier step, e.g. {again}" in message, message
    assert "does not fit" not in message
    chex.assert_trees_all_equal(checkpointer.restore(1, target=_STATE), _STATE)  # the fix works


@pytest.mark.parametrize("content", [b"", b"garbage", b'{"item_handlers": {}}'])
def test_a_damaged_step_metadata_file_without_a_target_is_corrupt(tmp_path, content):
    checkpointer = _two_steps(tmp_path, ("_CHECKPOINT_METADATA", lambda b: content))
    with pytest.raises(sp.checkpoint.CheckpointCorruptError,
                       match=r"(?s)step 2 in .* is damaged.*fix: restore an earlier step, e.g. "
                             r"ckpt.restore\(1\)"):
        checkpointer.restore(2)
    chex.assert_trees_all_equal(checkpointer.restore(2, target=_STATE), _STATE)  # not read then


def test_a_step_saved_on_a_device_this_machine_lacks_is_a_mismatch_not_damage(tmp_path):
    checkpointer = _two_steps(tmp_path, ("default/_sharding", _replace(b"cpu:0", b"cpu:999")))
    with pytest.raises(sp.checkpoint.CheckpointMismatchError,
                       match=r"(?s)without a target.*Device cpu:999 was not found.*fix: pass a target"):
        checkpointer.restore(2)
    chex.assert_trees_all_equal(checkpointer.restore(2, target=_STATE), _STATE)


def test_errors_of_the_machine_rather_than_the_step_pass_through_restore(tmp_path, monkeypatch):
    checkpointer = _two_steps(tmp_path)
    for error in (PermissionError(13, "Permission denied"), KeyboardInterrupt()):
        def fail(*args, error=error, **kwargs):
            raise error
        monkeypatch.setattr(checkpointer._manager, "restore", fail)
        with pytest.raises(type(error)):
            checkpointer.restore(2, target=_STATE)


def test_a_mismatch_listing_a_prng_key_names_its_dtype(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    checkpointer = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    checkpointer.save(1, {"key": jax.random.key(0), "w": jnp.ones(2)})
    with pytest.raises(sp.checkpoint.CheckpointMismatchError,
                       match=r"asked \(target\): key key<fry>\[\], w float"):
        checkpointer.restore(1, target={"key": jax.random.key(0), "w": 1.0})


@pytest.mark.parametrize("leaf", [jnp.zeros((0, 3)), np.zeros(0, np.int32)], ids=["jax", "numpy"])
def test_a_zero_size_array_in_the_state_is_refused_naming_its_path_and_writes_nothing(tmp_path,
                                                                                    leaf):
    pytest.importorskip("orbax.checkpoint")
    checkpointer = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    state = {"params": {"w": jnp.ones(2), "e": leaf}, "step": 1}
    with pytest.raises(sp.checkpoint.UnsavableLeafError) as info:
        checkpointer.save(1, state)
    message = str(info.value)
    shape = f"{np.dtype(leaf.dtype).name}[{','.join(map(str, leaf.shape))}]"
    assert message.startswith(f"TrainingCheckpointer.save: the state's leaf 'params/e' is a "
                              f"zero-size array ({shape}); orbax cannot save zero-size arrays, so "
                              f"nothing was written for step 1 in {str(tmp_path / 'run')!r}."), message
    assert "fix: " in message and "sp.checkpoint.save" in message, message
    assert isinstance(info.value, ValueError)
    assert list((tmp_path / "run").iterdir()) == []
    checkpointer.save(1, {"params": {"w": jnp.ones(2)}, "step": 1})  # and the directory is usable
    assert checkpointer.all_steps() == [1]


def test_a_step_whose_metadata_names_an_unknown_type_is_corrupt_without_orbax_warnings(tmp_path):
    import gc
    import warnings

    checkpointer = _two_steps(tmp_path, ("default/_METADATA", _replace(b'"scalar"', b'"scamar"')))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(sp.checkpoint.CheckpointCorruptError,
                           match=r"(?s)step 2 .* is damaged .*its metadata cannot be read: "
                                 r"ValueError: Unknown type: \"scamar\""):
            checkpointer.restore(2)
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


# -- init_from_checkpoint into ShapeDtypeStructs ---------------------------------------------------

@pytest.fixture(scope="module")
def mesh():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    return jax.make_mesh((2, 4), ("batch", "model"))


def _encoder(x):
    from jax.sharding import PartitionSpec as P
    with sp.scope("encoder"):
        return x @ sp.get_param("w", (x.shape[-1], 8), sharding=P("batch", "model"))


_ENCODER_W = np.arange(32, dtype=np.float32).reshape(4, 8)


@pytest.mark.parametrize("build", ["ShapeDtypeStruct", "abstract_params"])
def test_init_from_checkpoint_places_shape_dtype_struct_leaves_per_their_sharding(
        tmp_path, mesh, build):
    from jax.sharding import NamedSharding, PartitionSpec as P
    ckpt.save(tmp_path / "pre.safetensors", {"enc": {"w": _ENCODER_W}})
    sharding = NamedSharding(mesh, P("batch", "model"))
    if build == "ShapeDtypeStruct":
        params = {"encoder": {"w": jax.ShapeDtypeStruct((4, 8), jnp.float32, sharding=sharding)}}
    else:
        params = sp.sharding.abstract_params(sp.transform(_encoder), mesh,
                                             jax.ShapeDtypeStruct((2, 4), jnp.float32))
    filled = ckpt.init_from_checkpoint(tmp_path / "pre.safetensors", params,
                                       {"enc/": "encoder/"})
    w = filled["encoder"]["w"]
    assert isinstance(w, jax.Array) and w.sharding == sharding
    assert len(w.addressable_shards) == 8 and w.addressable_shards[0].data.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(w), _ENCODER_W)


def test_init_from_checkpoint_places_leaves_sharded_on_an_abstract_mesh_on_the_mesh_set(
        tmp_path, mesh):
    from jax.sharding import NamedSharding, PartitionSpec as P
    ckpt.save(tmp_path / "pre.safetensors", {"enc": {"w": _ENCODER_W}})
    params = sp.sharding.abstract_params(sp.transform(_encoder), mesh.abstract_mesh,
                                         jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert isinstance(params["encoder"]["w"].sharding.mesh, jax.sharding.AbstractMesh)
    with pytest.raises(ckpt.CheckpointMismatchError) as e:
        ckpt.init_from_checkpoint(tmp_path / "pre.safetensors", params, {"enc/": "encoder/"})
    message = str(e.value)
    assert re.search(r"(?s)could not fill 1 entry .*'encoder/w': sharded on an AbstractMesh "
                     r"\{'batch': 2, 'model': 4\} \(axis names and sizes, no devices\), and no "
                     r"mesh is set with jax.set_mesh to place it on.*\n  fix: .*with "
                     r"jax.set_mesh\(mesh\):", message), message
    with jax.set_mesh(mesh):  # the fix the message gives works
        filled = ckpt.init_from_checkpoint(tmp_path / "pre.safetensors", params,
                                           {"enc/": "encoder/"})
    w = filled["encoder"]["w"]
    assert w.sharding == NamedSharding(mesh, P("batch", "model"))
    np.testing.assert_array_equal(np.asarray(w), _ENCODER_W)


# --- paths that are no weights file: a FIFO, a device, a file in the directory path ---------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_given_as_a_checkpoint_is_refused_at_once_not_read_forever(tmp_path):
    fifo = tmp_path / "params.safetensors"
    os.mkfifo(fifo)  # opening it to read would wait for a writer that never comes
    for read in (ckpt.load, ckpt.list_variables):
        with pytest.raises(sp.checkpoint.CheckpointError,
                           match=r"cannot read checkpoint file '.*params\.safetensors': it is not "
                                 r"a regular file \(a pipe, socket or device\).*\n  fix: ") as e:
            read(fifo)
        assert e.value.filename == str(fifo)


def test_a_path_through_a_file_is_a_checkpoint_error_on_load_and_save(tmp_path):
    (tmp_path / "afile").write_bytes(b"x")
    path = tmp_path / "afile" / "params.safetensors"
    with pytest.raises(sp.checkpoint.CheckpointError,
                       match=r"a component of its directory path is a file, not a directory"):
        ckpt.load(path)
    with pytest.raises(sp.checkpoint.CheckpointNotFoundError,
                       match=r"'.*afile' is a file, not a directory\.\n  fix: "):
        ckpt.save(path, {"w": np.ones(2, np.float32)})


def test_a_header_nested_thousands_deep_is_corrupt_not_a_recursion_error(tmp_path):
    header = b'{"__metadata__":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    for read in (ckpt.load, ckpt.list_variables, ckpt.read_metadata):
        with pytest.raises(sp.checkpoint.CheckpointCorruptError, match=r"nests JSON .* deep"):
            read(path)


def test_save_into_a_directory_it_cannot_write_names_the_users_path_not_a_temporary_file(
        tmp_path, monkeypatch):
    def refuse(*args, **kwargs):  # what a read-only directory gives (the tests may run as root)
        raise PermissionError(13, "Permission denied", os.path.join(kwargs["dir"], ".x.tmp"))

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", refuse)
    path = tmp_path / "params.safetensors"
    with pytest.raises(sp.checkpoint.CheckpointError) as e:
        ckpt.save(path, {"w": np.ones(2, np.float32)})
    message = str(e.value)
    assert re.match(r"cannot save checkpoint '.*params\.safetensors': cannot create a file in "
                    r"directory '.*' \(Permission denied, errno 13\); nothing was written\.\n"
                    r"  fix: save into a directory you can write to", message), message
    assert ".tmp" not in message and not path.exists()
    # a CheckpointWriteError: still an OSError with the refusal's errno (except OSError catches it)
    assert isinstance(e.value, sp.checkpoint.CheckpointWriteError) and e.value.errno == 13
    with pytest.raises(sp.checkpoint.CheckpointNotFoundError, match=r"the path is empty"):
        ckpt.save("", {"w": np.ones(2, np.float32)})


# -- typed keys, deleted arrays, foreign names, odd file names, bad sources ------------------------


def test_init_from_checkpoint_copies_a_typed_key_onto_a_key_and_counts_a_float_for_a_key():
    params = {"rng": jax.random.key(0), "w": np.zeros(2, np.float32)}
    filled = ckpt.init_from_checkpoint({"rng": jax.random.key(1)}, params, {"rng": "rng"})
    chex.assert_trees_all_equal(jax.random.key_data(filled["rng"]), jax.random.key_data(jax.random.key(1)))
    with pytest.raises(ckpt.CheckpointMismatchError, match=re.escape(
            "'rng': dtype key<fry> in params, but 'rng' has dtype float32 in the given tree")):
        ckpt.init_from_checkpoint({"rng": np.zeros((), np.float32)}, params, {"rng": "rng"})


def test_saving_a_deleted_array_names_it_and_says_donation_deletes_buffers(tmp_path):
    w = jnp.ones(3)
    w.delete()  # what a jitted step with donate_argnums does to the state passed in
    state = {"params": {"dense": {"w": w}}, "step": 1}
    for save, where in ((lambda: ckpt.save(tmp_path / "p.safetensors", state), "'params/dense/w' is"),
                        (lambda: ckpt.TrainingCheckpointer(tmp_path / "run").save(1, state),
                         "the state's leaf 'params/dense/w' is")):
        with pytest.raises(ckpt.UnsavableLeafError) as info:
            save()
        message = str(info.value)
        assert f"{where} a deleted array (float32[3])" in message, message
        assert "\n  fix: save the state the step returned" in message and "donate_argnums" in message
    assert not (tmp_path / "p.safetensors").exists()
    assert ckpt.TrainingCheckpointer(tmp_path / "run").all_steps() == []


def test_a_valid_file_of_another_tool_whose_names_are_no_tree_is_read_flat(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = str(tmp_path / "foreign.safetensors")
    values = {"a": np.ones(2, np.float32), "a/b": np.arange(3, dtype=np.int32)}
    safetensors_numpy.save_file(values, path)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(path)
    assert not isinstance(info.value, ckpt.CheckpointCorruptError)
    message = str(info.value)
    assert message.startswith(
        f"checkpoint file {path!r} is valid, but its names do not form a nested tree: 'a"), message
    assert message.endswith(
        f"cannot be placed: it is a scope holding other entries, or given twice.\n"
        f"  fix: read it flat, as {{full name: array}}: sp.checkpoint.load({path!r}, flat=True).") or \
        message.endswith(f"'a' is a leaf, not a scope.\n  fix: read it flat, as {{full name: array}}: "
                         f"sp.checkpoint.load({path!r}, flat=True)."), message
    chex.assert_trees_all_equal(ckpt.load(path, flat=True), values)
    tree = {"enc": {"w": np.ones(2, np.float32)}}
    ckpt.save(tmp_path / "ours.safetensors", tree)
    chex.assert_trees_all_equal(ckpt.load(tmp_path / "ours.safetensors", flat=True), sp.flatten(tree))


@pytest.mark.parametrize("name", ["encoder.index", "encoder.meta", "encoder.data-00000-of-00001"])
def test_a_weights_file_named_as_tf_names_its_files_is_read_as_a_weights_file_everywhere(tmp_path, name):
    path = tmp_path / name
    tree = {"enc": {"w": np.ones(2, np.float32)}}
    ckpt.save(path, tree)
    assert not ckpt.is_tf1_source(path)
    assert ckpt.list_variables(path) == [("enc/w", (2,))]
    np.testing.assert_array_equal(ckpt.load_variable(path, "enc/w"), tree["enc"]["w"])
    filled = ckpt.init_from_checkpoint(path, {"enc": {"w": np.zeros(2, np.float32)}}, {"enc/": "enc/"})
    chex.assert_trees_all_equal(filled, tree)


@pytest.mark.parametrize("source", [None, 3, ["a"]])
def test_init_from_checkpoint_given_no_path_and_no_tree_as_its_source_says_what_it_takes(source):
    with pytest.raises(sp.ParamsTypeError) as info:
        ckpt.init_from_checkpoint(source, {"a": np.zeros(2, np.float32)}, {"a": "a"})
    assert str(info.value).startswith(
        "init_from_checkpoint: the source must be a checkpoint's path (a weights file or a TF 1.x "
        "checkpoint) or a tree of arrays, got "), info.value
    pair = ({"a": np.ones(2, np.float32)}, {})
    with pytest.raises(sp.ParamsTypeError, match=re.escape(
            "got a tuple of 2 dicts, as transform_with_state's init returns (params, state).\n"
            "  fix: pass the params alone (the first of the pair), or the checkpoint's path.")):
        ckpt.init_from_checkpoint(pair, {"a": np.zeros(2, np.float32)}, {"a": "a"})


def test_init_from_checkpoint_names_tfs_underscore_1_key_of_a_case_clashing_variable():
    # TF 1.x: a 'dense' layer after a 'Dense' one keeps the store name 'dense/kernel', but its op
    # (the Saver's key) is 'dense/kernel_1'; the error now says so, with the map entry.
    def fn(x):
        sp.layers.dense(x, 4, name="Dense")
        return sp.layers.dense(x, 4)

    params = sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 3)))
    source = {"Dense/kernel": np.ones((3, 4), np.float32), "Dense/bias": np.ones(4, np.float32),
              "dense/kernel_1": np.full((3, 4), 2.0, np.float32),
              "dense/bias_1": np.full(4, 2.0, np.float32)}
    with pytest.raises(ckpt.CheckpointMismatchError,
                       match=r"'dense/kernel': 'dense/kernel' is not in .*TF's Saver names a variable "
                             r"'dense/kernel_1' when its name is, ignoring case, that of an earlier "
                             r"op or name scope .*map it, \{'dense/kernel_1': 'dense/kernel'\}"):
        ckpt.init_from_checkpoint(source, params, {"/": "/"})
    loaded = ckpt.init_from_checkpoint(source, params, {"/": "/", "dense/kernel_1": "dense/kernel",
                                                        "dense/bias_1": "dense/bias"})
    np.testing.assert_array_equal(loaded["dense"]["kernel"], 2.0)
