"""What a layer object (``sp.layers.Dense``, an ``sp.layers.Layer`` subclass), a template
(``sp.make_template``) or an RNN cell learns in one ``init``/``apply`` call (its captured scope,
whether it built, its variational noise) belongs to that call: any number of calls may overlap
(nested applies, threads), a retraced loop body starts over, and nothing of a finished call (its
frame, params or tracers) stays alive on the object, which copies, deep-copies and pickles."""
import copy
import gc
import pickle
import sys
import threading
import traceback
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
from scoped_params import _frame

SHARED = ["shared/bias", "shared/kernel"]


class Scale(sp.layers.Layer):
    def build(self, input_shape):
        self.g = self.add_weight("g", [int(input_shape[-1])], initializer=sp.initializers.ones)

    def call(self, x):
        return x * self.g


class PerCallScale(sp.layers.Layer):
    """As ``Scale``, reading its weight per call (``self.weights``), not from an attribute ``build``
    set: that attribute holds one call's value (as TF's), which threads would share."""

    def build(self, input_shape):
        self.add_weight("g", [int(input_shape[-1])], initializer=sp.initializers.ones)

    def call(self, x):
        return x * self.weights[0]


# --- overlapping calls ----------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [8, 20])
def test_layer_object_reuses_its_scope_across_any_number_of_nested_applies(nested):
    obj = sp.layers.Dense(3, name="shared")
    x = jnp.ones((1, 3))
    inner = sp.transform(lambda x: obj(x))
    inner_params = inner.init(1, x)

    def model(x):
        h = obj(x)
        for _ in range(nested):  # each a call of its own, using the same object
            h = h + inner.apply(inner_params, x)
        return obj(h)  # the object's second call in this init: reuses shared/

    params = sp.transform(model).init(0, x)
    assert sorted(sp.flatten(params)) == SHARED
    np.testing.assert_allclose(sp.transform(model).apply(params, x),
                               _reference(params, inner_params, x, nested), rtol=1e-5)


def _reference(params, inner_params, x, nested):
    def dense(p, v):
        return v @ p["shared"]["kernel"] + p["shared"]["bias"]
    h = dense(params, x)
    for _ in range(nested):
        h = h + dense(inner_params, x)
    return dense(params, h)


def test_template_and_rnn_cell_reuse_their_scope_across_many_nested_applies():
    tmpl = sp.make_template("t", lambda h: sp.layers.dense(h, 2))
    cell = sp.rnn.GRUCell(2)
    x = jnp.ones((1, 2))
    inner = sp.transform(lambda x: tmpl(x) + cell(x, x)[0])
    inner_params = inner.init(1, x)

    def model(x):
        h = tmpl(x) + cell(x, x)[0]
        for _ in range(12):
            h = h + inner.apply(inner_params, x)
        return tmpl(h) + cell(h, h)[0]

    names = sorted(sp.flatten(sp.transform(model).init(0, x)))
    assert names == sorted(sp.flatten(inner_params))
    assert not any("_1/" in n for n in names)


def test_layer_objects_shared_by_many_threads_initialising_at_once_keep_their_names():
    obj, custom = sp.layers.Dense(3, name="shared"), PerCallScale()
    threads = 12
    barrier = threading.Barrier(threads)

    def model(x):
        h = custom(obj(x))
        barrier.wait()  # every thread's call is open here at once
        return custom(obj(h))

    m = sp.transform(model)
    names: list = [None] * threads

    def work(i):
        names[i] = sorted(sp.flatten(m.init(i, jnp.ones((1, 3)))))

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert names == [["per_call_scale/g"] + SHARED] * threads


def test_concurrent_applies_sharing_layer_objects_do_not_fail():
    objs = [sp.layers.Dense(2) for _ in range(4)] + [PerCallScale()]

    def model(x):
        for o in objs:
            x = o(x)
        return x

    m = sp.transform(model)
    x = jnp.ones((1, 2))
    params = m.init(0, x)
    expected = m.apply(params, x)
    _race(lambda i: np.testing.assert_allclose(m.apply(params, x), expected, rtol=1e-6),
          workers=6, repeats=300)


