"""Training state (params + optax state + step) saved with sp.checkpoint.TrainingCheckpointer: a run
interrupted and resumed from its checkpoint ends exactly where an uninterrupted run does."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoped_params as sp
from _scripts import load_example

CheckpointError, StepOrderError = sp.checkpoint.CheckpointError, sp.checkpoint.StepOrderError

pytest.importorskip("orbax.checkpoint")
pytest.importorskip("sklearn")

STEPS = 24


class Interrupted(Exception):
    """Stands for a pre-empted or killed training job."""


@pytest.fixture(scope="module")
def digits():
    return load_example("train_digits")


@pytest.fixture(scope="module")
def data(digits):
    return digits.load_data(0)


@pytest.fixture(scope="module")
def straight(digits, data):
    """STEPS steps in one go, recording every loss."""
    losses = []
    state, acc = digits.train(STEPS, batch_size=32, data=data, progress=False,
                              on_step=lambda s, loss: losses.append(float(loss)))
    return state, acc, losses


def _target(digits, data):
    model = sp.transform(lambda x, training=False: digits.cnn(x, training))
    optimizer = digits.make_optimizer(2e-3, STEPS)
    return jax.eval_shape(lambda k: digits.init_state(k, model, optimizer, data.x_train[:1]),
                          jax.random.key(0))


def test_interrupted_and_restored_training_equals_training_straight_through(
        digits, data, straight, tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run", max_to_keep=3)
    losses = []

    def save_then_die_at_step_17(state, loss):
        losses.append(float(loss))
        step = int(state.step)
        if step % 5 == 0:
            ckpt.save(step, state)
        if step == 17:
            raise Interrupted

    with pytest.raises(Interrupted):
        digits.train(STEPS, batch_size=32, data=data, progress=False,
                     on_step=save_then_die_at_step_17)
    assert ckpt.latest_step() == 15 and ckpt.all_steps() == [5, 10, 15]  # last 3 kept

    restored = ckpt.restore(target=_target(digits, data))  # abstract target: nothing allocated
    assert isinstance(restored, digits.TrainState)
    assert isinstance(restored.opt_state[0], type(straight[0].opt_state[0]))  # optax namedtuples
    assert int(restored.step) == 15
    resumed_losses = []
    final, acc = digits.train(STEPS, batch_size=32, data=data, progress=False, state=restored,
                              on_step=lambda s, loss: resumed_losses.append(float(loss)))

    state, straight_acc, straight_losses = straight
    chex.assert_trees_all_equal(final.params, state.params)  # bit-identical
    chex.assert_trees_all_equal(final.opt_state, state.opt_state)
    assert int(final.step) == STEPS and acc == straight_acc
    assert losses[:15] + resumed_losses == straight_losses  # steps 16-17 were lost and redone
    ckpt.close()


def test_the_example_resumes_from_its_ckpt_dir(digits, straight, tmp_path, monkeypatch):
    argv = ["--steps", str(STEPS), "--batch-size", "32", "--no-progress",
            "--ckpt-dir", str(tmp_path / "run"), "--save-every", "10"]
    real_batch_indices = digits.batch_indices

    def crash_at_step_13(step, *args):
        if step == 13:
            raise Interrupted
        return real_batch_indices(step, *args)

    monkeypatch.setattr(digits, "batch_indices", crash_at_step_13)
    with pytest.raises(Interrupted):
        digits.main(argv)
    monkeypatch.undo()
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    assert ckpt.latest_step() == 10

    acc = digits.main(argv)  # the same command again: resumes at 10, saves 20 and 24

    assert ckpt.all_steps() == [10, 20, STEPS]
    final = ckpt.restore(target=straight[0])
    chex.assert_trees_all_equal(final, straight[0])
    assert acc == straight[1]


def test_restore_reports_missing_steps_and_directories(tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "empty")
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError, match=r"(?s)no training checkpoint in .*empty"):
        ckpt.restore()
    state = {"params": {"w": jnp.ones(3)}, "opt_state": optax.sgd(0.1).init({"w": jnp.ones(3)}),
             "step": jnp.int32(1)}
    ckpt.save(1, state)
    with pytest.raises(FileNotFoundError, match=r"step 7 .*steps on disk: \[1\]"):
        ckpt.restore(7)
    restored = ckpt.restore(1, target=state)
    chex.assert_trees_all_equal(restored, state)
    np.testing.assert_array_equal(ckpt.restore(1)["params"]["w"], np.ones(3))


# --- step semantics: a save writes the step or raises ------------------------------------------------


def _w(ckpt, step):
    return float(ckpt.restore(step)["w"][0])


def _saved(tmp_path, steps, **kwargs):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run", **kwargs)
    for s in steps:
        ckpt.save(s, {"w": jnp.full(2, float(s))})
    return ckpt


@pytest.mark.parametrize("step", [20, 25, 30, 5])
def test_saving_a_step_not_after_the_newest_raises_and_writes_nothing(tmp_path, step):
    ckpt = _saved(tmp_path, (10, 20, 30), max_to_keep=None)
    ckpt.restore(10)
    with pytest.raises(StepOrderError, match=rf"(?s)step {step} is not after the newest step on "
                       r"disk, 30 .*\[10, 20, 30\].*nothing was written.*fix: .*delete_steps_after"):
        ckpt.save(step, {"w": jnp.full(2, -1.0)})
    assert ckpt.all_steps() == [10, 20, 30] and ckpt.latest_step() == 30
    assert [_w(ckpt, s) for s in (10, 20, 30)] == [10.0, 20.0, 30.0]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["10", "20", "30"]


def test_the_order_error_names_the_rollback_that_allows_the_save(tmp_path):
    ckpt = _saved(tmp_path, (10, 20, 30), max_to_keep=None)
    with pytest.raises(StepOrderError, match=r"delete_steps_after\(20\) keeps \[10, 20\] and "
                       r"deletes \[30\]"):
        ckpt.save(25, {"w": jnp.zeros(2)})
    with pytest.raises(StepOrderError, match=r"delete_steps_after\(9\) deletes every step, "
                       r"\[10, 20, 30\]; or save the new run in another directory"):
        ckpt.save(10, {"w": jnp.zeros(2)})
    ckpt.delete_steps_after(0)
    ckpt.save(0, {"w": jnp.zeros(2)})
    with pytest.raises(StepOrderError, match=r"\n  fix: save the new run in another directory"):
        ckpt.save(0, {"w": jnp.zeros(2)})


def test_rolling_back_deletes_the_newer_steps_so_the_new_run_is_the_latest(tmp_path):
    ckpt = _saved(tmp_path, (10, 20, 30), max_to_keep=3)
    assert _w(ckpt, None) == 30.0
    assert ckpt.delete_steps_after(10) == [20, 30]
    ckpt.save(20, {"w": jnp.full(2, -20.0)})
    ckpt.save(25, {"w": jnp.full(2, -25.0)})
    assert ckpt.all_steps() == [10, 20, 25] and ckpt.latest_step() == 25
    assert _w(ckpt, 20) == -20.0 and _w(ckpt, None) == -25.0  # a resume continues the new run
    assert ckpt.delete_steps_after(25) == [] and ckpt.delete_steps_after(7) == [10, 20, 25]
    assert ckpt.all_steps() == [] and ckpt.latest_step() is None


def test_a_second_checkpointer_on_the_directory_cannot_overwrite_a_step(tmp_path):
    a = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    b = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    a.save(1, {"w": jnp.ones(2)})
    a.save(2, {"w": jnp.full(2, 2.0)})
    with pytest.raises(StepOrderError, match=r"step 2 is not after the newest step on disk, 2"):
        b.save(2, {"w": jnp.full(2, 99.0)})
    b.save(3, {"w": jnp.full(2, 3.0)})
    with pytest.raises(StepOrderError, match=r"step 3 is not after the newest step on disk, 3"):
        a.save(3, {"w": jnp.full(2, 7.0)})
    assert a.all_steps() == b.all_steps() == [1, 2, 3]
    assert [_w(a, s) for s in (1, 2, 3)] == [1.0, 2.0, 3.0]


def test_max_to_keep_holds_across_checkpointers_on_one_directory(tmp_path):
    a = sp.checkpoint.TrainingCheckpointer(tmp_path / "run", max_to_keep=2)
    b = sp.checkpoint.TrainingCheckpointer(tmp_path / "run", max_to_keep=2)
    for s in (1, 2, 3):
        a.save(s, {"w": jnp.ones(2)})
    b.save(4, {"w": jnp.ones(2)})
    a.save(5, {"w": jnp.ones(2)})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["4", "5"]
    assert a.all_steps() == b.all_steps() == [4, 5]


def test_max_to_keep_must_be_a_positive_int_or_none(tmp_path):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"max_to_keep is .*\n  fix: pass a positive int"):
            sp.checkpoint.TrainingCheckpointer(tmp_path / "run", max_to_keep=bad)


@pytest.mark.parametrize("step, error, message", [
    (31.9, TypeError, r"31.9 \(float\), not an integer; steps are never rounded"),
    (np.float32(3.0), TypeError, r"not an integer"),
    ("3", TypeError, r"not an integer"),
    (True, TypeError, r"True, a bool"),
    (jnp.array(True), TypeError, r"a bool"),
    (-1, ValueError, r"-1; steps are non-negative"),
])
def test_steps_must_be_non_negative_integers_and_are_never_truncated(tmp_path, step, error, message):
    ckpt = _saved(tmp_path, (1,))
    with pytest.raises(error, match=rf"(?s)save: step is .*{message}.*\n  fix: "):
        ckpt.save(step, {"w": jnp.zeros(2)})
    with pytest.raises(error, match=rf"(?s)restore: step is .*{message}.*\n  fix: "):
        ckpt.restore(step)
    assert ckpt.all_steps() == [1]


def test_integer_scalars_of_numpy_and_jax_are_steps(tmp_path):
    ckpt = _saved(tmp_path, (np.int64(3), jnp.int32(4), jnp.array(5)), max_to_keep=None)
    assert ckpt.all_steps() == [3, 4, 5]
    assert _w(ckpt, np.int32(4)) == 4.0


def test_an_incomplete_step_directory_is_not_a_step(tmp_path):
    ckpt = _saved(tmp_path, (1, 2), max_to_keep=2)
    stray = tmp_path / "run" / "99"
    stray.mkdir()  # no _CHECKPOINT_METADATA / commit_success.txt: not written to completion
    assert ckpt.latest_step() == 2 and ckpt.all_steps() == [1, 2]
    assert _w(ckpt, None) == 2.0
    with pytest.raises(FileNotFoundError, match=r"(?s)step 99, .*99'.* is incomplete.*"
                       r"fix: .*shutil.rmtree"):
        ckpt.restore(99)
    with pytest.raises(StepOrderError, match=r"(?s)step 99, .* is incomplete.*fix: "):
        ckpt.save(99, {"w": jnp.zeros(2)})
    ckpt.save(3, {"w": jnp.full(2, 3.0)})  # the stray directory is neither counted nor pruned
    assert ckpt.all_steps() == [2, 3] and stray.is_dir()


def test_only_incomplete_step_directories_mean_no_checkpoint(tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    (tmp_path / "run" / "7").mkdir()
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError, match=r"no training checkpoint in .*incomplete step "
                       r"directories, not restorable: \[7\]"):
        ckpt.restore()


def test_a_save_orbax_does_not_perform_raises(tmp_path, monkeypatch):
    ckpt = _saved(tmp_path, (1,))
    monkeypatch.setattr(ckpt._manager, "save", lambda *args, **kwargs: False)
    with pytest.raises(CheckpointError, match=r"(?s)orbax did not write step 2 .*fix: "):
        ckpt.save(2, {"w": jnp.zeros(2)})
    assert ckpt.all_steps() == [1]


# --- errors: a target of another structure, a file as the directory, unsavable leaves --------------


def test_restore_into_a_target_of_another_structure_lists_the_differences_and_a_fix_that_works(
        tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    params = {"w": jnp.ones((2, 2))}
    ckpt.save(1, {"params": params, "step": 1})
    with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
        ckpt.restore(target={"params": params, "extra": jnp.zeros(3)})
    message = str(e.value)
    assert "partial_restore" not in message and "Source:" not in message
    assert str(tmp_path / "run") in message and "step 1" in message
    assert "in the checkpoint, not in target: ['step']" in message
    assert "in target, not in the checkpoint: ['extra']" in message
    assert "asked (target): extra float32[3], params/w float32[2,2]" in message
    assert "found (step 1): params/w float32[2,2], step int64[]" in message
    assert "fix: " in message and "ckpt.restore(1)['params']" in message
    assert isinstance(e.value, ValueError)  # as before
    with pytest.raises(sp.checkpoint.CheckpointMismatchError,
                       match=r"(?s)shapes differ: params/w: target \(3, 2\), checkpoint \(2, 2\)"
                             r".*fix: "):
        ckpt.restore(target={"params": {"w": jnp.ones((3, 2))}, "step": 1})
    assert ckpt.restore(1)["params"]["w"].shape == (2, 2)  # the fix the message gives works


def test_a_file_given_as_the_directory_is_refused_at_construction(tmp_path):
    path = tmp_path / "weights.safetensors"
    path.write_bytes(b"x")
    for given in (path, path / "run"):
        with pytest.raises(NotADirectoryError, match=r"(?s)'.*weights.safetensors' is a file, not a "
                                                     r"directory.*fix: ") as e:
            sp.checkpoint.TrainingCheckpointer(given)
        assert isinstance(e.value, CheckpointError) and "Errno" not in str(e.value)
    assert path.read_bytes() == b"x"


def test_saving_a_leaf_orbax_cannot_write_names_its_path_and_writes_nothing(tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    for leaf, found in (("adam", "str 'adam'"), (np.array(["a"]), "ndarray of dtype <U1"),
                        (1 + 2j, "complex (1+2j)")):
        with pytest.raises(TypeError, match=rf"(?s)TrainingCheckpointer.save: the state's leaf "
                                            rf"'config/optimizer' is {re.escape(found)}"
                                            r".*nothing was written.*fix: "):
            ckpt.save(1, {"params": {"w": jnp.ones(2)}, "config": {"optimizer": leaf}})
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []
    ckpt.save(1, {"w": jnp.ones(2), "n": 3, "x": 0.5, "flag": True, "none": None,
                  "c": np.ones(2, np.complex64), "i": np.int32(2)})
    assert ckpt.all_steps() == [1]


# --- damaged steps: CheckpointCorruptError naming the step and an earlier one, never a wrong tree -----


def _flip_data_bytes(step_dir):
    for f in step_dir.glob("default/**/d/*"):
        b = bytearray(f.read_bytes())
        for i in range(len(b) // 2, len(b) // 2 + 8):
            b[i] ^= 0xFF
        f.write_bytes(bytes(b))


def _truncate_largest_data_file(step_dir):
    f = max(step_dir.glob("default/**/d/*"), key=lambda p: p.stat().st_size)
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])


def _flip_one_bit_of_array_data(step_dir):
    # Random float32 data does not compress: the largest data file holds it as written, and one
    # flipped bit there is a wrong value that orbax (no checksums of its own) restores silently.
    f = max(step_dir.glob("default/**/d/*"), key=lambda p: p.stat().st_size)
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0x01
    f.write_bytes(bytes(b))


_DAMAGE = {
    "one bit flipped in array data": (
        _flip_one_bit_of_array_data,
        r"the data of 'params/big' \(float32\[20000\]\) does not match the checksum saved with it "
        r"\(CRC-32 0x[0-9a-f]{8}, saved 0x[0-9a-f]{8}\): its array files changed after they were "
        r"written; nothing was restored"),
    "garbage checksums file": (
        lambda d: (d / "scoped_params_checksums.json").write_text("{garbage"),
        r"its checksums file 'scoped_params_checksums.json' cannot be read \(JSONDecodeError: "),
    "bit-flipped data files": (_flip_data_bytes, r"its metadata cannot be read: ValueError: "
                                                 r".*Error reading .*/run/2/default/"),
    "garbage item metadata": (lambda d: (d / "default" / "_METADATA").write_text("garbage"),
                              r"its metadata cannot be read: JSONDecodeError: Expecting value"),
    "emptied item directory": (lambda d: [p.unlink() for p in (d / "default").rglob("*")
                                          if p.is_file()],
                               r"its metadata cannot be read: FileNotFoundError: .*_METADATA"),
    "truncated data file": (_truncate_largest_data_file,
                            r"its array data cannot be read: .*OUT_OF_RANGE"),
}


def _damaged(tmp_path, damage):
    noise = np.random.RandomState(0).randn(20000).astype(np.float32)  # a data file of its own
    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "big": jnp.asarray(noise)}, "step": 2}
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run", max_to_keep=None)
    ckpt.save(1, {**state, "step": 1})
    ckpt.save(2, state)
    damage(tmp_path / "run" / "2")
    return sp.checkpoint.TrainingCheckpointer(tmp_path / "run", max_to_keep=None), state


@pytest.mark.parametrize("with_target", [True, False], ids=["target", "no_target"])
@pytest.mark.parametrize("damage", list(_DAMAGE))
def test_restoring_a_damaged_step_raises_corrupt_naming_the_step_and_an_earlier_one(
        tmp_path, damage, with_target):
    how, found = _DAMAGE[damage]
    ckpt, state = _damaged(tmp_path, how)
    assert ckpt.all_steps() == [1, 2] and ckpt.latest_step() == 2  # damage is seen on reading
    with pytest.raises(sp.checkpoint.CheckpointCorruptError) as e:
        ckpt.restore(target=state if with_target else None)
    message = str(e.value)
    assert re.search(rf"(?s)TrainingCheckpointer.restore: step 2 in '{re.escape(str(tmp_path))}"
                     r"/run' is damaged \(in '.*/run/2/default'\): " + found, message), message
    assert "does not fit the given target" not in message and "tensorstore_spec" not in message
    again = "ckpt.restore(1, target=target)" if with_target else "ckpt.restore(1)"
    assert (f"fix: restore an earlier step, e.g. {again} (steps on disk: [1, 2]); to train on "
            "from it, first delete the damaged step and those after it: "
            "ckpt.delete_steps_after(1) (deletes [2])") in message
    assert isinstance(e.value, ValueError) and e.value.filename.endswith("/run/2")
    with pytest.raises(sp.checkpoint.CheckpointCorruptError, match="step 2 .* is damaged"):
        ckpt.restore(2, target=state if with_target else None)
    # the fix the message gives works
    chex.assert_trees_all_equal(ckpt.restore(1, target=state), {**state, "step": 1})
    assert ckpt.delete_steps_after(1) == [2]
    ckpt.save(2, state)
    chex.assert_trees_all_equal(ckpt.restore(target=state), state)


def test_a_damaged_only_step_names_a_fresh_start_as_the_fix(tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ckpt.save(0, {"w": jnp.ones(2)})
    (tmp_path / "run" / "0" / "default" / "_METADATA").write_text("garbage")
    with pytest.raises(sp.checkpoint.CheckpointCorruptError,
                       match=r"(?s)step 0 .* is damaged.*fix: no other step is on disk: restore "
                             r"'.*/run/0' from a backup, or delete it and start from a fresh "
                             r"state: shutil.rmtree\('.*/run/0'\)"):
        ckpt.restore()


@pytest.mark.parametrize("with_target", [True, False], ids=["target", "no_target"])
def test_a_step_directory_without_its_item_is_not_a_step(tmp_path, with_target):
    import shutil

    ckpt, state = _damaged(tmp_path, lambda d: shutil.rmtree(d / "default"))
    target = state if with_target else None
    assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1  # a half-copied step
    assert int(ckpt.restore(target=target)["step"]) == 1
    with pytest.raises(FileNotFoundError,
                       match=r"(?s)the directory of step 2, '.*/run/2', is incomplete \(no "
                             r"'default' item directory\).*fix: .*shutil.rmtree"):
        ckpt.restore(2, target=target)
    with pytest.raises(StepOrderError, match=r"(?s)step 2, .* is incomplete \(no 'default'"):
        ckpt.save(2, state)


@pytest.mark.parametrize("damage", list(_DAMAGE))
def test_a_damaged_step_does_not_leave_orbax_tracebacks_on_stderr(tmp_path, monkeypatch, caplog,
                                                                  recwarn, damage):
    import gc
    import sys

    ckpt, state = _damaged(tmp_path, _DAMAGE[damage][0])
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for target in (state, None):
        with pytest.raises(sp.checkpoint.CheckpointCorruptError):
            ckpt.restore(target=target)
    gc.collect()
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    assert [str(u.exc_value) for u in unraisable] == []
    assert [str(w.message) for w in recwarn if "never awaited" in str(w.message)] == []


def test_a_target_of_unrestorable_leaves_is_a_mismatch_not_damage(tmp_path):
    _saved(tmp_path, (1,))
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")  # a fresh process resuming
    with pytest.raises(sp.checkpoint.CheckpointMismatchError,
                       match=r"(?s)does not fit the given target.*orbax: Unsupported type"):
        ckpt.restore(1, target={"w": "adam"})
    with pytest.raises(sp.checkpoint.CheckpointMismatchError,
                       match=r"(?s)shapes differ: w: target \(3,\), checkpoint \(2,\)"):
        ckpt.restore(1, target={"w": jnp.ones(3)})


def test_a_step_orbax_cannot_restore_without_a_target_is_not_called_damaged(tmp_path, monkeypatch):
    ckpt = _saved(tmp_path, (1,))

    def saved_on_other_devices(*args, **kwargs):  # what orbax raises for another topology
        raise ValueError("The available devices are different from the devices used to save the "
                         "checkpoint.  Please restore checkpoint by passing new shardings.")

    monkeypatch.setattr(ckpt._manager, "restore", saved_on_other_devices)
    with pytest.raises(sp.checkpoint.CheckpointMismatchError,
                       match=r"(?s)orbax cannot restore step 1 in .*run' without a target; nothing "
                             r"was restored.\n  orbax: ValueError: The available devices are "
                             r"different.*\n  fix: pass a target .*"
                             r"ckpt.restore\(1, target=target\)"):
        ckpt.restore()


@pytest.mark.parametrize("state", [{}, {"opt_state": ()}, None])
def test_saving_a_state_without_leaves_is_refused_and_writes_nothing(tmp_path, state):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    with pytest.raises(ValueError, match=r"(?s)the state for step 3 has no leaves .*nothing was "
                                         r"written.\n  fix: save the training state itself"):
        ckpt.save(3, state)
    assert ckpt.latest_step() is None


def test_each_step_records_the_dtype_shape_and_crc32_of_every_leaf(tmp_path):
    import json
    import zlib

    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "h": jnp.ones(3, jnp.bfloat16)},
             "opt_state": optax.sgd(0.1, momentum=0.9).init({"w": jnp.zeros(2)}), "step": 4}
    sp.checkpoint.TrainingCheckpointer(tmp_path / "run").save(4, state)
    record = json.loads((tmp_path / "run" / "4" / "scoped_params_checksums.json").read_text())
    assert record["format"] == 1
    leaves = record["leaves"]
    assert sorted(leaves) == ["opt_state/0/trace/w", "params/h", "params/w", "step"]
    w = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    assert leaves["params/w"] == ["float32", [2, 3], zlib.crc32(w.tobytes())]
    assert leaves["params/h"] == ["bfloat16", [3], zlib.crc32(np.ones(3, jnp.bfloat16).tobytes())]
    assert leaves["step"] == ["int64", [], zlib.crc32(np.int64(4).tobytes())]


def test_a_step_saved_without_checksums_restores_unchecked(tmp_path):
    # Steps written by orbax alone (or interrupted between orbax's commit and the checksums file).
    state = {"params": {"w": jnp.arange(6.0)}, "step": 1}
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ckpt.save(1, state)
    (tmp_path / "run" / "1" / "scoped_params_checksums.json").unlink()
    chex.assert_trees_all_equal(ckpt.restore(target=state), state)
    assert ckpt.all_steps() == [1]


def test_a_leaf_restored_into_another_dtype_is_not_checked_against_the_saved_bytes(tmp_path):
    state = {"params": {"w": jnp.linspace(0.0, 1.0, 8)}, "step": 1}
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ckpt.save(1, state)
    target = {"params": {"w": jax.ShapeDtypeStruct((8,), jnp.bfloat16)}, "step": 1}
    restored = ckpt.restore(target=target)
    assert restored["params"]["w"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(restored["params"]["w"], np.float32),
                               np.linspace(0.0, 1.0, 8), atol=1e-2)


def test_a_state_holding_a_prng_key_saves_checks_and_restores(tmp_path):
    state = {"params": {"w": jnp.ones(2)}, "rng": jax.random.key(3), "step": 0}
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run", max_to_keep=1)
    ckpt.save(1, state)
    ckpt.save(2, state)
    assert ckpt.all_steps() == [2]
    restored = ckpt.restore(target=state)
    np.testing.assert_array_equal(jax.random.key_data(restored["rng"]), jax.random.key_data(state["rng"]))


# --- a target's dtypes: a cast that would change saved values is refused, naming each leaf ----------

_TYPED = {"w": jnp.array([0.7, 1e5, -2.5], jnp.float32), "i": jnp.array([300, -1], jnp.int32),
          "lr": 0.5}


@pytest.mark.parametrize("change, named", [
    ({"w": jnp.zeros(3, jnp.int32)}, r"w: checkpoint float32\[3\], target int32\[3\] \(a float "
                                     r"cast to an integer loses its fraction\)"),
    ({"w": jax.ShapeDtypeStruct((3,), jnp.float16)},
     r"w: checkpoint float32\[3\], target float16\[3\] \(float32 values beyond float16's "
     r"±65504 become inf\)"),
    ({"i": jnp.zeros(2, jnp.uint8)}, r"i: checkpoint int32\[2\], target uint8\[2\] \(int32 values "
                                     r"outside uint8's range \[0, 255\] wrap around\)"),
    ({"lr": 0}, r"lr: checkpoint Python float, target Python int \(a float cast to an integer "
                r"loses its fraction\)"),
    ({"i": jnp.zeros(2, bool)}, r"i: checkpoint int32\[2\], target bool\[2\] \(a bool keeps "
                                r"only zero or non-zero\)"),
], ids=["float_to_int", "float32_to_float16", "int32_to_uint8", "python_float_to_int", "to_bool"])
def test_restore_into_a_target_dtype_that_would_change_saved_values_raises_naming_the_leaf(
        tmp_path, change, named):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ckpt.save(1, _TYPED)
    with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
        ckpt.restore(target={**_TYPED, **change})
    message = str(e.value)
    assert message.startswith(f"TrainingCheckpointer.restore: step 1 in {str(tmp_path / 'run')!r} "
                              "does not fit the given target; nothing was restored."), message
    assert re.search(r"\n  dtypes differ \(restoring could change the saved values\): " + named,
                     message), message
    assert "shapes differ" not in message and "not in the checkpoint" not in message
    assert re.search(r"\n  fix: .*the checkpoint's dtypes.*astype.*ckpt.restore\(1\)", message), message
    chex.assert_trees_all_equal(ckpt.restore(1, target=_TYPED), _TYPED)  # the fix works
    np.testing.assert_array_equal(ckpt.restore(1)["w"], _TYPED["w"])


def test_a_dtype_mismatch_names_every_lossy_leaf_with_the_other_differences(tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ckpt.save(1, _TYPED)
    target = {"w": jnp.zeros(3, jnp.int32), "i": jnp.zeros(2, jnp.uint8), "lr": 0,
              "extra": jnp.zeros(2)}
    with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
        ckpt.restore(target=target)
    message = str(e.value)
    assert "in target, not in the checkpoint: ['extra']" in message, message
    assert re.search(r"dtypes differ .*: i: checkpoint int32\[2\], target uint8\[2\] .*; lr: "
                     r"checkpoint Python float, target Python int .*; w: checkpoint float32\[3\], "
                     r"target int32\[3\]", message), message


def test_a_target_dtype_that_only_widens_or_rounds_restores_cast(tmp_path):
    state = {"h": jnp.array([1.5, -2.0], jnp.float16), "b": jnp.array([-100, 7], jnp.int8),
             "i": jnp.array([3, 1 << 30], jnp.int32), "f": jnp.array([True, False])}
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ckpt.save(1, state)
    target = {"h": jax.ShapeDtypeStruct((2,), jnp.float32), "b": jnp.zeros(2, jnp.int16),
              "i": jnp.zeros(2, jnp.float32), "f": jnp.zeros(2, jnp.uint8)}
    restored = ckpt.restore(target=target)
    assert {k: v.dtype for k, v in restored.items()} == {
        "h": jnp.float32, "b": jnp.int16, "i": jnp.float32, "f": jnp.uint8}
    np.testing.assert_array_equal(restored["h"], [1.5, -2.0])
    np.testing.assert_array_equal(restored["b"], [-100, 7])
    np.testing.assert_array_equal(restored["i"], [3.0, float(1 << 30)])
    np.testing.assert_array_equal(restored["f"], [1, 0])


def test_python_numbers_restore_as_saved_into_weakly_typed_targets_of_their_kind(tmp_path):
    state = {"step": 7, "lr": 0.25, "flag": True, "count": jnp.int32(4), "loss": jnp.float32(1.5)}
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ckpt.save(1, state)
    # jax.eval_shape makes Python numbers weakly typed int32/float32/bool
    abstract = jax.eval_shape(lambda: {"step": 0, "lr": 0.1, "flag": False, "count": 0, "loss": 0.0})
    assert abstract["step"].weak_type and abstract["step"].dtype == jnp.int32
    for target in (abstract, {**state, "count": 0, "loss": 0.0},
                   {**state, "step": jnp.int32(0), "lr": jnp.float32(0), "flag": 1}):
        restored = ckpt.restore(target=target)
        assert [float(restored[k]) for k in ("step", "lr", "flag", "count", "loss")] == [
            7, 0.25, 1, 4, 1.5]
    with pytest.raises(sp.checkpoint.CheckpointMismatchError,
                       match=r"step: checkpoint Python int, target Python bool \(a bool keeps only "
                             r"zero or non-zero\)"):
        ckpt.restore(target={**state, "step": False})


def test_a_mismatch_does_not_blame_a_prng_key_leaf_that_fits(tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    state = {"params": {"w": jnp.ones(3)}, "rng": jax.random.key(0)}
    ckpt.save(1, state)
    with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
        ckpt.restore(target={**state, "params": {"w": jnp.ones(3), "b": jnp.ones(2)}})
    message = str(e.value)
    assert "in target, not in the checkpoint: ['params/b']" in message, message
    assert "shapes differ" not in message and "dtypes differ" not in message, message
    np.testing.assert_array_equal(jax.random.key_data(ckpt.restore(target=state)["rng"]),
                                  jax.random.key_data(state["rng"]))


def test_a_prng_key_of_another_impl_is_named_as_the_difference(tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    state = {"w": jnp.ones(2), "rng": jax.random.key(0, impl="rbg")}
    ckpt.save(1, state)
    for other in ("unsafe_rbg", "threefry2x32"):  # key data of the same shape (4,), and not
        with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
            ckpt.restore(target={**state, "rng": jax.random.key(0, impl=other)})
        message = str(e.value)
        target_dtype = re.escape(str(jax.random.key(0, impl=other).dtype))
        assert re.search(rf"dtypes differ .*: rng: checkpoint key<rbg>\[\], target "
                         rf"{target_dtype}\[\] \(another PRNG implementation\)", message), message
        assert "shapes differ" not in message, message
    restored = ckpt.restore(target=state)
    assert restored["rng"].dtype == state["rng"].dtype


def test_a_typed_prng_key_and_raw_key_data_are_not_taken_for_each_other(tmp_path):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    state = {"typed": jax.random.key(0), "raw": jax.random.PRNGKey(1)}
    ckpt.save(1, state)
    with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
        ckpt.restore(target={"typed": jax.random.PRNGKey(0), "raw": jax.random.key(1)})
    message = str(e.value)
    assert re.search(r"dtypes differ .*: raw: checkpoint uint32\[2\], target key<fry>\[\] \(raw key "
                     r"data, not a typed key\); typed: checkpoint key<fry>\[\], target uint32\[2\] "
                     r"\(a typed key, not raw key data\)", message), message
    chex.assert_trees_all_equal(ckpt.restore(target=state), state)


def test_a_step_without_recorded_key_impls_compares_a_prng_key_by_its_key_data(tmp_path):
    import json

    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    state = {"params": {"w": jnp.ones(3)}, "rng": jax.random.key(0), "rbg": jax.random.key(1, impl="rbg")}
    ckpt.save(1, state)
    checksums = tmp_path / "run" / "1" / "scoped_params_checksums.json"
    record = json.loads(checksums.read_text())
    del record["key_impls"]  # as steps saved before implementations were recorded
    checksums.write_text(json.dumps(record))
    with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
        ckpt.restore(target={**state, "rbg": jax.random.key(1), "params": {}})
    message = str(e.value)
    assert "in the checkpoint, not in target: ['params/w']" in message, message
    assert re.search(r"\n  shapes differ: rbg: target \(\) \(key data \(2,\)\), checkpoint \(4,\)\n",
                     message), message
    assert "dtypes differ" not in message, message
    chex.assert_trees_all_equal(ckpt.restore(target=state), state)


def test_a_step_without_recorded_python_numbers_compares_dtypes_from_orbax_metadata(tmp_path):
    import json

    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    state = {"w": jnp.ones(2), "step": 7, "lr": 0.5}
    ckpt.save(1, state)
    checksums = tmp_path / "run" / "1" / "scoped_params_checksums.json"
    record = json.loads(checksums.read_text())
    del record["python_numbers"], record["key_impls"]  # as steps saved before they were recorded
    checksums.write_text(json.dumps(record))
    with pytest.raises(sp.checkpoint.CheckpointMismatchError,
                       match=r"dtypes differ .*: lr: checkpoint Python float, target Python int .*; "
                             r"w: checkpoint float32\[2\], target float16\[2\]"):
        ckpt.restore(target={**state, "w": jnp.ones(2, jnp.float16), "lr": 0})
    restored = ckpt.restore(target=jax.eval_shape(lambda: {"w": jnp.zeros(2), "step": 0, "lr": 0.0}))
    assert (int(restored["step"]), float(restored["lr"])) == (7, 0.5)


# --- targets sharded on an abstract mesh (jax.eval_shape under jax.set_mesh, Explicit axes) ----


@pytest.fixture(scope="module")
def explicit_mesh():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    from jax.sharding import AxisType
    return jax.make_mesh((2, 4), ("batch", "model"), axis_types=(AxisType.Explicit,) * 2)


def _sharded_state(mesh):
    from jax.sharding import NamedSharding, PartitionSpec as P
    return {"params": {"w": jax.device_put(jnp.arange(32.0).reshape(8, 4),
                                           NamedSharding(mesh, P("batch", "model")))},
            "step": jnp.int32(3)}


def _eval_shape_target(mesh):
    from jax.sharding import PartitionSpec as P
    with jax.set_mesh(mesh):  # eval_shape gives ShapeDtypeStructs sharded on mesh.abstract_mesh
        target = jax.eval_shape(lambda: {"params": {"w": jax.device_put(
            jnp.zeros((8, 4)), P("batch", "model"))}, "step": jnp.int32(0)})
    assert isinstance(target["params"]["w"].sharding.mesh, jax.sharding.AbstractMesh)
    return target


def test_a_target_sharded_on_an_abstract_mesh_restores_onto_the_mesh_set_with_set_mesh(
        tmp_path, explicit_mesh):
    from jax.sharding import NamedSharding, PartitionSpec as P
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    state = _sharded_state(explicit_mesh)
    ckpt.save(1, state)
    target = _eval_shape_target(explicit_mesh)
    with jax.set_mesh(explicit_mesh):
        restored = ckpt.restore(1, target=target)
    chex.assert_trees_all_equal(restored, state)
    w = restored["params"]["w"]
    assert isinstance(w.sharding.mesh, jax.sharding.Mesh)
    assert w.sharding == NamedSharding(explicit_mesh, P("batch", "model"))
    assert len(w.addressable_shards) == 8 and w.addressable_shards[0].data.shape == (4, 1)


def test_a_target_sharded_on_an_abstract_mesh_without_a_mesh_set_names_the_leaf_and_the_fix(
        tmp_path, explicit_mesh):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ckpt.save(1, _sharded_state(explicit_mesh))
    target = _eval_shape_target(explicit_mesh)
    with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
        ckpt.restore(1, target=target)
    message = str(e.value)
    assert re.search(r"(?s)TrainingCheckpointer.restore: the target's leaf 'params/w' \(float32"
                     r"\[8,4\]\) is sharded on an AbstractMesh \{'batch': 2, 'model': 4\} \(axis "
                     r"names and sizes, no devices\), and no mesh is set with jax.set_mesh to "
                     r"place it on; nothing was restored from step 1 in '.*run'.*\n  fix: .*with "
                     r"jax.set_mesh\(mesh\): .*ckpt.restore\(1, target=target\).*NamedSharding",
                     message), message
    assert "asked (target)" not in message and "_device_assignment" not in message
    with jax.set_mesh(explicit_mesh):  # the fix the message gives works
        chex.assert_trees_all_equal(ckpt.restore(1, target=target), _sharded_state(explicit_mesh))


def test_a_target_on_an_abstract_mesh_of_other_axes_than_the_mesh_set_names_both(
        tmp_path, explicit_mesh):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ckpt.save(1, _sharded_state(explicit_mesh))
    target = _eval_shape_target(explicit_mesh)
    other = jax.make_mesh((4, 2), ("batch", "model"))
    with jax.set_mesh(other), pytest.raises(
            sp.checkpoint.CheckpointMismatchError,
            match=r"(?s)'params/w' \(float32\[8,4\]\) is sharded on an AbstractMesh \{'batch': 2, "
                  r"'model': 4\} .*the mesh set with jax.set_mesh has other axes, \{'batch': 4, "
                  r"'model': 2\}.*\n  fix: "):
        ckpt.restore(1, target=target)


def test_an_orbax_refusal_of_a_target_that_fits_does_not_claim_a_difference(tmp_path, monkeypatch):
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    state = {"w": jnp.ones((2, 3))}
    ckpt.save(1, state)

    def refuse(*args, **kwargs):  # what orbax raises for a sharding it cannot place
        raise ValueError("Sharding of the target cannot be used on these devices.")

    monkeypatch.setattr(ckpt._manager, "restore", refuse)
    with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
        ckpt.restore(1, target=state)
    message = str(e.value)
    assert re.search(r"(?s)orbax cannot restore step 1 in '.*run' into the given target, though "
                     r"its entries, shapes and dtypes are the step's \(w float32\[2,3\]\); "
                     r"nothing was restored.\n  orbax: Sharding of the target cannot.*\n  fix: .*"
                     r"shardings", message), message
    assert "does not fit" not in message and "asked (target)" not in message


_RESTORE_ON_4_DEVICES = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np, optax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
import scoped_params as sp

mesh = jax.make_mesh((4,), ("model",), axis_types=(AxisType.Auto,))
params = {"w": jax.ShapeDtypeStruct((8, 2), jnp.float32, sharding=NamedSharding(mesh, P("model")))}
targets = {  # the optimizer's step count gets no sharding from jax.eval_shape; "step" is an int
    "on_mesh": {"params": params, "opt_state": jax.eval_shape(optax.adam(1e-3).init, params),
                "step": 0},
    "unplaced": jax.eval_shape(lambda: {"params": {"w": jnp.zeros((8, 2))}, "opt_state":
                                        optax.adam(1e-3).init({"w": jnp.zeros((8, 2))}), "step": 0}),
}
ckpt = sp.checkpoint.TrainingCheckpointer(sys.argv[1])
result = {}
for name, target in targets.items():
    try:
        restored = ckpt.restore(1, target=target)
        result[name] = {"leaves": [np.asarray(x).tolist() for x in jax.tree.leaves(restored)],
                        "count_on_mesh": restored["opt_state"][0].count.sharding
                        == NamedSharding(mesh, P())}
    except sp.checkpoint.CheckpointError as error:
        result[name] = str(error)
print("RESULT " + json.dumps(result), flush=True)
"""


