"""fastnn.optim without torch: independent NumPy transcriptions of torch.optim's
documented algorithms, closed-form schedules, clip_grad_norm, validation, state dicts and
the step-before-backward guard."""
import math

import numpy as np
import pytest

from fastnn import optim
from fastnn.layers import BatchNorm1d, Dense, Parameter, Sequential


def rtol_for(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-4


# ------------------------------------------------- reference algorithms (torch docs)
class RefSGD:
    def __init__(self, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        self.__dict__.update(lr=lr, mu=momentum, tau=dampening, nesterov=nesterov,
                             wd=weight_decay, b=None)

    def step(self, p, g):
        g = g + self.wd * p
        if self.mu:
            self.b = g.copy() if self.b is None else self.mu * self.b + (1 - self.tau) * g
            g = g + self.mu * self.b if self.nesterov else self.b
        return p - self.lr * g


class RefAdagrad:
    def __init__(self, lr=0.01, eps=1e-10, weight_decay=0.0, lr_decay=0.0,
                 initial_accumulator_value=0.0):
        self.__dict__.update(lr=lr, eps=eps, wd=weight_decay, decay=lr_decay,
                             s0=initial_accumulator_value, s=None, t=0)

    def step(self, p, g):
        self.t += 1
        if self.s is None:
            self.s = np.full_like(p, self.s0)
        g = g + self.wd * p
        clr = self.lr / (1 + (self.t - 1) * self.decay)
        self.s = self.s + g * g
        return p - clr * g / (np.sqrt(self.s) + self.eps)


class RefRMSprop:
    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
        self.__dict__.update(lr=lr, alpha=alpha, eps=eps, mu=momentum, wd=weight_decay,
                             v=0.0, b=0.0)

    def step(self, p, g):
        g = g + self.wd * p
        self.v = self.alpha * self.v + (1 - self.alpha) * g * g
        if self.mu:
            self.b = self.mu * self.b + g / (np.sqrt(self.v) + self.eps)
            return p - self.lr * self.b
        return p - self.lr * g / (np.sqrt(self.v) + self.eps)


class RefAdam:
    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled=False):
        self.__dict__.update(lr=lr, b1=betas[0], b2=betas[1], eps=eps, wd=weight_decay,
                             decoupled=decoupled, m=0.0, v=0.0, t=0)

    def step(self, p, g):
        self.t += 1
        if self.decoupled:
            p = p * (1 - self.lr * self.wd)
        else:
            g = g + self.wd * p
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        mhat = self.m / (1 - self.b1 ** self.t)
        vhat = self.v / (1 - self.b2 ** self.t)
        return p - self.lr * mhat / (np.sqrt(vhat) + self.eps)


CASES = {
    "sgd": (optim.SGD, RefSGD, dict(lr=0.1)),
    "sgd-momentum-dampening-wd": (optim.SGD, RefSGD,
                                  dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.1)),
    "sgd-nesterov": (optim.SGD, RefSGD, dict(lr=0.05, momentum=0.8, nesterov=True,
                                             weight_decay=0.01)),
    "adagrad": (optim.Adagrad, RefAdagrad, dict(lr=0.1)),
    "adagrad-opts": (optim.Adagrad, RefAdagrad, dict(lr=0.1, eps=1e-5, weight_decay=0.2,
                                                     lr_decay=0.1, initial_accumulator_value=0.5)),
    "rmsprop": (optim.RMSprop, RefRMSprop, dict()),
    "rmsprop-momentum-wd": (optim.RMSprop, RefRMSprop, dict(lr=0.02, alpha=0.8, eps=1e-6,
                                                            momentum=0.5, weight_decay=0.1)),
    "adam": (optim.Adam, RefAdam, dict(lr=0.01)),
    "adam-wd": (optim.Adam, RefAdam, dict(lr=0.02, betas=(0.7, 0.9), eps=1e-6,
                                          weight_decay=0.3)),
    "adamw": (optim.AdamW, lambda **kw: RefAdam(decoupled=True, weight_decay=0.01, **kw),
              dict(lr=0.01)),
    "adamw-wd": (optim.AdamW, lambda **kw: RefAdam(decoupled=True, **kw),
                 dict(lr=0.05, weight_decay=0.5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_updates_match_reference(name, backend, dtype):
    cls, ref_cls, kw = CASES[name]
    rng = np.random.default_rng(0)
    shapes = [(5, 3), (3,), (2, 3, 2)]
    params = [Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    refs = [(p.data.astype(np.float64), ref_cls(**kw)) for p in params]
    opt = cls(params, **kw)
    data_ids = [id(p.data) for p in params]     # (the optimizer may re-home them once)
    for step in range(5):
        new = []
        for p, (x, ref) in zip(params, refs):
            g = rng.standard_normal(p.shape).astype(dtype)
            p.grad = g
            new.append((ref.step(x, g.astype(np.float64)), ref))
        refs = new
        opt.step()
        for p, (x, _) in zip(params, refs):
            np.testing.assert_allclose(p.data, x, rtol=rtol_for(dtype) * 10,
                                       atol=rtol_for(dtype) * 10, err_msg="step %d" % step)
            assert p.data.dtype == dtype
    assert [id(p.data) for p in params] == data_ids         # updated in place


def test_defaults_match_torch():
    p = [Parameter(np.zeros(2))]
    assert optim.Adagrad(p).param_groups[0] == dict(lr=0.01, eps=1e-10, weight_decay=0.0,
                                                    lr_decay=0.0, initial_accumulator_value=0.0)
    assert optim.RMSprop(p).param_groups[0] == dict(lr=0.01, alpha=0.99, eps=1e-8,
                                                    momentum=0.0, weight_decay=0.0)
    assert optim.Adam(p).param_groups[0] == dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                                 weight_decay=0.0)
    assert optim.AdamW(p).weight_decay == 0.01
    sgd = optim.SGD(p, 0.1)
    assert (sgd.momentum, sgd.dampening, sgd.nesterov, sgd.weight_decay) == (0, 0, False, 0)
    with pytest.raises(TypeError):
        optim.SGD(p)                  # lr is required, as in API.md


@pytest.mark.parametrize("call", [
    lambda p: optim.SGD(p, lr=-0.1),
    lambda p: optim.SGD(p, lr=0.1, momentum=-0.5),
    lambda p: optim.SGD(p, lr=0.1, nesterov=True),
    lambda p: optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True),
    lambda p: optim.SGD(p, lr=0.1, weight_decay=-1),
    lambda p: optim.SGD(p, lr=float("nan")),
    lambda p: optim.Adagrad(p, eps=-1),
    lambda p: optim.RMSprop(p, alpha=-0.1),
    lambda p: optim.RMSprop(p, momentum=-0.1),
    lambda p: optim.Adam(p, betas=(1.0, 0.999)),
    lambda p: optim.Adam(p, betas=(0.9, -0.1)),
    lambda p: optim.Adam(p, eps=-1e-8),
    lambda p: optim.AdamW(p, lr=-1),
    lambda p: optim.SGD([], lr=0.1),
])
def test_invalid_hyperparameters_raise_value_error(call):
    with pytest.raises(ValueError):
        call([Parameter(np.zeros(2))])


def test_invalid_params_raise_type_error():
    with pytest.raises(TypeError):
        optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD(Parameter(np.zeros(2)), lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD([Parameter(np.zeros(2))], lr="0.1")
    with pytest.raises(TypeError):
        optim.SGD([Parameter(np.zeros(2))], lr=0.1, nesterov=1)
    p = Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="more than once"):
        optim.Adam([p, p])


def test_step_before_backward_raises_and_backward_enables_step(backend):
    model = Sequential(Dense(3, 4, rng=0), BatchNorm1d(4), Dense(4, 2, rng=1))
    opt = optim.SGD(model.parameters(), lr=0.1)
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="backward"):
        opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)           # nothing moved
    y = model(np.random.default_rng(0).standard_normal((5, 3)))
    model.backward(np.ones_like(y))
    opt.step()
    assert any(not np.array_equal(p.data, b) for p, b in zip(model.parameters(), before))
    opt.zero_grad()
    assert all(not p.grad.any() for p in model.parameters())
    with pytest.raises(RuntimeError):
        opt.step()                        # zero_grad forgets the gradients
    p = Parameter(np.zeros(3))
    p.grad[...] = [1.0, 0.0, 0.0]         # written in place by the caller: accepted
    optim.SGD([p], lr=1.0).step()
    np.testing.assert_array_equal(p.data, [-1.0, 0.0, 0.0])


