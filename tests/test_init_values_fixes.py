"""The values init gives: constant initializers built with jnp inside the function of an sp.scan,
sp.cond, sp.remat, ... (evaluated as at the top level, or an error naming the parameter), strongly
typed parameters from initializers that return weakly typed arrays, and eager draws that follow a
change of ``jax_default_prng_impl``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
XS = jnp.ones((4, 3))
EXPECTED = np.array([0.0, 2.0, 4.0], np.float32)


def _w(x):
    return x * sp.get_param("w", init=jnp.arange(3.0) * 2)


# --- a jnp constant initializer inside the function of a control-flow wrapper ---------------------


WRAPPED = {
    "scan": lambda xs: sp.scan(lambda c, x: (c + _w(x), None), jnp.zeros(3), xs)[0],
    "cond": lambda xs: sp.cond(True, _w, lambda x: x, xs[0]),
    "switch": lambda xs: sp.switch(1, [lambda x: x, _w], xs[0]),
    "remat": lambda xs: sp.remat(_w)(xs[0]),
    "while_loop": lambda xs: sp.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, _w(c[1])),
                                           (0, xs[0]))[1],
    "fori_loop": lambda xs: sp.fori_loop(0, 2, lambda i, h: _w(h), xs[0]),
    "scan_in_scan": lambda xs: sp.scan(
        lambda c, x: (sp.scan(lambda c2, x2: (c2 + _w(x2), None), c, xs)[0], None),
        jnp.zeros(3), xs)[0],
    "layer_stack": lambda xs: sp.layer_stack(2)(_w)(xs[0]),
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPED))
def test_a_jnp_constant_initializer_inside_a_wrapped_function_is_evaluated_as_at_top_level(wrapper):
    model = sp.transform(WRAPPED[wrapper])
    params = model.init(KEY, XS)
    (leaf,) = jax.tree_util.tree_leaves(params)
    assert isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer)
    expected = np.broadcast_to(EXPECTED, leaf.shape)
    np.testing.assert_array_equal(leaf, expected)
    (staged,) = jax.tree_util.tree_leaves(jax.jit(model.init)(KEY, XS))
    np.testing.assert_array_equal(staged, expected)
    out = model.apply(params, XS)  # no leaked tracer
    assert np.all(np.isfinite(np.asarray(out)))
    (spec,) = jax.tree_util.tree_leaves(model.specs(XS), is_leaf=lambda s: isinstance(s, sp.ParamSpec))
    np.testing.assert_array_equal(spec.init, expected)


def test_a_layer_stack_in_an_sp_scan_stacks_a_jnp_constant_initializer():
    def fn(xs):
        def step(c, x):
            return sp.layer_stack(2)(lambda h: h * sp.get_param("w", init=jnp.arange(3.0) * 2))(c), None
        return sp.scan(step, xs[0], xs)[0]

    params = sp.transform(fn).init(KEY, XS)
    w = params["layer_stack"]["w"]
    assert not isinstance(w, jax.core.Tracer)
    np.testing.assert_array_equal(w, np.stack([EXPECTED, EXPECTED]))


def test_get_state_with_a_jnp_constant_inside_sp_scan_is_evaluated():
    def fn(xs):
        def step(c, x):
            return c + x * sp.get_state("count", init=jnp.arange(3.0) * 2), None
        return sp.scan(step, jnp.zeros(3), xs)[0]

    model = sp.transform_with_state(fn)
    params, state = model.init(KEY, XS)
    assert params == {}
    np.testing.assert_array_equal(state["count"], EXPECTED)
    out, _ = model.apply(params, state, XS)
    np.testing.assert_allclose(out, 4 * EXPECTED)


def test_a_constant_closed_over_from_outside_an_sp_scan_is_evaluated():
    def fn(xs):
        table = jnp.arange(3.0) * 2  # made in init's own trace, closed over by the step
        def step(c, x):
            with sp.scope("cell"):
                return c + x * sp.get_param("w", init=table + 1), None
        return sp.scan(step, jnp.zeros(3), xs)[0]

    np.testing.assert_array_equal(sp.transform(fn).init(KEY, XS)["cell"]["w"], EXPECTED + 1)


@pytest.mark.parametrize("source", ["step input", "carry"])
def test_a_constant_initializer_computed_from_a_steps_values_is_an_error_naming_it(source):
    def fn(xs):
        def step(c, x):
            with sp.scope("cell"):
                value = x if source == "step input" else c
                return c + x * sp.get_param("w", init=value * 0), None
        return sp.scan(step, jnp.zeros(3), xs)[0]

    with pytest.raises(sp.InitializerError) as info:
        sp.transform(fn).init(KEY, XS)
    message = str(info.value)
    assert "'cell/w'" in message and "scan" in message
    assert "fix:" in message and "lambda key, shape, dtype" in message


def test_a_constant_initializer_computed_from_a_cond_operand_is_an_error_naming_it():
    def fn(xs):
        return sp.cond(True, lambda x: x * sp.get_param("w", init=x + 1), lambda x: x, xs[0])

    with pytest.raises(sp.InitializerError, match="'w'.*\n(.*\n)*  fix: "):
        sp.transform(fn).init(KEY, XS)


def test_a_constant_initializer_inside_sp_scan_from_a_model_input_is_the_top_level_error():
    def fn(xs):
        first = xs[0]
        return sp.scan(lambda c, x: (c + x * sp.get_param("w", init=first * 2), None),
                       jnp.zeros(3), xs)[0]

    with pytest.raises(sp.InitializerError, match="'w' depends on the model's inputs"):
        sp.transform(fn).init(KEY, XS)


def test_a_constant_initializer_from_a_mapped_input_of_jax_vmap_is_an_error_naming_it():
    def fn(x):
        return jax.vmap(lambda r: r * sp.get_param("w", init=r * 0))(x)

    with pytest.raises(sp.InitializerError) as info:
        sp.transform(fn).init(KEY, XS)
    assert "'w'" in str(info.value) and "fix:" in str(info.value)


def test_a_jnp_constant_initializer_inside_jax_vmap_that_ignores_the_input_is_evaluated():
    def fn(x):
        return jax.vmap(lambda r: r * sp.get_param("w", init=jnp.arange(3.0) * 2))(x)

    np.testing.assert_array_equal(sp.transform(fn).init(KEY, XS)["w"], EXPECTED)


# --- weakly typed initializer values --------------------------------------------------------------


def _weak_full(key, shape, dtype):
    return jnp.full(shape, 3.0)  # weakly typed float32


@pytest.mark.parametrize("jit", [False, True])
def test_an_initializer_returning_a_weakly_typed_array_gives_a_strongly_typed_parameter(jit):
    def fn(x):
        a = sp.get_param("a", (3,), init=_weak_full)
        b = sp.get_param("b", (3,), init=lambda key, shape, dtype: jnp.asarray(1.0) + jnp.zeros(shape))
        c = sp.get_param("c", init=jnp.asarray(2.0))  # a weakly typed constant
        d = sp.layer_stack(2)(lambda h: h * sp.get_param("d", (3,), init=_weak_full))(x)
        e = sp.layer_stack(2)(lambda h: h * sp.get_param("e", init=jnp.asarray(2.0)))(x)
        f = sp.get_param("f", (3,), dtype=jnp.bfloat16, init=_weak_full)  # cast, then strong
        g = sp.get_param("g", (3,), dtype=jnp.int32, init=lambda key, shape, dtype: jnp.full(shape, 3))
        return x * a * b * c + d + e + f + g

    init = sp.transform(fn).init
    params = (jax.jit(init) if jit else init)(KEY, jnp.ones(3))
    dtypes = {"f": jnp.bfloat16, "g": jnp.int32}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        assert leaf.dtype == dtypes.get(path[-1].key, jnp.float32), path
        assert not leaf.weak_type, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(params["a"], [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(params["layer_stack"]["d"], np.full((2, 3), 3.0))


def test_a_weakly_typed_initializer_value_computes_in_one_dtype_and_compiles_apply_once():
    model = sp.transform(lambda x: x * sp.get_param("scale", (3,), init=_weak_full))
    x = jnp.ones(3, jnp.bfloat16)
    params = model.init(0, x)
    traces = []
    apply = jax.jit(lambda p, x: (traces.append(1), model.apply(p, x))[1])
    before = apply(params, x)
    stepped = jax.tree.map(lambda p: p - jnp.asarray(0.5, p.dtype), params)  # an optimizer's step
    after = apply(stepped, x)
    assert before.dtype == after.dtype == jnp.float32
    assert len(traces) == 1


def test_a_weakly_typed_value_of_the_compiled_eager_draw_is_strongly_typed():
    # jax.nn.initializers.constant's value is built for its dtype; ours for a float32 parameter too.
    def fn(x):
        return x * sp.get_param("k", (3,), init=sp.initializers.constant(1.5)) * sp.get_param(
            "j", (3,), init=jax.nn.initializers.constant(1.5))

    model = sp.transform(fn)
    for _ in range(2):  # filled on the host, then drawn by its compiled call
        params = model.init(KEY, jnp.ones(3))
        assert not any(leaf.weak_type for leaf in jax.tree_util.tree_leaves(params))


# --- eager draws follow jax_default_prng_impl -----------------------------------------------------


def test_eager_init_draws_follow_a_change_of_the_default_prng_impl():
    def fn(x):
        return x @ sp.get_param("w", (3, 3), init=jax.nn.initializers.normal())

    model = sp.transform(fn)
    x = jnp.ones((1, 3))
    before = jax.config.jax_default_prng_impl
    try:
        got = {}
        for impl in ("rbg", "unsafe_rbg", "rbg", "unsafe_rbg"):
            jax.config.update("jax_default_prng_impl", impl)
            key = jax.random.PRNGKey(0)  # a raw key: uint32[4] for both generators
            value = np.asarray(model.init(key, x)["w"])
            # traced anew (a new function: JAX's cache does not see the config): the impl's bits
            staged = np.asarray(jax.jit(lambda k, x: model.init(k, x))(key, x)["w"])
            np.testing.assert_array_equal(value, staged, err_msg=impl)
            if impl in got:
                np.testing.assert_array_equal(value, got[impl], err_msg=impl)
            got[impl] = value
        assert not np.array_equal(got["rbg"], got["unsafe_rbg"])
    finally:
        jax.config.update("jax_default_prng_impl", before)


def test_a_jnp_constant_initializer_in_an_sp_scan_under_jax_vmap_or_grad_is_evaluated():
    def step(c, x):
        return c + x * sp.get_param("w", init=jnp.arange(3.0) * 2), None

    def mapped(xs):
        return jax.vmap(lambda r: sp.scan(step, jnp.zeros(3), r)[0])(xs)

    def differentiated(xs):
        return jax.grad(lambda r: sp.scan(step, jnp.zeros(3), r)[0].sum())(xs)

    np.testing.assert_array_equal(sp.transform(mapped).init(KEY, jnp.ones((2, 4, 3)))["w"], EXPECTED)
    np.testing.assert_array_equal(sp.transform(differentiated).init(KEY, XS)["w"], EXPECTED)


@pytest.mark.parametrize("where", ["scan", "stack in scan", "outer scan"])
def test_a_constant_initializer_from_another_parameters_value_inside_sp_scan_is_the_top_level_error(
        where):
    def make(c, x):
        w = sp.get_param("w", (3,))
        return c + x * sp.get_param("v", init=w * 2), None

    def fn(xs):
        if where == "scan":
            return sp.scan(make, jnp.zeros(3), xs)[0]
        if where == "stack in scan":
            return sp.scan(lambda c, x: (sp.layer_stack(2)(lambda h: make(h, x)[0])(c), None),
                           jnp.zeros(3), xs)[0]
        def outer(c, x):
            w = sp.get_param("w", (3,))
            return sp.scan(lambda c2, x2: (c2 + sp.get_param("v", init=w * 2), None), c, xs)[0], None
        return sp.scan(outer, jnp.zeros(3), xs)[0]

    with pytest.raises(sp.InitializerError, match="'(layer_stack/)?v' is computed from the value of "
                                                  "parameter '(layer_stack/)?w'"):
        sp.transform(fn).init(KEY, XS)


@pytest.mark.parametrize("value", [2**40, np.int64(2**40), np.array([2**40, 1])], ids=["int", "np.int64", "array"])
def test_an_integer_constant_that_int32_cannot_hold_is_refused_not_wrapped(value):
    if jax.config.jax_enable_x64:
        pytest.skip("with 64-bit types on, the constant keeps int64")
    with pytest.raises(TypeError) as info:
        sp.transform(lambda: sp.get_param("c", init=value)).init(KEY)
    assert str(info.value).startswith(
        "The constant initializer of 'c' holds 1099511627776, which int32 does not hold: JAX makes "
        "int64 values int32 with jax_enable_x64 off"), info.value
    params = sp.transform(lambda: sp.get_param("c", init=np.array([2**31 - 1, -2**31]))).init(KEY)
    np.testing.assert_array_equal(params["c"], [2**31 - 1, -2**31])
