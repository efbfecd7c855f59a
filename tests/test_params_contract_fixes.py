"""get_param's and set_state's contract: a layer object shared into an sp.layer_stack, set_state of
Python numbers, custom getters called as TF 1.x calls them, concrete JAX integers in shapes under
jax.jit, abstract (ShapeDtypeStruct) params, and the nesting of one shared scope object."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
X = np.random.RandomState(0).randn(4, 6).astype(np.float32)


# --- a layer object called before an sp.layer_stack and inside its block --------------------------


def test_a_layer_object_called_before_a_layer_stack_shares_its_kernel_inside_the_block_in_apply():
    def stacked(x):
        layer = sp.layers.Dense(6)
        y = layer(x)
        return sp.layer_stack(3, name="b")(lambda h: jnp.tanh(layer(h)))(y)

    def unrolled(x):
        layer = sp.layers.Dense(6)
        y = layer(x)
        for _ in range(3):
            y = jnp.tanh(layer(y))
        return y

    model = sp.transform(stacked)
    params = model.init(KEY, X)
    assert jax.tree.map(jnp.shape, params) == {"dense": {"bias": (6,), "kernel": (6, 6)}}
    expected = sp.transform(unrolled).apply(params, X)
    np.testing.assert_allclose(model.apply(params, X), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(model.apply)(params, X), expected, rtol=1e-5, atol=1e-6)


# --- set_state of a Python number -----------------------------------------------------------------


def _scale_model(x, value):
    c = sp.get_state("scale", (), init=sp.initializers.ones)  # float32 state
    if value is not None:
        sp.set_state("scale", value)
    return x * c


@pytest.mark.parametrize("value", [0.5, 3, True, np.float64(0.5), np.int64(3), np.float32(0.5)])
def test_set_state_of_a_number_stores_a_strongly_typed_array_of_the_declared_dtype(value):
    model = sp.transform_with_state(_scale_model)
    xb = jnp.ones(3, jnp.bfloat16)
    params, state = model.init(KEY, xb, value)
    out0, _ = model.apply(params, state, xb, None)
    for apply in (model.apply, jax.jit(model.apply, static_argnums=3)):
        _, new_state = apply(params, state, xb, value)
        leaf = new_state["scale"]
        assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32 and not leaf.weak_type
        assert float(leaf) == float(value)
        out1, _ = jax.jit(model.apply, static_argnums=3)(params, new_state, xb, None)
        assert out1.dtype == out0.dtype  # float32: the state computes as it did before


def test_set_state_of_a_weakly_typed_array_stores_it_strongly_typed():
    model = sp.transform_with_state(_scale_model)
    params, state = model.init(KEY, jnp.ones(3), None)
    _, new_state = model.apply(params, state, jnp.ones(3), jnp.asarray(0.5))
    assert new_state["scale"].dtype == jnp.float32 and not new_state["scale"].weak_type


@pytest.mark.parametrize("dtype, value", [(jnp.int32, 3), (jnp.int32, True), (jnp.bfloat16, 0.5),
                                          (jnp.complex64, 3), (jnp.bool_, True), (jnp.uint8, 255)])
def test_set_state_converts_a_number_of_a_compatible_kind_like_tf_assign(dtype, value):
    def fn(x):
        sp.get_state("m", (), init=sp.initializers.zeros, dtype=dtype)
        sp.set_state("m", value)
        return x

    model = sp.transform_with_state(fn)
    params, state = model.init(KEY, jnp.ones(3))
    _, new_state = model.apply(params, state, jnp.ones(3))
    assert new_state["m"].dtype == jnp.dtype(dtype)
    assert new_state["m"] == jnp.asarray(value, dtype)


@pytest.mark.parametrize("dtype, value, why", [
    (jnp.int32, 2.5, "int32"), (jnp.int32, np.float32(2.0), "int32"), (jnp.bool_, 1, "bool"),
    (jnp.float32, 1 + 2j, "float32"), (jnp.int32, 2 ** 40, "range"), (jnp.uint8, -1, "range"),
    (jnp.float16, 1e6, "range")])
def test_set_state_refuses_a_number_it_cannot_convert_without_loss(dtype, value, why):
    def fn(x):
        sp.get_state("m", (), init=sp.initializers.zeros, dtype=dtype)
        sp.set_state("m", value)
        return x

    model = sp.transform_with_state(fn)
    with pytest.raises(sp.DtypeMismatchError, match=rf"(?s)state 'm'.*{why}.*fix: "):
        model.init(KEY, jnp.ones(3))


def test_set_state_of_a_number_for_a_state_with_a_shape_is_a_shape_error():
    def fn(x):
        sp.get_state("m", (2,), init=sp.initializers.zeros)
        sp.set_state("m", 3)
        return x

    with pytest.raises(sp.ShapeMismatchError, match=r"state 'm' holds shape \(2,\)"):
        sp.transform_with_state(fn).init(KEY, jnp.ones(3))


# --- custom getters called as TF 1.x calls them ---------------------------------------------------


def test_a_getter_with_tf_explicit_signature_and_no_kwargs_is_called_without_sharding():
    log = []

    def getter(getter, name, shape=None, dtype=None, initializer=None, regularizer=None, reuse=None,
               trainable=None, collections=None, caching_device=None, partitioner=None,
               validate_shape=True, use_resource=None, synchronization=None, aggregation=None):
        log.append(name)
        return getter(name, shape=shape, dtype=dtype, initializer=initializer,
                      regularizer=regularizer, reuse=reuse, trainable=trainable,
                      collections=collections)

    def fn():
        with sp.scope("s", custom_getter=getter):
            return sp.get_param("v", [2])

    model = sp.transform(fn)
    params = model.init(KEY)
    assert sorted(sp.flatten(params)) == ["s/v"] and log == ["s/v"]
    np.testing.assert_array_equal(model.apply(params), params["s"]["v"])

    # Nested under a getter taking **kwargs, it is still called without sharding=.
    def fn_nested():
        with sp.scope("o", custom_getter=lambda g, *a, **k: g(*a, **k)):
            with sp.scope("s", custom_getter=getter):
                return sp.get_param("v", [2])

    assert sorted(sp.flatten(sp.transform(fn_nested).init(KEY))) == ["o/s/v"]


def test_a_getter_naming_sharding_or_taking_kwargs_receives_it():
    seen = []

    def getter(getter, name, shape=None, sharding=None, **other):
        seen.append(sharding)
        return getter(name, shape=shape, sharding=sharding)

    spec = jax.sharding.PartitionSpec("model")

    def fn():
        with sp.scope("s", custom_getter=getter):
            return sp.get_param("v", [4], sharding=spec)

    assert sp.flatten(sp.transform(fn).specs())["s/v"].sharding == spec
    assert seen == [spec]


def test_a_getter_receives_name_as_a_keyword_like_tf():
    seen = []

    def getter(getter, *args, **kwargs):
        seen.append((args, kwargs["name"]))
        return getter(*args, **kwargs)

    def fn():
        with sp.scope("s", custom_getter=getter):
            return sp.get_param("v", [2])

    model = sp.transform(fn)
    params = model.init(KEY)
    model.apply(params)
    assert seen == [((), "s/v")] * 2


def test_a_getter_whose_second_parameter_is_not_called_name_gets_the_name_by_position():
    seen = []

    def getter(g, n, *args, **kwargs):
        seen.append((n, "name" in kwargs))
        return g(n, *args, **kwargs)

    def fn():
        with sp.scope("s", custom_getter=getter):
            return sp.get_param("v", [2])

    assert sorted(sp.flatten(sp.transform(fn).init(KEY))) == ["s/v"]
    assert seen == [("s/v", False)]


def test_the_next_getter_takes_tf_true_getter_positional_order():
    part = sp.sharding.fixed_size_partitioner(2)
    constraint = lambda w: jnp.clip(w, -1.0, 1.0)  # noqa: E731

    def getter(getter, name, shape=None, dtype=None, initializer=None, regularizer=None, reuse=None,
               trainable=None, collections=None, caching_device=None, partitioner=None, **kw):
        # TF's _true_getter(name, shape, dtype, initializer, regularizer, reuse, trainable,
        # collections, caching_device, partitioner, validate_shape, use_resource, constraint, ...)
        return getter(name, shape, dtype, initializer, regularizer, reuse, trainable, collections,
                      caching_device, partitioner, True, None, constraint, None, None)

    def fn():
        with sp.scope("s", custom_getter=getter, partitioner=part):
            return sp.get_param("v", [4, 2])

    spec = sp.flatten(sp.transform(fn).specs())["s/v"]
    assert spec.partitioner is part and spec.sharding is None and spec.constraint is constraint


def test_the_next_getter_refuses_arguments_tf_true_getter_does_not_take():
    def getter(getter, name, *args, **kwargs):
        return getter(name, *args, bogus=1, **kwargs)

    def fn():
        with sp.scope("s", custom_getter=getter):
            return sp.get_param("v", [2])

    with pytest.raises(TypeError, match=r"bogus"):
        sp.transform(fn).init(KEY)


# --- a concrete JAX integer in a shape ------------------------------------------------------------


@pytest.mark.parametrize("spelling", [list, tuple])
def test_a_concrete_jax_integer_in_a_shape_works_in_init_eager_and_jitted_apply(spelling):
    size = jnp.int32(4)

    def fn(x):
        return x @ sp.get_param("w", spelling([x.shape[-1], size]))

    model = sp.transform(fn)
    x = jnp.ones((2, 3))
    params = model.init(KEY, x)
    assert params["w"].shape == (3, 4)
    np.testing.assert_allclose(model.apply(params, x), jax.jit(model.apply)(params, x))
    assert jax.jit(model.apply)(params, x).shape == (2, 4)


def test_a_concrete_jax_integer_shape_that_does_not_match_is_the_shape_error_under_jit():
    size = [jnp.int32(4)]  # concrete: made outside the model

    def fn(x):
        return sp.get_param("w", [x.shape[-1], size[0]])

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones((2, 3)))
    size[0] = jnp.int32(5)
    with pytest.raises(sp.ShapeMismatchError, match=r"specified shape \(3, 5\) and found shape \(3, 4\)"):
        jax.jit(model.apply)(params, jnp.ones((2, 3)))


def test_a_traced_dimension_in_a_shape_is_refused_as_not_static_in_init_and_jitted_apply():
    def fn(x):
        return sp.get_param("w", (3, jnp.asarray(x.shape[-1]) + 1))

    model = sp.transform(fn)
    x = jnp.ones((2, 3))
    message = r"(?s)'w'.*shape .*static.*fix: .*int\("
    with pytest.raises(TypeError, match=message):
        model.init(KEY, x)
    params = {"w": jnp.zeros((3, 4))}
    with pytest.raises(TypeError, match=message):
        jax.jit(model.apply)(params, x)
    assert model.apply(params, x).shape == (3, 4)  # eager: the value is concrete


# --- abstract params ------------------------------------------------------------------------------


def test_apply_with_abstract_params_from_eval_shape_is_a_params_type_error_naming_the_parameter():
    def fn(x):
        with sp.scope("dense"):
            w = sp.get_param("w", [3, 4])
        return jnp.tanh(x @ w)

    model = sp.transform(fn)
    x = jnp.ones((2, 3))
    abstract = jax.eval_shape(lambda: model.init(KEY, x))
    with pytest.raises(sp.ParamsTypeError, match=r"(?s)Parameter 'dense/w' in params .*"
                                                 r"ShapeDtypeStruct.*no values.*fix: pass the "
                                                 r"arrays init or checkpoint.load returned"):
        model.apply(abstract, x)


def test_apply_with_abstract_state_is_a_params_type_error_naming_the_state():
    def fn(x):
        return x * sp.get_state("s", (), init=sp.initializers.ones)

    model = sp.transform_with_state(fn)
    params, state = model.init(KEY, jnp.ones(3))
    with pytest.raises(sp.ParamsTypeError, match=r"(?s)State 's' in state .*no values"):
        model.apply(params, jax.eval_shape(lambda: state), jnp.ones(3))


# --- a layer reused on an input of another width or dtype ------------------------------------------


def _line_of(fn, text):
    """The line number of the first line of ``fn``'s source holding ``text``."""
    import inspect
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


