"""sp.exponential_moving_average: TF 1.x's ExponentialMovingAverage.apply on a params tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp


def test_exponential_moving_average_matches_tf1_with_and_without_num_updates():
    # tf.train.ExponentialMovingAverage(decay, num_updates).apply(vars) once per step, the variables
    # changing between steps; the averages start at the variables' initial values.
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    w0, b0 = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2), np.zeros(2, np.float32)
    steps = [(w0 * (k + 2), b0 + k) for k in range(4)]
    for num_updates in (None, True):
        with tf.Graph().as_default():
            w = v1.get_variable("w", initializer=w0)
            b = v1.get_variable("b", initializer=b0)
            step = v1.placeholder(tf.int64, [])
            ema = v1.train.ExponentialMovingAverage(0.9, num_updates=step if num_updates else None)
            update = ema.apply([w, b])
            assign = [v1.placeholder(tf.float32, w0.shape), v1.placeholder(tf.float32, b0.shape)]
            set_vars = [w.assign(assign[0]), b.assign(assign[1])]
            expected = []
            with v1.Session() as sess:
                sess.run(v1.global_variables_initializer())
                for k, (wk, bk) in enumerate(steps):
                    sess.run(set_vars, {assign[0]: wk, assign[1]: bk})
                    sess.run(update, {step: k})
                    expected.append(sess.run([ema.average(w), ema.average(b)]))

        averages = {"w": jnp.asarray(w0), "b": jnp.asarray(b0)}
        update_fn = jax.jit(lambda a, p, k: sp.exponential_moving_average(
            a, p, 0.9, num_updates=k if num_updates else None))
        for k, ((wk, bk), (ew, eb)) in enumerate(zip(steps, expected)):
            averages = update_fn(averages, {"w": wk, "b": bk}, k)
            np.testing.assert_allclose(averages["w"], ew, rtol=1e-6)
            np.testing.assert_allclose(averages["b"], eb, rtol=1e-6)


def test_exponential_moving_average_keeps_each_average_dtype_and_names_a_mismatch():
    averages = {"a": {"w": jnp.ones(3, jnp.bfloat16)}, "b": jnp.zeros(2)}
    params = {"a": {"w": jnp.full(3, 3.0)}, "b": jnp.ones(2)}
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        out = sp.exponential_moving_average(averages, params, 0.5)
    assert out["a"]["w"].dtype == jnp.bfloat16 and out["a"]["w"].tolist() == [2.0, 2.0, 2.0]
    assert out["b"].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"only in params: \['c'\]"):
        sp.exponential_moving_average(averages, {**params, "c": jnp.ones(1)}, 0.5)
    with pytest.raises(ValueError, match="'b' has shape"):
        sp.exponential_moving_average(averages, {**params, "b": jnp.ones(3)}, 0.5)


def test_exponential_moving_average_refuses_integer_leaves_and_accepts_python_floats():
    ints = {"w": jnp.ones(2, jnp.int32)}
    for averages, params, where in ((ints, ints, "averages"), ({"w": jnp.ones(2)}, ints, "params")):
        with pytest.raises(TypeError, match=rf"(?s)'w' has dtype int32 in {where}.*floating-point"
                                            ".*fix:"):
            sp.exponential_moving_average(averages, params, 0.9)
    out = sp.exponential_moving_average({"w": 1.0, "v": jnp.ones(2)}, {"w": 3.0, "v": jnp.ones(2)},
                                        0.5)
    assert float(out["w"]) == 2.0 and out["w"].dtype == jnp.float32


def test_exponential_moving_average_of_a_decay_that_is_not_a_number_is_a_type_error_naming_it():
    p = {"w": jnp.ones(2)}
    for decay in (None, "fast"):
        with pytest.raises(TypeError, match=rf"(?s)exponential_moving_average: decay is {decay!r}"
                                            r".*fix: pass the decay as a float, e.g. 0.999"):
            sp.exponential_moving_average(p, p, decay)
    with pytest.raises(TypeError, match=r"(?s)num_updates is 'x'.*fix: "):
        sp.exponential_moving_average(p, p, 0.9, num_updates="x")


def test_exponential_moving_average_of_the_params_and_state_pair_names_itself_in_the_fix():
    pair = ({"w": jnp.ones(2)}, {})
    with pytest.raises(sp.ParamsTypeError, match=r"(?s)exponential_moving_average: .*tuple of 2 "
                                                 r"dicts.*fix: .*sp.exponential_moving_average\("
                                                 r"averages, params, decay\)") as e:
        sp.exponential_moving_average(pair, pair, 0.9)
    assert "sp.flatten" not in str(e.value)


def test_tfs_ema_after_the_train_op_is_num_updates_step_plus_one_as_the_docs_say():
    # TF's usual program: ema.apply under control_dependencies([train_op]) with num_updates=
    # global_step reads the step minimize() has just counted (1 at the first step). The docs' port:
    # num_updates=step + 1, with step the steps taken before this one (a TrainState's step).
    tf = pytest.importorskip("tensorflow")
    optax = pytest.importorskip("optax")
    v1 = tf.compat.v1
    x = np.random.RandomState(0).randn(8, 3).astype(np.float32)
    w0 = np.ones((3, 1), np.float32)
    with tf.Graph().as_default(), v1.Session() as sess:
        w = v1.get_variable("w", initializer=w0)
        global_step = v1.train.get_or_create_global_step()
        train = v1.train.GradientDescentOptimizer(0.1).minimize(
            tf.reduce_sum(tf.matmul(x, w) ** 2), global_step=global_step)
        ema = v1.train.ExponentialMovingAverage(0.99, num_updates=global_step)
        with tf.control_dependencies([train]):
            train = ema.apply([w])
        sess.run(v1.global_variables_initializer())
        expected = []
        for _ in range(3):
            sess.run(train)
            expected.append(sess.run(ema.average(w)))

    params = averages = {"w": jnp.asarray(w0)}
    optimizer = optax.sgd(0.1)
    opt_state = optimizer.init(params)
    for step in range(3):
        grads = jax.grad(lambda p: jnp.sum((x @ p["w"]) ** 2))(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        params = optax.apply_updates(params, updates)
        averages = sp.exponential_moving_average(averages, params, 0.99, num_updates=step + 1)
        np.testing.assert_allclose(averages["w"], expected[step], rtol=1e-5)


def test_exponential_moving_average_num_updates_past_int32_is_cast_to_float32_as_tf_casts_it():
    # TF casts the int64 step straight to float32: the decay is capped by (1 + n) / (10 + n) ~ 1
    averages, params = {"w": jnp.zeros(2)}, {"w": jnp.ones(2)}
    for step in (np.int64(2**33), 2**33, 2**70):
        out = sp.exponential_moving_average(averages, params, 0.999, num_updates=step)
        np.testing.assert_allclose(out["w"], 1 - np.float32(0.999), rtol=1e-6)


def test_exponential_moving_average_refuses_a_string_or_bytes_num_updates():
    with pytest.raises(TypeError, match="num_updates is '5'"):
        sp.exponential_moving_average({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, 0.9, num_updates="5")
    with pytest.raises(TypeError, match="num_updates is bytearray"):
        sp.exponential_moving_average({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, 0.9,
                                      num_updates=bytearray(b"3"))
