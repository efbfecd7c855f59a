"""Edge cases of dtypes and checkpoint files: training-checkpoint leaves whose orbax names collide,
initializers returning PRNG keys, safetensors dtypes this reader does not hold, and TF dtypes with no
NumPy equivalent."""

import json
import logging
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp
from scoped_params import checkpoint as ckpt

KEY = jax.random.key(0)

# -- TrainingCheckpointer: leaves orbax would store under one name --------------------------------


def _dotted_and_nested(wide: bool):
    def model(x):
        with sp.scope("block.1"):
            a = sp.get_param("w", (2,), init=sp.initializers.constant(1.0))
        with sp.scope("block"), sp.scope("1"):
            b = sp.get_param("w", (3,) if wide else (2,), init=sp.initializers.constant(2.0))
        return x * a.sum() * b.sum()

    return sp.transform(model).init(KEY, 1.0)


@pytest.mark.parametrize("wide", [False, True], ids=["same_shape", "other_shape"])
def test_training_save_refuses_leaves_whose_names_differ_only_by_dot_and_slash(tmp_path, wide):
    # Before: orbax stored both 'block.1/w' and 'block/1/w' as 'block.1.w': with equal shapes one
    # value overwrote the other and restore called the step damaged; with other shapes tensorstore
    # raised its internal FAILED_PRECONDITION.
    pytest.importorskip("orbax.checkpoint")
    logging.getLogger("absl").setLevel(logging.ERROR)
    params = _dotted_and_nested(wide)
    assert set(sp.flatten(params)) == {"block.1/w", "block/1/w"}
    ck = ckpt.TrainingCheckpointer(str(tmp_path / "run"))
    with pytest.raises(ckpt.UnsavableLeafError) as info:
        ck.save(1, {"params": params})
    msg = str(info.value)
    assert msg.startswith("TrainingCheckpointer.save: the state's leaves 'params/block.1/w' and "
                          "'params/block/1/w' would both be stored as 'params.block.1.w'")
    assert "nothing was written for step 1" in msg
    assert "\n  fix: " in msg and "sp.checkpoint.save" in msg
    assert ck.all_steps() == []
    assert not (tmp_path / "run" / "1").exists()
    # Renamed apart, the state saves and restores exactly.
    renamed = {"params": {"block_1": params["block.1"], "block": params["block"]}}
    ck.save(1, renamed)
    back = ck.restore(1)
    for name, value in sp.flatten(renamed).items():
        np.testing.assert_array_equal(sp.flatten(back)[name], value)


