"""``tf.get_variable``'s arguments beyond API.md's ``get_param`` signature, as ported code passes them.

``partitioner=`` and ``custom_getter=`` work as in TF (rule 42: a getter given to the request replaces
the scope's chain); TF's runtime settings, TF's ``initializer=`` spelling and TF's positional
``(name, shape, dtype)`` order are errors that spell the port.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)


def suffix(s):
    def add_suffix(getter, name, *args, **kwargs):  # TF passes `getter` by keyword
        return getter(name + s, *args, **kwargs)
    return add_suffix


def test_a_getter_passed_to_get_param_replaces_the_scopes_getters():
    # TF rule 42: `if custom_getter is None: custom_getter = self._custom_getter`.
    def fn():
        with sp.scope("o", custom_getter=suffix("_o")):
            with sp.scope("a", custom_getter=suffix("_s")):
                sp.get_param("v", [2], custom_getter=suffix("_g"))
                sp.get_param("u", [2])

    model = sp.transform(fn)
    params = model.init(KEY)
    assert set(sp.flatten(params)) == {"o/a/v_g", "o/a/u_s_o"}
    model.apply(params)  # the getter runs in apply too, and finds what init made


def test_a_getter_passed_to_get_param_names_what_tf_names():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1

    def program(scope, get):
        with scope("o", custom_getter=suffix("_o")):
            with scope("a", custom_getter=suffix("_s")):
                get("v", [2], custom_getter=suffix("_g"))
                get("u", [2])

    with tf.Graph().as_default():
        program(v1.variable_scope, v1.get_variable)
        expected = [v.op.name for v in v1.global_variables()]
    assert list(sp.flatten(sp.transform(lambda: program(sp.scope, sp.get_param)).init(KEY))) == expected


def test_a_partitioner_passed_to_get_param_replaces_the_scopes():
    four, two = sp.sharding.fixed_size_partitioner(4), sp.sharding.fixed_size_partitioner(2)

    def fn():
        with sp.scope("a", partitioner=two):
            sp.get_param("v", [4, 2], partitioner=four)
            sp.get_param("u", [4, 2])
        sp.get_param("x", [4], partitioner=four)

    specs = sp.flatten(sp.transform(fn).specs())
    assert {name: spec.partitioner for name, spec in specs.items()} == {
        "a/v": four, "a/u": two, "x": four}


@pytest.mark.parametrize("make", [
    lambda: sp.scope("s", partitioner=42),
    lambda: sp.scope("s", partitioner=42, reuse=sp.AUTO_REUSE, initializer=sp.initializers.ones),
    lambda: sp.scope("s", partitioner=42, custom_getter=lambda g, *a, **k: g(*a, **k))])
def test_a_scope_partitioner_that_is_not_callable_is_tfs_value_error_at_a_non_scalar_parameter(make):
    # TF 1.x: "ValueError: Partitioner must be callable, but received: 42", at get_variable of a
    # non-scalar (a scalar's partitioner is never called). Before, init and apply took it, and only
    # sp.shardings complained.
    def scalar_only():
        with make():
            return sp.get_param("c", ())

    assert list(sp.flatten(sp.transform(scalar_only).init(KEY))) == ["s/c"]

    def fn():
        with make():
            return sp.get_param("w", (16, 8))

    with pytest.raises(ValueError, match=r"^Partitioner must be callable, but received: 42 "
                                         r"\(parameter 's/w'\)") as e:
        sp.transform(fn).init(KEY)
    assert isinstance(e.value, sp.sharding.PartitionerError)  # what sp.shardings raises for it
    assert isinstance(e.value, TypeError)
    assert "fix: pass a callable (name, shape, dtype) -> PartitionSpec | None" in str(e.value)


def test_a_partitioner_passed_to_get_param_that_is_not_callable_is_tfs_value_error():
    def fn():
        with sp.scope("s"):
            return sp.get_param("w", (16, 8), partitioner=42)

    model = sp.transform(fn)
    for run in (lambda: model.init(KEY), lambda: model.apply({"s": {"w": jnp.zeros((16, 8))}})):
        with pytest.raises(ValueError, match=r"^Partitioner must be callable, but received: 42 "
                                             r"\(parameter 's/w'\)") as e:
            run()
        assert "fix: pass a callable" in str(e.value)
    # TF ignores a partitioner for a scalar; a list of rules is sp.sharding.Rules
    sp.transform(lambda: sp.get_param("c", (), partitioner=42)).init(KEY)
    sp.transform(lambda: sp.get_param("w", (4,), partitioner=[(r"w$", None)])).init(KEY)


def test_a_sharding_given_as_a_string_is_a_type_error_naming_the_parameter():
    def fn():
        with sp.scope("s"):
            return sp.get_param("w", (6, 3), sharding="model")

    with pytest.raises(TypeError, match=r"The sharding of 's/w' is str 'model', not a PartitionSpec") as e:
        sp.transform(fn).init(KEY)
    assert "fix: sharding=jax.sharding.PartitionSpec('model')" in str(e.value)


def test_tf_runtime_arguments_of_get_variable_are_errors_that_say_drop_them():
    def fn():
        sp.get_param("w", [2], use_resource=True, validate_shape=False)

    with pytest.raises(TypeError, match=r"get_param\('w'\) does not take use_resource=, "
                                        r"validate_shape= of TF 1\.x's get_variable: use_resource= is "
                                        r"(?s:.*)fix: drop them\."):
        sp.transform(fn).init(KEY)
    for name, value in [("caching_device", "/cpu:0"), ("synchronization", 0), ("aggregation", 0)]:
        with pytest.raises(TypeError, match=rf"does not take {name}= (?s:.*)fix: drop it\."):
            sp.transform(lambda: sp.get_param("w", [2], **{name: value})).init(KEY)
    with pytest.raises(TypeError, match=r"get_param\(\) got an unexpected keyword argument 'resue'"):
        sp.transform(lambda: sp.get_param("w", [2], resue=True)).init(KEY)
    with pytest.raises(ValueError, match=r"Passed a custom_getter which is not callable: 3"):
        sp.transform(lambda: sp.get_param("w", [2], custom_getter=3)).init(KEY)


def test_tfs_initializer_keyword_is_an_error_that_says_init():
    with pytest.raises(TypeError, match=r"get_param\('w'\) takes init=, not TF's initializer=\.\n"
                                        r"  fix: rename initializer= to init="):
        sp.transform(lambda: sp.get_param("w", [2], initializer=sp.initializers.zeros)).init(KEY)


@pytest.mark.parametrize("dtype, shown", [(jnp.float32, "jnp.float32"), (np.int32, "np.int32"),
                                          (np.dtype("float16"), "np.float16"),
                                          ("float32", "'float32'")])
def test_a_dtype_in_tfs_third_position_is_an_error_that_says_pass_it_by_keyword(dtype, shown):
    # tf.get_variable(name, shape, dtype): here the third argument is init.
    with pytest.raises(TypeError, match=rf"get_param's third argument is init, and 'enc/w' got the "
                                        rf"dtype {shown} there: TF's get_variable\(name, shape, dtype\) "
                                        rf"order\.\n  fix: pass it by keyword, dtype={shown}"):
        def fn():
            with sp.scope("enc"):
                sp.get_param("w", [2], dtype)
        sp.transform(fn).init(KEY)


def test_tfs_own_dtype_in_the_third_position_is_the_same_error():
    tf = pytest.importorskip("tensorflow")
    with pytest.raises(TypeError, match=r"'w' got the dtype tf.float32 there(.|\n)*"
                                        r"fix: pass it by keyword, dtype=tf.float32"):
        sp.transform(lambda: sp.get_param("w", [2], tf.float32)).init(KEY)


def test_a_shape_dtype_struct_as_init_is_an_error_saying_it_has_no_values_in_init_and_apply():
    model = sp.transform(lambda: sp.get_param("w", init=jax.ShapeDtypeStruct((2,), jnp.float32)))
    for run in (lambda: model.init(KEY), lambda: model.apply({"w": jnp.zeros(2)})):
        with pytest.raises(TypeError, match=r"The constant initializer of 'w' is ShapeDtypeStruct"
                                            r"(.|\n)*has a shape and a dtype but no values") as e:
            run()
        assert "init=sp.initializers.zeros, dtype=jnp.float32)" in str(e.value)


def test_a_string_init_with_a_shape_says_what_a_string_init_is_not_in_init_and_apply():
    # Before: "do not specify shape", and dropping shape= only led to this error (a second one).
    for init, fix in (("zeros", "pass the initializer itself: init=sp.initializers.zeros"),
                      ("hello", "pass a number or an array of numbers")):
        model = sp.transform(lambda: sp.get_param("w", [2], init=init))
        for run in (lambda: model.init(KEY), lambda: model.apply({"w": jnp.zeros(2)})):
            with pytest.raises(TypeError, match=rf"The constant initializer of 'w' is str '{init}', "
                                                r"not a number") as e:
                run()
            assert f"fix: {fix}" in str(e.value)


def test_a_string_constant_init_says_to_pass_the_initializer_itself():
    # Keras names initializers by strings; here init="zeros" reached NumPy as a string constant.
    model = sp.transform(lambda: sp.get_param("w", init="zeros"))
    for run in (lambda: model.init(KEY), lambda: model.apply({"w": jnp.zeros(())})):
        with pytest.raises(TypeError, match=r"The constant initializer of 'w' is str 'zeros', not a number"
                                            r".*\n  fix: pass the initializer itself: "
                                            r"init=sp.initializers.zeros"):
            run()
    with pytest.raises(TypeError, match=r"of 'w' is str 'nonsense'.*\n  fix: pass a number"):
        sp.transform(lambda: sp.get_param("w", init="nonsense", dtype=jnp.float32)).init(KEY)


def test_trainable_none_means_trainable_as_in_tf_unless_the_scope_says_false():
    # TF: trainable=None is the default, True; a custom getter passes it on as TF's true getter
    # does. Before: None made the parameter frozen.
    def none_getter(getter, name, *args, **kwargs):
        kwargs["trainable"] = None
        return getter(name, *args, **kwargs)

    def fn():
        sp.get_param("direct", [2], trainable=None)
        with sp.scope("g", custom_getter=none_getter):
            sp.get_param("w", [2])
        with sp.scope("frozen", trainable=False):
            sp.get_param("direct", [2], trainable=None)
            with sp.scope("g", custom_getter=none_getter):
                sp.get_param("w", [2])

    specs = sp.flatten(sp.transform(fn).specs())
    assert {k: s.trainable for k, s in specs.items()} == {
        "direct": True, "g/w": True, "frozen/direct": False, "frozen/g/w": False}


def test_tf_dtypes_are_taken_wherever_a_dtype_is():
    # Ported TF code passes tf.float32 (a DType NumPy cannot read) to get_variable, variable_scope
    # and custom getters.
    tf = pytest.importorskip("tensorflow")

    def cast_getter(getter, name, *args, **kwargs):
        kwargs["dtype"] = tf.float16
        return getter(name, *args, **kwargs)

    def fn():
        a = sp.get_param("a", [2], dtype=tf.int32)
        with sp.scope("s", dtype=tf.bfloat16):
            b = sp.get_param("b", [2])
        with sp.scope("g", custom_getter=cast_getter):
            c = sp.get_param("c", [2])
        d = sp.get_param("d", init=1.5, dtype=tf.float32)
        with sp.scope(sp.get_scope(), reuse=True):
            a2 = sp.get_param("a", [2], dtype=tf.int32)
        return a, b, c, d, a2

    model = sp.transform(fn)
    params = model.init(KEY)
    assert {k: v.dtype for k, v in sp.flatten(params).items()} == {
        "a": jnp.int32, "s/b": jnp.bfloat16, "g/c": jnp.float16, "d": jnp.float32}
    for apply in (model.apply, jax.jit(model.apply)):
        apply(params)
    with pytest.raises(sp.DtypeMismatchError, match="specified dtype int32 and found dtype float32"):
        sp.transform(lambda: sp.get_param("a", [2], dtype=tf.int32)).apply({"a": jnp.zeros(2)})


@pytest.mark.parametrize("dtype", ["floaty", object, str])
def test_a_dtype_that_is_no_dtype_is_an_error_naming_the_parameter_in_init_and_apply(dtype):
    def fn():
        with sp.scope("enc"):
            return sp.get_param("w", [2], dtype=dtype)

    model = sp.transform(fn)
    for run in (lambda: model.init(KEY), lambda: model.apply({"enc": {"w": jnp.zeros(2)}})):
        with pytest.raises(TypeError, match=r"dtype=.* of 'enc/w' is not a dtype JAX has\.\n  asked: "
                                            r".*\n  fix: pass a NumPy/JAX dtype"):
            run()


@pytest.mark.parametrize("make", [
    lambda: sp.scope("a", dtype="notadtype"),
    lambda: sp.scope("a", dtype="notadtype", custom_getter=lambda g, *a, **k: g(*a, **k))])
def test_a_scope_dtype_that_is_no_dtype_is_an_error_naming_the_scope(make):
    # Before: NumPy's bare "data type 'notadtype' not understood".
    def fn():
        with make():
            return sp.get_param("w", (3,))

    with pytest.raises(TypeError, match=r"^dtype='notadtype' of scope 'a' is not a dtype JAX has\.\n"
                                        r"  asked: sp.scope\('a', dtype='notadtype'\)\n"
                                        r"  fix: pass a NumPy/JAX dtype"):
        sp.transform(fn).init(KEY)

    def set_dtype():
        with sp.scope("a") as s:
            s.set_dtype("notadtype")

    with pytest.raises(TypeError, match=r"dtype='notadtype' of scope 'a' is not a dtype JAX has(.|\n)*"
                                        r"asked: set_dtype\('notadtype'\)"):
        sp.transform(set_dtype).init(KEY)


def test_a_regularizer_that_is_not_callable_is_an_error_when_the_parameter_is_created():
    # Before: accepted, and sp.regularization_loss() later failed with "'float' object is not callable".
    def fn():
        with sp.scope("enc"):
            sp.get_param("w", [2], init=sp.initializers.ones, regularizer=0.01)
        return sp.regularization_loss()

    with pytest.raises(TypeError, match=r"The regularizer of 'enc/w' must be a callable, got float 0.01"
                                        r".*\n  fix: pass a function of the parameter's value, e.g. "
                                        r"regularizer=sp.l2_regularizer\(0.01\)"):
        sp.transform(fn).init(KEY)

    def scoped():
        with sp.scope("enc", regularizer="l2"):
            sp.get_param("w", [2])

    with pytest.raises(TypeError, match="The regularizer of 'enc/w' must be a callable, got str 'l2'"):
        sp.transform(scoped).init(KEY)


def test_a_regularizer_that_is_not_callable_is_the_same_error_in_apply():
    # Before: apply's common path took it, and apply returned (or sp.regularization_loss() failed
    # with "'float' object is not callable").
    def fn(regularizer, scope_regularizer=None):
        with sp.scope("enc", regularizer=scope_regularizer):
            sp.get_param("w", [2], regularizer=regularizer)
        return sp.regularization_loss()

    model = sp.transform(fn)
    params = model.init(KEY, None)
    for args, shown in (((0.01,), "float 0.01"), ((None, "l2"), "str 'l2'")):
        for apply in (model.apply, jax.jit(model.apply, static_argnums=(1, 2))):
            with pytest.raises(TypeError, match=rf"The regularizer of 'enc/w' must be a callable, got "
                                                rf"{shown}.*\n  fix: pass a function of the "
                                                r"parameter's value"):
                apply(params, *args)
    assert float(model.apply(params, sp.l2_regularizer(1.0))) == pytest.approx(
        float(0.5 * jnp.sum(params["enc"]["w"] ** 2)))


def test_a_tf_tensor_as_init_is_its_value_in_init_and_apply():
    # Ported code: tf.get_variable("var10", dtype=tf.int32, initializer=tf.constant(3)). Before:
    # "Cannot interpret 'tf.int32' as a data type", naming no parameter.
    tf = pytest.importorskip("tensorflow")
    # Eager TF, whatever another test module set for the process (tests/test_layers_parity.py
    # turns eager execution off when it is imported).
    from tensorflow.python.eager import context

    table = np.arange(6.0).reshape(2, 3)

    def fn():
        a = sp.get_param("var10", dtype=tf.int32, init=tf.constant(3))
        b = sp.get_param("embedding_matrix", init=tf.cast(table, tf.float32))
        c = sp.get_param("v", init=tf.Variable([1.0, 2.0]))
        d = sp.get_param("lazy", init=lambda: tf.ones([2], tf.int32))  # a no-argument initializer
        return a, b, c, d

    model = sp.transform(fn)
    with context.eager_mode():
        params = model.init(KEY)
    flat = sp.flatten(params)
    assert {k: (v.dtype, v.shape) for k, v in flat.items()} == {
        "var10": (jnp.int32, ()), "embedding_matrix": (jnp.float32, (2, 3)), "v": (jnp.float32, (2,)),
        "lazy": (jnp.int32, (2,))}
    assert int(flat["var10"]) == 3
    np.testing.assert_array_equal(flat["embedding_matrix"], table)
    np.testing.assert_array_equal(flat["v"], [1.0, 2.0])
    np.testing.assert_array_equal(flat["lazy"], [1, 1])
    with context.eager_mode():
        for apply in (model.apply, jax.jit(model.apply)):
            assert [x.shape for x in apply(params)] == [(), (2, 3), (2,), (2,)]


def test_a_symbolic_tf_tensor_as_init_is_an_error_saying_pass_its_value_in_init_and_apply():
    tf = pytest.importorskip("tensorflow")
    with tf.Graph().as_default():
        symbolic = tf.constant([1.0, 2.0])

    model = sp.transform(lambda: sp.get_param("w", init=symbolic))
    for run in (lambda: model.init(KEY), lambda: model.apply({"w": jnp.zeros(2)})):
        with pytest.raises(TypeError, match=r"The constant initializer of 'w' is a symbolic TF tensor "
                                            r"(.|\n)*has no value(.|\n)*\n  fix: pass its value as a "
                                            r"NumPy or JAX array"):
            run()


@pytest.mark.parametrize("dtype, shown", [("float32", "'float32'"), (np.float32, "np.float32"),
                                          (jnp.float32, "jnp.float32")])
def test_a_dtype_in_the_third_position_before_an_initializer_is_the_order_error_in_init_and_apply(
        dtype, shown):
    # get_param("w", [2], "float32", init): before, "the constant initializer of 'w' is str".
    model = sp.transform(lambda: sp.get_param("w", [2], dtype, sp.initializers.zeros))
    for run in (lambda: model.init(KEY), lambda: model.apply({"w": jnp.zeros(2)})):
        with pytest.raises(TypeError, match=rf"get_param's third argument is init, and 'w' got the "
                                            rf"dtype {shown} there(.|\n)*fix: pass it by keyword, "
                                            rf"dtype={shown}"):
            run()


def test_tfs_own_dtype_in_the_third_position_before_an_initializer_is_the_order_error():
    tf = pytest.importorskip("tensorflow")
    model = sp.transform(lambda: sp.get_param("w", [2], tf.float32, sp.initializers.zeros))
    for run in (lambda: model.init(KEY), lambda: model.apply({"w": jnp.zeros(2)})):
        with pytest.raises(TypeError, match=r"'w' got the dtype tf.float32 there(.|\n)*"
                                            r"fix: pass it by keyword, dtype=tf.float32"):
            run()
