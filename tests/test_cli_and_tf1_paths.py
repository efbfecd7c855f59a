"""TF checkpoints by any of their paths (V1 sharded, glob characters, a missing '.index'), and the
`inspect` command's output: streamed, escaped, and its write failures told from read failures."""

import errno
import io
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

import scoped_params as sp
from scoped_params import _inspect
from scoped_params import checkpoint as ckpt
from scoped_params.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "TF_CPP_MIN_LOG_LEVEL": "2"}


def _tf():
    tf = pytest.importorskip("tensorflow")
    return tf, tf.compat.v1


def _save_tf1(directory, values, step=None, devices=1, prefix="model.ckpt", **saver_kwargs):
    """Save ``{name: array}`` with TF 1.x's Saver (one variable per CPU device, round robin)."""
    tf, v1 = _tf()
    graph = tf.Graph()
    with graph.as_default():
        for i, (name, value) in enumerate(values.items()):
            with tf.device(f"/cpu:{i % devices}"):
                v1.get_variable(name, initializer=value)
        config = v1.ConfigProto(device_count={"CPU": devices})
        with v1.Session(graph=graph, config=config) as sess:
            sess.run(v1.global_variables_initializer())
            return v1.train.Saver(**saver_kwargs).save(sess, os.path.join(directory, prefix),
                                                       global_step=step)


# -- V1-format sharded checkpoints ---------------------------------------------------------------

def test_a_v1_sharded_checkpoint_reads_whole_from_any_of_its_paths(tmp_path, capsys):
    tf, v1 = _tf()
    values = {"s0/w": np.arange(4, dtype=np.float32), "s1/w": np.arange(8, dtype=np.float32)}
    pattern = _save_tf1(str(tmp_path), values, devices=2, sharded=True,
                        write_version=v1.train.SaverDef.V1)
    base = str(tmp_path / "model.ckpt")
    assert pattern == base + "-?????-of-00002"
    shards = [base + "-00000-of-00002", base + "-00001-of-00002"]
    assert all(os.path.isfile(s) for s in shards) and os.path.isfile(base + ".meta")
    expected = sorted(tf.train.load_checkpoint(pattern).get_variable_to_shape_map())
    assert expected == ["s0/w", "s1/w"]
    os.remove(tmp_path / "checkpoint")  # the directory alone tells the shards are one checkpoint
    for path in [pattern, *shards, base, base + ".meta", tmp_path]:
        loaded = ckpt.load_tf1(path, flat=True)
        assert sorted(loaded) == expected, path
        np.testing.assert_array_equal(loaded["s1/w"], values["s1/w"])
        assert ckpt.is_tf1_checkpoint(path) and ckpt.is_tf1_source(path)
        assert ckpt.list_variables(path) == [("s0/w", (4,)), ("s1/w", (8,))]
        np.testing.assert_array_equal(ckpt.load_variable(path, "s0/w"), values["s0/w"])
    assert main(["inspect", shards[1]]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"TF checkpoint {pattern}\n") and "2 tensors, 12 values" in out
    with pytest.raises(ckpt.CheckpointCorruptError,
                       match=r"one shard of a V1-format checkpoint.*\n  fix: .*load_tf1\("
                             r"'.*model.ckpt-\?{5}-of-00002'"):
        ckpt.load(shards[0])

    os.remove(shards[1])  # TF's reader would read the shard that is left, silently
    with pytest.raises(ckpt.CheckpointNotFoundError,
                       match=r"(?s)V1 format, 2 shards\) is incomplete: there is no "
                             r"'.*model.ckpt-00001-of-00002'.*\n  fix: "):
        ckpt.load_tf1(pattern)
    # the one file left, given by its name, is read alone, as TF reads it (a checkpoint saved at a
    # prefix named like a shard, 'x-00001-of-00002', is such a file)
    assert sorted(ckpt.load_tf1(shards[0], flat=True)) == ["s0/w"]


