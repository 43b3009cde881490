"""Functional kernels (cs231n style): forwards return (out, cache), backwards take
(dout, cache). Inputs are validated here, then the active backend's kernel runs.

>>> import numpy as np, fastnn
>>> x = np.ones((4, 3), np.float32); w = np.ones((3, 2), np.float32); b = np.zeros(2, np.float32)
>>> out, cache = fastnn.ops.dense_forward(x, w, b, activation="relu")
>>> dx, dw, db = fastnn.ops.dense_backward(np.ones_like(out), cache)
"""
from .activations import (activation_backward, activation_forward, maxout_backward,
                          maxout_forward, prelu_backward, prelu_forward)
from .batchnorm import (batchnorm2d_backward, batchnorm2d_forward, batchnorm_backward,
                        batchnorm_forward)
from .conv import conv2d_backward, conv2d_forward
from .dense import dense_backward, dense_forward
from .losses import bce_with_logits, mse, multiclass_hinge, softmax_cross_entropy
from .pooling import (avgpool2d_backward, avgpool2d_forward, maxpool2d_backward,
                      maxpool2d_forward)

__all__ = [
    "dense_forward", "dense_backward", "activation_forward", "activation_backward",
    "prelu_forward", "prelu_backward", "maxout_forward", "maxout_backward",
    "batchnorm_forward", "batchnorm_backward",
    "conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward",
    "avgpool2d_forward", "avgpool2d_backward", "batchnorm2d_forward", "batchnorm2d_backward",
    "softmax_cross_entropy", "multiclass_hinge", "bce_with_logits", "mse",
]
