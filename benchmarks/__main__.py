"""Command line: ``python -m benchmarks [name ...] [--json FILE] [--plot FILE.png] [--quick]``.

With no name every benchmark module runs. When chorde's compiled speedups are active, the
in-process modules (``inproc``, ``decorators``) are also run once more, peers included, in a
child process with ``CHORDE_PURE_PYTHON=1``: its figures make the ``inproc[pure]`` (...)
tables, so each build's ratios come from peers measured alongside it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import benchmarks
from benchmarks.harness import (
    REFERENCE_PREFIX,
    Result,
    TimingConfig,
    format_report,
    loop_overhead,
    machine_info,
    results_to_json,
    set_cpu_clock,
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
#: Modules measured in both builds: pure CPU work where compiling changes the figures.
_BOTH_BUILDS = ("inproc", "decorators")
_PURE_SUFFIX = "[pure]"
_PURE_TIMEOUT_S = 1800

#: The issue's targets: (benchmark, operation, peer, chorde implementation, minimum ratio).
#: ratio = peer ns / chorde ns; a ``max_slowdown`` target is written as 1 / factor.
TARGETS: tuple[tuple[str, str, str, str, float], ...] = (
    ("inproc", "get-hit", "cachetools.TTLCache", "chorde", 4.0),
    ("inproc", "put", "cachetools.TTLCache", "chorde", 3.0),
    # Issue 27 withdrew issue 12's 2.0x for the pure build's get hit: 1.5x.
    ("inproc[pure]", "get-hit", "cachetools.TTLCache", "chorde", 1.5),
    ("inproc[pure]", "put", "cachetools.TTLCache", "chorde", 2.0),
    ("decorators", "hit", "cachetools.cached(TTLCache)", "chorde", 1.7),
    ("decorators", "hit", "functools.lru_cache", "chorde", 1 / 5),
    # Issue 27: memory within 1.1x of lru.LRU; put at most 0.7x chorde 1.0.11's time
    # (figures normalised by dict.get); threads: at 8 threads chorde >= 10x cachetools
    # under a lock (the "10-20x ahead; keep it so"; its 8/1-thread ratio >= 0.83 is
    # in the threads notes).
    ("memory", "bytes/entry (RSS)", "lru.LRU", "chorde", 1 / 1.1),
    ("legacy_put", "put", "chorde 1.0.11", "chorde", 1 / 0.7),
    ("legacy_put", "put-new (evicting)", "chorde 1.0.11", "chorde", 1 / 0.7),
    ("threads", "client, 8 threads", "cachetools + Lock", "chorde", 10.0),
    ("threads", "@cached, 8 threads", "cachetools + Lock", "chorde", 10.0),
)  # The issue sets no @cached target for the pure build: decorators[pure] is reported only.


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


def build_info() -> dict[str, Any]:
    """Which chorde build the figures are of: compiled speedups or pure Python, per module."""
    import chorde
    from chorde import _speedups

    status = _speedups.status()
    return {
        "speedups_enabled": chorde.speedups_enabled(),
        "modules": status,
        "label": "compiled (Cython speedups)" if chorde.speedups_enabled() else "pure Python",
    }


def _run_pure(names: Sequence[str], args: argparse.Namespace) -> list[Result]:
    """Run ``names`` in a child process on the pure-Python modules, as ``<benchmark>[pure]``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pure.json"
        cmd = [sys.executable, "-m", "benchmarks", *names, "--no-pure", "--json", str(out)]
        cmd += ["--quick"] * args.quick + ["--cpu-time"] * args.cpu_time
        cmd += ["--rounds", str(args.rounds)]
        env = {**os.environ, "CHORDE_PURE_PYTHON": "1"}
        print(f"running {', '.join(names)} again on pure Python ...", file=sys.stderr)
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, timeout=_PURE_TIMEOUT_S)
        if done.returncode != 0 or not out.exists():
            print("  the pure-Python run failed: no [pure] tables", file=sys.stderr)
            return []
        rows = json.loads(out.read_text())["results"]
    pure = [Result(**row) for row in rows]
    for r in pure:
        r.benchmark += _PURE_SUFFIX
    return pure


def _best_of(rounds: Sequence[list[Result]]) -> list[Result]:
    """Per table cell, the round with the lowest figure (order of the first round).

    Each round measures every implementation once, one after the other; on a shared machine
    a burst of load can land on one implementation's turn, and the rounds even that out.
    """
    best: dict[tuple[str, str, str], Result] = {}
    for results in rounds:
        for r in results:
            key = (r.benchmark, r.operation, r.implementation)
            old = best.get(key)
            if old is None or (r.ns_per_op is not None and (old.ns_per_op or 0) > r.ns_per_op):
                best[key] = r
    return list(best.values())


def _with_pure(results: list[Result], pure: list[Result]) -> list[Result]:
    """Each ``<benchmark>[pure]`` table right after its benchmark's."""
    out: list[Result] = []
    for bench in dict.fromkeys(r.benchmark for r in results):
        out += [r for r in results if r.benchmark == bench]
        out += [r for r in pure if r.benchmark == bench + _PURE_SUFFIX]
    return out


def target_ratios(results: Sequence[Result]) -> list[dict[str, Any]]:
    """The issue's targets met or not, from the figures of this run (missing ones left out)."""
    ns = {(r.benchmark, r.operation, r.implementation): r.ns_per_op for r in results}
    rows = []
    for bench, op, peer, ours, minimum in TARGETS:
        peer_ns, our_ns = ns.get((bench, op, peer)), ns.get((bench, op, ours))
        if not peer_ns or not our_ns:
            continue
        ratio = peer_ns / our_ns
        rows.append(
            {
                "benchmark": bench,
                "operation": op,
                "implementation": ours,
                "peer": peer,
                "ratio": ratio,
                "target": minimum,
                "met": ratio >= minimum,
            }
        )
    return rows


