"""API.md sections 1-3 beyond the TF rules: state, rng, regularization, record, specs, tree helpers,
abstract init and the error contract."""

import dataclasses
import inspect
from collections.abc import Mapping
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import scoped_params as sp
from scoped_params._materialize import param_key

KEY = jax.random.key(0)
THIS_FILE = os.path.basename(__file__)


def paths(tree):
    return set(sp.flatten(tree))


def here():
    """The caller's line number."""
    return inspect.currentframe().f_back.f_lineno


# --- get_state / set_state ------------------------------------------------------------------------


def _counter_model():
    def fn(x):
        with sp.scope("bn"):
            count = sp.get_state("count", [], init=sp.initializers.zeros, dtype=jnp.int32)
            mean = sp.get_state("mean", [3], init=sp.initializers.zeros)
            sp.set_state("count", count + 1)
            sp.set_state("mean", 0.9 * mean + 0.1 * x)
            sp.get_scope().reuse_variables()
            return sp.get_state("mean") * 2.0  # reads this call's write
    return sp.transform_with_state(fn)


def test_state_lives_apart_from_params_and_set_state_updates_it():
    model = _counter_model()
    x = jnp.array([1.0, 2.0, 3.0])
    params, state = model.init(KEY, x)
    assert params == {}
    assert paths(state) == {"bn/count", "bn/mean"}
    np.testing.assert_array_equal(state["bn"]["mean"], np.zeros(3))  # init never runs set_state
    out, new_state = model.apply(params, state, x)
    np.testing.assert_allclose(new_state["bn"]["mean"], 0.1 * np.asarray(x), rtol=1e-6)
    np.testing.assert_allclose(out, 0.2 * np.asarray(x), rtol=1e-6)
    assert int(new_state["bn"]["count"]) == 1
    _, newer = jax.jit(model.apply)(params, new_state, x)
    assert int(newer["bn"]["count"]) == 2
    np.testing.assert_allclose(newer["bn"]["mean"], 0.19 * np.asarray(x), rtol=1e-6)
    assert int(state["bn"]["count"]) == 0  # apply is pure


def test_get_state_under_plain_transform_is_a_state_error():
    model = sp.transform(lambda: sp.get_state("s", [], init=sp.initializers.zeros))
    with pytest.raises(RuntimeError, match=r"sp.get_state\('s'\) needs a stateful transform") as e:
        model.init(KEY)
    assert isinstance(e.value, sp.StateError)
    assert "sp.transform_with_state(fn)" in str(e.value)


def test_set_state_under_plain_transform_is_a_state_error():
    model = sp.transform(lambda: sp.set_state("s", 1.0))
    with pytest.raises(sp.StateError, match=r"sp.set_state\('s'\) needs a stateful transform"):
        model.init(KEY)


def test_set_state_before_get_state_is_an_error():
    def fn():
        with sp.scope("a"):
            sp.set_state("s", jnp.zeros(()))

    with pytest.raises(sp.StateError, match="state 'a/s' was not declared in this call") as e:
        sp.transform_with_state(fn).init(KEY)
    assert "sp.get_state('s', shape, init)" in str(e.value)


def test_set_state_with_a_new_shape_is_an_error():
    def fn():
        sp.get_state("s", [2], init=sp.initializers.zeros)
        sp.set_state("s", jnp.zeros(3))

    with pytest.raises(ValueError, match=r"state 's' holds shape \(2,\) dtype float32, but the new "
                                         r"value has shape \(3,\)"):
        sp.transform_with_state(fn).init(KEY)


def test_set_state_with_a_new_dtype_only_is_a_dtype_mismatch_error():
    def fn():
        sp.get_state("s", [4], init=sp.initializers.zeros)
        sp.set_state("s", jnp.zeros(4, jnp.int32))

    with pytest.raises(sp.DtypeMismatchError, match=r"state 's' holds shape \(4,\) dtype float32, but the "
                                                    r"new value has shape \(4,\) dtype int32") as e:
        sp.transform_with_state(fn).init(KEY)
    assert "fix: cast/reshape the value to the declared shape and dtype" in str(e.value)


def test_get_state_and_set_state_refuse_a_non_string_name_naming_the_function_called():
    # Before: set_state(3, v) failed inside the library with Python's "can only concatenate str
    # (not "int") to str", and get_state(3, ()) said "get_param: name must be a string".
    def declare_then_set():
        sp.get_state("count", (), init=sp.initializers.zeros)
        sp.set_state(3, jnp.zeros(()))

    model = sp.transform_with_state(declare_then_set)
    for call in (lambda: model.init(KEY), lambda: model.apply({}, {"count": jnp.zeros(())})):
        with pytest.raises(TypeError, match=r"sp.set_state: name must be a string, got int \(3\)") as e:
            call()
        assert "fix: pass the name as a string, e.g. sp.set_state('3', ...)" in str(e.value)
    model = sp.transform_with_state(lambda: sp.get_state(3, ()))
    for call in (lambda: model.init(KEY), lambda: model.apply({}, {})):
        with pytest.raises(TypeError, match=r"sp.get_state: name must be a string, got int \(3\)"):
            call()


def test_apply_with_a_state_entry_missing_speaks_of_get_state_and_the_state_argument():
    model = sp.transform_with_state(lambda: sp.get_state("s", (4,), init=sp.initializers.zeros))
    params, state = model.init(KEY)
    with pytest.raises(sp.ParamNotFoundError) as e:
        model.apply(params, {})
    msg = str(e.value)
    assert msg.startswith("Variable s does not exist, or was not created with get_state().")
    assert "asked: 's' in apply, but state has no such entry" in msg
    assert ("fix: pass the state this model's init returned (re-run init after changing the model), "
            "or check the name") in msg
    assert "get_param()" not in msg and "params" not in msg


def test_apply_with_params_and_state_swapped_says_the_arguments_look_swapped():
    def fn(x):
        mean = sp.get_state("mean", (3,), init=sp.initializers.zeros)
        return x @ sp.get_param("w", (3, 2)) + mean[:2]

    model = sp.transform_with_state(fn)
    x = jnp.ones((1, 3))
    params, state = model.init(KEY, x)
    for run in (lambda: model.apply(state, params, x), lambda: jax.jit(model.apply)(state, params, x)):
        with pytest.raises(sp.ParamNotFoundError) as e:
            run()
        msg = str(e.value)
        assert "apply's params and state arguments look swapped" in msg
        assert "found: 'mean' in the params argument" in msg
        assert "fix: call model.apply(params, state, *args) in that order" in msg


def test_state_and_param_share_one_namespace():
    def fn():
        sp.get_param("v", [])
        with sp.scope(sp.get_scope(), reuse=True):
            sp.get_state("v", [])

    with pytest.raises(ValueError, match="'v' is a param but was requested as a state"):
        sp.transform_with_state(fn).init(KEY)


def test_state_outside_a_transform_is_an_error():
    with pytest.raises(RuntimeError, match=r"sp.get_state\(\) was called outside"):
        sp.get_state("s", [])
    with pytest.raises(RuntimeError, match=r"sp.set_state\(\) was called outside"):
        sp.set_state("s", 1.0)


def test_apply_of_stateful_model_needs_state_argument():
    model = _counter_model()
    with pytest.raises(TypeError, match=r"takes \(params, state, \*args\)"):
        model.apply({})


# --- next_rng_key ---------------------------------------------------------------------------------


def _dropout_model():
    def fn(x):
        k1, k2 = sp.next_rng_key(), sp.next_rng_key()
        return x * jax.random.bernoulli(k1, 0.5, x.shape), jax.random.normal(k2, x.shape)
    return sp.transform(fn)


def test_next_rng_key_is_deterministic_in_rng_and_fresh_per_call():
    model = _dropout_model()
    x = jnp.ones(64)
    params = model.init(KEY, x)
    a1, n1 = model.apply(params, x, rng=jax.random.key(1))
    a2, n2 = model.apply(params, x, rng=jax.random.key(1))
    b1, _ = model.apply(params, x, rng=jax.random.key(2))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(n1, n2)
    assert not np.array_equal(a1, b1)
    expected = jax.random.normal(jax.random.fold_in(jax.random.key(1), 1), x.shape)
    np.testing.assert_array_equal(n1, expected)
    jitted, _ = jax.jit(model.apply)(params, x, rng=jax.random.key(1))
    np.testing.assert_array_equal(jitted, a1)


def test_next_rng_key_without_rng_is_a_missing_rng_error():
    model = _dropout_model()
    x = jnp.ones(4)
    params = model.init(KEY, x)  # init supplies its own key
    with pytest.raises(RuntimeError, match="apply was called without rng=") as e:
        model.apply(params, x)
    assert isinstance(e.value, sp.MissingRngError)
    assert "model.apply(params, x, rng=jax.random.key(step))" in str(e.value)


def test_next_rng_key_outside_a_transform_is_an_error():
    with pytest.raises(sp.NotInTransformError, match=r"sp.next_rng_key\(\) was called outside"):
        sp.next_rng_key()


def test_apply_rng_that_is_no_key_is_a_type_error_naming_rng_and_the_fix():
    model = _dropout_model()
    x = jnp.ones(4)
    params = model.init(KEY, x)
    for rng in (3.0, jnp.ones((2, 3)), "key"):  # (an int is a seed: see the test below)
        with pytest.raises(TypeError, match=r"apply's rng= must be a JAX random key") as e:
            model.apply(params, x, rng=rng)
        assert isinstance(e.value, sp.ScopedParamsError)
        assert "fix: pass a key, e.g. model.apply(params, x, rng=jax.random.key(step))" in str(e.value)
        assert "impl=PRNGImpl" not in str(e.value)
    for rng in (jax.random.key(1), jax.random.PRNGKey(1), np.asarray(jax.random.PRNGKey(1))):
        model.apply(params, x, rng=rng)  # a typed key, a raw uint32[2] key (JAX's or NumPy's)


def test_apply_takes_an_int_seed_for_rng_as_init_takes_one_for_its_key():
    # Haiku's apply takes rng=0 too; before, KeyArgumentError at the first sp.next_rng_key().
    model = _dropout_model()
    x = jnp.ones(64)
    params = model.init(0, x)
    expected = model.apply(params, x, rng=jax.random.key(5))
    for seed in (5, np.int64(5), jnp.int32(5), jnp.uint32(5)):
        for apply in (model.apply, jax.jit(model.apply)):  # jit: a traced seed
            out = apply(params, x, rng=seed)
            for a, b in zip(out, expected):  # both keys (the second uses the converted seed too)
                np.testing.assert_array_equal(a, b)


