"""TF 1.x's optimizers and learning-rate decay against the optax settings the porting guide gives
for them (docs/migrating_from_tf1.md): the same parameters after several steps of the same model."""

import contextlib
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoped_params as sp

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1

RS = np.random.RandomState(0)
X, Y = RS.randn(8, 3).astype(np.float32), RS.randn(8, 2).astype(np.float32)
W0, B0 = RS.randn(3, 2).astype(np.float32), RS.randn(2).astype(np.float32)
STEPS = 6


@contextlib.contextmanager
def _tf_training(make_optimizer):
    """(session, train op, {name: variable}) of the model trained by TF's ``make_optimizer(step)``."""
    with tf.Graph().as_default(), v1.Session() as session:
        with v1.variable_scope("dense"):
            w = v1.get_variable("w", initializer=W0)
            b = v1.get_variable("b", initializer=B0)
        loss = tf.reduce_mean(tf.square(tf.matmul(X, w) + b - Y))
        step = v1.train.get_or_create_global_step()
        train = make_optimizer(step).minimize(loss, global_step=step)
        session.run(v1.global_variables_initializer())
        yield session, train, {"dense/w": w, "dense/b": b}


def _tf_params(make_optimizer):
    with _tf_training(make_optimizer) as (session, train, variables):
        for _ in range(STEPS):
            session.run(train)
        return session.run(variables)


def _optax_params(optimizer):
    def fn(x):
        with sp.scope("dense"):
            return x @ sp.get_param("w", init=W0) + sp.get_param("b", init=B0)

    model = sp.transform(fn)
    params = model.init(jax.random.key(0), X)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.mean(jnp.square(model.apply(p, X) - Y)))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(STEPS):
        params, state = step(params, state)
    return sp.flatten(params)


# (TF 1.x optimizer of the global step, the optax optimizer the porting guide maps it to, rtol)
PAIRS = {
    "sgd": (lambda s: v1.train.GradientDescentOptimizer(0.1), optax.sgd(0.1), 1e-6),
    "momentum": (lambda s: v1.train.MomentumOptimizer(0.1, 0.9), optax.sgd(0.1, momentum=0.9), 1e-6),
    "nesterov": (lambda s: v1.train.MomentumOptimizer(0.1, 0.9, use_nesterov=True),
                 optax.sgd(0.1, momentum=0.9, nesterov=True), 1e-6),
    "rmsprop": (lambda s: v1.train.RMSPropOptimizer(0.01, decay=0.9, epsilon=1e-10),
                optax.rmsprop(0.01, decay=0.9, eps=1e-10, initial_scale=1.0), 1e-5),
    "rmsprop_momentum": (lambda s: v1.train.RMSPropOptimizer(0.01, decay=0.9, momentum=0.5,
                                                             epsilon=1e-10),
                         optax.rmsprop(0.01, decay=0.9, eps=1e-10, initial_scale=1.0,
                                       momentum=0.5), 1e-5),
    "adagrad": (lambda s: v1.train.AdagradOptimizer(0.1, initial_accumulator_value=0.1),
                optax.adagrad(0.1, initial_accumulator_value=0.1, eps=0.0), 1e-5),
    # TF 1.x adds epsilon after the second moment's bias correction, optax before: equal as epsilon
    # goes to 0 (here to 1e-5 with TF's default 1e-8).
    "adam": (lambda s: v1.train.AdamOptimizer(0.01, epsilon=1e-8), optax.adam(0.01, eps=1e-8), 1e-5),
    "exponential_decay": (
        lambda s: v1.train.GradientDescentOptimizer(
            v1.train.exponential_decay(0.1, s, decay_steps=2, decay_rate=0.5, staircase=True)),
        optax.sgd(optax.exponential_decay(0.1, transition_steps=2, decay_rate=0.5, staircase=True)),
        1e-6),
    # TF switches after the boundary (step <= b0 gives values[0]), optax's join at it: b + 1.
    "piecewise_constant": (
        lambda s: v1.train.GradientDescentOptimizer(
            v1.train.piecewise_constant(s, [1, 3], [0.1, 0.05, 0.01])),
        optax.sgd(optax.join_schedules([optax.constant_schedule(v) for v in (0.1, 0.05, 0.01)],
                                       boundaries=[1 + 1, 3 + 1])), 1e-6),
    "cosine_decay": (
        lambda s: v1.train.GradientDescentOptimizer(v1.train.cosine_decay(0.1, s, 4, alpha=0.1)),
        optax.sgd(optax.cosine_decay_schedule(0.1, decay_steps=4, alpha=0.1)), 1e-6),
    "polynomial_decay": (
        lambda s: v1.train.GradientDescentOptimizer(
            v1.train.polynomial_decay(0.1, s, 4, end_learning_rate=0.01, power=2.0)),
        optax.sgd(optax.polynomial_schedule(0.1, 0.01, power=2.0, transition_steps=4)), 1e-6),
    "exponential_decay_smooth": (
        lambda s: v1.train.GradientDescentOptimizer(
            v1.train.exponential_decay(0.1, s, decay_steps=3, decay_rate=0.7)),
        optax.sgd(optax.exponential_decay(0.1, transition_steps=3, decay_rate=0.7)), 1e-6),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_the_guides_optax_settings_train_as_tf1s_optimizer_does(name):
    make_tf, optimizer, rtol = PAIRS[name]
    expected, got = _tf_params(make_tf), _optax_params(optimizer)
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=rtol, atol=1e-7, err_msg=key)
    assert not np.allclose(expected["dense/w"], W0)  # training moved the weights


