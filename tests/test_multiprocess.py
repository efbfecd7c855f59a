"""Two processes on the loopback address train one sharded model and round-trip an orbax checkpoint."""


import pytest
from _scripts import load_example


def test_two_processes_report_the_same_losses_and_restore_what_they_saved():
    pytest.importorskip("orbax.checkpoint")
    example = load_example("multiprocess_train")
    # The workers are separate interpreters with their own XLA_FLAGS (4 devices each); the launcher
    # kills them if they take longer than the timeout.
    results = example.launch(steps=3, timeout=50)
    assert sorted(r["process"] for r in results) == [0, 1]
    assert all(r["devices"] == 8 and r["local_devices"] == 4 for r in results)
    first = results[0]["losses"]
    assert len(first) == 3 and first[-1] < first[0]
    assert all(r["losses"] == first for r in results)
    assert all(r["restored_equal"] for r in results)
    assert all(r["shardings_kept"] for r in results)
    # Model parallel over 4 devices: no device holds all parameter values.
    assert all(r["params_per_device"] < r["params_total"] for r in results)
