"""Numerical gradient checking: compare a backward pass with central differences.

>>> import numpy as np
>>> from fastnn.layers import Dense
>>> from fastnn.train.gradcheck import gradcheck
>>> x = np.random.default_rng(0).standard_normal((3, 5))
>>> result = gradcheck(Dense(5, 4, activation="tanh", rng=0), x)
>>> result.passed, sorted(result.errors)
(True, ['bias', 'weight', 'x'])

What is checked
---------------
* A Module (anything with ``parameters()`` and ``backward``): the gradient with respect
  to the input x and to every parameter. The module is never modified: the check runs on
  a deep copy converted to float64 (``.to(np.float64)``; a float32 model is converted,
  a model that cannot be converted raises TypeError). Dropout layers are switched to
  eval mode in the copy (random masks make finite differences meaningless); other
  layers run in ``mode`` ("train" by default: BatchNorm uses batch statistics).
  The scalar being differentiated is ``loss(module(x), y)`` when `loss` (a fastnn loss
  object) is given, a default loss for `y` when only `y` is given (SoftmaxCrossEntropy
  for integer labels, MSE otherwise), and ``sum(module(x) * R)`` for a fixed random R
  otherwise (so backward is checked with an arbitrary upstream gradient).
* A loss object (has ``backward`` but no ``parameters``): ``loss(x, y)`` against
  ``loss.backward()``.
* A function: ``fn(x)`` or ``fn(x, y)`` returning ``(value, grad_wrt_x)``, e.g.
  ``fastnn.ops.softmax_cross_entropy``; x is converted to float64.

Relative error of an entry: ``|a - n| / max(|a|, |n|, 1e-3 * s, r / threshold)`` with a
the analytic and n the numerical derivative ``(f(v + eps) - f(v - eps)) / (2 eps)``, s
the largest ``|n|`` of that tensor (entries a thousand times smaller than the tensor's
typical gradient are judged on its scale) and r the round-off of the difference
quotient, ``16 * machine_eps * |f| / (2 eps)``: entries too small for a difference
quotient to resolve (such as gradients that are zero in theory, like a bias followed by
BatchNorm) pass when they agree to within round-off. A tensor passes
when its largest relative error is at most `threshold`. ``max_checks`` entries per
tensor are sampled (seeded by `seed`); None checks every entry.
"""
import copy
import math

import numpy as np

from ..core.validation import Options, Real, check_all

__all__ = ["gradcheck", "GradcheckResult"]

_CONSTRAINTS = {"eps": Real(0, closed="neither"), "threshold": Real(0, closed="neither"),
                "mode": Options("train", "eval")}

# absolute round-off of f(v + eps) - f(v - eps), in units of |f| * machine epsilon
_ROUNDOFF = 16 * np.finfo(np.float64).eps


class GradcheckResult:
    """Outcome of `gradcheck`: ``passed`` (bool, also ``bool(result)``), ``errors``
    ({tensor name: max relative error}), ``details`` ({name: dict with shape, checked,
    size, index of the worst entry, its analytic and numeric values}), ``threshold``,
    ``eps``, ``failed`` (names of failing tensors). ``print(result)`` shows a table."""

    def __init__(self, title, details, threshold, eps):
        self.title = title
        self.details = details
        self.threshold = threshold
        self.eps = eps
        self.errors = {k: d["max_rel_error"] for k, d in details.items()}
        self.failed = [k for k, e in self.errors.items() if not e <= threshold]
        self.passed = not self.failed

    def __bool__(self):
        return self.passed

    def __str__(self):
        head = ["tensor", "shape", "checked", "max rel error", "worst entry", "analytic",
                "numeric", ""]
        rows = [head]
        for name, d in self.details.items():
            rows.append([name, str(d["shape"]), "%d/%d" % (d["checked"], d["size"]),
                         "%.2e" % d["max_rel_error"], str(d["index"]),
                         "%.6g" % d["analytic"], "%.6g" % d["numeric"],
                         "ok" if name not in self.failed else "FAIL"])
        widths = [max(len(r[j]) for r in rows) for j in range(len(head))]
        lines = ["%s: %s (eps=%g, threshold=%g)" % (self.title, "PASSED" if self.passed
                                                    else "FAILED", self.eps, self.threshold)]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if self.failed:
            lines.append("backward disagrees with finite differences for: "
                         + ", ".join(self.failed))
        return "\n".join(lines)

    __repr__ = __str__


