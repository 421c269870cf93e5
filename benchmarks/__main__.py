"""Command line: ``python -m benchmarks [name ...] [--json FILE] [--quick] [--list]``."""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import benchmarks
from benchmarks.harness import (
    Result,
    TimingConfig,
    format_report,
    loop_overhead,
    machine_info,
    results_to_json,
)

# Listed first, in this order; any other module found in the package follows alphabetically.
_PREFERRED_ORDER = (
    "inproc",
    "decorators",
    "memcached",
    "django",
    "starlette",
    "files",
    "coherence",
)
_NOT_BENCHMARKS = {"harness", "__main__"}


def available() -> list[str]:
    """Names of the benchmark modules present in the package."""
    found = {
        m.name
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name not in _NOT_BENCHMARKS and not m.name.startswith("_")
    }
    return [n for n in _PREFERRED_ORDER if n in found] + sorted(found - set(_PREFERRED_ORDER))


def _load(name: str) -> ModuleType | None:
    if name not in available():
        print(f"benchmark {name!r} skipped: no such module (have: {available()})", file=sys.stderr)
        return None
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ImportError as exc:
        print(f"benchmark {name!r} skipped: cannot import it ({exc})", file=sys.stderr)
        return None
    if not callable(getattr(module, "run", None)):
        print(f"benchmark {name!r} skipped: it has no run(quick) function", file=sys.stderr)
        return None
    return module


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benchmarks (all when none is named) and print their tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write results here")
    parser.add_argument("--quick", action="store_true", help="fast smoke run, rough numbers")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)

    if args.list:
        print("\n".join(available()))
        return 0

    results: list[Result] = []
    ran = 0
    for name in args.names or available():
        module = _load(name)
        if module is None:
            continue
        started = time.perf_counter()
        print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr)
        results.extend(module.run(args.quick))
        print(f"  {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr)
        ran += 1
    if not ran:
        print("no benchmark ran", file=sys.stderr)
        return 2

    info = machine_info()
    overhead = loop_overhead(TimingConfig.for_run(args.quick))
    print(format_report(results, info, overhead))
    if args.json is not None:
        doc = results_to_json(results, info, overhead, args.quick)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results written to {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
