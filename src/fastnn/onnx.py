"""ONNX export: `export(model, path)` writes a fastnn model as an ONNX graph.

The graph computes what the model computes in eval mode (BatchNorm's running
statistics, Dropout the identity), in the model's dtype, with a dynamic batch dimension
(and dynamic height and width for image inputs). Each built-in layer type has one export
function here, registered by its class in `EXPORTERS`; an activation (a layer's or one
fused into Dense) is written from its row of the activation table
(`fastnn.kernels.activation_table`), which declares its ONNX operators. Needs the `onnx`
package (extra ``fastnn[onnx]``); `import fastnn` never imports this module.

>>> import numpy as np, fastnn, fastnn.onnx, onnxruntime as ort   # doctest: +SKIP
>>> model = fastnn.Sequential(fastnn.Dense(4, 8, activation="relu", rng=0),
...                           fastnn.Dense(8, 3, rng=1))              # doctest: +SKIP
>>> path = fastnn.onnx.export(model, "model.onnx")                   # doctest: +SKIP
>>> x = np.ones((2, 4), np.float32)                                  # doctest: +SKIP
>>> y, = ort.InferenceSession(path).run(None, {"input": x})         # doctest: +SKIP
>>> np.allclose(y, model.eval()(x), atol=1e-5)                       # doctest: +SKIP
True
"""
import os
from collections import namedtuple

import numpy as np

from .core.archive import atomic_savez
from .core.validation import InstanceOf, Integer, check, short_repr
from .kernels.activation_table import ACTIVATIONS
from . import layers
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense, Dropout, Flatten,
                     GlobalAvgPool2d, MaxPool2d, Maxout, Module, PReLU, Residual,
                     Sequential)

__all__ = ["export", "EXPORTERS", "OLDEST_OPSET"]

#: the oldest opset written (older BatchNormalization and reductions differ)
OLDEST_OPSET = 13
#: ReduceMax takes its axes as an input from this opset on (an attribute before)
_REDUCE_AXES_INPUT = 18

_NAME = InstanceOf(str, "a str")


def export(model, path, opset=17, input_name="input", output_name="output",
           input_shape=None):
    """Write `model` (a fastnn Module of built-in layers) to `path` as an ONNX model;
    returns `path`.

    The graph is the model in eval mode, whatever its current mode (which is left as it
    was), in the model's dtype (float32 or float64; float32 for a model without
    parameters). Its input `input_name` has a dynamic batch dimension; its shape comes
    from the first layer that fixes it (Dense: (batch, in_features); Conv2d: (batch,
    in_channels, height, width) with height and width dynamic), or from `input_shape`
    (the shape without the batch), which is needed only when no layer fixes it (e.g. a
    model starting with Flatten). `opset`: 13 to the newest the installed onnx package
    knows. ValueError naming the layer for a layer that cannot be exported, before
    anything is written; the file is written atomically (a temporary file renamed over
    `path`)."""
    fn = "fastnn.onnx.export"
    onnx = _import_onnx(fn)
    check(fn, "model", model, InstanceOf(Module, "a fastnn Module"))
    path = os.fspath(path)
    newest = onnx.defs.onnx_opset_version()
    opset = check(fn, "opset", opset, Integer(OLDEST_OPSET, newest))
    input_name = check(fn, "input_name", input_name, _NAME)
    output_name = check(fn, "output_name", output_name, _NAME)
    if not input_name or not output_name or input_name == output_name:
        raise ValueError("%s: input_name and output_name must be distinct non-empty "
                         "names, got %r and %r" % (fn, input_name, output_name))
    proto = _build(onnx, model, opset, input_name, output_name,
                   lambda: _input_dims(model, input_shape, fn))
    onnx.checker.check_model(proto, full_check=True)
    atomic_savez(path, proto, _write_proto, fn)
    return path


def _import_onnx(fn):
    try:
        import onnx
    except ImportError:
        raise ImportError("%s needs the onnx package: pip install 'fastnn[onnx]' (or "
                          "pip install onnx)" % fn) from None
    return onnx


