"""Benchmarks: `pytest bench/ --benchmark-only`. Each group times the same work on the
Cython and NumPy backends (and a reference such as the bare GEMMs) side by side.

    test_bench_ops.py     fastnn.ops kernels (dense, activations, PReLU, batch norm, losses)
    test_bench_layers.py  every layer's public forward + backward, and Sequentials
    test_bench_optim.py   every optimizer's step() over ~1M parameters
    test_bench_steps.py   whole training steps S/M/L/XL (fastnn.tools.bench.CASES) vs their GEMMs

Shared here: the `backend` fixture (each benchmark taking it runs once per backend, the
backend active for the whole test, construction included), the sizes, random data, and
`measure`, through which every benchmark sets its group and runs.
"""
import numpy as np
import pytest

import fastnn
from fastnn.tools.bench import _all_threads

BACKENDS = ["cython", "numpy"] if fastnn.show_config(print_=False)["cython"] else ["numpy"]

#: elementwise and batch-norm sizes (rows x features): cache-resident and memory-bound
SIZES = [(256, 1024), (4096, 1024)]
#: dense layer: batch, in_features, out_features
DENSE = (128, 784, 512)


#: activation id -> (fastnn.ops name, keywords, layer class taking the same keywords)
ACTIVATIONS = {
    "sigmoid": ("sigmoid", {}, fastnn.Sigmoid),
    "tanh": ("tanh", {}, fastnn.Tanh),
    "relu": ("relu", {}, fastnn.ReLU),
    "leaky_relu": ("leaky_relu", {}, fastnn.LeakyReLU),
    "elu": ("elu", {}, fastnn.ELU),
    "gelu": ("gelu", {}, fastnn.GELU),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}, fastnn.GELU),
    "silu": ("silu", {}, fastnn.SiLU),
    "swish": ("swish", {}, fastnn.Swish),
}


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastnn.use_backend(request.param):
        yield request.param


def rand(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def size_id(shape):
    """(256, 1024) -> "256x1024" (test ids and group names)."""
    return "x".join(map(str, shape))


def dense_id(shape=DENSE):
    """(128, 784, 512) -> "128x784->512"."""
    return "%dx%d->%d" % shape


def measure(benchmark, group, fn, *args, **kwargs):
    """Time fn(*args, **kwargs) in pytest-benchmark group `group`, after one untimed call
    (first-call work -- workspaces, optimizer state, recorded programs -- stays out of
    the timings)."""
    benchmark.group = group
    fn(*args, **kwargs)
    return benchmark(fn, *args, **kwargs)


def measure_blas(benchmark, group, fn):
    """`measure` for a bare-BLAS reference: fastnn keeps the kernels' BLAS single-threaded
    and splits GEMMs itself, the reference uses BLAS's own threading on the same number
    of threads."""
    with _all_threads(fastnn.get_num_threads()):
        return measure(benchmark, group, fn)