def test_init_without_a_key_is_a_type_error_naming_init_s_key_argument():
    model = sp.transform(lambda x: x @ sp.get_param("w", (3, 2)))
    x = jnp.ones((2, 3))
    for key in (x, "key", [0, 1], jax.random.split(KEY, 2)):
        with pytest.raises(TypeError, match=r"model.init's first argument is the random key") as e:
            model.init(key)
        msg = str(e.value)
        assert isinstance(e.value, sp.ScopedParamsError)
        assert "fix: pass the key first: model.init(jax.random.key(0), *args)" in msg
        assert "impl=PRNGImpl" not in msg
    assert model.init(jax.random.PRNGKey(0), x)["w"].shape == (3, 2)  # a raw uint32[2] key
    assert jax.jit(model.init)(KEY, x)["w"].shape == (3, 2)


def test_state_and_transform_signatures_are_the_documented_ones():
    # API.md: get_state(name, shape=None, init=None, dtype=None), set_state(name, value),
    # init(key, *args, **kwargs), apply(params, *args, rng=None, **kwargs). init's key and apply's
    # params are positional-only, so that a model keyword of that name reaches the model.
    P, empty = inspect.Parameter, inspect.Parameter.empty

    def parameters(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert parameters(sp.get_state) == [("name", P.POSITIONAL_OR_KEYWORD, empty),
                                        ("shape", P.POSITIONAL_OR_KEYWORD, None),
                                        ("init", P.POSITIONAL_OR_KEYWORD, None),
                                        ("dtype", P.POSITIONAL_OR_KEYWORD, None)]
    assert parameters(sp.set_state) == [("name", P.POSITIONAL_OR_KEYWORD, empty),
                                        ("value", P.POSITIONAL_OR_KEYWORD, empty)]
    for model in (sp.transform(lambda: None), sp.transform_with_state(lambda: None)):
        assert parameters(model.init) == [("key", P.POSITIONAL_ONLY, empty),
                                          ("args", P.VAR_POSITIONAL, empty),
                                          ("kwargs", P.VAR_KEYWORD, empty)]
        for apply in (model.apply, model.apply_with_intermediates):
            assert parameters(apply) == [("params", P.POSITIONAL_ONLY, empty),
                                         ("args", P.VAR_POSITIONAL, empty),
                                         ("rng", P.KEYWORD_ONLY, None),
                                         ("kwargs", P.VAR_KEYWORD, empty)]


def test_model_kwargs_named_params_or_key_reach_fn():
    # TF 1.x's Estimator calls model_fn(features, labels, mode, params) with params=...; before,
    # apply(p, ..., params=hparams) was "got multiple values for argument 'params'" (and init's key
    # collided the same way).
    def model_fn(features, labels, mode, params):
        assert labels is None and mode == "train"
        return features @ sp.get_param("w", (features.shape[-1], params["units"]))

    x = jnp.ones((2, 3))
    model = sp.transform(model_fn)
    p = model.init(KEY, x, None, "train", params={"units": 4})
    assert p["w"].shape == (3, 4)
    out = model.apply(p, x, None, "train", params={"units": 4})
    np.testing.assert_allclose(out, x @ p["w"], rtol=1e-6)
    with_records, records = model.apply_with_intermediates(p, x, None, "train", params={"units": 4})
    np.testing.assert_array_equal(with_records, out)
    assert records == {}

    def needs_key(x, key):
        return x * sp.get_state("scale", (), init=sp.initializers.ones) + key

    stateful = sp.transform_with_state(needs_key)
    p, state = stateful.init(KEY, x, key=1.0)
    out, _ = stateful.apply(p, state, x, key=1.0)
    np.testing.assert_array_equal(out, x + 1.0)
    (out, _), _ = stateful.apply_with_intermediates(p, state, x, key=2.0)
    np.testing.assert_array_equal(out, x + 2.0)


def test_init_refuses_rng_which_apply_keeps_for_itself():
    # apply's rng= is its own (the key of sp.next_rng_key) and never reaches the model; before, init
    # passed rng= to the model, so init and apply of one program saw different arguments.
    def fn(x, rng=None):
        return x * sp.get_param("w", (), init=sp.initializers.ones)

    model = sp.transform(fn)
    x = jnp.ones(2)
    for call in (lambda: model.init(KEY, x, rng=KEY), lambda: model.specs(x, rng=KEY)):
        with pytest.raises(sp.KeyArgumentError, match=r"rng= is apply's own keyword \(the key "
                                                      r"sp.next_rng_key\(\) draws from\)") as e:
            call()
        assert isinstance(e.value, TypeError)
        assert "if the model takes a keyword argument named rng, rename it" in str(e.value)
    assert "model.init(key, *args" in str(pytest.raises(sp.KeyArgumentError, model.init, KEY, x,
                                                         rng=KEY).value)


# --- regularization_loss --------------------------------------------------------------------------


def _regularized_model():
    def fn(x):
        with sp.scope("dense", regularizer=sp.l2_regularizer(0.5)):
            w = sp.get_param("w", [3, 2])
        with sp.scope("dense", reuse=True):
            sp.get_param("w", [3, 2])  # a reuse adds no second term
        b = sp.get_param("b", [2], init=sp.initializers.ones, regularizer=sp.l1_regularizer(2.0))
        return x @ w + b, sp.regularization_loss()
    return sp.transform(fn)


def test_regularization_loss_is_computed_from_this_calls_values():
    model = _regularized_model()
    x = jnp.ones((1, 3))
    params = model.init(KEY, x)
    w = params["dense"]["w"]
    _, loss = model.apply(params, x)
    assert float(loss) == pytest.approx(0.25 * float(jnp.sum(w ** 2)) + 4.0, rel=1e-6)
    other = jax.tree_util.tree_map(lambda p: 3.0 * p, params)
    _, loss3 = model.apply(other, x)
    assert float(loss3) == pytest.approx(0.25 * float(jnp.sum((3 * w) ** 2)) + 12.0, rel=1e-5)


def test_regularization_loss_is_differentiable():
    model = _regularized_model()
    x = jnp.ones((1, 3))
    params = model.init(KEY, x)
    grads = jax.grad(lambda p: model.apply(p, x)[1])(params)
    np.testing.assert_allclose(grads["dense"]["w"], 0.5 * params["dense"]["w"], rtol=1e-6)
    np.testing.assert_allclose(grads["b"], 2.0 * np.ones(2), rtol=1e-6)


def test_regularization_loss_is_zero_without_regularizers():
    model = sp.transform(lambda: (sp.get_param("w", [2]), sp.regularization_loss())[1])
    assert float(model.apply(model.init(KEY))) == 0.0


def test_regularization_loss_counts_only_params_fetched_so_far():
    def fn():
        reg = sp.l1_regularizer(1.0)
        sp.get_param("a", init=jnp.array(1.0), regularizer=reg)
        first = sp.regularization_loss()
        sp.get_param("b", init=jnp.array(-2.0), regularizer=reg)
        return first, sp.regularization_loss()

    model = sp.transform(fn)
    first, total = model.apply(model.init(KEY))
    assert (float(first), float(total)) == (1.0, 3.0)


def test_a_stock_regularizer_on_an_integer_parameter_is_a_type_error_naming_it_at_creation():
    # TF 1.x: get_variable("count", [3], tf.int32) under variable_scope(regularizer=
    # l2_regularizer(0.5)) raises TypeError: Expected int32, but got 0.5 of type 'float'.
    # Before: accepted, and sp.regularization_loss() silently added 3.0.
    def fn(regularizer):
        with sp.scope("s", regularizer=regularizer):
            sp.get_param("count", (3,), dtype=jnp.int32, init=lambda k, s, d: jnp.full(s, 2, d))
        return sp.regularization_loss()

    for regularizer, shown in ((sp.l2_regularizer(0.5), r"l2_regularizer\(0.5\)"),
                               (sp.l1_regularizer(0.5), r"l1_regularizer\(0.5\)"),
                               (sp.slim.l1_l2_regularizer(0.5, 0.25), r"l1_l2_regularizer\(0.5, 0.25\)")):
        with pytest.raises(TypeError, match=rf"(?s)The regularizer of 's/count', {shown}, adds a term "
                                            r"for floating-point parameters only, and 's/count' is "
                                            r"int32 \(TF 1.x: Expected int32, but got 0.5 of type "
                                            r"'float'\).*fix: .*regularizer=sp.no_regularizer"):
            sp.transform(fn).init(KEY, regularizer)
    # Switched off per parameter, or a user's regularizer (never run at init): as TF.
    model = sp.transform(fn)
    assert float(model.apply(model.init(KEY, sp.no_regularizer), sp.no_regularizer)) == 0.0
    user = lambda w: jnp.sum(w).astype(jnp.float32)  # noqa: E731
    assert float(model.apply(model.init(KEY, user), user)) == 6.0


def test_a_stock_regularizer_called_on_integer_weights_is_a_type_error():
    with pytest.raises(TypeError, match=r"(?s)l2_regularizer\(0.5\) adds a term for floating-point "
                                        r"weights only, got int32 weights \(TF 1.x: Expected int32, "
                                        r"but got 0.5 of type 'float'\).*fix: "):
        sp.l2_regularizer(0.5)(jnp.arange(3, dtype=jnp.int32))
    with pytest.raises(TypeError, match=r"l1_regularizer\(0.5\) adds a term for floating-point weights "
                                        r"only, got bool weights"):
        sp.slim.sum_regularizer([sp.l1_regularizer(0.5)])(jnp.ones(2, bool))


def test_a_regularizers_term_has_the_weights_dtype_whatever_the_scales_type():
    # TF converts the scale to the weights' dtype (convert_to_tensor(scale, dtype=weights.dtype)).
    # Before: a NumPy float32 scale made a bfloat16 parameter's term float32, and a
    # TypePromotionError under jax_numpy_dtype_promotion("strict").
    w = jnp.array([1.0, -2.0], jnp.bfloat16)
    for scale in (0.5, np.float32(0.5), np.float64(0.5), jnp.float32(0.5)):
        l2, l1 = sp.l2_regularizer(scale)(w), sp.l1_regularizer(scale)(w)
        assert (l2.dtype, float(l2)) == (jnp.bfloat16, 1.25)
        assert (l1.dtype, float(l1)) == (jnp.bfloat16, 1.5)
        with jax.numpy_dtype_promotion("strict"):
            assert sp.slim.l1_l2_regularizer(scale, scale)(w).dtype == jnp.bfloat16


# --- record / apply_with_intermediates ------------------------------------------------------------


def test_record_returns_values_under_name_scope_via_apply_with_intermediates():
    def fn(x):
        with sp.scope("conv1"):
            h = x * sp.get_param("w", init=2.0)
            sp.record("pre", h)
            with sp.name_scope("act"):
                h = jax.nn.relu(h)
                sp.record("out", h)
                sp.record("out", h + 1)
        sp.record("final", h)
        return h

    model = sp.transform(fn)
    x = jnp.array([-1.0, 1.0])
    params = model.init(KEY, x)
    out, inter = model.apply_with_intermediates(params, x)
    assert set(inter) == {"conv1/pre", "conv1/act/out", "conv1/act/out_1", "final"}
    np.testing.assert_array_equal(inter["conv1/pre"], [-2.0, 2.0])
    np.testing.assert_array_equal(inter["conv1/act/out"], [0.0, 2.0])
    np.testing.assert_array_equal(inter["conv1/act/out_1"], [1.0, 3.0])
    np.testing.assert_array_equal(out, model.apply(params, x))
    _, jitted = jax.jit(model.apply_with_intermediates)(params, x)
    np.testing.assert_array_equal(jitted["conv1/act/out"], [0.0, 2.0])


def test_record_names_follow_tfs_unique_name_never_overwriting_a_recorded_value():
    # TF's Graph.unique_name: a taken suffix is skipped ("a_1" recorded first, then "a" twice gives
    # a, a_2), and names differing only in case collide (B, then b_1).
    def fn(x):
        for name, value in (("a_1", 1.0), ("a", 2.0), ("a", 3.0), ("B", 4.0), ("b", 5.0)):
            sp.record(name, x + value)
        return x

    _, inter = sp.transform(fn).apply_with_intermediates({}, jnp.zeros(()))
    assert {k: float(v) for k, v in inter.items()} == {"a_1": 1.0, "a": 2.0, "a_2": 3.0, "B": 4.0,
                                                       "b_1": 5.0}


def test_record_in_plain_apply_keeps_nothing_and_changes_nothing():
    def fn(x):
        sp.record("x", x)
        return x + 1

    model = sp.transform(fn)
    np.testing.assert_array_equal(model.apply({}, jnp.ones(2)), [2.0, 2.0])


def test_apply_with_intermediates_of_a_stateful_model():
    def fn(x):
        s = sp.get_state("s", [], init=sp.initializers.zeros)
        sp.set_state("s", s + 1)
        sp.record("x", x)
        return x

    model = sp.transform_with_state(fn)
    params, state = model.init(KEY, jnp.ones(()))
    (out, new_state), inter = model.apply_with_intermediates(params, state, jnp.float32(5.0))
    assert float(out) == 5.0 and float(new_state["s"]) == 1.0 and float(inter["x"]) == 5.0


def _records(*names, name_scope=None):
    def fn(x):
        with sp.name_scope(name_scope):
            for i, name in enumerate(names):
                sp.record(name, x + i)
        return x

    return {k: float(v) for k, v in sp.transform(fn).apply_with_intermediates({}, jnp.zeros(()))[1].items()}


def test_record_names_a_value_as_tfs_identity_op_would():
    # tf.identity(x, name=None) and name="" are named "Identity"; a name ending in "/" is absolute
    # ("s/" is "s", whatever the name scope), as TF's op names. Before: AttributeError for None,
    # and "s/" was recorded as "s/" or "ns/s/".
    assert _records(None, "", "s/") == {"Identity": 0.0, "Identity_1": 1.0, "s": 2.0}
    assert _records(None, "t/", "t/", "-x", name_scope="ns") == {"ns/Identity": 0.0, "t": 1.0,
                                                                  "t_1": 2.0, "ns/-x": 3.0}


def test_an_absolute_record_name_is_taken_as_given_and_counts_for_no_later_name_as_tfs():
    # TF's create_op takes a name ending in "/" as it is: not uniquified against a name scope or a
    # name of another case, nor entered in the table of names in use (checked against TF 1.x:
    # ['ns', 'r', 'R'] and ['r', 'R']). Before: 'ns_1', 'R_1' (case-insensitive, against scopes).
    def fn(x):
        with sp.name_scope("ns"):
            pass
        for i, name in enumerate(["ns/", "r", "R/", "q/", "Q"]):
            sp.record(name, x + i)
        return x

    records = sp.transform(fn).apply_with_intermediates({}, jnp.zeros(()))[1]
    assert {k: float(v) for k, v in records.items()} == {"ns": 0.0, "r": 1.0, "R": 2.0, "q": 3.0,
                                                         "Q": 4.0}
    # a name recorded exactly again is TF's "Duplicate node name": here the first free suffix
    assert _records("q/", "q", "q/") == {"q": 0.0, "q_1": 1.0, "q_2": 2.0}


def test_record_refuses_names_tf_and_sp_name_scope_refuse():
    # Before: record(3, x) failed with AttributeError 'int' object has no attribute 'lower', and
    # "bad name" or "-x" were recorded. TF: TypeError, and ValueError "not a valid root scope name".
    with pytest.raises(TypeError, match=r"(?s)sp.record: the name must be a string \(or None for "
                                        r"TF's default name 'Identity'\), got int 3.*fix: pass a "
                                        r"string, e.g. sp.record\('3', value\)"):
        _records(3)
    for name in ("bad name", "-x", "_x", "a:b"):
        with pytest.raises(sp.InvalidNameError, match=rf"(?s)'{name}' is not a valid root scope name.*"
                                                      rf"asked: sp.record\('{name}', value\)"):
            _records(name)
    with pytest.raises(sp.InvalidNameError, match=r"'bad name' is not a valid scope name"):
        _records("bad name", name_scope="ns")


def test_record_refuses_a_non_string_name_in_init_and_plain_apply_too():
    # Before: only apply_with_intermediates refused sp.record(3, x); init and apply let it pass, so
    # the bug surfaced only when someone asked for the intermediates. None stays TF's "Identity".
    model = sp.transform(lambda x: sp.record(3, x) or x)
    x = jnp.ones(2)
    for call in (lambda: model.init(KEY, x), lambda: model.apply({}, x),
                 lambda: model.apply_with_intermediates({}, x)):
        with pytest.raises(TypeError, match=r"sp.record: the name must be a string \(or None for "
                                            r"TF's default name 'Identity'\), got int 3"):
            call()
    np.testing.assert_array_equal(sp.transform(lambda x: sp.record(None, x) or x).apply({}, x), x)


# --- specs ----------------------------------------------------------------------------------------


def test_specs_allocate_nothing_and_carry_all_metadata():
    reg = sp.l2_regularizer(1.0)
    pspec = jax.sharding.PartitionSpec("model", None)

    def fn(x):
        with sp.scope("big"):
            w = sp.get_param("w", [x.shape[-1], 200_000], trainable=False, collections=["frozen"],
                             regularizer=reg, sharding=pspec)
        return x @ w

    model = sp.transform(fn)
    x = jax.ShapeDtypeStruct((2, 100_000), jnp.float32)  # w would be 80 GB
    specs = model.specs(x)
    spec = specs["big"]["w"]
    assert isinstance(spec, sp.ParamSpec)
    assert spec.name == "big/w" and spec.shape == (100_000, 200_000) and spec.dtype == np.float32
    assert spec.trainable is False and spec.collections == ("frozen",)
    assert spec.regularizer is reg and spec.sharding == pspec
    assert spec.nbytes == 100_000 * 200_000 * 4
    assert spec.site[0].endswith(THIS_FILE)


def test_a_spec_made_by_init_is_a_frozen_param_spec_with_every_field_set():
    reg = sp.l2_regularizer(1.0)
    constraint = sp.constraints.non_neg()

    def fn(x):
        with sp.scope("d"):
            return x @ sp.get_param("w", (3, 2), regularizer=reg, constraint=constraint)

    spec = sp.flatten(sp.transform(fn).specs(jnp.ones((1, 3))))["d/w"]
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(sp.ParamSpec)}
    assert set(vars(spec)) == set(fields)  # init builds its specs without the dataclass __init__
    made = sp.ParamSpec(**fields)
    assert all(getattr(made, name) is value or getattr(made, name) == value
               for name, value in fields.items())
    assert repr(spec) == repr(made) == "ParamSpec('d/w', shape=(3, 2), dtype=float32)"
    assert spec.regularizer is reg and spec.constraint is constraint and spec.kind == "param"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.shape = (4, 2)
    assert dataclasses.replace(spec, shape=(4, 2)).shape == (4, 2) and spec.shape == (3, 2)


