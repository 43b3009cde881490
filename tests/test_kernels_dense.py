"""Kernel-level parity: fastnn.kernels._dense (Cython + BLAS) against ref.dense.

Tolerances. Elementwise results (out given z, dz given dout/z/out) use the activation
tolerances of test_kernels_activations (rtol 1e-12 / 1e-5 plus atol 1e-14 / 1e-6 scaled
by (1 + |z|), see there why). Products and sums (z, dw, dx, db) are compared to the
reference within rtol * (the same product or sum over absolute values), rtol = 1e-12
for float64 and 1e-5 for float32: BLAS (scipy's OpenBLAS here, NumPy's OpenBLAS in the
reference) may block and order the K-term dot products differently, and db is
accumulated in double here but in the array's dtype by NumPy, so only a bound relative
to the magnitudes that were summed is meaningful (a plain relative test fails wherever
a sum cancels to near zero).
"""
import numpy as np
import pytest

D = pytest.importorskip("fastnn.kernels._dense")

from fastnn.kernels.activation_table import CODES  # noqa: E402
from fastnn.kernels import ref as R  # noqa: E402

DTYPES = [np.float32, np.float64]
TOL = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-14)}
CASES = [
    ("identity", CODES["identity"], 0.0),
    ("sigmoid", CODES["sigmoid"], 0.0),
    ("tanh", CODES["tanh"], 0.0),
    ("relu", CODES["relu"], 0.0),
    ("leaky_relu", CODES["leaky_relu"], 0.1),
    ("elu", CODES["elu"], 0.7),
    ("gelu", CODES["gelu"], 0.0),
    ("gelu_tanh", CODES["gelu_tanh"], 0.0),
    ("silu", CODES["silu"], 0.0),
    ("swish", CODES["swish"], 1.5),
]
CASE_IDS = [c[0] for c in CASES]
# (N, I, O): 1x1, 1xD, Nx1, 7x13, O not a multiple of the column block, the large one
SHAPES = [(1, 1, 1), (1, 37, 5), (29, 1, 3), (7, 13, 11), (33, 20, 130), (512, 784, 512)]
IDS = ["x".join(map(str, s)) for s in SHAPES]


def _data(N, I, O, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, I)).astype(dtype)
    w = (rng.standard_normal((I, O)) * (2 / np.sqrt(I))).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    dout = rng.standard_normal((N, O)).astype(dtype)
    return x, w, b, dout


def _f64(a):
    return np.abs(a.astype(np.float64))


def assert_elementwise(got, ref, scale, dtype):
    rtol, atol = TOL[dtype]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = np.isnan(ref) | (got == ref)
    with np.errstate(invalid="ignore"):
        ok |= np.abs(got.astype(np.float64) - ref) <= rtol * np.abs(ref) + atol * scale
    assert ok.all(), (got[~ok][:5], ref[~ok][:5])


def assert_sum_close(got, ref, mag, dtype):
    """|got - ref| <= rtol * mag, mag = the same product/sum taken over |terms|."""
    rtol = TOL[dtype][0]
    assert got.shape == ref.shape and got.dtype == ref.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    m = ~np.isnan(ref)
    err = np.abs(got.astype(np.float64) - ref)
    with np.errstate(invalid="ignore"):
        ok = (got == ref) | (err <= rtol * mag)   # mag is NaN where a NaN term had weight 0
    assert ok[m].all(), (err[m].max(), mag[m].min())


def run_forward(x, w, b, code, p, nthreads=2, z_is_out=False):
    N, O = x.shape[0], w.shape[1]
    z = np.full((N, O), 7.0, x.dtype)
    out = z if z_is_out else np.full((N, O), 7.0, x.dtype)
    assert D.dense_forward(x, w, b, z, out, code, p, nthreads) is None
    return z, out


def run_backward(dout, x, w, z, out, code, p, nthreads=2, want_dx=True, want_db=True,
                 dz_is_dout=False):
    N, I, O = x.shape[0], x.shape[1], w.shape[1]
    dz = dout if dz_is_dout else np.full((N, O), 7.0, x.dtype)
    dx = np.full((N, I), 7.0, x.dtype) if want_dx else None
    dw = np.full((I, O), 7.0, x.dtype)
    db = np.full(O, 7.0, x.dtype) if want_db else None
    assert D.dense_backward(dout, x, w, z, out, dz, dx, dw, db, code, p, nthreads) is None
    return dz, dx, dw, db


def reference(x, w, b, dout, code, p):
    N, I, O = x.shape[0], x.shape[1], w.shape[1]
    z = np.empty((N, O), x.dtype)
    out = np.empty((N, O), x.dtype)
    R.dense_forward(x, w, b, z, out, code, p)
    dz = np.empty_like(z)
    dx = np.empty_like(x)
    dw = np.empty_like(w)
    db = np.empty(O, x.dtype)
    R.dense_backward(dout, x, w, z, out, dz, dx, dw, db, code, p)
    return z, out, dz, dx, dw, db


