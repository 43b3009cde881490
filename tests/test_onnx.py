"""fastnn.onnx.export: onnxruntime computes what the model computes in eval mode, for
every built-in layer, at every supported opset; what cannot be exported is refused
before a file is written."""
import os

import numpy as np
import pytest

import fastnn
from fastnn.kernels.activation_table import ACTIVATIONS
from fastnn.layers.base import REGISTRY

onnx = pytest.importorskip(
    "onnx", reason="the onnx package is not installed: the ONNX export tests need "
                   "pip install 'fastnn[onnx]' onnxruntime")
ort = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed: the ONNX export tests need it "
                          "(pip install onnxruntime)")
import fastnn.onnx as fonnx  # noqa: E402

NEWEST = onnx.defs.onnx_opset_version()
OPSETS = sorted({13, 14, 17, 20, NEWEST})


def run_onnx(path, x, input_name="input"):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y, = session.run(None, {input_name: x})
    return y


def eval_output(model, x):
    """The model's eval-mode output, its mode restored afterwards."""
    modes = [m.training for m in model.modules()]
    y = model.eval()(x)
    for m, mode in zip(model.modules(), modes):
        object.__setattr__(m, "training", mode)
    return y


def trained_batchnorm(layer, features, dtype=np.float32):
    """Give a BatchNorm running statistics that are not its initial ones."""
    rng = np.random.default_rng(5)
    for _ in range(3):
        layer(rng.normal(1.5, 2.0, (16, features)).astype(dtype))
    return layer


def batchnorm(affine=True, dtype=np.float32):
    return trained_batchnorm(fastnn.BatchNorm1d(6, affine=affine, dtype=dtype), 6, dtype)


