"""Meta-learners: Leap and the baselines, one module each, one interface (`MetaLearner`)."""

from meta import leap as _leap  # noqa: F401  (registers leap, reptile)
from meta import scratch as _scratch  # noqa: F401  (registers scratch)
from meta.base import MetaLearner
from meta.leap import Leap, LeapTrajectory, Reptile
from meta.registry import META_LEARNERS, build, register
from meta.scratch import Scratch

__all__ = [
    "META_LEARNERS",
    "Leap",
    "LeapTrajectory",
    "MetaLearner",
    "Reptile",
    "Scratch",
    "build",
    "register",
]
