"""Weight initialisers, with torch.nn.init's formulas for the weight layouts of fastnn's
layers.

Every initialiser is `f(shape, rng=None, dtype=np.float32, *, <its parameters>)` and
returns a new C-contiguous array. `shape` is an int or a tuple. The fans follow the
layer that owns the weight: a 2-d weight is Dense's (in, out) (fan_in = in, fan_out =
out; the transpose of torch's Linear weight), a weight of 3 or more dimensions is a
convolution's (out_channels, in_channels, *kernel), as torch's (fan_in = in_channels *
prod(kernel), fan_out = out_channels * prod(kernel)). `rng` is a
numpy Generator, an int seed or None (fastnn's global generator, see `fastnn.seed`).
Random values are drawn in float64 and then rounded to `dtype`, so the same seed gives
the same weights in float32 and float64.

>>> from fastnn import init
>>> w = init.he_normal((256, 128), rng=0)       # N(0, 2 / 256)
>>> w.shape, w.dtype
((256, 128), dtype('float32'))
>>> init.xavier_uniform((4, 4), rng=0, gain=init.calculate_gain("tanh")).dtype
dtype('float32')
"""
import math
import numbers

import numpy as np

from .core.rng import as_rng
from .core.validation import Dtype, Real, check

__all__ = ["zeros", "ones", "normal", "uniform", "xavier_uniform", "xavier_normal",
           "he_normal", "he_uniform", "kaiming_normal", "kaiming_uniform", "lecun_normal",
           "calculate_gain", "get"]


def _shape(shape, fn):
    if isinstance(shape, numbers.Integral) and not isinstance(shape, (bool, np.bool_)):
        shape = (shape,)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError("%s: shape must be an int or a tuple of ints, got %r"
                        % (fn, shape)) from None
    for s in shape:
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral) or s < 0:
            raise ValueError("%s: shape must contain non-negative ints, got %r" % (fn, shape))
    return tuple(int(s) for s in shape)


def _fans(shape, fn):
    """(fan_in, fan_out): Dense's (in, out), or a convolution's (out, in, *kernel)."""
    if len(shape) < 2:
        raise ValueError("%s: fan_in and fan_out need a weight shape of at least 2 "
                         "dimensions ((in, out) or (out, in, *kernel)), got %s" % (fn, shape))
    if len(shape) == 2:
        return shape
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _fan(shape, mode, fn):
    fan_in, fan_out = _fans(shape, fn)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError('%s: mode must be "fan_in" or "fan_out", got %r' % (fn, mode))
    fan = fan_in if mode == "fan_in" else fan_out
    if fan == 0:
        raise ValueError("%s: cannot initialise a weight with a zero %s (shape %s)"
                         % (fn, mode, shape))
    return fan


def calculate_gain(nonlinearity, param=None):
    """torch.nn.init.calculate_gain: the recommended gain for a nonlinearity.

    linear/identity/sigmoid -> 1, tanh -> 5/3, relu -> sqrt(2),
    leaky_relu -> sqrt(2 / (1 + negative_slope^2)) (param, default 0.01), selu -> 3/4.
    """
    linear = ("linear", "identity", "sigmoid", "conv1d", "conv2d", "conv3d")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else check("calculate_gain", "param", param, Real())
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError("calculate_gain: unsupported nonlinearity %r" % (nonlinearity,))


def _normal(shape, std, rng, dtype, fn, mean=0.0):
    dt = check(fn, "dtype", dtype, Dtype())
    gen = as_rng(rng, fn)
    return (mean + std * gen.standard_normal(shape)).astype(dt)


def _uniform(shape, low, high, rng, dtype, fn):
    dt = check(fn, "dtype", dtype, Dtype())
    gen = as_rng(rng, fn)
    return gen.uniform(low, high, shape).astype(dt)


def zeros(shape, rng=None, dtype=np.float32):
    """All zeros (rng is accepted for a uniform signature and not used)."""
    shape = _shape(shape, "zeros")
    if rng is not None:
        as_rng(rng, "zeros")
    return np.zeros(shape, check("zeros", "dtype", dtype, Dtype()))


def ones(shape, rng=None, dtype=np.float32):
    """All ones (rng is accepted for a uniform signature and not used)."""
    shape = _shape(shape, "ones")
    if rng is not None:
        as_rng(rng, "ones")
    return np.ones(shape, check("ones", "dtype", dtype, Dtype()))


def normal(shape, rng=None, dtype=np.float32, *, std=0.01, mean=0.0):
    """N(mean, std^2) (cs231n's `weight_scale * randn`, std=0.01 by default)."""
    fn = "normal"
    shape = _shape(shape, fn)
    std = check(fn, "std", std, Real(0.0))
    return _normal(shape, std, rng, dtype, fn, mean=check(fn, "mean", mean, Real()))


