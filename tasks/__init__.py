"""Few-shot vision task distributions: the embedded glyph alphabets and real data sets."""

from tasks.base import (
    InnerLoopConfig,
    InnerLoopResult,
    Task,
    TaskDistribution,
    TrajectoryHook,
)
from tasks.glyph_tasks import glyph_tasks
from tasks.registry import TASKS, build, register

register("glyphs")(glyph_tasks)

__all__ = [
    "TASKS",
    "InnerLoopConfig",
    "InnerLoopResult",
    "Task",
    "TaskDistribution",
    "TrajectoryHook",
    "build",
    "register",
]
