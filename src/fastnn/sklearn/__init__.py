"""scikit-learn estimators backed by fastnn: `MLPClassifier` and `MLPRegressor`,
drop-in replacements for scikit-learn's classes of the same names (the optional
``fastnn[sklearn]`` extra: scikit-learn must be installed).

>>> from sklearn.datasets import load_iris
>>> from fastnn.sklearn import MLPClassifier
>>> X, y = load_iris(return_X_y=True)
>>> clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X, y)
>>> clf.score(X, y) > 0.9
True
"""
try:
    import sklearn  # noqa: F401  (the extra's one requirement, checked up front)
except ImportError as exc:          # pragma: no cover - depends on the environment
    raise ImportError("fastnn.sklearn needs scikit-learn: pip install 'fastnn[sklearn]'"
                      ) from exc

from .estimators import MLPClassifier, MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
