"""The old home of the built-in HTTP step, kept in the repository until ``orchestrator.steps.http``
replaces it. Not shipped in the wheel: an installed top-level ``tasks`` package would shadow a
user's own ``tasks`` module."""
