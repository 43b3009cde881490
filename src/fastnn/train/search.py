"""Random hyperparameter search (Bergstra & Bengio), optionally with successive halving.

>>> import numpy as np
>>> from fastnn.layers import Sequential, Dense, ReLU
>>> from fastnn.losses import SoftmaxCrossEntropy
>>> from fastnn.optim import Adam
>>> from fastnn.data import make_spirals, train_val_split
>>> from fastnn.train.search import random_search, loguniform, choice
>>> X, y = make_spirals(60, 3, rng=0)
>>> Xtr, Xva, ytr, yva = train_val_split(X, y, 0.25, rng=0)
>>> def build(lr, width):
...     model = Sequential(Dense(2, width), ReLU(), Dense(width, 3))
...     return model, SoftmaxCrossEntropy(), Adam(model.parameters(), lr=lr)
>>> results = random_search(build, {"lr": loguniform(1e-4, 1e-1), "width": choice([16, 32])},
...                         Xtr, ytr, Xva, yva, n_trials=3, epochs=2, seed=0)
>>> len(results), sorted(results.best)[:3]
(3, ['epochs', 'lr', 'rank'])
>>> print(results)                                                  # doctest: +SKIP
"""
import math
import numbers
import time

import numpy as np

__all__ = ["loguniform", "uniform", "choice", "randint", "sample", "random_search",
           "SearchResults"]


class _Spec:
    def sample(self, rng):
        raise NotImplementedError


def _real(v, what):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        raise TypeError("%s: bounds must be finite numbers, got %r" % (what, v))
    return float(v)


class loguniform(_Spec):
    """Log-uniform on [lo, hi] (0 < lo < hi): the right prior for learning rates and
    weight decay."""

    def __init__(self, lo, hi):
        lo, hi = _real(lo, "loguniform"), _real(hi, "loguniform")
        if not 0 < lo < hi:
            raise ValueError("loguniform: expected 0 < lo < hi, got lo=%g, hi=%g" % (lo, hi))
        self.lo, self.hi = lo, hi

    def sample(self, rng):
        return float(math.exp(rng.uniform(math.log(self.lo), math.log(self.hi))))

    def __repr__(self):
        return "loguniform(%g, %g)" % (self.lo, self.hi)


class uniform(_Spec):
    """Uniform on [lo, hi]."""

    def __init__(self, lo, hi):
        lo, hi = _real(lo, "uniform"), _real(hi, "uniform")
        if not lo < hi:
            raise ValueError("uniform: expected lo < hi, got lo=%g, hi=%g" % (lo, hi))
        self.lo, self.hi = lo, hi

    def sample(self, rng):
        return float(rng.uniform(self.lo, self.hi))

    def __repr__(self):
        return "uniform(%g, %g)" % (self.lo, self.hi)


class randint(_Spec):
    """Uniform integer in [lo, hi] (both included)."""

    def __init__(self, lo, hi):
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in (lo, hi)):
            raise TypeError("randint: bounds must be ints, got %r, %r" % (lo, hi))
        if lo > hi:
            raise ValueError("randint: expected lo <= hi, got %d > %d" % (lo, hi))
        self.lo, self.hi = int(lo), int(hi)

    def sample(self, rng):
        return int(rng.integers(self.lo, self.hi + 1))

    def __repr__(self):
        return "randint(%d, %d)" % (self.lo, self.hi)


class choice(_Spec):
    """One of the given options, uniformly."""

    def __init__(self, options):
        options = list(options)
        if not options:
            raise ValueError("choice: expected at least one option")
        self.options = options

    def sample(self, rng):
        return self.options[int(rng.integers(len(self.options)))]

    def __repr__(self):
        return "choice(%r)" % (self.options,)


def sample(space, rng):
    """One draw from a space: {name: spec or constant} -> {name: value} (names in
    order). `rng` is a numpy Generator."""
    if not isinstance(space, dict):
        raise TypeError("random_search: space must be a dict {name: spec}, got %s"
                        % type(space).__name__)
    return {k: (v.sample(rng) if isinstance(v, _Spec) else v) for k, v in space.items()}


# --------------------------------------------------------------------------- results
class SearchResults(list):
    """The trials of a search, best first: a list of dicts with keys ``rank``, ``trial``
    (0-based draw order), the sampled hyperparameters, ``val_accuracy`` (classification),
    ``val_loss``, ``epochs`` (trained), ``status`` ("ok", "stopped@<epochs>" when
    successive halving dropped it, "diverged" for a non-finite loss) and ``time``
    (seconds). ``best`` is the first row, ``best_params`` its hyperparameters,
    ``best_model`` the trained model of the best trial; ``print(results)`` shows a
    table."""

    def __init__(self, rows, param_names, best_model=None):
        super().__init__(rows)
        self.param_names = list(param_names)
        self.best_model = best_model

    @property
    def best(self):
        return self[0] if self else None

    @property
    def best_params(self):
        return {k: self[0][k] for k in self.param_names} if self else None

    def __str__(self):
        keys = ["rank", "trial"] + self.param_names
        keys += [k for k in ("val_accuracy", "val_loss", "epochs", "status", "time")
                 if any(r.get(k) is not None for r in self)]

        def cell(k, v):
            if v is None:
                return "-"
            if k == "time":
                return "%.2fs" % v
            if isinstance(v, float):
                return "%.4f" % v if k.startswith("val_") else "%.3g" % v
            return str(v)

        table = [keys] + [[cell(k, r.get(k)) for k in keys] for r in self]
        widths = [max(len(t[j]) for t in table) for j in range(len(keys))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(t, widths)) for t in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __repr__(self):
        return "SearchResults(%d trials, best %r)" % (len(self), self.best)


