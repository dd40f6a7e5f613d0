"""Tables printed for people: evaluation results and run comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from experiments.stats import format_ci, mean_ci

if TYPE_CHECKING:  # the runner imports torch; `leap compare` does not need it
    from experiments.evaluate import MethodResult


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False
) -> None:
    """Print a table with rich, or as Markdown."""
    if markdown:
        print(f"**{title}**\n")
        print("| " + " | ".join(columns) + " |")
        print("|" + "|".join("---" for _ in columns) + "|")
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(soft_wrap=False).print(table)


def print_evaluation(results: Sequence[MethodResult], title: str) -> None:
    """Method | AUC | each held-out metric | n, each mean ± 95% CI over tasks."""
    held_keys = list(results[0].held_out) if results else []
    rows = [
        [
            r.method,
            format_ci(*mean_ci(r.auc)),
            *[format_ci(*mean_ci(r.held_out.get(key, []))) for key in held_keys],
            str(len(r.auc)),
        ]
        for r in results
    ]
    columns = [
        "method",
        "train-loss AUC (lower is better)",
        *[f"held-out {key.replace('_', ' ')}" for key in held_keys],
        "tasks",
    ]
    print_table(title, columns, rows)
