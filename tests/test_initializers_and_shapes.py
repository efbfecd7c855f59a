"""Initializers and shapes: reference section E (rules 30-33) and ``sp.initializers``."""

import re
import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp
from scoped_params._materialize import param_key
from scoped_params.initializers import _flat_draws

KEY = jax.random.key(0)
inits = sp.initializers


def paths(tree):
    return set(sp.flatten(tree))


def init(fn, *args):
    return sp.transform(fn).init(KEY, *args)


# --- rule 30: a constant initializer fixes the shape ----------------------------------------------


def test_constant_initializer_fixes_the_shape():
    def fn():
        sp.get_param("a", init=jnp.array(0.1))
        sp.get_param("b", init=np.arange(6.0, dtype=np.float32).reshape(2, 3))
        sp.get_param("c", init=2.5)
        sp.get_param("d", init=[1.0, 2.0])

    flat = sp.flatten(init(fn))
    assert {n: v.shape for n, v in flat.items()} == {"a": (), "b": (2, 3), "c": (), "d": (2,)}
    np.testing.assert_allclose(flat["a"], 0.1, rtol=1e-6)
    np.testing.assert_array_equal(flat["b"], np.arange(6.0).reshape(2, 3))
    assert float(flat["c"]) == 2.5
    np.testing.assert_array_equal(flat["d"], [1.0, 2.0])


def test_constant_initializer_on_a_scope_passes_down_to_a_shapeless_get_param():
    def fn():
        with sp.scope("s", initializer=jnp.array([0.5, 0.25])):
            return sp.get_param("b")

    model = sp.transform(fn)
    params = model.init(KEY)
    np.testing.assert_array_equal(params["s"]["b"], [0.5, 0.25])
    np.testing.assert_array_equal(model.apply(params), [0.5, 0.25])


def test_constant_initializer_with_shape_is_an_error():
    def fn():
        with sp.scope("s"):
            sp.get_param("u", [1], init=jnp.array(0.1))

    with pytest.raises(ValueError, match="If initializer is a constant, do not specify shape") as e:
        init(fn)
    assert isinstance(e.value, sp.InitializerError)
    assert "'s/u'" in str(e.value) and "fix: drop shape=" in str(e.value)


def test_constant_initializer_with_shape_is_an_error_in_apply_too():
    def build(shape):
        def fn():
            return sp.get_param("u", shape, init=jnp.array([0.1]))
        return fn

    params = init(build(None))
    with pytest.raises(ValueError, match="do not specify shape"):
        sp.transform(build([1])).apply(params)


def test_constant_built_with_jnp_inside_the_model_is_evaluated():
    def fn(x):
        v = sp.get_param("v", init=jnp.arange(3.0) * 2.0 + 1.0)
        return x + v

    model = sp.transform(fn)
    params = model.init(KEY, jax.ShapeDtypeStruct((3,), jnp.float32))
    np.testing.assert_array_equal(params["v"], [1.0, 3.0, 5.0])
    np.testing.assert_array_equal(model.apply(params, jnp.zeros(3)), [1.0, 3.0, 5.0])


# --- rule 31: the dtype comes from the value ------------------------------------------------------


def test_constant_initializer_dtype_comes_from_the_value():
    def fn():
        sp.get_param("i", init=jnp.array([1, 2], jnp.int32))
        sp.get_param("n", init=3)
        sp.get_param("h", init=np.ones(2, np.float16))
        sp.get_param("b", init=np.array([True, False]))

    flat = sp.flatten(init(fn))
    assert flat["i"].dtype == jnp.int32
    assert flat["n"].dtype == jnp.int32
    assert flat["h"].dtype == jnp.float16
    assert flat["b"].dtype == jnp.bool_


def test_constant_initializer_dtype_disagreeing_with_explicit_dtype_is_an_error():
    def fn():
        with sp.scope("s"):
            sp.get_param("v", init=jnp.array(1, jnp.int32), dtype=jnp.float32)

    with pytest.raises(ValueError, match="don't match") as e:
        init(fn)
    msg = str(e.value)
    assert "int32" in msg and "float32" in msg and "s/v" in msg and "fix:" in msg


def test_constant_initializer_with_matching_dtype_is_fine():
    def fn():
        return sp.get_param("v", init=jnp.array([1, 2], jnp.int32), dtype=jnp.int32)

    model = sp.transform(fn)
    params = model.init(KEY)
    np.testing.assert_array_equal(model.apply(params), [1, 2])


# --- rule 32: no-argument callables ---------------------------------------------------------------


def test_no_argument_callable_initializer_needs_no_shape():
    def fn():
        sp.get_param("foo", init=lambda: jnp.array([2.0]))
        sp.get_param("opt", init=lambda x=True: [2.0, 3.0] if x else [])

    flat = sp.flatten(init(fn))
    np.testing.assert_array_equal(flat["foo"], [2.0])
    np.testing.assert_array_equal(flat["opt"], [2.0, 3.0])


def test_callable_needing_arguments_without_shape_is_an_error():
    def fn():
        with sp.scope("s"):
            sp.get_param("foo", init=jax.nn.initializers.normal(1.0))

    with pytest.raises(ValueError, match="The initializer passed is not valid") as e:
        init(fn)
    assert isinstance(e.value, sp.InitializerError)
    assert "'s/foo'" in str(e.value) and "shape" in str(e.value)


def test_no_argument_initializer_with_shape_is_a_type_error_naming_the_param():
    def fn():
        with sp.scope("s"):
            sp.get_param("foo", [2], init=lambda: jnp.ones(2))

    with pytest.raises(TypeError, match=r"The initializer of 's/foo' cannot be called as "
                                        r"init\(key, shape, dtype\)") as e:
        init(fn)
    assert "asked: shape=(2,)" in str(e.value) and "fix: drop shape=" in str(e.value)


def test_new_param_without_shape_or_constant_is_an_error():
    def fn():
        sp.get_param("w")

    with pytest.raises(ValueError, match="must be fully defined") as e:
        init(fn)
    assert "w" in str(e.value) and "fix:" in str(e.value)


def test_new_param_with_unknown_dimension_is_an_error():
    def fn():
        sp.get_param("w", [None, 3])

    with pytest.raises(ValueError, match=r"must be fully defined, but instead was \(\?, 3\)"):
        init(fn)


def test_initializer_returning_the_wrong_shape_is_an_error():
    def bad(key, shape, dtype):
        return jnp.zeros((7,), dtype)

    def fn():
        sp.get_param("w", [3], init=bad)

    with pytest.raises(ValueError, match=r"initializer of 'w' returned shape \(7,\), expected \(3,\)"):
        init(fn)


def tf_style_bilinear(shape, dtype=None, partition_info=None):
    """A TF 1.x-style initializer as ported code has them (deterministic, NumPy)."""
    del dtype, partition_info
    return np.full(shape, 0.25, np.float32)


@pytest.mark.parametrize("where", ["get_param", "scope", "layer_stack", "jit"])
def test_a_tf1_style_initializer_is_an_error_naming_the_param_and_the_wrapper_that_fixes_it(where):
    def fn(initializer):
        def body(x):
            with sp.scope("up", initializer=initializer if where == "scope" else None):
                w = sp.get_param("kernel", [2, 2], init=None if where == "scope" else initializer)
            return x * w

        if where == "layer_stack":
            return sp.layer_stack(3)(body)(jnp.ones((2, 2)))
        return body(jnp.ones((2, 2)))

    model = sp.transform(fn)
    run = jax.jit(model.init, static_argnums=1) if where == "jit" else model.init
    with pytest.raises(sp.InitializerError) as e:
        run(KEY, tf_style_bilinear)
    text = str(e.value)
    name = "layer_stack/up/kernel" if where == "layer_stack" else "up/kernel"
    assert f"The initializer of '{name}' (tf_style_bilinear) takes (shape, dtype, partition_info)" in text
    assert "TF 1.x's calling convention" in text and "init(key, shape, dtype)" in text
    assert __file__ in text  # where the parameter was created
    assert "fix: a deterministic one can be wrapped, init=lambda key, shape, dtype: " \
           "tf_style_bilinear(shape, dtype)" in text
    # The fix the message gives works.
    params = run(KEY, lambda key, shape, dtype: tf_style_bilinear(shape, dtype))
    np.testing.assert_array_equal(sp.flatten(params)[name], np.full((3, 2, 2) if where == "layer_stack"
                                                                    else (2, 2), 0.25))


@pytest.mark.parametrize("factory, expected", [
    (inits.zeros_initializer, lambda shape: np.zeros(shape)),
    (inits.ones_initializer, lambda shape: np.ones(shape)),
    (inits.constant_initializer, lambda shape: np.zeros(shape)),
    (inits.glorot_uniform_initializer, None),
    (inits.variance_scaling_initializer, None),
    (inits.random_normal_initializer, None),
])
def test_tf_initializer_factories_passed_uncalled_are_called_with_their_defaults_like_tf_classes(
        factory, expected):
    # TF instantiates an initializer class it is given: initializer=tf.zeros_initializer works.
    def fn():
        with sp.scope("a"):
            w = sp.get_param("w", [3, 4], init=factory)
        with sp.scope("b", initializer=factory):
            v = sp.get_param("w", [3, 4])
        return w, v

    params = sp.flatten(init(fn))
    called = sp.flatten(init(lambda: (sp.get_param("a/w", [3, 4], init=factory()),
                                      sp.get_param("b/w", [3, 4], init=factory()))))
    for name in ("a/w", "b/w"):
        np.testing.assert_array_equal(params[name], called[name])
        if expected is not None:
            np.testing.assert_array_equal(params[name], expected((3, 4)))
    stacked = sp.transform(lambda x: sp.layer_stack(2)(
        lambda x: x * sp.get_param("w", [3], init=factory))(x)).init(KEY, jnp.ones(3))
    assert sp.flatten(stacked)["layer_stack/w"].shape == (2, 3)


def test_an_initializer_factory_that_is_not_ours_passed_uncalled_says_to_call_it():
    def fn():
        sp.get_param("w", [3, 4], init=jax.nn.initializers.glorot_uniform)

    with pytest.raises(sp.InitializerError, match=r"initializer of 'w' \(glorot_uniform\) returned a "
                                                  r"function, not an array") as e:
        init(fn)
    assert "fix: call it to get the initializer, e.g. init=glorot_uniform()" in str(e.value)

    def make_init(scale=1.0):
        return lambda key, shape, dtype: scale * jnp.ones(shape, dtype)

    with pytest.raises(TypeError, match="cannot be called as init") as e:
        init(lambda: sp.get_param("w", [3], init=make_init))
    assert "if it makes initializers, call it: init=make_init()" in str(e.value)


