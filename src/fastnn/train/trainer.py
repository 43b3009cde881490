"""`Trainer`: the training loop (the cs231n Solver done right) and its `History`.

>>> from fastnn.layers import Sequential, Dense, ReLU
>>> from fastnn.losses import SoftmaxCrossEntropy
>>> from fastnn.optim import Adam
>>> from fastnn.data import make_spirals, train_val_split
>>> from fastnn.train.trainer import Trainer
>>> X, y = make_spirals(100, 3, rng=0)
>>> Xtr, Xva, ytr, yva = train_val_split(X, y, 0.2, rng=0)
>>> model = Sequential(Dense(2, 64, rng=0), ReLU(), Dense(64, 3, rng=1))
>>> trainer = Trainer(model, SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-2),
...                   verbose=0)
>>> history = trainer.fit(Xtr, ytr, validation_data=(Xva, yva), epochs=5, seed=0)
>>> len(history), sorted(trainer.evaluate(Xva, yva))
(5, ['accuracy', 'loss'])

Behaviour worth knowing:

* Accuracy: argmax of the output for SoftmaxCrossEntropy / MulticlassHinge, ``logit > 0``
  against ``target > 0.5`` for BCEWithLogits (averaged over all outputs), none for MSE
  (regression: only the loss is reported). The train loss / accuracy of an epoch are
  averages over its mini-batches, in training mode, as they were computed.
* With validation data the parameters of the best epoch (highest val accuracy, ties
  broken by lower val loss; lowest val loss for regression; see `monitor`) are kept
  and restored at the end (``restore_best=True``); ``patience=k`` stops after k epochs
  without improvement.
* A non-finite loss (or gradient, or parameter) stops training with `NonFiniteError`
  naming the epoch, step and (for gradients / parameters) the layer; the model is put
  back to its parameters at the start of that epoch (all its earlier steps were
  finite), and the history so far is on ``trainer.history`` and on the error.
  The optimizer state is not rolled back: make a new optimizer to continue.
* Ctrl-C (KeyboardInterrupt) inside `fit` stops training gracefully: the model gets the
  best parameters so far (with validation data and ``restore_best``; otherwise it keeps
  its current ones), and `fit` returns the history so far with ``history.interrupted``
  set (also on ``trainer.history``). ``Trainer(..., reraise_interrupt=True)`` re-raises
  the KeyboardInterrupt after doing the same.
"""
import math
import os
import time

import numpy as np

from .progress import Progress
from ..core.workspace import Workspace
from ..losses import SoftmaxCrossEntropy

__all__ = ["Trainer", "History", "NonFiniteError"]


class NonFiniteError(FloatingPointError, RuntimeError):
    """Training produced a NaN / inf loss, gradient or parameter.

    Attributes: epoch, step (1-based step within the epoch), global_step, what ("loss",
    "gradient" or "parameter"), where (parameter name or None), history (History so far).
    """

    def __init__(self, message, epoch=None, step=None, global_step=None, what=None,
                 where=None, history=None):
        super().__init__(message)
        self.epoch, self.step, self.global_step = epoch, step, global_step
        self.what, self.where, self.history = what, where, history