def _reused_on_a_wider_input(x):
    sp.layers.dense(x, 4, name="d")
    return sp.layers.dense(jnp.ones((2, 5)), 4, name="d", reuse=True)  # the reusing call


def test_a_layer_reused_on_an_input_of_another_width_says_so_with_a_fix_a_layer_call_can_follow():
    with pytest.raises(sp.ShapeMismatchError) as e:
        sp.transform(_reused_on_a_wider_input).init(KEY, jnp.ones((2, 3)))
    msg = str(e.value)
    assert msg.startswith("Trying to share variable d/kernel, but specified shape (5, 4) and found "
                          "shape (3, 4).")
    asked_line = _line_of(_reused_on_a_wider_input, "the reusing call")
    assert f"asked: shape (5, 4) by layer 'd' at {__file__}:{asked_line}, called on an input of " \
           "shape (2, 5)" in msg
    assert f"found: created at {__file__}:{asked_line - 1}" in msg
    assert "input has last dimension 5, but 'd/kernel' was made for an input with last dimension 3" in msg
    assert "fix: to share 'd/kernel', give this call inputs of last dimension 3" in msg
    assert "another name" in msg
    # get_param's fix, which a layer call cannot follow (it has no shape=), is not given.
    assert "shape=None" not in msg and "pass the stored shape" not in msg


