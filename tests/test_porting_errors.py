"""Errors met while porting TF 1.x code to sp.layers and sp.slim: a traced layer size (``units``,
``filters``) under ``jax.jit``, a TensorFlow function given as an activation (``tf.nn.relu``),
batch normalization in training mode under ``sp.transform`` named as the caller wrote it
(``slim.batch_norm``'s ``is_training=``), TF's ``tf.compat.v1.AUTO_REUSE`` passed to a layer, and a
misspelled ``slim.arg_scope`` keyword. Each test pins the error's class and its message: the layer's
scope, what was given and the ``fix:`` line.

The tests that pass TensorFlow's own objects skip when TensorFlow is not installed."""

import os
import re

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

import scoped_params as sp  # noqa: E402

KEY = jax.random.key(0)
slim = sp.slim


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


# --- a traced size ----------------------------------------------------------------------------------


def test_traced_dense_units_under_jit_is_a_type_error_naming_units_and_static_argnums():
    x = jnp.ones((2, 3))
    model = sp.transform(lambda x, num_classes: sp.layers.dense(x, num_classes))
    params = model.init(KEY, x, 4)
    with pytest.raises(TypeError, match=r"(?s)dense 'dense': units=.* is a traced value.*\n  fix: .*"
                                        r"a Python int.*static_argnums") as error:
        jax.jit(model.apply)(params, x, 4)
    assert not isinstance(error.value, AttributeError)
    # the static argument is the fix
    out = jax.jit(model.apply, static_argnums=2)(params, x, 4)
    assert out.shape == (2, 4)


def test_traced_conv_filters_is_a_type_error_saying_it_is_traced():
    image = jnp.ones((1, 4, 4, 3))
    with pytest.raises(TypeError, match=r"(?s)conv2d: filters=.* is a traced value.*\n"
                                        r"  fix: .*static_argnums"):
        sp.transform(lambda x, n: sp.layers.conv2d(x, n, 3)).init(KEY, image, jnp.array(3))


def test_traced_slim_num_outputs_is_a_type_error_saying_it_is_traced():
    x = jnp.ones((2, 3))
    with pytest.raises(TypeError, match=r"(?s)slim.fully_connected: num_outputs=.* is a traced "
                                        r"value.*\n  fix: .*static_argnums"):
        sp.transform(lambda x, n: slim.fully_connected(x, n)).init(KEY, x, jnp.array(3))


def test_untraced_units_errors_keep_their_classes():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"invalid value for `units`: 'a' is no integer"):
        sp.transform(lambda x: sp.layers.dense(x, "a")).init(KEY, x)
    with pytest.raises(TypeError, match=r"invalid value for `units`: None is no integer"):
        sp.transform(lambda x: sp.layers.dense(x, None)).init(KEY, x)


# --- a TensorFlow activation ------------------------------------------------------------------------


def test_tf_activation_in_dense_is_refused_naming_scope_and_the_jax_function(tf):
    x = jnp.ones((2, 3))
    model = sp.transform(lambda x: sp.layers.dense(x, 4, activation=tf.nn.relu))
    with pytest.raises(TypeError, match=r"(?s)dense 'dense': activation=.*relu.* TensorFlow.*"
                                        r"\n  fix: activation=jax\.nn\.relu \(or the name 'relu'\)"):
        model.init(KEY, x)


def test_tf_activation_in_eager_apply_is_refused_not_returned_as_a_tf_tensor(tf):
    x = jnp.ones((2, 3))
    params = sp.transform(lambda x: sp.layers.dense(x, 4)).init(KEY, x)
    model = sp.transform(lambda x: sp.layers.dense(x, 4, activation=tf.nn.relu))
    with pytest.raises(TypeError, match=r"activation=.*TensorFlow"):
        model.apply(params, x)


