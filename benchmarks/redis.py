"""Redis clients against one local Redis: get, getMulti(100) and put of 100-byte values,
blocking and awaited, and a tiered(inproc, redis) hit.

Starts its own ``redis-server`` on a free loopback port (``REDIS_SERVER_BIN`` or the PATH);
``CHORDE_BENCH_REDIS=host:port`` uses a running one instead. Compared in the same run,
against the same server:

* ``chorde``: :class:`chorde.clients.redis.RedisClient` (values pickled and HMAC-signed, the
  namespace generation read with every value, writes as scripts);
* ``redis-py``: raw redis-py on chorde's own connection pool (``get``/``mget``/``set`` of
  bytes: no pickling, no signing), the floor any wrapper pays on top of; its asyncio twin
  on chorde's asyncio client for the awaited operations;
* ``django RedisCache``: Django's own backend (pickles, does not sign);
* ``django-redis``: django-redis's ``RedisCache`` (pickles, does not sign), when installed;
* ``chorde tiered(inproc, redis)``: an in-process L1 over chorde's Redis client (get only).

Measured in interleaved rounds (every implementation and operation once per round, in a
rotating order), each figure the median over rounds; ratios are medians of per-round ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.harness import Result, TimingConfig, measure

__all__ = ["run"]

_BENCH = "redis"
_N_KEYS = 1000
_BATCH = 100
_TTL = 300
_SEED = 20240611
_ROUNDS = 15
_QUICK_ROUNDS = 2
_ROUND_CONFIG = TimingConfig(
    min_sample_ns=4_000_000, repeats=3, max_loops=500, max_total_ns=200_000_000
)
_RAW = "redis-py"
#: The issue's targets: chorde ns / raw redis-py ns at most.
_RAW_TARGET = 1.25
#: chorde must be faster than these (chorde ns / their ns below 1).
_PEERS = ("django RedisCache", "django-redis")


@contextlib.contextmanager
def _redis_server() -> Iterator[str | None]:
    address = os.environ.get("CHORDE_BENCH_REDIS")
    if address:
        yield address
        return
    try:
        from tests.redis_servers import RedisServer, find_redis
    except ImportError:
        yield None
        return
    if find_redis() is None:
        yield None
        return
    with RedisServer() as server:
        yield server.address


def _django_settings() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()


def _django(address: str) -> Any:
    _django_settings()
    from django.core.cache.backends.redis import RedisCache

    return RedisCache(f"redis://{address}", {"KEY_PREFIX": "bd", "TIMEOUT": _TTL})


def _django_redis(address: str) -> Any:
    _django_settings()
    from django_redis.cache import RedisCache

    return RedisCache(f"redis://{address}", {"KEY_PREFIX": "bdr", "TIMEOUT": _TTL})


_DJANGO_STATEMENTS = {
    "get": "c.get(k)",
    "getMulti(100)": "c.get_many(k)",
    "put": f"c.set(k, v, {_TTL})",
}


def _implementations(address: str) -> list[tuple[str, Any, Callable[..., None], dict[str, str]]]:
    """``(name, client, fill(client, keys, value), {operation: statement})`` of each peer."""
    from chorde.clients import from_url
    from chorde.clients.redis import RedisClient

    chorde = RedisClient(address, checksum_key="benchmark secret", namespace="bc")
    raw = chorde.redis_client()  # the very connection pool chorde uses
    tiered = from_url(
        ["inproc://?size=2000", f"redis://{address}?namespace=bt"], checksum_key="benchmark"
    )
    impls = [
        (
            "chorde",
            chorde,
            lambda c, keys, v: c.putMulti({k: v for k in keys}, _TTL),
            {
                "get": "c.get(k)",
                "getMulti(100)": "list(c.getMulti(k))",
                "put": f"c.put(k, v, {_TTL})",
            },
        ),
        (
            _RAW,
            raw,
            lambda c, keys, v: c.mset({f"br:{k}": v for k in keys}),
            {
                "get": "c.get('br:' + k)",
                "getMulti(100)": "c.mget(['br:' + x for x in k])",
                "put": f"c.set('br:' + k, v, ex={_TTL})",
            },
        ),
        (
            "chorde tiered(inproc, redis)",
            tiered,
            lambda c, keys, v: [c.put(k, v, _TTL) for k in keys],
            {"get": "c.get(k)"},
        ),
    ]
    for name, factory in (("django RedisCache", _django), ("django-redis", _django_redis)):
        try:
            impls.append(
                (
                    name,
                    factory(address),
                    lambda c, keys, v: c.set_many({k: v for k in keys}, _TTL),
                    _DJANGO_STATEMENTS,
                )
            )
        except ImportError as exc:
            print(f"  redis: {name} skipped ({exc})", file=sys.stderr)
    return impls


def _raw_get(c: Any, k: str) -> Any:
    return c.get("br:" + k)


def _async_sweeps(chorde: Any, keys: list[str], batches: list[list[str]], value: bytes) -> Any:
    """``sweep(loop, name, operation) -> ns per op`` for the awaited operations."""

    async def sweep(name: str, operation: str) -> float:
        if name == "chorde":
            c = chorde
            calls = {
                "aget": lambda k: c.aget(k),
                "agetMulti(100)": lambda k: c.agetMulti(k),
                "aput": lambda k: c.aput(k, value, _TTL),
            }
        else:
            raw = chorde.redis_aclient()
            calls = {
                "aget": lambda k: raw.get("br:" + k),
                "agetMulti(100)": lambda k: raw.mget(["br:" + x for x in k]),
                "aput": lambda k: raw.set("br:" + k, value, ex=_TTL),
            }
        call = calls[operation]
        sequence = batches if operation.startswith("agetMulti") else keys
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter_ns()
            for k in sequence:
                await call(k)
            best = min(best, (time.perf_counter_ns() - started) / len(sequence))
        return best

    return sweep


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
    with _redis_server() as address:
        if address is None:
            print("  redis: skipped (no redis-server found)", file=sys.stderr)
            return results
        try:
            impls = _implementations(address)
        except ImportError as exc:
            print(f"  redis: skipped ({exc})", file=sys.stderr)
            return results
        for name, client, fill, _ in impls:
            fill(client, keys, value)
            got = _raw_get(client, keys[0]) if name == _RAW else client.get(keys[0])
            if got != value:
                raise RuntimeError(f"{name} does not read back what it wrote")
        chorde = impls[0][1]
        loop = asyncio.new_event_loop()
        sweep = _async_sweeps(chorde, order, batches, value)
        samples: dict[tuple[str, str], list[float]] = {}
        try:
            for round_no in range(rounds):
                shift = round_no % len(impls)
                for name, client, _, statements in impls[shift:] + impls[:shift]:
                    for operation, stmt in statements.items():
                        sequence = batches if operation.startswith("getMulti") else order
                        timing = measure(stmt, client, sequence, config, value=value)
                        samples.setdefault((name, operation), []).append(timing.ns_per_op)
                for name in ("chorde", _RAW)[:: 1 if round_no % 2 else -1]:
                    for operation in ("aget", "agetMulti(100)", "aput"):
                        ns = loop.run_until_complete(sweep(name, operation))
                        samples.setdefault((name, operation), []).append(ns)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(chorde.aclose())
            loop.close()
        results = _report(samples)
        for _, client, _, _ in impls:
            with contextlib.suppress(Exception):
                client.close()
    return results


def _report(samples: dict[tuple[str, str], list[float]]) -> list[Result]:
    results = []
    for (name, operation), ours in samples.items():
        notes = []
        extra: dict[str, Any] = {"rounds": len(ours), "samples_ns": ours}
        raw = samples.get((_RAW, operation))
        if name == "chorde" and raw:
            ratio = statistics.median(a / b for a, b in zip(ours, raw, strict=True))
            extra["ratio_to_raw"] = ratio
            verdict = "met" if ratio <= _RAW_TARGET else "SHORT"
            notes.append(f"chorde / raw redis-py {ratio:.2f} (target <= {_RAW_TARGET}: {verdict})")
        mine = samples.get(("chorde", operation))
        if name in _PEERS and mine:
            ratio = statistics.median(a / b for a, b in zip(mine, ours, strict=True))
            extra["chorde_ratio"] = ratio
            verdict = "met" if ratio < 1 else "SHORT"
            notes.append(f"chorde / {name} {ratio:.2f} (target < 1: {verdict})")
        if name == "chorde tiered(inproc, redis)":
            django = samples.get(("django RedisCache", "get"))
            if django:
                ratio = statistics.median(a / b for a, b in zip(ours, django, strict=True))
                notes.append(f"tiered hit / django RedisCache get {ratio:.3f}")
        results.append(
            Result(
                _BENCH,
                operation,
                name,
                statistics.median(ours),
                repeats=len(ours),
                note="; ".join(notes),
                extra=extra,
            )
        )
    return results
