"""Batch normalisation over the batch axis of (N, D) inputs, in NumPy.

Training: mean = x.mean(0), var = x.var(0) (biased), xhat = (x - mean) * invstd with
invstd = 1 / sqrt(var + eps), out = gamma * xhat + beta; running stats updated in
place with PyTorch's convention: r = (1 - momentum) * r + momentum * stat, where the
running variance takes the unbiased batch variance var * N / (N - 1).
Backward recomputes xhat from x (nothing of size N x D is cached besides x):
  dbeta = sum(dout), dgamma = sum(dout * xhat),
  dx = gamma * invstd / N * (N * dout - dbeta - xhat * dgamma)      (training)
  dx = gamma * invstd * dout                                       (eval: stats fixed)

Batch normalisation 2-d (x (N, C, H, W), statistics per channel over N, H and W) is the
same computation over the N * H * W positions of each channel: the bn2d functions run
the functions above on a channels-last (N * H * W, C) copy.
"""
import numpy as np

__all__ = ["bn_forward_train", "bn_forward_eval", "bn_backward", "bn2d_forward_train",
           "bn2d_forward_eval", "bn2d_backward"]


def bn_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                     out, mean, invstd, nthreads=1):
    """Write out (N, D), mean (D,), invstd (D,); update running_mean/var (D,) in place
    (either may be None: no tracking). Requires N > 1."""
    n = x.shape[0]
    mean64 = x.mean(axis=0, dtype=np.float64)          # statistics accumulate in double
    var = np.square(x - mean64).mean(axis=0)
    mean[...] = mean64
    invstd[...] = 1.0 / np.sqrt(var + eps)
    np.multiply(x - mean, invstd * gamma, out=out)
    out += beta
    if running_mean is not None:
        running_mean *= 1.0 - momentum
        running_mean += momentum * mean64
    if running_var is not None:
        running_var *= 1.0 - momentum
        running_var += momentum * var * (n / (n - 1.0))


def bn_forward_eval(x, gamma, beta, running_mean, running_var, eps, out, mean, invstd,
                    nthreads=1):
    """Normalise with the running statistics; also write mean = running_mean and
    invstd = 1/sqrt(running_var + eps) (D,) for the backward."""
    mean[...] = running_mean
    invstd[...] = 1.0 / np.sqrt(running_var + eps)
    np.multiply(x - mean, invstd * gamma, out=out)
    out += beta


def bn_backward(dout, x, gamma, mean, invstd, training, dx, dgamma, dbeta, nthreads=1):
    """Write dx (N, D), dgamma (D,), dbeta (D,) (dgamma/dbeta may be None)."""
    n = x.shape[0]
    xhat = (x - mean) * invstd
    db = dout.sum(axis=0, dtype=np.float64).astype(x.dtype)    # sums accumulate in double
    dg = (dout * xhat).sum(axis=0, dtype=np.float64).astype(x.dtype)
    if training:
        dx[...] = (gamma * invstd / n) * (n * dout - db - xhat * dg)
    else:
        np.multiply(dout, gamma * invstd, out=dx)
    if dgamma is not None:
        dgamma[...] = dg
    if dbeta is not None:
        dbeta[...] = db


# ------------------------------------------------------------------ 2-d (N, C, H, W)
def _rows(a):
    """(N, C, H, W) -> a channels-last (N * H * W, C) copy (always a copy: the 1-d
    kernels write their output into it)."""
    return np.moveaxis(a, 1, -1).copy().reshape(-1, a.shape[1])


def _put_rows(rows, out):
    """out (N, C, H, W) = the channels-last rows (N * H * W, C)."""
    n, c, h, w = out.shape
    out[...] = np.moveaxis(rows.reshape(n, h, w, c), -1, 1)


def bn2d_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                       out, mean, invstd, nthreads=1):
    """bn_forward_train per channel of x (N, C, H, W); out (N, C, H, W). N*H*W > 1."""
    rows = _rows(x)
    bn_forward_train(rows, gamma, beta, running_mean, running_var, momentum, eps, rows,
                     mean, invstd)
    _put_rows(rows, out)


def bn2d_forward_eval(x, gamma, beta, running_mean, running_var, eps, out, mean, invstd,
                      nthreads=1):
    """bn_forward_eval per channel of x (N, C, H, W); out (N, C, H, W)."""
    rows = _rows(x)
    bn_forward_eval(rows, gamma, beta, running_mean, running_var, eps, rows, mean, invstd)
    _put_rows(rows, out)


def bn2d_backward(dout, x, gamma, mean, invstd, training, dx, dgamma, dbeta, nthreads=1):
    """bn_backward per channel: dx (N, C, H, W), dgamma (C,), dbeta (C,) (may be None)."""
    rows = _rows(dout)
    bn_backward(rows, _rows(x), gamma, mean, invstd, training, rows, dgamma, dbeta)
    _put_rows(rows, dx)
