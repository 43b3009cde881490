"""Kernel-level parity: compiled `_batchnorm` against `ref.batchnorm`.

Tolerances: rtol 1e-5 (float32) / 1e-12 (float64), with an absolute floor of the same
factor times the largest magnitude of the compared quantity (elements near zero come from
cancellation, e.g. x - mean, and only have absolute accuracy). For dx the floor's scale
is the largest term of the formula, |gamma * invstd * dout|: in training mode dx is the
small difference N dout - dbeta - xhat dgamma (for N = 2 it is exactly 0 in theory).
"""
import math

import numpy as np
import pytest

from fastnn.kernels import ref

bn = pytest.importorskip("fastnn.kernels._batchnorm")

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
TRAIN_SHAPES = [(2, 1), (2, 5), (50, 1), (7, 13), (300, 1030), (20000, 3), (4096, 1024)]
EVAL_SHAPES = [(1, 1), (1, 37), (50, 1), (7, 13), (4096, 1024)]


def close(actual, expected, dtype, scale=None):
    tol = TOL[dtype]
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def make(shape, dtype, seed=0, loc=0.5, scale=2.0):
    r = np.random.default_rng(seed)
    n, d = shape
    x = (r.standard_normal(shape) * scale + loc).astype(dtype)
    gamma = (r.standard_normal(d) * 0.5 + 1.0).astype(dtype)
    beta = r.standard_normal(d).astype(dtype)
    dout = r.standard_normal(shape).astype(dtype)
    rm = r.standard_normal(d).astype(dtype)
    rv = (r.random(d) + 0.5).astype(dtype)
    return x, gamma, beta, dout, rm, rv


def forward_train(mod, x, gamma, beta, rm, rv, momentum=0.1, eps=1e-5, nthreads=1):
    n, d = x.shape
    out = np.empty_like(x)
    mean = np.empty(d, x.dtype)
    invstd = np.empty(d, x.dtype)
    mod.bn_forward_train(x, gamma, beta, rm, rv, momentum, eps, out, mean, invstd, nthreads)
    return out, mean, invstd


def backward(mod, dout, x, gamma, mean, invstd, training, want_params=True, nthreads=1):
    d = x.shape[1]
    dx = np.empty_like(x)
    dg = np.empty(d, x.dtype) if want_params else None
    db = np.empty(d, x.dtype) if want_params else None
    mod.bn_backward(dout, x, gamma, mean, invstd, training, dx, dg, db, nthreads)
    return dx, dg, db


