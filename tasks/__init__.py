"""Task families: the task contract (`tasks.base`) and the vision families.

A family is registered by name in `TASKS` where it is defined; a package above this one
may register its own (envs/ registers "atari"). `build(name, split, root, **options)`
returns a `TaskDistribution`.
"""

from tasks import episodes as _episodes  # noqa: F401  (registers the *_fewshot families)
from tasks import glyph_tasks as _glyphs  # noqa: F401  (registers glyphs)
from tasks import multicv as _multicv  # noqa: F401  (registers multicv, multicv_offline)
from tasks import omniglot as _omniglot  # noqa: F401  (registers omniglot)
from tasks.base import (
    InnerLoopConfig,
    InnerLoopResult,
    Task,
    TaskDistribution,
    TrajectoryHook,
)
from tasks.registry import TASKS, build, register

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
