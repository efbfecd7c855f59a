"""What scoped_params' bookkeeping costs per layer in a trace, alone and between JAX's ops.

The trace rows (``jit(f).lower`` of N tiny layers) put scoped_params at ~1.025x hand-written JAX in
machine instructions (``bench/instructions.py``) but 1.07-1.17x in time. This script times
``jit(f).trace`` of these models of N tiny layers, in interleaved rounds (medians):

* hand-written JAX, hand-written JAX with a ``jax.named_scope`` per layer (the floor: every
  ``sp.scope`` names its ops too) and scoped_params, each layer staging its three ops
  (``tanh(x @ w + b)``);
* the same two with the ops left out: each layer only reads its two parameters (a dict lookup, or
  ``sp.scope`` and two ``sp.get_param``);
* the control: hand-written JAX running a plain Python loop in each layer (a few microseconds of
  arithmetic on its locals), with and without the ops.

Per layer, ``scoped_params - hand-written`` is the bookkeeping's cost alone (no ops), and
``scoped_params - named scopes`` its cost between the ops beyond what naming them costs. The
bookkeeping is the same code either way; between JAX's tracing of the ops it finds
its code and objects pushed out of the CPU's caches, so it costs several times more. The control
tells how much of that any Python pays: a loop that touches only its locals and allocates nothing
costs 1.4x, 1.7x and 0.3x its time alone between the ops in three runs of 1,000 layers, where the
bookkeeping, which reads and allocates objects, cost 2.4x, 2.6x and 2.4x: some of the slowdown is
any Python's after JAX's tracing, most of it the bookkeeping's own footprint.

Usage: ``python bench/trace_cost.py [N]`` (N=1000 by default; about 25 seconds).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

import scoped_params as sp  # noqa: E402

ROUNDS = 16


def python_loop() -> int:
    """A few microseconds of Python that touches only its locals and allocates nothing (its ints
    stay below 256, which CPython keeps preallocated): the control."""
    total = 0
    for i in range(200):
        total = (total + i) & 127
    return total


def _contenders(n_layers: int):
    """{label: function tracing the model once}, and what each traces."""
    x = models.example_input("dense")
    flat = sp.flatten(models.build("scoped_params", "dense", n_layers).init(jax.random.key(0), x))
    p_sp, p_jax = models.to_params("scoped_params", flat), models.to_params("jax", flat)
    (_, ((_, w_shape, w_init), (_, b_shape, b_init))), = models.tiny_layers(1)

    def sp_reads(x):  # the scoped_params model's bookkeeping, as in models.py, no ops
        for i in range(n_layers):
            with sp.scope(f"layer_{i}"):
                sp.get_param("w", w_shape, init=w_init)
                sp.get_param("b", b_shape, init=b_init)
        return x

    def jax_reads(p, x):
        for i in range(n_layers):
            q = p[f"layer_{i}"]
            q["w"], q["b"]
        return x

    def jax_loop_reads(p, x):  # the control: a plain Python loop in each layer
        for i in range(n_layers):
            python_loop()
            q = p[f"layer_{i}"]
            q["w"], q["b"]
        return x

    def jax_loop_ops(p, x):
        for i in range(n_layers):
            python_loop()
            q = p[f"layer_{i}"]
            x = models.dense_tanh(x, q["w"], q["b"])
        return x

    sp_ops = models.build("scoped_params", "dense", n_layers).apply
    jax_ops = models.build("jax", "dense", n_layers).apply
    named_ops = models.build("jax_named_scopes", "dense", n_layers).apply
    sp_only = sp.transform(sp_reads).apply

    def trace(fn, params):  # a fresh function each time: jit's cache cannot hit
        return lambda: jax.jit(lambda p, x: fn(p, x)).trace(params, x)

    return {"hand-written, reads only": trace(jax_reads, p_jax),
            "scoped_params, reads only": trace(sp_only, p_sp),
            "hand-written, with ops": trace(jax_ops, p_jax),
            "named scopes, with ops": trace(named_ops, p_jax),
            "scoped_params, with ops": trace(sp_ops, p_sp),
            "Python loop, reads only": trace(jax_loop_reads, p_jax),
            "Python loop, with ops": trace(jax_loop_ops, p_jax)}


def measure(n_layers: int, rounds: int = ROUNDS) -> dict:
    """Median trace time of each contender, in seconds."""
    fns = _contenders(n_layers)
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    labels = list(fns)
    for r in range(rounds):
        for k in labels[r % len(labels):] + labels[:r % len(labels)]:
            gc.collect()
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(ts) for k, ts in times.items()}


def main() -> None:
    n_layers = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    med = measure(n_layers)
    for k, t in med.items():
        print(f"{k:28s} {t * 1e3:8.2f} ms")
    alone = (med["scoped_params, reads only"] - med["hand-written, reads only"]) / n_layers
    between = (med["scoped_params, with ops"] - med["named scopes, with ops"]) / n_layers
    print(f"scoped_params' bookkeeping per layer (a scope, two get_params): {alone * 1e6:.1f} us "
          f"alone; between the layers' ops, beyond the named-scopes floor: {between * 1e6:.1f} us "
          f"({between / alone:.1f}x)")
    loop_alone = (med["Python loop, reads only"] - med["hand-written, reads only"]) / n_layers
    loop_between = (med["Python loop, with ops"] - med["hand-written, with ops"]) / n_layers
    print(f"the control, a plain Python loop per layer: {loop_alone * 1e6:.1f} us alone; between the "
          f"layers' ops: {loop_between * 1e6:.1f} us ({loop_between / loop_alone:.1f}x)")


if __name__ == "__main__":
    main()