def test_init_placeholders_are_the_avals_jax_makes_in_and_out_of_a_mesh_context():
    seen = []

    def fn(x):
        w = sp.get_param("w", (x.shape[-1], 2), dtype=jnp.bfloat16)
        seen.append((jax.typeof(w), jax.core.ShapedArray((3, 2), jnp.bfloat16)))
        return x @ w.astype(x.dtype)

    model = sp.transform(fn)
    x = jnp.ones((1, 3))
    model.init(0, x)
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((1,), ("batch",))):
        params = model.init(1, x)
    assert params["w"].shape == (3, 2) and params["w"].dtype == jnp.bfloat16
    assert len(seen) == 2
    for placeholder, made_here in seen:  # init's cached avals are those JAX makes in the context
        assert placeholder == made_here and placeholder.sharding == made_here.sharding


def test_specs_tree_has_the_structure_of_params():
    def fn(x):
        with sp.scope("a"):
            sp.get_param("w", [x.shape[0], 2])
            with sp.scope("b"):
                sp.get_param("v", [], dtype=jnp.int32)

    model = sp.transform(fn)
    x = jnp.ones(3)
    params, specs = model.init(KEY, x), model.specs(x)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(specs)
    same = jax.tree_util.tree_map(lambda p, s: p.shape == s.shape and p.dtype == s.dtype,
                                  params, specs)
    assert jax.tree_util.tree_leaves(same) == [True, True]


def test_specs_of_stateful_model_split_params_and_state():
    def fn():
        sp.get_param("w", [2])
        sp.get_state("s", [3], init=sp.initializers.zeros)

    pspecs, sspecs = sp.transform_with_state(fn).specs()
    assert paths(pspecs) == {"w"} and paths(sspecs) == {"s"}
    assert sspecs["s"].kind == "state" and pspecs["w"].kind == "param"


# --- tree helpers ---------------------------------------------------------------------------------


