"""Built-in steps: tasks that ship with the orchestrator (``task: orchestrator.steps.http:request``)."""
