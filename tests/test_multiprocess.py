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


# Each worker script starts with this: a process of two on the loopback address, the directory
# of the test as sys.argv[1]; it ends printing its result as a "RESULT <json>" line.
_PREAMBLE = r"""
import json, os, sys, time
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"127.0.0.1:{os.environ['SP_PORT']}", num_processes=2,
                           process_id=int(os.environ["SP_PID"]), initialization_timeout=60)
import jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.experimental import multihost_utils
import scoped_params as sp
"""
_END = r"""
print("RESULT " + json.dumps(result), flush=True)
jax.distributed.shutdown()
"""


def _run_two_processes(tmp_path, body, devices=2, timeout=90):
    """The results of ``body`` (after ``_PREAMBLE``) run by two worker processes with ``devices``
    CPU devices each; a worker still running after ``timeout`` seconds (a deadlock) fails the test,
    and no worker outlives it."""
    import json, os, socket, subprocess, sys

    script = tmp_path / "worker.py"
    script.write_text(_PREAMBLE + body + _END)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import scoped_params  # the workers import the package this test imports

    root = os.path.dirname(os.path.dirname(scoped_params.__file__))
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               SP_PORT=str(port), PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=dict(env, SP_PID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    results = []
    try:
        for p in procs:
            try:
                out, _ = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                pytest.fail(f"a worker still ran after {timeout} s (a deadlock?):\n{out[-3000:]}")
            lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
            assert p.returncode == 0 and lines, out[-3000:]
            results.append(json.loads(lines[-1][len("RESULT "):]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


_KEY_WORKER = r"""
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
"""


def test_init_sharded_over_two_processes_takes_a_committed_key_and_refuses_keys_that_differ(tmp_path):
    # Before: a key committed to a local device was JAX's device_put ValueError; a key per process
    # built parameters mixed from both processes' draws, silently.
    results = _run_two_processes(tmp_path, _KEY_WORKER)
    for index, result in enumerate(results):
        assert result["committed_equal"]
        assert "the processes passed different keys (process 1 passed another than process 0; " \
               f"this is process {index})" in result["different"]


_LATE_LISTING_WORKER = r"""
mesh = jax.make_mesh((jax.device_count(),), ("model",))
w = jax.device_put(jnp.arange(8.0).reshape(4, 2), NamedSharding(mesh, P("model")))
result = {}
pruned = sp.checkpoint.TrainingCheckpointer(sys.argv[1] + "/pruned", max_to_keep=1)
pruned.save(1, {"w": w})
if jax.process_index() == 1:  # a host whose directory listings come late (a slow file system)
    listing = pruned._steps_on_disk

    def late():
        time.sleep(2)
        return listing()

    pruned._steps_on_disk = late
pruned.save(2, {"w": w})  # deletes step 1
result["pruned"] = pruned.all_steps()
rollback = sp.checkpoint.TrainingCheckpointer(sys.argv[1] + "/rollback", max_to_keep=None)
rollback.save(1, {"w": w})
rollback.save(2, {"w": w})
if jax.process_index() == 1:  # a host running behind
    time.sleep(2)
result["deleted"] = rollback.delete_steps_after(1)
result["kept"] = rollback.all_steps()
"""


def test_delete_steps_after_and_pruning_in_two_processes_agree_even_when_one_lists_late(tmp_path):
    # Before: each process listed the directory itself; the late one found the step already
    # deleted by process 0, skipped orbax's delete, and left process 0 waiting at its barrier
    # forever (and delete_steps_after returned [2] in one process, [] in the other).
    results = _run_two_processes(tmp_path, _LATE_LISTING_WORKER)
    assert results == [{"pruned": [2], "deleted": [2], "kept": [1]}] * 2


_HOST_VALUES_WORKER = r"""
import scoped_params.checkpoint as weights

mesh = jax.make_mesh((jax.device_count(),), ("model",))
w = jax.device_put(jnp.arange(8.0).reshape(4, 2), NamedSharding(mesh, P("model")))
state = {"w": w, "data_pos": np.array([100 + jax.process_index()]), "step": 7}
if jax.process_index() == 1:  # process 1 writes its files late, after process 0's
    write = weights._atomic_write

    def late(*args):
        time.sleep(1)
        return write(*args)

    weights._atomic_write = late
ckpt = sp.checkpoint.TrainingCheckpointer(sys.argv[1] + "/run")
ckpt.save(1, state)
try:
    restored = ckpt.restore(target=state)
    result = {"data_pos": restored["data_pos"].tolist(), "step": restored["step"]}
except sp.checkpoint.CheckpointError as error:
    result = {"error": str(error)}
"""


def test_a_state_whose_host_values_differ_between_processes_restores_as_orbax_stored_it(tmp_path):
    # Orbax stores host values (NumPy arrays, Python numbers) from process 0. Before: every process
    # wrote the step's checksums file, the last one winning: process 1's described a data_pos
    # never stored, and restore called the sound step damaged, advising to delete it.
    results = _run_two_processes(tmp_path, _HOST_VALUES_WORKER)
    assert results == [{"data_pos": [100], "step": 7}] * 2


_HELD_WHOLE_WORKER = r"""
devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
mesh = jax.sharding.Mesh(np.array(devices).reshape(2, 2), ("data", "model"))  # a row per process
value = np.arange(12.0, dtype=np.float32).reshape(4, 3)

def placed(spec):
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

params = {"replicated": placed(P()), "within": placed(P("model"))}  # each process holds all
across = placed(P("data"))  # each process holds half
path = os.path.join(sys.argv[1], f"params_{jax.process_index()}.safetensors")
sp.checkpoint.save(path, params)
result = {"loaded": {k: np.array_equal(v, value) for k, v in sp.checkpoint.load(path).items()}}
try:
    sp.checkpoint.save(path, {"across": across})
    result["across"] = "saved"
except TypeError as error:
    result["across"] = str(error)
ckpt = sp.checkpoint.TrainingCheckpointer(sys.argv[1] + "/run")
ckpt.save(1, {**params, "across": across})
with open(os.path.join(sys.argv[1], "run", "1", "scoped_params_checksums.json")) as f:
    result["checksummed"] = sorted(json.load(f)["leaves"])
restored = ckpt.restore(target={**params, "across": across})
result["restored"] = {k: np.array_equal(v, value) for k, v in restored.items() if k != "across"}
"""


def test_checkpoint_save_in_either_process_writes_params_each_holds_whole(tmp_path):
    # Before: sp.checkpoint.save refused an array replicated over the processes ("this process
    # holds only part of it", though each holds all of it), and TrainingCheckpointer did not
    # checksum it.
    results = _run_two_processes(tmp_path, _HELD_WHOLE_WORKER)
    for result in results:
        assert result["loaded"] == {"replicated": True, "within": True}
        assert "'across' is sharded over several processes; this process holds only part of " \
               "it" in result["across"]
        assert result["checksummed"] == ["replicated", "within"]
        assert result["restored"] == {"replicated": True, "within": True}
