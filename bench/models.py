"""The benchmark models, written once per contender: hand-written JAX, scoped_params, Haiku, Flax linen.

Every contender runs the same primitives (``lax.conv_general_dilated``, ``x @ w``, ``+ b``, relu /
tanh) on parameters with the same names, so outputs agree given the same weights and the timings
compare only what each framework adds. Weights are exchanged as a flat ``{"a/b/name": array}`` dict
(scoped_params' full names); ``to_params(contender, flat)`` builds each contender's own tree.

A contender is a ``Model`` with ``init(key, x)``, ``apply(params, x)`` (un-jitted) and a fresh
``apply_fn()`` (a new Python function each call, so ``jax.jit(...).lower`` really traces).
"""

from __future__ import annotations

import contextvars
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
from jax import lax

import scoped_params as sp

CONTENDERS = ("jax", "scoped_params", "haiku", "flax")

_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


# The same initializers for every contender, as users write them: TF's default (Glorot-uniform),
# zeros, and a small normal. (scoped_params draws library initializers in one cached compiled call per
# group; Haiku, Flax and hand-written JAX call them op by op.)
_glorot = sp.initializers.glorot_uniform()
_zeros = sp.initializers.zeros
_normal = sp.initializers.random_normal(stddev=0.01)


class Model:
    """One contender's model: ``init(key, x) -> params`` and un-jitted ``apply(params, x) -> out``."""

    def __init__(self, contender: str, init: Callable, apply: Callable):
        self.contender, self.init, self.apply = contender, init, apply

    def apply_fn(self) -> Callable:
        apply = self.apply
        return lambda params, x: apply(params, x)  # a fresh function: jit's cache cannot hit


# --- model descriptions: (scope path, [(param name, shape, init)]) per layer -----------------------


def conv_stack_layers(depth: int, channels: int = 32, k: int = 5):
    return [(f"layer_{i}", [("weights", (k, k, channels, channels), _glorot),
                            ("biases", (channels,), _zeros)]) for i in range(depth)]


def tiny_layers(n: int, width: int = 4):
    return [(f"layer_{i}", [("w", (width, width), _glorot), ("b", (width,), _zeros)])
            for i in range(n)]


def same_shape_params(n: int, width: int = 4):
    return [(f"p_{i}", [("w", (width,), _normal)]) for i in range(n)]


def widening_layers(n: int, width: int = 4):
    """An MLP that widens by one per layer: every parameter has its own shape."""
    return [(f"layer_{i}", [("w", (width + i, width + i + 1), _glorot), ("b", (width + i + 1,), _zeros)])
            for i in range(n)]


def two_layer(d_in: int = 4, hidden: int = 8, d_out: int = 2):
    return [("dense_0", [("w", (d_in, hidden), _glorot), ("b", (hidden,), _zeros)]),
            ("dense_1", [("w", (hidden, d_out), _glorot), ("b", (d_out,), _zeros)])]


# --- the layer bodies, shared by every contender ---------------------------------------------------


def conv_relu(x, w, b):
    return jax.nn.relu(_conv(x, w) + b)


def dense_tanh(x, w, b):
    return jnp.tanh(x @ w + b)


def summed(x, w):
    return x + w


# --- hand-written JAX ------------------------------------------------------------------------------


def _hand_init(layers):
    def init(key, x):
        del x
        keys = jax.random.split(key, sum(len(ps) for _, ps in layers))
        params, i = {}, 0
        for scope, ps in layers:
            node = params
            for part in scope.split("/"):
                node = node.setdefault(part, {})
            for name, shape, init_fn in ps:
                node[name] = init_fn(keys[i], shape)
                i += 1
        return params
    return init


