"""One optimisation step of an estimator's network, with scikit-learn's loss: the
batch's (weighted) mean loss plus ``alpha / 2 * ||W||^2 / sum(batch weights)`` over the
Dense weights (not the intercepts, not batch-norm parameters); and the batches of an
epoch, gathered from dense or sparse X into reused buffers.
"""
import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import get_blas_funcs
from scipy.special import xlogy

from ..core.validation import as_weights
from ..losses import MSE, BCEWithLogits, Loss, SoftmaxCrossEntropy
from .network import dense_layers


def output_loss(out_activation, n_outputs):
    """(fastnn loss, loss factor, gradient factor) giving scikit-learn's loss for an
    output activation: softmax -> cross-entropy (the mean over rows, as fastnn's);
    logistic -> binary log-loss summed over the outputs (fastnn's BCE averages them);
    identity -> half the squared error, whose gradient scikit-learn takes summed over
    the outputs while it reports the mean; exp -> half the Poisson deviance summed
    over the outputs."""
    if out_activation == "softmax":
        return SoftmaxCrossEntropy(), 1.0, 1.0
    if out_activation == "logistic":
        return BCEWithLogits(), float(n_outputs), float(n_outputs)
    if out_activation == "exp":
        return PoissonDeviance(), float(n_outputs), float(n_outputs)
    return MSE(), 0.5, 0.5 * n_outputs


class PoissonDeviance(Loss):
    """Half the Poisson deviance of counts y >= 0 under the log link, the network's
    outputs z being log-means (scikit-learn's MLPRegressor(loss="poisson")): per element
    y log(y / exp(z)) - y + exp(z), whose gradient is exp(z) - y; a row's loss is the
    mean over its elements, the batch's the (weighted) mean over rows. NumPy, float64
    inside."""

    def _compute(self, pred, target, sample_weight=None):
        z = pred.astype(np.float64).reshape(len(pred), -1)
        y = np.asarray(target, dtype=np.float64).reshape(z.shape)
        mu = np.exp(z)
        rows = (xlogy(y, y) - y * z - y + mu).mean(axis=1)
        if sample_weight is None:
            r = np.full(len(z), 1.0 / len(z))
        else:
            r = as_weights(sample_weight, len(z), "PoissonDeviance")
            r = r / r.sum()
        grad = (mu - y) * (r[:, None] / z.shape[1])
        return float(rows @ r), grad.reshape(pred.shape).astype(pred.dtype)


class Stepper:
    """`step(xb, yb, swb)`: forward, loss, backward, L2 term and the solver's update on
    one batch; returns the batch's loss as scikit-learn reports it. Uses the network's
    no-copy internal path (the parameters must stay where the solver put them)."""

    def __init__(self, model, solver, out_activation, n_outputs, alpha):
        self.forward, self.backward = model._forward, model._backward
        self.solver = solver
        self.loss, self.loss_factor, self.grad_factor = output_loss(out_activation,
                                                                    n_outputs)
        self.alpha = float(alpha)
        # (weight, its gradient, BLAS axpy of their dtype) of every Dense, as flat views
        # of the (C-contiguous) arrays where the solver placed them
        self.weights = [(_flat_view(d.weight.data), _flat_view(d.weight.grad),
                         get_blas_funcs("axpy", (d.weight.data,)))
                        for d in dense_layers(model)]

    def step(self, xb, yb, swb):
        """One update; a batch whose weights are all zero holds no sample: it is
        skipped (no update) and counts as a loss of 0."""
        total = len(xb) if swb is None else float(swb.sum())
        if total == 0.0:
            return 0.0
        out = self.forward(xb)
        # one kernel call when it applies (the weights were validated once, for the fit)
        fused = self.loss.loss_and_hits(out, yb, swb)
        if fused is not None:
            data_loss = fused[0]
        else:
            data_loss = self.loss(out, yb) if swb is None else self.loss(out, yb,
                                                                         sample_weight=swb)
        grad = self.loss._backward()
        if self.grad_factor != 1.0:
            grad *= self.grad_factor
        self.backward(grad, False)
        penalty = self._penalty(total) if self.alpha else 0.0
        self.solver.step()
        return data_loss * self.loss_factor + penalty

    def _penalty(self, total):
        """Adds alpha * W / total to each weight gradient; returns alpha / 2 *
        sum ||W||^2 / total (both with the weights before the update)."""
        scale = self.alpha / total
        squares = 0.0
        for w, g, axpy in self.weights:
            squares += float(w @ w)
            axpy(w, g, a=scale)            # g += scale * w, in place
        return 0.5 * scale * squares


def _flat_view(a):
    """A 1-D view of array `a` (never a copy: the penalty writes through it)."""
    flat = a.reshape(-1)
    if not np.may_share_memory(flat, a):
        raise RuntimeError("fastnn.sklearn: a Dense parameter is not contiguous")
    return flat


class Batches:
    """An epoch's mini-batches of (X, targets, weights) in a given order: dense rows
    are gathered into buffers reused for every batch; sparse rows are densified one
    batch at a time."""

    def __init__(self, X, targets, weights, batch_size, dtype):
        self.X, self.targets, self.weights = X, targets, weights
        self.batch_size, self.dtype = batch_size, dtype
        self.sparse = sp.issparse(X)
        n = min(batch_size, X.shape[0])
        self._xbuf = None if self.sparse else np.empty((n,) + X.shape[1:], X.dtype)
        self._ybuf = np.empty((n,) + targets.shape[1:], targets.dtype)
        self._wbuf = None if weights is None else np.empty(n, weights.dtype)

    def __len__(self):
        return self.X.shape[0]

    def epoch(self, order):
        """Yield (xb, yb, swb or None) over the rows in `order` (None: as stored)."""
        n, bs = len(self), self.batch_size
        for start in range(0, n, bs):
            stop = min(start + bs, n)
            if order is None:
                yield self._slice(start, stop)
            else:
                yield self._gather(order[start:stop])

    def _slice(self, start, stop):
        xb = self.X[start:stop]
        if self.sparse:
            xb = np.ascontiguousarray(xb.toarray(), dtype=self.dtype)
        wb = None if self.weights is None else self.weights[start:stop]
        return xb, self.targets[start:stop], wb

    def _gather(self, idx):
        # idx is a slice of a permutation of the rows: mode="clip" never clips, and
        # spares take(out=...) the temporary copy that its default mode ("raise") makes
        k = len(idx)
        if self.sparse:
            xb = np.ascontiguousarray(self.X[idx].toarray(), dtype=self.dtype)
        else:
            xb = self.X.take(idx, axis=0, out=self._xbuf[:k], mode="clip")
        yb = self.targets.take(idx, axis=0, out=self._ybuf[:k], mode="clip")
        wb = (None if self.weights is None
              else self.weights.take(idx, out=self._wbuf[:k], mode="clip"))
        return xb, yb, wb
