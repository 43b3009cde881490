"""Losses, each returning the batch-mean loss (float) and writing its gradient, in NumPy.

softmax_cross_entropy: L = mean_i(logsumexp(z_i) - z_i[y_i]);  dz = (softmax(z) - onehot(y)) / N
multiclass_hinge (cs231n SVM): L = mean_i sum_{j != y_i} max(0, s_ij - s_iy + margin)
bce_with_logits:  L = mean(max(x, 0) - x * t + log1p(exp(-|x|)));  dx = (sigmoid(x) - t) / numel
mse:              L = mean((p - t)^2);                               dp = 2 (p - t) / numel
"""
import numpy as np

from ..activation_table import sigmoid

__all__ = ["labels_in_range", "softmax_cross_entropy", "multiclass_hinge", "bce_with_logits", "mse"]


def labels_in_range(labels, c):
    """Whether every label (int64, (N,)) is in [0, c) (the check fastnn.ops makes before
    a kernel uses labels as indices)."""
    return labels.size == 0 or (int(labels.min()) >= 0 and int(labels.max()) < c)


def softmax_cross_entropy(logits, labels, dlogits, nthreads=1, count=False):
    """logits (N, C), labels (N,) int64 in [0, C) -> loss; writes dlogits (N, C). With
    count, -> (loss, number of rows whose argmax is their label)."""
    n = logits.shape[0]
    if count:
        hits = int(np.count_nonzero(np.argmax(logits, axis=1) == labels)) if n else 0
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=dlogits)
    sums = dlogits.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(sums[:, 0]) - shifted[rows, labels], dtype=np.float64))
    dlogits /= sums
    dlogits[rows, labels] -= 1.0
    dlogits /= n
    return (loss, hits) if count else loss


def multiclass_hinge(scores, labels, margin, dscores, nthreads=1):
    """scores (N, C), labels (N,) int64 -> loss; writes dscores (N, C)."""
    n = scores.shape[0]
    rows = np.arange(n)
    margins = scores - scores[rows, labels][:, None] + scores.dtype.type(margin)
    margins[rows, labels] = 0.0
    active = margins > 0
    loss = float(np.sum(np.where(margins <= 0, 0.0, margins), dtype=np.float64) / n)  # NaN stays
    dscores[...] = active
    dscores[rows, labels] = -active.sum(axis=1)
    dscores /= n
    return loss


def bce_with_logits(logits, targets, dlogits, nthreads=1):
    """logits, targets: same shape -> loss (mean over all elements); writes dlogits."""
    x, t = logits, targets
    terms = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    loss = float(np.mean(terms, dtype=np.float64))
    np.subtract(sigmoid(x), t, out=dlogits)
    dlogits /= x.size
    return loss


def mse(pred, target, dpred, nthreads=1):
    """pred, target: same shape -> loss (mean over all elements); writes dpred."""
    np.subtract(pred, target, out=dpred)
    loss = float(np.mean(np.square(dpred, dtype=np.float64)))
    dpred *= 2.0 / pred.size
    return loss