@pytest.mark.parametrize("name, jax_fix, keras_name", [
    ("nn.relu6", r"jax\.nn\.relu6", "relu6"), ("tanh", r"jnp\.tanh", "tanh"),
    ("sigmoid", r"jax\.nn\.sigmoid", "sigmoid"), ("nn.elu", r"jax\.nn\.elu", "elu"),
    ("nn.softmax", r"jax\.nn\.softmax", "softmax"),
    ("nn.gelu", r"functools\.partial\(jax\.nn\.gelu, approximate=False\)", "gelu"),
    ("nn.leaky_relu", r"functools\.partial\(jax\.nn\.leaky_relu, negative_slope=0\.2\)",
     "leaky_relu"),
])
def test_tf_activation_fix_names_the_jax_equivalent(tf, name, jax_fix, keras_name):
    fn = tf
    for part in name.split("."):
        fn = getattr(fn, part)
    image = jnp.ones((1, 4, 4, 3))
    with pytest.raises(TypeError, match=rf"conv2d 'conv2d': activation=.*\n  fix: activation="
                                        rf"{jax_fix} \(or the name '{keras_name}'\)"):
        sp.transform(lambda x: sp.layers.conv2d(x, 2, 3, activation=fn)).init(KEY, image)


def test_tf_activation_without_a_jax_equivalent_gets_a_generic_fix(tf):
    x = jnp.ones((2, 4))
    with pytest.raises(TypeError, match=r"(?s)activation=.*TensorFlow.*\n  fix: .*jax\.nn\.relu"):
        sp.transform(lambda x: sp.layers.dense(x, 4, activation=tf.nn.crelu)).init(KEY, x)


def test_tf_keras_activation_and_layer_object_are_refused(tf):
    x = jnp.ones((2, 3))
    with pytest.raises(TypeError, match=r"(?s)dense 'dense': activation=.*\n  fix: activation="
                                        r"jnp\.tanh \(or the name 'tanh'\)"):
        sp.transform(lambda x: sp.layers.dense(x, 4, activation=tf.keras.activations.tanh)).init(
            KEY, x)
    with pytest.raises(TypeError, match=r"(?s)dense 'dense': activation=<ReLU object from tf_keras"
                                        r".*\n  fix: activation=jax\.nn\.relu \(or the name "
                                        r"'relu'\)"):
        sp.transform(lambda x: sp.layers.dense(x, 4, activation=tf.keras.layers.ReLU())).init(
            KEY, x)


def test_tf_activation_in_layer_objects_and_separable_conv_and_layer_norm_is_refused(tf):
    image = jnp.ones((1, 4, 4, 3))
    with pytest.raises(TypeError, match=r"dense.*activation=.*TensorFlow"):
        sp.transform(lambda x: sp.layers.Dense(4, activation=tf.nn.relu)(x)).init(KEY, image)
    with pytest.raises(TypeError, match=r"separable_conv2d 'separable_conv2d': activation=.*"
                                        r"TensorFlow"):
        sp.transform(lambda x: sp.layers.separable_conv2d(x, 2, 3, activation=tf.nn.relu)).init(
            KEY, image)
    with pytest.raises(TypeError, match=r"(?s)layer_norm 'LayerNorm': activation_fn=.*TensorFlow"
                                        r".*\n  fix: activation_fn=jax\.nn\.relu\."):
        sp.transform(lambda x: sp.layers.layer_norm(x, activation_fn=tf.nn.relu)).init(KEY, image)


def test_tf_activation_fn_in_slim_is_refused_naming_scope_without_a_keras_name(tf):
    image = jnp.ones((2, 8, 8, 3))

    def through_arg_scope(x):
        with slim.arg_scope([slim.conv2d], activation_fn=tf.nn.relu):
            return slim.conv2d(x, 4, [3, 3])

    with pytest.raises(TypeError, match=r"(?s)slim.conv2d 'Conv': activation_fn=.*TensorFlow.*\n"
                                        r"  fix: activation_fn=jax\.nn\.relu\.(\n|$)"):
        sp.transform(through_arg_scope).init(KEY, image)
    with pytest.raises(TypeError, match=r"slim.fully_connected 'fc': activation_fn=.*TensorFlow"):
        sp.transform(lambda x: slim.fully_connected(x, 3, activation_fn=tf.nn.relu,
                                                    scope="fc")).init(KEY, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=r"slim.batch_norm 'BatchNorm': activation_fn=.*TensorFlow"):
        sp.transform(lambda x: slim.batch_norm(x, activation_fn=tf.nn.relu, is_training=False)
                     ).init(KEY, image)


