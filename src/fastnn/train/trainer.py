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

* The loss says the task (`fastnn.losses.Loss.task`): accuracy is the argmax of the
  output for "multiclass" losses (SoftmaxCrossEntropy, MulticlassHinge), ``logit > 0``
  against ``target > 0.5`` for "binary" ones (BCEWithLogits; averaged over all
  outputs), none for "regression" (MSE: only the loss is reported).
* Inputs: X must be floating point (any float dtype, converted to the model's), as
  for the layers; integer or bool X raises TypeError (convert it yourself, e.g.
  ``X.astype(np.float32)``). Labels and targets are checked against the model's
  output once, before the first step (a label out of range raises ValueError and
  trains nothing). The train loss / accuracy of an epoch are
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
import functools
import math
import os
import time

import numpy as np

from ..core.rng import as_rng
from ..core.validation import (Bool, InstanceOf, Integer, NoneOr, Options, Real,
                               as_weights, check, check_all, describe)
from ..core.workspace import Workspace
from ..layers.base import Module
from ..losses import Loss
from ..optim import LRScheduler, Optimizer
from .history import History, format_row
from .progress import Progress
from .run import FitRun, check_run_state

__all__ = ["Trainer", "History", "NonFiniteError"]

#: Trainer's constructor arguments: name -> constraint
_CONSTRAINTS = {
    "model": InstanceOf(Module, "a fastnn Module"),
    "loss": InstanceOf(Loss, "a fastnn loss object (e.g. fastnn.losses.SoftmaxCrossEntropy())"),
    "optimizer": InstanceOf(Optimizer, "a fastnn.optim optimizer"),
    "scheduler": NoneOr(InstanceOf(LRScheduler, "a fastnn.optim scheduler")),
    "verbose": Options(0, 1, 2), "patience": NoneOr(Integer(1)),
    "restore_best": NoneOr(Bool()), "monitor": Options("auto", "val_accuracy", "val_loss"),
    "min_delta": Real(0), "task": NoneOr(Options("multiclass", "binary", "regression")),
    "eval_batch_size": Integer(1), "progress": Options("auto", "tqdm", "plain"),
    "reraise_interrupt": Bool(), "distributed": Bool(), "sync_batchnorm": Bool()}
#: fit's scalar arguments: name -> constraint
_FIT_CONSTRAINTS = {"epochs": Integer(1), "batch_size": Integer(1), "shuffle": Bool()}


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


# --------------------------------------------------------------------------- helpers
def _model_dtype(model):
    dt = model.dtype
    return np.dtype(dt if dt is not None else np.float32)


def _first_nonfinite(named):
    for name, arr in named:
        if not np.isfinite(arr).all():
            return name
    return None


def _QUIET_FP():
    """NumPy floating-point warnings off: the trainer reports non-finite values itself."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def _attach_monitor(diagnostics, model, loss):
    """The diagnostics Monitor attached to model and loss, or None."""
    if diagnostics is True:
        from .diagnostics import Monitor       # loaded on use: not needed to train
        diagnostics = Monitor()
    elif diagnostics is False or diagnostics is None:
        return None
    elif not hasattr(diagnostics, "attach"):
        raise TypeError("Trainer: diagnostics must be True, False or a "
                        "fastnn.train.diagnostics.Monitor, got %r" % (diagnostics,))
    return diagnostics.attach(model, loss)


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
    or "val_loss". min_delta: smallest improvement that counts. task: None (the loss's
    `task`: "multiclass", "binary" or "regression") or one of those. eval_batch_size:
    batch size of evaluate / predict. progress: "auto", "tqdm" or "plain". callbacks:
    callables ``f(trainer, epoch, row)`` run after every epoch (row: that epoch's
    History entry as a dict); returning True stops training.

    distributed: data-parallel training over the MPI ranks this program was started on
    (``mpiexec -n K``; needs mpi4py): see `fastnn.distributed`. `fit` and `evaluate`
    are then collective (every rank calls them with the same arguments); only rank 0
    prints and writes checkpoints. sync_batchnorm: BatchNorm layers use the global
    batch's statistics (needs distributed=True).

    Run state (what checkpoints save): `run_state()` / `load_run_state(state)`.
    """

    def __init__(self, model, loss, optimizer, scheduler=None, diagnostics=False, verbose=1,
                 patience=None, restore_best=None, monitor="auto", min_delta=0.0, task=None,
                 eval_batch_size=1024, progress="auto", callbacks=(), reraise_interrupt=False,
                 stream=None, distributed=False, sync_batchnorm=False):
        kw = check_all("Trainer", _CONSTRAINTS, model=model, loss=loss, optimizer=optimizer,
                       scheduler=scheduler, verbose=verbose, patience=patience,
                       restore_best=restore_best, monitor=monitor, min_delta=min_delta,
                       task=task, eval_batch_size=eval_batch_size, progress=progress,
                       reraise_interrupt=reraise_interrupt, distributed=distributed,
                       sync_batchnorm=sync_batchnorm)
        monitor, task = kw.pop("monitor"), kw.pop("task")
        distributed, sync_batchnorm = kw.pop("distributed"), kw.pop("sync_batchnorm")
        self.__dict__.update(kw)
        self.task = task if task is not None else loss.task
        if monitor == "auto":
            monitor = "val_loss" if self.task == "regression" else "val_accuracy"
        if monitor == "val_accuracy" and self.task == "regression":
            raise ValueError("Trainer: monitor='val_accuracy' needs a classification loss")
        self.monitor_key = monitor
        self.callbacks = list(callbacks)
        self.stream = stream
        self.history = History()
        self.epochs_done = 0
        self.global_step = 0
        self._run = None            # the last fit call's FitRun (for run_state)
        self.dtype = _model_dtype(model)
        self.monitor = _attach_monitor(diagnostics, model, loss)
        # the no-copy internal paths of fastnn modules and losses (Module's docstring)
        self._forward = model._forward
        self._backward = model._backward
        self._loss_grad = loss._backward
        self._count_ws = Workspace()
        self._count = {"multiclass": self._count_multiclass, "binary": self._count_binary,
                       "regression": None}[self.task]
        self._fused_loss = loss.loss_and_hits if self.task == "multiclass" else None
        self._sync = self._data_parallel(distributed, sync_batchnorm)

    def _data_parallel(self, distributed, sync_batchnorm):
        """The `DataParallel` that distributed training goes through, or None."""
        if not distributed:
            if sync_batchnorm:
                raise ValueError("Trainer: sync_batchnorm=True needs distributed=True")
            return None
        from ..distributed.data_parallel import data_parallel   # loaded on use (mpi4py)
        return data_parallel(self.model, self.loss, self.optimizer, sync_batchnorm)

    def __repr__(self):
        n_params = sum(p.size for p in self.model.parameters())
        return ("Trainer(model=%s with %d parameters, loss=%r, optimizer=%s, scheduler=%s, "
                "task=%r, epochs_done=%d)"
                % (type(self.model).__name__, n_params, self.loss,
                   type(self.optimizer).__name__, type(self.scheduler).__name__
                   if self.scheduler is not None else None, self.task, self.epochs_done))

    # ---------------------------------------------------------------- run state
    def run_state(self):
        """What this trainer has done, for checkpoints: {"epochs_done": int,
        "global_step": int, "history": History.state(), "fit": None or the last fit
        call's state (`fastnn.train.run.FitRun.state()`: its arguments, best-epoch
        tracking, shuffling generator and best parameters so far)}. Values are not
        copied."""
        return {"epochs_done": self.epochs_done, "global_step": self.global_step,
                "history": self.history.state(),
                "fit": self._run.state() if self._run is not None else None}

    def check_run_state(self, state):
        """ValueError (naming the field) unless `state` is a `run_state()` this trainer
        can take: types, ranges, consistent counters, best parameters shaped like the
        model's. Changes nothing."""
        check_run_state(state, self.model)

    def load_run_state(self, state):
        """Restore a `run_state()` (checked first; nothing changes when it is bad). The
        generator and the best-parameter arrays are used as they are, not copied."""
        state = check_run_state(state, self.model)
        self.epochs_done, self.global_step = state["epochs_done"], state["global_step"]
        self.history = state["history"]
        self._run = FitRun.from_state(state["fit"]) if state["fit"] is not None else None

    # ------------------------------------------------------------------- steps
    def stepper(self, X, y, sample_weight=None):
        """A callable making one optimisation step on this batch per call (forward, loss,
        backward, optimizer update), what `fit` runs for each batch, with no checks per
        call: X, y (and sample_weight) are validated and converted once, here. Returns
        `step() -> (loss, correct predictions)`; for benchmarks and memory measurements.

        >>> import numpy as np, fastnn
        >>> model = fastnn.Sequential(fastnn.Dense(4, 3, rng=0))
        >>> trainer = fastnn.Trainer(model, fastnn.SoftmaxCrossEntropy(),
        ...                          fastnn.optim.SGD(model.parameters(), lr=0.1), verbose=0)
        >>> step = trainer.stepper(np.ones((8, 4), np.float32), np.zeros(8, np.int64))
        >>> loss, correct = step()
        """
        if self._sync is not None:       # its steps need the ranks' agreement of a fit
            raise ValueError("Trainer.stepper: not available with distributed=True; time "
                             "or measure Trainer.fit instead")
        X, y = self._prepare(X, y, "stepper")
        self._check_targets(y, self._output_shape(X), "stepper")
        wb = None if sample_weight is None else as_weights(
            sample_weight, len(X), "Trainer.stepper", dtype=self.dtype)
        return functools.partial(self._train_step, X, y, wb)

    def _train_step(self, xb, yb, wb=None):
        """One optimisation step on a batch (wb: its row weights or None); returns (loss,
        number of correct predictions). Raises NonFiniteError (via _bad_loss) on a
        non-finite loss."""
        out = self._forward(xb)
        loss, correct = self._loss_and_count(out, yb, wb)
        if not math.isfinite(loss):
            self._bad_loss(loss, xb)
        self._backward(self._loss_grad(), False)
        self.optimizer.step()
        return loss, correct

    def _loss_and_count(self, out, yb, wb=None):
        """(loss, correct predictions) of a batch (weighted by wb when given): in one
        pass when the loss has one (`Loss.loss_and_hits`; a step's Python between
        kernels runs on caches the GEMMs just flushed, so every call saved counts), else
        the loss then the count."""
        if self._fused_loss is not None:
            res = self._fused_loss(out, yb, wb)
            if res is not None:
                return res
        loss = self.loss(out, yb) if wb is None else self.loss(out, yb, sample_weight=wb)
        return loss, (self._count(out, yb) if self._count is not None else 0)

    def _diag_step(self, xb, yb, wb=None):
        """`_train_step` with the diagnostics monitor recording along the way."""
        mon = self.monitor
        out = mon.forward(xb)
        loss = self.loss(out, yb) if wb is None else self.loss(out, yb, sample_weight=wb)
        if not math.isfinite(loss):
            self._bad_loss(loss, xb)
        mon.record_loss(loss, out)
        correct = self._count(out, yb) if self._count is not None else 0
        mon.backward(self._loss_grad())
        mon.before_update()
        self.optimizer.step()
        mon.after_update(self.global_step)
        return loss, correct

    def _sync_step(self, xb, yb, wb=None, mon=None):
        """A data-parallel step (distributed=True): this rank trains on its rows of the
        global batch (xb, yb; row weights wb or None), through the diagnostics monitor
        `mon` when given, and the gradients are summed over the ranks before the update.
        Returns the global batch's (loss, correct predictions)."""
        sync = self._sync
        part, w, share = sync.part(yb, wb)
        x, t = xb[part], yb[part]
        loss, correct, failure = 0.0, 0, None
        if len(x):
            try:
                out = sync.forward(x) if mon is None else mon.forward(x)
                loss, correct = self._loss_and_count(out, t, w)
            except Exception as exc:    # raised on every rank, by batch_totals
                failure = exc
            if mon is not None and failure is None:
                mon.record_loss(loss, out)
        loss, correct = sync.batch_totals(loss, correct, share, failure)
        if not math.isfinite(loss):
            self._bad_loss(loss, xb)
        sync.backward(sync.scaled(self._loss_grad(), share) if len(x) else None,
                      None if mon is None else mon.backward)
        if mon is not None:
            mon.before_update()
        self.optimizer.step()
        if mon is not None:
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

    # ------------------------------------------------------------------ data checks
    def _prepare(self, X, y, what):
        """X as a C-contiguous array of the model's dtype and y as int64 labels
        (multiclass) or targets of that dtype; TypeError / ValueError naming `what`."""
        fn = "Trainer.%s" % what
        if not isinstance(X, np.ndarray):
            X = np.asarray(X)
        if X.dtype.kind != "f" or X.ndim < 1:
            raise TypeError("%s: X must be a float array of shape (N, ...) (as the layers "
                            "take; convert integer data, e.g. X.astype(np.float32)), got %s"
                            % (fn, describe(X)))
        if len(X) == 0:
            raise ValueError("%s: got no samples" % fn)
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if not np.isfinite(X).all():
            bad = int(np.flatnonzero(~np.isfinite(X.reshape(len(X), -1)).all(axis=1))[0])
            raise ValueError("%s: X contains NaN or inf (first at row %d)" % (fn, bad))
        if y is None:
            return X, None
        y = np.asarray(y)
        if y.ndim < 1 or len(y) != len(X):
            raise ValueError("%s: X and y must have the same number of samples, got %d and "
                             "%s" % (fn, len(X), len(y) if y.ndim else "a scalar"))
        if self.task == "multiclass":
            if y.dtype.kind not in "iu":
                if y.dtype.kind == "f" and np.all(y == np.round(y)):
                    y = y.astype(np.int64)
                else:
                    raise TypeError("%s: %s needs integer class labels, got %s"
                                    % (fn, type(self.loss).__name__, describe(y)))
            return X, np.ascontiguousarray(y, dtype=np.int64)
        if y.dtype.kind not in "fiub":
            raise TypeError("%s: y must be numeric, got %s" % (fn, describe(y)))
        y = np.ascontiguousarray(y, dtype=self.dtype)
        if not np.isfinite(y).all():
            raise ValueError("%s: y contains NaN or inf" % fn)
        return X, y

    def _output_shape(self, xb):
        """The model's output shape per sample, from one eval-mode forward of the batch
        `xb` (shaped like the batches that follow, so it warms the same buffers; no
        state changes)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._forward(xb).shape[1:]
        finally:
            self.model.train(was_training)

    def _check_targets(self, y, out_shape, what):
        """Labels / targets against what the model outputs, once before any step."""
        fn = "Trainer.%s" % what
        if self.task == "multiclass":
            if len(out_shape) != 1:
                raise ValueError("%s: %s needs outputs of shape (N, C), the model gives "
                                 "(N, %s)" % (fn, type(self.loss).__name__,
                                              ", ".join(map(str, out_shape))))
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= out_shape[0]:
                row = int(np.flatnonzero((y < 0) | (y >= out_shape[0]))[0])
                raise ValueError("%s: labels must lie in [0, %d) (the model has %d outputs), "
                                 "got %d at row %d" % (fn, out_shape[0], out_shape[0],
                                                       int(y[row]), row))
        elif y.shape[1:] != out_shape:
            raise ValueError("%s: y must have the model's output shape (N, %s), got %s"
                             % (fn, ", ".join(map(str, out_shape)), describe(y)))

    # ------------------------------------------------------------------------ fit
    def fit(self, X, y, validation_data=None, epochs=10, batch_size=32, shuffle=True,
            seed=None, checkpoint=None, resume=None, sample_weight=None):
        """Train for `epochs` epochs; returns the `History` of this call (also kept on
        ``trainer.history``).

        X: (N, ...) float inputs; y: (N,) integer labels (classification) or targets
        shaped like the model output, checked against the model before the first step.
        validation_data: None or (X_val, y_val), evaluated after every epoch.
        batch_size: mini-batch size (the last batch may be smaller). shuffle: a new
        order each epoch, drawn from `seed` (an int or a numpy Generator; None uses
        fastnn's global generator, which `fastnn.seed` resets). sample_weight: None or
        (N,) non-negative row weights, shuffled with the rows and passed to the loss
        with every batch (`Loss.__call__`'s sample_weight): the epoch's loss is their
        weighted mean; accuracy and validation stay unweighted; a batch whose weights
        are all zero is skipped.

        checkpoint: a path; a checkpoint (`fastnn.train.checkpoint.save_checkpoint`: model,
        optimizer, scheduler, history, best-epoch tracking, every random state) is
        written there atomically at the end of every epoch. resume: a path to such a
        checkpoint: restores all of it into this trainer (whose model, optimizer and
        scheduler must be built like the saved ones) and continues that run up to its
        last epoch -- call `fit` with the same arguments as the interrupted run (X, y,
        validation_data, epochs, batch_size, shuffle; `seed` is then ignored, the saved
        generator is used) and the result is bit-identical to an uninterrupted run
        (timings aside). The returned History holds the whole run.
        """
        # non-finite values are detected and reported by the trainer itself: NumPy's
        # overflow / invalid-value RuntimeWarnings (NumPy backend) would only be noise or,
        # with warnings turned into errors, interrupt the step before that report
        kw = check_all("Trainer.fit", _FIT_CONSTRAINTS, epochs=epochs, batch_size=batch_size,
                       shuffle=shuffle)
        with _QUIET_FP():
            data = self._everywhere(self._fit_data, X, y, validation_data, kw["batch_size"],
                                    sample_weight)
            run = self._everywhere(lambda: self._begin(data, seed, resume, **kw))
            checkpoint = None if checkpoint is None else os.fspath(checkpoint)
            if self._sync is None:
                return self._loop(run, data, checkpoint)
            with self._sync.fitting("Trainer.fit", data, run):
                return self._loop(run, data, checkpoint)

    def _everywhere(self, fn, *args):
        """fn(*args); in distributed training on every rank as one step: when it fails on
        any rank, it raises on all (none is left waiting for the others)."""
        return fn(*args) if self._sync is None else self._sync.together(fn, *args)

    def _fit_data(self, X, y, validation_data, batch_size, sample_weight=None):
        """(X, y, X_val, y_val, weights) checked and converted; the validation pair
        and the weights may be None."""
        X, y = self._prepare(X, y, "fit")
        weights = None if sample_weight is None else as_weights(
            sample_weight, len(X), "Trainer.fit", dtype=self.dtype)
        out_shape = self._output_shape(X[:batch_size])
        self._check_targets(y, out_shape, "fit")
        if validation_data is None:
            return X, y, None, None, weights
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("Trainer.fit: validation_data must be (X_val, y_val)")
        Xv, yv = self._prepare(validation_data[0], validation_data[1], "fit (validation)")
        self._check_targets(yv, out_shape, "fit (validation)")
        return X, y, Xv, yv, weights

    def _begin(self, data, seed, resume, **kw):
        """The FitRun of this call (kw: its checked epochs, batch_size and shuffle): a
        new one, or the checkpoint's when resuming."""
        validation = data[2] is not None
        if self.patience is not None and not validation:
            raise ValueError("Trainer.fit: patience (early stopping) needs validation_data")
        rng = as_rng(seed, "Trainer.fit")
        if resume is not None:
            run = self._resume(os.fspath(resume), {"n": len(data[0]), "validation": validation,
                                                   "batch_size": kw["batch_size"],
                                                   "shuffle": kw["shuffle"]})
            run.epochs = kw["epochs"]      # the resumed run ends at its start + epochs
            return run
        restore_best = validation and (self.restore_best is None or self.restore_best)
        self.history = History()
        self.history.n_val = len(data[2]) if validation else None
        self._run = FitRun(self.epochs_done, n=len(data[0]), validation=validation,
                           restore_best=restore_best, rng=rng, **kw)
        return self._run

    def _resume(self, path, arguments):
        """Restore a checkpoint's full state, after checking (before changing anything)
        that it holds a run of these arguments; returns that run."""
        from .checkpoint import read_checkpoint      # loaded on use: not needed to train
        saved = read_checkpoint(path, self)
        fit = saved.run_state["fit"]
        if fit is None:
            raise ValueError("Trainer.fit: checkpoint %s holds no fit run to resume" % path)
        diff = ["%s=%r (checkpoint: %r)" % (k, v, fit[k]) for k, v in arguments.items()
                if fit[k] != v]
        if diff:
            raise ValueError("Trainer.fit: cannot resume %s bit-identically: %s"
                             % (path, ", ".join(diff)))
        saved.apply()
        return self._run

    def _loop(self, run, data, checkpoint):
        """Train the run's remaining epochs (none when a resumed run had already ended),
        then put back the best epoch's parameters when asked to."""
        history = self.history
        speaks = self._sync is None or self._sync.rank == 0     # only rank 0 prints
        progress = Progress(self.verbose if speaks else 0, self.progress, self.stream)
        if history.stop_reason not in ("early_stopping", "callback"):
            history.stop_reason, history.interrupted = None, False
            if not self._epochs(run, data, checkpoint, progress):
                return history                 # interrupted (Ctrl-C)
        if run.best_state is not None and history.best_epoch != history.epoch[-1]:
            self.model.load_state_dict(run.best_state)
            progress.write("restored the parameters of epoch %d (best %s)"
                           % (history.best_epoch, self.monitor_key))
        return history

    def _epochs(self, run, data, checkpoint, progress):
        """Epochs from the first not done to the run's last: each trained, evaluated,
        recorded, checked for stopping and checkpointed. Returns False when Ctrl-C
        ended them (gracefully, see `_interrupted`)."""
        history = self.history
        # the epoch's shuffled copy of the training data, filled in place every epoch
        order = tuple(np.empty_like(a) if a is not None else None
                      for a in (data[0], data[1], data[4])) if run.shuffle else None
        self.model.train()
        try:
            for epoch in range(self.epochs_done + 1, run.last_epoch + 1):
                row = self._run_epoch(run, data, order, epoch, progress)
                improved = self._track_best(run, row)
                progress.end_epoch(self._epoch_line(row, run.last_epoch, improved),
                                   format_row(row))
                self._diagnose(epoch, history, progress)
                self._decide_stop(run, epoch, row, progress)
                if checkpoint is not None:
                    from .checkpoint import save_checkpoint   # loaded on use
                    if self._sync is None:
                        save_checkpoint(checkpoint, self)
                    else:                                     # written by rank 0 only
                        self._sync.on_root(save_checkpoint, checkpoint, self)
                if history.stop_reason is not None:
                    break
            else:
                history.stop_reason = "completed"
        except KeyboardInterrupt:
            progress.close()
            self._interrupted(run, progress)
            if self.reraise_interrupt:
                raise
            return False
        finally:
            progress.close()
        return True

    def _run_epoch(self, run, data, order, epoch, progress):
        """Train one epoch and evaluate it; returns its History row (also appended).
        On a non-finite value the model goes back to its parameters at the epoch's
        start and NonFiniteError propagates."""
        self._epoch, self._step = epoch, 0
        t0 = time.perf_counter()
        good_state = self.model.state_dict()
        lr = self.optimizer.lr
        progress.start_epoch(epoch, run.last_epoch, run.steps)
        try:
            total_loss, total_weight, total_correct = self._train_batches(run, data, order,
                                                                          progress.bar)
            self._check_params_finite()
            if self._sync is not None:      # rank 0's running statistics on every rank
                self._sync.broadcast_buffers()
        except NonFiniteError as exc:
            progress.close()
            self.model.load_state_dict(good_state)
            self.history.stop_reason = "non_finite"
            exc.history = self.history
            raise
        row = {"epoch": epoch, "loss": total_loss / total_weight if total_weight else 0.0,
               "lr": lr,
               "accuracy": None if self._count is None else total_correct / run.n}
        if run.validation:
            ev = self._evaluate_prepared(data[2], data[3])
            row["val_loss"], row["val_accuracy"] = ev["loss"], ev.get("accuracy")
        row["time"] = time.perf_counter() - t0
        self.history.append(**row)
        self.epochs_done = epoch
        if self.scheduler is not None:
            self.scheduler.step()
        return row

    def _train_batches(self, run, data, order, bar):
        """The epoch's optimisation steps over a pass of the training data (shuffled into
        `order`'s arrays when given); returns (sum of batch losses times batch weights,
        sum of the weights (the batch sizes without row weights), correct predictions).
        A batch whose row weights are all zero holds no sample: it is skipped."""
        X, y, w = data[0], data[1], data[4]
        if order is not None:
            perm = run.rng.permutation(run.n)
            X, y = np.take(X, perm, axis=0, out=order[0]), np.take(y, perm, axis=0, out=order[1])
            if w is not None:
                w = np.take(w, perm, out=order[2])
        mon, bs = self.monitor, run.batch_size
        if mon is not None:
            mon.start_epoch()
        every = mon.interval(run.steps) if mon is not None else 0
        total_loss, total_weight, total_correct = 0.0, 0.0, 0
        for s in range(run.steps):
            self._step = s + 1
            xb, yb = X[s * bs:(s + 1) * bs], y[s * bs:(s + 1) * bs]
            wb = None if w is None else w[s * bs:(s + 1) * bs]
            weight = len(xb) if wb is None else float(wb.sum())
            if weight == 0.0:
                continue
            diag = every and s % every == 0
            if self._sync is not None:
                loss, correct = self._sync_step(xb, yb, wb, mon if diag else None)
            else:
                step = self._diag_step if diag else self._train_step
                # unweighted batches call the step as (xb, yb), its long-standing form
                loss, correct = step(xb, yb) if wb is None else step(xb, yb, wb)
            total_loss += loss * weight
            total_weight += weight
            total_correct += correct
            self.global_step += 1
            if bar is not None:
                bar.update()
        return total_loss, total_weight, total_correct

    def _track_best(self, run, row):
        """Best-epoch bookkeeping after an epoch with validation; True when it improved."""
        if not run.validation:
            return False
        score = self._score(row)
        if run.best_score is not None and not self._better(score, run.best_score):
            run.bad_epochs += 1
            return False
        run.best_score, run.bad_epochs = score, 0
        self.history.best_epoch = row["epoch"]
        if run.restore_best:
            run.best_state = self.model.state_dict()
        return True

    def _decide_stop(self, run, epoch, row, progress):
        """Callbacks, then early stopping: sets history.stop_reason when training ends."""
        stop = self._everywhere(lambda: any([cb(self, epoch, dict(row))
                                             for cb in self.callbacks]))
        if self._sync is not None:      # one rank's callback stops every rank
            stop = self._sync.any(stop)
        if self.patience is not None and run.bad_epochs >= self.patience:
            self.history.stop_reason = "early_stopping"
            progress.write("early stopping: no improvement of %s for %d epochs"
                           % (self.monitor_key, self.patience))
        elif stop:
            self.history.stop_reason = "callback"

    def _interrupted(self, run, progress):
        """Ctrl-C: keep the best parameters so far (or the current ones); record it."""
        history = self.history
        history.interrupted = True
        history.stop_reason = "interrupted"
        where = "interrupted at epoch %d, step %d" % (self._epoch, self._step)
        if run.best_state is not None:
            self.model.load_state_dict(run.best_state)
            progress.write("%s: restored the parameters of epoch %d (best %s)"
                           % (where, history.best_epoch, self.monitor_key))
        else:
            progress.write("%s: keeping the current parameters" % where)
        self.model.train()

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
        line = "epoch %*d/%d  %s  %.2fs" % (width, row["epoch"], last_epoch, format_row(row),
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
        """Yield (start, stop, output) over X in eval-size batches, in eval mode (the
        previous mode is restored when the generator closes)."""
        was_training = self.model.training
        self.model.eval()
        try:
            bs = self.eval_batch_size
            for start in range(0, len(X), bs):
                xb = X[start:start + bs]
                yield start, start + len(xb), self._forward(xb)
        finally:
            self.model.train(was_training)

    def evaluate(self, X, y, batch_size=None):
        """Loss (and accuracy for classification) on (X, y), in eval mode and in batches
        of `batch_size` (default: eval_batch_size); the previous train/eval mode is
        restored. Returns {"loss": float, "accuracy": float} (no "accuracy" for
        regression)."""
        if batch_size is not None:
            batch_size = check("Trainer.evaluate", "batch_size", batch_size, Integer(1))
        saved_bs = self.eval_batch_size
        self.eval_batch_size = batch_size or saved_bs
        try:
            X, y = self._everywhere(self._evaluation_data, X, y)
            return self._evaluate_prepared(X, y)
        finally:
            self.eval_batch_size = saved_bs

    def _evaluation_data(self, X, y):
        X, y = self._prepare(X, y, "evaluate")
        self._check_targets(y, self._output_shape(X[:self.eval_batch_size]), "evaluate")
        return X, y

    def _evaluate_prepared(self, X, y):
        """Loss (and accuracy) of prepared data: the batches' losses weighted by their
        total weight (`Loss.row_weights`: class weights; rows without), so the result
        is the mean over all of X whatever the batches; in distributed training each
        rank evaluates its part of the rows and the sums are reduced."""
        if self._sync is not None:
            part = self._sync.rows(len(X))
            X, y = X[part], y[part]
        total, weight, correct, n = 0.0, 0.0, 0, len(X)
        with _QUIET_FP():
            for a, b, out in self._outputs(X):
                loss, hits = self._loss_and_count(out, y[a:b])
                rows = self.loss.row_weights(y[a:b])
                w = b - a if rows is None else float(rows.sum())
                total += loss * w
                weight += w
                correct += hits
        if self._sync is not None:
            total, weight, correct, n = self._sync.sum(total, weight, correct, n)
        res = {"loss": total / weight}
        if self._count is not None:
            res["accuracy"] = correct / n
        return res

    def decision_function(self, X):
        """Raw model outputs (logits / scores / regression values) for X, computed in eval
        mode and in batches; shape (N, ...)."""
        X, _ = self._prepare(X, None, "predict")
        result = None
        with _QUIET_FP():
            for a, b, out in self._outputs(X):
                if result is None:
                    result = np.empty((len(X),) + out.shape[1:], out.dtype)
                result[a:b] = out
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
        """Probabilities as the loss defines them (`Loss.probabilities`): softmax of the
        outputs for SoftmaxCrossEntropy (N, C), sigmoid for BCEWithLogits (shaped like
        the output); ValueError for losses whose outputs are not probabilities."""
        out = self.decision_function(X)
        try:
            return self.loss.probabilities(out)
        except ValueError as exc:
            raise ValueError("Trainer.predict_proba: %s" % exc) from None
