"""sp.layer_stack: stacked params under one scope, scan in apply, same numbers as the unrolled model."""

import functools
import re
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

WIDTH = 8


def residual_block(h):
    h = h + sp.layers.dense(h, WIDTH, activation=jnp.tanh)
    return sp.layers.dense(h, WIDTH, name="out", use_bias=False)


def stacked_model(num_layers):
    def fn(x):
        x = sp.layers.dense(x, WIDTH, name="embed")
        x = sp.layer_stack(num_layers, name="blocks")(residual_block)(x)
        return sp.layers.dense(x, 2, name="head")
    return sp.transform(fn)


def unrolled_model(num_layers):
    def fn(x):
        x = sp.layers.dense(x, WIDTH, name="embed")
        for i in range(num_layers):
            with sp.scope(f"layer_{i}"):
                x = residual_block(x)
        return sp.layers.dense(x, 2, name="head")
    return sp.transform(fn)


def unrolled_params_from(stacked, num_layers):
    flat = sp.flatten(stacked)
    out = {k: v for k, v in flat.items() if not k.startswith("blocks/")}
    for k, v in flat.items():
        if k.startswith("blocks/"):
            for i in range(num_layers):
                out[f"layer_{i}/" + k[len("blocks/"):]] = v[i]
    return sp.unflatten(out)


X = np.random.RandomState(0).randn(3, 5).astype(np.float32)


def test_stacked_params_have_a_leading_layer_axis_under_one_scope():
    params = stacked_model(4).init(jax.random.key(0), X)
    shapes = {k: v.shape for k, v in sp.flatten(params).items()}
    assert shapes == {
        "embed/kernel": (5, WIDTH), "embed/bias": (WIDTH,),
        "blocks/dense/kernel": (4, WIDTH, WIDTH), "blocks/dense/bias": (4, WIDTH),
        "blocks/out/kernel": (4, WIDTH, WIDTH),
        "head/kernel": (WIDTH, 2), "head/bias": (2,),
    }
    specs = sp.flatten(stacked_model(4).specs(jax.ShapeDtypeStruct(X.shape, X.dtype)))
    assert specs["blocks/dense/kernel"].shape == (4, WIDTH, WIDTH)


def test_each_layer_slice_gets_its_own_initial_value_deterministic_from_key_and_name():
    a = stacked_model(4).init(jax.random.key(0), X)
    b = stacked_model(4).init(jax.random.key(0), X)
    chex.assert_trees_all_equal(a, b)
    kernel = np.asarray(a["blocks"]["dense"]["kernel"])
    assert len({kernel[i].tobytes() for i in range(4)}) == 4
    # Glorot fans are those of one layer's (8, 8) kernel, not of the stacked array.
    limit = np.sqrt(6.0 / (WIDTH + WIDTH))
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
    c = stacked_model(4).init(jax.random.key(1), X)
    assert not np.allclose(c["blocks"]["dense"]["kernel"], kernel)


def test_init_traces_abstractly_and_never_runs_the_block():
    calls = []

    def fn(x):
        def block(h):
            calls.append(type(h).__name__)
            return sp.layers.dense(h, 5)
        return sp.layer_stack(3)(block)(x)

    params = sp.transform(fn).init(jax.random.key(0), jax.ShapeDtypeStruct((2, 5), jnp.float32))
    assert params["layer_stack"]["dense"]["kernel"].shape == (3, 5, 5)
    assert len(calls) == 1 and "Tracer" in calls[0]


def test_apply_equals_the_unrolled_model_with_the_same_weights():
    num_layers = 5
    stacked, unrolled = stacked_model(num_layers), unrolled_model(num_layers)
    params = stacked.init(jax.random.key(0), X)
    uparams = unrolled_params_from(params, num_layers)
    assert set(sp.flatten(uparams)) == set(sp.flatten(unrolled.init(jax.random.key(0), X)))
    expected = jax.jit(unrolled.apply)(uparams, X)
    np.testing.assert_allclose(stacked.apply(params, X), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(stacked.apply)(params, X), expected, rtol=1e-5, atol=1e-6)


def test_grad_through_the_stack_matches_the_unrolled_grad():
    num_layers = 3
    stacked, unrolled = stacked_model(num_layers), unrolled_model(num_layers)
    params = stacked.init(jax.random.key(0), X)

    def loss(model):
        return lambda p: jnp.sum(model.apply(p, X) ** 2)

    g = jax.jit(jax.grad(loss(stacked)))(params)
    ug = jax.jit(jax.grad(loss(unrolled)))(unrolled_params_from(params, num_layers))
    chex.assert_trees_all_close(unrolled_params_from(g, num_layers), ug, rtol=1e-5, atol=1e-6)


def test_reuse_inside_the_block_follows_tf_rules():
    def sharing(h):
        with sp.scope("shared", reuse=sp.AUTO_REUSE):
            h = sp.layers.dense(h, WIDTH, name="fc")
        with sp.scope("shared", reuse=sp.AUTO_REUSE):
            return sp.layers.dense(h, WIDTH, name="fc")

    model = sp.transform(lambda x: sp.layer_stack(2)(sharing)(x))
    x = jnp.ones((1, WIDTH))
    params = model.init(jax.random.key(0), x)
    assert set(sp.flatten(params)) == {"layer_stack/shared/fc/kernel", "layer_stack/shared/fc/bias"}
    model.apply(params, x)

    def twice(h):
        return sp.layers.dense(sp.layers.dense(h, WIDTH, name="fc"), WIDTH, name="fc")

    bad = sp.transform(lambda x: sp.layer_stack(2)(twice)(x))
    with pytest.raises(sp.ParamExistsError, match="layer_stack/fc/kernel already exists"):
        bad.init(jax.random.key(0), x)
    stacked_fc = {"fc": {"kernel": jnp.zeros((2, WIDTH, WIDTH)), "bias": jnp.zeros((2, WIDTH))}}
    with pytest.raises(sp.ParamExistsError, match="layer_stack/fc/kernel already exists"):
        bad.apply({"layer_stack": stacked_fc}, x)


