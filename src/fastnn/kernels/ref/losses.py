"""Losses, each returning the batch-mean loss (float) and writing its gradient, in NumPy.

softmax_cross_entropy: L = mean_i(logsumexp(z_i) - z_i[y_i]);  dz = (softmax(z) - onehot(y)) / N
multiclass_hinge (cs231n SVM): L = mean_i sum_{j != y_i} max(0, s_ij - s_iy + margin)
bce_with_logits:  L = mean(max(x, 0) - x * t + log1p(exp(-|x|)));  dx = (sigmoid(x) - t) / numel
mse:              L = mean((p - t)^2);                               dp = 2 (p - t) / numel

Weights (torch's semantics): row weights sample_weight (N,) and, for the two losses of
labels, class weights class_weight (C,), both of the input's dtype (None: ones). Row i
weighs r_i = sample_weight[i] * class_weight[y_i]; the mean becomes
sum_i r_i l_i / sum_i r_i (l_i: row i's loss; for bce / mse the mean over the row's
elements) and row i's gradient is scaled by r_i / sum_i r_i instead of 1/N.
ZeroDivisionError when the weights sum to zero. Without weights the unweighted formulas
above run unchanged.
"""
import numpy as np

from ..activation_table import sigmoid

__all__ = ["labels_in_range", "softmax_cross_entropy", "multiclass_hinge", "bce_with_logits", "mse"]


def labels_in_range(labels, c):
    """Whether every label (int64, (N,)) is in [0, c) (the check fastnn.ops makes before
    a kernel uses labels as indices)."""
    return labels.size == 0 or (int(labels.min()) >= 0 and int(labels.max()) < c)


def _row_weights(n, labels, sample_weight, class_weight):
    """r (N,) float64 = sample_weight * class_weight[labels] and its total, or (None,
    None) without weights."""
    if sample_weight is None and class_weight is None:
        return None, None
    r = np.ones(n) if sample_weight is None else sample_weight.astype(np.float64)
    if class_weight is not None:
        r = r * class_weight.astype(np.float64)[labels]
    total = float(r.sum())
    if not total > 0:
        raise ZeroDivisionError("fastnn.kernels: the batch's weights sum to %r, not a "
                                "positive number" % total)
    return r, total


def _weighted(row_losses, grad, r, total, width=1):
    """The weighted mean sum_i r_i row_losses_i / (width total) (row_losses (N,) summed
    over each row's `width` elements); scales grad's rows by r_i / (width total)."""
    scale = r / (total * width)
    grad *= scale.astype(grad.dtype).reshape((len(r),) + (1,) * (grad.ndim - 1))
    return float(np.dot(r, row_losses) / (total * width))


def softmax_cross_entropy(logits, labels, dlogits, nthreads=1, count=False,
                          sample_weight=None, class_weight=None):
    """logits (N, C), labels (N,) int64 in [0, C) -> loss; writes dlogits (N, C). With
    count, -> (loss, number of rows whose argmax is their label)."""
    n = logits.shape[0]
    if count:
        hits = int(np.count_nonzero(np.argmax(logits, axis=1) == labels)) if n else 0
    r, total = _row_weights(n, labels, sample_weight, class_weight)
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=dlogits)
    sums = dlogits.sum(axis=1, keepdims=True)
    row_losses = np.log(sums[:, 0]) - shifted[rows, labels]
    dlogits /= sums
    dlogits[rows, labels] -= 1.0
    if r is None:
        loss = float(np.mean(row_losses, dtype=np.float64))
        dlogits /= n
    else:
        loss = _weighted(row_losses, dlogits, r, total)
    return (loss, hits) if count else loss


def multiclass_hinge(scores, labels, margin, dscores, nthreads=1, sample_weight=None,
                     class_weight=None):
    """scores (N, C), labels (N,) int64 -> loss; writes dscores (N, C)."""
    n = scores.shape[0]
    r, total = _row_weights(n, labels, sample_weight, class_weight)
    rows = np.arange(n)
    margins = scores - scores[rows, labels][:, None] + scores.dtype.type(margin)
    margins[rows, labels] = 0.0
    active = margins > 0
    terms = np.where(margins <= 0, 0.0, margins)            # NaN stays
    dscores[...] = active
    dscores[rows, labels] = -active.sum(axis=1)
    if r is None:
        loss = float(np.sum(terms, dtype=np.float64) / n)
        dscores /= n
    else:
        loss = _weighted(np.sum(terms, axis=1, dtype=np.float64), dscores, r, total)
    return loss


def _flat_weighted(terms, grad, sample_weight):
    """The weighted mean of elementwise terms whose rows lie along the first axis."""
    r, total = _row_weights(len(terms), None, sample_weight, None)
    rows = terms.reshape(len(terms), -1)
    return _weighted(rows.sum(axis=1, dtype=np.float64), grad, r, total, rows.shape[1])


def bce_with_logits(logits, targets, dlogits, nthreads=1, sample_weight=None):
    """logits, targets: same shape -> loss (mean over all elements); writes dlogits."""
    x, t = logits, targets
    terms = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    np.subtract(sigmoid(x), t, out=dlogits)
    if sample_weight is not None:
        return _flat_weighted(terms, dlogits, sample_weight)
    loss = float(np.mean(terms, dtype=np.float64))
    dlogits /= x.size
    return loss


def mse(pred, target, dpred, nthreads=1, sample_weight=None):
    """pred, target: same shape -> loss (mean over all elements); writes dpred."""
    np.subtract(pred, target, out=dpred)
    if sample_weight is not None:
        terms = np.square(dpred, dtype=np.float64)
        dpred *= 2.0
        return _flat_weighted(terms, dpred, sample_weight)
    loss = float(np.mean(np.square(dpred, dtype=np.float64)))
    dpred *= 2.0 / pred.size
    return loss
