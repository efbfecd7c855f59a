"""sp.slim: TF-slim's layers, arg_scope and end points, checked against tf_slim itself (names, shapes,
outputs, end points, moving-statistics updates and a tf.train.Saver checkpoint)."""

import importlib
import inspect
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp
from _tf_values import load_random_values

pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated:UserWarning")

KEY = jax.random.key(0)
IMAGES = np.random.RandomState(0).rand(2, 16, 16, 3).astype(np.float32)


def _tf_slim():
    """tf_slim 1.1 imports TF's legacy layers under the name TF 2.16+ keeps in tf_keras's ``src``, and
    its fused batch norm of 2-D inputs still checks ``isinstance(x, ops.Tensor)``, gone from TF."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.framework import ops
    if not hasattr(ops, "Tensor"):
        ops.Tensor = tf.Tensor
    legacy = "tf_keras.legacy_tf_layers"
    if legacy not in sys.modules:
        try:
            sys.modules[legacy] = importlib.import_module("tf_keras.src.legacy_tf_layers")
            for sub in ("base", "convolutional", "core", "normalization", "pooling"):
                sys.modules[f"{legacy}.{sub}"] = importlib.import_module(
                    f"tf_keras.src.legacy_tf_layers.{sub}")
        except ImportError:
            pass
    return pytest.importorskip("tf_slim")


# Each program is written once against slim's API: ``slim`` is tf_slim or sp.slim, ``vs`` is
# tf.compat.v1.variable_scope or sp.scope, ``relu`` tf.nn.relu or jax.nn.relu. They return
# (outputs, end points).


def vgg_like(slim, vs, relu, images, is_training=False, num_classes=5):
    with slim.arg_scope([slim.conv2d, slim.fully_connected], activation_fn=relu,
                        weights_regularizer=slim.l2_regularizer(5e-4)) as arg_sc:
        pass
    with slim.arg_scope(arg_sc):  # slim's saved-arg-scope idiom (vgg_arg_scope())
        with slim.arg_scope([slim.conv2d], padding="SAME"):
            with vs("vgg_a") as sc:
                end_points_collection = sc.original_name_scope + "_end_points"
                with slim.arg_scope([slim.conv2d, slim.fully_connected, slim.max_pool2d],
                                    outputs_collections=end_points_collection):
                    net = slim.repeat(images, 2, slim.conv2d, 8, [3, 3], scope="conv1")
                    net = slim.max_pool2d(net, [2, 2], scope="pool1")
                    net = slim.conv2d(net, 6, 3, stride=2, padding="VALID")  # Conv, outside repeat
                    net = slim.conv2d(net, 6, [1, 1], rate=1)  # Conv_1
                    net = slim.flatten(net)
                    net = slim.stack(net, slim.fully_connected, [12, 7], scope="fc")
                    net = slim.dropout(net, 0.5, is_training=is_training, scope="dropout7")
                    net = slim.fully_connected(net, num_classes, activation_fn=None, scope="fc8")
                    end_points = slim.utils.convert_collection_to_dict(end_points_collection)
    return net, end_points


def resnet_like(slim, vs, relu, images, is_training=False):
    """Batch norm as conv2d's normalizer (no biases), bias_add, separable convs of both forms, a
    transposed conv, layer norm, and the model body applied twice with shared weights."""
    def body(x, reuse):
        with vs("tower", reuse=reuse):
            with slim.arg_scope([slim.conv2d, slim.separable_conv2d], normalizer_fn=slim.batch_norm,
                                normalizer_params={"is_training": is_training, "scale": True}):
                y = slim.conv2d(x, 4, [3, 3], scope="conv1")
                y = slim.separable_conv2d(y, None, [3, 3], depth_multiplier=2, scope="dw")
                y = slim.separable_conv2d(y, 6, [3, 3], stride=2, scope="sep")
            y = slim.conv2d_transpose(y, 3, [3, 3], stride=2, activation_fn=relu)
            y = slim.bias_add(y)
            y = slim.avg_pool2d(y, [3, 3], stride=1, padding="SAME")
            y = slim.layer_norm(y)
            return slim.fully_connected(slim.flatten(y), 4, activation_fn=None)

    return (body(images, None), body(images[:, ::-1], True)), {}


def batch_norm_variants(slim, vs, relu, images, is_training=True):
    """Batch norm in training: 4-D (fused, with gamma), 2-D (slim's fused path), and not fused."""
    del vs, relu
    a = slim.batch_norm(images, is_training=is_training, scale=True)
    b = slim.batch_norm(images[:, 0, 0, :] * 2.0, decay=0.9, is_training=is_training)
    c = slim.batch_norm(images, is_training=is_training, fused=False, center=False, scale=True)
    return (a, b, c), {}


def other_ranks(slim, vs, relu, images, is_training=False):
    """conv1d, conv3d, conv3d_transpose and the 3-d pools, with arg scopes keyed on them."""
    del vs, is_training
    sequence = images[:, 0]  # [batch, 16, 3]
    volume = images[:, :6, :6, :2, None] * images[:, :6, :6, 1:3, None]  # [batch, 6, 6, 2, 1]
    with slim.arg_scope([slim.conv1d], padding="VALID"):
        a = slim.conv1d(slim.conv1d(sequence, 4, 3), 2, 3, 2)  # Conv, Conv_1
    b = slim.conv3d(volume, 3, [2, 2, 1], scope="c3")
    with slim.arg_scope([slim.conv3d_transpose], activation_fn=None):
        c = slim.conv3d_transpose(b, 2, [3, 2, 2], stride=[2, 1, 2])  # Conv3d_transpose
        d = slim.conv3d_transpose(b, 2, 2, stride=2, padding="VALID", activation_fn=relu)
    return (a, slim.max_pool3d(b, [2, 2, 1], stride=1),
            slim.avg_pool3d(b, 2, stride=1, padding="SAME"), c, d), {}


def norms(slim, vs, relu, images, is_training=False):
    """tf.contrib.layers' instance_norm and group_norm: both layouts, without beta or gamma, with an
    activation, slim's E[x^2] - E[x]^2 variance, and a reused scope."""
    del is_training
    x = slim.conv2d(images, 8, [3, 3], activation_fn=None)  # [2, 16, 16, 8]
    a = slim.instance_norm(x)
    b = slim.instance_norm(images, data_format="NCHW", scale=False)  # 16 channels on axis 1
    c = slim.instance_norm(x, center=False, activation_fn=relu, epsilon=1e-3)
    d = slim.group_norm(x, groups=4)
    e = slim.group_norm(images, groups=4, channels_axis=1, reduction_axes=(2, 3), center=False)
    f = slim.group_norm(x, groups=2, mean_close_to_zero=True, activation_fn=relu, scope="gn")
    with vs("shared"):
        g = slim.group_norm(x, groups=8, reduction_axes=(-3,), scope="gn")
    with vs("shared", reuse=True):
        h = slim.group_norm(x[:, ::-1], groups=8, reduction_axes=(-3,), scope="gn")
    return (a, b, c, d, e, f, g, h), {}


def shorthands(slim, vs, relu, images, is_training=False):
    """slim.relu, relu6, elu and linear (fully_connected with that activation, in its arg scopes),
    unit_norm, maxout, the contrib regularizers and apply_regularization."""
    del vs, relu, is_training
    x = slim.flatten(images[:, :4, :4])  # [2, 48]
    with slim.arg_scope([slim.fully_connected],
                        weights_regularizer=slim.l1_l2_regularizer(0.01, 0.02)):
        a = slim.linear(slim.relu(x, 12), 6)  # fully_connected, fully_connected_1
        b = slim.elu(slim.relu6(x, 12, scope="r6"), 6)
    w = slim.model_variable("w", [3, 4], initializer=slim.xavier_initializer_conv2d())
    penalty = slim.apply_regularization(
        slim.sum_regularizer([slim.l1_regularizer(0.5), None, slim.l2_regularizer(0.25)]), [w, w * 2])
    return (a, b, slim.unit_norm(images, 3), slim.unit_norm(images, 1, epsilon=0.5),
            slim.maxout(a, 3), slim.maxout(images, 4, axis=1), penalty), {}


PROGRAMS = [vgg_like, resnet_like, other_ranks, norms, shorthands]


def _tf_run(program, is_training=False, save_to=None):
    """TF's variables (name -> value, all made non-trivial), outputs and end points; in training, also
    the moving statistics after running slim's update ops once."""
    tf_slim = _tf_slim()
    import tensorflow as tf
    tf1 = tf.compat.v1
    with tf.Graph().as_default(), tf1.Session() as session:
        x = tf1.placeholder(tf.float32, IMAGES.shape)
        outputs, end_points = program(tf_slim, tf1.variable_scope, tf.nn.relu, x, is_training)
        session.run(tf1.global_variables_initializer())
        values = {}
        for i, v in enumerate(sorted(tf1.global_variables(), key=lambda v: v.name)):
            shape = v.shape.as_list()
            rs = np.random.RandomState(i)
            value = (rs.rand(*shape) + 0.5 if "variance" in v.name or "gamma" in v.name
                     else rs.randn(*shape) * 0.3).astype(np.float32)
            v.load(value, session)
            values[v.name[:-2]] = value
        if save_to is not None:
            tf1.train.Saver().save(session, str(save_to))
        updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
        got = session.run((outputs, dict(end_points), updates), {x: IMAGES})
        moving = {v.name[:-2]: session.run(v) for v in tf1.global_variables()
                  if "moving" in v.name}
        return values, got[0], got[1], moving


def _ours(program, is_training=False):
    return sp.transform_with_state(
        lambda x: program(sp.slim, sp.scope, jax.nn.relu, x, is_training))


def _split(model, values):
    params, state = model.init(KEY, IMAGES)
    flat_p, flat_s = sp.flatten(params), sp.flatten(state)
    assert {**{k: v.shape for k, v in flat_p.items()}, **{k: v.shape for k, v in flat_s.items()}} \
        == {k: v.shape for k, v in values.items()}
    return (sp.unflatten({k: jnp.asarray(values[k]) for k in flat_p}),
            sp.unflatten({k: jnp.asarray(values[k]) for k in flat_s}))


def _assert_close(ours, theirs):
    ours_leaves, theirs_leaves = jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)
    assert len(ours_leaves) == len(theirs_leaves)
    for a, b in zip(ours_leaves, theirs_leaves):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.__name__)
