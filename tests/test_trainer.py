"""Trainer / History: convergence, best-parameter restore, early stopping, non-finite
detection, KeyboardInterrupt, evaluation modes, tasks and progress output."""
import io

import numpy as np
import pytest

from fastnn.core import rng as _random
from fastnn import data, optim
from fastnn.layers import BatchNorm1d, Dense, Dropout, Module, Parameter, ReLU, Sequential
from fastnn.losses import MSE, BCEWithLogits, MulticlassHinge, SoftmaxCrossEntropy
from fastnn.train.trainer import History, NonFiniteError, Trainer


def _digits(n_val=0.15, seed=0):
    X, y = data.load_digits()
    Xtr, Xte, ytr, yte = data.train_val_split(X, y, 0.2, stratify=True, rng=seed)
    sc = data.Standardize().fit(Xtr)
    return sc.transform(Xtr), ytr, sc.transform(Xte), yte


def _noisy_digits():
    """300 training digits with half the labels randomised, 600 clean validation digits:
    a net that memorises the noise peaks early on validation, then gets worse."""
    X, y = data.load_digits()
    X = X / 16.0
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, va = idx[:300], idx[300:900]
    ytr = y[tr].copy()
    flip = rng.random(300) < 0.5
    ytr[flip] = rng.integers(0, 10, flip.sum())
    return X[tr], ytr, X[va], y[va]


def _big_net():
    return Sequential(Dense(64, 128, activation="relu"), Dense(128, 128, activation="relu"),
                      Dense(128, 10))


def _states(trainer):
    """Callback collecting the parameters after every epoch (before any restore)."""
    states = {}

    def cb(tr, epoch, row):
        states[epoch] = tr.model.state_dict()
    trainer.callbacks.append(cb)
    return states


def _same(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_spirals_reach_target_accuracy():
    _random.seed(0)
    X, y = data.make_spirals(100, 3, rng=0)
    Xtr, Xva, ytr, yva = data.train_val_split(X, y, 0.2, stratify=True, rng=0)
    model = Sequential(Dense(2, 100, activation="relu"), Dense(100, 3))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=2e-2),
                 verbose=0)
    h = tr.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=60, batch_size=32, seed=0)
    assert len(h) == 60 and h.stop_reason == "completed"
    assert tr.evaluate(Xtr, ytr)["accuracy"] >= 0.95
    assert tr.evaluate(Xva, yva)["accuracy"] >= 0.9
    assert h.loss[-1] < h.loss[0] / 5


def test_digits_reach_target_accuracy_and_history_fields():
    Xtr, ytr, Xte, yte = _digits()
    _random.seed(0)
    model = Sequential(Dense(64, 64), BatchNorm1d(64), ReLU(), Dense(64, 10))
    opt = optim.Adam(model.parameters(), lr=3e-3)
    tr = Trainer(model, SoftmaxCrossEntropy(), opt, scheduler=optim.StepLR(opt, 2, gamma=0.5),
                 verbose=0)
    h = tr.fit(Xtr, ytr, validation_data=(Xte, yte), epochs=6, batch_size=32, seed=0)
    assert tr.evaluate(Xte, yte)["accuracy"] >= 0.95
    d = h.as_dict()
    assert list(d) == list(History.KEYS)
    assert all(len(v) == 6 for v in d.values())
    assert h.epoch == [1, 2, 3, 4, 5, 6]
    assert h.lr == pytest.approx([3e-3, 3e-3, 1.5e-3, 1.5e-3, 7.5e-4, 7.5e-4])
    assert all(t > 0 for t in h.time) and all(0 <= a <= 1 for a in h.accuracy)
    assert h["val_accuracy"] is h.val_accuracy
    assert "val_accuracy" in str(h) and "History(6 epochs" in repr(h)
    # a second fit continues the epoch numbering
    h2 = tr.fit(Xtr, ytr, epochs=1, seed=0)
    assert h2.epoch == [7] and h2.val_loss == [None] and tr.history is h2


def test_best_parameters_are_restored():
    Xtr, ytr, Xva, yva = _noisy_digits()
    _random.seed(0)
    model = _big_net()
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=3e-3),
                 verbose=0)
    states = _states(tr)
    h = tr.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=25, batch_size=16, seed=0)
    best = h.best_epoch
    assert best is not None and best <= 15 < len(h)           # it really overfitted
    assert max(h.val_accuracy) - h.val_accuracy[-1] > 0.05
    assert h.val_accuracy[best - 1] == max(h.val_accuracy)
    assert _same(model.state_dict(), states[best])
    assert not _same(model.state_dict(), states[len(h)])
    assert tr.evaluate(Xva, yva)["accuracy"] == pytest.approx(h.val_accuracy[best - 1])


