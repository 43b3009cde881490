"""Activation functions (fused forward and gradient kernels), PReLU and the maxout max."""
from collections import namedtuple

import numpy as np

from ..core.backend import backend, threads_for
from ..core.validation import Integer, as_float_array, check, check_cache, check_shape
from ..core.workspace import FRESH
from ..kernels import activation_table

ActivationCache = namedtuple("ActivationCache", "x y code p")
PReLUCache = namedtuple("PReLUCache", "x alpha")
MaxoutCache = namedtuple("MaxoutCache", "idx pieces dtype")
_INTP = np.dtype(np.intp)


def resolve_activation(name, kw, fn):
    """(kernel code, scalar parameter) for an activation name (None: identity) and its
    keyword arguments, checked against the activation table."""
    return activation_table.resolve(name, kw, fn)


def activation_forward(x, name, workspace=None, **kw):
    """y = f(x) for the named activation; x: any shape -> (y same shape, cache).

    name: a name of `fastnn.kernels.activation_table.ACTIVATIONS`: "sigmoid", "tanh",
    "relu", "leaky_relu" (negative_slope=0.01), "elu" (alpha=1.0), "gelu"
    (approximate="none" | "tanh"), "silu", "swish" (beta=1.0).
    """
    fn = "activation_forward"
    code, p = resolve_activation(name, kw, fn)
    x = as_float_array(x, fn, "x", ndim=(1, 2, 3, 4))
    return run_activation_forward(x, code, p, workspace or FRESH)


def run_activation_forward(x, code, p, ws):
    """`activation_forward` on a trusted x (C-contiguous float32/float64, 1-4 D) with a
    resolved (code, p): the layers' internal path."""
    y = ws.get("y", x.shape, x.dtype)
    backend().act_forward(_rows(x), _rows(y), code, p, threads_for(x.size))
    return y, ActivationCache(x, y, code, p)


def _rows(a):
    """2-D (N, -1) view: the kernels work on rows."""
    return a.reshape(a.shape[0], -1)


def activation_backward(dout, cache, workspace=None):
    """dx = dout * f'(x) for the cached forward; dout: same shape as the output."""
    fn = "activation_backward"
    check_cache(cache, ActivationCache, fn)
    x = cache.x
    dout = as_float_array(dout, fn, "dout", dtype=x.dtype)
    check_shape(dout, x.shape, fn, "dout")
    return run_activation_backward(dout, cache, workspace or FRESH)


def run_activation_backward(dout, cache, ws):
    """`activation_backward` on a trusted dout (C-contiguous, the cache's dtype/shape)."""
    x = cache.x
    dx = ws.get("dx", x.shape, x.dtype)
    backend().act_backward(_rows(dout), _rows(x), _rows(cache.y), _rows(dx), cache.code,
                           cache.p, threads_for(x.size))
    return dx


def prelu_forward(x, alpha, workspace=None):
    """PReLU: y = x if x > 0 else alpha * x. x: (N,) or (N, C); alpha: (1,) or (C,)."""
    fn = "prelu_forward"
    x = as_float_array(x, fn, "x", ndim=(1, 2))
    alpha = as_float_array(alpha, fn, "alpha", ndim=1, dtype=x.dtype)
    channels = x.shape[1] if x.ndim == 2 else 1
    if alpha.shape[0] not in (1, channels):
        raise ValueError("%s: alpha must have shape (1,) or (%d,) for x of shape %s, got %s"
                         % (fn, channels, x.shape, alpha.shape))
    y = (workspace or FRESH).get("y", x.shape, x.dtype)
    backend().prelu_forward(x, alpha, y, threads_for(x.size))
    return y, PReLUCache(x, alpha)


def prelu_backward(dout, cache, workspace=None):
    """-> (dx same shape as x, dalpha same shape as alpha)."""
    fn = "prelu_backward"
    check_cache(cache, PReLUCache, fn)
    x, alpha = cache
    dout = as_float_array(dout, fn, "dout", dtype=x.dtype)
    check_shape(dout, x.shape, fn, "dout")
    ws = workspace or FRESH
    dx = ws.get("dx", x.shape, x.dtype)
    dalpha = ws.get("dalpha", alpha.shape, x.dtype)
    backend().prelu_backward(dout, x, alpha, dx, dalpha, threads_for(x.size))
    return dx, dalpha


def maxout_forward(z, pieces, workspace=None):
    """Maxout's max over pieces: z (N, O * pieces), piece k of output j in column
    j * pieces + k -> (out (N, O), cache). Ties go to the first maximal piece; a NaN
    propagates."""
    fn = "maxout_forward"
    z = as_float_array(z, fn, "z", ndim=2)
    pieces = check(fn, "pieces", pieces, Integer(1))
    if z.shape[1] % pieces:
        raise ValueError("%s: z must have a multiple of pieces=%d columns, got shape %s"
                         % (fn, pieces, z.shape))
    return run_maxout_forward(z, pieces, workspace or FRESH)


def run_maxout_forward(z, pieces, ws):
    """`maxout_forward` on a trusted z (C-contiguous float, (N, O * pieces))."""
    shape = (z.shape[0], z.shape[1] // pieces)
    out = ws.get("maxout_y", shape, z.dtype)
    idx = ws.get("maxout_idx", shape, _INTP)
    backend().maxout_forward(z, out, idx, threads_for(z.size))
    return out, MaxoutCache(idx, pieces, z.dtype)


def maxout_backward(dout, cache, workspace=None):
    """dz (N, O * pieces): dout (N, O) at each output's winning piece, 0 elsewhere."""
    fn = "maxout_backward"
    check_cache(cache, MaxoutCache, fn)
    dout = as_float_array(dout, fn, "dout", dtype=cache.dtype)
    check_shape(dout, cache.idx.shape, fn, "dout")
    return run_maxout_backward(dout, cache, workspace or FRESH)


def run_maxout_backward(dout, cache, ws):
    """`maxout_backward` on a trusted dout (C-contiguous, the cache's dtype and shape)."""
    n, o = cache.idx.shape
    dz = ws.get("maxout_dz", (n, o * cache.pieces), cache.dtype)
    backend().maxout_backward(dout, cache.idx, dz, threads_for(dz.size))
    return dz
