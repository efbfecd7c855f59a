"""Error paths stay cheap on large models: the "did you mean" search, init_from_checkpoint's report
and ``inspect --all`` do work bounded per problem (or linear in the model), never difflib over every
name for every entry. Pinned by counting the work (never by timing), and by the messages' wording."""

import difflib
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp
from scoped_params import _errors, _inspect
from scoped_params import checkpoint as ckpt

KEY = jax.random.key(0)


class _Counted:
    """A counting wrapper of ``function``; fails at once past ``most`` calls (or ``most_items``
    candidates, for difflib), so that the quadratic code fails fast instead of running for minutes."""

    def __init__(self, function, most=None, most_items=None):
        self.function, self.most, self.most_items = function, most, most_items
        self.calls = self.items = 0

    def __call__(self, word, candidates, *args, **kwargs):
        candidates = list(candidates)
        self.calls += 1
        self.items += len(candidates)
        if self.most is not None and self.calls > self.most:
            raise AssertionError(f"called {self.calls} times (at most {self.most} expected)")
        if self.most_items is not None and self.items > self.most_items:
            raise AssertionError(f"compared {self.items} candidates (at most {self.most_items} "
                                 "expected)")
        return self.function(word, candidates, *args, **kwargs)


def _count_difflib(monkeypatch, most_items):
    counted = _Counted(difflib.get_close_matches, most_items=most_items)
    monkeypatch.setattr(difflib, "get_close_matches", counted)
    return counted


def _count_nearest(monkeypatch, most):
    counted = _Counted(ckpt.nearest, most=most)
    monkeypatch.setattr(ckpt, "nearest", counted)
    return counted


def _problems(message):
    return [line for line in message.split("\n") if line.startswith("  - ")]


# --- _errors.nearest: difflib on a bounded short list ----------------------------------------------


def _nearest_over_everything(name, candidates, n=3):
    """What nearest returned before it shortlisted: difflib over every name, then same-leaf names."""
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    leaf = name.rsplit("/", 1)[-1]
    for c in candidates:
        if len(close) >= n:
            break
        if c not in close and c.rsplit("/", 1)[-1] == leaf:
            close.append(c)
    return close


def _bert_names(layers):
    return [f"bert/encoder/layer_{i}/attention/self/{p}/{leaf}"
            for i in range(layers) for p in ("query", "key", "value") for leaf in ("kernel", "bias")]


