"""The seeds' image filter: two conv+ReLU layers, one set of weights shared across two images.

TF 1.x original (seeds/000, "共享变量" / Sharing Variables):

    def conv_relu(input, kernel_shape, bias_shape):
        weights = tf.get_variable("weights", kernel_shape, initializer=tf.random_normal_initializer())
        biases = tf.get_variable("biases", bias_shape, initializer=tf.constant_initializer(0.0))
        conv = tf.nn.conv2d(input, weights, strides=[1, 1, 1, 1], padding='SAME')
        return tf.nn.relu(conv + biases)

    with tf.variable_scope("image_filters") as scope:
        result1 = my_image_filter(image1)
        scope.reuse_variables()
        result2 = my_image_filter(image2)

The port changes only the spelling: tf.get_variable -> sp.get_param, tf.variable_scope -> sp.scope,
tf.nn.conv2d -> jax.lax.conv_general_dilated.
"""

import jax
import jax.numpy as jnp

import scoped_params as sp


def conv_relu(x, kernel_shape, bias_shape):
    weights = sp.get_param("weights", kernel_shape, init=sp.initializers.random_normal())
    biases = sp.get_param("biases", bias_shape, init=sp.initializers.constant(0.0))
    conv = jax.lax.conv_general_dilated(x, weights, window_strides=(1, 1), padding="SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(conv + biases)


def my_image_filter(input_images):
    with sp.scope("conv1"):
        relu1 = conv_relu(input_images, [5, 5, 32, 32], [32])
    with sp.scope("conv2"):
        return conv_relu(relu1, [5, 5, 32, 32], [32])


def two_images(image1, image2):
    with sp.scope("image_filters") as scope:
        result1 = my_image_filter(image1)
        scope.reuse_variables()
        result2 = my_image_filter(image2)
    return result1, result2


def main():
    model = sp.transform(two_images)
    image = jax.ShapeDtypeStruct((2, 16, 16, 32), jnp.float32)
    params = model.init(jax.random.key(0), image, image)  # abstract trace: no convolution runs

    print("parameters (one set, shared by both images):")
    for name, value in sp.flatten(params).items():
        print(f"  {name:32s} {str(value.shape):18s} {value.dtype}")

    k1, k2 = jax.random.split(jax.random.key(1))
    image1 = jax.random.normal(k1, image.shape)
    image2 = jax.random.normal(k2, image.shape)
    apply = jax.jit(model.apply)
    result1, result2 = apply(params, image1, image2)
    same1, _ = apply(params, image1, image1)
    print(f"result shapes: {result1.shape}, {result2.shape}")
    print(f"same filter on the same image gives the same result: {bool(jnp.allclose(result1, same1))}")
    print(f"different images give different results: {not bool(jnp.allclose(result1, result2))}")


if __name__ == "__main__":
    main()
