"""fastnn.interop: models to and from torch.nn.Sequential compute the same outputs in
both modes, state dicts in torch's layout load with strict=True on both sides,
safetensors files move between the two, and torch tensors are model inputs."""
import os

import numpy as np
import pytest

import fastnn
import fastnn.interop as interop
from fastnn.core.validation import as_user_float
from fastnn.layers.base import REGISTRY

torch = pytest.importorskip(
    "torch", reason="torch is not installed: the PyTorch interop tests need "
                    "pip install 'fastnn[torch]'")
nn = torch.nn
torch.set_num_threads(1)

F = fastnn


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def torch_out(module, x):
    with torch.no_grad():
        return module(t(x)).numpy()


def bn(features, dtype=np.float32):
    """A BatchNorm1d with trained running statistics and a non-trivial affine map."""
    layer = F.BatchNorm1d(features, dtype=dtype)
    rng = np.random.default_rng(3)
    layer.gamma.data = rng.uniform(0.5, 1.5, features)
    layer.beta.data = rng.normal(0, 0.3, features)
    for _ in range(2):
        layer(rng.normal(1.0, 2.0, (16, features)).astype(dtype))
    return layer


def models(dtype=np.float32):
    """name -> function building a fastnn model torch has modules for."""
    d = dict(dtype=dtype)
    return {
        "mlp": lambda: F.Sequential(F.Dense(5, 16, activation="relu", rng=0, **d),
                                    F.Dense(16, 3, rng=1, **d)),
        "bn_mlp": lambda: F.Sequential(F.Dense(5, 12, rng=0, **d), bn(12, dtype), F.ReLU(),
                                       F.Dense(12, 4, activation="tanh", rng=1, **d),
                                       F.BatchNorm1d(4, affine=False, **d)),
        "activations": lambda: F.Sequential(
            F.Dense(5, 8, activation="leaky_relu", activation_kw={"negative_slope": 0.2},
                    rng=0, **d),
            F.ELU(0.7), F.GELU("tanh"), F.SiLU(), F.Swish(1.0), F.Sigmoid(),
            F.Dense(8, 8, activation="gelu", rng=1, **d), F.Tanh(), F.LeakyReLU(0.05),
            F.Dense(8, 6, activation="elu", activation_kw={"alpha": 0.4}, rng=2, **d),
            F.GELU(), F.Dense(6, 2, activation="silu", rng=3, **d)),
        "prelu": lambda: F.Sequential(F.Dense(5, 6, rng=0, **d), F.PReLU(6, init=0.1, **d),
                                      F.Dense(6, 3, bias=False, rng=1, **d),
                                      F.PReLU(**d)),
        "nested_dropout": lambda: F.Sequential(
            F.Sequential(F.Dense(5, 8, activation="relu", rng=0, **d), F.Dropout(0.3)),
            F.Sequential(F.Sequential(F.Dense(8, 3, rng=1, **d)))),
        "flatten_first": lambda: F.Sequential(F.Flatten(), F.Dense(5, 3, rng=0, **d)),
    }


def sample(batch=7, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).normal(0, 1.5, (batch, 5)).astype(dtype)


