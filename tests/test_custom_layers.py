"""sp.layers.Layer: TF 1.x's custom layers (``tf.compat.v1.layers.Layer`` subclasses with ``build``
and ``call``), checked against TF: names, trainable flags, sharing and outputs."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp
from _tf_values import load_random_values

pytestmark = pytest.mark.filterwarnings("ignore:.*add_variable. is deprecated:UserWarning")

KEY = jax.random.key(0)
X = np.random.RandomState(0).randn(2, 3).astype(np.float32)


def make_dense(base, kernel_init, bias_init):
    """The same custom layer on TF's base class or ours (the body is written once)."""

    class MyDense(base):
        def __init__(self, units, **kwargs):
            super().__init__(**kwargs)
            self.units = units

        def build(self, input_shape):
            self.kernel = self.add_weight("kernel", [int(input_shape[-1]), self.units],
                                          initializer=kernel_init)
            self.bias = self.add_variable("bias", [self.units], initializer=bias_init,
                                          trainable=False)
            super().build(input_shape)

        def call(self, x):
            return x @ self.kernel + self.bias

    return MyDense


def program(MyDense, variable_scope, x):
    """A shared object called twice, a named one, and two made outside a scope but first called in
    it (TF decides the scope at the first call)."""
    a = MyDense(4)
    y = a(x)
    b = MyDense(3, name="head")
    c = MyDense(5)
    with variable_scope("outer"):
        d = MyDense(4)
        yd, yc = d(x), c(x)
    e = MyDense(2)
    return a(x) * 2.0, b(y), yd, yc, e(x, scope="placed")


def test_custom_layers_match_tf_names_trainable_flags_sharing_and_outputs():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.placeholder(tf.float32, X.shape)
        outputs = program(make_dense(v1.layers.Layer, v1.glorot_uniform_initializer(),
                                     v1.zeros_initializer()), v1.variable_scope, x)
        session.run(v1.global_variables_initializer())
        values = load_random_values(session, v1.global_variables())
        trainable = {v.name[:-2] for v in v1.trainable_variables()}
        expected = session.run(outputs, {x: X})

    model = sp.transform(lambda x: program(
        make_dense(sp.layers.Layer, sp.initializers.glorot_uniform, sp.initializers.zeros),
        sp.scope, x))
    params, specs = model.init(KEY, X), sp.flatten(model.specs(X))
    assert {k: v.shape for k, v in sp.flatten(params).items()} == {k: v.shape for k, v in values.items()}
    assert {k for k, spec in specs.items() if spec.trainable} == trainable
    assert set(values) == {"my_dense/kernel", "my_dense/bias", "head/kernel", "head/bias",
                           "outer/my_dense/kernel", "outer/my_dense/bias", "outer/my_dense_1/kernel",
                           "outer/my_dense_1/bias", "placed/kernel", "placed/bias"}
    params = sp.unflatten({k: jnp.asarray(v) for k, v in values.items()})
    for apply in (model.apply, jax.jit(model.apply)):
        for ours, theirs in zip(apply(params, X), expected):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def recording_program(base, initializer, record, variable_scope):
    """Two objects of a custom layer that names a value ("y") in its call: called first, again, and
    again inside another scope."""

    class Scale(base):
        def build(self, input_shape):
            self.g = self.add_weight("g", [int(input_shape[-1])], initializer=initializer)

        def call(self, x):
            y = x * self.g
            record("y", y)
            return y

    def program(x):
        a, b = Scale(), Scale()
        y = a(b(a(x)))
        with variable_scope("s"):
            return a(y)

    return program


