"""The first build of the glyph cache shows a progress bar on a terminal."""

from __future__ import annotations

import io
import sys

from tasks.glyphs import GlyphSpec, load


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_first_build_shows_a_progress_bar_and_the_cached_load_does_not(tmp_path, monkeypatch):
    spec = GlyphSpec(alphabets=2, min_characters=2, max_characters=3, drawers=2, seed=5)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    load(spec, tmp_path)
    shown = terminal.getvalue()
    assert "glyphs: building the cache (first run only)" in shown and "2/2" in shown
    terminal.seek(0)
    terminal.truncate()
    load(spec, tmp_path)
    assert terminal.getvalue() == ""


def test_no_bar_in_a_log(tmp_path, monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    load(GlyphSpec(alphabets=1, min_characters=1, max_characters=1, drawers=2), tmp_path)
    assert log.getvalue() == ""
