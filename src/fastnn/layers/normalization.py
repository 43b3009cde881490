"""Batch normalisation layers: BatchNorm1d over the batch of (N, D) inputs and
BatchNorm2d per channel over (N, H, W) of (N, C, H, W) inputs; one implementation."""
import math

import numpy as np

from .. import ops
from ..ops.batchnorm import (BatchNorm2dCache, BatchNormCache, run_batchnorm2d_backward,
                             run_batchnorm2d_forward, run_batchnorm_backward,
                             run_batchnorm_forward)
from ..core.validation import Bool, Dtype, Integer, Real, check, check_all, describe
from .base import Module, Parameter, count_one, register
from .conv import check_images


class _BatchNorm(Module):
    """What BatchNorm1d and BatchNorm2d share (everything but the input's layout, which
    a subclass states: `_check_shape` and its ops `_run_forward`, `_run_backward`,
    `_backward_op` and `_cache_type`).

    Training: y = gamma * (x - mean) / sqrt(var + eps) + beta with the batch mean and
    biased variance (N > 1 required), and the buffers updated in place:
    running = (1 - momentum) * running + momentum * batch_stat (the unbiased variance
    for running_var). Eval: the running statistics normalise. `gamma` (ones) and `beta`
    (zeros) are Parameters when affine=True; `running_mean` (zeros) and `running_var`
    (ones) are buffers saved in the state_dict. `num_batches_tracked` counts the
    training-mode forwards, as torch's buffer of that name (not in fastnn's state_dict:
    `fastnn.interop` reads and writes it).
    """

    recordable = True
    CONSTRAINTS = {"num_features": Integer(1), "eps": Real(0, closed="right"),
                   "momentum": Real(0, 1), "affine": Bool(), "dtype": Dtype()}

    @property
    def batch_stats(self):
        """None, or (during a `Trainer(..., sync_batchnorm=True)` fit) the object that
        normalises training batches with the statistics of the global batch of all the
        ranks (fastnn.distributed): forward(layer, x, gamma, beta) -> (out, cache), the
        cache's backward(layer, dy) -> (dx, dgamma, dbeta). A layer that has one is not
        recordable: it talks to the other ranks between its kernels."""
        return self.__dict__.get("_batch_stats")

    @batch_stats.setter
    def batch_stats(self, stats):
        d = self.__dict__
        d["_batch_stats"] = stats
        if stats is None:
            d.pop("recordable", None)
        else:
            d["recordable"] = False

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, dtype=np.float32):
        super().__init__()
        kw = check_all(type(self).__name__, self.CONSTRAINTS, num_features=num_features, eps=eps,
                       momentum=momentum, affine=affine, dtype=dtype)
        self.num_features = c = kw["num_features"]
        self.eps, self.momentum, self.affine = kw["eps"], kw["momentum"], kw["affine"]
        dt = self._dtype = kw["dtype"]
        if self.affine:
            self.gamma = Parameter(np.ones(c, dt), "gamma")
            self.beta = Parameter(np.zeros(c, dt), "beta")
        else:
            self.gamma = self.beta = None
        self.register_buffer("running_mean", np.zeros(c, dt))
        self.register_buffer("running_var", np.ones(c, dt))
        self._batches = np.zeros((), np.int64)
        self._cache = None

    @property
    def num_batches_tracked(self):
        """The number of training-mode forwards so far: a 0-d int64 array, counted in
        place (also by a replayed forward: see `forward_counters`)."""
        return self._batches

    @num_batches_tracked.setter
    def num_batches_tracked(self, value):
        self._batches[()] = check(self._label(), "num_batches_tracked", value, Integer(0))

    def forward_counters(self, training):
        return (self._batches,) if training else ()

    def _count_batch(self):
        if self.training:
            count_one(self._batches)

    def _affine_arrays(self, dt):
        if self.affine:
            return self.gamma.data, self.beta.data
        ones = self._ws.get("const_gamma", (self.num_features,), dt)
        zeros = self._ws.get("const_beta", (self.num_features,), dt)
        ones.fill(1)
        zeros.fill(0)
        return ones, zeros

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        self._check_shape(input_shape, "shape %s" % (input_shape,))
        return input_shape

    def train_memory(self, input_shape, itemsize, first):
        """Kept: the output, and the batch mean and inverse std per feature; gradients:
        the input's."""
        size = math.prod(self.output_shape(input_shape))
        return (size + 2 * self.num_features) * itemsize, self._input_grad_nbytes(
            input_shape, itemsize, first)

    def _forward(self, x):
        c = self.num_features
        self._check_shape(x.shape, describe(x))
        if x.dtype != self.running_mean.dtype:
            raise self._error(TypeError, "expected a %s input (the layer's dtype), got %s"
                              % (self.running_mean.dtype, describe(x)))
        if self.training and self.batch_stats is not None:
            out, self._cache = self.batch_stats.forward(self, x, *self._affine_arrays(x.dtype))
            self._count_batch()
            return out
        if self.training and x.size // c < 2:
            raise self._error(ValueError, "expected more than 1 value per channel when "
                              "training, got input of shape %s" % (x.shape,))
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        gamma, beta = self._affine_arrays(x.dtype)
        # the kernels read gamma/beta and write the running stats (and in backward
        # dgamma/dbeta, sized like gamma) assuming shape (c,): never trust a replacement
        for name, r in (("gamma", gamma), ("beta", beta), ("running_mean", self.running_mean),
                        ("running_var", self.running_var)):
            if not (isinstance(r, np.ndarray) and r.shape == (c,) and r.dtype == x.dtype
                    and r.flags.c_contiguous and r.flags.writeable):
                raise self._error(TypeError, "%s must be a writeable C-contiguous %s array "
                                  "of shape (%d,), got %r" % (name, x.dtype, c, r))
        out, self._cache = self._run_forward(
            x, gamma, beta, self.running_mean, self.running_var, bool(self.training),
            self.momentum, self.eps, self._ws)
        self._count_batch()
        return out

    def _backward(self, dy, need_dx=True):
        cache = self._need_cache()
        ws = self._ws
        if self.affine:
            ws.bind("dgamma", self.gamma.grad)
            ws.bind("dbeta", self.beta.grad)
        if not isinstance(cache, self._cache_type):      # a synchronised forward's
            dx, dgamma, dbeta = cache.backward(self, dy)
        elif dy.shape != cache.x.shape or dy.dtype != cache.x.dtype \
                or not dy.flags.c_contiguous:        # internal callers pass exact arrays
            dx, dgamma, dbeta = self._backward_op(dy, cache, workspace=ws)
        else:
            dx, dgamma, dbeta = self._run_backward(dy, cache, ws)
        if self.affine:
            if dgamma is not self.gamma.grad:
                self.gamma.grad[...] = dgamma
            if dbeta is not self.beta.grad:
                self.beta.grad[...] = dbeta
            self._mark_grads()
        return dx

    def extra_repr(self):
        s = "%d, eps=%r, momentum=%r, affine=%s" % (self.num_features, self.eps,
                                                    self.momentum, self.affine)
        return s if self._dtype == np.float32 else s + ", dtype=%s" % self._dtype

    def _config(self):
        return {"num_features": self.num_features, "eps": self.eps,
                "momentum": self.momentum, "affine": self.affine, "dtype": str(self._dtype)}


