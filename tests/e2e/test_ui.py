"""The web UI as a person uses it: headless Chromium (Selenium, Debian's chromedriver) against
``orchestrator serve``'s app on an ephemeral port, a real PostgreSQL database, Redis and a real
worker, with API tokens configured (an operator and a viewer).

Skipped without chromium and chromedriver on a laptop; a failure under CI=true. Screenshots of
each test land in its tmp_path; ORCHESTRATOR_UI_SCREENSHOTS=DIR also writes the README's there."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cluster, write_workflow

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
OPERATOR, VIEWER, ADMIN = "op-secret-1", "view-secret-1", "admin-secret-1"
TOKENS = f"ops:operator:{OPERATOR},vera:viewer:{VIEWER},ada:admin:{ADMIN}"
UNAUTHORISED = "/api/v1/me - Failed to load resource: the server responded with a status of 401"
ECHO = "tests.integration.steps:echo"


def browser_or_skip() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing:
        message = f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: browser tests must run)")
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.2)


@dataclass
class Server:
    url: str
    cluster: Cluster


@pytest.fixture
def server(cluster: Cluster, tmp_path: Path) -> Iterator[Server]:
    """The app ``orchestrator serve`` builds, as a subprocess on an ephemeral port, and one worker."""
    browser_or_skip()
    cluster.start_worker()
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.ui_server", str(port)],
        env={**cluster.env, "ORCHESTRATOR_API_TOKENS": TOKENS, "ORCHESTRATOR_ACTOR": "cli"},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/", process)
        yield Server(url, cluster)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Browser:
    """A headless Chromium page with the helpers the tests need."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots

    def open(self, url: str, token: str | None = OPERATOR) -> None:
        """Open ``url`` signed in with ``token`` (kept in the origin's sessionStorage, as the
        token prompt keeps it), or signed out."""
        origin = url.split("/#", 1)[0]
        self.driver.get(f"{origin}/static/favicon.svg")
        if token is None:
            self.driver.execute_script("sessionStorage.clear()")
        else:
            self.driver.execute_script("sessionStorage.setItem('orchestrator.token', arguments[0])", token)
        self.driver.get(url)

    def until(self, check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = check()
            except Exception as exc:  # a stale element while the page updates: look again
                if time.monotonic() > deadline:
                    raise AssertionError(f"{what}: {exc}") from exc
                found = None
            if found:
                return found
            if time.monotonic() > deadline:
                self.shot("timeout")
                raise AssertionError(f"{what} not seen within {timeout}s; console: {self.console()}")
            time.sleep(0.2)

    def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def one(self, selector: str, timeout: float = 30) -> Any:
        return self.until(lambda: (self.css(selector) or [None])[0], timeout, f"element {selector}")

    def node_class(self, step: str) -> str:
        found = self.css(f'g.node[data-step="{step}"]')
        return str(found[0].get_attribute("class")) if found else ""

    def console(self) -> list[dict[str, Any]]:
        return list(self.driver.get_log("browser"))

    def errors(self, expected: str | None = None) -> list[dict[str, Any]]:
        """Errors in the browser's console, but for the ``expected`` one (a message fragment)."""
        found = [e for e in self.console() if e.get("level") == "SEVERE"]
        return [e for e in found if expected is None or expected not in str(e.get("message"))]

    def shot(self, name: str, keep_as: str | None = None) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        target = os.environ.get("ORCHESTRATOR_UI_SCREENSHOTS")
        if keep_as and target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(target) / keep_as)
        return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        yield Browser(driver, shots)
    finally:
        driver.quit()


def start(server: Server, tmp_path: Path, text: str, name: str) -> str:
    return server.cluster.start(write_workflow(tmp_path, text, f"{name}.yaml"))


def step_status(server: Server, run_id: str, step: str) -> str:
    from orchestrator.runtime.views import run_view

    return str(run_view(server.cluster.repo, run_id)["steps"][step]["status"])


