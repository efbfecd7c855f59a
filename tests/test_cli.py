"""`python -m scoped_params inspect`, run as a real subprocess on real files of both formats."""

import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from scoped_params import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def inspect(*args):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "scoped_params", "inspect", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "filter.safetensors"
    ckpt.save(path, {
        "image_filters": {"conv1": {"weights": np.zeros((5, 5, 32, 32), np.float32),
                                    "biases": np.arange(32, dtype=np.float32)}},
        "head": {"w": np.array([[1.5, -2.0]], ml_dtypes.bfloat16), "ids": np.arange(3)}},
        metadata={"step": "1000"})
    return path


def test_inspect_prints_names_shapes_dtypes_sizes_and_totals(weights_file):
    result = inspect(weights_file)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.startswith("image_filters/conv1/weights"))
    assert row.split() == ["image_filters/conv1/weights", "[5,", "5,", "32,", "32]", "float32",
                           "25,600", "100.0", "KiB"]
    assert any(line.split()[:3] == ["head/w", "[1,", "2]"] and "bfloat16" in line for line in lines)
    assert "4 tensors, 25,637 values, 100.2 KiB (102,556 bytes)" in result.stdout
    assert "step: 1000" in result.stdout


def test_inspect_tensor_prints_its_values(weights_file):
    result = inspect(weights_file, "--tensor", "head/w")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "tensor_name: head/w [1, 2] bfloat16"
    assert "[[1.5 -2]]" in result.stdout


def test_inspect_all_prints_every_tensor(weights_file):
    result = inspect(weights_file, "--all")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("tensor_name:") == 4
    assert "[0 1 2]" in result.stdout


def test_inspect_errors_are_one_clear_line_and_exit_status_1(weights_file, tmp_path):
    unknown = inspect(weights_file, "--tensor", "head/ww")
    assert unknown.returncode == 1
    assert "no tensor named 'head/ww'" in unknown.stderr and "'head/w'" in unknown.stderr
    bad = tmp_path / "bad.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[-7] ^= 0x10
    bad.write_bytes(data)
    corrupt = inspect(bad)
    assert corrupt.returncode == 1 and "Traceback" not in corrupt.stderr
    assert str(bad) in corrupt.stderr and "checksum mismatch" in corrupt.stderr
    missing = inspect(tmp_path / "missing.safetensors")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


def test_inspect_piped_into_head_exits_quietly(tmp_path):
    path = tmp_path / "big.safetensors"  # --all prints ~1 MB: far more than a pipe holds
    ckpt.save(path, {f"w{i}": np.linspace(0, 1, 999) for i in range(100)})
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = f"{sys.executable} -m scoped_params inspect {path} --all | head -2"
    result = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.stdout.splitlines()[0] == "tensor_name: w0 [999] float64"
    assert result.stderr == ""


@pytest.fixture(scope="module")
def tf1_checkpoint(tmp_path_factory):
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        with v1.variable_scope("image_filters/conv1"):
            w = v1.get_variable("weights", [5, 5, 3, 8])
            b = v1.get_variable("biases", [8], initializer=v1.constant_initializer(0.25))
        step = v1.train.get_or_create_global_step()
        v1.train.MomentumOptimizer(0.1, 0.9).minimize(tf.reduce_sum(w) + tf.reduce_sum(b),
                                                      global_step=step)
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            return saver.save(sess, str(tmp_path_factory.mktemp("tf1") / "model.ckpt"))


def test_inspect_reads_tf1_checkpoints_and_marks_optimizer_state(tf1_checkpoint):
    result = inspect(tf1_checkpoint)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"TF checkpoint {tf1_checkpoint}"
    row = next(line for line in lines if line.startswith("image_filters/conv1/weights "))
    assert row.split()[-4:] == ["float32", "600", "2.3", "KiB"]
    assert any(line.startswith("image_filters/conv1/weights/Momentum*") for line in lines)
    assert any(line.startswith("global_step*") for line in lines)
    assert "5 tensors, 1,217 values" in result.stdout
    assert "skipped by sp.checkpoint.load_tf1" in result.stdout


def test_inspect_prints_a_tf1_tensor_given_the_checkpoint_directory(tf1_checkpoint):
    result = inspect(os.path.dirname(tf1_checkpoint), "--tensor", "image_filters/conv1/biases")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "tensor_name: image_filters/conv1/biases [8] float32"
    assert "[0.25 0.25 0.25 0.25 0.25 0.25 0.25 0.25]" in result.stdout


def test_inspect_prints_a_scalar_with_its_own_dtypes_digits_like_tf(tmp_path):
    # TF's inspect_checkpoint prints a float32 0.9 * 0.9 as 0.80999994, a float16 0.1 as 0.1 and a
    # bfloat16 0.1 as 0.100098 (as in an array), never with a float64's digits (0.809999942779541)
    path = tmp_path / "scalars.safetensors"
    ckpt.save(path, {"beta1_power": np.float32(0.9) * np.float32(0.9), "f16": np.float16(0.1),
                     "bf16": np.asarray(0.1, ml_dtypes.bfloat16), "vec": np.array([0.81], np.float32)})
    for name, want in [("beta1_power", "0.80999994"), ("f16", "0.1"), ("bf16", "0.100098"),
                       ("vec", "[0.81]")]:
        result = inspect(path, "--tensor", name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1:] == [want], (name, result.stdout)
    everything = inspect(path, "--all").stdout
    assert "\n0.80999994\n" in everything and "0.809999942779541" not in everything


def test_inspect_all_with_tensor_prints_every_tensor_as_tf_inspect_checkpoint_does(weights_file):
    # TF's print_tensors_in_checkpoint_file: all_tensors wins over tensor_name.
    result = inspect(weights_file, "--all", "--tensor", "head/w")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("tensor_name:") == 4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_inspect_of_a_fifo_or_a_path_through_a_file_says_so_without_a_traceback(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    (tmp_path / "afile").write_bytes(b"x")
    for path, why in ((fifo, "not a regular file"), (tmp_path / "afile" / "w.safetensors",
                                                     "is a file, not a directory")):
        result = inspect(path)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("error: ") and why in result.stderr, result.stderr
