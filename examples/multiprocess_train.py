"""Two processes, one 2x4 mesh: train the sharded digits MLP, save and restore a sharded orbax checkpoint.

``python examples/multiprocess_train.py`` starts 2 worker processes on the loopback address, each with 4
host CPU devices, joined by ``jax.distributed.initialize`` (CPU collectives over gloo) into one
8-device mesh: ``batch`` (2) by ``model`` (4). Every parameter is created directly sharded across
both processes (``sp.init_sharded``); each device holds only its own shards. After training, the
params are saved with ``orbax.checkpoint`` (each process writes its shards) and restored into the
shardings ``sp.sharding.abstract_params`` computes from an abstract trace.

Each worker prints one ``RESULT {json}`` line; the launcher checks that both saw the same losses and
that the restored params equal the saved ones, and exits non-zero otherwise. Bounded time: workers
that do not finish within ``--timeout`` seconds are killed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile

NUM_PROCESSES = 2
LOCAL_DEVICES = 4
HERE = pathlib.Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- one worker process ----------------------------------------------------------------------------


def worker(process_id: int, port: int, ckpt_dir: str, steps: int) -> dict:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=NUM_PROCESSES,
                               process_id=process_id, initialization_timeout=60)
    import jax.numpy as jnp
    import numpy as np
    import optax
    import orbax.checkpoint as ocp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import scoped_params as sp

    sys.path.insert(0, str(HERE))
    import sharded_training as ex

    assert jax.device_count() == NUM_PROCESSES * LOCAL_DEVICES, jax.devices()
    mesh = ex.make_mesh()
    batch_size = 128
    x_all, y_all = ex.digits()
    example_x = jax.ShapeDtypeStruct((batch_size, x_all.shape[1]), jnp.float32)

    params = sp.init_sharded(ex.model, mesh, jax.random.key(0), example_x)
    param_shardings = sp.shardings(ex.model, mesh, example_x)
    optimizer = optax.adam(1e-2)
    opt_state, opt_shardings = ex.place_opt_state(optimizer.init(params), mesh)
    step = ex.make_step(optimizer, (param_shardings, opt_shardings))

    data = NamedSharding(mesh, P("batch"))

    def put(a):  # every process holds the same batch; each contributes its own devices' slices
        return jax.make_array_from_callback(a.shape, data, lambda index: a[index])

    losses = []
    for _, (xb, yb) in zip(range(steps), ex.batches(x_all, y_all, batch_size)):
        params, opt_state, loss = step(params, opt_state, put(xb), put(yb))
        losses.append(float(loss))

    path = pathlib.Path(ckpt_dir) / "params"
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, params)
    checkpointer.wait_until_finished()
    target = sp.sharding.abstract_params(ex.model, mesh, example_x)
    restored = checkpointer.restore(path, target)
    checkpointer.close()

    def same(a, b):
        return a.sharding == b.sharding and all(
            s.index == r.index and np.array_equal(np.asarray(s.data), np.asarray(r.data))
            for s, r in zip(a.addressable_shards, b.addressable_shards))

    leaves = jax.tree.leaves(params)
    restored_equal = all(jax.tree.leaves(jax.tree.map(same, params, restored)))
    per_device: dict = {}
    for p in leaves:
        for s in p.addressable_shards:
            per_device[s.device.id] = per_device.get(s.device.id, 0) + s.data.size
    result = {
        "process": jax.process_index(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "losses": losses,
        "restored_equal": bool(restored_equal),
        "shardings_kept": all(p.sharding.is_equivalent_to(s, p.ndim) for p, s in
                              zip(leaves, jax.tree.leaves(param_shardings))),
        "params_total": int(sum(p.size for p in leaves)),
        "params_per_device": int(max(per_device.values())),
    }
    jax.distributed.shutdown()
    return result


# --- the launcher ----------------------------------------------------------------------------------


def launch(steps: int = 5, timeout: float = 120.0) -> list:
    """Start the workers, wait at most ``timeout`` seconds, and return their parsed results."""
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={LOCAL_DEVICES}",
               PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    with tempfile.TemporaryDirectory(prefix="sp_multiprocess_") as ckpt_dir:
        procs = [subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", str(i), "--port",
             str(port), "--ckpt", ckpt_dir, "--steps", str(steps)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(NUM_PROCESSES)]
        outputs = []
        try:
            for p in procs:
                out, _ = p.communicate(timeout=timeout)
                outputs.append(out)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise RuntimeError(f"multiprocess_train: workers did not finish within {timeout} s")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    results = []
    for i, (p, out) in enumerate(zip(procs, outputs)):
        lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"worker {i} failed (exit code {p.returncode}):\n{out[-4000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ckpt", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if args.worker is not None:
        print("RESULT " + json.dumps(worker(args.worker, args.port, args.ckpt, args.steps)), flush=True)
        return 0
    results = launch(args.steps, args.timeout)
    for r in results:
        print(f"process {r['process']}: {r['local_devices']} of {r['devices']} devices, each holding "
              f"{r['params_per_device']} of {r['params_total']} parameter values; losses "
              f"{[round(v, 6) for v in r['losses']]}; restored == saved: {r['restored_equal']}; "
              f"shardings kept: {r['shardings_kept']}")
    same_loss = all(r["losses"] == results[0]["losses"] for r in results)
    ok = same_loss and all(r["restored_equal"] and r["shardings_kept"] for r in results)
    print(f"both processes report the same losses: {same_loss}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
