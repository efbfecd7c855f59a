"""Naming and reuse: reference sections A and B (rules 1-16) of tf1_variable_scope.md."""

import logging
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)


def paths(tree):
    return set(sp.flatten(tree))


def init(fn, *args):
    return sp.transform(fn).init(KEY, *args)


# --- A. naming ------------------------------------------------------------------------------------


def test_full_name_is_scope_path_joined_with_slash():
    names = {}

    def fn():
        with sp.scope("foo"):
            with sp.scope("bar") as sc:
                sp.get_param("v", [1])
                names["bar"] = sc.name
        sp.get_param("w", [1])
        names["root"] = sp.get_scope().name

    params = init(fn)
    assert paths(params) == {"foo/bar/v", "w"}
    assert names == {"bar": "foo/bar", "root": ""}
    assert params["foo"]["bar"]["v"].shape == (1,)


def test_params_tree_nests_scope_components_as_dict_keys():
    def fn():
        with sp.scope("image_filters"):
            with sp.scope("conv1"):
                sp.get_param("weights", [5, 5, 32, 32])
                sp.get_param("biases", [32], init=sp.initializers.zeros)

    params = init(fn)
    assert type(params) is dict and type(params["image_filters"]["conv1"]) is dict
    assert params["image_filters"]["conv1"]["weights"].shape == (5, 5, 32, 32)
    np.testing.assert_array_equal(params["image_filters"]["conv1"]["biases"], np.zeros(32))


def test_slash_in_param_name_is_a_path_separator_and_collides_with_nested_scope():
    def fn():
        with sp.scope("s"):
            sp.get_param("a/b", [1])
            with sp.scope("a"):
                sp.get_param("b", [1])

    with pytest.raises(ValueError, match="Variable s/a/b already exists, disallowed"):
        init(fn)


def test_slash_in_param_name_and_nested_scope_address_the_same_param_on_reuse():
    def fn():
        with sp.scope("s"):
            a = sp.get_param("a/b", [1])
            with sp.scope("a", reuse=True):
                b = sp.get_param("b", [1])
        return a, b

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"s/a/b"}
    a, b = model.apply(params)
    assert a is b


@pytest.mark.parametrize("bad", ["foo/", "/foo", "foo//bar"])
def test_empty_scope_name_components_are_rejected(bad):
    def fn():
        with sp.scope(bad):
            pass

    with pytest.raises(ValueError, match="every '/'-separated component must be non-empty") as e:
        init(fn)
    assert isinstance(e.value, sp.InvalidNameError)
    assert repr(bad) in str(e.value)


@pytest.mark.parametrize("bad", ["v/", "a//b"])
def test_empty_param_name_components_are_rejected(bad):
    def fn():
        with sp.scope("s"):
            sp.get_param(bad, [1])

    with pytest.raises(sp.InvalidNameError, match="not a valid parameter name") as e:
        init(fn)
    assert "s/" + bad in str(e.value)


def test_underscore_is_not_a_valid_root_scope_name():
    def fn():
        with sp.scope("_"):
            pass

    with pytest.raises(ValueError, match="'_' is not a valid (?:root )?scope name"):
        init(fn)


def test_underscore_prefix_is_valid_in_a_nested_scope():
    def fn():
        with sp.scope("foo"):
            with sp.scope("_bar"):
                sp.get_param("v", [])

    assert paths(init(fn)) == {"foo/_bar/v"}


@pytest.mark.parametrize("where", ["root", "nested"])
def test_colon_is_invalid_in_scope_names_everywhere(where):
    def fn():
        if where == "root":
            with sp.scope("foo:0"):
                pass
        else:
            with sp.scope("a"):
                with sp.scope("foo:0"):
                    pass

    with pytest.raises(ValueError, match="'foo:0' is not a valid"):
        init(fn)


# --- B. reuse -------------------------------------------------------------------------------------


def test_duplicate_name_with_reuse_false_raises_already_exists():
    def fn():
        with sp.scope("foo"):
            sp.get_param("v", [1])
            sp.get_param("v", [1])

    with pytest.raises(ValueError, match="Variable foo/v already exists, disallowed. "
                                         "Did you mean to set reuse=True or reuse=AUTO_REUSE") as e:
        init(fn)
    assert isinstance(e.value, sp.ParamExistsError)
    assert "Originally defined at:" in str(e.value)


