"""Layer objects (``sp.layers.Dense``, ``sp.layers.Layer`` subclasses, ...) beyond the plain call:
their weights read inside ``sp.layer_stack``, positional call arguments, ``copy.copy`` and TF's
Keras-era methods (``count_params``, ``get_weights``, ...)."""
import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp


def _stacked_block_reading(read):
    def fn(x):
        @sp.layer_stack(3)
        def block(h):
            d = sp.layers.Dense(4)
            y = d(h)
            return y + 0 * read(d)
        return block(x)
    return fn


@pytest.mark.parametrize("read", [
    lambda d: d.kernel.sum() + d.bias.sum(),
    lambda d: sum(w.sum() for w in d.weights),
    lambda d: sum(w.sum() for w in d.trainable_weights),
])
def test_layer_object_weights_read_in_layer_stack_are_this_layers_slice(read):
    shapes = []

    def reader(d):
        shapes.extend([tuple(d.kernel.shape)] + [tuple(w.shape) for w in d.weights])
        return read(d)

    x = jnp.ones((2, 4))
    m = sp.transform(_stacked_block_reading(reader))
    params = m.init(jax.random.key(0), x)
    assert {k: v.shape for k, v in sp.flatten(params).items()} == {
        "layer_stack/dense/kernel": (3, 4, 4), "layer_stack/dense/bias": (3, 4)}
    assert set(shapes) <= {(4, 4), (4,)} and (4, 4) in shapes
    shapes.clear()
    plain = sp.transform(_stacked_block_reading(lambda d: 0.0))
    np.testing.assert_allclose(jax.jit(m.apply)(params, x), plain.apply(params, x))
    assert set(shapes) <= {(4, 4), (4,)} and (4, 4) in shapes


def test_layer_object_kernel_in_layer_stack_apply_is_the_layers_own_slice():
    seen = []

    def fn(x):
        @sp.layer_stack(3, with_per_layer_inputs=True)
        def block(h, _):
            d = sp.layers.Dense(4)
            y = d(h)
            return y, d.kernel
        return block(x, jnp.zeros((3,)))

    m = sp.transform(fn)
    x = jnp.ones((2, 4))
    params = m.init(jax.random.key(0), x)
    _, kernels = m.apply(params, x)
    np.testing.assert_allclose(kernels, sp.flatten(params)["layer_stack/dense/kernel"])
    del seen


def test_batch_norm_moving_mean_read_in_layer_stack():
    def fn(x):
        @sp.layer_stack(2)
        def block(h):
            bn = sp.layers.BatchNormalization()
            y = bn(h, training=False)
            return y + 0 * bn.moving_mean.sum() + 0 * sum(w.sum() for w in bn.weights)
        return block(x)

    m = sp.transform_with_state(fn)
    x = jnp.ones((2, 4))
    params, state = m.init(jax.random.key(0), x)
    y, _ = m.apply(params, state, x)
    assert y.shape == (2, 4)


def test_internal_attribute_error_in_a_property_is_not_masked_as_missing_attribute(monkeypatch):
    import scoped_params.layers as layers

    def broken(layer):
        raise AttributeError("internal detail")

    monkeypatch.setattr(layers, "_builtin_weights", broken)

    def fn(x):
        d = sp.layers.Dense(3)
        y = d(x)
        d.weights
        return y

    with pytest.raises(RuntimeError, match="internal detail") as info:
        sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 4)))
    assert "weights" in str(info.value)


def test_second_positional_argument_to_batch_norm_object_is_training():
    x = jnp.arange(8.0).reshape(2, 4)
    m = sp.transform_with_state(lambda x: sp.layers.BatchNormalization()(x, True))
    params, state = m.init(jax.random.key(0), x)
    y, _ = m.apply(params, state, x)
    np.testing.assert_allclose(y.mean(axis=0), np.zeros(4), atol=1e-5)  # batch statistics
    m_eval = sp.transform_with_state(lambda x: sp.layers.BatchNormalization()(x, False))
    y_eval, _ = m_eval.apply(params, state, x)
    np.testing.assert_allclose(y_eval, x / np.sqrt(1 + 1e-3), rtol=1e-5)  # moving statistics


