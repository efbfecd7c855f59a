"""A GAN whose discriminator is shared between the real and the fake batch through AUTO_REUSE.

The TF 1.x idiom (seeds/002: the generator and discriminator of an adversarial network share
variables through get_variable) is

    def discriminator(x):
        with tf.variable_scope("discriminator", reuse=tf.AUTO_REUSE):
            ...
    d_real = discriminator(real)
    d_fake = discriminator(generator(z))

The first call creates discriminator/*, the second reuses it. Here the same code trains a tiny GAN
that learns to sample a 1-D Gaussian N(3, 0.5), with separate optimizers for the two players.
"""

import jax
import jax.numpy as jnp
import optax

import scoped_params as sp


def dense(x, units, name):
    with sp.scope(name):
        w = sp.get_param("kernel", (x.shape[-1], units))
        b = sp.get_param("bias", (units,), init=sp.initializers.zeros)
    return x @ w + b


def generator(z):
    with sp.scope("generator"):
        h = jax.nn.leaky_relu(dense(z, 16, "hidden"))
        return dense(h, 1, "out")


def discriminator(x):
    with sp.scope("discriminator", reuse=sp.AUTO_REUSE):
        h = jax.nn.leaky_relu(dense(x, 16, "hidden"))
        return dense(h, 1, "logit")


def gan(real, z):
    fake = generator(z)
    return discriminator(real), discriminator(fake), fake


def main(steps: int = 1500):
    model = sp.transform(gan)
    batch = 128
    real_shape = jax.ShapeDtypeStruct((batch, 1), jnp.float32)
    params = model.init(jax.random.key(0), real_shape, real_shape)
    print("parameters (the discriminator exists once, used twice per step):")
    for name, value in sp.flatten(params).items():
        print(f"  {name:32s} {value.shape}")

    d_params, g_params = sp.partition_by_scope(params, "discriminator")
    d_opt, g_opt = optax.adam(2e-3, b1=0.5), optax.adam(2e-3, b1=0.5)
    d_state, g_state = d_opt.init(d_params), g_opt.init(g_params)
    bce = optax.sigmoid_binary_cross_entropy

    def d_loss(d_params, g_params, real, z):
        d_real, d_fake, _ = model.apply(sp.merge(d_params, g_params), real, z)
        return jnp.mean(bce(d_real, jnp.ones_like(d_real)) + bce(d_fake, jnp.zeros_like(d_fake)))

    def g_loss(g_params, d_params, real, z):
        _, d_fake, _ = model.apply(sp.merge(d_params, g_params), real, z)
        return jnp.mean(bce(d_fake, jnp.ones_like(d_fake)))

    @jax.jit
    def step(d_params, g_params, d_state, g_state, key):
        k_real, k_z1, k_z2 = jax.random.split(key, 3)
        real = 3.0 + 0.5 * jax.random.normal(k_real, (batch, 1))
        d_grads = jax.grad(d_loss)(d_params, g_params, real, jax.random.normal(k_z1, (batch, 1)))
        updates, d_state = d_opt.update(d_grads, d_state)
        d_params = optax.apply_updates(d_params, updates)
        g_grads = jax.grad(g_loss)(g_params, d_params, real, jax.random.normal(k_z2, (batch, 1)))
        updates, g_state = g_opt.update(g_grads, g_state)
        g_params = optax.apply_updates(g_params, updates)
        return d_params, g_params, d_state, g_state

    key = jax.random.key(1)
    for _ in range(steps):
        key, sub = jax.random.split(key)
        d_params, g_params, d_state, g_state = step(d_params, g_params, d_state, g_state, sub)

    z = jax.random.normal(jax.random.key(2), (4096, 1))
    _, _, samples = model.apply(sp.merge(d_params, g_params), jnp.zeros((4096, 1)), z)
    print(f"generated samples: mean {float(samples.mean()):.2f}, std {float(samples.std()):.2f} "
          "(real data: mean 3.00, std 0.50)")


if __name__ == "__main__":
    main()