def test_an_initializer_returning_something_that_is_not_an_array_is_an_error_naming_the_param():
    with pytest.raises(sp.InitializerError, match=r"initializer of 's/w' \(a lambda\) returned "
                                                  r"NoneType, not an array"):
        init(lambda: sp.get_param("s/w", [3], init=lambda key, shape, dtype: None))


@pytest.mark.parametrize("n", [1, 3])  # alone, and drawn in one vmapped group of three
def test_an_error_raised_by_an_initializer_keeps_its_type_and_says_which_parameter(n):
    def failing(key, shape, dtype):
        raise RuntimeError("no randomness here")

    def fn():
        with sp.scope("enc"):
            for i in range(n):
                sp.get_param(f"w{i}", [3, 4], init=failing)

    with pytest.raises(RuntimeError, match="no randomness here") as e:
        init(fn)
    notes = "\n".join(getattr(e.value, "__notes__", []))
    if hasattr(e.value, "add_note"):  # Python >= 3.11
        assert "raised by the initializer of 'enc/w0'" in notes
        assert ("and 2 more of that shape" in notes) == (n == 3)
        assert "init(key, (3, 4), float32)" in notes and __file__ in notes


# --- rule 33: default initializers ----------------------------------------------------------------


def test_default_initializer_is_zeros_for_ints_and_bools_and_glorot_for_floats():
    def fn():
        sp.get_param("i", [3, 4], dtype=jnp.int32)
        sp.get_param("u", [2], dtype=jnp.uint8)
        sp.get_param("b", [2], dtype=jnp.bool_)
        sp.get_param("w", [64, 64])

    flat = sp.flatten(init(fn))
    assert (flat["i"] == 0).all() and flat["i"].dtype == jnp.int32
    assert (flat["u"] == 0).all() and flat["u"].dtype == jnp.uint8
    assert (~flat["b"]).all() and flat["b"].dtype == jnp.bool_
    w = np.asarray(flat["w"])
    limit = math.sqrt(6 / 128)
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit
    assert abs(w.mean()) < 0.01


def test_default_float_initializer_is_tf_glorot_uniform_keyed_by_full_name():
    def fn():
        with sp.scope("layer"):
            sp.get_param("w", [5, 7])

    params = init(fn)
    expected = inits.glorot_uniform()(param_key(KEY, "layer/w"), (5, 7), jnp.float32)
    np.testing.assert_array_equal(params["layer"]["w"], expected)


def test_default_initializer_for_complex_dtype_is_required():
    def fn():
        sp.get_param("c", [2], dtype=jnp.complex64)

    with pytest.raises(ValueError, match="An initializer for variable c of complex64 is required"):
        init(fn)


@pytest.mark.parametrize("shape,limit", [((), math.sqrt(3.0)), ((50,), math.sqrt(6 / 100)),
                                         ((3, 3, 8, 16), math.sqrt(6 / (72 + 144)))])
def test_tf_glorot_uniform_covers_rank_0_and_rank_1_with_tf_fans(shape, limit):
    if shape == ():
        draws = np.array([inits.glorot_uniform()(k, shape, jnp.float32)
                          for k in jax.random.split(jax.random.key(1), 64)])
        assert draws.shape == (64,)
    else:
        draws = np.asarray(inits.glorot_uniform()(jax.random.key(1), shape, jnp.float32))
        assert draws.shape == shape
    top = float(np.abs(draws).max())
    assert top <= limit and top > 0.9 * limit


def test_jax_glorot_refuses_rank_0_and_1_but_the_default_initializer_accepts_them():
    with pytest.raises(Exception):
        jax.nn.initializers.glorot_uniform()(KEY, (4,), jnp.float32)

    def fn():
        return sp.get_param("s", []), sp.get_param("b", [4])

    model = sp.transform(fn)
    params = model.init(KEY)
    assert params["s"].shape == () and params["b"].shape == (4,)
    assert abs(float(params["s"])) <= math.sqrt(3.0)
    assert float(jnp.abs(params["b"]).max()) <= math.sqrt(6 / 8)


# --- sp.initializers ------------------------------------------------------------------------------


_JAX_NN = jax.nn.initializers


@pytest.mark.parametrize("name, initializer, shape", [
    ("orthogonal", _JAX_NN.orthogonal(), (6, 4)),
    ("orthogonal_scaled", _JAX_NN.orthogonal(scale=2.0, column_axis=0), (4, 6)),
    ("delta_orthogonal", _JAX_NN.delta_orthogonal(), (3, 3, 4, 8)),  # a conv kernel
    ("lecun_normal", _JAX_NN.lecun_normal(), (5, 7)),
    ("lecun_uniform", _JAX_NN.lecun_uniform(), (5, 7)),
    ("he_normal", _JAX_NN.he_normal(), (3, 3, 4, 8)),
    ("he_uniform", _JAX_NN.he_uniform(), (5, 7)),
    ("kaiming_normal", _JAX_NN.kaiming_normal(), (5, 7)),
    ("kaiming_uniform", _JAX_NN.kaiming_uniform(), (5, 7)),
    ("glorot_normal", _JAX_NN.glorot_normal(), (5, 7)),
    ("glorot_uniform", _JAX_NN.glorot_uniform(), (5, 7)),
    ("xavier_normal", _JAX_NN.xavier_normal(), (5, 7)),
    ("xavier_uniform", _JAX_NN.xavier_uniform(), (5, 7)),
    ("normal", _JAX_NN.normal(0.5), (5, 7)),
    ("uniform", _JAX_NN.uniform(2.0), (5, 7)),
    ("truncated_normal", _JAX_NN.truncated_normal(0.1), (5, 7)),
    ("variance_scaling", _JAX_NN.variance_scaling(2.0, "fan_out", "truncated_normal"), (3, 3, 4, 8)),
    ("zeros", _JAX_NN.zeros, (8,)),
    ("ones", _JAX_NN.ones, (2, 3)),
    ("constant", _JAX_NN.constant(3.0), (8,)),
])
def test_every_jax_nn_initializer_works_as_is(name, initializer, shape):
    # API.md: initializers are called as init(key, shape, dtype), so every jax.nn.initializers
    # object works unwrapped; the value is the initializer's own at the parameter's key.
    def fn():
        with sp.scope("layer"):
            return sp.get_param(name, shape, init=initializer)

    model = sp.transform(fn)
    params = model.init(KEY)
    value = params["layer"][name]
    assert value.shape == shape and value.dtype == jnp.float32
    expected = initializer(param_key(KEY, f"layer/{name}"), shape, jnp.float32)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(value)) and (name == "zeros" or np.any(value != 0))
    np.testing.assert_array_equal(jax.jit(model.apply)(params), value)


def test_constant_initializer_fills_or_reshapes_and_rejects_wrong_size():
    np.testing.assert_array_equal(inits.constant(2.0)(KEY, (2, 2), jnp.float32), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(inits.constant([1, 2, 3, 4])(KEY, (2, 2), jnp.float32),
                                  [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"4 values cannot fill shape \(3,\)"):
        inits.constant([1, 2, 3, 4])(KEY, (3,), jnp.float32)


def test_tf_spelled_initializers_are_the_same_functions():
    assert inits.constant_initializer is inits.constant
    assert inits.zeros_initializer() is inits.zeros
    assert inits.ones_initializer() is inits.ones
    assert inits.glorot_uniform_initializer() is inits.glorot_uniform()
    np.testing.assert_array_equal(inits.ones(KEY, (3,), jnp.float32), np.ones(3))
    np.testing.assert_array_equal(inits.zeros(KEY, (3,), jnp.int32), np.zeros(3, np.int32))
    # The module exports the initializers and nothing else (not its imports).
    public = {n for n in dir(inits) if not n.startswith("_") and callable(getattr(inits, n))
              and getattr(getattr(inits, n), "__module__", None) == inits.__name__}
    assert set(inits.__all__) == public | {"contrib"}  # tf.contrib.layers' initializers


def test_zeros_and_ones_called_with_no_arguments_are_themselves_as_tfs_initializers_zeros_is():
    # tf.initializers.zeros() / tf.keras.initializers.zeros(): TF's names for the classes, called.
    tf = pytest.importorskip("tensorflow")
    assert tf.compat.v1.initializers.zeros is tf.compat.v1.zeros_initializer
    tf.compat.v1.initializers.zeros(tf.float32), tf.compat.v1.initializers.ones(dtype=tf.float32)
    from scoped_params._materialize import _fill_value
    for made, fill in ((inits.zeros, 0), (inits.ones, 1)):
        assert made() is made and made(tf.float32) is made and made(dtype=jnp.float32) is made
        params = init(lambda: (sp.get_param("a", [3], init=made()), sp.get_param("b", [3], init=made)))
        np.testing.assert_array_equal(params["a"], np.full(3, fill))
        np.testing.assert_array_equal(params["b"], np.full(3, fill))
        assert _fill_value(made(), jnp.float32) == fill  # still filled on the host in eager init
        with pytest.raises(TypeError, match=rf"{made.__name__}\(key\) without a shape: "):
            made(KEY)
    # Called as initializers, they are jax.nn.initializers' zeros and ones.
    for ours, theirs in ((inits.zeros, jax.nn.initializers.zeros), (inits.ones, jax.nn.initializers.ones)):
        for args in ((KEY, (2, 3)), (KEY, (2, 3), jnp.int32), (None, [4], jnp.bfloat16)):
            a, b = ours(*args), theirs(*args)
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(a, b)
        assert ours(key=KEY, shape=(2,), dtype=jnp.float16).dtype == jnp.float16
    # Without a shape, get_param still says a shape is needed (they take no value of their own).
    with pytest.raises(ValueError, match="The initializer passed is not valid"):
        init(lambda: sp.get_param("c", init=inits.zeros))


def test_random_normal_and_truncated_normal_have_the_requested_moments():
    x = np.asarray(inits.random_normal(1.0, 2.0)(KEY, (64, 64), jnp.float32))
    assert abs(x.mean() - 1.0) < 0.15 and abs(x.std() - 2.0) < 0.15
    t = np.asarray(inits.truncated_normal(0.0, 0.5)(KEY, (64, 64), jnp.float32))
    assert np.abs(t).max() <= 1.0 + 1e-6 and abs(t.mean()) < 0.03


def test_random_uniform_respects_bounds_for_floats_and_ints():
    f = np.asarray(inits.random_uniform(-2.0, -1.0)(KEY, (64, 64), jnp.float32))
    assert f.min() >= -2.0 and f.max() < -1.0
    i = np.asarray(inits.random_uniform(0, 5)(KEY, (64, 64), jnp.int32))
    assert i.dtype == np.int32 and set(np.unique(i)) == {0, 1, 2, 3, 4}


def test_random_uniform_needs_maxval_for_an_integer_dtype_as_in_tf_instead_of_drawing_zeros():
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="Must specify maxval for integer dtype"):
            tf1.random_uniform_initializer()((3,), dtype=tf.int32)
        with pytest.raises(TypeError):  # Keras's float defaults, +-0.05, for an integer dtype
            tf1.keras.initializers.RandomUniform()((3,), dtype=tf.int32)
    with pytest.raises(ValueError, match=r"Must specify maxval for integer dtype int32 \(as in TF\): "
                                         r"random_uniform\(minval=0.0, maxval=None\)") as e:
        inits.random_uniform()(KEY, (3,), jnp.int32)
    assert "fix: pass integer bounds" in str(e.value)
    with pytest.raises(ValueError, match="Must specify maxval") as e:  # named, through get_param
        sp.transform(lambda: sp.get_param("n", [3], dtype=jnp.int32,
                                          init=inits.random_uniform_initializer)).init(KEY)
    if hasattr(e.value, "add_note"):  # Python >= 3.11
        assert "raised by the initializer of 'n'" in "\n".join(e.value.__notes__)
    with pytest.raises(TypeError, match=r"minval=-0.05 is not an integer, for integer dtype int32 "
                                        r".*\n  fix: pass integer"):
        inits.RandomUniform()(KEY, (3,), jnp.int32)
    # maxval=None is 1.0 for floats, as in TF; Keras's class keeps its own defaults
    f = np.asarray(inits.random_uniform()(KEY, (64, 64), jnp.float32))
    assert f.min() >= 0.0 and 0.99 < f.max() < 1.0
    k = np.asarray(inits.RandomUniform()(KEY, (64, 64), jnp.float32))
    assert k.min() >= -0.05 and 0.049 < k.max() < 0.05
    np.testing.assert_array_equal(inits.RandomUniform(2, 3)(KEY, (4,), jnp.int32), [2, 2, 2, 2])


@pytest.mark.parametrize("mode,n", [("fan_in", 3 * 3 * 8), ("fan_out", 3 * 3 * 16),
                                    ("fan_avg", (3 * 3 * 8 + 3 * 3 * 16) / 2)])
def test_variance_scaling_uses_tf_fan_rules(mode, n):
    x = np.asarray(inits.variance_scaling(2.0, mode, "uniform")(KEY, (3, 3, 8, 16), jnp.float32))
    limit = math.sqrt(3.0 * 2.0 / n)
    assert np.abs(x).max() <= limit and np.abs(x).max() > 0.95 * limit
    y = np.asarray(inits.variance_scaling(1.0, mode, "untruncated_normal")(
        KEY, (400, 100), jnp.float32))
    fans = {"fan_in": 400, "fan_out": 100, "fan_avg": 250}
    assert y.std() == pytest.approx(math.sqrt(1.0 / fans[mode]), rel=0.05)


@pytest.mark.parametrize("name", ["he_normal", "he_uniform", "lecun_normal", "lecun_uniform",
                                  "glorot_normal", "glorot_uniform"])
def test_he_lecun_and_glorot_draw_from_tf1s_distributions(name):
    tf = pytest.importorskip("tensorflow")
    shape = (3, 3, 64, 32)  # fan_in 576, fan_out 288
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:  # whatever mode TF is in
        theirs = session.run(getattr(tf.compat.v1.initializers, name)(seed=0)(shape))
    ours = np.asarray(getattr(inits, name)()(KEY, shape, jnp.float32))
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02)
    # Both bounded alike: the uniform limit, or two standard deviations of the untruncated normal.
    assert np.abs(ours).max() <= np.abs(theirs).max() * 1.01
    assert np.abs(ours).max() >= np.abs(theirs).max() * 0.98


