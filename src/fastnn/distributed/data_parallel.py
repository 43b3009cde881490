"""`DataParallel`: what a `Trainer(..., distributed=True)` does differently, over MPI.

Every rank holds the whole training set and the same model. Before the first step the
ranks check that they were given the same data and arguments, and take rank 0's
parameters, buffers and shuffling generator. Each global batch (the same shuffle on
every rank) is split into consecutive, nearly equal parts, one per rank; a rank's loss
gradient is weighted by its share of the batch's weight (of its rows, or of the row and
class weights the loss takes), so one Allreduce (a sum) over the
optimizer's flat gradient buffer leaves every rank with the gradient of the global
batch's mean loss, and the identical update keeps the ranks identical. A model large
enough is cut into buckets whose Allreduces run while the earlier layers' backward
still computes (`fastnn.distributed.buckets`). One small Allreduce per step also sums
the batch's loss and correct predictions (and failures), so a non-finite loss or an
error on any rank stops every rank at the same step.
"""
import contextlib
import zlib

import numpy as np

from ..core.workspace import Workspace
from .buckets import BUCKET_BYTES, Buckets
from .mpi import raise_failures, several_ranks, together
from .sync_batchnorm import BatchStats

__all__ = ["DataParallel", "data_parallel"]

#: rows of the data (spread over it) whose bytes the ranks compare before training
FINGERPRINT_ROWS = 64


def data_parallel(model, loss, optimizer, sync_batchnorm=False, fn="Trainer"):
    """The `DataParallel` of a distributed trainer; None, with a warning, when this
    process is the only rank (started without mpiexec, or with -n 1): training then
    runs as in one process. Collective: every rank must call it."""
    comm = several_ranks(fn, "training on one rank", stacklevel=4)
    if comm is None:
        return None
    return DataParallel(comm, model, loss, optimizer, sync_batchnorm)


def _tiled(arrays):
    """The 1-D array that `arrays` tile back to back, in order (e.g. an optimizer's flat
    gradient buffer and its per-parameter views), or None."""
    base = arrays[0].base
    if base is None or base.ndim != 1 or not base.flags.c_contiguous:
        return None
    address = base.ctypes.data
    for a in arrays:
        if a.base is not base or a.dtype != base.dtype or not a.flags.c_contiguous \
                or a.ctypes.data != address:
            return None
        address += a.nbytes
    return base if address == base.ctypes.data + base.nbytes else None


def _fingerprint(*arrays):
    """A CRC of FINGERPRINT_ROWS rows spread over each array (None entries skipped)."""
    crc = 0
    for a in arrays:
        if a is not None:
            rows = np.linspace(0, len(a) - 1, min(len(a), FINGERPRINT_ROWS)).astype(np.intp)
            crc = zlib.crc32(np.ascontiguousarray(a[rows]).tobytes(), crc)
    return crc


def _layout(a):
    return None if a is None else "%s %s" % (a.dtype, a.shape)


