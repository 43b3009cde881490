"""Saving and loading models: one .npz holding the architecture as JSON and every
state_dict array. Loading never unpickles.

File layout: "__fastnn_model__" is a uint8 array with the UTF-8 JSON
`{"format": "fastnn.model", "version": 1, "model": <node>, "training": <mode>}` where a
node is `{"type": "Dense", "args": {...constructor arguments, dtype as "float32"...}}`
(a container's node -- Sequential, Residual -- also has `"layers": [<node>, ...]`) and
the mode is true / false when every module is in training / eval mode, or {module name: bool} when they differ
(files without it load in training mode); the other entries are the model's
state_dict arrays ("0.weight", "1.running_mean", ...), and any entries "extra.<name>"
that `save(..., extra=...)` was given (numbers or strings, e.g. the class names the
command line saves as "extra.classes"), which `load` skips.

Loading checks before it allocates: the archive's directory and each array's .npy
header (`fastnn.core.archive`), the architecture (at most `MAX_LAYERS` modules nested at
most `MAX_DEPTH` deep, in `MAX_ARCH_BYTES` of JSON) and the sizes its layers would
allocate against the arrays the file declares, then the declared dtype and shape of
every array against the built model; only then is any array decompressed. Every
failure is a ValueError naming the file (FileNotFoundError for a missing one), with
nothing else changed. Loading takes time linear in the number of layers.

>>> import os, tempfile, numpy as np, fastnn
>>> from fastnn.layers import Sequential, Dense, ReLU
>>> model = Sequential(Dense(2, 3, rng=0), ReLU(), Dense(3, 1, rng=1)).eval()
>>> path = os.path.join(tempfile.mkdtemp(), "model.npz")
>>> fastnn.io.save(model, path)
>>> x = np.ones((4, 2), np.float32)
>>> loaded = fastnn.io.load(path)
>>> bool((loaded(x) == model(x)).all()), loaded.training
(True, False)
"""
import json
import os
import warnings

import numpy as np

from .core.archive import ArchiveError, NpzArchive, atomic_savez
from .layers.base import REGISTRY, Module
from .layers.residual import Residual
from .layers.sequential import Sequential

#: containers: their node lists their children under "layers" -> (build from children,
#: the children of a built one, how many children it takes: None for any number)
_CONTAINERS = {"Sequential": (lambda children: Sequential(*children), list, None),
               "Residual": (lambda children: Residual(*children),
                            lambda m: [m.module], 1)}

__all__ = ["save", "load", "architecture", "MAX_LAYERS", "MAX_DEPTH", "MAX_ARCH_BYTES"]

ARCH_KEY = "__fastnn_model__"
#: prefix of the entries stored beside the model (`save(..., extra=...)`)
EXTRA_PREFIX = "extra."
#: the metadata entry of a training checkpoint (fastnn.train.checkpoint)
CHECKPOINT_KEY = "__fastnn_checkpoint__"
FORMAT = "fastnn.model"
VERSION = 1
#: the most modules (layers and containers) a model file may describe
MAX_LAYERS = 10_000
#: the deepest nesting of Sequentials a model file may describe
MAX_DEPTH = 64
#: the largest architecture JSON a model file may hold
MAX_ARCH_BYTES = 8 << 20


def architecture(model, fn="fastnn.save"):
    """The JSON-native description of `model` saved in a file: {"type", "args"[,
    "layers"]}; TypeError for modules that are not fastnn's built-in layers."""
    return _node(model, fn, 0)


def _node(module, fn, depth):
    if depth > MAX_DEPTH:
        raise ValueError("%s: model nesting is deeper than %d" % (fn, MAX_DEPTH))
    name = type(module).__name__
    if REGISTRY.get(name) is not type(module):
        raise TypeError("%s: cannot save a %s: only fastnn's built-in layers (%s) can be "
                        "saved" % (fn, name, ", ".join(sorted(REGISTRY))))
    node = {"type": name, "args": module._config()}
    if name in _CONTAINERS:
        node["layers"] = [_node(m, fn, depth + 1) for m in _CONTAINERS[name][1](module)]
    return node


def _modes(model):
    """The "training" entry: one bool when every module agrees, else a dict."""
    modes = {name: m.training for name, m in model.named_modules()}
    values = set(modes.values())
    return values.pop() if len(values) == 1 else modes


