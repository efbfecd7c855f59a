"""Error messages found wanting by an audit: each speaks of the user's code (their functions, their
carry, their parameter) and says what to do, where it named the library's internals or gave a fix
that does not apply."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
HERE = os.path.basename(__file__)


# --- control flow: JAX's structure errors name the user's functions and carry ----------------------


def true_branch(x):
    return sp.layers.dense(x, 8, name="a")


def false_branch(x):
    return sp.layers.dense(x, 4, name="b")


def test_sp_cond_output_mismatch_names_the_users_branches_not_the_library():
    model = sp.transform(lambda x, f: sp.cond(f, true_branch, false_branch, x))
    with pytest.raises(TypeError) as info:
        model.init(KEY, jnp.ones((2, 3)), jnp.array(True))
    msg = str(info.value)
    assert f"true_fun is true_branch at " in msg and f"false_fun is false_branch at " in msg, msg
    assert HERE in msg and "_control_flow.py" not in msg, msg
    assert "float32[2,8]" in msg and "float32[2,4]" in msg  # JAX's account of the mismatch stays


def test_sp_switch_output_mismatch_names_the_users_branches_not_the_library():
    model = sp.transform(lambda x, i: sp.switch(i, [true_branch, false_branch], x))
    with pytest.raises(TypeError) as info:
        model.init(KEY, jnp.ones((2, 3)), jnp.array(0))
    msg = str(info.value)
    assert "true_branch" in msg and "false_branch" in msg and "_control_flow.py" not in msg, msg


def test_sp_scan_carry_mismatch_uses_the_name_the_users_step_gives_its_carry():
    def fn(xs):
        def step(h, x):
            with sp.scope("cell", reuse=sp.AUTO_REUSE):
                h = sp.layers.dense(x, 8)
            return h, h
        return sp.scan(step, jnp.zeros((2, 4)), xs)

    for apply in (False, True):  # with keys (init) the scan also runs its step counter
        model = sp.transform(fn)
        with pytest.raises(TypeError, match=r"input carry h has type float32\[2,4\]") as info:
            if apply:
                model.apply({"cell": {"dense": {"kernel": jnp.ones((3, 8)), "bias": jnp.ones(8)}}},
                            jnp.ones((5, 2, 3)))
            else:
                model.init(KEY, jnp.ones((5, 2, 3)))
        assert "carry c " not in str(info.value)


def _while_model(carry_name_fn):
    def fn(x):
        return sp.while_loop(lambda carry: carry[0] < 3, carry_name_fn, (0, x))
    return sp.transform(fn)


def test_sp_while_loop_carry_mismatch_paths_are_the_users_carry_without_the_step_counter():
    def body(carry):
        i, h = carry
        with sp.scope("c", reuse=sp.AUTO_REUSE):
            return i + 1, sp.layers.dense(h, 4)  # h changes shape: the user's bug

    x = jnp.ones((2, 3))
    model = _while_model(body)
    # init draws keys (the loop carries a step counter too); apply without rng= does not.
    with pytest.raises(TypeError) as info:
        model.init(KEY, x)
    msg = str(info.value)
    assert "carry component carry[1] has type float32[2,3]" in msg, msg
    assert "[1][1]" not in msg and "c[1]" not in msg, msg
    params = {"c": {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)}}}
    with pytest.raises(TypeError, match=r"carry component carry\[1\] has type float32\[2,3\]"):
        model.apply(params, x)

    def whole(h):  # the carry is one array: JAX's words for that are "the input carry h"
        with sp.scope("c", reuse=sp.AUTO_REUSE):
            return sp.layers.dense(h, 4)

    model = sp.transform(lambda x: sp.while_loop(lambda h: jnp.sum(h) < 3.0, whole, x))
    with pytest.raises(TypeError) as info:
        model.init(KEY, x)
    msg = str(info.value)
    assert "input carry h has type float32[2,3]" in msg and "[1]" not in msg, msg


def test_sp_remat_tracer_errors_name_the_users_function():
    def block(h, n):
        return h.reshape(n)

    with pytest.raises(TypeError) as info:
        # an array argument is traced by jax.checkpoint (a Python 6 reaches block as it is)
        sp.transform(lambda x: sp.remat(block)(x, jnp.array(6))).init(KEY, jnp.ones((2, 3)))
    msg = str(info.value)
    assert "function block at" in msg and "_control_flow.py" not in msg, msg


def test_sp_control_flow_still_computes_with_the_users_functions():
    # The wrappers JAX sees carry the user's names; the values are those of the plain functions.
    def fn(x, f):
        y = sp.cond(f, lambda x: sp.layers.dense(x, 4, name="a"),
                    lambda x: sp.layers.dense(x, 4, name="b"), x)
        y, _ = sp.scan(lambda h, z: (h + z, None), y, jnp.stack([y, y]))
        return sp.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1] * 2.0), (0, y))[1]

    model = sp.transform(fn)
    x = jnp.ones((2, 3))
    params = model.init(KEY, x, jnp.array(True))
    a = params["a"]
    expected = (x @ a["kernel"] + a["bias"]) * 3.0 * 4.0
    np.testing.assert_allclose(model.apply(params, x, jnp.array(True)), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x, jnp.array(True)), expected,
                               rtol=1e-6)


# --- transform_with_state misuse --------------------------------------------------------------------


def _counter(x):
    c = sp.get_state("count", (), init=jax.nn.initializers.zeros)
    sp.set_state("count", c + 1)
    return x


def test_apply_of_a_stateful_model_given_inits_pair_says_to_unpack_it():
    model = sp.transform_with_state(_counter)
    x = jnp.ones((2, 4))
    with pytest.raises(sp.ParamsTypeError) as info:
        model.apply(model.init(KEY, x), x)
    msg = str(info.value)
    assert "tuple of 2 dicts" in msg and "params, state = model.init(key, ...)" in msg, msg
    assert "model.apply(params, state, " in msg, msg


def test_apply_given_a_pair_of_two_key_dicts_is_not_read_as_key_value_pairs():
    # dict(({"a": 1, "b": 2}, {"c": 3, "d": 4})) is {"a": "b", "c": "d"}: never build that.
    model = sp.transform(lambda x: x * sp.get_param("w", (2,)))
    pair = ({"w": jnp.ones(2), "v": jnp.ones(2)}, {"s": jnp.ones(2), "t": jnp.ones(2)})
    with pytest.raises(sp.ParamsTypeError, match=r"tuple of 2 dicts.*\n  fix: .*params, state"):
        model.apply(pair, jnp.ones(2))


def test_set_state_on_a_parameters_name_says_it_is_a_parameter():
    def fn(x):
        with sp.scope("layer"):
            w = sp.get_param("w", (3,))
            sp.set_state("w", w + 1)  # the user tries to update a parameter in place
        return x

    model = sp.transform_with_state(fn)
    x = jnp.ones((2, 4))
    with pytest.raises(sp.StateError) as info:
        model.init(KEY, x)
    msg = str(info.value)
    assert "'layer/w' is a parameter" in msg and "sp.get_param" in msg, msg
    assert "sp.get_state('w'" not in msg, msg  # that would collide with the parameter
    with pytest.raises(sp.StateError, match=r"'layer/w' is a parameter"):
        model.apply({"layer": {"w": jnp.ones(3)}}, {}, x)


def test_set_state_of_a_string_is_a_type_error_saying_it_is_no_array():
    def fn(x):
        sp.get_state("c", (), init=jax.nn.initializers.zeros)
        sp.set_state("c", "abc")
        return x

    model = sp.transform_with_state(fn)
    for call in (lambda: model.init(KEY, 1.0), lambda: model.apply({}, {"c": jnp.zeros(())}, 1.0)):
        with pytest.raises(TypeError, match=r"sp.set_state: the new value of state 'c' is str "
                                            r"'abc', not an array") as info:
            call()
        assert "str96" not in str(info.value) and "fix: " in str(info.value)


# --- a None entry in params ---------------------------------------------------------------------------


def test_apply_with_a_none_parameter_says_it_is_none_not_that_it_does_not_exist():
    def fn(x):
        with sp.scope("dense"):
            w = sp.get_param("w", (x.shape[-1], 3))
            b = sp.get_param("b", (3,), init=jax.nn.initializers.zeros)
        return x @ w + b

    model = sp.transform(fn)
    x = jnp.ones((2, 4))
    params = model.init(KEY, x)
    masked = {"dense": {"w": None, "b": params["dense"]["b"]}}
    with pytest.raises(sp.ParamsTypeError) as info:
        model.apply(masked, x)
    msg = str(info.value)
    assert "'dense/w' in params is None, not an array" in msg, msg
    assert "does not exist" not in msg and "fix: " in msg, msg
    # Through the general path too (a custom getter), and for state.
    getter_model = sp.transform(lambda x: (sp.get_param("w", (2,), custom_getter=lambda g, n, *a,
                                                         **k: g(n, *a, **k))))
    with pytest.raises(sp.ParamsTypeError, match=r"'w' in params is None, not an array"):
        getter_model.apply({"w": None}, x)
    state_model = sp.transform_with_state(_counter)
    with pytest.raises(sp.ParamsTypeError, match=r"'count' in state is None, not an array"):
        state_model.apply({}, {"count": None}, x)


def test_apply_given_none_or_empty_params_says_they_are_empty():
    # apply(None, x) is taken as a model without parameters; one that asks for some was told only
    # "no similar names among the existing names".
    def fn(x):
        with sp.scope("dense"):
            return x @ sp.get_param("w", (x.shape[-1], 3))

    model, x = sp.transform(fn), jnp.ones((2, 4))
    for empty in (None, {}, {"dense": {}}):
        with pytest.raises(sp.ParamNotFoundError, match=r"(?s)found: params holds no arrays \(apply "
                                                        r"was given None, \{\} or empty dicts\), and "
                                                        r"the model asks for 'dense/w'.*fix: pass the"):
            model.apply(empty, x)
    state_model = sp.transform_with_state(_counter)
    with pytest.raises(sp.ParamNotFoundError, match=r"found: state holds no arrays"):
        state_model.apply({}, None, x)
    with pytest.raises(sp.ParamNotFoundError, match=r"found: 'other/w' among the existing names"):
        model.apply({"other": {"w": jnp.ones((4, 3))}}, x)


# --- user callbacks of the wrong signature -----------------------------------------------------------

PARAMS = {"dense": {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}}


@pytest.mark.parametrize("api", ["partition", "filter_tree"])
def test_a_predicate_of_the_wrong_signature_is_told_the_expected_one(api):
    with pytest.raises(TypeError) as info:
        getattr(sp, api)(lambda name: name.endswith("/w"), PARAMS)
    msg = str(info.value)
    assert f"sp.{api}: the predicate" in msg and "predicate(full_name, leaf)" in msg, msg
    assert "takes 1 positional argument but 2 were given" in msg, msg  # Python's own words stay
    assert "fix: " in msg and "lambda name, leaf:" in msg, msg


def test_a_type_error_raised_inside_a_correct_predicate_is_left_as_it_is():
    def predicate(name, leaf):
        return len(leaf) > "3"  # the user's own bug, not a signature problem

    with pytest.raises(TypeError) as info:
        sp.partition(predicate, PARAMS)
    assert "predicate(full_name, leaf)" not in str(info.value)


def test_a_custom_getter_of_the_wrong_signature_is_told_the_parameter_and_the_convention():
    def scoped(x):
        with sp.scope("a", custom_getter=lambda getter, name: getter(name)):
            return x * sp.get_param("w", (2,))

    def nested(x):
        with sp.scope("a", custom_getter=lambda getter, name, *args, **kwargs: getter(
                name, *args, **kwargs)):
            with sp.scope("b", custom_getter=lambda getter, name: getter(name)):
                return x * sp.get_param("w", (2,))

    def outer_bad(x):
        with sp.scope("a", custom_getter=lambda getter: getter):
            with sp.scope("b", custom_getter=lambda getter, name, *args, **kwargs: getter(
                    name, *args, **kwargs)):
                return x * sp.get_param("w", (2,))

    def per_request(x):
        return x * sp.get_param("w", (2,), custom_getter=lambda getter, name: getter(name))

    for fn, full in ((scoped, "a/w"), (nested, "a/b/w"), (outer_bad, "a/b/w"), (per_request, "w")):
        with pytest.raises(TypeError) as info:
            sp.transform(fn).init(KEY, jnp.ones(2))
        msg = str(info.value)
        assert f"The custom getter" in msg and f"'{full}'" in msg, msg
        assert "getter(next_getter, name, *args, **kwargs)" in msg and "fix: " in msg, msg


def test_a_type_error_raised_inside_a_correct_custom_getter_is_left_as_it_is():
    def getter(next_getter, name, *args, **kwargs):
        return next_getter(name, *args, **kwargs) + "oops"

    def fn(x):
        with sp.scope("a", custom_getter=getter):
            return x * sp.get_param("w", (2,))

    with pytest.raises(TypeError) as info:
        sp.transform(fn).init(KEY, jnp.ones(2))
    assert "The custom getter" not in str(info.value)


# --- sp.scope("") -----------------------------------------------------------------------------------


def test_an_empty_scope_at_the_root_is_the_root_scope_as_in_tf():
    # TF 1.x: variable_scope("") at the root names its variables 'w', its scope name is '', it opens
    # no name scope, default names continue the root's numbering, and its options hold inside only.
    def fn(x):
        y = sp.layers.dense(x, 3)
        with sp.scope("") as s:
            assert s.name == "" and sp.get_scope().name == ""
            w = sp.get_param("w", (3,))
            y = sp.layers.dense(y, 3)  # dense_1, as in TF
            with sp.scope("b"):
                v = sp.get_param("v", (3,))
        with sp.scope("", reuse=True, initializer=jax.nn.initializers.ones) as r:
            assert r.reuse is True
            w2 = sp.get_param("w", (3,))
        with sp.scope("", initializer=jax.nn.initializers.ones):
            u = sp.get_param("u", (3,))
        return y * w * v * w2 * u

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones((2, 3)))
    assert set(sp.flatten(params)) == {"dense/kernel", "dense/bias", "w", "dense_1/kernel",
                                       "dense_1/bias", "b/v", "u"}
    np.testing.assert_array_equal(params["u"], jnp.ones(3))
    out = model.apply(params, jnp.ones((2, 3)))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(jax.jit(model.apply)(params, jnp.ones((2, 3))), out)


def test_an_empty_scope_inside_a_scope_is_refused_saying_why_and_what_to_do():
    def fn(x):
        with sp.scope("a"):
            with sp.scope(""):
                return x * sp.get_param("w", (2,))

    with pytest.raises(sp.InvalidNameError) as info:
        sp.transform(fn).init(KEY, jnp.ones(2))
    msg = str(info.value)
    assert "sp.scope('') inside scope 'a'" in msg and "'a//<name>'" in msg, msg
    assert "drop the leading, trailing or doubled" not in msg and "fix: " in msg, msg
    with pytest.raises(sp.InvalidNameError, match=r"(?s)empty.*asked: sp.scope\(None, "
                                                  r"default_name=''\).*fix: "):
        with_default = sp.transform(lambda x: sp.scope(None, default_name="").__enter__())
        with_default.init(KEY, jnp.ones(2))


def test_unflatten_refuses_a_full_name_with_an_empty_component():
    for name in ("a//b", "/a", "a/", ""):
        with pytest.raises(sp.InvalidNameError, match=rf"(?s)'{name}' is not a valid full name: "
                                                      r".*empty.*fix: "):
            sp.unflatten({name: jnp.ones(2)})
    assert sp.unflatten({"a/b": 1, "a/c": 2, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}


# --- specs, initializers -----------------------------------------------------------------------------


def test_specs_given_a_key_first_says_specs_takes_the_models_arguments_only():
    model = sp.transform(lambda x: x @ sp.get_param("w", (x.shape[-1], 2)))
    for key in (KEY, jax.random.PRNGKey(0)):
        with pytest.raises(TypeError) as info:
            model.specs(key, jnp.ones((1, 3)))
        msg = str(info.value)
        assert "takes 1 positional argument but 2 were given" in msg, msg
        assert "model.specs(*args)" in msg and "no key" in msg, msg
    with pytest.raises(TypeError) as info:  # no key: the model's own error, unchanged
        model.specs(jnp.ones((1, 3)), jnp.ones((1, 3)))
    assert "no key" not in str(info.value)


def test_an_initializer_returning_numpy_gives_jax_arrays_in_params():
    def fn():
        return sp.get_param("w", (2, 3), init=lambda key, shape, dtype: np.ones(shape, dtype))

    params = sp.transform(fn).init(KEY)
    assert isinstance(params["w"], jax.Array)
    np.testing.assert_array_equal(params["w"], np.ones((2, 3)))
