"""Dense (fully connected) layer with a fused activation, in NumPy.

Forward:  z = x @ w + b;  out = f(z)          x: (N, I), w: (I, O), b: (O,) or None
Backward: dz = dout * f'(z);  dw = x.T @ dz;  db = sum(dz, 0);  dx = dz @ w.T
"""
import numpy as np

from ..activation_table import IDENTITY
from .activations import act_backward, act_forward

__all__ = ["dense_forward", "dense_backward"]


def dense_forward(x, w, b, z, out, code, p, nthreads=1):
    """Write z (pre-activation, (N, O)) and out = f(z) ((N, O)); z may be out when
    code is IDENTITY."""
    np.matmul(x, w, out=z)
    if b is not None:
        z += b
    if code != IDENTITY or out is not z:
        act_forward(z, out, code, p)


def dense_backward(dout, x, w, z, out, dz, dx, dw, db, code, p, nthreads=1):
    """Write dz (workspace (N, O); may be dout when code is IDENTITY), dw (I, O),
    db (O,) unless None, and dx (N, I) unless None (first layer needs no dx)."""
    if code != IDENTITY or dz is not dout:
        act_backward(dout, z, out, dz, code, p)
    np.matmul(x.T, dz, out=dw)
    if db is not None:
        db[...] = dz.sum(axis=0, dtype=np.float64)      # accumulate in double
    if dx is not None:
        np.matmul(dz, w.T, out=dx)