def with_params(model, seed=7):
    """Non-zero biases, so that a forgotten bias shows."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        if p.name == "bias":
            p.data = rng.normal(0, 0.5, p.shape)
    return model


ACTIVATION_LAYERS = {
    "sigmoid": lambda: fastnn.Sigmoid(), "tanh": lambda: fastnn.Tanh(),
    "relu": lambda: fastnn.ReLU(), "leaky_relu": lambda: fastnn.LeakyReLU(0.2),
    "elu": lambda: fastnn.ELU(0.5), "gelu": lambda: fastnn.GELU(),
    "gelu_tanh": lambda: fastnn.GELU("tanh"), "silu": lambda: fastnn.SiLU(),
    "swish": lambda: fastnn.Swish(0.7), "swish_1": lambda: fastnn.Swish(1.0)}
FUSED = {"relu": None, "tanh": None, "sigmoid": None, "leaky_relu": {"negative_slope": 0.3},
         "elu": {"alpha": 0.7}, "gelu": None, "gelu_tanh": {"approximate": "tanh"},
         "silu": None, "swish": {"beta": 1.5}}


def dense(i, o, seed, dtype=np.float32, **kw):
    return fastnn.Dense(i, o, rng=seed, dtype=dtype, **kw)


def cases(dtype=np.float32):
    """name -> a function building a model (Dense first unless the case is about the
    input's shape) of that dtype."""
    out = {"act_" + k: (lambda f=f: fastnn.Sequential(dense(5, 6, 0, dtype), f()))
           for k, f in ACTIVATION_LAYERS.items()}
    out.update({"dense_" + k: (lambda k=k, kw=kw: fastnn.Sequential(dense(
        5, 6, 0, dtype, activation=k.replace("_tanh", ""), activation_kw=kw)))
        for k, kw in FUSED.items()})
    out.update({
        "dense_nobias": lambda: fastnn.Sequential(dense(5, 6, 0, dtype, bias=False)),
        "prelu_shared": lambda: fastnn.Sequential(dense(5, 6, 0, dtype),
                                                  fastnn.PReLU(init=0.1, dtype=dtype)),
        "prelu_channels": lambda: fastnn.Sequential(
            dense(5, 6, 0, dtype), prelu_channels(dtype)),
        "maxout": lambda: fastnn.Sequential(fastnn.Maxout(5, 4, pieces=3, rng=0,
                                                          dtype=dtype)),
        "batchnorm": lambda: fastnn.Sequential(dense(5, 6, 0, dtype), batchnorm(True, dtype)),
        "batchnorm_first": lambda: fastnn.Sequential(
            trained_batchnorm(fastnn.BatchNorm1d(5, dtype=dtype), 5, dtype), dense(5, 3, 1, dtype)),
        "batchnorm_no_affine": lambda: fastnn.Sequential(dense(5, 6, 0, dtype),
                                                         batchnorm(False, dtype)),
        "dropout": lambda: fastnn.Sequential(dense(5, 6, 0, dtype), fastnn.Dropout(0.5, rng=0)),
        "nested": lambda: fastnn.Sequential(
            fastnn.Sequential(dense(5, 8, 0, dtype, activation="relu"), fastnn.Dropout(0.2)),
            fastnn.Sequential(fastnn.Sequential(dense(8, 3, 1, dtype)))),
    })
    return out


def prelu_channels(dtype):
    layer = fastnn.PReLU(6, dtype=dtype)
    layer.alpha.data = np.linspace(-0.5, 0.5, 6)
    return layer


#: the cases onnxruntime can run in float64 (it has no double Erf, Elu or PRelu kernel)
NO_F64_RUNTIME = ("act_gelu", "dense_gelu", "act_elu", "dense_elu", "prelu_shared",
                  "prelu_channels")
F64_CASES = [k for k in cases() if k not in NO_F64_RUNTIME]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", sorted(cases()))
def test_every_layer_matches_onnxruntime(case, opset, tmp_path, backend):
    model = with_params(cases()[case]())
    model.train()
    path = fonnx.export(model, tmp_path / "m.onnx", opset=opset)
    assert model.training and all(m.training for m in model.modules())   # mode kept
    onnx.checker.check_model(onnx.load(path), full_check=True)
    rng = np.random.default_rng(1)
    for batch in (1, 7):
        x = rng.normal(0, 2, (batch, 5)).astype(np.float32)
        y = run_onnx(path, x)
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, eval_output(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", F64_CASES)
def test_float64_models_export_in_float64(case, tmp_path):
    model = with_params(cases(np.float64)[case]())
    path = fonnx.export(model, tmp_path / "m.onnx")
    x = np.random.default_rng(2).normal(0, 2, (7, 5))
    y = run_onnx(path, x)
    assert y.dtype == np.float64
    # ONNX attributes are float32: LeakyRelu's alpha (0.2, 0.3 here) is rounded to it
    rtol = 1e-7 if "leaky" in case else 1e-10
    np.testing.assert_allclose(y, eval_output(model, x), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("case", NO_F64_RUNTIME)
def test_float64_models_without_runtime_kernels_still_check(case, tmp_path):
    proto = onnx.load(fonnx.export(cases(np.float64)[case](), tmp_path / "m.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE


def architectures():
    f = fastnn
    return {
        "mlp": lambda: f.Sequential(f.Dense(5, 16, activation="relu", rng=0),
                                    f.Dense(16, 16, activation="tanh", rng=1),
                                    f.Dense(16, 3, rng=2)),
        "bn_dropout_mlp": lambda: f.Sequential(
            f.Dense(5, 32, rng=0), trained_batchnorm(f.BatchNorm1d(32), 32), f.ReLU(),
            f.Dropout(0.3, rng=1), f.Dense(32, 16, activation="gelu", rng=2),
            f.BatchNorm1d(16, affine=False), f.Dropout(0.1), f.Dense(16, 4, rng=3)),
        "maxout_prelu": lambda: f.Sequential(
            f.Maxout(5, 12, pieces=2, rng=0), f.PReLU(12), f.Maxout(12, 6, pieces=4, rng=1),
            f.PReLU(), f.Dense(6, 2, activation="sigmoid", rng=2)),
        "activations_chain": lambda: f.Sequential(
            f.Dense(5, 10, rng=0), f.ELU(), f.LeakyReLU(), f.GELU("tanh"), f.Swish(2.0),
            f.SiLU(), f.Tanh(), f.Dense(10, 1, activation="elu", rng=1)),
    }


@pytest.mark.parametrize("opset", [13, 17, NEWEST])
@pytest.mark.parametrize("arch", sorted(architectures()))
def test_architectures_match_onnxruntime(arch, opset, tmp_path):
    model = with_params(architectures()[arch]())
    path = fonnx.export(model, tmp_path / "m.onnx", opset=opset)
    for batch in (1, 7, 64):
        x = np.random.default_rng(batch).normal(0, 1, (batch, 5)).astype(np.float32)
        np.testing.assert_allclose(run_onnx(path, x), eval_output(model, x),
                                   rtol=1e-5, atol=1e-5)


def bn2d(channels):
    layer = fastnn.BatchNorm2d(channels)
    rng = np.random.default_rng(6)
    layer.gamma.data, layer.beta.data = rng.uniform(0.5, 2, channels), rng.normal(0, 1, channels)
    for _ in range(2):
        layer(rng.normal(1.0, 2.0, (4, channels, 5, 5)).astype(np.float32))
    return layer


def image_cases():
    """name -> a function building a model of (N, 3, H, W) images."""
    f = fastnn
    return {
        "conv": lambda: f.Sequential(f.Conv2d(3, 4, 3, rng=0)),
        "conv_padded_strided_dilated": lambda: f.Sequential(f.Conv2d(
            3, 5, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), rng=0)),
        "conv_nobias_fused": lambda: f.Sequential(f.Conv2d(
            3, 4, 3, padding=1, bias=False, activation="leaky_relu",
            activation_kw={"negative_slope": 0.3}, rng=0)),
        "conv_gelu": lambda: f.Sequential(f.Conv2d(3, 4, 1, activation="gelu", rng=0)),
        "maxpool": lambda: f.Sequential(f.MaxPool2d(2), f.Conv2d(3, 2, 1, rng=0)),
        "maxpool_padded": lambda: f.Sequential(f.Conv2d(3, 2, 1, rng=0),
                                               f.MaxPool2d(3, stride=2, padding=1)),
        "avgpool_padded": lambda: f.Sequential(f.Conv2d(3, 2, 1, rng=0),
                                               f.AvgPool2d((3, 2), stride=1, padding=1)),
        "batchnorm2d": lambda: f.Sequential(f.Conv2d(3, 4, 3, rng=0), bn2d(4)),
        "batchnorm2d_first": lambda: f.Sequential(bn2d(3), f.ReLU()),
        "global_avgpool": lambda: f.Sequential(f.Conv2d(3, 6, 3, rng=0), f.GlobalAvgPool2d(),
                                               f.Dense(6, 2, rng=1)),
        "residual": lambda: f.Sequential(f.Conv2d(3, 4, 3, padding=1, rng=0), f.Residual(
            f.Sequential(f.Conv2d(4, 4, 3, padding=1, activation="relu", rng=1), bn2d(4),
                         f.Conv2d(4, 4, 1, rng=2)))),
        "residual_first": lambda: f.Sequential(f.Residual(f.Sequential(
            f.Tanh(), f.Conv2d(3, 3, 3, padding=1, rng=0))), f.Flatten()),
        "lenet": lambda: f.Sequential(
            f.Conv2d(3, 6, 5, padding=2, activation="tanh", rng=0), f.AvgPool2d(2),
            f.Conv2d(6, 16, 5, activation="tanh", rng=1), f.AvgPool2d(2), f.Flatten(),
            f.Dense(16, 12, activation="tanh", rng=2), f.Dropout(0.2), f.Dense(12, 3, rng=3)),
    }


@pytest.mark.parametrize("opset", [13, 14, 17, NEWEST])
@pytest.mark.parametrize("case", sorted(image_cases()))
def test_image_layers_match_onnxruntime(case, opset, tmp_path):
    model = with_params(image_cases()[case]())
    path = fonnx.export(model, tmp_path / "m.onnx", opset=opset)
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    # a pooling layer first fixes the rank, not the channels
    assert dims[1].dim_value == (0 if case == "maxpool" else 3)
    assert all(not d.dim_value for d in (dims[0], dims[2], dims[3]))
    sizes = [(1, 12, 12), (7, 12, 12)] if case == "lenet" else [(1, 8, 8), (7, 9, 11)]
    for batch, h, w in sizes:               # the height and width are dynamic too
        x = np.random.default_rng(batch).normal(0, 1, (batch, 3, h, w)).astype(np.float32)
        np.testing.assert_allclose(run_onnx(path, x), eval_output(model, x),
                                   rtol=1e-5, atol=1e-5)


def test_residual_around_a_shape_fixing_module_fixes_the_input(tmp_path):
    block = fastnn.Residual(fastnn.Sequential(fastnn.Dense(5, 5, rng=0), fastnn.ReLU()))
    model = fastnn.Sequential(fastnn.ReLU(), block)
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    path = fonnx.export(model, tmp_path / "m.onnx")
    np.testing.assert_allclose(run_onnx(path, x), model(x), atol=1e-5)


@pytest.mark.parametrize("opset", range(fonnx.OLDEST_OPSET, NEWEST + 1))
def test_every_opset_from_the_oldest_to_the_newest(opset, tmp_path):
    f = fastnn
    model = with_params(f.Sequential(
        f.Dense(5, 8, activation="gelu", rng=0), batchnorm_of(8), f.PReLU(8),
        f.Maxout(8, 6, pieces=2, rng=1), f.GELU("tanh"), f.Swish(0.5), f.Dropout(0.5),
        f.Dense(6, 3, activation="leaky_relu", rng=2)))
    path = fonnx.export(model, tmp_path / "m.onnx", opset=opset)
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, x), eval_output(model, x), rtol=1e-5, atol=1e-5)


def batchnorm_of(features):
    return trained_batchnorm(fastnn.BatchNorm1d(features), features)


def test_graph_has_a_dynamic_batch_and_the_given_names(tmp_path):
    model = fastnn.Sequential(fastnn.Dense(5, 3, rng=0))
    path = fonnx.export(model, str(tmp_path / "m.onnx"), input_name="features",
                        output_name="logits")
    assert path == str(tmp_path / "m.onnx")
    graph = onnx.load(path).graph
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == "features" and out.name == "logits"
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[0].dim_param and not in_dims[0].dim_value and in_dims[1].dim_value == 5
    out_dims = out.type.tensor_type.shape.dim
    assert out_dims[0].dim_param == in_dims[0].dim_param and out_dims[1].dim_value == 3
    x = np.ones((3, 5), np.float32)
    np.testing.assert_allclose(run_onnx(path, x, "features"), model(x), atol=1e-6)


def test_gelu_is_the_gelu_operator_from_opset_20(tmp_path):
    for approximate in ("none", "tanh"):
        model = fastnn.Sequential(fastnn.Dense(5, 4, rng=0), fastnn.GELU(approximate))
        ops19 = {n.op_type for n in onnx.load(fonnx.export(
            model, tmp_path / "a.onnx", opset=19)).graph.node}
        ops20 = [n for n in onnx.load(fonnx.export(
            model, tmp_path / "b.onnx", opset=20)).graph.node if n.op_type == "Gelu"]
        assert "Gelu" not in ops19 and ("Erf" in ops19) == (approximate == "none")
        assert [a.s.decode() for a in ops20[0].attribute] == [approximate]


def test_maxout_reduces_by_attribute_before_opset_18_and_by_input_from_it(tmp_path):
    model = fastnn.Sequential(fastnn.Maxout(5, 3, rng=0))
    for opset, n_inputs in ((17, 1), (18, 2)):
        node, = [n for n in onnx.load(fonnx.export(
            model, tmp_path / "m.onnx", opset=opset)).graph.node if n.op_type == "ReduceMax"]
        assert len(node.input) == n_inputs


def test_every_builtin_layer_has_an_export():
    missing = sorted(name for name, cls in REGISTRY.items() if cls not in fonnx.EXPORTERS)
    assert missing == []


def test_eval_mode_is_exported_and_modes_are_left_alone(tmp_path):
    model = fastnn.Sequential(fastnn.Dense(5, 6, rng=0), batchnorm(), fastnn.Dropout(0.9))
    model[2].eval()                    # a mixed-mode model stays mixed
    modes = [m.training for m in model.modules()]
    path = fonnx.export(model, tmp_path / "m.onnx")
    assert [m.training for m in model.modules()] == modes
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, x), eval_output(model, x), atol=1e-5)


