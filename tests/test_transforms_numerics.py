"""apply under jax transforms equals hand-written JAX; tracing is per call (threads); init runs only
initializers (grouped); name scopes reach XLA op metadata."""

import contextlib
import gc
import re
import subprocess
import sys
import textwrap
import threading

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import scoped_params as sp
from scoped_params import _materialize
from scoped_params._materialize import param_key
from _scripts import load_example

KEY = jax.random.key(0)
DN = ("NHWC", "HWIO", "NHWC")


# --- the seeds' image filter, and the same function written by hand -------------------------------


# The model under test is examples/image_filter.py itself (the seed's conv_relu / my_image_filter).
two_images = load_example("image_filter").two_images


def hand_conv_relu(p, x):
    conv = lax.conv_general_dilated(x, p["weights"], (1, 1), "SAME", dimension_numbers=DN)
    return jax.nn.relu(conv + p["biases"])


def hand_two_images(params, image1, image2):
    p = params["image_filters"]

    def filt(x):
        return hand_conv_relu(p["conv2"], hand_conv_relu(p["conv1"], x))

    return filt(image1), filt(image2)


MODEL = sp.transform(two_images)
IMG1 = jax.random.normal(jax.random.key(1), (2, 8, 8, 32))
IMG2 = jax.random.normal(jax.random.key(2), (2, 8, 8, 32))
PARAMS = MODEL.init(KEY, IMG1, IMG2)


def test_image_filter_shares_one_set_of_params_across_two_images():
    assert set(sp.flatten(PARAMS)) == {
        "image_filters/conv1/weights", "image_filters/conv1/biases",
        "image_filters/conv2/weights", "image_filters/conv2/biases"}
    chex.assert_shape(PARAMS["image_filters"]["conv1"]["weights"], (5, 5, 32, 32))
    chex.assert_shape(PARAMS["image_filters"]["conv2"]["biases"], (32,))


@pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_apply_equals_the_hand_written_function(wrap):
    out = wrap(MODEL.apply)(PARAMS, IMG1, IMG2)
    expected = hand_two_images(PARAMS, IMG1, IMG2)
    chex.assert_trees_all_close(out, expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(out[0], out[1])


@pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_grad_of_apply_equals_grad_of_the_hand_written_function(wrap):
    def loss(apply):
        def f(params, a, b):
            r1, r2 = apply(params, a, b)
            return jnp.sum(r1 * r2) + jnp.mean(r1)
        return f

    grads = wrap(jax.grad(loss(MODEL.apply)))(PARAMS, IMG1, IMG2)
    expected = jax.grad(loss(hand_two_images))(PARAMS, IMG1, IMG2)
    chex.assert_trees_all_equal_structs(grads, PARAMS)
    chex.assert_trees_all_close(grads, expected, rtol=1e-5, atol=1e-6)


def test_vmap_of_apply_over_inputs_equals_hand_written():
    a = jnp.stack([IMG1, IMG2, IMG1 * 2])
    b = jnp.stack([IMG2, IMG1, IMG2 - 1])
    out = jax.vmap(MODEL.apply, in_axes=(None, 0, 0))(PARAMS, a, b)
    expected = jax.vmap(hand_two_images, in_axes=(None, 0, 0))(PARAMS, a, b)
    chex.assert_trees_all_close(out, expected, rtol=1e-6, atol=1e-6)
    chex.assert_shape(out[0], (3, 2, 8, 8, 32))


def test_vmap_of_apply_over_an_ensemble_of_params_equals_hand_written():
    inits = [MODEL.init(jax.random.key(i), IMG1, IMG2) for i in range(3)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *inits)
    out = jax.jit(jax.vmap(MODEL.apply, in_axes=(0, None, None)))(stacked, IMG1, IMG2)
    for i, p in enumerate(inits):
        expected = hand_two_images(p, IMG1, IMG2)
        chex.assert_trees_all_close((out[0][i], out[1][i]), expected, rtol=1e-5, atol=1e-6)


def test_jitted_apply_lowers_to_the_same_program_as_hand_written_jax():
    ours = jax.jit(MODEL.apply).lower(PARAMS, IMG1, IMG2).compile().as_text()
    theirs = jax.jit(hand_two_images).lower(PARAMS, IMG1, IMG2).compile().as_text()

    def ops(text):
        return sorted(re.findall(r" = (?:\(.*?\)|\S+) ([a-z][\w\-]*)\(", text))

    assert "convolution" in ops(ours)
    assert ops(ours) == ops(theirs)


# --- name scopes in XLA metadata ------------------------------------------------------------------


def test_compiled_hlo_op_metadata_carries_scope_names():
    compiled = jax.jit(MODEL.apply).lower(PARAMS, IMG1, IMG2).compile().as_text()
    op_names = [line for line in compiled.splitlines() if "op_name=" in line]
    assert any("image_filters/conv1/" in line for line in op_names)
    assert any("image_filters/conv2/" in line for line in op_names)
    # The second, reusing call opens uniquified name scopes, as TF names its ops.
    assert any("image_filters/conv1_1/" in line for line in op_names)
    assert any("image_filters/conv2_1/" in line for line in op_names)


def test_lowered_text_with_debug_info_shows_conv1_locations():
    text = jax.jit(MODEL.apply).lower(PARAMS, IMG1, IMG2).as_text(debug_info=True)
    assert "image_filters/conv1/conv_general_dilated" in text
    assert "image_filters/conv2/conv_general_dilated" in text


def test_name_scope_labels_ops_without_touching_params():
    def fn(x):
        with sp.name_scope("preprocess"):
            x = jnp.sin(x)
        with sp.scope("dense"):
            return x * sp.get_param("w", [3])

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones(3))
    assert set(sp.flatten(params)) == {"dense/w"}
    text = jax.jit(model.apply).lower(params, jnp.ones(3)).as_text(debug_info=True)
    assert "preprocess/sin" in text and "dense/mul" in text