def test_restore_best_false_keeps_the_last_parameters():
    Xtr, ytr, Xva, yva = _noisy_digits()
    _random.seed(0)
    model = _big_net()
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=3e-3),
                 verbose=0, restore_best=False)
    states = _states(tr)
    h = tr.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=12, batch_size=16, seed=0)
    assert _same(model.state_dict(), states[len(h)])


def test_early_stopping_with_patience():
    Xtr, ytr, Xva, yva = _noisy_digits()
    _random.seed(0)
    model = _big_net()
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=3e-3),
                 verbose=0, patience=4)
    states = _states(tr)
    h = tr.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=60, batch_size=16, seed=0)
    assert h.stop_reason == "early_stopping"
    assert len(h) == h.best_epoch + 4 < 60
    assert _same(model.state_dict(), states[h.best_epoch])


def test_monitor_val_loss_and_min_delta():
    Xtr, ytr, Xva, yva = _noisy_digits()
    _random.seed(0)
    model = _big_net()
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=3e-3),
                 verbose=0, monitor="val_loss")
    h = tr.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=15, batch_size=16, seed=0)
    assert h.val_loss[h.best_epoch - 1] == min(h.val_loss)


def test_non_finite_loss_stops_with_clear_error_and_finite_params():
    Xtr, ytr, _, _ = _digits()
    _random.seed(0)
    model = Sequential(Dense(64, 64, activation="relu"), Dense(64, 10))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=1e12),
                 verbose=0)
    states = {0: model.state_dict()}
    tr.callbacks.append(lambda t, e, row: states.__setitem__(e, t.model.state_dict()))
    with pytest.raises(NonFiniteError) as info:
        tr.fit(Xtr, ytr, epochs=5, batch_size=32, seed=0)
    err = info.value
    msg = str(err)
    assert "non-finite" in msg and "epoch %d, step %d" % (err.epoch, err.step) in msg
    assert "learning rate" in msg
    assert isinstance(err, FloatingPointError) and isinstance(err, RuntimeError)
    for p in model.parameters():
        assert np.isfinite(p.data).all()
    # back at the parameters the failing epoch started from
    assert _same(model.state_dict(), states[err.epoch - 1])
    assert err.history is tr.history and tr.history.stop_reason == "non_finite"
    assert len(tr.history) == err.epoch - 1


class _NaNGrad(Module):
    """Identity layer with a learnable scale whose gradient turns NaN on call `bad`."""

    def __init__(self, n, bad):
        super().__init__()
        self.scale = Parameter(np.ones(n, np.float32))
        self.calls, self.bad = 0, bad

    def forward(self, x):
        self.x = x
        return x * self.scale.data

    def backward(self, dy):
        self.calls += 1
        g = (dy * self.x).sum(axis=0)
        if self.calls == self.bad:
            g[0] = np.nan
        self.scale.grad = g
        return dy * self.scale.data


def test_non_finite_gradient_names_the_layer():
    Xtr, ytr, _, _ = _digits()
    _random.seed(0)
    model = Sequential(Dense(64, 16, activation="relu"), _NaNGrad(16, bad=50), Dense(16, 10))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=1e-3),
                 verbose=0)
    with pytest.raises(NonFiniteError) as info:
        tr.fit(Xtr, ytr, epochs=3, batch_size=32, seed=0)
    err = info.value
    assert err.what == "gradient" and err.where == "1.scale"
    assert "1.scale (layer 1, _NaNGrad)" in str(err)
    assert (err.epoch, err.step, err.global_step) == (2, 50 - 45, 50)   # 45 steps per epoch
    assert "non-finite gradient at epoch 2, step 5 (global step 50)" in str(err)
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def test_nan_in_last_step_of_epoch_is_caught():
    X = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    y = np.arange(64) % 10
    model = Sequential(Dense(64, 16, activation="relu", rng=0), _NaNGrad(16, bad=2),
                       Dense(16, 10, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), verbose=0)
    with pytest.raises(NonFiniteError, match="1.scale"):
        tr.fit(X, y, epochs=2, batch_size=32, seed=0)
    assert all(np.isfinite(p.data).all() for p in model.parameters())


def _interrupting(tr, at_step):
    real = tr._train_step

    def step(xb, yb):
        if tr.global_step == at_step:
            raise KeyboardInterrupt
        return real(xb, yb)
    tr._train_step = step


