"""Optimizers with torch.optim's names, arguments, defaults and update formulas.

Every update runs through the active backend's fused kernel (`sgd_step`,
`adagrad_step`, `rmsprop_step`, `adam_step` of `fastnn.kernels`), one call per
parameter, on flat 1-D views: `p.data.reshape(-1)` (a view, since Parameter arrays are
C-contiguous), the matching gradient view, and the optimizer's state, which is kept as
flat contiguous arrays (one per buffer per parameter, allocated at the first step, in
the parameter's dtype). A later pass can lay all parameters in one flat buffer and make
these per-parameter arrays views of a flat state buffer without changing this API.

`step()` raises RuntimeError when a parameter's gradient was never computed (no
backward since construction or `zero_grad()`), instead of silently skipping it.

>>> import numpy as np
>>> from fastnn.layers import Dense
>>> from fastnn.optim import Adam
>>> layer = Dense(3, 2, rng=0)
>>> opt = Adam(layer.parameters(), lr=1e-2)
>>> y = layer(np.ones((4, 3), np.float32)); _ = layer.backward(np.ones_like(y))
>>> opt.step(); opt.zero_grad()
"""
import math
import numbers

import numpy as np

from ..core import generation as _generation
from ..core.backend import backend, threads_for
from ..layers.base import Module, Parameter

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]


