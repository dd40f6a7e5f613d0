"""`leap search`: a 3-trial TPE search of the ConvRNN cell space end to end for a tiny
budget, resumed from its SQLite study; and the search-space files."""

from __future__ import annotations

import optuna
import pytest

from experiments.cli import main
from experiments.runs import read_local_runs
from experiments.search import load_space, override_value
from leap_convrnn.errors import UserError
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

    # Every trial is a meta-train and an evaluate W&B run in the group search-<study>,
    # with the sampled cell values in its config and the validation split evaluated.
    runs = read_local_runs(tmp_path)
    assert len(runs) == 6 and {r.group for r in runs} == {"search-cells"}
    for trial in study.trials:
        [evaluated] = [r for r in runs if r.name == f"cells-trial{trial.number}-eval"]
        assert evaluated.config["eval"]["split"] == "validation"
        assert evaluated.config["model"]["name"] == "convrnn_glyph"
        for key, value in trial.params.items():
            assert evaluated.config["model"]["options"][key.rsplit(".", 1)[-1]] == value
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
