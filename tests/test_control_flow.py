"""Parameters inside JAX control flow: sp.scan, sp.cond, sp.switch, sp.while_loop, sp.fori_loop,
sp.remat; and the NestedTraceError that jax.lax's own versions get, whose cached traces would
otherwise replay one call's parameters in every later call."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)
T, B, D, H = 5, 2, 3, 4


def rnn_cell(h, x):
    with sp.scope("cell", reuse=sp.AUTO_REUSE):  # one set of weights for every step
        w = sp.get_param("w", [D, H])
        u = sp.get_param("u", [H, H])
        b = sp.get_param("b", [H], init=sp.initializers.zeros)
    h = jnp.tanh(x @ w + h @ u + b)
    return h, h


def hand_rnn(p, xs, h):
    for x in xs:
        h = jnp.tanh(x @ p["w"] + h @ p["u"] + p["b"])
    return h


XS = jax.random.normal(jax.random.key(1), (T, B, D))
H0 = jnp.zeros((B, H))

RNNS = {
    "scan": lambda xs: sp.scan(rnn_cell, H0, xs)[0],
    "created_in_scan_reused_after": lambda xs: rnn_cell(sp.scan(rnn_cell, H0, xs[:-1])[0], xs[-1])[0],
    "created_before_reused_in_scan": lambda xs: sp.scan(rnn_cell, rnn_cell(H0, xs[0])[0], xs[1:])[0],
    "remat_cond_fori_loop": lambda xs: sp.fori_loop(
        2, T, lambda t, h: rnn_cell(h, xs[t])[0],
        sp.cond(xs[0, 0, 0] < 100, lambda h: rnn_cell(h, xs[1])[0], lambda h: h,
                sp.remat(lambda h, x: rnn_cell(h, x)[0])(H0, xs[0]))),
    "while_loop": lambda xs: sp.while_loop(
        lambda c: c[0] < T, lambda c: (c[0] + 1, rnn_cell(c[1], xs[c[0]])[0]), (0, H0))[1],
    "switch": lambda xs: sp.scan(
        lambda h, x: (sp.switch(0, [lambda h: rnn_cell(h, x)[0], lambda h: h], h), None), H0, xs)[0],
}


@pytest.mark.parametrize("name", sorted(RNNS))
def test_an_rnn_step_asking_for_its_weights_inside_sp_control_flow_matches_hand_written_jax(name):
    model = sp.transform(RNNS[name])
    params = model.init(KEY, XS)
    assert set(sp.flatten(params)) == {"cell/w", "cell/u", "cell/b"}
    chex.assert_trees_all_equal(jax.jit(model.init)(KEY, XS), params)
    # Two different sets of weights: each call computes with its own (no trace replays another's).
    for scale in (1.0, -0.5):
        p = jax.tree_util.tree_map(lambda v: v * scale, params)
        expected = hand_rnn(p["cell"], XS, H0)
        chex.assert_trees_all_close(model.apply(p, XS), expected, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(jax.jit(model.apply)(p, XS), expected, rtol=1e-5, atol=1e-6)
    if name == "while_loop":
        return  # JAX cannot reverse-differentiate a while_loop
    grads = jax.grad(lambda p: model.apply(p, XS).sum())(params)
    hand_grads = jax.grad(lambda q: hand_rnn(q, XS, H0).sum())(params["cell"])
    chex.assert_trees_all_close(grads["cell"], hand_grads, rtol=1e-5, atol=1e-5)


def _lax_scan(xs):
    return jax.lax.scan(rnn_cell, H0, xs)[0]


def _lax_cond(xs):
    return jax.lax.cond(True, lambda h: rnn_cell(h, xs[0])[0], lambda h: h, H0)


def _lax_while(xs):
    return jax.lax.while_loop(lambda c: c[0] < T, lambda c: (c[0] + 1, rnn_cell(c[1], xs[c[0]])[0]),
                              (0, H0))[1]


def _lax_fori(xs):
    return jax.lax.fori_loop(0, T, lambda t, h: rnn_cell(h, xs[t])[0], H0)


def _checkpoint(xs):
    return jax.checkpoint(lambda h: rnn_cell(h, xs[0])[0])(H0)


def _nested_jit(xs):
    return jax.jit(rnn_cell)(H0, xs[0])[0]


@pytest.mark.parametrize("fn", [_lax_scan, _lax_cond, _lax_while, _lax_fori, _checkpoint, _nested_jit])
@pytest.mark.parametrize("where", ["init", "apply", "jit(apply)"])
def test_get_param_in_a_function_jax_traces_and_caches_is_an_error_naming_the_param_and_the_fix(
        fn, where):
    model = sp.transform(fn)
    params = sp.transform(RNNS["scan"]).init(KEY, XS)
    run = {"init": lambda: model.init(KEY, XS), "apply": lambda: model.apply(params, XS),
           "jit(apply)": lambda: jax.jit(model.apply)(params, XS)}[where]
    with pytest.raises(sp.NestedTraceError) as e:
        run()
    assert isinstance(e.value, RuntimeError)
    text = str(e.value)
    assert "sp.get_param('w'), parameter 'cell/w', was called inside a function that JAX traces" in text
    assert "fix: use sp.scan, sp.cond, sp.while_loop, sp.fori_loop or sp.remat" in text


def test_an_sp_scan_inside_a_jax_lax_scan_body_is_a_nested_trace_error_too():
    def fn(xs):
        return jax.lax.scan(lambda c, x: (sp.scan(rnn_cell, c, x[None])[0], None), H0, xs)[0]

    with pytest.raises(sp.NestedTraceError, match=r"sp.scan was called inside a function that JAX "
                                                  r"traces and caches"):
        sp.transform(fn).init(KEY, XS)


def test_jax_lax_scan_would_have_replayed_the_first_calls_weights():
    # Why the error: the same step function under jax.lax.scan is traced once and cached, so a
    # second apply with other weights would compute with the first apply's. sp.scan retraces.
    def step(c, x):
        return c + x * sp.get_param("w", [2]), None

    model = sp.transform(lambda xs: sp.scan(step, jnp.zeros(2), xs)[0])
    xs = jnp.ones((3, 2))
    assert set(sp.flatten(model.init(KEY, xs))) == {"w"}
    assert set(sp.flatten(model.init(KEY, xs))) == {"w"}  # the second init creates it again
    for w in (1.0, 10.0):
        np.testing.assert_allclose(model.apply({"w": jnp.full(2, w)}, xs), np.full(2, 3 * w))
        np.testing.assert_allclose(jax.jit(model.apply)({"w": jnp.full(2, w)}, xs), np.full(2, 3 * w))


def test_one_step_function_scanned_in_two_scopes_gets_two_sets_of_weights():
    def step(c, x):
        with sp.scope(None, default_name="cell"):
            return c * sp.get_param("w", [], init=sp.initializers.ones) + x, None

    def fn(xs):
        with sp.scope("enc"):
            a = sp.scan(step, 0.0, xs)[0]
        with sp.scope("dec"):
            b = sp.scan(step, 0.0, xs)[0]
        return a + b

    model = sp.transform(fn)
    xs = jnp.arange(4.0)
    assert set(sp.flatten(model.init(KEY, xs))) == {"enc/cell/w", "dec/cell/w"}
    params = {"enc": {"cell": {"w": jnp.array(2.0)}}, "dec": {"cell": {"w": jnp.array(0.0)}}}
    assert float(model.apply(params, xs)) == (((0 * 2 + 0) * 2 + 1) * 2 + 2) * 2 + 3 + 3


def test_a_function_traced_twice_by_jax_starts_each_trace_from_the_same_names():
    # Some JAX versions retrace a scan body when a carry's weak type changes. The second trace then
    # sees the names, counters and name scopes the first one started from, so reuse=False does not
    # find its own parameter. (Driven here by tracing the wrapped function twice by hand.)
    from scoped_params import _frame
    from scoped_params._control_flow import _inside, _Keys

    def step(x):
        with sp.scope(None, default_name="block"):
            return x * sp.get_param("w", [], init=sp.initializers.ones)

    def fn(x):
        frame = _frame.current("test")
        body = _inside(frame, "sp.scan", step, _Keys(frame, per_step=True))
        jax.make_jaxpr(lambda x: body(None, x))(x)
        return body(None, x)

    model = sp.transform(fn)
    params = model.init(KEY, jnp.float32(2))
    assert set(sp.flatten(params)) == {"block/w"}
    assert float(model.apply(params, jnp.float32(2))) == 2.0


def _retraced_while_loop(x):
    # A Python-float carry times a bfloat16 param: JAX promotes the carry and traces cond and body
    # a second time (cond, body, cond, body).
    def cond_fun(v):
        return v[1] < sp.get_param("limit", (), init=sp.initializers.constant(10.))

    def body_fun(v):
        w = sp.get_param("w", (), dtype=jnp.bfloat16, init=sp.initializers.constant(2.))
        return v[0] + 1, v[1] * w

    return sp.while_loop(cond_fun, body_fun, (0, x))


def test_a_param_made_in_while_loop_cond_survives_jax_retracing_the_loop():
    model = sp.transform(_retraced_while_loop)
    single_trace = set(model.init(KEY, jnp.float32(1)))  # no promotion: traced once
    assert single_trace == {"limit", "w"}
    params = model.init(KEY, 1.0)
    assert set(params) == single_trace
    chex.assert_trees_all_equal(jax.jit(model.init)(KEY, 1.0), params)
    for apply in (model.apply, jax.jit(model.apply)):
        steps, out = apply(params, 1.0)
        assert (int(steps), float(out)) == (4, 16.0)


def _while_loop_making_params_in_cond_and_body(x):
    def cond_fun(v):
        with sp.scope(None, default_name="gate"):
            limit = sp.get_param("limit", (), init=sp.initializers.constant(9.))
        with sp.scope("cond"):
            bias = sp.get_param("b", (), init=sp.initializers.zeros)
        return v[1] + bias < limit

    def body_fun(v):
        with sp.scope(None, default_name="gate"):
            w = sp.get_param("w", (), dtype=jnp.bfloat16, init=sp.initializers.constant(2.))
        with sp.scope(None, default_name="body"):
            b = sp.get_param("b", (), dtype=jnp.bfloat16, init=sp.initializers.zeros)
        return v[0] + 1, v[1] * w + b

    return sp.while_loop(cond_fun, body_fun, (0, x))


def test_while_loop_cond_and_body_retraced_by_jax_get_the_names_and_specs_of_one_trace():
    # Both functions make params under default_name scopes that share one counter; JAX traces them
    # twice (the Python-float carry is promoted). Names and counters must be those of one trace,
    # as with a float32 carry: each retrace rolls back what the previous round made.
    model = sp.transform(_while_loop_making_params_in_cond_and_body)
    single_trace = sp.flatten(model.specs(jnp.float32(1)))
    assert set(single_trace) == {"gate/limit", "cond/b", "gate_1/w", "body/b"}
    specs = sp.flatten(model.specs(1.0))
    assert {n: (s.shape, s.dtype) for n, s in specs.items()} == {
        n: (s.shape, s.dtype) for n, s in single_trace.items()}
    params = model.init(KEY, 1.0)
    assert set(sp.flatten(params)) == set(single_trace)
    chex.assert_trees_all_equal(jax.jit(model.init)(KEY, 1.0), params)
    for apply in (model.apply, jax.jit(model.apply)):
        steps, out = apply(params, 1.0)
        assert (int(steps), float(out)) == (4, 16.0)


def test_a_retraced_function_of_a_while_loop_rolls_back_its_previous_trace_and_those_after():
    # Driven by tracing the wrapped functions by hand: the body alone again keeps what cond made
    # before it; cond again starts a new round, whose names (limit_1, not limit_0) are kept.
    from scoped_params import _frame
    from scoped_params._control_flow import _inside, _Keys, _Traces

    def fn(x):
        frame = _frame.current("test")
        traces, keys = _Traces(frame), _Keys(frame, per_step=True)
        one, rounds = sp.initializers.ones, iter(range(2))
        cond_body = _inside(frame, "sp.while_loop", lambda v: v < sp.get_param(
            f"limit_{next(rounds)}", (), init=one), keys, traces)
        loop_body = _inside(frame, "sp.while_loop", lambda v: v * sp.get_param("w", (), init=one),
                            keys, traces)
        for f in (cond_body, loop_body, loop_body, cond_body, loop_body):
            jax.make_jaxpr(lambda x: f(None, x))(x)
        return x

    assert set(sp.transform(fn).init(KEY, jnp.float32(2))) == {"limit_1", "w"}


def test_next_rng_key_inside_sp_scan_gives_each_step_its_own_key_reproducibly():
    def fn(xs):
        return sp.scan(lambda c, x: (c, jax.random.uniform(sp.next_rng_key(), ())), 0.0, xs)[1]

    model = sp.transform(fn)
    xs = jnp.zeros(6)
    draws = model.apply({}, xs, rng=jax.random.key(3))
    assert len(set(np.asarray(draws).tolist())) == 6
    np.testing.assert_array_equal(draws, model.apply({}, xs, rng=jax.random.key(3)))
    np.testing.assert_array_equal(draws, jax.jit(model.apply)({}, xs, rng=jax.random.key(3)))
    assert not np.array_equal(draws, model.apply({}, xs, rng=jax.random.key(4)))
    with pytest.raises(sp.MissingRngError):
        model.apply({}, xs)


def test_next_rng_key_inside_sp_while_loop_and_fori_loop_differs_per_iteration():
    def fn():
        a = sp.fori_loop(0, 4, lambda i, acc: acc.at[i].set(
            jax.random.uniform(sp.next_rng_key(), ())), jnp.zeros(4))
        b = sp.while_loop(lambda c: c[0] < 4, lambda c: (c[0] + 1, c[1].at[c[0]].set(
            jax.random.uniform(sp.next_rng_key(), ()))), (0, jnp.zeros(4)))[1]
        return a, b

    a, b = sp.transform(fn).apply({}, rng=jax.random.key(0))
    assert len(set(np.asarray(a).tolist())) == 4 and len(set(np.asarray(b).tolist())) == 4


def test_set_state_inside_sp_scan_is_a_state_error_saying_to_return_the_value():
    def fn(xs):
        sp.get_state("total", [], init=sp.initializers.zeros)
        return sp.scan(lambda c, x: (sp.set_state("total", c + x), (c + x, None))[1], 0.0, xs)

    with pytest.raises(sp.StateError, match=r"sp.set_state\('total'\) was called inside the "
                                            r"function of sp.scan") as e:
        sp.transform_with_state(fn).init(KEY, jnp.ones(3))
    assert "fix: return the new value from the function and call sp.set_state after sp.scan" in str(e.value)


def test_record_inside_sp_scan_is_an_error_saying_to_return_the_value():
    def fn(xs):
        return sp.scan(lambda c, x: (sp.record("h", c + x) or c + x, None), 0.0, xs)[0]

    model = sp.transform(fn)
    assert float(model.apply({}, jnp.ones(3))) == 3.0  # recording is off: nothing to object to
    with pytest.raises(sp.NestedTraceError, match=r"sp.record\('h'\) was called inside the function "
                                                  r"of sp.scan") as e:
        model.apply_with_intermediates({}, jnp.ones(3))
    assert "fix: return the value from the function" in str(e.value)


@pytest.mark.parametrize("wrap", [
    lambda f, x: jax.lax.scan(lambda c, r: (c + f(r), None), jnp.zeros(3), x)[0],
    lambda f, x: jax.vmap(f)(x),
    lambda f, x: jax.grad(lambda x: jnp.sum(f(x)))(x),
    lambda f, x: jax.checkpoint(f)(x),
], ids=["lax.scan", "vmap", "grad", "checkpoint"])
def test_record_inside_a_jax_transformation_in_the_model_is_an_error_not_a_leaked_tracer(wrap):
    def fn(x):
        return wrap(lambda r: (sp.record("h", r * 2) or 0) + r, x)

    model = sp.transform(fn)
    model.apply({}, jnp.ones((2, 3)))  # recording is off: nothing to object to
    with pytest.raises(sp.NestedTraceError, match=r"sp.record\('h'\) was called inside a function "
                                                  r"that a JAX transformation") as e:
        model.apply_with_intermediates({}, jnp.ones((2, 3)))
    assert "fix: return the value from the function and record it outside" in str(e.value)


@pytest.mark.parametrize("wrap, state_shape", [(lambda f, x: jax.vmap(f)(x), (3,)),
                                               (lambda f, x: jax.grad(lambda x: jnp.sum(f(x)))(x), (2, 3))],
                         ids=["vmap", "grad"])
def test_set_state_inside_vmap_or_grad_in_the_model_is_a_state_error_in_init_and_apply(wrap, state_shape):
    def fn(x):
        def inner(r):
            s = sp.get_state("s", r.shape, init=sp.initializers.zeros)  # reading state there is fine
            sp.set_state("s", s + r)
            return r
        return wrap(inner, x)

    model = sp.transform_with_state(fn)
    x = jnp.ones((2, 3))
    for run in (lambda: model.init(KEY, x),
                lambda: model.apply({}, {"s": jnp.zeros(state_shape)}, x)):
        with pytest.raises(sp.StateError, match=r"sp.set_state\('s'\), state 's', was called inside "
                                                r"a function that a JAX transformation") as e:
            run()
        assert "fix: return the new value from the function and call sp.set_state outside it" in str(e.value)


def test_vmap_and_grad_inside_the_model_still_read_params():
    # They run the function anew on every call (nothing cached): a WGAN-GP gradient penalty.
    def critic(y):
        with sp.scope("critic", reuse=sp.AUTO_REUSE):
            return jnp.sum(jnp.tanh(y @ sp.get_param("w", [4, 1])))

    def fn(x):
        penalty = jnp.sum(jax.grad(critic)(x) ** 2)
        return critic(x) + penalty + jax.vmap(critic)(jnp.stack([x, 2 * x])).sum()

    model = sp.transform(fn)
    x = jnp.ones(4)
    params = model.init(KEY, x)
    w = params["critic"]["w"]

    def hand(y):
        return jnp.sum(jnp.tanh(y @ w))

    expected = hand(x) + jnp.sum(jax.grad(hand)(x) ** 2) + hand(x) + hand(2 * x)
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), expected, rtol=1e-6)


def _straight_through(kind):
    """A layer with a custom gradient that reads its weight inside: ``x * w`` forward, and a
    backward pass that hands ``x``'s cotangent straight through (a straight-through estimator)."""
    if kind == "custom_jvp":
        @jax.custom_jvp
        def layer(x):
            return x * sp.get_param("w", [2])
        layer.defjvp(lambda primals, tangents: (layer(primals[0]), tangents[0]))
    else:
        @jax.custom_vjp
        def layer(x):
            return x * sp.get_param("w", [2])
        layer.defvjp(lambda x: (layer(x), None), lambda _, ct: (ct,))
    return layer