def test_parameters_outside_the_stack_scope_are_shared_not_stacked():
    def fn(x):
        with sp.scope("emb") as emb:
            sp.get_param("w", (WIDTH, WIDTH))

        def block(h):
            with sp.scope(emb, reuse=True):
                w = sp.get_param("w", (WIDTH, WIDTH))
            return jnp.tanh(h @ w) + sp.get_param("b", (WIDTH,), sp.initializers.zeros)

        return sp.layer_stack(3)(block)(x)

    model = sp.transform(fn)
    x = jnp.ones((2, WIDTH))
    params = model.init(jax.random.key(0), x)
    assert params["emb"]["w"].shape == (WIDTH, WIDTH)
    assert params["layer_stack"]["b"].shape == (3, WIDTH)
    h = x
    for i in range(3):
        h = jnp.tanh(h @ params["emb"]["w"]) + params["layer_stack"]["b"][i]
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), h, rtol=1e-5)


def test_batch_norm_state_is_stacked_and_updated_per_layer():
    def fn(x):
        def block(h):
            return sp.layers.batch_normalization(sp.layers.dense(h, WIDTH), training=True)
        return sp.layer_stack(2)(block)(x)

    model = sp.transform_with_state(fn)
    x = jnp.asarray(np.random.RandomState(1).randn(16, WIDTH).astype(np.float32)) * 3
    params, state = model.init(jax.random.key(0), x)
    assert state["layer_stack"]["batch_normalization"]["moving_mean"].shape == (2, WIDTH)
    out, new_state = jax.jit(model.apply)(params, state, x)
    h0 = x @ params["layer_stack"]["dense"]["kernel"][0]
    expected = 0.01 * h0.mean(0)
    np.testing.assert_allclose(new_state["layer_stack"]["batch_normalization"]["moving_mean"][0],
                               expected, rtol=1e-4, atol=1e-6)
    # Layer 1 sees layer 0's normalized output: its own, different statistics.
    variance = new_state["layer_stack"]["batch_normalization"]["moving_variance"]
    assert not np.allclose(variance[1], 1.0) and not np.allclose(variance[0], variance[1])


def test_per_layer_inputs_rng_and_nested_stacks():
    def fn(x, per_layer):
        def block(h, scale):
            noise = jax.random.normal(sp.next_rng_key(), h.shape)
            h = sp.layers.dense(h, WIDTH) * scale + 0 * noise
            return h, noise[0, 0]

        h, noises = sp.layer_stack(3, with_per_layer_inputs=True)(block)(x, per_layer)

        def inner(h):
            return h + sp.get_param("b", (WIDTH,))

        def outer(h):
            return sp.layer_stack(2, name="inner")(inner)(h)

        return sp.layer_stack(4, name="outer")(outer)(h), noises

    model = sp.transform(fn)
    x, scales = jnp.ones((2, WIDTH)), jnp.arange(3.0)
    params = model.init(jax.random.key(0), x, scales)
    assert params["outer"]["inner"]["b"].shape == (4, 2, WIDTH)
    assert params["layer_stack"]["dense"]["kernel"].shape == (3, WIDTH, WIDTH)
    out, noises = jax.jit(model.apply)(params, x, scales, rng=jax.random.key(2))
    assert noises.shape == (3,) and len(set(np.asarray(noises).tolist())) == 3  # a key per layer
    h = x
    for i in range(3):
        h = (h @ params["layer_stack"]["dense"]["kernel"][i]
             + params["layer_stack"]["dense"]["bias"][i]) * scales[i]
    h = h + params["outer"]["inner"]["b"].sum((0, 1))
    np.testing.assert_allclose(out, h, rtol=1e-5, atol=1e-5)


def test_recorded_intermediates_come_back_stacked_per_layer():
    def fn(x):
        def block(h):
            h = sp.layers.dense(h, WIDTH)
            sp.record("h", h)
            return h
        return sp.layer_stack(3)(block)(x)

    model = sp.transform(fn)
    x = jnp.ones((2, WIDTH))
    params = model.init(jax.random.key(0), x)
    out, records = model.apply_with_intermediates(params, x)
    assert records["layer_stack/h"].shape == (3, 2, WIDTH)
    np.testing.assert_allclose(records["layer_stack/h"][-1], out, rtol=1e-6)


