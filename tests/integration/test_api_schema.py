"""Schemathesis against ``/api/v1/openapi.json``, over PostgreSQL with an admin token: every
request it generates for every operation (valid and not) is answered without a server error.
No broker: the actions it can reach are decided and recorded, no step runs. The streams are
left out (they never end).

The operations are walked in one test (``schemathesis.pytest.from_fixture`` needs a pytest
older than the one installed): each gets its own bounded Hypothesis run, per generation mode."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.integration.api_support import auth, embedded_app, module_db  # noqa: F401

pytestmark = pytest.mark.integration
EXAMPLES = 20


def exercise(operation: Any, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def call(case: Any) -> None:
        response = case.call_and_validate(headers=auth("admin"), checks=[not_a_server_error])
        assert "Traceback" not in response.text

    call()


def test_no_generated_request_is_a_server_error(embedded_app: Any) -> None:  # noqa: F811
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", embedded_app).exclude(path_regex=r"/stream$")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 39
    failed = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                exercise(operation, mode)
            except Unsatisfiable:
                continue  # nothing in this operation can be made invalid (no parameter, no body)
            except Exception as exc:  # noqa: BLE001  (gathered: every operation is tried, then all are shown)
                failed.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
    assert not failed, "\n\n".join(failed)