def test_slim_programs_match_tf_slim_names_shapes_outputs_and_end_points(program):
    values, theirs, their_end_points, _ = _tf_run(program)
    model = _ours(program)
    params, state = _split(model, values)
    for apply in (model.apply, jax.jit(model.apply)):
        (ours, end_points), _ = apply(params, state, IMAGES)
        _assert_close(ours, theirs)
        assert list(end_points) == list(their_end_points)
        _assert_close(dict(end_points), their_end_points)


def test_vgg_end_points_are_slims_aliases():
    _, _, their_end_points, _ = _tf_run(vgg_like)
    assert list(their_end_points) == [
        "vgg_a/conv1/conv1_1", "vgg_a/conv1/conv1_2", "vgg_a/pool1", "vgg_a/Conv", "vgg_a/Conv_1",
        "vgg_a/fc/fc_1", "vgg_a/fc/fc_2", "vgg_a/fc8"]


def test_batch_norm_in_training_updates_the_moving_statistics_as_slims_update_ops_do():
    values, theirs, _, their_moving = _tf_run(batch_norm_variants, is_training=True)
    model = _ours(batch_norm_variants, is_training=True)
    params, state = _split(model, values)
    (ours, _), new_state = model.apply(params, state, IMAGES)
    _assert_close(ours, theirs)
    new_state = sp.flatten(new_state)
    assert sorted(new_state) == sorted(their_moving)
    for name, value in their_moving.items():
        np.testing.assert_allclose(new_state[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 3), (2, 3, 3, 3), (2, 2, 2, 2, 3)])
@pytest.mark.parametrize("trainable", [True, False])
@pytest.mark.parametrize("updates_collections", ["update_ops", None, "my_updates"])
def test_batch_norm_takes_slims_path_for_its_rank_updates_collections_and_trainable(
        shape, trainable, updates_collections):
    # slim's fused kernel (2-D; 4-D with custom collections) Bessel-corrects and always updates; the
    # core layer (default collections) fuses 4-D/5-D and skips a non-trainable layer's updates;
    # nn.moments (the rest) uses the plain variance and always updates.
    tf_slim = _tf_slim()
    import tensorflow as tf
    tf1 = tf.compat.v1
    x = (np.random.RandomState(0).randn(*shape) * 2 + 1).astype(np.float32)

    def program(slim, x):
        return slim.batch_norm(x, decay=0.5, scale=True, trainable=trainable,
                               updates_collections=updates_collections)

    with tf.Graph().as_default(), tf1.Session() as session:
        placeholder = tf1.placeholder(tf.float32, shape)
        y = program(tf_slim, placeholder)
        updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS) + tf1.get_collection("my_updates")
        session.run(tf1.global_variables_initializer())
        theirs = session.run([y] + updates, {placeholder: x})[0]
        their_moving = {v.name[:-2]: session.run(v) for v in tf1.global_variables()
                        if "moving" in v.name}

    model = sp.transform_with_state(lambda x: program(sp.slim, x))
    params, state = model.init(KEY, x)
    ours, new_state = model.apply(params, state, x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    new_state = sp.flatten(new_state)
    assert sorted(new_state) == sorted(their_moving)
    for name, value in their_moving.items():
        np.testing.assert_allclose(new_state[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_layer_norm_in_float16_uses_slims_larger_epsilon():
    # 1e-12 is 0 in float16: a constant row would be 0/0. TF rounds float16's rsqrt differently,
    # hence the tolerance; a near-constant row tells 1e-3 from 0 (0.03 against 2).
    tf_slim = _tf_slim()
    import tensorflow as tf
    x = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 3.0, 3.0, 3.0], [1.0, 1.001, 1.0, 1.001]], np.float16)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        y = tf_slim.layer_norm(tf.constant(x), begin_norm_axis=-1)
        session.run(tf.compat.v1.global_variables_initializer())
        theirs = session.run(y)
    for layer_norm in (sp.slim.layer_norm, sp.layers.layer_norm):
        model = sp.transform(lambda i: layer_norm(i, begin_norm_axis=-1))
        ours = model.apply(model.init(KEY, x), x)
        assert ours.dtype == jnp.float16
        np.testing.assert_allclose(np.asarray(ours, np.float32), theirs.astype(np.float32),
                                   atol=3e-3, err_msg=layer_norm.__module__)


def test_a_tf_slim_checkpoint_loads_by_name_and_gives_tf_slims_outputs(tmp_path):
    _, theirs, _, _ = _tf_run(resnet_like, save_to=tmp_path / "model.ckpt")
    loaded = sp.checkpoint.load_tf1(tmp_path / "model.ckpt")
    model = _ours(resnet_like)
    params, state = model.init(KEY, IMAGES)
    params = sp.unflatten({k: loaded_value for k, loaded_value in sp.flatten(loaded).items()
                           if k in sp.flatten(params)})
    state = sp.unflatten({k: v for k, v in sp.flatten(loaded).items() if k in sp.flatten(state)})
    (ours, _), _ = jax.jit(model.apply)(params, state, IMAGES)
    _assert_close(ours, theirs)


def test_fine_tuning_restores_all_but_a_new_head_from_a_tf_slim_checkpoint(tmp_path):
    """slim's ``get_variables_to_restore(exclude=[head])`` + ``assign_from_checkpoint_fn``: the
    migration guide's recipe, a name map without the head, for a 3-class head on a 5-class model."""
    values, _, _, _ = _tf_run(vgg_like, save_to=tmp_path / "model.ckpt")
    model = sp.transform_with_state(
        lambda x: vgg_like(sp.slim, sp.scope, jax.nn.relu, x, num_classes=3))
    params, state = model.init(KEY, IMAGES)
    keep = {n: n for n in sp.flatten(params) if not n.startswith("vgg_a/fc8/")}
    restored = sp.checkpoint.init_from_checkpoint(tmp_path / "model.ckpt", params, keep)
    flat, before = sp.flatten(restored), sp.flatten(params)
    assert set(flat) == set(before) and flat["vgg_a/fc8/weights"].shape == (7, 3)
    for name, value in flat.items():
        expected = before[name] if name.startswith("vgg_a/fc8/") else values[name]
        np.testing.assert_array_equal(value, expected)
    mismatch = r"'vgg_a/fc8/weights': shape \(7, 3\) in params, but .* has shape \(7, 5\)"
    with pytest.raises(sp.checkpoint.CheckpointMismatchError, match=mismatch):
        sp.checkpoint.init_from_checkpoint(tmp_path / "model.ckpt", params, {"/": "/"})


# --- arg_scope -------------------------------------------------------------------------------------


def _names(fn, *args):
    return sorted(sp.flatten(sp.transform(fn).init(KEY, *args)))


def test_arg_scopes_merge_inner_over_outer_and_an_explicit_argument_wins():
    slim = sp.slim
    seen = []

    @slim.add_arg_scope
    def probe(x, a=1, b=2, c=3):
        seen.append((a, b, c))
        return x

    def fn(x):
        with slim.arg_scope([probe], a=10, b=20):
            with slim.arg_scope([probe, slim.conv2d], b=200) as sc:
                probe(x)
                probe(x, b=-2)
            probe(x)
            with slim.arg_scope(sc):
                probe(x, c=-3)
        probe(x)
        return x

    sp.transform(fn).init(KEY, jnp.ones(2))
    assert seen == [(10, 200, 3), (10, -2, 3), (10, 20, 3), (10, 200, -3), (1, 2, 3)]
    assert slim.has_arg_scope(probe) and not slim.has_arg_scope(len)
    assert slim.arg_scoped_arguments(probe) == ("a", "b", "c")
    assert slim.current_arg_scope() == {}


def test_arg_scope_opened_around_init_and_apply_sets_the_layers_defaults():
    def fn(x):
        return sp.slim.conv2d(x, 2, 3)

    model = sp.transform(fn)
    with sp.slim.arg_scope([sp.slim.conv2d], biases_initializer=None, activation_fn=None):
        params = model.init(KEY, IMAGES)
        out = model.apply(params, IMAGES)
    assert sorted(sp.flatten(params)) == ["Conv/weights"]
    assert float(out.min()) < 0  # no relu


def test_arg_scope_errors_name_the_op_the_argument_and_the_fix():
    slim = sp.slim
    with pytest.raises(ValueError, match=r"(?s)len is not decorated with @slim.add_arg_scope.*fix"):
        slim.arg_scope([len], a=1)
    with pytest.raises(TypeError, match="list or tuple of ops"):
        slim.arg_scope(slim.conv2d, padding="VALID")
    with pytest.raises(ValueError, match="takes no other arguments"):
        slim.arg_scope({}, padding="VALID")

    def unknown(x):
        with slim.arg_scope([slim.max_pool2d, slim.conv2d], activation_fn=None):
            return slim.max_pool2d(x, 2)

    with pytest.raises(TypeError, match=r"(?s)sets activation_fn= for max_pool2d, which does not take "
                                        r"it.*fix: list max_pool2d in a separate arg_scope"):
        sp.transform(unknown).init(KEY, IMAGES)

    def twice(x):
        with slim.arg_scope([slim.conv2d], stride=2):
            return slim.conv2d(x, 4, 3, 1)

    with pytest.raises(TypeError, match=r"(?s)got stride positionally and from an enclosing "
                                        r"slim.arg_scope.*fix: pass it by keyword"):
        sp.transform(twice).init(KEY, IMAGES)


