"""Kernel level: fastnn.kernels._conv, _pooling and the 2-d batch norm of _batchnorm
against their NumPy references -- the chunking paths (several images per chunk, row
chunks of one image), the bounded scratch, products split at BLAS's size limit, recorded
and replayed calls -- and the C-level checks that keep bad buffers from ever being read
or written out of bounds."""
import numpy as np
import pytest

C = pytest.importorskip("fastnn.kernels._conv")
P = pytest.importorskip("fastnn.kernels._pooling")
B = pytest.importorskip("fastnn.kernels._batchnorm")

from fastnn.kernels import _blas, _plan  # noqa: E402
from fastnn.kernels import ref as R  # noqa: E402
from fastnn.kernels.activation_table import CODES  # noqa: E402

RELU, IDENTITY = CODES["relu"], CODES["identity"]


def rand(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def out_shape(xs, ws, geom):
    sh, sw, ph, pw, dh, dw = geom
    return (xs[0], ws[0], (xs[2] + 2 * ph - dh * (ws[2] - 1) - 1) // sh + 1,
            (xs[3] + 2 * pw - dw * (ws[3] - 1) - 1) // sw + 1)


def conv_both(xs, ws, geom, dtype=np.float64, code=RELU, bias=True, need_dx=True, seed=0):
    """{module: (out, dx, dw, db)} of one forward + backward with each implementation."""
    x = rand(xs, dtype, seed)
    w = (rand(ws, seed=seed + 1) / np.sqrt(np.prod(ws[1:]))).astype(dtype)
    b = rand(ws[:1], dtype, seed + 2) if bias else None
    os_ = out_shape(xs, ws, geom)
    dout = rand(os_, dtype, seed + 3)
    res = {}
    for mod in (C, R):
        scratch = np.empty(mod.conv2d_scratch_size(xs, ws, geom), dtype)
        z, out = np.empty(os_, dtype), np.empty(os_, dtype)
        if code == IDENTITY:
            out = z
        mod.conv2d_forward(x, w, b, z, out, geom, scratch, code, 0.0, 2)
        dx = np.empty(xs, dtype) if need_dx else None
        dw, db = np.empty(ws, dtype), np.empty(ws[0], dtype) if bias else None
        mod.conv2d_backward(dout, x, w, z, out, dx, dw, db, geom, scratch, code, 0.0, 2)
        res[mod] = (out.copy(), dx, dw, db)
    return res


def assert_same(res, dtype=np.float64):
    rtol = 1e-11 if dtype == np.float64 else 2e-5
    for a, r in zip(res[C], res[R]):
        if r is None:
            assert a is None
        else:
            np.testing.assert_allclose(a, r, rtol=rtol, atol=rtol * np.abs(r).max())


# ------------------------------------------------------------------------- chunking
@pytest.mark.parametrize("xs,ws,geom", [
    ((64, 1, 28, 28), (6, 1, 5, 5), (1, 1, 0, 0, 1, 1)),      # several images per chunk
    ((33, 6, 12, 12), (16, 6, 5, 5), (1, 1, 0, 0, 1, 1)),     # ragged last chunk
    ((3, 64, 40, 40), (8, 64, 3, 3), (1, 1, 1, 1, 1, 1)),     # row chunks of one image
    ((2, 40, 37, 23), (5, 40, 4, 3), (2, 1, 2, 1, 2, 3)),     # row chunks, odd geometry
    ((1, 300, 3, 300), (2, 300, 1, 1), (1, 1, 0, 0, 1, 1)),   # one output row > budget
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunking_paths_match_the_reference(xs, ws, geom, dtype):
    assert_same(conv_both(xs, ws, geom, dtype), dtype)


@pytest.mark.parametrize("code,bias,need_dx", [(IDENTITY, False, True), (IDENTITY, True, False),
                                               (RELU, False, False)])
def test_identity_without_bias_and_without_dx(code, bias, need_dx):
    assert_same(conv_both((5, 3, 9, 8), (4, 3, 3, 3), (1, 2, 1, 0, 1, 1), code=code,
                          bias=bias, need_dx=need_dx))


# ------------------------------------------------------------ the direct 3x3 kernels
needs_direct = pytest.mark.skipif(C.direct_level() is None,
                                  reason="no AVX2 + FMA: the direct 3x3 kernels are off")
#: every instruction set of the direct and lane kernels this CPU can run (an AVX-512
#: machine tests the AVX2 kernels too), and 0: the same shapes through im2col + GEMM
LEVELS = [lv for lv, name in ((2, "avx512"), (1, "avx2"), (0, None))
          if lv <= {"avx512": 2, "avx2": 1, None: 0}[C.direct_level()]]


@pytest.fixture(params=LEVELS, ids=lambda lv: {2: "avx512", 1: "avx2", 0: "im2col"}[lv])
def level(request):
    previous = C._set_direct_level(request.param)
    yield request.param
    C._set_direct_level(previous)


@needs_direct
@pytest.mark.parametrize("xs,ws,pad", [
    ((3, 32, 32, 32), (32, 32, 3, 3), 1),   # the residual block's: full tiles
    ((2, 5, 17, 19), (13, 5, 3, 3), 0),     # odd sizes: partial pixel and filter tiles
    ((2, 3, 16, 33), (7, 3, 3, 3), 2),      # padding 2: dz's padding is 0 for dx
    ((5, 2, 18, 40), (1, 2, 3, 3), 1),      # one filter; several images per chunk
    ((1, 70, 30, 70), (9, 70, 3, 3), 1),    # an image im2col would cut in row chunks
])
@pytest.mark.parametrize("code,bias", [(RELU, True), (IDENTITY, False), (IDENTITY, True)])
def test_direct_3x3_matches_the_reference(xs, ws, pad, code, bias, level):
    """float32 3x3 convolutions with stride 1 and outputs 16 wide or more run on the direct
    kernels (forward, dx and dw): the reference's results within float32 rounding."""
    assert_same(conv_both(xs, ws, (1, 1, pad, pad, 1, 1), np.float32, code, bias),
                np.float32)


@needs_direct
@pytest.mark.parametrize("xs,ws,pad", [
    ((64, 6, 12, 12), (16, 6, 5, 5), (0, 0)),   # LeNet's second convolution
    ((9, 4, 7, 9), (8, 4, 3, 3), (1, 1)),       # a partial block of images (9 of 16 / 8)
    ((20, 4, 10, 6), (9, 4, 2, 5), (1, 4)),     # kh != kw, padding up to kernel - 1
    ((8, 3, 9, 11), (13, 3, 4, 3), (3, 0)),     # 13 filters: every tile width
])
@pytest.mark.parametrize("code,bias", [(RELU, True), (IDENTITY, False)])
def test_lane_kernels_match_the_reference(xs, ws, pad, code, bias, level):
    """float32 stride-1 convolutions with 3 or 5 kernel columns on narrow images (or not
    3x3), 8 filters or more, run on the lane kernels, a vector holding one pixel of 8 or
    16 images."""
    assert_same(conv_both(xs, ws, (1, 1) + pad + (1, 1), np.float32, code, bias),
                np.float32)


@needs_direct
@pytest.mark.parametrize("xs,ws,geom", [
    ((6, 8, 20, 24), (10, 8, 3, 3), (1, 1, 1, 1, 1, 1)),     # direct (rows)
    ((37, 3, 10, 10), (8, 3, 5, 5), (1, 1, 2, 2, 1, 1)),     # lanes
])
def test_direct_kernels_are_bit_identical_for_any_thread_count(xs, ws, geom, level):
    x, w = rand(xs, np.float32), rand(ws, np.float32, 1)
    dout = rand(out_shape(xs, ws, geom), np.float32, 2)
    runs = []
    for threads in (1, 2):
        scratch = np.empty(C.conv2d_scratch_size(xs, ws, geom), np.float32)
        z = np.empty(dout.shape, np.float32)
        C.conv2d_forward(x, w, None, z, z, geom, scratch, IDENTITY, 0.0, threads)
        dx, dw = np.empty(xs, np.float32), np.empty(ws, np.float32)
        C.conv2d_backward(dout, x, w, z, z, dx, dw, None, geom, scratch, IDENTITY, 0.0,
                          threads)
        runs.append((z, dx, dw))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(2 not in LEVELS, reason="no AVX-512: one instruction set to compare")
@pytest.mark.parametrize("xs,ws,geom", [
    ((3, 5, 18, 20), (13, 5, 3, 3), (1, 1, 1, 1, 1, 1)),     # direct
    ((19, 6, 12, 12), (16, 6, 5, 5), (1, 1, 0, 0, 1, 1)),    # lanes (16 vs 8 a block)
])
def test_direct_kernels_with_avx512_and_avx2(xs, ws, geom):
    """The outputs and dx are one chain of multiply-adds each: the same bits with either
    instruction set; dw adds vector lanes (16 or 8) at the end: equal to rounding."""
    runs = []
    for lv in (2, 1):
        previous = C._set_direct_level(lv)
        try:
            runs.append(conv_both(xs, ws, geom, np.float32)[C])
        finally:
            C._set_direct_level(previous)
    (out2, dx2, dw2, db2), (out1, dx1, dw1, db1) = runs
    np.testing.assert_array_equal(out2, out1)
    np.testing.assert_array_equal(dx2, dx1)
    np.testing.assert_array_equal(db2, db1)
    np.testing.assert_allclose(dw2, dw1, rtol=1e-5, atol=1e-5 * np.abs(dw1).max())


@needs_direct
def test_direct_3x3_keeps_nan_and_inf_where_they_belong(level):
    """Lanes past a row's end never reach a sum: an inf in the next row or channel
    leaves the gradients of other rows finite, and a NaN in x reaches dw as it should."""
    xs, ws, geom = (1, 2, 16, 17), (3, 2, 3, 3), (1, 1, 1, 1, 1, 1)
    x, w = rand(xs, np.float32), rand(ws, np.float32, 1)
    dout = rand(out_shape(xs, ws, geom), np.float32, 2)
    x[0, 1, 0, 0] = np.inf                     # just past channel 0's last row
    res = {}
    for mod in (C, R):
        scratch = np.empty(mod.conv2d_scratch_size(xs, ws, geom), np.float32)
        z = np.empty(dout.shape, np.float32)
        mod.conv2d_forward(x, w, None, z, z, geom, scratch, IDENTITY, 0.0)
        dx, dw = np.empty(xs, np.float32), np.empty(ws, np.float32)
        mod.conv2d_backward(dout, x, w, z, z, dx, dw, None, geom, scratch, IDENTITY, 0.0)
        res[mod] = (z, dx, dw)
    for a, r in zip(res[C], res[R]):
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(r))
        np.testing.assert_allclose(np.where(np.isfinite(r), a, 0), np.where(np.isfinite(r), r, 0),
                                   rtol=2e-5, atol=2e-5 * np.abs(r[np.isfinite(r)]).max())


def test_scratch_is_bounded_whatever_the_batch():
    """The unfolded input is cut into chunks: scratch does not grow with the batch. The
    direct 3x3 kernels add, per run, padded images of x and dz and dw's operands (about
    (C + 2 F + 3) planes), and two packed kernels."""
    for ws, hw in (((6, 1, 5, 5), 28), ((32, 32, 3, 3), 32), ((8, 64, 3, 3), 200)):
        sizes = [C.conv2d_scratch_size((n, ws[1], hw, hw), ws, (1, 1, 1, 1, 1, 1))
                 for n in (1, 64, 4096)]
        assert sizes[1] == sizes[2]
        k = np.prod(ws[1:])
        direct = 16 * ((ws[1] + 2 * ws[0] + 3) * (hw + 4) * (hw + 32) + 100) + 2 * ws[0] * k
        assert sizes[2] <= 16 * (k + ws[0]) * max(65536 // k, hw) + 15 * ws[0] * k + direct


def test_products_split_at_the_blas_size_limit():
    """With BLAS's int limit lowered, every product is cut into pieces: same results."""
    before = _blas.get_int_limit()
    try:
        _blas.set_int_limit(37)
        assert_same(conv_both((4, 5, 11, 10), (7, 5, 3, 3), (1, 1, 1, 1, 1, 1)))
    finally:
        _blas.set_int_limit(before)


def test_empty_batch_gives_zero_gradients():
    xs, ws, geom = (0, 2, 5, 5), (3, 2, 3, 3), (1, 1, 0, 0, 1, 1)
    x, w = np.zeros(xs), rand(ws)
    os_ = out_shape(xs, ws, geom)
    z = np.empty(os_)
    dw, db = np.full(ws, 7.0), np.full(3, 7.0)
    scratch = np.empty(C.conv2d_scratch_size(xs, ws, geom))
    C.conv2d_forward(x, w, None, z, z, geom, scratch, IDENTITY, 0.0)
    C.conv2d_backward(z, x, w, z, z, np.empty(xs), dw, db, geom, scratch, IDENTITY, 0.0)
    assert not dw.any() and not db.any()


def test_inputs_are_left_unchanged():
    xs, ws, geom = (4, 1, 6, 6), (2, 1, 3, 3), (1, 1, 1, 1, 1, 1)
    x, w, b = rand(xs), rand(ws, seed=1), rand((2,), seed=2)
    dout = rand(out_shape(xs, ws, geom), seed=3)
    keep = [a.copy() for a in (x, w, b, dout)]
    scratch = np.empty(C.conv2d_scratch_size(xs, ws, geom))
    z, out = np.empty(dout.shape), np.empty(dout.shape)
    C.conv2d_forward(x, w, b, z, out, geom, scratch, RELU, 0.0)
    C.conv2d_backward(dout, x, w, z, out, np.empty(xs), np.empty(ws), np.empty(2), geom,
                      scratch, RELU, 0.0)
    for a, k in zip((x, w, b, dout), keep):
        np.testing.assert_array_equal(a, k)


def test_a_recorded_convolution_replays_on_a_new_input():
    xs, ws, geom = (3, 2, 7, 7), (4, 2, 3, 3), (1, 1, 1, 1, 1, 1)
    x, w, b = rand(xs, np.float32), rand(ws, np.float32, 1), rand((4,), np.float32, 2)
    z = np.empty(out_shape(xs, ws, geom), np.float32)
    out = np.empty_like(z)
    scratch = np.empty(C.conv2d_scratch_size(xs, ws, geom), np.float32)
    rec = _plan.Recorder()
    rec.start()
    try:
        C.conv2d_forward(x, w, b, z, out, geom, scratch, RELU, 0.0)
    finally:
        rec.stop()
    program = _plan.Program(rec, [(0, 0, 0)], [(np.float32, xs)], [x, w, b, z, out, scratch])
    x2 = rand(xs, np.float32, 5)
    program.run(x2)
    replayed = out.copy()
    C.conv2d_forward(x2, w, b, z, out, geom, scratch, RELU, 0.0)
    np.testing.assert_array_equal(replayed, out)


# --------------------------------------------------------------- C-level checks
def test_conv_buffers_are_checked_in_c():
    xs, ws, geom = (2, 3, 6, 6), (4, 3, 3, 3), (1, 1, 0, 0, 1, 1)
    x, w, b = rand(xs, np.float32), rand(ws, np.float32), rand((4,), np.float32)
    z = np.empty((2, 4, 4, 4), np.float32)
    scratch = np.empty(C.conv2d_scratch_size(xs, ws, geom), np.float32)
    good = dict(x=x, w=w, b=b, z=z, out=z, geom=geom, scratch=scratch, code=IDENTITY, p=0.0)
    bad = [
        (dict(z=np.empty((2, 4, 4, 5), np.float32)), ValueError),
        (dict(z=np.empty((2, 4, 4, 4))), ValueError),                    # dtype
        (dict(b=np.empty(5, np.float32)), ValueError),
        (dict(w=rand((4, 2, 3, 3), np.float32)), ValueError),            # channels
        (dict(x=np.asfortranarray(x)), ValueError),
        (dict(scratch=scratch[:-1]), ValueError),
        (dict(geom=(1, 1, 0, 0, 1)), ValueError),
        (dict(geom=(0, 1, 0, 0, 1, 1)), ValueError),                     # stride 0
        (dict(geom=(1, 1, -1, 0, 1, 1)), ValueError),                    # negative padding
        (dict(geom=(1, 1, 0, 0, 4, 1)), ValueError),                     # kernel too large
        (dict(code=99), ValueError),
        (dict(x=[[1.0]]), TypeError),
    ]
    for change, exc in bad:
        args = dict(good, **change)
        with pytest.raises(exc):
            C.conv2d_forward(**args)
    ro = z.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        C.conv2d_forward(**dict(good, z=ro, out=ro))
    with pytest.raises(ValueError):
        C.conv2d_backward(z, x, w, z, z, np.empty((2, 3, 6, 5), np.float32),
                          np.empty(ws, np.float32), None, geom, scratch, IDENTITY, 0.0)


def test_pooling_buffers_and_geometry_are_checked_in_c():
    x = rand((2, 3, 6, 6), np.float32)
    out = np.empty((2, 3, 3, 3), np.float32)
    idx = np.empty((2, 3, 3, 3), np.intp)
    for geom in ((2, 2, 2, 2, 2, 0), (7, 2, 1, 1, 0, 0), (2, 2, 0, 2, 0, 0), (2, 2, 2)):
        with pytest.raises(ValueError):
            P.maxpool2d_forward(x, out, idx, geom)
        with pytest.raises(ValueError):
            P.avgpool2d_forward(x, out, geom)
    with pytest.raises(ValueError):
        P.maxpool2d_forward(x, out, idx.astype(np.int32), (2, 2, 2, 2, 0, 0))
    with pytest.raises(ValueError):
        P.avgpool2d_backward(out, np.empty((2, 3, 6, 9), np.float32), (2, 2, 2, 2, 0, 0))


def test_maxpool_backward_never_writes_outside_a_plane():
    """Positions outside their plane (a corrupted cache) are skipped, not followed."""
    dout = np.ones((1, 2, 2, 2))
    idx = np.array([[[[0, 5], [-1, 99]], [[3, 1 << 40], [-(1 << 40), 15]]]], np.intp)
    dx = np.full((1, 2, 4, 4), 9.0)
    P.maxpool2d_backward(dout, idx, dx)
    expected = np.zeros((1, 2, 16))
    expected[0, 0, [0, 5]] = 1
    expected[0, 1, [3, 15]] = 1
    np.testing.assert_array_equal(dx.reshape(1, 2, 16), expected)


@pytest.mark.parametrize("geom", [(2, 2, 2, 2, 0, 0), (3, 3, 1, 1, 1, 1), (3, 2, 2, 1, 1, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_matches_the_reference(geom, dtype):
    x = rand((3, 4, 9, 8), dtype)
    kh, kw, sh, sw, ph, pw = geom
    os_ = (3, 4, (9 + 2 * ph - kh) // sh + 1, (8 + 2 * pw - kw) // sw + 1)
    dout = rand(os_, dtype, 1)
    res = {}
    for mod in (P, R):
        out, idx, dx = np.empty(os_, dtype), np.empty(os_, np.intp), np.empty(x.shape, dtype)
        mod.maxpool2d_forward(x, out, idx, geom)
        mod.maxpool2d_backward(dout, idx, dx)
        aout, adx = np.empty(os_, dtype), np.empty(x.shape, dtype)
        mod.avgpool2d_forward(x, aout, geom)
        mod.avgpool2d_backward(dout, adx, geom)
        res[mod] = (out, idx, dx, aout, adx)
    np.testing.assert_array_equal(res[P][1], res[R][1])       # the same winners
    rtol = 1e-5 if dtype == np.float32 else 1e-13             # sums in another order
    for a, r in zip(res[P], res[R]):
        np.testing.assert_allclose(a, r, rtol=rtol, atol=rtol)


def test_batchnorm2d_buffers_are_checked_in_c():
    x = rand((2, 3, 4, 4), np.float32)
    c = np.ones(3, np.float32)
    for bad_x in (rand((2, 3), np.float32), np.empty((2, 3, 0, 4), np.float32)):
        with pytest.raises(ValueError):
            B.bn2d_forward_train(bad_x, c, c, None, None, 0.1, 1e-5, bad_x, c.copy(),
                                 c.copy())
    with pytest.raises(ValueError):
        B.bn2d_forward_train(x, c, c, None, None, 0.1, 1e-5, np.empty((2, 3, 4, 5), np.float32),
                             c.copy(), c.copy())
    with pytest.raises(ValueError):
        B.bn2d_backward(x, x, np.ones(2, np.float32), c, c, True, np.empty_like(x), None, None)
