"""Task families that a package above tasks/ registers (Atari, by envs/), imported on demand.

Importing such a package is what registers its family, and it may need an optional extra
(envs/ needs `leap-convrnn[atari]`): the family is imported when a config names it, so a
missing extra concerns only the runs that ask for it, as one line naming the extra.
"""

from __future__ import annotations

import importlib

from leap_convrnn.optional import MissingDependency

PLUGIN_FAMILIES = {"atari": "envs"}
"""Task family -> the package that registers it when imported."""


def load_task_family(name: str) -> None:
    """Import the package that registers the task family `name`, if one does; for an
    unregistered name, import every plugin that can be (so the error lists them all)."""
    import tasks

    module = PLUGIN_FAMILIES.get(name)
    if module is not None:
        importlib.import_module(module)
    elif name not in tasks.TASKS:
        for plugin in PLUGIN_FAMILIES.values():
            try:
                importlib.import_module(plugin)
            except MissingDependency:
                continue
