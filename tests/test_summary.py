"""sp.summary: a per-scope table from an abstract trace."""

import jax
import jax.numpy as jnp
import pytest

import scoped_params as sp


def _never_called(key, shape, dtype):
    raise AssertionError("summary ran an initializer")


def image_filter(images):
    for name in ("conv1", "conv2"):
        with sp.scope("image_filters"), sp.scope(name):
            w = sp.get_param("weights", [5, 5, 32, 32], init=_never_called)
            b = sp.get_param("biases", [32], init=_never_called)
            images = jax.nn.relu(jax.lax.conv_general_dilated(
                images, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b)
    return images


def test_summary_prints_and_returns_one_row_per_scope_with_counts_bytes_and_shapes(capsys):
    images = jax.ShapeDtypeStruct((8, 32, 32, 32), jnp.float32)
    text = sp.summary(sp.transform(image_filter), images)
    assert capsys.readouterr().out == text + "\n"
    rows = text.splitlines()
    assert rows[0].split() == ["scope", "parameters", "bytes", "shapes"]
    assert rows[2].split() == ["image_filters/conv1", "25,632", "100.1", "KiB", "weights",
                               "5x5x32x32", "float32,", "biases", "32", "float32"]
    assert rows[3].startswith("image_filters/conv2")
    assert rows[-1] == "total: 51,264 parameters in 4 arrays, 200.2 KiB"


def test_summary_allocates_nothing_even_for_terabyte_models():
    def huge(x):
        with sp.scope("embedding"):
            table = sp.get_param("table", (1_000_000, 1_000_000), init=_never_called)
        return x @ table[:, :2]

    text = sp.summary(sp.transform(huge), jax.ShapeDtypeStruct((2, 1_000_000), jnp.float32))
    assert "1,000,000,000,000" in text and "3.6 TiB" in text


def test_summary_lists_state_and_frozen_parameters_separately():
    def net(x):
        with sp.scope("bn"):
            mean = sp.get_state("moving_mean", (4,), init=sp.initializers.zeros)
            scale = sp.get_param("scale", (4,), init=sp.initializers.ones, trainable=False)
        return (x - mean) * scale

    text = sp.summary(sp.transform_with_state(net), jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert "scale 4 float32 (frozen)" in text
    assert any(line.startswith("bn [state]") and "moving_mean 4 float32" in line
               for line in text.splitlines())
    assert "state: 4 values in 1 arrays, 16 B" in text


def test_summary_takes_the_models_keyword_arguments():
    def net(x, wide=False):
        return x @ sp.get_param("w", (x.shape[-1], 8 if wide else 2))

    x = jax.ShapeDtypeStruct((1, 3), jnp.float32)
    assert "total: 24 parameters" in sp.summary(sp.transform(net), x, wide=True)
    with pytest.raises(TypeError, match=r"sp.transform\(fn\)"):
        sp.summary(net, x)  # a plain function is not a transform


def test_summary_passes_a_model_keyword_argument_named_model():
    def fn(x, model="small"):
        return sp.layers.dense(x, 4 if model == "small" else 8)

    table = sp.summary(sp.transform(fn), jax.ShapeDtypeStruct((2, 3), jnp.float32), model="big")
    assert "3x8" in table or "(3, 8)" in table
