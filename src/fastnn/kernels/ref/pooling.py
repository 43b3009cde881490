"""2-d max and average pooling (NCHW), in NumPy.

    x (N, C, H, W), out (N, C, OH, OW); geom = (kh, kw, sh, sw, ph, pw): window, stride
    and padding per axis (padding at most half the window, so every window holds at
    least one cell of x), OH = (H + 2 ph - kh) // sh + 1 (OW likewise).

Max: out = the largest cell of each window; padded cells never win; ties go to the first
maximal cell in the window's row-major order; a NaN wins (the first NaN), so NaN
propagates. idx (intp, out's shape) keeps the winner's position in its input plane,
ih * W + iw; the backward adds dout there (overlapping windows add up).
Average: out = the window's sum / (kh kw): padded zeros count (count_include_pad=True);
the backward spreads dout / (kh kw) over the window's cells of x.
"""
import numpy as np

from .conv import window_add, window_view

__all__ = ["maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward",
           "avgpool2d_backward"]


def _padded_windows(x, out, geom):
    kh, kw, sh, sw, ph, pw = geom
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    return window_view(xp, out.shape[2:], (kh, kw), (sh, sw), (1, 1))


def maxpool2d_forward(x, out, idx, geom, nthreads=1):
    """Write out (N, C, OH, OW) and idx (the same shape, intp): each window's max and
    the winner's position ih * W + iw in its plane."""
    kh, kw, sh, sw, ph, pw = geom
    h, w = x.shape[2:]
    oh, ow = out.shape[2:]
    win = _padded_windows(x, out, geom)
    best = np.zeros(out.shape, x.dtype)
    found = np.zeros(out.shape, bool)
    for u in range(kh):                      # the window's cells in row-major order
        ih = np.arange(oh) * sh - ph + u
        for v in range(kw):
            iw = np.arange(ow) * sw - pw + v
            real = ((ih >= 0) & (ih < h))[:, None] & ((iw >= 0) & (iw < w))[None, :]
            val = win[..., u, v]
            with np.errstate(invalid="ignore"):
                wins = ~found | (val > best) | (np.isnan(val) & ~np.isnan(best))
            take = real & wins
            best = np.where(take, val, best)
            idx[...] = np.where(take, ih[:, None] * w + iw[None, :], idx)
            found |= real
    out[...] = best


def maxpool2d_backward(dout, idx, dx, nthreads=1):
    """Write dx (N, C, H, W): zero, plus dout at each window's winner (in output order)."""
    n, c, h, w = dx.shape
    planes = n * c
    dx.fill(0)
    where = idx.reshape(planes, -1) + (np.arange(planes) * (h * w))[:, None]
    np.add.at(dx.reshape(-1), where, dout.reshape(planes, -1))


def avgpool2d_forward(x, out, geom, nthreads=1):
    """Write out (N, C, OH, OW): each window's mean, padded zeros included."""
    kh, kw = geom[:2]
    out[...] = _padded_windows(x, out, geom).sum(axis=(4, 5)) / x.dtype.type(kh * kw)


def avgpool2d_backward(dout, dx, geom, nthreads=1):
    """Write dx (N, C, H, W): every output's dout / (kh kw) added over its window."""
    kh, kw, sh, sw, ph, pw = geom
    h, w = dx.shape[2:]
    share = dout / dout.dtype.type(kh * kw)
    grads = np.broadcast_to(share[..., None, None], share.shape + (kh, kw))
    dxp = np.zeros(dx.shape[:2] + (h + 2 * ph, w + 2 * pw), dx.dtype)
    window_add(dxp, grads, (sh, sw), (1, 1))
    dx[...] = dxp[:, :, ph:ph + h, pw:pw + w]
