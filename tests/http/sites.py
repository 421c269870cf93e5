"""One small site built three times (Flask, Tornado, Starlette), served over real HTTP.

Every build answers the same routes the same way, so one table of requests can be replayed
against each and must get the same store/serve decisions:

* ``/page``: the route with no declarations;
* ``/declared``: declares ``cookies=("lang",)``;
* ``/peruser``: declares ``per_user=True``;
* ``/public``: declares ``public=True``.

A page is rendered from the request (the user from ``X-User``, ``Authorization`` or
``Cookie``, the language, the Host in a link) and its response fields come from the query:
``cc`` (Cache-Control), ``vary``, ``status``, ``set_cookie``, ``location``, ``tags``
(Surrogate-Key), ``etag`` (answered 304 when the request's If-None-Match is it) and ``fail``
(every render after the first answers 503). Each render
carries ``X-Render: n``, counted per target, so a client sees whether it was answered by a
new render or by a stored one.

The servers run in threads of the test process, each the way users deploy the framework:
Flask under Werkzeug's threaded WSGI server, Starlette under uvicorn with httptools (as
``uvicorn[standard]`` does), tornado under its own HTTPServer. Requests are sent on raw
sockets, so that a test controls every byte (two Host lines, odd field values).
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from chorde.clients.base import BaseCacheClient

ALLOWED_HOSTS = [".example"]
ROUTES = {
    "/page": {},
    "/declared": {"cookies": ("lang",)},
    "/peruser": {"per_user": True},
    "/public": {"public": True},
}


class Renders:
    """Counts renders per request target (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n: Counter[str] = Counter()

    def next(self, target: str) -> int:
        with self._lock:
            self._n[target] += 1
            return self._n[target]

    def count(self, fragment: str) -> int:
        """Renders so far of the targets containing ``fragment``."""
        with self._lock:
            return sum(n for target, n in self._n.items() if fragment in target)


def render(
    renders: Renders,
    target: str,
    query: dict[str, str],
    header: Callable[[str], str | None],
    host: str,
) -> tuple[int, list[tuple[str, str]], bytes]:
    """The page every framework renders: status, response fields, body."""
    n = renders.next(target)
    body = json.dumps(
        {
            "n": n,
            "user": header("x-user"),
            "authorization": header("authorization"),
            "cookie": header("cookie"),
            "lang": header("accept-language"),
            "link": f"http://{host}/next",
        }
    ).encode()
    fields = [("Content-Type", "application/json"), ("X-Render", str(n))]
    status = int(query.get("status", "200"))
    if "fail" in query and n > 1:  # every render after the first fails
        return 503, fields, b"failed"
    if "etag" in query:
        fields.append(("ETag", query["etag"]))
        if header("if-none-match") == query["etag"]:  # an origin's revalidation answer
            return 304, fields, b""
    for param, name in (
        ("cc", "Cache-Control"),
        ("vary", "Vary"),
        ("location", "Location"),
        ("tags", "Surrogate-Key"),
    ):
        if param in query:
            fields.append((name, query[param]))
    if "set_cookie" in query:
        fields.append(("Set-Cookie", f"track={n}; Path=/"))
    return status, fields, body


# ---- the three builds ------------------------------------------------------------------


def flask_app(client: BaseCacheClient, renders: Renders) -> Any:
    from flask import Flask, request

    from chorde_flask import Chorde

    app = Flask("response_safety")
    app.config.update(
        SECRET_KEY="tests-only",
        CHORDE_CLIENT=client,
        CHORDE_ALLOWED_HOSTS=ALLOWED_HOSTS,
        CHORDE_CACHE_STATUS="chorde",
    )
    ext = Chorde(app)

    def make_view(path: str, declared: dict[str, Any]) -> None:
        def view() -> Any:
            status, fields, body = render(
                renders,
                request.full_path,
                request.args.to_dict(),
                request.headers.get,
                request.host,
            )
            return app.response_class(body, status=status, headers=fields)

        view.__name__ = "view" + path.replace("/", "_")
        app.add_url_rule(path, view_func=ext.cached(ttl=60, **declared)(view))

    for path, declared in ROUTES.items():
        make_view(path, declared)
    return app


def starlette_app(client: BaseCacheClient, renders: Renders) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from chorde_starlette import CacheMiddleware, cache_route

    def make_endpoint(declared: dict[str, Any]) -> Any:
        @cache_route(ttl=60, **declared)
        async def endpoint(request: Request) -> Response:
            target = request.url.path + ("?" + request.url.query if request.url.query else "")
            status, fields, body = render(
                renders,
                target,
                dict(request.query_params),
                request.headers.get,
                request.headers.get("host", ""),
            )
            response = Response(body, status_code=status)
            for name, value in fields:
                response.raw_headers.append((name.lower().encode(), value.encode("latin-1")))
            return response

        return endpoint

    routes = [Route(path, make_endpoint(declared)) for path, declared in ROUTES.items()]
    return CacheMiddleware(
        Starlette(routes=routes),
        client=client,
        ttl=60,
        allowed_hosts=ALLOWED_HOSTS,
        cache_status="chorde",
    )


def tornado_app(client: BaseCacheClient, renders: Renders) -> Any:
    import tornado.web

    from chorde_tornado import cache_response

    def make_handler(declared: dict[str, Any]) -> type:
        class Handler(tornado.web.RequestHandler):
            @cache_response(60, **declared)
            def get(self) -> None:
                request = self.request
                status, fields, body = render(
                    renders,
                    request.uri or "",
                    {k: self.get_argument(k) for k in request.arguments},
                    request.headers.get,
                    request.host,
                )
                self.set_status(status)
                for name, value in fields:
                    self.add_header(name, value)
                self.write(body)

            head = get  # tornado sends no body for HEAD

        return Handler

    handlers = [(path, make_handler(declared)) for path, declared in ROUTES.items()]
    return tornado.web.Application(
        handlers,
        chorde_client=client,
        chorde_allowed_hosts=ALLOWED_HOSTS,
        chorde_cache_status="chorde",
    )


# ---- serving ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Site:
    name: str
    port: int
    renders: Renders
    client: BaseCacheClient


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port}")


