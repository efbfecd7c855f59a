"""Fixes to sp.layer_stack (initializers, the per-layer block's result, unroll), sp.remat (state),
sp.record (names shared with name scopes) and ParamSpec.size (beyond int64)."""

import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
X = np.ones((4, 3), np.float32)


def _stacked(block, num_layers=2):
    return sp.transform(lambda x: sp.layer_stack(num_layers, name="b")(block)(x))


# --- layer_stack: initializers ---------------------------------------------------------------------


def test_no_argument_initializer_in_a_layer_stack_gives_every_layer_its_value():
    # get_param's documented init=lambda: value (TF's initializer without arguments) is called once
    # per unrolled layer; the stack gives each layer that value, in init and apply.
    def block(h):
        return h * sp.get_param("w", init=lambda: jnp.arange(3.0))

    model = _stacked(block)
    params = model.init(KEY, X)
    chex.assert_trees_all_equal(params["b"]["w"], jnp.stack([jnp.arange(3.0)] * 2))
    chex.assert_trees_all_close(model.apply(params, X), X * jnp.arange(3.0) ** 2)
    chex.assert_trees_all_close(jax.jit(model.apply)(params, X), X * jnp.arange(3.0) ** 2)


def test_python_constant_in_a_layer_stack_keeps_tfs_dtype():
    # A Python number is float32 (TF's), whatever NumPy's float64 would say under x64.
    def block(h):
        return h + sp.get_param("c", init=1.5).astype(h.dtype)

    with jax.enable_x64(True):
        spec = sp.flatten(_stacked(block).specs(X))["b/c"]
        assert sp.flatten(sp.transform(block).specs(X))["c"].dtype == np.float32
    assert spec.shape == (2,) and spec.dtype == np.float32


class _OddInit:
    """An initializer object taking (key, shape, dtype) whose value has the wrong dtype kind."""

    def __call__(self, key, shape, dtype):
        return jnp.full(shape, 0.5, jnp.float32)


def _tf_style(shape, dtype=None):
    return np.zeros(shape, np.float32)


def _init_cases():
    import tf_keras  # noqa: F401 - a Keras initializer object, as ported code passes one

    return {
        "string": (None, "zeros"),
        "string with shape": ((3,), "zeros"),
        "dict": (None, {"a": 1}),
        "ShapeDtypeStruct": (None, jax.ShapeDtypeStruct((3,), jnp.float32)),
        "constant with shape": ((3,), 1.0),
        "dtype in init's place": ((3,), "float32"),
        "keras object": ((3,), tf_keras.initializers.GlorotUniform()),
        "tf-style function": ((3,), _tf_style),
        "no-argument function with shape": ((3,), lambda: jnp.ones(3)),
        "(key, shape, dtype) function without shape": (None, jax.nn.initializers.zeros),
    }


@pytest.mark.parametrize("case", list(_init_cases()))
def test_initializer_errors_in_a_layer_stack_are_the_ones_outside_it(case):
    # The store's own error, for the parameter's full name, one layer's shape and the user's
    # initializer: never a raw JAX error, the stack's wrapper, or the stacked shape.
    shape, init = _init_cases()[case]

    def block(h):
        return h * sp.get_param("w", shape, init=init)

    errors = []
    for model in (sp.transform(block), _stacked(block)):
        with pytest.raises(Exception) as info:
            model.init(KEY, X)
        errors.append(info.value)
    outside, inside = errors
    assert type(inside) is type(outside)
    expected = str(outside).replace("'w'", "'b/w'").replace("(parameter 'w')", "(parameter 'b/w')")
    expected = re.sub(r"created at [^\n]*", "", expected)
    assert re.sub(r"created at [^\n]*", "", str(inside)) == expected
    assert "stacked_init" not in str(inside) and "(2, 3)" not in str(inside)


def test_initializer_object_in_a_layer_stack_is_named_by_its_class_in_init_errors():
    # Errors raised when the stacked values are drawn name the user's initializer, not the stack's
    # wrapper (their shape is the stacked parameter's).
    def block(h):
        return h + sp.get_param("w", (3,), init=_OddInit(), dtype=jnp.int32)

    with pytest.raises(sp.InitializerError) as info:
        _stacked(block).init(KEY, X.astype(np.int32))
    assert "The initializer of 'b/w' (_OddInit) returned dtype float32" in str(info.value)


# --- layer_stack: the block's result, unroll -------------------------------------------------------


