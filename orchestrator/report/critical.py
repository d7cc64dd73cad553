"""The critical path of a workflow's typical run: the chain of steps that decides how long it takes.

The typical run is read from the database's aggregates (each step's median end, in seconds after
its run started). From the step that ends last, the path goes back through the need that ended
last, to a step with no needs; each step's segment is the time from its predecessor's end to its
own (its queue wait, retries and execution), and its share is that segment over the whole path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def needs_of(snapshot: Mapping[str, Any] | None) -> dict[str, list[str]] | None:
    """Each step's needs in a definition snapshot; None for a state machine (its steps follow one
    another, so the path is every state in the order they end)."""
    if not snapshot or "steps" not in snapshot:
        return None
    return {name: list(spec.get("needs") or []) for name, spec in snapshot["steps"].items()}


def critical_path(ends: Mapping[str, float], needs: Mapping[str, Sequence[str]] | None) -> dict[str, Any] | None:
    """``{"duration_s", "bottleneck", "steps": [{"step", "end_s", "segment_s", "share"}]}``, first step first."""
    if not ends:
        return None
    last = max(ends, key=lambda name: (ends[name], name))
    if needs is None:
        path = sorted((n for n in ends if ends[n] <= ends[last]), key=lambda name: (ends[name], name))
    else:
        path = [last]
        while True:
            known = [n for n in needs.get(path[-1], []) if n in ends and n not in path]
            if not known:
                break
            path.append(max(known, key=lambda name: (ends[name], name)))
        path.reverse()
    total = ends[last]
    steps: list[dict[str, Any]] = []
    segments: dict[str, float] = {}
    previous = 0.0
    for name in path:
        segments[name] = max(0.0, ends[name] - previous)
        share = segments[name] / total if total else 0.0
        steps.append({"step": name, "end_s": ends[name], "segment_s": segments[name], "share": share})
        previous = max(previous, ends[name])
    bottleneck = max(path, key=lambda name: segments[name])
    return {"duration_s": total, "bottleneck": bottleneck, "steps": steps}
