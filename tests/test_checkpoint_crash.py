"""Crash safety: a process killed (SIGKILL) at a random point of sp.checkpoint.save never leaves a
file at `path` that fails to load or holds anything but the old or the new params."""

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from scoped_params import checkpoint as ckpt

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork and SIGKILL")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One helper process pays the import once, then forks a fresh saver per trial. The saver writes the
# two trees alternately, as fast as it can, until it is killed: the kill lands anywhere in a save
# (serializing, mid-write, before or after fsync, around the rename) or between saves.
HELPER = textwrap.dedent("""
    import os, random, signal, sys, time
    import numpy as np
    from scoped_params import checkpoint as ckpt

    def trees():
        rng = np.random.default_rng(0)
        old = {"net": {"w": rng.standard_normal((512, 512)).astype(np.float32),
                       "b": np.zeros(512, np.float32)}, "step": np.int64(1)}
        new = {"net": {"w": rng.standard_normal((512, 512)).astype(np.float32),
                       "b": np.ones(512, np.float32)}, "step": np.int64(2),
               "extra": {"emb": rng.standard_normal((300, 64)).astype(np.float32)}}
        return old, new

    path = sys.argv[1]
    old, new = trees()
    t0 = time.perf_counter()
    for _ in range(3):
        ckpt.save(path, new)
        ckpt.save(path, old)
    save_time = (time.perf_counter() - t0) / 6
    print(f"ready {save_time:.6f}", flush=True)
    rng = random.Random(int(sys.argv[2]))
    for line in sys.stdin:
        delay = float(line)
        pid = os.fork()
        if pid == 0:  # the saver
            try:
                while True:
                    ckpt.save(path, new)
                    ckpt.save(path, old)
            finally:
                os._exit(0)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        print("killed" if os.WIFSIGNALED(status) else "exited", flush=True)
""")


def _trees():
    namespace = {}
    exec(HELPER.split("path = sys.argv[1]")[0], namespace)  # the same trees() as the helper
    return namespace["trees"]()


def _equal(a, b):
    from scoped_params import flatten
    fa, fb = flatten(a), flatten(b)
    return fa.keys() == fb.keys() and all(
        np.asarray(fa[k]).dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]) for k in fa)


def test_killing_a_saving_process_at_random_points_always_leaves_old_or_new_params(tmp_path):
    path = str(tmp_path / "params.safetensors")
    old, new = _trees()
    seed = int.from_bytes(os.urandom(4), "little")
    helper = subprocess.Popen(
        [sys.executable, "-c", HELPER, path, str(seed)], cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")})
    try:
        ready = helper.stdout.readline().split()
        assert ready and ready[0] == "ready", f"helper failed to start: {ready}"
        save_time = float(ready[1])
        rng = np.random.default_rng(seed)
        seen = {"old": 0, "new": 0}
        mid_write = trials = 0
        deadline = time.monotonic() + 30
        # At least 25 kills; go on (up to 80) until some kills have hit a save mid-write.
        while trials < 25 or (mid_write < 3 and trials < 80 and time.monotonic() < deadline):
            # Uniform over about three saves, so kills land in every phase of a save.
            helper.stdin.write(f"{rng.uniform(0, 3 * save_time):.6f}\n")
            helper.stdin.flush()
            assert helper.stdout.readline().strip() == "killed"
            trials += 1
            leftovers = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
            mid_write += bool(leftovers)
            for f in leftovers:  # a killed save's temporary file: never read, safe to delete
                os.unlink(tmp_path / f)
            loaded = ckpt.load(path)  # must not raise
            if _equal(old, loaded):
                seen["old"] += 1
            else:
                assert _equal(new, loaded), f"trial {trials} (seed {seed}): neither old nor new"
                seen["new"] += 1
        print(f"\n{trials} kills (seed {seed}): file held old {seen['old']}x, new {seen['new']}x; "
              f"{mid_write} kills left a half-written temporary file; save takes "
              f"{save_time * 1e3:.1f} ms")
        assert trials >= 25
        assert mid_write >= 1, "no kill landed inside a save; the test did not exercise anything"
    finally:
        helper.stdin.close()
        helper.wait(timeout=30)
