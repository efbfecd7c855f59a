"""default_name numbering and name scopes: reference sections H and I (rules 44-53)."""

import jax
import jax.numpy as jnp
import pytest

import scoped_params as sp

KEY = jax.random.key(0)


def paths(tree):
    return set(sp.flatten(tree))


def init(fn, *args):
    return sp.transform(fn).init(KEY, *args)


def names_in_init_and_apply(fn):
    """Run ``fn`` (which returns name strings) in init and apply; both must agree."""
    seen = []

    def wrapped():
        seen.append(fn())

    model = sp.transform(wrapped)
    params = model.init(KEY)
    model.apply(params)
    assert seen[0] == seen[1], "init and apply disagree on name scopes"
    return seen[0], params


# --- H. default_name ------------------------------------------------------------------------------


def test_default_name_scopes_are_numbered_per_enclosing_scope():
    def fn():
        for _ in range(2):
            with sp.scope(None, default_name="default"):
                sp.get_param("w", [])
        with sp.scope("outer"):
            for _ in range(2):
                with sp.scope(None, default_name="default"):
                    sp.get_param("w", [])

    assert paths(init(fn)) == {"default/w", "default_1/w", "outer/default/w", "outer/default_1/w"}


def test_default_name_numbering_uses_exact_names_not_substrings():
    def fn():
        names = []
        for default in ["defaultScope1", "defaultScope1", "defaultScope", "defaultScope1"]:
            with sp.scope(None, default_name=default) as s:
                names.append(s.name)
        return names

    names, _ = names_in_init_and_apply(fn)
    assert names == ["defaultScope1", "defaultScope1_1", "defaultScope", "defaultScope1_2"]


def test_given_name_wins_over_default_name():
    def fn():
        with sp.scope("outer"):
            with sp.scope("tower", default_name="default"):
                sp.get_param("w", [])

    assert paths(init(fn)) == {"outer/tower/w"}


def test_scope_needs_a_name_or_a_default_name():
    with pytest.raises(TypeError, match="If default_name is None then name_or_scope is required"):
        sp.scope(None)


def test_scope_rejects_a_non_string_non_scope_name():
    with pytest.raises(TypeError, match="name_or_scope must be a string or Scope, got int"):
        sp.scope(3)


def test_string_named_entries_count_toward_default_name_numbering():
    def fn():
        with sp.scope("foo"):
            pass
        with sp.scope(None, default_name="foo") as s:
            sp.get_param("w", [])
            return s.name

    name, params = names_in_init_and_apply(fn)
    assert name == "foo_1" and paths(params) == {"foo_1/w"}


def test_default_name_skips_names_taken_by_string_scopes():
    def fn():
        with sp.scope("layer_1"):
            pass
        names = []
        for _ in range(3):
            with sp.scope(None, default_name="layer") as s:
                names.append(s.name)
        return names

    names, _ = names_in_init_and_apply(fn)
    assert names == ["layer", "layer_2", "layer_3"]


# --- I. name scopes -------------------------------------------------------------------------------


def test_scope_opens_a_uniquified_name_scope_but_params_keep_their_name():
    def fn():
        with sp.scope("foo"):
            sp.get_param("v", [])
            n1 = sp.current_name_scope()
        with sp.scope("foo", reuse=True):
            sp.get_param("v", [])
            n2 = sp.current_name_scope()
        with sp.scope("foo", reuse=True):
            n3 = sp.current_name_scope()
        return n1, n2, n3

    names, params = names_in_init_and_apply(fn)
    assert names == ("foo/", "foo_1/", "foo_2/")
    assert paths(params) == {"foo/v"}


def test_name_scope_counters_reset_for_every_trace():
    def fn():
        with sp.name_scope("block") as ns:
            return ns

    model = sp.transform(lambda: seen.append(fn()))
    seen = []
    params = model.init(KEY)
    model.apply(params)
    model.apply(params)
    jax.jit(model.apply)(params)
    assert seen == ["block/"] * 4


def test_name_scope_does_not_change_param_names():
    def fn():
        with sp.name_scope("ns"):
            with sp.scope("foo"):
                with sp.name_scope("bar"):
                    sp.get_param("v", [])
                    return sp.current_name_scope()

    ns, params = names_in_init_and_apply(fn)
    assert ns == "ns/foo/bar/"
    assert paths(params) == {"foo/v"}


