"""PyTorch interop: fastnn models to and from `torch.nn.Sequential`, and their weights in
torch's layout (state dicts and safetensors files).

Each fastnn layer type says which torch.nn modules it is (`TO_TORCH`, keyed by the layer
class): a Dense with a fused activation is a Linear followed by the activation's module
(so later indices shift, in `to_torch` and `torch_state_dict` alike), a Linear's weight
is fastnn's transposed, (out, in). Each supported torch module type says which fastnn
layer it is (`FROM_TORCH`); `from_torch` fuses a Linear followed by an activation into
one Dense, which `to_torch` splits again, so the keys of torch's state_dict and of
`torch_state_dict` of the converted model agree. Activations come from the activation
table (`fastnn.kernels.activation_table`: each row's torch module and keyword).

`torch_state_dict` / `load_torch_state_dict` work on NumPy arrays and need no torch;
`to_torch` / `from_torch` need torch, the safetensors functions the safetensors package
(extra ``fastnn[torch]``). `import fastnn` never imports this module.

>>> import numpy as np, fastnn, fastnn.interop
>>> model = fastnn.Sequential(fastnn.Dense(4, 8, activation="relu", rng=0),
...                           fastnn.BatchNorm1d(8), fastnn.Dense(8, 3, rng=1))
>>> {k: v.shape for k, v in fastnn.interop.torch_state_dict(model).items()}
... # doctest: +NORMALIZE_WHITESPACE
{'0.weight': (8, 4), '0.bias': (8,), '2.weight': (8,), '2.bias': (8,),
 '2.running_mean': (8,), '2.running_var': (8,), '2.num_batches_tracked': (),
 '3.weight': (3, 8), '3.bias': (3,)}
"""
import os
from collections import namedtuple

import numpy as np

from .core.archive import atomic_savez
from .core.validation import InstanceOf, check, check_bool, describe, short_repr
from .kernels.activation_table import ACTIVATIONS
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout, Flatten,
                     GlobalAvgPool2d, MaxPool2d, Module, PReLU, Sequential)
from . import layers

__all__ = ["to_torch", "from_torch", "torch_state_dict", "load_torch_state_dict",
           "save_safetensors", "load_safetensors", "TO_TORCH", "FROM_TORCH"]

#: one torch.nn module a fastnn layer becomes: `name` its torch.nn class, `kwargs` its
#: constructor's arguments, `state` its state_dict entries in torch's order, `layer`
#: the fastnn layer (whose mode it takes)
TorchModule = namedtuple("TorchModule", "name kwargs state layer")

#: one state_dict entry: its key within the module, the fastnn array holding it (a
#: parameter's data or a buffer; written in place on loading), and whether torch's
#: layout is that array transposed
Entry = namedtuple("Entry", "key array transposed")

_MODULE = InstanceOf(Module, "a fastnn Module")


# ------------------------------------------------------------------ public functions
def torch_state_dict(model):
    """{key: array} with exactly the keys, shapes and layouts of
    `to_torch(model).state_dict()` (copies; NumPy arrays; no torch needed)."""
    fn = "fastnn.interop.torch_state_dict"
    return {key: _torch_layout(e) for key, e in _entries(model, fn)}


def load_torch_state_dict(model, state_dict, strict=True):
    """Copy a torch-layout state dict (values: NumPy arrays or torch tensors) into
    `model`, converting to the model's dtype. strict=True: the keys must be exactly
    those of `torch_state_dict(model)`; strict=False loads the keys present in both.
    ValueError naming the key for a missing or unexpected key or a wrong shape,
    TypeError for a value that is not an array of the right kind; the model is
    changed only when every value checks out."""
    fn = "fastnn.interop.load_torch_state_dict"
    if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
        raise TypeError("%s: state_dict must be a dict of arrays, got %s"
                        % (fn, type(state_dict).__name__))
    strict = check_bool(strict, fn, "strict")
    entries = _entries(model, fn)
    expected = [key for key, _ in entries]
    if strict:
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in set(expected)]
        if missing or unexpected:
            raise ValueError("%s: keys do not match the model: missing %s, unexpected %s"
                             % (fn, missing or "none", unexpected or "none"))
    checked = [(e, _checked_value(state_dict[key], e, key, fn))
               for key, e in entries if key in state_dict]
    for e, value in checked:
        np.copyto(e.array, value.T if e.transposed else value, casting="unsafe")