def test_input_shape_when_no_layer_fixes_it(tmp_path):
    model = fastnn.Sequential(fastnn.Flatten(), fastnn.Dense(12, 3, rng=0))
    with pytest.raises(ValueError, match="input_shape"):
        fonnx.export(model, tmp_path / "m.onnx")
    path = fonnx.export(model, tmp_path / "m.onnx", input_shape=(3, 4))
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(path, x), model(x), atol=1e-5)
    relu = fastnn.Sequential(fastnn.ReLU())
    with pytest.raises(ValueError, match="input_shape"):
        fonnx.export(relu, tmp_path / "r.onnx")
    x = np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5)
    path = fonnx.export(relu, tmp_path / "r.onnx", input_shape=[5])
    np.testing.assert_array_equal(run_onnx(path, x), relu(x))


def test_an_input_shape_that_does_not_fit_names_the_layer(tmp_path):
    model = fastnn.Sequential(fastnn.ReLU(), fastnn.Dense(5, 3, rng=0))
    with pytest.raises(ValueError, match=r"Sequential\[1\] Dense"):
        fonnx.export(model, tmp_path / "m.onnx", input_shape=(4,))
    for bad in ((0,), (2.0,), 5, (True,)):
        with pytest.raises(TypeError, match="input_shape"):
            fonnx.export(model, tmp_path / "m.onnx", input_shape=bad)
    assert not os.path.exists(tmp_path / "m.onnx")


