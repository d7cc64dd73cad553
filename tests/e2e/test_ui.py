"""The web UI's run page as a person uses it, in headless Chromium against ``orchestrator serve``
with a real worker: live statuses, approving from the drawer, replaying a dead letter, what a viewer
sees, state machines and sub-workflows, and runs of 1,000 steps and 10,000 items."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import write_workflow
from tests.e2e import ui_harness as harness
from tests.e2e.ui_harness import (
    APPROVE,
    DLQ,
    ECHO,
    LIVE,
    VIEWER,
    Browser,
    Server,
    start,
    wait_step,
)

pytestmark = pytest.mark.e2e
# the harness's fixtures, for this module's tests
server, browser = harness.server, harness.browser


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

    # And a step's output that looks like HTML is shown as text in its drawer, never as markup
    browser.one('g.node[data-step="first"]').click()
    browser.until(lambda: "<img src=x onerror=window.__xss=1>" in browser.one(".drawer").text, what="the output")
    assert browser.css(".drawer img") == [] and browser.driver.execute_script("return window.__xss") is None
    assert browser.errors() == []


def test_the_run_page_reconnects_when_the_server_drops_and_catches_up(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    # Given a live run page whose middle step waits
    run_id = start(server, tmp_path, LIVE, "live")
    browser.open(f"{server.url}/#/runs/{run_id}")
    browser.until(lambda: "st-waiting" in browser.node_class("hold"), what="hold waiting")
    browser.until(lambda: browser.css(".live[data-state=live]"), what="the stream")
    browser.driver.execute_script("window.__same_page = true")

    # When the server goes away, the run moves on meanwhile, and the server comes back
    server.stop()
    browser.until(lambda: browser.css(".live[data-state=reconnecting]"), what="reconnecting")
    assert server.cluster.cli("signal", "ui.go", "--key", "k1").returncode == 0
    server.cluster.wait(run_id)
    server.start()

    # Then the page reconnects by itself and shows the run as it is now
    browser.until(lambda: browser.css(".run-head .badge.st-succeeded"), what="run succeeded", timeout=40)
    assert "st-succeeded" in browser.node_class("last")
    assert browser.driver.execute_script("return window.__same_page === true")
    # the only errors: the stream cut off, and the requests refused while the server was away
    dropped = ("ERR_CONNECTION_REFUSED", "/stream - Failed to load resource: net::ERR_INCOMPLETE_CHUNKED_ENCODING")
    assert [e for e in browser.errors() if not any(d in str(e["message"]) for d in dropped)] == []


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