def test_a_conv_layer_reused_on_an_input_with_other_channels_names_the_channels():
    def fn(x):
        sp.layers.conv2d(x, 4, 3, name="c")
        return sp.layers.conv2d(jnp.ones((1, 5, 5, 2)), 4, 3, name="c", reuse=True)

    with pytest.raises(sp.ShapeMismatchError) as e:
        sp.transform(fn).init(KEY, jnp.ones((1, 5, 5, 3)))
    msg = str(e.value)
    assert "Trying to share variable c/kernel, but specified shape (3, 3, 2, 4)" in msg
    assert "input has last dimension 2, but 'c/kernel' was made for an input with last dimension 3" in msg
    assert "shape=None" not in msg


def test_a_layer_reused_with_other_arguments_does_not_blame_the_input_width():
    def fn(x):
        sp.layers.dense(x, 4, name="d")
        return sp.layers.dense(x, 5, name="d", reuse=True)  # units changed, not the input

    with pytest.raises(sp.ShapeMismatchError) as e:
        sp.transform(fn).init(KEY, jnp.ones((2, 3)))
    msg = str(e.value)
    assert "asked: shape (3, 5) by layer 'd' at" in msg
    assert "last dimension" not in msg
    assert "its input and its arguments (units, filters, kernel size, ...)" in msg
    assert "fix: to share 'd/kernel', call the layer with the arguments and on inputs shaped as " \
           "the call that made it" in msg
    assert "shape=None" not in msg