def test_records_and_ops_in_a_layer_objects_call_are_named_in_its_name_scope_like_tf():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        recording_program(v1.layers.Layer, v1.ones_initializer(),
                          lambda name, y: tf.identity(y, name=name),
                          v1.variable_scope)(v1.placeholder(tf.float32, X.shape))
        tf_names = [op.name for op in graph.get_operations() if op.type == "Identity"]
        tf_muls = [op.name for op in graph.get_operations() if op.type == "Mul"]
    assert tf_names == ["scale/y", "scale_1/y", "scale/y_1", "scale/y_2"]
    assert tf_muls == ["scale/mul", "scale_1/mul", "scale/mul_1", "scale/mul_2"]

    model = sp.transform(recording_program(sp.layers.Layer, sp.initializers.ones, sp.record,
                                           sp.scope))
    params = model.init(KEY, X)
    _, records = model.apply_with_intermediates(params, X)
    assert list(records) == tf_names
    lowered = jax.jit(model.apply).lower(params, X).as_text(debug_info=True)
    op_names = set(re.findall(r'loc\("jit\(apply\)/([^"]*)"', lowered))
    assert {"scale/mul", "scale_1/mul"} <= op_names and "mul" not in op_names


class Scale(sp.layers.Layer):
    def build(self, input_shape):
        assert input_shape[-1].value == int(input_shape[-1]) == input_shape.as_list()[-1]
        assert [d.value for d in input_shape] == list(input_shape) and input_shape.ndims == 2
        assert input_shape[1:].as_list() == [input_shape.as_list()[1]]
        self.gain = self.add_weight("gain", [input_shape[-1].value], initializer=sp.initializers.ones,
                                    regularizer=sp.l2_regularizer(0.5),
                                    constraint=sp.constraints.non_neg())

    def call(self, x):
        return x * self.gain


def test_each_init_and_apply_builds_the_layer_anew_with_its_own_params():
    # The attributes build sets hold the parameters of the call that runs: a layer object made once,
    # outside, used by init, eager apply and a jitted apply with other params.
    layer = Scale(dtype=jnp.float32)
    model = sp.transform(lambda x: (layer(x), layer(x + 1.0), sp.regularization_loss(), layer.weights))
    params = model.init(KEY, X)
    assert sp.flatten(params)["scale/gain"].tolist() == [1.0, 1.0, 1.0]
    other = {"scale": {"gain": jnp.asarray([2.0, 3.0, 4.0])}}
    for apply in (model.apply, jax.jit(model.apply)):
        y, y1, loss, weights = apply(other, X)
        np.testing.assert_allclose(y, X * [2.0, 3.0, 4.0], rtol=1e-6)
        np.testing.assert_allclose(y1, (X + 1.0) * [2.0, 3.0, 4.0], rtol=1e-6)
        np.testing.assert_allclose(loss, 0.5 * 0.5 * (4.0 + 9.0 + 16.0), rtol=1e-6)  # counted once
        assert len(weights) == 1
    y, *_ = model.apply(params, X)
    np.testing.assert_allclose(y, X, rtol=1e-6)
    assert sp.flatten(model.specs(X))["scale/gain"].constraint is not None
    assert layer.built


def test_a_layer_made_non_trainable_makes_every_weight_non_trainable():
    MyDense = make_dense(sp.layers.Layer, None, sp.initializers.zeros)
    model = sp.transform(lambda x: MyDense(2, trainable=False, name="frozen")(x))
    specs = sp.flatten(model.specs(X))
    assert {k: s.trainable for k, s in specs.items()} == {"frozen/kernel": False, "frozen/bias": False}


def test_add_weight_outside_the_layers_call_is_an_error_that_says_use_build():
    class Eager(sp.layers.Layer):
        pass

    layer = Eager()

    def fn(x):
        layer.add_weight("w", [3])
        return x

    with pytest.raises(RuntimeError, match=r"(?s)Eager.add_weight\('w'\) was called outside .* build"):
        sp.transform(fn).init(KEY, X)