def _number(value, fn, name, low=None, high=None, high_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError("%s: %s must be a number, got %r" % (fn, name, value))
    value = float(value)
    bad = not math.isfinite(value) or (low is not None and value < low)
    if high is not None:
        bad = bad or (value >= high if high_open else value > high)
    if bad:
        rng = "[%s, %s%s" % ("-inf" if low is None else low, "inf" if high is None else high,
                             ")" if high_open or high is None else "]")
        raise ValueError("%s: invalid %s: expected a finite number in %s, got %r"
                         % (fn, name, rng, value))
    return value


def _param_list(params, fn):
    if isinstance(params, Module):
        params = params.parameters()
    elif isinstance(params, Parameter):
        raise TypeError("%s: params must be an iterable of Parameters (e.g. "
                        "model.parameters()), got a single Parameter" % fn)
    try:
        params = list(params)
    except TypeError:
        raise TypeError("%s: params must be an iterable of Parameters, got %s"
                        % (fn, type(params).__name__)) from None
    if not params:
        raise ValueError("%s: optimizer got an empty parameter list" % fn)
    seen = set()
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError("%s: params[%d] must be a fastnn Parameter, got %s"
                            % (fn, i, type(p).__name__))
        if id(p) in seen:
            raise ValueError("%s: params[%d] (%s) appears more than once" % (fn, i, p.name))
        seen.add(id(p))
    return params


class Optimizer:
    """Base class: one group of parameters and hyperparameters (`param_groups[0]`, a
    live dict as in torch, so torch-style `g["lr"] = ...` works too), per-parameter flat
    state, `step`, `zero_grad`, `lr`, `state_dict` / `load_state_dict`."""

    #: names of the per-parameter state arrays (besides the int "step")
    _state_names = ()

    def __init__(self, params, hyper):
        fn = type(self).__name__
        self._params = _param_list(params, fn)
        self._group = dict(hyper)
        self._state = [dict() for _ in self._params]
        self._flat = _FlatParams.build(self._params)

    # ----------------------------------------------------------------- hyperparameters
    @property
    def param_groups(self):
        return [self._group]

    @property
    def params(self):
        return list(self._params)

    @property
    def lr(self):
        return self._group["lr"]

    @lr.setter
    def lr(self, value):
        self._group["lr"] = _number(value, type(self).__name__, "lr", low=0.0)

    def __getattr__(self, name):
        group = self.__dict__.get("_group")
        if group is not None and name in group:
            return group[name]
        raise AttributeError("%s has no attribute %r" % (type(self).__name__, name))

    def state_arrays(self):
        """Names of the per-parameter state arrays this optimizer keeps with its
        hyperparameters (each the size of the parameters), e.g. Adam's exp_avg and
        exp_avg_sq; SGD without momentum keeps none."""
        return self._state_names

    def state_nbytes(self):
        """Bytes of state the optimizer keeps: one parameter-sized array per name of
        `state_arrays()` (the int step counters aside)."""
        return len(self.state_arrays()) * sum(p.data.nbytes for p in self._params)

    def __repr__(self):
        hyper = ", ".join("%s=%r" % kv for kv in self._group.items() if kv[0] != "initial_lr")
        return "%s(%d parameters, %s)" % (type(self).__name__, len(self._params), hyper)

    # ----------------------------------------------------------------------- stepping
    def zero_grad(self):
        """Zero every gradient (marking it as not computed until the next backward)."""
        for p in self._params:
            p.grad = None

    def _check_grads(self):
        missing = []
        for i, p in enumerate(self._params):
            if not p._grad_ready:
                if p.grad.any():          # written in place by the caller
                    p._grad_ready = True
                else:
                    missing.append(p.name or "params[%d]" % i)
        if missing:
            raise RuntimeError("%s.step: no gradient was computed for %s; call "
                               "model.backward(...) (or assign p.grad) before step()"
                               % (type(self).__name__, ", ".join(missing)))

    def _buffer(self, i, name, p, fill=0.0):
        """State array `name` of parameter i (flat, contiguous, the parameter's dtype), or
        with i None the flat state over all parameters (p is then the _FlatParams),
        whose per-parameter views are what state_dict() shows."""
        if i is None:
            buf = self._flat.state.get(name)
            if buf is None:
                buf = self._flat.new_state(name, [st.get(name) for st in self._state], fill)
                for st, view in zip(self._state, self._flat.views(buf)):
                    st[name] = view
            return buf
        buf = self._state[i].get(name)
        if buf is None or buf.dtype != p.dtype:
            buf = np.full(p.size, fill, p.dtype) if buf is None else buf.astype(p.dtype)
            self._state[i][name] = buf
        return buf

    def _next_step(self, i):
        """Increment and return the step count of parameter i (of all when i is None)."""
        states = self._state if i is None else (self._state[i],)
        for st in states:
            st["step"] = st.get("step", 0) + 1
        return states[0]["step"]

    def step(self):
        """Update every parameter once from its .grad with the backend's fused kernel:
        one call over all parameters at once when they live in one flat buffer."""
        self._check_grads()
        kernels = backend()
        flat = self._flat
        if flat is not None and flat.usable(self._state, self._state_names):
            self._update(kernels, None, flat, flat.data, flat.grad, threads_for(flat.size))
            return
        for i, p in enumerate(self._params):
            self._update(kernels, i, p, p.data.reshape(-1), p.grad.reshape(-1),
                         threads_for(p.size))

    def _update(self, kernels, i, p, data, grad, nthreads):
        raise NotImplementedError

    # -------------------------------------------------------------------- state dicts
    def state_dict(self):
        """{"state": {i: {name: flat array copy, "step": int}}, "param_groups":
        [{hyperparameters..., "params": [0, 1, ...]}]} (torch's layout)."""
        state = {}
        for i, s in enumerate(self._state):
            if s:
                state[i] = {k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v)
                            for k, v in s.items()}
        group = dict(self._group)
        group["params"] = list(range(len(self._params)))
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state from `state_dict()` output of the same
        optimizer type over parameters of the same shapes. Validates everything first."""
        fn = "%s.load_state_dict" % type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("%s: expected a dict with keys 'state' and 'param_groups'" % fn)
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != 1 \
                or not isinstance(groups[0], dict):
            raise ValueError("%s: expected one parameter group" % fn)
        group = dict(groups[0])
        ids = group.pop("params", None)
        if ids is None or len(ids) != len(self._params):
            raise ValueError("%s: the saved optimizer has %s parameters, this one has %d"
                             % (fn, "?" if ids is None else len(ids), len(self._params)))
        known = set(self._group) | {"initial_lr"}
        if not set(group) <= known or not set(self._group) <= set(group):
            raise ValueError("%s: hyperparameters %s do not match %s's %s"
                             % (fn, sorted(group), type(self).__name__, sorted(self._group)))
        check = type(self)(self._params, **{k: v for k, v in group.items() if k != "initial_lr"})
        raw = state_dict["state"]
        if not isinstance(raw, dict):
            raise ValueError("%s: 'state' must be a dict" % fn)
        new_state = [dict() for _ in self._params]
        for key, s in raw.items():
            if isinstance(key, bool) or not isinstance(key, numbers.Integral) \
                    or not 0 <= key < len(self._params) or not isinstance(s, dict):
                raise ValueError("%s: bad state entry %r" % (fn, key))
            p = self._params[key]
            for name, v in s.items():
                if name == "step":
                    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                        raise ValueError("%s: state[%d]['step'] must be an int >= 0, got %r"
                                         % (fn, key, v))
                    new_state[key][name] = int(v)
                elif name in self._state_names:
                    if not isinstance(v, np.ndarray) or v.dtype.kind != "f" or v.size != p.size:
                        raise ValueError("%s: state[%d][%r] must be a float array of %d "
                                         "elements, got %r" % (fn, key, name, p.size,
                                                               getattr(v, "shape", v)))
                    new_state[key][name] = np.array(v.reshape(-1), dtype=p.dtype, copy=True)
                else:
                    raise ValueError("%s: unknown state %r for %s"
                                     % (fn, name, type(self).__name__))
        self._group = dict(check._group)
        if "initial_lr" in group:
            self._group["initial_lr"] = float(group["initial_lr"])
        self._state = new_state
        if self._flat is not None:
            self._flat.state.clear()    # rebuilt (copying the loaded arrays) at next step


class _FlatParams:
    """All parameters of an optimizer in one flat buffer (data) and one for the grads:
    each Parameter's .data / .grad become views into them, so one fused kernel call
    updates every parameter, and its state lives in flat buffers of the same layout."""

    def __init__(self, params, dtype):
        sizes = [p.size for p in params]
        self.params = params
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.size = self.offsets[-1]
        self.data = np.empty(self.size, dtype)
        self.grad = np.empty(self.size, dtype)
        self.dtype = np.dtype(dtype)
        self.state = {}
        for p, view_d, view_g in zip(params, self.views(self.data), self.views(self.grad)):
            view_d[...] = p._data.reshape(-1)
            view_g[...] = p._grad.reshape(-1)
            p._data, p._grad = view_d.reshape(p.shape), view_g.reshape(p.shape)
            p._storage = self.data
        _generation.changed(params)

    @classmethod
    def build(cls, params):
        """A _FlatParams when it pays and is safe: several parameters of one dtype, none
        repeated; otherwise None (the optimizer updates parameter by parameter)."""
        if len(params) < 2 or len({id(p) for p in params}) != len(params):
            return None
        if len({p.dtype for p in params}) != 1:
            return None
        return cls(params, params[0].dtype)

    def views(self, flat):
        o = self.offsets
        return [flat[o[k]:o[k + 1]] for k in range(len(self.params))]

    def new_state(self, name, current, fill):
        """A flat state buffer, initialised from existing per-parameter arrays (e.g. a
        loaded state_dict) where there are any."""
        buf = np.full(self.size, fill, self.dtype)
        for view, arr in zip(self.views(buf), current):
            if arr is not None:
                view[...] = arr
        self.state[name] = buf
        return buf

    def usable(self, states, names):
        """True while every parameter still lives in the flat buffer (a later optimizer
        or `Module.to(dtype)` may have moved it) and the parameters' states agree (same
        step, same buffers present, every buffer a view of the flat state)."""
        for p in self.params:
            if p._storage is not self.data:
                return False
        first = states[0]
        for st in states:
            if st.get("step") != first.get("step") or st.keys() != first.keys():
                return False
        for name in names:
            flat = self.state.get(name)
            if name in first and (flat is None or states[0][name].base is not flat):
                if flat is not None:
                    return False
                # loaded or per-parameter state: adopt it into a flat buffer
                buf = self.new_state(name, [st[name] for st in states], 0.0)
                for st, view in zip(states, self.views(buf)):
                    st[name] = view
        return True


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and L2
    weight decay (torch.optim.SGD): d = g + wd * p; buf = momentum * buf + (1 -
    dampening) * d (buf = d at the first step); d = d + momentum * buf (nesterov) or buf;
    p -= lr * d."""

    _state_names = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        fn = "SGD"
        lr = _number(lr, fn, "lr", low=0.0)
        momentum = _number(momentum, fn, "momentum", low=0.0)
        dampening = _number(dampening, fn, "dampening")
        weight_decay = _number(weight_decay, fn, "weight_decay", low=0.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError("SGD: nesterov must be True or False, got %r" % (nesterov,))
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum > 0 and zero "
                             "dampening, got momentum=%r, dampening=%r" % (momentum, dampening))
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=bool(nesterov), weight_decay=weight_decay))

    def state_arrays(self):
        return self._state_names if self._group["momentum"] else ()

    def _update(self, kernels, i, p, data, grad, nthreads):
        g = self._group
        momentum = g["momentum"]
        buf, first = None, False
        if momentum:
            first = "momentum_buffer" not in self._state[0 if i is None else i]
            buf = self._buffer(i, "momentum_buffer", p)
        kernels.sgd_step(data, grad, buf, g["lr"], momentum, g["dampening"], g["nesterov"],
                         g["weight_decay"], first, nthreads)


