"""The ground floor of leap-convrnn, imported by every other package and importing none.

- `errors`: the exceptions the CLI turns into one-line messages and exit codes.
- `registry`: the name -> builder `Registry` type (one instance per kind: model, task,
  meta-learner, inner optimizer) and the keyword check of builder options.
- `optional`: imports of optional dependencies that fail with the extra to install.

Layers, each importing only those below it (checked by `lint-imports`):

    experiments  (configs, runner, evaluation, CLI, tracking, checkpoints)
    meta | envs  (meta-learners | Atari games, each unaware of the other)
    tasks        (the task contract and the vision families)
    models       (ConvRNNs and feedforward networks)
    leap_convrnn (this package)
"""
