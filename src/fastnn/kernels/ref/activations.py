"""Activations: forward y = f(x) and fused gradient dx = dout * f'(x), in NumPy.

`code` is one of `fastnn.kernels.codes`; `p` is the activation's scalar parameter
(leaky_relu negative_slope, elu alpha, swish beta; ignored otherwise).
Every formula is finite for any finite input (no overflow warnings at +-1000).
"""
import numpy as np
from scipy.special import erf

from ..codes import ELU, GELU, GELU_TANH, IDENTITY, LEAKY_RELU, RELU, SIGMOID, SILU, SWISH, TANH

_SQRT_2_OVER_PI = 0.7978845608028654   # sqrt(2 / pi)
_INV_SQRT_2 = 0.7071067811865476       # 1 / sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327     # 1 / sqrt(2 pi)
_GELU_C = 0.044715


def sigmoid(x):
    """Stable logistic function: never evaluates exp of a positive number."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def _gelu_tanh_inner(x):
    return np.tanh(_SQRT_2_OVER_PI * (x + _GELU_C * x * x * x))


def act_forward(x, out, code, p, nthreads=1):
    """out[...] = f(x); x, out: same shape and dtype (may be the same array)."""
    dt = x.dtype.type
    if code == IDENTITY:
        out[...] = x
    elif code == SIGMOID:
        out[...] = sigmoid(x)
    elif code == TANH:
        np.tanh(x, out=out)
    elif code == RELU:
        np.maximum(x, dt(0), out=out)   # maximum propagates NaN
    elif code == LEAKY_RELU:
        out[...] = np.where(x > 0, x, dt(p) * x)
    elif code == ELU:
        out[...] = np.where(x > 0, x, dt(p) * np.expm1(np.minimum(x, dt(0))))
    elif code == GELU:
        out[...] = dt(0.5) * x * (dt(1) + erf(x * dt(_INV_SQRT_2)))
    elif code == GELU_TANH:
        out[...] = dt(0.5) * x * (dt(1) + _gelu_tanh_inner(x))
    elif code == SILU:
        out[...] = x * sigmoid(x)
    elif code == SWISH:
        out[...] = x * sigmoid(dt(p) * x)
    else:
        raise ValueError("act_forward: unknown activation code %r" % (code,))


def act_backward(dout, x, y, dx, code, p, nthreads=1):
    """dx[...] = dout * f'(x), using the forward's input x and output y = f(x)."""
    dt = x.dtype.type
    one = dt(1)
    if code == IDENTITY:
        g = one
    elif code == SIGMOID:
        g = y * (one - y)
    elif code == TANH:
        g = one - y * y
    elif code == RELU:
        g = (x > 0).astype(x.dtype)
    elif code == LEAKY_RELU:
        g = np.where(x > 0, one, dt(p))
    elif code == ELU:
        g = np.where(x > 0, one, dt(p) * np.exp(np.minimum(x, dt(0))))
    elif code == GELU:
        cdf = dt(0.5) * (one + erf(x * dt(_INV_SQRT_2)))
        g = cdf + x * dt(_INV_SQRT_2PI) * np.exp(dt(-0.5) * x * x)
    elif code == GELU_TANH:
        t = _gelu_tanh_inner(x)
        g = dt(0.5) * (one + t) + dt(0.5) * x * (one - t * t) * dt(_SQRT_2_OVER_PI) * (
            one + dt(3 * _GELU_C) * x * x)
    elif code == SILU:
        s = sigmoid(x)
        g = s * (one + x * (one - s))
    elif code == SWISH:
        s = sigmoid(dt(p) * x)
        g = s + dt(p) * x * s * (one - s)
    else:
        raise ValueError("act_backward: unknown activation code %r" % (code,))
    np.multiply(dout, g, out=dx)


def prelu_forward(x, alpha, out, nthreads=1):
    """out = x if x > 0 else alpha * x; x: (N, C) or (N,), alpha: (1,) or (C,)."""
    out[...] = np.where(x > 0, x, alpha * x)


def prelu_backward(dout, x, alpha, dx, dalpha, nthreads=1):
    """dx = dout * (1 if x > 0 else alpha); dalpha = sum(dout * x where x <= 0), reduced
    over every axis but the channel one (to shape (1,) when alpha is shared)."""
    pos = x > 0
    dx[...] = np.where(pos, dout, alpha * dout)
    contrib = np.where(pos, x.dtype.type(0), dout * x)
    if dalpha.shape[0] == 1:
        dalpha[0] = contrib.sum(dtype=np.float64)
    else:
        dalpha[...] = contrib.reshape(-1, dalpha.shape[0]).sum(axis=0, dtype=np.float64)


def maxout_forward(z, out, idx, nthreads=1):
    """Maxout over pieces: z (N, O * P) holds piece k of output j in column j * P + k;
    out[n, j] = max_k z[n, j * P + k] and idx[n, j] (intp) the first maximal k. A NaN
    counts as maximal, so it propagates (the first NaN wins)."""
    n, o = out.shape
    z3 = z.reshape(n, o, -1)
    np.argmax(z3, axis=2, out=idx)
    np.max(z3, axis=2, out=out)


def maxout_backward(dout, idx, dz, nthreads=1):
    """dz (N, O * P): dout[n, j] at column j * P + idx[n, j], zero elsewhere."""
    n, o = dout.shape
    dz.fill(0)
    np.put_along_axis(dz.reshape(n, o, -1), idx[:, :, None], dout[:, :, None], axis=2)
