"""Babysitting diagnostics: planted faults are reported, a healthy net stays quiet."""
import numpy as np
import pytest

from fastnn.core import rng as _random
from fastnn import data, optim
from fastnn.train import diagnostics
from fastnn.train.diagnostics import Monitor, Report, check_history, inspect, layer_outputs
from fastnn.layers import BatchNorm1d, Dense, ReLU, Sequential, Sigmoid, Tanh
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.train.trainer import History, Trainer


@pytest.fixture(scope="module")
def digits():
    X, y = data.load_digits()
    Xtr, Xva, ytr, yva = data.train_val_split(X, y, 0.2, stratify=True, rng=0)
    sc = data.Standardize().fit(Xtr)
    return sc.transform(Xtr), ytr, sc.transform(Xva), yva


def _train(model, digits, opt=None, epochs=2, **kw):
    Xtr, ytr, Xva, yva = digits
    opt = opt or optim.Adam(model.parameters(), lr=1e-3)
    tr = Trainer(model, SoftmaxCrossEntropy(), opt, diagnostics=kw.pop("diagnostics", True),
                 verbose=0, **kw)
    h = tr.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=epochs, seed=0)
    return tr, h


def _gaussian(shape, rng=None, dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def test_healthy_network_is_quiet(digits):
    _random.seed(0)
    model = Sequential(Dense(64, 128), BatchNorm1d(128), ReLU(), Dense(128, 64, activation="relu"),
                       Dense(64, 10))
    tr, h = _train(model, digits, epochs=8)
    assert h.warnings == [] and tr.monitor.warnings == []
    last = tr.monitor.epochs[-1]
    assert [r["layer"] for r in last] == ["0", "1", "2", "3", "4"]
    assert last[2]["dead"] < 0.1 and last[3]["dead"] < 0.2
    assert all(1e-5 < r["update_ratio"] < 3e-2 for r in last if r.get("update_ratio"))
    assert "no new problems" in str(last)


def test_dead_relus_are_reported(digits):
    _random.seed(0)
    model = Sequential(Dense(64, 64), ReLU(), Dense(64, 64), ReLU(), Dense(64, 10))
    model[2].bias.data = np.full(64, -10.0, np.float32)          # kills the second ReLU
    tr, h = _train(model, digits, epochs=1)
    assert len(h.warnings) == 1
    msg = h.warnings[0]
    assert msg.startswith("epoch 1: layer 3 (ReLU): 100% of units dead")
    assert "LeakyReLU" in msg and "learning rate" in msg
    assert tr.monitor.epochs[-1][3]["dead"] == 1.0
    assert tr.monitor.epochs[-1][1]["dead"] < 0.1                 # the first ReLU is fine


def test_vanishing_gradients_in_deep_sigmoid_net(digits):
    _random.seed(0)
    layers = []
    for _ in range(10):
        layers += [Dense(64, 64, init="xavier_normal"), Sigmoid()]
    model = Sequential(*layers, Dense(64, 10))
    tr, h = _train(model, digits, epochs=1)
    assert any("vanishing gradients" in w and "from layer 20 (Dense) to layer 0 (Dense)" in w
               for w in h.warnings), h.warnings
    rows = tr.monitor.epochs[-1]
    assert rows[20]["weight_grad_rms"] > 1e3 * rows[0]["weight_grad_rms"]


def test_saturated_tanh_is_reported(digits):
    _random.seed(0)
    model = Sequential(Dense(64, 64, init=_gaussian), Tanh(), Dense(64, 10))
    tr, h = _train(model, digits, epochs=1)
    assert any("layer 1 (Tanh)" in w and "saturated" in w and "Xavier" in w for w in h.warnings)
    assert tr.monitor.epochs[-1][1]["saturated"] > 0.5


def test_update_ratio_too_high_and_too_low(digits):
    _random.seed(0)
    model = Sequential(Dense(64, 64), ReLU(), Dense(64, 10))
    _, h = _train(model, digits, opt=optim.SGD(model.parameters(), lr=1.0), epochs=1)
    assert any("update/weight ratio" in w and "too high" in w for w in h.warnings)
    _random.seed(0)
    model = Sequential(Dense(64, 64, activation="relu"), Dense(64, 10))
    _, h = _train(model, digits, opt=optim.SGD(model.parameters(), lr=1e-7), epochs=3)
    assert any("update/weight ratio" in w and "too low" in w for w in h.warnings)
    assert any("epoch 3: train loss not decreasing" in w for w in h.warnings)


def test_low_update_ratio_not_reported_once_a_schedule_annealed_the_lr(digits):
    _random.seed(0)
    model = Sequential(Dense(64, 32, activation="relu"), Dense(32, 10))
    opt = optim.Adam(model.parameters(), lr=1e-3)
    _, h = _train(model, digits, opt=opt, epochs=4,
                  scheduler=optim.ExponentialLR(opt, gamma=1e-3))
    assert h.warnings == []


def test_initial_loss_check(digits):
    _random.seed(0)
    model = Sequential(Dense(64, 32, activation="relu"), Dense(32, 10, init=_gaussian))
    model[1].weight.data = model[1].weight.data * 30
    _, h = _train(model, digits, epochs=1)
    assert any("initial loss" in w and "2.3 of a freshly" in w for w in h.warnings)   # ln(10)


def test_sampling_interval_and_records(digits):
    _random.seed(0)
    model = Sequential(Dense(64, 16, activation="relu"), Dense(16, 10))
    tr, _ = _train(model, digits, epochs=2, diagnostics=Monitor(every=7))
    steps = -(-len(digits[0]) // 32)
    sampled = len(range(0, steps, 7))
    assert tr.monitor.epochs[0].title.endswith("(%d sampled steps)" % sampled)
    series = tr.monitor.ratio_series
    assert set(series) == {"0.weight", "1.weight"}
    assert [s for s, _ in series["0.weight"]] == [e * steps + k for e in range(2)
                                                  for k in range(0, steps, 7)]
    assert Monitor().interval(200) == 50 and Monitor().interval(40) == 10
    assert Monitor().interval(3) == 1
    with pytest.raises(ValueError):
        Monitor(every=0)


def test_monitor_on_a_non_sequential_model(digits):
    from fastnn.layers import Module

    class Wrapper(Module):
        def __init__(self):
            super().__init__()
            self.net = Sequential(Dense(64, 16, activation="relu", rng=0), Dense(16, 10, rng=1))

        def forward(self, x):
            return self.net.forward(x)

        def backward(self, dy):
            return self.net.backward(dy)

    tr, _ = _train(Wrapper(), digits, epochs=1)
    names = [r["layer"] for r in tr.monitor.epochs[-1]]
    assert names == ["net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias"]


def test_inspect_reports_and_leaves_the_model_unchanged(digits):
    Xtr, ytr, _, _ = digits
    _random.seed(0)
    model = Sequential(Dense(64, 32), BatchNorm1d(32), ReLU(), Dense(32, 10))
    model[0].bias.data = np.full(32, 0.0, np.float32)
    state = model.state_dict()
    model.eval()
    rep = inspect(model, Xtr[:256], ytr[:256])
    assert isinstance(rep, Report) and len(rep) == 4 and rep.ok
    assert [r["type"] for r in rep] == ["Dense", "BatchNorm1d", "ReLU", "Dense"]
    assert abs(rep[1]["mean"]) < 1e-3 and abs(rep[1]["std"] - 1) < 1e-2   # batch statistics
    assert rep[0]["weight_grad_rms"] > 0 and rep[3]["grad_rms"] > 0
    text = str(rep)
    assert "loss 2." in text and "dead" in text and "no problems found" in text
    assert not model.training
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in state.items())
    # forward only, and a planted fault
    model[3].bias.data = np.zeros(10, np.float32)
    model[1].beta.data = np.full(32, -50.0, np.float32)
    rep = inspect(model, Xtr[:256], mode="eval")
    assert rep[2]["dead"] == 1.0 and rep[0].get("weight_grad_rms") is None
    assert len(rep.warnings) == 1 and "layer 2 (ReLU): 100% of units dead" in rep.warnings[0]


def test_layer_outputs_copies_every_layer():
    model = Sequential(Dense(3, 5, rng=0), Tanh(), Dense(5, 2, rng=1))
    X = np.random.default_rng(0).standard_normal((4, 3))
    outs = layer_outputs(model, X)
    assert [(n, o.shape) for n, _, o in outs] == [("0", (4, 5)), ("1", (4, 5)), ("2", (4, 2))]
    np.testing.assert_allclose(outs[1][2], np.tanh(outs[0][2]), rtol=1e-6)
    np.testing.assert_allclose(outs[2][2], model(X), rtol=1e-6)


def _history(acc, val_acc, loss=None, n_val=None):
    h = History()
    h.n_val = n_val
    loss = loss or [1.0 / (i + 1) for i in range(len(acc))]
    for i, (a, v, lo) in enumerate(zip(acc, val_acc, loss)):
        h.append(epoch=i + 1, loss=lo, accuracy=a, val_loss=1 - v, val_accuracy=v)
    return h


def test_check_history_overfitting():
    h = _history([0.6, 0.7, 0.8, 0.9, 0.95, 0.99], [0.6, 0.7, 0.72, 0.66, 0.64, 0.62])
    msgs = check_history(h)
    assert len(msgs) == 1
    assert msgs[0].startswith("val accuracy falling since epoch 3 (0.72 -> 0.62) while train "
                              "accuracy rising")
    assert "regularization" in msgs[0]
    # noise on a small validation set is not overfitting
    h = _history([0.9, 0.95, 0.97, 0.98, 0.99], [0.95, 0.99, 0.97, 0.975, 0.97], n_val=144)
    assert check_history(h) == []
    # a large train / val gap is
    h = _history([0.9, 0.95, 0.99, 1.0], [0.6, 0.65, 0.7, 0.72])
    assert any("far above val accuracy" in m for m in check_history(h))


def test_check_history_loss_problems():
    h = _history([0.1] * 4, [0.1] * 4, loss=[2.30, 2.30, 2.29, 2.30])
    assert any(m.startswith("train loss not decreasing") for m in check_history(h))
    h = _history([0.5] * 5, [0.5] * 5, loss=[2.0, 0.5, 0.9, 1.4, 1.9])
    assert any(m.startswith("train loss rising") for m in check_history(h))
    h = _history([0.9] * 5, [0.9] * 5, loss=[1.0, 0.1, 0.01, 0.012, 0.02])
    assert check_history(h) == []                           # noise near zero loss
    h = History()
    for i, lo in enumerate([1.0, 0.5, 0.3, 0.2]):
        h.append(epoch=i + 1, loss=lo, val_loss=lo + 0.05)
    assert check_history(h, task="regression") == []


def test_diagnostics_module_exports():
    assert set(diagnostics.__all__) >= {"Monitor", "Report", "inspect", "check_history"}