def test_jax_activations_and_names_still_work():
    x = jnp.ones((2, 3))
    for activation in (jax.nn.relu, "relu", lambda y: y * 2, None):
        model = sp.transform(lambda x: sp.layers.dense(x, 4, activation=activation))
        out = model.apply(model.init(KEY, x), x)
        assert isinstance(out, jax.Array)
    model = sp.transform(lambda x: slim.conv2d(x, 4, [3, 3], activation_fn=jnp.tanh))
    assert isinstance(model.apply(model.init(KEY, jnp.ones((1, 4, 4, 3))), jnp.ones((1, 4, 4, 3))),
                      jax.Array)


# --- batch normalization in training mode under sp.transform ----------------------------------------


def test_slim_batch_norm_state_error_names_is_training_and_the_scope():
    image = jnp.ones((2, 8, 8, 3))
    model = sp.transform(lambda x: slim.conv2d(x, 4, [3, 3], normalizer_fn=slim.batch_norm))
    with pytest.raises(sp.StateError, match=r"(?s)sp\.slim\.batch_norm 'Conv/BatchNorm' with "
                                            r"is_training=True .*\n  fix: .*transform_with_state.*"
                                            r"is_training=False") as error:
        model.init(KEY, image)
    assert "training=False" not in str(error.value).replace("is_training=False", "")
    # following the fix works
    model = sp.transform(lambda x: slim.conv2d(x, 4, [3, 3], normalizer_fn=slim.batch_norm,
                                               normalizer_params={"is_training": False}))
    assert "Conv" in model.init(KEY, image)


def test_layers_batch_normalization_state_error_names_training_and_the_scope():
    x = jnp.ones((4, 3))

    def fn(x):
        with sp.scope("block"):
            return sp.layers.batch_normalization(x, training=True, name="bn")

    with pytest.raises(sp.StateError, match=r"(?s)sp\.layers\.batch_normalization 'block/bn' with "
                                            r"training=True .*\n  fix: .*transform_with_state.* "
                                            r"training=False"):
        sp.transform(fn).init(KEY, x)


def test_batch_normalization_object_state_error_names_the_class():
    x = jnp.ones((4, 3))
    with pytest.raises(sp.StateError, match=r"(?s)sp\.layers\.BatchNormalization 'batch_normalization'"
                                            r" with training=True .*\n  fix: .* training=False"):
        sp.transform(lambda x: sp.layers.BatchNormalization()(x, training=True)).init(KEY, x)


def test_traced_training_flag_state_error_says_it_is_traced():
    x = jnp.ones((4, 3))
    with pytest.raises(sp.StateError, match=r"batch_norm 'BatchNorm' with is_training=<a traced "
                                            r"flag>"):
        sp.transform(lambda x, t: slim.batch_norm(x, is_training=t)).init(KEY, x, jnp.array(True))


# --- reuse ------------------------------------------------------------------------------------------


def test_tf_auto_reuse_in_a_layer_is_a_reuse_argument_error_with_the_sp_constant(tf):
    x = jnp.ones((2, 3))
    model = sp.transform(lambda x: sp.layers.dense(x, 4, name="d",
                                                   reuse=tf.compat.v1.AUTO_REUSE))
    with pytest.raises(sp.ReuseArgumentError, match=r"got tf\.compat\.v1\.AUTO_REUSE, "
                                                    r"TensorFlow's constant\.\n  asked: dense 'd' "
                                                    r"with reuse=tf\.compat\.v1\.AUTO_REUSE\n  "
                                                    r"fix: .*pass sp\.AUTO_REUSE"):
        model.init(KEY, x)