def test_conv1d_conv2d_conv3d_pass_convolutions_arguments_positionally_as_tf_slims_do():
    # So an arg_scope on slim.convolution cannot set one of them (TF: "convolution() got multiple
    # values for argument 'activation_fn'"), and their arg-scoped arguments are convolution's.
    tf_slim = _tf_slim()
    import tensorflow as tf
    shapes = {"conv1d": (2, 8, 3), "conv2d": (2, 8, 8, 3), "conv3d": (2, 4, 4, 4, 3)}
    for name, shape in shapes.items():
        assert tuple(sp.slim.arg_scoped_arguments(getattr(sp.slim, name))) == tuple(
            tf_slim.arg_scoped_arguments(getattr(tf_slim, name))), name

        def program(slim, x, name=name):
            with slim.arg_scope([slim.convolution], activation_fn=None):
                return getattr(slim, name)(x, 4, 3)

        with tf.Graph().as_default():
            with pytest.raises(TypeError, match="multiple values for argument 'activation_fn'"):
                program(tf_slim, tf.compat.v1.placeholder(tf.float32, shape))
        with pytest.raises(TypeError, match=r"(?s)convolution got activation_fn positionally and "
                                            r"from an enclosing slim.arg_scope.*list that op"):
            sp.transform(lambda x: program(sp.slim, x)).init(KEY, jnp.ones(shape))


def test_leaving_an_arg_scope_that_was_never_entered_is_an_error():
    with pytest.raises(RuntimeError, match=r"slim.arg_scope: __exit__ without __enter__"):
        sp.slim.arg_scope([sp.slim.conv2d], padding="VALID").__exit__(None, None, None)


# --- layers ----------------------------------------------------------------------------------------


def test_unnamed_layers_number_per_scope_and_reuse_shares_weights():
    slim = sp.slim

    def fn(x):
        a = slim.conv2d(x, 2, 3)
        b = slim.conv2d(x, 2, 3)
        c = slim.conv2d(x, 2, 3, scope="Conv", reuse=True)  # the first one's weights
        d = slim.fully_connected(slim.flatten(x), 3, normalizer_fn=slim.layer_norm)
        return a, b, c, d

    assert _names(fn, IMAGES) == ["Conv/biases", "Conv/weights", "Conv_1/biases", "Conv_1/weights",
                                  "fully_connected/LayerNorm/beta",
                                  "fully_connected/LayerNorm/gamma", "fully_connected/weights"]
    model = sp.transform(fn)
    params = model.init(KEY, IMAGES)
    a, _, c, _ = model.apply(params, IMAGES)
    np.testing.assert_array_equal(a, c)


def test_a_layer_named_twice_without_reuse_is_tfs_already_exists_error():
    def fn(x):
        sp.slim.conv2d(x, 2, 3, scope="c")
        return sp.slim.conv2d(x, 2, 3, scope="c")

    with pytest.raises(sp.ParamExistsError, match="c/weights already exists"):
        sp.transform(fn).init(KEY, IMAGES)


def test_slim_layers_make_model_variables_and_variables_collections_add_per_kind():
    """As in tf_slim (checked there once): every variable of slim's layers is in
    ``model_variables``, ``slim.variable``'s is not, and ``variables_collections`` adds per kind."""
    slim = sp.slim

    def fn(x):
        y = slim.conv2d(x, 2, 3, variables_collections={"weights": ["decayed"]})
        y = slim.batch_norm(y, is_training=False, variables_collections=["bn"])
        y = slim.bias_add(slim.separable_conv2d(y, 2, 3, normalizer_fn=None))
        y = slim.fully_connected(slim.flatten(y), 3)
        return (y + slim.model_variable("extra", (3,), initializer=sp.initializers.zeros)
                + slim.variable("plain", (3,)))

    param_specs, state_specs = sp.transform_with_state(fn).specs(IMAGES)
    collections = {name: spec.collections
                   for name, spec in {**sp.flatten(param_specs), **sp.flatten(state_specs)}.items()}
    assert collections["Conv/weights"] == ("variables", "model_variables", "decayed")
    assert collections["BatchNorm/beta"] == collections["BatchNorm/moving_mean"] == (
        "variables", "model_variables", "bn")
    assert collections["extra"] == ("variables", "model_variables") and collections["plain"] == ()
    assert sorted(n for n, c in collections.items() if "model_variables" in c) == [
        "BatchNorm/beta", "BatchNorm/moving_mean", "BatchNorm/moving_variance", "BiasAdd/biases",
        "Conv/biases", "Conv/weights", "SeparableConv2d/biases",
        "SeparableConv2d/depthwise_weights", "SeparableConv2d/pointwise_weights", "extra",
        "fully_connected/biases", "fully_connected/weights"]
    model, rest = sp.partition_by_collection(
        sp.transform_with_state(fn).init(KEY, IMAGES)[0], param_specs, "model_variables")
    assert sorted(sp.flatten(rest)) == ["plain"]