def test_root_scope_does_not_reuse():
    seen = {}

    def fn():
        seen["reuse"] = sp.get_scope().reuse
        sp.get_param("v", [])
        sp.get_param("v", [])

    with pytest.raises(ValueError, match="Variable v already exists"):
        init(fn)
    assert seen["reuse"] is False


def test_string_scopes_are_never_uniquified_for_params():
    def fn():
        with sp.scope("tower"):
            sp.get_param("w", [])
        with sp.scope("tower"):
            sp.get_param("w", [])

    with pytest.raises(ValueError, match="Variable tower/w already exists"):
        init(fn)


def test_reuse_true_returns_the_very_same_array():
    def fn():
        with sp.scope("foo"):
            a = sp.get_param("v", [1])
        with sp.scope("foo", reuse=True):
            b = sp.get_param("v", [1])
        return a, b

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"foo/v"}
    a, b = model.apply(params)
    assert a is b
    assert a is params["foo"]["v"]


def test_reuse_true_on_missing_name_raises_does_not_exist():
    def fn():
        with sp.scope("foo", reuse=True):
            sp.get_param("v", [1])

    with pytest.raises(ValueError, match="Variable foo/v does not exist") as e:
        init(fn)
    assert isinstance(e.value, sp.ParamNotFoundError)
    assert "AUTO_REUSE" in str(e.value)


def test_auto_reuse_creates_when_missing_and_returns_existing_otherwise():
    def fn():
        out = []
        for _ in range(3):
            with sp.scope("foo", reuse=sp.AUTO_REUSE):
                out.append(sp.get_param("v", [1]))
        return out

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"foo/v"}
    out = model.apply(params)
    assert out[0] is out[1] is out[2]


def test_reuse_false_on_a_scope_means_inherit():
    seen = []

    def fn():
        with sp.scope("a", reuse=True):
            with sp.scope("b", reuse=False) as s:
                seen.append(s.reuse)
        with sp.scope("c", reuse=False) as s:
            seen.append(s.reuse)

    init(fn)
    assert seen == [True, False]


@pytest.mark.parametrize("bad", ["yes", 1, 0])
def test_reuse_must_be_true_false_none_or_auto_reuse(bad):
    with pytest.raises(ValueError, match="reuse parameter must be True or False or None") as e:
        sp.scope("a", reuse=bad)
    assert isinstance(e.value, sp.ReuseArgumentError)
    assert repr(bad) in str(e.value)


_TABLE = [
    # (parent, child, expected)
    (None, None, False), (None, True, True), (None, sp.AUTO_REUSE, sp.AUTO_REUSE),
    (True, None, True), (True, True, True), (True, sp.AUTO_REUSE, sp.AUTO_REUSE),
    (sp.AUTO_REUSE, None, sp.AUTO_REUSE), (sp.AUTO_REUSE, True, True),
    (sp.AUTO_REUSE, sp.AUTO_REUSE, sp.AUTO_REUSE),
]


@pytest.mark.parametrize("parent,child,expected", _TABLE)
def test_reuse_inheritance_truth_table(parent, child, expected):
    seen = []

    def fn():
        with sp.scope("p", reuse=parent):
            with sp.scope("c", reuse=child) as s:
                seen.append(s.reuse)

    init(fn)
    assert seen[0] is expected


def test_reuse_is_inherited_and_cannot_be_unset():
    seen = []

    def fn():
        with sp.scope("root"):
            with sp.scope("foo", reuse=True):
                with sp.scope("bar", reuse=False) as s:
                    seen.append(s.reuse)
                    with sp.scope("deeper") as d:
                        seen.append(d.reuse)
            seen.append(sp.get_scope().reuse)

    init(fn)
    assert seen == [True, True, False]


def test_leaving_a_reusing_scope_goes_back_to_creating():
    def fn():
        with sp.scope("a"):
            sp.get_param("v", [])
        with sp.scope("a", reuse=True):
            sp.get_param("v", [])
        with sp.scope("b"):
            sp.get_param("v", [])

    assert paths(init(fn)) == {"a/v", "b/v"}


def test_reuse_variables_turns_reuse_on_for_the_rest_of_the_scope():
    def fn():
        with sp.scope("foo") as sc:
            v = sp.get_param("v", [1])
            sc.reuse_variables()
            assert sc.reuse is True
            v1 = sp.get_param("v", [1])
            sp.get_param("w", [1])
        return v, v1

    with pytest.raises(ValueError, match="Variable foo/w does not exist") as e:
        init(fn)
    assert "reuse_variables()" in str(e.value)


