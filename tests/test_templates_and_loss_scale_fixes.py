"""sp.make_template's names and variables as TF 1.x's Template, and the loss scales' arguments and
arithmetic as TF's DynamicLossScale."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp
from scoped_params import mixed_precision as mp

KEY = jax.random.key(0)


# --- loss scales ----------------------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["period", "decrease_period"])
def test_a_period_the_int32_counters_cannot_count_to_is_refused_naming_the_argument(argument):
    with pytest.raises(ValueError, match=rf"DynamicLossScale\({argument}=2147483648\): {argument} "
                                         r"must be at most 2\*\*31 - 1 (?s:.*)int32(?s:.*)fix: "):
        mp.DynamicLossScale(8.0, **{argument: 2 ** 31})
    # The largest period the counters hold still works, jitted.
    s = mp.DynamicLossScale(8.0, **{argument: 2 ** 31 - 1})
    adjust = jax.jit(lambda s, finite: s.adjust(finite))
    for finite in (True, False, True):
        s = adjust(s, jnp.array(finite))
    assert (float(s.loss_scale), int(s.good_steps), int(s.bad_steps)) == (
        (4.0, 1, 0) if argument == "period" else (8.0, 1, 1))
    assert getattr(s, argument) == 2 ** 31 - 1


@pytest.mark.parametrize("initial, factor", [(5.0, 1.5), (5.0, 3.0), (7.0, 3.0), (32768.0, 10.0)])
def test_a_decrease_divides_by_the_factor_as_tf_does_under_jit_too(initial, factor):
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.eager import context

    with context.eager_mode():  # another test module turns TF's eager execution off globally
        ref = tf.compat.v1.mixed_precision.DynamicLossScale(
            initial_loss_scale=initial, increment_period=2000, multiplier=factor)
        ref.update([tf.constant([np.inf])])
        want = float(ref())
    assert want == float(np.float32(initial) / np.float32(factor))
    s = mp.DynamicLossScale(initial, factor=factor)
    eager = s.adjust(False)
    jitted = jax.jit(lambda s, finite: s.adjust(finite))(s, jnp.array(False))
    assert float(eager.loss_scale) == float(jitted.loss_scale) == want, (initial, factor)


@pytest.mark.parametrize("call, message", [
    (lambda: mp.StaticLossScale(np.float32(0.0)),
     r"StaticLossScale\(loss_scale=np.float32\(0.0\)\): loss_scale must be a positive finite "
     r"number(?s:.*)fix: "),
    (lambda: mp.DynamicLossScale(np.float32(-1.0)),
     r"DynamicLossScale\(loss_scale=np.float32\(-1.0\)\): loss_scale must be a positive finite "
     r"number(?s:.*)fix: loss_scale=2.0 \*\* 15"),
    (lambda: mp.DynamicLossScale(np.int64(0)), r"loss_scale must be a positive finite number"),
    (lambda: mp.DynamicLossScale(min_loss_scale=np.float32(0.0)),
     r"DynamicLossScale\(min_loss_scale=np.float32\(0.0\)\): min_loss_scale must be a positive "
     r"finite number"),
])
def test_numpy_scalars_are_checked_like_python_numbers(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("call, message", [
    (lambda: mp.StaticLossScale(True),
     r"StaticLossScale\(loss_scale=True\): loss_scale must be a number, got bool(?s:.*)fix: "),
    (lambda: mp.StaticLossScale(np.bool_(True)), r"loss_scale must be a number, got bool"),
    (lambda: mp.StaticLossScale("128"),
     r"StaticLossScale\(loss_scale='128'\): loss_scale must be a number, got str(?s:.*)fix: "),
    (lambda: mp.DynamicLossScale(None), r"DynamicLossScale\(loss_scale=None\): loss_scale must be "
                                        r"a number, got NoneType"),
    (lambda: mp.DynamicLossScale(jnp.array(True)), r"loss_scale must be a number, got bool"),
    (lambda: mp.DynamicLossScale(min_loss_scale=True),
     r"DynamicLossScale\(min_loss_scale=True\): min_loss_scale must be a number, got bool"),
    (lambda: mp.DynamicLossScale(min_loss_scale="1"),
     r"min_loss_scale must be a number, got str"),
    (lambda: mp.DynamicLossScale(min_loss_scale=jnp.float32(1.0)),
     r"min_loss_scale must be a Python or NumPy number(?s:.*)a setting, not part of the state"),
    (lambda: mp.DynamicLossScale(period=True), r"DynamicLossScale\(period=True\): period must be "
                                               r"an integer >= 1"),
    (lambda: mp.DynamicLossScale(factor="2"), r"DynamicLossScale\(factor='2'\): factor must be > 1"),
])
def test_bools_strings_and_other_non_numbers_are_refused_with_a_type_error(call, message):
    with pytest.raises((TypeError, ValueError), match=message) as error:
        call()
    if "number, got" in message or "NumPy number" in message:
        assert error.type is TypeError


def test_numpy_numbers_and_arrays_are_still_taken():
    s = mp.DynamicLossScale(np.float32(8.0), period=np.int64(3), min_loss_scale=np.float32(2.0))
    assert (float(s.loss_scale), s.period, s.min_loss_scale) == (8.0, 3, 2.0)
    assert type(s.min_loss_scale) is float  # a static setting: hashable, compared by value
    assert float(mp.StaticLossScale(np.array(4.0)).loss_scale) == 4.0
    assert float(mp.StaticLossScale(jnp.float32(4.0)).loss_scale) == 4.0
    traced = jax.jit(lambda x: mp.DynamicLossScale(x).adjust(False).loss_scale)(jnp.float32(8.0))
    assert float(traced) == 4.0  # a traced scale is the program's business, as before


# --- templates made with create_scope_now_ outside the model: TF's graph-level numbering ----------


def _names_tf(build):
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        model = build(v1, v1.variable_scope, v1.get_variable)
        model()
        return sorted(v.op.name for v in v1.global_variables())


def _names_sp(build):
    gc.collect()  # templates of earlier tests no longer referenced free their names
    model = sp.transform(build(sp, sp.scope, sp.get_param))
    params = model.init(KEY)
    model.apply(params)  # the same names in apply
    return sorted(sp.flatten(params))


def _two_made_now(api, scope, get):
    a = api.make_template("t", lambda: get("w", [1]), create_scope_now_=True)
    b = api.make_template("t", lambda: get("v", [1]), create_scope_now_=True)

    def model():
        b(), a(), b()
    return model


def _made_now_then_plain_called_first(api, scope, get):
    a = api.make_template("t", lambda: get("w", [1]), create_scope_now_=True)
    b = api.make_template("t", lambda: get("v", [1]))

    def model():
        b(), a(), a()
    return model


def _plain_made_first(api, scope, get):
    b = api.make_template("t", lambda: get("v", [1]))
    a = api.make_template("t", lambda: get("w", [1]), create_scope_now_=True)

    def model():
        a(), b()
    return model


def _made_now_then_default_name_scopes(api, scope, get):
    a = api.make_template("t", lambda: get("w", [1]), create_scope_now_=True)

    def model():
        with scope("o"):
            a()  # its scope is the root's t, wherever it is called
            api.make_template("t", lambda: get("v", [1]))()
        with scope(None, default_name="t"):
            get("z", [1])
        api.make_template("t", lambda: get("y", [1]))()
    return model


def _unique_name_and_nested_names(api, scope, get):
    a = api.make_template("ignored", lambda: get("w", [1]), unique_name_="t",
                          create_scope_now_=True)
    b = api.make_template("t", lambda: get("v", [1]), create_scope_now_=True)
    c = api.make_template("n/m", lambda: get("w", [1]), create_scope_now_=True)
    d = api.make_template("n/m", lambda: get("v", [1]), create_scope_now_=True)

    def model():
        a(), b(), c(), d()
    return model


def _default_name_scope_before_the_made_now_templates_first_call(api, scope, get):
    a = api.make_template("t", lambda: get("w", [1]), create_scope_now_=True)

    def model():
        with scope(None, default_name="t"):  # TF's graph counted the template's t already: t_1
            get("z", [1])
        with scope("o"):
            with scope(None, default_name="t"):  # not at the root: t
                get("y", [1])
        a()
    return model


@pytest.mark.parametrize("build", [
    _two_made_now, _made_now_then_plain_called_first, _plain_made_first,
    _made_now_then_default_name_scopes, _unique_name_and_nested_names,
    _default_name_scope_before_the_made_now_templates_first_call])
def test_templates_made_now_outside_the_model_are_numbered_as_tf_numbers_them(build):
    assert _names_sp(build) == _names_tf(build)


def test_a_root_template_frees_its_name_when_no_longer_referenced():
    gc.collect()
    first = sp.make_template("freed", lambda: sp.get_param("w", [1]), create_scope_now_=True)
    second = sp.make_template("freed", lambda: sp.get_param("w", [1]), create_scope_now_=True)
    assert (first.variable_scope_name, second.variable_scope_name) == ("freed/", "freed_1/")
    del first, second
    gc.collect()
    again = sp.make_template("freed", lambda: sp.get_param("w", [1]), create_scope_now_=True)
    assert again.variable_scope_name == "freed/"


# --- a template's variables, as TF's Template lists them -----------------------------------------


def _variables_program(api, get, state=False):
    """A template whose function makes a trainable, a non-trainable and a local parameter (and,
    with ``state``, an sp state entry), called twice, with parameters outside it."""
    def body(x):
        w = get("w", [3, 2])
        s = get("s", [2], trainable=False)
        loc = get("l", [1], collections=["local_variables"])
        if state:
            api.get_state("m", [2], sp.initializers.zeros)
        return x @ w + s + loc

    return api.make_template("gen", body)


_ATTRIBUTES = ["variables", "weights", "global_variables", "local_variables",
               "trainable_variables", "trainable_weights", "non_trainable_variables",
               "non_trainable_weights"]


def test_template_variable_lists_are_tfs_in_init():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        v1.get_variable("before", [1])
        gen = _variables_program(v1, v1.get_variable)
        assert gen.variables == [] and gen.trainable_variables == []  # before the first call
        x = v1.zeros([1, 3])
        gen(x), gen(x)
        v1.get_variable("after", [1])
        want = {a: [v.op.name for v in getattr(gen, a)] for a in _ATTRIBUTES}
    assert want["trainable_variables"] == ["gen/w", "gen/l"]  # TF: trainable, local or not

    gen = _variables_program(sp, sp.get_param)
    got = {}

    def model(x):
        sp.get_param("before", [1])
        assert gen.variables == [] and gen.trainable_variables == []
        made = {}
        gen(x)
        y = gen(x)
        sp.get_param("after", [1])
        for name in ("w", "s", "l"):
            with sp.scope(gen.variable_scope, reuse=True):
                made[id(sp.get_param(name, None))] = "gen/" + name
        for attribute in _ATTRIBUTES:
            got[attribute] = [made[id(value)] for value in getattr(gen, attribute)]
        return y

    sp.transform(model).init(KEY, jnp.ones((1, 3)))
    assert got == want
    assert gen.var_scope is gen.variable_scope and gen.variable_scope_name == "gen/"


def test_template_state_is_a_non_trainable_global_variable():
    gen = _variables_program(sp, sp.get_param, state=True)
    seen = {}

    def model(x):
        y = gen(x)
        seen.update({a: [v.shape for v in getattr(gen, a)] for a in _ATTRIBUTES})
        return y

    sp.transform_with_state(model).init(KEY, jnp.ones((1, 3)))
    assert seen["non_trainable_variables"] == [(2,), (2,)]  # s, then the state m
    assert seen["variables"] == [(3, 2), (2,), (2,), (1,)]  # global (w, s, m), then local (l)


def test_template_variables_in_apply_and_the_lists_apply_cannot_know():
    gen = _variables_program(sp, sp.get_param)
    seen = {}

    def model(x):
        seen.clear()  # init's, then apply's
        seen["before"] = gen.variables
        y = gen(x)
        seen["variables"], seen["weights"] = gen.variables, gen.weights
        for attribute in _ATTRIBUTES[2:]:
            try:
                seen[attribute] = getattr(gen, attribute)
            except RuntimeError as error:
                seen[attribute] = str(error)
        return y

    model = sp.transform(model)
    params = model.init(KEY, jnp.ones((1, 3)))
    model.apply(params, jnp.ones((1, 3)))
    assert seen["before"] == []
    flat = sp.flatten(params)
    for key in ("variables", "weights"):
        assert len(seen[key]) == 3
        for value, name in zip(seen[key], ["gen/w", "gen/s", "gen/l"]):
            np.testing.assert_array_equal(value, flat[name])
    message = seen["trainable_variables"]
    assert message.startswith("Template 'gen'.trainable_variables in apply: which parameters are "
                              "trainable")
    assert "fix: read template.trainable_variables in init" in message
    assert "sp.partition_by_scope(params, 'gen/')[0]" in message
    assert "sp.partition_trainable(them, model.specs(*args))" in message


def test_template_variables_outside_a_call_say_where_the_parameters_are():
    gen = _variables_program(sp, sp.get_param)
    sp.transform(lambda x: gen(x)).init(KEY, jnp.ones((1, 3)))
    with pytest.raises(sp.NotInTransformError,
                       match=r"Template 'gen'.trainable_variables was read outside init/apply"
                             r"(?s:.*)fix: outside the model, sp.partition_by_scope\(params, "
                             r"'gen/'\)\[0\] holds the template's parameters"):
        gen.trainable_variables


# --- template names: checked where the template is made, '' at the root as in TF -----------------


def test_a_template_named_empty_puts_its_parameters_at_the_root_as_tf_does():
    def build(api, scope, get):
        t = api.make_template("", lambda: get("w", [1]))

        def model():
            t(), t()
        return model

    assert _names_sp(build) == _names_tf(build) == ["w"]

    def inside():
        with sp.scope("o"):
            sp.make_template("", lambda: sp.get_param("w", [1]))()

    with pytest.raises(sp.InvalidNameError,
                       match=r"sp.make_template\('', ...\) in scope 'o': TF opens a scope with an "
                             r"empty name there, and its parameters are named 'o//w'(?s:.*)fix: "
                             r"give the template a name"):
        sp.transform(inside).init(KEY)

    def two():  # TF: "'_1/v' is not a valid root scope name"
        sp.make_template("", lambda: sp.get_param("w", [1]))()
        sp.make_template("", lambda: sp.get_param("v", [1]))()

    with pytest.raises(sp.InvalidNameError, match=r"a second template named '' at the root(?s:.*)"
                                                  r"'_1', which is not a valid root scope name"):
        sp.transform(two).init(KEY)


@pytest.mark.parametrize("name, unique, message", [
    ("x/", None, r"'x/' is not a valid scope name: every '/'-separated component must be non-empty"
                 r"(?s:.*)asked: sp.make_template\('x/', ...\)"),
    ("a//b", None, r"asked: sp.make_template\('a//b', ...\)"),
    ("t", "u/", r"asked: sp.make_template\('t', ..., unique_name_='u/'\)"),
    ("bad name", None, r"'bad name' is not a valid scope name(?s:.*)asked: "
                       r"sp.make_template\('bad name', ...\)"),
    ("_t", None, r"'_t' is not a valid root scope name(?s:.*)asked: sp.make_template\('_t', ...\)"),
    ("t", "", r"sp.make_template\('t', ..., unique_name_=''\): unique_name_ must not be empty"),
])
@pytest.mark.parametrize("where", ["inside", "outside", "inside_now"])
def test_template_names_are_checked_naming_the_template(name, unique, message, where):
    if name == "_t" and where == "inside_now":
        return  # made at the model's root: checked there, as the other branches
    fn = lambda: sp.get_param("w", [1])  # noqa: E731
    if where == "outside":
        with pytest.raises(sp.InvalidNameError, match=message):
            sp.make_template(name, fn, unique_name_=unique, create_scope_now_=True)
        return

    def model():
        sp.make_template(name, fn, unique_name_=unique, create_scope_now_=where == "inside_now")()

    with pytest.raises(sp.InvalidNameError, match=message):
        sp.transform(model).init(KEY)


def test_a_template_name_that_is_not_a_string_is_a_type_error():
    with pytest.raises(TypeError, match=r"sp.make_template\(3, ...\): name_ must be a str, got int"):
        sp.make_template(3, lambda: None)
    with pytest.raises(ValueError, match="name cannot be None"):
        sp.make_template(None, lambda: None)


def test_a_getter_with_tfs_explicit_signature_composes_with_the_mixed_precision_scope():
    # TF's getters name their keywords (no **kwargs): they get neither constraint= nor sharding=
    seen = []

    def tf_getter(getter, name, shape=None, dtype=None, initializer=None, regularizer=None,
                  reuse=None, trainable=None, collections=None, caching_device=None,
                  partitioner=None, validate_shape=True, use_resource=None, synchronization=None,
                  aggregation=None):
        seen.append(name)
        return getter(name, shape=shape, dtype=dtype, initializer=initializer,
                      regularizer=regularizer, reuse=reuse, trainable=trainable,
                      collections=collections)

    def fn(x):
        with sp.mixed_precision.scope("net", compute_dtype=jnp.bfloat16, custom_getter=tf_getter):
            w = sp.get_param("w", (3, 2))
        return x.astype(jnp.bfloat16) @ w

    model = sp.transform(fn)
    params = model.init(jax.random.key(0), jnp.ones((1, 3)))
    assert params["net"]["w"].dtype == jnp.float32
    assert model.apply(params, jnp.ones((1, 3))).dtype == jnp.bfloat16
    assert seen == ["net/w", "net/w"]


def test_a_create_scope_now_templates_original_name_scope_is_its_unique_name_as_in_tf():
    # TF's _pure_variable_scope gives the template's scope its unique name as name scope ('tm',
    # 'tm_1'; no '/'), which each call opens where the template is called: slim end points named
    # after it stay apart (they collided when both templates reported the enclosing 'o/').
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1

    def tf_names():
        seen = []
        with tf.Graph().as_default() as graph:
            def body(x):
                scope = v1.get_variable_scope()
                seen.append((scope.name, scope.original_name_scope, graph.get_name_scope()))
                return x * v1.get_variable("w", [])

            root = v1.make_template("r", body, create_scope_now_=True)
            with v1.variable_scope("o"):
                t1 = v1.make_template("tm", body, create_scope_now_=True)
                t2 = v1.make_template("tm", body, create_scope_now_=True)
            x = v1.placeholder(tf.float32, [])
            t1(x), t2(x), t1(x), root(x)
            with v1.name_scope("n"):
                t2(x), root(x)
        return seen

    seen = []

    def body(x):
        scope = sp.get_scope()
        seen.append((scope.name, scope.original_name_scope, sp.current_name_scope().rstrip("/")))
        return x * sp.get_param("w", [])

    root = sp.make_template("r", body, create_scope_now_=True)

    def model(x):
        with sp.scope("o"):
            t1 = sp.make_template("tm", body, create_scope_now_=True)
            t2 = sp.make_template("tm", body, create_scope_now_=True)
        t1(x), t2(x), t1(x), root(x)
        with sp.name_scope("n"):
            t2(x), root(x)
        return x

    sp.transform(model).init(0, jnp.ones(()))
    assert seen == tf_names() == [
        ("o/tm", "tm", "tm"), ("o/tm_1", "tm_1", "tm_1"), ("o/tm", "tm", "tm_2"), ("r", "r", "r"),
        ("o/tm_1", "tm_1", "n/tm_1"), ("r", "r", "n/r")]
