"""Checkpoints and resume: a run killed (SIGKILL) or stopped (SIGINT, SIGTERM) at a
meta-step and resumed ends with the initialization of the run that was never stopped,
bitwise, on CPU; broken checkpoints are named and skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from experiments.checkpoint import TrainStateStore, read_train_state
from experiments.cli import main
from tests.conftest import SMALL_GLYPHS

STEPS = 8
TINY = [
    "experiment=glyphs_demo",
    "debug=tiny",
    *SMALL_GLYPHS,
    "model.options.width=4",
    f"meta.meta_steps={STEPS}",
    "meta.batch_size=20",
    "tracker=none",
    "checkpoint_every=2",
    "keep_checkpoints=2",
]
RUN = Path("runs") / "glyphs_demo-leap-conv4-seed0"

#: Runs `leap <argv>` and, on the N-th call of the learner's `end_meta_batch` (inside
#: meta-step N - 1, after its tasks ran and before its update), sends itself a signal.
STOPPER = """
import os, signal, sys
import experiments.runner as runner

signum, calls = getattr(signal, sys.argv[1]), int(sys.argv[2])
build = runner.build_learner

def build_armed(*args, **kwargs):
    learner = build(*args, **kwargs)
    end, seen = learner.end_meta_batch, [0]
    def end_meta_batch():
        seen[0] += 1
        if seen[0] == calls:
            os.kill(os.getpid(), signum)
        return end()
    learner.end_meta_batch = end_meta_batch
    return learner

runner.build_learner = build_armed
from experiments.cli import main
sys.exit(main(sys.argv[3:]))
"""


def stopped_run(directory: Path, signame: str, calls: int, *extra: str) -> subprocess.Popen:
    """Start, in `directory`, a training run that signals itself inside meta-step `calls - 1`."""
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", STOPPER, signame, str(calls), "train", *TINY, *extra],
        cwd=directory,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def initialization(directory: Path) -> dict[str, torch.Tensor]:
    return torch.load(directory / RUN / "init.pt", weights_only=True)["state_dict"]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """The subprocesses run with one thread: so do the in-process runs they are compared to."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The initialization of the uninterrupted run."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *TINY, f"out_dir={directory / 'runs'}"]) == 0
    finally:
        torch.set_num_threads(threads)
    return torch.load(directory / "runs" / RUN.name / "init.pt", weights_only=True)["state_dict"]


# Kill points: inside the first meta-step (no checkpoint yet), right after the checkpoint
# of step 2 (the meta-step being killed is 2), and one meta-step past the checkpoint of 4.
KILLS = {"first_step": 1, "after_checkpoint": 3, "past_checkpoint": 6}


def test_sigkilled_runs_resume_to_the_uninterrupted_initialization(
    reference, tmp_path, monkeypatch, capsys
):
    runs = {name: stopped_run(tmp_path / name, "SIGKILL", calls) for name, calls in KILLS.items()}
    for name, proc in runs.items():
        proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, name
    for name, calls in KILLS.items():
        directory = tmp_path / name
        store = TrainStateStore(directory / RUN / "checkpoints", keep=2)
        latest = 2 * ((calls - 1) // 2)
        assert [read_train_state(p)["step"] for p in store.paths()][-1:] == (
            [latest] if latest else []
        )
        monkeypatch.chdir(directory)
        assert main(["train", *TINY, "resume=true"]) == 0, capsys.readouterr().err
        assert_bitwise_equal(initialization(directory), reference)


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_sigint_and_sigterm_finish_the_step_checkpoint_and_exit(
    signame, code, reference, tmp_path, monkeypatch
):
    proc = stopped_run(tmp_path, signame, 3)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert f"leap: {signame}: stopped after meta-step 2 (3 of {STEPS} done)" in err
    store = TrainStateStore(tmp_path / RUN / "checkpoints", keep=2)
    assert read_train_state(store.paths()[-1])["step"] == 3
    assert not (tmp_path / RUN / "init.pt").exists()
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "resume=true"]) == 0
    assert_bitwise_equal(initialization(tmp_path), reference)