def test_a_stack_inside_an_sp_scan_keeps_the_scans_rules_for_record_and_set_state():
    # What the block records or sets would have to leave the sp.scan's function: refused in apply as
    # in init, not handed out as the scan body's tracers.
    def step(c, x):
        def block(h):
            sp.record("h", h)
            return h + sp.get_param("b", (3,))
        return sp.layer_stack(2, name="stack")(block)(c + x), None

    model = sp.transform(lambda xs: sp.scan(step, jnp.zeros(3), xs)[0])
    xs = jnp.ones((4, 3))
    params = model.init(jax.random.key(0), xs)
    assert params["stack"]["b"].shape == (2, 3)
    with pytest.raises(sp.NestedTraceError, match=r"sp.record\('h'\) was called inside the "
                                                  r"function of sp.scan"):
        model.apply_with_intermediates(params, xs)

    def counting_step(c, x):
        def block(h):
            sp.set_state("count", sp.get_state("count", (), init=sp.initializers.zeros) + 1.0)
            return h
        return sp.layer_stack(2, name="stack")(block)(c + x), None

    counting = sp.transform_with_state(lambda xs: sp.scan(counting_step, jnp.zeros(3), xs)[0])
    for run in (lambda: counting.init(jax.random.key(0), xs),
                lambda: counting.apply({}, {"stack": {"count": jnp.zeros(2)}}, xs)):
        with pytest.raises(sp.StateError, match=r"sp.set_state\('count'\) was called inside the "
                                                r"function of sp.scan"):
            run()


def test_a_stack_inside_a_jax_lax_scan_body_is_a_nested_trace_error_not_a_replayed_trace():
    # jax.lax.scan caches its body's trace by function: a second apply would compute with the first
    # call's parameters, and a later init would find none.
    @sp.layer_stack(2, name="stack")
    def block(h):
        return h + sp.get_param("b", (3,))

    def step(c, x):
        return block(c + x), None

    model = sp.transform(lambda xs: jax.lax.scan(step, jnp.zeros(3), xs)[0])
    xs = jnp.ones((4, 3))
    for run in (lambda: model.init(jax.random.key(0), xs),
                lambda: model.apply({"stack": {"b": jnp.zeros((2, 3))}}, xs)):
        with pytest.raises(sp.NestedTraceError, match=r"sp.layer_stack was called inside a function "
                                                      r"that JAX traces and caches"):
            run()


def test_state_outside_the_stack_set_from_its_block_is_a_state_error_not_a_leaked_tracer():
    def fn(x):
        with sp.scope("counter") as counter:
            sp.get_state("n", (), init=sp.initializers.zeros)

        def block(h):
            with sp.scope(counter, reuse=True):  # shared by every layer, unstacked
                n = sp.get_state("n")
                sp.set_state("n", n + 1.0)
            return h + n
        return sp.layer_stack(3, name="stack")(block)(x)

    model = sp.transform_with_state(fn)
    x = jnp.zeros((2,))
    for run in (lambda: model.init(jax.random.key(0), x),
                lambda: model.apply({}, {"counter": {"n": jnp.zeros(())}}, x)):
        with pytest.raises(sp.StateError, match=r"state 'counter/n' lies outside the "
                                                r"sp.layer_stack scope 'stack'") as e:
            run()
        assert "fix: declare the state under the stack's scope" in str(e.value)


def test_block_must_return_its_carry_structure():
    model = sp.transform(lambda x: sp.layer_stack(2)(lambda h: sp.layers.dense(h, 3))(x))
    with pytest.raises(TypeError, match="same structure, shapes and dtypes"):
        model.init(jax.random.key(0), jnp.ones((1, 4)))


def test_regularizers_of_stacked_params_sum_over_layers():
    def fn(x):
        def block(h):
            return sp.layers.dense(h, WIDTH, kernel_regularizer=sp.l2_regularizer(1.0))
        sp.layer_stack(3)(block)(x)
        return sp.regularization_loss()

    model = sp.transform(fn)
    x = jnp.ones((1, WIDTH))
    params = model.init(jax.random.key(0), x)
    k = params["layer_stack"]["dense"]["kernel"]
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), 0.5 * jnp.sum(k ** 2), rtol=1e-5)


def _compile_seconds(model, x):
    params = model.init(jax.random.key(0), x)
    start = time.perf_counter()
    jax.jit(model.apply).lower(params, x).compile()  # trace + lower + compile: a first jit call
    return time.perf_counter() - start


def test_compile_time_stays_flat_with_depth_printed():
    """Reports compile times of depth 8 vs 64 (no assertion on timings: the machine is shared)."""
    width = 32

    def block(h):
        for _ in range(2):
            h = h + sp.layers.dense(h, width, activation=jnp.tanh)
        return h

    def stacked(n):
        return sp.transform(lambda x: sp.layer_stack(n, name="blocks")(block)(x))

    def unrolled(n):
        def fn(x):
            for i in range(n):
                with sp.scope(f"layer_{i}"):
                    x = block(x)
            return x
        return sp.transform(fn)

    x = np.ones((4, width), np.float32)
    _compile_seconds(stacked(2), x)  # warm up JAX's and XLA's one-time costs
    times = {(kind, n): _compile_seconds(make(n), x)
             for kind, make in (("layer_stack", stacked), ("unrolled", unrolled)) for n in (8, 64)}
    for kind in ("layer_stack", "unrolled"):
        ratio = times[(kind, 64)] / times[(kind, 8)]
        print(f"\n{kind}: compile depth 8 {times[(kind, 8)] * 1e3:.0f} ms, depth 64 "
              f"{times[(kind, 64)] * 1e3:.0f} ms, ratio {ratio:.2f}")
    assert all(t > 0 for t in times.values())


