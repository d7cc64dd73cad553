"""Step functions that ship with the orchestrator: the examples' steps, and built-in steps."""
