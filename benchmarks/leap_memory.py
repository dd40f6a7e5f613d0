"""Peak memory of one meta-step: Leap at K = 20 and K = 200, learn2learn's MAML at small K.

    python -m benchmarks.leap_memory [--leap-steps 20 200] [--maml-steps 1 2 5 10]

Each configuration runs in a fresh Python process (conv4 on a 20-way glyph task,
minibatches of 20, SGD inner loop, one task per meta-batch, then the meta-optimizer
step). The figure is what the meta-step itself needs: the peak resident set size of
the process during the meta-step minus its resident size just before. The peak is the
kernel's own high-water mark (VmHWM in /proc/self/status), reset just before the step
by writing 5 to /proc/self/clear_refs, so it sees every allocation (torch's CPU
allocator included, which tracemalloc does not); where that reset is not available,
`ru_maxrss` is used instead and the figure is marked.

Allocator: glibc raises its mmap threshold each time a large block is freed, after which
activation-sized blocks come from the heap, whose fragmentation then creeps with the
number of allocations (so with K) whatever the program keeps alive. The measured
processes therefore pin the threshold at glibc's initial 128 KiB
(MALLOC_MMAP_THRESHOLD_=131072): large blocks are mapped and unmapped, and the
resident size follows live memory. Leap is also measured under glibc's defaults, for
reference (`leap_memory_ratio_glibc_default`).

Leap accumulates its meta-gradient on the fly, so its memory must not grow with K:
`leap_memory_ratio` = memory(K = 200) / memory(K = 20), medians of `--repeats` fresh
processes each, target at most 1.05. The plain inner loop (no meta-learner) is given for
reference. Second-order MAML (learn2learn, through `meta.MAML`) keeps the graph of every
adaptation step, so its memory grows with K. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

TARGET = 1.05
MMAP_THRESHOLD = 131072


def _status_kib(field: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(method: str, steps: int, width: int, seed: int) -> dict[str, Any]:
    """One meta-step of `method` with K = `steps`, in this (fresh) process."""
    from benchmarks.leap_overhead import glyph_tasks
    from meta import MAML, Leap
    from tasks.base import InnerLoopConfig

    torch.set_num_threads(1)
    dist, [task] = glyph_tasks(1, seed)
    torch.manual_seed(seed)
    model = dist.make_model("conv4", {"width": width})
    learner = MAML(model) if method == "maml" else Leap(model)
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.1)
    if method == "plain":  # the inner loop alone, with no meta-learner
        learner.initialize(model)
    inner = InnerLoopConfig(steps=steps, optimizer="sgd", lr=0.1, batch_size=20)
    before_kib = _status_kib("VmRSS")
    exact = _reset_peak() and before_kib is not None
    started = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    if method == "plain":
        result = task.inner_loop(model, inner)
    else:
        result = learner.adapt(model, task, inner)
        learner.end_meta_batch()
        optimizer.step()
    seconds = time.perf_counter() - started
    if exact:
        peak_kib = _status_kib("VmHWM")
        assert peak_kib is not None and before_kib is not None
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        before_kib = before_kib or 0
    return {
        "method": method,
        "steps": steps,
        "rss_before_mib": round(before_kib / 1024, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "meta_step_mib": round((peak_kib - before_kib) / 1024, 1),
        "peak_source": "VmHWM after clear_refs" if exact else "ru_maxrss (process lifetime)",
        "seconds": round(seconds, 2),
        "losses": int(result.losses.numel()),
    }


def run_child(
    method: str, steps: int, width: int, seed: int, pin_mmap: bool = True
) -> dict[str, Any]:
    """Run one configuration in a fresh process and return its record."""
    command = [
        sys.executable, "-m", "benchmarks.leap_memory", "--child", method, str(steps),
        "--width", str(width), "--seed", str(seed),
    ]  # fmt: skip
    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if pin_mmap:
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    out = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{method} K={steps} failed:\n{out.stderr[-2000:]}")
    record: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    record["malloc"] = f"mmap threshold {MMAP_THRESHOLD}" if pin_mmap else "glibc default"
    return record


def median_run(
    method: str, steps: int, args: argparse.Namespace, pin_mmap: bool = True
) -> dict[str, Any]:
    """The run with the median meta-step memory among `args.repeats` fresh processes."""
    runs = [run_child(method, steps, args.width, args.seed, pin_mmap) for _ in range(args.repeats)]
    runs.sort(key=lambda r: r["meta_step_mib"])
    chosen = dict(runs[len(runs) // 2])
    chosen["repeats_mib"] = [r["meta_step_mib"] for r in runs]
    return chosen


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--leap-steps", type=int, nargs=2, default=[20, 200])
    parser.add_argument("--maml-steps", type=int, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--width", type=int, default=64, help="conv4 filters per block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per Leap figure")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        record = child(args.child[0], int(args.child[1]), args.width, args.seed)
        print(json.dumps(record), flush=True)
        return record

    from benchmarks.leap_overhead import glyph_tasks, machine

    glyph_tasks(1, args.seed)  # build the glyph cache once, outside the measured children
    leap = [median_run("leap", k, args) for k in args.leap_steps]
    plain = [run_child("plain", k, args.width, args.seed) for k in args.leap_steps]
    default = [median_run("leap", k, args, pin_mmap=False) for k in args.leap_steps]
    maml = [run_child("maml", k, args.width, args.seed) for k in args.maml_steps]

    def ratio(pair: list[dict[str, Any]]) -> float:
        return float(pair[1]["meta_step_mib"] / pair[0]["meta_step_mib"])

    report = {
        "benchmark": "leap_memory",
        "leap_memory_ratio": round(ratio(leap), 4),
        "target": TARGET,
        "meets_target": ratio(leap) <= TARGET,
        "leap_meta_step_mib": {str(r["steps"]): r["meta_step_mib"] for r in leap},
        "plain_inner_loop_mib": {str(r["steps"]): r["meta_step_mib"] for r in plain},
        "maml_meta_step_mib": {str(r["steps"]): r["meta_step_mib"] for r in maml},
        "maml_mib_per_step": round(
            float(np.polyfit([r["steps"] for r in maml], [r["meta_step_mib"] for r in maml], 1)[0]),
            1,
        ),
        "leap_memory_ratio_glibc_default": round(ratio(default), 4),
        "leap_meta_step_mib_glibc_default": {str(r["steps"]): r["meta_step_mib"] for r in default},
        "runs": leap + plain + maml + default,
        "config": {
            "model": "conv4",
            "width": args.width,
            "task": "glyphs 20-way, 15 shots",
            "batch_size": 20,
            "inner_optimizer": "sgd",
            "meta_batch": 1,
            "maml": "learn2learn MAML, second order, through meta.MAML",
            "measure": "peak RSS during the meta-step minus RSS before it, fresh process each",
            "malloc": f"MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD} (see docstring)",
            "repeats": args.repeats,
            "torch_threads": 1,
        },
        "machine": {**machine(), "torch_threads": 1},
    }
    print(json.dumps(report), flush=True)
    return report


if __name__ == "__main__":
    main()