def _mixed_model():
    def fn():
        with sp.scope("foo"):
            sp.get_param("w", [])
            sp.get_param("moving", [], trainable=False, collections=["ema", "stats"])
        with sp.scope("foo_1"):
            sp.get_param("w", [], collections=["ema"])
        with sp.scope("bar"):
            with sp.scope("foo"):
                sp.get_param("w", [])
    return sp.transform(fn)


def test_partition_trainable_splits_by_the_trainable_flag_and_merge_recombines():
    model = _mixed_model()
    params, specs = model.init(KEY), model.specs()
    trainable, frozen = sp.partition_trainable(params, specs)
    assert paths(trainable) == {"foo/w", "foo_1/w", "bar/foo/w"}
    assert paths(frozen) == {"foo/moving"}
    merged = sp.merge(trainable, frozen)
    assert sp.flatten(merged) == sp.flatten(params)


def test_partition_by_collection():
    model = _mixed_model()
    params, specs = model.init(KEY), model.specs()
    ema, rest = sp.partition_by_collection(params, specs, "ema")
    assert paths(ema) == {"foo/moving", "foo_1/w"}
    assert paths(rest) == {"foo/w", "bar/foo/w"}
    stats, _ = sp.partition_by_collection(params, specs, "stats")
    assert paths(stats) == {"foo/moving"}


def test_collections_given_as_one_string_is_an_error_as_in_tf_not_a_tuple_of_its_letters():
    model = sp.transform(lambda: sp.get_param("w", [2], collections="ema_vars"))
    with pytest.raises(ValueError, match=r"collections for 'w' must be a list, tuple or set of "
                                         r"collection names, got 'ema_vars' of type str") as e:
        model.init(KEY)
    assert "fix: collections=['ema_vars']" in str(e.value)
    specs = sp.transform(lambda: sp.get_param("w", [2], collections={"ema_vars"})).specs()
    assert specs["w"].collections == ("ema_vars",)


def test_partition_trainable_with_params_missing_from_specs_is_a_key_error():
    with pytest.raises(KeyError, match="'extra' is in params but not in specs"):
        sp.partition_trainable({"extra": jnp.zeros(())}, {})


def test_select_and_partition_by_scope_use_a_literal_prefix():
    params = _mixed_model().init(KEY)
    assert paths(sp.select(params, "foo")) == {"foo/w", "foo/moving"}
    inside, outside = sp.partition_by_scope(params, "foo")
    assert paths(inside) == {"foo/w", "foo/moving"}
    assert paths(outside) == {"foo_1/w", "bar/foo/w"}
    assert paths(sp.select(params, "bar/foo")) == {"bar/foo/w"}
    assert paths(sp.select(params, "fo")) == set()
    assert paths(sp.select(params, "foo/w")) == {"foo/w"}


def test_flatten_and_unflatten_round_trip_full_names():
    tree = {"image_filters": {"conv1": {"weights": 1, "biases": 2}, "conv2": {"weights": 3}}, "g": 4}
    flat = sp.flatten(tree)
    assert flat == {"image_filters/conv1/weights": 1, "image_filters/conv1/biases": 2,
                    "image_filters/conv2/weights": 3, "g": 4}
    assert sp.unflatten(flat) == tree


_COMPONENT = st.sampled_from(["foo", "foo_1", "fo", "f.o", "bar", "w", "b"])
_FULL_NAMES = st.lists(st.lists(_COMPONENT, min_size=1, max_size=4).map("/".join), max_size=12)


def _prefix_free(names):
    """Drop names that would be both a leaf and a scope (not a valid params tree)."""
    names = sorted(set(names), key=len)
    kept = []
    for n in names:
        if not any(n.startswith(k + "/") for k in kept):
            kept.append(n)
    return kept


@given(_FULL_NAMES, st.lists(_COMPONENT, min_size=1, max_size=3).map("/".join))
def test_select_is_exactly_the_literal_path_prefix_property(names, prefix):
    flat = {n: i for i, n in enumerate(_prefix_free(names))}
    tree = sp.unflatten(flat)
    assert sp.flatten(tree) == flat
    inside, outside = sp.partition_by_scope(tree, prefix)
    expected = {n for n in flat if n == prefix or n.startswith(prefix + "/")}
    assert set(sp.flatten(sp.select(tree, prefix))) == expected
    assert set(sp.flatten(inside)) == expected
    assert set(sp.flatten(outside)) == set(flat) - expected
    assert sp.flatten(sp.merge(inside, outside)) == flat


def test_unflatten_rejects_a_leaf_that_is_also_a_scope():
    with pytest.raises(ValueError, match="'foo/v' cannot be placed: 'foo' is a leaf, not a scope") as e:
        sp.unflatten({"foo": 1, "foo/v": 2})
    assert isinstance(e.value, sp.NameCollisionError)
    with pytest.raises(sp.NameCollisionError, match="'foo' cannot be placed: it is a scope"):
        sp.unflatten({"foo/v": 2, "foo": 1})


def test_unflatten_collides_in_either_order_and_never_changes_its_input():
    for flat in ({"a": None, "a/b": 1}, {"a/b": 1, "a": None}):
        with pytest.raises(sp.NameCollisionError, match="'a(/b)?' cannot be placed"):
            sp.unflatten(flat)
    d = {"b": 1}
    with pytest.raises(sp.NameCollisionError, match="'a/c' cannot be placed: 'a' is a leaf"):
        sp.unflatten({"a": d, "a/c": 2})
    assert d == {"b": 1}


def test_a_full_name_spelled_twice_is_a_name_collision_not_a_dropped_leaf():
    tree = {"a/b": np.ones(1), "a": {"b": np.zeros(1)}}
    for split in (sp.flatten, lambda t: sp.select(t, "a"), lambda t: sp.merge(t, {}),
                  lambda t: sp.partition(lambda name, _: True, t)):
        with pytest.raises(sp.NameCollisionError, match=r"(?s)'a/b' is given twice.*fix:"):
            split(tree)
    assert sp.flatten({"a/b": 1, "a": {"c": 2}}) == {"a/b": 1, "a/c": 2}


def test_non_str_keys_are_a_type_error_naming_the_path():
    with pytest.raises(TypeError, match=r"(?s)'a/0': key 0 is int; params keys must be str.*"
                                        r"fix: use the key '0'"):
        sp.flatten({"a": {0: 1}})
    with pytest.raises(TypeError, match="'a/b/1.5': key 1.5 is float"):
        sp.flatten({"a": {"b": {"c": 1, 1.5: 2}}})


def _params_and_state():
    def fn():
        sp.get_state("s", (2,), init=jax.nn.initializers.zeros)
        return sp.get_param("w", (2, 2))
    return sp.transform_with_state(fn).init(KEY)


def test_flattening_the_params_and_state_pair_is_a_type_error_saying_to_flatten_each():
    pair = _params_and_state()
    with pytest.raises(TypeError, match=r"(?s)got a tuple of 2 dicts.*\(params, state\).*"
                                        r"fix: flatten params and state separately") as e:
        sp.flatten(pair)
    assert isinstance(e.value, sp.ParamsTypeError)
    for bad, found in (([1, 2], "got list of 2 items"), (3, "got int 3"), (None, "got None")):
        with pytest.raises(sp.ParamsTypeError, match=rf"(?s)expected a nested dict.*{found}.*fix:"):
            sp.flatten(bad)


def test_unflatten_of_a_non_str_name_or_a_non_mapping_is_a_type_error():
    with pytest.raises(TypeError, match=r"(?s)full name 1 is int; full names must be str.*"
                                        r"fix: use the name '1'"):
        sp.unflatten({1: jnp.zeros(())})
    with pytest.raises(sp.ParamsTypeError, match=r"(?s)unflatten expected a dict of full names.*"
                                                 r"got list"):
        sp.unflatten([("a/b", 1)])


def test_specs_helpers_with_swapped_arguments_say_they_look_swapped():
    model = _mixed_model()
    params, specs = model.init(KEY), model.specs()
    for call in (lambda: sp.partition_trainable(specs, params),
                 lambda: sp.partition_by_collection(specs, params, "ema"),
                 lambda: sp.apply_constraints(specs, params)):
        with pytest.raises(TypeError, match=r"(?s)'(foo|bar)/.*' is a ParamSpec in params but "
                                            r"\w+ of shape \(\) in specs: the arguments look "
                                            r"swapped.*"
                                            r"fix: sp\.\w+\(params, specs"):
            call()
    with pytest.raises(TypeError, match=r"(?s)specs holds .* at 'foo/w', not a ParamSpec.*"
                                        r"fix: pass model.specs"):
        sp.partition_trainable(params, params)


def test_select_with_a_non_str_scope_is_a_type_error():
    params = _mixed_model().init(KEY)
    for call in (lambda: sp.select(params, 3), lambda: sp.partition_by_scope(params, ["foo"])):
        with pytest.raises(TypeError, match=r"(?s)scope must be a str scope path.*got (int 3|list).*"
                                            r"fix:"):
            call()
    with pytest.raises(TypeError, match=r"(?s)the arguments look swapped.*sp.select\(params, 'foo'\)"):
        sp.select("foo", params)