def test_name_scope_outside_variable_scope_is_not_a_param_prefix():
    def fn():
        with sp.name_scope("name_scope_x"):
            sp.get_param("var2", [])
        sp.get_param("var1", [])

    assert paths(init(fn)) == {"var1", "var2"}


def test_captured_scope_opens_a_name_scope_named_after_its_last_component():
    def fn():
        out = []
        with sp.scope("tower4") as tower4:
            pass
        with sp.scope("tower6"):
            with sp.scope(tower4) as t:
                out.append((t.name, sp.current_name_scope()))
        with sp.scope("outer") as outer:
            with sp.scope(outer):
                with sp.name_scope("scope2") as sc2:
                    out.append(sc2)
            with sp.scope(outer, reuse=True):
                with sp.name_scope("scope2") as sc2:
                    out.append(sc2)
        return out

    out, _ = names_in_init_and_apply(fn)
    assert out == [("tower4", "tower6/tower4/"), "outer/outer/scope2/", "outer/outer_1/scope2/"]


def test_reentering_the_root_scope_opens_no_name_scope():
    def fn():
        root = sp.get_scope()
        with sp.name_scope("ns3"):
            with sp.scope(root):
                with sp.name_scope("scope2") as sc:
                    return sc

    sc, _ = names_in_init_and_apply(fn)
    assert sc == "ns3/scope2/"


def test_original_name_scope_is_kept_from_first_creation():
    def fn():
        out = []
        with sp.name_scope("scope1"):
            with sp.scope("tower") as tower:
                out.append(tower.original_name_scope)
        with sp.name_scope("scope2"):
            with sp.scope(tower) as tower1:
                out.append(tower1.original_name_scope)
                with sp.name_scope("foo") as sc2:
                    out.append(sc2)
            with sp.name_scope(tower.original_name_scope):
                with sp.name_scope("bar") as sc3:
                    out.append(sc3)
        with sp.name_scope("scope2"):
            with sp.scope(tower):
                with sp.name_scope(tower.original_name_scope):
                    with sp.name_scope("bar") as sc3:
                        out.append(sc3)
        return out

    out, _ = names_in_init_and_apply(fn)
    assert out == ["scope1/tower/", "scope1/tower/", "scope2/tower/foo/", "scope1/tower/bar/",
                   "scope1/tower/bar_1/"]


def test_auxiliary_name_scope_false_opens_no_name_scope_but_prefixes_params():
    def fn():
        out = []
        with sp.scope("scope", auxiliary_name_scope=False) as s:
            sp.get_param("w", [])
            out += [sp.current_name_scope(), s.original_name_scope]
        with sp.scope("outer"):
            with sp.scope("inner", auxiliary_name_scope=False) as s:
                sp.get_param("w", [])
                out += [sp.current_name_scope(), s.original_name_scope]
                with sp.scope("deeper") as d:  # the flag is not inherited
                    out.append(sp.current_name_scope())
                    out.append(d.name)
        return out

    out, params = names_in_init_and_apply(fn)
    assert out == ["", "", "outer/", "outer/", "outer/deeper/", "outer/inner/deeper"]
    assert paths(params) == {"scope/w", "outer/inner/w"}


def test_auxiliary_name_scope_false_with_default_name():
    def fn():
        out = []
        with sp.scope(None, default_name="default", auxiliary_name_scope=False) as s:
            out.append(s.original_name_scope)
            out.append(sp.current_name_scope())
            sp.get_param("w", [])
        with sp.name_scope("default") as ns:  # no name scope "default" was taken before
            out.append(ns)
        return out

    out, params = names_in_init_and_apply(fn)
    assert out == ["", "", "default/"]
    assert paths(params) == {"default/w"}


def test_reentering_with_auxiliary_name_scope_false_and_original_name_scope_avoids_suffix():
    def fn():
        out = []
        with sp.scope("outer"):
            with sp.scope("inner") as inner:
                pass
        with sp.scope(inner, auxiliary_name_scope=False) as s:
            with sp.name_scope(s.original_name_scope):
                sp.get_param("w", [])
                out.append(sp.current_name_scope())
            with sp.name_scope("inner") as ns:
                out.append(ns)
        return out

    out, params = names_in_init_and_apply(fn)
    assert out == ["outer/inner/", "inner/"]
    assert paths(params) == {"outer/inner/w"}


def test_auxiliary_name_scope_must_be_a_bool():
    with pytest.raises(TypeError, match="The auxiliary_name_scope must be `True` or `False`, "
                                        "while get 1"):
        sp.scope("s", auxiliary_name_scope=1)


