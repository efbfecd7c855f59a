"""The tree utilities' edges: apply_constraints on a Python-number leaf and on a tree of full names,
unflatten with a separator longer than a character, and the collision errors of unflatten and merge
(each with a fix, merge's saying it is merge's)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoped_params as sp

KEY = jax.random.key(0)


def _clipped_model():
    def fn(x):
        with sp.scope("d"):
            return x * sp.get_param("v", ()) * sp.get_param(
                "w", (), init=jax.nn.initializers.ones, constraint=lambda w: jnp.clip(w, -1.0, 1.0))
    return sp.transform(fn)


def test_apply_constraints_on_a_python_number_leaf_is_a_params_type_error_naming_it():
    specs = _clipped_model().specs(jnp.ones(()))
    with pytest.raises(sp.ParamsTypeError, match=r"(?s)parameter 'd/w' is float 2.0, not an array.*"
                                                 r"fix: .*jnp.asarray"):
        sp.apply_constraints({"d": {"w": 2.0}}, specs)


def test_apply_constraints_of_a_tree_of_full_names_returns_a_nested_tree_either_way():
    specs = _clipped_model().specs(jnp.ones(()))
    unconstrained, constrained = {"d/v": jnp.asarray(0.5)}, {"d/w": jnp.asarray(2.0)}
    assert sp.apply_constraints(unconstrained, specs) == {"d": {"v": unconstrained["d/v"]}}
    assert float(sp.apply_constraints(constrained, specs)["d"]["w"]) == 1.0
    nested = {"d": {"v": jnp.asarray(0.5)}}
    assert sp.apply_constraints(nested, specs) is nested  # nested, nothing to project: itself


@pytest.mark.parametrize("tree", [{"a": {".b": 1}}, {"a": {".b": {"w": 1}, "c.": 2}}])
def test_unflatten_with_a_longer_separator_undoes_flatten(tree):
    assert sp.unflatten(sp.flatten(tree, sep=".."), sep="..") == tree


def test_unflatten_and_merge_collisions_say_how_to_fix_and_merges_says_it_is_merge():
    with pytest.raises(sp.NameCollisionError, match=r"^'a/b' cannot be placed: 'a' is a leaf, not a "
                                                    r"scope\.\n  fix: keep one of them"):
        sp.unflatten({"a": 1, "a/b": 2})
    with pytest.raises(sp.NameCollisionError, match=r"^merge: 'a/b' cannot be placed: 'a' is a leaf.*"
                                                    r"\n  fix: keep one of them"):
        sp.merge({"a": np.ones(1)}, {"a": {"b": np.ones(1)}})
    with pytest.raises(sp.NameCollisionError, match=r"^merge: 'a' is in more than one tree\.\n  fix: "
                                                    r"merge disjoint trees"):
        sp.merge({"a": np.ones(1)}, {"a": np.ones(1)})


def test_partition_trainable_lists_a_frozen_parameter_put_in_the_trainable_collection_as_tf_does():
    # TF: get_variable(trainable=False, collections=[..., "trainable_variables"]) is among
    # tf.trainable_variables() (what optimizers train by default).
    def fn():
        sp.get_param("a", [1])
        sp.get_param("e", [1], trainable=False, collections=["variables", "trainable_variables"])
        sp.get_param("f", [1], trainable=False)

    model = sp.transform(fn)
    params, specs = model.init(KEY), model.specs()
    trainable, frozen = sp.partition_trainable(params, specs)
    assert sorted(sp.flatten(trainable)) == ["a", "e"] and list(sp.flatten(frozen)) == ["f"]
    in_collection, _ = sp.partition_by_collection(params, specs, "trainable_variables")
    assert sorted(sp.flatten(in_collection)) == ["a", "e"]


def test_bytes_keys_are_told_to_be_decoded_by_flatten_and_unflatten():
    with pytest.raises(TypeError, match=r"fix: use the key 'conv1' \(key\.decode\(\)\)"):
        sp.flatten({b"conv1": {b"weights": jnp.ones(2)}})
    with pytest.raises(TypeError, match=r"full name b'conv1/weights' is bytes(.|\n)*"
                                        r"fix: use the name 'conv1/weights' \(key\.decode\(\)\)"):
        sp.unflatten({b"conv1/weights": jnp.ones(2)})


def test_unflatten_of_a_none_name_says_names_must_be_str():
    with pytest.raises(TypeError, match=r"full name None is NoneType(.|\n)*fix: use the name"):
        sp.unflatten({None: 1})


def test_a_name_of_more_components_than_pythons_recursion_limit_flattens_saves_and_loads(tmp_path):
    # flatten walked the tree by recursion: a name of ~1,000 components (a file may hold one)
    # raised RecursionError in flatten, save and everything built on them.
    import sys
    name = "/".join(["a"] * (sys.getrecursionlimit() + 200)) + "/w"
    tree = sp.unflatten({name: np.arange(2, dtype=np.float32), "b": np.ones(1, np.float32)})
    assert list(sp.flatten(tree)) == [name, "b"]
    path = tmp_path / "deep.safetensors"
    sp.checkpoint.save(path, tree)
    flat = sp.flatten(sp.checkpoint.load(path))
    assert sorted(flat) == sorted([name, "b"])
    np.testing.assert_array_equal(flat[name], [0.0, 1.0])
    deep = {"x": {"y": {3: 1}}}
    with pytest.raises(TypeError, match=r"'x/y/3': key 3 is int.*\n  fix: use the key '3'"):
        sp.flatten(deep)


def test_partition_by_collection_warns_of_a_misspelt_collection_that_selects_nothing():
    # TF's get_collection returns [] for any name; so does ours, but a typo such as "trainable"
    # (which trains nothing) now warns with the collection it was close to.
    import warnings

    def fn(x):
        with sp.scope("d"):
            w = sp.get_param("w", ())
            return x * w * sp.get_param("s", (), trainable=False, collections=["my_stats"])
    model = sp.transform(fn)
    params, specs = model.init(KEY, jnp.ones(())), model.specs(jnp.ones(()))
    for typo, meant in [("trainable", "trainable_variables"), ("my_stat", "my_stats"),
                        ("TRAINABLE_VARIABLES", "trainable_variables")]:
        with pytest.warns(UserWarning, match=rf"collection '{typo}', so it selects nothing .*"
                                             rf"did you mean '{meant}'\?\n  fix: "):
            selected, rest = sp.partition_by_collection(params, specs, typo)
        assert selected == {} and sp.flatten(rest).keys() == {"d/w", "d/s"}
    with warnings.catch_warnings():  # an empty standard collection, or a far name: as TF, silent
        warnings.simplefilter("error")
        for name in ("local_variables", "model_variables", "regularization_losses", "xyz"):
            assert sp.partition_by_collection(params, specs, name)[0] == {}
        assert sp.flatten(sp.partition_by_collection(params, specs, "my_stats")[0]).keys() == {"d/s"}


def test_partition_by_collection_is_silent_for_a_collection_some_spec_has_and_for_tfs_keys():
    import warnings

    def fn(x):
        with sp.scope("enc"):
            x = x @ sp.get_param("w", (4, 4), collections=["variables", "encoder"])
        with sp.scope("dec"):
            x = x @ sp.get_param("w", (4, 4), collections=["variables", "encoder_decoder"])
        return x
    model, x = sp.transform(fn), jnp.ones((2, 4))
    params, specs = model.init(KEY, x), model.specs(x)
    decoder, _ = sp.partition_by_scope(params, "dec")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # spelt right ("encoder" is in specs), the params given being a part without its members
        assert sp.partition_by_collection(decoder, specs, "encoder")[0] == {}
        for key in ("metric_variables", "trainable_resource_variables", "weights", "update_ops"):
            assert sp.partition_by_collection(params, specs, key)[0] == {}
    # a case-insensitive match is the one suggested
    with pytest.warns(UserWarning, match=r"did you mean 'variables'\?"):
        sp.partition_by_collection(params, specs, "VARIABLES")