class DataParallel:
    """Data-parallel training of `model` with `optimizer` over the communicator `comm`
    (see the module docstring). `rank`, `size`: this process's rank and the number of
    ranks. sync_batchnorm: during a fit, BatchNorm layers normalise training batches
    with the global batch's statistics (`fastnn.distributed.sync_batchnorm`). overlap:
    reduce the gradients in buckets of at least `bucket_bytes` while the backward runs,
    when the model allows (`fastnn.distributed.buckets`); read at the start of each
    fit."""

    overlap = True
    bucket_bytes = BUCKET_BYTES

    def __init__(self, comm, model, loss, optimizer, sync_batchnorm=False):
        from mpi4py import MPI
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self._in_place, self._lor = MPI.IN_PLACE, MPI.LOR
        self._totals = np.zeros(3)    # a step's loss, correct predictions, failures
        self._ws = Workspace()
        self._grads = self._buckets = None
        self._stats = BatchStats(comm) if sync_batchnorm else None

    def __repr__(self):
        return "DataParallel(rank %d of %d)" % (self.rank, self.size)

    # ---------------------------------------------------------------- agreement
    def together(self, fn, *args):
        """fn(*args) on every rank; if it fails on any, every rank raises (see
        `fastnn.distributed.mpi.together`)."""
        return together(self.comm, fn, *args)

    def on_root(self, fn, *args):
        """fn(*args) on rank 0 only (writing files); every rank raises if it fails."""
        return together(self.comm, fn, *args, root_only=True)

    def any(self, flag):
        """True on every rank when `flag` is true on any."""
        return bool(self.comm.allreduce(bool(flag), op=self._lor))

    def sum(self, *values):
        """The values summed over the ranks (one Allreduce), as floats."""
        buf = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self._in_place, buf)
        return tuple(buf.tolist())

    # ---------------------------------------------------------------- fit start
    @contextlib.contextmanager
    def fitting(self, fn, data, run):
        """A fit: `start_fit`, then (sync_batchnorm) the model's BatchNorm layers
        synchronised until it ends."""
        self.start_fit(fn, data, run)
        layers = self._synchronised_layers()
        if layers:
            last = run.n - (run.steps - 1) * run.batch_size      # the smallest batch
            if last < self.size:
                raise ValueError("%s (distributed): sync_batchnorm needs every rank to get "
                                 "rows of every batch, but the last batch (%d of %d rows "
                                 "in batches of %d) has fewer rows than the %d ranks; "
                                 "choose another batch_size" % (fn, last, run.n,
                                                                run.batch_size, self.size))
        for m in layers:
            m.batch_stats = self._stats
        try:
            yield
        finally:
            for m in layers:
                m.batch_stats = None

    def _synchronised_layers(self):
        """The layers that take `batch_stats` (BatchNorm), when synchronised."""
        if self._stats is None:
            return []
        return [m for m in self.model.modules() if hasattr(m, "batch_stats")]

    def start_fit(self, fn, data, run):
        """Before a fit's first step: ValueError on every rank unless all were given the
        same data, arguments, model and optimizer; then every rank takes rank 0's
        parameters, buffers and shuffling generator (`run.rng`)."""
        self._check_same(fn, self._facts(data, run))
        self.broadcast_state()
        rng = run.rng.bit_generator
        rng.state = self.comm.bcast(rng.state if self.rank == 0 else None)
        params = self.optimizer.params
        flat = _tiled([p.grad for p in params])
        self._grads = [flat] if flat is not None else [p.grad for p in params]
        self._buckets = Buckets.of(self.model, flat, self.comm, self.bucket_bytes) \
            if self.overlap else None

    def _facts(self, data, run):
        """What must be equal on every rank: name -> a comparable value."""
        X, y, Xv, yv, w = data
        fit = {k: v for k, v in run.state().items() if k not in ("rng", "best_state")}
        state = [(k, _layout(v)) for k, v in self.model.state_dict().items()]
        return {"X": _layout(X), "y": _layout(y), "X_val": _layout(Xv), "y_val": _layout(yv),
                "sample_weight": _layout(w),
                "training data values (sampled rows)": _fingerprint(X, y, w),
                "validation data values (sampled rows)": _fingerprint(Xv, yv),
                "fit arguments": fit, "model parameters and buffers": state,
                "optimizer": repr(self.optimizer), "loss": repr(self.loss),
                "shuffling generator": type(run.rng.bit_generator).__name__}

    def _check_same(self, fn, facts):
        everyone = self.comm.allgather(facts)
        for name in facts:
            for r, theirs in enumerate(everyone):
                if theirs[name] != everyone[0][name]:
                    raise ValueError("%s (distributed): every rank must be given the same %s;"
                                     " rank 0 has %s, rank %d has %s"
                                     % (fn, name, everyone[0][name], r, theirs[name]))

    def broadcast_state(self):
        """Rank 0's parameters and buffers to every rank."""
        params = self.model.parameters()
        flat = _tiled([p.data for p in params]) if params else None
        for a in [flat] if flat is not None else [p.data for p in params]:
            self.comm.Bcast(a, root=0)
        self.broadcast_buffers()

    def broadcast_buffers(self):
        """Rank 0's buffers (BatchNorm's running statistics) to every rank: once an
        epoch, so that every rank evaluates, saves and ends with the same model."""
        for _, b in self.model.named_buffers():
            self.comm.Bcast(b, root=0)

    # ------------------------------------------------------------------- a step
    def rows(self, n):
        """This rank's part of n rows: a slice of consecutive rows (parts differ by at
        most one row; a rank's part is empty when n < size)."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def part(self, yb, wb):
        """(this rank's rows of the global batch as a slice, the row weights to give the
        loss for them (None without row weights), their share of the batch's total
        weight): the factor that makes this rank's mean loss its part of the batch's
        mean. The weights are the loss's (`Loss.row_weights`: row weights wb times class
        weights); a part whose rows weigh nothing is computed with unit row weights and
        counts nothing (share 0), so every rank runs the same layers (when its class
        weights alone make it weigh nothing, the loss refuses it, on every rank)."""
        part = self.rows(len(yb))
        weights = self.loss.row_weights(yb, wb)
        if weights is None:
            return part, None, (part.stop - part.start) / len(yb)
        mine = float(weights[part].sum())
        w = None if wb is None else wb[part]
        if mine == 0 and w is not None:
            w = np.ones_like(w)
        return part, w, mine / float(weights.sum())

    def batch_totals(self, loss, correct, share, failure=None):
        """The global batch's (mean loss, correct predictions), from this rank's mean
        loss, its `share` (see `part`) and its correct predictions. failure: the
        exception this rank's forward raised, or None; when any rank has one, every
        rank raises (see `fastnn.distributed.mpi.raise_failures`)."""
        t = self._totals
        t[0] = loss * share if share else 0.0
        t[1] = correct
        t[2] = failure is not None
        self.comm.Allreduce(self._in_place, t)
        if t[2]:
            raise_failures(self.comm, failure)
        return float(t[0]), float(t[1])

    def scaled(self, dout, share):
        """dout * share, in a buffer of its own: the gradient of this rank's part of the
        global batch's mean loss."""
        buf = self._ws.get("dout", dout.shape, dout.dtype)
        if share:
            np.multiply(dout, share, out=buf)
        else:
            buf.fill(0)
        return buf

    def forward(self, x):
        """This rank's training forward (through the buckets' segments when bucketed)."""
        return self.model._forward(x) if self._buckets is None else self._buckets.forward(x)

    def backward(self, dout, backward=None):
        """This rank's backward of `dout` (None: it had no rows of the batch, its
        gradients are zeros), by `backward` when given (the diagnostics monitor's), and
        the ranks' gradients summed in place: bucket by bucket while the backward runs
        when bucketed, else in one Allreduce over the optimizer's flat gradient buffer
        (one per parameter when there is none) after it."""
        buckets = self._buckets if backward is None else None
        if buckets is not None:
            if dout is not None:
                buckets.backward(dout)
            buckets.reduce(zeros=dout is None)
            return
        if dout is not None:
            (backward or self._model_backward)(dout)
        for g in self._grads:
            if dout is None:
                g.fill(0)
            self.comm.Allreduce(self._in_place, g)

    def _model_backward(self, dout):
        self.model._backward(dout, False)
