"""Kernel benchmarks, float32: every fastnn.ops function on each backend, same data.

Forward + backward pairs through one reused Workspace (so warm calls allocate nothing,
as inside the layers): dense (linear, relu, gelu; each group also times its three bare
GEMMs), every activation, PReLU, the maxout max, batch norm (training fwd+bwd, eval fwd); the four
losses (value and gradient in one call). A NumPy copy gives the memory-bandwidth
reference for the elementwise kernels.
"""
import numpy as np
import pytest

from fastnn import ops
from fastnn.core.workspace import Workspace
from fastnn.tools.bench import gemm_only_fn
from conftest import (ACTIVATIONS, DENSE, SIZES, dense_id, measure, measure_blas, rand,
                      size_id)

LOSS_SHAPE = (4096, 1000)
DENSE_ACTIVATIONS = [None, "relu", "gelu"]


def fwd_bwd(forward, backward, dout, *args, **kwargs):
    """A callable running `out, cache = forward(*args, **kwargs)` then
    `backward(dout, cache)`, both on one Workspace."""
    ws = Workspace()

    def step():
        _, cache = forward(*args, workspace=ws, **kwargs)
        backward(dout, cache, workspace=ws)
    return step


# ----------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("shape", SIZES, ids=size_id)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_activation_fwd_bwd(benchmark, backend, act, shape):
    name, kw, _ = ACTIVATIONS[act]
    step = fwd_bwd(ops.activation_forward, ops.activation_backward, rand(shape, 1),
                   rand(shape), name, **kw)
    measure(benchmark, "activation %s fwd+bwd %s" % (act, size_id(shape)), step)


@pytest.mark.parametrize("shape", SIZES, ids=size_id)
def test_prelu_fwd_bwd(benchmark, backend, shape):
    alpha = np.full(shape[1], 0.25, np.float32)          # one slope per channel
    step = fwd_bwd(ops.prelu_forward, ops.prelu_backward, rand(shape, 1), rand(shape),
                   alpha)
    measure(benchmark, "prelu fwd+bwd %s" % size_id(shape), step)


@pytest.mark.parametrize("shape", SIZES, ids=size_id)
def test_maxout_fwd_bwd(benchmark, backend, shape):
    """The max over 2 pieces (z has twice the columns) and its gradient scatter."""
    n, d = shape
    step = fwd_bwd(ops.maxout_forward, ops.maxout_backward, rand((n, d // 2), 1),
                   rand(shape), 2)
    measure(benchmark, "maxout (2 pieces) fwd+bwd %s" % size_id(shape), step)


def test_copy_bandwidth(benchmark):
    """Reference: a NumPy copy of a 4096x1024 float32 array (bytes moved = 2 x 16 MiB)."""
    x, y = rand(SIZES[1]), np.empty(SIZES[1], np.float32)
    measure(benchmark, "memory bandwidth reference", np.copyto, y, x)


# ------------------------------------------------------------------------ batch norm
def bn_args(d):
    """gamma, beta, running_mean, running_var for d features."""
    return (np.ones(d, np.float32), np.zeros(d, np.float32), np.zeros(d, np.float32),
            np.ones(d, np.float32))


@pytest.mark.parametrize("shape", SIZES, ids=size_id)
def test_batchnorm_fwd_bwd(benchmark, backend, shape):
    """Training mode: batch statistics, running statistics updated in place."""
    step = fwd_bwd(ops.batchnorm_forward, ops.batchnorm_backward, rand(shape, 1),
                   rand(shape), *bn_args(shape[1]))
    measure(benchmark, "batchnorm fwd+bwd %s" % size_id(shape), step)


@pytest.mark.parametrize("shape", SIZES, ids=size_id)
def test_batchnorm_eval_fwd(benchmark, backend, shape):
    """Eval mode: normalise with the running statistics (forward only, as in inference)."""
    measure(benchmark, "batchnorm eval fwd %s" % size_id(shape), ops.batchnorm_forward,
            rand(shape), *bn_args(shape[1]), training=False, workspace=Workspace())


# ----------------------------------------------------------------------------- dense
def dense_group(activation):
    return "dense %s fwd+bwd %s" % (activation or "linear", dense_id())


@pytest.mark.parametrize("activation", DENSE_ACTIVATIONS, ids=str)
def test_dense_gemms_only(benchmark, activation):
    """Reference: the three GEMMs of a dense forward+backward (x@w, x.T@dout, dout@w.T)
    with the same BLAS, nothing else."""
    n, i, o = DENSE
    measure_blas(benchmark, dense_group(activation), gemm_only_fn((i, o), n, first_dx=True))


@pytest.mark.parametrize("activation", DENSE_ACTIVATIONS, ids=str)
def test_dense_fwd_bwd(benchmark, backend, activation):
    n, i, o = DENSE
    step = fwd_bwd(ops.dense_forward, ops.dense_backward, rand((n, o), 3), rand((n, i)),
                   rand((i, o), 1), rand((o,), 2), activation=activation)
    measure(benchmark, dense_group(activation), step)


# ---------------------------------------------------------------------------- losses
def loss_target(loss, shape):
    """Integer labels for the classification losses, floats in [0, 1) for BCE, normal
    floats for MSE."""
    rng = np.random.default_rng(1)
    if loss in ("softmax_cross_entropy", "multiclass_hinge"):
        return rng.integers(0, shape[1], shape[0])
    if loss == "bce_with_logits":
        return rng.random(shape).astype(np.float32)
    return rand(shape, 1)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "multiclass_hinge",
                                  "bce_with_logits", "mse"])
def test_losses(benchmark, backend, loss):
    measure(benchmark, "%s %s" % (loss, size_id(LOSS_SHAPE)), getattr(ops, loss),
            rand(LOSS_SHAPE), loss_target(loss, LOSS_SHAPE), workspace=Workspace())
