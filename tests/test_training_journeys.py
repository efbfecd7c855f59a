"""What a JAX-native training loop meets: a resumed run keeps the weak types of its state (no
recompile, no bfloat16 promoted to float32), constraints refuse an ensemble's stacked params, a
training-mode batch norm exports with a symbolic batch size, and jax.checking_leaks finds no tracer
kept by dynamic_rnn or layer_stack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import scoped_params as sp

KEY = jax.random.key(0)


def test_a_restored_training_state_keeps_its_weak_types_so_the_step_neither_retraces_nor_promotes(
        tmp_path):
    # orbax gives every array a strong type: the learning rate (weak float32 after a jitted step)
    # came back strong, the step recompiled, and p - lr * g turned bfloat16 params into float32.
    model = sp.transform(lambda x: x @ sp.get_param("w", (4, 2), dtype=jnp.bfloat16))
    x = jnp.ones((3, 4), jnp.bfloat16)

    def fresh():
        return {"params": model.init(KEY, x), "step": 0, "lr": 0.1}

    traces = []

    @jax.jit
    def step(ts):
        traces.append(None)
        grads = jax.grad(lambda p: jnp.sum(model.apply(p, x).astype(jnp.float32) ** 2))(ts["params"])
        params = jax.tree.map(lambda p, g: p - ts["lr"] * g, ts["params"], grads)
        return {"params": params, "step": ts["step"] + 1, "lr": ts["lr"] * 0.9}

    def run(n, ts):
        for _ in range(n):
            ts = step(ts)
        return ts

    straight = run(4, fresh())
    ckpt = sp.checkpoint.TrainingCheckpointer(tmp_path / "run")
    ts = run(2, fresh())
    ckpt.save(2, ts)
    for target in (jax.eval_shape(fresh), ts):
        restored = ckpt.restore(target=target)
        assert restored["lr"].weak_type and restored["step"].weak_type
        assert not restored["params"]["w"].weak_type
        del traces[:]
        resumed = run(2, restored)
        assert not traces  # the step compiled for the run before is reused
        assert resumed["params"]["w"].dtype == jnp.bfloat16
        for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
            np.testing.assert_array_equal(a, b)


def test_apply_constraints_refuses_an_ensembles_stacked_params_and_names_the_vmap():
    # max_norm(axis 0) ran over the ensemble's axis: member 0's columns came out with norms
    # [0.914 0.91 1.24] instead of 1.
    model = sp.transform(lambda x: sp.layers.dense(x, 3, kernel_constraint=sp.constraints.max_norm(1.0)))
    x = jnp.ones((2, 4))
    specs = model.specs(x)
    members = [jax.tree.map(lambda a: 3.0 * a, model.init(jax.random.key(i), x)) for i in range(5)]
    ensemble = jax.tree.map(lambda *a: jnp.stack(a), *members)
    with pytest.raises(sp.ConstraintError, match=r"(?s)parameter 'dense/kernel' has shape \(5, 4, 3\), "
                                                 r"but the specs say \(4, 3\).*mix the members.*"
                                                 r"fix: project each member: jax.vmap\(lambda p: "
                                                 r"sp.apply_constraints\(p, specs\)\)\(params\)"):
        sp.apply_constraints(ensemble, specs)
    projected = jax.vmap(lambda p: sp.apply_constraints(p, specs))(ensemble)
    np.testing.assert_allclose(np.linalg.norm(projected["dense"]["kernel"], axis=1), 1.0, rtol=1e-6)
    # An elementwise constraint mixes nothing: stacked params are projected as before.
    non_neg = sp.transform(lambda x: sp.layers.dense(x, 3, kernel_constraint=sp.constraints.non_neg()))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[non_neg.init(jax.random.key(i), x) for i in range(3)])
    kept = sp.apply_constraints(stacked, non_neg.specs(x))
    np.testing.assert_array_equal(kept["dense"]["kernel"], jnp.maximum(stacked["dense"]["kernel"], 0))


def test_apply_constraints_in_a_shard_map_body_projects_each_devices_block():
    # A block of the parameter (shape (4, 2) of (4, 16)) is no stack: projected as given.
    devices = np.array(jax.devices()[:8])
    if devices.size < 8:
        pytest.skip("needs 8 devices")
    mesh = jax.sharding.Mesh(devices, ("m",))
    spec = jax.sharding.PartitionSpec(None, "m")
    model = sp.transform(lambda: sp.get_param("w", [4, 16], init=jax.nn.initializers.ones,
                                              constraint=sp.constraints.max_norm(1.0)))
    params = jax.device_put(model.init(KEY), jax.sharding.NamedSharding(mesh, spec))
    specs = model.specs()
    projected = jax.jit(jax.shard_map(lambda q: sp.apply_constraints(q, specs), mesh=mesh,
                                      in_specs=(spec,), out_specs=spec))(params)
    np.testing.assert_allclose(projected["w"], 0.5)


@pytest.mark.parametrize("layer", [
    lambda x: sp.layers.batch_normalization(x, training=True),
    lambda x: sp.slim.batch_norm(x, is_training=True),  # slim's default: the fused kernel
], ids=["layers", "slim_fused"])
def test_a_training_batch_norm_exports_with_a_symbolic_batch_size(layer):
    # The fused kernel's Bessel factor took int() of the batch size: InconclusiveDimensionOperation.
    model = sp.transform_with_state(layer)
    params, state = model.init(KEY, jnp.ones((4, 16)))
    batch, = export.symbolic_shape("b")
    exported = export.export(jax.jit(model.apply))(
        params, state, jax.ShapeDtypeStruct((batch, 16), jnp.float32))
    for n in (4, 6):
        x = jax.random.normal(jax.random.key(n), (n, 16))
        got, want = exported.call(params, state, x), model.apply(params, state, x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fn, x", [
    (lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), x, dtype=jnp.float32)[0], jnp.ones((2, 3, 5))),
    (lambda x: sp.layer_stack(2)(lambda h: sp.layers.dense(h, 5))(x), jnp.ones((2, 5))),
], ids=["dynamic_rnn", "layer_stack"])
def test_jax_checking_leaks_finds_no_tracer_kept_by_a_loop_of_the_model(fn, x):
    # dynamic_rnn kept the traced step's state for an error message, layer_stack the block's view
    # (holding its traced slices): jax.checking_leaks reported a leaked trace.
    model = sp.transform(fn)
    params = model.init(KEY, x)
    with jax.checking_leaks():
        jax.jit(model.apply)(params, x)
