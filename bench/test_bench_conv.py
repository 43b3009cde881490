"""Convolution, pooling and 2-d batch-norm benchmarks, float32, on each backend.

Forward + backward through one reused Workspace (warm calls allocate nothing, as inside
the layers). Each convolution group also times its GEMMs alone: the products of the
im2col formulation over the whole batch -- z = W col, dW = dz col^T and (unless it is a
network's first layer) dcol = W^T dz -- on preallocated arrays with the same BLAS,
threaded by BLAS itself; issue 13's target is conv fwd+bwd within 1.3x of them.

    LeNet-5 conv1: 64 x 1 x 28 x 28, 6 filters 5x5 (first layer: no dx)
    LeNet-5 conv2: 64 x 6 x 12 x 12, 16 filters 5x5
    3x3 conv:      32 x 32 x 32 x 32, 32 filters 3x3, padding 1
"""
import numpy as np
import pytest

from fastnn import ops
from fastnn.core.workspace import Workspace
from conftest import measure, measure_blas, rand

#: name -> (x shape, w shape, padding, need_dx)
CONVS = {
    "lenet-conv1 64x1x28x28 6@5x5": ((64, 1, 28, 28), (6, 1, 5, 5), 0, False),
    "lenet-conv2 64x6x12x12 16@5x5": ((64, 6, 12, 12), (16, 6, 5, 5), 0, True),
    "3x3 32x32x32x32 32@3x3": ((32, 32, 32, 32), (32, 32, 3, 3), 1, True),
}
#: x shape, kernel, stride, padding
POOLS = {
    "64x6x24x24 k2": ((64, 6, 24, 24), 2, None, 0),
    "32x32x32x32 k3 s2 p1": ((32, 32, 32, 32), 3, 2, 1),
}
BN2D = (32, 32, 32, 32)


def conv_gemms_fn(x_shape, w_shape, padding, need_dx):
    """A callable running a stride-1 convolution's GEMMs alone over the whole batch
    (row-major products on transposed Fortran views: no copies)."""
    from scipy.linalg.blas import sgemm
    n, c, h, w = x_shape
    f, _, kh, kw = w_shape
    k, cols = c * kh * kw, n * (h + 2 * padding - kh + 1) * (w + 2 * padding - kw + 1)
    wm, col, dz = rand((f, k)), rand((k, cols), 1), rand((f, cols), 2)
    z, dw, dcol = (np.empty((f, cols), np.float32), np.empty((f, k), np.float32),
                   np.empty((k, cols), np.float32))
    calls = [(col.T, wm.T, z.T, 0, 0),          # z = W col
             (col.T, dz.T, dw.T, 1, 0)]         # dW = dz col^T
    if need_dx:
        calls.append((dz.T, wm.T, dcol.T, 0, 1))   # dcol = W^T dz

    def run():
        for a, b, out, ta, tb in calls:
            sgemm(1.0, a, b, c=out, overwrite_c=1, trans_a=ta, trans_b=tb)
    return run


def conv_step(x_shape, w_shape, padding, need_dx):
    x, w, b = rand(x_shape), rand(w_shape, 1) * 0.1, rand(w_shape[:1], 2)
    n, _, h, wd = x_shape
    dout = rand((n, w_shape[0], h + 2 * padding - w_shape[2] + 1,
                 wd + 2 * padding - w_shape[3] + 1), 3)
    ws = Workspace()

    def step():
        _, cache = ops.conv2d_forward(x, w, b, padding=padding, activation="relu",
                                      workspace=ws)
        ops.conv2d_backward(dout, cache, workspace=ws, need_dx=need_dx)
    return step


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_gemms_only(benchmark, name):
    measure_blas(benchmark, "conv relu fwd+bwd " + name, conv_gemms_fn(*CONVS[name]))


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_fwd_bwd(benchmark, backend, name):
    measure(benchmark, "conv relu fwd+bwd " + name, conv_step(*CONVS[name]))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("name", list(POOLS))
def test_pool_fwd_bwd(benchmark, backend, kind, name):
    shape, k, s, p = POOLS[name]
    forward = getattr(ops, kind + "pool2d_forward")
    backward = getattr(ops, kind + "pool2d_backward")
    x, ws = rand(shape), Workspace()
    dout = rand(forward(x, k, s, p)[0].shape, 1)

    def step():
        _, cache = forward(x, k, s, p, workspace=ws)
        backward(dout, cache, workspace=ws)
    measure(benchmark, "%spool fwd+bwd %s" % (kind, name), step)


def test_batchnorm2d_fwd_bwd(benchmark, backend):
    """Training mode: statistics per channel, running statistics updated in place."""
    c = BN2D[1]
    x, dout, ws = rand(BN2D), rand(BN2D, 1), Workspace()
    stats = (np.ones(c, np.float32), np.zeros(c, np.float32), np.zeros(c, np.float32),
             np.ones(c, np.float32))

    def step():
        _, cache = ops.batchnorm2d_forward(x, *stats, workspace=ws)
        ops.batchnorm2d_backward(dout, cache, workspace=ws)
    measure(benchmark, "batchnorm2d fwd+bwd %s" % "x".join(map(str, BN2D)), step)