@pytest.mark.parametrize("returned", ["array", "scalar", "triple"])
def test_per_layer_stack_block_must_return_carry_and_outputs(returned):
    def block(h, s):
        out = sp.layers.dense(h, 3) * s
        return {"array": out, "scalar": jnp.sum(out), "triple": (out, s, s)}[returned]

    model = sp.transform(
        lambda x, s: sp.layer_stack(3, name="b", with_per_layer_inputs=True)(block)(x, s))
    scales = jnp.arange(3.0)
    params = sp.transform(lambda x: sp.layer_stack(3, name="b")(
        lambda h: sp.layers.dense(h, 3))(x)).init(KEY, X)
    for call in (lambda: model.init(KEY, X, scales), lambda: model.apply(params, X, scales)):
        with pytest.raises(TypeError) as info:
            call()
        text = str(info.value)
        assert text.startswith("sp.layer_stack 'b' (with_per_layer_inputs=True): the block returns "
                               "a pair (carry, ys)")
        assert "\n  asked: (carry, ys)" in text and "\n  found: " in text and "\n  fix: " in text
        found = {"array": "float32[4,3]", "scalar": "float32[]",
                 "triple": "a tuple of 3: (float32[4,3], float32[], float32[])"}[returned]
        assert f"\n  found: {found}" in text


@pytest.mark.parametrize("unroll", [-1, 0, 1.5, "2"])
def test_layer_stack_unroll_must_be_a_positive_int_or_bool(unroll):
    with pytest.raises((TypeError, ValueError)) as info:
        sp.layer_stack(2, name="b", unroll=unroll)
    text = str(info.value)
    assert text.startswith(f"sp.layer_stack 'b': unroll must be a positive int or a bool, got "
                           f"{unroll!r}")
    assert "\n  fix: " in text


@pytest.mark.parametrize("unroll", [True, False, 2, np.int64(3)])
def test_layer_stack_unroll_accepts_what_scan_accepts(unroll):
    model = _stacked(lambda h: sp.layers.dense(h, 3), num_layers=3)
    params = model.init(KEY, X)
    chex.assert_trees_all_close(
        sp.transform(lambda x: sp.layer_stack(3, name="b", unroll=unroll)(
            lambda h: sp.layers.dense(h, 3))(x)).apply(params, X), model.apply(params, X))


# --- remat: state ----------------------------------------------------------------------------------


def _bn_block(h):
    h = sp.layers.dense(h, 3)
    return sp.layers.batch_normalization(h, training=True, momentum=0.5)


@pytest.mark.parametrize("where", ["alone", "layer_stack block"])
def test_remat_threads_state_like_the_unrematerialised_model(where):
    # As hk.remat: a block with state (training batch norm) gives the same output, moving statistics
    # and gradients rematerialised or not, under jit too.
    def model(block):
        if where == "alone":
            return sp.transform_with_state(lambda x: block(block(x)))  # two calls: the later
        return sp.transform_with_state(                                # reads the earlier's state
            lambda x: sp.layer_stack(3, name="b")(block)(x))

    x = np.random.RandomState(0).randn(4, 3).astype(np.float32)
    plain, rematted = model(_bn_block), model(sp.remat(_bn_block))
    params, state = plain.init(KEY, x)
    chex.assert_trees_all_equal_shapes_and_dtypes(rematted.init(KEY, x), (params, state))
    expected = plain.apply(params, state, x)
    assert jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), expected[1], state))
    for apply in (rematted.apply, jax.jit(rematted.apply)):
        chex.assert_trees_all_close(apply(params, state, x), expected, rtol=1e-6, atol=1e-6)

    def loss(apply):
        return lambda p: jnp.sum(apply(p, state, x)[0] ** 2)

    # jit's fused batch-norm gradient against eager's: float32 rounding differs by CPU (~1e-6 here).
    chex.assert_trees_all_close(jax.jit(jax.grad(loss(rematted.apply)))(params),
                                jax.grad(loss(plain.apply))(params), rtol=1e-4, atol=1e-5)


def test_remat_state_set_twice_and_read_back_inside_it():
    def fn(x):
        def n():
            with sp.scope("s", reuse=sp.AUTO_REUSE):
                return sp.get_state("n", (), init=jax.nn.initializers.zeros)

        def set_n(value):
            with sp.scope("s"):
                sp.set_state("n", value)

        def f(h):
            set_n(n() + 1)
            set_n(n() * 10)  # reads back the value set just before
            return h + n()

        before = n()
        out = sp.remat(f)(x)
        return out, before, n()

    model = sp.transform_with_state(fn)
    params, state = model.init(KEY, jnp.float32(1))
    (out, before, after), new_state = jax.jit(model.apply)(params, {"s": {"n": jnp.float32(2)}},
                                                            jnp.float32(1))
    assert (float(out), float(before), float(after)) == (31.0, 2.0, 30.0)
    assert float(new_state["s"]["n"]) == 30.0