def _race(check, workers, repeats):
    """Run ``check(i)`` ``repeats`` times in each of ``workers`` threads (``i`` the thread's
    number) at once, switching threads often (the race windows are small); fail with the first
    error's traceback."""
    errors: list = []

    def work(i):
        for _ in range(repeats):
            if errors:
                return
            try:
                check(i)
            except Exception:  # noqa: BLE001 - reported below
                errors.append(traceback.format_exc())

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]


# --- nothing of a finished call stays alive --------------------------------------------------------


def _used_objects():
    dense, custom, cell = sp.layers.Dense(3), Scale(), sp.rnn.GRUCell(3)
    sub = type("Shifted", (sp.layers.Dense,), {
        "build": lambda self, shape: (setattr(self, "s", self.add_weight("s", [3])),
                                      sp.layers.Dense.build(self, shape))})(3)
    tmpl = sp.make_template("t", lambda h: sp.layers.dense(h, 3))
    drop = sp.rnn.DropoutWrapper(sp.rnn.BasicRNNCell(3), input_keep_prob=0.5,
                                 variational_recurrent=True, input_size=3, dtype=jnp.float32)

    def model(x):
        h = dense(x) + custom(x) + cell(x, x)[0] + sub(x) + tmpl(x)
        return h + drop(x, x)[0]

    return (dense, custom, cell, sub, tmpl, drop), sp.transform(model)


def _frames():
    gc.collect()
    return {id(o) for o in gc.get_objects() if isinstance(o, _frame.Frame)}


def test_no_frame_outlives_its_call():
    objects, m = _used_objects()
    x = jnp.ones((1, 3))
    before = _frames()
    params = m.init(0, x)
    m.apply(params, x, rng=jax.random.key(0))
    jax.jit(m.apply)(params, x, rng=jax.random.key(0))
    nested = sp.transform(lambda x: m.apply(params, x, rng=jax.random.key(0)))
    nested.apply({}, x)
    jax.jit(nested.apply)({}, x)
    assert _frames() <= before
    for obj in objects:
        assert not _reaches(obj, (_frame.Frame, jax.core.Tracer)), obj


def _reaches(root, kinds, skip=()):
    """Whether ``root``'s attributes lead to an instance of ``kinds`` (the attributes a user's
    ``build`` sets, ``skip``, aside: TF's layers keep those too)."""
    seen, todo = {id(root)}, [v for k, v in vars(root).items() if k not in skip]
    while todo:
        value = todo.pop()
        if id(value) in seen or isinstance(value, type) or callable(value) and not isinstance(
                value, (sp.layers.Layer, sp.rnn.RNNCell)):
            continue
        seen.add(id(value))
        if isinstance(value, kinds):
            return True
        todo.extend(gc.get_referents(value))
    return False


def test_finished_applies_leave_no_params_alive_on_a_layer_object():
    obj = sp.layers.Dense(512)
    m = sp.transform(lambda x: obj(x))
    x = jnp.ones((1, 512))
    gc.collect()
    before = {id(a) for a in jax.live_arrays()}
    for seed in range(3):
        params = m.init(seed, x)
        m.apply(params, x)
        kernel = weakref.ref(params["dense"]["kernel"])
        del params
        gc.collect()
        assert kernel() is None
    gc.collect()
    big = [a for a in jax.live_arrays() if id(a) not in before and a.size >= 512 * 512]
    assert not big


def test_jitted_apply_of_layer_objects_and_templates_leaks_no_tracer():
    dense, custom = sp.layers.Dense(3), PerCallScale()
    tmpl = sp.make_template("t", lambda h: sp.layers.dense(h, 3))
    m = sp.transform(lambda x: tmpl(custom(dense(x))))
    x = jnp.ones((1, 3))
    params = m.init(0, x)
    with jax.checking_leaks():
        jax.jit(m.apply)(params, x)


# --- copies of a used object ------------------------------------------------------------------------


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))],
                         ids=["deepcopy", "pickle"])
