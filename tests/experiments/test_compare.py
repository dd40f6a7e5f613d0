"""`leap compare`: offline runs written with known numbers, and the public-API path with a
fake `wandb.Api`; means, CIs and learning-curve bands checked against numpy / scipy."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats

from experiments.cli import main
from experiments.compare import compare
from experiments.plots import plot_learning_curves
from experiments.runs import find_runs, load_runs, read_run
from experiments.stats import mean_ci_by_step

SEEDS = (0, 1, 2)
METHODS = {"leap": 1.0, "reptile": 2.0}


def objective(method: str, seed: int, step: int) -> float:
    """The known meta-objective each fake run logs."""
    return METHODS[method] + 0.37 * seed**2 - 0.1 * step


def heldout_auc(method: str, seed: int) -> float:
    return 0.5 * METHODS[method] + 0.11 * seed + 0.05 * seed**3


def config(method: str, seed: int) -> dict:
    return {
        "experiment": "paper",
        "seed": seed,
        "meta": {"name": method},
        "model": {"name": "conv4"},
        "task": {"name": "glyphs"},
    }


def independent_ci(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of scipy's Student-t interval (not experiments.stats)."""
    low, high = scipy.stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=scipy.stats.sem(values)
    )
    return float(np.mean(values)), float((high - low) / 2)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Offline W&B runs: 2 methods x 3 seeds of meta-training, one evaluate run per seed
    of Leap, and one failed run that compare must leave out."""
    import wandb

    root = tmp_path_factory.mktemp("compare")

    def run(name: str, group: str, job: str, cfg: dict) -> wandb.Run:
        return wandb.init(
            project="compare-test", dir=str(root), mode="offline", name=name, group=group,
            job_type=job, config=cfg, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off"),
        )  # fmt: skip

    for method in METHODS:
        for seed in SEEDS:
            r = run(f"{method}-{seed}", "paper", "meta-train", config(method, seed))
            for step in range(4):
                r.log({"meta/objective": objective(method, seed, step)}, step=step)
            r.finish()
    for seed in SEEDS:
        r = run(f"leap-{seed}-eval", "paper", "evaluate", config("leap", seed))
        for k in range(3):
            r.log({"eval/leap/train_loss": 2.0 - k * (0.5 + 0.1 * seed)}, step=k)
        r.summary.update({"eval/leap/auc": heldout_auc("leap", seed), "eval/leap/accuracy": 0.5})
        r.finish()
    r = run("crashed", "paper", "meta-train", config("leap", 9))
    r.log({"meta/objective": 1e6}, step=0)
    r.finish(exit_code=1)
    return root


def test_compare_gives_the_means_and_cis_of_numpy_and_scipy(run_dir, capsys):
    rows = compare(load_runs(run_dir, group="paper"))
    assert "left out 1 failed run(s): crashed" in capsys.readouterr().err
    by_key = {(r.job, r.method, r.metric): r for r in rows}
    for method in METHODS:
        row = by_key["meta-train", method, "meta/objective"]
        expected = independent_ci([objective(method, s, 3) for s in SEEDS])
        assert (row.mean, row.ci95) == pytest.approx(expected, rel=1e-12)
        assert (row.experiment, row.model, row.task, row.runs) == ("paper", "conv4", "glyphs", 3)
    row = by_key["evaluate", "leap", "eval/leap/auc"]
    assert (row.mean, row.ci95) == pytest.approx(
        independent_ci([heldout_auc("leap", s) for s in SEEDS]), rel=1e-12
    )
    assert by_key["evaluate", "leap", "eval/leap/accuracy"].ci95 == 0.0


def test_learning_curve_bands_match_numpy(run_dir, tmp_path):
    runs = [r for r in load_runs(run_dir) if r.key[1] == "meta-train" and r.key[2] == "reptile"]
    band = mean_ci_by_step([r.curve("meta/objective") for r in runs])
    assert [b[0] for b in band] == [0, 1, 2, 3]
    for step, mean, half, n in band:
        values = [objective("reptile", s, step) for s in SEEDS]
        assert n == 3
        assert (mean, half) == pytest.approx(independent_ci(values), rel=1e-12)
    written = plot_learning_curves(runs, tmp_path)
    assert [p.name for p in written] == ["paper__meta_objective.png"]


def test_cli_prints_markdown_and_writes_png_plots(run_dir, tmp_path, capsys):
    plots = tmp_path / "plots"
    code = main(
        ["compare", "--dir", str(run_dir), "--group", "paper", "--markdown", "--plots", str(plots)]
    )
    assert code == 0
    out = capsys.readouterr().out
    mean, half = independent_ci([objective("leap", s, 3) for s in SEEDS])
    row = "| paper | meta-train | leap | conv4 | glyphs | - | - | meta/objective |"
    assert f"{row} {mean:.4f} ± {half:.4f} | 3 |" in out
    for name in ("paper__meta_objective.png", "paper__heldout_loss.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert main(["compare", "--dir", str(run_dir), "--group", "nope"]) == 2
    assert "no finished runs in group 'nope'" in capsys.readouterr().err


class FakeApiRun:
    """What compare reads of a `wandb.apis.public.Run`."""

    def __init__(self, method: str, seed: int, state: str = "finished") -> None:
        self.id = f"{method}{seed}"
        self.name = f"{method}-{seed}"
        self.group = "paper"
        self.job_type = "meta-train"
        self.state = state
        self.config = {**config(method, seed), "_wandb": {"x": 1}}
        self.summary_metrics = {"meta/objective": objective(method, seed, 3), "_step": 3}
        self._method, self._seed = method, seed

    def scan_history(self, keys: list[str]) -> list[dict]:
        assert keys == ["_step", "meta/objective"]
        return [
            {"_step": k, "meta/objective": objective(self._method, self._seed, k)} for k in range(4)
        ]


def test_public_api_path_with_a_fake_api(tmp_path, capsys):
    calls = []

    def runs(path: str, filters: dict | None = None) -> list[FakeApiRun]:
        calls.append((path, filters))
        return [FakeApiRun(m, s) for m in METHODS for s in SEEDS] + [
            FakeApiRun("leap", 7, state="crashed")
        ]

    api = SimpleNamespace(runs=runs)
    loaded = load_runs(project="me/leap-convrnn", group="paper", api=api)
    assert calls == [("me/leap-convrnn", {"group": "paper"})]
    rows = compare(loaded, metrics=["meta/objective"], plots=tmp_path)
    assert "left out 1 failed run(s): leap-7" in capsys.readouterr().err
    for row, method in zip(rows, sorted(METHODS), strict=True):
        assert row.method == method and row.runs == 3
        expected = independent_ci([objective(method, s, 3) for s in SEEDS])
        assert (row.mean, row.ci95) == pytest.approx(expected, rel=1e-12)
    assert (tmp_path / "paper__meta_objective.png").is_file()
    assert "_wandb" not in loaded[0].config


def test_the_cli_uses_the_public_api_for_a_project(monkeypatch, capsys):
    import wandb

    seen = []

    class FakeApi:
        def __init__(self, timeout: int) -> None:
            pass

        def runs(self, path: str, filters: dict | None = None) -> list[FakeApiRun]:
            seen.append((path, filters))
            return [FakeApiRun("leap", s) for s in SEEDS]

    monkeypatch.setattr(wandb, "Api", FakeApi)
    assert main(["compare", "--project", "me/p", "--metric", "meta/objective"]) == 0
    assert seen == [("me/p", None)]
    mean = np.mean([objective("leap", s, 3) for s in SEEDS])
    assert f"{mean:.4f}" in capsys.readouterr().out

    def broken(timeout: int) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(wandb, "Api", broken)
    assert main(["compare", "--project", "me/p"]) == 2
    assert "cannot read the runs of W&B project 'me/p' (ConnectionError" in capsys.readouterr().err


def test_single_run_groups_have_no_interval():
    band = mean_ci_by_step([[(0, 1.0), (1, 2.0)], [(0, 3.0)]])
    assert band[0][:2] == (0, 2.0) and band[0][3] == 2
    assert band[1][1] == 2.0 and math.isnan(band[1][2]) and band[1][3] == 1


def test_the_wandb_cli_reads_runs_when_wandb_core_cannot(run_dir, monkeypatch):
    import wandb.util

    path = find_runs(run_dir)[0]
    direct = read_run(path)

    def missing() -> str:
        raise FileNotFoundError("wandb-core")

    monkeypatch.setattr(wandb.util, "get_core_path", missing)
    through_cli = read_run(path)
    assert (through_cli.name, through_cli.config, through_cli.summary, through_cli.history) == (
        direct.name,
        direct.config,
        direct.summary,
        direct.history,
    )
