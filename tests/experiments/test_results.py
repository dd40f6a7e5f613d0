"""`leap results`: the evidence suite's plan, and the whole suite end to end at the tiny
scale (every study trained, evaluated and written to results.md / results.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.results import SCALES, STUDIES, ablation, comparison


def _budget(argv: tuple[str, ...]) -> list[str]:
    keys = ("meta.meta_steps=", "meta.meta_batch_size=", "meta.inner_steps=", "eval.")
    return [a for a in argv if a.startswith(keys)]


@pytest.mark.parametrize("scale", sorted(SCALES))
def test_every_method_of_a_study_gets_the_same_budget(scale: str, tmp_path: Path):
    for name, plan in STUDIES.items():
        study = plan(SCALES[scale], tmp_path)
        budgets = {tuple(_budget(job.argv)) for job in study.train}
        assert len(budgets) == 1, (name, budgets)
        assert study.evaluate, name


def test_the_comparison_trains_every_method_model_and_seed(tmp_path: Path):
    scale = SCALES["full"]
    study = comparison(scale, tmp_path)
    runs = {
        (
            next(a for a in job.argv if a.startswith("model=")),
            next(a for a in job.argv if a.startswith("meta=")),
            next(a for a in job.argv if a.startswith("seed=")),
        )
        for job in study.train
    }
    methods = {"leap", "reptile", "fomaml", "maml", "finetune"}
    assert len(runs) == len(scale.models) * len(methods) * len(scale.seeds)
    assert {m.removeprefix("meta=") for _, m, _ in runs} == methods
    assert len(study.evaluate) == len(scale.models)


def test_the_ablation_evaluates_each_variant_by_its_own_label(tmp_path: Path):
    study = ablation(SCALES["full"], tmp_path)
    (evaluate,) = study.evaluate
    labels = {a.split("=")[0].removeprefix("+eval.inits.") for a in evaluate.argv if "inits" in a}
    assert labels == {"leap", "energy", "no_loss", "no_stabilizer"}
    assert "meta.options.metric=energy" in {a for job in study.train for a in job.argv}


def test_the_ablations_leap_runs_are_the_comparisons(tmp_path: Path):
    scale = SCALES["full"]
    compared = {job.argv for job in comparison(scale, tmp_path).train}
    ablated = [job.argv for job in ablation(scale, tmp_path).train]
    shared = [argv for argv in ablated if argv in compared]
    assert len(shared) == len(scale.seeds)
    assert all("meta=leap" in argv and "model=convrnn_glyph" in argv for argv in shared)


def test_a_bad_number_of_jobs_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    assert main(["results", "--scale", "tiny", "--jobs", "0", "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--jobs 0" in err


def test_the_suite_runs_end_to_end_at_the_tiny_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    docs = tmp_path / "docs"
    argv = ["results", "--scale", "tiny", "--work-dir", str(tmp_path / "suite")]
    assert main([*argv, "--docs", str(docs)]) == 0
    record = json.loads((docs / "results.json").read_text())
    assert set(record["studies"]) == {*STUDIES, "representations"}
    comparison_runs = record["studies"]["comparison"]["evaluations"]
    assert set(comparison_runs) == set(SCALES["tiny"].models)
    for evaluation in comparison_runs.values():
        summary = evaluation["summary"]
        for method in ("leap", "reptile", "fomaml", "maml", "finetune", "scratch"):
            assert math.isfinite(summary[f"eval/{method}/auc"])
            assert 0 <= summary[f"eval/{method}/accuracy"] <= 1
        assert summary["eval/reference"] == "leap"
    assert set(record["studies"]["alphabets"]["evaluations"]) == {"conv4-1", "conv4-3"}
    ablation_summary = record["studies"]["ablation"]["evaluations"]["evaluate"]["summary"]
    assert {"eval/energy/auc", "eval/no_loss/auc", "eval/no_stabilizer/auc"} <= set(
        ablation_summary
    )
    multicv = record["studies"]["multicv"]["evaluations"]["conv4"]["summary"]
    assert 0 <= multicv["eval/leap/train_accuracy"] <= 1
    assert record["models"]["conv4"]["parameters"] > 0
    study = record["studies"]["representations"]
    assert set(study["accuracy"]) == {"leap", "scratch", "ff"}
    assert all(-1 <= v <= 1 for row in study["maps"]["leap vs scratch, after"] for v in row)
    report = (docs / "results.md").read_text()
    headings = ("## Which", "Figure 3", "Appendix C", "Table 1", "## Beside", "## Do Leap")
    for heading in headings:
        assert heading in report
    leap_auc = comparison_runs["conv4"]["summary"]["eval/leap/auc"]
    assert f"{leap_auc:.3f}" in report
    for figure in ("comparison_conv4.png", "alphabets_conv4.png", "meta_objective.png"):
        assert (docs / "figures" / figure).stat().st_size > 0
    # The report is rewritten from the finished runs, with the same numbers.
    (docs / "results.md").unlink()
    assert main([*argv, "--docs", str(docs), "--report-only"]) == 0
    assert (docs / "results.md").read_text() == report
    # Run again (as after a kill): finished jobs are not run again, one lost job is.
    markers = [json.loads(m.read_text()) | {"path": m} for m in (tmp_path / "suite").glob("f*/*")]
    multicv = [m for m in markers if "experiment=suite_multicv" in m["argv"]]
    next(m["path"] for m in multicv if m["argv"][0] == "evaluate").unlink()
    capsys.readouterr()
    again = [*argv, "--docs", str(tmp_path / "again"), "--studies", "multicv"]
    assert main(again) == 0
    err = capsys.readouterr().err
    assert f"{len(multicv) - 1} jobs finished before are not run again" in err
    assert "[1/1]" in err and "[2/" not in err