def test_a_used_layer_object_deep_copies_and_pickles_into_an_independent_unused_one(duplicate):
    obj = sp.layers.Dense(3, name="shared", kernel_initializer=sp.initializers.ones)
    m = sp.transform(lambda x: obj(x))
    x = jnp.ones((1, 3))
    m.apply(m.init(0, x), x)
    jax.jit(m.apply)(m.init(1, x), x)
    twin = duplicate(obj)
    assert twin.units == 3 and twin.name == "shared"
    if duplicate is copy.deepcopy:  # as copy.copy (a pickle keeps what built and scope_name say)
        assert not twin.built
    assert twin.kernel_initializer is sp.initializers.ones

    def model(x):
        y = obj(x) + twin(x)
        assert twin.scope_name == "shared_1" and obj.scope_name == "shared"
        return obj(y) + twin(y)  # each reuses its own

    names = sorted(sp.flatten(sp.transform(model).init(0, x)))
    assert names == SHARED + ["shared_1/bias", "shared_1/kernel"]


def test_deepcopy_copies_a_layer_objects_arguments_which_still_work():
    relu_dense = sp.layers.Dense(2, activation=jax.nn.relu, kernel_initializer=sp.initializers.ones,
                                 bias_initializer=sp.initializers.constant(jnp.array([-9.0, 1.0])))
    m = sp.transform(lambda x: relu_dense(x))
    x = jnp.ones((1, 2))
    m.init(0, x)
    twin = copy.deepcopy(relu_dense)
    assert twin._kwargs is not relu_dense._kwargs
    twin_model = sp.transform(lambda x: twin(x))
    np.testing.assert_allclose(twin_model.apply(twin_model.init(0, x), x), [[0.0, 3.0]])


def test_deepcopy_of_a_used_custom_layer_runs_its_own_build_and_copies_its_arguments():
    class Gate(sp.layers.Layer):
        def __init__(self, sizes):
            super().__init__()
            self.sizes = sizes
            self.inner = sp.layers.Dense(sizes[0])

        def build(self, input_shape):
            self.w = self.add_weight("w", [int(input_shape[-1])])

        def call(self, x):
            return self.inner(x * self.w)

    gate = Gate([3])
    m = sp.transform(lambda x: gate(x))
    x = jnp.ones((1, 3))
    m.init(0, x)
    twin = copy.deepcopy(gate)
    assert twin.sizes == [3] and twin.sizes is not gate.sizes
    assert twin.inner is not gate.inner

    names = sorted(sp.flatten(sp.transform(lambda x: gate(x) + twin(x)).init(0, x)))
    assert names == ["gate/dense/bias", "gate/dense/kernel", "gate/w",
                     "gate_1/dense/bias", "gate_1/dense/kernel", "gate_1/w"]


def test_deepcopy_of_a_used_rnn_cell_makes_its_own_weights():
    cell = sp.rnn.GRUCell(2)
    x = jnp.ones((1, 2))
    m = sp.transform(lambda x: cell(x, x)[0])
    m.apply(m.init(0, x), x)
    twin = copy.deepcopy(cell)
    names = sorted(sp.flatten(sp.transform(lambda x: cell(x, x)[0] + twin(x, x)[0]).init(0, x)))
    assert names == sorted(sp.flatten(m.init(0, x))) + sorted(
        n.replace("gru_cell/", "gru_cell_1/") for n in sp.flatten(m.init(0, x)))


# --- a retraced loop body starts over ---------------------------------------------------------------


def _loop_model(make):
    def model(x):
        layer = make()

        def body(v):  # a Python-float carry: JAX promotes it and traces cond and body again
            return v[0] + 1, v[1] * layer(jnp.ones((1, 1), jnp.bfloat16))[0, 0]

        return sp.while_loop(lambda v: v[0] < 3, body, (0, x))
    return model


