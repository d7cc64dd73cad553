"""Graph algorithms over ``needs``, each linear in steps + edges."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Layering:
    """A topological order, grouped in levels whose steps may run together."""

    order: tuple[str, ...]
    levels: tuple[tuple[str, ...], ...]
    level_of: dict[str, int]
    dependents: dict[str, tuple[str, ...]]
    cycles: tuple[tuple[str, ...], ...]


def layer(needs: Mapping[str, Sequence[str]]) -> Layering:
    """Kahn's algorithm by generations; steps left over sit on or behind a cycle.

    ``needs`` must only name keys of ``needs`` (unknown needs are reported, and dropped, before).
    """
    dependents: dict[str, list[str]] = {node: [] for node in needs}
    waiting: dict[str, int] = {}
    for node, upstream in needs.items():
        waiting[node] = len(upstream)
        for need in upstream:
            dependents[need].append(node)
    current = [node for node, count in waiting.items() if count == 0]
    levels: list[tuple[str, ...]] = []
    level_of: dict[str, int] = {}
    while current:
        depth = len(levels)
        levels.append(tuple(current))
        following: list[str] = []
        for node in current:
            level_of[node] = depth
            for child in dependents[node]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    following.append(child)
        current = following
    order = tuple(node for level in levels for node in level)
    cycles: tuple[tuple[str, ...], ...] = ()
    if len(order) < len(needs):
        cycles = find_cycles(needs, [n for n in needs if n not in level_of])
    return Layering(
        order,
        tuple(levels),
        level_of,
        {node: tuple(children) for node, children in dependents.items()},
        cycles,
    )


def find_cycles(needs: Mapping[str, Sequence[str]], stuck: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """One cycle per tangle among ``stuck`` (steps Kahn could not order), in run order,
    starting from its earliest-declared step.

    Every stuck step needs another stuck step, so walking needs from one must close a loop.
    """
    stuck_set = set(stuck)
    declared = {node: i for i, node in enumerate(stuck)}
    visited: set[str] = set()
    cycles: list[tuple[str, ...]] = []
    for start in stuck:
        if start in visited:
            continue
        path: list[str] = []
        position: dict[str, int] = {}
        node = start
        while node not in visited:
            visited.add(node)
            position[node] = len(path)
            path.append(node)
            node = next(n for n in needs[node] if n in stuck_set)
        if node in position:
            loop = path[position[node] :]
            loop.reverse()
            first = min(range(len(loop)), key=lambda i: declared[loop[i]])
            loop = loop[first:] + loop[:first]
            cycles.append((*loop, loop[0]))
    return tuple(cycles)


def is_upstream(
    candidate: str,
    node: str,
    needs: Mapping[str, Sequence[str]],
    level_of: Mapping[str, int],
    cache: dict[str, frozenset[str]],
) -> bool:
    """True when ``candidate`` must finish before ``node`` starts (a transitive need)."""
    if candidate in needs[node]:
        return True
    if level_of.get(candidate, -1) >= level_of.get(node, -1):
        return False
    ancestors = cache.get(node)
    if ancestors is None:
        seen: set[str] = set()
        stack = list(needs[node])
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(needs[current])
        ancestors = cache[node] = frozenset(seen)
    return candidate in ancestors
