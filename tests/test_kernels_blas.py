"""Never a wrong number for sizes beyond BLAS's 32-bit int (issue 12, item 3): the
row-major GEMM wrapper (kernels/_blas.pyx) splits products whose m, n or k exceed the
limit and runs products with longer rows as plain loops. Lowering the limit to 100 runs
every one of those paths on small arrays, against NumPy, for every product of the dense
forward and backward. A real product beyond 2^31 needs > 17 GB: FASTNN_TEST_HUGE=1 runs
it."""
import os

import numpy as np
import pytest

import fastnn
from fastnn import ops
from conftest import BACKENDS

pytestmark = pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled kernels")

# (N, I, O): every product of forward (x @ w, by rows or by columns of z, or the one-row
# sum split) and backward (x^T dz, dz w^T) has some size, leading dimension or stride
# above the lowered limit of 100, or (the last ones) none
SHAPES = [(250, 130, 70), (130, 7, 260), (1, 330, 90), (1, 90, 330), (3, 250, 1),
          (300, 1, 20), (64, 300, 300), (101, 101, 101), (40, 60, 80), (1, 5000, 600)]


@pytest.fixture
def low_limit():
    from fastnn.kernels import _blas
    before = _blas.get_int_limit()
    _blas.set_int_limit(100)
    yield
    _blas.set_int_limit(before)


def _dense(x, w, b, dout, threads):
    fastnn.set_num_threads(threads)
    out, cache = ops.dense_forward(x, w, b, activation="tanh")
    return (out,) + ops.dense_backward(dout, cache)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_products_split_beyond_the_int_limit(shape, dtype, low_limit):
    n, i, o = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, i)).astype(dtype)
    w = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    dout = rng.standard_normal((n, o)).astype(dtype)
    before = fastnn.get_num_threads()
    try:
        with fastnn.use_backend("cython"):
            got = _dense(x, w, b, dout, 2)
            one_thread = _dense(x, w, b, dout, 1)
    finally:
        fastnn.set_num_threads(before)
    with fastnn.use_backend("numpy"):
        want = _dense(x, w, b, dout, before)
    rtol, atol = (2e-5, 2e-5) if dtype == np.float32 else (1e-11, 1e-11)
    for g, g1, r in zip(got, one_thread, want):
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol * np.abs(r).max())
        np.testing.assert_array_equal(g, g1)      # still bit-identical across threads


def test_int_limit_bounds():
    from fastnn.kernels import _blas
    with pytest.raises(ValueError):
        _blas.set_int_limit(0)
    with pytest.raises(ValueError):
        _blas.set_int_limit(2 ** 31)
    assert _blas.get_int_limit() == 2 ** 31 - 1


@pytest.mark.skipif(os.environ.get("FASTNN_TEST_HUGE") != "1",
                    reason="needs > 17 GB of memory: set FASTNN_TEST_HUGE=1")
def test_a_product_longer_than_2_to_the_31():
    """The issue's case: x (1, 2^31 + 64) @ w (2^31 + 64, 1) gave 0 (NumPy: the sum)."""
    k = 2 ** 31 + 64
    x = np.ones((1, k), np.float32)
    w = np.zeros((k, 1), np.float32)
    w[::1 << 20] = 1.0                       # 2049 ones, spread over the whole length
    w[-1] = 3.0
    out, _ = ops.dense_forward(x, w, None)
    assert out[0, 0] == float(np.count_nonzero(w[:-1]) + 3)
