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
import time

import numpy as np

from ..core import rng as random_state
from ..core.validation import Bool, Integer, Options, Real, check, check_all
from .trainer import NonFiniteError, Trainer

__all__ = ["loguniform", "uniform", "choice", "randint", "sample", "random_search",
           "SearchResults"]

#: random_search's scalar arguments: name -> constraint
_CONSTRAINTS = {"n_trials": Integer(1), "epochs": Integer(1), "eta": Integer(2),
                "batch_size": Integer(1), "halving": Bool(), "verbose": Options(0, 1),
                "distributed": Bool()}


class _Spec:
    def sample(self, rng):
        raise NotImplementedError


class loguniform(_Spec):
    """Log-uniform on [lo, hi] (0 < lo < hi): the right prior for learning rates and
    weight decay."""

    def __init__(self, lo, hi):
        lo, hi = check("loguniform", "lo", lo, Real()), check("loguniform", "hi", hi, Real())
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
        lo, hi = check("uniform", "lo", lo, Real()), check("uniform", "hi", hi, Real())
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
        lo, hi = check("randint", "lo", lo, Integer()), check("randint", "hi", hi, Integer())
        if lo > hi:
            raise ValueError("randint: expected lo <= hi, got %d > %d" % (lo, hi))
        self.lo, self.hi = lo, hi

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


def sample(space, rng=None):
    """One draw from a space: {name: spec or constant} -> {name: value} (names in
    order). `rng`: a numpy Generator, an int seed or None (fastnn's global generator)."""
    if not isinstance(space, dict):
        raise TypeError("random_search: space must be a dict {name: spec}, got %s"
                        % type(space).__name__)
    rng = random_state.as_rng(rng, "sample")
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
def _make_trainer(built):
    if isinstance(built, Trainer):
        built.verbose = 0
        return built
    if isinstance(built, (tuple, list)) and len(built) in (3, 4):
        return Trainer(*built, verbose=0)
    raise TypeError("random_search: build_fn must return a Trainer or a tuple (model, loss, "
                    "optimizer[, scheduler]), got %s" % type(built).__name__)


class _Trial:
    """One hyperparameter draw: its trainer (built at its first rung), metrics and
    status."""

    #: what `result` reports and `take` sets
    RESULT = ("score", "metrics", "status", "time", "epochs")

    def __init__(self, index, params, seed):
        self.index, self.params, self.seed = index, params, seed
        self.trainer = None
        self.rng = None
        self.score = None
        self.metrics = {}
        self.status = "ok"
        self.time = 0.0
        self.rung = 0
        self.epochs = 0

    def build(self, build_fn):
        """This trial's trainer, built with fastnn's global generator seeded for it."""
        random_state.seed(self.seed)
        return _make_trainer(build_fn(**self.params))

    def result(self):
        """The outcome so far, as plain values (what a distributed search exchanges)."""
        return {k: getattr(self, k) for k in self.RESULT}

    def take(self, result):
        """Adopt the outcome of this trial trained on another rank."""
        for k in self.RESULT:
            setattr(self, k, result[k])

    def train(self, build_fn, data, budget, batch_size):
        """Train until `budget` epochs are done (building the trainer first, with
        fastnn's global generator seeded for this trial), then score it on the
        validation data; a non-finite loss or metric marks it "diverged"."""
        X, y, X_val, y_val = data
        t0 = time.perf_counter()
        if self.trainer is None:
            self.trainer = self.build(build_fn)
            self.rng = np.random.default_rng(self.seed)
        more = budget - self.trainer.epochs_done
        if more > 0:
            try:
                self.trainer.fit(X, y, validation_data=(X_val, y_val), epochs=more,
                                 batch_size=batch_size, seed=self.rng)
                self.metrics = self.trainer.evaluate(X_val, y_val)
                if not all(math.isfinite(v) for v in self.metrics.values()):
                    raise NonFiniteError("non-finite validation metrics")
                self.score = _score(self.trainer, self.metrics)
            except NonFiniteError:
                self.status, self.score, self.metrics = "diverged", None, {}
        self.epochs = self.trainer.epochs_done
        self.time += time.perf_counter() - t0

    def line(self):
        """The verbose=1 progress line of this trial."""
        params = "  ".join("%s=%s" % (n, _fmt(v)) for n, v in self.params.items())
        result = self.status if self.status != "ok" else \
            "  ".join("%s %.4f" % kv for kv in self.metrics.items())
        return "trial %2d  %s  epochs %d  %s" % (self.index, params, self.epochs, result)

    def row(self, rank):
        row = {"rank": rank, "trial": self.index}
        row.update(self.params)
        row.update(val_accuracy=self.metrics.get("accuracy"), val_loss=self.metrics.get("loss"),
                   epochs=self.epochs, status=self.status, time=self.time)
        return row

    def sort_key(self):
        """Best first: not diverged, furthest rung, highest score."""
        return (self.status == "diverged", -self.rung,
                tuple(-s for s in self.score) if self.score is not None else ())


def _score(trainer, metrics):
    if trainer.task != "regression" and metrics.get("accuracy") is not None:
        return (metrics["accuracy"], -metrics["loss"])
    return (-metrics["loss"],)