def test_training_save_refuses_a_list_index_colliding_with_a_dotted_key(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    logging.getLogger("absl").setLevel(logging.ERROR)
    ck = ckpt.TrainingCheckpointer(str(tmp_path / "run"))
    with pytest.raises(ckpt.UnsavableLeafError, match=r"'opt\.0' and 'opt/0' would both be stored "
                                                      r"as 'opt\.0'"):
        ck.save(3, {"opt": [jnp.ones(2)], "opt.0": jnp.zeros(2)})
    assert ck.all_steps() == []


def test_training_save_keeps_dotted_scope_names_that_do_not_collide(tmp_path):
    pytest.importorskip("orbax.checkpoint")
    logging.getLogger("absl").setLevel(logging.ERROR)
    state = {"params": {"block.1": {"w": jnp.arange(2.0)}, "block": {"2": {"w": jnp.ones(2)}}}}
    ck = ckpt.TrainingCheckpointer(str(tmp_path / "run"))
    ck.save(1, state)
    back = ck.restore(1)
    np.testing.assert_array_equal(back["params"]["block.1"]["w"], np.arange(2.0))
    np.testing.assert_array_equal(back["params"]["block"]["2"]["w"], np.ones(2))


# -- an initializer returning a typed PRNG key ----------------------------------------------------


def test_an_initializer_returning_a_typed_prng_key_is_an_initializer_error_with_the_fix():
    # Before: NotImplementedError "Cannot call abstract method astype" from casting the key.
    def model(x):
        sp.get_state("rng", (), init=lambda key, shape, dtype: jax.random.fold_in(key, 7))
        return x

    with pytest.raises(sp.InitializerError) as info:
        sp.transform_with_state(model).init(KEY, jnp.ones(2))
    msg = str(info.value)
    assert msg.startswith("The initializer of 'rng' (a lambda) returned a typed PRNG key (key<fry>")
    assert "parameters and state hold arrays of numbers" in msg
    assert "\n  asked: shape (), dtype float32, created at " in msg
    assert ("\n  fix: create it with shape (2,) and dtype=jnp.uint32 and return the key's data, "
            "jax.random.key_data(key) (uint32[2]; ") in msg
    assert "jax.random.wrap_key_data(sp.get_state('rng'" in msg
    # Following the fix works and keeps every bit of the key data.
    fixed = sp.transform_with_state(lambda x: jax.random.wrap_key_data(sp.get_state(
        "rng", (2,), dtype=jnp.uint32,
        init=lambda key, shape, dtype: jax.random.key_data(jax.random.fold_in(key, 7)))))
    _, state = fixed.init(KEY, jnp.ones(2))
    assert state["rng"].dtype == jnp.uint32 and state["rng"].shape == (2,)


def test_an_initializer_returning_keys_for_a_group_of_same_shape_parameters_is_the_same_error():
    # Parameters sharing an initializer and shape are drawn by one vmapped call.
    init = lambda key, shape, dtype: jax.random.split(key, shape[0])  # noqa: E731

    def model(x):
        sp.get_state("a", (3,), init=init)
        sp.get_state("b", (3,), init=init)
        return x

    with pytest.raises(sp.InitializerError, match=r"^The initializer of '[ab]' .*returned a typed "
                                                  r"PRNG key \(key<fry>"):
        sp.transform_with_state(model).init(KEY, jnp.ones(2))


def test_an_initializer_returning_a_key_of_the_wrong_shape_is_told_it_is_a_key():
    init = lambda key, shape, dtype: jax.random.split(key, 4)  # noqa: E731
    with pytest.raises(sp.InitializerError, match=r"returned a typed PRNG key (.|\n)*fix: create "
                                                  r"it with shape \(2,\) and dtype=jnp\.uint32"):
        sp.transform_with_state(lambda x: sp.get_state("rng", (), init=init)).init(KEY, 1.0)


# -- safetensors dtypes this reader does not hold -------------------------------------------------


def _foreign_file(tmp_path, code, shape, data: bytes):
    header = json.dumps({"w": {"dtype": code, "shape": shape, "data_offsets": [0, len(data)]},
                         "ok": {"dtype": "F32", "shape": [1],
                                "data_offsets": [len(data), len(data) + 4]}}).encode()
    path = tmp_path / f"{code}.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data + np.float32(1).tobytes())
    return path


@pytest.mark.parametrize("code,shape,data", [
    ("F4", [2], b"\x21"), ("F6_E2M3", [4], b"\x00\x00\x00"), ("F6_E3M2", [4], b"\x00\x00\x00")])
def test_a_foreign_safetensors_file_of_a_sub_byte_float_dtype_is_unsupported_not_corrupt(
        tmp_path, code, shape, data):
    # Before: CheckpointCorruptError "... the file is damaged ...; restore it from a backup".
    safetensors = pytest.importorskip("safetensors")
    path = _foreign_file(tmp_path, code, shape, data)
    assert {n: v["dtype"] for n, v in safetensors.deserialize(path.read_bytes())}["w"] == code
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(path)
    assert not isinstance(info.value, ckpt.CheckpointCorruptError)
    assert info.value.filename == str(path)
    msg = str(info.value)
    assert msg.startswith(f"checkpoint file {str(path)!r} cannot be read: tensor 'w' has "
                          f"safetensors dtype {code}")
    assert "which this reader does not support (the file is valid;" in msg
    assert "damaged" not in msg and "backup" not in msg
    assert "\n  fix: " in msg


def test_the_inspect_command_reports_an_unsupported_dtype_without_a_traceback(tmp_path, capsys):
    pytest.importorskip("safetensors")
    from scoped_params.__main__ import main

    path = _foreign_file(tmp_path, "F4", [2], b"\x21")
    code = main(["inspect", str(path)])
    err = capsys.readouterr().err
    assert code != 0 and "safetensors dtype F4" in err and "Traceback" not in err
    assert "does not support" in err


# -- TF dtypes with no NumPy equivalent -----------------------------------------------------------


class _NoNumpyDType:
    """Like TF's tf.resource / tf.variant: an as_numpy_dtype property that raises KeyError."""

    name = "resource"

    @property
    def as_numpy_dtype(self):
        raise KeyError(20)

    def __repr__(self):
        return "tf.resource"


def test_a_dtype_whose_as_numpy_dtype_raises_is_not_a_dtype_jax_has_for_get_param_and_scope():
    # Before: the bare KeyError TF's property raised.
    dtype = _NoNumpyDType()
    with pytest.raises(TypeError, match=r"^dtype=tf\.resource of 'w' is not a dtype JAX has\.\n"
                                        r"  asked: .*\n  fix: pass a NumPy/JAX dtype"):
        sp.transform(lambda: sp.get_param("w", (2,), dtype=dtype)).init(KEY)

    def scoped():
        with sp.scope("s", dtype=dtype):
            return sp.get_param("w", (2,))

    with pytest.raises(TypeError, match=r"^dtype=tf\.resource of scope 's' is not a dtype JAX has"):
        sp.transform(scoped).init(KEY)


@pytest.mark.parametrize("name", ["resource", "variant"])
def test_tf_resource_and_variant_dtypes_are_not_a_dtype_jax_has(name):
    tf = pytest.importorskip("tensorflow")
    dtype = getattr(tf, name)
    with pytest.raises(TypeError, match=r"of 'w' is not a dtype JAX has\.\n  asked: "):
        sp.transform(lambda: sp.get_param("w", (2,), dtype=dtype)).init(KEY)

    def scoped():
        with sp.scope("s", dtype=dtype):
            return sp.get_param("w", (2,))

    with pytest.raises(TypeError, match=r"of scope 's' is not a dtype JAX has"):
        sp.transform(scoped).init(KEY)
    # tf.string, the case that already worked, says the same.
    with pytest.raises(TypeError, match=r"of 'w' is not a dtype JAX has\.\n  asked: "):
        sp.transform(lambda: sp.get_param("w", (2,), dtype=tf.string)).init(KEY)