def to_torch(model):
    """A torch.nn.Sequential computing what `model` computes (same outputs, same mode
    per layer, same dtype); nested Sequentials are flattened. ValueError naming the
    layer for a layer torch has no built-in module for (Maxout, Residual, Swish with
    beta != 1)."""
    fn = "fastnn.interop.to_torch"
    torch = _import("torch", fn)
    parts = _torch_modules(model, fn)
    seq = torch.nn.Sequential(*(getattr(torch.nn, p.name)(**p.kwargs) for p in parts))
    dtype = model.dtype if model.dtype is not None else np.dtype(np.float32)
    seq.to({np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dtype])
    state = {k: torch.from_numpy(v) for k, v in torch_state_dict(model).items()}
    with torch.no_grad():
        seq.load_state_dict(state, strict=True)
    seq.train(model.training)
    for module, part in zip(seq, parts):
        module.train(part.layer.training)
    return seq


def from_torch(module):
    """A fastnn Sequential computing what torch `module` computes: a torch.nn.Sequential
    (nested ones flattened) of Linear, Conv2d, BatchNorm1d/2d, MaxPool2d, AvgPool2d,
    AdaptiveAvgPool2d(1) + Flatten (GlobalAvgPool2d), activations (those of the
    activation table, PReLU), Dropout and Flatten, or one such module. A Linear
    (Conv2d) followed by an activation becomes one Dense (Conv2d) with that fused
    activation. Weights, buffers and each layer's mode are copied.
    ValueError naming the module for anything else."""
    fn = "fastnn.interop.from_torch"
    torch = _import("torch", fn)
    if not isinstance(module, torch.nn.Module):
        raise TypeError("%s: expected a torch.nn.Module, got %s" % (fn, type(module).__name__))
    leaves = _torch_leaves(torch, module)
    built, i = [], 0
    while i < len(leaves):
        layer, used = _from_torch_module(torch, leaves, i, fn)
        layer.train(leaves[i].training)
        built.append(layer)
        i += used
    model = Sequential(*built)
    model.training = module.training
    state = {"%d.%s" % (k, name): value for k, leaf in enumerate(leaves)
             for name, value in leaf.state_dict().items()}
    load_torch_state_dict(model, state, strict=True)
    return model


def save_safetensors(model, path):
    """Write `torch_state_dict(model)` to `path` as a safetensors file (atomically):
    `model_torch.load_state_dict(safetensors.torch.load_file(path), strict=True)` loads
    it into `to_torch(model)` or any torch model of the same layout."""
    fn = "fastnn.interop.save_safetensors"
    st = _import("safetensors.numpy", fn)
    data = st.save(torch_state_dict(model), metadata={"format": "pt"})
    atomic_savez(os.fspath(path), data, _write_bytes, fn)


def load_safetensors(model, path):
    """Load a torch-layout safetensors file (e.g. `safetensors.torch.save_file(
    torch_model.state_dict(), path)`) into `model`, as load_torch_state_dict with
    strict=True."""
    fn = "fastnn.interop.load_safetensors"
    st = _import("safetensors.numpy", fn)
    load_torch_state_dict(model, st.load_file(os.fspath(path)), strict=True)


# ------------------------------------------------------------------------- helpers
def _import(name, fn):
    import importlib
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError("%s needs %s: pip install 'fastnn[torch]'"
                          % (fn, name.split(".")[0])) from None


def _write_bytes(f, data):
    f.write(data)


def _torch_layout(entry):
    a = entry.array.T if entry.transposed else entry.array
    return np.array(a, order="C", copy=True)


