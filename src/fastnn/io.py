"""Saving and loading models: one .npz holding the architecture as JSON and every
state_dict array. Loading never unpickles (`np.load(..., allow_pickle=False)`).

File layout: "__fastnn_model__" is a uint8 array with the UTF-8 JSON
`{"format": "fastnn.model", "version": 1, "model": <node>}` where a node is
`{"type": "Dense", "args": {...constructor arguments, dtype as "float32"...}}` and a
Sequential's node also has `"layers": [<node>, ...]`; the other entries are the
model's state_dict arrays ("0.weight", "1.running_mean", ...).

>>> import os, tempfile, numpy as np, fastnn
>>> from fastnn.layers import Sequential, Dense, ReLU
>>> model = Sequential(Dense(2, 3, rng=0), ReLU(), Dense(3, 1, rng=1))
>>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
>>> fastnn.io.save(model, path)
>>> x = np.ones((4, 2), np.float32)
>>> bool((fastnn.io.load(path)(x) == model(x)).all())
True
"""
import json
import os
import tempfile
import zipfile

import numpy as np

from .layers.base import REGISTRY, Module
from .layers.sequential import Sequential

__all__ = ["save", "load"]

ARCH_KEY = "__fastnn_model__"
FORMAT = "fastnn.model"
VERSION = 1
_MAX_DEPTH = 64


def _node(module, depth=0):
    if depth > _MAX_DEPTH:
        raise ValueError("fastnn.save: model nesting is deeper than %d" % _MAX_DEPTH)
    name = type(module).__name__
    if REGISTRY.get(name) is not type(module):
        raise TypeError("fastnn.save: cannot save a %s: only fastnn's built-in layers "
                        "(%s) can be saved" % (name, ", ".join(sorted(REGISTRY))))
    node = {"type": name, "args": module._config()}
    if isinstance(module, Sequential):
        node["layers"] = [_node(m, depth + 1) for m in module]
    return node


def save(model, path):
    """Write `model` (built-in layers, possibly nested in Sequential) to `path` as one
    .npz file (the exact path given; no suffix is added). The file is written to a
    temporary file in the same directory and then renamed over `path`, so a failure
    never leaves a partial file or destroys an existing one."""
    if not isinstance(model, Module):
        raise TypeError("fastnn.save: expected a fastnn Module, got %s" % type(model).__name__)
    path = os.fspath(path)
    arch = {"format": FORMAT, "version": VERSION, "model": _node(model)}
    arrays = model.state_dict()
    blob = np.frombuffer(json.dumps(arch).encode("utf-8"), dtype=np.uint8)
    arrays[ARCH_KEY] = blob
    atomic_savez(path, arrays)


