"""Representational analyses of trained and meta-learned networks (`leap analyze`).

One job per module: `stimuli` (stimulus sets), `extract` (models from checkpoints and their
per-layer, per-step features), `rsa` (RDMs and their comparison), `neural` (cross-validated
fits to neural responses with the noise ceiling), `report` (maps, tables, W&B), `analyze`
(the driver), `study` (the Leap-versus-Scratch study), `synthetic` (neural files with a
known answer) and `cli` (the subcommand).
"""