def test_invalid_reuse_in_a_layer_is_a_reuse_argument_error_with_a_fix():
    x = jnp.ones((2, 3))
    with pytest.raises(sp.ReuseArgumentError, match=r"The reuse parameter must be True or False "
                                                    r"or None \(or sp\.AUTO_REUSE\), got 'auto'\.\n"
                                                    r"  asked: dense 'd' with reuse='auto'\n  fix: "
                                                    r"pass reuse=sp\.AUTO_REUSE \(the constant, not "
                                                    r"a string"):
        sp.transform(lambda x: sp.layers.dense(x, 4, name="d", reuse="auto")).init(KEY, x)


# --- slim.arg_scope keywords ------------------------------------------------------------------------


def test_misspelled_arg_scope_keyword_suggests_the_close_parameter():
    def typo(x):
        with slim.arg_scope([slim.conv2d], paddin="VALID"):
            return slim.conv2d(x, 4, [3, 3])

    with pytest.raises(TypeError, match=r"(?s)slim\.arg_scope sets paddin= for convolution2d "
                                        r"\(slim\.conv2d\).*"
                                        r"\n  fix: did you mean padding=\?") as error:
        sp.transform(typo).init(KEY, jnp.ones((1, 8, 8, 3)))
    assert "separate arg_scope" not in str(error.value)


def test_arg_scope_keywords_with_and_without_close_matches_get_one_fix_each():
    def typos(x):
        with slim.arg_scope([slim.conv2d], paddin="VALID", strid=2, colour=1):
            return slim.conv2d(x, 4, [3, 3])

    with pytest.raises(TypeError, match=r"(?s)sets colour=, paddin=, strid= for convolution2d.*\n"
                                        r"  fix: did you mean padding= for paddin=, stride= for "
                                        r"strid=\? .*; list convolution2d in a separate arg_scope "
                                        r"without colour=\."):
        sp.transform(typos).init(KEY, jnp.ones((1, 8, 8, 3)))


def test_traced_kernel_size_is_a_type_error_saying_it_is_traced():
    image = jnp.ones((1, 4, 4, 3))
    with pytest.raises(TypeError, match=r"(?s)conv2d: kernel_size=.* is a traced value.*\n  fix: "):
        sp.transform(lambda x, k: sp.layers.conv2d(x, 2, (k, 3))).init(KEY, image, jnp.array(3))


def test_tf_activation_in_an_rnn_cell_is_refused_naming_the_cell_and_the_jax_function(tf):
    for cell in (sp.rnn.BasicRNNCell, sp.rnn.LSTMCell, sp.rnn.GRUCell):
        with pytest.raises(TypeError, match=rf"{cell.__name__}: activation=.*tanh is a TensorFlow "
                                            r"function.*\n  fix: activation=jnp\.tanh"):
            cell(4, activation=tf.tanh)


def test_batch_renorm_is_refused_in_the_callers_words():
    x = jnp.ones((4, 3))
    for call, api in ((lambda x: sp.slim.batch_norm(x, renorm=True), "sp.slim.batch_norm"),
                      (lambda x: sp.layers.batch_normalization(x, virtual_batch_size=2),
                       "sp.layers.batch_normalization")):
        with pytest.raises(NotImplementedError, match=rf"^{re.escape(api)} does not implement "
                                                      r"renorm, .*\(given: \w+=\)\.\n  fix: "):
            sp.transform_with_state(call).init(KEY, x)