# ---------------------------------------------------------------------------- search
def _make_trainer(built, verbose):
    from .trainer import Trainer
    if isinstance(built, Trainer):
        return built
    if isinstance(built, (tuple, list)) and len(built) in (3, 4):
        return Trainer(*built, verbose=0)
    raise TypeError("random_search: build_fn must return a Trainer or a tuple (model, loss, "
                    "optimizer[, scheduler]), got %s" % type(built).__name__)


class _Trial:
    def __init__(self, index, params, seed):
        self.index, self.params, self.seed = index, params, seed
        self.trainer = None
        self.score = None
        self.metrics = {}
        self.status = "ok"
        self.time = 0.0
        self.rung = 0

    @property
    def epochs(self):
        return self.trainer.epochs_done if self.trainer is not None else 0


def _score(trainer, metrics):
    if trainer.task != "regression" and metrics.get("accuracy") is not None:
        return (metrics["accuracy"], -metrics["loss"])
    return (-metrics["loss"],)


def random_search(build_fn, space, X, y, X_val, y_val, n_trials=10, epochs=5, batch_size=64,
                  seed=0, halving=False, eta=3, verbose=0):
    """Train `n_trials` briefly, each with hyperparameters drawn from `space`, and rank
    them by validation score (val accuracy, ties by val loss; val loss for regression).

    build_fn: called as ``build_fn(**params)``; returns a `Trainer` or a tuple
    ``(model, loss, optimizer[, scheduler])``. space: {name: loguniform(lo, hi) /
    uniform(lo, hi) / randint(lo, hi) / choice([...]) / constant}. epochs: epochs per
    trial (the full budget with halving). seed: hyperparameter draws, weight
    initialisation (fastnn's global generator is reseeded per trial and restored after)
    and shuffling all follow it: the same seed gives the same results. halving:
    successive halving: all trials train for ``epochs / eta**k`` epochs, the best 1/eta
    continue, ... until the survivors have trained `epochs`. verbose: 1 prints a line per
    trial. Each trial keeps its best-epoch parameters. Returns `SearchResults`.
    """
    from ..core import rng as _random
    from .trainer import NonFiniteError

    for name, v in (("n_trials", n_trials), ("epochs", epochs), ("eta", eta)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "eta" else 1):
            raise ValueError("random_search: %s must be an int >= %d, got %r"
                             % (name, 2 if name == "eta" else 1, v))
    if not callable(build_fn):
        raise TypeError("random_search: build_fn must be callable")
    rng = np.random.default_rng(seed)
    draws = [sample(space, rng) for _ in range(n_trials)]
    seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_trials)]
    trials = [_Trial(i, p, s) for i, (p, s) in enumerate(zip(draws, seeds))]

    if halving:
        rungs = int(math.floor(math.log(n_trials) / math.log(eta) + 1e-9))
        budgets = sorted({max(1, round(epochs / eta ** (rungs - k))) for k in range(rungs + 1)})
    else:
        budgets = [epochs]

    saved_rng = _random.global_rng()
    alive = list(trials)
    try:
        for k, budget in enumerate(budgets):
            for t in alive:
                t.rung = k
                _train(t, build_fn, X, y, X_val, y_val, budget, batch_size, NonFiniteError,
                       _random)
                if verbose:
                    print("trial %2d  %s  epochs %d  %s" % (
                        t.index, "  ".join("%s=%s" % (n, _fmt(v)) for n, v in t.params.items()),
                        t.epochs, t.status if t.status != "ok" else
                        "  ".join("%s %.4f" % kv for kv in t.metrics.items())), flush=True)
            if k < len(budgets) - 1:
                ranked = sorted((t for t in alive if t.status == "ok"),
                                key=lambda t: t.score, reverse=True)
                keep = max(1, math.ceil(len(alive) / eta))
                for t in ranked[keep:]:
                    t.status = "stopped@%d" % t.epochs
                alive = ranked[:keep]
    finally:
        _random._global = saved_rng

    def key(t):
        return (t.status == "diverged", -t.rung,
                tuple(-s for s in t.score) if t.score is not None else ())

    ordered = sorted(trials, key=key)
    rows = []
    for rank, t in enumerate(ordered, 1):
        row = {"rank": rank, "trial": t.index}
        row.update(t.params)
        row["val_accuracy"] = t.metrics.get("accuracy")
        row["val_loss"] = t.metrics.get("loss")
        row["epochs"] = t.epochs
        row["status"] = t.status
        row["time"] = t.time
        rows.append(row)
    best = ordered[0]
    return SearchResults(rows, list(space), best.trainer.model if best.trainer else None)


def _fmt(v):
    return "%.3g" % v if isinstance(v, float) else str(v)


def _train(t, build_fn, X, y, X_val, y_val, budget, batch_size, NonFiniteError, _random):
    t0 = time.perf_counter()
    if t.trainer is None:
        _random.seed(t.seed)
        t.trainer = _make_trainer(build_fn(**t.params), 0)
        t.trainer.verbose = 0
        t.rng = np.random.default_rng(t.seed)
    more = budget - t.trainer.epochs_done
    if more > 0:
        try:
            t.trainer.fit(X, y, validation_data=(X_val, y_val), epochs=more,
                          batch_size=batch_size, seed=t.rng)
            t.metrics = t.trainer.evaluate(X_val, y_val)
            if not all(math.isfinite(v) for v in t.metrics.values()):
                raise NonFiniteError("non-finite validation metrics")
            t.score = _score(t.trainer, t.metrics)
        except NonFiniteError:
            t.status = "diverged"
            t.score = None
            t.metrics = {}
    t.time += time.perf_counter() - t0
