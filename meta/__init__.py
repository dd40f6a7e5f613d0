"""Meta-learners: Leap and the baselines, one module each, one interface (`MetaLearner`)."""

from meta import finetune as _finetune  # noqa: F401  (registers finetune)
from meta import leap as _leap  # noqa: F401  (registers leap, reptile)
from meta import maml as _maml  # noqa: F401  (registers maml, fomaml)
from meta import scratch as _scratch  # noqa: F401  (registers scratch)
from meta.base import FlatBuffer, FreshDraw, Initialization, MetaLearner
from meta.finetune import Finetune
from meta.leap import Leap, LeapTrajectory, Reptile
from meta.maml import FOMAML, MAML
from meta.registry import META_LEARNERS, build, check_learner_options, register
from meta.scratch import Scratch

__all__ = [
    "FOMAML",
    "MAML",
    "META_LEARNERS",
    "Finetune",
    "FlatBuffer",
    "FreshDraw",
    "Initialization",
    "Leap",
    "LeapTrajectory",
    "MetaLearner",
    "Reptile",
    "Scratch",
    "build",
    "check_learner_options",
    "register",
]
