"""Layers: Module / Parameter / Sequential and the built-in layers (see base.py for the
workspace and copy semantics of forward/backward)."""
from . import activations
from .activations import *  # noqa: F401,F403  (one layer per activation-table row, PReLU)
from .base import Module, Parameter, Sequential
from .dense import Dense, Maxout
from .dropout import Dropout
from .normalization import BatchNorm1d
from .shape import Flatten

__all__ = ["Parameter", "Module", "Sequential", "Dense", "Maxout", "BatchNorm1d",
           "Dropout", "Flatten"] + activations.__all__