def uniform(shape, rng=None, dtype=np.float32, *, a=0.0, b=1.0):
    """U(a, b) (torch.nn.init.uniform_, a=0, b=1 by default)."""
    fn = "uniform"
    shape = _shape(shape, fn)
    a, b = check(fn, "a", a, Real()), check(fn, "b", b, Real())
    if a > b:
        raise ValueError("uniform: expected a <= b, got a=%r, b=%r" % (a, b))
    return _uniform(shape, a, b, rng, dtype, fn)


def xavier_uniform(shape, rng=None, dtype=np.float32, *, gain=1.0):
    """Glorot uniform: U(-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out))."""
    fn = "xavier_uniform"
    shape = _shape(shape, fn)
    fan_in, fan_out = _fans(shape, fn)
    if fan_in + fan_out == 0:
        raise ValueError("%s: cannot initialise an empty weight of shape %s" % (fn, shape))
    bound = check(fn, "gain", gain, Real()) * math.sqrt(6.0 / (fan_in + fan_out))
    return _uniform(shape, -bound, bound, rng, dtype, fn)


def xavier_normal(shape, rng=None, dtype=np.float32, *, gain=1.0):
    """Glorot normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fn = "xavier_normal"
    shape = _shape(shape, fn)
    fan_in, fan_out = _fans(shape, fn)
    if fan_in + fan_out == 0:
        raise ValueError("%s: cannot initialise an empty weight of shape %s" % (fn, shape))
    std = check(fn, "gain", gain, Real()) * math.sqrt(2.0 / (fan_in + fan_out))
    return _normal(shape, abs(std), rng, dtype, fn)


def _kaiming_gain(a, nonlinearity, fn):
    a = check(fn, "a", a, Real())
    if nonlinearity == "leaky_relu":
        return calculate_gain("leaky_relu", a)
    try:
        return calculate_gain(nonlinearity)
    except ValueError:
        raise ValueError("%s: unsupported nonlinearity %r" % (fn, nonlinearity)) from None


def he_normal(shape, rng=None, dtype=np.float32, *, a=0.0, mode="fan_in",
              nonlinearity="leaky_relu"):
    """He / Kaiming normal (torch.nn.init.kaiming_normal_): N(0, std^2),
    std = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a) (sqrt(2) by default)."""
    fn = "he_normal"
    shape = _shape(shape, fn)
    std = _kaiming_gain(a, nonlinearity, fn) / math.sqrt(_fan(shape, mode, fn))
    return _normal(shape, std, rng, dtype, fn)


def he_uniform(shape, rng=None, dtype=np.float32, *, a=0.0, mode="fan_in",
               nonlinearity="leaky_relu"):
    """He / Kaiming uniform (torch.nn.init.kaiming_uniform_): U(-bound, bound),
    bound = gain * sqrt(3 / fan)."""
    fn = "he_uniform"
    shape = _shape(shape, fn)
    bound = _kaiming_gain(a, nonlinearity, fn) * math.sqrt(3.0 / _fan(shape, mode, fn))
    return _uniform(shape, -bound, bound, rng, dtype, fn)


kaiming_normal = he_normal
kaiming_uniform = he_uniform


def lecun_normal(shape, rng=None, dtype=np.float32):
    """LeCun normal: N(0, 1 / fan_in)."""
    fn = "lecun_normal"
    shape = _shape(shape, fn)
    return _normal(shape, 1.0 / math.sqrt(_fan(shape, "fan_in", fn)), rng, dtype, fn)


_BY_NAME = {"zeros": zeros, "ones": ones, "normal": normal, "uniform": uniform,
            "xavier_uniform": xavier_uniform, "xavier_normal": xavier_normal,
            "he_normal": he_normal, "he_uniform": he_uniform,
            "kaiming_normal": he_normal, "kaiming_uniform": he_uniform,
            "lecun_normal": lecun_normal}


def get(init, fn="init"):
    """An initialiser from its name (e.g. "he_normal") or a callable (returned as is)."""
    if isinstance(init, str):
        if init not in _BY_NAME:
            raise ValueError("%s: unknown initialiser %r; expected one of %s or a callable "
                             "f(shape, rng=..., dtype=...)"
                             % (fn, init, ", ".join(sorted(_BY_NAME))))
        return _BY_NAME[init]
    if callable(init):
        return init
    raise TypeError("%s: init must be an initialiser name or a callable, got %r" % (fn, init))
