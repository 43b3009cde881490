"""Version stamps: how a recorded kernel program (`fastnn.layers.replay`) knows it is stale.

Each object a recording depends on carries a *stamp*, a small int64 array that changes
whenever the object changes in a way that could change the recorded kernel calls:

* a Module's stamp ``[changes, training]``: attribute assignments (a hyperparameter, a
  Parameter, a submodule), `.to()`, a registered buffer bump ``changes``; ``training``
  mirrors its train/eval mode, so switching modes back and forth makes a recording of
  the earlier mode current again;
* a Parameter's stamp ``[changes]``: its arrays rebound (`.to()`, an optimizer moving it
  into its flat buffer).

A program keeps the stamps of the model it was recorded from (the Sequential, its
layers and their parameters) with their values at recording, and replays only while
all are equal and so is the process-wide `epoch`, which `bump()` advances for what
changes every program at once (`set_num_threads`, a fork). The compiled replay compares them in C (stamps are
arrays so it can read them through a pointer). A spurious bump costs one re-recording,
that is one ordinary call.

Workspaces carry no stamp: a program holds the arrays its calls touch, so a workspace
dropping one (a shape evicted) or handing out another cannot make it compute something
else, and a backward recording belongs to the forward recording whose arrays it reads.
"""
import numpy as np

#: process-wide epoch, bumped by set_num_threads and in a forked child
epoch = np.zeros(1, np.int64)


def stamp(size=1):
    """A fresh stamp: an int64 array of `size` zeros (element 0 counts changes)."""
    return np.zeros(size, np.int64)


def bump_stamp(s):
    """Count one change on stamp `s`."""
    s[0] += 1


def bump():
    """A process-wide change (thread count, fork): every recording is stale."""
    epoch[0] += 1


def changed(objects):
    """Mark each object (a Parameter or Module) changed, e.g. parameters an optimizer
    rebound into its flat buffer."""
    for obj in objects:
        obj.mark_changed()
