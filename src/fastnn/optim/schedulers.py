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

from ..core.validation import Bool, Integer, Real, check, check_all
from .optimizers import Optimizer

__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "CosineAnnealingLR"]

#: the progress every scheduler keeps besides its arguments and `_last_lr` (the list
#: get_last_lr returns): name -> constraint
_COMMON_STATE = {"last_epoch": Integer(-1), "base_lr": Real(0), "_initial": Bool()}


class LRScheduler:
    """Base class: `step()`, `get_last_lr()`, `last_epoch`, `base_lr`,
    `state_dict()` / `load_state_dict()`. A subclass declares its arguments in
    `_constraints`; they are checked at construction and when a state is loaded."""

    _constraints = {}

    def __init__(self, optimizer, last_epoch=-1, **args):
        fn = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError("%s: expected a fastnn optimizer, got %s"
                            % (fn, type(optimizer).__name__))
        self.__dict__.update(check_all(fn, self._constraints, **args))
        self.optimizer = optimizer
        last_epoch = check(fn, "last_epoch", last_epoch, Integer(-1))
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
        """{name: value} of the scheduler's arguments and progress (JSON-native)."""
        state = {k: self.__dict__[k] for k in list(self._constraints) + list(_COMMON_STATE)}
        state["_last_lr"] = list(self._last_lr)
        return state

    def load_state_dict(self, state_dict):
        """Restore `state_dict()` output of the same scheduler type; every value is
        checked (type and range) before anything changes (ValueError)."""
        self.__dict__.update(self._checked_state_dict(state_dict))

    def check_state_dict(self, state_dict):
        """ValueError unless `load_state_dict` would take `state_dict`; changes nothing."""
        self._checked_state_dict(state_dict)

    def _checked_state_dict(self, state_dict):
        fn = "%s.load_state_dict" % type(self).__name__
        expected = self.state_dict()
        if not isinstance(state_dict, dict) or set(state_dict) != set(expected):
            raise ValueError("%s: keys do not match %s" % (fn, sorted(expected)))
        values = dict(state_dict)
        last_lr = values.pop("_last_lr")
        if not isinstance(last_lr, list) or len(last_lr) != 1:
            raise ValueError("%s: _last_lr must be a list of one learning rate" % fn)
        try:
            new = check_all(fn, dict(self._constraints, **_COMMON_STATE), **values)
            new["_last_lr"] = [check(fn, "_last_lr[0]", last_lr[0], Real(0))]
        except TypeError as exc:          # in loaded data a wrong type is a bad value
            raise ValueError(str(exc)) from None
        return new

    def __repr__(self):
        return "%s(last_epoch=%d, lr=%r)" % (type(self).__name__, self.last_epoch,
                                             self.optimizer.lr)


class StepLR(LRScheduler):
    """lr = initial_lr * gamma ** (epoch // step_size)."""

    _constraints = {"step_size": Integer(1), "gamma": Real(0)}

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        super().__init__(optimizer, last_epoch, step_size=step_size, gamma=gamma)

    def _next_lr(self, lr):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return lr
        return lr * self.gamma


class ExponentialLR(LRScheduler):
    """lr = initial_lr * gamma ** epoch."""

    _constraints = {"gamma": Real(0)}

    def __init__(self, optimizer, gamma, last_epoch=-1):
        super().__init__(optimizer, last_epoch, gamma=gamma)

    def _next_lr(self, lr):
        return lr if self._initial else lr * self.gamma


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (initial_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 for
    epoch <= T_max, continuing periodically after it (torch's recursive form)."""

    _constraints = {"T_max": Integer(1), "eta_min": Real(0)}

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        super().__init__(optimizer, last_epoch, T_max=T_max, eta_min=eta_min)

    def _next_lr(self, lr):
        t, T, lo = self.last_epoch, self.T_max, self.eta_min
        if self._initial:
            return lr
        if (t - 1 - T) % (2 * T) == 0:
            return lr + (self.base_lr - lo) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T)) \
            * (lr - lo) + lo
