"""Starlette + CacheMiddleware under uvicorn: requests/s of cached hits vs a static endpoint.

The example app (``example_projects/starlette_app``) runs in a uvicorn process on loopback
with its slow handler set to 20 ms. A load generator in this process keeps a few keep-alive
connections busy (raw asyncio sockets, one request in flight per connection) for a fixed
time per round and counts completed requests. Measured in the same run, rounds interleaved,
best round kept:

* ``chorde-inproc hit``: ``/slow`` (a 20 ms handler) served from the in-process cache;
* ``static endpoint``: ``/static``, a trivial handler the cache leaves alone (it still passes
  through the middleware, which routes it and lets it by);
* ``20 ms handler, bypassed``: ``/slow`` with ``Cache-Control: no-store`` (the cost the
  cache saves);
* ``chorde-memcached hit``: ``/slow`` from a second server caching in memcached (when
  memcached is installed).

The table shows ns per request (1e9 / req/s over all connections, best round); the ratio
column is peer ns / hit ns, which for the static endpoint is hit throughput / static
throughput (the target: >= 0.80). The notes add, per case, the median over rounds of its
throughput over the static endpoint's in the same round, which resists load drifting during
the run. The client shares the machine with the server, so both compete for CPU; the ratios
are the figures to read, not the absolute rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from typing import TYPE_CHECKING

import httpx

from benchmarks.harness import Result

if TYPE_CHECKING:
    from tests.servers import AppServer

__all__ = ["run"]

_BENCH = "starlette"
_HOST = "127.0.0.1"
_CONNECTIONS = 4
_REQUEST_TIMEOUT = 10.0


def _server(env: dict[str, str]) -> AppServer:
    """The example app under uvicorn on a free loopback port, started."""
    from tests.servers import starlette_example

    # A 20 ms handler whose entry outlives the run: the rounds measure hits only.
    return starlette_example({**env, "SLOW_SECONDS": "0.02", "SLOW_TTL": "3600"}).start()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return status, headers


async def _connection(
    port: int, request: bytes, stop_at: float, expect_hit: bool, counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(_HOST, port)
    try:
        while time.monotonic() < stop_at:
            writer.write(request)
            status, headers = await asyncio.wait_for(_read_response(reader), _REQUEST_TIMEOUT)
            if status != 200 or (expect_hit and b"age" not in headers):
                raise RuntimeError(
                    f"benchmark request {request!r} got {status} {headers!r}: not a cache hit"
                )
            counts[0] += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _round(port: int, path: str, extra: str, seconds: float, expect_hit: bool) -> float:
    """Requests per second over ``_CONNECTIONS`` connections during ``seconds``."""
    request = f"GET {path} HTTP/1.1\r\nHost: {_HOST}:{port}\r\n{extra}\r\n".encode()
    counts = [0]
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(
        *(_connection(port, request, stop_at, expect_hit, counts) for _ in range(_CONNECTIONS))
    )
    return counts[0] / (time.monotonic() - started)


def _result(name: str, api: str, rps: float, note: str) -> Result:
    return Result(
        _BENCH,
        f"GET, {_CONNECTIONS} keep-alive connections",
        name,
        1e9 / rps,
        api=api,
        note=f"{rps:,.0f} req/s{note}",
    )


def run(quick: bool) -> list[Result]:
    """Measure the cases above; see the module docstring."""
    seconds, rounds = (0.4, 2) if quick else (1.0, 9)
    servers: dict[str, AppServer] = {}
    memcached = None
    try:
        servers["inproc"] = _server({})
        from tests.servers import MemcachedServer, find_memcached

        path = find_memcached()
        if path is not None:
            memcached = MemcachedServer(executable=path).start()
            servers["memcached"] = _server(
                {"CHORDE_MEMCACHED": memcached.address, "CHORDE_CHECKSUM_KEY": "benchmark"}
            )
        else:
            print("starlette: memcached not installed, its row is skipped", file=sys.stderr)
        cases: list[tuple[str, str, str, str, bool]] = [
            ("chorde-inproc hit", "inproc", "/slow", "", True),
            ("static endpoint", "inproc", "/static", "", False),
            ("20 ms handler, bypassed", "inproc", "/slow", "Cache-Control: no-store\r\n", False),
        ]
        if "memcached" in servers:
            cases.append(("chorde-memcached hit", "memcached", "/slow", "", True))
        for server in servers.values():  # fill the caches
            httpx.get(f"{server.url}/slow", timeout=_REQUEST_TIMEOUT)
        best: dict[str, float] = {}
        ratios: dict[str, list[float]] = {}

        async def measure_all() -> None:
            for _name, backend, path, extra, hit in cases:  # warm-up
                await _round(servers[backend].port, path, extra, seconds / 4, hit)
            for _ in range(rounds):
                this_round: dict[str, float] = {}
                for name, backend, path, extra, hit in cases:
                    rps = await _round(servers[backend].port, path, extra, seconds, hit)
                    this_round[name] = rps
                    best[name] = max(best.get(name, 0.0), rps)
                static = this_round["static endpoint"]
                for name, rps in this_round.items():
                    ratios.setdefault(name, []).append(rps / static)

        asyncio.run(measure_all())
    finally:
        for server in servers.values():
            server.stop()
        if memcached is not None:
            memcached.stop()
    static = best["static endpoint"]
    results = []
    for name, backend, path, extra, _hit in cases:
        api = f"GET {path}" + (f" with {extra.strip()}" if extra else "") + f" ({backend})"
        note = ""
        if name != "static endpoint":
            median = statistics.median(ratios[name])
            note = (
                f", {best[name] / static:.2f}x static (best rounds), "
                f"{median:.2f}x median of same-round ratios, {len(ratios[name])} rounds"
            )
        results.append(_result(name, api, best[name], note))
    return results
