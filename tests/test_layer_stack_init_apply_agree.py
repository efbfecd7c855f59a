"""sp.layer_stack and sp.remat: init and apply accept the same blocks and say the same things, and a
stack's block sees what an unrolled layer sees (a template's variables, state declared before the
stack, a regularizer's errors, a remat's Python outputs)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)


def _template_block(h):
    tm = sp.make_template("tm", lambda v: jnp.tanh(sp.layers.dense(v, 4)))
    h = tm(h)
    sp.record("decay", sum((jnp.sum(v ** 2) for v in tm.variables), jnp.float32(0)))
    return h


def test_a_templates_variables_in_a_stack_block_are_this_layers_as_unrolled():
    # template.variables inside a block was [] (the block's store is the stack's view), so a weight
    # decay written over it was silently 0.
    def unrolled(x):
        for i in range(2):
            with sp.scope(f"s{i}"):
                x = _template_block(x)
        return x

    x = jnp.ones((2, 4))
    plain = sp.transform(unrolled)
    params = plain.init(KEY, x)
    flat = sp.flatten(params)
    stacked_params = sp.unflatten({name.replace("s0/", "s/"): jnp.stack(
        [flat[name], flat[name.replace("s0/", "s1/")]]) for name in flat if name.startswith("s0/")})
    stacked = sp.transform(lambda x: sp.layer_stack(2, name="s")(_template_block)(x))
    want = plain.apply_with_intermediates(params, x)[1]
    for apply in (stacked.apply_with_intermediates, jax.jit(stacked.apply_with_intermediates)):
        got = apply(stacked_params, x)[1]["s/decay"]
        np.testing.assert_allclose(got, [want["s0/decay"], want["s1/decay"]], rtol=1e-6)
        assert float(got[0]) > 0

    def counted(h):  # in init: this layer's trainable variables, as TF's template gives
        tm = sp.make_template("tm", lambda v: sp.layers.dense(v, 4))
        h = tm(h)
        assert len(tm.trainable_variables) == 2 and tm.trainable_variables[0].shape == (4, 4)
        return h
    sp.transform(lambda x: sp.layer_stack(2, name="s")(counted)(x)).init(KEY, x)


def test_a_template_making_a_trainable_variable_on_a_later_call_in_a_stack_block_is_tfs_error():
    def body(v, second=False):
        out = sp.layers.dense(v, 4)
        if second:
            with sp.scope("extra", reuse=sp.AUTO_REUSE):
                out = out * sp.get_param("g", (4,))
        return out

    def twice(h):
        tm = sp.make_template("tm", body)
        return tm(tm(h), second=True)

    for fn in (twice, lambda x: sp.layer_stack(2, name="s")(twice)(x)):
        with pytest.raises(ValueError, match=r"Trainable variable created when calling a template "
                                             r"after the first time: \['(s/)?tm/extra/g'\]"):
            sp.transform(fn).init(KEY, jnp.ones((2, 4)))


def test_a_python_value_in_a_stacks_arguments_is_traced_in_init_as_apply_traces_it():
    # init ran the block on the caller's Python values (and layer 0's NumPy slice), apply's scan on
    # traced arrays: init accepted what apply refused, with an error naming library internals.
    def block(h, training):
        h = sp.layers.dense(h, 4)
        if training:
            h = sp.layers.dropout(h, 0.5, training=True)
        return h, training

    def block_with_rates(h, rate):
        return h + sp.layers.conv1d(h, 4, 2, padding="same", dilation_rate=int(rate)), None

    cases = [
        (lambda x: sp.layer_stack(3, name="s")(block)(x, True)[0], jax.errors.ConcretizationTypeError,
         r"argument 1 \(bool True\)"),
        (lambda x: sp.layer_stack(3, name="s", with_per_layer_inputs=True)(block_with_rates)(
            x, np.array([1, 2, 4]))[0], jax.errors.ConcretizationTypeError, r"xs\[0\] \(ndarray"),
    ]
    x = jnp.ones((1, 16, 4))
    for fn, error, named in cases:
        with pytest.raises(error) as info:
            sp.transform(fn).init(KEY, x)
        note = "\n".join(getattr(info.value, "__notes__", []))
        assert "sp.layer_stack 's': a jax.lax.scan runs the layers" in note, note
        assert "fix: pass it in a closure or functools.partial(block, ...)" in note
        assert len(re.findall(named, note)) == 1, note

    def scaled(h, scale):  # a Python number used as a number: fine in both
        return sp.layers.dense(h, 4) * scale, scale
    model = sp.transform(lambda x: sp.layer_stack(3, name="s")(scaled)(x, 0.5)[0])
    assert model.apply(model.init(KEY, x), x).shape == (1, 16, 4)

    def named(h, activation):  # no array at all: both refuse it, naming the argument
        return sp.layers.dense(h, 4, activation=getattr(jax.nn, activation)), activation
    with pytest.raises(TypeError, match=r"sp.layer_stack 's': argument 1 is str 'relu', not an "
                                        r"array.*\n  fix: .*closure or functools.partial"):
        sp.transform(lambda x: sp.layer_stack(2, name="s")(named)(x, "relu")[0]).init(KEY, x)


def test_a_block_may_set_per_layer_state_declared_before_the_stack_in_init_as_in_apply():
    # init looked only at the state the layer itself asked for, and refused a set_state of state
    # declared earlier in the call, demanding the stacked shape of one layer's value.
    layers = 3

    def block(h):
        sp.set_state("cache", h.sum(0))
        return h + sp.get_param("b", (4,), init=sp.initializers.zeros)

    def fn(x):
        with sp.scope("dec"):
            sp.get_state("cache", (layers, 4), init=sp.initializers.zeros)
        with sp.scope(sp.get_scope(), reuse=sp.AUTO_REUSE):
            return sp.layer_stack(layers, name="dec")(block)(x)

    model = sp.transform_with_state(fn)
    x = jnp.ones((2, 4))
    params, state = model.init(KEY, x)
    assert state["dec"]["cache"].shape == (layers, 4) and params["dec"]["b"].shape == (layers, 4)
    _, new_state = model.apply(params, state, x)
    np.testing.assert_array_equal(new_state["dec"]["cache"], np.full((layers, 4), 2.0))

    def unstacked(x):  # declared without the layer axis: both refuse it, naming the depth
        with sp.scope("dec"):
            sp.get_state("cache", (4,), init=sp.initializers.zeros)
        with sp.scope(sp.get_scope(), reuse=sp.AUTO_REUSE):
            return sp.layer_stack(layers, name="dec")(block)(x)
    with pytest.raises(sp.ShapeMismatchError, match=r"num_layers=3: .*'dec/cache' has shape \(4,\)"):
        sp.transform_with_state(unstacked).init(KEY, x)


@pytest.mark.parametrize("regularizer, said", [
    (sp.l2_regularizer, r"the regularizer of 's/dense/kernel', l2_regularizer, returned a function"),
    (lambda w: "oops", r"the regularizer of 's/dense/kernel', <lambda>, returned str 'oops'"),
])
def test_a_misgiven_regularizer_in_a_stack_is_named_as_outside_it(regularizer, said):
    # JAX's vmap error ("Output from batched function ... is not a valid JAX type") came first.
    def fn(x):
        block = lambda h: sp.layers.dense(h, 4, kernel_regularizer=regularizer)  # noqa: E731
        return jnp.sum(sp.layer_stack(2, name="s")(block)(x)) + sp.regularization_loss()

    with pytest.raises(TypeError, match=r"sp.regularization_loss\(\): " + said):
        sp.transform(fn).init(KEY, jnp.ones((2, 4)))


def test_a_shape_mismatch_in_a_stack_block_notes_the_layer_axis_of_the_stacked_shapes():
    def block(h):
        w = sp.get_param("w", (4, 4))
        with sp.scope(sp.get_scope(), reuse=True):
            sp.get_param("w", (4, 5))
        return h @ w

    with pytest.raises(sp.ShapeMismatchError) as info:
        sp.transform(lambda x: sp.layer_stack(3, name="s")(block)(x)).init(KEY, jnp.ones((2, 4)))
    assert "specified shape (3, 4, 5) and found shape (3, 4, 4)" in str(info.value)
    assert ("inside sp.layer_stack 's': 's/w' is stored stacked, one slice per layer, so both shapes "
            "above have the leading layer axis of 3; the block asked for one layer's shape (4, 5)"
            in info.value.__notes__[0])


def test_remat_gives_back_its_functions_python_outputs_as_they_are():
    # A Python number returned next to an array came back as an array of the outer trace, and a
    # size computed from it failed, blaming jax.jit.
    def layer(h):
        h = sp.layers.dense(h, 4)
        return h, h.shape[-1], "tag"

    def fn(x):
        h, width, tag = sp.remat(layer)(x)
        assert type(width) is int and tag == "tag"
        return sp.layers.dense(h, width * 2)

    model, x = sp.transform(fn), jnp.ones((2, 4))
    params = model.init(KEY, x)
    assert params["dense_1"]["kernel"].shape == (4, 8)
    out = model.apply(params, x)
    np.testing.assert_allclose(jax.jit(model.apply)(params, x), out, rtol=1e-6)
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x)))(params)
    assert grads["dense"]["kernel"].shape == (4, 4)


def test_state_declared_before_nested_stacks_may_be_set_in_the_inner_block_in_init_as_in_apply():
    def fn(x):
        with sp.scope("outer"), sp.scope("inner"):
            sp.get_state("n", init=jnp.zeros((2, 3)))

        @sp.layer_stack(2, name="outer")
        def outer_block(h):
            @sp.layer_stack(3, name="inner")
            def inner_block(h):
                sp.set_state("n", jnp.float32(2.0))
                return h
            return inner_block(h)
        return outer_block(x)

    model = sp.transform_with_state(fn)
    params, state = model.init(KEY, jnp.ones(2))
    _, new_state = model.apply(params, state, jnp.ones(2))
    np.testing.assert_array_equal(new_state["outer"]["inner"]["n"], np.full((2, 3), 2.0))


def test_a_parameter_made_before_a_stack_without_its_axis_is_the_same_error_in_init_and_apply():
    # init said "specified shape (3, 4) and found shape (4,)", with a note claiming both shapes had
    # the layer axis; apply, the stack's depth error.
    def fn(x):
        with sp.scope("enc"):
            sp.get_param("w", (4,))

        @sp.layer_stack(3, name="enc")
        def block(h):
            with sp.scope(sp.get_scope(), reuse=True):
                return h * sp.get_param("w", (4,))
        return block(x)

    model, x = sp.transform(fn), jnp.ones((2, 4))
    for call in (lambda: model.init(KEY, x), lambda: model.apply({"enc": {"w": jnp.ones(4)}}, x)):
        with pytest.raises(sp.ShapeMismatchError, match=r"sp.layer_stack 'enc' has num_layers=3: .*"
                                                         r"but 'enc/w' has shape \(4,\)") as info:
            call()
        assert not any("sp.layer_stack" in note for note in getattr(info.value, "__notes__", []))


def test_a_python_size_passed_through_a_stack_gets_the_note_on_a_shape_error():
    @sp.layer_stack(2, name="s")
    def block(h, n):
        return h + sp.get_param("w", (n,)), n

    with pytest.raises(TypeError, match=r"has a dimension that is a traced JAX value") as info:
        sp.transform(lambda x: block(x, 2)[0]).init(KEY, jnp.ones(2))
    assert "argument 1 (int 2)" in info.value.__notes__[0]


def test_stacks_beside_other_params_and_state_read_their_own_by_prefix_in_apply():
    # Each stack now takes the names under its prefix by bisection (it scanned every name); what it
    # reads must be exactly its own: not a neighbour whose name starts alike ('s1' vs 's10'),
    # state where a name is state.
    def fn(x):
        with sp.scope("other"):
            x = x + sp.get_param("e", (4,), init=sp.initializers.ones)
        for name in ("s1", "s10", "s"):
            x = sp.layer_stack(2, name=name)(
                lambda h: sp.layers.batch_normalization(h + sp.get_param("b", (4,)), training=True))(x)
        return x

    model = sp.transform_with_state(fn)
    x = jnp.arange(8.0).reshape(2, 4)
    params, state = model.init(KEY, x)
    assert sorted(sp.flatten(state)) == [f"{n}/batch_normalization/{k}" for n in ("s", "s1", "s10")
                                         for k in ("moving_mean", "moving_variance")]
    params = jax.tree.map(lambda p: p + 1.0, params)
    out, new_state = model.apply(params, state, x)

    def unrolled(x):
        x = x + 2.0
        for name in ("s1", "s10", "s"):
            for i in range(2):
                x = x + params[name]["b"][i]
                mean, var = jnp.mean(x, 0), jnp.var(x, 0)
                x = (x - mean) * jax.lax.rsqrt(var + 1e-3) * params[name]["batch_normalization"][
                    "gamma"][i] + params[name]["batch_normalization"]["beta"][i]
        return x
    np.testing.assert_allclose(out, unrolled(x), rtol=1e-5, atol=1e-5)
    assert all(np.shape(v)[0] == 2 for v in sp.flatten(new_state).values())