def save(model, path, extra=None):
    """Write `model` (built-in layers, possibly nested in Sequential) and its mode
    (train / eval) to `path` as one .npz file (the exact path given; no suffix is
    added), atomically: see `fastnn.core.archive.atomic_savez` for permissions,
    symbolic links and temporary files. `extra` ({name: array of numbers or strings})
    is stored beside the model as entries "extra.<name>", which `load` skips; read them
    with `np.load(path)["extra.<name>"]`."""
    if not isinstance(model, Module):
        raise TypeError("fastnn.save: expected a fastnn Module, got %s" % type(model).__name__)
    path = os.fspath(path)
    arch = {"format": FORMAT, "version": VERSION, "model": architecture(model),
            "training": _modes(model)}
    arrays = model.state_dict()
    for name, value in (extra or {}).items():
        value = np.asarray(value)
        if value.dtype.kind not in "biufU":
            raise TypeError("fastnn.save: extra[%r] must hold numbers or strings, got %s"
                            % (name, value.dtype))
        arrays[EXTRA_PREFIX + name] = value
    arrays[ARCH_KEY] = np.frombuffer(json.dumps(arch).encode("utf-8"), dtype=np.uint8)
    atomic_savez(path, arrays, _savez, "fastnn.save")


def _savez(f, arrays):
    np.savez(f, **arrays)


# ------------------------------------------------------------------------ loading
class _Bad(ValueError):
    """A reason the file is not a valid model file (load adds the path)."""


def load(path):
    """Read a model written by `save`: a new Module with the saved parameters and
    buffers, in the mode (train / eval) it was saved in. Raises ValueError (with no side
    effects) for anything that is not a valid fastnn model file -- another kind of
    file, a directory, a training checkpoint, a truncated or forged archive -- and
    FileNotFoundError for a missing file. Warns (RuntimeWarning) when a weight is NaN
    or infinite."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError("fastnn.load: no such file: %s" % path)
    try:
        with NpzArchive(path) as archive:
            model, modes = _read_model(archive)
    except (_Bad, ArchiveError) as exc:
        raise ValueError("fastnn.load: %s is not a valid fastnn model file: %s"
                         % (path, exc)) from None
    _set_modes(model, modes)
    arrays = [(k, p.data) for k, p in model.named_parameters()] + model.named_buffers()
    bad = [k for k, v in arrays if not np.isfinite(v).all()]
    if bad:
        warnings.warn("fastnn.load: %s holds NaN or infinite values in %s"
                      % (path, ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")),
                      RuntimeWarning, stacklevel=2)
    return model


def _read_model(archive):
    """(model, modes) from an archive whose directory passed its checks."""
    names = {k for k in archive.names if not k.startswith(EXTRA_PREFIX)}
    if ARCH_KEY not in names:
        if CHECKPOINT_KEY in names:
            raise _Bad("it is a training checkpoint; use "
                       "fastnn.train.checkpoint.load_checkpoint")
        raise _Bad("no architecture entry %r (not written by fastnn.save)" % ARCH_KEY)
    arch = read_json(archive, ARCH_KEY, _Bad)
    if not isinstance(arch, dict) or set(arch) - {"training"} != {"format", "version",
                                                                   "model"}:
        raise _Bad("the architecture must be an object with keys format, version, model"
                   "[, training]")
    if arch["format"] != FORMAT:
        raise _Bad("format %r is not %r" % (arch["format"], FORMAT))
    if arch["version"] != VERSION or isinstance(arch["version"], bool):
        raise _Bad("unsupported version %r (this fastnn reads version %d)"
                   % (arch["version"], VERSION))
    headers = {k: archive.header(k) for k in names - {ARCH_KEY}}
    for key, (dtype, _) in headers.items():
        if dtype.kind != "f":
            raise _Bad("array %r must be float, got %s" % (key, dtype))
    budget = sum(_count(shape) for _, shape in headers.values())
    nodes = _walk(arch["model"], budget)
    model = _build(arch["model"], nodes)
    modes = arch.get("training", True)
    _check_modes(modes, model)
    model.load_state_dict(_read_arrays(archive, headers, model))
    return model, modes


def read_json(archive, key, bad):
    """The JSON value stored as uint8 array `key` (at most MAX_ARCH_BYTES); errors are
    raised as `bad(reason)`."""
    dtype, shape = archive.header(key)
    if dtype != np.uint8 or len(shape) != 1:
        raise bad("the %s entry must be a 1-D uint8 array" % key)
    if shape[0] > MAX_ARCH_BYTES:
        raise bad("the %s entry is %d bytes, more than the limit of %d"
                  % (key, shape[0], MAX_ARCH_BYTES))
    blob = archive.read(key)
    try:
        return json.loads(blob.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad("the %s entry is not valid JSON (%s)" % (key, exc)) from None


def _count(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def _walk(root, budget):
    """Check the architecture tree without building it: node structure, known layer
    types, at most MAX_LAYERS nodes and MAX_DEPTH levels, and the sizes the layers'
    integer arguments imply. Every built-in layer's integer arguments multiply to at
    most the size of one array it saves, so their sum over all layers may not exceed
    the elements the file's arrays declare. Returns the number of nodes."""
    stack, count, need = [(root, 0)], 0, 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_LAYERS:
            raise _Bad("the architecture has more than %d modules" % MAX_LAYERS)
        if depth > MAX_DEPTH:
            raise _Bad("the architecture is nested deeper than %d" % MAX_DEPTH)
        kind = _check_node(node)
        if kind in _CONTAINERS:
            stack.extend((child, depth + 1) for child in reversed(node["layers"]))
        else:
            need += _int_product(node["args"])
            if need > budget:
                raise _Bad("the layers' arguments (%s %s, ...) need more parameters than "
                           "the file stores" % (kind, node["args"]))
    return count


