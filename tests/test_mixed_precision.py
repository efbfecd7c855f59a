"""sp.mixed_precision: float32 storage, bfloat16 compute, float32 gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import scoped_params as sp
from scoped_params import mixed_precision as mp


def mlp(x):
    with mp.scope("model", compute_dtype=jnp.bfloat16):
        h = x.astype(jnp.bfloat16)
        h = sp.layers.dense(h, 16, activation=jax.nn.relu)
        h = sp.layers.batch_normalization(h, training=False)
        scale = sp.get_param("scale", (), sp.initializers.ones)  # scope dtype: bfloat16 compute
        seen.append((h.dtype, scale.dtype))
        return (sp.layers.dense(h, 3) * scale).astype(jnp.float32)


seen = []
X = np.random.RandomState(0).randn(4, 5).astype(np.float32)


def test_params_are_stored_in_float32_and_the_model_computes_in_bfloat16():
    model = sp.transform(mlp)
    params = model.init(jax.random.key(0), X)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {np.dtype(np.float32)}
    assert set(sp.flatten(params)) == {
        "model/dense/kernel", "model/dense/bias", "model/dense_1/kernel", "model/dense_1/bias",
        "model/scale", "model/batch_normalization/gamma", "model/batch_normalization/beta",
        "model/batch_normalization/moving_mean", "model/batch_normalization/moving_variance"}
    seen.clear()
    out = jax.jit(model.apply)(params, X)
    assert seen == [(jnp.bfloat16, jnp.bfloat16)]
    assert out.dtype == jnp.float32
    # Same numbers as computing by hand in bfloat16 from the float32 weights.
    p = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), sp.flatten(params))
    h = jax.nn.relu(X.astype(jnp.bfloat16) @ p["model/dense/kernel"] + p["model/dense/bias"])
    bn = (h.astype(jnp.float32) / np.sqrt(1 + 1e-3)).astype(jnp.bfloat16)
    ref = ((bn @ p["model/dense_1/kernel"] + p["model/dense_1/bias"]) * p["model/scale"])
    np.testing.assert_allclose(out, ref.astype(jnp.float32), rtol=2e-2, atol=2e-2)


def test_gradients_reach_the_float32_master_weights():
    model = sp.transform(mlp)
    params = model.init(jax.random.key(0), X)
    opt = optax.sgd(0.1)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(lambda p: jnp.mean(model.apply(p, X) ** 2))(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, grads

    new_params, _, grads = step(params, state)
    assert grads["model"]["dense"]["kernel"].dtype == jnp.float32
    assert new_params["model"]["dense"]["kernel"].dtype == jnp.float32
    assert np.abs(grads["model"]["dense"]["kernel"]).sum() > 0


def test_getter_passes_other_dtypes_through_and_nests_with_user_getters():
    names = []

    def spy(next_getter, name, *args, **kwargs):
        names.append((name, np.dtype(kwargs["dtype"]).name))
        return next_getter(name, *args, **kwargs)

    def fn(x):
        with mp.scope("m", compute_dtype=jnp.float16, custom_getter=spy):
            a = sp.get_param("a", (2,))
            b = sp.get_param("b", (2,), dtype=jnp.float32)
            c = sp.get_param("c", (2,), dtype=jnp.int32)
        return a, b, c

    params = sp.transform(fn).init(jax.random.key(0), X)
    assert [params["m"][k].dtype for k in "abc"] == [jnp.float32, jnp.float32, jnp.int32]
    a, b, c = sp.transform(fn).apply(params, X)
    assert (a.dtype, b.dtype, c.dtype) == (jnp.float16, jnp.float32, jnp.int32)
    assert names[:3] == [("m/a", "float16"), ("m/b", "float32"), ("m/c", "int32")]


def test_cast_floating_keeps_integer_leaves():
    tree = {"w": jnp.ones(2), "ids": jnp.arange(2)}
    cast = mp.cast_floating(tree, jnp.bfloat16)
    assert cast["w"].dtype == jnp.bfloat16 and cast["ids"].dtype == tree["ids"].dtype
    with pytest.raises(TypeError):
        mp.float32_storage_getter(jnp.int8)


def test_the_master_copy_is_float32_when_an_outer_getter_passes_dtype_by_position():
    # TF's getter order is getter(name, shape=None, dtype=None, initializer=None, ...); a getter that
    # forwards shape and dtype positionally is a valid TF 1.x getter. Before: the float16 request
    # reached the store unseen, and 'm/w' was silently stored in float16.
    def passthrough(getter, name, shape=None, dtype=None, *args, **kwargs):
        return getter(name, shape, dtype, *args, **kwargs)

    def fn(x):
        with mp.scope("m", compute_dtype=jnp.float16, custom_getter=passthrough):
            w = sp.get_param("w", (5, 2))
            b = sp.get_param("b", (2,), dtype=jnp.float32)
        return x.astype(w.dtype) @ w, b

    model = sp.transform(fn)
    params = model.init(jax.random.key(0), X)
    assert (params["m"]["w"].dtype, params["m"]["b"].dtype) == (jnp.float32, jnp.float32)
    y, b = model.apply(params, X)
    assert (y.dtype, b.dtype) == (jnp.float16, jnp.float32)


def test_cast_floating_casts_arrays_and_leaves_python_scalars_alone():
    # A Python float is no parameter: weakly typed, it already computes in the dtype of the arrays it
    # meets (as jmp's cast_to_compute leaves it). Before: AttributeError 'float' has no 'astype'.
    tree = {"lr": 1e-3, "w": jnp.ones(2), "m": np.ones(2, np.float32), "s": np.float32(2.0),
            "step": 3, "on": True}
    cast = mp.cast_floating(tree, jnp.bfloat16)
    assert cast["lr"] == 1e-3 and type(cast["lr"]) is float
    assert (cast["step"], cast["on"]) == (3, True)
    assert cast["w"].dtype == cast["m"].dtype == cast["s"].dtype == jnp.bfloat16
    jitted = jax.jit(lambda t: mp.cast_floating(t, jnp.float16))({"w": jnp.ones(2), "n": jnp.arange(2)})
    assert (jitted["w"].dtype, jitted["n"].dtype) == (jnp.float16, jnp.arange(2).dtype)


def test_mixed_precision_scope_refuses_dtype_and_points_to_compute_dtype():
    # Before: Python's own "got multiple values for keyword argument 'dtype'".
    def fn(x):
        with mp.scope("m", dtype=jnp.float16):
            return x

    with pytest.raises(TypeError, match=r"(?s)sp.mixed_precision.scope\('m', dtype=float16\): the "
                                        r"scope's dtype is compute_dtype=.*float32.*fix: "
                                        r"compute_dtype=jnp.float16"):
        sp.transform(fn).init(jax.random.key(0), 1.0)


def test_tf_dtypes_are_accepted_as_compute_dtype_and_by_cast_floating():
    # Before: np.dtype(tf.bfloat16) -> "Cannot interpret 'tf.bfloat16' as a data type".
    tf = pytest.importorskip("tensorflow")

    def fn(x):
        with mp.scope("m", compute_dtype=tf.bfloat16):
            w = sp.get_param("w", (2,))
            v = sp.get_param("v", (2,), dtype=tf.bfloat16)
            seen.append((w.dtype, v.dtype))
            return x

    seen.clear()
    params = sp.transform(fn).init(jax.random.key(0), 1.0)
    assert seen == [(jnp.bfloat16, jnp.bfloat16)]
    assert params["m"]["w"].dtype == params["m"]["v"].dtype == jnp.float32
    getter = mp.float32_storage_getter(tf.float16)
    with pytest.raises(TypeError, match=r"compute_dtype must be a float dtype, got int32"):
        mp.float32_storage_getter(tf.int32)
    assert callable(getter)
    assert mp.cast_floating({"w": jnp.ones(2)}, tf.bfloat16)["w"].dtype == jnp.bfloat16


def test_a_bad_dtype_inside_a_mixed_precision_scope_gets_get_params_own_message():
    # Before: numpy's bare "data type 'nodtype' not understood" from the getter.
    def fn(x):
        with mp.scope("m"):
            return sp.get_param("w", (2,), dtype="nodtype")

    with pytest.raises(TypeError, match=r"(?s)dtype='nodtype' of 'm/w'.*fix: "):
        sp.transform(fn).init(jax.random.key(0), 1.0)


def test_mixed_precision_scope_refusing_an_unknown_dtype_shows_it_as_written():
    # Before: "fix: compute_dtype=jnp.'nodtype'".
    def fn(x):
        with mp.scope("m", dtype="nodtype"):
            return x

    with pytest.raises(TypeError, match=r"(?s)sp.mixed_precision.scope\('m', dtype='nodtype'\).*"
                                        r"fix: compute_dtype= a float dtype such as jnp.bfloat16 "
                                        r"\('nodtype' is not a dtype JAX has\)") as info:
        sp.transform(fn).init(jax.random.key(0), 1.0)
    assert "jnp.'" not in str(info.value)


# Loss scaling: TF's LossScaleOptimizer as pure values (jmp's design).

def _tf_flags(n=60, seed=0):
    return [bool(f) for f in np.random.RandomState(seed).rand(n) > 0.3]


def _test_dynamic_loss_scale_follows_tf_dynamic_loss_scale_step_by_step():
    # tf.compat.v1.mixed_precision.DynamicLossScale is the loss scale of TF 1.14+'s
    # enable_mixed_precision_graph_rewrite(opt, loss_scale="dynamic"): x multiplier after
    # increment_period finite steps, / multiplier (floor 1) on every non-finite one, an increase to
    # inf in float32 not taken.
    tf = pytest.importorskip("tensorflow")
    adjust = jax.jit(lambda s, finite: s.adjust(finite))
    for initial, period, flags in [(8.0, 3, _tf_flags()), (2.0 ** 126, 1, [True] * 4)]:
        ref = tf.compat.v1.mixed_precision.DynamicLossScale(
            initial_loss_scale=initial, increment_period=period, multiplier=2.0)
        ours = mp.DynamicLossScale(initial, period=period, factor=2.0)
        for step, finite in enumerate(flags):
            grads = {"w": jnp.array([1.0, 2.0 if finite else np.inf])}
            _, should_apply = ref.update([tf.constant(np.asarray(grads["w"]))])
            assert bool(mp.all_finite(grads)) == bool(should_apply) == finite
            ours = adjust(ours, mp.all_finite(grads))
            assert float(ours.loss_scale) == float(ref()), (initial, step)
    assert float(ours.loss_scale) == 2.0 ** 127  # 2**128 is inf in float32: kept, as TF keeps it


def test_dynamic_loss_scale_follows_tf_dynamic_loss_scale_step_by_step():
    # TF's eager mode (another test module turns TF's eager execution off globally).
    pytest.importorskip("tensorflow")
    from tensorflow.python.eager import context

    with context.eager_mode():
        _test_dynamic_loss_scale_follows_tf_dynamic_loss_scale_step_by_step()


def _test_dynamic_loss_scale_and_skipped_steps_follow_keras_loss_scale_optimizer():
    # tf.keras.mixed_precision.LossScaleOptimizer (tf_keras, TF 2.x's successor of the above) skips
    # the variable update on a non-finite step; select_tree does the same in a jitted step.
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    var = tf.Variable([1.0, 2.0])
    ref = tf_keras.mixed_precision.LossScaleOptimizer(
        tf_keras.optimizers.SGD(0.5), initial_scale=4.0, dynamic_growth_steps=2)
    opt = optax.sgd(0.5)

    @jax.jit
    def step(params, opt_state, loss_scale, grads):
        finite = mp.all_finite(grads)
        updates, new_opt_state = opt.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        params, opt_state = mp.select_tree(finite, (new_params, new_opt_state), (params, opt_state))
        return params, opt_state, loss_scale.adjust(finite)

    params = jnp.array([1.0, 2.0])
    opt_state, loss_scale = opt.init(params), mp.DynamicLossScale(4.0, period=2)
    for finite in [True, False, True, True, True, False, False, False, True, True, True]:
        grads = np.array([0.25, 0.5 if finite else np.nan], np.float32)
        ref.apply_gradients([(tf.constant(grads), var)])
        params, opt_state, loss_scale = step(params, opt_state, loss_scale, grads)
        assert float(loss_scale.loss_scale) == float(ref.loss_scale)
        np.testing.assert_array_equal(params, var.numpy())


def test_dynamic_loss_scale_and_skipped_steps_follow_keras_loss_scale_optimizer():
    # TF's eager mode (another test module turns TF's eager execution off globally).
    pytest.importorskip("tensorflow")
    from tensorflow.python.eager import context

    with context.eager_mode():
        _test_dynamic_loss_scale_and_skipped_steps_follow_keras_loss_scale_optimizer()


def test_dynamic_loss_scale_follows_contrib_exponential_update_loss_scale_manager():
    # TF 1.x's tf.contrib.mixed_precision.ExponentialUpdateLossScaleManager(init_loss_scale,
    # incr_every_n_steps, decr_every_n_nan_or_inf=2, incr_ratio=2, decr_ratio=0.8) is gone from
    # TF 2. Its rule, from tensorflow/contrib/mixed_precision/python/loss_scale_manager.py (TF 1.15),
    # computed by hand: x incr_ratio after incr_every_n_steps consecutive finite steps; x decr_ratio
    # (floor 1) after decr_every_n_nan_or_inf non-finite ones since the last change, consecutive
    # or not (a finite step resets only the good count); any change resets both counts.
    f32 = np.float32
    s = mp.DynamicLossScale(8.0, period=2, factor=2.0, decrease_period=2, decrease_factor=0.8)
    assert (s.good_steps, s.bad_steps) == (0, 0)
    down1 = f32(16) * f32(0.8)  # float32 arithmetic, as TF's float32 loss_scale variable
    down2 = down1 * f32(0.8)
    expected = [  # finite, (loss scale, good steps, bad steps) after the step
        (True, (8.0, 1, 0)), (True, (16.0, 0, 0)),
        (False, (16.0, 0, 1)), (True, (16.0, 1, 1)), (False, (down1, 0, 0)),
        (False, (down1, 0, 1)), (False, (down2, 0, 0)),
        (True, (down2, 1, 0)), (True, (down2 * 2, 0, 0))]
    adjust = jax.jit(lambda s, finite: s.adjust(finite))
    for step, (finite, want) in enumerate(expected):
        s = adjust(s, finite)
        got = (s.loss_scale.item(), s.good_steps.item(), s.bad_steps.item())
        assert got == (float(f32(want[0])), want[1], want[2]), step
    s = mp.DynamicLossScale(1.5, period=2, decrease_period=2, decrease_factor=0.8)
    scales = []
    for _ in range(4):
        s = adjust(s, False)
        scales.append(s.loss_scale.item())
    down = f32(1.5) * f32(0.8)
    assert scales == [1.5, float(down), float(down), 1.0]  # then max(1., 0.96)


def test_static_loss_scale_never_changes_like_tf_fixed_loss_scale():
    s = mp.StaticLossScale(128.0)
    assert s.adjust(jnp.array(False)) is s and s.adjust(True) is s
    assert float(s.loss_scale) == 128.0
    loss = jnp.float32(0.5)
    assert float(s.scale(loss)) == 64.0 and float(s.unscale(s.scale(loss))) == 0.5


def test_loss_scale_state_is_a_pytree_that_jit_keeps_without_retracing():
    s = mp.DynamicLossScale()
    assert (float(s.loss_scale), s.period, s.factor) == (2.0 ** 15, 2000, 2.0)  # TF's defaults
    leaves, treedef = jax.tree.flatten(s)
    assert [np.asarray(x).dtype for x in leaves] == [np.float32, np.int32, np.int32]
    assert jax.tree.unflatten(treedef, leaves) == s
    # The configuration is static: not a leaf, kept by tree_map and a round trip through NumPy.
    back = jax.tree.map(np.asarray, jax.tree.map(lambda x: x + 0, s))
    assert (back.period, back.factor, back.decrease_period, back.decrease_factor) == (
        2000, 2.0, 1, None)
    assert jax.tree.structure(mp.DynamicLossScale(period=10)) != treedef
    traces = []

    @jax.jit
    def adjust(s, finite):
        traces.append(1)
        return s.adjust(finite)

    for finite in [True, False, True]:
        s = adjust(s, finite)
    assert len(traces) == 1 and (float(s.loss_scale), int(s.good_steps)) == (2.0 ** 14, 1)
    static = mp.StaticLossScale(2.0)
    assert jax.tree.leaves(static) == [static.loss_scale]
    assert float(jax.jit(lambda s: s.scale(jnp.ones(())))(static)) == 2.0


def test_scale_and_unscale_cast_the_scale_to_each_leaf_like_tf():
    # TF: loss * cast(loss_scale, loss.dtype), grad * (1 / loss_scale). A float16 loss scaled past
    # float16's range is inf, and the dynamic scale comes down.
    s = mp.DynamicLossScale(2.0 ** 16)
    tree = {"a": jnp.float32(3.0), "h": jnp.float16(3.0)}
    scaled = s.scale(tree)
    assert (scaled["a"].dtype, scaled["h"].dtype) == (jnp.float32, jnp.float16)
    assert float(scaled["a"]) == 3.0 * 2 ** 16 and np.isinf(scaled["h"])
    assert not bool(mp.all_finite(scaled))
    assert float(s.unscale(scaled)["a"]) == 3.0


def test_all_finite_and_select_tree():
    assert bool(mp.all_finite({})) and bool(mp.all_finite({"a": jnp.ones(3), "n": jnp.arange(2)}))
    assert not bool(mp.all_finite({"a": jnp.ones(3), "b": jnp.array([1.0, np.nan])}))
    assert not bool(jax.jit(mp.all_finite)([jnp.float16(np.inf)]))
    a, b = {"w": jnp.ones(2), "n": jnp.int32(1)}, {"w": jnp.zeros(2), "n": jnp.int32(2)}
    picked = jax.jit(mp.select_tree)(jnp.array(False), a, b)
    np.testing.assert_array_equal(picked["w"], b["w"])
    assert int(picked["n"]) == 2 and int(mp.select_tree(True, a, b)["n"]) == 1
    with pytest.raises(ValueError, match=r"select_tree\(pred, a, b\): pred must be a scalar bool "
                                         r"such as all_finite\(grads\), got shape \(2,\) bool"):
        mp.select_tree(jnp.array([True, False]), a, b)
    with pytest.raises(ValueError, match=r"adjust\(grads_finite\): grads_finite must be a scalar "
                                         r"bool such as all_finite\(grads\), got shape \(3,\)"):
        mp.DynamicLossScale().adjust(jnp.isfinite(jnp.ones(3)))


# A float16 regression whose loss carries a small weight (as an auxiliary loss does): every
# gradient of the float16 activations is below float16's smallest subnormal, 6e-8.
_RS = np.random.RandomState(0)
X16 = _RS.randn(64, 8).astype(np.float32)
Y16 = X16 @ (_RS.randn(8, 32).astype(np.float32) * 0.3)


def _f16_loss(x, y):
    with mp.scope("net", compute_dtype=jnp.float16):
        pred = sp.layers.dense(x.astype(jnp.float16), 32)
    return 1e-6 * jnp.mean((pred.astype(jnp.float32) - y) ** 2)


_f16_model = sp.transform(_f16_loss)
_f16_opt = optax.adam(1e-2)


@jax.jit
def _f16_step(params, opt_state, loss_scale):
    grads = jax.grad(lambda p: loss_scale.scale(_f16_model.apply(p, X16, Y16)))(params)
    grads = loss_scale.unscale(grads)
    finite = mp.all_finite(grads)
    loss_scale = loss_scale.adjust(finite)
    updates, new_opt_state = _f16_opt.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    params, opt_state = mp.select_tree(finite, (new_params, new_opt_state), (params, opt_state))
    return params, opt_state, loss_scale, finite


def test_float16_gradients_underflow_without_loss_scaling_and_train_with_it():
    params = _f16_model.init(jax.random.key(0), X16, Y16)
    grads = jax.grad(_f16_model.apply)(params, X16, Y16)
    assert all(not np.any(g) for g in jax.tree.leaves(grads))  # all zero: nothing to train on
    initial = float(_f16_model.apply(params, X16, Y16))
    scales = [mp.StaticLossScale(1.0), mp.StaticLossScale(2.0 ** 15), mp.DynamicLossScale()]
    for loss_scale in scales:
        p, opt_state = params, _f16_opt.init(params)
        for _ in range(200):
            p, opt_state, loss_scale, finite = _f16_step(p, opt_state, loss_scale)
            assert bool(finite)
        final = float(_f16_model.apply(p, X16, Y16))
        if float(loss_scale.loss_scale) == 1.0:
            assert final == initial
        else:
            assert final < initial / 100, (loss_scale, initial, final)


def test_a_non_finite_float16_step_is_skipped_and_lowers_the_scale():
    params = _f16_model.init(jax.random.key(0), X16, Y16)
    opt_state, loss_scale = _f16_opt.init(params), mp.DynamicLossScale(2.0 ** 60)
    new_params, new_opt_state, loss_scale, finite = _f16_step(params, opt_state, loss_scale)
    assert not bool(finite) and float(loss_scale.loss_scale) == 2.0 ** 59
    chex.assert_trees_all_equal((new_params, new_opt_state), (params, opt_state))
    flags = [False]
    for _ in range(150):
        new_params, new_opt_state, loss_scale, finite = _f16_step(new_params, new_opt_state,
                                                                 loss_scale)
        flags.append(bool(finite))
    skipped = flags.count(False)  # halved until the float16 gradients fit, then all finite
    assert skipped > 10 and flags == [False] * skipped + [True] * (151 - skipped)
    assert float(loss_scale.loss_scale) == 2.0 ** (60 - skipped)
    assert int(new_opt_state[0].count) == 151 - skipped  # Adam saw only the finite steps
    assert float(_f16_model.apply(new_params, X16, Y16)) < float(
        _f16_model.apply(params, X16, Y16)) / 10


@pytest.mark.parametrize("call, message", [
    (lambda: mp.StaticLossScale(0.0),
     r"StaticLossScale\(loss_scale=0.0\): loss_scale must be a positive finite number, got 0.0"
     r"(?s:.*)fix: .*TF's FixedLossScale"),
    (lambda: mp.DynamicLossScale(-1.0),
     r"DynamicLossScale\(loss_scale=-1.0\): loss_scale must be a positive finite number, got -1.0"
     r"(?s:.*)fix: loss_scale=2.0 \*\* 15"),
    (lambda: mp.DynamicLossScale(float("inf")),
     r"loss_scale must be a positive finite number, got inf"),
    (lambda: mp.DynamicLossScale(period=0),
     r"DynamicLossScale\(period=0\): period must be an integer >= 1(?s:.*)got 0(?s:.*)"
     r"fix: period=2000"),
    (lambda: mp.DynamicLossScale(period=2.5), r"period must be an integer >= 1.*got 2.5"),
    (lambda: mp.DynamicLossScale(factor=1.0),
     r"DynamicLossScale\(factor=1.0\): factor must be > 1(?s:.*)got 1.0(?s:.*)fix: factor=2.0"
     r"(?s:.*)StaticLossScale"),
    (lambda: mp.DynamicLossScale(decrease_period=0),
     r"DynamicLossScale\(decrease_period=0\): decrease_period must be an integer >= 1"
     r"(?s:.*)fix: decrease_period=1"),
    (lambda: mp.DynamicLossScale(decrease_factor=1.25),
     r"DynamicLossScale\(decrease_factor=1.25\): decrease_factor must be in \(0, 1\)"
     r"(?s:.*)fix: decrease_factor=0.8 .*or None"),
    (lambda: mp.DynamicLossScale(min_loss_scale=0.0),
     r"DynamicLossScale\(min_loss_scale=0.0\): min_loss_scale must be a positive finite number"),
])
def test_loss_scale_arguments_are_checked_with_the_fix(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_loss_scale_is_rebuilt_by_tree_map_from_any_leaves_for_vmap_in_axes():
    # jax.tree.map(lambda _: 0, state) is how in_axes trees are made: the constructor's checks (a
    # scale > 0) and conversions are for users, never for JAX rebuilding the tree.
    dynamic, static = mp.DynamicLossScale(8.0, period=3), mp.StaticLossScale(4.0)
    axes = jax.tree.map(lambda _: 0, dynamic)
    assert (axes.loss_scale, axes.good_steps, axes.bad_steps, axes.period) == (0, 0, 0, 3)
    assert jax.tree.map(lambda _: 0.0, static).loss_scale == 0.0
    batch = jax.tree.map(lambda x: jnp.stack([x, x]), dynamic)
    out = jax.vmap(lambda s, f: s.adjust(f), in_axes=(axes, 0))(batch, jnp.array([True, False]))
    np.testing.assert_array_equal(out.loss_scale, [8.0, 4.0])
    np.testing.assert_array_equal(out.good_steps, [1, 0])


def test_integer_and_bool_parameters_keep_their_dtype_under_mixed_precision():
    # TF's float32-storage getter recipe casts only floating values back to the compute dtype
    def fn():
        with mp.scope("net", compute_dtype=jnp.float16):
            ids = sp.get_param("ids", init=jnp.array([0, 2, 70001], jnp.int32), trainable=False)
            flag = sp.get_param("flag", init=True, trainable=False)
            w = sp.get_param("w", (2,), init=sp.initializers.ones())
            return ids, flag, w

    model = sp.transform(fn)
    params = model.init(jax.random.key(0))
    ids, flag, w = model.apply(params)
    assert ids.dtype == jnp.int32 and ids.tolist() == [0, 2, 70001]
    assert flag.dtype == jnp.bool_ and bool(flag)
    assert w.dtype == jnp.float16 and params["net"]["w"].dtype == jnp.float32


def test_state_and_frozen_parameters_stay_in_the_requested_dtype_so_set_state_takes_them_back():
    # TF's recipe: storage_dtype = tf.float32 if trainable else dtype
    def fn(x):
        with mp.scope("net", compute_dtype=jnp.float16):
            seen = sp.get_state("examples_seen", (), init=sp.initializers.zeros())
            sp.set_state("examples_seen", seen + x.shape[0])
            frozen = sp.get_param("frozen", (2,), init=sp.initializers.ones(), trainable=False)
            return seen.dtype, frozen.dtype

    model = sp.transform_with_state(fn)
    params, state = model.init(jax.random.key(0), jnp.ones((2, 3)))
    assert state["net"]["examples_seen"].dtype == jnp.float16
    assert params["net"]["frozen"].dtype == jnp.float16
    (seen_dtype, frozen_dtype), state = model.apply(params, state, jnp.ones((2, 3)))
    assert (seen_dtype, frozen_dtype) == (jnp.float16, jnp.float16)
    assert float(state["net"]["examples_seen"]) == 2.0


def test_mixed_precision_scope_argument_errors_say_the_fix():
    def with_scope(**kwargs):
        def fn():
            with mp.scope("s", **kwargs):
                sp.get_param("w", (1,))
        return lambda: sp.transform(fn).init(jax.random.key(0))

    with pytest.raises(TypeError, match=r"compute_dtype must be a float dtype, got int8\.\n  fix: "):
        with_scope(compute_dtype=jnp.int8)()
    with pytest.raises(ValueError, match=r"custom_getter which is not callable: 5\.\n  fix: "):
        with_scope(custom_getter=5)()


def test_select_tree_of_trees_that_differ_names_the_leaf_and_both_shapes_and_dtypes():
    params = {"net": {"dense": {"kernel": jnp.ones((4, 2), jnp.bfloat16), "bias": jnp.zeros(2)}}}
    new = {"net": {"dense": {"kernel": jnp.ones((4, 2), jnp.float32), "bias": jnp.ones(2)}}}
    with pytest.raises(TypeError, match=r"leaf 'net/dense/kernel' differs(.|\n)*dtype float32"
                                        r"(.|\n)*dtype bfloat16(.|\n)*fix: "):
        mp.select_tree(jnp.array(True), new, params)
    with pytest.raises(TypeError, match=r"leaf 'w'(.|\n)*shape \(3,\)(.|\n)*shape \(2,\)"):
        mp.select_tree(jnp.array(True), {"w": jnp.ones(3)}, {"w": jnp.ones(2)})


def test_loss_scaling_passes_float0_gradients_of_integer_parameters_through():
    grads = {"ids": np.zeros((3,), jax.dtypes.float0), "w": jnp.full(2, 8.0)}
    scale = mp.StaticLossScale(4.0)
    for out in (scale.unscale(grads), scale.scale(grads)):
        assert out["ids"].dtype == jax.dtypes.float0
    np.testing.assert_array_equal(scale.unscale(grads)["w"], [2.0, 2.0])


@pytest.mark.parametrize("frozen", [False, 0, np.False_])
def test_a_frozen_parameter_is_told_by_tfs_truthiness_under_mixed_precision(frozen):
    def fn():
        with mp.scope("s", compute_dtype=jnp.bfloat16):
            return sp.get_param("w", (2,), trainable=frozen)

    assert sp.transform(fn).init(jax.random.key(0))["s"]["w"].dtype == jnp.bfloat16
