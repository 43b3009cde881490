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