def test_dropout_and_batch_norm_default_to_training_as_in_slim():
    slim = sp.slim
    model = sp.transform(lambda x: slim.dropout(x))
    with pytest.raises(sp.MissingRngError):
        model.apply({}, IMAGES)
    out = model.apply({}, IMAGES, rng=jax.random.key(1))
    assert set(np.unique(np.asarray(out) == 0)) == {True, False}
    np.testing.assert_allclose(out[out != 0], IMAGES[np.asarray(out) != 0] * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(
        sp.transform(lambda x: slim.dropout(x, is_training=False)).apply({}, IMAGES), IMAGES)
    with pytest.raises(sp.StateError, match="transform_with_state"):
        sp.transform(lambda x: slim.batch_norm(x)).init(KEY, IMAGES)


def test_end_points_belong_to_each_call():
    slim = sp.slim

    def fn(x):
        with slim.arg_scope([slim.conv2d, slim.max_pool2d], outputs_collections="ep"):
            y = slim.max_pool2d(slim.conv2d(x, 2, 3, scope="c"), 2)
        first = slim.utils.convert_collection_to_dict("ep", clear_collection=True)
        again = slim.utils.convert_collection_to_dict("ep")
        return y, first, again

    model = sp.transform(fn)
    params = model.init(KEY, IMAGES)
    for _ in range(2):
        y, first, again = model.apply(params, IMAGES)
        assert list(first) == ["c", "MaxPool2D"] and again == {}
        np.testing.assert_array_equal(first["MaxPool2D"], y)


def test_the_resnet_v1_50_port_matches_tf_slims_own_names_checkpoint_logits_and_end_points(
        tmp_path):
    """examples/slim_resnet_v1.py against tf_slim.nets.resnet_v1: the released model's code."""
    tf_slim = _tf_slim()
    import tensorflow as tf
    from tf_slim.nets import resnet_v1
    from _scripts import load_example
    tf1 = tf.compat.v1
    images = np.random.RandomState(1).randn(2, 64, 64, 3).astype(np.float32)
    with tf.Graph().as_default(), tf1.Session() as session:
        tf1.set_random_seed(0)  # TF's initial weights: the same model on every run
        x = tf1.placeholder(tf.float32, images.shape)
        with tf_slim.arg_scope(resnet_v1.resnet_arg_scope()):
            logits, end_points = resnet_v1.resnet_v1_50(x, 10, is_training=False)
        session.run(tf1.global_variables_initializer())
        for i, v in enumerate(tf1.global_variables()):  # batch norm that is not the identity
            if "BatchNorm" in v.name:
                rs, shape = np.random.RandomState(i), v.shape.as_list()
                low = "variance" in v.name or "gamma" in v.name
                v.load((rs.rand(*shape) * 0.4 + 0.8 if low else rs.randn(*shape) * 0.1)
                       .astype(np.float32), session)
        tf1.train.Saver().save(session, str(tmp_path / "resnet_v1_50.ckpt"))
        theirs, their_points = session.run((logits, dict(end_points)), {x: images})

    example = load_example("slim_resnet_v1")
    model = sp.transform_with_state(lambda x: example.classifier(x, num_classes=10))
    loaded = sp.flatten(sp.checkpoint.load_tf1(tmp_path / "resnet_v1_50.ckpt"))
    param_specs, state_specs = model.specs(images)
    names = sorted(sp.flatten(param_specs)) + sorted(sp.flatten(state_specs))
    assert sorted(names) == sorted(k for k in loaded if k != "global_step")
    params = sp.unflatten({k: loaded[k] for k in sp.flatten(param_specs)})
    state = sp.unflatten({k: loaded[k] for k in sp.flatten(state_specs)})
    (ours, points), _ = jax.jit(model.apply)(params, state, images)
    scale = float(np.abs(theirs).max())
    np.testing.assert_allclose(ours, theirs[:, 0, 0], rtol=1e-3, atol=1e-4 * scale)
    assert sorted(points) == sorted(their_points)
    for name in ("resnet_v1_50/block1", "resnet_v1_50/block4"):
        np.testing.assert_allclose(points[name], their_points[name], rtol=1e-3,
                                   atol=1e-4 * float(np.abs(their_points[name]).max()))
    # The softmax of logits that agree within atol=1e-4*scale: a probability moves by at most about
    # that much (a 0.14 one was 3.4e-4 off on one run, with the logits within their tolerance).
    np.testing.assert_allclose(points["predictions"], their_points["predictions"], rtol=1e-3,
                               atol=1e-4 * scale)


def test_the_resnet_example_runs_from_the_command_line(capsys):
    from _scripts import load_example
    load_example("slim_resnet_v1").main(["--size", "32"])
    out = capsys.readouterr().out
    assert "resnet_v1_50: 161 parameters, 25,557,032 values, 106 batch-norm statistics" in out
    assert "top-5 classes:" in out


def test_contrib_regularizers_give_tf_slims_regularization_loss():
    # l1_l2_regularizer through an arg scope on slim.relu/linear (fully_connected's shorthands):
    # tf.losses.get_regularization_loss() against sp.regularization_loss(), same weights.
    tf_slim = _tf_slim()
    import tensorflow as tf
    tf1 = tf.compat.v1

    def program(slim, x):
        with slim.arg_scope([slim.fully_connected],
                            weights_regularizer=slim.l1_l2_regularizer(0.01, 0.02),
                            biases_regularizer=slim.l1_l2_regularizer(0.0, 0.5)):
            return slim.linear(slim.relu(slim.flatten(x), 12), 6)

    with tf.Graph().as_default(), tf1.Session() as session:
        program(tf_slim, tf1.placeholder(tf.float32, IMAGES.shape))
        session.run(tf1.global_variables_initializer())
        values = load_random_values(session, tf1.global_variables())
        expected = session.run(tf1.losses.get_regularization_loss())

    model = sp.transform(lambda x: (program(sp.slim, x), sp.regularization_loss())[1])
    params = sp.unflatten({k: jnp.asarray(values[k]) for k in sp.flatten(model.init(KEY, IMAGES))})
    np.testing.assert_allclose(model.apply(params, IMAGES), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="scale_l1 cannot be an integer"):
        sp.slim.l1_l2_regularizer(1, 0.5)
    with pytest.raises(ValueError, match="no weights to regularize"):
        sp.slim.apply_regularization(sp.slim.l2_regularizer(0.1))


def test_regularizers_refuse_integer_and_negative_scales_and_scale_0_adds_no_term_as_in_tf_slim():
    # A negative scale rewarded large weights; an integer one was used as is.
    tf_slim = _tf_slim()
    import tensorflow as tf
    tf1 = tf.compat.v1

    calls = [(name, (scale,)) for name in ("l1_regularizer", "l2_regularizer")
             for scale in (1, True, np.int64(2), -0.5, np.float32(-0.25))]
    calls += [("l1_l2_regularizer", scales) for scales in
              ((1, 0.5), (0.5, True), (np.int32(0), 0.5), (-0.5, 0.5), (0.0, -0.5), (0.5, -1e-3))]
    assert (sp.l1_regularizer, sp.l2_regularizer) == (sp.slim.l1_regularizer, sp.slim.l2_regularizer)
    for name, scales in calls:
        with pytest.raises(ValueError) as theirs:
            getattr(tf_slim, name)(*scales)
        with pytest.raises(ValueError) as ours:  # at construction: TF's text, then what and the fix
            getattr(sp.slim, name)(*scales)
        # (tf_slim's l2_regularizer ends its text with a period, its l1_regularizer does not)
        assert str(ours.value).startswith(f"{str(theirs.value).rstrip('.')} (as in TF): {name}(")
        assert "\n  fix: pass " in str(ours.value)

    # A scale of 0.0 is no regularizer: no term, where TF's regularizer returns None.
    def program(slim, ones):
        for name, regularizer in (("a", slim.l2_regularizer(0.0)), ("b", slim.l1_regularizer(0.0)),
                                  ("c", slim.l1_l2_regularizer(0.0, 0.0)),
                                  ("d", slim.l1_l2_regularizer(0.0, 0.5))):
            slim.model_variable(name, [2], initializer=ones, regularizer=regularizer)

    with tf.Graph().as_default(), tf1.Session() as session:
        program(tf_slim, tf1.ones_initializer())
        session.run(tf1.global_variables_initializer())
        terms = tf1.get_collection(tf1.GraphKeys.REGULARIZATION_LOSSES)
        expected = session.run(tf1.losses.get_regularization_loss())
    assert len(terms) == 1 and expected == 0.5
    model = sp.transform(lambda: (program(sp.slim, sp.initializers.ones), sp.regularization_loss())[1])
    assert float(model.apply(model.init(KEY))) == expected
    for regularizer in (sp.l1_regularizer(0.0), sp.l2_regularizer(np.float32(0.0)),
                        sp.slim.l1_l2_regularizer(0.0, 0.0)):
        assert regularizer(jnp.ones(3)) is None
    assert tf_slim.l1_l2_regularizer(0.0, 0.0)(None) is None


def test_norm_and_shorthand_argument_errors_name_what_was_asked():
    x = jnp.ones((2, 4, 4, 6))
    cases = [
        (lambda: sp.slim.group_norm(x, groups=4), r"Invalid groups 4 for 6 channels: "
                                                   r"slim.group_norm\(groups=4, .* shape \(2, 4, 4, 6\)"),
        (lambda: sp.slim.group_norm(x, groups=2, channels_axis=4), "Axis is out of bounds"),
        (lambda: sp.slim.group_norm(x, groups=2, reduction_axes=(-1,)), "mutually exclusive"),
        (lambda: sp.slim.instance_norm(x, data_format="NCW"), "NCHW or NHWC, got 'NCW'"),
        (lambda: sp.slim.unit_norm(x, 4), r"got dim=4 for inputs of shape \(2, 4, 4, 6\)"),
        (lambda: sp.slim.maxout(x, 4), r"number of features\(6\) is not a multiple of num_units\(4\)"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=message):
            sp.transform(lambda: make()).init(KEY)


# --- what tf_slim refuses or returns for unusual arguments -------------------------------------------


def _tf_slim_result(program, x):
    """tf_slim's ``program(tf_slim, x)`` run in a fresh graph: its value, or the exception it raised
    building (or running) it."""
    tf_slim = _tf_slim()
    import tensorflow as tf
    tf1 = tf.compat.v1
    with tf.Graph().as_default(), tf1.Session() as session:
        try:
            outputs = program(tf_slim, tf.constant(x))
            session.run(tf1.global_variables_initializer())
            return session.run(outputs)
        except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
            return error


X6 = np.random.RandomState(0).randn(2, 6, 6, 4).astype(np.float32)


@pytest.mark.parametrize("program, message", [
    (lambda slim, x: slim.max_pool2d(x, 7), r"max_pool2d 'MaxPool2D' with padding='VALID' slides "
                                            r"a pool_size of \(7, 7\)"),
    (lambda slim, x: slim.avg_pool2d(x, [7, 2], scope="pool1"), r"avg_pool2d 'pool1' .*\(7, 2\)"),
    (lambda slim, x: slim.conv2d(x, 2, 7, padding="VALID"), r"conv2d 'Conv' .*kernel of \(7, 7\)"),
    (lambda slim, x: slim.conv2d(x, 2, 3, rate=3, padding="VALID"),
     r"conv2d 'Conv' .*kernel of \(3, 3\) at dilation \(3, 3\), spanning \(7, 7\)"),
    (lambda slim, x: slim.separable_conv2d(x, None, 7, padding="VALID"), "SeparableConv2d"),
])
def test_a_valid_window_larger_than_the_input_is_refused_at_build_like_tf_slim(program, message):
    # not a zero-size output, which init would turn into (0, N) weights downstream
    theirs = _tf_slim_result(program, X6)
    assert isinstance(theirs, ValueError) and "Negative dimension size" in str(theirs)
    with pytest.raises(ValueError, match=rf"(?s)^Negative dimension size caused by subtracting 7 "
                                         rf"from 6: {message}.*spatial size \(6, 6\).*\n  fix: "
                                         r"padding='SAME', a smaller "):
        sp.transform(lambda x: program(sp.slim, x)).init(KEY, X6)


@pytest.mark.parametrize("program, message", [
    (lambda slim, x: slim.conv2d(x, 0, 3), r"conv2d 'Conv': invalid value for argument `filters` "
                                           r"\(slim: `num_outputs`\).*Received filters=0"),
    (lambda slim, x: slim.separable_conv2d(x, 2, 3, depth_multiplier=0),
     r"SeparableConv2d 'SeparableConv2d': .*depth_multiplier=0"),
    (lambda slim, x: slim.separable_conv2d(x, None, 3, depth_multiplier=0), "depth_multiplier=0"),
    (lambda slim, x: slim.max_pool2d(x, 2, 0), r"max_pool2d 'MaxPool2D': the `strides` .*"
                                               r"\n  fix: strides=1 \(slim: stride=1\)"),
    (lambda slim, x: slim.avg_pool2d(x, 0), r"avg_pool2d 'AvgPool2D': the `pool_size` .*\n  fix: "),
    (lambda slim, x: slim.conv2d(x, 2, 3, stride=0, scope="c"), r"conv2d 'c': the `strides` "),
    (lambda slim, x: slim.conv2d(x, 2, 3, rate=0),
     r"conv2d 'Conv': the `dilation_rate` .*\n  fix: dilation_rate=1 \(slim: rate=1\)"),
])
def test_zero_outputs_multipliers_sizes_and_strides_are_refused_naming_slims_layer(program, message):
    # TF refuses each, at build or when run; lax returned zero channels or failed in lowering
    assert isinstance(_tf_slim_result(program, X6), Exception)
    with pytest.raises(ValueError, match=rf"(?s){message}.*\n  fix: " if "fix" not in message
                       else rf"(?s){message}"):
        sp.transform(lambda x: program(sp.slim, x)).init(KEY, X6)


def test_softmax_is_arg_scoped_like_tf_slims():
    tf_slim = _tf_slim()
    assert sp.slim.has_arg_scope(sp.slim.softmax) and tf_slim.has_arg_scope(tf_slim.softmax)

    def program(slim, x):
        with slim.arg_scope([slim.softmax], scope="probs"):
            return slim.softmax(x)

    logits = X6[:, 0, 0]
    np.testing.assert_allclose(sp.transform(lambda x: program(sp.slim, x)).apply({}, logits),
                               _tf_slim_result(program, logits), rtol=1e-6)


def test_one_hot_encodings_dtype_is_on_values_as_in_tf_one_hot():
    labels = np.array([0, 2, -1], np.int32)
    for values in [{}, dict(on_value=1, off_value=0), dict(on_value=True, off_value=False),
                   dict(on_value=np.float32(2), off_value=np.float32(-1))]:
        def program(slim, x, values=values):
            return slim.one_hot_encoding(x, 3, **values)

        theirs = _tf_slim_result(program, labels)
        ours = sp.transform(lambda x: program(sp.slim, x)).apply({}, labels)
        assert ours.dtype == theirs.dtype, values
        np.testing.assert_array_equal(ours, theirs)
    # TF refuses on and off values of different types
    mixed = _tf_slim_result(lambda slim, x: slim.one_hot_encoding(x, 3, on_value=1), labels)
    assert isinstance(mixed, TypeError) and "does not match dtype" in str(mixed)
    with pytest.raises(TypeError, match=r"(?s)dtype int32 of on_value=1 does not match dtype float32 "
                                        r"of off_value=0.0.*\n  fix: "):
        sp.slim.one_hot_encoding(labels, 3, on_value=1)


def test_one_hot_encoding_refuses_non_integer_labels_as_tf_one_hot_does():
    for labels in (np.array([0.0, 2.0], np.float32), np.array([True, False])):
        theirs = _tf_slim_result(lambda slim, x: slim.one_hot_encoding(x, 3), labels)
        assert isinstance(theirs, TypeError) and "indices" in str(theirs)
        with pytest.raises(TypeError, match=rf"(?s)labels of dtype {labels.dtype}, but tf.one_hot's "
                                            r"indices must be integers.*\n  fix: "):
            sp.transform(lambda x: sp.slim.one_hot_encoding(x, 3)).init(KEY, labels)


def test_flatten_of_a_rank_1_input_is_n_by_1_like_tf_slims():
    vector = X6[0, 0, 0]
    theirs = _tf_slim_result(lambda slim, x: slim.flatten(x), vector)
    ours = sp.transform(lambda x: sp.slim.flatten(x)).apply({}, vector)
    assert ours.shape == theirs.shape == (4, 1)
    np.testing.assert_array_equal(ours, theirs)
    assert isinstance(_tf_slim_result(lambda slim, x: slim.flatten(x), vector[0]), ValueError)
    with pytest.raises(ValueError, match=r"(?s)flatten 'Flatten': the input is a scalar.*fix: "):
        sp.transform(lambda x: sp.slim.flatten(x)).init(KEY, vector[0])


def test_dropout_checks_keep_prob_even_when_not_training_like_tf_slim():
    for keep_prob in (1.5, -0.5):
        def program(slim, x, keep_prob=keep_prob):
            return slim.dropout(x, keep_prob, is_training=False)

        theirs = _tf_slim_result(program, X6)
        assert isinstance(theirs, ValueError) and "received for `rate`" in str(theirs)
        with pytest.raises(ValueError, match=rf"(?s)slim.dropout: invalid value {keep_prob} received "
                                             r"for `keep_prob`.*between 0 and 1.*\n  fix: "):
            sp.transform(lambda x: program(sp.slim, x)).init(KEY, X6)
    # keep_prob=0 out of training builds, as in TF
    keep_none = sp.transform(lambda x: sp.slim.dropout(x, 0.0, is_training=False))
    np.testing.assert_array_equal(keep_none.apply({}, X6), X6)


def test_arg_scope_func_key_indexes_a_saved_arg_scope_as_in_tf_slim():
    # tensorflow/models: sc[slim.arg_scope_func_key(slim.batch_norm)]["decay"] = ...
    def saved(slim):
        with slim.arg_scope([slim.conv2d], padding="VALID"):
            with slim.arg_scope([slim.batch_norm], decay=0.9) as sc:
                return sc

    tf_slim = _tf_slim()
    for slim in (tf_slim, sp.slim):
        sc = saved(slim)
        assert sc[slim.arg_scope_func_key(slim.batch_norm)] == {"decay": 0.9}
        assert sc[slim.arg_scope_func_key(slim.conv2d)] == {"padding": "VALID"}
    assert "arg_scope_func_key" in sp.slim.__all__

    def edited(x):
        sc = saved(sp.slim)
        sc[sp.slim.arg_scope_func_key(sp.slim.batch_norm)]["decay"] = 0.5
        with sp.slim.arg_scope(sc):
            return sp.slim.batch_norm(x)

    model = sp.transform_with_state(edited)
    params, state = model.init(KEY, IMAGES)
    _, new_state = model.apply(params, state, IMAGES)
    np.testing.assert_allclose(new_state["BatchNorm"]["moving_mean"],
                               0.5 * IMAGES.mean((0, 1, 2)), rtol=1e-5)


def test_slims_core_layer_regularizers_add_to_the_scopes_and_its_own_variables_replace_it():
    # tf_slim builds fully_connected, the convolutions, separable_conv2d with num_outputs and the
    # default batch_norm from tf.layers' layers, which add their own regularizer's term to the
    # enclosing scope's; separable_conv2d(num_outputs=None), the fused (or nn.moments) batch_norm
    # and bias_add make their variables with model_variable(regularizer=), which replaces it.
    tf_slim = _tf_slim()
    import tensorflow as tf
    tf1 = tf.compat.v1

    def program(slim, vs, reduce_sum, x):
        def l2(scale):
            return lambda w: scale * reduce_sum(w * w)

        with vs("net", regularizer=l2(0.05)):
            with slim.arg_scope([slim.conv2d, slim.separable_conv2d, slim.conv2d_transpose,
                                 slim.fully_connected], weights_regularizer=l2(0.1),
                                biases_regularizer=l2(0.2)):
                h = slim.conv2d(x, 4, 3, scope="c")
                h = slim.conv2d(h, 4, 3, scope="c2")
                h = slim.conv2d(h, 4, 3, scope="c2", reuse=True)  # a reuse adds no term
                h = slim.separable_conv2d(h, 3, 2, scope="sep")
                h = slim.separable_conv2d(h, None, 2, scope="depthwise")
                h = slim.conv2d_transpose(h, 2, 2, scope="up")
                regularizers = {"beta": l2(0.1), "gamma": l2(0.2)}
                h = slim.batch_norm(h, scale=True, param_regularizers=regularizers,
                                    is_training=False, scope="bn_layer")
                h = slim.batch_norm(h, scale=True, param_regularizers=regularizers,
                                    is_training=False, updates_collections=None,
                                    scope="bn_fused")
                h = slim.bias_add(h, regularizer=l2(0.3))
                return slim.fully_connected(slim.flatten(h), 3, scope="fc")

    with tf.Graph().as_default(), tf1.Session() as session:
        program(tf_slim, tf1.variable_scope, tf.reduce_sum,
                tf1.placeholder(tf.float32, IMAGES.shape))
        session.run(tf1.global_variables_initializer())
        values = load_random_values(session, tf1.global_variables())
        expected = session.run(tf1.losses.get_regularization_loss())

    model = sp.transform(lambda x: (program(sp.slim, sp.scope, jnp.sum, x),
                                    sp.regularization_loss())[1])
    assert sorted(sp.flatten(model.init(KEY, IMAGES))) == sorted(values)
    params = sp.unflatten({k: jnp.asarray(v) for k, v in values.items()})
    for apply in (model.apply, jax.jit(model.apply)):
        np.testing.assert_allclose(apply(params, IMAGES), expected, rtol=1e-5)


def test_end_points_inside_a_loop_or_transformation_are_refused_as_sp_record_is():
    # A layer's output made in the function of an sp.scan, an sp.layer_stack block or a jax.vmap
    # cannot leave it except as the function's result (nor can TF fetch a loop body's tensors):
    # collecting it as an end point returned that trace's dead tracers, or died under jit.
    slim = sp.slim

    def fc(x, ends):
        with sp.scope("cell", reuse=sp.AUTO_REUSE):
            return slim.fully_connected(x, 2, outputs_collections=ends, scope="fc")

    def in_scan(xs, ends):
        return sp.scan(lambda c, x: (c + fc(x, ends), None), jnp.zeros((1, 2)), xs)[0]

    def in_stack(xs, ends):
        return sp.layer_stack(2)(lambda h: fc(h, ends))(xs[0])

    def in_vmap(xs, ends):
        return jax.vmap(lambda x: fc(x, ends))(xs)

    xs = jnp.ones((4, 1, 2))
    for fn, where in ((in_scan, r"the function of sp\.scan"),
                      (in_stack, r"an sp\.layer_stack block"),
                      (in_vmap, "a function that a JAX transformation")):
        params = sp.transform(lambda xs, fn=fn: fn(xs, None)).init(KEY, xs)
        model = sp.transform(lambda xs, fn=fn: (fn(xs, ["ends"]),
                                                slim.utils.convert_collection_to_dict("ends")))
        for call in (lambda: model.init(KEY, xs), lambda: model.apply(params, xs),
                     lambda: jax.jit(model.apply)(params, xs)):
            with pytest.raises(sp.NestedTraceError,
                               match=rf"(?s)outputs_collections=\['ends'\]: the end point "
                                     rf"'(layer_stack/)?cell/fc' .*inside {where}"
                                     r".*\n  fix: .*return it"):
                call()


# --- reuse without scope=, inputs of too low a rank, Keras names ---------------------------------------


@pytest.mark.parametrize("layer, op, default", [
    (lambda slim, x, **kw: slim.fully_connected(x, 3, **kw), "slim.fully_connected",
     "fully_connected"),
    (lambda slim, x, **kw: slim.conv2d(x[:, None, None], 3, 1, **kw), "slim.conv2d", "Conv"),
    (lambda slim, x, **kw: slim.batch_norm(x, **kw), "slim.batch_norm", "BatchNorm"),
])
def test_reuse_without_a_scope_is_tf_slims_error_and_its_fix_names_the_scope_to_pass(
        layer, op, default):
    # the generic fix said sp.scope('fully_connected', reuse=True), which then looked for
    # fully_connected/fully_connected/weights
    x = X6[:, 0, 0]

    def twice(slim, x, reuse):
        layer(slim, x)
        return layer(slim, x, reuse=reuse)

    _tf_slim()
    import tensorflow as tf
    for reuse, tf_reuse in ((True, True), (sp.AUTO_REUSE, tf.compat.v1.AUTO_REUSE)):
        theirs = _tf_slim_result(lambda slim, x: twice(slim, x, tf_reuse), x)
        assert "reuse=True cannot be used without a name_or_scope" in str(theirs)
        with pytest.raises(sp.ReuseArgumentError) as error:
            sp.transform_with_state(lambda x: twice(sp.slim, x, reuse)).init(KEY, x)
        message = str(error.value)
        assert message.startswith(f"{op}(reuse=") and "reuse=True cannot be used without a " \
            "name_or_scope" in message, message
        assert f"\n  fix: pass the scope to share: scope='{default}'" in message, message

    def fixed(x):  # what the message says
        first = layer(sp.slim, x)
        return first, layer(sp.slim, x, scope=default, reuse=True)

    model = sp.transform_with_state(fixed)
    params, state = model.init(KEY, x)
    (first, again), _ = model.apply(params, state, x)
    assert all(not name.startswith(f"{default}/{default}") for name in sp.flatten(params))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("shape", [()])
def test_fully_connected_refuses_a_scalar_input_like_tf_slim(shape):
    x = np.ones(shape, np.float32)
    theirs = _tf_slim_result(lambda slim, x: slim.fully_connected(x, 3), x)
    assert f"expected min_ndim=2, found ndim={len(shape)}" in str(theirs)
    with pytest.raises(ValueError) as error:
        sp.transform(lambda x: sp.slim.fully_connected(x, 3)).init(KEY, x)
    assert str(error.value).startswith(
        f"Input 0 of layer fully_connected 'fully_connected' is incompatible with the layer: "
        f"expected min_ndim=2, found ndim={len(shape)}. Full shape received: {shape}\n  fix: ")


def test_batch_norm_refuses_a_channels_axis_its_input_does_not_have_like_tf_slim():
    # NCHW's channel axis 1 on a rank-1 input wrapped to axis 0
    vector = X6[0, 0, 0]
    theirs = _tf_slim_result(lambda slim, x: slim.batch_norm(x, data_format="NCHW"), vector)
    assert "Expected 0 <= axis < inputs.rank (with inputs.rank=1)" in str(theirs)
    with pytest.raises(ValueError, match=r"^batch_normalization 'BatchNorm': invalid value for "
                                         r"`axis` argument\. Expected -1 <= axis < 1 "):
        sp.transform_with_state(lambda x: sp.slim.batch_norm(x, data_format="NCHW")).init(KEY,
                                                                                         vector)


def test_weights_initializers_and_regularizers_given_by_keras_names_work_as_in_tf_slim():
    # tf_slim builds its layers on Keras's, which resolve the names
    def program(slim, x):
        return (slim.fully_connected(x[:, 0, 0], 3, weights_initializer="ones",
                                     biases_initializer="ones", weights_regularizer="l2"),
                slim.conv2d(x, 2, 3, weights_initializer="zeros", biases_initializer="ones",
                            weights_regularizer="l1"),
                slim.conv2d(x, 2.0, 3, weights_initializer="ones", activation_fn=None))

    theirs = _tf_slim_result(program, X6)
    ours = sp.transform(lambda x: program(sp.slim, x)).apply(
        sp.transform(lambda x: program(sp.slim, x)).init(KEY, X6), X6)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    model = sp.transform(lambda x: (program(sp.slim, x), sp.regularization_loss())[1])
    params = model.init(KEY, X6)
    w = params["fully_connected"]["weights"]
    np.testing.assert_allclose(model.apply(params, X6), 0.01 * float(jnp.sum(w * w)), rtol=1e-6)


def test_an_activation_fn_given_by_name_is_refused_as_tf_slim_does_with_a_fix():
    # TF slim calls activation_fn(outputs): "'str' object is not callable"
    for program in (lambda slim, x: slim.fully_connected(x[:, 0, 0], 3, activation_fn="relu"),
                    lambda slim, x: slim.conv2d(x, 2, 3, activation_fn="relu"),
                    lambda slim, x: slim.batch_norm(x, activation_fn="relu")):
        theirs = _tf_slim_result(program, X6)
        assert isinstance(theirs, TypeError) and "not callable" in str(theirs)
        with pytest.raises(TypeError, match=r"(?s)^slim\.\w+: activation_fn='relu' is a name, but "
                                            r"slim's layers call activation_fn.*TF slim.*\n"
                                            r"  fix: pass the function, activation_fn=jax\.nn\.relu"):
            sp.transform_with_state(lambda x: program(sp.slim, x)).init(KEY, X6)


def test_slims_regularizers_take_tf_slims_scope_argument_and_ignore_it():
    # tf_slim's l1/l2/l1_l2/sum_regularizer(..., scope=None) name the term's ops; a port passes it
    w = jnp.array([1.0, -2.0, 3.0])
    assert float(sp.slim.l2_regularizer(0.5, "wd")(w)) == float(sp.slim.l2_regularizer(0.5)(w)) == 3.5
    assert float(sp.slim.l1_regularizer(0.5, scope="wd")(w)) == 3.0
    assert float(sp.slim.l1_l2_regularizer(0.5, 0.5, scope="wd")(w)) == 6.5
    both = sp.slim.sum_regularizer([sp.slim.l1_regularizer(0.5), sp.slim.l2_regularizer(0.5)], "wd")
    assert float(both(w)) == 6.5
    tf_slim = pytest.importorskip("tf_slim")
    for name in ("l1_regularizer", "l2_regularizer", "l1_l2_regularizer", "sum_regularizer"):
        theirs = list(inspect.signature(getattr(tf_slim, name)).parameters)
        assert list(inspect.signature(getattr(sp.slim, name)).parameters) == theirs, name


def test_closing_arg_scopes_out_of_order_is_a_scope_nesting_error():
    # Before: no error, and the outer arg scope's defaults stayed active after both exits (TF's
    # slim ends with {}).
    slim = sp.slim
    outer = slim.arg_scope([slim.fully_connected], activation_fn=None)
    inner = slim.arg_scope([slim.fully_connected], biases_initializer=None)
    outer.__enter__()
    inner_defaults = inner.__enter__()
    with pytest.raises(sp.ScopeNestingError, match=r"(?s)Improper nesting of slim.arg_scope: closing "
                                                   r"an arg_scope while an inner one is open.*"
                                                   r"fix: close arg scopes in the reverse order"):
        outer.__exit__(None, None, None)
    assert slim.current_arg_scope() is inner_defaults  # the failed exit changed nothing
    inner.__exit__(None, None, None)
    outer.__exit__(None, None, None)
    assert slim.current_arg_scope() == {}


def test_one_arg_scope_object_entered_twice_nests():
    # Before: the outer exit failed with "__exit__ without __enter__".
    slim = sp.slim
    sc = slim.arg_scope([slim.fully_connected], activation_fn=None)
    with sc:
        with sc as again:
            assert slim.current_arg_scope() is again
        assert slim.current_arg_scope()[slim.arg_scope_func_key(slim.fully_connected)] == {
            "activation_fn": None}
    assert slim.current_arg_scope() == {}


def test_dropout_with_keep_prob_zero_in_training_speaks_of_keep_prob():
    # Before: "Invalid value received for `rate` ... got: 1.0", though keep_prob=0.0 was passed.
    with pytest.raises(ValueError, match=r"(?s)slim.dropout: keep_prob=0.0 with is_training=True "
                                         r"would drop every unit.*\n  fix: keep_prob must be above 0 "
                                         r"in training") as info:
        sp.transform(lambda x: sp.slim.dropout(x, keep_prob=0.0, is_training=True)).init(KEY, X6)
    assert "`rate`" in str(info.value)  # TF's wording is quoted for searchability


def test_an_explicit_model_variables_collection_is_not_in_variables_but_slims_model_variables_are():
    # TF: collections= replaces GLOBAL_VARIABLES; slim's model_variable lists both itself
    def fn():
        sp.get_param("a", (1,), collections=["model_variables"])
        sp.get_param("b", (1,))
        return sp.slim.model_variable("c", (1,))

    model = sp.transform(fn)
    params, specs = model.init(KEY), model.specs()
    found, _ = sp.partition_by_collection(params, specs, "variables")
    assert sorted(sp.flatten(found)) == ["b", "c"]
    found, _ = sp.partition_by_collection(params, specs, "model_variables")
    assert sorted(sp.flatten(found)) == ["a", "c"]


@pytest.mark.parametrize("padding", ["same", "valid", "Same"])
def test_depthwise_only_separable_conv2d_takes_only_upper_case_padding_like_tf_slim(padding):
    # tf_slim's num_outputs=None path calls tf.nn.depthwise_conv2d, which refuses lower case
    program = lambda slim, x: slim.separable_conv2d(x, None, 3, padding=padding)  # noqa: E731
    theirs = _tf_slim_result(program, X6)
    assert isinstance(theirs, ValueError) and "not in: \"SAME\", \"VALID\"" in str(theirs)
    with pytest.raises(ValueError, match=rf"(?s)slim.separable_conv2d 'SeparableConv2d' with "
                                         rf"num_outputs=None: Attr 'padding' of "
                                         rf"'DepthwiseConv2dNative' Op passed string '{padding}' "
                                         rf"not in: \"SAME\", \"VALID\".*\n  fix: "
                                         rf"padding='{padding.upper()}'"):
        sp.transform(lambda x: program(sp.slim, x)).init(KEY, X6)
    # with num_outputs, tf_slim's path is the Keras layer, which takes either case
    assert sp.transform(lambda x: sp.slim.separable_conv2d(x, 2, 3, padding=padding)).init(KEY, X6)


@pytest.mark.parametrize("program, error, message", [
    (lambda slim, x: slim.conv2d(x, 2, 3, stride=2.0), ValueError,
     r"conv2d 'Conv': the `strides` argument must be a tuple of 2 integers\. Received: 2\.0"),
    (lambda slim, x: slim.max_pool2d(x, 2.0), ValueError,
     r"max_pool2d 'MaxPool2D': the `pool_size` argument must be a tuple of 2 integers\. "),
    (lambda slim, x: slim.conv2d(x, 2, (3, 2.5)), TypeError,
     r"conv2d 'Conv': the `kernel_size` argument has an entry that is no integer"),
])
def test_float_sizes_and_strides_are_refused_with_tf_slims_error_class(program, error, message):
    # Before: "TypeError: 'float' object is not iterable"; (3, 2.5) silently became (3, 2)
    assert isinstance(_tf_slim_result(program, X6), error)
    with pytest.raises(error, match=rf"(?s){message}.*\n  fix: "):
        sp.transform(lambda x: program(sp.slim, x)).init(KEY, X6)


def causal_and_strided_atrous(slim, vs, relu, images, is_training=False):
    """slim's 1-d convolution with causal padding (tf_slim's Keras Conv1D takes it), and
    separable_conv2d with stride > 1 and rate > 1 (tf_slim's tf.nn ops take them, in space_to_batch),
    on inputs whose sizes are and are not multiples of the rate."""
    del vs, is_training
    sequence = images[:, 0]  # [batch, 16, 3]
    odd = images[:, :13, :11]
    with slim.arg_scope([slim.conv1d, slim.separable_conv2d], activation_fn=None):
        return (slim.conv1d(sequence, 4, 3, rate=2, padding="causal"),
                slim.conv1d(sequence, 2, 2, stride=3, padding="CAUSAL", activation_fn=relu),
                slim.separable_conv2d(images, 4, 3, stride=2, rate=2),
                slim.separable_conv2d(odd, 3, [3, 2], stride=2, rate=2, padding="VALID"),
                slim.separable_conv2d(odd, 2, 3, stride=3, rate=2, depth_multiplier=2),
                slim.separable_conv2d(odd, 4, [2, 3], stride=[1, 2], rate=[2, 1]),
                slim.separable_conv2d(odd, None, 3, stride=[2, 1], rate=2, depth_multiplier=2),
                slim.separable_conv2d(odd, None, 2, stride=3, rate=3, padding="VALID")), {}


def test_causal_1d_convolutions_and_strided_atrous_separable_convolutions_match_tf_slim():
    # Before: "The `padding` argument must be 'valid' or 'same'. Received: 'causal'", and
    # "`strides > 1` not supported in conjunction with `dilation_rate > 1`" where tf_slim runs
    values, theirs, _, _ = _tf_run(causal_and_strided_atrous)
    model = _ours(causal_and_strided_atrous)
    params, state = _split(model, values)
    assert sorted(sp.flatten(params)) == sorted(values)
    for apply in (model.apply, jax.jit(model.apply)):
        (ours, _), _ = apply(params, state, IMAGES)
        assert [a.shape for a in ours] == [b.shape for b in theirs]
        _assert_close(ours, theirs)


@pytest.mark.parametrize("program, message", [
    (lambda slim, x: slim.conv2d(x, 2, 3, padding="causal"),
     r"^conv2d 'Conv': Causal padding is only supported for `Conv1D` and `SeparableConv1D`"),
    (lambda slim, x: slim.separable_conv2d(x, 2, 3, padding="causal"),
     r"^SeparableConv2d 'SeparableConv2d': Causal padding is only supported for `Conv1D`"),
    (lambda slim, x: slim.conv2d(x, 2, 3, stride=2, rate=2),
     r"^`strides > 1` not supported in conjunction with `dilation_rate > 1`"),
])
def test_causal_padding_beyond_1d_and_a_strided_atrous_conv2d_are_refused_like_tf_slim(program,
                                                                                    message):
    assert isinstance(_tf_slim_result(program, X6), ValueError)
    with pytest.raises(ValueError, match=message):
        sp.transform(lambda x: program(sp.slim, x)).init(KEY, X6)


# --- dtypes: slim's nn.moments batch norm, integer inputs ---------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape, updates_collections, fused, is_training, param_dtype", [
    ((2, 9, 3), None, None, True, "input"),  # nn.moments: the input's dtype
    ((2, 9, 3), "my_updates", None, False, "input"),
    ((2, 4, 5, 3), None, False, True, "input"),
    ((2, 4, 5, 3), None, None, True, "float32"),  # slim's fused kernel
    ((6, 3), None, None, True, "float32"),
    ((2, 9, 3), "update_ops", None, True, "float32"),  # the core layer
])
def test_batch_norm_keeps_a_low_precision_inputs_dtype_on_slims_nn_moments_path_only(
        dtype, shape, updates_collections, fused, is_training, param_dtype):
    # tf_slim's legacy path makes beta/gamma/moving statistics with dtype=inputs.dtype (float16 for
    # a float16 input); its fused kernel and the core layer keep them in float32. Before: float32
    # everywhere, so a TF checkpoint's float16 statistics were refused.
    tf_slim = _tf_slim()
    import tensorflow as tf
    tf1 = tf.compat.v1
    x = (np.random.RandomState(0).randn(*shape) * 2 + 1).astype(np.float32)
    x = np.asarray(jnp.asarray(x, dtype))  # TF's and ours from the same rounded values

    def program(slim, x):
        return slim.batch_norm(x, decay=0.5, scale=True, is_training=is_training, fused=fused,
                               updates_collections=updates_collections)

    with tf.Graph().as_default(), tf1.Session() as session:
        placeholder = tf1.placeholder(tf.as_dtype(dtype), shape)
        y = program(tf_slim, placeholder)
        updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS) + tf1.get_collection("my_updates")
        session.run(tf1.global_variables_initializer())
        values = {}
        for i, v in enumerate(sorted(tf1.global_variables(), key=lambda v: v.name)):
            value = np.random.RandomState(i).rand(*v.shape.as_list()) + 0.5
            v.load(value.astype(v.dtype.base_dtype.as_numpy_dtype), session)
            values[v.name[:-2]] = session.run(v)
        theirs = session.run([y] + updates, {placeholder: x})[0]
        their_moving = {v.name[:-2]: session.run(v) for v in tf1.global_variables()
                        if "moving" in v.name}

    model = sp.transform_with_state(lambda x: program(sp.slim, x))
    params, state = model.init(KEY, x)
    expected = dtype if param_dtype == "input" else "float32"
    assert {k: str(v.dtype) for k, v in {**sp.flatten(params), **sp.flatten(state)}.items()} == {
        k: expected for k in values}
    params, state = _split_by(params, state, values)
    ours, new_state = model.apply(params, state, x)
    assert ours.dtype == jnp.dtype(dtype)
    tolerance = dict(rtol=2e-2, atol=2e-2) if dtype == "bfloat16" else dict(rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(theirs, np.float32),
                               **tolerance)
    for name, value in their_moving.items():
        assert str(sp.flatten(new_state)[name].dtype) == expected, name
        np.testing.assert_allclose(np.asarray(sp.flatten(new_state)[name], np.float32),
                                   np.asarray(value, np.float32), **tolerance, err_msg=name)