def _budgets(n_trials, epochs, halving, eta):
    """Epochs each rung trains its trials up to: [epochs] without halving, else
    epochs / eta**k for the rungs k = K..0 (at least 1; K = floor(log_eta n_trials))."""
    if not halving:
        return [epochs]
    rungs = int(math.floor(math.log(n_trials) / math.log(eta) + 1e-9))
    return sorted({max(1, round(epochs / eta ** (rungs - k))) for k in range(rungs + 1)})


def random_search(build_fn, space, X, y, X_val, y_val, n_trials=10, epochs=5, batch_size=64,
                  seed=0, halving=False, eta=3, verbose=0, distributed=False):
    """Train `n_trials` briefly, each with hyperparameters drawn from `space`, and rank
    them by validation score (val accuracy, ties by val loss; val loss for regression).

    build_fn: called as ``build_fn(**params)``; returns a `Trainer` or a tuple
    ``(model, loss, optimizer[, scheduler])``. space: {name: loguniform(lo, hi) /
    uniform(lo, hi) / randint(lo, hi) / choice([...]) / constant}. epochs: epochs per
    trial (the full budget with halving). seed: hyperparameter draws, weight
    initialisation (fastnn's global generator is reseeded per trial and restored after)
    and shuffling all follow it: the same seed gives the same results. halving:
    successive halving: the rungs train to ``epochs / eta**k`` epochs (k = K, ..., 1, 0;
    at least 1), keeping the best 1/eta of the trials after each rung, until the
    survivors have trained `epochs`. verbose: 1 prints a line per trial and rung. Each
    trial keeps its best-epoch parameters. Returns `SearchResults`.

    distributed: spread the trials over the MPI ranks this program was started on
    (``mpiexec -n K``; needs mpi4py): trial i trains on rank i % K, and every rank
    returns the same results as a one-process search with the same seed (times
    aside), ``best_model`` included; only rank 0 prints. Collective: every rank calls
    it with the same arguments. (`build_fn` builds ordinary, one-process trainers.)
    """
    kw = check_all("random_search", _CONSTRAINTS, n_trials=n_trials, epochs=epochs, eta=eta,
                   batch_size=batch_size, halving=halving, verbose=verbose,
                   distributed=distributed)
    if not callable(build_fn):
        raise TypeError("random_search: build_fn must be callable")
    spread = None
    if kw["distributed"]:
        from ..distributed.trials import trial_spread     # loaded on use (mpi4py)
        spread = trial_spread("random_search")
    rng = np.random.default_rng(seed)
    draws = [sample(space, rng) for _ in range(kw["n_trials"])]
    seeds = [int(s.generate_state(1)[0])
             for s in np.random.SeedSequence(seed).spawn(kw["n_trials"])]
    trials = [_Trial(i, p, s) for i, (p, s) in enumerate(zip(draws, seeds))]
    budgets = _budgets(kw["n_trials"], kw["epochs"], kw["halving"], kw["eta"])
    saved_rng = random_state.global_rng()
    try:
        _run_rungs(trials, budgets, build_fn, (X, y, X_val, y_val), kw, spread)
        best = min(trials, key=_Trial.sort_key)
        model = best.trainer.model if spread is None else _best_model(best, build_fn, spread)
    finally:
        random_state.set_global_rng(saved_rng)
    ordered = sorted(trials, key=_Trial.sort_key)
    return SearchResults([t.row(rank) for rank, t in enumerate(ordered, 1)], list(space),
                         model)


def _run_rungs(trials, budgets, build_fn, data, kw, spread):
    """Successive rungs: every live trial trains to the rung's budget (on its own rank
    when `spread` over several), then the best 1/eta go on to the next rung."""
    alive = list(trials)
    for k, budget in enumerate(budgets):
        for t in alive:
            t.rung = k
        if spread is None:
            _train_all(alive, build_fn, data, budget, kw)
        else:       # a failing trial raises on every rank, none waits for it
            spread.together(_train_all, [t for t in alive if spread.owns(t.index)],
                            build_fn, data, budget, dict(kw, verbose=0))
            _share(alive, spread, kw["verbose"])
        if k < len(budgets) - 1:
            ranked = sorted((t for t in alive if t.status == "ok"),
                            key=lambda t: t.score, reverse=True)
            keep = max(1, math.ceil(len(alive) / kw["eta"]))
            for t in ranked[keep:]:
                t.status = "stopped@%d" % t.epochs
            alive = ranked[:keep]


def _train_all(trials, build_fn, data, budget, kw):
    for t in trials:
        t.train(build_fn, data, budget, kw["batch_size"])
        if kw["verbose"]:
            print(t.line(), flush=True)


def _share(trials, spread, verbose):
    """Every rank takes the results of the trials the other ranks trained; rank 0
    prints the rung's lines (verbose)."""
    results = spread.share({t.index: t.result() for t in trials if spread.owns(t.index)})
    for t in trials:
        t.take(results[t.index])
        if verbose and spread.rank == 0:
            print(t.line(), flush=True)


def _best_model(best, build_fn, spread):
    """The best trial's trained model on every rank: its owner's, and elsewhere a model
    built like it that takes the owner's parameters and buffers."""
    owns = spread.owns(best.index)
    state = spread.from_owner(best.index, best.trainer.model.state_dict() if owns else None)
    if owns:
        return best.trainer.model
    model = best.build(build_fn).model
    model.load_state_dict(state)
    return model


def _fmt(v):
    return "%.3g" % v if isinstance(v, float) else str(v)
