"""The browser tests' harness: ``orchestrator serve``'s app as a subprocess on an ephemeral port
(real PostgreSQL, Redis and a worker, API tokens for a viewer, an operator and an admin), headless
Chromium through Selenium and Debian's chromedriver, and the workflows the tests run.

Skipped without chromium and chromedriver on a laptop; a failure under CI=true. Screenshots of
each test land in its tmp_path; ORCHESTRATOR_UI_SCREENSHOTS=DIR also writes the README's there."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _CLAIM_KEY as CLAIM_KEY
from tests.conftest import Cluster, write_workflow

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


class Server:
    """``orchestrator serve`` (tests/e2e/ui_server.py) as a subprocess on one port, which a test
    may stop and start again (a dropped connection, as the browser sees it)."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.ui_server", str(self.port)],
            env={**self.cluster.env, "ORCHESTRATOR_API_TOKENS": TOKENS, "ORCHESTRATOR_ACTOR": "cli"},
            cwd=ROOT,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"{self.url}/", self.process)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def server(cluster: Cluster, tmp_path: Path) -> Iterator[Server]:
    """The app ``orchestrator serve`` builds, as a subprocess on an ephemeral port, and one worker."""
    browser_or_skip()
    cluster.start_worker()
    found = Server(cluster, tmp_path)
    try:
        found.start()
        yield found
    finally:
        found.stop()


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


def chrome() -> Any:
    """A headless Chromium driven by Debian's chromedriver, its console kept for the tests."""
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
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    browser_or_skip()
    driver = chrome()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        yield Browser(driver, shots)
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def module_server(pg_template: str, redis_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """As ``server``, but one database, worker and server for a whole module (its tests must not
    count on an empty store: each filters on what it made)."""
    import redis

    from tests.conftest import _admin, _drop, _sqlalchemy_url

    browser_or_skip()
    workdir = tmp_path_factory.mktemp("module-server")
    name = f"orch_m_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    url = _sqlalchemy_url(name)
    client = redis.Redis.from_url(redis_db)
    claim = client.get(CLAIM_KEY)
    client.flushdb()
    client.set(CLAIM_KEY, claim or b"", ex=6 * 3600)
    cluster = Cluster(url, redis_db, workdir)
    found = Server(cluster, workdir)
    try:
        cluster.start_worker()
        found.start()
        yield found
    finally:
        found.stop()
        cluster.stop()
        cluster.repo.engine.dispose()
        from orchestrator.store.database import dispose_engines

        dispose_engines(url)
        _drop(name)
        client.flushdb()
        client.set(CLAIM_KEY, claim or b"", ex=6 * 3600)


@pytest.fixture(scope="module")
def module_driver() -> Iterator[Any]:
    browser_or_skip()
    driver = chrome()
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def module_browser(module_driver: Any, tmp_path: Path) -> Browser:
    """As ``browser``, on one Chromium for a whole module: screenshots in this test's tmp_path, the
    console emptied of what earlier tests logged."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    found = Browser(module_driver, shots)
    found.console()  # reading the log empties it
    return found


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


LIVE = f"""
name: ui-live
steps:
  first: {{task: "{ECHO}", with: {{value: "<img src=x onerror=window.__xss=1>"}}}}
  hold: {{needs: first, wait: {{event: ui.go, key: k1}}}}
  last: {{needs: hold, task: "{ECHO}", with: {{value: 2}}}}
"""


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


DLQ = f"""
name: ui-dlq
steps:
  flaky:
    task: tests.integration.steps:fails_until
    with: {{flag: FLAG, value: fixed}}
    retry: {{max_attempts: 1}}
  after: {{needs: flaky, task: "{ECHO}", with: {{value: "${{{{ steps.flaky.output }}}}"}}}}
"""


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
