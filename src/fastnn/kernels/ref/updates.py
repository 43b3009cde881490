"""Optimizer updates, in place, with torch.optim's exact formulas (one tensor at a time).

p: parameter, g: gradient (read only), state buffers updated in place; all flat or of
one shape, one dtype. Weight decay (L2) is added to a private copy of g, never to g.
"""
import math

import numpy as np

__all__ = ["sgd_step", "adagrad_step", "rmsprop_step", "adam_step"]


def sgd_step(p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first,
             nthreads=1):
    """SGD; buf is the momentum buffer (None when momentum == 0); first: buf uninitialised."""
    d = g + weight_decay * p if weight_decay else g
    if momentum:
        if first:
            buf[...] = d
        else:
            buf *= momentum
            buf += (1.0 - dampening) * d
        d = d + momentum * buf if nesterov else buf
    p -= lr * d


def adagrad_step(p, g, state_sum, clr, eps, weight_decay, nthreads=1):
    """Adagrad: state_sum += g^2; p -= clr * g / (sqrt(state_sum) + eps)."""
    d = g + weight_decay * p if weight_decay else g
    state_sum += d * d
    p -= clr * d / (np.sqrt(state_sum) + eps)


def rmsprop_step(p, g, square_avg, momentum_buf, lr, alpha, eps, momentum, weight_decay,
                 nthreads=1):
    """RMSprop (not centred); momentum_buf is None when momentum == 0."""
    d = g + weight_decay * p if weight_decay else g
    square_avg *= alpha
    square_avg += (1.0 - alpha) * d * d
    avg = np.sqrt(square_avg) + eps
    if momentum:
        momentum_buf *= momentum
        momentum_buf += d / avg
        p -= lr * momentum_buf
    else:
        p -= lr * d / avg


def adam_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled,
              nthreads=1):
    """Adam (decoupled=False: L2 added to g) or AdamW (decoupled=True: p *= 1 - lr*wd);
    step is the 1-based step count used for bias correction."""
    if decoupled:
        p *= 1.0 - lr * weight_decay
        d = g
    else:
        d = g + weight_decay * p if weight_decay else g
    m += (1.0 - beta1) * (d - m)
    v *= beta2
    v += (1.0 - beta2) * d * d
    bias1 = 1.0 - beta1 ** step
    bias2_sqrt = math.sqrt(1.0 - beta2 ** step)   # a Python float keeps float32 math float32
    p -= (lr / bias1) * m / (np.sqrt(v) / bias2_sqrt + eps)
