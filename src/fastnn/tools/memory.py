"""Memory of training: a deterministic NumPy allocation counter and a peak-memory report.

`track_allocations()` installs a counting NumPy data-memory handler (NEP 49, compiled
in `fastnn.kernels._memtrack`) for the current thread / context and yields an
`AllocationStats`. It counts array *data* allocations, exactly, with no sampling or
timing: a view, a reshape or a Python float allocates nothing; ``np.empty(1000)`` is one
allocation of 8000 bytes; a ufunc with a Python scalar operand allocates a small 0-d
array for it.

>>> import numpy as np
>>> from fastnn.tools.memory import track_allocations
>>> with track_allocations() as stats:                        # doctest: +SKIP
...     a = np.empty(1000)
...     v = a[10:]                                            # a view: no allocation
>>> stats.count, stats.nbytes, stats.peak                     # doctest: +SKIP
(1, 8000, 8000)

`step_memory(build, x, y)` builds a model, loss and optimizer inside the counter, runs
warm-up training steps, then one more (steady-state) step, and compares the peak of live
NumPy bytes with what the step analytically needs (`step_need`: parameters, their
gradients, optimizer state, the activations kept for backward, the activation
gradients). `memory_rows()` gives those figures for the benchmark's reference networks.

Scope: the counter sees NumPy array data only -- not the array objects themselves
(Python's allocator), nor the small scratch the compiled kernels `malloc` for their
reductions, nor BLAS's internal buffers.
"""
import gc
import math
import threading

import numpy as np

from ..core.validation import FLOAT_DTYPES, InstanceOf, Integer, check
from ..layers import Module
from ..optim import Optimizer

try:
    from ..kernels import _memtrack
    _MEMTRACK_ERROR = None
except ImportError as exc:          # NumPy-only install: no compiled extension
    _memtrack = None
    _MEMTRACK_ERROR = str(exc)

__all__ = ["available", "track_allocations", "AllocationStats", "step_need", "step_memory",
           "memory_rows", "memory_table"]

_lock = threading.Lock()
_open = []          # AllocationStats currently inside their `with`, in entry order


def available():
    """True when the allocation counter is usable (fastnn's compiled build)."""
    return _memtrack is not None


def _require(fn):
    if _memtrack is None:
        raise RuntimeError(
            "%s: the allocation counter needs fastnn's compiled build (the extension "
            "module fastnn.kernels._memtrack could not be imported: %s). This install has "
            "the NumPy backend only; reinstall fastnn with a C compiler available."
            % (fn, _MEMTRACK_ERROR))


class AllocationStats:
    """NumPy data allocations while a `track_allocations()` block runs.

    Attributes (ints; read inside the block they give the figures so far, after it the
    final ones):

    * ``count``: allocations (malloc and calloc, and reallocs that grow a buffer);
    * ``nbytes``: bytes allocated (a growing realloc adds its growth);
    * ``frees``: buffers freed (including arrays allocated before the block, when they
      were allocated under a counter too);
    * ``live``: bytes allocated in the block and not freed, minus counted frees of
      earlier buffers;
    * ``peak``: the highest value ``live`` reached (>= 0).

    What is counted: arrays whose data is allocated by the thread (more exactly: the
    contextvars context) that entered the block, in any code run there -- fastnn's,
    NumPy's, yours. The counters are process-wide, so two threads counting at the same
    time see each other's allocations. Blocks nest: an inner block's figures are also
    in the outer one's.
    """

    def __init__(self):
        self._state = "new"
        self._prev = None           # the handler replaced on entry
        self._base = None           # counters at entry
        self._saved_peak = 0        # the process peak before this block reset it
        self._final = None

    # ---------------------------------------------------------------- context manager
    def __enter__(self):
        if self._state != "new":
            raise RuntimeError("track_allocations: this counter was already used; call "
                               "track_allocations() again for a new block")
        self._prev = _memtrack.set_handler(_memtrack.handler())
        with _lock:
            self._saved_peak = _memtrack.reset_peak()
            self._base = _memtrack.counters()
            _open.append(self)
        self._state = "open"
        return self

    def __exit__(self, *exc):
        _memtrack.set_handler(self._prev)
        self._prev = None
        with _lock:
            self._final = self._figures()
            _open.remove(self)
            _memtrack.restore_peak(self._saved_peak)   # enclosing blocks keep their peak
        self._state = "closed"
        return False

    # ---------------------------------------------------------------------- figures
    def _figures(self):
        if self._final is not None:
            return self._final
        if self._base is None:
            raise RuntimeError("AllocationStats: use it as `with track_allocations() as "
                               "stats:`; there are no figures before the block starts")
        count, nbytes, frees, live, peak = _memtrack.counters()
        # blocks opened inside this one reset the process peak; they saved the old value
        later = _open[_open.index(self) + 1:] if self in _open else []
        peak = max([peak] + [s._saved_peak for s in later])
        c0, b0, f0, live0, _ = self._base
        return {"count": count - c0, "nbytes": nbytes - b0, "frees": frees - f0,
                "live": live - live0, "peak": max(peak - live0, 0)}

    def _get(self, key):
        if self._final is None:
            with _lock:
                return self._figures()[key]
        return self._final[key]

    count = property(lambda self: self._get("count"), doc="allocations")
    nbytes = property(lambda self: self._get("nbytes"), doc="bytes allocated")
    frees = property(lambda self: self._get("frees"), doc="buffers freed")
    live = property(lambda self: self._get("live"), doc="net bytes still held")
    peak = property(lambda self: self._get("peak"), doc="peak of live bytes above entry")

    def as_dict(self):
        """{"count", "nbytes", "frees", "live", "peak"}."""
        with _lock:
            return dict(self._figures())

    def __repr__(self):
        if self._state == "new":
            return "AllocationStats(not started)"
        return "AllocationStats(%s)" % ", ".join("%s=%d" % kv for kv in self.as_dict().items())


