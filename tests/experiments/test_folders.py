"""Folders that cannot be created or written end with one line naming the key, the path
and the reason, exit code 2, before any work; W&B never writes elsewhere silently; a
rerun never leaves an earlier run's init.pt; a training checkpoint passed as eval.init
is named as what it is."""

from __future__ import annotations

import os
import types
import warnings
from pathlib import Path

import pytest
import torch

import experiments.runner as runner
from experiments.checkpoint import write_train_state
from experiments.cli import main
from experiments.config import TrackerConfig
from experiments.folders import check_writable
from experiments.tracking import Tracker
from tests.conftest import SMALL_GLYPHS

ROOT = os.geteuid() == 0
KEYS = ["out_dir", "tracker.dir", "data.root"]


def read_only_dir(tmp_path: Path) -> Path:
    """An existing directory this process cannot write (root writes anywhere but on a
    read-only or pseudo file system such as /sys)."""
    if ROOT:
        if not Path("/sys/kernel").is_dir():
            pytest.skip("no /sys to stand for a read-only directory as root")
        return Path("/sys")
    path = tmp_path / "read-only"
    path.mkdir()
    path.chmod(0o500)
    return path


def paths(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """A path of each kind and the reason the error must give."""
    if kind == "non-directory":
        file = tmp_path / "a-file"
        file.write_text("x")
        return file, "is not a directory"
    if kind == "under-a-file":
        file = tmp_path / "a-file"
        file.write_text("x")
        return file / "runs", "is not a directory"
    if kind == "cannot-create":
        return read_only_dir(tmp_path) / "leap-runs", "cannot be created"
    return read_only_dir(tmp_path), "cannot be written"


KINDS = ["non-directory", "under-a-file", "cannot-create", "read-only"]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the folders were checked")

    monkeypatch.setattr(runner, "task_distribution", refuse)
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_folder_that_cannot_be_used_is_one_line_and_exit_2(
    command, key, kind, tmp_path, monkeypatch, capsys, no_work
):
    monkeypatch.chdir(tmp_path)
    path, reason = paths(kind, tmp_path)
    assert main([command, "debug=tiny", f"{key}={path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leap: error: ") and "\n" not in err, err
    assert f"{key}={str(path)!r}" in err and reason in err, err


def test_check_writable_creates_and_returns_the_folder(tmp_path):
    assert check_writable(tmp_path / "a" / "b", "out_dir") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


def test_wandb_writing_outside_tracker_dir_is_said(tmp_path, monkeypatch):
    elsewhere = tmp_path / "tmp" / "wandb" / "offline-run-x"
    run = types.SimpleNamespace(
        id="r1", settings=types.SimpleNamespace(sync_dir=str(elsewhere)), finish=lambda **k: None
    )
    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: run  # type: ignore[attr-defined]
    fake.Settings = dict  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "wandb", fake)
    config = TrackerConfig(mode="offline", dir=str(tmp_path / "mine"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = Tracker(config, tmp_path / "run", "n", "g", "meta-train", [], {})
    assert tracker.mode == "offline"
    said = [str(w.message) for w in caught]
    assert any(str(elsewhere) in m and "not under tracker.dir" in m for m in said), said


TRAIN = ["experiment=glyphs_demo", "debug=tiny", *SMALL_GLYPHS, "model.options.width=4"]
RUN = "glyphs_demo-leap-conv4-seed0"


def test_a_rerun_that_does_not_finish_leaves_no_earlier_init(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEAP_DATA_ROOT", str(tmp_path / "data"))
    stale = tmp_path / "runs" / RUN / "init.pt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"an earlier run's initialization")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_meta_batch", interrupted)
    assert main(["train", *TRAIN, "tracker=none"]) == 130
    assert not stale.exists()
    assert "removed the init.pt an earlier run left" in capsys.readouterr().err


def test_a_training_checkpoint_as_eval_init_is_named_as_such(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "runs" / RUN / "checkpoints" / "step-000000002.pt"
    path.parent.mkdir(parents=True)
    write_train_state(path, {"step": 2, "model": {"w": torch.zeros(1)}})
    assert main(["evaluate", *TRAIN, "tracker=none", f"eval.init={path}"]) == 2
    err = capsys.readouterr().err
    assert "is a training-state checkpoint" in err and "not an initialization" in err
    assert str(tmp_path / "runs" / RUN / "init.pt") in err


def test_a_wandb_folder_removed_during_training_is_one_warning_and_training_goes_on(
    tmp_path, monkeypatch, capsys
):
    import shutil

    import experiments.tracking as tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("LEAP_DATA_ROOT", str(tmp_path / "data"))
    log = tracking.Tracker.log

    def removing(self: Tracker, metrics: dict, step: int) -> None:
        if step == 1 and self.wandb_run is not None:
            files = Path(self.wandb_run.settings.sync_dir)
            shutil.rmtree(files)
            files.write_text("a file where W&B's folder was")
        log(self, metrics, step)

    monkeypatch.setattr(tracking.Tracker, "log", removing)
    assert main(["train", *TRAIN, "meta.meta_steps=4"]) == 0
    err = capsys.readouterr().err
    assert err.count("W&B files failed") == 1 and "is no longer a directory" in err
    metrics = (tmp_path / "runs" / RUN / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 4
    assert (tmp_path / "runs" / RUN / "init.pt").is_file()