def test_root_and_absolute_name_scopes_label_ops_from_the_root_keeping_a_callers_named_scope():
    # name_scope('') and an absolute 'other/' name ops from the model's root, as TF names them;
    # a jax.named_scope the caller opened around apply stays outermost.
    def fn(x):
        with sp.name_scope("outer"):
            a = jnp.sin(x)
            with sp.name_scope(""):
                b = jnp.cos(a)
            with sp.name_scope("other/"):
                return jnp.exp(b)

    model = sp.transform(fn)
    x = jnp.ones(3)
    params = model.init(KEY, x)

    def locations(f, *args):
        text = jax.jit(f).lower(*args).as_text(debug_info=True)
        return {n for n in re.findall(r'loc\("([^"]*)"', text) if "/" in n and "." not in n}

    assert locations(model.apply, params, x) == {
        "jit(apply)/outer/sin", "jit(apply)/cos", "jit(apply)/other/exp"}

    def caller(x):
        with jax.named_scope("caller"):
            return model.apply(params, x)

    assert locations(caller, x) == {
        "jit(caller)/caller/outer/sin", "jit(caller)/caller/cos", "jit(caller)/caller/other/exp"}


def test_staged_ops_point_at_the_model_line_not_at_the_library():
    # JAX records where each op comes from (op metadata, MLIR locations, its tracer errors): the
    # user's line that called sp.layers, never a file of the library.
    from jax.extend.source_info_util import summarize

    def fn(x):
        x = sp.layers.conv2d(x, 4, 3, activation=jax.nn.relu)
        return sp.layers.dense(sp.layers.flatten(x), 2)

    model = sp.transform(fn)
    x = jnp.ones((1, 8, 8, 3))
    params = model.init(KEY, x)
    sites = {summarize(e.source_info) for e in jax.make_jaxpr(model.apply)(params, x).jaxpr.eqns}
    where = {re.fullmatch(r"(.*):(\d+):\d+ \(.*\)", site).group(1, 2) for site in sites}
    first = fn.__code__.co_firstlineno
    assert where == {(__file__, str(first + 1)), (__file__, str(first + 2))}, sites
    package = sp.__file__.rsplit("__init__", 1)[0]
    assert package not in jax.jit(model.apply).lower(params, x).as_text(debug_info=True)


def _name_stacks(closed_jaxpr):
    return {str(e.source_info.name_stack) for e in closed_jaxpr.jaxpr.eqns}


