"""Kernel-level parity: fastnn.kernels._activations (Cython) against ref.

Tolerances: float64 rtol 1e-12, float32 rtol 1e-5, plus an absolute term
atol * (1 + |x|) (times |dout| for gradients) with atol = 1e-14 / 1e-6. The absolute term
covers the places where the reference formula itself cancels, so that one ulp of an O(1)
intermediate is a large *relative* error of a result near zero: gelu / gelu_tanh for
x << 0 (1 + erf(.) and 1 + tanh(.) -> 0) and the silu / swish gradients, which cross zero
near x = -1.28. Both sides evaluate the same formula with different (correctly rounded
or ~1 ulp) exp / tanh / erf, so they may differ by that one ulp.
"""
import numpy as np
import pytest

A = pytest.importorskip("fastnn.kernels._activations")

from fastnn.kernels.activation_table import CODES  # noqa: E402
from fastnn.kernels import ref as R  # noqa: E402

DTYPES = [np.float32, np.float64]
TOL = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-14)}

# every activation code, with its parameter (several values for the parametrized ones)
CASES = [
    ("identity", CODES["identity"], 0.0),
    ("sigmoid", CODES["sigmoid"], 0.0),
    ("tanh", CODES["tanh"], 0.0),
    ("relu", CODES["relu"], 0.0),
    ("leaky_relu", CODES["leaky_relu"], 0.01),
    ("leaky_relu_0.2", CODES["leaky_relu"], 0.2),
    ("elu", CODES["elu"], 1.0),
    ("elu_0.5", CODES["elu"], 0.5),
    ("gelu", CODES["gelu"], 0.0),
    ("gelu_tanh", CODES["gelu_tanh"], 0.0),
    ("silu", CODES["silu"], 0.0),
    ("swish", CODES["swish"], 1.0),
    ("swish_1.7", CODES["swish"], 1.7),
]
CASE_IDS = [c[0] for c in CASES]
SMALL_SHAPES = [(1, 1), (1, 37), (29, 1), (7, 13), (13,)]
LARGE = (4096, 1024)
SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 10.0,
           -10.0, 30.0, -30.0, 88.8, -88.8, 104.5, -104.5, 1000.0, -1000.0]


def _inputs(shape, dtype, seed=0, specials=True):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if specials:
        flat = x.reshape(-1)
        k = min(flat.size, len(SPECIAL))
        flat[:k] = SPECIAL[:k]
    dout = rng.standard_normal(shape).astype(dtype)
    return x, dout


def assert_close(got, ref, scale, dtype):
    """NaN exactly where the reference has NaN; elsewhere equal or within
    rtol * |ref| + atol * scale."""
    rtol, atol = TOL[dtype]
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = np.isnan(ref) | (got == ref)
    with np.errstate(invalid="ignore"):
        ok |= np.abs(got.astype(np.float64) - ref) <= rtol * np.abs(ref) + atol * scale
    if not ok.all():
        bad = np.flatnonzero(~ok.reshape(-1))[:5]
        raise AssertionError("mismatch at %s: got %s, ref %s" % (
            bad, got.reshape(-1)[bad], ref.reshape(-1)[bad]))


def _fwd_scale(x, p):
    return (1 + np.abs(x.astype(np.float64))) * max(1.0, abs(p))


def _check_forward(x, code, p, nthreads=2):
    ref = np.empty_like(x)
    R.act_forward(x, ref, code, p)
    got = np.full_like(x, 7.0)
    assert A.act_forward(x, got, code, p, nthreads) is None
    assert_close(got, ref, _fwd_scale(x, p), x.dtype.type)
    return ref


def _check_backward(dout, x, y, code, p, nthreads=2):
    ref = np.empty_like(x)
    R.act_backward(dout, x, y, ref, code, p)
    got = np.full_like(x, 7.0)
    assert A.act_backward(dout, x, y, got, code, p, nthreads) is None
    assert_close(got, ref, _fwd_scale(x, p) * np.abs(dout), x.dtype.type)


# ---------------------------------------------------------------------------------------
# act_forward / act_backward parity
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=str)
@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_forward_backward_small(dtype, name, code, p, shape):
    x, dout = _inputs(shape, dtype)
    y = _check_forward(x, code, p)
    _check_backward(dout, x, y, code, p)


@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_forward_backward_large(dtype, name, code, p):
    x, dout = _inputs(LARGE, dtype, seed=1)
    y = _check_forward(x, code, p)
    _check_backward(dout, x, y, code, p)


@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_fine_grid_of_values(dtype, name, code, p):
    """Every float32-representable region: a fine grid over [-120, 120] (covers the
    polynomial exp's clamps and range-reduction boundaries) and tiny magnitudes."""
    grid = np.concatenate([np.linspace(-120, 120, 200_001), np.geomspace(1e-38, 1, 2001),
                           -np.geomspace(1e-38, 1, 2001)]).astype(dtype)
    dout = np.ones_like(grid)
    y = _check_forward(grid, code, p)
    _check_backward(dout, grid, y, code, p)