def _tf_collections(build, keys):
    """{key: sorted variable names} of tf.compat.v1.get_collection after ``build(tf)`` in a graph."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf = pytest.importorskip("tensorflow.compat.v1")
    with tf.Graph().as_default():
        build(tf)
        return {k: sorted(v.op.name for v in tf.get_collection(k)) for k in keys}


def test_partition_by_collection_answers_tf_implicit_global_and_trainable_variables():
    keys = ("variables", "trainable_variables", "foo", "model_variables")

    def build(tf):
        tf.get_variable("a", [1])
        tf.get_variable("b", [1], trainable=False)
        tf.get_variable("c", [1], collections=["foo"])
        tf.get_variable("d", [1], collections=["foo"], trainable=False)
        with tf.variable_scope("s"):  # tf_slim.model_variable: variables and model_variables
            pytest.importorskip("tf_slim").model_variable("m", [1], trainable=False)

    def fn():
        sp.get_param("a", [1])
        sp.get_param("b", [1], trainable=False)
        sp.get_param("c", [1], collections=["foo"])
        sp.get_param("d", [1], collections=["foo"], trainable=False)
        with sp.scope("s"):
            sp.slim.model_variable("m", [1], trainable=False)

    want = _tf_collections(build, keys)
    assert want["variables"] == ["a", "b", "s/m"] and want["trainable_variables"] == ["a", "c"]
    model = sp.transform(fn)
    params, specs = model.init(KEY), model.specs()
    got = {k: sorted(sp.flatten(sp.partition_by_collection(params, specs, k)[0])) for k in keys}
    assert got == want


def test_partition_by_collection_of_state_specs_matches_tf_batch_norm_moving_statistics():
    keys = ("variables", "trainable_variables", "moving_average_variables")
    x = np.ones((2, 3), np.float32)
    want = _tf_collections(
        lambda tf: tf.layers.batch_normalization(tf.constant(x), training=True, name="bn"), keys)
    assert want["variables"] == ["bn/beta", "bn/gamma", "bn/moving_mean", "bn/moving_variance"]
    model = sp.transform_with_state(
        lambda x: sp.layers.batch_normalization(x, training=True, name="bn"))
    params, state = model.init(KEY, x)
    param_specs, state_specs = model.specs(x)
    got = {k: sorted([*sp.flatten(sp.partition_by_collection(params, param_specs, k)[0]),
                      *sp.flatten(sp.partition_by_collection(state, state_specs, k)[0])])
           for k in keys}
    assert got == want


def test_partition_by_collection_needs_one_collection_name_and_an_unknown_one_matches_nothing():
    model = _mixed_model()
    params, specs = model.init(KEY), model.specs()
    with pytest.raises(TypeError, match=r"(?s)collection must be one collection name \(a str\), "
                                        r"got list \['ema'\].*fix: call it once per collection"):
        sp.partition_by_collection(params, specs, ["ema"])
    # TF's get_collection of a name nothing was added to is [], not an error.
    nothing, rest = sp.partition_by_collection(params, specs, "no_such_collection")
    assert paths(nothing) == set() and paths(rest) == paths(params)


def test_merge_rejects_a_name_in_two_trees():
    with pytest.raises(ValueError, match="merge: 'a/b' is in more than one tree"):
        sp.merge({"a": {"b": 1}}, {"a": {"b": 2}})
    assert sp.merge({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}


# --- abstract init --------------------------------------------------------------------------------


def test_init_accepts_shape_dtype_structs_and_concrete_flags_steer_control_flow():
    def fn(x, is_training, mode="mean"):
        assert isinstance(is_training, bool) and isinstance(mode, str)
        w = sp.get_param("w", [x.shape[-1], 4])
        if is_training:
            sp.get_param("dropout_scale", [], init=sp.initializers.ones)
        if mode == "sum":
            sp.get_param("sum_bias", [4], init=sp.initializers.zeros)
        return x @ w

    model = sp.transform(fn)
    x = jax.ShapeDtypeStruct((8, 5), jnp.float32)
    assert paths(model.init(KEY, x, True)) == {"w", "dropout_scale"}
    assert paths(model.init(KEY, x, False, mode="sum")) == {"w", "sum_bias"}
    params = model.init(KEY, x, is_training=False)
    assert params["w"].shape == (5, 4)
    out = model.apply(params, jnp.ones((8, 5)), False)
    np.testing.assert_allclose(out, jnp.ones((8, 5)) @ params["w"], rtol=1e-6)


def test_init_python_numbers_stay_concrete_and_steer_loops():
    def fn(x, num_layers, rate):
        assert type(num_layers) is int and type(rate) is float
        for i in range(num_layers):
            with sp.scope(f"layer{i}"):
                x = x @ sp.get_param("w", [x.shape[-1], x.shape[-1]])
        if rate > 0.0:
            x = x * sp.get_param("keep_scale", [], init=sp.initializers.ones)
        return x

    model = sp.transform(fn)
    x = jax.ShapeDtypeStruct((2, 4), jnp.float32)
    params = model.init(KEY, x, num_layers=3, rate=0.5)
    assert paths(params) == {"layer0/w", "layer1/w", "layer2/w", "keep_scale"}
    assert paths(model.init(KEY, x, num_layers=1, rate=0.0)) == {"layer0/w"}
    assert model.apply(params, jnp.ones((2, 4)), num_layers=3, rate=0.5).shape == (2, 4)


def test_init_numpy_scalars_stay_concrete_as_python_numbers_do():
    # Before: NumPy scalars were traced (as jax.jit traces them), so `if is_training:` in the model
    # raised JAX's TracerBoolConversionError from inside init. Eager apply gets them concrete too.
    def fn(x, is_training, n, rate):
        for i in range(n):
            x = x @ sp.get_param(f"w{i}", [x.shape[-1], 2])
        if is_training and rate > 0:
            x = x * sp.get_param("keep_scale", [], init=sp.initializers.ones)
        return x

    model = sp.transform(fn)
    x = jax.ShapeDtypeStruct((2, 2), jnp.float32)
    for flag, n, rate in ((np.bool_(True), np.int64(2), np.float32(0.5)),
                          (np.True_, np.int32(2), np.float64(0.5))):
        params = model.init(KEY, x, is_training=flag, n=n, rate=rate)
        assert paths(params) == {"w0", "w1", "keep_scale"}
        assert model.apply(params, jnp.ones((2, 2)), flag, n, rate).shape == (2, 2)
    assert paths(model.init(KEY, x, np.False_, np.int64(1), np.float32(0.5))) == {"w0"}
    assert paths(model.specs(x, np.bool_(True), np.uint8(1), np.float32(0.5))) == {"w0", "keep_scale"}


def test_init_takes_a_python_numpy_or_0d_jax_integer_seed_for_a_key():
    model = sp.transform(lambda: sp.get_param("w", [3]))
    expected = model.init(jax.random.key(7))["w"]
    for seed in (7, np.int64(7), jnp.int32(7), jnp.uint32(7)):
        np.testing.assert_array_equal(model.init(seed)["w"], expected)
    np.testing.assert_array_equal(jax.jit(model.init)(7)["w"], expected)  # a traced seed too
    np.testing.assert_array_equal(model.init(jax.random.PRNGKey(7))["w"], expected)  # a raw key


def test_init_accepts_nested_args_and_config_objects():
    class Config:
        width = 6

    def fn(batch, cfg):
        return batch["x"] @ sp.get_param("w", [batch["x"].shape[-1], cfg.width])

    params = sp.transform(fn).init(KEY, {"x": jax.ShapeDtypeStruct((2, 3), jnp.float32)}, Config())
    assert params["w"].shape == (3, 6)


def test_init_gives_the_model_its_arguments_in_the_callers_dict_order_on_copies():
    # JAX's flattening sorts dict keys: a model looping over a config dict would make its layers in
    # another order in init than in apply (whose eager call passes the dict as given)
    seen = []

    def fn(x, cfg, log, *, widths):
        seen.append((list(cfg), list(widths), list(cfg["inner"])))
        log.append("called")
        for name, width in widths.items():
            with sp.scope(None, default_name="layer"):
                x = x @ sp.get_param("w", (x.shape[-1], width))
        return x

    model = sp.transform(fn)
    x = jnp.ones((1, 2))
    cfg = {"z": jnp.ones(1), "a": 1, "inner": {"y": jnp.ones(1), "b": 2}}
    widths, log = {"b": 3, "a": 5}, []
    params = model.init(KEY, x, cfg, log, widths=widths)
    assert {k: v.shape for k, v in sp.flatten(params).items()} == {"layer/w": (2, 3),
                                                                   "layer_1/w": (3, 5)}
    assert model.apply(params, x, cfg, log, widths=widths).shape == (1, 5)
    assert seen == [(["z", "a", "inner"], ["b", "a"], ["y", "b"])] * 2
    assert log == ["called"]  # init ran the model on a copy: only apply's call is in the caller's
    assert sp.flatten(model.specs(x, cfg, [], widths=widths)).keys() == {"layer/w", "layer_1/w"}


def test_param_value_depends_only_on_key_name_shape_dtype_and_initializer():
    def forward():
        with sp.scope("a"):
            sp.get_param("w", [4, 4])
        sp.get_param("b", [4, 4])
        sp.get_param("c", [3])

    def backward():
        sp.get_param("extra", [4, 4])
        sp.get_param("b", [4, 4])
        with sp.scope("a"):
            sp.get_param("w", [4, 4])

    p1 = sp.flatten(sp.transform(forward).init(KEY))
    p2 = sp.flatten(sp.transform(backward).init(KEY))
    np.testing.assert_array_equal(p1["a/w"], p2["a/w"])
    np.testing.assert_array_equal(p1["b"], p2["b"])
    assert not np.array_equal(p1["a/w"], p1["b"])
    expected = sp.initializers.glorot_uniform()(param_key(KEY, "b"), (4, 4), jnp.float32)
    np.testing.assert_array_equal(p1["b"], expected)
    p3 = sp.flatten(sp.transform(forward).init(jax.random.key(1)))
    assert not np.array_equal(p1["b"], p3["b"])


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_param_value_is_its_initializer_at_its_param_key_for_every_key_impl(impl):
    # Grouped (vmapped) draws are used only where they equal per-key draws; with any generator a
    # value must not depend on which other parameters share its initializer and shape.
    key = jax.random.key(3, impl=impl)

    def alone():
        sp.get_param("b", [4, 4])

    def grouped():
        for name in ("a", "b", "c"):
            sp.get_param(name, [4, 4])

    p_alone = sp.flatten(sp.transform(alone).init(key))
    p_grouped = sp.flatten(sp.transform(grouped).init(key))
    expected = sp.initializers.glorot_uniform()(param_key(key, "b"), (4, 4), jnp.float32)
    np.testing.assert_array_equal(p_alone["b"], expected)
    np.testing.assert_array_equal(p_grouped["b"], expected)


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_a_normal_params_bits_do_not_depend_on_its_same_shape_siblings_for_every_key_impl(impl):
    # rbg's draws do not batch exactly: each name of a group is then drawn as a lone one is (its
    # compiled draw; an op-by-op normal differs from it in the last bit)
    key, init = jax.random.key(3, impl=impl), jax.nn.initializers.normal(0.1)

    def alone():
        with sp.scope("a"):
            sp.get_param("w", (6, 5), init=init)

    def crowd():
        for name in ("a", "b", "c"):
            with sp.scope(name):
                sp.get_param("w", (6, 5), init=init)

    want = sp.transform(alone).init(key)["a"]["w"]
    for _ in range(2):  # a first init and one with cached draws
        np.testing.assert_array_equal(sp.transform(crowd).init(key)["a"]["w"], want)
    np.testing.assert_array_equal(jax.jit(sp.transform(crowd).init)(key)["a"]["w"], want)


@pytest.mark.parametrize("value, dtype", [(-1.5, jnp.uint32), (float("inf"), jnp.int32),
                                          (1e10, jnp.uint8), (float("nan"), jnp.int32)])
def test_a_constant_out_of_an_integer_dtypes_range_has_the_same_bits_in_every_init(value, dtype):
    # the first eager init fills on the host only what converts alike eagerly and compiled
    model = sp.transform(
        lambda: sp.get_param("w", (2,), init=jax.nn.initializers.constant(value), dtype=dtype))
    with np.errstate(invalid="ignore"):
        first, second = model.init(KEY)["w"], model.init(KEY)["w"]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, jax.jit(model.init)(KEY)["w"])


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,base", [
    (sp.ParamExistsError, ValueError), (sp.ParamNotFoundError, ValueError),
    (sp.ShapeMismatchError, ValueError), (sp.DtypeMismatchError, ValueError),
    (sp.NameCollisionError, ValueError), (sp.InvalidNameError, ValueError),
    (sp.InitializerError, ValueError), (sp.ReuseArgumentError, ValueError),
    (sp.ScopeNestingError, RuntimeError), (sp.NotInTransformError, RuntimeError),
    (sp.MissingRngError, RuntimeError), (sp.StateError, RuntimeError),
    (sp.ParamsTypeError, TypeError)])
def test_error_classes_subclass_the_builtin_tf_would_raise(cls, base):
    assert issubclass(cls, base) and issubclass(cls, sp.ScopedParamsError)


def test_get_param_outside_a_transform_is_a_runtime_error_with_a_fix():
    with pytest.raises(RuntimeError, match=r"sp.get_param\(\) was called outside") as e:
        sp.get_param("w", [1])
    assert isinstance(e.value, sp.NotInTransformError)
    assert "fix: put the model code in a function" in str(e.value)


class _OutsideLayer(sp.layers.Layer):
    def call(self, x):
        return x


@pytest.mark.parametrize("called, shown", [
    (lambda: sp.get_param("w", [2]), "sp.get_param()"),
    (lambda: sp.layers.Dense(3)(jnp.ones((2, 4))), "sp.layers.Dense()"),
    (lambda: sp.layers.batch_normalization(jnp.ones((2, 4))), "sp.layers.batch_normalization()"),
    (lambda: sp.layers.dense(jnp.ones((2, 4)), 3), "sp.layers.dense()"),
    (lambda: sp.slim.fully_connected(jnp.ones((2, 4)), 3), "sp.slim.fully_connected()"),
    (lambda: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(3), jnp.ones((2, 5, 3)), dtype=jnp.float32),
     "sp.rnn.dynamic_rnn()"),
    (lambda: _OutsideLayer()(jnp.ones((2, 4))), "_OutsideLayer()"),
    (lambda: _OutsideLayer().weights, "_OutsideLayer(...).weights"),
])
def test_outside_a_transform_the_error_names_the_function_the_user_called(called, shown):
    with pytest.raises(sp.NotInTransformError) as e:
        called()
    assert str(e.value).startswith(f"{shown} was called outside a transformed function.\n"
                                   f"  asked: {shown} with no sp.transform")


def test_get_param_rejects_a_non_string_name():
    with pytest.raises(TypeError, match=r"name must be a string, got int \(3\)"):
        sp.transform(lambda: sp.get_param(3, [1])).init(KEY)


def test_already_exists_names_path_asked_found_fix_and_first_creation_site():
    lines = []

    def fn():
        with sp.scope("enc"):
            with sp.scope("layer"):
                sp.get_param("w", [2, 3]); lines.append(here())  # noqa: E702
                sp.get_param("w", [2, 3]); lines.append(here())  # noqa: E702

    with pytest.raises(sp.ParamExistsError) as e:
        sp.transform(fn).init(KEY)
    msg = str(e.value)
    assert msg.startswith("Variable enc/layer/w already exists, disallowed.")
    assert f"Originally defined at:\n\n  {__file__}:{lines[0]}" in msg
    assert f"asked: a new 'enc/layer/w' (reuse=False in scope 'enc/layer') at {__file__}:" in msg
    assert "found: 'enc/layer/w' already created in this call with shape (2, 3), dtype float32" in msg
    assert "fix: to share it, enter the scope with reuse=True (sp.scope('enc/layer', reuse=True))" in msg
    assert ("sp.get_scope().reuse_variables() before the second request (in the scope around it)"
            in msg)

    def reusing():  # the offered reuse_variables() fix works for a direct request
        with sp.scope("enc"):
            with sp.scope("layer"):
                sp.get_param("w", [2, 3])
                sp.get_scope().reuse_variables()
                sp.get_param("w", [2, 3])

    assert paths(sp.transform(reusing).init(KEY)) == {"enc/layer/w"}


def _layer_twice(layer, **reuse):
    def fn(x):
        layer(x)
        return layer(x, **reuse)
    return fn


def _layer_twice_reusing_the_enclosing_scope(layer):
    def fn(x):
        with sp.scope("outer"):
            layer(x)
            sp.get_scope().reuse_variables()
            return layer(x)
    return fn


@pytest.mark.parametrize("layer, x, made", [
    (lambda x, **kw: sp.layers.dense(x, 3, name="fc", **kw), jnp.ones((2, 4)), "fc"),
    (lambda x, **kw: sp.slim.conv2d(x, 3, 3, scope="c", **kw), jnp.ones((1, 5, 5, 2)), "c"),
])
def test_already_exists_from_a_layer_suggests_the_layers_reuse_not_reentering_its_scope(layer, x, made):
    # sp.scope('fc', reuse=True) around the layer would make it open fc/fc/...: not offered.
    with pytest.raises(sp.ParamExistsError) as e:
        sp.transform(_layer_twice(layer)).init(KEY, x)
    msg = str(e.value)
    assert msg.startswith(f"Variable {made}/")
    assert "already exists, disallowed. Did you mean to set reuse=True or reuse=AUTO_REUSE" in msg
    assert ("fix: to share it, pass reuse=True to the layer's second call (to an RNN's cell), or call "
            "sp.get_scope().reuse_variables() before the second request (in the scope around it)"
            in msg)
    assert f"(sp.scope('{made}', reuse=True))" not in msg
    assert f"'{made}/{made}/...'" in msg  # why re-entering the layer's scope does not work
    # both offered fixes work
    shared = paths(sp.transform(_layer_twice(layer, reuse=True)).init(KEY, x))
    assert shared and all(p.startswith(f"{made}/") for p in shared)
    outer = paths(sp.transform(_layer_twice_reusing_the_enclosing_scope(layer)).init(KEY, x))
    assert outer == {"outer/" + p for p in shared}


def test_already_exists_at_the_root_suggests_what_works_there_not_a_scope_named_scope():
    with pytest.raises(sp.ParamExistsError) as e:
        sp.transform(lambda: (sp.get_param("w", [2]), sp.get_param("w", [2]))).init(KEY)
    msg = str(e.value)
    assert "fix: to share it, call sp.get_scope().reuse_variables() before asking again" in msg
    assert "sp.scope('scope'" not in msg


def test_apply_names_the_first_creation_line_even_deep_in_a_long_function():
    # apply records a creation site as (code, bytecode offset); the line is found for the message.
    src = ("def fn(again):\n" + "    x = 0\n" * 300 + "    with sp.scope('enc'):\n"
           "        sp.get_param('w', [2])\n"
           "        if again:\n"
           "            sp.get_param('w', [2])\n")
    namespace = {"sp": sp}
    exec(compile(src, "<long model>", "exec"), namespace)
    model = sp.transform(namespace["fn"])
    params = model.init(KEY, False)
    with pytest.raises(sp.ParamExistsError) as e:
        model.apply(params, True)
    msg = str(e.value)
    assert "Originally defined at:\n\n  <long model>:303\n" in msg
    assert "asked: a new 'enc/w' (reuse=False in scope 'enc') at <long model>:305" in msg


def test_does_not_exist_lists_nearest_names_and_the_scope_that_turned_reuse_on():
    lines = []

    def fn():
        with sp.scope("model"):
            sp.get_param("weights", [2])
            sp.get_param("bias", [2])
        with sp.scope("model", reuse=True):  # reuse turned on here
            lines.append(here() - 1)
            with sp.scope("head"):
                sp.get_param("weight", [2])

    with pytest.raises(sp.ParamNotFoundError) as e:
        sp.transform(fn).init(KEY)
    msg = str(e.value)
    assert msg.startswith("Variable model/head/weight does not exist")
    assert "asked: 'model/head/weight' with reuse=True in scope 'model/head'" in msg
    assert "found: 'model/weights'" in msg
    assert "'model/bias'" not in msg
    assert (f"reuse is on because scope 'model' set reuse=True at {__file__}:{lines[0]}; it is "
            "inherited by every sub-scope and cannot be turned back off inside it") in msg
    assert "fix: create it first (reuse=False), use reuse=sp.AUTO_REUSE" in msg


def test_does_not_exist_names_reuse_variables_call_site():
    lines = []

    def fn():
        with sp.scope("tower") as t:
            sp.get_param("w", [])
            t.reuse_variables(); lines.append(here())  # noqa: E702
            sp.get_param("w/Adam", [])

    with pytest.raises(sp.ParamNotFoundError) as e:
        sp.transform(fn).init(KEY)
    assert (f"scope 'tower' set reuse_variables() at {__file__}:{lines[0]}") in str(e.value)


def test_shape_and_dtype_mismatch_name_where_the_param_was_created_and_the_fix():
    lines = []

    def fn(dtype):
        with sp.scope("a") as s:
            sp.get_param("v", [1]); lines.append(here())  # noqa: E702
        with sp.scope(s, reuse=True):
            sp.get_param("v", [1] if dtype else [2], dtype=dtype)

    model = sp.transform(fn)
    with pytest.raises(sp.ShapeMismatchError) as e:
        model.init(KEY, None)
    msg = str(e.value)
    assert f"found: created at {__file__}:{lines[0]}" in msg
    assert "fix: pass the stored shape, or shape=None to accept the stored one" in msg
    with pytest.raises(sp.DtypeMismatchError) as e:
        model.init(KEY, jnp.float16)
    msg = str(e.value)
    assert "Trying to share variable a/v, but specified dtype float16 and found dtype float32" in msg
    assert f"found: created at {__file__}:{lines[-1]}" in msg
    assert "fix: pass dtype=float32 when sharing it" in msg


def test_apply_names_the_user_line_that_first_created_a_layer_parameter():
    # A layer's get_param is called from the library: the site is the first user frame up the stack,
    # in apply as in init, also from the end of a long model function.
    lines = []
    body = "".join(f"    v{i} = {i}\n" for i in range(150))
    source = ("def fn(x, twice):\n" + body +
              "    y = sp.layers.dense(x, 3, name='d'); lines.append(here())\n"
              "    if twice:\n"
              "        y = sp.layers.dense(y, 3, name='d')\n"
              "    return y\n")
    namespace = {"sp": sp, "lines": lines, "here": here}
    exec(compile(source, __file__ + "-generated", "exec"), namespace)
    model = sp.transform(namespace["fn"])
    params = model.init(KEY, jnp.ones((1, 3)), False)
    with pytest.raises(sp.ParamExistsError) as e:
        model.apply(params, jnp.ones((1, 3)), True)
    msg = str(e.value)
    assert f"Originally defined at:\n\n  {__file__}-generated:{lines[0]}\n" in msg
    assert f"at {__file__}-generated:{lines[0] + 2}\n" in msg  # the second request's line


def test_creation_site_is_the_users_line_when_a_layer_creates_inside_sp_scan():
    # dynamic_rnn creates its cell's parameters in the body of an sp.scan, which JAX's own code
    # calls: the sites are the model's lines, never a file of JAX's (nor functools/contextlib).
    lines = []

    def fn(xs, twice):
        sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), xs, dtype=jnp.float32); lines.append(here())  # noqa: E702
        if twice:
            sp.rnn.dynamic_rnn(sp.rnn.GRUCell(4), xs, dtype=jnp.float32)
        return xs

    xs = jnp.ones((2, 5, 3))
    model = sp.transform(fn)
    params = model.init(KEY, xs, False)
    first = lines[0]
    runs = (lambda: model.init(KEY, xs, True), lambda: model.apply(params, xs, True),
            lambda: jax.jit(model.apply, static_argnums=2)(params, xs, True))
    for run in runs:
        with pytest.raises(sp.ParamExistsError) as e:
            run()
        msg = str(e.value)
        assert f"Originally defined at:\n\n  {__file__}:{first}\n" in msg
        assert f"(reuse=False in scope 'rnn/gru_cell') at {__file__}:{first + 2}\n" in msg
        assert os.sep + "jax" + os.sep not in msg


def test_name_scope_hint_when_a_plain_name_scope_is_active():
    def fn():
        with sp.name_scope("block"):
            sp.get_param("w", [])
        with sp.name_scope("block"):
            sp.get_param("w", [])

    with pytest.raises(sp.ParamExistsError) as e:
        sp.transform(fn).init(KEY)
    assert ("note: name_scope('block_1') is active but does not affect parameter names; use "
            "sp.scope('block_1') to namespace parameters.") in str(e.value)


def test_no_name_scope_hint_inside_a_variable_scope():
    def fn():
        with sp.scope("block"):
            sp.get_param("w", [])
        with sp.scope("block"):
            sp.get_param("w", [])

    with pytest.raises(sp.ParamExistsError) as e:
        sp.transform(fn).init(KEY)
    assert "note: name_scope" not in str(e.value)


def test_name_scope_hint_on_does_not_exist():
    def fn():
        sp.get_param("w", [])
        with sp.name_scope("enc"):
            with sp.scope(sp.get_scope(), reuse=True):
                sp.get_param("v", [])

    with pytest.raises(sp.ParamNotFoundError, match=r"name_scope\('enc'\) is active"):
        sp.transform(fn).init(KEY)


def test_param_that_is_already_a_scope_is_a_name_collision():
    def fn():
        with sp.scope("foo"):
            sp.get_param("v", [])
        sp.get_param("foo", [])

    with pytest.raises(ValueError, match="'foo' cannot be a parameter: it is already a scope holding "
                                         "'foo/v'") as e:
        sp.transform(fn).init(KEY)
    assert isinstance(e.value, sp.NameCollisionError)
    assert "fix: rename the parameter or the scope" in str(e.value)


def test_scope_named_like_an_existing_param_is_a_name_collision():
    def fn():
        sp.get_param("foo", [])
        with sp.scope("foo"):
            sp.get_param("v", [])

    with pytest.raises(sp.NameCollisionError, match="'foo/v' cannot be created: 'foo' is already a "
                                                    "parameter, so it cannot also be a scope"):
        sp.transform(fn).init(KEY)


def test_apply_takes_numpy_params_and_still_checks_their_shape_and_dtype():
    def fn(x):
        with sp.scope("dense"):
            w = sp.get_param("w", (3, 2))
        return x @ w

    model = sp.transform(fn)
    x = jnp.ones((1, 3))
    params = jax.tree_util.tree_map(np.asarray, model.init(KEY, x))
    assert type(params["dense"]["w"]) is np.ndarray
    np.testing.assert_allclose(model.apply(params, x), np.asarray(x) @ params["dense"]["w"], rtol=1e-6)
    with pytest.raises(sp.ShapeMismatchError, match=r"dense/w"):
        model.apply({"dense": {"w": np.zeros((2, 2), np.float32)}}, x)
    with pytest.raises(sp.DtypeMismatchError, match=r"dense/w"):
        model.apply({"dense": {"w": np.zeros((3, 2), np.int32)}}, x)


@pytest.mark.parametrize("spelling", [np.float32, jnp.float32, "float32", np.dtype("float32")])
def test_every_dtype_spelling_matches_in_apply_and_a_remembered_one_still_catches_a_mismatch(spelling):
    # TF code spells dtype=tf.float32 on every request; apply remembers a spelling that named the
    # parameter's dtype, and must still raise when the same spelling meets another dtype.
    def fn(x):
        with sp.scope("dense"):
            w = sp.get_param("w", [3, 2], dtype=spelling)
        return x @ w

    model = sp.transform(fn)
    x = jnp.ones((1, 3))
    params = model.init(KEY, x)
    for _ in range(2):
        assert model.apply(params, x).dtype == jnp.float32
    for wrong in (jnp.bfloat16, jnp.int32):
        with pytest.raises(sp.DtypeMismatchError, match=r"specified dtype float32 and found dtype "):
            model.apply({"dense": {"w": jnp.zeros((3, 2), wrong)}}, x)



def test_float64_means_float32_only_while_x64_is_off():
    # JAX's canonical dtypes: never remembered as a spelling of float32 (see the test above).
    model = sp.transform(lambda: sp.get_param("w", [1], dtype=np.float64))
    params = {"w": np.zeros((1,), np.float32)}
    assert model.apply(params).dtype == np.float32
    with jax.enable_x64(True):
        with pytest.raises(sp.DtypeMismatchError, match=r"specified dtype float64 and found dtype float32"):
            model.apply(params)
    assert model.apply(params).dtype == np.float32


@pytest.mark.parametrize("leaf, shown", [(1.0, "float 1.0"), ([1.0, 2.0], r"list \[1.0, 2.0\]"),
                                         ("abc", "str 'abc'")])
def test_a_params_leaf_that_is_not_an_array_is_a_params_type_error_naming_it(leaf, shown):
    # Before: AttributeError: 'float' object has no attribute 'shape', from inside get_param.
    def fn():
        with sp.scope("enc"):
            return sp.get_param("w", (2,))

    with pytest.raises(sp.ParamsTypeError, match=rf"Parameter 'enc/w' in params is {shown}, not an "
                                                 r"array\.\n  asked: .*\n  found: .*\n  fix: pass "
                                                 r"arrays, e.g. params = jax.tree.map\(jnp.asarray"):
        sp.transform(fn).apply({"enc": {"w": leaf}})


def test_a_numpy_leaf_is_read_as_jit_reads_it_float64_as_float32_without_x64():
    # jax.jit canonicalizes a NumPy float64 leaf to float32; eagerly it was a DtypeMismatchError.
    model = sp.transform(lambda: (sp.get_param("w", (2,)), sp.get_param("b", [2], dtype=jnp.float32)))
    params = {"w": np.ones(2), "b": np.ones(2)}
    for apply in (model.apply, jax.jit(model.apply)):
        w, b = apply(params)
        assert (w.dtype, b.dtype) == (jnp.float32, jnp.float32)
    with pytest.raises(sp.DtypeMismatchError, match="specified dtype float32 and found dtype int64"):
        model.apply({"w": np.ones(2, np.int64), "b": np.ones(2)})
    with jax.enable_x64(True):
        with pytest.raises(sp.DtypeMismatchError, match="specified dtype float32 and found dtype float64"):
            model.apply(params)


def test_a_float64_numpy_state_leaf_is_updated_eagerly_as_under_jit():
    # jax.jit reads a NumPy float64 state leaf as float32 (x64 off), and so does get_state; before,
    # an eager set_state of the float32 update was a DtypeMismatchError against the float64 leaf.
    def fn():
        s = sp.get_state("s", (2,), init=sp.initializers.zeros)
        sp.set_state("s", s + 1.0)
        return s

    model = sp.transform_with_state(fn)
    params, _ = model.init(KEY)
    for apply in (model.apply, jax.jit(model.apply)):
        out, new_state = apply(params, {"s": np.zeros(2)})
        assert out.dtype == new_state["s"].dtype == jnp.float32
        np.testing.assert_array_equal(new_state["s"], [1.0, 1.0])
    with pytest.raises(sp.DtypeMismatchError, match=r"state 's' holds shape \(2,\) dtype float32, but "
                                                    r"the new value has shape \(2,\) dtype int32"):
        sp.transform_with_state(lambda: sp.set_state("s", jnp.zeros(2, jnp.int32) + 0 * sp.get_state(
            "s", (2,), init=sp.initializers.zeros).astype(jnp.int32))).apply(params, {"s": np.zeros(2)})


def test_numpy_params_and_state_reach_the_model_as_jax_arrays_never_the_callers_own():
    # sp.checkpoint.load returns NumPy arrays. Before, an eager apply handed the model the caller's
    # np.ndarray, so `w *= 2.0` (a new array for a jax.Array) doubled the caller's params in place:
    # the second identical apply gave another answer.
    regularized = []

    def regularizer(w):
        regularized.append(isinstance(w, jax.Array))
        return jnp.sum(w)

    def fn(x):
        w = sp.get_param("w", (2,), regularizer=regularizer)  # apply's common request
        with sp.scope("s", reuse=sp.AUTO_REUSE):
            v = sp.get_param("v", [2])
            v_again = sp.get_param("v", [2])  # what this call fetched before
        c = sp.get_param("c", init=np.ones(2, np.float32))  # a constant: the general request
        count = sp.get_state("count", (2,), init=sp.initializers.ones)
        got = (w, v, v_again, c, count)
        kinds = [type(a).__name__ for a in got if not isinstance(a, jax.Array)]
        for a in got:
            a *= 2.0  # in place for a np.ndarray; a new array for a jax.Array
        sp.set_state("count", count + 1.0)
        return x * w + sp.regularization_loss(), kinds

    model = sp.transform_with_state(fn)
    x = jnp.ones(2)
    params, state = jax.tree.map(np.array, model.init(KEY, x))  # as sp.checkpoint.load gives them
    assert {type(leaf) for leaf in jax.tree.leaves((params, state))} == {np.ndarray}
    before = jax.tree.map(np.copy, (params, state))
    regularized.clear()  # init's
    (out, kinds), new_state = model.apply(params, state, x)
    assert kinds == []  # every value the model got is a jax.Array
    assert regularized == [True]
    for leaf, kept in zip(jax.tree.leaves((params, state)), jax.tree.leaves(before)):
        np.testing.assert_array_equal(leaf, kept)  # apply is pure
    (again, _), _ = model.apply(params, state, x)
    np.testing.assert_array_equal(again, out)
    np.testing.assert_array_equal(new_state["count"], [2.0, 2.0])


class _ReadOnlyTree(Mapping):
    """A mapping that is not a dict (as flax's FrozenDict is)."""

    def __init__(self, d):
        self._d = d

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)


