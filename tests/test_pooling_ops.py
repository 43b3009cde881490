"""fastnn.ops max and average pooling on both backends: PyTorch conformance (values,
winners, gradients), ties, NaN, padding, float64 gradient checks, backend parity,
bit-identical results for 1 and 2 threads, hypothesis properties, bad input."""
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import ops
from test_conv_ops import (T, assert_close, numgrad, on_both, rand, relerr,
                           with_threads)
from conftest import BACKENDS

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (x shape, kernel_size, stride, padding)
POOL_CASES = [
    ((2, 3, 8, 8), 2, None, 0),                # LeNet-style 2x2
    ((2, 3, 24, 24), 2, 2, 0),
    ((1, 2, 7, 9), 3, 2, 1),                   # odd sizes, padding
    ((2, 2, 9, 7), (3, 2), (2, 1), (1, 1)),    # non-square
    ((3, 1, 5, 5), 3, 1, 1),                   # overlapping windows
    ((2, 2, 6, 6), 5, 1, 2),                   # padding = half the kernel
    ((1, 1, 1, 1), 1, None, 0),
    ((2, 4, 11, 4), (4, 1), (3, 1), (2, 0)),   # asymmetric
    ((8, 16, 32, 32), 3, 2, 1),                # large
]
POOL_IDS = ["x%s-k%s-s%s-p%s" % ("x".join(map(str, c[0])), c[1], c[2], c[3]) for c in POOL_CASES]
KINDS = {"max": (ops.maxpool2d_forward, ops.maxpool2d_backward, F.max_pool2d),
         "avg": (ops.avgpool2d_forward, ops.avgpool2d_backward, F.avg_pool2d)}


def pool_run(kind, x, dout, k, s, p):
    forward, backward, _ = KINDS[kind]
    out, cache = forward(x, k, s, p)
    return out.copy(), backward(dout, cache).copy()