def test_remat_records_leave_it():
    def fn(x):
        return sp.remat(lambda h: (sp.record("inner", h * 2), h + 1)[1])(x)

    model = sp.transform(fn)
    out, records = model.apply_with_intermediates({}, jnp.float32(1))
    assert float(out) == 2.0 and {k: float(v) for k, v in records.items()} == {"inner": 2.0}


def test_remat_in_a_layer_stack_block_records_and_sets_state_as_the_plain_block():
    def block(h):
        sp.record("r", h)
        return _bn_block(h)

    x = np.random.RandomState(1).randn(4, 3).astype(np.float32)
    plain, rematted = (sp.transform_with_state(lambda x: sp.layer_stack(2, name="b")(b)(x))
                       for b in (block, sp.remat(block)))
    params, state = plain.init(KEY, x)
    chex.assert_trees_all_close(jax.jit(rematted.apply_with_intermediates)(params, state, x),
                                plain.apply_with_intermediates(params, state, x), rtol=1e-6)


def test_remat_state_inside_an_sp_scan_names_the_scan():
    # The scan's function cannot hand state out: the error names sp.scan, not the remat inside it.
    def fn(x):
        def step(h, _):
            return sp.remat(_bn_block)(h), None
        return sp.scan(step, x, None, length=2)[0]

    with pytest.raises(sp.StateError, match=r"inside the function of sp\.scan") as info:
        sp.transform_with_state(fn).init(KEY, X)
    assert "sp.remat" not in str(info.value)


def test_remat_state_under_a_jax_transformation_inside_the_model_is_refused():
    def fn(x):
        return jax.vmap(sp.remat(_bn_block))(x[None])[0]

    model = sp.transform_with_state(fn)
    # init refuses it too (it used to drop what set_state wrote, and accept the model), as it
    # refuses set_state under the vmap without remat
    params, state = sp.transform_with_state(_bn_block).init(KEY, X)
    for call in (lambda: model.init(KEY, X), lambda: model.apply(params, state, X)):
        with pytest.raises(sp.StateError) as info:
            call()
        text = str(info.value)
        assert "in the function of sp.remat" in text and "batch_normalization/moving_mean" in text
        assert "\n  fix: " in text


# --- record: names shared with name scopes ---------------------------------------------------------


def test_record_after_a_name_scope_of_the_same_name_gets_a_suffix_as_in_tf():
    # TF 1.x (tf.identity(X, name=...) in one graph with these name scopes) names them:
    tf_names = ["attn/scores", "attn_1", "dense_1", "a", "a_1", "b", "b_2", "B_3", "c_2", "c_3"]

    def fn(x):
        with sp.name_scope("attn"):
            sp.record("scores", x)
        sp.record("attn", x)
        sp.layers.dense(x, 3)  # name scope "dense"
        sp.record("dense", x)
        sp.record("a", x)
        sp.record("a", x)
        with sp.name_scope("b_1"):
            pass
        sp.record("b", x)
        sp.record("b", x)  # b_1 is a name scope's: skipped
        sp.record("B", x)  # case-insensitive, as TF
        for _ in range(2):
            with sp.name_scope("c"):
                pass
        sp.record("c", x)
        sp.record("c", x)
        return x

    model = sp.transform(fn)
    _, records = model.apply_with_intermediates(model.init(KEY, X), X)
    assert list(records) == tf_names
    sp.unflatten(records)  # no name is both a record and a scope of records


def test_name_scope_opened_after_a_record_of_its_name_keeps_it():
    # The documented difference: TF would name this scope attn_1; here name scopes never depend on
    # whether intermediates are collected, so it stays attn.
    def fn(x):
        sp.record("attn", x)
        with sp.name_scope("attn") as scope:
            sp.record("scores", x)
        return scope

    model = sp.transform(fn)
    scope, records = model.apply_with_intermediates({}, X)
    assert scope == "attn/" and list(records) == ["attn", "attn/scores"]


# --- ParamSpec.size beyond int64 -------------------------------------------------------------------


