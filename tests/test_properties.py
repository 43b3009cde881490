"""Property tests: the Cython backend computes what the NumPy reference computes.

For random shapes and values -- including +-1e30, the largest floats, subnormals, exact
(and negative) zeros, ties (in max, ReLU, Maxout, hinge margins) and NaN / +-Inf where
meaningful -- every kernel family and the layers give the same results on both backends:
NaN and Inf in the same positions (Inf with the same sign), finite values equal to float
tolerance. Nothing may crash. Runs derandomized (reproducible in CI) with modest example
counts; overflow in extreme inputs is legitimate, so calls run under np.errstate(all=
"ignore").
"""
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnn
from fastnn import ops
from fastnn.layers import (ELU, GELU, BatchNorm1d, Dense, Dropout, Flatten, LeakyReLU,
                           Maxout, PReLU, ReLU, Sequential, Sigmoid, SiLU, Swish, Tanh)
from conftest import BACKENDS

# When a test fails, hypothesis' pytest plugin imports its patch writer (libcst, which
# warns on import); under -W error that warning would replace the failure report by an
# INTERNALERROR. Import it once here, warnings silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
        import hypothesis.extra._patching  # noqa: F401
    except Exception:  # pragma: no cover - optional, private
        pass

pytestmark = pytest.mark.skipif("cython" not in BACKENDS, reason="needs the compiled kernels")

EXAMPLES = {}          # test name -> examples run (reported by the last test)


# FASTNN_PROPERTY_SEARCH=k: a random (not derandomized) search with k times the examples,
# for exploring locally; CI runs the fixed, derandomized sequence.
SEARCH = int(os.environ.get("FASTNN_PROPERTY_SEARCH", "0") or 0)


def prop_settings(n):
    return settings(max_examples=n * max(1, SEARCH), deadline=None, derandomize=not SEARCH,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def count(name):
    EXAMPLES[name] = EXAMPLES.get(name, 0) + 1


DTYPES = st.sampled_from([np.float32, np.float64])


def specials(dtype, extremes=True, nonfinite=False):
    info = np.finfo(dtype)
    vals = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0]             # ties and exact zeros
    if extremes:
        sub = float(info.smallest_subnormal)
        vals += [1e30, -1e30, float(info.max), -float(info.max), float(info.tiny),
                 sub, -sub, 3 * sub, 1e-30, -1e-30, 88.7, -88.7, 709.8, -709.8, 20.0, -20.0]
    if nonfinite:
        vals += [np.nan, np.inf, -np.inf]
    return vals


def elements(dtype, extremes=True, nonfinite=False, bound=None):
    width = 32 if dtype == np.float32 else 64
    if bound is not None:
        bound = float(dtype(bound))       # exactly representable in the dtype
        vals = [v for v in specials(dtype, extremes, nonfinite)
                if not np.isfinite(v) or abs(v) <= bound]
        return st.one_of(st.floats(-min(bound, 4.0), min(bound, 4.0), width=width),
                         st.floats(-bound, bound, width=width), st.sampled_from(vals))
    parts = [st.floats(-4.0, 4.0, width=width), st.sampled_from(specials(dtype, extremes,
                                                                          nonfinite))]
    if extremes:
        parts.append(st.floats(allow_nan=False, allow_infinity=False, width=width))
    return st.one_of(*parts)


def arrays(dtype, shape, **kw):
    return hnp.arrays(dtype, shape, elements=elements(dtype, **kw))


def shapes(min_n=1, max_n=9, min_d=1, max_d=17):
    return st.tuples(st.integers(min_n, max_n), st.integers(min_d, max_d))


def on_both(fn):
    """fn() on the Cython then the NumPy backend, overflow warnings silenced."""
    out = []
    for name in ("cython", "numpy"):
        with fastnn.use_backend(name), np.errstate(all="ignore"):
            out.append(fn())
    return out


def flat(res):
    if isinstance(res, (tuple, list)):
        for r in res:
            yield from flat(r)
    elif res is not None:
        yield np.asarray(res)


