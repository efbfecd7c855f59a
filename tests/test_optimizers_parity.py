"""TF 1.x's optimizers and learning-rate decay against the optax settings the porting guide gives
for them (docs/migrating_from_tf1.md): the same parameters after several steps of the same model."""

import contextlib
import re
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


@pytest.mark.parametrize("scope", ["train", None])
def test_adam_state_from_tf1_resumes_a_partitioned_variable_resaved_part_by_part_as_tf_continues(
        tmp_path, scope):
    # A Saver({v.op.name: v}) keeps each part of 'dense/w' (split along axis 1) and each part's
    # slot under its own name ('train/dense/w/part_0/Adam'): load_tf1 joins the slots as the parts.
    # Under a scope the default Saver's mangled slots ('dense/w/art_0/Adam', slices) cannot be read:
    # its error recommends that re-save.
    y = RS.randn(8, 4).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as session:
        with v1.variable_scope("dense", partitioner=v1.fixed_size_partitioner(2, axis=1)):
            w = v1.get_variable("w", [3, 4], initializer=v1.random_normal_initializer(seed=3))
        b = v1.get_variable("dense/b", [4], initializer=v1.zeros_initializer())
        loss = tf.reduce_mean(tf.square(tf.matmul(X, w.as_tensor()) + b - y))
        with v1.variable_scope(scope) if scope else contextlib.nullcontext():
            train = v1.train.AdamOptimizer(0.05, epsilon=1e-3).minimize(loss)
        session.run(v1.global_variables_initializer())
        for _ in range(2):
            session.run(train)
        default = v1.train.Saver().save(session, str(tmp_path / "default" / "model.ckpt"))
        resaved = v1.train.Saver({v.op.name: v for v in v1.global_variables()}).save(
            session, str(tmp_path / "resaved" / "model.ckpt"))
        for _ in range(2):
            session.run(train)
        expected = session.run({"dense/w": w.as_tensor(), "dense/b": b})
    slot = f"{scope}/dense/w/part_1/Adam_1" if scope else "dense/w/part_1/Adam_1"
    assert dict(tf.train.list_variables(resaved))[slot] == [3, 2]
    if scope:
        with pytest.raises(sp.checkpoint.CheckpointMismatchError) as e:
            sp.optimizers.adam_state_from_tf1(default, sp.checkpoint.load_tf1(default))
        assert "'dense/w/art_0/Adam'" in str(e.value)
        assert ("tf.compat.v1.train.Saver({v.op.name: v for v in tf.compat.v1.global_variables()})"
                ".save(sess, new_prefix)") in str(e.value)

    params = sp.checkpoint.load_tf1(resaved)
    state = sp.optimizers.adam_state_from_tf1(resaved, params)
    flat = sp.checkpoint.load_tf1(resaved, include_optimizer_state=True, flat=True)
    np.testing.assert_array_equal(sp.flatten(state.v)["dense/w"],
                                  flat[f"{scope}/dense/w/Adam_1" if scope else "dense/w/Adam_1"])
    optimizer = sp.optimizers.adam(0.05, epsilon=1e-3)
    for _ in range(2):
        grads = jax.grad(lambda p: jnp.mean(jnp.square(X @ p["dense"]["w"] + p["dense"]["b"] - y)))(
            params)
        updates, state = optimizer.update(grads, state)
        params = optax.apply_updates(params, updates)
    for key, value in expected.items():
        np.testing.assert_allclose(sp.flatten(params)[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


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


def _tf_run_saved(path, build, steps=1):
    """Run the train ops ``build()`` returns ``steps`` times in a fresh TF 1.x graph, then save with
    ``Saver``: (prefix, {variable name: value after saving and ``steps`` more runs})."""
    with tf.Graph().as_default(), v1.Session() as session:
        ops = build()
        session.run(v1.global_variables_initializer())
        for _ in range(steps):
            session.run(ops)
        prefix = v1.train.Saver().save(session, str(path / "model.ckpt"))
        for _ in range(steps):
            session.run(ops)
        return prefix, {v.op.name: session.run(v) for v in v1.trainable_variables()}


def test_adam_state_from_tf1_rejects_slots_whose_shape_is_not_their_parameters(tmp_path):
    # TF's Saver.restore refuses a slot of another shape; the next update would broadcast a (1,) slot.
    params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones((4,))}}
    checkpoint = {"dense/kernel/Adam": np.ones((4, 3), np.float32),
                  "dense/kernel/Adam_1": np.ones((4, 3), np.float32),
                  "dense/bias/Adam": np.ones((1,), np.float32),
                  "dense/bias/Adam_1": np.ones((4,), np.float32),
                  "beta1_power": np.float32(0.81), "beta2_power": np.ones(2, np.float32)}
    with pytest.raises(sp.optimizers.OptimizerStateMismatchError) as e:
        sp.optimizers.adam_state_from_tf1(checkpoint, params)
    assert isinstance(e.value, ValueError) and isinstance(e.value, sp.checkpoint.CheckpointMismatchError)
    message = str(e.value)
    assert message.startswith("adam_state_from_tf1: 4 entries of the given mapping do not fit")
    for line in ("'dense/bias/Adam': shape (1,), but its parameter 'dense/bias' has shape (4,)",
                 "'dense/kernel/Adam': shape (4, 3), but its parameter 'dense/kernel' has shape (3, 4)",
                 "'dense/kernel/Adam_1': shape (4, 3), but its parameter 'dense/kernel' has shape (3, 4)",
                 "'beta2_power': shape (2,), but a beta power is a scalar, shape ()"):
        assert f"\n  - {line}\n" in message
    assert "dense/bias/Adam_1" not in message
    assert "\n  fix: pass the params the TF run trained" in message

    # A TF run of a (3, 2) kernel resumed with a transposed port of it: TF's restore fails as well
    # (into ref variables; a resource variable takes the saved shape and the next ApplyAdam fails).
    prefix, _ = _tf_run_saved(tmp_path, lambda: v1.train.AdamOptimizer(0.1).minimize(
        tf.reduce_sum(v1.get_variable("w", [3, 2]))))
    with tf.Graph().as_default(), v1.Session() as session:
        w = v1.get_variable("w", [2, 3], use_resource=False)
        v1.train.AdamOptimizer(0.1).minimize(tf.reduce_sum(w))
        with pytest.raises(tf.errors.InvalidArgumentError, match="shapes of both tensors to match"):
            v1.train.Saver().restore(session, prefix)
    with pytest.raises(ValueError, match=r"(?s)2 entries of TF 1.x checkpoint '.*model.ckpt' do not "
                                         r"fit.*'w/Adam': shape \(3, 2\), but its parameter 'w' has "
                                         r"shape \(2, 3\)"):
        sp.optimizers.adam_state_from_tf1(prefix, {"w": jnp.zeros((2, 3))})