@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_empty(dtype, name, code, p):
    x = np.empty((0, 5), dtype)
    out = np.empty_like(x)
    A.act_forward(x, out, code, p, 2)
    A.act_backward(x, x, x, out, code, p, 2)


# ---------------------------------------------------------------------------------------
# in place, NaN, extremes, threads
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 13), LARGE], ids=str)
@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_in_place(dtype, name, code, p, shape):
    """act_forward with out is x; act_backward with dx is dout (both allowed by the
    reference: elementwise, out=)."""
    x, dout = _inputs(shape, dtype, seed=2)
    y_ref = np.empty_like(x)
    R.act_forward(x, y_ref, code, p)
    dx_ref = np.empty_like(x)
    R.act_backward(dout, x, y_ref, dx_ref, code, p)

    buf = x.copy()
    A.act_forward(buf, buf, code, p, 2)
    assert_close(buf, y_ref, _fwd_scale(x, p), dtype)
    g = dout.copy()
    A.act_backward(g, x, y_ref, g, code, p, 2)
    assert_close(g, dx_ref, _fwd_scale(x, p) * np.abs(dout), dtype)


@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_nan_propagates(dtype, name, code, p):
    """f(NaN) is NaN for every activation (relu(NaN) = NaN, as np.maximum); a NaN in
    dout gives NaN in dx (multiplication, even where relu's gradient is 0); NaN in x
    gives exactly what the reference gives."""
    x, dout = _inputs((7, 13), dtype, seed=3)
    x[1, ::2] = np.nan
    dout[2, :] = np.nan
    x[2, :6] = [-5, -1, 0, 1, 5, -1000]
    y = _check_forward(x, code, p)
    assert np.isnan(y[1, ::2]).all()
    assert not np.isnan(y[0]).any()
    _check_backward(dout, x, y, code, p)
    dx = np.empty_like(x)
    A.act_backward(dout, x, y, dx, code, p, 2)
    assert np.isnan(dx[2]).all()


@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_extremes_finite(dtype, name, code, p):
    """+-1000 (and the edges of float32 exp) give finite results, no warnings (-W error)
    and no overflow / invalid / divide-by-zero state leaking into NumPy (underflow to 0
    is expected: the reference underflows there too)."""
    vals = np.array([-1000, -500, -104, -103.9, -88.8, -87.5, -20, 20, 87.5, 88.8, 103.9,
                     104, 500, 1000], dtype)
    x = np.tile(vals, (3, 1))
    dout = np.ones_like(x)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = _check_forward(x, code, p)
        _check_backward(dout, x, y, code, p)
        got = np.empty_like(x)
        A.act_forward(x, got, code, p, 1)
        assert np.isfinite(got).all()
        A.act_backward(dout, x, got, got, code, p, 1)
        assert np.isfinite(got).all()
        np.add(x, x)   # a NumPy ufunc afterwards still raises nothing


@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_threads_bit_identical(dtype, name, code, p):
    x, dout = _inputs((1000, 333), dtype, seed=4)   # not a multiple of the block size
    outs = []
    for nt in (1, 2, 3):
        y = np.empty_like(x)
        dx = np.empty_like(x)
        A.act_forward(x, y, code, p, nt)
        A.act_backward(dout, x, y, dx, code, p, nt)
        outs.append((y, dx))
    for y, dx in outs[1:]:
        np.testing.assert_array_equal(y, outs[0][0])
        np.testing.assert_array_equal(dx, outs[0][1])


def test_unknown_code_raises():
    x = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError):
        A.act_forward(x, x.copy(), 99, 0.0, 1)
    with pytest.raises(ValueError):
        A.act_backward(x, x, x, x.copy(), -1, 0.0, 1)


def test_relu_exact_and_nan():
    """relu and its gradient are exact: same bits as the reference (up to the sign of
    zero), NaN kept."""
    x = np.array([np.nan, -np.inf, -1.0, -0.0, 0.0, 2.0, np.inf], np.float32)
    y = np.empty_like(x)
    A.act_forward(x, y, CODES["relu"], 0.0, 1)
    np.testing.assert_array_equal(y, [np.nan, 0, 0, 0, 0, 2, np.inf])
    dout = np.array([1, 1, np.nan, 1, 1, np.nan, 2], np.float32)
    dx = np.empty_like(x)
    A.act_backward(dout, x, y, dx, CODES["relu"], 0.0, 1)
    np.testing.assert_array_equal(dx, [0, 0, np.nan, 0, 0, np.nan, 2])


# ---------------------------------------------------------------------------------------
# PReLU
# ---------------------------------------------------------------------------------------
PRELU_SHAPES = [((1,), 1), ((37,), 1), ((1, 1), 1), ((1, 1), "C"), ((1, 37), "C"),
                ((1, 37), 1), ((29, 1), "C"), ((7, 13), "C"), ((7, 13), 1),
                ((5, 300), "C"), (LARGE, "C"), (LARGE, 1), ((4096 * 1024 + 7,), 1)]