def test_reuse_variables_reaches_subscopes_opened_afterwards():
    def fn():
        with sp.scope("outer") as outer:
            with sp.scope(None, default_name="default"):
                a = sp.get_param("w", [])
        # TF's testVarOpScopeReuseParam: re-enter, turn reuse on, then open a default_name scope.
        with sp.scope(outer) as outer:
            outer.reuse_variables()
            with sp.scope(None, default_name="default") as d:
                b = sp.get_param("w", [])
                assert d.name == "outer/default" and d.reuse is True
        return a, b

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"outer/default/w"}
    a, b = model.apply(params)
    assert a is b


def test_reuse_variables_ends_when_the_scope_exits():
    def fn():
        with sp.scope("foo") as sc:
            sp.get_param("v", [])
            sc.reuse_variables()
        with sp.scope("foo"):
            sp.get_param("v", [])

    with pytest.raises(ValueError, match="foo/v already exists"):
        init(fn)


def test_reuse_variables_on_get_scope_marks_current_scope():
    def fn(x):
        with sp.scope("image_filters") as s:
            sp.get_param("w", [3])
            sp.get_scope().reuse_variables()
            w = sp.get_param("w", [3])
            assert s.reuse is True
        return x * w

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones(3))
    assert paths(params) == {"image_filters/w"}
    np.testing.assert_allclose(model.apply(params, jnp.ones(3)), params["image_filters"]["w"])


def test_reuse_true_without_a_name_is_an_error():
    def fn():
        with sp.scope(None, default_name="default", reuse=True):
            pass

    with pytest.raises(ValueError, match="reuse=True cannot be used without a name"):
        init(fn)


def test_auto_reuse_without_a_name_is_an_error_too():
    def fn():
        with sp.scope(None, default_name="default", reuse=sp.AUTO_REUSE):
            pass

    with pytest.raises(ValueError, match="cannot be used without a name") as e:
        init(fn)
    assert "default" in str(e.value)


def test_shape_mismatch_on_reuse_raises_trying_to_share():
    def fn():
        with sp.scope("a") as s:
            sp.get_param("v", [1])
        with sp.scope(s, reuse=True):
            sp.get_param("v", [2])

    with pytest.raises(ValueError, match=r"Trying to share variable a/v, but specified shape "
                                         r"\(2,\) and found shape \(1,\)") as e:
        init(fn)
    assert isinstance(e.value, sp.ShapeMismatchError)


def test_missing_shape_on_reuse_returns_the_existing_param():
    def fn():
        with sp.scope("a") as s:
            a = sp.get_param("v", [2, 3])
        with sp.scope(s, reuse=True):
            b = sp.get_param("v")
            c = sp.get_param("v", [None, 3])
        return a, b, c

    model = sp.transform(fn)
    params = model.init(KEY)
    a, b, c = model.apply(params)
    assert a is b is c and b.shape == (2, 3)


def test_dtype_mismatch_on_reuse_raises():
    def fn():
        with sp.scope("a") as s:
            sp.get_param("v", [1])
        with sp.scope(s, reuse=True):
            sp.get_param("v", [1], dtype=jnp.int32)

    with pytest.raises(ValueError, match="Trying to share variable a/v, but specified dtype int32 "
                                         "and found dtype float32") as e:
        init(fn)
    assert isinstance(e.value, sp.DtypeMismatchError)


def test_dtype_none_on_reuse_is_checked_against_scope_dtype_like_tf():
    def fn():
        with sp.scope("a") as s:
            sp.get_param("v", [1], dtype=jnp.int32)
        with sp.scope(s, reuse=True):
            sp.get_param("v", [1])

    with pytest.raises(ValueError, match="specified dtype float32 and found dtype int32") as e:
        init(fn)
    msg = str(e.value)
    assert "dtype=None means the scope's dtype" in msg
    assert "pass dtype=int32" in msg