def test_lr_settable_and_param_groups_live():
    p = Parameter(np.zeros(2))
    opt = optim.SGD([p], lr=0.1)
    opt.lr = 0.5
    p.grad = np.ones(2)
    opt.step()
    np.testing.assert_allclose(p.data, [-0.5, -0.5])
    opt.param_groups[0]["lr"] = 1.0
    assert opt.lr == 1.0
    with pytest.raises(ValueError):
        opt.lr = -1
    with pytest.raises(AttributeError):
        opt.not_a_hyperparameter


def test_state_is_flat_and_in_param_dtype():
    p = Parameter(np.zeros((3, 2), np.float32))
    opt = optim.Adam([p])
    p.grad = np.ones((3, 2))
    opt.step()
    sd = opt.state_dict()
    assert sd["state"][0]["step"] == 1
    for name in ("exp_avg", "exp_avg_sq"):
        a = sd["state"][0][name]
        assert a.shape == (6,) and a.dtype == np.float32


@pytest.mark.parametrize("name", ["sgd-momentum-dampening-wd", "adagrad-opts",
                                  "rmsprop-momentum-wd", "adam-wd", "adamw"])
def test_state_dict_round_trip_continues_identically(name, backend):
    cls, _, kw = CASES[name]
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s) for s in [(3, 2), (2,)]]
    grads = [[rng.standard_normal(a.shape) for a in init] for _ in range(6)]
    a = [Parameter(x) for x in init]
    opt_a = cls(a, **kw)
    for gs in grads[:3]:
        for p, g in zip(a, gs):
            p.grad = g
        opt_a.step()
    b = [Parameter(p.data) for p in a]
    opt_b = cls(b, lr=0.5) if cls is optim.SGD else cls(b)
    sd = opt_a.state_dict()
    opt_b.load_state_dict(sd)
    for s in sd["state"].values():              # the loaded state is a copy
        for v in s.values():
            if isinstance(v, np.ndarray):
                v[...] = np.nan
    assert opt_b.lr == opt_a.lr
    for gs in grads[3:]:
        for pa, pb, g in zip(a, b, gs):
            pa.grad = g
            pb.grad = g
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_load_state_dict_rejects_mismatches():
    p = [Parameter(np.zeros((2, 2))), Parameter(np.zeros(3))]
    adam = optim.Adam(p)
    for x in p:
        x.grad = np.ones(x.shape)
    adam.step()
    sd = adam.state_dict()
    with pytest.raises(ValueError):
        optim.SGD(p, lr=0.1).load_state_dict(sd)             # other hyperparameters
    with pytest.raises(ValueError):
        optim.Adam(p[:1]).load_state_dict(sd)                # other parameter count
    bad = adam.state_dict()
    bad["state"][1]["exp_avg"] = np.zeros(7)
    fresh = optim.Adam(p)
    with pytest.raises(ValueError):
        fresh.load_state_dict(bad)
    assert fresh.state_dict()["state"] == {}                 # unchanged
    bad = adam.state_dict()
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError):
        fresh.load_state_dict(bad)
    with pytest.raises(ValueError):
        fresh.load_state_dict({"state": {}})