def _hand(kind, layers, n_layers):
    if kind == "conv":
        def apply(p, x):
            for i in range(n_layers):
                q = p[f"layer_{i}"]
                x = conv_relu(x, q["weights"], q["biases"])
            return x
    elif kind in ("dense", "widening"):
        def apply(p, x):
            for i in range(n_layers):
                q = p[f"layer_{i}"]
                x = dense_tanh(x, q["w"], q["b"])
            return x
    elif kind == "two_layer":
        def apply(p, x):
            x = dense_tanh(x, p["dense_0"]["w"], p["dense_0"]["b"])
            return dense_tanh(x, p["dense_1"]["w"], p["dense_1"]["b"])
    elif kind == "same_shape":
        def apply(p, x):
            for i in range(n_layers):
                x = summed(x, p[f"p_{i}"]["w"])
            return x
    elif kind == "image_filter":
        def apply(p, x):
            def filt(img, q):
                y = conv_relu(img, q["conv1"]["weights"], q["conv1"]["biases"])
                return conv_relu(y, q["conv2"]["weights"], q["conv2"]["biases"])
            q = p["image_filters"]
            return filt(x[0], q), filt(x[1], q)
    else:
        raise ValueError(kind)
    return Model("jax", _hand_init(layers), apply)


def _hand_named(kind, layers, n_layers):
    """Hand-written JAX that also names each layer's ops (``jax.named_scope``), as every ``sp.scope``
    does: the floor for a library that puts scope paths into XLA op metadata. Tiny layers only."""
    if kind != "dense":
        raise ValueError(kind)

    def apply(p, x):
        for i in range(n_layers):
            with jax.named_scope(f"layer_{i}"):
                q = p[f"layer_{i}"]
                x = dense_tanh(x, q["w"], q["b"])
        return x
    return Model("jax_named_scopes", _hand_init(layers), apply)


# The least any API that lets model code name its parameters through scopes costs per call: the call
# installs the params in a context variable, a ``with`` block per scope steps into a sub-dict, and a
# function call per parameter reads it. No checks at all: no reuse rules, no shape or dtype checks,
# no name scopes, no counters, no error sites. A reference for the eager-apply row, not a contender.
_LOOKUP: contextvars.ContextVar = contextvars.ContextVar("bench_scoped_lookup", default=None)


class _LookupScope:
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        state = _LOOKUP.get()
        state.append(state[-1][self.name])

    def __exit__(self, *exc_info):
        _LOOKUP.get().pop()


def _lookup(name: str, shape, init=None):
    del shape, init
    return _LOOKUP.get()[-1][name]


def _hand_scoped_lookup(kind, layers, n_layers):
    """Hand-written JAX reading its parameters through the minimal scoped lookup above. 2-layer only."""
    if kind != "two_layer":
        raise ValueError(kind)
    (s0, ((_, w0, _), (_, b0, _))), (s1, ((_, w1, _), (_, b1, _))) = layers
    scope0, scope1 = _LookupScope(s0), _LookupScope(s1)

    def fn(x):
        with scope0:
            x = dense_tanh(x, _lookup("w", w0, init=_glorot), _lookup("b", b0, init=_zeros))
        with scope1:
            return dense_tanh(x, _lookup("w", w1, init=_glorot), _lookup("b", b1, init=_zeros))

    def apply(p, x):
        token = _LOOKUP.set([p])
        try:
            return fn(x)
        finally:
            _LOOKUP.reset(token)
    return Model("jax_scoped_lookup", _hand_init(layers), apply)


# --- scoped_params ---------------------------------------------------------------------------------


