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


def test_a_constant_string_that_is_no_dtype_keeps_its_own_error():
    with pytest.raises(sp.InitializerError, match="If initializer is a constant, do not specify shape"):
        sp.transform(lambda: sp.get_param("w", [2], "hello")).init(KEY)
