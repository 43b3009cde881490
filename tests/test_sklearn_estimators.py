"""fastnn.sklearn: scikit-learn's own estimator checks, step-for-step agreement with
scikit-learn's MLPs in float64, accuracy on real data, pickling (joblib memory maps,
GridSearchCV with workers), the fastnn extras and error messages."""
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import joblib  # noqa: E402  (installed with scikit-learn)
import scipy.sparse as sp  # noqa: E402
from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import (load_breast_cancer, load_diabetes, load_digits,  # noqa: E402
                              make_classification, make_multilabel_classification,
                              make_regression)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import recall_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn.layers import BatchNorm1d, Dense, Dropout, Sequential, Tanh  # noqa: E402
from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _digits(n=600):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16.0, y[:n]


def _pair(fastnn_cls, sklearn_cls, X, y, sample_weight=None, **params):
    a = fastnn_cls(random_state=0, **params).fit(X, y, sample_weight=sample_weight)
    b = sklearn_cls(random_state=0, **params).fit(X, y, sample_weight=sample_weight)
    return a, b


def _assert_same_fit(a, b, rtol=1e-7):
    assert a.n_iter_ == b.n_iter_ and a.t_ == b.t_
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=rtol)
    for mine, theirs in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=rtol)
    assert a.out_activation_ == b.out_activation_ and a.n_layers_ == b.n_layers_
    assert a.n_outputs_ == b.n_outputs_


# ------------------------------------------------ step for step against scikit-learn
@pytest.mark.parametrize("params", [
    dict(hidden_layer_sizes=(32, 16), max_iter=6, alpha=1e-2),
    dict(hidden_layer_sizes=(20,), activation="tanh", solver="sgd", learning_rate="invscaling",
         learning_rate_init=0.1, max_iter=5),
    dict(hidden_layer_sizes=(20,), activation="logistic", solver="sgd", momentum=0.5,
         nesterovs_momentum=False, batch_size=64, max_iter=5),
    dict(hidden_layer_sizes=(), activation="identity", shuffle=False, max_iter=4),
    dict(hidden_layer_sizes=(24,), early_stopping=True, max_iter=8, validation_fraction=0.2),
    dict(hidden_layer_sizes=(24,), solver="sgd", learning_rate="adaptive", tol=10.0,
         n_iter_no_change=1, max_iter=9),
])
def test_classifier_follows_sklearn_step_for_step(params, backend):
    X, y = _digits()
    a, b = _pair(MLPClassifier, sk.MLPClassifier, X, y, **params)
    _assert_same_fit(a, b)
    if params.get("early_stopping"):
        np.testing.assert_allclose(a.validation_scores_, b.validation_scores_)
        assert a.best_validation_score_ == b.best_validation_score_
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_binary_multilabel_and_weighted_follow_sklearn():
    X, y = make_classification(300, 12, random_state=1)
    yb = np.where(y == 1, "yes", "no")
    w = np.random.default_rng(0).uniform(0.2, 3.0, len(y))
    a, b = _pair(MLPClassifier, sk.MLPClassifier, X, yb, sample_weight=w, max_iter=5,
                 hidden_layer_sizes=(16,))
    _assert_same_fit(a, b)
    assert list(a.classes_) == ["no", "yes"] and a.predict_proba(X).shape == (300, 2)
    Xm, Ym = make_multilabel_classification(200, 10, n_classes=4, random_state=0)
    a, b = _pair(MLPClassifier, sk.MLPClassifier, Xm, Ym, max_iter=5, hidden_layer_sizes=(16,))
    _assert_same_fit(a, b)
    np.testing.assert_array_equal(a.predict(Xm), b.predict(Xm))


@pytest.mark.parametrize("n_targets", [1, 3])
def test_regressor_follows_sklearn_step_for_step(n_targets):
    X, y = make_regression(250, 8, n_targets=n_targets, noise=0.1, random_state=0)
    y = y / y.std()
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    for weights in (None, w):
        a, b = _pair(MLPRegressor, sk.MLPRegressor, X, y, sample_weight=weights, max_iter=6,
                     hidden_layer_sizes=(16,), solver="sgd", learning_rate_init=0.01)
        _assert_same_fit(a, b)
        assert a.predict(X).shape == y.shape