def test_a_stack_called_again_under_reuse_shares_its_stacked_params():
    def fn(x, third_call):
        stack = sp.layer_stack(3, name="blocks")(lambda h: sp.layers.dense(h, WIDTH))
        a = stack(x)
        with sp.scope(sp.get_scope(), reuse=True):
            b = stack(x)
        if third_call:
            stack(x)  # reuse=False again: TF's "already exists"
        return a, b

    model = sp.transform(fn)
    x = jnp.ones((2, WIDTH))
    params = model.init(jax.random.key(0), x, False)
    assert params["blocks"]["dense"]["kernel"].shape == (3, WIDTH, WIDTH)
    a, b = jax.jit(model.apply, static_argnums=2)(params, x, False)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(sp.ParamExistsError, match="blocks/dense/kernel already exists, disallowed"):
        model.init(jax.random.key(0), x, True)


def test_a_layer_regularizer_adds_one_term_per_layer_as_unrolled_layers_do():
    # Each unrolled layer's parameter adds its own term; a mean is not a sum, so the stacked
    # parameter's term must be the sum of the layers' terms, not the term of the whole stack.
    def reg(w):
        return jnp.mean(w) + 1.0

    def layer(x):
        with sp.scope("r", regularizer=reg):
            a = sp.get_param("w", [2], init=sp.initializers.ones)
        b = sp.get_param("u", [2], init=sp.initializers.ones, regularizer=sp.no_regularizer)
        return x + a * b

    def stacked(x):
        sp.layer_stack(3)(layer)(x)
        return sp.regularization_loss()

    def unrolled(x):
        for i in range(3):
            with sp.scope(f"layer_{i}"):
                x = layer(x)
        return sp.regularization_loss()

    x = jnp.ones(2)
    losses, grads = [], []
    for fn in (stacked, unrolled):
        model = sp.transform(fn)
        params = model.init(jax.random.key(0), x)
        losses.append((model.apply(params, x), jax.jit(model.apply)(params, x)))
        grads.append(sum(float(g.sum()) for g in jax.tree.leaves(jax.grad(model.apply)(params, x))))
    assert losses[0] == losses[1] == (6.0, 6.0)
    assert grads[0] == grads[1] == 3.0  # d mean / dw = 0.5 per entry, 2 entries, 3 layers


def test_params_of_another_depth_or_unstacked_are_a_shape_error_naming_the_parameter():
    model = stacked_model(3)
    params = sp.flatten(model.init(jax.random.key(0), X))
    kernel = params["blocks/dense/kernel"]
    for bad, found in ((kernel[:2], "(2, 8, 8)"), (kernel[0], "(8, 8)")):
        wrong = sp.unflatten({**params, "blocks/dense/kernel": bad})
        for apply in (model.apply, jax.jit(model.apply)):
            with pytest.raises(sp.ShapeMismatchError,
                               match=rf"'blocks/dense/kernel' has shape {re.escape(found)}") as e:
                apply(wrong, X)
            message = str(e.value)
            assert "leading axis of size 3 (num_layers)" in message
            assert "fix:" in message and "disagrees with leading axis" not in message
            assert isinstance(e.value, ValueError)


def test_an_unused_entry_under_the_stacks_scope_is_ignored_as_extra_params_are_elsewhere():
    model = stacked_model(3)
    params = sp.flatten(model.init(jax.random.key(0), X))
    want = model.apply(sp.unflatten(params), X)
    for extra in (jnp.ones(5), jnp.ones(()), jnp.ones(3), "not an array"):
        with_extra = sp.unflatten({**params, "blocks/unused": extra, "blocks/dense/stale": extra})
        for apply in (model.apply,) if isinstance(extra, str) else (model.apply,
                                                                      jax.jit(model.apply)):
            np.testing.assert_allclose(apply(with_extra, X), want, rtol=1e-6)


def test_a_requested_entry_without_the_layer_axis_is_a_shape_error_naming_it_not_an_index_error():
    model = sp.transform(lambda x: sp.layer_stack(2, name="ls")(
        lambda h: h * sp.get_param("w", ()))(x))
    for params, found in (({"ls": {"w": jnp.ones(())}}, "()"), ({"ls": {"w": jnp.ones(3)}}, "(3,)")):
        for apply in (model.apply, jax.jit(model.apply)):
            with pytest.raises(sp.ShapeMismatchError,
                               match=rf"num_layers=2.*'ls/w' has shape {re.escape(found)}"):
                apply(params, 1.0)


def test_records_and_state_of_a_stack_under_jax_vmap_in_the_model_are_errors_not_leaked_tracers():
    x = jnp.ones((2, 4, 3))

    def recording(x):
        @sp.layer_stack(2, name="st")
        def block(h):
            sp.record("h", h)
            return h * sp.get_param("w", (), init=sp.initializers.ones)
        return jax.vmap(block)(x)

    model = sp.transform(recording)
    params = model.init(jax.random.key(0), x)
    np.testing.assert_allclose(model.apply(params, x), x)  # params under vmap keep working
    for run in (model.apply_with_intermediates, jax.jit(model.apply_with_intermediates)):
        with pytest.raises(sp.NestedTraceError, match=r"(?s)sp.record, record 'st/h', in the block "
                                                      r"of sp.layer_stack 'st' was called inside a "
                                                      r"function that a JAX transformation.*fix:"):
            run(params, x)

    def counting(x):
        @sp.layer_stack(2, name="st")
        def block(h):
            n = sp.get_state("n", (), init=sp.initializers.zeros)
            sp.set_state("n", n + 1.0)
            return h + n
        return jax.vmap(block)(x)

    model = sp.transform_with_state(counting)
    state = {"st": {"n": jnp.zeros(2)}}
    for run in (model.apply, jax.jit(model.apply)):
        with pytest.raises(sp.StateError, match=r"(?s)sp.set_state, state 'st/n', in the block of "
                                                r"sp.layer_stack 'st' was called inside a function "
                                                r"that a JAX transformation.*fix:"):
            run({}, state, x)
    # Reading state under vmap, without setting it, keeps working.
    reading = sp.transform_with_state(lambda x: jax.vmap(sp.layer_stack(2, name="st")(
        lambda h: h + sp.get_state("n", (), init=sp.initializers.zeros)))(x))
    out, new_state = reading.apply({}, state, x)
    np.testing.assert_allclose(out, x)


