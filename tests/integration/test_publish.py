"""Step messages published as a batch (one producer, one Redis pipeline): the same messages as
Celery's ``apply_async`` sends, and a real worker runs them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Cluster
from tests.conftest import write_workflow as write

pytestmark = pytest.mark.integration
STEPS = "tests.integration.steps"

# Publishes each dispatch through Celery's path and through the batch, reads both messages back
# from the queue, and prints them with what differs by nature (the delivery tag, the eta's seconds).
COMPARE = textwrap.dedent(
    """
    import base64, json, uuid
    import redis
    from orchestrator.runtime.scheduler import Dispatch, Label
    from orchestrator.worker.app import app
    from orchestrator.worker.publish import batchable, publish
    from orchestrator.worker.tasks import execute_step
    from orchestrator.worker.transport import CeleryTransport

    def read(raw):
        message = json.loads(raw)
        message["properties"]["delivery_tag"] = "tag"
        if message["headers"]["eta"]:
            message["headers"]["eta"] = message["headers"]["eta"][:16]
        message["body"] = json.loads(base64.b64decode(message["body"]))
        return message

    client = redis.Redis.from_url(app.conf.broker_url)
    queue = app.conf.task_default_queue
    dispatches = [
        Dispatch(7, str(uuid.uuid4()), timeout=30.0, label=Label("wf", "charge", "run-1", 3, 2)),
        Dispatch(8, str(uuid.uuid4())),
        Dispatch(9, str(uuid.uuid4()), countdown=600.0, label=Label("wf", "notify", "run-1")),
    ]
    pairs = []
    for d in dispatches:
        CeleryTransport(app)._send_group(execute_step, [d], {"published_at": 1.5})
        celery = read(client.rpop(queue))
        publish(app, execute_step, [d], {"published_at": 1.5})
        pairs.append([celery, read(client.rpop(queue))])
    print(json.dumps({"batchable": batchable(app, execute_step), "pairs": pairs}))
    """
)


def test_a_batched_message_is_the_message_celery_sends(cluster: Cluster) -> None:
    result = cluster.python(COMPARE)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["batchable"] is True
    for celery, batched in found["pairs"]:
        assert batched == celery
    charge = found["pairs"][0][1]
    # The monitoring headers and the time limits ride along, the task id is the dispatch id
    assert charge["headers"]["shadow"] == "wf.charge"
    assert charge["headers"]["timelimit"][1] == 30.0
    assert charge["headers"]["id"] == charge["body"][0][1] == charge["properties"]["correlation_id"]


def test_runs_replayed_over_several_batches_all_succeed_on_a_real_worker(cluster: Cluster, tmp_path: Path) -> None:
    # Given eight runs failed for want of a service, and a worker
    flag = tmp_path / "up"
    path = write(
        tmp_path,
        f"""
name: batches
inputs: {{type: object, properties: {{n: {{type: integer}}}}}}
steps:
  call: {{task: "{STEPS}:fails_until", with: {{flag: "{flag}", value: "${{{{ inputs.n }}}}"}}}}
  after: {{needs: [call], task: "{STEPS}:echo", with: {{value: "${{{{ steps.call.output }}}}"}}}}
""",
    )
    cluster.start_worker(concurrency=2)
    runs = [cluster.start(path, n=i) for i in range(8)]
    for run_id in runs:
        assert cluster.wait(run_id)["status"] == "failed"
    flag.write_text("up")
    # When every entry is replayed three at a time: three batches, each published as one pipeline
    replay = cluster.python(
        "from orchestrator.dlq import replay_all\n"
        "from orchestrator.worker.tasks import engine\n"
        "print(sum(len(b.entries) for b in replay_all(engine(), 'batches', batch=3)))\n"
    )
    assert (replay.returncode, replay.stdout.strip()) == (0, "8"), replay.stderr
    # Then the worker runs every replayed step and every run succeeds with its own output
    for i, run_id in enumerate(runs):
        view = cluster.wait(run_id)
        assert (view["status"], view["steps"]["after"]["output"]) == ("succeeded", i)
