"""Initializers with TF 1.x's names and defaults, called as ``init(key, shape, dtype)``.

Every ``jax.nn.initializers`` object works with ``get_param`` as is; these add the TF 1.x spellings
ported code uses (``tf.*_initializer``, ``tf.initializers.*``, contrib's ``xavier_initializer``, and
``tf.keras.initializers``' classes with Keras's own defaults), and TF's default (Glorot-uniform with
TF's fan rules, which also cover rank-0 and rank-1 shapes that ``jax.nn.initializers.glorot_uniform``
refuses). The lowercase ``random_normal``, ``random_uniform`` and ``truncated_normal`` are TF core's
``tf.initializers.*`` (stddev 1.0, range [0, 1)), not Keras's lowercase aliases of the same names
(stddev 0.05): port Keras's to ``RandomNormal()``, ``RandomUniform()``, ``TruncatedNormal()``.

The factories standing for TF's classes also take TF's ``seed`` and ``dtype`` arguments, by keyword
or in TF's positional order (``random_normal_initializer(0.0, 0.02, 42)``,
``constant_initializer(0.1, tf.float32)``, ``zeros_initializer(tf.float32)``). A seed fixes the draw, as an op seed does in TF 1.x: the values come from ``jax.random.key(seed)`` instead of
the parameter's key, so they are the same in every ``init`` and for every parameter of the same shape
given that initializer (not TF's numbers: the generators differ). ``dtype`` is ignored, as
``tf.get_variable`` ignores it: the parameter's dtype is the one drawn.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import inspect
import math
import types
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ._errors import TF_PACKAGES, InitializerError


__all__ = [
    "constant", "constant_initializer", "default_initializer", "glorot_normal",
    "glorot_normal_initializer", "glorot_uniform", "glorot_uniform_initializer", "he_normal",
    "he_uniform", "identity", "identity_initializer", "lecun_normal", "lecun_uniform", "ones",
    "ones_initializer", "orthogonal", "orthogonal_initializer", "random_normal",
    "random_normal_initializer", "random_uniform", "random_uniform_initializer", "truncated_normal",
    "truncated_normal_initializer", "uniform_unit_scaling", "uniform_unit_scaling_initializer",
    "variance_scaling", "variance_scaling_initializer", "xavier_initializer", "xavier_initializer_conv2d", "zeros", "zeros_initializer",
    "contrib", "contrib_variance_scaling",
    # tf.keras.initializers' classes, with Keras's defaults
    "Constant", "GlorotNormal", "GlorotUniform", "HeNormal", "HeUniform", "Identity", "LecunNormal",
    "LecunUniform", "Ones", "Orthogonal", "RandomNormal", "RandomUniform", "TruncatedNormal",
    "VarianceScaling", "Zeros", "normal", "uniform",
    "InitializerArgumentError",
]


class InitializerArgumentError(InitializerError, TypeError):
    """An initializer's arguments, or the dtype it is asked for, that it cannot take: a float
    initializer for an integer, bool or complex parameter, ``verify_shape=True`` with a value of
    another shape, contrib's arguments given to core ``variance_scaling_initializer``, a TF/Keras-style
    initializer ``init(shape, dtype)``. TF raises ``TypeError`` for some of these and ``ValueError``
    for others, and this package raises ``ValueError`` for dtype and shape problems (its
    ``ShapeMismatchError`` and ``DtypeMismatchError`` are ones): this is both (and an
    ``sp.InitializerError``), so ``except`` clauses written against either keep working.

    >>> try:
    ...     sp.initializers.orthogonal()(jax.random.key(0), (4, 4), jnp.int8)
    ... except TypeError as e:  # or ValueError, or sp.InitializerError
    ...     print(str(e).splitlines()[0])
    orthogonal initializer draws real floating values and cannot make a parameter of dtype int8 ...
    """

# TF 1.x's initializers are classes, and tf.get_variable instantiates a class it is given
# (``initializer=tf.zeros_initializer``, not called, is common TF code). Ours are factory functions;
# the ones standing for TF's classes carry this mark, and get_param calls them with their defaults.
_FACTORY_MARK = "_scoped_params_initializer_factory"


def _tf_class(factory: Optional[Callable] = None, *, order: Optional[Sequence[str]] = None) -> Any:
    """Mark ``factory`` as standing for a TF initializer class, and give it TF's ``seed`` and
    ``dtype`` arguments (see the module's docstring). Positional arguments are read in ``order``,
    TF's order of its class's arguments: by default the factory's own, then ``seed`` and ``dtype``
    (``random_normal_initializer(mean, stddev, seed, dtype)``); ``seed`` or ``dtype`` not in
    ``order`` is keyword-only."""
    if factory is None:
        return functools.partial(_tf_class, order=order)
    signature = inspect.signature(factory)
    own = {n: p for n, p in signature.parameters.items() if p.kind != p.VAR_KEYWORD}
    positional = tuple(order) if order is not None else (*own, "seed", "dtype")
    assert set(positional) <= {*own, "seed", "dtype"}, f"{factory.__name__}: order {positional}"

    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any):
        if args:
            if len(args) > len(positional):
                raise TypeError(
                    f"{make.__name__}() takes at most {len(positional)} positional arguments "
                    f"({', '.join(positional)}, in TF's order), got {len(args)}: {args!r}.\n"
                    "  fix: pass the arguments TF takes, the others by keyword.")
            for n, value in zip(positional, args):
                if n in kwargs:
                    raise TypeError(f"{make.__name__}() got multiple values for argument {n!r} "
                                    f"(positional arguments are {', '.join(positional)}, in TF's "
                                    "order).\n  fix: pass it once.")
                kwargs[n] = value
        seed = kwargs.pop("seed", None)
        kwargs.pop("dtype", None)  # tf.get_variable calls the initializer with the variable's dtype
        init = factory(**kwargs)
        return init if seed is None else _seeded(init, seed)

    tf = {n: inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
          for n in ("seed", "dtype")}
    parameters = [own.get(n) or tf[n] for n in positional]
    parameters += [p.replace(kind=p.KEYWORD_ONLY) for n, p in {**own, **tf}.items()
                   if n not in positional]
    make.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    setattr(make, _FACTORY_MARK, True)
    return make


def _seeded(init: Callable, seed: int) -> Callable:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None (as in TF), got {seed!r}.")
    key = int(seed)

    def seeded(_key, shape, dtype=jnp.float32):
        return init(jax.random.key(key), shape, dtype)

    seeded.__name__ = seeded.__qualname__ = f"{getattr(init, '__name__', 'init')}_seed_{key}"
    return seeded


def _instantiate(init: Any) -> Any:
    """``init()`` for one of the factories above passed uncalled (as TF instantiates an initializer
    class), else ``init`` itself."""
    return init() if getattr(init, _FACTORY_MARK, False) else init


def _keras_convention_error(full: str, asked: str, init: Any) -> InitializerArgumentError:
    """get_param's error for ``init(shape, dtype=None, ...)``, Keras's ``__call__`` (and a TF-style
    function's) that cannot be called as ``init(key, shape, dtype)``; ``asked``: the shape, shown."""
    function = isinstance(init, (types.FunctionType, types.MethodType, functools.partial))
    what = getattr(init, "__name__", "") if function else type(init).__name__
    name = what if function and what.isidentifier() else "keras_init"
    fix = (f"a deterministic one can be wrapped, init=lambda key, shape, dtype: {name}(shape, dtype); "
           "a random one should draw from the key it is given (e.g. jax.random.normal(key, shape, "
           "dtype)); sp.initializers has TF 1.x's and Keras's initializers, with their names and "
           "defaults, in this convention.")
    ours = _keras_equivalent(init) if not function else None
    if ours is not None:
        fix = f"use {ours}, Keras's {what} in this convention (with Keras's defaults); else {fix}"
    return InitializerArgumentError(
        f"The initializer of '{full}' ({what if what.isidentifier() else 'a lambda'}) takes (shape, dtype, ...), Keras's (and "
        "TF 1.x's) calling convention, but scoped_params calls initializers as init(key, shape, "
        "dtype).\n"
        f"  asked: shape={asked} with initializer {init!r}\n"
        f"  fix: {fix}")


def _is_tf_class(init: Any) -> bool:
    """Whether ``init`` is a class of TF's or Keras's (an initializer passed uncalled)."""
    return isinstance(init, type) and init.__module__.split(".", 1)[0] in TF_PACKAGES


def _tf_class_error(full: str, asked: str, init: type, shapeless: bool = False
                    ) -> InitializerArgumentError:
    """get_param's error for TF's or Keras's initializer class ``init`` passed uncalled, which TF 1.x
    instantiates: its instances take (shape, dtype, ...), so ours is the fix, as for an instance
    (the fix of calling it would lead to that instance's error); ``asked``: the request, shown;
    ``shapeless``: it has no shape, which an initializer needs."""
    name = init.__name__
    owner = "TF" if init.__module__.startswith("tensorflow") else "Keras"
    try:
        ours = _keras_equivalent(init())  # its defaults, as TF 1.x would instantiate it
    except Exception:  # noqa: BLE001 - a class that takes no defaults: named without arguments
        ours = None
    if ours is None and name[:1].isupper() and name in __all__:
        ours = f"sp.initializers.{name}(...)"
    if ours is not None:
        fix = (f"use {ours}, {owner}'s {name} in this convention; sp.initializers has TF 1.x's and "
               "Keras's initializers, with their names and defaults.")
    else:
        fix = ("use sp.initializers' equivalent (it has TF 1.x's and Keras's initializers, with "
               "their names and defaults), or an initializer taking (key, shape, dtype), e.g. "
               "jax.nn.initializers.normal().")
    if shapeless:
        fix += " Pass shape=... too: an initializer needs the parameter's shape."
    return InitializerArgumentError(
        f"The initializer of '{full}' ({name}) is {owner}'s initializer class, passed uncalled: TF 1.x "
        "instantiated it, but its instances take (shape, dtype, ...), TF 1.x's calling convention, "
        "and scoped_params calls initializers as init(key, shape, dtype).\n"
        f"  asked: {asked}\n"
        f"  found: the class {init.__module__}.{init.__qualname__}\n"
        f"  fix: {fix}")


def _keras_equivalent(init: Any) -> Optional[str]:
    """``sp.initializers.<Name>(...)`` for a Keras initializer object whose class has a namesake
    here, with the arguments of its ``get_config()`` (``...`` when one is not ours); else None."""
    name = type(init).__name__
    ours = globals().get(name) if name[:1].isupper() and name in __all__ else None
    if ours is None:
        return None
    try:
        config = dict(init.get_config())
    except Exception:  # noqa: BLE001 - no config: the defaults
        config = {}
    if config.get("seed", 0) is None:
        del config["seed"]
    if not set(config) <= set(inspect.signature(ours).parameters):
        return f"sp.initializers.{name}(...)"
    return f"sp.initializers.{name}({', '.join(f'{k}={v!r}' for k, v in config.items())})"


def _fans(shape: Sequence[int]) -> Tuple[int, int]:
    """TF's init_ops._compute_fans: rank 0 -> (1, 1), rank 1 -> (n, n), conv kernels by receptive field."""
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return int(shape[0]), int(shape[0])
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    receptive = int(np.prod(shape[:-2]))
    return int(shape[-2]) * receptive, int(shape[-1]) * receptive


# Inside init (``_materialize.initialize``) random draws are taken flat and reshaped. JAX generates
# random bits in the row-major order of the flat index, so the values are exactly those of a draw at
# the full shape (pinned by a test), while XLA compiles a rank-1 draw several times faster: on CPU
# 94 ms against 262 ms for one 5x5x32x32 kernel, and 110 ms against 680 ms for forty of them drawn
# together, as jit(init) of a conv stack does. Elsewhere, notably under init_sharded, draws keep the
# full shape: a flat draw would hide each dimension's sharding from XLA's partitioner.
_FLAT_DRAWS: contextvars.ContextVar = contextvars.ContextVar("scoped_params_flat_draws",
                                                             default=False)


@contextlib.contextmanager
def _flat_draws():
    token = _FLAT_DRAWS.set(True)
    try:
        yield
    finally:
        _FLAT_DRAWS.reset(token)


def _flat_shape(shape: Sequence[int]) -> Tuple[int, ...]:
    return (math.prod(shape),) if _FLAT_DRAWS.get() else tuple(shape)


def _uniform(key, shape, dtype, minval, maxval):
    if np.dtype(dtype).itemsize < 2:  # float8: drawn in float32 and rounded (8 values otherwise)
        return jax.random.uniform(key, _flat_shape(shape), jnp.float32, minval, maxval).astype(
            dtype).reshape(shape)
    # (bfloat16 and float16 are drawn in their own dtype, as TF draws them: the same values)
    return jax.random.uniform(key, _flat_shape(shape), dtype, minval, maxval).reshape(shape)


def _normal(key, shape, dtype):
    draw = _draw_dtype(dtype)
    return jax.random.normal(key, _flat_shape(shape), draw).astype(dtype).reshape(shape)


def _truncated_normal(key, shape, dtype):
    draw = _draw_dtype(dtype)
    return jax.random.truncated_normal(key, -2.0, 2.0, _flat_shape(shape), draw).astype(
        dtype).reshape(shape)


def _draw_dtype(dtype: Any) -> Any:
    """The dtype a normal sample is drawn in: at least float32, as TF's kernels draw a half-precision
    one and round it. Drawn in bfloat16 it took 128 values with a biased mean and short tails, in
    float8 a truncated one was all NaN."""
    return dtype if np.dtype(dtype).itemsize >= 4 else jnp.float32


def _uniform_between(key, shape, dtype, minval, maxval):
    """TF's ``minval + (maxval - minval) * U[0, 1)``, for ``minval`` above ``maxval`` too (uniform
    over (maxval, minval]). It is ``jax.random.uniform``'s own affine map, in ``dtype``, on its U[0, 1)
    draw, without its clamp to ``minval``: that clamp, a no-op when minval <= maxval, makes every value
    ``minval`` otherwise."""
    low = jax.lax.convert_element_type(minval, dtype)
    high = jax.lax.convert_element_type(maxval, dtype)
    return _uniform(key, shape, dtype, 0.0, 1.0) * (high - low) + low


def _check_floating(name: str, dtype: Any) -> None:
    """TF's float initializers refuse an integer, bool or complex dtype; a cast of the float draw
    would truncate it (all zeros in int8, all True in bool) or leave the imaginary part zero. Checked
    in the draw, which runs once per group of parameters in init, not in apply."""
    if jnp.issubdtype(dtype, jnp.floating):
        return
    found = np.dtype(dtype).name
    if jnp.issubdtype(dtype, jnp.complexfloating):
        tf_says = f"DataType {found} not in list of allowed values: float16, bfloat16, float32, float64"
        cast = "it has no rule for an imaginary part"
        fix = ("give the parameter a real floating dtype (dtype=jnp.float32), or use an initializer "
               "that draws complex values, e.g. jax.nn.initializers.normal().")
    else:
        tf_says = f"Expected {found}, but got 0.0 of type 'float'"
        cast = "a cast would truncate its values" + (" (all True)" if found == "bool" else "")
        integer = (" or random_uniform_initializer(minval, maxval)"
                   if found in ("int32", "int64") else "")
        fix = ("give the parameter a floating dtype (dtype=jnp.float32), or an initializer of that "
               f"dtype: sp.initializers.zeros or constant_initializer(value){integer}.")
    raise InitializerArgumentError(
        f"{name} initializer draws real floating values and cannot make a parameter of dtype "
        f"{found} (TF: {tf_says}): {cast}.\n"
        f"  fix: {fix}")


@_tf_class
def variance_scaling(scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal",
                     **contrib_arguments: Any):
    """TF 1.x ``variance_scaling_initializer`` (fan rules of ``_compute_fans``, any rank; ``scale``
    must be above 0, as in TF). Contrib's function of the same name (``factor=``, ``mode='FAN_IN'``,
    ``uniform=``) is ``contrib_variance_scaling``, which checks no factor, as contrib's does not."""
    unknown = sorted(set(contrib_arguments) - {"factor", "uniform"})
    if unknown:  # a typo, or another library's argument: not contrib's
        close = difflib.get_close_matches(unknown[0], ["scale", "mode", "distribution", "seed",
                                                       "dtype"], n=1)
        raise TypeError(
            f"variance_scaling_initializer() got an unexpected keyword argument {unknown[0]!r}.\n"
            "  fix: its arguments are scale, mode ('fan_in', 'fan_out', 'fan_avg') and distribution "
            "('truncated_normal', 'untruncated_normal', 'uniform')"
            + (f"; did you mean {close[0]!r}?" if close else "."))
    if contrib_arguments or mode in ("FAN_IN", "FAN_OUT", "FAN_AVG"):
        asked = ", ".join([f"mode={mode!r}"] * (mode in ("FAN_IN", "FAN_OUT", "FAN_AVG")) + [
            f"{k}={v!r}" for k, v in contrib_arguments.items()])
        # TF: TypeError for factor= or uniform= (unexpected keywords), ValueError for mode='FAN_IN'
        raise InitializerArgumentError(
            f"variance_scaling_initializer({asked}): these are the arguments of "
            "tf.contrib.layers.variance_scaling_initializer, not of core TF's "
            "variance_scaling_initializer(scale, mode='fan_in', distribution), which this is.\n"
            "  fix: use sp.initializers.contrib.variance_scaling_initializer(factor=2.0, mode='FAN_IN', "
            "uniform=False) (its defaults are He's; core's scale defaults to 1.0).")
    if scale <= 0.0:  # TF's check: 0 would draw zeros, a negative scale fail at the first draw
        raise ValueError(
            f"Argument 'scale' must be a positive float (as in TF): "
            f"variance_scaling_initializer(scale={scale!r}).\n"
            "  fix: pass a scale above 0, e.g. 1.0 (LeCun's) or 2.0 (He's); for zeros use "
            "sp.initializers.zeros.")
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"variance_scaling: invalid mode {mode!r}; use 'fan_in', 'fan_out' or 'fan_avg'.")
    if isinstance(distribution, str):
        distribution = distribution.lower()  # as TF's init_ops and Keras do (not the mode)
    if distribution == "normal":
        distribution = "truncated_normal"
    if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
        raise ValueError(f"variance_scaling: invalid distribution {distribution!r}.")

    def init(key, shape, dtype=jnp.float32):
        _check_floating("variance_scaling", dtype)
        fan_in, fan_out = _fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
        variance = scale / max(1.0, n)
        if distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return _uniform(key, shape, dtype, -limit, limit)
        if distribution == "untruncated_normal":
            return math.sqrt(variance) * _normal(key, shape, dtype)
        # 0.879... is the stddev of a standard normal truncated to (-2, 2), as in TF.
        stddev = math.sqrt(variance) / 0.87962566103423978
        return stddev * _truncated_normal(key, shape, dtype)

    return init


@_tf_class
def glorot_uniform():
    """TF's default initializer for floating parameters: U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
    return _glorot_uniform


def _glorot_uniform(key, shape, dtype=jnp.float32):
    _check_floating("glorot_uniform", dtype)
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
    return _uniform(key, shape, dtype, -limit, limit)


@_tf_class
def glorot_normal():
    """TF 1.x ``glorot_normal_initializer``: ``variance_scaling(1.0, "fan_avg", "truncated_normal")``."""
    return variance_scaling(1.0, "fan_avg", "truncated_normal")


@_tf_class
def he_normal():
    """TF 1.x ``he_normal``: ``variance_scaling(2.0, "fan_in", "truncated_normal")``."""
    return variance_scaling(2.0, "fan_in", "truncated_normal")


@_tf_class
def he_uniform():
    """TF 1.x ``he_uniform``: ``variance_scaling(2.0, "fan_in", "uniform")``."""
    return variance_scaling(2.0, "fan_in", "uniform")


@_tf_class
def lecun_normal():
    """TF 1.x ``lecun_normal``: ``variance_scaling(1.0, "fan_in", "truncated_normal")``."""
    return variance_scaling(1.0, "fan_in", "truncated_normal")


@_tf_class
def lecun_uniform():
    """TF 1.x ``lecun_uniform``: ``variance_scaling(1.0, "fan_in", "uniform")``."""
    return variance_scaling(1.0, "fan_in", "uniform")


@_tf_class
def contrib_variance_scaling(factor: float = 2.0, mode: str = "FAN_IN", uniform: bool = False):
    """TF 1.x ``tf.contrib.layers.variance_scaling_initializer`` (also ``contrib.variance_scaling_
    initializer`` here). Its defaults are He's (factor 2, fan-in, normal), not core
    ``variance_scaling_initializer``'s (scale 1); n is fan_in, fan_out or their mean by ``mode``;
    uniform draws are U(-sqrt(3 factor / n), +...), normal ones a normal truncated at two standard
    deviations with stddev sqrt(1.3 factor / n) (not core's 1 / 0.8796 correction)."""
    if mode not in ("FAN_IN", "FAN_OUT", "FAN_AVG"):
        raise TypeError(f"contrib variance_scaling_initializer: invalid mode {mode!r}; use 'FAN_IN', "
                        "'FAN_OUT' or 'FAN_AVG' (as in TF's contrib).")

    def init(key, shape, dtype=jnp.float32):
        _check_floating("contrib variance_scaling", dtype)
        fan_in, fan_out = _fans(shape)  # contrib's rule too: a scalar's are 1 and 1
        n = max(1.0, {"FAN_IN": fan_in, "FAN_OUT": fan_out, "FAN_AVG": (fan_in + fan_out) / 2.0}[mode])
        if uniform:
            limit = math.sqrt(3.0 * factor / n)
            return _uniform(key, shape, dtype, -limit, limit)
        return math.sqrt(1.3 * factor / n) * _truncated_normal(key, shape, dtype)

    return init


@_tf_class
def xavier_initializer(uniform: bool = True):
    """TF 1.x ``tf.contrib.layers.xavier_initializer``: contrib's variance scaling with factor 1 and
    FAN_AVG. Uniform, it is Glorot-uniform. Normal, it is contrib's own rule: a normal truncated at
    two standard deviations with stddev sqrt(1.3 / n), n = (fan_in + fan_out) / 2, which differs from
    ``glorot_normal``'s correction (1 / 0.8796)."""
    if uniform:
        return _glorot_uniform
    return contrib_variance_scaling.__wrapped__(1.0, "FAN_AVG", False)  # type: ignore[attr-defined]


@_tf_class
def orthogonal(gain: float = 1.0):
    """TF 1.x ``orthogonal_initializer``: the shape flattened to (prod(shape[:-1]), shape[-1]), a
    normal draw made orthogonal by QR with the signs of R's diagonal (rows or columns orthonormal,
    whichever are fewer), times ``gain``. Rank 2 or more, as in TF."""

    def init(key, shape, dtype=jnp.float32):
        _check_floating("orthogonal", dtype)  # TF refuses it; the cast gave zeros for int8
        if len(shape) < 2:
            raise ValueError(f"orthogonal initializer: the shape must have rank 2 or more, got "
                             f"{tuple(shape)}.")
        rows, cols = math.prod(shape[:-1]), int(shape[-1])
        flat = (cols, rows) if rows < cols else (rows, cols)
        # QR in at least single precision (chosen, not promoted: jax_numpy_dtype_promotion="strict"
        # has no implicit path from bfloat16 to float32)
        draw = dtype if jnp.dtype(dtype).itemsize >= 4 else jnp.float32
        q, r = jnp.linalg.qr(jax.random.normal(key, flat, draw))
        q = q * jnp.sign(jnp.diagonal(r))[None, :]  # R's signs, column by column
        if rows < cols:
            q = q.T
        return (gain * q).reshape(shape).astype(dtype)

    return init


@_tf_class(order=("gain", "dtype"))  # TF's Identity(gain=1.0, dtype=tf.float32): no seed
def identity(gain: float = 1.0):
    """TF 1.x ``initializers.identity``: ``gain`` times the identity matrix (rank 2 only; a
    rectangular one has ones on its main diagonal)."""

    def init(key, shape, dtype=jnp.float32):
        del key
        if len(shape) != 2:
            raise ValueError(f"identity initializer: the shape must have rank 2, got {tuple(shape)}.")
        if not jnp.issubdtype(dtype, jnp.complexfloating):  # TF's: gain (a float) times eye
            _check_floating("identity", dtype)
        return gain * jnp.eye(shape[0], shape[1], dtype=dtype)

    return init


def zeros(key=None, shape=None, dtype=jnp.float32):
    """All zeros, as an initializer: ``init(key, shape, dtype)``, as ``jax.nn.initializers.zeros``.
    Called without a shape, as TF's ``tf.initializers.zeros()`` (``zeros_initializer``) and Keras's
    ``zeros()`` are, it returns itself: ``init=zeros`` and ``init=zeros()`` are the same."""
    if shape is None:
        return _itself(zeros, key)
    return jnp.zeros(shape, dtype)


def ones(key=None, shape=None, dtype=jnp.float32):
    """All ones, as an initializer: ``init(key, shape, dtype)``, as ``jax.nn.initializers.ones``.
    Called without a shape, as TF's ``tf.initializers.ones()`` (``ones_initializer``) and Keras's
    ``ones()`` are, it returns itself: ``init=ones`` and ``init=ones()`` are the same."""
    if shape is None:
        return _itself(ones, key)
    return jnp.ones(shape, dtype)


def _itself(init: Callable, dtype: Any) -> Callable:
    """``init``, for ``zeros()`` or ``zeros(dtype)`` (TF's ``zeros_initializer(dtype)``: the dtype is
    ignored, as ``tf.get_variable`` ignores it); an error for ``zeros(key)``, a shape missing."""
    if isinstance(dtype, jax.Array) or (isinstance(dtype, np.ndarray) and dtype.ndim):
        raise TypeError(
            f"{init.__name__}(key) without a shape: as an initializer it is called "
            f"{init.__name__}(key, shape, dtype); called as TF's initializer classes are, it takes "
            "at most a dtype.\n"
            f"  fix: pass the shape, {init.__name__}(key, shape), or pass init=sp.initializers."
            f"{init.__name__} (or {init.__name__}()) to get_param.")
    return init


# What zeros and ones are as initializers, for get_param's checks (a shape is needed, as with
# jax.nn.initializers'): a call without arguments is only TF's spelling.
for _init in (zeros, ones):
    _init.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter("key", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("shape", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("dtype", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=jnp.float32)])
del _init


def _not_exactly_in(array: np.ndarray, dtype: Any) -> Any:
    """The first value of ``array`` that ``dtype`` does not hold exactly, else None: 1.5 for int32,
    300 for int8, 2 for bool, 1j for float32. Rounding to a float's precision (0.1 in bfloat16) is
    no change of value here, as in TF."""
    dtype = np.dtype(dtype)
    if array.dtype.kind == "O" and dtype.kind in "iu":  # Python ints past 64 bits, say
        info = np.iinfo(dtype)
        return next((v for v in array.reshape(-1) if isinstance(v, int)
                     and not info.min <= v <= info.max), None)
    if array.dtype.kind not in "biufc" or jnp.issubdtype(dtype, jnp.complexfloating):
        return None  # no number (the cast says what it is), or a dtype that holds any number
    same, real = np.ones(array.shape, bool), array
    if array.dtype.kind == "c":
        same, real = np.imag(array) == 0, np.real(array)
    if not jnp.issubdtype(dtype, jnp.inexact):  # to a float: its precision, at most
        try:
            with np.errstate(invalid="ignore", over="ignore"):  # nan and inf: not equal, below
                same &= real.astype(dtype) == real
        except (TypeError, ValueError, OverflowError):
            return None
    if same.all():
        return None
    return array.reshape(-1)[~same.reshape(-1)][0].item()


def _tf_on_inexact(value: Any, dtype: Any) -> str:
    """What TF 1.x's constant_initializer does with ``value`` in ``dtype``: an integer out of an
    integer dtype's range wraps silently (300 as int8 is 44); any other value (a float, 300.0
    too, a complex) is its TypeError."""
    dtype = np.dtype(dtype)
    if isinstance(value, int) and not -2 ** 63 <= value < 2 ** 64:
        return "TF: OverflowError, Python int too large to convert to C long"
    if dtype.kind in "iu" and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        bits = dtype.itemsize * 8
        wrapped = int(value) & ((1 << bits) - 1)
        if dtype.kind == "i" and wrapped >= 1 << (bits - 1):
            wrapped -= 1 << bits
        return f"TF wraps it to {wrapped} silently"
    return f"TF: Expected {dtype.name}, but got {value!r}"


@_tf_class(order=("value", "dtype", "verify_shape"))  # TF 1.x's Constant(value, dtype, verify_shape)
def constant(value: Any = 0.0, verify_shape: bool = False):
    """TF 1.x's ``constant_initializer``: a scalar fills the requested shape; a list or array is
    read in row-major order into it, and when it has fewer values the last one fills the rest (zeros
    if it has none), as TF 1.x does. More values than the shape holds is an error, and with
    ``verify_shape=True`` the value must have the requested shape.

    >>> sp.initializers.constant([1.0, 2.0])(None, (2, 3)).tolist()
    [[1.0, 2.0, 2.0], [2.0, 2.0, 2.0]]
    """
    array = np.asarray(value)

    def init(key, shape, dtype=jnp.float32):
        del key
        size = math.prod(shape)
        if size == 0:  # TF checks nothing for an empty shape
            return jnp.zeros(shape, dtype)
        inexact = _not_exactly_in(array, dtype)
        if inexact is not None:
            raise TypeError(
                f"constant initializer: the value {inexact!r} does not fit {np.dtype(dtype).name} "
                f"exactly ({_tf_on_inexact(inexact, dtype)}); casting would change it, not only its "
                "precision.\n"
                "  fix: pass values of the parameter's dtype (round them yourself if that is meant), "
                "or give the parameter a dtype that holds them.")
        if verify_shape and array.shape != tuple(shape):
            # TF: TypeError "Expected Tensor's shape"; ours: ValueError for a shape problem (both)
            raise InitializerArgumentError(
                f"constant initializer with verify_shape=True: the value's shape {array.shape} is not "
                f"the requested {tuple(shape)} (TF: Expected Tensor's shape: {tuple(shape)}, but got "
                f"{array.shape}).\n"
                "  fix: pass a value of that shape, or drop verify_shape=True to fill or reshape it.")
        if array.ndim == 0:  # rounded once, on the host, as TF's (JAX's would round via float32)
            return jnp.full(shape, array.astype(np.dtype(dtype)), dtype)
        if array.size > size:
            raise ValueError(
                f"constant initializer: {array.size} values cannot fill shape {tuple(shape)}: too "
                f"many elements provided, it takes at most {size} (as in TF).\n"
                f"  fix: pass at most {size} values, or ask for a shape of {array.size} values.")
        flat = array.reshape(-1)
        if flat.size < size:  # TF 1.x repeats the last value (its constant op pads with it)
            last = flat[-1:] if flat.size else np.zeros(1, array.dtype)
            flat = np.concatenate([flat, np.repeat(last, size - flat.size)])
        # A copy: on CPU jnp.asarray may share the NumPy buffer, and the parameter would change
        # when the caller's array does.
        return jnp.array(flat.reshape(shape), dtype, copy=True)

    return init


@_tf_class
def random_normal(mean: float = 0.0, stddev: float = 1.0):
    """TF's ``random_normal_initializer`` (defaults mean=0, stddev=1)."""

    def init(key, shape, dtype=jnp.float32):
        _check_floating("random_normal", dtype)
        return mean + stddev * _normal(key, shape, dtype)

    return init


@_tf_class
def truncated_normal(mean: float = 0.0, stddev: float = 1.0):
    """TF's ``truncated_normal_initializer``: normal re-drawn beyond two standard deviations."""

    def init(key, shape, dtype=jnp.float32):
        _check_floating("truncated_normal", dtype)
        return mean + stddev * _truncated_normal(key, shape, dtype)

    return init


@_tf_class
def random_uniform(minval: float = 0.0, maxval: Optional[float] = None):
    """TF's ``random_uniform_initializer``: U[minval, maxval), ``maxval=None`` meaning 1.0 for
    floats. As in TF, floats are ``minval + (maxval - minval) * U[0, 1)``, so bounds out of order
    draw over (maxval, minval]. Integer parameters (int32 or int64, as in TF) draw
    ``randint(minval, maxval)`` and need ``maxval`` above ``minval``, as in TF (the default range
    would be all zeros); a bound with a fraction is refused for them, where TF refuses any float.

    >>> init = sp.initializers.random_uniform(0, 5)  # for an int32 parameter: values 0 to 4
    """
    high = 1.0 if maxval is None else maxval
    try:  # bounds out of order: TF's formula, which jax.random.uniform clamps to minval
        in_order = bool(np.all(np.asarray(minval) <= np.asarray(high)))
    except (TypeError, ValueError):  # not concrete: the formula, right in either order
        in_order = False

    def init(key, shape, dtype=jnp.float32):
        if jnp.issubdtype(dtype, jnp.integer):
            return _randint(key, shape, dtype, minval, maxval)
        _check_floating("random_uniform", dtype)
        if in_order:  # jax.random.uniform's values, as before
            return _uniform(key, shape, dtype, minval, high)
        return _uniform_between(key, shape, dtype, minval, high)

    return init


def _randint(key, shape, dtype, minval, maxval):
    """random_uniform's integer draw, refusing what TF refuses (in TF's order)."""
    asked, name = f"random_uniform(minval={minval!r}, maxval={maxval!r})", np.dtype(dtype).name
    if name not in ("int32", "int64"):
        raise InitializerArgumentError(
            f"{asked} cannot draw dtype {name}: TF's integer draws are int32 and int64 (TF: Argument "
            f"`dtype` got invalid value <dtype: '{name}'>).\n"
            "  fix: give the parameter dtype int32 or int64, or draw it yourself, e.g. "
            f"init=lambda key, shape, dtype: jax.random.randint(key, shape, {minval!r}, {maxval!r}, "
            "dtype).")
    low = _int_bound("minval", minval, minval, maxval, dtype)
    high = _int_bound("maxval", maxval, minval, maxval, dtype)
    if low >= high:  # TF's draw fails; jax.random.randint would give minval everywhere
        raise ValueError(
            f"{asked} for integer dtype {name}: minval must be below maxval (TF: Need minval < "
            "maxval); the draw would be minval everywhere.\n"
            "  fix: pass minval < maxval, e.g. random_uniform_initializer(0, 10) draws 0 to 9 (maxval "
            "is excluded).")
    return jax.random.randint(key, shape, low, high, dtype)


def _int_bound(argument: str, bound: Any, minval: Any, maxval: Any, dtype: Any) -> int:
    """A bound of an integer draw, as an int; TF refuses what it could not draw exactly."""
    asked, name = f"random_uniform(minval={minval!r}, maxval={maxval!r})", np.dtype(dtype).name
    if bound is None:
        raise ValueError(
            f"Must specify maxval for integer dtype {name} (as in TF): {asked}.\n"
            "  fix: pass integer bounds, e.g. random_uniform_initializer(0, 10) draws 0 to 9.")
    if int(bound) != bound:
        # e.g. Keras's RandomUniform defaults, +-0.05, which int() would make a range of zeros
        raise TypeError(
            f"{argument}={bound!r} is not an integer, for integer dtype {name} (TF refuses a float "
            f"bound there): {asked}.\n"
            "  fix: pass integer bounds, e.g. random_uniform_initializer(0, 10) draws 0 to 9.")
    return int(bound)


@_tf_class
def uniform_unit_scaling(factor: float = 1.0):
    """TF 1.x ``uniform_unit_scaling_initializer`` (``tf.initializers.uniform_unit_scaling``):
    U(-m, m) with m = sqrt(3 / input_size) * factor, input_size the product of all dimensions but
    the last (1 for a scalar or a vector; at least 1, as in TF, for a zero-size one). TF deprecates
    it for ``variance_scaling_initializer(distribution="uniform")``."""

    def init(key, shape, dtype=jnp.float32):
        _check_floating("uniform_unit_scaling", dtype)
        input_size = max(1.0, float(math.prod(shape[:-1])))
        limit = math.sqrt(3.0 / input_size) * factor
        return _uniform(key, shape, dtype, -limit, limit)

    return init


def default_initializer(dtype: np.dtype):
    """TF's _get_default_initializer: Glorot-uniform for floats, zeros for integers and bools."""
    if jnp.issubdtype(dtype, jnp.floating):
        return _glorot_uniform
    if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
        return zeros
    return None


# TF 1.x spellings, so ported code reads the same.
constant_initializer = constant


@_tf_class(order=("dtype",))  # TF's Zeros(dtype=tf.float32)
def zeros_initializer():
    """TF's ``zeros_initializer()`` is a factory; this returns ``zeros``."""
    return zeros


@_tf_class(order=("dtype",))  # TF's Ones(dtype=tf.float32)
def ones_initializer():
    """TF's ``ones_initializer()`` is a factory; this returns ``ones``."""
    return ones


random_normal_initializer = random_normal
truncated_normal_initializer = truncated_normal
uniform_unit_scaling_initializer = uniform_unit_scaling
random_uniform_initializer = random_uniform
glorot_uniform_initializer = glorot_uniform
glorot_normal_initializer = glorot_normal
variance_scaling_initializer = variance_scaling
xavier_initializer_conv2d = xavier_initializer
orthogonal_initializer = orthogonal
identity_initializer = identity


# tf.keras.initializers' classes, with Keras's defaults (its random ones differ from tf.*_initializer's:
# RandomNormal's stddev is 0.05, not 1.0).
Zeros = zeros_initializer
Ones = ones_initializer
Constant = constant
GlorotNormal = glorot_normal
GlorotUniform = glorot_uniform
HeNormal = he_normal
HeUniform = he_uniform
LecunNormal = lecun_normal
LecunUniform = lecun_uniform
Orthogonal = orthogonal
Identity = identity
VarianceScaling = variance_scaling


@_tf_class
def RandomNormal(mean: float = 0.0, stddev: float = 0.05):  # noqa: N802 - Keras's class name
    """``tf.keras.initializers.RandomNormal`` (defaults mean=0, stddev=0.05)."""
    return random_normal.__wrapped__(mean, stddev)  # type: ignore[attr-defined]


@_tf_class
def TruncatedNormal(mean: float = 0.0, stddev: float = 0.05):  # noqa: N802
    """``tf.keras.initializers.TruncatedNormal`` (defaults mean=0, stddev=0.05)."""
    return truncated_normal.__wrapped__(mean, stddev)  # type: ignore[attr-defined]


@_tf_class
def RandomUniform(minval: float = -0.05, maxval: float = 0.05):  # noqa: N802
    """``tf.keras.initializers.RandomUniform`` (defaults [-0.05, 0.05))."""
    return random_uniform.__wrapped__(minval, maxval)  # type: ignore[attr-defined]


# TF 1.x Keras's aliases (tf.compat.v1.keras.initializers.normal / uniform), with Keras's defaults.
normal = RandomNormal
uniform = RandomUniform


# tf.contrib.layers' initializers, at the path ported code spells: tf.contrib.layers.X -> contrib.X.
contrib = types.SimpleNamespace(
    variance_scaling_initializer=contrib_variance_scaling,
    xavier_initializer=xavier_initializer,
    xavier_initializer_conv2d=xavier_initializer,
)