def test_xavier_initializer_is_glorot_uniform_or_contribs_truncated_normal():
    assert inits.xavier_initializer() is inits.glorot_uniform()
    assert inits.xavier_initializer_conv2d is inits.xavier_initializer
    shape = (3, 3, 64, 32)
    n = (576 + 288) / 2
    x = np.asarray(inits.xavier_initializer(uniform=False)(KEY, shape, jnp.float32))
    stddev = math.sqrt(1.3 / n)  # contrib's rule, truncated at two of these
    assert np.abs(x).max() <= 2 * stddev and np.abs(x).max() > 1.95 * stddev
    assert x.std() == pytest.approx(stddev * 0.87962566103423978, rel=0.02)


def _tf_draw_arguments(monkeypatch, module, draw, make_and_call):
    """The arguments TF's initializer passes to ``module.random_ops.<draw>`` (its distribution's
    parameters), recorded instead of drawn: a scalar's draw has one value, too few to measure."""
    seen = {}

    def record(shape, *args, **kwargs):
        seen.update(shape=list(shape), args=args, kwargs=kwargs)
        return 0.0

    monkeypatch.setattr(module.random_ops, draw, record)
    make_and_call()
    monkeypatch.undo()
    return seen


def _draws_of_a_scalar(initializer, n=20000):
    """``n`` draws of a scalar parameter (one per key), to measure its distribution."""
    keys = jax.random.split(KEY, n)
    return np.asarray(jax.vmap(lambda k: initializer(k, (), jnp.float32))(keys))


@pytest.mark.parametrize("make, tf_call, draw", [
    (lambda: inits.xavier_initializer(uniform=False),
     lambda s: s.xavier_initializer(uniform=False), "truncated_normal"),
    (lambda: inits.contrib.variance_scaling_initializer(),
     lambda s: s.variance_scaling_initializer(), "truncated_normal"),
    (lambda: inits.contrib.variance_scaling_initializer(factor=3.0, mode="FAN_OUT", uniform=True),
     lambda s: s.variance_scaling_initializer(factor=3.0, mode="FAN_OUT", uniform=True),
     "random_uniform"),
    (lambda: inits.xavier_initializer(), lambda s: s.xavier_initializer(), "random_uniform"),
])
def test_contribs_initializers_on_a_scalar_use_fans_of_one_as_tf_slim_does(monkeypatch, make, tf_call,
                                                                          draw):
    # tf_slim (contrib): "if shape: ... else: fan_in = fan_out = 1.0" -- a scalar is no error.
    pytest.importorskip("tensorflow")
    tf_slim = pytest.importorskip("tf_slim")
    from tf_slim.layers import initializers as slim_initializers
    seen = _tf_draw_arguments(monkeypatch, slim_initializers, draw,
                              lambda: tf_call(tf_slim.initializers)([]))
    assert seen["shape"] == []
    x = _draws_of_a_scalar(make())
    if draw == "truncated_normal":
        stddev = seen["args"][1]  # truncated_normal(shape, 0.0, trunc_stddev, dtype, seed=seed)
        assert np.abs(x).max() <= 2 * stddev and np.abs(x).max() > 1.95 * stddev
        assert x.std() == pytest.approx(stddev * 0.87962566103423978, rel=0.03)
    else:
        low, high = seen["args"][:2]  # random_uniform(shape, -limit, limit, dtype, seed=seed)
        assert low == -high and x.min() >= low and x.max() < high and x.max() > 0.99 * high
    value = sp.transform(lambda: sp.get_param("alpha", [], init=make())).init(KEY)["alpha"]
    assert value.shape == () and np.isfinite(value)


def test_variance_scaling_rejects_unknown_mode_and_distribution():
    with pytest.raises(ValueError, match="invalid mode 'fan_x'"):
        inits.variance_scaling(1.0, "fan_x")
    with pytest.raises(ValueError, match="invalid distribution 'cauchy'"):
        inits.variance_scaling(1.0, "fan_in", "cauchy")


@pytest.mark.parametrize("scale", [0.0, -1.0, 0, np.float32(-2.0)])
def test_variance_scaling_refuses_a_scale_that_is_not_positive_when_built_as_tf_does(scale):
    # 0 drew zeros and a negative scale failed at the first draw ("math domain error").
    tf = pytest.importorskip("tensorflow")
    for theirs in (tf.compat.v1.variance_scaling_initializer,
                   tf.compat.v1.keras.initializers.VarianceScaling):
        with pytest.raises(ValueError, match="must be a positive float"):
            theirs(scale)
    for ours in (inits.variance_scaling_initializer, inits.VarianceScaling):
        with pytest.raises(ValueError, match=r"Argument 'scale' must be a positive float \(as in TF\): "
                                             r"variance_scaling_initializer\(scale=") as e:
            ours(scale, seed=1)
        assert "fix: pass a scale above 0" in str(e.value)
    # TF takes any number above 0 (an int, True); contrib's factor has no check in TF or here.
    tf.compat.v1.variance_scaling_initializer(1)
    assert inits.variance_scaling(1)(KEY, (4, 4)).shape == (4, 4)
    np.testing.assert_array_equal(
        inits.contrib.variance_scaling_initializer(factor=0.0)(KEY, (4, 4)), np.zeros((4, 4)))


def test_glorot_normal_is_truncated_with_fan_avg_variance():
    x = np.asarray(inits.glorot_normal()(KEY, (64, 64), jnp.float32))
    assert x.std() == pytest.approx(math.sqrt(2.0 / 128), rel=0.05)
    assert np.abs(x).max() <= 2.0 * math.sqrt(2.0 / 128) / 0.87962566103423978 + 1e-6


def test_constant_initializer_computed_from_model_inputs_is_an_error_at_init():
    def fn(x):
        return sp.get_param("v", init=x.mean(0))

    model = sp.transform(fn)
    for x in (jnp.ones((3, 2)), jax.ShapeDtypeStruct((3, 2), jnp.float32)):
        with pytest.raises(ValueError, match="The constant initializer of 'v' depends on the "
                                             "model's inputs") as e:
            model.init(KEY, x)
        assert isinstance(e.value, sp.InitializerError)
        assert "fix: build the constant from Python/NumPy values" in str(e.value)


def test_constant_initializer_computed_from_another_parameter_is_an_error_naming_both():
    # TF 1.x runs such an initializer only through w.initialized_value(); init has no value for
    # 'w' while it traces, and must not hand out zeros (a silent wrong answer).
    def fn(x):
        with sp.scope("layer"):
            w = sp.get_param("w", (2,), init=inits.ones)
            scale = sp.get_param("scale", init=w * 2.0)
        return x * scale

    with pytest.raises(sp.InitializerError, match="The constant initializer of 'layer/scale' is "
                       "computed from the value of parameter 'layer/w'") as e:
        sp.transform(fn).init(KEY, jnp.ones(2))
    assert "fix: build the constant from Python/NumPy values" in str(e.value)


