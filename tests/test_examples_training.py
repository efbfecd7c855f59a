"""The digits examples train for real: accuracy thresholds, and an exact resume from a saved state.

Budgets: the full-budget runs (1,000 CNN steps, 600 siamese steps) take ~25 s + ~18 s on 2 shared
CPU cores, mostly compile and setup. Here the CNN runs 500 steps (it reaches ~98.6%, the same as at
full budget, against the 97% threshold) and the siamese net 300 steps (~96.8% against 90%), so the
file stays near 40 s while asserting the issue's accuracy thresholds themselves. The LSTM of
rnn_digits runs 300 steps (~92%, ~12 s) against 85%.
"""

import os
import sys

import jax
import numpy as np
import pytest

import scoped_params as sp

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))

pytest.importorskip("sklearn")
pytest.importorskip("optax")

import rnn_digits  # noqa: E402
import siamese_digits  # noqa: E402
import train_digits  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return train_digits.load_data(0)


def test_cnn_reaches_97_percent_and_resumes_exactly_from_a_saved_state(data):
    saved = {}

    def keep_midpoint(state, loss):
        if int(state.step) == 250:
            saved["state"] = jax.device_get(state)

    state, acc = train_digits.train(steps=500, data=data, progress=False, on_step=keep_midpoint)
    print(f"\ntrain_digits (500 steps): test accuracy {acc:.2%}")
    assert acc >= 0.97
    assert int(state.step) == 500

    resumed, resumed_acc = train_digits.train(steps=500, data=data, progress=False,
                                              state=saved["state"])
    assert int(resumed.step) == 500
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert resumed_acc == pytest.approx(acc, abs=0.005)


def test_main_passes_steps_to_train_and_prints_the_final_accuracy(capsys, monkeypatch):
    calls = []

    def fake_train(steps, *args, **kwargs):
        calls.append(steps)
        return train_digits.TrainState({}, (), np.int32(steps)), 0.975

    monkeypatch.setattr(train_digits, "train", fake_train)
    assert train_digits.main(["--steps", "7", "--no-progress"]) == 0.975
    assert calls == [7]
    assert "final test accuracy: 97.50% after 7 steps" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "2000"], "--batch-size must be at most 1437, the number of training images"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--save-every", "0", "--ckpt-dir", "unused"], "--save-every must be at least 1, got 0"),
    (["--steps", "-1"], "--steps must be 0 or more, got -1"),
])
def test_main_refuses_flags_out_of_range_naming_the_flag(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(train_digits, "train", lambda *a, **k: pytest.fail("trained anyway"))
    with pytest.raises(SystemExit) as e:
        train_digits.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_siamese_towers_share_weights_and_verify_pairs_above_90_percent(data):
    params, acc = siamese_digits.train(steps=300, data=data, progress=False)
    print(f"\nsiamese_digits (300 steps): verification accuracy {acc:.2%}")
    assert list(params) == ["tower"]  # one tower's weights, used by both branches
    assert acc >= 0.90


def test_lstm_reading_digits_row_by_row_has_tfs_names_and_learns(data):
    params, acc = rnn_digits.train(steps=300, data=data, progress=False)
    print(f"\nrnn_digits (300 steps): test accuracy {acc:.2%}")
    assert sorted(sp.flatten(params)) == [
        "logits/bias", "logits/kernel",
        "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/bias",
        "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel",
        "rnn/multi_rnn_cell/cell_1/basic_lstm_cell/bias",
        "rnn/multi_rnn_cell/cell_1/basic_lstm_cell/kernel"]
    assert acc >= 0.85  # ~92% at 300 steps, ~94% at the script's 600
