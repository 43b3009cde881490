"""Dense layer: act(x @ w + b) with bias and activation fused after the GEMM."""
from collections import namedtuple

from ..core.backend import backend, threads_for
from ..core.validation import as_float_array, check_cache, check_shape
from ..core.workspace import FRESH
from ..kernels.activation_table import IDENTITY
from .activations import resolve_activation


def _gemm_threads(x, w):
    """The team for a layer's products: the kernel decides from the shape how many
    blocks (hence threads) each product is worth."""
    return threads_for(x.shape[0] * x.shape[1] * w.shape[1])


DenseCache = namedtuple("DenseCache", "x w has_bias z out code p")


def dense_forward(x, w, b, activation=None, activation_kw=None, workspace=None):
    """out = act(x @ w + b); x: (N, I), w: (I, O), b: (O,) or None -> ((N, O), cache).

    activation: None or an `activation_forward` name, with its keywords in activation_kw.
    """
    fn = "dense_forward"
    code, p = resolve_activation(activation, activation_kw, fn)
    x = as_float_array(x, fn, "x", ndim=2)
    w = as_float_array(w, fn, "w", ndim=2, dtype=x.dtype)
    if w.shape[0] != x.shape[1]:
        raise ValueError("%s: w must have shape (%d, out) to match x of shape %s, got %s"
                         % (fn, x.shape[1], x.shape, w.shape))
    if b is not None:
        b = as_float_array(b, fn, "b", ndim=1, dtype=x.dtype)
        check_shape(b, (w.shape[1],), fn, "b")
    return run_dense_forward(x, w, b, code, p, workspace or FRESH)


def run_dense_forward(x, w, b, code, p, ws):
    """`dense_forward` on trusted inputs (C-contiguous, one float dtype, shapes that
    fit, a resolved activation code): the layers' internal path, validated above it."""
    shape = (x.shape[0], w.shape[1])
    z = ws.get("z", shape, x.dtype)
    out = z if code == IDENTITY else ws.get("out", shape, x.dtype)
    backend().dense_forward(x, w, b, z, out, code, p, _gemm_threads(x, w))
    return out, DenseCache(x, w, b is not None, z, out, code, p)


def dense_backward(dout, cache, workspace=None, need_dx=True):
    """-> (dx (N, I), dw (I, O), db (O,) or None). need_dx=False skips dx (returns None),
    saving a GEMM for a network's first layer."""
    fn = "dense_backward"
    check_cache(cache, DenseCache, fn)
    x = cache.x
    dout = as_float_array(dout, fn, "dout", dtype=x.dtype)
    check_shape(dout, cache.out.shape, fn, "dout")
    return run_dense_backward(dout, cache, workspace or FRESH, need_dx)


def run_dense_backward(dout, cache, ws, need_dx=True):
    """`dense_backward` on a trusted dout (C-contiguous, the cache's dtype and shape)."""
    x, w = cache.x, cache.w
    dz = dout if cache.code == IDENTITY else ws.get("dz", dout.shape, x.dtype)
    dx = ws.get("dx", x.shape, x.dtype) if need_dx else None
    dw = ws.get("dw", w.shape, x.dtype)
    db = ws.get("db", (w.shape[1],), x.dtype) if cache.has_bias else None
    backend().dense_backward(dout, x, w, cache.z, cache.out, dz, dx, dw, db, cache.code,
                             cache.p, _gemm_threads(x, w))
    return dx, dw, db
