"""2-d max and average pooling (NCHW, torch's max_pool2d / avg_pool2d)."""
from collections import namedtuple

import numpy as np

from ..core.backend import backend, threads_for
from ..core.validation import as_float_array, check_cache, check_shape
from ..core.workspace import FRESH
from .conv import check_window_fits, output_size, window_pairs

MaxPool2dCache = namedtuple("MaxPool2dCache", "x_shape dtype out_shape geom idx")
AvgPool2dCache = namedtuple("AvgPool2dCache", "x_shape dtype out_shape geom")
_INTP = np.dtype(np.intp)


def pool_geometry(fn, x, kernel_size, stride, padding):
    """(kh, kw, sh, sw, ph, pw) for pooling x (N, C, H, W): stride defaults to the kernel
    size; padding is at most half the kernel (torch's rule); the window must fit."""
    win = window_pairs(fn, kernel_size=kernel_size, padding=padding,
                       stride=kernel_size if stride is None else stride)
    kernel, pad = win["kernel_size"], win["padding"]
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError("%s: padding must be at most half the kernel size (%d, %d), got %s"
                         % (fn, kernel[0] // 2, kernel[1] // 2, pad))
    check_window_fits(fn, x, kernel, pad)
    return kernel + win["stride"] + pad


def pool_output_shape(x_shape, geom):
    """(N, C, OH, OW) of pooling x (N, C, H, W) with geom (kh, kw, sh, sw, ph, pw)."""
    kh, kw, sh, sw, ph, pw = geom
    return x_shape[:2] + (output_size(x_shape[2], kh, sh, ph),
                          output_size(x_shape[3], kw, sw, pw))


def _checked(fn, x, kernel_size, stride, padding):
    x = as_float_array(x, fn, "x", ndim=4)
    return x, pool_geometry(fn, x, kernel_size, stride, padding)


def _checked_dout(fn, dout, cache, cls):
    check_cache(cache, cls, fn)
    dout = as_float_array(dout, fn, "dout", dtype=cache.dtype)
    check_shape(dout, cache.out_shape, fn, "dout")
    return dout


def maxpool2d_forward(x, kernel_size, stride=None, padding=0, workspace=None):
    """Each window's max: x (N, C, H, W) -> ((N, C, OH, OW), cache).

    kernel_size, stride (default: kernel_size), padding: an int or an (h, w) pair.
    Padded cells never win; ties go to the first maximum of the window (row-major); a
    NaN wins, so NaN propagates.

    >>> import numpy as np
    >>> maxpool2d_forward(np.arange(16.0).reshape(1, 1, 4, 4), 2)[0][0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    """
    fn = "maxpool2d_forward"
    x, geom = _checked(fn, x, kernel_size, stride, padding)
    return run_maxpool2d_forward(x, geom, workspace or FRESH)


def run_maxpool2d_forward(x, geom, ws):
    """`maxpool2d_forward` on a trusted x with geom = (kh, kw, sh, sw, ph, pw)."""
    shape = pool_output_shape(x.shape, geom)
    out = ws.get("out", shape, x.dtype)
    idx = ws.get("idx", shape, _INTP)
    backend().maxpool2d_forward(x, out, idx, geom, threads_for(x.size))
    return out, MaxPool2dCache(x.shape, x.dtype, shape, geom, idx)


def maxpool2d_backward(dout, cache, workspace=None):
    """dx (N, C, H, W): dout added at each window's winner (zero elsewhere)."""
    fn = "maxpool2d_backward"
    dout = _checked_dout(fn, dout, cache, MaxPool2dCache)
    return run_maxpool2d_backward(dout, cache, workspace or FRESH)


def run_maxpool2d_backward(dout, cache, ws):
    """`maxpool2d_backward` on a trusted dout (the cache's dtype and output shape)."""
    dx = ws.get("dx", cache.x_shape, cache.dtype)
    backend().maxpool2d_backward(dout, cache.idx, dx, threads_for(dx.size))
    return dx


def avgpool2d_forward(x, kernel_size, stride=None, padding=0, workspace=None):
    """Each window's mean, padded zeros included (count_include_pad=True): x (N, C, H, W)
    -> ((N, C, OH, OW), cache); arguments as maxpool2d_forward.

    >>> import numpy as np
    >>> avgpool2d_forward(np.ones((1, 1, 2, 2)), 2, padding=1)[0][0, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    fn = "avgpool2d_forward"
    x, geom = _checked(fn, x, kernel_size, stride, padding)
    return run_avgpool2d_forward(x, geom, workspace or FRESH)


def run_avgpool2d_forward(x, geom, ws):
    """`avgpool2d_forward` on a trusted x with geom = (kh, kw, sh, sw, ph, pw)."""
    shape = pool_output_shape(x.shape, geom)
    out = ws.get("out", shape, x.dtype)
    backend().avgpool2d_forward(x, out, geom, threads_for(x.size))
    return out, AvgPool2dCache(x.shape, x.dtype, shape, geom)


def avgpool2d_backward(dout, cache, workspace=None):
    """dx (N, C, H, W): each output's dout / (kh kw) spread over its window."""
    fn = "avgpool2d_backward"
    dout = _checked_dout(fn, dout, cache, AvgPool2dCache)
    return run_avgpool2d_backward(dout, cache, workspace or FRESH)


def run_avgpool2d_backward(dout, cache, ws):
    """`avgpool2d_backward` on a trusted dout (the cache's dtype and output shape)."""
    dx = ws.get("dx", cache.x_shape, cache.dtype)
    backend().avgpool2d_backward(dout, dx, cache.geom, threads_for(dx.size))
    return dx