def test_creation_only_arguments_are_ignored_on_reuse():
    def fn():
        with sp.scope("foo", regularizer=lambda p: jnp.sum(p) + 1.0) as s:
            a = sp.get_param("v", [], init=sp.initializers.constant(0.5))
        with sp.scope(s, reuse=True):
            b = sp.get_param("v", [], init=sp.initializers.ones, trainable=False,
                             regularizer=lambda p: 100.0 * p)
        return a, b, sp.regularization_loss()

    model = sp.transform(fn)
    params = model.init(KEY)
    assert float(params["foo"]["v"]) == 0.5
    specs = model.specs()
    assert specs["foo"]["v"].trainable is True
    a, b, loss = model.apply(params)
    assert a is b
    assert float(loss) == pytest.approx(1.5)  # one term, the creating one


def test_each_call_owns_its_store_so_threads_do_not_collide():
    def fn():
        with sp.scope("main"):
            sp.get_param("v", [])

    model = sp.transform(fn)
    results, errors = [], []

    def run():
        try:
            results.append(paths(model.init(KEY)))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [{"main/v"}] * 4


def test_a_thread_started_inside_a_model_has_no_scope_and_a_captured_scope_restores_the_prefix():
    def fn():
        with sp.scope("main") as main:
            sp.get_param("v", [])
        out = {}

        def worker():
            # A thread started inside the model does not see the caller's trace frame.
            try:
                sp.get_scope()
            except RuntimeError as e:
                out["err"] = str(e)

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        with sp.scope(main):
            with sp.scope("foo"):
                sp.get_param("v", [])
        return out

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"main/v", "main/foo/v"}
    out = model.apply(params)
    assert "outside a transformed function" in out["err"]


def test_scope_names_are_checked_once_even_in_a_model_with_thousands_of_scopes(monkeypatch):
    # Valid names are remembered in a bounded table; a model with more names than the table held
    # (it once held 4096) had every name checked again on every call.
    from scoped_params import _scope

    monkeypatch.setattr(_scope, "_PLAIN_SCOPES", {})  # as in a new process
    checked = []
    check = _scope._check_scope_name
    monkeypatch.setattr(_scope, "_check_scope_name", lambda name, what: checked.append(name) or check(name, what))

    def fn():
        for i in range(6000):
            with sp.scope(f"block_{i}"):
                pass

    model = sp.transform(fn)
    model.apply({})
    assert len(checked) == 6000
    model.apply({})
    model.init(KEY)
    assert len(checked) == 6000


def test_a_debug_log_names_each_parameter_auto_reuse_shares_between_two_lines(caplog):
    # The reference's advice: AUTO_REUSE everywhere makes accidental sharing silent; at DEBUG level,
    # init says which parameter it shared and the two lines. A loop's own reuse logs nothing.
    def fn():
        with sp.scope("a", reuse=sp.AUTO_REUSE):
            sp.get_param("w", [1])
        with sp.scope("a", reuse=sp.AUTO_REUSE):
            sp.get_param("w", [1])
        for _ in range(2):
            with sp.scope("b", reuse=sp.AUTO_REUSE):
                sp.get_param("v", [1])

    with caplog.at_level(logging.DEBUG, logger="scoped_params"):
        sp.transform(fn).init(jax.random.key(0))
    shared = [r.getMessage() for r in caplog.records if "AUTO_REUSE shares" in r.getMessage()]
    assert len(shared) == 1 and shared[0].startswith("sp.AUTO_REUSE shares 'a/w', created at ")
    assert shared[0].count(__file__) == 2


# --- reuse= values TF 1.x refuses, and TF's own constant ----------------------------------------


def test_tf_auto_reuse_constant_is_refused_with_a_fix_naming_sp_auto_reuse():
    tf = pytest.importorskip("tensorflow")

    def fn():
        with sp.scope("a", reuse=tf.compat.v1.AUTO_REUSE):
            return sp.get_param("w", (3,))

    with pytest.raises(sp.ReuseArgumentError) as e:
        init(fn)
    message = str(e.value)
    assert "reuse parameter must be True or False or None" in message
    assert "asked: sp.scope('a', reuse=tf.compat.v1.AUTO_REUSE)" in message
    assert ("  fix: TF's tf.compat.v1.AUTO_REUSE is TensorFlow's own constant; pass sp.AUTO_REUSE"
            in message)


