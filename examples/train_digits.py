"""Train a small CNN built from ``sp.layers`` on scikit-learn's digits (8x8 images, no download).

    python examples/train_digits.py                 # ~98% test accuracy in a few seconds on CPU
    python examples/train_digits.py --steps 300
    python examples/train_digits.py --compute-dtype bfloat16   # mixed precision (float32 storage)
    python examples/train_digits.py --ckpt-dir /tmp/digits     # save every 100 steps; re-run the
                                                               # same command to resume

The training state (params, optimizer state, step) is one pytree, ``TrainState``, and ``train`` can
start from any state: batches and dropout keys are functions of the step number only, so a run
resumed from a saved state continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Callable, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

import scoped_params as sp

NUM_CLASSES = 10


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree (save it, jit over it, resume from it)."""

    params: dict
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: number of optimizer steps taken


class Data(NamedTuple):
    x_train: np.ndarray  # (n, 8, 8, 1) float32 in [0, 1]
    y_train: np.ndarray  # (n,) int32
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(seed: int = 0, test_size: float = 0.2) -> Data:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y)
    return Data(x_train, y_train, x_test, y_test)


# --- the model: written exactly as with tf.compat.v1.layers -------------------------------------------


def cnn(images: jax.Array, training: bool = False, compute_dtype=jnp.float32) -> jax.Array:
    """Logits of a small CNN. Parameter names: ``cnn/conv2d/kernel``, ..., ``cnn/logits/bias``."""
    low_precision = np.dtype(compute_dtype) != np.float32
    # Mixed precision: float32 parameters, cast to bfloat16/float16 by a custom getter when fetched.
    outer = (sp.mixed_precision.scope("cnn", compute_dtype=compute_dtype) if low_precision
             else sp.scope("cnn"))
    with outer:
        h = images.astype(compute_dtype)
        h = sp.layers.conv2d(h, 16, 3, padding="same", activation=jax.nn.relu)
        h = sp.layers.conv2d(h, 32, 3, padding="same", activation=jax.nn.relu)
        h = sp.layers.max_pooling2d(h, 2, 2)  # 4x4
        h = sp.layers.conv2d(h, 64, 3, padding="same", activation=jax.nn.relu)
        h = sp.layers.max_pooling2d(h, 2, 2)  # 2x2
        h = sp.layers.flatten(h)
        h = sp.layers.dense(h, 128, activation=jax.nn.relu)
        h = sp.layers.dropout(h, rate=0.3, training=training)
        logits = sp.layers.dense(h, NUM_CLASSES, name="logits")
    return logits.astype(jnp.float32)