def _reused_on_a_bfloat16_input(x):
    sp.layers.dense(x, 4, name="d")
    return sp.layers.dense(x.astype(jnp.bfloat16), 4, name="d", reuse=True)  # the reusing call


def test_a_layer_reused_on_an_input_of_another_dtype_says_to_cast_the_input():
    with pytest.raises(sp.DtypeMismatchError) as e:
        sp.transform(_reused_on_a_bfloat16_input).init(KEY, jnp.ones((2, 3)))
    msg = str(e.value)
    assert msg.startswith("Trying to share variable d/kernel, but specified dtype bfloat16 and found "
                          "dtype float32.")
    asked_line = _line_of(_reused_on_a_bfloat16_input, "the reusing call")
    assert f"asked: dtype bfloat16 by layer 'd' at {__file__}:{asked_line}, called on an input of " \
           "dtype bfloat16" in msg
    assert f"found: created at {__file__}:{asked_line - 1}" in msg
    assert "a layer makes its parameters in its input's dtype: 'd/kernel' was made for a float32 " \
           "input" in msg
    assert "fix: to share 'd/kernel', cast the input to float32 (x.astype(jnp.float32))" in msg
    # get_param's note and fix (dtype=), which a layer call cannot follow, are not given.
    assert "dtype=None" not in msg and "pass dtype=" not in msg


