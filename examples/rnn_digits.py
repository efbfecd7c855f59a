"""TF 1.x's "RNN on MNIST" tutorial on scikit-learn's digits: a two-layer LSTM reads each 8x8 image
row by row (8 steps of 8 pixels) and classifies it from its last state.

    python examples/rnn_digits.py                   # ~94% test accuracy in ~10 s on CPU
    python examples/rnn_digits.py --steps 300

The model is the tutorial's TF 1.x code with ``tf.nn.rnn_cell`` -> ``sp.rnn`` and ``tf.layers`` ->
``sp.layers``; its parameters carry TF's names (``rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel``),
so weights trained in TF 1.x load with ``sp.checkpoint.load_tf1``. Training reuses
``train_digits``'s data, batches and jitted step.
"""

from __future__ import annotations

import argparse
import time
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import scoped_params as sp
from train_digits import (NUM_CLASSES, Data, accuracy, batch_indices, init_state, load_data,
                          make_optimizer, make_train_step)


def lstm_classifier(images: jax.Array, training: bool = False) -> jax.Array:
    """Logits from the last LSTM state; dropout on each layer's outputs while training."""
    rows = images[..., 0]  # [batch, 8 steps, 8 pixels]
    keep = 0.9 if training else 1.0
    cells = [sp.rnn.DropoutWrapper(sp.rnn.BasicLSTMCell(64), output_keep_prob=keep)
             for _ in range(2)]
    _, state = sp.rnn.dynamic_rnn(sp.rnn.MultiRNNCell(cells), rows, dtype=jnp.float32)
    return sp.layers.dense(state[-1].h, NUM_CLASSES, name="logits")


def train(steps: int = 600, batch_size: int = 64, learning_rate: float = 5e-3, seed: int = 0,
          data: Optional[Data] = None, progress: bool = True) -> Tuple[dict, float]:
    """Train for ``steps`` steps; return the params and the test accuracy."""
    data = data if data is not None else load_data(seed)
    model = sp.transform(lstm_classifier)
    optimizer = make_optimizer(learning_rate, steps)
    step_fn = make_train_step(model, optimizer, jax.random.fold_in(jax.random.key(seed), 1))
    state = jax.device_put(init_state(jax.random.key(seed), model, optimizer, data.x_train[:1]),
                           jax.local_devices()[0])
    bar = tqdm(range(steps), disable=not progress, desc="train", unit="step", mininterval=0.5)
    for step in bar:
        idx = batch_indices(step, len(data.x_train), batch_size, seed)
        state, loss = step_fn(state, data.x_train[idx], data.y_train[idx])
        if step % 100 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    bar.close()
    return state.params, accuracy(model, state.params, data.x_test, data.y_test)


def main(argv: Optional[Sequence[str]] = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    params, acc = train(args.steps, seed=args.seed, progress=not args.no_progress)
    print("parameters:", ", ".join(f"{k} {tuple(v.shape)}" for k, v in sp.flatten(params).items()))
    print(f"final test accuracy: {acc:.2%} after {args.steps} steps in "
          f"{time.perf_counter() - start:.1f} s")
    return acc


if __name__ == "__main__":
    main()
