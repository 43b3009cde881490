"""Convolutional training steps (issue 13): the LeNet-5-like step and the residual
block step of `fastnn.tools.bench_cnn.CASES`, on each backend, against PyTorch (same
threads) and against their GEMMs alone. Targets: LeNet >= 3x torch and >= 3x the NumPy
backend; the residual block >= 1.3x torch."""
import pytest

import fastnn
from fastnn.tools import bench_cnn
from conftest import measure, measure_blas

CASES = list(bench_cnn.CASES)


@pytest.mark.parametrize("case", CASES)
def test_cnn_step(benchmark, backend, case):
    measure(benchmark, "cnn step " + case, bench_cnn.fastnn_step_fn(case, backend))


@pytest.mark.parametrize("case", CASES)
def test_cnn_step_torch(benchmark, case):
    pytest.importorskip("torch")
    measure(benchmark, "cnn step " + case,
            bench_cnn.torch_step_fn(case, fastnn.get_num_threads()))


@pytest.mark.parametrize("case", CASES)
def test_cnn_step_gemms_only(benchmark, case):
    measure_blas(benchmark, "cnn step " + case, bench_cnn.gemms_fn(case))
