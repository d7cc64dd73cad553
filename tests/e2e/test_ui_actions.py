"""The web UI's actions as a person uses them, in headless Chromium against ``orchestrator serve``
with a real worker: cancel, pause and resume, retry, skip and accept from the run page and its
drawer; an admin's rollback, schedules and breakers; the runs list's "load more"; and a careless
user's invalid JSON and second click. Each test checks the page and then what the API says.

One server, worker and browser for the module (tests/e2e/ui_harness.py's module fixtures): each
test registers workflows of its own and looks only at its own runs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import ui_harness as harness
from tests.e2e.ui_harness import ADMIN, ECHO, OPERATOR, Browser, Server, free_port

pytestmark = pytest.mark.e2e
# the harness's module-wide fixtures, for this module's tests
module_server, module_driver, module_browser = harness.module_server, harness.module_driver, harness.module_browser


@pytest.fixture
def server(module_server: Server) -> Server:
    return module_server


@pytest.fixture
def browser(module_browser: Browser) -> Browser:
    return module_browser


def call(server: Server, method: str, path: str, body: Any = None, token: str = OPERATOR) -> tuple[int, Any]:
    """One request to the API as a client sends it: the status and the parsed answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{server.url}/api/v1/{path}", data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def get(server: Server, path: str) -> Any:
    status, body = call(server, "GET", path)
    assert status == 200, (path, status, body)
    return body


def register(server: Server, text: str) -> None:
    status, body = call(server, "POST", "workflows", {"definition": text}, token=ADMIN)
    assert status in (200, 201), body


def submit(server: Server, workflow: str, **inputs: Any) -> str:
    status, body = call(server, "POST", "runs", {"workflow": workflow, "inputs": inputs})
    assert status == 201, body
    return str(body["run_id"])


def run_status(server: Server, run_id: str) -> str:
    return str(get(server, f"runs/{run_id}")["status"])


def until_api(check: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.2)
    return found


def step_of(server: Server, run_id: str, step: str) -> dict[str, Any]:
    return dict(get(server, f"runs/{run_id}")["steps"][step])


def accept_confirm(browser: Browser, expected: str) -> None:
    """The browser's confirm() box: check its question and answer OK."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    box = WebDriverWait(browser.driver, 10).until(expected_conditions.alert_is_present())
    assert expected in box.text
    box.accept()


def notice(browser: Browser) -> Any:
    return browser.until(lambda: [n for n in browser.css("#notice") if n.is_displayed()], what="a notice")[0]


def run_buttons(browser: Browser) -> set[str]:
    return {str(b.get_attribute("data-action")) for b in browser.css(".run-head button.action")}


def click(browser: Browser, selector: str) -> None:
    """Click the element, found again if the page redrew it meanwhile (the run's head is redrawn at
    each change of the run)."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + 10
    while True:
        try:
            browser.one(selector).click()
            return
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def open_step(browser: Browser, step: str, shows: str) -> Any:
    click(browser, f'g.node[data-step="{step}"]')
    return browser.until(
        lambda: shows in browser.one(".drawer").text and browser.one(".drawer"), what=f"{step}'s drawer"
    )


HOLD = f"""
name: ui-act-cancel
steps:
  first: {{task: "{ECHO}", with: {{value: 1}}}}
  hold: {{needs: first, wait: {{event: ui.act.never, key: k}}}}
  last: {{needs: hold, task: "{ECHO}", with: {{value: 2}}}}
"""


def test_an_operator_cancels_a_running_run_and_its_live_buttons_go(server: Server, browser: Browser) -> None:
    # Given a run waiting on a signal that never comes, open on its page with Pause and Cancel
    register(server, HOLD)
    run_id = submit(server, "ui-act-cancel")
    browser.open(f"{server.url}/#/runs/{run_id}")
    browser.until(lambda: "st-waiting" in browser.node_class("hold"), what="hold waiting")
    browser.until(lambda: run_buttons(browser) == {"pause", "cancel"}, what="pause and cancel offered")

    # When the operator clicks Cancel and confirms
    click(browser, '.run-head button[data-action="cancel"]')
    accept_confirm(browser, f"Cancel run {run_id}?")

    # Then the page shows the run cancelled, with Retry the only action left
    browser.until(lambda: browser.css(".run-head .badge.st-cancelled"), what="run cancelled")
    browser.until(lambda: run_buttons(browser) == {"retry"}, what="only retry left")
    assert "st-cancelled" in browser.node_class("hold")
    browser.shot("cancelled")
    # And the API says so, with who cancelled it
    view = get(server, f"runs/{run_id}")
    assert view["status"] == "cancelled" and view["steps"]["last"]["status"] in ("pending", "cancelled", "skipped")
    history = get(server, f"runs/{run_id}/history")
    assert [(e["detail"] or {}).get("by") for e in history if e["kind"] == "run.cancelled"] == ["ops"]
    assert browser.errors() == []


