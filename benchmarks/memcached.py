"""memcached clients against one local memcached: get, getMulti(100) and put of 100-byte values.

Starts its own memcached on a free loopback port (``MEMCACHED_BIN`` or ``memcached`` on the
PATH); set ``CHORDE_BENCH_MEMCACHED=host:port`` to use a running one instead. Compared, in
the same run and against the same server:

* ``chorde``: :class:`chorde.clients.memcached.MemcachedClient`, values pickled and
  HMAC-signed, one connection per thread;
* ``pymemcache``: raw ``pymemcache.Client`` on bytes values (no pickling, no signing): the
  floor any wrapper pays on top of;
* ``django``: Django's ``PyMemcacheCache`` backend (pickles, does not sign).

Every implementation reads the same 1,000 keys (each its own copy, under its own prefix).

The machine may be shared and noisy, so the implementations are measured in interleaved
rounds (each round times every implementation and operation once, best of a few short
samples, in a rotating order) and each figure is the median over the rounds. The notes also
give the median of the per-round ratios to raw pymemcache, which cancels slow stretches
that hit every implementation of a round alike.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import sys
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Result, TimingConfig, measure, memcached_server

__all__ = ["run"]

_BENCH = "memcached"
_N_KEYS = 1000
_BATCH = 100
_TTL = 300
_SEED = 20240502
_ROUNDS = 21
_QUICK_ROUNDS = 2
#: One round's samples: short, so that a round is quick and rounds interleave finely.
_ROUND_CONFIG = TimingConfig(
    min_sample_ns=4_000_000, repeats=3, max_loops=500, max_total_ns=200_000_000
)
_RAW = "pymemcache"
#: The targets: (operation, chorde ns / raw pymemcache ns at most); issue 29's (issue 4 set
#: 1.3 and 1.25).
_TARGETS = {"get": 1.05, "getMulti(100)": 1.1}


def _chorde(address: str) -> Any:
    from chorde.clients.memcached import MemcachedClient

    return MemcachedClient([address], checksum_key="benchmark secret", namespace="bc:")


def _raw(address: str) -> Any:
    from pymemcache.client.base import Client

    host, port = address.rsplit(":", 1)
    return Client((host, int(port)), no_delay=True, default_noreply=False, key_prefix=b"br:")


def _django(address: str) -> Any:
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.core.cache.backends.memcached import PyMemcacheCache

    return PyMemcacheCache(address, {"KEY_PREFIX": "bd", "TIMEOUT": _TTL})


# name, factory, fill(c, keys, value), {operation: statement}, note
_IMPLS: list[tuple[str, Callable[[str], Any], Callable[..., None], dict[str, str], str]] = [
    (
        "chorde",
        _chorde,
        lambda c, keys, v: c.putMulti({k: v for k in keys}, _TTL),
        {
            "get": "c.get(k)",
            "getMulti(100)": "list(c.getMulti(k))",
            "put": f"c.put(k, v, {_TTL})",
        },
        "",
    ),
    (
        "pymemcache",
        _raw,
        lambda c, keys, v: c.set_many({k: v for k in keys}, _TTL),
        {
            "get": "c.get(k)",
            "getMulti(100)": "c.get_many(k)",
            "put": f"c.set(k, v, {_TTL})",
        },
        "raw bytes: no pickling, no signing",
    ),
    (
        "django",
        _django,
        lambda c, keys, v: c.set_many({k: v for k in keys}, _TTL),
        {
            "get": "c.get(k)",
            "getMulti(100)": "c.get_many(k)",
            "put": f"c.set(k, v, {_TTL})",
        },
        "PyMemcacheCache: pickles, does not sign; set waits for no reply",
    ),
]


def run(quick: bool) -> list[Result]:
    """Measure every available implementation; see the module docstring."""
    config = TimingConfig.for_run(True) if quick else _ROUND_CONFIG
    rounds = _QUICK_ROUNDS if quick else _ROUNDS
    rng = random.Random(_SEED)
    keys = [f"key:{i}" for i in range(_N_KEYS)]
    order = rng.sample(keys, _N_KEYS)
    batches = [rng.sample(keys, _BATCH) for _ in range(20)]
    value = rng.randbytes(100)
    results: list[Result] = []
    with memcached_server() as address:
        if address is None:
            print("  memcached: skipped (no memcached executable found)", file=sys.stderr)
            return results
        clients: list[tuple[str, Any, dict[str, str], str]] = []
        for name, factory, fill, statements, note in _IMPLS:
            try:
                client = factory(address)
            except ImportError as exc:
                print(f"  memcached: {name} skipped ({exc})", file=sys.stderr)
                continue
            fill(client, keys, value)
            if client.get(keys[0]) != value:
                raise RuntimeError(f"{name} does not read back what it wrote")
            clients.append((name, client, statements, note))
        samples: dict[tuple[str, str], list[float]] = {}
        for round_no in range(rounds):
            shift = round_no % len(clients)
            for name, client, statements, _ in clients[shift:] + clients[:shift]:
                for operation, stmt in statements.items():
                    sequence = batches if operation.startswith("getMulti") else order
                    timing = measure(stmt, client, sequence, config, value=value)
                    samples.setdefault((name, operation), []).append(timing.ns_per_op)
        for name, client, statements, note in clients:
            for operation, stmt in statements.items():
                ours = samples[name, operation]
                extra: dict[str, Any] = {"rounds": len(ours), "samples_ns": ours}
                notes = [note] if note else []
                raw = samples.get((_RAW, operation))
                if name != _RAW and raw:
                    ratio = statistics.median(a / b for a, b in zip(ours, raw, strict=True))
                    extra["median_round_ratio_to_raw"] = ratio
                    target = _TARGETS.get(operation) if name == "chorde" else None
                    verdict = ""
                    if target:
                        verdict = f" (target <= {target}: {'met' if ratio <= target else 'SHORT'})"
                    notes.append(f"median per-round ns / raw pymemcache ns {ratio:.2f}{verdict}")
                results.append(
                    Result(
                        _BENCH,
                        operation,
                        name,
                        statistics.median(ours),
                        api=stmt,
                        ops=len(sequence),
                        repeats=len(ours),
                        note="; ".join(notes),
                        extra=extra,
                    )
                )
            with contextlib.suppress(Exception):
                client.close()
    return results
