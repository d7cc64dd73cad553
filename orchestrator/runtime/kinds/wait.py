"""The wait kind: a step that waits for an external event (by name and correlation key), or for a
durable timer, holding no worker.

An event wait takes a signal kept in the mailbox if one came first; otherwise a signal that comes
later wakes it. A timer (``for``, ``until``) and an event wait's ``timeout`` are a due time on the
step's row, so they survive every process being down: whoever comes back first fires them, once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.definition import StepPlan
from orchestrator.definition.duration import MAX_DURATION_S, format_duration
from orchestrator.errors import EvaluationError, WaitTimeout
from orchestrator.runtime.kinds import StepKind
from orchestrator.store import StepRow

if TYPE_CHECKING:
    from orchestrator.runtime.scheduler import Advancer

MAX_KEY_CHARS = 400


def signal_key(value: Any) -> str:
    """A correlation key as stored and matched: text as is, any other value as JSON, none as ''."""
    if value is None:
        return ""
    key = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(key) > MAX_KEY_CHARS:
        raise EvaluationError(f"the wait's key is {len(key)} characters long; at most {MAX_KEY_CHARS} are allowed")
    return key


def parse_until(value: Any) -> datetime:
    if not isinstance(value, str):
        raise EvaluationError(f"wait until gave {type(value).__name__}, not an ISO 8601 time")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise EvaluationError(f"wait until gave {value!r}, which is not an ISO 8601 time") from None
    try:
        when = (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).astimezone(UTC)
        far = abs((when - datetime.now(UTC)).total_seconds()) > MAX_DURATION_S
    except OverflowError:
        far = True
    if far:
        raise EvaluationError(f"wait until gave {value!r}, more than ten years away")
    return when


class WaitKind(StepKind):
    name: ClassVar[str] = "wait"

    def start(self, advancer: Advancer, row: StepRow, step: StepPlan, inputs: Any) -> None:
        at = advancer.at
        if "event" in inputs:
            event, key = inputs["event"], signal_key(inputs.get("key"))
            timeout = inputs.get("timeout")
            due = at + timedelta(seconds=timeout) if timeout else None
            advancer.tx.lock_signal(event, key)
            found, data = advancer.tx.take_signal(event, key, row.run_id, at)
            advancer.wait(row, {**inputs, "key": key}, "event", None if found else due, event, key)
            if found:  # it came before the step waited: delivered now
                advancer.complete(row, data, "signalled")
            return
        if "for" in inputs:
            advancer.wait(row, inputs, "timer", at + timedelta(seconds=inputs["for"]))
            return
        until = parse_until(inputs["until"])
        advancer.wait(row, inputs, "timer", until)
        if until <= at:
            advancer.complete(row, None, "fired")

    def wake(self, advancer: Advancer, row: StepRow, step: StepPlan) -> None:
        if row.wake == "signal":
            advancer.complete(row, row.output, "signalled")
        elif row.wait_kind == "timer":
            advancer.complete(row, None, "fired")
        else:
            timeout = (row.inputs or {}).get("timeout") or 0
            advancer.fail_waiting(
                row,
                WaitTimeout(
                    f"no {row.wait_event} signal for key {row.wait_key!r} within {format_duration(float(timeout))}"
                ),
            )