class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad): d = g + wd * p; sum += d^2;
    p -= clr * d / (sqrt(sum) + eps), clr = lr / (1 + (step - 1) * lr_decay)."""

    _state_names = ("sum",)

    def __init__(self, params, lr=0.01, eps=1e-10, weight_decay=0.0, lr_decay=0.0,
                 initial_accumulator_value=0.0):
        fn = "Adagrad"
        super().__init__(params, dict(
            lr=_number(lr, fn, "lr", low=0.0), eps=_number(eps, fn, "eps", low=0.0),
            weight_decay=_number(weight_decay, fn, "weight_decay", low=0.0),
            lr_decay=_number(lr_decay, fn, "lr_decay", low=0.0),
            initial_accumulator_value=_number(initial_accumulator_value, fn,
                                              "initial_accumulator_value", low=0.0)))

    def _update(self, kernels, i, p, data, grad, nthreads):
        g = self._group
        state_sum = self._buffer(i, "sum", p, fill=g["initial_accumulator_value"])
        step = self._next_step(i)
        clr = g["lr"] / (1 + (step - 1) * g["lr_decay"])
        kernels.adagrad_step(data, grad, state_sum, clr, g["eps"], g["weight_decay"],
                             nthreads)


class RMSprop(Optimizer):
    """RMSprop, not centred (torch.optim.RMSprop): d = g + wd * p;
    v = alpha * v + (1 - alpha) * d^2; with momentum: buf = momentum * buf + d /
    (sqrt(v) + eps), p -= lr * buf; else p -= lr * d / (sqrt(v) + eps)."""

    _state_names = ("square_avg", "momentum_buffer")

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        fn = "RMSprop"
        super().__init__(params, dict(
            lr=_number(lr, fn, "lr", low=0.0), alpha=_number(alpha, fn, "alpha", low=0.0),
            eps=_number(eps, fn, "eps", low=0.0),
            momentum=_number(momentum, fn, "momentum", low=0.0),
            weight_decay=_number(weight_decay, fn, "weight_decay", low=0.0)))

    def state_arrays(self):
        return self._state_names if self._group["momentum"] else self._state_names[:1]

    def _update(self, kernels, i, p, data, grad, nthreads):
        g = self._group
        self._next_step(i)
        buf = self._buffer(i, "momentum_buffer", p) if g["momentum"] else None
        kernels.rmsprop_step(data, grad, self._buffer(i, "square_avg", p), buf, g["lr"],
                             g["alpha"], g["eps"], g["momentum"], g["weight_decay"], nthreads)


class Adam(Optimizer):
    """Adam (torch.optim.Adam, L2 weight decay added to the gradient):
    m = b1 m + (1 - b1) d; v = b2 v + (1 - b2) d^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""

    _state_names = ("exp_avg", "exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        fn = type(self).__name__
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError("%s: betas must be a pair of numbers, got %r" % (fn, betas)) from None
        b1 = _number(b1, fn, "beta parameter at index 0", low=0.0, high=1.0, high_open=True)
        b2 = _number(b2, fn, "beta parameter at index 1", low=0.0, high=1.0, high_open=True)
        super().__init__(params, dict(
            lr=_number(lr, fn, "lr", low=0.0), betas=(b1, b2),
            eps=_number(eps, fn, "eps", low=0.0),
            weight_decay=_number(weight_decay, fn, "weight_decay", low=0.0)))

    def _update(self, kernels, i, p, data, grad, nthreads):
        g = self._group
        step = self._next_step(i)
        b1, b2 = g["betas"]
        kernels.adam_step(data, grad, self._buffer(i, "exp_avg", p),
                          self._buffer(i, "exp_avg_sq", p), g["lr"], b1, b2, g["eps"],
                          g["weight_decay"], step, self._decoupled, nthreads)


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay p *= 1 - lr * wd
    applied before the Adam update; weight_decay=0.01 by default."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
