"""Recorded kernel programs: a Sequential's forward and backward replayed in one C call.

A training step through the layers costs, besides the kernels themselves, a few
microseconds of Python per layer (argument checks, workspace lookups, kernel wrappers):
about 50 us on a small network, more than its GEMMs. On the compiled backend a
`Sequential` made only of the layers below therefore records the kernel calls of its
first forward (and backward) for a given input shape, dtype and `need_dx`, and replays
them afterwards with `fastnn.kernels._plan.Program`: one call, no Python in between.

The recording *is* an ordinary call (it runs the layers' usual, fully validated path),
so a replay does exactly what that call did, on the arrays it used: the layers' own
workspaces and parameters, with only the input (and, backward, the incoming gradient)
swapped in. A replay happens only while nothing that could change those calls has
changed since the recording (`fastnn.core.generation`: attributes, modes, parameters moved,
workspaces reallocated, thread counts, fork); anything else records again.

Memory safety does not depend on that bookkeeping: a Program holds a reference to every
array it touches, and it is built only if every recorded pointer is the data of one of
those arrays or a patched input slot.
"""
from ..core import generation as _generation
from ..core.backend import get_backend

_PLANNABLE = set()     # exact layer types whose _forward/_backward only call kernels


def plannable(cls):
    """Class decorator: the layer's _forward/_backward do nothing but validated kernel
    calls into their workspaces (no Python-side arithmetic, no random draws)."""
    _PLANNABLE.add(cls)
    return cls


class _Entry:
    """A Program, the generation it was recorded in, the array it returns, and (forward)
    the layers' caches after it or (backward) the parameters whose gradients it writes."""
    __slots__ = ("program", "gen", "out", "extra")

    def __init__(self, program, gen, out, extra):
        self.program, self.gen, self.out, self.extra = program, gen, out, extra


class Plans:
    """A Sequential's recorded programs, keyed by (direction, shapes, dtype, need_dx)."""

    __slots__ = ("entries", "last_x", "last_key", "last_cache", "public")

    def __init__(self):
        self.entries = {}
        self.last_x = None       # input of the last planned forward
        self.last_key = None     # its key (None: the last forward was not planned)
        # the first layer's cache after it: any other forward of that layer (e.g. the
        # diagnostics monitor's layer-by-layer pass) replaces it, and then backward
        # must not assume the planned forward's input
        self.last_cache = None
        self.public = None       # (replay, key, input buffer) of the last public forward


def eligible(layers):
    """Whether a Sequential of these layers can be recorded (on the compiled backend)."""
    return bool(layers) and all(type(m) in _PLANNABLE for m in layers) \
        and get_backend() == "cython"


def forward(seq, layers, x, plans):
    """Sequential._forward through a recorded program (x: C-contiguous)."""
    key = ("f", x.shape, x.dtype.num)
    e = plans.entries.get(key)
    if e is not None and e.gen == _generation.value:
        return e.run(x, plans, key)
    plans.last_key = None
    out, program = _record(lambda: _run_forward(layers, x), layers, (x,), seq)
    if program is not None:
        from ..kernels._plan import ForwardReplay
        caches = tuple(m.__dict__.get("_cache") for m in layers)
        if getattr(caches[0], "x", None) is x:     # replays patch it with their input
            plans.entries[key] = ForwardReplay(program, _generation.value, out, layers,
                                               caches)
            plans.last_x, plans.last_key, plans.last_cache = x, key, caches[0]
    return out


def public_forward(seq, plans, x):
    """Sequential.forward (the public, copying path) through the replay its last call
    used, when that is still current and x has its dtype and shape: the same work as
    `Module.forward`, its checks answered by the recording, in one C call (at batch 1 the
    Python of the general path costs as much as the network). None when it does not
    apply."""
    r = plans.public
    if r is None or r[0].gen != _generation.value or get_backend() != "cython":
        return None
    return r[0].public(seq, plans, r[1], x, r[2])


def note_public(seq, plans):
    """After a public forward that ran a recorded program: remember its replay and input
    buffer for `public_forward`."""
    key = plans.last_key
    e = plans.entries.get(key) if key is not None else None
    if e is not None and e.gen == _generation.value \
            and plans.last_x is seq._ws.get("__input", key[1], plans.last_x.dtype):
        plans.public = (e, key, plans.last_x)
    else:
        plans.public = None


def backward(seq, layers, dy, need_dx, plans):
    """Sequential._backward through a recorded program; None when the last forward was
    not a planned one (the caller then runs the layers)."""
    if plans.last_key is None or not dy.flags.c_contiguous \
            or layers[0].__dict__.get("_cache") is not plans.last_cache:
        return NOT_PLANNED
    x = plans.last_x
    key = ("b", plans.last_key, dy.shape, dy.dtype.num, need_dx)
    e = plans.entries.get(key)
    if e is not None and e.gen == _generation.value:
        e.program.run(x, dy)
        for p in e.extra:
            p._grad_ready = True
        return e.out
    params = [p for m in layers for p in (getattr(m, n) for n in m._param_names)]
    out, program = _record(lambda: _run_backward(layers, dy, need_dx), layers, (x, dy),
                           seq)
    if program is not None:
        plans.entries[key] = _Entry(program, _generation.value, out, params)
    return out


#: backward's answer when the last forward was not replayed / recorded
NOT_PLANNED = object()


def _run_forward(layers, x):
    for m in layers:
        x = m._forward(x)
    return x


def _run_backward(layers, dy, need_dx):
    for i in range(len(layers) - 1, -1, -1):
        dy = layers[i]._backward(dy, need_dx=need_dx or i > 0)
    return dy


def _record(run, layers, inputs, seq):
    """Run `run()` while recording its kernel calls -> (result, Program or None)."""
    from ..kernels._plan import Program, Recorder
    rec = Recorder()
    rec.start()
    try:
        out = run()
    finally:
        rec.stop()
    if len(rec) == 0 or len(rec) > 64:
        return out, None
    keep = _held_arrays(layers, seq)
    known = {a.__array_interface__["data"][0] for a in keep}
    slots = {a.__array_interface__["data"][0]: i for i, a in enumerate(inputs)}
    patches = []
    for k, s, addr in rec.pointers():
        if addr in slots:
            patches.append((k, s, slots[addr]))
        elif addr not in known:      # not an array we hold: never replay
            return out, None
    specs = [(a.dtype, a.shape) for a in inputs]
    return out, Program(rec, patches, specs, keep)


def _held_arrays(layers, seq):
    """Every array the layers' kernels may touch: workspaces, parameters and their
    gradients, buffers."""
    arrays = list(seq._ws.arrays())
    for m in layers:
        arrays.extend(m._ws.arrays())
        for n in m._param_names:
            p = getattr(m, n)
            arrays += [p.data, p.grad]
        arrays.extend(getattr(m, n) for n in m._buffer_names)
    return arrays