@pytest.mark.parametrize("kind", ["custom_jvp", "custom_vjp"])
def test_a_custom_gradient_function_reads_params_under_jit_vmap_and_grad_of_its_input(kind):
    layer = _straight_through(kind)

    def fn(x):
        with sp.scope("a"):
            y = layer(x)
        with sp.scope("b"):  # the same function in another scope: its own weights
            return jnp.sum(y + 2 * layer(x))

    model = sp.transform(fn)
    x = jnp.array([1.0, 3.0])
    assert set(sp.flatten(model.init(KEY, x))) == {"a/w", "b/w"}
    for wa, wb in ((1.0, 10.0), (-2.0, 0.5)):
        params = {"a": {"w": jnp.full(2, wa)}, "b": {"w": jnp.full(2, wb)}}
        expected = (wa + 2 * wb) * 4.0
        np.testing.assert_allclose(model.apply(params, x), expected)
        np.testing.assert_allclose(jax.jit(model.apply)(params, x), expected)
        np.testing.assert_allclose(jax.vmap(model.apply, (None, 0))(params, jnp.stack([x, x])),
                                   [expected] * 2)
        # d/dx through the custom rule: x's cotangent straight through, 1 + 2 per element.
        np.testing.assert_allclose(jax.grad(model.apply, 1)(params, x), [3.0, 3.0])
        np.testing.assert_allclose(jax.jit(jax.grad(model.apply, 1))(params, x), [3.0, 3.0])


