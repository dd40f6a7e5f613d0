"""`leap compare`: runs side by side, read back through W&B's own reader.

Local runs (online or offline) are read from `<dir>/wandb/*run-*` with
`wandb leet inspect --summary --json`, which returns each run's config and summary.
Runs are grouped by experiment, job, method, model and task; each metric is shown
as mean and 95% CI over the runs (seeds) of a group.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.errors import UserError
from experiments.report import print_table
from experiments.stats import format_ci, mean_ci

DEFAULT_METRICS = {
    "meta-train": ["meta/objective", "task/auc", "task/test_accuracy"],
    "evaluate": ["eval/{method}/auc", "eval/{method}/accuracy"],
}


@dataclass
class RunRecord:
    """One run as W&B stored it."""

    path: Path
    name: str
    group: str
    job_type: str
    config: dict[str, Any]
    summary: dict[str, Any]


def _wandb_cli() -> str:
    return str(Path(sys.executable).with_name("wandb"))


def read_run(run_dir: Path) -> RunRecord:
    """Read one W&B run directory with `wandb leet inspect --summary --json`."""
    out = subprocess.run(
        [_wandb_cli(), "leet", "inspect", "--summary", "--json", str(run_dir)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise UserError(f"cannot read W&B run {str(run_dir)!r}: {out.stderr.strip()[:200]}")
    data = json.loads(out.stdout)
    config = data.get("config") or {}
    return RunRecord(
        path=run_dir,
        name=data.get("name", run_dir.name),
        group=str(config.get("experiment", "")),
        job_type="evaluate" if "eval/init" in (data.get("summary") or {}) else "meta-train",
        config=config,
        summary=data.get("summary") or {},
    )


def find_runs(directory: Path) -> list[Path]:
    """W&B run directories under `directory/wandb` (or `directory` itself)."""
    base = directory / "wandb" if (directory / "wandb").is_dir() else directory
    return sorted(p for p in base.glob("*run-*") if p.is_dir() and any(p.glob("*.wandb")))


def _key(run: RunRecord) -> tuple[str, ...]:
    c = run.config
    return (
        run.group,
        run.job_type,
        str(c.get("meta", {}).get("name", "?")),
        str(c.get("model", {}).get("name", "?")),
        str(c.get("task", {}).get("name", "?")),
    )


def compare(
    directory: Path,
    group: str | None = None,
    metrics: list[str] | None = None,
    markdown: bool = False,
) -> list[list[str]]:
    """Print (and return) the comparison table of the runs under `directory`."""
    paths = find_runs(directory)
    if not paths:
        raise UserError(f"no W&B runs under {str(directory)!r} (looked in {str(directory / 'wandb')!r})")
    runs = [read_run(p) for p in paths]
    if group is not None:
        runs = [r for r in runs if r.group == group]
        if not runs:
            raise UserError(f"no runs in group {group!r} under {str(directory)!r}")
    grouped: dict[tuple[str, ...], list[RunRecord]] = defaultdict(list)
    for run in runs:
        grouped[_key(run)].append(run)
    rows: list[list[str]] = []
    for key in sorted(grouped):
        members = grouped[key]
        experiment, job, method, model, task = key
        names = metrics or _default_metrics(job, members)
        for metric in names:
            values = [float(r.summary[metric]) for r in members if _is_number(r.summary.get(metric))]
            if not values:
                continue
            rows.append([experiment, job, method, model, task, metric,
                         format_ci(*mean_ci(values), digits=4), str(len(values))])
    print_table("leap compare", ["experiment", "job", "method", "model", "task", "metric",
                                 "mean ± 95% CI", "runs"], rows, markdown=markdown)
    return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _default_metrics(job: str, members: list[RunRecord]) -> list[str]:
    if job == "meta-train":
        return DEFAULT_METRICS[job]
    methods = sorted({k.split("/")[1] for r in members for k in r.summary
                      if k.startswith("eval/") and k.endswith("/auc")})
    return [m.format(method=method) for method in methods for m in DEFAULT_METRICS[job]]
