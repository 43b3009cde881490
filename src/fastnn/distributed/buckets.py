"""`Buckets`: overlap the gradient Allreduce with the backward pass (PyTorch DDP's idea).

A Sequential is cut at layer boundaries into consecutive segments, each a Sequential
sharing the model's layers (so each still replays its recorded kernel calls), such that
the parameters of every segment but the first hold at least `bucket_bytes` of gradient.
The parameters of a segment fill one slice of the optimizer's flat gradient buffer.
Backward runs the segments last to first and starts a non-blocking Allreduce of each
segment's slice as soon as its backward is done, so the last layers' gradients travel
while the earlier layers' backward still computes; a step waits for all of them before
the update. A model too small for two buckets keeps the single Allreduce.
"""
__all__ = ["Buckets", "BUCKET_BYTES"]

#: the least gradient bytes a bucket holds (the first segment takes what is left)
BUCKET_BYTES = 1 << 20


def _offset(array, flat):
    """Element offset of `array`'s data within the 1-D array `flat`."""
    return (array.ctypes.data - flat.ctypes.data) // flat.itemsize


class Buckets:
    """The segments of a Sequential (forward order) and the slices of `flat` their
    gradients fill; `Buckets.of(...)` builds them, or returns None."""

    def __init__(self, segments, slices, flat, comm):
        from mpi4py import MPI
        self.segments, self.slices, self.flat, self.comm = segments, slices, flat, comm
        self._mpi = MPI
        self.requests = []

    def __repr__(self):
        return "Buckets(%s)" % ", ".join("%d layers, %d gradients" % (len(seg), s.stop - s.start)
                                         for seg, s in zip(self.segments, self.slices))

    @classmethod
    def of(cls, model, flat, comm, bucket_bytes=BUCKET_BYTES):
        """Buckets of `model` when it is a Sequential whose parameters' gradients tile
        `flat` in model order and it cuts into at least two buckets; else None."""
        layers = getattr(model, "layers", None)
        if flat is None or not layers or len(layers) < 2:
            return None
        bounds, held = [len(layers)], 0              # segment ends, last to first
        for i in range(len(layers) - 1, 0, -1):
            held += sum(p.grad.nbytes for p in layers[i].parameters())
            if held >= bucket_bytes:
                bounds.append(i)
                held = 0
        bounds.append(0)
        bounds = sorted(set(bounds))
        if len(bounds) < 3:
            return None
        segments = [model[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        slices = [cls._slice(seg, flat) for seg in segments]
        if None in slices or slices[0].start != 0 or slices[-1].stop != flat.size or \
                any(a.stop != b.start for a, b in zip(slices[:-1], slices[1:])):
            return None            # parameters not laid out in model order
        return cls(segments, slices, flat, comm)

    @staticmethod
    def _slice(segment, flat):
        """The slice of `flat` the segment's gradients fill, or None (no parameters, or
        their gradients are not consecutive there)."""
        grads = [p.grad for p in segment.parameters()]
        if not grads:
            return None
        start = stop = _offset(grads[0], flat)
        for g in grads:
            if g.base is not flat or _offset(g, flat) != stop:
                return None
            stop += g.size
        return slice(start, stop)

    def forward(self, x):
        for seg in self.segments:
            x = seg._forward(x)
        return x

    def backward(self, dy):
        """Backward segment by segment, last to first, starting each segment's Allreduce
        when its gradients are complete (and letting those in flight progress)."""
        for k in range(len(self.segments) - 1, -1, -1):
            dy = self.segments[k]._backward(dy, need_dx=k > 0)
            self._start(k)

    def reduce(self, zeros=False):
        """Wait for the step's Allreduces. zeros=True: this rank had no rows of the
        batch; it sends zeros, bucket by bucket in the order the other ranks do."""
        if zeros:
            self.flat.fill(0)
            for k in range(len(self.segments) - 1, -1, -1):
                self._start(k)
        self._mpi.Request.Waitall(self.requests)
        self.requests = []

    def _start(self, k):
        self.requests.append(self.comm.Iallreduce(self._mpi.IN_PLACE, self.flat[self.slices[k]]))
        self._mpi.Request.Testall(self.requests)