@pytest.mark.parametrize("kind", ["custom_jvp", "custom_vjp"])
@pytest.mark.parametrize("how", ["grad", "jit(grad)", "vmap(grad)"])
def test_a_param_read_inside_a_custom_gradient_function_that_grad_differentiates_names_the_fix(
        kind, how):
    # JAX runs the function below grad's trace: the parameter's tracer would leak (JAX's message
    # names neither the parameter nor the cause).
    model = sp.transform(lambda x: jnp.sum(_straight_through(kind)(x)))
    x = jnp.ones(2)
    params = model.init(KEY, x)
    grad = jax.grad(model.apply)
    call = {"grad": lambda: grad(params, x), "jit(grad)": lambda: jax.jit(grad)(params, x),
            "vmap(grad)": lambda: jax.vmap(grad, (None, 0))(params, jnp.stack([x, x]))}[how]
    with pytest.raises(sp.NestedTraceError,
                       match=r"sp\.get_param\('w'\), parameter 'w', was called inside the function of "
                             r"a jax\.custom_jvp or jax\.custom_vjp that jax\.grad") as e:
        call()
    assert "fix: read it before calling the function and pass it in as an argument" in str(e.value)

    # The fix: the weight as an argument, with the rule's cotangent for it.
    @jax.custom_vjp
    def layer(x, w):
        return x * w
    layer.defvjp(lambda x, w: (x * w, (x, w)), lambda res, ct: (ct * res[1], ct * res[0]))
    fixed = sp.transform(lambda x: jnp.sum(layer(x, sp.get_param("w", [2]))))
    np.testing.assert_allclose(jax.grad(fixed.apply)(params, x)["w"], x)