def test_a_carry_mismatch_lists_the_shapes_and_dtypes_not_tree_defs():
    model = sp.transform(lambda x: sp.layer_stack(2)(lambda h: sp.layers.dense(h, 3))(x))
    with pytest.raises(TypeError, match="same structure, shapes and dtypes") as e:
        model.init(jax.random.key(0), jnp.ones((1, 4)))
    message = str(e.value)
    assert "PyTreeDef" not in message
    assert "(inputs): (float32[1,4],)" in message and "(outputs): (float32[1,3],)" in message


def test_num_layers_of_a_wrong_type_is_a_type_error_and_non_positive_a_value_error():
    for bad in ("3", 2.5, None):
        with pytest.raises(TypeError, match=r"layer_stack: num_layers must be a positive int, got"):
            sp.layer_stack(bad)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=rf"num_layers must be a positive int, got {bad}"):
            sp.layer_stack(bad)
    assert sp.layer_stack(np.int64(2)) is not None


def test_regularization_loss_inside_a_block_is_the_running_sum_the_unrolled_model_gives():
    # Each layer sees the terms of the layers before it and its own so far, not every layer's:
    # the block's second parameter is fetched after the call, so layer i sees i of its terms.
    def block(h):
        before = sp.regularization_loss()
        w = sp.get_param("w", (3, 3), regularizer=sp.l2_regularizer(1.0))
        during = sp.regularization_loss()
        h = jnp.tanh(h @ w) * sp.get_param("s", (3,), init=sp.initializers.ones,
                                              regularizer=lambda s: jnp.sum(jnp.abs(s)))
        return h, jnp.stack([before, during])

    def head(x):
        sp.get_param("head", (), init=sp.initializers.constant(2.0), regularizer=lambda v: v)
        return x

    def stacked(x):
        h, losses = sp.layer_stack(3, with_per_layer_inputs=True, name="s")(
            lambda h, _: block(h))(head(x), jnp.zeros(3))
        return losses, sp.regularization_loss()

    def unrolled(x):
        h, losses = head(x), []
        for i in range(3):
            with sp.scope(f"s/l{i}"):
                h, loss = block(h)
            losses.append(loss)
        return jnp.stack(losses), sp.regularization_loss()

    x = jnp.ones((2, 3))
    model = sp.transform(stacked)
    params = model.init(jax.random.key(0), x)
    per_layer = {f"l{i}": jax.tree.map(lambda v: v[i], params["s"]) for i in range(3)}
    expected = sp.transform(unrolled).apply({"head": params["head"], "s": per_layer}, x)
    for apply in (model.apply, jax.jit(model.apply)):
        chex.assert_trees_all_close(apply(params, x), expected, rtol=1e-6)
    # init's own abstract trace of the block runs too (as layer 0)
    assert jax.eval_shape(model.init, jax.random.key(0), x)["s"]["w"].shape == (3, 3, 3)


def test_regularization_loss_inside_a_block_follows_the_dtype_of_its_terms():
    def block(h):
        sp.get_param("w", (2,), dtype=jnp.bfloat16, init=sp.initializers.ones,
                     regularizer=lambda w: jnp.sum(w))
        return h, sp.regularization_loss()

    model = sp.transform(lambda x: sp.layer_stack(4, with_per_layer_inputs=True)(
        lambda h, _: block(h))(x, jnp.zeros(4))[1])
    x = jnp.ones(2)
    losses = model.apply(model.init(jax.random.key(0), x), x)
    assert losses.dtype == jnp.bfloat16
    np.testing.assert_array_equal(losses, [2.0, 4.0, 6.0, 8.0])


@pytest.mark.parametrize("where", ["init", "apply"])
def test_per_layer_inputs_of_another_depth_are_a_value_error_naming_the_stack(where):
    def fn(x, xs):
        @sp.layer_stack(3, with_per_layer_inputs=True, name="s")
        def blk(h, xi):
            return jnp.tanh(sp.layers.dense(h, 4) + xi), h.sum()
        return blk(x, xs)

    model = sp.transform(fn)
    x = jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x, jnp.ones((3, 4)))
    run = model.init if where == "init" else lambda _, *args: model.apply(params, *args)
    for xs, shape in ((jnp.ones((5, 4)), r"\(5, 4\)"), (jnp.float32(1.0), r"\(\)")):
        with pytest.raises(ValueError, match=rf"sp\.layer_stack 's' has num_layers=3: every per-layer "
                                             rf"input has a leading axis of size 3, but xs\[0\] has "
                                             rf"shape {shape}") as e:
            run(jax.random.key(0), x, xs)
        assert "fix: pass one slice per layer, stacked along a new first axis" in str(e.value)