def scoping_program(base, variable_scope, const, auto_reuse, calls):
    """Custom layers whose build opens scopes around add_weight (with reuse, an initializer and a
    custom getter), objects given the same name, and one first called under a scope with a getter
    and an initializer."""

    def getter(getter, name, *args, **kwargs):
        calls.append(name)
        return getter(name, *args, **kwargs)

    class AtomicModel(base):
        def build(self, input_shape):
            with variable_scope("atomic", reuse=auto_reuse):
                self.k = self.add_weight(name="kernel0", shape=(int(input_shape[-1]), 3))
            with variable_scope("u", reuse=True, initializer=const(7.0), custom_getter=getter):
                self.b = self.add_weight(name="bias0", shape=(3,))  # created, neither 7 nor getter
            with variable_scope(None, default_name="blk"):
                self.k2 = self.add_weight(name="kernel1", shape=(3, 3))

        def call(self, x):
            return (x @ self.k + self.b) @ self.k2

    class Twice(base):
        def build(self, input_shape):
            self.g = self.add_weight("g", [int(input_shape[-1])])
            self.g2 = self.add_weight("g", [int(input_shape[-1])])  # with _reuse: the same one

        def call(self, x):
            return x * self.g * self.g2

    def program(x):
        out = [AtomicModel()(x), AtomicModel()(x)]  # atomic_model/, atomic_model_1/
        out += [AtomicModel(name="m")(x) for _ in range(2)]  # m/, m_1/
        out += [Twice(_reuse=auto_reuse)(x) for _ in range(2)]  # twice/, shared
        with variable_scope("o", custom_getter=getter, initializer=const(3.0)):
            layer = AtomicModel()
            out.append(layer(x))  # o/atomic_model/...: the getter sees each weight once
        out.append(layer(x))
        return out

    return program


