"""Training state (params + optax state + step) saved with sp.checkpoint.TrainingCheckpointer: a run
interrupted and resumed from its checkpoint ends exactly where an uninterrupted run does."""


import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoped_params as sp
from _scripts import load_example

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
