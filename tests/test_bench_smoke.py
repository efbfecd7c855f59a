"""The benchmark's model builders compute the same thing in every framework (no timings here).

``bench/run.py`` compares hand-written JAX, scoped_params, Haiku and Flax linen on the same models;
the comparison means something only if, given the same weights, all four return the same outputs and
scoped_params' init builds the same tree as the hand-written one.
"""


import jax
import numpy as np
import pytest

import scoped_params as sp
from _scripts import load_bench

pytest.importorskip("haiku")
pytest.importorskip("flax")

models = load_bench("models")

# The quick mode's sizes (bench/run.py --quick), small inputs so the whole file takes seconds.
CASES = [("conv", 4), ("dense", 50), ("same_shape", 50), ("two_layer", 0), ("image_filter", 0)]


@pytest.mark.parametrize("kind,n", CASES)
def test_every_contender_computes_the_same_outputs_from_the_same_weights(kind, n):
    x = models.example_input(kind, batch=2, size=8)
    flat = sp.flatten(models.build("scoped_params", kind, n).init(jax.random.key(0), x))
    outputs = {}
    for contender in models.CONTENDERS:
        model = models.build(contender, kind, n)
        own = model.init(jax.random.key(0), x)
        params = models.to_params(contender, flat)
        assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(params), contender
        assert [a.shape for a in jax.tree_util.tree_leaves(own)] == [
            a.shape for a in jax.tree_util.tree_leaves(params)], contender
        outputs[contender] = jax.tree_util.tree_leaves(model.apply(params, x))
    for contender, leaves in outputs.items():
        for got, want in zip(leaves, outputs["jax"]):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5,
                                       err_msg=f"{contender} differs from hand-written JAX ({kind})")


def test_jitted_scoped_params_apply_lowers_to_the_hand_written_instruction_count():
    x = models.example_input("image_filter", batch=1, size=8)
    flat = sp.flatten(models.build("scoped_params", "image_filter").init(jax.random.key(0), x))
    counts = {}
    for contender in ("jax", "scoped_params"):
        model = models.build(contender, "image_filter")
        compiled = jax.jit(model.apply_fn()).lower(models.to_params(contender, flat), x).compile()
        counts[contender] = sum(" = " in line for line in compiled.as_text().splitlines())
    assert counts["scoped_params"] == counts["jax"]


def test_instruction_count_regions_run_without_valgrind():
    # bench/instructions.py counts these regions under callgrind; here they only have to run.
    instructions = load_bench("instructions")
    labels = []
    for label, work in instructions._regions(3):
        work()
        labels.append(label)
    assert labels == ["trace/jax", "trace/jax_named_scopes", "trace/scoped_params",
                      "eager/jax", "eager/scoped_params"]


def test_a_step_past_its_budget_stops_after_the_minimum_rounds(monkeypatch):
    run = load_bench("run")
    calls = []
    monkeypatch.setattr(run, "_step_budget", [0.0])  # already over budget when the rounds start
    times = run.interleave({"jax": lambda: calls.append("jax") or 1.0,
                            "scoped_params": lambda: calls.append("sp") or 1.0}, rounds=9, warmup=0)
    assert {n: len(t) for n, t in times.items()} == {"jax": run.MIN_ROUNDS, "scoped_params": run.MIN_ROUNDS}
    monkeypatch.setattr(run, "_step_budget", [None])
    times = run.interleave({"jax": lambda: 1.0}, rounds=9, warmup=0)
    assert len(times["jax"]) == 9
