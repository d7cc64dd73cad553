"""``python -m bench [--quick] [CASE...]``: run the benchmarks, one JSON line per measurement."""

from __future__ import annotations

import argparse
import importlib
import json
import sys

CASES = ["compile"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same cases (under a minute)")
    parser.add_argument("cases", nargs="*", choices=[*CASES, []], help="cases to run (default: all)")
    args = parser.parse_args(argv)
    for case in args.cases or CASES:
        module = importlib.import_module(f"bench.{case}")
        for line in module.run(args.quick):
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