def test_adam_state_from_tf1_finds_slots_saved_under_the_variable_scope_minimize_ran_in(tmp_path):
    # TF 1.x's slot_creator names a slot '<variable scope>/<variable>/<slot>': the optimizer's scope,
    # not the variable's; the beta powers go to the name scope, 'train/' here.
    def build():
        with v1.variable_scope("model"):
            w = v1.get_variable("w", initializer=W0)
        with v1.variable_scope("train"):
            return v1.train.AdamOptimizer(0.05, epsilon=1e-3).minimize(
                tf.reduce_mean(tf.square(tf.matmul(X, w) - Y)))

    prefix, expected = _tf_run_saved(tmp_path, build, steps=3)
    assert [n for n, _ in tf.train.list_variables(prefix)] == [
        "model/w", "train/beta1_power", "train/beta2_power", "train/model/w/Adam",
        "train/model/w/Adam_1"]
    params = sp.checkpoint.load_tf1(prefix)
    assert list(sp.flatten(params)) == ["model/w"]
    state = sp.optimizers.adam_state_from_tf1(prefix, params)
    np.testing.assert_array_equal(sp.flatten(state.m)["model/w"],
                                  tf.train.load_variable(prefix, "train/model/w/Adam"))
    assert float(state.beta1_power) == pytest.approx(0.9 ** 4)  # TF's after 3 steps
    explicit = sp.optimizers.adam_state_from_tf1(prefix, params, scope="train")
    same = jax.tree_util.tree_map(np.array_equal, explicit, state)
    assert all(jax.tree_util.tree_leaves(same))

    optimizer = sp.optimizers.adam(0.05, epsilon=1e-3)
    for _ in range(3):
        grads = jax.grad(lambda p: jnp.mean(jnp.square(X @ p["model"]["w"] - Y)))(params)
        updates, state = optimizer.update(grads, state)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params["model"]["w"], expected["model/w"], rtol=1e-6, atol=1e-7)

    with pytest.raises(KeyError) as e:  # asked at the root: the error points to the scope
        sp.optimizers.adam_state_from_tf1(prefix, params, scope="")
    message = str(e.value)
    assert message.startswith(f"adam_state_from_tf1: TF 1.x checkpoint {prefix!r} has no "
                              "'model/w/Adam', 'model/w/Adam_1'.\n  found: 'train/beta1_power', "
                              "'train/beta2_power', 'train/model/w/Adam', 'train/model/w/Adam_1'\n")
    assert "fix: the checkpoint has these slots under scope 'train/': pass scope='train'" in message


