"""Parameter and Module: what every fastnn layer and container builds on.

Copy semantics (why there are two forward/backward paths)
----------------------------------------------------------
Layers call `fastnn.ops` with a per-layer `Workspace`, so a warm training step
allocates nothing: every output, cache and gradient lives in an array the layer reuses
on the next call, and each `Parameter.grad` is bound into the workspace so the kernels
write the gradient straight into it.

* `_forward(x)` / `_backward(dy, need_dx=True)` are the internal, no-copy path used by
  containers (`fastnn.layers.Sequential`) and training loops. They return workspace
  arrays that stay valid only until the same module's next `_forward` / `_backward`
  (a workspace keeps the arrays of its last few input shapes,
  `fastnn.core.workspace.SHAPES_KEPT`, so memory stays bounded whatever the batch
  sizes). `_forward` expects a C-contiguous array of the module's dtype (what the
  previous layer produced);
  `_backward(..., need_dx=False)` may skip the input gradient (returns None) when the
  caller does not need it, e.g. for the first Dense of a network.
* `forward(x)` / `__call__` / `backward(dy)` are the public path: they validate and
  convert the user's array once (to the model's dtype, copied into a workspace buffer so
  later changes to the caller's array cannot corrupt the cached input), run the internal
  path, and return a fresh copy that later calls never overwrite.

`backward` overwrites every Parameter.grad (no accumulation) and uses what the last
forward cached.

Threads: the public `forward` / `__call__` / `backward` of a module hold that module's
lock (a re-entrant lock, about 0.2 us uncontended), so several Python threads may call
one model at once -- e.g. eval-mode inference from a thread pool -- and each gets the
correct result; the calls run one at a time (the kernels inside still use OpenMP/BLAS
threads). The lock covers the module it is taken on and everything that call runs, not
concurrent calls made directly on its submodules (`model[0](x)` while another thread runs
`model(x)` races on `model[0]`'s buffers), nor the internal `_forward` / `_backward`
path. Concurrent training of one model is not meaningful (backward uses the last
forward of any thread), and a user subclass that overrides `forward` / `backward`
provides its own locking. A model has one dtype (float32 by default, float64 supported): the
public path converts float inputs of another float dtype; integer, bool, complex and
object inputs raise TypeError.

>>> import numpy as np
>>> from fastnn.layers import Sequential, Dense, ReLU
>>> model = Sequential(Dense(3, 4, rng=0), ReLU(), Dense(4, 2, rng=1))
>>> y = model(np.ones((5, 3), np.float32))
>>> dx = model.backward(np.ones_like(y))
>>> sorted(model.state_dict())
['0.bias', '0.weight', '2.bias', '2.weight']
"""
import math
import threading

import numpy as np

from ..core import generation
from ..core.validation import (FLOAT_DTYPES, as_user_float, check_bool, check_dtype,
                               describe)
from ..core.workspace import Workspace

# byte-swapped float32/float64 inputs keep their precision
_NATIVE_FLOAT = {("f", 4): np.dtype(np.float32), ("f", 8): np.dtype(np.float64)}

#: layer type name -> class, for persistence (fastnn.io); filled by @register.
REGISTRY = {}


def register(cls):
    """Class decorator: make a built-in layer loadable by name (fastnn.load)."""
    REGISTRY[cls.__name__] = cls
    return cls


#: attributes the layers set on every call (what the last call cached), which never
#: change what a recorded kernel program (fastnn.layers.replay) computes
_PER_CALL = frozenset(("_cache",))

#: a subclass defining one of these computes something else than its base, so it is
#: recordable only if it says so itself (see Module.recordable)
_COMPUTATION = ("forward", "backward", "_forward", "_backward")

#: element of a Module's version stamp mirroring its train/eval mode
_MODE = 1

#: one as a 0-d int64 array: adding it to a counter allocates nothing (a Python 1 would)
_ONE = np.ones((), np.int64)
_ONE.flags.writeable = False


def count_one(counter):
    """Add one to a 0-d int64 counter array in place (see Module.forward_counters)."""
    np.add(counter, _ONE, out=counter)


