"""Training tools: the `Trainer` loop, its `History`, checkpoints, babysitting
diagnostics, gradient checking and random hyperparameter search."""
from .gradcheck import GradcheckResult, gradcheck
from .history import History
from .trainer import NonFiniteError, Trainer

__all__ = ["Trainer", "History", "NonFiniteError", "gradcheck", "GradcheckResult"]
