"""The convolutional layers (Conv2d, MaxPool2d, AvgPool2d, GlobalAvgPool2d, BatchNorm2d,
Flatten on images, Residual) against PyTorch on both backends (float64 to 1e-10, float32
to 1e-4), a residual CNN trained step for step with torch's Adam, their layer facts,
recorded programs and persistence."""
import os

import numpy as np
import pytest

import fastnn
from fastnn import optim
from fastnn.layers import (AvgPool2d, BatchNorm2d, Conv2d, Dense, Flatten,
                           GlobalAvgPool2d, MaxPool2d, ReLU, Residual, Sequential)
from fastnn.losses import SoftmaxCrossEntropy
from conftest import adam_steps_like_torch  # noqa: E402

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
F = torch.nn.functional


def assert_close(actual, expected, dtype, what=""):
    """Relative agreement, with an absolute floor scaled to the reference's magnitude."""
    expected = expected.detach().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    rtol = 1e-10 if np.dtype(dtype) == np.float64 else 1e-4
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-30)
    assert np.asarray(actual).shape == expected.shape, what
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def _check_layer(layer, ref_fn, x, dtype, params=()):
    """forward, dx and each (fastnn Parameter, torch tensor) gradient against torch."""
    tx = torch.tensor(x, requires_grad=True)
    y = layer(x)
    ty = ref_fn(tx)
    assert y.dtype == dtype
    assert_close(y, ty, dtype, "forward")
    dy = np.random.default_rng(7).standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    ty.backward(torch.tensor(dy))
    assert_close(dx, tx.grad, dtype, "dx")
    for p, tp in params:
        assert_close(p.grad, tp.grad, dtype, p.name)