# ------------------------------------------------------------------ to_torch
@pytest.mark.parametrize("name", sorted(models()))
def test_to_torch_computes_the_same_in_eval_mode(name, backend):
    model = models()[name]().eval()
    module = interop.to_torch(model)
    assert isinstance(module, nn.Sequential) and not module.training
    for batch in (1, 7):
        x = sample(batch)
        np.testing.assert_allclose(torch_out(module, x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["bn_mlp", "mlp", "activations"])
def test_to_torch_computes_the_same_in_training_mode(name, backend):
    """Batch statistics, running-statistic updates and the forward count agree."""
    model = models()[name]().train()
    module = interop.to_torch(model)
    assert module.training
    for seed in range(3):
        x = sample(16, seed=seed)
        np.testing.assert_allclose(torch_out(module, x), model(x), rtol=1e-5, atol=1e-5)
    ours = interop.torch_state_dict(model)
    for key, value in module.state_dict().items():
        np.testing.assert_allclose(value.numpy(), ours[key], rtol=1e-5, atol=1e-6,
                                   err_msg=key)


def test_to_torch_float64_and_modes_per_layer():
    model = models(np.float64)["bn_mlp"]()
    model[1].eval()
    module = interop.to_torch(model)
    assert module[0].weight.dtype == torch.float64
    assert [m.training for m in module] == [True, False, True, True, True, True]
    x = sample(9, np.float64)
    np.testing.assert_allclose(torch_out(module, x), model(x), rtol=1e-10, atol=1e-12)
    assert model.training and not model[1].training          # left as it was


@pytest.mark.parametrize("layer,named", [
    (lambda: F.Maxout(5, 3, rng=0), "Maxout"),
    (lambda: F.Swish(0.5), r"Swish.*beta"),
    (lambda: F.Dense(5, 3, activation="swish", activation_kw={"beta": 2.0}, rng=0), "beta"),
])
def test_layers_torch_lacks_are_refused_by_name(layer, named):
    model = F.Sequential(F.Dense(5, 5, rng=1), layer())
    for f in (interop.to_torch, interop.torch_state_dict):
        with pytest.raises(ValueError, match="layer 1 .*%s" % named):
            f(model)


def test_a_users_layer_is_refused_by_name():
    class Mine(F.Dense):
        pass
    with pytest.raises(ValueError, match="layer 1 Mine"):
        interop.to_torch(F.Sequential(F.ReLU(), Mine(3, 2, rng=0)))
    with pytest.raises(TypeError, match="model"):
        interop.torch_state_dict(nn.Linear(2, 2))


def test_every_builtin_layer_converts_or_is_a_documented_exception():
    """(Sequentials are flattened: their layers convert.)"""
    missing = sorted(name for name, cls in REGISTRY.items()
                     if cls not in interop.TO_TORCH and cls is not F.Sequential)
    assert missing == ["Maxout", "Residual"]


# ------------------------------------------------------------ torch_state_dict
@pytest.mark.parametrize("name", sorted(models()))
def test_torch_state_dict_is_to_torch_state_dict(name):
    model = models()[name]()
    ours = interop.torch_state_dict(model)
    theirs = interop.to_torch(model).state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert ours[key].shape == tuple(value.shape), key
        assert ours[key].dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=key)
        assert ours[key].flags.c_contiguous
    fresh = interop.to_torch(models()[name]())
    fresh.load_state_dict({k: t(v) for k, v in ours.items()}, strict=True)


def test_torch_state_dict_layout():
    model = F.Sequential(F.Dense(4, 3, activation="relu", rng=0), bn(3), F.Dense(3, 2, rng=1))
    sd = interop.torch_state_dict(model)
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias", "2.running_mean",
                        "2.running_var", "2.num_batches_tracked", "3.weight", "3.bias"]
    np.testing.assert_array_equal(sd["0.weight"], model[0].weight.data.T)   # (out, in)
    assert sd["2.num_batches_tracked"].dtype == np.int64
    assert sd["2.num_batches_tracked"].shape == () and sd["2.num_batches_tracked"] == 2
    sd["0.weight"][...] = 0                       # a copy
    assert model[0].weight.data.any()


# ------------------------------------------------------- load_torch_state_dict
@pytest.mark.parametrize("as_tensors", [True, False], ids=["tensors", "arrays"])
def test_weights_trained_in_torch_load_into_fastnn(as_tensors, backend):
    model = models()["bn_mlp"]()
    module = interop.to_torch(model)
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    for seed in range(4):                          # train in torch
        opt.zero_grad()
        module(t(sample(16, seed=seed))).square().mean().backward()
        opt.step()
    sd = module.state_dict()
    interop.load_torch_state_dict(model, sd if as_tensors else
                                  {k: v.numpy() for k, v in sd.items()})
    assert int(model[1].num_batches_tracked) == 2 + 4
    model.eval(), module.eval()
    x = sample(7)
    np.testing.assert_allclose(model(x), torch_out(module, x), rtol=1e-5, atol=1e-5)