def _two_level_model():
    def fn(x):
        with sp.scope("block"):
            with sp.scope("dense"):
                w = sp.get_param("w", (3, 2))
            b = sp.get_param("b", (2,), init=jax.nn.initializers.ones)
        return x @ w + b
    return sp.transform(fn)


def test_apply_takes_params_as_any_mapping_nested_or_flat():
    model = _two_level_model()
    x = jnp.ones((1, 3))
    params = model.init(KEY, x)
    expected = model.apply(params, x)
    flat = sp.flatten(params)  # full names as keys, e.g. "block/dense/w"
    partly_flat = {"block": {"dense/w": params["block"]["dense"]["w"], "b": params["block"]["b"]}}
    read_only = _ReadOnlyTree({"block": _ReadOnlyTree({"dense": _ReadOnlyTree(params["block"]["dense"]),
                                                       "b": params["block"]["b"]})})
    for given in (flat, partly_flat, read_only):
        np.testing.assert_array_equal(model.apply(given, x), expected)
    for given in (flat, partly_flat):  # a mapping that is not a pytree cannot cross jit
        # (XLA may fuse the compiled step differently from the eager ops: the last bit may differ)
        np.testing.assert_allclose(jax.jit(model.apply)(given, x), expected, rtol=1e-6)


def test_apply_asking_for_a_parameter_where_params_hold_a_scope_is_not_found():
    def fn():
        with sp.scope("block"):
            return sp.get_param("dense", (3, 2))

    params = {"block": {"dense": {"w": jnp.ones((3, 2))}}}
    for tree in (params, _ReadOnlyTree({"block": _ReadOnlyTree(params["block"])})):
        with pytest.raises(sp.ParamNotFoundError, match=r"block/dense"):
            sp.transform(fn).apply(tree)


