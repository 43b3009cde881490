"""2-d convolution (NCHW, torch's conv2d) with bias and activation fused after the
product, and the window geometry that convolution and pooling share."""
from collections import namedtuple

from ..core.backend import backend, threads_for
from ..core.validation import (Integer, Pair, as_float_array, check, check_cache,
                               check_shape)
from ..core.workspace import FRESH
from ..kernels.activation_table import IDENTITY
from .activations import resolve_activation

#: the largest kernel size, stride, padding or dilation the kernels take (per axis)
MAX_WINDOW = 1 << 20

Conv2dCache = namedtuple("Conv2dCache", "x w has_bias z out geom code p")


def output_size(size, kernel, stride, padding, dilation=1):
    """Outputs along one axis: (size + 2 padding - dilation (kernel - 1) - 1) // stride + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def window_pairs(fn, **values):
    """{name: (h, w)} for int-or-pair window arguments: kernel_size, stride and dilation
    are >= 1, padding >= 0 (TypeError / ValueError naming fn and the argument)."""
    low = {"padding": 0}
    return {name: check(fn, name, value, Pair(Integer(low.get(name, 1), MAX_WINDOW)))
            for name, value in values.items()}


def check_window_fits(fn, x, kernel, padding, dilation=(1, 1)):
    """ValueError unless the (dilated) kernel fits in x's zero-padded planes."""
    h, w = x.shape[2:]
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if span[0] > h + 2 * padding[0] or span[1] > w + 2 * padding[1]:
        raise ValueError("%s: the kernel (%dx%d%s) is larger than the padded input "
                         "(%dx%d: %dx%d with padding %s)"
                         % (fn, kernel[0], kernel[1],
                            "" if dilation == (1, 1) else ", dilation %s" % (dilation,),
                            h + 2 * padding[0], w + 2 * padding[1], h, w, padding))


def conv2d_forward(x, w, b, stride=1, padding=0, dilation=1, activation=None,
                   activation_kw=None, workspace=None):
    """out = act(conv2d(x, w) + b) -> ((N, F, OH, OW), cache).

    x (N, C, H, W); w (F, C, KH, KW); b (F,) or None; stride, padding (zeros) and
    dilation: an int or an (h, w) pair; OH = output_size(H, KH, sh, ph, dh).
    activation: None or an `activation_forward` name, its keywords in activation_kw.

    >>> import numpy as np
    >>> x = np.ones((2, 3, 8, 8), np.float32); w = np.ones((4, 3, 3, 3), np.float32)
    >>> conv2d_forward(x, w, None, padding=1)[0].shape
    (2, 4, 8, 8)
    """
    fn = "conv2d_forward"
    code, p = resolve_activation(activation, activation_kw, fn)
    win = window_pairs(fn, stride=stride, padding=padding, dilation=dilation)
    x = as_float_array(x, fn, "x", ndim=4)
    w = as_float_array(w, fn, "w", ndim=4, dtype=x.dtype)
    if w.shape[1] != x.shape[1]:
        raise ValueError("%s: w must have shape (F, %d, KH, KW) to match x with %d input "
                         "channels, got %s" % (fn, x.shape[1], x.shape[1], w.shape))
    if b is not None:
        b = as_float_array(b, fn, "b", ndim=1, dtype=x.dtype)
        check_shape(b, (w.shape[0],), fn, "b")
    check_window_fits(fn, x, w.shape[2:], win["padding"], win["dilation"])
    geom = win["stride"] + win["padding"] + win["dilation"]
    return run_conv2d_forward(x, w, b, geom, code, p, workspace or FRESH)


def conv_output_shape(x_shape, w_shape, geom):
    """(N, F, OH, OW) for x (N, C, H, W), w (F, C, KH, KW), geom (sh, sw, ph, pw, dh, dw)."""
    sh, sw, ph, pw, dh, dw = geom
    return (x_shape[0], w_shape[0], output_size(x_shape[2], w_shape[2], sh, ph, dh),
            output_size(x_shape[3], w_shape[3], sw, pw, dw))


def _threads(x, w, out_shape):
    """The team for a convolution: from its multiply-adds, as for a dense layer."""
    return threads_for(x.shape[0] * w.size * out_shape[2] * out_shape[3])


def _scratch(kernels, ws, x, w, geom):
    size = kernels.conv2d_scratch_size(x.shape, w.shape, geom)
    return ws.get("scratch", (size,), x.dtype)


def run_conv2d_forward(x, w, b, geom, code, p, ws):
    """`conv2d_forward` on trusted inputs (C-contiguous, one float dtype, shapes that fit,
    geom = (sh, sw, ph, pw, dh, dw), a resolved activation code): the layers' path."""
    k = backend()
    shape = conv_output_shape(x.shape, w.shape, geom)
    z = ws.get("z", shape, x.dtype)
    out = z if code == IDENTITY else ws.get("out", shape, x.dtype)
    k.conv2d_forward(x, w, b, z, out, geom, _scratch(k, ws, x, w, geom), code, p,
                     _threads(x, w, shape))
    return out, Conv2dCache(x, w, b is not None, z, out, geom, code, p)


def conv2d_backward(dout, cache, workspace=None, need_dx=True):
    """-> (dx (N, C, H, W), dw (F, C, KH, KW), db (F,) or None); need_dx=False skips dx
    (returns None) for a network's first layer."""
    fn = "conv2d_backward"
    check_cache(cache, Conv2dCache, fn)
    dout = as_float_array(dout, fn, "dout", dtype=cache.x.dtype)
    check_shape(dout, cache.out.shape, fn, "dout")
    return run_conv2d_backward(dout, cache, workspace or FRESH, need_dx)


def run_conv2d_backward(dout, cache, ws, need_dx=True):
    """`conv2d_backward` on a trusted dout (C-contiguous, the cache's dtype and shape)."""
    k = backend()
    x, w = cache.x, cache.w
    dx = ws.get("dx", x.shape, x.dtype) if need_dx else None
    dw = ws.get("dw", w.shape, x.dtype)
    db = ws.get("db", (w.shape[0],), x.dtype) if cache.has_bias else None
    k.conv2d_backward(dout, x, w, cache.z, cache.out, dx, dw, db, cache.geom,
                      _scratch(k, ws, x, w, cache.geom), cache.code, cache.p,
                      _threads(x, w, dout.shape))
    return dx, dw, db