def test_eager_apply_names_ops_staged_inside_it_with_the_whole_scope_path():
    # Eager ops carry no metadata, so an eager apply opens no jax.named_scope; a computation staged
    # out inside it (a jit, a scan) still gets the full scope path on its ops.
    seen = {}

    def fn(x):
        with sp.scope("outer"):
            def inner(y):
                with sp.scope("inner"):
                    return jnp.sin(y)
            seen["jaxpr"] = jax.make_jaxpr(inner)(x)
            return inner(x)

    model = sp.transform(fn)
    out = model.apply({}, jnp.ones(3))
    np.testing.assert_allclose(out, np.sin(np.ones(3)))
    assert _name_stacks(seen["jaxpr"]) == {"outer/inner"}
    # Staged out as a whole, the outer scope names the enclosing ops and the inner trace carries
    # only its own label, as JAX nests name stacks (jit(inner) would lower to outer/.../inner).
    seen.clear()
    outer = jax.make_jaxpr(model.apply)({}, jnp.ones(3))
    assert _name_stacks(seen["jaxpr"]) == {"inner"}
    assert _name_stacks(outer) == {"outer/inner_1"}  # the second entry of "inner"


def test_op_names_are_the_same_in_every_trace_and_under_an_enclosing_named_scope():
    # A staged scope entry reuses the name stack it built for the same (enclosing stack, label) in
    # an earlier trace: each trace still gets exactly its own names.
    def fn(x):
        for _ in range(2):
            with sp.scope("layer"):
                x = jnp.sin(x)
        with sp.name_scope("head"):
            return jnp.cos(x)

    model = sp.transform(fn)
    expected = {"layer/sin", "layer_1/sin", "head/cos"}
    for _ in range(2):
        jaxpr = jax.make_jaxpr(model.apply)({}, jnp.ones(3))
        assert {f"{e.source_info.name_stack}/{e.primitive}" for e in jaxpr.jaxpr.eqns} == expected

    def enclosed(x):
        with jax.named_scope("outer"):
            return model.apply({}, x)

    jaxpr = jax.make_jaxpr(enclosed)(jnp.ones(3))
    assert {f"{e.source_info.name_stack}/{e.primitive}" for e in jaxpr.jaxpr.eqns} == {
        f"outer/{name}" for name in expected}
    text = jax.jit(model.apply).lower({}, jnp.ones(3)).as_text(debug_info=True)
    assert all(name in text for name in expected)

def test_op_locations_name_the_function_being_lowered_each_time():
    # A scope's ops keep the sum of their name stack with the enclosing function's (jit(f)/layer):
    # lowering the same model inside another function, or under grad, names that function.
    def fn(x):
        with sp.scope("layer"):
            return jnp.sin(x) * sp.get_param("w", [3])

    model = sp.transform(fn)
    x = jnp.ones(3)
    params = model.init(KEY, x)

    def first(p, x):
        return model.apply(p, x)

    def second(p, x):
        return model.apply(p, x)

    def names(f, *args):
        text = jax.jit(f).lower(*args).as_text(debug_info=True)
        return {n for n in re.findall(r'loc\("([^"]*)"', text) if "/" in n and "." not in n}

    for _ in range(2):
        assert names(first, params, x) == {"jit(first)/layer/sin", "jit(first)/layer/mul"}
        assert names(second, params, x) == {"jit(second)/layer/sin", "jit(second)/layer/mul"}

    def twin(p, x):  # the same model by hand, with jax.named_scope
        with jax.named_scope("layer"):
            return jnp.sin(x) * p["layer"]["w"]

    grads = names(jax.grad(lambda p, x: first(p, x).sum()), params, x)
    assert grads == names(jax.grad(lambda p, x: twin(p, x).sum()), params, x)
    assert "jit(<lambda>)/transpose(jvp(layer))/mul" in grads


def test_staged_name_stacks_equal_hash_and_pickle_as_jaxs_own():
    # The name stacks scopes put on staged ops are JAX's NameStack (a subclass keeping its string):
    # they compare, hash and pickle as the plain class with the same entries.
    import pickle

    from jax._src.source_info_util import NameStack

    def fn(x):
        with sp.scope("a"):
            with sp.scope("b"):
                return jnp.sin(x)

    (eqn,) = jax.make_jaxpr(sp.transform(fn).apply)({}, jnp.ones(2)).jaxpr.eqns
    stack = eqn.source_info.name_stack
    plain = NameStack(stack.stack)
    assert isinstance(stack, NameStack) and str(stack) == str(plain) == "a/b"
    assert stack == plain and plain == stack and hash(stack) == hash(plain)
    assert stack != NameStack(plain.stack[:1])
    assert type(pickle.loads(pickle.dumps(stack))) is NameStack
    outer = NameStack().extend("jit(f)")
    assert str(outer + stack) == "jit(f)/a/b" and (outer + stack) is (outer + stack)
    assert str(stack + outer) == "a/b/jit(f)"


