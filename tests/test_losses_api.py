"""Loss objects (fastnn.losses) against independent NumPy formulas and finite
differences, plus their error handling."""
import numpy as np
import pytest

from fastnn.losses import BCEWithLogits, MSE, MulticlassHinge, SoftmaxCrossEntropy


def rtol_for(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-4


def ref_softmax_ce(z, y):
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean()


def ref_hinge(s, y, margin=1.0):
    total = 0.0
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            if j != y[i]:
                total += max(0.0, s[i, j] - s[i, y[i]] + margin)
    return total / s.shape[0]


def ref_bce(z, t):
    p = 1 / (1 + np.exp(-z))
    return -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))


def ref_mse(p, t):
    return np.mean((p - t) ** 2)


CASES = {
    "softmax_ce": (SoftmaxCrossEntropy, ref_softmax_ce, "labels"),
    "hinge": (MulticlassHinge, ref_hinge, "labels"),
    "hinge-0.3": (lambda: MulticlassHinge(0.3), lambda s, y: ref_hinge(s, y, 0.3), "labels"),
    "bce": (BCEWithLogits, ref_bce, "probs"),
    "mse": (MSE, ref_mse, "values"),
}


def _data(kind, rng, dtype, shape=(6, 4)):
    z = rng.standard_normal(shape).astype(dtype) * 2
    if kind == "labels":
        return z, rng.integers(0, shape[1], shape[0])
    if kind == "probs":
        return z, rng.uniform(0, 1, shape).astype(dtype)
    return z, rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_value_and_gradient(name, backend, dtype):
    make, ref, kind = CASES[name]
    rng = np.random.default_rng(0)
    z, t = _data(kind, rng, dtype)
    crit = make()
    loss = crit(z, t)
    assert isinstance(loss, float)
    expected = ref(z.astype(np.float64), t if kind == "labels" else t.astype(np.float64))
    assert loss == pytest.approx(expected, rel=rtol_for(dtype))
    g = crit.backward()
    assert g.shape == z.shape and g.dtype == dtype
    # central differences in float64 on the reference formula
    z64 = z.astype(np.float64)
    t64 = t if kind == "labels" else t.astype(np.float64)
    num = np.zeros_like(z64)
    eps = 1e-6
    for i in np.ndindex(z64.shape):
        old = z64[i]
        z64[i] = old + eps
        fp = ref(z64, t64)
        z64[i] = old - eps
        fm = ref(z64, t64)
        z64[i] = old
        num[i] = (fp - fm) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-6)


def test_backward_returns_fresh_copy_and_internal_path_reuses(backend):
    crit = SoftmaxCrossEntropy()
    z = np.zeros((2, 3), np.float32)
    crit(z, [0, 1])
    g1 = crit.backward()
    g1_copy = g1.copy()
    crit(z + 1, [2, 2])
    crit.backward()
    np.testing.assert_array_equal(g1, g1_copy)
    assert crit._backward() is crit._backward()


def test_bce_extreme_logits_are_finite(backend):
    z = np.array([[1000.0, -1000.0, 0.0]], np.float32)
    t = np.array([[0.0, 1.0, 0.5]], np.float32)
    crit = BCEWithLogits()
    loss = crit(z, t)
    assert np.isfinite(loss) and loss == pytest.approx(2000 / 3 + np.log(2) / 3, rel=1e-5)
    assert np.isfinite(crit.backward()).all()


def test_softmax_ce_large_logits_stable(backend):
    crit = SoftmaxCrossEntropy()
    assert crit(np.array([[1e4, 0.0]], np.float32), [1]) == pytest.approx(1e4, rel=1e-6)


@pytest.mark.parametrize("make", [SoftmaxCrossEntropy, MulticlassHinge])
def test_label_errors(make):
    crit = make()
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        crit(z, [0, 4, 1])
    with pytest.raises(ValueError):
        crit(z, [0, -1, 1])
    with pytest.raises(TypeError, match="integer"):
        crit(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        crit(z, [0, 1])
    with pytest.raises(TypeError, match="float"):
        crit(np.zeros((3, 4), np.int64), [0, 1, 2])
    with pytest.raises(TypeError):
        crit(z, ["a", "b", "c"])


def test_loss_error_messages_name_the_loss():
    with pytest.raises(ValueError, match="SoftmaxCrossEntropy"):
        SoftmaxCrossEntropy()(np.zeros((2, 3), np.float32), [0, 3])
    with pytest.raises(ValueError, match="MSE"):
        MSE()(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    with pytest.raises(TypeError, match="BCEWithLogits"):
        BCEWithLogits()(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.int64))


def test_backward_before_call_and_after_failed_call():
    crit = MSE()
    with pytest.raises(RuntimeError, match="MSE.*before"):
        crit.backward()
    crit(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError):
        crit(np.zeros(3), np.ones(4))
    with pytest.raises(RuntimeError):
        crit.backward()          # a failed call leaves no stale gradient behind


def test_hinge_margin_validation_and_repr():
    with pytest.raises(TypeError):
        MulticlassHinge(margin="1")
    with pytest.raises(ValueError):
        MulticlassHinge(margin=float("nan"))
    assert repr(MulticlassHinge(0.5)) == "MulticlassHinge(margin=0.5)"


def test_mse_target_dtype_converted(backend):
    crit = MSE()
    assert crit(np.zeros(3, np.float32), np.ones(3, np.float64)) == pytest.approx(1.0)
    assert crit.backward().dtype == np.float32


# ------------------------------------------------------------------ facts on the type
def test_each_loss_states_its_task_and_probabilities():
    from fastnn.losses import BCEWithLogits, Loss, MSE, MulticlassHinge, SoftmaxCrossEntropy
    assert [c.task for c in (SoftmaxCrossEntropy, MulticlassHinge, BCEWithLogits, MSE, Loss)] \
        == ["multiclass", "multiclass", "binary", "regression", "regression"]
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]], np.float32)
    p = SoftmaxCrossEntropy().probabilities(z)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6, atol=1e-30)
    s = BCEWithLogits().probabilities(np.array([[-800.0], [0.0], [800.0]]))
    np.testing.assert_array_equal(s, [[0.0], [0.5], [1.0]])
    for crit in (MulticlassHinge(), MSE()):
        with pytest.raises(ValueError, match="%s: its outputs are not probabilities"
                           % type(crit).__name__):
            crit.probabilities(z)
    with pytest.raises(ValueError, match="SoftmaxCrossEntropy.probabilities: outputs must "
                                         "be 2-D"):
        SoftmaxCrossEntropy().probabilities(np.zeros(3))
    with pytest.raises(TypeError, match="BCEWithLogits.probabilities: outputs"):
        BCEWithLogits().probabilities(np.zeros(3, np.int64))