def _split_by(params, state, values):
    """``params`` and ``state`` with TF's ``values`` (each already in its variable's dtype)."""
    return (sp.unflatten({k: jnp.asarray(values[k]) for k in sp.flatten(params)}),
            sp.unflatten({k: jnp.asarray(values[k]) for k in sp.flatten(state)}))


_INTEGER_REFUSALS = [  # (program, what tf_slim says, how ours names the layer)
    (lambda slim, x: slim.fully_connected(x, 3), "non-floating point dtype",
     "fully_connected 'fully_connected'"),
    (lambda slim, x: slim.conv2d(x, 3, 3), "non-floating point type", "conv2d 'Conv'"),
    (lambda slim, x: slim.conv1d(x[:, 0], 3, 3), "non-floating point type", "conv1d 'Conv'"),
    (lambda slim, x: slim.conv2d_transpose(x, 3, 3), "non-floating point type",
     "conv2d_transpose 'Conv2d_transpose'"),
    (lambda slim, x: slim.separable_conv2d(x, None, 3), "non-floating point type",
     "SeparableConv2d 'SeparableConv2d'"),
    (lambda slim, x: slim.separable_conv2d(x, 3, 3, scope="sep"), "non-floating point type",
     "SeparableConv2d 'sep'"),
    (lambda slim, x: slim.layer_norm(x), "does not match type int32", "layer_norm 'LayerNorm'"),
    (lambda slim, x: slim.batch_norm(x, is_training=False), "does not match type int32",
     "batch_normalization 'BatchNorm'"),
    (lambda slim, x: slim.batch_norm(x), "does not match type int32",
     "batch_normalization 'BatchNorm'"),
    (lambda slim, x: slim.batch_norm(x[:, 0, 0], is_training=False), "not in list of allowed",
     "batch_normalization 'BatchNorm'"),
    (lambda slim, x: slim.batch_norm(x[:, 0], is_training=False, updates_collections=None),
     "does not match type int32", "batch_normalization 'BatchNorm'"),
    (lambda slim, x: slim.instance_norm(x), "does not match type int32",
     "slim.instance_norm 'InstanceNorm'"),
    (lambda slim, x: slim.group_norm(x, groups=2), "does not match type int32",
     "slim.group_norm 'GroupNorm'"),
]