def _sp(kind, layers, n_layers):
    # Written as a user writes scoped_params: each layer asks for its parameters by name, shape and
    # initializer (every layer of a stack has the same ones; the 2-layer model is spelled out).
    _, ((_, w_shape, w_init), *rest) = layers[0]
    _, b_shape, b_init = rest[0] if rest else (None, None, None)

    if kind == "conv":
        def fn(x):
            for i in range(n_layers):
                with sp.scope(f"layer_{i}"):
                    x = conv_relu(x, sp.get_param("weights", w_shape, init=w_init),
                                  sp.get_param("biases", b_shape, init=b_init))
            return x
    elif kind == "dense":
        def fn(x):
            for i in range(n_layers):
                with sp.scope(f"layer_{i}"):
                    x = dense_tanh(x, sp.get_param("w", w_shape, init=w_init),
                                   sp.get_param("b", b_shape, init=b_init))
            return x
    elif kind == "widening":
        def fn(x):
            for i in range(n_layers):
                with sp.scope(f"layer_{i}"):
                    width = x.shape[-1] + 1
                    x = dense_tanh(x, sp.get_param("w", (x.shape[-1], width), init=_glorot),
                                   sp.get_param("b", (width,), init=_zeros))
            return x
    elif kind == "two_layer":
        _, ((_, w1_shape, _), (_, b1_shape, _)) = layers[1]

        def fn(x):
            with sp.scope("dense_0"):
                x = dense_tanh(x, sp.get_param("w", w_shape, init=_glorot),
                               sp.get_param("b", b_shape, init=_zeros))
            with sp.scope("dense_1"):
                return dense_tanh(x, sp.get_param("w", w1_shape, init=_glorot),
                                  sp.get_param("b", b1_shape, init=_zeros))
    elif kind == "same_shape":
        def fn(x):
            for i in range(n_layers):
                with sp.scope(f"p_{i}"):
                    x = summed(x, sp.get_param("w", w_shape, init=w_init))
            return x
    elif kind == "image_filter":
        # The seeds' tutorial, verbatim in spirit: conv_relu under conv1/conv2, shared by reuse.
        def my_image_filter(img):
            with sp.scope("conv1"):
                w = sp.get_param("weights", (5, 5, 32, 32), init=_glorot)
                b = sp.get_param("biases", (32,), init=_zeros)
                y = conv_relu(img, w, b)
            with sp.scope("conv2"):
                w = sp.get_param("weights", (5, 5, 32, 32), init=_glorot)
                b = sp.get_param("biases", (32,), init=_zeros)
                return conv_relu(y, w, b)

        def fn(x):
            with sp.scope("image_filters") as s:
                r1 = my_image_filter(x[0])
                s.reuse_variables()
                r2 = my_image_filter(x[1])
            return r1, r2
    else:
        raise ValueError(kind)
    model = sp.transform(fn)
    return Model("scoped_params", model.init, model.apply)


# The tiny layers as a TF 1.x port writes them, through the layer APIs with their default names:
# contender -> (one layer of width w, its scope's base name, its names for the tiny layers' w and b).
_LAYER_APIS = {
    "scoped_params_layers": (lambda x, w: sp.layers.dense(x, w, activation=jnp.tanh),
                             "dense", {"w": "kernel", "b": "bias"}),
    "scoped_params_slim": (lambda x, w: sp.slim.fully_connected(x, w, activation_fn=jnp.tanh),
                           "fully_connected", {"w": "weights", "b": "biases"}),
    "scoped_params_objects": (lambda x, w: sp.layers.Dense(w, activation=jnp.tanh)(x),
                              "dense", {"w": "kernel", "b": "bias"}),
}


def _sp_layer_api(contender):
    """The builder of ``contender`` (a key of ``_LAYER_APIS``): the tiny layers and the 2-layer model."""
    def build(kind, layers, n_layers):
        if kind not in ("dense", "two_layer"):
            raise ValueError(kind)
        layer = _LAYER_APIS[contender][0]
        # each layer's width: its w's last dimension
        widths = [ps[0][1][1] for _, ps in layers] if kind == "two_layer" else [layers[0][1][0][1][1]] * n_layers

        def fn(x):
            for width in widths:
                x = layer(x, width)
            return x
        model = sp.transform(fn)
        return Model(contender, model.init, model.apply)
    return build


# --- Haiku -----------------------------------------------------------------------------------------


def _haiku(kind, layers, n_layers):
    import haiku as hk

    def hk_init(init):
        return lambda shape, dtype: init(hk.next_rng_key(), shape, dtype)

    class Layer(hk.Module):
        def __init__(self, spec, body, name):
            super().__init__(name=name)
            self.spec, self.body = spec, body

        def __call__(self, x):
            ps = [hk.get_parameter(n, s, init=hk_init(i)) for n, s, i in self.spec]
            return self.body(x, *ps)

    body = {"conv": conv_relu, "dense": dense_tanh, "widening": dense_tanh, "two_layer": dense_tanh,
            "same_shape": summed}.get(kind)

    if kind == "image_filter":
        def fn(x):
            spec = layers[0][1]
            with hk.name_scope("image_filters"):
                c1, c2 = Layer(spec, conv_relu, "conv1"), Layer(spec, conv_relu, "conv2")
            return c2(c1(x[0])), c2(c1(x[1]))
    else:
        def fn(x):
            for scope, spec in layers:
                x = Layer(spec, body, scope)(x)
            return x

    model = hk.transform(fn)
    return Model("haiku", model.init, lambda p, x: model.apply(p, None, x))


