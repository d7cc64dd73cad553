"""Which files the web UI serves: only regular files of known types inside its static folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.api.ui import STATIC_DIR, static_file


@pytest.fixture
def root(tmp_path: Path) -> Path:
    static = tmp_path / "static"
    (static / "js").mkdir(parents=True)
    (static / "js" / "app.js").write_text("export {};")
    (static / "notes.txt").write_text("not served: unknown type")
    (tmp_path / "secret.js").write_text("outside")
    (static / "js" / "link.js").symlink_to(tmp_path / "secret.js")
    return static


def test_a_file_inside_is_served(root: Path) -> None:
    assert static_file("js/app.js", root) == (root / "js" / "app.js").resolve()


@pytest.mark.parametrize(
    "relative",
    ["../secret.js", "js/../../secret.js", "/etc/passwd", "js/link.js", "js", "", "notes.txt", "js\\..\\..\\x.js"],
)
def test_anything_else_is_refused(root: Path, relative: str) -> None:
    assert static_file(relative, root) is None


def test_a_nul_byte_is_refused_not_an_error(root: Path) -> None:
    assert static_file("js/app.js\x00.png", root) is None


def test_the_package_ships_the_page_and_its_modules() -> None:
    assert static_file("index.html") is not None and static_file("js/app.js") is not None
    page = (STATIC_DIR / "index.html").read_text()
    assert "<script>" not in page and "style=" not in page  # nothing inline: the CSP allows none