def test_init_placeholders_are_inputs_of_its_trace_and_stage_no_ops(monkeypatch):
    from scoped_params import _transform
    seen = {}
    resolve = _transform.resolve_traced_constants

    def spy(closed, names, param_names=()):
        seen.update(jaxpr=closed.jaxpr, names=list(param_names))
        return resolve(closed, names, param_names)

    monkeypatch.setattr(_transform, "resolve_traced_constants", spy)

    def fn(x):
        for i in range(3):
            with sp.scope(f"layer_{i}"):
                w = sp.get_param("w", (x.shape[-1], x.shape[-1] + 1))
                b = sp.get_param("b", (x.shape[-1] + 1,), init=inits.zeros)
                x = jnp.tanh(x @ w + b)
        return x * sp.get_param("table", init=jnp.arange(4.0) + 1.0)  # traced: resolved after

    model = sp.transform(fn)
    params = sp.flatten(model.init(KEY, jnp.ones((1, 1))))
    names = [f"layer_{i}/{n}" for i in range(3) for n in ("w", "b")]
    assert seen["names"] == names
    jaxpr = seen["jaxpr"]
    assert [v.aval.shape for v in jaxpr.invars[-6:]] == [params[n].shape for n in names]
    assert not [e for e in jaxpr.eqns if e.primitive.name == "broadcast_in_dim"
                and e.params["broadcast_dimensions"] == ()]  # no staged zeros (only the model's b)
    np.testing.assert_array_equal(params["table"], [1.0, 2.0, 3.0, 4.0])
    # With jax_enable_checks (which checks a jaxpr's inputs against its arguments), placeholders are
    # staged zeros again: the same parameters.
    with jax.enable_checks(True):
        checked = sp.flatten(model.init(KEY, jnp.ones((1, 1))))
    assert seen["names"] == []
    for name, value in params.items():
        np.testing.assert_array_equal(checked[name], value)

@pytest.mark.parametrize("shape", [[2.5], "ab", [2, "3"]])
def test_shape_with_non_integer_dimensions_is_a_type_error(shape):
    def fn():
        with sp.scope("s"):
            sp.get_param("w", shape)

    with pytest.raises(TypeError, match=r"shape must be a sequence of ints, got .* for 's/w'"):
        init(fn)


def test_shape_accepts_numpy_integers_and_a_bare_int():
    def fn():
        sp.get_param("a", (np.int64(2), np.int32(3)))
        sp.get_param("b", 4)

    flat = sp.flatten(init(fn))
    assert flat["a"].shape == (2, 3) and flat["b"].shape == (4,)


@pytest.mark.parametrize("partitionable", [True, False])
@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_initializers_draw_exactly_what_jax_random_draws_at_the_full_shape(impl, partitionable):
    # Inside init our initializers draw flat and reshape (XLA compiles a rank-1 draw several times
    # faster); the values must be bit-for-bit those of the draw at the requested shape.
    key = jax.random.key(7, impl=impl)
    shapes = [(), (7,), (3, 1, 5), (2, 1, 3, 1, 5)]
    with jax.threefry_partitionable(partitionable), _flat_draws():
        for shape in shapes:
            fan_in, fan_out = sp.initializers._fans(shape)
            limit = np.sqrt(6.0 / max(1.0, fan_in + fan_out))
            pairs = [
                (inits.glorot_uniform()(key, shape, jnp.float32),
                 jax.random.uniform(key, shape, jnp.float32, -limit, limit)),
                (inits.random_normal(0.5, 2.0)(key, shape, jnp.float32),
                 0.5 + 2.0 * jax.random.normal(key, shape, jnp.float32)),
                # (a half-precision normal is drawn in float32 and rounded, as TF's)
                (inits.truncated_normal()(key, shape, jnp.bfloat16),
                 0.0 + 1.0 * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32).astype(
                     jnp.bfloat16)),
                (inits.random_uniform(-3.0, 1.0)(key, shape, jnp.float16),
                 jax.random.uniform(key, shape, jnp.float16, -3.0, 1.0)),
            ]
            for ours, theirs in pairs:
                assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
                np.testing.assert_array_equal(np.asarray(ours, np.float32),
                                              np.asarray(theirs, np.float32))


# --- TF's seed= and dtype= keywords; Keras's classes; orthogonal and identity ----------------------


def test_a_seed_fixes_the_draw_across_inits_and_parameters_as_an_op_seed_does_in_tf():
    # tf.random_normal_initializer(seed=1): the same values in every run and for every variable of
    # that shape given it. Without a seed, values come from the init key and the parameter's name.
    def fn():
        return (sp.get_param("a", [3, 4], init=inits.random_normal_initializer(stddev=0.1, seed=1)),
                sp.get_param("b", [3, 4], init=inits.random_normal_initializer(stddev=0.1, seed=1)),
                sp.get_param("c", [3, 4], init=inits.random_normal_initializer(stddev=0.1)))

    model = sp.transform(fn)
    one, two = model.init(jax.random.key(0)), model.init(jax.random.key(7))
    np.testing.assert_array_equal(one["a"], two["a"])
    np.testing.assert_array_equal(one["a"], one["b"])
    # Within float32 rounding of the op-by-op formula: init draws each group in one compiled call,
    # where XLA may fold 0.1 into the normal's own scaling. jax.jit(init) gives the same bits.
    np.testing.assert_allclose(one["a"], 0.1 * jax.random.normal(jax.random.key(1), (3, 4)), rtol=1e-6)
    assert not np.array_equal(one["c"], two["c"])
    for name, value in jax.jit(model.init)(jax.random.key(7)).items():
        np.testing.assert_array_equal(value, two[name])
    with pytest.raises(TypeError, match=r"seed must be an int or None \(as in TF\), got 0.5"):
        inits.glorot_normal(seed=0.5)


@pytest.mark.parametrize("factory", [inits.glorot_normal, inits.he_uniform, inits.xavier_initializer,
                                     inits.zeros_initializer, inits.constant_initializer,
                                     inits.truncated_normal_initializer, inits.orthogonal_initializer])
def test_tf_initializer_factories_take_seed_and_dtype_and_the_parameter_dtype_wins(factory):
    # As tf.get_variable calls the initializer with the variable's dtype.
    x = sp.transform(lambda: sp.get_param("w", [4, 4], dtype=jnp.bfloat16,
                                          init=factory(seed=3, dtype=jnp.float32))).init(KEY)["w"]
    assert x.dtype == jnp.bfloat16 and x.shape == (4, 4)


@pytest.mark.parametrize("positional, keywords", [
    (lambda: inits.random_normal_initializer(0.0, 0.02, 42),
     lambda: inits.random_normal_initializer(0.0, 0.02, seed=42)),
    (lambda: inits.random_normal_initializer(0.0, 0.02, 42, jnp.float32),
     lambda: inits.random_normal_initializer(0.0, 0.02, seed=42, dtype=jnp.float32)),
    (lambda: inits.truncated_normal_initializer(0.0, 0.1, 1),
     lambda: inits.truncated_normal_initializer(0.0, 0.1, seed=1)),
    (lambda: inits.random_uniform_initializer(-0.1, 0.1, 7),
     lambda: inits.random_uniform_initializer(-0.1, 0.1, seed=7)),
    (lambda: inits.glorot_uniform_initializer(3), lambda: inits.glorot_uniform_initializer(seed=3)),
    (lambda: inits.glorot_normal_initializer(3), lambda: inits.glorot_normal_initializer(seed=3)),
    (lambda: inits.variance_scaling_initializer(2.0, "fan_out", "uniform", 5),
     lambda: inits.variance_scaling_initializer(2.0, "fan_out", "uniform", seed=5)),
    (lambda: inits.orthogonal_initializer(1.0, 3), lambda: inits.orthogonal_initializer(1.0, seed=3)),
    (lambda: inits.he_normal(3), lambda: inits.he_normal(seed=3)),
    (lambda: inits.lecun_uniform(3), lambda: inits.lecun_uniform(seed=3)),
    (lambda: inits.zeros_initializer(jnp.float32), lambda: inits.zeros_initializer(dtype=jnp.float32)),
    (lambda: inits.ones_initializer(jnp.float32), lambda: inits.ones_initializer(dtype=jnp.float32)),
    (lambda: inits.identity_initializer(2.0, jnp.float32),
     lambda: inits.identity_initializer(2.0, dtype=jnp.float32)),
    (lambda: inits.RandomNormal(0.0, 0.05, 42), lambda: inits.RandomNormal(0.0, 0.05, seed=42)),
    (lambda: inits.RandomUniform(-0.05, 0.05, 42), lambda: inits.RandomUniform(-0.05, 0.05, seed=42)),
    (lambda: inits.contrib.variance_scaling_initializer(1.0, "FAN_AVG", True, 9),
     lambda: inits.contrib.variance_scaling_initializer(1.0, "FAN_AVG", True, seed=9)),
    (lambda: inits.xavier_initializer(False, 9), lambda: inits.xavier_initializer(False, seed=9)),
])
def test_tf_initializers_take_seed_and_dtype_positionally_in_tfs_order(positional, keywords):
    # tf.random_normal_initializer(0., .02, 42), tf.keras.initializers.RandomNormal(0., .05, 42), ...
    def fn(make):
        return sp.get_param("w", [3, 3], init=make())

    model = sp.transform(fn)
    np.testing.assert_array_equal(model.init(KEY, positional)["w"],
                                  model.init(jax.random.key(5), keywords)["w"])


