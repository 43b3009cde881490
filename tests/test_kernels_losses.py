"""Kernel-level parity: compiled `_losses` against `ref.losses`.

Tolerances: rtol 1e-5 (float32) / 1e-12 (float64) on the loss; gradients the same with an
absolute floor of that factor times the largest |gradient| (entries near zero, e.g.
softmax probabilities of far-off classes, only have absolute accuracy). The reference
forms per-element terms in the array dtype before a float64 mean; the kernels form them
in the array dtype too (softmax CE: the per-row loss in double), so float32 losses agree
to ~1e-7.
"""
import numpy as np
import pytest

from fastnn.kernels import ref

losses = pytest.importorskip("fastnn.kernels._losses")

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
SHAPES_2D = [(1, 1), (1, 37), (50, 1), (7, 13), (4096, 1024)]
SHAPES_ANY = [(1,), (1, 1), (1, 37), (50, 1), (7, 13), (999,), (4096, 1024), (100003,)]


def close(actual, expected, dtype):
    tol = TOL[dtype]
    scale = float(np.max(np.abs(expected))) if np.size(expected) else 0.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def logits_labels(shape, dtype, seed=0, scale=3.0):
    r = np.random.default_rng(seed)
    z = (r.standard_normal(shape) * scale).astype(dtype)
    y = r.integers(0, shape[1], shape[0]).astype(np.int64)
    return z, y


def run(fn_name, mod, *args, nthreads=1):
    grad = np.empty_like(args[0])
    loss = getattr(mod, fn_name)(*args, grad, nthreads) if mod is losses \
        else getattr(mod, fn_name)(*args, grad)
    assert isinstance(loss, float)
    return loss, grad


# ---------------------------------------------------------------- parity -----------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES_2D)
def test_softmax_cross_entropy(shape, dtype):
    z, y = logits_labels(shape, dtype)
    l_ref, g_ref = run("softmax_cross_entropy", ref, z, y)
    l_cy, g_cy = run("softmax_cross_entropy", losses, z, y, nthreads=2)
    np.testing.assert_allclose(l_cy, l_ref, rtol=TOL[dtype])
    close(g_cy, g_ref, dtype)
    np.testing.assert_allclose(g_cy.sum(axis=1), 0.0, atol=10 * TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES_2D)
@pytest.mark.parametrize("margin", [1.0, 0.25, 0.0, -0.5])
def test_multiclass_hinge(shape, dtype, margin):
    z, y = logits_labels(shape, dtype, seed=1, scale=0.7)
    l_ref, g_ref = run("multiclass_hinge", ref, z, y, margin)
    l_cy, g_cy = run("multiclass_hinge", losses, z, y, margin, nthreads=2)
    np.testing.assert_allclose(l_cy, l_ref, rtol=TOL[dtype], atol=TOL[dtype])
    # the gradient takes only the values 0, 1/N, -k/N: bit-identical
    np.testing.assert_array_equal(g_cy, g_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES_ANY)
def test_bce_with_logits(shape, dtype):
    r = np.random.default_rng(2)
    x = (r.standard_normal(shape) * 4).astype(dtype)
    t = r.random(shape).astype(dtype)
    t[t > 0.7] = 1.0
    t[t < 0.2] = 0.0
    l_ref, g_ref = run("bce_with_logits", ref, x, t)
    l_cy, g_cy = run("bce_with_logits", losses, x, t, nthreads=2)
    np.testing.assert_allclose(l_cy, l_ref, rtol=TOL[dtype])
    close(g_cy, g_ref, dtype)
    assert g_cy.shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES_ANY)