def track_allocations():
    """Context manager counting NumPy array-data allocations in the current thread
    (context): ``with track_allocations() as stats: ...``, then ``stats.count``,
    ``stats.nbytes``, ``stats.peak`` (see `AllocationStats`).

    Deterministic (the same code allocates the same arrays), so a test can assert on it.
    Arrays allocated inside remain valid after the block and are freed normally. Frees
    of arrays counted by an earlier block (e.g. by a garbage collection that happens to
    run inside) lower ``live`` and ``peak``: call ``gc.collect()`` first, or disable the
    collector, when those must be exact.
    Raises RuntimeError on a NumPy-only install (the counter is compiled code).
    """
    _require("fastnn.tools.memory.track_allocations")
    return AllocationStats()


# ------------------------------------------------------------------- analytic need
def _layer_needs(model, shape, itemsize, fn):
    """[(kept, grads)] per leaf layer of `model` on an input of `shape`, and the output
    shape, from the facts each layer declares (`train_memory`, `output_shape`)."""
    needs = []
    for k, layer in enumerate(model.flat_layers()):
        try:
            needs.append(layer.train_memory(shape, itemsize, k == 0))
            shape = layer.output_shape(shape)
        except (TypeError, ValueError) as exc:
            raise type(exc)("%s: %s" % (fn, exc)) from None
    return needs, shape


def _check_input_shape(input_shape, fn):
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError("%s: input_shape must be a tuple (N, features...), got %r"
                        % (fn, input_shape))
    if len(input_shape) < 2:
        raise ValueError("%s: input_shape must be (N, features...), got %r"
                         % (fn, input_shape))
    return tuple(check(fn, "input_shape[%d]" % i, d, Integer(1))
                 for i, d in enumerate(input_shape))