def _is_module(obj):
    return hasattr(obj, "parameters") and hasattr(obj, "backward") and hasattr(obj, "forward")


def _is_loss(obj):
    return hasattr(obj, "backward") and not hasattr(obj, "parameters") and callable(obj)


def _as64(a, name):
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise TypeError("gradcheck: %s must be a numeric array, got %s" % (name, a.dtype))
    return np.array(a, dtype=np.float64, order="C", copy=True)


def _float64_copy(module):
    m = copy.deepcopy(module)
    if any(p.data.dtype != np.float64 for p in m.parameters()):
        if not hasattr(m, "to"):
            raise TypeError("gradcheck: %s has float32 parameters and no .to(dtype); build "
                            "it with dtype=np.float64" % type(module).__name__)
        m.to(np.float64)
    return m


def _stochastic_off(m):
    """Random layers (Module.stochastic: Dropout) to eval mode: a random mask per call
    makes finite differences meaningless."""
    for sub in getattr(m, "modules", lambda: [m])():
        if getattr(sub, "stochastic", False):
            sub.eval()


def _default_loss(y):
    from ..losses import MSE, SoftmaxCrossEntropy
    y = np.asarray(y)
    return SoftmaxCrossEntropy() if y.dtype.kind in "iu" and y.ndim == 1 else MSE()


def _compare(name, arr, analytic, f, eps, threshold, max_checks, rng):
    """Central differences of scalar f() w.r.t. the entries of `arr` (perturbed in place
    and restored)."""
    size = arr.size
    flat = arr.reshape(-1)
    if max_checks is None or size <= max_checks:
        idx = np.arange(size)
    else:
        idx = np.sort(rng.choice(size, size=max_checks, replace=False))
    ana = np.asarray(analytic, dtype=np.float64).reshape(-1)[idx]
    num = np.empty(len(idx))
    noise = np.empty(len(idx))
    for k, i in enumerate(idx):
        v = flat[i]
        flat[i] = v + eps
        fp = f()
        flat[i] = v - eps
        fm = f()
        flat[i] = v
        num[k] = (fp - fm) / (2.0 * eps)
        noise[k] = _ROUNDOFF * max(abs(fp), abs(fm)) / (2.0 * eps)
    scale = float(np.max(np.abs(num))) if len(num) else 0.0
    floor = np.maximum(noise / threshold, max(1e-3 * scale, 1e-300))
    denom = np.maximum(np.maximum(np.abs(ana), np.abs(num)), floor)
    rel = np.abs(ana - num) / denom
    rel[~np.isfinite(ana) | ~np.isfinite(num)] = np.inf
    worst = int(np.argmax(rel)) if len(rel) else 0
    return {"shape": arr.shape, "size": size, "checked": len(idx),
            "max_rel_error": float(rel[worst]) if len(rel) else 0.0,
            "index": tuple(int(j) for j in np.unravel_index(idx[worst], arr.shape))
            if len(rel) else (), "analytic": float(ana[worst]) if len(rel) else 0.0,
            "numeric": float(num[worst]) if len(rel) else 0.0}


def _as_target(y):
    """Labels / targets for a loss: float targets in float64, labels as they are."""
    if y is None:
        return None
    target = np.asarray(y)
    return target.astype(np.float64) if target.dtype.kind == "f" else target


