"""A small timing core and table printer shared by every benchmark module.

A benchmark module exposes ``run(quick: bool) -> list[Result]``. Each measurement times a
statement (``"c.get(k)"``) compiled into a tight loop over a precomputed key sequence, so
every implementation pays the same loop overhead and no extra call frame. The pass is
repeated until a sample lasts long enough to be trusted (calibrated), samples are repeated
and the best is kept (best-of-N), and every loop has a hard bound. Implementations compared
on one operation are measured together (:func:`measure_interleaved`): their samples take
turns, so a stretch when the machine runs slow falls on all of them, not on one.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "NOT_APPLICABLE",
    "REFERENCE_PREFIX",
    "Case",
    "Result",
    "Timing",
    "TimingConfig",
    "format_report",
    "format_table",
    "loop_overhead",
    "machine_info",
    "measure",
    "measure_interleaved",
    "memcached_server",
    "results_to_json",
    "set_cpu_clock",
]

#: Implementations whose name starts with this are ours; the first one is the reference.
REFERENCE_PREFIX = "chorde"
#: The ``ns_per_op`` of an operation an implementation does not offer.
NOT_APPLICABLE = None


@dataclass(frozen=True, slots=True)
class TimingConfig:
    """How hard to try: the minimum duration of one sample, how many samples, and bounds."""

    min_sample_ns: int
    repeats: int
    max_loops: int
    max_total_ns: int

    @classmethod
    def for_run(cls, quick: bool) -> TimingConfig:
        """The full settings, or the smoke-run settings when ``quick``."""
        if quick:
            return cls(min_sample_ns=2_000_000, repeats=2, max_loops=50, max_total_ns=100_000_000)
        # Many short samples rather than a few long ones: on a shared machine the best of
        # them is more likely to be a stretch the process had a CPU to itself.
        return cls(min_sample_ns=8_000_000, repeats=25, max_loops=2_000, max_total_ns=1_500_000_000)


@dataclass(frozen=True, slots=True)
class Timing:
    """Best ns per operation over ``repeats`` samples of ``loops`` passes of ``ops`` each."""

    ns_per_op: float
    ops: int
    loops: int
    repeats: int


@dataclass(slots=True)
class Result:
    """One row-cell of a benchmark table; ``ns_per_op`` is None where not applicable."""

    benchmark: str
    operation: str
    implementation: str
    ns_per_op: float | None
    api: str = ""
    ops: int = 0
    loops: int = 0
    repeats: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_timing(
        cls, benchmark: str, operation: str, implementation: str, timing: Timing, **kw: Any
    ) -> Result:
        """Build a result from a :class:`Timing`."""
        return cls(
            benchmark,
            operation,
            implementation,
            timing.ns_per_op,
            ops=timing.ops,
            loops=timing.loops,
            repeats=timing.repeats,
            **kw,
        )


_clock = time.perf_counter_ns


def set_cpu_clock(cpu: bool) -> None:
    """Time with this thread's CPU time (``cpu``) or with wall time (the default).

    CPU time leaves out the stretches another process had the CPU: steadier figures for
    in-process work on a busy machine, but wrong for anything that waits on a server.
    """
    global _clock
    _clock = time.thread_time_ns if cpu else time.perf_counter_ns


_LOOP_TEMPLATE = """
def _pass(c, keys, v, _perf=_perf):
    t0 = _perf()
    for k in keys:
        {stmt}
    return _perf() - t0
"""


def _compile(stmt: str) -> Callable[[Any, Sequence[Any], Any], int]:
    namespace: dict[str, Any] = {"_perf": _clock}
    try:
        exec(_LOOP_TEMPLATE.format(stmt=stmt), namespace)
    except SyntaxError as exc:
        raise ValueError(f"benchmark statement {stmt!r} does not compile: {exc}") from None
    return namespace["_pass"]


@dataclass(frozen=True, slots=True)
class Case:
    """One statement to time: ``stmt`` runs once per key with ``c`` bound to ``target``, ``k``
    to the key and ``v`` to ``value``; ``setup`` (untimed) runs before every pass, to restore
    state a pass changes."""

    stmt: str
    target: Any
    keys: Sequence[Any]
    value: Any = None
    setup: Callable[[], object] | None = None


def measure(
    stmt: str,
    target: Any,
    keys: Sequence[Any],
    config: TimingConfig,
    *,
    value: Any = None,
    setup: Callable[[], object] | None = None,
) -> Timing:
    """Time one :class:`Case` on its own."""
    return measure_interleaved([Case(stmt, target, keys, value, setup)], config)[0]


def measure_interleaved(cases: Sequence[Case], config: TimingConfig) -> list[Timing]:
    """Time several cases sample by sample in turn; the best sample of each is its figure.

    Each case is calibrated on its own (its passes per sample), then every round takes one
    sample of each case, so all of them see the same stretches of machine speed; the round's
    first case rotates, and an untimed pass warms each sample up. Bounded by
    ``config.repeats`` rounds and ``config.max_total_ns`` per case.
    """
    runs = []
    for case in cases:
        if not case.keys:
            raise ValueError(f"measure() needs at least one key ({case.stmt!r})")
        runs.append(_compile(case.stmt))

    def one_pass(i: int) -> int:
        case = cases[i]
        if case.setup is not None:
            case.setup()
        return runs[i](case.target, case.keys, case.value)

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        loops = []
        for i in range(len(cases)):
            first = max(one_pass(i), 1)  # also a warm-up
            loops.append(max(1, min(config.max_loops, math.ceil(config.min_sample_ns / first))))
        best = [math.inf] * len(cases)
        done = 0
        budget = config.max_total_ns * len(cases)
        for round_ in range(config.repeats):
            # Each round starts with the next case: the first one after gc.collect() runs
            # with cold CPU caches, and no case should always be the one that does.
            for j in range(len(cases)):
                i = (round_ + j) % len(cases)
                case = cases[i]
                # Untimed, so the sample starts with this case's data in the CPU caches, as
                # it would measured alone, not with the previous case's.
                one_pass(i)
                total = 0
                for _ in range(loops[i]):
                    total += one_pass(i)
                best[i] = min(best[i], total / (loops[i] * len(case.keys)))
            done += 1
            if time.perf_counter_ns() - started > budget:
                break
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return [
        Timing(ns_per_op=b, ops=len(c.keys), loops=n, repeats=done)
        for b, c, n in zip(best, cases, loops, strict=True)
    ]


def loop_overhead(config: TimingConfig, n: int = 10_000) -> float:
    """ns per iteration of the empty timing loop (included in every figure)."""
    return measure("pass", None, list(range(n)), config).ns_per_op


# -- reporting ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """Where and when the numbers were taken."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_build": " ".join(platform.python_build()),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _ordered_unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _reference(implementations: Sequence[str]) -> str | None:
    for name in implementations:
        if name.startswith(REFERENCE_PREFIX):
            return name
    return None