@pytest.mark.parametrize("program, theirs_says, label", _INTEGER_REFUSALS)
def test_weighted_layers_refuse_an_integer_input_naming_the_layer_like_tf_slim(program, theirs_says,
                                                                              label):
    # Before: cast to float32 (and batch_norm(is_training=False) returned int32, its normalized
    # values truncated); tf_slim raises a TypeError building the layer.
    x = (X6 * 4).astype(np.int32)
    theirs = _tf_slim_result(program, x)
    assert isinstance(theirs, TypeError) and theirs_says in str(theirs), theirs
    with pytest.raises(TypeError) as error:
        model = sp.transform_with_state(lambda x: program(sp.slim, x))
        model.apply(*model.init(KEY, x), x)
    message = str(error.value)
    assert message.startswith(f"{label}: the input has dtype int32, but this layer only takes a "
                              "floating-point input"), message
    assert message.endswith("\n  fix: cast the input first, e.g. x.astype(jnp.float32).")


def test_bias_add_keeps_an_integer_inputs_dtype_and_refuses_bool_like_tf_slim():
    # tf_slim's bias_add makes its biases in the input's dtype (BiasAdd takes integers, not bool);
    # before: float32 biases and a float32 output.
    _tf_slim()
    import tensorflow as tf
    x = (X6 * 4).astype(np.int32)

    def program(slim, x):
        return slim.bias_add(x, initializer=tf.compat.v1.ones_initializer() if slim is not sp.slim
                             else sp.initializers.ones)

    theirs = _tf_slim_result(program, x)
    model = sp.transform(lambda x: program(sp.slim, x))
    params = model.init(KEY, x)
    assert params["BiasAdd"]["biases"].dtype == jnp.int32
    ours = model.apply(params, x)
    assert ours.dtype == jnp.int32 and theirs.dtype == np.int32
    np.testing.assert_array_equal(ours, theirs)
    flags = X6 > 0
    assert isinstance(_tf_slim_result(lambda slim, x: slim.bias_add(x), flags), TypeError)
    with pytest.raises(TypeError, match=r"^bias_add 'BiasAdd': the input has dtype bool, but this "
                                        r"layer only takes a numeric input .*\n  fix: cast the "
                                        r"input first, e.g. x\.astype\(jnp\.float32\)\."):
        sp.transform(lambda x: sp.slim.bias_add(x)).init(KEY, flags)