def serve_flask(app: Any) -> tuple[int, Callable[[], None]]:
    from werkzeug.serving import make_server

    port = _free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _wait_listening(port)

    def stop() -> None:
        server.shutdown()
        thread.join(10)

    return port, stop


def serve_starlette(app: Any) -> tuple[int, Callable[[], None]]:
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http="httptools", lifespan="off", log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_listening(port)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return port, stop


def serve_tornado(app: Any) -> tuple[int, Callable[[], None]]:
    port = _free_port()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        server = app.listen(port, address="127.0.0.1")
        state["loop"] = asyncio.get_running_loop()
        state["done"] = done = asyncio.Event()
        ready.set()
        await done.wait()
        server.stop()
        await server.close_all_connections()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    ready.wait(10)
    _wait_listening(port)

    def stop() -> None:
        state["loop"].call_soon_threadsafe(state["done"].set)
        thread.join(10)

    return port, stop


BUILDS: dict[str, tuple[Callable[..., Any], Callable[[Any], tuple[int, Callable[[], None]]]]] = {
    "flask": (flask_app, serve_flask),
    "tornado": (tornado_app, serve_tornado),
    "starlette": (starlette_app, serve_starlette),
}


def site(name: str, client: BaseCacheClient) -> Iterator[Site]:
    """Build and serve one framework's site on ``client``, until the generator is closed."""
    make, serve = BUILDS[name]
    renders = Renders()
    port, stop = serve(make(client, renders))
    try:
        yield Site(name, port, renders, client)
    finally:
        stop()


# ---- a client that sends exactly what it is told ------------------------------------------


@dataclass
class Answer:
    status: int
    fields: list[tuple[str, str]]
    body: bytes

    def field(self, name: str) -> str | None:
        for key, value in self.fields:
            if key.lower() == name:
                return value
        return None

    @property
    def render(self) -> int | None:
        """Which render of its target answered (``X-Render``)."""
        value = self.field("x-render")
        return int(value) if value is not None else None


class _Replayed(io.BytesIO):
    def makefile(self, *args: Any, **kwargs: Any) -> io.BytesIO:
        return self


def fetch(
    port: int, method: str, target: str, fields: list[tuple[str, str]], timeout: float = 10.0
) -> Answer:
    """Send one request with exactly ``fields`` (plus Connection: close); read the answer."""
    head = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in fields)]
    head += ["Connection: close", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(head).encode("latin-1"))
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = http.client.HTTPResponse(_Replayed(b"".join(chunks)), method=method)  # type: ignore[arg-type]
    response.begin()
    body = response.read()
    return Answer(response.status, list(response.getheaders()), body)
