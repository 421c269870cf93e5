"""Every adapter builds its cache by URL, a scheme from outside chorde included.

``toy://`` is registered by tests/toy (a package that is not chorde): Flask, Starlette and
Tornado use it by URL here, Django in tests/django/test_django_urls.py, with no chorde file
touched for it. A second test walks the adapters' imports: they use only chorde's public
names, and build clients through ``from_url`` rather than naming a client class.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

import tests.toy
from tests.servers import REPO, free_port

ADAPTERS = ["chorde_django", "chorde_flask", "chorde_starlette", "chorde_tornado"]
#: Client classes an adapter must not name: it builds its clients through from_url.
CONCRETE_CLIENTS = {
    "InprocCacheClient",
    "MemcachedClient",
    "ElastiCacheClient",
    "FilesCacheClient",
    "TieredInclusiveClient",
    "AsyncWriteCacheClient",
    "CoherentWrapperClient",
    "NamespaceWrapper",
    "CappedTtlClient",
    "LinkedLRU",
    "OrderedLRU",
    "CuckooCache",
    "STORES",
}


def _is_chorde(module: str) -> bool:
    return module == "chorde" or module.startswith("chorde.")


def _chorde_imports(path: Path) -> list[tuple[str, str | None, int]]:
    """``(module, name, line)`` of every import of a chorde module in ``path``."""
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if _is_chorde(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_chorde(node.module or ""):
            found += [(node.module or "", a.name, node.lineno) for a in node.names]
    return found


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_import_only_public_chorde_names(adapter: str) -> None:
    bad = []
    for path in sorted((REPO / adapter).glob("*.py")):
        for module, name, line in _chorde_imports(path):
            where = f"{path.relative_to(REPO)}:{line}"
            if any(part.startswith("_") for part in module.split(".")):
                bad.append(f"{where} imports the private module {module}")
            elif name is not None and name.startswith("_"):
                bad.append(f"{where} imports the private name {module}.{name}")
            elif name in CONCRETE_CLIENTS:
                bad.append(f"{where} names the client class {name} (use from_url)")
    assert not bad, "\n".join(bad)


def test_flask_by_url() -> None:
    from flask import Flask, request

    from chorde_flask import Chorde

    app = Flask("by_url")
    app.config.update(SECRET_KEY="k", CHORDE_URL="toy://flask-site?size=100")
    ext = Chorde(app)
    calls: list[str] = []

    @app.get("/page")
    @ext.cached(ttl=60)
    def page() -> str:
        calls.append(request.path)
        return f"render {len(calls)}"

    @ext.memoize(ttl=60)
    def square(n: int) -> int:
        calls.append(f"square {n}")
        return n * n

    client = app.test_client()
    assert client.get("/page").text == client.get("/page").text == "render 1"
    with app.app_context():
        assert square(3) == square(3) == 9
    assert calls == ["/page", "square 3"]
    # the page, the result, and the memoized function's revision record (chorde.tags)
    assert len(tests.toy.stores["flask-site"]) == 3


async def test_starlette_by_url() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from chorde_starlette import CacheMiddleware

    calls = []

    async def page(request: Any) -> PlainTextResponse:
        calls.append(1)
        return PlainTextResponse(f"render {len(calls)}")

    app = CacheMiddleware(Starlette(routes=[Route("/page", page)]), client="toy://star-site")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://site.example") as http:
        assert (await http.get("/page")).text == "render 1"
        assert (await http.get("/page")).text == "render 1"
    assert tests.toy.stores["star-site"]


async def test_tornado_by_url() -> None:
    import tornado.web

    from chorde_tornado import cache_response

    calls = []

    class Page(tornado.web.RequestHandler):
        @cache_response(60, client="toy://tornado-site")
        def get(self) -> None:
            calls.append(1)
            self.write(f"render {len(calls)}")

    class Setting(tornado.web.RequestHandler):
        @cache_response(60)
        def get(self) -> None:
            calls.append(2)
            self.write("from the setting's client")

    port = free_port()
    app = tornado.web.Application(
        [("/page", Page), ("/setting", Setting)],
        chorde_client="toy://tornado-setting",
        cookie_secret="s",
    )
    server = app.listen(port, address="127.0.0.1")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/page")).text == "render 1"
            assert (await http.get("/page")).text == "render 1"
            await http.get("/setting")
            await http.get("/setting")
    finally:
        server.stop()
        await asyncio.sleep(0)
    assert calls == [1, 2]
    assert tests.toy.stores["tornado-site"] and tests.toy.stores["tornado-setting"]


def test_a_bad_url_fails_where_it_is_written() -> None:
    from chorde import ConfigurationError
    from chorde_starlette import CacheMiddleware
    from chorde_tornado import cache_response

    async def app(scope: Any, receive: Any, send: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="unknown scheme 'mongodb'"):
        CacheMiddleware(app, client="mongodb://cache:27017")
    with pytest.raises(ConfigurationError, match="did you mean 'memcached'"):
        cache_response(60, client="memcache://cache:11211")