def test_a_named_scope_spelled_as_a_transform_does_not_lend_its_name_stack_to_that_transform():
    # jax.named_scope("jvp") and jax.jvp both put an entry "jvp" on the name stack (JAX spells them
    # jvp/... and jvp(...)): a scope entered under one is not given the stack built under the other.
    def fn(x):
        with sp.scope("layer"):
            return jnp.sin(x)

    model = sp.transform(fn)

    def named(x):
        with jax.named_scope("jvp"):
            return model.apply({}, x)

    def stacks(jaxpr):
        return {str(e.source_info.name_stack) for e in jaxpr.jaxpr.eqns}

    for _ in range(2):
        assert stacks(jax.make_jaxpr(named)(1.0)) == {"jvp/layer"}
        jvp = jax.make_jaxpr(lambda x: jax.jvp(lambda y: model.apply({}, y), (x,), (1.0,)))(1.0)
        assert stacks(jvp) == {"jvp(layer)"}


def test_jitted_apply_op_names_follow_scope_paths():
    def fn(x):
        with sp.scope("a"):
            with sp.scope("b"):
                x = jnp.sin(x)
            x = jnp.cos(x)
        with sp.scope("a"):  # re-entered: the name scope is a_1
            return jnp.exp(x)

    stacks = [str(e.source_info.name_stack)
              for e in jax.make_jaxpr(sp.transform(fn).apply)({}, jnp.ones(2)).jaxpr.eqns]
    assert stacks == ["a/b", "a", "a_1"]


# --- init never runs the model's arithmetic -------------------------------------------------------


def test_init_never_runs_the_forward_pass():
    fired = []

    def fn(x):
        w = sp.get_param("w", [3, 3])
        y = x @ w
        jax.debug.callback(lambda v: fired.append(np.asarray(v)), y)
        return y

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones((2, 3)))
    jax.effects_barrier()
    assert fired == []
    model.apply(params, jnp.ones((2, 3)))
    jax.effects_barrier()
    assert len(fired) == 1
    np.testing.assert_allclose(fired[0], jnp.ones((2, 3)) @ params["w"], rtol=1e-6)


def test_init_succeeds_for_a_model_whose_forward_would_raise():
    def boom(v):
        raise ValueError("forward pass evaluated")

    def fn(x):
        w = sp.get_param("w", [4])
        return jax.pure_callback(boom, jax.ShapeDtypeStruct((4,), jnp.float32), x * w)

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones(4))
    assert params["w"].shape == (4,)
    with pytest.raises(Exception, match="forward pass evaluated"):
        jax.block_until_ready(model.apply(params, jnp.ones(4)))


def test_init_of_a_model_with_a_huge_forward_is_abstract():
    def fn(x):
        w = sp.get_param("w", [x.shape[-1], 8])
        return (x @ x.T) @ (x @ w)  # (60000, 60000) intermediates: 14 GB if evaluated

    x = jax.ShapeDtypeStruct((60_000, 16), jnp.float32)
    params = sp.transform(fn).init(KEY, x)
    chex.assert_shape(params["w"], (16, 8))


# --- grouped init ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 7, 40])
def test_jitted_init_gives_the_eager_values(n):
    # A staged-out init unstacks each group with index kernels XLA can reuse (see _materialize);
    # the values must be the eager ones, for any group size.
    def fn(x):
        for i in range(n):
            with sp.scope(f"layer_{i}"):
                x = x @ sp.get_param("w", (3, 3)) + sp.get_param("b", (3,), init=sp.initializers.random_normal())
        return x

    model = sp.transform(fn)
    x = jnp.ones((2, 3))
    eager = sp.flatten(model.init(KEY, x))
    jitted = sp.flatten(jax.jit(model.init)(KEY, x))
    assert eager.keys() == jitted.keys() and len(eager) == 2 * n
    for name in eager:
        # The same bits: eager init draws each group in one compiled call too. (A wrong unstack
        # index would hand over another parameter's values entirely.)
        np.testing.assert_array_equal(jitted[name], eager[name], err_msg=name)


