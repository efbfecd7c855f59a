"""Costs that grow with the number of root templates (made with create_scope_now_ outside the model)
and with the depth of nested scopes stay linear, and the names stay TF's; and the traced-size error
names the call that was jitted.

The work is counted, not timed: the number of lines of scoped_params code run (sys.settrace), so the
bounds hold on any machine. A quadratic walk shows as a ratio of ~16 between a size and four times
it, linear work as ~4."""

import gc
import os
import sys
import threading

import jax
import jax.numpy as jnp
import pytest

import scoped_params as sp
from scoped_params import layers

KEY = jax.random.key(0)
_PACKAGE = os.path.dirname(sp.__file__) + os.sep


def _lines(fn):
    """(fn(), the number of lines of scoped_params code fn() ran)."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(_PACKAGE) else None

    before = sys.gettrace()
    sys.settrace(calls)
    try:
        result = fn()
    finally:
        sys.settrace(before)
    return result, count


def _root_templates(names):
    return [sp.make_template(name, lambda x: x + sp.get_param("w", (2,)), create_scope_now_=True)
            for name in names]


@pytest.fixture(autouse=True)
def _free_other_tests_templates():
    gc.collect()  # templates of earlier tests no longer referenced free their names
    yield
    gc.collect()


# --- root templates: made, counted into each call, and default names at the root -----------------


@pytest.mark.parametrize("same_name", [False, True])
def test_making_a_root_template_costs_the_same_however_many_live(same_name):
    def make(tag):
        return _lines(lambda: _root_templates(
            [tag if same_name else f"{tag}{i}" for i in range(100)]))

    first, alone = make("a")
    others = _root_templates([f"other{i}" for i in range(400)] + ["b"] * 400)
    second, among_others = make("b")
    # Each new one looked at every live one: 400 more live templates was ~4x the work here.
    assert among_others < 1.2 * alone, (alone, among_others)
    if same_name:  # TF's numbering, past the live ones: a, a_1, ..., and b_400, ...
        assert [t.variable_scope_name for t in first] == (
            ["a/"] + [f"a_{i}/" for i in range(1, 100)])
        assert [t.variable_scope_name for t in second] == [f"b_{i}/" for i in range(400, 500)]
    assert len(others) == 800


def test_a_live_root_template_is_counted_into_init_and_apply_once_not_at_each_first_call(
        monkeypatch):
    probe = _root_templates(["probe"])  # never called: only counted into each call
    templates = _root_templates([f"t{i}" for i in range(50)])
    counted = []
    child = layers._child

    def counting_child(node, name):
        if name == "probe":
            counted.append(name)
        return child(node, name)

    monkeypatch.setattr(layers, "_child", counting_child)

    def fn(x):
        for template in templates:
            x = template(x)
        for _ in range(20):
            with sp.scope(None, default_name="probe"):  # at the root: numbered past the probe's
                pass
        return x

    model = sp.transform(fn)
    x = jnp.ones((1, 2))
    params = model.init(KEY, x)
    assert len(counted) == 1  # was 70: at each template's first call and each default name
    model.apply(params, x)
    assert len(counted) == 2
    assert sorted(params) == sorted(f"t{i}" for i in range(50))
    assert probe[0].variable_scope_name == "probe/"


def test_default_names_at_the_root_do_not_walk_the_live_root_templates_each_time():
    x = jnp.ones((1, 2))

    def work(layers_at_root):
        def fn(x):
            for _ in range(layers_at_root):
                sp.layers.dense(x, 2)
            return x
        model = sp.transform(fn)
        return _lines(lambda: model.specs(x))[1]

    without = {k: work(k) for k in (10, 40)}
    live = _root_templates([f"live{i}" for i in range(300)])
    with_live = {k: work(k) for k in (10, 40)}
    # What the live templates add is counting them into the call once, whatever the number of
    # default-name picks at the root; it was 300 templates walked at each pick.
    extra = {k: with_live[k] - without[k] for k in (10, 40)}
    assert extra[40] < 1.5 * extra[10] + 200, (without, with_live)
    assert len(live) == 300


def test_many_root_templates_are_numbered_as_tf_numbers_them_with_default_names_in_the_model():
    # TF's default graph counts a root template's scope from its construction: a template or a
    # default_name scope of that name at the root in a model is numbered past every live one.
    named = _root_templates(["t"] * 300 + [f"u{i}" for i in range(300)])
    del named[150]  # t_150 freed: the next root template named t takes it (TF: its scope is gone)
    gc.collect()
    named.append(_root_templates(["t"])[0])
    assert named[-1].variable_scope_name == "t_150/"
    seen = []

    def fn(x):
        for template in named:
            x = template(x)
        for _ in range(2):
            with sp.scope(None, default_name="t"):
                seen.append(sp.get_scope().name)
        with sp.scope(None, default_name="u7"):
            seen.append(sp.get_scope().name)
        with sp.scope("o"):
            with sp.scope(None, default_name="t"):  # not at the root: counted there only
                seen.append(sp.get_scope().name)
        sp.make_template("u299", lambda: sp.get_param("v", [1]))()
        return x

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones((1, 2)))
    assert seen == ["t_300", "t_301", "u7_1", "o/t"]
    assert set(params) == ({"t"} | {f"t_{i}" for i in range(1, 300)} | {f"u{i}" for i in range(300)}
                           | {"u299_1"})
    seen.clear()
    model.apply(params, jnp.ones((1, 2)))  # the same names in apply
    assert seen == ["t_300", "t_301", "u7_1", "o/t"]


def test_many_root_templates_and_default_names_match_tf():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1

    def build(api, scope, get):
        templates = [api.make_template("t" if i % 3 else f"n{i % 7}", lambda: get("w", [1]),
                                       create_scope_now_=True) for i in range(240)]

        def model():
            for i, template in enumerate(templates):
                template()
                if i % 40 == 0:
                    with scope(None, default_name="t"):
                        get("z", [1])
                    with scope(None, default_name="n3"):
                        get("z", [1])
            api.make_template("n5", lambda: get("v", [1]))()
        return model

    with tf.Graph().as_default():
        build(v1, v1.variable_scope, v1.get_variable)()
        expected = sorted(v.op.name for v in v1.global_variables())
    model = sp.transform(build(sp, sp.scope, sp.get_param))
    params = model.init(KEY)
    assert sorted(sp.flatten(params)) == expected
    model.apply(params)


def test_a_root_template_made_during_a_call_is_counted_at_the_next_default_name_pick():
    keep = _root_templates(["early"])
    seen = []

    def fn():
        with sp.scope(None, default_name="early"):  # counted: early_1
            seen.append(sp.get_scope().name)
        made = []
        # Made outside any call (another thread has no frame), while this call runs.
        maker = threading.Thread(target=lambda: made.extend(_root_templates(["late"])))
        maker.start()
        maker.join()
        with sp.scope(None, default_name="late"):  # TF's graph counted it when it was made
            seen.append(sp.get_scope().name)
        keep.extend(made)

    sp.transform(fn).init(KEY)
    assert seen == ["early_1", "late_1"]


def test_a_count_rolled_back_by_leaving_a_jump_is_counted_again():
    keep = _root_templates(["t0"])
    seen = []

    def fn():
        root = sp.get_scope()
        with sp.scope(root):  # a jump to the root: the counts it moves are rolled back on leaving
            with sp.scope("t0"):  # logged at 0, opened: 1 ...
                pass
            with sp.scope(None, default_name="x"):  # ... the live templates counted in the jump
                seen.append(sp.get_scope().name)
        # ... and t0's count back to 0 on leaving: counted again, TF's graph still counts it.
        with sp.scope(None, default_name="t0"):
            seen.append(sp.get_scope().name)

    sp.transform(fn).init(KEY)
    assert seen == ["x", "t0_1"]
    assert len(keep) == 1


# --- deep scopes ----------------------------------------------------------------------------------


def _deep(depth):
    def fn():
        def level(k):
            if k:
                with sp.scope("s"):
                    sp.get_param("w", (2,))
                    level(k - 1)
        level(depth)
    return sp.transform(fn)


def test_a_parameter_deep_in_scopes_checks_its_new_scope_prefixes_only():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        specs_small, small = _lines(lambda: _deep(40).specs())
        specs_large, large = _lines(lambda: _deep(320).specs())
    finally:
        sys.setrecursionlimit(limit)
    # Every ancestor prefix checked for each parameter was x64 here (x8 parameters, x8 depth).
    assert large / small < 12, (small, large)
    flat = sp.flatten(specs_large)
    assert len(flat) == 320 and "/".join(["s"] * 320) + "/w" in flat


def test_unflatten_of_deep_names_makes_each_scope_from_its_parent():
    def names(depth):
        return {"/".join(["s"] * k) + "/w": k for k in range(1, depth + 1)}

    small, small_work = _lines(lambda: sp.unflatten(names(50)))
    large, large_work = _lines(lambda: sp.unflatten(names(400)))
    assert large_work / small_work < 12, (small_work, large_work)  # x64 before
    node, depth = large, 0
    while "s" in node:
        node, depth = node["s"], depth + 1
        assert node["w"] == depth
    assert depth == 400 and sp.flatten(large) == names(400)


def test_unflatten_collisions_and_empty_components_under_known_scopes_keep_their_errors():
    deep = "a/b/c/d"
    with pytest.raises(sp.NameCollisionError,
                       match=r"^'a/b/c/d/e' cannot be placed: 'a/b/c' is a leaf, not a scope\.\n  fix: "):
        sp.unflatten({"a/b/x": 1, "a/b/c": 2, f"{deep}/e": 3})
    with pytest.raises(sp.NameCollisionError,
                       match=r"^'a/b/c/d/e' cannot be placed: 'a/b/c/d' is a leaf, not a scope\.\n  fix: "):
        sp.unflatten({"a/b/c/x": 1, deep: 2, f"{deep}/e": 3})
    with pytest.raises(sp.InvalidNameError, match=r"^'a/b//c/w' is not a valid full name"):
        sp.unflatten({"a/b/x": 1, "a/b//c/w": 2})
    with pytest.raises(sp.InvalidNameError, match=r"^'/a/w' is not a valid full name"):
        sp.unflatten({"/a/w": 1})
    # Other separators, one of them longer than a character and overlapping itself.
    assert sp.unflatten({"a::b::w": 1, "a::b::c::v": 2, "a::u": 3}, sep="::") == {
        "a": {"b": {"w": 1, "c": {"v": 2}}, "u": 3}}
    assert sp.unflatten({"a...b..w": 1, "a...b..c..v": 2}, sep="..") == {
        "a": {".b": {"w": 1, "c": {"v": 2}}}}


def test_deep_parameter_name_collisions_keep_their_errors():
    def leaf_then_scope():
        with sp.scope("a"), sp.scope("b"), sp.scope("c"):
            sp.get_param("w", [1])
            sp.get_param("v", [1])
        with sp.scope("a"), sp.scope("b"), sp.scope("c"), sp.scope("w"), sp.scope("d"):
            sp.get_param("x", [1])

    with pytest.raises(sp.NameCollisionError, match=(
            r"^'a/b/c/w/d/x' cannot be created: 'a/b/c/w' is already a parameter, so it cannot "
            r"also be a scope, and the params tree cannot hold a leaf and a sub-tree under one key\.\n"
            r"  fix: rename the parameter or the scope\.")):
        sp.transform(leaf_then_scope).specs()

    def scope_then_leaf():
        with sp.scope("a"), sp.scope("b"), sp.scope("c"), sp.scope("d"):
            sp.get_param("w", [1])
        with sp.scope("a"), sp.scope("b"):
            sp.get_param("c", [1])

    with pytest.raises(sp.NameCollisionError, match=(
            r"^'a/b/c' cannot be a parameter: it is already a scope holding 'a/b/c/d/w'")):
        sp.transform(scope_then_leaf).specs()


# --- a traced layer size under jax.jit ------------------------------------------------------------


def test_a_traced_size_under_jit_of_init_names_model_init_and_where_its_arguments_start():
    model = sp.transform(lambda x, n: sp.layers.dense(x, n))
    x = jnp.ones((2, 3))
    with pytest.raises(TypeError, match=(
            r"(?s)dense 'dense': units=.* is a traced value.*\n  fix: .*jax\.jit\(model\.init, "
            r"static_argnums=<its position>\) \(the key is position 0: the model's arguments start "
            r"at 1; or static_argnames=\)")) as error:
        jax.jit(model.init)(KEY, x, 4)
    assert "model.apply" not in str(error.value)
    # The fix works as said: n is position 2 of init.
    params = jax.jit(model.init, static_argnums=2)(KEY, x, 4)
    assert params["dense"]["kernel"].shape == (3, 4)
    with pytest.raises(TypeError, match=r"jax\.jit\(model\.apply, static_argnums=<its position>\) "
                                        r"\(params is position 0: the model's arguments start at 1"):
        jax.jit(model.apply)(params, x, 4)
    assert jax.jit(model.apply, static_argnums=2)(params, x, 4).shape == (2, 4)


def test_a_traced_size_under_jit_of_a_stateful_apply_says_the_arguments_start_after_the_state():
    model = sp.transform_with_state(lambda x, n: sp.layers.dense(x, n))
    x = jnp.ones((2, 3))
    params, state = model.init(KEY, x, 4)
    with pytest.raises(TypeError, match=r"jax\.jit\(model\.apply, static_argnums=<its position>\) "
                                        r"\(params is position 0 and state 1: the model's arguments "
                                        r"start at 2"):
        jax.jit(model.apply)(params, state, x, 4)
    out, _ = jax.jit(model.apply, static_argnums=3)(params, state, x, 4)
    assert out.shape == (2, 4)
