"""Experiments: configs, the runner, the `leap` CLI, tracking and checkpoints.

The modules `errors` and `registry` are shared by every package of the project;
this package's `__init__` imports nothing heavy so that they stay cheap to import.
"""