def assert_same(cy, ref, dtype, what="", rtol=None, atol=0.0):
    """NaN / Inf at the same places; finite values equal to tolerance, relative to the
    element and (atol) to the largest finite reference magnitude of that output, or the
    given atol if larger."""
    rtol = rtol or (2e-4 if np.dtype(dtype) == np.float32 else 1e-9)
    for i, (c, n) in enumerate(zip(flat(cy), flat(ref))):
        where = "%s output %d" % (what, i)
        assert c.shape == n.shape and c.dtype == n.dtype, (where, c.dtype, n.dtype)
        np.testing.assert_array_equal(np.isnan(c), np.isnan(n), err_msg=where + ": NaN positions")
        inf = np.isinf(n)
        np.testing.assert_array_equal(np.isinf(c), inf, err_msg=where + ": Inf positions")
        np.testing.assert_array_equal(c[inf], n[inf], err_msg=where + ": Inf signs")
        fin = np.isfinite(n)
        if fin.any():
            scale = max(1.0, float(np.max(np.abs(n[fin].astype(np.float64)))))
            np.testing.assert_allclose(c[fin].astype(np.float64), n[fin].astype(np.float64),
                                       rtol=rtol, atol=max(rtol * scale, atol), err_msg=where)


ACTS = [("sigmoid", {}), ("tanh", {}), ("relu", {}), ("leaky_relu", {"negative_slope": 0.1}),
        ("elu", {"alpha": 0.7}), ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}),
        ("swish", {"beta": 1.5})]


# ------------------------------------------------------------------------- activations
@prop_settings(300)
@given(data=st.data(), dtype=DTYPES, act=st.sampled_from(ACTS), shape=shapes(max_d=40))
def test_activations_match(data, dtype, act, shape):
    count("activations")
    name, kw = act
    x = data.draw(arrays(dtype, shape, nonfinite=True), label="x")
    dout = data.draw(arrays(dtype, shape, extremes=False, nonfinite=False), label="dout")

    def run():
        y, cache = ops.activation_forward(x, name, **kw)
        return y, ops.activation_backward(dout, cache)
    cy, ref = on_both(run)
    assert_same(cy, ref, dtype, name)


@prop_settings(40)
@given(data=st.data(), dtype=DTYPES, n=st.integers(1, 200), d=st.integers(150, 400))
def test_activations_match_multithreaded_sizes(data, dtype, n, d):
    """Sizes above the parallel threshold, 2 threads: the block split changes nothing."""
    count("activations-large")
    name, kw = data.draw(st.sampled_from(ACTS))
    x = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1))).standard_normal(
        (n, d)).astype(dtype) * 5
    x.reshape(-1)[:: 7] = data.draw(st.sampled_from(specials(dtype, nonfinite=True)))
    before = fastnn.get_num_threads()
    fastnn.set_num_threads(2)
    try:
        cy, ref = on_both(lambda: ops.activation_backward(
            np.ones_like(x), ops.activation_forward(x, name, **kw)[1]))
    finally:
        fastnn.set_num_threads(before)
    assert_same(cy, ref, dtype, name)


@prop_settings(150)
@given(data=st.data(), dtype=DTYPES, shape=shapes(), shared=st.booleans())
def test_prelu_matches(data, dtype, shape, shared):
    count("prelu")
    x = data.draw(arrays(dtype, shape, nonfinite=True))
    alpha = data.draw(arrays(dtype, (1 if shared else shape[1],), extremes=False))
    dout = data.draw(arrays(dtype, shape, extremes=False))

    def run():
        y, cache = ops.prelu_forward(x, alpha)
        return (y,) + ops.prelu_backward(dout, cache)
    cy, ref = on_both(run)
    # dalpha sums products: compare at the reduction's rounding (terms up to 1e30 * 4)
    assert_same(cy[:2], ref[:2], dtype, "prelu")
    assert_same(cy[2], ref[2], dtype, "prelu dalpha", rtol=1e-3 if dtype == np.float32 else 1e-8)


# ------------------------------------------------------------------------------ dense
@prop_settings(200)
@given(data=st.data(), dtype=DTYPES, n=st.integers(1, 9), i=st.integers(1, 12),
       o=st.integers(1, 12), act=st.sampled_from([(None, {})] + ACTS), bias=st.booleans())
