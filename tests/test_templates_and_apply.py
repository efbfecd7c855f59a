"""apply as TF's later template calls: reference sections J, K and L (rules 54-58)."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)


def paths(tree):
    return set(sp.flatten(tree))


def first_line(exc):
    return str(exc.value).splitlines()[0]


# --- J. one constructor, never silently uniquified ------------------------------------------------


def test_repeated_name_is_never_silently_uniquified_in_init_or_apply():
    def fn(dup):
        sp.get_param("v", [])
        if dup:
            sp.get_param("v", [])

    model = sp.transform(fn)
    params = model.init(KEY, False)
    with pytest.raises(ValueError, match="Variable v already exists, disallowed"):
        model.init(KEY, True)
    with pytest.raises(ValueError, match="Variable v already exists, disallowed"):
        model.apply(params, True)


# --- K. scope API errors --------------------------------------------------------------------------


def test_closing_scopes_out_of_order_is_improper_nesting():
    def fn():
        outer = sp.scope("bb")
        outer.__enter__()
        with sp.scope("cc"):
            outer.__exit__(None, None, None)

    with pytest.raises(RuntimeError, match="Improper nesting of scope: closing 'bb' while 'bb/cc' is "
                                           "open") as e:
        sp.transform(fn).init(KEY)
    assert isinstance(e.value, sp.ScopeNestingError)
    assert "fix: close scopes in the reverse order" in str(e.value)


@pytest.mark.parametrize("make", [lambda: sp.scope("aa"), lambda: sp.scope("aa", reuse=True),
                                  lambda: sp.scope("aa", initializer=sp.initializers.zeros),
                                  lambda: sp.scope(None, default_name="aa"),
                                  lambda: sp.scope("aa", custom_getter=lambda g, *a, **k: g(*a, **k))])
@pytest.mark.parametrize("apply", [False, True])
def test_improper_nesting_is_not_chained_to_an_internal_error(make, apply):
    # The user sees the ScopeNestingError alone, not "During handling of the above exception"
    # after an IndexError of the library's.
    def fn(close_unopened):
        if close_unopened:
            make().__exit__(None, None, None)
        outer = make()
        outer.__enter__()
        sp.scope("bb").__enter__()
        outer.__exit__(None, None, None)

    model = sp.transform(fn)
    for close_unopened in (False, True):
        run = (lambda: model.apply({}, close_unopened)) if apply else (
            lambda: model.init(KEY, close_unopened))
        with pytest.raises(sp.ScopeNestingError) as e:
            run()
        shown, error = [], e.value  # the chain a traceback prints (JAX may put its own in __cause__)
        while error is not None:
            error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
            shown.append(type(error).__name__)
        assert "IndexError" not in shown and "AttributeError" not in shown, shown


def test_closing_name_scopes_out_of_order_is_improper_nesting():
    def fn():
        outer = sp.name_scope("a")
        outer.__enter__()
        with sp.name_scope("b"):
            outer.__exit__(None, None, None)

    with pytest.raises(RuntimeError, match="Improper nesting of name_scope: closing 'a' while 'a/b'"):
        sp.transform(fn).init(KEY)


def test_a_scope_object_entered_again_while_open_nests():
    # sp.scope(...) is a recipe: each `with` enters it anew, as a second sp.scope("x") would.
    def fn():
        for s in (sp.scope("x"), sp.scope("y", initializer=sp.initializers.zeros)):
            with s as outer:
                with s as inner:
                    sp.get_param("w", [1])
                assert (outer.name, inner.name) in {("x", "x/x"), ("y", "y/y")}
                assert sp.get_scope() is outer

    params = sp.transform(fn).init(KEY)
    assert set(sp.flatten(params)) == {"x/x/w", "y/y/w"}


def test_default_name_and_reuse_scope_objects_are_recipes_too():
    # sp.scope(None, default_name=...) and sp.scope(name, reuse=...) may be one shared object per
    # value; each `with` still enters anew, also nested in itself.
    def fn():
        d = sp.scope(None, default_name="d")
        with d as first:
            with d as inner:
                sp.get_param("w", [1])
        with sp.scope(None, default_name="d") as second:
            pass
        r = sp.scope("d", reuse=True)
        with r as outer:
            with r as nested:
                assert (outer.reuse, nested.reuse) == (True, True)
        assert (first.name, inner.name, second.name, outer.name, nested.name) == (
            "d", "d/d", "d_1", "d", "d/d")
        with r:
            return sp.get_param("d/w", [1])

    model = sp.transform(fn)
    params = model.init(KEY)
    assert set(sp.flatten(params)) == {"d/d/w"}
    assert model.apply(params) is params["d"]["d"]["w"]


@pytest.mark.parametrize("how", ["reuse=True", "AUTO_REUSE", "reuse_variables()"])
def test_apply_checks_each_fetch_in_a_reusing_scope_as_init_does(how):
    @contextlib.contextmanager
    def reusing(name):
        if how == "reuse_variables()":
            with sp.scope(name) as s:
                s.reuse_variables()
                yield
        else:
            with sp.scope(name, reuse=True if how == "reuse=True" else sp.AUTO_REUSE):
                yield

    def fn(shape=(2,), dtype=None, fetch_first=False):
        if fetch_first:
            with reusing("s"):
                sp.get_param("v", [2])
        with sp.scope("s"):
            v = sp.get_param("v", [2], regularizer=lambda w: jnp.sum(w ** 2))
        with reusing("s"):
            w = sp.get_param("v", shape, dtype=dtype)
        return v, w, sp.regularization_loss()

    model = sp.transform(fn)
    params = model.init(KEY)
    v, w, loss = model.apply(params)
    assert v is w is params["s"]["v"]
    np.testing.assert_allclose(loss, jnp.sum(v ** 2))  # counted once: the fetch creates nothing
    with pytest.raises(sp.ShapeMismatchError, match=r"specified shape \(3,\) and found shape \(2,\)"):
        model.apply(params, (3,))
    with pytest.raises(sp.DtypeMismatchError, match="specified dtype int32 and found dtype float32"):
        model.apply(params, (2,), jnp.int32)
    if how == "AUTO_REUSE":  # the early request creates it, so the plain scope's is a second one
        with pytest.raises(sp.ParamExistsError, match="Variable s/v already exists"):
            model.apply(params, fetch_first=True)
    else:  # reuse on before anything in this call created it: as in init, it does not exist
        with pytest.raises(sp.ParamNotFoundError, match="Variable s/v does not exist"):
            model.apply(params, fetch_first=True)
        with pytest.raises(sp.ParamNotFoundError, match="Variable s/v does not exist"):
            model.init(KEY, fetch_first=True)


def test_closing_a_plain_scope_inside_a_scope_with_options_is_improper_nesting():
    def fn():
        outer = sp.scope("aa")
        outer.__enter__()
        with sp.scope("bb", reuse=sp.AUTO_REUSE):
            outer.__exit__(None, None, None)

    with pytest.raises(sp.ScopeNestingError, match="closing 'aa' while 'aa/bb' is open"):
        sp.transform(fn).init(KEY)


def test_exiting_a_scope_that_is_not_open_is_improper_nesting():
    def fn():
        sp.scope("x").__exit__(None, None, None)

    with pytest.raises(sp.ScopeNestingError, match=r"Closing sp.scope\('x'\), which is not open"):
        sp.transform(fn).init(KEY)


def test_exiting_a_name_scope_that_is_not_open_is_improper_nesting():
    def fn():
        sp.name_scope("n").__exit__(None, None, None)

    with pytest.raises(sp.ScopeNestingError, match=r"Closing sp.name_scope\('n'\), which is not open"):
        sp.transform(fn).init(KEY)


def test_scope_signature_is_the_documented_one():
    import inspect

    params = inspect.signature(sp.scope).parameters
    # API.md's arguments in its order, then TF's constraint (rule 26), which it does not list.
    assert list(params) == ["name_or_scope", "default_name", "reuse", "initializer", "dtype",
                            "regularizer", "trainable", "custom_getter", "partitioner",
                            "auxiliary_name_scope", "constraint"]
    assert params["name_or_scope"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(params.values())[1:])
    assert params["auxiliary_name_scope"].default is True
    with pytest.raises(TypeError, match="unexpected keyword argument 'resue'"):
        sp.scope("x", resue=True)
    with pytest.raises(TypeError):
        sp.scope("x", "y")


def test_get_param_signature_is_the_documented_one():
    import inspect

    P = inspect.Parameter
    params = list(inspect.signature(sp.get_param).parameters.values())
    # API.md: get_param(name, shape=None, init=None, dtype=None, *, trainable=True, regularizer=None,
    # collections=None, sharding=None); then TF's constraint= and its other get_variable keywords.
    assert [(p.name, p.kind, p.default) for p in params[:8]] == [
        ("name", P.POSITIONAL_OR_KEYWORD, P.empty), ("shape", P.POSITIONAL_OR_KEYWORD, None),
        ("init", P.POSITIONAL_OR_KEYWORD, None), ("dtype", P.POSITIONAL_OR_KEYWORD, None),
        ("trainable", P.KEYWORD_ONLY, True), ("regularizer", P.KEYWORD_ONLY, None),
        ("collections", P.KEYWORD_ONLY, None), ("sharding", P.KEYWORD_ONLY, None)]
    assert all(p.kind in (P.KEYWORD_ONLY, P.VAR_KEYWORD) for p in params[8:])
    assert params[8].name == "constraint" and params[8].default is None

    def fn():
        return sp.get_param("w", [2], None, np.float32, False)  # trainable is keyword-only

    with pytest.raises(TypeError, match=r"takes from 1 to 4 positional arguments but 5 were given"):
        sp.transform(fn).init(KEY)


def test_tf_variable_scopes_positional_form_and_graph_arguments_get_errors_that_spell_the_port():
    # tf.variable_scope(scope, "conv", [inputs]) is everywhere in slim-style TF 1.x code.
    x = jnp.ones(2)
    with pytest.raises(TypeError, match=r"sp\.scope takes one positional argument \(name_or_scope\), "
                                        r"got 3: TF 1\.x's variable_scope\(name_or_scope, default_name, "
                                        r"values\) order") as e:
        sp.scope(None, "conv", [x])
    assert "fix: sp.scope(None, default_name='conv') and drop values" in str(e.value)
    with pytest.raises(TypeError, match=r"fix: sp\.scope\('s', default_name='conv'\):"):
        sp.scope("s", "conv")
    with pytest.raises(TypeError, match=r"fix: sp\.scope\(scope, default_name='conv'\)"):
        sp.scope(sp.Scope.__new__(sp.Scope), "conv")
    with pytest.raises(TypeError, match=r"sp\.scope does not take values= of TF 1\.x's variable_scope: "
                                        r"values= is the tensors passed to pick the graph") as e:
        sp.scope("s", default_name="conv", values=[x])
    assert str(e.value).endswith("fix: drop it.")
    with pytest.raises(TypeError, match=r"does not take caching_device=, use_resource= of TF 1\.x's "
                                        r"variable_scope: (?s:.*)fix: drop them\.$"):
        sp.scope("s", use_resource=True, caching_device="/cpu:0")


def test_scope_outside_a_transform_is_a_runtime_error():
    with pytest.raises(RuntimeError, match=r"sp.scope\(\) was called outside a transformed function"):
        with sp.scope("x"):
            pass


# --- L. init is the first template call, apply the later ones -------------------------------------


def test_apply_never_creates_and_can_be_called_repeatedly():
    def fn():
        return sp.get_param("dummy", [1])

    model = sp.transform(fn)
    p = model.init(KEY)
    before = dict(p)
    for _ in range(3):
        out = model.apply(p)
        assert out is p["dummy"]
    assert paths(p) == {"dummy"} and p == before


def test_transform_unpacks_into_init_and_apply():
    init, apply = sp.transform(lambda x: x * sp.get_param("w", init=2.0))
    p = init(KEY, jnp.ones(()))
    assert float(apply(p, jnp.float32(3.0))) == 6.0


def test_default_name_scopes_number_repeated_blocks_like_templates():
    def block(x):
        with sp.scope(None, default_name="s1"):
            return x * sp.get_param("dummy", init=1.0)

    def fn(x):
        return block(block(x))

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones(()))
    assert paths(params) == {"s1/dummy", "s1_1/dummy"}
    assert float(model.apply(params, jnp.float32(2.0))) == 2.0


def test_apply_with_a_new_code_path_raises_does_not_exist():
    def fn(flag):
        with sp.scope("s1"):
            with sp.scope("test" if not flag else "not_test"):
                return sp.get_param("dummy", [1])

    model = sp.transform(fn)
    p = model.init(KEY, False)
    model.apply(p, False)
    with pytest.raises(ValueError, match="Variable s1/not_test/dummy does not exist") as e:
        model.apply(p, True)
    msg = str(e.value)
    assert isinstance(e.value, sp.ParamNotFoundError)
    assert "Was it created during init? Did the code path change" in msg
    assert "'s1/test/dummy'" in msg  # nearest existing name
    assert "re-run init" in msg
    # apply never creates: only the params (or the name) can be the fix, not reuse=
    assert ("fix: pass the params this model's init returned (re-run init after changing the model), "
            "or check the name.") in msg
    assert "create it first" not in msg and "reuse=sp.AUTO_REUSE to create it" not in msg


def test_apply_with_missing_param_raises_even_under_auto_reuse():
    def fn():
        with sp.scope("s", reuse=sp.AUTO_REUSE):
            return sp.get_param("v", [])

    with pytest.raises(ValueError, match="Variable s/v does not exist"):
        sp.transform(fn).apply({})


def test_apply_shape_mismatch_against_params_is_an_error():
    def fn():
        with sp.scope("a"):
            return sp.get_param("v", [2])

    model = sp.transform(fn)
    with pytest.raises(ValueError, match=r"Trying to share variable a/v, but specified shape \(2,\) "
                                         r"and found shape \(3,\)") as e:
        model.apply({"a": {"v": jnp.zeros(3)}})
    assert isinstance(e.value, sp.ShapeMismatchError)


_STALE_FIX = ("fix: the params do not match the model: pass the params this model's init returned "
              "(re-run init after changing the model), or convert the stored value.")


@pytest.mark.parametrize("reuse", [None, sp.AUTO_REUSE])
@pytest.mark.parametrize("getter", [None, lambda getter, *a, **k: getter(*a, **k)])
def test_apply_against_params_of_another_shape_or_dtype_says_the_params_do_not_match_the_model(
        getter, reuse):
    # The creating request finds params' own value: nothing in this call created it, so it is not
    # "created at" the asking line, and shape=None / dtype= there would pass apply and fail init.
    # (A custom getter takes the general path; without one, get_param's inline one.)
    def fn(x, dtype):
        with sp.scope("a", custom_getter=getter, reuse=reuse):
            w = sp.get_param("w", (3, 5), dtype=dtype)
        return x @ w

    model = sp.transform(fn)
    stale = {"a": {"w": jnp.ones((3, 4))}}
    x = jnp.ones((2, 3))
    for apply in (model.apply, jax.jit(model.apply, static_argnums=2)):
        with pytest.raises(sp.ShapeMismatchError) as e:
            apply(stale, x, None)
        msg = str(e.value)
        assert msg.startswith("Trying to share variable a/w, but specified shape (3, 5) and found shape "
                              "(3, 4).")
        assert f"asked: shape (3, 5) at {__file__}:" in msg
        assert "found: shape (3, 4) in the params passed to apply" in msg
        assert _STALE_FIX in msg
        assert "created at" not in msg and "shape=None" not in msg
    with pytest.raises(sp.DtypeMismatchError) as e:
        model.apply({"a": {"w": jnp.ones((3, 5))}}, x, jnp.bfloat16)
    msg = str(e.value)
    assert msg.startswith("Trying to share variable a/w, but specified dtype bfloat16 and found dtype "
                          "float32.")
    assert "found: dtype float32 in the params passed to apply" in msg
    assert _STALE_FIX in msg
    assert "created at" not in msg and "pass dtype=" not in msg


def test_apply_state_of_another_shape_says_the_state_does_not_match_the_model():
    model = sp.transform_with_state(lambda: sp.get_state("s", (4,), init=sp.initializers.zeros))
    with pytest.raises(sp.ShapeMismatchError) as e:
        model.apply({}, {"s": jnp.zeros(3)})
    msg = str(e.value)
    assert "found: shape (3,) in the state passed to apply" in msg
    assert "fix: the state does not match the model: pass the state this model's init returned" in msg


@pytest.mark.parametrize("reuse", [True, sp.AUTO_REUSE])
def test_apply_mismatch_of_a_reuse_says_where_this_call_created_the_parameter(reuse):
    def fn(x, shape):
        with sp.scope("a"):
            w = sp.get_param("w", (3, 4))  # fn's line + 2
        with sp.scope("a", reuse=reuse):
            return x @ w + sp.get_param("w", shape).sum()

    model = sp.transform(fn)
    x = jnp.ones((2, 3))
    params = model.init(KEY, x, (3, 4))
    with pytest.raises(sp.ShapeMismatchError) as e:
        model.apply(params, x, (3, 5))
    msg = str(e.value)
    assert f"found: created at {__file__}:{fn.__code__.co_firstlineno + 2}" in msg
    assert "fix: pass the stored shape, or shape=None to accept the stored one" in msg
    assert "in the params passed to apply" not in msg


def test_apply_dtype_mismatch_against_params_is_an_error():
    def fn():
        with sp.scope("a"):
            return sp.get_param("v", [2])

    model = sp.transform(fn)
    with pytest.raises(ValueError, match="Trying to share variable a/v, but specified dtype float32 "
                                         "and found dtype float16") as e:
        model.apply({"a": {"v": jnp.zeros(2, jnp.float16)}})
    assert isinstance(e.value, sp.DtypeMismatchError)
    # The stored value came from params, not from a request of this call: the fix is the params'.
    assert "found: dtype float16 in the params passed to apply" in str(e.value)
    assert _STALE_FIX in str(e.value)



@pytest.mark.parametrize("spelling", [jnp.float32, np.float32, "float32", np.dtype("float32"), float,
                                      jnp.float64])
def test_any_spelling_of_the_stored_dtype_is_accepted_in_init_reuse_and_apply(spelling):
    # tf.float32 ports as jnp.float32 (a scalar type, not a NumPy dtype); float64 means float32
    # without x64, as everywhere in JAX. Another dtype is still an error, in any spelling.
    def fn(asked):
        with sp.scope("a") as s:
            v = sp.get_param("v", [2], dtype=asked)
        with sp.scope(s, reuse=True):
            return v, sp.get_param("v", [2], dtype=asked)

    model = sp.transform(fn)
    params = model.init(KEY, spelling)
    assert params["a"]["v"].dtype == np.float32
    a, b = model.apply(params, spelling)
    assert a is b
    for wrong in (jnp.float16, "int32", np.int32):
        with pytest.raises(sp.DtypeMismatchError, match="specified dtype"):
            model.apply(params, wrong)


def test_apply_constant_initializer_shape_is_checked_against_params():
    def fn():
        return sp.get_param("c", init=jnp.array([1.0, 2.0]))

    with pytest.raises(ValueError, match=r"specified shape \(2,\) and found shape \(3,\)"):
        sp.transform(fn).apply({"c": jnp.zeros(3)})


def test_second_reuse_false_request_in_one_apply_is_already_exists():
    def fn(dup):
        with sp.scope("s1"):
            sp.get_param("dummy", [])
        if dup:
            with sp.scope("s1"):
                sp.get_param("dummy", [])

    model = sp.transform(fn)
    params = model.init(KEY, False)
    with pytest.raises(ValueError, match="Variable s1/dummy already exists, disallowed. Did you mean "
                                         "to set reuse=True or reuse=AUTO_REUSE") as e:
        model.apply(params, True)
    assert isinstance(e.value, sp.ParamExistsError)
    assert "Originally defined at:" in str(e.value)
    assert "test_templates_and_apply.py" in str(e.value)


def _program(kind):
    """A pair of programs: ``good`` is fine; ``bad`` fails with error ``kind`` in init and apply."""

    def fn(bad):
        with sp.scope("m") as m:
            sp.get_param("v", [1])
        if kind == "exists":
            with sp.scope("m", reuse=True if not bad else None):
                sp.get_param("v", [1])
        elif kind == "missing":
            with sp.scope(m, reuse=True):
                sp.get_param("w" if bad else "v", [1])
        elif kind == "shape":
            with sp.scope(m, reuse=True):
                sp.get_param("v", [2] if bad else [1])
        elif kind == "dtype":
            with sp.scope(m, reuse=True):
                sp.get_param("v", [1], dtype=jnp.int32 if bad else None)
        elif kind == "reuse_before_create":
            with sp.scope("n", reuse=sp.AUTO_REUSE if not bad else True):
                sp.get_param("v", [1])
            with sp.scope("n", reuse=sp.AUTO_REUSE):
                sp.get_param("v", [1])

    return sp.transform(fn)


@pytest.mark.parametrize("kind,error", [
    ("exists", sp.ParamExistsError), ("missing", sp.ParamNotFoundError),
    ("shape", sp.ShapeMismatchError), ("dtype", sp.DtypeMismatchError),
    ("reuse_before_create", sp.ParamNotFoundError)])
def test_a_program_failing_in_init_fails_in_apply_with_the_same_words(kind, error):
    model = _program(kind)
    params = model.init(KEY, False)
    model.apply(params, False)
    with pytest.raises(error) as in_init:
        model.init(KEY, True)
    with pytest.raises(error) as in_apply:
        model.apply(params, True)
    assert first_line(in_init) == first_line(in_apply)


def test_apply_rejects_params_that_are_not_a_mapping():
    model = sp.transform(lambda: sp.get_param("v", []))
    with pytest.raises(TypeError, match="apply expected params as a nested dict of arrays") as e:
        model.apply([1, 2, 3])
    assert isinstance(e.value, sp.ParamsTypeError)
    assert "got list" in str(e.value)


def test_apply_accepts_flat_names_via_unflatten():
    def fn():
        with sp.scope("a"):
            return sp.get_param("v", [2])

    model = sp.transform(fn)
    out = model.apply(sp.unflatten({"a/v": jnp.ones(2)}))
    np.testing.assert_array_equal(out, np.ones(2))


def test_a_layer_object_fetches_its_captured_weights_in_apply_with_tfs_checks():
    getter_saw = []

    def counting_getter(getter, name, *args, **kwargs):
        getter_saw.append(name)
        return getter(name, *args, **kwargs)

    def fn(x, y, getter=None):
        with sp.scope("net", custom_getter=getter):
            dense = sp.layers.Dense(3, kernel_regularizer=lambda k: jnp.sum(k * k))
            a = dense(x)
            with sp.scope("elsewhere"):
                b = dense(x)  # TF: the captured scope, with reuse: the same weights
            c = dense(y)
        return a, b, c, sp.regularization_loss()

    x = jnp.ones((2, 4))
    model = sp.transform(fn)
    params = model.init(KEY, x, x)
    assert paths(params) == {"net/dense/kernel", "net/dense/bias"}
    a, b, c, loss = model.apply(params, x, 2 * x)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(c, x @ (2 * params["net"]["dense"]["kernel"]), rtol=1e-6)
    # The kernel's regularizer counts once, at the creating call.
    np.testing.assert_allclose(loss, jnp.sum(params["net"]["dense"]["kernel"] ** 2), rtol=1e-6)
    with pytest.raises(sp.ShapeMismatchError, match=r"net/dense/kernel, but specified shape \(5, 3\)"):
        model.apply(params, x, jnp.ones((2, 5)))
    # Under a custom getter the body jumps into the captured scope: every request goes to the getter.
    model.apply(params, x, x, counting_getter)
    assert getter_saw == ["net/dense/kernel", "net/dense/bias"] * 3


def test_a_layer_object_captured_at_the_root_scope_keeps_root_names_when_called_again():
    def fn(x):
        dense = sp.layers.Dense(3)
        return dense(x, scope=sp.get_scope()) + dense(2 * x)  # TF: the root scope, then reuse

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones((1, 2)))
    assert paths(params) == {"kernel", "bias"}
    out = model.apply(params, jnp.ones((1, 2)))
    np.testing.assert_allclose(out, 3 * jnp.ones((1, 2)) @ params["kernel"] + 2 * params["bias"],
                               rtol=1e-6)


def test_apply_mismatch_of_a_second_auto_reuse_request_from_one_line_blames_the_program_not_params():
    # A helper called twice asks for d/w with another shape: the params match its first request, so
    # the error is init's ("created at"), not "the params passed to apply" do not match.
    def helper(x, n):
        with sp.scope("d", reuse=sp.AUTO_REUSE):
            return x @ sp.get_param("w", (x.shape[-1], n))

    def model(x):
        return helper(x, 3).sum() + helper(x, 4).sum()

    with pytest.raises(sp.ShapeMismatchError) as in_apply:
        sp.transform(model).apply({"d": {"w": jnp.ones((5, 3))}}, jnp.ones((2, 5)))
    with pytest.raises(sp.ShapeMismatchError) as in_init:
        sp.transform(model).init(jax.random.key(0), jnp.ones((2, 5)))
    assert "in the params passed to apply" not in str(in_apply.value)
    assert str(in_apply.value) == str(in_init.value)


# --- L. sp.make_template: TF's template inside one model ------------------------------------------


def template_program(api):
    """Templates as TF 1.x programs use them: two of one name, one called again in another scope,
    nested ones made in a template's function, one whose scope is made at construction, one with
    a unique name, kwargs bound."""
    is_tf = api is not sp
    variable_scope = api.variable_scope if is_tf else api.scope
    get = api.get_variable if is_tf else api.get_param

    def body(x, units=2):
        return x @ get("w", [3, units])

    def nested_body(x):
        inner, inner_wide = api.make_template("nested", body), api.make_template("nested", body,
                                                                                  units=3)
        return inner(x), inner_wide(x)

    def program(x):
        t1, t2 = api.make_template("tmpl", body), api.make_template("tmpl", body)
        out = [t1(x), t2(x)]  # tmpl/, tmpl_1/
        with variable_scope("other"):
            out += [t1(x), t2(x)]  # the same weights, wherever they are called
            inside = api.make_template("inside", body)
            out.append(inside(x))
        out.append(inside(x))
        outer1, outer2 = api.make_template("s1", nested_body), api.make_template("s1", nested_body)
        out += [outer1(x), outer1(x), outer2(x)]
        with variable_scope("ctor"):
            now = api.make_template("now", body, create_scope_now_=True)
        with variable_scope("call"):
            out += [now(x), api.make_template("later", body)(x)]
        out.append(api.make_template("ignored", body, unique_name_="fixed")(x))
        return out

    return program


def test_make_template_names_shares_and_nests_its_parameters_like_tf():
    tf = pytest.importorskip("tensorflow")
    from _tf_values import load_random_values
    v1 = tf.compat.v1
    x = np.random.RandomState(0).randn(2, 3).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as session:
        placeholder = v1.placeholder(tf.float32, x.shape)
        outputs = template_program(v1)(placeholder)
        session.run(v1.global_variables_initializer())
        values = load_random_values(session, v1.global_variables())
        expected = session.run(outputs, {placeholder: x})
    assert sorted(values) == ["call/later/w", "ctor/now/w", "fixed/w", "other/inside/w",
                              "s1/nested/w", "s1/nested_1/w", "s1_1/nested/w", "s1_1/nested_1/w",
                              "tmpl/w", "tmpl_1/w"]

    model = sp.transform(template_program(sp))
    params = model.init(KEY, x)
    assert {k: v.shape for k, v in sp.flatten(params).items()} == {
        k: v.shape for k, v in values.items()}
    for apply in (model.apply, jax.jit(model.apply)):
        ours = jax.tree_util.tree_leaves(apply(sp.unflatten(values), x))
        for a, b in zip(ours, jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_make_template_made_outside_the_model_captures_its_scope_in_each_init_and_apply():
    calls = []

    def getter(getter, name, *args, **kwargs):  # TF: a template's getter sees every call
        calls.append(name)
        return getter(name, *args, **kwargs)

    template = sp.make_template("net", lambda x: x @ sp.get_param("w", [3, 2]),
                                custom_getter_=getter)
    seen = []

    def fn(x):
        seen.append(template.variable_scope)
        y = template(x)
        with sp.scope("elsewhere"):
            y = y + template(x)
        seen.append((template.variable_scope.name, template.variable_scope_name))
        return y

    model = sp.transform(fn)
    x = jnp.ones((2, 3))
    params = model.init(KEY, x)
    assert paths(params) == {"net/w"} and calls == ["net/w", "net/w"]
    np.testing.assert_allclose(model.apply(params, x), 2 * x @ params["net"]["w"], rtol=1e-6)
    assert seen == [None, ("net", "net/")] * 2 and calls == ["net/w"] * 4
    assert template.name == "net" and template.variable_scope_name == "net/"  # the latest call's


def test_make_template_later_call_creating_a_trainable_parameter_is_tfs_error():
    def body(x, extra=None, trainable=True):
        w = sp.get_param("w", [3, 2])
        if extra:
            with sp.scope("x", reuse=sp.AUTO_REUSE):  # a new name under AUTO_REUSE: created
                sp.get_param(extra, [1], trainable=trainable)
        return x @ w

    def fn(x, extra, trainable):
        template = sp.make_template("t", body)
        return template(x), template(x, extra, trainable)

    x = jnp.ones((2, 3))
    model = sp.transform(fn)
    assert paths(model.init(KEY, x, "count", False)) == {"t/w", "t/x/count"}  # TF allows it
    with pytest.raises(ValueError, match=(
            r"(?s)^Trainable variable created when calling a template after the first time: "
            r"\['t/x/new'\].*\n  fix: ")):
        model.init(KEY, x, "new", True)

    def asks_another(x):
        template = sp.make_template("t", lambda name: sp.get_param(name, [1]))
        return template("old"), template("new")  # a later call has reuse=True: rule 58

    with pytest.raises(sp.ParamNotFoundError, match="Variable t/new does not exist"):
        sp.transform(asks_another).init(KEY, x)


def test_make_template_needs_a_name_and_a_transform():
    with pytest.raises(ValueError, match=r"^name cannot be None\.\n  fix: "):
        sp.make_template(None, lambda: None)
    with pytest.raises(sp.NotInTransformError, match=r"^Template\('t'\)\(\.\.\.\) was called outside"):
        sp.make_template("t", lambda: None)()


def test_a_template_whose_first_call_raised_creates_again_on_its_next_call_as_tfs_does():
    # TF marks a template's variables created only once its first call returns: the next call
    # creates again (in the scope the failed call captured), so it cannot share what another has.
    seen = []

    def fn():
        t1 = sp.make_template("t", lambda: sp.get_param("w", [1]))
        t1()  # creates t/w
        t2 = sp.make_template("t", lambda: sp.get_param("w", [1]), create_scope_now_=True,
                              unique_name_="t")
        for _ in range(2):
            try:
                t2()
                seen.append("shared t/w")
            except sp.ParamExistsError as error:
                seen.append(str(error).split(".")[0])

    sp.transform(fn).init(KEY)
    assert seen == ["Variable t/w already exists, disallowed"] * 2

    calls = []

    def body():
        sp.get_param("a", [1])
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("user error")
        return sp.get_param("b", [1])

    def retried():
        t = sp.make_template("t", body)
        with pytest.raises(RuntimeError):
            t()
        with pytest.raises(sp.ParamExistsError, match="Variable t/a already exists, disallowed"):
            t()

    sp.transform(retried).init(KEY)


def test_a_template_called_inside_its_own_first_call_reuses_its_scope_as_tfs_parallel_call():
    # TF's Template: a call made while the first one runs re-enters the scope with reuse and does
    # not check for new trainable variables (its first call has not finished); checked against
    # TF 1.x: variables ['tm/c/v'], name scopes tm/tm/tm/c, tm/tm/c, tm/c. Before: "Trainable
    # variable created when calling a template after the first time".
    template, depth = [], [0]

    def body():
        depth[0] += 1
        if depth[0] < 3:
            template[0]()
        with sp.scope("c", reuse=sp.AUTO_REUSE):
            sp.record("v", sp.get_param("v", [2]))

    def fn():
        depth[0] = 0
        template[:] = [sp.make_template("tm", body)]
        template[0]()
        return 0

    model = sp.transform(fn)
    params = model.init(KEY)
    assert sorted(sp.flatten(params)) == ["tm/c/v"]
    assert list(model.apply_with_intermediates(params)[1]) == ["tm/tm/tm/c/v", "tm/tm/c/v",
                                                               "tm/c/v"]
