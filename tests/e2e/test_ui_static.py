"""How the web UI is served: no path outside the static folder, the right content types and a
strict Content-Security-Policy; and the page's stream parser, run in the browser."""

from __future__ import annotations

import json

import pytest

from tests.e2e import ui_harness as harness
from tests.e2e.ui_harness import (
    Browser,
    raw_get,
)

pytestmark = pytest.mark.e2e
# the harness's fixtures, for this module's tests
browser, app_port = harness.browser, harness.app_port


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