def test_second_positional_argument_to_dropout_object_is_training():
    x = jnp.ones((4, 64))
    m = sp.transform(lambda x: sp.layers.Dropout(0.5)(x, True))
    y = m.apply(m.init(jax.random.key(0), x), x, rng=jax.random.key(1))
    assert set(np.unique(np.asarray(y)).tolist()) == {0.0, 2.0}
    m_off = sp.transform(lambda x: sp.layers.Dropout(0.5)(x, False))
    np.testing.assert_allclose(m_off.apply({}, x), x)


def test_layer_object_scope_is_keyword_only():
    x = jnp.ones((2, 4))
    params = sp.transform(lambda x: sp.layers.Dense(3)(x, scope="block")).init(
        jax.random.key(0), x)
    assert sorted(sp.flatten(params)) == ["block/bias", "block/kernel"]
    with pytest.raises(TypeError, match="scope=") as info:
        sp.transform(lambda x: sp.layers.Dense(3)(x, "block")).init(jax.random.key(0), x)
    assert "fix:" in str(info.value)


def test_too_many_positional_arguments_to_a_layer_object_name_what_call_takes():
    x = jnp.ones((2, 4))
    with pytest.raises(TypeError, match=r"(?s)Dropout.*training.*fix:"):
        sp.transform(lambda x: sp.layers.Dropout(0.5)(x, True, 3)).init(jax.random.key(0), x)
    with pytest.raises(TypeError, match="multiple values for argument 'training'"):
        sp.transform(lambda x: sp.layers.Dropout(0.5)(x, True, training=True)).init(
            jax.random.key(0), x)


def test_subclass_call_takes_extra_positional_arguments():
    class Gated(sp.layers.Dense):
        def call(self, x, gate):
            return super().call(x) * gate

    x = jnp.ones((2, 4))
    m = sp.transform(lambda x: Gated(4)(x, 0.0))
    np.testing.assert_allclose(m.apply(m.init(jax.random.key(0), x), x), np.zeros((2, 4)))


class Scale(sp.layers.Layer):
    def build(self, input_shape):
        self.g = self.add_weight("g", [input_shape[-1]])

    def call(self, x):
        return x * self.g


def test_copy_of_an_unused_layer_object_gets_its_own_weights():
    def fn(x):
        proto = sp.layers.Dense(3)
        clone = copy.copy(proto)
        return clone(proto(x))

    params = sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 3)))
    assert sorted(sp.flatten(params)) == ["dense/bias", "dense/kernel", "dense_1/bias",
                                          "dense_1/kernel"]


def test_copies_of_a_layer_object_made_outside_the_model_get_their_own_weights():
    proto = sp.layers.Dense(3, use_bias=False)
    layers = [copy.copy(proto) for _ in range(3)]

    def fn(x):
        for layer in layers:
            x = layer(x)
        return x

    params = sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 3)))
    assert sorted(sp.flatten(params)) == ["dense/kernel", "dense_1/kernel", "dense_2/kernel"]
    assert layers[0].units == 3 and layers[0].use_bias is False


def test_copy_of_a_custom_layer_builds_its_own_weights():
    def fn(x):
        a = Scale()
        b = copy.copy(a)
        return b(a(x))

    params = sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 3)))
    assert sorted(sp.flatten(params)) == ["scale/g", "scale_1/g"]


def test_copy_of_a_used_layer_object_starts_afresh():
    class Shift(sp.layers.Dense):
        def build(self, input_shape):
            self.s = self.add_weight("s", [int(input_shape[-1])])
            super().build(input_shape)

    def fn(x):
        a, b = sp.layers.Dense(3), Shift(3)
        a(x), b(x)
        a2, b2 = copy.copy(a), copy.copy(b)
        assert not a2.built and not b2.built
        return a2(x) + b2(x)

    params = sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 3)))
    assert sorted(sp.flatten(params)) == [
        "dense/bias", "dense/kernel", "dense_1/bias", "dense_1/kernel",
        "shift/bias", "shift/kernel", "shift/s", "shift_1/bias", "shift_1/kernel", "shift_1/s"]


def test_copy_of_a_prebuilt_custom_layer_stays_prebuilt():
    class Fixed(sp.layers.Layer):
        def __init__(self):
            super().__init__()
            self.built = True

    def fn(x):
        a = Fixed()
        a(x)
        assert copy.copy(a).built
        return x

    sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 3)))


