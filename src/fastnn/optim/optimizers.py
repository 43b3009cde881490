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
import numbers

import numpy as np

from ..core import generation as _generation
from ..core.backend import backend, threads_for
from ..core.validation import Bool, Constraint, Integer, Real, check, check_all
from ..layers.base import Module, Parameter

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]

#: the largest step count an optimizer state may hold (exact in a float64)
MAX_STEP = 2 ** 53


class _Pair(Constraint):
    """Two values (a tuple or list), each satisfying `item`; converted to a tuple."""

    def __init__(self, item):
        self.item = item

    def describe(self):
        return "a pair, each %s" % self.item.describe()

    def accepts_type(self, value):
        return (isinstance(value, (tuple, list)) and len(value) == 2
                and all(self.item.accepts_type(v) for v in value))

    def convert(self, value):
        return tuple(self.item.convert(v) for v in value)

    def in_range(self, value):
        return all(self.item.in_range(v) for v in value)


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
    state, `step`, `zero_grad`, `lr`, `state_dict` / `load_state_dict`.

    A subclass declares its hyperparameters in `_constraints` (name -> constraint of
    `fastnn.core.validation`) and cross-argument rules in `_check_group`; the same
    checks run at construction and in `load_state_dict`."""

    #: names of the per-parameter state arrays (besides the int "step")
    _state_names = ()
    #: hyperparameter name -> constraint
    _constraints = {"lr": Real(0)}

    def __init__(self, params, hyper):
        fn = type(self).__name__
        self._params = _param_list(params, fn)
        self._group = self._check_group(fn, hyper)
        self._state = [dict() for _ in self._params]
        self._flat = _FlatParams.build(self._params)

    @classmethod
    def _check_group(cls, fn, hyper):
        """{name: converted value} of a hyperparameter dict, or TypeError / ValueError."""
        return check_all(fn, cls._constraints, **hyper)

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
        self._group["lr"] = check(type(self).__name__, "lr", value, self._constraints["lr"])

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
        optimizer type over parameters of the same shapes. Everything is validated
        before anything changes; the parameters stay where they are (in this
        optimizer's flat buffer, so the fused update keeps running)."""
        group, new_state = self._checked_state_dict(state_dict)
        self._group = group
        self._state = new_state
        if self._flat is not None:
            self._flat.state.clear()    # rebuilt (copying the loaded arrays) at next step

    def check_state_dict(self, state_dict):
        """ValueError unless `load_state_dict` would take `state_dict`; changes nothing."""
        self._checked_state_dict(state_dict)

    def _checked_state_dict(self, state_dict):
        """(hyperparameters, per-parameter state copies) of a valid state_dict."""
        fn = "%s.load_state_dict" % type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("%s: expected a dict with keys 'state' and 'param_groups'" % fn)
        return (self._loaded_group(fn, state_dict["param_groups"]),
                self._loaded_state(fn, state_dict["state"]))

    def _loaded_group(self, fn, groups):
        """The checked hyperparameters of a state_dict's "param_groups"."""
        if not isinstance(groups, (list, tuple)) or len(groups) != 1 \
                or not isinstance(groups[0], dict):
            raise ValueError("%s: expected one parameter group" % fn)
        group = dict(groups[0])
        ids = group.pop("params", None)
        if not isinstance(ids, (list, tuple)) or list(ids) != list(range(len(self._params))):
            raise ValueError("%s: the saved optimizer has %s parameters, this one has %d"
                             % (fn, len(ids) if isinstance(ids, (list, tuple)) else "?",
                                len(self._params)))
        initial_lr = group.pop("initial_lr", None)
        if set(group) != set(self._constraints):
            raise ValueError("%s: hyperparameters %s do not match %s's %s"
                             % (fn, sorted(group), type(self).__name__,
                                sorted(self._constraints)))
        checked = _as_value_error(self._check_group, fn, group)
        if initial_lr is not None:
            checked["initial_lr"] = _as_value_error(check, fn, "initial_lr", initial_lr, Real(0))
        return checked

    def _loaded_state(self, fn, raw):
        """Per-parameter state dicts (copies) from a state_dict's "state"."""
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
                    new_state[key][name] = _as_value_error(
                        check, fn, "state[%d]['step']" % key, v, Integer(0, MAX_STEP))
                elif name in self._state_names:
                    if not isinstance(v, np.ndarray) or v.dtype.kind != "f" or v.size != p.size:
                        raise ValueError("%s: state[%d][%r] must be a float array of %d "
                                         "elements, got %r" % (fn, key, name, p.size,
                                                               getattr(v, "shape", v)))
                    new_state[key][name] = np.array(v.reshape(-1), dtype=p.dtype, copy=True)
                else:
                    raise ValueError("%s: unknown state %r for %s"
                                     % (fn, name, type(self).__name__))
        return new_state


def _as_value_error(fn, *args):
    """fn(*args), a TypeError re-raised as ValueError: in loaded data a value of the
    wrong type is a bad value."""
    try:
        return fn(*args)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


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
    _constraints = {"lr": Real(0), "momentum": Real(0), "dampening": Real(),
                    "nesterov": Bool(), "weight_decay": Real(0)}

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay))

    @classmethod
    def _check_group(cls, fn, hyper):
        group = super()._check_group(fn, hyper)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("%s: Nesterov momentum requires a momentum > 0 and zero "
                             "dampening, got momentum=%r, dampening=%r"
                             % (fn, group["momentum"], group["dampening"]))
        return group

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
    _constraints = {"lr": Real(0), "eps": Real(0), "weight_decay": Real(0),
                    "lr_decay": Real(0), "initial_accumulator_value": Real(0)}

    def __init__(self, params, lr=0.01, eps=1e-10, weight_decay=0.0, lr_decay=0.0,
                 initial_accumulator_value=0.0):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay,
                                      lr_decay=lr_decay,
                                      initial_accumulator_value=initial_accumulator_value))

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
    _constraints = {"lr": Real(0), "alpha": Real(0), "eps": Real(0), "momentum": Real(0),
                    "weight_decay": Real(0)}

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                                      weight_decay=weight_decay))

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
    _constraints = {"lr": Real(0), "betas": _Pair(Real(0, 1, closed="left")), "eps": Real(0),
                    "weight_decay": Real(0)}
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

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