@pytest.mark.parametrize("spelled", ["auto", "AUTO_REUSE", "auto_reuse", "sp.AUTO_REUSE"])
def test_reuse_spelled_as_a_string_is_refused_as_tf_does_with_sp_auto_reuse_as_the_fix(spelled):
    with pytest.raises(sp.ReuseArgumentError) as e:
        sp.scope("a", reuse=spelled)
    message = str(e.value)
    assert repr(spelled) in message
    assert f"asked: sp.scope('a', reuse={spelled!r})" in message
    assert "  fix: pass reuse=sp.AUTO_REUSE (the constant, not a string" in message


@pytest.mark.parametrize("bad", ["yes", 1, 0, "True"])
def test_other_refused_reuse_values_get_a_fix_listing_the_valid_ones(bad):
    with pytest.raises(sp.ReuseArgumentError) as e:
        sp.scope(None, default_name="d", reuse=bad)
    message = str(e.value)
    assert f"asked: sp.scope(None, default_name='d', reuse={bad!r})" in message
    assert "  fix: pass reuse=True, False or None (inherit), or sp.AUTO_REUSE" in message


# --- a variable scope closed before a name scope opened inside it --------------------------------


def _scope_closed_before_its_inner_name_scope(seen):
    """TF 1.x accepts this order: variable_scope's exit closes the name scope it opened, and the
    name_scope's exit then restores the name scope it found ('a'); variable scopes are unchanged."""
    a, b = sp.scope("a"), sp.name_scope("b")
    a.__enter__()
    seen.append(b.__enter__())
    a.__exit__(None, None, None)
    seen.append((sp.get_scope().name, sp.current_name_scope()))
    w = sp.get_param("w", (1,))
    b.__exit__(None, None, None)
    seen.append((sp.get_scope().name, sp.current_name_scope()))
    with sp.name_scope("z") as z:
        seen.append(z)
    with sp.scope("q") as q:
        seen.append((q.name, q.original_name_scope))
        sp.get_param("w3", (1,))
    sp.record("out", w)
    return w


# What TF 1.x's graph mode gives for the same program (test_..._as_tf_does_in_graph_mode runs it).
_TF_SEEN = ["a/b/", ("", ""), ("", "a/"), "a/z/", ("q", "a/q/")]


def test_a_scope_closed_before_a_name_scope_opened_inside_it_is_accepted_as_tf_does():
    seen: list = []
    model = sp.transform(lambda: _scope_closed_before_its_inner_name_scope(seen))
    params = model.init(KEY)
    assert paths(params) == {"w", "q/w3"}
    assert seen == _TF_SEEN
    name_stacks = []

    def run(params):
        name_stacks.append(str(jax.extend.source_info_util.current_name_stack()))
        out = model.apply_with_intermediates(params)
        name_stacks.append(str(jax.extend.source_info_util.current_name_stack()))
        return out

    # eagerly no jax.named_scope is opened; under jit each scope opens one
    for call in (run, jax.jit(run)):
        seen.clear()
        out, records = call(params)
        assert seen == _TF_SEEN and set(records) == {"a/out"}
        np.testing.assert_array_equal(out, params["w"])
        # no jax.named_scope the model opened stays open after it
        assert name_stacks[-1] == name_stacks[-2]


def test_a_scope_closed_before_a_name_scope_opened_inside_it_is_accepted_as_tf_does_in_graph_mode():
    tf = pytest.importorskip("tensorflow.compat.v1")
    seen: list = []
    with tf.Graph().as_default() as g:
        a, b = tf.variable_scope("a"), tf.name_scope("b")
        a.__enter__()
        seen.append(b.__enter__())
        a.__exit__(None, None, None)
        seen.append((tf.get_variable_scope().name, g.get_name_scope()))
        w = tf.get_variable("w", (1,))
        b.__exit__(None, None, None)
        seen.append((tf.get_variable_scope().name, g.get_name_scope() + "/"))
        with tf.name_scope("z") as z:
            seen.append(z)
        with tf.variable_scope("q") as q:
            seen.append((q.name, q.original_name_scope))
            w3 = tf.get_variable("w3", (1,))
    assert seen == _TF_SEEN
    assert (w.op.name, w3.op.name) == ("w", "q/w3")


def test_a_name_scope_closed_while_a_scope_opened_inside_it_is_open_is_improper_nesting():
    def fn():
        b = sp.name_scope("b")
        b.__enter__()
        sp.scope("a").__enter__()
        b.__exit__(None, None, None)

    with pytest.raises(sp.ScopeNestingError,
                       match="Improper nesting of name_scope: closing 'b' while 'b/a' is open"):
        init(fn)