def _write_proto(f, proto):
    f.write(proto.SerializeToString())


# ----------------------------------------------------------------- the graph builder
class _Graph:
    """The graph being written: its nodes and initializers, unique value names, the
    opset and the model's dtype."""

    def __init__(self, onnx, opset, dtype, reserved):
        self.onnx, self.opset, self.dtype = onnx, opset, np.dtype(dtype)
        self.nodes, self.initializers = [], []
        self.used = set(reserved)
        self.scalars = {}

    def fresh(self, hint):
        """A value name not used yet, from `hint`."""
        name, k = hint, 1
        while name in self.used:
            k += 1
            name = "%s_%d" % (hint, k)
        self.used.add(name)
        return name

    def node(self, op, inputs, where, **attributes):
        """Add operator `op` on the named `inputs`; returns its output's name."""
        out = self.fresh("%s/%s" % (where, op) if where else op)
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [out], name=out,
                                                     **attributes))
        return out

    def constant(self, array, name):
        """An initializer holding a copy of `array` (of its own dtype); returns its name."""
        name = self.fresh(name)
        self.initializers.append(self.onnx.numpy_helper.from_array(
            np.ascontiguousarray(array), name))
        return name

    def weight(self, array, name):
        """An initializer holding `array` in the model's dtype."""
        return self.constant(np.asarray(array, dtype=self.dtype), name)

    def scalar(self, value):
        """A 0-d constant of the model's dtype (one initializer per value)."""
        key = float(value)
        if key not in self.scalars:
            self.scalars[key] = self.weight(key, "const_%r" % key)
        return self.scalars[key]

    def rename(self, old, new):
        """Rename value `old` to `new` wherever a node uses it."""
        for node in self.nodes:
            for values in (node.input, node.output):
                for i, v in enumerate(values):
                    if v == old:
                        values[i] = new


