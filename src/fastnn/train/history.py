"""`History`: what `Trainer.fit` records, one row per epoch.

>>> h = History(); h.append(epoch=1, loss=0.5, accuracy=0.8, lr=0.01, time=0.1)
>>> h.loss, h["accuracy"], h[-1]["loss"]
([0.5], [0.8], 0.5)
"""
import math
import numbers

from ..core.validation import Integer, NoneOr, Options, Real

__all__ = ["History", "format_row"]

#: how a History ended: its `stop_reason` values
STOP_REASONS = ("completed", "early_stopping", "interrupted", "non_finite", "callback")


class History:
    """Per-epoch training record.

    Columns (lists, one entry per epoch, None where not applicable): ``epoch`` (1-based,
    continuing across `fit` calls on one trainer), ``loss``, ``accuracy`` (train),
    ``val_loss``, ``val_accuracy``, ``lr`` (learning rate used during the epoch),
    ``time`` (seconds). ``history["loss"]`` is a column, ``history[i]`` the row of the
    i-th recorded epoch as a dict (``history[-1]``: the last one). Also: ``best_epoch``
    (epoch whose parameters were kept, or None), ``stop_reason`` (one of
    `STOP_REASONS`, or None while running), ``interrupted``, ``n_val`` (validation
    samples, or None), ``warnings`` (diagnostics messages as "epoch N: ...").
    """

    KEYS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "time")

    def __init__(self):
        for k in self.KEYS:
            setattr(self, k, [])
        self.best_epoch = None
        self.n_val = None
        self.stop_reason = None
        self.interrupted = False
        self.warnings = []

    def append(self, **row):
        """Add one epoch's row (keys of `KEYS`; missing ones are None)."""
        unknown = set(row) - set(self.KEYS)
        if unknown:
            raise ValueError("History.append: unknown keys %s" % sorted(unknown))
        for k in self.KEYS:
            getattr(self, k).append(row.get(k))

    def __len__(self):
        return len(self.epoch)

    def __getitem__(self, key):
        """A column by name ("loss") or a row by position (0, -1)."""
        if isinstance(key, str):
            if key not in self.KEYS:
                raise KeyError("History has no column %r (columns: %s)"
                               % (key, ", ".join(self.KEYS)))
            return getattr(self, key)
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            if not -len(self) <= key < len(self):
                raise IndexError("History row %d out of range for %d epochs" % (key, len(self)))
            return {k: getattr(self, k)[key] for k in self.KEYS}
        raise TypeError("History indices are column names or row positions, got %s"
                        % type(key).__name__)

    def as_dict(self):
        """{key: list} for every per-epoch key (copies)."""
        return {k: list(getattr(self, k)) for k in self.KEYS}

    def last(self):
        """The last epoch's row as a dict (empty when no epoch ran)."""
        return self[-1] if len(self) else {}

    # ------------------------------------------------------------------ saved form
    def state(self):
        """Everything recorded, as JSON-native values (what a checkpoint stores)."""
        return {"rows": self.as_dict(), "best_epoch": self.best_epoch, "n_val": self.n_val,
                "stop_reason": self.stop_reason, "interrupted": self.interrupted,
                "warnings": list(self.warnings)}

    @classmethod
    def from_state(cls, state):
        """A History from `state()` output; ValueError naming the field that is wrong."""
        _require(isinstance(state, dict) and set(state) == set(cls().state()),
                 "expected the keys %s" % sorted(cls().state()))
        rows = state["rows"]
        _require(isinstance(rows, dict) and set(rows) == set(cls.KEYS),
                 "the columns must be %s" % (cls.KEYS,))
        n = len(rows["epoch"]) if isinstance(rows["epoch"], list) else -1
        for k, col in rows.items():
            _require(isinstance(col, list) and len(col) == n,
                     "column %r must be a list as long as 'epoch'" % k)
            _require(all(v is None or _is_metric(v) for v in col),
                     "column %r must hold numbers" % k)
        epochs = rows["epoch"]
        _require(all(_valid(v, Integer(1)) for v in epochs)
                 and all(b == a + 1 for a, b in zip(epochs, epochs[1:])),
                 "epochs must be consecutive ints >= 1")
        _require(state["best_epoch"] is None or state["best_epoch"] in epochs,
                 "best_epoch must be None or a recorded epoch")
        _require(_valid(state["n_val"], NoneOr(Integer(1))), "n_val must be None or an int >= 1")
        _require(_valid(state["stop_reason"], NoneOr(Options(*STOP_REASONS))),
                 "stop_reason must be None or one of %s" % (STOP_REASONS,))
        _require(isinstance(state["interrupted"], bool), "interrupted must be a bool")
        _require(isinstance(state["warnings"], list)
                 and all(isinstance(w, str) for w in state["warnings"]),
                 "warnings must be a list of strings")
        h = cls()
        for k in cls.KEYS:
            setattr(h, k, list(rows[k]))
        h.best_epoch, h.n_val = state["best_epoch"], state["n_val"]
        h.stop_reason, h.interrupted = state["stop_reason"], state["interrupted"]
        h.warnings = list(state["warnings"])
        return h

    # ------------------------------------------------------------------ display
    def __repr__(self):
        if not len(self):
            return "History(empty)"
        return "History(%d epochs: %s)" % (len(self), format_row(self.last()))

    def __str__(self):
        cols = [k for k in self.KEYS if any(v is not None for v in getattr(self, k))]
        fmt = {"epoch": "%d", "loss": "%.4f", "accuracy": "%.4f", "val_loss": "%.4f",
               "val_accuracy": "%.4f", "lr": "%.2e", "time": "%.2fs"}
        table = [cols] + [["-" if getattr(self, k)[i] is None else fmt[k] % getattr(self, k)[i]
                           for k in cols] for i in range(len(self))]
        widths = [max(len(r[j]) for r in table) for j in range(len(cols))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
        tail = []
        if self.best_epoch is not None:
            tail.append("best epoch %d" % self.best_epoch)
        if self.stop_reason:
            tail.append("stopped: %s" % self.stop_reason)
        return "\n".join(lines + (["; ".join(tail)] if tail else []))


def format_row(row):
    """One epoch's metrics as "loss 0.1234  acc 0.9500  ..." (the keys present)."""
    parts = []
    for k, name, fmt in (("loss", "loss", "%.4f"), ("accuracy", "acc", "%.4f"),
                         ("val_loss", "val_loss", "%.4f"), ("val_accuracy", "val_acc", "%.4f"),
                         ("lr", "lr", "%.1e")):
        if row.get(k) is not None:
            parts.append(("%s " + fmt) % (name, row[k]))
    return "  ".join(parts)


def _valid(value, constraint):
    """Whether `value` satisfies `constraint` (without converting it)."""
    return constraint.accepts_type(value) and constraint.in_range(constraint.convert(value))


def _is_metric(value):
    """A recorded metric: any number, NaN and inf included (a diverging validation
    loss is recorded as it was)."""
    return _valid(value, Real(finite=False)) or (isinstance(value, float) and math.isnan(value))


def _require(cond, reason):
    if not cond:
        raise ValueError("History.from_state: %s" % reason)