def test_a_target_without_shardings_for_some_leaves_restores_a_step_saved_on_other_devices(
        tmp_path):
    # Saved on 8 devices, restored on 4 into a target whose optimizer count has no sharding (as
    # jax.eval_shape gives it). Before: orbax took the count's saved sharding, on devices gone,
    # and refused the whole restore ('Topology mismatch'), naming no leaf.
    import json, os, subprocess, sys
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    if jax.device_count() < 8:
        pytest.skip("needs 8 devices")
    mesh = jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,))
    params = jax.device_put({"w": jnp.arange(16.0).reshape(8, 2) / 7}, NamedSharding(mesh, P("model")))
    optimizer = optax.adam(1e-3)
    grads = jax.tree.map(jnp.ones_like, params)
    _, opt_state = jax.jit(optimizer.update)(grads, optimizer.init(params), params)
    state = jax.jit(lambda s: s)({"params": params, "opt_state": opt_state, "step": 5})
    assert state["opt_state"][0].count.sharding.mesh.size == 8
    sp.checkpoint.TrainingCheckpointer(tmp_path / "run").save(1, state)

    script = tmp_path / "restore.py"
    script.write_text(_RESTORE_ON_4_DEVICES)
    root = os.path.dirname(os.path.dirname(sp.__file__))  # the package this test imports
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "run")], env=env,
                         capture_output=True, text=True, timeout=120)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    saved = [np.asarray(x).tolist() for x in jax.tree.leaves(state)]
    # replicated on the mesh of the target's other leaves; without one, on the first device
    assert result["on_mesh"] == {"leaves": saved, "count_on_mesh": True}, result
    assert result["unplaced"] == {"leaves": saved, "count_on_mesh": False}, result