SLOW = f"""
name: ui-act-pause
steps:
  slow: {{task: tests.integration.steps:nap, with: {{value: slept, seconds: 2}}}}
  after: {{needs: slow, task: "{ECHO}", with: {{value: "${{{{ steps.slow.output }}}}"}}}}
"""


def test_an_operator_pauses_a_run_then_resumes_it_and_it_finishes(server: Server, browser: Browser) -> None:
    # Given a run whose first step takes two seconds, open on its page
    register(server, SLOW)
    run_id = submit(server, "ui-act-pause")
    browser.open(f"{server.url}/#/runs/{run_id}")
    browser.until(lambda: "st-running" in browser.node_class("slow"), what="slow running")

    # When the operator pauses it
    click(browser, '.run-head button[data-action="pause"]')

    # Then it shows paused with Resume and Cancel; the running step finishes, the next does not start
    browser.until(lambda: browser.css(".run-head .badge.st-paused"), what="run paused")
    browser.until(lambda: run_buttons(browser) == {"resume", "cancel"}, what="resume offered")
    assert run_status(server, run_id) == "paused"
    until_api(lambda: step_of(server, run_id, "slow")["status"] == "succeeded", what="slow finished")
    time.sleep(1)
    assert step_of(server, run_id, "after")["status"] == "pending"
    assert run_status(server, run_id) == "paused"
    browser.shot("paused")

    # When the operator resumes it: it finishes, and the page shows it succeeded with no live button
    click(browser, '.run-head button[data-action="resume"]')
    browser.until(lambda: browser.css(".run-head .badge.st-succeeded"), what="run succeeded")
    browser.until(lambda: run_buttons(browser) == set(), what="no action on a succeeded run")
    view = get(server, f"runs/{run_id}")
    assert view["status"] == "succeeded" and view["steps"]["after"]["output"] == "slept"
    assert browser.errors() == []


FLAKY = """
name: ui-act-retry
inputs: {type: object, properties: {flag: {type: string}, ledger: {type: string}}}
steps:
  first: {task: tests.integration.steps:ledger, with: {path: "${{ inputs.ledger }}", name: first}}
  flaky:
    needs: first
    task: tests.integration.steps:fails_until
    with: {flag: "${{ inputs.flag }}", value: fixed}
    retry: {max_attempts: 1}
  after: {needs: flaky, task: "tests.integration.steps:echo", with: {value: "${{ steps.flaky.output }}"}}
"""


