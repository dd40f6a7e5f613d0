"""Distributed meta-training: 2 gloo ranks learn the initialization 1 process learns."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.checkpoint import TrainStateStore
from experiments.cli import main
from experiments.distributed import Ranks, merge_metrics
from tests.conftest import SMALL_GLYPHS

# A meta-batch of 3 splits unevenly (2 + 1) over 2 ranks. Leap's meta-gradient is
# chaotic in the initialization on this tiny problem (a float32 rounding difference
# grows ~10x per meta-step at meta_lr 0.1), so the run is short and the step small.
ARGS = [
    "experiment=glyphs_demo",
    *SMALL_GLYPHS,
    "model.options.width=4",
    "meta.meta_steps=3",
    "meta.meta_batch_size=3",
    "meta.inner_steps=2",
    "meta.meta_lr=0.01",
    "tracker=none",
    "progress=false",
    "checkpoint_every=2",
]
RUN = Path("runs") / "glyphs_demo-leap-conv4-seed0"


def read_run(directory: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = torch.load(directory / RUN / "init.pt", weights_only=True)["state_dict"]
    metrics = [json.loads(line) for line in (directory / RUN / "metrics.jsonl").open()]
    return state, metrics


def test_shard_splits_a_meta_batch_round_robin():
    tasks = list(range(7))
    shards = [Ranks(rank=r, world_size=3).shard(tasks) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(t for shard in shards for t in shard) == tasks


def test_merge_metrics_weights_each_rank_by_its_tasks():
    merged = merge_metrics([(2, {"a": 1.0, "b": 4.0}), (1, {"a": 4.0}), (0, {"a": 100.0})])
    assert merged == {"a": 2.0, "b": 4.0}


def test_two_gloo_ranks_match_one_process(tmp_path, monkeypatch):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    monkeypatch.chdir(tmp_path / "two")
    assert main(["train", *ARGS, "distributed=2"]) == 0
    monkeypatch.chdir(tmp_path / "one")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *ARGS]) == 0
    finally:
        torch.set_num_threads(threads)
    one, one_metrics = read_run(tmp_path / "one")
    two, two_metrics = read_run(tmp_path / "two")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-6, msg=name)
    assert [m["_step"] for m in two_metrics] == [0, 1, 2]  # rank 0 alone logged
    for key in ("meta/objective", "meta/grad_norm", "task/auc", "task/test_accuracy"):
        assert [m[key] for m in two_metrics] == pytest.approx([m[key] for m in one_metrics])
    assert all(m["meta/dropped_tasks"] == 0 for m in two_metrics)
    stored = [p.name for p in TrainStateStore(tmp_path / "two" / RUN / "checkpoints", 3).paths()]
    assert stored == ["step-000000002.pt", "step-000000003.pt"]


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_rank_after_one_step(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.cli",
            "train",
            *ARGS,
            "meta.meta_steps=10000",
            "distributed=2",
            "checkpoint_every=100000",
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoints = tmp_path / RUN / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (checkpoints.exists() and checkpoints.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.count("leap: SIGTERM: stopped after meta-step") == 1
    [path] = TrainStateStore(tmp_path / RUN / "checkpoints", 3).paths()
    assert path.exists()


@pytest.mark.slow
def test_torchrun_runs_the_same_training(tmp_path):
    (tmp_path / "torchrun").mkdir()
    (tmp_path / "leap").mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [*torchrun, "-m", "experiments.cli", "train", *ARGS],
        cwd=tmp_path / "torchrun",
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "-m", "experiments.cli", "train", *ARGS, "distributed=2"],
        cwd=tmp_path / "leap",
        env=env,
        check=True,
        capture_output=True,
    )
    a, _ = read_run(tmp_path / "torchrun")
    b, _ = read_run(tmp_path / "leap")
    for name in a:
        assert torch.equal(a[name], b[name]), name