def test_poisson_regressor_follows_sklearn():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 5))
    y = rng.poisson(np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1]), (3, 200)).T.astype(float)
    w = rng.uniform(0.5, 2.0, 200)
    for target, weights in ((y[:, 0], None), (y, w)):
        a, b = _pair(MLPRegressor, sk.MLPRegressor, X, target, sample_weight=weights,
                     loss="poisson", hidden_layer_sizes=(8,), max_iter=5,
                     learning_rate_init=0.01)
        _assert_same_fit(a, b)
        np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-7)


def test_partial_fit_and_warm_start_follow_sklearn():
    X, y = _digits(300)
    a = MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    b = sk.MLPClassifier(hidden_layer_sizes=(16,), random_state=0)
    for _ in range(3):
        a.partial_fit(X, y, classes=np.arange(10))
        b.partial_fit(X, y, classes=np.arange(10))
    _assert_same_fit(a, b)
    a.set_params(warm_start=True, max_iter=2).fit(X, y)
    b.set_params(warm_start=True, max_iter=2).fit(X, y)
    _assert_same_fit(a, b)
    assert a.t_ == 5 * 300


# ------------------------------------------------------------------ real data
def _holdout(est, X, y, seed=0):
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed)
    scaler = StandardScaler().fit(Xtr)
    return est.fit(scaler.transform(Xtr), ytr).score(scaler.transform(Xte), yte)


@pytest.mark.parametrize("dataset", ["digits", "breast_cancer", "diabetes"])
def test_real_data_as_good_as_sklearn(dataset):
    loader = {"digits": load_digits, "breast_cancer": load_breast_cancer,
              "diabetes": load_diabetes}[dataset]
    X, y = loader(return_X_y=True)
    if dataset == "diabetes":
        params = dict(hidden_layer_sizes=(16,), early_stopping=True, learning_rate_init=0.01,
                      max_iter=300)
        y = (y - y.mean()) / y.std()
        mine = _holdout(MLPRegressor(random_state=0, **params), X, y)
        theirs = _holdout(sk.MLPRegressor(random_state=0, **params), X, y)
        assert mine > 0.3
    else:
        params = dict(hidden_layer_sizes=(64,), max_iter=60)
        mine = _holdout(MLPClassifier(random_state=0, **params), X, y)
        theirs = _holdout(sk.MLPClassifier(random_state=0, **params), X, y)
        assert mine > 0.9
    assert mine >= theirs - 0.02


def test_float32_input_trains_in_float32():
    X, y = _digits(300)
    clf = MLPClassifier(hidden_layer_sizes=(16,), batch_size=32, max_iter=30, random_state=0)
    clf.fit(X.astype(np.float32), y)
    assert clf.model_.dtype == np.float32 and clf.coefs_[0].dtype == np.float32
    assert clf.predict_proba(X).dtype == np.float32 and clf.score(X, y) > 0.8


# --------------------------------------------------------------------- pickling
def _fitted(**kw):
    X, y = _digits(300)
    return MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0, **kw).fit(X, y), X, y


def test_pickle_holds_no_scratch_and_training_continues_identically():
    clf, X, y = _fitted()
    data = pickle.dumps(clf)
    n_param_bytes = sum(p.data.nbytes for p in clf.model_.parameters())
    # parameters + Adam's two moments, with some room for the rest: no workspaces
    assert len(data) < 3 * n_param_bytes + 50_000
    clone = pickle.loads(data)
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
    clf.partial_fit(X, y)
    clone.partial_fit(X, y)
    for mine, theirs in zip(clone.coefs_, clf.coefs_):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("extras", [{}, {"batch_norm": True, "dropout": 0.2}])
def test_joblib_memory_mapped_load_is_writeable_and_trains(tmp_path, extras):
    clf, X, y = _fitted(**extras)
    path = tmp_path / "clf.joblib"
    joblib.dump(clf, path)
    loaded = joblib.load(path, mmap_mode="r")
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    arrays = [p.data for p in loaded.model_.parameters()] + [loaded.classes_]
    arrays += [b for _, b in loaded.model_.named_buffers()]
    state = loaded._solver.optimizer.state_dict()["state"]
    arrays += [v for s in state.values() for v in s.values() if isinstance(v, np.ndarray)]
    assert all(isinstance(a, np.ndarray) and not isinstance(a, np.memmap)
               and a.flags.writeable for a in arrays)
    loaded.partial_fit(X, y)
    clf.partial_fit(X, y)
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_pipeline_grid_search_with_two_workers():
    X, y = _digits(400)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(batch_size=32, max_iter=30,
                                                         random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(16,), (32,)],
                               "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=2, n_jobs=2)
    grid.fit(X, y)
    assert grid.best_score_ > 0.8
    assert isinstance(grid.best_estimator_[-1].model_, Sequential)