def test_regularization_loss_inside_nested_stacks_is_the_unrolled_running_sum():
    reg = sp.l2_regularizer(1.0)

    def leaf(h):
        h = jnp.tanh(h @ sp.get_param("w", (3, 3), regularizer=reg))
        return h, sp.regularization_loss()

    def outer(h):
        h, inner = sp.layer_stack(3, with_per_layer_inputs=True, name="in")(
            lambda h, _: leaf(h))(h, jnp.zeros(3))
        h = h + sp.get_param("v", (3,), regularizer=lambda v: jnp.sum(jnp.abs(v)))
        return h, (inner, sp.regularization_loss())

    def stacked(x):
        _, losses = sp.layer_stack(2, with_per_layer_inputs=True, name="out")(
            lambda h, _: outer(h))(x, jnp.zeros(2))
        return losses, sp.regularization_loss()

    def unrolled(x):
        h, inner, outer_losses = x, [], []
        for i in range(2):
            losses = []
            for j in range(3):
                with sp.scope(f"out/o{i}/in/i{j}"):
                    h, loss = leaf(h)
                losses.append(loss)
            with sp.scope(f"out/o{i}"):
                h = h + sp.get_param("v", (3,), regularizer=lambda v: jnp.sum(jnp.abs(v)))
            inner.append(jnp.stack(losses))
            outer_losses.append(sp.regularization_loss())
        return (jnp.stack(inner), jnp.stack(outer_losses)), sp.regularization_loss()

    x = jnp.ones((2, 3))
    model = sp.transform(stacked)
    params = model.init(jax.random.key(0), x)
    p = params["out"]
    per_layer = {"out": {f"o{i}": {"v": p["v"][i], "in": {f"i{j}": {"w": p["in"]["w"][i, j]}
                                                          for j in range(3)}} for i in range(2)}}
    expected = sp.transform(unrolled).apply(per_layer, x)
    for apply in (model.apply, jax.jit(model.apply)):
        chex.assert_trees_all_close(apply(params, x), expected, rtol=1e-5)


def test_a_stack_whose_block_draws_no_key_leaves_later_keys_unchanged():
    def fn(x, dropout):
        def block(h):
            h = sp.layers.dense(h, WIDTH)
            return sp.layers.dropout(h, 0.5, training=True) if dropout else h
        h = sp.layer_stack(3)(block)(x)
        return h, jax.random.uniform(sp.next_rng_key(), ())

    x, rng = jnp.ones((2, WIDTH)), jax.random.key(4)
    model = sp.transform(fn)
    params = model.init(jax.random.key(0), x, False)
    first = jax.random.uniform(jax.random.fold_in(rng, 0), ())
    assert model.apply(params, x, False, rng=rng)[1] == first  # as if the stack were not there
    # A block that draws takes one key, the base of its layers' keys.
    h, after = jax.jit(model.apply, static_argnums=2)(params, x, True, rng=rng)
    assert after == jax.random.uniform(jax.random.fold_in(rng, 1), ())


# --- sp.regularization_loss() in a block against the unrolled model, layer by layer --------------

SEEN: dict = {}  # tag -> what the blocks' sp.regularization_loss() gave in init's trace


def l2_reg(v):
    return 0.1 * jnp.sum(v ** 2)


def size_reg(v):
    return 0.5 * v.size  # a Python float: no dtype, as a user's regularizer may return


def note(tag, loss):
    """``loss`` (an in-block sp.regularization_loss()) under ``tag``; None when traced."""
    SEEN.setdefault(tag, []).append(None if isinstance(loss, jax.core.Tracer) else float(loss))
    return loss


def run_stack(num_layers, name, block, unrolled):
    """``sp.layer_stack(..., with_per_layer_inputs=True)``, or the same block called in scopes
    ``name/l0``, ``name/l1``, ... (the unrolled model)."""
    if not unrolled:
        return sp.layer_stack(num_layers, with_per_layer_inputs=True, name=name)(block)

    def run(carry, xs):
        ys = []
        for i in range(num_layers):
            with sp.scope(f"{name}/l{i}"):
                carry, y = block(carry, jax.tree.map(lambda x: x[i], xs))
            ys.append(y)
        return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)
    return run


def unroll(tree, stacks):
    """Stacked params (or state) as the unrolled model names them: ``s/w[i]`` is ``s/l{i}/w``."""
    out = {}

    def put(parts, value, done):
        for k, part in enumerate(parts):
            if part in stacks:
                for i in range(value.shape[0]):
                    put(parts[k + 1:], value[i], done + parts[:k + 1] + [f"l{i}"])
                return
        out["/".join(done + parts)] = value

    for key, value in sp.flatten(tree).items():
        put(key.split("/"), value, [])
    return sp.unflatten(out)