def test_an_activation_that_is_no_function_is_a_type_error_naming_the_layer_and_the_choices():
    # (was Python's bare "'dict' object is not callable" from inside the layer)
    x = jnp.ones((1, 3))
    for call, label in (
            (lambda x: sp.layers.dense(x, 2, activation={"class_name": "relu", "config": {}}),
             "dense 'dense': activation="),
            (lambda x: sp.layers.Dense(2, activation=3)(x), "dense 'dense': activation=3"),
            (lambda x: sp.layers.conv2d(x[None, None], 2, 1, activation=[1]),
             "conv2d 'conv2d': activation=[1]"),
            (lambda x: sp.rnn.dynamic_rnn(sp.rnn.GRUCell(2, activation=3), x[None],
                                          dtype=jnp.float32), "GRUCell: activation=3")):
        with pytest.raises(TypeError, match=re.escape(label) + r".* is neither a function nor the "
                                            r"name of a Keras activation\.\n  fix: .*'relu'"):
            sp.transform(call).init(KEY, x)
    with pytest.raises(TypeError, match=r"slim\.fully_connected: activation_fn=3 is not a "
                                        r"function .*\n  fix: pass a function"):
        sp.transform(lambda x: sp.slim.fully_connected(x, 2, activation_fn=3)).init(KEY, x)


# --- a TF variable scope left in a port ------------------------------------------------------------


def test_tf_variable_scope_left_around_get_param_is_an_error_naming_both_scopes(tf):
    v1 = tf.compat.v1

    def fn(x):
        with sp.scope("net"):
            with v1.variable_scope("conv1"):  # the port replaced get_variable, not variable_scope
                w = sp.get_param("w", (x.shape[-1], 2))
        return x @ w

    with pytest.raises(sp.ScopeNestingError) as error:
        sp.transform(fn).init(KEY, jnp.ones((1, 3)))
    message = str(error.value)
    assert "'net/w'" in message and "tf.variable_scope('conv1')" in message
    assert "without the 'conv1/' TF would put in its name" in message
    assert "fix: replace tf.variable_scope(...)" in message and "sp.scope(...)" in message


def test_tf_variable_scope_left_around_a_layer_and_around_init_is_an_error(tf):
    v1 = tf.compat.v1
    model = sp.transform(lambda x: sp.layers.dense(x, 2))
    with v1.variable_scope("outer"):
        with pytest.raises(sp.ScopeNestingError, match=r"'dense/kernel'.*tf.variable_scope\('outer'\)"):
            model.init(KEY, jnp.ones((1, 3)))
    assert model.init(KEY, jnp.ones((1, 3)))["dense"]["kernel"].shape == (3, 2)  # closed: fine


def test_tf_variable_scope_in_a_graph_or_name_scope_alone_is_not_an_error(tf):
    v1 = tf.compat.v1
    model = sp.transform(lambda x: sp.layers.dense(x, 2))
    with tf.Graph().as_default():  # another graph, no variable scope open in it
        with tf.name_scope("ops_only"):  # TF's get_variable ignores name scopes: no prefix lost
            params = model.init(KEY, jnp.ones((1, 3)))
    assert set(params) == {"dense"}
    with v1.variable_scope("outer"):
        with tf.Graph().as_default():  # the scope belongs to the default graph outside
            assert set(model.init(KEY, jnp.ones((1, 3)))) == {"dense"}


def test_apply_not_found_under_a_tf_variable_scope_says_it(tf):
    v1 = tf.compat.v1
    model = sp.transform(lambda x: sp.layers.dense(x, 2))
    params = {"net": model.init(KEY, jnp.ones((1, 3)))}  # e.g. loaded from TF: names under 'net/'

    def fn(x):
        with v1.variable_scope("net"):
            return sp.layers.dense(x, 2)

    with pytest.raises(sp.ParamNotFoundError, match=r"(?s)'dense/kernel'.*tf.variable_scope\('net'\) "
                                                     r"is open.*sp.scope"):
        sp.transform(fn).apply(params, jnp.ones((1, 3)))


# --- a parameter read in a custom_vjp's bwd ---------------------------------------------------------