def test_nearest_over_16k_names_runs_difflib_on_a_bounded_short_list(monkeypatch):
    names = _bert_names(16_000 // 6)
    counted = _count_difflib(monkeypatch, most_items=4 * 128)
    close = _errors.nearest("bert/encoder/layer_7/attention/self/query/kernal", names)
    assert close[0] == "bert/encoder/layer_7/attention/self/query/kernel", close
    assert counted.calls == 1 and 0 < counted.items <= 128, (counted.calls, counted.items)
    # a typo'd scope at the start of the path, one in the middle, a wrong layer number
    for typo, meant in [
            ("bret/encoder/layer_1234/attention/self/value/bias",
             "bert/encoder/layer_1234/attention/self/value/bias"),
            ("bert/encoder/layer_99/atention/self/key/kernel",
             "bert/encoder/layer_99/attention/self/key/kernel"),
            ("bert/encoder/layer_2665/attention/self/query/bias",
             "bert/encoder/layer_2665/attention/self/query/bias")]:
        assert _errors.nearest(typo, names)[0] == meant, typo
    assert counted.calls == 4


@pytest.mark.parametrize("typo", [
    "bert/encoder/layer_7/attention/self/query/kernal",   # the leaf
    "bert/encoder/layer_7/attention/self/qeury/kernel",   # the parent
    "bert/encodr/layer_42/attention/self/key/bias",       # a scope in the middle
    "bret/encoder/layer_80/attention/self/value/kernel",  # the first scope
    "encoder/layer_3/attention/self/value/kernel",        # a scope left out
    "model/bert/encoder/layer_3/attention/self/value/kernel",  # a scope too many
    "bert/encoder/layer_3/attention/value/kernel",        # a scope left out in the middle
    "bert/encoder/layer_101/attention/self/query/kernel",  # a layer the model does not have
    "bert/encoder/layer_5/attention/self/query/weights",  # another leaf name
    "bert/encoder/layer_5/attention/self/output/kernel",  # a sibling scope it does not have
    "kernel",                                             # the leaf alone
])
def test_nearest_on_a_large_model_finds_what_difflib_over_every_name_finds(typo):
    names = _bert_names(100)  # 600 names: more than nearest runs difflib over
    assert len(names) > _errors._NEAREST_ALL
    close, everything = _errors.nearest(typo, names), _nearest_over_everything(typo, names)
    # The best match is the same; the others may be other names of the same score (layer_71 for
    # layer_97, both one digit off) or a close second: all are difflib matches or the same leaf.
    assert len(close) == 3 and close[0] == everything[0], (close, everything)
    for name in close:
        assert (difflib.SequenceMatcher(None, name, typo).ratio() >= 0.6
                or name.rsplit("/", 1)[-1] == typo.rsplit("/", 1)[-1]), name


def test_nearest_over_a_few_names_is_difflib_over_all_of_them(monkeypatch):
    names = [f"model/dense_{i}/kernel" for i in range(40)] + ["model/dense/bias"]
    expected = _nearest_over_everything("model/dense_7/kernal", names)
    counted = _count_difflib(monkeypatch, most_items=None)
    assert _errors.nearest("model/dense_7/kernal", names) == expected
    assert expected[0] == "model/dense_7/kernel"
    assert counted.items == len(names)


def test_apply_does_not_exist_over_a_large_model_compares_a_bounded_number_of_names(monkeypatch):
    def fn(missing):
        with sp.scope("bert"), sp.scope("encoder"):
            for i in range(400):
                with sp.scope(f"layer_{i}"), sp.scope("query_projection"):
                    sp.get_param("kernel", (2,))
            if missing:
                with sp.scope("layer_7"), sp.scope("query_projection"):
                    sp.get_param("kernal", (2,))

    params = sp.transform(fn).init(KEY, False)
    counted = _count_difflib(monkeypatch, most_items=128)
    with pytest.raises(sp.ParamNotFoundError) as info:
        sp.transform(fn).apply(params, True)
    assert "  found: 'bert/encoder/layer_7/query_projection/kernel'" in str(info.value)
    assert counted.calls == 1 and counted.items <= 128


# --- init_from_checkpoint: hints for the first few problems, a capped list, one line a map entry ---


def test_a_scope_map_that_matches_nothing_is_one_line_naming_the_scopes_the_checkpoint_has(
        monkeypatch):
    source = {f"encoder/block_{i}/dense/kernel": np.ones((2,), np.float32) for i in range(2000)}
    params = sp.unflatten({f"net/block_{i}/dense/kernel": np.zeros((2,), np.float32)
                           for i in range(2000)})
    counted = _count_nearest(monkeypatch, most=5)
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(source, params, {"model/": "net/"})
    message = str(info.value)
    assert counted.calls == 0
    assert message == (
        "init_from_checkpoint could not fill 2,000 entries from the given tree:\n"
        "  - 'model/': 'net/': none of the 2,000 parameters under 'net/' is in the given tree under "
        "'model/' (e.g. 'net/block_0/dense/kernel' from 'model/block_0/dense/kernel'); it has no "
        "name under 'model/'; its names start with 'encoder/'; all 2,000 are under 'encoder/' in "
        "it: did you mean {'encoder/': 'net/'}?\n"
        "  fix: correct assignment_map (keys: checkpoint names, values: params names), or "
        "cast/reshape the source tree first; params was not changed.")


def test_a_scope_map_of_names_the_checkpoint_has_elsewhere_or_not_at_all_says_which(monkeypatch):
    source = {"global_step": np.int32(3), "head/w": np.ones(2, np.float32),
              "model/other": np.ones(1, np.float32),
              **{f"tower_{t}/layer_{i}/w": np.ones(2, np.float32) for t in range(7)
                 for i in range(3)}}
    params = {"net": {f"layer_{i}": {"w": np.zeros(2, np.float32)} for i in range(3)},
              "x": {"a": np.zeros(1, np.float32), "b": np.zeros(1, np.float32)}}
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(source, params, {"model/": "net/", "/": "x/"})
    assert _problems(str(info.value)) == [
        "  - '/': 'x/': none of the 2 parameters under 'x/' is in the given tree under '/' (e.g. "
        "'x/a' from 'a'); its names start with 'global_step', 'head/', 'model/', 'tower_0/', "
        "'tower_1/' and 5 more",
        "  - 'model/': 'net/': none of the 3 parameters under 'net/' is in the given tree under "
        "'model/' (e.g. 'net/layer_0/w' from 'model/layer_0/w'); it has 1 other name under "
        "'model/'; its names start with 'global_step', 'head/', 'model/', 'tower_0/', 'tower_1/' "
        "and 5 more; all 3 are under 'tower_0/' in it: did you mean {'tower_0/': 'net/'}?"]
    assert "could not fill 5 entries" in str(info.value)


def test_a_scope_map_hint_counts_how_many_of_the_parameters_the_suggested_scope_holds():
    # The checkpoint keeps two of the three parameters under another scope: the hint says so, with
    # the count, and a prefix holding one says "1 of the 3 is".
    source = {"tower/a": np.ones(1, np.float32), "tower/b": np.ones(1, np.float32),
              "solo/c": np.ones(1, np.float32)}
    params = {"net": {name: np.zeros(1, np.float32) for name in "abc"}}
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(source, params, {"model/": "net/"})
    assert _problems(str(info.value)) == [
        "  - 'model/': 'net/': none of the 3 parameters under 'net/' is in the given tree under "
        "'model/' (e.g. 'net/a' from 'model/a'); it has no name under 'model/'; its names start "
        "with 'solo/', 'tower/'; 2 of the 3 are under 'tower/' in it: did you mean "
        "{'tower/': 'net/'}?"]
    source = {"solo/c": np.ones(1, np.float32), "other/x": np.ones(1, np.float32)}
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(source, params, {"model/": "net/"})
    assert _problems(str(info.value))[0].endswith(
        "1 of the 3 is under 'solo/' in it: did you mean {'solo/': 'net/'}?")


def test_missing_entries_get_hints_for_the_first_few_and_the_list_is_capped(monkeypatch):
    source = {f"old/w_{i}": np.ones(2, np.float32) for i in range(0, 4000, 2)}
    params = sp.unflatten({f"new/w_{i}": np.zeros(2, np.float32) for i in range(4000)})
    counted = _count_nearest(monkeypatch, most=5)
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(source, params, {"old/": "new/"})
    message = str(info.value)
    assert counted.calls == 5
    assert message.startswith("init_from_checkpoint could not fill 2,000 entries from the given "
                              "tree:\n")
    problems = _problems(message)
    assert len(problems) == 11 and problems[-1] == "  - ... and 1,990 more", problems
    assert problems[0] == ("  - 'new/w_1': 'old/w_1' is not in the given tree (nearest: ['old/w_18', "
                           "'old/w_16', 'old/w_14'])"), problems[0]
    assert [p for p in problems if "(nearest: " in p] == problems[:5]
    assert problems[5] == "  - 'new/w_1009': 'old/w_1009' is not in the given tree"
    assert message.endswith("\n  fix: correct assignment_map (keys: checkpoint names, values: params "
                            "names), or cast/reshape the source tree first; params was not changed.")
    assert len(message) < 2000


def test_shape_mismatches_of_every_layer_are_counted_and_the_first_ten_listed():
    source = {f"layer_{i:04d}/w": np.ones(3, np.float32) for i in range(2000)}
    params = sp.unflatten({f"layer_{i:04d}/w": np.zeros(2, np.float32) for i in range(2000)})
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(source, params, {"/": "/"})
    message = str(info.value)
    assert "could not fill 2,000 entries" in message
    problems = _problems(message)
    assert problems[0] == ("  - 'layer_0000/w': shape (2,) in params, but 'layer_0000/w' has shape "
                           "(3,) in the given tree")
    assert problems[9].startswith("  - 'layer_0009/w': ")
    assert problems[10:] == ["  - ... and 1,990 more"]


def test_bad_assignment_map_entries_get_hints_for_the_first_few_only(monkeypatch):
    source = {f"old/w_{i}": np.ones(2, np.float32) for i in range(300)}
    params = {"new": {f"w_{i}": np.zeros(2, np.float32) for i in range(300)}}
    counted = _count_nearest(monkeypatch, most=5)
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(source, params,
                                  {f"old/w_{i}": f"new/v_{i}" for i in range(300)})
    message = str(info.value)
    assert counted.calls == 5
    assert "could not fill 300 entries" in message
    problems = _problems(message)
    assert problems[0] == (
        "  - 'old/w_0': 'new/v_0': 'new/v_0' is not a parameter of params (did you mean "
        "['new/w_0', 'new/w_90', 'new/w_80']?); scope maps are written with trailing slashes on "
        "both sides, "
        "{'old_scope/': 'new_scope/'}"), problems[0]
    assert sum("did you mean" in p for p in problems) == 5
    assert problems[-1] == "  - ... and 290 more"


def test_the_64_bit_fix_still_speaks_of_the_other_entries_when_the_list_is_capped():
    source = {**{f"a/w_{i:02d}": np.ones(2, np.float64) for i in range(15)},
              **{f"b/w_{i:02d}": np.ones(3, np.float32) for i in range(15)}}
    params = sp.unflatten({name: np.zeros(2, np.float32) for name in source})
    with pytest.raises(ckpt.CheckpointMismatchError) as info:
        ckpt.init_from_checkpoint(source, params, {"/": "/"})
    message = str(info.value)
    assert "could not fill 30 entries" in message and "  - ... and 20 more" in message
    assert re.search(r"fix: cast the checkpoint's 64-bit values first: .*; for the other entries, "
                     r"correct assignment_map", message), message


# --- python -m scoped_params inspect --all: each tensor found by name once -------------------------


class _CountingList(list):
    def __init__(self, items):
        super().__init__(items)
        self.iterations = 0

    def __iter__(self):
        self.iterations += 1
        return super().__iter__()


def test_inspect_all_finds_each_tensor_without_scanning_the_others(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    names = [f"block_{i:03d}/dense/kernel" for i in range(300)]
    sp.checkpoint.save(path, sp.unflatten({n: np.full((2,), i, np.float32)
                                           for i, n in enumerate(names)}))
    sources = []

    class Counting(_inspect._Source):
        def __init__(self, where):
            super().__init__(where)
            self.entries = _CountingList(self.entries)
            sources.append(self)

    monkeypatch.setattr(_inspect, "_Source", Counting)
    out = io.StringIO()
    _inspect.run(str(path), all_values=True, out=out)
    assert len(sources) == 1 and sources[0].entries.iterations <= 2
    printed = re.findall(r"^tensor_name: (\S+) \[2\] float32$", out.getvalue(), re.M)
    assert printed == names
    assert "tensor_name: block_299/dense/kernel [2] float32\n[299. 299.]" in out.getvalue()
    with pytest.raises(KeyError, match=r"did you mean 'block_007/dense/kernel'"):
        _inspect.entry(sources[0], "block_007/dense/kernal")