def snapshot(model):
    return {k: v.copy() for k, v in interop.torch_state_dict(model).items()}


def assert_unchanged(model, before):
    after = interop.torch_state_dict(model)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


@pytest.mark.parametrize("edit,exc,named", [
    (lambda sd: sd.pop("1.running_var"), ValueError, r"missing \['1.running_var'\]"),
    (lambda sd: sd.update({"9.weight": np.ones(3)}), ValueError, r"unexpected \['9.weight'\]"),
    (lambda sd: sd.update({"3.weight": np.ones((4, 2), np.float32)}), ValueError,
     r"3.weight must have shape \(4, 12\)"),
    (lambda sd: sd.update({"0.weight": np.ones((5, 12), np.float32)}), ValueError,
     r"0.weight must have shape \(12, 5\)"),
    (lambda sd: sd.update({"1.num_batches_tracked": np.array(1.5)}), TypeError,
     "1.num_batches_tracked must be an integer"),
    (lambda sd: sd.update({"1.num_batches_tracked": np.array(-1)}), ValueError,
     "1.num_batches_tracked must be a non-negative"),
    (lambda sd: sd.update({"1.bias": np.arange(12)}), TypeError, "1.bias must be a float"),
    (lambda sd: sd.update({"1.bias": "zeros"}), TypeError, "1.bias must be a float"),
])
def test_a_mismatch_names_the_key_and_changes_nothing(edit, exc, named):
    model = models()["bn_mlp"]()
    before = snapshot(model)
    sd = {k: v + 1 if v.dtype.kind == "f" else v + 5 for k, v in before.items()}
    edit(sd)
    with pytest.raises(exc, match=named):
        interop.load_torch_state_dict(model, sd)
    assert_unchanged(model, before)


def test_non_strict_loading_loads_the_keys_present():
    model = models()["mlp"]()
    before = snapshot(model)
    interop.load_torch_state_dict(model, {"2.bias": np.full(3, 7.0), "5.extra": 1},
                                  strict=False)
    np.testing.assert_array_equal(model[1].bias.data, np.full(3, 7.0, np.float32))
    np.testing.assert_array_equal(model[1].weight.data.T, before["2.weight"])
    with pytest.raises(TypeError, match="strict"):
        interop.load_torch_state_dict(model, {}, strict=None)
    with pytest.raises(TypeError, match="dict"):
        interop.load_torch_state_dict(model, [("0.weight", 1)])


def test_loading_keeps_recorded_programs_valid(backend):
    """Weights are copied in place: a replaying Sequential computes with the new ones."""
    model = models()["mlp"]()
    x = sample(8)
    model(x), model(x)
    other = models()["mlp"]()
    for p in other.parameters():
        p.data = p.data * 2 + 0.5
    interop.load_torch_state_dict(model, interop.torch_state_dict(other))
    np.testing.assert_array_equal(model(x), other(x))


# ------------------------------------------------------------------ from_torch
def torch_models():
    return {
        "mlp": lambda: nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3)),
        "bn": lambda: nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.GELU("tanh"),
                                    nn.Dropout(0.25), nn.Linear(12, 4, bias=False),
                                    nn.BatchNorm1d(4, affine=False, eps=1e-3, momentum=0.3),
                                    nn.LeakyReLU(0.1)),
        "activations": lambda: nn.Sequential(nn.Flatten(), nn.Linear(5, 8), nn.ELU(0.5),
                                             nn.SiLU(), nn.PReLU(8, 0.3), nn.Sigmoid(),
                                             nn.Linear(8, 8), nn.PReLU(), nn.Tanh(),
                                             nn.GELU(), nn.Linear(8, 2), nn.Tanh(),
                                             nn.ReLU()),
        "nested": lambda: nn.Sequential(nn.Sequential(nn.Linear(5, 6), nn.ReLU()),
                                        nn.Sequential(nn.Sequential(nn.Linear(6, 2)))),
    }


