"""Scratch arrays that layers reuse across steps, so a warm training step allocates nothing."""
import numpy as np

#: array shapes a workspace keeps per name (the last used ones). Also the number of input
#: shapes a Sequential keeps recorded programs for (fastnn.layers.replay), so a model's
#: memory stays bounded whatever batch sizes it sees: enough for training batches, an
#: epoch's ragged last batch and evaluation batches of two sizes, all without allocating.
SHAPES_KEPT = 4


class Workspace:
    """Named arrays kept while their shape and dtype are in use.

    `get(key, shape, dtype)` returns the same array on every call with the same shape
    and dtype. Each name keeps the arrays of its last `SHAPES_KEPT` shapes (least
    recently used dropped first), so alternating batch sizes (an epoch's smaller last
    batch, training and evaluation batches) reallocate nothing once each was seen. The
    `None` workspace of the functional API (`FRESH`) allocates every time, so results
    never alias earlier ones.
    """

    def __init__(self):
        self._arrays = {}     # name -> [arrays], most recently used first

    def get(self, key, shape, dtype):
        arrays = self._arrays.get(key)
        if arrays is None:
            arrays = self._arrays[key] = []
        else:
            a = arrays[0]
            if a.shape == shape and a.dtype == dtype:
                return a
            for i in range(1, len(arrays)):
                a = arrays[i]
                if a.shape == shape and a.dtype == dtype:
                    arrays.insert(0, arrays.pop(i))
                    return a
        a = np.empty(shape, dtype)
        arrays.insert(0, a)
        del arrays[SHAPES_KEPT:]
        return a

    def bind(self, key, array):
        """Make `get(key, ...)` return `array` (e.g. a Parameter's .grad, written in place)."""
        arrays = self._arrays.get(key)
        if arrays is None or len(arrays) != 1 or arrays[0] is not array:
            self._arrays[key] = [array]

    def clear(self):
        self._arrays.clear()

    def arrays(self):
        """Every array held (every kept shape of each name)."""
        return [a for arrays in self._arrays.values() for a in arrays]

    def nbytes(self):
        return sum(a.nbytes for a in self.arrays())


class _Fresh:
    @staticmethod
    def get(key, shape, dtype):
        return np.empty(shape, dtype)


FRESH = _Fresh()
