"""Benchmarks: hand-written JAX vs scoped_params vs Haiku vs Flax linen, in one process.

    python bench/run.py            # the full run (`make bench`), < 10 minutes on 2 CPU cores
    python bench/run.py --quick    # smoke run: small sizes, few repetitions
    python bench/run.py --only trace_tiny_1000,eager_apply_two_layer   # a subset, for profiling

Every metric runs its contenders interleaved (the order rotates each round, so background load
hits all of them alike) and reports each contender's median and its ratio to hand-written JAX, the
median of the per-round ratios. Writes ``bench/results/latest.json``, ``bench/RESULTS.md`` and
``bench/results/cost_vs_params.png`` (not in ``--quick`` mode, unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

import scoped_params as sp  # noqa: E402

HERE = Path(__file__).resolve().parent
ALL = models.CONTENDERS


def _block(tree):
    jax.block_until_ready(tree)
    return tree


# Wall-clock budget of the step being run (seconds; None: no limit), set by main() from BUDGETS.
_step_budget: List[Optional[float]] = [None]
MIN_ROUNDS = 3


def interleave(fns: Dict[str, Callable[[], float]], rounds: int, warmup: int = 1,
               beside_base: Sequence[str] = (),
               limits: Optional[Dict[str, int]] = None) -> Dict[str, List[float]]:
    """Run each contender's measurement ``rounds`` times, rotating the order every round.

    ``beside_base``: up to two contenders run right before and after hand-written JAX (``jax``) in
    every round, swapping sides from round to round, and the others after them, rotating. For runs
    of seconds on a shared machine whose speed drifts over seconds: the ratio of a contender timed
    next to the base is the least disturbed by the drift (``trace_time`` puts scoped_params and the
    named-scopes floor there).

    ``limits``: contenders that run only in the first so many rounds: references no target is judged
    on (Flax's 14-second trace of 4,000 layers), so that the judged ratios get the rounds. A ratio
    to ``jax`` pairs each of their rounds with ``jax``'s in the same round.

    On a slow or loaded machine a step stops after the round that crosses its budget (never before
    ``MIN_ROUNDS`` rounds), so ``make bench`` stays within its time limit; the rounds run are recorded
    with each figure (``runs``)."""
    budget = _step_budget[0]
    deadline = None if budget is None else time.perf_counter() + budget
    names = list(fns)
    paired = [n for n in beside_base if n in fns][:2] if "jax" in fns else []
    rest = [n for n in names if n not in paired and not (paired and n == "jax")]
    limits = limits or {}
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        if deadline is not None and r >= MIN_ROUNDS and time.perf_counter() > deadline:
            break
        first: List[str] = []
        if paired:  # a, jax, b in even rounds, b, jax, a in odd ones (a, jax and jax, a for one)
            a, b = paired[0], (paired[1] if len(paired) > 1 else None)
            left, right = (a, b) if r % 2 == 0 else (b, a)
            first = [n for n in (left, "jax", right) if n is not None]
        active = [n for n in rest if r < max(1, limits.get(n, rounds))]
        order = first + (active[r % len(active):] + active[:r % len(active)] if active else [])
        for n in order:
            gc.collect()
            times[n].append(fns[n]())
    return times


def middle_half(xs: List[float]) -> List[float]:
    """First and third quartiles of ``xs``: the band holding the middle half of the rounds."""
    if len(xs) < 2:
        return [xs[0], xs[0]]
    q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return [q1, q3]


def summarize(times: Dict[str, List[float]], base: str = "jax") -> Dict[str, dict]:
    """Per contender: median time, and, when ``base`` ran, the median and middle half of its per-round
    ratios to ``base``."""
    out = {}
    for n, ts in times.items():
        entry = {"median_s": statistics.median(ts), "min_s": min(ts), "runs": len(ts), "times_s": ts}
        if base in times:
            ratios = [t / b for t, b in zip(ts, times[base])]
            entry["ratio"] = statistics.median(ratios)
            entry["ratio_band"] = middle_half(ratios)
        out[n] = entry
    return out


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    def run():
        t0 = time.perf_counter()
        _block(fn())
        return time.perf_counter() - t0
    return run


def per_call(fn: Callable[[], object], budget: float, max_calls: int = 1000) -> Callable[[], float]:
    """Mean time of one call, over as many calls as fit in about ``budget`` seconds (set once)."""
    _block(fn())
    t0 = time.perf_counter()
    _block(fn())
    calls = max(1, min(max_calls, int(budget / max(time.perf_counter() - t0, 1e-7))))

    def run():
        t0 = time.perf_counter()
        for _ in range(calls - 1):
            fn()
        _block(fn())
        return (time.perf_counter() - t0) / calls
    return run


def interleave_calls(fns: Dict[str, Callable[[], object]], rounds: int, budget: float,
                     block: float = 0.005) -> Dict[str, List[float]]:
    """Mean time of one call per contender and round, the contenders taking turns in blocks of
    about ``block`` seconds (a few calls) until each has run about ``budget`` seconds in the round.

    For calls of tens of microseconds, whose speed drifts with the machine's state from one tenth
    of a second to the next: turns this short put every contender through the same drift, so the
    per-round ratios hold still where back-to-back runs of ``budget`` seconds each do not."""
    names = list(fns)
    sizes = {}
    for n, fn in fns.items():  # calls per block, from one warm call
        _block(fn())
        t0 = time.perf_counter()
        _block(fn())
        sizes[n] = max(1, int(block / max(time.perf_counter() - t0, 1e-7)))
    budget_total = _step_budget[0]
    deadline = None if budget_total is None else time.perf_counter() + budget_total
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        if deadline is not None and r >= MIN_ROUNDS and time.perf_counter() > deadline:
            break
        gc.collect()
        spent = dict.fromkeys(names, 0.0)
        calls = dict.fromkeys(names, 0)
        turn = 0
        while min(spent.values()) < budget:
            order = names[turn % len(names):] + names[:turn % len(names)]
            turn += 1
            for n in order:
                fn, k = fns[n], sizes[n]
                t0 = time.perf_counter()
                for _ in range(k - 1):
                    fn()
                _block(fn())
                spent[n] += time.perf_counter() - t0
                calls[n] += k
        for n in names:
            times[n].append(spent[n] / calls[n])
    return times


def shared_weights(kind: str, n: int, x):
    """One set of weights (scoped_params' init), converted to every contender's tree."""
    flat = sp.flatten(models.build("scoped_params", kind, n).init(jax.random.key(0), x))
    return {c: models.to_params(c, flat) for c in ALL}


def hlo_instructions(compiled) -> int:
    count = 0
    for line in compiled.as_text().splitlines():
        line = line.strip()
        if " = " in line and not line.startswith(("HloModule", "//")) and "{" not in line.split(" = ")[0]:
            count += 1
    return count


# --- the metrics -----------------------------------------------------------------------------------


def jitted_apply(kind, n, x, rounds, budget):
    params = shared_weights(kind, n, x)
    fns, hlo = {}, {}
    for c in ALL:
        m = models.build(c, kind, n)
        f = jax.jit(m.apply_fn())
        hlo[c] = hlo_instructions(f.lower(params[c], x).compile())
        p = params[c]
        fns[c] = per_call(lambda f=f, p=p: f(p, x), budget)
    res = summarize(interleave(fns, rounds))
    for c in ALL:
        res[c]["hlo_instructions"] = hlo[c]
    return res


def _warm(kind, x, what):
    """Run ``what(model, params)`` once per contender on a 2-layer model of ``kind``: one-time costs
    (JAX's caches, first use of each framework's machinery) then stay out of the timed rounds."""
    params = shared_weights(kind, 2, x)
    for c in ALL:
        _block(what(models.build(c, kind, 2), params[c]))


def _lower(m, p, x) -> None:
    jax.jit(m.apply_fn()).lower(p, x)


def trace_time(kind, n, x, rounds, extra=(), reference_rounds=None):
    """``extra``: more contenders (e.g. hand-written JAX with named scopes), timed in the same rounds.
    ``reference_rounds``: how many rounds the contenders no target is judged on run (all if None):
    the target is scoped_params against hand-written JAX, timed in every round beside the named-scopes
    floor."""
    _warm(kind, x, lambda m, p: _lower(m, p, x))
    flat = sp.flatten(models.build("scoped_params", kind, n).init(jax.random.key(0), x))
    fns = {}
    for c in ALL + tuple(extra):
        m = models.build(c, kind, n)
        p = models.to_params(c, flat)
        fns[c] = timed(lambda m=m, p=p: _lower(m, p, x))
    judged = ("jax", "scoped_params", "jax_named_scopes")
    limits = {} if reference_rounds is None else {c: reference_rounds for c in fns if c not in judged}
    return summarize(interleave(fns, rounds, warmup=0, beside_base=judged[1:], limits=limits))


def eager_init(kind, n, x, rounds, contenders=ALL, warmup=0):
    """``warmup``: untimed rounds first (a model of many shapes compiles each shape's kernels once)."""
    key = jax.random.key(0)
    _warm(kind, x, lambda m, p: m.init(key, x))
    fns = {}
    for c in contenders:
        m = models.build(c, kind, n)
        fns[c] = timed(lambda m=m: m.init(key, x))
    return summarize(interleave(fns, rounds, warmup=warmup))


def eager_apply(kind, n, x, rounds, budget, extra=()):
    """``extra``: more contenders (e.g. the minimal scoped lookup), timed in the same rounds."""
    params = shared_weights(kind, n, x)
    flat = sp.flatten(params["scoped_params"])
    fns = {}
    for c in ALL + tuple(extra):
        m = models.build(c, kind, n)
        p = params[c] if c in params else (models.to_params(c, flat) if c in models._LAYER_APIS
                                           else params["jax"])
        fns[c] = lambda m=m, p=p: m.apply(p, x)
    return summarize(interleave_calls(fns, rounds, budget))


def jit_init_compile(kind, n, x, rounds):
    key = jax.random.key(0)

    def compile_init(m):
        init = m.init
        jax.jit(lambda k, x: init(k, x)).lower(key, x).compile()

    _warm(kind, x, lambda m, p: compile_init(m))
    fns = {}
    for c in ALL:
        m = models.build(c, kind, n)

        def run(m=m):
            t0 = time.perf_counter()
            compile_init(m)
            return time.perf_counter() - t0
        fns[c] = run
    # The target is against Haiku: hand-written JAX's and Flax's compiles (8 and 4 s) run once.
    return summarize(interleave(fns, rounds, warmup=0, limits={"jax": 1, "flax": 1}))


def stacked_compile(depths, x_width, rounds):
    """Compile time (trace + lower + compile of jitted apply) vs depth, unrolled vs sp.layer_stack.

    The block is a small residual MLP (two dense layers, tanh, a residual add).
    """
    layer_stack = getattr(sp, "layer_stack", None)
    if layer_stack is None:
        return {"status": "pending: sp.layer_stack does not exist yet"}
    import jax.numpy as jnp

    def block(x):
        h = x
        for name in ("in", "out"):
            with sp.scope(name):
                w = sp.get_param("w", (x_width, x_width))
                b = sp.get_param("b", (x_width,), init=jax.nn.initializers.zeros)
                h = jnp.tanh(h @ w + b)
        return x + h

    x = jnp.ones((2, x_width))
    out = {"depths": list(depths), "unrolled_s": [], "stacked_s": []}
    for depth in depths:
        def unrolled(x, depth=depth):
            for i in range(depth):
                with sp.scope(f"layer_{i}"):
                    x = block(x)
            return x

        def stacked(x, depth=depth):
            with sp.scope("stack"):
                return layer_stack(depth)(block)(x)

        fns = {}
        for label, fn in (("unrolled", unrolled), ("stacked", stacked)):
            model = sp.transform(fn)
            params = model.init(jax.random.key(0), x)

            def run(model=model, params=params):
                t0 = time.perf_counter()
                jax.jit(lambda p, x: model.apply(p, x)).lower(params, x).compile()
                return time.perf_counter() - t0
            fns[label] = run
        res = summarize(interleave(fns, rounds, warmup=1 if depth == depths[0] else 0),
                        base="unrolled")
        out["unrolled_s"].append(res["unrolled"]["median_s"])
        out["stacked_s"].append(res["stacked"]["median_s"])
    out["stacked_growth"] = out["stacked_s"][-1] / out["stacked_s"][0]
    out["unrolled_growth"] = out["unrolled_s"][-1] / out["unrolled_s"][0]
    return out


# --- targets ---------------------------------------------------------------------------------------


def _ratios_to(res, anchors) -> List[float]:
    """Per round: scoped_params' time / the best anchor's time in the same round."""
    rounds = zip(res["scoped_params"]["times_s"], *(res[a]["times_s"] for a in anchors))
    return [t / min(rest) for t, *rest in rounds]


def judge(results: Dict[str, dict]) -> List[dict]:
    """One row per target: the measured value (a median), and for time ratios ``band``, the middle
    half of the per-round ratios, which shows how far the median can move from run to run."""
    rows = []

    def row(metric, model, value, target, ok, note="", band=None):
        rows.append({"key": key, "metric": metric, "model": model, "value": value,
                     "target": target, "pass": ok, "note": note, "band": band})

    def ratios_to(r, anchors):
        ratios = _ratios_to(r, anchors)
        return statistics.median(ratios), middle_half(ratios)

    for key, label in (("apply_image_filter", "seeds' image filter"), ("apply_conv40", "40-deep conv stack")):
        if key in results:
            r = results[key]
            e = r["scoped_params"]
            row("jitted apply step", label, f"{e['ratio']:.3f}x", "<= 1.05x", e["ratio"] <= 1.05,
                band=e.get("ratio_band"))
            hs, hj = r["scoped_params"]["hlo_instructions"], r["jax"]["hlo_instructions"]
            row("optimized HLO instructions", label, f"{hs} vs {hj}", "equal", hs == hj)
    for key, label in (("trace_conv40", "40-deep conv stack"), ("trace_tiny_1000", "1,000 tiny layers"),
                       ("trace_tiny_4000", "4,000 tiny layers")):
        if key in results:
            e = results[key]["scoped_params"]
            named = results[key].get("jax_named_scopes")
            floor = f"hand-written with the same named scopes: {named['ratio']:.2f}x" if named else ""
            apis = [f"{label} {results[key][c]['ratio']:.2f}x" for c, label in LAYER_APIS
                    if c in results[key]]
            if apis:
                floor += "; written with " + ", ".join(apis)
            fastest = min(e["times_s"]) / min(results[key]["jax"]["times_s"])
            floor += ("; " if floor else "") + f"fastest round of each: {fastest:.2f}x"
            row("trace time (jit.lower)", label, f"{e['ratio']:.3f}x", "<= 1.10x", e["ratio"] <= 1.10,
                floor, band=e.get("ratio_band"))
    for key, label in (("init_conv40", "40-deep conv stack, 8x32x32x32"),
                       ("init_widening_20", "20-layer widening MLP, 40 shapes"),
                       ("init_same_4000", "4,000 same-shape params")):
        if key in results:
            rel, band = ratios_to(results[key], ("haiku", "flax"))
            row("eager init", label, f"{rel:.3f}x best of Haiku/Flax", "<= 0.5x", rel <= 0.5, band=band)
    key = "eager_apply_two_layer"
    if key in results:
        e = results[key]["scoped_params"]
        lookup = results[key].get("jax_scoped_lookup")
        floor = f"a scoped lookup with no checks at all: {lookup['ratio']:.2f}x" if lookup else ""
        apis = [f"{label} {results[key][c]['ratio']:.2f}x" for c, label in LAYER_APIS
                if c in results[key]]
        if apis:
            floor += ("; " if floor else "") + "written with " + ", ".join(apis)
        row("eager apply per call", "tiny 2-layer model", f"{e['ratio']:.3f}x", "<= 1.15x",
            e["ratio"] <= 1.15, floor, band=e.get("ratio_band"))
    key = "jit_init_compile_conv40"
    if key in results:
        rel, band = ratios_to(results[key], ("haiku",))
        row("jit(init) compile", "40-deep conv stack", f"{rel:.3f}x Haiku", "<= 0.25x", rel <= 0.25,
            band=band)
    key = "compile_vs_depth"
    if key in results:
        r = results[key]
        if "status" in r:
            row("compile vs depth", "repeated block, unrolled vs stacked", "pending", "stacked flat",
                None, r["status"])
        else:
            flat = r["stacked_growth"] <= 1.5
            row("compile vs depth", "repeated block, unrolled vs stacked",
                f"stacked x{r['stacked_growth']:.2f}, unrolled x{r['unrolled_growth']:.2f} "
                f"from depth {r['depths'][0]} to {r['depths'][-1]}", "stacked flat (<= 1.5x)", flat)
    return rows


def _fmt_band(band) -> str:
    return f"{band[0]:.2f}-{band[1]:.2f}x" if band else ""


# --- output ----------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import flax
    import haiku
    import jaxlib
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "dm-haiku": haiku.__version__, "flax": flax.__version__,
            "scoped_params": sp.__version__, "load_average_at_start": load}


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it: an interrupted run leaves the
    previous results whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


METRIC_LABELS = {
    "apply_image_filter": "jitted apply, seeds' image filter (2 images, 8x32x32x32 each)",
    "apply_conv40": "jitted apply, 40-deep 5x5x32x32 conv stack (8x32x32x32)",
    "trace_conv40": "trace (jit.lower), 40-deep conv stack",
    "trace_tiny_250": "trace (jit.lower), 250 tiny layers",
    "trace_tiny_1000": "trace (jit.lower), 1,000 tiny layers",
    "trace_tiny_4000": "trace (jit.lower), 4,000 tiny layers",
    "init_conv40": "eager init, 40-deep conv stack (8x32x32x32)",
    "init_widening_20": "eager init, 20-layer MLP widening by one per layer (40 shapes)",
    "init_same_250": "eager init, 250 same-shape params",
    "init_same_1000": "eager init, 1,000 same-shape params",
    "init_same_4000": "eager init, 4,000 same-shape params",
    "eager_apply_two_layer": "eager apply per call, tiny 2-layer model",
    "jit_init_compile_conv40": "jit(init) lower+compile, 40-deep conv stack",
}


# Extra contenders of the tiny-layer traces and of eager apply: the same model through the layer APIs
# (bench/models.py).
LAYER_APIS = (("scoped_params_layers", "sp.layers.dense"), ("scoped_params_slim", "slim.fully_connected"),
              ("scoped_params_objects", "sp.layers.Dense(...)"))


# Why a target can miss, shown under the table for each missed row (measured while building bench/).
WHY_MISSED = {
    "trace time (jit.lower)": (
        "Each `sp.scope` opens a `jax.named_scope`, so XLA op metadata carries the scope path "
        "(pinned by `tests/test_transforms_numerics.py`). Hand-written JAX with the same named scopes, "
        "timed in the same rounds (in parentheses above), already spends 0.04-0.18 of the 0.10 budget "
        "in this machine's runs: JAX traces and lowers each layer's ops under a new name stack. "
        "scoped_params' own bookkeeping, constant per scope and per parameter (no scans), is the rest: the scope object, "
        "name-scope uniquification, `default_name` counters, reuse checks, creation sites for error "
        "messages and the check that no cached JAX trace reads parameters. Counted with callgrind "
        "(`make bench-instructions`, 1,000 tiny layers), the trace alone (`jit(f).trace`) is 1.039x "
        "hand-written JAX's machine instructions (named scopes alone: 1.019x), and the trace with its "
        "lowering, which this row times, 1.0245x (named scopes alone: 1.0223x): lowering spells the "
        "name stack of a scope once for all its ops, where JAX spells it op by op, which pays back "
        "most of the bookkeeping. In time it costs more than its instructions say: between JAX's "
        "tracing of the layers' ops its code and objects are cold (`bench/trace_cost.py`: ~5 us per "
        "layer in a trace that stages no ops, ~10 us beyond the named-scopes floor in one that "
        "stages them). The layer APIs trace below hand-written "
        "JAX (0.87x, 0.89x and 0.91x of its instructions for `sp.layers.dense`, `slim.fully_connected` "
        "and `sp.layers.Dense` objects): their matmul and bias are one jitted, inlined function, "
        "which stages the same ops with less of jax.numpy's Python; in time it costs more, as its dictionaries are cold deep in a trace, and timings on a "
        "loaded machine swing by more than the 0.10 budget (see the middle half of the rounds). On the "
        "conv stack the ratio is within target."),
    "jitted apply step": (
        "The jitted program is the hand-written one: the optimized HLO has the same instruction count "
        "(the row below each apply row), so every contender runs the same XLA program, and their "
        "differences are the machine's noise in running it (the middle half of the rounds spans the "
        "target)."),
    "eager apply per call": (
        "Hand-written apply of the tiny model is six op dispatches (~40-140 us on this shared "
        "machine, ~300k machine instructions); the contenders take turns in blocks of ~5 ms, so "
        "each round's ratio compares calls made under the same load. Any scoped lookup adds Python "
        "work to each call, and between JAX's dispatches that work costs about twice what it costs "
        "alone (`bench/eager_cost.py`, on a slow day: a pure-Python loop of ~18 us adds ~21 us to a "
        "hand-written call, the minimal lookup of ~4 us adds ~9 us, scoped_params' bookkeeping of "
        "~20 us adds ~43 us; on a fast one: 5.7 us adds 7.6 us, 1.4 us adds 2.7 us, 7.3 us adds "
        "14.8 us): it reads objects and bytecode that the dispatch has pushed out of the caches. The "
        "reference in parentheses (a context variable, a `with` block per scope and a function call "
        "per parameter, with no checks at all) adds 10-14k machine instructions; scoped_params "
        "adds 76-82k (five counts with callgrind by `make bench-instructions`); its parts, counted "
        "one by one (~72k in all): the call itself (the trace frame, the root scope) ~14k, two "
        "scopes ~29k and four `get_param` ~29k, with TF's reuse "
        "checks, shape and dtype checks, name-scope uniquification, `default_name` counters and "
        "creation sites for error messages. 1.15x would leave about a fifth of that. Haiku adds "
        "~10x and Flax 50-85x on the same model. The layer APIs run each layer's matmul and bias "
        "in one dispatch (hand-written JAX: two), which pays for most of their bookkeeping "
        "(`sp.layers.dense` in the parentheses above). A scratch prototype of the cheapest design that "
        "still checks each request (the previous call's requests recorded as a plan, each one "
        "validated against it, the bookkeeping rebuilt only on a mismatch) measured 1.21x in the "
        "same rounds, the reference 1.09x: not adopted (README)."),
    "jit(init) compile": (
        "XLA compiling random-bit generation dominates. scoped_params draws each group of "
        "same-shape parameters in one batched, flat draw (a rank-1 draw compiles several times "
        "faster than a rank-5 one) and unstacks it with one reused slicing kernel."),
    "eager init": (
        "init never runs the model's arithmetic, but it must trace the model abstractly to learn "
        "the parameters. On the conv stack that trace is cheap next to Haiku's and Flax's eager "
        "forward pass (~0.2x). With 4,000 tiny parameters each used by one op there is no arithmetic "
        "to save: most of init is the trace (the model's own op, scope and get_param bookkeeping; a "
        "parameter's placeholder is a new input of the traced jaxpr and stages no op), then one "
        "grouped initializer call and making 4,000 arrays; the garbage collector is paused for the "
        "call. In the widening MLP every parameter has its own shape, so each is its own group: one "
        "cached compiled call each, where Haiku and Flax dispatch a dozen ops per initializer. The "
        "rest is the trace, mostly JAX's: timed alone on a fast day, init took 3.1 ms, its trace "
        "2.5 ms, and `jax.make_jaxpr` of the same 20 layers written in plain JAX 2.2-2.6 ms (~9-10 ms "
        "on a slow day, about what dispatching their tiny ops eagerly costs Haiku); the draws 0.46 ms. "
        "The row sits on the 0.5x line from run to run."),
}


def write_markdown(path: Path, results: dict, rows: List[dict], info: dict, wall: float) -> None:
    lines = ["# Benchmark results", "",
             "Generated by `make bench` (`bench/run.py`); raw numbers in `bench/results/latest.json`.",
             "Contenders run interleaved in one process; each figure is a median over rounds, and a",
             "ratio is the median of per-round ratios to hand-written JAX (= 1). The middle half of",
             "the per-round ratios (first to third quartile) shows the noise: a rerun's median",
             "usually lands inside it (`make bench-check` reruns and compares). In the trace rows,",
             "Haiku, Flax and the layer-API variants run only the first rounds (`runs` in",
             "`latest.json`): no target is judged on them.", "",
             "## Machine", "",
             f"- CPU: {info['cpu']}, {info['cores']} cores (shared; load average at start "
             f"{', '.join(f'{x:.2f}' for x in info['load_average_at_start'] or ())})",
             f"- Python {info['python']}, jax {info['jax']} / jaxlib {info['jaxlib']}, dm-haiku "
             f"{info['dm-haiku']}, flax {info['flax']}, scoped_params {info['scoped_params']}",
             f"- `bench/run.py` wall time: {wall:.0f} s (`make bench` adds only the install check)", "",
             "## Targets", "", "| metric | model | scoped_params | middle half of rounds | target | |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        mark = "pending" if r["pass"] is None else ("pass" if r["pass"] else "**miss**")
        value = f"{r['value']} ({r['note']})" if r["note"] and r["pass"] is not None else r["value"]
        lines.append(f"| {r['metric']} | {r['model']} | {value} | {_fmt_band(r.get('band'))} "
                     f"| {r['target']} | {mark} |")
    lines += ["", "## Time relative to hand-written JAX at a glance", "", readme_table(results, rows)]
    missed = sorted({r["metric"] for r in rows if r["pass"] is False and r["metric"] in WHY_MISSED})
    if missed:
        lines += ["", "### Why the misses", ""]
        lines += [f"- **{m}**: {WHY_MISSED[m]}" for m in missed]
    lines += ["", "## All figures (median; ratio to hand-written JAX)", "",
              "| metric | hand-written JAX | scoped_params | Haiku | Flax linen |",
              "| --- | --- | --- | --- | --- |"]
    for key, label in METRIC_LABELS.items():
        r = results.get(key)
        if not r:
            continue
        cells = []
        for c in ALL:
            e = r.get(c)
            if e is None:
                cells.append("—")
            else:
                extra = f" ({e['ratio']:.2f}x)" if "ratio" in e and c != "jax" else ""
                hlo = f", {e['hlo_instructions']} HLO instr." if "hlo_instructions" in e else ""
                cells.append(_fmt_time(e["median_s"]) + extra + hlo)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    api_rows = [(key, results[key]) for key in METRIC_LABELS
                if any(c in results.get(key, {}) for c, _ in LAYER_APIS)]
    if api_rows:
        lines += ["", "## The tiny models written with the layer APIs", "",
                  "The same model as a TF 1.x port writes it, with default names, timed in the same "
                  "rounds (median; ratio to hand-written JAX).", "",
                  "| metric | hand-written JAX | scoped_params (get_param) | "
                  + " | ".join(f"`{label}`" for _, label in LAYER_APIS) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in LAYER_APIS) + " |"]
        for key, r in api_rows:
            cells = [_fmt_time(r["jax"]["median_s"])]
            for c in ("scoped_params",) + tuple(c for c, _ in LAYER_APIS):
                e = r.get(c)
                cells.append(f"{_fmt_time(e['median_s'])} ({e['ratio']:.2f}x)" if e else "—")
            lines.append(f"| {METRIC_LABELS[key]} | " + " | ".join(cells) + " |")
    cvd = results.get("compile_vs_depth")
    if cvd:
        lines += ["", "## Compile time vs depth (jit of apply: trace + lower + compile)", ""]
        if "status" in cvd:
            lines.append(cvd["status"])
        else:
            lines += ["| depth | unrolled | sp.layer_stack |", "| --- | --- | --- |"]
            for d, u, s in zip(cvd["depths"], cvd["unrolled_s"], cvd["stacked_s"]):
                lines.append(f"| {d} | {_fmt_time(u)} | {_fmt_time(s)} |")
    lines += ["", "![cost vs number of parameters](results/cost_vs_params.png)", ""]
    write_atomic(path, "\n".join(lines))


README_ROWS = (
    ("apply_image_filter", "jitted apply step", "seeds' image filter"),
    ("apply_conv40", "jitted apply step", "40-deep conv stack"),
    ("trace_conv40", "trace (`jit(f).lower`)", "40-deep conv stack"),
    ("trace_tiny_1000", "trace (`jit(f).lower`)", "1,000 tiny layers"),
    ("trace_tiny_4000", "trace (`jit(f).lower`)", "4,000 tiny layers"),
    ("init_conv40", "eager init", "40-deep conv stack"),
    ("init_widening_20", "eager init", "20-layer widening MLP (40 shapes)"),
    ("init_same_4000", "eager init", "4,000 same-shape params"),
    ("eager_apply_two_layer", "eager apply per call", "tiny 2-layer model"),
    ("jit_init_compile_conv40", "`jit(init)` compile", "40-deep conv stack"),
)


def readme_table(results: dict, rows: List[dict]) -> str:
    """The README's table: time relative to hand-written JAX (= 1) per contender, and the target."""
    judged = {}
    for r in rows:  # the time-based row of each metric (not the HLO count)
        if not r["metric"].startswith("optimized HLO"):
            judged.setdefault(r["key"], r)
    lines = ["| metric | model | scoped_params (middle half of rounds) | Haiku | Flax linen "
             "| target for scoped_params | |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, metric, model in README_ROWS:
        r = results.get(key)
        j = judged.get(key)
        if r and j:
            cells = [f"{r[c]['ratio']:.2f}x" for c in ("scoped_params", "haiku", "flax")]
            band = r["scoped_params"].get("ratio_band")  # absent in results of older runs
            if band:
                cells[0] += f" ({_fmt_band(band)})"
            target = j["target"]
            if " " in j["value"]:  # "0.219x best of Haiku/Flax": the target is relative to anchors
                measured, anchor = j["value"].split(" ", 1)
                target = f"{target} {anchor} (measured {measured})"
            if j["note"] and j["pass"] is not None:
                target = f"{target} ({j['note']})"
            mark = "pass" if j["pass"] else "**miss**"
            lines.append(f"| {metric} | {model} | " + " | ".join(cells) + f" | {target} | {mark} |")
    return "\n".join(lines)


def plot(path: Path, results: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - used as matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("trace_tiny_", 2, "trace time, jit(apply).lower (tiny dense layers)"),
              ("init_same_", 1, "eager init (same-shape tiny parameters)"))
    for ax, (prefix, per_layer, title) in zip(axes, panels):
        sizes = sorted(int(k[len(prefix):]) for k in results if k.startswith(prefix))
        if not sizes:
            continue
        labels = ("hand-written JAX", "scoped_params", "Haiku", "Flax linen")
        for c, label, style in zip(ALL, labels, ("k-o", "C0-s", "C1-^", "C2-v")):
            ys = [results[f"{prefix}{n}"][c]["median_s"] for n in sizes]
            ax.plot([n * per_layer for n in sizes], ys, style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("number of parameters")
        ax.set_ylabel("seconds (median)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


# --- rerun check -----------------------------------------------------------------------------------


def _bands_overlap(a: List[float], b: List[float]) -> bool:
    return max(a[0], b[0]) <= min(a[1], b[1])


def compare(old: dict, new: dict) -> dict:
    """Every ratio to hand-written JAX that two result files both hold, and whether the runs agree
    within noise: the middle halves of their per-round ratios overlap. Also each target's verdict in
    both. Computed from the recorded round times, so results of any earlier run compare."""
    figures = []
    for key, label in METRIC_LABELS.items():
        a, b = old["results"].get(key), new["results"].get(key)
        if not a or not b or "jax" not in a or "jax" not in b:
            continue
        for c in a:
            if c == "jax" or not isinstance(b.get(c), dict) or "times_s" not in b[c]:
                continue
            ra = [t / h for t, h in zip(a[c]["times_s"], a["jax"]["times_s"])]
            rb = [t / h for t, h in zip(b[c]["times_s"], b["jax"]["times_s"])]
            ba, bb = middle_half(ra), middle_half(rb)
            figures.append({"metric": label, "contender": c, "old": statistics.median(ra), "old_band": ba,
                            "new": statistics.median(rb), "new_band": bb, "agree": _bands_overlap(ba, bb)})
    verdicts = []
    new_rows = {(r["key"], r["metric"]): r for r in new["targets"]}
    for r in old["targets"]:
        n = new_rows.get((r["key"], r["metric"]))
        if n is not None:
            verdicts.append({"metric": r["metric"], "model": r["model"], "old": r["value"],
                             "old_pass": r["pass"], "new": n["value"], "new_pass": n["pass"]})
    return {"figures": figures, "targets": verdicts}


def comparison_markdown(cmp: dict, old_name: str, new_name: str) -> str:
    def mark(ok):
        return "pending" if ok is None else ("pass" if ok else "miss")

    figures, targets = cmp["figures"], cmp["targets"]
    agree = sum(f["agree"] for f in figures)
    same = sum(t["old_pass"] == t["new_pass"] for t in targets)
    lines = [f"# {old_name} vs {new_name}", "",
             f"{agree} of {len(figures)} ratios to hand-written JAX agree within noise (the middle halves "
             f"of the two runs' per-round ratios overlap); {same} of {len(targets)} targets get the same "
             "verdict.", "", "| metric | contender | " + old_name + " | " + new_name + " | within noise |",
             "| --- | --- | --- | --- | --- |"]
    for f in figures:
        within = "yes" if f["agree"] else "**no**"
        lines.append(f"| {f['metric']} | {f['contender']} | {f['old']:.2f}x ({_fmt_band(f['old_band'])}) "
                     f"| {f['new']:.2f}x ({_fmt_band(f['new_band'])}) | {within} |")
    lines += ["", "| target | model | " + old_name + " | " + new_name + " |", "| --- | --- | --- | --- |"]
    for t in targets:
        lines.append(f"| {t['metric']} | {t['model']} | {t['old']} ({mark(t['old_pass'])}) "
                     f"| {t['new']} ({mark(t['new_pass'])}) |")
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------


def plan(quick: bool):
    """(metric name, thunk) in run order. Sizes and rounds shrink in quick mode."""
    conv = models.example_input("conv")
    img = models.example_input("image_filter")
    tiny = models.example_input("dense")
    r = (lambda full, q: q if quick else full)
    depth = r(40, 4)
    tiny_sizes = r((250, 1000, 4000), (50, 200))
    same_sizes = r((250, 1000, 4000), (50, 200))
    # Rounds are set so that `make bench` (with the install from scratch) stays well within 10 minutes
    # on 2 cores; the tiny-layer traces get the most, as their targets are the closest calls. Haiku,
    # Flax and the layer-API variants trace in fewer rounds there: no target is judged on them.
    rounds = {250: 5, 1000: 3, 4000: 5}
    trace_rounds = {250: 9, 1000: 25, 4000: 7}
    reference_rounds = {250: 3, 1000: 3, 4000: 2}
    steps = [
        ("apply_image_filter", lambda: jitted_apply("image_filter", 0, img, r(15, 3), r(0.1, 0.02))),
        ("apply_conv40", lambda: jitted_apply("conv", depth, conv, r(9, 3), r(0.1, 0.02))),
        ("trace_conv40", lambda: trace_time("conv", depth, conv, r(11, 3))),
    ]
    for n in tiny_sizes:
        # The layer APIs ride along where a round is short (the 4,000-layer one would add ~45 s).
        apis = tuple(c for c, _ in LAYER_APIS) if n <= 1000 else ()
        steps.append((f"trace_tiny_{n}", lambda n=n, apis=apis: trace_time(
            "dense", n, tiny, r(trace_rounds.get(n, 3), 3), extra=("jax_named_scopes",) + apis,
            reference_rounds=r(reference_rounds.get(n), None))))
    steps += [("init_conv40", lambda: eager_init("conv", depth, conv, r(9, 3))),
              ("init_widening_20", lambda: eager_init("widening", r(20, 4), tiny, r(9, 3), warmup=1))]
    for n in same_sizes:
        steps.append((f"init_same_{n}", lambda n=n: eager_init("same_shape", n, tiny, r(rounds.get(n, 3), 3))))
    steps += [
        ("eager_apply_two_layer", lambda: eager_apply(
            "two_layer", 0, tiny, r(15, 3), r(0.1, 0.01),
            extra=("jax_scoped_lookup",) + tuple(c for c, _ in LAYER_APIS))),
        ("jit_init_compile_conv40", lambda: jit_init_compile("conv", depth, conv, r(2, 1))),
        ("compile_vs_depth", lambda: stacked_compile(r((4, 16, 64), (2, 4)), 32, r(2, 1))),
    ]
    return steps


# Per-step wall-clock budgets (seconds, warm-up included): on 2 idle cores each step takes about its
# budget or less (the longest ones are cut a round or two short on a busy machine); on a slower machine
# they cut rounds (never below MIN_ROUNDS) instead of pushing `make bench` past 10 minutes. Past
# RUN_BUDGET seconds of the whole run, every remaining step runs its minimum rounds.
BUDGETS = {"apply_image_filter": 18.0, "apply_conv40": 30.0, "trace_conv40": 15.0, "trace_tiny_250": 20.0,
           "trace_tiny_1000": 60.0, "trace_tiny_4000": 110.0, "init_conv40": 20.0,
           "init_widening_20": 45.0, "init_same_250": 15.0, "init_same_1000": 20.0,
           "init_same_4000": 40.0, "eager_apply_two_layer": 30.0}
RUN_BUDGET = 450.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few rounds (smoke run)")
    ap.add_argument("--only", default="", help="comma-separated metric names to run")
    ap.add_argument("--table", action="store_true",
                    help="print the README table from bench/results/latest.json and exit")
    ap.add_argument("--out", default=None, help="results directory (default bench/results; "
                    "--quick writes nothing unless given)")
    ap.add_argument("--check", action="store_true",
                    help="rerun into a new directory (the committed results stay) and compare the rerun "
                    "with bench/results/latest.json (`make bench-check`)")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                    help="compare two latest.json files and exit")
    args = ap.parse_args(argv)
    committed = HERE / "results" / "latest.json"
    if args.table:
        payload = json.loads(committed.read_text())
        print(readme_table(payload["results"], payload["targets"]))
        return 0
    if args.compare:
        old, new = (json.loads(Path(p).read_text()) for p in args.compare)
        print(comparison_markdown(compare(old, new), *args.compare))
        return 0
    if args.check:
        if args.quick:
            ap.error("--check reruns the full benchmark: its sizes are the committed results' sizes")
        args.out = args.out or tempfile.mkdtemp(prefix="bench-check-")
    t_start = time.perf_counter()
    info = machine()
    print(f"# {info['cpu']} x{info['cores']}, jax {info['jax']}, haiku {info['dm-haiku']}, "
          f"flax {info['flax']}, load {info['load_average_at_start']}", flush=True)
    only = {s for s in args.only.split(",") if s}
    results = {}
    for name, thunk in plan(args.quick):
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        over = time.perf_counter() - t_start > RUN_BUDGET
        _step_budget[0] = None if args.quick else (0.0 if over else BUDGETS.get(name))
        results[name] = res = thunk()
        brief = ", ".join(f"{c} {_fmt_time(e['median_s'])}" + (f" ({e['ratio']:.2f}x)" if "ratio" in e else "")
                          for c, e in res.items() if isinstance(e, dict) and "median_s" in e)
        print(f"{name:26s} {time.perf_counter() - t0:6.1f}s  {brief or res}", flush=True)
    rows = judge(results)
    wall = time.perf_counter() - t_start
    for r in rows:
        mark = "pending" if r["pass"] is None else ("pass" if r["pass"] else "MISS")
        note = f"; {r['note']}" if r["note"] else ""
        print(f"{mark:8s} {r['metric']} / {r['model']}: {r['value']} (target {r['target']}{note})")
    print(f"# wall time {wall:.0f} s")
    if args.quick and args.out is None or only and args.out is None:
        return 0
    out = Path(args.out) if args.out else HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "wall_time_s": wall, "quick": args.quick, "results": results,
               "targets": rows}
    write_atomic(out / "latest.json", json.dumps(payload, indent=1, default=float))
    plot(out / "cost_vs_params.png", results)
    md = HERE / "RESULTS.md" if args.out is None else out / "RESULTS.md"
    write_markdown(md, results, rows, info, wall)
    print(readme_table(results, rows))
    print(f"# wrote {out / 'latest.json'}, {md}, {out / 'cost_vs_params.png'}")
    if args.check:
        report = comparison_markdown(compare(json.loads(committed.read_text()), payload),
                                     "committed", "rerun")
        write_atomic(out / "COMPARISON.md", report + "\n")
        print(report)
        print(f"# wrote {out / 'COMPARISON.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
