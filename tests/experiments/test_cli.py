"""End to end: `leap train`, `leap evaluate` and `leap compare` offline, for a tiny budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from experiments.checkpoint import load_initialization, read_initialization
from experiments.cli import main
from tests.conftest import SMALL_GLYPHS

TINY = [
    "experiment=glyphs_demo",
    "debug=tiny",
    *SMALL_GLYPHS,
    "model.options.width=8",
    "meta.meta_steps=3",
    "meta.inner_steps=4",
    "eval.tasks=2",
    "eval.steps=4",
]
RUN = "glyphs_demo-leap-conv4-seed0"


def wandb_records(run_dir: Path) -> list[dict]:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def offline_runs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "wandb").glob("offline-run-*"))


@pytest.fixture
def trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY]) == 0
    return tmp_path


def test_train_leaves_an_offline_wandb_run_and_a_loadable_checkpoint(trained):
    [run_dir] = offline_runs(trained)
    records = wandb_records(run_dir)
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    assert [h["_step"] for h in history] == [0, 1, 2]
    for key in (
        "meta/objective",
        "meta/grad_norm",
        "task/auc",
        "task/test_accuracy",
        "perf/tasks_per_s",
    ):
        assert all(isinstance(h[key], float) for h in history), key
    [run] = [r["run"] for r in records if r["type"] == "run"]
    assert run["run_group"] == "glyphs_demo" and run["job_type"] == "meta-train"
    config = run["config"]["update"]
    assert config["meta"]["inner_steps"] == 4 and config["model"]["name"] == "conv4"
    assert any(r["type"] == "artifact" for r in records), "initialization logged as an artifact"

    checkpoint = trained / "runs" / RUN / "init.pt"
    blob = read_initialization(checkpoint)
    model = models.build("conv4", (1, 28, 28), 20, width=8)
    load_initialization(checkpoint, model, blob["architecture"])
    for name, value in model.state_dict().items():
        assert torch.equal(value, blob["state_dict"][name])
    local = [json.loads(line) for line in (trained / "runs" / RUN / "metrics.jsonl").open()]
    assert [m["meta/objective"] for m in local] == [h["meta/objective"] for h in history]


def test_evaluate_reports_leap_beside_scratch(trained, capsys):
    assert main(["evaluate", *TINY]) == 0
    table = capsys.readouterr().out
    assert "leap" in table and "scratch" in table
    eval_run = [
        p
        for p in offline_runs(trained)
        if any(r["type"] == "run" and r["run"]["job_type"] == "evaluate" for r in wandb_records(p))
    ]
    assert len(eval_run) == 1
    summary = json.loads((trained / "runs" / f"{RUN}-eval" / "summary.json").read_text())
    for method in ("leap", "scratch"):
        assert 0.0 <= summary[f"eval/{method}/accuracy"] <= 1.0
        assert summary[f"eval/{method}/auc"] > 0


def test_compare_reads_the_runs_back(trained, capsys):
    assert main(["evaluate", *TINY]) == 0
    capsys.readouterr()
    assert main(["compare", "--dir", str(trained), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| glyphs_demo | meta-train | leap | conv4 | glyphs | - | - | meta/objective |" in out
    assert "eval/scratch/auc" in out


def test_tracker_none_writes_no_wandb_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "tracker=none"]) == 0
    assert not (tmp_path / "wandb").exists()
    assert (tmp_path / "runs" / RUN / "init.pt").is_file()


def test_multirun_runs_every_combination(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        main(
            [
                "train",
                "-m",
                *TINY,
                "tracker=none",
                "meta.meta_steps=1",
                "seed=0,1",
                "meta=leap,reptile",
            ]
        )
        == 0
    )
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.name != "sweeps")
    assert runs == [f"glyphs_demo-{m}-conv4-seed{s}" for m in ("leap", "reptile") for s in (0, 1)]