# --------------------------------------------------------------------------- History
class History:
    """Per-epoch training record.

    Lists (one entry per epoch, None where not applicable): ``epoch`` (1-based, continuing
    across `fit` calls on one trainer), ``loss``, ``accuracy`` (train), ``val_loss``,
    ``val_accuracy``, ``lr`` (learning rate used during the epoch), ``time`` (seconds).
    Also: ``best_epoch`` (epoch whose parameters were kept, or None), ``stop_reason``
    ("completed", "early_stopping", "interrupted" or "non_finite"), ``interrupted``,
    ``warnings`` (diagnostics messages as "epoch N: ...").

    >>> h = History(); h.append(epoch=1, loss=0.5, accuracy=0.8, lr=0.01, time=0.1)
    >>> h.loss, h.as_dict()["accuracy"]
    ([0.5], [0.8])
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
        unknown = set(row) - set(self.KEYS)
        if unknown:
            raise ValueError("History.append: unknown keys %s" % sorted(unknown))
        for k in self.KEYS:
            getattr(self, k).append(row.get(k))

    def __len__(self):
        return len(self.epoch)

    def __getitem__(self, key):
        if key not in self.KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def as_dict(self):
        """{key: list} for every per-epoch key (copies)."""
        return {k: list(getattr(self, k)) for k in self.KEYS}

    def last(self):
        """The last epoch's row as a dict (empty when no epoch ran)."""
        return {k: getattr(self, k)[-1] for k in self.KEYS} if len(self) else {}

    def __repr__(self):
        if not len(self):
            return "History(empty)"
        return "History(%d epochs: %s)" % (len(self), _format_row(self.last()))

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


def _format_row(row):
    parts = []
    for k, name, fmt in (("loss", "loss", "%.4f"), ("accuracy", "acc", "%.4f"),
                         ("val_loss", "val_loss", "%.4f"), ("val_accuracy", "val_acc", "%.4f"),
                         ("lr", "lr", "%.1e")):
        if row.get(k) is not None:
            parts.append(("%s " + fmt) % (name, row[k]))
    return "  ".join(parts)


# --------------------------------------------------------------------------- helpers
_TASKS = {"SoftmaxCrossEntropy": "multiclass", "MulticlassHinge": "multiclass",
          "BCEWithLogits": "binary", "MSE": "regression"}


def _task_of(loss, task):
    if task is not None:
        if task not in ("multiclass", "binary", "regression"):
            raise ValueError('Trainer: task must be "multiclass", "binary", "regression" or '
                             'None, got %r' % (task,))
        return task
    for cls in type(loss).__mro__:
        if cls.__name__ in _TASKS:
            return _TASKS[cls.__name__]
    return "regression"


def _model_dtype(model):
    dt = getattr(model, "dtype", None)
    if dt is None:
        params = model.parameters()
        dt = params[0].data.dtype if params else np.float32
    return np.dtype(dt)


def _snapshot(model):
    return model.state_dict()


def _first_nonfinite(named):
    for name, arr in named:
        if not np.isfinite(arr).all():
            return name
    return None


