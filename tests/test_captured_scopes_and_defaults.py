"""Captured scopes and inherited defaults: reference sections C and D (rules 17-29)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
const = sp.initializers.constant


def paths(tree):
    return set(sp.flatten(tree))


def run(fn, *args):
    """init then apply: returns (params, apply's output)."""
    model = sp.transform(fn)
    params = model.init(KEY, *args)
    return params, model.apply(params, *args)


# --- C. captured scopes ---------------------------------------------------------------------------


def test_captured_scope_reentry_jumps_to_its_absolute_path():
    seen = []

    def fn():
        with sp.scope("foo") as fs:
            a = sp.get_param("v", [1])
        with sp.scope("bar"):
            with sp.scope("baz"):
                with sp.scope(fs, reuse=True) as s2:
                    seen.append(s2.name)
                    b = sp.get_param("v", [1])
                    with sp.scope("inner") as s3:
                        seen.append(s3.name)
                seen.append(sp.get_scope().name)
        return a, b

    params, (a, b) = run(fn)
    assert paths(params) == {"foo/v"}
    assert a is b
    assert seen == ["foo", "foo/inner", "bar/baz"] * 2


def test_captured_scope_keeps_its_own_reuse_and_ignores_reuse_false():
    seen = {}

    def fn():
        with sp.scope("jump", reuse=True) as vs:
            pass
        with sp.scope(vs, reuse=False) as j:
            seen["j"] = j.reuse
        with sp.scope("jump2") as vs2:
            pass
        with sp.scope(vs2) as j2:
            seen["j2"] = j2.reuse
        with sp.scope(vs2, reuse=True) as j3:
            seen["j3"] = j3.reuse
        with sp.scope(vs2, reuse=sp.AUTO_REUSE) as j4:
            seen["j4"] = j4.reuse

    sp.transform(fn).init(KEY)
    assert seen == {"j": True, "j2": False, "j3": True, "j4": sp.AUTO_REUSE}


def test_captured_scope_does_not_take_the_enclosing_reuse():
    seen = []

    def fn():
        with sp.scope("free") as free:
            pass
        with sp.scope("reusing", reuse=True):
            with sp.scope(free) as j:
                seen.append(j.reuse)
                sp.get_param("v", [])  # creates: reuse came only from the captured scope

    params = sp.transform(fn).init(KEY)
    assert seen == [False]
    assert paths(params) == {"free/v"}


def test_captured_scope_brings_its_own_initializer_not_the_enclosing_one():
    def fn():
        with sp.scope("tower", initializer=const(0.3)) as t:
            pass
        with sp.scope("other", initializer=const(9.0)):
            with sp.scope(t):
                return sp.get_param("w", [])

    params, w = run(fn)
    assert paths(params) == {"tower/w"}
    assert float(w) == pytest.approx(0.3)


def test_explicit_argument_overrides_captured_scope_default():
    def fn():
        with sp.scope("tower", initializer=const(0.3), dtype=jnp.float16) as t:
            pass
        with sp.scope(t, initializer=const(0.7)):
            a = sp.get_param("a", [])
        with sp.scope(t, dtype=jnp.bfloat16):
            b = sp.get_param("b", [])
        return a, b

    params, (a, b) = run(fn)
    assert float(a) == pytest.approx(0.7, abs=1e-3) and a.dtype == jnp.float16
    assert float(b) == pytest.approx(0.3, abs=1e-2) and b.dtype == jnp.bfloat16


def test_captured_scope_brings_its_own_regularizer_and_custom_getter():
    calls = []

    def getter(next_getter, name, *args, **kwargs):
        calls.append(name)
        return next_getter(name, *args, **kwargs)

    def fn():
        with sp.scope("t", regularizer=sp.l1_regularizer(1.0), custom_getter=getter) as t:
            pass
        with sp.scope("other", regularizer=sp.l2_regularizer(100.0)):
            with sp.scope(t):
                sp.get_param("w", [], init=const(-2.0))
        return sp.regularization_loss()

    _, loss = run(fn)
    assert float(loss) == pytest.approx(2.0)
    assert calls == ["t/w", "t/w"]  # once in init, once in apply


def test_default_name_numbering_continues_after_a_jump():
    def fn():
        with sp.scope(None, default_name="default") as d:
            pass
        with sp.scope("a"):
            with sp.scope(None, default_name="layer"):
                sp.get_param("w", [])
            with sp.scope(d):
                with sp.scope(None, default_name="layer"):
                    sp.get_param("w", [])
            with sp.scope(None, default_name="layer"):
                sp.get_param("w", [])

    params = sp.transform(fn).init(KEY)
    assert paths(params) == {"a/layer/w", "default/layer/w", "a/layer_1/w"}


def test_jump_into_captured_scope_restores_counters_on_exit():
    def fn():
        with sp.scope("default") as d:
            with sp.scope(None, default_name="layer"):
                sp.get_param("w", [])
            with sp.scope(None, default_name="layer"):
                sp.get_param("w", [])
            with sp.scope(d):
                with sp.scope("other"):
                    sp.get_param("w", [])
            with sp.scope(None, default_name="layer"):
                sp.get_param("w", [])

    params = sp.transform(fn).init(KEY)
    # "No matter the jump in the middle, unique numbering continues."
    assert paths(params) == {"default/layer/w", "default/layer_1/w", "default/other/w",
                             "default/layer_2/w"}


def test_reentering_an_open_scope_inside_a_jump_keeps_its_counters_after_the_jump():
    # TF 1.x (checked against tf.compat.v1): the jump restores every counter on exit, including
    # those of "a", which is open outside the jump and re-entered inside it.
    def fn():
        root = sp.get_scope()
        with sp.scope("a"):
            with sp.scope(None, default_name="d"):
                sp.get_param("w", [1])
            with sp.scope(root):
                with sp.scope("a"):
                    pass
            with sp.scope(None, default_name="d"):
                sp.get_param("w", [1])

    params, _ = run(fn)
    assert paths(params) == {"a/d/w", "a/d_1/w"}


def test_default_name_counters_reset_when_parent_is_reentered():
    def fn():
        with sp.scope("foo") as vs:
            with sp.scope(None, default_name="bar"):
                sp.get_param("a", [1])
            with sp.scope(None, default_name="bar"):
                sp.get_param("b", [1])
        with sp.scope(vs):
            with sp.scope(None, default_name="bar"):
                sp.get_param("c", [1])

    params = sp.transform(fn).init(KEY)
    assert paths(params) == {"foo/bar/a", "foo/bar_1/b", "foo/bar/c"}  # bar, not bar_2


def test_default_name_counter_reset_makes_a_second_default_scope_collide():
    def fn():
        for _ in range(2):
            with sp.scope("foo"):
                with sp.scope(None, default_name="bar"):
                    sp.get_param("w", [])

    with pytest.raises(ValueError, match="Variable foo/bar/w already exists"):
        sp.transform(fn).init(KEY)


def test_reentering_the_root_scope_adds_no_prefix():
    seen = []

    def fn():
        root = sp.get_scope()
        with sp.scope("outer"):
            with sp.scope(root) as r:
                seen.append(r.name)
                sp.get_param("w1", [1])

    params = sp.transform(fn).init(KEY)
    assert paths(params) == {"w1"}
    assert seen == [""]


# --- D. inherited defaults ------------------------------------------------------------------------


def test_initializer_is_inherited_and_overridable():
    def fn():
        with sp.scope("foo", initializer=const(0.4)):
            v = sp.get_param("v", [1])
            w = sp.get_param("w", [1], init=const(0.3))
            with sp.scope("bar"):
                b = sp.get_param("v", [1])
            with sp.scope("baz", initializer=const(0.2)):
                z = sp.get_param("v", [1])
        return v, w, b, z

    _, out = run(fn)
    np.testing.assert_allclose([float(x[0]) for x in out], [0.4, 0.3, 0.4, 0.2], rtol=1e-6)


def test_jax_nn_initializers_work_as_scope_initializers():
    def fn():
        with sp.scope("foo", initializer=jax.nn.initializers.ones):
            return sp.get_param("v", [2, 2])

    _, v = run(fn)
    np.testing.assert_array_equal(v, np.ones((2, 2)))


def test_set_initializer_lasts_only_until_the_scope_exits():
    seen = []

    def fn():
        with sp.scope("bar"):
            seen.append(sp.get_scope().initializer)
            sp.get_scope().set_initializer(const(0.3))
            v = sp.get_param("v", [])
        seen.append(sp.get_scope().initializer)
        with sp.scope("bar"):
            seen.append(sp.get_scope().initializer)
        return v

    _, v = run(fn)
    assert float(v) == pytest.approx(0.3)
    assert seen[:3] == [None, None, None]


def test_set_dtype_and_set_regularizer_apply_to_later_params_in_the_scope():
    def fn():
        with sp.scope("s") as s:
            a = sp.get_param("a", [], init=const(1.0))
            s.set_dtype(jnp.float16)
            s.set_regularizer(sp.l1_regularizer(2.0))
            b = sp.get_param("b", [], init=const(3.0))
        return a.dtype, b.dtype, sp.regularization_loss()

    _, (da, db, loss) = run(fn)
    assert (da, db) == (jnp.float32, jnp.float16)
    assert float(loss) == pytest.approx(6.0)


def test_dtype_is_inherited_and_defaults_to_float32():
    def fn():
        a = sp.get_param("a", [])
        with sp.scope("foo", dtype=jnp.float16):
            b = sp.get_param("v", [])
            with sp.scope("bar"):
                c = sp.get_param("v", [])
            d = sp.get_param("d", [], dtype=jnp.bfloat16)
        return a, b, c, d

    params, (a, b, c, d) = run(fn)
    assert a.dtype == jnp.float32
    assert b.dtype == c.dtype == jnp.float16
    assert d.dtype == jnp.bfloat16
    assert params["foo"]["bar"]["v"].dtype == jnp.float16


def test_captured_scope_reentered_with_dtype_makes_that_dtype():
    def fn():
        with sp.scope("foo") as s:
            pass
        with sp.scope(s, dtype=jnp.float16):
            return sp.get_param("v", [])

    _, v = run(fn)
    assert v.dtype == jnp.float16


def test_regularizer_runs_once_per_param_and_no_regularizer_switches_it_off():
    def r1(p):
        return jnp.mean(p) + 0.1

    def r2(p):
        return jnp.mean(p) + 0.2

    def fn():
        with sp.scope("tower", regularizer=r1, initializer=const(0.3)) as tower:
            sp.get_param("v", [])
            sp.get_param("x", [], regularizer=sp.no_regularizer)
            with sp.scope("inner"):
                sp.get_param("u", [])
            with sp.scope("off", regularizer=sp.no_regularizer):
                sp.get_param("y", [])
            tower.set_regularizer(r2)
            sp.get_param("w", [])
            tower.set_regularizer(sp.no_regularizer)
            sp.get_param("z", [])
        with sp.scope(tower, reuse=True):
            sp.get_param("v", [])  # reuse adds nothing
        return sp.regularization_loss()

    _, loss = run(fn)
    assert float(loss) == pytest.approx(0.4 + 0.4 + 0.5)


def test_regularizer_is_inherited_by_subscopes():
    def fn():
        with sp.scope("a", regularizer=sp.l2_regularizer(2.0)):
            with sp.scope("b"):
                sp.get_param("w", [2], init=const(3.0))
        return sp.regularization_loss()

    _, loss = run(fn)
    assert float(loss) == pytest.approx(2.0 * 0.5 * 18.0)


def test_trainable_false_is_a_flag_in_specs_and_the_param_stays_in_params():
    def fn():
        sp.get_param("a", [])
        sp.get_param("b", [], trainable=False)

    model = sp.transform(fn)
    params = model.init(KEY)
    assert paths(params) == {"a", "b"}
    specs = model.specs()
    assert specs["a"].trainable is True and specs["b"].trainable is False
    trainable, frozen = sp.partition_trainable(params, specs)
    assert paths(trainable) == {"a"} and paths(frozen) == {"b"}


def test_scope_trainable_false_is_inherited():
    def fn():
        with sp.scope("frozen", trainable=False):
            sp.get_param("w", [])
            with sp.scope("inner"):
                sp.get_param("w", [])
        sp.get_param("w", [])

    specs = sp.flatten(sp.transform(fn).specs())
    assert {n: s.trainable for n, s in specs.items()} == {
        "frozen/w": False, "frozen/inner/w": False, "w": True}


def test_select_matches_a_literal_scope_prefix():
    def fn():
        with sp.scope("foo_"):
            sp.get_param("a", [])
        with sp.scope("foo"):
            sp.get_param("a", [])
        with sp.scope("foo_1"):
            sp.get_param("a", [])
        with sp.scope("f.o"):
            sp.get_param("a", [])

    params = sp.transform(fn).init(KEY)
    assert paths(sp.select(params, "foo")) == {"foo/a"}
    assert paths(sp.select(params, "foo/")) == {"foo/a"}
    assert paths(sp.select(params, "f.o")) == {"f.o/a"}  # "." is not a regex wildcard


def test_get_state_is_a_non_trainable_leaf_with_get_param_naming():
    def fn():
        with sp.scope("outer"):
            w = sp.get_state("w", [], init=sp.initializers.zeros)
        return w

    model = sp.transform_with_state(fn)
    params, state = model.init(KEY)
    assert paths(params) == set() and paths(state) == {"outer/w"}
    _, state_specs = model.specs()
    assert state_specs["outer"]["w"].trainable is False



def test_get_state_is_reused_like_get_param_as_tf_get_local_variable_is():
    # TF's get_local_variable (rule 29): naming and reuse are get_variable's.
    def fn(reuse_it):
        with sp.scope("outer"):
            c = sp.get_state("count", init=0.0)
            sp.set_state("count", c + 1.0)
        with sp.scope("outer", reuse=True if reuse_it else None):
            return sp.get_state("count")

    model = sp.transform_with_state(fn)
    params, state = model.init(KEY, True)
    assert paths(state) == {"outer/count"}
    out, new_state = model.apply(params, state, True)
    assert float(out) == 1.0 and float(new_state["outer"]["count"]) == 1.0
    with pytest.raises(ValueError, match="outer/count.*already exists"):
        model.apply(params, state, False)

def test_default_name_numbering_inside_a_jump_is_rolled_back_on_exit():
    def fn():
        out = []
        with sp.scope("Q") as q:
            pass
        for _ in range(2):
            with sp.scope(q):
                for _ in range(3):
                    with sp.scope(None, default_name="d") as s:
                        out.append(s.name)
        return out

    seen = []
    sp.transform(lambda: seen.append(fn())).init(KEY)
    # TF 1.x restores every counter when a captured-scope jump exits (checked against TF).
    assert seen == [["Q/d", "Q/d_1", "Q/d_2"] * 2]


def test_one_scope_with_defaults_entered_twice_nests_and_sets_its_defaults_each_time():
    cm = sp.scope("s", initializer=const(0.5), dtype=jnp.float16, trainable=False)
    seen = []

    def fn():
        with cm as outer:
            a = sp.get_param("a", [1])
            with cm as inner:  # the same object nests: s/s, name scope s/s
                b = sp.get_param("b", [1])
                seen.append((outer.name, inner.name, inner.original_name_scope))
        with cm:
            c = sp.get_param("c", [1], init=const(0.25), dtype=jnp.float32)
            seen.append(sp.get_scope().original_name_scope)
        return a, b, c

    model = sp.transform(fn)
    params = model.init(KEY)
    a, b, c = model.apply(params)
    assert seen[:2] == [("s", "s/s", "s/s/"), "s_1/"]
    assert (a.dtype, b.dtype, c.dtype) == (jnp.float16, jnp.float16, jnp.float32)
    np.testing.assert_allclose([float(a[0]), float(b[0]), float(c[0])], [0.5, 0.5, 0.25])
    specs = sp.flatten(model.specs())
    assert [specs[k].trainable for k in ("s/a", "s/s/b", "s/c")] == [False, False, False]


def test_scope_with_defaults_and_reuse_fetches_and_checks_like_the_general_path():
    def fn(first):
        with sp.scope("s", initializer=const(0.5)):
            w = sp.get_param("w", [2])
        with sp.scope("s", reuse=True, regularizer=lambda v: jnp.sum(v)):
            same = sp.get_param("w", [2])
            if not first:
                sp.get_param("w", [3])  # a shape mismatch, named as TF names it
        return w, same, sp.regularization_loss()

    model = sp.transform(fn)
    params = model.init(KEY, True)
    w, same, loss = model.apply(params, True)
    assert same is w and float(loss) == 0.0  # the regularizer of a reusing scope adds nothing
    with pytest.raises(sp.ShapeMismatchError, match="s/w"):
        model.apply(params, False)


# --- the missing-key error names where the key was asked for -------------------------------------


def _dropout_model(x):
    with sp.scope("encoder"):
        h = sp.layers.dense(x, 4)
        with sp.scope("block"):
            return sp.layers.dropout(h, 0.5, training=True)


@pytest.mark.parametrize("make,fix", [
    (sp.transform, "model.apply(params, x, rng=jax.random.key(step))"),
    (sp.transform_with_state, "model.apply(params, state, x, rng=jax.random.key(step))"),
])
def test_missing_rng_error_names_the_scope_and_layer_and_a_fix_for_the_transform_kind(make, fix):
    x = jnp.ones((2, 3))
    model = make(_dropout_model)
    variables = model.init(KEY, x)
    args = variables if isinstance(variables, tuple) else (variables,)
    with pytest.raises(sp.MissingRngError) as e:
        model.apply(*args, x)
    message = str(e.value)
    assert "apply was called without rng=" in message
    assert "asked: a random key for sp.layers.dropout in scope 'encoder/block'" in message
    assert __file__ in message  # the model's line that asked
    assert f"  fix: pass one, e.g. {fix}" in message
    with pytest.raises(sp.MissingRngError) as e:
        model.apply_with_intermediates(*args, x)
    assert f"  fix: pass one, e.g. {fix.replace('.apply(', '.apply_with_intermediates(')}" in str(
        e.value)


def test_missing_rng_error_of_a_direct_request_at_the_root_names_the_root_scope():
    def fn(x):
        with sp.name_scope("noise"):
            return x + jax.random.normal(sp.next_rng_key(), x.shape)

    with pytest.raises(sp.MissingRngError) as e:
        sp.transform(fn).apply({}, jnp.ones(3))
    message = str(e.value)
    assert "asked: a random key in the root scope (name scope 'noise')" in message
    assert "  fix: pass one, e.g. model.apply(params, x, rng=jax.random.key(step))" in message


def test_captured_auto_reuse_scope_reentered_with_reuse_true_reuses_and_refuses_creation():
    # TF rule 18: the new reuse is `captured.reuse if not reuse_arg else reuse_arg`, so an explicit
    # reuse=True beats a captured AUTO_REUSE (TF: variable_scope(vs_auto, reuse=True).reuse is True).
    seen = {}

    def fn(create_new):
        with sp.scope("a", reuse=sp.AUTO_REUSE) as a:
            w = sp.get_param("w", [1])
        with sp.scope(a, reuse=True) as s:
            seen["reuse"] = s.reuse
            assert sp.get_param("w", [1]) is w
            if create_new:
                sp.get_param("new", [1])

    model = sp.transform(fn)
    params = model.init(KEY, False)
    assert seen["reuse"] is True
    with pytest.raises(sp.ParamNotFoundError, match="Variable a/new does not exist"):
        model.init(KEY, True)
    with pytest.raises(sp.ParamNotFoundError, match="Variable a/new does not exist"):
        model.apply(params, True)
