"""The NumPy reference backend: the specification every Cython kernel must match.

Calling convention shared with the Cython backend (`fastnn.kernels._*`):
- arrays are C-contiguous float32 or float64, all of one dtype, already validated;
  integer labels are int64 with values in [0, C);
- outputs are written into preallocated arrays passed by the caller (`out=` style),
  so warm training steps allocate nothing; optional outputs may be None (skipped);
- reductions (losses) return a Python float;
- `nthreads` is the OpenMP thread count for the Cython twin (ignored here).
"""
from .activations import (act_backward, act_forward, maxout_backward, maxout_forward,
                          prelu_backward, prelu_forward)
from .batchnorm import bn_backward, bn_forward_eval, bn_forward_train
from .dense import dense_backward, dense_forward
from .losses import (bce_with_logits, labels_in_range, mse, multiclass_hinge,
                     softmax_cross_entropy)
from .updates import adagrad_step, adam_step, rmsprop_step, sgd_step

__all__ = [
    "act_forward", "act_backward", "prelu_forward", "prelu_backward",
    "maxout_forward", "maxout_backward",
    "dense_forward", "dense_backward",
    "bn_forward_train", "bn_forward_eval", "bn_backward",
    "labels_in_range", "softmax_cross_entropy", "multiclass_hinge", "bce_with_logits",
    "mse",
    "sgd_step", "adagrad_step", "rmsprop_step", "adam_step",
]
