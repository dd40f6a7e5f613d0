"""Experiments, the top floor: configs, the runner, evaluation, the `leap` CLI, tracking,
checkpoints, compare, plots and search. Nothing below this package imports it.

    config -> runner.train    -> meta-learner.adapt(model, task) -> task.inner_loop(...)
           -> evaluate.evaluate (transfer to held-out tasks)      -> tracker / checkpoint

This `__init__` imports nothing, so that `leap --help` stays fast.
"""
