"""Benchmarks: `pytest bench/ --benchmark-only`. Each group times the same work on the
Cython and NumPy backends (and a reference such as the bare GEMMs) side by side."""
import numpy as np
import pytest

import fastnn

BACKENDS = ["cython", "numpy"] if fastnn.show_config(print_=False)["cython"] else ["numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastnn.use_backend(request.param):
        yield request.param


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
