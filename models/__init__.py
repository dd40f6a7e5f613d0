"""Networks: ConvRNNs, feedforward baselines, and the registry that builds them by name."""

from models import conv4 as _conv4  # noqa: F401  (registers the model)
from models.registry import MODELS, build, register, reinitialize

__all__ = ["MODELS", "build", "register", "reinitialize"]