def test_keyboard_interrupt_keeps_best_params_and_history():
    Xtr, ytr, Xva, yva = _noisy_digits()
    _random.seed(0)
    model = _big_net()
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=3e-3),
                 verbose=0)
    states = _states(tr)
    _interrupting(tr, at_step=19 * 12 + 5)          # 19 steps per epoch: inside epoch 13
    h = tr.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=30, batch_size=16, seed=0)
    assert h.interrupted and h.stop_reason == "interrupted" and tr.history is h
    assert len(h) == 12 and h.best_epoch < 12
    assert _same(model.state_dict(), states[h.best_epoch])
    assert model.training


def test_keyboard_interrupt_reraise_option():
    X, y = data.make_spirals(50, 3, rng=0)
    model = Sequential(Dense(2, 16, activation="relu", rng=0), Dense(16, 3, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()), verbose=0,
                 reraise_interrupt=True)
    _interrupting(tr, at_step=7)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(X, y, validation_data=(X, y), epochs=5, batch_size=32, seed=0)
    assert tr.history.interrupted and len(tr.history) == 1


def test_evaluate_and_predict_use_eval_mode_and_restore_train_mode():
    X, y = data.make_spirals(50, 3, rng=0)
    model = Sequential(Dense(2, 32, activation="relu", rng=0), Dropout(0.5, rng=0),
                       Dense(32, 3, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()), verbose=0,
                 eval_batch_size=7)
    tr.fit(X, y, epochs=2, batch_size=16, seed=0)
    assert model.training
    a, b = tr.evaluate(X, y), tr.evaluate(X, y, batch_size=1000)
    # deterministic (dropout off); batches of 7 and of 150 are differently blocked products
    assert a == pytest.approx(b, rel=1e-5)
    assert model.training
    model.eval()
    tr.evaluate(X, y)
    assert not model.training                        # the previous mode comes back
    model.train()
    scores = tr.decision_function(X)
    assert scores.shape == (150, 3) and model.training
    # batch 7 against batch 150: differently blocked products, so float tolerance
    np.testing.assert_allclose(scores, model.eval()(X), rtol=1e-5, atol=1e-6)
    model.train()
    pred = tr.predict(X)
    assert pred.dtype == np.int64 and pred.shape == (150,)
    assert np.array_equal(pred, scores.argmax(1))
    assert a["accuracy"] == pytest.approx(np.mean(pred == y))
    proba = tr.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert np.array_equal(proba.argmax(1), pred)


def test_hinge_classification_and_no_probabilities():
    X, y = data.make_spirals(60, 3, rng=1)
    _random.seed(0)
    model = Sequential(Dense(2, 64, activation="relu"), Dense(64, 3))
    tr = Trainer(model, MulticlassHinge(), optim.Adam(model.parameters(), lr=1e-2), verbose=0)
    h = tr.fit(X, y, epochs=40, batch_size=30, seed=0)
    assert tr.task == "multiclass" and h.accuracy[-1] > 0.8
    with pytest.raises(ValueError, match="not probabilities"):
        tr.predict_proba(X)


def test_binary_bce_accuracy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 2)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(np.float32)[:, None]       # XOR quadrants
    _random.seed(0)
    model = Sequential(Dense(2, 32, activation="tanh"), Dense(32, 1))
    tr = Trainer(model, BCEWithLogits(), optim.Adam(model.parameters(), lr=2e-2), verbose=0)
    h = tr.fit(X, y, validation_data=(X, y), epochs=40, batch_size=40, seed=0)
    assert tr.task == "binary"
    assert h.accuracy[-1] > 0.9 and h.val_accuracy[-1] > 0.9
    assert tr.predict(X).shape == (400, 1)
    p = tr.predict_proba(X)
    assert np.all((p >= 0) & (p <= 1))
    assert np.mean((p > 0.5) == (y > 0.5)) == pytest.approx(tr.evaluate(X, y)["accuracy"])


def test_regression_mse_reports_loss_only():
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (300, 1)).astype(np.float32)
    y = np.sin(X).astype(np.float32)
    _random.seed(0)
    model = Sequential(Dense(1, 32, activation="tanh"), Dense(32, 1))
    tr = Trainer(model, MSE(), optim.Adam(model.parameters(), lr=1e-2), verbose=0)
    h = tr.fit(X, y, validation_data=(X, y), epochs=30, batch_size=32, seed=0)
    assert tr.task == "regression" and tr.monitor_key == "val_loss"
    assert all(a is None for a in h.accuracy) and all(a is None for a in h.val_accuracy)
    assert h.loss[-1] < 0.02
    assert set(tr.evaluate(X, y)) == {"loss"}
    assert tr.predict(X).shape == (300, 1)
    with pytest.raises(ValueError):
        tr.predict_proba(X)


