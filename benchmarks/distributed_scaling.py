"""Distributed meta-training: meta-steps per second with 1 and 2 ranks, in one run.

    python -m benchmarks.distributed_scaling [--ranks 2] [--meta-steps 10] [--repeats 2]

Each configuration is a real `leap train` run (Leap on 20-way glyph tasks, conv4,
`--meta-batch` tasks of `--inner-steps` SGD steps per meta-step, `tracker=none`), one
intra-op thread per rank (OMP_NUM_THREADS=1): `distributed=1`, then `distributed=N`
(`leap train distributed=N`: N local processes, gloo, the meta-batch split across
them and the meta-gradient all-reduced). The two alternate `--repeats` times so that
drift in the machine's load hits both alike.

A rate is 1 / the median of rank 0's `perf/seconds_per_meta_step` over the meta-steps
after `--warmup` (rank 0's step time includes its waits for the other ranks, so it is
the distributed step's time; process start-up and data loading are not counted).
`speedup` = rate with N ranks / rate with 1, from the medians over repeats. Target on
the 2-core development machine: at least 1.6. On a machine that other processes load,
the N ranks do not get N cores and the figure says so; `load_average` is recorded.
`cpu_time_speedup` is the same ratio in rank 0's CPU time per meta-step (its share of
the work plus the collectives' own cost, without the time spent waiting for a core or
for the other ranks): the speedup the ranks would get with a core each.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

TARGET = 1.6
RUN = "scaling"


def machine() -> dict[str, Any]:
    """The machine and library versions, for the JSON record."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def overrides(args: argparse.Namespace, ranks: int) -> list[str]:
    """The `leap train` overrides of one measured run."""
    return [
        "experiment=glyphs_demo",
        f"name={RUN}",
        f"model.options.width={args.width}",
        f"meta.meta_steps={args.meta_steps}",
        f"meta.meta_batch_size={args.meta_batch}",
        f"meta.inner_steps={args.inner_steps}",
        f"checkpoint_every={args.meta_steps}",
        "tracker=none",
        "progress=false",
        f"distributed={ranks}",
    ]


def measure(args: argparse.Namespace, ranks: int, directory: Path) -> tuple[float, float]:
    """Meta-steps per second of one `leap train` run with `ranks` ranks, in wall-clock
    time and in rank 0's CPU time."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "experiments.cli", "train", *overrides(args, ranks)]
    done = subprocess.run(command, cwd=directory, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(command)}` failed ({done.returncode}):\n{done.stderr}")
    lines = (directory / "runs" / RUN / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines][args.warmup :]
    wall = statistics.median(r["perf/seconds_per_meta_step"] for r in records)
    cpu = statistics.median(r["perf/cpu_seconds_per_meta_step"] for r in records)
    return 1.0 / wall, 1.0 / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=2, help="ranks to compare with 1")
    parser.add_argument("--meta-steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="meta-steps left out")
    parser.add_argument("--meta-batch", type=int, default=8, help="tasks per meta-batch")
    parser.add_argument("--inner-steps", type=int, default=20)
    parser.add_argument("--width", type=int, default=32, help="conv4 filters per block")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.meta_steps <= args.warmup:
        parser.error("--meta-steps must exceed --warmup")
    rates: dict[int, list[float]] = {1: [], args.ranks: []}
    cpu_rates: dict[int, list[float]] = {1: [], args.ranks: []}
    with tempfile.TemporaryDirectory(prefix="distributed_scaling.") as root:
        for repeat in range(args.repeats):
            for ranks in rates:
                rate, cpu_rate = measure(args, ranks, Path(root) / f"r{repeat}-n{ranks}")
                rates[ranks].append(rate)
                cpu_rates[ranks].append(cpu_rate)
                print(f"repeat {repeat}: {ranks} rank(s): {rate:.3f} meta-steps/s", flush=True)
    median = {ranks: statistics.median(values) for ranks, values in rates.items()}
    cpu_median = {ranks: statistics.median(values) for ranks, values in cpu_rates.items()}
    speedup = median[args.ranks] / median[1]
    record = {
        "benchmark": "distributed_scaling",
        "meta_steps_per_s": {str(k): round(v, 4) for k, v in median.items()},
        "runs": {str(k): [round(r, 4) for r in v] for k, v in rates.items()},
        "speedup": round(speedup, 3),
        "cpu_time_speedup": round(cpu_median[args.ranks] / cpu_median[1], 3),
        "target": TARGET,
        "meets_target": speedup >= TARGET,
        "threads_per_rank": 1,
        "config": {k: v for k, v in vars(args).items()},
        "machine": machine(),
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