def test_a_direct_get_param_mismatch_in_init_keeps_get_param_fix_and_says_where_it_was_asked():
    def fn():
        with sp.scope("a"):
            sp.get_param("v", (3,))
        with sp.scope("a", reuse=True):
            sp.get_param("v", (4,))  # the reusing request
        with sp.scope("a", reuse=True):
            return sp.get_param("v", (3,), dtype=jnp.int32)  # the dtype request

    with pytest.raises(sp.ShapeMismatchError) as e:
        sp.transform(fn).init(KEY)
    msg = str(e.value)
    assert f"asked: shape (4,) at {__file__}:{_line_of(fn, 'the reusing request')}" in msg
    assert f"found: created at {__file__}:{_line_of(fn, 'the reusing request') - 2}" in msg
    assert "fix: pass the stored shape, or shape=None to accept the stored one" in msg
    assert "layer" not in msg


def test_a_direct_get_param_dtype_mismatch_in_init_keeps_get_param_fix_and_says_where_it_was_asked():
    def fn():
        with sp.scope("a"):
            sp.get_param("v", (3,))
        with sp.scope("a", reuse=True):
            return sp.get_param("v", (3,), dtype=jnp.int32)  # the dtype request

    with pytest.raises(sp.DtypeMismatchError) as e:
        sp.transform(fn).init(KEY)
    msg = str(e.value)
    assert f"asked: dtype int32 at {__file__}:{_line_of(fn, 'the dtype request')}" in msg
    assert "note: dtype=None means the scope's dtype" in msg
    assert "fix: pass dtype=float32 when sharing it." in msg
    assert "layer" not in msg


def _dense_model(x):
    return sp.layers.dense(x, 4)  # the layer call


@pytest.mark.parametrize("jit", [False, True])
def test_apply_on_an_input_of_another_width_than_init_says_the_input_width_differs(jit):
    model = sp.transform(_dense_model)
    params = model.init(KEY, jnp.ones((2, 3)))
    apply = jax.jit(model.apply) if jit else model.apply
    with pytest.raises(sp.ShapeMismatchError) as e:
        apply(params, jnp.ones((2, 5)))
    msg = str(e.value)
    assert msg.startswith("Trying to share variable dense/kernel, but specified shape (5, 4) and found "
                          "shape (3, 4).")
    assert f"asked: shape (5, 4) by layer 'dense' at {__file__}:" \
           f"{_line_of(_dense_model, 'the layer call')}, called on an input of shape (2, 5)" in msg
    assert "found: shape (3, 4) in the params passed to apply" in msg
    assert "this input's last dimension is 5, but the params were made for an input with last " \
           "dimension 3" in msg
    assert "fix: call apply with inputs shaped as init's (last dimension 3)" in msg


def test_apply_on_an_input_of_another_dtype_than_init_says_to_cast_the_input_or_the_params():
    model = sp.transform(_dense_model)
    params = model.init(KEY, jnp.ones((2, 3)))
    with pytest.raises(sp.DtypeMismatchError) as e:
        model.apply(params, jnp.ones((2, 3), jnp.bfloat16))
    msg = str(e.value)
    assert "asked: dtype bfloat16 by layer 'dense' at" in msg
    assert "found: dtype float32 in the params passed to apply" in msg
    assert "the params were made for float32 inputs" in msg
    assert "fix: cast the input to float32 (x.astype(jnp.float32)) as init's" in msg
    assert "dtype=None" not in msg


# --- a parameter spelled twice in apply's params ---------------------------------------------------


def _enc(x):
    with sp.scope("enc"):
        return x @ sp.get_param("w", (3, 1))


