"""Synchronised batch normalisation: BatchNorm over the global batch of all the ranks.

`Trainer(..., distributed=True, sync_batchnorm=True)` hands every BatchNorm layer a
`BatchStats` for the duration of `fit`; in training mode the layer then normalises with
the mean and biased variance of the whole global batch (two small Allreduces: the sum,
then the sum of squared deviations from the global mean, as a one-process layer
computes them), updates its running statistics with them (the unbiased variance over
the global batch), and its backward sums dy and dy * x_hat over the ranks, so every
rank's input gradient is the one-process gradient of its rows. The layer's own
parameter gradients stay this rank's part (the data-parallel gradient sum adds them).
The parameters, running statistics and outputs then equal a one-process run's (to
float tolerance). Eval mode uses the running statistics and talks to no one.
"""
import numpy as np

__all__ = ["BatchStats", "SyncCache"]


class SyncCache:
    """What a synchronised forward keeps for its backward (x_hat, 1 / std per channel,
    gamma, the global count per channel), and that backward."""
    __slots__ = ("stats", "xhat", "inv_std", "gamma", "count")

    def __init__(self, stats, xhat, inv_std, gamma, count):
        self.stats, self.xhat, self.inv_std = stats, xhat, inv_std
        self.gamma, self.count = gamma, count

    def backward(self, layer, dy):
        return self.stats.backward(layer, self, dy)


def _channels(x, c):
    """(the axes reduced per channel, the shape that broadcasts a (c,) vector)."""
    axes = (0,) + tuple(range(2, x.ndim))
    return axes, (1, c) + (1,) * (x.ndim - 2)


class BatchStats:
    """Sums over the ranks of communicator `comm`, for the BatchNorm layers of one
    model (`forward` / `backward` take the layer)."""

    def __init__(self, comm):
        from mpi4py import MPI
        self.comm, self._in_place = comm, MPI.IN_PLACE

    def _sum(self, a):
        """`a` (float64) summed over the ranks, in place."""
        self.comm.Allreduce(self._in_place, a)
        return a

    def forward(self, layer, x, gamma, beta):
        """The training forward of `layer` on this rank's rows x with the global batch's
        statistics; updates the layer's running statistics. Returns (out, SyncCache)."""
        c = layer.num_features
        axes, shape = _channels(x, c)
        head = np.empty(c + 1)
        head[:c] = x.sum(axis=axes, dtype=np.float64)
        head[c] = x.size // c
        self._sum(head)
        count = head[c]
        if count < 2:
            raise layer._error(ValueError, "expected more than 1 value per channel when "
                               "training, got %d over the global batch" % count)
        mean = head[:c] / count
        dev = x - mean.reshape(shape).astype(x.dtype)
        var = self._sum((dev * dev).sum(axis=axes, dtype=np.float64)) / count
        inv_std = 1.0 / np.sqrt(var + layer.eps)
        xhat = dev * inv_std.reshape(shape).astype(x.dtype)
        out = xhat * gamma.reshape(shape) + beta.reshape(shape)
        m = layer.momentum
        layer.running_mean[...] = (1 - m) * layer.running_mean + m * mean
        layer.running_var[...] = (1 - m) * layer.running_var + m * var * count / (count - 1)
        return (np.ascontiguousarray(out, x.dtype),
                SyncCache(self, xhat, inv_std, gamma, count))

    def backward(self, layer, cache, dy):
        """(dx, dgamma, dbeta) of a synchronised forward: dx uses the global sums of dy
        and dy * x_hat; dgamma, dbeta are this rank's parts."""
        c = layer.num_features
        axes, shape = _channels(dy, c)
        sums = np.empty(2 * c)
        dbeta = dy.sum(axis=axes, dtype=np.float64)
        dgamma = (dy * cache.xhat).sum(axis=axes, dtype=np.float64)
        sums[:c], sums[c:] = dbeta, dgamma
        self._sum(sums)
        scale = (cache.gamma * cache.inv_std).reshape(shape)
        dx = scale * (dy - (sums[:c] / cache.count).reshape(shape)
                      - cache.xhat * (sums[c:] / cache.count).reshape(shape))
        return np.ascontiguousarray(dx, dy.dtype), dgamma.astype(dy.dtype), dbeta.astype(dy.dtype)
