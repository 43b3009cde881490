"""Scratch arrays that layers reuse across steps, so a warm training step allocates nothing."""
import numpy as np


class Workspace:
    """Named arrays kept while their shape and dtype stay the same.

    `get(key, shape, dtype)` returns the same array on every call with an unchanged
    shape; a new batch size reallocates once. The `None` workspace of the functional
    API (`FRESH`) allocates every time, so results never alias earlier ones.
    """

    def __init__(self):
        self._arrays = {}

    def get(self, key, shape, dtype):
        a = self._arrays.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = np.empty(shape, dtype)
            self._arrays[key] = a
        return a

    def bind(self, key, array):
        """Make `get(key, ...)` return `array` (e.g. a Parameter's .grad, written in place)."""
        self._arrays[key] = array

    def clear(self):
        self._arrays.clear()

    def nbytes(self):
        return sum(a.nbytes for a in self._arrays.values())


class _Fresh:
    @staticmethod
    def get(key, shape, dtype):
        return np.empty(shape, dtype)


FRESH = _Fresh()
