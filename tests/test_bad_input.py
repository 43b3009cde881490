"""Bad-input matrix: every public function and layer, fed wrong or unusual input.

Each case either works correctly (checked inside the case) or raises ValueError /
TypeError / RuntimeError whose message names the function or layer. Covered: wrong ndim
and shape, zero-size batches, wrong dtypes (int, bool, object, complex, float16, the
other float width), non-contiguous / reversed / Fortran-ordered / read-only / unaligned
arrays (must give exactly the contiguous result), bad labels, NaN and +-Inf (must
propagate, never be zeroed), calls out of order, bad parameter lists and state dicts,
initialisers, save / load.

The cases run in child interpreters (`sys.executable`, warnings as errors), many per
child, so a crash or hang in native code fails the one case that caused it instead of
killing pytest; the remaining cases then continue in a fresh child. Every case runs on
each backend.
"""
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
from conftest import FASTNN_PATH as SRC  # noqa: E402  (the imported fastnn's path)

ERRORS = ("ValueError", "TypeError", "RuntimeError")
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)

# name -> (function, expectation, names); expectation: "ok" (must work; the function
# checks the result), "error" (must raise one of ERRORS naming one of `names`) or
# "either" (works, or raises such an error)
CASES = {}


def case(name, fn, expect="ok", names=(), errors=ERRORS):
    if name in CASES:
        raise AssertionError("duplicate case %s" % name)
    if isinstance(names, str):
        names = (names,)
    CASES[name] = (fn, expect, tuple(names), tuple(errors))


# ------------------------------------------------------------------------------ helpers
def rnd(shape, dt, seed=0, scale=1.0):
    a = np.random.default_rng(seed).standard_normal(shape) * scale
    a = a.astype(dt)
    if a.ndim:
        a.reshape(-1)[0] = 0.7     # a positive first element: ReLU-like gradients pass it
    return a


def strided(a):
    """Same values, every other element of a bigger array (not contiguous)."""
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def reversed_view(a):
    """Same values, negative strides."""
    r = np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])
    return r[(slice(None, None, -1),) * a.ndim]


def readonly(a):
    r = np.array(a, copy=True)
    r.flags.writeable = False
    return r


