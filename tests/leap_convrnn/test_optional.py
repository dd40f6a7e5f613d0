"""A missing optional dependency is one line naming the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from leap_convrnn.optional import EXTRAS, MissingDependency, require
from tests.conftest import SMALL_GLYPHS

BLOCK = "import sys\nfor name in {names!r}: sys.modules[name] = None\n"


def run_blocked(names: list[str], code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter in which `names` cannot be imported."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK.format(names=names) + code],
        capture_output=True,
        text=True,
        check=False,
    )


def test_require_names_the_extra_and_the_package():
    with pytest.raises(MissingDependency) as caught:
        require("surely_not_installed_module", "a test")
    assert str(caught.value) == (
        "a test needs surely-not-installed-module, which is not installed: "
        "pip install surely-not-installed-module"
    )


@pytest.mark.parametrize("module", sorted(EXTRAS))
def test_every_known_optional_module_names_its_extra(module):
    result = run_blocked(
        [module],
        "from leap_convrnn.optional import require\n"
        f"try:\n    require({module!r}, 'x')\nexcept Exception as e:\n    print(e)\n",
    )
    assert f"pip install 'leap-convrnn[{EXTRAS[module]}]'" in result.stdout


@pytest.mark.parametrize(
    ("blocked", "argv", "extra"),
    [
        (["ale_py"], ["train", "task=atari", "model=nature_cnn"], "atari"),
        (["gymnasium"], ["train", "task=atari", "model=nature_cnn"], "atari"),
        (["learn2learn"], ["train", "meta=maml", "debug=tiny", *SMALL_GLYPHS], "fewshot"),
        (["sklearn"], ["train", "task=multicv_offline", "debug=tiny"], "offline-data"),
        (["optuna"], ["search", "--trials", "1"], "search"),
    ],
)
def test_the_cli_says_which_extra_is_missing(tmp_path, blocked, argv, extra):
    code = (
        "from experiments.cli import main\n"
        f"sys.exit(main({[*argv, 'tracker=none', f'out_dir={tmp_path}']!r}))\n"
        if argv[0] != "search"
        else f"from experiments.cli import main\nsys.exit(main({argv!r}))\n"
    )
    result = run_blocked(blocked, code)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("leap: error: ")
    assert f"leap-convrnn[{extra}]" in line


def test_the_core_imports_without_any_extra():
    result = run_blocked(
        sorted(EXTRAS),
        "import leap_convrnn, models, tasks, meta, experiments.runner, experiments.evaluate\n"
        "import meta, tasks\n"
        "assert 'leap' in meta.META_LEARNERS and 'glyphs' in tasks.TASKS\n",
    )
    assert result.returncode == 0, result.stderr[-2000:]