def test_an_ensemble_init_by_eager_vmap_over_keys_gives_each_keys_init_bits():
    # A parameter's value depends only on (key, name, shape, dtype, initializer): the ensemble's
    # member i is init(keys[i]) bit for bit, also for normal-family draws (erf_inv), whose op-by-op
    # batched values differed from the compiled ones by an ULP.
    def fn():
        sp.get_param("w", (3, 4), init=jax.nn.initializers.normal(0.1))
        sp.get_param("v", (3, 4), init=sp.initializers.random_normal(stddev=0.1))
        sp.get_param("t", (5, 4), init=sp.initializers.truncated_normal(stddev=0.1))
        sp.get_param("b", (4,), init=sp.initializers.zeros)
        with sp.scope("group"):  # one vmapped draw for the group
            for i in range(4):
                sp.get_param(f"k{i}", (2, 2), init=sp.initializers.variance_scaling())

    model = sp.transform(fn)
    keys = jax.random.split(KEY, 3)
    ensemble = sp.flatten(jax.vmap(model.init)(keys))
    staged = sp.flatten(jax.jit(jax.vmap(model.init))(keys))
    for i in range(3):
        single = sp.flatten(model.init(keys[i]))
        for name, value in single.items():
            np.testing.assert_array_equal(ensemble[name][i], value, err_msg=f"{name} of member {i}")
            np.testing.assert_array_equal(staged[name][i], value, err_msg=f"{name} of member {i}")


FILLS = [sp.initializers.zeros, sp.initializers.ones, jax.nn.initializers.zeros,
         jax.nn.initializers.ones, sp.initializers.constant(0.1), jax.nn.initializers.constant(-2.7),
         sp.initializers.constant(3)]


@pytest.mark.parametrize("dtype, crowded", [(jnp.float32, False), (jnp.bfloat16, False),
                                            (jnp.float16, False), (jnp.int32, False),
                                            (jnp.bool_, False), (jnp.float32, True)])
def test_constant_fills_compile_nothing_in_an_eager_init_and_give_the_jitted_bits(dtype, crowded,
                                                                                  monkeypatch):
    # Zeros, ones and scalar constants ignore the key: the first eager init of a shape fills them with
    # NumPy and compiles nothing (it compiled a draw, ~50 ms each). The bits are those of
    # jax.jit(init) and of the compiled draws later inits use. `crowded`: the record of filled groups
    # is 3 short of its bound when the first init starts (a long process); it must keep this init's
    # groups (it once cleared itself midway, and the third init compiled what the second should have).
    from scoped_params import _materialize

    if crowded:
        monkeypatch.setattr(_materialize, "_FILLED", {
            ("other", i): None for i in range(_materialize._DRAWS_MAX - 3)})
    # A constant the dtype cannot hold is TF's error (0.1 for int32, 3 for bool): exact ones there.
    exact = {jnp.int32: {4: sp.initializers.constant(1)},
             jnp.bool_: {4: sp.initializers.constant(1), 6: sp.initializers.constant(0)}}.get(dtype, {})
    fills = [exact.get(i, init) for i, init in enumerate(FILLS)]

    def fn(x):
        for i, init in enumerate(fills):
            with sp.scope(f"layer_{i}"):
                sp.get_param("w", (x.shape[-1] + i, 2), init=init, dtype=dtype)
                sp.get_param("b", (x.shape[-1] + i,), init=init, dtype=dtype)
        return x

    model = sp.transform(fn)
    model.init(KEY, jax.ShapeDtypeStruct((1, 1), jnp.float32))  # a constant's scalar, once per dtype
    x = jax.ShapeDtypeStruct((1, 13 + 7 * np.dtype(dtype).itemsize), jnp.float32)  # new shapes
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    def init_counting_compiles():
        compiles.clear()
        jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            return sp.flatten(model.init(KEY, x)), len(compiles)
        finally:
            jax.monitoring.unregister_event_duration_listener(listener)

    eager, compiled = init_counting_compiles()
    assert compiled == 0
    # Seen again, a group is drawn by its cached compiled call (compiled now, once), as any other.
    again, _ = init_counting_compiles()
    third, compiled = init_counting_compiles()
    assert compiled == 0
    jitted = sp.flatten(jax.jit(model.init)(KEY, x))
    assert len(eager) == 2 * len(FILLS)
    for name, value in eager.items():
        assert value.dtype == jitted[name].dtype == again[name].dtype == dtype, name
        for other in (jitted, again, third):
            assert np.asarray(value).tobytes() == np.asarray(other[name]).tobytes(), name