def _fmt_ns(ns: float) -> str:
    if ns >= 100:
        return f"{ns:,.0f}"
    return f"{ns:.1f}"


def format_table(results: Sequence[Result]) -> str:
    """One table per benchmark: rows are operations, columns implementations.

    Each cell is ``ns/op`` and, for peers, ``peer_ns / chorde_ns`` (>1: chorde is faster).
    """
    out: list[str] = []
    for bench in _ordered_unique(r.benchmark for r in results):
        rows = [r for r in results if r.benchmark == bench]
        ops = _ordered_unique(r.operation for r in rows)
        impls = _ordered_unique(r.implementation for r in rows)
        ref = _reference(impls)
        cell = {(r.operation, r.implementation): r for r in rows}
        texts: dict[tuple[str, str], str] = {}
        for op in ops:
            ref_ns = cell[op, ref].ns_per_op if ref and (op, ref) in cell else None
            for impl in impls:
                r = cell.get((op, impl))
                if r is None or r.ns_per_op is None:
                    texts[op, impl] = ""
                    continue
                text = _fmt_ns(r.ns_per_op)
                if impl != ref:
                    ratio = f"{r.ns_per_op / ref_ns:.2f}x" if ref_ns else "-"
                    text = f"{text} {ratio:>6}"
                texts[op, impl] = text
        op_width = max(len("operation"), *(len(op) for op in ops))
        widths = {impl: max(len(impl), *(len(texts[op, impl]) for op in ops)) for impl in impls}
        ref_text = f"ratio = peer ns / {ref} ns (>1: chorde is faster)" if ref else "no chorde"
        out.append(f"== {bench}: ns/op, best of N; {ref_text}")
        header = "operation".ljust(op_width) + "".join(
            "  " + impl.rjust(widths[impl]) for impl in impls
        )
        out.append(header)
        out.append("-" * len(header))
        for op in ops:
            out.append(
                op.ljust(op_width)
                + "".join("  " + texts[op, impl].rjust(widths[impl]) for impl in impls)
            )
        forms = [
            f"  {impl}: "
            + ", ".join(
                f"{op} `{cell[op, impl].api}`"
                for op in ops
                if (op, impl) in cell and cell[op, impl].api
            )
            for impl in impls
        ]
        notes = sorted({f"  {r.implementation} {r.operation}: {r.note}" for r in rows if r.note})
        out.append("statements timed (c = the cache, k = the key, v = the value):")
        out.extend(line for line in forms if not line.endswith(": "))
        if notes:
            out.append("notes:")
            out.extend(notes)
        out.append("")
    return "\n".join(out)


def format_report(results: Sequence[Result], info: dict[str, Any], overhead_ns: float) -> str:
    """The header (machine, Python, date, loop overhead) followed by every table."""
    header = [
        f"machine: {info['platform']} ({info['machine']}, {info['cpus']} CPUs)",
        f"cpu:     {info['cpu']}",
        f"python:  {info['python']} ({info['python_build']})",
        f"date:    {info['date']}",
        f"empty loop overhead: {overhead_ns:.1f} ns/op, included in every figure below",
        "",
    ]
    return "\n".join(header) + format_table(results)


def results_to_json(
    results: Sequence[Result], info: dict[str, Any], overhead_ns: float, quick: bool
) -> dict[str, Any]:
    """The JSON document written by ``--json``."""
    return {
        "machine": info,
        "quick": quick,
        "loop_overhead_ns": overhead_ns,
        "argv": sys.argv[1:],
        "results": [asdict(r) for r in results],
    }


@contextlib.contextmanager
def memcached_server() -> Iterator[str | None]:
    """A memcached address for a benchmark: ``CHORDE_BENCH_MEMCACHED``, else a server of
    the test fixtures started for the run (64 MB), else None when memcached is missing."""
    address = os.environ.get("CHORDE_BENCH_MEMCACHED")
    if address:
        yield address
        return
    try:
        from tests.servers import MemcachedServer, find_memcached
    except ImportError:  # benchmarks run from a checkout; be helpful if not
        yield None
        return
    if find_memcached() is None:
        yield None
        return
    with MemcachedServer(memory_mb=64) as server:
        yield server.address
