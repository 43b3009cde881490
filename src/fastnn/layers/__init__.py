"""Layers: Module / Parameter (base.py: the workspace and copy semantics of
forward/backward, the facts each layer states), Sequential and the built-in layers."""
from .activations import ELU, GELU, PReLU, ReLU, LeakyReLU, Sigmoid, SiLU, Swish, Tanh
from .base import Module, Parameter
from .dense import Dense, Maxout
from .dropout import Dropout
from .normalization import BatchNorm1d
from .sequential import Sequential
from .shape import Flatten

__all__ = ["Parameter", "Module", "Sequential", "Dense", "Maxout", "Sigmoid", "Tanh",
           "ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Swish", "PReLU", "BatchNorm1d",
           "Dropout", "Flatten"]
