"""Train an MLP on the digits over a 2x4 mesh: data parallel on ``batch``, model parallel on ``model``.

TF 1.x would have split the big weights into ``.../part_k`` variables with a ``partitioner``; here one
rule list, given as the ``partitioner`` of the outer scope, decides a ``PartitionSpec`` per parameter
(inherited by every sub-scope, as TF's partitioner is), ``sp.init_sharded`` creates the parameters
directly sharded, and the training step is a plain ``jax.jit``: XLA inserts the collectives, and the
shardings survive the optax update.

Run: ``python examples/sharded_training.py`` (it asks XLA for 8 host CPU devices when run as a script).
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # before jax is imported; the test process sets it in conftest.py
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import scoped_params as sp

HIDDEN = 256

# Megatron-style: the first layer splits its output columns over `model`, the second its input rows,
# so the activations between them stay sharded and only one all-reduce per block is needed.
RULES = sp.sharding.Rules([
    (r"hidden_0/kernel$", P(None, "model")),
    (r"hidden_0/bias$", P("model")),
    (r"hidden_1/kernel$", P("model", None)),
    (r"logits/kernel$", P(None, "model")),
])


def dense(x: jax.Array, units: int, name: str, activation=None, **bias_kwargs) -> jax.Array:
    with sp.scope(name):
        kernel = sp.get_param("kernel", (x.shape[-1], units))
        bias = sp.get_param("bias", (units,), init=jax.nn.initializers.zeros, **bias_kwargs)
    y = x @ kernel + bias
    return activation(y) if activation is not None else y


def mlp(x: jax.Array) -> jax.Array:
    with sp.scope("mlp", partitioner=RULES):
        h = dense(x, HIDDEN, "hidden_0", jax.nn.relu)
        # An explicit sharding wins over the scope's rules: this bias is replicated on purpose.
        h = dense(h, HIDDEN, "hidden_1", jax.nn.relu, sharding=P())
        return dense(h, 12, "logits")  # 10 classes, padded to 12 so the columns split over 4 devices


model = sp.transform(mlp)


def loss_fn(params, x, y):
    logits = model.apply(params, x)[:, :10]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_mesh() -> jax.sharding.Mesh:
    """2 x 4 devices: `batch` (data parallel) by `model` (model parallel)."""
    return jax.make_mesh((2, 4), ("batch", "model"), axis_types=(AxisType.Auto, AxisType.Auto))


def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    return x, data.target.astype(np.int32)


def make_step(optimizer, shardings=None):
    """The jitted training step. ``shardings=(params_shardings, opt_state_shardings)`` pins the
    outputs to the inputs' layout: left alone, XLA may pick another layout for a small updated
    parameter (e.g. shard a replicated bias), and the next step would then reshard it."""

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    if shardings is None:
        return jax.jit(step, donate_argnums=(0, 1))
    mesh = jax.tree.leaves(shardings[0])[0].mesh
    replicated = NamedSharding(mesh, P())  # the loss: the same scalar in every process
    return jax.jit(step, out_shardings=(*shardings, replicated), donate_argnums=(0, 1))


def place_opt_state(opt_state, mesh):
    """optax's moments inherit their parameter's sharding (``zeros_like``); the step counter is
    created on one device, so replicate it (and anything else not yet on the mesh)."""
    replicated = NamedSharding(mesh, P())
    shardings = jax.tree.map(
        lambda a: a.sharding if isinstance(a.sharding, NamedSharding) else replicated, opt_state)
    return jax.device_put(opt_state, shardings), shardings


def batches(x, y, batch_size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    while True:
        idx = rng.choice(len(x), batch_size, replace=False)
        yield x[idx], y[idx]


def train(mesh=None, steps: int = 200, batch_size: int = 128, lr: float = 1e-2, seed: int = 0,
          log_every: int = 0):
    """Train; on ``mesh`` (sharded) or, with ``mesh=None``, on one device. Returns (params, losses)."""
    x_all, y_all = digits()
    key = jax.random.key(seed)
    example_x = jax.ShapeDtypeStruct((batch_size, x_all.shape[1]), jnp.float32)
    optimizer = optax.adam(lr)
    if mesh is None:
        params = model.init(key, example_x)
        opt_state = optimizer.init(params)
        step = make_step(optimizer)
        put = jax.device_put
    else:
        params = sp.init_sharded(model, mesh, key, example_x)
        opt_state, opt_shardings = place_opt_state(optimizer.init(params), mesh)
        step = make_step(optimizer, (sp.shardings(model, mesh, example_x), opt_shardings))
        data = NamedSharding(mesh, P("batch"))
        put = lambda a: jax.device_put(a, data)  # noqa: E731
    losses = []
    for i, (xb, yb) in zip(range(steps), batches(x_all, y_all, batch_size, seed)):
        params, opt_state, loss = step(params, opt_state, put(xb), put(yb))
        losses.append(float(loss))
        if log_every and (i % log_every == 0 or i == steps - 1):
            print(f"step {i:4d}  loss {losses[-1]:.4f}")
    return params, losses


def accuracy(params, mesh=None) -> float:
    x, y = digits()
    if mesh is not None:
        n = len(x) - len(x) % 2
        x, y = jax.device_put(x[:n], NamedSharding(mesh, P("batch"))), y[:n]
    logits = jax.jit(model.apply)(params, x)[:, :10]
    return float((np.asarray(logits).argmax(-1) == y).mean())


def main(steps: int = 200) -> None:
    mesh = make_mesh()
    example_x = jax.ShapeDtypeStruct((128, 64), jnp.float32)
    wanted = sp.shardings(model, mesh, example_x)
    print("parameter shardings (from an abstract trace):")
    for name, sh in sp.flatten(wanted).items():
        print(f"  {name:24s} {sh.spec}")
    params, losses = train(mesh, steps=steps, log_every=50)
    kept = all(p.sharding.is_equivalent_to(w, p.ndim)
               for p, w in zip(jax.tree.leaves(params), jax.tree.leaves(wanted)))
    print(f"shardings survive the optax updates: {kept}")
    print(f"train accuracy {accuracy(params, mesh):.2%}")
    _, single = train(None, steps=3)
    print(f"first 3 losses, sharded {[round(v, 6) for v in losses[:3]]} vs one device "
          f"{[round(v, 6) for v in single]}")


if __name__ == "__main__":
    main()