def test_param_spec_size_and_summary_are_exact_beyond_int64():
    def huge(x):
        sp.get_param("w", (2**32, 2**32))
        sp.get_param("v", (3, 2**31, 2**31))
        return x

    model = sp.transform(huge)
    specs = sp.flatten(model.specs(X))
    assert specs["w"].size == 2**64 and specs["v"].size == 3 * 2**62
    assert specs["w"].nbytes == 4 * 2**64
    assert type(specs["w"].size) is int
    assert f"total: {2**64 + 3 * 2**62:,} parameters" in sp.summary(model, X)
    assert sp.flatten(sp.transform(lambda x: sp.get_param("s", ())).specs(X))["s"].size == 1
    assert math.prod(()) == 1


def test_set_state_of_a_python_number_in_a_layer_stack_block_stores_the_declared_dtype():
    def block(x):
        count = sp.get_state("count", [], init=jax.nn.initializers.zeros, dtype=jnp.float32)
        sp.set_state("count", 3)  # tf.assign(v, 3) of a float32 variable: 3.0
        return x + count

    def fn(x):
        return sp.layer_stack(2, name="stack")(block)(x)

    model = sp.transform_with_state(fn)
    params, state = model.init(jax.random.key(0), jnp.ones(2))
    _, new_state = model.apply(params, state, jnp.ones(2))
    count = new_state["stack"]["count"]
    assert count.dtype == jnp.float32 and count.shape == (2,) and not count.weak_type
    np.testing.assert_array_equal(count, [3.0, 3.0])


def test_remat_of_a_layer_with_an_activity_regularizer_adds_the_direct_calls_penalty():
    def layer(h):
        return sp.layers.dense(h, 4, activity_regularizer=sp.l2_regularizer(1.0),
                               kernel_regularizer=sp.l2_regularizer(0.5))

    direct = sp.transform(lambda x: (layer(x), sp.regularization_loss()))
    rematted = sp.transform(lambda x: (sp.remat(layer)(x), sp.regularization_loss()))
    x = jnp.arange(20.0).reshape(5, 4) / 10
    params = direct.init(jax.random.key(0), x)
    assert sp.flatten(rematted.init(jax.random.key(0), x)).keys() == sp.flatten(params).keys()
    want = direct.apply(params, x)
    for got in (rematted.apply(params, x), jax.jit(rematted.apply)(params, x)):
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    grads = [jax.grad(lambda p: m.apply(p, x)[1])(params) for m in (direct, rematted)]
    chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-6)


def test_remat_passes_python_arguments_as_they_are_as_a_direct_call_does():
    def block(h, training, scale=2):
        h = sp.layers.dropout(h, 0.5, training=training)  # training=False: no key drawn
        return h * scale if training else h / scale  # a Python branch on the flag

    def direct(x):
        return sp.layers.dropout(block(x, training=False, scale=4), 0.5, training=True)

    def rematted(x):
        return sp.layers.dropout(sp.remat(block)(x, training=False, scale=4), 0.5, training=True)

    x = jnp.ones((2, 8))
    for rng in (jax.random.key(0), jax.random.key(1)):  # the later mask is the direct call's
        np.testing.assert_array_equal(sp.transform(rematted).apply({}, x, rng=rng),
                                      sp.transform(direct).apply({}, x, rng=rng))
    # no key asked for: the flag stayed a Python False
    out = sp.transform(lambda x: sp.remat(block)(x, False)).apply({}, x)
    np.testing.assert_allclose(out, x / 2)


@pytest.mark.parametrize("around", ["vmap", "grad"])
def test_a_weight_regularizer_inside_sp_remat_under_a_transformation_inits_as_without_remat(around):
    # init's placeholder of a weight created in the rematerialised function is no output of it:
    # its regularizer term is the weight's, not an activity penalty that cannot leave the vmap.
    def make(remat):
        def fn(x):
            dense = lambda h: sp.layers.dense(h, 3, kernel_regularizer=sp.l2_regularizer(0.1))
            block = sp.remat(dense) if remat else dense
            if around == "vmap":
                y = jax.vmap(block)(x).sum()
            else:
                y = jax.grad(lambda c: block(c).sum())(x).sum()
            return y + sp.regularization_loss()
        return sp.transform(fn)

    params = make(True).init(KEY, X)
    chex.assert_trees_all_equal_shapes(params, make(False).init(KEY, X))
    np.testing.assert_allclose(make(True).apply(params, X), make(False).apply(params, X), rtol=1e-6)
