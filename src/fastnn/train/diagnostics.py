"""Babysitting a network while it learns (the cs231n "Training Neural Networks" checks).

Two entry points:

* ``Trainer(..., diagnostics=True)`` (or ``diagnostics=Monitor(...)`` to tune it) samples
  statistics on every k-th training step, from arrays the step computes anyway (each
  layer's output, the gradient flowing into it, the parameter gradients and the actual
  update), and turns them into plain-language warnings at the end of each epoch.
* ``inspect(model, X, y)`` runs one forward (and backward, when labels are given) and
  returns a per-layer `Report` table.

What is measured, per layer: activation mean / std; for Sigmoid / Tanh outputs the
fraction of saturated units (tanh: ``|y| > threshold``, sigmoid: ``y > threshold`` or
``y < 1 - threshold``; threshold 0.99 by default); for ReLU outputs the fraction of dead
units (never positive on any sampled example of the epoch). For images (N, C, H, W) a
unit is a channel: a dead channel is positive nowhere on any sampled example, and the
saturated fraction counts every value (the mean of the per-channel fractions, the
channels being of equal size). Also the RMS of the gradient flowing into the layer's
output; and per weight the gradient RMS and the
update-to-weight ratio ``||w_after - w_before|| / ||w_after||`` (the real update: learning
rate, momentum / Adam scaling and weight decay included; cs231n's rule of thumb is
~1e-3).

>>> import numpy as np, fastnn
>>> from fastnn.layers import Sequential, Dense, ReLU
>>> from fastnn.losses import SoftmaxCrossEntropy
>>> from fastnn import diagnostics
>>> model = Sequential(Dense(4, 16, rng=0), ReLU(), Dense(16, 3, rng=1))
>>> X = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
>>> y = np.arange(64) % 3
>>> report = diagnostics.inspect(model, X, y)
>>> [row["layer"] for row in report.rows]
['0', '1', '2']
>>> print(report)                                                   # doctest: +SKIP
"""
import math
from collections import defaultdict

import numpy as np

from ..layers import Module

__all__ = ["Monitor", "Report", "inspect", "check_history", "layer_outputs"]


def _named_layers(model):
    """[(name, layer)] of the leaf layers `model` applies in order (`flat_layers`), each
    named by its qualified name in the model ("0", "2.1", ...); a model that is its own
    only layer (or no fastnn Module) is named by its type."""
    layers = model.flat_layers() if isinstance(model, Module) else [model]
    if len(layers) == 1 and layers[0] is model:
        return [(type(model).__name__, model)]
    names = defaultdict(list)            # a module used twice has two names, in order
    for name, m in model.named_modules():
        names[id(m)].append(name)
    return [(names[id(m)].pop(0), m) for m in layers]


def _watch_kind(layer):
    """What to watch at the layer's output (Module.watch_kind; None for other objects)."""
    return layer.watch_kind() if isinstance(layer, Module) else None


def _fwd(module):
    return getattr(module, "_forward", None) or module.forward


def _bwd(module):
    f = getattr(module, "_backward", None)
    if f is not None:
        return f
    return lambda dy, need_dx=True: module.backward(dy)


def _rms(a):
    """Root mean square of an array (one BLAS dot)."""
    if a.size == 0:
        return 0.0
    flat = a.reshape(-1)
    return math.sqrt(float(np.dot(flat, flat)) / flat.size)


def _norm(a):
    flat = a.reshape(-1)
    return math.sqrt(float(np.dot(flat, flat)))


def _as_model_input(model, X):
    dt = getattr(model, "dtype", None) or np.float32
    return np.ascontiguousarray(X, dtype=dt)


def layer_outputs(model, X, mode="eval"):
    """Run one forward of a Sequential layer by layer; return [(name, module, output)]
    with a copy of every layer's output (X: (N, ...) array). mode: "eval" or "train"
    (BatchNorm running statistics are restored afterwards either way).

    >>> import numpy as np
    >>> from fastnn.layers import Sequential, Dense, Tanh
    >>> outs = layer_outputs(Sequential(Dense(3, 5, rng=0), Tanh()), np.ones((2, 3)))
    >>> [(name, out.shape) for name, _, out in outs]
    [('0', (2, 5)), ('1', (2, 5))]
    """
    with _ModelState(model, mode):
        x = _as_model_input(model, X)
        outs = []
        for name, m in _named_layers(model):
            x = _fwd(m)(x)
            outs.append((name, m, np.array(x, copy=True)))
    return outs


