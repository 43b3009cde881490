"""fastnn.ops: backend parity, float64 gradient checks, stability, NaN, bad input."""
import numpy as np
import pytest

import fastnn
from fastnn import ops
from conftest import BACKENDS, tol

ACTS = [("sigmoid", {}), ("tanh", {}), ("relu", {}), ("leaky_relu", {"negative_slope": 0.1}),
        ("elu", {"alpha": 0.7}), ("gelu", {}), ("gelu", {"approximate": "tanh"}),
        ("silu", {}), ("swish", {"beta": 1.7})]
ACT_IDS = ["%s%s" % (n, "-" + "-".join(map(str, kw.values())) if kw else "") for n, kw in ACTS]
SHAPES = [(1, 1), (1, 17), (9, 1), (7, 13), (64, 33)]


def rand(shape, dtype, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def on_both(fn):
    """Run fn() on every backend; return the list of results."""
    out = []
    for name in BACKENDS:
        with fastnn.use_backend(name):
            out.append(fn())
    return out


def assert_parity(results, dtype):
    rtol, atol = tol(dtype)
    ref = results[-1]                      # numpy backend runs last
    for res in results[:-1]:
        for a, b in zip(_flat(res), _flat(ref)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _flat(res):
    if isinstance(res, (tuple, list)):
        for r in res:
            yield from _flat(r)
    elif res is not None:
        yield np.asarray(res)


def numgrad(f, x, h=1e-6):
    """Central differences of the scalar f() with respect to x (modified in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return g


def relerr(a, b):
    """Max abs difference relative to the largest magnitude (robust near zero entries)."""
    return np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-12)


# ---------------------------------------------------------------- parity

@pytest.mark.parametrize("shape", SHAPES + [(4096, 1024)])
@pytest.mark.parametrize("name,kw", ACTS, ids=ACT_IDS)
def test_activation_parity(name, kw, shape, dtype):
    if shape == (4096, 1024) and np.dtype(dtype) == np.float64 and name not in ("relu", "gelu"):
        pytest.skip("large float64 case covered by relu/gelu")
    x = rand(shape, dtype, scale=3)
    dout = rand(shape, dtype, seed=1)

    def run():
        y, cache = ops.activation_forward(x, name, **kw)
        return y, ops.activation_backward(dout, cache)
    assert_parity(on_both(run), dtype)


@pytest.mark.parametrize("n,i,o", [(1, 1, 1), (1, 5, 3), (6, 1, 4), (7, 13, 5), (9, 4, 1),
                                   (128, 784, 512)])
@pytest.mark.parametrize("act", [None, "relu", "tanh", "gelu"])
def test_dense_parity(n, i, o, act, dtype):
    x, w, b = rand((n, i), dtype), rand((i, o), dtype, 1), rand((o,), dtype, 2)
    dout = rand((n, o), dtype, 3)

    def run():
        out, cache = ops.dense_forward(x, w, b, activation=act)
        return (out,) + ops.dense_backward(dout, cache)
    res = on_both(run)
    if np.dtype(dtype) == np.float32:   # GEMM summation order differs between BLAS calls
        for a, b_ in zip(_flat(res[0]), _flat(res[-1])):
            np.testing.assert_allclose(a, b_, rtol=1e-4, atol=1e-4 * np.sqrt(max(i, n)))
    else:
        assert_parity(res, dtype)


def test_dense_without_bias_and_without_dx(backend):
    x, w = rand((5, 4), np.float64), rand((4, 3), np.float64, 1)
    out, cache = ops.dense_forward(x, w, None)
    np.testing.assert_allclose(out, x @ w, rtol=1e-12)
    dx, dw, db = ops.dense_backward(np.ones_like(out), cache, need_dx=False)
    assert dx is None and db is None
    np.testing.assert_allclose(dw, x.T @ np.ones_like(out), rtol=1e-12)


@pytest.mark.parametrize("shape", [(2, 1), (2, 17), (9, 1), (7, 13), (256, 1024), (4096, 1024)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_parity(shape, training, dtype):
    x = rand(shape, dtype, scale=2) + 3
    gamma, beta = rand(shape[1:], dtype, 1), rand(shape[1:], dtype, 2)
    dout = rand(shape, dtype, 3)

    def run():
        rm, rv = np.full(shape[1], 0.5, dtype), np.full(shape[1], 2.0, dtype)
        out, cache = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=training,
                                           momentum=0.2, eps=1e-3)
        return (out, rm, rv) + ops.batchnorm_backward(dout, cache)
    res = on_both(run)
    rtol, atol = tol(dtype)
    for a, b in zip(_flat(res[0]), _flat(res[-1])):   # reductions over 4096 rows
        np.testing.assert_allclose(a, b, rtol=rtol * 10, atol=atol * 100)


def test_batchnorm_running_stats_follow_pytorch(backend):
    x = rand((8, 3), np.float64) * 2 + 1
    rm, rv = np.zeros(3), np.ones(3)
    ops.batchnorm_forward(x, np.ones(3), np.zeros(3), rm, rv, momentum=0.1)
    np.testing.assert_allclose(rm, 0.1 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(0, ddof=1), rtol=1e-12)
    out, _ = ops.batchnorm_forward(x, np.ones(3), np.zeros(3), rm, rv, training=False)
    np.testing.assert_allclose(out, (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-12)


def test_batchnorm_variance_accurate_with_large_mean(backend):
    x = (rand((512, 8), np.float32) + 1e4).astype(np.float32)
    out, _ = ops.batchnorm_forward(x, np.ones(8, np.float32), np.zeros(8, np.float32), None, None)
    xd = x.astype(np.float64)
    ref = (xd - xd.mean(0)) / np.sqrt(xd.var(0) + 1e-5)
    np.testing.assert_allclose(out, ref, atol=2e-3)


@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (5, 1), (7, 13), (4096, 1024)])
def test_loss_parity(shape, dtype):
    logits = rand(shape, dtype, scale=4)
    labels = np.random.default_rng(1).integers(0, shape[1], shape[0])
    t01 = np.random.default_rng(2).random(shape).astype(dtype)
    pred2 = rand(shape, dtype, 3)

    def run():
        return (ops.softmax_cross_entropy(logits, labels), ops.multiclass_hinge(logits, labels),
                ops.multiclass_hinge(logits, labels, margin=0.5),
                ops.bce_with_logits(logits, t01), ops.mse(logits, pred2))
    res = on_both(run)
    rtol, atol = tol(dtype)
    for a, b in zip(_flat(res[0]), _flat(res[-1])):
        np.testing.assert_allclose(a, b, rtol=rtol * 10, atol=atol)


def test_prelu_parity(dtype):
    x = rand((33, 7), dtype)
    dout = rand((33, 7), dtype, 1)
    for alpha in (np.array([0.25], dtype), rand((7,), dtype, 2)):
        def run():
            y, cache = ops.prelu_forward(x, alpha)
            return (y,) + ops.prelu_backward(dout, cache)
        assert_parity(on_both(run), dtype)


@pytest.mark.parametrize("pieces", [1, 2, 3, 5])
def test_maxout_parity_ties_and_nan(dtype, pieces):
    """Both backends give the same max, the same winning piece (the first of tied
    maxima; a NaN wins and propagates) and the same scattered gradient."""
    z = rand((37, 4 * pieces), dtype)
    z[0, :pieces] = 1.5                                  # all pieces tied
    z[1, pieces - 1] = np.nan                            # a NaN in the last piece
    z[2, 0] = np.inf
    dout = rand((37, 4), dtype, 1)

    def run():
        y, cache = ops.maxout_forward(z, pieces)
        return y, cache.idx.copy(), ops.maxout_backward(dout, cache)
    res = on_both(run)
    for y, idx, dz in res:
        assert np.isnan(y[1, 0]) and idx[1, 0] == pieces - 1 and idx[0, 0] == 0
        np.testing.assert_array_equal(y, res[-1][0])
        np.testing.assert_array_equal(idx, res[-1][1])
        np.testing.assert_array_equal(dz, res[-1][2])
        assert np.count_nonzero(dz) == np.count_nonzero(dout)


def test_maxout_threads_bit_identical():
    z = rand((300, 2 * 512), np.float32)
    dout = rand((300, 512), np.float32, 1)
    res, before = [], fastnn.get_num_threads()
    try:
        with fastnn.use_backend(BACKENDS[0]):
            for n in (1, 2):
                fastnn.set_num_threads(n)
                y, cache = ops.maxout_forward(z, 2)
                res.append((y.copy(), ops.maxout_backward(dout, cache).copy()))
    finally:
        fastnn.set_num_threads(before)
    for a, b in zip(res[0], res[1]):
        np.testing.assert_array_equal(a, b)


def test_maxout_bad_input(backend):
    with pytest.raises(ValueError, match="maxout_forward: z must have a multiple of"):
        ops.maxout_forward(np.ones((3, 5), np.float32), 2)
    for bad in (0, -1):       # the right type, a bad value
        with pytest.raises(ValueError, match="pieces must be an int >= 1"):
            ops.maxout_forward(np.ones((3, 4), np.float32), bad)
    for bad in (2.0, True, None):        # the wrong type
        with pytest.raises(TypeError, match="pieces must be an int >= 1"):
            ops.maxout_forward(np.ones((3, 4), np.float32), bad)
    with pytest.raises(TypeError):
        ops.maxout_forward(np.ones((3, 4), np.int64), 2)
    _, cache = ops.maxout_forward(np.ones((3, 4), np.float32), 2)
    with pytest.raises(ValueError, match="maxout_backward: dout must have shape"):
        ops.maxout_backward(np.ones((3, 3), np.float32), cache)
    with pytest.raises(TypeError):
        ops.maxout_backward(np.ones((3, 2), np.float32), ("not", "a", "cache"))


# ---------------------------------------------------------------- gradient checks (float64)

@pytest.mark.parametrize("name,kw", ACTS, ids=ACT_IDS)
def test_activation_gradcheck(name, kw, backend):
    x = rand((4, 5), np.float64, scale=2)
    x[np.abs(x) < 1e-3] = 0.5          # keep away from the relu kink
    dout = rand((4, 5), np.float64, 1)
    _, cache = ops.activation_forward(x, name, **kw)
    dx = ops.activation_backward(dout, cache)
    num = numgrad(lambda: float(np.sum(ops.activation_forward(x, name, **kw)[0] * dout)), x)
    assert relerr(dx, num) < 1e-7


@pytest.mark.parametrize("act", [None, "sigmoid", "elu", "gelu", "swish"])
def test_dense_gradcheck(act, backend):
    x, w, b = rand((3, 4), np.float64), rand((4, 5), np.float64, 1), rand((5,), np.float64, 2)
    dout = rand((3, 5), np.float64, 3)
    f = lambda: float(np.sum(ops.dense_forward(x, w, b, activation=act)[0] * dout))
    dx, dw, db = ops.dense_backward(dout, ops.dense_forward(x, w, b, activation=act)[1])
    for analytic, var in ((dx, x), (dw, w), (db, b)):
        assert relerr(analytic, numgrad(f, var)) < 1e-7


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradcheck(training, backend):
    x = rand((6, 4), np.float64) * 3 + 1
    gamma, beta = rand((4,), np.float64, 1), rand((4,), np.float64, 2)
    rm, rv = rand((4,), np.float64, 4), np.abs(rand((4,), np.float64, 5)) + 0.5
    dout = rand((6, 4), np.float64, 3)

    def f():
        out, _ = ops.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), training=training)
        return float(np.sum(out * dout))
    _, cache = ops.batchnorm_forward(x, gamma, beta, rm.copy(), rv.copy(), training=training)
    grads = ops.batchnorm_backward(dout, cache)
    for analytic, var in zip(grads, (x, gamma, beta)):
        assert relerr(analytic, numgrad(f, var)) < 1e-7


@pytest.mark.parametrize("loss", ["ce", "hinge", "bce", "mse"])
def test_loss_gradcheck(loss, backend):
    z = rand((5, 4), np.float64, scale=2)
    y = np.array([0, 3, 1, 2, 3])
    t = np.random.default_rng(1).random((5, 4))
    call = {"ce": lambda: ops.softmax_cross_entropy(z, y),
            "hinge": lambda: ops.multiclass_hinge(z, y),
            "bce": lambda: ops.bce_with_logits(z, t),
            "mse": lambda: ops.mse(z, t)}[loss]
    _, grad = call()
    grad = grad.copy()
    assert relerr(grad, numgrad(lambda: call()[0], z)) < 1e-7


def test_prelu_gradcheck(backend):
    x = rand((5, 3), np.float64)
    alpha = np.array([0.2, -0.1, 0.4])
    dout = rand((5, 3), np.float64, 1)
    f = lambda: float(np.sum(ops.prelu_forward(x, alpha)[0] * dout))
    dx, dalpha = ops.prelu_backward(dout, ops.prelu_forward(x, alpha)[1])
    assert relerr(dx, numgrad(f, x)) < 1e-7
    assert relerr(dalpha, numgrad(f, alpha)) < 1e-7


# ---------------------------------------------------------------- stability and NaN

@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_extreme_logits_are_finite(backend, dt):
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]], dt)
    loss, grad = ops.softmax_cross_entropy(z, [1, 2])
    assert np.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(1000.0, rel=1e-6)     # row 0: -log softmax = 2000 / 2 rows
    loss, grad = ops.bce_with_logits(z, np.array([[0, 1, 0.5], [1, 0, 1]], dt))
    assert np.isfinite(loss) and np.isfinite(grad).all()


@pytest.mark.parametrize("name,kw", ACTS, ids=ACT_IDS)
def test_activations_finite_at_extremes(name, kw, backend, dtype):
    x = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], dtype)
    y, cache = ops.activation_forward(x, name, **kw)
    dx = ops.activation_backward(np.ones_like(x), cache)
    assert np.isfinite(y).all() and np.isfinite(dx).all()


@pytest.mark.parametrize("name,kw", ACTS, ids=ACT_IDS)
def test_nan_propagates_through_activations(name, kw, backend):
    x = np.array([[np.nan, 1.0, -1.0]], np.float32)
    y, _ = ops.activation_forward(x, name, **kw)
    assert np.isnan(y[0, 0]) and np.isfinite(y[0, 1:]).all()


def test_nan_propagates_through_dense_batchnorm_and_losses(backend):
    x = rand((4, 3), np.float64)
    x[1, 2] = np.nan
    out, _ = ops.dense_forward(x, np.eye(3), None, activation="relu")
    assert np.isnan(out[1]).any() and np.isfinite(out[0]).all()
    out, _ = ops.batchnorm_forward(x, np.ones(3), np.zeros(3), None, None)
    assert np.isnan(out[:, 2]).all() and np.isfinite(out[:, :2]).all()
    loss, _ = ops.softmax_cross_entropy(x, [0, 1, 2, 0])
    assert np.isnan(loss)
    assert np.isnan(ops.mse(x, np.zeros_like(x))[0])


# ---------------------------------------------------------------- bad input

def test_dtype_is_preserved(backend, dtype):
    x = rand((3, 4), dtype)
    assert ops.activation_forward(x, "relu")[0].dtype == dtype
    assert ops.dense_forward(x, rand((4, 2), dtype), None)[0].dtype == dtype


@pytest.mark.parametrize("bad", [np.arange(6).reshape(2, 3), np.ones((2, 3), bool),
                                 np.ones((2, 3), np.float16), np.ones((2, 3), complex),
                                 np.array([[object()] * 3] * 2)])
def test_non_float_inputs_raise_typeerror(bad, backend):
    with pytest.raises(TypeError, match="activation_forward"):
        ops.activation_forward(bad, "relu")
    with pytest.raises(TypeError, match="dense_forward"):
        ops.dense_forward(bad, np.ones((3, 2)), None)


def test_mixed_dtypes_raise(backend):
    with pytest.raises(TypeError, match="dense_forward: w must have dtype float32"):
        ops.dense_forward(np.ones((2, 3), np.float32), np.ones((3, 2)), None)


def test_shape_errors(backend):
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="dense_forward: w must have shape"):
        ops.dense_forward(x, np.ones((2, 5)), None)
    with pytest.raises(ValueError, match="dense_forward: b must have shape"):
        ops.dense_forward(x, np.ones((3, 5)), np.ones(4))
    with pytest.raises(ValueError, match="must be 2-D"):
        ops.dense_forward(np.ones(3), np.ones((3, 5)), None)
    with pytest.raises(ValueError, match="must not be empty"):
        ops.dense_forward(np.ones((0, 3)), np.ones((3, 5)), None)
    out, cache = ops.dense_forward(x, np.ones((3, 5)), None)
    with pytest.raises(ValueError, match="dense_backward: dout must have shape"):
        ops.dense_backward(np.ones((4, 4)), cache)
    with pytest.raises(ValueError, match="gamma must have shape"):
        ops.batchnorm_forward(x, np.ones(2), np.zeros(3), None, None)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ops.batchnorm_forward(np.ones((1, 3)), np.ones(3), np.zeros(3), None, None)
    with pytest.raises(ValueError, match="required in eval mode"):
        ops.batchnorm_forward(x, np.ones(3), np.zeros(3), None, None, training=False)
    with pytest.raises(ValueError, match="alpha must have shape"):
        ops.prelu_forward(x, np.ones(2))
    with pytest.raises(ValueError, match="mse: target must have shape"):
        ops.mse(x, np.ones((4, 2)))


@pytest.mark.parametrize("labels,exc", [([0, 1, 2, 3], ValueError), ([-1, 0, 1, 2], ValueError),
                                        ([0, 1, 2], ValueError), ([0.0, 1.0, 2.0, 0.0], TypeError),
                                        ([[0, 1, 2, 0]], ValueError), ([True] * 4, TypeError)])
@pytest.mark.parametrize("loss", [ops.softmax_cross_entropy, ops.multiclass_hinge])
def test_bad_labels_are_never_used_as_indices(loss, labels, exc, backend):
    with pytest.raises(exc, match=loss.__name__):
        loss(np.ones((4, 3)), np.array(labels))


def test_unknown_activation_and_keywords(backend):
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        ops.activation_forward(np.ones((2, 2)), "relu6")
    with pytest.raises(TypeError, match="unexpected keyword"):
        ops.activation_forward(np.ones((2, 2)), "relu", alpha=2.0)
    with pytest.raises(ValueError, match="approximate"):
        ops.activation_forward(np.ones((2, 2)), "gelu", approximate="fast")


def test_non_contiguous_readonly_and_fortran_inputs_work(backend):
    base = rand((8, 6), np.float64)
    ro = base.copy()
    ro.flags.writeable = False
    for x in (base[::2], np.asfortranarray(base), ro):
        y, _ = ops.activation_forward(x, "tanh")
        np.testing.assert_allclose(y, np.tanh(x), rtol=1e-12)
        assert y.flags.c_contiguous
    w = np.asfortranarray(rand((6, 3), np.float64, 1))
    np.testing.assert_allclose(ops.dense_forward(base, w, None)[0], base @ w, rtol=1e-12)
