"""Losses: each returns (mean loss as a Python float, gradient w.r.t. its first input)."""
import math

import numpy as np

from ..core.backend import backend, threads_for
from ..core.validation import as_float_array, as_labels, as_scalar, check_shape
from ..core.workspace import FRESH


_INT64 = np.dtype(np.int64)


def trusted_labels(labels, n, c):
    """Whether labels can go to a kernel as they are: int64, C-contiguous, shape (n,),
    every value in [0, c) (the backend's one-pass scan; nothing allocated)."""
    return (isinstance(labels, np.ndarray) and labels.dtype == _INT64
            and labels.shape == (n,) and labels.flags.c_contiguous
            and labels.flags.aligned and backend().labels_in_range(labels, c))


def _labels(labels, scores, fn):
    """`as_labels` for (N, C) scores, allocating nothing on the training path: labels
    that are `trusted_labels` are returned as they are; anything else goes through
    `as_labels` (its conversions and messages)."""
    n, c = scores.shape
    return labels if trusted_labels(labels, n, c) else as_labels(labels, n, c, fn)


def softmax_cross_entropy(logits, labels, workspace=None):
    """logits (N, C) float, labels (N,) int in [0, C) -> (loss, dlogits (N, C)).

    loss = mean over the batch of -log softmax(logits)[label] (log-sum-exp stable).
    """
    fn = "softmax_cross_entropy"
    logits = as_float_array(logits, fn, "logits", ndim=2)
    labels = _labels(labels, logits, fn)
    loss, grad, _ = run_softmax_cross_entropy(logits, labels, workspace or FRESH)
    return loss, grad


def run_softmax_cross_entropy(logits, labels, ws, count=False):
    """`softmax_cross_entropy` on trusted logits (C-contiguous float (N, C)) and labels
    (`trusted_labels`) -> (loss, dlogits, number of rows whose argmax is their label, or
    None without `count`): the training loop's path, one kernel call."""
    grad = ws.get("grad", logits.shape, logits.dtype)
    res = backend().softmax_cross_entropy(logits, labels, grad, threads_for(logits.size),
                                          count)
    return (res[0], grad, res[1]) if count else (res, grad, None)


def multiclass_hinge(scores, labels, margin=1.0, workspace=None):
    """cs231n multiclass SVM loss: mean_i sum_{j != y_i} max(0, s_ij - s_iy_i + margin).

    scores (N, C), labels (N,) -> (loss, dscores (N, C)).
    """
    fn = "multiclass_hinge"
    scores = as_float_array(scores, fn, "scores", ndim=2)
    labels = _labels(labels, scores, fn)
    if type(margin) is not float or not math.isfinite(margin):   # as_scalar allocates
        margin = as_scalar(margin, fn, "margin")
    grad = (workspace or FRESH).get("grad", scores.shape, scores.dtype)
    loss = backend().multiclass_hinge(scores, labels, margin, grad, threads_for(scores.size))
    return loss, grad


def _pair(pred, target, fn, pname, tname):
    pred = as_float_array(pred, fn, pname, ndim=(1, 2))
    if not hasattr(target, "dtype") or target.dtype != pred.dtype:
        target = as_float_array(target, fn, tname)  # type check first, then convert
        target = target.astype(pred.dtype)
    target = as_float_array(target, fn, tname, dtype=pred.dtype)
    check_shape(target, pred.shape, fn, tname)
    return pred, target


def bce_with_logits(logits, targets, workspace=None):
    """Binary cross-entropy on logits, stable for any finite logit.

    logits, targets: same shape ((N,) or (N, K)), targets in [0, 1] -> (loss, dlogits).
    """
    fn = "bce_with_logits"
    logits, targets = _pair(logits, targets, fn, "logits", "targets")
    grad = (workspace or FRESH).get("grad", logits.shape, logits.dtype)
    loss = backend().bce_with_logits(logits, targets, grad, threads_for(logits.size))
    return loss, grad


def mse(pred, target, workspace=None):
    """Mean squared error over all elements: pred, target same shape -> (loss, dpred)."""
    fn = "mse"
    pred, target = _pair(pred, target, fn, "pred", "target")
    grad = (workspace or FRESH).get("grad", pred.shape, pred.dtype)
    loss = backend().mse(pred, target, grad, threads_for(pred.size))
    return loss, grad
