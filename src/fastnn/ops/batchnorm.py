"""Batch normalisation over the batch axis (PyTorch's BatchNorm1d on (N, D) inputs)."""
from collections import namedtuple

import numpy as np

from ..core.backend import backend, threads_for
from ..core.validation import (as_float_array, as_scalar, check_cache, check_shape,
                               describe, layout_faults)
from ..core.workspace import FRESH

BatchNormCache = namedtuple("BatchNormCache", "x gamma mean invstd training")


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
    fn = "batchnorm_forward"
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError("%s: training must be True or False, got %r" % (fn, training))
    x = as_float_array(x, fn, "x", ndim=2)
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
    if training and x.shape[0] < 2:
        raise ValueError("%s: expected more than 1 value per channel when training, "
                         "got input of shape %s" % (fn, x.shape))
    return run_batchnorm_forward(x, gamma, beta, stats[0], stats[1], bool(training),
                                 momentum, eps, workspace or FRESH)


def run_batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum,
                          eps, ws):
    """`batchnorm_forward` on trusted inputs (validated by the caller: the layers'
    internal path)."""
    d = x.shape[1]
    out = ws.get("out", x.shape, x.dtype)
    mean = ws.get("mean", (d,), x.dtype)
    invstd = ws.get("invstd", (d,), x.dtype)
    k = backend()
    if training:
        k.bn_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, out,
                           mean, invstd, threads_for(x.size))
    else:
        k.bn_forward_eval(x, gamma, beta, running_mean, running_var, eps, out, mean, invstd,
                          threads_for(x.size))
    return out, BatchNormCache(x, gamma, mean, invstd, training)


def batchnorm_backward(dout, cache, workspace=None):
    """-> (dx (N, D), dgamma (D,), dbeta (D,))."""
    fn = "batchnorm_backward"
    check_cache(cache, BatchNormCache, fn)
    x = cache.x
    dout = as_float_array(dout, fn, "dout", dtype=x.dtype)
    check_shape(dout, x.shape, fn, "dout")
    return run_batchnorm_backward(dout, cache, workspace or FRESH)


def run_batchnorm_backward(dout, cache, ws):
    """`batchnorm_backward` on a trusted dout (C-contiguous, the cache's dtype/shape)."""
    x = cache.x
    dx = ws.get("dx", x.shape, x.dtype)
    dgamma = ws.get("dgamma", cache.gamma.shape, x.dtype)
    dbeta = ws.get("dbeta", cache.gamma.shape, x.dtype)
    backend().bn_backward(dout, x, cache.gamma, cache.mean, cache.invstd, cache.training,
                          dx, dgamma, dbeta, threads_for(x.size))
    return dx, dgamma, dbeta
