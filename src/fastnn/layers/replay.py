"""Recorded kernel programs: a Sequential's forward and backward replayed in one C call.

A training step through the layers costs, besides the kernels themselves, a few
microseconds of Python per layer (argument checks, workspace lookups, kernel wrappers):
about 50 us on a small network, more than its GEMMs. On the compiled backend a
`Sequential` made only of `recordable` layers therefore records the kernel calls of its
first forward for a given input shape, dtype and mode (and of the backward that
follows it, for a given gradient shape and `need_dx`), and replays them afterwards with
`fastnn.kernels._plan.Program`: one call, no Python in between.

The recording *is* an ordinary call (it runs the layers' usual, fully validated path),
so a replay does exactly what that call did, on the arrays it used: the layers' own
workspaces and parameters, with only the input (and, backward, the incoming gradient)
swapped in. A replay happens only while the model is unchanged since the recording:
the program compares the version stamps of the Sequential, its layers and their
parameters, and the process-wide epoch (`fastnn.core.generation`). Anything else
records again. A backward recording belongs to the forward recording it followed (it
reads that forward's arrays), and is dropped with it; so a workspace that drops an
array (a shape evicted) leaves every recording valid.

Memory is bounded: a Sequential keeps the recordings of its last `SHAPES_KEPT` forward
keys (least recently used dropped), each with at most `BACKWARDS_KEPT` backward ones,
and a program holds only the arrays its calls touch.

Memory safety does not depend on that bookkeeping: a Program holds a reference to every
array it touches, and it is built only if every recorded pointer is the data of one of
those arrays or a patched input slot.

Layer state: a replay writes only arrays. The layers' caches (what their own backward
would read) still name the arrays of whichever forward last ran them layer by layer;
`Replays.backward` restores the recording's caches before it runs the layers' backward
(to record it), and notices when a layer-by-layer forward ran in between (the first
layer's cache changed), in which case the layers' own path runs.
"""
from ..core import generation
from ..core.backend import get_backend
from ..core.workspace import SHAPES_KEPT
from .base import count_one

#: backward recordings kept per forward recording (need_dx True and False)
BACKWARDS_KEPT = 2

#: what `Replays.backward` returns when it did not run: the last forward was not a
#: replay or recording, or a layer-by-layer forward ran since (the caller runs the
#: layers' backward instead). A real answer may be None (need_dx=False).
NOT_REPLAYED = object()


def eligible(layers):
    """Whether a Sequential of these layers can be recorded (on the compiled backend)."""
    return bool(layers) and all(m.recordable for m in layers) and get_backend() == "cython"


class _Forward:
    """A recorded forward: its key (input shape, dtype number, training), its program,
    the array it returns, the layers it ran and the cache each was left with (the first
    naming the recorded input), and its backward recordings
    {(dy shape, dy dtype number, need_dx): _Backward}. `first` is the first layer's
    attribute dict (where its current cache is read), `out_meta` the output's (shape,
    dtype) as the public forward notes it; `counters` the layers' forward counters, which a
    replay advances."""
    __slots__ = ("key", "program", "out", "layers", "caches", "backward", "first",
                 "out_meta", "counters")

    def __init__(self, key, program, out, layers, caches):
        self.key, self.program, self.out = key, program, out
        self.layers, self.caches = layers, caches
        self.backward = {}
        self.first = layers[0].__dict__
        self.out_meta = (out.shape, out.dtype)
        self.counters = tuple(c for m in layers for c in m.forward_counters(key[2]))


class _Backward:
    """A recorded backward: its program, the array it returns, and the parameters whose
    gradients it writes."""
    __slots__ = ("program", "out", "params")

    def __init__(self, program, out, params):
        self.program, self.out, self.params = program, out, params


