"""Threads: 1, 2, 4 and 8 threads sharing one cache, 90% get and 10% put, aggregate ops/s.

Two cases, each against its peer made thread-safe the way its documentation says:

* ``client``: one :class:`~chorde.clients.inproc.InprocCacheClient` (``c.get(k)`` /
  ``c.put(k, v, 300)``, no lock of the caller's: the client is thread-safe) against a
  ``cachetools.TTLCache`` whose every access holds one ``threading.Lock``.
* ``@cached``: one decorated function (``f(k)`` / ``f.put(k, _cache_put=v)``) against
  ``cachetools.cached(TTLCache, lock=Lock())`` (``f(k)`` / the same store, under its lock,
  through ``f.cache`` and ``f.cache_key``).

The key space is 10,000 ints, preloaded, so every get is a hit and every put overwrites.
Each thread gets its own shuffled sequence of keys with exactly one put in ten; a run is a
fixed number of operations in all (split evenly over the threads, so every thread count does
the same work) started together from a barrier, and its figure is the total over the wall
time from the barrier to the last thread's end. Runs take turns (every implementation and
thread count once per round, the order rotating) and the best round is the figure; the
notes give the median and range over rounds, and each run's rate over the process's CPU time
(a stretch when another process had the core is not counted). On a 2-core machine shared
with other work the ranges are wide: the ratios within one round are steadier than the
absolute figures. Some of cachetools' runs with 2 or more threads are several times slower
than its others while chorde's runs of the same round are not (most likely a thread
preempted while holding the lock, the others queueing behind it): its medians and ranges
show how often, its best figure leaves that out.

The table shows ns per operation of the aggregate rate (1e9 / ops/s) with the ratio
cachetools / chorde (>1: chorde is faster); the notes of each 8-thread row give the
8-thread / 1-thread throughput of that implementation. Goals (issue 27): chorde's 8-thread
throughput at least 0.83x its 1-thread figure, and chorde at least 10x cachetools under a
lock at every thread count.
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Result

__all__ = ["FULL_OPS", "N_KEYS", "QUICK_OPS", "THREADS", "run"]

N_KEYS = 10_000
TTL = 300
THREADS = (1, 2, 4, 8)
#: Operations per run, over all threads.
FULL_OPS = 400_000
QUICK_OPS = 16_000
FULL_ROUNDS = 7
QUICK_ROUNDS = 1
PUT_EVERY = 10  # one put in ten operations
_SEED = 20240504
_BENCH = "threads"
_CHORDE = "chorde"
_PEER = "cachetools + Lock"
_JOIN_TIMEOUT_S = 300.0

_WORKER = """
def _work(c, f, L, keys, puts, v):
    for k, p in zip(keys, puts):
        if p:
            {put}
        else:
            {get}
