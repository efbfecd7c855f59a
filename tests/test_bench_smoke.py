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


@pytest.mark.parametrize("contender", ["scoped_params_layers", "scoped_params_slim",
                                       "scoped_params_objects"])
def test_the_tiny_layers_through_the_layer_apis_compute_the_hand_written_outputs(contender):
    # bench/run.py times these beside the tiny-layer traces: the same model, default-named layers.
    x = models.example_input("dense", batch=2)
    flat = sp.flatten(models.build("scoped_params", "dense", 12).init(jax.random.key(0), x))
    model = models.build(contender, "dense", 12)
    params = models.to_params(contender, flat)
    own = model.init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(own) == jax.tree_util.tree_structure(params)
    np.testing.assert_allclose(model.apply(params, x),
                               models.build("jax", "dense", 12).apply(sp.unflatten(flat), x), rtol=1e-6)


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
                      "trace/scoped_params_layers", "trace/scoped_params_slim",
                      "trace/scoped_params_objects", "lower/jax", "lower/jax_named_scopes",
                      "lower/scoped_params", "eager/jax", "eager/jax_scoped_lookup",
                      "eager/scoped_params"]


def test_trace_cost_times_its_models_and_the_control():
    # bench/trace_cost.py: the bookkeeping's trace cost alone and between the ops, and a plain Python
    # loop's for comparison; here it only runs.
    med = load_bench("trace_cost").measure(3, rounds=1)
    assert list(med) == ["hand-written, reads only", "scoped_params, reads only",
                         "hand-written, with ops", "named scopes, with ops", "scoped_params, with ops",
                         "Python loop, reads only", "Python loop, with ops"]
    assert all(t > 0 for t in med.values())


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


def test_contenders_timed_beside_the_base_run_next_to_it_on_alternating_sides(monkeypatch):
    run = load_bench("run")
    monkeypatch.setattr(run, "_step_budget", [None])
    calls = []
    fns = {n: (lambda n=n: calls.append(n) or 1.0)
           for n in ("jax", "scoped_params", "haiku", "flax", "jax_named_scopes")}
    run.interleave(fns, rounds=2, warmup=0, beside_base=("scoped_params", "jax_named_scopes"))
    assert calls == ["scoped_params", "jax", "jax_named_scopes", "haiku", "flax",
                     "jax_named_scopes", "jax", "scoped_params", "flax", "haiku"]


def test_reference_contenders_run_only_their_first_rounds_and_pair_with_the_base_of_those_rounds(
        monkeypatch):
    run = load_bench("run")
    monkeypatch.setattr(run, "_step_budget", [None])
    calls = []
    clock = iter(range(1, 1000))

    def contender(name):
        return lambda: calls.append(name) or float(next(clock))
    fns = {n: contender(n) for n in ("jax", "scoped_params", "jax_named_scopes", "haiku", "flax")}
    times = run.interleave(fns, rounds=4, warmup=0, beside_base=("scoped_params", "jax_named_scopes"),
                           limits={"haiku": 2, "flax": 1})
    assert {n: len(t) for n, t in times.items()} == {
        "jax": 4, "scoped_params": 4, "jax_named_scopes": 4, "haiku": 2, "flax": 1}
    assert calls == ["scoped_params", "jax", "jax_named_scopes", "haiku", "flax",
                     "jax_named_scopes", "jax", "scoped_params", "haiku",
                     "scoped_params", "jax", "jax_named_scopes",
                     "jax_named_scopes", "jax", "scoped_params"]
    res = run.summarize(times)
    # Haiku's two rounds are divided by jax's first two (2, then 7), not by jax's last two.
    assert res["haiku"]["ratio"] == pytest.approx((4 / 2 + 9 / 7) / 2)
    assert res["flax"]["runs"] == 1


def _payload(sp_times, verdict=True):
    """A results file as bench/run.py writes it, reduced to one metric timed over five rounds."""
    run = load_bench("run")
    results = {"eager_apply_two_layer": run.summarize({"jax": [1.0] * 5, "scoped_params": sp_times})}
    return {"results": results, "targets": [
        {"key": "eager_apply_two_layer", "metric": "eager apply per call", "model": "tiny 2-layer model",
         "value": "x", "pass": verdict}]}


def test_each_ratio_comes_with_the_middle_half_of_its_rounds():
    run = load_bench("run")
    res = run.summarize({"jax": [2.0, 2.0, 2.0, 2.0, 2.0], "scoped_params": [2.0, 2.2, 2.4, 2.6, 2.8]})
    assert res["scoped_params"]["ratio"] == pytest.approx(1.2)
    assert res["scoped_params"]["ratio_band"] == pytest.approx([1.1, 1.3])
    assert res["jax"]["ratio_band"] == [1.0, 1.0]
    assert run.middle_half([1.5]) == [1.5, 1.5]  # a step cut to one round
    row, = [r for r in run.judge({"eager_apply_two_layer": res}) if r["key"] == "eager_apply_two_layer"]
    assert row["band"] == pytest.approx([1.1, 1.3]) and row["pass"] is False


def test_a_rerun_agrees_within_noise_when_the_middle_halves_of_the_rounds_overlap():
    run = load_bench("run")
    committed = _payload([1.0, 1.1, 1.2, 1.3, 1.4])  # middle half 1.1-1.3
    close = _payload([1.25, 1.3, 1.35, 1.4, 1.5], verdict=False)  # 1.3-1.4: touches it
    far = _payload([1.5, 1.6, 1.7, 1.8, 1.9])  # 1.6-1.8
    figure, = run.compare(committed, close)["figures"]
    assert figure["agree"] and figure["old"] == pytest.approx(1.2) and figure["new"] == pytest.approx(1.35)
    assert not run.compare(committed, far)["figures"][0]["agree"]
    report = run.comparison_markdown(run.compare(committed, close), "committed", "rerun")
    assert "1 of 1 ratios to hand-written JAX agree within noise" in report
    assert "0 of 1 targets get the same verdict" in report
    assert "| eager apply per call | tiny 2-layer model | x (pass) | x (miss) |" in report


def test_results_are_replaced_whole(tmp_path):
    run = load_bench("run")
    path = tmp_path / "latest.json"
    path.write_text("old")
    run.write_atomic(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["latest.json"]
