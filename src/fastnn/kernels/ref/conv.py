"""2-d convolution (NCHW; cross-correlation, as torch's conv2d) with a fused activation,
in NumPy.

    x (N, C, H, W), w (F, C, KH, KW), b (F,) or None, z and out (N, F, OH, OW);
    geom = (sh, sw, ph, pw, dh, dw): stride, zero padding and dilation per axis, with
    OH = (H + 2 ph - dh (KH - 1) - 1) // sh + 1 (OW likewise).

Forward:  z[n, f, i, j] = b[f] + sum_{c, u, v} w[f, c, u, v] xp[n, c, i sh + u dh, j sw + v dw]
          (xp: x zero-padded by ph rows and pw columns on each side); out = f(z)
Backward: dz = dout * f'(z); db = sum of dz over (n, i, j); dw = the same sum of dz times
          each output's window; dx = every dz spread back through w over its window.
`scratch` is the compiled twin's working memory (`conv2d_scratch_size` elements); the
reference needs none.
"""
import numpy as np

from ..activation_table import IDENTITY
from .activations import act_backward, act_forward

__all__ = ["conv2d_forward", "conv2d_backward", "conv2d_scratch_size"]


def window_view(xp, out_hw, kernel_hw, stride, dilation):
    """(N, C, OH, OW, KH, KW) read-only view of the padded xp (N, C, Hp, Wp): the
    window behind every output position (shared with the pooling reference)."""
    (oh, ow), (kh, kw), (sh, sw), (dh, dw) = out_hw, kernel_hw, stride, dilation
    n, c = xp.shape[:2]
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, c, oh, ow, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw),
        writeable=False)


def window_add(dxp, grads, stride, dilation):
    """dxp (N, C, Hp, Wp) += every window's gradient grads (N, C, OH, OW, KH, KW) at the
    positions window_view read it from (the adjoint of window_view)."""
    n, c, oh, ow, kh, kw = grads.shape
    (sh, sw), (dh, dw) = stride, dilation
    for u in range(kh):
        for v in range(kw):
            dxp[:, :, u * dh:u * dh + sh * (oh - 1) + 1:sh,
                v * dw:v * dw + sw * (ow - 1) + 1:sw] += grads[..., u, v]


def _padded(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _windows(x, w, z, geom):
    sh, sw, ph, pw, dil_h, dil_w = geom
    return window_view(_padded(x, ph, pw), z.shape[2:], w.shape[2:], (sh, sw), (dil_h, dil_w))


def conv2d_scratch_size(x_shape, w_shape, geom):
    """Elements of working memory conv2d_forward / conv2d_backward need: none here."""
    return 0


def conv2d_forward(x, w, b, z, out, geom, scratch, code, p, nthreads=1):
    """Write z (pre-activation) and out = f(z), both (N, F, OH, OW); z may be out when
    code is IDENTITY."""
    cols = _windows(x, w, z, geom)
    z[...] = np.tensordot(cols, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
    if b is not None:
        z += b[:, None, None]
    if code != IDENTITY or out is not z:
        act_forward(z, out, code, p)


def conv2d_backward(dout, x, w, z, out, dx, dw, db, geom, scratch, code, p, nthreads=1):
    """Write dw (F, C, KH, KW), db (F,) unless None and dx (N, C, H, W) unless None."""
    dz = dout
    if code != IDENTITY:
        dz = np.empty_like(dout)
        act_backward(dout, z, out, dz, code, p)
    if db is not None:
        db[...] = dz.sum(axis=(0, 2, 3), dtype=np.float64)     # accumulate in double
    dw[...] = np.tensordot(dz, _windows(x, w, z, geom), axes=([0, 2, 3], [0, 2, 3]))
    if dx is not None:
        sh, sw, ph, pw, dil_h, dil_w = geom
        h, wd = x.shape[2:]
        grads = np.tensordot(dz, w, axes=([1], [0])).transpose(0, 3, 1, 2, 4, 5)
        dxp = np.zeros(x.shape[:2] + (h + 2 * ph, wd + 2 * pw), x.dtype)
        window_add(dxp, grads, (sh, sw), (dil_h, dil_w))
        dx[...] = dxp[:, :, ph:ph + h, pw:pw + wd]