def check_forward(x, w, b, code, p, z, out, z_ref):
    dtype = x.dtype.type
    mag = _f64(x) @ _f64(w) + (0 if b is None else _f64(b))
    assert_sum_close(z, z_ref, mag, dtype)
    # out = f(z) for the z that was written (elementwise parity on identical inputs)
    f_of_z = np.empty_like(z)
    R.act_forward(z, f_of_z, code, p)
    assert_elementwise(out, f_of_z, (1 + _f64(z)) * max(1, abs(p)), dtype)


def check_backward(dout, x, w, z, out, code, p, dz, dx, dw, db, ref):
    """ref: the reference (dz, dx, dw, db) on the same inputs."""
    dtype = x.dtype.type
    dz_r, dx_r, dw_r, db_r = ref
    # a NaN pre-activation leaves a finite dz (identity) finite-scaled: without nan_to_num
    # its row's tolerance became NaN, i.e. exact equality with one BLAS's summation order
    dz_scale = _f64(dout) * (1 + np.nan_to_num(_f64(z))) * max(1, abs(p))
    assert_elementwise(dz, dz_r, dz_scale, dtype)
    # products of dz: the magnitudes include dz's own tolerance (rtol * dzmag bounds it)
    rtol, atol = TOL[dtype]
    dzmag = _f64(dz_r) + (atol / rtol) * dz_scale
    assert_sum_close(dw, dw_r, _f64(x).T @ dzmag, dtype)
    if db is not None:
        assert_sum_close(db, db_r, dzmag.sum(0), dtype)
    if dx is not None:
        assert_sum_close(dx, dx_r, dzmag @ _f64(w).T, dtype)


# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_forward_backward(dtype, name, code, p, shape):
    x, w, b, dout = _data(*shape, dtype)
    z_r, out_r, *grads_r = reference(x, w, b, dout, code, p)
    z, out = run_forward(x, w, b, code, p)
    check_forward(x, w, b, code, p, z, out, z_r)
    # backward from the reference's forward state, so both sides get identical inputs
    dz, dx, dw, db = run_backward(dout, x, w, z_r, out_r, code, p)
    check_backward(dout, x, w, z_r, out_r, code, p, dz, dx, dw, db, grads_r)


@pytest.mark.parametrize("want_b,want_dx,want_db", [(False, True, True), (True, False, True),
                                                     (True, True, False),
                                                     (False, False, False)])
@pytest.mark.parametrize("name,code,p", [CASES[0], CASES[3], CASES[6]],
                         ids=[CASE_IDS[0], CASE_IDS[3], CASE_IDS[6]])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_optional_outputs_none(dtype, name, code, p, want_b, want_dx, want_db):
    x, w, b, dout = _data(65, 31, 300, dtype, seed=1)
    b = b if want_b else None
    z_r, out_r, *grads_r = reference(x, w, b, dout, code, p)
    z, out = run_forward(x, w, b, code, p)
    check_forward(x, w, b, code, p, z, out, z_r)
    dz, dx, dw, db = run_backward(dout, x, w, z_r, out_r, code, p, want_dx=want_dx,
                                  want_db=want_db)
    assert (dx is None) != want_dx and (db is None) != want_db
    check_backward(dout, x, w, z_r, out_r, code, p, dz, dx, dw, db, grads_r)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", [(7, 13, 11), (512, 784, 512)], ids=["7x13x11", "large"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_identity_in_place(dtype, shape, with_bias):
    """IDENTITY: forward with z is out (only the bias is added), backward with dz is
    dout (no elementwise pass; db is still computed; dout is left untouched)."""
    x, w, b, dout = _data(*shape, dtype, seed=2)
    b = b if with_bias else None
    code = CODES["identity"]
    z_r, out_r, *grads_r = reference(x, w, b, dout, code, 0.0)
    z, out = run_forward(x, w, b, code, 0.0, z_is_out=True)
    assert out is z
    check_forward(x, w, b, code, 0.0, z, out, z_r)

    # the reference itself, in place
    g_ref = dout.copy()
    dx_r2, dw_r2, db_r2 = np.empty_like(x), np.empty_like(w), np.empty(shape[2], dtype)
    R.dense_backward(g_ref, x, w, z_r, z_r, g_ref, dx_r2, dw_r2, db_r2, code, 0.0)

    g = dout.copy()
    dz, dx, dw, db = run_backward(g, x, w, z_r, z_r, code, 0.0, dz_is_dout=True)
    assert dz is g
    np.testing.assert_array_equal(g, dout)
    check_backward(dout, x, w, z_r, z_r, code, 0.0, dz, dx, dw, db,
                   (g_ref, dx_r2, dw_r2, db_r2))


