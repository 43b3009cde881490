"""Loss objects: `loss = crit(pred, target, sample_weight=None)` (a Python float, the
batch mean) and `crit.backward()` -> dLoss/dpred.

Weights follow torch's CrossEntropyLoss(weight=...): the mean becomes a weighted mean,
sum_i r_i l_i / sum_i r_i, with r_i = sample_weight[i] (row weights, (N,), any loss)
times weight[label_i] (class weights, (C,), SoftmaxCrossEntropy(weight=...)). l_i is a
row's loss: for BCEWithLogits and MSE the mean over the row's elements, so unit weights
give the plain mean over all elements. Weights must be finite and non-negative, and the
weights of a batch must not sum to zero (ValueError).

The math is `fastnn.ops` (softmax_cross_entropy, multiclass_hinge, bce_with_logits,
mse), weights included: they enter the kernels' one pass over pred, converted to pred's
dtype. Like layers, a loss keeps its gradient in a reused workspace array: `backward()`
returns a fresh copy, `_backward()` (for training loops) the workspace array itself,
valid until the next call.

>>> import numpy as np
>>> from fastnn.losses import SoftmaxCrossEntropy
>>> crit = SoftmaxCrossEntropy()
>>> loss = crit(np.zeros((2, 3), np.float32), np.array([0, 2]))
>>> round(loss, 4), crit.backward().shape
(1.0986, (2, 3))
"""
import math

import numpy as np

from . import ops
from .core.workspace import Workspace
from .core.validation import as_user_float, as_weights, check_float, describe
from .ops.losses import run_softmax_cross_entropy, trusted_labels, trusted_weights

