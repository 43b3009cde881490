"""Plots (skipped without matplotlib) and the install hint when it is missing."""
import sys

import numpy as np
import pytest

from fastnn.core import rng as _random
from fastnn import data, optim
from fastnn.tools import plots
from fastnn.layers import Dense, ReLU, Sequential
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.train.trainer import History, Trainer

PNG = b"\x89PNG\r\n\x1a\n"


def test_missing_matplotlib_gives_install_hint(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)        # import matplotlib -> error
    h = History()
    h.append(epoch=1, loss=1.0)
    with pytest.raises(ImportError, match=r'pip install "fastnn\[plot\]"'):
        plots.plot_history(h)


@pytest.fixture(scope="module")
def trained():
    pytest.importorskip("matplotlib")
    X, y = data.make_spirals(60, 3, rng=0)
    _random.seed(0)
    model = Sequential(Dense(2, 32), ReLU(), Dense(32, 3))
    tr = Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=1e-2),
                 diagnostics=True, verbose=0)
    tr.fit(X, y, validation_data=(X, y), epochs=5, batch_size=16, seed=0)
    return tr, X


def test_plot_history_png(trained, tmp_path):
    tr, _ = trained
    path = tmp_path / "curves.png"
    fig = plots.plot_history(tr.history, str(path), title="spirals")
    assert path.read_bytes().startswith(PNG)
    assert len(fig.axes) == 2
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines[0].get_xdata()) == 5
    assert acc_ax.get_title() == "train vs validation accuracy"
    # regression history (no accuracy): one panel; dict input accepted
    h = History()
    for i in range(3):
        h.append(epoch=i + 1, loss=1.0 / (i + 1), val_loss=1.2 / (i + 1))
    assert len(plots.plot_history(h.as_dict()).axes) == 1
    with pytest.raises(ValueError, match="empty"):
        plots.plot_history(History())


def test_update_ratio_and_activation_histograms(trained, tmp_path):
    tr, X = trained
    fig = plots.plot_update_ratios(tr, str(tmp_path / "ratios.png"))
    assert (tmp_path / "ratios.png").read_bytes().startswith(PNG)
    assert fig.axes[0].get_yscale() == "log"
    fig = plots.plot_activation_histograms(tr.model, X, str(tmp_path / "hist.png"))
    assert len([a for a in fig.axes if a.get_visible()]) == 3
    fig = plots.plot_activation_histograms(tr.model, X, layers="activations")
    assert len([a for a in fig.axes if a.get_visible()]) == 1
    model = Sequential(Dense(2, 4, rng=0), ReLU())
    with pytest.raises(ValueError, match="no update ratios"):
        plots.plot_update_ratios(Trainer(model, SoftmaxCrossEntropy(),
                                         optim.SGD(model.parameters(), lr=0.1), verbose=0,
                                         diagnostics=True))


def test_init_comparison(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "init.png"
    fig, stds = plots.init_comparison(str(path), n=200, width=64, n_layers=6)
    assert path.read_bytes().startswith(PNG)
    assert len(fig.axes) == 6 * 6
    assert set(stds) == {(a, i) for a in ("tanh", "relu") for i in ("small", "xavier", "he")}
    assert stds[("tanh", "small")][-1] < 1e-4          # small weights: activations vanish
    assert stds[("relu", "small")][-1] < 1e-4
    assert 0.2 < stds[("tanh", "xavier")][-1] < 0.9    # Xavier keeps tanh alive
    assert stds[("relu", "he")][-1] > 0.3              # He keeps ReLU alive
    assert stds[("relu", "xavier")][-1] < stds[("relu", "he")][-1] / 2
    with pytest.raises(ValueError):
        plots.init_comparison(activations=("softsign",))
    assert np.isfinite(stds[("tanh", "he")]).all()