def trained(module):
    """A few training forwards, so running statistics and counts are not the initial
    ones."""
    module.train()
    with torch.no_grad():
        for seed in range(3):
            module(t(sample(16, seed=seed + 10)))
    return module


@pytest.mark.parametrize("name", sorted(torch_models()))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_from_torch_computes_the_same(name, mode, backend):
    torch.manual_seed(0)
    module = trained(torch_models()[name]())
    module.train(mode == "train")
    if mode == "train":                 # dropout's draws differ: compare without it
        for m in module.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
    model = interop.from_torch(module)
    assert isinstance(model, F.Sequential) and model.training == (mode == "train")
    for batch in (2, 7):
        x = sample(batch, seed=batch)
        np.testing.assert_allclose(model(x), torch_out(module, x), rtol=1e-5, atol=1e-5)
    ours = interop.torch_state_dict(model)
    flat = interop.to_torch(model).state_dict()
    assert list(ours) == list(flat)
    theirs = list(module.state_dict().values())          # nested keys differ, order not
    assert [v.shape for v in ours.values()] == [tuple(v.shape) for v in theirs]
    for ov, tv in zip(ours.values(), theirs):
        np.testing.assert_allclose(ov, tv.numpy(), rtol=1e-6, atol=1e-6)


def test_from_torch_fuses_activations_and_to_torch_splits_them_back():
    torch.manual_seed(1)
    module = trained(torch_models()["bn"]())
    model = interop.from_torch(module)
    assert [type(m).__name__ for m in model] == ["Dense", "BatchNorm1d", "GELU", "Dropout",
                                                 "Dense", "BatchNorm1d", "LeakyReLU"]
    assert model[4].bias is None and model[5].eps == 1e-3 and model[5].momentum == 0.3
    assert int(model[1].num_batches_tracked) == 3
    back = interop.to_torch(model)
    assert repr(back) == repr(module)
    for (k, v), (k2, v2) in zip(back.state_dict().items(), module.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_from_torch_keeps_modes_and_dtype():
    module = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Dropout(0.5)).double()
    module[1].eval()
    model = interop.from_torch(module)
    assert model.dtype == np.float64 and model.training
    assert [m.training for m in model] == [True, False, True]
    model = interop.from_torch(nn.Linear(3, 2).eval())
    assert len(model) == 1 and not model.training and not model[0].training


@pytest.mark.parametrize("make,named", [
    (lambda: nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=1)), "module 1 Softmax"),
    (lambda: nn.Sequential(nn.Conv1d(3, 3, 1)), "module 0 Conv1d"),
    (lambda: nn.Sequential(nn.BatchNorm1d(3, momentum=None)), "module 0 BatchNorm1d.*momentum"),
    (lambda: nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False)), "BatchNorm1d"),
    (lambda: nn.Sequential(nn.Flatten(0)), "module 0 Flatten"),
    (lambda: nn.Sequential(nn.Linear(3, 3).half()), "module 0 Linear.*float16"),
    (lambda: nn.Sequential(type("MyLinear", (nn.Linear,), {})(3, 3)), "module 0 MyLinear"),
])
def test_from_torch_refuses_by_name(make, named):
    with pytest.raises(ValueError, match=named):
        interop.from_torch(make())


def test_from_torch_wants_a_torch_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        interop.from_torch(F.Sequential(F.ReLU()))


# ---------------------------------------------------------------- image layers
def images(batch=4, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).normal(0, 1, (batch, 3, 10, 10)).astype(dtype)


