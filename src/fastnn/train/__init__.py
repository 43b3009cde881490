"""Training tools: the `Trainer` loop, its `History`, checkpoints, babysitting
diagnostics, gradient checking and random hyperparameter search."""
from .gradcheck import GradcheckResult, gradcheck
from .trainer import History, NonFiniteError, Trainer

__all__ = ["Trainer", "History", "NonFiniteError", "gradcheck", "GradcheckResult"]
