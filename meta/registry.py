"""The meta-learner registry: `build(name, model, **options) -> MetaLearner`."""

from __future__ import annotations

from typing import Any

from torch import nn

from experiments.registry import Registry, check_options

META_LEARNERS: Registry[Any] = Registry("meta-learner")
register = META_LEARNERS.register


def build(name: str, model: nn.Module, **options: Any) -> Any:
    """Build the meta-learner registered as `name` around `model`."""
    cls = META_LEARNERS.get(name)
    check_options(cls.__init__, options, f"meta-learner {name!r}")
    return cls(model, **options)