def _positional_names(callable_):
    params = inspect.signature(callable_).parameters.values()
    return [p.name for p in params if p.name != "self"
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def test_initializer_factories_take_positional_arguments_in_the_order_tf_and_keras_do():
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    tf_slim = pytest.importorskip("tf_slim")
    namespaces = [  # (theirs, ours, the names compared: tf.compat.v1's others are ops)
        (tf.compat.v1, inits, [n for n in inits.__all__ if n.endswith("_initializer")]),
        (tf.compat.v1.initializers, inits, inits.__all__),
        (tf.compat.v1.keras.initializers, inits, inits.__all__),
        (tf_keras.initializers, inits, inits.__all__),
        (tf_slim.initializers, inits.contrib, vars(inits.contrib))]
    compared = []
    for theirs_namespace, ours_namespace, names in namespaces:
        for name in names:
            theirs = getattr(theirs_namespace, name, None)
            if theirs is None or name in ("zeros", "ones"):  # ours are init(key, shape, dtype) too
                continue
            expected = _positional_names(theirs.__init__ if inspect.isclass(theirs) else theirs)
            if expected == ["args"]:  # tf_keras's Zeros and Ones take (*args, **kwargs)
                continue
            ours = _positional_names(getattr(ours_namespace, name))
            assert ours[:len(expected)] == expected, (theirs_namespace.__name__, name)
            compared.append(name)
    assert len(compared) > 60 and {"uniform_unit_scaling_initializer", "normal", "he_normal",
                                   "constant_initializer", "xavier_initializer"} <= set(compared)
    with pytest.raises(TypeError, match=r"random_normal\(\) takes at most 4 positional "
                                        r"arguments \(mean, stddev, seed, dtype, in TF's order\), "
                                        r"got 5") as e:
        inits.random_normal_initializer(0.0, 1.0, 1, jnp.float32, "extra")
    assert "fix: " in str(e.value)
    with pytest.raises(TypeError, match=r"random_normal\(\) got multiple values for "
                                        r"argument 'seed'"):
        inits.random_normal_initializer(0.0, 1.0, 1, seed=1)


@pytest.mark.parametrize("name, keras_name, draw", [
    ("RandomNormal", "RandomNormal", lambda x: x.std()),
    ("TruncatedNormal", "TruncatedNormal", lambda x: x.std()),
    ("RandomUniform", "RandomUniform", lambda x: np.abs(x).max()),
    ("VarianceScaling", "VarianceScaling", lambda x: x.std()),
    ("Orthogonal", "Orthogonal", lambda x: x.std()),
    # Keras 2's class names for TF 1.x Keras's functions
    ("GlorotNormal", "glorot_normal", lambda x: x.std()),
    ("GlorotUniform", "glorot_uniform", lambda x: np.abs(x).max()),
    ("HeNormal", "he_normal", lambda x: x.std()),
    ("LecunUniform", "lecun_uniform", lambda x: np.abs(x).max()),
    # TF 1.x Keras's aliases of its RandomNormal and RandomUniform, with their defaults
    ("normal", "normal", lambda x: x.std()),
    ("uniform", "uniform", lambda x: np.abs(x).max()),
])
def test_keras_initializer_classes_draw_with_keras_defaults(name, keras_name, draw):
    # tf.keras.initializers' defaults differ from tf.*_initializer's (RandomNormal: stddev 0.05).
    tf = pytest.importorskip("tensorflow")
    shape = (64, 48, 32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        theirs = session.run(getattr(tf.compat.v1.keras.initializers, keras_name)(seed=0)(shape))
    ours = np.asarray(sp.transform(lambda: sp.get_param("w", shape, init=getattr(inits, name)))
                      .init(KEY)["w"])
    assert draw(ours) == pytest.approx(draw(theirs), rel=0.02)


def test_keras_constant_zeros_ones_and_identity_are_exactly_tfs():
    tf = pytest.importorskip("tensorflow")
    keras = tf.compat.v1.keras.initializers
    cases = [("Zeros", (), (2, 3)), ("Ones", (), (2, 3)), ("Constant", (0.5,), (2, 3)),
             ("Identity", (), (2, 3)), ("Identity", (2.0,), (4, 3))]
    for name, args, shape in cases:
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            theirs = session.run(getattr(keras, name)(*args)(shape))
        np.testing.assert_array_equal(getattr(inits, name)(*args)(KEY, shape, jnp.float32), theirs)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        theirs = session.run(tf.compat.v1.initializers.identity(gain=3.0)((3, 3)))
    np.testing.assert_array_equal(inits.identity_initializer(gain=3.0)(KEY, (3, 3), jnp.float32), theirs)


@pytest.mark.parametrize("factor, shape", [(1.0, (64, 48, 32)), (1.43, (256, 64)), (1.15, (4096,))])
def test_uniform_unit_scaling_initializer_draws_tf1s_bounds(factor, shape):
    # TF 1.x: U(-m, m), m = sqrt(3 / prod(shape[:-1])) * factor (a rank-1 shape: prod of none, 1).
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        theirs = session.run(tf.compat.v1.uniform_unit_scaling_initializer(factor, 0)(shape))
    limit = math.sqrt(3.0 / math.prod(shape[:-1])) * factor
    for init_ in (inits.uniform_unit_scaling_initializer(factor),
                  inits.uniform_unit_scaling(factor=factor, seed=2, dtype=jnp.float32)):
        ours = np.asarray(sp.transform(lambda: sp.get_param("w", shape, init=init_)).init(KEY)["w"])
        for x in (ours, theirs):
            assert np.abs(x).max() <= limit and np.abs(x).max() > 0.99 * limit
            assert abs(x.mean()) < 0.02 * limit
        assert ours.std() == pytest.approx(theirs.std(), rel=0.02)
    assert inits.uniform_unit_scaling is inits.uniform_unit_scaling_initializer


def test_uniform_unit_scaling_initializer_on_a_scalar_uses_an_input_size_of_one_as_tf_does(monkeypatch):
    pytest.importorskip("tensorflow")
    from tensorflow.python.ops import init_ops
    seen = _tf_draw_arguments(monkeypatch, init_ops, "random_uniform",
                              lambda: init_ops.UniformUnitScaling(2.0)([]))
    low, high = seen["args"][:2]
    assert high == -low == pytest.approx(2.0 * math.sqrt(3.0))
    x = _draws_of_a_scalar(inits.uniform_unit_scaling_initializer(2.0))
    assert x.min() >= low and x.max() < high and x.max() > 0.99 * high
    # A zero-size dimension: TF's max(input_size, 1), no division by zero.
    assert inits.uniform_unit_scaling_initializer()(KEY, (0, 3), jnp.float32).shape == (0, 3)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (2, 3, 4), (3, 3, 2, 16)])
def test_orthogonal_initializer_has_orthonormal_rows_or_columns_times_gain_like_tfs(shape):
    tf = pytest.importorskip("tensorflow")
    q = np.asarray(inits.orthogonal_initializer(gain=2.0)(KEY, shape, jnp.float32))
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        theirs = session.run(tf.compat.v1.orthogonal_initializer(gain=2.0, seed=0)(shape))
    for m in (q, theirs):
        m = m.reshape(-1, shape[-1])
        small = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
        np.testing.assert_allclose(small, 4.0 * np.eye(len(small)), atol=1e-4)
    assert q.shape == theirs.shape == shape


def test_orthogonal_and_identity_refuse_shapes_tf_refuses():
    with pytest.raises(ValueError, match=r"orthogonal initializer: the shape must have rank 2 or more, "
                                         r"got \(4,\)"):
        sp.transform(lambda: sp.get_param("w", [4], init=inits.orthogonal())).init(KEY)
    with pytest.raises(ValueError, match=r"identity initializer: the shape must have rank 2, got "
                                         r"\(2, 2, 2\)"):
        inits.identity()(KEY, (2, 2, 2), jnp.float32)


def test_constant_initializer_takes_tfs_dtype_second_and_verify_shape_third_positionally():
    # TF 1.x: constant_initializer(value=0, dtype=tf.float32, verify_shape=False). As in
    # tf.get_variable, the initializer's dtype does not decide the variable's (float32 by default).
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    with tf.Graph().as_default():
        b = tf1.get_variable("b", [3], initializer=tf1.constant_initializer(0.1, tf.float32))
        n = tf1.get_variable("n", [3], initializer=tf1.constant_initializer(2, tf.int32))
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            theirs_b, theirs_n = session.run([b, n])
        with pytest.raises(TypeError, match="Expected Tensor's shape"):
            tf1.constant_initializer([1.0, 2.0, 3.0, 4.0], tf.float32, True)((2, 2))
    ours = sp.transform(lambda: (
        sp.get_param("b", [3], init=inits.constant_initializer(0.1, tf.float32)),
        sp.get_param("n", [3], init=inits.constant_initializer(2, jnp.int32)))).init(KEY)
    np.testing.assert_array_equal(ours["b"], theirs_b)
    np.testing.assert_array_equal(ours["n"], theirs_n)
    assert ours["b"].dtype == theirs_b.dtype and ours["n"].dtype == theirs_n.dtype == np.float32
    with pytest.raises(ValueError, match=r"verify_shape=True: the value's shape \(4,\)"):
        inits.constant_initializer([1.0, 2.0, 3.0, 4.0], tf.float32, True)(KEY, (2, 2), jnp.float32)
    np.testing.assert_array_equal(inits.Constant(0.5, None, False)(KEY, (2,), jnp.float32), [0.5, 0.5])


def test_constant_initializer_verify_shape_requires_the_exact_shape_as_in_tf():
    np.testing.assert_array_equal(inits.constant_initializer([1, 2, 3, 4])(KEY, (2, 2), jnp.float32),
                                  [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"verify_shape=True: the value's shape \(4,\) is not the "
                                         r"requested \(2, 2\)"):
        inits.constant_initializer([1, 2, 3, 4], verify_shape=True)(KEY, (2, 2), jnp.float32)


@pytest.mark.parametrize("value, shape, verify_shape", [
    ([1.0, 2.0], (2, 3), False),
    ([5.0], (2, 2), False),
    (np.arange(6.0).reshape(2, 3), (2, 4), False),
    ([[1, 2, 3], [4, 5, 6]], (3, 2), False),
    ([], (2,), False),  # no value: zeros
    ([1.0, 2.0], (0,), False),  # an empty shape takes anything
    ([1.0, 2.0], (0, 3), True),
    (np.arange(6.0).reshape(2, 3), (2, 3), True),
])
def test_constant_initializer_fills_the_rest_with_the_last_value_as_tf1_does(value, shape,
                                                                             verify_shape):
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:  # TF 1.x's v1 initializer
        theirs = session.run(tf.compat.v1.constant_initializer(value, verify_shape=verify_shape)(
            shape, dtype=tf.float32))
    ours = sp.transform(lambda: sp.get_param(
        "c", shape, init=inits.constant_initializer(value, verify_shape=verify_shape))).init(KEY)["c"]
    assert ours.shape == theirs.shape == shape
    np.testing.assert_array_equal(ours, theirs)


def test_constant_initializer_with_too_many_values_is_an_error_as_in_tf1():
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="Too many elements provided. Takes at most 6, but got 7"):
            tf.compat.v1.constant_initializer(list(range(7)))((2, 3), dtype=tf.float32)
    with pytest.raises(ValueError, match=r"7 values cannot fill shape \(2, 3\): too many elements "
                                         r"provided, it takes at most 6 \(as in TF\)") as e:
        inits.constant_initializer(list(range(7)))(KEY, (2, 3), jnp.float32)
    assert "fix: pass at most 6 values" in str(e.value)


