"""The meta-learner registry: `build(name, model, parameters=..., seed=..., **options)`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from leap_convrnn.registry import Registry, check_options
from meta.base import MetaLearner

META_LEARNERS: Registry[type[MetaLearner]] = Registry("meta-learner")
register = META_LEARNERS.register

COMMON_ARGUMENTS = ("parameters", "seed")
"""Construction arguments every learner takes besides the model (see `MetaLearner`)."""


def check_learner_options(name: str, options: dict[str, Any]) -> None:
    """Raise a one-line UserError if `options` holds a keyword the learner `name` does not
    accept (the common arguments included)."""
    check_options(
        META_LEARNERS.get(name).__init__,
        options,
        f"meta-learner {name!r}",
        reserved=("model", "parameters", "seed"),
    )


def build(
    name: str,
    model: nn.Module,
    *,
    parameters: list[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> MetaLearner:
    """Build the meta-learner registered as `name` around `model`.

    `parameters` names the parameters whose initialization is learned (None: every
    trainable one) and `seed` seeds its fresh draws; `options` are the learner's own.
    """
    check_learner_options(name, options)
    learner: Callable[..., MetaLearner] = META_LEARNERS.get(name)
    return learner(model, parameters=parameters, seed=seed, **options)