def test_get_state_read_inside_a_custom_gradient_function_that_grad_differentiates_is_an_error():
    @jax.custom_vjp
    def scaled(x):
        return x * sp.get_state("s", [2], init=sp.initializers.ones)
    scaled.defvjp(lambda x: (scaled(x), None), lambda _, ct: (ct,))

    model = sp.transform_with_state(lambda x: jnp.sum(scaled(x)))
    x = jnp.ones(2)
    params, state = model.init(KEY, x)
    np.testing.assert_allclose(jax.grad(lambda x: model.apply(params, state, x)[0])(x), [1.0, 1.0])
    with pytest.raises(sp.NestedTraceError, match=r"sp\.get_state\('s'\), state 's'"):
        jax.grad(lambda s: model.apply(params, s, x)[0])(state)


def test_sp_scan_inside_a_layer_stack_block_and_a_layer_stack_inside_sp_scan():
    def block(h):
        return sp.scan(lambda c, x: (c + x * sp.get_param("w", [2], init=sp.initializers.ones),
                                     None), h, jnp.ones((3, 2)))[0]

    model = sp.transform(lambda x: sp.layer_stack(4)(block)(x))
    params = model.init(KEY, jnp.zeros(2))
    assert sp.flatten(params)["layer_stack/w"].shape == (4, 2)
    np.testing.assert_allclose(model.apply(params, jnp.zeros(2)), np.full(2, 12.0))

    outer = sp.transform(lambda xs: sp.scan(
        lambda c, x: (sp.layer_stack(2)(lambda h: h * sp.get_param("v", [2]))(c + x), None),
        jnp.ones(2), xs)[0])
    params = outer.init(KEY, jnp.ones((3, 2)))
    assert sp.flatten(params)["layer_stack/v"].shape == (2, 2)
    v = {"layer_stack": {"v": jnp.full((2, 2), 2.0)}}
    np.testing.assert_allclose(outer.apply(v, jnp.zeros((3, 2))), np.full(2, 64.0))