def test_apply_of_a_captured_scope_and_of_default_names_finds_the_same_params():
    def fn(x):
        with sp.scope("tower") as tower:
            pass
        with sp.scope(None, default_name="dense"):
            w = sp.get_param("w", (3, 2))
        with sp.scope(tower):  # a jump: the absolute path "tower"
            v = sp.get_param("v", (2,))
        return x @ w + v

    model = sp.transform(fn)
    x = jnp.ones((1, 3))
    params = model.init(KEY, x)
    assert paths(params) == {"dense/w", "tower/v"}
    np.testing.assert_allclose(model.apply(params, x), x @ params["dense"]["w"] + params["tower"]["v"])


def test_a_transform_called_inside_another_model_restores_the_outer_call_after_it():
    inner = sp.transform(lambda x: x * sp.get_param("scale", (), init=jax.nn.initializers.ones))

    def outer(x):
        with sp.scope("outer"):
            inner_params = inner.init(KEY, x)  # a whole init inside this call
            y = inner.apply(inner_params, x)
            with pytest.raises(sp.ParamNotFoundError):
                inner.apply({}, x)  # fails inside, and still hands the outer call back
            assert sp.get_scope().name == "outer"
            return y + sp.get_param("b", (), init=jax.nn.initializers.zeros)

    model = sp.transform(outer)
    params = model.init(KEY, 2.0)
    assert paths(params) == {"outer/b"}
    assert float(model.apply(params, 2.0)) == 2.0
    with pytest.raises(RuntimeError, match="get_param"):
        sp.get_param("w", ())  # and nothing is left installed afterwards