def test_count_params_and_dtype_of_layer_objects():
    d, bn, s = sp.layers.Dense(3), sp.layers.BatchNormalization(), Scale()
    seen = {}

    def fn(x):
        assert d.dtype is None  # TF's too before the first call decides it
        y = s(bn(d(x), training=False))
        seen.update(d=d.count_params(), bn=bn.count_params(), s=s.count_params(),
                    dtypes=(d.dtype, bn.dtype, s.dtype))
        return y

    sp.transform_with_state(fn).init(jax.random.key(0), jnp.ones((2, 4)))
    assert (seen["d"], seen["bn"], seen["s"]) == (15, 12, 3)
    assert seen["dtypes"] == (np.dtype("float32"),) * 3


def test_count_params_in_layer_stack_counts_one_layer():
    counts = []

    def fn(x):
        @sp.layer_stack(3)
        def block(h):
            d = sp.layers.Dense(4)
            y = d(h)
            counts.append(d.count_params())
            return y
        return block(x)

    sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 4)))
    assert counts and set(counts) == {20}


def test_count_params_before_the_layers_first_call_says_so():
    def fn(x):
        sp.layers.Dense(3).count_params()
        return x

    with pytest.raises(ValueError, match=r"(?s)isn't built.*fix:"):
        sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 4)))


@pytest.mark.parametrize("make", [lambda: sp.layers.Dense(3), lambda: Scale()])
@pytest.mark.parametrize("method, args, fix", [
    ("get_weights", (), "read layer.weights inside the model, or the params tree from init"),
    ("set_weights", ([],), "write the values into the params tree passed to apply"),
    ("get_config", (), "not provided"),
])
def test_keras_methods_are_refused_with_what_to_use_instead(make, method, args, fix):
    layer = make()
    with pytest.raises(NotImplementedError, match="fix:") as info:
        getattr(layer, method)(*args)
    assert fix in str(info.value) and method in str(info.value)


def test_copy_of_an_unused_rnn_cell_makes_its_own_weights_as_tfs_copy_does():
    # TF 1.x: copy.copy(BasicRNNCell(2)), both called once -> basic_rnn_cell/*, basic_rnn_cell_1/*
    def fn(x):
        cell = sp.rnn.BasicRNNCell(2)
        clone = copy.copy(cell)
        state = cell.zero_state(1, jnp.float32)
        y, state = cell(x, state)
        return y + clone(x, state)[0]

    names = sorted(sp.flatten(sp.transform(fn).init(0, jnp.ones((1, 3)))))
    assert names == ["basic_rnn_cell/bias", "basic_rnn_cell/kernel", "basic_rnn_cell_1/bias",
                     "basic_rnn_cell_1/kernel"]


def test_layer_objects_without_weights_answer_tfs_weight_methods():
    # TF 1.x: Dropout/pooling objects have weights == [] and count_params() == 0 once called.
    for layer in (sp.layers.Dropout(0.5), sp.layers.MaxPooling2D(2, 2), sp.layers.Flatten()):
        assert layer.weights == layer.trainable_weights == layer.non_trainable_weights == []
        assert layer.variables == [] and layer.count_params() == 0 and layer.dtype is None
        for method, args in (("get_weights", ()), ("set_weights", ([],)), ("get_config", ())):
            with pytest.raises(NotImplementedError,
                               match=rf"{type(layer).__name__}\.{method}\(\) is not provided: "
                                     r".*\n  fix: "):
                getattr(layer, method)(*args)


def test_layer_objects_apply_is_their_call_and_updates_says_where_batch_norm_statistics_are():
    def fn(x):
        dense, bn = sp.layers.Dense(4), sp.layers.BatchNormalization()
        pool = sp.layers.MaxPooling2D(2, 2)
        y = bn.apply(dense.apply(x), training=False)
        assert dense.updates == [] and pool.updates == []
        assert pool.apply(jnp.ones((1, 4, 4, 1))).shape == (1, 2, 2, 1)
        with pytest.raises(NotImplementedError, match=r"moving statistics are state(.|\n)*"
                                                      r"fix: build the model with sp\.transform_with_state"):
            bn.updates
        return y

    params = sp.transform(fn).init(jax.random.key(0), jnp.ones((3, 5)))
    assert set(sp.flatten(params)) >= {"dense/kernel", "batch_normalization/gamma"}
