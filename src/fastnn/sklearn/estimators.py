"""`MLPClassifier` and `MLPRegressor`: scikit-learn's estimators of those names, trained
by fastnn.

Same parameters, defaults and meanings as scikit-learn's (``solver="lbfgs"`` aside:
fastnn trains with mini-batches only), same fitted attributes, same loss (including
``alpha``'s L2 term divided by the batch's weight sum), same initialisation, batching,
shuffling, convergence rule and early stopping, drawn from ``random_state`` in the same
order: in float64 a fit follows scikit-learn's step for step. fastnn's extras:
``batch_norm``, ``dropout``, every fastnn activation name and ``class_weight``.

``model_`` is the fitted fastnn `Sequential` (ending in the output layer's logits, in
eval mode); ``coefs_`` / ``intercepts_`` are its Dense weights ((in, out), as
scikit-learn's) and biases, the live arrays.

Pickling stores the network's parameters and the optimizer's state, never workspaces
or recorded kernel programs; unpickling rebuilds them into fresh (writeable) arrays, so
a joblib memory-mapped load trains on.
"""
import math
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from ..core.validation import (Bool, Constraint, InstanceOf, Integer, NoneOr, Options, Real,
                               as_weights, check, check_all)
from .network import (ACTIVATION_NAMES, NetworkSpec, dense_layers, dropout_generators,
                      fastnn_activation, set_dropout_generators)
from .solver import Solver
from .training import Batches, Stepper

__all__ = ["MLPClassifier", "MLPRegressor"]

#: rows per forward call when predicting (bounds the network's scratch memory)
PREDICT_CHUNK = 4096


class _Either(Constraint):
    """A value satisfying any of the given constraints (the first that takes it)."""

    _NONE = object()

    def __init__(self, *options):
        self.options = options

    def describe(self):
        return " or ".join(o.describe() for o in self.options)

    def accepts_type(self, value):
        return any(o.accepts_type(value) for o in self.options)

    def convert(self, value):
        for o in self.options:
            if o.accepts_type(value):
                converted = o.convert(value)
                if o.in_range(converted):
                    return converted
        return self._NONE

    def in_range(self, value):
        return value is not self._NONE


_UNIT = Real(0, 1, closed="left")
#: the hyperparameters every estimator checks at fit: name -> constraint
CONSTRAINTS = {
    "activation": Options(*ACTIVATION_NAMES), "solver": Options("adam", "sgd"),
    "alpha": Real(0), "batch_size": _Either(Options("auto"), Integer(1)),
    "learning_rate": Options("constant", "invscaling", "adaptive"),
    "learning_rate_init": Real(0, closed="neither"), "power_t": Real(0),
    "max_iter": Integer(1), "shuffle": Bool(), "tol": Real(0),
    "verbose": _Either(Bool(), Integer(0)), "warm_start": Bool(), "momentum": Real(0, 1),
    "nesterovs_momentum": Bool(), "early_stopping": Bool(), "validation_fraction": _UNIT,
    "beta_1": _UNIT, "beta_2": _UNIT, "epsilon": Real(0, closed="neither"),
    "n_iter_no_change": _Either(Integer(1), Options(math.inf)), "batch_norm": Bool(),
    "dropout": _UNIT}


