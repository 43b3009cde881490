"""Learning-rate schedulers with torch.optim.lr_scheduler's sequences.

Call `scheduler.step()` once per epoch, after that epoch's `optimizer.step()` calls.
Like torch, each scheduler computes the next lr from the optimizer's current lr (the
"chainable" recursive form), so lrs agree with torch step for step; construction records
`initial_lr` in the optimizer's group and performs the initial step (epoch 0).

>>> from fastnn.layers import Dense
>>> from fastnn.optim import SGD, StepLR
>>> opt = SGD(Dense(2, 2, rng=0).parameters(), lr=0.1)
>>> sched = StepLR(opt, step_size=2, gamma=0.5)
>>> lrs = []
>>> for epoch in range(5):
...     lrs.append(opt.lr); sched.step()
>>> lrs
[0.1, 0.1, 0.05, 0.05, 0.025]
"""
import math
import numbers

import numpy as np

from .optimizers import Optimizer, _number

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR"]


def _int(value, fn, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError("%s: %s must be an int, got %r" % (fn, name, value))
    if value < minimum:
        raise ValueError("%s: %s must be >= %d, got %d" % (fn, name, minimum, value))
    return int(value)


class LRScheduler:
    """Base class: `step()`, `get_last_lr()`, `last_epoch`, `base_lr`,
    `state_dict()` / `load_state_dict()`."""

    def __init__(self, optimizer, last_epoch=-1):
        fn = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError("%s: expected a fastnn optimizer, got %s"
                            % (fn, type(optimizer).__name__))
        self.optimizer = optimizer
        last_epoch = _int(last_epoch, fn, "last_epoch", -1)
        group = optimizer.param_groups[0]
        if last_epoch == -1:
            group.setdefault("initial_lr", group["lr"])
        elif "initial_lr" not in group:
            raise KeyError("%s: resuming with last_epoch=%d needs 'initial_lr' in the "
                           "optimizer's param group (load the optimizer's state first)"
                           % (fn, last_epoch))
        self.base_lr = group["initial_lr"]
        self.last_epoch = last_epoch
        self._initial = True
        self.step()
        self._initial = False

    def _next_lr(self, lr):
        raise NotImplementedError

    def step(self):
        """Advance one epoch and set the optimizer's lr."""
        self.last_epoch += 1
        lr = self._next_lr(self.optimizer.lr)
        self.optimizer.lr = lr
        self._last_lr = [self.optimizer.lr]

    def get_last_lr(self):
        """[lr] as last set by this scheduler (a list, like torch's per-group list)."""
        return list(self._last_lr)

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        if not isinstance(state_dict, dict) or set(state_dict) != set(self.state_dict()):
            raise ValueError("%s.load_state_dict: keys do not match %s"
                             % (type(self).__name__, sorted(self.state_dict())))
        self.__dict__.update(state_dict)

    def __repr__(self):
        return "%s(last_epoch=%d, lr=%r)" % (type(self).__name__, self.last_epoch,
                                             self.optimizer.lr)


class StepLR(LRScheduler):
    """lr = initial_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _int(step_size, "StepLR", "step_size", 1)
        self.gamma = _number(gamma, "StepLR", "gamma", low=0.0)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class ExponentialLR(LRScheduler):
    """lr = initial_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _number(gamma, "ExponentialLR", "gamma", low=0.0)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr):
        return lr if self._initial else lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 for
    epoch <= T_max, continuing periodically after it (torch's recursive form)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _int(T_max, "CosineAnnealingLR", "T_max", 1)
        self.eta_min = _number(eta_min, "CosineAnnealingLR", "eta_min", low=0.0)
        super().__init__(optimizer, last_epoch)

    def _next_lr(self, lr):
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._initial:
            return lr
        if (t - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - lo) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) \
            * (lr - lo) + lo