def test_a_constant_fill_that_cannot_be_made_raises_as_the_initializer_does():
    def fn():  # TF 1.x fills the rest of a shape with the last value, but refuses too many
        sp.get_param("w", (2, 2), init=sp.initializers.constant([1.0, 2.0, 3.0, 4.0, 5.0]))

    with pytest.raises(ValueError, match="5 values cannot fill shape .2, 2.(.|\n)*initializer of 'w'"):
        sp.transform(fn).init(KEY)


def test_grouped_init_gives_4000_distinct_values_equal_to_per_name_calls():
    calls = []

    def counting_glorot(key, shape, dtype):
        calls.append(shape)
        return sp.initializers.glorot_uniform()(key, shape, dtype)

    def fn():
        for i in range(40):
            with sp.scope(f"block{i}"):
                for j in range(100):
                    sp.get_param(f"w{j}", [8], init=counting_glorot)

    flat = sp.flatten(sp.transform(fn).init(KEY))
    assert len(flat) == 4000
    assert len(calls) == 1  # one vectorised initializer call for the whole group
    stacked = np.stack([np.asarray(v) for v in flat.values()])
    assert len(np.unique(stacked, axis=0)) == 4000
    for name in ["block0/w0", "block0/w1", "block7/w42", "block39/w99", "block20/w0"]:
        expected = sp.initializers.glorot_uniform()(param_key(KEY, name), (8,), jnp.float32)
        np.testing.assert_array_equal(flat[name], expected)


def test_grouped_and_single_initialization_agree():
    def fn(n):
        for i in range(n):
            sp.get_param(f"p{i}", [5, 3])

    many = sp.flatten(sp.transform(fn).init(KEY, 4))
    one = sp.flatten(sp.transform(fn).init(KEY, 1))
    np.testing.assert_array_equal(many["p0"], one["p0"])



def _mixed_shapes(x):
    # Distinct shapes, jax's and our initializers: op by op, each would be a dozen dispatches.
    for i in range(6):
        with sp.scope(f"layer_{i}"):
            w = sp.get_param("w", (3, i + 2), init=jax.nn.initializers.glorot_uniform())
            b = sp.get_param("b", (i + 2,), init=sp.initializers.truncated_normal(stddev=0.1))
            v = sp.get_param("v", (i + 2, 3), init=jax.nn.initializers.normal(0.02))
            x = jnp.tanh(x @ w + b) @ v
    with sp.scope("same"):  # a group of 5: one vmapped draw
        for j in range(5):
            sp.get_param(f"k{j}", (4, 4))  # the default initializer, sp.initializers' Glorot
    return x


def test_eager_init_draws_each_group_of_a_pure_initializer_in_one_cached_compiled_call(monkeypatch):
    monkeypatch.setattr(_materialize, "_DRAWS", {})
    model, x = sp.transform(_mixed_shapes), jnp.ones((2, 3))
    first = sp.flatten(model.init(KEY, x))
    draws = dict(_materialize._DRAWS)
    assert len(draws) == 6 * 3 + 1  # one per (initializer, shape, dtype, count)
    other = sp.flatten(model.init(jax.random.key(7), x))
    assert _materialize._DRAWS == draws  # the same compiled calls, none traced again
    assert all(d._cache_size() == 1 for d in draws.values())
    # The bits jax.jit(init) gives; within rounding of each initializer called op by op on the
    # parameter's key (XLA may fold a scale into the draw); a new key, new values.
    jitted = sp.flatten(jax.jit(model.init)(KEY, x))
    for name, value in first.items():
        np.testing.assert_array_equal(value, jitted[name], err_msg=name)
        assert not np.array_equal(value, other[name]), name
    np.testing.assert_allclose(first["layer_3/w"], jax.nn.initializers.glorot_uniform()(
        param_key(KEY, "layer_3/w"), (3, 5), jnp.float32), rtol=1e-6)
    np.testing.assert_allclose(first["same/k2"], sp.initializers.glorot_uniform()(
        param_key(KEY, "same/k2"), (4, 4), jnp.float32), rtol=1e-6)
    # jax.jit(init) stages its draws: the cache is for eager inits only.
    assert _materialize._DRAWS == draws



