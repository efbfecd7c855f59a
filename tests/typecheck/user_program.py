"""A user's program, type-checked by ``tests/test_public_api.py`` with mypy against the package.

It is never run: it pins what a type checker infers from scoped_params' public API (``assert_type``).
"""

from __future__ import annotations

from typing import Any, Dict

import jax
import jax.numpy as jnp
import optax
from typing_extensions import assert_type

import scoped_params as sp
from scoped_params import slim


def my_image_filter(images: jax.Array) -> jax.Array:
    with sp.scope("conv1") as s:
        assert_type(s, sp.Scope)
        w = sp.get_param("weights", (5, 5, 32, 32), init=jax.nn.initializers.normal(0.1))
        assert_type(w, jax.Array)
        b = sp.get_param("biases", (32,), init=sp.initializers.zeros)
    y = jax.nn.relu(jax.lax.conv_general_dilated(images, w, (1, 1), "SAME",
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC")) + b)
    with sp.scope(None, default_name="dense", reuse=sp.AUTO_REUSE, initializer=sp.initializers.zeros):
        y = sp.layers.dense(y, 10, activation=jax.nn.relu)
    with sp.name_scope("block") as ns:
        assert_type(ns, str)
        sp.record("logits", y)
    with slim.arg_scope([slim.conv2d], padding="VALID") as sc:
        assert_type(sc, Dict[Any, Dict[str, Any]])
        y = slim.conv2d(y, 4, [3, 3])
    assert_type(sp.get_scope(), sp.Scope)
    assert_type(sp.current_name_scope(), str)
    return y + sp.regularization_loss()


def siamese(left: jax.Array, right: jax.Array) -> tuple[jax.Array, jax.Array]:
    with sp.scope("tower") as scope:
        a = my_image_filter(left)
        scope.reuse_variables()
        b = my_image_filter(right)
    return a, b


model = sp.transform(my_image_filter)
assert_type(model, sp.Transformed)
init, apply = model
params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 32)))
out = jax.jit(model.apply)(params, jnp.zeros((1, 8, 8, 32)))
flat = sp.flatten(params)
tree = sp.unflatten(flat)
specs = model.specs(jnp.zeros((1, 8, 8, 32)))
trainable, frozen = sp.partition_trainable(params, specs)

stateful = sp.transform_with_state(lambda x: sp.layers.batch_normalization(x, training=True))
variables, state = stateful.init(jax.random.key(1), jnp.ones((4, 3)))
y, new_state = stateful.apply(variables, state, jnp.ones((4, 3)))

cell = sp.rnn.LSTMCell(8)
outputs, final = sp.rnn.dynamic_rnn(cell, jnp.zeros((2, 5, 3)), dtype=jnp.float32)

optimizer = optax.adam(1e-3)
opt_state = optimizer.init(params)
sp.checkpoint.save("/dev/null/never-written.safetensors", params)
restored = sp.checkpoint.init_from_checkpoint("x.safetensors", params, {"conv1/": "conv1/"})
