"""Reports and metrics computed in SQL: ``orchestrator report`` and what ``/metrics`` shows."""