def test_get_param_in_a_custom_vjp_bwd_says_bwd_runs_after_apply_and_names_residuals():
    def scale():
        with sp.scope("m", reuse=sp.AUTO_REUSE):
            return sp.get_param("scale", (), init=jax.nn.initializers.ones)

    def fn(x):
        s = scale()

        @jax.custom_vjp
        def f(x):
            return x
        f.defvjp(lambda x: (x, None), lambda _, g: (g * scale(),))  # TF's grad_fn reading a variable
        return (f(x) * s).sum()

    model = sp.transform(fn)
    params = model.init(KEY, jnp.ones(3))
    with pytest.raises(sp.NotInTransformError, match=r"(?s)sp.scope\(\) was called in the bwd function "
                                                     r"of a jax.custom_vjp.*fix: .*fwd's residuals"):
        jax.grad(lambda x: model.apply(params, x))(jnp.ones(3))
    with pytest.raises(sp.NotInTransformError, match="called outside a transformed function"):
        sp.get_param("w", (1,))  # elsewhere: the usual message


# -- the second audit's slips ---------------------------------------------------------------------


def test_the_rnn_api_takes_tfs_dtypes_as_get_param_does(tf):
    x = jnp.ones((2, 5, 3))

    def fn(x, dtype):
        cell = sp.rnn.GRUCell(8, dtype=dtype)
        out = sp.rnn.dynamic_rnn(cell, x, dtype=dtype)[0]
        lstm = sp.rnn.BasicLSTMCell(4)
        return out.sum() + sp.rnn.dynamic_rnn(lstm, x, initial_state=lstm.zero_state(2, dtype))[0].sum()

    model = sp.transform(fn)
    params = model.init(KEY, x, tf.float32)
    assert model.apply(params, x, tf.float32) == model.apply(params, x, jnp.float32)


def test_a_gru_cell_called_with_no_state_says_what_state_it_takes():
    def fn(x):
        return sp.rnn.GRUCell(8)(x, None)

    with pytest.raises(ValueError, match=re.escape(
            "sp.rnn.GRUCell: the state given to GRUCell 'gru_cell' does not fit it: the state should "
            "be one array of shape (2, 8), got None.\n  fix: pass a state of the cell's structure")):
        sp.transform(fn).init(KEY, jnp.ones((2, 3)))


@pytest.mark.parametrize("lookup", ["embedding", "embedding_lookup"])
def test_float_ids_are_told_to_be_cast_to_integers(lookup):
    def fn(ids):
        if lookup == "embedding":
            return sp.layers.embedding(ids, 10, 4)
        return sp.layers.embedding_lookup(sp.get_param("table", [10, 4]), ids)

    with pytest.raises(TypeError) as info:
        sp.transform(fn).init(KEY, jnp.ones((2, 3)))
    message = str(info.value)
    assert "the ids have dtype float32; ids index the table's rows and must be integers" in message
    assert message.endswith("fix: cast them, ids.astype(jnp.int32) (ids read from data often arrive "
                            "as floats).")
    if lookup == "embedding":
        assert message.startswith("sp.layers.embedding 'embedding' (table 'embedding/embeddings'")


def test_a_name_that_is_none_gets_a_fix_with_a_real_name():
    with pytest.raises(TypeError, match=re.escape(
            "sp.get_param: name must be a string, got NoneType (None).\n"
            "  fix: pass the name as a string, e.g. sp.get_param('weights', ...).")):
        sp.transform(lambda: sp.get_param(None, [2])).init(KEY)


def test_saving_the_params_state_pair_says_to_save_each_or_merge_them(tmp_path):
    model = sp.transform_with_state(lambda x: sp.layers.batch_normalization(x, training=True))
    variables = model.init(KEY, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=re.escape(
            "got tuple of 2 dicts, as transform_with_state's init returns (params, state).\n"
            "  fix: save each in its own file, or both in one: sp.merge(params, state).")):
        sp.checkpoint.save(tmp_path / "model.safetensors", variables)
    sp.checkpoint.save(tmp_path / "model.safetensors", sp.merge(*variables))