def test_seeded_fit_is_reproducible():
    X, y = data.make_spirals(40, 3, rng=0)

    def run():
        _random.seed(3)
        model = Sequential(Dense(2, 16, activation="relu"), Dense(16, 3))
        tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()), verbose=0)
        return tr.fit(X, y, epochs=3, batch_size=8, seed=5).loss
    assert run() == run()


def test_verbose_output(capsys):
    X, y = data.make_spirals(30, 3, rng=0)
    model = Sequential(Dense(2, 8, activation="relu", rng=0), Dense(8, 3, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()), verbose=0)
    tr.fit(X, y, validation_data=(X, y), epochs=2, seed=0)
    assert capsys.readouterr().out == ""
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()), verbose=1)
    tr.fit(X, y, validation_data=(X, y), epochs=2, seed=0)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("epoch 1/2  loss ") and "val_acc" in lines[0]
    assert lines[1].startswith("epoch 2/2")


def test_tqdm_progress_bar():
    pytest.importorskip("tqdm")
    X, y = data.make_spirals(30, 3, rng=0)
    model = Sequential(Dense(2, 8, activation="relu", rng=0), Dense(8, 3, rng=1))
    out = io.StringIO()
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()), verbose=1,
                 progress="tqdm", stream=out)
    tr.fit(X, y, epochs=2, batch_size=10, seed=0)
    text = out.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "9/9" in text and "loss" in text


def test_callback_can_stop_training():
    X, y = data.make_spirals(30, 3, rng=0)
    model = Sequential(Dense(2, 8, activation="relu", rng=0), Dense(8, 3, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()), verbose=0,
                 callbacks=[lambda t, epoch, row: epoch == 2])
    h = tr.fit(X, y, epochs=10, seed=0)
    assert len(h) == 2 and h.stop_reason == "callback"


def test_bad_arguments():
    X, y = data.make_spirals(10, 3, rng=0)
    model = Sequential(Dense(2, 4, rng=0), Dense(4, 3, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), verbose=0)
    with pytest.raises(ValueError, match="epochs"):
        tr.fit(X, y, epochs=0)
    with pytest.raises(ValueError, match="batch_size"):
        tr.fit(X, y, batch_size=0)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf.*row 3"):
        tr.fit(Xn, y)
    with pytest.raises(TypeError, match="integer class labels"):
        tr.fit(X, y + 0.5)
    with pytest.raises(ValueError, match="same number of samples"):
        tr.fit(X, y[:-1])
    with pytest.raises(ValueError, match="needs validation_data"):
        Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1),
                verbose=0, patience=2).fit(X, y)
    with pytest.raises(ValueError, match="verbose"):
        Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), verbose=3)
    with pytest.raises(TypeError, match="loss"):
        Trainer(model, "ce", optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="val_accuracy"):
        Trainer(model, MSE(), optim.SGD(model.parameters(), lr=0.1), monitor="val_accuracy")


def test_float64_model_and_unshuffled_batches():
    X, y = data.make_spirals(40, 3, rng=0)                  # float32 data
    model = Sequential(Dense(2, 16, activation="relu", dtype=np.float64, rng=0),
                       Dense(16, 3, dtype=np.float64, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), verbose=0)
    assert tr.dtype == np.float64
    a = tr.fit(X, y, epochs=2, batch_size=16, shuffle=False, seed=1).loss
    assert tr.decision_function(X).dtype == np.float64
    model2 = Sequential(Dense(2, 16, activation="relu", dtype=np.float64, rng=0),
                        Dense(16, 3, dtype=np.float64, rng=1))
    tr2 = Trainer(model2, SoftmaxCrossEntropy(), optim.SGD(model2.parameters(), lr=0.1),
                  verbose=0)
    assert tr2.fit(X, y, epochs=2, batch_size=16, shuffle=False, seed=2).loss == a


def test_fused_loss_and_count_match_the_separate_calls(monkeypatch):
    """The Trainer's one-call loss + accuracy for SoftmaxCrossEntropy gives the same
    history, bit for bit, as calling the loss and counting argmax hits separately."""
    import fastnn
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 6)).astype(np.float32)
    y = rng.integers(0, 4, 90)

    def run(fused):
        fastnn.seed(0)
        model = fastnn.Sequential(fastnn.Dense(6, 8, rng=0), fastnn.ReLU(),
                                  fastnn.Dense(8, 4, rng=1))
        t = fastnn.Trainer(model, fastnn.SoftmaxCrossEntropy(),
                           fastnn.optim.SGD(model.parameters(), lr=0.1), verbose=0)
        if not fused:
            t._fused_loss = None
        h = t.fit(X[:60], y[:60], validation_data=(X[60:], y[60:]), epochs=3,
                  batch_size=16)
        return h.loss, h.accuracy, h.val_loss, h.val_accuracy
    fused, plain = run(True), run(False)
    assert fused == plain and all(len(v) == 3 for v in fused)


