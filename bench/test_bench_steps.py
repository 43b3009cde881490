"""Training-step benchmarks, float32: the reference cases of `fastnn.tools.bench.CASES` (S, M,
L, XL: Dense->BatchNorm1d->ReLU hidden layers, SoftmaxCrossEntropy, Adam), one whole
`Trainer` step (forward, loss, backward, Adam update) per call on each backend
(`fastnn.tools.bench.fastnn_step_fn`), and in the same group the step's GEMMs alone
(`fastnn.tools.bench.gemm_only_fn`, same shapes and BLAS): the floor the step approaches.
"""
import pytest

from fastnn.tools.bench import CASES, fastnn_step_fn, gemm_only_fn
from conftest import measure, measure_blas


def step_group(case):
    name, widths, batch = case
    return "train step %s %s batch %d" % (name, "-".join(map(str, widths)), batch)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_train_step(benchmark, backend, case):
    _, widths, batch = case
    measure(benchmark, step_group(case), fastnn_step_fn(widths, batch, backend))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_train_step_gemms_only(benchmark, case):
    """Reference: forward x@W, backward dW and dx (no dx for the first layer)."""
    _, widths, batch = case
    measure_blas(benchmark, step_group(case), gemm_only_fn(widths, batch))
