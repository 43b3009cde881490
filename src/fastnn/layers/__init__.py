"""Layers: Module / Parameter (base.py: the workspace and copy semantics of
forward/backward, the facts each layer states), Sequential and the built-in layers."""
from . import activations
from .activations import *  # noqa: F401,F403  (one layer per activation-table row, PReLU)
from .base import Module, Parameter
from .conv import Conv2d
from .dense import Dense, Maxout
from .dropout import Dropout
from .normalization import BatchNorm1d, BatchNorm2d
from .pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .residual import Residual
from .sequential import Sequential
from .shape import Flatten

__all__ = ["Parameter", "Module", "Sequential", "Dense", "Maxout", "BatchNorm1d",
           "Dropout", "Flatten", "Conv2d", "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
           "BatchNorm2d", "Residual"] + activations.__all__