def cnn():
    bn2 = F.BatchNorm2d(6)
    bn2(images(8, seed=9).repeat(2, axis=1))
    return F.Sequential(
        F.Conv2d(3, 6, 3, padding=1, activation="relu", rng=0), bn2,
        F.MaxPool2d(2), F.Conv2d(6, 8, (3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1),
                                 bias=False, rng=1),
        F.AvgPool2d(3, stride=1, padding=1), F.ELU(), F.GlobalAvgPool2d(),
        F.Dense(8, 3, rng=2))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cnn_to_torch_and_back(mode, backend):
    model = with_bias(cnn()).train(mode == "train")
    module = interop.to_torch(model)
    assert [type(m).__name__ for m in module] == [
        "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d", "Conv2d", "AvgPool2d", "ELU",
        "AdaptiveAvgPool2d", "Flatten", "Linear"]
    x = images(4)
    back = interop.from_torch(module)         # before either forward: the same state
    assert [type(m).__name__ for m in back] == [type(m).__name__ for m in model]
    assert repr(back) == repr(model) and back.training == (mode == "train")
    want = model(x)
    np.testing.assert_allclose(torch_out(module, x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(back(x), want, rtol=1e-5, atol=1e-5)
    ours, theirs = interop.torch_state_dict(model), module.state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value.numpy(), rtol=1e-6, atol=1e-7, err_msg=key)


def with_bias(model):
    for p in model.parameters():
        if p.name == "bias":
            p.data = np.linspace(-0.5, 0.5, p.size)
    return model


def test_residual_has_no_torch_module():
    model = F.Sequential(F.Conv2d(3, 3, 3, padding=1, rng=0),
                         F.Residual(F.Sequential(F.Conv2d(3, 3, 3, padding=1, rng=1), F.ReLU())))
    with pytest.raises(ValueError, match="layer 1 Residual has no torch.nn equivalent"):
        interop.to_torch(model)


@pytest.mark.parametrize("make,named", [
    (lambda: nn.Sequential(nn.Conv2d(3, 3, 3, padding="same")), "module 0 Conv2d"),
    (lambda: nn.Sequential(nn.Conv2d(3, 3, 3, padding_mode="reflect")), "module 0 Conv2d"),
    (lambda: nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), "module 0 Conv2d.*groups"),
    (lambda: nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), "module 0 MaxPool2d"),
    (lambda: nn.Sequential(nn.MaxPool2d(3, dilation=2)), "module 0 MaxPool2d"),
    (lambda: nn.Sequential(nn.AvgPool2d(3, padding=1, count_include_pad=False)),
     "module 0 AvgPool2d"),
    (lambda: nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten()), "AdaptiveAvgPool2d"),
    (lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1)), "module 0 AdaptiveAvgPool2d"),
])
def test_from_torch_refuses_image_modules_fastnn_lacks(make, named):
    with pytest.raises(ValueError, match=named):
        interop.from_torch(make())


def test_from_torch_image_modules():
    torch.manual_seed(3)
    module = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.SiLU(),
                           nn.BatchNorm2d(4), nn.AvgPool2d(2, padding=1), nn.Conv2d(4, 4, 1),
                           nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(4, 2))
    trained_images(module)
    model = interop.from_torch(module.eval())
    assert [type(m).__name__ for m in model] == ["Conv2d", "BatchNorm2d", "AvgPool2d",
                                                 "Conv2d", "GlobalAvgPool2d", "Dense"]
    assert model[0].activation == "silu" and int(model[1].num_batches_tracked) == 2
    x = images(5)
    np.testing.assert_allclose(model(x), torch_out(module, x), rtol=1e-5, atol=1e-5)


def trained_images(module):
    with torch.no_grad():
        for seed in range(2):
            module(t(images(8, seed=seed + 20)))