def assert_losses_match_the_unrolled_model(model, x, stacks, with_state=False):
    """``model(x, unrolled)`` stacked and unrolled: apply (eager, jit) gives the same outputs (the
    blocks' losses among them) and new state; init (eager, jit) traces each block once, as layer 0,
    and its losses there are the unrolled model's layer 0's."""
    transform = sp.transform_with_state if with_state else sp.transform
    stacked = transform(functools.partial(model, unrolled=False))
    flat = transform(functools.partial(model, unrolled=True))
    for init in (stacked.init, jax.jit(stacked.init)):
        SEEN.clear()
        variables = init(jax.random.key(0), x)
        seen_stacked = dict(SEEN)
        SEEN.clear()
        flat.init(jax.random.key(0), x)
        for tag, losses in seen_stacked.items():  # where both are concrete (None: traced)
            pairs = [(a, b) for a, b in zip(losses, SEEN[tag]) if a is not None and b is not None]
            np.testing.assert_allclose(*np.array(pairs, float).reshape(-1, 2).T, rtol=1e-6)
    if with_state:
        params, state = variables
        args, flat_args = (params, state), (unroll(params, stacks), unroll(state, stacks))
    else:
        args, flat_args = (variables,), (unroll(variables, stacks),)
    expected = flat.apply(*flat_args, x)
    for apply in (stacked.apply, jax.jit(stacked.apply)):
        got = apply(*args, x)
        if with_state:
            got = (got[0], unroll(got[1], stacks))
        chex.assert_trees_all_close(jax.tree.map(jnp.asarray, got),
                                    jax.tree.map(jnp.asarray, expected), rtol=1e-5)


@pytest.mark.parametrize("reg", [l2_reg, size_reg])
def test_a_shared_parameters_term_is_in_a_blocks_regularization_loss_from_layer_0_on(reg):
    # v lies outside the stack: the unrolled model's layer 0 fetches it first and adds its term
    # once; every later layer sees that term from its start, and never a second one.
    def model(x, unrolled):
        with sp.scope("shared") as shared:
            pass
        sp.get_param("head", (), regularizer=reg)

        def block(h, _):
            start = note("start", sp.regularization_loss())
            with sp.scope(shared, reuse=sp.AUTO_REUSE):
                v = sp.get_param("v", (4,), regularizer=reg)
            after_v = note("after_v", sp.regularization_loss())
            w = sp.get_param("w", (4, 4), regularizer=reg)
            end = note("end", sp.regularization_loss())
            return jnp.tanh(h @ w + v), jnp.stack([start, after_v, end])

        h, losses = run_stack(3, "s", block, unrolled)(x, jnp.zeros(3))
        return losses, sp.regularization_loss()

    assert_losses_match_the_unrolled_model(model, jnp.ones((2, 4)), {"s"})


def test_a_regularizer_term_without_a_dtype_joins_a_blocks_running_sum():
    # A regularizer returning a Python float: the unrolled model counts it at every layer.
    def model(x, unrolled):
        def block(h, _):
            b = sp.get_param("b", (4,), regularizer=size_reg)
            return h + b, note("loss", sp.regularization_loss())

        h, losses = run_stack(3, "s", block, unrolled)(x, jnp.zeros(3))
        return losses, sp.regularization_loss()

    assert_losses_match_the_unrolled_model(model, jnp.ones((2, 4)), {"s"})
    model_apply = sp.transform(functools.partial(model, unrolled=False))
    x = jnp.ones((2, 4))
    losses, total = model_apply.apply(model_apply.init(jax.random.key(0), x), x)
    np.testing.assert_allclose(losses, [2.0, 4.0, 6.0])
    assert float(total) == 6.0

    # Summed with a bfloat16 term, the numbers take its dtype after the stack, as unrolled.
    def with_bf16(x, unrolled):
        sp.get_param("head", (), dtype=jnp.bfloat16, init=sp.initializers.ones,
                     regularizer=lambda v: v)
        return model(x, unrolled)[1]

    for unrolled in (False, True):
        bf16 = sp.transform(functools.partial(with_bf16, unrolled=unrolled))
        total = bf16.apply(bf16.init(jax.random.key(0), x), x)
        assert total.dtype == jnp.bfloat16 and float(total) == 7.0


@pytest.mark.parametrize("reg", [l2_reg, size_reg])
def test_a_blocks_regularization_loss_with_stacked_and_shared_state_is_the_unrolled_models(reg):
    def model(x, unrolled):
        with sp.scope("shared") as shared:
            scale = sp.get_state("scale", (), init=sp.initializers.constant(0.5))

        def block(h, _):
            count = sp.get_state("count", (), init=sp.initializers.zeros)
            with sp.scope(shared, reuse=sp.AUTO_REUSE):
                v = sp.get_param("v", (4,), regularizer=reg)
                shared_scale = sp.get_state("scale", ())
            sp.set_state("count", count + 1)
            loss = note("loss", sp.regularization_loss())
            w = sp.get_param("w", (4, 4), regularizer=reg)
            return jnp.tanh(h @ w + v * shared_scale), jnp.stack([loss, count])

        h, losses = run_stack(3, "s", block, unrolled)(x * scale, jnp.zeros(3))
        return losses, sp.regularization_loss()

    assert_losses_match_the_unrolled_model(model, jnp.ones((2, 4)), {"s"}, with_state=True)


@pytest.mark.parametrize("reg", [l2_reg, size_reg])
def test_nested_stacks_count_terms_shared_by_either_stack_from_its_first_layer(reg):
    # The inner block fetches its own w, u of the outer stack (shared by the inner layers) and g
    # outside both (shared by every layer): each counted once, from the layer that first fetches it.
    def model(x, unrolled):
        with sp.scope("global") as outside:
            pass

        def inner(h, _):
            start = note("inner_start", sp.regularization_loss())
            with sp.scope(outer_scope, reuse=sp.AUTO_REUSE):
                u = sp.get_param("u", (3,), regularizer=reg)
            with sp.scope(outside, reuse=sp.AUTO_REUSE):
                g = sp.get_param("g", (3,), regularizer=reg)
            w = sp.get_param("w", (3, 3), regularizer=reg)
            end = note("inner_end", sp.regularization_loss())
            return jnp.tanh(h @ w + u + g), jnp.stack([start, end])

        def outer(h, _):
            nonlocal outer_scope
            outer_scope = sp.get_scope()  # the outer layer's scope, captured
            start = note("outer_start", sp.regularization_loss())
            h, inner_losses = run_stack(3, "inner", inner, unrolled)(h, jnp.zeros(3))
            end = note("outer_end", sp.regularization_loss())
            return h, (inner_losses, jnp.stack([start, end]))

        outer_scope = None
        _, losses = run_stack(2, "outer", outer, unrolled)(x, jnp.zeros(2))
        return losses, sp.regularization_loss()

    assert_losses_match_the_unrolled_model(model, jnp.ones((2, 3)), {"outer", "inner"})