def test_an_operator_retries_a_failed_run_once_its_cause_is_fixed(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given a run failed on a step that fails until a flag file exists
    register(server, FLAKY)
    flag, ledger = tmp_path / "fixed.flag", tmp_path / "ledger.txt"
    run_id = submit(server, "ui-act-retry", flag=str(flag), ledger=str(ledger))
    until_api(lambda: run_status(server, run_id) == "failed", what="run failed")
    browser.open(f"{server.url}/#/runs/{run_id}")
    browser.until(lambda: browser.css(".run-head .badge.st-failed"), what="run failed on the page")
    assert run_buttons(browser) == {"retry"} and "not there yet" in browser.one(".run-head").text

    # When the cause is fixed and the operator clicks Retry
    flag.write_text("ok")
    click(browser, '.run-head button[data-action="retry"]')

    # Then the run succeeds on the page and in the API; the step that had succeeded did not run again
    browser.until(lambda: browser.css(".run-head .badge.st-succeeded"), what="run succeeded")
    browser.until(lambda: "st-succeeded" in browser.node_class("after"), what="after succeeded")
    browser.shot("retried")
    view = get(server, f"runs/{run_id}")
    assert view["status"] == "succeeded" and view["steps"]["after"]["output"] == "fixed"
    assert len(ledger.read_text().splitlines()) == 1
    assert browser.errors() == []


def test_retry_from_here_on_a_step_runs_it_and_what_follows_again(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given the same failed run, open on its page
    register(server, FLAKY)
    flag, ledger = tmp_path / "fixed.flag", tmp_path / "ledger.txt"
    run_id = submit(server, "ui-act-retry", flag=str(flag), ledger=str(ledger))
    until_api(lambda: run_status(server, run_id) == "failed", what="run failed")
    browser.open(f"{server.url}/#/runs/{run_id}")
    browser.until(lambda: "st-failed" in browser.node_class("flaky"), what="flaky failed")

    # When the cause is fixed and the operator picks "Retry from here" in the first step's drawer
    flag.write_text("ok")
    drawer = open_step(browser, "first", "Retry from here")
    assert {b.get_attribute("data-action") for b in drawer.find_elements("css selector", "button.action")} == {
        "retry-from-here"
    }
    click(browser, '.drawer button[data-action="retry-from-here"]')

    # Then the run succeeds, the first step having run again, and the drawer shows its second attempt
    browser.until(lambda: browser.css(".run-head .badge.st-succeeded"), what="run succeeded")
    browser.until(lambda: "st-succeeded" in browser.node_class("after"), what="after succeeded")
    view = get(server, f"runs/{run_id}")
    assert view["status"] == "succeeded" and view["steps"]["after"]["output"] == "fixed"
    assert [line.split()[0] for line in ledger.read_text().splitlines()] == ["first", "first"]
    browser.shot("retried-from-first")
    assert browser.errors() == []


REPAIR = f"""
name: ui-act-repair
steps:
  bad: {{task: tests.integration.steps:fail, with: {{message: broken on purpose}}, retry: {{max_attempts: 1}}}}
  use: {{needs: bad, task: "{ECHO}", with: {{value: "${{{{ steps.bad.output.total * 2 }}}}"}}}}
  hold: {{needs: use, wait: {{event: ui.act.never, key: k}}}}
  after: {{needs: hold, task: "{ECHO}", with: {{value: after}}}}
"""


def test_an_operator_accepts_a_failed_step_with_typed_output_and_skips_a_waiting_one(
    server: Server, browser: Browser
) -> None:
    # Given a run whose first step failed for good, open on its page
    register(server, REPAIR)
    run_id = submit(server, "ui-act-repair")
    until_api(lambda: run_status(server, run_id) == "failed", what="run failed")
    browser.open(f"{server.url}/#/runs/{run_id}")
    browser.until(lambda: "st-failed" in browser.node_class("bad"), what="bad failed")

    # When the operator accepts it from its drawer with an output typed there
    drawer = open_step(browser, "bad", "broken on purpose")
    drawer.find_element("css selector", "textarea[name=output]").send_keys('{"total": 21}')
    browser.shot("accept-typed")
    click(browser, '.drawer button[data-action="accept"]')

    # Then the run goes on: the step after it saw the accepted output, the next one waits
    assert "bad accepted" in notice(browser).text
    browser.until(lambda: "st-succeeded" in browser.node_class("bad"), what="bad accepted")
    browser.until(lambda: "st-waiting" in browser.node_class("hold"), what="hold waiting")
    view = get(server, f"runs/{run_id}")
    assert view["status"] == "running"
    assert view["steps"]["bad"]["output"] == {"total": 21} and view["steps"]["use"]["output"] == 42
    browser.until(lambda: '"total": 21' in browser.one(".drawer").text, what="the accepted output in the drawer")

    # When the operator skips the waiting step and confirms
    open_step(browser, "hold", "waiting for")
    click(browser, '.drawer button[data-action="skip"]')
    accept_confirm(browser, "Skip hold?")

    # Then the run finishes: the skipped step shows skipped, and so does the one after it (it needs hold)
    browser.until(lambda: browser.css(".run-head .badge.st-succeeded"), what="run succeeded")
    browser.until(lambda: "st-skipped" in browser.node_class("after"), what="after skipped")
    assert "st-skipped" in browser.node_class("hold")
    view = get(server, f"runs/{run_id}")
    assert view["status"] == "succeeded" and view["steps"]["hold"]["status"] == "skipped"
    assert "skipped by ops" in str(view["steps"]["hold"].get("reason"))
    assert (view["steps"]["after"]["status"], view["steps"]["after"].get("reason")) == ("skipped", "need hold skipped")
    browser.shot("skipped")
    assert browser.errors() == []


VERSIONED = f"""
name: ui-act-admin
description: VERSION
schedules:
  - {{name: nightly, cron: "0 3 * * *"}}
steps:
  only: {{task: "{ECHO}", with: {{value: VERSION}}}}
"""


def test_an_admin_rolls_back_a_version_and_resumes_and_triggers_a_schedule(server: Server, browser: Browser) -> None:
    # Given two versions of a workflow (the second active) whose schedule an admin paused
    for version in ("one", "two"):
        register(server, VERSIONED.replace("VERSION", version))
    versions = get(server, "workflows/ui-act-admin/versions")
    first, second = versions[-1]["version"], versions[0]["version"]
    assert [v["version"] for v in versions if v["active"]] == [second]
    status, body = call(server, "POST", "schedules/ui-act-admin/nightly/pause", {}, token=ADMIN)
    assert status == 200, body

    # When an admin rolls the workflow back from its page and confirms
    browser.open(f"{server.url}/#/workflows/ui-act-admin", token=ADMIN)
    browser.until(lambda: "admin" in browser.one("#whoami").text, what="signed in as admin")
    browser.until(lambda: second in browser.one("tr:has(.badge.st-succeeded)").text, what="the second active")
    click(browser, 'button[data-action="roll-back"]')
    accept_confirm(browser, "Roll ui-act-admin back")

    # Then the page and the API show the first version active again
    browser.until(lambda: first in browser.one("tr:has(.badge.st-succeeded)").text, what="the first version active")
    assert f"active: {first[:12]}" in notice(browser).text
    assert [w["version"] for w in get(server, "workflows") if w["name"] == "ui-act-admin"] == [first]

    # When the admin resumes the paused schedule, then triggers it
    browser.driver.get(f"{server.url}/#/schedules")
    row = 'tr:has(code) button[data-action="resume"]'
    browser.until(lambda: "paused by ada" in browser.one("main").text, what="the schedule paused")
    click(browser, row)
    browser.until(lambda: not browser.css(row), what="the schedule resumed")
    schedule = [s for s in get(server, "schedules") if s["workflow"] == "ui-act-admin"][0]
    assert schedule["paused"] is False
    click(browser, 'button[data-action="trigger"]')

    # Then a run of the active (first) version starts, named in the notice and listed as the last run
    started = browser.until(lambda: "started run" in notice(browser).text and notice(browser).text, what="started")
    schedule = until_api(
        lambda: [s for s in get(server, "schedules") if s["workflow"] == "ui-act-admin" and s["last_run"]],
        what="the schedule's last run",
    )[0]
    run_id = schedule["last_run"]["run_id"]
    assert run_id[:12] in started
    browser.until(lambda: run_id[:12] in browser.one("main").text, what="the last run listed")
    browser.shot("schedules")
    until_api(lambda: run_status(server, run_id) == "succeeded", what="the triggered run")
    view = get(server, f"runs/{run_id}")
    assert view["version"] == first and view["steps"]["only"]["output"] == "one"
    audit = get(server, "audit?actor=ada")
    assert {"workflow.rollback", "schedule.resume", "schedule.trigger"} <= {a["action"] for a in audit}
    assert browser.errors() == []


def test_an_admin_resets_an_open_breaker_from_the_breakers_page(server: Server, browser: Browser) -> None:
    # Given a breaker opened for real: one failed call (nothing listens on the port) with fail_max 1
    port = free_port()
    register(
        server,
        f"""
name: ui-act-breaker
breakers:
  ui-act-api: {{fail_max: 1, reset_timeout: 1h}}
steps:
  call:
    task: orchestrator.steps.http:request
    with: {{url: "http://127.0.0.1:{port}/", timeout: 2}}
    breaker: ui-act-api
    retry: {{max_attempts: 1}}
""",
    )
    run_id = submit(server, "ui-act-breaker")
    until_api(lambda: run_status(server, run_id) == "failed", what="the call failed")
    breaker = until_api(
        lambda: [b for b in get(server, "breakers") if b["name"] == "ui-act-api" and b["state"] == "open"],
        what="the breaker open",
    )[0]
    assert breaker["failures"] >= 1

    # An operator sees it open with no Reset button
    browser.open(f"{server.url}/#/breakers")
    browser.until(lambda: "ui-act-api" in browser.one("main").text, what="the breaker listed")
    assert browser.css(".badge.br-open") and browser.css('button[data-action="reset"]') == []

    # When an admin resets it
    browser.open(f"{server.url}/#/breakers", token=ADMIN)
    browser.until(lambda: "admin" in browser.one("#whoami").text, what="signed in as admin")
    click(browser, 'button[data-action="reset"]')

    # Then the page shows it no longer open, and the API says closed (a reset breaker, with Redis
    # holding the breakers, is forgotten: the list no longer shows it)
    browser.until(lambda: "Reset: done" in notice(browser).text, what="the reset done")
    browser.until(lambda: not browser.css(".badge.br-open"), what="the breaker no longer open")
    assert browser.css('button[data-action="reset"]') == []
    assert [b for b in get(server, "breakers") if b["name"] == "ui-act-api" and b["state"] != "closed"] == []
    audit = get(server, "audit?actor=ada&action=breaker.reset")
    assert [(a["target"], a.get("detail", {}).get("state_before")) for a in audit] == [("breaker:ui-act-api", "open")]
    browser.shot("breaker-reset")
    assert browser.errors() == []


MANY = """
name: ui-act-many
steps:
  hold: {wait: {event: ui.act.never, key: k}}
"""


def test_the_runs_list_loads_a_second_page_with_no_duplicates(server: Server, browser: Browser) -> None:
    # Given more runs of a workflow than one page holds (a page is 50)
    register(server, MANY)
    made = [submit(server, "ui-act-many") for _ in range(57)]
    until_api(
        lambda: all(r["status"] == "running" for r in get(server, "runs?workflow=ui-act-many&limit=100")["runs"]),
        what="every run started",
    )
    first_page = get(server, "runs?workflow=ui-act-many&limit=50")
    assert len(first_page["runs"]) == 50 and first_page["next_cursor"]

    # When the operator opens the list filtered to them: one page, and "Load more"
    browser.open(f"{server.url}/#/runs?workflow=ui-act-many")
    browser.until(lambda: len(browser.css("tr[data-run]")) == 50, what="the first page")
    more = browser.one("button.more")
    assert more.is_displayed()
    browser.until(lambda: browser.css(".live[data-state=live]"), what="the list stream")

    second_page = get(server, f"runs?workflow=ui-act-many&limit=50&cursor={first_page['next_cursor']}")
    order = [r["run_id"] for r in first_page["runs"] + second_page["runs"]]

    # When a run of the second page, not shown yet, changes status (and one of the first page too)
    older, newer = second_page["runs"][3]["run_id"], first_page["runs"][5]["run_id"]
    for run_id in (older, newer):
        assert call(server, "POST", f"runs/{run_id}/cancel", {})[0] == 200
    browser.until(lambda: browser.css(f'tr[data-run="{newer}"] .badge.st-cancelled'), what="the shown run cancelled")
    time.sleep(1)  # the other run's change has reached the page by now (one stream, in order)
    assert len(browser.css("tr[data-run]")) == 50, "a run of the second page appeared before it was asked for"

    # Then "Load more" adds the second page: every run once, newest first, and the button goes
    more.click()
    browser.until(lambda: len(browser.css("tr[data-run]")) == 57, what="the second page")
    shown = [r.get_attribute("data-run") for r in browser.css("tr[data-run]")]
    assert len(set(shown)) == len(shown) == 57 and set(shown) == set(made)
    assert shown == order
    assert browser.css(f'tr[data-run="{older}"] .badge.st-cancelled')
    assert not browser.one("button.more").is_displayed()
    browser.shot("runs-load-more")
    assert browser.errors() == []


CARELESS = f"""
name: ui-act-careless
steps:
  broken:
    task: tests.integration.steps:fail
    with: {{message: broken on purpose}}
    retry: {{max_attempts: 1}}
    output_schema: {{type: string}}
  sign:
    needs: broken
    approval: {{approvers: [ops, ada], required: 2}}
  done: {{needs: sign, task: "{ECHO}", with: {{value: "${{{{ steps.broken.output }}}}"}}}}
"""


def test_a_careless_user_types_invalid_json_and_clicks_approve_twice(server: Server, browser: Browser) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    # Given a run whose first step (whose output must be a string) failed, open on its drawer
    register(server, CARELESS)
    run_id = submit(server, "ui-act-careless")
    until_api(lambda: run_status(server, run_id) == "failed", what="run failed")
    browser.open(f"{server.url}/#/runs/{run_id}")
    browser.until(lambda: "st-failed" in browser.node_class("broken"), what="broken failed")
    drawer = open_step(browser, "broken", "broken on purpose")

    # When the operator accepts it with an output that is not JSON
    drawer.find_element("css selector", "textarea[name=output]").send_keys("{total: 21,}")
    click(browser, '.drawer button[data-action="accept"]')

    # Then the page says why, the text typed is kept, and nothing changed
    message = notice(browser)
    assert "output is not JSON" in message.text and "error" in str(message.get_attribute("class"))
    assert browser.one(".drawer textarea[name=output]").get_attribute("value") == "{total: 21,}"
    browser.shot("invalid-json")
    assert step_of(server, run_id, "broken")["status"] == "failed"
    assert [e for e in get(server, f"runs/{run_id}/history") if e["kind"].startswith("operator.")] == []

    # When they type JSON the step's output_schema refuses: the API's own message, and nothing changed
    field = browser.one(".drawer textarea[name=output]")
    field.clear()
    field.send_keys('{"total": 21}')
    status, body = call(server, "POST", f"runs/{run_id}/steps/broken/accept", {"output": {"total": 21}})
    assert status == 400, body
    click(browser, '.drawer button[data-action="accept"]')
    browser.until(lambda: notice(browser).text == body["error"], what="the API's error on the page")
    assert "error" in str(notice(browser).get_attribute("class"))
    assert step_of(server, run_id, "broken")["status"] == "failed"
    assert [e for e in get(server, f"runs/{run_id}/history") if e["kind"].startswith("operator.")] == []

    # When they fix it and accept, then double-click Approve on the step after it (two approvers needed)
    field = browser.one(".drawer textarea[name=output]")
    field.clear()
    field.send_keys('"fine"')
    click(browser, '.drawer button[data-action="accept"]')
    browser.until(lambda: "st-waiting" in browser.node_class("sign"), what="sign waiting")
    open_step(browser, "sign", "approvers")
    ActionChains(browser.driver).double_click(browser.one('.drawer button[data-action="approve"]')).perform()

    # Then one approval is recorded, not two, and the step still waits for the second approver
    browser.until(lambda: "1/2 (ops)" in browser.one(".drawer").text, what="one approval shown")
    waiting = [a for a in get(server, "approvals") if a["run_id"] == run_id]
    assert [a["approved_by"] for a in waiting] == [["ops"]]

    # When they click Approve once more, later: the API refuses (409) and the page says so plainly
    status, body = call(server, "POST", f"runs/{run_id}/steps/sign/approve", {})
    assert status == 409 and "an approver counts once" in body["error"]
    click(browser, '.drawer button[data-action="approve"]')
    browser.until(lambda: "an approver counts once" in notice(browser).text, what="the refusal shown")
    text = notice(browser).text
    assert text == body["error"] and "error" in str(notice(browser).get_attribute("class"))
    assert browser.one('.drawer button[data-action="approve"]').is_enabled()
    browser.shot("approve-twice")
    assert [a["approved_by"] for a in get(server, "approvals") if a["run_id"] == run_id] == [["ops"]]
    assert step_of(server, run_id, "sign")["status"] == "waiting"

    # And the second approver finishes it
    status, body = call(server, "POST", f"runs/{run_id}/steps/sign/approve", {}, token=ADMIN)
    assert status == 200 and body["ended"], body
    browser.until(lambda: browser.css(".run-head .badge.st-succeeded"), what="run succeeded")
    assert get(server, f"runs/{run_id}")["steps"]["done"]["output"] == "fine"
    # the only console errors: the refused accept's 400 and approval's 409
    refused = ("the server responded with a status of 400", "the server responded with a status of 409")
    assert [e for e in browser.errors() if not any(r in str(e["message"]) for r in refused)] == []