def _build(onnx, model, opset, input_name, output_name, input_dims):
    """The ModelProto of `model`; `input_dims()` gives the input's dims (asked once
    every layer is known to export)."""
    helper = onnx.helper
    dtype = model.dtype if model.dtype is not None else np.dtype(np.float32)
    graph = _Graph(onnx, opset, dtype, (input_name, output_name))
    y = export_layer(model, graph, input_name, "")
    if y == input_name or y in {i.name for i in graph.initializers}:
        graph.node("Identity", [y], "")
        y = graph.nodes[-1].output[0]
    graph.rename(y, output_name)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    inputs = [helper.make_tensor_value_info(input_name, elem, list(input_dims()))]
    outputs = [helper.make_tensor_value_info(output_name, elem, None)]
    body = helper.make_graph(graph.nodes, "fastnn", inputs, outputs, graph.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(body, opset_imports=opsets, producer_name="fastnn",
                              ir_version=helper.find_min_ir_version_for(opsets))
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    proto.graph.output[0].CopyFrom(inferred.graph.output[0])
    return proto


# ---------------------------------------------------------------- the input's shape
#: what `_fixed_dims` says of a layer that keeps its input's shape and fixes none of it
SAME = "same"


def _input_dims(model, input_shape, fn):
    """The graph input's dims: "batch" then `input_shape`, or those the model fixes."""
    if input_shape is not None:
        if not isinstance(input_shape, (tuple, list)) or not all(
                isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0
                for d in input_shape):
            raise TypeError("%s: input_shape must be a tuple of positive ints (the input's "
                            "shape without the batch), got %r" % (fn, input_shape))
        shape = tuple(int(d) for d in input_shape)
        model.output_shape((1,) + shape)       # ValueError naming the layer if it misfits
        return ("batch",) + shape
    dims = _fixed_dims(model)
    if dims is SAME or dims is None:
        raise ValueError("%s: no layer of the model fixes its input's shape (%s); pass "
                         "input_shape=(...) without the batch dimension"
                         % (fn, "it has no shape-fixing layer" if dims is SAME else
                            "a layer changing the shape comes first"))
    return dims


def _fixed_dims(layer):
    """The input dims `layer` fixes (ints, or names of dynamic dims), `SAME` when it keeps
    its input's shape without fixing any, None when it changes the shape without fixing
    it (then the input's shape cannot be told)."""
    entry = EXPORTERS.get(type(layer))
    return None if entry is None or entry.dims is None else entry.dims(layer)


def _dims_of_sequence(layers):
    """The dims fixed by the first layer of `layers` that fixes (or loses) the shape."""
    for layer in layers:
        dims = _fixed_dims(layer)
        if dims is not SAME:
            return dims
    return SAME


# --------------------------------------------------------------- per layer type
#: how a layer type exports: write(layer, graph, x, where) -> output name, and
#: dims(layer) -> what `_fixed_dims` returns (None: changes the shape, fixes nothing)
Exporter = namedtuple("Exporter", "write dims")

#: layer class -> Exporter
EXPORTERS = {}


def exports(*classes, dims=None):
    """Decorator: register write(layer, graph, x, where) as the export of `classes`."""
    def decorate(write):
        for cls in classes:
            EXPORTERS[cls] = Exporter(write, dims)
        return write
    return decorate


def export_layer(layer, graph, x, where):
    """Add `layer`'s eval-mode computation on value `x` to `graph`; returns its output
    value's name. `where` names the layer's place in the model ("" for the model)."""
    entry = EXPORTERS.get(type(layer))
    if entry is None:
        raise ValueError("fastnn.onnx.export: layer %s%s has no ONNX export (exportable: "
                         "%s)" % ("%s " % where if where else "", short_repr(layer),
                                  ", ".join(sorted(c.__name__ for c in EXPORTERS))))
    return entry.write(layer, graph, x, where)


def _features(attr):
    return lambda layer: ("batch", getattr(layer, attr))


def _same(layer):
    return SAME


def _join(where, name):
    return "%s.%s" % (where, name) if where else name


@exports(Sequential, dims=lambda seq: _dims_of_sequence(seq))
def _sequential(seq, graph, x, where):
    for i, layer in enumerate(seq):
        x = export_layer(layer, graph, x, _join(where, str(i)))
    return x


def _activation(graph, row, value, x, where):
    """Add activation-table row `row` with parameter `value` (None: none) on `x`."""
    graph_def = next(g for g in row.onnx if g.since <= graph.opset
                     and (g.when is None or g.when == value))
    outputs = []
    for op, inputs, attributes in graph_def.nodes:
        names = [_operand(graph, v, value, x, outputs) for v in inputs]
        attrs = {k: value if v == "p" else v for k, v in attributes.items()}
        outputs.append(graph.node(op, names, where, **attrs))
    return outputs[-1]


def _operand(graph, v, value, x, outputs):
    """An `OnnxGraph` node input's value name (see its docstring)."""
    if v == "x":
        return x
    if v == "p":
        return graph.scalar(value)
    if isinstance(v, float):
        return graph.scalar(v)
    return outputs[v]


@exports(*(getattr(layers, row.layer) for row in ACTIVATIONS.values()
           if row.layer is not None), dims=_same)
def _activation_layer(layer, graph, x, where):
    row = layer.row
    value = None if row.param is None else getattr(layer, row.param.name)
    return _activation(graph, row, value, x, where)


def _fused_activation(layer, graph, y, where):
    """A Dense's or Conv2d's fused activation applied to its product y."""
    if layer.activation is None:
        return y
    row = ACTIVATIONS[layer.activation]
    return _activation(graph, row, row.value(layer.activation_kw), y, where)


@exports(Dense, dims=_features("in_features"))
def _dense(layer, graph, x, where):
    return _fused_activation(layer, graph, _gemm(layer, graph, x, where), where)


@exports(Conv2d, dims=lambda layer: ("batch", layer.in_channels, "height", "width"))
def _conv2d(layer, graph, x, where):
    inputs = [x, graph.weight(layer.weight.data, _join(where, "weight"))]
    if layer.bias is not None:
        inputs.append(graph.weight(layer.bias.data, _join(where, "bias")))
    y = graph.node("Conv", inputs, where, kernel_shape=list(layer.kernel_size),
                   strides=list(layer.stride), pads=_pads(layer.padding),
                   dilations=list(layer.dilation))
    return _fused_activation(layer, graph, y, where)


def _pads(padding):
    """ONNX's pads (begin h, begin w, end h, end w) of a symmetric (h, w) padding."""
    return list(padding) * 2


def _images(layer):
    return ("batch", "channels", "height", "width")


@exports(MaxPool2d, dims=_images)
def _maxpool2d(layer, graph, x, where):
    # ONNX pads MaxPool with -inf: padded cells never win, as fastnn's
    return graph.node("MaxPool", [x], where, kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=_pads(layer.padding))


@exports(AvgPool2d, dims=_images)
def _avgpool2d(layer, graph, x, where):
    return graph.node("AveragePool", [x], where, kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=_pads(layer.padding),
                      count_include_pad=1)


@exports(GlobalAvgPool2d, dims=_images)
def _global_avgpool2d(layer, graph, x, where):
    return graph.node("Flatten", [graph.node("GlobalAveragePool", [x], where)], where, axis=1)


@exports(Residual, dims=lambda layer: _fixed_dims(layer.module))
def _residual(layer, graph, x, where):
    return graph.node("Add", [x, export_layer(layer.module, graph, x, _join(where, "module"))],
                      where)


def _gemm(layer, graph, x, where):
    """x @ weight + bias of a Dense or Maxout."""
    inputs = [x, graph.weight(layer.weight.data, _join(where, "weight"))]
    if layer.bias is not None:
        inputs.append(graph.weight(layer.bias.data, _join(where, "bias")))
    return graph.node("Gemm", inputs, where)


@exports(Maxout, dims=_features("in_features"))
def _maxout(layer, graph, x, where):
    # z's column j * pieces + k is piece k of output j: (N, out, pieces), max over pieces
    z = _gemm(layer, graph, x, where)
    shape = graph.constant(np.array([0, layer.out_features, layer.pieces], np.int64),
                           _join(where, "pieces_shape"))
    z3 = graph.node("Reshape", [z, shape], where)
    if graph.opset >= _REDUCE_AXES_INPUT:
        axes = graph.constant(np.array([2], np.int64), _join(where, "pieces_axis"))
        return graph.node("ReduceMax", [z3, axes], where, keepdims=0)
    return graph.node("ReduceMax", [z3], where, axes=[2], keepdims=0)


@exports(PReLU, dims=lambda layer: SAME if layer.num_parameters == 1
         else ("batch", layer.num_parameters))
def _prelu(layer, graph, x, where):
    return graph.node("PRelu", [x, graph.weight(layer.alpha.data, _join(where, "alpha"))],
                      where)


@exports(BatchNorm1d, dims=_features("num_features"))
@exports(BatchNorm2d, dims=lambda layer: ("batch", layer.num_features, "height", "width"))
def _batchnorm(layer, graph, x, where):
    # eval mode: the running statistics; one output (opset 14 added training_mode, 15
    # per-input types: an inference node with only Y reads the same at every opset)
    c = layer.num_features
    gamma = layer.gamma.data if layer.affine else np.ones(c)
    beta = layer.beta.data if layer.affine else np.zeros(c)
    inputs = [x] + [graph.weight(a, _join(where, n)) for a, n in (
        (gamma, "gamma"), (beta, "beta"), (layer.running_mean, "running_mean"),
        (layer.running_var, "running_var"))]
    return graph.node("BatchNormalization", inputs, where, epsilon=layer.eps)


@exports(Dropout, dims=_same)
def _dropout(layer, graph, x, where):
    return x           # the identity in eval mode


@exports(Flatten)
def _flatten(layer, graph, x, where):
    return graph.node("Flatten", [x], where, axis=1)