def test_the_public_find_top_trace_gives_the_same_answers_as_jaxs_trace_state(monkeypatch):
    # The current trace is read from JAX's own state when that agrees with jax.extend's
    # find_top_trace at import; otherwise find_top_trace serves. Both must behave the same.
    from scoped_params import _control_flow, _layer_stack, _params, _scope

    found = _scope._FoundTrace()
    assert found.value is _scope._find_top_trace(())
    for module in (_scope, _params, _layer_stack, _control_flow):
        monkeypatch.setattr(module, "_TRACE", found)
    test_an_rnn_step_asking_for_its_weights_inside_sp_control_flow_matches_hand_written_jax("scan")
    test_get_param_in_a_function_jax_traces_and_caches_is_an_error_naming_the_param_and_the_fix(
        _lax_scan, "jit(apply)")
    test_vmap_and_grad_inside_the_model_still_read_params()


def test_get_param_inside_jax_shard_map_reads_this_calls_params():
    # shard_map traces its function anew on every call (no cache to replay), so it needs no wrapper.
    from jax.sharding import NamedSharding, PartitionSpec as P

    if not hasattr(jax, "shard_map"):  # jax.experimental.shard_map before jax 0.6
        pytest.skip("jax.shard_map is newer than this jax")
    mesh = jax.make_mesh((2,), ("d",))

    def body(x):
        return x * sp.get_param("w", [2], init=sp.initializers.ones)

    def fn(x):
        with sp.scope("a"):
            y = jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P("d"))(x)
        with sp.scope("b"):  # the same function in another scope: its own weights
            return y + 10 * jax.shard_map(body, mesh=mesh, in_specs=P("d"), out_specs=P("d"))(x)

    model = sp.transform(fn)
    x = jax.device_put(jnp.ones((4, 2)), NamedSharding(mesh, P("d")))
    assert set(sp.flatten(model.init(KEY, x))) == {"a/w", "b/w"}
    for wa, wb in ((2.0, 3.0), (-1.0, 0.5)):
        params = {"a": {"w": jnp.full(2, wa)}, "b": {"w": jnp.full(2, wb)}}
        for out in (model.apply(params, x), jax.jit(model.apply)(params, x)):
            np.testing.assert_allclose(out, np.full((4, 2), wa + 10 * wb))


