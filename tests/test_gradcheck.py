"""gradcheck: passes on correct layers, losses and ops; catches wrong backward passes."""
import numpy as np
import pytest

from fastnn import ops
from fastnn.train.gradcheck import GradcheckResult, gradcheck
from fastnn.layers import (BatchNorm1d, Dense, Dropout, GELU, Maxout, Module, Parameter, PReLU,
                           Sequential, Tanh)
from fastnn.losses import MSE, BCEWithLogits, MulticlassHinge, SoftmaxCrossEntropy

RNG = np.random.default_rng(0)
X = RNG.standard_normal((6, 5))
Y = np.array([0, 3, 1, 2, 3, 0])


@pytest.mark.parametrize("make", [
    lambda: Dense(5, 4, rng=0),
    lambda: Dense(5, 4, activation="tanh", rng=0),
    lambda: Sequential(Dense(5, 8, rng=0), BatchNorm1d(8), GELU(), Dropout(0.5, rng=0),
                       Dense(8, 4, rng=1)),
    lambda: Sequential(Dense(5, 8, activation="sigmoid", rng=0), PReLU(), Maxout(8, 4, rng=1)),
], ids=["dense", "dense-tanh", "bn-gelu-dropout", "sigmoid-prelu-maxout"])
def test_correct_modules_pass(make):
    module = make()
    before = module.state_dict()
    for kwargs in ({}, {"y": Y}, {"y": Y, "loss": MulticlassHinge()}):
        res = gradcheck(module, X, **kwargs)
        assert res.passed and bool(res), str(res)
        assert "x" in res.errors and all(e <= 1e-6 for e in res.errors.values())
    # the module itself is untouched: still float32, same values
    assert all(p.data.dtype == np.float32 for p in module.parameters())
    assert all(np.array_equal(v, module.state_dict()[k]) for k, v in before.items())


def test_eval_mode_batchnorm():
    bn = BatchNorm1d(5)
    bn.running_mean = RNG.standard_normal(5).astype(np.float32)
    bn.running_var = RNG.uniform(0.5, 2, 5).astype(np.float32)
    res = gradcheck(bn, X, mode="eval")
    assert res.passed and set(res.errors) == {"x", "gamma", "beta"}


class Square(Module):
    """y = x * x with a deliberately wrong backward (forgets the factor 2)."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dy):
        return dy * self.x


class Scale(Module):
    """y = x * w with a wrong gradient for w (half of it) but a correct dx."""

    def __init__(self, n):
        super().__init__()
        self.w = Parameter(np.linspace(0.5, 1.5, n).astype(np.float32))

    def forward(self, x):
        self.x = x
        return x * self.w.data

    def backward(self, dy):
        self.w.grad = 0.5 * (dy * self.x).sum(axis=0)
        return dy * self.w.data


def test_wrong_input_gradient_is_caught():
    res = gradcheck(Square(), X)
    assert not res.passed and not bool(res)
    assert res.failed == ["x"] and res.errors["x"] == pytest.approx(0.5, rel=1e-4)
    text = str(res)
    assert "FAILED" in text and "backward disagrees with finite differences for: x" in text


def test_wrong_parameter_gradient_is_caught_inside_a_model():
    model = Sequential(Dense(5, 5, rng=0), Scale(5), Tanh())
    res = gradcheck(model, X, Y, loss=SoftmaxCrossEntropy())
    assert res.failed == ["1.w"]
    assert res.errors["x"] <= 1e-6 and res.errors["0.weight"] <= 1e-6
    d = res.details["1.w"]
    assert d["shape"] == (5,) and d["checked"] == 5
    assert d["analytic"] == pytest.approx(0.5 * d["numeric"], rel=1e-5)


def test_losses_and_functions():
    assert gradcheck(SoftmaxCrossEntropy(), X, Y).passed
    assert gradcheck(MulticlassHinge(), X, Y).passed
    t = (RNG.random((6, 5)) > 0.5).astype(float)
    assert gradcheck(BCEWithLogits(), X, t).passed
    assert gradcheck(MSE(), X, RNG.standard_normal((6, 5))).passed
    res = gradcheck(ops.softmax_cross_entropy, X, Y)
    assert res.passed and set(res.errors) == {"x"}
    assert gradcheck(lambda x: (float(np.sum(np.sin(x))), np.cos(x)), X).passed
    bad = gradcheck(lambda x: (float(np.sum(np.sin(x))), np.sin(x)), X)
    assert not bad.passed and bad.failed == ["x"]


def test_float32_input_is_checked_in_float64_and_subsampling():
    layer = Dense(40, 30, rng=0)
    x = RNG.standard_normal((4, 40)).astype(np.float32)
    res = gradcheck(layer, x, max_checks=25, seed=1)
    assert res.passed
    assert res.details["weight"]["checked"] == 25 and res.details["weight"]["size"] == 1200
    assert res.details["bias"]["checked"] == 25 and res.details["x"]["checked"] == 25
    full = gradcheck(Dense(3, 2, rng=0), X[:, :3], max_checks=None)
    assert full.details["weight"]["checked"] == 6


def test_result_object_and_bad_arguments():
    res = gradcheck(Dense(5, 2, rng=0), X)
    assert isinstance(res, GradcheckResult)
    assert res.threshold == 1e-6 and res.eps == 1e-6 and res.failed == []
    assert "PASSED" in str(res) and "weight" in repr(res)
    # a subtle bug (0.1% too large) is caught as well
    subtle = gradcheck(lambda x: (float(np.sum(np.sin(x))), 1.001 * np.cos(x)), X)
    assert not subtle.passed and subtle.errors["x"] == pytest.approx(1e-3, rel=1e-2)
    with pytest.raises(ValueError, match="eps"):
        gradcheck(Dense(5, 2, rng=0), X, eps=0.0)
    with pytest.raises(TypeError):
        gradcheck("not a module", X)
    with pytest.raises(TypeError, match="must return"):
        gradcheck(lambda x: 1.0, X)