def test_adam_state_from_tf1_refuses_to_guess_between_two_optimizers(tmp_path):
    # Two Adam optimizers over the same variable, minimize() in variable scopes 'a' and 'b'.
    def build():
        w = v1.get_variable("w", initializer=B0)
        loss = tf.reduce_sum(tf.square(w))
        ops = []
        for scope, beta1 in (("a", 0.5), ("b", 0.7)):
            with v1.variable_scope(scope):
                ops.append(v1.train.AdamOptimizer(0.1, beta1=beta1).minimize(loss))
        return ops

    prefix, _ = _tf_run_saved(tmp_path, build)
    params = sp.checkpoint.load_tf1(prefix)
    assert list(sp.flatten(params)) == ["w"]
    with pytest.raises(sp.optimizers.AmbiguousOptimizerStateError) as e:
        sp.optimizers.adam_state_from_tf1(prefix, params)
    assert isinstance(e.value, ValueError)
    assert str(e.value) == (
        f"adam_state_from_tf1: TF 1.x checkpoint {prefix!r} has the Adam slots of params under 2 "
        "scopes: 'a/', 'b/' ('a/w/Adam', 'b/w/Adam').\n"
        "  fix: say which optimizer's state to resume: scope='a' or scope='b' (the variable scope "
        "its minimize() ran in).")
    with pytest.raises(sp.optimizers.AmbiguousOptimizerStateError) as e:
        sp.optimizers.adam_state_from_tf1(prefix, params, scope="a")
    assert str(e.value) == (
        f"adam_state_from_tf1: TF 1.x checkpoint {prefix!r} has the beta powers of 2 Adam "
        "optimizers: ('a/beta1_power', 'a/beta2_power'), ('b/beta1_power', 'b/beta2_power').\n"
        "  fix: say which optimizer's to resume: powers=('a/beta1_power', 'a/beta2_power') or "
        "powers=('b/beta1_power', 'b/beta2_power') (TF names them in the name scope minimize() ran "
        "in; of two optimizers minimizing in the same one, the second to run has 'beta1_power_1', "
        "'beta2_power_1').")
    for scope, beta1 in (("a", 0.5), ("b", 0.7)):
        state = sp.optimizers.adam_state_from_tf1(
            prefix, params, scope=scope, powers=(f"{scope}/beta1_power", f"{scope}/beta2_power"))
        assert float(state.beta1_power) == pytest.approx(beta1 ** 2)
        np.testing.assert_array_equal(sp.flatten(state.v)["w"],
                                      tf.train.load_variable(prefix, f"{scope}/w/Adam_1"))


def test_adam_state_from_tf1_resumes_each_optimizer_of_a_gan_with_its_own_beta_powers(tmp_path):
    # Two optimizers over separate variables keep '<variable>/Adam', '<variable>/Adam_1'; only the
    # beta powers of the one whose minimize() ran second are renamed: 'beta1_power_1'.
    def build():
        with v1.variable_scope("gen"):
            g = v1.get_variable("w", initializer=W0)
        with v1.variable_scope("disc"):
            d = v1.get_variable("w", initializer=B0)
        return [v1.train.AdamOptimizer(0.1, beta1=0.5).minimize(tf.reduce_sum(g * g), var_list=[g]),
                v1.train.AdamOptimizer(0.1, beta1=0.7).minimize(tf.reduce_sum(d * d), var_list=[d])]

    prefix, _ = _tf_run_saved(tmp_path, build)
    assert [n for n, _ in tf.train.list_variables(prefix)] == [
        "beta1_power", "beta1_power_1", "beta2_power", "beta2_power_1", "disc/w", "disc/w/Adam",
        "disc/w/Adam_1", "gen/w", "gen/w/Adam", "gen/w/Adam_1"]
    params = sp.checkpoint.load_tf1(prefix)
    with pytest.raises(sp.optimizers.AmbiguousOptimizerStateError,
                       match=r"powers=\('beta1_power', 'beta2_power'\) or powers=\('beta1_power_1', "
                             r"'beta2_power_1'\)"):
        sp.optimizers.adam_state_from_tf1(prefix, {"gen": params["gen"]})
    gen = sp.optimizers.adam_state_from_tf1(prefix, {"gen": params["gen"]},
                                            powers=("beta1_power", "beta2_power"))
    disc = sp.optimizers.adam_state_from_tf1(prefix, {"disc": params["disc"]},
                                             powers=("beta1_power_1", "beta2_power_1"))
    assert float(gen.beta1_power) == pytest.approx(0.5 ** 2)
    assert float(disc.beta1_power) == pytest.approx(0.7 ** 2)
    np.testing.assert_array_equal(disc.m["disc"]["w"], tf.train.load_variable(prefix, "disc/w/Adam"))


