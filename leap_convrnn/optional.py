"""Imports of optional third-party packages: one-line errors naming the extra to install.

The core (Leap, the models, the glyph tasks, the runner) needs torch, W&B and Hydra only.
Each optional family of the project names the extra of `pyproject.toml` that brings its
dependencies:

    atari         gymnasium, ale-py, opencv        (envs/: Atari games)
    fewshot       learn2learn                      (MAML, FOMAML, N-way K-shot episodes)
    search        optuna                           (`leap search`)
    offline-data  scikit-learn, scikit-image       (the offline Multi-CV sets)
    analysis      rsatoolbox, scikit-learn         (`leap analyze`)
"""

from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from types import ModuleType

from leap_convrnn.errors import UserError

EXTRAS = {
    "ale_py": "atari",
    "gymnasium": "atari",
    "cv2": "atari",
    "learn2learn": "fewshot",
    "optuna": "search",
    "sklearn": "offline-data",
    "skimage": "offline-data",
    "rsatoolbox": "analysis",
}
"""Top-level module -> the extra of leap-convrnn that installs it."""

DISTRIBUTIONS = {
    "cv2": "opencv-python-headless",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
}
"""Top-level modules whose PyPI distribution has another name."""


class MissingDependency(UserError):
    """An optional dependency is not installed; the message names the extra to install."""


def missing_dependency(module: str, purpose: str) -> MissingDependency:
    """The error for `module` missing when `purpose` needs it."""
    top = module.partition(".")[0]
    extra = EXTRAS.get(top)
    package = DISTRIBUTIONS.get(top, top.replace("_", "-"))
    how = f"pip install 'leap-convrnn[{extra}]'" if extra else f"pip install {package}"
    return MissingDependency(f"{purpose} needs {package}, which is not installed: {how}")


def require(module: str, purpose: str) -> ModuleType:
    """Import `module`, or raise a one-line `MissingDependency` that names its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if error.name is not None and error.name.partition(".")[0] != module.partition(".")[0]:
            raise  # the package is there but broken: let the real error show
        raise missing_dependency(module, purpose) from None


def import_learn2learn(purpose: str = "this method") -> ModuleType:
    """Import learn2learn without the deprecation banner its `import gym` prints.

    learn2learn 0.2.0 imports the unmaintained `gym`, which writes a notice to stderr
    and raises DeprecationWarnings; none of it concerns this project's users.
    """
    with (
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        return require("learn2learn", purpose)
