"""Hostile messages on a real worker: each bad orchestrator message is refused with one log line
naming the reason, acknowledged (never redelivered), stores nothing, and the worker goes on serving."""

from __future__ import annotations

import json
import time

import pytest

from tests.conftest import ROOT, Cluster

pytestmark = pytest.mark.integration

# Each bad message carries a marker in its task id, so the worker's log lines can be told apart.
SEND = """
import json
from orchestrator.worker.app import app

big = "x" * 2_000_000
deep = {}
cursor = deep
for _ in range(200):
    cursor["a"] = {}
    cursor = cursor["a"]
bad = [
    ("bad-id-text", "orchestrator.execute_step", {"step_run_id": "abc", "dispatch_id": "d"}),
    ("bad-id-bool", "orchestrator.execute_step", {"step_run_id": True, "dispatch_id": "d"}),
    ("bad-id-huge", "orchestrator.execute_step", {"step_run_id": 2**70, "dispatch_id": "d"}),
    ("bad-missing", "orchestrator.execute_step", {"step_run_id": 1}),
    ("bad-unexpected", "orchestrator.execute_step", {"step_run_id": 1, "dispatch_id": "d", "evil": 1}),
    ("bad-args", "orchestrator.execute_step", None),
    ("bad-no-step", "orchestrator.execute_step", {"step_run_id": 987654321, "dispatch_id": "d"}),
    ("bad-wake", "orchestrator.wake", {"step_run_id": "1; DROP TABLE runs"}),
    ("bad-advance", "orchestrator.advance", {"run_id": ["x"]}),
    ("bad-big", "orchestrator.submit", {"workflow": "linear", "inputs": {"x": 1, "y": 1, "pad": big}}),
    ("bad-key", "orchestrator.submit", {"workflow": "linear", "inputs": {"x": 1, "y": 1}, "idempotency_key": big}),
    ("bad-deep", "orchestrator.submit", {"workflow": "linear", "inputs": {"x": 1, "y": 1, "d": deep}}),
    ("bad-name", "orchestrator.submit", {"workflow": "n" * 500_000}),
    ("bad-inputs", "orchestrator.submit", {"workflow": "linear", "inputs": [1, 2]}),
    ("bad-signal", "orchestrator.signal", {"event": 42, "data": 1}),
    ("bad-signal-data", "orchestrator.signal", {"event": "go", "data": big}),
    ("bad-emit", "orchestrator.emit", {"event": ["x"]}),
    ("bad-emit-data", "orchestrator.emit", {"event": "go", "data": deep}),
]
for marker, name, kwargs in bad:
    task_id = f"{marker}-0000-0000-0000-000000000000"
    if kwargs is None:
        app.send_task(name, args=[1, "d", 3, 4], task_id=task_id)
    else:
        app.send_task(name, kwargs=kwargs, task_id=task_id)
# A body nested far deeper than JSON decoders recurse: published as text, as a hostile sender would.
body = '[[], {"step_run_id": ' + "[" * 100000 + "]" * 100000 + ', "dispatch_id": "d"}, {}]'
with app.producer_or_acquire() as producer:
    producer.publish(
        body, routing_key="orchestrator", serializer=None, content_type="application/json",
        content_encoding="utf-8", headers={"lang": "py", "task": "orchestrator.execute_step",
        "id": "bad-nested-0000-0000-0000-000000000000", "argsrepr": "()", "kwargsrepr": "{}"},
    )
    # A body too long to be worth decoding (and not JSON: decoding it would say so): refused unread
    producer.publish(
        "x" * 8_000_000, routing_key="orchestrator", serializer=None, content_type="application/json",
        content_encoding="utf-8", headers={"lang": "py", "task": "orchestrator.execute_step",
        "id": "bad-huge-0000-0000-0000-000000000000", "argsrepr": "()", "kwargsrepr": "{}"},
    )
print(json.dumps([marker for marker, _, _ in bad]))
"""


def test_bad_messages_are_refused_in_one_line_each_and_the_worker_keeps_serving(cluster: Cluster) -> None:
    assert cluster.cli("workflows", "register", str(ROOT / "config/examples/linear.yaml")).returncode == 0
    cluster.start_worker(concurrency=1)
    sent = cluster.python(SEND)
    assert sent.returncode == 0, sent.stderr
    markers = json.loads(sent.stdout)

    # Then the worker still serves: a good run sent after them all succeeds
    view = cluster.wait(cluster.start(ROOT / "config/examples/linear.yaml", x=1, y=2), timeout=60)
    assert view["status"] == "succeeded"
    time.sleep(1)
    log = cluster.log("w0")
    lines = log.splitlines()
    for marker in markers:
        mine = [line for line in lines if f"{marker}-0000-" in line and "] received" not in line]
        assert len(mine) == 1, (marker, mine)
        assert "refused" in mine[0] or "no workflow named 'nnnn" in mine[0], mine[0]
        assert len(mine[0]) < 600, mine[0]
    nested = [line for line in lines if "bad-nested-0000-" in line]
    assert len(nested) == 1 and "cannot be decoded (nested too deep" in nested[0], nested
    huge = [line for line in lines if "bad-huge-0000-" in line]
    assert len(huge) == 1 and "its body is 8000000 bytes" in huge[0] and "it was not decoded" in huge[0], huge
    assert "Traceback" not in log, log[-5000:]
    # Nothing the bad messages carried was stored: the only run is the good one
    runs = json.loads(cluster.cli("runs", "--json").stdout)
    assert [r["run_id"] for r in runs] == [view["run_id"]]
    # And none is left on the broker to be delivered again
    import redis

    assert redis.Redis.from_url(cluster.broker_url).llen("orchestrator") == 0