# --------------------------------------------------------------------------- Parameter
class Parameter:
    """A learnable array: `.data` (C-contiguous float ndarray), `.grad` (same shape and
    dtype, written by `Module.backward`) and an optional `.name`.

    Assigning `p.data = a` or `p.grad = a` copies `a` into the existing array (same
    shape required), so workspaces and optimizers that hold the arrays stay valid.

    >>> import numpy as np
    >>> p = Parameter(np.zeros((2, 3), np.float32), name="weight")
    >>> p.grad.shape, p.grad.dtype
    ((2, 3), dtype('float32'))
    """

    def __init__(self, data, name=None):
        data = as_user_float(data, "Parameter", "data")
        dt = data.dtype if data.dtype in FLOAT_DTYPES else np.dtype(np.float32)
        self._data = np.array(data, dtype=dt, order="C", copy=True)
        self._grad = np.zeros_like(self._data)
        # True once a gradient was written (backward or `p.grad = ...`); zero_grad clears it
        self._grad_ready = False
        self.name = name
        # the flat buffer (an optimizer's) that .data is a view of, or None
        self._storage = None
        self._stamp = generation.stamp()     # changes when .data / .grad are rebound

    def mark_changed(self):
        """Recorded kernel programs using this parameter are stale (call after rebinding
        its arrays, as an optimizer's flat buffer does)."""
        generation.bump_stamp(self._stamp)

    @property
    def data(self):
        return self._data

    @data.setter
    def data(self, value):
        self._assign(self._data, value, "data")

    @property
    def grad(self):
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is None:          # torch's `p.grad = None`: forget the gradient
            self._grad.fill(0)
            self._grad_ready = False
            return
        self._assign(self._grad, value, "grad")
        self._grad_ready = True

    def _assign(self, target, value, what):
        where = "Parameter %s" % (self.name or "")
        value = as_user_float(value, where.strip(), what)
        if value.shape != target.shape:
            raise ValueError("%s: %s must have shape %s, got %s"
                             % (where.strip(), what, target.shape, describe(value)))
        np.copyto(target, value, casting="same_kind")

    def _astype(self, dtype):
        if self._data.dtype != dtype:
            self._data = self._data.astype(dtype)
            self._grad = self._grad.astype(dtype)
            self._storage = None      # no longer a view of an optimizer's flat buffer
            self.mark_changed()

    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def size(self):
        return self._data.size

    def __repr__(self):
        return "Parameter(name=%r, shape=%s, dtype=%s)" % (self.name, self.shape, self.dtype)


