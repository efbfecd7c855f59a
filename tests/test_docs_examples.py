"""The guides in ``docs/`` run as printed: their Python blocks, executed in order in one session.

``docs/migrating_from_tf1.md`` walks through porting the TF 1.x image filter: the TF block runs in a
TF graph, its session's weights are saved with ``Saver``, and the scoped_params blocks that follow
load them and must give TF's outputs, print the summary the guide shows, and save, reuse and
checkpoint as it says. ``docs/sharding.md``'s first block runs on the 8 host devices of the test
session. Indented blocks are fragments inside a list item (a model the reader brings), shown for
reading, and are not run.
"""

import contextlib
import io
import re
from pathlib import Path

import jax
import numpy as np
import pytest

import scoped_params as sp

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _blocks(name):
    """The guide's top-level Python blocks, in order (indented ones are list-item fragments)."""
    text = (DOCS / name).read_text()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if not b[:1].isspace()]


def _run(block, namespace, where, replace=()):
    for old, new in replace:
        assert old in block, f"{where} no longer mentions {old!r}: update this test with the guide"
        block = block.replace(old, new)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, where, "exec"), namespace)
    return out.getvalue()


def _shown_output(block):
    """The output a block shows as ``# ...`` comments right after the call that prints it."""
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sp.summary("))
    shown = []
    for line in lines[start + 1:]:
        if not line.startswith("#"):
            break
        shown.append(line[2:] if line.startswith("# ") else line[1:])
    return shown


def test_migration_walkthrough_runs_and_matches_tf(tmp_path, monkeypatch):
    tf = pytest.importorskip("tensorflow")
    monkeypatch.chdir(tmp_path)
    blocks = _blocks("migrating_from_tf1.md")
    assert len(blocks) == 7, "the walk-through's blocks changed: update this test with the guide"
    tf_block, port, session, load, save, student, train = blocks
    ckpt_dir, run_dir = tmp_path / "filter", tmp_path / "filter_run"

    # The TF 1.x program, as printed, in a graph; trained weights stand in for its training.
    graph = tf.Graph()
    tf_namespace: dict = {}
    with graph.as_default():
        _run(tf_block, tf_namespace, "migrating_from_tf1.md, TF block")
        v1 = tf.compat.v1
        saver = v1.train.Saver()
        rng = np.random.default_rng(0)
        images1, images2 = (rng.standard_normal((8, 16, 16, 32)).astype(np.float32)
                            for _ in range(2))
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            expected = sess.run([tf_namespace["result1"], tf_namespace["result2"]],
                                {tf_namespace["image1"]: images1, tf_namespace["image2"]: images2})
            saver.save(sess, str(ckpt_dir / "model.ckpt"))

    namespace: dict = {"images1": images1, "images2": images2}
    _run(port, namespace, "migrating_from_tf1.md, step 1")
    printed = _run(session, namespace, "migrating_from_tf1.md, step 2")
    assert printed.splitlines() == _shown_output(session), "step 2 prints another summary"
    assert set(sp.flatten(namespace["params"])) == {
        f"image_filters/{c}/{p}" for c in ("conv1", "conv2") for p in ("weights", "biases")}

    _run(load, namespace, "migrating_from_tf1.md, step 3", [("/tmp/filter", str(ckpt_dir))])
    scale = float(np.abs(expected[0]).max())  # unit-variance weights: outputs in the hundreds
    for got, want in zip((namespace["result1"], namespace["result2"]), expected):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6 * scale)

    _run(save, namespace, "migrating_from_tf1.md, step 4")
    assert (tmp_path / "filter.safetensors").exists()
    _run(student, namespace, "migrating_from_tf1.md, step 4 (student)")
    loaded = sp.flatten(namespace["params"])
    for name, value in sp.flatten(namespace["new_params"]).items():
        np.testing.assert_array_equal(value, loaded[name.removeprefix("student/")])

    optax = pytest.importorskip("optax")
    pytest.importorskip("orbax.checkpoint")
    namespace.update(optax=optax, step=1)
    _run(train, namespace, "migrating_from_tf1.md, step 5", [("/tmp/filter_run", str(run_dir))])
    restored = sp.checkpoint.TrainingCheckpointer(str(run_dir)).restore(target=namespace["state"])
    assert namespace["ckpt"].latest_step() == 1
    jax.tree.map(np.testing.assert_array_equal, restored, namespace["state"])


def test_sharding_guide_first_example_runs_on_8_devices(monkeypatch, tmp_path):
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
    monkeypatch.chdir(tmp_path)
    block = _blocks("sharding.md")[0]
    namespace: dict = {}
    _run(block, namespace, "sharding.md, first block")
    from jax.sharding import PartitionSpec as P
    params, shardings = namespace["params"], namespace["shardings"]
    hidden, logits = params["mlp"]["hidden_0"], params["mlp"]["logits"]
    assert hidden["kernel"].sharding.spec == P(None, "model")  # what the block's last line shows
    assert hidden["bias"].sharding.spec == P("model")
    assert logits["kernel"].sharding.spec == P(None, "model")
    assert jax.tree.map(lambda a: a.sharding, params) == shardings