def test_corrupt_latest_checkpoint_is_named_and_the_previous_one_used(
    reference, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "meta.meta_steps=6", "keep_checkpoints=3"]) == 0
    store = TrainStateStore(RUN / "checkpoints", keep=3)
    _, step4, step6 = store.paths()
    step6.write_bytes(step6.read_bytes()[:-100])  # truncated
    data = bytearray(step4.read_bytes())
    data[-50] ^= 0xFF  # one flipped byte
    step4.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["train", *TINY, "resume=true"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings[0].startswith("leap: warning: checkpoint ") and step6.name in warnings[0]
    assert "is truncated" in warnings[0]
    assert step4.name in warnings[1] and "corrupt (checksum mismatch)" in warnings[1]
    assert_bitwise_equal(initialization(tmp_path), reference)
    assert (RUN / "checkpoints" / f"{step6.name}.corrupt").is_file()
    assert [p.name for p in store.paths()] == ["step-000000006.pt", "step-000000008.pt"]


def test_no_readable_checkpoint_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "meta.meta_steps=2"]) == 0
    [only] = TrainStateStore(RUN / "checkpoints", keep=2).paths()
    only.write_bytes(b"garbage")
    capsys.readouterr()
    assert main(["train", *TINY, "resume=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("leap: error: no readable checkpoint in ")
    assert "step-000000002.pt" in err[-1]


def test_last_k_checkpoints_are_kept_and_hold_the_whole_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "meta.meta_steps=7", "checkpoint_every=2"]) == 0
    paths = TrainStateStore(RUN / "checkpoints", keep=2).paths()
    assert [p.name for p in paths] == ["step-000000006.pt", "step-000000007.pt"]
    assert not list((RUN / "checkpoints").glob(".*.tmp"))
    state = read_train_state(paths[-1])
    assert state["step"] == 7
    assert {"learner", "optimizer", "model", "rng", "run_id", "config"} <= state.keys()
    assert {"torch", "numpy", "python", "sampler"} <= state["rng"].keys()
    assert state["optimizer"]["state"] is not None


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "meta.meta_steps=2"]) == 0
    capsys.readouterr()
    assert main(["train", *TINY, "model.options.width=8", "resume=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leap: error: cannot resume") and "\n" not in err
    assert "model.options: {'width': 4} -> {'width': 8}" in err


def test_resume_false_starts_afresh_and_drops_old_checkpoints(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "meta.meta_steps=6"]) == 0
    capsys.readouterr()
    assert main(["train", *TINY, "meta.meta_steps=2"]) == 0
    assert "removed 2 checkpoint(s) of an earlier run" in capsys.readouterr().err
    assert [p.name for p in TrainStateStore(RUN / "checkpoints", 2).paths()] == [
        "step-000000002.pt"
    ]


def test_checkpoint_records_the_wandb_run_id_and_resume_checks_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "meta.meta_steps=2", "tracker=wandb"]) == 0
    [path] = TrainStateStore(RUN / "checkpoints", 2).paths()
    run_id = read_train_state(path)["run_id"]
    [wandb_run] = (tmp_path / "wandb").glob("offline-run-*")
    assert run_id and wandb_run.name.endswith(run_id)
    capsys.readouterr()
    assert main(["train", *TINY, "meta.meta_steps=2", "resume=someotherid"]) == 2
    err = capsys.readouterr().err
    assert f"belongs to W&B run {run_id!r}" in err
    assert main(["train", *TINY, "meta.meta_steps=3", "tracker=wandb", f"resume={run_id}"]) == 0
    resumed = read_train_state(TrainStateStore(RUN / "checkpoints", 2).paths()[-1])
    assert resumed["step"] == 3 and resumed["run_id"] == run_id  # the same W&B run, continued


@pytest.mark.slow
@pytest.mark.parametrize("calls", range(1, STEPS + 1))
def test_sigkill_at_every_meta_step(calls, reference, tmp_path, monkeypatch):
    proc = stopped_run(tmp_path, "SIGKILL", calls)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "resume=true"]) == 0
    assert_bitwise_equal(initialization(tmp_path), reference)


@pytest.mark.slow
def test_kill_chain_resumes_twice(reference, tmp_path, monkeypatch):
    first = stopped_run(tmp_path, "SIGKILL", 4)
    first.communicate(timeout=300)
    second = stopped_run(tmp_path, "SIGKILL", 3, "resume=true")  # dies in meta-step 4
    second.communicate(timeout=300)
    assert (first.returncode, second.returncode) == (-signal.SIGKILL, -signal.SIGKILL)
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "resume=true"]) == 0
    assert_bitwise_equal(initialization(tmp_path), reference)