# ---------------------------------------------------------------- fastnn extras
def test_class_weight_balanced_raises_minority_recall():
    X, y = make_classification(600, 10, weights=[0.92], flip_y=0.05, class_sep=0.5,
                               random_state=3)
    plain = MLPClassifier(hidden_layer_sizes=(16,), max_iter=40, random_state=0).fit(X, y)
    balanced = MLPClassifier(hidden_layer_sizes=(16,), max_iter=40, random_state=0,
                             class_weight="balanced").fit(X, y)
    assert recall_score(y, balanced.predict(X)) > recall_score(y, plain.predict(X)) + 0.1


def test_class_weight_dict_equals_sample_weight():
    X, y = _digits(200)
    w = np.where(y == 3, 5.0, 1.0)
    a = MLPClassifier(max_iter=3, random_state=0, class_weight={3: 5.0}).fit(X, y)
    b = MLPClassifier(max_iter=3, random_state=0).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])


def test_batch_norm_dropout_and_activations():
    X, y = _digits(300)
    extras = dict(hidden_layer_sizes=(32, 16), activation="tanh", batch_norm=True,
                  dropout=0.1, batch_size=32, max_iter=20, random_state=0)
    clf = MLPClassifier(**extras).fit(X, y)
    kinds = [type(m) for m in clf.model_]
    assert kinds == [Dense, BatchNorm1d, Tanh, Dropout, Dense, BatchNorm1d, Tanh, Dropout,
                     Dense]
    assert not clf.model_.training and clf.score(X, y) > 0.8
    again = MLPClassifier(**extras).fit(X, y)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    for name in ("gelu", "silu", "elu", "leaky_relu", "swish", "sigmoid"):
        assert MLPClassifier(hidden_layer_sizes=(16,), activation=name, batch_size=32,
                             learning_rate_init=0.01, max_iter=10,
                             random_state=0).fit(X, y).score(X, y) > 0.8


def test_sparse_input_equals_dense():
    X, y = _digits(300)
    X[X < 0.3] = 0
    dense = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y)
    sparse = MLPClassifier(hidden_layer_sizes=(16,), max_iter=5, random_state=0)
    sparse.fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.coefs_[0], dense.coefs_[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sparse.predict_proba(sp.csc_matrix(X)), dense.predict_proba(X),
                               rtol=1e-10)


def test_model_is_the_fitted_network():
    X, y = _digits(200)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).fit(X, y)
    logits = clf.model_(X)
    np.testing.assert_allclose(np.exp(logits) / np.exp(logits).sum(1, keepdims=True),
                               clf.predict_proba(X), rtol=1e-10)
    assert clf.coefs_[0] is clf.model_[0].weight.data and clf.coefs_[0].shape == (64, 8)


# ------------------------------------------------------------------------ errors
def test_errors_are_clear():
    X, y = _digits(100)
    with pytest.raises(ValueError, match="lbfgs.*not supported"):
        MLPClassifier(solver="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="MLPClassifier: alpha must be"):
        MLPClassifier(alpha=-1.0).fit(X, y)
    with pytest.raises(TypeError, match="MLPClassifier: shuffle must be True or False"):
        MLPClassifier(shuffle="yes").fit(X, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes\\[1\\] must be an int >= 1"):
        MLPClassifier(hidden_layer_sizes=(4, 0)).fit(X, y)
    with pytest.raises(ValueError, match="activation must be one of"):
        MLPClassifier(activation="softplus").fit(X, y)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier().partial_fit(X, y)
    with pytest.raises(ValueError, match="early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.arange(10))
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        MLPClassifier(max_iter=1).fit(X, y, sample_weight=-np.ones(len(y)))
    with pytest.raises(ValueError, match="balanced"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=np.arange(10))
    with pytest.raises(ValueError, match="loss must be one of 'squared_error', 'poisson'"):
        MLPRegressor(loss="huber").fit(X, y.astype(float))
    with pytest.raises(ValueError, match="poisson.*y >= 0"):
        MLPRegressor(loss="poisson").fit(X, y - 1.0)
    clf = MLPClassifier(max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="classes .* not in classes_"):
        clf.partial_fit(X, y + 20)


def test_max_iter_warns_convergence():
    X, y = _digits(100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning, match="Maximum iterations \\(2\\)"):
            MLPClassifier(max_iter=2, random_state=0).fit(X, y)