class _ModelState:
    """Context: set train/eval mode; restore mode and every parameter / buffer after."""

    def __init__(self, model, mode):
        if mode not in ("train", "eval"):
            raise ValueError('mode must be "train" or "eval", got %r' % (mode,))
        self.model, self.mode = model, mode

    def __enter__(self):
        self.training = getattr(self.model, "training", True)
        self.state = self.model.state_dict()
        self.model.train(self.mode == "train")
        return self

    def __exit__(self, *exc):
        self.model.load_state_dict(self.state)
        self.model.train(self.training)
        return False


# ---------------------------------------------------------------------------- Report
class Report:
    """A printable per-layer table: `rows` (list of dicts), `warnings` (list of str).

    ``str(report)`` formats the table followed by the warnings; ``report[i]`` is row i.
    """

    COLUMNS = [("layer", "layer", "%s"), ("type", "type", "%s"), ("shape", "output", "%s"),
               ("mean", "mean", "%+.3f"), ("std", "std", "%.3f"),
               ("saturated", "saturated", "%.0f%%"), ("dead", "dead", "%.0f%%"),
               ("grad_rms", "grad rms", "%.2e"), ("weight_rms", "|w| rms", "%.2e"),
               ("weight_grad_rms", "|dw| rms", "%.2e"), ("update_ratio", "update/w", "%.1e")]

    def __init__(self, rows, warnings=(), title=None, empty="no problems found"):
        self.rows = list(rows)
        self.warnings = list(warnings)
        self.title = title
        self.empty = empty

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    def __iter__(self):
        return iter(self.rows)

    @property
    def ok(self):
        """True when no warning was raised."""
        return not self.warnings

    def _cell(self, row, key, fmt):
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if key in ("saturated", "dead"):
            v = 100.0 * v
        if key == "shape":
            v = "x".join(str(s) for s in v[1:]) if isinstance(v, tuple) else v
        return fmt % v

    def __str__(self):
        cols = [(k, h, f) for k, h, f in self.COLUMNS
                if any(r.get(k) is not None for r in self.rows)]
        table = [[h for _, h, _ in cols]]
        table += [[self._cell(r, k, f) for k, _, f in cols] for r in self.rows]
        widths = [max(len(line[j]) for line in table) for j in range(len(cols))]
        lines = [self.title] if self.title else []
        for n, line in enumerate(table):
            lines.append("  ".join(c.rjust(w) if j > 1 else c.ljust(w)
                                   for j, (c, w) in enumerate(zip(line, widths))).rstrip())
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines.extend("warning: " + w for w in self.warnings)
        if not self.warnings and self.empty:
            lines.append(self.empty)
        return "\n".join(lines)

    __repr__ = __str__


