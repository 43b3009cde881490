"""Architecture specs of the command line (``--arch``): a short text -> a Sequential.

Entries are separated by commas; the last is the output size (a plain width). Entries:

* ``W`` -- a Dense layer of width W (a Flatten is inserted before it after image layers);
* ``cF`` followed by ``kK`` (kernel size, required), and optionally ``sS`` (stride),
  ``pP`` (zero padding) and ``dD`` (dilation), each an int or ``HxW``: a Conv2d with F
  filters, e.g. ``c16k3p1``, ``c32k5s2``, ``c8k3x1p1x0``;
* ``poolK`` / ``avgK``, optionally with ``sS`` and ``pP``: max / average pooling over
  K x K windows (stride K by default), e.g. ``pool2``, ``pool3s2p1``, ``avg2``;
* ``gap``: global average pooling (N, C, H, W) -> (N, C); ``flatten``: a Flatten;
* ``res(ENTRY,ENTRY,...)``: a residual block y = x + f(x) of the inner entries (which
  must keep the shape), e.g. ``res(c16k3p1-bn-relu,c16k3p1-bn)-relu``.

Every entry but the last takes dash-separated modifiers, applied in order: ``bn``
(BatchNorm1d, or BatchNorm2d after image layers), an activation of the activation
table (``relu``, ``tanh``, ``swish``, ...: `MODIFIERS`) and ``dropoutP`` (Dropout with
p = P in [0, 1], default 0.5). An activation right after a Dense or Conv2d is fused into
it; tanh / sigmoid layers get Xavier init, the rest He init. Examples:
``256-bn-relu,128-relu-dropout0.2,10`` (an MLP) and
``c16k3p1-bn-relu,pool2,c32k3-relu,gap,10`` (a CNN; its input needs images).
"""
import math
import re

import numpy as np

from ..kernels.activation_table import ACTIVATIONS, LAYER_NAMES

__all__ = ["ArchError", "build_model", "takes_images", "LAYER_NAMES", "MODIFIERS"]

#: the modifiers an entry takes (dropoutP besides)
MODIFIERS = ("bn",) + LAYER_NAMES
_PAIR = r"\d+(?:x\d+)?"
_CONV = re.compile(r"c(\d+)((?:[kspd]%s)+)$" % _PAIR)
_POOL = re.compile(r"(pool|avg)(%s)((?:[sp]%s)*)$" % (_PAIR, _PAIR))
_OPTION = re.compile(r"([kspd])(%s)" % _PAIR)


class ArchError(ValueError):
    """A bad --arch spec (the message starts with "--arch:")."""


def split_entries(spec):
    """The comma-separated entries of a spec, commas inside parentheses kept."""
    entries, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise ArchError("--arch: unbalanced ')' in %r" % spec)
        if ch == "," and depth == 0:
            entries.append(spec[start:i].strip())
            start = i + 1
    if depth:
        raise ArchError("--arch: unbalanced '(' in %r" % spec)
    return entries + [spec[start:].strip()]


def takes_images(spec):
    """Whether the spec's first layer needs images (N, C, H, W) rather than features."""
    head, _ = _head_and_modifiers(split_entries(spec.strip().lower())[0])
    return bool(_CONV.match(head) or _POOL.match(head) or head in ("gap", "flatten")
                or head.startswith("res("))


def build_model(spec, input_shape, dtype=np.float32):
    """The Sequential of `spec` for samples of `input_shape`: (features,) or (C, H, W).

    >>> build_model("c4k3p1-bn-relu,pool2,10", (1, 8, 8))     # doctest: +ELLIPSIS
    Sequential(...)
    """
    from ..layers import Sequential
    if not isinstance(spec, str) or not spec.strip():
        raise ArchError("--arch: empty architecture spec")
    entries = split_entries(spec.strip().lower())
    if not entries[-1].isdigit():
        raise ArchError("--arch: the last entry (%r) is the output size and takes no "
                        "modifiers: a width such as 10" % entries[-1])
    layers, _ = _build(entries, (1,) + tuple(input_shape), np.dtype(dtype))
    return Sequential(*layers)


def _build(entries, shape, dtype):
    """(layers, output shape) of entries applied to an input of `shape` (batch first)."""
    layers = []
    for k, entry in enumerate(entries):
        if not entry:
            raise ArchError("--arch: entry %d is empty" % (k + 1))
        head, mods = _head_and_modifiers(entry)
        acts = [m for m in mods if m in LAYER_NAMES]
        init = "xavier_normal" if acts and acts[0] in ("tanh", "sigmoid") else "he_normal"
        fusable = head.isdigit() or _CONV.match(head)
        fused = mods[0] if fusable and mods and mods[0] in LAYER_NAMES else None
        made = _checked(entry, lambda: _head_layers(head, fused, init, entry, k, shape, dtype))
        for layer in made:
            shape = _add(layers, layer, shape, entry)
        for m in mods[1:] if fused else mods:
            shape = _add(layers, _modifier(m, entry, shape, dtype), shape, entry)
    return layers, shape


