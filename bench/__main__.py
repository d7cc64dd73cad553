"""``python -m bench [--quick] [--scale] [CASE...]``: run the benchmarks, one JSON line per measurement
(``python -m bench drills``: the chaos drills, measured).

Against Redis and PostgreSQL (``ORCHESTRATOR_BROKER_URL``, ``ORCHESTRATOR_DATABASE_URL``; defaults:
the local servers). The bench creates its own database and uses an empty Redis database, starts
and stops its own workers, and leaves the servers as it found them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

CASES = ["compile", "store", "runs", "dlq", "compose", "cache", "metrics", "audit", "api"]
OPT_IN = ["scale", "drills"]  # minutes each: only when asked for (``--scale``, ``drills``), never in the default run
NEEDS_SERVICES = {"store", "runs", "dlq", "compose", "cache", "metrics", "audit", "api", "scale", "drills"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same cases (under a minute)")
    parser.add_argument(
        "--scale", action="store_true", help="also the scale group: 4 worker processes, 100k items (bench/README.md)"
    )
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all of {', '.join(CASES)})")
    args = parser.parse_args(argv)
    unknown = set(args.cases) - set(CASES + OPT_IN)
    if unknown:
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    chosen = chosen_cases(args.cases, args.scale)
    started = time.perf_counter()
    for case in [c for c in chosen if c not in NEEDS_SERVICES]:
        _emit(importlib.import_module(f"bench.{case}").run(args.quick))
    with_services = [c for c in chosen if c in NEEDS_SERVICES]
    if with_services:
        from bench.env import services

        with services() as svc:
            for case in with_services:
                _emit(importlib.import_module(f"bench.{case}").run(svc, args.quick))
    print(f"# total {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


def chosen_cases(cases: list[str], scale: bool) -> list[str]:
    """The named cases, else every default one; ``--scale`` adds the scale group (alone if no case is named)."""
    asked = set(cases) | ({"scale"} if scale else set())
    return [c for c in CASES + OPT_IN if c in (asked or set(CASES))]


def _emit(lines: object) -> None:
    for line in lines:  # type: ignore[attr-defined]
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())
