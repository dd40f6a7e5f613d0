"""Evaluation of several initializations at once: the same held-out tasks and minibatches
for every method, replicates per training seed, paired figures against the reference
(checked with scipy), which initialization was loaded, and a stop by signal."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import tasks.classification as classification
from experiments.cli import main
from experiments.config import compose
from experiments.evaluate import evaluate
from experiments.runner import train
from experiments.runs import find_runs, read_run
from leap_convrnn.errors import UserError
from tests.conftest import SMALL_GLYPHS

TINY = ["experiment=glyphs_demo", "debug=tiny", *SMALL_GLYPHS, "model.options.width=4"]
METHODS = ["leap", "reptile"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Leap and Reptile initializations, two training seeds each, tracker off."""
    root = tmp_path_factory.mktemp("trained")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        for method in METHODS:
            for seed in (0, 1):
                train(compose([*TINY, f"meta={method}", f"seed={seed}", "tracker=none"]))
    finally:
        os.chdir(cwd)
    return root


def test_every_initialization_trains_on_the_same_tasks_and_minibatches(
    trained, monkeypatch, capsys
):
    monkeypatch.chdir(trained)
    seen: dict[tuple[str, int], list[list[torch.Tensor]]] = defaultdict(list)
    original = classification.ClassificationTask.batches

    def recording(self, batch_size):
        draw = original(self, batch_size)
        batches: list[torch.Tensor] = []
        seen[(self.name, self.seed)].append(batches)

        def next_batch():
            x, y = draw()
            batches.append(torch.cat([x.flatten(), y.float()]))
            return x, y

        return next_batch

    monkeypatch.setattr(classification.ClassificationTask, "batches", recording)
    cfg = compose([*TINY, "tracker=none", "eval.methods=[leap,reptile]", "eval.tasks=3"])
    evaluation = evaluate(cfg)
    assert [r.method for r in evaluation] == ["leap", "reptile", "scratch"]
    assert len(seen) == 3  # three held-out tasks, each run by the three methods
    for runs in seen.values():
        assert len(runs) == 3
        for other in runs[1:]:
            assert len(other) == len(runs[0]) == cfg.eval.steps + 1
            for a, b in zip(runs[0], other, strict=True):
                assert torch.equal(a, b)


def test_replicates_are_training_seeds_and_paired_figures_match_scipy(trained, monkeypatch):
    monkeypatch.chdir(trained)
    cfg = compose(
        [
            *TINY,
            "tracker=none",
            "eval.methods=[leap,reptile]",
            "eval.train_seeds=[0,1]",
            "eval.tasks=4",
            "eval.seeds=[0,1]",
            "eval.reference=reptile",
        ]
    )
    evaluation = evaluate(cfg)
    assert evaluation.reference == "reptile"
    by_method = {r.method: r for r in evaluation}
    for result in evaluation:
        assert result.matrix("auc").shape == (2, 8)  # 2 replicates x (2 seeds x 4 tasks)
    assert len(by_method["leap"].initializations) == 2
    assert "seed1" in by_method["leap"].initializations[1]
    summary = evaluation.summary()
    for method in ("leap", "scratch"):
        for figure in ("auc", "accuracy"):
            values = by_method[method].matrix(figure).mean(axis=0)
            reference = by_method["reptile"].matrix(figure).mean(axis=0)
            test = stats.ttest_rel(values, reference)
            low, high = test.confidence_interval(0.95)
            diff = summary[f"eval/{method}/{figure}_diff"]
            half = summary[f"eval/{method}/{figure}_diff_ci95"]
            assert diff == pytest.approx(np.mean(values - reference), abs=1e-12)
            assert (diff - half, diff + half) == pytest.approx((low, high), abs=1e-9)
    assert "eval/reptile/auc_diff" not in summary
    improvement = summary["eval/leap/auc_p_improvement"]
    assert summary["eval/leap/auc_p_improvement_low"] <= improvement
    assert improvement <= summary["eval/leap/auc_p_improvement_high"]


def test_evaluate_prints_each_initialization_and_its_run(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    assert main(["evaluate", *TINY, "tracker=none", "eval.methods=[leap,reptile]"]) == 0
    out = capsys.readouterr().out
    for method in METHODS:
        path = f"runs/glyphs_demo-{method}-conv4-seed0/init.pt"
        line = next(line for line in out.splitlines() if path in line)
        assert f"run glyphs_demo-{method}-conv4-seed0" in line
        assert f"meta-trained by {method} for 2 steps" in line and "written 20" in line
    assert "reference for paired figures: leap" in out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["eval.reference=maml"], "eval.reference='maml' is not evaluated; accepted: leap"),
        (["eval.methods=[leap,reptile]", "eval.init=x.pt"], "eval.init names one"),
        (["eval.methods=[lep]"], "unknown meta-learner 'lep'"),
        (["+eval.inits.mine=[]"], "eval.inits.mine must list at least one"),
    ],
)
def test_bad_evaluation_settings_are_one_line(trained, monkeypatch, overrides, message):
    monkeypatch.chdir(trained)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        evaluate(compose([*TINY, "tracker=none", *overrides]))


def test_extra_initializations_by_label(trained, monkeypatch):
    monkeypatch.chdir(trained)
    first = "runs/glyphs_demo-leap-conv4-seed0/init.pt"
    second = "runs/glyphs_demo-leap-conv4-seed1/init.pt"
    evaluation = evaluate(compose([*TINY, "tracker=none", f"+eval.inits.mine=[{first},{second}]"]))
    assert [r.method for r in evaluation] == ["mine", "scratch"]
    assert evaluation.reference == "mine"
    assert evaluation[0].matrix("auc").shape == (2, 1)
    assert evaluation[1].matrix("auc").shape == (2, 1)  # Scratch: as many draws per task


def test_sigint_stops_evaluation_and_wandb_records_its_exit_code(trained, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    original = classification.ClassificationTask.evaluate
    calls = [0]

    def interrupted(self, model):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model)

    monkeypatch.setattr(classification.ClassificationTask, "evaluate", interrupted)
    init = "eval.init=runs/glyphs_demo-leap-conv4-seed0/init.pt"
    assert main(["evaluate", *TINY, "eval.tasks=3", "name=stopped", init]) == 130
    err = capsys.readouterr().err
    assert "SIGINT: evaluation stopped after 2 of 6 inner loops" in err
    [run_dir] = [p for p in find_runs(trained) if read_run(p).name == "stopped-eval"]
    assert read_run(run_dir).exit_code == 130
    assert not (trained / "runs" / "stopped-eval" / "curves.json").exists()
