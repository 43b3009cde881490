"""fastnn.ops convolution and 2-d batch norm on both backends: PyTorch conformance
(forward, every gradient, running statistics), float64 gradient checks, backend parity,
bit-identical results for 1 and 2 threads, hypothesis properties, bad input."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import ops
from fastnn.core.workspace import Workspace
from conftest import BACKENDS
from test_ops import numgrad, on_both, relerr

torch = pytest.importorskip("torch")
F = torch.nn.functional
torch.set_num_threads(1)

#: fused activations: fastnn name and keywords -> the same function in torch
ACTS = {
    None: (None, {}, lambda z: z),
    "relu": ("relu", {}, F.relu),
    "tanh": ("tanh", {}, torch.tanh),
    "sigmoid": ("sigmoid", {}, torch.sigmoid),
    "leaky_relu": ("leaky_relu", {"negative_slope": 0.2}, lambda z: F.leaky_relu(z, 0.2)),
    "elu": ("elu", {"alpha": 0.7}, lambda z: F.elu(z, 0.7)),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}, lambda z: F.gelu(z, approximate="tanh")),
    "silu": ("silu", {}, F.silu),
    "swish": ("swish", {"beta": 1.5}, lambda z: z * torch.sigmoid(1.5 * z)),
}

# (x shape, w shape, stride, padding, dilation, bias, activation)
CONV_CASES = [
    ((2, 3, 5, 5), (4, 3, 1, 1), 1, 0, 1, True, None),                  # 1x1
    ((2, 3, 8, 8), (5, 3, 3, 3), 1, 1, 1, True, "relu"),                # 3x3 same
    ((3, 2, 11, 9), (4, 2, 5, 5), 2, 0, 1, False, None),                # 5x5 stride 2
    ((2, 3, 9, 10), (4, 3, 3, 2), (2, 1), (1, 0), (1, 2), True, "tanh"),  # non-square
    ((2, 2, 9, 9), (3, 2, 3, 3), 1, 2, 2, True, "gelu_tanh"),           # dilation 2
    ((2, 2, 6, 7), (3, 2, 3, 3), 2, (0, 2), 1, True, "elu"),            # asymmetric pad
    ((1, 1, 7, 5), (3, 1, 3, 3), 1, 1, 1, True, "leaky_relu"),          # batch 1, odd
    ((1, 3, 4, 4), (2, 3, 4, 4), 1, 0, 1, True, "sigmoid"),             # one output
    ((2, 2, 5, 5), (2, 2, 5, 5), 3, 2, 1, False, "swish"),              # pad 2 stride 3
    ((3, 4, 6, 6), (6, 4, 3, 3), 2, 1, 2, True, "silu"),                # stride + dil
    ((64, 1, 28, 28), (6, 1, 5, 5), 1, 0, 1, True, "relu"),             # LeNet conv1
    ((16, 6, 12, 12), (16, 6, 5, 5), 1, 0, 1, True, "relu"),            # LeNet conv2
    ((4, 32, 16, 16), (32, 32, 3, 3), 1, 1, 1, True, None),             # wide layer
]
CONV_IDS = ["x%s-w%s-s%s-p%s-d%s-%s-%s" % ("x".join(map(str, c[0])), "x".join(map(str, c[1])),
                                          c[2], c[3], c[4], "b" if c[5] else "nob", c[6])
            for c in CONV_CASES]


def rand(shape, dtype=np.float64, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def rtol_for(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-4


def assert_close(actual, expected, dtype, what=""):
    """Relative agreement with a floor scaled to the reference's magnitude (sums that
    cancel to near zero have only an error relative to what was summed)."""
    expected = expected.detach().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    assert actual.shape == expected.shape, what
    rtol = rtol_for(dtype)
    scale = max(float(np.nanmax(np.abs(expected))), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def T(a):
    """A float64 torch leaf (the reference runs in float64 for both dtypes)."""
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


def with_threads(n, fn):
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(n)
    try:
        return fn()
    finally:
        fastnn.set_num_threads(before)


def conv_data(xs, ws, bias, dtype, seed=0):
    x = rand(xs, dtype, seed)
    w = rand(ws, dtype, seed + 1, scale=1 / np.sqrt(np.prod(ws[1:])))
    b = rand(ws[:1], dtype, seed + 2) if bias else None
    return x, w, b


def conv_run(x, w, b, dout, stride, padding, dilation, act, need_dx=True, ws=None):
    """(out, dx, dw, db) of one forward + backward, copied out of any workspace."""
    name, kw = ACTS[act][:2]
    out, cache = ops.conv2d_forward(x, w, b, stride, padding, dilation, activation=name,
                                    activation_kw=kw or None, workspace=ws)
    out = out.copy()
    grads = ops.conv2d_backward(dout, cache, workspace=ws, need_dx=need_dx)
    return (out,) + tuple(None if g is None else g.copy() for g in grads)


# -------------------------------------------------------------------- torch conformance
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,bias,act", CONV_CASES, ids=CONV_IDS)
def test_conv2d_matches_torch(xs, ws, stride, padding, dilation, bias, act, backend, dtype):
    x, w, b = conv_data(xs, ws, bias, dtype)
    xt, wt = T(x), T(w)
    bt = T(b) if bias else None
    ref = ACTS[act][2](F.conv2d(xt, wt, bt, stride=stride, padding=padding,
                                dilation=dilation))
    dout = rand(ref.shape, dtype, 7)
    ref.backward(torch.tensor(dout.astype(np.float64)))
    out, dx, dw, db = conv_run(x, w, b, dout, stride, padding, dilation, act)
    assert out.dtype == dx.dtype == dw.dtype == dtype
    assert_close(out, ref, dtype, "out")
    assert_close(dx, xt.grad, dtype, "dx")
    assert_close(dw, wt.grad, dtype, "dw")
    if bias:
        assert_close(db, bt.grad, dtype, "db")
    else:
        assert db is None


def test_conv2d_without_dx(backend):
    x, w, b = conv_data((3, 2, 7, 7), (4, 2, 3, 3), True, np.float64)
    dout = rand((3, 4, 5, 5), seed=3)
    full = conv_run(x, w, b, dout, 1, 0, 1, "relu")
    out, dx, dw, db = conv_run(x, w, b, dout, 1, 0, 1, "relu", need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw, full[2])
    np.testing.assert_array_equal(db, full[3])


def test_conv2d_reuses_its_workspace(backend):
    """A warm call through one Workspace returns the same arrays and allocates nothing."""
    x, w, b = conv_data((4, 3, 9, 9), (5, 3, 3, 3), True, np.float32)
    ws = Workspace()
    out1, cache = ops.conv2d_forward(x, w, b, padding=1, activation="relu", workspace=ws)
    grads1 = ops.conv2d_backward(np.ones_like(out1), cache, workspace=ws)
    held = ws.nbytes()
    out2, cache = ops.conv2d_forward(x, w, b, padding=1, activation="relu", workspace=ws)
    grads2 = ops.conv2d_backward(np.ones_like(out2), cache, workspace=ws)
    assert out2 is out1 and all(g2 is g1 for g1, g2 in zip(grads1, grads2))
    assert ws.nbytes() == held


# ---------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("stride,padding,dilation,act", [
    (1, 0, 1, None), (2, 1, 1, "tanh"), ((1, 2), (2, 1), (2, 1), "elu"), (1, 1, 1, "swish")])
def test_conv2d_gradcheck(stride, padding, dilation, act, backend):
    x, w, b = conv_data((2, 2, 6, 5), (3, 2, 3, 2), True, np.float64)
    name, kw = ACTS[act][:2]
    kw = kw or None
    out, cache = ops.conv2d_forward(x, w, b, stride, padding, dilation, name, kw)
    dout = rand(out.shape, seed=5)
    dx, dw, db = ops.conv2d_backward(dout, cache)

    def f():
        return float(np.sum(ops.conv2d_forward(x, w, b, stride, padding, dilation, name,
                                               kw)[0] * dout))
    for analytic, var in ((dx, x), (dw, w), (db, b)):
        assert relerr(analytic, numgrad(f, var)) < 1e-7


# ------------------------------------------------------------- parity and threads
@pytest.mark.parametrize("xs,ws,stride,padding,dilation,bias,act", CONV_CASES, ids=CONV_IDS)
def test_conv2d_backend_parity(xs, ws, stride, padding, dilation, bias, act, dtype):
    x, w, b = conv_data(xs, ws, bias, dtype, seed=11)
    name, kw = ACTS[act][:2]
    out_shape = ops.conv2d_forward(x, w, b, stride, padding, dilation)[0].shape
    dout = rand(out_shape, dtype, 12)
    res = on_both(lambda: conv_run(x, w, b, dout, stride, padding, dilation, act))
    for got in res[:-1]:
        for a, r, what in zip(got, res[-1], ("out", "dx", "dw", "db")):
            if r is not None:
                assert_close(a, r, dtype, what)


THREAD_CASES = [((8, 16, 14, 14), (16, 16, 3, 3), 1, 1, 1),
                ((64, 6, 12, 12), (16, 6, 5, 5), 1, 0, 1),
                ((2, 8, 40, 40), (8, 8, 3, 3), 2, 1, 2)]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation", THREAD_CASES)
def test_conv2d_thread_counts(xs, ws, stride, padding, dilation, backend, dtype):
    """Compiled: bit-identical for 1 and 2 threads. NumPy backend: equal to float
    tolerance only (as the README says), since NumPy's BLAS cuts its products by its
    thread count; under some OpenBLAS kernels (Haswell) the bits differ."""
    x, w, b = conv_data(xs, ws, True, dtype, seed=21)
    out_shape = ops.conv2d_forward(x, w, b, stride, padding, dilation)[0].shape
    dout = rand(out_shape, dtype, 22)
    run = lambda: conv_run(x, w, b, dout, stride, padding, dilation, "relu")
    one, two = with_threads(1, run), with_threads(2, run)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    for a, c in zip(one, two):
        if backend == "cython":
            np.testing.assert_array_equal(a, c)
        else:
            np.testing.assert_allclose(a, c, rtol=rtol, atol=rtol * float(np.abs(c).max()))


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), c=st.integers(1, 4), f=st.integers(1, 5),
       h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 4), kw=st.integers(1, 4),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
       dh=st.integers(1, 2), dw=st.integers(1, 2), bias=st.booleans(),
       act=st.sampled_from(sorted(ACTS, key=str)), dtype=st.sampled_from([np.float32, np.float64]))
def test_conv2d_property_backends_agree(n, c, f, h, w, kh, kw, sh, sw, ph, pw, dh, dw, bias,
                                        act, dtype):
    """Any geometry whose kernel fits the padded input runs on both backends with the
    same results; one that does not fit raises ValueError on both."""
    x, wt, b = conv_data((n, c, h, w), (f, c, kh, kw), bias, dtype, seed=h * 31 + w)
    geom = ((sh, sw), (ph, pw), (dh, dw))
    fits = dh * (kh - 1) < h + 2 * ph and dw * (kw - 1) < w + 2 * pw
    if not fits:
        for name in BACKENDS:
            with fastnn.use_backend(name), pytest.raises(ValueError, match="larger than"):
                ops.conv2d_forward(x, wt, b, *geom)
        return
    out_shape = ops.conv2d_forward(x, wt, b, *geom)[0].shape
    dout = rand(out_shape, dtype, 3)
    res = on_both(lambda: conv_run(x, wt, b, dout, *geom, act))
    for got in res[:-1]:
        for a, r in zip(got, res[-1]):
            if r is not None:
                assert_close(a, r, dtype)


# ---------------------------------------------------------------------- bad input
def test_conv2d_bad_input(backend):
    x, w = np.ones((2, 3, 6, 6), np.float32), np.ones((4, 3, 3, 3), np.float32)
    cases = [
        (dict(x=np.ones((3, 6, 6), np.float32)), ValueError, "x must be 4-D"),
        (dict(w=np.ones((4, 3, 3), np.float32)), ValueError, "w must be 4-D"),
        (dict(w=np.ones((4, 2, 3, 3), np.float32)), ValueError, "w must have shape .F, 3, KH, KW."),
        (dict(b=np.ones(3, np.float32)), ValueError, "b must have shape .4,."),
        (dict(x=np.ones((2, 3, 6, 6), np.int64)), TypeError, "x must be float32 or float64"),
        (dict(w=np.ones((4, 3, 3, 3))), TypeError, "w must have dtype float32"),
        (dict(w=np.ones((4, 3, 7, 3), np.float32)), ValueError, "the kernel .* is larger than the padded input"),
        (dict(dilation=3), ValueError, "the kernel .* is larger than the padded input"),
        (dict(stride=0), ValueError, "stride must be an int in .1, "),
        (dict(stride=(1, 0)), ValueError, "stride must be"),
        (dict(padding=-1), ValueError, "padding must be an int in .0, "),
        (dict(dilation=0), ValueError, "dilation must be"),
        (dict(stride=1.0), TypeError, "stride must be"),
        (dict(padding=(1, 2, 3)), TypeError, "padding must be"),
        (dict(stride=True), TypeError, "stride must be"),
        (dict(x=np.ones((0, 3, 6, 6), np.float32)), ValueError, "x must not be empty"),
        (dict(activation="relu6"), ValueError, "unknown activation"),
    ]
    for change, exc, msg in cases:
        args = dict(x=x, w=w, b=np.ones(4, np.float32))
        args.update(change)
        with pytest.raises(exc, match="conv2d_forward: " + msg):
            ops.conv2d_forward(**args)
    out, cache = ops.conv2d_forward(x, w, None)
    with pytest.raises(ValueError, match="conv2d_backward: dout must have shape"):
        ops.conv2d_backward(np.ones((2, 4, 4, 3), np.float32), cache)
    with pytest.raises(TypeError, match="conv2d_backward: dout must have dtype float32"):
        ops.conv2d_backward(np.ones(out.shape), cache)
    with pytest.raises(TypeError, match="conv2d_backward: cache must be the Conv2dCache"):
        ops.conv2d_backward(out, ("not", "a", "cache"))


# ===================================================================== batch norm 2-d
BN_SHAPES = [(2, 3, 4, 5), (1, 2, 3, 3), (5, 1, 1, 2), (8, 16, 7, 7), (4, 3, 33, 17)]


def bn_data(shape, dtype, seed=0):
    c = shape[1]
    x = rand(shape, dtype, seed, scale=2) + 3
    gamma, beta = rand((c,), dtype, seed + 1), rand((c,), dtype, seed + 2)
    return x, gamma, beta


def bn_run(x, gamma, beta, dout, training, rm=None, rv=None):
    c = x.shape[1]
    rm = np.full(c, 0.5, x.dtype) if rm is None else rm
    rv = np.full(c, 2.0, x.dtype) if rv is None else rv
    out, cache = ops.batchnorm2d_forward(x, gamma, beta, rm, rv, training=training,
                                         momentum=0.2, eps=1e-3)
    return (out, rm, rv) + ops.batchnorm2d_backward(dout, cache)


@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_matches_torch(shape, training, backend, dtype):
    x, gamma, beta = bn_data(shape, dtype)
    dout = rand(shape, dtype, 9)
    c = shape[1]
    xt, gt, bt = T(x), T(gamma), T(beta)
    rmt, rvt = torch.full((c,), 0.5, dtype=torch.float64), torch.full((c,), 2.0, dtype=torch.float64)
    ref = F.batch_norm(xt, rmt, rvt, gt, bt, training=training, momentum=0.2, eps=1e-3)
    ref.backward(torch.tensor(dout.astype(np.float64)))
    out, rm, rv, dx, dgamma, dbeta = bn_run(x, gamma, beta, dout, training)
    assert_close(out, ref, dtype, "out")
    assert_close(rm, rmt, dtype, "running_mean")
    assert_close(rv, rvt, dtype, "running_var")
    assert_close(dx, xt.grad, dtype, "dx")
    assert_close(dgamma, gt.grad, dtype, "dgamma")
    assert_close(dbeta, bt.grad, dtype, "dbeta")


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_gradcheck(training, backend):
    x, gamma, beta = bn_data((3, 2, 3, 2), np.float64)
    rm, rv = rand((2,), seed=4), np.abs(rand((2,), seed=5)) + 0.5
    dout = rand(x.shape, seed=6)

    def f():
        out, _ = ops.batchnorm2d_forward(x, gamma, beta, rm.copy(), rv.copy(), training)
        return float(np.sum(out * dout))
    _, cache = ops.batchnorm2d_forward(x, gamma, beta, rm.copy(), rv.copy(), training)
    for analytic, var in zip(ops.batchnorm2d_backward(dout, cache), (x, gamma, beta)):
        assert relerr(analytic, numgrad(f, var)) < 1e-7


@pytest.mark.parametrize("shape", BN_SHAPES + [(32, 32, 32, 32)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_backend_parity(shape, training, dtype):
    x, gamma, beta = bn_data(shape, dtype, seed=3)
    dout = rand(shape, dtype, 4)
    res = on_both(lambda: bn_run(x, gamma, beta, dout, training))
    for got in res[:-1]:
        for a, r in zip(got, res[-1]):
            assert_close(a, r, dtype)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm2d_bit_identical_for_1_and_2_threads(training, backend, dtype):
    x, gamma, beta = bn_data((16, 8, 24, 24), dtype, seed=5)
    dout = rand(x.shape, dtype, 6)
    run = lambda: tuple(a.copy() for a in bn_run(x, gamma, beta, dout, training))
    for a, c in zip(with_threads(1, run), with_threads(2, run)):
        np.testing.assert_array_equal(a, c)


def test_batchnorm2d_variance_accurate_with_large_mean(backend):
    """One-pass statistics in double, shifted by a sample: no cancellation at 1e4 +- 1."""
    x = (rand((16, 4, 8, 8), np.float32) + 1e4).astype(np.float32)
    c = x.shape[1]
    out, _ = ops.batchnorm2d_forward(x, np.ones(c, np.float32), np.zeros(c, np.float32),
                                     None, None)
    xd = x.astype(np.float64)
    ref = (xd - xd.mean((0, 2, 3), keepdims=True)) / np.sqrt(xd.var((0, 2, 3), keepdims=True)
                                                           + 1e-5)
    np.testing.assert_allclose(out, ref, atol=2e-3)


def test_batchnorm2d_nan_stays_in_its_channel(backend):
    x, gamma, beta = bn_data((2, 3, 4, 4), np.float64)
    x[1, 1, 2, 3] = np.nan
    out, _ = ops.batchnorm2d_forward(x, gamma, beta, None, None)
    assert np.isnan(out[:, 1]).all()
    assert np.isfinite(out[:, [0, 2]]).all()


def test_batchnorm2d_bad_input(backend):
    x = np.ones((2, 3, 4, 4), np.float32)
    g = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="batchnorm2d_forward: x must be 4-D"):
        ops.batchnorm2d_forward(np.ones((2, 3), np.float32), g, g, None, None)
    with pytest.raises(ValueError, match="batchnorm2d_forward: gamma must have shape .3,."):
        ops.batchnorm2d_forward(x, np.ones(2, np.float32), g, None, None)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        ops.batchnorm2d_forward(np.ones((1, 3, 1, 1), np.float32), g, g, None, None)
    with pytest.raises(TypeError, match="batchnorm2d_forward: x must be float32 or float64"):
        ops.batchnorm2d_forward(x.astype(np.int32), g, g, None, None)
    with pytest.raises(ValueError, match="batchnorm2d_forward: running_mean is required"):
        ops.batchnorm2d_forward(x, g, g, None, None, training=False)
    _, cache = ops.batchnorm2d_forward(x, g, g, None, None)
    with pytest.raises(ValueError, match="batchnorm2d_backward: dout must have shape"):
        ops.batchnorm2d_backward(np.ones((2, 3, 4, 3), np.float32), cache)
    _, cache1d = ops.batchnorm_forward(np.ones((4, 3), np.float32), g, g, None, None)
    with pytest.raises(TypeError, match="batchnorm2d_backward: cache must be the BatchNorm2dCache"):
        ops.batchnorm2d_backward(np.ones((4, 3), np.float32), cache1d)


# ------------------------------------------------------------- inputs stay untouched
def test_inputs_are_left_unchanged(backend, dtype):
    """No op writes into its arguments -- with one channel too, where a channels-last
    view of x is x itself (the 2-d batch norm reference once normalised x in place)."""
    x = rand((4, 1, 6, 6), dtype)
    w, b, g = rand((2, 1, 3, 3), dtype, 1), rand((2,), dtype, 2), rand((1,), dtype, 3)
    args = (x, w, b, g)
    keep = [a.copy() for a in args]
    out, cache = ops.conv2d_forward(x, w, b, padding=1, activation="tanh")
    dout = rand(out.shape, dtype, 4)
    ops.conv2d_backward(dout, cache)
    for kind in ("max", "avg"):
        pooled, cache = getattr(ops, kind + "pool2d_forward")(x, 3, 2, 1)
        getattr(ops, kind + "pool2d_backward")(np.ones_like(pooled), cache)
    for training in (True, False):
        out, cache = ops.batchnorm2d_forward(x, g, g, np.zeros(1, dtype), np.ones(1, dtype),
                                             training)
        ops.batchnorm2d_backward(x, cache)
        np.testing.assert_allclose(cache.x, x)      # the cache holds the real input
    for a, k in zip(args, keep):
        np.testing.assert_array_equal(a, k)