def atomic_savez(path, arrays, write=None):
    """Write `arrays` as an .npz to a temporary file beside `path`, fsync it, then rename
    it over `path`: a failure at any point leaves an existing `path` untouched and no
    temporary file behind. `write(f, arrays)` does the writing (default np.savez)."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            (write or _savez)(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _savez(f, arrays):
    np.savez(f, **arrays)


def _bad(path, reason):
    return ValueError("fastnn.load: %s is not a valid fastnn model file: %s" % (path, reason))


def _int_product(args):
    prod = 1
    for v in args.values():
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            prod *= v
    return prod


def _build(node, path, budget, depth=0):
    """Module from an architecture node. `budget` (elements stored in the file) bounds
    what a layer may allocate: every built-in layer's integer arguments multiply to at
    most the size of an array it saves, so a forged architecture cannot make load
    allocate more than the file holds."""
    if depth > _MAX_DEPTH:
        raise _bad(path, "architecture nested deeper than %d" % _MAX_DEPTH)
    if not isinstance(node, dict):
        raise _bad(path, "a layer entry must be an object, got %s" % type(node).__name__)
    kind = node.get("type")
    args = node.get("args")
    expected = {"type", "args", "layers"} if kind == "Sequential" else {"type", "args"}
    if set(node) != expected:
        raise _bad(path, "layer entry keys must be %s, got %s" % (sorted(expected), sorted(node)))
    if not isinstance(kind, str) or kind not in REGISTRY:
        raise _bad(path, "unknown layer type %r (known: %s)" % (kind, ", ".join(sorted(REGISTRY))))
    if not isinstance(args, dict):
        raise _bad(path, "%s arguments must be an object, got %s" % (kind, type(args).__name__))
    if kind == "Sequential":
        if args:
            raise _bad(path, "Sequential takes no arguments, got %s" % sorted(args))
        layers = node["layers"]
        if not isinstance(layers, list):
            raise _bad(path, "Sequential layers must be a list")
        return Sequential(*[_build(n, path, budget, depth + 1) for n in layers])
    if _int_product(args) > budget:
        raise _bad(path, "%s arguments %s need more parameters than the file stores"
                   % (kind, args))
    try:
        return REGISTRY[kind]._from_config(args)
    except (TypeError, ValueError) as exc:
        raise _bad(path, "bad arguments for %s: %s" % (kind, exc)) from None


def load(path):
    """Read a model written by `save`: a new Module (in training mode, like a freshly
    built one) with the saved parameters and buffers. Raises ValueError (with no side effects) for a
    file that is not a fastnn .npz: truncated, unknown layer, bad JSON, missing, extra
    or mis-shaped arrays, object arrays."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError("fastnn.load: no such file: %s" % path)
    try:
        # our own handle: np.load leaks the file it opened when the zip is corrupt
        with open(path, "rb") as f:
            data = np.load(f, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise _bad(path, "not an .npz archive (a bare .npy array)")
            with data:
                arrays = {k: data[k] for k in data.files}
    except ValueError as exc:
        if str(exc).startswith("fastnn.load:"):
            raise
        raise _bad(path, str(exc)) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError,
            NotImplementedError, MemoryError, TypeError) as exc:
        raise _bad(path, "%s: %s" % (type(exc).__name__, exc)) from None

    blob = arrays.pop(ARCH_KEY, None)
    if blob is None:
        raise _bad(path, "no architecture entry %r" % ARCH_KEY)
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise _bad(path, "the architecture entry must be a 1-D uint8 array")
    try:
        arch = json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _bad(path, "architecture is not valid JSON (%s)" % exc) from None
    if not isinstance(arch, dict) or set(arch) != {"format", "version", "model"}:
        raise _bad(path, "architecture must be an object with keys format, version, model")
    if arch["format"] != FORMAT:
        raise _bad(path, "format %r is not %r" % (arch["format"], FORMAT))
    if arch["version"] != VERSION or isinstance(arch["version"], bool):
        raise _bad(path, "unsupported version %r (this fastnn reads version %d)"
                   % (arch["version"], VERSION))
    budget = sum(a.size for a in arrays.values())
    try:
        model = _build(arch["model"], path, budget)
    except RecursionError:
        raise _bad(path, "architecture nested too deeply") from None
    except MemoryError:
        raise _bad(path, "architecture too large to build") from None
    except TypeError as exc:      # e.g. Sequential of mixed dtypes
        raise _bad(path, str(exc)) from None

    for key, a in arrays.items():
        if a.dtype.kind != "f":
            raise _bad(path, "array %r must be float, got %s" % (key, a.dtype))
    expected = {k: v for k, v in model._state_items()}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        raise _bad(path, "arrays do not match the architecture: missing %s, unexpected %s"
                   % (missing or "none", extra or "none"))
    for key, target in expected.items():
        a = arrays[key]
        if a.shape != target.shape or a.dtype != target.dtype:
            raise _bad(path, "array %r must be %s of shape %s, got %s of shape %s"
                       % (key, target.dtype, target.shape, a.dtype, a.shape))
    model.load_state_dict(arrays)
    return model