def test_clip_by_global_norm_then_the_optimizer_trains_as_tfs_clipped_gradients_do():
    # grads, _ = tf.clip_by_global_norm(grads, 0.5); opt.apply_gradients(...) as an optax chain.
    def make(step):
        class Clipped(v1.train.MomentumOptimizer):
            def minimize(self, loss, global_step=None):
                grads_and_vars = self.compute_gradients(loss)
                grads, _ = tf.clip_by_global_norm([g for g, _ in grads_and_vars], 0.5)
                return self.apply_gradients(zip(grads, [v for _, v in grads_and_vars]),
                                            global_step=global_step)
        return Clipped(0.1, 0.9)

    expected = _tf_params(make)
    got = _optax_params(optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1, momentum=0.9)))
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-7, err_msg=key)


# --- sp.optimizers.adam: TF 1.x's Adam kernel, which no optax setting reproduces ------------------


@pytest.mark.parametrize("epsilon", [1e-8, 1e-3, 1.0])
def test_sp_adam_trains_as_tf1s_adam_whatever_the_epsilon(epsilon):
    expected = _tf_params(lambda s: v1.train.AdamOptimizer(0.01, epsilon=epsilon))
    got = _optax_params(sp.optimizers.adam(0.01, epsilon=epsilon))
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    if epsilon >= 1e-3:  # where optax's epsilon convention parts from TF's
        optax_got = _optax_params(optax.adam(0.01, eps=epsilon))
        assert not np.allclose(optax_got["dense/w"], expected["dense/w"], rtol=1e-4, atol=0)


def test_sp_adam_takes_a_schedule_of_the_step_as_tfs_decays_see_the_global_step():
    expected = _tf_params(lambda s: v1.train.AdamOptimizer(
        v1.train.exponential_decay(0.05, s, decay_steps=2, decay_rate=0.5, staircase=True),
        beta1=0.8, beta2=0.99, epsilon=1e-4))
    got = _optax_params(sp.optimizers.adam(
        optax.exponential_decay(0.05, transition_steps=2, decay_rate=0.5, staircase=True),
        beta1=0.8, beta2=0.99, epsilon=1e-4))
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


def test_adam_state_from_tf1_resumes_a_tf_run_where_it_stopped(tmp_path):
    # TF trains 3 steps, saves (weights, slots, beta powers, global step), trains 3 more; the port
    # loads the checkpoint and takes the same 3 steps. The decay checks the step count came along.
    def make(step):
        return v1.train.AdamOptimizer(
            v1.train.exponential_decay(0.05, step, decay_steps=2, decay_rate=0.5, staircase=True),
            epsilon=1e-3)

    with _tf_training(make) as (session, train, variables):
        for _ in range(3):
            session.run(train)
        prefix = v1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
        for _ in range(3):
            session.run(train)
        expected = session.run(variables)

    def fn(x):
        with sp.scope("dense"):
            return x @ sp.get_param("w", [3, 2]) + sp.get_param("b", [2])

    model = sp.transform(fn)
    optimizer = sp.optimizers.adam(
        optax.exponential_decay(0.05, transition_steps=2, decay_rate=0.5, staircase=True),
        epsilon=1e-3)
    params = sp.checkpoint.load_tf1(prefix)
    state = sp.optimizers.adam_state_from_tf1(prefix, params)
    assert int(state.step) == 3
    for _ in range(3):
        grads = jax.grad(lambda p: jnp.mean(jnp.square(model.apply(p, X) - Y)))(params)
        updates, state = jax.jit(optimizer.update)(grads, state)
        params = optax.apply_updates(params, updates)
    for key, value in expected.items():
        np.testing.assert_allclose(sp.flatten(params)[key], value, rtol=1e-6, atol=1e-7, err_msg=key)

    flat = sp.checkpoint.load_tf1(prefix, include_optimizer_state=True, flat=True)
    del flat["dense/w/Adam_1"]
    with pytest.raises(KeyError, match=r"no 'dense/w/Adam_1'(?s:.*)fix: save the TF run"):
        sp.optimizers.adam_state_from_tf1(flat, params)


def test_missing_adam_entries_are_a_key_error_shown_as_its_message_not_a_repr():
    params = {"dense": {"w": jnp.ones((2, 2))}}
    checkpoint = {"dense/w": np.ones((2, 2)), "dense/w/Adam": np.zeros((2, 2)),
                  "beta1_power": np.float32(0.9), "beta2_power": np.float32(0.999)}
    with pytest.raises(KeyError, match=r"no 'dense/w/Adam_1'") as e:
        sp.optimizers.adam_state_from_tf1(checkpoint, params)
    assert isinstance(e.value, sp.checkpoint.CheckpointError)
    shown = traceback.format_exception_only(type(e.value), e.value)[-1]
    assert "\\n" not in shown and not str(e.value).startswith(("'", '"'))
    assert ("the given mapping has no 'dense/w/Adam_1'.\n  found: 'beta1_power', 'beta2_power', 'dense/w/Adam'\n"
            "  fix: save the TF run") in shown
    # The arguments swapped: the params tree in the checkpoint's place.
    with pytest.raises(KeyError, match=r"(?s)found: no Adam entries.*the checkpoint given is a "
                                       r"nested params tree: are the arguments swapped\?"):
        sp.optimizers.adam_state_from_tf1(params, {"dense/w": jnp.ones((2, 2))})
