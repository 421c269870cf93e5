"""A hostile Vary cannot make a request expensive: the work per request is bounded.

A response varying on 2,000 field names, asked for with 10,000 request fields, once cost
seconds of CPU per request. The policy now refuses to store a response varying on more than
``max_vary_fields`` names, and reads a request's fields in at most a few passes. These tests
count the passes (deterministic), not the time: benchmarks/http_safety.py times it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chorde.clients.inproc import InprocCacheClient
from chorde.http import ResponseCache, Route
from chorde_starlette import CacheMiddleware

HOSTILE_VARY = ", ".join(f"X-Field-{i}" for i in range(2000))
VARY_32 = ", ".join(f"X-Field-{i}" for i in range(32))


class CountingHeaders(list[tuple[bytes, bytes]]):
    """Request fields that count how many of them are visited."""

    visits = 0

    def __iter__(self) -> Any:
        for item in super().__iter__():
            CountingHeaders.visits += 1
            yield item


def _headers(n: int) -> CountingHeaders:
    fields = CountingHeaders([(b"host", b"site.example")])
    fields += [(f"x-field-{i}".encode(), b"v") for i in range(n)]
    return fields


def _run(mw: CacheMiddleware, headers: CountingHeaders) -> int:
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/p",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    CountingHeaders.visits = 0
    asyncio.run(mw(scope, receive, send))
    assert sent[0]["status"] == 200
    return CountingHeaders.visits


def _app(vary: str) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"vary", vary.encode()), (b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"hello"})

    return app


def test_a_hostile_vary_is_not_stored_and_costs_a_few_passes() -> None:
    client = InprocCacheClient(64)
    mw = CacheMiddleware(_app(HOSTILE_VARY), client=client)
    headers = _headers(10_000)
    for _ in range(3):
        assert _run(mw, headers) <= 3 * len(headers)
    assert client.usage == 0  # varying on 2,000 fields: not stored


def test_a_hit_varying_on_the_limit_reads_the_request_fields_a_few_times() -> None:
    client = InprocCacheClient(64)
    mw = CacheMiddleware(_app(VARY_32), client=client)
    headers = _headers(10_000)
    miss = _run(mw, headers)
    assert client.usage == 2  # the vary marker and the variant
    hit = _run(mw, headers)
    assert miss <= 4 * len(headers)
    assert hit <= 4 * len(headers)


def test_oversized_varying_values_are_not_cached() -> None:
    cache = ResponseCache(InprocCacheClient(8))
    route = Route(vary=("x-big",))
    req = cache.request(
        method="GET",
        scheme="http",
        hosts=["site.example"],
        path="/",
        query="",
        headers=[("X-Big", "v" * 9000)],
        route=route,
    )
    assert req.bypass is not None and "too large" in req.bypass