def test_a_block_that_never_asks_for_regularization_loss_is_traced_once():
    traces = []

    def model(x):
        with sp.scope("shared") as shared:
            pass

        @sp.layer_stack(3, name="s")
        def block(h):
            traces.append(None)
            with sp.scope(shared, reuse=sp.AUTO_REUSE):
                v = sp.get_param("v", (4,), regularizer=size_reg)
            return jnp.tanh(h @ sp.get_param("w", (4, 4), regularizer=l2_reg) + v)

        h = block(x)
        return h, sp.regularization_loss()

    model = sp.transform(model)
    x = jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x)
    for apply in (model.apply, jax.jit(model.apply)):
        traces.clear()
        _, total = apply(params, x)
        assert len(traces) == 1
        np.testing.assert_allclose(total, 2.0 + 0.1 * jnp.sum(params["s"]["w"] ** 2), rtol=1e-6)


def test_initializer_shape_error_in_a_stack_speaks_of_one_layers_shape():
    def fn(x):
        def layer(h):
            return h @ sp.get_param("w", (3, 3), init=lambda k, s, d: jnp.ones((4, 3), d))
        return sp.layer_stack(5)(layer)(x)

    with pytest.raises(sp.InitializerError) as info:
        sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 3)))
    message = str(info.value)
    assert "returned shape (4, 3), expected (3, 3) for each of the 5 layers" in message
    assert "stacked, shape (5, 3, 3)" in message


def test_initializer_raising_in_a_stack_is_noted_with_one_layers_shape():
    def bad(key, shape, dtype):
        raise ValueError("boom")

    def fn(x):
        def layer(h):
            return h @ sp.get_param("w", (3, 3), init=bad)
        return sp.layer_stack(5)(layer)(x)

    with pytest.raises(ValueError, match="boom") as info:
        sp.transform(fn).init(jax.random.key(0), jnp.ones((2, 3)))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "init(key, (3, 3), float32) for each of the 5 layers of its sp.layer_stack" in notes


def test_a_retraced_stack_block_inside_a_reentered_scope_makes_the_names_init_made():
    # The block calls sp.regularization_loss(), so the stack traces its scan again with the running
    # sum. Run a second time inside a re-entered scope (TF's multi-tower loop), the first trace had
    # counted the 'dense' child a re-entered scope's exit had left at 0: the retrace named 'dense_1'.
    def block(h):
        return sp.layers.dense(h, 4, kernel_regularizer=sp.l2_regularizer(0.1)) \
            + 0.01 * sp.regularization_loss()

    def towers(x):
        outs = []
        for i in range(2):
            with sp.scope(sp.get_scope(), reuse=True if i > 0 else None):
                outs.append(sp.layer_stack(2, name="st")(block)(x + i))
        return sum(outs)

    class Encoder(sp.layers.Layer):
        def call(self, h):
            return sp.layer_stack(2, name="st")(block)(h)

    def layer_twice(x):
        encoder = Encoder()
        return encoder(x) + encoder(x + 1)

    x = jnp.ones((2, 4))
    for fn, prefix in ((towers, "st"), (layer_twice, "encoder/st")):
        model = sp.transform(fn)
        params = model.init(jax.random.key(0), x)
        assert sorted(sp.flatten(params)) == [f"{prefix}/dense/bias", f"{prefix}/dense/kernel"]
        out = model.apply(params, x)
        assert out.shape == (2, 4) and jnp.all(jnp.isfinite(out))
        np.testing.assert_allclose(jax.jit(model.apply)(params, x), out, rtol=1e-6)


def test_a_custom_layers_weights_after_its_stack_are_the_stacked_values_as_a_builtins():
    # add_weight kept the value it got inside the stack's scan (one layer's slice, a tracer of the
    # scan): eager apply handed it out after the stack, jit(apply) raised UnexpectedTracerError.
    class MyDense(sp.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight("kernel", [int(input_shape[-1]), 4])

        def call(self, inputs):
            return inputs @ self.kernel

    def fn(x, make):
        layer = make()
        sp.layer_stack(2, name="st")(layer)(x)
        return layer.weights[0], layer.trainable_weights[0]

    x = jnp.ones((5, 4))
    for make in (MyDense, lambda: sp.layers.Dense(4, use_bias=False)):
        model = sp.transform(fn)
        params = model.init(jax.random.key(0), x, make)
        (kernel,) = sp.flatten(params).values()
        assert kernel.shape == (2, 4, 4)
        for out in (model.apply(params, x, make),
                    jax.jit(model.apply, static_argnums=2)(params, x, make)):
            for weight in out:
                assert not isinstance(weight, jax.core.Tracer)
                np.testing.assert_array_equal(weight, kernel)
