"""The hostile-Vary request: what one costs a response cache, per framework.

A page answers with a ``Vary`` naming 2,000 request fields; the client sends 10,000 fields
with every request. Before chorde's HTTP policy bounded the work, one such request cost the
Starlette middleware 0.8 s of CPU on a miss and 1.6-1.7 s on a hit. Measured here, in
process (no network), best of a few repetitions:

* ``starlette``: ``CacheMiddleware`` around a bare ASGI app, called directly;
* ``flask``: a ``@chorde.cached`` view through Flask's test client;
* ``core``: ``chorde.http`` alone: the request read, the response judged;

each against the same framework answering a benign request (10 fields, no Vary) from its
cache, to show what the hostile one adds. Tornado refuses requests whose fields exceed
64 KiB by default, so it never sees this request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from benchmarks.harness import Result

__all__ = ["run"]

_BENCH = "http_safety"
_VARY = ", ".join(f"X-Field-{i}" for i in range(2000))
_FIELDS = 10_000


def _best_ns(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - start)
    return best


def _starlette(hostile: bool) -> Callable[[], None]:
    from chorde.clients.inproc import InprocCacheClient
    from chorde_starlette import CacheMiddleware

    vary = _VARY.encode() if hostile else b"accept-language"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        fields = [(b"vary", vary), (b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": fields})
        await send({"type": "http.response.body", "body": b"hello"})

    mw = CacheMiddleware(app, client=InprocCacheClient(64))
    n = _FIELDS if hostile else 10
    headers = [(b"host", b"site.example")]
    headers += [(f"x-field-{i}".encode(), b"value") for i in range(n)]
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/p",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
    }
    loop = asyncio.new_event_loop()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    def request() -> None:
        loop.run_until_complete(mw(scope, receive, send))

    return request


def _flask(hostile: bool) -> Callable[[], None]:
    from flask import Flask

    from chorde_flask import Chorde

    app = Flask("bench")
    app.config["SECRET_KEY"] = "bench"
    ext = Chorde(app)
    vary = _VARY if hostile else "Accept-Language"

    @app.get("/p")
    @ext.cached(ttl=3600)
    def page() -> Any:
        return "hello", 200, {"Vary": vary}

    @app.get("/uncached")
    def uncached() -> Any:
        return "hello", 200, {"Vary": vary}

    client = app.test_client()
    n = _FIELDS if hostile else 10
    headers = {f"X-Field-{i}": "value" for i in range(n)}

    def request() -> None:
        client.get("/p", headers=headers)

    def uncached_request() -> None:
        client.get("/uncached", headers=headers)

    request.uncached = uncached_request  # type: ignore[attr-defined]
    return request


def _core(hostile: bool) -> Callable[[], None]:
    from chorde.clients.inproc import InprocCacheClient
    from chorde.http import ResponseCache

    cache = ResponseCache(InprocCacheClient(64))
    n = _FIELDS if hostile else 10
    headers = [("Host", "site.example")] + [(f"X-Field-{i}", "value") for i in range(n)]
    response = [("Vary", _VARY if hostile else "Accept-Language")]

    def request() -> None:
        req = cache.request(
            method="GET", scheme="http", hosts=None, path="/p", query="", headers=headers
        )
        cache.rules.decide(req, 200, response, now=time.time(), ttl=60)

    return request


def run(quick: bool) -> list[Result]:
    repeats = 5 if quick else 20
    results = []
    for name, build in (("starlette", _starlette), ("flask", _flask), ("core", _core)):
        hostile, benign = build(True), build(False)
        benign()  # fill the cache: the benign figure is a hit
        first = _best_ns(hostile, 1)  # the first hostile request is a miss
        hostile_ns = _best_ns(hostile, repeats)
        benign_ns = _best_ns(benign, repeats)
        results.append(
            Result(
                _BENCH,
                f"{name} request",
                "chorde (hostile Vary, 10,000 fields)",
                hostile_ns,
                note=f"first (miss) {first / 1e6:.2f} ms; target < 5 ms",
            )
        )
        results.append(Result(_BENCH, f"{name} request", "benign hit (10 fields)", benign_ns))
        uncached = getattr(hostile, "uncached", None)
        if uncached is not None:
            results.append(
                Result(
                    _BENCH,
                    f"{name} request",
                    "same request, view not cached",
                    _best_ns(uncached, repeats),
                    note="what the framework alone spends on 10,000 fields",
                )
            )
    return results


if __name__ == "__main__":
    for result in run(quick=True):
        print(f"{result.operation:20} {result.implementation:40} {result.ns_per_op / 1e6:8.3f} ms")