def test_a_v1_checkpoint_saved_at_a_prefix_named_like_a_shard_reads_as_it_did(tmp_path):
    # 'x-12345-of-67890' alone is no shard of 67,890 (read as "incomplete", listing 67,889 names)
    _, v1 = _tf()
    values = {"w": np.arange(3, dtype=np.float32)}
    for name in ("x-12345-of-67890", "model.ckpt-00001-of-00002"):
        directory = tmp_path / name.split("-")[0]
        directory.mkdir()
        saved = _save_tf1(str(directory), values, prefix=name, write_version=v1.train.SaverDef.V1)
        assert os.path.basename(saved) == name
        for path in (saved, directory):
            np.testing.assert_array_equal(ckpt.load_tf1(path, flat=True)["w"], values["w"])


def test_a_directory_of_two_v1_sharded_checkpoints_lists_each_by_its_pattern(tmp_path):
    _, v1 = _tf()
    for step in (1, 2):
        _save_tf1(str(tmp_path), {"w": np.ones(2, np.float32), "v": np.ones(3, np.float32)},
                  step=step, devices=2, sharded=True, write_version=v1.train.SaverDef.V1)
    assert ckpt.load_tf1(tmp_path)["w"].shape == (2,)  # the state file names the latest
    os.remove(tmp_path / "checkpoint")
    with pytest.raises(ckpt.CheckpointNotFoundError,
                       match=r"has 2 checkpoints and no 'checkpoint' state file naming the latest: "
                             r"\['model.ckpt-1-\?{5}-of-00002', 'model.ckpt-2-\?{5}-of-00002'\]"):
        ckpt.load_tf1(tmp_path)


# -- glob characters in a path -------------------------------------------------------------------