# ------------------------------------------------------------------------- schedulers
def _run(sched_factory, epochs=20, lr=0.5):
    p = Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=lr)
    sched = sched_factory(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.lr)
        sched.step()
    return out, sched


def test_step_lr_closed_form():
    lrs, sched = _run(lambda o: optim.StepLR(o, step_size=3, gamma=0.5))
    np.testing.assert_allclose(lrs, [0.5 * 0.5 ** (e // 3) for e in range(20)], rtol=1e-14)
    assert sched.get_last_lr() == [pytest.approx(0.5 * 0.5 ** (20 // 3))]
    lrs, _ = _run(lambda o: optim.StepLR(o, step_size=2))         # gamma=0.1 default
    assert lrs[:5] == pytest.approx([0.5, 0.5, 0.05, 0.05, 0.005])


def test_exponential_lr_closed_form():
    lrs, _ = _run(lambda o: optim.ExponentialLR(o, gamma=0.9))
    np.testing.assert_allclose(lrs, [0.5 * 0.9 ** e for e in range(20)], rtol=1e-13)


@pytest.mark.parametrize("eta_min", [0.0, 0.05])
def test_cosine_closed_form_and_periodic_continuation(eta_min):
    T = 6
    lrs, _ = _run(lambda o: optim.CosineAnnealingLR(o, T_max=T, eta_min=eta_min), epochs=3 * T)
    closed = [eta_min + (0.5 - eta_min) * (1 + math.cos(math.pi * e / T)) / 2
              for e in range(3 * T)]
    np.testing.assert_allclose(lrs, closed, rtol=1e-12, atol=1e-14)
    assert lrs[T] == pytest.approx(eta_min, abs=1e-15)
    assert lrs[2 * T] == pytest.approx(0.5)           # back up after another T epochs


def test_scheduler_validation_and_state():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(TypeError):
        optim.StepLR("opt", 2)
    with pytest.raises(ValueError):
        optim.StepLR(opt, 0)
    with pytest.raises(TypeError):
        optim.StepLR(opt, 2.5)
    with pytest.raises(ValueError):
        optim.CosineAnnealingLR(opt, 0)
    with pytest.raises(ValueError):
        optim.ExponentialLR(opt, -0.5)
    s = optim.ExponentialLR(opt, 0.5)
    s.step()
    s.step()
    state = s.state_dict()
    assert state["last_epoch"] == 2
    opt2 = optim.SGD([Parameter(np.zeros(1))], lr=0.1)
    s2 = optim.ExponentialLR(opt2, 0.5)
    s2.load_state_dict(state)
    assert s2.last_epoch == 2 and s2.get_last_lr() == [0.025]


# --------------------------------------------------------------------- clip_grad_norm
def test_clip_grad_norm_reference(dtype):
    rng = np.random.default_rng(0)
    params = [Parameter(np.zeros(s, dtype)) for s in [(3, 4), (5,)]]
    grads = [rng.standard_normal(p.shape).astype(dtype) * 3 for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    assert optim.clip_grad_norm(params, 1e6) == pytest.approx(total, rel=rtol_for(dtype))
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad, g)                 # below max: untouched
    assert optim.clip_grad_norm(params, 2.0) == pytest.approx(total, rel=rtol_for(dtype))
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad, g * 2.0 / (total + 1e-6), rtol=rtol_for(dtype))
        assert p.grad.dtype == dtype
    new_total = math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params))
    assert new_total == pytest.approx(2.0, rel=1e-4)
    largest = max(float(np.abs(p.grad).max()) for p in params)
    assert optim.clip_grad_norm(params, 1.0, norm_type=math.inf) == pytest.approx(largest)


def test_clip_grad_norm_accepts_module_and_validates():
    model = Dense(2, 2, rng=0)
    model.weight.grad = np.full((2, 2), 3.0)
    model.bias.grad = np.zeros(2)
    assert optim.clip_grad_norm(model, 1.0) == pytest.approx(6.0)
    with pytest.raises(ValueError):
        optim.clip_grad_norm(model, -1.0)
    with pytest.raises(TypeError):
        optim.clip_grad_norm([np.zeros(2)], 1.0)
    model.weight.grad = np.full((2, 2), np.inf)
    with pytest.raises(RuntimeError, match="non-finite"):
        optim.clip_grad_norm(model, 1.0, error_if_nonfinite=True)


# ------------------------------------------------------------- loading keeps the fast path
@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.RMSprop])
def test_load_state_dict_keeps_parameters_in_the_optimizers_flat_buffer(cls):
    params = [Parameter(np.ones((3, 2))), Parameter(np.ones(4))]
    opt = cls(params, lr=0.1)
    for p in params:
        p.grad = np.full(p.shape, 0.5)
    opt.step()
    opt.load_state_dict(opt.state_dict())
    # the parameters still live in this optimizer's one flat buffer: its fused update
    # (one kernel call for all of them) still runs
    flat = params[0].data.base
    assert flat is not None and all(p.data.base is flat for p in params)
    assert opt._flat.usable(opt._state, opt._state_names)


def test_load_state_dict_rejects_hostile_values_and_changes_nothing():
    p = [Parameter(np.zeros((2, 2))), Parameter(np.zeros(3))]
    adam = optim.Adam(p, lr=0.01)
    for x in p:
        x.grad = np.ones(x.shape)
    adam.step()
    good = adam.state_dict()
    for edit in (lambda sd: sd["state"][0].update(step=10 ** 400),
                 lambda sd: sd["state"][0].update(step=-1),
                 lambda sd: sd["state"][0].update(step=1.5),
                 lambda sd: sd["param_groups"][0].update(lr=float("nan")),
                 lambda sd: sd["param_groups"][0].update(lr="0.1"),
                 lambda sd: sd["param_groups"][0].update(betas=[0.9]),
                 lambda sd: sd["param_groups"][0].update(initial_lr=float("inf"))):
        bad = adam.state_dict()
        edit(bad)
        with pytest.raises(ValueError, match="Adam.load_state_dict"):
            adam.load_state_dict(bad)
        after = adam.state_dict()
        assert repr(after["param_groups"]) == repr(good["param_groups"])
        assert after["state"][0]["step"] == good["state"][0]["step"]


def test_hyperparameter_messages_name_the_argument():
    p = [Parameter(np.zeros(2))]
    with pytest.raises(ValueError, match=r"Adam: betas must be a pair.*\[0, 1\).*got \(1.0"):
        optim.Adam(p, betas=(1.0, 0.9))
    with pytest.raises(TypeError, match="Adam: betas"):
        optim.Adam(p, betas=0.9)
    with pytest.raises(TypeError, match="SGD: nesterov must be True or False"):
        optim.SGD(p, lr=0.1, nesterov=1)
    opt = optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="SGD: lr"):
        opt.lr = -1.0


@pytest.mark.parametrize("edit,match", [
    (dict(step_size=0), "step_size"), (dict(step_size=2.0), "step_size"),
    (dict(gamma=float("nan")), "gamma"), (dict(gamma=float("inf")), "gamma"),
    (dict(gamma=-1.0), "gamma"), (dict(last_epoch=-2), "last_epoch"),
    (dict(last_epoch="3"), "last_epoch"), (dict(_last_lr=[float("nan")]), "_last_lr"),
    (dict(_last_lr=0.1), "_last_lr"), (dict(_initial=1), "_initial")])
def test_scheduler_load_state_dict_validates_every_field(edit, match):
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.1)
    sched = optim.StepLR(opt, 2, gamma=0.5)
    sched.step()
    before = sched.state_dict()
    bad = dict(before, **edit)
    with pytest.raises(ValueError, match="StepLR.load_state_dict: " + match):
        sched.load_state_dict(bad)
    assert sched.state_dict() == before