# ----------------------------------------------------------------- safetensors
def test_safetensors_written_by_fastnn_load_in_torch(tmp_path):
    st = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    model = models()["bn_mlp"]()
    path = tmp_path / "model.safetensors"
    interop.save_safetensors(model, path)
    module = interop.to_torch(models()["bn_mlp"]())
    module.load_state_dict(st.load_file(str(path)), strict=True)
    model.eval(), module.eval()
    x = sample(5)
    np.testing.assert_allclose(torch_out(module, x), model(x), rtol=1e-5, atol=1e-5)
    assert int(module[1].num_batches_tracked) == 2
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_safetensors_written_by_torch_load_in_fastnn(tmp_path):
    st = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    torch.manual_seed(2)
    module = trained(torch_models()["bn"]()).eval()
    path = str(tmp_path / "torch.safetensors")
    st.save_file(module.state_dict(), path)
    model = interop.from_torch(torch_models()["bn"]()).eval()
    interop.load_safetensors(model, path)
    x = sample(6)
    np.testing.assert_allclose(model(x), torch_out(module, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="missing"):
        interop.load_safetensors(F.Sequential(F.Dense(5, 12, rng=0), F.Dense(12, 2, rng=0),
                                              F.Dense(2, 1, rng=0)), path)


# ------------------------------------------------------ BatchNorm's forward count
@pytest.mark.parametrize("replayed", [True, False])
def test_batchnorm_counts_training_forwards_like_torch(replayed, backend):
    model = F.Sequential(F.Dense(5, 4, rng=0), F.BatchNorm1d(4))
    if not replayed:
        model = F.Sequential(F.Dense(5, 4, rng=0), F.BatchNorm1d(4), F.PReLU())
    module = interop.to_torch(model)
    for k in range(5):
        x = sample(8, seed=k)
        y = model(x)
        model.backward(np.ones_like(y))
        module(t(x))
    assert int(model[1].num_batches_tracked) == int(module[1].num_batches_tracked) == 5
    model.eval()
    model(sample(3))
    assert int(model[1].num_batches_tracked) == 5


def test_trainer_steps_are_counted(backend):
    model = F.Sequential(F.Dense(5, 8, rng=0), F.BatchNorm1d(8), F.ReLU(), F.Dense(8, 3, rng=1))
    trainer = F.Trainer(model, F.SoftmaxCrossEntropy(), F.optim.SGD(model.parameters(), lr=0.1))
    X = sample(60)
    trainer.fit(X, np.arange(60) % 3, epochs=2, batch_size=20, seed=0)
    assert int(model[1].num_batches_tracked) == 6


def test_num_batches_tracked_is_checked():
    layer = F.BatchNorm1d(3)
    layer.num_batches_tracked = 4
    assert int(layer.num_batches_tracked) == 4
    for bad, exc in ((-1, ValueError), (1.5, TypeError)):
        with pytest.raises(exc, match="num_batches_tracked"):
            layer.num_batches_tracked = bad


# ------------------------------------------------------ torch tensors as inputs
def test_torch_tensors_are_model_inputs(backend):
    model = models()["bn_mlp"]().eval()
    x = sample(7)
    want = model(x)
    np.testing.assert_array_equal(model(torch.from_numpy(x)), want)
    np.testing.assert_array_equal(model(torch.from_numpy(x.astype(np.float64))),
                                  model(x.astype(np.float64)))
    xt = torch.from_numpy(np.ascontiguousarray(x.T)).T          # a strided view
    np.testing.assert_array_equal(model(xt), want)
    dy = torch.ones(7, 4)
    np.testing.assert_array_equal(model.backward(dy), model.backward(np.ones((7, 4), np.float32)))


def test_torch_tensors_are_read_without_a_copy():
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = as_user_float(x, "f")
    assert isinstance(a, np.ndarray) and np.shares_memory(a, x.numpy())


@pytest.mark.parametrize("make,match", [
    (lambda: torch.ones(2, 5, requires_grad=True), "detach"),
    (lambda: torch.ones(2, 5, dtype=torch.bfloat16), "BFloat16"),
    (lambda: torch.ones(2, 5, dtype=torch.int64), "float32 or float64"),
])
def test_unreadable_tensors_raise_type_errors(make, match):
    with pytest.raises(TypeError, match=match):
        F.Dense(5, 2, rng=0)(make())


def test_fit_takes_torch_tensors():
    model = F.Sequential(F.Dense(5, 3, rng=0))
    trainer = F.Trainer(model, F.SoftmaxCrossEntropy(), F.optim.SGD(model.parameters(), lr=0.1))
    X, y = sample(30), np.arange(30) % 3
    history = trainer.fit(torch.from_numpy(X), torch.from_numpy(y), epochs=1, batch_size=10,
                          seed=0)
    assert len(history["loss"]) == 1
