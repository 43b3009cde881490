"""Losses: each returns (mean loss as a Python float, gradient w.r.t. its first input).

Weights, torch's semantics: `sample_weight` (N,) weighs rows and `class_weight` (C,) (the
losses of labels) classes; row i weighs r_i = sample_weight[i] * class_weight[y_i] and the
loss is the weighted mean sum_i r_i l_i / sum_i r_i (l_i: row i's loss; for
bce_with_logits and mse the mean over the row's elements, rows along the first axis). The
weights must be finite and non-negative, and a batch's r_i must not sum to zero
(ValueError). They are converted to the input's dtype (as torch requires a weight of the
input's dtype) and enter the kernels' single pass over the input.
"""
import math

import numpy as np

from ..core.backend import backend, threads_for
from ..core.validation import (as_float_array, as_labels, as_scalar, as_weights, check_shape,
                               describe)
from ..core.workspace import FRESH


_INT64 = np.dtype(np.int64)


def trusted_labels(labels, n, c):
    """Whether labels can go to a kernel as they are: int64, C-contiguous, shape (n,),
    every value in [0, c) (the backend's one-pass scan; nothing allocated)."""
    return (isinstance(labels, np.ndarray) and labels.dtype == _INT64
            and labels.shape == (n,) and labels.flags.c_contiguous
            and labels.flags.aligned and backend().labels_in_range(labels, c))


def trusted_weights(weights, n, dtype):
    """Whether row or class weights can go to a kernel as they are, their values already
    validated (`as_weights`): None, or an aligned C-contiguous (n,) ndarray of `dtype`."""
    return weights is None or (isinstance(weights, np.ndarray) and weights.dtype == dtype
                               and weights.shape == (n,) and weights.flags.c_contiguous
                               and weights.flags.aligned)


def _labels(labels, scores, fn):
    """`as_labels` for (N, C) scores, allocating nothing on the training path: labels
    that are `trusted_labels` are returned as they are; anything else goes through
    `as_labels` (its conversions and messages)."""
    n, c = scores.shape
    return labels if trusted_labels(labels, n, c) else as_labels(labels, n, c, fn)


def _weights(fn, x, sample_weight, class_weight=None):
    """(sample_weight, class_weight) validated for input x ((N, ...); (N, C) when
    class_weight is given), as x's dtype, None for the absent ones."""
    if sample_weight is not None:
        sample_weight = as_weights(sample_weight, x.shape[0], fn, dtype=x.dtype)
    if class_weight is not None:
        shape = np.shape(class_weight)
        if shape != (x.shape[1],):
            raise ValueError("%s: class_weight must have one weight per class, shape (%d,), "
                             "got %s" % (fn, x.shape[1], describe(np.asarray(class_weight))
                                         if shape else repr(class_weight)))
        class_weight = as_weights(class_weight, x.shape[1], fn, "class_weight", x.dtype)
    return sample_weight, class_weight


def _weighted_call(fn, kernel, *args):
    """kernel(*args) (weights passed by position: a keyword costs ~0.1 us per call), a
    weight total of zero reported as ValueError naming `fn`."""
    try:
        return kernel(*args)
    except ZeroDivisionError:
        raise ValueError("%s: the batch's weights sum to zero (row i weighs "
                         "sample_weight[i] times the class weight of its label)" % fn) from None


def softmax_cross_entropy(logits, labels, workspace=None, sample_weight=None,
                          class_weight=None):
    """logits (N, C) float, labels (N,) int in [0, C) -> (loss, dlogits (N, C)).

    loss = mean over the batch of -log softmax(logits)[label] (log-sum-exp stable);
    weighted by sample_weight (N,) and class_weight (C,) as the module docstring says.
    """
    fn = "softmax_cross_entropy"
    logits = as_float_array(logits, fn, "logits", ndim=2)
    labels = _labels(labels, logits, fn)
    sw, cw = _weights(fn, logits, sample_weight, class_weight)
    loss, grad, _ = run_softmax_cross_entropy(logits, labels, workspace or FRESH,
                                              sample_weight=sw, class_weight=cw)
    return loss, grad