def test_the_compiled_draw_cache_is_bounded_oldest_out_first(monkeypatch):
    monkeypatch.setattr(_materialize, "_DRAWS", {})
    monkeypatch.setattr(_materialize, "_DRAWS_MAX", 4)
    params = sp.transform(_mixed_shapes).init(KEY, jnp.ones((2, 3)))
    assert len(_materialize._DRAWS) == 4
    assert [shape for _, shape, _, _, _ in _materialize._DRAWS] == [(3, 7), (7,), (7, 3), (4, 4)]
    assert len(sp.flatten(params)) == 6 * 3 + 5

def test_any_other_initializer_runs_eagerly_as_written_on_every_init(monkeypatch):
    monkeypatch.setattr(_materialize, "_DRAWS", {})
    calls, table = [], np.zeros((2, 2), np.float32)

    def numpy_random(key, shape, dtype):  # ignores its key: a cached executable would freeze it
        calls.append(shape)
        return np.random.default_rng().normal(size=shape).astype(dtype)

    def fn():
        return (sp.get_param("a", (2, 3), init=numpy_random),
                sp.get_param("c", (2, 2), init=sp.initializers.constant(table)))  # captures an array

    model = sp.transform(fn)
    one = model.init(KEY)
    table += 1.0
    two = model.init(KEY)
    assert calls == [(2, 3), (2, 3)] and not np.array_equal(one["a"], two["a"])
    np.testing.assert_array_equal(one["c"], np.zeros((2, 2)))  # a copy, not a view of `table`
    np.testing.assert_array_equal(two["c"], np.ones((2, 2)))
    assert _materialize._DRAWS == {}


def test_a_compiled_draw_that_fails_raises_the_eager_error_naming_the_parameter(monkeypatch):
    monkeypatch.setattr(_materialize, "_DRAWS", {})

    def fn():
        return sp.get_param("bias", (4,), init=jax.nn.initializers.glorot_uniform())  # needs 2-D

    with pytest.raises(ValueError, match="1-dimensional") as raised:
        sp.transform(fn).init(KEY)
    assert "raised by the initializer of 'bias'" in "\n".join(getattr(raised.value, "__notes__", []))
    assert _materialize._DRAWS == {}


# --- tracing is per call: threads -----------------------------------------------------------------


def _thread_model(i):
    """Model ``i``: its own names and nesting (same shapes, so initializers compile once)."""

    def fn(x, barrier):
        with sp.scope(f"net{i}"):
            for depth in range(3):
                barrier.wait(timeout=30)  # every thread is inside its own scopes at once
                with sp.scope(None, default_name=f"layer{i % 3}"), contextlib.ExitStack() as stack:
                    for _ in range(depth if i % 2 else 0):  # different nesting per model
                        stack.enter_context(sp.scope(f"pad{i}"))
                    x = jnp.tanh(x @ sp.get_param("w", [x.shape[-1], x.shape[-1]]))
        return x
    return sp.transform(fn)


def _run_threads(target, n):
    results, errors = [None] * n, []

    def run(i):
        try:
            results[i] = target(i)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return results


class _SkipBarrier:
    def wait(self, timeout=None):
        pass


def test_eight_threads_tracing_different_models_get_exactly_their_own_names():
    barrier = threading.Barrier(8)
    x = jnp.ones((1, 4))

    class Once:
        """All threads meet only at the first layer (the depths differ)."""

        def __init__(self):
            self.done = False

        def wait(self, timeout=None):
            if not self.done:
                self.done = True
                barrier.wait(timeout)

    results = _run_threads(lambda i: _thread_model(i).init(KEY, x, Once()), 8)
    for i, params in enumerate(results):
        layer, pad = f"net{i}/layer{i % 3}", f"pad{i}"
        if i % 2:
            expected = {f"{layer}/w", f"{layer}_1/{pad}/w", f"{layer}_2/{pad}/{pad}/w"}
        else:
            expected = {f"{layer}/w", f"{layer}_1/w", f"{layer}_2/w"}
        assert set(sp.flatten(params)) == expected


