"""Tied input/output embeddings through AUTO_REUSE, as TF 1.x language models did.

    with tf.variable_scope("embedding", reuse=tf.AUTO_REUSE):
        table = tf.get_variable("weights", [vocab, dim])

The lookup at the input creates embedding/weights; the output projection opens the same scope and
gets the very same array, so the logits are x @ table.T and the gradient of both uses flows into
one parameter. A tiny bigram model over a toy corpus is trained to show it.
"""

import jax
import jax.numpy as jnp
import optax

import scoped_params as sp

VOCAB, DIM = 12, 16


def embedding_table():
    with sp.scope("embedding", reuse=sp.AUTO_REUSE):
        return sp.get_param("weights", (VOCAB, DIM), init=sp.initializers.random_normal(stddev=0.1))


def bigram_logits(tokens):
    x = embedding_table()[tokens]  # input lookup: creates embedding/weights
    with sp.scope("hidden"):
        w = sp.get_param("kernel", (DIM, DIM))
        x = jnp.tanh(x @ w)
    return x @ embedding_table().T  # output projection: the same table (tied)


def main(steps: int = 300):
    model = sp.transform(bigram_logits)
    # A cyclic toy corpus: token t is always followed by t + 1 (mod VOCAB).
    tokens = jnp.arange(VOCAB * 8) % VOCAB
    inputs, targets = tokens[:-1], tokens[1:]
    params = model.init(jax.random.key(0), inputs)
    print("parameters (one embedding table serves input and output):")
    for name, value in sp.flatten(params).items():
        print(f"  {name:24s} {value.shape}")

    opt = optax.adam(0.05)
    opt_state = opt.init(params)

    def loss_fn(params):
        logits = model.apply(params, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    first = None
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state)
        first = loss if first is None else first
    accuracy = (model.apply(params, inputs).argmax(-1) == targets).mean()
    print(f"loss {float(first):.3f} -> {float(loss):.3f}; next-token accuracy {float(accuracy):.2%}")


if __name__ == "__main__":
    main()