CONV_CASES = [  # (C, F, kernel, stride, padding, dilation, bias, activation, x spatial, N)
    (3, 4, 1, 1, 0, 1, True, None, (5, 6), 2),
    (3, 5, 3, 1, 1, 1, True, "relu", (7, 7), 3),
    (2, 3, 5, 2, 2, 1, False, None, (9, 8), 1),
    (2, 4, (3, 2), (2, 1), (1, 0), (2, 1), True, "tanh", (9, 7), 2),
    (1, 2, 3, 2, (0, 1), 2, True, "sigmoid", (11, 10), 2),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
def test_conv2d_matches_torch(case, backend, dtype):
    c, f, k, s, p, d, bias, act, hw, n = case
    layer = Conv2d(c, f, k, stride=s, padding=p, dilation=d, bias=bias, activation=act,
                   dtype=dtype, rng=1)
    if bias:
        layer.bias.data = np.random.default_rng(2).standard_normal(f)
    tw = torch.tensor(layer.weight.data.copy(), requires_grad=True)
    tb = torch.tensor(layer.bias.data.copy(), requires_grad=True) if bias else None
    tact = {None: lambda z: z, "relu": torch.relu, "tanh": torch.tanh,
            "sigmoid": torch.sigmoid}[act]

    def ref(tx):
        return tact(F.conv2d(tx, tw, tb, stride=s, padding=p, dilation=d))

    x = np.random.default_rng(3).standard_normal((n, c) + hw).astype(dtype)
    params = [(layer.weight, tw)] + ([(layer.bias, tb)] if bias else [])
    _check_layer(layer, ref, x, dtype, params)
    assert layer.output_shape(x.shape) == layer(x).shape


@pytest.mark.parametrize("kind,args", [
    ("max", (2,)), ("max", (3, 2, 1)), ("max", ((3, 2), (1, 2), (1, 0))),
    ("avg", (2,)), ("avg", (3, 1, 1)), ("avg", ((2, 3), 2, (1, 1)))])
def test_pooling_matches_torch(kind, args, backend, dtype):
    layer = (MaxPool2d if kind == "max" else AvgPool2d)(*args)
    tfn = F.max_pool2d if kind == "max" else F.avg_pool2d
    x = np.random.default_rng(4).standard_normal((2, 3, 9, 8)).astype(dtype)
    _check_layer(layer, lambda tx: tfn(tx, *args), x, dtype)
    assert layer.output_shape(x.shape) == layer(x).shape


def test_global_avg_pool_matches_torch(backend, dtype):
    x = np.random.default_rng(5).standard_normal((3, 4, 7, 5)).astype(dtype)
    layer = GlobalAvgPool2d()
    _check_layer(layer, lambda tx: tx.mean(dim=(2, 3)), x, dtype)
    assert layer.output_shape((3, 4, 7, 5)) == (3, 4)


@pytest.mark.parametrize("affine,training", [(True, True), (False, True), (True, False)])
def test_batchnorm2d_matches_torch(affine, training, backend, dtype):
    rng = np.random.default_rng(6)
    layer = BatchNorm2d(3, momentum=0.2, affine=affine, dtype=dtype).train(training)
    ref = torch.nn.BatchNorm2d(3, momentum=0.2, affine=affine).to(
        torch.float64 if dtype == np.float64 else torch.float32).train(training)
    stats = rng.random(3) + 0.5
    layer.running_mean = stats - 1
    layer.running_var = stats
    with torch.no_grad():
        ref.running_mean.copy_(torch.tensor(stats - 1))
        ref.running_var.copy_(torch.tensor(stats))
    params = []
    if affine:
        layer.gamma.data = rng.standard_normal(3)
        layer.beta.data = rng.standard_normal(3)
        with torch.no_grad():
            ref.weight.copy_(torch.tensor(layer.gamma.data))
            ref.bias.copy_(torch.tensor(layer.beta.data))
        params = [(layer.gamma, ref.weight), (layer.beta, ref.bias)]
    x = (rng.standard_normal((4, 3, 5, 6)) * 3 + 1).astype(dtype)
    _check_layer(layer, ref, x, dtype, params)
    assert_close(layer.running_mean, ref.running_mean, dtype, "running_mean")
    assert_close(layer.running_var, ref.running_var, dtype, "running_var")


def test_flatten_and_residual_match_torch(backend, dtype):
    conv = Conv2d(3, 3, 3, padding=1, activation="tanh", dtype=dtype, rng=8)
    tw = torch.tensor(conv.weight.data.copy(), requires_grad=True)
    tb = torch.tensor(conv.bias.data.copy(), requires_grad=True)
    model = Sequential(Residual(conv), Flatten())
    x = np.random.default_rng(9).standard_normal((2, 3, 4, 5)).astype(dtype)
    _check_layer(model, lambda tx: (tx + torch.tanh(F.conv2d(tx, tw, tb, padding=1))
                                    ).flatten(1), x, dtype,
                 [(conv.weight, tw), (conv.bias, tb)])
    assert model.output_shape(x.shape) == (2, 60)
    assert sorted(model.state_dict()) == ["0.module.bias", "0.module.weight"]


# --------------------------------------------------------------- networks vs torch
def _residual_cnn(dtype):
    block = Sequential(Conv2d(4, 4, 3, padding=1, bias=False, dtype=dtype, rng=3),
                       BatchNorm2d(4, dtype=dtype), ReLU(),
                       Conv2d(4, 4, 3, padding=1, bias=False, dtype=dtype, rng=4),
                       BatchNorm2d(4, dtype=dtype))
    return Sequential(Conv2d(1, 4, 3, padding=1, activation="relu", dtype=dtype, rng=2),
                      MaxPool2d(2), Residual(block), ReLU(), AvgPool2d(2),
                      Conv2d(4, 6, 1, dtype=dtype, rng=5), GlobalAvgPool2d(),
                      Dense(6, 3, dtype=dtype, rng=6))


def _torch_copy(model):
    """The same network in torch, sharing the initial values."""
    def conv(layer):
        c = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                            padding=layer.padding, bias=layer.bias is not None).double()
        with torch.no_grad():
            c.weight.copy_(torch.tensor(layer.weight.data))
            if layer.bias is not None:
                c.bias.copy_(torch.tensor(layer.bias.data))
        return c

    class Block(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return x + self.inner(x)

    block = model[2].module
    lin = torch.nn.Linear(6, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(model[7].weight.data.T))
        lin.bias.copy_(torch.tensor(model[7].bias.data))
    inner = torch.nn.Sequential(conv(block[0]), torch.nn.BatchNorm2d(4).double(),
                                torch.nn.ReLU(), conv(block[3]),
                                torch.nn.BatchNorm2d(4).double())
    return torch.nn.Sequential(conv(model[0]), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               Block(inner), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                               conv(model[5]), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), lin), inner