# --- training ----------------------------------------------------------------------------------------


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices of the batch of ``step``: a fresh permutation per epoch, a function of the step only."""
    per_epoch = n // batch_size
    epoch, i = divmod(int(step), per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[i * batch_size:(i + 1) * batch_size]


def make_optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(learning_rate, max(steps, 1), alpha=0.05)
    return optax.adamw(schedule, weight_decay=1e-4)


def init_state(key: jax.Array, model: sp.Transformed, optimizer: optax.GradientTransformation,
               sample: np.ndarray) -> TrainState:
    params = model.init(key, sample)
    return TrainState(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def make_train_step(model: sp.Transformed, optimizer: optax.GradientTransformation,
                    key: jax.Array) -> Callable:
    """A jitted ``step(state, images, labels) -> (state, loss)``; dropout keys come from the step."""

    def loss_fn(params, images, labels, rng):
        logits = model.apply(params, images, training=True, rng=rng)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(state: TrainState, images, labels):
        rng = jax.random.fold_in(key, state.step)
        loss, grads = jax.value_and_grad(loss_fn)(state.params, images, labels, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, opt_state, state.step + 1), loss

    return step


@functools.lru_cache(maxsize=8)
def _jitted_apply(model: sp.Transformed) -> Callable:
    return jax.jit(model.apply)


def accuracy(model: sp.Transformed, params: dict, images: np.ndarray, labels: np.ndarray) -> float:
    logits = _jitted_apply(model)(params, images)
    return float(jnp.mean(jnp.argmax(logits, -1) == labels))


@functools.lru_cache(maxsize=8)
def build(steps: int, learning_rate: float, seed: int, compute_dtype: np.dtype):
    """(model, optimizer, jitted step) for one configuration; cached so a resumed run in the same
    process reuses the compiled step."""
    model = sp.transform(lambda x, training=False: cnn(x, training, compute_dtype))
    optimizer = make_optimizer(learning_rate, steps)
    dropout_key = jax.random.fold_in(jax.random.key(seed), 1)
    return model, optimizer, make_train_step(model, optimizer, dropout_key)


def train(steps: int = 1000, batch_size: int = 64, learning_rate: float = 2e-3, seed: int = 0,
          compute_dtype=jnp.float32, state: Optional[TrainState] = None,
          data: Optional[Data] = None, progress: bool = True,
          on_step: Optional[Callable[[TrainState, float], None]] = None,
          ) -> Tuple[TrainState, float]:
    """Train until ``state.step == steps`` (from scratch when ``state`` is None); return the final
    state and the test accuracy. ``on_step(state, loss)`` runs after every step (e.g. to save)."""
    data = data if data is not None else load_data(seed)
    model, optimizer, step_fn = build(steps, learning_rate, seed, np.dtype(compute_dtype))
    if state is None:
        state = init_state(jax.random.key(seed), model, optimizer, data.x_train[:1])
    # Committed to one device like the step's outputs, so the step compiles once, not twice.
    state = jax.device_put(state, jax.local_devices()[0])
    start = int(state.step)
    bar = tqdm(range(start, steps), initial=start, total=steps, disable=not progress,
               desc="train", unit="step", mininterval=0.5)
    loss = jnp.nan
    for step in bar:
        idx = batch_indices(step, len(data.x_train), batch_size, seed)
        state, loss = step_fn(state, data.x_train[idx], data.y_train[idx])
        if on_step is not None:
            on_step(state, loss)
        if step % 100 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    bar.close()
    return state, accuracy(model, state.params, data.x_test, data.y_test)


def checkpointing(ckpt_dir: str, save_every: int, steps: int, learning_rate: float, seed: int,
                  compute_dtype) -> Tuple[Optional[TrainState], Callable[[TrainState, float], None]]:
    """(the latest state saved in ``ckpt_dir`` or None, an ``on_step`` that saves every
    ``save_every`` steps and at the end). Orbax keeps the last 3 steps."""
    checkpointer = sp.checkpoint.TrainingCheckpointer(ckpt_dir, max_to_keep=3)
    state = None
    if checkpointer.latest_step() is not None:
        # Restore into the structure/dtypes of a fresh state, traced abstractly (nothing allocated).
        model, optimizer, _ = build(steps, learning_rate, seed, np.dtype(compute_dtype))
        sample = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
        target = jax.eval_shape(lambda key: init_state(key, model, optimizer, sample),
                                jax.random.key(seed))
        state = checkpointer.restore(target=target)
        print(f"resuming from step {int(state.step)} ({checkpointer.directory})")

    def on_step(state: TrainState, loss: float) -> None:
        step = int(state.step)
        if step % save_every == 0 or step == steps:
            checkpointer.save(step, state)

    return state, on_step


def main(argv: Optional[Sequence[str]] = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="total optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compute-dtype", default="float32",
                        choices=["float32", "bfloat16", "float16"],
                        help="compute dtype; parameters are always stored in float32")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--ckpt-dir", help="save the training state here, and resume from the "
                        "latest one found (run with the same arguments)")
    parser.add_argument("--save-every", type=int, default=100, help="steps between checkpoints")
    args = parser.parse_args(argv)
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size),
                        ("--save-every", args.save_every)):
        if value < (0 if flag == "--steps" else 1):
            parser.error(f"{flag} must be {'0 or more' if flag == '--steps' else 'at least 1'}, "
                         f"got {value}")
    n_train = len(load_data(args.seed).x_train)
    if args.batch_size > n_train:
        parser.error(f"--batch-size must be at most {n_train}, the number of training images, "
                     f"got {args.batch_size}")
    start = time.perf_counter()
    state = on_step = None
    if args.ckpt_dir:
        state, on_step = checkpointing(args.ckpt_dir, args.save_every, args.steps,
                                       args.learning_rate, args.seed, jnp.dtype(args.compute_dtype))
    state, acc = train(args.steps, args.batch_size, args.learning_rate, args.seed,
                       jnp.dtype(args.compute_dtype), state=state, progress=not args.no_progress,
                       on_step=on_step)
    seconds = time.perf_counter() - start
    print(f"final test accuracy: {acc:.2%} after {int(state.step)} steps in {seconds:.1f} s "
          f"({args.compute_dtype} compute)")
    return acc


if __name__ == "__main__":
    main()
