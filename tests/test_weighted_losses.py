"""Weighted losses: class weights (SoftmaxCrossEntropy(weight=...)) and row weights
(sample_weight=) against PyTorch's formulas, finite differences, bad weights, and
Trainer.fit(sample_weight=...)."""
import numpy as np
import pytest

import fastnn
from fastnn.layers import Dense, ReLU, Sequential
from fastnn.losses import MSE, BCEWithLogits, MulticlassHinge, SoftmaxCrossEntropy
from fastnn.optim import SGD
from fastnn.train import Trainer

torch = pytest.importorskip("torch")
F = torch.nn.functional

N, C = 7, 5


def rtol_for(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-4


def _inputs(kind, dtype, rng):
    z = (rng.standard_normal((N, C)) * 2).astype(dtype)
    if kind in ("ce", "hinge"):
        return z, rng.integers(0, C, N)
    if kind == "bce":
        return z, rng.uniform(0, 1, (N, C)).astype(dtype)
    return z, rng.standard_normal((N, C)).astype(dtype)


def _torch_rows(kind, z, t, class_weight):
    """Per-row losses as torch computes them (reduction='none'), and the rows' class
    weights (ones unless given)."""
    if kind == "ce":
        w = None if class_weight is None else torch.tensor(class_weight, dtype=z.dtype)
        rows = F.cross_entropy(z, t, reduction="none")        # unweighted l_i
        return rows, (torch.ones(len(t), dtype=z.dtype) if w is None else w[t])
    if kind == "hinge":   # torch's MultiMarginLoss divides cs231n's sum by C
        return F.multi_margin_loss(z, t, reduction="none") * z.shape[1], None
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(z, t, reduction="none").mean(1), None
    return F.mse_loss(z, t, reduction="none").mean(1), None


def _torch_weighted(kind, z, t, sample_weight, class_weight=None):
    """sum_i r_i l_i / sum_i r_i with r_i = sample_weight_i * class_weight[y_i], and its
    gradient w.r.t. z (autograd), in float64."""
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(t) if kind in ("ce", "hinge") else torch.tensor(t, dtype=torch.float64)
    rows, cw = _torch_rows(kind, zt, tt, class_weight)
    r = torch.tensor(sample_weight, dtype=torch.float64)
    if cw is not None:
        r = r * cw
    loss = (r * rows).sum() / r.sum()
    loss.backward()
    return loss.item(), zt.grad.numpy()


LOSSES = {"ce": SoftmaxCrossEntropy, "hinge": MulticlassHinge, "bce": BCEWithLogits,
          "mse": MSE}


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_sample_weight_matches_torch(kind, backend, dtype):
    rng = np.random.default_rng(1)
    z, t = _inputs(kind, dtype, rng)
    sw = rng.uniform(0, 3, N)
    sw[2] = 0.0
    crit = LOSSES[kind]()
    loss = crit(z, t, sample_weight=sw)
    expected, grad = _torch_weighted(kind, z.astype(np.float64), t, sw)
    assert loss == pytest.approx(expected, rel=rtol_for(dtype))
    g = crit.backward()
    assert g.dtype == dtype and g.shape == z.shape
    np.testing.assert_allclose(g, grad, rtol=rtol_for(dtype), atol=rtol_for(dtype) * 1e-2)
    assert not g[2].any()      # a zero-weight row gets no gradient


def test_class_and_sample_weights_multiply_as_torch(backend, dtype):
    rng = np.random.default_rng(2)
    z, y = _inputs("ce", dtype, rng)
    cw = rng.uniform(0.1, 4, C)
    sw = rng.uniform(0.1, 2, N)
    for s in (None, sw):
        crit = SoftmaxCrossEntropy(weight=cw)
        loss = crit(z, y, sample_weight=s)
        expected, grad = _torch_weighted("ce", z.astype(np.float64), y,
                                         np.ones(N) if s is None else s, cw)
        assert loss == pytest.approx(expected, rel=rtol_for(dtype))
        np.testing.assert_allclose(crit.backward(), grad, rtol=rtol_for(dtype),
                                   atol=rtol_for(dtype) * 1e-2)
    # torch's own weighted CrossEntropyLoss, without row weights
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(cw))(
        torch.tensor(z.astype(np.float64)), torch.tensor(y))
    assert SoftmaxCrossEntropy(weight=cw)(z, y) == pytest.approx(ref.item(),
                                                                  rel=rtol_for(dtype))


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_unit_weights_equal_the_plain_mean(kind, backend):
    rng = np.random.default_rng(3)
    z, t = _inputs(kind, np.float64, rng)
    crit = LOSSES[kind]()
    plain, g_plain = crit(z, t), crit.backward()
    assert crit(z, t, sample_weight=np.ones(N)) == pytest.approx(plain, rel=1e-12)
    np.testing.assert_allclose(crit.backward(), g_plain, rtol=1e-12, atol=1e-15)
    # integer weights equal repeating rows
    reps = rng.integers(0, 3, N)
    reps[0] = 1
    rep = crit(np.repeat(z, reps, axis=0), np.repeat(t, reps, axis=0))
    assert crit(z, t, sample_weight=reps) == pytest.approx(rep, rel=1e-12)


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_weighted_gradient_finite_differences(kind, backend):
    rng = np.random.default_rng(4)
    z, t = _inputs(kind, np.float64, rng)
    z += 0.05 * np.sign(z)          # keep hinge margins away from their kinks
    sw = rng.uniform(0.2, 2, N)
    cw = rng.uniform(0.5, 2, C) if kind == "ce" else None
    crit = LOSSES[kind](weight=cw) if kind == "ce" else LOSSES[kind]()
    crit(z, t, sample_weight=sw)
    g = crit.backward()
    num = np.zeros_like(z)
    eps = 1e-6
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += eps
        zm[i] -= eps
        num[i] = (crit(zp, t, sample_weight=sw) - crit(zm, t, sample_weight=sw)) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_bad_sample_weights_raise(kind):
    rng = np.random.default_rng(5)
    z, t = _inputs(kind, np.float32, rng)
    crit = LOSSES[kind]()
    name = type(crit).__name__
    cases = [(-np.ones(N), ValueError, "non-negative"),
             (np.r_[np.nan, np.ones(N - 1)], ValueError, "finite"),
             (np.ones(N + 1), ValueError, "shape \\(7,\\)"),
             (np.ones((N, 1)), ValueError, "shape \\(7,\\)"),
             (np.zeros(N), ValueError, "zero"),
             (np.array(["a"] * N), TypeError, "numeric")]
    for weights, exc, match in cases:
        with pytest.raises(exc, match=match):
            crit(z, t, sample_weight=weights)
        with pytest.raises(RuntimeError):
            crit.backward()        # a failed call leaves no gradient
    assert name