def test_nested_name_scopes_join_with_slash_and_none_or_empty_resets_to_root():
    def fn():
        out = []
        with sp.name_scope("foo") as a:
            out.append(a)
            with sp.name_scope("foo2") as b:
                out.append(b)
                with sp.name_scope(None) as c:
                    out.append((c, sp.current_name_scope()))
                with sp.name_scope("") as d:
                    out.append(d)
                out.append(sp.current_name_scope())
        out.append(sp.current_name_scope())
        return out

    out, _ = names_in_init_and_apply(fn)
    assert out == ["foo/", "foo/foo2/", ("", ""), "", "foo/foo2/", ""]


def test_name_scope_repeats_get_case_insensitive_suffixes_and_trailing_slash_is_absolute():
    def fn():
        with sp.name_scope("bar") as a:
            pass
        with sp.name_scope("Bar") as b:
            pass
        with sp.name_scope("bar/") as c:
            with sp.name_scope("x") as d:
                pass
        with sp.name_scope("foo"):
            pass
        with sp.name_scope("Foo") as e:
            pass
        return a, b, c, d, e

    out, _ = names_in_init_and_apply(fn)
    assert out == ("bar/", "Bar_1/", "bar/", "bar/x/", "Foo_1/")


def test_name_scope_skips_names_already_taken():
    def fn():
        out = []
        with sp.name_scope("foo_2"):
            pass
        for _ in range(3):
            with sp.name_scope("foo") as ns:
                out.append(ns)
        return out

    out, _ = names_in_init_and_apply(fn)
    assert out == ["foo/", "foo_1/", "foo_3/"]


def test_name_scope_then_scope_then_name_scope_of_the_same_name():
    def fn():
        with sp.name_scope("l0"):
            with sp.scope("l1"):
                with sp.name_scope("l1") as ns:
                    return ns

    ns, _ = names_in_init_and_apply(fn)
    assert ns == "l0/l1/l1/"


def test_default_name_scope_and_variable_scope_are_uniquified_separately():
    def fn():
        out = []
        with sp.name_scope("outer_ns"):
            with sp.scope(None, default_name="default") as s:
                sp.get_param("w", [])
                with sp.name_scope("inner") as ns:
                    out.append((s.name, ns))
            with sp.scope(None, default_name="default") as s:
                sp.get_param("w", [])
                with sp.name_scope("inner") as ns:
                    out.append((s.name, ns))
        with sp.name_scope("default"):  # takes the name scope "default" only
            pass
        with sp.scope(None, default_name="default") as s:
            out.append((s.name, sp.current_name_scope()))
            sp.get_param("w", [])
        return out

    out, params = names_in_init_and_apply(fn)
    assert out == [("default", "outer_ns/default/inner/"), ("default_1", "outer_ns/default_1/inner/"),
                   ("default_2", "default_1/")]
    assert paths(params) == {"default/w", "default_1/w", "default_2/w"}


def test_name_scope_rejects_invalid_names():
    def fn():
        with sp.name_scope("_bad"):
            pass

    with pytest.raises(ValueError, match="'_bad' is not a valid root scope name"):
        init(fn)

    def nested():
        with sp.name_scope("ok"):
            with sp.name_scope("a:b"):
                pass

    with pytest.raises(ValueError, match="'a:b' is not a valid scope name"):
        init(nested)


def test_a_name_valid_inside_a_scope_is_still_checked_as_a_root_name():
    # "_x" is a valid nested name but not a valid root name; having seen it nested must not let it
    # pass at the root.
    def fn():
        with sp.scope("outer"):
            with sp.scope("_x"):
                pass
        with sp.scope("_x"):
            pass

    with pytest.raises(ValueError, match="'_x' is not a valid root scope name"):
        init(fn)


def test_name_scope_rejects_a_non_string_name():
    with pytest.raises(TypeError, match="name_scope: name must be a string or None, got int"):
        sp.name_scope(3)


def test_current_name_scope_outside_a_transform_is_an_error():
    with pytest.raises(RuntimeError, match=r"sp.current_name_scope\(\) was called outside"):
        sp.current_name_scope()


