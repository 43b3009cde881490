"""Gradient clipping by total norm (torch.nn.utils.clip_grad_norm_)."""
import math

import numpy as np

from ..core.validation import Real, check
from ..layers.base import Module, Parameter


def clip_grad_norm(params, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so that their joint norm is at most max_norm.

    total = norm of the vector of every gradient element (norm_type: a number >= 1 or
    inf); when total > max_norm every grad is multiplied by max_norm / (total + 1e-6),
    as torch does. Returns total (before clipping) as a float. params: a Module, a
    Parameter or an iterable of Parameters.

    >>> import numpy as np
    >>> from fastnn.layers import Parameter
    >>> from fastnn.optim import clip_grad_norm
    >>> p = Parameter(np.zeros(2)); p.grad = np.array([3.0, 4.0])
    >>> clip_grad_norm([p], 1.0)
    5.0
    >>> bool(np.allclose(p.grad, [0.6, 0.8]))
    True
    """
    fn = "clip_grad_norm"
    if isinstance(params, Module):
        params = params.parameters()
    elif isinstance(params, Parameter):
        params = [params]
    try:
        params = list(params)
    except TypeError:
        raise TypeError("%s: params must be an iterable of Parameters, got %s"
                        % (fn, type(params).__name__)) from None
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError("%s: params[%d] must be a fastnn Parameter, got %s"
                            % (fn, i, type(p).__name__))
    max_norm = check(fn, "max_norm", max_norm, Real(0, finite=False))
    norm_type = check(fn, "norm_type", norm_type, Real(0, closed="neither", finite=False))
    if not params:
        return 0.0
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(p.grad))) for p in params)
    elif norm_type == 2.0:
        acc = 0.0
        for p in params:
            g = p.grad.reshape(-1).astype(np.float64, copy=False)
            acc += float(np.dot(g, g))
        total = math.sqrt(acc)
    else:
        acc = sum(float(np.sum(np.abs(p.grad.astype(np.float64, copy=False)) ** norm_type))
                  for p in params)
        total = acc ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError("%s: the total norm of order %r of the gradients is non-finite "
                           "(%r); set error_if_nonfinite=False to clip anyway"
                           % (fn, norm_type, total))
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:          # also NaN, as torch (grads become NaN)
        for p in params:
            p.grad *= p.grad.dtype.type(coef)
    return total
