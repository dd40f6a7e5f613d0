"""Tracking: a failing W&B never stops a run; what each run records (git commit, system
summary, artifact lineage, per-task curves); artifact references; resumed runs."""

from __future__ import annotations

import json
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.config import TrackerConfig, compose
from experiments.evaluate import evaluate
from experiments.runner import train
from experiments.runs import read_run
from experiments.tracking import (
    Tracker,
    download_artifact,
    git_state,
    is_artifact_reference,
    resolve_initialization,
)
from leap_convrnn.errors import UserError
from tests.conftest import SMALL_GLYPHS

TINY = [
    "experiment=glyphs_demo",
    "debug=tiny",
    *SMALL_GLYPHS,
    "model.options.width=4",
    "meta.meta_batch_size=1",
    "meta.batch_size=20",
]
RUN = "glyphs_demo-leap-conv4-seed0"


class Raising:
    """Raises on every attribute and every call, like a W&B with no network or a full disk."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"{self._what}.{name}: W&B is broken")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._what}(): W&B is broken")


class RaisingRun(Raising):
    """A run that `wandb.init` returned, whose every method then raises."""

    id = "broken1"


class BrokenWandb(types.ModuleType):
    """A `wandb` module whose every function raises, or whose `init` returns a RaisingRun."""

    def __init__(self, init_works: bool) -> None:
        super().__init__("wandb")
        self._init_works = init_works

    def __getattr__(self, name: str):
        if name.startswith("__"):  # module machinery (inspect, pickling) sees a plain module
            raise AttributeError(name)
        if self._init_works and name == "init":
            return lambda **kwargs: RaisingRun("run")
        if self._init_works and name == "Settings":
            return dict
        return Raising(f"wandb.{name}")


def wandb_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if str(w.message).startswith("W&B ")]


@pytest.mark.parametrize("init_works", [False, True], ids=["init-raises", "every-call-raises"])
def test_a_wandb_that_raises_on_every_call_does_not_stop_training(
    tmp_path, monkeypatch, init_works
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", BrokenWandb(init_works))
    cfg = compose([*TINY, "tracker=wandb"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = train(cfg)
        if init_works:
            evaluate(cfg)
    runs = 2 if init_works else 1  # the train run (and the evaluate run)
    failures = wandb_warnings(caught)
    assert len(failures) == runs, failures
    first_call = "log" if init_works else "init"
    assert all(f"W&B {first_call} failed (RuntimeError" in text for text in failures), failures
    run_dir = tmp_path / "runs" / RUN
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["_step"] for m in lines] == [0, 1]
    assert Path(summary["checkpoint"]).is_file()
    local = json.loads((run_dir / "summary.json").read_text())
    assert local["perf/peak_memory_mb"] > 0 and "meta/objective" in local
    assert not (run_dir / "artifacts.json").exists(), "no artifact was logged"


def test_runs_record_git_commit_system_summary_lineage_and_task_curves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose(TINY)
    train(cfg)
    evaluate(cfg)
    runs = {r.job_type: r for r in map(read_run, sorted((tmp_path / "wandb").glob("*run-*")))}
    trained, evaluated = runs["meta-train"], runs["evaluate"]

    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    assert trained.config["git_commit"] == head and isinstance(trained.config["git_dirty"], bool)
    assert trained.group == evaluated.group == "glyphs_demo"
    local = json.loads((tmp_path / "runs" / RUN / "config.json").read_text())
    assert local["git_commit"] == head and local["meta"]["name"] == "leap"

    logged = json.loads((tmp_path / "runs" / RUN / "metrics.jsonl").read_text().split("\n")[0])
    s = trained.summary
    assert s["perf/peak_memory_mb"] > 0
    history = trained.curve("perf/seconds_per_meta_step")
    assert s["perf/seconds_per_meta_step"] == pytest.approx(
        sum(v for _, v in history) / len(history)
    )
    assert s["perf/tasks_per_s"] > 0 and logged["perf/tasks_per_s"] > 0

    sidecar = json.loads((tmp_path / "runs" / RUN / "artifacts.json").read_text())
    assert sidecar["init.pt"]["name"] == f"init-{RUN}"
    assert sidecar["init.pt"]["type"] == "initialization"
    # Offline W&B cannot resolve artifacts: the evaluate run names its input in its config.
    assert evaluated.config["input_artifact"] == f"init-{RUN}:latest"
    assert evaluated.config["input_artifact_type"] == "initialization"
    # Per-task curves (a W&B line-series chart) and per-task results (a W&B Table).
    assert evaluated.summary["eval/leap/task_curves_table.nrows"] == 3  # K + 1 steps x 1 task
    assert evaluated.summary["eval/tasks.nrows"] == 2  # leap and scratch on 1 task
    curves = json.loads(
        (tmp_path / "runs" / f"{RUN}-eval" / "eval_leap_task_curves.json").read_text()
    )
    assert curves["x"] == [0, 1, 2] and list(curves["series"]) == ["seed0/task0"]
    assert evaluated.summary["perf/tasks_per_s"] > 0


def test_artifact_references_need_wandb_online(tmp_path, monkeypatch):
    assert is_artifact_reference("me/leap-convrnn/init-a-leap-conv4-seed0:v3")
    assert is_artifact_reference("init-a:latest")
    assert not is_artifact_reference("runs/a/init.pt")
    checkpoint = tmp_path / "odd:name"
    checkpoint.write_text("x")
    assert not is_artifact_reference(str(checkpoint)), "an existing file is a file"
    with pytest.raises(UserError, match="W&B is offline"):
        download_artifact("init-a:v0", TrackerConfig(), tmp_path)


def test_artifact_references_download_through_the_public_api(tmp_path, monkeypatch):
    import wandb

    asked = []

    class FakeArtifact:
        def download(self, root: str) -> str:
            Path(root).mkdir(parents=True)
            (Path(root) / "init.pt").write_bytes(b"weights")
            return root

    class FakeApi:
        def artifact(self, name: str) -> FakeArtifact:
            asked.append(name)
            return FakeArtifact()

    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setattr(wandb, "Api", FakeApi)
    config = TrackerConfig(entity="me", project="proj")
    path, source = resolve_initialization("init-a:v0", tmp_path / "none", config, tmp_path / "dl")
    assert asked == ["me/proj/init-a:v0"] and source == "init-a:v0"
    assert path.read_bytes() == b"weights" and path.is_relative_to(tmp_path / "dl")

    def unreachable() -> None:
        raise ConnectionError("no route to host")

    monkeypatch.setattr(wandb, "Api", unreachable)
    with pytest.raises(UserError, match="cannot fetch W&B artifact 'other/p/init-a:v1'"):
        download_artifact("other/p/init-a:v1", config, tmp_path / "dl2")


def test_online_evaluate_runs_use_the_artifact(tmp_path, monkeypatch):
    used = []

    class RecordingRun:
        id = "r1"
        config = types.SimpleNamespace(update=lambda values, allow_val_change: None)
        summary = types.SimpleNamespace(update=lambda values: None)

        def use_artifact(self, reference: str, type: str) -> None:
            used.append((reference, type))

        def finish(self, exit_code: int) -> None:
            pass

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: RecordingRun()  # type: ignore[attr-defined]
    fake.Settings = lambda **kwargs: None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setenv("WANDB_MODE", "online")
    tracker = Tracker(TrackerConfig(), tmp_path, "e", "g", "evaluate", [], {"a": 1})
    tracker.use_artifact("init-x:latest", "initialization")
    tracker.finish()
    assert used == [("init-x:latest", "initialization")]
    assert json.loads((tmp_path / "config.json").read_text())["input_artifact"] == "init-x:latest"


def test_system_summary_and_resumed_runs(tmp_path):
    def tracker(resume_step: int | None = None) -> Tracker:
        return Tracker(TrackerConfig(name="none"), tmp_path, "r", "g", "meta-train", [], {},
                       resume_step=resume_step)  # fmt: skip

    first = tracker()
    first.log({"perf/seconds_per_meta_step": 2.0, "perf/tasks_per_s": 5.0}, step=0)
    first.log({"perf/seconds_per_meta_step": 1.0, "perf/tasks_per_s": 20.0}, step=1)
    first.summary({"meta/objective": 1.5})
    first.finish()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["perf/seconds_per_meta_step"] == 1.5
    assert summary["perf/tasks_per_s"] == pytest.approx((2 * 5 + 1 * 20) / 3)
    assert summary["meta/objective"] == 1.5 and summary["perf/peak_memory_mb"] > 0

    resumed = tracker(resume_step=1)  # step 1 ran after the checkpoint: it is re-run
    resumed.log({"meta/objective": 1.0}, step=1)
    resumed.log({"meta/objective": 0.5}, step=2)
    resumed.finish()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open()]
    assert [r["_step"] for r in records] == [0, 1, 2]
    assert records[1]["meta/objective"] == 1.0
    assert json.loads((tmp_path / "summary.json").read_text())["meta/objective"] == 1.5


def test_git_state_outside_a_checkout(tmp_path):
    assert git_state(tmp_path) == {"git_commit": "unknown", "git_dirty": None}


class FakeArtifact:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeSyncedRun:
    """A run of the public API after `wandb sync`: its config and used artifacts."""

    def __init__(self, name: str, config: dict, used: list[str]) -> None:
        self.name, self.config, self._used = name, config, used
        self.declared: list[FakeArtifact] = []

    def used_artifacts(self) -> list[FakeArtifact]:
        return [FakeArtifact(n) for n in self._used] + self.declared

    def use_artifact(self, artifact: FakeArtifact) -> FakeArtifact:
        self.declared.append(artifact)
        return artifact


def test_offline_lineage_is_declared_after_sync(capsys, monkeypatch):
    import wandb

    offline = FakeSyncedRun(
        "a-eval",
        {"input_artifact": "init-a:latest", "input_artifact_type": "initialization"},
        [],
    )
    online = FakeSyncedRun("b-eval", {"input_artifact": "init-b:latest"}, ["init-b:v0"])
    trained = FakeSyncedRun("a", {}, [])
    asked = []

    class FakeApi:
        def __init__(self, timeout: int) -> None:
            pass

        def runs(self, project: str, filters: dict | None = None) -> list[FakeSyncedRun]:
            assert (project, filters) == ("me/p", {"group": "g"})
            return [offline, online, trained]

        def artifact(self, name: str, type: str | None = None) -> FakeArtifact:
            asked.append((name, type))
            return FakeArtifact(name.split("/")[-1])

    monkeypatch.setattr(wandb, "Api", FakeApi)
    assert main(["link-artifacts", "--project", "me/p", "--group", "g"]) == 0
    assert asked == [("me/p/init-a:latest", "initialization")]
    assert [a.name for a in offline.declared] == ["init-a:latest"]
    assert online.declared == [] and trained.declared == []
    assert "linked a-eval <- me/p/init-a:latest" in capsys.readouterr().out
    # run again: nothing left to link
    assert main(["link-artifacts", "--project", "me/p", "--group", "g"]) == 0
    assert asked == [("me/p/init-a:latest", "initialization")]
