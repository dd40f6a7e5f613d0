"""`leap compare`: runs side by side, read back from W&B (`experiments.runs`).

Runs are grouped by experiment (the W&B group), job type, method, model and task, and
within those by their settings: runs that differ in any config value other than the seed
(and where they write or log) are never pooled; the `settings` column names the keys
that differ and the row's values. Each metric is shown as mean and 95% CI over the runs
(seeds) of a row, and learning curves are drawn with CI bands by `experiments.plots`.
Segments of a resumed run count as one run; runs that ended with a non-zero exit code
(failed or crashed) are left out, and of reruns of one config and seed the latest
counts (both said on stderr). An evaluate row names the initialization it measures.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments.report import print_table
from experiments.runs import RunRecord, is_number
from experiments.stats import format_ci, mean_ci
from leap_convrnn.errors import UserError
from leap_convrnn.registry import did_you_mean

DEFAULT_METRICS = {
    "meta-train": [
        "meta/objective",
        "task/auc",
        "task/test_accuracy",
        "atari/normalized_score",
        "task/test_normalized_score",
        "perf/tasks_per_s",
    ],
    "evaluate": [
        "eval/{method}/auc",
        "eval/{method}/accuracy",
        "eval/{method}/normalized_score",
        "eval/{method}/episode_return",
    ],
}
COLUMNS = [
    "experiment",
    "job",
    "method",
    "model",
    "task",
    "settings",
    "initialization",
    "metric",
    "mean ± 95% CI",
    "runs",
]


@dataclass(frozen=True)
class ComparisonRow:
    """One metric of one group of runs: mean and 95% CI half-width over its runs."""

    experiment: str
    job: str
    method: str
    model: str
    task: str
    settings: str
    metric: str
    mean: float
    ci95: float
    runs: int
    initialization: str = "-"

    def cells(self) -> list[str]:
        return [
            self.experiment,
            self.job,
            self.method,
            self.model,
            self.task,
            self.settings or "-",
            self.initialization,
            self.metric,
            format_ci(self.mean, self.ci95, digits=4),
            str(self.runs),
        ]


def _default_metrics(job: str, members: Sequence[RunRecord]) -> list[str]:
    if job != "evaluate":
        return DEFAULT_METRICS["meta-train"]
    methods = sorted(
        {
            k.split("/")[1]
            for r in members
            for k in r.summary
            if k.startswith("eval/") and k.endswith("/auc") and k.count("/") == 2
        }
    )
    return [m.format(method=method) for method in methods for m in DEFAULT_METRICS["evaluate"]]


def initialization(members: Sequence[RunRecord], metric: str) -> str:
    """What an evaluate row's metric measures: the run directories of the initializations
    that `eval/<method>/...` started from (from the runs' `eval/<method>/init`), or
    "random" for a baseline; "-" for meta-training rows."""
    parts = metric.split("/")
    if len(parts) < 3 or parts[0] != "eval":
        return "-"
    names: list[str] = []
    for run in members:
        described = run.summary.get(f"eval/{parts[1]}/init")
        if not isinstance(described, str):
            continue
        for line in described.split(" | "):
            path = line.split(", ")[0]
            name = Path(path).parent.name if path.endswith(".pt") else "random"
            if name not in names:
                names.append(name)
    if not names:
        return "?"
    return ", ".join(names)


def check_metrics(runs: Sequence[RunRecord], metrics: Sequence[str]) -> None:
    """Raise UserError naming a metric that no run has, and the metrics that exist."""

    known = sorted(
        {
            name
            for r in runs
            for name in r.metric_names()
            if not name.startswith("_") and (name in r.history or is_number(r.summary[name]))
        }
    )
    for metric in metrics:
        if metric not in known:
            hint = did_you_mean(metric, known)
            raise UserError(
                f"unknown --metric {metric!r}{hint}; metrics in these runs: {', '.join(known)}"
            )


def summarize(
    runs: Sequence[RunRecord], metrics: Sequence[str] | None = None
) -> list[ComparisonRow]:
    """Mean and 95% CI of each metric's summary value over the runs of each row (runs
    of one key and settings, see `RunRecord.row_key`)."""
    grouped: dict[tuple[str, str, str, str, str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        grouped[run.row_key].append(run)
    rows: list[ComparisonRow] = []
    for key in sorted(grouped):
        members = grouped[key]
        for metric in metrics or _default_metrics(key[1], members):
            values = [float(r.summary[metric]) for r in members if is_number(r.summary.get(metric))]
            if values:
                mean, half = mean_ci(values)
                rows.append(
                    ComparisonRow(
                        *key,
                        metric=metric,
                        mean=mean,
                        ci95=half,
                        runs=len(values),
                        initialization=initialization(members, metric)
                        if key[1] == "evaluate"
                        else "-",
                    )
                )
    return rows


def print_rows(rows: Sequence[ComparisonRow], markdown: bool = False) -> None:
    """The table: Markdown, rich on a terminal, or, when stdout is not a terminal (a
    pipe, a file), rich at the table's full width so that no cell is cut."""
    cells = [r.cells() for r in rows]
    if markdown or sys.stdout.isatty():
        print_table("leap compare", COLUMNS, cells, markdown=markdown)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="leap compare")
    for column in COLUMNS:
        table.add_column(column, no_wrap=True)
    for row in cells:
        table.add_row(*row)
    widths = [max(len(c) for c in column) for column in zip(COLUMNS, *cells, strict=True)]
    width = sum(widths) + 3 * len(widths) + 1
    Console(file=sys.stdout, width=width, soft_wrap=False).print(table)


def compare(
    runs: Sequence[RunRecord],
    metrics: Sequence[str] | None = None,
    markdown: bool = False,
    plots: Path | None = None,
) -> list[ComparisonRow]:
    """Print the comparison table of `runs` (and return its rows); with `plots`, write
    PNG learning curves with 95% CI bands there and print their paths."""
    if metrics:
        check_metrics(runs, metrics)
    rows = summarize(runs, metrics)
    print_rows(rows, markdown=markdown)
    if plots is not None:
        from experiments.plots import plot_learning_curves

        written = plot_learning_curves(runs, plots, extra_metrics=metrics or ())
        for path in written:
            print(f"plot: {path}")
        if not written:
            print("leap compare: no learning curve to plot", file=sys.stderr)
    return rows