def test_a_tf_checkpoint_in_a_directory_with_glob_characters_is_read_through_symlinks(
        tmp_path, monkeypatch, capsys):
    tf, v1 = _tf()
    directory = tmp_path / "exp[lr=0.1]"
    directory.mkdir()
    _save_tf1(str(directory), {"w": np.array([1.0, 2.0], np.float32)}, step=1)
    prefix = _save_tf1(str(directory), {"w": np.array([3.0, 4.0], np.float32)}, step=2)
    with pytest.raises(tf.errors.NotFoundError):  # TF's reader globs the path: '[lr=0.1]'
        tf.train.load_checkpoint(prefix)
    scratch = tmp_path / "scratch"  # where the symlinks go, removed with their reader
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    for path in (prefix, prefix + ".index", directory):
        np.testing.assert_array_equal(ckpt.load_tf1(path)["w"], [3.0, 4.0])
    (tmp_path / "run[1]").mkdir()  # the shards of a V1 checkpoint, by their pattern
    sharded = _save_tf1(str(tmp_path / "run[1]"), {"a": np.ones(2, np.float32),
                                                   "b": np.zeros(3, np.float32)},
                        devices=2, sharded=True, write_version=v1.train.SaverDef.V1)
    assert sorted(ckpt.load_tf1(sharded)) == ["a", "b"]
    np.testing.assert_array_equal(ckpt.load_variable(directory, "w"), [3.0, 4.0])
    assert main(["inspect", str(directory), "--all"]) == 0
    assert capsys.readouterr().out == "tensor_name: w [2] float32\n[3. 4.]\n"
    assert os.listdir(scratch) == []

    os.remove(prefix + ".data-00000-of-00001")  # TF's message names the checkpoint's own files
    named = r"model\.ckpt-2': .*exp\[lr=0\.1\]/model\.ckpt-2\.data-00000-of-00001"
    with pytest.raises(ckpt.CheckpointCorruptError, match=named) as info:
        ckpt.load_variable(prefix, "w")
    assert str(scratch) not in str(info.value)

    def no_symlinks(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    with pytest.raises(ckpt.CheckpointError,
                       match=r"(?s)exp\[lr=0\.1\]/model.ckpt-2': TF reads .*as a glob pattern.*"
                             r"\n  fix: rename the directory .*or copy") as info:
        ckpt.load_tf1(prefix)
    assert info.value.filename == prefix and os.listdir(scratch) == []


# -- a TF checkpoint without its '.index' --------------------------------------------------------

def test_a_tf_checkpoint_missing_its_index_is_named_by_every_reader_as_tfs_not_a_weights_file(
        tmp_path, capsys):
    prefix = str(tmp_path / "model.ckpt-1000")  # what an interrupted copy leaves: no '.index'
    (tmp_path / "model.ckpt-1000.data-00000-of-00001").write_bytes(b"\x00" * 8 + b"{" + b"\x01" * 7)
    (tmp_path / "model.ckpt-1000.meta").write_bytes(b"\x0a\x3a" + b"x" * 58)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-1000"\n')
    readers = [ckpt.load, ckpt.list_variables, ckpt.load_tf1,
               lambda path: ckpt.load_variable(path, "w")]
    for path in (prefix, prefix + ".data-00000-of-00001", prefix + ".meta"):
        for read in readers:
            with pytest.raises(ckpt.CheckpointNotFoundError,
                               match=rf"^TF checkpoint '{re.escape(path)}' not found: there is "
                                     rf"no '{re.escape(prefix)}.index'\.\n  fix: pass the prefix"):
                read(path)
        assert main(["inspect", path]) == 1
        err = capsys.readouterr().err
        assert f"there is no '{prefix}.index'" in err and "safetensors" not in err, err
    state = str(tmp_path / "checkpoint")
    for read in readers:
        with pytest.raises(ckpt.CheckpointNotFoundError,
                           match=r"'checkpoint' state file of TF checkpoint directory .*\n  fix: "
                                 r"pass the directory: sp.checkpoint.load_tf1\(") as info:
            read(state)
        assert info.value.filename == state
    assert main(["inspect", state]) == 1
    assert "pass the directory" in capsys.readouterr().err


# -- inspect's output ----------------------------------------------------------------------------

def test_inspect_all_prints_every_readable_tensor_then_the_errors_and_exits_1(tmp_path, capsys):
    _, v1 = _tf()  # TF's reader cannot read a float16 variable of a V1-format checkpoint
    _save_tf1(str(tmp_path), {"a": np.array([1.0], np.float32), "half": np.ones(2, np.float16),
                              "z": np.array([2.0], np.float32)}, write_version=v1.train.SaverDef.V1)
    assert main(["inspect", str(tmp_path), "--all"]) == 1
    out, err = capsys.readouterr()
    assert out == "tensor_name: a [1] float32\n[1.]\n\ntensor_name: z [1] float32\n[2.]\n"
    assert err.startswith("error: cannot read tensor 'half' of TF checkpoint"), err
    assert err.count("error: ") == 1 and "Traceback" not in err


def test_inspect_all_prints_each_tensor_as_soon_as_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    ckpt.save(path, {f"w{i}": np.full(2, i, np.float32) for i in range(3)})
    read = []
    values = _inspect.values
    monkeypatch.setattr(_inspect, "values", lambda source, name: read.append(name)
                        or values(source, name))

    class ClosedAfterOne(io.StringIO):  # `inspect --all | head -2`
        def flush(self):
            if self.getvalue():
                raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        _inspect.run(str(path), all_values=True, out=ClosedAfterOne())
    assert read == ["w0"]


def _run_inspect(*args, env, stdout=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "scoped_params", "inspect", *args], env=env,
                          stdout=stdout, stderr=subprocess.PIPE, timeout=120)


def test_inspect_prints_a_path_or_name_its_stdout_cannot_encode_escaped(tmp_path):
    directory = os.path.join(os.fsencode(tmp_path), b"caf\xe9")  # Latin-1, as an old file server's
    try:
        os.mkdir(directory)
    except (OSError, UnicodeError):
        pytest.skip("the file system takes only UTF-8 names")
    path = os.path.join(directory, b"w.safetensors")
    ckpt.save(os.fsdecode(path), {"w\u00e9ight": np.ones(2, np.float32)})
    # PYTHONUTF8: the path's byte comes as the surrogate '\udce9' whatever the machine's locale
    for encoding, shown in (("utf-8", rb"caf\udce9"), ("ascii", rb"w\xe9ight")):
        env = {**ENV, "PYTHONUTF8": "1", "PYTHONIOENCODING": f"{encoding}:strict"}
        result = _run_inspect(path, env=env)
        assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr
        assert shown in result.stdout and b"1 tensors, 2 values" in result.stdout


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_failure_to_write_the_output_is_said_as_such_not_as_one_to_read(tmp_path):
    path = tmp_path / "w.safetensors"
    ckpt.save(path, {"w": np.ones(2, np.float32)})
    for args in ((), ("--all",)):
        with open("/dev/full", "w") as full:
            result = _run_inspect(path, *args, stdout=full, env=ENV)
        err = result.stderr.decode()
        assert result.returncode == 1 and "Traceback" not in err, err
        assert err.startswith("error: cannot write the output: ") and "errno 28" in err, err
        assert "cannot read" not in err and "Exception ignored" not in err, err