__all__ = ["Loss", "SoftmaxCrossEntropy", "MulticlassHinge", "BCEWithLogits", "MSE"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


class Loss:
    """Base class: subclasses define `_compute(pred, target, sample_weight=None)` ->
    (loss, grad) (a subclass taking no weights may omit sample_weight).

    Facts a training loop asks for: `task` ("multiclass", "binary" or "regression":
    what the outputs predict, hence how accuracy and predictions are made) and
    `probabilities(outputs)`."""

    #: "multiclass" (argmax of (N, C) outputs), "binary" (logit > 0 per output) or
    #: "regression" (the outputs themselves; no accuracy)
    task = "regression"

    def __init__(self):
        self._ws = Workspace()
        self._grad = None

    def chance_loss(self, output_shape):
        """The loss a freshly initialised model should start near (outputs that favour
        no answer), for outputs of `output_shape` per sample; None when there is no such
        value (the diagnostics' initial-loss check)."""
        return None

    def probabilities(self, outputs):
        """What the model's `outputs` say as probabilities (an array shaped like them, in
        their float dtype); ValueError for losses whose outputs are not probabilities."""
        raise ValueError("%s: its outputs are not probabilities; use the outputs "
                         "themselves (or predictions)" % type(self).__name__)

    def row_weights(self, target, sample_weight=None):
        """The weights r_i of a batch's rows in its weighted mean (the module
        docstring) as a float64 (N,) array, or None when every row counts the same
        (data-parallel training splits a batch's gradient by them)."""
        return None if sample_weight is None else np.asarray(sample_weight, np.float64)

    def loss_and_hits(self, pred, target, sample_weight=None):
        """For training loops: (loss, number of correct predictions) of a batch in one
        pass, the gradient kept as after `self(pred, target, sample_weight)`; or None
        when this loss has no such pass for these arguments (then call the loss and
        count). sample_weight, when given, must hold validated weights (`as_weights`)."""
        return None

    def __call__(self, pred, target, sample_weight=None):
        """The batch's mean loss (weighted by sample_weight (N,) when given)."""
        name = type(self).__name__
        self._grad = None          # a failed call leaves nothing for backward()
        pred = as_user_float(pred, name, "pred")
        if pred.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            pred = pred.astype(np.float32)
        if sample_weight is None:
            loss, grad = self._compute(pred, target)
        else:
            loss, grad = self._compute(pred, target, sample_weight)
        self._grad = grad
        return float(loss)

    forward = __call__

    def _backward(self):
        if self._grad is None:
            raise RuntimeError("%s: backward() called before the loss was computed"
                               % type(self).__name__)
        return self._grad

    def backward(self):
        """dLoss/dpred for the last call, as a fresh array (same shape as pred)."""
        return np.array(self._backward(), copy=True)

    def __repr__(self):
        return "%s()" % type(self).__name__


def _check_labels(name, labels):
    labels = labels if isinstance(labels, np.ndarray) else np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError("%s: target must be integer class indices, got %s"
                        % (name, describe(labels)))
    return labels


def _outputs(loss, outputs, ndim=None):
    """A model's outputs checked for `probabilities`: a float ndarray (of `ndim` dims)."""
    name = "%s.probabilities" % type(loss).__name__
    outputs = as_user_float(outputs, name, "outputs")
    if ndim is not None and outputs.ndim != ndim:
        raise ValueError("%s: outputs must be %d-D, got %s" % (name, ndim, describe(outputs)))
    return outputs


def _rename(exc, name, op):
    """Re-raise an ops error with the loss's name in front of the function's."""
    return type(exc)(str(exc).replace(op + ":", name + ":", 1))


class SoftmaxCrossEntropy(Loss):
    """Mean cross-entropy of softmax(pred) against integer labels (torch's
    CrossEntropyLoss): pred (N, C) logits, target (N,) ints in [0, C). weight: None or
    class weights (C,) (torch's meaning: the weighted mean sum w[y_i] l_i / sum
    w[y_i]); sample_weight (N,) at the call multiplies them."""

    task = "multiclass"

    def __init__(self, weight=None):
        super().__init__()
        if weight is not None:
            arr = np.asarray(weight)
            if arr.ndim != 1 or arr.size == 0:
                raise ValueError("SoftmaxCrossEntropy: weight must be a non-empty 1-D array "
                                 "of class weights, got %s" % describe(arr))
            weight = as_weights(arr, arr.size, "SoftmaxCrossEntropy", "weight")
        self.weight = weight
        self._typed_weight = {}     # dtype -> weight in that dtype (what the kernels take)

    def _weight_as(self, dtype):
        """The class weights in `dtype` (None without), converted once per dtype."""
        if self.weight is None:
            return None
        typed = self._typed_weight.get(dtype)
        if typed is None:
            typed = self._typed_weight[dtype] = self.weight.astype(dtype)
        return typed

    def row_weights(self, target, sample_weight=None):
        """Row weights times the class weights of the rows' labels."""
        rows = super().row_weights(target, sample_weight)
        if self.weight is None:
            return rows
        by_class = np.asarray(self.weight, np.float64)[target]
        return by_class if rows is None else by_class * rows

    def chance_loss(self, output_shape):
        """ln(C): the cross-entropy of uniform class probabilities."""
        classes = output_shape[0] if len(output_shape) == 1 else 0
        return math.log(classes) if classes > 1 else None

    def probabilities(self, outputs):
        """softmax(outputs) over the class axis: (N, C) -> (N, C)."""
        outputs = _outputs(self, outputs, ndim=2)
        out = outputs.astype(np.float64)
        out -= out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out.astype(outputs.dtype)

    def loss_and_hits(self, pred, target, sample_weight=None):
        """(loss, number of rows whose argmax is the label) in one kernel call; None
        (nothing done) unless pred is a C-contiguous (N, C) float32/float64 ndarray with
        N, C >= 1, target `trusted_labels` and sample_weight `trusted_weights` (values
        validated by the caller), or when a subclass computes another loss."""
        if (type(self)._compute is not SoftmaxCrossEntropy._compute
                or type(pred) is not np.ndarray or pred.ndim != 2
                or not pred.flags.c_contiguous or pred.dtype not in _FLOATS or pred.size == 0
                or not trusted_weights(sample_weight, pred.shape[0], pred.dtype)
                or not trusted_labels(target, pred.shape[0], pred.shape[1])):
            return None
        self._grad = None
        try:
            loss, self._grad, hits = run_softmax_cross_entropy(
                pred, target, self._ws, True, sample_weight, self._weight_as(pred.dtype))
        except ValueError as exc:
            raise _rename(exc, "SoftmaxCrossEntropy", "softmax_cross_entropy") from None
        return float(loss), hits

    def _compute(self, pred, target, sample_weight=None):
        target = _check_labels("SoftmaxCrossEntropy", target)
        if self.weight is not None and pred.ndim == 2 and pred.shape[1] != self.weight.size:
            raise ValueError("SoftmaxCrossEntropy: weight must have one weight per class "
                             "(%d,) for pred %s, got %d weights"
                             % (pred.shape[1], describe(pred), self.weight.size))
        try:
            return ops.softmax_cross_entropy(pred, target, workspace=self._ws,
                                             sample_weight=sample_weight,
                                             class_weight=self._weight_as(pred.dtype))
        except (TypeError, ValueError) as exc:
            raise _rename(exc, "SoftmaxCrossEntropy", "softmax_cross_entropy") from None

    def __repr__(self):
        return "SoftmaxCrossEntropy()" if self.weight is None else \
            "SoftmaxCrossEntropy(weight=%s)" % np.array2string(self.weight, threshold=8)


class MulticlassHinge(Loss):
    """cs231n's multiclass SVM loss, mean over the batch:
    mean_i sum_{j != y_i} max(0, pred_ij - pred_iy_i + margin).
    (torch's MultiMarginLoss divides this by the number of classes as well.)"""

    task = "multiclass"

    def __init__(self, margin=1.0):
        super().__init__()
        self.margin = check_float(margin, "MulticlassHinge", "margin")

    def _compute(self, pred, target, sample_weight=None):
        target = _check_labels("MulticlassHinge", target)
        try:
            return ops.multiclass_hinge(pred, target, self.margin, workspace=self._ws,
                                        sample_weight=sample_weight)
        except (TypeError, ValueError) as exc:
            raise _rename(exc, "MulticlassHinge", "multiclass_hinge") from None

    def __repr__(self):
        return "MulticlassHinge(margin=%r)" % self.margin


class BCEWithLogits(Loss):
    """Mean binary cross-entropy on logits (torch's BCEWithLogitsLoss), stable for any
    logit: pred and target of one shape, target probabilities in [0, 1]."""

    task = "binary"

    def chance_loss(self, output_shape):
        """ln(2): the binary cross-entropy of probabilities 1/2."""
        return math.log(2.0)

    def probabilities(self, outputs):
        """sigmoid(outputs), elementwise and stable for any logit; shaped like outputs."""
        outputs = _outputs(self, outputs)
        out = outputs.astype(np.float64)
        p = np.empty_like(out)
        pos = out >= 0
        p[pos] = 1.0 / (1.0 + np.exp(-out[pos]))
        e = np.exp(out[~pos])
        p[~pos] = e / (1.0 + e)
        return p.astype(outputs.dtype)

    def _compute(self, pred, target, sample_weight=None):
        try:
            return ops.bce_with_logits(pred, target, workspace=self._ws,
                                       sample_weight=sample_weight)
        except (TypeError, ValueError) as exc:
            raise _rename(exc, "BCEWithLogits", "bce_with_logits") from None


class MSE(Loss):
    """Mean squared error over all elements (torch's MSELoss): pred, target same shape."""

    def _compute(self, pred, target, sample_weight=None):
        try:
            return ops.mse(pred, target, workspace=self._ws, sample_weight=sample_weight)
        except (TypeError, ValueError) as exc:
            raise _rename(exc, "MSE", "mse") from None
