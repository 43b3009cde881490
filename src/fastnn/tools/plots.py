"""Pictures for babysitting training (needs matplotlib: ``pip install "fastnn[plot]"``).

Every function builds a `matplotlib.figure.Figure` directly (no pyplot, so no global
backend is switched and nothing pops up), saves it as PNG when `path` is given (Agg
renderer) and returns it.

* `plot_history(history)`: learning curves: loss and train / val accuracy per epoch.
* `init_comparison()`: the cs231n initialisation experiment: activation histograms of a
  10-layer tanh / ReLU net under small random (std 0.01), Xavier and He initialisation.
* `plot_activation_histograms(model, X)`: per-layer output histograms of any Sequential.
* `plot_update_ratios(monitor)`: update/weight ratio per weight over training, against
  cs231n's ~1e-3 rule of thumb.

`new_figure` and `save_figure` are the helpers behind them, for other tools' charts.

>>> from fastnn import plots
>>> fig, stds = plots.init_comparison("init.png", n=200, width=100)   # doctest: +SKIP
"""
import numpy as np

__all__ = ["plot_history", "init_comparison", "plot_activation_histograms",
           "plot_update_ratios"]

_INSTALL = 'fastnn.tools.plots needs matplotlib; install it with: pip install "fastnn[plot]"'