def test_bad_class_weights_raise():
    with pytest.raises(ValueError, match="1-D"):
        SoftmaxCrossEntropy(weight=np.ones((2, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        SoftmaxCrossEntropy(weight=[1.0, -1.0])
    with pytest.raises(TypeError, match="numeric"):
        SoftmaxCrossEntropy(weight=["a", "b"])
    z, y = np.zeros((3, C), np.float32), np.array([0, 1, 1])
    with pytest.raises(ValueError, match="one weight per class"):
        SoftmaxCrossEntropy(weight=np.ones(C + 1))(z, y)
    with pytest.raises(ValueError, match="sum to zero"):
        SoftmaxCrossEntropy(weight=[0.0, 0.0, 1.0, 1.0, 1.0])(z, y)


def _net(seed):
    return Sequential(Dense(4, 8, rng=seed, dtype=np.float64), ReLU(),
                      Dense(8, 3, rng=seed + 1, dtype=np.float64))


def test_trainer_sample_weight_equals_repeated_rows():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((12, 4))
    y = rng.integers(0, 3, 12)
    reps = rng.integers(0, 4, 12)
    reps[:3] = (0, 1, 2)
    models = []
    for Xs, ys, w in ((X, y, reps), (np.repeat(X, reps, 0), np.repeat(y, reps), None)):
        model = _net(0)
        trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.1),
                          verbose=0)
        history = trainer.fit(Xs, ys, epochs=3, batch_size=64, shuffle=False,
                              sample_weight=w)
        models.append((model, history))
    (a, ha), (b, hb) = models
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-12)
    for (_, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-12, atol=1e-14)