@pytest.mark.parametrize("kwargs, n, uniform", [
    ({}, 576, False),  # He: factor 2, FAN_IN, truncated normal
    ({"factor": 1.0, "mode": "FAN_IN", "uniform": True}, 576, True),  # Caffe's
    ({"factor": 1.0, "mode": "FAN_AVG", "uniform": False}, 432, False),  # xavier_initializer(False)
    ({"factor": 3.0, "mode": "FAN_OUT"}, 288, False),
])
def test_contribs_variance_scaling_initializer_follows_contribs_rule(kwargs, n, uniform):
    shape = (3, 3, 64, 32)  # fan_in 576, fan_out 288
    factor = kwargs.get("factor", 2.0)
    x = np.asarray(sp.transform(lambda: sp.get_param(
        "w", shape, init=inits.contrib.variance_scaling_initializer(**kwargs))).init(KEY)["w"])
    if uniform:
        limit = math.sqrt(3.0 * factor / n)
        assert np.abs(x).max() <= limit and np.abs(x).max() > 0.99 * limit
    else:
        stddev = math.sqrt(1.3 * factor / n)  # contrib's, truncated at two of these
        assert np.abs(x).max() <= 2 * stddev and np.abs(x).max() > 1.95 * stddev
        assert x.std() == pytest.approx(stddev * 0.87962566103423978, rel=0.02)
    assert inits.contrib.xavier_initializer is inits.xavier_initializer


def test_contribs_arguments_given_to_core_variance_scaling_say_which_function_has_them():
    # tf.contrib.layers.variance_scaling_initializer() is He's initializer; core TF's function of the
    # same name defaults to scale 1.0. Contrib's arguments must not land on core's silently.
    for call in (lambda: inits.variance_scaling_initializer(factor=2.0),
                 lambda: inits.variance_scaling_initializer(2.0, "FAN_IN"),
                 lambda: inits.variance_scaling_initializer(uniform=True)):
        with pytest.raises(TypeError, match=r"arguments of tf\.contrib\.layers\.variance_scaling_"
                                            r"initializer, not of core TF's") as e:
            call()
        assert "fix: use sp.initializers.contrib.variance_scaling_initializer(" in str(e.value)
    with pytest.raises(TypeError, match=r"invalid mode 'fan_in'; use 'FAN_IN'"):
        inits.contrib.variance_scaling_initializer(mode="fan_in")



def test_list_shapes_are_read_like_tuples_in_init_and_apply():
    def fn():
        with sp.scope("s"):
            w = sp.get_param("w", [2, np.int64(3)])
            b = sp.get_param("b", [None], init=jax.nn.initializers.zeros)  # an unknown dimension: any
        return w, b

    params = sp.transform(lambda: (sp.get_param("s/w", [2, 3]),
                                   sp.get_param("s/b", (4,), init=jax.nn.initializers.zeros))).init(KEY)
    w, b = sp.transform(fn).apply(params)
    assert (w.shape, b.shape) == ((2, 3), (4,))
    # A float dimension is an error where a shape makes an array (TF's Dimension): in init. apply's
    # lookup makes nothing: it checks that the shape asked equals the parameter's, as a list or a
    # tuple alike, and raises on a mismatch or on a dimension that is no number.
    with pytest.raises(TypeError, match=r"shape must be a sequence of ints, got \[2, 3.0\]"):
        sp.transform(lambda: sp.get_param("w", [2, 3.0])).init(KEY)
    for shape in ([2, 3.0], (2, 3.0)):
        assert sp.transform(lambda: sp.get_param("w", shape)).apply({"w": jnp.ones((2, 3))}).shape == (2, 3)
    with pytest.raises(TypeError, match=r"got \[2, 'x'\] for 'w'"):
        sp.transform(lambda: sp.get_param("w", [2, "x"])).apply({"w": jnp.ones((2, 3))})
    with pytest.raises(sp.ShapeMismatchError, match=r"variable w, but specified shape \(2, 4\)"):
        sp.transform(lambda: sp.get_param("w", [2, 4])).apply({"w": jnp.ones((2, 3))})


def test_a_numpy_array_or_an_int_as_the_shape_is_read_as_init_reads_it_in_apply_too():
    # TF takes any shape spelling TensorShape takes; apply must not compare an array elementwise.
    model = sp.transform(lambda: (sp.get_param("w", np.array([2, 3])), sp.get_param("b", np.int64(4))))
    params = model.init(KEY)
    assert (params["w"].shape, params["b"].shape) == ((2, 3), (4,))
    w, b = model.apply(params)
    assert (w.shape, b.shape) == ((2, 3), (4,))
    with pytest.raises(sp.ShapeMismatchError, match=r"variable w, but specified shape \(2, 4\)"):
        sp.transform(lambda: sp.get_param("w", np.array([2, 4]))).apply(params)


@pytest.mark.parametrize("shape", [(-1, 3), [2, -4], -2, np.array([-1, 3]), (None, -1)])
def test_a_negative_dimension_is_tfs_error_naming_the_parameter_not_an_xla_crash(shape):
    # TF: ValueError "Dimension -1 must be >= 0". Before: an MLIRError from deep inside XLA.
    def fn():
        with sp.scope("enc"):
            return sp.get_param("w", shape)

    with pytest.raises(sp.InitializerError, match=r"Dimension -\d must be >= 0: shape .* for 'enc/w'"
                                                  r"[^\n]*\n  fix: pass the actual size"):
        sp.transform(fn).init(KEY)
    with pytest.raises(sp.InitializerError, match=r"Dimension -\d must be >= 0: .* for 'enc/w'"):
        sp.transform(fn).apply({"enc": {"w": jnp.ones((2, 3))}})


@pytest.mark.parametrize("shape", [(True, 3), [2, False], True, (np.True_, 3), np.array([True, True])])
def test_a_boolean_dimension_is_an_error_not_a_size_of_one(shape):
    # TF: TypeError "Expected an int, got a boolean". Before: (True, 3) created a (1, 3) parameter.
    with pytest.raises(TypeError, match=r"shape must be a sequence of ints, got .* for 'w': "
                                        r".* is a boolean, not a size[^\n]*\n  fix: write the dimension"):
        sp.transform(lambda: sp.get_param("w", shape)).init(KEY)


def test_an_unknown_rank_shape_is_a_not_fully_defined_error_in_init_and_apply():
    tf = pytest.importorskip("tensorflow")
    unknown = tf.TensorShape(None)
    model = sp.transform(lambda: sp.get_param("w", unknown, init=sp.initializers.zeros))
    for run in (lambda: model.init(KEY), lambda: model.apply({"w": jnp.zeros((2, 3))})):
        with pytest.raises(sp.InitializerError, match=r"The shape asked for 'w' has an unknown rank "
                                                      r".*must be fully defined.*\n  fix: pass the full "
                                                      r"shape"):
            run()
    # a known TensorShape is read as its dimensions
    known = sp.transform(lambda: sp.get_param("w", tf.TensorShape([2, None]), init=sp.initializers.zeros))
    assert known.apply({"w": jnp.zeros((2, 3))}).shape == (2, 3)


@pytest.mark.parametrize("init", [lambda: jnp.ones((2,)), lambda: np.ones(2, np.float32),
                                  jnp.ones(2), [1.0, 2.0]], ids=["lambda", "np-lambda", "array", "list"])
def test_apply_checks_a_no_argument_or_constant_initializers_shape_and_dtype_as_init_fixes_them(init):
    # Before: a no-argument initializer took any leaf in apply ((5, 7) float16 for a (2,) float32).
    model = sp.transform(lambda: sp.get_param("w", init=init))
    params = model.init(KEY)
    assert (params["w"].shape, params["w"].dtype) == ((2,), jnp.float32)
    for apply in (model.apply, jax.jit(model.apply)):
        assert apply(params).shape == (2,)
        with pytest.raises(sp.ShapeMismatchError, match=r"variable w, but specified shape \(2,\) and "
                                                        r"found shape \(5, 7\)"):
            apply({"w": jnp.ones((5, 7), jnp.float32)})
        with pytest.raises(sp.DtypeMismatchError, match="specified dtype float32 and found dtype float16"):
            apply({"w": jnp.ones((2,), jnp.float16)})


def test_a_no_argument_initializer_under_a_custom_getter_is_checked_in_apply_too():
    def fn():
        with sp.scope("s", custom_getter=lambda getter, name, *a, **k: getter(name, *a, **k)):
            return sp.get_param("w", init=lambda: jnp.ones((2,), jnp.int32))

    model = sp.transform(fn)
    params = model.init(KEY)
    assert params["s"]["w"].dtype == jnp.int32
    with pytest.raises(sp.DtypeMismatchError, match="specified dtype int32 and found dtype float32"):
        model.apply({"s": {"w": jnp.ones((2,), jnp.float32)}})


def test_an_initializer_that_needs_a_shape_given_none_fails_in_apply_as_in_init():
    for init_ in (jax.nn.initializers.normal(), None):
        model = sp.transform(lambda: sp.get_param("w", init=init_))
        with pytest.raises(sp.InitializerError) as in_init:
            model.init(KEY)
        with pytest.raises(sp.InitializerError) as in_apply:
            model.apply({"w": jnp.ones(3, jnp.int8)})
        assert str(in_apply.value) == str(in_init.value)
        assert "(parameter 'w')" in str(in_apply.value) and "\n  fix: " in str(in_apply.value)


def test_an_initializer_returning_another_kind_of_dtype_is_an_error_not_a_truncating_cast():
    # TF: ValueError "Tensor conversion requested dtype int32 for Tensor with dtype float32". Before:
    # the normal draw was cast to int32 (-1, 0, 1).
    def fn():
        with sp.scope("enc"):
            return sp.get_param("w", (4,), init=lambda k, s, d: jax.random.normal(k, s), dtype=jnp.int32)

    with pytest.raises(sp.InitializerError, match=r"The initializer of 'enc/w' \(a lambda\) returned dtype "
                                                  r"float32 for a parameter of dtype int32: casting would "
                                                  r"change its values.*\n  asked: shape \(4,\), dtype "
                                                  r"int32.*\n  fix: return an array of the dtype"):
        init(fn)
    for returned, asked in ((jnp.complex64, jnp.float32), (jnp.int32, jnp.bool_)):
        with pytest.raises(sp.InitializerError, match="casting would change its values"):
            init(lambda: sp.get_param("w", (2,), init=lambda k, s, d: jnp.ones(s, returned), dtype=asked))
    # A cast within a kind, or up one, keeps the values up to precision: kept (JAX users rely on it).
    for returned, asked in ((jnp.float32, jnp.bfloat16), (np.float64, jnp.float32),
                            (jnp.int32, jnp.float32), (jnp.bool_, jnp.int32)):
        value = init(lambda: sp.get_param("w", (2,), init=lambda k, s, d: np.ones(s, returned),
                                          dtype=asked))["w"]
        assert value.dtype == asked and value.tolist() == [1, 1]


