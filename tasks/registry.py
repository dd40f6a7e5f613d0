"""The task registry: `build(name, split, root, **options) -> TaskDistribution`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leap_convrnn.registry import Registry, check_options
from tasks.base import TaskDistribution

TASKS: Registry[Callable[..., TaskDistribution]] = Registry("task")
register = TASKS.register


def build(name: str, split: str, root: str, **options: Any) -> TaskDistribution:
    """Build the task distribution `name` for `split` ("train", "validation", "test")."""
    builder = TASKS.get(name)
    check_options(builder, options, f"task {name!r}")
    return builder(split=split, root=root, **options)
