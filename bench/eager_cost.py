"""What the Python work of an eager ``apply`` costs between JAX's op dispatches (the eager-apply row).

Each line is a per-call time, the contenders taking turns in batches of 200 calls for 30 rounds
(medians; "+" is the difference to the hand-written call):

* the hand-written tiny 2-layer model (six op dispatches);
* a pure-Python loop alone, and then the hand-written call: the cost of ~10 us of Python that
  touches almost no memory, once JAX's dispatch has run in between;
* scoped_params' apply with the model's scopes and ``get_param`` calls but no arithmetic, alone
  and then the hand-written call; the same for the minimal scoped lookup (``models``).

Usage: ``python bench/eager_cost.py`` (about 30 seconds).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

import scoped_params as sp  # noqa: E402

ROUNDS, CALLS = 30, 200


def _busy() -> int:
    total = 0
    for i in range(330):
        total += i
    return total


def main() -> None:
    x = models.example_input("dense")
    hand = models.build("jax", "two_layer").apply
    params = sp.flatten(models.build("scoped_params", "two_layer").init(jax.random.key(0), x))
    p_hand = models.to_params("jax", params)
    p_sp = models.to_params("scoped_params", params)

    (s0, ((_, w0, _), (_, b0, _))), (s1, ((_, w1, _), (_, b1, _))) = models.two_layer()
    glorot, zeros = models._glorot, models._zeros

    def fetch(x):  # the scoped_params model's bookkeeping, spelled out as in models.py, no arithmetic
        with sp.scope(s0):
            p = (sp.get_param("w", w0, init=glorot), sp.get_param("b", b0, init=zeros))
        with sp.scope(s1):
            return p + (sp.get_param("w", w1, init=glorot), sp.get_param("b", b1, init=zeros))

    fetch_only = sp.transform(fetch).apply
    scope0, scope1 = models._LookupScope(s0), models._LookupScope(s1)
    read = models._lookup

    def lookup_fetch():  # the same through the minimal scoped lookup (models._hand_scoped_lookup)
        token = models._LOOKUP.set([p_hand])
        try:
            with scope0:
                p = (read("w", w0, init=glorot), read("b", b0, init=zeros))
            with scope1:
                return p + (read("w", w1, init=glorot), read("b", b1, init=zeros))
        finally:
            models._LOOKUP.reset(token)

    fns = {
        "hand-written call": lambda: hand(p_hand, x),
        "Python loop alone": _busy,
        "Python loop, then the call": lambda: (_busy(), hand(p_hand, x)),
        "scoped lookup alone": lookup_fetch,
        "scoped lookup, then the call": lambda: (lookup_fetch(), hand(p_hand, x)),
        "scoped_params apply alone": lambda: fetch_only(p_sp, x),
        "scoped_params apply, then the call": lambda: (fetch_only(p_sp, x), hand(p_hand, x)),
    }
    for fn in fns.values():
        fn()
    gc.collect()
    gc.disable()
    times = {k: [] for k in fns}
    for _ in range(ROUNDS):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(CALLS):
                fn()
            jax.block_until_ready(hand(p_hand, x))
            times[k].append((time.perf_counter() - t0) / (CALLS + 1))
    gc.enable()
    base = statistics.median(times["hand-written call"])
    for k, ts in times.items():
        med = statistics.median(ts)
        extra = f"  (+{(med - base) * 1e6:.1f} us)" if k.endswith("the call") else ""
        print(f"{k:36s} {med * 1e6:7.1f} us{extra}")


if __name__ == "__main__":
    jnp.zeros(())  # start JAX before timing
    main()