def step_need(model, optimizer, input_shape):
    """What one training step needs, analytically, in bytes.

    model: a fastnn Module whose layers declare their facts (`Module.train_memory`,
    `Module.output_shape`: every built-in layer does, and so may a user's); optimizer:
    a fastnn.optim optimizer; input_shape: the batch's shape, e.g. (N, features).
    Returns a dict:

    * ``params``, ``grads``: the parameters and their gradients;
    * ``buffers``: non-learnable state (BatchNorm running statistics);
    * ``optimizer_state``: `optimizer.state_nbytes()`, e.g. 2 x params for Adam, 1 x for
      SGD with momentum;
    * ``activations``: what the forward keeps for backward, in training mode: each
      layer's output, plus a fused Dense's pre-activation, Dropout's mask, BatchNorm's
      batch mean and inverse std (the input batch itself is the caller's, not counted);
    * ``activation_grads``: one gradient per activation the backward differentiates
      through: the loss gradient (shaped like the output), each layer's input gradient
      except the network input's, and a fused Dense's pre-activation gradient;
    * ``activation_grads_min``: the least any backward needs for those, the two largest
      of them alive at once (a lower bound; fastnn keeps them all, one per layer, so a
      warm step allocates nothing);
    * ``need``: params + grads + buffers + optimizer_state + activations +
      activation_grads;
    * ``need_min``: the same with ``activation_grads_min`` (the tightest accounting);
    * ``output_shape``.
    """
    fn = "step_need"
    check(fn, "model", model, InstanceOf(Module, "a fastnn Module"))
    check(fn, "optimizer", optimizer, InstanceOf(Optimizer, "a fastnn.optim optimizer"))
    shape = _check_input_shape(input_shape, fn)
    params = model.parameters()
    itemsize = (params[0].dtype if params else np.dtype(model.dtype or np.float32)).itemsize
    needs, shape = _layer_needs(model, shape, itemsize, fn)
    grads = [g for _, g in needs] + [math.prod(shape) * itemsize]    # + the loss gradient
    pbytes = sum(p.data.nbytes for p in params)
    res = {"params": pbytes, "grads": pbytes,
           "buffers": sum(b.nbytes for _, b in model.named_buffers()),
           "optimizer_state": optimizer.state_nbytes(),
           "activations": sum(a for a, _ in needs), "activation_grads": sum(grads),
           "activation_grads_min": sum(sorted(grads)[-2:]), "output_shape": shape}
    res["need"] = sum(res[k] for k in ("params", "grads", "buffers", "optimizer_state",
                                       "activations", "activation_grads"))
    res["need_min"] = res["need"] - res["activation_grads"] + res["activation_grads_min"]
    return res


# ---------------------------------------------------------------------- measurement
def _step_batch(x, y, fn):
    """x as a C-contiguous float batch (N, ...) and y as int64 labels or float targets
    of x's dtype, checked."""
    x = np.asarray(x)
    if x.dtype not in FLOAT_DTYPES or x.ndim < 2 or x.shape[0] < 1:
        raise TypeError("%s: x must be a float32 or float64 batch of shape (N, ...), got %s "
                        "of shape %s" % (fn, x.dtype, x.shape))
    y = np.asarray(y)
    if len(y) != len(x):
        raise ValueError("%s: x and y must have the same number of samples, got %d and %d"
                         % (fn, len(x), len(y)))
    if y.dtype.kind in "iu":
        y = np.ascontiguousarray(y, dtype=np.int64)
    elif y.dtype.kind in "fb":
        y = np.ascontiguousarray(y, dtype=x.dtype)
    else:
        raise TypeError("%s: y must be integer labels or float targets, got %s" % (fn, y.dtype))
    return np.ascontiguousarray(x), y


def _build_trainer(build, x, fn):
    """A Trainer of what build() returns, checked against x's dtype."""
    from ..train.trainer import Trainer
    built = build()
    if not isinstance(built, (tuple, list)) or len(built) != 3:
        raise TypeError("%s: build() must return (model, loss, optimizer), got %r"
                        % (fn, built))
    model, loss, optimizer = built
    trainer = Trainer(model, loss, optimizer, verbose=0)
    if trainer.dtype != x.dtype:
        raise TypeError("%s: x is %s but the model is %s; pass x in the model's "
                        "dtype" % (fn, x.dtype, trainer.dtype))
    model.train()
    return trainer