@pytest.mark.parametrize("make, names", [
    (lambda: sp.layers.Dense(1, use_bias=False), ["dense/kernel"]),
    (lambda: sp.make_template("t", lambda h: sp.layers.dense(h, 1, use_bias=False)),
     ["t/dense/kernel"]),
    (lambda: Scale(), ["scale/g"]),
], ids=["object", "template", "custom"])
def test_layer_first_called_in_a_retraced_while_loop_body_makes_its_weights_once(make, names):
    m = sp.transform(_loop_model(make))
    params = m.init(0, 1.0)
    assert sorted(sp.flatten(params)) == names
    m.apply(params, 1.0)


def test_layer_object_first_called_in_a_retraced_layer_stack_block_is_applied():
    def stack_model(make):
        def model(x):
            layer = make()

            @sp.layer_stack(2)
            def block(h):  # regularization_loss() makes the stack trace the block again
                return layer(h) + sp.regularization_loss()

            return block(x)
        return model

    x = jnp.ones((1, 3))
    reg = sp.l2_regularizer(0.1)
    functional = sp.transform(stack_model(
        lambda: lambda h: sp.layers.dense(h, 3, kernel_regularizer=reg)))
    m = sp.transform(stack_model(lambda: sp.layers.Dense(3, kernel_regularizer=reg)))
    params = m.init(0, x)
    assert sorted(sp.flatten(params)) == sorted(sp.flatten(functional.init(0, x)))
    np.testing.assert_allclose(m.apply(params, x), functional.apply(params, x), rtol=1e-6)


def test_rnn_cell_first_called_in_a_retraced_while_loop_body_makes_its_weights_once():
    def model(x):
        cell = sp.rnn.GRUCell(1)

        def body(v):  # bfloat16 steps: the Python-float carry changes type, JAX traces again
            ones = jnp.ones((1, 1), jnp.bfloat16)
            return v[0] + 1, v[1] * cell(ones, ones)[0][0, 0]

        return sp.while_loop(lambda v: v[0] < 3, body, (0, x))

    m = sp.transform(model)
    params = m.init(0, 1.0)
    assert all(n.startswith("gru_cell/") for n in sp.flatten(params))
    m.apply(params, 1.0)


# --- what outside a call still reads the latest call's ---------------------------------------------


def test_latest_calls_scope_is_read_outside_a_call_without_keeping_its_params():
    tmpl = sp.make_template("net", lambda h: sp.layers.dense(h, 2))
    obj, custom = sp.layers.Dense(2), Scale()
    assert tmpl.variable_scope is None and not obj.built
    m = sp.transform(lambda x: custom(obj(tmpl(x))))
    x = jnp.ones((1, 2))
    params = m.init(0, x)
    m.apply(params, x)
    assert tmpl.variable_scope.name == "net" and tmpl.variable_scope_name == "net/"
    assert obj.built and obj.scope_name == "dense" and custom.scope_name == "scale"
    for used in (tmpl, obj, custom):
        assert not _reaches(used, (jax.Array, jax.core.Tracer, _frame.Frame))


# --- what a custom layer's build stores on self ------------------------------------------------------


class Tied(sp.layers.Layer):
    """Stores its weights on ``self`` in ``build`` (one, and a list), as TF 1.x layers do."""

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", [int(input_shape[-1]), 2])
        self.extra = [self.add_weight(f"e{i}", [2], initializer=sp.initializers.ones)
                      for i in range(2)]
        self.width = int(input_shape[-1])  # not an array: kept on the object, as before

    def call(self, x):
        return x @ self.kernel + self.extra[0] + self.extra[1]


def test_what_build_stores_on_self_is_this_calls_value_and_leaks_no_tracer():
    layer = Tied()
    m = sp.transform(lambda x: layer(x) @ layer.kernel.T)  # weight tying: read after the call
    x = jnp.ones((1, 3))
    params = m.init(0, x)
    kernel = params["tied"]["kernel"]
    expected = (x @ kernel + 2.0) @ kernel.T
    with jax.checking_leaks():
        np.testing.assert_allclose(jax.jit(m.apply)(params, x), expected, rtol=1e-6)
    np.testing.assert_allclose(m.apply(params, x), expected, rtol=1e-6)
    assert layer.width == 3
    assert not {"kernel", "extra"} & set(vars(layer))
    assert not _reaches(layer, (jax.Array, jax.core.Tracer, _frame.Frame))


