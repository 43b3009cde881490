"""Facts live on the type: every layer states its output shape, training memory, what the
diagnostics watch at its output, whether it can be recorded and whether it is random;
the memory report, diagnostics and gradcheck ask these facts, so a user's layer that
declares them works everywhere a built-in one does."""
import numpy as np
import pytest

from fastnn import optim
from fastnn.layers import (ELU, GELU, BatchNorm1d, Dense, Dropout, Flatten, LeakyReLU, Maxout,
                           Module, PReLU, ReLU, Sequential, Sigmoid, SiLU, Swish,
                           Tanh)
from fastnn.tools import memory
from fastnn.train import diagnostics
from fastnn.train.gradcheck import gradcheck

F32 = 4


@pytest.mark.parametrize("layer, shape, out", [
    (Dense(4, 3), (5, 4), (5, 3)),
    (Maxout(4, 3, pieces=2), (5, 4), (5, 3)),
    (BatchNorm1d(4), (5, 4), (5, 4)),
    (Dropout(0.3), (5, 2, 3), (5, 2, 3)),
    (Flatten(), (5, 2, 3), (5, 6)),
    (ReLU(), (5, 2, 3), (5, 2, 3)),
    (PReLU(), (5, 4), (5, 4)),
    (Sequential(Flatten(), Dense(6, 3), Sequential(ReLU(), Dense(3, 2))), (5, 2, 3), (5, 2)),
])
def test_output_shape(layer, shape, out):
    assert layer.output_shape(shape) == out


@pytest.mark.parametrize("layer, shape, expected", [
    (Dense(4, 3), (5, 7), r"Dense\(in_features=4.*expected input of shape \(N, 4\), got shape"),
    (Maxout(4, 3), (5, 4, 1), r"Maxout\(.*expected input of shape \(N, 4\)"),
    (BatchNorm1d(4), (5, 3), r"BatchNorm1d\(4.*expected input of shape \(N, 4\)"),
    (Flatten(), (5,), r"Flatten\(\): expected an input \(N, ...\) of at least 2"),
    (Sequential(Dense(4, 3), Dense(2, 1)), (5, 4), r"Sequential\[1\] Dense\(in_features=2"),
])
def test_output_shape_names_the_layer_that_does_not_fit(layer, shape, expected):
    with pytest.raises(ValueError, match=expected):
        layer.output_shape(shape)


def test_train_memory_of_each_layer():
    n = 5
    assert Dense(4, 3).train_memory((n, 4), F32, False) == (n * 3 * F32, n * 4 * F32)
    # a fused activation keeps z and the output, and allocates dz
    assert Dense(4, 3, activation="tanh").train_memory((n, 4), F32, True) == (
        2 * n * 3 * F32, n * 3 * F32)
    idx = np.dtype(np.intp).itemsize
    assert Maxout(4, 3, pieces=2).train_memory((n, 4), F32, False) == (
        (n * 6 + n * 3) * F32 + n * 3 * idx, (n * 4 + n * 6) * F32)
    assert BatchNorm1d(4).train_memory((n, 4), 8, False) == ((n * 4 + 2 * 4) * 8, n * 4 * 8)
    assert Dropout(0.5).train_memory((n, 4), F32, False) == (2 * n * 4 * F32, n * 4 * F32)
    assert Dropout(0.0).train_memory((n, 4), F32, False) == (0, 0)
    assert Flatten().train_memory((n, 2, 3), F32, False) == (0, 0)
    for act in (ReLU(), Tanh(), GELU(), PReLU()):
        assert act.train_memory((n, 4), F32, True) == (n * 4 * F32, 0)
    seq = Sequential(Dense(4, 3), ReLU())
    assert seq.train_memory((n, 4), F32, True) == (2 * n * 3 * F32, n * 3 * F32)


