"""Random search: seeded reproducibility, better-than-bad learning rates, halving."""
import numpy as np
import pytest

from fastnn.core import rng as _random
from fastnn import data, optim
from fastnn.layers import Dense, ReLU, Sequential
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.train.search import (SearchResults, choice, loguniform, randint, random_search, sample, uniform)
from fastnn.train.trainer import Trainer


@pytest.fixture(scope="module")
def spirals():
    X, y = data.make_spirals(100, 3, rng=0)
    return data.train_val_split(X, y, 0.25, stratify=True, rng=0)


def build(lr, weight_decay=0.0, width=48):
    model = Sequential(Dense(2, width), ReLU(), Dense(width, 3))
    return model, SoftmaxCrossEntropy(), optim.SGD(model.parameters(), lr=lr, momentum=0.9,
                                                    weight_decay=weight_decay)


SPACE = {"lr": loguniform(1e-4, 1.0), "weight_decay": loguniform(1e-6, 1e-3),
         "width": choice([32, 48])}


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_seeded_search_is_reproducible(spirals):
    Xtr, Xva, ytr, yva = spirals
    a = random_search(build, SPACE, Xtr, ytr, Xva, yva, n_trials=4, epochs=3, seed=1)
    b = random_search(build, SPACE, Xtr, ytr, Xva, yva, n_trials=4, epochs=3, seed=1)
    c = random_search(build, SPACE, Xtr, ytr, Xva, yva, n_trials=4, epochs=3, seed=2)
    assert _strip(a) == _strip(b)
    assert [r["lr"] for r in a] != [r["lr"] for r in c]
    assert isinstance(a, SearchResults) and len(a) == 4
    assert [r["rank"] for r in a] == [1, 2, 3, 4]
    assert sorted(r["trial"] for r in a) == [0, 1, 2, 3]
    scores = [(r["val_accuracy"], -r["val_loss"]) for r in a]
    assert scores == sorted(scores, reverse=True)
    assert a.best is a[0] and a.best_params == {k: a[0][k] for k in SPACE}
    assert a.best_model is not None


def test_search_beats_a_bad_fixed_learning_rate(spirals):
    Xtr, Xva, ytr, yva = spirals
    res = random_search(build, {"lr": loguniform(1e-3, 0.3)}, Xtr, ytr, Xva, yva,
                        n_trials=6, epochs=15, batch_size=32, seed=0)
    _random.seed(0)
    model, loss, opt = build(lr=1e-5)
    bad = Trainer(model, loss, opt, verbose=0)
    bad.fit(Xtr, ytr, epochs=15, batch_size=32, seed=0)
    bad_acc = bad.evaluate(Xva, yva)["accuracy"]
    assert res.best["val_accuracy"] > bad_acc + 0.2
    assert res.best["lr"] > 1e-2
    # the best model really is the trained one
    tr = Trainer(res.best_model, SoftmaxCrossEntropy(), optim.SGD(res.best_model.parameters(),
                                                                  lr=0.1), verbose=0)
    assert tr.evaluate(Xva, yva)["accuracy"] == pytest.approx(res.best["val_accuracy"])


def test_successive_halving(spirals):
    Xtr, Xva, ytr, yva = spirals
    res = random_search(build, SPACE, Xtr, ytr, Xva, yva, n_trials=9, epochs=9, seed=0,
                        halving=True, eta=3)
    full = [r for r in res if r["status"] == "ok"]
    stopped = [r for r in res if r["status"].startswith("stopped@")]
    assert len(full) == 1 and full[0]["epochs"] == 9 and res[0] is full[0]
    assert sorted(r["epochs"] for r in stopped) == [1] * 6 + [3] * 2
    assert [r["status"] for r in res[1:3]] == ["stopped@3", "stopped@3"]
    total = sum(r["epochs"] for r in res)
    assert total == 6 + 2 * 3 + 9 < 9 * 9
    text = str(res)
    assert "stopped@1" in text and "val_accuracy" in text.splitlines()[0]


def test_diverging_trials_rank_last(spirals):
    Xtr, Xva, ytr, yva = spirals
    res = random_search(build, {"lr": choice([1e12, 0.1])}, Xtr, ytr, Xva, yva, n_trials=4,
                        epochs=2, seed=3)
    statuses = [r["status"] for r in res]
    assert "diverged" in statuses and "ok" in statuses
    first_div = statuses.index("diverged")
    assert all(s == "diverged" for s in statuses[first_div:])
    assert all(r["lr"] == 1e12 for r in res if r["status"] == "diverged")


def test_build_fn_may_return_a_trainer(spirals):
    Xtr, Xva, ytr, yva = spirals

    def build_trainer(lr):
        model, loss, opt = build(lr)
        return Trainer(model, loss, opt, verbose=1)       # verbosity is turned off

    res = random_search(build_trainer, {"lr": 0.05}, Xtr, ytr, Xva, yva, n_trials=2, epochs=1)
    assert [r["lr"] for r in res] == [0.05, 0.05]


def test_specs_and_bad_arguments():
    rng = np.random.default_rng(0)
    draws = [sample({"a": loguniform(1e-4, 1e-1), "b": uniform(-1, 1), "c": randint(2, 4),
                     "d": choice(["x", "y"]), "e": 7}, rng) for _ in range(200)]
    a = np.array([d["a"] for d in draws])
    assert a.min() >= 1e-4 and a.max() <= 1e-1
    assert np.mean(np.log10(a) < -2.5) == pytest.approx(0.5, abs=0.1)   # log-uniform
    assert all(-1 <= d["b"] <= 1 for d in draws)
    assert {d["c"] for d in draws} == {2, 3, 4} and {d["d"] for d in draws} == {"x", "y"}
    assert all(d["e"] == 7 for d in draws)
    with pytest.raises(ValueError):
        loguniform(0, 1)
    with pytest.raises(ValueError):
        uniform(2, 1)
    with pytest.raises(ValueError):
        choice([])
    with pytest.raises(TypeError):
        sample([("lr", 1)], rng)
    X = np.zeros((4, 2), np.float32)
    y = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="n_trials"):
        random_search(build, {"lr": 0.1}, X, y, X, y, n_trials=0)
    with pytest.raises(TypeError, match="build_fn must return"):
        random_search(lambda lr: None, {"lr": 0.1}, X, y, X, y, n_trials=1, epochs=1)


def test_sample_takes_a_seed_a_generator_or_nothing():
    space = {"lr": loguniform(1e-4, 1.0), "width": choice([32, 64]), "fixed": 3}
    by_seed = sample(space, 7)
    assert by_seed == sample(space, np.random.default_rng(7))
    assert by_seed["fixed"] == 3 and by_seed["width"] in (32, 64)
    assert set(sample(space)) == {"lr", "width", "fixed"}      # fastnn's global generator
    with pytest.raises(TypeError, match="sample: rng"):
        sample(space, "seed")
