"""The layering as a checked contract (import-linter, configured in pyproject.toml).

experiments over meta | envs over tasks over models over leap_convrnn, and no import
circle between the modules of one package. The contract is checked on the checkout, and
shown to fail on a copy of it with one import that runs back up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tests

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("leap_convrnn", "models", "tasks", "meta", "envs", "experiments")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the checkout at `root`, its packages first on the path."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def copy_checkout(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("conf"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_checkout_keeps_the_layers_and_has_no_circle():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("file", "line", "broken"),
    [
        ("models/conv4.py", "import experiments.runner", "Layers"),
        ("tasks/base.py", "import envs", "Layers"),
        ("meta/scratch.py", "import envs.games", "Layers"),
        ("experiments/search.py", "from experiments import cli", "circle"),
    ],
)
def test_an_import_that_breaks_the_layering_is_caught(tmp_path, file, line, broken):
    root = copy_checkout(tmp_path)
    with (root / file).open("a") as handle:
        handle.write(f"\n{line}  # noqa\n")
    result = lint_imports(root)
    assert result.returncode == 1
    report = result.stdout[result.stdout.index("Broken contracts") :]
    assert broken in report


def test_the_tests_package_is_this_projects():
    """learn2learn's sdist installs a top-level `tests`; ours must win (pytest pythonpath)."""
    assert Path(tests.__file__).resolve().parent == ROOT / "tests"