def test_a_model_with_only_an_identity_still_has_a_node(tmp_path):
    model = fastnn.Sequential(fastnn.Dropout(0.5))
    path = fonnx.export(model, tmp_path / "m.onnx", input_shape=(3,))
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(run_onnx(path, x), x)


class Doubler(fastnn.Module):
    def forward(self, x):
        return 2 * np.asarray(x)


class MyDense(fastnn.Dense):
    pass


@pytest.mark.parametrize("make,named", [
    (lambda: fastnn.Sequential(fastnn.Dense(5, 3, rng=0), Doubler()), r"layer 1 Doubler"),
    (lambda: fastnn.Sequential(fastnn.Dense(5, 3, rng=0),
                               fastnn.Sequential(fastnn.ReLU(), MyDense(3, 2, rng=0))),
     r"layer 1\.1 MyDense"),
    (lambda: Doubler(), r"Doubler"),
])
def test_what_cannot_be_exported_is_refused_before_writing(make, named, tmp_path):
    target = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match=named):
        fonnx.export(make(), target)
    assert os.listdir(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match=named):
        fonnx.export(make(), target)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["m.onnx"]


def test_arguments_are_checked(tmp_path):
    model = fastnn.Sequential(fastnn.Dense(5, 3, rng=0))
    path = tmp_path / "m.onnx"
    for opset in (12, NEWEST + 1):
        with pytest.raises(ValueError, match="opset"):
            fonnx.export(model, path, opset=opset)
    with pytest.raises(TypeError, match="opset"):
        fonnx.export(model, path, opset=17.0)
    with pytest.raises(TypeError, match="model"):
        fonnx.export(np.ones(3), path)
    with pytest.raises(TypeError, match="input_name"):
        fonnx.export(model, path, input_name=None)
    with pytest.raises(ValueError, match="distinct"):
        fonnx.export(model, path, input_name="x", output_name="x")
    with pytest.raises(ValueError, match="directory"):
        fonnx.export(model, tmp_path)
    assert os.listdir(tmp_path) == []


def test_the_activation_table_onnx_graphs_cover_every_parameter_value():
    """An exporter takes the first graph of a row valid at the opset and parameter: each
    row must have one at the oldest opset for every value of its parameter."""
    for row in ACTIVATIONS.values():
        values = [None] if row.param is None else (
            list(row.param.constraint.values) if hasattr(row.param.constraint, "values")
            else [row.param.default])
        for value in values:
            assert any(g.since <= fonnx.OLDEST_OPSET and g.when in (None, value)
                       for g in row.onnx), (row.name, value)


def test_import_fastnn_imports_no_integration():
    import subprocess
    import sys
    from conftest import FASTNN_PATH
    code = ("import sys, fastnn; fastnn.Sequential(fastnn.Dense(2, 2)); "
            "sys.exit(int(any(m in sys.modules for m in ('onnx', 'fastnn.onnx', 'torch', "
            "'safetensors', 'fastnn.interop'))))")
    env = dict(os.environ, PYTHONPATH=FASTNN_PATH)
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