# --- repeat/stack's scope, bias_add's rank, layer_norm's axes, utils.last_dimension -----------------


@pytest.mark.parametrize("op", ["repeat", "stack"])
def test_repeat_and_stack_refuse_a_scope_object_as_scope_like_tf_slim_with_the_fix(op):
    # tf_slim builds the i-th scope as scope + '_' + str(i + 1): a VariableScope is a TypeError there.
    # Before: an InvalidNameError about a scope named "Scope(name='blk', reuse=False)_1".
    def program(slim, vs, x):
        with vs("blk") as sc:
            pass
        if op == "repeat":
            return slim.repeat(x, 2, slim.conv2d, 3, 3, scope=sc)
        return slim.stack(x, slim.conv2d, [3, 3], kernel_size=3, scope=sc)

    _tf_slim()
    import tensorflow as tf
    theirs = _tf_slim_result(lambda slim, x: program(slim, tf.compat.v1.variable_scope, x), X6)
    assert isinstance(theirs, TypeError) and "unsupported operand" in str(theirs)
    with pytest.raises(TypeError) as error:
        sp.transform(lambda x: program(sp.slim, sp.scope, x)).init(KEY, X6)
    message = str(error.value)
    assert message.startswith(f"slim.{op}(scope=<Scope 'blk'>): scope must be a "
                              "string (the repeated layers' scopes are scope + '_1', '_2', ...)"), \
        message
    assert message.endswith("\n  fix: pass its name, scope=sc.name (here 'blk'), or a string.")
    # the fix works, as scope=sc.name does in TF
    fixed = sp.transform(lambda x: getattr(sp.slim, op)(
        x, *((2, sp.slim.conv2d, 3, 3) if op == "repeat" else (sp.slim.conv2d, [3, 3])),
        **({} if op == "repeat" else {"kernel_size": 3}), scope="blk")).init(KEY, X6)
    assert sorted(sp.flatten(fixed)) == ["blk/blk_1/biases", "blk/blk_1/weights",
                                         "blk/blk_2/biases", "blk/blk_2/weights"]


