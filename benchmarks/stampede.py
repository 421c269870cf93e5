"""A stampede: 200 callers in 4 processes (50 threads each) want one expired key at once.

The function takes 100 ms. For each way of caching it on one local memcached: how many
times it ran, and the callers' latency (p50, p99), each round on a key that just expired
(chorde: a stale entry; the peers' entries are gone, as an expired memcached item is):

* ``chorde leases``: ``@cached`` on a ``MemcachedClient`` handing out leases (meta
  commands' win tokens): one computation in the cluster, no broker;
* ``chorde leases, .bg()``: the same called through ``.bg()``: callers get the stale value
  at once while one caller in the cluster refreshes it;
* ``chorde + pyzmq broker``: ``@cached`` on a ``CoherentWrapperClient`` over a
  ``BrokerBus`` (claims in memcached, wake-ups through a broker process), no leases;
* ``chorde, neither``: ``@cached`` on a ``MemcachedClient`` with ``lease_ttl=0``: compute
  once per process;
* ``django``: Django's ``PyMemcacheCache``, ``cache.get_or_set(key, compute)``;
* ``flask-caching``: Flask-Caching's memcached backend (``MemcachedCache``, on
  python-memcached), ``@cache.memoize``.

Worker processes (``tests/leases/_worker.py``) stay up for the run; the configurations take
turns round after round, and each figure is the median over the rounds. Needs memcached,
pyzmq (broker), Django and Flask-Caching with a memcached library (each peer skipped when
missing).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from benchmarks.harness import Result, memcached_server

__all__ = ["run"]

_BENCH = "stampede"
PROCESSES = 4
THREADS = 50
DELAY = 0.1
_ROUNDS = 5
_QUICK_ROUNDS = 1
#: (row name, worker mode, what it needs installed)
_CONFIGS = (
    ("chorde leases", "leases", ()),
    ("chorde leases, .bg()", "leases_bg", ()),
    ("chorde + pyzmq broker", "broker", ("zmq",)),
    ("chorde, neither", "neither", ()),
    ("django", "django", ("django", "pymemcache")),
    ("flask-caching", "flask", ("flask_caching", "memcache")),
)


def _missing(modules: tuple[str, ...]) -> str | None:
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            return name
    return None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _computations(log: Path, key: str) -> int:
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.split()[:1] == [key])


def _round(members: list[Any], log: Path, key: str) -> tuple[int, list[float], int]:
    """Prime ``key``, let it expire, stampede it: (computations, latencies, errors)."""
    members[0].call("call", key=key)
    members[0].call("expire", key=key)
    before = _computations(log, key)
    at = time.time() + 1.0
    sent = [(m, m.send("stampede", key=key, threads=THREADS, delay=DELAY, at=at)) for m in members]
    results = [r for m, cid in sent for r in m.result(cid, timeout=120)["results"]]
    latencies = [r["latency"] for r in results]
    errors = sum(1 for r in results if "error" in r)
    time.sleep(DELAY)  # a background refresh (.bg()) is logged when it starts: let it start
    return _computations(log, key) - before, latencies, errors


def run(quick: bool) -> list[Result]:
    """Every configuration's stampedes; see the module docstring."""
    from tests.mq._cluster import BrokerProcess, start_members
    from tests.servers import free_port

    rounds = _QUICK_ROUNDS if quick else _ROUNDS
    results: list[Result] = []
    with memcached_server() as address, TemporaryDirectory() as tmp:
        if address is None:
            print("  stampede: skipped (no memcached executable found)", file=sys.stderr)
            return results
        broker = None
        clusters: list[tuple[str, Path, list[Any]]] = []
        try:
            for name, mode, needs in _CONFIGS:
                missing = _missing(needs)
                if missing:
                    print(f"  stampede: {name} skipped (no {missing})", file=sys.stderr)
                    continue
                log = Path(tmp) / f"{mode}.log"
                cfg: dict[str, Any] = {
                    "memcached": address,
                    "mode": mode,
                    "namespace": f"st-{mode}",
                    "log": str(log),
                    "lease_ttl": 10.0,
                    "ttl": 300,
                }
                if mode == "broker":
                    broker = BrokerProcess(free_port()).start()
                    cfg["broker"] = broker.endpoint
                members = start_members([cfg] * PROCESSES, worker="tests.leases._worker")
                clusters.append((name, log, members))
            figures: dict[str, list[tuple[int, float, float, int]]] = {
                n: [] for n, _, _ in clusters
            }
            for round_no in range(rounds):
                shift = round_no % len(clusters)
                for name, log, members in clusters[shift:] + clusters[:shift]:
                    ran, latencies, errors = _round(members, log, f"k{round_no}")
                    figures[name].append(
                        (ran, _percentile(latencies, 0.5), _percentile(latencies, 0.99), errors)
                    )
        finally:
            for _, _, members in clusters:
                for m in members:
                    m.stop()
            if broker is not None:
                broker.stop()
    note = f"{PROCESSES} processes x {THREADS} threads, a {DELAY * 1000:.0f} ms function"
    print(f"  stampede ({note}, median of {rounds} rounds):", file=sys.stderr)
    print(
        f"  {'':24} {'computations':>12} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}",
        file=sys.stderr,
    )
    for name, rows in figures.items():
        ran = statistics.median(r[0] for r in rows)
        p50 = statistics.median(r[1] for r in rows)
        p99 = statistics.median(r[2] for r in rows)
        errors = sum(r[3] for r in rows)
        print(
            f"  {name:24} {ran:>12g} {p50 * 1e3:>8.1f} {p99 * 1e3:>8.1f} {errors:>6}",
            file=sys.stderr,
        )
        extra = {"rounds": [list(r) for r in rows], "errors": errors}
        results.append(
            Result(
                _BENCH,
                "computations",
                name,
                float(ran),
                api="a count, not ns",
                ops=PROCESSES * THREADS,
                repeats=len(rows),
                note=note,
                extra=extra,
            )
        )
        for label, value in (("p50 latency", p50), ("p99 latency", p99)):
            results.append(
                Result(
                    _BENCH,
                    label,
                    name,
                    value * 1e9,
                    ops=PROCESSES * THREADS,
                    repeats=len(rows),
                    note=note,
                )
            )
    return results