def test_watch_kind_recordable_stochastic_and_flat_layers():
    kinds = {ReLU(): "relu", Sigmoid(): "sigmoid", Tanh(): "tanh", LeakyReLU(): None,
             ELU(): None, SiLU(): None, Swish(): None, GELU(): None, PReLU(): None,
             Dense(2, 2, activation="relu"): "relu", Dense(2, 2, activation="tanh"): "tanh",
             Dense(2, 2, activation="elu"): None, Dense(2, 2): None, BatchNorm1d(2): None,
             Dropout(): None, Flatten(): None, Maxout(2, 2): None}
    assert {type(m).__name__ + str(getattr(m, "activation", "")): m.watch_kind()
            for m in kinds} == {type(m).__name__ + str(getattr(m, "activation", "")): k
                                for m, k in kinds.items()}
    assert [c.recordable for c in (Dense, BatchNorm1d, ReLU, Tanh, GELU, Swish, Flatten)] \
        == [True] * 7
    assert [c.recordable for c in (Maxout, Dropout, PReLU, Sequential, Module)] == \
        [False] * 5
    assert Dropout.stochastic and not any(c.stochastic for c in (Dense, BatchNorm1d, ReLU))
    inner = Sequential(ReLU(), Dense(3, 2))
    model = Sequential(Dense(2, 3), inner, Tanh())
    assert model.flat_layers() == [model[0], inner[0], inner[1], model[2]]
    assert Dense(2, 2).flat_layers()[0].in_features == 2


class _Doubler(Module):
    """A user's layer: y = 2 x, no parameters, declaring its facts."""

    def __init__(self, watch=None):
        super().__init__()
        self.watch = watch

    def _forward(self, x):
        self._cache = x.shape
        return 2 * x

    def _backward(self, dy, need_dx=True):
        return 2 * dy

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def train_memory(self, input_shape, itemsize, first):
        return np.prod(input_shape) * itemsize, self._input_grad_nbytes(input_shape, itemsize,
                                                                        first)

    def watch_kind(self):
        return self.watch


class _Silent(Module):
    def _forward(self, x):
        return x

    def _backward(self, dy, need_dx=True):
        return dy


def test_a_default_module_declares_nothing():
    layer = _Silent()
    with pytest.raises(TypeError, match="_Silent does not declare its output shape"):
        layer.output_shape((2, 3))
    with pytest.raises(TypeError, match="_Silent does not declare its training memory"):
        layer.train_memory((2, 3), F32, False)
    assert layer.watch_kind() is None and layer.flat_layers() == [layer]
    assert not layer.recordable and not layer.stochastic


def test_memory_report_asks_a_users_layer():
    model = Sequential(Dense(4, 3, rng=0), _Doubler(), Dense(3, 2, rng=1))
    need = memory.step_need(model, optim.SGD(model.parameters(), lr=0.1), (5, 4))
    assert need["activations"] == (5 * 3 + 5 * 3 + 5 * 2) * F32
    assert need["activation_grads"] == (5 * 3 + 5 * 3 + 5 * 2) * F32
    silent = Sequential(Dense(4, 3, rng=0), _Silent())
    with pytest.raises(TypeError, match="step_need: _Silent does not declare its training"):
        memory.step_need(silent, optim.SGD(silent.parameters(), lr=0.1), (5, 4))


def test_diagnostics_watch_what_a_users_layer_declares():
    """A user's layer declaring watch_kind "relu" gets the dead-unit count; names come
    from the model (nested Sequentials included)."""
    model = Sequential(Dense(3, 4, rng=0), Sequential(_Doubler(watch="relu"), Dense(4, 2, rng=1)))
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    report = diagnostics.inspect(model, x)
    rows = {r["layer"]: r for r in report.rows}
    assert list(rows) == ["0", "1.0", "1.1"]
    assert rows["1.0"]["kind"] == "relu" and rows["0"]["kind"] is None


def test_gradcheck_switches_off_what_declares_itself_stochastic():
    class Noisy(_Doubler):
        """Random in training mode, declared as such."""
        stochastic = True

        def _forward(self, x):
            noise = np.random.default_rng().random(x.shape) if self.training else 0.5
            return super()._forward(x) * noise

        def _backward(self, dy, need_dx=True):
            return super()._backward(dy) * 0.5

    model = Sequential(Dense(3, 4, rng=0, dtype=np.float64), Noisy(),
                       Dense(4, 2, rng=1, dtype=np.float64))
    x = np.random.default_rng(1).standard_normal((5, 3))
    assert gradcheck(model, x).passed
    assert model[1].training                      # the user's model is not modified