def test_missing_beta_powers_error_lists_those_under_a_name_scope_and_the_powers_to_pass(tmp_path):
    # minimize() under tf.name_scope('train'): the slots stay 'w/Adam', the powers are 'train/...'.
    def build():
        w = v1.get_variable("w", initializer=B0)
        with tf.name_scope("train"):
            return v1.train.AdamOptimizer(0.1, beta1=0.5).minimize(tf.reduce_sum(w * w))

    prefix, _ = _tf_run_saved(tmp_path, build)
    params = sp.checkpoint.load_tf1(prefix)
    state = sp.optimizers.adam_state_from_tf1(prefix, params)  # the one pair there is
    assert float(state.beta1_power) == pytest.approx(0.5 ** 2)
    with pytest.raises(sp.optimizers.MissingOptimizerStateError) as e:
        sp.optimizers.adam_state_from_tf1(prefix, params, powers=("beta1_power", "beta2_power"))
    message = str(e.value)
    assert message.startswith(
        f"adam_state_from_tf1: TF 1.x checkpoint {prefix!r} has no 'beta1_power', 'beta2_power'.\n"
        "  found: 'train/beta1_power', 'train/beta2_power', 'w/Adam', 'w/Adam_1'\n")
    assert ("fix: the checkpoint's beta powers: powers=('train/beta1_power', "
            "'train/beta2_power')") in message
    # A second optimizer renames its powers; its slots only where it trains the first one's variables.
    assert ("Of two Adam optimizers whose minimize() ran in the same scope, the second to run has "
            "'beta1_power_1', 'beta2_power_1' (powers=('beta1_power_1', 'beta2_power_1')), and its "
            "slots are 'Adam_2', 'Adam_3' (slots=('Adam_2', 'Adam_3')) only for variables the first "
            "one trains too.") in message


def _gan_like(path, discriminator_optimizer):
    """A discriminator 'dense/kernel' at the top, a generator 'gen/dense/kernel' under 'gen', the
    generator trained by Adam and the discriminator by ``discriminator_optimizer``."""
    rs = np.random.RandomState(0)

    def build():
        with v1.variable_scope("dense"):
            d = v1.get_variable("kernel", initializer=rs.randn(3, 3).astype(np.float32))
        with v1.variable_scope("gen"), v1.variable_scope("dense"):
            g = v1.get_variable("kernel", initializer=rs.randn(3, 3).astype(np.float32))
        x = tf.constant(rs.randn(4, 3).astype(np.float32))
        return [discriminator_optimizer().minimize(tf.reduce_sum(tf.square(x @ d)), var_list=[d]),
                v1.train.AdamOptimizer(0.1).minimize(tf.reduce_sum(tf.square(x @ g @ d)),
                                                     var_list=[g])]

    prefix, _ = _tf_run_saved(path, build)
    return prefix, {"dense": sp.checkpoint.load_tf1(prefix)["dense"]}


def test_adam_state_from_tf1_never_reads_another_variables_slot_as_one_under_a_scope(tmp_path):
    # 'gen/dense/kernel/Adam' is the slot of the variable gen/dense/kernel, not of dense/kernel
    # under a scope 'gen/': the discriminator trained without Adam has no Adam state to resume.
    prefix, d_params = _gan_like(tmp_path, lambda: v1.train.GradientDescentOptimizer(0.1))
    with pytest.raises(sp.optimizers.MissingOptimizerStateError, match=re.escape(
            f"adam_state_from_tf1: TF 1.x checkpoint {prefix!r} has no 'dense/kernel/Adam'")):
        sp.optimizers.adam_state_from_tf1(prefix, d_params)
    with pytest.raises(sp.optimizers.MissingOptimizerStateError, match=re.escape(
            "under scope='gen', TF 1.x checkpoint")) as info:
        sp.optimizers.adam_state_from_tf1(prefix, d_params, scope="gen")
    assert ("holds the variable 'gen/dense/kernel' itself, so 'gen/dense/kernel/Adam' is that "
            "variable's own slot, not the slot of 'dense/kernel'") in str(info.value)


def test_adam_state_from_tf1_resumes_the_discriminator_of_a_gan_with_two_adams(tmp_path):
    prefix, d_params = _gan_like(tmp_path, lambda: v1.train.AdamOptimizer(0.1))
    state = sp.optimizers.adam_state_from_tf1(prefix, d_params, powers=("beta1_power", "beta2_power"))
    np.testing.assert_array_equal(state.m["dense"]["kernel"],
                                  tf.train.load_variable(prefix, "dense/kernel/Adam"))