def _measure_step(build, x, y, warmup, fn):
    """(trainer, live bytes before the measured step, setup peak, the step's
    AllocationStats), all counted from before build(); the garbage collector paused."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        with track_allocations() as total:
            trainer = _build_trainer(build, x, fn)
            step = trainer.stepper(x, y)
            for _ in range(warmup):
                step()
            setup_peak, before = total.peak, total.live
            with track_allocations() as counted:
                step()
    finally:
        if was_enabled:
            gc.enable()
    return trainer, before, setup_peak, counted


def step_memory(build, x, y, warmup=2, backend=None):
    """Measured peak memory of a steady-state training step against `step_need`.

    build: a callable with no arguments returning ``(model, loss, optimizer)`` (as for
    `fastnn.train.search.random_search`), called inside the counter so that everything fastnn
    allocates for the model counts: parameters, the optimizer's flat buffers and state,
    every layer's workspace. x: one batch (N, features...) in the model's dtype; y: its
    targets (integer labels or float targets). The batch itself is converted before
    counting starts and is not counted. A `Trainer` runs `warmup` steps (>= 1: the
    first allocates the workspaces and optimizer state), then one more step whose peak
    of live bytes, counted from zero before `build`, is the measured figure. backend:
    None (the active one), "cython" or "numpy". Python's garbage collector is paused
    while measuring, so no unrelated collection frees counted arrays in between.

    Returns the `step_need` dict plus: ``peak`` (bytes), ``ratio`` (peak / need),
    ``ratio_min`` (peak / need_min),
    ``excess`` (peak - need), ``setup_peak`` (peak during build and warm-up),
    ``step_allocations`` / ``step_bytes`` (allocations of the measured step: 0 when the
    step reuses all its buffers).
    """
    fn = "fastnn.tools.memory.step_memory"
    _require(fn)
    if not callable(build):
        raise TypeError("%s: build must be a callable returning (model, loss, optimizer), "
                        "got %r" % (fn, build))
    warmup = check(fn, "warmup", warmup, Integer(1))
    x, y = _step_batch(x, y, fn)
    from ..core.backend import use_backend, get_backend
    with use_backend(backend or get_backend()):
        trainer, before, setup_peak, step = _measure_step(build, x, y, warmup, fn)
    res = step_need(trainer.model, trainer.optimizer, x.shape)
    res["peak"] = before + step.peak
    res["ratio"] = res["peak"] / res["need"]
    res["ratio_min"] = res["peak"] / res["need_min"]
    res["excess"] = res["peak"] - res["need"]
    res["setup_peak"] = setup_peak
    res["step_allocations"] = step.count
    res["step_bytes"] = step.nbytes
    return res


def _reference_build(widths, lr=1e-3):
    from .. import optim
    from .reference_nets import fastnn_model
    from ..losses import SoftmaxCrossEntropy

    def build():
        model = fastnn_model(widths)
        return model, SoftmaxCrossEntropy(), optim.Adam(model.parameters(), lr=lr)
    return build


def memory_rows(cases=None, backend="cython"):
    """`step_memory` of the benchmark's reference training steps (float32, Dense ->
    BatchNorm1d -> ReLU hidden layers, softmax cross-entropy, Adam; the networks of
    `fastnn.tools.reference_nets`): one dict per case with ``case``, ``widths``,
    ``batch`` and the figures of `step_memory`. cases: [(name, widths, batch)]
    (default: `fastnn.tools.reference_nets.CASES`, S / M / L / XL, followed by the
    convolutional steps of `cnn_memory_rows`). RuntimeError on a NumPy-only install."""
    _require("fastnn.tools.memory.memory_rows")
    from .reference_nets import CASES, data
    rows = []
    for name, widths, batch in (CASES if cases is None else cases):
        x, y = data(widths, batch)
        res = step_memory(_reference_build(widths), x, y, backend=backend)
        row = {"case": name, "widths": list(widths), "batch": batch}
        row.update({k: v for k, v in res.items() if k != "output_shape"})
        rows.append(row)
    return rows + (cnn_memory_rows(backend=backend) if cases is None else [])


def cnn_memory_rows(cases=None, backend="cython"):
    """`step_memory` of the convolutional benchmark steps (`fastnn.tools.bench_cnn.CASES`:
    "lenet", "resblock"; float32, softmax cross-entropy, Adam), rows as `memory_rows`
    (``case``, ``input`` (the batch's shape), ``batch`` and the figures)."""
    _require("fastnn.tools.memory.cnn_memory_rows")
    from . import bench_cnn
    rows = []
    for name in (bench_cnn.CASES if cases is None else cases):
        x, y = bench_cnn.data(name)
        res = step_memory(bench_cnn.build(name), x, y, backend=backend)
        row = {"case": name, "input": list(x.shape), "batch": len(x)}
        row.update({k: v for k, v in res.items() if k != "output_shape"})
        rows.append(row)
    return rows


def _mb(b):
    return "%.2f MB" % (b / 1e6) if b >= 1e5 else "%.1f kB" % (b / 1e3)


def memory_table(rows):
    """Markdown table of `memory_rows()` output: what a step needs, by part, against the
    measured peak."""
    lines = ["| case | params, grads, buffers | Adam state | activations + grads | need "
             "| peak | peak / need | peak / need_min | step allocations |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %s | %s | %s | %s | %.3f | %.3f | %d |" % (
            r["case"], _mb(r["params"] + r["grads"] + r["buffers"]),
            _mb(r["optimizer_state"]), _mb(r["activations"] + r["activation_grads"]),
            _mb(r["need"]), _mb(r["peak"]), r["ratio"], r["ratio_min"],
            r["step_allocations"]))
    return "\n".join(lines)