def test_the_same_model_traced_in_many_threads_at_once():
    model = _thread_model(2)
    x = jnp.ones((1, 4))
    params = model.init(KEY, x, _SkipBarrier())
    expected = model.apply(params, x, _SkipBarrier())
    barrier = threading.Barrier(8)

    def work(i):
        p = model.init(KEY, x, barrier)
        out = jax.jit(model.apply, static_argnums=2)(p, x + 0.0 * i, _SkipBarrier())
        return p, out

    for p, out in _run_threads(work, 8):
        chex.assert_trees_all_equal(p, params)
        chex.assert_trees_all_close(out, expected, rtol=1e-6)


def test_imported_first_inside_a_jit_eager_and_staged_applies_still_tell_apart():
    # The eager trace is read where no trace is open, whatever is tracing when the library loads.
    script = textwrap.dedent("""
        import importlib, jax, jax.numpy as jnp

        def load(x):
            global sp
            sp = importlib.import_module("scoped_params")
            return x

        jax.jit(load)(1.0)
        assert not sp._scope.staging()

        def fn(x):
            with sp.scope("layer"):
                assert sp._scope.staging() == isinstance(x, jax.core.Tracer)
                return jnp.sin(x)

        model = sp.transform(fn)
        model.apply({}, jnp.ones(2))
        names = {str(e.source_info.name_stack) for e in jax.make_jaxpr(model.apply)({}, jnp.ones(2)).eqns}
        assert names == {"layer"}, names
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# --- init pauses the cyclic garbage collector (its trace's objects are freed by reference counting) --


def _collector_state_seen_by_the_model():
    seen = []

    def fn(x):
        seen.append(gc.isenabled())
        return x * sp.get_param("w", (), init=jax.nn.initializers.ones)

    return seen, sp.transform(fn)


def test_init_and_specs_run_the_model_with_the_collector_paused_and_restore_it():
    assert gc.isenabled()
    seen, model = _collector_state_seen_by_the_model()
    model.init(KEY, jnp.ones(()))
    model.specs(jnp.ones(()))
    assert seen == [False, False] and gc.isenabled()
    gc.disable()
    try:
        model.init(KEY, jnp.ones(()))
        assert not gc.isenabled()  # off before init: left off
    finally:
        gc.enable()



def test_a_traced_apply_runs_with_the_collector_paused_and_an_eager_one_does_not():
    seen, model = _collector_state_seen_by_the_model()
    params = {"w": jnp.ones(())}
    seen.clear()
    model.apply(params, jnp.ones(()))  # eager: ops run one by one, nothing to pause for
    jax.jit(model.apply)(params, jnp.ones(()))
    jax.grad(model.apply)(params, jnp.ones(()))
    assert seen == [True, False, False] and gc.isenabled()
    stateful = sp.transform_with_state(lambda x: (seen.append(gc.isenabled()), x)[1])  # _run's path
    jax.jit(stateful.apply)({}, {}, jnp.ones(()))
    assert seen[-1] is False and gc.isenabled()

    def raising(x):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        jax.jit(sp.transform(raising).apply)({}, jnp.ones(()))
    assert gc.isenabled()

def test_the_collector_comes_back_when_init_raises():
    def fn(x):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        sp.transform(fn).init(KEY, jnp.ones(()))
    assert gc.isenabled()


def test_overlapping_inits_restore_the_collector_when_the_last_one_ends():
    inner_seen, inner = _collector_state_seen_by_the_model()
    after_inner = []

    def outer_fn(x):  # an init inside a model's init
        inner.init(KEY, x)
        after_inner.append(gc.isenabled())
        return x

    sp.transform(outer_fn).init(KEY, jnp.ones(()))
    assert inner_seen == [False] and after_inner == [False] and gc.isenabled()

    both_inside = threading.Barrier(2, timeout=30)

    def fn(x):
        both_inside.wait()  # the two threads' inits overlap here
        return x

    _run_threads(lambda i: sp.transform(fn).init(KEY, jnp.ones(())), 2)
    assert gc.isenabled()