# -- save on a full disk -------------------------------------------------------------------------

def test_a_save_that_fails_writing_names_the_file_keeps_the_previous_one_and_removes_its_temporary(
        tmp_path, monkeypatch):
    path = tmp_path / "p.safetensors"
    ckpt.save(path, {"w": np.arange(4.0)})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    for target, kept in ((path, "the previous file is unchanged"), (tmp_path / "new.safetensors",
                                                                     "nothing was written")):
        said = (rf"^cannot save checkpoint '{re.escape(str(target))}': writing it failed \(No "
                rf"space left on device, errno 28\); {kept}\.\n  fix: make room ")
        with pytest.raises(ckpt.CheckpointWriteError, match=said) as info:
            ckpt.save(target, {"w": np.zeros(4)})
        # a CheckpointError and still the OSError it was (except OSError keeps catching it)
        assert isinstance(info.value, ckpt.CheckpointError) and isinstance(info.value, OSError)
        assert info.value.filename == str(target) and info.value.errno == errno.ENOSPC
        again = pickle.loads(pickle.dumps(info.value))  # as multiprocessing hands it back
        assert (type(again), str(again), again.errno, again.filename) == (
            ckpt.CheckpointWriteError, str(info.value), errno.ENOSPC, str(target))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["p.safetensors"]
    np.testing.assert_array_equal(ckpt.load(path)["w"], np.arange(4.0))


# -- minor ---------------------------------------------------------------------------------------

def test_the_help_names_the_console_script_as_invoked_and_python_m_under_dash_m(monkeypatch,
                                                                                 capsys):
    monkeypatch.setattr(sys, "argv", [os.path.join("venv", "bin", "scoped-params"), "--help"])
    with pytest.raises(SystemExit):
        main()
    assert capsys.readouterr().out.startswith("usage: scoped-params ")
    result = subprocess.run([sys.executable, "-m", "scoped_params", "--help"], capture_output=True,
                            text=True, env=ENV, timeout=120)
    assert result.stdout.startswith("usage: python -m scoped_params "), result.stdout


def test_human_bytes_shows_a_size_in_the_unit_of_its_rounded_number():
    assert [_inspect.human_bytes(n) for n in (1023, 1024, 1048524, 1048575, 2**40 - 1)] == [
        "1023 B", "1.0 KiB", "1023.9 KiB", "1.0 MiB", "1.0 TiB"]


def test_checkpoint_mismatch_error_says_each_case_it_is_raised_in():
    doc = ckpt.CheckpointMismatchError.__doc__
    assert sp.optimizers.CheckpointMismatchError is ckpt.CheckpointMismatchError
    for case in ("init_from_checkpoint", "TrainingCheckpointer.restore", "load_tf1",
                 "parts missing", "averages saved under a"):
        assert case in doc, case


def test_a_damaged_weights_file_named_as_a_tf_file_is_still_called_damaged(tmp_path):
    # a truncated weights file named 'checkpoint' or 'w.meta' was called a TF checkpoint's missing
    # '.index' (CheckpointNotFoundError), not what it is
    for name in ("checkpoint", "w.meta"):
        path = tmp_path / name
        ckpt.save(path, {"w": np.ones(2)})
        with open(path, "r+b") as f:
            f.truncate(30)
        with pytest.raises(ckpt.CheckpointCorruptError, match=r"cannot be read: the header claims"):
            ckpt.load(path)