def test_what_build_stored_read_outside_init_or_apply_names_the_fix():
    layer = Tied()
    m = sp.transform(lambda x: layer(x))
    m.apply(m.init(0, jnp.ones((1, 3))), jnp.ones((1, 3)))
    with pytest.raises(sp.NotInTransformError, match=r"Tied\(\.\.\.\)\.kernel was read outside "
                       r"init/apply: it is what Tied\.build stored in a call(.|\n)*fix: read "
                       r"layer\.kernel inside the model function, after the layer's call"):
        layer.kernel
    with pytest.raises(AttributeError, match="'Tied' object has no attribute 'missing'"):
        layer.missing
    assert not hasattr(layer, "missing")


def test_what_build_stored_read_before_the_layers_call_in_this_apply_names_the_fix():
    layer = Tied()

    def model(x, early):
        if early:
            layer.kernel  # this apply's build has not run yet
        return layer(x)

    m = sp.transform(model)
    x = jnp.ones((1, 3))
    params = m.init(0, x, False)
    with pytest.raises(AttributeError, match=r"'Tied' object has no attribute 'kernel' in this "
                       r"init/apply call yet(.|\n)*fix: call the layer first, y = layer\(x\)"):
        m.apply(params, x, True)


def test_concurrent_applies_each_read_their_own_params_from_what_build_stored():
    layer = Tied()
    m = sp.transform(lambda x: layer(x))
    x = jnp.ones((1, 3))
    params = m.init(0, x)
    scaled = [jax.tree_util.tree_map(lambda a, k=k: a * k, params) for k in range(1, 7)]
    expected = [m.apply(p, x) for p in scaled]
    # before, one thread's call read another's kernel (build stored it on the shared object)
    _race(lambda i: np.testing.assert_allclose(m.apply(scaled[i], x), expected[i], rtol=1e-6),
          workers=len(scaled), repeats=100)


def test_a_built_in_layer_subclass_keeps_what_its_build_stores_per_call():
    class Masked(sp.layers.Dense):
        def build(self, input_shape):
            self.mask = self.add_weight("mask", [int(input_shape[-1]), self.units],
                                        initializer=sp.initializers.ones, trainable=False)
            super().build(input_shape)

        def call(self, x):
            return x @ (self.kernel * self.mask) + self.bias

    layer = Masked(2)
    m = sp.transform(lambda x: layer(x))
    x = jnp.ones((1, 3))
    params = m.init(0, x)
    with jax.checking_leaks():
        out = jax.jit(m.apply)(params, x)
    np.testing.assert_allclose(out, x @ params["masked"]["kernel"] + params["masked"]["bias"],
                               rtol=1e-6)
    assert "mask" not in vars(layer)
    with pytest.raises(sp.NotInTransformError, match=r"Masked\(\.\.\.\)\.mask was read outside"):
        layer.mask


def test_a_name_the_layer_class_defines_is_set_on_the_object_as_before():
    class Defaulted(sp.layers.Layer):
        kernel = None  # a class default: reads find it, so build's value stays on the object

        def build(self, input_shape):
            self.kernel = self.add_weight("kernel", [int(input_shape[-1])])

        def call(self, x):
            return x * self.kernel

    layer = Defaulted()
    m = sp.transform(lambda x: layer(x))
    x = jnp.ones((1, 3))
    params = m.init(0, x)
    np.testing.assert_allclose(m.apply(params, x), x * params["defaulted"]["kernel"])
    assert "kernel" in vars(layer)


def test_root_templates_made_by_many_threads_at_once_each_get_their_own_scope():
    made: list = []
    _race(lambda i: made.append(sp.make_template("tower", lambda h: sp.layers.dense(h, 2),
                                                 create_scope_now_=True)),
          workers=8, repeats=40)
    names = [t.variable_scope.name for t in made]
    assert len(set(names)) == len(made) == 320
    assert set(names) == {"tower"} | {f"tower_{i}" for i in range(1, 320)}
    del made[:160]  # freed names are taken again, once each
    gc.collect()
    again = [sp.make_template("tower", lambda h: h, create_scope_now_=True) for _ in range(160)]
    assert sorted(t.variable_scope.name for t in again + made) == sorted(
        {"tower"} | {f"tower_{i}" for i in range(1, 320)})