def run_softmax_cross_entropy(logits, labels, ws, count=False, sample_weight=None,
                              class_weight=None):
    """`softmax_cross_entropy` on trusted logits (C-contiguous float (N, C)), labels
    (`trusted_labels`) and weights (`trusted_weights`) -> (loss, dlogits, number of rows
    whose argmax is their label, or None without `count`): the training loop's path,
    one kernel call."""
    fn = "softmax_cross_entropy"
    grad = ws.get("grad", logits.shape, logits.dtype)
    kernel, nthreads = backend().softmax_cross_entropy, threads_for(logits.size)
    if sample_weight is None and class_weight is None:
        res = kernel(logits, labels, grad, nthreads, count)
    else:
        res = _weighted_call(fn, kernel, logits, labels, grad, nthreads, count,
                            sample_weight, class_weight)
    return (res[0], grad, res[1]) if count else (res, grad, None)


def multiclass_hinge(scores, labels, margin=1.0, workspace=None, sample_weight=None,
                     class_weight=None):
    """cs231n multiclass SVM loss: mean_i sum_{j != y_i} max(0, s_ij - s_iy_i + margin).

    scores (N, C), labels (N,) -> (loss, dscores (N, C)); weighted by sample_weight (N,)
    and class_weight (C,) as the module docstring says (torch's MultiMarginLoss weight
    instead scales the terms and keeps the plain mean).
    """
    fn = "multiclass_hinge"
    scores = as_float_array(scores, fn, "scores", ndim=2)
    labels = _labels(labels, scores, fn)
    if type(margin) is not float or not math.isfinite(margin):   # as_scalar allocates
        margin = as_scalar(margin, fn, "margin")
    sw, cw = _weights(fn, scores, sample_weight, class_weight)
    grad = (workspace or FRESH).get("grad", scores.shape, scores.dtype)
    kernel, nthreads = backend().multiclass_hinge, threads_for(scores.size)
    if sw is None and cw is None:
        return kernel(scores, labels, margin, grad, nthreads), grad
    return _weighted_call(fn, kernel, scores, labels, margin, grad, nthreads, sw, cw), grad


def _pair(pred, target, fn, pname, tname):
    pred = as_float_array(pred, fn, pname, ndim=(1, 2))
    if not hasattr(target, "dtype") or target.dtype != pred.dtype:
        target = as_float_array(target, fn, tname)  # type check first, then convert
        target = target.astype(pred.dtype)
    target = as_float_array(target, fn, tname, dtype=pred.dtype)
    check_shape(target, pred.shape, fn, tname)
    return pred, target


def _flat(fn, pred, target, workspace, sample_weight, pname, tname):
    """A flat loss (the backend's `fn`) of checked pred and target (and row weights)."""
    pred, target = _pair(pred, target, fn, pname, tname)
    sw, _ = _weights(fn, pred, sample_weight)
    grad = (workspace or FRESH).get("grad", pred.shape, pred.dtype)
    kernel, nthreads = getattr(backend(), fn), threads_for(pred.size)
    if sw is None:
        return kernel(pred, target, grad, nthreads), grad
    return _weighted_call(fn, kernel, pred, target, grad, nthreads, sw), grad


def bce_with_logits(logits, targets, workspace=None, sample_weight=None):
    """Binary cross-entropy on logits, stable for any finite logit.

    logits, targets: same shape ((N,) or (N, K)), targets in [0, 1] -> (loss, dlogits);
    weighted by sample_weight (N,) as the module docstring says.
    """
    return _flat("bce_with_logits", logits, targets, workspace, sample_weight, "logits",
                 "targets")


def mse(pred, target, workspace=None, sample_weight=None):
    """Mean squared error over all elements: pred, target same shape -> (loss, dpred);
    weighted by sample_weight (N,) as the module docstring says."""
    return _flat("mse", pred, target, workspace, sample_weight, "pred", "target")
