"""Machine instructions per trace and per eager call, counted with valgrind's callgrind.

Timings on a shared 2-core machine move by 1-2% from run to run, more than a change to the per-scope
bookkeeping does; instruction counts repeat to ~0.1%. This script counts what ``make bench``'s two
closest targets time, with garbage collection off in the counted regions:

* the trace (``jit(f).trace``) of N tiny layers: hand-written JAX, the same with ``jax.named_scope``
  per layer, scoped_params, and scoped_params through ``sp.layers.dense``,
  ``slim.fully_connected`` and ``sp.layers.Dense`` objects (default names);
* the trace and lowering (``jit(f).lower``, what ``make bench`` times) of the same tiny layers:
  hand-written JAX, with named scopes, and scoped_params;
* an eager ``apply`` of the tiny 2-layer model: hand-written JAX, the same reading its parameters
  through a scoped lookup with no checks (``models._hand_scoped_lookup``), and scoped_params.

Usage (needs ``valgrind`` on the PATH; about 10 minutes for N=1000)::

    python bench/instructions.py [N]

It runs itself under callgrind: the child brackets each counted region with ``os.getppid()`` and
``os.getpgrp()``, which callgrind is told to zero and dump at.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
EAGER_CALLS = 200
# The traced contenders: hand-written, with named scopes, scoped_params, and scoped_params through the
# layer APIs (sp.layers.dense, slim.fully_connected, sp.layers.Dense objects; bench/models.py).
TRACED = ("jax", "jax_named_scopes", "scoped_params", "scoped_params_layers", "scoped_params_slim",
          "scoped_params_objects")
LOWERED = ("jax", "jax_named_scopes", "scoped_params")  # traced and lowered


def _regions(n_layers: int):
    """(label, work) pairs, in the order they are counted; the child's side."""
    sys.path.insert(0, str(HERE))
    import jax
    import jax.numpy as jnp
    import numpy as np

    import models
    import scoped_params as sp

    x = jnp.ones((8, 4))
    spec = {}
    for i in range(n_layers):
        spec[f"layer_{i}/w"] = jax.ShapeDtypeStruct((4, 4), np.float32)
        spec[f"layer_{i}/b"] = jax.ShapeDtypeStruct((4,), np.float32)
    regions = []
    for c in TRACED:
        apply = models.build(c, "dense", n_layers).apply
        regions.append((f"trace/{c}", lambda apply=apply, p=models.to_params(c, spec): jax.jit(
            lambda p, x: apply(p, x)).trace(p, x)))
    for c in LOWERED:
        apply = models.build(c, "dense", n_layers).apply
        regions.append((f"lower/{c}", lambda apply=apply, p=models.to_params(c, spec): jax.jit(
            lambda p, x: apply(p, x)).lower(p, x)))
    params = models.build("scoped_params", "two_layer").init(jax.random.key(0), x)
    for c in ("jax", "jax_scoped_lookup", "scoped_params"):
        apply = models.build(c, "two_layer").apply
        p = models.to_params(c, sp.flatten(params))

        def eager(apply=apply, p=p):
            for _ in range(EAGER_CALLS):
                apply(p, x)
        regions.append((f"eager/{c}", eager))
    return regions


def child(n_layers: int) -> None:
    regions = _regions(n_layers)
    for _, work in regions:  # warm: JAX's caches and each path's first use stay out of the counts
        work()
    os.getppid()  # callgrind's first dump also holds start-up costs: an empty region takes them
    os.getpgrp()
    for label, work in regions:
        print(label, flush=True)
        gc.collect()
        gc.disable()
        os.getppid()
        work()
        os.getpgrp()
        gc.enable()


def main() -> None:
    n_layers = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    if shutil.which("valgrind") is None:
        sys.exit("bench/instructions.py needs valgrind (callgrind) on the PATH.")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--zero-before=getppid", "--dump-before=getpgrp",
             f"--callgrind-out-file={tmp}/cg.%p", sys.executable, __file__, "--child", str(n_layers)],
            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        if out.returncode != 0:
            sys.exit(out.stderr[-3000:])
        labels = out.stdout.split()
        dumps = sorted(Path(tmp).glob("cg.*.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        counts = [int(re.search(r"^summary: (\d+)", d.read_text(), re.M).group(1)) for d in dumps]
    counts = dict(zip(labels, counts[1:]))  # the first dump is the empty start-up region
    base = counts["trace/jax"]
    print(f"trace of {n_layers} tiny layers (jit(f).trace), machine instructions:")
    for c in TRACED:
        n = counts[f"trace/{c}"]
        print(f"  {c:20s} {n / 1e6:9.1f} M  {n / base:.4f}x  ({(n - base) / n_layers:,.0f} per layer beyond jax)")
    named = counts["trace/jax_named_scopes"]
    sp_n = counts["trace/scoped_params"]
    print(f"  scoped_params / named scopes: {sp_n / named:.4f}x ({(sp_n - named) / n_layers:,.0f} per layer)")
    base = counts["lower/jax"]
    print(f"trace and lowering of {n_layers} tiny layers (jit(f).lower), machine instructions:")
    for c in LOWERED:
        n = counts[f"lower/{c}"]
        print(f"  {c:20s} {n / 1e6:9.1f} M  {n / base:.4f}x  ({(n - base) / n_layers:,.0f} per layer beyond jax)")
    hand = counts["eager/jax"] / EAGER_CALLS
    print(f"eager apply of the tiny 2-layer model, per call: jax {hand:,.0f}")
    for c in ("jax_scoped_lookup", "scoped_params"):
        n = counts[f"eager/{c}"] / EAGER_CALLS
        print(f"  {c:18s} {n:,.0f} ({n / hand:.3f}x, +{n - hand:,.0f})")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
    else:
        main()
