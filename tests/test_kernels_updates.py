"""Kernel-level parity: compiled `_updates` against `ref.updates`.

Several consecutive steps from the same initial state on both backends; parameters and
every state buffer are compared after each step. Tolerances: rtol 1e-5 (float32) /
1e-12 (float64) with an absolute floor of that factor times the array's largest
magnitude. (float32 differs from the reference by a few ulp at most: e.g. the reference's
Adam denominator is promoted to float64 by the np.float64 bias-correction scalar, the
kernel keeps torch's float32 arithmetic.)
"""
import itertools

import numpy as np
import pytest

from fastnn.kernels import ref

upd = pytest.importorskip("fastnn.kernels._updates")

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
# (1,), a 2-D parameter, a flat view of it, and ~1M elements with a ragged tail
SHAPES = [(1,), (7, 13), (91,), (1 << 20) + 3]
STEPS = 3


def close(actual, expected, dtype):
    tol = TOL[dtype]
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def params(shape, dtype, seed=0):
    r = np.random.default_rng(seed)
    p = r.standard_normal(shape).astype(dtype)
    grads = [r.standard_normal(shape).astype(dtype) for _ in range(STEPS)]
    return p, grads


def check_step(states_ref, states_cy, dtype):
    for a_ref, a_cy in zip(states_ref, states_cy):
        if a_ref is None:
            assert a_cy is None
        else:
            close(a_cy, a_ref, dtype)


def read_only(g):
    g = g.copy()
    g.setflags(write=False)   # the kernels never write into g
    return g


SGD_CASES = list(itertools.product([0.0, 0.9], [0.0, 0.1], [False, True], [0.0, 1e-2]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum, dampening, nesterov, wd", SGD_CASES)
def test_sgd(shape, dtype, momentum, dampening, nesterov, wd):
    p0, grads = params(shape, dtype)
    p_r, p_c = p0.copy(), p0.copy()
    buf_r = np.zeros_like(p0) if momentum else None
    buf_c = np.full_like(p0, 7.0) if momentum else None   # garbage: first step overwrites
    for k, g in enumerate(grads):
        ref.sgd_step(p_r, g, buf_r, 0.05, momentum, dampening, nesterov, wd, k == 0)
        upd.sgd_step(p_c, read_only(g), buf_c, 0.05, momentum, dampening, nesterov, wd,
                     k == 0, 2)
        check_step((p_r, buf_r), (p_c, buf_c), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adagrad(shape, dtype, wd):
    p0, grads = params(shape, dtype, seed=1)
    p_r, p_c = p0.copy(), p0.copy()
    s_r, s_c = np.full_like(p0, 0.1), np.full_like(p0, 0.1)
    for k, g in enumerate(grads):
        clr = 0.01 / (1 + k * 1e-3)
        ref.adagrad_step(p_r, g, s_r, clr, 1e-10, wd)
        upd.adagrad_step(p_c, read_only(g), s_c, clr, 1e-10, wd, 2)
        check_step((p_r, s_r), (p_c, s_c), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_rmsprop(shape, dtype, momentum, wd):
    p0, grads = params(shape, dtype, seed=2)
    p_r, p_c = p0.copy(), p0.copy()
    sq_r, sq_c = np.zeros_like(p0), np.zeros_like(p0)
    buf_r = np.zeros_like(p0) if momentum else None
    buf_c = np.zeros_like(p0) if momentum else None
    for g in grads:
        ref.rmsprop_step(p_r, g, sq_r, buf_r, 0.01, 0.99, 1e-8, momentum, wd)
        upd.rmsprop_step(p_c, read_only(g), sq_c, buf_c, 0.01, 0.99, 1e-8, momentum, wd, 2)
        check_step((p_r, sq_r, buf_r), (p_c, sq_c, buf_c), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adam(shape, dtype, decoupled, wd):
    p0, grads = params(shape, dtype, seed=3)
    p_r, p_c = p0.copy(), p0.copy()
    m_r, m_c = np.zeros_like(p0), np.zeros_like(p0)
    v_r, v_c = np.zeros_like(p0), np.zeros_like(p0)
    for step, g in enumerate(grads, start=1):
        ref.adam_step(p_r, g, m_r, v_r, 1e-3, 0.9, 0.999, 1e-8, wd, step, decoupled)
        upd.adam_step(p_c, read_only(g), m_c, v_c, 1e-3, 0.9, 0.999, 1e-8, wd, step,
                      decoupled, 2)
        check_step((p_r, m_r, v_r), (p_c, m_c, v_c), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_differs_from_adam_l2(dtype):
    """Decoupled decay is not the L2 gradient term: guards against swapped flags."""
    p0, grads = params((64,), dtype, seed=4)
    out = []
    for decoupled in (False, True):
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        upd.adam_step(p, grads[0], m, v, 1e-2, 0.9, 0.999, 1e-8, 0.5, 1, decoupled, 1)
        out.append((p, m))
    assert not np.allclose(out[0][0], out[1][0])
    assert not np.allclose(out[0][1], out[1][1])   # L2 enters the moments, AdamW's not
    np.testing.assert_array_equal(out[1][1], dtype(1.0 - 0.9) * grads[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_flat_views_update_the_parameter(dtype):
    """Callers may pass p.reshape(-1)-style flat views: the update lands in p."""
    p0, grads = params((32, 17), dtype, seed=5)
    p_2d = p0.copy()
    m, v = np.zeros_like(p0), np.zeros_like(p0)
    upd.adam_step(p_2d, grads[0], m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, False, 1)
    p_flat = p0.copy()
    m2, v2 = np.zeros_like(p0), np.zeros_like(p0)
    upd.adam_step(p_flat.reshape(-1), grads[0].reshape(-1), m2.reshape(-1), v2.reshape(-1),
                  1e-3, 0.9, 0.999, 1e-8, 0.0, 1, False, 1)
    np.testing.assert_array_equal(p_flat, p_2d)
    np.testing.assert_array_equal(m2, m)
    assert not np.array_equal(p_flat, p0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_across_thread_counts(dtype):
    n = (1 << 20) + 5
    p0, grads = params((n,), dtype, seed=6)
    runs = []
    for nt in (1, 2, 3):
        p_s, b_s = p0.copy(), np.zeros_like(p0)
        p_a, s_a = p0.copy(), np.zeros_like(p0)
        p_r, sq_r, b_r = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        p_m, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for step, g in enumerate(grads, start=1):
            upd.sgd_step(p_s, g, b_s, 0.1, 0.9, 0.0, True, 1e-4, step == 1, nt)
            upd.adagrad_step(p_a, g, s_a, 0.01, 1e-10, 1e-4, nt)
            upd.rmsprop_step(p_r, g, sq_r, b_r, 0.01, 0.99, 1e-8, 0.9, 1e-4, nt)
            upd.adam_step(p_m, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 1e-2, step, True, nt)
        runs.append((p_s, b_s, p_a, s_a, p_r, sq_r, b_r, p_m, m, v))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_gradient_propagates_elementwise(dtype):
    p0, grads = params((40,), dtype, seed=7)
    g = grads[0].copy()
    g[5] = np.nan
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    upd.adam_step(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, False, 1)
    assert np.isnan(p[5]) and np.isnan(m[5]) and np.isnan(v[5])
    assert np.all(np.isfinite(np.delete(p, 5)))