"""


@dataclass(slots=True)
class _Impl:
    """One implementation of one case: its objects and the two statements timed."""

    case: str
    name: str
    get: str
    put: str
    make: Callable[[], tuple[Any, Any, Any]]  # (c, f, L): cache, decorated function, lock
    work: Callable[..., None] | None = None

    def compile(self) -> None:
        namespace: dict[str, Any] = {}
        exec(_WORKER.format(get=self.get, put=self.put), namespace)
        self.work = namespace["_work"]


def _ident(x: Any) -> Any:
    return x


def _chorde_client() -> tuple[Any, Any, Any]:
    from chorde.clients.inproc import InprocCacheClient

    return InprocCacheClient(N_KEYS), None, None


def _cachetools_client() -> tuple[Any, Any, Any]:
    import cachetools

    return cachetools.TTLCache(maxsize=N_KEYS, ttl=TTL), None, threading.Lock()


def _chorde_cached() -> tuple[Any, Any, Any]:
    from chorde.clients.inproc import InprocCacheClient
    from chorde.decorators import cached

    client = InprocCacheClient(2 * N_KEYS)  # room for the keys and the namespace's slack
    return client, cached(client, TTL)(_ident), None


def _cachetools_cached() -> tuple[Any, Any, Any]:
    import cachetools

    lock = threading.Lock()
    cache = cachetools.TTLCache(maxsize=2 * N_KEYS, ttl=TTL)
    return cache, cachetools.cached(cache, lock=lock)(_ident), lock


_IMPLS = (
    _Impl("client", _CHORDE, "c.get(k)", f"c.put(k, v, {TTL})", _chorde_client),
    _Impl("client", _PEER, "with L: c[k]", "with L: c[k] = v", _cachetools_client),
    _Impl("@cached", _CHORDE, "f(k)", "f.put(k, _cache_put=v)", _chorde_cached),
    _Impl("@cached", _PEER, "f(k)", "with L: c[f.cache_key(k)] = v", _cachetools_cached),
)


def _sequences(threads: int, total: int) -> list[tuple[list[int], list[bool]]]:
    """Per thread: a shuffled key sequence and its put flags (exactly one in PUT_EVERY)."""
    per_thread = max(PUT_EVERY, total // threads)
    out = []
    for t in range(threads):
        rng = random.Random(_SEED + 1000 * threads + t)
        keys = [rng.randrange(N_KEYS) for _ in range(per_thread)]
        puts = [i % PUT_EVERY == 0 for i in range(per_thread)]
        rng.shuffle(puts)
        out.append((keys, puts))
    return out


def _fill(impl: _Impl, objects: tuple[Any, Any, Any], value: Any) -> None:
    keys = list(range(N_KEYS))
    assert impl.work is not None
    impl.work(*objects, keys, [True] * N_KEYS, value)
    impl.work(*objects, keys, [False] * N_KEYS, value)  # every key reads back (a hit)


def _one_run(
    impl: _Impl,
    objects: tuple[Any, Any, Any],
    sequences: Sequence[tuple[list[int], list[bool]]],
    value: Any,
) -> tuple[float, float]:
    """ops/s of one run, over wall time and over the process's CPU time: every thread works
    through its sequence, started together."""
    work = impl.work
    assert work is not None
    barrier = threading.Barrier(len(sequences) + 1)
    errors: list[BaseException] = []

    def thread_main(keys: list[int], puts: list[bool]) -> None:
        barrier.wait()
        try:
            work(*objects, keys, puts, value)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [
        threading.Thread(target=thread_main, args=seq, daemon=True, name=f"bench-{i}")
        for i, seq in enumerate(sequences)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    started, cpu_started = time.perf_counter(), time.process_time()
    for t in threads:
        t.join(_JOIN_TIMEOUT_S)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if errors:
        raise RuntimeError(f"{impl.case} {impl.name}: a thread failed: {errors[0]!r}")
    if any(t.is_alive() for t in threads):
        raise RuntimeError(f"{impl.case} {impl.name}: threads still running after the bound")
    ops = sum(len(keys) for keys, _ in sequences)
    return ops / elapsed, ops / max(cpu, 1e-9)


def run(quick: bool) -> list[Result]:
    """Measure every case, implementation and thread count; see the module docstring."""
    total = QUICK_OPS if quick else FULL_OPS
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    value = object()
    impls: list[tuple[_Impl, tuple[Any, Any, Any]]] = []
    for impl in _IMPLS:
        try:
            objects = impl.make()
        except ImportError as exc:
            print(f"  threads: {impl.case} {impl.name} skipped ({exc})", file=sys.stderr)
            continue
        impl.compile()
        _fill(impl, objects, value)
        impls.append((impl, objects))
    sequences = {n: _sequences(n, total) for n in THREADS}
    runs = [(impl, objects, n) for impl, objects in impls for n in THREADS]
    rates: dict[tuple[str, str, int], list[float]] = {}
    cpu_rates: dict[tuple[str, str, int], list[float]] = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for round_ in range(rounds):
            shift = round_ % len(runs)
            for impl, objects, n in runs[shift:] + runs[:shift]:
                rate, cpu_rate = _one_run(impl, objects, sequences[n], value)
                rates.setdefault((impl.case, impl.name, n), []).append(rate)
                cpu_rates.setdefault((impl.case, impl.name, n), []).append(cpu_rate)
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return _results(impls, sequences, rates, cpu_rates)


def _same_round(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Ratios a/b of the runs of one round each (neighbours in time: steadier than best/best)."""
    return [x / y for x, y in zip(a, b, strict=True)]


def _results(
    impls: Sequence[tuple[_Impl, Any]],
    sequences: dict[int, list[tuple[list[int], list[bool]]]],
    rates: dict[tuple[str, str, int], list[float]],
    cpu_rates: dict[tuple[str, str, int], list[float]],
) -> list[Result]:
    results: list[Result] = []
    for impl, _ in impls:
        for n in THREADS:
            samples = rates[impl.case, impl.name, n]
            best = max(samples)
            notes = [
                f"{best:,.0f} ops/s (median {statistics.median(samples):,.0f}, range"
                f" {min(samples):,.0f}-{best:,.0f} over {len(samples)} runs; per CPU-second"
                f" best {max(cpu_rates[impl.case, impl.name, n]):,.0f})"
            ]
            extra: dict[str, Any] = {
                "threads": n,
                "ops_per_s": samples,
                "ops_per_cpu_s": cpu_rates[impl.case, impl.name, n],
            }
            if n == THREADS[-1]:
                one = rates[impl.case, impl.name, 1]
                scale, paired = best / max(one), _same_round(samples, one)
                extra["scaling_vs_1_thread"] = scale
                extra["scaling_same_round"] = paired
                notes.append(
                    f"{n} threads / 1 thread: {scale:.2f}x best/best, same-round median"
                    f" {statistics.median(paired):.2f}x (range {min(paired):.2f}-{max(paired):.2f})"
                )
                if impl.name == _CHORDE:
                    notes.append(f"goal >= 0.83x: {'met' if scale >= 0.83 else 'SHORT'}")
            if impl.name != _CHORDE and (impl.case, _CHORDE, n) in rates:
                paired = _same_round(rates[impl.case, _CHORDE, n], samples)
                extra["chorde_over_peer_same_round"] = paired
                notes.append(
                    f"chorde / this: same-round median {statistics.median(paired):.1f}x"
                    f" (range {min(paired):.1f}-{max(paired):.1f}; goal >= 10x)"
                )
            label = f"{n} thread" + ("s" if n > 1 else "")
            results.append(
                Result(
                    _BENCH,
                    f"{impl.case}, {label}",
                    impl.name,
                    1e9 / best,
                    api=f"{impl.get} (90%) / {impl.put} (10%)",
                    ops=sum(len(keys) for keys, _ in sequences[n]),
                    loops=1,
                    repeats=len(samples),
                    note="; ".join(notes),
                    extra=extra,
                )
            )
    return results