def test_residual_cnn_trains_like_torch(backend):
    """Six Adam steps of a small residual CNN agree with torch step by step (float64)."""
    model = _residual_cnn(np.float64)
    ref, inner = _torch_copy(model)
    opt = optim.Adam(model.parameters(), lr=0.01)
    topt = torch.optim.Adam(ref.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    adam_steps_like_torch(model, opt, ref, topt, ((rng.standard_normal((5, 1, 8, 8)),
                                                   rng.integers(0, 3, 5)) for _ in range(6)))
    np.testing.assert_allclose(model[0].weight.data, ref[0].weight.detach().numpy(),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model[2].module[3].weight.data,
                               inner[3].weight.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model[2].module[1].running_var, inner[1].running_var.numpy(),
                               rtol=1e-10)


def _lenet_small():
    return Sequential(Conv2d(1, 3, 3, activation="relu", rng=0), MaxPool2d(2),
                      BatchNorm2d(3), Conv2d(3, 4, 3, padding=1, rng=1), ReLU(),
                      AvgPool2d(2), Flatten(), Dense(16, 5, rng=2))


def _gap_net():
    return Sequential(Conv2d(1, 4, 3, padding=1, rng=0), BatchNorm2d(4), ReLU(),
                      GlobalAvgPool2d(), Dense(4, 5, rng=1))


@pytest.mark.parametrize("make", [_lenet_small, _gap_net], ids=["lenet", "gap"])
def test_training_step_is_the_same_recorded_or_not(make):
    """A CNN made only of recordable layers replays its recorded program: the same bits
    as running the layers one by one (the NumPy backend never records)."""
    if not fastnn.show_config(print_=False)["cython"]:
        pytest.skip("recorded programs need the compiled backend")
    a, b = make(), make()
    x = np.random.default_rng(1).standard_normal((6, 1, 10, 10)).astype(np.float32)
    dy = np.random.default_rng(2).standard_normal((6, 5)).astype(np.float32)
    with fastnn.use_backend("cython"):
        for step in range(3):
            ya = a._forward(x.copy())
            dxa = a._backward(dy, need_dx=True)
            yb = x.copy()
            for layer in b.layers:
                yb = layer._forward(yb)
            dyb = dy
            for layer in reversed(b.layers):
                dyb = layer._backward(dyb, need_dx=True)
            np.testing.assert_array_equal(ya, yb)
            np.testing.assert_array_equal(dxa, dyb)
            for pa, pb in zip(a.parameters(), b.parameters()):
                np.testing.assert_array_equal(pa.grad, pb.grad)
    assert a.__dict__["_replays"].recordings, "the CNN was not recorded"


# ------------------------------------------------------------------- facts, state
def test_layer_facts():
    assert all(c.recordable for c in (Conv2d, MaxPool2d, AvgPool2d, GlobalAvgPool2d,
                                      BatchNorm2d, Flatten))
    assert not Residual.recordable
    assert Conv2d(1, 2, 3, activation="relu").watch_kind() == "relu"
    assert Conv2d(1, 2, 3).watch_kind() is None
    model = _residual_cnn(np.float32)
    assert model.output_shape((5, 1, 8, 8)) == (5, 3)
    assert model.flat_layers()[2] is model[2]           # a Residual is one leaf
    f32 = 4
    conv = Conv2d(2, 3, 3, activation="relu")
    scratch = fastnn.core.backend.backend().conv2d_scratch_size(
        (4, 2, 6, 6), conv.weight.shape, (1, 1, 0, 0, 1, 1)) * f32
    assert conv.train_memory((4, 2, 6, 6), f32, True) == (2 * 4 * 3 * 16 * f32, scratch)
    assert MaxPool2d(2).train_memory((1, 1, 4, 4), f32, False) == (4 * (f32 + 8), 16 * f32)
    block = Residual(Conv2d(2, 2, 3, padding=1))
    kept, grads = block.train_memory((1, 2, 3, 3), f32, False)
    assert kept == 2 * 18 * f32 and grads >= 2 * 18 * f32
    with pytest.raises(ValueError, match="Residual.*keep"):
        Residual(Conv2d(2, 2, 3)).output_shape((1, 2, 5, 5))
    with pytest.raises(ValueError, match="Conv2d.*larger than the padded input"):
        conv.output_shape((1, 2, 2, 2))
    with pytest.raises(ValueError, match="MaxPool2d.*expected input of shape"):
        MaxPool2d(2).output_shape((1, 2))


def test_conv_weight_fans_follow_torch():
    w = Conv2d(16, 32, 5, rng=0, dtype=np.float64).weight.data
    assert w.shape == (32, 16, 5, 5)
    assert abs(w.std() / np.sqrt(2 / (16 * 25)) - 1) < 0.05      # fan_in = C KH KW


def test_save_load_and_checkpoint_round_trip(tmp_path):
    model = _residual_cnn(np.float32)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    model(x)                                    # running statistics move
    model.eval()
    path = os.path.join(tmp_path, "cnn.npz")
    fastnn.save(model, path)
    loaded = fastnn.load(path)
    assert repr(loaded) == repr(model) and not loaded.training
    np.testing.assert_array_equal(loaded(x), model(x))
    assert sorted(loaded.state_dict()) == sorted(model.state_dict())
    assert "2.module.1.running_var" in model.state_dict()
    from fastnn.train.checkpoint import load_checkpoint, save_checkpoint
    model.train()
    trainer = fastnn.Trainer(model, SoftmaxCrossEntropy(), optim.Adam(model.parameters()), verbose=0)
    labels = np.arange(4) % 3
    trainer.fit(x, labels, epochs=1, batch_size=2)
    assert set(trainer.evaluate(x, labels)) == {"loss", "accuracy"}
    assert trainer.predict(x).shape == (4,) and trainer.predict_proba(x).shape == (4, 3)
    save_checkpoint(path, trainer)
    again = _residual_cnn(np.float32)
    t2 = fastnn.Trainer(again, SoftmaxCrossEntropy(), optim.Adam(again.parameters()), verbose=0)
    load_checkpoint(path, t2)
    for (ka, a), (kb, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert ka == kb
        np.testing.assert_array_equal(a, b)


def test_diagnostics_count_dead_channels_and_saturation_of_images():
    """A conv ReLU channel with a large negative bias never fires: one of four channels
    is dead, although the live channels fire only in one corner (most positions are
    never positive); a tanh conv output is saturated per value."""
    from fastnn import diagnostics
    conv = Conv2d(1, 4, 3, activation="relu", rng=0)
    conv.weight.data = np.abs(conv.weight.data) + 0.1
    conv.bias.data = np.array([0.0, -1e3, 0.0, 0.0])
    squash = Conv2d(4, 2, 1, activation="tanh", rng=1)
    squash.bias.data = np.array([5.0, -5.0])
    model = Sequential(conv, squash, GlobalAvgPool2d(), Dense(2, 3, rng=2))
    x = np.zeros((16, 1, 8, 8), np.float32)
    x[:, :, :3, :3] = 1.0
    rows = diagnostics.inspect(model, x, np.arange(16) % 3).rows
    assert rows[0]["dead"] == pytest.approx(0.25)
    assert rows[1]["saturated"] > 0.9
    assert rows[2]["dead"] is None and rows[2]["saturated"] is None


@pytest.mark.parametrize("make", [
    lambda: Conv2d(2, 3, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                   activation="tanh", rng=0),
    lambda: Conv2d(2, 3, 1, bias=False, activation="gelu", rng=0),
    lambda: MaxPool2d(2, padding=1), lambda: AvgPool2d(3, 2, 1), lambda: GlobalAvgPool2d(),
    lambda: BatchNorm2d(2), lambda: Residual(Conv2d(2, 2, 3, padding=1, rng=0)),
    lambda: Sequential(Conv2d(2, 3, 3, rng=0), Flatten(), Dense(3 * 5 * 4, 2, rng=1)),
], ids=["conv", "conv1x1", "maxpool", "avgpool", "gap", "bn2d", "residual", "flatten"])
def test_gradcheck_float64(make, backend):
    x = np.random.default_rng(3).standard_normal((3, 2, 7, 6))
    result = fastnn.gradcheck(make(), x)
    assert result.passed, result
    assert "x" in result.errors


def test_gradcheck_residual_cnn_with_loss(backend):
    model = _residual_cnn(np.float32)
    x = np.random.default_rng(4).standard_normal((4, 1, 8, 8))
    result = fastnn.gradcheck(model, x, np.arange(4) % 3)
    assert result.passed, result
    assert len(result.errors) == len(model.parameters()) + 1