@pytest.mark.parametrize("jit", [False, True])
def test_apply_refuses_params_spelling_one_name_nested_and_flat_as_flatten_does(jit):
    model = sp.transform(_enc)
    x = jnp.ones((1, 3))
    params = model.init(KEY, x)
    loaded = {"enc/w": jnp.full((3, 1), 2.0)}
    apply = jax.jit(model.apply) if jit else model.apply
    for patched in ({**params, **loaded}, {**loaded, **params}):
        with pytest.raises(sp.NameCollisionError, match=r"(?s)'enc/w' is given twice.*fix:"):
            apply(patched, x)
    # One spelling, flat or nested, still works.
    np.testing.assert_allclose(apply(loaded, x), jnp.full((1, 1), 6.0))
    np.testing.assert_allclose(apply({**params, "other/v": jnp.ones(2)}, x), model.apply(params, x))


def _deep(x):
    with sp.scope("net"):
        with sp.scope("enc"):
            w = sp.get_param("w", (3, 1))
        with sp.scope("enc", reuse=True):  # a scope of its own: a second name scope, the same params
            w = w + sp.get_param("w", (3, 1))
        with sp.scope("head"):
            return x @ w * sp.get_param("scale", ())


@pytest.mark.parametrize("jit", [False, True])
def test_apply_refuses_a_name_spelled_nested_and_flat_below_the_top_level(jit):
    # {"net": {"enc/w": ..., "enc": {"w": ...}}}: one full name, two values; the nested lookup of a
    # scope would see one of them, so apply refuses the tree, as sp.flatten does.
    model = sp.transform(_deep)
    x = jnp.ones((1, 3))
    params = model.init(KEY, x)
    apply = jax.jit(model.apply) if jit else model.apply
    patched = {"net": {**params["net"], "enc/w": jnp.full((3, 1), 2.0)}}
    with pytest.raises(sp.NameCollisionError, match=r"(?s)'net/enc/w' is given twice in the params "
                       r"passed to apply.*fix:"):
        apply(patched, x)
    deeper = {"net": {"enc": {"w": params["net"]["enc"]["w"]}, "head": {**params["net"]["head"]},
                      "head/scale": jnp.float32(3.0)}}
    with pytest.raises(sp.NameCollisionError, match="'net/head/scale' is given twice"):
        apply(deeper, x)
    # A full name spelled once below the top level, flat or nested, is found.
    flat_below = {"net": {"enc/w": jnp.full((3, 1), 2.0), "head/scale": jnp.float32(3.0)}}
    np.testing.assert_allclose(apply(flat_below, x), jnp.full((1, 1), 36.0))
    nested = {"net": {"enc": {"w": jnp.full((3, 1), 2.0)}, "head": {"scale": jnp.float32(3.0)}}}
    np.testing.assert_allclose(apply(nested, x), jnp.full((1, 1), 36.0))


# --- an uncalled TF initializer class ------------------------------------------------------------


def test_an_uncalled_tf_initializer_class_is_an_initializer_error_naming_our_equivalent():
    tf = pytest.importorskip("tensorflow")

    def fn(init):
        return sp.get_param("w", (3, 4), init=init)

    model = sp.transform(fn)
    with pytest.raises(sp.InitializerError) as called:
        model.init(KEY, tf.compat.v1.zeros_initializer())
    with pytest.raises(sp.InitializerError) as uncalled:
        model.init(KEY, tf.compat.v1.zeros_initializer)
    assert isinstance(uncalled.value, TypeError)  # what it raised before, for except TypeError
    msg = str(uncalled.value)
    assert msg.startswith("The initializer of 'w' (Zeros) is TF's initializer class, passed uncalled")
    assert "asked: shape (3, 4), dtype float32, at" in msg and "found: the class " in msg
    assert "fix: use sp.initializers.Zeros(dtype='float32')" in str(called.value)
    assert "fix: use sp.initializers.Zeros(dtype='float32')" in msg
    assert "call it" not in msg
    # Following the fix works.
    assert model.init(KEY, sp.initializers.Zeros(dtype="float32"))["w"].shape == (3, 4)


