"""The HTML report as a person sees it: rendered by headless Chromium, its figures are the JSON's.

Needs Debian's ``chromium``: skipped without it on a laptop, a failure under CI=true (``.ci/run``
installs it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from orchestrator.report.formats import shown
from orchestrator.store import Repository
from orchestrator.store.database import dispose_engines
from orchestrator.store.migrate import upgrade
from tests.report_history import history, seed

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: browser tests must run)")
        pytest.skip(message)
    return found


def headless(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


class Figures(HTMLParser):
    """Every ``data-figure`` element's text, from the DOM the browser built."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        key = dict(attrs).get("data-figure")
        self._open.append(key)
        if key is not None:
            self.found[key] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1] is not None:
            self.found[self._open[-1]] += data


def orchestrator(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_chromium_renders_the_figures_of_the_json(tmp_path: Path) -> None:
    browser = chromium()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    seed(Repository.from_url(url), history())
    dispose_engines(url)
    env = {**os.environ, "ORCHESTRATOR_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    env.pop("ORCHESTRATOR_BROKER_URL", None)
    page = tmp_path / "report.html"
    written = orchestrator(env, "report", "--since", "3650d", "--format", "html", "--output", str(page))
    assert written.returncode == 0, written.stderr
    printed = orchestrator(env, "report", "--since", "3650d", "--format", "json")
    assert printed.returncode == 0, printed.stderr
    report = json.loads(printed.stdout)

    # When Chromium opens the file (offline: it fetches nothing) and we read the DOM it built
    dom = headless(browser, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    parser = Figures()
    parser.feed(dom.stdout)
    figures = parser.found
    # Then every figure it shows is the JSON's
    expected: dict[str, str] = {}
    for wf in report["workflows"]:
        name = wf["workflow"]
        expected[f"{name}//runs"] = shown(wf["runs"])
        expected[f"{name}//success_rate"] = shown(wf["success_rate"], "%")
        expected[f"{name}//duration_p50_s"] = shown(wf["duration_p50_s"], "s")
        expected[f"{name}//duration_p95_s"] = shown(wf["duration_p95_s"], "s")
        expected[f"{name}//bottleneck"] = wf["critical_path"]["bottleneck"]
        for step in wf["steps"]:
            for key in ("duration_p50_s", "duration_p95_s", "queue_p50_s", "queue_p95_s"):
                expected[f"{name}/{step['step']}/{key}"] = shown(step[key], "s")
            expected[f"{name}/{step['step']}/failure_rate"] = shown(step["failure_rate"], "%")
    assert {key: figures.get(key) for key in expected} == expected
    assert figures["shop/price/duration_p95_s"] == "15.000s" and figures["shop//bottleneck"] == "price"
    assert dom.stdout.count("<svg") == 3 * len(report["workflows"])

    # And it paints: a screenshot comes out as a PNG of some size
    shot = tmp_path / "report.png"
    painted = headless(browser, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri())
    assert painted.returncode == 0, painted.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