# --------------------------------------------------------------------------- Monitor
class Monitor:
    """Collects training statistics on sampled steps and reports problems.

    every: sample every k-th step ("auto": about 4 samples per epoch, and at least
    every 50th step). saturation_threshold: see the module docstring. dead_warn /
    saturated_warn: fractions above which a layer is reported. vanishing_ratio:
    report when the weight-gradient RMS of the last weighted layer is this many times
    that of the first (vanishing) or the reverse (exploding). update_ratio_range:
    (low, high) bounds of the median update/weight ratio of an epoch outside which a
    weight is reported. window: epochs looked at by the loss / overfitting checks.

    Used by `Trainer(..., diagnostics=Monitor(...))`; the trainer calls `attach`,
    `start_epoch`, the sampled-step hooks and `end_epoch`. Results: `epochs` (one
    `Report` per epoch), `ratio_series` ({weight name: [(step, ratio)]}), `warnings`
    ([(epoch, message)], each problem reported once).
    """

    def __init__(self, every="auto", saturation_threshold=0.99, dead_warn=0.4,
                 saturated_warn=0.3, vanishing_ratio=1e3, update_ratio_range=(1e-5, 3e-2),
                 window=3):
        if not (every == "auto" or (isinstance(every, int) and not isinstance(every, bool)
                                    and every >= 1)):
            raise ValueError('Monitor: every must be "auto" or an int >= 1, got %r' % (every,))
        if not 0.5 < saturation_threshold < 1:
            raise ValueError("Monitor: saturation_threshold must be in (0.5, 1), got %r"
                             % (saturation_threshold,))
        lo, hi = update_ratio_range
        if not 0 < lo < hi:
            raise ValueError("Monitor: update_ratio_range must be (low, high) with "
                             "0 < low < high, got %r" % (update_ratio_range,))
        self.every = every
        self.saturation_threshold = float(saturation_threshold)
        self.dead_warn = float(dead_warn)
        self.saturated_warn = float(saturated_warn)
        self.vanishing_ratio = float(vanishing_ratio)
        self.update_ratio_range = (float(lo), float(hi))
        self.window = int(window)
        self.model = None
        self.epochs = []
        self.ratio_series = {}
        self.warnings = []
        self._warned = set()

    # ------------------------------------------------------------------- set-up
    def attach(self, model, loss=None):
        """Bind to a model (and optionally its loss, for the initial-loss check)."""
        self.model = model
        self.loss = loss
        named = _named_layers(model)
        self.layerwise = not (len(named) == 1 and named[0][1] is model)
        self.layers = [(name, m, _watch_kind(m)) for name, m in named]
        self.layer_names = {id(m): (name, type(m).__name__) for name, m, _ in self.layers}
        # parameters with their layer: (qualified name, Parameter, layer name, layer type)
        self.params = []
        for name, m, _ in self.layers:
            for pname, p in m.named_parameters():
                self.params.append(("%s.%s" % (name, pname) if self.layerwise else pname,
                                    p, name, type(m).__name__))
        self.weights = [t for t in self.params if t[1].data.ndim >= 2]
        self._prev = [np.empty_like(p.data) for _, p, _, _ in self.weights]
        self._initial_loss_checked = False
        self._first_lr = None
        self._reported = len(self.warnings)
        return self

    def interval(self, steps_per_epoch):
        """The sampling interval k for an epoch of `steps_per_epoch` steps."""
        if self.every != "auto":
            return self.every
        return max(1, min(50, steps_per_epoch // 4))

    def start_epoch(self):
        n = len(self.layers)
        self._n = 0
        self._mean = [0.0] * n
        self._std = [0.0] * n
        self._sat = [0] * n
        self._count = [0] * n
        self._active = [None] * n
        self._shape = [None] * n
        self._dout = [0.0] * n
        self._nb = 0
        self._grad = {name: 0.0 for name, *_ in self.params}
        self._ratios = {name: [] for name, *_ in self.weights}

    # ------------------------------------------------------------ sampled steps
    def forward(self, x):
        """Forward of the model (layer by layer when it is a Sequential), recording each
        layer's output statistics. Returns the output (a workspace array)."""
        self._n += 1
        if not self.layerwise:
            return _fwd(self.model)(x)
        thr = self.saturation_threshold
        for i, (_, m, kind) in enumerate(self.layers):
            x = _fwd(m)(x)
            flat = x.reshape(x.shape[0], -1)
            vec = x.reshape(-1)
            size = vec.size
            mean = float(np.add.reduce(vec, dtype=np.float64)) / size
            var = float(np.dot(vec, vec)) / size - mean * mean   # one BLAS dot
            self._mean[i] += mean
            self._std[i] += math.sqrt(var) if var > 0 else 0.0
            self._shape[i] = x.shape
            if kind == "relu":      # a unit is a feature, or a channel of an image
                act = (x > 0).any(axis=(0,) + tuple(range(2, x.ndim)))
                if self._active[i] is None:
                    self._active[i] = act
                else:
                    self._active[i] |= act
            elif kind == "tanh":
                self._sat[i] += int(np.count_nonzero(np.abs(flat) > thr))
                self._count[i] += flat.size
            elif kind == "sigmoid":
                self._sat[i] += int(np.count_nonzero(flat > thr))
                self._sat[i] += int(np.count_nonzero(flat < 1.0 - thr))
                self._count[i] += flat.size
        return x

    def record_loss(self, loss, out):
        """Initial-loss sanity check (first sampled step of training only)."""
        if self._initial_loss_checked:
            return
        self._initial_loss_checked = True
        expected = self.loss.chance_loss(out.shape[1:]) if self.loss is not None else None
        if expected is not None and loss > 3.0 * expected + 0.5:
            self._warn(1, ("initial", None),
                       "initial loss %.3g is far above the %.3g of a freshly initialised "
                       "classifier (outputs favouring no class): initial weights are "
                       "probably too large (use He/Xavier init) or the inputs are not "
                       "standardized" % (loss, expected))

    def backward(self, dy):
        """Backward of the model (layer by layer when possible), recording the RMS of
        the gradient reaching each layer's output and every parameter's gradient."""
        self._nb += 1
        if self.layerwise:
            for i in range(len(self.layers) - 1, -1, -1):
                self._dout[i] += _rms(dy)
                dy = _bwd(self.layers[i][1])(dy, i > 0)
        else:
            _bwd(self.model)(dy, False)
        g = self._grad
        for name, p, _, _ in self.params:
            g[name] += _rms(p.grad)

    def before_update(self):
        for buf, (_, p, _, _) in zip(self._prev, self.weights):
            np.copyto(buf, p.data)

    def after_update(self, step):
        for buf, (name, p, _, _) in zip(self._prev, self.weights):
            np.subtract(p.data, buf, out=buf)
            w = _norm(p.data)
            r = _norm(buf) / w if w > 0 else float("inf")
            self._ratios[name].append(r)
            self.ratio_series.setdefault(name, []).append((step, r))

    # --------------------------------------------------------------- epoch end
    def end_epoch(self, epoch, lr=None):
        """Summarise the epoch into a `Report` (appended to `epochs`) and return the
        new warnings (plain-language strings). `lr`: the learning rate used in the
        epoch; once a schedule has cut it below a tenth of the first epoch's, small
        update ratios are expected and no longer reported."""
        rows = self._rows()
        before = self._reported
        if lr is not None and getattr(self, "_first_lr", None) is None:
            self._first_lr = lr
        annealed = lr is not None and lr < 0.1 * self._first_lr
        self._check_layers(epoch, rows, check_low=not annealed)
        new = [m for _, m in self.warnings[before:]]
        self._reported = len(self.warnings)
        self.epochs.append(Report(rows, new, title="diagnostics, epoch %d (%d sampled steps)"
                                  % (epoch, self._n), empty="no new problems"))
        return new

    def _rows(self):
        n, nb = max(self._n, 1), max(self._nb, 1)
        by_layer = {}
        for name, p, lname, _ in self.params:
            by_layer.setdefault(lname, []).append((name, p))
        rows = []
        if not self.layerwise:
            for name, p, _, ltype in self.params:
                row = {"layer": name, "type": ltype, "kind": None,
                       "weight_rms": _rms(p.data), "weight_grad_rms": self._grad[name] / nb}
                if name in self._ratios and self._ratios[name]:
                    row["update_ratio"] = float(np.median(self._ratios[name]))
                rows.append(row)
            return rows
        for i, (name, m, kind) in enumerate(self.layers):
            row = {"layer": name, "type": type(m).__name__, "kind": kind,
                   "shape": self._shape[i], "mean": self._mean[i] / n, "std": self._std[i] / n,
                   "saturated": None, "dead": None,
                   "grad_rms": self._dout[i] / nb if self._nb else None}
            if kind in ("tanh", "sigmoid") and self._count[i]:
                row["saturated"] = self._sat[i] / self._count[i]
            if kind == "relu" and self._active[i] is not None:
                row["dead"] = 1.0 - float(self._active[i].mean())
            for pname, p in by_layer.get(name, []):
                if p.data.ndim >= 2:
                    row["weight_rms"] = _rms(p.data)
                    row["weight_grad_rms"] = self._grad[pname] / nb if self._nb else None
                    ratios = self._ratios.get(pname)
                    if ratios:
                        row["update_ratio"] = float(np.median(ratios))
                    break
            rows.append(row)
        return rows

    def _warn(self, epoch, key, message):
        if key in self._warned:
            return
        self._warned.add(key)
        self.warnings.append((epoch, message))

    def _check_layers(self, epoch, rows, check_low=True):
        thr = self.saturation_threshold
        for row in rows:
            label = "layer %s (%s)" % (row["layer"], row["type"])
            dead = row.get("dead")
            if dead is not None and dead > self.dead_warn:
                self._warn(epoch, ("dead", row["layer"]),
                           "%s: %.0f%% of units dead (never active on the examples seen) "
                           "— lower the learning rate or use LeakyReLU/He init; check for "
                           "large negative biases" % (label, 100 * dead))
            sat = row.get("saturated")
            if sat is not None and sat > self.saturated_warn:
                what = ("|y| > %g" % thr if row["kind"] == "tanh"
                        else "y < %g or y > %g" % (round(1 - thr, 6), thr))
                self._warn(epoch, ("saturated", row["layer"]),
                           "%s: %.0f%% of units saturated (%s), where gradients vanish — "
                           "use smaller initial weights (Xavier), standardize the inputs, "
                           "add BatchNorm or use ReLU" % (label, 100 * sat, what))
        weighted = [r for r in rows if r.get("weight_grad_rms") is not None]
        if len(weighted) >= 2:
            first, last = weighted[0], weighted[-1]
            g0, g1 = first["weight_grad_rms"], last["weight_grad_rms"]
            lab0 = "layer %s (%s)" % (first["layer"], first["type"])
            lab1 = "layer %s (%s)" % (last["layer"], last["type"])
            if g1 > 0 and (g0 == 0 or g1 / g0 > self.vanishing_ratio):
                ratio = "%.0fx" % (g1 / g0) if g0 > 0 else "to zero"
                self._warn(epoch, ("vanishing",),
                           "gradient norm falls %s from %s to %s: vanishing gradients — use "
                           "ReLU-family activations with He init, BatchNorm, or fewer layers"
                           % (ratio, lab1, lab0))
            elif g0 > 0 and g1 > 0 and g0 / g1 > self.vanishing_ratio:
                self._warn(epoch, ("exploding",),
                           "gradient norm grows %.0fx from %s to %s: exploding gradients — "
                           "lower the learning rate, clip gradients "
                           "(fastnn.optim.clip_grad_norm) or add BatchNorm"
                           % (g0 / g1, lab1, lab0))
        lo, hi = self.update_ratio_range
        for row in rows:
            r = row.get("update_ratio")
            if r is None or not math.isfinite(r):
                continue
            label = "layer %s (%s) weights" % (row["layer"], row["type"])
            if r > hi:
                self._warn(epoch, ("update-high", row["layer"]),
                           "%s: update/weight ratio %.1e (rule of thumb ~1e-3): the learning "
                           "rate is probably too high, try about %.0fx lower"
                           % (label, r, r / 1e-3))
            elif check_low and r < lo:
                self._warn(epoch, ("update-low", row["layer"]),
                           "%s: update/weight ratio %.1e (rule of thumb ~1e-3): the learning "
                           "rate is probably too low (or the gradient vanishes here)"
                           % (label, r))

    def check_history(self, history, task="multiclass"):
        """Run `check_history` on a History and record its new warnings; returns them."""
        epoch = history.epoch[-1] if len(history) else 0
        new = []
        for key, message in _history_problems(history, task, self.window):
            if key not in self._warned:
                self._warn(epoch, key, message)
                new.append(message)
        self._reported = len(self.warnings)
        return new


# ------------------------------------------------------------------- history checks
def _clean(values):
    return [v for v in values if v is not None and math.isfinite(v)]


def _history_problems(history, task, window=3):
    out = []
    loss = list(history.loss)
    n = len(loss)
    acc = list(history.accuracy)
    classify = task != "regression" and all(a is not None for a in acc)
    if n >= window and all(v is not None for v in loss):
        first, last = loss[0], loss[-1]
        if last > 0.98 * first and not (classify and acc[-1] >= 0.99):
            out.append((("flat",),
                        "train loss not decreasing (%.4g in epoch %d, %.4g in epoch %d): "
                        "try a larger learning rate if the updates are tiny, a smaller one "
                        "if the loss oscillates, and check that the labels match the inputs"
                        % (first, history.epoch[0], last, history.epoch[-1])))
        elif (n >= 3 and loss[-1] > loss[-2] > loss[-3]
              and loss[-1] - min(loss) > 0.25 * (loss[0] - min(loss))):
            out.append((("rising",),
                        "train loss rising for 2 epochs (%.4g -> %.4g): the learning rate is "
                        "probably too high" % (loss[-3], loss[-1])))
    val = history.val_accuracy if classify else history.val_loss
    train = acc if classify else loss
    if len(_clean(val)) == n and n > window and all(t is not None for t in train):
        sign = 1 if classify else -1                       # +: higher is better
        best = max(range(n), key=lambda i: (sign * val[i], -i))
        recent = sum(val[-window:]) / window
        if classify:
            # noise-aware margin: 3 standard errors of an accuracy on n_val examples
            n_val = getattr(history, "n_val", None)
            p = min(max(val[best], 0.01), 0.99)
            tol = max(0.02, 3 * math.sqrt(p * (1 - p) / n_val)) if n_val else 0.03
        else:
            tol = 0.2 * abs(val[best])
        if (best < n - window and sign * (val[best] - recent) > tol
                and sign * (train[-1] - train[best]) > 0):
            what = "accuracy" if classify else "loss"
            out.append((("overfit",),
                        "val %s %s since epoch %d (%.4g -> %.4g) while train %s %s "
                        "(%.4g -> %.4g): overfitting — add regularization (weight decay, "
                        "dropout), get more data, or stop earlier (Trainer(patience=...) "
                        "keeps the best epoch)"
                        % (what, "falling" if classify else "rising", history.epoch[best],
                           val[best], val[-1], what, "rising" if classify else "falling",
                           train[best], train[-1])))
        elif classify and train[-1] - val[-1] > 0.2:
            out.append((("gap",),
                        "train accuracy %.3f is far above val accuracy %.3f: overfitting — "
                        "add regularization (weight decay, dropout) or get more data"
                        % (train[-1], val[-1])))
    return out


def check_history(history, task="multiclass", window=3):
    """Plain-language problems visible in a `History`: loss not decreasing, loss rising,
    overfitting (val accuracy falling while train accuracy rises, or a large gap).
    task: "multiclass"/"binary" (accuracy-based) or "regression" (loss-based).
    Returns a list of strings (empty when nothing looks wrong)."""
    return [m for _, m in _history_problems(history, task, window)]


# --------------------------------------------------------------------------- inspect
def inspect(model, X, y=None, loss=None, mode="train", **monitor_kw):
    """One forward (and backward when `y` is given) through `model`; a per-layer Report.

    X: (N, ...) inputs, ideally a few hundred examples. y: labels / targets or None
    (forward statistics only). loss: a fastnn loss object; by default
    SoftmaxCrossEntropy for integer labels of shape (N,), MSE otherwise. mode: "train"
    (BatchNorm uses batch statistics, Dropout is active) or "eval". The model's
    parameters, buffers and mode are left as they were (parameter gradients are
    overwritten). Keyword arguments go to `Monitor` (thresholds).

    The report's rows hold, per layer: layer, type, shape, mean, std, saturated
    (fraction, Sigmoid/Tanh), dead (fraction of units never active on X, ReLU),
    grad_rms (of dLoss/d output), weight_rms and weight_grad_rms (layers with a
    weight). `report.warnings` lists the problems found.
    """
    mon = Monitor(**monitor_kw).attach(model, loss)
    mon.start_epoch()
    with _ModelState(model, mode):
        x = _as_model_input(model, X)
        out = mon.forward(x)
        if y is not None:
            if loss is None:
                from ..losses import MSE, SoftmaxCrossEntropy
                y_arr = np.asarray(y)
                loss = (SoftmaxCrossEntropy() if y_arr.dtype.kind in "iu" and y_arr.ndim == 1
                        else MSE())
                mon.loss = loss
            value = loss(out, y)
            mon.record_loss(value, out)
            mon.backward(loss.backward())
    rows = mon._rows()
    mon._check_layers(0, rows)
    title = "fastnn.train.diagnostics.inspect: %d examples, %s mode" % (len(x), mode)
    if y is not None:
        title += ", loss %.4g" % value
    return Report(rows, [m for _, m in mon.warnings], title=title)
