"""A counter of the changes that can make a recorded kernel program stale.

`fastnn.layers.replay` replays a Sequential's kernel calls only while this counter is
unchanged since the recording. Whatever could change those calls bumps it: assigning a
module attribute (a hyperparameter, a Parameter), train()/eval(), .to(), a workspace
array reallocated or rebound, an optimizer moving parameters into its flat buffer,
set_num_threads, and a fork (a child runs one-thread kernels). Bumping is cheap and
conservative: the cost of a spurious bump is one re-recording (one ordinary step).
"""

value = 0


def bump():
    global value
    value += 1
