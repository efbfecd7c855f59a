"""Constraints as TF 1.x's optimizers apply them (frozen variables untouched, a partitioned variable
projected part by part), initializers returning TF tensors, and a per-layer scalar's partitioner in
``sp.layer_stack``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
RS = np.random.RandomState(0)


def test_apply_constraints_leaves_frozen_params_alone_as_tf_optimizers_do():
    # TF's optimizers project the variables they update (minimize's var_list: the trainable ones).
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    x, y = RS.randn(5, 3).astype(np.float32), RS.randn(5, 2).astype(np.float32)
    f0, w0 = RS.randn(3, 3).astype(np.float32), RS.randn(3, 2).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as sess:
        non_neg = tf.keras.constraints.NonNeg()
        f = v1.get_variable("frozen", initializer=f0, trainable=False, constraint=non_neg)
        w = v1.get_variable("w", initializer=w0, constraint=non_neg)
        loss = tf.reduce_mean(tf.square(tf.matmul(tf.matmul(x, f), w) - y))
        train = v1.train.GradientDescentOptimizer(0.1).minimize(loss)
        sess.run(v1.global_variables_initializer())
        for _ in range(3):
            sess.run(train)
        expected = sess.run({"frozen": f, "w": w})

    def fn(x):
        f = sp.get_param("frozen", init=f0, trainable=False, constraint=sp.constraints.non_neg())
        return x @ f @ sp.get_param("w", init=w0, constraint=sp.constraints.non_neg())

    model = sp.transform(fn)
    params, specs = model.init(KEY, x), model.specs(x)
    for _ in range(3):
        trainable, frozen = sp.partition_trainable(params, specs)
        grads = jax.grad(lambda t: jnp.mean(jnp.square(model.apply(sp.merge(t, frozen), x) - y)))(
            trainable)
        params = sp.merge(jax.tree.map(lambda p, g: p - 0.1 * g, trainable, grads), frozen)
        params = sp.apply_constraints(params, specs)  # the guide's recipe: all the params
    assert expected["frozen"].min() < 0  # TF left the frozen weight negative
    for name, value in sp.flatten(params).items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)
    # Only frozen params with a constraint: nothing to project, the params themselves come back.
    assert sp.apply_constraints(frozen, specs) is frozen


@pytest.mark.parametrize("rows", [4, 5])  # even parts, and TF's uneven ones (3 + 2 rows)
def test_a_constraint_on_a_partitioned_param_projects_each_of_tfs_parts(rows):
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    w0 = RS.randn(rows, 3).astype(np.float32)
    x, y = RS.randn(5, rows).astype(np.float32), RS.randn(5, 3).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as sess:
        with v1.variable_scope("m", partitioner=v1.fixed_size_partitioner(2)):
            w = v1.get_variable("w", [rows, 3],
                                constraint=tf.keras.constraints.MaxNorm(1.0, axis=0))
        train = v1.train.GradientDescentOptimizer(0.1).minimize(
            tf.reduce_mean(tf.square(tf.matmul(x, w) - y)))
        sess.run(v1.global_variables_initializer())
        parts = list(w)
        assert [p.shape[0] for p in parts] == ([2, 2] if rows == 4 else [3, 2])
        sess.run([parts[0].assign(w0[:parts[0].shape[0]]), parts[1].assign(w0[parts[0].shape[0]:])])
        for _ in range(3):
            sess.run(train)
        expected = sess.run(tf.convert_to_tensor(w))

    def fn(x):
        with sp.scope("m", partitioner=sp.sharding.fixed_size_partitioner(2)):
            return x @ sp.get_param("w", init=w0, constraint=sp.constraints.max_norm(1.0, axis=0))

    model = sp.transform(fn)
    params, specs = model.init(KEY, x), model.specs(x)
    step = jax.jit(lambda p: sp.apply_constraints(jax.tree.map(
        lambda a, g: a - 0.1 * g, p,
        jax.grad(lambda p: jnp.mean(jnp.square(model.apply(p, x) - y)))(p)), specs))
    for _ in range(3):
        params = step(params)
    np.testing.assert_allclose(params["m"]["w"], expected, rtol=1e-5, atol=1e-6)


def test_a_constraint_on_a_partitioned_param_in_a_layer_stack_projects_each_layers_parts():
    w0 = RS.randn(2, 5, 5).astype(np.float32) * 3
    max_norm = sp.constraints.max_norm(1.0, axis=0)

    def block(h):
        with sp.scope("layer", partitioner=sp.sharding.fixed_size_partitioner(2)):
            return h @ sp.get_param("w", [5, 5], constraint=max_norm)

    x = jnp.ones((1, 5))
    specs = sp.transform(lambda x: sp.layer_stack(2, name="stack")(block)(x)).specs(x)
    got = sp.apply_constraints({"stack": {"layer": {"w": jnp.asarray(w0)}}}, specs)
    # Each layer as TF projects the unrolled block's variable: its parts (3 + 2 rows) on their own.
    expected = [np.concatenate([max_norm(w[:3]), max_norm(w[3:])]) for w in w0]
    np.testing.assert_allclose(got["stack"]["layer"]["w"], expected, rtol=1e-6)
    assert not np.allclose(expected, [max_norm(w) for w in w0])  # (the whole would differ)


def test_init_turns_tf_tensors_an_initializer_returns_into_jax_arrays():
    tf = pytest.importorskip("tensorflow")
    tf_init = tf.compat.v1.constant_initializer(0.4)
    wrapped = lambda key, shape, dtype: tf_init(shape, dtype)  # noqa: E731

    def fn(x):  # two of one shape are drawn as one group (vmapped), one alone
        return (x * sp.get_param("a", [2], init=wrapped) * sp.get_param("b", [2], init=wrapped)
                * sp.get_param("c", [3, 2], init=wrapped).sum(0))

    from tensorflow.python.eager import context

    model = sp.transform(fn)
    for run in (model.init, jax.jit(model.init)):
        with context.eager_mode():  # another test module turns TF's eager execution off globally
            params = run(KEY, jnp.ones(2))
        for name, value in sp.flatten(params).items():
            assert isinstance(value, jax.Array), (name, type(value))
            np.testing.assert_allclose(value, np.full(value.shape, 0.4, np.float32))
    np.testing.assert_allclose(jax.jit(model.apply)(params, jnp.ones(2)), np.full(2, 0.4 ** 3 * 3),
                               rtol=1e-6)


def test_init_copies_a_numpy_array_an_initializer_returns():
    w = np.full((2,), 0.4, np.float32)
    params = sp.transform(lambda: sp.get_param("emb", [2], init=lambda key, shape, dtype: w)).init(KEY)
    assert isinstance(params["emb"], jax.Array)
    w[:] = 7.0
    np.testing.assert_array_equal(params["emb"], np.full((2,), 0.4, np.float32))


@pytest.mark.parametrize("n", [1, 2])  # alone, and in a vmapped group
def test_a_graph_mode_tf_tensor_from_an_initializer_is_an_error_naming_the_param_and_our_equivalent(n):
    tf = pytest.importorskip("tensorflow")
    tf_init = tf.compat.v1.constant_initializer(0.4)

    def fn():
        with sp.scope("enc"):
            for i in range(n):
                sp.get_param(f"w{i}", [2], init=lambda key, shape, dtype: tf_init(shape, dtype))

    with tf.Graph().as_default():  # TF 1.x's graph mode: tf_init makes a symbolic tensor
        with pytest.raises(sp.InitializerError) as e:
            sp.transform(fn).init(KEY)
    message = str(e.value)
    assert "The initializer of 'enc/w0' (a lambda) returned a graph-mode TF tensor" in message
    assert __file__ in message  # where the parameter was created
    assert "  fix: use sp.initializers.Constant(value=0.4, dtype='float32')" in message


def test_a_tf_initializer_object_is_named_by_its_class_and_the_fix_given_works():
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(sp.InitializerError) as e:
        sp.transform(lambda: sp.get_param("enc/w", [2], init=tf.compat.v1.constant_initializer(0.4))
                     ).init(KEY)
    message = str(e.value)
    assert "The initializer of 'enc/w' (Constant) takes (shape, dtype, partition_info)" in message
    fix = "  fix: use sp.initializers.Constant(value=0.4, dtype='float32'), "
    assert fix in message
    ours = eval(fix.split("use ", 1)[1].rstrip(", "), {"sp": sp})
    with tf.Graph().as_default():  # it works where TF builds graphs, as TF 1.x programs do
        params = sp.transform(lambda: sp.get_param("enc/w", [2], init=ours)).init(KEY)
    np.testing.assert_array_equal(params["enc"]["w"], np.full(2, 0.4, np.float32))


@pytest.mark.parametrize("depth", [1, 2])  # a layer_stack, and one inside another
def test_a_per_layer_scalar_in_a_layer_stack_ignores_a_non_callable_partitioner_as_tf_does(depth):
    def block(h):
        with sp.scope("layer", partitioner="model"):  # e.g. a mesh axis name where a partitioner goes
            return h * sp.get_param("scale", ())

    def stacked(x):
        body = block
        for i in range(depth):
            body = sp.layer_stack(3, name=f"stack{i}")(body)
        return body(x)

    params = sp.transform(stacked).init(KEY, jnp.ones((2, 4)))
    assert jax.tree.leaves(params)[0].shape == (3,) * depth

    def vector(h):
        with sp.scope("layer", partitioner="model"):
            return h * sp.get_param("scale", (4,))

    with pytest.raises(sp.sharding.PartitionerError,
                       match=r"Partitioner must be callable, but received: 'model' \(parameter "
                             r"'stack/layer/scale'\)"):
        sp.transform(lambda x: sp.layer_stack(3, name="stack")(vector)(x)).init(KEY, jnp.ones((2, 4)))
