"""The seeds' programs in examples/ run and share exactly the parameters the TF 1.x originals share."""

import jax
import jax.numpy as jnp
import numpy as np

import scoped_params as sp
from _scripts import load_example as _load


def test_image_filter_shares_one_set_of_weights_across_two_images(capsys):
    example = _load("image_filter")
    model = sp.transform(example.two_images)
    image = jnp.ones((1, 8, 8, 32))
    params = model.init(jax.random.key(0), image, image)
    assert list(sp.flatten(params)) == [
        "image_filters/conv1/weights", "image_filters/conv1/biases",
        "image_filters/conv2/weights", "image_filters/conv2/biases"]
    r1, r2 = model.apply(params, image, image)
    np.testing.assert_array_equal(r1, r2)
    example.main()
    assert "same filter on the same image gives the same result: True" in capsys.readouterr().out


def test_gan_discriminator_is_created_once_and_used_for_real_and_fake(capsys):
    example = _load("gan_sharing")
    model = sp.transform(example.gan)
    x = jnp.ones((4, 1))
    names = list(sp.flatten(model.init(jax.random.key(0), x, x)))
    assert sum(n.startswith("discriminator/") for n in names) == 4
    assert sum(n.startswith("generator/") for n in names) == 4
    example.main(steps=50)
    assert "generated samples" in capsys.readouterr().out


def test_tied_embedding_is_one_parameter_used_at_input_and_output(capsys):
    example = _load("embedding_auto_reuse")
    model = sp.transform(example.bigram_logits)
    tokens = jnp.arange(5)
    params = model.init(jax.random.key(0), tokens)
    assert sorted(sp.flatten(params)) == ["embedding/weights", "hidden/kernel"]
    grads = jax.grad(lambda p: model.apply(p, tokens).sum())(params)
    assert float(jnp.abs(grads["embedding"]["weights"]).sum()) > 0
    example.main(steps=300)
    out = capsys.readouterr().out
    assert "next-token accuracy 100.00%" in out