def test_add_weight_uses_the_layers_own_scope_not_one_build_opens_like_tf():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    tf_calls, sp_calls = [], []
    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.placeholder(tf.float32, X.shape)
        outputs = scoping_program(v1.layers.Layer, v1.variable_scope, v1.constant_initializer,
                                  v1.AUTO_REUSE, tf_calls)(x)
        session.run(v1.global_variables_initializer())
        values = {v.name[:-2]: session.run(v) for v in v1.global_variables()}
        expected = session.run(outputs, {x: X})
    assert sorted(values) == sorted(
        f"{layer}/{weight}" for layer in ("atomic_model", "atomic_model_1", "m", "m_1",
                                          "o/atomic_model")
        for weight in ("kernel0", "bias0", "kernel1")) + ["twice/g"]
    assert tf_calls == ["o/atomic_model/kernel0", "o/atomic_model/bias0", "o/atomic_model/kernel1"]
    np.testing.assert_array_equal(values["o/atomic_model/kernel0"], 3.0)  # the layer's scope's

    model = sp.transform(lambda x: scoping_program(sp.layers.Layer, sp.scope,
                                                   sp.initializers.constant, sp.AUTO_REUSE,
                                                   sp_calls)(x))
    params = sp.flatten(model.init(KEY, X))
    assert sorted(params) == sorted(values) and sp_calls == tf_calls
    np.testing.assert_array_equal(params["o/atomic_model/kernel0"], 3.0)
    assert not np.any(params["m/bias0"] == 7.0)
    for ours, theirs in zip(model.apply(sp.unflatten(values), X), expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_add_weight_in_call_finds_reuse_on_and_no_weight_like_tf():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1

    def in_call(base):
        class InCall(base):
            def call(self, x):
                return x * self.add_weight("k", [int(x.shape[-1])])
        return InCall

    with tf.Graph().as_default(), pytest.raises(ValueError, match="in_call/k does not exist"):
        in_call(v1.layers.Layer)()(v1.placeholder(tf.float32, X.shape))
    with pytest.raises(sp.ParamNotFoundError, match="in_call/k does not exist"):
        sp.transform(lambda x: in_call(sp.layers.Layer)()(x)).init(KEY, X)


def test_add_weight_in_call_says_create_it_in_build_not_reuse_the_user_never_set():
    class Scale(sp.layers.Layer):
        def call(self, x):
            return x * self.add_weight("gain", (x.shape[-1],))

    with pytest.raises(ValueError) as e:
        sp.transform(lambda x: Scale()(x)).init(KEY, X)
    msg = str(e.value)
    assert isinstance(e.value, sp.ParamNotFoundError)
    assert msg.startswith("Variable scale/gain does not exist: Scale.add_weight('gain') was called "
                          "after layer 'scale' was built")
    assert "set reuse=True at" not in msg and "AUTO_REUSE" not in msg
    assert msg.endswith("fix: create the weight in build(input_shape): self.gain = "
                        "self.add_weight('gain', ...) there, and use self.gain in call().")


def test_a_custom_layer_whose_call_takes_no_training_drops_it_like_tf():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1

    def layers(base):
        class Plain(base):
            def call(self, x):
                return 2 * x

        class Flagged(base):
            def call(self, x, training=False):
                return x if training else -x

        class Open(base):
            def call(self, x, **kwargs):
                return x * (3 if kwargs.get("training") else 1)
        return Plain, Flagged, Open

    def program(base):
        def fn(x):
            Plain, Flagged, Open = layers(base)
            return (Plain()(x, training=True), Flagged()(x, training=True),
                    Open()(x, training=True))
        return fn

    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.placeholder(tf.float32, X.shape)
        expected = session.run(program(v1.layers.Layer)(x), {x: X})
    ours = sp.transform(program(sp.layers.Layer)).apply({}, X)
    for a, b in zip(ours, expected):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_add_weight_refuses_keras_getter_naming_itself_and_saying_how_to_share():
    class Keras(sp.layers.Layer):
        def build(self, input_shape):
            self.k = self.add_weight("kernel", [3], getter=sp.get_param)

        def call(self, x):
            return x * self.k

    with pytest.raises(TypeError, match=r"(?s)^Keras.add_weight\('kernel'\) got an unexpected keyword "
                                        r"argument getter=\.\n  fix: drop it: .*_reuse=sp.AUTO_REUSE"):
        sp.transform(lambda x: Keras()(x)).init(KEY, X)


def test_layer_takes_tfs_constructor_arguments_and_rejects_others():
    assert sp.layers.Layer(name="x", dtype="float32", trainable=False, _scope=None).dtype == jnp.float32
    with pytest.raises(TypeError, match="Keyword argument not understood: 'units'"):
        sp.layers.Layer(units=3)
    with pytest.raises(TypeError, match="Layer: activity_regularizer must be a function"):
        sp.layers.Layer(activity_regularizer=0.1)
    model = sp.transform(lambda x: sp.layers.Layer()(x))  # the base layer is the identity
    np.testing.assert_array_equal(model.apply(model.init(KEY, X), X), X)


def test_a_custom_layer_built_inside_an_sp_scan_step_is_shared_with_calls_outside_it():
    layer = Scale()

    def fn(xs):
        def step(h, x):
            h = layer(h + x)
            return h, h
        h, _ = sp.scan(step, jnp.zeros(xs.shape[1:]), xs)
        return layer(h)

    model = sp.transform(fn)
    xs = jnp.ones((3, 2, 4))
    params = model.init(KEY, xs)
    assert list(sp.flatten(params)) == ["scale/gain"]
    gain = {"scale": {"gain": jnp.full((4,), 2.0)}}
    for apply in (model.apply, jax.jit(model.apply)):
        np.testing.assert_allclose(apply(gain, xs), jnp.full((2, 4), 28.0))  # ((2+1)*2+1)*2, then *2


def test_a_subclass_that_skips_the_base_init_gets_an_error_that_says_call_it():
    class NoSuper(sp.layers.Layer):
        def __init__(self, units):
            self.units = units

    with pytest.raises(TypeError, match=r"NoSuper.__init__ did not call the base class's.*"
                                        r"\n  fix: call super\(\).__init__"):
        sp.transform(lambda x: NoSuper(3)(x)).init(KEY, X)


def test_add_loss_and_add_update_say_what_replaces_them():
    class Losses(sp.layers.Layer):
        def call(self, x):
            self.add_loss(x.sum())
            return x

    class Updates(sp.layers.Layer):
        def call(self, x):
            self.add_update(x.sum())
            return x

    with pytest.raises(NotImplementedError, match="(?s)add_loss.*regularization_loss"):
        sp.transform(lambda x: Losses()(x)).init(KEY, X)
    with pytest.raises(NotImplementedError, match="(?s)add_update.*sp.set_state"):
        sp.transform(lambda x: Updates()(x)).init(KEY, X)