def _check_module(module, x64, y, loss, mode, check_input, compare, rng):
    """({tensor name: details}, title) for a Module: dLoss/dx and every parameter's
    gradient, on a float64 copy (see the module docstring)."""
    m = _float64_copy(module)
    m.train(mode == "train")
    _stochastic_off(m)
    crit = loss if loss is not None else (_default_loss(y) if y is not None else None)
    target = _as_target(y)
    out0 = m.forward(x64)
    if np.asarray(out0).dtype != np.float64:
        raise TypeError("gradcheck: %s still computes in %s after conversion to float64; "
                        "build it with dtype=np.float64" % (type(module).__name__,
                                                            np.asarray(out0).dtype))
    R = rng.standard_normal(out0.shape) if crit is None else None

    def f():
        out = m.forward(x64)
        return float(np.sum(out * R)) if crit is None else float(crit(out, target))

    f()
    dx = m.backward(R if crit is None else crit.backward())
    grads = [(name, p, np.array(p.grad, dtype=np.float64)) for name, p in m.named_parameters()]
    details = {"x": compare("x", x64, dx, f)} if check_input else {}
    for name, p, g in grads:
        details[name] = compare(name, p.data, g, f)
    title = "gradcheck %r" % (module,)
    if crit is not None:
        title += " with %s" % type(crit).__name__
    return details, title


def _check_loss(crit, x64, y, compare):
    """({"x": details}, title) for a loss object: loss(x, y) against loss.backward()."""
    target = _as_target(y)

    def f():
        return float(crit(x64, target))

    f()
    return {"x": compare("x", x64, crit.backward(), f)}, "gradcheck %s" % type(crit).__name__


def _check_function(fn, x64, y, compare):
    """({"x": details}, title) for fn(x[, y]) -> (value, grad_wrt_x)."""
    args = () if y is None else (y,)

    def call():
        res = fn(x64, *args)
        if not (isinstance(res, tuple) and len(res) == 2):
            raise TypeError("gradcheck: a function must return (value, grad_wrt_x), got %r"
                            % (type(res).__name__,))
        return res

    _, dx = call()
    dx = np.array(dx, dtype=np.float64)
    if dx.shape != x64.shape:
        raise ValueError("gradcheck: the returned gradient has shape %s, x has %s"
                         % (dx.shape, x64.shape))

    def f():
        return float(call()[0])

    return {"x": compare("x", x64, dx, f)}, "gradcheck %s" % getattr(fn, "__name__", repr(fn))


def gradcheck(module_or_fn, x, y=None, loss=None, eps=1e-6, threshold=1e-6, mode="train",
              max_checks=256, seed=0, check_input=True):
    """Check the gradients of a Module, a loss object or a function by central
    differences in float64; returns a `GradcheckResult` (see the module docstring).

    module_or_fn: a fastnn Module, a fastnn loss, or fn(x[, y]) -> (value, dx).
    x: input array (N, ...). y: labels / targets or None. loss: a fastnn loss object
    (Modules only). eps: finite-difference step. threshold: largest relative error
    that passes. mode: "train" or "eval" (Modules). max_checks: entries sampled per
    tensor (None: all). check_input: also check dLoss/dx (Modules).
    """
    eps, threshold, mode = check_all("gradcheck", _CONSTRAINTS, eps=eps, threshold=threshold,
                                     mode=mode).values()
    rng = np.random.default_rng(seed)
    x64 = _as64(x, "x")

    def compare(name, arr, analytic, f):
        return _compare(name, arr, analytic, f, eps, threshold, max_checks, rng)

    if _is_module(module_or_fn):
        details, title = _check_module(module_or_fn, x64, y, loss, mode, check_input, compare,
                                       rng)
    elif _is_loss(module_or_fn):
        details, title = _check_loss(module_or_fn, x64, y, compare)
    elif callable(module_or_fn):
        details, title = _check_function(module_or_fn, x64, y, compare)
    else:
        raise TypeError("gradcheck: expected a fastnn Module, a loss object or a function, "
                        "got %s" % type(module_or_fn).__name__)
    for d in details.values():
        if not math.isfinite(d["max_rel_error"]):
            d["max_rel_error"] = math.inf
    return GradcheckResult(title, details, threshold, eps)
