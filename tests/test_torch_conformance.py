"""Conformance with PyTorch: layers (forward, dx, every parameter grad, running stats),
losses, optimizers (several steps, every option), schedulers and clip_grad_norm, on
both backends, float64 to ~1e-10 relative and float32 to ~1e-4."""
import math
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastnn import optim  # noqa: E402
from fastnn.layers import (ELU, GELU, BatchNorm1d, Dense, Flatten, LeakyReLU,  # noqa: E402
                           Maxout, PReLU, ReLU, Sigmoid, SiLU, Swish, Tanh)
from fastnn.layers.base import Parameter  # noqa: E402
from fastnn.losses import BCEWithLogits, MSE, MulticlassHinge, SoftmaxCrossEntropy  # noqa: E402
from conftest import adam_steps_like_torch  # noqa: E402

torch.set_num_threads(1)
F = torch.nn.functional


def rtol_for(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-4


def assert_close(actual, expected, dtype, what=""):
    """Relative agreement, with an absolute floor scaled to the reference's magnitude."""
    expected = expected.detach().numpy() if hasattr(expected, "detach") else np.asarray(expected)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, what
    rtol = rtol_for(dtype)
    scale = max(float(np.max(np.abs(expected))) if expected.size else 0.0, 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def T(a):
    return torch.tensor(np.array(a), requires_grad=True)


# ------------------------------------------------------------------------------ layers
def _dense_case(activation, kw, torch_act):
    """torch's Linear weight is (out, in): the transpose of Dense.weight."""
    def make(dtype, rng):
        layer = Dense(5, 4, activation=activation, activation_kw=kw, dtype=dtype, rng=rng)
        layer.bias.data = rng.standard_normal(4)
        w, b = T(layer.weight.data.T), T(layer.bias.data)
        pairs = [(layer.weight, w, True), (layer.bias, b, False)]
        return layer, (lambda x: torch_act(F.linear(x, w, b))), pairs
    return make, (6, 5)


def _act_case(cls, args, torch_fn, shape=(6, 5)):
    def make(dtype, rng):
        return cls(*args), torch_fn, []
    return make, shape


def _prelu_case(num):
    def make(dtype, rng):
        layer = PReLU(num, init=0.3, dtype=dtype)
        layer.alpha.data = rng.uniform(0.05, 0.5, num)
        a = T(layer.alpha.data)
        return layer, (lambda x: F.prelu(x, a)), [(layer.alpha, a, False)]
    return make, (7, 4)


def _maxout_case(pieces):
    def make(dtype, rng):
        layer = Maxout(5, 3, pieces=pieces, dtype=dtype, rng=rng)
        layer.bias.data = rng.standard_normal(3 * pieces)
        w, b = T(layer.weight.data), T(layer.bias.data)

        def fn(x):
            z = (x @ w + b).reshape(x.shape[0], 3, pieces)
            return z.max(dim=2).values
        return layer, fn, [(layer.weight, w, False), (layer.bias, b, False)]
    return make, (6, 5)


def _bn_case(affine, training):
    def make(dtype, rng):
        layer = BatchNorm1d(4, eps=1e-3, momentum=0.2, affine=affine, dtype=dtype)
        ref = torch.nn.BatchNorm1d(4, eps=1e-3, momentum=0.2, affine=affine)
        ref = ref.double() if np.dtype(dtype) == np.float64 else ref
        mean, var = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
        layer.running_mean = mean
        layer.running_var = var
        with torch.no_grad():
            ref.running_mean.copy_(torch.tensor(mean))
            ref.running_var.copy_(torch.tensor(var))
        pairs = []
        if affine:
            layer.gamma.data = rng.uniform(0.5, 1.5, 4)
            layer.beta.data = rng.standard_normal(4)
            with torch.no_grad():
                ref.weight.copy_(torch.tensor(layer.gamma.data))
                ref.bias.copy_(torch.tensor(layer.beta.data))
            pairs = [(layer.gamma, ref.weight), (layer.beta, ref.bias)]
        layer.train(training)
        ref.train(training)
        buffers = [(lambda: layer.running_mean, ref.running_mean),
                   (lambda: layer.running_var, ref.running_var)]
        return layer, ref, pairs, buffers
    return make, (8, 4)


def _dense_nobias(dtype, rng):
    layer = Dense(5, 4, bias=False, activation="tanh", dtype=dtype, rng=rng)
    w = T(layer.weight.data.T)
    return layer, (lambda x: torch.tanh(F.linear(x, w))), [(layer.weight, w, True)]


LAYER_CASES = {
    "dense": _dense_case(None, None, lambda z: z),
    "dense-nobias": (_dense_nobias, (6, 5)),
    "dense-relu": _dense_case("relu", None, F.relu),
    "dense-sigmoid": _dense_case("sigmoid", None, torch.sigmoid),
    "dense-tanh": _dense_case("tanh", None, torch.tanh),
    "dense-leaky": _dense_case("leaky_relu", {"negative_slope": 0.2},
                               lambda z: F.leaky_relu(z, 0.2)),
    "dense-elu": _dense_case("elu", {"alpha": 0.7}, lambda z: F.elu(z, 0.7)),
    "dense-gelu": _dense_case("gelu", None, F.gelu),
    "dense-gelu-tanh": _dense_case("gelu", {"approximate": "tanh"},
                                   lambda z: F.gelu(z, approximate="tanh")),
    "dense-silu": _dense_case("silu", None, F.silu),
    "dense-swish": _dense_case("swish", {"beta": 1.5}, lambda z: z * torch.sigmoid(1.5 * z)),
    "sigmoid": _act_case(Sigmoid, (), torch.sigmoid),
    "tanh": _act_case(Tanh, (), torch.tanh),
    "relu": _act_case(ReLU, (), F.relu),
    "leaky_relu": _act_case(LeakyReLU, (0.05,), lambda x: F.leaky_relu(x, 0.05)),
    "leaky_relu-default": _act_case(LeakyReLU, (), F.leaky_relu),
    "elu": _act_case(ELU, (), F.elu),
    "elu-alpha": _act_case(ELU, (1.7,), lambda x: F.elu(x, 1.7)),
    "gelu": _act_case(GELU, (), F.gelu),
    "gelu-tanh": _act_case(GELU, ("tanh",), lambda x: F.gelu(x, approximate="tanh")),
    "silu": _act_case(SiLU, (), F.silu),
    "swish": _act_case(Swish, (), F.silu),
    "swish-beta": _act_case(Swish, (0.6,), lambda x: x * torch.sigmoid(0.6 * x)),
    "relu-3d": _act_case(ReLU, (), F.relu, shape=(3, 4, 5)),
    "flatten": _act_case(Flatten, (), torch.nn.Flatten(), shape=(3, 4, 5)),
    "prelu-shared": _prelu_case(1),
    "prelu-channels": _prelu_case(4),
    "maxout-2": _maxout_case(2),
    "maxout-3": _maxout_case(3),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_matches_torch(case, backend, dtype):
    make, shape = LAYER_CASES[case]
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    layer, torch_fn, pairs = make(dtype, rng)
    x = rng.standard_normal(shape).astype(dtype) * 2
    xt = T(x)
    y = layer(x)
    yt = torch_fn(xt)
    assert y.dtype == dtype
    assert_close(y, yt, dtype, "forward")
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(dy)
    yt.backward(torch.tensor(dy))
    assert dx.dtype == dtype
    assert_close(dx, xt.grad, dtype, "dx")
    for p, leaf, transposed in pairs:       # (our Parameter, torch leaf, layout differs)
        ref_grad = leaf.grad.T if transposed else leaf.grad
        assert_close(p.grad, ref_grad, dtype, p.name)
        assert p.grad.dtype == dtype


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "noaffine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm_matches_torch(affine, training, backend, dtype):
    (make, shape) = _bn_case(affine, training)
    rng = np.random.default_rng(7)
    layer, ref, pairs, buffers = make(dtype, rng)
    for step in range(3):                      # running stats evolve over several calls
        x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
        xt = T(x)
        for p in ref.parameters():
            p.grad = None
        y = layer(x)
        yt = ref(xt)
        assert_close(y, yt, dtype, "forward step %d" % step)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dx = layer.backward(dy)
        yt.backward(torch.tensor(dy))
        assert_close(dx, xt.grad, dtype, "dx")
        for p, r in pairs:
            assert_close(p.grad, r.grad, dtype, p.name)
        for get, r in buffers:
            assert_close(get(), r, dtype, "running stats")


# ------------------------------------------------------------------------------ losses
LOSSES = {
    "softmax_ce": (SoftmaxCrossEntropy, lambda z, t: F.cross_entropy(z, t), "labels"),
    "hinge": (MulticlassHinge, lambda z, t: F.multi_margin_loss(z, t) * z.shape[1], "labels"),
    "hinge-margin": (lambda: MulticlassHinge(margin=0.5),
                     lambda z, t: F.multi_margin_loss(z, t, margin=0.5) * z.shape[1], "labels"),
    "bce": (BCEWithLogits, F.binary_cross_entropy_with_logits, "probs"),
    "mse": (MSE, F.mse_loss, "values"),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_matches_torch(name, backend, dtype):
    cls, ref, kind = LOSSES[name]
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((9, 5)) * 3).astype(dtype)
    if kind == "labels":
        t = rng.integers(0, 5, 9)
        tt = torch.tensor(t)
    elif kind == "probs":
        t = rng.uniform(0, 1, (9, 5)).astype(dtype)
        t[0, :2] = (0.0, 1.0)
        z[1, :2] = (60.0, -60.0)       # extreme logits stay finite
        tt = torch.tensor(t)
    else:
        t = rng.standard_normal((9, 5)).astype(dtype)
        tt = torch.tensor(t)
    crit = cls()
    zt = T(z)
    loss = crit(z, t)
    lt = ref(zt, tt)
    lt.backward()
    assert isinstance(loss, float)
    assert_close(np.array(loss), lt, dtype, "loss")
    g = crit.backward()
    assert g.dtype == dtype
    assert_close(g, zt.grad, dtype, "dpred")


# -------------------------------------------------------------------------- optimizers
OPTIMIZERS = {
    "sgd": (optim.SGD, torch.optim.SGD, dict(lr=0.1)),
    "sgd-momentum": (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    "sgd-dampening": (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3)),
    "sgd-nesterov": (optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    "sgd-wd": (optim.SGD, torch.optim.SGD, dict(lr=0.1, weight_decay=0.1)),
    "sgd-all": (optim.SGD, torch.optim.SGD,
                dict(lr=0.07, momentum=0.5, nesterov=True, weight_decay=0.05)),
    "adagrad": (optim.Adagrad, torch.optim.Adagrad, dict()),
    "adagrad-opts": (optim.Adagrad, torch.optim.Adagrad,
                     dict(lr=0.2, eps=1e-6, weight_decay=0.1, lr_decay=0.05,
                          initial_accumulator_value=0.3)),
    "rmsprop": (optim.RMSprop, torch.optim.RMSprop, dict()),
    "rmsprop-momentum": (optim.RMSprop, torch.optim.RMSprop,
                         dict(lr=0.02, alpha=0.9, eps=1e-6, momentum=0.7)),
    "rmsprop-wd": (optim.RMSprop, torch.optim.RMSprop, dict(lr=0.01, weight_decay=0.2)),
    "adam": (optim.Adam, torch.optim.Adam, dict()),
    "adam-opts": (optim.Adam, torch.optim.Adam,
                  dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
    "adamw": (optim.AdamW, torch.optim.AdamW, dict()),
    "adamw-opts": (optim.AdamW, torch.optim.AdamW,
                   dict(lr=0.03, betas=(0.5, 0.9), eps=1e-7, weight_decay=0.3)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_matches_torch(name, backend, dtype):
    ours_cls, torch_cls, kw = OPTIMIZERS[name]
    rng = np.random.default_rng(11)
    shapes = [(4, 3), (3,), (2, 2, 2)]
    inits = [rng.standard_normal(s).astype(dtype) for s in shapes]
    params = [Parameter(a) for a in inits]
    tparams = [torch.tensor(a, requires_grad=True) for a in inits]
    opt = ours_cls(params, **kw)
    topt = torch_cls(tparams, **kw)
    for step in range(6):
        if step == 4:                              # lr changes mid-run are honoured
            opt.lr = opt.lr * 0.5
            for g in topt.param_groups:
                g["lr"] = g["lr"] * 0.5
        for p, tp in zip(params, tparams):
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad = g
            tp.grad = torch.tensor(g)
        opt.step()
        topt.step()
        for p, tp in zip(params, tparams):
            assert p.data.dtype == dtype
            assert_close(p.data, tp, dtype, "%s step %d" % (name, step))


# -------------------------------------------------------------------------- schedulers
SCHEDULERS = {
    "step": (optim.StepLR, torch.optim.lr_scheduler.StepLR, dict(step_size=3)),
    "step-gamma": (optim.StepLR, torch.optim.lr_scheduler.StepLR, dict(step_size=2, gamma=0.5)),
    "exponential": (optim.ExponentialLR, torch.optim.lr_scheduler.ExponentialLR,
                    dict(gamma=0.9)),
    "cosine": (optim.CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR,
               dict(T_max=7)),
    "cosine-min": (optim.CosineAnnealingLR, torch.optim.lr_scheduler.CosineAnnealingLR,
                   dict(T_max=5, eta_min=0.01)),
}


@pytest.mark.parametrize("manual", [False, True], ids=["plain", "manual-lr"])
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_matches_torch(name, manual):
    ours_cls, torch_cls, kw = SCHEDULERS[name]
    p = Parameter(np.zeros(2))
    tp = torch.zeros(2, requires_grad=True)
    opt = optim.SGD([p], lr=0.3)
    topt = torch.optim.SGD([tp], lr=0.3)
    sched, tsched = ours_cls(opt, **kw), torch_cls(topt, **kw)
    ours, ref = [], []
    for epoch in range(25):                 # past T_max: torch's periodic continuation
        p.grad = np.ones(2)
        tp.grad = torch.ones(2)
        opt.step()
        topt.step()
        ours.append(opt.lr)
        ref.append(topt.param_groups[0]["lr"])
        if manual and epoch == 9:              # chainable: a manual change carries on
            opt.lr = opt.lr * 0.5
            topt.param_groups[0]["lr"] *= 0.5
        sched.step()
        tsched.step()
        assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr(), rel=1e-13, abs=1e-15)
    np.testing.assert_allclose(ours, ref, rtol=1e-13, atol=1e-15)


# ----------------------------------------------------------------------- clip_grad_norm
@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch(max_norm, norm_type, dtype):
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal(s).astype(dtype) for s in [(4, 3), (5,), (2, 3)]]
    params = [Parameter(np.zeros(g.shape, dtype)) for g in grads]
    tparams = [torch.zeros(g.shape, dtype=torch.tensor(g).dtype, requires_grad=True)
               for g in grads]
    for p, tp, g in zip(params, tparams, grads):
        p.grad = g
        tp.grad = torch.tensor(g)
    total = optim.clip_grad_norm(params, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert_close(np.array(total), ttotal, dtype, "total norm")
    for p, tp in zip(params, tparams):
        assert p.grad.dtype == dtype
        assert_close(p.grad, tp.grad, dtype, "clipped grad")


# ------------------------------------------------------------------------ whole network
def test_network_training_matches_torch(backend):
    """A small MLP with BatchNorm trained 5 steps with Adam agrees with torch (float64)."""
    from fastnn.layers import Sequential
    rng = np.random.default_rng(0)
    model = Sequential(Dense(4, 8, activation="tanh", dtype=np.float64, rng=1),
                       BatchNorm1d(8, dtype=np.float64), PReLU(dtype=np.float64),
                       Dense(8, 3, dtype=np.float64, rng=2))
    lin1 = torch.nn.Linear(4, 8).double()
    bn = torch.nn.BatchNorm1d(8).double()
    act = torch.nn.PReLU().double()
    lin2 = torch.nn.Linear(8, 3).double()
    with torch.no_grad():
        lin1.weight.copy_(torch.tensor(model[0].weight.data.T))
        lin1.bias.copy_(torch.tensor(model[0].bias.data))
        lin2.weight.copy_(torch.tensor(model[3].weight.data.T))
        lin2.bias.copy_(torch.tensor(model[3].bias.data))
    ref = torch.nn.Sequential(lin1, torch.nn.Tanh(), bn, act, lin2)
    opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=0.01)
    topt = torch.optim.Adam(ref.parameters(), lr=0.01, weight_decay=0.01)
    adam_steps_like_torch(model, opt, ref, topt, ((rng.standard_normal((16, 4)),
                                                   rng.integers(0, 3, 16)) for _ in range(5)))
    np.testing.assert_allclose(model[0].weight.data, lin1.weight.detach().numpy().T, rtol=1e-9)
    np.testing.assert_allclose(model[1].running_var, bn.running_var.numpy(), rtol=1e-10)
    np.testing.assert_allclose(model[2].alpha.data, act.weight.detach().numpy(), rtol=1e-9)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_scaling_matches_torch(p, backend, dtype):
    """Masks come from different generators, but kept elements are scaled alike
    (x / (1 - p)), dx uses the same mask, and eval mode is the identity in both."""
    from fastnn.layers import Dropout
    x = np.random.default_rng(0).uniform(1, 2, (50, 40)).astype(dtype)
    layer = Dropout(p, rng=0)
    ref = torch.nn.Dropout(p)
    torch.manual_seed(0)
    y, yt = layer(x), ref(torch.tensor(x)).numpy()
    kept, kept_t = y != 0, yt != 0
    assert_close(y[kept], x[kept] / (1 - p), dtype, "ours")
    assert_close(yt[kept_t], x[kept_t] / (1 - p), dtype, "torch")
    assert abs(kept.mean() - kept_t.mean()) < 0.05
    dy = np.ones_like(x)
    assert_close(layer.backward(dy), kept / (1 - p), dtype, "dx")
    layer.eval()
    ref.eval()
    np.testing.assert_array_equal(layer(x), ref(torch.tensor(x)).numpy())