def test_constant_initializer_refuses_a_value_the_dtype_cannot_hold_as_tf_does():
    # TF: TypeError "Expected int32, but got 1.5". Before: 1.5 became 1, 300 became 44 in int8.
    for value, dtype, shown in ((1.5, jnp.int32, "1.5"), ([1.0, 2.5], jnp.int32, "2.5"),
                                (300, jnp.int8, "300"), (2, jnp.bool_, "2"),
                                (1 + 1j, jnp.float32, r"\(1\+1j\)")):
        with pytest.raises(TypeError, match=rf"constant initializer: the value {shown} does not fit "
                                            rf"{np.dtype(dtype).name} exactly"):
            init(lambda: sp.get_param("w", (2,), init=inits.constant(value), dtype=dtype))
    # What TF does, said right: an integer out of range wraps (TF 1.x gives [44 44], [255 255],
    # [127 127]), a fraction is TF's TypeError.
    for value, dtype, said in ((300, jnp.int8, "TF wraps it to 44 silently"),
                               (-1, jnp.uint8, "TF wraps it to 255 silently"),
                               (-129, jnp.int8, "TF wraps it to 127 silently"),
                               (1.5, jnp.int32, "TF: Expected int32, but got 1.5")):
        with pytest.raises(TypeError, match=rf"exactly \({said}\); casting would change it"):
            init(lambda: sp.get_param("w", (2,), init=inits.constant(value), dtype=dtype))

    def made(value, dtype):
        return init(lambda: sp.get_param("w", (2,), init=inits.constant(value), dtype=dtype))["w"]

    # Exact values and precision-only roundings are kept.
    assert made(2.0, jnp.int32).tolist() == [2, 2]
    assert made(1, jnp.bool_).tolist() == [True, True]
    assert made(0.1, jnp.bfloat16).dtype == jnp.bfloat16


def test_python_constants_have_tfs_32_bit_dtypes_even_with_x64_on():
    # TF converts Python floats (and lists of them) to float32, ints to int32. Before, with x64 on:
    # float64, and init=1.5, dtype=float32 was a dtype mismatch.
    def fn():
        with sp.scope("s"):
            a = sp.get_param("a", init=1.5)
            b = sp.get_param("b", init=[1.0, 2.0])
            c = sp.get_param("c", init=3)
            d = sp.get_param("d", init=1.5, dtype=jnp.float32)
            e = sp.get_param("e", init=np.ones(2))  # NumPy arrays keep their dtype
        with sp.scope("s", reuse=True):
            return a, sp.get_param("a"), b, c, d, e

    with jax.enable_x64(True):
        params = sp.transform(fn).init(KEY)
        assert {k: v.dtype.name for k, v in params["s"].items()} == {
            "a": "float32", "b": "float32", "c": "int32", "d": "float32", "e": "float64"}
        sp.transform(fn).apply(params)
        with pytest.raises(sp.InitializerError, match="Initializer type 'float32' and explicit dtype "
                                                      "'float64' don't match for 'w'"):
            sp.transform(lambda: sp.get_param("w", init=1.5, dtype=np.float64)).init(KEY)


# --- what TF accepts in its initializers' arguments, and what it refuses ---------------------------


def _tf1_value(initializer, shape, dtype_name="float32"):
    """TF 1.x's value of ``tf.compat.v1.get_variable('w', shape, initializer=...)``, in a graph."""
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    with tf.Graph().as_default(), tf1.Session() as session:
        w = tf1.get_variable("w", shape, getattr(tf, dtype_name), initializer=initializer(tf1))
        session.run(tf1.global_variables_initializer())
        return session.run(w)


@pytest.mark.parametrize("ours, theirs, low, high", [
    (lambda: inits.random_uniform_initializer(3.0, 1.0),
     lambda tf1: tf1.random_uniform_initializer(3.0, 1.0), 1.0, 3.0),
    (lambda: inits.RandomUniform(0.05, -0.05),
     lambda tf1: tf1.keras.initializers.RandomUniform(0.05, -0.05), -0.05, 0.05),
])
def test_random_uniform_with_minval_above_maxval_draws_between_them_as_tf1_does(ours, theirs, low,
                                                                                high):
    # TF: minval + (maxval - minval) * U[0, 1), uniform over (maxval, minval]. Before: JAX's clamp
    # to minval made every value minval.
    tf_value = _tf1_value(theirs, (100000,))
    value = np.asarray(sp.transform(lambda: sp.get_param("w", (100000,), init=ours())).init(KEY)["w"])
    for drawn in (tf_value, value):
        assert low <= drawn.min() < low + 0.001 * (high - low)
        assert high - 0.001 * (high - low) < drawn.max() <= high
        assert drawn.mean() == pytest.approx((low + high) / 2, abs=0.01 * (high - low))
    # TF's formula, on JAX's U[0, 1) draw, in the parameter's dtype: JAX's own affine map, unclamped
    u = np.asarray(inits.random_uniform(0.0, 1.0)(KEY, (1000,), jnp.float32))
    minval, maxval = np.float32(high), np.float32(low)
    np.testing.assert_array_equal(inits.random_uniform(float(high), float(low))(KEY, (1000,), jnp.float32),
                                  u * (maxval - minval) + minval)


def test_random_uniform_in_order_keeps_jax_uniforms_values():
    for minval, maxval in ((-2.0, -1.0), (0.0, 1.0), (-0.05, 0.05), (2.0, 2.0)):
        for dtype in (jnp.float32, jnp.bfloat16):
            np.testing.assert_array_equal(
                inits.random_uniform(minval, maxval)(KEY, (64, 3), dtype),
                jax.random.uniform(KEY, (64, 3), dtype, minval, maxval))


@pytest.mark.parametrize("minval, maxval", [(5, 2), (2, 2)])
def test_random_uniform_refuses_integer_bounds_out_of_order_as_tf_does(minval, maxval):
    # TF: InvalidArgumentError "Need minval < maxval". Before: every value was minval.
    with pytest.raises(ValueError, match=rf"random_uniform\(minval={minval}, maxval={maxval}\) for "
                                         rf"integer dtype int32: minval must be below maxval \(TF: "
                                         rf"Need minval < maxval\)") as e:
        sp.transform(lambda: sp.get_param("n", [3], dtype=jnp.int32,
                                          init=inits.random_uniform(minval, maxval))).init(KEY)
    assert "fix: pass minval < maxval, e.g. random_uniform_initializer(0, 10) draws 0 to 9" in str(e.value)
    assert "raised by the initializer of 'n'" in "\n".join(e.value.__notes__)


@pytest.mark.parametrize("dtype", [jnp.int8, jnp.int16, jnp.uint8, jnp.uint32])
def test_random_uniform_refuses_integer_dtypes_tf_cannot_draw(dtype):
    # TF: ValueError "Argument `dtype` got invalid value <dtype: 'int8'>. Accepted dtypes are (...,
    # tf.int32, tf.int64)". Before: drawn.
    name = np.dtype(dtype).name
    with pytest.raises(inits.InitializerArgumentError,
                       match=rf"random_uniform\(minval=0, maxval=5\) cannot draw dtype {name}: TF's "
                             rf"integer draws are int32 and int64") as e:
        sp.transform(lambda: sp.get_param("n", [3], dtype=dtype,
                                          init=inits.random_uniform(0, 5))).init(KEY)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)
    assert "fix: give the parameter dtype int32 or int64" in str(e.value)
    assert "raised by the initializer of 'n'" in "\n".join(e.value.__notes__)


@pytest.mark.parametrize("make, name, dtype", [
    (inits.orthogonal_initializer, "orthogonal", jnp.int8),
    (inits.orthogonal_initializer, "orthogonal", jnp.int16),
    (inits.orthogonal_initializer, "orthogonal", jnp.uint8),
    (inits.orthogonal_initializer, "orthogonal", jnp.bool_),
    (inits.orthogonal_initializer, "orthogonal", jnp.int32),
    (inits.orthogonal_initializer, "orthogonal", jnp.complex64),
    (inits.random_normal_initializer, "random_normal", jnp.int32),
    (inits.random_normal_initializer, "random_normal", jnp.complex64),
    (inits.truncated_normal_initializer, "truncated_normal", jnp.complex64),
    (inits.random_uniform_initializer, "random_uniform", jnp.complex64),
    (inits.random_uniform_initializer, "random_uniform", jnp.bool_),
    (inits.glorot_uniform_initializer, "glorot_uniform", jnp.int32),
    (inits.he_normal, "variance_scaling", jnp.int8),
    (lambda: inits.variance_scaling(distribution="untruncated_normal"), "variance_scaling",
     jnp.complex64),
    (inits.uniform_unit_scaling_initializer, "uniform_unit_scaling", jnp.int32),
    (inits.contrib.variance_scaling_initializer, "contrib variance_scaling", jnp.int32),
])
def test_float_initializers_refuse_integer_bool_and_complex_parameters_as_tf_does(make, name, dtype):
    # TF: TypeError "Expected int8, but got 0.0 of type 'float'" (or "not in list of allowed values"
    # for complex). Before: orthogonal's float draw cast to zeros for int8 and True for bool;
    # random_normal drew complex values; the others raised JAX's ValueError.
    dtype_name = np.dtype(dtype).name
    with pytest.raises(inits.InitializerArgumentError,
                       match=rf"{name} initializer draws real floating values and cannot make a "
                             rf"parameter of dtype {dtype_name}") as e:
        sp.transform(lambda: sp.get_param("layer/w", (4, 4), init=make(), dtype=dtype)).init(KEY)
    assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)
    assert isinstance(e.value, sp.InitializerError)
    assert "  fix: " in str(e.value)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        assert "jax.nn.initializers.normal()" in str(e.value)
    else:
        assert "or an initializer of that dtype: sp.initializers.zeros or " in str(e.value)
    assert "raised by the initializer of 'layer/w'" in "\n".join(e.value.__notes__)


def test_float_initializers_keep_every_floating_dtype():
    for dtype in (jnp.float32, jnp.bfloat16, jnp.float16):
        for make in (inits.orthogonal, inits.random_normal, inits.truncated_normal, inits.random_uniform,
                     inits.glorot_uniform, inits.he_normal, inits.uniform_unit_scaling):
            assert make()(KEY, (4, 4), dtype).dtype == dtype


@pytest.mark.parametrize("make", [inits.variance_scaling_initializer, inits.VarianceScaling])
@pytest.mark.parametrize("distribution", ["Uniform", "NORMAL", "Truncated_Normal",
                                          "Untruncated_Normal"])