def _hidden_sizes(where, sizes):
    """hidden_layer_sizes as a tuple of ints >= 1 (an int is one hidden layer)."""
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        return (check(where, "hidden_layer_sizes", sizes, Integer(1)),)
    return tuple(check(where, "hidden_layer_sizes[%d]" % i, s, Integer(1))
                 for i, s in enumerate(sizes))


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: checks, the training loop, the
    forward pass, pickling. Subclasses define `_validate_input`, `_out_activation`,
    `_targets`, `_row_weights`, `_predict` and `_metric` (the validation score), and may
    override `_n_outputs` and `_stratify`."""

    # ----------------------------------------------------------------- parameters
    def _keep_params(self, params):
        """__init__: store every constructor argument as given (scikit-learn's rule)."""
        for name, value in params.items():
            if name != "self":
                setattr(self, name, value)

    def _checked_params(self):
        where = type(self).__name__
        if self.solver == "lbfgs":
            raise ValueError("%s: solver='lbfgs' is not supported: fastnn trains with "
                             "mini-batches, use solver='adam' or 'sgd' (or scikit-learn's "
                             "own estimator for L-BFGS)" % where)
        kw = check_all(where, CONSTRAINTS, **{k: getattr(self, k) for k in CONSTRAINTS})
        kw["hidden_layer_sizes"] = _hidden_sizes(where, self.hidden_layer_sizes)
        return kw

    # ------------------------------------------------------------------------ fit
    def fit(self, X, y, sample_weight=None):
        """Train on X (n_samples, n_features), dense or sparse, and y; returns self.
        sample_weight (n_samples,): non-negative row weights (None: all ones)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental):
        params = self._checked_params()
        if params["early_stopping"] and incremental:
            raise ValueError("%s: partial_fit does not support early_stopping=True"
                             % type(self).__name__)
        first = not hasattr(self, "model_") or not (self.warm_start or incremental)
        X, y, Y = self._validate_input(X, y, incremental, reset=first)
        weights = self._row_weights(y, sample_weight, X.shape[0], incremental)
        rs = check_random_state(self.random_state)
        n_outputs = self._n_outputs(Y)
        if first:
            dtype = X.dtype
            self._initialize(X.shape[1], params, n_outputs, dtype, rs)
        elif n_outputs != self.n_outputs_:
            raise ValueError("%s: y has %d outputs, the fitted network has %d"
                             % (type(self).__name__, n_outputs, self.n_outputs_))
        dtype = self._network.dtype
        X = X.tocsr() if sp.issparse(X) else np.ascontiguousarray(X, dtype=dtype)
        if weights is not None:
            weights = weights.astype(dtype)
        self._fit_stochastic(X, (y, Y), self._targets(Y, dtype), weights, rs, params,
                             incremental)
        if not all(np.isfinite(p.data).all() for p in self.model_.parameters()):
            raise ValueError("Solver produced non-finite parameter weights. The input data "
                             "may contain large values and need to be preprocessed.")
        return self

    def _initialize(self, n_features, params, n_outputs, dtype, rs):
        """A new network and fresh training records (first fit, or fit without
        warm_start)."""
        self.n_iter_, self.t_ = 0, 0
        self.n_outputs_ = n_outputs
        units = (n_features,) + params["hidden_layer_sizes"] + (n_outputs,)
        self.n_layers_ = len(units)
        self.out_activation_ = self._out_activation()
        self._network = NetworkSpec(units, fastnn_activation(params["activation"]),
                                    params["batch_norm"], params["dropout"], dtype)
        self.model_ = self._network.build(rs)
        self._solver = None
        # early stopping's best parameters so far (scikit-learn starts from the initial ones)
        self._best_state = self.model_.state_dict() if params["early_stopping"] else None
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if params["early_stopping"]:
            self.validation_scores_, self.best_validation_score_ = [], -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = self.best_validation_score_ = None

    def _fit_stochastic(self, X, labels, targets, weights, rs, params, incremental):
        """The epochs of one fit / partial_fit call. labels: (y as given, the targets
        `_validate_input` made: y binarized, or class indices for a multiclass
        classifier) for early stopping's scores and stratification."""
        if not incremental or self._solver is None:
            self._solver = Solver(self.model_.parameters(), self)
        validation = None
        if params["early_stopping"]:
            X, targets, weights, validation = self._split(X, labels, targets, weights, rs,
                                                          params["validation_fraction"])
            if self.validation_scores_ is None:    # warm start after a fit without it
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
                self._best_state = self.model_.state_dict()
        n = X.shape[0]
        batch_size = params["batch_size"]
        if batch_size == "auto":
            batch_size = min(200, n)
        elif batch_size > n:
            warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is "
                          "going to be clipped")
            batch_size = n
        batches = Batches(X, targets, weights, batch_size, self._network.dtype)
        stepper = Stepper(self.model_, self._solver, self.out_activation_, self.n_outputs_,
                          params["alpha"])
        self.model_.train()
        try:
            self._epochs(batches, stepper, rs, params, validation, incremental)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        finally:
            self.model_.eval()
        if params["early_stopping"]:
            self.model_.load_state_dict(self._best_state)

    def _split(self, X, labels, targets, weights, rs, fraction):
        """Early stopping's validation split, as scikit-learn draws it (stratified on
        the binarized labels of a single-output classifier): (X_train, targets_train,
        weights_train, (X_val, y_val, weights_val))."""
        y, binarized = labels
        stratify = binarized if self._stratify() else None
        arrays = [X, targets, y] + ([] if weights is None else [weights])
        parts = train_test_split(*arrays, random_state=rs, test_size=fraction,
                                 stratify=stratify)
        if parts[1].shape[0] < 2:
            raise ValueError("The validation set is too small. Increase "
                             "'validation_fraction' or the size of your dataset.")
        w_train, w_val = (parts[6], parts[7]) if weights is not None else (None, None)
        return parts[0], parts[2], w_train, (parts[1], parts[5], w_val)

    def _epochs(self, batches, stepper, rs, params, validation, incremental):
        order = np.arange(len(batches)) if params["shuffle"] else None
        self.n_iter_ = 0
        for _ in range(params["max_iter"]):
            if order is not None:       # scikit-learn's shuffle: the same draws
                perm = np.arange(len(order))
                rs.shuffle(perm)
                order = order[perm]
            total = 0.0
            for xb, yb, wb in batches.epoch(order):
                total += stepper.step(xb, yb, wb) * xb.shape[0]
            self.n_iter_ += 1
            self.loss_ = total / len(batches)
            self.t_ += len(batches)
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))
            self._track_improvement(validation, params["tol"])
            self._solver.iteration_ends(self.t_)
            if self._no_improvement_count > params["n_iter_no_change"]:
                if self._solver.trigger_stopping(self._stall_message(validation, params),
                                                 self.verbose):
                    break
                self._no_improvement_count = 0
            if incremental:
                break
            if self.n_iter_ == params["max_iter"]:
                warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and "
                              "the optimization hasn't converged yet." % params["max_iter"],
                              ConvergenceWarning)

    def _track_improvement(self, validation, tol):
        """scikit-learn's convergence bookkeeping after an epoch: the validation score
        (early stopping; the best epoch's parameters are kept) or the training loss."""
        if validation is not None:
            score = self._score(*validation)
            self.validation_scores_.append(score)
            if self.verbose:
                print("Validation score: %f" % score)
            stalled = score < self.best_validation_score_ + tol
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_state = self.model_.state_dict()
        else:
            stalled = self.loss_curve_[-1] > self.best_loss_ - tol
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]
        self._no_improvement_count = self._no_improvement_count + 1 if stalled else 0

    @staticmethod
    def _stall_message(validation, params):
        what = ("Validation score did not improve more than" if validation is not None
                else "Training loss did not improve more than")
        return "%s tol=%f for %d consecutive epochs." % (what, params["tol"],
                                                          params["n_iter_no_change"])

    def _stratify(self):
        return False

    def _n_outputs(self, Y):
        """The network's outputs for `_validate_input`'s targets Y."""
        return Y.shape[1]

    # ------------------------------------------------------------------ prediction
    def predict(self, X):
        """Class labels (n_samples,) (a label indicator matrix for multi-label y), or
        the regressor's values (n_samples,) for one output, else (n_samples,
        n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _outputs(self, X, check_input=True):
        """The network's outputs (logits) for X: (n_samples, n_outputs_), in eval mode
        and in chunks of PREDICT_CHUNK rows."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        if sp.issparse(X):
            X = X.tocsr()
        dtype, model = self._network.dtype, self.model_
        out = np.empty((X.shape[0], self.n_outputs_), dtype)
        was_training = model.training
        if was_training:
            model.eval()
        try:
            for start in range(0, X.shape[0], PREDICT_CHUNK):
                xb = X[start:start + PREDICT_CHUNK]
                xb = xb.toarray() if sp.issparse(xb) else xb
                out[start:start + PREDICT_CHUNK] = model._forward(
                    np.ascontiguousarray(xb, dtype=dtype))
        finally:
            if was_training:
                model.train()
        return out

    def _score(self, X, y, sample_weight=None):
        """Early stopping's validation score (the class's `_metric`); NaN when the
        predictions are not finite."""
        pred = self._predict(X, check_input=False)
        if pred.dtype.kind == "f" and not np.isfinite(pred).all():
            return np.nan
        return type(self)._metric(y, pred, sample_weight=sample_weight)

    # --------------------------------------------------------- fitted parameters
    @property
    def coefs_(self):
        """The Dense weights, input to output, each (fan_in, fan_out) (live arrays)."""
        return [layer.weight.data for layer in dense_layers(self._fitted_model())]

    @property
    def intercepts_(self):
        """The Dense biases, input to output, each (fan_out,) (live arrays)."""
        return [layer.bias.data for layer in dense_layers(self._fitted_model())]

    def _fitted_model(self):
        model = self.__dict__.get("model_")
        if model is None:
            raise AttributeError("%s is not fitted yet: it has no coefs_ / intercepts_"
                                 % type(self).__name__)
        return model

    # ------------------------------------------------------------------- pickling
    def __getstate__(self):
        state = dict(super().__getstate__())     # object's may be __dict__ itself
        model = state.pop("model_", None)
        if model is not None:
            state["_model_arrays"] = model.state_dict()
            state["_dropout_generators"] = dropout_generators(model)
        return state

    def __setstate__(self, state):
        arrays = state.pop("_model_arrays", None)
        generators = state.pop("_dropout_generators", None)
        super().__setstate__(state)
        for name, value in list(self.__dict__.items()):
            self.__dict__[name] = _writeable(value)
        if arrays is None:
            return
        model = self._network.build()
        model.load_state_dict(arrays)
        set_dropout_generators(model, generators)
        self.model_ = model.eval()
        if self._solver is not None:
            self._solver.attach(model.parameters())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _writeable(value):
    """An unpickled attribute with writeable arrays (joblib may restore read-only
    memory maps): arrays, and the arrays of dicts and lists, copied when needed."""
    if isinstance(value, np.ndarray):
        return value if value.flags.writeable else np.array(value, copy=True)
    if isinstance(value, dict):
        return {k: _writeable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_writeable(v) for v in value]
    return value