def dx_scale(gamma, invstd, dout):
    return float(np.max(np.abs(gamma * invstd * dout)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", TRAIN_SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 1.0])
def test_forward_backward_train(shape, dtype, momentum):
    x, gamma, beta, dout, rm0, rv0 = make(shape, dtype)
    res = {}
    for name, mod in (("ref", ref), ("cy", bn)):
        rm, rv = rm0.copy(), rv0.copy()
        out, mean, invstd = forward_train(mod, x, gamma, beta, rm, rv, momentum, 1e-5, 2)
        dx, dg, db = backward(mod, dout, x, gamma, mean, invstd, True, nthreads=2)
        res[name] = dict(out=out, mean=mean, invstd=invstd, rm=rm, rv=rv, dx=dx, dg=dg, db=db)
    r, c = res["ref"], res["cy"]
    for key in ("out", "mean", "invstd", "rm", "rv", "dg", "db"):
        close(c[key], r[key], dtype)
    close(c["dx"], r["dx"], dtype, scale=dx_scale(gamma, r["invstd"], dout))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", EVAL_SHAPES)
def test_forward_backward_eval(shape, dtype):
    x, gamma, beta, dout, rm, rv = make(shape, dtype, seed=1)
    res = {}
    for name, mod in (("ref", ref), ("cy", bn)):
        d = shape[1]
        out = np.empty_like(x)
        mean = np.empty(d, dtype)
        invstd = np.empty(d, dtype)
        rm_c, rv_c = rm.copy(), rv.copy()
        mod.bn_forward_eval(x, gamma, beta, rm_c, rv_c, 1e-5, out, mean, invstd, 2)
        np.testing.assert_array_equal(rm_c, rm)   # eval never touches the running stats
        np.testing.assert_array_equal(rv_c, rv)
        dx, dg, db = backward(mod, dout, x, gamma, mean, invstd, False, nthreads=2)
        dx2, none_g, none_b = backward(mod, dout, x, gamma, mean, invstd, False,
                                       want_params=False, nthreads=2)
        assert none_g is None and none_b is None
        np.testing.assert_array_equal(dx2, dx)
        res[name] = dict(out=out, mean=mean, invstd=invstd, dx=dx, dg=dg, db=db)
    r, c = res["ref"], res["cy"]
    for key in ("out", "mean", "invstd", "dx", "dg", "db"):
        close(c[key], r[key], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_optional_outputs_none(dtype):
    x, gamma, beta, dout, rm, rv = make((33, 9), dtype, seed=2)
    out_ref, mean_ref, inv_ref = forward_train(ref, x, gamma, beta, None, None)
    out, mean, invstd = forward_train(bn, x, gamma, beta, None, None)
    close(out, out_ref, dtype)
    # one running stat tracked, the other not
    rm1 = rm.copy()
    forward_train(bn, x, gamma, beta, rm1, None)
    rm2 = rm.copy()
    forward_train(ref, x, gamma, beta, rm2, None)
    close(rm1, rm2, dtype)
    rv1 = rv.copy()
    forward_train(bn, x, gamma, beta, None, rv1)
    rv2 = rv.copy()
    forward_train(ref, x, gamma, beta, None, rv2)
    close(rv1, rv2, dtype)
    # dgamma / dbeta None: dx unchanged
    dx_full, _, _ = backward(bn, dout, x, gamma, mean, invstd, True)
    dx_none, _, _ = backward(bn, dout, x, gamma, mean, invstd, True, want_params=False)
    np.testing.assert_array_equal(dx_none, dx_full)
    dx = np.empty_like(x)
    db = np.empty(9, dtype)
    bn.bn_backward(dout, x, gamma, mean, invstd, True, dx, None, db, 1)
    dx_r, _, db_r = backward(ref, dout, x, gamma, mean, invstd, True)
    close(db, db_r, dtype)
    np.testing.assert_array_equal(dx, dx_full)


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_only_inputs(dtype):
    x, gamma, beta, dout, rm, rv = make((20, 6), dtype, seed=3)
    for a in (x, gamma, beta, dout):
        a.setflags(write=False)
    out, mean, invstd = forward_train(bn, x, gamma, beta, rm, rv)
    backward(bn, dout, x, gamma, mean, invstd, True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_running_variance_is_unbiased(dtype):
    x, gamma, beta, _, _, _ = make((10, 4), dtype, seed=4)
    rm = np.zeros(4, dtype)
    rv = np.zeros(4, dtype)
    forward_train(bn, x, gamma, beta, rm, rv, momentum=1.0)
    close(rm, x.astype(np.float64).mean(0), dtype)
    close(rv, x.astype(np.float64).var(0, ddof=1), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loc, scale", [(1e4, 1.0), (1e3, 1e-2), (-5e5, 3.0)])
def test_variance_accurate_when_mean_dominates(dtype, loc, scale):
    """|mean| >> std: mean/invstd match a float64 two-pass computation of the same data."""
    x, gamma, beta, _, _, _ = make((512, 16), dtype, seed=5, loc=loc, scale=scale)
    _, mean, invstd = forward_train(bn, x, gamma, beta, None, None, eps=1e-12)
    n = x.shape[0]
    m64 = np.array([math.fsum(col) / n for col in x.T.astype(np.float64)])   # exact sum
    v64 = np.array([math.fsum(c) / n for c in (x.astype(np.float64) - m64).T ** 2])
    tol = TOL[dtype]
    # the stored mean is only representable to about one ulp of |mean| in its dtype
    ulp = np.spacing(np.abs(m64).astype(dtype)).astype(np.float64)
    assert np.all(np.abs(mean - m64) <= ulp + tol * np.sqrt(v64))
    np.testing.assert_allclose(invstd, 1.0 / np.sqrt(v64 + 1e-12), rtol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_column_stays_in_its_column(dtype):
    x, gamma, beta, dout, rm, rv = make((40, 7), dtype, seed=6)
    x[13, 2] = np.nan
    out, mean, invstd = forward_train(bn, x, gamma, beta, rm, rv)
    assert np.isnan(mean[2]) and np.isnan(invstd[2]) and np.isnan(rm[2]) and np.isnan(rv[2])
    assert np.all(np.isnan(out[:, 2]))
    others = np.delete(np.arange(7), 2)
    assert np.all(np.isfinite(out[:, others]))
    assert np.all(np.isfinite(rm[others])) and np.all(np.isfinite(rv[others]))
    dx, dg, db = backward(bn, dout, x, gamma, mean, invstd, True)
    assert np.all(np.isnan(dx[:, 2])) and np.isnan(dg[2])
    assert np.all(np.isfinite(dx[:, others])) and np.all(np.isfinite(dg[others]))
    # NaN in the first row (the shift of the one-pass variance) behaves the same
    x2 = make((40, 7), dtype, seed=6)[0]
    x2[0, 4] = np.nan
    out2, mean2, _ = forward_train(bn, x2, gamma, beta, None, None)
    assert np.all(np.isnan(out2[:, 4])) and np.all(np.isfinite(np.delete(out2, 4, axis=1)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4096, 1024), (20000, 3), (256, 5000)])
def test_bit_identical_across_thread_counts(shape, dtype):
    x, gamma, beta, dout, rm0, rv0 = make(shape, dtype, seed=7)
    runs = []
    for nt in (1, 2, 3):
        rm, rv = rm0.copy(), rv0.copy()
        out, mean, invstd = forward_train(bn, x, gamma, beta, rm, rv, nthreads=nt)
        dx, dg, db = backward(bn, dout, x, gamma, mean, invstd, True, nthreads=nt)
        ev = np.empty_like(x)
        bn.bn_forward_eval(x, gamma, beta, rm, rv, 1e-5, ev, np.empty_like(mean),
                           np.empty_like(invstd), nt)
        dxe, dge, dbe = backward(bn, dout, x, gamma, mean, invstd, False, nthreads=nt)
        runs.append((out, mean, invstd, rm, rv, dx, dg, db, ev, dxe, dge, dbe))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eval_and_train_gradient_sums_agree(dtype):
    """dgamma/dbeta do not depend on the mode (same sums, fused into the eval dx pass)."""
    x, gamma, beta, dout, rm, rv = make((301, 17), dtype, seed=8)
    out, mean, invstd = forward_train(bn, x, gamma, beta, None, None)
    _, dg_t, db_t = backward(bn, dout, x, gamma, mean, invstd, True)
    _, dg_e, db_e = backward(bn, dout, x, gamma, mean, invstd, False)
    np.testing.assert_array_equal(dg_t, dg_e)
    np.testing.assert_array_equal(db_t, db_e)
