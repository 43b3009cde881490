"""Feature preprocessing: per-feature standardisation and PCA whitening."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["Standardize", "PCAWhiten"]


def _float_out(X):
    """Output dtype: X's dtype if floating, float64 otherwise."""
    return X.dtype if np.issubdtype(X.dtype, np.floating) else np.dtype(np.float64)


def _check_eps(eps, owner):
    if not isinstance(eps, numbers.Real) or isinstance(eps, (bool, np.bool_)):
        raise TypeError(f"{owner}: expected eps to be a float, got {type(eps).__name__}")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"{owner}: expected a finite eps > 0, got {eps}")
    return float(eps)


def _numeric(X, name, min_ndim, func):
    X = np.asarray(X)
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise TypeError(f"{func}: expected a numeric array, got dtype {X.dtype}")
    if X.ndim < min_ndim:
        raise ValueError(
            f"{func}: expected {name} with at least {min_ndim} dims (N, D...), got shape {X.shape}"
        )
    return X


class Standardize:
    """Per-feature standardisation ``(X - mean_) / std_``.

    Statistics are taken over axis 0, so X has shape (N, D) or (N, *F) and
    ``mean_``/``std_`` have shape (D,) or F. Features whose standard deviation
    is below ``eps`` (e.g. always-blank border pixels) are treated as constant:
    their ``std_`` is set to 1, so they are centred but never divided by ~0
    (flooring at eps would scale an unseen value by 1/eps).
    """

    def __init__(self, eps=1e-8):
        self.eps = _check_eps(eps, "Standardize")
        self.mean_ = None
        self.std_ = None

    def fit(self, X):
        """Compute ``mean_`` and ``std_`` from X of shape (N, ...), N >= 1. Returns self."""
        X = _numeric(X, "X", 2, "Standardize.fit")
        if len(X) == 0:
            raise ValueError("Standardize.fit: expected at least one sample, got shape "
                             f"{X.shape}")
        X64 = X.astype(np.float64, copy=False)
        mean = X64.mean(axis=0)
        std = X64.std(axis=0)
        self.mean_ = mean
        self.std_ = np.where(std < self.eps, 1.0, std)
        return self

    def _check(self, X, func):
        if self.mean_ is None:
            raise RuntimeError(f"{func}: Standardize is not fitted; call fit(X) first")
        X = _numeric(X, "X", 2, func)
        if X.shape[1:] != self.mean_.shape:
            raise ValueError(
                f"{func}: expected samples of shape {self.mean_.shape} (as in fit), "
                f"got X of shape {X.shape}"
            )
        return X

    def transform(self, X):
        """Return ``(X - mean_) / std_``, same shape as X (float; X's dtype if floating)."""
        X = self._check(X, "Standardize.transform")
        return ((X - self.mean_) / self.std_).astype(_float_out(X), copy=False)

    def fit_transform(self, X):
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Z):
        """Return ``Z * std_ + mean_``, same shape as Z."""
        Z = self._check(Z, "Standardize.inverse_transform")
        return (Z * self.std_ + self.mean_).astype(_float_out(Z), copy=False)

    def state_dict(self):
        """Plain-array state: ``{"mean": ndarray, "std": ndarray, "eps": 0-d ndarray}``."""
        if self.mean_ is None:
            raise RuntimeError("Standardize.state_dict: Standardize is not fitted")
        return {"mean": self.mean_.copy(), "std": self.std_.copy(),
                "eps": np.asarray(self.eps, dtype=np.float64)}

    @classmethod
    def from_state_dict(cls, state):
        """Rebuild a fitted Standardize from ``state_dict()`` output (e.g. loaded from npz)."""
        func = "Standardize.from_state_dict"
        missing = {"mean", "std", "eps"} - set(state)
        if missing:
            raise ValueError(f"{func}: expected keys mean, std, eps; missing {sorted(missing)}")
        mean = np.asarray(state["mean"], dtype=np.float64)
        std = np.asarray(state["std"], dtype=np.float64)
        if mean.shape != std.shape:
            raise ValueError(
                f"{func}: expected mean and std of equal shape, got {mean.shape} and {std.shape}"
            )
        if not np.all(std > 0):
            raise ValueError(f"{func}: expected std > 0 everywhere")
        obj = cls(eps=float(np.asarray(state["eps"])))
        obj.mean_, obj.std_ = mean.copy(), std.copy()
        return obj