def test_get_param_inside_jax_pmap_in_the_model_is_a_nested_trace_error_not_a_replay():
    # jax.pmap is a jit of a shard_map, cached per function: a second scope (or the next init, or
    # another params) would replay the first trace's values. Its trace is under no trace of the
    # call, as a custom_vjp's function is, but JAX says what it is traced for.
    if jax.device_count() < 2:
        pytest.skip("needs several devices")

    def body(x):
        return x * sp.get_param("w", [2], init=sp.initializers.ones)

    def fn(x):
        with sp.scope("a"):
            y = jax.pmap(body)(x)
        with sp.scope("b"):
            return y + 10 * jax.pmap(body)(x)

    model = sp.transform(fn)
    x = jnp.ones((2, 2))
    params = {"a": {"w": jnp.full(2, 2.0)}, "b": {"w": jnp.full(2, 3.0)}}
    for run in (lambda: model.init(KEY, x), lambda: jax.jit(model.apply)(params, x),
                lambda: model.apply(params, x)):
        with pytest.raises(sp.NestedTraceError, match=r"(?s)sp.get_param\('w'\), parameter 'a/w',.*"
                                                      r"jax.pmap.*fix: .*jax.shard_map"):
            run()
    # pmap around apply is fine
    plain = sp.transform(lambda x: body(x))
    out = jax.pmap(plain.apply, in_axes=(None, 0))({"w": jnp.full(2, 3.0)}, jnp.ones((2, 1, 2)))
    np.testing.assert_allclose(out, np.full((2, 1, 2), 3.0))