@register
class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, num_features) inputs, as torch.nn.BatchNorm1d (the
    formulas, parameters and buffers: `_BatchNorm`).

    >>> import numpy as np
    >>> from fastnn.layers import BatchNorm1d
    >>> bn = BatchNorm1d(3)
    >>> y = bn(np.arange(12, dtype=np.float32).reshape(4, 3))
    >>> sorted(bn.state_dict())
    ['beta', 'gamma', 'running_mean', 'running_var']
    """

    _run_forward = staticmethod(run_batchnorm_forward)
    _run_backward = staticmethod(run_batchnorm_backward)
    _backward_op = staticmethod(ops.batchnorm_backward)
    _cache_type = BatchNormCache

    def _check_shape(self, shape, got):
        self._check_features(shape, self.num_features, got)


@register
class BatchNorm2d(_BatchNorm):
    """Batch normalisation per channel of (N, num_features, H, W) inputs, over (N, H, W),
    as torch.nn.BatchNorm2d (formulas, parameters and buffers as BatchNorm1d's, one per
    channel; training needs more than one value per channel).

    >>> import numpy as np
    >>> from fastnn.layers import BatchNorm2d
    >>> bn = BatchNorm2d(3)
    >>> bn(np.ones((2, 3, 4, 4), np.float32)).shape, bn.running_mean.shape
    ((2, 3, 4, 4), (3,))
    """

    _run_forward = staticmethod(run_batchnorm2d_forward)
    _run_backward = staticmethod(run_batchnorm2d_backward)
    _backward_op = staticmethod(ops.batchnorm2d_backward)
    _cache_type = BatchNorm2dCache

    def _check_shape(self, shape, got):
        check_images(self, shape, self.num_features, got)
