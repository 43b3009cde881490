"""`FitRun`: one `Trainer.fit` call in progress -- its arguments, its best-epoch
tracking and its shuffling generator: what a checkpoint saves to resume it
bit-identically -- and the checks that a saved run fits a trainer before it is loaded.

The saved form (`FitRun.state()`, part of `Trainer.run_state()`) is a dict of
JSON-native values plus ``rng`` (a numpy Generator) and ``best_state`` (None or the
model's state_dict arrays of the best epoch so far).
"""
import numpy as np

from ..core.validation import Bool, InstanceOf, Integer, Real, check_all
from .history import History

__all__ = ["FitRun", "check_run_state"]

#: the saved fields of a run: name -> constraint (best_score and best_state aside)
FIELDS = {"start": Integer(0), "epochs": Integer(1), "n": Integer(1),
          "batch_size": Integer(1), "shuffle": Bool(), "validation": Bool(),
          "restore_best": Bool(), "bad_epochs": Integer(0),
          "rng": InstanceOf(np.random.Generator, "a numpy Generator")}
#: one component of a best score (val accuracy, minus val loss)
_SCORE_PART = Real(finite=False)
#: the largest epoch or step count a saved trainer may hold
MAX_COUNT = 2 ** 53


class FitRun:
    """The state of one `fit` call: arguments (start: epochs done before it; epochs;
    n samples; batch_size; shuffle; validation: whether validation data is used;
    restore_best), best-epoch tracking (best_score, best_state, bad_epochs) and the
    shuffling generator `rng`. `last_epoch` is the epoch the run ends at."""

    def __init__(self, start, epochs, n, batch_size, shuffle, validation, restore_best, rng,
                 best_score=None, bad_epochs=0, best_state=None):
        self.start, self.epochs, self.n, self.batch_size = start, epochs, n, batch_size
        self.shuffle, self.validation, self.restore_best = shuffle, validation, restore_best
        self.rng = rng
        self.best_score, self.bad_epochs, self.best_state = best_score, bad_epochs, best_state

    @property
    def last_epoch(self):
        return self.start + self.epochs

    @property
    def steps(self):
        """Mini-batches per epoch."""
        return -(-self.n // self.batch_size)

    def state(self):
        """The saved form (see the module docstring); arrays are not copied."""
        state = {k: getattr(self, k) for k in FIELDS}
        state["best_score"] = None if self.best_score is None else list(self.best_score)
        state["best_state"] = self.best_state
        return state

    @classmethod
    def from_state(cls, state):
        """A FitRun from a state already passed through `check_run_state`."""
        kw = {k: state[k] for k in FIELDS}
        score = state["best_score"]
        return cls(best_score=None if score is None else tuple(score),
                   best_state=state["best_state"], **kw)


def check_run_state(state, model):
    """`state` (a `Trainer.run_state()` dict) checked against `model`: ValueError naming
    the first field that is wrong; returns the values converted (nothing copied)."""
    _require(isinstance(state, dict) and set(state) == {"epochs_done", "global_step",
                                                        "history", "fit"},
             "expected the keys epochs_done, global_step, history, fit")
    counts = _checked({"epochs_done": Integer(0, MAX_COUNT), "global_step": Integer(0, MAX_COUNT)},
                      epochs_done=state["epochs_done"], global_step=state["global_step"])
    try:
        history = History.from_state(state["history"])
    except ValueError as exc:
        raise ValueError("Trainer.load_run_state: history: %s" % exc) from None
    done = counts["epochs_done"]
    _require(not len(history) or history.epoch[-1] == done,
             "the history's last epoch must be epochs_done (%d)" % done)
    fit = state["fit"]
    if fit is not None:
        fit = _check_fit(fit, model, done, history)
    return dict(counts, history=history, fit=fit)


def _check_fit(fit, model, done, history):
    _require(isinstance(fit, dict) and set(fit) == set(FIELDS) | {"best_score", "best_state"},
             "fit: expected the keys %s" % sorted(set(FIELDS) | {"best_score", "best_state"}))
    values = _checked(FIELDS, **{k: fit[k] for k in FIELDS})
    start, last = values["start"], values["start"] + values["epochs"]
    _require(start <= done <= last, "fit: the run covers epochs %d to %d, but %d epochs are "
             "done" % (start + 1, last, done))
    _require(not len(history) or history.epoch[0] == start + 1,
             "fit: the history must start at the run's first epoch %d" % (start + 1))
    _require(values["bad_epochs"] <= done - start,
             "fit: bad_epochs exceeds the epochs run")
    _require(values["validation"] or not values["restore_best"],
             "fit: restore_best needs validation")
    score = fit["best_score"]
    _require(score is None or (isinstance(score, (list, tuple)) and 1 <= len(score) <= 2
                               and all(_SCORE_PART.accepts_type(v) for v in score)),
             "fit: best_score must be None or a list of one or two numbers")
    values["best_score"] = score
    best = fit["best_state"]
    if best is not None:
        _require(values["restore_best"], "fit: best parameters saved without restore_best")
        _check_arrays(best, model)
    values["best_state"] = best
    return values


def _check_arrays(arrays, model):
    """ValueError unless `arrays` has exactly the model's state_dict keys, shapes and
    dtypes."""
    expected = {k: p.data for k, p in model.named_parameters()}
    expected.update(model.named_buffers())
    _require(isinstance(arrays, dict) and set(arrays) == set(expected),
             "fit: the best parameters do not match the model's state_dict keys")
    for k, target in expected.items():
        a = arrays[k]
        _require(isinstance(a, np.ndarray) and a.shape == target.shape
                 and a.dtype == target.dtype,
                 "fit: best parameter %r must be %s of shape %s" % (k, target.dtype,
                                                                    target.shape))


def _checked(constraints, **values):
    try:
        return check_all("Trainer.load_run_state", constraints, **values)
    except TypeError as exc:          # in loaded data a wrong type is a bad value
        raise ValueError(str(exc)) from None


def _require(cond, reason):
    if not cond:
        raise ValueError("Trainer.load_run_state: %s" % reason)
