"""TF 1.x checkpoints: models built and saved with tf.compat.v1 (variable_scope/get_variable,
tf.layers, partitioned variables) load with sp.checkpoint.load_tf1 and give the same outputs."""

import contextlib
import os
import shutil
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp
from scoped_params import checkpoint as ckpt
from scoped_params import layers
from _scripts import load_example

tf = pytest.importorskip("tensorflow")
v1 = tf.compat.v1

pytestmark = pytest.mark.filterwarnings("ignore:`tf.layers.*is deprecated")

TOL = dict(rtol=1e-5, atol=1e-5)


def _session_save(graph, prefix, before_save=None, **saver_kwargs):
    """Initialize every variable of ``graph``, run ``before_save(sess)``, save with ``Saver``."""
    with graph.as_default():
        saver = v1.train.Saver(**saver_kwargs)
        sess = v1.Session(graph=graph)
        sess.run(v1.global_variables_initializer())
        if before_save:
            before_save(sess)
        path = saver.save(sess, prefix)
    return sess, path


# -- the seeds' image filter ---------------------------------------------------------------------

def tf_image_filter(image1, image2):
    """seeds/000 verbatim, except small weights so outputs are O(1) and 1e-5 is meaningful."""
    def conv_relu(input, kernel_shape, bias_shape):
        weights = v1.get_variable("weights", kernel_shape,
                                  initializer=v1.random_normal_initializer(stddev=0.05))
        biases = v1.get_variable("biases", bias_shape,
                                 initializer=v1.random_normal_initializer(stddev=0.1))
        conv = tf.nn.conv2d(input, weights, strides=[1, 1, 1, 1], padding="SAME")
        return tf.nn.relu(conv + biases)

    def my_image_filter(input_images):
        with v1.variable_scope("conv1"):
            relu1 = conv_relu(input_images, [5, 5, 32, 32], [32])
        with v1.variable_scope("conv2"):
            return conv_relu(relu1, [5, 5, 32, 32], [32])

    with v1.variable_scope("image_filters") as scope:
        result1 = my_image_filter(image1)
        scope.reuse_variables()
        result2 = my_image_filter(image2)
    return result1, result2


# The scoped_params side is examples/image_filter.py itself: only the spelling differs from TF's.
sp_image_filter = load_example("image_filter").two_images


@pytest.fixture(scope="module")
def image_filter_checkpoint(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((2, 12, 12, 32)).astype(np.float32) for _ in range(2)]
    graph = tf.Graph()
    with graph.as_default():
        x1, x2 = (v1.placeholder(tf.float32, (None, 12, 12, 32)) for _ in range(2))
        r1, r2 = tf_image_filter(x1, x2)
        step = v1.train.get_or_create_global_step()
        v1.train.AdamOptimizer(1e-3).minimize(tf.reduce_sum(r1), global_step=step)
    directory = tmp_path_factory.mktemp("tf_filter")
    sess, prefix = _session_save(graph, str(directory / "model.ckpt"))
    outputs = sess.run([r1, r2], {x1: images[0], x2: images[1]})
    sess.close()
    return prefix, images, outputs


def test_seed_image_filter_from_tf1_saver_gives_the_same_outputs(image_filter_checkpoint):
    prefix, images, (tf_r1, tf_r2) = image_filter_checkpoint
    params = ckpt.load_tf1(prefix)
    model = sp.transform(sp_image_filter)
    expected = model.init(jax.random.key(0), *images)
    assert sorted(sp.flatten(params)) == sorted(sp.flatten(expected))  # same names, nothing extra
    r1, r2 = jax.jit(model.apply)(params, *images)
    np.testing.assert_allclose(r1, tf_r1, **TOL)
    np.testing.assert_allclose(r2, tf_r2, **TOL)
    assert float(np.abs(tf_r1).mean()) > 0.05  # the comparison is not between zeros


def test_a_checkpoint_directory_or_any_of_its_files_names_the_same_checkpoint(
        image_filter_checkpoint):
    prefix = image_filter_checkpoint[0]
    expected = sp.flatten(ckpt.load_tf1(prefix))
    for path in (os.path.dirname(prefix), prefix + ".index", prefix + ".data-00000-of-00001"):
        got = sp.flatten(ckpt.load_tf1(path))
        assert got.keys() == expected.keys()
        assert all(np.array_equal(got[k], expected[k]) for k in got)


def test_optimizer_slots_and_global_step_are_skipped_unless_asked(image_filter_checkpoint):
    prefix = image_filter_checkpoint[0]
    names = set(sp.flatten(ckpt.load_tf1(prefix)))
    assert not any("Adam" in n or "power" in n or "global_step" in n for n in names)
    everything = ckpt.load_tf1(prefix, include_optimizer_state=True, flat=True)
    assert {"global_step", "beta1_power", "beta2_power", "image_filters/conv1/weights/Adam",
            "image_filters/conv1/weights/Adam_1"} <= set(everything)
    assert names <= set(everything)
    with pytest.raises(ValueError, match="flat=True"):
        ckpt.load_tf1(prefix, include_optimizer_state=True)


def test_init_from_checkpoint_reads_a_tf1_checkpoint_with_a_scope_map(image_filter_checkpoint):
    prefix, images, (tf_r1, _) = image_filter_checkpoint

    def student(x):
        with sp.scope("student"):
            return sp_image_filter(x, x)[0]

    model = sp.transform(student)
    params = model.init(jax.random.key(1), images[0])
    params = ckpt.init_from_checkpoint(prefix, params, {"image_filters/": "student/image_filters/"})
    np.testing.assert_allclose(model.apply(params, images[0]), tf_r1, **TOL)