def test_trainer_shuffles_weights_with_rows():
    """Weights that silence one class: shuffled with their rows, the model never
    learns that class; unshuffled-from-the-rows weights would teach it."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((300, 4))
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1)
    w = np.where(y == 2, 0.0, 1.0)
    fastnn.seed(0)
    model = _net(3)
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(model.parameters(), lr=0.2,
                                                        momentum=0.9), verbose=0)
    trainer.fit(X, y, epochs=15, batch_size=16, seed=0, sample_weight=w)
    assert not (trainer.predict(X) == 2).any()
    with pytest.raises(ValueError, match="Trainer.fit: sample_weight must have shape"):
        trainer.fit(X, y, sample_weight=np.ones(3))


# ------------------------------------------------ the ops and kernels take the weights
from fastnn import ops  # noqa: E402
from fastnn.kernels import ref  # noqa: E402

OPS = {"ce": ops.softmax_cross_entropy, "hinge": ops.multiclass_hinge,
       "bce": ops.bce_with_logits, "mse": ops.mse}
TIGHT = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
#: shapes: a small batch (BCE: a weight per element), rows that span the kernels'
#: 256-element sub-blocks, rows that straddle their 4096-element partial sums (BCE: one
#: scaled call per row from 128 elements), one row
SHAPES = [(7, 5), (3, 300), (40, 130), (1, 6)]


def _weights_case(case, n, c, rng):
    """(sample_weight, class_weight) of a named case; zeros but never all zero."""
    sw = rng.uniform(0.1, 3, n)
    cw = rng.uniform(0.1, 3, c)
    if case == "zeros":
        sw[::2] = 0.0
        sw[-1] = 0.7
        cw[1::2] = 0.0
    return {"rows": (sw, None), "classes": (None, cw), "both": (sw, cw),
            "zeros": (sw, cw)}[case]


def _torch_ref(kind, z, t, sw, cw):
    """Torch's weighted loss and gradient in float64 (r_i = sw_i cw[y_i])."""
    zt = torch.tensor(z.astype(np.float64), requires_grad=True)
    if kind in ("ce", "hinge"):
        tt = torch.tensor(t)
        rows = (F.cross_entropy(zt, tt, reduction="none") if kind == "ce"
                else F.multi_margin_loss(zt, tt, reduction="none") * z.shape[1])
    else:
        tt = torch.tensor(t.astype(np.float64))
        f = F.binary_cross_entropy_with_logits if kind == "bce" else F.mse_loss
        rows = f(zt, tt, reduction="none").reshape(len(z), -1).mean(1)
    r = torch.ones(len(z), dtype=torch.float64)
    if sw is not None:
        r = r * torch.tensor(sw.astype(z.dtype).astype(np.float64))
    if cw is not None:
        r = r * torch.tensor(cw.astype(z.dtype).astype(np.float64))[tt]
    loss = (r * rows).sum() / r.sum()
    loss.backward()
    return loss.item(), zt.grad.numpy()


def _assert_grad(g, expected, dtype):
    tol = TIGHT[np.dtype(dtype)]
    np.testing.assert_allclose(g, expected, rtol=tol, atol=tol * np.abs(expected).max())


def _call(kind, z, t, sw, cw):
    kw = {"sample_weight": sw}
    if cw is not None:
        kw["class_weight"] = cw
    return OPS[kind](z, t, **kw)


#: (loss, weights case): class weights belong to the losses of labels
WEIGHT_CASES = [(k, c) for k in sorted(OPS) for c in ("rows", "classes", "both", "zeros")
                if k in ("ce", "hinge") or c in ("rows", "zeros")]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind,case", WEIGHT_CASES)
