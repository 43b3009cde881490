"""Batch normalisation: over the batch axis of (N, D) inputs (PyTorch's BatchNorm1d) and
per channel over (N, H, W) of (N, C, H, W) inputs (BatchNorm2d)."""
from collections import namedtuple

import numpy as np

from ..core.backend import backend, threads_for
from ..core.validation import (as_float_array, as_scalar, check_cache, check_shape,
                               describe, layout_faults)
from ..core.workspace import FRESH

BatchNormCache = namedtuple("BatchNormCache", "x gamma mean invstd training")
BatchNorm2dCache = namedtuple("BatchNorm2dCache", BatchNormCache._fields)

#: the kernels and cache of each layout: (N, D) rows, or (N, C, H, W) per channel
_Kind = namedtuple("_Kind", "train eval backward cache")
BATCHNORM_1D = _Kind("bn_forward_train", "bn_forward_eval", "bn_backward", BatchNormCache)
BATCHNORM_2D = _Kind("bn2d_forward_train", "bn2d_forward_eval", "bn2d_backward",
                     BatchNorm2dCache)


def _check_in_place(r, fn, name):
    """A running statistic is updated in place: it must be the caller's own writeable,
    aligned, C-contiguous ndarray."""
    if not isinstance(r, np.ndarray):
        raise TypeError("%s: %s must be an ndarray (updated in place), got %s"
                        % (fn, name, type(r).__name__))
    faults = layout_faults(r)
    if faults:
        raise ValueError("%s: %s must be a writeable, aligned C-contiguous array (updated "
                         "in place), got %s (%s)" % (fn, name, describe(r), ", ".join(faults)))


def batchnorm_forward(x, gamma, beta, running_mean, running_var, training=True,
                      momentum=0.1, eps=1e-5, workspace=None):
    """x: (N, D); gamma, beta, running_mean, running_var: (D,) -> ((N, D), cache).

    training=True normalises with the batch mean and biased variance (N > 1 required)
    and updates running_mean/running_var in place (momentum, unbiased variance);
    training=False normalises with the running statistics. Running stats may be None
    in training mode (no tracking).
    """
    args = _checked_args("batchnorm_forward", 2, x, gamma, beta, running_mean,
                         running_var, training, momentum, eps)
    return run_batchnorm_forward(*args, workspace or FRESH)


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training=True,
                        momentum=0.1, eps=1e-5, workspace=None):
    """Per channel over (N, H, W): x (N, C, H, W); gamma, beta, running_mean, running_var
    (C,) -> ((N, C, H, W), cache); otherwise as batchnorm_forward (N * H * W > 1 to
    train).

    >>> import numpy as np
    >>> x = np.arange(8.0).reshape(2, 1, 2, 2)
    >>> out, _ = batchnorm2d_forward(x, np.ones(1), np.zeros(1), None, None)
    >>> round(float(out.mean()), 12), round(float(out.var()), 4)
    (0.0, 1.0)
    """
    args = _checked_args("batchnorm2d_forward", 4, x, gamma, beta, running_mean,
                         running_var, training, momentum, eps)
    return run_batchnorm2d_forward(*args, workspace or FRESH)


def _checked_args(fn, ndim, x, gamma, beta, running_mean, running_var, training, momentum,
                  eps):
    """The forward's arguments checked and converted, in order; the channel axis is 1."""
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError("%s: training must be True or False, got %r" % (fn, training))
    x = as_float_array(x, fn, "x", ndim=ndim)
    d = x.shape[1]
    gamma = as_float_array(gamma, fn, "gamma", ndim=1, dtype=x.dtype)
    beta = as_float_array(beta, fn, "beta", ndim=1, dtype=x.dtype)
    check_shape(gamma, (d,), fn, "gamma")
    check_shape(beta, (d,), fn, "beta")
    stats = []
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None:
            _check_in_place(r, fn, name)
            as_float_array(r, fn, name, ndim=1, dtype=x.dtype)
            check_shape(r, (d,), fn, name)
        elif not training:
            raise ValueError("%s: %s is required in eval mode (training=False)" % (fn, name))
        stats.append(r)
    momentum = as_scalar(momentum, fn, "momentum", 0.0, 1.0)
    eps = as_scalar(eps, fn, "eps", 0.0, low_open=True)
    if training and x.size // d < 2:
        raise ValueError("%s: expected more than 1 value per channel when training, "
                         "got input of shape %s" % (fn, x.shape))
    return x, gamma, beta, stats[0], stats[1], bool(training), momentum, eps


def run_batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum,
                          eps, ws):
    """`batchnorm_forward` on trusted inputs (validated by the caller: the layers'
    internal path)."""
    return _forward(BATCHNORM_1D, x, gamma, beta, running_mean, running_var, training,
                    momentum, eps, ws)


def run_batchnorm2d_forward(x, gamma, beta, running_mean, running_var, training, momentum,
                            eps, ws):
    """`batchnorm2d_forward` on trusted inputs (the layers' internal path)."""
    return _forward(BATCHNORM_2D, x, gamma, beta, running_mean, running_var, training,
                    momentum, eps, ws)


def _forward(kind, x, gamma, beta, running_mean, running_var, training, momentum, eps, ws):
    d = x.shape[1]
    out = ws.get("out", x.shape, x.dtype)
    mean = ws.get("mean", (d,), x.dtype)
    invstd = ws.get("invstd", (d,), x.dtype)
    k = backend()
    if training:
        getattr(k, kind.train)(x, gamma, beta, running_mean, running_var, momentum, eps,
                               out, mean, invstd, threads_for(x.size))
    else:
        getattr(k, kind.eval)(x, gamma, beta, running_mean, running_var, eps, out, mean,
                              invstd, threads_for(x.size))
    return out, kind.cache(x, gamma, mean, invstd, training)


def batchnorm_backward(dout, cache, workspace=None):
    """-> (dx (N, D), dgamma (D,), dbeta (D,))."""
    dout = _checked_dout("batchnorm_backward", BatchNormCache, dout, cache)
    return run_batchnorm_backward(dout, cache, workspace or FRESH)


def batchnorm2d_backward(dout, cache, workspace=None):
    """-> (dx (N, C, H, W), dgamma (C,), dbeta (C,))."""
    dout = _checked_dout("batchnorm2d_backward", BatchNorm2dCache, dout, cache)
    return run_batchnorm2d_backward(dout, cache, workspace or FRESH)


def _checked_dout(fn, cls, dout, cache):
    check_cache(cache, cls, fn)
    x = cache.x
    dout = as_float_array(dout, fn, "dout", dtype=x.dtype)
    check_shape(dout, x.shape, fn, "dout")
    return dout


def run_batchnorm_backward(dout, cache, ws):
    """`batchnorm_backward` on a trusted dout (C-contiguous, the cache's dtype/shape)."""
    return _backward(BATCHNORM_1D, dout, cache, ws)


def run_batchnorm2d_backward(dout, cache, ws):
    """`batchnorm2d_backward` on a trusted dout (C-contiguous, the cache's dtype/shape)."""
    return _backward(BATCHNORM_2D, dout, cache, ws)


def _backward(kind, dout, cache, ws):
    x = cache.x
    dx = ws.get("dx", x.shape, x.dtype)
    dgamma = ws.get("dgamma", cache.gamma.shape, x.dtype)
    dbeta = ws.get("dbeta", cache.gamma.shape, x.dtype)
    getattr(backend(), kind.backward)(dout, x, cache.gamma, cache.mean, cache.invstd,
                                      cache.training, dx, dgamma, dbeta, threads_for(x.size))
    return dx, dgamma, dbeta