def test_mse(shape, dtype):
    r = np.random.default_rng(3)
    p = r.standard_normal(shape).astype(dtype)
    t = r.standard_normal(shape).astype(dtype)
    l_ref, g_ref = run("mse", ref, p, t)
    l_cy, g_cy = run("mse", losses, p, t, nthreads=2)
    np.testing.assert_allclose(l_cy, l_ref, rtol=TOL[dtype])
    close(g_cy, g_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_untouched_and_read_only_ok(dtype):
    z, y = logits_labels((9, 4), dtype, seed=4)
    t = np.abs(z) / (1 + np.abs(z))
    for a in (z, y, t):
        a.setflags(write=False)
    z0 = z.copy()
    run("softmax_cross_entropy", losses, z, y)
    run("multiclass_hinge", losses, z, y, 1.0)
    run("bce_with_logits", losses, z, t)
    run("mse", losses, z, t)
    np.testing.assert_array_equal(z, z0)


# ---------------------------------------------------------------- stability --------

@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_ce_extreme_logits(dtype):
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0],
                  [1000.0, 1000.0, -1000.0], [-1000.0, 1000.0, 999.0]], dtype)
    y = np.array([1, 0, 2, 2], np.int64)
    l_cy, g_cy = run("softmax_cross_entropy", losses, z, y)
    assert np.isfinite(l_cy) and np.all(np.isfinite(g_cy))
    l_ref, g_ref = run("softmax_cross_entropy", ref, z, y)
    np.testing.assert_allclose(l_cy, l_ref, rtol=TOL[dtype])
    close(g_cy, g_ref, dtype)
    # row 0: loss 2000 for the label at -1000; row 1: log 3
    np.testing.assert_allclose(l_cy, (2000.0 + np.log(3) + (2000 + np.log(2)) + 1.0
                                      + np.log1p(np.exp(-1.0))) / 4, rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_extreme_logits(dtype):
    x = np.array([1000.0, -1000.0, 1000.0, -1000.0, 0.0, 88.0, -88.0, 710.0, -710.0], dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 1.0, 0.0, 0.3, 0.7], dtype)
    l_cy, g_cy = run("bce_with_logits", losses, x, t)
    assert np.isfinite(l_cy) and np.all(np.isfinite(g_cy))
    l_ref, g_ref = run("bce_with_logits", ref, x, t)
    np.testing.assert_allclose(l_cy, l_ref, rtol=TOL[dtype])
    close(g_cy, g_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_wide_logit_range(dtype):
    """The kernels' own vectorised exp / log1p over every regime of the logit, including
    where exp(-|x|) underflows (the kernel flushes it to 0 below ~-88 / -709)."""
    x = np.linspace(-120.0, 120.0, 200_001).astype(dtype)
    x = np.concatenate([x, np.array([-800.0, -90.0, -87.0, -1e-30, 0.0, 1e-30, 90.0, 800.0],
                                    dtype)])
    t = np.random.default_rng(9).random(x.shape).astype(dtype)
    l_ref, g_ref = run("bce_with_logits", ref, x, t)
    l_cy, g_cy = run("bce_with_logits", losses, x, t)
    np.testing.assert_allclose(l_cy, l_ref, rtol=TOL[dtype])
    close(g_cy, g_ref, dtype)
    # per-element terms against float64 libm (loss of single elements)
    for xi, ti in [(1e-3, 0.0), (-30.0, 0.0), (-80.0, 1.0), (0.5, 0.25)]:
        xa, ta = np.array([xi], dtype), np.array([ti], dtype)
        exact = max(xi, 0.0) - xi * ti + np.log1p(np.exp(-abs(xi)))
        np.testing.assert_allclose(run("bce_with_logits", losses, xa, ta)[0], exact,
                                   rtol=TOL[dtype], atol=1e-300)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_wide_logit_range(dtype):
    r = np.random.default_rng(10)
    z = (r.standard_normal((64, 257)) * 40).astype(dtype)
    z[3, 7] = -np.inf   # a masked class: probability exactly 0
    y = r.integers(0, 257, 64)
    y[3] = 0
    l_ref, g_ref = run("softmax_cross_entropy", ref, z, y)
    l_cy, g_cy = run("softmax_cross_entropy", losses, z, y)
    np.testing.assert_allclose(l_cy, l_ref, rtol=TOL[dtype])
    close(g_cy, g_ref, dtype)
    assert g_cy[3, 7] == 0.0


# ---------------------------------------------------------------- NaN --------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("col", [0, 3, 6])
def test_nan_logit_gives_nan_loss(dtype, col):
    z, y = logits_labels((5, 7), dtype, seed=5)
    z[2, col] = np.nan
    loss, g = run("softmax_cross_entropy", losses, z, y)
    assert np.isnan(loss)
    assert np.all(np.isnan(g[2]))
    assert np.all(np.isfinite(np.delete(g, 2, axis=0)))
    t = np.full(z.shape, 0.5, dtype)
    loss, g = run("bce_with_logits", losses, z, t)
    assert np.isnan(loss) and np.isnan(g[2, col])
    assert np.sum(np.isnan(g)) == 1
    loss, g = run("mse", losses, z, t)
    assert np.isnan(loss) and np.sum(np.isnan(g)) == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_hinge_nan_propagates_like_reference(dtype):
    """A NaN score makes the hinge loss NaN (never silently zero), on both twins."""
    z, y = logits_labels((5, 7), dtype, seed=6, scale=0.5)
    z[1, (y[1] + 1) % 7] = np.nan
    l_ref, g_ref = run("multiclass_hinge", ref, z, y, 1.0)
    l_cy, g_cy = run("multiclass_hinge", losses, z, y, 1.0)
    assert np.isnan(l_ref) and np.isnan(l_cy)
    np.testing.assert_array_equal(g_cy, g_ref)


# ---------------------------------------------------------------- determinism ------

@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_across_thread_counts(dtype):
    z, y = logits_labels((4096, 1024), dtype, seed=7)
    r = np.random.default_rng(8)
    t = r.random(z.shape).astype(dtype)
    flat_x = r.standard_normal(1_000_003).astype(dtype)
    flat_t = r.random(1_000_003).astype(dtype)
    cases = [("softmax_cross_entropy", (z, y)), ("multiclass_hinge", (z, y, 1.0)),
             ("bce_with_logits", (z, t)), ("mse", (z, t)),
             ("bce_with_logits", (flat_x, flat_t)), ("mse", (flat_x, flat_t))]
    for name, args in cases:
        base_loss, base_grad = run(name, losses, *args, nthreads=1)
        for nt in (2, 3):
            loss, grad = run(name, losses, *args, nthreads=nt)
            assert loss == base_loss, name
            np.testing.assert_array_equal(grad, base_grad)


@pytest.mark.parametrize("mod", [ref, losses], ids=["numpy", "cython"])
def test_labels_in_range(mod):
    c = 5
    assert mod.labels_in_range(np.zeros(0, np.int64), c)
    assert mod.labels_in_range(np.array([0, 4, 2, 4, 0], np.int64), c)
    for bad in ([5], [-1], [0, 1, 2, 3, 4, 5], [np.iinfo(np.int64).min, 0],
                [np.iinfo(np.int64).max], [0] * 1000 + [-3] + [0] * 17):
        assert not mod.labels_in_range(np.array(bad, np.int64), c)
    big = np.random.default_rng(0).integers(0, 1000, 100003)
    assert mod.labels_in_range(big, 1000) and not mod.labels_in_range(big, 999)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_counts_argmax_hits(dtype):
    """count=True also returns how many rows have their label as argmax, NumPy's argmax
    (first maximum; the first NaN of a row wins); loss and gradient are unchanged."""
    z, y = logits_labels((300, 7), dtype, seed=3)
    z[0, :] = 1.0                                 # all tied: argmax 0
    y[0] = 0
    z[1, :] = 1.0
    y[1] = 3                                      # tied, but not the first
    z[2, 5] = np.nan
    y[2] = 5                                      # NaN row: argmax is the NaN
    z[3, 2] = np.nan
    y[3] = 6
    want = int(np.count_nonzero(np.argmax(z, axis=1) == y))
    for mod in (ref, losses):
        g1, g2 = np.empty_like(z), np.empty_like(z)
        args = (z, y, g1, 2) if mod is losses else (z, y, g1)
        loss, hits = mod.softmax_cross_entropy(*args, count=True)
        assert hits == want and isinstance(hits, int)
        plain = mod.softmax_cross_entropy(z, y, g2, *((2,) if mod is losses else ()))
        assert np.isnan(loss) and np.isnan(plain)
        np.testing.assert_array_equal(g1, g2)
    z[2:4] = 0.0
    for mod in (ref, losses):
        g = np.empty_like(z)
        loss, hits = mod.softmax_cross_entropy(z, y, g, count=True)
        assert hits == int(np.count_nonzero(np.argmax(z, axis=1) == y))
        assert loss == mod.softmax_cross_entropy(z, y, np.empty_like(z))
