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


def run_in_tf(program, *arrays):
    """Run ``program(x, ...)`` in a TF 1.x graph: (its variables' random values by name, its
    outputs, its trainable variables' names)."""
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        inputs = [v1.placeholder(tf.float32, a.shape) for a in arrays]
        outputs = program(*inputs)
        session.run(v1.global_variables_initializer())
        values = load_random_values(session, v1.global_variables())
        trainable = {v.name[:-2] for v in v1.trainable_variables()}
        return values, session.run(outputs, dict(zip(inputs, arrays))), trainable


def assert_same_as_tf(program_of, *arrays, state=False):
    """``program_of(tf_api)`` and ``program_of(sp_api)`` make the same parameters (names, shapes,
    trainable flags) and, on TF's values, the same outputs, eagerly and jitted."""
    tf = pytest.importorskip("tensorflow")
    values, expected, trainable = run_in_tf(program_of(tf.compat.v1), *arrays)
    model = sp.transform(program_of(sp))
    params = model.init(KEY, *arrays)
    assert {k: v.shape for k, v in sp.flatten(params).items()} == {
        k: v.shape for k, v in values.items()}
    assert {k for k, s in sp.flatten(model.specs(*arrays)).items() if s.trainable} == trainable
    params = sp.unflatten({k: jnp.asarray(v) for k, v in values.items()})
    for apply in (model.apply, jax.jit(model.apply)):
        for ours, theirs in zip(jax.tree_util.tree_leaves(apply(params, *arrays)),
                                jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    return values


def subclassing_program(api):
    """Subclasses of the built-in Dense: one overriding call (super().call), one only renamed, one
    overriding build (a mask made before super().build) and call (reading self.kernel)."""
    is_tf = api is not sp
    ones = api.ones_initializer() if is_tf else sp.initializers.ones

    class ScaledDense(api.layers.Dense):
        def call(self, inputs):
            return 2.0 * super().call(inputs)

    class Renamed(api.layers.Dense):
        def __init__(self, units, **kwargs):
            super().__init__(units, **kwargs)

    class MaskedDense(api.layers.Dense):
        def build(self, input_shape):
            self.mask = self.add_weight("mask", [int(input_shape[-1]), self.units],
                                        initializer=ones, trainable=False)
            super().build(input_shape)

        def call(self, inputs):
            return inputs @ (self.kernel * self.mask) + self.bias

    def program(x):
        scaled, masked = ScaledDense(3), MaskedDense(2, activation="relu")
        return scaled(x), scaled(x + 1.0), Renamed(4)(x), masked(x), masked(x * 2.0)

    return program


def test_a_subclass_of_a_builtin_layer_object_is_named_after_it_and_runs_its_own_call_like_tf():
    values = assert_same_as_tf(subclassing_program, X)
    assert sorted(values) == ["masked_dense/bias", "masked_dense/kernel", "masked_dense/mask",
                              "renamed/bias", "renamed/kernel", "scaled_dense/bias",
                              "scaled_dense/kernel"]


def test_a_builtin_layer_object_subclass_in_a_scope_with_an_activation_like_tf():
    # The activation is applied by the built-in call once (TF's Dense.call), its activity
    # regularizer by the layer's __call__ once per call; build's weights keep the scope's
    # initializer.
    def program_of(api):
        is_tf = api is not sp

        class Shifted(api.layers.Dense):
            def call(self, inputs):
                return super().call(inputs) - 1.0

        def program(x):
            with (api.variable_scope if is_tf else api.scope)("s"):
                layer = Shifted(3, activation=jax.nn.relu if not is_tf else api.nn.relu)
                return layer(x), layer(x)
        return program

    assert_same_as_tf(program_of, X)


def test_layer_scope_argument_is_the_scope_entered_at_construction_like_tf():
    def program_of(api):
        is_tf = api is not sp
        variable_scope = api.variable_scope if is_tf else api.scope

        class MyLayer(api.layers.Layer):
            def build(self, input_shape):
                self.k = self.add_weight("k", [int(input_shape[-1]), 2])

            def call(self, x):
                return x @ self.k

        def my_layer(x, name=None, reuse=None):  # TF's own functional layers' pattern
            return MyLayer(name=name, _scope=name, _reuse=reuse)(x)

        def program(x):
            with variable_scope("outer"):
                made_in_outer = MyLayer(_scope="foo")
                dense = api.layers.Dense(3, name="q", _scope="sc")
            with variable_scope("elsewhere"):
                y = made_in_outer(x)  # outer/foo/k, where it was made
            return (y, made_in_outer(x), my_layer(x, name="blk"),
                    my_layer(x, name="blk", reuse=True), my_layer(x), dense(x), dense(x))
        return program

    values = assert_same_as_tf(program_of, X)
    assert sorted(values) == ["blk/k", "my_layer/k", "outer/foo/k", "outer/sc/bias",
                              "outer/sc/kernel"]


def test_layer_scope_argument_outside_the_transform_is_a_scope_at_the_root():
    class MyLayer(sp.layers.Layer):
        def build(self, input_shape):
            self.k = self.add_weight("k", [int(input_shape[-1])])

        def call(self, x):
            return x * self.k

    layer = MyLayer(_scope="foo")

    def fn(x):
        with sp.scope("o"):
            return layer(x)

    assert list(sp.flatten(sp.transform(fn).init(KEY, X))) == ["foo/k"]
    with pytest.raises(TypeError, match=r"MyLayer\(_scope=3\): _scope must be a scope name"):
        MyLayer(_scope=3)


def test_weights_and_variables_list_the_trainable_weights_first_like_tf():
    seen = {}

    class MyLayer(sp.layers.Layer):
        def build(self, input_shape):
            self.count = self.add_weight("count", [3], initializer=sp.initializers.zeros,
                                         trainable=False)
            self.kernel = self.add_weight("kernel", [int(input_shape[-1]), 2])
            self.bias = self.add_weight("bias", [2], initializer=sp.initializers.zeros)

        def call(self, x):
            return x @ self.kernel + self.bias

    def fn(x):
        layer = MyLayer()
        y = layer(x)
        seen.update(weights=[w.shape for w in layer.weights],
                    variables=[w.shape for w in layer.variables],
                    trainable=[w.shape for w in layer.trainable_weights],
                    non_trainable=[w.shape for w in layer.non_trainable_variables])
        return y

    sp.transform(fn).init(KEY, X)
    # TF 1.x: [my_layer/kernel, my_layer/bias, my_layer/count]
    assert seen == {"weights": [(3, 2), (2,), (3,)], "variables": [(3, 2), (2,), (3,)],
                    "trainable": [(3, 2), (2,)], "non_trainable": [(3,)]}


def test_a_call_that_takes_scope_gets_the_layers_variable_scope_like_tf():
    tf = pytest.importorskip("tensorflow")
    got = []

    def program_of(api):
        is_tf = api is not sp
        variable_scope = api.variable_scope if is_tf else api.scope
        get = api.get_variable if is_tf else api.get_param

        class Cell(api.layers.Layer):
            def call(self, x, scope=None):
                got.append(scope.name)
                with variable_scope(scope or "cell"):
                    w = get("w", [3, 2])
                return x @ w

        def program(x):
            c, placed = Cell(), Cell()
            return c(x), c(x), placed(x, scope="zz"), placed(x)
        return program

    values = assert_same_as_tf(program_of, X)
    assert sorted(values) == ["cell/w", "zz/w"]
    tf_got, sp_got = got[:4], got[4:]
    assert tf_got == ["cell", "cell", "zz", "zz"] and sp_got[:4] == tf_got
    del tf


def test_builtin_layer_objects_expose_tfs_weights_and_config_attributes_after_a_call():
    seen = {}

    def fn(x, images):
        d = sp.layers.Dense(3, activation="relu")
        y = d(x)
        tied = y @ d.kernel.T  # weight tying, as TF programs do with tf.transpose(d.kernel)
        seen["dense"] = (d.kernel.shape, d.bias.shape, len(d.weights), len(d.trainable_weights),
                         len(d.variables), len(d.trainable_variables), d.non_trainable_weights,
                         d.units, d.activation is jax.nn.relu, d.use_bias, d.built, d.name,
                         d.scope_name)
        nobias = sp.layers.Dense(2, use_bias=False, name="nb")
        nobias(x)
        seen["nobias"] = (nobias.bias, [w.shape for w in nobias.weights], nobias.name)
        conv = sp.layers.Conv2D(4, 3, padding="SAME")
        conv(images)
        seen["conv"] = (conv.kernel_size, conv.strides, conv.dilation_rate, conv.filters,
                        conv.padding, conv.kernel.shape, conv.name)
        bn = sp.layers.BatchNormalization()
        bn(x)
        seen["bn"] = ([w.shape for w in bn.weights], len(bn.trainable_weights),
                      bn.moving_mean.shape, bn.momentum)
        pool = sp.layers.MaxPooling2D(2, 2)
        seen["pool"] = (pool.pool_size, pool.strides, pool.padding)
        return tied, d.kernel

    model = sp.transform(fn)
    images = jnp.ones((1, 4, 4, 2))
    params = model.init(KEY, X, images)
    assert seen["dense"] == ((3, 3), (3,), 2, 2, 2, 2, [], 3, True, True, True, "dense_1",
                             "dense")
    assert seen["nobias"] == (None, [(3, 2)], "nb")
    assert seen["conv"] == ((3, 3), (1, 1), (1, 1), 4, "same", (3, 3, 2, 4), "conv2d_1")
    assert seen["bn"] == ([(3,), (3,), (3,), (3,)], 2, (3,), 0.99)
    assert seen["pool"] == ((2, 2), (2, 2), "valid")
    for apply in (model.apply, jax.jit(model.apply)):
        tied, kernel = apply(params, X, images)
        np.testing.assert_array_equal(kernel, params["dense"]["kernel"])
        y = jax.nn.relu(X @ params["dense"]["kernel"] + params["dense"]["bias"])
        np.testing.assert_allclose(tied, y @ params["dense"]["kernel"].T, rtol=1e-5)


def test_a_builtin_layer_objects_weights_before_its_call_or_outside_the_transform_say_why():
    d = sp.layers.Dense(3)

    def before(x):
        assert d.weights == [] and not d.built  # as TF's before its first call
        return d.kernel

    with pytest.raises(AttributeError, match=r"(?s)^'Dense' object has no attribute 'kernel' yet:"
                                             r".*\n  fix: call the layer first"):
        sp.transform(before).init(KEY, X)
    with pytest.raises(sp.ScopedParamsError, match=r"sp.layers.Dense\(...\).kernel was called "
                                                   "outside a transformed function"):
        d.kernel
    with pytest.raises(AttributeError, match="'Dense' object has no attribute 'kernle'"):
        d.kernle


def test_layer_name_is_tfs_default_name_at_construction_and_scope_name_the_first_calls():
    seen = []

    class MyLayer(sp.layers.Layer):
        def call(self, x):
            return x

    def fn(x):
        a, b, named = MyLayer(), MyLayer(), MyLayer(name="fc")
        seen.append((a.name, b.name, named.name))
        a(x), named(x)
        with sp.scope("o"):
            b(x)
        seen.append((a.scope_name, b.scope_name, named.scope_name))
        return x

    model = sp.transform(fn)
    model.apply(model.init(KEY, X), X)
    # TF 1.x: names my_layer_1, my_layer_2 (numbered per graph, from 1), scope names as called
    assert seen == [("my_layer_1", "my_layer_2", "fc"), ("my_layer", "o/my_layer", "fc")] * 2
    unused = MyLayer()
    with pytest.raises(ValueError, match=r"(?s)No name available for layer scope because the layer "
                                         r"'my_layer_\d+' has not been used yet.*\n  fix: call"):
        unused.scope_name


def test_layer_losses_say_that_sp_regularization_loss_sums_them():
    class MyLayer(sp.layers.Layer):
        def build(self, input_shape):
            self.k = self.add_weight("k", [int(input_shape[-1])],
                                     regularizer=sp.l2_regularizer(0.1))

        def call(self, x):
            return x * self.k

    def fn(x):
        layer = MyLayer()
        y = layer(x)
        return y, layer.losses

    with pytest.raises(NotImplementedError, match=r"(?s)^MyLayer.losses: .*\n  fix: .*"
                                                  r"sp.regularization_loss\(\)"):
        sp.transform(fn).init(KEY, X)
    with pytest.raises(NotImplementedError, match=r"Dense.losses"):
        sp.layers.Dense(3).losses


def test_built_set_in_init_skips_build_like_tf():
    class Double(sp.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.built = True

        def build(self, input_shape):
            raise AssertionError("build ran although built=True (TF 1.x never calls it)")

        def call(self, x):
            return 2 * x

    layer = Double()
    model = sp.transform(lambda x: (layer(x), Double()(x)))
    for y in model.apply(model.init(KEY, X), X):
        np.testing.assert_allclose(y, 2 * X)


def test_add_weight_needs_a_shape_and_takes_none_as_a_scalar_like_tf():
    def layer_of(shape_args):
        class M(sp.layers.Layer):
            def build(self, input_shape):
                self.g = self.add_weight("g", *shape_args)

            def call(self, x):
                return x * self.g
        return M

    params = sp.transform(lambda x: layer_of([None])()(x)).init(KEY, X)
    assert sp.flatten(params)["m/g"].shape == ()  # TF: m/g of shape []
    with pytest.raises(TypeError, match=r"add_weight\(\) missing 1 required positional argument: "
                                        "'shape'"):
        sp.transform(lambda x: layer_of([])()(x)).init(KEY, X)


def test_a_custom_layers_default_dtype_is_its_inputs_int_too_like_tf():
    def program_of(api):
        class Count(api.layers.Layer):
            def build(self, input_shape):
                self.k = self.add_weight("k", [int(input_shape[-1])])

            def call(self, x):
                return x + self.k
        return lambda x: Count()(x)

    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        program_of(v1)(v1.placeholder(tf.int32, (2, 3)))
        (k,) = v1.global_variables()
        assert k.dtype.base_dtype == tf.int32
    params = sp.transform(program_of(sp)).init(KEY, np.ones((2, 3), np.int32))
    assert sp.flatten(params)["count/k"].dtype == jnp.int32
    np.testing.assert_array_equal(sp.flatten(params)["count/k"], 0)  # int weights start at zero


class DoubledScale(sp.layers.Layer):
    def build(self, input_shape):
        gain = self.add_weight("gain", [int(input_shape[-1])], initializer=sp.initializers.ones)
        self.double_gain = 2.0 * gain  # computed in build: a value of the trace build ran in

    def call(self, x):
        return x * self.double_gain


def test_a_value_build_computed_inside_an_sp_scan_read_after_it_is_a_clear_error_in_apply():
    # TF 1.x refuses a tensor made inside a tf.while_loop outside it; here JAX's leaked-tracer error
    # was all one got.
    def fn(x):
        layer = DoubledScale()
        h, _ = sp.scan(lambda c, _: (layer(c), None), x, None, length=2)
        return layer(h)

    model = sp.transform(fn)
    params = model.init(KEY, X)
    for apply in (model.apply, jax.jit(model.apply)):
        with pytest.raises(sp.NestedTraceError, match=re.escape(
                "DoubledScale(...).double_gain was made by DoubledScale.build at the layer's first "
                "call, which ran inside a JAX trace that has ended since")) as info:
            apply(params, X)
        assert "\n  fix: call the layer once before the sp.scan/sp.cond/sp.remat" in str(info.value)


def test_a_built_value_of_the_params_around_apply_is_read_under_jit_scan_and_vmap():
    # Values of the traces apply runs in (the params a jitted scan closes over, a vmap around apply)
    # are the call's own: no error.
    def fn(x):
        layer = DoubledScale()
        return layer(layer(x))

    model = sp.transform(fn)
    params = model.init(KEY, X)
    expected = model.apply(params, X)
    run = jax.jit(lambda p, xs: jax.lax.scan(
        lambda c, x: (c, jax.vmap(lambda xi: model.apply(p, xi[None])[0])(x)), 0.0, xs)[1])
    np.testing.assert_allclose(run(params, jnp.stack([X, X])), jnp.stack([expected, expected]),
                               rtol=1e-6)
    grads = jax.grad(lambda p: model.apply(p, X).sum())(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
