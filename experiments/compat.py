"""Imports of third-party packages that need taming."""

from __future__ import annotations

import contextlib
import io
import warnings
from types import ModuleType


def import_learn2learn() -> ModuleType:
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
        import learn2learn

    return learn2learn