def test_dense_matches(data, dtype, n, i, o, act, bias):
    count("dense")
    name, kw = act
    bound = 1e3 if dtype == np.float32 else 1e6       # GEMM sums: keep products finite
    x = data.draw(hnp.arrays(dtype, (n, i), elements=elements(dtype, bound=bound)))
    w = data.draw(hnp.arrays(dtype, (i, o), elements=elements(dtype, bound=bound)))
    b = data.draw(hnp.arrays(dtype, (o,), elements=elements(dtype, bound=bound))) if bias else None
    dout = data.draw(arrays(dtype, (n, o), extremes=False))

    def run():
        out, cache = ops.dense_forward(x, w, b, activation=name, activation_kw=kw)
        return (out,) + ops.dense_backward(dout, cache)
    cy, ref = on_both(run)
    # GEMMs from two OpenBLAS builds (numpy's, scipy's) with large cancelling terms:
    # tolerance relative to the sums of |terms|
    rtol = 1e-3 if dtype == np.float32 else 1e-9
    assert_same(cy, ref, dtype, "dense %s" % name, rtol=rtol)


@prop_settings(120)
@given(data=st.data(), dtype=DTYPES, pieces=st.integers(1, 4), n=st.integers(1, 8),
       o=st.integers(1, 6))
def test_maxout_ties_and_extremes(data, dtype, pieces, n, o):
    """Maxout's argmax: ties (equal pieces) go to the first piece on both backends."""
    count("maxout")
    layer_c = Maxout(3, o, pieces=pieces, dtype=dtype, rng=0)
    # weights with repeated columns: every piece of output j computes the same value
    w = data.draw(hnp.arrays(dtype, (3, o), elements=elements(dtype, extremes=False)))
    tie = data.draw(st.booleans())
    full = np.repeat(w, pieces, axis=1) if tie else data.draw(
        hnp.arrays(dtype, (3, o * pieces), elements=elements(dtype, extremes=False)))
    layer_c.weight.data = full
    x = data.draw(arrays(dtype, (n, 3), extremes=False, nonfinite=True))
    layer_n = Maxout(3, o, pieces=pieces, dtype=dtype, rng=0)
    layer_n.load_state_dict(layer_c.state_dict())

    res = []
    for layer, name in ((layer_c, "cython"), (layer_n, "numpy")):
        with fastnn.use_backend(name), np.errstate(all="ignore"):
            y = layer(x)
            dx = layer.backward(np.ones_like(y))
            res.append((y, dx, layer.weight.grad.copy(), layer.bias.grad.copy()))
    assert_same(res[0], res[1], dtype, "maxout")


# ---------------------------------------------------------------------------- batchnorm
@prop_settings(200)
@given(data=st.data(), dtype=DTYPES, shape=shapes(min_n=2, max_n=12, max_d=9),
       training=st.booleans(), constant=st.booleans())
def test_batchnorm_matches(data, dtype, shape, training, constant):
    count("batchnorm")
    bound = 1e4 if dtype == np.float32 else 1e8
    x = data.draw(hnp.arrays(dtype, shape, elements=elements(dtype, bound=bound)))
    if constant:                      # zero variance columns: invstd = 1/sqrt(eps)
        x[:, ::2] = x[:1, ::2]
    gamma = data.draw(arrays(dtype, (shape[1],), extremes=False))
    beta = data.draw(arrays(dtype, (shape[1],), extremes=False))
    rm0 = data.draw(arrays(dtype, (shape[1],), extremes=False))
    rv0 = np.abs(data.draw(arrays(dtype, (shape[1],), extremes=False))) + dtype(0.1)
    dout = data.draw(arrays(dtype, shape, extremes=False))

    def run():
        rm, rv = rm0.copy(), rv0.copy()
        out, cache = ops.batchnorm_forward(x, gamma, beta, rm, rv, training=training)
        return (out, rm, rv) + ops.batchnorm_backward(dout, cache)
    cy, ref = on_both(run)
    # normalised values of widely spread data lose digits in either order of summation
    rtol = 2e-3 if dtype == np.float32 else 1e-8
    # Conditioning: x - mean carries a rounding error of ~eps * |x|, which normalising
    # multiplies by invstd (up to 1/sqrt(eps_bn) ~ 316 for a near-constant column; one
    # backend may get exactly 0 where the other gets 1e-7), and the backward by invstd
    # again.
    x64 = x.astype(np.float64)
    invstd = float(np.max(1.0 / np.sqrt(x64.var(axis=0) + 1e-5))) if training else 1.0
    eff = np.finfo(dtype).eps * max(1.0, float(np.max(np.abs(x64))) * invstd)
    g = max(1.0, float(np.max(np.abs(gamma))))
    out_atol = 32 * eff * g
    grad_atol = 32 * eff * max(1.0, invstd) * g * max(1.0, float(np.max(np.abs(dout)))) * shape[0]
    what = "batchnorm training=%s" % training
    assert_same(cy[:1], ref[:1], dtype, what, rtol=rtol, atol=out_atol)
    assert_same(cy[1:3], ref[1:3], dtype, what + " running stats", rtol=rtol)
    assert_same(cy[3:], ref[3:], dtype, what + " grads", rtol=rtol, atol=grad_atol)