# ------------------------------------------------------------------------------ Module
class Module:
    """Base class of every layer and container.

    Two paths (details in this file's module docstring):

    * public `forward(x)` / `__call__` / `backward(dy)`: validate and convert the
      user's array once (to the model's dtype), and return fresh arrays that later
      calls never overwrite;
    * internal `_forward(x)` / `_backward(dy, need_dx=True)`: what containers and the
      training loop use; they hand out the layer's workspace arrays (valid until that
      layer's next call), allocate nothing once warm, and `need_dx=False` lets the
      first layer skip its input gradient.

    Every Parameter.grad is bound into the layer's workspace, so the kernels write
    gradients straight into it; `backward` overwrites them (no accumulation).

    Thread safety: public `forward` / `__call__` / `backward` take this module's lock,
    so concurrent calls on one model (e.g. eval-mode inference from several threads)
    are serialised and each returns its correct result (see the module docstring for
    what the lock does not cover).

    Subclasses implement `_forward(x)` and `_backward(dy, need_dx)`; a user's own
    subclass may instead override `forward` and `backward` directly (then those are
    used inside containers too). Attributes holding a `Parameter` or a `Module` are
    registered automatically (in assignment order); buffers (non-learnable state such
    as BatchNorm's running statistics) with `register_buffer`.

    Facts about a layer live on its type, and tools ask them instead of testing for
    classes (each built-in layer overrides what differs from these defaults):

    * `recordable` (class attribute, False): the layer's `_forward` / `_backward` do
      nothing but validated compiled-kernel calls into its workspaces, so a Sequential
      made only of recordable layers may record and replay them
      (`fastnn.layers.replay`). A subclass that defines `forward`, `backward`,
      `_forward` or `_backward` is recordable only if it sets `recordable` itself.
    * `stochastic` (class attribute, False): the layer draws random numbers in training
      mode (Dropout); a gradient check runs it in eval mode.
    * `output_shape(input_shape)`, `train_memory(input_shape, itemsize, first)`,
      `watch_kind()`, `flat_layers()`, `forward_counters(training)`: see each method.

    Recorded programs notice changes through a version stamp (`fastnn.core.generation`):
    assigning an attribute, `train()` / `eval()`, `.to()` and `register_buffer` update
    it; code that changes a module's state some other way calls `mark_changed()`.
    """

    recordable = False
    stochastic = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "recordable" not in cls.__dict__ and any(n in cls.__dict__ for n in _COMPUTATION):
            cls.recordable = False

    def __init__(self):
        object.__setattr__(self, "_stamp", generation.stamp(2))   # [changes, training]
        self._stamp[_MODE] = 1
        # names in registration order (dict keys: O(1) membership, so building or
        # loading a model of n layers takes O(n))
        object.__setattr__(self, "_param_names", {})
        object.__setattr__(self, "_module_names", {})
        object.__setattr__(self, "_buffer_names", {})
        object.__setattr__(self, "_ws", Workspace())
        object.__setattr__(self, "_path", None)
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_out", None)    # output of the last public forward
        object.__setattr__(self, "_lock", threading.RLock())   # public forward/backward

    def __getstate__(self):
        """copy.deepcopy / pickle: everything but the lock (not copyable)."""
        state = dict(self.__dict__)
        state.pop("_lock", None)
        state.pop("_replays", None)      # recorded kernel programs: per process
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        object.__setattr__(self, "_lock", threading.RLock())

    def __setattr__(self, name, value):
        d = self.__dict__
        if "_param_names" not in d:
            raise RuntimeError("%s: call Module.__init__() before assigning attributes"
                               % type(self).__name__)
        if name not in _PER_CALL:
            generation.bump_stamp(d["_stamp"])      # may change what a recorded program computes
        if name == "training":
            value = check_bool(value, self._label(), "training")
            d["_stamp"][_MODE] = value
        if isinstance(value, Parameter):
            old = d.get(name)
            if isinstance(old, Parameter) and (old.shape != value.shape
                                               or old.dtype != value.dtype):
                # the layer's kernels and workspaces are sized for the old one
                raise ValueError("%s: parameter %r must be replaced by one of the same "
                                 "shape and dtype %s %s, got %s %s"
                                 % (self._label(), name, old.shape, old.dtype, value.shape,
                                    value.dtype))
            if value.name is None:
                value.name = name
            if name not in self._param_names:
                self._param_names[name] = None
        elif isinstance(value, Module):
            if name not in self._module_names:
                self._module_names[name] = None
        elif name in self._param_names:
            if value is not None:
                raise TypeError("%s: cannot assign %s to parameter %r (expected a Parameter)"
                                % (self._label(), type(value).__name__, name))
            del self._param_names[name]
        elif name in self._module_names:
            if value is not None:
                raise TypeError("%s: cannot assign %s to submodule %r (expected a Module)"
                                % (self._label(), type(value).__name__, name))
            del self._module_names[name]
        elif name in self._buffer_names and name in d:
            # a buffer is updated in place by the kernels: copy values into it
            buf = d[name]
            value = as_user_float(value, self._label(), name)
            if value.shape != buf.shape:
                raise ValueError("%s: buffer %s must have shape %s, got %s"
                                 % (self._label(), name, buf.shape, describe(value)))
            np.copyto(buf, value, casting="same_kind")
            return
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """Register a float ndarray as non-learnable state saved in the state_dict."""
        arr = np.ascontiguousarray(array)
        if arr.dtype not in FLOAT_DTYPES:
            raise TypeError("%s: buffer %s must be float32 or float64, got %s"
                            % (self._label(), name, describe(arr)))
        if name not in self._buffer_names:
            self._buffer_names[name] = None
        object.__setattr__(self, name, arr)
        self.mark_changed()

    def mark_changed(self):
        """Recorded kernel programs using this module are stale (for changes made behind
        the attributes' back; assignments, modes and dtypes are noticed already)."""
        generation.bump_stamp(self._stamp)

    # ------------------------------------------------------------- naming and errors
    def _label(self):
        """How error messages name this layer, e.g. "Sequential[1] Dense(in_features=..)"."""
        text = "%s(%s)" % (type(self).__name__, self.extra_repr())
        return text if self._path is None else "%s %s" % (self._path, text)

    def _error(self, exc, message):
        return exc("%s: %s" % (self._label(), message))

    def extra_repr(self):
        return ""

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, self.extra_repr())

    # ------------------------------------------------------------------------ facts
    def output_shape(self, input_shape):
        """The output shape (batch first) for an input of `input_shape`; ValueError
        naming the layer when that input does not fit it."""
        raise TypeError("%s does not declare its output shape" % type(self).__name__)

    def train_memory(self, input_shape, itemsize, first):
        """(kept, grads) in bytes for a training step on an input of `input_shape` with
        elements of `itemsize` bytes: what the layer keeps for its backward (its output
        and whatever else its backward reads) and the activation gradients it allocates
        (its input gradient unless it is the `first` layer, plus internal ones)."""
        raise TypeError("%s does not declare its training memory" % type(self).__name__)

    def watch_kind(self):
        """What the diagnostics monitor checks at this layer's output: "relu" (dead
        units), "sigmoid" or "tanh" (saturation), or None."""
        return None

    def flat_layers(self):
        """The leaf layers this module applies, in order ([self] for a leaf)."""
        return [self]

    def forward_counters(self, training):
        """The 0-d int64 arrays this layer's forward in mode `training` adds one to (e.g.
        BatchNorm's num_batches_tracked); a replayed forward (fastnn.layers.replay) adds
        one to them too."""
        return ()

    def _check_features(self, shape, features, got):
        """ValueError naming the layer unless `shape` is (N, features); `got` says what
        was given."""
        if len(shape) != 2 or shape[1] != features:
            raise self._error(ValueError, "expected input of shape (N, %d), got %s"
                              % (features, got))

    def _input_grad_nbytes(self, input_shape, itemsize, first):
        """Bytes of the input gradient the layer's backward allocates (none when first)."""
        return 0 if first else math.prod(input_shape) * itemsize

    # ------------------------------------------------------------------ computation
    def _forward(self, x):
        if type(self).forward is not Module.forward:     # a user's subclass
            return self.forward(x)
        raise NotImplementedError("%s does not implement _forward" % type(self).__name__)

    def _backward(self, dy, need_dx=True):
        if type(self).backward is not Module.backward:
            return self.backward(dy)
        raise NotImplementedError("%s does not implement _backward" % type(self).__name__)

    def forward(self, x):
        """y = module(x): a fresh array (see the module docstring). Thread-safe: holds
        this module's lock."""
        with self._lock:
            out = self._public_forward(x)
            object.__setattr__(self, "_out", (out.shape, out.dtype))
            return out

    def _public_forward(self, x):
        """forward's work under the lock: the user's x validated and copied into the
        input buffer, the internal forward, a fresh copy of its output."""
        return np.array(self._forward(self._prepare_input(x)), order="C", copy=True)

    def __call__(self, x):
        return self.forward(x)

    def backward(self, dy):
        """dx for the last forward, given dy = dLoss/dy (same shape as that output);
        overwrites each Parameter.grad. Returns a fresh array. Holds this module's lock."""
        with self._lock:
            if self._out is None:
                raise self._error(RuntimeError, "backward() called before forward()")
            shape, dtype = self._out
            dy = as_user_float(dy, self._label(), "dout (the gradient passed to backward)")
            if dy.shape != shape:
                raise self._error(ValueError, "dout must have the shape of the last "
                                  "forward's output %s, got %s" % (shape, describe(dy)))
            buf = self._ws.get("__dout", shape, dtype)
            np.copyto(buf, dy, casting="same_kind")
            dx = self._backward(buf, need_dx=True)
            return np.array(dx, order="C", copy=True)

    def _prepare_input(self, x):
        """Validate a user's input once and copy it, in the model's dtype, into a
        workspace buffer."""
        x = as_user_float(x, self._label())
        dt = self.dtype
        if dt is None:
            dt = x.dtype if x.dtype in FLOAT_DTYPES else _NATIVE_FLOAT.get(
                (x.dtype.kind, x.dtype.itemsize), np.dtype(np.float32))
        if x.ndim == 0:
            raise self._error(ValueError, "expected an input with a batch axis, got a scalar")
        if x.size == 0:
            raise self._error(ValueError, "expected a non-empty input, got %s" % describe(x))
        buf = self._ws.get("__input", x.shape, dt)
        np.copyto(buf, x, casting="same_kind")
        return buf

    # ------------------------------------------------------------- parameters, state
    def children(self):
        return [getattr(self, n) for n in self._module_names]

    def modules(self):
        """This module and every submodule, depth first."""
        return [m for _, m in self.named_modules()]

    def _iter_modules(self):
        yield self
        for n in self._module_names:
            yield from getattr(self, n)._iter_modules()

    def named_modules(self, prefix=""):
        """[(qualified name, module)], this module first (name `prefix`)."""
        out = [(prefix, self)]
        for name in self._module_names:
            out.extend(getattr(self, name).named_modules(_join(prefix, name)))
        return out

    def named_parameters(self, prefix=""):
        """[(qualified name, Parameter)], e.g. [("0.weight", p), ("0.bias", q), ...]."""
        out, seen = [], set()
        for mod_name, mod in self.named_modules(prefix):
            for n in mod._param_names:
                p = getattr(mod, n)
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append((_join(mod_name, n), p))
        return out

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        return [(_join(mod_name, n), getattr(mod, n))
                for mod_name, mod in self.named_modules(prefix) for n in mod._buffer_names]

    def _state_items(self):
        """[(key, array)] in torch's order: each module's params, then its buffers."""
        items = []
        for mod_name, mod in self.named_modules():
            items.extend((_join(mod_name, n), getattr(mod, n).data) for n in mod._param_names)
            items.extend((_join(mod_name, n), getattr(mod, n)) for n in mod._buffer_names)
        return items

    def state_dict(self):
        """{"0.weight": array, ..., "1.running_mean": array, ...}: copies of every
        parameter and buffer."""
        return {k: np.array(v, copy=True) for k, v in self._state_items()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers (in place, converting to the
        model's dtype). strict=True: every key must be present and no other key; shapes
        must be equal; float arrays only. Nothing is changed unless everything checks
        out. strict=False loads the keys present in both."""
        fn = "%s.load_state_dict" % type(self).__name__
        if not isinstance(state_dict, dict):
            raise TypeError("%s: expected a dict of arrays, got %s"
                            % (fn, type(state_dict).__name__))
        items = self._state_items()
        expected = [k for k, _ in items]
        missing = [k for k in expected if k not in state_dict]
        extra = [k for k in state_dict if k not in set(expected)]
        strict = check_bool(strict, fn, "strict")
        if not strict:
            items = [(k, t) for k, t in items if k in state_dict]
        elif missing or extra:
            raise ValueError("%s: keys do not match the model: missing %s, unexpected %s"
                             % (fn, missing or "none", extra or "none"))
        checked = []
        for key, target in items:
            value = state_dict[key]
            if not isinstance(value, np.ndarray):
                try:
                    value = np.asarray(value)
                except (TypeError, ValueError):
                    raise TypeError("%s: %s must be an array, got %s"
                                    % (fn, key, type(value).__name__)) from None
            if value.dtype.kind != "f":
                raise TypeError("%s: %s must be a float array, got %s" % (fn, key, describe(value)))
            if value.shape != target.shape:
                raise ValueError("%s: %s must have shape %s, got %s"
                                 % (fn, key, target.shape, describe(value)))
            checked.append((target, value))
        for target, value in checked:
            np.copyto(target, value, casting="same_kind")

    # ------------------------------------------------------------------ modes, dtype
    def train(self, mode=True):
        mode = check_bool(mode, "%s.train" % type(self).__name__, "mode")
        for m in self._iter_modules():
            object.__setattr__(m, "training", mode)
            m._stamp[_MODE] = mode
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Set every Parameter.grad to zero (and mark it as not yet computed)."""
        for p in self.parameters():
            p.grad = None

    @property
    def dtype(self):
        """The model's dtype (of its first parameter or buffer), or None when it has
        neither (such a module keeps the float32/float64 dtype of its input)."""
        for m in self._iter_modules():
            for n in m._param_names:
                return getattr(m, n).dtype
            for n in m._buffer_names:
                return getattr(m, n).dtype
        return None

    def to(self, dtype):
        """Convert every parameter, gradient and buffer to float32 or float64 (in place
        on the module); returns self. Clears the cached forward."""
        dt = check_dtype(dtype, "%s.to" % type(self).__name__)
        for _, m in self.named_modules():
            for n in m._param_names:
                getattr(m, n)._astype(dt)
            for n in m._buffer_names:
                object.__setattr__(m, n, getattr(m, n).astype(dt))
            m._ws.clear()
            m._set_dtype(dt)
            m._reset_cache()
            m.mark_changed()
        return self

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    def _set_dtype(self, dt):
        """Hook: layers that keep a dtype attribute (for their config) update it."""
        if "_dtype" in self.__dict__:
            object.__setattr__(self, "_dtype", dt)

    def _reset_cache(self):
        object.__setattr__(self, "_out", None)
        if "_cache" in self.__dict__:
            object.__setattr__(self, "_cache", None)

    def _mark_grads(self):
        for n in self._param_names:
            getattr(self, n)._grad_ready = True

    def _need_cache(self):
        cache = self.__dict__.get("_cache")
        if cache is None:
            raise self._error(RuntimeError, "backward() called before forward()")
        return cache

    # ------------------------------------------------------------------ persistence
    def _config(self):
        """Constructor arguments as JSON-native values (built-in layers only)."""
        raise TypeError("%s is not a built-in fastnn layer; only those can be saved"
                        % type(self).__name__)

    @classmethod
    def _from_config(cls, config):
        """Build the layer for loading: from `_config()` output, with no random draws
        (the weights come from the file)."""
        return cls(**config)


def _join(prefix, name):
    return name if not prefix else prefix + "." + name