# --- Flax linen ------------------------------------------------------------------------------------


def _flax(kind, layers, n_layers):
    import flax.linen as nn

    class Layer(nn.Module):
        spec: Any
        body: Callable

        @nn.compact
        def __call__(self, x):
            ps = [self.param(n, i, s) for n, s, i in self.spec]
            return self.body(x, *ps)

    body = {"conv": conv_relu, "dense": dense_tanh, "widening": dense_tanh, "two_layer": dense_tanh,
            "same_shape": summed}.get(kind)

    if kind == "image_filter":
        class Filter(nn.Module):
            @nn.compact
            def __call__(self, img):
                spec = layers[0][1]
                return Layer(spec, conv_relu, name="conv2")(Layer(spec, conv_relu, name="conv1")(img))

        class Top(nn.Module):
            @nn.compact
            def __call__(self, x):
                f = Filter(name="image_filters")
                return f(x[0]), f(x[1])
    else:
        class Top(nn.Module):
            @nn.compact
            def __call__(self, x):
                for scope, spec in layers:
                    x = Layer(spec, body, name=scope)(x)
                return x

    top = Top()
    return Model("flax", top.init, top.apply)


_BUILDERS = {"jax": _hand, "scoped_params": _sp, "haiku": _haiku, "flax": _flax,
             "jax_named_scopes": _hand_named, "jax_scoped_lookup": _hand_scoped_lookup,
             **{c: _sp_layer_api(c) for c in _LAYER_APIS}}


def build(contender: str, kind: str, n: int = 0) -> Model:
    """The model ``kind`` ("conv", "dense", "widening", "two_layer", "same_shape", "image_filter") of
    size ``n``."""
    layers = {"conv": conv_stack_layers, "dense": tiny_layers, "widening": widening_layers,
              "same_shape": same_shape_params,
              "two_layer": lambda n: two_layer(), "image_filter": lambda n: conv_stack_layers(1)}[kind](n)
    if kind == "image_filter":
        layers = [("image_filters/conv1", layers[0][1]), ("image_filters/conv2", layers[0][1])]
    return _BUILDERS[contender](kind, layers, n)


# --- weights: one flat dict, each contender's tree ------------------------------------------------


def to_params(contender: str, flat: Dict[str, Any]) -> Any:
    """scoped_params' flat full names -> the contender's params tree."""
    if contender in ("jax", "jax_named_scopes", "jax_scoped_lookup", "scoped_params"):
        return sp.unflatten(flat)
    if contender == "haiku":
        out: Dict[str, Dict[str, Any]] = {}
        for name, v in flat.items():
            module, leaf = name.rsplit("/", 1)
            out.setdefault(module, {})[leaf] = v
        return out
    if contender == "flax":
        return {"params": sp.unflatten(flat)}
    if contender in _LAYER_APIS:  # layer_<i>/w -> dense[_<i>]/kernel, ...
        _, base, leaves = _LAYER_APIS[contender]
        out = {}
        for name, v in flat.items():
            layer, leaf = name.rsplit("/", 1)
            i = int(layer.rsplit("_", 1)[1])
            out[f"{base}_{i}/{leaves[leaf]}" if i else f"{base}/{leaves[leaf]}"] = v
        return sp.unflatten(out)
    raise ValueError(contender)


def example_input(kind: str, batch: int = 8, size: int = 32, channels: int = 32):
    key = jax.random.key(1)
    if kind == "conv":
        return jax.random.normal(key, (batch, size, size, channels))
    if kind == "image_filter":
        return jax.random.normal(key, (2, batch, size, size, channels))
    if kind == "two_layer":
        return jax.random.normal(key, (2, 4))
    return jax.random.normal(key, (2, 4))