def test_ops_weighted_match_torch(kind, case, shape, backend, dtype):
    n, c = shape
    rng = np.random.default_rng([SHAPES.index(shape), WEIGHT_CASES.index((kind, case))])
    z, t = _inputs_of(kind, shape, dtype, rng)
    sw, cw = _weights_case(case, n, c, rng)
    if kind in ("bce", "mse"):
        cw = None
        if n == 1 and sw is not None:
            sw[0] = 0.5
    elif cw is not None:
        cw[t[-1]] = 1.5               # the last row keeps a weight: the total is not zero
    loss, grad = _call(kind, z, t, sw, cw)
    expected, g_exp = _torch_ref(kind, z, t, sw, cw)
    assert loss == pytest.approx(expected, rel=TIGHT[np.dtype(dtype)], abs=1e-12)
    assert grad.dtype == dtype and grad.shape == z.shape
    _assert_grad(grad, g_exp, dtype)
    if sw is not None and case == "zeros":
        assert not grad[sw.astype(dtype) == 0].any()    # zero-weight rows: no gradient


def _inputs_of(kind, shape, dtype, rng):
    z = (rng.standard_normal(shape) * 2).astype(dtype)
    if kind in ("ce", "hinge"):
        return z, rng.integers(0, shape[1], shape[0])
    if kind == "bce":
        return z, rng.uniform(0, 1, shape).astype(dtype)
    return z, rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("kind", ["bce", "mse"])
@pytest.mark.parametrize("n", [1, 9, 5000])
def test_flat_losses_weight_1d_rows(kind, n, backend, dtype):
    """1-D predictions: one element per row (the weights index the elements)."""
    rng = np.random.default_rng(n)
    z, t = _inputs_of(kind, (n, 1), dtype, rng)
    z, t = z[:, 0].copy(), t[:, 0].copy()
    sw = rng.uniform(0, 2, n)
    sw[0] = 1.0
    loss, grad = _call(kind, z, t, sw, None)
    expected, g_exp = _torch_ref(kind, z, t, sw, None)
    assert loss == pytest.approx(expected, rel=TIGHT[np.dtype(dtype)])
    _assert_grad(grad, g_exp, dtype)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", sorted(OPS))
def test_backends_agree_weighted(kind, shape, dtype):
    rng = np.random.default_rng(11)
    z, t = _inputs_of(kind, shape, dtype, rng)
    sw, cw = _weights_case("zeros" if shape[0] > 1 else "rows", *shape, rng)
    if kind in ("bce", "mse"):
        cw = None
    elif cw is not None:
        cw[t[-1]] = 1.5
    results = []
    for name in BACKEND_NAMES:
        with fastnn.use_backend(name):
            loss, grad = _call(kind, z, t, sw, cw)
            results.append((loss, grad.copy()))
    (l0, g0), (l1, g1) = results[0], results[-1]
    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    assert l1 == pytest.approx(l0, rel=tol)
    _assert_grad(g1, g0, np.float64 if tol < 1e-6 else np.float32)


BACKEND_NAMES = ["cython", "numpy"] if fastnn.show_config(print_=False)["cython"] \
    else ["numpy"]


@pytest.mark.parametrize("kind", sorted(OPS))
def test_ops_weighted_gradient_finite_differences(kind, backend):
    rng = np.random.default_rng(12)
    z, t = _inputs_of(kind, (6, 4), np.float64, rng)
    z += 0.05 * np.sign(z)                 # hinge margins away from their kinks
    sw = rng.uniform(0.2, 2, 6)
    cw = rng.uniform(0.5, 2, 4) if kind in ("ce", "hinge") else None
    _, g = _call(kind, z, t, sw, cw)
    g = g.copy()
    num, eps = np.zeros_like(z), 1e-6
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += eps
        zm[i] -= eps
        num[i] = (_call(kind, zp, t, sw, cw)[0] - _call(kind, zm, t, sw, cw)[0]) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-9)