def _QUIET_FP():
    """NumPy floating-point warnings off: the trainer reports non-finite values itself."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


# --------------------------------------------------------------------------- Trainer
class Trainer:
    """Train a model with a loss and an optimizer; see the module docstring.

    model: a fastnn Module (typically a Sequential). loss: a fastnn loss object.
    optimizer: a fastnn.optim optimizer over ``model.parameters()``. scheduler: an
    optional learning-rate scheduler, stepped once per epoch. diagnostics: False, True
    or a `fastnn.train.diagnostics.Monitor` (babysitting statistics and warnings, on
    ``trainer.monitor``). verbose: 0 silent, 1 a line (or tqdm bar) per epoch plus
    diagnostics warnings, 2 also the diagnostics table every epoch. patience: stop
    after this many epochs without validation improvement (None: never). monitor:
    "auto" (val_accuracy for classification, val_loss for regression), "val_accuracy"
    or "val_loss". min_delta: smallest improvement that counts. task: None (from the
    loss: "multiclass", "binary" or "regression") or one of those. eval_batch_size:
    batch size of evaluate / predict. progress: "auto", "tqdm" or "plain". callbacks:
    callables ``f(trainer, epoch, row)`` run after every epoch (row: that epoch's
    History entry as a dict); returning True stops training.
    """

    def __init__(self, model, loss, optimizer, scheduler=None, diagnostics=False, verbose=1,
                 patience=None, restore_best=None, monitor="auto", min_delta=0.0, task=None,
                 eval_batch_size=1024, progress="auto", callbacks=(), reraise_interrupt=False,
                 stream=None):
        if not hasattr(model, "parameters") or not hasattr(model, "train"):
            raise TypeError("Trainer: model must be a fastnn Module, got %s"
                            % type(model).__name__)
        if not callable(loss) or not hasattr(loss, "backward"):
            raise TypeError("Trainer: loss must be a fastnn loss object (e.g. "
                            "fastnn.losses.SoftmaxCrossEntropy()), got %r" % (loss,))
        if not hasattr(optimizer, "step"):
            raise TypeError("Trainer: optimizer must have a step() method, got %r" % (optimizer,))
        if verbose not in (0, 1, 2) or isinstance(verbose, bool):
            raise ValueError("Trainer: verbose must be 0, 1 or 2, got %r" % (verbose,))
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                     or patience < 1):
            raise ValueError("Trainer: patience must be None or an int >= 1, got %r" % (patience,))
        if monitor not in ("auto", "val_accuracy", "val_loss"):
            raise ValueError('Trainer: monitor must be "auto", "val_accuracy" or "val_loss", '
                             'got %r' % (monitor,))
        if progress not in ("auto", "tqdm", "plain"):
            raise ValueError('Trainer: progress must be "auto", "tqdm" or "plain", got %r'
                             % (progress,))
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.verbose = verbose
        self.patience = patience
        self.restore_best = restore_best
        self.task = _task_of(loss, task)
        if monitor == "auto":
            monitor = "val_loss" if self.task == "regression" else "val_accuracy"
        if monitor == "val_accuracy" and self.task == "regression":
            raise ValueError("Trainer: monitor='val_accuracy' needs a classification loss")
        self.monitor_key = monitor
        self.min_delta = float(min_delta)
        self.eval_batch_size = int(eval_batch_size)
        self.progress = progress
        self.callbacks = list(callbacks)
        self.reraise_interrupt = bool(reraise_interrupt)
        self.stream = stream
        self.history = History()
        self.epochs_done = 0
        self.global_step = 0
        self._fit_state = None      # state of the last fit run, for checkpoints
        self.dtype = _model_dtype(model)
        if diagnostics is True:
            from .diagnostics import Monitor
            diagnostics = Monitor()
        elif diagnostics is False or diagnostics is None:
            diagnostics = None
        elif not hasattr(diagnostics, "attach"):
            raise TypeError("Trainer: diagnostics must be True, False or a "
                            "fastnn.train.diagnostics.Monitor, got %r" % (diagnostics,))
        self.monitor = diagnostics.attach(model, loss) if diagnostics is not None else None
        # the no-copy internal paths of fastnn modules and losses (public ones otherwise)
        self._forward = getattr(model, "_forward", None) or model.forward
        bwd = getattr(model, "_backward", None)
        self._backward = bwd if bwd is not None else (lambda dy, need_dx=False: model.backward(dy))
        self._loss_grad = getattr(loss, "_backward", None) or loss.backward
        self._count_ws = Workspace()
        self._count = {"multiclass": self._count_multiclass, "binary": self._count_binary,
                       "regression": None}[self.task]
        self._fused_loss = (loss._loss_and_hits if type(loss) is SoftmaxCrossEntropy
                            and self.task == "multiclass" else None)

    # ------------------------------------------------------------------- steps
    def _train_step(self, xb, yb):
        """One optimisation step on a batch; returns (loss, number of correct
        predictions). Raises NonFiniteError (via _bad_loss) on a non-finite loss."""
        out = self._forward(xb)
        loss, correct = self._loss_and_count(out, yb)
        if not math.isfinite(loss):
            self._bad_loss(loss, xb)
        self._backward(self._loss_grad(), False)
        self.optimizer.step()
        return loss, correct

    def _loss_and_count(self, out, yb):
        """(loss, correct predictions) of a batch: for SoftmaxCrossEntropy in one kernel
        call (the loss kernel also counts argmax hits; a step's Python between kernels
        runs on caches the GEMMs just flushed, so every call saved counts), else the loss
        then the count."""
        if self._fused_loss is not None:
            res = self._fused_loss(out, yb)
            if res is not None:
                return res
        loss = self.loss(out, yb)
        return loss, (self._count(out, yb) if self._count is not None else 0)

    def _diag_step(self, xb, yb):
        """`_train_step` with the diagnostics monitor recording along the way."""
        mon = self.monitor
        out = mon.forward(xb)
        loss = self.loss(out, yb)
        if not math.isfinite(loss):
            self._bad_loss(loss, xb)
        mon.record_loss(loss, out)
        correct = self._count(out, yb) if self._count is not None else 0
        mon.backward(self._loss_grad())
        mon.before_update()
        self.optimizer.step()
        mon.after_update(self.global_step)
        return loss, correct

    def _count_multiclass(self, out, yb):
        """Correct argmax predictions, into reused buffers (a warm step allocates none)."""
        ws = self._count_ws
        pred = ws.get("pred", (out.shape[0],), np.intp)
        hit = ws.get("hit", (out.shape[0],), np.bool_)
        np.argmax(out, axis=1, out=pred)
        np.equal(pred, yb, out=hit)
        return int(np.count_nonzero(hit))

    def _count_binary(self, out, yb):
        """Correct `logit > 0` predictions against `target > 0.5`, averaged over the
        outputs of a row; into reused buffers, with the thresholds as 0-d arrays (a
        Python scalar operand would allocate one per call)."""
        ws = self._count_ws
        zero = ws.get("zero", (), out.dtype)
        half = ws.get("half", (), yb.dtype)
        zero.fill(0)
        half.fill(0.5)
        pos = ws.get("pos", out.shape, np.bool_)
        hit = ws.get("hit_b", out.shape, np.bool_)
        np.greater(out, zero, out=pos)
        np.greater(yb, half, out=hit)
        np.equal(pos, hit, out=hit)
        return int(np.count_nonzero(hit)) / (out.size / out.shape[0])

    # ------------------------------------------------------------- non-finite
    def _bad_loss(self, loss, xb):
        """Diagnose a non-finite loss: previous gradients, parameters, inputs."""
        named = self.model.named_parameters()
        where = _first_nonfinite((n, p.grad) for n, p in named) if self.global_step else None
        # a bad gradient / update happened in the previous step (the loss check of this
        # step is where it shows); the previous step is never in an earlier epoch, since
        # the end-of-epoch parameter check would have caught it there
        step, gstep = self._step - 1, self.global_step
        if where is not None:
            what = "gradient"
            detail = ("the gradient of %s (the update then spread it, so the next loss is "
                      "%r)" % (self._describe_param(where), loss))
        else:
            where = _first_nonfinite((n, p.data) for n, p in named)
            if where is not None:
                what = "parameter"
                detail = ("parameter %s after the update (so the next loss is %r)"
                          % (self._describe_param(where), loss))
            else:
                step, gstep = self._step, self.global_step + 1
                what = "loss"
                detail = "loss is %r: %s" % (loss, "the input batch contains NaN or inf"
                                             if not np.isfinite(xb).all()
                                             else "the forward pass overflowed")
        self._raise_nonfinite(detail, what, where, step, gstep)

    def _describe_param(self, name):
        layer = name.rsplit(".", 1)[0] if "." in name else None
        mod = None
        if layer is not None:
            for n, m in getattr(self.model, "named_modules", lambda: [])():
                if n == layer:
                    mod = m
        return "%s (layer %s, %s)" % (name, layer, type(mod).__name__) if mod is not None \
            else name

    def _raise_nonfinite(self, detail, what, where, step, global_step):
        lr = getattr(self.optimizer, "lr", None)
        hint = ("lower the learning rate%s, clip gradients (fastnn.optim.clip_grad_norm) or "
                "check the inputs for NaN/inf" % (" (now %g)" % lr if lr is not None else ""))
        msg = ("Trainer.fit: non-finite %s at epoch %d, step %d (global step %d): %s. "
               "Training stopped; the model was restored to its parameters at the start of "
               "epoch %d; %s."
               % (what, self._epoch, step, global_step, detail, self._epoch, hint))
        raise NonFiniteError(msg, epoch=self._epoch, step=step, global_step=global_step,
                             what=what, where=where)

    # --------------------------------------------------------------- checks
    def _prepare(self, X, y, what):
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.dtype.kind not in "fiu" or X.ndim < 1:
            raise TypeError("Trainer.%s: X must be a numeric array of shape (N, ...), got %s "
                            "of shape %s" % (what, X.dtype, X.shape))
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if not np.isfinite(X).all():
            bad = int(np.flatnonzero(~np.isfinite(X.reshape(len(X), -1)).all(axis=1))[0])
            raise ValueError("Trainer.%s: X contains NaN or inf (first at row %d)" % (what, bad))
        if y is None:
            return X, None
        y = np.asarray(y)
        if len(y) != len(X):
            raise ValueError("Trainer.%s: X and y must have the same number of samples, got "
                             "%d and %d" % (what, len(X), len(y)))
        if self.task == "multiclass":
            if y.dtype.kind not in "iu":
                if y.dtype.kind == "f" and np.all(y == np.round(y)):
                    y = y.astype(np.int64)
                else:
                    raise TypeError("Trainer.%s: %s needs integer class labels, got %s"
                                    % (what, type(self.loss).__name__, y.dtype))
            y = np.ascontiguousarray(y, dtype=np.int64)
        else:
            if y.dtype.kind not in "fiub":
                raise TypeError("Trainer.%s: y must be numeric, got %s" % (what, y.dtype))
            y = np.ascontiguousarray(y, dtype=self.dtype)
            if not np.isfinite(y).all():
                raise ValueError("Trainer.%s: y contains NaN or inf" % what)
        if len(X) == 0:
            raise ValueError("Trainer.%s: got no samples" % what)
        return X, y

    # ------------------------------------------------------------------- fit
    def fit(self, X, y, validation_data=None, epochs=10, batch_size=32, shuffle=True,
            seed=None, checkpoint=None, resume=None):
        """Train for `epochs` epochs; returns the `History` of this call (also kept on
        ``trainer.history``).

        X: (N, ...) inputs; y: (N,) integer labels (classification) or targets shaped like
        the model output. validation_data: None or (X_val, y_val), evaluated after every
        epoch. batch_size: mini-batch size (the last batch may be smaller). shuffle: a
        new order each epoch, drawn from `seed` (an int or a numpy Generator; None uses
        fastnn's global generator, which `fastnn.seed` resets).

        checkpoint: a path; a checkpoint (`fastnn.train.checkpoint.save_checkpoint`: model,
        optimizer, scheduler, history, best-epoch tracking, every random state) is
        written there atomically at the end of every epoch. resume: a path to such a
        checkpoint: restores all of it into this trainer (whose model, optimizer and
        scheduler must be built like the saved ones) and continues that run up to its
        epoch ``start + epochs`` -- call `fit` with the same arguments as the
        interrupted run (X, y, validation_data, batch_size, shuffle; `seed` is then
        ignored, the saved generator is used) and the result is bit-identical to an
        uninterrupted run (timings aside). The returned History holds the whole run.
        """
        # non-finite values are detected and reported by the trainer itself: NumPy's
        # overflow / invalid-value RuntimeWarnings (NumPy backend) would only be noise or,
        # with warnings turned into errors, interrupt the step before that report
        with _QUIET_FP():
            return self._fit(X, y, validation_data, epochs, batch_size, shuffle, seed,
                             checkpoint, resume)

    def _resume(self, path, n, batch_size, shuffle, validation):
        """Restore a checkpoint's full state (after checking that it belongs to a fit of
        the same shape, before changing anything); returns its run state."""
        from .checkpoint import _bad, _validate, _apply, _Bad
        path = os.fspath(path)
        try:
            plan = _validate(path, self, self.model, self.optimizer, self.scheduler)
        except _Bad as exc:
            raise _bad(path, str(exc)) from None
        fit = plan["trainer"]["fit"]
        if fit is None:
            raise ValueError("Trainer.fit: checkpoint %s holds no fit run to resume" % path)
        got = {"n": n, "batch_size": batch_size, "shuffle": bool(shuffle),
               "validation": validation}
        diff = ["%s=%r (checkpoint: %r)" % (k, v, fit[k]) for k, v in got.items()
                if fit[k] != v]
        if diff:
            raise ValueError("Trainer.fit: cannot resume %s bit-identically: %s"
                             % (path, ", ".join(diff)))
        return _apply(plan, self, self.model, self.optimizer, self.scheduler)["fit"]

    def _fit(self, X, y, validation_data, epochs, batch_size, shuffle, seed, checkpoint=None,
             resume=None):
        from ..core.rng import as_rng
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError("Trainer.fit: epochs must be an int >= 1, got %r" % (epochs,))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError("Trainer.fit: batch_size must be an int >= 1, got %r" % (batch_size,))
        X, y = self._prepare(X, y, "fit")
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("Trainer.fit: validation_data must be (X_val, y_val)")
            Xv, yv = self._prepare(validation_data[0], validation_data[1], "fit (validation)")
        rng = as_rng(seed, "Trainer.fit")
        restore_best = (validation_data is not None if self.restore_best is None
                        else bool(self.restore_best) and validation_data is not None)
        if self.patience is not None and validation_data is None:
            raise ValueError("Trainer.fit: patience (early stopping) needs validation_data")
        if checkpoint is not None:
            checkpoint = os.fspath(checkpoint)

        n = len(X)
        steps = -(-n // batch_size)
        best_score, best_state, bad_epochs = None, None, 0
        if resume is not None:
            run = self._resume(resume, n, batch_size, shuffle, validation_data is not None)
            history = self.history
            rng, best_score, best_state = run["rng"], run["best_score"], run["best_state"]
            bad_epochs, start = run["bad_epochs"], run["start"]
            restore_best = run["restore_best"]
            if history.stop_reason is not None:      # the run had already stopped
                epochs = self.epochs_done - start
        else:
            history = History()
            history.n_val = len(Xv) if validation_data is not None else None
            self.history = history
            start = self.epochs_done
        progress = Progress(self.verbose, self.progress, self.stream)
        mon = self.monitor
        every = mon.interval(steps) if mon is not None else 0
        Xs, ys = (np.empty_like(X), np.empty_like(y)) if shuffle else (X, y)
        self.model.train()
        first_epoch = self.epochs_done + 1
        last_epoch = start + epochs
        try:
            for epoch in range(first_epoch, last_epoch + 1):
                self._epoch, self._step = epoch, 0
                t0 = time.perf_counter()
                good_state = _snapshot(self.model)
                lr = getattr(self.optimizer, "lr", None)
                if shuffle:
                    perm = rng.permutation(n)
                    np.take(X, perm, axis=0, out=Xs)
                    np.take(y, perm, axis=0, out=ys)
                if mon is not None:
                    mon.start_epoch()
                progress.start_epoch(epoch, last_epoch, steps)
                bar = progress.bar
                total_loss = 0.0
                total_correct = 0
                try:
                    for s in range(steps):
                        self._step = s + 1
                        xb = Xs[s * batch_size:(s + 1) * batch_size]
                        yb = ys[s * batch_size:(s + 1) * batch_size]
                        if every and s % every == 0:
                            loss, correct = self._diag_step(xb, yb)
                        else:
                            loss, correct = self._train_step(xb, yb)
                        total_loss += loss * len(xb)
                        total_correct += correct
                        self.global_step += 1
                        if bar is not None:
                            bar.update()
                    self._check_params_finite()
                except NonFiniteError as exc:
                    progress.close()
                    self.model.load_state_dict(good_state)
                    history.stop_reason = "non_finite"
                    exc.history = history
                    raise
                row = {"epoch": epoch, "loss": total_loss / n, "lr": lr,
                       "accuracy": None if self._count is None else total_correct / n}
                if validation_data is not None:
                    ev = self.evaluate(Xv, yv, _prepared=True)
                    row["val_loss"] = ev["loss"]
                    row["val_accuracy"] = ev.get("accuracy")
                row["time"] = time.perf_counter() - t0
                history.append(**row)
                self.epochs_done = epoch
                if self.scheduler is not None:
                    self.scheduler.step()
                improved = False
                if validation_data is not None:
                    score = self._score(row)
                    if best_score is None or self._better(score, best_score):
                        best_score, improved, bad_epochs = score, True, 0
                        history.best_epoch = epoch
                        if restore_best:
                            best_state = _snapshot(self.model)
                    else:
                        bad_epochs += 1
                progress.end_epoch(self._epoch_line(row, last_epoch, improved),
                                   _format_row(row))
                self._diagnose(epoch, history, progress)
                stop = any([cb(self, epoch, dict(row)) for cb in self.callbacks])
                if self.patience is not None and bad_epochs >= self.patience:
                    history.stop_reason = "early_stopping"
                    progress.write("early stopping: no improvement of %s for %d epochs"
                                   % (self.monitor_key, self.patience))
                elif stop:
                    history.stop_reason = "callback"
                self._fit_state = {
                    "start": start, "epochs": epochs, "n": n, "batch_size": batch_size,
                    "shuffle": bool(shuffle), "validation": validation_data is not None,
                    "restore_best": restore_best, "best_score": best_score,
                    "bad_epochs": bad_epochs, "rng": rng, "best_state": best_state}
                if checkpoint is not None:
                    from .checkpoint import save_checkpoint
                    save_checkpoint(checkpoint, self)
                if history.stop_reason is not None:
                    break
            else:
                if history.stop_reason is None:
                    history.stop_reason = "completed"
        except KeyboardInterrupt:
            progress.close()
            history.interrupted = True
            history.stop_reason = "interrupted"
            if best_state is not None:
                self.model.load_state_dict(best_state)
                best_state = None
                progress.write("interrupted at epoch %d, step %d: restored the parameters of "
                               "epoch %d (best %s)" % (self._epoch, self._step,
                                                       history.best_epoch, self.monitor_key))
            else:
                progress.write("interrupted at epoch %d, step %d: keeping the current "
                               "parameters" % (self._epoch, self._step))
            self.model.train()
            if self.reraise_interrupt:
                raise
            return history
        finally:
            progress.close()
        if best_state is not None and history.best_epoch != history.epoch[-1]:
            self.model.load_state_dict(best_state)
            progress.write("restored the parameters of epoch %d (best %s)"
                           % (history.best_epoch, self.monitor_key))
        return history

    def _check_params_finite(self):
        """Once per epoch: a non-finite gradient in the epoch's last step never meets a
        later loss check, so look at the parameters themselves."""
        named = self.model.named_parameters()
        where = _first_nonfinite((n, p.data) for n, p in named)
        if where is not None:
            gwhere = _first_nonfinite((n, p.grad) for n, p in named)
            what = "gradient" if gwhere is not None else "parameter"
            where = gwhere or where
            self._raise_nonfinite("%s %s after the epoch's last update"
                                  % (what, self._describe_param(where)), what, where,
                                  self._step, self.global_step)

    def _score(self, row):
        if self.monitor_key == "val_accuracy":
            return (row["val_accuracy"], -row["val_loss"])
        return (-row["val_loss"],)

    def _better(self, score, best):
        if score[0] > best[0] + self.min_delta:
            return True
        return len(score) > 1 and score[0] == best[0] and score[1] > best[1]

    def _epoch_line(self, row, last_epoch, improved):
        width = len(str(last_epoch))
        line = "epoch %*d/%d  %s  %.2fs" % (width, row["epoch"], last_epoch, _format_row(row),
                                            row["time"])
        return line + ("  *" if improved else "")

    def _diagnose(self, epoch, history, progress):
        mon = self.monitor
        if mon is None:
            return
        new = mon.end_epoch(epoch, history.lr[-1])
        more = mon.check_history(history, self.task)
        mon.epochs[-1].warnings.extend(more)
        new += more
        history.warnings.extend("epoch %d: %s" % (epoch, m) for m in new)
        if self.verbose == 2:
            progress.write(str(mon.epochs[-1]))
        for m in new:
            progress.write("  warning: " + m)

    # -------------------------------------------------------------- evaluation
    def _outputs(self, X):
        """Yield (start, stop, output) over X in eval-size batches (model in eval mode)."""
        bs = self.eval_batch_size
        for start in range(0, len(X), bs):
            xb = X[start:start + bs]
            yield start, start + len(xb), self._forward(xb)

    def evaluate(self, X, y, batch_size=None, _prepared=False):
        """Loss (and accuracy for classification) on (X, y), in eval mode and in batches;
        the previous train/eval mode is restored. Returns {"loss": float, "accuracy":
        float} (no "accuracy" for regression)."""
        if not _prepared:
            X, y = self._prepare(X, y, "evaluate")
        was_training = getattr(self.model, "training", True)
        saved_bs = self.eval_batch_size
        if batch_size is not None:
            self.eval_batch_size = int(batch_size)
        self.model.eval()
        try:
            total, correct = 0.0, 0
            with _QUIET_FP():
                for a, b, out in self._outputs(X):
                    loss, hits = self._loss_and_count(out, y[a:b])
                    total += loss * (b - a)
                    correct += hits
        finally:
            self.model.train(was_training)
            self.eval_batch_size = saved_bs
        res = {"loss": total / len(X)}
        if self._count is not None:
            res["accuracy"] = correct / len(X)
        return res

    def decision_function(self, X):
        """Raw model outputs (logits / scores / regression values) for X, computed in eval
        mode and in batches; shape (N, ...)."""
        X, _ = self._prepare(X, None, "predict")
        was_training = getattr(self.model, "training", True)
        self.model.eval()
        try:
            result = None
            with _QUIET_FP():
                for a, b, out in self._outputs(X):
                    if result is None:
                        result = np.empty((len(X),) + out.shape[1:], out.dtype)
                    result[a:b] = out
        finally:
            self.model.train(was_training)
        return result

    def predict(self, X):
        """Class labels (int64, shape (N,)) for multiclass; 0/1 labels (int64, shaped like
        the output) for binary; the raw outputs for regression."""
        out = self.decision_function(X)
        if self.task == "multiclass":
            return out.argmax(axis=1).astype(np.int64)
        if self.task == "binary":
            return (out > 0).astype(np.int64)
        return out

    def predict_proba(self, X):
        """Class probabilities: softmax of the outputs (SoftmaxCrossEntropy, shape (N, C))
        or sigmoid (BCEWithLogits, shaped like the output). Not defined for hinge or
        regression losses (ValueError)."""
        name = type(self.loss).__name__
        if self.task == "regression" or name == "MulticlassHinge":
            raise ValueError("Trainer.predict_proba: %s outputs are not probabilities; use "
                             "predict() or decision_function()" % name)
        out = self.decision_function(X).astype(np.float64)
        if self.task == "binary":
            p = np.empty_like(out)
            pos = out >= 0
            p[pos] = 1.0 / (1.0 + np.exp(-out[pos]))
            e = np.exp(out[~pos])
            p[~pos] = e / (1.0 + e)
            return p.astype(self.dtype)
        out -= out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out.astype(self.dtype)