def test_a_custom_gradient_function_of_an_ensemble_reads_its_params_under_grad_of_the_input():
    # grad(vmap(apply)) w.r.t. the input: the params are batched by the vmap (whose trace lies under
    # grad's), but nothing differentiates them, so JAX lifts them into the function as plain JAX does.
    def tanh_layer(x, w):
        @jax.custom_vjp
        def g(x):
            return jnp.tanh(x @ w())
        g.defvjp(lambda x: (g(x), None), lambda _, ct: (ct * 0.5,))
        return g(x)

    model = sp.transform(lambda x: tanh_layer(x, lambda: sp.get_param("w", (3, 3))))
    x = jax.random.normal(jax.random.key(1), (2, 3))
    ensemble = jax.vmap(model.init, (0, None))(jax.random.split(KEY, 3), x)
    expected = jax.grad(lambda x: jax.vmap(lambda w, x: tanh_layer(x, lambda: w), (0, None))(
        ensemble["w"], x).sum())(x)
    np.testing.assert_allclose(expected, np.full((2, 3), 1.5))
    for grad in (jax.grad(lambda x: jax.vmap(model.apply, (0, None))(ensemble, x).sum()),
                 jax.jit(jax.grad(lambda x: jax.vmap(model.apply, (0, None))(ensemble, x).sum()))):
        np.testing.assert_allclose(grad(x), expected, rtol=1e-6)
    # Differentiating the ensemble's params themselves is still the leak, named.
    with pytest.raises(sp.NestedTraceError, match=r"sp\.get_param\('w'\), parameter 'w', was called "
                                                  r"inside the function of a jax\.custom_jvp"):
        jax.grad(lambda p: jax.vmap(model.apply, (0, None))(p, x).sum())(ensemble)


def _after(fn):
    """A model running ``fn`` on ``x`` (if given), then drawing one key: (fn's result, the draw)."""
    def model(x):
        out = x if fn is None else fn(x)
        return out, jax.random.uniform(sp.next_rng_key(), ())
    return sp.transform(model)


@pytest.mark.parametrize("rng", [jax.random.key(1), 1])
def test_remat_is_transparent_to_random_keys_the_block_and_every_later_draw_get_the_same(rng):
    # As hk.remat: rematerialising a block changes what is computed when, never the numbers.
    def block(h):
        h = sp.layers.dropout(sp.layers.dense(h, 4), 0.5, training=True)
        return sp.layers.dropout(h, 0.5, training=True)

    x = jnp.ones((3, 4))
    plain, rematted = _after(block), _after(sp.remat(block))
    params = plain.init(KEY, x)
    expected = plain.apply(params, x, rng=rng)
    chex.assert_trees_all_equal(rematted.apply(params, x, rng=rng), expected)
    chex.assert_trees_all_equal(jax.jit(rematted.apply)(params, x, rng=rng), expected)
    np.testing.assert_allclose(  # its gradient too (the remat's forward pass runs again)
        jax.grad(lambda p: rematted.apply(p, x, rng=rng)[0].sum())(params)["dense"]["kernel"],
        jax.grad(lambda p: plain.apply(p, x, rng=rng)[0].sum())(params)["dense"]["kernel"], rtol=1e-6)


@pytest.mark.parametrize("wrapper", ["scan", "cond", "switch", "while_loop", "fori_loop", "remat"])
def test_control_flow_whose_functions_draw_no_key_leaves_every_later_key_unchanged(wrapper):
    # Adding an RNN without dropout (or any loop, branch, remat that draws nothing) to a model must
    # not shift the dropout masks after it.
    dense = functools.partial(sp.layers.dense, units=3, name="d", reuse=sp.AUTO_REUSE)
    run = {
        "scan": lambda x: sp.scan(lambda h, _: (dense(h), None), x, None, length=2)[0],
        "cond": lambda x: sp.cond(x.sum() > 0, dense, lambda h: h, x),
        "switch": lambda x: sp.switch(1, [dense, lambda h: -h], x),
        "while_loop": lambda x: sp.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, dense(c[1])),
                                              (0, x))[1],
        "fori_loop": lambda x: sp.fori_loop(0, 2, lambda i, h: dense(h), x),
        "remat": sp.remat(dense),
    }[wrapper]
    x, rng = jnp.ones((2, 3)), jax.random.key(5)
    with_it = _after(run)
    params = with_it.init(KEY, x)
    expected = _after(None).apply({}, x, rng=rng)[1]
    assert with_it.apply(params, x, rng=rng)[1] == expected
    assert jax.jit(with_it.apply)(params, x, rng=rng)[1] == expected


