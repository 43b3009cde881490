"""The backends agree at the edges of the number line (issue 12, item 7): infinities,
huge values, float32 overflow and saturated activations give what the NumPy reference
(and PyTorch's formulas) give, on both backends."""
import numpy as np
import pytest

import fastnn
from fastnn import ops
from conftest import BACKENDS

DTYPES = [np.float32, np.float64]


def _bn_train(x, dtype):
    """Training-mode batch norm of x (N, D): (out, running_mean, running_var, cache)."""
    d = x.shape[1]
    rm, rv = np.zeros(d, dtype), np.ones(d, dtype)
    out, cache = ops.batchnorm_forward(x.astype(dtype), np.ones(d, dtype),
                                       np.zeros(d, dtype), rm, rv, training=True)
    return out, rm, rv, cache


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_batchnorm_infinite_sample_gives_infinite_running_mean(backend, dtype):
    """A column [inf, 1, 2, 3]: mean inf (running mean inf, not NaN), variance NaN."""
    x = np.array([[np.inf, 0.0], [1, 1], [2, 2], [3, 3]])
    with np.errstate(invalid="ignore"):
        out, rm, rv, _ = _bn_train(x, dtype)
    assert rm[0] == np.inf and np.isnan(rv[0])
    assert abs(rm[1] - 0.15) < 1e-6 and np.isfinite(out[:, 1]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_batchnorm_keeps_a_small_mean_beside_huge_samples(backend, dtype):
    """A column [1e20, -1e20, 0, 1]: mean 0.25 (running mean 0.025), variance 5e39."""
    x = np.array([[1e20], [-1e20], [0.0], [1.0]])
    with np.errstate(over="ignore"):
        out, rm, rv, cache = _bn_train(x, dtype)
    np.testing.assert_allclose(rm, [0.025], rtol=1e-6)
    np.testing.assert_allclose(cache.mean, [0.25], rtol=1e-6)
    want = 0.9 + 0.1 * 5e39 * 4 / 3              # the unbiased variance, momentum 0.1
    if dtype == np.float32:
        assert rv[0] == np.inf                       # beyond float32, as the reference
    else:
        np.testing.assert_allclose(rv, [want], rtol=1e-12)
    np.testing.assert_allclose(out[:, 0], (x[:, 0] - 0.25) / np.sqrt(5e39), rtol=1e-5,
                               atol=1e-6)


def test_batchnorm_float32_extremes_match_the_reference(backend):
    """A float32 sample of 3.4e38 in a column: no NaN where the reference has none."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    x[0, 0], x[3, 2], x[5, 2] = 3.4e38, -3.4e38, 3.3e38
    dout = rng.standard_normal(x.shape).astype(np.float32)
    got = _bn_round_trip(x, dout)
    with fastnn.use_backend("numpy"):
        want = _bn_round_trip(x, dout)
    assert not np.isnan(want[1]).all() and not np.isnan(want[2]).all()
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-5)


def _bn_round_trip(x, dout):
    with np.errstate(all="ignore"):
        out, _, _, cache = _bn_train(x, np.float32)
        dx, dgamma, dbeta = ops.batchnorm_backward(dout, cache)
    return out, dx, dgamma, dbeta


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_tanh_gradient_of_an_infinite_dout_near_saturation(backend, dtype):
    """tanh(+-9) is just below 1 (in float32 too: 1 - 2^-24), so an infinite dout gives
    an infinite gradient, not inf * 0 = NaN."""
    x = np.array([[8.5, 9.0, -9.0, -8.5]], dtype)
    y, cache = ops.activation_forward(x, "tanh")
    assert (np.abs(y) < 1).all()
    with np.errstate(invalid="ignore"):
        dx = ops.activation_backward(np.full_like(x, np.inf), cache)
    np.testing.assert_array_equal(dx, np.full_like(x, np.inf))


@pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled kernels")
def test_compiled_tanh_float32_is_within_an_ulp_near_one():
    """Where tanh approaches 1, the compiled float32 tanh is within one ulp (the last
    float below 1 up to |x| ~ 9.01, then 1): it saturates where the exact value does."""
    x = np.linspace(5.0, 12.0, 70001).astype(np.float32)
    with fastnn.use_backend("cython"):
        y, _ = ops.activation_forward(np.concatenate([x, -x])[None], "tanh")
    exact = np.tanh(np.concatenate([x, -x]).astype(np.float64))
    ulps = np.abs(y[0].astype(np.float64) - exact) / np.spacing(np.float32(1)) * 2
    assert ulps.max() <= 1.0 + 1e-9
