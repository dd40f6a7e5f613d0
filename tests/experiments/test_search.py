"""`leap search`: a 3-trial TPE search of the ConvRNN cell space end to end for a tiny
budget, resumed from its SQLite study; and the search-space files."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
import torch

import models
from experiments.cli import main
from experiments.runs import read_local_runs
from experiments.search import (
    _trial_config,
    best_overrides,
    load_space,
    override_value,
    with_objective,
)
from leap_convrnn.errors import UserError
from models.cells import CELLS, affine_gate
from models.convrnn import ConvRNN
from tests.conftest import SMALL_GLYPHS

TINY = [
    "debug=tiny",
    *SMALL_GLYPHS,
    "model.options.width=0.125",
    "meta.meta_steps=1",
    "meta.meta_batch_size=1",
    "meta.batch_size=4",
    "++model.options.times=2",
]


def test_a_3_trial_tpe_search_runs_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    search = ["search", "--space", "convrnn_cell", "--study", "cells", "--storage", "s.db"]
    assert main([*search, "--trials", "3", *TINY]) == 0
    out = capsys.readouterr().out
    assert "study cells: 3 trials (3 run now)" in out and "best: trial" in out

    study = optuna.load_study(study_name="cells", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    space = load_space("convrnn_cell")
    assert all(set(t.params) == {p.key for p in space.params} for t in study.trials)
    assert space.multivariate

    # Every trial is a meta-train and an evaluate W&B run in the group search-<study>,
    # with the sampled cell values in its config and the validation split evaluated.
    runs = read_local_runs(tmp_path)
    assert len(runs) == 6 and {r.group for r in runs} == {"search-cells"}
    for trial in study.trials:
        [evaluated] = [r for r in runs if r.name == f"cells-trial{trial.number}-eval"]
        assert evaluated.config["eval"]["split"] == "validation"
        assert evaluated.config["model"]["name"] == "convrnn_glyph"
        for key, value in space.expand(trial.params).items():
            section, name = key.split(".", 2)[0], key.rsplit(".", 1)[-1]
            where = evaluated.config[section]
            assert (where["options"] if key.startswith("model.options") else where)[name] == value
        assert evaluated.summary["eval/leap/auc"] == pytest.approx(trial.value)

    # Run again for 4 trials: the study continues with one more, it does not start over.
    assert main([*search, "--trials", "4", *TINY]) == 0
    assert "study cells: 4 trials (1 run now)" in capsys.readouterr().out
    study = optuna.load_study(study_name="cells", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert study.trials[3].state == optuna.trial.TrialState.COMPLETE


def test_search_spaces_are_checked(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  model.options.tau_kernel: {low: 5, high: 1}\n")
    with pytest.raises(UserError, match="low=5 > high=1"):
        load_space(str(bad))
    assert main(["search", "--space", "nope"]) == 2
    assert "unknown search space 'nope'; accepted: convrnn_cell" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text("params:\n  model.options.tau_kernal: {choices: [1, 3]}\n")
    assert main(["search", "--space", str(typo), "--storage", str(tmp_path / "t.db")]) == 2
    assert "tau_kernal" in capsys.readouterr().err
    assert not (tmp_path / "t.db").exists(), "no study is created for a space that fails"
    assert [override_value(v) for v in (True, -1.0, 3, "rgc", "a b")] == [
        "true",
        "-1.0",
        "3",
        "rgc",
        "'a b'",
    ]


def _claims(model: ConvRNN, cfg, values: dict) -> None:
    """The built model has what the point `values` (already expanded) says."""
    cells = [layer.cell for layer in model.layer_list() if layer.has_cell]
    assert cells
    for key, value in values.items():
        name = key.rsplit(".", 1)[-1]
        if key.startswith("meta."):
            assert getattr(cfg.meta, name) == value
            if name == "inner_weight_decay":
                assert cfg.meta.inner().weight_decay == value
            continue
        for cell in cells:
            if name == "cell":
                assert type(cell) is CELLS.get(value)
            elif name == "bypass":
                has = cell.from_r is not None if hasattr(cell, "from_r") else cell.uses_bypass
                assert has == value, "bypass must change the cell, rgc included"
            elif name == "separable":
                assert cell.from_h.separable == value and cell.from_c.separable == value
            elif name == "out_kernel":
                assert (cell.to_out is None) == (value == 0)
                if value:
                    assert cell.to_out.kernel_size == (value, value)
            elif name == "feedback_entry":
                assert cell.feedback_entry == value
            elif name == "feedback_edges":
                wanted = (
                    set() if value == "none" else {tuple(e.split(">")) for e in value.split(",")}
                )
                assert {e for e in model.graph.edges if model.graph.is_feedback(e)} == wanted
            elif name == "feedback_kernel":
                extras = [c for layer in model.layer_list() for c in layer.extra.values()]
                assert all(c.kernel_size == (value, value) for c in extras)
            elif name == "cell_depth":
                assert cell.state_channels["c"] == max(1, round(value * 0.5))
            elif name in ("tau_kernel", "gate_kernel", "input_kernel"):
                assert getattr(cell.config, name) == value
            else:
                assert getattr(cell.config, name) == value, name


@pytest.mark.parametrize("name", ["convrnn_cell", "convrnn_cell_hour"])
def test_every_point_of_the_space_builds_the_cell_it_claims(name):
    """Each parameter at each of its choices (or a range's ends and middle), the others at
    their first value: the trial's config builds the cell, gates and edges it names."""
    space = load_space(name)
    base = {p.key: p.default() for p in space.params}
    for param in space.params:
        for point in param.points():
            values = {**base, param.key: point}
            cfg = _trial_config(space, [], values, "check", 0)
            model = models.build(cfg.model.name, (1, 28, 28), 5, **cfg.model.options)
            _claims(model, cfg, space.expand(values))


def test_gating_choices_mean_one_minus_sigma_and_always_open_on_the_glyph_model():
    """convrnn_glyph's own gate offset is 2; the gating choices set offset and multiplier
    together, so 1 - sigma is 1 - sigma and "always open" is a gate of exactly 1."""
    space = load_space("convrnn_cell_hour")
    [gating] = [p for p in space.params if p.key == "gating"]
    base = {p.key: p.default() for p in space.params}
    z = torch.randn(50)
    for label, expected in (
        ("one_minus_sigma", 1 - torch.sigmoid(z)),
        ("always_open", torch.ones(50)),
        ("twice_one_minus_sigma", 2 * (1 - torch.sigmoid(z))),
    ):
        cfg = _trial_config(space, [], {**base, "gating": label}, "check", 0)
        model = models.build(cfg.model.name, (1, 28, 28), 5, **cfg.model.options)
        cell = model.layer_list()[-1].cell
        c = cell.config
        gate = affine_gate(z, c.gate_bias, c.gate_offset, c.gate_multiplier, torch.sigmoid)
        torch.testing.assert_close(gate, expected)
    assert gating.points() == ["one_minus_sigma", "always_open", "twice_one_minus_sigma"]


def test_the_objective_can_be_chosen():
    space = load_space("convrnn_cell")
    assert (space.objective, space.direction) == ("auc", "minimize")
    accuracy = with_objective(space, "accuracy")
    assert (accuracy.objective, accuracy.direction) == ("accuracy", "maximize")
    with pytest.raises(UserError, match="objective 'precision'"):
        with_objective(space, "precision")
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--objective", "precision"])
    assert exit_info.value.code == 2


def test_best_overrides_write_a_named_choice_out_as_its_keys():
    space = load_space("convrnn_cell_hour")
    best = SimpleNamespace(params={"gating": "always_open", "model.options.bypass": False})
    study = SimpleNamespace(trials=[SimpleNamespace(state=SimpleNamespace(name="COMPLETE"))])
    study.best_trial = best
    assert best_overrides(study, space) == [
        "++model.options.gate_offset=1.0",
        "++model.options.gate_multiplier=0.0",
        "++model.options.bypass=false",
    ]
