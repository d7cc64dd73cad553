"""The web UI's lists and admin pages in headless Chromium against ``orchestrator serve``: the runs
list live and filtered, every page's data, and what an admin may do that an operator may not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_workflow
from tests.e2e import ui_harness as harness
from tests.e2e.ui_harness import (
    ADMIN,
    APPROVE,
    DLQ,
    ECHO,
    LIVE,
    PAGES,
    Browser,
    Server,
    start,
)

pytestmark = pytest.mark.e2e
# the harness's fixtures, for this module's tests
server, browser = harness.server, harness.browser


def test_the_runs_list_shows_runs_live_and_filters_them(server: Server, browser: Browser, tmp_path: Path) -> None:
    # Given two finished runs of one workflow and a waiting one of another, on the runs page
    quick = LIVE.replace("wait: {event: ui.go, key: k1}", f'task: "{ECHO}"')
    done = [start(server, tmp_path, quick, "quick") for _ in range(2)]
    waiting = start(server, tmp_path, APPROVE, "approve")
    for run_id in done:
        server.cluster.wait(run_id)
    browser.open(f"{server.url}/#/runs")
    browser.until(lambda: len(browser.css("tr[data-run]")) == 3, what="three runs")
    assert {r.get_attribute("data-run") for r in browser.css("tr[data-run]")} == {*done, waiting}
    browser.until(lambda: browser.css(".live[data-state=live]"), what="the list stream")

    # When a new run starts and fails: it appears at the top, then shows failed, with no reload
    failing = start(server, tmp_path, DLQ.replace("FLAG", str(tmp_path / "never")), "dlq")
    browser.until(lambda: browser.css(f'tbody tr:first-child[data-run="{failing}"]'), what="the new run on top")
    browser.until(lambda: browser.css(f'tr[data-run="{failing}"] .badge.st-failed'), what="it failed", timeout=60)
    assert "ConnectionError" in browser.one(f'tr[data-run="{failing}"]').text
    browser.driver.set_window_size(1600, 480)  # the list, not the empty page under it
    browser.shot("runs-list", keep_as="runs-list.png")
    browser.driver.set_window_size(1600, 1000)

    # Then filtering by status shows only the runs that succeeded
    browser.driver.get(f"{server.url}/#/runs?status=succeeded")
    browser.until(
        lambda: {r.get_attribute("data-run") for r in browser.css("tr[data-run]")} == set(done), what="filter"
    )
    assert browser.errors() == []


def test_every_page_renders_its_data_with_no_browser_errors(server: Server, browser: Browser, tmp_path: Path) -> None:
    # Given a workflow registered in two versions, with a schedule, and a finished run of it
    for version in ("one", "two"):
        path = write_workflow(tmp_path, PAGES.replace("VERSION", version), f"pages-{version}.yaml")
        registered = server.cluster.cli("workflows", "register", str(path))
        assert registered.returncode == 0, registered.stderr
    run_id = server.cluster.start("ui-pages")
    assert server.cluster.wait(run_id)["status"] == "succeeded"

    # Then each page shows what the API holds
    expected = {
        "#/workflows": "ui-pages",
        "#/workflows/ui-pages": "description: two",
        "#/schedules": "ui-pages/hourly",
        "#/audit": "workflow.register",
        "#/report?since=1d": "ui-pages",
        "#/approvals": "No approval is waiting",
        "#/breakers": "No breakers",
        f"#/runs/{run_id}": "3/3",
    }
    browser.open(f"{server.url}/#/runs")
    for page, text in expected.items():
        browser.driver.get(f"{server.url}/{page}")
        browser.until(lambda text=text: text in browser.one("main").text, what=f"{text!r} on {page}")
        browser.shot(page.strip("#/").replace("/", "-").replace("?", "-") or "runs")
        if page.startswith("#/report"):
            assert browser.css("svg.chart"), "the report draws its figures"
    assert browser.errors() == []


def test_an_admin_activates_an_older_version_and_pauses_a_schedule_an_operator_cannot(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given two versions of a workflow with a schedule, the second active
    for version in ("one", "two"):
        path = write_workflow(tmp_path, PAGES.replace("VERSION", version), f"pages-{version}.yaml")
        assert server.cluster.cli("workflows", "register", str(path)).returncode == 0
    first = [v for v in json.loads(server.cluster.cli("workflows", "versions", "ui-pages", "--json").stdout)][-1]

    # An operator sees the versions and the schedule with no admin button
    browser.open(f"{server.url}/#/workflows/ui-pages")
    browser.until(lambda: "description: two" in browser.one("main").text, what="the diff")
    assert browser.css('button[data-action="activate"]') == [] and browser.css('button[data-action="roll-back"]') == []
    browser.driver.get(f"{server.url}/#/schedules")
    browser.until(lambda: "ui-pages/hourly" in browser.one("main").text, what="the schedule")
    assert browser.css("button.action") == []

    # When an admin activates the first version and pauses the schedule
    browser.open(f"{server.url}/#/workflows/ui-pages", token=ADMIN)
    browser.until(lambda: "admin" in browser.one("#whoami").text, what="signed in as admin")
    browser.one('button[data-action="activate"]').click()
    browser.until(
        lambda: first["version"] in browser.one("tr:has(.badge.st-succeeded)").text, what="the first version active"
    )
    browser.driver.get(f"{server.url}/#/schedules")
    browser.one('button[data-action="pause"]').click()
    browser.until(lambda: browser.css('button[data-action="resume"]'), what="the schedule paused")

    # Then the store says so, and the audit trail names the admin
    listed = json.loads(server.cluster.cli("workflows", "list", "--json").stdout)
    assert [w["version"] for w in listed if w["name"] == "ui-pages"] == [first["version"]]
    schedules = json.loads(server.cluster.cli("schedules", "list", "--json").stdout)
    assert [(s["paused"], s["paused_by"]) for s in schedules] == [(True, "ada")]
    browser.shot("admin-schedules")
    assert browser.errors() == []
