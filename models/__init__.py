"""Networks: ConvRNNs, feedforward baselines, and the registry that builds them by name."""

from models import atari_encoders as _atari  # noqa: F401  (registers mnih2013, nature_cnn)
from models import conv4 as _conv4  # noqa: F401  (registers the model)
from models import convrnn_configs as _convrnn  # noqa: F401  (registers the ConvRNNs)
from models.registry import MODELS, build, register, reinitialize

__all__ = ["MODELS", "build", "register", "reinitialize"]
