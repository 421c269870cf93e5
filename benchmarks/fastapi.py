"""FastAPI + CacheMiddleware (strict mode) under uvicorn: requests/s of cached hits against the
same app's static endpoint, with the in-process client and with memcached, in one run.

The FastAPI example (``example_projects/fastapi_app``) runs in two uvicorn processes on
loopback, one caching in process and one in a memcached started for the run, its slow
report set to 20 ms and fresh for an hour (so the rounds measure hits only). The load
generator of ``benchmarks/starlette.py`` (raw asyncio sockets in this process, a few
keep-alive connections, one request in flight on each) drives, per round and in an order
that rotates from round to round, every case for a fixed time:

* ``chorde hit``: ``/reports/bench`` served from the cache (every answer must carry Age);
* ``static endpoint``: ``/static``, a trivial path operation marked ``@no_cache_route``: the
  request goes through the middleware (which routes it and stands aside) to FastAPI;
* ``20 ms handler, bypassed``: the report with ``Cache-Control: no-store`` (the cost a hit
  saves), on the in-process server only.

Rows are the servers, columns the cases; figures are ns per request (1e9 / the median over
rounds of requests/s), so the ratio column of ``static endpoint`` is hit throughput over
static throughput (the issue's targets: >= 0.80 in process, >= 0.60 with memcached). The
notes give, per case, the median over rounds of its throughput over the same server's
static endpoint in the same round, which resists the load other users put on a shared
machine. The client shares the machine with the servers: read the ratios, not the rates.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from typing import TYPE_CHECKING

import httpx

from benchmarks.harness import Result
from benchmarks.starlette import _CONNECTIONS, _round

if TYPE_CHECKING:
    from tests.servers import AppServer

__all__ = ["TARGETS", "run"]

_BENCH = "fastapi"
_HIT = "/reports/bench"
_REQUEST_TIMEOUT = 10.0
#: Hit throughput over the static endpoint's, per server: the issue's targets.
TARGETS = {"inproc": 0.80, "memcached": 0.60}
_HIT_CASE = "chorde hit"
_STATIC_CASE = "static endpoint"
_BYPASS_CASE = "20 ms handler, bypassed"


def _server(env: dict[str, str]) -> AppServer:
    """The FastAPI example under uvicorn on a free loopback port, started."""
    from tests.fastapi.support import fastapi_example

    env = {**env, "SLOW_SECONDS": "0.02", "REPORT_MAX_AGE": "3600"}
    return fastapi_example(env).start()


def run(quick: bool) -> list[Result]:
    """Measure the cases above; see the module docstring."""
    seconds, rounds = (0.3, 2) if quick else (1.0, 9)
    servers: dict[str, AppServer] = {}
    memcached = None
    try:
        servers["inproc"] = _server({})
        from tests.servers import MemcachedServer, find_memcached

        path = find_memcached()
        if path is not None:
            memcached = MemcachedServer(executable=path).start()
            env = {"CHORDE_MEMCACHED": memcached.address, "CHORDE_CHECKSUM_KEY": "benchmark"}
            servers["memcached"] = _server(env)
        else:
            print("fastapi: memcached not installed, its row is skipped", file=sys.stderr)
        cases = [(backend, _HIT_CASE, _HIT, "", True) for backend in servers]
        cases += [(backend, _STATIC_CASE, "/static", "", False) for backend in servers]
        cases.append(("inproc", _BYPASS_CASE, _HIT, "Cache-Control: no-store\r\n", False))
        for server in servers.values():  # fill the caches
            httpx.get(server.url + _HIT, timeout=_REQUEST_TIMEOUT).raise_for_status()
        rates: dict[tuple[str, str], list[float]] = {}
        ratios: dict[tuple[str, str], list[float]] = {}

        async def measure_all() -> None:
            for backend, _name, target, extra, hit in cases:  # warm-up
                await _round(servers[backend].port, target, extra, seconds / 4, hit)
            for n in range(rounds):
                this_round: dict[tuple[str, str], float] = {}
                shift = n % len(cases)
                for backend, name, target, extra, hit in cases[shift:] + cases[:shift]:
                    rps = await _round(servers[backend].port, target, extra, seconds, hit)
                    this_round[backend, name] = rps
                    rates.setdefault((backend, name), []).append(rps)
                for (backend, name), rps in this_round.items():
                    static = this_round[backend, _STATIC_CASE]
                    ratios.setdefault((backend, name), []).append(rps / static)

        asyncio.run(measure_all())
    finally:
        for server in servers.values():
            server.stop()
        if memcached is not None:
            memcached.stop()
    results = []
    for backend, name, target, extra, _hit in cases:
        rps = statistics.median(rates[backend, name])
        api = f"GET {target}" + (f" with {extra.strip()}" if extra else "")
        note = f"{rps:,.0f} req/s (median of {rounds} rounds)"
        if name != _STATIC_CASE:
            ratio = statistics.median(ratios[backend, name])
            note += f", {ratio:.2f}x the static endpoint (median of same-round ratios)"
            if name == _HIT_CASE:
                target_ratio = TARGETS[backend]
                verdict = "met" if ratio >= target_ratio else "SHORT"
                note += f", target {target_ratio:.2f}x: {verdict}"
        results.append(
            Result(
                _BENCH,
                f"{backend} server, {_CONNECTIONS} keep-alive connections",
                name,
                1e9 / rps,
                api=api,
                note=note,
            )
        )
    return results