@pytest.mark.parametrize("shape", [(3,), ()])
def test_bias_add_refuses_an_input_below_rank_2_like_tf_slim(shape):
    # Before: a vector got its biases added (TF's BiasAdd needs a batch axis and a channel axis).
    x = np.ones(shape, np.float32)
    theirs = _tf_slim_result(lambda slim, x: slim.bias_add(x), x) if shape else None
    assert theirs is None or (isinstance(theirs, ValueError)
                              and "Shape must be at least rank 2 but is rank 1" in str(theirs))
    with pytest.raises(ValueError) as error:
        sp.transform(lambda x: sp.slim.bias_add(x)).init(KEY, x)
    assert str(error.value) == (
        f"slim.bias_add: Shape must be at least rank 2 but is rank {len(shape)}: the input of "
        f"shape {shape} has no batch axis and channel axis (as TF's BiasAdd refuses it).\n"
        f"  fix: give the input a batch axis, e.g. x.reshape(1, -1) for one example.")


@pytest.mark.parametrize("layer_norm", [sp.slim.layer_norm, sp.layers.layer_norm],
                         ids=["slim", "layers"])
def test_layer_norm_refuses_a_begin_norm_axis_below_minus_rank_naming_it(layer_norm):
    # tf_slim wraps -5 once to -1 and reduces over [-1, 0, 1, 2, 3], refused when run; ours was
    # JAX's bare "duplicate value in 'axis'".
    theirs = _tf_slim_result(lambda slim, x: slim.layer_norm(x, begin_norm_axis=-5), X6)
    assert theirs is not None and not isinstance(theirs, np.ndarray)
    with pytest.raises(ValueError) as error:
        sp.transform(lambda x: layer_norm(x, begin_norm_axis=-5)).init(KEY, X6)
    assert str(error.value) == (
        "begin_params_axis (-1) and begin_norm_axis (-5) must be < rank(inputs) (4) and "
        "begin_norm_axis >= -rank(inputs) (-4)\n  fix: an axis of the rank-4 input, e.g. "
        "begin_norm_axis=-1 to normalize over the last axis only, or 1 for all but the batch.")
    # begin_params_axis below -rank takes the whole shape, as TF's slice does
    theirs = _tf_slim_result(lambda slim, x: slim.layer_norm(x, begin_params_axis=-5), X6)
    params = sp.transform(lambda x: layer_norm(x, begin_params_axis=-5)).init(KEY, X6)
    assert params["LayerNorm"]["beta"].shape == X6.shape == theirs.shape


def test_utils_last_dimension_is_tf_slims_with_its_rank_check():
    # resnet_v1's bottleneck: depth_in = slim.utils.last_dimension(inputs.get_shape(), min_rank=4)
    tf_slim = _tf_slim()
    import tensorflow as tf
    assert sp.slim.utils.last_dimension(X6.shape, min_rank=4) == 4
    assert sp.slim.utils.last_dimension((2, 7)) == 7 == tf_slim.layers.utils.last_dimension(
        tf.TensorShape([2, 7]))
    with pytest.raises(ValueError, match=r"rank of shape must be at least 4 not: 2"):
        tf_slim.layers.utils.last_dimension(tf.TensorShape([2, 7]), min_rank=4)
    with pytest.raises(ValueError, match=r"^slim\.utils\.last_dimension: rank of shape must be at "
                                         r"least 4 not: 2 \(shape \(2, 7\)\)\.\n  fix: "):
        sp.slim.utils.last_dimension((2, 7), min_rank=4)
    with pytest.raises(ValueError, match=r"^slim\.utils\.last_dimension: dimension -1 of shape must "
                                         r"be known but is None: \(2, None\)\.\n  fix: "):
        sp.slim.utils.last_dimension((2, None))
    with pytest.raises(TypeError, match=r"^slim\.utils\.last_dimension: expected a shape, got an "
                                        r"array of shape \(2, 6, 6, 4\).*\n  fix: pass x\.shape"):
        sp.slim.utils.last_dimension(jnp.asarray(X6))


def test_norms_compute_bfloat16_moments_in_bfloat16_as_tfs_nn_moments_does():
    # TF's nn.moments computes float16 statistics in float32 and bfloat16 ones in bfloat16; ours
    # computed bfloat16 in float32 too, a variance a bfloat16 step off TF's. With decay 0 from zero
    # moving statistics, slim's nn.moments batch norm stores the batch moments exactly (no rsqrt,
    # which XLA and TF round differently in bfloat16).
    tf_slim = _tf_slim()
    import tensorflow as tf
    tf1 = tf.compat.v1
    x = np.asarray(jnp.asarray(np.random.RandomState(0).randn(8, 33, 7) * 3 + 5, jnp.bfloat16))

    def program(slim, x, zeros):
        return (slim.layer_norm(x, begin_norm_axis=1), slim.instance_norm(x),
                slim.batch_norm(x, decay=0.0, is_training=True, updates_collections=None,
                                param_initializers={"moving_variance": zeros}))

    with tf.Graph().as_default(), tf1.Session() as session:
        outputs = program(tf_slim, tf.constant(x), tf1.zeros_initializer())
        session.run(tf1.global_variables_initializer())
        theirs = session.run(outputs)
        their_moving = {v.name[:-2]: session.run(v) for v in tf1.global_variables()
                        if "moving" in v.name}
    model = sp.transform_with_state(lambda x: program(sp.slim, x, sp.initializers.zeros))
    ours, state = model.apply(*model.init(KEY, x), x)
    for a, b in zip(ours, theirs):
        assert a.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2e-2,
                                   atol=2e-2)
    state = sp.flatten(state)
    assert sorted(state) == sorted(their_moving) == ["BatchNorm/moving_mean",
                                                     "BatchNorm/moving_variance"]
    for name, value in their_moving.items():
        assert state[name].dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(state[name], np.float32),
                                      np.asarray(value, np.float32), err_msg=name)


def test_a_users_custom_getter_around_slim_layers_sees_the_model_variables_collection_in_apply():
    # TF's slim layer getter adds the collections before the user's getter runs; init and apply
    # must compute the same (here: a getter zeroing model variables)
    seen = []

    def program(x):
        def getter(next_getter, name, *args, **kwargs):
            value = next_getter(name, *args, **kwargs)
            seen.append("model_variables" in (kwargs.get("collections") or ()))
            return value * 0.0 if seen[-1] else value

        with sp.scope("g", custom_getter=getter):
            return sp.slim.conv2d(x, 4, 3, activation_fn=None)

    model, x = sp.transform(program), jnp.ones((2, 8, 8, 3))
    params = model.init(jax.random.key(0), x)
    seen.clear()
    np.testing.assert_array_equal(model.apply(params, x), 0.0)
    assert seen == [True, True]


def test_slim_model_variable_is_float32_by_default_whatever_the_scopes_dtype():
    def fn():
        with sp.scope("half", dtype=jnp.float16):
            return sp.slim.model_variable("m", [3]), sp.slim.variable("v", [3])

    params = sp.transform(fn).init(jax.random.key(0))
    assert params["half"]["m"].dtype == jnp.float32  # tf_slim's model_variable(dtype=float32)
    assert params["half"]["v"].dtype == jnp.float16  # slim.variable takes the scope's
    with pytest.raises(ValueError, match="Initializer type 'int32' and explicit dtype 'float32'"):
        sp.transform(lambda: sp.slim.model_variable(
            "ints", initializer=np.arange(3, dtype=np.int32))).init(jax.random.key(0))