class Replays:
    """A Sequential's recordings and what its last forward was.

    `forward(x, training)` replays a current recording (or returns None), `record(...)`
    runs the layers while recording, `backward(dy, need_dx)` replays or records the
    backward of the last forward (or returns NOT_REPLAYED); `public_forward` /
    `note_public` serve the public, copying forward."""

    __slots__ = ("recordings", "last", "last_x", "last_cache", "public")

    def __init__(self):
        self.recordings = {}     # (shape, dtype number, training) -> _Forward, LRU order
        self.last = None         # the _Forward of the last forward (None: not recorded)
        self.last_x = None       # that forward's input
        # the first layer's cache after it: any other forward of that layer (e.g. the
        # diagnostics monitor's layer-by-layer pass) replaces it, and then backward
        # must not assume the replayed forward's arrays
        self.last_cache = None
        self.public = None       # (_Forward, input buffer) of the last public forward

    # ------------------------------------------------------------------ forward
    def forward(self, x, training):
        """The output of replaying the current recording for x (C-contiguous), or None."""
        f = self.recordings.get((x.shape, x.dtype.num, training))
        if f is None or not f.program.current() or get_backend() != "cython":
            return None
        f.program.run(x)
        self._ran(f, x)
        return f.out

    def _ran(self, f, x):
        """Note that f's forward ran on x (a replay leaves the layers' caches alone, and
        advances their forward counters here)."""
        for counter in f.counters:
            count_one(counter)
        if f is not self.last and self.recordings.get(f.key) is f:
            self.recordings[f.key] = self.recordings.pop(f.key)   # most recent goes last
        self.last, self.last_x = f, x
        self.last_cache = f.first.get("_cache")

    def record(self, seq, layers, x, training):
        """Run the layers' forward on x (C-contiguous) while recording; keep the
        recording when it can be replayed. Returns the output."""
        key = (x.shape, x.dtype.num, training)
        self.recordings.pop(key, None)          # stale, or it would have been replayed
        out, program = _record(lambda: run_forward(layers, x), seq, layers, (x,))
        caches = tuple(m.__dict__.get("_cache") for m in layers)
        f = None
        if program is not None and getattr(caches[0], "x", None) is x:
            f = self.recordings[key] = _Forward(key, program, out, tuple(layers), caches)
            if len(self.recordings) > SHAPES_KEPT:
                del self.recordings[next(iter(self.recordings))]
        self.last, self.last_x, self.last_cache = f, x, caches[0]
        return out

    # ----------------------------------------------------------------- backward
    def backward(self, seq, dy, need_dx):
        """dx of the last forward (None when not need_dx) by replaying (or recording)
        its backward; NOT_REPLAYED when that forward was not a replay or recording, or
        a layer-by-layer forward ran since (the caller then runs the layers)."""
        f = self.last
        if f is None or f.first.get("_cache") is not self.last_cache \
                or not dy.flags.c_contiguous or get_backend() != "cython":
            return NOT_REPLAYED
        key = (dy.shape, dy.dtype.num, need_dx)
        b = f.backward.get(key)
        if b is not None and b.program.current():
            b.program.run(self.last_x, dy)
            for p in b.params:
                p._grad_ready = True
            return b.out
        self._restore_caches(f)
        if not f.program.current():      # the model changed since that forward
            return NOT_REPLAYED
        layers = f.layers
        out, program = _record(lambda: run_backward(layers, dy, need_dx), seq, layers,
                               (self.last_x, dy))
        if program is not None:
            if len(f.backward) >= BACKWARDS_KEPT:
                f.backward.clear()
            params = [p for m in layers for p in m.parameters()]
            f.backward[key] = _Backward(program, out, params)
        return out

    def _restore_caches(self, f):
        """Give the layers the caches of forward recording f, on the last input."""
        first = f.caches[0]
        if first.x is not self.last_x:
            first = first._replace(x=self.last_x)
        for m, c in zip(f.layers, (first,) + f.caches[1:]):
            object.__setattr__(m, "_cache", c)
        self.last_cache = first

    # ------------------------------------------------------------------- public
    def public_forward(self, seq, x):
        """`seq.forward(x)` (the public, copying path) through the recording its last
        call used, when that is current and x has exactly its input buffer's dtype and
        shape: the same work as the general path under seq's lock, its checks answered
        by the recording, the kernels in one C call. Returns the fresh output, or None
        when this does not apply (nothing was done)."""
        pub = self.public
        if pub is None or get_backend() != "cython":
            return None
        f, buf = pub
        with seq._lock:
            out = f.program.copy_run(x, buf, f.out)
            if out is not None:
                self._ran(f, buf)
                object.__setattr__(seq, "_out", f.out_meta)
        return out

    def note_public(self, buf):
        """After a public forward that ran on the input buffer `buf`: keep its recording
        for `public_forward` (none when it was not recorded)."""
        f = self.last
        self.public = (f, buf) if f is not None and self.last_x is buf else None


def run_forward(layers, x):
    """The layers' internal forward, one after the other."""
    for m in layers:
        x = m._forward(x)
    return x


def run_backward(layers, dy, need_dx):
    """The layers' internal backward, last to first (the first gives dx if need_dx)."""
    for i in range(len(layers) - 1, -1, -1):
        dy = layers[i]._backward(dy, need_dx=need_dx or i > 0)
    return dy


def _record(run, seq, layers, inputs):
    """Run `run()` while recording its kernel calls -> (result, Program or None).

    The Program holds the arrays of the Sequential `seq` (its input buffers) and the
    layers that the calls touch, and watches the stamps of `seq`, the layers and their
    parameters as they are after the run."""
    from ..kernels import _plan
    rec = _plan.Recorder()
    rec.start()
    try:
        out = run()
    finally:
        rec.stop()
    if not 0 < len(rec) <= _plan.MAX_OPS:
        return out, None
    held = {_address(a): a for a in _held_arrays(seq, layers)}
    slots = {_address(a): i for i, a in enumerate(inputs)}
    patches, keep = [], {}
    for k, s, addr in rec.pointers():
        if addr in slots:
            patches.append((k, s, slots[addr]))
        elif addr in held:
            keep[addr] = held[addr]
        else:                    # not an array we hold: never replay
            return out, None
    specs = [(a.dtype, a.shape) for a in inputs]
    return out, _plan.Program(rec, patches, specs, list(keep.values()),
                              _stamps(seq, layers))


def _address(a):
    return a.__array_interface__["data"][0]


def _held_arrays(seq, layers):
    """Every array the layers' kernels may touch: workspaces, parameters and their
    gradients, buffers."""
    arrays = list(seq._ws.arrays())
    for m in layers:
        arrays.extend(m._ws.arrays())
        for p in m.parameters():
            arrays += [p.data, p.grad]
        arrays.extend(getattr(m, n) for n in m._buffer_names)
    return arrays


def _stamps(seq, layers):
    """The version stamps a recording of these layers depends on (see module docstring)."""
    stamps = [generation.epoch, seq._stamp]
    for m in layers:
        stamps.append(m._stamp)
        stamps.extend(p._stamp for p in m.parameters())
    return stamps