def unaligned(a):
    """Same values in a C-contiguous array whose data pointer is misaligned by 1 byte."""
    buf = bytearray(a.nbytes + 1)
    u = np.frombuffer(buf, dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    u[...] = a
    assert not u.flags.aligned
    return u


LAYOUTS = {"strided": strided, "fortran": np.asfortranarray, "reversed": reversed_view,
           "readonly": readonly, "unaligned": unaligned}
BAD_DTYPES = {"int32": np.int32, "int64": np.int64, "bool": np.bool_, "object": object,
              "complex64": np.complex64, "complex128": np.complex128, "float16": np.float16}


def same(a, b):
    """Exactly equal results (arrays: shape, dtype and bits up to NaN payloads)."""
    if isinstance(a, (tuple, list)):
        assert isinstance(b, (tuple, list)) and len(a) == len(b), (a, b)
        for u, v in zip(a, b):
            same(u, v)
    elif a is None or b is None:
        assert a is None and b is None
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
        assert np.array_equal(a, b, equal_nan=True), "values differ"
    else:
        assert a == b or (a != a and b != b), (a, b)


def arrays_of(res):
    if isinstance(res, (tuple, list)):
        for r in res:
            yield from arrays_of(r)
    elif isinstance(res, np.ndarray):
        yield res
    elif isinstance(res, float):
        yield np.array(res)


def has_nan(res):
    return any(np.isnan(a).any() for a in arrays_of(res))


def all_finite(res):
    return all(np.isfinite(a).all() for a in arrays_of(res))


def assert_c_contiguous(res):
    for a in arrays_of(res):
        assert a.flags.c_contiguous


# ================================================================ functional API: ops
class Op:
    """One ops entry point: `make(dt)` builds good arguments (a dict), `call(args)`
    returns every output (and in-place updated array) as a list."""

    def __init__(self, label, fn_name, make, call, floats, labels=None, flex=(),
                 mixed_ok=(), inplace=(), none_ok=(), bad_shapes=None, nan_arg=None,
                 inf_visible=True):
        self.label, self.fn_name, self.make, self.call = label, fn_name, make, call
        self.floats, self.labels = floats, labels
        self.flex = set(flex)            # args accepting other ndims (activation x)
        self.mixed_ok = set(mixed_ok)    # args converted to the others' float dtype
        self.inplace = set(inplace)      # updated in place: must be writeable, contiguous
        self.none_ok = set(none_ok)
        self.bad_shapes = bad_shapes or {}
        self.nan_arg = nan_arg or floats[0]
        self.inf_visible = inf_visible   # +inf in nan_arg must show in the first output


def _ops():
    from fastnn import ops
    return ops


def _dense_fwd(act, kw=None):
    def make(dt):
        return {"x": rnd((5, 4), dt, 1), "w": rnd((4, 3), dt, 2), "b": rnd((3,), dt, 3)}

    def call(a):
        out, _ = _ops().dense_forward(a["x"], a["w"], a["b"], activation=act,
                                      activation_kw=kw)
        return [out]
    return make, call


def _backward_of(forward_make, forward_call, backward, out_shape):
    """An op whose perturbed argument is `dout` of a good forward."""
    def make(dt):
        a = forward_make(dt)
        a["dout"] = rnd(out_shape, dt, 9)
        return a

    def call(a):
        return backward(a)
    return make, call


def build_ops():
    ops_list = []
    acts = [("sigmoid", {}), ("tanh", {}), ("relu", {}), ("leaky_relu", {"negative_slope": 0.1}),
            ("elu", {"alpha": 0.5}), ("gelu", {}), ("gelu", {"approximate": "tanh"}),
            ("silu", {}), ("swish", {"beta": 2.0})]
    bounded = {"sigmoid", "tanh"}

    for act in (None, "relu", "gelu"):
        make, call = _dense_fwd(act)
        ops_list.append(Op("dense_forward[%s]" % act, "dense_forward", make, call,
                           ["x", "w", "b"], none_ok={"b"},
                           bad_shapes={"x": [(5, 5), (4, 5)], "w": [(5, 3), (3, 4)],
                                       "b": [(4,), (3, 1), (1,)]}))

    for act in (None, "tanh"):
        fmake, _ = _dense_fwd(act)

        def bwd(a, act=act):
            o = _ops()
            out, cache = o.dense_forward(a["x"], a["w"], a["b"], activation=act)
            return list(o.dense_backward(a["dout"], cache))
        make, call = _backward_of(fmake, None, bwd, (5, 3))
        ops_list.append(Op("dense_backward[%s]" % act, "dense_backward", make, call,
                           ["dout"], bad_shapes={"dout": [(5, 4), (3, 5), (15,)]}))

    for name, kw in acts:
        label = name + ("-tanh" if kw.get("approximate") else "")

        def amake(dt):
            return {"x": rnd((5, 4), dt, 4, 3.0)}

        def acall(a, name=name, kw=kw):
            y, _ = _ops().activation_forward(a["x"], name, **kw)
            return [y]
        ops_list.append(Op("activation_forward[%s]" % label, "activation_forward", amake,
                           acall, ["x"], flex={"x"}, bad_shapes={"x": [(1, 1, 1, 1, 2)]},
                           inf_visible=name not in bounded))

        def bwd(a, name=name, kw=kw):
            o = _ops()
            y, cache = o.activation_forward(a["x"], name, **kw)
            return [o.activation_backward(a["dout"], cache)]
        make, call = _backward_of(amake, None, bwd, (5, 4))
        ops_list.append(Op("activation_backward[%s]" % label, "activation_backward", make,
                           call, ["dout"], bad_shapes={"dout": [(4, 5), (20,), (5, 5)]}))

    def pmake(dt):
        return {"x": rnd((5, 4), dt, 5), "alpha": np.full(4, 0.25, dt)}

    def pcall(a):
        y, _ = _ops().prelu_forward(a["x"], a["alpha"])
        return [y]
    ops_list.append(Op("prelu_forward", "prelu_forward", pmake, pcall, ["x", "alpha"],
                       bad_shapes={"x": [(5, 3)], "alpha": [(3,), (4, 1), (2,)]}))

    def pbwd(a):
        o = _ops()
        y, cache = o.prelu_forward(a["x"], a["alpha"])
        return list(o.prelu_backward(a["dout"], cache))
    make, call = _backward_of(pmake, None, pbwd, (5, 4))
    ops_list.append(Op("prelu_backward", "prelu_backward", make, call, ["dout"],
                       bad_shapes={"dout": [(4, 5), (5, 3)]}))

    for training in (True, False):
        def bmake(dt):
            return {"x": rnd((6, 4), dt, 6), "gamma": rnd((4,), dt, 7) + 1,
                    "beta": rnd((4,), dt, 8), "running_mean": rnd((4,), dt, 10),
                    "running_var": np.abs(rnd((4,), dt, 11)) + 0.5}

        def bcall(a, training=training):
            out, _ = _ops().batchnorm_forward(a["x"], a["gamma"], a["beta"],
                                              a["running_mean"], a["running_var"],
                                              training=training)
            return [out, a["running_mean"], a["running_var"]]
        ops_list.append(Op("batchnorm_forward[train=%s]" % training, "batchnorm_forward",
                           bmake, bcall, ["x", "gamma", "beta", "running_mean", "running_var"],
                           inplace={"running_mean", "running_var"},
                           none_ok={"running_mean", "running_var"} if training else (),
                           bad_shapes={"x": [(6, 5)], "gamma": [(5,), (4, 1)],
                                       "beta": [(3,)], "running_mean": [(5,)],
                                       "running_var": [(3,), (4, 1)]}))

        def bbwd(a, training=training):
            o = _ops()
            out, cache = o.batchnorm_forward(a["x"], a["gamma"], a["beta"],
                                             a["running_mean"], a["running_var"],
                                             training=training)
            return list(o.batchnorm_backward(a["dout"], cache))
        make, call = _backward_of(bmake, None, bbwd, (6, 4))
        ops_list.append(Op("batchnorm_backward[train=%s]" % training, "batchnorm_backward",
                           make, call, ["dout"], bad_shapes={"dout": [(4, 6), (6, 5)]}))

    for fname in ("softmax_cross_entropy", "multiclass_hinge"):
        def lmake(dt):
            return {"logits": rnd((5, 4), dt, 12), "labels": np.array([0, 3, 1, 2, 3])}

        def lcall(a, fname=fname):
            loss, grad = getattr(_ops(), fname)(a["logits"], a["labels"])
            assert isinstance(loss, float)
            return [loss, grad]
        # hinge: +inf on the true class legitimately gives a zero loss
        ops_list.append(Op(fname, fname, lmake, lcall, ["logits"], labels="labels",
                           bad_shapes={"logits": [(5, 1, 4)]},
                           inf_visible=fname != "multiclass_hinge"))

    for fname, (pn, tn) in (("bce_with_logits", ("logits", "targets")),
                            ("mse", ("pred", "target"))):
        for shape in ((5, 4), (7,)):
            def mmake(dt, shape=shape, pn=pn, tn=tn):
                t = np.random.default_rng(13).uniform(size=shape).astype(dt)
                return {pn: rnd(shape, dt, 14), tn: t}

            def mcall(a, fname=fname, pn=pn, tn=tn):
                loss, grad = getattr(_ops(), fname)(a[pn], a[tn])
                assert isinstance(loss, float)
                return [loss, grad]
            bad = [(5, 5), (4, 5)] if len(shape) == 2 else [(6,), (7, 1)]
            ops_list.append(Op("%s[%dd]" % (fname, len(shape)), fname, mmake, mcall,
                               [pn, tn], mixed_ok={tn}, bad_shapes={pn: bad, tn: bad}))
    return ops_list


def _op_case(op, dt, mutate, expect, name, nonfinite=None):
    """A case calling op with one argument changed by mutate(args) (in place)."""
    def run():
        args = op.make(dt)
        mutate(args)
        if nonfinite is None:
            res = op.call(args)
        else:
            with np.errstate(all="ignore"):
                res = op.call(args)
        assert_c_contiguous(res)
        if nonfinite == "nan":
            assert has_nan(res[0]), "NaN input did not reach the output"
        elif nonfinite == "+inf" and op.inf_visible:
            assert not all_finite(res[0]), "+inf input vanished from the output"
        return res
    case(name, run, expect, op.fn_name)


def _op_same_case(op, dt, mutate, name):
    """Must work and equal the result of the untouched (contiguous) arguments."""
    def run():
        ref = op.call(op.make(dt))
        args = op.make(dt)
        mutate(args)
        res = op.call(args)
        assert_c_contiguous(res)
        same(res, ref)
    case(name, run, "ok", op.fn_name)


def register_ops():
    for op in build_ops():
        base = "ops.%s" % op.label
        for dt in (F32, F64):
            d = "f32" if dt == F32 else "f64"
            _op_same_case(op, dt, lambda a: None, "%s.%s.baseline" % (base, d))
            for arg in op.floats:
                pre = "%s.%s.%s" % (base, d, arg)
                # layouts: same result (in-place arguments must be the caller's own
                # writeable contiguous arrays)
                for lname, f in LAYOUTS.items():
                    mut = (lambda a, arg=arg, f=f: a.__setitem__(arg, f(a[arg])))
                    if arg in op.inplace and lname in ("strided", "reversed", "readonly"):
                        _op_case(op, dt, mut, "error", "%s.%s" % (pre, lname))
                    elif arg in op.inplace and lname in ("fortran", "unaligned"):
                        # 1-D Fortran order is C order; unaligned: updated in place or
                        # rejected, never mis-read
                        _op_case(op, dt, mut, "either", "%s.%s" % (pre, lname))
                    else:
                        _op_same_case(op, dt, mut, "%s.%s" % (pre, lname))
                # non-finite values propagate
                if arg == op.nan_arg:
                    for val, tag in ((np.nan, "nan"), (np.inf, "+inf"), (-np.inf, "-inf")):
                        def mut(a, arg=arg, val=val):
                            a[arg] = a[arg].copy()
                            a[arg].reshape(-1)[0] = val
                        _op_case(op, dt, mut, "ok", "%s.%s" % (pre, tag), nonfinite=tag)
                if dt == F64:
                    continue
                # wrong dtypes
                for tname, t in BAD_DTYPES.items():
                    mut = (lambda a, arg=arg, t=t: a.__setitem__(arg, a[arg].astype(t)))
                    _op_case(op, dt, mut, "error", "%s.dtype-%s" % (pre, tname))
                other = (lambda a, arg=arg: a.__setitem__(arg, a[arg].astype(np.float64)))
                if arg in op.mixed_ok:          # converted to the prediction's dtype
                    _op_same_case(op, dt, other, "%s.dtype-float64" % pre)
                elif arg == op.floats[0] and (op.mixed_ok or len(op.floats) == 1) \
                        and not op.fn_name.endswith("_backward"):
                    # the dtype-defining argument: float64 is simply supported
                    _op_case(op, dt, other, "ok", "%s.dtype-float64" % pre)
                else:       # must match the other inputs (or the forward's cache)
                    _op_case(op, dt, other, "error", "%s.dtype-float64" % pre)
                # big-endian float32: a different dtype for the ops (rejected) -- never misread
                be = (lambda a, arg=arg: a.__setitem__(arg, a[arg].astype(">f4")))
                _op_case(op, dt, be, "either", "%s.dtype-bigendian" % pre)
                # wrong ndim and shapes
                shapes = list(op.bad_shapes.get(arg, []))
                if arg not in op.flex:
                    shapes += ["ndim+1", "ndim-1"]
                shapes += ["scalar"]
                for shp in shapes:
                    def mut(a, arg=arg, shp=shp):
                        g = a[arg]
                        if shp == "ndim+1":
                            a[arg] = g[..., None].copy()
                        elif shp == "ndim-1":
                            a[arg] = g.reshape(-1)[:1].reshape(()) if g.ndim == 1 \
                                else g.reshape(g.shape[0], -1)[:, 0].copy()
                        elif shp == "scalar":
                            a[arg] = g.dtype.type(1.5)
                        else:
                            a[arg] = np.ones(shp, g.dtype)
                    _op_case(op, dt, mut, "error", "%s.shape-%s" % (pre, shp))
                # empty arrays
                def mut_empty(a, arg=arg):
                    g = a[arg]
                    a[arg] = np.zeros((0,) + g.shape[1:], g.dtype)
                _op_case(op, dt, mut_empty, "error", "%s.empty" % pre)
                # not arrays at all
                for bad, tag in (("abc", "str"), ({"a": 1}, "dict"), ([[1, 2], [3]], "ragged")):
                    mut = (lambda a, arg=arg, bad=bad: a.__setitem__(arg, bad))
                    _op_case(op, dt, mut, "error", "%s.%s" % (pre, tag))
                mut = (lambda a, arg=arg: a.__setitem__(arg, None))
                _op_case(op, dt, mut, "ok" if arg in op.none_ok else "error",
                         "%s.None" % pre)
            if op.labels and dt == F32:
                register_label_cases(op, dt, base + ".f32." + op.labels)


def register_label_cases(op, dt, pre):
    lab = op.labels

    def setl(v):
        return lambda a: a.__setitem__(lab, v(a[lab]) if callable(v) else v)
    errors = {
        "negative": lambda l: np.where(np.arange(5) == 2, -1, l),
        "equal-C": lambda l: np.where(np.arange(5) == 2, 4, l),
        "huge": lambda l: np.where(np.arange(5) == 2, 2 ** 62, l),
        "uint64-huge": lambda l: np.where(np.arange(5) == 2, 2 ** 63 + 7, l).astype(np.uint64),
        "float": lambda l: l.astype(np.float64),
        "float-integral-list": lambda l: [float(v) for v in l],
        "bool": lambda l: l > 1,
        "object": lambda l: l.astype(object),
        "complex": lambda l: l.astype(complex),
        "short": lambda l: l[:4],
        "long": lambda l: np.concatenate([l, l[:1]]),
        "2d": lambda l: l[:, None],
        "row": lambda l: l[None, :],
        "scalar": lambda l: 1,
        "empty": lambda l: np.zeros(0, np.int64),
        "None": lambda l: None,
        "str": lambda l: "01234",
    }
    for tag, f in errors.items():
        _op_case(op, dt, setl(f), "error", "%s.%s" % (pre, tag))
    works = {
        "int32": lambda l: l.astype(np.int32),
        "uint8": lambda l: l.astype(np.uint8),
        "int16-bigendian": lambda l: l.astype(">i2"),
        "list": lambda l: l.tolist(),
        "strided": strided,
        "reversed": reversed_view,
        "readonly": readonly,
        "unaligned": unaligned,
    }
    for tag, f in works.items():
        _op_same_case(op, dt, setl(f), "%s.%s" % (pre, tag))


def register_ops_misc():
    def o():
        return _ops()
    x = lambda: rnd((5, 4), F32, 1)
    w = lambda: rnd((4, 3), F32, 2)
    n = "dense_forward"
    case("ops.dense_forward.bad-activation", lambda: o().dense_forward(x(), w(), None, "bogus"),
         "error", n)
    case("ops.dense_forward.activation-not-str", lambda: o().dense_forward(x(), w(), None, 3),
         "error", n)
    case("ops.dense_forward.activation_kw-not-dict",
         lambda: o().dense_forward(x(), w(), None, "relu", activation_kw=5), "error", n)
    case("ops.dense_forward.activation_kw-unknown",
         lambda: o().dense_forward(x(), w(), None, "relu", activation_kw={"alpha": 1}),
         "error", n)
    case("ops.dense_forward.activation_kw-str-value",
         lambda: o().dense_forward(x(), w(), None, "elu", activation_kw={"alpha": "1"}),
         "error", n)

    def np_scalar_kw():
        y1, _ = o().activation_forward(x(), "leaky_relu", negative_slope=np.float32(0.25))
        y2, _ = o().activation_forward(x(), "leaky_relu", negative_slope=0.25)
        same(y1, y2)
    case("ops.activation_forward.numpy-scalar-kw", np_scalar_kw, "either", "activation_forward")
    n = "activation_forward"
    case("ops.activation_forward.bad-name", lambda: o().activation_forward(x(), "relu6"),
         "error", n)
    case("ops.activation_forward.name-None-identity",
         lambda: same(o().activation_forward(x(), None)[0], x()), "either", n)
    case("ops.activation_forward.gelu-bad-approx",
         lambda: o().activation_forward(x(), "gelu", approximate="fast"), "error", n)
    case("ops.activation_forward.kw-bool",
         lambda: o().activation_forward(x(), "elu", alpha=True), "error", n)
    case("ops.activation_forward.5d", lambda: o().activation_forward(
        np.ones((1, 1, 1, 1, 2), np.float32), "relu"), "error", n)
    case("ops.activation_forward.4d-works", lambda: same(
        o().activation_forward(np.ones((2, 1, 3, 2), np.float32), "relu")[0],
        np.ones((2, 1, 3, 2), np.float32)))

    # backward with a cache it cannot use
    caches = {
        "None": lambda: None,
        "tuple": lambda: (1, 2, 3),
        "other-op": lambda: o().activation_forward(x(), "relu")[1],
        "dict": lambda: {"x": x()},
    }
    bwds = {"dense_backward": (3, lambda d, c: o().dense_backward(d, c)),
            "activation_backward": (4, lambda d, c: o().activation_backward(d, c)),
            "prelu_backward": (4, lambda d, c: o().prelu_backward(d, c)),
            "batchnorm_backward": (4, lambda d, c: o().batchnorm_backward(d, c))}
    for fname, (width, f) in bwds.items():
        for tag, mk in caches.items():
            if fname == "activation_backward" and tag == "other-op":
                mk = lambda: o().dense_forward(x(), w(), None)[1]
            case("ops.%s.cache-%s" % (fname, tag),
                 lambda f=f, mk=mk, width=width: f(rnd((5, width), F32), mk()), "error", fname)

    # batch norm scalars and modes
    def bn(**kw):
        args = dict(gamma=np.ones(4, np.float32), beta=np.zeros(4, np.float32),
                    running_mean=np.zeros(4, np.float32), running_var=np.ones(4, np.float32))
        args.update(kw)
        xx = args.pop("x", rnd((6, 4), F32))
        return o().batchnorm_forward(xx, **args)
    n = "batchnorm_forward"
    for tag, kw in {"momentum-nan": {"momentum": np.nan}, "momentum-2": {"momentum": 2.0},
                    "momentum-str": {"momentum": "0.1"}, "eps-0": {"eps": 0.0},
                    "eps-negative": {"eps": -1e-5}, "eps-inf": {"eps": np.inf},
                    "batch-1-train": {"x": rnd((1, 4), F32)},
                    "eval-without-stats": {"training": False, "running_mean": None},
                    "running-list": {"running_mean": [0.0] * 4},
                    "training-str": {"training": "no"},
                    "training-None": {"training": None}}.items():
        case("ops.batchnorm_forward.%s" % tag, lambda kw=kw: bn(**kw), "error", n)
    case("ops.batchnorm_forward.batch-1-eval",
         lambda: bn(x=rnd((1, 4), F32), training=False))
    case("ops.batchnorm_forward.training-numpy-bool", lambda: bn(training=np.bool_(False)))

    def hinge(margin):
        return o().multiclass_hinge(rnd((5, 4), F32), np.array([0, 1, 2, 3, 0]), margin=margin)
    for tag, m in (("nan", np.nan), ("inf", np.inf), ("str", "1"), ("None", None)):
        case("ops.multiclass_hinge.margin-%s" % tag, lambda m=m: hinge(m), "error",
             "multiclass_hinge")
    case("ops.multiclass_hinge.margin-0", lambda: hinge(0.0))
    case("ops.multiclass_hinge.margin-numpy", lambda: hinge(np.float32(2.0)))

    def bce_target_out_of_range():
        loss, g = o().bce_with_logits(rnd((5, 4), F32), np.full((5, 4), 2.0, np.float32))
        assert np.isfinite(loss)
    case("ops.bce_with_logits.target-out-of-range", bce_target_out_of_range, "either",
         "bce_with_logits")

    def huge_logits():
        with np.errstate(all="ignore"):
            z = np.array([[1e30, -1e30, 0.0], [3e38, 3e38, -3e38]], np.float32)
            loss, g = o().softmax_cross_entropy(z, np.array([0, 2]))
        assert np.isfinite(loss) or np.isinf(loss)
        assert np.isfinite(g).all()
    case("ops.softmax_cross_entropy.huge-logits", huge_logits)


# ============================================================================== layers
class LayerSpec:
    def __init__(self, label, factory, shape, accepts_ndim=(2,), features=True,
                 inf_visible=True, train=True, grads=True):
        self.label, self.factory, self.shape = label, factory, shape
        self.accepts_ndim = accepts_ndim    # input ndims that work
        self.features = features            # the last axis size is checked
        self.inf_visible = inf_visible
        self.train = train
        self.grads = grads                  # backward reads dout (False: identity)


def _L():
    import fastnn.layers as L
    return L


def layer_specs():
    L = _L
    specs = []
    specs.append(LayerSpec("Dense", lambda: L().Dense(4, 3, rng=0), (5, 4)))
    specs.append(LayerSpec("Dense[relu]", lambda: L().Dense(4, 3, activation="relu", rng=0),
                           (5, 4)))
    specs.append(LayerSpec("Dense[nobias-f64]", lambda: L().Dense(4, 3, bias=False,
                                                                  dtype=np.float64, rng=0),
                           (5, 4)))
    specs.append(LayerSpec("Maxout", lambda: L().Maxout(4, 3, pieces=2, rng=0), (5, 4)))
    for cls, args, bounded in (("Sigmoid", (), True), ("Tanh", (), True), ("ReLU", (), False),
                               ("LeakyReLU", (0.1,), False), ("ELU", (0.5,), False),
                               ("GELU", (), False), ("GELU", ("tanh",), False),
                               ("SiLU", (), False), ("Swish", (2.0,), False)):
        label = cls + ("[%s]" % args[0] if args else "")
        specs.append(LayerSpec(label, lambda cls=cls, args=args: getattr(L(), cls)(*args),
                               (5, 4), accepts_ndim=(1, 2, 3, 4), features=False,
                               inf_visible=not bounded))
    specs.append(LayerSpec("PReLU", lambda: L().PReLU(), (5, 4), accepts_ndim=(1, 2),
                           features=False))
    specs.append(LayerSpec("PReLU[4]", lambda: L().PReLU(4, init=0.1), (5, 4)))
    specs.append(LayerSpec("BatchNorm1d", lambda: L().BatchNorm1d(4), (6, 4)))
    specs.append(LayerSpec("BatchNorm1d[eval]", lambda: _bn_eval(), (6, 4)))
    specs.append(LayerSpec("BatchNorm1d[noaffine]", lambda: L().BatchNorm1d(4, affine=False),
                           (6, 4)))
    specs.append(LayerSpec("Dropout", lambda: L().Dropout(0.5, rng=0), (5, 4),
                           accepts_ndim=(1, 2, 3, 4, 5), features=False))
    specs.append(LayerSpec("Dropout[eval]", lambda: L().Dropout(0.5, rng=0).eval(), (5, 4),
                           accepts_ndim=(1, 2, 3, 4, 5), features=False))
    specs.append(LayerSpec("Flatten", lambda: L().Flatten(), (5, 2, 2),
                           accepts_ndim=(2, 3, 4, 5), features=False))
    specs.append(LayerSpec("Sequential", lambda: _mlp(), (6, 4)))
    image = dict(accepts_ndim=(4,), features=False)
    specs.append(LayerSpec("Conv2d", lambda: L().Conv2d(2, 3, 3, padding=1, rng=0),
                           (3, 2, 5, 5), **image))
    specs.append(LayerSpec("Conv2d[relu-f64]", lambda: L().Conv2d(
        2, 3, (3, 2), stride=2, dilation=(1, 2), activation="relu", bias=False,
        dtype=np.float64, rng=0), (3, 2, 7, 6), **image))
    specs.append(LayerSpec("MaxPool2d", lambda: L().MaxPool2d(2), (3, 2, 6, 4), **image))
    specs.append(LayerSpec("AvgPool2d", lambda: L().AvgPool2d(3, 1, 1), (3, 2, 5, 4),
                           **image))
    specs.append(LayerSpec("GlobalAvgPool2d", lambda: L().GlobalAvgPool2d(), (3, 2, 5, 4),
                           **image))
    specs.append(LayerSpec("BatchNorm2d", lambda: L().BatchNorm2d(2), (3, 2, 4, 5), **image))
    specs.append(LayerSpec("Residual", lambda: L().Residual(L().Conv2d(2, 2, 3, padding=1,
                                                                       rng=0)),
                           (3, 2, 5, 4), **image))
    specs.append(LayerSpec("Sequential[cnn]", lambda: _cnn(), (3, 1, 8, 8), **image))
    specs.append(LayerSpec("Sequential[empty]", lambda: L().Sequential(), (5, 4),
                           accepts_ndim=(1, 2, 3, 4, 5), features=False))
    return specs


def _bn_eval():
    bn = _L().BatchNorm1d(4)
    bn.running_mean = np.array([0.1, -0.2, 0.3, 0.0])
    bn.running_var = np.array([1.5, 0.5, 2.0, 1.0])
    return bn.eval()


def _cnn():
    L = _L()
    block = L.Sequential(L.Conv2d(3, 3, 3, padding=1, rng=1), L.BatchNorm2d(3), L.ReLU())
    return L.Sequential(L.Conv2d(1, 3, 3, activation="relu", rng=0), L.MaxPool2d(2),
                        L.Residual(block), L.AvgPool2d(2, padding=1), L.Flatten(),
                        L.Dense(12, 4, rng=2))


def _mlp():
    L = _L()
    return L.Sequential(L.Dense(4, 8, rng=0), L.BatchNorm1d(8), L.ReLU(), L.Dropout(0.2, rng=1),
                        L.Maxout(8, 3, pieces=2, rng=2), L.Tanh(), L.Dense(3, 3, rng=3))


def _fwd_bwd(spec, x, dout=None, backward=True):
    """Fresh layer: forward(x), then backward(dout or ones) -> (y, dx, grads)."""
    layer = spec.factory()
    y = layer(x)
    if not backward:
        return [y]
    dy = np.ones_like(y) if dout is None else dout(y)
    dx = layer.backward(dy)
    return [y, dx] + [p.grad.copy() for p in layer.parameters()]


def _layer_case(spec, name, make_x, expect="ok", check=None, nonfinite=False, ref_x=None,
                dout=None, backward=True):
    def run():
        x = make_x()
        if nonfinite:
            with np.errstate(all="ignore"):
                res = _fwd_bwd(spec, x, dout, backward)
        else:
            res = _fwd_bwd(spec, x, dout, backward)
        assert_c_contiguous(res)
        if ref_x is not None:
            same(res, _fwd_bwd(spec, ref_x(), dout, backward))
        if check is not None:
            check(res)
    case(name, run, expect, (spec.label.split("[")[0],))


def register_layers():
    for spec in layer_specs():
        base = "layers.%s" % spec.label
        dt = spec.factory().dtype or F32
        good = lambda spec=spec, dt=dt: rnd(spec.shape, dt, 21)
        _layer_case(spec, base + ".baseline", good)
        # layouts and convertible inputs: same result
        for lname, f in LAYOUTS.items():
            _layer_case(spec, "%s.x-%s" % (base, lname), lambda f=f, good=good: f(good()),
                        ref_x=good)
        other = F64 if dt == F32 else F32
        # a model converts inputs to its dtype; a module without parameters keeps the
        # input's float32/float64 width (float16 -> float32)
        fixed = spec.factory().dtype
        conv = lambda good=good, other=other: good().astype(other)
        _layer_case(spec, "%s.x-%s" % (base, other.name), conv,
                    ref_x=lambda conv=conv, t=fixed or other: conv().astype(t))
        f16 = lambda good=good: good().astype(np.float16)
        _layer_case(spec, base + ".x-float16", f16,
                    ref_x=lambda f16=f16, t=fixed or F32: f16().astype(t))
        for order in ("<", ">"):
            for width in (4, 8):
                bo = lambda good=good, t="%sf%d" % (order, width): good().astype(t)
                _layer_case(spec, "%s.x-%sf%d" % (base, "le" if order == "<" else "be", width),
                            bo, ref_x=lambda bo=bo, t=fixed or "f%d" % width: bo().astype(t))
        lst = lambda good=good: good().tolist()
        _layer_case(spec, base + ".x-list", lst,
                    ref_x=lambda lst=lst, t=fixed or F64: np.array(lst(), dtype=t))
        # bad dtypes
        for tname, t in BAD_DTYPES.items():
            if tname == "float16":
                continue
            _layer_case(spec, "%s.x-%s" % (base, tname), lambda t=t, good=good: good().astype(t),
                        expect="error")
        for tag, bad in (("None", None), ("str", "abc"), ("dict", {}), ("ragged", [[1.0], [1.0, 2.0]])):
            _layer_case(spec, "%s.x-%s" % (base, tag), lambda bad=bad: bad, expect="error")
        # shapes
        _layer_case(spec, base + ".x-0d", lambda dt=dt: np.array(1.0, dt), expect="error")
        for nd in (1, 2, 3, 4, 5):
            if nd == len(spec.shape):
                continue
            shape = (spec.shape + (3, 2, 2, 2))[:nd] if nd > len(spec.shape) else spec.shape[:nd]
            expect = "ok" if nd in spec.accepts_ndim else "error"
            _layer_case(spec, "%s.x-%dd" % (base, nd), lambda shape=shape, dt=dt: rnd(shape, dt, 22),
                        expect=expect)
        if spec.features:
            bad = spec.shape[:-1] + (spec.shape[-1] + 1,)
            _layer_case(spec, base + ".x-wrong-features", lambda bad=bad, dt=dt: rnd(bad, dt),
                        expect="error")

        # zero-size batch: works (an empty result) or a named error
        def empty_check(res, spec=spec):
            assert res[0].shape[0] == 0
        zero = spec.shape[:1] and (0,) + spec.shape[1:]
        _layer_case(spec, base + ".x-empty-batch", lambda zero=zero, dt=dt: np.zeros(zero, dt),
                    expect="either", check=empty_check)
        # NaN / Inf propagate
        for val, tag in ((np.nan, "nan"), (np.inf, "+inf"), (-np.inf, "-inf")):
            def mk(val=val, good=good):
                x = good()
                x.reshape(-1)[0] = val
                return x

            def chk(res, tag=tag, spec=spec):
                if tag == "nan":
                    assert has_nan(res[0]), "NaN input vanished from the output"
                elif tag == "+inf" and spec.inf_visible:
                    assert not all_finite(res[0]), "+inf input vanished from the output"
            _layer_case(spec, "%s.x-%s" % (base, tag), mk, check=chk, nonfinite=True)

        # backward: dout variants
        for lname, f in LAYOUTS.items():
            _layer_case(spec, "%s.dout-%s" % (base, lname), good,
                        dout=lambda y, f=f: f(rnd(y.shape, y.dtype, 23)), ref_x=good)
        _layer_case(spec, base + ".dout-otherfloat", good,
                    dout=lambda y, other=other: rnd(y.shape, y.dtype, 23).astype(other))
        for tname in ("int64", "bool", "complex128", "object"):
            _layer_case(spec, "%s.dout-%s" % (base, tname), good, expect="error",
                        dout=lambda y, t=BAD_DTYPES[tname]: np.ones(y.shape, t))
        _layer_case(spec, base + ".dout-wrong-shape", good, expect="error",
                    dout=lambda y: np.ones(y.shape[:-1] + (y.shape[-1] + 1,), y.dtype))
        _layer_case(spec, base + ".dout-transposed-shape", good,
                    expect="error" if len(set(spec.shape)) > 1 else "ok",
                    dout=lambda y: np.ones(y.shape[::-1], y.dtype))
        _layer_case(spec, base + ".dout-None", good, expect="error", dout=lambda y: None)

        def nan_dout(y):
            d = np.ones(y.shape, y.dtype)
            d.reshape(-1)[0] = np.nan
            return d

        def chk_nan_grad(res, spec=spec):
            assert has_nan(res[1:]) or not spec.grads, "NaN dout vanished from the gradients"
        _layer_case(spec, base + ".dout-nan", good, dout=nan_dout, check=chk_nan_grad,
                    nonfinite=True)

        # out of order
        def backward_first(spec=spec):
            spec.factory().backward(np.ones((5, 3), np.float32))
        case(base + ".backward-before-forward", backward_first, "error",
             (spec.label.split("[")[0],))

        def backward_twice(spec=spec, good=good):
            layer = spec.factory()
            y = layer(good())
            d1 = layer.backward(np.ones_like(y))
            g1 = [p.grad.copy() for p in layer.parameters()]
            d2 = layer.backward(np.ones_like(y))
            same(d1, d2)
            same(g1, [p.grad.copy() for p in layer.parameters()])
        case(base + ".backward-twice", backward_twice)

        def forward_other_batch_then_backward(spec=spec, dt=dt):
            layer = spec.factory()
            layer(rnd((8,) + spec.shape[1:], dt, 1))
            y = layer(rnd(spec.shape, dt, 2))
            layer.backward(np.ones((8,) + y.shape[1:], dt))
        case(base + ".backward-shape-of-older-forward", forward_other_batch_then_backward,
             "error", (spec.label.split("[")[0],))

        def after_to(spec=spec, good=good):
            layer = spec.factory()
            layer(good())
            layer.to(np.float64)
            layer.backward(np.ones((5, 3)))
        if spec.factory().dtype is not None:
            case(base + ".backward-after-to", after_to, "error", (spec.label.split("[")[0],))


def register_layer_misc():
    L = _L
    bad_ctor = {
        "Dense.in-0": lambda: L().Dense(0, 3),
        "Dense.in-float": lambda: L().Dense(4.0, 3),
        "Dense.in-bool": lambda: L().Dense(True, 3),
        "Dense.out-negative": lambda: L().Dense(4, -1),
        "Dense.activation-bogus": lambda: L().Dense(4, 3, activation="bogus"),
        "Dense.activation_kw-list": lambda: L().Dense(4, 3, activation="elu", activation_kw=[1]),
        "Dense.dtype-int": lambda: L().Dense(4, 3, dtype=np.int32),
        "Dense.dtype-float16": lambda: L().Dense(4, 3, dtype=np.float16),
        "Dense.init-bogus": lambda: L().Dense(4, 3, init="bogus"),
        "Dense.init-wrong-shape": lambda: L().Dense(4, 3, init=lambda s, rng, dtype: np.zeros(3)),
        "Dense.rng-str": lambda: L().Dense(4, 3, rng="seed"),
        "Dense.rng-negative": lambda: L().Dense(4, 3, rng=-1),
        "Dense.bias-str": lambda: L().Dense(4, 3, bias="yes"),
        "Maxout.pieces-0": lambda: L().Maxout(4, 3, pieces=0),
        "Maxout.pieces-float": lambda: L().Maxout(4, 3, pieces=2.0),
        "LeakyReLU.slope-str": lambda: L().LeakyReLU("0.1"),
        "LeakyReLU.slope-nan": lambda: L().LeakyReLU(np.nan),
        "ELU.alpha-inf": lambda: L().ELU(np.inf),
        "GELU.approximate-bogus": lambda: L().GELU("exact"),
        "Swish.beta-None": lambda: L().Swish(None),
        "PReLU.num-0": lambda: L().PReLU(0),
        "PReLU.init-nan": lambda: L().PReLU(init=np.nan),
        "BatchNorm1d.features-0": lambda: L().BatchNorm1d(0),
        "BatchNorm1d.eps-0": lambda: L().BatchNorm1d(4, eps=0.0),
        "BatchNorm1d.momentum-2": lambda: L().BatchNorm1d(4, momentum=2.0),
        "BatchNorm1d.affine-str": lambda: L().BatchNorm1d(4, affine="yes"),
        "Dropout.p-1.5": lambda: L().Dropout(1.5),
        "Dropout.p-negative": lambda: L().Dropout(-0.1),
        "Dropout.p-nan": lambda: L().Dropout(np.nan),
        "Dropout.rng-float": lambda: L().Dropout(0.5, rng=0.5),
        "Sequential.non-module": lambda: L().Sequential(L().Dense(2, 2), "relu"),
        "Sequential.mixed-dtypes": lambda: L().Sequential(L().Dense(2, 2),
                                                          L().Dense(2, 2, dtype=np.float64)),
        "Sequential.append-non-module": lambda: L().Sequential().append(3),
        "Sequential.index-str": lambda: L().Sequential(L().ReLU())["0"],
        "Conv2d.in-0": lambda: L().Conv2d(0, 3, 3),
        "Conv2d.kernel-0": lambda: L().Conv2d(2, 3, 0),
        "Conv2d.kernel-float": lambda: L().Conv2d(2, 3, 3.0),
        "Conv2d.kernel-triple": lambda: L().Conv2d(2, 3, (3, 3, 3)),
        "Conv2d.stride-0": lambda: L().Conv2d(2, 3, 3, stride=0),
        "Conv2d.stride-pair-0": lambda: L().Conv2d(2, 3, 3, stride=(1, 0)),
        "Conv2d.padding-negative": lambda: L().Conv2d(2, 3, 3, padding=-1),
        "Conv2d.dilation-0": lambda: L().Conv2d(2, 3, 3, dilation=0),
        "Conv2d.dtype-int": lambda: L().Conv2d(2, 3, 3, dtype=np.int32),
        "Conv2d.activation-bogus": lambda: L().Conv2d(2, 3, 3, activation="bogus"),
        "Conv2d.init-wrong-shape": lambda: L().Conv2d(
            2, 3, 3, init=lambda s, rng, dtype: np.zeros((2, 3, 3, 3))),
        "MaxPool2d.kernel-0": lambda: L().MaxPool2d(0),
        "MaxPool2d.stride-0": lambda: L().MaxPool2d(2, stride=0),
        "MaxPool2d.padding-negative": lambda: L().MaxPool2d(2, padding=-1),
        "MaxPool2d.padding-over-half": lambda: L().MaxPool2d(2, padding=2),
        "AvgPool2d.kernel-str": lambda: L().AvgPool2d("2"),
        "AvgPool2d.padding-over-half": lambda: L().AvgPool2d((3, 2), padding=(1, 2)),
        "BatchNorm2d.features-0": lambda: L().BatchNorm2d(0),
        "BatchNorm2d.dtype-int": lambda: L().BatchNorm2d(3, dtype=np.int64),
        "Residual.non-module": lambda: L().Residual(lambda x: x),
    }
    for tag, f in bad_ctor.items():
        case("layers.ctor.%s" % tag, f, "error", tag.split(".")[0])
    case("layers.ctor.Sequential.index-out-of-range", lambda: L().Sequential(L().ReLU())[3],
         "error", "Sequential", errors=ERRORS + ("IndexError",))

    image_forward = {   # a layer, the input that does not fit it
        "Conv2d.channel-mismatch": (lambda: L().Conv2d(3, 2, 3), (2, 4, 6, 6)),
        "Conv2d.kernel-larger-than-padded-input": (lambda: L().Conv2d(1, 2, 5, padding=1),
                                                   (2, 1, 2, 6)),
        "Conv2d.dilated-kernel-too-large": (lambda: L().Conv2d(1, 2, 3, dilation=3),
                                            (2, 1, 6, 6)),
        "MaxPool2d.kernel-larger-than-input": (lambda: L().MaxPool2d(3), (2, 1, 2, 6)),
        "AvgPool2d.kernel-larger-than-padded-input": (lambda: L().AvgPool2d(5, padding=1),
                                                      (2, 1, 2, 6)),
        "BatchNorm2d.channel-mismatch": (lambda: L().BatchNorm2d(3), (2, 4, 3, 3)),
        "BatchNorm2d.one-value-per-channel": (lambda: L().BatchNorm2d(3), (1, 3, 1, 1)),
        "Residual.module-changes-shape": (lambda: L().Residual(L().Conv2d(2, 2, 3)),
                                          (2, 2, 5, 5)),
    }
    for tag, (make, shape) in image_forward.items():
        case("layers.%s" % tag, lambda make=make, shape=shape: make()(
            np.ones(shape, np.float32)), "error", tag.split(".")[0])
    case("layers.BatchNorm2d.one-value-per-channel-eval",
         lambda: L().BatchNorm2d(3).eval()(np.ones((1, 3, 1, 1), np.float32)))

    def dropout_p1():
        y = L().Dropout(1.0, rng=0)(np.ones((3, 4), np.float32))
        same(y, np.zeros((3, 4), np.float32))
    case("layers.Dropout.p-1", dropout_p1)

    def bn_batch1():
        L().BatchNorm1d(4)(np.ones((1, 4), np.float32))
    case("layers.BatchNorm1d.batch-1-train", bn_batch1, "error", "BatchNorm1d")
    case("layers.BatchNorm1d.batch-1-eval",
         lambda: L().BatchNorm1d(4).eval()(np.ones((1, 4), np.float32)))

    def bn_constant_column():
        bn = L().BatchNorm1d(3)
        x = np.ones((4, 3), np.float32)
        y = bn(x)
        assert np.isfinite(y).all() and np.isfinite(bn.backward(np.ones_like(y))).all()
    case("layers.BatchNorm1d.constant-input", bn_constant_column)

    # parameters and state dicts
    def wrong_param_assign():
        d = L().Dense(4, 3)
        d.weight.data = np.zeros((3, 4))
    case("layers.Parameter.data-wrong-shape", wrong_param_assign, "error", "Parameter")

    def complex_grad():
        d = L().Dense(4, 3)
        d.weight.grad = np.zeros((4, 3), complex)
    case("layers.Parameter.grad-complex", complex_grad, "error", "Parameter")
    case("layers.Parameter.data-object", lambda: L().Parameter(np.zeros(3, object)), "error",
         "Parameter")
    case("layers.Parameter.data-str", lambda: L().Parameter("abc"), "error", "Parameter")

    def weight_not_param():
        L().Dense(4, 3).weight = np.zeros((4, 3))
    case("layers.Dense.assign-array-to-weight", weight_not_param, "error", "Dense")

    def replaced_param_before_forward():
        d = L().Dense(4, 3)
        d.weight = L().Parameter(np.zeros((5, 3), np.float32))
        d(np.ones((2, 4), np.float32))
    case("layers.Dense.replaced-weight-wrong-shape", replaced_param_before_forward, "error",
         ("Dense", "dense_forward"))

    def replaced_param_between():
        d = L().Dense(4, 3)
        y = d(np.ones((2, 4), np.float32))
        d.weight = L().Parameter(np.zeros((1, 1), np.float32))
        d.backward(np.ones_like(y))
    case("layers.Dense.replaced-weight-between-forward-backward", replaced_param_between,
         "either", ("Dense", "dense_backward"))

    # parameters / buffers replaced by ones that do not fit (the layers' internal path
    # trusts its own arrays after checking them: a missed check reads out of bounds)
    replaced = {
        "Dense": (lambda: L().Dense(40, 30, rng=0), (6, 40), {
            "weight": [(20, 30), (40, 10), (80, 30), (40, 60), (40, 30, "f8"), (1200,)],
            "bias": [(10,), (60,), (30, "f8"), (30, 1)]}),
        "Maxout": (lambda: L().Maxout(40, 10, pieces=3, rng=0), (6, 40), {
            "weight": [(20, 30), (40, 10), (80, 30), (40, 30, "f8")],
            "bias": [(10,), (90,), (30, "f8")]}),
        "PReLU": (lambda: L().PReLU(40), (6, 40), {
            "alpha": [(10,), (80,), (40, "f8"), (40, 1)]}),
        "BatchNorm1d": (lambda: L().BatchNorm1d(40), (6, 40), {
            "gamma": [(10,), (80,), (40, "f8"), (40, 1)],
            "beta": [(10,), (80,), (40, "f8")]}),
    }
    for lname, (mk, xshape, attrs) in replaced.items():
        for attr, shapes in attrs.items():
            for shp in shapes:
                dt = np.float64 if shp[-1] == "f8" else np.float32
                shp = tuple(s for s in shp if s != "f8")
                tag = "x".join(map(str, shp)) + ("-f64" if dt == np.float64 else "")
                mkp = (lambda shp=shp, dt=dt: L().Parameter(np.ones(shp, dt)))

                def before(mk=mk, attr=attr, mkp=mkp, xshape=xshape):
                    layer = mk()
                    setattr(layer, attr, mkp())
                    y = layer(rnd(xshape, F32))
                    layer.backward(np.ones_like(y))
                # a float64 parameter of the right shape makes the model float64: works
                case("layers.%s.replaced-%s-%s.before-forward" % (lname, attr, tag), before,
                     "either" if dt == np.float64 and len(shp) == 1 or (
                         dt == np.float64 and shp == (40, 30)) else "error", lname)

                def between(mk=mk, attr=attr, mkp=mkp, xshape=xshape):
                    layer = mk()
                    y = layer(rnd(xshape, F32))
                    setattr(layer, attr, mkp())
                    layer.backward(np.ones_like(y))
                case("layers.%s.replaced-%s-%s.between" % (lname, attr, tag), between,
                     "either", lname)

                def eval_mode(mk=mk, attr=attr, mkp=mkp, xshape=xshape):
                    layer = mk().eval()
                    setattr(layer, attr, mkp())
                    layer(rnd(xshape, F32))
                case("layers.%s.replaced-%s-%s.eval" % (lname, attr, tag), eval_mode,
                     "either", lname)

    def bn_buffer_bypass():
        bn = L().BatchNorm1d(40)
        object.__setattr__(bn, "running_mean", np.zeros(10, np.float32))
        bn(rnd((6, 40), F32))
    case("layers.BatchNorm1d.running_mean-replaced-bypassing-setattr", bn_buffer_bypass,
         "error", "BatchNorm1d")

    def other_arch():
        a = _mlp()
        b = L().Sequential(L().Dense(4, 5), L().ReLU())
        a.load_state_dict(b.state_dict())
    case("layers.load_state_dict.other-architecture", other_arch, "error", "load_state_dict")

    def same_keys_other_shapes():
        a = L().Sequential(L().Dense(4, 3))
        before = a.state_dict()
        sd = L().Sequential(L().Dense(4, 5)).state_dict()
        try:
            a.load_state_dict(sd)
        finally:
            same(sorted(before.items()), sorted(a.state_dict().items()))
    case("layers.load_state_dict.other-shapes-unchanged", same_keys_other_shapes, "error",
         "load_state_dict")
    sd_cases = {
        "not-dict": lambda sd: [1, 2],
        "int-values": lambda sd: {k: v.astype(np.int64) for k, v in sd.items()},
        "complex-values": lambda sd: {k: v.astype(complex) for k, v in sd.items()},
        "object-values": lambda sd: {k: np.array(v, dtype=object) for k, v in sd.items()},
        "missing-key": lambda sd: dict(list(sd.items())[1:]),
        "extra-key": lambda sd: dict(sd, **{"9.weight": np.zeros(3)}),
        "str-value": lambda sd: {k: "abc" for k in sd},
    }
    for tag, f in sd_cases.items():
        def run(f=f):
            m = _mlp()
            m.load_state_dict(f(m.state_dict()))
        case("layers.load_state_dict.%s" % tag, run, "error", "load_state_dict")

    def sd_f64_lists():
        m, ref = _mlp(), _mlp()
        for p in ref.parameters():
            p.data = p.data + 1
        m.load_state_dict({k: v.astype(np.float64).tolist() for k, v in ref.state_dict().items()})
        same(sorted(m.state_dict().items()), sorted(ref.state_dict().items()))
    case("layers.load_state_dict.float64-lists", sd_f64_lists)

    def sd_nan():
        m = _mlp()
        sd = m.state_dict()
        sd["0.weight"][0, 0] = np.nan
        m.load_state_dict(sd)
        with np.errstate(all="ignore"):
            assert has_nan(m.eval()(np.ones((2, 4), np.float32)))
    case("layers.load_state_dict.nan-weights-propagate", sd_nan)
    case("layers.train.mode-str", lambda: _mlp().train("no"), "error", "train")
    case("layers.to.int", lambda: _mlp().to(np.int64), "error", "to")


# ============================================================================== losses
def register_losses():
    import fastnn.losses as Lo  # noqa: F401  (imported in the child too)
    specs = {
        "SoftmaxCrossEntropy": (lambda: _losses().SoftmaxCrossEntropy(), "labels"),
        "MulticlassHinge": (lambda: _losses().MulticlassHinge(0.5), "labels"),
        "BCEWithLogits": (lambda: _losses().BCEWithLogits(), "float"),
        "MSE": (lambda: _losses().MSE(), "float"),
    }
    for name, (mk, kind) in specs.items():
        base = "losses.%s" % name

        def target(kind=kind):
            if kind == "labels":
                return np.array([0, 3, 1, 2, 3])
            return np.random.default_rng(3).uniform(size=(5, 4)).astype(np.float32)

        def run_loss(pred, tgt, mk=mk):
            crit = mk()
            loss = crit(pred, tgt)
            assert isinstance(loss, float)
            return [loss, crit.backward()]
        good = lambda: rnd((5, 4), F32, 31)
        case(base + ".baseline", lambda good=good, target=target, run_loss=run_loss:
             run_loss(good(), target()))

        for lname, f in LAYOUTS.items():
            def run(f=f, good=good, target=target, run_loss=run_loss, kind=kind):
                ref = run_loss(good(), target())
                same(run_loss(f(good()), target()), ref)
                same(run_loss(good(), f(target())), ref)
            case("%s.%s" % (base, lname), run)

        def f16(good=good, target=target, run_loss=run_loss):
            same(run_loss(good().astype(np.float16), target()),
                 run_loss(good().astype(np.float16).astype(np.float32), target()))
        case(base + ".pred-float16", f16, "either", name)
        case(base + ".pred-list", lambda good=good, target=target, run_loss=run_loss:
             run_loss(good().tolist(), target()))
        for tname in ("int64", "bool", "complex128", "object"):
            case("%s.pred-%s" % (base, tname),
                 lambda t=BAD_DTYPES[tname], good=good, target=target, run_loss=run_loss:
                 run_loss(good().astype(t), target()), "error", name)
        for tag, p in (("pred-None", None), ("pred-str", "abc"), ("pred-0d", np.float32(1)),
                       ("pred-empty", np.zeros((0, 4), np.float32)),
                       ("pred-3d", np.zeros((5, 4, 1), np.float32)),
                       ("pred-wrong-batch", np.zeros((4, 4), np.float32))):
            case("%s.%s" % (base, tag), lambda p=p, target=target, run_loss=run_loss:
                 run_loss(p, target()), "error", name)
        for val, tag in ((np.nan, "nan"), (np.inf, "+inf")):
            def nonfinite(val=val, good=good, target=target, run_loss=run_loss):
                x = good()
                x[0, 0] = val
                with np.errstate(all="ignore"):
                    res = run_loss(x, target())
                assert not np.isfinite(res[0]) or val == np.inf
                if val != val:
                    assert has_nan(res), "NaN input vanished"
            case("%s.pred-%s" % (base, tag), nonfinite)
        if kind == "labels":
            for tag, t in (("negative", [0, 3, -1, 2, 3]), ("equal-C", [0, 3, 4, 2, 3]),
                           ("float", np.array([0.0, 3, 1, 2, 3])), ("short", [0, 1]),
                           ("bool", np.ones(5, bool)), ("None", None), ("2d", np.zeros((5, 1), int)),
                           ("str", "abcde")):
                case("%s.target-%s" % (base, tag), lambda t=t, good=good, run_loss=run_loss:
                     run_loss(good(), t), "error", name)
        else:
            for tag, t in (("int", np.ones((5, 4), np.int64)), ("wrong-shape", np.ones((5, 3))),
                           ("complex", np.ones((5, 4), complex)), ("None", None),
                           ("str", "abc"), ("transposed", np.ones((4, 5), np.float32))):
                case("%s.target-%s" % (base, tag), lambda t=t, good=good, run_loss=run_loss:
                     run_loss(good(), t), "error", name)

            def tnan(good=good, run_loss=run_loss):
                t = np.full((5, 4), 0.5, np.float32)
                t[1, 1] = np.nan
                with np.errstate(all="ignore"):
                    assert has_nan(run_loss(good(), t))
            case(base + ".target-nan", tnan)
        case(base + ".backward-before-call", lambda mk=mk: mk().backward(), "error", name)

        def backward_after_failed_call(mk=mk, target=target):
            crit = mk()
            crit(rnd((5, 4), F32), target())
            try:
                crit(np.zeros((5, 4), complex), target())
            except TypeError:
                pass
            crit.backward()
        case(base + ".backward-after-failed-call", backward_after_failed_call, "error", name)
    case("losses.MulticlassHinge.margin-nan", lambda: _losses().MulticlassHinge(np.nan),
         "error", "MulticlassHinge")


def _losses():
    import fastnn.losses as Lo
    return Lo


# ========================================================================== optimizers
OPTIMIZERS = {
    "SGD": dict(lr=0.1),
    "SGD[momentum]": dict(lr=0.1, momentum=0.9, weight_decay=0.01),
    "SGD[nesterov]": dict(lr=0.1, momentum=0.9, nesterov=True),
    "Adagrad": dict(lr=0.1, weight_decay=0.01),
    "RMSprop": dict(lr=0.01, momentum=0.5, weight_decay=0.01),
    "Adam": dict(lr=0.01, weight_decay=0.01),
    "AdamW": dict(lr=0.01),
}


def _optim():
    import fastnn.optim as O
    return O


def _make_opt(label, params, **over):
    kw = dict(OPTIMIZERS[label])
    kw.update(over)
    return getattr(_optim(), label.split("[")[0])(params, **kw)


def _trained_mlp(nan=None):
    m = _mlp()
    y = m(rnd((6, 4), F32, 41))
    d = np.ones_like(y)
    if nan is not None:
        d[0, 0] = nan
    with np.errstate(all="ignore"):
        m.backward(d)
    return m


def register_optim():
    for label in OPTIMIZERS:
        cls = label.split("[")[0]
        base = "optim.%s" % label

        def step_twice(label=label):
            m = _trained_mlp()
            opt = _make_opt(label, m.parameters())
            before = [p.data.copy() for p in m.parameters()]
            opt.step()
            opt.step()
            assert any(not np.array_equal(b, p.data) for b, p in zip(before, m.parameters()))
            assert all(np.isfinite(p.data).all() for p in m.parameters())
            return [p.data.copy() for p in m.parameters()]
        case(base + ".baseline", step_twice)
        case(base + ".step-before-backward", lambda label=label: _make_opt(
            label, _mlp().parameters()).step(), "error", cls)

        def after_zero_grad(label=label):
            m = _trained_mlp()
            opt = _make_opt(label, m.parameters())
            opt.zero_grad()
            opt.step()
        case(base + ".step-after-zero_grad", after_zero_grad, "error", cls)
        bad_params = {
            "non-parameter": lambda: [_mlp().parameters()[0], np.zeros(3)],
            "single-parameter": lambda: _mlp().parameters()[0],
            "int": lambda: 5,
            "None": lambda: None,
            "empty": lambda: [],
            "duplicate": lambda: [_mlp().parameters()[0]] * 2,
            "str": lambda: "weights",
        }
        for tag, f in bad_params.items():
            case("%s.params-%s" % (base, tag), lambda f=f, label=label: _make_opt(label, f()),
                 "error", cls)

        def module_and_generator(label=label):
            m = _trained_mlp()
            a = _make_opt(label, m)
            b = _make_opt(label, (p for p in m.parameters()))
            assert len(a.params) == len(b.params) == len(m.parameters())
        case(base + ".params-module-and-generator", module_and_generator)
        for tag, kw in (("lr-negative", {"lr": -1.0}), ("lr-nan", {"lr": np.nan}),
                        ("lr-inf", {"lr": np.inf}), ("lr-str", {"lr": "0.1"}),
                        ("lr-bool", {"lr": True}), ("lr-None", {"lr": None}),
                        ("weight_decay-negative", {"weight_decay": -0.1})):
            case("%s.%s" % (base, tag), lambda kw=kw, label=label: _make_opt(
                label, _mlp().parameters(), **kw), "error", cls)

        def set_lr(label=label):
            opt = _make_opt(label, _mlp().parameters())
            opt.lr = float("nan")
        case(base + ".set-lr-nan", set_lr, "error", cls)

        def nan_grads(label=label):
            m = _trained_mlp(nan=np.nan)
            opt = _make_opt(label, m.parameters())
            with np.errstate(all="ignore"):
                opt.step()
            assert any(np.isnan(p.data).any() for p in m.parameters()), "NaN grads vanished"
        case(base + ".nan-grads-propagate", nan_grads)

        def inf_grads(label=label):
            m = _trained_mlp()
            for p in m.parameters():
                g = p.grad.copy()
                g.reshape(-1)[0] = np.inf
                p.grad = g
            opt = _make_opt(label, m.parameters())
            with np.errstate(all="ignore"):
                opt.step()
        case(base + ".inf-grads", inf_grads)

        def after_to_f64(label=label):
            m = _trained_mlp()
            opt = _make_opt(label, m.parameters())
            opt.step()
            m.to(np.float64)
            y = m(rnd((6, 4), F64))
            m.backward(np.ones_like(y))
            opt.step()
            assert all(p.data.dtype == F64 and np.isfinite(p.data).all()
                       for p in m.parameters())
        case(base + ".step-after-model-to-float64", after_to_f64)

        def scalar_and_empty_params(label=label):
            P = _L().Parameter
            s, e, v = P(np.float32(2.0)), P(np.zeros(0, np.float32)), P(np.ones(3))
            s.grad = np.float32(0.5)
            e.grad = np.zeros(0, np.float32)
            v.grad = np.ones(3)
            opt = _make_opt(label, [s, e, v])
            opt.step()
            opt.step()
            assert s.shape == () and e.shape == (0,) and np.isfinite(s.data) and s.data != 2.0
        case(base + ".scalar-and-empty-parameters", scalar_and_empty_params, "either", cls)

        def sd_other_type(label=label, cls=cls):
            m = _trained_mlp()
            other = "SGD[momentum]" if cls != "SGD" else "Adam"
            src = _make_opt(other, m.parameters())
            src.step()
            _make_opt(label, m.parameters()).load_state_dict(src.state_dict())
        case(base + ".load_state_dict-other-optimizer", sd_other_type, "error", cls)

        def sd_other_arch(label=label):
            a = _trained_mlp()
            b = _L().Sequential(_L().Dense(4, 2, rng=0))
            y = b(np.ones((3, 4), np.float32))
            b.backward(np.ones_like(y))
            src = _make_opt(label, b.parameters())
            src.step()
            _make_opt(label, a.parameters()).load_state_dict(src.state_dict())
        case(base + ".load_state_dict-other-architecture", sd_other_arch, "error", cls)

        def sd_same_count_other_shapes(label=label, cls=cls):
            L = _L()
            a = L.Sequential(L.Dense(4, 3, rng=0))
            b = L.Sequential(L.Dense(5, 2, rng=0))
            y = b(np.ones((3, 5), np.float32))
            b.backward(np.ones_like(y))
            src = _make_opt(label, b.parameters())
            src.step()
            _make_opt(label, a.parameters()).load_state_dict(src.state_dict())
        if label != "SGD":      # plain SGD keeps no per-parameter arrays
            case(base + ".load_state_dict-other-shapes", sd_same_count_other_shapes, "error",
                 cls)
        for tag, sd in (("None", None), ("list", [1]), ("empty-dict", {}),
                        ("bad-state", {"state": 5, "param_groups": [{}]})):
            case("%s.load_state_dict-%s" % (base, tag), lambda sd=sd, label=label: _make_opt(
                label, _mlp().parameters()).load_state_dict(sd), "error", cls)

    # schedulers and clipping
    def opt():
        return _optim().SGD(_mlp().parameters(), lr=0.1)
    for tag, f in {"StepLR.non-optimizer": lambda: _optim().StepLR(5, 1),
                   "StepLR.step_size-0": lambda: _optim().StepLR(opt(), 0),
                   "StepLR.step_size-float": lambda: _optim().StepLR(opt(), 1.5),
                   "StepLR.gamma-str": lambda: _optim().StepLR(opt(), 1, gamma="0.1"),
                   "ExponentialLR.gamma-nan": lambda: _optim().ExponentialLR(opt(), np.nan),
                   "CosineAnnealingLR.T_max-0": lambda: _optim().CosineAnnealingLR(opt(), 0),
                   "CosineAnnealingLR.eta_min-str": lambda: _optim().CosineAnnealingLR(
                       opt(), 5, eta_min="0")}.items():
        case("optim.%s" % tag, f, "error", tag.split(".")[0])
    O = _optim
    for tag, f in {"non-parameter": lambda: O().clip_grad_norm([np.zeros(3)], 1.0),
                   "max_norm-nan": lambda: O().clip_grad_norm(_trained_mlp(), np.nan),
                   "max_norm-negative": lambda: O().clip_grad_norm(_trained_mlp(), -1.0),
                   "max_norm-str": lambda: O().clip_grad_norm(_trained_mlp(), "1"),
                   "norm_type-0": lambda: O().clip_grad_norm(_trained_mlp(), 1.0, norm_type=0),
                   "int": lambda: O().clip_grad_norm(5, 1.0)}.items():
        case("optim.clip_grad_norm.%s" % tag, f, "error", "clip_grad_norm")

    def clip_nan():
        m = _trained_mlp(nan=np.nan)
        with np.errstate(all="ignore"):
            total = O().clip_grad_norm(m, 1.0)
        assert total != total and any(np.isnan(p.grad).any() for p in m.parameters())
    case("optim.clip_grad_norm.nan-grads", clip_nan)

    def clip_inf_error():
        m = _trained_mlp()
        g = m.parameters()[0].grad.copy()
        g[0, 0] = np.inf
        m.parameters()[0].grad = g
        with np.errstate(all="ignore"):
            O().clip_grad_norm(m, 1.0, error_if_nonfinite=True)
    case("optim.clip_grad_norm.inf-error_if_nonfinite", clip_inf_error, "error", "clip_grad_norm")
    case("optim.clip_grad_norm.empty", lambda: O().clip_grad_norm([], 1.0))


# ================================================================== init, save / load
def register_init():
    names = ["zeros", "ones", "normal", "uniform", "xavier_uniform", "xavier_normal",
             "he_normal", "he_uniform", "lecun_normal"]
    fans = {"xavier_uniform", "xavier_normal", "he_normal", "he_uniform", "lecun_normal"}

    def f(name):
        import fastnn.init as I
        return getattr(I, name)
    for name in names:
        base = "init.%s" % name

        def good(name=name):
            a = f(name)((4, 3), rng=0)
            b = f(name)((4, 3), rng=0)
            assert a.shape == (4, 3) and a.dtype == F32 and a.flags.c_contiguous
            same(a, b)
            c = f(name)((4, 3), rng=np.random.default_rng(0), dtype=np.float64)
            assert c.dtype == F64 and np.isfinite(c).all()
        case(base + ".baseline", good)
        errors = {"shape-negative": dict(shape=(-1, 3)), "shape-str": dict(shape="ab"),
                  "shape-float": dict(shape=(2.5, 3)), "shape-None": dict(shape=None),
                  "dtype-int": dict(dtype=np.int32), "dtype-float16": dict(dtype=np.float16),
                  "dtype-str": dict(dtype="complex64"), "rng-str": dict(rng="0"),
                  "rng-negative": dict(rng=-1), "rng-float": dict(rng=0.5)}
        if name in fans:
            errors.update({"shape-1d": dict(shape=(3,)), "shape-zero-fan": dict(shape=(0, 3))})
        for tag, kw in errors.items():
            def run(kw=kw, name=name):
                args = dict(shape=(4, 3), rng=0)
                args.update(kw)
                a = f(name)(args.pop("shape"), **args)
                assert a.shape == (0, 3)      # xavier: an empty weight is a no-op (torch)
            case("%s.%s" % (base, tag), run, "either" if tag == "shape-zero-fan" else "error",
                 name)
    import fastnn.init as I  # noqa: F401
    for tag, fn in {"xavier_uniform.gain-nan": lambda: f("xavier_uniform")((3, 3), gain=np.nan),
                    "xavier_normal.gain-str": lambda: f("xavier_normal")((3, 3), gain="1"),
                    "uniform.a-greater-b": lambda: f("uniform")((3, 3), a=1.0, b=0.0),
                    "normal.std-negative": lambda: f("normal")((3, 3), std=-1.0),
                    "he_normal.mode-bogus": lambda: f("he_normal")((3, 3), mode="fan"),
                    "he_uniform.nonlinearity-bogus":
                        lambda: f("he_uniform")((3, 3), nonlinearity="relu6")}.items():
        case("init.%s" % tag, fn, "error", tag.split(".")[0])


def register_io():
    def fastnn():
        import fastnn as F
        return F

    def tmp(name="m.npz"):
        d = tempfile.mkdtemp(prefix="fastnn-bad-input-")
        _TMPDIRS.append(d)
        return os.path.join(d, name)

    def roundtrip():
        m = _trained_mlp()
        p = tmp()
        fastnn().save(m, pathlib.Path(p))
        m2 = fastnn().load(p)
        x = rnd((3, 4), F32)
        same(m.eval()(x), m2.eval()(x))
    case("io.roundtrip", roundtrip)

    class Custom(_L().Module):
        def forward(self, x):
            return x
    case("io.save.non-module", lambda: fastnn().save({"w": 1}, tmp()), "error", "fastnn.save")
    case("io.save.custom-module", lambda: fastnn().save(Custom(), tmp()), "error", "save")
    case("io.save.missing-directory", lambda: fastnn().save(
        _mlp(), os.path.join(tmp(), "no", "such", "dir.npz")), "error", "",
        errors=ERRORS + ("OSError",))
    case("io.load.missing", lambda: fastnn().load(tmp("missing.npz")), "error", "fastnn.load",
         errors=ERRORS + ("OSError",))
    case("io.load.directory", lambda: fastnn().load(os.path.dirname(tmp())), "error",
         "fastnn.load", errors=ERRORS + ("OSError",))

    def write(data):
        p = tmp()
        with open(p, "wb") as fh:
            fh.write(data)
        return p

    def saved_bytes():
        p = tmp()
        fastnn().save(_trained_mlp(), p)
        with open(p, "rb") as fh:
            return fh.read()
    case("io.load.garbage", lambda: fastnn().load(write(b"not a zip" * 100)), "error",
         "fastnn.load")
    case("io.load.empty-file", lambda: fastnn().load(write(b"")), "error", "fastnn.load")
    case("io.load.truncated", lambda: fastnn().load(write(saved_bytes()[:300])), "error",
         "fastnn.load")
    case("io.load.truncated-half", lambda: fastnn().load(write(
        saved_bytes()[:len(saved_bytes()) // 2])), "error", "fastnn.load")

    def npz(**arrays):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return write(buf.getvalue())

    def arch(model):
        return np.frombuffer(json.dumps({"format": "fastnn.model", "version": 1,
                                         "model": model}).encode(), np.uint8)
    dense = {"type": "Dense", "args": {"in_features": 4, "out_features": 3, "bias": True,
                                       "activation": None, "activation_kw": None,
                                       "init": "he_normal", "dtype": "float32"}}
    good_arrays = {"weight": np.zeros((4, 3), np.float32), "bias": np.zeros(3, np.float32)}
    case("io.load.forged-ok", lambda: fastnn().load(npz(__fastnn_model__=arch(dense),
                                                        **good_arrays)))
    forged = {
        "no-arch": lambda: npz(**good_arrays),
        "object-array": lambda: npz(__fastnn_model__=arch(dense), weight=np.array(
            [object()] * 12, dtype=object).reshape(4, 3), bias=good_arrays["bias"]),
        "wrong-shape": lambda: npz(__fastnn_model__=arch(dense), weight=np.zeros((3, 4)),
                                   bias=good_arrays["bias"]),
        "int-weights": lambda: npz(__fastnn_model__=arch(dense),
                                   weight=np.zeros((4, 3), np.int32), bias=good_arrays["bias"]),
        "missing-array": lambda: npz(__fastnn_model__=arch(dense), weight=good_arrays["weight"]),
        "extra-array": lambda: npz(__fastnn_model__=arch(dense), extra=np.zeros(2),
                                   **good_arrays),
        "unknown-layer": lambda: npz(__fastnn_model__=arch({"type": "os.system", "args": {}})),
        "huge-layer": lambda: npz(__fastnn_model__=arch(dict(dense, args=dict(
            dense["args"], in_features=10 ** 9, out_features=10 ** 9))), **good_arrays),
        "negative-size": lambda: npz(__fastnn_model__=arch(dict(dense, args=dict(
            dense["args"], in_features=-4))), **good_arrays),
        "bad-json": lambda: npz(__fastnn_model__=np.frombuffer(b"{nope", np.uint8)),
        "deep-nesting": lambda: npz(__fastnn_model__=np.frombuffer(
            (b'{"format": "fastnn.model", "version": 1, "model": ' + b"[" * 100000
             + b"]" * 100000 + b"}"), np.uint8)),
        "arch-not-uint8": lambda: npz(__fastnn_model__=np.zeros(3), **good_arrays),
        "float64-into-float32": lambda: npz(__fastnn_model__=arch(dense),
                                            weight=np.zeros((4, 3)), bias=np.zeros(3)),
    }
    for tag, mk in forged.items():
        case("io.load.%s" % tag, lambda mk=mk: fastnn().load(mk()), "error", "fastnn.load")

    def nan_weights():
        import warnings
        w = np.zeros((4, 3), np.float32)
        w[0, 0] = np.nan
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = fastnn().load(npz(__fastnn_model__=arch(dense), weight=w,
                                  bias=good_arrays["bias"]))
        assert any("NaN or infinite" in str(c.message) for c in caught)
        assert has_nan(m(np.ones((2, 4), np.float32)))
    case("io.load.nan-weights-propagate", nan_weights)

    def load_into_other():
        p = tmp()
        fastnn().save(_L().Sequential(_L().Dense(4, 5)), p)
        _mlp().load_state_dict(fastnn().load(p).state_dict())
    case("io.load_state_dict-from-other-architecture", load_into_other, "error",
         "load_state_dict")


def register_config():
    def F():
        import fastnn
        return fastnn
    for tag, n in (("0", 0), ("negative", -1), ("float", 2.5), ("bool", True), ("str", "2"),
                   ("None", None), ("huge", 2 ** 40), ("too-many", 10 ** 6)):
        case("config.set_num_threads.%s" % tag, lambda n=n: F().set_num_threads(n), "error",
             "set_num_threads")
    case("config.set_backend.bogus", lambda: F().set_backend("torch"), "error", "set_backend")
    case("config.set_backend.None", lambda: F().set_backend(None), "error", "set_backend")

    def use_bogus():
        with F().use_backend("cuda"):
            pass
    case("config.use_backend.bogus", use_bogus, "error", "use_backend")
    case("config.seed.negative", lambda: F().seed(-1), "error", "seed")
    case("config.seed.float", lambda: F().seed(1.5), "error", "seed")


def register_large():
    """Sizes where the kernels split work across threads (2 threads), with NaN / Inf."""
    def F():
        import fastnn
        return fastnn

    def big(val):
        def run():
            f = F()
            f.set_num_threads(2)
            try:
                with np.errstate(all="ignore"):
                    L = _L()
                    m = L.Sequential(L.Dense(256, 300, activation="gelu", rng=0),
                                     L.BatchNorm1d(300), L.PReLU(300), L.Dropout(0.1, rng=1),
                                     L.Maxout(300, 128, pieces=2, rng=2), L.Dense(128, 10, rng=3))
                    x = rnd((200, 256), F32, 5)
                    x[7, 3] = val
                    y = m(x)
                    crit = _losses().SoftmaxCrossEntropy()
                    loss = crit(y, np.arange(200) % 10)
                    m.backward(crit.backward())
                    opt = _optim().Adam(m.parameters(), lr=1e-3)
                    opt.step()
                    for name in ("mse", "bce_with_logits"):
                        getattr(_ops(), name)(y, np.full(y.shape, 0.5, np.float32))
                    _ops().multiclass_hinge(y, np.arange(200) % 10)
                if val != val:
                    assert loss != loss and has_nan(y)
                    assert any(np.isnan(p.data).any() for p in m.parameters())
            finally:
                f.set_num_threads(1)
        return run
    for val, tag in ((0.5, "finite"), (np.nan, "nan"), (np.inf, "+inf"), (-np.inf, "-inf"),
                     (3e38, "max-float32"), (1e-45, "subnormal")):
        case("large.mlp-2-threads.%s" % tag, big(val))


def register_all():
    register_ops()
    register_ops_misc()
    register_layers()
    register_layer_misc()
    register_losses()
    register_optim()
    register_init()
    register_io()
    register_config()
    register_large()


register_all()


# ====================================================================== child process
_TMPDIRS = []       # scratch directories of the io cases, removed when the child ends


def _run_cases(backend, names):
    """In the child: run each case, one JSON line per result, flushed, so the parent
    knows which case was running if the process dies."""
    import warnings
    warnings.simplefilter("error")
    import fastnn
    fastnn.set_backend(backend)
    fastnn.set_num_threads(1)
    out = sys.stdout
    for name in names:
        out.write("START %s\n" % name)
        out.flush()
        fn = CASES[name][0]
        fastnn.seed(0)
        try:
            fn()
            res = {"status": "ok"}
        except BaseException as exc:   # noqa: B902 - every outcome is reported
            res = {"status": "raised", "type": type(exc).__name__,
                   "mro": [c.__name__ for c in type(exc).__mro__], "msg": str(exc)[:2000],
                   "tb": traceback.format_exc()[-3000:]}
        finally:
            fastnn.set_num_threads(1)
        res["name"] = name
        out.write("RESULT %s\n" % json.dumps(res))
        out.flush()
    for d in _TMPDIRS:
        shutil.rmtree(d, ignore_errors=True)


CHILD = ("import sys, json; sys.path.insert(0, %r); import test_bad_input as m; "
         "m._run_cases(sys.argv[1], json.loads(sys.stdin.read()))" % HERE)
CHILD_TIMEOUT = 300


def run_in_children(backend, names):
    """name -> result dict, restarting a child after a crash or hang."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    results, remaining = {}, list(names)
    while remaining:
        proc = subprocess.Popen([sys.executable, "-W", "error", "-c", CHILD, backend],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=HERE)
        hung = False
        try:
            out, err = proc.communicate(json.dumps(remaining), timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            hung = True
        running = None
        for line in out.splitlines():
            if line.startswith("START "):
                running = line[6:]
            elif line.startswith("RESULT "):
                r = json.loads(line[7:])
                results[r["name"]] = r
                running = None
        # a sanitizer or fatal-error report starts at the top of stderr
        err = err if len(err) <= 8000 else err[:6000] + "\n[...]\n" + err[-2000:]
        if running is None and not hung and proc.returncode == 0:
            missing = [n for n in remaining if n not in results]
            for n in missing:
                results[n] = {"status": "lost", "stderr": err}
            break
        rc = proc.returncode
        how = "hung (killed after %ds)" % CHILD_TIMEOUT if hung else (
            "killed by signal %s" % signal.Signals(-rc).name if rc < 0 else "exit code %d" % rc)
        if running is None:     # died outside any case (e.g. at import): report all left
            for n in remaining:
                if n not in results:
                    results[n] = {"status": "crashed", "how": how, "stderr": err}
            break
        results[running] = {"status": "crashed", "how": how, "stderr": err}
        remaining = [n for n in remaining if n not in results]
    return results


def _backends():
    code = ("import fastnn; print(int(fastnn.show_config(print_=False)['cython']))")
    env = dict(os.environ, PYTHONPATH=SRC)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return ["cython", "numpy"] if r.stdout.strip() == "1" else ["numpy"]


BACKENDS = ["cython", "numpy"]
_RESULTS = {}


@pytest.fixture(scope="module")
def matrix():
    def get(backend):
        if backend not in _RESULTS:
            _RESULTS[backend] = run_in_children(backend, sorted(CASES))
        return _RESULTS[backend]
    return get


def check_result(name, r):
    fn, expect, names, errors = CASES[name]
    status = r["status"]
    if status in ("crashed", "lost"):
        pytest.fail("%s: the interpreter %s\n%s" % (name, r.get("how", "lost the case"),
                                                    r.get("stderr", "")))
    if status == "ok":
        if expect == "error":
            pytest.fail("%s: expected a %s naming %s, but the call succeeded"
                        % (name, "/".join(errors), " or ".join(names)))
        return
    raised_ok = any(e in r["mro"] for e in errors)
    if expect == "ok" or not raised_ok:
        pytest.fail("%s: expected %s, got %s: %s\n%s"
                    % (name, "success" if expect == "ok" else "/".join(errors), r["type"],
                       r["msg"], r["tb"]))
    if not any(n in r["msg"] for n in names):
        pytest.fail("%s: the %s message does not name %s: %r"
                    % (name, r["type"], " or ".join(names), r["msg"]))


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, be, matrix):
    if be not in _available():
        pytest.skip("backend %s not built" % be)
    check_result(name, matrix(be)[name])


_AVAILABLE = []


def _available():
    if not _AVAILABLE:
        _AVAILABLE.extend(_backends())
    return _AVAILABLE


def test_case_count():
    """The matrix stays large (the count is part of the report)."""
    assert len(CASES) >= 1000, len(CASES)
    print("bad-input matrix: %d cases x %d backends" % (len(CASES), len(_available())))


def test_crash_is_reported_not_fatal():
    """The harness itself: a case that kills its interpreter fails alone, and the cases
    after it still run in a fresh child."""
    global CHILD
    saved = CHILD
    CHILD = ("import sys, json, os; sys.path.insert(0, %r); import test_bad_input as m; "
             "m.CASES['zz.crash'] = (lambda: os.kill(os.getpid(), 9), 'ok', (), ()); "
             "m.CASES['zz.after'] = (lambda: None, 'ok', (), ()); "
             "m._run_cases(sys.argv[1], json.loads(sys.stdin.read()))" % HERE)
    try:
        r = run_in_children("numpy", ["zz.crash", "zz.after"])
    finally:
        CHILD = saved
    assert r["zz.crash"]["status"] == "crashed" and "SIGKILL" in r["zz.crash"]["how"]
    assert r["zz.after"]["status"] == "ok"