def _check_node(node):
    """The node's layer type after checking its form (not its argument values)."""
    if not isinstance(node, dict):
        raise _Bad("a layer entry must be an object, got %s" % type(node).__name__)
    kind = node.get("type")
    if not isinstance(kind, str) or kind not in REGISTRY:
        raise _Bad("unknown layer type %.80r (known: %s)" % (kind, ", ".join(sorted(REGISTRY))))
    expected = {"type", "args", "layers"} if kind in _CONTAINERS else {"type", "args"}
    if set(node) != expected:
        raise _Bad("layer entry keys must be %s, got %s" % (sorted(expected), sorted(node)))
    args = node["args"]
    if not isinstance(args, dict):
        raise _Bad("%s arguments must be an object, got %s" % (kind, type(args).__name__))
    if kind in _CONTAINERS:
        if args:
            raise _Bad("%s takes no arguments, got %s" % (kind, sorted(args)))
        count = _CONTAINERS[kind][2]
        if not isinstance(node["layers"], list) or (
                count is not None and len(node["layers"]) != count):
            raise _Bad("%s layers must be a list%s" % (
                kind, "" if count is None else " of %d" % count))
    return kind


def _int_product(args):
    """The product of a layer's positive int arguments (0 when it has none: such a
    layer saves no array)."""
    ints = [v for v in args.values() if isinstance(v, int) and not isinstance(v, bool)
            and v > 0]
    prod = 1 if ints else 0
    for v in ints:
        prod *= v
    return prod


def _build(node, n_nodes):
    """The Module of an architecture tree that passed `_walk` (bottom up, without
    recursion: each Sequential is built from its already built children)."""
    built = {}
    order, stack = [], [node]
    while stack:                         # parents before children
        n = stack.pop()
        order.append(n)
        if n["type"] in _CONTAINERS:
            stack.extend(n["layers"])
    for n in reversed(order):            # children before parents
        try:
            if n["type"] in _CONTAINERS:
                built[id(n)] = _CONTAINERS[n["type"]][0]([built[id(c)] for c in n["layers"]])
            else:
                built[id(n)] = REGISTRY[n["type"]]._from_config(n["args"])
        except (TypeError, ValueError) as exc:
            raise _Bad("bad arguments for %s: %s" % (n["type"], exc)) from None
        except MemoryError:
            raise _Bad("the architecture is too large to build") from None
    return built[id(node)]


def _check_modes(modes, model):
    if isinstance(modes, bool):
        return
    names = [name for name, _ in model.named_modules()]
    if not isinstance(modes, dict) or set(modes) != set(names) \
            or not all(isinstance(v, bool) for v in modes.values()):
        raise _Bad("training must be true, false or {module name: bool} for every module")


def _set_modes(model, modes):
    if isinstance(modes, bool):
        model.train(modes)
        return
    for name, module in model.named_modules():     # parents first: children override
        module.train(modes[name])


def _read_arrays(archive, headers, model):
    """The arrays, after checking every declared dtype and shape against the model."""
    expected = {k: p.data for k, p in model.named_parameters()}
    expected.update(model.named_buffers())
    missing, extra = sorted(set(expected) - set(headers)), sorted(set(headers) - set(expected))
    if missing or extra:
        raise _Bad("arrays do not match the architecture: missing %s, unexpected %s"
                   % (missing[:10] or "none", extra[:10] or "none"))
    for key, target in expected.items():
        dtype, shape = headers[key]
        if shape != target.shape or dtype != target.dtype:
            raise _Bad("array %r must be %s of shape %s, got %s of shape %s"
                       % (key, target.dtype, target.shape, dtype, shape))
    return {key: archive.read(key) for key in expected}
