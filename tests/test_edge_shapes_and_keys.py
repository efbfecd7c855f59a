"""Edges of parameter shapes and dtypes: a PRNG key array where a number array is asked (params,
state, ``sp.set_state``), a concrete ``jax.Array`` as a shape, and TF's unknown-rank shape on a
reusing request. Each error names the parameter (or state), what was asked and found, and the fix."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

import scoped_params as sp  # noqa: E402

KEY = jax.random.key(0)


# --- a PRNG key where a number array is asked -------------------------------------------------------


def test_a_key_array_in_params_is_a_dtype_mismatch_naming_key_data():
    model = sp.transform(lambda x: sp.get_param("w", (2,)) * x)
    params = {"w": jax.random.split(KEY, 2)}
    for run in (lambda: model.apply(params, 1.0), lambda: jax.jit(model.apply)(params, 1.0)):
        with pytest.raises(sp.DtypeMismatchError, match=r"(?s)variable w, but specified dtype float32 and "
                                                        r"found dtype key<fry>.*jax.random.key_data"):
            run()


def test_a_key_array_in_state_is_a_dtype_mismatch_naming_the_state():
    def fn(x):
        seed = sp.get_state("seed", (), init=jax.nn.initializers.zeros, dtype=jnp.uint32)
        return x + seed

    model = sp.transform_with_state(fn)
    params, _ = model.init(KEY, jnp.ones(2))
    with pytest.raises(sp.DtypeMismatchError, match=r"(?s)variable seed.*dtype uint32 for 'seed'.*key<fry>.*"
                                                    r"key_data"):
        model.apply(params, {"seed": jax.random.key(1)}, jnp.ones(2))


def test_set_state_of_a_key_array_is_a_dtype_mismatch_saying_to_store_its_key_data():
    def fn(x):
        data = sp.get_state("rng", init=jax.random.key_data(jax.random.key(0)))
        key, sub = jax.random.split(jax.random.wrap_key_data(data))
        sp.set_state("rng", key)  # forgot jax.random.key_data(key)
        return x + jax.random.normal(sub, x.shape)

    with pytest.raises(sp.DtypeMismatchError, match=r"(?s)sp.set_state: the new value of state 'rng' is a PRNG key array"
                                                    r".*fix: .*sp.set_state\('rng', "
                                                    r"jax.random.key_data\(key\)\)"):
        sp.transform_with_state(fn).init(KEY, jnp.ones(2))


# --- a concrete jax.Array as a shape ------------------------------------------------------------------


SHAPE = jnp.array([2, 3])  # made outside the model: concrete, not traced


@pytest.mark.parametrize("shape, expected", [(SHAPE, (2, 3)), (jnp.int32(3), (3,)),
                                             ((jnp.int32(3), 2), (3, 2))])
def test_a_concrete_jax_array_shape_is_read_as_its_values_in_init_jit_and_apply(shape, expected):
    model = sp.transform(lambda: sp.get_param("w", shape, init=jax.nn.initializers.ones))
    params = model.init(KEY)
    assert params["w"].shape == expected
    assert model.apply(params).shape == expected
    assert jax.jit(model.apply)(params).shape == expected


def test_a_jax_array_shape_computed_inside_the_model_is_still_a_traced_size_error():
    def fn(x):
        return sp.get_param("w", jnp.array(x.shape) + 1)

    with pytest.raises(TypeError, match="has a dimension that is a traced JAX value"):
        sp.transform(fn).init(KEY, jnp.ones((2,)))


# --- TF's unknown-rank shape ----------------------------------------------------------------------------


def test_an_unknown_rank_shape_on_a_reusing_request_takes_the_stored_shape_as_tf_does():
    tf = pytest.importorskip("tensorflow")
    unknown = tf.TensorShape(None)

    def fn():
        with sp.scope("s"):
            w = sp.get_param("w", (2, 3), init=jax.nn.initializers.ones)
        with sp.scope("s", reuse=True):
            again = sp.get_param("w", unknown)
        with sp.scope("s", reuse=sp.AUTO_REUSE):
            auto = sp.get_param("w", unknown)
        return w, again, auto

    model = sp.transform(fn)
    params = model.init(KEY)
    for out in (model.apply(params), jax.jit(model.apply)(params)):
        assert [o.shape for o in out] == [(2, 3)] * 3
    creating = sp.transform(lambda: sp.get_param("w", unknown, init=jax.nn.initializers.zeros))
    with pytest.raises(sp.InitializerError, match="has an unknown rank"):  # creating: still refused
        creating.init(KEY)
