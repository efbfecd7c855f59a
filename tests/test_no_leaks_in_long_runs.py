"""A long-running process (a training job, a notebook, a server) does not keep what one call or one
dropped model held: module-level caches hold no custom getter made per call, no block decorated per
call with slim.add_arg_scope, no regularizer of a dropped model (through the compiled-initializer
cache), and no Layer subclass made per model."""

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np

import scoped_params as sp

KEY = jax.random.key(0)


class _Payload(np.ndarray):
    """A NumPy array one can hold a weak reference to, standing for what a closure captures."""


def _payload() -> _Payload:
    return np.zeros(8).view(_Payload)


def _freed(refs) -> bool:
    gc.collect()
    return all(ref() is None for ref in refs)


def test_a_custom_getter_made_per_call_is_not_kept_after_the_call():
    refs = []

    def evaluate(params):
        table = _payload()
        refs.append(weakref.ref(table))

        def getter(next_getter, name, *args, **kwargs):  # TF's EMA getter over this call's values
            return next_getter(name, *args, **kwargs) + table.sum()

        def fn(x):
            with sp.scope("s", custom_getter=getter):
                return x * sp.get_param("w", (), init=jax.nn.initializers.ones)
        return sp.transform(fn).apply(params, jnp.ones(()))

    for _ in range(3):
        evaluate({"s": {"w": jnp.ones(())}})
    assert _freed(refs)


def test_a_block_decorated_with_add_arg_scope_per_call_is_not_kept_after_the_call():
    refs = []

    def fn(x):
        table = _payload()
        refs.append(weakref.ref(table))

        @sp.slim.add_arg_scope
        def block(h, scale=1.0):
            return h * scale + table.sum()

        with sp.slim.arg_scope([block], scale=2.0):
            assert sp.slim.has_arg_scope(block)
            return block(x)

    for _ in range(3):
        assert float(sp.transform(fn).apply({}, jnp.ones(()))) == 2.0
    assert _freed(refs)


def test_a_dropped_models_regularizer_is_not_kept_by_the_initializer_cache():
    refs = []
    for _ in range(3):
        pretrained = _payload()
        refs.append(weakref.ref(pretrained))

        def l2_sp(w, anchor=pretrained):  # L2-SP: a penalty toward pretrained weights
            return jnp.sum((w - anchor.sum()) ** 2)

        def fn(x):
            return x @ sp.get_param("w", (3, 4), init=jax.nn.initializers.normal(),
                                    regularizer=l2_sp)
        sp.transform(fn).init(KEY, jnp.ones((2, 3)))
        del fn, l2_sp, pretrained
    assert _freed(refs)


def test_a_layer_subclass_made_per_model_is_not_kept_with_what_it_captured():
    refs = []

    def make_model():
        table = _payload()
        refs.append(weakref.ref(table))

        class Scale(sp.layers.Layer):
            def build(self, input_shape):
                self.w = self.add_weight("w", [int(input_shape[-1])])

            def call(self, inputs):
                return inputs * self.w + table.sum()

        return sp.transform(lambda x: Scale()(x))

    for _ in range(3):
        model = make_model()
        model.init(KEY, jnp.ones((2, 3)))
        del model
    assert _freed(refs)