@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_nan_propagates(dtype, name, code, p):
    """A NaN input row gives a NaN z row and NaN out row (relu(NaN) is NaN); NaN in
    dout reaches dz even where the gradient is 0 (multiplication)."""
    x, w, b, dout = _data(9, 6, 70, dtype, seed=3)
    x[3, 2] = np.nan
    dout[5, :] = np.nan
    z_r, out_r, *grads_r = reference(x, w, b, dout, code, p)
    z, out = run_forward(x, w, b, code, p)
    assert np.isnan(z[3]).all() and np.isnan(out[3]).all()
    assert not np.isnan(out[np.arange(9) != 3]).any()
    check_forward(x, w, b, code, p, z, out, z_r)
    dz, dx, dw, db = run_backward(dout, x, w, z_r, out_r, code, p)
    assert np.isnan(dz[5]).all() and np.isnan(db).all()
    check_backward(dout, x, w, z_r, out_r, code, p, dz, dx, dw, db, grads_r)


@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_extremes_finite(dtype, name, code, p):
    """Pre-activations at +-1000 (and around the float32 exp limits) stay finite, with no
    warnings (-W error) and no overflow/invalid/divide state leaking into NumPy."""
    zs = np.array([-1000, -500, -104, -88.8, -20, -1, 0, 1, 20, 88.8, 104, 500, 1000],
                  dtype)
    x = zs[:, None].astype(dtype)                      # (13, 1)
    w = np.array([[1.0, -1.0, 0.5]], dtype)            # z = x * w + b
    b = np.array([0.0, 0.0, 0.25], dtype)
    dout = np.ones((13, 3), dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        z_r, out_r, *grads_r = reference(x, w, b, dout, code, p)
        z, out = run_forward(x, w, b, code, p)
        assert np.isfinite(z).all() and np.isfinite(out).all()
        check_forward(x, w, b, code, p, z, out, z_r)
        dz, dx, dw, db = run_backward(dout, x, w, z_r, out_r, code, p)
        for a in (dz, dx, dw, db):
            assert np.isfinite(a).all()
        check_backward(dout, x, w, z_r, out_r, code, p, dz, dx, dw, db, grads_r)
        np.add(x, x)


@pytest.mark.parametrize("shape", [(512, 784, 512), (300, 50, 777), (1, 784, 256),
                                   (1, 40, 2000)], ids=["large", "odd", "row", "row-short"])
@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_threads_bit_identical(dtype, name, code, p, shape):
    """nthreads 1, 2, 3 give the same bits (the GEMMs are split across threads)."""
    x, w, b, dout = _data(*shape, dtype, seed=4)
    res = []
    for nt in (1, 2, 3):
        z, out = run_forward(x, w, b, code, p, nthreads=nt)
        res.append((z, out) + run_backward(dout, x, w, z, out, code, p, nthreads=nt))
    for r in res[1:]:
        for a, ref in zip(r, res[0]):
            np.testing.assert_array_equal(a, ref)


@pytest.mark.parametrize("name,code,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("shape", [(1024, 64, 300), (8, 300, 200), (300, 8, 40),
                                   (1, 784, 256), (1, 40, 2000), (1, 70000, 2)],
                         ids=["split-rows", "split-cols", "narrow", "one-row",
                              "one-row-short", "one-row-long"])
def test_split_gemm_parity(dtype, name, code, p, shape):
    """Two threads split the GEMMs by rows (large batch), by columns (small batch) or, for
    one row, along the sum (partial gemvs added in order): every layout against the
    reference."""
    x, w, b, dout = _data(*shape, dtype, seed=5)
    z_r, out_r, *grads_r = reference(x, w, b, dout, code, p)
    z, out = run_forward(x, w, b, code, p, nthreads=2)
    check_forward(x, w, b, code, p, z, out, z_r)
    for want_db in (True, False):
        dz, dx, dw, db = run_backward(dout, x, w, z_r, out_r, code, p, want_db=want_db,
                                      nthreads=2)
        check_backward(dout, x, w, z_r, out_r, code, p, dz, dx, dw, db, grads_r)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_empty_batch(dtype):
    x, w, b, dout = _data(0, 5, 3, dtype)
    z_r, out_r, dz_r, dx_r, dw_r, db_r = reference(x, w, b, dout, CODES["relu"], 0.0)
    z, out = run_forward(x, w, b, CODES["relu"], 0.0)
    dz, dx, dw, db = run_backward(dout, x, w, z, out, CODES["relu"], 0.0)
    np.testing.assert_array_equal(dw, dw_r)
    np.testing.assert_array_equal(db, db_r)
    assert z.shape == (0, 3) and dx.shape == (0, 5)


def test_read_only_inputs():
    """Inputs are only read: read-only arrays are accepted."""
    x, w, b, dout = _data(4, 3, 2, np.float32)
    for a in (x, w, b, dout):
        a.setflags(write=False)
    z, out = run_forward(x, w, b, CODES["tanh"], 0.0)
    z.setflags(write=False)
    out.setflags(write=False)
    run_backward(dout, x, w, z, out, CODES["tanh"], 0.0)


def test_unknown_code_raises():
    x, w, b, dout = _data(2, 2, 2, np.float64)
    z = np.empty((2, 2))
    with pytest.raises(ValueError):
        D.dense_forward(x, w, b, z, z.copy(), 10, 0.0, 1)
    with pytest.raises(ValueError):
        D.dense_backward(dout, x, w, z, z, z.copy(), None, w.copy(), None, -1, 0.0, 1)