def test_fused_loss_declines_what_it_cannot_take():
    import fastnn
    crit = fastnn.SoftmaxCrossEntropy()
    z = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 2, 0])
    assert crit.loss_and_hits(z, y) is not None
    for pred, target in [(z[:, :2].copy().T, y[:2]), (np.asfortranarray(np.zeros((4, 3))), y),
                         (z, y.astype(np.int32)), (z, np.array([0, 1, 3, 0])),
                         (z, np.array([0, 1, -1, 0])), (z.tolist(), y), (z, y[:3])]:
        assert crit.loss_and_hits(pred, target) is None


# ------------------------------------------------------------------ habits
def test_history_rows_by_position_and_columns_by_name():
    X, y = data.make_spirals(20, 3, rng=0)
    model = Sequential(Dense(2, 8, activation="relu", rng=0), Dense(8, 3, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1),
                 verbose=0)
    h = tr.fit(X, y, epochs=3, seed=0)
    assert h[-1] == h.last() and h[-1]["epoch"] == 3 and h[0]["epoch"] == 1
    assert h["loss"] == h.loss and [row["epoch"] for row in h] == [1, 2, 3]
    with pytest.raises(IndexError):
        h[3]
    with pytest.raises(KeyError, match="no column 'acc'"):
        h["acc"]


def test_trainer_repr_says_what_it_trains():
    model = Sequential(Dense(2, 8, rng=0), Dense(8, 3, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()), verbose=0)
    assert repr(tr) == ("Trainer(model=Sequential with 51 parameters, "
                        "loss=SoftmaxCrossEntropy(), optimizer=Adam, scheduler=None, "
                        "task='multiclass', epochs_done=0)")


def test_integer_inputs_follow_the_layers_rule():
    """One rule at both doors: integer (and bool) X raise TypeError, floats convert."""
    X, y = data.make_spirals(10, 3, rng=0)
    model = Sequential(Dense(2, 4, rng=0), Dense(4, 3, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), verbose=0)
    Xi = np.round(X * 10).astype(np.int64)
    with pytest.raises(TypeError, match="Sequential.*float"):
        model(Xi)
    with pytest.raises(TypeError, match="Trainer.fit: X must be a float array.*astype"):
        tr.fit(Xi, y)
    with pytest.raises(TypeError, match="Trainer.evaluate: X must be a float array"):
        tr.evaluate(Xi, y)
    assert tr.epochs_done == 0
    tr.fit(X.astype(np.float16), y, epochs=1)                    # floats convert
    assert tr.epochs_done == 1


def test_labels_are_checked_once_before_any_step():
    X, y = data.make_spirals(100, 3, rng=0)
    y = y.copy()
    y[-1] = 3                                       # one bad label, in the last row
    model = Sequential(Dense(2, 8, rng=0), Dense(8, 3, rng=1))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=0.1), verbose=0)
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\).*got 3 at row 299"):
        tr.fit(X, y, batch_size=3)
    assert tr.global_step == 0 and len(tr.history) == 0
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))
    with pytest.raises(ValueError, match="fit \\(validation\\): labels"):
        tr.fit(X, np.zeros(300, np.int64), validation_data=(X, y))
    with pytest.raises(ValueError, match="Trainer.evaluate: labels"):
        tr.evaluate(X, y)


def test_targets_shaped_unlike_the_output_are_refused_up_front():
    X = np.random.default_rng(0).standard_normal((30, 2)).astype(np.float32)
    model = Sequential(Dense(2, 1, rng=0))
    tr = Trainer(model, BCEWithLogits(), optim.SGD(model.parameters(), lr=0.1), verbose=0)
    with pytest.raises(ValueError, match=r"y must have the model's output shape \(N, 1\)"):
        tr.fit(X, (X[:, 0] > 0).astype(np.float32))
    assert tr.global_step == 0


def test_trainer_asks_the_loss_for_its_task():
    class Ranking(SoftmaxCrossEntropy):
        """A user's loss: its class name is in no table."""
    model = Sequential(Dense(2, 3, rng=0))
    tr = Trainer(model, Ranking(), optim.SGD(model.parameters(), lr=0.1), verbose=0)
    assert tr.task == "multiclass" and tr.monitor_key == "val_accuracy"
    proba = tr.predict_proba(np.ones((4, 2), np.float32))
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