def wait_step(server: Server, run_id: str, step: str, status: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while step_status(server, run_id, step) != status:
        assert time.monotonic() < deadline, f"{step} never {status}"
        time.sleep(0.2)


LIVE = f"""
name: ui-live
steps:
  first: {{task: "{ECHO}", with: {{value: 1}}}}
  hold: {{needs: first, wait: {{event: ui.go, key: k1}}}}
  last: {{needs: hold, task: "{ECHO}", with: {{value: 2}}}}
"""


def test_a_live_run_page_shows_nodes_change_status_without_a_reload(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given a run whose middle step waits for a signal, open on its page
    run_id = start(server, tmp_path, LIVE, "live")
    browser.open(f"{server.url}/#/runs/{run_id}")
    browser.until(lambda: "st-waiting" in browser.node_class("hold"), what="hold waiting")
    assert "st-succeeded" in browser.node_class("first") and "st-pending" in browser.node_class("last")
    browser.driver.execute_script("window.__same_page = true")
    browser.shot("live-waiting")

    # When the signal arrives (from the command line, not the page)
    sent = server.cluster.cli("signal", "ui.go", "--key", "k1")
    assert sent.returncode == 0, sent.stderr

    # Then the nodes turn succeeded and the run ends, on the same page (no reload)
    browser.until(lambda: "st-succeeded" in browser.node_class("last"), what="last succeeded")
    browser.until(lambda: browser.css(".run-head .badge.st-succeeded"), what="run succeeded")
    assert "st-succeeded" in browser.node_class("hold")
    assert browser.driver.execute_script("return window.__same_page === true")
    browser.until(lambda: browser.css("svg.gantt rect.span"), what="the timeline")
    browser.shot("live-succeeded")
    assert browser.errors() == []


APPROVE = f"""
name: ui-approve
steps:
  prepare: {{task: "{ECHO}", with: {{value: [{", ".join(str(i) for i in range(40))}]}}}}
  price:
    needs: prepare
    foreach: "${{{{ steps.prepare.output }}}}"
    task: "{ECHO}"
    with: {{value: "${{{{ item * 2 }}}}"}}
  check-stock: {{needs: prepare, task: "{ECHO}", with: {{value: in stock}}}}
  sign-off:
    needs: [price, check-stock]
    approval: {{keyword: SHIP IT}}
  ship: {{needs: sign-off, task: "{ECHO}", with: {{value: "${{{{ steps['sign-off'].output.comment }}}}"}}}}
  notify: {{needs: ship, trigger: all_done, task: "{ECHO}"}}
"""


def test_an_operator_approves_a_waiting_step_from_the_drawer_and_the_run_finishes(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given a run waiting for an approval that needs a keyword
    run_id = start(server, tmp_path, APPROVE, "approve")
    wait_step(server, run_id, "sign-off", "waiting")
    browser.open(f"{server.url}/#/runs/{run_id}")

    # When the operator opens the step's drawer and approves with a comment and the keyword
    browser.until(lambda: "st-waiting" in browser.node_class("sign-off"), what="sign-off waiting")
    assert "40/40" in browser.one('g.node[data-step="price"]').text  # a foreach is one node with its count
    browser.one('g.node[data-step="sign-off"]').click()
    comment = browser.one(".drawer textarea[name=comment]")
    comment.send_keys("looks good <b>really</b>")
    browser.one(".drawer input[name=keyword]").send_keys("SHIP IT")
    browser.driver.execute_script("document.querySelector('.drawer').scrollTop = 0")
    browser.shot("approve-drawer", keep_as="run-page.png")
    browser.one('.drawer button[data-action="approve"]').click()

    # Then the run finishes, the approval recorded with who, the comment and the decision
    browser.until(lambda: browser.css(".run-head .badge.st-succeeded"), what="run succeeded")
    view = server.cluster.wait(run_id)
    decision = view["steps"]["sign-off"]["output"]
    assert decision["decision"] == "approved" and decision["by"] == ["ops"]
    assert decision["comment"] == "looks good <b>really</b>"
    assert view["steps"]["ship"]["output"] == "looks good <b>really</b>"
    browser.until(lambda: "st-succeeded" in browser.node_class("ship"), what="ship succeeded")
    browser.shot("approved")
    assert browser.errors() == []


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
    browser.shot("runs-list", keep_as="runs-list.png")

    # Then filtering by status shows only the runs that succeeded
    browser.driver.get(f"{server.url}/#/runs?status=succeeded")
    browser.until(
        lambda: {r.get_attribute("data-run") for r in browser.css("tr[data-run]")} == set(done), what="filter"
    )
    assert browser.errors() == []


DLQ = f"""
name: ui-dlq
steps:
  flaky:
    task: tests.integration.steps:fails_until
    with: {{flag: FLAG, value: fixed}}
    retry: {{max_attempts: 1}}
  after: {{needs: flaky, task: "{ECHO}", with: {{value: "${{{{ steps.flaky.output }}}}"}}}}
"""


def test_replaying_a_dead_letter_from_the_dlq_page_resumes_its_run(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given a run whose step failed for good and is in the dead-letter queue
    flag = tmp_path / "fixed.flag"
    run_id = start(server, tmp_path, DLQ.replace("FLAG", str(flag)), "dlq")
    assert server.cluster.wait(run_id)["status"] == "failed"
    browser.open(f"{server.url}/#/dlq")
    row = browser.until(
        lambda: [r for r in browser.css("table.grid tbody tr") if run_id[:12] in r.text], what="the dead letter"
    )[0]
    assert "ConnectionError" in row.text or "fixed.flag" in row.text
    browser.shot("dlq-open")

    # When the cause is fixed and the operator replays the entry
    flag.write_text("ok")
    row.find_element("css selector", 'button[data-action="replay"]').click()

    # Then the run resumes and succeeds with the replayed step's output, and the entry leaves the open list
    deadline = time.monotonic() + 60
    from orchestrator.runtime.views import run_view

    while run_view(server.cluster.repo, run_id)["status"] != "succeeded":
        assert time.monotonic() < deadline, run_view(server.cluster.repo, run_id)
        time.sleep(0.2)
    assert server.cluster.wait(run_id)["steps"]["after"]["output"] == "fixed"
    browser.until(lambda: not [r for r in browser.css("table.grid tbody tr") if run_id[:12] in r.text], what="gone")
    browser.shot("dlq-replayed")
    assert browser.errors() == []


def test_a_viewer_signs_in_with_the_token_prompt_and_sees_no_action_buttons(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given a waiting approval and a dead letter: pages where an operator has buttons
    run_id = start(server, tmp_path, APPROVE, "approve")
    failed = start(server, tmp_path, DLQ.replace("FLAG", str(tmp_path / "never")), "dlq")
    server.cluster.wait(failed)
    wait_step(server, run_id, "sign-off", "waiting")

    # When a viewer opens the UI with no token: the prompt asks for one
    browser.open(f"{server.url}/#/runs/{run_id}", token=None)
    browser.one("#token-dialog[open]")
    browser.one("#token-input").send_keys(VIEWER)
    browser.one("#token-form button[type=submit]").click()
    browser.until(lambda: "viewer" in browser.one("#whoami").text, what="signed in as viewer")

    # Then the run page, its drawer, the approvals and the DLQ show data but no action button
    browser.until(lambda: "st-waiting" in browser.node_class("sign-off"), what="sign-off waiting")
    browser.one('g.node[data-step="sign-off"]').click()
    browser.until(lambda: "waiting for" in browser.one(".drawer").text, what="the drawer")
    assert browser.css("button.action") == [] and browser.css(".drawer textarea") == []
    browser.shot("viewer-run")
    browser.driver.get(f"{server.url}/#/approvals")
    browser.until(lambda: run_id[:12] in browser.one("main").text, what="the approval listed")
    assert browser.css("button.action") == []
    browser.driver.get(f"{server.url}/#/dlq")
    browser.until(lambda: failed[:12] in browser.one("main").text, what="the dead letter listed")
    assert browser.css("button.action") == []
    assert (
        browser.errors(expected="/api/v1/me - Failed to load resource: the server responded with a status of 401") == []
    )


PAGES = f"""
name: ui-pages
description: VERSION
schedules:
  - {{name: hourly, every: 1h}}
steps:
  fetch: {{task: "{ECHO}", with: {{value: [1, 2, 3]}}}}
  price:
    needs: fetch
    foreach: "${{{{ steps.fetch.output }}}}"
    task: "{ECHO}"
    with: {{value: "${{{{ item }}}}"}}
"""


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


COUNTER = f"""
name: ui-counter
initial: count
states:
  count:
    task: "{ECHO}"
    with: {{value: {{n: "${{{{ (steps.count.output.n if steps.count.output else 0) + 1 }}}}"}}}}
    transitions:
      - {{to: count, if: "${{{{ output.n < 3 }}}}"}}
      - {{to: finish}}
  finish: {{end: succeeded}}
"""
CHILD = f"""
name: ui-child
steps:
  work: {{task: "{ECHO}", with: {{value: child}}}}
"""
PARENT = """
name: ui-parent
steps:
  call: {workflow: ui-child}
"""


def test_a_state_machine_shows_the_path_taken_and_a_sub_workflow_links_its_child(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given a finished state machine that looped twice, and a finished run that called a sub-workflow
    machine = start(server, tmp_path, COUNTER, "counter")
    registered = server.cluster.cli("workflows", "register", str(write_workflow(tmp_path, CHILD, "child.yaml")))
    assert registered.returncode == 0, registered.stderr
    parent = start(server, tmp_path, PARENT, "parent")
    assert server.cluster.wait(machine)["status"] == "succeeded"
    view = server.cluster.wait(parent)
    assert view["status"] == "succeeded"
    child = view["steps"]["call"]["child_run"]

    # Then the machine's states are drawn with the transitions it took, the loop twice
    browser.open(f"{server.url}/#/runs/{machine}")
    browser.until(lambda: browser.css(".run-head .badge.st-succeeded"), what="the machine ended")
    browser.until(lambda: len(browser.css("g.edge.taken")) == 2, what="two transitions taken")
    assert "×2" in browser.one("g.edge.taken .times").text
    assert "st-succeeded" in browser.node_class("count") and "current" in browser.node_class("finish")
    browser.shot("machine")

    # And the sub-workflow node links to its child run, which opens on click
    browser.driver.get(f"{server.url}/#/runs/{parent}")
    link = browser.until(
        lambda: [
            a
            for a in browser.css('g.node[data-step="call"] a.child-link')
            if a.get_attribute("visibility") == "visible"
        ],
        what="the child link",
    )[0]
    assert link.get_dom_attribute("href").endswith(f"#/runs/{child}")
    link.click()
    browser.until(lambda: browser.css('g.node[data-step="work"].st-succeeded'), what="the child run page")
    assert "parent" in browser.one(".run-head").text
    assert browser.errors() == []


def wide_dag(layers: int, width: int) -> str:
    """A root that waits, then ``layers`` layers of ``width`` steps, each needing two of the layer before."""
    lines = ["name: ui-wide", "steps:", "  root: {wait: {event: ui.never, key: x}}"]
    for layer in range(layers):
        for i in range(width):
            if layer == 0:
                needs = "[root]"
            else:
                needs = f"[l{layer - 1}-{i}, l{layer - 1}-{(i + 7) % width}]"
            lines.append(f'  l{layer}-{i}: {{needs: {needs}, task: "{ECHO}"}}')
    return "\n".join(lines) + "\n"


def test_a_thousand_step_dag_renders_as_a_few_groups_with_no_browser_errors(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given a run of a 1,000-step DAG (a waiting root, then 9 layers of 111 steps)
    run_id = start(server, tmp_path, wide_dag(9, 111), "wide")
    wait_step(server, run_id, "root", "waiting")
    browser.open(f"{server.url}/#/runs/{run_id}")

    # Then each wide layer is one group node with its status counts: 10 nodes drawn, not 1,000
    browser.until(lambda: "st-waiting" in browser.node_class("root"), what="root waiting")
    groups = browser.css("g.node.group")
    assert len(groups) == 9 and len(browser.css("g.node")) == 10
    assert "111 pending" in groups[0].text
    browser.shot("wide-collapsed")

    # When a group is clicked it expands in place: its 111 steps are drawn, the others stay grouped
    groups[0].click()
    browser.until(lambda: len(browser.css("g.node[data-step]")) == 112, what="the layer expanded")
    assert len(browser.css("g.node.group")) == 8
    browser.shot("wide-expanded")
    assert browser.errors() == []
    server.cluster.cli("cancel", run_id)


BIG_FOREACH = """
name: ui-big
steps:
  items: {task: "tests.integration.steps:echo", with: {value: "${{ [0] * 10000 }}"}}
  each:
    needs: items
    foreach: "${{ steps.items.output }}"
    concurrency: 1
    task: tests.integration.steps:nap
    with: {value: "${{ index }}", seconds: 0.2}
"""


def test_a_foreach_of_ten_thousand_items_is_one_node_with_its_items_paged_in_the_drawer(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given a run of a foreach of 10,000 items, one at a time
    run_id = start(server, tmp_path, BIG_FOREACH, "big")
    wait_step(server, run_id, "each", "running", timeout=120)
    browser.open(f"{server.url}/#/runs/{run_id}")

    # Then the foreach is one node counting its items, and the drawer pages them
    node = browser.one('g.node[data-step="each"]')
    browser.until(lambda: "/10000" in node.text, what="the item count")
    assert len(browser.css("g.node")) == 2
    node.click()
    browser.until(lambda: "1–50 of 10000" in browser.one(".drawer .pager").text, what="the first page")
    assert len(browser.css(".drawer table.grid tbody tr")) >= 50
    next_page = [b for b in browser.css(".drawer .pager button") if "next" in b.text][0]
    next_page.click()
    browser.until(lambda: "51–100 of 10000" in browser.one(".drawer .pager").text, what="the second page")
    browser.shot("foreach-10000")
    assert browser.errors() == []
    server.cluster.cli("cancel", run_id)


def raw_get(port: int, path: str) -> tuple[int, bytes, dict[str, str]]:
    """A request line sent exactly as written (no client normalises the path)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    return answer.status, body, {k.lower(): v for k, v in answer.getheaders()}


@pytest.fixture
def app_port(tmp_path: Path) -> Iterator[int]:
    """The real app (UI mounted) on SQLite under uvicorn in a thread, on an ephemeral port."""
    import uvicorn

    from orchestrator.api.app import create_app
    from orchestrator.store import Repository
    from orchestrator.store.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    app = create_app(Repository.from_url(url), list, [], 0.0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_http(f"http://127.0.0.1:{port}/")
    yield port
    server.should_exit = True
    thread.join(10)


TRAVERSALS = [
    "/static/../../etc/passwd",
    "/static/../../../../../../etc/passwd",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
    "/static/js/../../../../../../etc/passwd",
    "/static/%252e%252e/%252e%252e/etc/passwd",
    "/static/..%5c..%5c..%5cetc%5cpasswd",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/js/app.js%00.png",
    "/static/../ui.py",
    "/static/../../api/ui.py",
    "/static/",
    "/static/js",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_static_paths_outside_the_static_folder_are_404_not_files(app_port: int, path: str) -> None:
    status, body, headers = raw_get(app_port, path)
    assert status == 404, (path, status, body[:200])
    assert b"root:" not in body and b"mount_ui" not in body
    assert json.loads(body) == {"error": "not found"} or status == 404


def test_the_page_and_its_assets_have_their_types_and_a_strict_csp(app_port: int) -> None:
    status, body, headers = raw_get(app_port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert b'<script type="module" src="/static/js/app.js"></script>' in body
    for asset, kind in (
        ("/static/js/app.js", "text/javascript"),
        ("/static/js/dag.js", "text/javascript"),
        ("/static/style.css", "text/css"),
        ("/static/favicon.svg", "image/svg+xml"),
    ):
        status, body, headers = raw_get(app_port, asset)
        assert status == 200 and headers["content-type"].startswith(kind), asset
        assert headers["x-content-type-options"] == "nosniff" and "content-security-policy" in headers


PARSE = """
const { EventParser } = await import("/static/js/sse.js");
const seen = [];
const parser = new EventParser((type, data) => seen.push([type, data]));
const text = arguments[0];
for (let i = 0; i < text.length; i += 3) parser.feed(text.slice(i, i + 3));
return seen;
"""


def test_the_stream_parser_reads_events_split_anywhere(app_port: int, browser: Browser) -> None:
    # Given a stream with a ping comment, CRLF and LF lines, a two-line data field, fed 3 characters at a time
    stream = (
        ": ping\n\n"
        'event: run\ndata: {"run_id": "r1"}\n\n'
        "event: change\r\ndata: line one\r\ndata: line two\r\n\r\n"
        "data: no type\n\n"
        "event: end\ndata: {}\n\n"
        "event: change\ndata: cut off"
    )
    browser.driver.get(f"http://127.0.0.1:{app_port}/static/favicon.svg")
    seen = browser.driver.execute_script(f"return (async () => {{ {PARSE} }})()", stream)
    # Then each complete event comes out once, in order; the comment and the unfinished one do not
    assert seen == [
        ["run", '{"run_id": "r1"}'],
        ["change", "line one\nline two"],
        ["message", "no type"],
        ["end", "{}"],
    ]