def test_a_typed_prng_key_as_a_constant_initializer_is_an_initializer_error_with_the_fix():
    # (was JAX's "Internal: canonicalize_dtype called on extended dtype key<fry>")
    x = jnp.ones(2)
    for make in (lambda: jax.random.key(1), sp.next_rng_key):
        model = sp.transform_with_state(lambda x: sp.get_state("rng", init=make()))
        with pytest.raises(sp.InitializerError,
                           match=r"The constant initializer of 'rng' is a typed PRNG key \(key<fry>"
                                 r".*\n  fix: store the key's data, init=jax\.random\.key_data\(key\)"):
            model.init(0, x)
    fixed = sp.transform_with_state(lambda x: jax.random.wrap_key_data(
        sp.get_state("rng", init=jax.random.key_data(jax.random.key(1)))))
    _, state = fixed.init(0, x)
    np.testing.assert_array_equal(state["rng"], jax.random.key_data(jax.random.key(1)))


def test_apply_refuses_state_spelling_one_name_nested_and_flat_naming_the_state():
    model = sp.transform_with_state(lambda x: x * sp.get_state("enc/s", init=jnp.ones(2)))
    params, state = model.init(0, jnp.ones(2))
    doubled = {**state, "enc/s": jnp.zeros(2)}
    with pytest.raises(sp.NameCollisionError,
                       match=r"'enc/s' is given twice in the state passed to apply: .*\n  fix: .*"
                             r"state = sp\.unflatten"):
        model.apply(params, doubled, jnp.ones(2))


def test_a_custom_getter_passing_get_params_init_keyword_is_told_tfs_name_with_a_fix():
    def getter(next_getter, name, *args, **kwargs):
        kwargs["init"] = kwargs.pop("initializer")
        return next_getter(name + "_g", *args, **kwargs)

    def fn(x):
        with sp.scope("s", custom_getter=getter):
            return x * sp.get_param("w", (2,))

    with pytest.raises(TypeError, match=r"custom getter passed unknown arguments \['init'\] for "
                                        r"'s/w_g' to its next getter\.\n  asked: .*\n  found: .*"
                                        r"initializer.*\n  fix: init= \(TF's getters say "
                                        r"initializer=\)"):
        sp.transform(fn).init(0, jnp.ones(2))


def test_a_template_made_inside_a_layer_stack_and_called_after_it_names_the_stacked_axis_and_fix():
    template = sp.make_template("shared", lambda x: x @ sp.get_param("w", (3, 3)))

    def fn(x):
        return template(sp.layer_stack(2)(lambda h: template(h))(x))

    with pytest.raises(sp.ShapeMismatchError,
                       match=r"(?s)found: shape \(2, 3, 3\), created at .*: one leading axis more, as "
                             r"a parameter made inside an sp\.layer_stack block has \(2 layers.*"
                             r"\n  fix: to share one parameter .*make it before the stack"):
        sp.transform(fn).init(0, jnp.ones((1, 3)))

    def fixed(x):  # the fix: the template's first call before the stack
        return template(sp.layer_stack(2)(lambda h: template(h))(template(x)))

    params = sp.transform(fixed).init(0, jnp.ones((1, 3)))
    assert sp.flatten(params)["shared/w"].shape == (3, 3)


def test_a_wide_scope_entered_again_and_again_reads_its_params_and_still_refuses_a_name_spelled_twice():
    # A scope's sub-dict was scanned for keys spelling full names on every entry (quadratic in a
    # scope re-entered once per parameter); a wide one is now scanned once per call.
    def fn(x):
        for i in range(40):
            with sp.scope("blk"):
                x = x + sp.get_param(f"w{i}", (2,), init=jax.nn.initializers.ones)
        return x

    model, x = sp.transform(fn), jnp.zeros(2)
    params = model.init(jax.random.key(0), x)
    np.testing.assert_array_equal(model.apply(params, x), [40.0, 40.0])
    np.testing.assert_array_equal(jax.jit(model.apply)(params, x), [40.0, 40.0])
    # a key of the wide sub-dict spelling a full name, given twice: refused as before
    twice = {"blk": {**params["blk"], "sub/v": jnp.ones(2), "sub": {"v": jnp.ones(2)}}}
    with pytest.raises(sp.NameCollisionError, match=r"'blk/sub/v'"):
        model.apply(twice, x)
