"""Optimizers, learning-rate schedulers and gradient clipping (torch.optim's API)."""
from .clip import clip_grad_norm
from .optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from .schedulers import CosineAnnealingLR, ExponentialLR, LRScheduler, StepLR

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "LRScheduler",
           "StepLR", "ExponentialLR", "CosineAnnealingLR", "clip_grad_norm"]