def _torch_modules(model, fn):
    """The TorchModules of `model`'s leaf layers, in order."""
    check(fn, "model", model, _MODULE)
    parts = []
    for i, layer in enumerate(model.flat_layers()):
        convert = TO_TORCH.get(type(layer))
        if convert is None:
            raise ValueError("%s: layer %d %s has no torch.nn equivalent (convertible: %s)"
                             % (fn, i, short_repr(layer),
                                ", ".join(sorted(c.__name__ for c in TO_TORCH))))
        try:
            parts.extend(convert(layer))
        except _NoTorch as exc:
            raise ValueError("%s: layer %d %s has no torch.nn equivalent: %s"
                             % (fn, i, short_repr(layer), exc)) from None
    return parts


def _entries(model, fn):
    """[(torch key, Entry)] of `model`, in torch's order."""
    return [("%d.%s" % (i, e.key), e) for i, part in enumerate(_torch_modules(model, fn))
            for e in part.state]


def _checked_value(value, entry, key, fn):
    """`value` (an array or a torch tensor) as an ndarray fit for `entry`, or the error."""
    detach = getattr(value, "detach", None)
    if callable(detach):                     # a torch tensor
        value = detach().cpu().numpy()
    try:
        value = np.asarray(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError("%s: %s must be an array, got %s"
                        % (fn, key, type(value).__name__)) from None
    want = entry.array.T.shape if entry.transposed else entry.array.shape
    kind = entry.array.dtype.kind
    if value.dtype.kind not in {"f": "f", "i": "iu"}[kind]:
        raise TypeError("%s: %s must be %s array, got %s" % (
            fn, key, "a float" if kind == "f" else "an integer", describe(value)))
    if value.shape != want:
        raise ValueError("%s: %s must have shape %s, got %s"
                         % (fn, key, want, describe(value)))
    if kind == "i" and (value < 0).any():
        raise ValueError("%s: %s must be a non-negative count, got %s" % (fn, key, value))
    return value


def _registered(table, *keys):
    """Decorator: the function goes into `table` under each of `keys`."""
    def decorate(convert):
        for key in keys:
            table[key] = convert
        return convert
    return decorate


# ----------------------------------------------------------- fastnn layer -> torch
class _NoTorch(Exception):
    """A layer's configuration torch has no module for (the message says why)."""


#: fastnn layer class -> convert(layer) -> [TorchModule]
TO_TORCH = {}


def _activation_module(row, value, layer):
    """[the TorchModule of activation-table row `row` with parameter `value`] ([] for
    the identity)."""
    if row.name == "identity":
        return []
    kwargs = {}
    if row.param is not None:
        if row.torch_param is not None:
            kwargs[row.torch_param] = value
        elif value != row.param.default:
            raise _NoTorch("torch.nn.%s has no %s (only %s=%r is %s)"
                           % (row.torch, row.param.name, row.param.name,
                              row.param.default, row.torch))
    return [TorchModule(row.torch, kwargs, (), layer)]


def _weight_and_bias(layer, transposed):
    state = [Entry("weight", layer.weight.data, transposed)]
    if layer.bias is not None:
        state.append(Entry("bias", layer.bias.data, False))
    return tuple(state)


@_registered(TO_TORCH, *(getattr(layers, row.layer) for row in ACTIVATIONS.values()
               if row.layer is not None))
def _activation_to_torch(layer):
    row = layer.row
    value = None if row.param is None else getattr(layer, row.param.name)
    return _activation_module(row, value, layer)


def _with_activation(product, layer):
    """[the TorchModule of a Dense's or Conv2d's product, then its fused activation's]."""
    row = ACTIVATIONS[layer.activation or "identity"]
    return [product] + _activation_module(row, row.value(layer.activation_kw), layer)


@_registered(TO_TORCH, Dense)
def _dense_to_torch(layer):
    return _with_activation(TorchModule(
        "Linear", {"in_features": layer.in_features, "out_features": layer.out_features,
                   "bias": layer.bias is not None}, _weight_and_bias(layer, True), layer),
        layer)


@_registered(TO_TORCH, Conv2d)
def _conv2d_to_torch(layer):
    return _with_activation(TorchModule(
        "Conv2d", {"in_channels": layer.in_channels, "out_channels": layer.out_channels,
                   "kernel_size": layer.kernel_size, "stride": layer.stride,
                   "padding": layer.padding, "dilation": layer.dilation,
                   "bias": layer.bias is not None}, _weight_and_bias(layer, False), layer),
        layer)


@_registered(TO_TORCH, MaxPool2d, AvgPool2d)
def _pool2d_to_torch(layer):
    # torch's AvgPool2d counts padded zeros (count_include_pad=True) as fastnn's does
    return [TorchModule(type(layer).__name__, {"kernel_size": layer.kernel_size,
                                                "stride": layer.stride,
                                                "padding": layer.padding}, (), layer)]


@_registered(TO_TORCH, GlobalAvgPool2d)
def _global_avgpool2d_to_torch(layer):
    return [TorchModule("AdaptiveAvgPool2d", {"output_size": 1}, (), layer),
            TorchModule("Flatten", {}, (), layer)]


@_registered(TO_TORCH, PReLU)
def _prelu_to_torch(layer):
    return [TorchModule("PReLU", {"num_parameters": layer.num_parameters, "init": layer.init},
                        (Entry("weight", layer.alpha.data, False),), layer)]


@_registered(TO_TORCH, BatchNorm1d, BatchNorm2d)
def _batchnorm_to_torch(layer):
    state = (Entry("weight", layer.gamma.data, False),
             Entry("bias", layer.beta.data, False)) if layer.affine else ()
    state += (Entry("running_mean", layer.running_mean, False),
              Entry("running_var", layer.running_var, False),
              Entry("num_batches_tracked", layer.num_batches_tracked, False))
    return [TorchModule(type(layer).__name__, {"num_features": layer.num_features,
                                                "eps": layer.eps, "momentum": layer.momentum,
                                                "affine": layer.affine}, state, layer)]


@_registered(TO_TORCH, Dropout)
def _dropout_to_torch(layer):
    return [TorchModule("Dropout", {"p": layer.p}, (), layer)]


@_registered(TO_TORCH, Flatten)
def _flatten_to_torch(layer):
    return [TorchModule("Flatten", {}, (), layer)]


# ----------------------------------------------------------- torch -> fastnn layer
#: torch.nn class name -> convert(module, following modules, torch) -> (fastnn layer,
#: how many of the modules it used: 1, or 2 when it fused the next one)
FROM_TORCH = {}

#: torch.nn activation class name -> its activation-table row (the first row of that
#: name: SiLU is "silu", Swish's beta=1 twin being the same module)
_TORCH_ACTIVATIONS = {}
for _row in ACTIVATIONS.values():
    if _row.layer is not None:
        _TORCH_ACTIVATIONS.setdefault(_row.torch, _row)
del _row


def _torch_leaves(torch, module):
    """The modules of a torch Sequential in order, nested Sequentials expanded."""
    if type(module) is not torch.nn.Sequential:
        return [module]
    return [leaf for child in module for leaf in _torch_leaves(torch, child)]


def _from_torch_module(torch, leaves, i, fn):
    module = leaves[i]
    name = type(module).__name__
    convert = FROM_TORCH.get(name)
    if convert is None or type(module) is not getattr(torch.nn, name, None):
        raise ValueError("%s: module %d %s has no fastnn equivalent (convertible: %s)"
                         % (fn, i, short_repr(module), ", ".join(sorted(FROM_TORCH))))
    try:
        return convert(module, leaves[i + 1:], torch)
    except _NoTorch as exc:
        raise ValueError("%s: module %d %s has no fastnn equivalent: %s"
                         % (fn, i, short_repr(module), exc)) from None


def _dtype(torch, tensor):
    """The fastnn dtype of a torch tensor's dtype."""
    dt = {torch.float32: np.float32, torch.float64: np.float64}.get(tensor.dtype)
    if dt is None:
        raise _NoTorch("its dtype %s is not float32 or float64" % tensor.dtype)
    return dt


def _activation_kw(module):
    """(activation name, activation_kw) of a torch activation module."""
    row = _TORCH_ACTIVATIONS[type(module).__name__]
    if row.param is None or row.torch_param is None:
        return row.name, None
    value = getattr(module, row.torch_param)
    return row.name, None if value == row.param.default else {row.param.name: value}


def _fused_activation(following):
    """(activation, activation_kw, modules used) for a module followed by `following`."""
    if following and type(following[0]).__name__ in _TORCH_ACTIVATIONS:
        return _activation_kw(following[0]) + (2,)
    return None, None, 1


@_registered(FROM_TORCH, *_TORCH_ACTIVATIONS)
def _activation_from_torch(module, following, torch):
    name, kw = _activation_kw(module)
    row = ACTIVATIONS[name]
    return getattr(layers, row.layer)(**(kw or {})), 1


@_registered(FROM_TORCH, "Linear")
def _linear_from_torch(module, following, torch):
    activation, kw, used = _fused_activation(following)
    return Dense(module.in_features, module.out_features, bias=module.bias is not None,
                 activation=activation, activation_kw=kw, init="zeros",
                 dtype=_dtype(torch, module.weight)), used


@_registered(FROM_TORCH, "Conv2d")
def _conv2d_from_torch(module, following, torch):
    if isinstance(module.padding, str) or module.padding_mode != "zeros" \
            or module.groups != 1:
        raise _NoTorch("fastnn's Conv2d takes numeric zero padding and groups=1")
    activation, kw, used = _fused_activation(following)
    return Conv2d(module.in_channels, module.out_channels, module.kernel_size,
                  stride=module.stride, padding=module.padding, dilation=module.dilation,
                  bias=module.bias is not None, activation=activation, activation_kw=kw,
                  init="zeros", dtype=_dtype(torch, module.weight)), used


@_registered(FROM_TORCH, "MaxPool2d")
def _maxpool2d_from_torch(module, following, torch):
    if module.dilation not in (1, (1, 1)) or module.ceil_mode or module.return_indices:
        raise _NoTorch("fastnn's MaxPool2d has dilation=1, ceil_mode=False and no "
                       "return_indices")
    return MaxPool2d(module.kernel_size, module.stride, module.padding), 1


@_registered(FROM_TORCH, "AvgPool2d")
def _avgpool2d_from_torch(module, following, torch):
    if module.ceil_mode or not module.count_include_pad or module.divisor_override:
        raise _NoTorch("fastnn's AvgPool2d has ceil_mode=False, count_include_pad=True "
                       "and no divisor_override")
    return AvgPool2d(module.kernel_size, module.stride, module.padding), 1


@_registered(FROM_TORCH, "AdaptiveAvgPool2d")
def _global_avgpool2d_from_torch(module, following, torch):
    if module.output_size not in (1, (1, 1)) or not following \
            or type(following[0]) is not torch.nn.Flatten \
            or (following[0].start_dim, following[0].end_dim) != (1, -1):
        raise _NoTorch("fastnn has AdaptiveAvgPool2d(1) followed by Flatten() "
                       "(GlobalAvgPool2d) only")
    return GlobalAvgPool2d(), 2


@_registered(FROM_TORCH, "PReLU")
def _prelu_from_torch(module, following, torch):
    return PReLU(module.num_parameters, dtype=_dtype(torch, module.weight)), 1


@_registered(FROM_TORCH, "BatchNorm1d", "BatchNorm2d")
def _batchnorm_from_torch(module, following, torch):
    if module.momentum is None or not module.track_running_stats:
        raise _NoTorch("fastnn's BatchNorm keeps running statistics with a momentum "
                       "(momentum=None and track_running_stats=False are not supported)")
    cls = getattr(layers, type(module).__name__)
    return cls(module.num_features, eps=module.eps, momentum=module.momentum,
               affine=module.affine, dtype=_dtype(torch, module.running_mean)), 1


@_registered(FROM_TORCH, "Dropout")
def _dropout_from_torch(module, following, torch):
    return Dropout(module.p), 1


@_registered(FROM_TORCH, "Flatten")
def _flatten_from_torch(module, following, torch):
    if (module.start_dim, module.end_dim) != (1, -1):
        raise _NoTorch("fastnn's Flatten keeps the batch axis and flattens the rest "
                       "(start_dim=1, end_dim=-1)")
    return Flatten(), 1