def _prelu_inputs(xshape, ashape, dtype, seed=0):
    x, dout = _inputs(xshape, dtype, seed=seed)
    C = xshape[-1] if ashape == "C" else 1
    rng = np.random.default_rng(seed + 100)
    alpha = rng.uniform(-0.5, 0.5, C).astype(dtype)
    return x, dout, alpha


def _prelu_check(x, dout, alpha, nthreads=2):
    dtype = x.dtype.type
    rtol = TOL[dtype][0]
    out_ref = np.empty_like(x)
    R.prelu_forward(x, alpha, out_ref)
    out = np.full_like(x, 7.0)
    A.prelu_forward(x, alpha, out, nthreads)
    np.testing.assert_array_equal(out, out_ref)   # one multiply: exact

    dx_ref = np.empty_like(x)
    da_ref = np.empty_like(alpha)
    R.prelu_backward(dout, x, alpha, dx_ref, da_ref)
    dx = np.full_like(x, 7.0)
    da = np.full_like(alpha, 7.0)
    A.prelu_backward(dout, x, alpha, dx, da, nthreads)
    np.testing.assert_array_equal(dx, dx_ref)
    # dalpha: a sum; the reference adds in float32 (pairwise or row order), fastnn in
    # double: compare against the sum of magnitudes
    contrib = np.where(x > 0, 0, dout.astype(np.float64) * x)
    mag = np.abs(contrib.reshape(-1, alpha.size)).sum(0)
    np.testing.assert_array_equal(np.isnan(da), np.isnan(da_ref))
    m = ~np.isnan(da_ref)
    err = np.abs(da.astype(np.float64) - da_ref)
    assert (err[m] <= rtol * mag[m] + 1e-300).all(), (da, da_ref)
    return out, dx, da


@pytest.mark.parametrize("xshape,ashape", PRELU_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_prelu(dtype, xshape, ashape):
    x, dout, alpha = _prelu_inputs(xshape, ashape, dtype)
    _prelu_check(x, dout, alpha)


@pytest.mark.parametrize("xshape,ashape", [((7, 13), "C"), ((7, 13), 1), ((50,), 1)],
                         ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_prelu_nan_and_extremes(dtype, xshape, ashape):
    x, dout, alpha = _prelu_inputs(xshape, ashape, dtype, seed=5)
    xf = x.reshape(-1)
    xf[:4] = [np.nan, 1000, -1000, 0]
    dout.reshape(-1)[4:6] = np.nan
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out, dx, da = _prelu_check(x, dout, alpha)
    assert np.isnan(out.reshape(-1)[0])


@pytest.mark.parametrize("xshape,ashape", [(LARGE, "C"), (LARGE, 1), ((1000, 7), "C"),
                                           ((3 * 16384 + 5,), 1)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_prelu_threads_bit_identical(dtype, xshape, ashape):
    x, dout, alpha = _prelu_inputs(xshape, ashape, dtype, seed=6)
    res = []
    for nt in (1, 2, 3):
        out = np.empty_like(x)
        dx = np.empty_like(x)
        da = np.empty_like(alpha)
        A.prelu_forward(x, alpha, out, nt)
        A.prelu_backward(dout, x, alpha, dx, da, nt)
        res.append((out, dx, da))
    for r in res[1:]:
        for a, b in zip(r, res[0]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_prelu_empty(dtype):
    x = np.empty((0, 4), dtype)
    alpha = np.ones(4, dtype)
    da = np.full(4, 7.0, dtype)
    A.prelu_forward(x, alpha, x.copy(), 2)
    A.prelu_backward(x, x, alpha, x.copy(), da, 2)
    np.testing.assert_array_equal(da, 0)


def test_maxout_kernels_check_their_shapes():
    """The compiled kernels refuse inconsistent shapes themselves (no out-of-bounds
    access even if a caller skipped fastnn.ops' validation)."""
    from fastnn.kernels import _activations as A
    f32 = np.float32
    ok = (np.zeros((3, 4), f32), np.zeros((3, 2), f32), np.zeros((3, 2), np.intp))
    A.maxout_forward(*ok)
    for z, out, idx in [(np.zeros((3, 5), f32), ok[1], ok[2]),
                        (np.zeros((2, 4), f32), ok[1], ok[2]),
                        (ok[0], ok[1], np.zeros((3, 3), np.intp)),
                        (np.zeros((3, 0), f32), ok[1], ok[2]),
                        (ok[0], ok[1], np.zeros((3, 2), np.intp)[:, ::-1]),
                        (ok[0].astype(np.float64), ok[1], ok[2])]:
        with pytest.raises(ValueError, match="fastnn.kernels"):
            A.maxout_forward(z, out, idx)
    with pytest.raises(ValueError, match="fastnn.kernels: idx"):
        A.maxout_backward(np.zeros((3, 2), f32), np.zeros((3, 3), np.intp),
                          np.zeros((3, 4), f32))
    with pytest.raises(ValueError):                       # wrong idx dtype
        A.maxout_backward(np.zeros((3, 2), f32), np.zeros((3, 2), np.int32),
                          np.zeros((3, 4), f32))