def test_captured_scope_reentry_at_the_root_uniquifies_its_name_scope():
    def fn():
        out = []
        with sp.scope("foo") as fs:
            out.append(sp.current_name_scope())
        with sp.scope(fs):
            out.append(sp.current_name_scope())
        with sp.scope("foo"):
            out.append(sp.current_name_scope())
        with sp.scope("bar"):
            with sp.scope(None, default_name="x") as s:
                out.append((s.name, s.original_name_scope))
        return out

    out, _ = names_in_init_and_apply(fn)
    assert out == ["foo/", "foo_1/", "foo_2/", ("bar/x", "bar/x/")]


def test_default_name_must_be_a_string():
    with pytest.raises(TypeError, match=r"default_name must be a string, got int \(3\)"):
        sp.scope(None, default_name=3)


def test_a_collision_under_a_default_named_scope_says_the_numbering_restarted_per_entry():
    # TF's rule 20 ("bar instead of bar_2"): default names restart in each entry of the enclosing
    # scope, so calling a layer function in two entries of "tower" makes "tower/dense" twice.
    import jax.numpy as jnp

    def twice(x):
        for _ in range(2):
            with sp.scope("tower"):
                x = sp.layers.dense(x, 2)
        return x

    note = (r"note: 'tower/dense' was named by default_name='dense', and default names are numbered "
            r"per entry of 'tower'.*Give it an explicit name")
    model = sp.transform(twice)
    with pytest.raises(ValueError, match=r"(?s)tower/dense/kernel already exists.*" + note):
        model.init(KEY, jnp.ones((1, 2)))

    def once(x):
        with sp.scope("tower"):
            return sp.layers.dense(x, 2)

    params = sp.transform(once).init(KEY, jnp.ones((1, 2)))
    with pytest.raises(ValueError, match="(?s)already exists.*" + note):  # apply words it alike
        model.apply(params, jnp.ones((1, 2)))

    def at_the_root():  # root default names are numbered for the whole call: no restart, no note
        with sp.scope(None, default_name="bar"):
            sp.get_param("v", [1])
            sp.get_param("v", [1])

    with pytest.raises(ValueError) as info:
        init(at_the_root)
    assert "already exists" in str(info.value) and "note: 'bar'" not in str(info.value)


def test_name_scope_object_entered_again_while_open_nests_like_a_new_one():
    ns = sp.name_scope("block")

    def fn(x):
        with ns as outer:
            with ns as inner:
                sp.record("v", x)
            sp.record("after_inner", x)
        with ns as again:
            sp.record("w", x)
        return outer, inner, again

    (outer, inner, again), records = sp.transform(fn).apply_with_intermediates({}, jnp.ones(2))
    assert (outer, inner, again) == ("block/", "block/block/", "block_1/")
    assert sorted(records) == ["block/after_inner", "block/block/v", "block_1/w"]


def test_name_scope_object_shared_by_two_threads_closes_each_calls_own_entry():
    import threading
    ns = sp.name_scope("block")
    both_open, a_closed = threading.Barrier(2), threading.Event()

    def fn(x, who):
        with ns as opened:
            both_open.wait()
            if who == "B":  # B closes after A: A's exit must not close B's entry
                a_closed.wait()
            sp.record("v", x)
        if who == "A":
            a_closed.set()
        return opened

    model = sp.transform(fn)
    out, errors = {}, []

    def run(who):
        try:
            out[who] = model.apply_with_intermediates({}, jnp.ones(2), who)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(who,)) for who in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {who: (o, sorted(r)) for who, (o, r) in out.items()} == {
        "A": ("block/", ["block/v"]), "B": ("block/", ["block/v"])}


def test_name_scope_object_closed_in_a_call_that_did_not_open_it_is_an_error():
    ns = sp.name_scope("block")
    opened = []
    sp.transform(lambda x: opened.append(ns.__enter__()) or x).apply({}, jnp.ones(2))
    with pytest.raises(sp.ScopeNestingError, match=r"sp.name_scope\('block'\), which is not open in "
                                                   r"this call"):
        sp.transform(lambda x: ns.__exit__(None, None, None) or x).apply({}, jnp.ones(2))


@pytest.mark.parametrize("kwargs", [
    {"name_or_scope": None},
    {"name_or_scope": None, "default_name": 3},
    {"name_or_scope": "s", "auxiliary_name_scope": 1},
])
def test_scope_argument_type_errors_say_the_fix(kwargs):
    def fn():
        with sp.scope(**kwargs):
            pass

    with pytest.raises(TypeError, match=r"\n  fix: "):
        sp.transform(fn).init(jax.random.key(0))
