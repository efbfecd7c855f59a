"""A siamese network on scikit-learn's digits: two towers, one set of weights, shared by scope reuse.

    python examples/siamese_digits.py

Both images of a pair go through the same ``tower``; the second call re-enters the first tower's
captured scope with ``reuse=True`` (TF 1.x's idiom), so ``params`` holds one tower. Training uses the
contrastive loss of Hadsell, Chopra & LeCun (2006); a pair is called "same digit" when the distance
between embeddings is below a threshold picked on training pairs. The script reports the
verification accuracy on balanced pairs of held-out images.
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

import scoped_params as sp

MARGIN = 1.0


class Data(NamedTuple):
    x_train: np.ndarray  # (n, 8, 8, 1) float32 in [0, 1]
    y_train: np.ndarray  # (n,) int32
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(seed: int = 0, test_size: float = 0.2) -> Data:
    """scikit-learn's digits, split by image: test pairs are built from images never trained on."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y)
    return Data(x_train, y_train, x_test, y_test)


def tower(images: jax.Array) -> jax.Array:
    """Embed images into a 32-d space (written like a tf.compat.v1.layers tower)."""
    h = sp.layers.conv2d(images, 16, 3, padding="same", activation=jax.nn.relu)
    h = sp.layers.max_pooling2d(h, 2, 2)
    h = sp.layers.conv2d(h, 32, 3, padding="same", activation=jax.nn.relu)
    h = sp.layers.max_pooling2d(h, 2, 2)
    h = sp.layers.dense(sp.layers.flatten(h), 64, activation=jax.nn.relu)
    return sp.layers.dense(h, 32, name="embedding")


def siamese(left: jax.Array, right: jax.Array) -> jax.Array:
    """Distances between the embeddings of ``left[i]`` and ``right[i]``, from one shared tower."""
    with sp.scope("tower") as tower_scope:
        a = tower(left)
    with sp.scope(tower_scope, reuse=True):  # same names -> the same parameters
        b = tower(right)
    return jnp.sqrt(jnp.sum(jnp.square(a - b), -1) + 1e-9)


def contrastive_loss(distance: jax.Array, same: jax.Array, margin: float = MARGIN) -> jax.Array:
    """``same * d^2 + (1 - same) * max(margin - d, 0)^2``, averaged (Hadsell et al., 2006)."""
    return jnp.mean(same * distance ** 2 + (1 - same) * jnp.maximum(margin - distance, 0) ** 2) / 2


class Pairs(NamedTuple):
    left: np.ndarray
    right: np.ndarray
    same: np.ndarray  # float32, 1.0 for same digit


def sample_pairs(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, n: int) -> Pairs:
    """``n`` pairs, half of the same digit and half of different digits."""
    order = np.argsort(y, kind="stable")  # indices grouped by digit
    counts = np.bincount(y, minlength=10)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def pick(classes):  # one random image of each requested digit
        return order[starts[classes] + rng.integers(0, counts[classes])]

    half = n // 2
    cls = rng.integers(0, 10, half)
    i, j = pick(cls), pick(cls)
    k = rng.integers(0, len(y), n - half)
    m = pick((y[k] + rng.integers(1, 10, n - half)) % 10)
    left = np.concatenate([i, k])
    right = np.concatenate([j, m])
    same = np.concatenate([np.ones(half), np.zeros(n - half)]).astype(np.float32)
    return Pairs(x[left], x[right], same)


def best_threshold(distance: np.ndarray, same: np.ndarray) -> float:
    candidates = np.quantile(distance, np.linspace(0.01, 0.99, 197))
    accs = [np.mean((distance < t) == (same > 0.5)) for t in candidates]
    return float(candidates[int(np.argmax(accs))])


def train(steps: int = 600, batch_size: int = 128, learning_rate: float = 2e-3, seed: int = 0,
          data: Optional[Data] = None, progress: bool = True) -> Tuple[dict, float]:
    """Train the siamese network; return (params, verification accuracy on held-out pairs)."""
    data = data if data is not None else load_data(seed)
    model = sp.transform(siamese)
    rng = np.random.default_rng(seed)
    sample = data.x_train[:1]
    params = model.init(jax.random.key(seed), sample, sample)
    assert set(params) == {"tower"}, "one tower: the second call reused the first one's weights"
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, pairs: Pairs):
        def loss_fn(p):
            return contrastive_loss(model.apply(p, pairs.left, pairs.right), pairs.same)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params, opt_state = jax.device_put((params, opt_state), jax.local_devices()[0])
    bar = tqdm(range(steps), disable=not progress, desc="siamese", unit="step", mininterval=0.5)
    for i in bar:
        params, opt_state, loss = step(params, opt_state,
                                       sample_pairs(rng, data.x_train, data.y_train, batch_size))
        if i % 100 == 0 or i == steps - 1:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    bar.close()

    distance = jax.jit(model.apply)
    fit = sample_pairs(rng, data.x_train, data.y_train, 2000)
    threshold = best_threshold(np.asarray(distance(params, fit.left, fit.right)), fit.same)
    test = sample_pairs(np.random.default_rng(seed + 1), data.x_test, data.y_test, 2000)
    predicted_same = np.asarray(distance(params, test.left, test.right)) < threshold
    return params, float(np.mean(predicted_same == (test.same > 0.5)))


def main(argv: Optional[Sequence[str]] = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    _, acc = train(args.steps, args.batch_size, seed=args.seed, progress=not args.no_progress)
    print(f"same/different verification accuracy on held-out pairs: {acc:.2%} "
          f"({args.steps} steps, {time.perf_counter() - start:.1f} s)")
    return acc


if __name__ == "__main__":
    main()