def test_a_layer_subclass_with_its_own_setattr_keeps_it():
    seen = []

    class Logged(sp.layers.Dense):
        def __setattr__(self, name, value):
            seen.append(name)
            super().__setattr__(name, value)

        def build(self, input_shape):
            self.mask = self.add_weight("mask", [int(input_shape[-1]), self.units],
                                        initializer=sp.initializers.ones)
            super().build(input_shape)

        def call(self, x):
            return x @ (self.kernel * self.mask)

    layer = Logged(2)
    m = sp.transform(lambda x: layer(x))
    x = jnp.ones((1, 3))
    params = m.init(0, x)
    np.testing.assert_allclose(m.apply(params, x), x @ params["logged"]["kernel"], rtol=1e-6)
    assert "mask" in seen


def test_one_name_scope_object_entered_by_calls_in_threads_at_once_closes_each_calls_own_entry():
    shared = sp.name_scope("block")
    x = jnp.ones(2)

    def model(x, who):
        with sp.name_scope(f"t{who}"):
            for _ in range(10):
                with shared, shared:
                    pass
            sp.record("r", x)
        return x

    model = sp.transform(model)

    def check(i):
        _, records = model.apply_with_intermediates({}, x, i)
        assert list(records) == [f"t{i}/r"]

    _race(check, workers=6, repeats=60)
    assert shared._entries == []  # no finished call's frame kept


class _Gain(sp.layers.Layer):
    def build(self, input_shape):
        self.add_weight("g", [int(input_shape[-1])])

    def call(self, x):
        return x * self.weights[0]


def test_a_custom_layers_default_weight_dtype_is_its_first_input_dtype_in_each_call():
    # TF keeps it on the object from the first call ever; here, as the rest of what a layer learns,
    # it belongs to the call: a bfloat16 call elsewhere, a failed int32 call, or another thread's
    # call no longer decides this one's weights.
    layer = _Gain()

    def weight_dtype(x):
        [value] = sp.flatten(sp.transform(lambda x: layer(x)).init(KEY, x)).values()
        return value.dtype

    assert weight_dtype(jnp.ones((1, 3), jnp.bfloat16)) == jnp.bfloat16
    assert weight_dtype(jnp.ones((1, 3))) == jnp.float32
    with pytest.raises(NameError):
        sp.transform(lambda x: layer(x) + undefined_name).init(KEY, jnp.ones((1, 3), jnp.int32))  # noqa: F821
    assert weight_dtype(jnp.ones((1, 3))) == jnp.float32

    def check(i):
        dtype = (jnp.float32, jnp.bfloat16)[i % 2]
        assert weight_dtype(jnp.ones((1, 3), dtype)) == dtype

    _race(check, workers=4, repeats=10)


def test_a_traced_apply_that_raised_with_a_scope_open_leaves_no_name_on_the_callers_ops():
    def bad(x):
        outer, inner = sp.scope("a"), sp.scope("b")
        outer.__enter__()
        inner.__enter__()
        outer.__exit__(None, None, None)  # improper nesting: ScopeNestingError
        return x

    model = sp.transform(bad)

    def caller(x):
        with pytest.raises(sp.ScopeNestingError):
            model.apply({}, x)
        return jnp.sin(x)

    [eqn] = jax.make_jaxpr(caller)(1.0).eqns
    assert str(eqn.source_info.name_stack) == ""


@pytest.mark.parametrize("kind", ["async", "generator"])
def test_transforming_an_async_or_generator_function_is_refused(kind):
    if kind == "async":
        async def model(x):
            return sp.layers.dense(x, 3)
    else:
        def model(x):
            yield sp.layers.dense(x, 3)
    what = "an async function" if kind == "async" else "a generator function"
    for transform in (sp.transform, sp.transform_with_state):
        with pytest.raises(TypeError, match=f"is {what}: calling it only makes"):
            transform(model)
