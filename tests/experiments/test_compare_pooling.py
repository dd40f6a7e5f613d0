"""`leap compare` never pools what differs: runs of other settings are other rows, a rerun
of one config and seed counts once, a resumed run is one run with its whole curve, an
unknown metric is a one-line error, the table fits a pipe, and an evaluate row names the
initialization it measures. Offline W&B runs written in the test."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.compare import compare
from experiments.runs import load_runs


def config(seed: int, inner_steps: int = 5, **extra: object) -> dict:
    return {
        "experiment": "pool",
        "seed": seed,
        "out_dir": f"runs{seed}",
        "meta": {"name": "leap", "inner_steps": inner_steps, "meta_lr": 0.1},
        "model": {"name": "conv4"},
        "task": {"name": "glyphs"},
        **extra,
    }


def write_run(
    root: Path,
    name: str,
    cfg: dict,
    points: dict[int, float],
    exit_code: int = 0,
    run_id: str | None = None,
    job: str = "meta-train",
    summary: dict | None = None,
) -> None:
    import wandb

    run = wandb.init(
        project="pool", dir=str(root), mode="offline", name=name, group="pool", job_type=job,
        config=cfg, reinit="create_new", id=run_id, resume="allow" if run_id else None,
        settings=wandb.Settings(silent=True, console="off"),
    )  # fmt: skip
    for step, value in points.items():
        run.log({"meta/objective": value}, step=step)
    if summary:
        run.summary.update(summary)
    run.finish(exit_code=exit_code)
    time.sleep(1.05)  # W&B names offline run directories by the second


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeds 0 and 1 at inner_steps 5; seeds 0 and 1 at inner_steps 50; a rerun of
    (inner_steps 5, seed 0) with another result; a run at inner_steps 5, seed 2, stopped
    at step 2 (SIGINT) and resumed from step 1; two evaluate runs of named inits."""
    root = tmp_path_factory.mktemp("pool")
    write_run(root, "a5-s0-old", config(0), {0: 100.0, 1: 100.0})
    write_run(root, "a5-s1", config(1), {0: 2.0, 1: 1.0})
    write_run(root, "a50-s0", config(0, 50), {0: 10.0, 1: 10.0})
    write_run(root, "a50-s1", config(1, 50), {0: 20.0, 1: 30.0})
    write_run(root, "a5-s0-new", config(0), {0: 4.0, 1: 3.0})
    write_run(root, "a5-s2", config(2), {0: 9.0, 1: 8.0, 2: 99.0}, exit_code=130, run_id="r2")
    write_run(root, "a5-s2", config(2), {1: 7.0, 2: 5.0}, run_id="r2")
    for seed in (0, 1):
        init = f"runs/pool-leap-conv4-seed{seed}/init.pt, run pool-leap-conv4-seed{seed}"
        write_run(
            root,
            f"eval-s{seed}",
            config(seed),
            {},
            job="evaluate",
            summary={
                "eval/leap/auc": 1.0 + seed,
                "eval/leap/init": init,
                "eval/scratch/auc": 3.0,
                "eval/scratch/init": "random initialization, drawn afresh for each task",
            },
        )
    return root


def rows_by_settings(runs_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, str]:
    rows = compare(load_runs(runs_dir), metrics=["meta/objective"])
    err = capsys.readouterr().err
    return {r.settings: r for r in rows if r.job == "meta-train"}, err


def test_runs_with_other_settings_are_other_rows_naming_the_key(runs_dir, capsys):
    rows, _ = rows_by_settings(runs_dir, capsys)
    assert set(rows) == {"meta.inner_steps=5", "meta.inner_steps=50"}
    assert rows["meta.inner_steps=50"].runs == 2
    assert rows["meta.inner_steps=50"].mean == pytest.approx(20.0)


def test_a_rerun_of_one_config_and_seed_counts_once_the_latest(runs_dir, capsys):
    rows, err = rows_by_settings(runs_dir, capsys)
    assert "1 rerun(s) of the same config and seed counted once (the latest)" in err
    assert "a5-s0-old" in err
    # seeds 0 (the rerun: 3.0), 1 (1.0) and 2 (the resumed run: 5.0)
    assert rows["meta.inner_steps=5"].runs == 3
    assert rows["meta.inner_steps=5"].mean == pytest.approx((3.0 + 1.0 + 5.0) / 3)


def test_a_resumed_run_is_one_run_with_its_whole_curve(runs_dir, capsys):
    runs = load_runs(runs_dir)
    err = capsys.readouterr().err
    assert "failed" not in err
    resumed = [r for r in runs if r.name == "a5-s2"]
    assert len(resumed) == 1
    # step 0 from the stopped segment, steps 1 and 2 re-run by the resumed one
    assert resumed[0].curve("meta/objective") == [(0, 9.0), (1, 7.0), (2, 5.0)]


def test_unknown_metric_is_one_line_listing_the_metrics(runs_dir, capsys):
    assert main(["compare", "--dir", str(runs_dir), "--metric", "meta/objectiv"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1
    err = err[0]
    assert "unknown --metric 'meta/objectiv' (did you mean meta/objective" in err
    assert "eval/leap/auc" in err and "eval/leap/init" not in err and "_timestamp" not in err


def test_output_fits_a_pipe_and_evaluate_rows_name_their_initialization(runs_dir, capsys):
    assert main(["compare", "--dir", str(runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) > 80
    (leap_row,) = [line for line in out.splitlines() if "eval/leap/auc" in line]
    assert "pool-leap-conv4-seed0, pool-leap-conv4-seed1" in leap_row
    (scratch_row,) = [line for line in out.splitlines() if "eval/scratch/auc" in line]
    assert "random" in scratch_row