class PCAWhiten:
    """PCA projection with optional whitening (cs231n style).

    ``fit`` centres X of shape (N, D), forms the covariance ``Xc.T @ Xc / N``
    and eigendecomposes it. ``components_`` (K, D) holds the eigenvectors in
    order of decreasing variance ``explained_variance_`` (K,), each signed so
    that its largest-magnitude entry is positive. ``transform`` returns
    ``(X - mean_) @ components_.T`` of shape (N, K), divided by
    ``sqrt(explained_variance_ + eps)`` when ``whiten``.
    """

    def __init__(self, n_components=None, eps=1e-5, whiten=True):
        if n_components is not None:
            if not isinstance(n_components, numbers.Integral) or isinstance(
                    n_components, (bool, np.bool_)):
                raise TypeError("PCAWhiten: expected n_components to be an int or None, "
                                f"got {type(n_components).__name__}")
            if n_components <= 0:
                raise ValueError(f"PCAWhiten: expected n_components >= 1, got {n_components}")
            n_components = int(n_components)
        self.n_components = n_components
        self.eps = _check_eps(eps, "PCAWhiten")
        self.whiten = bool(whiten)
        self.mean_ = None
        self.components_ = None
        self.explained_variance_ = None

    def fit(self, X):
        """Fit on X of shape (N, D), N >= 1. Returns self."""
        func = "PCAWhiten.fit"
        X = _numeric(X, "X", 2, func)
        if X.ndim != 2 or len(X) == 0:
            raise ValueError(f"{func}: expected X of shape (N, D) with N >= 1, got {X.shape}")
        d = X.shape[1]
        k = d if self.n_components is None else self.n_components
        if k > d:
            raise ValueError(f"{func}: expected n_components <= {d} features, got {k}")
        X64 = X.astype(np.float64, copy=False)
        mean = X64.mean(axis=0)
        Xc = X64 - mean
        cov = Xc.T @ Xc / len(X)
        evals, evecs = np.linalg.eigh(cov)  # ascending
        order = np.argsort(evals)[::-1][:k]
        evals = np.clip(evals[order], 0.0, None)
        comps = evecs[:, order].T  # (K, D)
        rows = np.arange(k)
        signs = np.sign(comps[rows, np.argmax(np.abs(comps), axis=1)])
        signs[signs == 0] = 1.0
        self.mean_ = mean
        self.components_ = comps * signs[:, None]
        self.explained_variance_ = evals
        return self

    def _scale(self):
        return np.sqrt(self.explained_variance_ + self.eps) if self.whiten else 1.0

    def _check(self, X, inverse, func):
        if self.mean_ is None:
            raise RuntimeError(f"{func}: PCAWhiten is not fitted; call fit(X) first")
        width = self.components_.shape[0 if inverse else 1]
        X = _numeric(X, "X", 2, func)
        if X.ndim != 2 or X.shape[1] != width:
            raise ValueError(f"{func}: expected X of shape (N, {width}), got {X.shape}")
        return X

    def transform(self, X):
        """Project X of shape (N, D) to shape (N, K) (whitened if ``whiten``)."""
        X = self._check(X, False, "PCAWhiten.transform")
        Z = (X - self.mean_) @ self.components_.T / self._scale()
        return Z.astype(_float_out(X), copy=False)

    def fit_transform(self, X):
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Z):
        """Map Z of shape (N, K) back to shape (N, D) (exact when K == D)."""
        Z = self._check(Z, True, "PCAWhiten.inverse_transform")
        X = (Z * self._scale()) @ self.components_ + self.mean_
        return X.astype(_float_out(Z), copy=False)