def test_a_tf_variable_scope_object_in_sp_scope_is_named_as_tensorflows(tf):
    with tf.Graph().as_default(), tf.compat.v1.variable_scope("tower") as tower:
        pass

    with pytest.raises(TypeError, match=re.escape(
            "TensorFlow's own scope, which sp does not see.\n  fix: pass its name, "
            "sp.scope('tower'), or capture an sp.Scope")):
        sp.transform(lambda: sp.scope(tower).__enter__()).init(KEY)


def test_a_transform_with_state_apply_without_its_state_says_the_state_was_left_out():
    model = sp.transform_with_state(
        lambda x, training: sp.layers.batch_normalization(x, training=training))
    x = jnp.ones((2, 3))
    params, state = model.init(KEY, x, True)
    with pytest.raises(sp.ParamsTypeError, match=re.escape(
            "got an array of shape (2, 3): transform_with_state's apply is apply(params, state, "
            "*args), so this is probably the model's first input, and the state was left out.")):
        model.apply(params, x, True)
    model.apply(params, state, x, True)


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 3)])
def test_slim_conv2d_on_the_wrong_rank_names_its_scope_the_shape_and_a_fix(shape):
    def fn(x):
        with sp.scope("vgg_16"):
            return sp.slim.conv2d(x, 4, [3, 3], scope="conv1")

    fix = "x[None, ..., None]" if len(shape) == 2 else "x[None]"
    with pytest.raises(ValueError, match=re.escape(
            f"slim.conv2d in scope 'conv1': Convolution expects input with rank 4, got {len(shape)} "
            f"(full shape received: {shape}; as TF).\n  fix: ")) as info:
        sp.transform(fn).init(KEY, jnp.ones(shape))
    assert fix in str(info.value)


def test_layer_norm_on_too_low_a_rank_names_the_layer_the_shape_and_a_fix():
    with pytest.raises(ValueError, match=re.escape(
            "layer_norm: begin_params_axis (-1) and begin_norm_axis (1) must be < rank(inputs) (1), "
            "input shape (3,) (as TF).\n  fix: give the input a batch axis (x[None])")):
        sp.transform(lambda x: sp.layers.layer_norm(x)).init(KEY, jnp.ones((3,)))


def test_a_regularizer_or_activation_calling_tf_ops_is_told_to_use_jax_numpy(tf):
    wd = 1e-4

    def regularized(x):
        with sp.scope("fc1"):
            w = sp.get_param("weights", [3, 4], regularizer=lambda w: wd * tf.nn.l2_loss(w))
        return x @ w, sp.regularization_loss()

    with pytest.raises(TypeError, match=re.escape(
            "sp.regularization_loss(): the regularizer of 'fc1/weights', ")) as info:
        sp.transform(regularized).init(KEY, jnp.ones((2, 3)))
    assert "calls TensorFlow ops on the JAX array" in str(info.value)
    assert "fix: write it with jax.numpy: wd * tf.nn.l2_loss(w) is sp.l2_regularizer(wd)" in str(info.value)

    for layer in (lambda x: sp.layers.dense(x, 4, activation=lambda v: tf.nn.leaky_relu(v, alpha=0.2)),
                  lambda x: sp.layers.conv1d(x, 4, 1, activation=lambda v: tf.nn.leaky_relu(v))):
        with pytest.raises(TypeError, match="calls TensorFlow ops on the layer's JAX array") as info:
            sp.transform(layer).init(KEY, jnp.ones((2, 3, 3)))
        assert "fix: write it with jax.numpy or jax.nn" in str(info.value)


@pytest.mark.parametrize("name, base", [("w:0", "w"), ("dense/kernel:1", "dense/kernel")])
def test_a_parameter_named_with_tfs_tensor_suffix_is_told_to_drop_it(name, base):
    suffix = name[len(base):]
    with pytest.raises(sp.InvalidNameError, match=re.escape(
            f"'{name}' is not a valid parameter name ('{suffix}' ends TF's name of a variable's "
            f"tensor, not its own).\n  fix: drop '{suffix}' and ask for '{base}'.")):
        sp.transform(lambda: sp.get_param(name, [2])).init(KEY)