def _checked(what, make):
    """make(), a layer's TypeError / ValueError as an ArchError naming `what`."""
    try:
        return make()
    except ArchError:
        raise
    except (TypeError, ValueError) as exc:
        raise ArchError("--arch: %r: %s" % (what, exc)) from None


def _add(layers, layer, shape, entry):
    """Append layer; the shape it outputs for `shape`."""
    out = _checked(entry, lambda: layer.output_shape(shape))
    layers.append(layer)
    return out


def _head_and_modifiers(entry):
    """("res(...)" or the first dash-separated token, [modifiers])."""
    if entry.startswith("res("):
        end = _closing(entry, 3)
        rest = entry[end + 1:]
        if rest and not rest.startswith("-"):
            raise ArchError("--arch: %r: expected '-modifier' after the block, got %r"
                            % (entry, rest))
        return entry[:end + 1], [t.strip() for t in rest.split("-")[1:]]
    tokens = [t.strip() for t in entry.split("-")]
    return tokens[0], tokens[1:]


def _closing(text, start):
    """The index of the parenthesis closing the one at text[start]."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise ArchError("--arch: unbalanced '(' in %r" % text)


def _pair(text):
    """"3" -> 3, "3x2" -> (3, 2)."""
    parts = tuple(int(v) for v in text.split("x"))
    return parts[0] if len(parts) == 1 else parts


def _head_layers(head, fused, init, entry, k, shape, dtype):
    """The layers an entry's head makes for an input of `shape`."""
    from .. import layers as L
    if head.isdigit():
        width = int(head)
        if width < 1:
            raise ArchError("--arch: entry %d (%r): the width must be >= 1" % (k + 1, entry))
        flat = [L.Flatten()] if len(shape) > 2 else []
        return flat + [L.Dense(math.prod(shape[1:]), width, activation=fused, init=init,
                               dtype=dtype)]
    conv, pool = _CONV.match(head), _POOL.match(head)
    if conv or pool or head == "gap":
        _need_images(shape, entry)
    if conv:
        opts = dict(_OPTION.findall(conv.group(2)))
        if "k" not in opts:
            raise ArchError("--arch: %r: a convolution needs its kernel size, e.g. c16k3"
                            % entry)
        names = {"k": "kernel_size", "s": "stride", "p": "padding", "d": "dilation"}
        kw = {names[key]: _pair(v) for key, v in opts.items()}
        return [L.Conv2d(shape[1], int(conv.group(1)), activation=fused, init=init,
                         dtype=dtype, **kw)]
    if pool:
        opts = dict(_OPTION.findall(pool.group(3)))
        cls = L.MaxPool2d if pool.group(1) == "pool" else L.AvgPool2d
        return [cls(_pair(pool.group(2)), stride=_pair(opts["s"]) if "s" in opts else None,
                    padding=_pair(opts.get("p", "0")))]
    if head in ("gap", "flatten"):
        return [L.GlobalAvgPool2d() if head == "gap" else L.Flatten()]
    if head.startswith("res("):
        inner, _ = _build(split_entries(head[4:-1]), shape, dtype)
        return [L.Residual(L.Sequential(*inner))]
    raise ArchError("--arch: entry %d (%r) must start with a layer width, e.g. '128-relu', "
                    "or be a convolution 'cFkK', 'poolK', 'avgK', 'gap', 'flatten' or "
                    "'res(...)'" % (k + 1, entry))


def _need_images(shape, entry):
    if len(shape) != 4:
        raise ArchError("--arch: %r needs images (N, C, H, W) but gets %d features per "
                        "sample: image layers come first, on image data" % (entry, shape[1]))


def _modifier(m, entry, shape, dtype):
    """The layer of modifier m after a layer whose output has `shape`."""
    from .. import layers as L
    if m == "bn":
        cls = L.BatchNorm2d if len(shape) == 4 else L.BatchNorm1d
        return cls(shape[1], dtype=dtype)
    if m in LAYER_NAMES:
        return getattr(L, ACTIVATIONS[m].layer)()
    if not m.startswith("dropout"):
        raise ArchError("--arch: unknown modifier %r in %r (expected bn, %s or dropoutP)"
                        % (m, entry, ", ".join(LAYER_NAMES)))
    p = m[len("dropout"):].lstrip("=:") or "0.5"
    try:
        p = float(p)
    except ValueError:
        raise ArchError("--arch: bad dropout modifier %r (expected dropoutP, P a number in "
                        "[0, 1], e.g. dropout0.2)" % m) from None
    return _checked(m, lambda: L.Dropout(p))      # the layer's own rule for p