def test_cond_and_switch_branches_draw_the_keys_they_would_draw_outside_and_later_keys_follow_the_most():
    # Each branch continues the call's key stream (the taken one draws what it would draw run
    # alone); after the branch the stream has advanced by the most keys any branch draws.
    def draws(n):
        return lambda x: x + sum(jax.random.uniform(sp.next_rng_key(), ()) for _ in range(n))

    def three_draws(x):
        return draws(3)(x)

    x, rng = jnp.float32(0), jax.random.key(7)
    alone = [_after(draws(n)).apply({}, x, rng=rng) for n in (1, 2)]
    later = _after(three_draws).apply({}, x, rng=rng)[1]  # the key after three draws
    for n, (value, _) in zip((1, 2), alone):
        for fn in (lambda x: sp.cond(n == 1, draws(1), draws(2), x),
                   lambda x: sp.switch(n - 1, [draws(1), draws(2), draws(0)], x)):
            for apply in (_after(fn).apply, jax.jit(_after(fn).apply)):
                out, after = apply({}, x, rng=rng)
                assert out == value
                assert after == _after(draws(2)).apply({}, x, rng=rng)[1] != later


def test_a_loop_whose_body_draws_takes_one_key_from_the_stream_and_folds_in_each_step():
    def fn(xs):
        ys = sp.scan(lambda c, x: (c, jax.random.uniform(sp.next_rng_key(), ())), 0.0, xs)[1]
        return ys, jax.random.uniform(sp.next_rng_key(), ())

    rng = jax.random.key(3)
    ys, after = sp.transform(fn).apply({}, jnp.zeros(4), rng=rng)
    base = jax.random.fold_in(rng, 0)
    np.testing.assert_array_equal(
        ys, [jax.random.uniform(jax.random.fold_in(jax.random.fold_in(base, i), 0), ())
             for i in range(4)])
    assert after == jax.random.uniform(jax.random.fold_in(rng, 1), ())


@pytest.mark.parametrize("how", ["init", "apply", "apply(rng=)"])
def test_sp_scan_over_a_leaf_without_a_leading_axis_is_a_value_error_naming_the_leaf(how):
    # jax.lax.scan: "scan got value with no leading axis to scan over"; a list of floats is a pytree
    # of 0-d leaves.
    model = sp.transform(lambda: sp.scan(lambda c, x: (c + x, c), 0.0, [1.0, 2.0]))
    call = {"init": lambda: model.init(KEY), "apply": lambda: model.apply({}),
            "apply(rng=)": lambda: model.apply({}, rng=0)}[how]
    with pytest.raises(ValueError, match=r"sp\.scan: xs\[0\] has no leading axis to scan over: it "
                                         r"is float32\[\] \(shape \(\)\)") as e:
        call()
    assert "fix: give every leaf of xs the steps as its first axis, e.g. jnp.asarray" in str(e.value)


def test_sp_scan_over_leaves_of_different_lengths_names_them_not_its_own_step_counter():
    def run(xs, length=None):
        fn = lambda: sp.scan(lambda c, x: (c, None), 0.0, xs, length=length)  # noqa: E731
        sp.transform(fn).apply({}, rng=jax.random.key(0))

    with pytest.raises(ValueError, match=r"sp\.scan: every leaf of xs has the steps as its first "
                                         r"axis, but xs\['a'\] has 3 \(shape \(3, 2\)\) and "
                                         r"xs\['b'\] has 2 \(shape \(2,\)\)") as e:
        run({"a": jnp.ones((3, 2)), "b": jnp.ones(2)})
    assert "fix: slice them to one number of steps" in str(e.value)
    with pytest.raises(ValueError, match=r"sp\.scan: length=4, but xs\[0\] has 3 steps \(shape "
                                         r"\(3,\)\)") as e:
        run([jnp.ones(3)], length=4)
    assert "uint32" not in str(e.value)


def test_a_function_traced_again_draws_the_keys_of_its_first_trace():
    # A retrace (JAX traces a function again when a carry's weak type changes) starts from the
    # call's key count, not where the previous trace left it. (Driven by hand.)
    from scoped_params import _frame
    from scoped_params._control_flow import _inside, _Keys

    def fn():
        frame = _frame.current("test")
        keys = _Keys(frame, per_step=False)
        body = _inside(frame, "sp.remat", lambda: jax.random.uniform(sp.next_rng_key(), ()), keys)
        first, again = body(None), body(None)
        keys.finish(frame)
        return first, again, jax.random.uniform(sp.next_rng_key(), ())

    rng = jax.random.key(0)
    first, again, after = sp.transform(fn).apply({}, rng=rng)
    assert first == again == jax.random.uniform(jax.random.fold_in(rng, 0), ())
    assert after == jax.random.uniform(jax.random.fold_in(rng, 1), ())
