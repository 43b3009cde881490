"""Sequential: modules applied in order, replaying its kernel calls when it can."""
import numpy as np

from ..core.validation import InstanceOf, Integer, check
from .base import Module, register
from .replay import NOT_REPLAYED, Replays, eligible, run_backward, run_forward

_MODULE = InstanceOf(Module, "a fastnn Module")


@register
class Sequential(Module):
    """Modules applied in order; indexable (`model[0]`, slices give a Sequential sharing
    the modules) and sized (`len(model)`). State-dict keys are "<index>.<name>".

    All parameters must share one dtype (float32 or float64; use `.to(dtype)`).

    On the compiled backend, a Sequential made only of `recordable` layers records the
    kernel calls of a forward and backward and replays them afterwards in one C call
    (`fastnn.layers.replay`): the same bits as running the layers, without their Python.

    >>> import numpy as np
    >>> from fastnn.layers import Sequential, Dense, ReLU
    >>> model = Sequential(Dense(2, 8, rng=0), ReLU(), Dense(8, 3, rng=1))
    >>> len(model), type(model[0]).__name__
    (3, 'Dense')
    >>> model(np.zeros((4, 2), np.float32)).shape
    (4, 3)
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        for i, m in enumerate(modules):
            self._add(check("Sequential", "argument %d" % i, m, _MODULE))
        self._check_one_dtype()

    def _add(self, module):
        i = len(self)
        setattr(self, str(i), module)
        object.__setattr__(module, "_path", "Sequential[%d]" % i)

    def _check_one_dtype(self):
        dtypes = {}
        for name, p in self.named_parameters():
            dtypes.setdefault(p.dtype, name)
        for name, b in self.named_buffers():
            dtypes.setdefault(b.dtype, name)
        if len(dtypes) > 1:
            raise TypeError("Sequential: all layers must have one dtype, got %s; pass the "
                            "same dtype= to every layer or call .to(dtype)"
                            % ", ".join("%s (%s)" % (dt, n) for dt, n in dtypes.items()))

    @property
    def layers(self):
        return [getattr(self, n) for n in self._module_names]

    def __len__(self):
        return len(self._module_names)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, index):
        layers = self.layers
        if isinstance(index, slice):
            sub = Sequential.__new__(Sequential)
            Module.__init__(sub)
            for i, m in enumerate(layers[index]):
                setattr(sub, str(i), m)
            return sub
        index = check("Sequential", "index", index, Integer())
        if not -len(layers) <= index < len(layers):
            raise IndexError("Sequential index %d out of range for %d layers"
                             % (index, len(layers)))
        return layers[index]

    def append(self, module):
        self._add(check("Sequential.append", "module", module, _MODULE))
        try:
            self._check_one_dtype()
        except TypeError:
            name = self._module_names.popitem()[0]
            object.__delattr__(self, name)
            raise
        return self

    # ------------------------------------------------------------------ facts
    def flat_layers(self):
        """The leaf layers in order, nested Sequentials expanded."""
        return [leaf for m in self for leaf in m.flat_layers()]

    def output_shape(self, input_shape):
        shape = tuple(input_shape)
        for m in self:
            shape = m.output_shape(shape)
        return shape

    def train_memory(self, input_shape, itemsize, first):
        """The sums over `flat_layers()` (only the first of them may be `first`)."""
        kept = grads = 0
        shape = tuple(input_shape)
        for k, m in enumerate(self.flat_layers()):
            a, g = m.train_memory(shape, itemsize, first and k == 0)
            kept, grads = kept + a, grads + g
            shape = m.output_shape(shape)
        return kept, grads

    # ------------------------------------------------------------ computation
    def forward(self, x):
        replays = self.__dict__.get("_replays")
        if replays is not None:      # at batch 1 the Python around a replay counts
            out = replays.public_forward(self, x)
            if out is not None:
                return out
        return Module.forward(self, x)

    forward.__doc__ = Module.forward.__doc__

    def _public_forward(self, x):
        buf = self._prepare_input(x)
        out = np.array(self._forward(buf), order="C", copy=True)
        replays = self.__dict__.get("_replays")
        if replays is not None:
            replays.note_public(buf)
        return out

    def _forward(self, x):
        replays = self.__dict__.get("_replays")
        if replays is not None:
            if not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
            out = replays.forward(x, self.training)
            if out is not None:
                return out
        layers = self.layers
        if not eligible(layers):
            self.__dict__.pop("_replays", None)
            return run_forward(layers, x)
        if not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        if replays is None:
            replays = Replays()
            object.__setattr__(self, "_replays", replays)
        return replays.record(self, layers, x, self.training)

    def _backward(self, dy, need_dx=True):
        replays = self.__dict__.get("_replays")
        if replays is not None:
            dx = replays.backward(self, dy, need_dx)
            if dx is not NOT_REPLAYED:
                return dx
        return run_backward(self.layers, dy, need_dx)

    def __repr__(self):
        if not len(self):
            return "Sequential()"
        lines = ["  (%d): %s" % (i, repr(m).replace("\n", "\n  ")) for i, m in enumerate(self)]
        return "Sequential(\n%s\n)" % "\n".join(lines)

    def _label(self):
        return "Sequential" if self._path is None else "%s Sequential" % self._path

    def _config(self):
        return {}
