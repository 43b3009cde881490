"""Activations: forward y = f(x) and fused gradient dx = dout * f'(x), in NumPy.

`code` is a kernel code of `fastnn.kernels.activation_table` (whose rows hold each
formula); `p` is the activation's scalar parameter (leaky_relu negative_slope, elu
alpha, swish beta; ignored otherwise).
"""
import numpy as np

from ..activation_table import KERNELS

__all__ = ["act_forward", "act_backward", "prelu_forward", "prelu_backward", "maxout_forward", "maxout_backward"]


def _kernel(code, fn):
    if not isinstance(code, (int, np.integer)) or not 0 <= code < len(KERNELS):
        raise ValueError("%s: unknown activation code %r" % (fn, code))
    return KERNELS[code]


def act_forward(x, out, code, p, nthreads=1):
    """out[...] = f(x); x, out: same shape and dtype (may be the same array)."""
    _kernel(code, "act_forward").forward(x, x.dtype.type(p), out)


def act_backward(dout, x, y, dx, code, p, nthreads=1):
    """dx[...] = dout * f'(x), using the forward's input x and output y = f(x)."""
    np.multiply(dout, _kernel(code, "act_backward").grad(x, y, x.dtype.type(p)), out=dx)


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