_CLASSIFIER_CONSTRAINTS = {"class_weight": NoneOr(_Either(Options("balanced"),
                                                         InstanceOf(dict, "a dict")))}


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's `MLPClassifier` (multiclass,
    binary and multi-label) trained by fastnn. See the module docstring; fastnn's
    extras: batch_norm (BatchNorm1d after each hidden Dense), dropout (rate after each
    hidden layer), any fastnn activation name, and class_weight (None, "balanced" or
    {class: weight}, multiplying the sample weights as in scikit-learn's linear
    models)."""

    _metric = staticmethod(accuracy_score)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=1e-3, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 batch_norm=False, dropout=0.0, class_weight=None):
        self._keep_params(locals())

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over (X, y); the first call needs `classes` (every class of the
        whole data set) unless y is a multi-label indicator matrix."""
        if classes is not None:
            classes = unique_labels(classes)
        if not hasattr(self, "classes_"):
            binarizer = LabelBinarizer()
            if y is not None and _is_multilabel(y):
                binarizer.fit(y)
            elif classes is None:
                raise ValueError("MLPClassifier.partial_fit: classes must be passed on the "
                                 "first call")
            else:
                binarizer.fit(classes)
            self._label_binarizer, self.classes_ = binarizer, binarizer.classes_
        elif classes is not None and not np.array_equal(classes, self.classes_):
            raise ValueError("MLPClassifier.partial_fit: classes=%r differs from the "
                             "classes of the first call %r" % (classes, self.classes_))
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or not (self.warm_start or incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            seen = unique_labels(y)
            if self.warm_start and not incremental and set(seen) != set(self.classes_):
                raise ValueError("MLPClassifier: warm_start needs y with the classes of the "
                                 "previous fit %r, got %r" % (self.classes_, seen))
            unknown = np.setdiff1d(seen, self.classes_)
            if len(unknown):
                raise ValueError("MLPClassifier: y has classes %r that are not in classes_ "
                                 "%r" % (unknown, self.classes_))
        if self._label_binarizer.y_type_ == "multiclass":
            # the softmax's targets are class indices: encoded as label_binarize finds
            # each label's column, without the (n_samples, n_classes) indicator matrix
            return X, y, np.searchsorted(self._label_binarizer.classes_, y)
        return X, y, self._label_binarizer.transform(y).astype(bool)

    def _n_outputs(self, Y):
        """One output per class for class indices Y (multiclass), else Y's columns."""
        return len(self.classes_) if Y.ndim == 1 else Y.shape[1]

    def _row_weights(self, y, sample_weight, n, incremental):
        weights = None
        if sample_weight is not None:
            weights = as_weights(sample_weight, n, "MLPClassifier.fit")
        class_weight = check("MLPClassifier", "class_weight", self.class_weight,
                             _CLASSIFIER_CONSTRAINTS["class_weight"])
        if class_weight is None:
            return weights
        if incremental and class_weight == "balanced":
            raise ValueError("MLPClassifier.partial_fit: class_weight='balanced' needs the "
                             "whole data set; pass a dict of class weights instead")
        per_row = compute_sample_weight(class_weight, y)
        weights = per_row if weights is None else weights * per_row
        return as_weights(weights, n, "MLPClassifier.fit (sample_weight times class_weight)")

    def _out_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _stratify(self):
        return self.n_outputs_ == 1

    def _targets(self, Y, dtype):
        if self.out_activation_ == "softmax":
            return np.ascontiguousarray(Y, dtype=np.int64)          # class indices
        return np.ascontiguousarray(Y, dtype=dtype)

    def _predict(self, X, check_input=True):
        proba = self._probabilities(X, check_input)
        if self.n_outputs_ == 1:
            proba = proba.ravel()
        return self._label_binarizer.inverse_transform(proba)

    def _probabilities(self, X, check_input=True):
        """softmax (multiclass) or sigmoid (binary, multi-label) of the outputs."""
        out = self._outputs(X, check_input)
        if self.out_activation_ == "softmax":
            out -= out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
            return out
        return _sigmoid(out)

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes) in the order of classes_ (for
        multi-label y: each label's probability, (n_samples, n_labels))."""
        check_is_fitted(self)
        proba = self._probabilities(X)
        if self.n_outputs_ == 1:
            p = proba.ravel()
            return np.vstack([1 - p, p]).T
        return proba

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _is_multilabel(y):
    y = np.asarray(y) if not sp.issparse(y) else y
    return y.ndim == 2 and y.shape[1] > 1


def _sigmoid(z):
    """Logistic function of an array, stable for any value, in place."""
    neg = z < 0
    e = np.exp(-np.abs(z))
    z[...] = np.where(neg, e / (1 + e), 1 / (1 + e))
    return z


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's `MLPRegressor` (loss
    "squared_error", or "poisson": half the Poisson deviance with a log link, y >= 0;
    single or multiple outputs) trained by fastnn; see the module docstring. predict
    returns (n_samples,) for one output, (n_samples, n_outputs) otherwise."""

    _metric = staticmethod(r2_score)

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=1e-4, batch_size="auto", learning_rate="constant",
                 learning_rate_init=1e-3, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 batch_norm=False, dropout=0.0):
        self._keep_params(locals())

    def _checked_params(self):
        check("MLPRegressor", "loss", self.loss, Options("squared_error", "poisson"))
        return super()._checked_params()

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=(np.float64, np.float32), reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError("MLPRegressor: loss='poisson' needs targets y >= 0, got a "
                             "minimum of %r" % float(y.min()))
        return X, y, y.reshape(-1, 1) if y.ndim == 1 else y

    def _row_weights(self, y, sample_weight, n, incremental):
        if sample_weight is None:
            return None
        return as_weights(sample_weight, n, "MLPRegressor.fit")

    def _out_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _targets(self, Y, dtype):
        return np.ascontiguousarray(Y, dtype=dtype)

    def _predict(self, X, check_input=True):
        out = self._outputs(X, check_input)
        if self.out_activation_ == "exp":
            np.exp(out, out=out)
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