def format_targets(rows: Sequence[dict[str, Any]]) -> str:
    """The target lines printed after the tables."""
    if not rows:
        return ""
    out = ["== targets (ratio = peer ns / chorde ns, same run)"]
    for t in rows:
        want = f">= {t['target']:.2f}x" if t["target"] >= 1 else f"within {1 / t['target']:g}x"
        out.append(
            f"{t['benchmark']} {t['operation']}: {t['implementation']} vs {t['peer']}: "
            f"{t['ratio']:.2f}x (target {want}) {'met' if t['met'] else 'SHORT'}"
        )
    return "\n".join(out) + "\n"


def plot(
    results: Sequence[Result], targets: Sequence[dict[str, Any]], info: dict, path: Path
) -> None:
    """A bar chart per benchmark of every peer's ratio to chorde, plus the targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    panels: list[tuple[str, list[tuple[str, float, float | None]]]] = []
    if targets:
        panels.append(
            (
                "targets (bar: measured, tick: target)",
                [
                    (
                        f"{t['benchmark']} {t['operation']}: {t['implementation']} vs {t['peer']}",
                        t["ratio"],
                        t["target"],
                    )
                    for t in targets
                ],
            )
        )
    for bench in dict.fromkeys(r.benchmark for r in results):
        rows = [r for r in results if r.benchmark == bench and r.ns_per_op]
        ref = next(
            (r.implementation for r in rows if r.implementation.startswith(REFERENCE_PREFIX)), None
        )
        if ref is None:
            continue
        base = {r.operation: r.ns_per_op for r in rows if r.implementation == ref}
        bars = [
            (f"{r.operation}: {r.implementation}", r.ns_per_op / base[r.operation], None)
            for r in rows
            if r.implementation != ref and base.get(r.operation)
        ]
        if bars:
            panels.append((f"{bench}: peer ns / {ref} ns (>1: chorde faster)", bars))
    if not panels:
        print("nothing to plot", file=sys.stderr)
        return
    heights = [max(1.2, 0.28 * len(bars) + 0.8) for _, bars in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(10, sum(heights)), gridspec_kw={"height_ratios": heights}
    )
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (title, bars) in zip(axes, panels, strict=True):
        labels = [b[0] for b in bars]
        ratios = [b[1] for b in bars]
        colors = [
            ("tab:green" if b[1] >= b[2] else "tab:red")
            if b[2]
            else ("tab:blue" if b[1] >= 1 else "tab:orange")
            for b in bars
        ]
        y = range(len(bars))
        ax.barh(y, ratios, color=colors)
        for i, b in enumerate(bars):
            if b[2]:
                ax.plot([b[2], b[2]], [i - 0.4, i + 0.4], color="black", linewidth=2)
            ax.text(b[1], i, f" {b[1]:.2f}x", va="center", fontsize=7)
        ax.axvline(1.0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_yticks(list(y), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9, loc="left")
    fig.suptitle(
        f"chorde benchmarks, {info['date'][:10]}: {info['python']}, {info['cpu']} "
        f"({info['cpus']} CPUs), {info.get('build', {}).get('label', '')}",
        fontsize=9,
        y=1 - 0.15 / sum(heights),
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / sum(heights)))  # room for the title
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benchmarks (all when none is named) and print their tables."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write results here")
    parser.add_argument("--plot", metavar="FILE.png", type=Path, help="bar chart of the ratios")
    parser.add_argument("--quick", action="store_true", help="fast smoke run, rough numbers")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the in-process benchmarks with CPU time (steadier on a busy machine)",
    )
    parser.add_argument("--no-pure", action="store_true", help="skip the [pure] tables")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds of the in-process modules, best kept per cell (default 3, 1 with --quick)",
    )
    args = parser.parse_args(argv)

    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.list:
        print("\n".join(available()))
        return 0
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.error("--plot needs matplotlib: pip install 'chorde[bench]'")

    build = build_info()
    results: list[Result] = []
    ran: list[str] = []
    for name in args.names or available():
        module = _load(name)
        if module is None:
            continue
        started = time.perf_counter()
        print(f"running {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr)
        set_cpu_clock(args.cpu_time and name in _BOTH_BUILDS)
        rounds = args.rounds if name in _BOTH_BUILDS else 1
        try:
            results.extend(_best_of([module.run(args.quick) for _ in range(rounds)]))
        finally:
            set_cpu_clock(False)
        print(f"  {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr)
        ran.append(name)
    if not ran:
        print("no benchmark ran", file=sys.stderr)
        return 2
    both = [n for n in ran if n in _BOTH_BUILDS]
    if both and build["speedups_enabled"] and not args.no_pure:
        results = _with_pure(results, _run_pure(both, args))

    info = machine_info()
    info["build"] = build
    overhead = loop_overhead(TimingConfig.for_run(args.quick))
    targets = target_ratios(results)
    print(f"build:   {build['label']}" + (", timed in CPU time" if args.cpu_time else ""))
    print(format_report(results, info, overhead))
    print(format_targets(targets), end="")
    if args.json is not None:
        doc = results_to_json(results, info, overhead, args.quick)
        doc["targets"] = targets
        doc["cpu_time"] = args.cpu_time
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"results written to {args.json}", file=sys.stderr)
    if args.plot is not None:
        plot(results, targets, info, args.plot)
        print(f"chart written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
