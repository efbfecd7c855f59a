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


_KEY_WORKER = r'''
import json, os
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{os.environ['SP_PORT']}", num_processes=2,
                           process_id=int(os.environ["SP_PID"]), initialization_timeout=60)
import jax.numpy as jnp, numpy as np
from jax.experimental import multihost_utils
import scoped_params as sp

mesh = jax.make_mesh((jax.device_count(),), ("model",))
model = sp.transform(lambda x: x @ sp.get_param(
    "w", (4, 8), sharding=jax.sharding.PartitionSpec(None, "model")))
x = jnp.ones((2, 4))
result = {}
# a key committed to one of this process's devices: it could not be copied onto the other's
committed = jax.device_put(jax.random.key(0), jax.local_devices()[0])
w = sp.init_sharded(model, mesh, committed, x)["w"]
result["committed_equal"] = bool(np.array_equal(multihost_utils.process_allgather(w, tiled=True),
                                                model.init(0, x)["w"]))
try:
    sp.init_sharded(model, mesh, jax.random.key(jax.process_index()), x)
    result["different"] = "accepted"
except sp.KeyArgumentError as error:
    result["different"] = str(error)
print("RESULT " + json.dumps(result), flush=True)
jax.distributed.shutdown()
'''


def test_init_sharded_over_two_processes_takes_a_committed_key_and_refuses_keys_that_differ(tmp_path):
    # Before: a key committed to a local device was JAX's device_put ValueError; a key per process
    # built parameters mixed from both processes' draws, silently.
    import json, os, socket, subprocess, sys

    script = tmp_path / "worker.py"
    script.write_text(_KEY_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import scoped_params  # the workers import the package this test imports

    root = os.path.dirname(os.path.dirname(scoped_params.__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", SP_PORT=str(port),
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, str(script)], env=dict(env, SP_PID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=120)
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            assert p.returncode == 0 and lines, out[-3000:]
            results.append(json.loads(lines[-1][len("RESULT "):]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for index, result in enumerate(results):
        assert result["committed_equal"]
        assert "the processes passed different keys (process 1 passed another than process 0; " \
               f"this is process {index})" in result["different"]
