"""Benchmarks: each case measures the orchestrator against a baseline and prints one JSON line."""
