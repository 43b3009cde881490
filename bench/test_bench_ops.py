"""Kernel benchmarks, float32: fastnn.ops on each backend, same data, one run."""
import numpy as np
import pytest
from scipy.linalg.blas import sgemm
from threadpoolctl import threadpool_limits

import fastnn
from fastnn import ops
from fastnn._workspace import Workspace
from conftest import rand

SIZES = [(256, 1024), (4096, 1024)]


@pytest.mark.parametrize("shape", SIZES, ids=lambda s: "%dx%d" % s)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "gelu"])
def test_activation_fwd_bwd(benchmark, backend, name, shape):
    benchmark.group = "activation %s fwd+bwd %dx%d" % ((name,) + shape)
    x, dout, ws = rand(shape), rand(shape, 1), Workspace()

    def step():
        _, cache = ops.activation_forward(x, name, workspace=ws)
        ops.activation_backward(dout, cache, workspace=ws)
    benchmark(step)


@pytest.mark.parametrize("shape", SIZES, ids=lambda s: "%dx%d" % s)
def test_batchnorm_fwd_bwd(benchmark, backend, shape):
    benchmark.group = "batchnorm fwd+bwd %dx%d" % shape
    d = shape[1]
    x, dout, ws = rand(shape), rand(shape, 1), Workspace()
    gamma, beta = np.ones(d, np.float32), np.zeros(d, np.float32)
    rm, rv = np.zeros(d, np.float32), np.ones(d, np.float32)

    def step():
        _, cache = ops.batchnorm_forward(x, gamma, beta, rm, rv, workspace=ws)
        ops.batchnorm_backward(dout, cache, workspace=ws)
    benchmark(step)


def test_copy_bandwidth(benchmark):
    """Reference: a NumPy copy of a 4096x1024 float32 array (bytes moved = 2 x 16 MiB)."""
    benchmark.group = "memory bandwidth reference"
    x, y = rand((4096, 1024)), np.empty((4096, 1024), np.float32)
    benchmark(np.copyto, y, x)


DENSE = (128, 784, 512)


def test_dense_gemms_only(benchmark):
    """Reference: the three GEMMs of a dense forward+backward, nothing else."""
    benchmark.group = "dense relu fwd+bwd 128x784->512"
    n, i, o = DENSE
    x, w, dout = rand((n, i)), rand((i, o), 1), rand((n, o), 2)
    # scipy's BLAS wrappers are Fortran-ordered: use transposed views to stay copy-free
    xt, wt, dt = x.T, w.T, dout.T

    z, dw, dx = (np.empty((n, o), np.float32), np.empty((i, o), np.float32),
                 np.empty((n, i), np.float32))

    def gemms():
        sgemm(1.0, wt, xt, c=z.T, overwrite_c=1)                 # (x @ w).T
        sgemm(1.0, dt, xt, c=dw.T, overwrite_c=1, trans_b=1)     # (x.T @ dout).T = dw.T
        sgemm(1.0, wt, dt, c=dx.T, overwrite_c=1, trans_a=1)     # (dout @ w.T).T = dx.T
    # fastnn keeps this BLAS single-threaded and splits GEMMs itself; the reference uses
    # BLAS's own threading on the same number of threads
    with threadpool_limits(limits=fastnn.get_num_threads(), user_api="blas"):
        benchmark(gemms)


def test_dense_fwd_bwd(benchmark, backend):
    benchmark.group = "dense relu fwd+bwd 128x784->512"
    n, i, o = DENSE
    x, w, b, dout, ws = rand((n, i)), rand((i, o), 1), rand((o,), 2), rand((n, o), 3), Workspace()

    def step():
        _, cache = ops.dense_forward(x, w, b, activation="relu", workspace=ws)
        ops.dense_backward(dout, cache, workspace=ws)
    benchmark(step)


def test_adam_1m(benchmark, backend):
    benchmark.group = "adam update 1M params"
    k = fastnn._config.backend()
    p, g = rand(1 << 20), rand(1 << 20, 1)
    m, v = np.zeros_like(p), np.zeros_like(p)
    nt = fastnn.get_num_threads()
    benchmark(k.adam_step, p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 10, False, nt)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "bce_with_logits"])
def test_losses(benchmark, backend, loss):
    benchmark.group = "%s 4096x1000" % loss
    z = rand((4096, 1000))
    target = (np.random.default_rng(1).integers(0, 1000, 4096) if loss.startswith("softmax")
              else np.random.default_rng(1).random((4096, 1000)).astype(np.float32))
    ws = Workspace()
    benchmark(getattr(ops, loss), z, target, workspace=ws)