def test_variance_scaling_reads_the_distribution_in_any_case_as_tf_does(make, distribution):
    # TF's init_ops and Keras lowercase the distribution (not the mode). Before: "invalid distribution".
    tf = pytest.importorskip("tensorflow")
    tf.compat.v1.variance_scaling_initializer(2.0, "fan_in", distribution)
    ours = make(2.0, "fan_in", distribution)
    same = make(2.0, "fan_in", distribution.lower())
    np.testing.assert_array_equal(ours(KEY, (30, 40), jnp.float32), same(KEY, (30, 40), jnp.float32))
    with pytest.raises(ValueError, match="invalid mode 'Fan_In'"):
        make(2.0, "Fan_In", distribution)


class _KerasStyle:
    """The signature of every tf.keras initializer object's ``__call__``."""

    def __call__(self, shape, dtype=None, **kwargs):
        return jnp.zeros(shape, dtype)


def _keras_style_init(shape, dtype=None):
    return jnp.zeros(shape, dtype)


@pytest.mark.parametrize("make", [_KerasStyle, lambda: _keras_style_init])
def test_a_keras_style_initializer_is_an_error_that_names_its_calling_convention(make):
    # Before: the generic "cannot be called as init(key, shape, dtype)", whose fix (drop shape=) was
    # wrong for it; docs/migrating_from_tf1.md promises an error that says it is TF/Keras-style.
    with pytest.raises(TypeError, match=r"The initializer of 'dense/kernel' \(.*\) takes \(shape, "
                                        r"dtype, \.\.\.\), Keras's \(and TF 1\.x's\) calling "
                                        r"convention, but scoped_params calls initializers as "
                                        r"init\(key, shape, dtype\)") as e:
        sp.transform(lambda x: sp.layers.dense(x, 3, kernel_initializer=make())).init(
            KEY, jnp.zeros((2, 4)))
    message = str(e.value)
    assert isinstance(e.value, sp.InitializerError)
    assert "  asked: shape=(4, 3) with initializer " in message
    assert "  fix: a deterministic one can be wrapped, init=lambda key, shape, dtype: " in message
    assert "drop shape=" not in message


def test_a_keras_initializer_object_is_an_error_naming_sp_initializers_equivalent():
    tf_keras = pytest.importorskip("tf_keras")
    for keras_init, ours in (
            (tf_keras.initializers.GlorotUniform(), "sp.initializers.GlorotUniform()"),
            (tf_keras.initializers.RandomNormal(stddev=0.1),
             "sp.initializers.RandomNormal(mean=0.0, stddev=0.1)"),
            (tf_keras.initializers.VarianceScaling(2.0, "fan_out", seed=3),
             "sp.initializers.VarianceScaling(scale=2.0, mode='fan_out', "
             "distribution='truncated_normal', seed=3)")):
        with pytest.raises(TypeError, match="Keras's \\(and TF 1\\.x's\\) calling convention") as e:
            sp.transform(lambda: sp.get_param("w", (4, 3), init=keras_init)).init(KEY)
        assert f"  fix: use {ours}, Keras's {type(keras_init).__name__} in this convention" in str(e.value)
        made = eval(ours, {"sp": sp})  # the suggestion works as written
        assert sp.transform(lambda: sp.get_param("w", (4, 3), init=made)).init(KEY)["w"].shape == (4, 3)


def test_a_two_argument_initializer_that_is_not_keras_style_keeps_the_generic_error():
    def takes_two(key, shape):
        return jnp.zeros(shape)

    with pytest.raises(TypeError, match=r"The initializer of 'w' cannot be called as "
                                        r"init\(key, shape, dtype\)") as e:
        sp.transform(lambda: sp.get_param("w", [2], init=takes_two)).init(KEY)
    assert "calling convention" not in str(e.value)


def test_initializer_argument_errors_are_both_the_type_and_value_errors_tf_and_api_md_name():
    # TF raises ValueError for mode="FAN_IN" (ours said TypeError: contrib's arguments), TypeError
    # for verify_shape and for a float initializer of an int32 variable (ours said ValueError, as
    # API.md maps dtype and shape problems): one class that is both keeps either `except` working.
    tf = pytest.importorskip("tensorflow")
    tf1 = tf.compat.v1
    with pytest.raises(ValueError, match="Argument `mode` should be one of"):
        tf1.variance_scaling_initializer(2.0, "FAN_IN")
    with tf.Graph().as_default():
        with pytest.raises(TypeError, match="Expected Tensor's shape"):
            tf1.constant_initializer([1.0, 2.0, 3.0, 4.0], verify_shape=True)((2, 2))
        with pytest.raises(TypeError, match="Expected int32, but got"):
            tf1.get_variable("w", (4, 4), tf.int32, initializer=tf1.random_normal_initializer())
    for call in (lambda: inits.variance_scaling_initializer(2.0, "FAN_IN"),
                 lambda: inits.constant_initializer([1.0, 2.0, 3.0, 4.0], verify_shape=True)(
                     KEY, (2, 2), jnp.float32),
                 lambda: sp.transform(lambda: sp.get_param(
                     "w", (4, 4), init=inits.random_normal(), dtype=jnp.int32)).init(KEY)):
        with pytest.raises(inits.InitializerArgumentError) as e:
            call()
        assert isinstance(e.value, TypeError) and isinstance(e.value, ValueError)
        assert isinstance(e.value, sp.InitializerError) and "  fix: " in str(e.value)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float8_e4m3fn, jnp.float8_e5m2])
def test_narrow_float_parameters_are_drawn_in_float32_and_rounded_as_tfs_are(dtype):
    # Drawn in bfloat16 a normal took 128 values with a biased mean and short tails; a truncated
    # normal drawn in float8 was all NaN.
    def fn():
        return {name: sp.get_param(name, (256, 256), init, dtype) for name, init in (
            ("normal", inits.random_normal()), ("truncated", inits.truncated_normal()),
            ("he", inits.he_normal()), ("glorot", inits.glorot_uniform()))}

    params = sp.transform(fn).init(KEY)
    for name, value in params.items():
        x = np.asarray(value, np.float64)
        assert value.dtype == dtype and not np.isnan(x).any(), name
        assert len(np.unique(x)) > 30, name
    normal = np.asarray(params["normal"], np.float64)
    assert abs(normal.mean()) < 0.01 and abs(normal.std() - 1.0) < 0.05
    truncated = np.asarray(params["truncated"], np.float64)
    assert np.abs(truncated).max() <= 2.0 + 1e-6 and abs(truncated.mean()) < 0.01


def test_initializers_equal_but_for_their_captured_values_types_are_drawn_apart():
    # 0.02 and np.float64(0.02) are equal with one hash, but JAX computes with them differently: a
    # parameter's value must not depend on whether an unrelated one shares its group.
    def alone():
        return sp.get_param("w", (256,), inits.random_normal(0.01, 0.02), jnp.bfloat16)

    def with_other():
        sp.get_param("a", (256,), inits.random_normal(0.01, np.float64(0.02)), jnp.bfloat16)
        return sp.get_param("w", (256,), inits.random_normal(0.01, 0.02), jnp.bfloat16)

    np.testing.assert_array_equal(sp.transform(alone).init(KEY)["w"],
                                  sp.transform(with_other).init(KEY)["w"])


def test_a_zero_d_numpy_array_is_a_shape_of_one_dimension_as_in_tf():
    params = sp.transform(lambda: sp.get_param("w", np.array(5))).init(KEY)
    assert params["w"].shape == (5,)
    with pytest.raises(TypeError, match="shape must be a sequence of ints"):
        sp.transform(lambda: sp.get_param("v", np.array(5.0))).init(KEY)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
def test_identity_for_an_integer_or_bool_parameter_is_refused_as_tf_refuses_it(dtype):
    with pytest.raises(sp.initializers.InitializerArgumentError, match=re.escape(
            "identity initializer draws real floating values and cannot make a parameter of dtype "
            f"{np.dtype(dtype).name}")):
        sp.transform(lambda: sp.get_param("perm", (3, 3), inits.identity(), dtype)).init(KEY)
    eye = sp.transform(lambda: sp.get_param("e", (2, 3), inits.identity(2.0), jnp.complex64)).init(KEY)
    np.testing.assert_array_equal(eye["e"], 2.0 * np.eye(2, 3))


def test_variance_scaling_with_a_misspelled_argument_names_it_not_contribs_arguments():
    with pytest.raises(TypeError) as info:
        inits.variance_scaling(2.0, mode="fan_out", distrbution="uniform")
    assert not isinstance(info.value, sp.initializers.InitializerArgumentError)
    assert str(info.value) == (
        "variance_scaling_initializer() got an unexpected keyword argument 'distrbution'.\n"
        "  fix: its arguments are scale, mode ('fan_in', 'fan_out', 'fan_avg') and distribution "
        "('truncated_normal', 'untruncated_normal', 'uniform'); did you mean 'distribution'?")
    with pytest.raises(sp.initializers.InitializerArgumentError, match="tf.contrib.layers"):
        inits.variance_scaling(factor=2.0, uniform=True)


def test_a_scalar_constant_is_rounded_once_to_a_half_precision_parameter_as_tfs_is():
    # Rounded via float32 first, 1 + 2**-11 + 2**-40 became 1.0 in float16 (TF and constant([v]):
    # 1.0009765625), on the host fill path of a first init and in the compiled draw of later ones.
    v = 1 + 2**-11 + 2**-40
    for init in (inits.constant(v), inits.constant([v])):
        model = sp.transform(lambda: sp.get_param("c", (3,), init, jnp.float16))
        for params in (model.init(KEY), model.init(KEY), jax.jit(model.init)(KEY)):
            np.testing.assert_array_equal(np.asarray(params["c"], np.float64), [float(np.float16(v))] * 3)


def test_constant_initializer_says_what_tf_does_with_floats_complex_and_huge_ints():
    # A float (300.0 too) and a complex number get TF's TypeError, not "wraps"; a Python int past
    # 64 bits was a bare OverflowError (TF's own).
    for value, dtype, said in ((300.0, jnp.int8, r"TF: Expected int8, but got 300.0"),
                               (300 + 0j, jnp.int8, r"TF: Expected int8, but got \(300\+0j\)"),
                               (10 ** 30, jnp.int32, r"TF: OverflowError, Python int too large")):
        with pytest.raises(TypeError, match=rf"constant initializer: the value .* does not fit "
                                            rf"{np.dtype(dtype).name} exactly \({said}"):
            init(lambda: sp.get_param("w", (2,), init=inits.constant(value), dtype=dtype))
    big = init(lambda: sp.get_param("w", (2,), init=inits.constant(10 ** 30), dtype=jnp.float32))
    np.testing.assert_allclose(big["w"], 1e30)
