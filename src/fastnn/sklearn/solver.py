"""scikit-learn's stochastic solvers ("adam", "sgd" with its learning-rate schedules)
expressed through fastnn's fused optimizers, update for update.

* adam: scikit-learn's step is ``-lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) +
  eps)``; torch's Adam (fastnn.optim.Adam) puts eps inside the bias correction, so each
  step runs it with ``eps / sqrt(1 - b2^t)``, which makes the two identical.
* sgd: scikit-learn keeps a velocity ``v = momentum * v - lr * g`` (Nesterov: the step
  is ``momentum * v - lr * g``); torch's buffer is ``-v / lr``, the same while lr is
  constant. When a schedule changes lr (invscaling, adaptive) the buffer is rescaled by
  old / new lr, so the velocity carries over as in scikit-learn.

A `Solver` is kept between partial_fit calls (and pickled without its optimizer:
`attach` rebuilds that over a restored network's parameters).
"""
import math

from ..optim import SGD, Adam


class Solver:
    """The optimizer of an estimator's network and scikit-learn's schedule state:
    ``learning_rate`` (current), ``steps`` (updates so far: Adam's t)."""

    def __init__(self, params, est):
        self.kind = est.solver
        self.learning_rate_init = float(est.learning_rate_init)
        self.learning_rate = self.learning_rate_init
        self.schedule = est.learning_rate if self.kind == "sgd" else "constant"
        self.power_t = float(est.power_t)
        self.beta_2 = float(est.beta_2)
        self.epsilon = float(est.epsilon)
        self.steps = 0
        self.optimizer = self._make(params, est)

    def _make(self, params, est):
        if self.kind == "adam":
            return Adam(params, lr=self.learning_rate, betas=(est.beta_1, est.beta_2),
                        eps=self.epsilon)
        momentum = float(est.momentum)
        return SGD(params, lr=self.learning_rate, momentum=momentum,
                   nesterov=bool(est.nesterovs_momentum) and momentum > 0)

    def step(self):
        """One update from the parameters' gradients."""
        self.steps += 1
        if self.kind == "adam":
            group = self.optimizer.param_groups[0]
            group["eps"] = self.epsilon / math.sqrt(1.0 - self.beta_2 ** self.steps)
        self.optimizer.step()

    def iteration_ends(self, samples_seen):
        """End of an epoch (`samples_seen`: the estimator's t_): invscaling's decay."""
        if self.schedule == "invscaling":
            self._set_lr(self.learning_rate_init / (samples_seen + 1) ** self.power_t)

    def trigger_stopping(self, message, verbose):
        """No improvement for n_iter_no_change epochs: True to stop; the adaptive
        schedule divides the learning rate by 5 instead, until it is below 1e-6."""
        if self.schedule != "adaptive":
            if verbose:
                print(message + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(message + " Learning rate too small. Stopping.")
            return True
        self._set_lr(self.learning_rate / 5.0)
        if verbose:
            print(message + " Setting learning rate to %f" % self.learning_rate)
        return False

    def _set_lr(self, lr):
        old, self.learning_rate = self.learning_rate, lr
        opt = self.optimizer
        if opt.momentum and old != lr:
            state = opt.state_dict()
            for entry in state["state"].values():
                if "momentum_buffer" in entry:
                    entry["momentum_buffer"] *= old / lr
            opt.load_state_dict(state)
        opt.lr = lr

    # ------------------------------------------------------------------- pickling
    def __getstate__(self):
        state = dict(self.__dict__)
        optimizer = state.pop("optimizer")
        state["optimizer_class"] = type(optimizer)
        state["optimizer_state"] = optimizer.state_dict()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.optimizer = None

    def attach(self, params):
        """After unpickling: the optimizer rebuilt over `params` (the restored
        network's), its saved state loaded (copied: every array writeable)."""
        saved = self.__dict__.pop("optimizer_state")
        cls = self.__dict__.pop("optimizer_class")
        group = saved["param_groups"][0]
        kw = {k: v for k, v in group.items() if k in ("lr", "betas", "eps", "momentum",
                                                       "nesterov")}
        self.optimizer = cls(params, **kw)
        self.optimizer.load_state_dict(saved)