def test_init_from_checkpoint_restores_global_step_and_optimizer_slots_by_name_as_tf(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        w = v1.get_variable("w", initializer=np.ones(2, np.float32))
        v1.get_variable("w/scale", initializer=np.float32(2.0))  # a variable under variable 'w'
        step = v1.train.get_or_create_global_step()
        train = v1.train.AdamOptimizer(0.1).minimize(v1.reduce_sum(w ** 2), global_step=step)
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"), lambda s: s.run(train))
    sess.close()
    assignment = {"global_step": "gs", "w/Adam": "m", "w/scale": "scale"}
    with tf.Graph().as_default():  # TF 1.x restores them by name
        tf_vars = {"gs": v1.get_variable("gs", (), tf.int64, v1.zeros_initializer()),
                   "m": v1.get_variable("m", (2,), initializer=v1.zeros_initializer()),
                   "scale": v1.get_variable("scale", (), initializer=v1.zeros_initializer())}
        v1.train.init_from_checkpoint(prefix, assignment)
        with v1.Session() as s:
            s.run(v1.global_variables_initializer())
            expected = s.run(tf_vars)
    params = {"gs": np.zeros((), np.int64), "m": np.zeros(2, np.float32),
              "scale": np.zeros((), np.float32)}
    out = ckpt.init_from_checkpoint(prefix, params, assignment)
    assert expected["gs"] == 1 and out["gs"] == 1 and out["scale"] == expected["scale"] == 2.0
    np.testing.assert_array_equal(out["m"], expected["m"])
    # A scope map fills the parameters params has, as TF fills the graph's variables: slots only
    # where params has a name for them, the model's variables whatever the checkpoint holds besides.
    model = {"w": np.zeros(2, np.float32)}
    out = ckpt.init_from_checkpoint(prefix, {"new": model}, {"/": "new/"})
    np.testing.assert_array_equal(out["new"]["w"], ckpt.load_variable(prefix, "w"))
    out = ckpt.init_from_checkpoint(prefix, {"new": {"w": {"Adam": np.zeros(2, np.float32)}}},
                                    {"/": "new/"})
    np.testing.assert_array_equal(out["new"]["w"]["Adam"], expected["m"])


# -- a tf.compat.v1.layers CNN vs sp.layers ------------------------------------------------------

def tf_cnn(x):
    x = v1.layers.conv2d(x, 8, 3, padding="same", activation=tf.nn.relu)
    x = v1.layers.batch_normalization(x, training=False)
    x = v1.layers.max_pooling2d(x, 2, 2)
    x = v1.layers.conv2d(x, 16, 3, strides=2, padding="valid", activation=tf.nn.relu)
    x = v1.layers.flatten(x)
    x = v1.layers.dense(x, 32, activation=tf.nn.relu)
    return v1.layers.dense(x, 10)


def sp_cnn(x):
    x = layers.conv2d(x, 8, 3, padding="same", activation=jax.nn.relu)
    x = layers.batch_normalization(x, training=False)
    x = layers.max_pooling2d(x, 2, 2)
    x = layers.conv2d(x, 16, 3, strides=2, padding="valid", activation=jax.nn.relu)
    x = layers.flatten(x)
    x = layers.dense(x, 32, activation=jax.nn.relu)
    return layers.dense(x, 10)


def test_tf_layers_cnn_from_tf1_saver_gives_the_same_outputs_as_sp_layers(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.standard_normal((4, 16, 16, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, (None, 16, 16, 3))
        logits = tf_cnn(x)

    def randomize_batch_norm(sess):  # non-trivial statistics, so loading them is actually checked
        with graph.as_default():
            for v in v1.global_variables():
                if "batch_normalization" in v.name:
                    low = 0.5 if "variance" in v.name or "gamma" in v.name else -0.5
                    v.load(rng.uniform(low, low + 1, v.shape).astype(np.float32), sess)

    sess, prefix = _session_save(graph, str(tmp_path / "cnn.ckpt"), randomize_batch_norm)
    tf_logits = sess.run(logits, {x: images})
    sess.close()

    loaded = ckpt.load_tf1(prefix)
    model = sp.transform_with_state(sp_cnn)
    param_specs, state_specs = model.specs(images)
    state_names = set(sp.flatten(state_specs))
    state, params = sp.partition(lambda name, _: name in state_names, loaded)
    assert sorted(sp.flatten(params)) == sorted(sp.flatten(param_specs))
    assert sorted(state_names) == ["batch_normalization/moving_mean",
                                   "batch_normalization/moving_variance"]
    out, _ = jax.jit(model.apply)(params, state, images)
    np.testing.assert_allclose(out, tf_logits, **TOL)


# -- partitioned variables -----------------------------------------------------------------------

def _partitioned_graph():
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("emb", partitioner=v1.fixed_size_partitioner(3, axis=0)):
            table = v1.get_variable("table", [10, 4],
                                    initializer=v1.random_normal_initializer())
        with v1.variable_scope("proj", partitioner=v1.fixed_size_partitioner(2, axis=1)):
            kernel = v1.get_variable("kernel", [4, 6], initializer=v1.random_normal_initializer())
        ids = v1.placeholder(tf.int32, (None,))
        full_table, full_kernel = table.as_tensor(), kernel.as_tensor()
        # "div": id i is row i of the concatenated table, which is what jnp.take does. (TF's default
        # "mod" puts id i in part i % n; docs/migrating_from_tf1.md shows the row reordering.)
        rows = v1.nn.embedding_lookup(table, ids, partition_strategy="div")
        out = tf.matmul(rows, full_kernel)
    return graph, table, kernel, ids, out, (full_table, full_kernel)


def sp_embed_project(ids):
    with sp.scope("emb"):
        table = sp.get_param("table", (10, 4))
    with sp.scope("proj"):
        kernel = sp.get_param("kernel", (4, 6))
    return jnp.take(table, ids, axis=0) @ kernel


def test_partitioned_variables_saved_by_saver_come_back_whole(tmp_path):
    graph, table, kernel, ids, out, full = _partitioned_graph()
    sess, prefix = _session_save(graph, str(tmp_path / "part.ckpt"))
    feed = np.array([0, 3, 4, 9], np.int32)
    expected, (full_table, full_kernel) = sess.run([out, full], {ids: feed})
    sess.close()
    params = ckpt.load_tf1(prefix)
    np.testing.assert_array_equal(params["emb"]["table"], full_table)
    np.testing.assert_array_equal(params["proj"]["kernel"], full_kernel)
    np.testing.assert_allclose(sp.transform(sp_embed_project).apply(params, feed), expected, **TOL)


def test_partitions_saved_one_by_one_are_reassembled_from_their_slice_info(tmp_path):
    graph, table, kernel, ids, out, full = _partitioned_graph()
    parts = {v.op.name: v for v in list(table) + list(kernel)}
    assert sorted(parts) == ["emb/table/part_0", "emb/table/part_1", "emb/table/part_2",
                             "proj/kernel/part_0", "proj/kernel/part_1"]
    # A var_list dict saves each part under its own name: the checkpoint holds v/part_N entries.
    sess, prefix = _session_save(graph, str(tmp_path / "parts.ckpt"), var_list=parts)
    full_table, full_kernel = sess.run(full)
    sess.close()
    assert "proj/kernel/part_1" in tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the .meta slice info decides the axis: no guessing
        params = ckpt.load_tf1(prefix)
    np.testing.assert_array_equal(params["emb"]["table"], full_table)      # 4 + 3 + 3 rows
    np.testing.assert_array_equal(params["proj"]["kernel"], full_kernel)   # 3 + 3 columns (axis 1)


def test_partitions_without_a_meta_graph_use_the_differing_axis_or_warn(tmp_path):
    graph, table, kernel, ids, out, full = _partitioned_graph()
    parts = {v.op.name: v for v in list(table) + list(kernel)}
    sess, prefix = _session_save(graph, str(tmp_path / "nometa.ckpt"), var_list=parts)
    full_table = sess.run(full[0])
    sess.close()
    os.unlink(prefix + ".meta")
    with pytest.warns(UserWarning, match=r"(?s)'proj/kernel'.*axis 0"):
        params = ckpt.load_tf1(prefix)
    np.testing.assert_array_equal(params["emb"]["table"], full_table)  # rows differ: axis 0, sure
    assert params["proj"]["kernel"].shape == (8, 3)  # equal parts, no slice info: axis 0 assumed


def test_parts_renamed_by_a_var_list_warn_that_the_meta_graph_lacks_their_slice_info(tmp_path):
    graph, table, kernel, *_ = _partitioned_graph()
    parts = {f"renamed/kernel/part_{i}": v for i, v in enumerate(kernel)}
    sess, prefix = _session_save(graph, str(tmp_path / "renamed.ckpt"), var_list=parts)
    sess.close()
    assert os.path.isfile(prefix + ".meta")  # there is a graph; it names the parts otherwise
    with pytest.warns(UserWarning, match=r"(?s)'renamed/kernel'.*\.meta graph of '.*renamed.ckpt' "
                                         r"has no slice info for them.*var_list.*axis 0") as record:
        ckpt.load_tf1(prefix)
    assert not any("has no .meta graph" in str(w.message) for w in record)


# -- V1-format checkpoints (one file at the prefix, no .index: slim's released .ckpt files) -------

def _v1_checkpoint(tmp_path, build):
    graph = tf.Graph()
    with graph.as_default():
        build()
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"),
                                 write_version=v1.train.SaverDef.V1)
    sess.close()
    assert os.path.isfile(prefix) and not os.path.exists(prefix + ".index")
    return prefix


def test_a_v1_format_checkpoint_is_read_by_its_prefix_as_by_its_directory(tmp_path):
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)
    prefix = _v1_checkpoint(tmp_path, lambda: v1.get_variable("dense/kernel", initializer=kernel))
    # TF's table magic ends the file, as it ends a V2 .index (kTableMagicNumber, little-endian)
    assert open(prefix, "rb").read()[-8:] == bytes.fromhex("57fb808b247547db")
    assert ckpt.is_tf1_checkpoint(prefix) and ckpt.is_tf1_source(prefix)
    assert ckpt.is_tf1_checkpoint(prefix + ".meta")
    for path in (prefix, prefix + ".meta", tmp_path):
        np.testing.assert_array_equal(ckpt.load_tf1(path)["dense"]["kernel"], kernel)
    assert ckpt.list_variables(prefix) == [(n, tuple(s)) for n, s in tf.train.list_variables(prefix)]
    np.testing.assert_array_equal(ckpt.load_variable(prefix, "dense/kernel"), kernel)
    out = ckpt.init_from_checkpoint(prefix, {"dense": {"kernel": np.zeros((2, 3), np.float32)}},
                                    {"/": "/"})
    np.testing.assert_array_equal(out["dense"]["kernel"], kernel)


def test_a_v1_variable_tfs_reader_cannot_read_names_the_format_and_the_v2_fix(tmp_path):
    def build():
        v1.get_variable("half", initializer=np.ones(3, np.float16))
        with v1.variable_scope("emb", partitioner=v1.fixed_size_partitioner(2)):
            v1.get_variable("table", [4, 2])

    prefix = _v1_checkpoint(tmp_path, build)
    for name, why in (("half", "Data type not supported"),
                      ("emb/table", "Sliced checkpoints are not supported")):
        with pytest.raises(tf.errors.UnimplementedError, match=why):  # TF's own reader: the same
            tf.train.load_checkpoint(prefix).get_tensor(name)
        with pytest.raises(ckpt.CheckpointCorruptError,
                           match=rf"(?s)tensor '{name}' of TF checkpoint '.*model.ckpt'.*V1 format"
                                 rf".*{why}.*fix: .*Saver\(\)\.save") as info:
            ckpt.load_variable(prefix, name)
        assert "are present" not in str(info.value) and info.value.filename == prefix
    with pytest.raises(ckpt.CheckpointCorruptError, match="V1 format"):
        ckpt.load_tf1(prefix)


def test_a_v1_file_whose_byte_8_is_a_brace_is_still_tf_unless_it_has_a_safetensors_length(tmp_path):
    # A V1 file starts with varints (00 00 <len> 0a <len> ...): byte 8 can be '{' (0x7b) in a big
    # one, but its first 8 bytes never give a header length that fits the file.
    magic = bytes.fromhex("57fb808b247547db")
    v1_like = tmp_path / "big.ckpt"
    v1_like.write_bytes(bytes.fromhex("0000a4b77b0ad9b7") + b"{" + bytes(100) + magic)
    assert ckpt.is_tf1_checkpoint(v1_like) and ckpt.is_tf1_source(v1_like)
    weights = tmp_path / "w.safetensors"  # a weights file that happens to end with the magic
    ckpt.save(weights, {"w": np.frombuffer(magic, np.uint8)})
    assert open(weights, "rb").read()[-8:] == magic
    assert ckpt.is_tf1_checkpoint(weights) and not ckpt.is_tf1_source(weights)
    np.testing.assert_array_equal(ckpt.load(weights)["w"], np.frombuffer(magic, np.uint8))


# -- errors --------------------------------------------------------------------------------------

def test_missing_tf_checkpoint_names_the_path(tmp_path):
    with pytest.raises(ckpt.CheckpointNotFoundError, match=r"(?s)nothere.ckpt.*\.index"):
        ckpt.load_tf1(tmp_path / "nothere.ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoint in it"):
        ckpt.load_tf1(tmp_path)


def test_a_data_file_whose_values_look_like_a_safetensors_header_is_read_as_tf(tmp_path):
    graph = tf.Graph()
    with graph.as_default():  # byte 8 of the data file is 123, '{': a safetensors header's first
        v1.get_variable("v", initializer=np.array([0, 0, 123, 0], np.int32))
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"))
    sess.close()
    data = prefix + ".data-00000-of-00001"
    assert open(data, "rb").read(9)[8:] == b"{"
    assert ckpt.is_tf1_source(data) and ckpt.list_variables(data) == [("v", (4,))]
    np.testing.assert_array_equal(ckpt.load_variable(data, "v"), [0, 0, 123, 0])
    out = ckpt.init_from_checkpoint(data, {"v": np.zeros(4, np.int32)}, {"v": "v"})
    np.testing.assert_array_equal(out["v"], [0, 0, 123, 0])


def test_an_invalid_checkpoint_state_file_falls_back_to_the_one_checkpoint_or_names_the_file(
        tmp_path, image_filter_checkpoint):
    src = image_filter_checkpoint[0]
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(src + suffix, tmp_path / ("model.ckpt-7" + suffix))
    state = tmp_path / "checkpoint"
    state.write_text("")  # TF raises "Invalid checkpoint state" for a state naming no checkpoint
    expected = ckpt.list_variables(src)
    assert ckpt.list_variables(tmp_path) == expected
    assert sorted(sp.flatten(ckpt.load_tf1(tmp_path))) == sorted(sp.flatten(ckpt.load_tf1(src)))
    for suffix in (".index", ".data-00000-of-00001"):
        shutil.copy(src + suffix, tmp_path / ("model.ckpt-8" + suffix))
    with pytest.raises(ckpt.CheckpointCorruptError,
                       match=r"(?s)state file '.*checkpoint' names no checkpoint.*2 checkpoints.*"
                             r"fix: pass the prefix") as info:
        ckpt.list_variables(tmp_path)
    assert info.value.filename == str(state)


def test_an_unparsable_or_stale_state_file_with_several_checkpoints_is_named_as_such(
        tmp_path, image_filter_checkpoint):
    src = image_filter_checkpoint[0]
    for step in (7, 8):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(src + suffix, tmp_path / (f"model.ckpt-{step}" + suffix))
    state = tmp_path / "checkpoint"
    for garbage in (b"\x00\xc3\xbf garbage {{{", b"\xff garbage"):  # not a proto; not UTF-8
        state.write_bytes(garbage)  # TF logs a parse error (or raises UnicodeDecodeError)
        with pytest.raises(ckpt.CheckpointCorruptError,
                           match=r"(?s)state file '.*checkpoint' cannot be parsed.*2 checkpoints.*"
                                 r"fix: pass the prefix") as info:
            ckpt.load_tf1(tmp_path)
        assert "no 'checkpoint' state file" not in str(info.value)
        assert "names no checkpoint" not in str(info.value)
        assert info.value.filename == str(state)
    state.write_text('model_checkpoint_path: "model.ckpt-9"\n')  # names one that is gone
    with pytest.raises(ckpt.CheckpointNotFoundError,
                       match=r"(?s)state file '.*checkpoint' names '.*model.ckpt-9', which does not "
                             r"exist.*2 checkpoints.*model.ckpt-7.*fix: pass the prefix") as info:
        ckpt.load_tf1(tmp_path)
    assert "no 'checkpoint' state file" not in str(info.value)


def test_a_damaged_tf_checkpoint_raises_an_error_naming_it(tmp_path, image_filter_checkpoint):
    src = image_filter_checkpoint[0]
    prefix = str(tmp_path / "model.ckpt")
    for suffix in (".index", ".data-00000-of-00001"):
        data = open(src + suffix, "rb").read()
        with open(prefix + suffix, "wb") as f:
            f.write(data[: len(data) // 2] if suffix == ".index" else data)
    with pytest.raises(ckpt.CheckpointCorruptError, match="model.ckpt"):
        ckpt.load_tf1(prefix)


def test_without_tensorflow_the_message_names_the_tf_extra(tmp_path, image_filter_checkpoint,
                                                            monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails
    with pytest.raises(ImportError, match=r"scoped_params\[tf\]") as info:
        ckpt.load_tf1(image_filter_checkpoint[0])
    assert isinstance(info.value, sp.ScopedParamsError)


def test_use_moving_averages_loads_each_variables_exponential_moving_average_like_tf(tmp_path):
    # TF's evaluation recipe: saver = Saver(ema.variables_to_restore()); its values, by name.
    graph = v1.Graph()
    with graph.as_default():
        x = v1.placeholder(v1.float32, [4, 3])
        with v1.variable_scope("net"):
            y = v1.layers.batch_normalization(v1.layers.dense(x, 2), training=True)
        loss = v1.reduce_sum(y ** 2)
        step = v1.train.GradientDescentOptimizer(0.1).minimize(
            loss, var_list=v1.trainable_variables())
        ema = v1.train.ExponentialMovingAverage(0.5)
        with v1.control_dependencies([step]):
            train = ema.apply(v1.trainable_variables())
        sess, prefix = _session_save(graph, str(tmp_path / "ema.ckpt"), before_save=lambda s: [
            s.run(train, {x: np.random.RandomState(i).randn(4, 3)}) for i in range(3)])
        with graph.as_default():
            restore = ema.variables_to_restore()  # {checkpoint entry: variable restored from it}
            averaged = {v.op.name: sess.run(ema.average(v)) for v in v1.trainable_variables()}
        sess.close()
    raw = sp.flatten(ckpt.load_tf1(prefix))
    averages = sp.flatten(ckpt.load_tf1(prefix, use_moving_averages=True))
    assert sorted(raw) == sorted(averages) == sorted(v.op.name for v in restore.values())
    for name, value in averages.items():
        np.testing.assert_array_equal(value, averaged.get(name, raw[name]))
    assert set(averaged) == {"net/dense/kernel", "net/dense/bias", "net/batch_normalization/gamma",
                             "net/batch_normalization/beta"}
    assert not np.allclose(averages["net/dense/kernel"], raw["net/dense/kernel"])  # they differ
    np.testing.assert_array_equal(averages["net/batch_normalization/moving_mean"],
                                  raw["net/batch_normalization/moving_mean"])  # not averaged


def test_use_moving_averages_on_a_checkpoint_without_them_is_an_error(image_filter_checkpoint):
    prefix, _, _ = image_filter_checkpoint
    with pytest.raises(ValueError, match=r"has no '<variable>/ExponentialMovingAverage' entries"):
        ckpt.load_tf1(prefix, use_moving_averages=True)


def test_list_variables_and_load_variable_read_a_tf1_checkpoint_as_tf_does(image_filter_checkpoint,
                                                                            tmp_path):
    prefix = image_filter_checkpoint[0]
    expected = [(name, tuple(shape)) for name, shape in tf.train.list_variables(prefix)
                if name != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert ckpt.list_variables(prefix) == expected  # slots and global_step included, as TF lists them
    assert ckpt.list_variables(os.path.dirname(prefix)) == expected
    for name in ("image_filters/conv1/weights", "image_filters/conv2/biases/Adam_1", "global_step"):
        np.testing.assert_array_equal(ckpt.load_variable(prefix, name),
                                      tf.train.load_variable(prefix, name))
    with pytest.raises(KeyError, match="did you mean 'image_filters/conv1/weights'"):
        ckpt.load_variable(prefix, "image_filters/conv1/weight")
    graph, table, kernel, *_ = _partitioned_graph()  # parts saved one by one: listed as saved
    parts = {v.op.name: v for v in list(table) + list(kernel)}
    sess, parts_prefix = _session_save(graph, str(tmp_path / "parts.ckpt"), var_list=parts)
    sess.close()
    assert [n for n, _ in ckpt.list_variables(parts_prefix)] == sorted(parts)


def test_slots_saved_under_the_scope_minimize_ran_in_are_optimizer_state_not_params(tmp_path):
    # TF 1.x names a slot '<variable scope of minimize()>/<variable>/<slot>': 'train/model/w/Adam'.
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("model"):
            w = v1.get_variable("w", [3, 4])
            # minimize() inside the model's own scope: 'model/model/w/Momentum'
            momentum = v1.train.MomentumOptimizer(0.1, 0.9).minimize(tf.reduce_sum(w), var_list=[w])
        emb = v1.get_variable("embedding", [10, 4])
        with v1.variable_scope("decoder/embedding"):
            named_like_a_slot = v1.get_variable("Adam", [4])  # a model variable, not emb's slot
        loss = tf.reduce_sum(tf.matmul(emb, w, transpose_b=True)) + tf.reduce_sum(named_like_a_slot)
        with v1.variable_scope("train"):
            adam = v1.train.AdamOptimizer(0.1).minimize(loss, var_list=[w, emb, named_like_a_slot])
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"),
                                 lambda s: s.run([adam, momentum]))
    sess.close()
    saved = {n for n, _ in tf.train.list_variables(prefix)}
    slots = {"train/model/w/Adam", "train/model/w/Adam_1", "train/embedding/Adam",
             "train/embedding/Adam_1", "train/decoder/embedding/Adam/Adam",
             "train/decoder/embedding/Adam/Adam_1", "model/model/w/Momentum",
             "train/beta1_power", "train/beta2_power"}
    model = {"model/w", "embedding", "decoder/embedding/Adam"}
    assert saved == slots | model
    assert set(sp.flatten(ckpt.load_tf1(prefix))) == model
    assert set(ckpt.load_tf1(prefix, include_optimizer_state=True, flat=True)) == saved


def test_use_moving_averages_with_the_averages_saved_under_a_scope_is_an_error_as_in_tf(tmp_path):
    # ema.apply() inside tf.variable_scope("ema") saves 'ema/net/w/ExponentialMovingAverage'.
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("net"):
            w = v1.get_variable("w", [3])
            b = v1.get_variable("b", [3])
        train = v1.train.GradientDescentOptimizer(0.5).minimize(tf.reduce_sum(tf.square(w + b - 3)))
        ema = v1.train.ExponentialMovingAverage(0.9)
        with tf.control_dependencies([train]), v1.variable_scope("ema"):
            step = ema.apply([w, b])
    sess, prefix = _session_save(graph, str(tmp_path / "ema.ckpt"),
                                 lambda s: [s.run(step) for _ in range(3)])
    sess.close()
    assert [n for n, _ in tf.train.list_variables(prefix)] == [
        "ema/net/b/ExponentialMovingAverage", "ema/net/w/ExponentialMovingAverage", "net/b", "net/w"]
    with tf.Graph().as_default():  # TF's evaluation recipe cannot restore it either
        with v1.variable_scope("net"):
            v1.get_variable("w", [3]), v1.get_variable("b", [3])
        saver = v1.train.Saver(v1.train.ExponentialMovingAverage(0.9).variables_to_restore())
        with v1.Session() as s, pytest.raises(tf.errors.NotFoundError,
                                              match="net/b/ExponentialMovingAverage"):
            saver.restore(s, prefix)
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.load_tf1(prefix, use_moving_averages=True)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (
        f"load_tf1(use_moving_averages=True): {prefix!r} has no '<variable>/ExponentialMovingAverage' "
        "for 2 variables whose averages it holds under another name, as ema.apply() saves them "
        "when it runs inside a variable scope: 'net/b' ('ema/net/b/ExponentialMovingAverage'), "
        "'net/w' ('ema/net/w/ExponentialMovingAverage'); TF's Saver(ema.variables_to_restore()) "
        "fails on it as well (NotFoundError).\n"
        "  fix: map the averages by name: params = sp.checkpoint.load_tf1(path); params = "
        "sp.checkpoint.init_from_checkpoint(path, params, {'ema/net/b/ExponentialMovingAverage': "
        "'net/b', 'ema/net/w/ExponentialMovingAverage': 'net/w'}).")
    assert sorted(sp.flatten(ckpt.load_tf1(prefix))) == ["net/b", "net/w"]  # the averages are state
    # The fix the message gives loads the averages.
    params = ckpt.init_from_checkpoint(prefix, ckpt.load_tf1(prefix), {
        f"ema/{n}/ExponentialMovingAverage": n for n in ("net/b", "net/w")})
    np.testing.assert_array_equal(
        params["net"]["w"], tf.train.load_variable(prefix, "ema/net/w/ExponentialMovingAverage"))


def _averaged_partitioned_run(tmp_path, scope, plain=True):
    """A partitioned variable 'net/w' (split along axis 1) and a plain 'v', averaged by ema.apply()
    (inside variable_scope(scope) unless None; 'v' only if ``plain``), then moved away from their
    averages: (the default Saver's prefix, a Saver({v.op.name: v})'s prefix, {variable: TF's
    average})."""
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("net", partitioner=v1.fixed_size_partitioner(2, axis=1)):
            w = v1.get_variable("w", [3, 4], initializer=v1.random_normal_initializer(seed=1))
        v = v1.get_variable("v", [3], initializer=v1.random_normal_initializer(seed=2))
        ema = v1.train.ExponentialMovingAverage(0.5)
        with v1.variable_scope(scope) if scope else contextlib.nullcontext():
            average = ema.apply(list(w) + [v] * plain)
        move = [p.assign(p * 3 + 1) for p in list(w) + [v]]
        averages = {"net/w": tf.concat([ema.average(p) for p in w], axis=1)}
        if plain:
            averages["v"] = ema.average(v)
        by_op_name = v1.train.Saver({x.op.name: x for x in v1.global_variables()})
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"),
                                 lambda s: [s.run(op) for op in (average, move, average, move)])
    with graph.as_default():
        resaved = by_op_name.save(sess, str(tmp_path / "resaved" / "model.ckpt"))
        expected = sess.run(averages)
    sess.close()
    return prefix, resaved, expected


def test_use_moving_averages_of_a_partitioned_variable_averaged_in_a_scope_is_an_error_naming_it(
        tmp_path):
    # The default Saver keeps each part's average of 'net/w' under a mangled name holding its slice
    # alone ('net/w/t_0/ExponentialMovingAverage'); TF's recipe cannot restore them. Reading 'net/w'
    # itself would be the raw weights, silently.
    prefix, resaved, expected = _averaged_partitioned_run(tmp_path, "ema")
    assert [n for n, _ in tf.train.list_variables(prefix)] == [
        "ema/v/ExponentialMovingAverage", "net/w", "net/w/t_0/ExponentialMovingAverage",
        "net/w/t_1/ExponentialMovingAverage", "v"]
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.load_tf1(prefix, use_moving_averages=True)
    message = str(info.value)
    assert message.startswith(
        f"load_tf1(use_moving_averages=True): {prefix!r} has no '<variable>/ExponentialMovingAverage'"
        " for 2 variables whose averages it holds under another name, as ema.apply() saves them "
        "when it runs inside a variable scope: 'net/w' ('net/w/t_0/ExponentialMovingAverage', "
        "'net/w/t_1/ExponentialMovingAverage': slices, one per part), 'v' "
        "('ema/v/ExponentialMovingAverage');"), message
    assert "\n  found: the average of the partitioned variable 'net/w' is saved in slices" in message
    mapping = {"ema/net/w/ExponentialMovingAverage": "net/w", "ema/v/ExponentialMovingAverage": "v"}
    assert message.endswith(
        "\n  fix: restore the checkpoint in TF and save each variable under its own name, "
        "tf.compat.v1.train.Saver({v.op.name: v for v in tf.compat.v1.global_variables()})"
        ".save(sess, new_prefix) (load_tf1 joins each part's average there as it joins the parts); "
        "then map the averages by name: params = sp.checkpoint.load_tf1(new_prefix); params = "
        f"sp.checkpoint.init_from_checkpoint(new_prefix, params, {mapping})."), message
    # The fix it gives loads TF's averages, each part's slice in its place along axis 1.
    params = ckpt.init_from_checkpoint(resaved, ckpt.load_tf1(resaved), mapping)
    np.testing.assert_array_equal(params["net"]["w"], expected["net/w"])
    np.testing.assert_array_equal(params["v"], expected["v"])
    with pytest.raises(ckpt.CheckpointMismatchError, match=(  # still in a scope: the map, joined
            r"'net/w' \('ema/net/w/ExponentialMovingAverage'\), 'v' .*\n  fix: map the averages")):
        ckpt.load_tf1(resaved, use_moving_averages=True)
    # Averaged alone, 'net/w' was loaded raw, with no error.
    alone, _, _ = _averaged_partitioned_run(tmp_path / "alone", "ema", plain=False)
    with pytest.raises(ckpt.CheckpointMismatchError, match=(
            r"for 1 variable whose average .*: 'net/w' \('net/w/t_0/ExponentialMovingAverage', "
            r"'net/w/t_1/ExponentialMovingAverage': slices, one per part\);")):
        ckpt.load_tf1(alone, use_moving_averages=True)


def test_use_moving_averages_joins_the_averages_of_a_variable_saved_part_by_part_as_tf_restores(
        tmp_path):
    # Saver({v.op.name: v}) keeps 'net/w/part_0/ExponentialMovingAverage' per part; TF's recipe
    # restores each part from its own average.
    _, resaved, expected = _averaged_partitioned_run(tmp_path, None)
    assert "net/w/part_1/ExponentialMovingAverage" in dict(tf.train.list_variables(resaved))
    with tf.Graph().as_default():
        with v1.variable_scope("net", partitioner=v1.fixed_size_partitioner(2, axis=1)):
            w = v1.get_variable("w", [3, 4])
        saver = v1.train.Saver(v1.train.ExponentialMovingAverage(0.5).variables_to_restore(list(w)))
        with v1.Session() as s:
            saver.restore(s, resaved)
            restored = s.run(w.as_tensor())
    np.testing.assert_array_equal(restored, expected["net/w"])
    params = ckpt.load_tf1(resaved, use_moving_averages=True)
    np.testing.assert_array_equal(params["net"]["w"], expected["net/w"])
    np.testing.assert_array_equal(params["v"], expected["v"])
    assert not np.allclose(ckpt.load_tf1(resaved)["net"]["w"], expected["net/w"])  # raw differs
    flat = ckpt.load_tf1(resaved, include_optimizer_state=True, flat=True)
    assert sorted(flat) == ["net/w", "net/w/ExponentialMovingAverage", "v",
                            "v/ExponentialMovingAverage"]
    np.testing.assert_array_equal(flat["net/w/ExponentialMovingAverage"], expected["net/w"])


# -- which entries are optimizer state -----------------------------------------------------------

def test_variables_under_a_scope_named_like_a_variable_are_model_variables_not_slots(tmp_path):
    # TF 1.x accepts a variable 'emb' next to variables under the scope 'emb/': only an entry one
    # component past a variable, of its shape, is a slot ('emb/Adam'); 'emb/proj/kernel' and the
    # scalar 'emb/scale' are the model's.
    from scoped_params import _inspect

    graph = tf.Graph()
    with graph.as_default():
        emb = v1.get_variable("emb", [10, 4])
        with v1.variable_scope("emb"):
            scale = v1.get_variable("scale", [])
            y = v1.layers.dense(tf.nn.embedding_lookup(emb, [1, 2]) * scale, 3, name="proj")
        train = v1.train.AdamOptimizer(0.1).minimize(tf.reduce_sum(y))
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"), lambda s: s.run(train))
    sess.close()
    saved = {n for n, _ in tf.train.list_variables(prefix)}
    model = {"emb", "emb/scale", "emb/proj/kernel", "emb/proj/bias"}
    assert {"emb/Adam", "emb/scale/Adam_1", "emb/proj/kernel/Adam", "beta1_power"} <= saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = ckpt.load_tf1(prefix, flat=True)
    assert set(flat) == model
    for name in model:
        np.testing.assert_array_equal(flat[name], tf.train.load_variable(prefix, name))
    with pytest.raises(sp.NameCollisionError, match=r"(?s)model.ckpt.*fix: pass flat=True"):
        ckpt.load_tf1(prefix)  # 'emb' is a leaf and a scope: no nested tree holds both
    assert set(ckpt.load_tf1(prefix, include_optimizer_state=True, flat=True)) == saved
    notes = {e.name: e.note for e in _inspect._Source(prefix).entries}
    assert {n for n, note in notes.items() if note} == saved - model  # inspect's '*': the slots


def _partitioned_adam_in_a_scope(tmp_path):
    """Adam's minimize() inside variable_scope("train") on a partitioned variable: TF saves each
    part's slot under a mangled name ('model/l1/w/art_0/Adam') holding that part's slice alone."""
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("model"):
            with v1.variable_scope("l1", partitioner=v1.fixed_size_partitioner(2)):
                w = v1.get_variable("w", [6, 4])
            b = v1.get_variable("b", [4], initializer=v1.constant_initializer(0.5))
        loss = tf.reduce_sum(tf.matmul(tf.ones([1, 6]), w) + b)
        with v1.variable_scope("train"):
            train = v1.train.AdamOptimizer(0.1).minimize(loss)
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"), lambda s: s.run(train))
    sess.close()
    assert {n for n, _ in tf.train.list_variables(prefix)} == {
        "model/b", "model/l1/w", "model/l1/w/art_0/Adam", "model/l1/w/art_0/Adam_1",
        "model/l1/w/art_1/Adam", "model/l1/w/art_1/Adam_1", "train/beta1_power",
        "train/beta2_power", "train/model/b/Adam", "train/model/b/Adam_1"}
    return prefix


def test_init_from_checkpoint_reads_only_the_entries_its_map_names(tmp_path):
    prefix = _partitioned_adam_in_a_scope(tmp_path)
    with tf.Graph().as_default():  # TF's init_from_checkpoint loads the map fine
        with v1.variable_scope("model"):
            b = v1.get_variable("b", [4])
        v1.train.init_from_checkpoint(prefix, {"model/b": "model/b"})
        with v1.Session() as s:
            s.run(v1.global_variables_initializer())
            expected = s.run(b)
    out = ckpt.init_from_checkpoint(prefix, {"model": {"b": jnp.zeros(4)}}, {"model/b": "model/b"})
    np.testing.assert_array_equal(out["model"]["b"], expected)
    assert not np.allclose(expected, 0.5)  # trained: the value is the checkpoint's
    params = {"model": {"b": np.zeros(4, np.float32), "l1": {"w": np.zeros((6, 4), np.float32)}}}
    out = ckpt.init_from_checkpoint(prefix, params, {"model/": "model/"})
    np.testing.assert_array_equal(out["model"]["l1"]["w"], tf.train.load_variable(prefix, "model/l1/w"))
    # The mangled slots are optimizer state: skipped by load_tf1 and marked '*' by inspect.
    assert set(ckpt.load_tf1(prefix, flat=True)) == {"model/b", "model/l1/w"}
    from scoped_params import _inspect
    notes = {e.name: e.note for e in _inspect._Source(prefix).entries}
    assert notes["model/l1/w/art_0/Adam"] == notes["train/model/b/Adam"] == "*"
    assert notes["model/l1/w"] == notes["model/b"] == ""


def test_an_entry_saved_as_some_slices_only_is_named_as_such_not_as_a_damaged_file(tmp_path):
    prefix = _partitioned_adam_in_a_scope(tmp_path)
    with pytest.raises(ValueError, match="sufficient slices"):  # TF's reader cannot read it either
        tf.train.load_checkpoint(prefix).get_tensor("model/l1/w/art_0/Adam")
    calls = [lambda: ckpt.load_tf1(prefix, include_optimizer_state=True, flat=True),
             lambda: ckpt.load_variable(prefix, "model/l1/w/art_0/Adam"),
             lambda: ckpt.init_from_checkpoint(prefix, {"m": np.zeros((6, 4), np.float32)},
                                               {"model/l1/w/art_0/Adam": "m"}),
             lambda: sp.optimizers.adam_state_from_tf1(prefix, {"model": {"b": np.zeros(4)}})]
    for call in calls:
        with pytest.raises(ckpt.CheckpointError) as info:
            call()
        message = str(info.value)
        assert not isinstance(info.value, ckpt.CheckpointCorruptError), message
        assert isinstance(info.value, ValueError)
        assert message.startswith(f"cannot read tensor 'model/l1/w/art_0/Adam' of TF checkpoint "
                                  f"{prefix!r}: it holds only some slices of it"), message
        assert "minimize() ran inside a variable scope" in message, message
        assert "\n  fix: " in message and "are present" not in message, message
        assert info.value.filename == prefix


def test_variables_named_part_n_are_merged_only_when_the_meta_graph_says_they_are_parts(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("encoder"):  # two ordinary variables, no partitioner
            v1.get_variable("part_0", [3], initializer=v1.constant_initializer(1.0))
            v1.get_variable("part_1", [5], initializer=v1.constant_initializer(2.0))
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"))
    sess.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = ckpt.load_tf1(prefix, flat=True)
    assert sorted(flat) == ["encoder/part_0", "encoder/part_1"]
    np.testing.assert_array_equal(flat["encoder/part_0"], np.ones(3, np.float32))
    np.testing.assert_array_equal(flat["encoder/part_1"], np.full(5, 2.0, np.float32))

    def port():
        with sp.scope("encoder"):
            return sp.get_param("part_0", (3,)) @ jnp.ones(3) + sp.get_param("part_1", (5,)).sum()

    assert float(sp.transform(port).apply(ckpt.load_tf1(prefix))) == 13.0
    out = ckpt.init_from_checkpoint(prefix, {"part_1": np.zeros(5, np.float32)},
                                    {"encoder/part_1": "part_1"})
    np.testing.assert_array_equal(out["part_1"], np.full(5, 2.0, np.float32))
    os.unlink(prefix + ".meta")  # without the graph, the names are all there is: parts, joined
    assert ckpt.load_tf1(prefix, flat=True)["encoder"].tolist() == [1.0] * 3 + [2.0] * 5


def _keras_optimizer_checkpoint(tmp_path, optimizer):
    graph = tf.Graph()  # (tf.keras is tf_keras here: TF_USE_LEGACY_KERAS=1, see conftest.py)
    with graph.as_default():
        model = tf.keras.Sequential([tf.keras.layers.Dense(2, input_shape=(3,))])
        loss = tf.reduce_sum(model(tf.ones([4, 3])))
        variables = model.trainable_variables
        train = optimizer().apply_gradients(zip(tf.gradients(loss, variables), variables))
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"), lambda s: s.run(train))
    sess.close()
    return prefix


@pytest.mark.parametrize("optimizer,weights", [
    ("Adam", {"iter", "beta_1", "beta_2", "decay", "learning_rate"}),
    ("SGD", {"iter", "decay", "learning_rate", "momentum"}),  # no slots at all
])
def test_a_keras_optimizers_iterations_and_hyperparameters_are_optimizer_state(tmp_path, optimizer,
                                                                               weights):
    pytest.importorskip("tf_keras")  # Keras 3's optimizers cannot run in a TF 1.x graph
    prefix = _keras_optimizer_checkpoint(tmp_path, getattr(tf.keras.optimizers.legacy, optimizer))
    saved = {n for n, _ in tf.train.list_variables(prefix)}
    assert {f"{optimizer}/{w}" for w in weights} <= saved
    assert sorted(ckpt.load_tf1(prefix, flat=True)) == ["dense/bias", "dense/kernel"]
    assert set(ckpt.load_tf1(prefix, include_optimizer_state=True, flat=True)) == saved


def test_scalars_named_like_a_keras_optimizers_weights_are_model_variables_without_its_iter(
        tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("Adam"):  # a model's own scope, not a Keras optimizer's weights
            for name in ("learning_rate", "beta_1", "decay"):
                v1.get_variable(name, [])
        with v1.variable_scope("SGD"):  # an 'iter' alone, without 'decay'
            v1.get_variable("iter", [], tf.int64, v1.zeros_initializer())
            v1.get_variable("learning_rate", [])
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"))
    sess.close()
    assert sorted(ckpt.load_tf1(prefix, flat=True)) == [
        "Adam/beta_1", "Adam/decay", "Adam/learning_rate", "SGD/iter", "SGD/learning_rate"]


def test_saving_a_typed_prng_key_says_to_save_its_key_data(tmp_path):
    key = jax.random.key(0, impl="rbg")
    path = tmp_path / "state.safetensors"
    with pytest.raises(TypeError) as info:
        ckpt.save(path, {"rng": key})
    message = str(info.value)
    assert message.startswith("sp.checkpoint.save: 'rng' is a typed PRNG key (key<rbg>[])"), message
    assert "outside jax.jit" not in message, message
    assert "fix: save jax.random.key_data(key)" in message, message
    assert "jax.random.wrap_key_data(data, impl='rbg')" in message, message
    assert "sp.checkpoint.TrainingCheckpointer" in message, message
    assert not path.exists()
    ckpt.save(path, {"rng": jax.random.key_data(key)})  # the fix works
    restored = jax.random.wrap_key_data(ckpt.load(path)["rng"], impl="rbg")
    np.testing.assert_array_equal(jax.random.key_data(restored), jax.random.key_data(key))


def test_init_from_checkpoint_of_float64_values_into_float32_params_names_jax_x64(tmp_path):
    assert not jax.config.jax_enable_x64
    table = np.random.RandomState(0).randn(3, 2)  # float64: TF makes a float64 variable
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("embedding"):
            v1.get_variable("table", initializer=table)
        v1.get_variable("steps", initializer=np.int64(7))
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"))
    sess.close()

    def port():
        with sp.scope("embedding"):
            sp.get_param("table", init=table)
        sp.get_param("steps", init=np.int64(7))

    params = sp.transform(port).init(jax.random.key(0))
    assert params["embedding"]["table"].dtype == jnp.float32 and params["steps"].dtype == jnp.int32
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(prefix, params, {"/": "/"})
    message = str(info.value)
    assert ("'embedding/table': dtype float32 in params, but 'embedding/table' has dtype float64 in "
            f"TF 1.x checkpoint {prefix!r} (jax_enable_x64 is off: JAX makes 64-bit values 32-bit)"
            in message), message
    assert "'steps': dtype int32 in params, but 'steps' has dtype int64" in message, message
    fix = message.split("\n  fix: ")[1]
    assert fix.startswith("cast the checkpoint's 64-bit values first: source = jax.tree.map(lambda "
                          "a: np.asarray(a, jax.dtypes.canonicalize_dtype(a.dtype)), "
                          f"sp.checkpoint.load_tf1({prefix!r}, flat=True)), then "
                          "init_from_checkpoint(source, params, assignment_map); or turn on "
                          "jax_enable_x64"), message
    # The fix works.
    source = jax.tree.map(lambda a: np.asarray(a, jax.dtypes.canonicalize_dtype(a.dtype)),
                          ckpt.load_tf1(prefix, flat=True))
    out = ckpt.init_from_checkpoint(source, params, {"/": "/"})
    np.testing.assert_array_equal(out["embedding"]["table"], table.astype(np.float32))
    assert int(out["steps"]) == 7


def test_entries_named_part_n_whose_shapes_cannot_be_pieces_of_one_array_stay_apart(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("x"):
            v1.get_variable("part_0", [2, 3])
            v1.get_variable("part_1", [4, 5])
            v1.get_variable("part_2", [])
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"))
    sess.close()
    os.unlink(prefix + ".meta")  # the names alone: but no array is made of these three pieces
    flat = ckpt.load_tf1(prefix, flat=True)
    assert {n: v.shape for n, v in flat.items()} == {"x/part_0": (2, 3), "x/part_1": (4, 5),
                                                     "x/part_2": ()}


def test_a_variable_saved_part_by_part_with_parts_missing_is_an_error_naming_them(tmp_path):
    graph, table, *_ = _partitioned_graph()
    parts = {v.op.name: v for i, v in enumerate(table) if i != 1}  # part 1 left out
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"), var_list=parts)
    sess.close()
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.load_tf1(prefix)
    message = str(info.value)
    assert message.startswith(
        f"cannot read 'emb/table' of TF checkpoint {prefix!r}: it is saved part by part, and the "
        "parts it holds ('emb/table/part_0', 'emb/table/part_2') cover 28 of the 40 values of its "
        "full shape (10, 4); the .meta graph's slice info names 'emb/table/part_1' too"), message
    assert "\n  fix: save every part" in message and info.value.filename == prefix
    np.testing.assert_array_equal(ckpt.load_variable(prefix, "emb/table/part_2"),
                                  tf.train.load_variable(prefix, "emb/table/part_2"))


def test_a_variable_saved_part_by_part_with_a_part_missing_and_no_meta_is_an_error_not_a_smaller_array(
        tmp_path):
    # Without the .meta graph's slice info, parts 0 and 2 joined would be a (7, 4) table with part 2's
    # rows where part 1's belong: the gap in the part numbers is the error.
    graph, table, *_ = _partitioned_graph()
    parts = {v.op.name: v for i, v in enumerate(table) if i != 1}
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"), var_list=parts)
    sess.close()
    os.unlink(prefix + ".meta")
    params = {"emb": {"table": np.zeros((10, 4), np.float32)}}
    for read in (ckpt.load_tf1, lambda p: ckpt.init_from_checkpoint(p, params, {"emb/": "emb/"})):
        with pytest.raises(ckpt.CheckpointMismatchError) as info:
            read(prefix)
        message = str(info.value)
        assert message.startswith(
            f"cannot read 'emb/table' of TF checkpoint {prefix!r}: it is saved part by part, and the "
            "checkpoint holds 'emb/table/part_0', 'emb/table/part_2' but not 'emb/table/part_1'"), message
        assert "\n  fix: save every part" in message and info.value.filename == prefix


def test_load_variable_reads_a_tensor_name_as_its_variable_as_tfs_does(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        w = v1.get_variable("net/w", [2, 3])
    sess, prefix = _session_save(graph, str(tmp_path / "model.ckpt"))
    sess.close()
    assert w.name == "net/w:0"
    np.testing.assert_array_equal(ckpt.load_variable(prefix, w.name),
                                  tf.train.load_variable(prefix, w.name))
    with pytest.raises(KeyError, match="no tensor named 'net/v' in TF checkpoint"):
        ckpt.load_variable(prefix, "net/v:0")


def test_variables_named_like_a_parts_slot_keep_their_names_and_slots_keep_their_part_names(
        tmp_path):
    # 'x/part_0/foo' beside a partitioned 'x' is a variable of its own when the .meta lists it
    # without slice info: not joined into an 'x/foo' the checkpoint does not have. A part's real
    # slot ('train/w/part_0/Adam') is joined for adam_state_from_tf1 and still there by its own
    # name for init_from_checkpoint, as TF lists it.
    from scoped_params._tf1 import TF1Entries

    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.get_variable("x", [4, 3], partitioner=v1.fixed_size_partitioner(2))
        for k in range(2):
            with v1.variable_scope(f"x/part_{k}"):
                v1.get_variable("foo", [2, 3], initializer=v1.ones_initializer())
        with v1.variable_scope("w_scope", partitioner=v1.fixed_size_partitioner(2)):
            w = v1.get_variable("w", [4, 3])
        with v1.variable_scope("train"):
            train = v1.train.AdamOptimizer(0.1).minimize(
                tf.reduce_sum(tf.square(w.as_tensor())) + tf.reduce_sum(x.as_tensor()))
        session.run(v1.global_variables_initializer())
        session.run(train)
        path = v1.train.Saver({v.op.name: v for v in v1.global_variables()}).save(
            session, str(tmp_path / "model.ckpt"))
    flat = sp.checkpoint.load_tf1(path, include_optimizer_state=True, flat=True)
    assert {"x/part_0/foo", "x/part_1/foo"} <= set(flat) and "x/foo" not in flat
    np.testing.assert_array_equal(flat["x/part_0/foo"], np.ones((2, 3), np.float32))
    assert flat["train/w_scope/w/Adam"].shape == (4, 3)
    entries = TF1Entries(path)
    assert "x/part_0/foo" in entries and "x/foo" not in entries
    assert "train/w_scope/w/part_0/Adam" in entries and "train/w_scope/w/Adam" in entries
    np.testing.assert_array_equal(entries["train/w_scope/w/part_1/Adam"],
                                  entries["train/w_scope/w/Adam"][2:])
