"""Weighted against unweighted loss kernels (the backend's, through `fastnn.ops`' kernel
registry): each loss on float32 logits of (64, 10), (256, 1000) and (1024, 10), without
weights, with row weights, and (the losses of labels) with row and class weights. The
issue's target: the weights cost at most 5% over the unweighted kernel.
"""
import numpy as np
import pytest

from fastnn.core.backend import backend as active_backend, threads_for
from conftest import measure, rand, size_id

SHAPES = [(64, 10), (256, 1000), (1024, 10)]
LOSSES = ["softmax_cross_entropy", "multiclass_hinge", "bce_with_logits", "mse"]
LABELS = ("softmax_cross_entropy", "multiclass_hinge")


def loss_call(name, shape, weights):
    """A call of the backend's loss kernel `name` on float32 data of `shape`; weights:
    "none", "rows" (sample_weight) or "rows+classes" (and class_weight)."""
    n, c = shape
    rng = np.random.default_rng(0)
    z = rand(shape)
    target = rng.integers(0, c, n) if name in LABELS else rng.random(shape, np.float32)
    grad = np.empty_like(z)
    kernel, nthreads = getattr(active_backend(), name), threads_for(z.size)
    args = (z, target, 1.0) if name == "multiclass_hinge" else (z, target)
    args += (grad, nthreads, False) if name == "softmax_cross_entropy" else (grad, nthreads)
    # the weights by position, as fastnn.ops passes them
    if weights != "none":
        args += (rng.uniform(0.1, 2, n).astype(np.float32),)
    if weights == "rows+classes":
        args += (rng.uniform(0.1, 2, c).astype(np.float32),)
    return lambda: kernel(*args)


CASES = [(name, w) for name in LOSSES
         for w in (("none", "rows", "rows+classes") if name in LABELS else ("none", "rows"))]


@pytest.mark.parametrize("shape", SHAPES, ids=size_id)
@pytest.mark.parametrize("name,weights", CASES)
def test_weighted_loss(benchmark, backend, name, weights, shape):
    measure(benchmark, "%s %s float32 (%s)" % (name, size_id(shape), backend),
            loss_call(name, shape, weights))
