"""Scratch arrays that layers reuse across steps, so a warm training step allocates nothing."""
import numpy as np

from . import generation as _generation


class Workspace:
    """Named arrays kept while their shape and dtype stay the same.

    `get(key, shape, dtype)` returns the same array on every call with an unchanged
    shape. Each name keeps the arrays of its last two shapes, so alternating batch sizes
    (an epoch's smaller last batch, training and evaluation batches) reallocate nothing
    once both were seen; a third shape replaces the older one. The `None` workspace of the
    functional API (`FRESH`) allocates every time, so results never alias earlier ones.
    """

    def __init__(self):
        self._arrays = {}     # name -> array of the latest shape
        self._spare = {}      # name -> array of the shape before

    def get(self, key, shape, dtype):
        a = self._arrays.get(key)
        if a is not None and a.shape == shape and a.dtype == dtype:
            return a
        b = self._spare.get(key)
        if b is None or b.shape != shape or b.dtype != dtype:
            b = np.empty(shape, dtype)
            _generation.bump()
        if a is not None:
            self._spare[key] = a
        self._arrays[key] = b
        return b

    def bind(self, key, array):
        """Make `get(key, ...)` return `array` (e.g. a Parameter's .grad, written in place)."""
        if self._arrays.get(key) is not array:
            self._arrays[key] = array
            self._spare.pop(key, None)
            _generation.bump()

    def clear(self):
        self._arrays.clear()
        self._spare.clear()
        _generation.bump()

    def arrays(self):
        """Every array held (both shapes of each name)."""
        return list(self._arrays.values()) + list(self._spare.values())

    def nbytes(self):
        return sum(a.nbytes for a in self.arrays())


class _Fresh:
    @staticmethod
    def get(key, shape, dtype):
        return np.empty(shape, dtype)


FRESH = _Fresh()