# -------------------------------------------------------------------- torch conformance
@pytest.mark.parametrize("xs,k,s,p", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_matches_torch(kind, xs, k, s, p, backend, dtype):
    x = rand(xs, dtype)
    forward, backward, torch_fn = KINDS[kind]
    xt = T(x)
    ref = torch_fn(xt, k, s, p)
    dout = rand(ref.shape, dtype, 1)
    ref.backward(torch.tensor(dout.astype(np.float64)))
    out, cache = forward(x, k, s, p)
    dx = backward(dout, cache)
    assert out.dtype == dx.dtype == dtype
    assert_close(out, ref, dtype, "out")
    assert_close(dx, xt.grad, dtype, "dx")
    if kind == "max":
        _, ref_idx = F.max_pool2d(xt, k, s, p, return_indices=True)
        np.testing.assert_array_equal(cache.idx, ref_idx.numpy())


def test_maxpool_ties_go_to_the_first_maximum(backend):
    """A window of equal values: the winner is its first cell (row-major), as torch."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 2:, 2:] = [[1, 3], [3, 3]]
    out, cache = ops.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(cache.idx[0, 0], [[0, 2], [8, 11]])
    dx = ops.maxpool2d_backward(np.ones_like(out), cache)
    expected = np.zeros((4, 4))
    expected.flat[[0, 2, 8, 11]] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_maxpool_2x2_every_order_of_ties_and_nans(backend, dtype):
    """Every 2x2 window over {0, 1, NaN} (81), side by side in rows of an even width (the
    vectorised 2x2 path) and of an odd one: the winner is the first NaN, else the first
    maximum, in row-major order."""
    values = np.array(list(itertools.product([0.0, 1.0, np.nan], repeat=4)))    # (81, 4)
    for extra in (0, 1):                        # an odd width adds an unused column
        x = np.zeros((1, 1, 2 * 9, 2 * 9 + extra), dtype)
        win = x[0, 0, :, :18].reshape(9, 2, 9, 2).transpose(0, 2, 1, 3)   # (9, 9, 2, 2) view
        win[...] = values.reshape(9, 9, 2, 2)
        out, cache = ops.maxpool2d_forward(x, 2)
        nan = np.isnan(values)
        first = np.where(nan.any(1), nan.argmax(1), np.nanargmax(
            np.where(nan, -1, values), axis=1))
        cell = first.reshape(9, 9)
        rows = 2 * np.arange(9)[:, None] + cell // 2
        cols = 2 * np.arange(9)[None, :] + cell % 2
        np.testing.assert_array_equal(cache.idx[0, 0], rows * x.shape[3] + cols)
        np.testing.assert_array_equal(out[0, 0], x[0, 0][rows, cols])


def test_maxpool_padded_cells_never_win(backend, dtype):
    """Windows of negative (even -inf) values over the padding: a real cell wins."""
    x = -np.abs(rand((2, 3, 5, 5), dtype)) - 1
    x[0, 0, 0, 0] = -np.inf
    x[0, 0, 0, 1] = -np.inf
    x[0, 0, 1, :2] = -np.inf
    out, cache = ops.maxpool2d_forward(x, 3, 2, 1)
    assert (out < 0).all()
    assert out[0, 0, 0, 0] == -np.inf and cache.idx[0, 0, 0, 0] == 0     # the first real cell
    ref, ref_idx = F.max_pool2d(T(x), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(out, ref.detach().numpy().astype(dtype))
    np.testing.assert_array_equal(cache.idx, ref_idx.numpy())


def test_maxpool_nan_wins_the_first_nan(backend, dtype):
    x = rand((1, 2, 4, 4), dtype)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan
    x[0, 1, 3, 3] = np.nan
    out, cache = ops.maxpool2d_forward(x, 2)
    assert np.isnan(out[0, 0, 0, 0]) and cache.idx[0, 0, 0, 0] == 1
    assert np.isnan(out[0, 1, 1, 1]) and cache.idx[0, 1, 1, 1] == 15
    assert np.isfinite(np.delete(out.reshape(-1), [0, 7])).all()
    dx = ops.maxpool2d_backward(np.ones_like(out), cache)
    assert dx[0, 0, 0, 1] == 1 and dx[0, 0, 1, 0] == 0


def test_avgpool_counts_padded_zeros(backend):
    x = np.ones((1, 1, 3, 3))
    out, _ = ops.avgpool2d_forward(x, 3, 1, 1)
    np.testing.assert_allclose(out[0, 0], [[4 / 9, 6 / 9, 4 / 9], [6 / 9, 1, 6 / 9],
                                           [4 / 9, 6 / 9, 4 / 9]], rtol=1e-15)


def test_avgpool_nan_propagates_to_its_windows(backend):
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 1, 1] = np.nan
    out, cache = ops.avgpool2d_forward(x, 2)
    assert np.isnan(out[0, 0, 0, 0]) and np.isfinite(out.reshape(-1)[1:]).all()


# ---------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 1, 1), ((3, 2), (1, 2), (1, 0))])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_gradcheck(kind, k, s, p, backend):
    x = rand((2, 2, 5, 6))      # distinct values: no ties near the max
    forward, backward, _ = KINDS[kind]
    out, cache = forward(x, k, s, p)
    dout = rand(out.shape, seed=2)
    dx = backward(dout, cache)
    f = lambda: float(np.sum(forward(x, k, s, p)[0] * dout))
    assert relerr(dx, numgrad(f, x)) < 1e-7


# ------------------------------------------------------------- parity and threads
@pytest.mark.parametrize("xs,k,s,p", POOL_CASES, ids=POOL_IDS)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_backend_parity(kind, xs, k, s, p, dtype):
    x = rand(xs, dtype, 5)
    out_shape = KINDS[kind][0](x, k, s, p)[0].shape
    dout = rand(out_shape, dtype, 6)
    res = on_both(lambda: pool_run(kind, x, dout, k, s, p))
    for got in res[:-1]:
        for a, r in zip(got, res[-1]):
            assert_close(a, r, dtype)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_bit_identical_for_1_and_2_threads(kind, backend, dtype):
    x = rand((16, 8, 24, 24), dtype, 7)
    dout = rand((16, 8, 12, 12), dtype, 8)
    run = lambda: pool_run(kind, x, dout, 3, 2, 1)
    for a, c in zip(with_threads(1, run), with_threads(2, run)):
        np.testing.assert_array_equal(a, c)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 2), pw=st.integers(0, 2), kind=st.sampled_from(["max", "avg"]),
       ties=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]))
def test_pool_property_backends_agree(n, c, h, w, kh, kw, sh, sw, ph, pw, kind, ties, dtype):
    """Any geometry either raises ValueError on both backends (padding over half the
    kernel, a window larger than the padded input) or gives the same results, ties
    (rounded values) included."""
    x = rand((n, c, h, w), dtype, h * 10 + w, scale=3)
    if ties:
        x = np.round(x).astype(dtype)
    geom = ((kh, kw), (sh, sw), (ph, pw))
    valid = ph <= kh // 2 and pw <= kw // 2 and kh <= h + 2 * ph and kw <= w + 2 * pw
    if not valid:
        for name in BACKENDS:
            with fastnn.use_backend(name), pytest.raises(ValueError, match="pool2d_forward"):
                KINDS[kind][0](x, *geom)
        return
    out_shape = KINDS[kind][0](x, *geom)[0].shape
    dout = rand(out_shape, dtype, 1)
    res = on_both(lambda: pool_run(kind, x, dout, *geom))
    for got in res[:-1]:
        for a, r in zip(got, res[-1]):
            assert_close(a, r, dtype)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_bad_input(kind, backend):
    forward, backward, _ = KINDS[kind]
    fn = "%spool2d_forward: " % kind
    x = np.ones((2, 3, 6, 6), np.float32)
    cases = [
        ((np.ones((3, 6, 6), np.float32), 2), {}, ValueError, "x must be 4-D"),
        ((x.astype(np.int16), 2), {}, TypeError, "x must be float32 or float64"),
        ((x, 0), {}, ValueError, "kernel_size must be an int in .1, "),
        ((x, (2, 2, 2)), {}, TypeError, "kernel_size must be"),
        ((x, 2.0), {}, TypeError, "kernel_size must be"),
        ((x, 2), {"stride": 0}, ValueError, "stride must be"),
        ((x, 2), {"padding": -1}, ValueError, "padding must be"),
        ((x, 2), {"padding": 2}, ValueError, "padding must be at most half the kernel"),
        ((x, (3, 2)), {"padding": (1, 2)}, ValueError, "padding must be at most half"),
        ((x, 7), {"padding": 0}, ValueError, "the kernel .* is larger than the padded input"),
    ]
    for args, kw, exc, msg in cases:
        with pytest.raises(exc, match=fn + msg):
            forward(*args, **kw)
    out, cache = forward(x, 2)
    bfn = "%spool2d_backward: " % kind
    with pytest.raises(ValueError, match=bfn + "dout must have shape"):
        backward(np.ones((2, 3, 3, 4), np.float32), cache)
    with pytest.raises(TypeError, match=bfn + "dout must have dtype float32"):
        backward(np.ones(out.shape), cache)
    with pytest.raises(TypeError, match=bfn + "cache must be"):
        backward(out, (1, 2, 3))