@prop_settings(60)
@given(data=st.data(), dtype=DTYPES, d=st.integers(1, 9))
def test_batchnorm_nonfinite_positions(data, dtype, d):
    """A NaN / Inf in a column poisons exactly that column (both backends)."""
    count("batchnorm-nonfinite")
    x = np.random.default_rng(data.draw(st.integers(0, 1000))).standard_normal((6, d)).astype(dtype)
    col = data.draw(st.integers(0, d - 1))
    x[data.draw(st.integers(0, 5)), col] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))

    def run():
        out, cache = ops.batchnorm_forward(x, np.ones(d, dtype), np.zeros(d, dtype), None, None)
        return (out,) + ops.batchnorm_backward(np.ones_like(x), cache)
    cy, ref = on_both(run)
    assert_same(cy, ref, dtype, "batchnorm nonfinite")
    assert not np.isfinite(cy[0][:, col]).all()
    others = np.delete(cy[0], col, axis=1)
    assert np.isfinite(others).all()


# ------------------------------------------------------------------------------ losses
@prop_settings(200)
@given(data=st.data(), dtype=DTYPES, shape=shapes(max_d=12),
       fname=st.sampled_from(["softmax_cross_entropy", "multiclass_hinge"]))
def test_classification_losses_match(data, dtype, shape, fname):
    count("losses-classification")
    logits = data.draw(arrays(dtype, shape, nonfinite=True))
    if data.draw(st.booleans()):          # rows of ties
        logits[:, :] = logits[:, :1]
    labels = np.array(data.draw(st.lists(st.integers(0, shape[1] - 1), min_size=shape[0],
                                         max_size=shape[0])))
    cy, ref = on_both(lambda: getattr(ops, fname)(logits, labels))
    assert isinstance(cy[0], float) and isinstance(ref[0], float)
    assert_same(cy, ref, dtype, fname)


@prop_settings(200)
@given(data=st.data(), dtype=DTYPES, shape=st.one_of(shapes(), st.tuples(st.integers(1, 30))),
       fname=st.sampled_from(["bce_with_logits", "mse"]))
def test_regression_losses_match(data, dtype, shape, fname):
    count("losses-regression")
    pred = data.draw(arrays(dtype, shape, nonfinite=True))
    if fname == "bce_with_logits":
        target = data.draw(hnp.arrays(dtype, shape, elements=st.sampled_from(
            [0.0, 1.0, 0.5, 0.25, 1e-30])))
    else:
        target = data.draw(arrays(dtype, shape, nonfinite=True))
    cy, ref = on_both(lambda: getattr(ops, fname)(pred, target))
    assert isinstance(cy[0], float)
    assert_same(cy, ref, dtype, fname)


# -------------------------------------------------------------------------- optimizers
OPTS = {
    "SGD": lambda p: fastnn.optim.SGD(p, lr=0.1),
    "SGD-momentum": lambda p: fastnn.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1,
                                               weight_decay=0.01),
    "SGD-nesterov": lambda p: fastnn.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    "Adagrad": lambda p: fastnn.optim.Adagrad(p, lr=0.1, weight_decay=0.01, lr_decay=0.01),
    "RMSprop": lambda p: fastnn.optim.RMSprop(p, lr=0.01, weight_decay=0.01),
    "RMSprop-momentum": lambda p: fastnn.optim.RMSprop(p, lr=0.01, momentum=0.5),
    "Adam": lambda p: fastnn.optim.Adam(p, lr=0.01, weight_decay=0.01),
    "AdamW": lambda p: fastnn.optim.AdamW(p, lr=0.01),
}


@prop_settings(200)
@given(data=st.data(), dtype=DTYPES, name=st.sampled_from(sorted(OPTS)),
       size=st.integers(1, 40), steps=st.integers(1, 3), nonfinite=st.booleans())