def test_ops_weight_errors_name_the_function():
    z, y = np.zeros((3, 4), np.float32), np.array([0, 1, 1])
    with pytest.raises(ValueError, match="softmax_cross_entropy: class_weight must have one "
                                         "weight per class, shape \\(4,\\)"):
        ops.softmax_cross_entropy(z, y, class_weight=np.ones(3))
    with pytest.raises(ValueError, match="multiclass_hinge: the batch's weights sum to zero"):
        ops.multiclass_hinge(z, y, class_weight=[0.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="mse: sample_weight must be non-negative"):
        ops.mse(z, z, sample_weight=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="bce_with_logits: sample_weight must have shape"):
        ops.bce_with_logits(z, z, sample_weight=np.ones(4))
    with pytest.raises(TypeError, match="softmax_cross_entropy: class_weight must be numeric"):
        ops.softmax_cross_entropy(z, y, class_weight=np.array(["a"] * 4))


KERNELS = [ref.losses] + ([pytest.importorskip("fastnn.kernels._losses")]
                          if BACKEND_NAMES[0] == "cython" else [])


@pytest.mark.parametrize("mod", KERNELS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_kernels_raise_zero_division_on_zero_total(mod, dtype):
    z, y = np.ones((2, 3), dtype), np.array([0, 1], np.int64)
    g = np.empty_like(z)
    zero = np.zeros(2, dtype)
    with pytest.raises(ZeroDivisionError):
        mod.softmax_cross_entropy(z, y, g, 1, False, sample_weight=zero)
    with pytest.raises(ZeroDivisionError):
        mod.multiclass_hinge(z, y, 1.0, g, 1, class_weight=np.array([0, 0, 1], dtype))
    for name in ("bce_with_logits", "mse"):
        with pytest.raises(ZeroDivisionError):
            getattr(mod, name)(z, z, g, 1, sample_weight=zero)


@pytest.mark.skipif(len(KERNELS) < 2, reason="compiled kernels not built")
def test_weighted_kernels_bit_identical_across_thread_counts(dtype):
    losses = KERNELS[1]
    r = np.random.default_rng(13)
    z = r.standard_normal((2048, 300)).astype(dtype)
    y = r.integers(0, 300, 2048)
    t = r.random(z.shape).astype(dtype)
    sw, cw = r.random(2048).astype(dtype), r.random(300).astype(dtype)
    flat, flat_t = r.standard_normal(100_003).astype(dtype), r.random(100_003).astype(dtype)
    flat_w = r.random(100_003).astype(dtype)
    cases = [("softmax_cross_entropy", (z, y), dict(sample_weight=sw, class_weight=cw)),
             ("multiclass_hinge", (z, y, 1.0), dict(sample_weight=sw, class_weight=cw)),
             ("bce_with_logits", (z, t), dict(sample_weight=sw)),
             ("mse", (z, t), dict(sample_weight=sw)),
             ("bce_with_logits", (flat, flat_t), dict(sample_weight=flat_w)),
             ("mse", (flat, flat_t), dict(sample_weight=flat_w))]
    for name, args, kw in cases:
        runs = []
        for nt in (1, 2, 3):
            g = np.empty_like(args[0])
            runs.append((getattr(losses, name)(*args, g, nt, **kw), g))
        for loss, g in runs[1:]:
            assert loss == runs[0][0], name
            np.testing.assert_array_equal(g, runs[0][1])


def test_loss_and_hits_takes_weights(backend, dtype):
    rng = np.random.default_rng(14)
    z, y = _inputs_of("ce", (9, 4), dtype, rng)
    sw = rng.uniform(0, 2, 9).astype(dtype)
    cw = rng.uniform(0.5, 2, 4)
    crit = SoftmaxCrossEntropy(weight=cw)
    loss, hits = crit.loss_and_hits(z, y, sw)
    g = crit.backward()
    assert hits == int(np.count_nonzero(z.argmax(1) == y))
    assert loss == crit(z, y, sample_weight=sw)
    np.testing.assert_array_equal(g, crit.backward())
    # weights the kernel cannot take as they are: no fused pass, nothing done
    assert crit.loss_and_hits(z, y, sw.astype(np.float16)) is None
    assert crit.loss_and_hits(z, y, sw[:-1]) is None