def test_no_name_scope_hint_inside_a_layer_object_in_a_reentered_scope():
    # The cell re-enters its captured scope a/gru_cell without a name scope: the name stack is a_1.
    def fn(x):
        with sp.scope("a"):
            sp.layers.Dense(2)(x)
        with sp.scope("a"):
            sp.layers.Dense(2)(x)  # a/dense again: TF's "already exists"

    with pytest.raises(sp.ParamExistsError, match="Variable a/dense/kernel already exists") as e:
        sp.transform(fn).init(KEY, jnp.ones((1, 3)))
    assert "note: name_scope" not in str(e.value)


def test_an_initializers_own_signature_decides_if_it_takes_a_shape_without_inspect_signature(monkeypatch):
    # sp.initializers.zeros and ones carry a __signature__ (a shape is needed); init reads it for
    # every parameter, and inspect.signature cost ~2 us each time.
    def takes_two(key, shape):
        return jnp.zeros(shape)

    def three_by_signature(*args):
        return jnp.zeros(args[1], args[2])

    three_by_signature.__signature__ = inspect.signature(lambda key, shape, dtype: None)
    takes_two.__signature__ = inspect.signature(lambda key, shape: None)
    ours = (sp.initializers.zeros, sp.initializers.ones, three_by_signature)
    called = []
    signature = inspect.signature

    def counting_signature(fn, *args, **kwargs):
        if any(fn is f for f in ours):
            called.append(fn)
        return signature(fn, *args, **kwargs)

    monkeypatch.setattr(inspect, "signature", counting_signature)

    def fn():
        sp.get_param("z", [2], init=sp.initializers.zeros)
        sp.get_param("o", [2], init=sp.initializers.ones)
        sp.get_param("t", [2], init=three_by_signature)

    params = sp.transform(fn).init(KEY)
    np.testing.assert_array_equal(params["o"], np.ones(2))
    assert called == []
    with pytest.raises(TypeError, match=r"The initializer of 'w' cannot be called as init\(key, shape, "
                                        r"dtype\)"):
        sp.transform(lambda: sp.get_param("w", [2], init=takes_two)).init(KEY)


def test_tree_helpers_given_the_params_and_state_pair_name_the_helper_called_in_the_fix():
    pair = _params_and_state()
    specs = {"w": sp.transform(lambda: sp.get_param("w", (2, 2))).specs()["w"]}
    for api, call in (("merge", lambda: sp.merge(pair)),
                      ("apply_constraints", lambda: sp.apply_constraints(pair, specs)),
                      ("partition_trainable", lambda: sp.partition_trainable(pair, specs)),
                      ("select", lambda: sp.select(pair, "w"))):
        with pytest.raises(sp.ParamsTypeError, match=rf"(?s)sp\.{api}: .*got a tuple of 2 dicts.*"
                                                     rf"\(params, state\).*fix: .*sp\.{api}\(") as e:
            call()
        assert "sp.flatten" not in str(e.value), api


def test_params_missing_from_specs_is_a_key_error_whose_message_names_the_entry_and_the_fix():
    specs = sp.transform(lambda: sp.get_param("w", (2,), constraint=lambda w: w)).specs()
    for api, call in (
            ("apply_constraints", lambda p: sp.apply_constraints(p, specs)),
            ("partition_trainable", lambda p: sp.partition_trainable(p, specs)),
            ("partition_by_collection", lambda p: sp.partition_by_collection(p, specs, "x"))):
        with pytest.raises(KeyError) as e:
            call({"w": jnp.ones(2), "enc": {"extra": jnp.ones(2)}})
        message = str(e.value)
        assert message.startswith(f"sp.{api}: 'enc/extra' is in params but not in specs"), message
        assert "another model or other arguments" in message
        assert "fix: compute specs with model.specs(*args)" in message
        assert isinstance(e.value, ValueError) and isinstance(e.value, sp.ScopedParamsError)


def test_jit_of_model_apply_written_in_a_loop_traces_once():
    # init and apply are bound once per model: JAX caches traces by the function object
    traces = []

    def fn(x):
        traces.append(1)
        return x @ sp.get_param("w", (x.shape[-1], 3))

    model = sp.transform(fn)
    x = jnp.ones((2, 4))
    params = model.init(KEY, x)
    assert model.apply is model.apply and model.init is model.init
    traces.clear()
    for _ in range(3):
        jax.jit(model.apply)(params, x)
    assert len(traces) == 1
    init, apply = model
    assert apply is model.apply


def test_a_key_given_to_specs_of_a_model_with_a_defaulted_argument_is_named():
    # fn(x, training=False) takes the key as x and fails inside: the error still says to drop it
    model = sp.transform(lambda x, training=False: x @ sp.get_param("w", (x.shape[-1], 2)))
    x = jnp.ones((2, 3))
    with pytest.raises(IndexError) as e:  # the model's own error, with a note
        model.specs(jax.random.key(0), x)
    assert "model.specs got a random key first" in "".join(e.value.__notes__)
    assert "drop it: model.specs(*args)" in "".join(e.value.__notes__)
    # an int first is as likely a config: the model's own error
    config_first = sp.transform(lambda n, x=None: x @ sp.get_param("w", (n, 2)))
    with pytest.raises(TypeError) as e:
        config_first.specs(3)
    assert not isinstance(e.value, sp.KeyArgumentError)


def test_a_deleted_model_is_freed_without_waiting_for_the_garbage_collector():
    import gc
    import weakref

    class Captured:
        pass

    captured = Captured()
    model = sp.transform(lambda x, c=captured: x @ sp.get_param("w", (x.shape[-1], 2)))
    apply = model.apply
    assert jax.jit(apply) is not None
    ref = weakref.ref(captured)
    del captured
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        del model, apply
        assert ref() is None
    finally:
        if was_enabled:
            gc.enable()


def test_a_subclass_of_transformed_keeps_its_overrides():
    class Logged(sp.Transformed):
        calls = []

        def apply(self, params, /, *args, **kwargs):
            self.calls.append("apply")
            return super().apply(params, *args, **kwargs)

    model = Logged(lambda x: x * sp.get_param("w", (), init=sp.initializers.ones), with_state=False)
    params = model.init(KEY, jnp.ones(2))
    model.apply(params, jnp.ones(2))
    assert Logged.calls == ["apply"]
