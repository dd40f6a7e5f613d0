"""Distributed meta-training with torch.distributed: one meta-batch, split across ranks.

Every rank builds the same task distribution and draws the same meta-batch from the
same sampler state; rank r adapts to tasks r, r + N, r + 2N, ... of it. After the
meta-batch, each rank's meta-gradient (its learner's mean over its own tasks) is
weighted by its number of tasks and summed over ranks with one all-reduce, then
divided by the total number of tasks: the mean over the whole meta-batch, whatever
way the tasks split. Only rank 0 logs and writes checkpoints.

Two launchers: `leap train distributed=N` starts N local processes itself, and
`torchrun --nproc_per_node=N -m experiments.cli train ...` (single or multi-node)
does the same through the environment variables torchrun sets (RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT). The backend is gloo on CPU, and NCCL for CUDA tensors.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

from leap_convrnn.errors import UserError

T = TypeVar("T")

#: Seconds the launcher gives the other ranks to stop once one of them has failed.
GRACE_SECONDS = 10.0


def under_launcher() -> bool:
    """True inside a process started by torchrun or by `launch` (WORLD_SIZE is set)."""
    return "WORLD_SIZE" in os.environ


def backend() -> str:
    """gloo for CPU tensors; NCCL for CUDA tensors where CUDA and NCCL are available."""
    if torch.cuda.is_available() and torch_dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


@dataclass(frozen=True)
class Ranks:
    """This process's place among the meta-training processes."""

    rank: int = 0
    world_size: int = 1
    #: Whether `setup` started the process group (and `teardown` must end it).
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of a meta-batch: items rank, rank + N, rank + 2N, ..."""
        return list(items[self.rank :: self.world_size])


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def setup(meta_batch_size: int) -> Ranks:
    """Join the process group the environment describes (a single process when none does)."""
    if not under_launcher():
        return Ranks()
    world_size, rank = _env_int("WORLD_SIZE"), _env_int("RANK")
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"RANK={rank} and WORLD_SIZE={world_size} do not describe a rank")
    if world_size == 1:
        return Ranks()
    if meta_batch_size < world_size:
        raise UserError(
            f"{world_size} ranks need meta.meta_batch_size >= {world_size} "
            f"(one task per rank at least), got {meta_batch_size}"
        )
    owns = not torch_dist.is_initialized()
    if owns:
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", rank))
            torch.cuda.set_device(local % torch.cuda.device_count())
        torch_dist.init_process_group(backend(), rank=rank, world_size=world_size)
    return Ranks(rank=rank, world_size=world_size, owns_group=owns)


def teardown(ranks: Ranks) -> None:
    """Leave the process group if `setup` created it."""
    if ranks.owns_group and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def gather(ranks: Ranks, value: T) -> list[T]:
    """Every rank's `value`, in rank order (a picklable object)."""
    if not ranks.active:
        return [value]
    out: list[Any] = [None] * ranks.world_size
    torch_dist.all_gather_object(out, value)
    return out


def broadcast(ranks: Ranks, value: T) -> T:
    """Rank 0's `value`, on every rank."""
    if not ranks.active:
        return value
    box: list[Any] = [value]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def reduce_meta_gradient(params: Sequence[nn.Parameter], weight: int, total: int) -> float:
    """Replace each rank's `.grad` by the task-weighted mean over ranks; return its norm.

    On entry, `.grad` holds this rank's mean over its `weight` tasks (ignored when
    `weight` is 0, so a rank whose tasks were all dropped contributes nothing, not
    NaN); `total` is the sum of the weights over ranks and must be positive. The sum
    is taken in float64, in one all-reduce.
    """
    if not params:
        return 0.0
    device = params[0].device
    sizes = [p.numel() for p in params]
    if weight > 0:
        parts = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params
        ]
        flat = torch.cat(parts).to(torch.float64).mul_(weight)
    else:
        flat = torch.zeros(sum(sizes), dtype=torch.float64, device=device)
    torch_dist.all_reduce(flat)
    flat.div_(total)
    for p, chunk in zip(params, flat.split(sizes), strict=True):
        if p.grad is None:
            p.grad = torch.empty_like(p)
        p.grad.copy_(chunk.view(p.shape))
    return float(flat.norm())


def merge_metrics(parts: Sequence[tuple[int, Mapping[str, float]]]) -> dict[str, float]:
    """Task-weighted means over ranks of per-rank metrics (each a mean over its tasks)."""
    totals: dict[str, float] = {}
    weights: dict[str, int] = {}
    for weight, metrics in parts:
        if weight <= 0:
            continue
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + weight * float(value)
            weights[key] = weights.get(key, 0) + weight
    return {key: totals[key] / weights[key] for key in totals}


class NullTracker:
    """The tracker of ranks other than 0: same methods as `Tracker`, records nothing."""

    mode = "none"
    run_id: str | None = None

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Discard `metrics`."""

    def summary(self, values: Mapping[str, Any]) -> None:
        """Discard `values`."""

    def table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Discard the table."""

    def artifact(self, path: Path, name: str, kind: str, metadata: Mapping[str, Any]) -> None:
        """Discard the artifact."""

    def finish(self, exit_code: int = 0) -> None:
        """Nothing to close."""


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def threads_per_rank(world_size: int) -> int:
    """Intra-op threads for each of `world_size` local ranks: the cores, shared out."""
    return max(1, (os.cpu_count() or 1) // world_size)


def launch(argv: Sequence[str], world_size: int) -> int:
    """Run `leap <argv>` as `world_size` local ranks; return the run's exit code.

    Each rank is `python -m experiments.cli <argv>` with RANK, WORLD_SIZE and a
    rendezvous on localhost in its environment (OMP_NUM_THREADS shares out the cores
    unless it is set). The ranks run in their own session: SIGINT and SIGTERM reach
    them through this process, once each, so that they stop after the same meta-step.
    If a rank fails, the others are given `GRACE_SECONDS` to stop, then terminated.
    The exit code is rank 0's if it failed, else the first failing rank's, else 0.
    """
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
    }
    env.setdefault("OMP_NUM_THREADS", str(threads_per_rank(world_size)))
    command = [sys.executable, "-m", "experiments.cli", *argv]
    procs = [
        subprocess.Popen(
            command,
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            start_new_session=True,
        )
        for rank in range(world_size)
    ]

    def forward(signum: int, frame: FrameType | None) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        failed_at = math.inf
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):
                failed_at = min(failed_at, time.monotonic())
                if time.monotonic() - failed_at > GRACE_SECONDS:
                    for proc in procs:
                        if proc.poll() is None:
                            proc.terminate()
            time.sleep(0.1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    codes = [p.returncode if p.returncode >= 0 else 128 - p.returncode for p in procs]
    return codes[0] if codes[0] != 0 else next((c for c in codes if c != 0), 0)
