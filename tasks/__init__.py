"""Few-shot vision task distributions: the embedded glyph alphabets and real data sets."""

from typing import Any

from tasks.base import (
    InnerLoopConfig,
    InnerLoopResult,
    Task,
    TaskDistribution,
    TrajectoryHook,
)
from tasks.episodes import (
    cifarfs_episodes,
    glyph_episodes,
    mini_imagenet_episodes,
    omniglot_episodes,
)
from tasks.glyph_tasks import glyph_tasks
from tasks.multicv import multicv_offline_tasks, multicv_tasks
from tasks.omniglot import omniglot_tasks
from tasks.registry import TASKS, build, register


@register("atari")
def atari_games(split: str, root: str, game_pool: str | list[str] = "leap", **options: Any) -> Any:
    """Atari games as tasks (`envs.build`); `root` is unused: the ROMs ship inside ale-py."""
    import envs

    return envs.build(game_pool, split, **options)


register("glyphs")(glyph_tasks)
register("omniglot")(omniglot_tasks)
register("omniglot_fewshot")(omniglot_episodes)
register("miniimagenet_fewshot")(mini_imagenet_episodes)
register("cifarfs_fewshot")(cifarfs_episodes)
register("glyphs_fewshot")(glyph_episodes)
register("multicv")(multicv_tasks)
register("multicv_offline")(multicv_offline_tasks)

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