def test_optimizers_match(data, dtype, name, size, steps, nonfinite):
    count("optimizers")
    bound = 1e15 if dtype == np.float32 else 1e100   # squares of gradients stay finite
    p0 = data.draw(hnp.arrays(dtype, (size,), elements=elements(dtype, bound=bound)))
    grads = [data.draw(hnp.arrays(dtype, (size,), elements=elements(
        dtype, bound=bound, nonfinite=nonfinite))) for _ in range(steps)]

    def run():
        p = fastnn.Parameter(p0)
        opt = OPTS[name]([p])
        for g in grads:
            p.grad = g
            p._grad_ready = True          # an all-zero gradient is still a gradient
            opt.step()
        return p.data.copy()
    cy, ref = on_both(run)
    assert_same(cy, ref, dtype, name, rtol=1e-4 if dtype == np.float32 else 1e-10)


# ------------------------------------------------------------------------------ layers
LAYERS = [
    lambda dt: Sigmoid(), lambda dt: Tanh(), lambda dt: ReLU(), lambda dt: LeakyReLU(0.2),
    lambda dt: ELU(0.5), lambda dt: GELU(), lambda dt: GELU("tanh"), lambda dt: SiLU(),
    lambda dt: Swish(2.0), lambda dt: PReLU(dtype=dt), lambda dt: Flatten(),
    lambda dt: Dropout(0.4, rng=7),
]


@prop_settings(150)
@given(data=st.data(), dtype=DTYPES, k=st.integers(0, len(LAYERS) - 1), shape=shapes())
def test_elementwise_layers_match(data, dtype, k, shape):
    count("layers-elementwise")
    x = data.draw(arrays(dtype, shape, nonfinite=True))
    dy = data.draw(arrays(dtype, shape, extremes=False))
    res = []
    for name in ("cython", "numpy"):
        layer = LAYERS[k](dtype)
        with fastnn.use_backend(name), np.errstate(all="ignore"):
            y = layer(x)
            res.append((y, layer.backward(dy)) + tuple(p.grad for p in layer.parameters()))
    assert_same(res[0][:2], res[1][:2], dtype, type(layer).__name__)
    assert_same(res[0][2:], res[1][2:], dtype, type(layer).__name__ + " grads",
                rtol=1e-3 if dtype == np.float32 else 1e-8)


@prop_settings(100)
@given(data=st.data(), dtype=DTYPES, n=st.integers(2, 16), train=st.booleans())
def test_mlp_forward_backward_match(data, dtype, n, train):
    x = data.draw(hnp.arrays(dtype, (n, 6), elements=elements(dtype, extremes=False)))
    # well-conditioned data only: with identical rows BatchNorm normalises rounding noise
    # (exactly 0 on one backend, +-1e-13 on the other, both right), and the kinks after
    # it (Maxout, PReLU) turn that noise into different gradients. Degenerate inputs are
    # covered per layer above.
    dist = np.abs(x[:, None, :].astype(np.float64) - x[None, :, :]).sum(-1)
    assume(np.min(dist + np.eye(n) * 1e9) > 0.5)
    count("layers-mlp")
    seed = data.draw(st.integers(0, 1000))
    res = []
    for name in ("cython", "numpy"):
        model = Sequential(Dense(6, 16, activation="relu", dtype=dtype, rng=seed),
                           BatchNorm1d(16, dtype=dtype), Dropout(0.3, rng=seed),
                           Maxout(16, 5, pieces=3, dtype=dtype, rng=seed + 1),
                           PReLU(5, dtype=dtype), Dense(5, 3, activation="tanh", dtype=dtype,
                                                        rng=seed + 2)).train(train)
        with fastnn.use_backend(name), np.errstate(all="ignore"):
            y = model(x)
            dx = model.backward(np.ones_like(y))
            res.append((y, dx) + tuple(p.grad.copy() for p in model.parameters())
                       + tuple(b.copy() for _, b in model.named_buffers()))
    assert_same(res[0], res[1], dtype, "mlp", rtol=1e-3 if dtype == np.float32 else 1e-8)


def test_zz_examples_ran():
    """Reports the number of hypothesis examples this file ran (needs the tests above
    in the same session)."""
    total = sum(EXAMPLES.values())
    print("hypothesis examples: %d %s" % (total, dict(sorted(EXAMPLES.items()))))
    if len(EXAMPLES) >= 12:
        assert total >= 1500
