"""Django cache backends: get (hit), get (miss), set and get_many(10), through Django's API.

Three tables, each measured in the same run:

* ``django-inproc``: ChordeCache on the in-process stack vs Django's ``LocMemCache``;
* ``django-memcached``: ChordeCache on the memcached stack vs Django's ``PyMemcacheCache``,
  on the same memcached server;
* ``django-tiered``: ChordeCache's tiered stack (in-process L1 over memcached) on its hit
  path vs both remote backends.

Values are a small dict (pickled by every backend: LocMemCache and ChordeCache's in-process
stack copy values through pickle, the memcached ones serialize them). ChordeCache's
memcached payloads are also HMAC-signed; PyMemcacheCache's are not. Starts its own
memcached on a free loopback port (``MEMCACHED_BIN`` or ``memcached`` on the PATH), or uses
``CHORDE_BENCH_MEMCACHED=host:port``; without one, only the in-process table runs.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Result, TimingConfig, measure, memcached_server

__all__ = ["run"]

_TTL = 300
_SEED = 20240503
_BATCH = 10
_VALUE = {"id": 12345, "name": "a cached row", "tags": ["x", "y"], "score": 0.5}
_CHECKSUM_KEY = "benchmark secret"


def _settings() -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure()


def _chorde(location: str, prefix: str, **options: Any) -> Any:
    from chorde_django import ChordeCache

    return ChordeCache(location, {"KEY_PREFIX": prefix, "TIMEOUT": _TTL, "OPTIONS": options})


def _locmem(_: str, prefix: str) -> Any:
    from django.core.cache.backends.locmem import LocMemCache

    # MAX_ENTRIES above the key count: LocMemCache culls a third of a full cache on a set.
    params = {"KEY_PREFIX": prefix, "TIMEOUT": _TTL, "OPTIONS": {"MAX_ENTRIES": 100_000}}
    return LocMemCache(f"bench-{prefix}", params)


def _pymemcache(address: str, prefix: str) -> Any:
    from django.core.cache.backends.memcached import PyMemcacheCache

    return PyMemcacheCache(address, {"KEY_PREFIX": prefix, "TIMEOUT": _TTL})


_STATEMENTS = {
    "get-hit": "c.get(k)",
    "get-miss": "c.get(k)",
    "set": f"c.set(k, v, {_TTL})",
    f"get_many({_BATCH})": "c.get_many(k)",
}


def _measure_table(
    bench: str,
    impls: list[tuple[str, Callable[[], Any], str]],
    n_keys: int,
    config: TimingConfig,
) -> list[Result]:
    rng = random.Random(_SEED)
    keys = [f"key-{i}" for i in range(n_keys)]
    hits = rng.sample(keys, n_keys)
    misses = [f"absent-{i}" for i in rng.sample(range(n_keys), n_keys)]
    batches = [hits[i : i + _BATCH] for i in range(0, n_keys - _BATCH + 1, _BATCH)]
    plan = {"get-hit": hits, "get-miss": misses, "set": hits, f"get_many({_BATCH})": batches}
    results = []
    for name, make, note in impls:
        cache = make()
        cache.set_many(dict.fromkeys(keys, _VALUE))
        held = len(cache.get_many(keys))
        if held != n_keys:
            raise RuntimeError(f"{name} holds {held} of {n_keys} preloaded keys")
        if cache.get_many(batches[0]) != dict.fromkeys(batches[0], _VALUE):
            raise RuntimeError(f"{name} returned wrong values")
        for operation, stmt in _STATEMENTS.items():
            timing = measure(stmt, cache, plan[operation], config, value=_VALUE)
            results.append(Result.from_timing(bench, operation, name, timing, api=stmt, note=note))
    return results


def run(quick: bool) -> list[Result]:
    """Measure the three tables; see the module docstring."""
    _settings()
    config = TimingConfig.for_run(quick)
    results = _measure_table(
        "django-inproc",
        [
            ("chorde ChordeCache", lambda: _chorde("bench-inproc", "ci", CLIENT="inproc"), ""),
            ("django LocMemCache", lambda: _locmem("", "lm"), ""),
        ],
        10_000,
        config,
    )
    with memcached_server() as address:
        if address is None:
            print("  django: no memcached, memcached tables skipped", file=sys.stderr)
            return results
        remote = {"CHECKSUM_KEY": _CHECKSUM_KEY, "NAMESPACE": "bench"}
        n_remote = 1000
        results += _measure_table(
            "django-memcached",
            [
                ("chorde ChordeCache", lambda: _chorde(address, "cm", **remote), "signed"),
                ("django PyMemcacheCache", lambda: _pymemcache(address, "pm"), ""),
            ],
            n_remote,
            config,
        )
        tiered = {"CLIENT": "tiered", "L1_TTL": 3600, **remote}
        results += _measure_table(
            "django-tiered",
            [
                ("chorde ChordeCache tiered", lambda: _chorde(address, "ct", **tiered), ""),
                ("chorde ChordeCache memcached", lambda: _chorde(address, "cm2", **remote), ""),
                ("django PyMemcacheCache", lambda: _pymemcache(address, "pm2"), ""),
            ],
            n_remote,
            config,
        )
    return results