def new_figure(figsize):
    """An empty Figure of `figsize` inches, constrained layout (ImportError naming the
    install when matplotlib is missing)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(_INSTALL) from None
    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig, path, dpi=100):
    """Write `fig` as PNG to `path` (nothing when path is None); returns fig."""
    if path is not None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        FigureCanvasAgg(fig)
        fig.savefig(path, dpi=dpi, format="png")
    return fig


def _values(seq):
    return np.array([np.nan if v is None else v for v in seq], dtype=float)


def plot_history(history, path=None, title=None):
    """Learning curves from a `History` (or its ``as_dict()``): the loss (train and val)
    and, for classification, train vs val accuracy; the best epoch is marked. Saves a
    PNG to `path` when given; returns the Figure."""
    h = history.as_dict() if hasattr(history, "as_dict") else dict(history)
    epochs = np.asarray(h["epoch"], dtype=float)
    if not len(epochs):
        raise ValueError("plot_history: the history is empty")
    has_acc = any(v is not None for v in h.get("accuracy", []))
    fig = new_figure((10 if has_acc else 5.5, 4))
    from matplotlib.ticker import MaxNLocator
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    best = getattr(history, "best_epoch", None)
    panels = [("loss", "loss", "val_loss")] + ([("accuracy", "accuracy", "val_accuracy")]
                                                if has_acc else [])
    for ax, (label, tr, va) in zip(axes, panels):
        ax.plot(epochs, _values(h[tr]), "o-", ms=3, label="train")
        if any(v is not None for v in h.get(va, [])):
            ax.plot(epochs, _values(h[va]), "s-", ms=3, label="validation")
        if best is not None:
            ax.axvline(best, color="gray", ls="--", lw=0.8, label="best epoch %d" % best)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if has_acc:
        axes[1].set_title("train vs validation accuracy")
    axes[0].set_title("loss")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _normal_001(shape, rng=None, dtype=np.float32):
    from .. import init
    return init.normal(shape, rng=rng, dtype=dtype, std=0.01)


_INITS = {"small": ("small random (std 0.01)", _normal_001),
          "xavier": ("Xavier", "xavier_normal"),
          "he": ("He", "he_normal")}


def init_comparison(path=None, activations=("tanh", "relu"), inits=("small", "xavier", "he"),
                    n_layers=10, width=500, n=1000, seed=0, bins=40):
    """The cs231n weight-initialisation experiment.

    For every activation ("tanh", "relu", "sigmoid") and initialisation ("small":
    N(0, 0.01^2), "xavier": Xavier normal, "he": He normal) build `n_layers` Dense(width,
    width) layers with that activation, push `n` standard-normal examples through them
    and histogram every layer's output (one row per combination, one column per layer;
    each panel's title gives the std). Returns ``(figure, stds)`` with ``stds[(act,
    init)]`` the list of per-layer output standard deviations. Saves a PNG to `path` when
    given. Small init makes the activations collapse towards zero, Xavier suits tanh,
    He suits ReLU.
    """
    from ..train.diagnostics import layer_outputs
    from ..layers import Dense, ReLU, Sequential, Sigmoid, Tanh
    acts = {"tanh": Tanh, "relu": ReLU, "sigmoid": Sigmoid}
    for a in activations:
        if a not in acts:
            raise ValueError("init_comparison: activation must be one of %s, got %r"
                             % (sorted(acts), a))
    for i in inits:
        if i not in _INITS:
            raise ValueError("init_comparison: init must be one of %s, got %r"
                             % (sorted(_INITS), i))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, width)).astype(np.float32)
    combos = [(a, i) for a in activations for i in inits]
    fig = new_figure((1.6 * n_layers + 1.5, 1.6 * len(combos) + 0.6))
    axes = fig.subplots(len(combos), n_layers, squeeze=False)
    stds = {}
    for r, (act, ini) in enumerate(combos):
        label, init = _INITS[ini]
        layers = []
        for k in range(n_layers):
            layers += [Dense(width, width, init=init, rng=rng), acts[act]()]
        outs = [o for name, m, o in layer_outputs(Sequential(*layers), X)
                if type(m).__name__ != "Dense"]
        stds[(act, ini)] = [float(o.std()) for o in outs]
        lo, hi = {"tanh": (-1, 1), "sigmoid": (0, 1)}.get(act, (0, None))
        for k, o in enumerate(outs):
            ax = axes[r, k]
            vals = o.reshape(-1)
            top = hi if hi is not None else max(float(np.percentile(vals, 99.5)), 1e-6)
            ax.hist(vals, bins=bins, range=(lo, top), color="C%d" % (r % 10))
            ax.set_title("layer %d, std %.2g" % (k + 1, o.std()), fontsize=7)
            ax.tick_params(labelsize=6)
            ax.set_yticks([])
        axes[r, 0].set_ylabel("%s\n%s" % (act, label), fontsize=8)
    fig.suptitle("activation histograms per layer (%d layers of %d units, %d inputs)"
                 % (n_layers, width, n))
    return save_figure(fig, path, dpi=80), stds


def plot_activation_histograms(model, X, path=None, bins=50, mode="eval", layers="all"):
    """Histogram of every layer's output of a Sequential `model` on inputs X (one forward;
    the model's state is left unchanged). layers: "all" or "activations" (only ReLU /
    Tanh / Sigmoid outputs, including Dense layers with a fused one). Returns the
    Figure; saves a PNG to `path` when given."""
    from ..train.diagnostics import layer_outputs
    outs = layer_outputs(model, X, mode=mode)
    if layers == "activations":
        outs = [t for t in outs if t[1].watch_kind() is not None]
    elif layers != "all":
        raise ValueError('plot_activation_histograms: layers must be "all" or "activations"')
    if not outs:
        raise ValueError("plot_activation_histograms: no layer to plot")
    cols = min(len(outs), 5)
    rows = -(-len(outs) // cols)
    fig = new_figure((3 * cols, 2.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax, (name, m, o) in zip(axes, outs):
        ax.hist(o.reshape(-1), bins=bins)
        ax.set_title("%s %s\nmean %+.2f std %.2f" % (name, type(m).__name__, o.mean(), o.std()),
                     fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(outs):]:
        ax.set_visible(False)
    return save_figure(fig, path)


def plot_update_ratios(monitor, path=None, target=1e-3):
    """Update/weight ratio of every weight over the sampled training steps, log scale,
    with the ~1e-3 rule of thumb and the monitor's warning band. `monitor`: a
    `fastnn.train.diagnostics.Monitor` or a Trainer trained with diagnostics. Returns the
    Figure; saves a PNG to `path` when given."""
    mon = getattr(monitor, "monitor", monitor)
    series = getattr(mon, "ratio_series", None)
    if not series:
        raise ValueError("plot_update_ratios: no update ratios recorded (train with "
                         "Trainer(..., diagnostics=True) first)")
    fig = new_figure((7, 4))
    ax = fig.subplots()
    for name, pts in series.items():
        steps, ratios = zip(*pts)
        ratios = np.maximum(np.asarray(ratios, dtype=float), 1e-12)
        ax.plot(steps, ratios, ".-", ms=3, lw=1, label=name)
    lo, hi = getattr(mon, "update_ratio_range", (1e-5, 3e-2))
    ax.axhline(target, color="k", ls="--", lw=1, label="~%g rule of thumb" % target)
    ax.axhspan(lo, hi, color="green", alpha=0.07, label="no warning")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("||update|| / ||weight||")
    ax.set_title("update-to-weight ratio per weight")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
